//! riftd-chaos against a real cluster (one nats-server, two nodes), with a
//! real fault: node B is killed with SIGKILL once clients are on it. Its
//! clients reconnect to node A and catch up; nothing acknowledged may be
//! lost and nothing sent twice.

use crate::common::nats::Nats;
use crate::common::{Launch, Server};
use serde_json::Value;
use std::process::{Command, Stdio};

fn node(nats: &Nats, name: &str) -> Server {
    Launch::new()
        .config(&format!(
            "cluster_url = \"{}\"\nnode_name = \"{name}\"\nhistory_file = \"h.jsonl\"\nflood_rate = 0\n",
            nats.url()
        ))
        .start()
}

#[test]
fn riftd_chaos_loses_nothing_acknowledged_when_a_node_is_killed() {
    let nats = Nats::start();
    let a = node(&nats, "chaos-a");
    let mut b = node(&nats, "chaos-b");
    let chaos = Command::new(env!("CARGO_BIN_EXE_riftd-chaos"))
        .args(["--ports", &format!("{},{}", a.port(), b.port())])
        .args([
            "--clients",
            "4",
            "--seconds",
            "3",
            "--rate",
            "10",
            "--settle",
            "4",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("riftd-chaos starts");
    // Clients 1 and 3 start on node B: kill it once both logged in there.
    b.wait_for_log("login chaos");
    b.wait_for_log("login chaos");
    b.signal("KILL");
    let output = chaos.wait_with_output().expect("riftd-chaos ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("not a JSON report ({error}): {stdout}"));
    assert!(output.status.success(), "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert!(report["reconnects"].as_u64() >= Some(1), "{report}");
    assert!(report["acknowledged"].as_u64() > Some(0), "{report}");
    assert!(report["delivered"].as_u64() > Some(0), "{report}");
}
