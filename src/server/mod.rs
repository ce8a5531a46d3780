//! The mio shell: one single-threaded event loop that accepts, reads, feeds
//! the codec and the hub, flushes outboxes, handles signals and timers, and
//! reaps closed connections at the end of each turn.
//!
//! It moves bytes and nothing else: every chat decision is the hub's. See
//! `design/architecture.md` for one turn of the loop and the life of a byte.

mod activation;
mod conn;
mod heap;
mod journal;
mod log_limit;
mod verifier;

use crate::codec::TurnBudget;
use crate::config::{Config, ConfigError};
use crate::hub::{ConnId, Hub, Now};
use crate::outbox::Flushed;
use crate::proto::{Code, ServerMsg};
use crate::tls::{self, Received};
use conn::{CloseReason, Conn, NO_TIMER};
use journal::Journal;
pub use journal::{FsyncPolicy, HistoryConfig};
use log_limit::{LogLimiter, suppressed_note};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use verifier::Verifier;

const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// The password verifier's wake-up.
const VERIFIER_TOKEN: Token = Token(usize::MAX - 1);
/// Listener `i` has token `LISTENER_BASE - i`; connection tokens are slab
/// keys, which stay far below.
const LISTENER_BASE: usize = usize::MAX - 2;
/// How long a quitting client may take to accept what it is owed.
const QUIT_LINGER: Duration = Duration::from_secs(5);
/// After our FIN, how long we keep reading (and discarding) so that closing
/// does not reset a connection whose last frames are still in flight.
const DRAIN_LINGER: Duration = Duration::from_secs(2);
/// The same during shutdown, where many clients drain at once.
const SHUTDOWN_DRAIN_LINGER: Duration = Duration::from_millis(500);
/// Back-off before accepting again after EMFILE and friends.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// At most one "cannot accept" log line per this interval; the same for
/// refused connections and failed TLS starts, which a peer causes at the
/// price of a connect.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// At most this many disconnect lines per `ACCEPT_LOG_INTERVAL`: a session
/// ends with one line at info, but a connect-and-close storm must not turn
/// into a log storm.
const DISCONNECT_LOG_BURST: u32 = 50;
/// One read call's buffer, shared by every connection.
const READ_CHUNK: usize = 64 * 1024;
/// Connections accepted per loop turn, all listeners together; the rest
/// wait for the next turn (`Server::accept_ready`). Each accepted
/// connection is read at once, with a full turn budget.
const ACCEPTS_PER_TURN: usize = 64;
/// TCP keepalive: probe a silent peer after this long, so half-open
/// connections (a vanished host) are found and their names freed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(300);
/// Connection tables are sized for at most this many connections at
/// start; past it they grow as needed.
const RESERVE_CONNECTIONS: usize = 65_536;
/// Connections the kernel queues before `accept` (capped by
/// `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("event loop failed: {0}")]
    Poll(#[source] io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    #[error("cannot open the history file {path}: {source}")]
    History {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("cannot start the password verifier: {0}")]
    Verifier(#[source] io::Error),
    #[error("second signal during shutdown: exiting at once")]
    ForcedExit,
    /// The sockets systemd passed (socket activation) cannot be used: a
    /// mistake in the socket unit, refused like a configuration.
    #[error("socket activation: {0}")]
    Activation(#[from] activation::ActivationError),
}

/// The bound listening sockets, plain and TLS.
#[derive(Debug)]
pub struct Listeners {
    pub plain: Vec<std::net::TcpListener>,
    pub tls: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// Every bound address, plain ones first.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.plain
            .iter()
            .chain(&self.tls)
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }
}

/// Binds every configured address, plain and TLS. Done before anything else
/// (and, in daemon mode, before forking) so a busy port is reported at once.
///
/// Under socket activation (systemd passed listening sockets: `LISTEN_FDS`)
/// those sockets replace `listen` and `tls_listen`: a socket named `tls`
/// (`FileDescriptorName=tls`) serves TLS, the others plain text; nothing is
/// bound. Call it before any thread is started: it unsets `LISTEN_*`.
pub fn bind(config: &Config) -> Result<Listeners, ServerError> {
    let adopted = activation::take(config.tls().is_some())?;
    if !adopted.is_empty() {
        let mut listeners = Listeners {
            plain: Vec::new(),
            tls: Vec::new(),
        };
        for socket in adopted {
            match socket.kind {
                activation::Kind::Plain => listeners.plain.push(socket.listener),
                activation::Kind::Tls => listeners.tls.push(socket.listener),
            }
        }
        log::info!(
            "socket activation: systemd passed {} plain and {} TLS listening socket(s); they replace listen and tls_listen",
            listeners.plain.len(),
            listeners.tls.len()
        );
        return Ok(listeners);
    }
    Ok(Listeners {
        plain: bind_all(config.listen())?,
        tls: bind_all(config.tls_listen())?,
    })
}

fn bind_all(addresses: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>, ServerError> {
    addresses
        .iter()
        .map(|&address| listen_on(address).map_err(|source| ServerError::Bind { address, source }))
        .collect()
}

/// A non-blocking listening socket with a backlog of `LISTEN_BACKLOG` (std
/// would give 128, too few for a reconnect storm: overflowing SYNs wait a
/// second for their retransmit). The per-connection options are set here
/// once: Linux copies them to every accepted socket, saving three
/// `setsockopt` calls per connection.
fn listen_on(address: SocketAddr) -> io::Result<std::net::TcpListener> {
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
    tune_listener(std::os::fd::AsFd::as_fd(&socket), address);
    rustix::net::bind(&socket, &address)?;
    rustix::net::listen(&socket, LISTEN_BACKLOG)?;
    Ok(std::net::TcpListener::from(socket))
}

/// Sets the options every accepted connection inherits on a listening
/// socket, bound here or passed by systemd.
fn tune_listener(socket: std::os::fd::BorrowedFd<'_>, address: SocketAddr) {
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

/// Tells systemd (when `NOTIFY_SOCKET` is set) how the service is doing; a
/// no-op otherwise.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        log::debug!("sd_notify failed: {error}");
    }
}

/// Produces a fresh configuration on SIGHUP (file plus command line).
pub type Reloader = Box<dyn FnMut() -> Result<Config, ConfigError>>;

pub struct Server {
    poll: Poll,
    /// Each listener, and whether it speaks TLS.
    listeners: Vec<(TcpListener, bool)>,
    signals: Signals,
    verifier: Verifier,
    /// The history journal, when history is on.
    journal: Option<Journal>,
    conns: Slab<Conn>,
    hub: Hub,
    config: Config,
    reloader: Option<Reloader>,
    read_buf: Box<[u8]>,
    /// Connections whose outbox must be written this turn (reused buffer).
    to_flush: Vec<ConnId>,
    /// The hub's dirty list, swapped in each turn (reused buffer).
    hub_dirty: Vec<ConnId>,
    /// Connections marked for removal this turn.
    closing: Vec<usize>,
    /// Quitting connections with output still owed, checked for deadlines.
    lingering: Vec<usize>,
    /// Set after EMFILE and friends: accepting resumes at this instant.
    accept_paused_until: Option<Instant>,
    /// Listeners that stopped at `ACCEPTS_PER_TURN` with connections maybe
    /// still queued: edge-triggered readiness will not report them again.
    /// Accepted from in order next turn, those that accepted nothing this
    /// turn first (`accept`).
    accept_ready: Vec<usize>,
    /// Connections accepted this turn.
    accepted_this_turn: usize,
    /// Rate limits for lines a peer can cause per connect (`log_limit`).
    accept_log: LogLimiter,
    refusal_log: LogLimiter,
    tls_start_log: LogLimiter,
    disconnect_log: LogLimiter,
    verifier_busy_log: LogLimiter,
    /// Set once SIGTERM/SIGINT arrived: the loop ends by this instant.
    shutdown_deadline: Option<Instant>,
    /// The origin of `Now::mono_ms`.
    started: Instant,
    /// Hub deadlines (monotonic ms, connection), earliest first; an entry is
    /// live only while it matches its connection's `timer_ms`.
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    /// Gives freed heap back to the kernel after connection churn.
    heap_trim: heap::HeapTrim,
    /// Connections per client address group (IPv6 /64).
    per_ip: HashMap<IpAddr, usize>,
    /// Connections that stopped at their per-turn budget (`TurnBudget`:
    /// lines or bytes) with input maybe left: edge-triggered readiness will
    /// not report them again. Each at most once (`Conn::read_turn`).
    ready: Vec<usize>,
    /// Counts loop turns, from 1; see `Conn::read_turn`.
    turn: u64,
    /// Each connection's share of this turn (`TurnBudget::share` of the
    /// connections the turn reads).
    turn_budget: TurnBudget,
    /// A SIGHUP arrived before the loop could take signals: reload once the
    /// loop runs (`request_reload`).
    is_reload_requested: bool,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// `now + wait`, or the latest instant the clock can express when that
/// overflows: a wait too long to count means "not before the end", never a
/// panic. Every instant the loop computes from a duration goes through here.
pub fn instant_after(now: Instant, wait: Duration) -> Instant {
    let mut wait = wait;
    loop {
        if let Some(later) = now.checked_add(wait) {
            return later;
        }
        // Halving reaches a representable sum (at worst `now` itself) in
        // at most 64 + 30 steps.
        wait /= 2;
    }
}

fn listener_token(index: usize) -> Token {
    Token(LISTENER_BASE - index)
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
    /// Takes bound listeners and builds the loop. Creates the `Poll` and the
    /// signal pipe, so call it after any fork.
    pub fn new(
        config: Config,
        listeners: Listeners,
        reloader: Option<Reloader>,
    ) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(ServerError::Poll)?;
        // SIGUSR1 and SIGUSR2 are caught only to be ignored with a word:
        // their default action would end riftd without a goodbye to its
        // clients, and other daemons use them to reopen logs, so an
        // operator may well send one.
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2])
            .map_err(ServerError::Signals)?;
        poll.registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)
            .map_err(ServerError::Signals)?;
        let mut hub = Hub::new(config.hub_config());
        // Tables are sized up front only up to a bound: a huge
        // `max_connections` must not reserve gigabytes of address space.
        let max_connections = config.max_connections().min(RESERVE_CONNECTIONS);
        hub.reserve_connections(max_connections);
        let journal = match config.history() {
            None => None,
            Some(history) => {
                let path = history.file.as_path();
                let history_error = |source| ServerError::History {
                    path: path.to_owned(),
                    source,
                };
                // Restored as they are read: the history keeps what its
                // bounds keep, and the journal never sits in memory whole.
                let mut out_of_range = 0usize;
                let (journal, replayed) = Journal::replay(path, history.fsync, &mut |message| {
                    out_of_range =
                        out_of_range.saturating_add(hub.restore_history(std::iter::once(message)));
                })
                .map_err(history_error)?;
                log::info!(
                    "history {}: {} message(s) replayed{}",
                    path.display(),
                    replayed.count,
                    if replayed.skipped > 0 {
                        format!(", {} unreadable line(s) skipped", replayed.skipped)
                    } else {
                        String::new()
                    }
                );
                if out_of_range > 0 || hub.restore_next_id(replayed.next_id).is_err() {
                    log::warn!(
                        "history {}: records with ids out of range skipped",
                        path.display()
                    );
                }
                Some(journal)
            }
        };
        let waker = Waker::new(poll.registry(), VERIFIER_TOKEN).map_err(ServerError::Poll)?;
        let verifier = Verifier::start(Arc::new(waker)).map_err(ServerError::Verifier)?;
        let tagged = listeners
            .plain
            .into_iter()
            .map(|listener| (listener, false))
            .chain(listeners.tls.into_iter().map(|listener| (listener, true)));
        let mut mio_listeners = Vec::new();
        for (index, (listener, is_tls)) in tagged.enumerate() {
            let mut listener = TcpListener::from_std(listener);
            poll.registry()
                .register(&mut listener, listener_token(index), Interest::READABLE)
                .map_err(ServerError::Poll)?;
            mio_listeners.push((listener, is_tls));
        }
        Ok(Server {
            poll,
            listeners: mio_listeners,
            signals,
            verifier,
            // Sized once for the configured cap: growing by doubling would
            // leave the old copies as resident holes in the heap.
            conns: Slab::with_capacity(max_connections),
            hub,
            journal,
            config,
            reloader,
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            to_flush: Vec::new(),
            hub_dirty: Vec::new(),
            closing: Vec::new(),
            lingering: Vec::new(),
            accept_paused_until: None,
            accept_ready: Vec::new(),
            accepted_this_turn: 0,
            accept_log: LogLimiter::new(1, ACCEPT_LOG_INTERVAL),
            refusal_log: LogLimiter::new(1, ACCEPT_LOG_INTERVAL),
            tls_start_log: LogLimiter::new(1, ACCEPT_LOG_INTERVAL),
            disconnect_log: LogLimiter::new(DISCONNECT_LOG_BURST, ACCEPT_LOG_INTERVAL),
            verifier_busy_log: LogLimiter::new(1, ACCEPT_LOG_INTERVAL),
            shutdown_deadline: None,
            started: Instant::now(),
            timers: BinaryHeap::with_capacity(max_connections),
            heap_trim: heap::HeapTrim::default(),
            per_ip: HashMap::new(),
            ready: Vec::new(),
            turn: 0,
            turn_budget: TurnBudget::default(),
            is_reload_requested: false,
        })
    }

    /// Asks for one reload as soon as the loop runs: for a SIGHUP that
    /// arrived while riftd was starting, before `Server::new` took signals
    /// over (`main` catches SIGHUP from before the pidfile names the pid).
    pub fn request_reload(&mut self) {
        self.is_reload_requested = true;
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(listener, is_tls)| {
                let address = listener.local_addr().ok()?;
                Some((address, *is_tls))
            })
            .map(|(address, _)| address)
            .collect()
    }

    /// Runs until SIGTERM/SIGINT and a clean goodbye to every client.
    pub fn run(mut self) -> Result<(), ServerError> {
        let addresses: Vec<String> = self
            .local_addrs()
            .iter()
            .map(SocketAddr::to_string)
            .collect();
        for (address, (_, is_tls)) in addresses.iter().zip(&self.listeners) {
            let kind = if *is_tls { " (TLS)" } else { "" };
            log::info!("listening on {address}{kind}");
        }
        let status = format!("listening on {}", addresses.join(", "));
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        if std::mem::take(&mut self.is_reload_requested) {
            log::info!("SIGHUP during start-up: reloading now");
            self.reload();
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout(Instant::now());
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ServerError::Poll(error));
            }
            let now = Instant::now();
            let wall = Now {
                unix_ms: now_unix_ms(),
                mono_ms: u64::try_from(now.duration_since(self.started).as_millis())
                    .unwrap_or(u64::MAX),
            };
            self.turn += 1;
            // The turn's input budget is shared among the connections it
            // reads, so many flooders cannot make a turn long.
            let readers = self.ready.len()
                + events
                    .iter()
                    .filter(|event| {
                        event.token().0 <= LISTENER_BASE - self.listeners.len()
                            && (event.is_readable() || event.is_read_closed())
                    })
                    .count();
            self.turn_budget = TurnBudget::share(readers);
            self.accepted_this_turn = 0;
            // Listeners left with connections by last turn's accept cap.
            for index in std::mem::take(&mut self.accept_ready) {
                self.accept(index, now, wall);
            }
            // Connections left with input by last turn's budget go first.
            for id in std::mem::take(&mut self.ready) {
                self.read(id, wall);
            }
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => self.handle_signals(now)?,
                    VERIFIER_TOKEN => self.take_verdicts(wall),
                    Token(token) if token > LISTENER_BASE - self.listeners.len() => {
                        self.accept(LISTENER_BASE - token, now, wall)
                    }
                    Token(id) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(id, wall);
                        }
                        if event.is_writable() {
                            self.to_flush.push(ConnId(id));
                        }
                    }
                }
            }
            self.fire_timers(now, wall);
            if events.is_empty() && self.heap_trim.due(now, || self.hub.release_idle_memory()) {
                log::debug!(
                    "returned freed heap memory to the kernel in {:.1} ms",
                    now.elapsed().as_secs_f64() * 1000.0
                );
            }
            self.submit_verify_jobs();
            self.flush_and_reap(now);
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() {
                    log::info!("shutdown complete");
                    return Ok(());
                }
                if now >= deadline {
                    log::warn!(
                        "shutdown deadline passed; closing {} connection(s) with output still owed",
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || !self.accept_ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let hub_timer = self
            .timers
            .peek()
            .map(|Reverse((ms, _))| instant_after(self.started, Duration::from_millis(*ms)));
        let lingering = self
            .lingering
            .iter()
            .filter_map(|&id| self.conns.get(id)?.linger_until);
        let deadline = lingering
            .chain(self.heap_trim.deadline())
            .chain(self.accept_paused_until)
            .chain(self.shutdown_deadline)
            .chain(hub_timer)
            .min()?;
        Some(deadline.saturating_duration_since(now))
    }

    fn handle_signals(&mut self, now: Instant) -> Result<(), ServerError> {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => self.reload(),
                SIGUSR1 | SIGUSR2 => {
                    let name = if signal == SIGUSR1 {
                        "SIGUSR1"
                    } else {
                        "SIGUSR2"
                    };
                    log::warn!(
                        "{name} ignored: SIGHUP reloads the configuration (and reopens \
                         log_file in daemon mode), SIGTERM stops riftd"
                    );
                }
                _ => {
                    let name = if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    if self.shutdown_deadline.is_some() {
                        log::warn!("{name} again during shutdown: exiting now");
                        return Err(ServerError::ForcedExit);
                    }
                    log::info!("{name}: shutting down");
                    self.begin_shutdown(now);
                }
            }
        }
        Ok(())
    }

    /// Stops accepting and tells every client 205; the loop then flushes and
    /// ends when all are gone or the deadline passes.
    fn begin_shutdown(&mut self, now: Instant) {
        notify(&[sd_notify::NotifyState::Stopping]);
        for (listener, _) in &mut self.listeners {
            let _ = self.poll.registry().deregister(listener);
        }
        self.listeners.clear();
        self.accept_ready.clear();
        self.accept_paused_until = None;
        self.hub.handle_shutdown();
        self.shutdown_deadline = Some(instant_after(now, self.config.shutdown_timeout()));
    }

    fn reload(&mut self) {
        let Some(reloader) = self.reloader.as_mut() else {
            log::info!("SIGHUP: no config file to reload");
            return;
        };
        notify(&[sd_notify::NotifyState::Reloading]);
        match reloader() {
            Ok(mut config) => {
                if config.listen() != self.config.listen()
                    || config.tls_listen() != self.config.tls_listen()
                {
                    log::warn!("SIGHUP: listen or tls_listen changed; that needs a restart");
                    config.keep_listen_of(&self.config);
                }
                if config.tls().is_none() && self.listeners.iter().any(|(_, is_tls)| *is_tls) {
                    // The TLS listeners stay until a restart (socket
                    // activation passes them whatever tls_listen says):
                    // without a certificate each connection to them was
                    // refused.
                    log::warn!(
                        "SIGHUP: tls_cert and tls_key removed while riftd listens for TLS; \
                         that needs a restart, until then riftd keeps the certificate it has"
                    );
                    config.keep_tls_of(&self.config);
                }
                if config.pid_file() != self.config.pid_file()
                    || config.log_file() != self.config.log_file()
                {
                    // Both are opened once, at start (SIGHUP reopens the
                    // log riftd started with, for logrotate): said, not
                    // silently ignored.
                    log::warn!(
                        "SIGHUP: pid_file or log_file changed; that needs a restart, \
                         until then riftd keeps the ones it started with"
                    );
                    config.keep_daemon_files_of(&self.config);
                }
                if !config.has_journal_of(&self.config) {
                    // The journal is opened once: history goes on exactly
                    // as it started (on or off, same file, same fsync)
                    // rather than half-applied.
                    log::warn!(
                        "SIGHUP: history_file or history_fsync changed; that needs a restart, \
                         until then history stays {}",
                        match self.config.history() {
                            Some(history) => format!(
                                "on in {} with history_fsync = \"{}\"",
                                history.file.display(),
                                format!("{:?}", history.fsync).to_lowercase()
                            ),
                            None => "off".to_owned(),
                        }
                    );
                    config.keep_history_of(&self.config);
                }
                for (_, conn) in self.conns.iter_mut() {
                    conn.codec.set_max_line(config.max_line_bytes());
                }
                self.hub.set_config(config.hub_config());
                self.config = config;
                log::info!("SIGHUP: configuration reloaded");
            }
            Err(error) => log::error!("SIGHUP: {error}; keeping the old configuration"),
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }

    fn accept(&mut self, index: usize, now: Instant, wall: Now) {
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
            let Some((listener, is_tls)) = self.listeners.get(index) else {
                return;
            };
            let is_tls = *is_tls;
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.accepted_this_turn += 1;
                    accepted_here += 1;
                    self.admit(stream, peer, is_tls, now, wall)
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
        is_tls: bool,
        now: Instant,
        wall: Now,
    ) {
        let tls = match (is_tls, self.config.tls()) {
            (false, _) => None,
            (true, Some(tls_config)) => match rustls::ServerConnection::new(Arc::clone(tls_config))
            {
                Ok(session) => Some(Box::new(session)),
                Err(error) => {
                    if let Some(suppressed) = self.tls_start_log.event(now) {
                        let note = suppressed_note(suppressed, "failure(s)");
                        log::error!("peer={peer} cannot start TLS: {error}{note}");
                    }
                    return;
                }
            },
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
            let frame = ServerMsg::error(
                Code::Unavailable,
                format!("server full ({limit} reached); try again later"),
            );
            // A fresh socket's send buffer is empty, so this small write
            // completes or the peer is already gone; either way we close.
            if tls.is_none() {
                let _ = stream.write(&frame.to_json_line());
            }
            return;
        }
        let id = self
            .conns
            .insert(Conn::new(stream, peer, tls, self.config.max_line_bytes()));
        let kind = if is_tls { " over TLS" } else { "" };
        // At info a session logs its login and its disconnect; the accept
        // itself is debug, so a reconnect storm costs two lines each.
        log::debug!("conn={id} peer={peer} connected{kind}");
        *self.per_ip.entry(group).or_insert(0) += 1;
        self.heap_trim.note(Instant::now());
        self.hub.handle_connected(ConnId(id), peer, is_tls, wall);
        self.schedule(id);
        // A client usually sends its first line right behind the handshake,
        // so it is often queued already: reading it now sends the greeting
        // and the answer in one write, a turn earlier. The socket is
        // registered after that read: epoll reports a socket that is ready
        // when it is registered, which would cost an empty read next turn.
        self.read(id, wall);
        let Server {
            conns,
            poll,
            closing,
            ..
        } = self;
        if let Some(conn) = conns.get_mut(id)
            && let Err(error) =
                poll.registry()
                    .register(&mut conn.stream, Token(id), Interest::READABLE)
        {
            log::error!("conn={id} peer={peer} cannot register: {error}");
            mark_closing(conn, id, closing, CloseReason::IoError);
        }
    }

    fn read(&mut self, id: usize, wall: Now) {
        let Server {
            conns,
            hub,
            read_buf,
            closing,
            to_flush,
            ready,
            turn,
            turn_budget,
            ..
        } = self;
        let Some(conn) = conns.get_mut(id) else {
            return;
        };
        if conn.closing.is_some() || conn.read_turn == *turn {
            // Already read this turn (from the ready list, then its event):
            // one budget per turn, and one place on the ready list.
            return;
        }
        conn.read_turn = *turn;
        let conn_id = ConnId(id);
        // Every line handed on and every byte read is charged, whatever the
        // codec makes of it, so no input of any shape holds the loop.
        let mut budget = turn_budget.clone();
        loop {
            // Lines already buffered first, within this turn's budget.
            while budget.has_lines() && !hub.is_quitting(conn_id) && hub.state(conn_id).is_some() {
                let Some(line) = conn.codec.next_line() else {
                    break;
                };
                match line {
                    Ok(line) => hub.handle_line(conn_id, line, wall),
                    Err(error) => hub.handle_codec_error(conn_id, error),
                }
                budget.charge_line();
            }
            if budget.is_spent() {
                // More may wait in the codec or the socket: next turn.
                ready.push(id);
                break;
            }
            let buf = &mut read_buf[..budget.read_len(READ_CHUNK)];
            let received = match &mut conn.tls {
                None => conn.stream.read(buf).map(|count| match count {
                    0 => Received::Closed,
                    count => Received::Data(count),
                }),
                Some(tls) => tls::read_plaintext(tls, &mut conn.stream, buf),
            };
            let received = match received {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(Received::WouldBlock),
                other => other,
            };
            match received {
                Ok(Received::WouldBlock) => break,
                Ok(Received::Closed) => {
                    conn.has_peer_closed = true;
                    if conn.linger_until.is_some() && hub.state(conn_id).is_none() {
                        // Draining after our FIN: the peer has closed too.
                        mark_closing(conn, id, closing, CloseReason::Quit);
                    } else if !hub.is_quitting(conn_id) {
                        log::debug!("conn={id} peer={} closed its side", conn.peer);
                        hub.handle_eof(conn_id);
                    } else if hub
                        .outbox_mut(conn_id)
                        .is_none_or(|outbox| outbox.is_empty())
                    {
                        mark_closing(conn, id, closing, CloseReason::PeerClosed);
                    }
                    break;
                }
                Ok(Received::Records(count)) => budget.charge_bytes(count),
                Ok(Received::Data(count)) => {
                    budget.charge_bytes(count);
                    if hub.is_quitting(conn_id) || hub.state(conn_id).is_none() {
                        // Quitting or draining: input is discarded (and
                        // charged, so a drain cannot hold the loop either).
                        continue;
                    }
                    conn.codec.push(&read_buf[..count]);
                    if conn.codec.has_seen_iac() {
                        hub.handle_telnet(conn_id);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let reason = match error.kind() {
                        io::ErrorKind::ConnectionReset => CloseReason::PeerClosed,
                        io::ErrorKind::InvalidData if conn.tls.is_some() => {
                            // Send rustls' alert if the socket takes it.
                            if let Some(tls) = &mut conn.tls {
                                let _ = tls::flush_records(tls, &mut conn.stream);
                            }
                            CloseReason::TlsError
                        }
                        _ => CloseReason::IoError,
                    };
                    log::debug!("conn={id} peer={} read error: {error}", conn.peer);
                    mark_closing(conn, id, closing, reason);
                    break;
                }
            }
        }
        conn.codec.shrink_if_idle();
        // A handshake (or a key update) may have produced records to send.
        if conn.closing.is_none() && conn.tls.as_ref().is_some_and(|tls| tls.wants_write()) {
            to_flush.push(conn_id);
        }
        self.schedule(id);
    }

    /// Queues a timer for the connection's hub deadline if it is earlier
    /// than the one already queued. Deadlines that move later (activity)
    /// are found when the queued timer fires, so a busy connection costs
    /// no heap work per line.
    fn schedule(&mut self, id: usize) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Some(deadline) = self.hub.deadline(ConnId(id)) else {
            return;
        };
        if deadline < conn.timer_ms {
            conn.timer_ms = deadline;
            self.timers.push(Reverse((deadline, id)));
        }
    }

    /// Appends this turn's id reservation and room messages to the journal
    /// (one write; one fsync under `always`) before any client is sent
    /// them; compacts when due, backing off after a failure.
    fn write_history(&mut self, now: Instant) {
        let messages = self.hub.take_unwritten_history();
        let next_id = self.hub.take_id_reservation();
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        if let Err(error) = journal.append(next_id, &messages)
            && let Some(failures) = journal.append_failed(now)
        {
            log::error!(
                "history: cannot append {} message(s): {error} ({failures} failed append(s) since the last report)",
                messages.len()
            );
        }
        if journal.needs_compaction(self.hub.history().len(), now)
            && let Err(error) = journal.compact(self.hub.history(), self.hub.id_reservation(), now)
        {
            log::error!("history: compaction failed: {error}");
        }
    }

    /// Hands the hub's password checks to the worker thread.
    fn submit_verify_jobs(&mut self) {
        let jobs: Vec<_> = self.hub.drain_verify_jobs().collect();
        for job in jobs {
            if let Err(job) = self.verifier.submit(job) {
                // A login storm would make one line per PASS: rate-limited.
                if let Some(suppressed) = self.verifier_busy_log.event(Instant::now()) {
                    let note = suppressed_note(suppressed, "refused check(s)");
                    log::warn!(
                        "conn={} password check refused: verifier queue full{note}",
                        job.conn
                    );
                }
                self.hub.handle_verify_busy(job.conn, job.ticket);
            }
        }
    }

    /// Applies the worker's answers.
    fn take_verdicts(&mut self, wall: Now) {
        let verdicts: Vec<_> = self.verifier.verdicts().collect();
        for verdict in verdicts {
            self.hub
                .handle_verified(verdict.conn, verdict.ticket, verdict.is_valid, wall);
        }
    }

    fn fire_timers(&mut self, now: Instant, wall: Now) {
        if self.accept_paused_until.is_some_and(|until| now >= until) {
            self.accept_paused_until = None;
            for index in 0..self.listeners.len() {
                self.accept(index, now, wall);
            }
        }
        while let Some(&Reverse((deadline, id))) = self.timers.peek() {
            if deadline > wall.mono_ms {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            if conn.timer_ms != deadline {
                continue; // Superseded by an earlier timer, or stale.
            }
            conn.timer_ms = NO_TIMER;
            self.hub.handle_timeout(ConnId(id), wall);
            self.schedule(id);
        }
        let Server {
            conns,
            lingering,
            closing,
            hub,
            ..
        } = self;
        lingering.retain(|&id| {
            let Some(conn) = conns.get_mut(id) else {
                return false;
            };
            match conn.linger_until {
                Some(until) if now >= until => {
                    // A drained session (the hub forgot it) ends normally;
                    // one still owed output was cut short.
                    let reason = if hub.state(ConnId(id)).is_none() {
                        CloseReason::Quit
                    } else {
                        CloseReason::Deadline
                    };
                    mark_closing(conn, id, closing, reason);
                    false
                }
                Some(_) => true,
                None => false,
            }
        });
    }

    /// Writes every dirty outbox once, then removes closed connections;
    /// repeats while removals queue 204s for others.
    fn flush_and_reap(&mut self, now: Instant) {
        self.write_history(now);
        loop {
            let mut dirty = std::mem::take(&mut self.to_flush);
            // Swapped with the hub's list, so both keep their capacity.
            self.hub.drain_dirty(&mut self.hub_dirty);
            dirty.append(&mut self.hub_dirty);
            for conn_id in dirty.drain(..) {
                self.flush(conn_id, now);
            }
            self.to_flush = dirty;
            if self.closing.is_empty() {
                self.hub.end_turn();
                return;
            }
            self.reap();
        }
    }

    fn flush(&mut self, conn_id: ConnId, now: Instant) {
        let id = conn_id.0;
        let Server {
            conns,
            hub,
            poll,
            closing,
            lingering,
            shutdown_deadline,
            ..
        } = self;
        let Some(conn) = conns.get_mut(id) else {
            return;
        };
        if conn.closing.is_some() || hub.state(conn_id).is_none() {
            return;
        }
        if hub.cut_off(conn_id).is_some() {
            mark_closing(conn, id, closing, CloseReason::SlowConsumer);
            return;
        }
        let Some(written) = hub.with_output(conn_id, |outbox, arena| match &mut conn.tls {
            None => outbox.write_to(arena, &mut conn.stream),
            Some(tls) => tls::flush(tls, &mut conn.stream, outbox, arena),
        }) else {
            return;
        };
        let flushed = match written {
            Ok(flushed) => flushed,
            Err(error) => {
                log::debug!("conn={id} peer={} write error: {error}", conn.peer);
                mark_closing(conn, id, closing, CloseReason::IoError);
                return;
            }
        };
        if flushed == Flushed::Partly && hub.enforce_output_cap(conn_id) {
            mark_closing(conn, id, closing, CloseReason::SlowConsumer);
            return;
        }
        let wants_write = flushed == Flushed::Partly;
        if wants_write != conn.is_write_registered {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(error) = reregister(poll.registry(), conn, id, interest) {
                log::error!("conn={id} cannot reregister: {error}");
                mark_closing(conn, id, closing, CloseReason::IoError);
                return;
            }
        }
        if hub.is_quitting(conn_id) {
            if flushed == Flushed::All {
                // Everything owed is out: end the session, send our FIN, and
                // read until the peer's so no in-flight frame is reset.
                hub.handle_closed(conn_id);
                if let Some(tls) = &mut conn.tls {
                    tls.send_close_notify();
                    let _ = tls::flush_records(tls, &mut conn.stream);
                }
                if conn.has_peer_closed {
                    // Both sides are done: closing sends our FIN.
                    mark_closing(conn, id, closing, CloseReason::Quit);
                    return;
                }
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.linger_until = Some(match *shutdown_deadline {
                    Some(deadline) => deadline.min(instant_after(now, SHUTDOWN_DRAIN_LINGER)),
                    None => instant_after(now, DRAIN_LINGER),
                });
                lingering.push(id);
            } else if conn.linger_until.is_none() {
                conn.linger_until =
                    Some(shutdown_deadline.unwrap_or_else(|| instant_after(now, QUIT_LINGER)));
                lingering.push(id);
            }
        }
    }

    fn reap(&mut self) {
        for id in std::mem::take(&mut self.closing) {
            // Dropping the stream closes the socket, which takes it out of
            // the epoll set: no `deregister` syscall needed (Linux).
            let Some(conn) = self.conns.try_remove(id) else {
                continue;
            };
            self.hub.handle_closed(ConnId(id));
            self.heap_trim.note(Instant::now());
            let group = crate::throttle::group(conn.peer.ip());
            if let Some(count) = self.per_ip.get_mut(&group) {
                *count -= 1;
                if *count == 0 {
                    self.per_ip.remove(&group);
                }
            }
            let reason = conn.closing.unwrap_or(CloseReason::IoError);
            // One line per session, but a connect-and-close storm (garbage
            // on the TLS port costs a peer one connect) is rate-limited.
            let Some(suppressed) = self.disconnect_log.event(Instant::now()) else {
                continue;
            };
            let note = suppressed_note(suppressed, "disconnect(s)");
            match reason {
                CloseReason::SlowConsumer | CloseReason::Deadline => {
                    log::warn!("conn={id} peer={} dropped: {reason:?}{note}", conn.peer)
                }
                _ => log::info!(
                    "conn={id} peer={} disconnected ({reason:?}){note}",
                    conn.peer
                ),
            }
        }
    }
}

fn mark_closing(conn: &mut Conn, id: usize, closing: &mut Vec<usize>, reason: CloseReason) {
    if conn.closing.is_none() {
        conn.close(reason);
        closing.push(id);
    }
}

fn reregister(
    registry: &Registry,
    conn: &mut Conn,
    id: usize,
    interest: Interest,
) -> io::Result<()> {
    registry.reregister(&mut conn.stream, Token(id), interest)?;
    conn.is_write_registered = interest.is_writable();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_after_a_wait_too_long_to_count_is_late_instead_of_a_panic() {
        let now = Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        // `shutdown_timeout_secs = 9223372036854775807` used to panic here.
        let far = instant_after(now, Duration::from_secs(i64::MAX as u64));
        assert!(far > now + Duration::from_secs(86_400 * 365 * 100));
        assert!(instant_after(now, Duration::MAX) >= far);
    }

    #[test]
    fn accepted_sockets_inherit_the_listeners_options() {
        let listener = listen_on(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
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
}
