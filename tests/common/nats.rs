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
        let child = Command::new(nats_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let mut nats = Nats {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nats.child.try_wait() {
                panic!("nats-server exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
