//! Cluster mode on a NATS cluster of three servers, with the stream and the
//! buckets replicated three times (`cluster_replicas = 3`, issue 15): one
//! NATS server after another is killed (`kill -9`) and started again while
//! two riftd nodes chat. Every message its sender saw acknowledged reaches
//! the other node's member exactly once, in id order; chat goes on after at
//! most a short pause (a SAY refused meanwhile, 503, is sent again).

use crate::common::nats::NatsCluster;
use crate::common::{Client, Launch, Server};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long chat may pause while JetStream elects new leaders and the
/// nodes reconnect: a few seconds is expected, this is the test's bound.
const PAUSE_BOUND: Duration = Duration::from_secs(45);

fn node(nats: &NatsCluster, name: &str) -> Server {
    Launch::new()
        .config(&format!(
            "cluster_url = [{}]\nnode_name = \"{name}\"\ncluster_replicas = 3\n\
             history_file = \"history.jsonl\"\nflood_rate = 0\n",
            nats.toml_urls()
        ))
        .start()
}

fn login(server: &Server, name: &str) -> Client {
    Client::logged_in_with_backlog(server.port(), name)
}

/// Says `text` until the node acknowledges it (the sender's own copy,
/// 200) and returns its id; a 503 (the cluster paused) is retried.
fn say_until_acknowledged(client: &mut Client, text: &str) -> u64 {
    let deadline = Instant::now() + PAUSE_BOUND;
    let mut attempt = 0;
    loop {
        assert!(Instant::now() < deadline, "{text:?} never acknowledged");
        attempt += 1;
        let reference = format!("{attempt}");
        client.send_json(&json!({"code": 100, "message": text, "ref": reference}));
        let answer = client.expect_frame_within(PAUSE_BOUND, |frame: &Value| {
            (frame["code"] == 200 && frame["message"]["text"] == text)
                || (frame["code"].as_u64() >= Some(400) && frame["ref"] == reference.as_str())
        });
        if answer["code"] == 200 {
            return answer["message"]["id"].as_u64().expect("an id");
        }
        assert_eq!(answer["code"], 503, "{answer}");
        // Paced, not spun: the cluster is electing or reconnecting.
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn killing_any_one_of_three_nats_servers_loses_no_acknowledged_message() {
    let mut nats = NatsCluster::start(3);
    let a = node(&nats, "node-a");
    let b = node(&nats, "node-b");
    let mut alice = login(&a, "alice");
    let mut bob = login(&b, "bob");
    let mut acknowledged = vec![say_until_acknowledged(&mut alice, "all three up")];
    for down in 0..3 {
        nats.kill(down);
        for round in 0..3 {
            let text = format!("nats-{down} down, {round}");
            acknowledged.push(say_until_acknowledged(&mut alice, &text));
        }
        nats.restart(down);
        let text = format!("nats-{down} back");
        acknowledged.push(say_until_acknowledged(&mut alice, &text));
    }
    // Bob, on the other node, gets every acknowledged message once and in
    // id order; messages refused (503) but stored anyway may come too.
    let wanted: BTreeSet<u64> = acknowledged.iter().copied().collect();
    assert_eq!(
        wanted.len(),
        acknowledged.len(),
        "ids repeat: {acknowledged:?}"
    );
    let mut heard = Vec::new();
    let deadline = Instant::now() + PAUSE_BOUND;
    while !wanted.iter().all(|id| heard.contains(id)) {
        assert!(
            Instant::now() < deadline,
            "bob missed {:?}",
            wanted
                .iter()
                .filter(|id| !heard.contains(id))
                .collect::<Vec<_>>()
        );
        let message = bob.expect_code_within(200, PAUSE_BOUND)["message"].clone();
        if message["from"] == "alice" {
            heard.push(message["id"].as_u64().expect("an id"));
        }
    }
    let mut in_order = heard.clone();
    in_order.sort_unstable();
    in_order.dedup();
    assert_eq!(heard, in_order, "out of order or repeated");
}
