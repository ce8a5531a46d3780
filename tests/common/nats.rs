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
            let script =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/nats-server.sh");
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
