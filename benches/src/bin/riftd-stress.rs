//! riftd-stress: abuse a running riftd on loopback for a bounded time while
//! a well-behaved pair talks to it, and report what the abuse did to them.
//!
//! `riftd-stress --port PORT [--seconds S] [--connections N] [--pid PID]
//!               [--attacks LIST]`
//!
//! LIST is a comma-separated choice of phases, run one after the other
//! (default: all of them):
//!
//! - `baseline`: no attack, only the probe pair below, for S seconds: the
//!   round trip to compare the others with.
//! - `mix`: for S seconds, N connections of each kind — random bytes, half
//!   lines left hanging, endless lines, slowloris trickles (one byte every
//!   100 ms) and flooders (SAY as fast as the socket takes it) — while
//!   `stress-a` and `stress-b` each send four numbered messages a second to
//!   the room `stress` and check that every message of the other arrives.
//! - `empty-lines`, `crlf`, `iac-nop`: for S seconds, N connections that
//!   never log in stream only `\n`, only `\r\n`, or only telnet `IAC NOP`
//!   pairs as fast as the socket takes them (issue 11, item 2).
//! - `connects`: for S seconds, N threads each connect and close at once,
//!   over and over (most are refused by the per-address cap).
//! - `guesses`: N connections from one address each send USER with the
//!   same name, wait for 211, and then all send a wrong PASS at the same
//!   moment; the answers are
//!   counted (401 wrong password, 429 throttled). Needs a server with
//!   `auth = "accounts"` or `"password"`; skipped under open auth.
//!
//! During every phase but `mix` a probe pair measures the effect: one client
//! sends PINGs one after the other (a new one 10 ms after each answer) and
//! reports the round trip's median and maximum; under open auth both log in
//! and one sends four messages a second that the other must all receive
//! (under other auth they only PING: PING is allowed before login). A pair
//! is healthy when every PING was answered within 5 s and no message was
//! lost. With `--pid` the server's peak VmRSS is sampled. The tool exits 0
//! only if no pair lost anything. Loopback only; every loop ends by its
//! deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const ATTACKS: [&str; 7] = [
    "baseline",
    "mix",
    "empty-lines",
    "crlf",
    "iac-nop",
    "connects",
    "guesses",
];
const USAGE: &str = "usage: riftd-stress --port PORT [--seconds S] [--connections N] [--pid PID] [--attacks baseline,mix,empty-lines,crlf,iac-nop,connects,guesses]";

struct Options {
    port: u16,
    seconds: u64,
    connections: usize,
    pid: Option<u32>,
    attacks: Vec<&'static str>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        port: 5050,
        seconds: 5,
        connections: 10,
        pid: None,
        attacks: ATTACKS.to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--port" => options.port = u16::try_from(number()?).map_err(|_| "bad port")?,
            "--seconds" => options.seconds = number()?.clamp(1, 3600),
            "--connections" => {
                options.connections = usize::try_from(number()?.clamp(1, 1000)).unwrap_or(10)
            }
            "--pid" => options.pid = Some(u32::try_from(number()?).map_err(|_| "bad pid")?),
            "--attacks" => {
                options.attacks = value
                    .split(',')
                    .map(|name| {
                        ATTACKS
                            .into_iter()
                            .find(|attack| *attack == name)
                            .ok_or_else(|| format!("unknown attack {name}\n{USAGE}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(options)
}

/// A tiny deterministic generator; stress input need not be secure.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Counters shared by the abuse threads.
#[derive(Default)]
struct Tally {
    connected: AtomicU64,
    refused: AtomicU64,
    bytes_sent: AtomicU64,
    closed_by_server: AtomicU64,
}

fn connect(port: u16) -> Option<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    Some(stream)
}

/// Sends what `next_chunk` makes until the deadline or the server closes.
fn abuse(
    port: u16,
    deadline: Instant,
    tally: &Tally,
    pause: Duration,
    mut next_chunk: impl FnMut(usize) -> Vec<u8>,
) {
    let Some(mut stream) = connect(port) else {
        tally.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    tally.connected.fetch_add(1, Ordering::Relaxed);
    // Drain whatever the server says, so it never blocks on us.
    let mut reader = match stream.try_clone() {
        Ok(reader) => reader,
        Err(_) => return,
    };
    let drain = thread::spawn(move || {
        let mut sink = [0u8; 16 * 1024];
        while Instant::now() < deadline {
            match reader.read(&mut sink) {
                // EOF before we hung up ourselves (at the deadline).
                Ok(0) => return Instant::now() < deadline,
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Instant::now() < deadline,
            }
        }
        false
    });
    let mut round = 0;
    while Instant::now() < deadline {
        let chunk = next_chunk(round);
        round += 1;
        if chunk.is_empty() {
            thread::sleep(pause.max(Duration::from_millis(50)));
            continue;
        }
        match stream.write_all(&chunk) {
            Ok(()) => {
                tally
                    .bytes_sent
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    if drain.join().unwrap_or(false) {
        tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
    }
}

/// One member of the healthy pair: logs in, joins `stress`, sends `count`
/// numbered messages at four a second, and returns how many of the other's
/// messages arrived.
fn chatter(
    port: u16,
    me: &str,
    other: &str,
    count: usize,
    stop: Arc<AtomicBool>,
    both_joined: Arc<Barrier>,
) -> usize {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("the healthy pair must connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    writeln!(writer, "{{\"code\":110,\"username\":\"{me}\"}}").expect("login");
    writeln!(writer, "{{\"code\":104,\"room\":\"stress\"}}").expect("join");
    // Both must be in the room before either speaks.
    let joined = format!("\"new\":\"{me}\",\"room\":\"stress\"");
    let mut line = String::new();
    let login_deadline = Instant::now() + Duration::from_secs(10);
    while !line.contains(&joined) && Instant::now() < login_deadline {
        line.clear();
        let _ = reader.read_line(&mut line);
    }
    both_joined.wait();
    let needle = format!("\"from\":\"{other}\"");
    let mut seen = vec![false; count];
    let mut sent = 0;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) || seen.iter().any(|seen| !seen) {
        if started.elapsed() > Duration::from_secs(count as u64 / 4 + 30) {
            break;
        }
        let due = (started.elapsed().as_millis() / 250) as usize;
        while sent < count.min(due + 1) {
            let _ = writeln!(
                writer,
                "{{\"code\":100,\"room\":\"stress\",\"message\":\"{me} #{sent}\"}}"
            );
            sent += 1;
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                if line.contains(&needle)
                    && let Some(number) = line
                        .split(&format!("{other} #"))
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .and_then(|number| number.parse::<usize>().ok())
                    && number < count
                {
                    seen[number] = true;
                }
                if line.contains("\"code\":4") {
                    eprintln!("{me} got an error: {}", line.trim_end());
                }
            }
            Err(_) => {
                if sent >= count && seen.iter().all(|seen| *seen) {
                    break;
                }
            }
        }
    }
    seen.iter().filter(|seen| **seen).count()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `mix` phase; returns the messages the pair lost and the peak RSS.
fn run_mix(options: &Options) -> (usize, u64) {
    let port = options.port;
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let tally = Arc::new(Tally::default());
    let mut threads = Vec::new();
    type Kind = (&'static str, Duration, fn(&mut XorShift, usize) -> Vec<u8>);
    let kinds: [Kind; 5] = [
        ("random bytes", Duration::from_millis(20), |random, _| {
            (0..4096).map(|_| random.next() as u8).collect()
        }),
        ("half lines", Duration::from_millis(200), |_, round| {
            if round == 0 {
                b"{\"code\":110,\"userna".to_vec()
            } else {
                Vec::new()
            }
        }),
        ("endless line", Duration::from_millis(10), |_, _| {
            vec![b'A'; 16 * 1024]
        }),
        ("slowloris", Duration::from_millis(100), |random, _| {
            vec![b"{\"code\":108}"[(random.next() % 12) as usize]]
        }),
        ("flood", Duration::ZERO, |_, round| {
            if round == 0 {
                format!(
                    "{{\"code\":110,\"username\":\"flood{}\"}}\n",
                    std::process::id() % 1000
                )
                .into_bytes()
            } else {
                b"{\"code\":100,\"message\":\"flood flood flood\"}\n".repeat(64)
            }
        }),
    ];
    for (kind, (_, pause, make)) in kinds.iter().enumerate() {
        for index in 0..options.connections {
            let tally = Arc::clone(&tally);
            let pause = *pause;
            let make = *make;
            let seed = 0x9e37_79b9_7f4a_7c15 ^ ((kind as u64) << 32 | index as u64);
            threads.push(thread::spawn(move || {
                let mut random = XorShift(seed | 1);
                abuse(port, deadline, &tally, pause, move |round| {
                    make(&mut random, round)
                });
            }));
        }
    }
    let messages = (options.seconds as usize * 4).max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let both_joined = Arc::new(Barrier::new(2));
    let pair: Vec<_> = [("stress-a", "stress-b"), ("stress-b", "stress-a")]
        .into_iter()
        .map(|(me, other)| {
            let stop = Arc::clone(&stop);
            let both_joined = Arc::clone(&both_joined);
            thread::spawn(move || chatter(port, me, other, messages, stop, both_joined))
        })
        .collect();
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        if let Some(rss) = options.pid.and_then(rss_kib) {
            peak_rss = peak_rss.max(rss);
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let received: Vec<usize> = pair
        .into_iter()
        .map(|thread| thread.join().unwrap_or(0))
        .collect();
    if let Some(rss) = options.pid.and_then(rss_kib) {
        peak_rss = peak_rss.max(rss);
    }
    let kinds_tried: Vec<&str> = kinds.iter().map(|(name, _, _)| *name).collect();
    println!(
        "mix: tried for {} s: {} connection(s) of each kind ({}); connected {}, refused {}, closed by the server {}, {} bytes of abuse sent",
        options.seconds,
        options.connections,
        kinds_tried.join(", "),
        tally.connected.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.closed_by_server.load(Ordering::Relaxed),
        tally.bytes_sent.load(Ordering::Relaxed)
    );
    println!(
        "  healthy pair: stress-b received {}/{messages} of stress-a's messages, stress-a received {}/{messages} of stress-b's",
        received[1], received[0]
    );
    let lost = 2 * messages - received.iter().sum::<usize>();
    (lost, peak_rss)
}

/// What a probe pair saw during one phase.
#[derive(Default)]
struct PairReport {
    /// How long connecting (and under open auth logging in and joining)
    /// took; `None` if it did not finish before the phase ended.
    setup: Option<Duration>,
    /// Round trips of PINGs answered before the phase ended, i.e. during
    /// the attack (the last PING of a phase is often answered just after).
    round_trips: Vec<Duration>,
    unanswered: usize,
    /// Messages sent by one and received by the other (open auth only).
    messages: Option<(usize, usize)>,
}

impl PairReport {
    /// Healthy: set up and answered during the attack, nothing lost.
    fn is_healthy(&self) -> bool {
        self.setup.is_some()
            && self.unanswered == 0
            && !self.round_trips.is_empty()
            && self
                .messages
                .is_none_or(|(sent, received)| sent == received)
    }

    fn lost(&self) -> usize {
        self.messages
            .map_or(0, |(sent, received)| sent.saturating_sub(received))
            + self.unanswered
    }

    fn print(&self) {
        let mut sorted = self.round_trips.clone();
        sorted.sort_unstable();
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        let median = sorted.get(sorted.len() / 2).copied().map_or(0.0, ms);
        let max = sorted.last().copied().map_or(0.0, ms);
        let messages = match self.messages {
            Some((sent, received)) => format!("messages {received}/{sent}"),
            None if self.setup.is_none() => "messages not checked".to_owned(),
            None => "messages not checked (no login: auth is not open)".to_owned(),
        };
        let setup = match self.setup {
            Some(setup) => format!("set up in {:.2} ms", ms(setup)),
            None => "NOT set up before the phase ended".to_owned(),
        };
        println!(
            "  probe pair: {setup}; PING round trip median {median:.2} ms, max {max:.2} ms over {} ping(s) answered during the attack, {} unanswered; {messages}; healthy: {}",
            sorted.len(),
            self.unanswered,
            if self.is_healthy() { "yes" } else { "NO" }
        );
    }
}

/// A line-reading connection whose reads give up at a deadline and keep
/// what they had of a line.
struct Peer {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    partial: Vec<u8>,
}

impl Peer {
    fn connect(port: u16) -> Option<Peer> {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_nodelay(true).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        Some(Peer {
            stream,
            reader,
            partial: Vec::new(),
        })
    }

    fn send(&mut self, line: &str) -> bool {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .is_ok()
    }

    /// The next line, or `None` at the deadline, EOF or an error.
    fn line_by(&mut self, deadline: Instant) -> Option<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).ok()?;
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => return None,
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.partial);
                    return Some(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads until a line containing every one of `needles`.
    fn expect(&mut self, needles: &[&str], deadline: Instant) -> bool {
        while let Some(line) = self.line_by(deadline) {
            if needles.iter().all(|needle| line.contains(needle)) {
                return true;
            }
        }
        false
    }
}

/// Runs the probe pair until `deadline` (see the module doc).
fn probe_pair(port: u16, deadline: Instant, tag: &str) -> PairReport {
    let mut report = PairReport::default();
    let started = Instant::now();
    let (Some(mut a), Some(mut b)) = (Peer::connect(port), Peer::connect(port)) else {
        report.unanswered = 1;
        return report;
    };
    let setup = Instant::now() + Duration::from_secs(5);
    let Some(greeting) = a.line_by(setup) else {
        report.unanswered = 1;
        return report;
    };
    let is_open = greeting.contains("\"auth\":\"open\"");
    let (name_a, name_b) = (format!("probe-{tag}-a"), format!("probe-{tag}-b"));
    let room = format!("probe-{tag}");
    if is_open {
        for (peer, name) in [(&mut a, &name_a), (&mut b, &name_b)] {
            peer.send(&format!("{{\"code\":110,\"username\":\"{name}\"}}"));
            peer.send(&format!("{{\"code\":104,\"room\":\"{room}\"}}"));
            let joined = [
                "\"code\":201".to_owned(),
                format!("\"new\":\"{name}\""),
                format!("\"room\":\"{room}\""),
            ];
            let joined: Vec<&str> = joined.iter().map(String::as_str).collect();
            if !peer.expect(&joined, setup) {
                report.unanswered = 1;
                return report;
            }
        }
        report.messages = Some((0, 0));
    }
    if Instant::now() < deadline {
        report.setup = Some(started.elapsed());
    }
    let mut sent = 0;
    let mut next_say = Instant::now();
    let mut token = 0u64;
    while Instant::now() < deadline {
        if is_open && Instant::now() >= next_say {
            a.send(&format!(
                "{{\"code\":100,\"room\":\"{room}\",\"message\":\"probe {sent}\"}}"
            ));
            sent += 1;
            next_say += Duration::from_millis(250);
        }
        token += 1;
        let asked = Instant::now();
        a.send(&format!("{{\"code\":108,\"token\":{token}}}"));
        let token_field = format!("\"token\":{token}");
        if a.expect(
            &["\"code\":207", &token_field],
            asked + Duration::from_secs(5),
        ) {
            if Instant::now() < deadline {
                report.round_trips.push(asked.elapsed());
            }
        } else {
            report.unanswered += 1;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    if is_open {
        let mut received = 0;
        let until = Instant::now() + Duration::from_secs(5);
        let needle = format!("\"from\":\"{name_a}\"");
        while received < sent && b.expect(&["\"code\":200", &needle], until) {
            received += 1;
        }
        report.messages = Some((sent, received));
    }
    report
}

/// One flood phase: `connections` never-logged-in connections stream
/// `unit` over and over while the probe pair measures.
fn run_flood(options: &Options, name: &str, unit: &'static [u8]) -> PairReport {
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let tally = Arc::new(Tally::default());
    let chunk: Arc<Vec<u8>> = Arc::new(unit.repeat(64 * 1024 / unit.len()));
    let flooders: Vec<_> = (0..options.connections)
        .map(|_| {
            let tally = Arc::clone(&tally);
            let chunk = Arc::clone(&chunk);
            let port = options.port;
            thread::spawn(move || {
                abuse(port, deadline, &tally, Duration::ZERO, |_| chunk.to_vec());
            })
        })
        .collect();
    let report = probe_pair(options.port, deadline, name);
    for flooder in flooders {
        let _ = flooder.join();
    }
    println!(
        "{name}: {} connection(s) streamed only {} for {} s: connected {}, refused {}, closed by the server {}, {} bytes sent",
        options.connections,
        match name {
            "empty-lines" => "\\n",
            "crlf" => "\\r\\n",
            _ => "IAC NOP",
        },
        options.seconds,
        tally.connected.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.closed_by_server.load(Ordering::Relaxed),
        tally.bytes_sent.load(Ordering::Relaxed)
    );
    report.print();
    report
}

/// The `connects` phase: threads that connect and close as fast as they can.
fn run_connects(options: &Options) -> PairReport {
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let connects = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let stormers: Vec<_> = (0..options.connections)
        .map(|_| {
            let (connects, failures) = (Arc::clone(&connects), Arc::clone(&failures));
            let port = options.port;
            thread::spawn(move || {
                while Instant::now() < deadline {
                    match TcpStream::connect(("127.0.0.1", port)) {
                        Ok(stream) => {
                            connects.fetch_add(1, Ordering::Relaxed);
                            drop(stream);
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            })
        })
        .collect();
    let report = probe_pair(options.port, deadline, "connects");
    for stormer in stormers {
        let _ = stormer.join();
    }
    println!(
        "connects: {} thread(s) connected and closed for {} s: {} connect(s), {} failed",
        options.connections,
        options.seconds,
        connects.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    report.print();
    report
}

/// The `guesses` phase: every connection sends USER, then all send a wrong
/// PASS at once; the answers are counted.
fn run_guesses(options: &Options) -> Option<PairReport> {
    let port = options.port;
    let mut probe = Peer::connect(port)?;
    let greeting = probe.line_by(Instant::now() + Duration::from_secs(5))?;
    if greeting.contains("\"auth\":\"open\"") {
        println!(
            "guesses: skipped: the server's auth is open (run it against auth = \"accounts\")"
        );
        return None;
    }
    drop(probe);
    let ready = Arc::new(Barrier::new(options.connections + 1));
    let guessers: Vec<_> = (0..options.connections)
        .map(|_| {
            let ready = Arc::clone(&ready);
            thread::spawn(move || -> Option<String> {
                let peer = Peer::connect(port);
                let mut peer = match peer {
                    Some(mut peer) => {
                        let setup = Instant::now() + Duration::from_secs(5);
                        peer.send("{\"code\":110,\"username\":\"stress-guess\"}");
                        peer.expect(&["\"code\":211"], setup).then_some(peer)
                    }
                    None => None,
                };
                // Everyone waits here, whether or not it got ready.
                ready.wait();
                let peer = peer.as_mut()?;
                peer.send("{\"code\":111,\"password\":\"wrong guess\"}");
                let until = Instant::now() + Duration::from_secs(10);
                while let Some(line) = peer.line_by(until) {
                    if let Some(code) = ["401", "429", "503", "403", "408"]
                        .into_iter()
                        .find(|code| line.contains(&format!("\"code\":{code}")))
                    {
                        return Some(code.to_owned());
                    }
                }
                None
            })
        })
        .collect();
    ready.wait();
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let report = thread::scope(|scope| {
        let probing = scope.spawn(|| probe_pair(port, deadline, "guesses"));
        let answers: Vec<Option<String>> = guessers
            .into_iter()
            .map(|guesser| guesser.join().unwrap_or(None))
            .collect();
        let count = |code: &str| {
            answers
                .iter()
                .filter(|answer| answer.as_deref() == Some(code))
                .count()
        };
        let (wrong, throttled) = (count("401"), count("429"));
        println!(
            "guesses: {} connection(s) from 127.0.0.1 sent a wrong PASS at once: {wrong} got 401, {throttled} got 429, {} other or none",
            answers.len(),
            answers.len() - wrong - throttled
        );
        probing.join().unwrap_or_default()
    });
    report.print();
    Some(report)
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("riftd-stress: {message}");
            std::process::exit(2);
        }
    };
    let peak_rss = Arc::new(AtomicU64::new(0));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = options.pid.map(|pid| {
        let peak_rss = Arc::clone(&peak_rss);
        let stop = Arc::clone(&stop_sampling);
        // Bounded like every loop here: every phase's time and a margin.
        let phases = options.attacks.len() as u64;
        let until = Instant::now() + Duration::from_secs((options.seconds + 30) * phases);
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if let Some(rss) = rss_kib(pid) {
                    peak_rss.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    });
    let mut lost = 0;
    let mut unhealthy = 0;
    let mut probed = |report: PairReport| {
        lost += report.lost();
        if !report.is_healthy() {
            unhealthy += 1;
        }
    };
    let mut mix_lost = 0;
    for attack in &options.attacks {
        match *attack {
            "baseline" => {
                let deadline = Instant::now() + Duration::from_secs(options.seconds);
                let report = probe_pair(options.port, deadline, "baseline");
                println!("baseline: no attack for {} s", options.seconds);
                report.print();
                probed(report);
            }
            "mix" => {
                let (lost, mix_rss) = run_mix(&options);
                peak_rss.fetch_max(mix_rss, Ordering::Relaxed);
                mix_lost += lost;
            }
            "empty-lines" => probed(run_flood(&options, attack, b"\n")),
            "crlf" => probed(run_flood(&options, attack, b"\r\n")),
            "iac-nop" => probed(run_flood(&options, attack, &[255, 241])),
            "connects" => probed(run_connects(&options)),
            _ => {
                if let Some(report) = run_guesses(&options) {
                    probed(report);
                }
            }
        }
    }
    let lost = lost + mix_lost;
    stop_sampling.store(true, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        let _ = sampler.join();
    }
    if let Some(rss) = options.pid.and_then(rss_kib) {
        peak_rss.fetch_max(rss, Ordering::Relaxed);
    }
    if options.pid.is_some() {
        println!("server peak RSS: {} KiB", peak_rss.load(Ordering::Relaxed));
    }
    println!("lost: {lost}");
    println!("unhealthy probe pairs: {unhealthy}");
    std::process::exit(if lost == 0 && unhealthy == 0 { 0 } else { 1 });
}
