//! `reuse_port` (issue 15, "More cores on one machine"): two cluster nodes
//! on one real `nats-server` bound to the same loopback port with
//! SO_REUSEPORT, the kernel spreading connections over both, and one chat
//! across them; `reuse_port` refused without `cluster_url`; and a port that
//! is not shared still refused to a second riftd.
//!
//! Which node a connection landed on is read from the nodes' own logs
//! (`login NAME`, written before the 202 is sent), up to a SIGHUP's
//! `SIGHUP: …` line each node writes after them: a bounded wait on what
//! the server writes, no sleep.

use crate::common::nats::Nats;
use crate::common::{Client, Launch, Server, free_port};
use serde_json::json;
use std::collections::BTreeSet;

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
