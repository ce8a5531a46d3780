//! riftbench: a load generator for riftd on loopback.
//!
//! `riftbench fanout --port P [--receivers R] [--publishers N] [--messages K]
//! [--size S] [--window W] [--json]`: R receivers and N publishers log in to
//! the lobby; each publisher sends K messages of about S bytes, with at most
//! W of its own messages unacknowledged (its own copy of a message is the
//! acknowledgement). Every payload carries its send time, so receivers
//! measure latency. Prints deliveries per second, latency percentiles and
//! lost messages. Bounded: it stops after K messages per publisher or a
//! 60-second deadline, whichever comes first.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct Options {
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
    match args.next().as_deref() {
        Some("fanout") => {}
        _ => return Err("usage: riftbench fanout --port PORT [--receivers R] [--publishers N] [--messages K] [--size S] [--window W] [--json]".to_owned()),
    }
    let mut options = Options {
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
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

const DEADLINE: Duration = Duration::from_secs(60);

/// Connects and logs in; returns the reader (positioned after the login
/// frames) and the writer.
fn login(port: u16, name: &str) -> std::io::Result<(BufReader<TcpStream>, TcpStream)> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    writeln!(writer, "{{\"code\":110,\"username\":\"{name}\"}}")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.contains("\"code\":201") && line.contains(&format!("\"new\":\"{name}\"")) {
            break;
        }
    }
    Ok((reader, writer))
}

/// The send time (ns since `epoch`) embedded in a payload `t=NANOS;`.
fn sent_at(line: &str) -> Option<u64> {
    let start = line.find("t=")? + 2;
    let end = start + line[start..].find(';')?;
    line[start..end].parse().ok()
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("riftbench: {message}");
            std::process::exit(2);
        }
    };
    let expected_per_receiver = options.publishers * options.messages;
    let epoch = Instant::now();
    let start = Arc::new(Barrier::new(options.receivers + options.publishers + 1));
    let mut receivers = Vec::new();
    for index in 0..options.receivers {
        let (mut reader, _writer) =
            login(options.port, &format!("r{index}")).expect("receiver login");
        let start = Arc::clone(&start);
        receivers.push(std::thread::spawn(move || {
            start.wait();
            let mut latencies = Vec::with_capacity(expected_per_receiver);
            let mut line = String::new();
            while latencies.len() < expected_per_receiver && epoch.elapsed() < DEADLINE {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Some(sent) = sent_at(&line) {
                    let now = epoch.elapsed().as_nanos() as u64;
                    latencies.push(now.saturating_sub(sent));
                }
            }
            latencies
        }));
    }
    let mut publishers = Vec::new();
    for index in 0..options.publishers {
        let (mut reader, mut writer) =
            login(options.port, &format!("p{index}")).expect("publisher login");
        let start = Arc::clone(&start);
        let options_messages = options.messages;
        let window = options.window;
        let padding = "x".repeat(options.size.saturating_sub(24));
        let me = format!("\"from\":\"p{index}\"");
        publishers.push(std::thread::spawn(move || {
            start.wait();
            let (mut sent, mut acked) = (0usize, 0usize);
            let mut line = String::new();
            while acked < options_messages && epoch.elapsed() < DEADLINE {
                while sent < options_messages && sent - acked < window {
                    let now = epoch.elapsed().as_nanos();
                    if writeln!(writer, "{{\"code\":100,\"message\":\"t={now};{padding}\"}}")
                        .is_err()
                    {
                        return acked;
                    }
                    sent += 1;
                }
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return acked,
                    Ok(_) if line.contains(&me) => acked += 1,
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
