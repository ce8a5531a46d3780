//! Daemon-side tests: the built `riftd` binary started, stopped and signalled
//! as an operator (or systemd) would, with `-d start|stop|restart|status`,
//! its locked pidfile, its log file, SIGTERM/SIGINT/SIGHUP, and the contrib
//! systemd unit.
//!
//! Each test has its own temporary directory, free port, pidfile and log
//! file, and a guard that runs `riftd -d stop` so no daemon outlives it.
//! Nothing sleeps to let the server catch up: the tests wait on what riftd
//! sends or on a command's exit. Short polls appear only where there is no
//! event to wait on (a process exiting, a file disappearing, a log line
//! landing in a file), always with a deadline.
//!
//! The helpers are private to this file rather than in `tests/common`: that
//! harness runs foreground servers, and these tests need daemons.

use crate::common;

use common::{forward_lines, free_port};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long one expected frame, line or EOF may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `riftd -d ...` command or a signalled process may take to end.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// The pause between two looks at something that has no event to wait on.
const POLL_PAUSE: Duration = Duration::from_millis(10);

const RIFTD: &str = env!("CARGO_BIN_EXE_riftd");

/// Reads a pipe to its end on a thread, so a command's output can be
/// collected with a deadline.
fn collect(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = BufReader::new(pipe).read_to_end(&mut bytes);
        let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    receiver
}

/// Waits for a child to exit. There is no portable wait with a timeout, so
/// this polls.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("cannot wait for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_PAUSE);
    }
}

/// Polls `condition` until it holds or `timeout` passes; says which.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_PAUSE);
    }
}

/// A command that ran to completion.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Both streams, for assertions that do not care which one was used.
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a command to completion with a deadline; kills it if it hangs.
fn run(mut command: Command) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    let stdout = collect(child.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.stderr.take().expect("stderr is piped"));
    let Some(status) = wait_exit(&mut child, EXIT_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not exit within {EXIT_TIMEOUT:?}");
    };
    // A forked daemon must not keep our pipes open: if it did, the readers
    // would never see EOF and this would time out.
    let output = |receiver: Receiver<String>, name: &str| {
        receiver
            .recv_timeout(READ_TIMEOUT)
            .unwrap_or_else(|_| panic!("{command:?}: {name} still open after it exited"))
    };
    Finished {
        status,
        stdout: output(stdout, "stdout"),
        stderr: output(stderr, "stderr"),
    }
}

/// Sends a signal by name (`TERM`, `INT`, `HUP`) with the `kill` command.
fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// Whether something accepts connections on the port right now.
fn is_port_bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The pid in `riftd started (pid N), listening on ...`.
fn started_pid(output: &str) -> u32 {
    output
        .split("riftd started (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no `riftd started (pid N)` in {output:?}"))
}

/// One test's daemon: a temporary directory holding `riftd.toml`, the
/// pidfile `riftd.pid` and the log `riftd.log`, with a port of its own.
/// Dropping it stops the daemon (and kills it if `stop` fails).
struct Daemon {
    dir: TempDir,
    port: u16,
    /// `pid_file` as written in the config, relative to its directory.
    pid_file: String,
    extra: String,
}

impl Daemon {
    /// A config listening on a free port; `extra` is appended to it.
    fn new(extra: &str) -> Daemon {
        let daemon = Daemon {
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
            port: free_port(),
            pid_file: "riftd.pid".to_owned(),
            extra: extra.to_owned(),
        };
        daemon.write_config("");
        daemon
    }

    /// Like `new`, with the pidfile at `pid_file` (relative to the config).
    fn with_pid_file(pid_file: &str) -> Daemon {
        let mut daemon = Daemon::new("");
        daemon.pid_file = pid_file.to_owned();
        daemon.write_config("");
        daemon
    }

    /// Rewrites the config file, with `more` appended.
    fn write_config(&self, more: &str) {
        let text = format!(
            "listen = \"127.0.0.1:{}\"\npid_file = \"{}\"\nlog_file = \"riftd.log\"\nhistory_file = \"\"\n{}\n{more}",
            self.port, self.pid_file, self.extra
        );
        std::fs::write(self.config_path(), text).expect("cannot write the config file");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.path("riftd.toml")
    }

    fn pid_path(&self) -> PathBuf {
        self.path(&self.pid_file)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("riftd.log")).unwrap_or_default()
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Runs `riftd -d ACTION --config riftd.toml` to completion.
    fn ctl(&self, action: &str) -> Finished {
        let mut command = Command::new(RIFTD);
        command
            .args(["-d", action, "--config"])
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET");
        run(command)
    }

    /// `start`, which must succeed; returns the daemon's pid.
    fn start(&self) -> u32 {
        let started = self.ctl("start");
        assert_eq!(started.code(), Some(0), "start failed: {started:?}");
        started_pid(&started.stdout)
    }

    /// The pid in the pidfile.
    fn pidfile_pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.pid_path()).expect("cannot read the pidfile");
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("pidfile holds {text:?}"))
    }

    /// Waits until the pidfile is gone (the daemon removes it on a clean
    /// exit, as its very last act).
    fn wait_pidfile_gone(&self) {
        assert!(
            eventually(EXIT_TIMEOUT, || !self.pid_path().exists()),
            "pidfile still there {EXIT_TIMEOUT:?} later; log:\n{}",
            self.log()
        );
    }

    /// Waits until the log file contains `needle`; returns the log.
    fn wait_for_log(&self, needle: &str) -> String {
        let mut log = String::new();
        let found = eventually(READ_TIMEOUT, || {
            log = self.log();
            log.contains(needle)
        });
        assert!(
            found,
            "no {needle:?} in the log within {READ_TIMEOUT:?}:\n{log}"
        );
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Never leave a daemon behind, even when the test failed.
        let stopped = Command::new(RIFTD)
            .args(["-d", "stop", "--config"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let is_stopped = stopped.is_ok_and(|status| status.success());
        if !is_stopped
            && let Ok(text) = std::fs::read_to_string(self.pid_path())
            && let Ok(pid) = text.trim().parse::<u32>()
            && let Ok(file) = std::fs::File::open(self.pid_path())
            // Only a locked pidfile names a live daemon.
            && file.try_lock_shared().is_err()
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A TCP client speaking lines, every read under a deadline.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects and reads the 210 greeting.
    fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address)
            .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("set_write_timeout");
        let writer = stream.try_clone().expect("cannot clone the stream");
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = client.recv_json();
        assert_eq!(greeting["code"], 210, "not a greeting: {greeting}");
        client
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|error| panic!("cannot send {line:?}: {error}"));
    }

    fn send_json(&mut self, frame: &Value) {
        self.send(&frame.to_string());
    }

    /// The next line without its `\n`, or `None` at EOF; fails on timeout.
    fn recv_line_or_eof(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => Some(String::from_utf8_lossy(&line).trim_end().to_owned()),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("nothing from the server within {READ_TIMEOUT:?}")
            }
            // A reset after the last frame counts as the end.
            Err(error) if error.kind() == ErrorKind::ConnectionReset => None,
            Err(error) => panic!("read failed: {error}"),
        }
    }

    fn recv_line(&mut self) -> String {
        self.recv_line_or_eof().expect("expected a line, got EOF")
    }

    fn recv_json(&mut self) -> Value {
        let line = self.recv_line();
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}"))
    }

    /// Reads lines until one contains `needle`; fails at EOF.
    fn expect_line(&mut self, needle: &str) -> String {
        let mut skipped = Vec::new();
        loop {
            match self.recv_line_or_eof() {
                Some(line) if line.contains(needle) => return line,
                Some(line) => skipped.push(line),
                None => panic!("EOF before a line with {needle:?}; skipped {skipped:#?}"),
            }
        }
    }

    /// Reads JSON frames until one has `code`; fails at EOF.
    fn expect_code(&mut self, code: u64) -> Value {
        let mut skipped = Vec::new();
        loop {
            let Some(line) = self.recv_line_or_eof() else {
                panic!("EOF before code {code}; skipped {skipped:#?}");
            };
            let frame: Value = serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}"));
            if frame["code"] == code {
                return frame;
            }
            skipped.push(frame);
        }
    }

    fn expect_eof(&mut self) {
        if let Some(line) = self.recv_line_or_eof() {
            panic!("expected EOF, got {line:?}");
        }
    }

    /// Logs in as a JSON client under open auth: 202, then 201.
    fn login_json(&mut self, name: &str) {
        self.send_json(&json!({"code": 110, "username": name}));
        assert_eq!(self.recv_json(), json!({"code": 202, "new": name}));
        let joined = self.expect_code(201);
        assert_eq!(joined["new"], name, "{joined}");
    }

    /// Logs in as a text client (a plain username line) under open auth.
    fn login_text(&mut self, name: &str) {
        self.send(name);
        self.expect_line(&format!("you are now {name}"));
    }
}

/// One login attempt under password auth on a fresh connection; returns
/// the code of the answer to the password (202 or 401).
fn password_login(address: SocketAddr, name: &str, password: &str) -> u64 {
    let mut client = Client::connect(address);
    client.send_json(&json!({"code": 110, "username": name}));
    let asked = client.recv_json();
    assert_eq!(asked["code"], 211, "expected 211, got {asked}");
    client.send_json(&json!({"code": 111, "password": password}));
    let answer = client.recv_json();
    let code = answer["code"].as_u64().unwrap_or(0);
    assert!(code == 202 || code == 401, "unexpected answer {answer}");
    code
}

/// A JSON and a text client, both logged in to the server on `address`.
fn logged_in_pair(address: SocketAddr) -> (Client, Client) {
    let mut json_client = Client::connect(address);
    json_client.login_json("alice");
    let mut text_client = Client::connect(address);
    text_client.login_text("bob");
    (json_client, text_client)
}

/// What every client must see when the server goes down: 205 (or its text
/// form), then EOF.
fn assert_told_going_down(json_client: &mut Client, text_client: &mut Client) {
    assert_eq!(json_client.expect_code(205), json!({"code": 205}));
    json_client.expect_eof();
    text_client.expect_line("server going down");
    text_client.expect_eof();
}

/// A foreground `riftd` whose stderr is read line by line; killed on drop.
struct Foreground {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Foreground {
    /// Runs `riftd --listen 127.0.0.1:0` with `RUST_LOG=info` and `envs`.
    fn spawn(envs: &[(&str, &str)]) -> Foreground {
        let mut command = Command::new(RIFTD);
        command
            .args(["--listen", "127.0.0.1:0", "--history-file", ""])
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("cannot start riftd");
        let lines = forward_lines(child.stderr.take().expect("stderr is piped"));
        Foreground {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {needle:?}; stderr: {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("stderr closed before {needle:?}; stderr: {:#?}", self.seen)
                }
            }
        }
    }

    /// The address from the `listening on ADDR` line.
    fn wait_listening(&mut self) -> SocketAddr {
        let line = self.wait_for_line("listening on ");
        line.rsplit("listening on ")
            .next()
            .and_then(|address| address.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child, EXIT_TIMEOUT)
            .unwrap_or_else(|| panic!("riftd did not exit; stderr: {:#?}", self.seen))
    }

    /// Every stderr line once the process has exited.
    fn rest_of_stderr(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(READ_TIMEOUT) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn start_status_restart_and_stop_manage_one_daemon() {
    let daemon = Daemon::new("shutdown_timeout_secs = 5");
    let pid = daemon.start();
    assert_eq!(daemon.pidfile_pid(), pid);
    drop(Client::connect(daemon.address()));

    let status = daemon.ctl("status");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(status.stdout.contains(&format!("pid {pid}")), "{status:?}");

    let restarted = daemon.ctl("restart");
    assert_eq!(restarted.code(), Some(0), "{restarted:?}");
    let new_pid = started_pid(&restarted.stdout);
    assert_ne!(new_pid, pid);
    assert_eq!(daemon.pidfile_pid(), new_pid);
    drop(Client::connect(daemon.address()));
    let status = daemon.ctl("status");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        status.stdout.contains(&format!("pid {new_pid}")),
        "{status:?}"
    );

    let stopped = daemon.ctl("stop");
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");
    assert!(
        stopped.stdout.contains(&format!("stopped (pid {new_pid})")),
        "{stopped:?}"
    );
    let status = daemon.ctl("status");
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(!daemon.pid_path().exists(), "the pidfile outlived stop");
    assert!(is_port_bindable(daemon.port), "the port is still taken");

    let again = daemon.ctl("stop");
    assert_eq!(again.code(), Some(0), "{again:?}");
    assert!(again.stdout.contains("not running"), "{again:?}");
}

#[test]
fn start_on_a_busy_port_fails_naming_the_address() {
    let daemon = Daemon::new("");
    let _holder = TcpListener::bind(daemon.address()).expect("cannot hold the port for the test");
    let started = daemon.ctl("start");
    assert_ne!(started.code(), Some(0), "{started:?}");
    assert!(
        started.stderr.contains(&daemon.address().to_string()),
        "{started:?}"
    );
    let status = daemon.ctl("status");
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(!status.stdout.contains("stale"), "{status:?}");
}

#[test]
fn a_second_start_while_running_says_already_running() {
    let daemon = Daemon::new("");
    let pid = daemon.start();
    let second = daemon.ctl("start");
    assert_eq!(second.code(), Some(1), "{second:?}");
    assert!(second.stderr.contains("already running"), "{second:?}");
    assert!(second.stderr.contains(&pid.to_string()), "{second:?}");
    // The first daemon is untouched.
    assert_eq!(daemon.pidfile_pid(), pid);
    drop(Client::connect(daemon.address()));
}

#[test]
fn a_stale_pidfile_is_replaced_by_start() {
    let daemon = Daemon::new("");
    std::fs::write(daemon.pid_path(), "999999\n").expect("cannot write the stale pidfile");
    let status = daemon.ctl("status");
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(status.stdout.contains("stale"), "{status:?}");

    let pid = daemon.start();
    assert_ne!(pid, 999_999);
    assert_eq!(daemon.pidfile_pid(), pid);
    drop(Client::connect(daemon.address()));
}

#[test]
fn an_unwritable_pidfile_location_makes_start_fail_naming_it() {
    let daemon = Daemon::with_pid_file("blocker/riftd.pid");
    // A regular file used as a directory: even root cannot create below it.
    std::fs::write(daemon.path("blocker"), "").expect("cannot write the blocker");
    let started = daemon.ctl("start");
    assert_ne!(started.code(), Some(0), "{started:?}");
    assert!(
        started
            .stderr
            .contains(&daemon.path("blocker/riftd.pid").display().to_string()),
        "{started:?}"
    );
    assert!(
        is_port_bindable(daemon.port),
        "something listens after a failed start"
    );
}

#[test]
fn an_unknown_config_key_makes_start_exit_2_before_listening() {
    let daemon = Daemon::new("no_such_key = 1");
    let started = daemon.ctl("start");
    assert_eq!(started.code(), Some(2), "{started:?}");
    assert!(started.stderr.contains("no_such_key"), "{started:?}");
    assert!(
        is_port_bindable(daemon.port),
        "something listens after a refused config"
    );
    assert!(
        !daemon.pid_path().exists(),
        "a refused config created the pidfile"
    );
}

/// Starts a daemon with a JSON and a text client, sends `signal`, and checks
/// both are told and the daemon exits cleanly.
fn daemon_shuts_down_cleanly_on(signal: &str) {
    let daemon = Daemon::new("shutdown_timeout_secs = 5");
    let pid = daemon.start();
    let (mut json_client, mut text_client) = logged_in_pair(daemon.address());
    send_signal(pid, signal);
    assert_told_going_down(&mut json_client, &mut text_client);
    daemon.wait_pidfile_gone();
    let status = daemon.ctl("status");
    assert_eq!(status.code(), Some(3), "{status:?}");
    let log = daemon.wait_for_log("shutdown complete");
    assert!(
        log.contains(&format!("SIG{signal}: shutting down")),
        "{log}"
    );
}

/// The same for a foreground riftd, whose exit status the test can see.
fn foreground_shuts_down_cleanly_on(signal: &str) {
    let mut server = Foreground::spawn(&[]);
    let address = server.wait_listening();
    let (mut json_client, mut text_client) = logged_in_pair(address);
    send_signal(server.child.id(), signal);
    assert_told_going_down(&mut json_client, &mut text_client);
    let status = server.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; stderr {:#?}",
        server.seen
    );
}

#[test]
fn sigterm_tells_daemon_clients_205_and_exits_cleanly() {
    daemon_shuts_down_cleanly_on("TERM");
}

#[test]
fn sigint_tells_daemon_clients_205_and_exits_cleanly() {
    daemon_shuts_down_cleanly_on("INT");
}

#[test]
fn sigterm_tells_foreground_clients_205_and_exits_0() {
    foreground_shuts_down_cleanly_on("TERM");
}

#[test]
fn sigint_tells_foreground_clients_205_and_exits_0() {
    foreground_shuts_down_cleanly_on("INT");
}

#[test]
fn sighup_applies_a_new_password_and_keeps_the_old_config_when_the_new_one_is_invalid() {
    let daemon = Daemon::new("auth = \"password\"\npassword_file = \"pw\"");
    std::fs::write(daemon.path("pw"), "old\n").expect("cannot write the password file");
    let pid = daemon.start();
    let address = daemon.address();
    assert_eq!(password_login(address, "carol", "old"), 202);

    std::fs::write(daemon.path("pw"), "new\n").expect("cannot rewrite the password file");
    send_signal(pid, "HUP");
    // The reload happens in the daemon's own time: try until it took effect.
    let mut attempt = 0;
    let deadline = Instant::now() + READ_TIMEOUT;
    while password_login(address, &format!("try{attempt}"), "new") != 202 {
        attempt += 1;
        assert!(
            Instant::now() < deadline,
            "`new` still refused {READ_TIMEOUT:?} after SIGHUP; log:\n{}",
            daemon.log()
        );
    }
    assert_eq!(password_login(address, "dave", "old"), 401);
    daemon.wait_for_log("SIGHUP: configuration reloaded");

    // An invalid config (plus a password change that must not apply) is
    // refused as a whole: the daemon keeps running on the previous one.
    std::fs::write(daemon.path("pw"), "newer\n").expect("cannot rewrite the password file");
    daemon.write_config("no_such_key = 1");
    send_signal(pid, "HUP");
    let log = daemon.wait_for_log("keeping the old configuration");
    // The TOML error spans several lines; the record starts with the level.
    let error = log
        .split_once("ERROR SIGHUP: invalid config file")
        .map(|(_, error)| error)
        .unwrap_or_else(|| panic!("no ERROR record for the refused reload:\n{log}"));
    assert!(error.contains("no_such_key"), "{log}");
    assert_eq!(password_login(address, "erin", "new"), 202);
    assert_eq!(password_login(address, "frank", "newer"), 401);
    // `status` reads the config too, so mend it before asking.
    daemon.write_config("");
    let status = daemon.ctl("status");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(daemon.pidfile_pid(), pid);
}

/// Something that is not riftd holding the pidfile's flock (as another
/// program, or a careless `flock riftd.pid …`, might): it locks the file,
/// writes nothing, says `ready` and waits.
const LOCKER: &str = r#"
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("ready", flush=True)
time.sleep(60)
"#;

/// Kills a helper process if the test fails before `stop` does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KillOnDrop {
    fn is_alive(&mut self) -> bool {
        self.0
            .try_wait()
            .expect("cannot wait for a child")
            .is_none()
    }
}

#[test]
fn stop_kills_a_daemon_that_ignores_sigterm() {
    let daemon = Daemon::new("shutdown_timeout_secs = 1");
    let pid = daemon.start();
    // A stopped process leaves SIGTERM pending: it ignores it, in effect.
    send_signal(pid, "STOP");
    assert_eq!(daemon.ctl("status").code(), Some(0));

    let started = Instant::now();
    let stopped = daemon.ctl("stop");
    assert_eq!(stopped.code(), Some(0), "{stopped:?}");
    assert!(stopped.output().contains("SIGKILL"), "{stopped:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "stop did not wait shutdown_timeout_secs before SIGKILL"
    );
    assert_eq!(daemon.ctl("status").code(), Some(3));
    assert!(
        eventually(EXIT_TIMEOUT, || is_port_bindable(daemon.port)),
        "the killed daemon's port is still taken"
    );
}

#[test]
fn stop_refuses_to_signal_a_process_that_is_not_the_riftd_holding_the_pidfile() {
    let daemon = Daemon::new("shutdown_timeout_secs = 1");
    let child = Command::new("python3")
        .args(["-c", LOCKER])
        .arg(daemon.pid_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot run python3");
    let mut locker = KillOnDrop(child);
    let lines = forward_lines(locker.0.stdout.take().expect("stdout is piped"));
    assert_eq!(
        lines.recv_timeout(READ_TIMEOUT).as_deref(),
        Ok("ready"),
        "the locker did not get ready"
    );
    let sleep = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot run sleep");
    let mut unrelated = KillOnDrop(sleep);

    // The file names an unrelated process; then the locker itself, which
    // holds the file open but is not riftd. Neither may be signalled.
    for pid in [unrelated.0.id(), locker.0.id()] {
        std::fs::write(daemon.pid_path(), format!("{pid}\n")).expect("cannot write the pidfile");
        let stopped = daemon.ctl("stop");
        assert_eq!(stopped.code(), Some(1), "{stopped:?}");
        assert!(
            stopped
                .stderr
                .contains(&format!("refusing to signal pid {pid}")),
            "{stopped:?}"
        );
        assert!(unrelated.is_alive(), "stop signalled an unrelated process");
        assert!(locker.is_alive(), "stop signalled the lock holder");
    }
}

#[test]
fn the_contrib_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/riftd.service"),
    )
    .expect("cannot read contrib/riftd.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/riftd "), "{unit}");
    let path = dir.path().join("riftd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/riftd", RIFTD))
        .expect("cannot write the unit");
    let mut command = Command::new("systemd-analyze");
    command.args(["verify", "--man=no"]).arg(&path);
    // A missing systemd-analyze fails the test: CI installs it.
    let verified = run(command);
    assert!(verified.status.success(), "{verified:?}");
    assert!(
        !verified.output().contains("riftd.service"),
        "systemd-analyze has remarks about the unit: {verified:?}"
    );
}

#[test]
fn under_systemd_log_lines_carry_a_priority_and_no_timestamp() {
    let mut server = Foreground::spawn(&[("JOURNAL_STREAM", "1:1")]);
    let address = server.wait_listening();
    drop(Client::connect(address));
    send_signal(server.child.id(), "TERM");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let lines = server.rest_of_stderr();
    assert!(
        lines.contains(&format!("<6>listening on {address}")),
        "{lines:#?}"
    );
    for line in &lines {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .and_then(|(digit, _)| digit.parse::<u8>().ok());
        assert!(
            priority.is_some_and(|priority| priority <= 7),
            "no syslog priority: {line:?}"
        );
        assert!(!has_iso_timestamp(line), "timestamp in {line:?}");
    }
}

#[test]
fn under_systemd_a_refused_config_is_logged_at_error_priority_on_every_line() {
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let path = dir.path().join("riftd.toml");
    std::fs::write(&path, "no_such_key = 1\n").expect("cannot write the config file");
    let mut command = Command::new(RIFTD);
    command
        .arg("--config")
        .arg(&path)
        .env("JOURNAL_STREAM", "1:1")
        .env("RUST_LOG", "info");
    let finished = run(command);
    assert_eq!(finished.code(), Some(2), "{finished:?}");
    assert!(finished.stderr.contains("no_such_key"), "{finished:?}");
    // journald reads each line as its own entry; one without a prefix is
    // logged at info, so the reason would be missing from `journalctl -p err`.
    for line in finished.stderr.lines() {
        assert!(
            line.starts_with("<3>"),
            "a line of the error without its priority: {line:?}; stderr:\n{}",
            finished.stderr
        );
    }
}

/// Whether `line` holds something like `2026-11-22T03:04:05`.
fn has_iso_timestamp(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.windows(19).any(|window| {
        let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
        digits.iter().all(|&index| window[index].is_ascii_digit())
            && window[4] == b'-'
            && window[7] == b'-'
            && window[10] == b'T'
            && window[13] == b':'
            && window[16] == b':'
    })
}

#[test]
fn the_iso_timestamp_check_recognises_the_terminal_format() {
    assert!(has_iso_timestamp(
        "2026-11-22T03:04:05.678Z INFO  listening"
    ));
    assert!(!has_iso_timestamp("<6>listening on 127.0.0.1:5050"));
}

#[test]
fn start_writes_the_daemon_log_to_log_file() {
    let daemon = Daemon::new("");
    let pid = daemon.start();
    // The greeting comes from the event loop, which logs `listening on`
    // before its first turn.
    drop(Client::connect(daemon.address()));
    let log = daemon.wait_for_log(&format!("listening on {}", daemon.address()));
    assert!(log.contains(&format!("daemon started (pid {pid}")), "{log}");
}

#[test]
fn enormous_configured_timeouts_are_refused_with_exit_2_naming_the_key_by_every_command() {
    for (key, value) in [
        ("shutdown_timeout_secs", "9223372036854775807"),
        ("auth_timeout_secs", "18000000000000000"),
        ("idle_timeout_secs", "18000000000000000"),
    ] {
        let assignment = format!("{key} = {value}");
        let daemon = Daemon::new(&assignment);
        for action in ["start", "stop", "status"] {
            let finished = daemon.ctl(action);
            assert_eq!(
                finished.code(),
                Some(2),
                "{assignment}, {action}: {finished:?}"
            );
            assert!(
                finished.stderr.contains(&format!("`{key}`")),
                "{assignment}, {action}: {finished:?}"
            );
        }
        assert!(
            !daemon.pid_path().exists(),
            "{assignment}: a refused config left a pidfile"
        );
        assert!(is_port_bindable(daemon.port), "{assignment}: it listened");
        common::assert_config_refused(
            common::Launch::new().config(&assignment),
            &format!("`{key}`"),
        );
    }
}

impl Daemon {
    /// Runs riftd in the foreground on this daemon's config, to completion.
    fn foreground(&self) -> Finished {
        let mut command = Command::new(RIFTD);
        command
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET");
        run(command)
    }
}

#[test]
fn a_foreground_start_that_cannot_bind_leaves_no_pidfile_behind() {
    let daemon = Daemon::new("");
    let _holder = TcpListener::bind(daemon.address()).expect("cannot hold the port for the test");
    let finished = daemon.foreground();
    assert_eq!(finished.code(), Some(1), "{finished:?}");
    assert!(
        finished.stderr.contains(&daemon.address().to_string()),
        "{finished:?}"
    );
    assert!(
        !daemon.pid_path().exists(),
        "the pidfile names the dead pid {:?}",
        std::fs::read_to_string(daemon.pid_path())
    );
    let status = daemon.ctl("status");
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(!status.stdout.contains("stale"), "{status:?}");
}

#[test]
fn a_pid_file_that_names_the_config_itself_is_refused_with_exit_2_and_left_intact() {
    let daemon = Daemon::with_pid_file("riftd.toml");
    let config = std::fs::read_to_string(daemon.config_path()).expect("cannot read the config");
    for finished in [daemon.ctl("start"), daemon.foreground()] {
        assert_eq!(finished.code(), Some(2), "{finished:?}");
        assert!(finished.stderr.contains("riftd.toml"), "{finished:?}");
        // The config names itself as pid_file: refused before the pidfile
        // is even opened (a pidfile holding anything but a pid is refused
        // too: daemon::tests::a_file_that_does_not_hold_a_pid_…).
        assert!(
            finished.stderr.contains("`pid_file`")
                && finished.stderr.contains("is also the config file"),
            "{finished:?}"
        );
        assert_eq!(
            std::fs::read_to_string(daemon.config_path())
                .ok()
                .as_deref(),
            Some(config.as_str()),
            "the config was overwritten or deleted"
        );
        assert!(is_port_bindable(daemon.port), "it listened: {finished:?}");
    }
}

#[test]
fn a_pid_file_that_is_a_symlink_is_refused_with_exit_2_and_its_target_left_intact() {
    let daemon = Daemon::with_pid_file("riftd.pid");
    let target = daemon.path("precious");
    for text in ["precious data\n", ""] {
        std::fs::write(&target, text).expect("cannot write the target");
        let _ = std::fs::remove_file(daemon.pid_path());
        std::os::unix::fs::symlink(&target, daemon.pid_path()).expect("cannot make the symlink");
        for finished in [daemon.ctl("start"), daemon.foreground()] {
            assert_eq!(finished.code(), Some(2), "{finished:?}");
            assert!(finished.stderr.contains("symbolic link"), "{finished:?}");
            assert_eq!(
                std::fs::read_to_string(&target).ok().as_deref(),
                Some(text),
                "the symlink's target was written"
            );
            assert!(
                std::fs::symlink_metadata(daemon.pid_path())
                    .is_ok_and(|metadata| metadata.file_type().is_symlink()),
                "the symlink was replaced or deleted"
            );
        }
    }
}

#[test]
fn a_reload_with_a_number_outside_its_range_keeps_the_old_configuration() {
    let daemon = Daemon::new("shutdown_timeout_secs = 5");
    let pid = daemon.start();
    std::fs::write(
        daemon.config_path(),
        std::fs::read_to_string(daemon.config_path())
            .expect("cannot read the config")
            .replace(
                "shutdown_timeout_secs = 5",
                "shutdown_timeout_secs = 9223372036854775807",
            ),
    )
    .expect("cannot rewrite the config");
    send_signal(pid, "HUP");
    let log = daemon.wait_for_log("keeping the old configuration");
    assert!(log.contains("`shutdown_timeout_secs`"), "{log}");
    // SIGTERM still ends it within the old timeout, removing the pidfile.
    let (mut json_client, mut text_client) = logged_in_pair(daemon.address());
    send_signal(pid, "TERM");
    assert_told_going_down(&mut json_client, &mut text_client);
    daemon.wait_pidfile_gone();
}

/// `mkfifo PATH`, replacing whatever is there.
fn make_fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("cannot run mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
}

#[test]
fn a_fifo_named_by_the_config_is_refused_and_never_hangs_a_command_or_a_reload() {
    let daemon = Daemon::new("auth = \"password\"\npassword_file = \"pw\"");
    std::fs::write(daemon.path("pw"), "old\n").expect("cannot write the password file");
    let pid = daemon.start();
    // A reload reads the files on the event loop: a FIFO there used to
    // block it, freezing every client, until some writer came along.
    make_fifo(&daemon.path("pw"));
    send_signal(pid, "HUP");
    let log = daemon.wait_for_log("keeping the old configuration");
    assert!(log.contains("a FIFO, not a regular file"), "{log}");
    assert_eq!(password_login(daemon.address(), "carol", "old"), 202);
    let _ = std::fs::remove_file(daemon.path("pw"));
    std::fs::write(daemon.path("pw"), "old\n").expect("cannot restore the password file");

    // A FIFO as the pidfile: status and stop refuse it instead of waiting
    // for a writer; a FIFO as the config file is refused too.
    let other = Daemon::with_pid_file("fifo.pid");
    make_fifo(&other.pid_path());
    for action in ["status", "stop", "start"] {
        let finished = other.ctl(action);
        assert_eq!(finished.code(), Some(2), "{action}: {finished:?}");
        assert!(
            finished.stderr.contains("not a regular file"),
            "{action}: {finished:?}"
        );
    }
    let config_fifo = other.path("fifo.toml");
    make_fifo(&config_fifo);
    let mut command = Command::new(RIFTD);
    command
        .arg("--check-config")
        .arg("--config")
        .arg(&config_fifo);
    let finished = run(command);
    assert_eq!(finished.code(), Some(2), "{finished:?}");
    assert!(finished.stderr.contains("a FIFO"), "{finished:?}");
    // The guard reads the pidfile; a FIFO would block it.
    let _ = std::fs::remove_file(other.pid_path());
}

#[test]
fn a_listen_fds_count_beyond_the_passed_sockets_is_refused_without_closing_riftds_own_files() {
    // LISTEN_PID names riftd (the shell execs it, keeping its pid) and
    // LISTEN_FDS claims two sockets where none were passed: descriptor 3 is
    // then riftd's own pidfile. Adopting it to refuse it used to close it:
    // the pidfile was left behind naming a dead pid (or a debug build
    // aborted on the second close).
    let daemon = Daemon::new("");
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=2 exec \"$0\" --config \"$1\"",
            RIFTD,
        ])
        .arg(daemon.config_path())
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET");
    let finished = run(command);
    assert_eq!(finished.code(), Some(2), "{finished:?}");
    assert!(
        finished.stderr.contains("is not a listening TCP socket"),
        "{finished:?}"
    );
    assert!(
        !daemon.pid_path().exists(),
        "the pidfile was left behind: {finished:?}"
    );
    assert!(is_port_bindable(daemon.port), "it listened: {finished:?}");
}

#[test]
fn a_log_file_that_is_the_config_itself_is_refused_with_exit_2_and_left_intact() {
    // The daemon used to append its log to the config, which then no longer
    // parsed: even `riftd -d stop` refused to run.
    let daemon = Daemon::new("");
    daemon.write_config("log_file = \"riftd.toml\"");
    let config = std::fs::read_to_string(daemon.config_path()).expect("cannot read the config");
    // (The base config sets log_file already; TOML refuses a duplicate key,
    // so the test's own line is the only one.)
    let config = config.replace("log_file = \"riftd.log\"\n", "");
    std::fs::write(daemon.config_path(), &config).expect("cannot write the config");
    for finished in [daemon.ctl("start"), daemon.foreground()] {
        assert_eq!(finished.code(), Some(2), "{finished:?}");
        assert!(finished.stderr.contains("`log_file`"), "{finished:?}");
        assert!(finished.stderr.contains("the config file"), "{finished:?}");
        assert_eq!(
            std::fs::read_to_string(daemon.config_path())
                .ok()
                .as_deref(),
            Some(config.as_str()),
            "the config was written"
        );
        assert!(is_port_bindable(daemon.port), "it listened: {finished:?}");
    }
    let mut command = Command::new(RIFTD);
    command
        .args(["user", "list", "--config"])
        .arg(daemon.config_path());
    let finished = run(command);
    assert_eq!(finished.code(), Some(2), "{finished:?}");
    assert!(finished.stderr.contains("`log_file`"), "{finished:?}");
}

#[test]
fn a_log_file_that_is_a_fifo_is_refused_at_start_and_never_blocks_a_reload() {
    let daemon = Daemon::new("");
    let pid = daemon.start();
    // The log moved away and a FIFO put in its place: the reopen at SIGHUP
    // used to wait on the event loop for a reader, freezing every client.
    let rotated = daemon.path("riftd.log.1");
    std::fs::rename(daemon.path("riftd.log"), &rotated).expect("cannot move the log");
    make_fifo(&daemon.path("riftd.log"));
    send_signal(pid, "HUP");
    // The reopen failed, so the daemon still writes to the moved file.
    let mut log = String::new();
    let reloaded = eventually(READ_TIMEOUT, || {
        log = std::fs::read_to_string(&rotated).unwrap_or_default();
        log.contains("SIGHUP: configuration reloaded")
    });
    assert!(reloaded, "no reload in the log:\n{log}");
    assert!(log.contains("a FIFO"), "{log}");
    let (mut json_client, mut text_client) = logged_in_pair(daemon.address());
    send_signal(pid, "TERM");
    assert_told_going_down(&mut json_client, &mut text_client);
    daemon.wait_pidfile_gone();

    // At start, a FIFO as the log is a refused configuration.
    let finished = daemon.ctl("start");
    assert_eq!(finished.code(), Some(2), "{finished:?}");
    assert!(finished.stderr.contains("a FIFO"), "{finished:?}");
    assert!(!daemon.pid_path().exists(), "{finished:?}");
    assert!(is_port_bindable(daemon.port), "it listened: {finished:?}");
    let _ = std::fs::remove_file(daemon.path("riftd.log"));
}

#[test]
fn a_daemon_started_with_a_relative_config_path_applies_a_reload() {
    // The daemon changes directory to `/`: a relative `--config` used to be
    // re-read as `/riftd.toml` at SIGHUP, so no reload could ever apply.
    let daemon = Daemon::new("auth = \"password\"\npassword_file = \"pw\"");
    std::fs::write(daemon.path("pw"), "old\n").expect("cannot write the password file");
    let mut command = Command::new(RIFTD);
    command
        .args(["-d", "start", "--config", "riftd.toml"])
        .current_dir(daemon.dir.path())
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET");
    let started = run(command);
    assert_eq!(started.code(), Some(0), "{started:?}");
    let pid = started_pid(&started.stdout);
    std::fs::write(daemon.path("pw"), "new\n").expect("cannot rewrite the password file");
    send_signal(pid, "HUP");
    let log = daemon.wait_for_log("SIGHUP:");
    assert!(log.contains("SIGHUP: configuration reloaded"), "{log}");
    assert_eq!(password_login(daemon.address(), "carol", "new"), 202);
}

#[test]
fn check_config_with_a_daemon_action_or_a_subcommand_is_refused_and_starts_nothing() {
    // `--check-config -d start` used to ignore the check and start a daemon.
    let daemon = Daemon::new("");
    for args in [
        &["--check-config", "-d", "start"][..],
        &["--check-config", "user", "list"],
    ] {
        let mut command = Command::new(RIFTD);
        command
            .args(args)
            .arg("--config")
            .arg(daemon.config_path())
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET");
        let finished = run(command);
        assert_eq!(finished.code(), Some(2), "{args:?}: {finished:?}");
        assert!(finished.stderr.contains("--check-config"), "{finished:?}");
        assert!(!daemon.pid_path().exists(), "{args:?} made a pidfile");
        assert!(is_port_bindable(daemon.port), "{args:?}: it listened");
    }
}

#[test]
fn user_list_into_a_closed_pipe_exits_quietly_instead_of_panicking() {
    // `riftd user list | head -1` used to panic in println! (exit 101).
    let daemon = Daemon::new("auth = \"accounts\"\nusers_file = \"users\"");
    let mut add = Command::new(RIFTD)
        .args(["user", "add", "alice", "--config"])
        .arg(daemon.config_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run riftd user add");
    add.stdin
        .take()
        .expect("stdin is piped")
        .write_all(b"secret\n")
        .expect("cannot send the password");
    assert!(wait_exit(&mut add, EXIT_TIMEOUT).is_some_and(|status| status.success()));
    let (reader, writer) = std::io::pipe().expect("cannot make a pipe");
    drop(reader);
    let mut list = Command::new(RIFTD)
        .args(["user", "list", "--config"])
        .arg(daemon.config_path())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run riftd user list");
    let stderr = collect(list.stderr.take().expect("stderr is piped"));
    let status = wait_exit(&mut list, EXIT_TIMEOUT).expect("user list did not exit");
    let stderr = stderr.recv_timeout(READ_TIMEOUT).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sigusr1_and_sigusr2_are_ignored_with_a_log_line_and_clients_stay() {
    // Their default action ended the daemon on the spot: no 205 to its
    // clients, a stale pidfile, and other daemons use SIGUSR1 to reopen
    // their logs, so an operator may send one.
    let daemon = Daemon::new("");
    let pid = daemon.start();
    let (mut json_client, mut text_client) = logged_in_pair(daemon.address());
    for signal in ["USR1", "USR2"] {
        send_signal(pid, signal);
        daemon.wait_for_log(&format!("SIG{signal} ignored"));
    }
    json_client.send_json(&json!({"code": 108, "token": "still here"}));
    json_client.expect_code(207);
    send_signal(pid, "TERM");
    assert_told_going_down(&mut json_client, &mut text_client);
    daemon.wait_pidfile_gone();
}

#[test]
fn a_reload_that_changes_log_file_or_pid_file_says_it_needs_a_restart() {
    // Both were silently ignored: the operator saw "configuration
    // reloaded" and waited for a log that never came.
    let daemon = Daemon::new("");
    let pid = daemon.start();
    let text = std::fs::read_to_string(daemon.config_path()).expect("cannot read the config");
    std::fs::write(
        daemon.config_path(),
        text.replace("log_file = \"riftd.log\"", "log_file = \"other.log\""),
    )
    .expect("cannot rewrite the config");
    send_signal(pid, "HUP");
    let log = daemon.wait_for_log("SIGHUP: configuration reloaded");
    assert!(
        log.contains("pid_file or log_file changed; that needs a restart"),
        "{log}"
    );
    assert!(!daemon.path("other.log").exists());
    std::fs::write(daemon.config_path(), text).expect("cannot restore the config");
}

#[test]
fn a_password_file_readable_by_every_local_user_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::new("auth = \"password\"\npassword_file = \"pw\"");
    std::fs::write(daemon.path("pw"), "s3cret\n").expect("cannot write the password file");
    std::fs::set_permissions(daemon.path("pw"), std::fs::Permissions::from_mode(0o644))
        .expect("cannot chmod the password file");
    // Said by `start` on the operator's terminal (the config is checked
    // before the fork), and logged again by every reload.
    let started = daemon.ctl("start");
    assert_eq!(started.code(), Some(0), "{started:?}");
    assert!(
        started.stderr.contains("password_file")
            && started.stderr.contains("readable by every local user"),
        "{started:?}"
    );
    send_signal(started_pid(&started.stdout), "HUP");
    let log = daemon.wait_for_log("readable by every local user");
    assert!(!log.contains("s3cret"), "{log}");
}

#[test]
fn an_empty_pid_file_or_log_file_is_refused_with_exit_2_naming_the_key() {
    // "" used to resolve to the config's directory: exit 1 with "Is a
    // directory", where history_file = "" means "off".
    let daemon = Daemon::new("");
    let base = std::fs::read_to_string(daemon.config_path()).expect("cannot read the config");
    for (key, line) in [
        ("pid_file", format!("pid_file = \"{}\"", daemon.pid_file)),
        ("log_file", "log_file = \"riftd.log\"".to_owned()),
    ] {
        std::fs::write(
            daemon.config_path(),
            base.replace(&line, &format!("{key} = \"\"")),
        )
        .expect("cannot write the config");
        for finished in [daemon.ctl("start"), daemon.foreground()] {
            assert_eq!(finished.code(), Some(2), "{key}: {finished:?}");
            assert!(
                finished.stderr.contains(&format!("`{key}` is empty")),
                "{finished:?}"
            );
            assert!(is_port_bindable(daemon.port), "{key}: it listened");
        }
    }
    std::fs::write(daemon.config_path(), base).expect("cannot restore the config");
}

#[test]
fn check_config_refuses_what_start_would_refuse_about_the_pidfile_and_the_log() {
    // --check-config said "configuration ok" for a pidfile that start then
    // refused (a symlink, the wrong content) and for a FIFO as the log.
    let daemon = Daemon::new("");
    let check = || {
        let mut command = Command::new(RIFTD);
        command
            .args(["--check-config", "--config"])
            .arg(daemon.config_path())
            .env_remove("JOURNAL_STREAM");
        run(command)
    };
    let fine = check();
    assert_eq!(fine.code(), Some(0), "{fine:?}");
    std::os::unix::fs::symlink(daemon.path("elsewhere"), daemon.pid_path())
        .expect("cannot make the symlink");
    let finished = check();
    assert_eq!(finished.code(), Some(2), "{finished:?}");
    assert!(finished.stderr.contains("symbolic link"), "{finished:?}");
    std::fs::remove_file(daemon.pid_path()).expect("cannot remove the symlink");
    std::fs::write(daemon.pid_path(), "not a pid\n").expect("cannot write the pidfile");
    let finished = check();
    assert_eq!(finished.code(), Some(2), "{finished:?}");
    assert!(finished.stderr.contains("not a pid"), "{finished:?}");
    std::fs::remove_file(daemon.pid_path()).expect("cannot remove the pidfile");
    make_fifo(&daemon.path("riftd.log"));
    let finished = check();
    assert_eq!(finished.code(), Some(2), "{finished:?}");
    assert!(finished.stderr.contains("a FIFO"), "{finished:?}");
    let _ = std::fs::remove_file(daemon.path("riftd.log"));
    assert!(!daemon.pid_path().exists(), "--check-config made a pidfile");
}

#[test]
fn a_sighup_right_after_the_pid_is_written_reloads_once_the_server_runs_instead_of_ending_it() {
    // The pidfile names the pid before the loop takes signals over (bind,
    // journal replay and the verifier come in between); a logrotate
    // `kill -HUP $(cat pidfile)` in that window used to end riftd without
    // a word. A long journal makes the window long.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut journal = String::new();
    for id in 1..=60_000u64 {
        journal.push_str(&format!(
            "{{\"id\":{id},\"ts\":1,\"room\":\"r{}\",\"from\":\"old\",\"text\":\"x\"}}\n",
            id % 100
        ));
    }
    std::fs::write(dir.path().join("history.jsonl"), journal).expect("write the journal");
    let config = dir.path().join("riftd.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\npid_file = \"riftd.pid\"\nhistory_file = \"history.jsonl\"\n",
    )
    .expect("write the config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_riftd"))
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start riftd");
    let lines = forward_lines(child.stderr.take().expect("stderr is piped"));
    let pid = child.id();
    let mut child = KillOnDrop(child);
    let pid_file = dir.path().join("riftd.pid");
    let named =
        || std::fs::read_to_string(&pid_file).is_ok_and(|text| text.trim() == pid.to_string());
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while !named() {
        assert!(Instant::now() < deadline, "the pidfile never named {pid}");
        thread::yield_now();
    }
    let target =
        rustix::process::Pid::from_raw(i32::try_from(pid).expect("a pid")).expect("a positive pid");
    rustix::process::kill_process(target, rustix::process::Signal::HUP).expect("kill -HUP");

    let mut seen = Vec::new();
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let mut address = None;
    let mut is_reloaded = false;
    while address.is_none() || !is_reloaded {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|error| {
            panic!(
                "riftd ended or stalled after an early SIGHUP ({error}); alive: {}; log: {seen:#?}",
                child.is_alive()
            )
        });
        if let Some(listening) = line
            .rsplit("listening on ")
            .next()
            .filter(|_| line.contains("listening on "))
        {
            address = listening.trim().parse::<SocketAddr>().ok();
        }
        is_reloaded |= line.contains("SIGHUP: configuration reloaded");
        seen.push(line);
    }
    assert!(child.is_alive(), "{seen:#?}");
    let mut client = Client::connect(address.expect("an address"));
    client.send_json(&json!({"code": 108, "token": "after the early SIGHUP"}));
    assert_eq!(client.expect_code(207)["token"], "after the early SIGHUP");
}
