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
    let mut client = Client::json(server.port());
    client.login(name);
    client.expect_code(208);
    client
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
