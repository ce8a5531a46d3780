//! Socket activation: listening sockets handed over by systemd (a
//! `riftd.socket` unit) through `LISTEN_PID`, `LISTEN_FDS` and
//! `LISTEN_FDNAMES`, as `sd_listen_fds_with_names(3)` describes.
//!
//! When systemd passes sockets, they replace `listen`, `tls_listen`,
//! `web_listen` and `web_tls_listen` from the config (logged). A socket's
//! `FileDescriptorName=` says its kind: `tls` is a TLS chat listener, `web`
//! a web listener (HTTP only), `web-tls` a web listener over TLS; `plain`,
//! systemd's default name (the socket unit's, `….socket`) and `unknown`
//! (no names passed) are plain chat listeners; any other name is refused,
//! so a typo cannot turn a TLS port into a plaintext one.
//!
//! [`parse`] is pure; [`take`] reads and unsets the environment and adopts
//! the descriptors. It must run while the process has a single thread.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use thiserror::Error;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;
/// More sockets than any sane unit declares; a larger `LISTEN_FDS` is refused.
const MAX_FDS: usize = 1024;

/// Why the sockets systemd passed were refused. A mistake in the socket
/// unit, so riftd exits 2 like any refused configuration.
#[derive(Debug, Error)]
pub enum ActivationError {
    #[error("invalid {name} from systemd: {value:?}")]
    Variable { name: &'static str, value: String },
    #[error("LISTEN_FDS={fds} but LISTEN_FDNAMES has {names} name(s)")]
    NameCount { fds: usize, names: usize },
    #[error(
        "socket {fd} from systemd is named {name:?}: FileDescriptorName= must be \"plain\", \"tls\", \"web\" or \"web-tls\""
    )]
    UnknownName { fd: RawFd, name: String },
    #[error("socket {fd} from systemd ({name:?}) is not a listening TCP socket{detail}")]
    NotListening {
        fd: RawFd,
        name: String,
        detail: String,
    },
    #[error("systemd passed a socket named {name:?} but the config sets no tls_cert and tls_key")]
    TlsWithoutCert { name: &'static str },
}

/// Which listener a passed socket becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Tls,
    /// A web listener: HTTP only.
    Web,
    /// A web listener over TLS.
    WebTls,
}

impl Kind {
    /// A `FileDescriptorName=` read as a listener kind.
    pub fn of_name(name: &str) -> Option<Kind> {
        match name {
            "tls" => Some(Kind::Tls),
            "web" => Some(Kind::Web),
            "web-tls" => Some(Kind::WebTls),
            "plain" | "unknown" => Some(Kind::Plain),
            name if name.ends_with(".socket") => Some(Kind::Plain),
            _ => None,
        }
    }
}

/// One descriptor systemd passed, before it is adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub fd: RawFd,
    pub name: String,
    pub kind: Kind,
}

/// The three variables as read from the environment (`None` when unset).
#[derive(Debug, Default, Clone)]
pub struct Environment {
    pub pid: Option<String>,
    pub fds: Option<String>,
    pub names: Option<String>,
}

impl Environment {
    fn read() -> Environment {
        let var = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        Environment {
            pid: var("LISTEN_PID"),
            fds: var("LISTEN_FDS"),
            names: var("LISTEN_FDNAMES"),
        }
    }
}

/// What systemd passed to process `me`: nothing (no variables, or they are
/// meant for another process, e.g. a parent that did not unset them), or
/// the descriptors with their names and kinds.
pub fn parse(env: &Environment, me: u32) -> Result<Vec<Passed>, ActivationError> {
    let (Some(pid), Some(fds)) = (&env.pid, &env.fds) else {
        return Ok(Vec::new());
    };
    let bad = |name, value: &String| ActivationError::Variable {
        name,
        value: value.clone(),
    };
    let pid: u32 = pid.trim().parse().map_err(|_| bad("LISTEN_PID", pid))?;
    if pid != me {
        return Ok(Vec::new());
    }
    let count: usize = fds.trim().parse().map_err(|_| bad("LISTEN_FDS", fds))?;
    if count > MAX_FDS {
        return Err(bad("LISTEN_FDS", fds));
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = match &env.names {
        Some(names) => names.split(':').collect(),
        None => vec!["unknown"; count],
    };
    if names.len() != count {
        return Err(ActivationError::NameCount {
            fds: count,
            names: names.len(),
        });
    }
    (FIRST_FD..)
        .zip(names)
        .map(|(fd, name)| {
            let kind = Kind::of_name(name).ok_or_else(|| ActivationError::UnknownName {
                fd,
                name: name.to_owned(),
            })?;
            Ok(Passed {
                fd,
                name: name.to_owned(),
                kind,
            })
        })
        .collect()
}

/// A passed socket adopted as a listener.
#[derive(Debug)]
pub struct Adopted {
    pub listener: std::net::TcpListener,
    pub kind: Kind,
}

/// Takes the sockets systemd passed to this process, if any, and unsets
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` so that no child
/// inherits them. `has_tls` says whether the config can serve TLS.
///
/// Call it once, before any other thread is started (it edits the
/// environment).
pub fn take(has_tls: bool) -> Result<Vec<Adopted>, ActivationError> {
    let env = Environment::read();
    // SAFETY: riftd calls this from `server::bind`, before the event loop,
    // the verifier thread or any other thread exists: nothing can read the
    // environment concurrently.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let passed = parse(&env, std::process::id())?;
    if !has_tls {
        for (kind, name) in [(Kind::Tls, "tls"), (Kind::WebTls, "web-tls")] {
            if passed.iter().any(|passed| passed.kind == kind) {
                return Err(ActivationError::TlsWithoutCert { name });
            }
        }
    }
    // Every descriptor is checked while only borrowed, before any is
    // owned: LISTEN_FDS may claim more descriptors than were passed, and
    // the numbers past them are closed or riftd's own files (the pidfile,
    // the log). Owning one of those to refuse it would close it — losing
    // the pidfile's lock, or aborting on a descriptor already closed.
    let mut addresses = Vec::with_capacity(passed.len());
    for passed in &passed {
        let address = check(passed.fd).map_err(|detail| ActivationError::NotListening {
            fd: passed.fd,
            name: passed.name.clone(),
            detail,
        })?;
        addresses.push(address);
    }
    let mut adopted = Vec::with_capacity(passed.len());
    for (passed, address) in passed.into_iter().zip(addresses) {
        // SAFETY: `check` found an open listening TCP socket at this number,
        // which LISTEN_PID (this process) and LISTEN_FDS say systemd passed
        // to us; the variables are gone, so nothing else adopts it.
        let fd = unsafe { OwnedFd::from_raw_fd(passed.fd) };
        let listener = adopt(fd, address).map_err(|detail| ActivationError::NotListening {
            fd: passed.fd,
            name: passed.name.clone(),
            detail,
        })?;
        adopted.push(Adopted {
            listener,
            kind: passed.kind,
        });
    }
    Ok(adopted)
}

/// Whether the descriptor number `fd` is open and a listening TCP socket
/// (IPv4 or IPv6); its address if so. Nothing is changed or closed.
fn check(fd: RawFd) -> Result<SocketAddr, String> {
    use rustix::net::{SocketType, getsockname, sockopt};
    let detail = |error: rustix::io::Errno| format!(": {error}");
    // SAFETY: the borrow lives only for these calls; on a number that is
    // not open they fail with EBADF, and nothing here closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(fd)
        .map_err(|error| format!(" (not an open descriptor{})", detail(error)))?;
    if sockopt::socket_type(fd).map_err(detail)? != SocketType::STREAM
        || !sockopt::socket_acceptconn(fd).map_err(detail)?
    {
        return Err(String::new());
    }
    SocketAddr::try_from(getsockname(fd).map_err(detail)?)
        .map_err(|_| " (not IPv4 or IPv6)".to_owned())
}

/// Makes a checked listening socket close-on-exec and non-blocking, like
/// the ones riftd binds itself.
fn adopt(fd: OwnedFd, address: SocketAddr) -> Result<std::net::TcpListener, String> {
    use rustix::io::{FdFlags, fcntl_setfd, ioctl_fionbio};
    let detail = |error: rustix::io::Errno| format!(": {error}");
    fcntl_setfd(&fd, FdFlags::CLOEXEC).map_err(detail)?;
    ioctl_fionbio(&fd, true).map_err(detail)?;
    super::listen::tune_listener(fd.as_fd(), address);
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: &str, fds: &str, names: Option<&str>) -> Environment {
        Environment {
            pid: Some(pid.to_owned()),
            fds: Some(fds.to_owned()),
            names: names.map(str::to_owned),
        }
    }

    #[test]
    fn no_variables_means_no_sockets() {
        assert_eq!(parse(&Environment::default(), 42).unwrap(), vec![]);
    }

    #[test]
    fn zero_sockets_means_binding_the_configured_addresses() {
        assert_eq!(parse(&env("42", "0", Some("")), 42).unwrap(), vec![]);
        assert_eq!(parse(&env("42", "0", None), 42).unwrap(), vec![]);
    }

    #[test]
    fn sockets_meant_for_another_process_are_ignored() {
        assert_eq!(
            parse(&env("41", "2", Some("plain:tls")), 42).unwrap(),
            vec![]
        );
    }

    #[test]
    fn names_tell_plain_from_tls_sockets() {
        let passed = parse(&env("42", "3", Some("plain:tls:riftd.socket")), 42).unwrap();
        let kinds: Vec<(RawFd, Kind)> = passed.iter().map(|p| (p.fd, p.kind)).collect();
        assert_eq!(
            kinds,
            vec![(3, Kind::Plain), (4, Kind::Tls), (5, Kind::Plain)]
        );
    }

    #[test]
    fn web_and_web_tls_names_make_web_listeners() {
        let passed = parse(&env("42", "3", Some("web:web-tls:plain")), 42).unwrap();
        let kinds: Vec<Kind> = passed.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, vec![Kind::Web, Kind::WebTls, Kind::Plain]);
        let error = parse(&env("42", "1", Some("webtls")), 42).unwrap_err();
        assert!(error.to_string().contains("\"web-tls\""), "{error}");
    }

    #[test]
    fn sockets_without_names_are_plain() {
        let passed = parse(&env("42", "2", None), 42).unwrap();
        assert!(passed.iter().all(|p| p.kind == Kind::Plain));
        assert_eq!(passed.len(), 2);
    }

    #[test]
    fn a_misspelt_name_is_refused_rather_than_served_in_plaintext() {
        let error = parse(&env("42", "1", Some("tsl")), 42).unwrap_err();
        assert!(matches!(error, ActivationError::UnknownName { fd: 3, .. }));
        assert!(error.to_string().contains("\"tsl\""), "{error}");
    }

    #[test]
    fn a_name_count_that_differs_from_the_socket_count_is_refused() {
        assert!(matches!(
            parse(&env("42", "2", Some("plain")), 42),
            Err(ActivationError::NameCount { fds: 2, names: 1 })
        ));
    }

    #[test]
    fn garbage_or_huge_counts_are_refused() {
        for fds in ["two", "-1", "99999999999999999999", "1025"] {
            assert!(
                matches!(
                    parse(&env("42", fds, None), 42),
                    Err(ActivationError::Variable {
                        name: "LISTEN_FDS",
                        ..
                    })
                ),
                "LISTEN_FDS={fds}"
            );
        }
        assert!(matches!(
            parse(&env("x", "1", None), 42),
            Err(ActivationError::Variable {
                name: "LISTEN_PID",
                ..
            })
        ));
    }
}
