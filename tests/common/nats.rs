//! A real `nats-server` with JetStream for cluster tests (issue 14):
//! started per test on a free loopback port in a temporary directory and
//! killed on drop. The binary is `$RIFTD_NATS_SERVER`, else what
//! `tests/cluster/nats-server.sh` prints (installing it the first time;
//! `.ci/run` calls it first).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long the server may take to listen.
const START_WAIT: Duration = Duration::from_secs(10);

/// The nats-server binary: `$RIFTD_NATS_SERVER`, else what the install
/// script prints (installing it the first time).
fn nats_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("RIFTD_NATS_SERVER") {
                return PathBuf::from(path);
            }
            // The workspace's root (riftd's tests) or its parent (the
            // bench tools' tests, which share this harness).
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|dir| dir.join("tests/cluster/nats-server.sh"))
                .find(|script| script.exists())
                .expect("tests/cluster/nats-server.sh is in the workspace");
            let output = Command::new(&script)
                .stderr(Stdio::inherit())
                .output()
                .expect("tests/cluster/nats-server.sh runs");
            assert!(output.status.success(), "{} failed", script.display());
            PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
        })
        .clone()
}

/// A nats-server with JetStream on loopback, killed on drop.
pub struct Nats {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_with(&[])
    }

    /// With extra command-line options (auth, TLS).
    pub fn start_with(extra: &[&str]) -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let child = spawn(port, dir.path(), extra);
        let mut nats = Nats {
            child,
            port,
            _dir: dir,
        };
        nats.wait_listening();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server (`kill -9`) and waits for it; `restart` brings it
    /// back on the same port with the same store.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on its port and store (after `kill`).
    pub fn restart(&mut self) {
        self.child = spawn(self.port, self._dir.path(), &[]);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nats-server exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new(nats_binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts")
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three (or more) nats-servers routed into one NATS cluster with
/// JetStream, on loopback, each with its own store; any can be killed and
/// started again on the same ports and store. All are killed on drop.
pub struct NatsCluster {
    servers: Vec<Option<Child>>,
    ports: Vec<u16>,
    routes: Vec<u16>,
    monitors: Vec<u16>,
    dir: TempDir,
}

impl NatsCluster {
    pub fn start(size: usize) -> NatsCluster {
        let port = |_| super::free_port();
        let mut cluster = NatsCluster {
            servers: (0..size).map(|_| None).collect(),
            ports: (0..size).map(port).collect(),
            routes: (0..size).map(port).collect(),
            monitors: (0..size).map(port).collect(),
            dir: tempfile::tempdir().unwrap(),
        };
        for index in 0..size {
            cluster.spawn(index);
        }
        for index in 0..size {
            cluster.wait_ready(index);
        }
        cluster
    }

    /// Every server's client URL, as a TOML array's items.
    pub fn toml_urls(&self) -> String {
        self.ports
            .iter()
            .map(|port| format!("\"nats://127.0.0.1:{port}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn spawn(&mut self, index: usize) {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect();
        let child = Command::new(nats_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.ports[index].to_string(),
            ])
            .args(["-m", &self.monitors[index].to_string()])
            .args([
                "-n",
                &format!("nats-{index}"),
                "--cluster_name",
                "riftd-test",
            ])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.routes[index]),
            ])
            .args(["--routes", &routes.join(",")])
            .arg("-sd")
            .arg(self.dir.path().join(format!("store-{index}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.servers[index] = Some(child);
    }

    /// Waits until server `index` says JetStream is ready (its `/healthz`
    /// answers 200: it has a meta leader and is current), bounded.
    fn wait_ready(&mut self, index: usize) {
        let deadline = Instant::now() + START_WAIT * 3;
        loop {
            if let Some(Ok(Some(status))) = self.servers[index].as_mut().map(Child::try_wait) {
                panic!("nats-server {index} exited at start: {status}");
            }
            if healthz(self.monitors[index]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {index} never became healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9` of server `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.servers[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `index` again, on its ports and store, and waits until
    /// it is ready.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        self.spawn(index);
        self.wait_ready(index);
    }
}

/// True if the monitoring port answers `GET /healthz` with 200.
fn healthz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.servers.len() {
            self.kill(index);
        }
    }
}
