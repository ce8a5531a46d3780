//! One accepted socket as the event loop sees it: the stream, its transport
//! (plain, TLS, the HTTP gate of `web = true`, WebSocket), its line codec, its phase (open, quitting, draining,
//! closed) and the readiness it is registered for. It reads itself (bytes
//! through the transport into the codec, lines into the hub) and flushes
//! itself (the outbox through the transport), and follows the hub's answer
//! (`Fate`, `AfterFlush`) from one phase to the next. Chat state lives in
//! the hub; this only moves bytes.
//!
//! ```text
//!   Open ──hub: Leaving──▶ Quitting ──flushed, hub: Ended──▶ Draining ──peer FIN──▶ Closed
//!    │                       │   (FIN sent; input discarded)     │ (or the drain linger)
//!    │                       └──linger passed: Deadline──────────┼──────────────────▶ Closed
//!    ├──flushed, hub: Ended (the session ended elsewhere)──▶ Draining
//!    └──EOF/reset/IO or TLS error, hub: CutOff (slow consumer)────────────────────▶ Closed
//! ```
//!
//! A connection is removed at the end of the turn in which it is `Closed`;
//! the shell then tells the hub (`Hub::handle_closed`), which frees its
//! name and sends the 204s.
//!
//! On a web-enabled listener the hub holds the greeting: the connection
//! tells it when the transport's gate decides (`Hub::handle_greet` with
//! the framing, or `handle_http_answered`), or when the gate's delay passes
//! with nothing decided (`greet_if_due`, from the server's timer).

use super::http::Status;
use super::instant_after;
use super::transport::{Read, Switch, Transport};
use crate::codec::{LineCodec, TurnBudget};
use crate::hub::{AfterFlush, ConnId, CutOff, Fate, Framing, Hub, Now};
use crate::outbox::Flushed;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

/// How long a quitting client may take to accept what it is owed.
const QUIT_LINGER: Duration = Duration::from_secs(5);
/// After our FIN, how long we keep reading (and discarding) so that closing
/// does not reset a connection whose last frames are still in flight.
const DRAIN_LINGER: Duration = Duration::from_secs(2);
/// The same during shutdown, where many clients drain at once.
const SHUTDOWN_DRAIN_LINGER: Duration = Duration::from_millis(500);
/// One read call's buffer, shared by every connection.
pub const READ_CHUNK: usize = 64 * 1024;

/// Why a connection was closed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed or reset the connection.
    PeerClosed,
    /// A read or write failed.
    IoError,
    /// The session quit and its output was flushed.
    Quit,
    /// The client owed more than `max_output_bytes` (logged when it was
    /// cut off, with how much).
    SlowConsumer,
    /// Its output did not drain before the linger or shutdown deadline.
    Deadline,
    /// The TLS handshake or a record failed (garbage on the TLS port).
    TlsError,
}

/// Where a connection is in its life (see the diagram above). The
/// deadline of the two lingering phases is `Conn::linger_until` (kept
/// apart so this stays one byte: the struct is held per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Lines go to the hub.
    Open,
    /// The session has left: input is discarded, output is still written,
    /// until everything is out or the linger deadline (set at the first
    /// flush that could not write everything) passes.
    Quitting,
    /// Everything was written and our FIN sent; reading (and discarding)
    /// until the peer's FIN or the drain deadline, so closing does not
    /// reset frames still in flight.
    Draining,
    /// To be removed at the end of the turn.
    Closed(CloseReason),
}

/// What a read left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Read until the socket would block (or the connection closed).
    Done,
    /// Stopped at the turn budget: input may be left, and edge-triggered
    /// readiness will not report it again, so read again next turn.
    BudgetSpent,
}

/// `Conn::timer_ms` when no timer is queued.
const NO_TIMER: u64 = u64::MAX;

#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    codec: LineCodec,
    phase: Phase,
    /// When a quitting or draining connection is closed whatever it still
    /// owes or is sent.
    linger_until: Option<Instant>,
    /// True while WRITABLE is in the registered interest (bytes are owed).
    is_write_registered: bool,
    /// True once the peer sent EOF; no further readiness will say so again.
    has_peer_closed: bool,
    /// True while the hub's session waits for a login decision
    /// (`Hub::is_waiting`): its lines stay in the codec and its socket is
    /// not read (the client's own bytes back up in TCP), until the hub
    /// lists it as resumed and the server reads it again.
    is_held: bool,
    /// The earliest hub deadline a timer is queued for; `NO_TIMER` if none
    /// (a plain `u64`: this struct is held per connection).
    timer_ms: u64,
    /// The loop turn in which it was last read: a connection is read at
    /// most once per turn (from the ready list or for its event), so it
    /// gets one turn's budget and is carried to the next turn only once.
    read_turn: u64,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        transport: Transport,
        max_line_bytes: usize,
    ) -> Conn {
        Conn {
            stream,
            peer,
            transport,
            codec: LineCodec::new(max_line_bytes),
            phase: Phase::Open,
            linger_until: None,
            is_write_registered: false,
            has_peer_closed: false,
            is_held: false,
            timer_ms: NO_TIMER,
            read_turn: 0,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Why it is to be removed, once it is.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.phase {
            Phase::Closed(reason) => Some(reason),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.close_reason().is_some()
    }

    /// Marks the connection for removal; the first reason wins.
    pub fn close(&mut self, reason: CloseReason) {
        if !self.is_closed() {
            self.phase = Phase::Closed(reason);
        }
    }

    /// Registers the socket with the loop, for reading.
    pub fn register(&mut self, registry: &Registry, id: ConnId) {
        if let Err(error) = registry.register(&mut self.stream, Token(id.0), Interest::READABLE) {
            log::error!("conn={id} peer={} cannot register: {error}", self.peer);
            self.close(CloseReason::IoError);
        }
    }

    pub fn set_max_line(&mut self, max_line_bytes: usize) {
        self.codec.set_max_line(max_line_bytes);
    }

    /// When it is closed even if it is still owed output or the peer has
    /// not closed its side, while it quits or drains.
    pub fn linger_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Quitting | Phase::Draining => self.linger_until,
            Phase::Open | Phase::Closed(_) => None,
        }
    }

    /// Closes it if its linger deadline has passed: a drained session ends
    /// normally, one still owed output was cut short.
    pub fn expire(&mut self, now: Instant) {
        if self.linger_until.is_none_or(|until| now < until) {
            return;
        }
        match self.phase {
            Phase::Quitting => self.close(CloseReason::Deadline),
            Phase::Draining => self.close(CloseReason::Quit),
            Phase::Open | Phase::Closed(_) => {}
        }
    }

    /// Notes a hub deadline for this connection; true if it is earlier than
    /// the one a timer is queued for, so a timer must be queued for it.
    pub fn arm_timer(&mut self, deadline_ms: u64) -> bool {
        if deadline_ms < self.timer_ms {
            self.timer_ms = deadline_ms;
            return true;
        }
        false
    }

    /// A queued timer fired; true if it is the live one (not superseded by
    /// an earlier one, nor stale).
    pub fn fire_timer(&mut self, deadline_ms: u64) -> bool {
        if self.timer_ms != deadline_ms {
            return false;
        }
        self.timer_ms = NO_TIMER;
        true
    }

    /// Reads what the socket has, within this turn's budget, and hands each
    /// complete line to the hub while the session is open. A connection is
    /// read at most once per `turn`. After a TLS handshake step, check
    /// `has_own_output`.
    pub fn read(
        &mut self,
        id: ConnId,
        hub: &mut Hub,
        read_buf: &mut [u8],
        turn: u64,
        turn_budget: &TurnBudget,
        now: Now,
    ) -> Reading {
        if self.is_closed() || self.read_turn == turn {
            // Already read this turn (from the ready list, then its event):
            // one budget per turn, and one place on the ready list.
            return Reading::Done;
        }
        self.read_turn = turn;
        if self.phase == Phase::Open {
            // The session may have ended since the last read without a
            // line of its own (shutdown, a password verdict, a reload):
            // catch up first, so nothing more reaches it.
            self.follow(id, hub.fate(id));
        }
        // Every line handed on and every byte read is charged, whatever the
        // codec makes of it, so no input of any shape holds the loop.
        let mut budget = turn_budget.clone();
        let mut reading = Reading::Done;
        loop {
            // Lines already buffered first, within this turn's budget.
            while budget.has_lines() && self.phase == Phase::Open {
                if self.hold_if_waiting(id, hub) {
                    break;
                }
                let Some(line) = self.codec.next_line() else {
                    break;
                };
                let fate = match line {
                    Ok(line) => hub.handle_line(id, line, now),
                    Err(error) => hub.handle_codec_error(id, error),
                };
                self.follow(id, fate);
                budget.charge_line();
            }
            if self.phase == Phase::Open && self.hold_if_waiting(id, hub) {
                // Nothing more is read until the decision is back; the
                // server reads it again then (`resume`).
                break;
            }
            if budget.is_spent() {
                // More may wait in the codec or the socket: next turn.
                reading = Reading::BudgetSpent;
                break;
            }
            let buf = &mut read_buf[..budget.read_len(READ_CHUNK)];
            match self.transport.read(&mut self.stream, buf) {
                Ok(Read::WouldBlock) => break,
                Ok(Read::Closed) => {
                    self.has_peer_closed = true;
                    match self.phase {
                        // Draining after our FIN: the peer has closed too.
                        Phase::Draining => self.close(CloseReason::Quit),
                        Phase::Open => {
                            log::debug!("conn={id} peer={} closed its side", self.peer);
                            let fate = hub.handle_eof(id);
                            self.follow(id, fate);
                        }
                        // What it is owed is still written (a half-closed
                        // socket takes writes); the flush then closes.
                        Phase::Quitting | Phase::Closed(_) => {}
                    }
                    break;
                }
                Ok(Read::Ended) => {
                    // A WebSocket close frame (or a broken rule): the
                    // session leaves as at EOF, but the socket is still
                    // open for our close frame, and the drain after it.
                    if let Some(code) = self.transport.websocket_end() {
                        log::debug!(
                            "conn={id} peer={} ended the WebSocket (close {})",
                            self.peer,
                            code.number()
                        );
                    }
                    if self.phase == Phase::Open {
                        let fate = hub.handle_eof(id);
                        self.follow(id, fate);
                    }
                }
                Ok(Read::Consumed(cost)) => budget.charge_bytes(cost),
                Ok(Read::Switched { to, len, cost }) => {
                    budget.charge_bytes(cost);
                    if self.phase != Phase::Open {
                        continue;
                    }
                    match to {
                        Switch::Lines => hub.handle_greet(id, Framing::Lines),
                        Switch::WebSocket => {
                            log::debug!("conn={id} peer={} upgraded to WebSocket", self.peer);
                            hub.handle_greet(id, Framing::WebSocket);
                        }
                        Switch::Answered => {
                            let fate = hub.handle_http_answered(id);
                            self.follow(id, fate);
                        }
                    }
                    self.take_input(id, hub, &buf[..len]);
                }
                Ok(Read::Data { len, cost }) => {
                    budget.charge_bytes(cost);
                    if self.phase != Phase::Open {
                        // Quitting or draining: input is discarded (and
                        // charged, so a drain cannot hold the loop either).
                        continue;
                    }
                    self.take_input(id, hub, &buf[..len]);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    log::debug!("conn={id} peer={} read error: {error}", self.peer);
                    let reason = self.transport.read_failed(&mut self.stream, &error);
                    self.close(reason);
                    break;
                }
            }
        }
        self.transport.note_ready(now.mono_ms);
        self.codec.shrink_if_idle();
        reading
    }

    /// True (and held) if the session waits for a login decision: the
    /// next line must not be answered before it.
    fn hold_if_waiting(&mut self, id: ConnId, hub: &Hub) -> bool {
        self.is_held = hub.is_waiting(id);
        self.is_held
    }

    /// The hub says the decision this connection waited for came back:
    /// true if it was held, so it must be read again (its lines may be in
    /// the codec, its bytes in the socket, and no readiness will say so).
    pub fn resume(&mut self) -> bool {
        std::mem::take(&mut self.is_held)
    }

    /// Protocol lines read: into the codec.
    fn take_input(&mut self, id: ConnId, hub: &mut Hub, bytes: &[u8]) {
        if bytes.is_empty() || self.phase != Phase::Open {
            return;
        }
        self.codec.push(bytes);
        if self.codec.has_seen_iac() {
            hub.handle_telnet(id);
        }
    }

    /// When a web-enabled connection's held greeting is due (monotonic
    /// ms), while its first bytes have not decided.
    pub fn greet_deadline(&self) -> Option<u64> {
        self.transport.greet_deadline()
    }

    /// Sends the held greeting if it is due: the client said nothing
    /// that could be HTTP in time (`nc`, `telnet`). What it sent so far
    /// (a prefix of a method name) is read as the start of a line.
    pub fn greet_if_due(&mut self, id: ConnId, hub: &mut Hub, now: Now) {
        let Some(held) = self.transport.open_if_due(now.mono_ms) else {
            return;
        };
        if self.phase == Phase::Open {
            hub.handle_greet(id, Framing::Lines);
            self.take_input(id, hub, &held);
        }
    }

    /// True when the transport has bytes of its own to send (a TLS
    /// handshake step), so the connection must be flushed this turn.
    pub fn has_own_output(&self) -> bool {
        !self.is_closed() && self.transport.has_own_output()
    }

    /// Writes what the hub owes the connection through its transport, and
    /// follows the hub's answer: keep (and wait for writability if bytes
    /// remain), linger while a leaving session's bytes go out, end the
    /// stream once they are all out, or close at once (slow consumer).
    /// `shutdown` is the server's shutdown deadline, if it is going down.
    pub fn flush(
        &mut self,
        id: ConnId,
        hub: &mut Hub,
        registry: &Registry,
        now: Instant,
        shutdown: Option<Instant>,
    ) {
        if matches!(self.phase, Phase::Draining | Phase::Closed(_)) {
            return;
        }
        if self.transport.is_gate() && hub.fate(id) != Fate::Open {
            // The session ended (login deadline, shutdown) while an HTTP
            // request was still coming: it gets an HTTP answer.
            self.transport.answer_unfinished(match shutdown {
                Some(_) => Status::Unavailable,
                None => Status::RequestTimeout,
            });
        }
        let Conn {
            stream, transport, ..
        } = self;
        let after = match hub.flush(id, |outbox, arena| transport.write(stream, outbox, arena)) {
            Ok(after) => after,
            Err(error) => {
                log::debug!("conn={id} peer={} write error: {error}", self.peer);
                self.close(CloseReason::IoError);
                return;
            }
        };
        let wants_write = match after {
            AfterFlush::CutOff(cut_off) => {
                self.follow(id, Fate::CutOff(cut_off));
                return;
            }
            AfterFlush::Open(flushed) => flushed == Flushed::Partly,
            AfterFlush::Leaving => true,
            AfterFlush::Ended => false,
        };
        if wants_write != self.is_write_registered
            && let Err(error) = self.reregister(registry, id, wants_write)
        {
            log::error!("conn={id} cannot reregister: {error}");
            self.close(CloseReason::IoError);
            return;
        }
        match after {
            AfterFlush::Leaving => {
                self.phase = Phase::Quitting;
                if self.linger_until.is_none() {
                    self.linger_until =
                        Some(shutdown.unwrap_or_else(|| instant_after(now, QUIT_LINGER)));
                }
            }
            AfterFlush::Ended => {
                // Everything owed is out: end the stream, send our FIN, and
                // read until the peer's so no in-flight frame is reset.
                self.transport.close(&mut self.stream);
                if self.has_peer_closed {
                    // Both sides are done: closing sends our FIN.
                    self.close(CloseReason::Quit);
                    return;
                }
                let _ = self.stream.shutdown(Shutdown::Write);
                self.phase = Phase::Draining;
                self.linger_until = Some(match shutdown {
                    Some(deadline) => deadline.min(instant_after(now, SHUTDOWN_DRAIN_LINGER)),
                    None => instant_after(now, DRAIN_LINGER),
                });
            }
            AfterFlush::Open(_) | AfterFlush::CutOff(_) => {}
        }
    }

    /// Follows the hub's answer after an input.
    fn follow(&mut self, id: ConnId, fate: Fate) {
        match fate {
            Fate::Open => {}
            Fate::Leaving => {
                if self.phase == Phase::Open {
                    self.phase = Phase::Quitting;
                }
            }
            Fate::CutOff(CutOff::SlowConsumer { owed, limit }) => {
                if !self.is_closed() {
                    // Its one line, this session's disconnect line too:
                    // one per event, like a login, since it needs an
                    // admitted session that was sent more than it read.
                    log::warn!(
                        "conn={id} peer={} dropped: SlowConsumer (owed {owed} bytes, over max_output_bytes {limit})",
                        self.peer
                    );
                }
                self.close(CloseReason::SlowConsumer);
            }
            // The hub has no session for it (it only forgets one at a
            // flush or a close): nothing is owed, nothing more to read.
            Fate::Ended => self.close(CloseReason::Quit),
        }
    }

    fn reregister(&mut self, registry: &Registry, id: ConnId, wants_write: bool) -> io::Result<()> {
        let interest = if wants_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        registry.reregister(&mut self.stream, Token(id.0), interest)?;
        self.is_write_registered = wants_write;
        Ok(())
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
