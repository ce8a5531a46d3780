//! Cluster mode when NATS goes away while nodes run (issue 15): a real
//! `nats-server` (JetStream store in a temporary directory, a fixed port,
//! so it can be killed and started again on both) and two riftd nodes.
//! Every wait is bounded by what `design/cluster.md` documents ("Failures"),
//! and every process is killed on drop, a stopped (`SIGSTOP`) one too.

use crate::common::nats::Nats;
use crate::common::{Client, Launch, Server};
use serde_json::json;
use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A lost link (a closed socket) is told at once: 213 within this.
const PAUSED_AT_ONCE: Duration = Duration::from_secs(3);

/// A frozen server is noticed after three unanswered pings
/// (`riftd::cluster::PING_INTERVAL`, 2 s, so about 6 s, plus one interval's
/// phase): 213 within 8 s; the test allows a margin for a loaded machine.
const PAUSED_WHEN_FROZEN: Duration = Duration::from_secs(12);

/// NATS listening again → 214: the client's reconnection backoff (at most
/// 4 s between attempts), the re-assertion and each room's backfill read;
/// documented as 10 s, with a margin here.
const RESUMED: Duration = Duration::from_secs(15);

/// A 503 while paused comes without asking NATS: well under a request's
/// timeout (`REQUEST_TIMEOUT`, 5 s).
const REFUSED_AT_ONCE: Duration = Duration::from_secs(2);

fn node(url: &str, name: &str) -> Server {
    Launch::new()
        .config(&format!(
            "cluster_url = \"{url}\"\nnode_name = \"{name}\"\nhistory_file = \"history.jsonl\"\n"
        ))
        .start()
}

fn login(server: &Server, name: &str) -> Client {
    Client::logged_in_with_backlog(server.port(), name)
}

fn say(client: &mut Client, text: &str) {
    client.send_json(&json!({"code": 100, "message": text}));
}

/// The next chat message's (id, text).
fn heard(client: &mut Client) -> (u64, String) {
    let frame = client.expect_code(200);
    let message = &frame["message"];
    (
        message["id"].as_u64().unwrap(),
        message["text"].as_str().unwrap().to_owned(),
    )
}

/// While paused: SAY is refused (503, with its ref) at once, the session
/// stays open and PING answers.
fn refused_at_once_and_still_open(client: &mut Client) {
    let asked = Instant::now();
    client.send_json(&json!({"code": 100, "message": "anyone?", "ref": "paused"}));
    let refused = client.expect_code_within(503, REFUSED_AT_ONCE);
    assert_eq!(refused["ref"], "paused", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("paused"),
        "{refused}"
    );
    eprintln!("503 after {:?}", asked.elapsed());
    client.send_json(&json!({"code": 108, "token": "still here"}));
    assert_eq!(client.expect_code(207)["token"], "still here");
}

/// Two users who see each other across the nodes.
fn alice_and_bob(a: &Server, b: &Server) -> (Client, Client) {
    let mut alice = login(a, "alice");
    let bob = login(b, "bob");
    assert_eq!(alice.expect_code(201)["new"], "bob");
    (alice, bob)
}

/// Chat crosses the nodes both ways.
fn chat_crosses_nodes(alice: &mut Client, bob: &mut Client, tag: &str) {
    say(alice, &format!("{tag} from a"));
    assert_eq!(heard(bob).1, format!("{tag} from a"));
    say(bob, &format!("{tag} from b"));
    let mut on_a = heard(alice);
    if on_a.1.ends_with("from a") {
        on_a = heard(alice);
    }
    assert_eq!(on_a.1, format!("{tag} from b"));
}

#[test]
fn nats_killed_and_restarted_pauses_both_nodes_then_resumes_chat_across_them() {
    let mut nats = Nats::start();
    let a = node(&nats.url(), "node-a");
    let b = node(&nats.url(), "node-b");
    let (mut alice, mut bob) = alice_and_bob(&a, &b);
    let mut carol = Client::text(b.port());
    carol.login_text("carol");
    chat_crosses_nodes(&mut alice, &mut bob, "before");

    nats.kill();
    let lost = Instant::now();
    alice.expect_code_within(213, PAUSED_AT_ONCE);
    bob.expect_code_within(213, PAUSED_AT_ONCE);
    carol.expect_line("* chat paused: ");
    eprintln!("213 on both nodes after {:?}", lost.elapsed());
    refused_at_once_and_still_open(&mut alice);
    refused_at_once_and_still_open(&mut bob);
    carol.send("/ping");
    carol.expect_line("* pong");
    // A new login needs the cluster too.
    let mut dave = Client::json(a.port());
    dave.send_json(&json!({"code": 110, "username": "dave"}));
    dave.expect_code_within(503, REFUSED_AT_ONCE);

    nats.restart();
    let back = Instant::now();
    alice.expect_code_within(214, RESUMED);
    bob.expect_code_within(214, RESUMED);
    carol.expect_line("* chat resumed");
    eprintln!(
        "214 on both nodes {:?} after NATS listened again",
        back.elapsed()
    );
    chat_crosses_nodes(&mut alice, &mut bob, "after");
    dave.login("dave");
}

#[test]
fn a_frozen_nats_pauses_chat_within_the_ping_bound_and_sigcont_resumes_it() {
    let nats = Nats::start();
    let a = node(&nats.url(), "node-a");
    let b = node(&nats.url(), "node-b");
    let (mut alice, mut bob) = alice_and_bob(&a, &b);
    let stop = |signal: &str| {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(nats.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}: {status}");
    };
    stop("STOP");
    let frozen = Instant::now();
    alice.expect_code_within(213, PAUSED_WHEN_FROZEN);
    bob.expect_code_within(213, PAUSED_WHEN_FROZEN);
    eprintln!("213 on both nodes {:?} after SIGSTOP", frozen.elapsed());
    refused_at_once_and_still_open(&mut alice);
    stop("CONT");
    let thawed = Instant::now();
    alice.expect_code_within(214, RESUMED);
    bob.expect_code_within(214, RESUMED);
    eprintln!("214 on both nodes {:?} after SIGCONT", thawed.elapsed());
    chat_crosses_nodes(&mut alice, &mut bob, "thawed");
}

#[test]
fn a_node_that_lost_its_link_backfills_what_others_posted_meanwhile_once_and_in_order() {
    let nats = Nats::start();
    let relay = Relay::start(nats.port);
    let a = node(&format!("nats://127.0.0.1:{}", relay.port), "node-a");
    let b = node(&nats.url(), "node-b");
    let (mut alice, mut bob) = alice_and_bob(&a, &b);
    say(&mut bob, "before");
    let before = heard(&mut alice);
    assert_eq!(before.1, "before");
    heard(&mut bob);

    relay.cut();
    alice.expect_code_within(213, PAUSED_AT_ONCE);
    // Node B never lost NATS: its users chat on, stored in the stream.
    let mut posted = Vec::new();
    for n in 0..5 {
        say(&mut bob, &format!("meanwhile {n}"));
        posted.push(heard(&mut bob));
    }
    refused_at_once_and_still_open(&mut alice);

    relay.restore();
    let back = Instant::now();
    // Each message stored meanwhile once, in order, then 214 (a 214
    // before them would be skipped here, and then never come).
    let mut caught_up = Vec::new();
    let first = alice.expect_code_within(200, RESUMED);
    caught_up.push((
        first["message"]["id"].as_u64().unwrap(),
        first["message"]["text"].as_str().unwrap().to_owned(),
    ));
    while caught_up.len() < posted.len() {
        caught_up.push(heard(&mut alice));
    }
    assert_eq!(caught_up, posted);
    alice.expect_code_within(214, RESUMED);
    eprintln!(
        "backfilled and 214 {:?} after the link came back",
        back.elapsed()
    );
    say(&mut bob, "after");
    let after = heard(&mut alice);
    assert_eq!(after.1, "after", "nothing twice after the backfill");
    assert!(after.0 > posted.last().unwrap().0);
    bob.expect_code(200);
    // Alice's session and name were kept throughout.
    say(&mut alice, "back");
    assert_eq!(heard(&mut bob).1, "back");
}

/// `riftd::cluster::NAME_TTL`: a name and its memberships outlive their
/// node's last refresh by this much (then the server's expiry sweep).
const NAME_TTL: Duration = Duration::from_secs(10);

#[test]
fn a_name_claimed_elsewhere_during_a_long_outage_is_told_409_and_closed_on_reconnection() {
    let nats = Nats::start();
    let relay = Relay::start(nats.port);
    let a = node(&format!("nats://127.0.0.1:{}", relay.port), "node-a");
    let b = node(&nats.url(), "node-b");
    let (mut alice, mut bob) = alice_and_bob(&a, &b);
    relay.cut();
    alice.expect_code_within(213, PAUSED_AT_ONCE);
    // Node A cannot refresh: alice's membership expires, and her name
    // with it (names are refreshed first, so they expire first).
    let left = bob.expect_code_within(204, NAME_TTL + Duration::from_secs(3));
    assert_eq!(left["username"], "alice", "{left}");
    // Its name expires about when the membership does; under load a little
    // later: asked again (each try waits for its answer) within the bound.
    let freed_by = Instant::now() + NAME_TTL + Duration::from_secs(3);
    let mut other = loop {
        let mut other = Client::json(b.port());
        other.send_json(&json!({"code": 110, "username": "Alice"}));
        let answer = other.recv_json();
        if answer["code"] == 202 {
            other.expect_code(201);
            break other;
        }
        assert_eq!(answer["code"], 409, "{answer}");
        assert!(Instant::now() < freed_by, "Alice still taken");
    };
    relay.restore();
    let lost = alice.expect_code_within(409, RESUMED);
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .contains("claimed on another server"),
        "{lost}"
    );
    alice.expect_eof();
    // The name stays with its new holder.
    say(&mut other, "mine now");
    assert_eq!(heard(&mut bob).1, "mine now");
}

/// A loopback TCP relay to NATS that a test can cut (every connection
/// through it closed, new ones closed at once) and restore: the node
/// behind it loses its link while the other node keeps its own.
struct Relay {
    port: u16,
    shared: Arc<RelayShared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct RelayShared {
    is_cut: AtomicBool,
    is_stopping: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(RelayShared::default());
        let acceptor_shared = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || {
            let shared = acceptor_shared;
            while !shared.is_stopping.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        // Nothing to accept: look again shortly (the
                        // relay's own pace, not a test's wait).
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(error) => panic!("relay accept: {error}"),
                };
                if shared.is_cut.load(Ordering::SeqCst) {
                    continue; // Dropped: closed at once.
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let mut streams = shared.streams.lock().unwrap();
                streams.push(client.try_clone().unwrap());
                streams.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    fn cut(&self) {
        self.shared.is_cut.store(true, Ordering::SeqCst);
        for stream in self.shared.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.shared.is_cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` into `to` until either closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.is_stopping.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

// Slow or frozen nodes, and huge rooms (issue 15).

/// A node on `url` with more config lines.
fn node_with(url: &str, name: &str, extra: &str) -> Server {
    Launch::new()
        .config(&format!(
            "cluster_url = \"{url}\"\nnode_name = \"{name}\"\nhistory_file = \"history.jsonl\"\n\
             {extra}"
        ))
        .start()
}

/// One counter of a nats-server's `/varz` (its monitoring port).
fn nats_varz(monitor: u16, field: &str) -> u64 {
    nats_get(monitor, "/varz")[field].as_u64().unwrap_or(0)
}

/// A nats-server monitoring endpoint's JSON.
fn nats_get(monitor: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", monitor)).expect("the monitor listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).expect("monitoring answers JSON")
}

/// Room messages (200) until `count` of them carry a text starting with
/// `prefix`, as (id, text); other frames (presence) are skipped. Each
/// frame is waited for within `within`.
fn heard_with_prefix(
    client: &mut Client,
    prefix: &str,
    count: usize,
    within: Duration,
) -> Vec<(u64, String)> {
    heard_and_skipped(client, prefix, count, within).0
}

/// The same, with the codes of the other frames skipped meanwhile.
fn heard_and_skipped(
    client: &mut Client,
    prefix: &str,
    count: usize,
    within: Duration,
) -> (Vec<(u64, String)>, Vec<u64>) {
    let mut heard = Vec::with_capacity(count);
    let mut skipped = Vec::new();
    while heard.len() < count {
        let frame = client.expect_frame_within(within, |_| true);
        if frame["code"] != 200 {
            skipped.push(frame["code"].as_u64().unwrap_or(0));
            continue;
        }
        let text = frame["message"]["text"].as_str().unwrap();
        if text.starts_with(prefix) {
            heard.push((frame["message"]["id"].as_u64().unwrap(), text.to_owned()));
        }
    }
    (heard, skipped)
}

/// Whether the process is stopped (state `T` in `/proc/PID/stat`).
fn is_stopped(pid: u32) -> bool {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    text.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        == Some("T")
}

/// Says `text` and waits for its own copy, the next message it hears;
/// if the node paused meanwhile
/// (a 503 for it: NATS dropped the node, or a check of its delivery path
/// failed while it was stopped), waits for 214 and says it again.
fn say_once_resumed(client: &mut Client, text: &str) {
    for attempt in 0..2 {
        let reference = format!("{text}-{attempt}");
        client.send_json(&json!({"code": 100, "message": text, "ref": reference}));
        let answer = client.expect_frame_within(RESUMED, |frame| {
            frame["code"] == 200 || (frame["code"] == 503 && frame["ref"] == reference.as_str())
        });
        if answer["code"] == 200 {
            // Its own copy is the next message it hears: none twice.
            assert_eq!(answer["message"]["text"], text, "{answer}");
            return;
        }
        client.expect_code_within(214, RESUMED);
    }
    panic!("{text:?} refused twice");
}

/// Messages each of node B's three members says while node A is frozen.
const SAYS_EACH: usize = 100;

/// How long node A stays frozen at least: two of its client's
/// `PING_INTERVAL`s, so it wakes with pings overdue (the fault's length,
/// not a wait for anything).
const FROZEN_FOR: Duration = Duration::from_secs(4);

#[test]
fn a_frozen_node_does_not_slow_the_others_and_catches_up_once_in_order_when_thawed() {
    let monitor = crate::common::free_port();
    let nats = Nats::start_with(&["-m", &monitor.to_string()]);
    let chatty = "flood_rate = 0\n";
    let a = node_with(&nats.url(), "node-a", chatty);
    let b = node_with(&nats.url(), "node-b", chatty);
    let mut on_a = [login(&a, "alice"), login(&a, "ann")];
    let mut on_b = [login(&b, "bob"), login(&b, "bea"), login(&b, "ben")];
    // Everyone is in the room and hears the others' node.
    say(&mut on_b[0], "ready");
    for client in on_a.iter_mut().chain(on_b.iter_mut()) {
        heard_with_prefix(client, "ready", 1, Duration::from_secs(5));
    }

    a.pause();
    let frozen = Instant::now();
    for (n, client) in on_b.iter_mut().enumerate() {
        for k in 0..SAYS_EACH {
            client.send_json(&json!({"code": 100, "message": format!("frozen {n}.{k}")}));
        }
    }
    // Node B is not held back by A: each of its members hears every
    // message (its own copies are the acknowledgements), in one order,
    // while A is still stopped.
    let total = SAYS_EACH * on_b.len();
    let mut posted: Option<Vec<(u64, String)>> = None;
    // Read concurrently: a member that stopped reading would have its
    // input held by node B (its output waits), and so its SAYs.
    let all: Vec<Vec<(u64, String)>> = std::thread::scope(|scope| {
        let readers: Vec<_> = on_b
            .iter_mut()
            .map(|client| {
                scope.spawn(move || {
                    heard_with_prefix(client, "frozen ", total, Duration::from_secs(5))
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|reader| reader.join().expect("a member of node B heard everything"))
            .collect()
    });
    for (n, heard) in all.into_iter().enumerate() {
        let own = heard
            .iter()
            .filter(|(_, text)| text.starts_with(&format!("frozen {n}.")))
            .count();
        assert_eq!(own, SAYS_EACH, "member {n} of node B: acknowledgements");
        assert!(
            heard.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "ids increase"
        );
        match &posted {
            Some(posted) => assert_eq!(&heard, posted, "one order on node B"),
            None => posted = Some(heard),
        }
    }
    let posted = posted.unwrap();
    let chatted = frozen.elapsed();
    assert!(is_stopped(a.pid()), "node A was thawed too early");
    eprintln!("node B: {total} messages said and heard in {chatted:?} while node A was frozen");
    if let Some(left) = FROZEN_FOR.checked_sub(frozen.elapsed()) {
        std::thread::sleep(left);
    }
    let slow_before = nats_varz(monitor, "slow_consumers");

    a.signal("CONT");
    let thawed = Instant::now();
    // Node A's members get everything said meanwhile, once and in order,
    // then chat goes on: alice's message is the next one everyone hears.
    for client in &mut on_a {
        let (caught_up, skipped) =
            heard_and_skipped(client, "frozen ", total, Duration::from_secs(15));
        assert_eq!(caught_up, posted);
        // 213 and 214 here would mean NATS dropped node A meanwhile.
        eprintln!("node A's member: other frames while catching up: {skipped:?}");
    }
    eprintln!("node A caught up {:?} after SIGCONT", thawed.elapsed());
    say_once_resumed(&mut on_a[0], "thawed");
    for client in on_a.iter_mut().skip(1).chain(on_b.iter_mut()) {
        let next = client.expect_code(200)["message"]["text"].clone();
        assert_eq!(next, "thawed", "nothing twice, nothing after");
    }
    eprintln!(
        "NATS slow consumers: {slow_before} before SIGCONT, {} after",
        nats_varz(monitor, "slow_consumers")
    );
}

/// A bridge whose loop takes nothing for a while: its outputs waiting for
/// the loop are capped at `options.outputs`.
struct Behind {
    poll: mio::Poll,
    bridge: riftd::cluster::Bridge,
    next_ticket: u64,
}

impl Behind {
    fn start(nats: &Nats, name: &str, outputs: usize) -> Behind {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let settings = riftd::cluster::ClusterSettings::plain(vec![nats.url()], name);
        let mut options = riftd::cluster::BridgeOptions::new(100);
        options.outputs = outputs;
        // Refreshed memberships are put again, and so seen again: none
        // within the test, so a join dropped stays missing.
        options.name_ttl = Duration::from_secs(120);
        let bridge = riftd::cluster::Bridge::start(settings, options, waker).expect("starts");
        Behind {
            poll,
            bridge,
            next_ticket: 1,
        }
    }

    /// Outputs as they come, waiting for the waker (bounded).
    fn take(&mut self, deadline: Instant) -> Vec<riftd::cluster::Output> {
        let mut events = mio::Events::with_capacity(4);
        loop {
            let outputs: Vec<_> = self.bridge.outputs().collect();
            if !outputs.is_empty() {
                return outputs;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "nothing from the bridge in time");
            self.poll.poll(&mut events, Some(left)).unwrap();
        }
    }

    /// Submits a job and waits for its answer; events meanwhile are
    /// returned behind it, in order.
    fn call(
        &mut self,
        kind: riftd::cluster::JobKind,
    ) -> (riftd::cluster::JobResult, Vec<riftd::cluster::Event>) {
        use riftd::cluster::{Job, Output};
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.bridge.submit(Job { ticket, kind }).expect("room");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut events = Vec::new();
        loop {
            for output in self.take(deadline) {
                match output {
                    Output::Done {
                        ticket: done,
                        result,
                    } if done == ticket => {
                        return (result, events);
                    }
                    Output::Done { ticket, .. } => panic!("an answer to {ticket}"),
                    Output::Event(event) => events.push(event),
                }
            }
        }
    }
}

#[test]
fn a_bridge_whose_loop_falls_behind_sheds_live_messages_keeps_the_newest_and_drops_no_presence() {
    use riftd::cluster::{Change, Event, JobKind, JobResult};
    use riftd::proto::{RoomName, Username};
    const BOUND: usize = 8;
    const POSTED: usize = 60;
    const JOINED: usize = 30;
    let nats = Nats::start();
    let mut slow = Behind::start(&nats, "slow", BOUND);
    let mut other = Behind::start(&nats, "other", 1024);
    let den = RoomName::parse("den").unwrap();
    let (subscribed, _) = slow.call(JobKind::Subscribe { room: den.clone() });
    assert!(
        matches!(subscribed, JobResult::Subscribed { .. }),
        "{subscribed:?}"
    );

    // The slow node's loop takes nothing while the other node posts and
    // its users join.
    let mut posted = Vec::new();
    for n in 0..POSTED {
        let (result, _) = other.call(JobKind::Post {
            room: den.clone(),
            from: Username::parse("bob").unwrap(),
            text: format!("m{n}"),
            ts: 0,
        });
        let JobResult::Posted(message) = result else {
            panic!("{result:?}")
        };
        posted.push(message.id);
    }
    for n in 0..JOINED {
        let (result, _) = other.call(JobKind::Join {
            room: den.clone(),
            user: Username::parse(&format!("user{n}")).unwrap(),
        });
        assert_eq!(result, JobResult::Done);
    }

    // Now it takes: the first messages up to the bound, then the newest
    // kept back, whose `previous` shows the hole (what the hub backfills);
    // every join.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut messages: Vec<(u64, Option<u64>)> = Vec::new();
    let mut joins = 0;
    while messages.last().map(|&(id, _)| id) != posted.last().copied() || joins < JOINED {
        for output in slow.take(deadline) {
            match output {
                riftd::cluster::Output::Event(Event::Message { message, previous }) => {
                    messages.push((message.id, previous));
                }
                riftd::cluster::Output::Event(Event::Presence {
                    change: Change::Joined,
                    ..
                }) => joins += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    eprintln!(
        "{} of {POSTED} live messages handed over, {joins} joins",
        messages.len()
    );
    assert_eq!(joins, JOINED, "no presence change dropped or repeated");
    let ids: Vec<u64> = messages.iter().map(|&(id, _)| id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert!(messages.len() < POSTED, "some were shed: {ids:?}");
    assert_eq!(ids[..BOUND], posted[..BOUND], "the first ones in order");
    let hole = messages
        .windows(2)
        .any(|pair| pair[1].1.is_some_and(|previous| previous > pair[0].0));
    assert!(
        hole,
        "a message after the shed ones names one: {messages:?}"
    );
}

/// `quiet_room_size` of the huge-room test, and its members per node.
const QUIET: usize = 20;
const PER_NODE: usize = 30;

#[test]
fn a_room_joined_by_sixty_over_two_nodes_announces_joins_only_while_it_is_not_quiet() {
    let monitor = crate::common::free_port();
    let nats = Nats::start_with(&["-m", &monitor.to_string()]);
    let quiet = format!("quiet_room_size = {QUIET}\n");
    let a = node_with(&nats.url(), "node-a", &quiet);
    let b = node_with(&nats.url(), "node-b", &quiet);
    // Joins alternate between the nodes, each one complete (its backlog
    // read, so its membership stored) before the next.
    let mut members = Vec::new();
    for n in 0..PER_NODE * 2 {
        let server = if n % 2 == 0 { &a } else { &b };
        members.push(login(server, &format!("user{n}")));
    }
    // After every join: the last member's message closes the count.
    say(members.last_mut().unwrap(), "all in");
    let mut total = 0;
    let mut most = 0;
    for (n, client) in members.iter_mut().enumerate() {
        let mut presence = 0;
        loop {
            let frame = client.expect_frame_within(Duration::from_secs(10), |_| true);
            match frame["code"].as_u64() {
                Some(201 | 204) if frame["room"] == "lobby" => presence += 1,
                Some(200) if frame["message"]["text"] == "all in" => break,
                _ => {}
            }
        }
        eprintln!("user{n}: {presence} presence frame(s)");
        total += presence;
        most = most.max(presence);
    }
    let joins = PER_NODE * 2;
    // Each join is announced to those already in while the room has at
    // most QUIET members (0 + 1 + ... + QUIET - 1 in all), then to nobody
    // (the joiner's own 201 is read by `login`). Without the rule, or with
    // it counting one node's members only, it grows as joins²: 1770 here.
    let bound = QUIET * QUIET + 2 * joins;
    eprintln!(
        "{total} presence frames for {joins} joins (the rule gives {}; bound {bound})",
        QUIET * (QUIET - 1) / 2
    );
    assert!(total <= bound, "{total} presence frames for {joins} joins");
    // Between the nodes: each membership write (a join, or a refresh) is
    // delivered once to each node's watch of the room, so what the
    // bridges handle grows with members × nodes, not members².
    let jsz = nats_get(monitor, "/jsz?consumers=true&accounts=true");
    let members_stream = jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
        .find(|stream| stream["name"] == "KV_riftd_members")
        .expect("the members bucket's stream");
    let writes = members_stream["state"]["last_seq"].as_u64().unwrap();
    let watches = members_stream["consumer_detail"].as_array().unwrap();
    let delivered: u64 = watches
        .iter()
        .map(|watch| watch["delivered"]["consumer_seq"].as_u64().unwrap())
        .sum();
    eprintln!(
        "{writes} membership writes; {delivered} presence events delivered to {} watch(es)",
        watches.len()
    );
    assert!(watches.len() >= 2, "a watch per node: {watches:?}");
    assert!(writes >= joins as u64 && delivered <= 2 * writes);
    assert!(most <= QUIET + 2, "one member heard {most} joins");
}

/// How long NATS waits for a stopped reader before it drops it as a slow
/// consumer, in the next test (nats-server's default is 10 s).
const WRITE_DEADLINE: &str = "2s";

#[test]
fn a_node_frozen_past_natss_write_deadline_is_dropped_as_a_slow_consumer_and_backfills_once_in_order()
 {
    let monitor = crate::common::free_port();
    let conf = Launch::new();
    let conf_path = conf.dir().join("nats.conf");
    std::fs::write(
        &conf_path,
        format!("write_deadline: \"{WRITE_DEADLINE}\"\n"),
    )
    .unwrap();
    let nats = Nats::start_with(&[
        "-m",
        &monitor.to_string(),
        "-c",
        conf_path.to_str().unwrap(),
    ]);
    let chatty = "flood_rate = 0\n";
    let a = node_with(&nats.url(), "node-a", chatty);
    let b = node_with(&nats.url(), "node-b", chatty);
    let mut alice = login(&a, "alice");
    let mut bob = login(&b, "bob");
    say(&mut bob, "ready");
    heard_with_prefix(&mut alice, "ready", 1, Duration::from_secs(5));

    a.pause();
    // More than the sockets between NATS and node A hold (about 6 MB), in
    // windows of 100, each acknowledged before the next.
    let pad = "x".repeat(4000);
    let mut posted = Vec::new();
    for window in 0..15 {
        for k in 0..100 {
            say(&mut bob, &format!("frozen {window}.{k} {pad}"));
        }
        posted.extend(heard_with_prefix(
            &mut bob,
            "frozen ",
            100,
            Duration::from_secs(5),
        ));
    }
    // NATS gives up on the stopped node once a write to it has waited
    // WRITE_DEADLINE (polled: its own state, not a guess at a delay).
    let deadline = Instant::now() + Duration::from_secs(15);
    while nats_varz(monitor, "slow_consumers") == 0 {
        assert!(Instant::now() < deadline, "NATS never dropped node A");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(is_stopped(a.pid()));

    a.signal("CONT");
    let thawed = Instant::now();
    // Node A reads what reached it, finds the connection closed (213),
    // reconnects and backfills: every message once, in order, then 214.
    let (caught_up, skipped) = heard_and_skipped(&mut alice, "frozen ", posted.len(), RESUMED);
    assert!(caught_up == posted, "once each, in order");
    assert!(skipped.contains(&213), "{skipped:?}");
    alice.expect_code_within(214, RESUMED);
    eprintln!(
        "node A dropped as a slow consumer: caught up and 214 {:?} after SIGCONT",
        thawed.elapsed()
    );
    say_once_resumed(&mut alice, "thawed");
    assert_eq!(bob.expect_code(200)["message"]["text"], "thawed");
}
