//! riftd-stress: abuse a running riftd on loopback for a bounded time while
//! a well-behaved pair chats, and check that the pair loses nothing.
//!
//! `riftd-stress --port PORT [--seconds S] [--connections N] [--pid PID]`
//!
//! For S seconds (default 5) it runs N connections (default 10) of each
//! kind: random bytes, half lines left hanging, endless lines, slowloris
//! trickles (one byte every 100 ms) and flooders (SAY as fast as the socket
//! takes it). Meanwhile `stress-a` and `stress-b` log in and each send four
//! numbered messages a second, within the default flood limit, to the room
//! `stress`; each checks that it receives every message of the other. With
//! `--pid` it samples the server's VmRSS. It prints what it tried and what
//! arrived, and exits 0 only if the pair lost nothing. Loopback only; every
//! loop ends by the deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

struct Options {
    port: u16,
    seconds: u64,
    connections: usize,
    pid: Option<u32>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        port: 5050,
        seconds: 5,
        connections: 10,
        pid: None,
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
            "--connections" => options.connections = usize::try_from(number()?).unwrap_or(10),
            "--pid" => options.pid = Some(u32::try_from(number()?).map_err(|_| "bad pid")?),
            _ => {
                return Err(format!(
                    "unknown option {flag}\nusage: riftd-stress --port PORT [--seconds S] [--connections N] [--pid PID]"
                ));
            }
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

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("riftd-stress: {message}");
            std::process::exit(2);
        }
    };
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
        "tried for {} s: {} connection(s) of each kind ({}); connected {}, refused {}, closed by the server {}, {} bytes of abuse sent",
        options.seconds,
        options.connections,
        kinds_tried.join(", "),
        tally.connected.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.closed_by_server.load(Ordering::Relaxed),
        tally.bytes_sent.load(Ordering::Relaxed)
    );
    println!(
        "healthy pair: stress-b received {}/{messages} of stress-a's messages, stress-a received {}/{messages} of stress-b's",
        received[1], received[0]
    );
    if options.pid.is_some() {
        println!("server peak RSS: {peak_rss} KiB");
    }
    let lost = 2 * messages - received.iter().sum::<usize>();
    println!("lost: {lost}");
    std::process::exit(if lost == 0 { 0 } else { 1 });
}
