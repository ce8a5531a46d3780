//! riftd-chaos: a mixed chat load across the nodes of a riftd cluster, for a
//! bounded time, while something else injects faults (`benches/chaos.sh`
//! kills and freezes nodes and NATS servers); then it says what became of
//! every message.
//!
//! `riftd-chaos --ports P1,P2[,…] [--clients N] [--seconds S] [--rate R]
//!              [--settle S] [--room ROOM]`
//!
//! Client `i` starts on `ports[i % len]`, logs in as `chaos<i>`, joins ROOM
//! (default `chaos`), and once every client has joined says `chaos<i> #<seq>`
//! R times a second (default 10) for S seconds (default 10), each SAY with
//! `ref` = its sequence number. Then it keeps reading for the settle time
//! (default 5 s) so that what is in flight arrives. A message is:
//!
//! - **acknowledged** when its sender got it back (200 with its text): the
//!   node answers a SAY that way only once the cluster's stream stored it;
//! - **refused** when it was answered with an error (503 while the cluster is
//!   paused or does not answer, 429 from flood control);
//! - **unanswered** when neither came before the sender's connection broke or
//!   the run ended (it may or may not have been stored; it is then counted as
//!   delivered wherever it was seen, never as lost).
//!
//! A client whose connection breaks (its node was killed) reconnects to the
//! next port, logs in under a new name (`chaos<i>r<k>`: the old one is held
//! until the dead node's entries expire), joins ROOM again and asks HISTORY
//! after the last id it saw, page by page, which is how a real client catches
//! up. Each client's **floor** is the newest id of its first backlog: every
//! acknowledged message above it must reach it, live or by catch-up.
//!
//! - **lost**: an acknowledged message, above a client's floor, that the
//!   client never saw (summed over clients). Must be 0.
//! - **duplicated**: a live message (200) a client was sent twice (the same
//!   id). Backlogs and HISTORY answers overlap what was seen live by design
//!   and are not counted. Must be 0.
//!
//! The report is one JSON object on stdout; the exit status is 0 only if
//! nothing acknowledged was lost, nothing duplicated, and every client was
//! connected at the end. Loopback only; every loop ends by its deadline.

use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: riftd-chaos --ports P1,P2[,...] [--clients N] [--seconds S] [--rate R] [--settle S] [--room ROOM]";
/// How long one read waits, so a client interleaves sending and reading.
const READ_SLICE: Duration = Duration::from_millis(10);
/// How long a login (or a reconnect attempt) may take before the next port
/// is tried.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The most messages one HISTORY answer carries (protocol.md, "Caps").
const HISTORY_PAGE: u64 = 1000;

#[derive(Clone)]
struct Options {
    ports: Vec<u16>,
    clients: usize,
    seconds: u64,
    rate: u64,
    settle: u64,
    room: String,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        ports: Vec::new(),
        clients: 8,
        seconds: 10,
        rate: 10,
        settle: 5,
        room: "chaos".to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |low: u64, high: u64| {
            value
                .parse::<u64>()
                .map(|number| number.clamp(low, high))
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--ports" => {
                options.ports = value
                    .split(',')
                    .map(|port| port.parse::<u16>().map_err(|_| format!("bad port {port}")))
                    .collect::<Result<_, _>>()?;
            }
            "--clients" => options.clients = usize::try_from(number(1, 500)?).unwrap_or(8),
            "--seconds" => options.seconds = number(1, 3600)?,
            "--rate" => options.rate = number(1, 1000)?,
            "--settle" => options.settle = number(0, 600)?,
            "--room" => options.room = value,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if options.ports.is_empty() {
        return Err(format!("--ports is required\n{USAGE}"));
    }
    Ok(options)
}

/// One message's fate, as its sender knows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Unanswered,
    Acknowledged(u64),
    Refused,
}

/// What one client did and saw.
#[derive(Default)]
struct Record {
    /// This client's messages by sequence number.
    sent: Vec<Fate>,
    /// Every id of ROOM seen, live or from a backlog or HISTORY.
    seen: HashSet<u64>,
    /// Ids of ROOM sent live (200).
    live: HashSet<u64>,
    /// Live ids sent more than once.
    duplicated: u64,
    /// The newest id of the first backlog: everything above must arrive.
    floor: u64,
    /// Sequence numbers of other clients' messages seen, by sender index,
    /// for the report of what was delivered though unanswered.
    seen_texts: HashSet<String>,
    reconnects: u64,
    /// Logged in and joined at least once: later logins catch up.
    has_joined: bool,
    /// Logged in (202) at least once: later logins are reconnects, under a
    /// new name.
    has_logged_in: bool,
    /// Connected (logged in and in ROOM) when the run ended.
    is_connected: bool,
    errors: Vec<String>,
}

/// A line-oriented JSON connection with short reads.
struct Link {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    partial: Vec<u8>,
    /// The newest id of ROOM seen on this link.
    last_id: u64,
}

enum Got {
    Frame(Value),
    Nothing,
    Closed,
}

impl Link {
    fn open(port: u16) -> Option<Link> {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(READ_SLICE)).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        Some(Link {
            writer: stream,
            reader,
            partial: Vec::new(),
            last_id: 0,
        })
    }

    fn send(&mut self, frame: &Value) -> bool {
        let mut line = frame.to_string().into_bytes();
        line.push(b'\n');
        self.writer.write_all(&line).is_ok()
    }

    fn next(&mut self) -> Got {
        match self.reader.read_until(b'\n', &mut self.partial) {
            Ok(0) => Got::Closed,
            Ok(_) if self.partial.ends_with(b"\n") => {
                let line = std::mem::take(&mut self.partial);
                match serde_json::from_slice(&line) {
                    Ok(frame) => Got::Frame(frame),
                    // Not JSON: nothing this tool asked for.
                    Err(_) => Got::Nothing,
                }
            }
            Ok(_) => Got::Nothing,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Got::Nothing
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => Got::Nothing,
            Err(_) => Got::Closed,
        }
    }

    /// Reads frames until `until` accepts one (true) or the deadline;
    /// every frame goes through `each` first.
    fn wait(
        &mut self,
        deadline: Instant,
        mut each: impl FnMut(&mut Link, &Value),
        until: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        while Instant::now() < deadline {
            match self.next() {
                Got::Frame(frame) => {
                    each(self, &frame);
                    if until(&frame) {
                        return Some(frame);
                    }
                }
                Got::Nothing => {}
                Got::Closed => return None,
            }
        }
        None
    }
}

/// One chat client of the run.
struct Chatter {
    index: usize,
    options: Options,
    record: Record,
    name: String,
    /// Ports in the order this client tries them.
    port_turn: usize,
}

impl Chatter {
    fn text(&self, seq: usize) -> String {
        format!("chaos{} #{seq}", self.index)
    }

    /// Takes in one frame of ROOM (200 live, 208 backlog or HISTORY).
    fn take(&mut self, link: &mut Link, frame: &Value) {
        let code = frame["code"].as_u64().unwrap_or(0);
        let room = self.options.room.as_str();
        match code {
            200 if frame["message"]["room"] == room => {
                let message = &frame["message"];
                let Some(id) = message["id"].as_u64() else {
                    return;
                };
                self.record.seen.insert(id);
                if !self.record.live.insert(id) {
                    self.record.duplicated += 1;
                }
                link.last_id = link.last_id.max(id);
                let text = message["text"].as_str().unwrap_or_default();
                if message["from"] == self.name.as_str()
                    && let Some(seq) = self.own_seq(text)
                {
                    self.record.sent[seq] = Fate::Acknowledged(id);
                }
                self.record.seen_texts.insert(text.to_owned());
            }
            208 if frame["room"] == room => {
                for message in frame["messages"].as_array().into_iter().flatten() {
                    let Some(id) = message["id"].as_u64() else {
                        continue;
                    };
                    self.record.seen.insert(id);
                    link.last_id = link.last_id.max(id);
                    if let Some(text) = message["text"].as_str() {
                        self.record.seen_texts.insert(text.to_owned());
                    }
                }
            }
            code if code >= 400 => {
                // A refused SAY carries its ref: the sequence number.
                if let Some(seq) = frame["ref"]
                    .as_str()
                    .and_then(|reference| reference.parse::<usize>().ok())
                    && let Some(fate) = self.record.sent.get_mut(seq)
                    && *fate == Fate::Unanswered
                {
                    *fate = Fate::Refused;
                }
            }
            _ => {}
        }
    }

    fn own_seq(&self, text: &str) -> Option<usize> {
        let prefix = format!("chaos{} #", self.index);
        let seq = text.strip_prefix(&prefix)?.parse::<usize>().ok()?;
        (seq < self.record.sent.len()).then_some(seq)
    }

    /// Connects (trying each port in turn until `deadline`), logs in, joins
    /// ROOM and, after a reconnect, catches up with HISTORY.
    fn connect(&mut self, deadline: Instant) -> Option<Link> {
        let first = !self.record.has_joined;
        let last_seen = self.record.seen.iter().copied().max().unwrap_or(0);
        while Instant::now() < deadline {
            let port = self.options.ports[self.port_turn % self.options.ports.len()];
            self.port_turn += 1;
            if let Some(link) = self.login(port, deadline, first, last_seen) {
                self.record.has_joined = true;
                return Some(link);
            }
            // Every port refused or failed: a short pause before the next
            // round, so a cluster that is down is not hammered.
            let left = deadline.saturating_duration_since(Instant::now());
            thread::sleep(Duration::from_millis(200).min(left));
        }
        None
    }

    fn login(&mut self, port: u16, deadline: Instant, first: bool, after: u64) -> Option<Link> {
        let mut link = Link::open(port)?;
        let until = deadline.min(Instant::now() + LOGIN_TIMEOUT);
        if self.record.has_logged_in {
            self.record.reconnects += 1;
            self.name = format!("chaos{}r{}", self.index, self.record.reconnects);
        }
        let name = self.name.clone();
        let room = self.options.room.clone();
        link.send(&json!({"code": 110, "username": name}));
        let answer = link.wait(
            until,
            |_, _| {},
            |frame| frame["code"] == 202 || frame["code"].as_u64() >= Some(400),
        )?;
        if answer["code"] != 202 {
            if answer["code"] == 409 {
                // Held by a node that died before it logged out: until
                // its entries expire, log in under another name.
                self.name = format!("{name}x");
            }
            return None;
        }
        self.record.has_logged_in = true;
        link.send(&json!({"code": 104, "room": room}));
        let backlog = link.wait(
            until,
            |link, frame| self.take(link, frame),
            |frame| frame["code"] == 208 && frame["room"] == room.as_str() || frame["code"] == 503,
        )?;
        if backlog["code"] != 208 {
            return None;
        }
        if first {
            self.record.floor = backlog["messages"]
                .as_array()
                .and_then(|messages| messages.last())
                .and_then(|message| message["id"].as_u64())
                .unwrap_or(0);
            return Some(link);
        }
        // Catch up: every page after the newest id seen before the break.
        let mut after = after;
        loop {
            link.send(&json!({"code": 106, "room": room, "after": after, "limit": HISTORY_PAGE}));
            let page = link.wait(
                until,
                |link, frame| self.take(link, frame),
                |frame| frame["code"] == 208 && frame["room"] == room.as_str(),
            )?;
            let newest = page["messages"]
                .as_array()
                .and_then(|messages| messages.last())
                .and_then(|message| message["id"].as_u64());
            match newest {
                Some(id) if page["more"] == true => after = id,
                _ => return Some(link),
            }
        }
    }

    fn run(mut self, start: &Barrier) -> Record {
        let options = self.options.clone();
        let total = usize::try_from(options.seconds * options.rate).unwrap_or(0);
        self.record.sent = vec![Fate::Unanswered; total];
        let joined_by = Instant::now() + LOGIN_TIMEOUT * 2;
        let mut link = self.connect(joined_by);
        if link.is_none() {
            self.record
                .errors
                .push("could not log in at the start".into());
        }
        start.wait();
        let began = Instant::now();
        let sending_until = began + Duration::from_secs(options.seconds);
        let end = sending_until + Duration::from_secs(options.settle);
        let interval = Duration::from_micros(1_000_000 / options.rate);
        let mut seq = 0;
        while Instant::now() < end {
            let Some(mut current) = link.take() else {
                link = self.connect(end);
                continue;
            };
            let now = Instant::now();
            let due = began + interval.saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX));
            if seq < total && now < sending_until && now >= due {
                let text = self.text(seq);
                let frame = json!({"code": 100, "room": options.room, "message": text, "ref": seq.to_string()});
                seq += 1;
                if !current.send(&frame) {
                    continue; // Broken: reconnect.
                }
            }
            match current.next() {
                Got::Frame(frame) => {
                    self.take(&mut current, &frame);
                    link = Some(current);
                }
                Got::Nothing => link = Some(current),
                Got::Closed => {}
            }
        }
        self.record.is_connected = link.is_some();
        self.record.sent.truncate(seq);
        self.record
    }
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let start = Arc::new(Barrier::new(options.clients));
    let handles: Vec<_> = (0..options.clients)
        .map(|index| {
            let chatter = Chatter {
                index,
                options: options.clone(),
                record: Record::default(),
                name: format!("chaos{index}"),
                port_turn: index,
            };
            let start = Arc::clone(&start);
            thread::spawn(move || chatter.run(&start))
        })
        .collect();
    let records: Vec<Record> = handles
        .into_iter()
        .map(|handle| handle.join().expect("a client thread panicked"))
        .collect();
    let report = report(&options, &records);
    println!("{report}");
    let is_clean =
        report["lost"] == 0 && report["duplicated"] == 0 && report["disconnected_at_end"] == 0;
    std::process::exit(if is_clean { 0 } else { 1 });
}

fn report(options: &Options, records: &[Record]) -> Value {
    let mut acknowledged: BTreeSet<u64> = BTreeSet::new();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut unanswered_texts = Vec::new();
    for (index, record) in records.iter().enumerate() {
        for (seq, fate) in record.sent.iter().enumerate() {
            match fate {
                Fate::Acknowledged(id) => {
                    acknowledged.insert(*id);
                    *counts.entry("acknowledged").or_default() += 1;
                }
                Fate::Refused => *counts.entry("refused").or_default() += 1,
                Fate::Unanswered => {
                    *counts.entry("unanswered").or_default() += 1;
                    unanswered_texts.push(format!("chaos{index} #{seq}"));
                }
            }
        }
    }
    let connected: Vec<&Record> = records
        .iter()
        .filter(|record| record.is_connected)
        .collect();
    let mut lost = 0;
    let mut lost_examples = Vec::new();
    for record in &connected {
        for id in acknowledged.range(record.floor + 1..) {
            if !record.seen.contains(id) {
                lost += 1;
                if lost_examples.len() < 10 {
                    lost_examples.push(*id);
                }
            }
        }
    }
    let delivered: u64 = connected
        .iter()
        .map(|record| {
            acknowledged
                .range(record.floor + 1..)
                .filter(|id| record.seen.contains(id))
                .count() as u64
        })
        .sum();
    // Unanswered, but stored all the same: someone saw it.
    let stored_unanswered = unanswered_texts
        .iter()
        .filter(|text| {
            connected
                .iter()
                .any(|record| record.seen_texts.contains(*text))
        })
        .count();
    json!({
        "clients": options.clients,
        "ports": options.ports,
        "seconds": options.seconds,
        "rate_per_client": options.rate,
        "sent": records.iter().map(|record| record.sent.len() as u64).sum::<u64>(),
        "acknowledged": counts.get("acknowledged").copied().unwrap_or(0),
        "refused": counts.get("refused").copied().unwrap_or(0),
        "unanswered": counts.get("unanswered").copied().unwrap_or(0),
        "unanswered_but_stored": stored_unanswered,
        "delivered": delivered,
        "lost": lost,
        "lost_ids": lost_examples,
        "duplicated": records.iter().map(|record| record.duplicated).sum::<u64>(),
        "reconnects": records.iter().map(|record| record.reconnects).sum::<u64>(),
        "disconnected_at_end": records.len() - connected.len(),
        "errors": records.iter().flat_map(|record| record.errors.clone()).collect::<Vec<_>>(),
    })
}
