//! The bridge thread's side: the NATS connection, the stream and buckets
//! (`design/cluster.md` names them and says why), and one async function
//! per job kind. Runs only on the bridge thread, inside its runtime.
//! Everything the loop sees leaves through `Out` as plain `Output`s.

use super::PROBE_TOKEN;
use super::bridge::{BridgeOptions, ClusterError, Doorbell, LiveFeed, Out, PING_INTERVAL};
use super::protocol::{
    Change, Event, HistoryRange, HistorySlice, Job, JobKind, JobResult, Member, Output,
    ThrottleKey, Ticket,
};
use super::settings::{ClusterAuth, ClusterSettings};
use super::{
    DM_SUBJECT, LIVE_PREFIX, MEMBERS_BUCKET, NAMES_BUCKET, NODE_PREFIX, ROOM_PREFIX, STREAM,
    THROTTLE_BUCKET, THROTTLE_MEMORY,
};
use crate::proto::{ChatMessage, RoomName, Target, Username};
use crate::throttle::Counted;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream::{self, Stream};
use async_nats::jetstream::{self, Context as JetStream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the stream remembers a publish's `Nats-Msg-Id`: a publish
/// retried within it (after an ack that never came) is stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a node going down spends releasing its names and memberships.
const SHUTDOWN_RELEASE: Duration = Duration::from_secs(2);

/// The pause before the stream or a bucket is asked for again when
/// JetStream did not answer at start.
const SETUP_RETRY: Duration = Duration::from_millis(250);

/// A room message as stored in the stream: the room is the subject's last
/// token and the id the stream sequence, so neither is repeated here.
#[derive(Serialize, Deserialize)]
struct StoredMessage {
    ts: u64,
    from: String,
    text: String,
}

/// A private message on its way to the recipient's node.
#[derive(Serialize, Deserialize)]
struct DirectMessage {
    id: u64,
    ts: u64,
    from: String,
    to: String,
    text: String,
}

/// A name's or a membership's value in its bucket.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
struct Holder {
    /// The name as its holder spells it.
    user: String,
    node: String,
}

/// A name this node holds: its spelling and the revision of its key.
struct Held {
    user: Username,
    revision: u64,
}

/// The NATS connection as the client's events tell it. `losses` counts
/// disconnections, so a drop and a reconnection that both happen while the
/// worker is busy still leave a loss to resume from.
#[derive(Debug, Clone, Copy)]
struct LinkState {
    is_up: bool,
    losses: u64,
}

/// A room membership this node holds.
struct Membership {
    user: Username,
    revision: u64,
}

/// Something this node gave up while NATS did not hear it (a part, a
/// release that failed or came while the link was down): sent when the
/// link is back, before anything is re-asserted.
enum Withdrawal {
    /// A name, deleted only under the revision this node held.
    Name { key: String, revision: u64 },
    /// A membership, deleted unless this node holds it again.
    Member { key: String },
}

pub(super) struct Worker {
    node: String,
    client: async_nats::Client,
    stream: Stream,
    jetstream: JetStream,
    names: kv::Store,
    members: kv::Store,
    throttle: kv::Store,
    history_keep: usize,
    name_ttl: Duration,
    /// Case-folded name → what this node holds.
    held_names: HashMap<String, Held>,
    /// Member key (`room.name`) → membership.
    held_members: HashMap<String, Membership>,
    /// Subscribed rooms and the task delivering each.
    rooms: HashMap<RoomName, JoinHandle<()>>,
    out: Out,
    /// The NATS connection, as the client's events say (the event
    /// callback holds the sender).
    link: watch::Receiver<LinkState>,
    /// The last loss of the link this node re-asserted its names,
    /// memberships and rooms after (`resume`); behind `losses` until then.
    resumed: u64,
    withdrawals: Vec<Withdrawal>,
    /// `Nats-Msg-Id` of each publish: node, start time, counter, unique
    /// across the node's restarts.
    msg_id_prefix: String,
    published: u64,
    /// Sets the link down (and up again) when the delivery path breaks
    /// and heals, as the client's events do for the connection.
    link_sender: Arc<watch::Sender<LinkState>>,
    probe: Probe,
    /// SAYs published and waiting for their acknowledgement, in order.
    posting: VecDeque<Posting>,
}

/// The most SAYs in flight (published, not yet acknowledged) per node.
const PIPELINE: usize = 256;

/// A SAY published, waiting for its acknowledgement (`finish_posts`).
struct Posting {
    ticket: Ticket,
    sent: Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError>,
    msg_id: String,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Bytes,
    /// The answer, once the sequence gives it its id.
    message: ChatMessage,
}

/// This node's check of its own delivery path (`PROBE_INTERVAL`).
struct Probe {
    interval: Duration,
    /// The last probe published (1, 2, …) and when.
    sent: u64,
    sent_at: Instant,
    /// The newest of this node's probes that came back.
    seen: watch::Receiver<u64>,
    seen_sender: Arc<watch::Sender<u64>>,
    /// Delivers the probes back (the live subscription of the probe
    /// subject); opened again while the path is broken.
    task: Option<JoinHandle<()>>,
    /// `Some(n)`: the path was found broken when probe `n` was the last
    /// sent; a later probe coming back heals it.
    broken_after: Option<u64>,
}

fn room_subject(room: &RoomName) -> String {
    format!("{ROOM_PREFIX}.{}", room.as_str())
}

fn member_key(room: &RoomName, user: &Username) -> String {
    format!("{}.{}", room.as_str(), user.key().as_str())
}

fn holder_value(user: &Username, node: &str) -> Bytes {
    let holder = Holder {
        user: user.as_str().to_owned(),
        node: node.to_owned(),
    };
    Bytes::from(serde_json::to_vec(&holder).expect("a holder serialises"))
}

fn failed(error: impl std::fmt::Display) -> JobResult {
    JobResult::Failed(error.to_string())
}

impl Worker {
    /// Connects (bounded by `options.connect_timeout`) and makes sure the
    /// stream and the buckets exist with this node's settings.
    pub(super) async fn connect(
        settings: &ClusterSettings,
        options: BridgeOptions,
        out: Out,
    ) -> Result<Worker, ClusterError> {
        let urls = settings.urls.join(", ");
        let secs = options.connect_timeout.as_secs();
        match tokio::time::timeout(
            options.connect_timeout,
            Worker::set_up(settings, options, out),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ClusterError::Timeout { urls, secs }),
        }
    }

    async fn set_up(
        settings: &ClusterSettings,
        options: BridgeOptions,
        out: Out,
    ) -> Result<Worker, ClusterError> {
        let urls = settings.urls.join(", ");
        let mut connect = match &settings.auth {
            ClusterAuth::None => async_nats::ConnectOptions::new(),
            ClusterAuth::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(
                    user.clone(),
                    password.expose().to_owned(),
                )
            }
            ClusterAuth::Token(token) => {
                async_nats::ConnectOptions::with_token(token.expose().to_owned())
            }
            ClusterAuth::Credentials(creds) => {
                async_nats::ConnectOptions::with_credentials(creds.expose()).map_err(|error| {
                    ClusterError::Connect {
                        urls: urls.clone(),
                        reason: format!("cluster_credentials_file: {error}"),
                    }
                })?
            }
        };
        if let Some(tls) = &settings.tls {
            connect = connect
                .tls_client_config(rustls::ClientConfig::clone(tls))
                .require_tls(true);
        }
        let (link_sender, link) = watch::channel(LinkState {
            is_up: true,
            losses: 0,
        });
        let link_sender = Arc::new(link_sender);
        let worker_link_sender = Arc::clone(&link_sender);
        let events_out = out.clone();
        connect = connect
            .name(format!("riftd {}", settings.node_name))
            .connection_timeout(options.connect_timeout)
            .request_timeout(Some(options.request_timeout))
            // A frozen server (SIGSTOP, a dead path) is noticed after
            // three unanswered pings (async-nats allows two outstanding).
            .ping_interval(PING_INTERVAL)
            .event_callback(move |event| {
                let out = events_out.clone();
                let link_sender = Arc::clone(&link_sender);
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            let mut was_up = false;
                            link_sender.send_modify(|link| {
                                was_up = link.is_up;
                                if link.is_up {
                                    link.is_up = false;
                                    link.losses += 1;
                                }
                            });
                            if was_up {
                                log::warn!("cluster: lost the NATS connection; reconnecting");
                                out.send(Output::Event(Event::Disconnected));
                            }
                        }
                        async_nats::Event::Connected => {
                            let mut was_up = true;
                            link_sender.send_modify(|link| {
                                was_up = std::mem::replace(&mut link.is_up, true);
                            });
                            if !was_up {
                                log::info!(
                                    "cluster: NATS connection restored; re-asserting this node's names"
                                );
                            }
                        }
                        other => log::debug!("cluster: NATS event: {other}"),
                    }
                }
            });
        let client = connect
            .connect(settings.urls.as_slice())
            .await
            .map_err(|error| ClusterError::Connect {
                urls: urls.clone(),
                reason: error.to_string(),
            })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(options.request_timeout);
        let keep = i64::try_from(options.history_keep).unwrap_or(i64::MAX);
        let config = stream::Config {
            name: STREAM.to_owned(),
            description: Some("riftd: room messages (history) and private-message ids".into()),
            subjects: vec![format!("{ROOM_PREFIX}.*"), DM_SUBJECT.to_owned()],
            max_messages_per_subject: keep,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            allow_direct: true,
            duplicate_window: DUPLICATE_WINDOW,
            republish: Some(stream::Republish {
                source: format!("{ROOM_PREFIX}.*"),
                destination: format!("{LIVE_PREFIX}.{{{{wildcard(1)}}}}"),
                headers_only: false,
            }),
            ..Default::default()
        };
        let stream = set_up_retrying(
            "the stream",
            String::new(),
            || jetstream.create_or_update_stream(config.clone()),
            |error: &jetstream::context::CreateStreamError| {
                matches!(
                    error.kind(),
                    jetstream::context::CreateStreamErrorKind::TimedOut
                        | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable
                )
            },
        )
        .await?;
        let stream = jetstream
            .get_stream(&stream.config.name)
            .await
            .map_err(|error| ClusterError::Setup {
                what: "the stream",
                reason: error.to_string(),
            })?;
        let bucket = |name: &str, max_age: Duration, markers: bool| kv::Config {
            bucket: name.to_owned(),
            history: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            // Expiry leaves a delete marker, so watchers see a dead
            // node's entries go (nats-server >= 2.11).
            limit_markers: markers.then_some(max_age.max(Duration::from_secs(1))),
            ..Default::default()
        };
        let mut stores = Vec::new();
        for (name, max_age, markers) in [
            (NAMES_BUCKET, options.name_ttl, true),
            (MEMBERS_BUCKET, options.name_ttl, true),
            (THROTTLE_BUCKET, THROTTLE_MEMORY, false),
        ] {
            // `JetStream` covers the server's own timeouts and a NATS
            // cluster still placing replicas.
            let store = set_up_retrying(
                "a key-value bucket",
                format!("{name}: "),
                || jetstream.create_or_update_key_value(bucket(name, max_age, markers)),
                |error: &jetstream::context::CreateKeyValueError| {
                    matches!(
                        error.kind(),
                        jetstream::context::CreateKeyValueErrorKind::TimedOut
                            | jetstream::context::CreateKeyValueErrorKind::JetStream
                    )
                },
            )
            .await?;
            stores.push(store);
        }
        let throttle = stores.pop().expect("three buckets");
        let members = stores.pop().expect("three buckets");
        let names = stores.pop().expect("three buckets");
        let inbox = client
            .subscribe(format!("{NODE_PREFIX}.{}", settings.node_name))
            .await
            .map_err(|error| ClusterError::Setup {
                what: "the node's inbox",
                reason: error.to_string(),
            })?;
        tokio::spawn(deliver_direct(inbox, out.clone()));
        let (seen_sender, seen) = watch::channel(0);
        let mut probe = Probe {
            interval: options.probe_interval,
            sent: 0,
            sent_at: Instant::now(),
            seen,
            seen_sender: Arc::new(seen_sender),
            task: None,
            broken_after: None,
        };
        probe.task = Some(
            open_probe(&client, &settings.node_name, &probe.seen_sender)
                .await
                .map_err(|reason| ClusterError::Setup {
                    what: "the delivery probe",
                    reason,
                })?,
        );
        log::info!(
            "cluster: node {} connected to NATS at {urls}",
            settings.node_name
        );
        Ok(Worker {
            node: settings.node_name.clone(),
            client,
            stream,
            jetstream,
            names,
            members,
            throttle,
            history_keep: options.history_keep,
            name_ttl: options.name_ttl,
            held_names: HashMap::new(),
            held_members: HashMap::new(),
            rooms: HashMap::new(),
            out,
            link,
            resumed: 0,
            withdrawals: Vec::new(),
            msg_id_prefix: format!("{}.{:x}", settings.node_name, unix_ms()),
            published: 0,
            link_sender: worker_link_sender,
            probe,
            posting: VecDeque::new(),
        })
    }

    /// Whether the NATS connection is up right now.
    fn is_up(&self) -> bool {
        self.link.borrow().is_up
    }

    /// Serves jobs in order and refreshes what this node holds, until the
    /// bridge is dropped.
    pub(super) async fn serve(mut self, jobs: Receiver<Job>, doorbell: &Doorbell) {
        let mut refresh = tokio::time::interval(self.name_ttl / 3);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe = tokio::time::interval(self.probe.interval);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut link = self.link.clone();
        let down = self.link.clone();
        let mut probe_seen = self.probe.seen.clone();
        loop {
            tokio::select! {
                _ = probe.tick() => self.send_probe().await,
                changed = probe_seen.changed() => {
                    if changed.is_ok() {
                        let seen = *probe_seen.borrow_and_update();
                        self.probe_came_back(seen);
                    }
                }
                changed = link.changed() => {
                    if changed.is_err() {
                        // The client is gone; nothing will change again.
                        return self.stop();
                    }
                    let state = *link.borrow_and_update();
                    if state.is_up && state.losses != self.resumed {
                        self.resume(state.losses).await;
                    }
                }
                () = doorbell.wait() => {
                    loop {
                        if doorbell.is_closed() {
                            self.finish(&jobs).await;
                            return self.stop();
                        }
                        match jobs.try_recv() {
                            Ok(Job { ticket, kind: JobKind::Post { room, from, text, ts } })
                                if self.is_up() =>
                            {
                                // Published now, answered in order once
                                // acknowledged: many SAYs in flight.
                                self.start_post(ticket, room, from, text, ts).await;
                                if self.posting.len() >= PIPELINE && !self.finish_posts().await {
                                    return self.stop();
                                }
                            }
                            Ok(job) => {
                                // Answers keep the jobs' order.
                                if !self.finish_posts().await {
                                    return self.stop();
                                }
                                let result = if self.is_up() {
                                    unless_down(&down, self.run(job.kind))
                                        .await
                                        .unwrap_or_else(|| failed(LINK_LOST))
                                } else {
                                    self.run_offline(job.kind)
                                };
                                let done = Output::Done { ticket: job.ticket, result };
                                if !self.out.send(done) {
                                    return self.stop();
                                }
                            }
                            Err(TryRecvError::Empty) => {
                                if !self.finish_posts().await {
                                    return self.stop();
                                }
                                break;
                            }
                            Err(TryRecvError::Disconnected) => return self.stop(),
                        }
                    }
                }
                _ = refresh.tick() => {
                    let state = *self.link.borrow();
                    if !state.is_up {
                        continue;
                    }
                    if state.losses != self.resumed {
                        // A re-assertion that failed is tried again.
                        self.resume(state.losses).await;
                    } else {
                        // Cut short by a loss: `resume` writes it all.
                        let _ = unless_down(&down, self.refresh()).await;
                    }
                }
            }
        }
    }

    /// A job while the link is down: what needs NATS fails at once
    /// (`Failed`, the hub answers 503); giving something up is done here
    /// and sent to NATS when the link is back.
    fn run_offline(&mut self, job: JobKind) -> JobResult {
        match job {
            JobKind::ReleaseName { user } => {
                let key = user.key().as_str().to_owned();
                if let Some(held) = self.held_names.remove(&key) {
                    self.withdrawals.push(Withdrawal::Name {
                        key,
                        revision: held.revision,
                    });
                }
                JobResult::Released
            }
            JobKind::Part { room, user } => {
                let key = member_key(&room, &user);
                self.held_members.remove(&key);
                self.withdrawals.push(Withdrawal::Member { key });
                JobResult::Done
            }
            JobKind::Join { room, user } => {
                // Put when the link is back, with the others.
                let key = member_key(&room, &user);
                self.held_members
                    .insert(key, Membership { user, revision: 0 });
                JobResult::Done
            }
            JobKind::Unsubscribe { room } => {
                if let Some(task) = self.rooms.remove(&room) {
                    task.abort();
                }
                JobResult::Unsubscribed(room)
            }
            _ => failed("not connected to NATS"),
        }
    }

    /// The link is back: what was given up meanwhile is withdrawn, every
    /// name claimed again (`NameLost` for one another node took), every
    /// membership put again, every room subscribed afresh; then the loop
    /// hears `Reconnected` and backfills. A step that fails leaves the
    /// rest for the next refresh tick.
    async fn resume(&mut self, losses: u64) {
        match self.reassert().await {
            Ok(()) => {
                self.resumed = losses;
                // Probes lost with the link are not a broken path; one
                // sent from now on must come back.
                self.probe.sent = self.probe.sent.max(*self.probe.seen.borrow());
                self.probe
                    .seen_sender
                    .send_modify(|seen| *seen = self.probe.sent);
                log::info!(
                    "cluster: re-asserted {} name(s), {} membership(s), {} room(s)",
                    self.held_names.len(),
                    self.held_members.len(),
                    self.rooms.len()
                );
                self.out.send(Output::Event(Event::Reconnected));
            }
            Err(error) => log::warn!(
                "cluster: cannot re-assert this node's names yet ({error}); trying again in {} ms",
                (self.name_ttl / 3).as_millis()
            ),
        }
    }

    async fn reassert(&mut self) -> Result<(), String> {
        while let Some(withdrawal) = self.withdrawals.last() {
            match withdrawal {
                Withdrawal::Name { key, revision } => {
                    match self
                        .names
                        .delete_expect_revision(key, Some(*revision))
                        .await
                    {
                        Ok(()) => {}
                        Err(error) if error.kind() == kv::DeleteErrorKind::WrongLastRevision => {}
                        Err(error) => return Err(error.to_string()),
                    }
                }
                Withdrawal::Member { key } => {
                    if !self.held_members.contains_key(key) {
                        self.members
                            .delete(key)
                            .await
                            .map_err(|error| error.to_string())?;
                    }
                }
            }
            self.withdrawals.pop();
        }
        let keys: Vec<String> = self.held_names.keys().cloned().collect();
        for key in keys {
            match self.reassert_name(&key).await? {
                Some(revision) => {
                    if let Some(held) = self.held_names.get_mut(&key) {
                        held.revision = revision;
                    }
                }
                None => self.lose_name(&key),
            }
        }
        let keys: Vec<String> = self.held_members.keys().cloned().collect();
        for key in keys {
            let Some(membership) = self.held_members.get(&key) else {
                continue;
            };
            let value = holder_value(&membership.user, &self.node);
            let revision = self
                .members
                .put(&key, value)
                .await
                .map_err(|error| error.to_string())?;
            if let Some(membership) = self.held_members.get_mut(&key) {
                membership.revision = revision;
            }
        }
        // Core subscriptions come back with the client, but a KV watch
        // may not outlive a server restart: every room is opened afresh
        // (the old task stops once the new one is in place; the hub drops
        // what both deliver).
        let rooms: Vec<RoomName> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let task = self.open_room(&room).await?;
            if let Some(old) = self.rooms.insert(room, task) {
                old.abort();
            }
        }
        Ok(())
    }

    fn lose_name(&mut self, key: &str) {
        if let Some(held) = self.held_names.remove(key) {
            log::warn!(
                "cluster: the name {} was claimed by another node",
                held.user
            );
            self.out.send(Output::Event(Event::NameLost(held.user)));
        }
    }

    /// Writes a held name again: under the revision held; or, if that
    /// moved, under the current one when the entry still names this node
    /// (an earlier write whose answer was lost); or created again if the
    /// key is free (it expired). `None`: another node holds it now.
    async fn reassert_name(&self, key: &str) -> Result<Option<u64>, String> {
        let Some(held) = self.held_names.get(key) else {
            return Ok(None);
        };
        let value = holder_value(&held.user, &self.node);
        match self.names.update(key, value.clone(), held.revision).await {
            Ok(revision) => return Ok(Some(revision)),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(error) => return Err(error.to_string()),
        }
        let entry = self
            .names
            .entry(key)
            .await
            .map_err(|error| error.to_string())?
            .filter(|entry| entry.operation == Operation::Put);
        match entry {
            Some(entry) => {
                let holder = serde_json::from_slice::<Holder>(&entry.value).ok();
                if holder.is_none_or(|holder| holder.node != self.node) {
                    return Ok(None);
                }
                match self.names.update(key, value, entry.revision).await {
                    Ok(revision) => Ok(Some(revision)),
                    Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        Ok(None)
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
            None => match self.names.create(key, value).await {
                Ok(revision) => Ok(Some(revision)),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(error) => Err(error.to_string()),
            },
        }
    }

    fn stop(self) {
        for (_, task) in self.rooms {
            task.abort();
        }
        if let Some(task) = self.probe.task {
            task.abort();
        }
    }

    /// The bridge is closing (riftd is going down): the releases and parts
    /// the hub queued at shutdown are sent, within `SHUTDOWN_RELEASE`, so
    /// other nodes show these users leaving (204) and their names free at
    /// once rather than when the entries expire (`NAME_TTL`). Everything
    /// else queued is dropped: nobody is left to answer.
    async fn finish(&mut self, jobs: &Receiver<Job>) {
        if !self.is_up() {
            return;
        }
        let mut released = 0;
        let sending = async {
            while let Ok(job) = jobs.try_recv() {
                if matches!(job.kind, JobKind::ReleaseName { .. } | JobKind::Part { .. }) {
                    self.run(job.kind).await;
                    released += 1;
                }
            }
        };
        if tokio::time::timeout(SHUTDOWN_RELEASE, sending)
            .await
            .is_err()
        {
            log::warn!(
                "cluster: releasing this node's names at shutdown took over {} ms; the rest expire",
                SHUTDOWN_RELEASE.as_millis()
            );
        }
        log::debug!("cluster: {released} release(s) and part(s) sent at shutdown");
    }

    /// One probe tick: if the last probe has not come back, the delivery
    /// path is broken (said once, and the link set down: the loop pauses
    /// chat); then the next probe goes out. While the connection itself is
    /// down its own events say so, and no probe is sent.
    async fn send_probe(&mut self) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let seen = *self.probe.seen.borrow();
        if self.probe.sent > seen {
            match self.probe.broken_after {
                None => {
                    log::error!(
                        "cluster: delivery path broken: probe {} published {} ms ago never came \
                         back through the stream (riftd.room.{PROBE_TOKEN} -> riftd.live.{PROBE_TOKEN}); \
                         chat is paused until one does",
                        self.probe.sent,
                        self.probe.sent_at.elapsed().as_millis()
                    );
                    self.probe.broken_after = Some(self.probe.sent);
                    self.set_link(false);
                }
                Some(_) => {
                    // Still broken: the probe's own subscription may be
                    // what died, so it is opened afresh.
                    match open_probe(&self.client, &self.node, &self.probe.seen_sender).await {
                        Ok(task) => {
                            if let Some(old) = self.probe.task.replace(task) {
                                old.abort();
                            }
                        }
                        Err(error) => log::debug!("cluster: cannot reopen the probe: {error}"),
                    }
                }
            }
        }
        self.probe.sent += 1;
        self.probe.sent_at = Instant::now();
        let payload = Bytes::from(format!("{} {}", self.node, self.probe.sent));
        // Its ack is not awaited (a job may be waiting): what counts is
        // that it comes back.
        if let Err(error) = self
            .jetstream
            .publish(format!("{ROOM_PREFIX}.{PROBE_TOKEN}"), payload)
            .await
        {
            log::debug!("cluster: probe {} not sent: {error}", self.probe.sent);
        }
    }

    /// One of this node's probes came back: a path found broken before it
    /// was sent works again, so the link is set up again and the loop
    /// resumes (after `resume` re-asserts and reopens every room).
    fn probe_came_back(&mut self, seen: u64) {
        if let Some(after) = self.probe.broken_after
            && seen > after
        {
            log::info!(
                "cluster: delivery path works again (probe {seen} came back); resuming chat"
            );
            self.probe.broken_after = None;
            self.set_link(true);
        }
    }

    /// Sets the link down (the loop hears `Disconnected` and pauses) or up
    /// (`serve` resumes), as the connection's own events do.
    fn set_link(&self, is_up: bool) {
        let mut went_down = false;
        self.link_sender.send_modify(|link| {
            if is_up {
                link.is_up = true;
            } else if link.is_up {
                link.is_up = false;
                link.losses += 1;
                went_down = true;
            }
        });
        if went_down {
            self.out.send(Output::Event(Event::Disconnected));
        }
    }

    async fn run(&mut self, job: JobKind) -> JobResult {
        match job {
            JobKind::ClaimName { user } => self.claim(user).await,
            JobKind::Rename { old, new } => self.rename(old, new).await,
            JobKind::ReleaseName { user } => self.release(&user).await,
            JobKind::Post {
                room,
                from,
                text,
                ts,
            } => self.post(room, from, text, ts).await,
            JobKind::AllocateDmId => {
                match self.publish(DM_SUBJECT.to_owned(), Bytes::new()).await {
                    Ok(id) => JobResult::DmId(id),
                    Err(error) => failed(error),
                }
            }
            JobKind::SendDm { from, to, text, ts } => self.send_dm(from, to, text, ts).await,
            JobKind::History { room, range, limit } => self.history(&room, range, limit).await,
            JobKind::Subscribe { room } => self.subscribe(room).await,
            JobKind::Unsubscribe { room } => {
                if let Some(task) = self.rooms.remove(&room) {
                    task.abort();
                }
                JobResult::Unsubscribed(room)
            }
            JobKind::Join { room, user } => self.join(&room, user).await,
            JobKind::Part { room, user } => self.part(&room, &user).await,
            JobKind::Members { room } => self.list_members(&room).await,
            JobKind::Rooms => self.list_rooms().await,
            JobKind::RecordFailures { keys } => self.record_failures(keys).await,
            JobKind::ReadFailures { keys } => self.read_failures(keys).await,
            JobKind::ReadFailuresAged { keys } => self.read_failures_aged(keys).await,
            JobKind::ClearFailures { keys } => {
                for key in &keys {
                    if let Err(error) = self.throttle.delete(key.as_str()).await {
                        return failed(error);
                    }
                }
                JobResult::Done
            }
        }
    }

    // Names.

    /// Create-if-absent on the case-folded key; a key this node holds is
    /// rewritten (a new spelling) under its revision.
    async fn claim(&mut self, user: Username) -> JobResult {
        let key = user.key().as_str().to_owned();
        let value = holder_value(&user, &self.node);
        if let Some(held) = self.held_names.get(&key) {
            return match self.names.update(&key, value, held.revision).await {
                Ok(revision) => {
                    self.held_names.insert(
                        key,
                        Held {
                            user: user.clone(),
                            revision,
                        },
                    );
                    JobResult::Claimed(user)
                }
                Err(error) => failed(error),
            };
        }
        match self.names.create(&key, value).await {
            Ok(revision) => {
                self.held_names.insert(
                    key,
                    Held {
                        user: user.clone(),
                        revision,
                    },
                );
                JobResult::Claimed(user)
            }
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                JobResult::Taken(user)
            }
            Err(error) => failed(error),
        }
    }

    async fn rename(&mut self, old: Username, new: Username) -> JobResult {
        let is_case_change = old.key() == new.key();
        let result = self.claim(new).await;
        if !is_case_change
            && matches!(result, JobResult::Claimed(_))
            && let JobResult::Failed(reason) = self.release(&old).await
        {
            log::warn!(
                "cluster: renamed, but the old name stays claimed until it expires: {reason}"
            );
        }
        result
    }

    /// Deletes the key if this node still holds it (under its revision, so
    /// a claim another node made meanwhile is never deleted).
    async fn release(&mut self, user: &Username) -> JobResult {
        let key = user.key().as_str().to_owned();
        let Some(held) = self.held_names.remove(&key) else {
            return JobResult::Released;
        };
        match self
            .names
            .delete_expect_revision(&key, Some(held.revision))
            .await
        {
            Ok(()) => JobResult::Released,
            Err(error) if error.kind() == kv::DeleteErrorKind::WrongLastRevision => {
                JobResult::Released
            }
            Err(error) => {
                // Sent again once the link is back (or it expires).
                self.withdrawals.push(Withdrawal::Name {
                    key,
                    revision: held.revision,
                });
                failed(error)
            }
        }
    }

    /// Every name and membership this node holds is written again before
    /// it expires. A name another node holds now is lost; one that merely
    /// expired is claimed again. Stops at once if the link drops.
    async fn refresh(&mut self) {
        let keys: Vec<String> = self.held_names.keys().cloned().collect();
        for key in keys {
            if !self.is_up() {
                return;
            }
            match self.reassert_name(&key).await {
                Ok(Some(revision)) => {
                    if let Some(held) = self.held_names.get_mut(&key) {
                        held.revision = revision;
                    }
                }
                Ok(None) => self.lose_name(&key),
                Err(error) => log::warn!("cluster: cannot refresh the name {key}: {error}"),
            }
        }
        let keys: Vec<String> = self.held_members.keys().cloned().collect();
        for key in keys {
            if !self.is_up() {
                return;
            }
            let Some(membership) = self.held_members.get(&key) else {
                continue;
            };
            let value = holder_value(&membership.user, &self.node);
            let revision = match self
                .members
                .update(&key, value.clone(), membership.revision)
                .await
            {
                Ok(revision) => revision,
                // Expired (a long outage): this node still has the member.
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    match self.members.put(&key, value).await {
                        Ok(revision) => revision,
                        Err(error) => {
                            log::warn!("cluster: cannot refresh {key}: {error}");
                            continue;
                        }
                    }
                }
                Err(error) => {
                    log::warn!("cluster: cannot refresh {key}: {error}");
                    continue;
                }
            };
            if let Some(membership) = self.held_members.get_mut(&key) {
                membership.revision = revision;
            }
        }
    }

    // Messages.

    /// A publish to the stream, acknowledged with its sequence. Each has a
    /// `Nats-Msg-Id` of its own; one whose acknowledgement did not come
    /// is sent once more under the same id while the link is up, and the
    /// stream stores it once (`DUPLICATE_WINDOW`).
    async fn publish(&mut self, subject: String, payload: Bytes) -> Result<u64, String> {
        let (msg_id, headers) = self.next_msg_id();
        let ack = self
            .jetstream
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
            .await;
        self.acknowledged(ack, &msg_id, subject, headers, payload)
            .await
    }

    /// The headers of the next publish: its `Nats-Msg-Id`.
    fn next_msg_id(&mut self) -> (String, async_nats::HeaderMap) {
        self.published += 1;
        let msg_id = format!("{}.{}", self.msg_id_prefix, self.published);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        (msg_id, headers)
    }

    /// Waits for a publish's acknowledgement; without one (a lost ack, a
    /// timeout), publishes it once more under the same id if the link is
    /// up.
    async fn acknowledged(
        &mut self,
        sent: Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError>,
        msg_id: &str,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> Result<u64, String> {
        let error = match sent {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(failure) => failure.to_string(),
            },
            Err(failure) => failure.to_string(),
        };
        log::warn!("cluster: publish {msg_id} not acknowledged: {error}");
        if !self.is_up() {
            return Err(error);
        }
        let again = self
            .jetstream
            .publish_with_headers(subject, headers, payload)
            .await;
        match again {
            Ok(ack) => match ack.await {
                Ok(ack) => Ok(ack.sequence),
                Err(failure) => {
                    log::warn!("cluster: publish {msg_id} not acknowledged again: {failure}");
                    Err(failure.to_string())
                }
            },
            Err(failure) => Err(failure.to_string()),
        }
    }

    /// SAY, first half: the message is published at once, and its answer
    /// waits in `posting` for its acknowledgement (`finish_posts`). Posts
    /// from one connection are stored in the order published.
    async fn start_post(
        &mut self,
        ticket: Ticket,
        room: RoomName,
        from: Username,
        text: String,
        ts: u64,
    ) {
        let stored = StoredMessage {
            ts,
            from: from.as_str().to_owned(),
            text,
        };
        let payload = Bytes::from(serde_json::to_vec(&stored).expect("a message serialises"));
        let subject = room_subject(&room);
        let (msg_id, headers) = self.next_msg_id();
        let sent = self
            .jetstream
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
            .await;
        self.posting.push_back(Posting {
            ticket,
            sent,
            msg_id,
            subject,
            headers,
            payload,
            message: ChatMessage {
                id: 0,
                ts,
                target: Target::Room(room),
                from,
                text: stored.text,
            },
        });
    }

    /// SAY, second half: every post in flight is answered, in order, as
    /// its acknowledgement comes (`Posted` with the sequence as its id, or
    /// `Failed`). False if the loop is gone.
    async fn finish_posts(&mut self) -> bool {
        let down = self.link.clone();
        while let Some(posting) = self.posting.pop_front() {
            let Posting {
                ticket,
                sent,
                msg_id,
                subject,
                headers,
                payload,
                mut message,
            } = posting;
            let acknowledged = unless_down(
                &down,
                self.acknowledged(sent, &msg_id, subject, headers, payload),
            )
            .await
            .unwrap_or_else(|| Err(LINK_LOST.to_owned()));
            let result = match acknowledged {
                Ok(id) => {
                    message.id = id;
                    JobResult::Posted(message)
                }
                Err(error) => failed(error),
            };
            if !self.out.send(Output::Done { ticket, result }) {
                return false;
            }
        }
        true
    }

    async fn post(&mut self, room: RoomName, from: Username, text: String, ts: u64) -> JobResult {
        let stored = StoredMessage {
            ts,
            from: from.as_str().to_owned(),
            text,
        };
        let payload = Bytes::from(serde_json::to_vec(&stored).expect("a message serialises"));
        match self.publish(room_subject(&room), payload).await {
            Ok(id) => JobResult::Posted(ChatMessage {
                id,
                ts,
                target: Target::Room(room),
                from,
                text: stored.text,
            }),
            Err(error) => failed(error),
        }
    }

    async fn send_dm(&mut self, from: Username, to: Username, text: String, ts: u64) -> JobResult {
        let holder = match self.names.get(to.key().as_str()).await {
            Ok(Some(value)) => serde_json::from_slice::<Holder>(&value).ok(),
            Ok(None) => None,
            Err(error) => return failed(error),
        };
        let Some(holder) = holder else {
            return JobResult::NoSuchUser(to);
        };
        let Ok(to) = Username::parse(&holder.user) else {
            return JobResult::NoSuchUser(to);
        };
        let id = match self.publish(DM_SUBJECT.to_owned(), Bytes::new()).await {
            Ok(id) => id,
            Err(error) => return failed(error),
        };
        let direct = DirectMessage {
            id,
            ts,
            from: from.as_str().to_owned(),
            to: to.as_str().to_owned(),
            text,
        };
        let payload = Bytes::from(serde_json::to_vec(&direct).expect("a message serialises"));
        let subject = format!("{NODE_PREFIX}.{}", holder.node);
        if let Err(error) = self.client.publish(subject, payload).await {
            return failed(error);
        }
        if let Err(error) = self.client.flush().await {
            return failed(error);
        }
        JobResult::DmSent {
            message: ChatMessage {
                id,
                ts,
                target: Target::User(to),
                from,
                text: direct.text,
            },
            node: holder.node,
        }
    }

    /// Reads the stream through a short-lived pull consumer: at most
    /// `cap` messages matching `filter` from `policy` on, and how many
    /// matched in all.
    async fn read(
        stream: &Stream,
        filter: String,
        policy: DeliverPolicy,
        cap: usize,
    ) -> Result<(Vec<jetstream::Message>, u64), String> {
        let mut consumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter,
                deliver_policy: policy,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|error| error.to_string())?;
        let info = consumer.info().await.map_err(|error| error.to_string())?;
        let (name, pending) = (info.name.clone(), info.num_pending);
        let want = usize::try_from(pending).unwrap_or(usize::MAX).min(cap);
        let mut messages = Vec::with_capacity(want.min(4096));
        let result = async {
            while messages.len() < want {
                let batch = (want - messages.len()).min(512);
                let mut fetched = consumer
                    .fetch()
                    .max_messages(batch)
                    .messages()
                    .await
                    .map_err(|error| error.to_string())?;
                let before = messages.len();
                while let Some(message) = fetched.next().await {
                    messages.push(message.map_err(|error| error.to_string())?);
                }
                if messages.len() == before {
                    break;
                }
            }
            Ok::<(), String>(())
        }
        .await;
        let _ = stream.delete_consumer(&name).await;
        result.map(|()| (messages, pending))
    }

    async fn history(&self, room: &RoomName, range: HistoryRange, limit: usize) -> JobResult {
        let subject = room_subject(room);
        match range {
            HistoryRange::After(after) => {
                let start = after.saturating_add(1);
                let read = Worker::read(
                    &self.stream,
                    subject.clone(),
                    DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    },
                    limit.saturating_add(1),
                )
                .await;
                let (mut messages, _) = match read {
                    Ok(read) => read,
                    Err(error) => return failed(error),
                };
                let more = messages.len() > limit;
                messages.truncate(limit);
                let gap = match self.is_trimmed_after(&subject, after).await {
                    Ok(gap) => gap,
                    Err(error) => return failed(error),
                };
                JobResult::History(HistorySlice {
                    messages: messages
                        .iter()
                        .filter_map(|m| parse_stored(room, m))
                        .collect(),
                    more,
                    gap,
                })
            }
            HistoryRange::Last => {
                // The stream reads forward only: a room keeps at most
                // `history_keep` messages, read through, keeping the last.
                let read =
                    Worker::read(&self.stream, subject, DeliverPolicy::All, usize::MAX).await;
                let (messages, _) = match read {
                    Ok(read) => read,
                    Err(error) => return failed(error),
                };
                let more = messages.len() > limit;
                let mut last = VecDeque::with_capacity(limit.min(messages.len()));
                for message in messages.iter().filter_map(|m| parse_stored(room, m)) {
                    if last.len() == limit {
                        last.pop_front();
                    }
                    if limit > 0 {
                        last.push_back(message);
                    }
                }
                JobResult::History(HistorySlice {
                    messages: last.into(),
                    more,
                    gap: false,
                })
            }
        }
    }

    /// Whether the room's messages right after `after` may be gone: its
    /// history is full (`history_keep`) and its oldest kept message comes
    /// later than the one after `after`.
    async fn is_trimmed_after(&self, subject: &str, after: u64) -> Result<bool, String> {
        let first = match self
            .stream
            .direct_get_next_for_subject(subject, Some(1))
            .await
        {
            Ok(first) => first.sequence,
            Err(error)
                if error.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
            {
                return Ok(false);
            }
            Err(error) => return Err(error.to_string()),
        };
        if first <= after.saturating_add(1) {
            return Ok(false);
        }
        let mut subjects = self
            .stream
            .info_with_subjects(subject)
            .await
            .map_err(|error| error.to_string())?;
        let mut count = 0usize;
        while let Some(entry) = subjects.next().await {
            let (_, n) = entry.map_err(|error| error.to_string())?;
            count = count.saturating_add(n);
        }
        Ok(count >= self.history_keep)
    }

    // Rooms and presence.

    /// Subscribes to the room's republished messages and watches its
    /// members; both are in place before `Subscribed` is answered, with
    /// the room's newest id read just before.
    async fn subscribe(&mut self, room: RoomName) -> JobResult {
        let last = match self
            .stream
            .direct_get_last_for_subject(room_subject(&room))
            .await
        {
            Ok(message) => message.sequence,
            Err(error)
                if error.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
            {
                0
            }
            Err(error) => return failed(error),
        };
        if !self.rooms.contains_key(&room) {
            match self.open_room(&room).await {
                Ok(task) => {
                    self.rooms.insert(room.clone(), task);
                }
                Err(error) => return failed(error),
            }
        }
        JobResult::Subscribed { room, last }
    }

    /// The room's live subscription and members' watch, in place (a
    /// flush), and the task delivering both.
    async fn open_room(&self, room: &RoomName) -> Result<JoinHandle<()>, String> {
        let live = self
            .client
            .subscribe(format!("{LIVE_PREFIX}.{}", room.as_str()))
            .await
            .map_err(|error| error.to_string())?;
        let watch = self
            .members
            .watch(format!("{}.*", room.as_str()))
            .await
            .map_err(|error| error.to_string())?;
        self.client
            .flush()
            .await
            .map_err(|error| error.to_string())?;
        Ok(tokio::spawn(deliver(
            room.clone(),
            live,
            watch,
            self.out.clone(),
        )))
    }

    async fn join(&mut self, room: &RoomName, user: Username) -> JobResult {
        let key = member_key(room, &user);
        match self
            .members
            .put(&key, holder_value(&user, &self.node))
            .await
        {
            Ok(revision) => {
                self.held_members.insert(key, Membership { user, revision });
                JobResult::Done
            }
            Err(error) => failed(error),
        }
    }

    async fn part(&mut self, room: &RoomName, user: &Username) -> JobResult {
        let key = member_key(room, user);
        self.held_members.remove(&key);
        match self.members.delete(&key).await {
            Ok(()) => JobResult::Done,
            Err(error) => {
                self.withdrawals.push(Withdrawal::Member { key });
                failed(error)
            }
        }
    }

    async fn list_members(&self, room: &RoomName) -> JobResult {
        let Ok(store) = self
            .jetstream
            .get_stream(format!("KV_{MEMBERS_BUCKET}"))
            .await
        else {
            return failed("the members bucket is gone");
        };
        let filter = format!("$KV.{MEMBERS_BUCKET}.{}.*", room.as_str());
        let (messages, _) =
            match Worker::read(&store, filter, DeliverPolicy::LastPerSubject, usize::MAX).await {
                Ok(read) => read,
                Err(error) => return failed(error),
            };
        let mut members: Vec<Member> = messages
            .iter()
            .filter(|message| is_put(message.headers.as_ref()))
            .filter_map(|message| serde_json::from_slice::<Holder>(&message.payload).ok())
            .filter_map(|holder| {
                Some(Member {
                    user: Username::parse(&holder.user).ok()?,
                    node: holder.node,
                })
            })
            .collect();
        members.sort_by_key(|member| member.user.key());
        JobResult::Members(members)
    }

    /// Every room with a live membership entry, counted: the last entry
    /// per key of the whole members bucket (delete and expiry markers
    /// skipped), grouped by the key's room token.
    async fn list_rooms(&self) -> JobResult {
        let Ok(store) = self
            .jetstream
            .get_stream(format!("KV_{MEMBERS_BUCKET}"))
            .await
        else {
            return failed("the members bucket is gone");
        };
        let filter = format!("$KV.{MEMBERS_BUCKET}.*.*");
        let (messages, _) =
            match Worker::read(&store, filter, DeliverPolicy::LastPerSubject, usize::MAX).await {
                Ok(read) => read,
                Err(error) => return failed(error),
            };
        let mut counts: std::collections::BTreeMap<RoomName, usize> = Default::default();
        for message in &messages {
            if !is_put(message.headers.as_ref()) {
                continue;
            }
            let room = message
                .subject
                .split('.')
                .nth(2)
                .and_then(|token| RoomName::parse(token).ok());
            if let Some(room) = room {
                *counts.entry(room).or_default() += 1;
            }
        }
        JobResult::Rooms(counts.into_iter().collect())
    }

    // The login throttle.

    /// One more failure on each key (a compare-and-set loop, so failures
    /// counted on two nodes at once both count).
    async fn record_failures(&self, keys: Vec<ThrottleKey>) -> JobResult {
        let mut counts = Vec::with_capacity(keys.len());
        for key in keys {
            let mut count = None;
            for _ in 0..16 {
                let entry = match self.throttle.entry(key.as_str()).await {
                    Ok(entry) => entry.filter(|entry| entry.operation == Operation::Put),
                    Err(error) => return failed(error),
                };
                let (current, revision) = match &entry {
                    Some(entry) => (parse_count(&entry.value), entry.revision),
                    None => (0, 0),
                };
                let next = current.saturating_add(1);
                let value = Bytes::from(next.to_string());
                let written = match (&entry, revision) {
                    (Some(_), revision) => self
                        .throttle
                        .update(key.as_str(), value, revision)
                        .await
                        .map_err(|error| error.kind() == kv::UpdateErrorKind::WrongLastRevision),
                    (None, _) => self
                        .throttle
                        .create(key.as_str(), value)
                        .await
                        .map_err(|error| error.kind() == kv::CreateErrorKind::AlreadyExists),
                };
                match written {
                    Ok(_) => {
                        count = Some(next);
                        break;
                    }
                    Err(true) => continue,
                    Err(false) => return failed(format!("cannot count a failure on {key:?}")),
                }
            }
            match count {
                Some(count) => counts.push((key, count)),
                None => return failed(format!("{key:?} kept changing")),
            }
        }
        JobResult::Failures(counts)
    }

    async fn read_failures(&self, keys: Vec<ThrottleKey>) -> JobResult {
        let mut counts = Vec::with_capacity(keys.len());
        for key in keys {
            match self.throttle.get(key.as_str()).await {
                Ok(value) => {
                    let count = value.as_deref().map_or(0, parse_count);
                    counts.push((key, count));
                }
                Err(error) => return failed(error),
            }
        }
        JobResult::Failures(counts)
    }

    /// The counts, and how long ago each key's last failure was written
    /// (a failure is the key's last write: a success deletes it).
    async fn read_failures_aged(&self, keys: Vec<ThrottleKey>) -> JobResult {
        let mut counts = Vec::with_capacity(keys.len());
        for key in keys {
            let entry = match self.throttle.entry(key.as_str()).await {
                Ok(entry) => entry.filter(|entry| entry.operation == Operation::Put),
                Err(error) => return failed(error),
            };
            let counted = entry.map_or(Counted::default(), |entry| Counted {
                failures: parse_count(&entry.value),
                age_ms: age_ms(entry.created.unix_timestamp_nanos()),
            });
            counts.push((key, counted));
        }
        JobResult::FailuresAged(counts)
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

/// Milliseconds from `created` (a KV entry's time, by the NATS server's
/// clock) to now (this node's clock); 0 if the clocks put it in the
/// future.
fn age_ms(created_nanos: i128) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let created = u128::try_from(created_nanos).unwrap_or(0);
    u64::try_from(now.saturating_sub(created) / 1_000_000).unwrap_or(u64::MAX)
}

fn parse_count(value: &[u8]) -> u32 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether a KV message is a value (not a delete, purge or expiry marker).
fn is_put(headers: Option<&async_nats::HeaderMap>) -> bool {
    let Some(headers) = headers else {
        return true;
    };
    headers.get("KV-Operation").is_none() && headers.get("Nats-Marker-Reason").is_none()
}

/// A stored room message read back, with the stream sequence as its id.
fn parse_stored(room: &RoomName, message: &jetstream::Message) -> Option<ChatMessage> {
    let id = message.info().ok()?.stream_sequence;
    decode(room, id, &message.payload)
}

fn decode(room: &RoomName, id: u64, payload: &[u8]) -> Option<ChatMessage> {
    let stored: StoredMessage = serde_json::from_slice(payload).ok()?;
    Some(ChatMessage {
        id,
        ts: stored.ts,
        target: Target::Room(room.clone()),
        from: Username::parse(&stored.from).ok()?,
        text: stored.text,
    })
}

fn header_u64(headers: Option<&async_nats::HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

/// One subscribed room's task: its republished messages (with their
/// stream sequence in `Nats-Sequence`) and its members' changes, handed to
/// the loop as they come. While the loop is behind (`bridge::OUTPUTS`),
/// messages go through a `LiveFeed` (the newest kept back, older ones
/// shed and backfilled by the hub) and a change waits for room.
async fn deliver(room: RoomName, mut live: async_nats::Subscriber, mut watch: kv::Watch, out: Out) {
    let mut feed = LiveFeed::new(room.clone(), out.clone());
    loop {
        tokio::select! {
            () = tokio::time::sleep(LiveFeed::retry()), if feed.is_holding() => {
                if !feed.flush() {
                    return;
                }
            }
            message = live.next() => {
                let Some(message) = message else { return };
                let headers = message.headers.as_ref();
                let Some(id) = header_u64(headers, "Nats-Sequence") else {
                    log::warn!("cluster: a message in {room} without its sequence");
                    continue;
                };
                let previous = header_u64(headers, "Nats-Last-Sequence").filter(|&seq| seq > 0);
                let Some(message) = decode(&room, id, &message.payload) else {
                    log::warn!("cluster: an unreadable message {id} in {room}");
                    continue;
                };
                if !feed.push(Output::Event(Event::Message { message, previous })) {
                    return;
                }
            }
            entry = watch.next() => {
                let Some(entry) = entry else { return };
                let Ok(entry) = entry else { continue };
                let Some(event) = presence(&room, &entry) else { continue };
                if !out.send_with_room(Output::Event(event)).await {
                    return;
                }
            }
        }
    }
}

/// Creates (or updates) a piece of the set-up: the stream or a bucket.
/// A NATS cluster that has just started may not answer in time (its
/// peers still meeting, leaders still being elected): what `is_transient`
/// accepts is asked again every `SETUP_RETRY`, until `connect_timeout`,
/// which bounds all of the set-up; anything else fails it, naming `what`.
async fn set_up_retrying<T, E, F>(
    what: &'static str,
    prefix: String,
    mut create: impl FnMut() -> F,
    is_transient: impl Fn(&E) -> bool,
) -> Result<T, ClusterError>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    loop {
        match create().await {
            Ok(created) => return Ok(created),
            Err(error) if is_transient(&error) => {
                log::warn!("cluster: setting up {prefix}{what}: {error}; asking again");
                tokio::time::sleep(SETUP_RETRY).await;
            }
            Err(error) => {
                return Err(ClusterError::Setup {
                    what,
                    reason: format!("{prefix}{error}"),
                });
            }
        }
    }
}

/// Why a job in flight failed when the link went down under it.
const LINK_LOST: &str = "lost the NATS connection";

/// Runs `work` unless the link goes down first (`None`): a request in
/// flight when NATS is lost fails at once, instead of at
/// `REQUEST_TIMEOUT`, so the loop hears its 503 and the worker is free to
/// re-assert as soon as the link is back. What the request did on the
/// server before the loss stands (a claim expires, a message is stored
/// and delivered, as after a timeout).
async fn unless_down<T>(
    link: &watch::Receiver<LinkState>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut down = link.clone();
    tokio::select! {
        biased;
        result = work => Some(result),
        _ = down.wait_for(|state| !state.is_up) => None,
    }
}

/// Subscribes to the probes' live subject and delivers this node's own
/// back (`Probe::seen`); other nodes' probes are ignored.
async fn open_probe(
    client: &async_nats::Client,
    node: &str,
    seen: &Arc<watch::Sender<u64>>,
) -> Result<JoinHandle<()>, String> {
    let mut live = client
        .subscribe(format!("{LIVE_PREFIX}.{PROBE_TOKEN}"))
        .await
        .map_err(|error| error.to_string())?;
    // In place before the next probe is published.
    client.flush().await.map_err(|error| error.to_string())?;
    let node = node.to_owned();
    let seen = Arc::clone(seen);
    Ok(tokio::spawn(async move {
        while let Some(message) = live.next().await {
            let Ok(text) = std::str::from_utf8(&message.payload) else {
                continue;
            };
            let Some((from, count)) = text.rsplit_once(' ') else {
                continue;
            };
            if from != node {
                continue;
            }
            if let Ok(count) = count.parse::<u64>() {
                seen.send_if_modified(|newest| {
                    let is_newer = count > *newest;
                    if is_newer {
                        *newest = count;
                    }
                    is_newer
                });
            }
        }
    }))
}

/// This node's inbox: private messages for users it holds.
async fn deliver_direct(mut inbox: async_nats::Subscriber, out: Out) {
    while let Some(message) = inbox.next().await {
        let Ok(direct) = serde_json::from_slice::<DirectMessage>(&message.payload) else {
            log::warn!("cluster: an unreadable private message");
            continue;
        };
        let (Ok(from), Ok(to)) = (Username::parse(&direct.from), Username::parse(&direct.to))
        else {
            continue;
        };
        let message = ChatMessage {
            id: direct.id,
            ts: direct.ts,
            target: Target::User(to),
            from,
            text: direct.text,
        };
        if !out
            .send_with_room(Output::Event(Event::Direct(message)))
            .await
        {
            return;
        }
    }
}

fn presence(room: &RoomName, entry: &kv::Entry) -> Option<Event> {
    let name = entry.key.rsplit('.').next()?;
    match entry.operation {
        Operation::Put => {
            let holder: Holder = serde_json::from_slice(&entry.value).ok()?;
            Some(Event::Presence {
                room: room.clone(),
                user: Username::parse(&holder.user).ok()?,
                node: holder.node,
                change: Change::Joined,
            })
        }
        Operation::Delete | Operation::Purge => Some(Event::Presence {
            room: room.clone(),
            user: Username::parse(name).ok()?,
            node: String::new(),
            change: Change::Left,
        }),
    }
}
