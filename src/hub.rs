//! The chat itself: who is connected, which names are taken, who is in which
//! room, and who receives each frame.
//!
//! The hub turns lines into effects on every session and pushes the encoded
//! frames into per-connection outboxes. It never touches a socket, a file or
//! the clock: time arrives as `Now`, and the server shell drains the outboxes.
//! See `design/architecture.md` for the path of one message.

use crate::accounts::Users;
use crate::auth::{Auth, Check};
use crate::codec::CodecError;
use crate::flood::{ByteBudget, TokenBucket};
use crate::history::{History, IdsExhausted, MAX_HISTORY_REPLY_BYTES, MessageIds, Slice};
use crate::outbox::{Arena, Outbox, Span};
use crate::proto::{
    AuthKind, BACKLOG_FRAME_BYTES, ChatMessage, Code, MAX_NAME_BYTES, NameKey, ProtoError, Request,
    RoomName, ServerMsg, Target, TextExpect, Username, parse_json, parse_text,
};
use crate::session::{Input, Mode, State};
use crate::throttle::{Throttle, Wait};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::Arc;

/// Failed passwords one connection may try before it is closed.
pub const MAX_PASSWORD_FAILURES: u8 = 3;
/// Rooms one user may be in at once.
pub const MAX_ROOMS_PER_USER: usize = 20;
/// Names per 206 frame, so a WHO of a huge room stays within line limits.
pub const WHO_CHUNK: usize = 200;
/// Rooms per 212 frame, for the same reason.
pub const ROOMS_CHUNK: usize = 200;
/// An answer whose size the server chooses (a 208 backlog or HISTORY, the
/// frames of one WHO or ROOMS answer) is at most `max_output_bytes` divided
/// by this, so no such answer can trip the slow-consumer cap by itself; a
/// 208 also fits in what is left of that share after what the client
/// already owes, so many at once (20 JOINs, 20 HISTORYs) cannot either.
pub const ANSWER_SHARE: usize = 2;
/// Answers (HISTORY, WHO, ROOMS, PING, help) may cost this many full
/// HISTORY answers at once, in encoded bytes: a client rejoining every room
/// it may be in and catching each up with one HISTORY is never refused.
pub const ANSWER_BURST: usize = MAX_ROOMS_PER_USER + 4;
/// ... and this many full HISTORY answers per second after the burst.
pub const ANSWER_RATE: usize = 4;
/// Most bytes one name adds to a 206 (JSON: quotes and a comma).
const WHO_ENTRY_BYTES: usize = MAX_NAME_BYTES + 3;
/// Most bytes one room adds to a 212 (JSON: `{"name":"…","users":N},`).
const ROOMS_ENTRY_BYTES: usize = MAX_NAME_BYTES + 42;
/// Bytes a 206 or 212 frame spends besides its entries.
const LIST_FRAME_BYTES: usize = 128;

/// A connection's identity, shared with the server shell (it is the mio
/// token). The shell may reuse an id only after `handle_closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The moment an input happened, as the shell read it from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Wall-clock Unix milliseconds, stamped on chat messages.
    pub unix_ms: u64,
    /// Monotonic milliseconds (since the server started), for timeouts and
    /// rates, which must not jump with the wall clock.
    pub mono_ms: u64,
}

/// What the hub needs from the configuration; replaced whole on reload.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub auth: Auth,
    /// The room every user joins at login; it exists even when empty.
    pub default_room: RoomName,
    /// Output a client may owe before it is cut off as a slow consumer.
    /// Answers are sized from it: one answer takes at most
    /// `max_output_bytes / ANSWER_SHARE`, and the answer budget counts in
    /// full HISTORY answers (`ANSWER_BURST`, `ANSWER_RATE`).
    pub max_output_bytes: usize,
    /// Refuse logins that need a password over plaintext from a
    /// non-loopback address.
    pub require_tls_for_password: bool,
    /// Messages sent on joining a room (208), or `None` when history is off.
    pub history_backlog: Option<usize>,
    /// Messages kept per room in memory (and in the journal).
    pub history_keep: usize,
    /// What all rooms' kept history may cost together (`history::cost`);
    /// the least recently active rooms' history is dropped first.
    pub history_max_bytes: usize,
    /// Rooms with more members than this do not announce joins and leaves
    /// to others (the O(N²) of a mass login); 0 disables.
    pub quiet_room_size: usize,
    /// A connection not logged in by then gets 408 and is closed.
    pub auth_timeout_ms: u64,
    /// A silent logged-in JSON client gets a 209 ping after this long, and
    /// 408 and a close after as long again; 0 disables.
    pub idle_timeout_ms: u64,
    /// Frames reaching others (SAY, DM, RENAME, JOIN, PART) per second, and
    /// how many may come at once; a rate of 0 disables flood control.
    pub flood_rate: f64,
    pub flood_burst: f64,
}

/// Telnet: the server will echo (so the client stops its local echo), and
/// the end of that.
const WILL_ECHO: &[u8] = &[255, 251, 1];
const WONT_ECHO: &[u8] = &[255, 252, 1];
/// What the server echoes of a line typed with echo off: its end only.
const ECHOED_LINE_END: &[u8] = b"\r\n";

/// Consecutive flood refusals (429) after which a client is disconnected.
pub const MAX_FLOOD_STRIKES: u32 = 20;

/// A password to check against an argon2 hash, off the event loop. The
/// shell runs it and answers with `Hub::handle_verified`.
pub struct VerifyJob {
    pub conn: ConnId,
    /// Matches the answer to the attempt; a stale answer is ignored.
    pub ticket: u64,
    /// The account's PHC hash, or `None` for an unknown user (the worker
    /// then spends the same time on a dummy hash).
    pub hash: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for VerifyJob {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VerifyJob {{ conn: {}, ticket: {} }}",
            self.conn, self.ticket
        )
    }
}

/// Why a connection must be closed at once, without waiting for its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CutOff {
    /// It owed more than `max_output_bytes`.
    SlowConsumer { pending: usize },
}

/// One connection's view from the hub.
#[derive(Debug)]
struct Client {
    peer: SocketAddr,
    /// True for a connection that arrived on a TLS listener.
    is_tls: bool,
    /// The ticket of the password check under way, if any.
    pending_check: Option<NonZeroU64>,
    state: State,
    /// `None` until the first non-empty line; frames sent before then (the
    /// greeting) are JSON.
    mode: Option<Mode>,
    /// Wrong passwords so far on this connection.
    failures: u8,
    /// The peer sent telnet negotiation: it understands `IAC WILL ECHO`.
    is_telnet: bool,
    /// We sent `IAC WILL ECHO` (the password prompt) and owe `IAC WONT ECHO`.
    is_echo_off: bool,
    /// Rooms joined, oldest first; the last one is the current room, where
    /// a SAY without `room` goes.
    rooms: Vec<RoomName>,
    outbox: Outbox,
    /// Set when the client must go now (slow consumer); its output is void.
    /// Boxed: rare, and this struct is held per connection.
    cut_off: Option<Box<CutOff>>,
    /// When it connected, for the login deadline.
    connected_ms: u64,
    /// When its last line arrived, for the idle ping.
    last_input_ms: u64,
    /// When the idle ping (209) was sent, if it is unanswered.
    ping_sent_ms: Option<u64>,
    flood: TokenBucket,
    /// Consecutive frames refused for flooding.
    flood_strikes: u32,
    /// Bytes of answers (HISTORY, WHO, ROOMS, PING, help) it was sent,
    /// against a rate; never counted as flooding.
    answers: ByteBudget,
}

impl Client {
    fn tag(&self, conn: ConnId) -> String {
        format!("conn={conn} peer={}", self.peer)
    }

    /// Drops what is owed and marks the client for closing.
    fn cut_off(&mut self, conn: ConnId, max_output_bytes: usize) {
        let pending = self.outbox.pending_bytes();
        log::warn!(
            "{} cut off: slow consumer owes {pending} bytes (max_output_bytes {max_output_bytes})",
            self.tag(conn)
        );
        self.outbox.clear();
        self.cut_off = Some(Box::new(CutOff::SlowConsumer { pending }));
    }
}

/// Within one turn a client may be owed this many times `max_output_bytes`
/// before the flush; past that it is cut off at once (a memory backstop).
const TURN_BACKSTOP: usize = 16;

/// The connection table plus the lists the shell drains. Kept apart from
/// the rooms so a fan-out can read a room while writing outboxes.
#[derive(Debug, Default)]
struct Clients {
    slots: Vec<Option<Client>>,
    /// Connections whose outbox gained bytes (or that quit) since the shell
    /// last looked; each appears at most once per drain.
    dirty: Vec<ConnId>,
    is_dirty: Vec<bool>,
    max_output_bytes: usize,
    /// Every frame encoded this turn; outboxes hold spans of it.
    arena: Arena,
    /// Connections given a span of this turn's arena, to be sealed before
    /// it is cleared.
    in_turn: Vec<ConnId>,
}

impl Clients {
    fn get(&self, conn: ConnId) -> Option<&Client> {
        self.slots.get(conn.0).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, conn: ConnId) -> Option<&mut Client> {
        self.slots.get_mut(conn.0).and_then(Option::as_mut)
    }

    fn mark_dirty(&mut self, conn: ConnId) {
        if !self.is_dirty[conn.0] {
            self.is_dirty[conn.0] = true;
            self.dirty.push(conn);
        }
    }

    /// Queues a frame, encoded in the recipient's mode. `frames` caches
    /// the two encodings so a fan-out encodes each at most once.
    fn enqueue(&mut self, conn: ConnId, msg: &ServerMsg, frames: &mut FrameCache) {
        self.enqueue_with(conn, |mode, arena| frames.get(msg, mode, arena));
    }

    /// Queues what `encode` appends to the arena for a client in `mode`.
    fn enqueue_with(&mut self, conn: ConnId, encode: impl FnOnce(Mode, &mut Arena) -> Span) {
        let max_output_bytes = self.max_output_bytes;
        let Some(client) = self.slots.get_mut(conn.0).and_then(Option::as_mut) else {
            return;
        };
        if client.cut_off.is_some() {
            return;
        }
        let span = encode(client.mode.unwrap_or(Mode::Json), &mut self.arena);
        if client.outbox.push(span) {
            self.in_turn.push(conn);
        }
        // The cap proper is checked after a flush (`enforce_output_cap`): a
        // reader that keeps up may be owed a whole turn's burst. This
        // backstop only bounds memory within one turn.
        if client.outbox.pending_bytes() > max_output_bytes.saturating_mul(TURN_BACKSTOP) {
            client.cut_off(conn, max_output_bytes);
        }
        self.mark_dirty(conn);
    }

    fn send(&mut self, conn: ConnId, msg: &ServerMsg) {
        self.enqueue(conn, msg, &mut FrameCache::default());
    }

    fn deliver<'a>(&mut self, recipients: impl IntoIterator<Item = &'a ConnId>, msg: &ServerMsg) {
        let mut frames = FrameCache::default();
        for &conn in recipients {
            self.enqueue(conn, msg, &mut frames);
        }
    }
}

/// Where a frame's JSON and text encodings lie in the turn arena, each
/// encoded on first use.
#[derive(Default)]
struct FrameCache {
    json: Option<Span>,
    text: Option<Span>,
}

impl FrameCache {
    fn get(&mut self, msg: &ServerMsg, mode: Mode, arena: &mut Arena) -> Span {
        let slot = match mode {
            Mode::Json => &mut self.json,
            Mode::Text => &mut self.text,
        };
        slot.get_or_insert_with(|| {
            arena.append(|bytes| match mode {
                Mode::Json => msg.write_json_line(bytes),
                Mode::Text => bytes.extend_from_slice(&msg.to_text_lines()),
            })
        })
        .clone()
    }
}

/// A room and its members in join order.
#[derive(Debug, Default)]
struct Room {
    members: Vec<ConnId>,
}

impl Room {
    /// Too big to announce joins and leaves (`quiet_room_size`, 0 = never).
    fn is_quiet(&self, quiet_room_size: usize) -> bool {
        quiet_room_size > 0 && self.members.len() > quiet_room_size
    }
}

/// The whole chat.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    clients: Clients,
    /// Case-folded username → holder: logged-in sessions only (behind a
    /// password a name is held once verified, never by USER alone).
    names: HashMap<NameKey, ConnId>,
    /// The 208 a JSON client gets on joining a room, encoded once and kept
    /// until the room's next message: a reconnect storm into a quiet room
    /// encodes its backlog once, not once per login.
    join_backlogs: BacklogCache,
    rooms: BTreeMap<RoomName, Room>,
    /// Chat message ids: they only grow, across restarts too.
    ids: MessageIds,
    /// Failed logins per address and per name.
    throttle: Throttle,
    /// Room history (empty and unused when history is off).
    history: History,
    /// Password checks for the shell to run off the loop.
    verify_jobs: Vec<VerifyJob>,
    next_ticket: u64,
    /// Set once "message ids are exhausted" has been logged: every later
    /// SAY or DM is refused the same way, and must not write a line each.
    has_logged_ids_exhausted: bool,
    /// Checks whose client left (or quit) while they ran, by ticket: the
    /// worker still runs them, so the throttle keeps counting them in
    /// flight until their verdict, and a wrong one still counts.
    orphan_checks: HashMap<u64, (IpAddr, NameKey)>,
}

/// Bytes the join-backlog cache may hold, all rooms together.
const BACKLOG_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The encoded join 208s, one per room, bounded in total bytes: every room
/// with a member could otherwise hold one (up to 256 KiB, and JSON escaping
/// makes a control character six bytes), up to several times the history
/// they encode. Past the bound a backlog is encoded per join instead.
#[derive(Debug)]
struct BacklogCache {
    frames: HashMap<RoomName, Box<[u8]>>,
    bytes: usize,
    max_bytes: usize,
}

impl Default for BacklogCache {
    fn default() -> Self {
        BacklogCache {
            frames: HashMap::new(),
            bytes: 0,
            max_bytes: BACKLOG_CACHE_BYTES,
        }
    }
}

impl BacklogCache {
    /// The cached frame of `room`, encoded by `encode` and kept if it fits.
    fn get_or_encode(
        &mut self,
        room: &RoomName,
        encode: impl FnOnce() -> Vec<u8>,
    ) -> std::borrow::Cow<'_, [u8]> {
        if !self.frames.contains_key(room) {
            let frame = encode().into_boxed_slice();
            if self.bytes.saturating_add(frame.len()) > self.max_bytes {
                return std::borrow::Cow::Owned(frame.into_vec());
            }
            self.bytes = self.bytes.saturating_add(frame.len());
            self.frames.insert(room.clone(), frame);
        }
        std::borrow::Cow::Borrowed(self.frames.get(room).map_or(&[][..], |frame| frame))
    }

    fn remove(&mut self, room: &RoomName) {
        if let Some(frame) = self.frames.remove(room) {
            self.bytes = self.bytes.saturating_sub(frame.len());
        }
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

/// Requests answered to the sender only, whose output is bounded by the
/// answer budget (bytes per second), not by the flood bucket.
fn is_answer(request: &Request) -> bool {
    matches!(
        request,
        Request::History { .. }
            | Request::Who { .. }
            | Request::Rooms
            | Request::Ping { .. }
            | Request::Help
    )
}

/// Frames that reach other people count against the flood bucket; PING,
/// WHO, ROOMS and HISTORY only answer the sender (`is_answer`).
fn is_flood_counted(request: &Request) -> bool {
    matches!(
        request,
        Request::Say { .. }
            | Request::Dm { .. }
            | Request::Rename { .. }
            | Request::Join { .. }
            | Request::Part { .. }
    )
}

/// The 429 for a throttled login attempt.
fn throttle_refusal(wait: Wait) -> Refusal {
    let seconds = wait.ms().div_ceil(1000);
    let error = match wait {
        Wait::Blocked { .. } => format!("too many failed logins; try again in {seconds} s"),
        Wait::InFlight => format!(
            "too many logins are being checked for this address or name; try again in {seconds} s"
        ),
    };
    Refusal::new(Code::TooMany, error)
}

/// Splits a list answer into frames of at most `chunk` entries, as many
/// frames as fit in `cap` bytes (each entry at most `entry_bytes`, each frame
/// `LIST_FRAME_BYTES` more), and always one frame, if only an empty one.
fn capped_chunks<T>(items: &[T], chunk: usize, entry_bytes: usize, cap: usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut used = LIST_FRAME_BYTES;
    for piece in items.chunks(chunk) {
        let size = LIST_FRAME_BYTES.saturating_add(piece.len().saturating_mul(entry_bytes));
        if used.saturating_add(size) > cap {
            break;
        }
        used = used.saturating_add(size);
        chunks.push(piece);
    }
    if chunks.is_empty() {
        chunks.push(&items[..0]);
    }
    chunks
}

/// A request refused with an error frame; the session goes on.
struct Refusal {
    code: Code,
    error: String,
}

impl Refusal {
    fn new(code: Code, error: impl Into<String>) -> Refusal {
        Refusal {
            code,
            error: error.into(),
        }
    }
}

impl From<ProtoError> for Refusal {
    fn from(error: ProtoError) -> Refusal {
        Refusal::new(error.code(), error.to_string())
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Hub {
        let keep = config.history_keep;
        let max_bytes = config.history_max_bytes;
        let mut rooms = BTreeMap::new();
        rooms.insert(config.default_room.clone(), Room::default());
        Hub {
            clients: Clients {
                max_output_bytes: config.max_output_bytes,
                ..Clients::default()
            },
            config,
            names: HashMap::new(),
            join_backlogs: BacklogCache::default(),
            rooms,
            ids: MessageIds::default(),
            throttle: Throttle::default(),
            history: {
                let mut history = History::new(keep);
                history.set_max_bytes(max_bytes);
                history
            },
            verify_jobs: Vec::new(),
            next_ticket: 1,
            has_logged_ids_exhausted: false,
            orphan_checks: HashMap::new(),
        }
    }

    /// Applies a reloaded configuration. Sessions keep their state; the new
    /// auth applies to logins from now on, the default room to new logins.
    /// The exceptions: a switch to accounts closes every logged-in session,
    /// whose name was never verified as an account; a users file that
    /// removes or changes an account closes its session; and a reload
    /// away from accounts, or one that changes the account being checked,
    /// voids the password check under way (the client is asked again).
    pub fn set_config(&mut self, config: HubConfig) {
        self.rooms.entry(config.default_room.clone()).or_default();
        self.clients.max_output_bytes = config.max_output_bytes;
        self.history.set_keep(config.history_keep);
        self.history.set_max_bytes(config.history_max_bytes);
        let old_auth = std::mem::replace(&mut self.config, config).auth;
        self.join_backlogs.clear();
        match (&old_auth, &self.config.auth) {
            (Auth::Accounts { users: old }, Auth::Accounts { users: new }) => {
                let (old, new) = (Arc::clone(old), Arc::clone(new));
                self.revoke_changed_accounts(&old, &new);
            }
            (_, Auth::Accounts { .. }) => self.close_unaccounted_sessions(),
            // Only accounts check off the loop: a check under way would log
            // in by the old rules, after the reload.
            (Auth::Accounts { .. }, _) => self.void_pending_checks(),
            _ => {}
        }
    }

    /// The rules a password check under way was started by are gone (a
    /// reload away from accounts): its verdict is an orphan's (counted,
    /// logs nobody in), and the client is asked for the password again,
    /// checked by the new rules. Before, the old account's verdict logged
    /// in after a switch to a shared password the client never sent.
    fn void_pending_checks(&mut self) {
        for index in 0..self.clients.slots.len() {
            let conn = ConnId(index);
            let is_checking = self
                .clients
                .get(conn)
                .is_some_and(|client| client.pending_check.is_some());
            if is_checking {
                self.orphan_pending_check(conn);
                self.ask_password_again(
                    conn,
                    "the server's login rules changed while your password was checked",
                    "",
                );
            }
        }
    }

    /// A reload changed the users file: a session logged in to an account
    /// that was removed, or whose password was changed, proved a
    /// credential that no longer holds, so it is told (403) and closed; a
    /// password check under way for such an account is void (503, send
    /// PASS again: it is checked against the new file). Before, a removed
    /// account kept chatting under its name, and kept it from a new owner.
    fn revoke_changed_accounts(&mut self, old: &Users, new: &Users) {
        for index in 0..self.clients.slots.len() {
            let conn = ConnId(index);
            let Some(client) = self.clients.get(conn) else {
                continue;
            };
            let (username, is_logged_in) = match &client.state {
                State::Broadcast { username } => (username.clone(), true),
                State::PassAuth { username } if client.pending_check.is_some() => {
                    (username.clone(), false)
                }
                _ => continue,
            };
            let change = match (old.hash_of(&username), new.hash_of(&username)) {
                (Some(_), None) => "was removed",
                (Some(old), Some(new)) if old != new => "had its password changed",
                // Checked against the dummy hash, it would fail.
                (None, Some(_)) => "was created",
                _ => continue,
            };
            if is_logged_in {
                self.clients.send(
                    conn,
                    &ServerMsg::error(
                        Code::Forbidden,
                        format!("your account {username} {change} on this server; closing"),
                    ),
                );
                self.quit(conn, "account removed or changed");
            } else {
                // The worker still runs the old check: its verdict is an
                // orphan's (counted, logs nobody in).
                self.orphan_pending_check(conn);
                self.ask_password_again(
                    conn,
                    &format!("account {username} {change} while its password was checked"),
                    "",
                );
            }
        }
    }

    /// Names have just become accounts (a reload to `auth = "accounts"`): a
    /// session logged in under open or password auth never proved it owns
    /// its name's account, so it is told (403) and closed, as a RENAME into
    /// that name would be refused (issue 11).
    fn close_unaccounted_sessions(&mut self) {
        for index in 0..self.clients.slots.len() {
            let conn = ConnId(index);
            let is_logged_in = self
                .clients
                .get(conn)
                .is_some_and(|client| client.state.username().is_some());
            if is_logged_in {
                self.clients.send(
                    conn,
                    &ServerMsg::error(
                        Code::Forbidden,
                        "names are accounts on this server now; log in again with your account",
                    ),
                );
                self.quit(conn, "auth changed to accounts");
            }
        }
    }

    /// Loads messages read back from the journal; ids continue after the
    /// highest one. A message whose id is above `history::MAX_MESSAGE_ID`
    /// is skipped (ids never wrap); returns how many were.
    pub fn restore_history(&mut self, messages: impl IntoIterator<Item = ChatMessage>) -> usize {
        let mut skipped = 0usize;
        for message in messages {
            if self.ids.restore_message(message.id).is_err() {
                skipped = skipped.saturating_add(1);
                continue;
            }
            self.history.restore(message);
        }
        self.join_backlogs.clear();
        skipped
    }

    /// Continues ids at or after the journal's highest reservation
    /// (`{"next_id":N}`), which covers private messages too.
    pub fn restore_next_id(&mut self, next_id: u64) -> Result<(), IdsExhausted> {
        self.ids.restore_mark(next_id)
    }

    /// Room messages recorded since the last call, for the journal.
    pub fn take_unwritten_history(&mut self) -> Vec<ChatMessage> {
        self.history.take_unwritten()
    }

    /// A new id reservation to journal (with this turn's messages, before
    /// any client is sent them), if one was made since the last call.
    pub fn take_id_reservation(&mut self) -> Option<u64> {
        self.ids.take_unwritten()
    }

    /// Every id handed out is below this: what a compacted journal records.
    pub fn id_reservation(&self) -> u64 {
        self.ids.reserved()
    }

    /// Every kept message in id order, to compact the journal.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Number of sessions, logged in or not.
    pub fn connection_count(&self) -> usize {
        self.clients.slots.iter().flatten().count()
    }

    /// A new connection (on a TLS listener if `is_tls`): greet it.
    pub fn handle_connected(&mut self, conn: ConnId, peer: SocketAddr, is_tls: bool, now: Now) {
        let slots = &mut self.clients.slots;
        if slots.len() <= conn.0 {
            slots.resize_with(conn.0 + 1, || None);
            self.clients.is_dirty.resize(conn.0 + 1, false);
        }
        slots[conn.0] = Some(Client {
            peer,
            is_tls,
            pending_check: None,
            state: State::Listen,
            mode: None,
            failures: 0,
            is_telnet: false,
            is_echo_off: false,
            rooms: Vec::new(),
            outbox: Outbox::default(),
            cut_off: None,
            connected_ms: now.mono_ms,
            last_input_ms: now.mono_ms,
            ping_sent_ms: None,
            flood: TokenBucket::new(self.config.flood_burst, now.mono_ms),
            flood_strikes: 0,
            answers: ByteBudget::default(),
        });
        self.clients.send(
            conn,
            &ServerMsg::Hello {
                auth: self.config.auth.kind(),
            },
        );
    }

    /// One complete line from the codec.
    pub fn handle_line(&mut self, conn: ConnId, line: &str, now: Now) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.cut_off.is_some() {
            return;
        }
        client.last_input_ms = now.mono_ms;
        client.ping_sent_ms = None;
        if client.is_echo_off {
            // The client echoes nothing now: end the prompt's line for it,
            // never with anything of what was typed.
            self.clients.enqueue_with(conn, |_, arena| {
                arena.append(|out| out.extend_from_slice(ECHOED_LINE_END))
            });
        }
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.state == State::Listen {
            client.mode = Some(if line.starts_with('{') {
                Mode::Json
            } else {
                Mode::Text
            });
            client.state = State::UserAuth;
        }
        let request = match client.mode {
            Some(Mode::Text) => {
                let expect = match client.state {
                    State::PassAuth { .. } => TextExpect::Password,
                    State::Broadcast { .. } => TextExpect::Chat,
                    _ => TextExpect::Username,
                };
                parse_text(line, expect)
            }
            _ => parse_json(line),
        };
        // A raw line is logged (debug, escaped) only once it has parsed into
        // a request that carries no password, and never in PASS AUTH, where
        // every text line is a password: a line that does not parse (an
        // extra key, a truncated frame) may still hold one. A refused line
        // is logged through its refusal, escaped (issue 11).
        let is_loggable = !matches!(client.state, State::PassAuth { .. })
            && matches!(&request, Ok(request) if !matches!(request, Request::Pass { .. }));
        if is_loggable {
            log::debug!("{} line {line:?}", client.tag(conn));
        }
        let state = client.state.clone();
        if state == State::Quit {
            return;
        }
        let request = match request {
            Ok(request) => request,
            Err(ProtoError::Http) => {
                self.clients.send(
                    conn,
                    &ServerMsg::error(Code::BadRequest, ProtoError::Http.to_string()),
                );
                self.quit(conn, "sent HTTP");
                return;
            }
            Err(error) => {
                self.refuse(conn, error.into());
                return;
            }
        };
        if !state.allows(request.code()) {
            let refusal = Refusal::new(
                Code::Forbidden,
                format!(
                    "code {} is not allowed in state {}",
                    request.code().number(),
                    state.name()
                ),
            );
            self.refuse(conn, refusal);
            return;
        }
        if is_flood_counted(&request) && !self.take_flood_token(conn, now) {
            return;
        }
        if is_answer(&request) {
            if let Err(refusal) = self.check_answer_budget(conn, now) {
                self.refuse(conn, refusal);
                return;
            }
            let before = self.pending_bytes(conn);
            if let Err(refusal) = self.dispatch(conn, state, request, now) {
                self.refuse(conn, refusal);
            }
            let cost = self.pending_bytes(conn).saturating_sub(before);
            let rate = self.answer_rate();
            if let Some(client) = self.clients.get_mut(conn) {
                client.answers.spend(cost, rate, now.mono_ms);
            }
            return;
        }
        if let Err(refusal) = self.dispatch(conn, state, request, now) {
            self.refuse(conn, refusal);
        }
    }

    /// Bytes the client owes (queued, not yet written).
    fn pending_bytes(&self, conn: ConnId) -> usize {
        self.clients
            .get(conn)
            .map_or(0, |client| client.outbox.pending_bytes())
    }

    /// The most one answer of the server's choosing may cost, in bytes.
    fn answer_cap(&self) -> usize {
        self.config.max_output_bytes / ANSWER_SHARE
    }

    /// A full HISTORY answer (the unit of the answer budget), in bytes.
    fn full_history_answer(&self) -> usize {
        self.answer_cap().min(MAX_HISTORY_REPLY_BYTES)
    }

    /// Bytes of answers a client may be sent at once...
    fn answer_burst(&self) -> f64 {
        self.full_history_answer().saturating_mul(ANSWER_BURST) as f64
    }

    /// ... and per second after that.
    fn answer_rate(&self) -> f64 {
        self.full_history_answer().saturating_mul(ANSWER_RATE) as f64
    }

    /// Bytes of messages a 208 to this client may carry now: its share of
    /// the output cap, less what it already owes and the frame itself.
    fn backlog_budget(&self, conn: ConnId) -> usize {
        self.full_history_answer()
            .min(self.answer_cap().saturating_sub(self.pending_bytes(conn)))
            .saturating_sub(BACKLOG_FRAME_BYTES)
    }

    /// Answers are allowed while the client's answer budget is not in debt
    /// (the answer is charged after, at its encoded size); otherwise 429,
    /// which is never a flood strike.
    fn check_answer_budget(&self, conn: ConnId, now: Now) -> Result<(), Refusal> {
        let rate = self.answer_rate();
        let Some(client) = self.clients.get(conn) else {
            return Ok(());
        };
        match client
            .answers
            .wait_ms(rate, self.answer_burst(), now.mono_ms)
        {
            0 => Ok(()),
            wait_ms => Err(Refusal::new(
                Code::TooMany,
                format!(
                    "slow down: answers to HISTORY, WHO, ROOMS and PING may send you at most {} bytes a second; this request was dropped, try again in {wait_ms} ms",
                    rate as u64
                ),
            )),
        }
    }

    /// Spends a flood token; refuses (429) without one, and disconnects a
    /// client that keeps flooding.
    fn take_flood_token(&mut self, conn: ConnId, now: Now) -> bool {
        let (rate, burst) = (self.config.flood_rate, self.config.flood_burst);
        let Some(client) = self.clients.get_mut(conn) else {
            return false;
        };
        if client.flood.try_take(rate, burst, now.mono_ms) {
            client.flood_strikes = 0;
            return true;
        }
        client.flood_strikes += 1;
        if client.flood_strikes >= MAX_FLOOD_STRIKES {
            log::warn!("{} disconnected: excess flood", client.tag(conn));
            self.clients.send(
                conn,
                &ServerMsg::error(Code::TooMany, "excess flood; disconnecting"),
            );
            self.quit(conn, "excess flood");
        } else {
            self.clients.send(
                conn,
                &ServerMsg::error(
                    Code::TooMany,
                    format!("slow down: at most {rate} messages a second; this one was dropped"),
                ),
            );
        }
        false
    }

    /// When `handle_timeout` has something to do for this connection
    /// (monotonic ms), if ever: the login deadline before BROADCAST; the
    /// idle ping, then the idle close, for a logged-in JSON client. The
    /// sums saturate: a configured timeout too long to count is "never",
    /// not a wrap into the past.
    pub fn deadline(&self, conn: ConnId) -> Option<u64> {
        let client = self.clients.get(conn)?;
        if client.cut_off.is_some() {
            return None;
        }
        match client.state {
            State::Listen | State::UserAuth | State::PassAuth { .. } => Some(
                client
                    .connected_ms
                    .saturating_add(self.config.auth_timeout_ms),
            ),
            State::Broadcast { .. }
                if client.mode == Some(Mode::Json) && self.config.idle_timeout_ms > 0 =>
            {
                let since = client.ping_sent_ms.unwrap_or(client.last_input_ms);
                Some(since.saturating_add(self.config.idle_timeout_ms))
            }
            _ => None,
        }
    }

    /// A deadline may have passed: log-in timeout (408), idle ping (209)
    /// or idle close (408). Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, conn: ConnId, now: Now) {
        let Some(deadline) = self.deadline(conn) else {
            return;
        };
        if now.mono_ms < deadline {
            return;
        }
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.state.username().is_none() {
            self.clients.send(
                conn,
                &ServerMsg::error(Code::Timeout, "not logged in in time; closing"),
            );
            self.quit(conn, "login timeout");
        } else if client.ping_sent_ms.is_some() {
            self.clients.send(
                conn,
                &ServerMsg::error(Code::Timeout, "no answer to the ping; closing"),
            );
            self.quit(conn, "idle timeout");
        } else {
            client.ping_sent_ms = Some(now.mono_ms);
            self.clients.send(conn, &ServerMsg::ServerPing);
        }
    }

    /// A line the codec could not deliver.
    pub fn handle_codec_error(&mut self, conn: ConnId, error: CodecError) {
        let code = match error {
            CodecError::TooLong { .. } => Code::TooLong,
            CodecError::InvalidUtf8 => Code::BadRequest,
        };
        self.refuse(conn, Refusal::new(code, error.to_string()));
    }

    /// The peer has shown itself to be a telnet client (the codec saw IAC):
    /// its password prompt will turn the client's local echo off.
    /// Idempotent; the shell may say it after every read.
    pub fn handle_telnet(&mut self, conn: ConnId) {
        if let Some(client) = self.clients.get_mut(conn) {
            client.is_telnet = true;
        }
    }

    /// The socket is gone (EOF, error, or the shell closed it). Frees the
    /// name, leaves every room and forgets the connection.
    pub fn handle_closed(&mut self, conn: ConnId) {
        if self.clients.get(conn).is_none() {
            return;
        }
        self.leave(conn);
        self.clients.slots[conn.0] = None;
    }

    /// The peer closed its side: leave as after QUIT, still flushing what
    /// is owed (a half-closed socket can still be written).
    pub fn handle_eof(&mut self, conn: ConnId) {
        if self.clients.get(conn).is_some() && !self.is_quitting(conn) {
            self.quit(conn, "peer closed");
        }
    }

    /// The server is going down: tell everyone (205) and stop reading them.
    pub fn handle_shutdown(&mut self) {
        for index in 0..self.clients.slots.len() {
            let conn = ConnId(index);
            let Some(client) = self.clients.get_mut(conn) else {
                continue;
            };
            if let Ok(next) = client.state.next(Input::Leave) {
                client.state = next;
                client.rooms.clear();
                // A telnet user at the password prompt gets its echo back,
                // as after any other end of PASS AUTH (`transition`).
                self.restore_echo(conn);
                self.clients.send(conn, &ServerMsg::GoingDown);
                self.clients.mark_dirty(conn);
            }
        }
        // Everyone is leaving at once: no 204s, just free every name and room.
        self.names.clear();
        for room in self.rooms.values_mut() {
            room.members.clear();
        }
    }

    /// Password checks to run off the loop, oldest first.
    pub fn drain_verify_jobs(&mut self) -> std::vec::Drain<'_, VerifyJob> {
        self.verify_jobs.drain(..)
    }

    /// The answer to a `VerifyJob`. Ignored if the connection is gone or
    /// has moved on (the ticket no longer matches).
    pub fn handle_verified(&mut self, conn: ConnId, ticket: u64, is_valid: bool, now: Now) {
        if let Some((address, name)) = self.orphan_checks.remove(&ticket) {
            // Its client left: nobody logs in, but a wrong password was
            // still a guess the worker paid for (issue 11 sweep: checks
            // abandoned by a disconnect were free, so one address could
            // keep the verifier's queue full without a single failure).
            if is_valid {
                self.throttle.abandon(address, name.as_str());
            } else {
                self.throttle
                    .record_failure(address, name.as_str(), now.mono_ms);
            }
            return;
        }
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.pending_check.map(NonZeroU64::get) != Some(ticket) {
            return;
        }
        client.pending_check = None;
        if let State::PassAuth { username } = client.state.clone() {
            self.finish_pass(conn, username, is_valid, now);
        }
    }

    /// The verifier's queue is full: the check is refused, not lost.
    pub fn handle_verify_busy(&mut self, conn: ConnId, ticket: u64) {
        if let Some((address, name)) = self.orphan_checks.remove(&ticket) {
            // Never run: nothing to count.
            self.throttle.abandon(address, name.as_str());
            return;
        }
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.pending_check.map(NonZeroU64::get) == Some(ticket) {
            self.end_pending_check(conn);
            self.ask_password_again(conn, "too many logins at once", " shortly");
        }
    }

    /// Connections whose outbox changed, or that are quitting, since the last
    /// call. The buffer is swapped, not reallocated.
    pub fn drain_dirty(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        std::mem::swap(into, &mut self.clients.dirty);
        for conn in into.iter() {
            self.clients.is_dirty[conn.0] = false;
        }
    }

    pub fn outbox_mut(&mut self, conn: ConnId) -> Option<&mut Outbox> {
        self.clients.get_mut(conn).map(|client| &mut client.outbox)
    }

    /// Sizes the connection tables for `count` connections up front, so
    /// they never grow by doubling (each doubling leaves the old copy as a
    /// resident hole in the heap). Untouched capacity costs address space,
    /// not memory. (Not the name table: a hash table touches its whole
    /// capacity, so it grows with use.)
    pub fn reserve_connections(&mut self, count: usize) {
        let clients = &mut self.clients;
        clients
            .slots
            .reserve_exact(count.saturating_sub(clients.slots.len()));
        clients
            .is_dirty
            .reserve_exact(count.saturating_sub(clients.is_dirty.len()));
        if let Some(lobby) = self.rooms.get_mut(&self.config.default_room) {
            lobby
                .members
                .reserve_exact(count.saturating_sub(lobby.members.len()));
        }
    }

    /// Runs `write` on the connection's outbox and the turn arena its spans
    /// point into (the shell writes the outbox to the socket with it).
    pub fn with_output<R>(
        &mut self,
        conn: ConnId,
        write: impl FnOnce(&mut Outbox, &Arena) -> R,
    ) -> Option<R> {
        let Clients { slots, arena, .. } = &mut self.clients;
        let client = slots.get_mut(conn.0).and_then(Option::as_mut)?;
        Some(write(&mut client.outbox, arena))
    }

    /// Between turns, when the server is quiet: gives back the memory a
    /// burst left in the turn arena.
    pub fn release_idle_memory(&mut self) {
        self.clients.arena.release();
    }

    /// Ends the loop turn, after the shell has written what the sockets
    /// took: what is still owed is copied out of the arena, which is then
    /// cleared for the next turn.
    pub fn end_turn(&mut self) {
        let Clients {
            slots,
            arena,
            in_turn,
            ..
        } = &mut self.clients;
        for conn in in_turn.drain(..) {
            if let Some(client) = slots.get_mut(conn.0).and_then(Option::as_mut) {
                client.outbox.seal(arena);
            }
        }
        arena.clear();
    }

    /// True once the session has left (QUIT, too many failures, shutdown):
    /// the shell flushes what is owed, then closes.
    pub fn is_quitting(&self, conn: ConnId) -> bool {
        self.clients
            .get(conn)
            .is_some_and(|client| client.state == State::Quit)
    }

    /// After a flush left bytes unwritten: a client that still owes more
    /// than `max_output_bytes` is a slow consumer and is cut off. Returns
    /// true if it was.
    pub fn enforce_output_cap(&mut self, conn: ConnId) -> bool {
        let max_output_bytes = self.clients.max_output_bytes;
        let Some(client) = self.clients.get_mut(conn) else {
            return false;
        };
        if client.cut_off.is_none() && client.outbox.pending_bytes() > max_output_bytes {
            client.cut_off(conn, max_output_bytes);
            return true;
        }
        client.cut_off.is_some()
    }

    /// Why the connection must be closed now, without a flush, if it must.
    pub fn cut_off(&self, conn: ConnId) -> Option<&CutOff> {
        self.clients
            .get(conn)
            .and_then(|client| client.cut_off.as_deref())
    }

    /// The session's current state (for the shell's logs and for tests).
    pub fn state(&self, conn: ConnId) -> Option<&State> {
        self.clients.get(conn).map(|client| &client.state)
    }

    fn refuse(&mut self, conn: ConnId, refusal: Refusal) {
        if let Some(client) = self.clients.get(conn) {
            // The error may quote peer text (an unknown key, a command):
            // escaped, so it cannot forge a log line or reach a terminal.
            log::debug!(
                "{} refused: {} {:?}",
                client.tag(conn),
                refusal.code.number(),
                refusal.error
            );
        }
        self.clients
            .send(conn, &ServerMsg::error(refusal.code, refusal.error));
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        state: State,
        request: Request,
        now: Now,
    ) -> Result<(), Refusal> {
        match (state, request) {
            (_, Request::Ping { token }) => self.clients.send(conn, &ServerMsg::Pong { token }),
            (_, Request::Quit) => self.quit(conn, "quit"),
            (_, Request::Help) => self.clients.send(conn, &ServerMsg::Help),
            (State::UserAuth, Request::User { username }) => self.user(conn, username, now)?,
            (State::PassAuth { username }, Request::Pass { password }) => {
                self.pass(conn, username, password, now)?
            }
            (State::Broadcast { username }, request) => self.chat(conn, username, request, now)?,
            // `State::allows` has already refused every other combination.
            (state, request) => {
                return Err(Refusal::new(
                    Code::Forbidden,
                    format!(
                        "code {} is not allowed in state {}",
                        request.code().number(),
                        state.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn chat(
        &mut self,
        conn: ConnId,
        username: Username,
        request: Request,
        now: Now,
    ) -> Result<(), Refusal> {
        match request {
            Request::Say { text, room } => self.say(conn, username, text, room, now),
            Request::Dm { to, text } => self.dm(conn, username, to, text, now),
            Request::Rename { username: new } => self.rename(conn, username, new),
            Request::Who { room } => self.who(conn, room),
            Request::History { room, after, limit } => {
                self.history_request(conn, room, after, limit)
            }
            Request::Join { room } => self.join(conn, username, room),
            Request::Part { room } => self.part(conn, username, room),
            Request::Rooms => {
                self.room_list(conn);
                Ok(())
            }
            _ => Err(Refusal::new(Code::Forbidden, "not allowed in BROADCAST")),
        }
    }

    fn is_name_free_for(&self, conn: ConnId, username: &Username) -> bool {
        self.names
            .get(&username.key())
            .is_none_or(|&holder| holder == conn)
    }

    /// 429 while the client's address or the name is throttled.
    fn check_throttle(&self, conn: ConnId, username: &Username, now: Now) -> Result<(), Refusal> {
        let Some(client) = self.clients.get(conn) else {
            return Ok(());
        };
        self.throttle
            .check(client.peer.ip(), username.key().as_str(), now.mono_ms)
            .map_err(throttle_refusal)
    }

    /// Passwords travel only over TLS, or over loopback, when so configured.
    fn check_password_transport(&self, conn: ConnId) -> Result<(), Refusal> {
        let Some(client) = self.clients.get(conn) else {
            return Ok(());
        };
        if self.config.require_tls_for_password
            && !client.is_tls
            && !client.peer.ip().is_loopback()
            && !client.peer.ip().to_canonical().is_loopback()
        {
            return Err(Refusal::new(
                Code::Forbidden,
                "this server takes passwords only over TLS; connect to its TLS port",
            ));
        }
        Ok(())
    }

    fn user(&mut self, conn: ConnId, username: Username, now: Now) -> Result<(), Refusal> {
        if !self.is_name_free_for(conn, &username) {
            return Err(Refusal::new(
                Code::Conflict,
                format!("username {username} is taken"),
            ));
        }
        let needs_password = self.config.auth.needs_password();
        if needs_password {
            self.check_password_transport(conn)?;
            self.check_throttle(conn, &username, now)?;
        } else {
            self.names.insert(username.key(), conn);
        }
        // Behind a password the name is held only once the password is
        // verified (`finish_pass`): an unauthenticated USER holds nothing,
        // so nobody can squat an account's name (issue 11).
        self.transition(
            conn,
            Input::UserAccepted {
                username: username.clone(),
                needs_password,
            },
        );
        if needs_password {
            self.prompt_password(conn);
        } else {
            self.logged_in(conn, username);
        }
        Ok(())
    }

    fn pass(
        &mut self,
        conn: ConnId,
        username: Username,
        password: String,
        now: Now,
    ) -> Result<(), Refusal> {
        self.check_password_transport(conn)?;
        if self
            .clients
            .get(conn)
            .is_some_and(|client| client.pending_check.is_some())
        {
            return Err(Refusal::new(
                Code::TooMany,
                "a password check is already under way; wait for its answer",
            ));
        }
        // Counted from now, not from the verdict: checks in flight count
        // against the throttle, so parallel guesses are no cheaper than
        // sequential ones (issue 11). `finish_pass`, `end_pending_check`
        // or, once its client has left, the orphan's verdict ends the count.
        let address = self
            .clients
            .get(conn)
            .map(|client| client.peer.ip())
            .ok_or_else(|| Refusal::new(Code::Forbidden, "connection is gone"))?;
        self.throttle
            .begin(address, username.key().as_str(), now.mono_ms)
            .map_err(throttle_refusal)?;
        match self.config.auth.check(&username, &password) {
            Check::Decided(is_valid) => self.finish_pass(conn, username, is_valid, now),
            Check::Hash(hash) => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                if let Some(client) = self.clients.get_mut(conn) {
                    client.pending_check = NonZeroU64::new(ticket);
                }
                self.verify_jobs.push(VerifyJob {
                    conn,
                    ticket,
                    hash,
                    password,
                });
            }
        }
        Ok(())
    }

    fn finish_pass(&mut self, conn: ConnId, username: Username, is_valid: bool, now: Now) {
        let Some(address) = self.clients.get(conn).map(|client| client.peer.ip()) else {
            return;
        };
        if is_valid {
            self.throttle
                .record_success(address, username.key().as_str(), now.mono_ms);
            if !self.is_name_free_for(conn, &username) {
                // Someone logged in under this name while the password was
                // checked: the name is held only once verified.
                self.transition(conn, Input::NameTaken);
                let is_text = self
                    .clients
                    .get(conn)
                    .is_some_and(|client| client.mode == Some(Mode::Text));
                if is_text {
                    // A person may already be typing at what was the
                    // password prompt; read as a username, that line could
                    // be announced. Close instead (issue 11).
                    self.clients.send(
                        conn,
                        &ServerMsg::error(
                            Code::Conflict,
                            format!(
                                "username {username} was taken while your password was checked; connect again to choose another"
                            ),
                        ),
                    );
                    self.quit(conn, "name taken during the password check");
                } else {
                    self.refuse(
                        conn,
                        Refusal::new(
                            Code::Conflict,
                            format!("username {username} is taken; send USER again"),
                        ),
                    );
                }
                return;
            }
            self.names.insert(username.key(), conn);
            self.transition(conn, Input::PasswordAccepted);
            self.logged_in(conn, username);
            return;
        }
        self.throttle
            .record_failure(address, username.key().as_str(), now.mono_ms);
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        client.failures += 1;
        let failures = client.failures;
        let is_text = client.mode == Some(Mode::Text);
        log::info!(
            "{} wrong password for {username} ({failures} of {MAX_PASSWORD_FAILURES})",
            client.tag(conn)
        );
        if failures >= MAX_PASSWORD_FAILURES {
            self.clients.send(
                conn,
                &ServerMsg::error(
                    Code::WrongPassword,
                    "wrong password; too many failures, closing",
                ),
            );
            self.quit(conn, "too many wrong passwords");
        } else if is_text {
            // A person retypes what they typed: keep reading passwords, so
            // a retyped password is never taken for a username and
            // announced (issue 11). `/quit` leaves.
            self.clients.send(
                conn,
                &ServerMsg::error(
                    Code::WrongPassword,
                    "wrong password; type it again, or /quit",
                ),
            );
            self.prompt_password(conn);
        } else {
            self.transition(conn, Input::PasswordRejected);
            self.clients.send(
                conn,
                &ServerMsg::error(Code::WrongPassword, "wrong password; send USER again"),
            );
        }
    }

    fn logged_in(&mut self, conn: ConnId, username: Username) {
        if let Some(client) = self.clients.get(conn) {
            log::info!("{} login {username}", client.tag(conn));
        }
        self.clients.send(
            conn,
            &ServerMsg::YourName {
                username: username.clone(),
            },
        );
        let room = self.config.default_room.clone();
        self.enter_room(conn, username, room);
    }

    fn transition(&mut self, conn: ConnId, input: Input) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        match client.state.next(input) {
            Ok(next) => {
                client.state = next;
                if !matches!(client.state, State::PassAuth { .. }) {
                    self.restore_echo(conn);
                }
            }
            // The hub only feeds inputs that `allows` screened; reaching
            // this is a bug, so log it loudly and leave the state alone.
            Err(error) => log::error!("{} {error}", client.tag(conn)),
        }
    }

    fn current_room(&self, conn: ConnId) -> Option<RoomName> {
        self.clients.get(conn)?.rooms.last().cloned()
    }

    /// The named room, or the current one when none is named.
    fn room_or_current(&self, conn: ConnId, room: Option<RoomName>) -> Result<RoomName, Refusal> {
        match room {
            Some(room) => Ok(room),
            None => self.current_room(conn).ok_or_else(|| {
                Refusal::new(Code::Forbidden, "you are in no room; JOIN one or name one")
            }),
        }
    }

    fn is_member(&self, conn: ConnId, room: &RoomName) -> bool {
        self.clients
            .get(conn)
            .is_some_and(|client| client.rooms.contains(room))
    }

    fn next_message(
        &mut self,
        target: Target,
        from: Username,
        text: String,
        now: Now,
    ) -> Result<ServerMsg, Refusal> {
        let has_logged = &mut self.has_logged_ids_exhausted;
        let id = self.ids.take().map_err(|IdsExhausted| {
            if !std::mem::replace(has_logged, true) {
                log::error!(
                    "message ids are exhausted: SAY and DM get 503 until the history journal is reset"
                );
            }
            Refusal::new(
                Code::Unavailable,
                "message ids are exhausted on this server",
            )
        })?;
        Ok(ServerMsg::Message(ChatMessage {
            id,
            ts: now.unix_ms,
            target,
            from,
            text,
        }))
    }

    fn say(
        &mut self,
        conn: ConnId,
        username: Username,
        text: String,
        room: Option<RoomName>,
        now: Now,
    ) -> Result<(), Refusal> {
        let room = self.room_or_current(conn, room)?;
        if !self.is_member(conn, &room) {
            return Err(Refusal::new(
                Code::Forbidden,
                format!("you are not in room {room}"),
            ));
        }
        let message = self.next_message(Target::Room(room.clone()), username, text, now)?;
        if let (Some(_), ServerMsg::Message(chat_message)) = (self.config.history_backlog, &message)
        {
            for dropped in self.history.record(chat_message) {
                self.join_backlogs.remove(&dropped);
            }
            self.join_backlogs.remove(&room);
        }
        if let Some(members) = self.rooms.get(&room) {
            self.clients.deliver(&members.members, &message);
        }
        Ok(())
    }

    fn dm(
        &mut self,
        conn: ConnId,
        username: Username,
        to: Username,
        text: String,
        now: Now,
    ) -> Result<(), Refusal> {
        let target = self
            .names
            .get(&to.key())
            .copied()
            .filter(|&target| {
                self.clients
                    .get(target)
                    .is_some_and(|client| client.state.username().is_some())
            })
            .ok_or_else(|| Refusal::new(Code::NotFound, format!("no such user {to}")))?;
        // Address the frame with the name as its holder spells it.
        let to = self
            .clients
            .get(target)
            .and_then(|client| client.state.username().cloned())
            .unwrap_or(to);
        let message = self.next_message(Target::User(to), username, text, now)?;
        let recipients: &[ConnId] = if target == conn {
            &[conn]
        } else {
            &[target, conn]
        };
        self.clients.deliver(recipients, &message);
        Ok(())
    }

    fn rename(&mut self, conn: ConnId, old: Username, new: Username) -> Result<(), Refusal> {
        if self.config.auth.kind() == AuthKind::Accounts {
            // A name is an account here: appearing under another one would
            // impersonate its owner (issue 11, item 1).
            return Err(Refusal::new(
                Code::Forbidden,
                "names are accounts on this server: log in as another account to use another name",
            ));
        }
        if !self.is_name_free_for(conn, &new) {
            return Err(Refusal::new(
                Code::Conflict,
                format!("username {new} is taken"),
            ));
        }
        self.names.remove(&old.key());
        self.names.insert(new.key(), conn);
        self.transition(
            conn,
            Input::Renamed {
                username: new.clone(),
            },
        );
        if let Some(client) = self.clients.get(conn) {
            log::info!("{} renamed {old} -> {new}", client.tag(conn));
        }
        self.clients.send(
            conn,
            &ServerMsg::YourName {
                username: new.clone(),
            },
        );
        let neighbours = self.neighbours(conn, true);
        self.clients
            .deliver(&neighbours, &ServerMsg::Renamed { old, new });
        Ok(())
    }

    /// Everyone who shares a room with `conn`, once each, not `conn`; without
    /// `include_quiet`, members of quiet rooms (presence is not announced
    /// there) are left out unless they share a room that is not quiet.
    fn neighbours(&self, conn: ConnId, include_quiet: bool) -> Vec<ConnId> {
        let Some(client) = self.clients.get(conn) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        client
            .rooms
            .iter()
            .filter_map(|room| self.rooms.get(room))
            .filter(|room| include_quiet || !self.is_quiet(room))
            .flat_map(|room| room.members.iter().copied())
            .filter(|&member| member != conn && seen.insert(member))
            .collect()
    }

    fn is_quiet(&self, room: &Room) -> bool {
        room.is_quiet(self.config.quiet_room_size)
    }

    fn who(&mut self, conn: ConnId, room: Option<RoomName>) -> Result<(), Refusal> {
        let room = self.room_or_current(conn, room)?;
        let members = &self
            .rooms
            .get(&room)
            .ok_or_else(|| Refusal::new(Code::NotFound, format!("no such room {room}")))?
            .members;
        let users: Vec<Username> = members
            .iter()
            .filter_map(|&member| self.clients.get(member)?.state.username().cloned())
            .collect();
        let chunks = capped_chunks(&users, WHO_CHUNK, WHO_ENTRY_BYTES, self.answer_cap());
        let last = chunks.len() - 1;
        let omitted = users.len() - chunks.iter().map(|chunk| chunk.len()).sum::<usize>();
        for (index, chunk) in chunks.into_iter().enumerate() {
            self.clients.send(
                conn,
                &ServerMsg::Users {
                    room: room.clone(),
                    users: chunk.to_vec(),
                    more: index < last,
                    omitted: if index == last { omitted } else { 0 },
                },
            );
        }
        Ok(())
    }

    /// ROOMS: every room with its member count, sorted by name, in 212
    /// frames of at most `ROOMS_CHUNK` rooms, the whole answer within its
    /// share of the output cap (`omitted` counts the rooms left out).
    fn room_list(&mut self, conn: ConnId) {
        let rooms: Vec<(RoomName, usize)> = self
            .rooms
            .iter()
            .map(|(name, room)| (name.clone(), room.members.len()))
            .collect();
        let chunks = capped_chunks(&rooms, ROOMS_CHUNK, ROOMS_ENTRY_BYTES, self.answer_cap());
        let last = chunks.len() - 1;
        let omitted = rooms.len() - chunks.iter().map(|chunk| chunk.len()).sum::<usize>();
        for (index, chunk) in chunks.into_iter().enumerate() {
            self.clients.send(
                conn,
                &ServerMsg::RoomList {
                    rooms: chunk.to_vec(),
                    more: index < last,
                    omitted: if index == last { omitted } else { 0 },
                },
            );
        }
    }

    fn join(&mut self, conn: ConnId, username: Username, room: RoomName) -> Result<(), Refusal> {
        let Some(client) = self.clients.get_mut(conn) else {
            return Ok(());
        };
        if let Some(position) = client.rooms.iter().position(|joined| *joined == room) {
            // Already a member: make it current and confirm to this user only.
            let room = client.rooms.remove(position);
            client.rooms.push(room.clone());
            self.clients
                .send(conn, &ServerMsg::Connected { username, room });
            return Ok(());
        }
        if client.rooms.len() >= MAX_ROOMS_PER_USER {
            return Err(Refusal::new(
                Code::Forbidden,
                format!("you are in {MAX_ROOMS_PER_USER} rooms already; PART one first"),
            ));
        }
        self.enter_room(conn, username, room);
        Ok(())
    }

    fn enter_room(&mut self, conn: ConnId, username: Username, room: RoomName) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.rooms.capacity() == 0 {
            // Most users are in one room: hold exactly that (idle memory).
            client.rooms.reserve_exact(1);
        }
        client.rooms.push(room.clone());
        let quiet_room_size = self.config.quiet_room_size;
        let entry = self.rooms.entry(room.clone()).or_default();
        entry.members.push(conn);
        let joined = ServerMsg::Connected {
            username,
            room: room.clone(),
        };
        if entry.is_quiet(quiet_room_size) {
            self.clients.send(conn, &joined);
        } else {
            self.clients.deliver(entry.members.iter(), &joined);
        }
        if let Some(backlog) = self.config.history_backlog {
            // The 208 must fit in what is left of the client's answer share:
            // the cached JSON frame (built for a client that owes nothing)
            // if it does, else a shorter one, built for this client alone.
            let room_left = self.answer_cap().saturating_sub(self.pending_bytes(conn));
            let budget = self.backlog_budget(conn);
            let full_budget = self
                .full_history_answer()
                .saturating_sub(BACKLOG_FRAME_BYTES);
            let Hub {
                clients,
                history,
                join_backlogs,
                ..
            } = self;
            let frame = |budget: usize| {
                let slice = history.last(&room, backlog, budget);
                ServerMsg::Backlog {
                    room: room.clone(),
                    messages: slice.messages,
                    more: slice.more,
                    gap: slice.gap,
                }
            };
            clients.enqueue_with(conn, |mode, arena| match mode {
                Mode::Json => {
                    let cached =
                        join_backlogs.get_or_encode(&room, || frame(full_budget).to_json_line());
                    if cached.len() <= room_left {
                        arena.append(|out| out.extend_from_slice(&cached))
                    } else {
                        arena.append(|out| frame(budget).write_json_line(out))
                    }
                }
                Mode::Text => {
                    arena.append(|out| out.extend_from_slice(&frame(budget).to_text_lines()))
                }
            });
        }
    }

    fn history_request(
        &mut self,
        conn: ConnId,
        room: Option<RoomName>,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<(), Refusal> {
        let Some(backlog) = self.config.history_backlog else {
            return Err(Refusal::new(
                Code::NotFound,
                "history is off on this server",
            ));
        };
        let room = self.room_or_current(conn, room)?;
        if !self.is_member(conn, &room) {
            return Err(Refusal::new(
                Code::Forbidden,
                format!("you are not in room {room}"),
            ));
        }
        let limit = limit.unwrap_or(backlog.max(1));
        let budget = self.backlog_budget(conn);
        let slice = match after {
            Some(after) => self.history.after(&room, after, limit, budget),
            None => self.history.last(&room, limit, budget),
        };
        self.send_backlog(conn, room, slice);
        Ok(())
    }

    fn send_backlog(&mut self, conn: ConnId, room: RoomName, slice: Slice) {
        self.clients.send(
            conn,
            &ServerMsg::Backlog {
                room,
                messages: slice.messages,
                more: slice.more,
                gap: slice.gap,
            },
        );
    }

    fn part(
        &mut self,
        conn: ConnId,
        username: Username,
        room: Option<RoomName>,
    ) -> Result<(), Refusal> {
        let room = self.room_or_current(conn, room)?;
        if !self.rooms.contains_key(&room) {
            return Err(Refusal::new(Code::NotFound, format!("no such room {room}")));
        }
        if !self.is_member(conn, &room) {
            return Err(Refusal::new(
                Code::Forbidden,
                format!("you are not in room {room}"),
            ));
        }
        if let Some(entry) = self.rooms.get(&room) {
            let left = ServerMsg::Disconnected {
                username,
                room: Some(room.clone()),
            };
            if self.is_quiet(entry) {
                self.clients.send(conn, &left);
            } else {
                self.clients.deliver(&entry.members, &left);
            }
        }
        self.remove_from_room(conn, &room);
        Ok(())
    }

    fn remove_from_room(&mut self, conn: ConnId, room: &RoomName) {
        if let Some(client) = self.clients.get_mut(conn) {
            client.rooms.retain(|joined| joined != room);
        }
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.members.retain(|&member| member != conn);
            if entry.members.is_empty() && *room != self.config.default_room {
                self.rooms.remove(room);
                self.join_backlogs.remove(room);
            }
        }
    }

    /// Leaves the server: 204 to everyone who shared a room, name freed,
    /// rooms left. Idempotent.
    fn leave(&mut self, conn: ConnId) {
        let Some(client) = self.clients.get(conn) else {
            return;
        };
        let username = client.state.username().cloned();
        self.orphan_pending_check(conn);
        if let Some(username) = username {
            let neighbours = self.neighbours(conn, false);
            self.clients.deliver(
                &neighbours,
                &ServerMsg::Disconnected {
                    username: username.clone(),
                    room: None,
                },
            );
            self.names.remove(&username.key());
        }
        let rooms = self
            .clients
            .get(conn)
            .map(|client| client.rooms.clone())
            .unwrap_or_default();
        for room in &rooms {
            self.remove_from_room(conn, room);
        }
        if self.state(conn).is_some_and(|state| *state != State::Quit) {
            self.transition(conn, Input::Leave);
        }
    }

    /// A check that got no verdict (503): JSON clients are told to send
    /// PASS again; a person at the text prompt is asked for the password
    /// again, in text mode's words, and prompted.
    fn ask_password_again(&mut self, conn: ConnId, why: &str, when: &str) {
        let is_text = self
            .clients
            .get(conn)
            .is_some_and(|client| client.mode == Some(Mode::Text));
        let again = if is_text {
            "type the password"
        } else {
            "send PASS"
        };
        self.clients.send(
            conn,
            &ServerMsg::error(Code::Unavailable, format!("{why}; {again} again{when}")),
        );
        if is_text {
            self.prompt_password(conn);
        }
    }

    /// Asks for the password (211 / `* password:`). A telnet client in text
    /// mode is first told `IAC WILL ECHO`, so it stops echoing what is
    /// typed; `transition` turns echo back on when PASS AUTH ends.
    fn prompt_password(&mut self, conn: ConnId) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.is_telnet && client.mode == Some(Mode::Text) && !client.is_echo_off {
            client.is_echo_off = true;
            self.clients.enqueue_with(conn, |_, arena| {
                arena.append(|out| out.extend_from_slice(WILL_ECHO))
            });
        }
        self.clients.send(conn, &ServerMsg::PassNeeded);
    }

    /// Gives a telnet client its local echo back (`IAC WONT ECHO`) if the
    /// password prompt took it.
    fn restore_echo(&mut self, conn: ConnId) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.is_echo_off {
            client.is_echo_off = false;
            self.clients.enqueue_with(conn, |_, arena| {
                arena.append(|out| out.extend_from_slice(WONT_ECHO))
            });
        }
    }

    /// Forgets the password check under way, if any, without a verdict:
    /// the throttle stops counting it in flight.
    fn end_pending_check(&mut self, conn: ConnId) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.pending_check.take().is_none() {
            return;
        }
        if let State::PassAuth { username } = &client.state {
            self.throttle
                .abandon(client.peer.ip(), username.key().as_str());
        }
    }

    /// The client leaves while its password check runs: the worker runs it
    /// anyway, so it stays in flight for the throttle until its verdict
    /// (`handle_verified` counts a wrong one), as if the client had waited.
    fn orphan_pending_check(&mut self, conn: ConnId) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        let Some(ticket) = client.pending_check.take() else {
            return;
        };
        if let State::PassAuth { username } = &client.state {
            self.orphan_checks
                .insert(ticket.get(), (client.peer.ip(), username.key()));
        }
    }

    /// Leaves now and asks the shell to close once the output is flushed.
    fn quit(&mut self, conn: ConnId, reason: &str) {
        if let Some(client) = self.clients.get(conn) {
            // The shell logs every disconnect with its cause at info; the
            // ordinary ones need no second line, nor those a peer causes
            // for the price of a connect (an HTTP request line, silence
            // until the login deadline): the shell's line is rate-limited.
            if matches!(
                reason,
                "peer closed" | "quit" | "sent HTTP" | "login timeout"
            ) {
                log::debug!("{} leaving: {reason}", client.tag(conn));
            } else {
                log::info!("{} leaving: {reason}", client.tag(conn));
            }
        }
        self.leave(conn);
        self.clients.mark_dirty(conn);
    }
}

#[cfg(test)]
mod tests;
