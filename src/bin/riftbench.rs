//! riftbench: a load generator for riftd (or Redis pub/sub) on loopback.
//!
//! Modes: `fanout` (below), `idle --connections C [--pid PID]` (opens C
//! logged-in connections and reports the server's RSS per connection) and
//! `connect --connections N [--threads T]` (connections + logins per
//! second). `--proto redis` speaks RESP to a `redis-server` instead
//! (SUBSCRIBE/PUBLISH on channel `lobby`) for `fanout` and `idle`.
//!
//! `riftbench fanout --port P [--receivers R] [--publishers N] [--messages K]
//! [--size S] [--window W] [--json]`: R receivers and N publishers log in to
//! the lobby; each publisher sends K messages of about S bytes, with at most
//! W of its own messages unacknowledged (its own copy of a message is the
//! acknowledgement). Every payload carries its send time, so receivers
//! measure latency. Prints deliveries per second, latency percentiles and
//! lost messages. Bounded: it stops after K messages per publisher or a
//! 60-second deadline, whichever comes first.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
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
    threads: usize,
    pid: Option<u32>,
    port: u16,
    receivers: usize,
    publishers: usize,
    messages: usize,
    size: usize,
    window: usize,
    json: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("fanout") => Mode::Fanout,
        Some("idle") => Mode::Idle,
        Some("connect") => Mode::Connect,
        _ => return Err("usage: riftbench fanout|idle|connect --port PORT [--proto riftd|redis] [--receivers R] [--publishers N] [--messages K] [--size S] [--window W] [--connections C] [--threads T] [--pid PID] [--json]".to_owned()),
    };
    let mut options = Options {
        mode,
        proto: Proto::Riftd,
        connections: 1000,
        threads: 4,
        pid: None,
        port: 5050,
        receivers: 100,
        publishers: 4,
        messages: 10_000,
        size: 64,
        window: 64,
        json: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--json" {
            options.json = true;
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
        let value: usize = args
            .next()
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--port" => options.port = u16::try_from(value).map_err(|_| "bad port")?,
            "--receivers" => options.receivers = value,
            "--publishers" => options.publishers = value.max(1),
            "--messages" => options.messages = value,
            "--size" => options.size = value.max(24),
            "--window" => options.window = value.max(1),
            "--connections" => options.connections = value,
            "--threads" => options.threads = value.max(1),
            "--pid" => options.pid = Some(u32::try_from(value).map_err(|_| "bad pid")?),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

const DEADLINE: Duration = Duration::from_secs(60);

/// Connects and logs in (riftd: USER; Redis: SUBSCRIBE for a receiver,
/// nothing for a publisher); returns the reader (positioned after the login
/// frames) and the writer.
fn login(
    proto: Proto,
    port: u16,
    name: &str,
    is_receiver: bool,
) -> std::io::Result<(BufReader<TcpStream>, TcpStream)> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let done: String = match proto {
        Proto::Riftd => {
            writeln!(writer, "{{\"code\":110,\"username\":\"{name}\"}}")?;
            format!("\"new\":\"{name}\"")
        }
        Proto::Redis if is_receiver => {
            write!(writer, "SUBSCRIBE lobby\r\n")?;
            ":1".to_owned()
        }
        Proto::Redis => return Ok((reader, writer)),
    };
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let is_done = match proto {
            Proto::Riftd => line.contains("\"code\":201") && line.contains(&done),
            Proto::Redis => line.starts_with(&done),
        };
        if is_done {
            break;
        }
    }
    if proto == Proto::Riftd {
        // Skip the history backlog (208) and anything else before a PONG.
        writeln!(writer, "{{\"code\":108,\"token\":\"bench\"}}")?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.starts_with("{\"code\":207") {
                break;
            }
        }
    }
    Ok((reader, writer))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Opens `connections` logged-in connections and reports the server's RSS
/// growth per connection.
fn idle(options: &Options) {
    let before = options.pid.and_then(rss_kib);
    let mut held = Vec::with_capacity(options.connections);
    let started = Instant::now();
    for index in 0..options.connections {
        match login(options.proto, options.port, &format!("idle{index}"), true) {
            Ok(connection) => held.push(connection),
            Err(error) => {
                eprintln!("riftbench: connection {index} failed: {error}");
                break;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Take what the server still owes (riftd announces every login to the
    // room), so its queues are empty when measured; stop after a pass that
    // finds nothing.
    let mut sink = vec![0u8; 64 * 1024];
    for _ in 0..20 {
        let mut drained = 0;
        for (reader, writer) in &mut held {
            let _ = writer.set_nonblocking(true);
            loop {
                match reader.get_mut().read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(count) => drained += count,
                }
            }
        }
        if drained == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = options.pid.and_then(rss_kib);
    let count = held.len();
    let per_connection = match (before, after) {
        (Some(before), Some(after)) if count > 0 => {
            Some(after.saturating_sub(before) as f64 * 1024.0 / count as f64)
        }
        _ => None,
    };
    if options.json {
        println!(
            "{{\"connections\":{count},\"rss_before_kib\":{},\"rss_after_kib\":{},\"bytes_per_connection\":{:.0},\"seconds\":{elapsed:.3}}}",
            before.unwrap_or(0),
            after.unwrap_or(0),
            per_connection.unwrap_or(-1.0)
        );
    } else {
        let per = per_connection.map_or("unknown (give --pid)".to_owned(), |bytes| {
            format!("{bytes:.0} B")
        });
        println!(
            "idle: {count} logged-in connections in {elapsed:.2} s; server RSS {} -> {} KiB; {per} per connection",
            before.unwrap_or(0),
            after.unwrap_or(0)
        );
    }
}

/// Connections plus logins per second, from `threads` threads; each
/// connection is closed after its login.
fn connect(options: &Options) {
    let per_thread = options.connections / options.threads;
    let started = Instant::now();
    let workers: Vec<_> = (0..options.threads)
        .map(|thread| {
            let (proto, port) = (options.proto, options.port);
            std::thread::spawn(move || {
                (0..per_thread)
                    .filter(|index| login(proto, port, &format!("c{thread}x{index}"), true).is_ok())
                    .count()
            })
        })
        .collect();
    let done: usize = workers
        .into_iter()
        .map(|worker| worker.join().unwrap_or(0))
        .sum();
    let elapsed = started.elapsed().as_secs_f64();
    let rate = done as f64 / elapsed;
    if options.json {
        println!("{{\"logins\":{done},\"seconds\":{elapsed:.3},\"logins_per_sec\":{rate:.0}}}");
    } else {
        println!("connect: {done} connections + logins in {elapsed:.2} s = {rate:.0}/s");
    }
}

/// Calls `found` with the send time of every complete `t=NANOS;` marker in
/// `bytes`; returns how many bytes are done with (a marker cut by the end
/// of the buffer stays for the next read).
fn scan_markers(bytes: &[u8], mut found: impl FnMut(u64)) -> usize {
    let mut done = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..].windows(2).position(|pair| pair == b"t=") {
        let start = at + offset + 2;
        let Some(length) = bytes[start..].iter().position(|&byte| byte == b';') else {
            return at + offset;
        };
        if let Some(sent) = std::str::from_utf8(&bytes[start..start + length])
            .ok()
            .and_then(|digits| digits.parse().ok())
        {
            found(sent);
        }
        at = start + length + 1;
        done = at;
    }
    // Keep one byte in case it is the `t` of a marker cut in two.
    done.max(bytes.len().saturating_sub(1))
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("riftbench: {message}");
            std::process::exit(2);
        }
    };
    match options.mode {
        Mode::Idle => return idle(&options),
        Mode::Connect => return connect(&options),
        Mode::Fanout => {}
    }
    let proto = options.proto;
    let expected_per_receiver = options.publishers * options.messages;
    let epoch = Instant::now();
    let start = Arc::new(Barrier::new(options.receivers + options.publishers + 1));
    let mut receivers = Vec::new();
    for index in 0..options.receivers {
        let (mut reader, _writer) =
            login(proto, options.port, &format!("r{index}"), true).expect("receiver login");
        let start = Arc::clone(&start);
        receivers.push(std::thread::spawn(move || {
            start.wait();
            let mut latencies = Vec::with_capacity(expected_per_receiver);
            // Scan raw bytes for `t=NANOS;` markers instead of parsing lines,
            // so the generator costs the same per delivery whatever the
            // protocol's framing (RESP spreads one message over 7 lines).
            let mut pending: Vec<u8> = Vec::new();
            while latencies.len() < expected_per_receiver && epoch.elapsed() < DEADLINE {
                let count = match reader.fill_buf() {
                    Ok([]) | Err(_) => break,
                    Ok(chunk) => {
                        pending.extend_from_slice(chunk);
                        chunk.len()
                    }
                };
                reader.consume(count);
                let now = epoch.elapsed().as_nanos() as u64;
                let consumed = scan_markers(&pending, |sent| {
                    latencies.push(now.saturating_sub(sent));
                });
                pending.drain(..consumed);
            }
            latencies
        }));
    }
    let mut publishers = Vec::new();
    for index in 0..options.publishers {
        let (mut reader, mut writer) =
            login(proto, options.port, &format!("p{index}"), false).expect("publisher login");
        let start = Arc::clone(&start);
        let options_messages = options.messages;
        let window = options.window;
        let padding = "x".repeat(options.size.saturating_sub(24));
        // riftd echoes a publisher's own message; Redis answers PUBLISH
        // with an integer reply.
        let me = match proto {
            Proto::Riftd => format!("\"from\":\"p{index}\""),
            Proto::Redis => ":".to_owned(),
        };
        publishers.push(std::thread::spawn(move || {
            start.wait();
            let (mut sent, mut acked) = (0usize, 0usize);
            let mut line = String::new();
            while acked < options_messages && epoch.elapsed() < DEADLINE {
                while sent < options_messages && sent - acked < window {
                    let now = epoch.elapsed().as_nanos();
                    let written = match proto {
                        Proto::Riftd => {
                            writeln!(writer, "{{\"code\":100,\"message\":\"t={now};{padding}\"}}")
                        }
                        Proto::Redis => write!(writer, "PUBLISH lobby t={now};{padding}\r\n"),
                    };
                    if written.is_err() {
                        return acked;
                    }
                    sent += 1;
                }
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return acked,
                    Ok(_) if proto == Proto::Riftd && line.contains(&me) => acked += 1,
                    Ok(_) if proto == Proto::Redis && line.starts_with(&me) => acked += 1,
                    Ok(_) => {}
                }
            }
            acked
        }));
    }
    start.wait();
    let began = Instant::now();
    let acked: usize = publishers
        .into_iter()
        .map(|publisher| publisher.join().expect("publisher thread"))
        .sum();
    let mut latencies: Vec<u64> = Vec::new();
    for receiver in receivers {
        latencies.extend(receiver.join().expect("receiver thread"));
    }
    let elapsed = began.elapsed().as_secs_f64();
    let delivered = latencies.len();
    let expected = expected_per_receiver * options.receivers;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((delivered as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |&ns| ns as f64 / 1e6)
    };
    let rate = delivered as f64 / elapsed;
    if options.json {
        println!(
            "{{\"receivers\":{},\"publishers\":{},\"messages\":{},\"size\":{},\"deliveries\":{delivered},\"seconds\":{elapsed:.3},\"deliveries_per_sec\":{rate:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"lost\":{},\"acked\":{acked}}}",
            options.receivers,
            options.publishers,
            options.messages,
            options.size,
            percentile(0.5),
            percentile(0.99),
            percentile(1.0),
            expected - delivered
        );
    } else {
        println!(
            "fanout R={} P={} K={} S={}: {delivered} deliveries in {elapsed:.2} s = {rate:.0}/s; latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms; lost {}",
            options.receivers,
            options.publishers,
            options.messages,
            options.size,
            percentile(0.5),
            percentile(0.99),
            percentile(1.0),
            expected - delivered
        );
    }
}
