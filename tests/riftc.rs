//! riftc end to end: the real `riftc` binary in a real terminal (`tmux`),
//! against a real riftd started by the test, and in line mode through
//! pipes (issue 13), and given two cluster nodes on a real `nats-server`,
//! failing over when its node dies (issue 15). Each test waits for what the
//! screen shows, with a deadline; none sleeps for a fixed time.

use crate::common;

use common::nats::Nats;
use common::{Client, Launch, Server};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long anything may take to appear on a screen.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(15);

fn riftc_binary() -> &'static str {
    env!("CARGO_BIN_EXE_riftc")
}

/// One riftc in its own tmux server (a private socket), in a terminal of a
/// fixed size, with its state and config directories in `home`.
struct Terminal {
    socket: String,
    home: PathBuf,
}

impl Terminal {
    fn start(home: &Path, args: &[&str]) -> Terminal {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let socket = format!(
            "riftc-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        std::fs::create_dir_all(home).unwrap();
        let mut command = vec![
            format!("HOME={}", home.display()),
            format!("XDG_CONFIG_HOME={}", home.join("config").display()),
            format!("XDG_STATE_HOME={}", home.join("state").display()),
            "TERM=xterm-256color".to_owned(),
            riftc_binary().to_owned(),
        ];
        command.extend(args.iter().map(|arg| (*arg).to_owned()));
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "100",
                "-y",
                "30",
                "env",
            ])
            .args(&command)
            .status()
            .expect("tmux is installed (.ci/run installs it)");
        assert!(status.success(), "tmux new-session failed");
        Terminal {
            socket,
            home: home.to_owned(),
        }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// The screen as text.
    fn screen(&self) -> String {
        let output = self.tmux(&["capture-pane", "-p", "-t", "0"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the screen shows `needle`; returns the screen.
    fn wait_for(&self, needle: &str) -> String {
        self.wait_until(needle, |screen| screen.contains(needle))
    }

    fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        self.wait_until_within(SCREEN_TIMEOUT, what, done)
    }

    fn wait_until_within(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        let output = self.tmux(&["send-keys", "-t", "0", "-l", text]);
        assert!(output.status.success());
    }

    /// Presses keys by tmux name (`Enter`, `PPage`, `C-n`, `M-2`).
    fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        let output = self.tmux(&args);
        assert!(output.status.success());
    }

    /// Types a line and sends it.
    fn enter(&self, line: &str) {
        self.type_text(line);
        self.press(&["Enter"]);
    }

    /// Waits until `name` is logged in with #lobby current (the status
    /// line, the second to last row, says so).
    fn wait_online(&self, name: &str) -> String {
        self.wait_status(SCREEN_TIMEOUT, &format!("| {name} | connected"))
    }

    /// Waits until the status line (the second to last row) contains
    /// `status` with #lobby current.
    fn wait_status(&self, timeout: Duration, status: &str) -> String {
        self.wait_until_within(timeout, &format!("{status:?} in #lobby"), |screen| {
            status_line(screen)
                .is_some_and(|line| line.contains(status) && line.trim_end().ends_with("#lobby"))
        })
    }

    fn is_running(&self) -> bool {
        self.tmux(&["has-session"]).status.success()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = &self.home;
    }
}

/// The status line: the second to last row of the screen.
fn status_line(screen: &str) -> Option<&str> {
    let rows: Vec<&str> = screen.trim_end().lines().collect();
    rows.len().checked_sub(2).map(|at| rows[at])
}

fn address(server: &Server) -> String {
    format!("127.0.0.1:{}", server.port())
}

#[test]
fn two_people_chat_and_see_each_other() {
    let server = Launch::new().config("flood_rate = 0\n").start();
    let dir = tempfile::tempdir().unwrap();
    let alice = Terminal::start(
        &dir.path().join("alice"),
        &["--user", "alice", &address(&server)],
    );
    alice.wait_online("alice");
    let bob = Terminal::start(
        &dir.path().join("bob"),
        &["--user", "bob", &address(&server)],
    );
    bob.wait_online("bob");
    bob.enter("hello alice, how are you?");
    alice.wait_for("hello alice, how are you?");
    alice.enter("fine, thanks bob");
    let screen = bob.wait_for("fine, thanks bob");
    assert!(
        screen.contains("lobby"),
        "no room in the sidebar:\n{screen}"
    );
    // Quitting restores the terminal and ends riftc.
    alice.enter("/quit");
    alice.wait_until("riftc to exit", |_| !alice.is_running());
    bob.wait_for("alice quit");
}

#[test]
fn a_private_message_opens_its_own_buffer() {
    let server = Launch::new().config("flood_rate = 0\n").start();
    let dir = tempfile::tempdir().unwrap();
    let alice = Terminal::start(
        &dir.path().join("alice"),
        &["--user", "alice", &address(&server)],
    );
    alice.wait_online("alice");
    let mut bob = Client::json(server.port());
    bob.login("bob");
    bob.send_json(&json!({"code": 102, "to": "alice", "message": "psst, a secret"}));
    // The DM gets a buffer of its own in the sidebar, not the room's pane.
    let screen = alice.wait_for("3 bob");
    assert!(
        !screen.contains("psst, a secret"),
        "shown in the room:\n{screen}"
    );
    alice.press(&["C-n"]);
    alice.wait_for("psst, a secret");
}

#[test]
fn scrolling_back_fetches_older_history_from_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new()
        .config("flood_rate = 0\nhistory_backlog = 5\n")
        .arg("--history-file")
        .arg(dir.path().join("history.jsonl").to_str().unwrap())
        .start();
    let mut bob = Client::json(server.port());
    bob.login("bob");
    for index in 1..=60 {
        bob.send_json(&json!({"code": 100, "message": format!("message number {index:02}")}));
        bob.expect_code(200);
    }
    let alice = Terminal::start(
        &dir.path().join("alice"),
        &["--user", "alice", &address(&server)],
    );
    let screen = alice.wait_for("message number 60");
    assert!(!screen.contains("message number 10"), "{screen}");
    for _ in 0..6 {
        alice.press(&["PPage"]);
    }
    alice.wait_until("message number 10 after PgUp", |screen| {
        if screen.contains("message number 10") {
            return true;
        }
        alice.press(&["PPage"]);
        false
    });
}

#[test]
fn after_a_restart_the_messages_sent_meanwhile_are_shown_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    let port = common::free_port();
    let launch = || {
        Launch::new()
            .config("flood_rate = 0\n")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--history-file")
            .arg(history.to_str().unwrap())
            .start()
    };
    let mut server = launch();
    let alice = Terminal::start(
        &dir.path().join("alice"),
        &["--user", "alice", &format!("127.0.0.1:{port}")],
    );
    alice.wait_online("alice");
    let mut bob = Client::json(port);
    bob.login("bob");
    bob.send_json(&json!({"code": 100, "message": "before the restart"}));
    alice.wait_for("before the restart");
    drop(bob);
    server.signal("TERM");
    server.wait_exit();
    let _restarted = launch();
    // Said before alice's client is back (it waits at least a second).
    let mut carol = Client::json(port);
    carol.login("carol");
    for index in 1..=3 {
        carol.send_json(&json!({"code": 100, "message": format!("while you were away {index}")}));
        carol.expect_code(200);
    }
    let screen = alice.wait_for("while you were away 3");
    for needle in [
        "before the restart",
        "while you were away 1",
        "while you were away 2",
        "while you were away 3",
    ] {
        assert_eq!(screen.matches(needle).count(), 1, "{needle}:\n{screen}");
    }
}

#[test]
fn an_escape_sequence_from_someone_else_is_shown_escaped() {
    let server = Launch::new().config("flood_rate = 0\n").start();
    let dir = tempfile::tempdir().unwrap();
    let alice = Terminal::start(
        &dir.path().join("alice"),
        &["--user", "alice", &address(&server)],
    );
    alice.wait_online("alice");
    let mut mallory = Client::json(server.port());
    mallory.login("mallory");
    mallory.send_json(
        &json!({"code": 100, "message": "look \u{1b}[2J\u{1b}]0;pwned\u{7} here \u{202e}gnp.exe"}),
    );
    let screen = alice.wait_for("gnp.exe");
    assert!(screen.contains("look"), "{screen}");
    // The clear-screen did not happen (the earlier lines are still there)
    // and the sequences are visible as text.
    assert!(screen.contains("mallory"), "{screen}");
    assert!(
        screen.contains("^[")
            || screen.contains("U+001B")
            || screen.contains("\\x1b")
            || screen.contains("\\u{1b}"),
        "the escape is not shown:\n{screen}"
    );
    assert!(
        screen.contains("202E") || screen.contains("202e"),
        "{screen}"
    );
}

/// Runs riftc in line mode with `input` on stdin; returns its exit status
/// and standard output.
fn line_mode(
    args: &[&str],
    input: &str,
    home: &Path,
) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(riftc_binary())
        .args(args)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("riftc runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let deadline = Instant::now() + SCREEN_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("riftc in line mode did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn line_mode_sends_each_line_and_exits_once_the_server_relayed_them() {
    let server = Launch::new().config("flood_rate = 0\n").start();
    let mut watcher = Client::json(server.port());
    watcher.login("watcher");
    watcher.send_json(&json!({"code": 104, "room": "ops"}));
    watcher.expect_code(201);
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) = line_mode(
        &["--user", "ci", "--room", "ops", &address(&server)],
        "deploy done\nsecond line\n",
        dir.path(),
    );
    assert!(status.success(), "{status}: {stderr}\n{stdout}");
    for text in ["deploy done", "second line"] {
        let message = watcher.expect_code(200);
        assert_eq!(message["message"]["text"], text, "{message}");
        assert_eq!(message["message"]["room"], "ops");
        assert!(stdout.contains(text), "{stdout}");
    }
}

#[test]
fn line_mode_json_prints_one_json_object_per_line() {
    let server = Launch::new().config("flood_rate = 0\n").start();
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) = line_mode(
        &["--json", "--user", "ci", &address(&server)],
        "hello as json\n",
        dir.path(),
    );
    assert!(status.success(), "{status}: {stderr}");
    let mut saw_message = false;
    for line in stdout.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?}: {error}"));
        saw_message |= line.contains("hello as json") && value.is_object();
    }
    assert!(saw_message, "{stdout}");
}

#[test]
fn line_mode_exits_non_zero_when_the_name_is_taken() {
    let server = Launch::new().start();
    let mut holder = Client::json(server.port());
    holder.login("ci");
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) =
        line_mode(&["--user", "ci", &address(&server)], "x\n", dir.path());
    assert!(!status.success(), "{stdout}");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("ci") && said.to_lowercase().contains("taken"),
        "{said}"
    );
}

#[test]
fn line_mode_speaks_tls_to_a_self_signed_server_and_logs_in_with_a_password_file() {
    let certificate = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let mut server = Launch::new()
        .config(
            "auth = \"password\"\npassword_file = \"secret\"\nflood_rate = 0\n\
             listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
             tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
        )
        .file("secret", "s3cret\n")
        .file("cert.pem", &certificate.cert.pem())
        .file("key.pem", &certificate.signing_key.serialize_pem())
        .start();
    let line = server.wait_for_log("(TLS)");
    let tls_port = line
        .rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches(" (TLS)").trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no TLS port in {line:?}"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), certificate.cert.pem()).unwrap();
    std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
    let mut watcher = Client::json(server.port());
    watcher.send_json(&json!({"code": 110, "username": "watcher"}));
    watcher.expect_code(211);
    watcher.send_json(&json!({"code": 111, "password": "s3cret"}));
    watcher.expect_code(202);
    let ca = dir.path().join("ca.pem");
    let password = dir.path().join("password");
    let server_address = format!("localhost:{tls_port}");
    let args = [
        "--user",
        "ci",
        "--ca",
        ca.to_str().unwrap(),
        "--password-file",
        password.to_str().unwrap(),
        &server_address,
    ];
    let (status, stdout, stderr) = line_mode(&args, "sent over TLS\n", dir.path());
    assert!(status.success(), "{status}: {stderr}\n{stdout}");
    let message = loop {
        let frame = watcher.recv_json();
        if frame["code"] == 200 {
            break frame;
        }
    };
    assert_eq!(message["message"]["text"], "sent over TLS");
    assert_eq!(message["message"]["from"], "ci");

    // The wrong password is a clear failure, not a retry loop.
    std::fs::write(&password, "wrong\n").unwrap();
    let (status, stdout, stderr) = line_mode(&args, "never sent\n", dir.path());
    assert!(!status.success(), "{stdout}");
    assert!(
        format!("{stdout}{stderr}")
            .to_lowercase()
            .contains("password"),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_restarted_riftc_shows_what_was_said_while_it_was_not_running_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new()
        .config("flood_rate = 0\n")
        .arg("--history-file")
        .arg(dir.path().join("history.jsonl").to_str().unwrap())
        .start();
    let home = dir.path().join("alice");
    let alice = Terminal::start(&home, &["--user", "alice", &address(&server)]);
    alice.wait_online("alice");
    let mut bob = Client::json(server.port());
    bob.login("bob");
    bob.send_json(&json!({"code": 100, "message": "seen before quitting"}));
    alice.wait_for("seen before quitting");
    alice.enter("/quit");
    alice.wait_until("riftc to exit", |_| !alice.is_running());
    drop(alice);
    for index in 1..=3 {
        bob.send_json(
            &json!({"code": 100, "message": format!("said while riftc was closed {index}")}),
        );
        bob.expect_code(200);
    }
    let alice = Terminal::start(&home, &["--user", "alice", &address(&server)]);
    let screen = alice.wait_for("said while riftc was closed 3");
    for needle in [
        "seen before quitting",
        "said while riftc was closed 1",
        "said while riftc was closed 2",
        "said while riftc was closed 3",
    ] {
        assert!(
            screen.matches(needle).count() <= 1,
            "{needle} twice:\n{screen}"
        );
    }
    assert_eq!(
        screen.matches("said while riftc was closed 1").count(),
        1,
        "{screen}"
    );
}

/// `riftd::cluster::NAME_TTL`: a dead node's names expire within it.
const NAME_TTL: Duration = Duration::from_secs(10);

/// A cluster node on `nats`, with history (kept in JetStream).
fn cluster_node(nats: &Nats, name: &str) -> Server {
    Launch::new()
        .config(&format!(
            "cluster_url = \"{}\"\nnode_name = \"{name}\"\nhistory_file = \"history.jsonl\"\nflood_rate = 0\n",
            nats.url()
        ))
        .start()
}

#[test]
fn given_two_nodes_riftc_fails_over_when_its_node_is_killed_and_shows_what_was_said_meanwhile_once()
{
    let nats = Nats::start();
    let mut a = cluster_node(&nats, "node-a");
    let b = cluster_node(&nats, "node-b");
    let dir = tempfile::tempdir().unwrap();
    let servers = format!("{},{}", address(&a), address(&b));
    let alice = Terminal::start(&dir.path().join("alice"), &["--user", "alice", &servers]);
    // The first node of the list, named in the status line.
    alice.wait_status(
        SCREEN_TIMEOUT,
        &format!("{} | alice | connected", address(&a)),
    );
    let mut bob = Client::json(b.port());
    bob.login("bob");
    bob.send_json(&json!({"code": 100, "message": "said before node a died"}));
    bob.expect_code(200);
    alice.wait_for("said before node a died");
    a.signal("KILL");
    a.wait_exit();
    let killed = Instant::now();
    // Said while alice has no connection: node b refuses her name until
    // the cluster frees it from the dead node (NAME_TTL).
    bob.send_json(&json!({"code": 100, "message": "said while alice was failing over"}));
    bob.expect_code(200);
    alice.wait_status(
        NAME_TTL,
        &format!(
            "{} | alice | waiting for your name to be released",
            address(&b)
        ),
    );
    // Her name is freed within NAME_TTL and the server's sweep; riftc asks
    // again every second for up to 15 s.
    let bound = NAME_TTL + Duration::from_secs(10);
    alice.wait_status(
        bound.saturating_sub(killed.elapsed()),
        &format!("{} | alice | connected", address(&b)),
    );
    let screen = alice.wait_for("said while alice was failing over");
    for needle in [
        "said before node a died",
        "said while alice was failing over",
    ] {
        assert_eq!(screen.matches(needle).count(), 1, "{needle}:\n{screen}");
    }
    // Logged in under her own name: bob sees her come back as alice.
    let back = bob.expect_frame_within(bound, |frame| {
        frame["code"] == 201 && frame["new"] == "alice"
    });
    assert_eq!(back["room"], "lobby", "{back}");
}
