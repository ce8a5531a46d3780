//! The abuse tool against a real server, with small numbers: garbage, half
//! lines, endless lines, slowloris and floods while a healthy pair chats;
//! floods of empty lines, `\r\n` and telnet NOPs while a probe pair pings;
//! parallel wrong passwords. The pairs must lose nothing and the server must
//! stay up.

use crate::common::{Client, Launch, Server};
use std::process::{Command, Output};

fn stress(port: u16, pid: u32, args: &[&str]) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_riftd-stress"))
        .args(["--port", &port.to_string()])
        .args(["--pid", &pid.to_string()])
        .args(args)
        .output()
        .expect("cannot run riftd-stress");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

#[test]
fn the_healthy_pair_loses_nothing_under_abuse() {
    let server = Server::start();
    let (output, stdout) = stress(
        server.port(),
        server.pid(),
        &["--attacks", "mix", "--seconds", "2", "--connections", "3"],
    );
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("lost: 0"), "{stdout}");
    assert!(stdout.contains("received 8/8"), "{stdout}");
    assert!(stdout.contains("server peak RSS:"), "{stdout}");
    // Still serving afterwards.
    let mut after = Client::json(server.port());
    after.login("after");
}

#[test]
fn a_probe_pair_logs_in_and_is_answered_during_floods_of_empty_lines_crlf_and_telnet_nops() {
    let server = Server::start();
    let (output, stdout) = stress(
        server.port(),
        server.pid(),
        &[
            "--attacks",
            "baseline,empty-lines,crlf,iac-nop",
            "--seconds",
            "2",
            "--connections",
            "2",
        ],
    );
    // Healthy means: set up, and every PING answered, while the flood ran.
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("unhealthy probe pairs: 0"), "{stdout}");
    for phase in ["baseline:", "empty-lines:", "crlf:", "iac-nop:"] {
        assert!(stdout.contains(phase), "{phase} missing: {stdout}");
    }
    assert_eq!(stdout.matches("healthy: yes").count(), 4, "{stdout}");
    let mut after = Client::json(server.port());
    after.login("after");
}

#[test]
fn parallel_wrong_passwords_for_one_name_are_all_answered_and_some_throttled_with_429() {
    let server = Launch::new()
        .config("auth = \"accounts\"\nusers_file = \"users\"\n")
        .file("users", "# riftd users v1\n")
        .start();
    let (output, stdout) = stress(
        server.port(),
        server.pid(),
        &[
            "--attacks",
            "guesses",
            "--seconds",
            "1",
            "--connections",
            "12",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let line = stdout
        .lines()
        .find(|line| line.starts_with("guesses: 12 connection(s)"))
        .unwrap_or_else(|| panic!("no guesses line: {stdout}"));
    let count = |what: &str| -> usize {
        line.split(", ")
            .chain(line.split(": "))
            .find_map(|part| part.strip_suffix(what)?.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no count of {what:?} in {line:?}"))
    };
    assert_eq!(count(" got 401") + count(" got 429"), 12, "{line}");
    // Checks in flight count against the login throttle: parallel guesses
    // are throttled like sequential ones.
    assert!(count(" got 429") > 0, "{line}");
    assert!(stdout.contains("healthy: yes"), "{stdout}");
}
