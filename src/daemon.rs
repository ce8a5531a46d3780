//! Running riftd as a Unix daemon: the locked pidfile, forking with a
//! readiness pipe, and `stop`/`status` by signal and lock.
//!
//! The pidfile's `flock` is the truth about whether a daemon runs: a daemon
//! holds it for its whole life and the kernel releases it when the process
//! dies, however it dies. Nothing here signals a pid whose file is unlocked,
//! so a stale pidfile can never make us kill an unrelated process; nor a pid
//! that is not a riftd holding that very file open (another program may
//! hold the lock, and the file may name anything).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How often `stop` checks whether the daemon has let go of its lock.
const STOP_POLL: Duration = Duration::from_millis(20);
/// How long `stop` waits for the kernel to reap a SIGKILLed daemon.
const KILL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("riftd is already running (pid {pid}, pidfile {path})")]
    AlreadyRunning { pid: String, path: PathBuf },
    #[error("pidfile {path}: {source}")]
    PidFile { path: PathBuf, source: io::Error },
    #[error("log file {path}: {source}")]
    LogFile { path: PathBuf, source: io::Error },
    #[error("cannot fork: {0}")]
    Fork(String),
    #[error("the daemon did not start: {0}")]
    NotReady(String),
    #[error("cannot signal pid {pid}: {source}")]
    Signal { pid: i32, source: io::Error },
    #[error("pid {pid} still holds {path} after SIGKILL")]
    Unkillable { pid: i32, path: PathBuf },
    /// `pid_file` names something that is not a pidfile (a typo, the
    /// config itself, a symlink, a device): left untouched, and the
    /// configuration is refused.
    #[error("pid_file {path} {reason}; refusing to overwrite or delete it")]
    NotAPidFile { path: PathBuf, reason: String },
    /// `log_file` names a FIFO, a directory or a socket: refused as a
    /// configuration mistake.
    #[error("log_file {path} is {kind}, not a regular file or a character device")]
    NotALogFile { path: PathBuf, kind: &'static str },
    #[error("refusing to signal pid {pid} named in {path}: {reason}")]
    Unverified {
        pid: i32,
        path: PathBuf,
        reason: String,
    },
}

impl DaemonError {
    /// Whether the configuration is at fault (exit 2), not the run.
    pub fn is_refused_config(&self) -> bool {
        matches!(
            self,
            DaemonError::NotAPidFile { .. } | DaemonError::NotALogFile { .. }
        )
    }
}

fn not_a_pid_file(path: &Path, reason: impl Into<String>) -> DaemonError {
    DaemonError::NotAPidFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The longest content a pidfile can have: a pid, a newline, some slack.
const MAX_PID_TEXT: u64 = 32;

/// Opens an existing or new pidfile without following a symlink in its
/// last component, and refuses anything but a regular file. Non-blocking,
/// so that a FIFO at the path is refused instead of hanging `status` and
/// `stop` until some writer opens it.
fn open_pid_file(path: &Path, options: &mut OpenOptions) -> Result<File, DaemonError> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = options
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|error| {
            if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                not_a_pid_file(path, "is a symbolic link")
            } else {
                pid_error(path)(error)
            }
        })?;
    let metadata = file.metadata().map_err(pid_error(path))?;
    if !metadata.file_type().is_file() {
        return Err(not_a_pid_file(path, "is not a regular file"));
    }
    // A pidfile has one name: a hard link planted at the path would have
    // another file (empty, say) overwritten with our pid.
    if std::os::unix::fs::MetadataExt::nlink(&metadata) > 1 {
        return Err(not_a_pid_file(
            path,
            format!(
                "has {} names (hard links)",
                std::os::unix::fs::MetadataExt::nlink(&metadata)
            ),
        ));
    }
    Ok(file)
}

/// A pid as a pidfile holds it: decimal digits, surrounding whitespace
/// allowed, greater than 0.
fn parse_pid(text: &str) -> Option<i32> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|pid| *pid > 0)
}

fn pid_error(path: &Path) -> impl FnOnce(io::Error) -> DaemonError + '_ {
    move |source| DaemonError::PidFile {
        path: path.to_owned(),
        source,
    }
}

/// The default pidfile: `/run/riftd/riftd.pid` for root, else
/// `$XDG_RUNTIME_DIR/riftd.pid`, else `riftd.pid` in the working directory.
pub fn default_pid_file() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/run/riftd/riftd.pid")
    } else if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(runtime).join("riftd.pid")
    } else {
        PathBuf::from("riftd.pid")
    }
}

/// The default daemon log: `/var/log/riftd/riftd.log` for root, else
/// `riftd.log` in the working directory.
pub fn default_log_file() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/log/riftd/riftd.log")
    } else {
        PathBuf::from("riftd.log")
    }
}

/// Makes a path absolute against the working directory, since the daemon
/// changes directory to `/`.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The pidfile, locked for as long as this value (or a forked copy of its
/// descriptor) lives.
#[derive(Debug)]
pub struct PidFile {
    file: File,
    path: PathBuf,
}

impl PidFile {
    /// Creates (or reuses a stale) pidfile and takes its lock. A file locked
    /// by a live daemon is refused with `AlreadyRunning`. Two starts racing
    /// open the same inode, so only one gets the lock. A symlink, a file
    /// that is not regular, or one holding anything but a pid is refused
    /// with `NotAPidFile` and left as it was.
    pub fn acquire(path: &Path) -> Result<PidFile, DaemonError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(pid_error(path))?;
        }
        let file = open_pid_file(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644),
        )?;
        match file.try_lock() {
            Ok(()) => {
                let size = file.metadata().map_err(pid_error(path))?.len();
                // Empty (new, or a start under way), or a pid: ours to use.
                let is_pid = size == 0
                    || read_pid_text(&file).is_some_and(|text| parse_pid(&text).is_some());
                if size > MAX_PID_TEXT || !is_pid {
                    return Err(not_a_pid_file(
                        path,
                        format!("holds {size} bytes that are not a pid"),
                    ));
                }
                Ok(PidFile {
                    file,
                    path: path.to_owned(),
                })
            }
            Err(TryLockError::WouldBlock) => Err(DaemonError::AlreadyRunning {
                pid: read_pid_text(&file)
                    .and_then(|text| parse_pid(&text))
                    .map_or_else(|| "unknown".to_owned(), |pid| pid.to_string()),
                path: path.to_owned(),
            }),
            Err(TryLockError::Error(source)) => Err(pid_error(path)(source)),
        }
    }

    /// Replaces the content with `pid` (the file stays locked throughout, so
    /// a reader that sees it locked and empty knows a start is under way).
    pub fn write_pid(&mut self, pid: u32) -> Result<(), DaemonError> {
        let path = self.path.clone();
        self.file.set_len(0).map_err(pid_error(&path))?;
        self.file.rewind().map_err(pid_error(&path))?;
        writeln!(self.file, "{pid}").map_err(pid_error(&path))?;
        self.file.sync_all().map_err(pid_error(&path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file, still under our lock, then lets the lock go. A
    /// file that is no longer ours at that path (moved away and replaced)
    /// is left alone.
    pub fn remove(self) {
        use std::os::unix::fs::MetadataExt;
        let ours = self.file.metadata();
        let there = std::fs::symlink_metadata(&self.path);
        let is_ours = match (&ours, &there) {
            (Ok(ours), Ok(there)) => ours.dev() == there.dev() && ours.ino() == there.ino(),
            _ => false,
        };
        if !is_ours {
            log::warn!(
                "pidfile {} is no longer the file riftd locked; leaving it",
                self.path.display()
            );
            return;
        }
        if let Err(error) = std::fs::remove_file(&self.path) {
            log::warn!("cannot remove pidfile {}: {error}", self.path.display());
        }
    }
}

/// What `acquire` would refuse about `path` as a pidfile (a symlink, a
/// hard link, not a regular file, content that is not a pid), checked
/// without creating, locking or changing anything: for `--check-config`.
pub fn check_pid_file(path: &Path) -> Result<(), DaemonError> {
    let file = match open_pid_file(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(DaemonError::PidFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    let size = file.metadata().map_err(pid_error(path))?.len();
    let is_pid = size == 0 || read_pid_text(&file).is_some_and(|text| parse_pid(&text).is_some());
    if size > MAX_PID_TEXT || !is_pid {
        return Err(not_a_pid_file(
            path,
            format!("holds {size} bytes that are not a pid"),
        ));
    }
    Ok(())
}

/// What `open_log` would refuse about `path` (a FIFO, a directory, a
/// socket), checked without creating or opening it: for `--check-config`.
pub fn check_log_file(path: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() || metadata.file_type().is_char_device() => Ok(()),
        Ok(metadata) => Err(DaemonError::NotALogFile {
            path: path.to_owned(),
            kind: crate::config::describe_file_type(&metadata.file_type()),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DaemonError::LogFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The file's trimmed text, read at most `MAX_PID_TEXT` bytes deep (a
/// huge file named by mistake is not read whole); `None` when empty.
fn read_pid_text(mut file: &File) -> Option<String> {
    let mut bytes = Vec::new();
    file.rewind().ok()?;
    file.take(MAX_PID_TEXT).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// What the pidfile says about a daemon.
#[derive(Debug)]
pub enum Probe {
    /// Locked: a daemon holds it. `pid` is `None` while it is starting.
    Running { pid: Option<i32>, file: File },
    /// No file, or an unlocked (stale) one.
    NotRunning { is_stale: bool },
}

/// Looks at the pidfile without changing anything.
pub fn probe(path: &Path) -> Result<Probe, DaemonError> {
    let file = match open_pid_file(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(DaemonError::PidFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Probe::NotRunning { is_stale: false });
        }
        Err(error) => return Err(error),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Probe::NotRunning { is_stale: true }),
        Err(TryLockError::WouldBlock) => {
            let pid = read_pid_text(&file).and_then(|text| parse_pid(&text));
            Ok(Probe::Running { pid, file })
        }
        Err(TryLockError::Error(error)) => Err(pid_error(path)(error)),
    }
}

/// A process checked to be a riftd that holds this very pidfile open,
/// addressed by a pidfd so that a pid reused after the check is never hit.
struct Target {
    pid: i32,
    pidfd: std::os::fd::OwnedFd,
}

impl Target {
    /// Refuses (`Unverified`) unless `pid` holds an open descriptor to the
    /// inode of `pidfile` (it is the process that locked it) and its
    /// executable is riftd. Another process holding the lock, or a file
    /// naming some unrelated pid, must never get us to signal that pid.
    fn verify(pid: i32, pidfile: &File, path: &Path) -> Result<Target, DaemonError> {
        use std::os::unix::fs::MetadataExt;
        let refuse = |reason: String| DaemonError::Unverified {
            pid,
            path: path.to_owned(),
            reason,
        };
        let raw = rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| refuse("that is not a process id".to_owned()))?;
        // Opened first: whatever we check below is this process or, if it
        // died and its pid was reused meanwhile, a signal to it is ESRCH.
        let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
            .map_err(|errno| match errno {
                rustix::io::Errno::SRCH => {
                    refuse("no such process, yet another process holds the lock".to_owned())
                }
                errno => refuse(format!("cannot open it: {}", io::Error::from(errno))),
            })?;
        let ours = pidfile.metadata().map_err(pid_error(path))?;
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let entries = std::fs::read_dir(proc_dir.join("fd")).map_err(|error| {
            refuse(format!(
                "cannot check its open files ({}/fd: {error}); run stop as its user or as root",
                proc_dir.display()
            ))
        })?;
        let holds_pidfile = entries.flatten().any(|entry| {
            std::fs::metadata(entry.path())
                .is_ok_and(|open| open.dev() == ours.dev() && open.ino() == ours.ino())
        });
        if !holds_pidfile {
            return Err(refuse(
                "it does not hold the pidfile open, so it is not the riftd that locked it"
                    .to_owned(),
            ));
        }
        let exe = std::fs::read_link(proc_dir.join("exe")).map_err(|error| {
            refuse(format!(
                "cannot read its executable ({}/exe: {error})",
                proc_dir.display()
            ))
        })?;
        if !is_riftd_executable(&exe) {
            return Err(refuse(format!(
                "its executable {} is not riftd",
                exe.display()
            )));
        }
        Ok(Target { pid, pidfd })
    }

    fn signal(&self, signal: rustix::process::Signal) -> Result<(), DaemonError> {
        match rustix::process::pidfd_send_signal(&self.pidfd, signal) {
            Ok(()) => Ok(()),
            // It exited between our look at the lock and the signal: fine.
            Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(errno) => Err(DaemonError::Signal {
                pid: self.pid,
                source: errno.into(),
            }),
        }
    }
}

/// Whether a `/proc/PID/exe` target is a riftd: the same file as this
/// program, or a file named `riftd…` (also after an upgrade replaced it,
/// when the link reads `… (deleted)`).
fn is_riftd_executable(exe: &Path) -> bool {
    if std::env::current_exe().is_ok_and(|ours| ours == exe) {
        return true;
    }
    exe.file_name()
        .map(|name| name.to_string_lossy())
        .is_some_and(|name| name.starts_with("riftd"))
}

/// Waits until nobody holds the lock on `file`, or `timeout` has passed.
/// Elapsed time is compared with the timeout, never added to a clock, so no
/// configured value can overflow it.
fn wait_unlocked(file: &File, timeout: Duration) -> bool {
    let started = Instant::now();
    loop {
        if file.try_lock_shared().is_ok() {
            let _ = file.unlock();
            return true;
        }
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(STOP_POLL);
    }
}

/// How `stop` went.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    NotRunning {
        is_stale: bool,
    },
    /// It exited after SIGTERM.
    Terminated {
        pid: i32,
    },
    /// It ignored SIGTERM for `timeout` and was killed.
    Killed {
        pid: i32,
    },
}

/// Added to `shutdown_timeout_secs` before SIGKILL: the daemon uses that
/// same deadline to flush its clients, and must not be killed while it is
/// still inside it.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// SIGTERM, wait up to `timeout` + `STOP_GRACE` for the lock to be released,
/// then SIGKILL; only to a process that `Target::verify` accepts.
pub fn stop(path: &Path, timeout: Duration) -> Result<Stopped, DaemonError> {
    let (pid, file) = match probe(path)? {
        Probe::NotRunning { is_stale } => return Ok(Stopped::NotRunning { is_stale }),
        Probe::Running {
            pid: Some(pid),
            file,
        } => (pid, file),
        Probe::Running { pid: None, file } => {
            // Starting: give it a moment to write its pid.
            let started = wait_for_pid(path, Duration::from_secs(5))?;
            match started {
                Some(pid) => (pid, file),
                None => {
                    return Err(DaemonError::PidFile {
                        path: path.to_owned(),
                        source: io::Error::other("locked but holds no pid"),
                    });
                }
            }
        }
    };
    let target = Target::verify(pid, &file, path)?;
    target.signal(rustix::process::Signal::TERM)?;
    if wait_unlocked(&file, timeout.saturating_add(STOP_GRACE)) {
        return Ok(Stopped::Terminated { pid });
    }
    log::warn!(
        "pid {pid} did not stop within {} s of SIGTERM; sending SIGKILL",
        timeout.as_secs()
    );
    target.signal(rustix::process::Signal::KILL)?;
    if wait_unlocked(&file, KILL_WAIT) {
        Ok(Stopped::Killed { pid })
    } else {
        Err(DaemonError::Unkillable {
            pid,
            path: path.to_owned(),
        })
    }
}

fn wait_for_pid(path: &Path, timeout: Duration) -> Result<Option<i32>, DaemonError> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        match probe(path)? {
            Probe::Running { pid: Some(pid), .. } => return Ok(Some(pid)),
            Probe::NotRunning { .. } => return Ok(None),
            Probe::Running { pid: None, .. } => std::thread::sleep(STOP_POLL),
        }
    }
    Ok(None)
}

/// Opens the daemon's log for appending (0640), creating its directory.
/// It must be a regular file or a character device (`/dev/null`); it is
/// opened non-blocking, so that a FIFO there is refused instead of
/// blocking `start` — or, at SIGHUP, the event loop — until a reader
/// comes.
pub fn open_log(path: &Path) -> Result<File, DaemonError> {
    use std::os::unix::fs::FileTypeExt;
    let error = |source| DaemonError::LogFile {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|source| {
            // ENXIO: a FIFO nobody reads (a non-blocking open for writing).
            if source.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) {
                DaemonError::NotALogFile {
                    path: path.to_owned(),
                    kind: "a FIFO",
                }
            } else {
                error(source)
            }
        })?;
    let file_type = file.metadata().map_err(error)?.file_type();
    if !file_type.is_file() && !file_type.is_char_device() {
        return Err(DaemonError::NotALogFile {
            path: path.to_owned(),
            kind: crate::config::describe_file_type(&file_type),
        });
    }
    // Log lines are written with blocking writes, as before.
    let flags = rustix::fs::fcntl_getfl(&file).map_err(|errno| error(errno.into()))?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)
        .map_err(|errno| error(errno.into()))?;
    Ok(file)
}

/// Points stdout and stderr at the log file again (after logrotate moved
/// it), so later log lines land in the new file.
pub fn reopen_log(path: &Path) -> Result<(), DaemonError> {
    let file = open_log(path)?;
    let error = |errno: rustix::io::Errno| DaemonError::LogFile {
        path: path.to_owned(),
        source: errno.into(),
    };
    rustix::stdio::dup2_stdout(&file).map_err(error)?;
    rustix::stdio::dup2_stderr(&file).map_err(error)?;
    Ok(())
}

/// Which side of the fork this process is on.
pub enum Forked {
    /// The command the operator ran: wait for the daemon's word.
    Parent(Readiness),
    /// The daemon: report readiness (or failure) through the pipe.
    Daemon(Ready),
}

/// The parent's end of the readiness pipe.
pub struct Readiness(io::PipeReader);

impl Readiness {
    /// Blocks until the daemon reports. `Ok(pid)` once it is listening.
    pub fn wait(mut self) -> Result<u32, DaemonError> {
        let mut report = String::new();
        let _ = self.0.read_to_string(&mut report);
        let report = report.trim();
        if let Some(pid) = report.strip_prefix("ready ") {
            return pid
                .parse()
                .map_err(|_| DaemonError::NotReady(format!("garbled report {report:?}")));
        }
        Err(DaemonError::NotReady(match report.strip_prefix("error ") {
            Some(error) => error.to_owned(),
            None => "it exited before reporting; see its log file".to_owned(),
        }))
    }
}

/// The daemon's end of the readiness pipe.
pub struct Ready(io::PipeWriter);

impl Ready {
    pub fn ok(mut self) {
        let _ = writeln!(self.0, "ready {}", std::process::id());
    }

    pub fn fail(mut self, error: &dyn std::fmt::Display) {
        let _ = writeln!(self.0, "error {error}");
    }
}

/// Detaches from the terminal: fork, setsid, fork, chdir `/`, stdin from
/// /dev/null, stdout and stderr to `log`. Call it before any thread, `Poll`
/// or signal handler exists; listeners and the pidfile lock survive it.
pub fn daemonize(log: File) -> Result<Forked, DaemonError> {
    let (reader, writer) = io::pipe().map_err(|error| DaemonError::Fork(error.to_string()))?;
    let stdout = log
        .try_clone()
        .map_err(|error| DaemonError::Fork(error.to_string()))?;
    let outcome = daemonize::Daemonize::new()
        .working_directory("/")
        .umask(0o027)
        .stdout(stdout)
        .stderr(log)
        .execute();
    match outcome {
        daemonize::Outcome::Parent(Ok(_)) => {
            drop(writer);
            Ok(Forked::Parent(Readiness(reader)))
        }
        daemonize::Outcome::Parent(Err(error)) => Err(DaemonError::Fork(error.to_string())),
        daemonize::Outcome::Child(Ok(_)) => {
            drop(reader);
            Ok(Forked::Daemon(Ready(writer)))
        }
        daemonize::Outcome::Child(Err(error)) => {
            let ready = Ready(writer);
            ready.fail(&format!("daemonizing failed: {error}"));
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquire_of_a_held_pidfile_is_already_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riftd.pid");
        let mut first = PidFile::acquire(&path).unwrap();
        first.write_pid(4242).unwrap();
        match PidFile::acquire(&path) {
            Err(DaemonError::AlreadyRunning { pid, .. }) => assert_eq!(pid, "4242"),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        assert!(matches!(
            probe(&path).unwrap(),
            Probe::Running {
                pid: Some(4242),
                ..
            }
        ));
    }

    #[test]
    fn a_stale_pidfile_is_reported_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("riftd.pid");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "99999999\n").unwrap();
        assert!(matches!(
            probe(&path).unwrap(),
            Probe::NotRunning { is_stale: true }
        ));
        let mut pidfile = PidFile::acquire(&path).unwrap();
        pidfile.write_pid(7).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\n");
        pidfile.remove();
        assert!(!path.exists());
        assert!(matches!(
            probe(&path).unwrap(),
            Probe::NotRunning { is_stale: false }
        ));
    }

    #[test]
    fn waiting_for_an_unlocked_pidfile_with_an_enormous_timeout_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riftd.pid");
        let file = File::create(&path).unwrap();
        // `shutdown_timeout_secs = 9223372036854775807` plus the grace used
        // to overflow `Instant + Duration`.
        let timeout = Duration::from_secs(i64::MAX as u64).saturating_add(STOP_GRACE);
        assert!(wait_unlocked(&file, timeout));
        assert!(wait_unlocked(&file, Duration::MAX));
    }

    #[test]
    fn a_file_that_does_not_hold_a_pid_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riftd.toml");
        let config = "listen = \"127.0.0.1:5050\"\n";
        for text in [config, "12 34\n", "-5\n", "0\n", "\n", "\u{feff}77\n"] {
            std::fs::write(&path, text).unwrap();
            let error = PidFile::acquire(&path).unwrap_err();
            assert!(error.is_refused_config(), "{text:?}: {error}");
            assert!(error.to_string().contains("riftd.toml"), "{error}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
        // Large and binary files are refused without being read whole.
        std::fs::write(&path, vec![b'7'; 4096]).unwrap();
        assert!(PidFile::acquire(&path).unwrap_err().is_refused_config());
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        assert!(PidFile::acquire(&path).unwrap_err().is_refused_config());
        assert_eq!(std::fs::read(&path).unwrap(), [0xff, 0xfe, b'\n']);
    }

    #[test]
    fn a_symlinked_pidfile_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        let link = dir.path().join("riftd.pid");
        for text in ["precious data\n", "", "1234\n"] {
            std::fs::write(&target, text).unwrap();
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link).unwrap();
            let error = PidFile::acquire(&link).unwrap_err();
            assert!(error.is_refused_config(), "{text:?}: {error}");
            assert!(error.to_string().contains("symbolic link"), "{error}");
            assert_eq!(std::fs::read_to_string(&target).unwrap(), text);
            assert!(probe(&link).is_err(), "status follows no symlink either");
        }
    }

    #[test]
    fn a_hard_link_to_another_file_is_not_a_pidfile() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, "").unwrap();
        let path = dir.path().join("riftd.pid");
        std::fs::hard_link(&other, &path).unwrap();
        let error = PidFile::acquire(&path).unwrap_err();
        assert!(error.is_refused_config(), "{error}");
        assert!(error.to_string().contains("hard links"), "{error}");
        assert_eq!(std::fs::read(&other).unwrap(), b"");
    }

    #[test]
    fn a_device_or_a_directory_is_not_a_pidfile() {
        for path in ["/dev/null", "/tmp"] {
            let error = PidFile::acquire(Path::new(path)).unwrap_err();
            assert!(
                error.is_refused_config() || matches!(error, DaemonError::PidFile { .. }),
                "{path}: {error}"
            );
        }
        let error = PidFile::acquire(Path::new("/dev/null")).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        assert!(Path::new("/dev/null").exists());
    }

    #[test]
    fn removing_a_pidfile_that_was_replaced_meanwhile_leaves_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riftd.pid");
        let mut pidfile = PidFile::acquire(&path).unwrap();
        pidfile.write_pid(7).unwrap();
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        std::fs::write(&path, "someone else's\n").unwrap();
        pidfile.remove();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's\n");
    }

    /// A `sleep 60`, killed when dropped; its stdin is `stdin`.
    struct Sleeper(std::process::Child);

    impl Sleeper {
        fn spawn(stdin: std::process::Stdio) -> Sleeper {
            let child = std::process::Command::new("sleep")
                .arg("60")
                .stdin(stdin)
                .spawn()
                .unwrap();
            Sleeper(child)
        }

        fn pid(&self) -> i32 {
            i32::try_from(self.0.id()).unwrap()
        }

        fn is_alive(&mut self) -> bool {
            self.0.try_wait().unwrap().is_none()
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn stop_refuses_to_signal_a_pid_that_is_not_the_riftd_holding_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riftd.pid");
        // Something that is not riftd holds the lock: here, this test.
        let mut locker = PidFile::acquire(&path).unwrap();
        // The file names an unrelated process, which must survive.
        let mut unrelated = Sleeper::spawn(std::process::Stdio::null());
        locker.write_pid(unrelated.0.id()).unwrap();
        let error = stop(&path, Duration::ZERO).unwrap_err();
        assert!(matches!(error, DaemonError::Unverified { .. }), "{error:?}");
        assert!(
            error.to_string().contains("does not hold the pidfile"),
            "{error}"
        );
        assert!(unrelated.is_alive(), "stop signalled an unrelated process");

        // A process holding the pidfile open but not riftd is refused too.
        let mut holder = Sleeper::spawn(File::open(&path).unwrap().into());
        locker.write_pid(holder.0.id()).unwrap();
        let error = stop(&path, Duration::ZERO).unwrap_err();
        assert!(error.to_string().contains("is not riftd"), "{error}");
        assert!(holder.is_alive(), "stop signalled a non-riftd process");
    }

    #[test]
    fn the_riftd_holding_its_pidfile_is_a_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riftd.pid");
        let pidfile = PidFile::acquire(&path).unwrap();
        // This test binary (named riftd-…) holds the file: it qualifies.
        let pid = i32::try_from(std::process::id()).unwrap();
        assert!(Target::verify(pid, &pidfile.file, &path).is_ok());
        let sleeper = Sleeper::spawn(std::process::Stdio::null());
        assert!(Target::verify(sleeper.pid(), &pidfile.file, &path).is_err());
    }

    #[test]
    fn riftd_executables_are_recognised_also_after_an_upgrade() {
        assert!(is_riftd_executable(Path::new("/usr/local/bin/riftd")));
        assert!(is_riftd_executable(Path::new(
            "/usr/local/bin/riftd (deleted)"
        )));
        assert!(is_riftd_executable(&std::env::current_exe().unwrap()));
        assert!(!is_riftd_executable(Path::new("/usr/bin/python3.11")));
        assert!(!is_riftd_executable(Path::new("/usr/bin/sleep")));
    }

    #[test]
    fn stop_of_nothing_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riftd.pid");
        assert_eq!(
            stop(&path, Duration::from_secs(1)).unwrap(),
            Stopped::NotRunning { is_stale: false }
        );
    }

    #[test]
    fn a_log_file_that_is_a_fifo_or_a_directory_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("riftd.log");
        // mknod, not a `mkfifo` child: a fork while another test holds a
        // pidfile lock would share that lock for a moment.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Nobody reads it: a blocking open for writing would wait forever.
        let error = open_log(&fifo).unwrap_err();
        assert!(error.is_refused_config(), "{error}");
        assert!(error.to_string().contains("a FIFO"), "{error}");
        // Somebody reads it: still refused.
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)
            .unwrap();
        assert!(open_log(&fifo).unwrap_err().is_refused_config());
        assert!(open_log(dir.path()).is_err());
        assert!(open_log(Path::new("/dev/null")).is_ok());
        let file = dir.path().join("real.log");
        let mut log = open_log(&file).unwrap();
        writeln!(log, "line").unwrap();
        let flags = rustix::fs::fcntl_getfl(&log).unwrap();
        assert!(!flags.contains(rustix::fs::OFlags::NONBLOCK));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "line\n");
    }

    #[test]
    fn a_pidfile_in_an_unwritable_place_is_an_error_naming_it() {
        let error = PidFile::acquire(Path::new("/proc/riftd-test/riftd.pid")).unwrap_err();
        assert!(
            error.to_string().contains("/proc/riftd-test/riftd.pid"),
            "{error}"
        );
    }
}
