//! The bridge: one thread running a current-thread tokio runtime with the
//! NATS client, between the event loop and the cluster. The loop submits
//! `Job`s over a bounded `std` channel and rings a doorbell (a plain
//! `std::task::Waker`, so the loop never touches tokio); `Output`s come
//! back over a `std` channel and a `mio::Waker`, the shape of
//! `server/verifier.rs`. Jobs are served one at a time in submission
//! order, so a session's requests keep their order; room subscriptions run
//! as tasks on the same thread and deliver `Event`s as they arrive. The
//! outputs waiting for the loop are bounded (`OUTPUTS`, `Out`): past it a
//! room's live messages are shed (the hub backfills them from the stream)
//! and other events wait; answers always go through.
//!
//! It must never block the loop: `submit` only `try_send`s, `outputs` only
//! takes what is there (at most `OUTPUTS` a turn). Names and room memberships this node holds are refreshed
//! here on a timer, so the loop schedules nothing for them. While the NATS
//! link is down, jobs that need it fail at once; when it is back the
//! worker re-asserts what the node holds before it says `Reconnected`
//! (`design/cluster.md`, "Losing NATS while running").

use super::nats::Worker;
use super::protocol::{Job, Output};
use super::settings::ClusterSettings;
use crate::proto::RoomName;
use mio::Waker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;
use thiserror::Error;

/// Jobs waiting for the bridge; more are refused (the hub answers 503).
pub const QUEUE: usize = 1024;

/// How long a name or a room membership outlives its node's last refresh:
/// a `kill -9`ed node's names are free, and its users seen leaving, within
/// this (plus the server's expiry sweep, well under a second).
pub const NAME_TTL: Duration = Duration::from_secs(10);

/// How long the start may take to reach NATS and set up the stream and
/// buckets before riftd gives up (exit 1).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one NATS request (a publish's ack, a KV operation) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the client pings NATS. async-nats drops the connection when
/// a third ping finds two unanswered, so a frozen server (or a dead path
/// that keeps the socket open) is noticed within 3 × this (plus one
/// interval's phase): the loop hears `Event::Disconnected` and every
/// session gets 213.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);

/// How often a node checks its own delivery path: it publishes a probe
/// into the stream, which republishes it like a room message, and expects
/// it back on its live subscription before the next probe. One that has
/// not come back an interval later means the path is broken (a stream
/// that no longer republishes, a dead subscription): the node logs it and
/// pauses chat (213) until a probe comes back, then backfills (214). So a
/// broken path is found within 2 × this.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// What the bridge is tuned with besides the settings: values every node
/// of one cluster must share (the stream and buckets are configured from
/// them; the last node to start sets them).
#[derive(Debug, Clone, Copy)]
pub struct BridgeOptions {
    /// Messages kept per room (`history_keep`): the stream's limit per
    /// subject.
    pub history_keep: usize,
    /// `NAME_TTL`; tests shorten it.
    pub name_ttl: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// `PROBE_INTERVAL`; tests shorten it.
    pub probe_interval: Duration,
    /// `OUTPUTS`; tests lower it.
    pub outputs: usize,
}

impl BridgeOptions {
    pub fn new(history_keep: usize) -> BridgeOptions {
        BridgeOptions {
            history_keep,
            name_ttl: NAME_TTL,
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            probe_interval: PROBE_INTERVAL,
            outputs: OUTPUTS,
        }
    }
}

/// Why the bridge could not start: riftd exits 1 with it.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot start the cluster bridge thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot build the bridge's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect { urls: String, reason: String },
    #[error("NATS at {urls} did not answer within {secs} s")]
    Timeout { urls: String, secs: u64 },
    #[error("cannot set up JetStream ({what}): {reason}")]
    Setup { what: &'static str, reason: String },
}

/// Outputs waiting for the loop past which the bridge hands over no more
/// room messages, presence changes or DMs until the loop takes some
/// (`Out`). Answers and link events are never held back.
pub const OUTPUTS: usize = 4096;

/// How often a room task with a message kept back, or a change waiting
/// for room, looks again whether the loop took its outputs.
const ROOM_RETRY: Duration = Duration::from_millis(5);

/// Where the worker's outputs go: a channel, the count of outputs the loop
/// has not taken yet, and the loop's waker.
///
/// The channel is a plain `std` one, bounded by that count rather than by
/// its type, because what is past the bound depends on the output:
/// - `send`: job answers (`Done`), link events and lost names always go
///   through. They cannot wait (a `Done` lost would leave a request
///   unanswered forever, and blocking the runtime's one thread would stop
///   the client's pings and reads), and they are bounded by other means:
///   one `Done` per job the loop submitted, one event per link change.
/// - `send_with_room`: presence changes and DMs wait (the task sleeps,
///   the runtime goes on) until the loop has taken the queue below
///   `OUTPUTS`: never dropped here.
/// - `LiveFeed`: a room's live messages are kept back, only the newest,
///   and older ones shed (`LiveFeed` says why nothing is lost).
#[derive(Clone)]
pub(super) struct Out {
    sender: mpsc::Sender<Output>,
    waker: Arc<Waker>,
    queued: Arc<AtomicUsize>,
    bound: usize,
}

/// The loop's end of `Out`.
pub(super) struct Outputs {
    receiver: Receiver<Output>,
    queued: Arc<AtomicUsize>,
    /// Rung again when a turn leaves outputs behind.
    waker: Arc<Waker>,
    /// Outputs the loop takes in one turn: the bound, so the bridge,
    /// adding while the loop takes, cannot make a turn endless.
    per_turn: usize,
}

/// The bridge's outputs channel, holding up to `bound` outputs that can
/// wait (`OUTPUTS`; tests choose less).
pub(super) fn outputs_channel(waker: Arc<Waker>, bound: usize) -> (Out, Outputs) {
    let (sender, receiver) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let out = Out {
        sender,
        waker: Arc::clone(&waker),
        queued: Arc::clone(&queued),
        bound,
    };
    let outputs = Outputs {
        receiver,
        queued,
        waker,
        per_turn: bound.max(1),
    };
    (out, outputs)
}

impl Out {
    /// Hands one output to the loop, however many wait; `false` once the
    /// loop has gone. For answers and link events.
    pub(super) fn send(&self, output: Output) -> bool {
        // Counted before it can be taken, so the count never goes below 0.
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.sender.send(output).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        if let Err(error) = self.waker.wake() {
            log::error!("cluster bridge cannot wake the event loop: {error}");
        }
        true
    }

    /// Whether the loop has taken its outputs below the bound.
    fn has_room(&self) -> bool {
        self.queued.load(Ordering::SeqCst) < self.bound
    }

    /// Hands `output` to the loop once it has room: the calling task
    /// waits (the runtime serves everything else meanwhile). For presence
    /// changes and DMs, which must not be dropped. `false` once the loop
    /// has gone.
    pub(super) async fn send_with_room(&self, output: Output) -> bool {
        while !self.has_room() {
            tokio::time::sleep(ROOM_RETRY).await;
        }
        self.send(output)
    }
}

impl Outputs {
    /// Outputs that arrived, at most `per_turn`; when that many were
    /// taken and more wait, the loop's waker is rung again, so its next
    /// poll returns at once and the next turn takes them, after this
    /// turn's reads and flushes.
    fn take(&self) -> impl Iterator<Item = Output> + '_ {
        let mut left = self.per_turn;
        std::iter::from_fn(move || {
            if left == 0 {
                if self.queued.load(Ordering::SeqCst) > 0
                    && let Err(error) = self.waker.wake()
                {
                    log::error!("cluster bridge cannot wake the event loop: {error}");
                }
                return None;
            }
            let output = self.receiver.try_recv().ok()?;
            left -= 1;
            self.queued.fetch_sub(1, Ordering::SeqCst);
            Some(output)
        })
    }
}

/// One subscribed room's live messages on their way to the loop. While
/// the loop has no room (`OUTPUTS` waiting), the feed keeps only the
/// newest message back and sheds the one it kept before; once there is
/// room it hands the kept one over (`flush`, which the room's task calls
/// every `ROOM_RETRY` while one is kept). That message's `previous` then
/// names a shed one, newer than what the hub delivered: the hub holds it
/// and backfills the room from the stream (`design/cluster.md`, "The path
/// of one SAY", 6), where every shed message is, being stored. So a loop
/// that falls behind costs at most `OUTPUTS` outputs (besides answers,
/// one per job) and one message per room, the bridge keeps reading NATS (NATS never sees this node as a
/// slow consumer because of its loop), and no message is lost: only
/// fetched again. The newest is kept, not the oldest, so the hole is seen
/// even when nothing more is said in the room.
pub(super) struct LiveFeed {
    room: RoomName,
    out: Out,
    kept: Option<Output>,
    /// Messages shed since the feed last handed one over.
    shed: u64,
}

impl LiveFeed {
    pub(super) fn new(room: RoomName, out: Out) -> LiveFeed {
        LiveFeed {
            room,
            out,
            kept: None,
            shed: 0,
        }
    }

    /// A live message: handed over if the loop has room and none is kept
    /// back, else kept (shedding the one kept before). `false` once the
    /// loop has gone.
    pub(super) fn push(&mut self, message: Output) -> bool {
        if self.kept.replace(message).is_some() {
            self.shed = self.shed.saturating_add(1);
        }
        self.flush()
    }

    /// Hands the kept message over if the loop has room now. `false` once
    /// the loop has gone.
    pub(super) fn flush(&mut self) -> bool {
        if !self.out.has_room() {
            return true;
        }
        let Some(message) = self.kept.take() else {
            return true;
        };
        if self.shed > 0 {
            log::warn!(
                "cluster: {}: the event loop fell behind; {} live message(s) shed, \
                 backfilled from the stream",
                self.room,
                self.shed
            );
            self.shed = 0;
        }
        self.out.send(message)
    }

    /// Whether a message is kept back, waiting for room.
    pub(super) fn is_holding(&self) -> bool {
        self.kept.is_some()
    }

    /// How long to wait before `flush` looks again.
    pub(super) fn retry() -> Duration {
        ROOM_RETRY
    }
}

/// Wakes the worker when the loop queued jobs or is stopping. Plain std:
/// the loop rings it without a runtime.
#[derive(Default)]
pub(super) struct Doorbell {
    rung: AtomicBool,
    /// Set when the loop drops the bridge: queued jobs are not served.
    closed: AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

impl Doorbell {
    fn ring(&self) {
        self.rung.store(true, Ordering::SeqCst);
        let waker = self.waker.lock().ok().and_then(|mut slot| slot.take());
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.ring();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Resolves once rung since the last time it resolved.
    pub(super) fn wait(&self) -> impl Future<Output = ()> + '_ {
        Rung(self)
    }
}

struct Rung<'a>(&'a Doorbell);

impl Future for Rung<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let bell = self.0;
        if bell.rung.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if let Ok(mut slot) = bell.waker.lock() {
            *slot = Some(cx.waker().clone());
        }
        // A ring between the check and storing the waker is not lost.
        if bell.rung.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The loop's handle on the bridge thread.
pub struct Bridge {
    jobs: Option<SyncSender<Job>>,
    doorbell: Arc<Doorbell>,
    outputs: Outputs,
    worker: Option<JoinHandle<()>>,
    node_name: String,
}

impl Bridge {
    /// Starts the thread, connects to NATS and makes sure the stream and
    /// buckets exist; returns once that is done, or with the reason it
    /// failed within `options.connect_timeout` (riftd then exits 1).
    /// Call after any fork.
    pub fn start(
        settings: ClusterSettings,
        options: BridgeOptions,
        waker: Arc<Waker>,
    ) -> Result<Bridge, ClusterError> {
        let (jobs, job_queue) = mpsc::sync_channel::<Job>(QUEUE);
        let (out, outputs) = outputs_channel(waker, options.outputs);
        let (ready, is_ready) = mpsc::channel::<Result<(), ClusterError>>();
        let doorbell = Arc::new(Doorbell::default());
        let worker_doorbell = Arc::clone(&doorbell);
        let node_name = settings.node_name.clone();
        let urls = settings.urls.join(", ");
        let worker = std::thread::Builder::new()
            .name("riftd-cluster".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .enable_io()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(ClusterError::Runtime(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let worker = match Worker::connect(&settings, options, out).await {
                        Ok(worker) => worker,
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return;
                        }
                    };
                    if ready.send(Ok(())).is_err() {
                        return;
                    }
                    worker.serve(job_queue, &worker_doorbell).await;
                });
            })
            .map_err(ClusterError::Thread)?;
        // The worker bounds its own connect; this only guards against a
        // worker that never reports.
        let bound = options.connect_timeout + Duration::from_secs(2);
        match is_ready.recv_timeout(bound) {
            Ok(Ok(())) => Ok(Bridge {
                jobs: Some(jobs),
                doorbell,
                outputs,
                worker: Some(worker),
                node_name,
            }),
            Ok(Err(error)) => {
                let _ = worker.join();
                Err(error)
            }
            Err(_) => Err(ClusterError::Timeout {
                urls,
                secs: bound.as_secs(),
            }),
        }
    }

    /// This node's name, as the cluster knows it.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Queues a job; gives it back when the queue is full or the bridge
    /// has stopped (the hub answers 503).
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        match jobs.try_send(job) {
            Ok(()) => {
                self.doorbell.ring();
                Ok(())
            }
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job),
        }
    }

    /// Outputs that arrived since the last call, at most `OUTPUTS` per
    /// call: when more wait, the loop's waker is rung again, so a busy
    /// bridge cannot keep one turn of the loop taking outputs forever.
    pub fn outputs(&self) -> impl Iterator<Item = Output> + '_ {
        self.outputs.take()
    }
}

impl Drop for Bridge {
    /// Stops the worker after the job in hand; queued jobs are dropped.
    /// Names and memberships are not released here (the hub releases them
    /// with jobs at shutdown); unreleased ones expire after the TTL, as a
    /// killed node's do.
    fn drop(&mut self) {
        self.jobs = None;
        self.doorbell.close();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::protocol::{Change, Event, JobResult};
    use crate::proto::{ChatMessage, Target, Username};
    use futures_util::FutureExt;

    /// An outputs channel waking a `Poll` nobody polls.
    fn channel(bound: usize) -> (Out, Outputs, mio::Poll) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (out, outputs) = outputs_channel(waker, bound);
        (out, outputs, poll)
    }

    fn room() -> RoomName {
        RoomName::parse("den").unwrap()
    }

    fn message(id: u64, previous: u64) -> Output {
        Output::Event(Event::Message {
            message: ChatMessage {
                id,
                ts: 0,
                target: Target::Room(room()),
                from: Username::parse("bob").unwrap(),
                text: format!("m{id}"),
            },
            previous: Some(previous),
        })
    }

    fn done(ticket: u64) -> Output {
        Output::Done {
            ticket,
            result: JobResult::Done,
        }
    }

    fn presence() -> Output {
        Output::Event(Event::Presence {
            room: room(),
            user: Username::parse("bea").unwrap(),
            node: "node-b".to_owned(),
            change: Change::Joined,
        })
    }

    #[test]
    fn answers_go_through_past_the_bound_and_the_count_follows_what_the_loop_takes() {
        let (out, outputs, _poll) = channel(2);
        for ticket in 0..5 {
            assert!(out.send(done(ticket)));
        }
        assert!(!out.has_room());
        let taken: usize = (0..3).map(|_| outputs.take().count()).sum();
        assert_eq!(taken, 5);
        assert!(out.has_room());
        assert_eq!(out.queued.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn one_turn_takes_at_most_the_bound_and_wakes_the_loop_again_for_the_rest() {
        let (out, outputs, mut poll) = channel(2);
        let mut events = mio::Events::with_capacity(4);
        for ticket in 0..5 {
            assert!(out.send(done(ticket)));
        }
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        for (turn, expected) in [vec![done(0), done(1)], vec![done(2), done(3)]]
            .into_iter()
            .enumerate()
        {
            assert_eq!(outputs.take().collect::<Vec<_>>(), expected);
            poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
            assert!(!events.is_empty(), "turn {turn} left some: woken again");
        }
        assert_eq!(outputs.take().collect::<Vec<_>>(), [done(4)]);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty(), "nothing left: no wake-up");
    }

    #[test]
    fn a_full_queue_keeps_only_the_newest_room_message_and_hands_it_over_with_its_previous() {
        let (out, outputs, _poll) = channel(2);
        let mut feed = LiveFeed::new(room(), out.clone());
        assert!(feed.push(message(1, 0)));
        assert!(out.send(done(7)));
        // Full: 2, 3 and 4 arrive; 2 and 3 are shed, 4 kept.
        for id in 2..=4 {
            assert!(feed.push(message(id, id - 1)));
        }
        assert!(feed.is_holding());
        assert!(feed.flush(), "still full: kept");
        assert_eq!(outputs.take().collect::<Vec<_>>(), [message(1, 0), done(7)]);
        assert!(feed.flush());
        assert!(!feed.is_holding());
        // Its `previous` (3) is above what the loop got (1): the hub sees
        // the hole and backfills 2 and 3 from the stream.
        assert_eq!(outputs.take().collect::<Vec<_>>(), [message(4, 3)]);
        // With room, messages go straight through, in order.
        assert!(feed.push(message(5, 4)));
        assert!(!feed.is_holding());
        assert_eq!(outputs.take().collect::<Vec<_>>(), [message(5, 4)]);
    }

    #[test]
    fn presence_waits_for_room_and_is_never_dropped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (out, outputs, _poll) = channel(1);
        assert!(out.send(done(1)));
        runtime.block_on(async {
            let waiting = out.send_with_room(presence());
            let mut waiting = std::pin::pin!(waiting);
            assert!((&mut waiting).now_or_never().is_none(), "full: it waits");
            assert_eq!(outputs.take().collect::<Vec<_>>(), [done(1)]);
            assert!(waiting.await);
        });
        assert_eq!(outputs.take().collect::<Vec<_>>(), [presence()]);
    }

    #[test]
    fn a_gone_loop_ends_the_room_tasks() {
        let (out, outputs, _poll) = channel(4);
        let mut feed = LiveFeed::new(room(), out.clone());
        drop(outputs);
        assert!(!out.send(done(1)));
        assert!(!feed.push(message(1, 0)));
        assert_eq!(out.queued.load(Ordering::SeqCst), 0);
    }
}
