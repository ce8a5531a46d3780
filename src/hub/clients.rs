//! The connection table and fan-out: one `Client` per connection, frames
//! encoded once per encoding (JSON, text, WebSocket) into the turn arena
//! and queued as spans in each recipient's outbox; the greeting (at once,
//! or held until the shell says how the client speaks); the output cap (a
//! slow consumer is cut off) and the end of a turn. Decides nothing about
//! the chat.

use super::{ConnId, Hub, Now, Wire};
use crate::flood::{ByteBudget, TokenBucket};
use crate::outbox::{Arena, Flushed, Outbox, Span};
use crate::proto::{Features, RoomName, ServerMsg};
use crate::session::{Mode, State};
use crate::websocket;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU64;

/// Why a connection must be closed at once, without waiting for its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOff {
    /// It owed `owed` bytes, more than `limit` (`max_output_bytes`).
    SlowConsumer { owed: usize, limit: usize },
}

/// The hub's one answer about a connection it was told about: what the
/// shell does with the socket. Every input for a connection returns it, and
/// so does every flush (`Hub::flush`), which is the only way the shell
/// learns that a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The session goes on: read it, write what it is owed.
    Open,
    /// The session has left (QUIT, EOF, a refusal that ends it, shutdown):
    /// read nothing more from it, write what it is owed, then close.
    Leaving,
    /// Close at once: what it was owed is void.
    CutOff(CutOff),
    /// The session is over and owes nothing, or was never known: the hub
    /// has forgotten it. Close gracefully.
    Ended,
}

/// What one `Hub::flush` achieved and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFlush {
    /// The session goes on; `Partly` means bytes are still owed (wait for
    /// the socket to become writable).
    Open(Flushed),
    /// The session has left and bytes are still owed.
    Leaving,
    /// The session has left and everything owed was written: the hub has
    /// forgotten it; send the end of the stream.
    Ended,
    /// Close at once without writing (it owes more than the cap).
    CutOff(CutOff),
}

/// When a new connection is greeted (the 210).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// At once, as on every listener without `web`.
    Now,
    /// When the shell calls `Hub::handle_greet`: a web-enabled listener
    /// holds it until the first bytes tell HTTP from protocol lines.
    Deferred,
}

/// How the connection's lines are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Lines ending in `\n`, as written (TCP or TLS).
    Lines,
    /// One WebSocket text message per line, without its `\n`; JSON mode
    /// only.
    WebSocket,
}

/// How one frame is spelled for one recipient: a `FrameCache` slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Json,
    Text,
    WebSocket,
}

/// One connection's view from the hub.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) peer: SocketAddr,
    /// True for a connection that arrived on a TLS listener.
    pub(super) is_tls: bool,
    /// The ticket of the password check under way, if any.
    pub(super) pending_check: Option<NonZeroU64>,
    pub(super) state: State,
    /// `None` until the first non-empty line; frames sent before then (the
    /// greeting) are JSON.
    pub(super) mode: Option<Mode>,
    /// Wrong passwords so far on this connection.
    pub(super) failures: u8,
    /// The peer sent telnet negotiation: it understands `IAC WILL ECHO`.
    pub(super) is_telnet: bool,
    /// We sent `IAC WILL ECHO` (the password prompt) and owe `IAC WONT ECHO`.
    pub(super) is_echo_off: bool,
    /// Lines or WebSocket messages (JSON mode then, whatever it sends).
    pub(super) framing: Framing,
    /// The greeting is held (`Greeting::Deferred`) until `handle_greet`.
    pub(super) is_greeting_held: bool,
    /// Rooms joined, oldest first; the last one is the current room, where
    /// a SAY without `room` goes.
    pub(super) rooms: Vec<RoomName>,
    pub(super) outbox: Outbox,
    /// Set when the client must go now (slow consumer); its output is void.
    /// Boxed: rare, and this struct is held per connection.
    pub(super) cut_off: Option<Box<CutOff>>,
    /// When it connected, for the login deadline.
    pub(super) connected_ms: u64,
    /// When its last line arrived, for the idle ping.
    pub(super) last_input_ms: u64,
    /// When the idle ping (209) was sent, if it is unanswered.
    pub(super) ping_sent_ms: Option<u64>,
    pub(super) flood: TokenBucket,
    /// Consecutive frames refused for flooding.
    pub(super) flood_strikes: u32,
    /// Bytes of answers (HISTORY, WHO, ROOMS, PING, help) it was sent,
    /// against a rate; never counted as flooding.
    pub(super) answers: ByteBudget,
}

impl Client {
    /// How frames are spelled for it.
    fn encoding(&self) -> Encoding {
        match (self.framing, self.mode) {
            (Framing::WebSocket, _) => Encoding::WebSocket,
            (Framing::Lines, Some(Mode::Text)) => Encoding::Text,
            (Framing::Lines, _) => Encoding::Json,
        }
    }

    pub(super) fn tag(&self, conn: ConnId) -> String {
        format!("conn={conn} peer={}", self.peer)
    }

    /// Drops what is owed and marks the client for closing at once. Not
    /// logged here: the shell's one line for the disconnect says why
    /// (`Fate::CutOff`).
    pub(super) fn cut_off(&mut self, limit: usize) -> CutOff {
        let cut_off = CutOff::SlowConsumer {
            owed: self.outbox.pending_bytes(),
            limit,
        };
        self.outbox.clear();
        self.cut_off = Some(Box::new(cut_off));
        cut_off
    }
}

/// Within one turn a client may be owed this many times `max_output_bytes`
/// before the flush; past that it is cut off at once (a memory backstop).
pub(super) const TURN_BACKSTOP: usize = 16;

/// The connection table plus the lists the shell drains. Kept apart from
/// the rooms so a fan-out can read a room while writing outboxes.
#[derive(Debug, Default)]
pub(super) struct Clients {
    pub(super) slots: Vec<Option<Client>>,
    /// Connections whose outbox gained bytes (or that quit) since the shell
    /// last looked; each appears at most once per drain.
    pub(super) dirty: Vec<ConnId>,
    pub(super) is_dirty: Vec<bool>,
    pub(super) max_output_bytes: usize,
    /// Every frame encoded this turn; outboxes hold spans of it.
    pub(super) arena: Arena,
    /// Connections given a span of this turn's arena, to be sealed before
    /// it is cleared.
    pub(super) in_turn: Vec<ConnId>,
}

impl Clients {
    pub(super) fn get(&self, conn: ConnId) -> Option<&Client> {
        self.slots.get(conn.0).and_then(Option::as_ref)
    }

    pub(super) fn get_mut(&mut self, conn: ConnId) -> Option<&mut Client> {
        self.slots.get_mut(conn.0).and_then(Option::as_mut)
    }

    pub(super) fn mark_dirty(&mut self, conn: ConnId) {
        if !self.is_dirty[conn.0] {
            self.is_dirty[conn.0] = true;
            self.dirty.push(conn);
        }
    }

    /// Queues a frame, encoded for the recipient. `frames` caches the
    /// encodings so a fan-out encodes each at most once.
    pub(super) fn enqueue(&mut self, conn: ConnId, msg: &ServerMsg, frames: &mut FrameCache) {
        self.push_span(conn, |client, arena| {
            frames.get(msg, client.encoding(), arena)
        });
    }

    /// Queues what `encode` appends to the arena for a client in `mode`
    /// (one or more lines, appended fresh: never a cached span). For a
    /// WebSocket client they are JSON, then framed one message per line.
    pub(super) fn enqueue_with(
        &mut self,
        conn: ConnId,
        encode: impl FnOnce(Mode, &mut Arena) -> Span,
    ) {
        self.push_span(conn, |client, arena| match client.framing {
            Framing::Lines => encode(client.mode.unwrap_or(Mode::Json), arena),
            Framing::WebSocket => {
                let before = arena.len();
                let lines = encode(Mode::Json, arena);
                if arena.len() - before != lines.len() {
                    // Unframed bytes would break the stream: a bug, loud.
                    log::error!("a frame for a WebSocket client was not appended fresh; dropped");
                    return arena.append(|_| {});
                }
                arena.append(|bytes| frame_tail(bytes, lines.len()))
            }
        });
    }

    /// Queues the span `encode` gives for the client, under the output cap.
    fn push_span(&mut self, conn: ConnId, encode: impl FnOnce(&Client, &mut Arena) -> Span) {
        let max_output_bytes = self.max_output_bytes;
        let Some(client) = self.slots.get_mut(conn.0).and_then(Option::as_mut) else {
            return;
        };
        if client.cut_off.is_some() || client.is_greeting_held {
            // Nothing reaches a connection before its greeting: until the
            // shell knows how it speaks there is no spelling for it.
            return;
        }
        let span = encode(client, &mut self.arena);
        if client.outbox.push(span) {
            self.in_turn.push(conn);
        }
        // The cap proper is checked after a flush (`Hub::flush`): a
        // reader that keeps up may be owed a whole turn's burst. This
        // backstop only bounds memory within one turn.
        if client.outbox.pending_bytes() > max_output_bytes.saturating_mul(TURN_BACKSTOP) {
            client.cut_off(max_output_bytes);
        }
        self.mark_dirty(conn);
    }

    pub(super) fn send(&mut self, conn: ConnId, msg: &ServerMsg) {
        self.enqueue(conn, msg, &mut FrameCache::default());
    }

    pub(super) fn deliver<'a>(
        &mut self,
        recipients: impl IntoIterator<Item = &'a ConnId>,
        msg: &ServerMsg,
    ) {
        let mut frames = FrameCache::default();
        for &conn in recipients {
            self.enqueue(conn, msg, &mut frames);
        }
    }
}

/// Where a frame's encodings (JSON line, text lines, WebSocket message)
/// lie in the turn arena, each encoded on first use.
#[derive(Default)]
pub(super) struct FrameCache {
    pub(super) json: Option<Span>,
    pub(super) text: Option<Span>,
    pub(super) websocket: Option<Span>,
}

impl FrameCache {
    pub(super) fn get(&mut self, msg: &ServerMsg, encoding: Encoding, arena: &mut Arena) -> Span {
        let slot = match encoding {
            Encoding::Json => &mut self.json,
            Encoding::Text => &mut self.text,
            Encoding::WebSocket => &mut self.websocket,
        };
        slot.get_or_insert_with(|| {
            arena.append(|bytes| match encoding {
                Encoding::Json => msg.write_json_line(bytes),
                Encoding::Text => bytes.extend_from_slice(&msg.to_text_lines()),
                Encoding::WebSocket => {
                    // The JSON line without its `\n`, behind its header:
                    // written once, then moved up by the header's length.
                    let start = bytes.len();
                    msg.write_json_line(bytes);
                    if bytes.last() == Some(&b'\n') {
                        bytes.pop();
                    }
                    let (header, used) = websocket::text_header(bytes.len() - start);
                    bytes.splice(start..start, header[..used].iter().copied());
                }
            })
        })
        .clone()
    }
}

/// Appends, as WebSocket text messages, each line of the last `len` bytes
/// of `bytes` (lines ending in `\n`, which the message leaves out). The
/// lines themselves stay behind, unused, until the arena is cleared.
fn frame_tail(bytes: &mut Vec<u8>, len: usize) {
    let end = bytes.len();
    let mut start = end - len;
    while start < end {
        let line_end = memchr::memchr(b'\n', &bytes[start..end]).map_or(end, |at| start + at);
        let (header, used) = websocket::text_header(line_end - start);
        bytes.extend_from_slice(&header[..used]);
        bytes.extend_from_within(start..line_end);
        start = line_end + 1;
    }
}

impl Hub {
    /// Number of sessions, logged in or not.
    #[cfg(test)]
    pub(crate) fn connection_count(&self) -> usize {
        self.clients.slots.iter().flatten().count()
    }

    /// A new connection: greet it.
    pub fn handle_connected(&mut self, conn: ConnId, peer: SocketAddr, wire: Wire, now: Now) {
        self.handle_connected_with(conn, peer, wire, Greeting::Now, now);
    }

    /// A new connection, greeted now or when the shell calls
    /// `handle_greet` (`Greeting::Deferred`). Nothing is sent to it before
    /// its greeting; its login deadline runs from now either way.
    pub fn handle_connected_with(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        wire: Wire,
        greeting: Greeting,
        now: Now,
    ) {
        let slots = &mut self.clients.slots;
        if slots.len() <= conn.0 {
            slots.resize_with(conn.0 + 1, || None);
            self.clients.is_dirty.resize(conn.0 + 1, false);
        }
        slots[conn.0] = Some(Client {
            peer,
            is_tls: wire == Wire::Tls,
            pending_check: None,
            state: State::Listen,
            mode: None,
            failures: 0,
            is_telnet: false,
            is_echo_off: false,
            framing: Framing::Lines,
            is_greeting_held: greeting == Greeting::Deferred,
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
        if greeting == Greeting::Now {
            self.greet(conn);
        }
    }

    /// The shell knows how a connection with a held greeting speaks:
    /// greet it now, framed so. A WebSocket client is in JSON mode
    /// whatever its first message. Does nothing for one already greeted.
    pub fn handle_greet(&mut self, conn: ConnId, framing: Framing) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if !client.is_greeting_held {
            return;
        }
        client.is_greeting_held = false;
        client.framing = framing;
        self.greet(conn);
    }

    /// The shell answered the connection in HTTP (an error response): the
    /// session ends, without a greeting, once that is written.
    pub fn handle_http_answered(&mut self, conn: ConnId) -> Fate {
        if self.fate(conn) == Fate::Open {
            self.quit(conn, super::refusal::QuitReason::SentHttp);
        }
        self.fate(conn)
    }

    fn greet(&mut self, conn: ConnId) {
        self.clients.send(
            conn,
            &ServerMsg::Hello {
                auth: self.config.auth.kind(),
                features: Features {
                    has_history: self.config.history_backlog.is_some(),
                },
            },
        );
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

    #[cfg(test)]
    pub(crate) fn outbox_mut(&mut self, conn: ConnId) -> Option<&mut Outbox> {
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
        self.ledger.reserve_default_room(count);
    }

    /// Writes the connection's outbox with `write` (the shell's transport,
    /// given the outbox and the turn arena its spans point into), then
    /// answers what follows: the one round trip of a flush. A client still
    /// owing more than `max_output_bytes` after the write is cut off as a
    /// slow consumer (a reader that keeps up may be owed a whole turn's
    /// burst before it); a leaving session that owes nothing more is
    /// forgotten (`Ended`), as by `handle_closed`. A write error is handed
    /// back as it came: the shell closes the socket and reports it with
    /// `handle_closed`.
    pub fn flush(
        &mut self,
        conn: ConnId,
        write: impl FnOnce(&mut Outbox, &Arena) -> io::Result<Flushed>,
    ) -> io::Result<AfterFlush> {
        let max_output_bytes = self.clients.max_output_bytes;
        let Clients { slots, arena, .. } = &mut self.clients;
        let Some(client) = slots.get_mut(conn.0).and_then(Option::as_mut) else {
            return Ok(AfterFlush::Ended);
        };
        if let Some(cut_off) = client.cut_off.as_deref() {
            return Ok(AfterFlush::CutOff(*cut_off));
        }
        let flushed = write(&mut client.outbox, arena)?;
        if flushed == Flushed::Partly && client.outbox.pending_bytes() > max_output_bytes {
            return Ok(AfterFlush::CutOff(client.cut_off(max_output_bytes)));
        }
        if client.state != State::Quit {
            return Ok(AfterFlush::Open(flushed));
        }
        if flushed == Flushed::Partly {
            return Ok(AfterFlush::Leaving);
        }
        self.handle_closed(conn);
        Ok(AfterFlush::Ended)
    }

    /// Runs `write` on the connection's outbox and the turn arena, without
    /// what a flush decides after it (tests read what a socket would get).
    #[cfg(test)]
    pub(crate) fn with_output<R>(
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

    /// What the shell does with the connection now (`Fate`).
    pub fn fate(&self, conn: ConnId) -> Fate {
        match self.clients.get(conn) {
            None => Fate::Ended,
            Some(client) => match (&client.cut_off, &client.state) {
                (Some(cut_off), _) => Fate::CutOff(**cut_off),
                (None, State::Quit) => Fate::Leaving,
                (None, _) => Fate::Open,
            },
        }
    }

    /// True while the session's login (or rename, or entering a room in a
    /// cluster) waits for a decision made off the loop: a password
    /// verdict, the cluster's grant of a name or its throttle counts, a
    /// room's subscription and backlog. The shell hands it no more lines, and
    /// reads nothing more from its socket, until the hub lists it in
    /// `take_resumed`: what a client pipelined behind a USER, PASS, JOIN
    /// or RENAME is then answered as if it had waited for the answer (as
    /// a single node without a password hash answers it at once).
    pub fn is_waiting(&self, conn: ConnId) -> bool {
        self.clients
            .get(conn)
            .is_some_and(|client| client.pending_check.is_some())
            || self.is_cluster_waiting(conn)
    }

    /// Connections whose wait (`is_waiting`) may have ended since the last
    /// call: the shell reads the ones it held again. A connection may be
    /// listed and still wait (one decision led to another): the shell
    /// asks `is_waiting` again before it hands on a line.
    pub fn take_resumed(&mut self, into: &mut Vec<ConnId>) {
        into.append(&mut self.resumed);
    }

    /// A decision `conn` was waiting for came back.
    pub(super) fn resume(&mut self, conn: ConnId) {
        self.resumed.push(conn);
    }

    /// The session's current state (for the hub and its tests; the shell
    /// goes by `Fate`).
    pub(crate) fn state(&self, conn: ConnId) -> Option<&State> {
        self.clients.get(conn).map(|client| &client.state)
    }
}

#[cfg(test)]
mod websocket_tests {
    //! The greeting held for web listeners and the WebSocket encoding;
    //! the rest of the hub is tested in `hub/tests`.
    use super::super::HubConfig;
    use super::*;
    use serde_json::{Value, json};

    const NOW: Now = Now {
        unix_ms: 1_700_000_000_000,
        mono_ms: 0,
    };

    fn hub() -> Hub {
        Hub::new(HubConfig::for_tests())
    }

    fn connect(hub: &mut Hub, index: usize, greeting: Greeting) -> ConnId {
        let conn = ConnId(index);
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        hub.handle_connected_with(conn, peer, Wire::Plain, greeting, NOW);
        conn
    }

    /// Everything the connection is owed, taken.
    fn take(hub: &mut Hub, conn: ConnId) -> Vec<u8> {
        let mut bytes = Vec::new();
        hub.with_output(conn, |outbox, arena| {
            let _ = outbox.write_to(arena, &mut bytes);
        });
        bytes
    }

    /// Server WebSocket frames as their JSON payloads; each must be one
    /// final, unmasked text frame holding one line without its `\n`.
    fn messages(mut bytes: &[u8]) -> Vec<Value> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[0], 0x81, "a final text frame");
            let (len, start) = match bytes[1] {
                126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
                127 => panic!("no frame here is that long"),
                len => (usize::from(len), 2),
            };
            let payload = &bytes[start..start + len];
            assert!(!payload.contains(&b'\n'), "one line, no terminator");
            frames.push(serde_json::from_slice(payload).unwrap());
            bytes = &bytes[start + len..];
        }
        frames
    }

    fn line(hub: &mut Hub, conn: ConnId, frame: Value) {
        hub.handle_line(conn, &frame.to_string(), NOW);
    }

    #[test]
    fn a_held_greeting_waits_for_handle_greet_and_nothing_goes_out_before_it() {
        let mut hub = hub();
        let now = connect(&mut hub, 0, Greeting::Now);
        let held = connect(&mut hub, 1, Greeting::Deferred);
        let greeting = take(&mut hub, now);
        assert!(greeting.starts_with(b"{\"code\":210"));
        assert!(take(&mut hub, held).is_empty());
        hub.handle_greet(held, Framing::Lines);
        assert_eq!(
            take(&mut hub, held),
            greeting,
            "the same greeting, byte for byte"
        );
        // Once only.
        hub.handle_greet(held, Framing::Lines);
        assert!(take(&mut hub, held).is_empty());
    }

    #[test]
    fn an_http_answer_ends_a_held_session_ungreeted() {
        let mut hub = hub();
        let conn = connect(&mut hub, 0, Greeting::Deferred);
        assert_eq!(hub.handle_http_answered(conn), Fate::Leaving);
        assert!(take(&mut hub, conn).is_empty());
    }

    #[test]
    fn a_websocket_client_is_greeted_in_a_frame_and_stays_in_json_mode() {
        let mut hub = hub();
        let conn = connect(&mut hub, 0, Greeting::Deferred);
        hub.handle_greet(conn, Framing::WebSocket);
        let greeting = messages(&take(&mut hub, conn));
        assert_eq!(greeting[0]["code"], 210);
        hub.handle_line(conn, "ann", NOW);
        assert_eq!(messages(&take(&mut hub, conn))[0]["code"], 400);
        // Answers with a ref go through `enqueue_with`: framed too.
        line(
            &mut hub,
            conn,
            json!({"code": 108, "token": 7, "ref": "r1"}),
        );
        assert_eq!(
            messages(&take(&mut hub, conn)),
            [json!({"code": 207, "token": 7, "ref": "r1"})]
        );
    }

    #[test]
    fn a_fan_out_frames_once_per_turn_for_all_websocket_members() {
        let mut hub = hub();
        let speaker = connect(&mut hub, 0, Greeting::Now);
        line(&mut hub, speaker, json!({"code": 110, "username": "ann"}));
        let members: Vec<ConnId> = (1..=5)
            .map(|index| {
                let conn = connect(&mut hub, index, Greeting::Deferred);
                hub.handle_greet(conn, Framing::WebSocket);
                line(
                    &mut hub,
                    conn,
                    json!({"code": 110, "username": format!("web{index}")}),
                );
                conn
            })
            .collect();
        hub.end_turn();
        for conn in std::iter::once(speaker).chain(members.iter().copied()) {
            take(&mut hub, conn);
        }
        let before = hub.clients.arena.len();
        line(&mut hub, speaker, json!({"code": 100, "message": "hi all"}));
        let grown = hub.clients.arena.len() - before;
        let json_line = take(&mut hub, speaker);
        assert!(json_line.ends_with(b"\n"));
        let heard: Vec<Vec<u8>> = members.iter().map(|&conn| take(&mut hub, conn)).collect();
        assert!(heard.windows(2).all(|pair| pair[0] == pair[1]));
        let frame = &heard[0];
        assert_eq!(
            frame.len(),
            2 + json_line.len() - 1,
            "header + line without \\n"
        );
        assert_eq!(&frame[2..], &json_line[..json_line.len() - 1]);
        assert_eq!(messages(frame)[0]["message"]["text"], "hi all");
        // One JSON line and one WebSocket frame in the arena, not six.
        assert_eq!(grown, json_line.len() + frame.len());
    }
}
