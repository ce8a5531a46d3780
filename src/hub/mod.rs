//! The chat itself: who is connected, which names are taken, who is in which
//! room, and who receives each frame.
//!
//! The hub turns lines into effects on every session and pushes the encoded
//! frames into per-connection outboxes. It never touches a socket, a file or
//! the clock: time arrives as `Now`, and the server shell drains the outboxes.
//! See `design/architecture.md` for the path of one message.
//!
//! # The contract with the shell
//!
//! The hub's methods come in four kinds; the shell (`server/`) calls them in
//! this order, once per loop turn.
//!
//! - **Inputs** (`handle_*`), as events arrive: `handle_connected` for an
//!   accepted socket (it is greeted; `handle_connected_with` and
//!   `Greeting::Deferred` hold the greeting until `handle_greet` says how
//!   it speaks, `Framing::Lines` or `WebSocket`, or `handle_http_answered`
//!   ends it ungreeted), then for each read `handle_line` per
//!   complete line, `handle_codec_error` for a line the codec could not
//!   deliver, `handle_telnet` once the codec has seen telnet negotiation,
//!   `handle_eof` when the peer closed its side. Verdicts of the password
//!   worker come back as `handle_verified` (or `handle_verify_busy` when its
//!   queue was full). `handle_shutdown` once, when the server goes down.
//!   The inputs about one connection's bytes return its `Fate`: once it is
//!   not `Open`, the shell hands it no more lines. While `is_waiting(conn)`
//!   (a login, or in a cluster a rename or a room's entry, decided off the
//!   loop) the shell hands it no lines and does not read it; the hub lists
//!   it in `take_resumed` when the decision is back, and the shell reads
//!   it again (design/architecture.md, "Held input").
//! - **Timers**: `deadline(conn)` says when `handle_timeout(conn, now)` has
//!   something to do (login deadline, idle ping, idle close); early or
//!   repeated calls do nothing.
//! - **Outputs**, drained after the inputs of a turn: `drain_verify_jobs`
//!   (password checks to run off the loop), `take_id_reservation` and
//!   `take_unwritten_history` (journaled before any flush), `drain_dirty`
//!   (connections whose outbox gained bytes, or whose fate changed), and per
//!   dirty connection one `flush`: the shell passes its transport's write,
//!   the hub answers what follows (`AfterFlush`: keep, still leaving, ended,
//!   or cut off as a slow consumer). That answer is the only way the shell
//!   learns that a session is over; it keeps no copy of the chat's state.
//! - **Ends**: a socket the shell closed (EOF after leaving, an IO error, a
//!   cut-off, a deadline) is reported with `handle_closed`, which may queue
//!   204s for others, so the flush repeats; `end_turn` ends the turn: what
//!   is still owed is sealed out of the turn arena.
//!
//! A JSON client may tie a `ref` to a request (`proto::Ref`): the frames
//! that answer that request alone to its sender (its error, 202, 206, 207,
//! 208 of HISTORY, 211, 212) carry it back. The hub holds it while it
//! handles the line (`Hub::answering`), or, for a password checked off the
//! loop, until the verdict (`Hub::check_refs`); never in `Client`.
//!
//! Reload calls `set_config`; start-up calls `reserve_connections`,
//! `restore_history` and `restore_next_id`; compaction reads `history` and
//! `id_reservation`; a quiet loop calls `release_idle_memory`.
//!
//! # Where each job lives
//!
//! - `mod.rs`: the `Hub`, its configuration, dispatch of a line
//!   (`handle_line`, `dispatch`, `chat`), flood control, timeouts, closing.
//! - `clients.rs`: the connection table, fan-out into outboxes, each
//!   connection's `Fate`, the flush and the output cap (cut-off), the turn
//!   arena (`end_turn`, `drain_dirty`).
//! - `login.rs`: USER, PASS, password checks as jobs and verdicts, the login
//!   throttle, telnet echo around the password prompt, account checks at
//!   reload.
//! - `rooms.rs`: JOIN, PART, WHO, ROOMS, RENAME, presence (joins and leaves,
//!   quiet rooms), leaving the server.
//! - `messages.rs`: SAY, DM, HISTORY, the journal's view of ids and
//!   history, the join-backlog cache, the answer budget.
//! - `ledger.rs`: the `Ledger`, the one place that decides names, room
//!   membership, message ids and history; handlers ask it, then apply its
//!   answer (the seam where a cluster backend will answer later).
//! - `cluster.rs`: cluster mode (issue 14): the ledger's decisions as
//!   jobs for the NATS bridge (`drain_cluster_jobs`) and their answers and
//!   events (`handle_cluster`); absent without `cluster_url`.
//! - `refusal.rs`: every refusal as one typed `Refusal` (code and wire text),
//!   and why a session quits (`QuitReason`).

mod clients;
mod cluster;
mod ledger;
mod login;
mod messages;
mod refusal;
mod rooms;

pub use clients::{AfterFlush, CutOff, Fate, Framing, Greeting};
pub use login::{MAX_PASSWORD_FAILURES, VerifyJob};
pub use messages::{ANSWER_BURST, ANSWER_RATE, ANSWER_SHARE};
pub use rooms::{MAX_ROOMS_PER_USER, ROOMS_CHUNK, WHO_CHUNK};

use crate::auth::Auth;
use crate::codec::CodecError;
use crate::proto::{
    NameKey, ProtoError, Ref, Request, RoomName, ServerMsg, TextExpect, Username, parse_json_line,
    parse_text,
};
use crate::session::{Input, Mode, State};
use crate::throttle::Throttle;
use clients::Clients;
use ledger::Ledger;
use login::ECHOED_LINE_END;
use messages::BacklogCache;
use refusal::{QuitReason, Refusal};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// A connection's identity, shared with the server shell (it is the mio
/// token). The shell may reuse an id only after `handle_closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a connection's bytes cross the wire, as far as the chat cares: the
/// password rule (`require_tls_for_password`) looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Plaintext TCP: anyone on the path reads it.
    Plain,
    /// TLS: encrypted from the client to riftd.
    Tls,
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

#[cfg(test)]
impl HubConfig {
    /// Open auth in room "lobby", no history, and no limit a test does not
    /// ask for (the hub's, the connection's and the WebSocket tests').
    pub(crate) fn for_tests() -> HubConfig {
        HubConfig {
            auth: Auth::Open,
            default_room: RoomName::parse("lobby").expect("a valid room name"),
            max_output_bytes: 1 << 30,
            require_tls_for_password: false,
            history_backlog: None,
            history_keep: 100,
            history_max_bytes: usize::MAX,
            quiet_room_size: 0,
            auth_timeout_ms: u64::MAX / 4,
            idle_timeout_ms: 0,
            flood_rate: 0.0,
            flood_burst: 1.0,
        }
    }
}

/// Consecutive flood refusals (429) after which a client is disconnected.
pub const MAX_FLOOD_STRIKES: u32 = 20;

/// The whole chat.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    clients: Clients,
    /// Names, room membership, message ids and history: asked, never
    /// edited, by the handlers.
    ledger: Ledger,
    /// The 208 a JSON client gets on joining a room, encoded once and kept
    /// until the room's next message: a reconnect storm into a quiet room
    /// encodes its backlog once, not once per login.
    join_backlogs: BacklogCache,
    /// Failed logins per address and per name.
    throttle: Throttle,
    /// Password checks for the shell to run off the loop.
    verify_jobs: Vec<VerifyJob>,
    next_ticket: u64,
    /// Checks whose client left (or quit) while they ran, by ticket: the
    /// worker still runs them, so the throttle keeps counting them in
    /// flight until their verdict, and a wrong one still counts.
    orphan_checks: HashMap<u64, (IpAddr, NameKey)>,
    /// The request being answered and its ref, while the hub handles the
    /// line (or the password verdict) that carried one: `answer` ties its
    /// frames to it. `None` otherwise, and for every frame without a ref.
    answering: Option<Answering>,
    /// The refs of PASS frames whose check runs off the loop, by ticket,
    /// until the verdict (or the end of the check) answers them. Only
    /// checks of a PASS that carried a ref are here.
    check_refs: HashMap<u64, Ref>,
    /// Cluster mode: `None` for a single node, where the ledger answers
    /// everything at once.
    cluster: Option<Box<cluster::Cluster>>,
    /// Connections whose wait for a login decision ended (`is_waiting`
    /// turned false) since the shell last took them: their held input is
    /// read again.
    resumed: Vec<ConnId>,
}

/// A request that carried a ref, from `conn`, being answered.
#[derive(Debug)]
struct Answering {
    conn: ConnId,
    reference: Ref,
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

impl Hub {
    pub fn new(config: HubConfig) -> Hub {
        Hub {
            clients: Clients {
                max_output_bytes: config.max_output_bytes,
                ..Clients::default()
            },
            ledger: Ledger::new(&config),
            config,
            join_backlogs: BacklogCache::default(),
            throttle: Throttle::default(),
            verify_jobs: Vec::new(),
            next_ticket: 1,
            orphan_checks: HashMap::new(),
            answering: None,
            check_refs: HashMap::new(),
            cluster: None,
            resumed: Vec::new(),
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
        self.ledger.set_config(&config);
        self.clients.max_output_bytes = config.max_output_bytes;
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

    /// One complete line from the codec. Returns the connection's fate: once
    /// it is not `Open`, the shell hands it no more lines.
    pub fn handle_line(&mut self, conn: ConnId, line: &str, now: Now) -> Fate {
        self.take_line(conn, line, now);
        // A ref lives for the handling of its line only.
        self.answering = None;
        self.fate(conn)
    }

    fn take_line(&mut self, conn: ConnId, line: &str, now: Now) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        // A session that has left (or was cut off) takes no more lines:
        // nothing is answered, and nothing of them is logged (a text line
        // after a final wrong password may be a password).
        if client.cut_off.is_some() || client.state == State::Quit {
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
            if client.framing == Framing::WebSocket {
                client.mode = Some(Mode::Json); // JSON only over WebSocket.
            }
            // Through the machine, like every move of a session.
            match client.state.next(Input::FirstLine) {
                Ok(next) => client.state = next,
                Err(error) => log::error!("{} {error}", client.tag(conn)),
            }
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
            _ => {
                let parsed = parse_json_line(line);
                self.answering = parsed
                    .reference
                    .map(|reference| Answering { conn, reference });
                parsed.request
            }
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
                self.clients
                    .send(conn, &Refusal::from(ProtoError::Http).to_msg());
                self.quit(conn, QuitReason::SentHttp);
                return;
            }
            Err(error) => {
                self.refuse(conn, error.into());
                return;
            }
        };
        if !state.allows(request.code()) {
            let refusal = Refusal::NotAllowed {
                code: request.code(),
                state,
            };
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
            self.answer(conn, &Refusal::ExcessFlood.to_msg());
            self.quit(conn, QuitReason::ExcessFlood);
        } else {
            self.answer(conn, &Refusal::Flooding { rate }.to_msg());
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
            self.clients.send(conn, &Refusal::LoginTimeout.to_msg());
            self.quit(conn, QuitReason::LoginTimeout);
        } else if client.ping_sent_ms.is_some() {
            self.clients.send(conn, &Refusal::PingUnanswered.to_msg());
            self.quit(conn, QuitReason::IdleTimeout);
        } else {
            client.ping_sent_ms = Some(now.mono_ms);
            self.clients.send(conn, &ServerMsg::ServerPing);
        }
    }

    /// A line the codec could not deliver.
    pub fn handle_codec_error(&mut self, conn: ConnId, error: CodecError) -> Fate {
        if self.fate(conn) == Fate::Open {
            self.refuse(conn, Refusal::Codec(error));
        }
        self.fate(conn)
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
    pub fn handle_eof(&mut self, conn: ConnId) -> Fate {
        if self.fate(conn) == Fate::Open {
            self.quit(conn, QuitReason::PeerClosed);
        }
        self.fate(conn)
    }

    /// The server is going down: tell everyone (205) and stop reading them.
    pub fn handle_shutdown(&mut self) {
        let mut leaving = Vec::new();
        for index in 0..self.clients.slots.len() {
            let conn = ConnId(index);
            let Some(client) = self.clients.get_mut(conn) else {
                continue;
            };
            if self.cluster.is_some()
                && let Some(username) = client.state.username()
            {
                leaving.push((username.clone(), client.rooms.clone()));
            }
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
        self.ledger.release_everyone();
        self.cluster_shutdown(leaving);
    }

    fn refuse(&mut self, conn: ConnId, refusal: Refusal) {
        if let Some(client) = self.clients.get(conn) {
            // The error may quote peer text (an unknown key, a command):
            // escaped, so it cannot forge a log line or reach a terminal.
            log::debug!(
                "{} refused: {} {:?}",
                client.tag(conn),
                refusal.code().number(),
                refusal.to_string()
            );
        }
        self.answer(conn, &refusal.to_msg());
    }

    /// Sends `msg` to `conn` as an answer to the request being handled
    /// alone: with that request's ref, if it carried one and came from
    /// `conn`; otherwise exactly as `Clients::send` would. Broadcasts
    /// never come through here.
    fn answer(&mut self, conn: ConnId, msg: &ServerMsg) {
        let Hub {
            clients, answering, ..
        } = self;
        match answering {
            Some(answering) if answering.conn == conn => {
                let reference = &answering.reference;
                clients.enqueue_with(conn, |mode, arena| {
                    arena.append(|out| match mode {
                        Mode::Json => msg.write_json_line_with_ref(reference, out),
                        Mode::Text => out.extend_from_slice(&msg.to_text_lines()),
                    })
                });
            }
            _ => clients.send(conn, msg),
        }
    }

    /// Runs `answer_it` as the answer to a request of `conn`'s that is
    /// answered late (a PASS whose check ran off the loop): `reference`,
    /// the ref it carried, goes on the frames `answer` sends.
    fn answering_late(
        &mut self,
        conn: ConnId,
        reference: Option<Ref>,
        answer_it: impl FnOnce(&mut Hub),
    ) {
        let answering = reference.map(|reference| Answering { conn, reference });
        let outer = std::mem::replace(&mut self.answering, answering);
        answer_it(self);
        self.answering = outer;
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        state: State,
        request: Request,
        now: Now,
    ) -> Result<(), Refusal> {
        match (state, request) {
            (_, Request::Ping { token }) => self.answer(conn, &ServerMsg::Pong { token }),
            (_, Request::Quit) => self.quit(conn, QuitReason::Quit),
            (_, Request::Help) => self.clients.send(conn, &ServerMsg::Help),
            (State::UserAuth, Request::User { username }) => self.user(conn, username, now)?,
            (State::PassAuth { username }, Request::Pass { password }) => {
                self.pass(conn, username, password, now)?
            }
            (State::Broadcast { username }, request) => self.chat(conn, username, request, now)?,
            // `State::allows` has already refused every other combination.
            (state, request) => {
                return Err(Refusal::NotAllowed {
                    code: request.code(),
                    state,
                });
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
            _ => Err(Refusal::NotAllowedInBroadcast),
        }
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

    /// Leaves now and asks the shell to close once the output is flushed.
    fn quit(&mut self, conn: ConnId, reason: QuitReason) {
        if let Some(client) = self.clients.get(conn) {
            // The shell logs every disconnect with its cause at info; the
            // ordinary ones need no second line, nor those a peer causes
            // for the price of a connect (an HTTP request line, silence
            // until the login deadline): the shell's line is rate-limited.
            if reason.is_ordinary() {
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
