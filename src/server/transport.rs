//! How one connection's bytes cross the wire: plain TCP or TLS. The
//! connection reads plaintext through its transport (then cuts it into
//! lines) and writes its outbox through it; the loop never asks which kind
//! it holds.
//!
//! A new wire format is a new variant here, not new branches in the loop:
//! WebSocket, for instance, would decode frames into the plaintext `read`
//! returns (one protocol line per text frame), frame each outbox line in
//! `write`, and send a close frame in `close` — over plain TCP or inside TLS.

use super::conn::CloseReason;
use crate::hub::Wire;
use crate::outbox::{Arena, Flushed, Outbox};
use crate::tls::{self, Received};
use mio::net::TcpStream;
use rustls::ServerConnection;
use std::io::{self, Read};

#[derive(Debug)]
pub enum Transport {
    /// Bytes as they come: the socket is the plaintext.
    Plain,
    /// A rustls session between the socket and the plaintext.
    Tls(Box<ServerConnection>),
}

impl Transport {
    /// What the chat is told about the wire (the password rule).
    pub fn wire(&self) -> Wire {
        match self {
            Transport::Plain => Wire::Plain,
            Transport::Tls(_) => Wire::Tls,
        }
    }

    /// Reads plaintext into `buf`: one socket read at most (`Records` when
    /// it brought TLS records but no plaintext yet).
    pub fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<Received> {
        let received = match self {
            Transport::Plain => stream.read(buf).map(|count| match count {
                0 => Received::Closed,
                count => Received::Data(count),
            }),
            Transport::Tls(tls) => tls::read_plaintext(tls, stream, buf),
        };
        match received {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(Received::WouldBlock),
            other => other,
        }
    }

    /// Why a failed read ends the connection. A TLS protocol error first
    /// sends rustls' alert, if the socket takes it.
    pub fn read_failed(&mut self, stream: &mut TcpStream, error: &io::Error) -> CloseReason {
        match (error.kind(), self) {
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
        }
    }

    /// True when the transport itself has bytes to send (a TLS handshake
    /// or key update), outbox or not.
    pub fn has_own_output(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(tls) => tls.wants_write(),
        }
    }

    /// Ends the stream at this layer before the socket's FIN: TLS sends
    /// close_notify (if the socket takes it now).
    pub fn close(&mut self, stream: &mut TcpStream) {
        match self {
            Transport::Plain => {}
            Transport::Tls(tls) => {
                tls.send_close_notify();
                let _ = tls::flush_records(tls, stream);
            }
        }
    }
}
