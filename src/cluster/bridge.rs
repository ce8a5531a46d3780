//! The bridge: one thread running a current-thread tokio runtime with the
//! NATS client, between the event loop and the cluster. The loop submits
//! `Job`s over a bounded `std` channel and rings a doorbell (a plain
//! `std::task::Waker`, so the loop never touches tokio); `Output`s come
//! back over a `std` channel and a `mio::Waker`, the shape of
//! `server/verifier.rs`. Jobs are served one at a time in submission
//! order, so a session's requests keep their order; room subscriptions run
//! as tasks on the same thread and deliver `Event`s as they arrive.
//!
//! It must never block the loop: `submit` only `try_send`s, `outputs` only
//! `try_iter`s. Names and room memberships this node holds are refreshed
//! here on a timer, so the loop schedules nothing for them. While the NATS
//! link is down, jobs that need it fail at once; when it is back the
//! worker re-asserts what the node holds before it says `Reconnected`
//! (`design/cluster.md`, "Losing NATS while running").

use super::nats::Worker;
use super::protocol::{Job, Output};
use super::settings::ClusterSettings;
use mio::Waker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

impl BridgeOptions {
    pub fn new(history_keep: usize) -> BridgeOptions {
        BridgeOptions {
            history_keep,
            name_ttl: NAME_TTL,
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            probe_interval: PROBE_INTERVAL,
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

/// Where the worker's outputs go: a channel and the loop's waker.
#[derive(Clone)]
pub(super) struct Out {
    sender: mpsc::Sender<Output>,
    waker: Arc<Waker>,
}

impl Out {
    /// Hands one output to the loop; `false` once the loop has gone.
    pub(super) fn send(&self, output: Output) -> bool {
        if self.sender.send(output).is_err() {
            return false;
        }
        if let Err(error) = self.waker.wake() {
            log::error!("cluster bridge cannot wake the event loop: {error}");
        }
        true
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
    outputs: Receiver<Output>,
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
        let (sender, outputs) = mpsc::channel();
        let (ready, is_ready) = mpsc::channel::<Result<(), ClusterError>>();
        let doorbell = Arc::new(Doorbell::default());
        let worker_doorbell = Arc::clone(&doorbell);
        let node_name = settings.node_name.clone();
        let urls = settings.urls.join(", ");
        let out = Out { sender, waker };
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

    /// Outputs that arrived since the last call.
    pub fn outputs(&self) -> impl Iterator<Item = Output> + '_ {
        self.outputs.try_iter()
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
