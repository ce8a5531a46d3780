//! Where connections come from: binding the listening sockets (or taking
//! those systemd passed), the options every accepted socket inherits, and
//! accepting: at most `ACCEPTS_PER_TURN` a turn, refusing past the
//! connection caps (the protocol's 503 line, or HTTP 503 on a web
//! listener), and starting each connection's transport by `ListenerKind`.

use super::conn::Conn;
use super::http::{self, Status};
use super::log_limit::suppressed_note;
use super::transport::{Front, Transport};
use super::{Server, ServerError, activation, instant_after};
use crate::config::{Config, PortSharing};
use crate::hub::{ConnId, Greeting, Now, Wire};
use crate::proto::{Code, ServerMsg};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Back-off before accepting again after EMFILE and friends.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Connections accepted per loop turn, all listeners together; the rest
/// wait for the next turn (`Server::accept_ready`). Each accepted
/// connection is read at once, with a full turn budget.
const ACCEPTS_PER_TURN: usize = 64;
/// TCP keepalive: probe a silent peer after this long, so half-open
/// connections (a vanished host) are found and their names freed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(300);
/// Connections the kernel queues before `accept` (capped by
/// `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;

/// What a listener's connections speak. The chat listeners (`listen`,
/// `tls_listen`) speak protocol lines, and with `web = true` HTTP too (the
/// gate sniffs the first bytes and holds the greeting); the web listeners
/// (`web_listen`, `web_tls_listen`) speak HTTP from the first byte and
/// never greet before a WebSocket upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Plain,
    Tls,
    Web,
    WebTls,
}

impl ListenerKind {
    /// Whether connections start with a TLS handshake.
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::WebTls)
    }

    /// Whether connections speak HTTP only (a web listener).
    pub fn is_web(self) -> bool {
        matches!(self, ListenerKind::Web | ListenerKind::WebTls)
    }

    /// What the log says after a listener's address.
    pub(super) fn label(self) -> &'static str {
        match self {
            ListenerKind::Plain => "",
            ListenerKind::Tls => " (TLS)",
            ListenerKind::Web => " (web: HTTP only)",
            ListenerKind::WebTls => " (web: HTTPS only)",
        }
    }
}

/// One listening socket in the loop.
#[derive(Debug)]
pub(super) struct Listener {
    pub(super) socket: mio::net::TcpListener,
    pub(super) kind: ListenerKind,
}

/// The bound listening sockets, each with its kind, in the order
/// `listen`, `tls_listen`, `web_listen`, `web_tls_listen`.
#[derive(Debug)]
pub struct Listeners {
    sockets: Vec<(std::net::TcpListener, ListenerKind)>,
}

impl Listeners {
    /// Every bound address, in listener order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|(listener, _)| listener.local_addr().ok())
            .collect()
    }

    /// The sockets with their kinds, for the loop to register.
    pub(super) fn into_sockets(self) -> Vec<(std::net::TcpListener, ListenerKind)> {
        self.sockets
    }
}

/// Binds every configured address, chat and web, plain and TLS. Done
/// before anything else (and, in daemon mode, before forking) so a busy
/// port is reported at once. With `reuse_port` (`PortSharing::Shared`)
/// each socket sets SO_REUSEPORT first, so other riftd nodes on this host
/// may bind the same addresses.
///
/// Under socket activation (systemd passed listening sockets: `LISTEN_FDS`)
/// those sockets replace `listen`, `tls_listen`, `web_listen` and
/// `web_tls_listen`: each socket's `FileDescriptorName=` says its kind
/// (`activation::Kind`); nothing is bound, and `reuse_port` does not
/// apply: a passed socket was bound by systemd, so sharing its port is the
/// socket unit's `ReusePort=`. Call it before any thread is started: it
/// unsets `LISTEN_*`.
pub fn bind(config: &Config) -> Result<Listeners, ServerError> {
    let adopted = activation::take(config.tls().is_some())?;
    if !adopted.is_empty() {
        let sockets: Vec<_> = adopted
            .into_iter()
            .map(|socket| {
                let kind = match socket.kind {
                    activation::Kind::Plain => ListenerKind::Plain,
                    activation::Kind::Tls => ListenerKind::Tls,
                    activation::Kind::Web => ListenerKind::Web,
                    activation::Kind::WebTls => ListenerKind::WebTls,
                };
                (socket.listener, kind)
            })
            .collect();
        let count = |kind| sockets.iter().filter(|(_, of)| *of == kind).count();
        log::info!(
            "socket activation: systemd passed {} plain and {} TLS listening socket(s), and {} web and {} web TLS ones; \
             they replace listen, tls_listen, web_listen and web_tls_listen",
            count(ListenerKind::Plain),
            count(ListenerKind::Tls),
            count(ListenerKind::Web),
            count(ListenerKind::WebTls),
        );
        let listeners = Listeners { sockets };
        warn_unshared_passed_sockets(config, &listeners);
        return Ok(listeners);
    }
    let sharing = config.port_sharing();
    if sharing == PortSharing::Shared {
        log::info!(
            "reuse_port: the listening sockets share their ports with other riftd nodes (SO_REUSEPORT)"
        );
    }
    let mut sockets = Vec::new();
    for (addresses, kind) in [
        (config.listen(), ListenerKind::Plain),
        (config.tls_listen(), ListenerKind::Tls),
        (config.web_listen(), ListenerKind::Web),
        (config.web_tls_listen(), ListenerKind::WebTls),
    ] {
        for listener in bind_all(addresses, sharing)? {
            sockets.push((listener, kind));
        }
    }
    Ok(Listeners { sockets })
}

fn bind_all(
    addresses: &[SocketAddr],
    sharing: PortSharing,
) -> Result<Vec<std::net::TcpListener>, ServerError> {
    addresses
        .iter()
        .map(|&address| {
            listen_on(address, sharing).map_err(|source| ServerError::Bind { address, source })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// reuse_port (issue 15, "More cores on one machine"): SO_REUSEPORT on the
// sockets riftd binds; sockets systemd passes are only looked at.

/// With `reuse_port = true` under socket activation, says which passed
/// sockets do not share their port: riftd cannot set SO_REUSEPORT on a
/// socket systemd bound, the socket unit's `ReusePort=yes` does.
fn warn_unshared_passed_sockets(config: &Config, listeners: &Listeners) {
    if config.port_sharing() != PortSharing::Shared {
        return;
    }
    for (listener, _) in &listeners.sockets {
        if !rustix::net::sockopt::socket_reuseport(listener).unwrap_or(false) {
            let address = listener
                .local_addr()
                .map_or_else(|_| "a passed socket".to_owned(), |a| a.to_string());
            log::warn!(
                "reuse_port = true, but systemd passed {address} without SO_REUSEPORT: \
                 set ReusePort=yes in the socket unit for other nodes to share it"
            );
        }
    }
}

/// Sets SO_REUSEPORT on a socket about to be bound, when the port is shared.
fn share_port(socket: std::os::fd::BorrowedFd<'_>, sharing: PortSharing) -> io::Result<()> {
    match sharing {
        PortSharing::Exclusive => Ok(()),
        // Required, not wanted: without it the second node's bind fails
        // anyway, and the first must not pass for a shared port.
        PortSharing::Shared => Ok(rustix::net::sockopt::set_socket_reuseport(socket, true)?),
    }
}

// ---------------------------------------------------------------------------

/// A non-blocking listening socket with a backlog of `LISTEN_BACKLOG` (std
/// would give 128, too few for a reconnect storm: overflowing SYNs wait a
/// second for their retransmit). The per-connection options are set here
/// once: Linux copies them to every accepted socket, saving three
/// `setsockopt` calls per connection.
fn listen_on(address: SocketAddr, sharing: PortSharing) -> io::Result<std::net::TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let family = if address.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let socket = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    share_port(std::os::fd::AsFd::as_fd(&socket), sharing)?;
    tune_listener(std::os::fd::AsFd::as_fd(&socket), address);
    rustix::net::bind(&socket, &address)?;
    rustix::net::listen(&socket, LISTEN_BACKLOG)?;
    Ok(std::net::TcpListener::from(socket))
}

/// Sets the options every accepted connection inherits on a listening
/// socket, bound here or passed by systemd.
pub(super) fn tune_listener(socket: std::os::fd::BorrowedFd<'_>, address: SocketAddr) {
    use rustix::net::sockopt;
    // Wanted, not required: a sandbox that refuses one must not stop the
    // daemon (std's accept path ignored these errors too).
    for (name, result) in [
        ("TCP_NODELAY", sockopt::set_tcp_nodelay(socket, true)),
        ("SO_KEEPALIVE", sockopt::set_socket_keepalive(socket, true)),
        (
            "TCP_KEEPIDLE",
            sockopt::set_tcp_keepidle(socket, KEEPALIVE_IDLE),
        ),
    ] {
        if let Err(error) = result {
            log::warn!("{address}: cannot set {name}: {error}");
        }
    }
}

/// Raises the soft open-files limit to the hard limit, so the daemon can
/// hold as many connections as the operator allowed.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let from = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => log::debug!(
                "open files limit raised from {from:?} to {:?}",
                limit.maximum
            ),
            Err(error) => log::warn!("cannot raise the open files limit: {error}"),
        }
    }
}

fn is_fd_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc_emfile) if libc_emfile == 24 /* EMFILE */
            || libc_emfile == 23 /* ENFILE */
            || libc_emfile == 105 /* ENOBUFS */
            || libc_emfile == 12 /* ENOMEM */
    )
}

impl Server {
    pub(super) fn accept(&mut self, index: usize, now: Instant, wall: Now) {
        if self.accept_paused_until.is_some() {
            return;
        }
        let mut accepted_here = 0usize;
        loop {
            if self.accepted_this_turn >= ACCEPTS_PER_TURN {
                // The rest next turn: a connect storm, each connection
                // bringing its first read, must not make a turn long.
                if !self.accept_ready.contains(&index) {
                    if accepted_here > 0 {
                        self.accept_ready.push(index);
                    } else {
                        // The cap kept this one from accepting at all: it
                        // goes ahead of the one the cap stopped mid-way
                        // (the first pushed in a turn, so the last here),
                        // or a storm on one listener would take every
                        // turn's accepts and starve the others.
                        let at = self.accept_ready.len().saturating_sub(1);
                        self.accept_ready.insert(at, index);
                    }
                }
                return;
            }
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let kind = listener.kind;
            match listener.socket.accept() {
                Ok((stream, peer)) => {
                    self.accepted_this_turn += 1;
                    accepted_here += 1;
                    self.admit(stream, peer, kind, now, wall)
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if is_fd_exhaustion(&error) => {
                    if let Some(suppressed) = self.accept_log.event(now) {
                        log::error!(
                            "cannot accept: {error} ({} time(s) since the last report); pausing accepts",
                            suppressed.saturating_add(1)
                        );
                    }
                    self.accept_paused_until = Some(instant_after(now, ACCEPT_PAUSE));
                    return;
                }
                Err(error) if error.raw_os_error() == Some(22 /* EINVAL */) => {
                    // The socket no longer listens (another holder of a
                    // passed socket shut it down): every retry would fail
                    // the same way, and the loop spun here for good. If
                    // it listens again, new connections report it again.
                    if let Some(suppressed) = self.accept_log.event(now) {
                        log::error!(
                            "cannot accept: {error} ({} time(s) since the last report); \
                             the listening socket was shut down",
                            suppressed.saturating_add(1)
                        );
                    }
                    return;
                }
                // ECONNABORTED and the like concern one connection only;
                // each counts as an accept, so that no error, however
                // often it repeats, can hold the turn.
                Err(error) => {
                    self.accepted_this_turn += 1;
                    accepted_here += 1;
                    log::debug!("accept failed: {error}");
                }
            }
        }
    }

    fn admit(
        &mut self,
        mut stream: mio::net::TcpStream,
        peer: SocketAddr,
        kind: ListenerKind,
        now: Instant,
        wall: Now,
    ) {
        let transport = match (kind.is_tls(), self.config.tls()) {
            (false, _) => Transport::Plain,
            (true, Some(tls_config)) => {
                match rustls::ServerConnection::new(Arc::clone(tls_config)) {
                    Ok(session) => Transport::Tls(Box::new(session)),
                    Err(error) => {
                        if let Some(suppressed) = self.tls_start_log.event(now) {
                            let note = suppressed_note(suppressed, "failure(s)");
                            log::error!("peer={peer} cannot start TLS: {error}{note}");
                        }
                        return;
                    }
                }
            }
            (true, None) => {
                if let Some(suppressed) = self.tls_start_log.event(now) {
                    let note = suppressed_note(suppressed, "failure(s)");
                    log::error!("peer={peer} arrived on a TLS listener without a TLS config{note}");
                }
                return;
            }
        };
        let group = crate::throttle::group(peer.ip());
        let from_here = self.per_ip.get(&group).copied().unwrap_or(0);
        let refusal = if self.conns.len() >= self.config.max_connections() {
            Some(format!(
                "max_connections ({})",
                self.config.max_connections()
            ))
        } else if self.config.max_connections_per_ip() > 0
            && from_here >= self.config.max_connections_per_ip()
        {
            Some(format!(
                "max_connections_per_ip ({})",
                self.config.max_connections_per_ip()
            ))
        } else {
            None
        };
        if let Some(limit) = refusal {
            // A refusal costs the peer one connect: rate-limited.
            if let Some(suppressed) = self.refusal_log.event(now) {
                let note = suppressed_note(suppressed, "refusal(s)");
                log::warn!("peer={peer} refused: {limit} reached{note}");
            }
            // A fresh socket's send buffer is empty, so this small write
            // completes or the peer is already gone; either way we close.
            // A TLS listener's peer gets nothing (a refusal would need the
            // handshake first); a web listener's gets HTTP, a chat
            // listener's the protocol's 503 line (with `web = true` too: a
            // refusal cannot wait to see what the peer speaks).
            if let Transport::Plain = transport {
                let refusal = match kind {
                    ListenerKind::Web => http::error_response(Status::Full),
                    _ => ServerMsg::error(
                        Code::Unavailable,
                        format!("server full ({limit} reached); try again later"),
                    )
                    .to_json_line(),
                };
                let _ = stream.write(&refusal);
            }
            return;
        }
        // An HTTP gate goes in front on a web listener (HTTP only), and on
        // a chat listener with `web = true` (sniffing); either holds the
        // greeting until the connection's first bytes decide.
        let (transport, greeting) = match (kind.is_web(), self.config.web()) {
            (true, _) => (
                Transport::gate(
                    transport,
                    Arc::clone(self.config.web_settings()),
                    Front::HttpOnly,
                ),
                Greeting::Deferred,
            ),
            (false, Some(settings)) => (
                Transport::gate(transport, Arc::clone(settings), Front::Shared),
                Greeting::Deferred,
            ),
            (false, None) => (transport, Greeting::Now),
        };
        let wire = transport.wire();
        let id = self.conns.insert(Conn::new(
            stream,
            peer,
            transport,
            self.config.max_line_bytes(),
        ));
        let over = match wire {
            Wire::Tls => " over TLS",
            Wire::Plain => "",
        };
        // At info a session logs its login and its disconnect; the accept
        // itself is debug, so a reconnect storm costs two lines each.
        log::debug!("conn={id} peer={peer} connected{over}");
        *self.per_ip.entry(group).or_insert(0) += 1;
        self.heap_trim.note(Instant::now());
        self.hub
            .handle_connected_with(ConnId(id), peer, wire, greeting, wall);
        self.schedule(id);
        // A client usually sends its first line right behind the handshake,
        // so it is often queued already: reading it now sends the greeting
        // and the answer in one write, a turn earlier. The socket is
        // registered after that read: epoll reports a socket that is ready
        // when it is registered, which would cost an empty read next turn.
        self.read(id, wall);
        if let Some(conn) = self.conns.get_mut(id)
            && !conn.is_closed()
        {
            conn.register(self.poll.registry(), ConnId(id));
            if conn.is_closed() {
                self.closing.push(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_the_listeners_options() {
        let listener = listen_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            PortSharing::Exclusive,
        )
        .unwrap();
        let address = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(address).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
        assert!(rustix::net::sockopt::socket_keepalive(&accepted).unwrap());
        assert_eq!(
            rustix::net::sockopt::tcp_keepidle(&accepted).unwrap(),
            KEEPALIVE_IDLE
        );
    }

    #[test]
    fn a_shared_port_takes_a_second_shared_listener_and_an_exclusive_one_does_not() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let first = listen_on(loopback, PortSharing::Shared).unwrap();
        let address = first.local_addr().unwrap();
        assert!(rustix::net::sockopt::socket_reuseport(&first).unwrap());
        let second = listen_on(address, PortSharing::Shared).unwrap();
        assert_eq!(second.local_addr().unwrap(), address);
        // A socket without SO_REUSEPORT cannot join them.
        let error = listen_on(address, PortSharing::Exclusive).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
    }

    #[test]
    fn an_exclusive_port_refuses_a_second_listener_either_way() {
        let first = listen_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            PortSharing::Exclusive,
        )
        .unwrap();
        let address = first.local_addr().unwrap();
        assert!(!rustix::net::sockopt::socket_reuseport(&first).unwrap());
        for sharing in [PortSharing::Exclusive, PortSharing::Shared] {
            let error = listen_on(address, sharing).unwrap_err();
            assert_eq!(
                error.kind(),
                io::ErrorKind::AddrInUse,
                "{sharing:?}: {error}"
            );
        }
    }
}
