//! riftd under systemd: socket activation through `systemd-socket-activate`
//! (the real protocol: `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`), and
//! the whole install-and-operate walk of README's "Install as a systemd
//! service" in a real systemd booted with `systemd-nspawn`
//! (`tests/systemd/walk.sh`). See `design/architecture.md`, "Socket
//! activation", and contrib/README.md.

use crate::common;

use common::{Client, EXIT_TIMEOUT, READ_TIMEOUT, forward_lines, tls_client_config};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Socket activation with systemd-socket-activate.

/// How long systemd-socket-activate may take to report it listens.
const ACTIVATOR_TIMEOUT: Duration = Duration::from_secs(20);

/// riftd started by `systemd-socket-activate`, which binds the sockets,
/// waits for the first connection and then execs riftd with them.
struct Activated {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
    /// The activator's addresses, in `-l` order.
    addrs: Vec<SocketAddr>,
    /// Holds the config and its files while riftd runs.
    dir: Option<TempDir>,
}

impl Activated {
    /// Runs `systemd-socket-activate -l ADDR… --fdname=NAMES riftd --config
    /// riftd.toml` with `files` beside the config, on free loopback ports.
    /// The activator cannot bind port 0, so a free port is found first; if
    /// another process takes it meanwhile, the start is retried.
    fn start(sockets: usize, fdnames: &str, config: &str, files: &[(&str, String)]) -> Activated {
        Activated::start_with(&[], sockets, fdnames, config, files)
    }

    /// Like `start`, with extra activator options (e.g. `--datagram`).
    fn start_with(
        options: &[&str],
        sockets: usize,
        fdnames: &str,
        config: &str,
        files: &[(&str, String)],
    ) -> Activated {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        std::fs::write(dir.path().join("riftd.toml"), config).expect("cannot write the config");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("cannot write a file");
        }
        let mut failures = Vec::new();
        for _attempt in 0..5 {
            let addrs: Vec<SocketAddr> = (0..sockets).map(|_| free_port()).collect();
            let mut command = Command::new("systemd-socket-activate");
            command.args(options);
            for address in &addrs {
                command.arg("-l").arg(address.to_string());
            }
            command
                .arg(format!("--fdname={fdnames}"))
                .arg(env!("CARGO_BIN_EXE_riftd"))
                .arg("--config")
                .arg(dir.path().join("riftd.toml"))
                .args(["--history-file", ""])
                .env("RUST_LOG", "info")
                .env_remove("JOURNAL_STREAM")
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = command.spawn().unwrap_or_else(|error| {
                panic!("cannot run systemd-socket-activate (Debian package systemd): {error}")
            });
            drop(forward_lines(child.stdout.take().expect("stdout is piped")));
            let lines = forward_lines(child.stderr.take().expect("stderr is piped"));
            let mut activated = Activated {
                child,
                lines,
                log: Vec::new(),
                addrs,
                dir: None,
            };
            // "Listening on 127.0.0.1:PORT as 3." once per socket.
            let mut listening = 0;
            while listening < sockets {
                match activated.next_line(ACTIVATOR_TIMEOUT) {
                    Some(line) if line.starts_with("Listening on ") => listening += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            if listening == sockets {
                activated.dir = Some(dir);
                return activated;
            }
            failures.push(activated.log.clone());
        }
        panic!("systemd-socket-activate never listened: {failures:#?}");
    }

    /// The next stderr line (of the activator, then of riftd), or `None`
    /// when stderr closed or nothing came within `timeout`.
    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.log.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("no log line with {needle:?}; log: {:#?}", self.log),
            }
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("cannot wait") {
                // The process is gone: its stderr reaches EOF, so this
                // collects every line it wrote.
                self.log.extend(self.lines.iter());
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "riftd did not exit within {EXIT_TIMEOUT:?}; log: {:#?}",
                self.log
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port that was free a moment ago
/// (`common::free_port`: outside the ephemeral range).
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::free_port()))
}

#[test]
fn a_socket_passed_by_systemd_replaces_listen_and_serves_json_and_text_clients() {
    // The config's own address is held by the test: were riftd to bind it
    // rather than take the passed socket, it would fail with EADDRINUSE.
    let held = TcpListener::bind("127.0.0.1:0").expect("cannot bind");
    let config = format!("listen = \"{}\"\n", held.local_addr().unwrap());
    let mut activated = Activated::start(1, "plain", &config, &[]);
    let address = activated.addrs[0];
    // The first connection makes the activator exec riftd.
    let mut alice = Client::greeted(address);
    alice.send_json(&json!({"code": 110, "username": "alice"}));
    alice.expect_code(202);
    let line = activated.wait_for_log("socket activation");
    assert!(line.contains("1 plain and 0 TLS"), "{line}");
    activated.wait_for_log(&format!("listening on {address}"));
    let mut bob = Client::greeted(address);
    bob.send("bob");
    bob.expect_line("bob");
    alice.expect_code(201);
    bob.send("hello from text");
    let said = alice.expect_code(200);
    assert_eq!(said["message"]["text"], "hello from text");
    assert!(
        !activated
            .log
            .iter()
            .any(|line| line.contains(&held.local_addr().unwrap().to_string())),
        "riftd used the config's address: {:#?}",
        activated.log
    );
}

#[test]
fn a_socket_named_tls_speaks_tls_and_one_named_plain_speaks_plain_text() {
    let certificate = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("cannot generate a certificate");
    let config = "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n";
    let files = [
        ("cert.pem", certificate.cert.pem()),
        ("key.pem", certificate.signing_key.serialize_pem()),
    ];
    let mut activated = Activated::start(2, "plain:tls", config, &files);
    let (plain, tls) = (activated.addrs[0], activated.addrs[1]);
    let mut client = Client::greeted(plain);
    client.send_json(&json!({"code": 110, "username": "alice"}));
    client.expect_code(202);
    activated.wait_for_log(&format!("listening on {tls} (TLS)"));
    let greeting = tls_greeting(tls, &certificate);
    assert!(greeting.contains("\"code\":210"), "{greeting}");
}

#[test]
fn a_misnamed_socket_is_refused_with_exit_status_2() {
    let mut activated = Activated::start(1, "tsl", "", &[]);
    // The connection only triggers the exec; riftd refuses before serving.
    let _trigger = TcpStream::connect(activated.addrs[0]).expect("cannot connect");
    let status = activated.wait_exit();
    assert_eq!(status.code(), Some(2), "log: {:#?}", activated.log);
    assert!(
        activated.log.iter().any(|line| line.contains("\"tsl\"")),
        "{:#?}",
        activated.log
    );
}

#[test]
fn a_tls_socket_without_a_certificate_is_refused_with_exit_status_2() {
    let mut activated = Activated::start(1, "tls", "", &[]);
    let _trigger = TcpStream::connect(activated.addrs[0]).expect("cannot connect");
    let status = activated.wait_exit();
    assert_eq!(status.code(), Some(2), "log: {:#?}", activated.log);
    assert!(
        activated.log.iter().any(|line| line.contains("tls_cert")),
        "{:#?}",
        activated.log
    );
}

#[test]
fn a_passed_socket_that_is_not_a_listening_tcp_socket_is_refused_with_exit_status_2() {
    let mut activated = Activated::start_with(&["--datagram"], 1, "plain", "", &[]);
    // A datagram to the activator's UDP socket triggers the exec.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("cannot bind UDP");
    sender
        .send_to(b"x", activated.addrs[0])
        .expect("cannot send a datagram");
    let status = activated.wait_exit();
    assert_eq!(status.code(), Some(2), "log: {:#?}", activated.log);
    assert!(
        activated
            .log
            .iter()
            .any(|line| line.contains("is not a listening TCP socket")),
        "{:#?}",
        activated.log
    );
}

/// Connects over TLS, trusting `certificate`, and returns the first line.
fn tls_greeting(address: SocketAddr, certificate: &rcgen::CertifiedKey<rcgen::KeyPair>) -> String {
    let connection = rustls::ClientConnection::new(
        tls_client_config(certificate),
        "localhost".try_into().expect("a valid server name"),
    )
    .expect("cannot start a TLS client");
    let socket = TcpStream::connect(address).expect("cannot connect");
    socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    stream.flush().expect("TLS handshake failed");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!("no TLS greeting from {address}: {other:?} after {line:?}"),
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn the_contrib_socket_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    for name in [
        "riftd.service",
        "riftd@.service",
        "riftd.socket",
        "riftd-tls.socket",
    ] {
        let unit = std::fs::read_to_string(contrib.join(name))
            .unwrap_or_else(|error| panic!("cannot read contrib/{name}: {error}"));
        let unit = unit.replace("/usr/local/bin/riftd", env!("CARGO_BIN_EXE_riftd"));
        std::fs::write(dir.path().join(name), unit).expect("cannot write a unit");
    }
    // The template (reuse_port nodes, issue 15) is verified as it is:
    // systemd-analyze checks a template file without an instance name.
    verify_unit(&dir.path().join("riftd@.service"));
    for name in ["riftd.socket", "riftd-tls.socket"] {
        let unit = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let expected = if name == "riftd.socket" {
            "plain"
        } else {
            "tls"
        };
        assert!(
            unit.contains(&format!("\nFileDescriptorName={expected}\n")),
            "{name} must name its socket {expected:?}: {unit}"
        );
        verify_unit(&dir.path().join(name));
    }
}

/// `systemd-analyze verify` passes the unit file at `path` without a
/// remark about riftd's units.
fn verify_unit(path: &Path) {
    let name = path.display();
    let verified = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(path)
        .output()
        .expect("cannot run systemd-analyze (Debian package systemd)");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(verified.status.success(), "{name}: {output}");
    assert!(
        !output.contains("riftd"),
        "systemd-analyze has remarks about {name}: {output}"
    );
}

#[test]
fn the_contrib_unit_does_not_restart_a_refused_configuration() {
    for name in ["riftd.service", "riftd@.service"] {
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("contrib")
                .join(name),
        )
        .unwrap_or_else(|error| panic!("cannot read contrib/{name}: {error}"));
        // riftd exits 2 on a refused configuration (src/main.rs, Failure).
        assert!(
            unit.contains("\nRestartPreventExitStatus=2\n"),
            "{name}: {unit}"
        );
        // README.md creates /etc/riftd with mode 0750.
        assert!(
            unit.contains("\nConfigurationDirectoryMode=0750\n"),
            "{name}: {unit}"
        );
    }
}

// ---------------------------------------------------------------------------
// The install-and-operate walk in a real systemd.

/// How long the whole walk may take (two boots; about 25 s on a 2-core
/// machine once the container root is cached, a few minutes more when the
/// root must be built first).
const WALK_TIMEOUT: Duration = Duration::from_secs(900);

/// README's "Install as a systemd service", run exactly as written inside a
/// Debian 12 container booted by systemd-nspawn (systemd 252 as PID 1), then
/// operated: Type=notify start, chat in JSON and text, reload and its log
/// line, kill -9 and restart with history, stop with 205, a refused config
/// not restarted, accounts, `systemd-analyze security`, start at boot,
/// socket activation (plain and TLS). The steps are in
/// tests/systemd/inside.sh; tests/systemd/walk.sh boots the container.
///
/// Needs root, systemd-nspawn and the cached root that `.ci/run` builds
/// (tests/systemd/build-root.sh; built here when missing). Without them the
/// test fails and says what to run: it never passes without having walked.
#[test]
fn riftd_installed_as_the_readme_says_runs_under_a_real_systemd() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/systemd/walk.sh");
    let log = tempfile::NamedTempFile::new().expect("cannot create a log file");
    let mut child = Command::new(&script)
        .arg(env!("CARGO_BIN_EXE_riftd"))
        .stdin(Stdio::null())
        .stdout(log.reopen().expect("cannot reopen the log"))
        .stderr(log.reopen().expect("cannot reopen the log"))
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    let deadline = Instant::now() + WALK_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for walk.sh") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // walk.sh powers the container off on SIGTERM (its EXIT trap).
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    match status {
        Some(status) if status.success() => {
            assert!(
                output.contains("walk.sh: every step passed"),
                "walk.sh exited 0 without walking:\n{output}"
            );
        }
        Some(status) => panic!("{} failed ({status}):\n{output}", script.display()),
        None => panic!(
            "{} did not finish within {WALK_TIMEOUT:?}:\n{output}",
            script.display()
        ),
    }
}

/// riftd run on two listening sockets passed as systemd passes them, the
/// test keeping its own copy of each (as systemd does).
struct TwoPassed {
    child: Child,
    lines: Receiver<String>,
    sockets: [TcpListener; 2],
}

impl Drop for TwoPassed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_with_two_passed_sockets() -> TwoPassed {
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::os::unix::process::CommandExt;
    let sockets = [0, 1].map(|_| TcpListener::bind("127.0.0.1:0").expect("cannot bind"));
    let fds = sockets.each_ref().map(|socket| socket.as_raw_fd());
    // `$$` is the shell's pid, which `exec` hands on to riftd.
    let script = format!(
        "LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=plain:plain \
         exec \"$0\" --history-file '' 3<&{} 4<&{}",
        sockets[0].as_raw_fd(),
        sockets[1].as_raw_fd()
    );
    // bash, not sh: dash refuses a descriptor number above 9 in a
    // redirection ("Bad fd number"), and the sockets get such numbers
    // whenever other tests of this process hold many descriptors.
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_riftd"))
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Close-on-exec is cleared in the child only: the sockets stay
    // close-on-exec in this process, so a child that a test of another
    // module spawns at the same moment does not inherit them.
    // SAFETY: the closure only calls fcntl (async-signal-safe) on
    // descriptors that `sockets` keeps open until the child has forked.
    unsafe {
        command.pre_exec(move || {
            for fd in fds {
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("cannot run bash");
    let lines = forward_lines(child.stderr.take().expect("stderr is piped"));
    let passed = TwoPassed {
        child,
        lines,
        sockets,
    };
    let deadline = Instant::now() + ACTIVATOR_TIMEOUT;
    let mut log = Vec::new();
    while !log
        .iter()
        .any(|line: &String| line.contains("listening on 127.0.0.1"))
    {
        match passed
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => log.push(line),
            Err(_) => panic!("riftd did not start on the passed sockets: {log:#?}"),
        }
    }
    passed
}

#[test]
fn a_passed_socket_shut_down_by_another_holder_does_not_hang_the_loop() {
    // Accepting on a socket that no longer listens fails with EINVAL every
    // time: the loop retried it for good and served nobody again.
    let passed = start_with_two_passed_sockets();
    let other = passed.sockets[1].local_addr().unwrap();
    rustix::net::shutdown(&passed.sockets[0], rustix::net::Shutdown::Read)
        .expect("cannot shut the listening socket down");
    let mut alice = Client::greeted(other);
    alice.send_json(&json!({"code": 108, "token": "alive"}));
    alice.expect_code(207);
}

#[test]
fn a_socket_named_web_is_a_web_listener_that_waits_for_the_request() {
    let mut activated = Activated::start(2, "plain:web", "", &[]);
    let (plain, web) = (activated.addrs[0], activated.addrs[1]);
    let mut client = Client::greeted(plain);
    client.send_json(&json!({"code": 110, "username": "alice"}));
    client.expect_code(202);
    let line = activated.wait_for_log("socket activation");
    assert!(line.contains("1 web and 0 web TLS"), "{line}");
    activated.wait_for_log(&format!("listening on {web} (web: HTTP only)"));
    // HTTP from the first byte: a request line is answered, not greeted.
    let mut stream = TcpStream::connect(web).expect("cannot connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
        .write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read failed");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
}
