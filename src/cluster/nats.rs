//! The bridge thread's side: the NATS connection, the stream and buckets
//! (`design/cluster.md` names them and says why), and one async function
//! per job kind. Runs only on the bridge thread, inside its runtime.
//! Everything the loop sees leaves through `Out` as plain `Output`s.

use super::bridge::{BridgeOptions, ClusterError, Doorbell, LiveFeed, Out, PING_INTERVAL};
use super::protocol::{
    Change, Event, HistoryRange, HistorySlice, Job, JobKind, JobResult, Member, Output, ThrottleKey,
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
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the stream remembers a publish's `Nats-Msg-Id`: a publish
/// retried within it (after an ack that never came) is stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

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
        let stream = jetstream
            .create_or_update_stream(stream::Config {
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
            })
            .await
            .map_err(|error| ClusterError::Setup {
                what: "the stream",
                reason: error.to_string(),
            })?;
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
            let store = jetstream
                .create_or_update_key_value(bucket(name, max_age, markers))
                .await
                .map_err(|error| ClusterError::Setup {
                    what: "a key-value bucket",
                    reason: format!("{name}: {error}"),
                })?;
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
        let mut link = self.link.clone();
        loop {
            tokio::select! {
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
                            return self.stop();
                        }
                        match jobs.try_recv() {
                            Ok(job) => {
                                let result = if self.is_up() {
                                    self.run(job.kind).await
                                } else {
                                    self.run_offline(job.kind)
                                };
                                let done = Output::Done { ticket: job.ticket, result };
                                if !self.out.send(done) {
                                    return self.stop();
                                }
                            }
                            Err(TryRecvError::Empty) => break,
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
                        self.refresh().await;
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

    /// Stores a message and returns its sequence. Each publish carries a
    /// `Nats-Msg-Id` of its own; one whose acknowledgement did not come
    /// is sent once more under the same id while the link is up, and the
    /// stream stores it once (`DUPLICATE_WINDOW`).
    async fn publish(&mut self, subject: String, payload: Bytes) -> Result<u64, String> {
        self.published += 1;
        let msg_id = format!("{}.{}", self.msg_id_prefix, self.published);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        let mut error = String::new();
        for attempt in 0..2 {
            if attempt > 0 && !self.is_up() {
                break;
            }
            let sent = self
                .jetstream
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await;
            match sent {
                Ok(ack) => match ack.await {
                    Ok(ack) => return Ok(ack.sequence),
                    Err(failure) => error = failure.to_string(),
                },
                Err(failure) => error = failure.to_string(),
            }
            log::warn!("cluster: publish {msg_id} not acknowledged: {error}");
        }
        Err(error)
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
