//! The test harness: starts the real `riftd` binary on `127.0.0.1:0`, learns
//! its port from the `listening on` log line, and speaks raw TCP lines to it.
//!
//! Every read has a deadline and every wait is on something the server sends
//! (a log line, a frame, EOF, process exit); nothing here sleeps to let the
//! server catch up, and nothing uses a fixed port.

pub mod nats;

use serde_json::Value;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long one expected frame, line or EOF may take to arrive.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the binary may take to log `listening on` (tests run in
/// parallel, so a cold start can be slow).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a process may take to exit once it has been told to.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards every stderr line of the child over a channel, so the test can
/// wait for a line with a timeout. It keeps draining after the receiver is
/// gone, so the server never blocks on a full pipe.
pub fn forward_lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    let _ = sender.send(text);
                }
            }
        }
    });
    receiver
}

/// The `riftd` binary under test. Cargo names it to riftd's own tests; the
/// measuring tools' smoke tests (benches/, another workspace member, which
/// share this harness) find it in the same target directory, beside the
/// `deps/` directory their test binary runs from: `cargo test --workspace`
/// builds every package's binaries before it runs any test.
fn riftd_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_riftd") {
        return PathBuf::from(path);
    }
    let test_binary = std::env::current_exe().expect("cannot find the test binary");
    let path = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("the test binary runs from target/<profile>/deps")
        .join("riftd");
    assert!(
        path.exists(),
        "no riftd binary at {}: run `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// How to run `riftd`: extra arguments, an optional config file and other
/// files placed beside it in a fresh temporary directory.
pub struct Launch {
    args: Vec<String>,
    config: Option<String>,
    files: Vec<(String, String)>,
    /// Run under `ulimit -n` with this many open files.
    open_files: Option<u32>,
    /// Run under `ulimit -S -f` with this many KiB per file (riftd catches
    /// SIGXFSZ, so a write past it fails with EFBIG, as on a full disk).
    file_size_kib: Option<u32>,
    dir: TempDir,
}

impl Launch {
    pub fn new() -> Launch {
        Launch {
            args: Vec::new(),
            config: None,
            files: Vec::new(),
            open_files: None,
            file_size_kib: None,
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Launch {
        self.args.push(arg.into());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// Writes `text` to `riftd.toml` in the temporary directory and passes
    /// `--config` with its path.
    pub fn config(mut self, text: &str) -> Launch {
        self.config = Some(text.to_owned());
        self
    }

    /// Writes another file (e.g. a password file) beside the config file;
    /// relative paths in the config resolve against that directory.
    pub fn file(mut self, name: &str, contents: &str) -> Launch {
        self.files.push((name.to_owned(), contents.to_owned()));
        self
    }

    /// Runs riftd under `ulimit -n OPEN_FILES` (through `sh`), which a
    /// `Command` cannot set on its own.
    pub fn open_files(mut self, open_files: u32) -> Launch {
        self.open_files = Some(open_files);
        self
    }

    /// Runs riftd under `ulimit -S -f KIB` (soft only, so that it can be
    /// lifted again); riftd catches SIGXFSZ, so a write
    /// that reaches the limit is cut short, then fails with EFBIG, the way
    /// a full disk cuts it short with ENOSPC (`prlimit --fsize` lifts it).
    pub fn file_size_kib(mut self, kib: u32) -> Launch {
        self.file_size_kib = Some(kib);
        self
    }

    /// The temporary directory the files go to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, with_default_listen: bool) -> Command {
        for (name, contents) in &self.files {
            std::fs::write(self.dir.path().join(name), contents).expect("cannot write a file");
        }
        let mut limits = String::new();
        if let Some(open_files) = self.open_files {
            limits.push_str(&format!("ulimit -n {open_files} && "));
        }
        if let Some(kib) = self.file_size_kib {
            limits.push_str(&format!("ulimit -S -f {kib} && "));
        }
        let riftd = riftd_binary();
        let mut command = if limits.is_empty() {
            Command::new(&riftd)
        } else {
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!("{limits}exec \"$0\" \"$@\""))
                .arg(&riftd);
            command
        };
        command
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(text) = &self.config {
            let path = self.dir.path().join("riftd.toml");
            std::fs::write(&path, text).expect("cannot write the config file");
            command.arg("--config").arg(path);
        }
        if with_default_listen && !self.args.iter().any(|arg| arg == "--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        // History is off unless a test asks for it (with `--history-file`,
        // or `history_file` in its config): servers of parallel tests must
        // not share the default journal, and most tests expect no 208
        // backlog after login.
        let is_history_configured = self.args.iter().any(|arg| arg == "--history-file")
            || self
                .config
                .as_ref()
                .is_some_and(|text| text.contains("history_file"));
        if !is_history_configured {
            command.args(["--history-file", ""]);
        }
        command.args(&self.args);
        command
    }

    /// Starts the server and waits until every listener is bound (one
    /// `listening on` line per `--listen`, or one for the default).
    pub fn start(self) -> Server {
        let expected = self.args.iter().filter(|arg| *arg == "--listen").count();
        let mut child = self
            .command(true)
            .spawn()
            .expect("cannot start the riftd binary");
        let lines = forward_lines(child.stderr.take().expect("stderr is piped"));
        // Nothing is printed on stdout while serving; drain it anyway.
        drop(forward_lines(child.stdout.take().expect("stdout is piped")));
        let mut server = Server {
            addrs: Vec::new(),
            child,
            lines,
            log: Vec::new(),
            _dir: self.dir,
        };
        for _ in 0..expected.max(1) {
            let line = server.wait_for_log_within("listening on ", START_TIMEOUT);
            let address = line
                .rsplit("listening on ")
                .next()
                .and_then(|address| address.trim().parse::<SocketAddr>().ok())
                .unwrap_or_else(|| panic!("no address in log line {line:?}"));
            server.addrs.push(address);
        }
        server
    }

    /// Runs the binary to completion (for `--version` and refused configs),
    /// without the default `--listen`, and kills it if it does not exit.
    pub fn run_to_exit(self) -> Finished {
        let mut child = self
            .command(false)
            .spawn()
            .expect("cannot start the riftd binary");
        let stdout = forward_lines(child.stdout.take().expect("stdout is piped"));
        let stderr = forward_lines(child.stderr.take().expect("stderr is piped"));
        let status = wait_exit(&mut child, EXIT_TIMEOUT);
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            let stderr: Vec<String> = stderr.try_iter().collect();
            panic!("riftd did not exit within {EXIT_TIMEOUT:?}; stderr: {stderr:#?}");
        };
        // The process is gone, so both pipes reach EOF and the forwarding
        // threads end; collecting until the channel closes gets every line.
        Finished {
            status,
            stdout: stdout.iter().collect::<Vec<_>>().join("\n"),
            stderr: stderr.iter().collect::<Vec<_>>().join("\n"),
        }
    }
}

impl Default for Launch {
    fn default() -> Launch {
        Launch::new()
    }
}

/// A process that ran to completion.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Polls for process exit. Polling with short pauses is only used for this:
/// there is no portable way to wait for a child with a timeout.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("cannot wait for riftd") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A running `riftd`; killed when dropped.
pub struct Server {
    /// Every bound address, in the order the server logged them.
    pub addrs: Vec<SocketAddr>,
    child: Child,
    lines: Receiver<String>,
    /// Every stderr line seen so far, for failure messages.
    pub log: Vec<String>,
    /// Holds the config and password files for the server's lifetime.
    _dir: TempDir,
}

impl Server {
    /// A server with the embedded defaults on `127.0.0.1:0`.
    pub fn start() -> Server {
        Launch::new().start()
    }

    /// A server reading `config` (TOML) from a file.
    pub fn with_config(config: &str) -> Server {
        Launch::new().config(config).start()
    }

    /// The port of the first listener.
    pub fn port(&self) -> u16 {
        self.addrs[0].port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Stops the server with SIGSTOP and returns once it is stopped (state
    /// `T` in `/proc/PID/stat`): `kill` returns when the signal is sent, and
    /// a loaded machine may let the server run a while longer, accepting
    /// what a test meant to queue behind it.
    pub fn pause(&self) {
        self.signal("STOP");
        let stat = format!("/proc/{}/stat", self.pid());
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&stat)
                .unwrap_or_else(|error| panic!("cannot read {stat}: {error}"));
            // The state follows the command name, which is in parentheses.
            let state = text
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            if state == Some("T") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server never stopped: {text}"
            );
            thread::yield_now();
        }
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        match wait_exit(&mut self.child, EXIT_TIMEOUT) {
            Some(status) => status,
            None => panic!(
                "riftd did not exit within {EXIT_TIMEOUT:?}; log: {:#?}",
                self.drain_log()
            ),
        }
    }

    /// Every stderr line logged so far, without waiting.
    pub fn drain_log(&mut self) -> &[String] {
        self.log.extend(self.lines.try_iter());
        &self.log
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        self.wait_for_log_within(needle, READ_TIMEOUT)
    }

    fn wait_for_log_within(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no log line with {needle:?} within {timeout:?}; log: {:#?}",
                        self.log
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "riftd closed stderr (status {status:?}) before logging {needle:?}; log: {:#?}",
                        self.log
                    )
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one read produced.
enum Read1 {
    Line(Vec<u8>),
    Eof,
    Timeout,
}

/// One TCP client speaking lines. JSON and text clients differ only in
/// what they send first; the greeting is JSON either way.
pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Bytes of a line not yet complete when a read timed out.
    partial: Vec<u8>,
    /// The 210 frame, for clients made with `json` or `text`.
    pub greeting: Value,
}

impl Client {
    /// Connects without reading anything.
    pub fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address)
            .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"));
        stream.set_nodelay(true).expect("set_nodelay");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("set_write_timeout");
        let reader = BufReader::new(stream.try_clone().expect("cannot clone the stream"));
        Client {
            stream,
            reader,
            partial: Vec::new(),
            greeting: Value::Null,
        }
    }

    /// Connects to `127.0.0.1:port` and reads the 210 greeting.
    pub fn json(port: u16) -> Client {
        Client::greeted(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Like `json`; the mode is chosen by the first line the test sends.
    pub fn text(port: u16) -> Client {
        Client::json(port)
    }

    /// Connects to any address and reads the 210 greeting.
    pub fn greeted(address: SocketAddr) -> Client {
        let mut client = Client::connect(address);
        let greeting = client.recv_json();
        assert_eq!(greeting["code"], 210, "not a greeting: {greeting}");
        client.greeting = greeting;
        client
    }

    /// Connects from the local address `local` (e.g. `127.0.0.2`: all of
    /// 127/8 is loopback) and reads the 210 greeting.
    pub fn greeted_from(local: std::net::IpAddr, address: SocketAddr) -> Client {
        let stream = connect_with(Some(local), None, address);
        stream.set_nodelay(true).expect("set_nodelay");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("set_write_timeout");
        let reader = BufReader::new(stream.try_clone().expect("cannot clone the stream"));
        let mut client = Client {
            stream,
            reader,
            partial: Vec::new(),
            greeting: Value::Null,
        };
        let greeting = client.recv_json();
        assert_eq!(greeting["code"], 210, "not a greeting: {greeting}");
        client.greeting = greeting;
        client
    }

    /// Sends one line; the `\n` is added.
    pub fn send(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.send_raw(&bytes);
    }

    /// Sends bytes exactly as given, in one write call.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|error| panic!("cannot send: {error}"));
    }

    /// Sends a JSON frame built with `serde_json::json!`.
    pub fn send_json(&mut self, frame: &Value) {
        self.send(&frame.to_string());
    }

    fn read_line_by(&mut self, deadline: Instant) -> Read1 {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read1::Timeout;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) if self.partial.is_empty() => return Read1::Eof,
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.pop();
                    return Read1::Line(line);
                }
                // EOF after a partial line: report the bytes, then EOF next.
                Ok(_) => return Read1::Line(std::mem::take(&mut self.partial)),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => panic!("read failed: {error}"),
            }
        }
    }

    /// The next line, without its `\n`; fails on timeout or EOF.
    pub fn recv_line(&mut self) -> String {
        match self.read_line_by(Instant::now() + READ_TIMEOUT) {
            Read1::Line(line) => String::from_utf8_lossy(&line).into_owned(),
            Read1::Eof => panic!("expected a line, got EOF"),
            Read1::Timeout => panic!("no line within {READ_TIMEOUT:?}"),
        }
    }

    /// The next line, parsed as one JSON object.
    pub fn recv_json(&mut self) -> Value {
        let line = self.recv_line();
        let frame: Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}"));
        assert!(frame.is_object(), "not a JSON object: {line}");
        frame
    }

    /// Reads frames until one has `code`, and returns it; fails on timeout
    /// or EOF, listing the frames skipped.
    pub fn expect_code(&mut self, code: u64) -> Value {
        let mut frame = Value::Null;
        self.skip_until(&format!("code {code}"), |line| {
            frame = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}"));
            frame["code"] == code
        });
        frame
    }

    /// Every frame up to and including the first with `code`, in order;
    /// fails on timeout or EOF.
    pub fn frames_until(&mut self, code: u64) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv_json();
            let is_last = frame["code"] == code;
            frames.push(frame);
            if is_last {
                return frames;
            }
        }
    }

    /// Like `expect_code`, waiting up to `timeout` (for what has a
    /// documented bound longer than `READ_TIMEOUT`).
    pub fn expect_code_within(&mut self, code: u64, timeout: Duration) -> Value {
        self.expect_frame_within(timeout, |frame| frame["code"] == code)
    }

    /// Reads frames until `wanted` accepts one, and returns it, waiting up
    /// to `timeout`; fails on timeout or EOF, listing the frames skipped.
    pub fn expect_frame_within(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            match self.read_line_by(deadline) {
                Read1::Line(line) => {
                    let line = String::from_utf8_lossy(&line).into_owned();
                    let frame: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}"));
                    if wanted(&frame) {
                        return frame;
                    }
                    skipped.push(line);
                }
                Read1::Eof => panic!("EOF before the frame wanted; skipped {skipped:#?}"),
                Read1::Timeout => {
                    panic!("no frame wanted within {timeout:?}; skipped {skipped:#?}")
                }
            }
        }
    }

    /// Reads text lines until one contains `needle`, and returns it.
    pub fn expect_line(&mut self, needle: &str) -> String {
        self.skip_until(&format!("a line with {needle:?}"), |line| {
            line.contains(needle)
        })
    }

    /// Reads lines until `wanted` accepts one, and returns it; fails on
    /// timeout or EOF, naming `what` and listing the lines skipped.
    fn skip_until(&mut self, what: &str, mut wanted: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut skipped = Vec::new();
        loop {
            match self.read_line_by(deadline) {
                Read1::Line(line) => {
                    let line = String::from_utf8_lossy(&line).into_owned();
                    if wanted(&line) {
                        return line;
                    }
                    skipped.push(line);
                }
                Read1::Eof => panic!("EOF before {what}; skipped {skipped:#?}"),
                Read1::Timeout => {
                    panic!("no {what} within {READ_TIMEOUT:?}; skipped {skipped:#?}")
                }
            }
        }
    }

    /// Asserts that the server closed the connection with nothing more to say.
    pub fn expect_eof(&mut self) {
        match self.read_line_by(Instant::now() + READ_TIMEOUT) {
            Read1::Eof => {}
            Read1::Line(line) => panic!(
                "expected EOF, got a line: {:?}",
                String::from_utf8_lossy(&line)
            ),
            Read1::Timeout => panic!("connection still open after {READ_TIMEOUT:?}"),
        }
    }

    /// A JSON client on `port`, logged in under open auth, once its join
    /// backlog (208) has come: a cluster node reads it from the stream
    /// after the 201.
    pub fn logged_in_with_backlog(port: u16, name: &str) -> Client {
        let mut client = Client::json(port);
        client.login(name);
        client.expect_code(208);
        client
    }

    /// Logs in as a JSON client under open auth: 202, then 201.
    pub fn login(&mut self, name: &str) {
        self.send_json(&serde_json::json!({"code": 110, "username": name}));
        let mine = self.recv_json();
        assert_eq!(mine, serde_json::json!({"code": 202, "new": name}));
        let joined = self.expect_code(201);
        assert_eq!(joined["new"], name, "{joined}");
    }

    /// Logs in as a text client under open auth.
    pub fn login_text(&mut self, name: &str) {
        self.send(name);
        assert_eq!(self.recv_line(), format!("* you are now {name}"));
        self.expect_line(&format!("* {name} joined #"));
    }

    /// Closes our sending side (the server sees EOF) but keeps reading.
    pub fn shutdown_write(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("cannot shut down the write side");
    }
}

/// A path inside `dir` that does not exist.
pub fn missing_path(dir: &Path) -> PathBuf {
    dir.join("does-not-exist.toml")
}

/// Runs riftd with `launch` and asserts it refuses to start: exit 2, a
/// message naming `needle`, and no listener.
pub fn assert_config_refused(launch: Launch, needle: &str) {
    let finished = launch.args(&["--listen", "127.0.0.1:0"]).run_to_exit();
    assert_eq!(
        finished.status.code(),
        Some(2),
        "stderr: {}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains(needle),
        "stderr does not name {needle:?}: {}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("listening on"),
        "it listened before refusing: {}",
        finished.stderr
    );
}

/// The resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("cannot read /proc/{pid}/status: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// A TLS client configuration (ring, safe defaults) that trusts only
/// `certificate`, for servers started with it.
pub fn tls_client_config(
    certificate: &rcgen::CertifiedKey<rcgen::KeyPair>,
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certificate.cert.der().clone())
        .expect("the generated certificate is a valid root");
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A loopback port nobody listens on right now, for a server whose port
/// must be known before it starts (daemon mode, socket activation). It is
/// picked below the kernel's ephemeral range (32768 and up on Linux): every
/// test's outgoing connections and port-0 listeners take their ports from
/// that range, so none can take this one between the choice and the bind.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let seed = RandomState::new();
    for attempt in 0..10_000u64 {
        let offset = u16::try_from(seed.hash_one(attempt) % 20_000).expect("below 20,000");
        let port = 10_000 + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 10,000 and 30,000 on 127.0.0.1");
}

/// A TCP connection made with rustix so its socket can be set up before
/// `connect`: bound to `local` (another loopback address: all of 127/8 is
/// loopback) and/or given a small receive buffer. Close-on-exec, like
/// std's, so servers that other tests spawn meanwhile cannot inherit it.
pub fn connect_with(
    local: Option<std::net::IpAddr>,
    receive_buffer: Option<usize>,
    to: SocketAddr,
) -> TcpStream {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let socket = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("cannot create a socket");
    if let Some(size) = receive_buffer {
        rustix::net::sockopt::set_socket_recv_buffer_size(&socket, size)
            .expect("cannot set SO_RCVBUF");
    }
    if let Some(address) = local {
        rustix::net::bind(&socket, &SocketAddr::new(address, 0))
            .unwrap_or_else(|error| panic!("cannot bind to {address}: {error}"));
    }
    rustix::net::connect(&socket, &to)
        .unwrap_or_else(|error| panic!("cannot connect to {to}: {error}"));
    TcpStream::from(socket)
}
