//! Smoke test of the `riftbench` load generator: it must run against a real
//! server with tiny numbers and account for every delivery (no timing
//! assertion: performance is measured by the benchmark, not by tests).

#[allow(dead_code)]
mod common;

use common::Launch;
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

#[test]
fn riftbench_without_a_mode_prints_usage_and_exits_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_riftbench"))
        .output()
        .expect("cannot run riftbench");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage"));
}
