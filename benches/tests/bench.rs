//! Smoke test of the `riftbench` load generator: it must run against a real
//! server with tiny numbers and account for every delivery (no timing
//! assertion: performance is measured by the benchmark, not by tests).

use crate::common::Launch;
use std::process::Command;

#[test]
fn riftbench_fanout_runs_and_loses_nothing() {
    // Benchmarks disable flood control, as the docs tell operators to.
    let server = Launch::new().config("flood_rate = 0\n").start();
    let output = Command::new(env!("CARGO_BIN_EXE_riftbench"))
        .args(["fanout", "--port", &server.port().to_string()])
        .args(["--receivers", "3", "--publishers", "2", "--messages", "50"])
        .args(["--size", "64", "--window", "8", "--json"])
        .output()
        .expect("cannot run riftbench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["deliveries"], 300, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["acked"], 100, "{report}");
}

/// Runs riftbench with `args` and returns its one JSON line.
fn riftbench_json(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_riftbench"))
        .args(args)
        .arg("--json")
        .output()
        .expect("cannot run riftbench");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

#[test]
fn riftbench_fanout_reports_the_cpu_of_both_sides() {
    let server = Launch::new().config("flood_rate = 0\n").start();
    let (port, pid) = (server.port().to_string(), server.pid().to_string());
    let report = riftbench_json(&[
        "fanout",
        "--port",
        &port,
        "--pid",
        &pid,
        "--receivers",
        "2",
        "--publishers",
        "1",
        "--messages",
        "20",
    ]);
    assert_eq!(report["deliveries"], 40, "{report}");
    assert!(
        report["generator_cpu_pct"].as_f64().unwrap() >= 0.0,
        "{report}"
    );
    assert!(
        report["server_cpu_pct"].as_f64().unwrap() >= 0.0,
        "{report}"
    );
}

#[test]
fn riftbench_idle_holds_connections_and_reads_the_servers_rss() {
    let server = Launch::new().start();
    let (port, pid) = (server.port().to_string(), server.pid().to_string());
    let report = riftbench_json(&["idle", "--port", &port, "--pid", &pid, "--connections", "5"]);
    assert_eq!(report["connections"], 5, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["rss_after_kib"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn riftbench_connect_counts_every_login() {
    let server = Launch::new().start();
    let port = server.port().to_string();
    let report = riftbench_json(&[
        "connect",
        "--port",
        &port,
        "--connections",
        "20",
        "--window",
        "4",
    ]);
    assert_eq!(report["logins"], 20, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
}

#[test]
fn riftbench_without_a_mode_prints_usage_and_exits_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_riftbench"))
        .output()
        .expect("cannot run riftbench");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage"));
}

#[test]
fn riftbench_fanout_over_websocket_loses_nothing() {
    let server = Launch::new().config("flood_rate = 0\nweb = true\n").start();
    let port = server.port().to_string();
    let report = riftbench_json(&[
        "fanout",
        "--port",
        &port,
        "--websocket",
        "--receivers",
        "3",
        "--publishers",
        "2",
        "--messages",
        "50",
    ]);
    assert_eq!(report["deliveries"], 300, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["acked"], 100, "{report}");
}
