//! The connection to riftd: one thread per connection attempt that
//! resolves, connects (with TLS when asked), then moves bytes both ways with
//! its own small mio loop. Complete lines come to the main loop as events;
//! lines to send go through a channel and a `mio::Waker`. It knows no
//! protocol: bytes in, lines out.

use crate::Event;
use crate::target::Target;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// How long one address may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A server line longer than this (riftd's frames are far smaller) ends
/// the connection rather than the client's memory.
const MAX_LINE: usize = 4 << 20;

/// What the connection thread reports, tagged with its link's number so a
/// late event of an old link is told apart.
#[derive(Debug)]
pub enum NetEvent {
    Connected,
    ConnectFailed(String),
    Line(String),
    Closed(String),
}

/// The main loop's handle on one connection.
pub struct Link {
    outgoing: Sender<Vec<u8>>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Link {
    /// Starts connecting to `target`; events arrive as `Event::Net(id, _)`.
    pub fn open(
        target: &Target,
        tls: Option<Arc<rustls::ClientConfig>>,
        id: u64,
        events: Sender<Event>,
    ) -> io::Result<Link> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (outgoing, lines) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            target: target.clone(),
            tls,
            id,
            events,
            lines,
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name(format!("riftc-net-{id}"))
            .spawn(move || worker.run(poll))?;
        Ok(Link {
            outgoing,
            waker,
            stop,
            thread: Some(thread),
        })
    }

    /// Queues a line (with its `\n`) for sending.
    pub fn send(&self, line: String) {
        if self.outgoing.send(line.into_bytes()).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Sends what is queued (waiting at most `wait`), then closes.
    pub fn close(mut self, wait: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + wait;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
    }
}

struct Worker {
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    id: u64,
    events: Sender<Event>,
    lines: Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
}

/// The bytes on the wire, plain or through rustls.
enum Wire {
    Plain { pending: Vec<u8> },
    Tls(Box<ClientConnection>),
}

impl Worker {
    fn report(&self, event: NetEvent) -> bool {
        self.events.send(Event::Net(self.id, event)).is_ok()
    }

    fn run(self, poll: Poll) {
        let (stream, wire) = match self.connect() {
            Ok(connected) => connected,
            Err(reason) => {
                self.report(NetEvent::ConnectFailed(reason));
                return;
            }
        };
        if !self.report(NetEvent::Connected) {
            return;
        }
        let reason = match self.serve(poll, stream, wire) {
            Ok(reason) => reason,
            Err(error) => error.to_string(),
        };
        self.report(NetEvent::Closed(reason));
    }

    fn connect(&self) -> Result<(TcpStream, Wire), String> {
        let Target { host, port } = &self.target;
        let addresses = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|error| format!("cannot resolve {host}: {error}"))?;
        let mut last_error = format!("{host} has no address");
        let mut connected = None;
        for address in addresses {
            match std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(error) => last_error = format!("cannot connect to {address}: {error}"),
            }
        }
        let stream = connected.ok_or(last_error)?;
        let _ = stream.set_nodelay(true);
        stream
            .set_nonblocking(true)
            .map_err(|error| error.to_string())?;
        let wire = match &self.tls {
            None => Wire::Plain {
                pending: Vec::new(),
            },
            Some(config) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|error| format!("{host} is not a TLS server name: {error}"))?;
                let connection = ClientConnection::new(Arc::clone(config), name)
                    .map_err(|error| format!("cannot start TLS: {error}"))?;
                Wire::Tls(Box::new(connection))
            }
        };
        Ok((TcpStream::from_std(stream), wire))
    }

    /// Moves bytes until the peer or the main loop ends the connection;
    /// returns why it ended.
    fn serve(&self, mut poll: Poll, mut stream: TcpStream, mut wire: Wire) -> io::Result<String> {
        poll.registry()
            .register(&mut stream, SOCKET, Interest::READABLE)?;
        let mut events = Events::with_capacity(16);
        let mut input = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut is_write_registered = false;
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            // Lines to send, then as much of them as the socket takes.
            loop {
                match self.lines.try_recv() {
                    Ok(line) => match &mut wire {
                        Wire::Plain { pending } => pending.extend_from_slice(&line),
                        Wire::Tls(tls) => tls.writer().write_all(&line)?,
                    },
                    Err(TryRecvError::Empty) => break,
                    // The main loop is gone: nothing more will be sent.
                    Err(TryRecvError::Disconnected) => return Ok("closed".to_owned()),
                }
            }
            let owes = write_out(&mut wire, &mut stream)?;
            if stopping && !owes {
                if let Wire::Tls(tls) = &mut wire {
                    tls.send_close_notify();
                    let _ = write_out(&mut wire, &mut stream);
                }
                let _ = stream.shutdown(std::net::Shutdown::Write);
                return Ok("closed".to_owned());
            }
            if owes != is_write_registered {
                let interest = if owes {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                poll.registry().reregister(&mut stream, SOCKET, interest)?;
                is_write_registered = owes;
            }
            match poll.poll(&mut events, None) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            for event in events.iter() {
                if event.token() != SOCKET || !(event.is_readable() || event.is_read_closed()) {
                    continue;
                }
                if let Some(reason) = read_in(&mut wire, &mut stream, &mut buf, &mut input)? {
                    self.deliver(&mut input);
                    return Ok(reason);
                }
                if !self.deliver(&mut input) {
                    return Ok("closed".to_owned());
                }
                if input.len() > MAX_LINE {
                    return Ok("the server sent a line too long".to_owned());
                }
            }
        }
    }

    /// Hands every complete line to the main loop; false if it is gone.
    fn deliver(&self, input: &mut Vec<u8>) -> bool {
        let mut start = 0;
        while let Some(end) = memchr::memchr(b'\n', &input[start..]) {
            let line = &input[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = String::from_utf8_lossy(line).into_owned();
            start += end + 1;
            if !self.report(NetEvent::Line(text)) {
                return false;
            }
        }
        input.drain(..start);
        true
    }
}

/// Writes what is owed until done or the socket would block; true if
/// bytes remain.
fn write_out(wire: &mut Wire, stream: &mut TcpStream) -> io::Result<bool> {
    match wire {
        Wire::Plain { pending } => {
            while !pending.is_empty() {
                match stream.write(pending) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(count) => {
                        pending.drain(..count);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(false)
        }
        Wire::Tls(tls) => {
            while tls.wants_write() {
                match tls.write_tls(stream) {
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(false)
        }
    }
}

/// Reads until the socket would block, appending plaintext to `input`;
/// `Some(reason)` once the connection is over.
fn read_in(
    wire: &mut Wire,
    stream: &mut TcpStream,
    buf: &mut [u8],
    input: &mut Vec<u8>,
) -> io::Result<Option<String>> {
    loop {
        match wire {
            Wire::Plain { .. } => match stream.read(buf) {
                Ok(0) => return Ok(Some("the server closed the connection".to_owned())),
                Ok(count) => input.extend_from_slice(&buf[..count]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Ok(Some(error.to_string())),
            },
            Wire::Tls(tls) => {
                match tls.read_tls(stream) {
                    Ok(0) => return Ok(Some("the server closed the connection".to_owned())),
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => return Ok(Some(error.to_string())),
                }
                if let Err(error) = tls.process_new_packets() {
                    // Send the alert, if the socket takes it.
                    let _ = tls.write_tls(stream);
                    return Ok(Some(format!("TLS: {error}")));
                }
                loop {
                    match tls.reader().read(buf) {
                        Ok(0) => return Ok(Some("the server closed the connection".to_owned())),
                        Ok(count) => input.extend_from_slice(&buf[..count]),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => return Ok(Some(error.to_string())),
                    }
                }
                // A handshake step may owe records.
                if tls.wants_write() {
                    write_out(wire, stream)?;
                }
            }
        }
    }
}
