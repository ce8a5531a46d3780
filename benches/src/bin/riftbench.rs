//! riftbench: a load generator for riftd (or Redis pub/sub) on loopback.
//!
//! One thread, one mio event loop, non-blocking sockets and one shared
//! 256 KiB read buffer, so the generator costs far less per delivery than
//! the server it measures; every mode prints the generator's own CPU use so
//! a run where the generator was the bottleneck can be told apart.
//!
//! Modes:
//! - `fanout [--receivers R] [--publishers N] [--messages K] [--size S]
//!   [--window W]`: R receivers and N publishers log in to the lobby (Redis:
//!   SUBSCRIBE to / PUBLISH on channel `lobby`); each publisher sends K
//!   messages of S bytes, with at most W of its own unacknowledged (riftd:
//!   its own echo; Redis: PUBLISH's integer reply). Every payload carries its
//!   send time, so receivers measure latency. Prints deliveries/s, latency
//!   percentiles and lost messages.
//!   With `--pid PID` it also reports the server's CPU use over the run.
//!   Cluster mode (several riftd nodes): `--publish-port P` puts the
//!   publishers on one node and `--receive-port A[,B...]` spreads the
//!   receivers round-robin over nodes (both default to `--port`); the
//!   deliveries are then reported per receiving port, and
//!   `accepted_per_sec` (publishers' messages acknowledged, i.e. stored
//!   and echoed back, per second until the last one) is the rate the
//!   cluster took messages in. `--ready-code 208`: a riftd receiver or
//!   publisher counts as logged in at its join's backlog (208) instead of
//!   the PONG (207) of a PING sent behind its USER; a cluster node answers
//!   that PING before the cluster grants the name, so it marks nothing.
//! - `idle --connections C [--pid PID]`: opens C logged-in connections,
//!   drains what the server owes them and reports the server's RSS growth
//!   per connection (read from `/proc/PID/status`).
//! - `connect --connections N [--window W] [--pid PID]`: connections +
//!   logins per second, with at most W logins in progress; each connection
//!   closes once its login is confirmed (202).
//!
//! `--websocket` (any mode, meant for fanout): every connection upgrades
//! to a WebSocket first (riftd with `web = true`; `design/protocol.md`,
//! "WebSocket") and then sends each protocol line as one masked text
//! frame; the server's frames are unwrapped before counting. The upgrade
//! and the framing are done here by hand (the 101's accept key is not
//! checked).
//!
//! `--json` prints one JSON line instead of the table line. Every mode is
//! bounded: it stops when its work is done or after a 60 s deadline.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Riftd,
    Redis,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fanout,
    Idle,
    Connect,
}

struct Options {
    mode: Mode,
    proto: Proto,
    connections: usize,
    pid: Option<u32>,
    port: u16,
    /// Where publishers connect (default `port`).
    publish_port: Option<u16>,
    /// Where receivers connect, round-robin (default `[port]`).
    receive_ports: Vec<u16>,
    /// riftd: the code that marks a receiver or publisher logged in.
    ready_code: u16,
    receivers: usize,
    publishers: usize,
    messages: usize,
    size: usize,
    window: usize,
    json: bool,
    websocket: bool,
}

const USAGE: &str = "usage: riftbench fanout|idle|connect --port PORT [--publish-port PORT] [--receive-port PORT[,PORT...]] [--proto riftd|redis] [--receivers R] [--publishers N] [--messages K] [--size S] [--window W] [--connections C] [--pid PID] [--websocket] [--json]";

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("fanout") => Mode::Fanout,
        Some("idle") => Mode::Idle,
        Some("connect") => Mode::Connect,
        _ => return Err(USAGE.to_owned()),
    };
    let mut options = Options {
        mode,
        proto: Proto::Riftd,
        connections: 1000,
        pid: None,
        port: 5050,
        publish_port: None,
        receive_ports: Vec::new(),
        ready_code: 207,
        receivers: 100,
        publishers: 4,
        messages: 10_000,
        size: 64,
        window: 64,
        json: false,
        websocket: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--json" {
            options.json = true;
            continue;
        }
        if flag == "--websocket" {
            options.websocket = true;
            continue;
        }
        if flag == "--proto" {
            options.proto = match args.next().as_deref() {
                Some("riftd") => Proto::Riftd,
                Some("redis") => Proto::Redis,
                _ => return Err("--proto takes riftd or redis".to_owned()),
            };
            continue;
        }
        if flag == "--receive-port" {
            let list = args.next().unwrap_or_default();
            options.receive_ports = list
                .split(',')
                .map(|port| port.parse::<u16>())
                .collect::<Result<_, _>>()
                .map_err(|_| "--receive-port takes PORT[,PORT...]".to_owned())?;
            continue;
        }
        let value: usize = args
            .next()
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--port" => options.port = u16::try_from(value).map_err(|_| "bad port")?,
            "--ready-code" => options.ready_code = u16::try_from(value).map_err(|_| "bad code")?,
            "--publish-port" => {
                options.publish_port = Some(u16::try_from(value).map_err(|_| "bad port")?)
            }
            "--receivers" => options.receivers = value,
            "--publishers" => options.publishers = value.max(1),
            "--messages" => options.messages = value,
            "--size" => options.size = value.max(32),
            "--window" => options.window = value.max(1),
            "--connections" => options.connections = value,
            // Accepted for old scripts: the generator has one thread now.
            "--threads" => {}
            "--pid" => options.pid = Some(u32::try_from(value).map_err(|_| "bad pid")?),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(options)
}

const DEADLINE: Duration = Duration::from_secs(60);
/// Logins in progress at once while a mode opens its connections, so the
/// server's accept backlog never overflows.
const OPENING: usize = 256;
/// The fanout run ends this long after the last byte once every publisher
/// is done (what has not arrived by then is counted as lost).
const QUIET_END: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Receiver,
    Publisher(u32),
    /// Logs in, then only drains (idle) or closes (connect).
    Login,
}

struct Peer {
    stream: TcpStream,
    role: Role,
    /// The server confirmed the login.
    ready: bool,
    /// Unscanned tail of the last read (a marker cut in two).
    carry: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    /// Receiver: payloads seen; publisher: acknowledgements.
    counted: usize,
    sent: usize,
    broken: bool,
    /// WebSocket connections: the upgrade and the framing state.
    ws: Option<Ws>,
}

/// One WebSocket connection's state: the upgrade, then the server's frames.
struct Ws {
    /// The 101 arrived.
    open: bool,
    /// The response head so far (before the 101).
    head: Vec<u8>,
    /// The login lines, held until the 101 (bytes behind the upgrade
    /// request get a 400).
    login: Vec<u8>,
    /// A frame header cut by the end of a read.
    header: Vec<u8>,
    /// Payload bytes still to come in the current frame.
    left: u64,
    /// Whether the current frame's payload is data (text, binary or
    /// continuation) rather than control.
    keep: bool,
}

fn ws_upgrade(port: u16) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Appends each `\n`-ended line of `lines` to `out` as one masked text
/// frame, without its `\n` (a client's frames must be masked).
fn ws_frame_lines(lines: &[u8], out: &mut Vec<u8>) {
    const MASK: [u8; 4] = [0x5a, 0x3c, 0xa5, 0xc3];
    for line in lines.split(|&byte| byte == b'\n') {
        if line.is_empty() {
            continue;
        }
        out.push(0x81); // FIN, text
        match line.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(
            line.iter()
                .enumerate()
                .map(|(index, &byte)| byte ^ MASK[index % 4]),
        );
    }
}

/// Appends the data payloads of the (unmasked) server frames in `input` to
/// `out`, keeping a cut header or payload for the next read.
fn ws_deframe(mut input: &[u8], ws: &mut Ws, out: &mut Vec<u8>) {
    while !input.is_empty() {
        if ws.left > 0 {
            let count = (ws.left.min(input.len() as u64)) as usize;
            if ws.keep {
                out.extend_from_slice(&input[..count]);
            }
            input = &input[count..];
            ws.left -= count as u64;
            continue;
        }
        ws.header.push(input[0]);
        input = &input[1..];
        let header = &ws.header;
        if header.len() < 2 {
            continue;
        }
        let extra = match header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if header[1] & 0x80 != 0 { 4 } else { 0 };
        if header.len() < 2 + extra + mask {
            continue;
        }
        ws.left = match extra {
            0 => u64::from(header[1] & 0x7f),
            _ => header[2..2 + extra]
                .iter()
                .fold(0, |len, &byte| len << 8 | u64::from(byte)),
        };
        ws.keep = header[0] & 0x0f <= 2;
        ws.header.clear();
    }
}

/// What the wire looks like for one protocol.
struct Wire {
    proto: Proto,
    tag: String,
    /// `"code":N` marking a riftd receiver or publisher logged in.
    ready: Vec<u8>,
}

impl Wire {
    fn login(&self, out: &mut Vec<u8>, name: usize, role: Role) {
        let tag = &self.tag;
        match (self.proto, role) {
            (Proto::Riftd, Role::Login) => {
                let _ = writeln!(out, "{{\"code\":110,\"username\":\"{tag}{name}\"}}");
            }
            (Proto::Riftd, _) => {
                // The PONG comes after the login, the join and the history
                // backlog: it marks the point where counting starts.
                let _ = write!(
                    out,
                    "{{\"code\":110,\"username\":\"{tag}{name}\"}}\n{{\"code\":108,\"token\":\"go\"}}\n"
                );
            }
            (Proto::Redis, Role::Publisher(_)) => out.extend_from_slice(b"PING\r\n"),
            (Proto::Redis, _) => out.extend_from_slice(b"SUBSCRIBE lobby\r\n"),
        }
    }

    /// The bytes that confirm a login.
    fn ready_marker(&self, role: Role) -> &[u8] {
        match (self.proto, role) {
            (Proto::Riftd, Role::Login) => b"\"code\":202",
            (Proto::Riftd, _) => &self.ready,
            (Proto::Redis, Role::Publisher(_)) => b"+PONG\r\n",
            (Proto::Redis, _) => b":1\r\n",
        }
    }

    /// One message whose payload is the `t=MICROS:PUB;` marker plus
    /// padding up to `size` bytes.
    fn publish(&self, out: &mut Vec<u8>, micros: u64, publisher: u32, size: usize) {
        let start = match self.proto {
            Proto::Riftd => {
                out.extend_from_slice(b"{\"code\":100,\"message\":\"");
                out.len()
            }
            Proto::Redis => {
                out.extend_from_slice(b"PUBLISH lobby ");
                out.len()
            }
        };
        let _ = write!(
            out,
            "t={micros:0micros_width$}:{publisher:0publisher_width$};",
            micros_width = MICROS_DIGITS,
            publisher_width = PUBLISHER_DIGITS
        );
        let padding = size.saturating_sub(out.len() - start);
        out.resize(out.len() + padding, b'x');
        match self.proto {
            Proto::Riftd => out.extend_from_slice(b"\"}\n"),
            Proto::Redis => out.extend_from_slice(b"\r\n"),
        }
    }
}

/// Digits of the send time (microseconds since the run began) and of the
/// publisher in a payload's `t=MICROS:PUB;` marker. Fixed widths make the
/// receivers' parse branch-free: it is the generator's hottest loop.
const MICROS_DIGITS: usize = 10;
const PUBLISHER_DIGITS: usize = 3;
const MARKER_LEN: usize = 2 + MICROS_DIGITS + 1 + PUBLISHER_DIGITS + 1;

/// Calls `found(sent_micros, publisher)` for every complete
/// `t=MICROS:PUB;` marker in `bytes`; returns where the unscanned tail
/// starts (a marker cut by the end of the buffer is kept for later).
fn scan_markers(bytes: &[u8], mut found: impl FnMut(u64, u32)) -> usize {
    fn number(digits: &[u8]) -> Option<u64> {
        digits.iter().try_fold(0u64, |value, &digit| {
            digit
                .is_ascii_digit()
                .then(|| value * 10 + u64::from(digit - b'0'))
        })
    }
    for equals in memchr::memchr_iter(b'=', bytes) {
        if equals == 0 || bytes[equals - 1] != b't' {
            continue;
        }
        let start = equals - 1;
        let Some(marker) = bytes.get(start..start + MARKER_LEN) else {
            return start;
        };
        let colon = 2 + MICROS_DIGITS;
        if marker[colon] != b':' || marker[MARKER_LEN - 1] != b';' {
            continue;
        }
        if let (Some(micros), Some(publisher)) = (
            number(&marker[2..colon]),
            number(&marker[colon + 1..MARKER_LEN - 1]),
        ) {
            found(micros, publisher as u32);
        }
    }
    // A trailing `t` may start a marker the next read completes.
    if bytes.last() == Some(&b't') {
        bytes.len() - 1
    } else {
        bytes.len()
    }
}

/// CPU time (user + system) in seconds of this process, or of `pid`.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_owned(), |pid| {
        format!("/proc/{pid}/stat")
    });
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at state.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here;
    // /proc always counts them in USER_HZ = 100 ticks per second.
    ticks(11).unwrap_or(0.0) / 100.0 + ticks(12).unwrap_or(0.0) / 100.0
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The generator: one poll, every connection, and the counters.
struct Bench {
    poll: Poll,
    events: Events,
    peers: Slab<Peer>,
    buffer: Vec<u8>,
    wire: Wire,
    epoch: Instant,
    size: usize,
    window: usize,
    messages: usize,
    /// Receiver latencies in microseconds.
    latencies: Vec<u32>,
    ready: usize,
    failed: usize,
    /// When bytes last arrived.
    last_bytes: Instant,
    /// Whether publishers may send (fanout's measured phase).
    is_running: bool,
    websocket: bool,
    /// WebSocket: a read's unwrapped payload; a message before framing.
    scratch: Vec<u8>,
}

impl Bench {
    fn new(options: &Options) -> io::Result<Bench> {
        Ok(Bench {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            peers: Slab::new(),
            buffer: vec![0; 256 * 1024],
            wire: Wire {
                proto: options.proto,
                // Names unique to this run, so a previous run's connections
                // the server has not yet seen close cannot collide.
                tag: format!("b{:x}n", std::process::id() % 0x10000),
                ready: format!("\"code\":{}", options.ready_code).into_bytes(),
            },
            epoch: Instant::now(),
            size: options.size,
            window: options.window,
            messages: options.messages,
            latencies: Vec::new(),
            ready: 0,
            failed: 0,
            last_bytes: Instant::now(),
            is_running: false,
            websocket: options.websocket,
            scratch: Vec::new(),
        })
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Starts a non-blocking connect to `port` and queues the login.
    fn open(&mut self, name: usize, role: Role, port: u16) -> io::Result<usize> {
        let stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let mut out = Vec::new();
        self.wire.login(&mut out, name, role);
        let ws = self.websocket.then(|| Ws {
            open: false,
            head: Vec::new(),
            login: std::mem::replace(&mut out, ws_upgrade(port)),
            header: Vec::new(),
            left: 0,
            keep: false,
        });
        let entry = self.peers.vacant_entry();
        let key = entry.key();
        let mut peer = Peer {
            stream,
            role,
            ready: false,
            carry: Vec::new(),
            out,
            out_at: 0,
            counted: 0,
            sent: 0,
            broken: false,
            ws,
        };
        self.poll.registry().register(
            &mut peer.stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(peer);
        Ok(key)
    }

    /// Closing the socket takes it out of the epoll set (Linux).
    fn close(&mut self, key: usize) {
        drop(self.peers.remove(key));
    }

    /// One poll and the work it reports; returns the keys of connections
    /// that became ready during it.
    fn turn(&mut self, timeout: Duration) -> io::Result<Vec<usize>> {
        self.poll.poll(&mut self.events, Some(timeout))?;
        let keys: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|event| {
                (
                    event.token().0,
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_writable(),
                )
            })
            .collect();
        let mut became_ready = Vec::new();
        for (key, readable, writable) in keys {
            if !self.peers.contains(key) {
                continue;
            }
            if writable {
                self.flush(key);
            }
            if readable && self.read(key) {
                became_ready.push(key);
            }
            if self.peers[key].ready {
                self.top_up(key);
            }
        }
        Ok(became_ready)
    }

    fn flush(&mut self, key: usize) {
        let peer = &mut self.peers[key];
        while peer.out_at < peer.out.len() && !peer.broken {
            match peer.stream.write(&peer.out[peer.out_at..]) {
                Ok(0) => peer.broken = true,
                Ok(count) => peer.out_at += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                // A connect still in progress.
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => peer.broken = true,
            }
        }
        if peer.out_at == peer.out.len() {
            peer.out.clear();
            peer.out_at = 0;
        }
    }

    /// Reads until the socket would block; returns true if the login was
    /// confirmed by what was read.
    fn read(&mut self, key: usize) -> bool {
        let mut became_ready = false;
        let mut upgraded = false;
        loop {
            let peer = &mut self.peers[key];
            let carried = peer.carry.len();
            self.buffer[..carried].copy_from_slice(&peer.carry);
            let count = match peer.stream.read(&mut self.buffer[carried..]) {
                Ok(0) => {
                    peer.broken = true;
                    break;
                }
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::NotConnected => break,
                Err(_) => {
                    peer.broken = true;
                    break;
                }
            };
            self.last_bytes = Instant::now();
            let bytes = match &mut peer.ws {
                None => &self.buffer[..carried + count],
                Some(ws) => {
                    let input = &self.buffer[carried..carried + count];
                    self.scratch.clear();
                    self.scratch.extend_from_slice(&peer.carry);
                    if ws.open {
                        ws_deframe(input, ws, &mut self.scratch);
                    } else {
                        ws.head.extend_from_slice(input);
                        let Some(end) = memchr::memmem::find(&ws.head, b"\r\n\r\n") else {
                            peer.broken |= ws.head.len() > 8192;
                            continue;
                        };
                        if !ws.head.starts_with(b"HTTP/1.1 101") {
                            peer.broken = true;
                            break;
                        }
                        ws.open = true;
                        upgraded = true;
                        let rest = ws.head.split_off(end + 4);
                        ws_deframe(&rest, ws, &mut self.scratch);
                        ws_frame_lines(&ws.login, &mut peer.out);
                    }
                    &self.scratch[..]
                }
            };
            let mut from = 0;
            if !peer.ready {
                let marker = self.wire.ready_marker(peer.role);
                match memchr::memmem::find(bytes, marker) {
                    Some(at) => {
                        peer.ready = true;
                        became_ready = true;
                        from = at + marker.len();
                    }
                    None => {
                        let keep = bytes.len().saturating_sub(marker.len() - 1);
                        peer.carry.clear();
                        peer.carry.extend_from_slice(&bytes[keep..]);
                        continue;
                    }
                }
            }
            let bytes = &bytes[from..];
            let role = peer.role;
            let mut counted = 0;
            let done = match (role, self.wire.proto) {
                (Role::Receiver, _) => {
                    let now = self.epoch.elapsed().as_micros() as u64;
                    let latencies = &mut self.latencies;
                    scan_markers(bytes, |sent, _| {
                        counted += 1;
                        latencies.push(now.saturating_sub(sent) as u32);
                    })
                }
                (Role::Publisher(me), Proto::Riftd) => scan_markers(bytes, |_, publisher| {
                    counted += usize::from(publisher == me);
                }),
                // Each PUBLISH is answered with one `:N\r\n` line.
                (Role::Publisher(_), Proto::Redis) => {
                    counted = memchr::memchr_iter(b'\n', bytes).count();
                    bytes.len()
                }
                (Role::Login, _) => bytes.len(),
            };
            peer.counted += counted;
            let tail = bytes[done..].to_vec();
            peer.carry = tail;
        }
        if upgraded {
            self.flush(key);
        }
        became_ready
    }

    /// Lets a publisher send while its window allows.
    fn top_up(&mut self, key: usize) {
        if !self.is_running {
            return;
        }
        let micros = self.micros();
        let peer = &mut self.peers[key];
        let Role::Publisher(me) = peer.role else {
            return;
        };
        let mut queued = false;
        while peer.sent < self.messages && peer.sent - peer.counted.min(peer.sent) < self.window {
            if peer.ws.is_some() {
                self.scratch.clear();
                self.wire.publish(&mut self.scratch, micros, me, self.size);
                ws_frame_lines(&self.scratch, &mut peer.out);
            } else {
                self.wire.publish(&mut peer.out, micros, me, self.size);
            }
            peer.sent += 1;
            queued = true;
        }
        if queued {
            self.flush(key);
        }
    }

    /// Opens `count` connections with the given roles, at most `OPENING`
    /// logins in progress at once, and waits until all are logged in.
    fn open_all(&mut self, roles: &[(Role, u16)], deadline: Instant) -> io::Result<Vec<usize>> {
        let mut keys = Vec::with_capacity(roles.len());
        let mut pending = 0usize;
        let mut next = 0usize;
        while (next < roles.len() || pending > 0) && Instant::now() < deadline {
            while next < roles.len() && pending < OPENING {
                let (role, port) = roles[next];
                keys.push(self.open(next, role, port)?);
                next += 1;
                pending += 1;
            }
            let became = self.turn(Duration::from_millis(100))?;
            pending -= became.len();
            self.ready += became.len();
            let broken: Vec<usize> = keys
                .iter()
                .copied()
                .filter(|&key| {
                    self.peers
                        .get(key)
                        .is_some_and(|peer| peer.broken && !peer.ready)
                })
                .collect();
            for key in broken {
                self.failed += 1;
                pending -= 1;
                self.close(key);
            }
        }
        if pending > 0 {
            return Err(io::Error::other(format!(
                "{pending} logins not confirmed before the deadline"
            )));
        }
        keys.retain(|&key| self.peers.contains(key));
        Ok(keys)
    }
}

fn fanout(options: &Options) -> io::Result<String> {
    let mut bench = Bench::new(options)?;
    let deadline = Instant::now() + DEADLINE;
    let receive_ports = if options.receive_ports.is_empty() {
        vec![options.port]
    } else {
        options.receive_ports.clone()
    };
    let publish_port = options.publish_port.unwrap_or(options.port);
    let mut roles: Vec<(Role, u16)> = (0..options.receivers)
        .map(|index| (Role::Receiver, receive_ports[index % receive_ports.len()]))
        .collect();
    roles.extend((0..options.publishers as u32).map(|me| (Role::Publisher(me), publish_port)));
    let keys = bench.open_all(&roles, deadline)?;
    // Which receiving port each receiver is on, for deliveries per node.
    let receiver_port: Vec<(usize, usize)> = keys
        .iter()
        .copied()
        .filter(|&key| bench.peers[key].role == Role::Receiver)
        .zip(
            roles
                .iter()
                .enumerate()
                .filter(|(_, (role, _))| *role == Role::Receiver),
        )
        .map(|(key, (index, _))| (key, index % receive_ports.len()))
        .collect();
    if bench.failed > 0 {
        return Err(io::Error::other(format!("{} logins failed", bench.failed)));
    }
    let publishers: Vec<usize> = keys
        .iter()
        .copied()
        .filter(|&key| matches!(bench.peers[key].role, Role::Publisher(_)))
        .collect();
    let receivers: Vec<usize> = keys
        .iter()
        .copied()
        .filter(|&key| bench.peers[key].role == Role::Receiver)
        .collect();
    let expected_each = options.publishers * options.messages;
    bench.latencies = Vec::with_capacity(expected_each * options.receivers);
    // What arrived before the start (joins, backlogs) is not counted.
    for &key in &keys {
        bench.peers[key].counted = 0;
    }
    let cpu_before = cpu_seconds(None);
    let server_cpu_before = options.pid.map(|pid| cpu_seconds(Some(pid)));
    let began = Instant::now();
    let mut published_in: Option<f64> = None;
    bench.is_running = true;
    for &key in &publishers {
        bench.top_up(key);
    }
    loop {
        bench.turn(Duration::from_millis(50))?;
        let delivered = bench.latencies.len();
        let publishers_done = publishers.iter().all(|&key| {
            let peer = &bench.peers[key];
            peer.broken || peer.counted >= options.messages
        });
        if publishers_done && published_in.is_none() {
            published_in = Some(began.elapsed().as_secs_f64());
        }
        if delivered >= expected_each * receivers.len() && publishers_done {
            break;
        }
        let quiet = bench.last_bytes.elapsed() > QUIET_END;
        if (publishers_done && quiet) || Instant::now() > deadline {
            break;
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(None) - cpu_before) / elapsed * 100.0;
    // -1 when unknown (no --pid).
    let server_cpu = server_cpu_before.map_or(-1.0, |before| {
        (cpu_seconds(options.pid) - before) / elapsed * 100.0
    });
    let acked: usize = publishers.iter().map(|&key| bench.peers[key].counted).sum();
    let accepted = acked as f64 / published_in.unwrap_or(elapsed);
    let mut by_port = vec![0usize; receive_ports.len()];
    for &(key, port) in &receiver_port {
        if let Some(peer) = bench.peers.get(key) {
            by_port[port] += peer.counted;
        }
    }
    let by_port_json: Vec<String> = receive_ports
        .iter()
        .zip(&by_port)
        .map(|(port, count)| format!("\"{port}\":{:.0}", *count as f64 / elapsed))
        .collect();
    let by_port_json = by_port_json.join(",");
    let mut latencies = std::mem::take(&mut bench.latencies);
    let delivered = latencies.len();
    let expected = expected_each * options.receivers;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((delivered as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |&micros| f64::from(micros) / 1000.0)
    };
    let rate = delivered as f64 / elapsed;
    let (p50, p99, max) = (percentile(0.5), percentile(0.99), percentile(1.0));
    let lost = expected.saturating_sub(delivered);
    Ok(if options.json {
        format!(
            "{{\"receivers\":{},\"publishers\":{},\"messages\":{},\"size\":{},\"deliveries\":{delivered},\"seconds\":{elapsed:.3},\"deliveries_per_sec\":{rate:.0},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3},\"lost\":{lost},\"acked\":{acked},\"accepted_per_sec\":{accepted:.0},\"deliveries_per_sec_by_port\":{{{by_port_json}}},\"generator_cpu_pct\":{cpu:.0},\"server_cpu_pct\":{server_cpu:.0}}}",
            options.receivers, options.publishers, options.messages, options.size,
        )
    } else {
        format!(
            "fanout R={} P={} K={} S={}: {delivered} deliveries in {elapsed:.2} s = {rate:.0}/s; latency p50 {p50:.2} ms p99 {p99:.2} ms max {max:.2} ms; lost {lost}; accepted {accepted:.0}/s; per receiving port /s {{{by_port_json}}}; CPU generator {cpu:.0}% server {server_cpu:.0}%",
            options.receivers, options.publishers, options.messages, options.size,
        )
    })
}

fn idle(options: &Options) -> io::Result<String> {
    let before = options.pid.and_then(rss_kib);
    let mut bench = Bench::new(options)?;
    let deadline = Instant::now() + DEADLINE;
    let started = Instant::now();
    let keys = bench.open_all(
        &vec![(Role::Receiver, options.port); options.connections],
        deadline,
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    // Take what the server still owes (join announcements), so its queues
    // are empty when it is measured, and stay quiet for 2 s: riftd gives
    // freed heap back to the kernel after 1 s without events.
    while bench.last_bytes.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        bench.turn(Duration::from_millis(100))?;
    }
    let after = options.pid.and_then(rss_kib);
    let count = keys.len();
    let per_connection = match (before, after) {
        (Some(before), Some(after)) if count > 0 => {
            Some(after.saturating_sub(before) as f64 * 1024.0 / count as f64)
        }
        _ => None,
    };
    Ok(if options.json {
        format!(
            "{{\"connections\":{count},\"failed\":{},\"rss_before_kib\":{},\"rss_after_kib\":{},\"bytes_per_connection\":{:.0},\"seconds\":{elapsed:.3}}}",
            bench.failed,
            before.unwrap_or(0),
            after.unwrap_or(0),
            per_connection.unwrap_or(-1.0)
        )
    } else {
        let per = per_connection.map_or("unknown (give --pid)".to_owned(), |bytes| {
            format!("{bytes:.0} B")
        });
        format!(
            "idle: {count} logged-in connections in {elapsed:.2} s ({} failed); server RSS {} -> {} KiB; {per} per connection",
            bench.failed,
            before.unwrap_or(0),
            after.unwrap_or(0)
        )
    })
}

fn connect(options: &Options) -> io::Result<String> {
    let mut bench = Bench::new(options)?;
    let deadline = Instant::now() + DEADLINE;
    let in_flight = options.window.max(1);
    let cpu_before = cpu_seconds(None);
    let server_cpu_before = options.pid.map(|pid| cpu_seconds(Some(pid)));
    let started = Instant::now();
    let (mut next, mut pending) = (0usize, 0usize);
    while (next < options.connections || pending > 0) && Instant::now() < deadline {
        while next < options.connections && pending < in_flight {
            bench.open(next, Role::Login, options.port)?;
            next += 1;
            pending += 1;
        }
        for key in bench.turn(Duration::from_millis(100))? {
            bench.close(key);
            bench.ready += 1;
            pending -= 1;
        }
        let broken: Vec<usize> = bench
            .peers
            .iter()
            .filter(|(_, peer)| peer.broken)
            .map(|(key, _)| key)
            .collect();
        for key in broken {
            bench.close(key);
            bench.failed += 1;
            pending -= 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(None) - cpu_before) / elapsed * 100.0;
    let server_cpu = server_cpu_before.map_or(-1.0, |before| {
        (cpu_seconds(options.pid) - before) / elapsed * 100.0
    });
    let done = bench.ready;
    let rate = done as f64 / elapsed;
    Ok(if options.json {
        format!(
            "{{\"logins\":{done},\"failed\":{},\"seconds\":{elapsed:.3},\"logins_per_sec\":{rate:.0},\"generator_cpu_pct\":{cpu:.0},\"server_cpu_pct\":{server_cpu:.0}}}",
            bench.failed
        )
    } else {
        format!(
            "connect: {done} connections + logins in {elapsed:.2} s = {rate:.0}/s ({} failed); CPU generator {cpu:.0}% server {server_cpu:.0}%",
            bench.failed
        )
    })
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("riftbench: {message}");
            std::process::exit(2);
        }
    };
    let result = match options.mode {
        Mode::Fanout => fanout(&options),
        Mode::Idle => idle(&options),
        Mode::Connect => connect(&options),
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(error) => {
            eprintln!("riftbench: {error}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers(bytes: &[u8]) -> (Vec<(u64, u32)>, usize) {
        let mut seen = Vec::new();
        let done = scan_markers(bytes, |micros, publisher| seen.push((micros, publisher)));
        (seen, done)
    }

    #[test]
    fn markers_are_found_and_a_cut_one_is_kept() {
        let whole = b"{\"text\":\"t=0000000012:003;xx\"}\n{\"text\":\"t=0000000045:000;";
        let (seen, done) = markers(whole);
        assert_eq!(seen, vec![(12, 3), (45, 0)]);
        assert_eq!(done, whole.len(), "a complete buffer is all done");
        let cut = b"{\"text\":\"t=0000000012:003;xx\"}\n{\"text\":\"t=00000000";
        let (seen, done) = markers(cut);
        assert_eq!(seen, vec![(12, 3)]);
        assert_eq!(&cut[done..], b"t=00000000");
        let (seen, done) = markers(b"abc t");
        assert!(seen.is_empty());
        assert_eq!(done, 4);
        let (seen, _) = markers(b"a=b t=x; t=00000000x7:002; t=0000000007:002;");
        assert_eq!(seen, vec![(7, 2)]);
    }

    #[test]
    fn a_published_message_has_the_asked_size_and_a_marker() {
        for proto in [Proto::Riftd, Proto::Redis] {
            let wire = Wire {
                proto,
                tag: "t".to_owned(),
                ready: b"\"code\":207".to_vec(),
            };
            let mut out = Vec::new();
            wire.publish(&mut out, 123_456, 7, 64);
            let (seen, _) = markers(&out);
            assert_eq!(seen, vec![(123_456, 7)]);
            let text = String::from_utf8(out).unwrap();
            let payload_start = text.find("t=").unwrap();
            let payload_end = text.rfind('x').unwrap() + 1;
            assert_eq!(payload_end - payload_start, 64, "{text}");
        }
    }
}
