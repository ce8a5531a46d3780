//! The abuse tool against a real server, with small numbers: garbage, half
//! lines, endless lines, slowloris and floods while a healthy pair chats;
//! the pair must lose nothing and the server must stay up.

#[allow(dead_code)]
mod common;

use common::{Client, Server};
use std::process::Command;

#[test]
fn the_healthy_pair_loses_nothing_under_abuse() {
    let server = Server::start();
    let output = Command::new(env!("CARGO_BIN_EXE_riftd-stress"))
        .args(["--port", &server.port().to_string()])
        .args(["--seconds", "2", "--connections", "3"])
        .args(["--pid", &server.pid().to_string()])
        .output()
        .expect("cannot run riftd-stress");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("lost: 0"), "{stdout}");
    assert!(stdout.contains("received 8/8"), "{stdout}");
    assert!(stdout.contains("server peak RSS:"), "{stdout}");
    // Still serving afterwards.
    let mut after = Client::json(server.port());
    after.login("after");
}
