//! `reuse_port` (issue 15, "More cores on one machine"): two cluster nodes
//! on one real `nats-server` bound to the same loopback port with
//! SO_REUSEPORT, the kernel spreading connections over both, and one chat
//! across them; `reuse_port` refused without `cluster_url`; a port that is
//! not shared still refused to a second riftd; and under socket activation
//! (`systemd-socket-activate`) the passed socket used as it comes.
//!
//! Which node a connection landed on is read from the nodes' own logs
//! (`login NAME`, written before the 202 is sent), up to a SIGHUP's
//! `SIGHUP: …` line each node writes after them: a bounded wait on what
//! the server writes, no sleep.

use crate::common::nats::Nats;
use crate::common::{Client, Launch, READ_TIMEOUT, Server, forward_lines, free_port};
use serde_json::json;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Connections opened per round: with two nodes, all of them landing on
/// one node has a chance of 2 in 2^16.
const CLIENTS_PER_ROUND: usize = 16;
/// Rounds at most before giving up on the kernel sending any to a node.
const ROUNDS: usize = 4;

/// A cluster node on `nats` sharing `127.0.0.1:port` (history off).
fn shared_node(nats: &Nats, name: &str, port: u16) -> Server {
    Launch::new()
        .config(&format!(
            "cluster_url = \"{}\"\nnode_name = \"{name}\"\nreuse_port = true\n",
            nats.url()
        ))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .start()
}

/// The users `server` logged in so far: SIGHUP, then its log up to the
/// reload's line, which it writes after every earlier login's.
fn logged_in_on(server: &mut Server) -> BTreeSet<String> {
    server.signal("HUP");
    server.wait_for_log("SIGHUP: ");
    server
        .log
        .iter()
        .filter_map(|line| line.rsplit_once(" login ").map(|(_, name)| name.to_owned()))
        .collect()
}

#[test]
fn two_nodes_with_reuse_port_share_one_port_and_a_say_reaches_clients_on_both() {
    let nats = Nats::start();
    let port = free_port();
    let mut a = shared_node(&nats, "node-a", port);
    let mut b = shared_node(&nats, "node-b", port);
    assert_eq!((a.port(), b.port()), (port, port));
    let mut clients: Vec<(String, Client)> = Vec::new();
    let (on_a, on_b) = loop {
        for _ in 0..CLIENTS_PER_ROUND {
            let name = format!("user{}", clients.len());
            let mut client = Client::json(port);
            client.login(&name);
            clients.push((name, client));
        }
        let (on_a, on_b) = (logged_in_on(&mut a), logged_in_on(&mut b));
        // Each client is on exactly one node.
        let all: BTreeSet<String> = clients.iter().map(|(name, _)| name.clone()).collect();
        assert!(on_a.is_disjoint(&on_b), "{on_a:?} and {on_b:?}");
        assert_eq!(
            on_a.union(&on_b).cloned().collect::<BTreeSet<_>>(),
            all,
            "logins on node-a {on_a:?}, node-b {on_b:?}"
        );
        if !on_a.is_empty() && !on_b.is_empty() {
            break (on_a, on_b);
        }
        assert!(
            clients.len() < CLIENTS_PER_ROUND * ROUNDS,
            "the kernel gave every one of {} connections to one node",
            clients.len()
        );
    };
    // One chat: ROOMS on any node counts every client in the lobby.
    let everyone = clients.len();
    let (_, asker) = &mut clients[0];
    asker.send_json(&json!({"code": 107}));
    assert_eq!(
        asker.expect_code(212)["rooms"],
        json!([{"name": "lobby", "users": everyone}])
    );
    // One sender on each node; every client, wherever it landed, hears both.
    let sender_on = |names: &BTreeSet<String>| {
        clients
            .iter()
            .position(|(name, _)| names.contains(name))
            .expect("a client on the node")
    };
    let (from_a, from_b) = (sender_on(&on_a), sender_on(&on_b));
    for (index, text) in [(from_a, "said on node-a"), (from_b, "said on node-b")] {
        let (_, sender) = &mut clients[index];
        sender.send_json(&json!({"code": 100, "message": text}));
    }
    for (name, client) in &mut clients {
        let heard: BTreeSet<String> = (0..2)
            .map(|_| {
                let frame = client.expect_code(200);
                frame["message"]["text"].as_str().unwrap().to_owned()
            })
            .collect();
        let expected: BTreeSet<String> = ["said on node-a", "said on node-b"]
            .map(str::to_owned)
            .into();
        assert_eq!(
            heard,
            expected,
            "{name} (on node-a: {})",
            on_a.contains(name)
        );
    }
}

#[test]
fn reuse_port_without_cluster_url_exits_2_and_says_why() {
    let finished = Launch::new()
        .config("reuse_port = true\n")
        .args(&["--listen", "127.0.0.1:0"])
        .run_to_exit();
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    for needle in ["`reuse_port`", "needs cluster_url", "separate chats"] {
        assert!(
            finished.stderr.contains(needle),
            "no {needle:?}: {}",
            finished.stderr
        );
    }
    assert!(
        !finished.stderr.contains("listening on"),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_port_riftd_holds_without_reuse_port_is_refused_to_a_second_riftd_with_or_without_it() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let first = Launch::new().args(&["--listen", &address]).start();
    // A plain second riftd, and a cluster node with reuse_port (it binds
    // before it reaches NATS, so none is needed): the kernel shares a port
    // only between sockets that all set SO_REUSEPORT.
    let unused_nats = format!("nats://127.0.0.1:{}", free_port());
    let second_configs = [
        String::new(),
        format!("cluster_url = \"{unused_nats}\"\nreuse_port = true\n"),
    ];
    for config in second_configs {
        let finished = Launch::new()
            .config(&config)
            .args(&["--listen", &address])
            .run_to_exit();
        assert_eq!(
            finished.status.code(),
            Some(1),
            "{config:?}: {}",
            finished.stderr
        );
        let refusal = format!("cannot listen on {address}");
        assert!(
            finished.stderr.contains(&refusal) && finished.stderr.contains("in use"),
            "{config:?}: {}",
            finished.stderr
        );
    }
    // The first one still serves.
    let mut client = Client::json(first.port());
    client.login("still");
}

/// How long systemd-socket-activate, then riftd (connecting to NATS), may
/// take to report that they listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A process killed and reaped when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `timeout` for a line of `lines` containing `needle`; every
/// line read goes to `log`.
fn wait_line(lines: &Receiver<String>, needle: &str, timeout: Duration, log: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                log.push(line);
                if found {
                    return;
                }
            }
            Err(error) => panic!("no line with {needle:?} ({error}); log: {log:#?}"),
        }
    }
}

#[test]
fn under_socket_activation_reuse_port_sets_nothing_and_warns_about_an_unshared_passed_socket() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("riftd.toml");
    std::fs::write(
        &config,
        format!("cluster_url = \"{}\"\nreuse_port = true\n", nats.url()),
    )
    .unwrap();
    let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // systemd-socket-activate binds without SO_REUSEPORT (a socket unit
    // without ReusePort=yes), then execs riftd on the first connection.
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(address.to_string())
        .arg("--fdname=plain")
        .arg(env!("CARGO_BIN_EXE_riftd"))
        .arg("--config")
        .arg(&config)
        .args(["--history-file", ""])
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run systemd-socket-activate (Debian package systemd)");
    let lines = forward_lines(child.stderr.take().expect("stderr is piped"));
    let _activated = Killed(child);
    let mut log = Vec::new();
    wait_line(&lines, "Listening on ", START_TIMEOUT, &mut log);
    let mut client = Client::connect(address);
    wait_line(
        &lines,
        "socket activation: systemd passed 1 plain",
        READ_TIMEOUT,
        &mut log,
    );
    wait_line(
        &lines,
        &format!("reuse_port = true, but systemd passed {address} without SO_REUSEPORT"),
        READ_TIMEOUT,
        &mut log,
    );
    wait_line(&lines, "listening on", START_TIMEOUT, &mut log);
    // riftd bound nothing itself, and serves the passed socket.
    assert!(
        !log.iter().any(|line| line.contains("share their ports")),
        "{log:#?}"
    );
    assert_eq!(client.recv_json()["code"], 210);
    client.login("activated");
}
