//! One accepted socket as the event loop sees it: the stream, its line
//! codec, and which readiness it is registered for. Chat state lives in the
//! hub; this only moves bytes.

use crate::codec::LineCodec;
use mio::net::TcpStream;
use rustls::ServerConnection;
use std::net::SocketAddr;
use std::time::Instant;

/// Why the shell is closing a connection, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed or reset the connection.
    PeerClosed,
    /// A read or write failed.
    IoError,
    /// The session quit and its output was flushed.
    Quit,
    /// The client owed more than `max_output_bytes`.
    SlowConsumer,
    /// Its output did not drain before the linger or shutdown deadline.
    Deadline,
    /// The TLS handshake or a record failed (garbage on the TLS port).
    TlsError,
}

/// `Conn::timer_ms` when no timer is queued.
pub const NO_TIMER: u64 = u64::MAX;

#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The TLS session for a connection from a TLS listener.
    pub tls: Option<Box<ServerConnection>>,
    pub codec: LineCodec,
    /// True while WRITABLE is in the registered interest (bytes are owed).
    pub is_write_registered: bool,
    /// Set once the connection must be removed at the end of the turn.
    pub closing: Option<CloseReason>,
    /// True once the peer sent EOF; no further readiness will say so again.
    pub has_peer_closed: bool,
    /// The earliest hub deadline a timer is queued for; `NO_TIMER` if none
    /// (a plain `u64`: this struct is held per connection).
    pub timer_ms: u64,
    /// When a quitting connection is closed even if output is still owed.
    pub linger_until: Option<Instant>,
    /// The loop turn in which it was last read: a connection is read at
    /// most once per turn (from the ready list or for its event), so it
    /// gets one turn's budget and is carried to the next turn only once.
    pub read_turn: u64,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<Box<ServerConnection>>,
        max_line_bytes: usize,
    ) -> Conn {
        Conn {
            stream,
            peer,
            tls,
            codec: LineCodec::new(max_line_bytes),
            is_write_registered: false,
            closing: None,
            has_peer_closed: false,
            timer_ms: NO_TIMER,
            linger_until: None,
            read_turn: 0,
        }
    }

    /// Marks the connection for removal; the first reason wins.
    pub fn close(&mut self, reason: CloseReason) {
        self.closing.get_or_insert(reason);
    }
}
