//! The mio shell: one single-threaded event loop that accepts, reads, feeds
//! the codec and the hub, flushes outboxes, handles signals and timers, and
//! reaps closed connections at the end of each turn.
//!
//! It moves bytes and nothing else: every chat decision is the hub's. See
//! `design/architecture.md` for one turn of the loop and the life of a byte.

mod activation;
mod conn;
mod control;
mod heap;
mod http;
mod journal;
mod listen;
mod log_limit;
mod transport;
mod verifier;

use crate::cluster::{Bridge, BridgeOptions, ClusterError};
use crate::codec::TurnBudget;
use crate::config::{Config, ConfigError};
use crate::hub::{ConnId, CutOff, Fate, Hub, Now};
use conn::{CloseReason, Conn, READ_CHUNK, Reading};
use control::notify;
pub use http::{WebSettings, is_origin};
use journal::Journal;
pub use journal::{FsyncPolicy, HistoryConfig};
use listen::Listener;
pub use listen::{Listeners, bind, raise_fd_limit};
use log_limit::{LogLimiter, suppressed_note};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use verifier::Verifier;

const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// The wake-up of the threads beside the loop: the password verifier and,
/// in cluster mode, the cluster bridge. mio allows one `Waker` per `Poll`,
/// so they share it, and a wake-up takes both their outputs.
const WAKER_TOKEN: Token = Token(usize::MAX - 1);
/// Listener `i` has token `LISTENER_BASE - i`; connection tokens are slab
/// keys, which stay far below.
const LISTENER_BASE: usize = usize::MAX - 2;
/// At most one "cannot accept" log line per this interval; the same for
/// refused connections and failed TLS starts, which a peer causes at the
/// price of a connect.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// At most this many disconnect lines per `ACCEPT_LOG_INTERVAL`: a session
/// ends with one line at info, but a connect-and-close storm must not turn
/// into a log storm.
const DISCONNECT_LOG_BURST: u32 = 50;
/// Connection tables are sized for at most this many connections at
/// start; past it they grow as needed.
const RESERVE_CONNECTIONS: usize = 65_536;

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
    /// NATS could not be reached, or JetStream not set up (exit 1).
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("second signal during shutdown: exiting at once")]
    ForcedExit,
    /// The sockets systemd passed (socket activation) cannot be used: a
    /// mistake in the socket unit, refused like a configuration.
    #[error("socket activation: {0}")]
    Activation(#[from] activation::ActivationError),
}

/// Produces a fresh configuration on SIGHUP (file plus command line).
pub type Reloader = Box<dyn FnMut() -> Result<Config, ConfigError>>;

pub struct Server {
    poll: Poll,
    listeners: Vec<Listener>,
    signals: Signals,
    verifier: Verifier,
    /// The NATS bridge, in cluster mode (`cluster_url`).
    cluster: Option<Bridge>,
    /// The history journal, when history is on (never in cluster mode:
    /// history lives in JetStream).
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
    /// `Hub::take_resumed`'s buffer, kept for its capacity.
    resumed: Vec<ConnId>,
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
            Some(_) if config.cluster().is_some() => None,
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
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN).map_err(ServerError::Poll)?);
        let verifier = Verifier::start(Arc::clone(&waker)).map_err(ServerError::Verifier)?;
        // After any fork (`Server::new` is built in the daemon), before
        // READY: a node that cannot reach NATS never says it is ready.
        let cluster = match config.cluster() {
            None => None,
            Some(settings) => {
                let options = BridgeOptions::new(config.hub_config().history_keep);
                // The bridge logs the connection (node, URLs) once.
                let bridge = Bridge::start(settings.clone(), options, waker)?;
                hub.enable_cluster(bridge.node_name());
                Some(bridge)
            }
        };
        let tagged = listeners.into_sockets().into_iter();
        let mut mio_listeners = Vec::new();
        for (index, (listener, kind)) in tagged.enumerate() {
            let mut socket = TcpListener::from_std(listener);
            poll.registry()
                .register(&mut socket, listener_token(index), Interest::READABLE)
                .map_err(ServerError::Poll)?;
            mio_listeners.push(Listener { socket, kind });
        }
        Ok(Server {
            poll,
            listeners: mio_listeners,
            signals,
            verifier,
            cluster,
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
            resumed: Vec::new(),
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
            .filter_map(|listener| listener.socket.local_addr().ok())
            .collect()
    }

    /// Runs until SIGTERM/SIGINT and a clean goodbye to every client.
    pub fn run(mut self) -> Result<(), ServerError> {
        let addresses: Vec<String> = self
            .local_addrs()
            .iter()
            .map(SocketAddr::to_string)
            .collect();
        for (address, listener) in addresses.iter().zip(&self.listeners) {
            log::info!("listening on {address}{}", listener.kind.label());
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
                    WAKER_TOKEN => {
                        self.take_verdicts(wall);
                        self.take_cluster_outputs(wall);
                    }
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
            self.flush_and_reap(now, wall);
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
            .filter_map(|&id| self.conns.get(id)?.linger_deadline());
        let deadline = lingering
            .chain(self.heap_trim.deadline())
            .chain(self.accept_paused_until)
            .chain(self.shutdown_deadline)
            .chain(hub_timer)
            .min()?;
        Some(deadline.saturating_duration_since(now))
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
        if conn.is_closed() {
            return;
        }
        let conn_id = ConnId(id);
        if conn.read(conn_id, hub, read_buf, *turn, turn_budget, wall) == Reading::BudgetSpent {
            ready.push(id);
        }
        if conn.is_closed() {
            closing.push(id);
        } else if conn.has_own_output() {
            // A handshake (or a key update) produced records to send.
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
        // A held greeting's (web listeners) comes before the hub's.
        let deadline = match (self.hub.deadline(ConnId(id)), conn.greet_deadline()) {
            (Some(hub), Some(greeting)) => hub.min(greeting),
            (hub, greeting) => match hub.or(greeting) {
                Some(deadline) => deadline,
                None => return,
            },
        };
        if conn.arm_timer(deadline) {
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

    /// Hands the hub's cluster jobs to the bridge; a full queue is the
    /// hub's to answer (503), and what that answer queues goes next pass.
    fn submit_cluster_jobs(&mut self, wall: Now) {
        let Some(bridge) = &self.cluster else {
            return;
        };
        for job in self.hub.drain_cluster_jobs() {
            if let Err(job) = bridge.submit(job) {
                if let Some(suppressed) = self.verifier_busy_log.event(Instant::now()) {
                    let note = suppressed_note(suppressed, "refused job(s)");
                    log::warn!("cluster job refused: bridge queue full{note}");
                }
                self.hub.handle_cluster_busy(job.ticket, wall);
            }
        }
    }

    /// Applies the bridge's answers and events.
    fn take_cluster_outputs(&mut self, wall: Now) {
        let Some(bridge) = &self.cluster else {
            return;
        };
        for output in bridge.outputs() {
            self.hub.handle_cluster(output, wall);
        }
    }

    /// Applies the worker's answers.
    fn take_verdicts(&mut self, wall: Now) {
        let verdicts: Vec<_> = self.verifier.verdicts().collect();
        for verdict in verdicts {
            self.hub
                .handle_verified(verdict.conn, verdict.ticket, verdict.checked, wall);
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
            if !conn.fire_timer(deadline) {
                continue; // Superseded by an earlier timer, or stale.
            }
            conn.greet_if_due(ConnId(id), &mut self.hub, wall);
            self.hub.handle_timeout(ConnId(id), wall);
            self.schedule(id);
        }
        let Server {
            conns,
            lingering,
            closing,
            ..
        } = self;
        lingering.retain(|&id| {
            let Some(conn) = conns.get_mut(id) else {
                return false;
            };
            if conn.is_closed() {
                return false;
            }
            conn.expire(now);
            if conn.is_closed() {
                closing.push(id);
                return false;
            }
            conn.linger_deadline().is_some()
        });
    }

    /// Writes every dirty outbox once, then removes closed connections;
    /// repeats while removals queue 204s for others.
    fn flush_and_reap(&mut self, now: Instant, wall: Now) {
        self.write_history(now);
        loop {
            // Before the flush: jobs this turn's inputs (and last pass's
            // reaped connections) queued.
            self.submit_cluster_jobs(wall);
            let mut dirty = std::mem::take(&mut self.to_flush);
            // Swapped with the hub's list, so both keep their capacity.
            self.hub.drain_dirty(&mut self.hub_dirty);
            dirty.append(&mut self.hub_dirty);
            for conn_id in dirty.drain(..) {
                self.flush(conn_id, now);
            }
            self.to_flush = dirty;
            if self.closing.is_empty() {
                self.read_resumed();
                self.hub.end_turn();
                return;
            }
            self.reap();
        }
    }

    /// Connections held while their login was decided, whose decision
    /// came back: read next turn (the ready list), where the lines they
    /// sent meanwhile are answered.
    fn read_resumed(&mut self) {
        self.hub.take_resumed(&mut self.resumed);
        for ConnId(id) in self.resumed.drain(..) {
            if self.conns.get_mut(id).is_some_and(Conn::resume) {
                self.ready.push(id);
            }
        }
    }

    fn flush(&mut self, conn_id: ConnId, now: Instant) {
        let Server {
            conns,
            hub,
            poll,
            closing,
            lingering,
            shutdown_deadline,
            ..
        } = self;
        let Some(conn) = conns.get_mut(conn_id.0) else {
            return;
        };
        if conn.is_closed() {
            return;
        }
        let was_lingering = conn.linger_deadline().is_some();
        conn.flush(conn_id, hub, poll.registry(), now, *shutdown_deadline);
        if conn.is_closed() {
            closing.push(conn_id.0);
        } else if !was_lingering && conn.linger_deadline().is_some() {
            lingering.push(conn_id.0);
        }
    }

    fn reap(&mut self) {
        for id in std::mem::take(&mut self.closing) {
            // Dropping the stream closes the socket, which takes it out of
            // the epoll set: no `deregister` syscall needed (Linux).
            let Some(conn) = self.conns.try_remove(id) else {
                continue;
            };
            let peer = conn.peer();
            let reason = conn.close_reason().unwrap_or(CloseReason::IoError);
            if let Fate::CutOff(CutOff::SlowConsumer { owed, limit }) = self.hub.fate(ConnId(id))
                && reason != CloseReason::SlowConsumer
            {
                // Cut off, then closed for another reason before its
                // connection acted on it: the cut-off is still said once.
                log::warn!(
                    "conn={id} peer={peer} cut off: SlowConsumer (owed {owed} bytes, over max_output_bytes {limit})"
                );
            }
            self.hub.handle_closed(ConnId(id));
            self.heap_trim.note(Instant::now());
            let group = crate::throttle::group(peer.ip());
            if let Some(count) = self.per_ip.get_mut(&group) {
                *count -= 1;
                if *count == 0 {
                    self.per_ip.remove(&group);
                }
            }
            if reason == CloseReason::SlowConsumer {
                continue; // Its line was logged when it was cut off.
            }
            // One line per session, but a connect-and-close storm (garbage
            // on the TLS port costs a peer one connect) is rate-limited.
            let Some(suppressed) = self.disconnect_log.event(Instant::now()) else {
                continue;
            };
            let note = suppressed_note(suppressed, "disconnect(s)");
            match reason {
                CloseReason::Deadline => {
                    log::warn!("conn={id} peer={peer} dropped: {reason:?}{note}")
                }
                _ => log::info!("conn={id} peer={peer} disconnected ({reason:?}){note}"),
            }
        }
    }
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
}
