//! How one connection's bytes cross the wire: plain TCP or TLS, and on a
//! listener that serves HTTP (a web listener, or a chat listener with
//! `web = true`) the HTTP gate in front of either, which becomes a
//! WebSocket over it on upgrade (the TLS session is kept). The connection reads
//! plaintext lines through its transport (then cuts them into lines) and
//! writes its outbox through it; the loop never asks which kind it holds.
//!
//! The gate holds the first bytes until they tell HTTP from protocol lines
//! (`http::sniff`). On a shared chat listener (`Front::Shared`) lines, or
//! `GREETING_DELAY` of silence, open the connection as it is without
//! `web` (the gate gives way to its inner transport and the hub greets);
//! on a web listener (`Front::HttpOnly`) nothing is ever greeted before a
//! request, silence just waits, and lines get 400. HTTP is answered
//! here, by an error response or the 101 that switches to `WebSocket`,
//! whose `read` decodes client frames into lines (`websocket::Decoder`)
//! and whose `write` frames nothing: the hub encodes WebSocket members'
//! frames itself, once per turn (`FrameCache`). Replies of the transport's
//! own (the HTTP answer, the 101, pongs, the close frame) go out only
//! between outbox frames.

use super::conn::CloseReason;
use super::http::{
    self, GREETING_DELAY, MAX_HEAD_BYTES, Scheme, Sniff, Status, Verdict, WebSettings,
};
use crate::hub::Wire;
use crate::outbox::{Arena, Flushed, Outbox};
use crate::tls::{self, Received};
use crate::websocket::{CloseCode, Decoder, End};
use mio::net::TcpStream;
use rustls::ServerConnection;
use std::io::{self, Read as _};
use std::sync::Arc;

/// Bytes of our own (pongs) a WebSocket may owe; pongs past it are dropped.
const MAX_OWN_BYTES: usize = 64 * 1024;
/// The least buffer the gate and the WebSocket decoder read into.
const MIN_FRAMED_READ: usize = 64;

#[derive(Debug)]
pub enum Transport {
    /// Bytes as they come: the socket is the plaintext.
    Plain,
    /// A rustls session between the socket and the plaintext.
    Tls(Box<ServerConnection>),
    /// A web listener's, or a chat listener's with `web = true`, before
    /// the first bytes decided (plain or TLS inside).
    Http(Box<HttpGate>),
    /// An upgraded connection: frames over plain or TLS.
    WebSocket(Box<WebSocket>),
}

/// What one `Transport::read` brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `len` bytes of protocol lines at the start of the buffer, from
    /// `cost` bytes taken from the peer.
    Data {
        len: usize,
        cost: usize,
    },
    /// `cost` bytes taken, nothing to hand on yet (TLS records, a partial
    /// frame or request, a control frame, input after the end).
    Consumed(usize),
    WouldBlock,
    /// The socket's EOF.
    Closed,
    /// The peer ended the session in the WebSocket layer (its close frame,
    /// or a broken rule); the socket stays open for our close frame.
    Ended,
    /// The gate decided (`Switch`); `len` bytes of protocol lines follow
    /// at the start of the buffer.
    Switched {
        to: Switch,
        len: usize,
        cost: usize,
    },
}

/// What the gate decided about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Protocol lines as on TCP: greet now.
    Lines,
    /// Upgraded: greet over WebSocket.
    WebSocket,
    /// An HTTP error is owed: the session ends once it is written.
    Answered,
}

/// What a gate's listener serves besides HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// A chat listener with `web = true`: protocol lines too, and the
    /// greeting after `GREETING_DELAY` of silence.
    Shared,
    /// A web listener: HTTP from the first byte; no greeting before an
    /// upgrade, no chat frames before an answer.
    HttpOnly,
}

/// Where the gate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Holding the first bytes (a prefix of an HTTP method, at most 7).
    Sniffing,
    /// Reading a request head (at most `MAX_HEAD_BYTES`).
    Head,
    /// Writing `response`; input is discarded.
    Answered,
}

/// The HTTP gate of a listener that serves HTTP (see the module header).
#[derive(Debug)]
pub struct HttpGate {
    inner: Transport,
    settings: Arc<WebSettings>,
    front: Front,
    gate: Gate,
    /// The first bytes while sniffing; the request head after.
    held: Vec<u8>,
    /// When the held greeting is sent if nothing decided before (monotonic
    /// ms); set once the inner transport carries plaintext.
    greet_at_ms: Option<u64>,
    /// The HTTP answer and how much of it is written.
    response: Vec<u8>,
    written: usize,
}

/// A WebSocket over plain TCP or TLS.
#[derive(Debug)]
pub struct WebSocket {
    inner: Transport,
    decoder: Decoder,
    /// Bytes of our own to send: the 101, pongs, the close frame.
    own: Vec<u8>,
    /// The last outbox write stopped part-way, maybe inside a frame: our
    /// own bytes wait until it is all out.
    is_mid_outbox: bool,
    /// Set once the peer ended the stream (or broke a rule): our close
    /// frame's code. Input after it is discarded.
    close: Option<CloseCode>,
    has_reported_end: bool,
    is_close_sent: bool,
}

impl Transport {
    /// The HTTP gate in front of `inner`, for a listener of `front`.
    pub fn gate(inner: Transport, settings: Arc<WebSettings>, front: Front) -> Transport {
        Transport::Http(Box::new(HttpGate {
            inner,
            settings,
            front,
            gate: Gate::Sniffing,
            held: Vec::new(),
            greet_at_ms: None,
            response: Vec::new(),
            written: 0,
        }))
    }

    /// What the chat is told about the wire (the password rule).
    pub fn wire(&self) -> Wire {
        match self {
            Transport::Plain => Wire::Plain,
            Transport::Tls(_) => Wire::Tls,
            Transport::Http(gate) => gate.inner.wire(),
            Transport::WebSocket(socket) => socket.inner.wire(),
        }
    }

    /// Reads into `buf`: one socket read at most.
    pub fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<Read> {
        if buf.len() < MIN_FRAMED_READ
            && matches!(self, Transport::Http(_) | Transport::WebSocket(_))
        {
            // The turn's budget is nearly spent: spend the rest, and read
            // a whole share next turn (the gate and the decoder need room).
            return Ok(Read::Consumed(buf.len()));
        }
        match self {
            Transport::Plain | Transport::Tls(_) => self.read_bytes(stream, buf),
            Transport::WebSocket(socket) => socket.read(stream, buf),
            Transport::Http(gate) => {
                let read = gate.read(stream, buf)?;
                match read {
                    Read::Switched {
                        to: Switch::Lines, ..
                    } => self.open(),
                    Read::Switched {
                        to: Switch::WebSocket,
                        ..
                    } => self.upgrade(),
                    _ => {}
                }
                Ok(read)
            }
        }
    }

    /// A plain or TLS read.
    fn read_bytes(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<Read> {
        let received = match self {
            Transport::Plain => stream.read(buf).map(|count| match count {
                0 => Received::Closed,
                count => Received::Data(count),
            }),
            Transport::Tls(tls) => tls::read_plaintext(tls, stream, buf),
            Transport::Http(gate) => return gate.inner.read_bytes(stream, buf),
            Transport::WebSocket(socket) => return socket.inner.read_bytes(stream, buf),
        };
        match received {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(Read::WouldBlock),
            Err(error) => Err(error),
            Ok(Received::WouldBlock) => Ok(Read::WouldBlock),
            Ok(Received::Closed) => Ok(Read::Closed),
            Ok(Received::Records(cost)) => Ok(Read::Consumed(cost)),
            Ok(Received::Data(len)) => Ok(Read::Data { len, cost: len }),
        }
    }

    /// The gate gives way to its inner transport.
    fn open(&mut self) {
        if let Transport::Http(gate) = std::mem::replace(self, Transport::Plain) {
            *self = gate.inner;
        }
    }

    /// The gate becomes a WebSocket over its inner transport, owing the 101.
    fn upgrade(&mut self) {
        if let Transport::Http(gate) = std::mem::replace(self, Transport::Plain) {
            let HttpGate {
                inner, response, ..
            } = *gate;
            *self = Transport::WebSocket(Box::new(WebSocket {
                inner,
                decoder: Decoder::default(),
                own: response,
                is_mid_outbox: false,
                close: None,
                has_reported_end: false,
                is_close_sent: false,
            }));
        }
    }

    /// The gate's clock: the held greeting is due `GREETING_DELAY` after
    /// the transport first carries plaintext (at once for plain TCP, after
    /// the handshake for TLS). A web listener's gate never greets.
    pub fn note_ready(&mut self, now_ms: u64) {
        if let Transport::Http(gate) = self
            && gate.front == Front::Shared
            && gate.gate == Gate::Sniffing
            && gate.greet_at_ms.is_none()
        {
            let is_ready = match &gate.inner {
                Transport::Tls(tls) => !tls.is_handshaking(),
                _ => true,
            };
            if is_ready {
                let delay = u64::try_from(GREETING_DELAY.as_millis()).unwrap_or(u64::MAX);
                gate.greet_at_ms = Some(now_ms.saturating_add(delay));
            }
        }
    }

    /// When the held greeting is due, while the gate is still sniffing.
    pub fn greet_deadline(&self) -> Option<u64> {
        match self {
            Transport::Http(gate) if gate.gate == Gate::Sniffing => gate.greet_at_ms,
            _ => None,
        }
    }

    /// Nothing decided in time: the gate gives way (protocol lines, as
    /// today) and hands back the bytes it held, if the greeting is due.
    pub fn open_if_due(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        let Transport::Http(gate) = self else {
            return None;
        };
        if gate.gate != Gate::Sniffing || gate.greet_at_ms.is_none_or(|due| now_ms < due) {
            return None;
        }
        let held = std::mem::take(&mut gate.held);
        self.open();
        Some(held)
    }

    /// The session ended (login deadline, shutdown) while a request head
    /// was still coming: answer it with `status` instead of the chat's
    /// frames, which are not HTTP. On a web listener a prefix of a method
    /// is a request begun too; a connection that sent nothing is closed
    /// without a word, as HTTP servers close idle connections.
    pub fn answer_unfinished(&mut self, status: Status) {
        if let Transport::Http(gate) = self {
            let is_begun = match gate.gate {
                Gate::Head => true,
                Gate::Sniffing => gate.front == Front::HttpOnly && !gate.held.is_empty(),
                Gate::Answered => false,
            };
            if is_begun {
                gate.answer(status);
            }
        }
    }

    /// True while the HTTP gate is in front (nothing decided, or an HTTP
    /// answer under way).
    pub fn is_gate(&self) -> bool {
        matches!(self, Transport::Http(_))
    }

    /// The WebSocket close code once the peer ended the stream.
    pub fn websocket_end(&self) -> Option<CloseCode> {
        match self {
            Transport::WebSocket(socket) => socket.close,
            _ => None,
        }
    }

    /// Why a failed read ends the connection. A TLS protocol error first
    /// sends rustls' alert, if the socket takes it.
    pub fn read_failed(&mut self, stream: &mut TcpStream, error: &io::Error) -> CloseReason {
        match (error.kind(), self) {
            (_, Transport::Http(gate)) => gate.inner.read_failed(stream, error),
            (_, Transport::WebSocket(socket)) => socket.inner.read_failed(stream, error),
            (io::ErrorKind::ConnectionReset, _) => CloseReason::PeerClosed,
            (io::ErrorKind::InvalidData, Transport::Tls(tls)) => {
                let _ = tls::flush_records(tls, stream);
                CloseReason::TlsError
            }
            _ => CloseReason::IoError,
        }
    }

    /// Writes the outbox until it is empty or the socket would block.
    pub fn write(
        &mut self,
        stream: &mut TcpStream,
        outbox: &mut Outbox,
        arena: &Arena,
    ) -> io::Result<Flushed> {
        match self {
            Transport::Plain => outbox.write_to(arena, stream),
            Transport::Tls(tls) => tls::flush(tls, stream, outbox, arena),
            Transport::Http(gate) => gate.write(stream, outbox, arena),
            Transport::WebSocket(socket) => socket.write(stream, outbox, arena),
        }
    }

    /// True when the transport itself has bytes to send (a TLS handshake
    /// or key update, an HTTP answer, a pong), outbox or not.
    pub fn has_own_output(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(tls) => tls.wants_write(),
            Transport::Http(gate) => {
                gate.written < gate.response.len() || gate.inner.has_own_output()
            }
            Transport::WebSocket(socket) => !socket.own.is_empty() || socket.inner.has_own_output(),
        }
    }

    /// Ends the stream at this layer before the socket's FIN: a WebSocket
    /// sends its close frame, TLS close_notify (if the socket takes them
    /// now).
    pub fn close(&mut self, stream: &mut TcpStream) {
        match self {
            Transport::Plain => {}
            Transport::Tls(tls) => {
                tls.send_close_notify();
                let _ = tls::flush_records(tls, stream);
            }
            Transport::Http(gate) => gate.inner.close(stream),
            Transport::WebSocket(socket) => {
                if !socket.is_close_sent {
                    socket.is_close_sent = true;
                    let code = socket.close.unwrap_or(CloseCode::Normal);
                    crate::websocket::write_close(&mut socket.own, code);
                }
                let _ = socket.write_own(stream);
                socket.inner.close(stream);
            }
        }
    }
}

/// Writes `bytes` through a plain or TLS transport (and whatever TLS
/// records wait); returns how many were taken and whether all is out.
fn write_bytes(
    inner: &mut Transport,
    stream: &mut TcpStream,
    bytes: &[u8],
) -> io::Result<(usize, Flushed)> {
    let mut arena = Arena::default();
    let mut outbox = Outbox::default();
    if !bytes.is_empty() {
        outbox.push(arena.append(|out| out.extend_from_slice(bytes)));
    }
    let flushed = inner.write(stream, &mut outbox, &arena)?;
    Ok((bytes.len() - outbox.pending_bytes(), flushed))
}

impl HttpGate {
    fn scheme(&self) -> Scheme {
        match self.inner {
            Transport::Tls(_) => Scheme::Https,
            _ => Scheme::Http,
        }
    }

    fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<Read> {
        match self.gate {
            Gate::Answered => Ok(match self.inner.read_bytes(stream, buf)? {
                Read::Data { cost, .. } => Read::Consumed(cost),
                other => other,
            }),
            Gate::Sniffing => {
                // The held prefix goes first in the buffer, then the read.
                let held = self.held.len();
                buf[..held].copy_from_slice(&self.held);
                let (len, cost) = match self.inner.read_bytes(stream, &mut buf[held..])? {
                    Read::Data { len, cost } => (held + len, cost),
                    other => return Ok(other),
                };
                match http::sniff(&buf[..len]) {
                    Sniff::Lines if self.front == Front::HttpOnly => {
                        self.answer(Status::BadRequest);
                        Ok(self.answered(cost))
                    }
                    Sniff::Lines => {
                        self.held = Vec::new();
                        Ok(Read::Switched {
                            to: Switch::Lines,
                            len,
                            cost,
                        })
                    }
                    Sniff::Undecided => {
                        self.held = buf[..len].to_vec();
                        Ok(Read::Consumed(cost))
                    }
                    Sniff::Http => {
                        self.gate = Gate::Head;
                        self.held = Vec::new();
                        self.take_head(&buf[..len], cost)
                    }
                }
            }
            Gate::Head => match self.inner.read_bytes(stream, buf)? {
                Read::Data { len, cost } => self.take_head(&buf[..len], cost),
                other => Ok(other),
            },
        }
    }

    /// Adds bytes to the request head and judges it once it is whole.
    fn take_head(&mut self, bytes: &[u8], cost: usize) -> io::Result<Read> {
        if self.held.len().saturating_add(bytes.len()) > MAX_HEAD_BYTES {
            self.answer(Status::HeadTooLarge);
            return Ok(self.answered(cost));
        }
        self.held.extend_from_slice(bytes);
        match http::judge(&self.held, self.scheme(), &self.settings) {
            None => Ok(Read::Consumed(cost)),
            Some(Verdict::Refuse(status)) => {
                self.answer(status);
                Ok(self.answered(cost))
            }
            Some(Verdict::Page { is_head }) => {
                self.respond(http::page_response(is_head));
                Ok(self.answered(cost))
            }
            Some(Verdict::Upgrade { accept }) => {
                self.held = Vec::new();
                self.response = http::switching_response(&accept);
                Ok(Read::Switched {
                    to: Switch::WebSocket,
                    len: 0,
                    cost,
                })
            }
        }
    }

    fn answer(&mut self, status: Status) {
        self.respond(http::error_response(status));
    }

    fn respond(&mut self, response: Vec<u8>) {
        self.gate = Gate::Answered;
        self.held = Vec::new();
        self.response = response;
        self.written = 0;
    }

    fn answered(&self, cost: usize) -> Read {
        Read::Switched {
            to: Switch::Answered,
            len: 0,
            cost,
        }
    }

    /// Before a decision on a shared listener the outbox goes out as it
    /// is (it holds nothing but, at a login deadline, the chat's 408 for a
    /// client that never spoke); on a web listener, and once HTTP was
    /// seen, only HTTP does: chat frames are dropped.
    fn write(
        &mut self,
        stream: &mut TcpStream,
        outbox: &mut Outbox,
        arena: &Arena,
    ) -> io::Result<Flushed> {
        if self.gate == Gate::Sniffing {
            if self.front == Front::HttpOnly {
                outbox.clear();
            }
            return self.inner.write(stream, outbox, arena);
        }
        outbox.clear();
        let (taken, flushed) =
            write_bytes(&mut self.inner, stream, &self.response[self.written..])?;
        self.written += taken;
        Ok(flushed)
    }
}

impl WebSocket {
    fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<Read> {
        if self.close.is_some() {
            if !self.has_reported_end {
                self.has_reported_end = true;
                return Ok(Read::Ended);
            }
            // After the end, input is taken and dropped until the EOF.
            return Ok(match self.inner.read_bytes(stream, buf)? {
                Read::Data { cost, .. } => Read::Consumed(cost),
                other => other,
            });
        }
        // Frames are read into the second half and decoded into the first:
        // lines never outgrow their frames by more than one `\n`.
        let half = buf.len() / 2;
        let (out, raw) = buf.split_at_mut(half);
        let raw = &mut raw[..half.saturating_sub(1)];
        let (len, cost) = match self.inner.read_bytes(stream, raw)? {
            Read::Data { len, cost } => (len, cost),
            other => return Ok(other),
        };
        let mut pongs = Vec::new();
        let decoded = self
            .decoder
            .decode(&raw[..len], &mut out[..len + 1], &mut pongs);
        if self.own.len().saturating_add(pongs.len()) <= MAX_OWN_BYTES {
            self.own.append(&mut pongs);
        }
        // Else a client that pings and does not read its pongs gets no
        // more of them (RFC 6455 lets a pong answer only the latest ping):
        // what we owe it of our own stays bounded.
        if let Some(end) = decoded.end {
            self.close = Some(match end {
                End::Closed(code) | End::Failed(code) => code,
            });
        }
        Ok(match decoded.written {
            0 => Read::Consumed(cost),
            len => Read::Data { len, cost },
        })
    }

    /// Our own bytes, then the outbox; our own only between frames.
    fn write(
        &mut self,
        stream: &mut TcpStream,
        outbox: &mut Outbox,
        arena: &Arena,
    ) -> io::Result<Flushed> {
        if !self.is_mid_outbox && self.write_own(stream)? == Flushed::Partly {
            return Ok(Flushed::Partly);
        }
        if self.is_close_sent {
            // Nothing may follow a close frame.
            outbox.clear();
            return Ok(Flushed::All);
        }
        let flushed = self.inner.write(stream, outbox, arena)?;
        self.is_mid_outbox = flushed == Flushed::Partly;
        Ok(flushed)
    }

    fn write_own(&mut self, stream: &mut TcpStream) -> io::Result<Flushed> {
        let (taken, flushed) = write_bytes(&mut self.inner, stream, &self.own)?;
        self.own.drain(..taken);
        Ok(if self.own.is_empty() {
            flushed
        } else {
            Flushed::Partly
        })
    }
}
