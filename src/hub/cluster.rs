//! Cluster mode (issue 14): the ledger's decisions answered by the cluster
//! (`crate::cluster`, NATS JetStream) instead of the local `Ledger`.
//!
//! Each asking half that must agree with other nodes queues a `Job` here
//! (the shell drains them with `Hub::drain_cluster_jobs`, as it drains
//! password checks) and holds the request under a ticket, with its ref;
//! `Hub::handle_cluster` takes the answer and calls the same applying
//! half as local mode (`user_claimed`, `pass_claimed`, `renamed`,
//! `send_backlog`, ...). Unasked events (room messages, DMs, presence from
//! other nodes) arrive through the same input.
//!
//! The local `Ledger` stays this node's index: the names its own sessions
//! hold (DM delivery, local races) and the local members of each room
//! (fan-out). Room messages are fanned out to local members only from
//! `Event::Message`, never from the `Posted` answer, so every node
//! delivers a room's messages in the one order JetStream gave them.
//!
//! When the bridge loses NATS (`Event::Disconnected`) the hub pauses:
//! 213 to every logged-in session, 503 at once for what needs the
//! cluster. When it is back (`Event::Reconnected`) each subscribed room
//! is backfilled from the last id delivered in it, then 214. The same
//! backfill fills a hole that a live message's `previous` shows.
//!
//! Without `cluster_url` there is no `Cluster` and none of this runs.

use super::login::throttle_refusal;
use super::refusal::{NoVerdict, QuitReason, Refusal};
use super::rooms::is_quiet_count;
use super::{ConnId, Hub, Now};
use crate::cluster::ThrottleKey;
use crate::cluster::{
    Change, Event, HistoryRange, HistorySlice, Job, JobKind, JobResult, Member, Output, Ticket,
};
use crate::history::{MAX_HISTORY_REPLY, Slice, newest_that_fit, oldest_that_fit};
use crate::proto::{ChatMessage, NameKey, Ref, RoomName, ServerMsg, Target, Username};
use crate::session::State;
use crate::throttle::{self, Counted, Shared};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// The hub's side of cluster mode: jobs to submit, requests waiting for
/// their answer, and this node's view of the rooms it has members in.
#[derive(Debug)]
pub(super) struct Cluster {
    /// This node's name, as the cluster knows it (presence entries).
    node: String,
    jobs: Vec<Job>,
    next_ticket: Ticket,
    pending: HashMap<Ticket, Pending>,
    /// Connections with a name claim under way (USER, PASS, RENAME), and
    /// the name: one at a time per connection, and one local claimant per
    /// name (the cluster grants a name to a node, not to a connection).
    claiming: HashMap<ConnId, NameKey>,
    /// Connections whose login waits for the throttle's counts (a read
    /// before USER or PASS goes on, a failure counted before the 401):
    /// one request at a time, as with a claim.
    throttling: HashSet<ConnId>,
    /// The rooms this node has local members in.
    rooms: HashMap<RoomName, RoomView>,
    /// Members who joined a room and wait for its backlog: the room's
    /// messages that arrive meanwhile are held for them, and sent after
    /// the 208 (those it does not already hold), so a joiner sees the
    /// backlog first and no message twice, as in local mode. Empty except
    /// during joins: the fan-out looks here only when it is not.
    joining: HashMap<(ConnId, RoomName), Vec<ChatMessage>>,
    /// Connections entering a room (JOIN, or the default room at login)
    /// until they are members with their backlog: their input is held
    /// meanwhile (`Hub::is_waiting`), so what they say next comes after
    /// the 208, as on a single node, not inside it.
    entering: HashSet<ConnId>,
    /// Whether this node reaches the cluster, as the bridge last said.
    link: Link,
    /// While `Link::Resuming`: the rooms whose backfill is still under
    /// way; 214 goes out once it is empty.
    resuming: HashSet<RoomName>,
    /// Counts reconnections: a backfill asked before the last one may
    /// have read the stream before the outage's messages were there.
    epoch: u64,
}

/// This node's link to the cluster, as the sessions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// The bridge lost NATS (`Event::Disconnected`): every logged-in
    /// session got 213, and requests that need the cluster get 503 at once.
    Paused,
    /// NATS is back (`Event::Reconnected`) and each subscribed room is
    /// being backfilled; still 503 until every backfill is answered, then
    /// 214 and `Up`.
    Resuming,
}

/// Messages one backfill read asks for; a room that missed more is read
/// again from the last one delivered.
const BACKFILL_BATCH: usize = MAX_HISTORY_REPLY;

/// Messages held for one joiner while its backlog is read; past this the
/// newest are dropped (a read slower than `REQUEST_TIMEOUT` fails first).
const JOIN_HOLD: usize = 1024;

#[derive(Debug, Default)]
struct RoomView {
    /// `Subscribed` came back: messages and presence arrive from now on.
    is_subscribed: bool,
    /// Local members whose `Join` and backlog wait for the subscription.
    waiting: Vec<ConnId>,
    /// Everyone in the room on every node, as far as this node knows
    /// (its members' joins, `Members` at subscription, presence events):
    /// the quiet-room rule counts it, and a 204 spells the name from it.
    roster: HashMap<NameKey, (Username, String)>,
    /// The id of the room's last message this node delivered to its
    /// members (from the subscription on: the room's newest id then).
    /// A message at or below it is a duplicate; one whose `previous` is
    /// above it shows a hole, which a backfill fills.
    last: u64,
    /// While a backfill of this room is read: the live messages that
    /// arrive meanwhile, delivered after it (those it does not hold).
    backfill: Option<Held>,
    /// The `Cluster::epoch` of the backfill asked last: only its answer
    /// ends the backfill.
    backfill_epoch: u64,
}

/// Live messages held behind a backfill.
#[derive(Debug, Default)]
struct Held {
    messages: Vec<ChatMessage>,
    /// More arrived than `JOIN_HOLD`: another backfill reads them.
    is_overflowed: bool,
}

/// What a ticket's answer applies to.
#[derive(Debug)]
enum Pending {
    User {
        conn: ConnId,
        reference: Option<Ref>,
    },
    Pass {
        conn: ConnId,
        reference: Option<Ref>,
    },
    Rename {
        conn: ConnId,
        old: Username,
        reference: Option<Ref>,
    },
    /// A claim whose connection left meanwhile: a granted name is freed.
    Abandoned,
    Post {
        conn: ConnId,
        reference: Option<Ref>,
    },
    Dm {
        conn: ConnId,
        reference: Option<Ref>,
    },
    History {
        conn: ConnId,
        room: RoomName,
        range: HistoryRange,
        limit: usize,
        budget: usize,
        reference: Option<Ref>,
    },
    Backlog {
        conn: ConnId,
        room: RoomName,
        budget: usize,
    },
    Who {
        conn: ConnId,
        room: RoomName,
        reference: Option<Ref>,
    },
    Rooms {
        conn: ConnId,
        reference: Option<Ref>,
    },
    /// USER behind a password waits for the throttle's counts.
    ThrottleUser {
        conn: ConnId,
        username: Username,
        reference: Option<Ref>,
    },
    /// PASS waits for the throttle's counts before its check begins.
    ThrottlePass {
        conn: ConnId,
        username: Username,
        password: HeldPassword,
        reference: Option<Ref>,
    },
    /// A wrong password's 401 waits until the failure is counted.
    WrongPassword {
        conn: ConnId,
        username: Username,
        reference: Option<Ref>,
    },
    Subscribe {
        room: RoomName,
    },
    Roster {
        room: RoomName,
    },
    /// A room's messages after `last` delivered, read from the stream
    /// after a hole or a reconnection.
    Backfill {
        room: RoomName,
        epoch: u64,
    },
    /// Nobody waits for the answer (Join, Part, Unsubscribe, a release),
    /// or its connection left.
    Nobody,
}

/// A password held while the throttle's counts are read; never printed.
struct HeldPassword(String);

impl std::fmt::Debug for HeldPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldPassword")
    }
}

/// The throttle's three records for an attempt, as cluster keys, in
/// `Shared`'s order: the address (its group), the address and name, the
/// name.
fn throttle_keys(address: IpAddr, name: &NameKey) -> Vec<ThrottleKey> {
    let address = throttle::group(address);
    vec![
        ThrottleKey::address(address),
        ThrottleKey::address_and_name(address, name),
        ThrottleKey::name(name),
    ]
}

/// The cluster's counts for `throttle_keys(address, name)`.
fn shared_counts(address: IpAddr, name: &NameKey, counts: &[(ThrottleKey, Counted)]) -> Shared {
    let [address_key, pair_key, name_key]: [ThrottleKey; 3] =
        throttle_keys(address, name).try_into().expect("three keys");
    let find = |key: &ThrottleKey| {
        counts
            .iter()
            .find(|(counted, _)| counted == key)
            .map_or(Counted::default(), |(_, counted)| *counted)
    };
    Shared {
        address: find(&address_key),
        pair: find(&pair_key),
        name: find(&name_key),
    }
}

impl Pending {
    fn conn(&self) -> Option<ConnId> {
        match self {
            Pending::User { conn, .. }
            | Pending::Pass { conn, .. }
            | Pending::Rename { conn, .. }
            | Pending::Post { conn, .. }
            | Pending::Dm { conn, .. }
            | Pending::History { conn, .. }
            | Pending::Backlog { conn, .. }
            | Pending::Who { conn, .. }
            | Pending::Rooms { conn, .. }
            | Pending::ThrottleUser { conn, .. }
            | Pending::ThrottlePass { conn, .. }
            | Pending::WrongPassword { conn, .. } => Some(*conn),
            _ => None,
        }
    }
}

impl Cluster {
    pub(super) fn new(node: String) -> Cluster {
        Cluster {
            node,
            jobs: Vec::new(),
            next_ticket: 1,
            pending: HashMap::new(),
            claiming: HashMap::new(),
            throttling: HashSet::new(),
            rooms: HashMap::new(),
            joining: HashMap::new(),
            entering: HashSet::new(),
            link: Link::Up,
            resuming: HashSet::new(),
            epoch: 0,
        }
    }

    fn ask(&mut self, kind: JobKind, pending: Pending) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.jobs.push(Job { ticket, kind });
        self.pending.insert(ticket, pending);
    }

    /// Reads `room`'s messages after the last one delivered; live ones
    /// are held until it is answered.
    fn backfill(&mut self, room: &RoomName) {
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        view.backfill.get_or_insert_with(Held::default);
        view.backfill_epoch = self.epoch;
        let after = view.last;
        self.ask(
            JobKind::History {
                room: room.clone(),
                range: HistoryRange::After(after),
                limit: BACKFILL_BATCH,
            },
            Pending::Backfill {
                room: room.clone(),
                epoch: self.epoch,
            },
        );
    }

    /// Members of `room` on every node, as this node knows them.
    pub(super) fn count(&self, room: &RoomName) -> usize {
        self.rooms.get(room).map_or(0, |view| view.roster.len())
    }
}

/// At most `limit` messages within `budget` encoded bytes: the newest
/// (`Last`) or the oldest (`After`); `more` when some were left out.
fn trim(slice: HistorySlice, range: HistoryRange, limit: usize, budget: usize) -> Slice {
    let HistorySlice {
        mut messages,
        mut more,
        gap,
    } = slice;
    match range {
        HistoryRange::Last => {
            let first = messages.len() - newest_that_fit(messages.iter(), limit, budget);
            more |= first > 0;
            messages.drain(..first);
        }
        HistoryRange::After(_) => {
            let kept = oldest_that_fit(messages.iter(), limit, budget);
            more |= kept < messages.len();
            messages.truncate(kept);
        }
    }
    Slice {
        messages,
        more,
        gap,
    }
}

impl Hub {
    /// Cluster mode from now on: the shell calls this once, after the
    /// bridge started, before any connection.
    pub fn enable_cluster(&mut self, node: &str) {
        self.cluster = Some(Box::new(Cluster::new(node.to_owned())));
    }

    /// Jobs for the cluster bridge, oldest first (empty without a cluster).
    pub fn drain_cluster_jobs(&mut self) -> Vec<Job> {
        self.cluster
            .as_mut()
            .map(|cluster| std::mem::take(&mut cluster.jobs))
            .unwrap_or_default()
    }

    /// The bridge's queue was full: the request is refused (503), the
    /// session goes on.
    pub fn handle_cluster_busy(&mut self, ticket: Ticket, now: Now) {
        self.handle_cluster(
            Output::Done {
                ticket,
                result: JobResult::Failed("the cluster's queue is full".to_owned()),
            },
            now,
        );
    }

    /// An output of the bridge: the answer to a job, or an event.
    pub fn handle_cluster(&mut self, output: Output, now: Now) {
        match output {
            Output::Done { ticket, result } => {
                let Some(pending) = self
                    .cluster
                    .as_mut()
                    .and_then(|cluster| cluster.pending.remove(&ticket))
                else {
                    return;
                };
                if let JobResult::Failed(reason) = &result {
                    log::warn!("cluster job failed: {reason}");
                }
                self.apply_cluster(pending, result, now);
            }
            Output::Event(event) => self.cluster_event(event),
        }
    }

    /// Whether `conn` has a name claim under way in the cluster.
    /// True while `conn` waits for the cluster before its next line may
    /// be answered: a name claim, the throttle's counts, or entering a room.
    pub(super) fn is_cluster_waiting(&self, conn: ConnId) -> bool {
        self.is_claiming(conn)
            || self
                .cluster
                .as_ref()
                .is_some_and(|cluster| cluster.entering.contains(&conn))
    }

    /// `conn` is a member of the room it entered, or will not be: its
    /// held input is read again.
    fn entered(&mut self, conn: ConnId) {
        if let Some(cluster) = self.cluster.as_mut()
            && cluster.entering.remove(&conn)
        {
            self.resumed.push(conn);
        }
    }

    pub(super) fn is_claiming(&self, conn: ConnId) -> bool {
        self.cluster.as_ref().is_some_and(|cluster| {
            cluster.claiming.contains_key(&conn) || cluster.throttling.contains(&conn)
        })
    }

    /// USER or PASS behind a password in a cluster, the asking half: the
    /// throttle's counts are read from the cluster (`ReadFailuresAged`),
    /// and the answer goes on as local mode does, with those counts.
    pub(super) fn cluster_read_throttle(
        &mut self,
        conn: ConnId,
        username: Username,
        password: Option<String>,
    ) -> Result<(), Refusal> {
        if self.is_claiming(conn) {
            return Err(Refusal::CheckUnderWay);
        }
        if self.is_paused() {
            if password.is_some() {
                self.ask_password_again(conn, NoVerdict::ClusterUnavailable);
                return Ok(());
            }
            return Err(Refusal::ClusterPaused);
        }
        let address = self
            .clients
            .get(conn)
            .map(|client| client.peer.ip())
            .ok_or(Refusal::ConnectionGone)?;
        let reference = self.held_ref(conn);
        let Some(cluster) = self.cluster.as_mut() else {
            return Ok(());
        };
        let keys = throttle_keys(address, &username.key());
        let pending = match password {
            Some(password) => Pending::ThrottlePass {
                conn,
                username,
                password: HeldPassword(password),
                reference,
            },
            None => Pending::ThrottleUser {
                conn,
                username,
                reference,
            },
        };
        cluster.throttling.insert(conn);
        cluster.ask(JobKind::ReadFailuresAged { keys }, pending);
        Ok(())
    }

    /// A wrong password, counted in the cluster (`RecordFailures`, a
    /// compare-and-set per key). `waiting`: the connection whose 401
    /// waits for the count (none for a check whose client left).
    pub(super) fn cluster_count_failure(
        &mut self,
        address: IpAddr,
        name: &NameKey,
        waiting: Option<(ConnId, Username)>,
    ) {
        let reference = waiting.as_ref().and_then(|(conn, _)| self.held_ref(*conn));
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let keys = throttle_keys(address, name);
        let pending = match waiting {
            Some((conn, username)) => {
                cluster.throttling.insert(conn);
                Pending::WrongPassword {
                    conn,
                    username,
                    reference,
                }
            }
            None => Pending::Nobody,
        };
        cluster.ask(JobKind::RecordFailures { keys }, pending);
    }

    /// A right password: the name's records are cleared cluster-wide, the
    /// address keeps its failures (as `Throttle::record_success`).
    pub(super) fn cluster_clear_failures(&mut self, address: IpAddr, name: &NameKey) {
        if let Some(cluster) = self.cluster.as_mut() {
            let keys = throttle_keys(address, name).split_off(1);
            cluster.ask(JobKind::ClearFailures { keys }, Pending::Nobody);
        }
    }

    /// The throttle's counts came back for a USER or PASS.
    fn throttle_read(&mut self, pending: Pending, result: JobResult, now: Now) {
        let (conn, username, password, reference) = match pending {
            Pending::ThrottleUser {
                conn,
                username,
                reference,
            } => (conn, username, None, reference),
            Pending::ThrottlePass {
                conn,
                username,
                password,
                reference,
            } => (conn, username, Some(password.0), reference),
            _ => return,
        };
        let is_awaited = match (self.state(conn), &password) {
            (Some(State::UserAuth), None) => true,
            (Some(State::PassAuth { username: asked }), Some(_)) => *asked == username,
            _ => false,
        };
        let Some(address) = self.clients.get(conn).map(|client| client.peer.ip()) else {
            return;
        };
        if !is_awaited {
            return;
        }
        self.answering_late(conn, reference, |hub| {
            let JobResult::FailuresAged(counts) = result else {
                match password {
                    Some(_) => hub.ask_password_again(conn, NoVerdict::ClusterUnavailable),
                    None => hub.refuse(conn, Refusal::ClusterUnavailable),
                }
                return;
            };
            let key = username.key();
            let shared = shared_counts(address, &key, &counts);
            match password {
                None => match hub
                    .throttle
                    .check_shared(address, key.as_str(), now.mono_ms, &shared)
                {
                    Ok(()) => hub.password_user_accepted(conn, username),
                    Err(wait) => hub.refuse(conn, throttle_refusal(wait)),
                },
                Some(password) => {
                    match hub
                        .throttle
                        .begin_shared(address, key.as_str(), now.mono_ms, &shared)
                    {
                        Ok(()) => hub.start_check(conn, username, password, now),
                        Err(wait) => hub.refuse(conn, throttle_refusal(wait)),
                    }
                }
            }
        });
    }

    /// Whether a local connection has a claim of `username` under way.
    fn is_claimed(&self, username: &Username) -> bool {
        let key = username.key();
        self.cluster
            .as_ref()
            .is_some_and(|cluster| cluster.claiming.values().any(|claimed| *claimed == key))
    }

    /// The ref of the request being answered, if it is `conn`'s: kept
    /// with a ticket until the cluster answers.
    fn held_ref(&self, conn: ConnId) -> Option<Ref> {
        self.answering
            .as_ref()
            .filter(|answering| answering.conn == conn)
            .map(|answering| answering.reference.clone())
    }

    /// A name claim (USER under open auth, a verified PASS, RENAME), the
    /// asking half in a cluster: local checks first (another local
    /// connection holds or claims it: 409 at once), then `ClaimName` or
    /// `Rename` leaves as a job.
    pub(super) fn cluster_claim(
        &mut self,
        conn: ConnId,
        username: Username,
        old: Option<Username>,
        is_pass: bool,
    ) -> Result<(), Refusal> {
        if self.is_claiming(conn) {
            return Err(Refusal::CheckUnderWay);
        }
        if self.is_paused() {
            if is_pass {
                self.ask_password_again(conn, NoVerdict::ClusterUnavailable);
                return Ok(());
            }
            return Err(Refusal::ClusterPaused);
        }
        self.ledger.check_name(conn, &username)?;
        let reference = self.held_ref(conn);
        let Some(cluster) = self.cluster.as_mut() else {
            return Ok(());
        };
        let key = username.key();
        if cluster
            .claiming
            .iter()
            .any(|(&other, claimed)| other != conn && *claimed == key)
        {
            return Err(Refusal::NameTaken(username));
        }
        cluster.claiming.insert(conn, key);
        match old {
            Some(old) => cluster.ask(
                JobKind::Rename {
                    old: old.clone(),
                    new: username,
                },
                Pending::Rename {
                    conn,
                    old,
                    reference,
                },
            ),
            None if is_pass => cluster.ask(
                JobKind::ClaimName { user: username },
                Pending::Pass { conn, reference },
            ),
            None => cluster.ask(
                JobKind::ClaimName { user: username },
                Pending::User { conn, reference },
            ),
        }
        Ok(())
    }

    /// A name this node's session held is free (quit, disconnect).
    pub(super) fn cluster_release(&mut self, username: &Username) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.ask(
                JobKind::ReleaseName {
                    user: username.clone(),
                },
                Pending::Nobody,
            );
        }
    }

    /// SAY in a cluster, the asking half: `Post` leaves as a job; the
    /// message reaches members (the sender too) as `Event::Message`.
    pub(super) fn cluster_post(
        &mut self,
        conn: ConnId,
        room: RoomName,
        from: Username,
        text: String,
        now: Now,
    ) {
        let kind = JobKind::Post {
            room,
            from,
            text,
            ts: now.unix_ms,
        };
        self.ask_for(conn, kind, |reference| Pending::Post { conn, reference });
    }

    /// DM in a cluster, the asking half: `SendDm` finds the holder on
    /// any node and gives the message its id.
    pub(super) fn cluster_dm(
        &mut self,
        conn: ConnId,
        from: Username,
        to: Username,
        text: String,
        now: Now,
    ) {
        let kind = JobKind::SendDm {
            from,
            to,
            text,
            ts: now.unix_ms,
        };
        self.ask_for(conn, kind, |reference| Pending::Dm { conn, reference });
    }

    /// HISTORY in a cluster, the asking half: the stream is read.
    pub(super) fn cluster_history(
        &mut self,
        conn: ConnId,
        room: RoomName,
        after: Option<u64>,
        limit: usize,
        budget: usize,
    ) {
        let range = after.map_or(HistoryRange::Last, HistoryRange::After);
        let kind = JobKind::History {
            room: room.clone(),
            range,
            limit: limit.min(MAX_HISTORY_REPLY),
        };
        self.ask_for(conn, kind, |reference| Pending::History {
            conn,
            room,
            range,
            limit,
            budget,
            reference,
        });
    }

    /// WHO in a cluster, the asking half: everyone on every node.
    pub(super) fn cluster_who(&mut self, conn: ConnId, room: RoomName) {
        let kind = JobKind::Members { room: room.clone() };
        self.ask_for(conn, kind, |reference| Pending::Who {
            conn,
            room,
            reference,
        });
    }

    /// ROOMS in a cluster, the asking half: every node's rooms.
    pub(super) fn cluster_rooms(&mut self, conn: ConnId) {
        self.ask_for(conn, JobKind::Rooms, |reference| Pending::Rooms {
            conn,
            reference,
        });
    }

    /// A request that only asks the cluster, the asking half shared by
    /// SAY, DM, HISTORY, WHO and ROOMS: refused at once (503) while chat
    /// is paused; otherwise `kind` leaves as a job and its answer is
    /// applied to what `pending` makes of the request's held `ref`.
    fn ask_for(
        &mut self,
        conn: ConnId,
        kind: JobKind,
        pending: impl FnOnce(Option<Ref>) -> Pending,
    ) {
        if self.is_paused() {
            self.refuse(conn, Refusal::ClusterPaused);
            return;
        }
        let reference = self.held_ref(conn);
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.ask(kind, pending(reference));
        }
    }

    /// Entering a room in a cluster (JOIN, or the default room at login),
    /// the applying half. Once this node is subscribed to the room (a
    /// `Subscribe` on its first local member), the newcomer is a local
    /// member: local members are told (only the newcomer, when the room is
    /// quiet cluster-wide), the membership is published (`Join`; other
    /// nodes announce it from the presence event) and the backlog read.
    /// Until then it waits, so it misses no message between the backlog
    /// and live delivery.
    pub(super) fn cluster_enter_room(&mut self, conn: ConnId, username: Username, room: RoomName) {
        if self.is_paused() {
            // Not entered: its members would not hear it, nor it them.
            if let Some(client) = self.clients.get_mut(conn) {
                client.rooms.retain(|joined| *joined != room);
            }
            self.refuse(conn, Refusal::ClusterPaused);
            return;
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let is_new = !cluster.rooms.contains_key(&room);
        let node = cluster.node.clone();
        cluster.entering.insert(conn);
        let view = cluster.rooms.entry(room.clone()).or_default();
        view.roster.insert(username.key(), (username, node));
        if view.is_subscribed {
            self.cluster_joined(conn, room);
            return;
        }
        view.waiting.push(conn);
        if is_new {
            cluster.ask(
                JobKind::Subscribe { room: room.clone() },
                Pending::Subscribe { room },
            );
        }
    }

    /// The room is subscribed: `conn` is a local member from now on, its
    /// local neighbours are told, its membership published and its
    /// backlog read.
    fn cluster_joined(&mut self, conn: ConnId, room: RoomName) {
        let Some(username) = self.state(conn).and_then(State::username).cloned() else {
            self.entered(conn);
            return;
        };
        let quiet_room_size = self.config.quiet_room_size;
        let count = self
            .cluster
            .as_ref()
            .map_or(0, |cluster| cluster.count(&room));
        let members = self.ledger.join(conn, &room);
        let joined = ServerMsg::Connected {
            username: username.clone(),
            room: room.clone(),
        };
        if is_quiet_count(count.max(members.len()), quiet_room_size) {
            self.clients.send(conn, &joined);
        } else {
            self.clients.deliver(members, &joined);
        }
        let backlog = self.config.history_backlog;
        let budget = self.backlog_budget(conn);
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        cluster.ask(
            JobKind::Join {
                room: room.clone(),
                user: username,
            },
            Pending::Nobody,
        );
        let Some(backlog) = backlog else {
            self.entered(conn);
            return;
        };
        cluster.joining.insert((conn, room.clone()), Vec::new());
        cluster.ask(
            JobKind::History {
                room: room.clone(),
                range: HistoryRange::Last,
                limit: backlog.min(MAX_HISTORY_REPLY),
            },
            Pending::Backlog { conn, room, budget },
        );
    }

    /// `conn` (logged in as `username`) left `room` in a cluster: the
    /// membership is withdrawn (`Part`), and the subscription too after
    /// the last local member (`Unsubscribe`).
    pub(super) fn cluster_left_room(&mut self, conn: ConnId, username: &Username, room: &RoomName) {
        let is_empty = self.ledger.members(room).is_none_or(<[ConnId]>::is_empty);
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        cluster.ask(
            JobKind::Part {
                room: room.clone(),
                user: username.clone(),
            },
            Pending::Nobody,
        );
        cluster.joining.remove(&(conn, room.clone()));
        if cluster.entering.remove(&conn) {
            self.resumed.push(conn);
        }
        let mut is_waited_for = false;
        if let Some(view) = cluster.rooms.get_mut(room) {
            view.waiting.retain(|&waiting| waiting != conn);
            is_waited_for = !view.waiting.is_empty();
            let key = username.key();
            if view
                .roster
                .get(&key)
                .is_some_and(|(_, node)| *node == cluster.node)
            {
                view.roster.remove(&key);
            }
        }
        if is_empty && !is_waited_for && cluster.rooms.remove(room).is_some() {
            cluster.ask(JobKind::Unsubscribe { room: room.clone() }, Pending::Nobody);
        }
    }

    /// `conn` is leaving: what it waits for answers nobody; a name claim
    /// under way is freed if it is granted.
    pub(super) fn cluster_forget(&mut self, conn: ConnId) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        cluster.claiming.remove(&conn);
        cluster.throttling.remove(&conn);
        cluster.joining.retain(|(joiner, _), _| *joiner != conn);
        cluster.entering.remove(&conn);
        for pending in cluster.pending.values_mut() {
            if pending.conn() == Some(conn) {
                *pending = match pending {
                    Pending::User { .. } | Pending::Pass { .. } | Pending::Rename { .. } => {
                        Pending::Abandoned
                    }
                    _ => Pending::Nobody,
                };
            }
        }
    }

    /// The server goes down: every name this node holds is released and
    /// every membership withdrawn, as far as the bridge gets to it (what
    /// it does not expires after `NAME_TTL`).
    pub(super) fn cluster_shutdown(&mut self, leaving: Vec<(Username, Vec<RoomName>)>) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        for (username, rooms) in leaving {
            for room in rooms {
                cluster.ask(
                    JobKind::Part {
                        room,
                        user: username.clone(),
                    },
                    Pending::Nobody,
                );
            }
            cluster.ask(JobKind::ReleaseName { user: username }, Pending::Nobody);
        }
    }

    fn cluster_unavailable(&mut self, conn: ConnId, reference: Option<Ref>) {
        self.answering_late(conn, reference, |hub| {
            hub.refuse(conn, Refusal::ClusterUnavailable);
        });
    }

    fn logged_in_as(&self, conn: ConnId) -> Option<Username> {
        self.state(conn).and_then(State::username).cloned()
    }

    /// The applying halves, from the cluster's answers.
    fn apply_cluster(&mut self, pending: Pending, result: JobResult, now: Now) {
        if let Some(conn) = pending.conn()
            && matches!(
                pending,
                Pending::User { .. } | Pending::Pass { .. } | Pending::Rename { .. }
            )
            && let Some(cluster) = self.cluster.as_mut()
        {
            cluster.claiming.remove(&conn);
            self.resumed.push(conn);
        }
        if let Some(conn) = pending.conn()
            && matches!(
                pending,
                Pending::ThrottleUser { .. }
                    | Pending::ThrottlePass { .. }
                    | Pending::WrongPassword { .. }
            )
            && let Some(cluster) = self.cluster.as_mut()
        {
            cluster.throttling.remove(&conn);
            self.resumed.push(conn);
        }
        match (pending, result) {
            (pending @ (Pending::ThrottleUser { .. } | Pending::ThrottlePass { .. }), result) => {
                self.throttle_read(pending, result, now);
            }
            (
                Pending::WrongPassword {
                    conn,
                    username,
                    reference,
                },
                result,
            ) => {
                if let JobResult::Failed(_) = result {
                    // Counted on this node only; the client still hears.
                    log::warn!("a wrong password for {username} was not counted in the cluster");
                }
                if matches!(self.state(conn), Some(State::PassAuth { username: asked }) if *asked == username)
                {
                    self.answering_late(conn, reference, |hub| hub.wrong_password(conn, username));
                }
            }
            (Pending::User { conn, reference }, result) => {
                if self.state(conn) != Some(&State::UserAuth) {
                    return;
                }
                self.answering_late(conn, reference, |hub| match result {
                    JobResult::Claimed(username) => match hub.ledger.claim_name(conn, username) {
                        Ok(claim) => hub.user_claimed(conn, claim),
                        Err(taken) => hub.refuse(conn, taken.into()),
                    },
                    JobResult::Taken(username) => hub.refuse(conn, Refusal::NameTaken(username)),
                    _ => hub.refuse(conn, Refusal::ClusterUnavailable),
                });
            }
            (Pending::Pass { conn, reference }, result) => {
                if !matches!(self.state(conn), Some(State::PassAuth { .. })) {
                    return;
                }
                self.answering_late(conn, reference, |hub| match result {
                    JobResult::Claimed(username) => {
                        let claim = hub.ledger.claim_name(conn, username);
                        hub.pass_claimed(conn, claim);
                    }
                    JobResult::Taken(username) => {
                        hub.pass_claimed(conn, Err(super::ledger::Taken(username)));
                    }
                    _ => hub.ask_password_again(conn, NoVerdict::ClusterUnavailable),
                });
            }
            (
                Pending::Rename {
                    conn,
                    old,
                    reference,
                },
                result,
            ) => {
                if self.logged_in_as(conn).as_ref() != Some(&old) {
                    return;
                }
                self.answering_late(conn, reference, |hub| match result {
                    JobResult::Claimed(new) => match hub.ledger.rename(conn, &old, new) {
                        Ok(claim) => {
                            let new = claim.username().clone();
                            hub.cluster_rekey(conn, &old, &new);
                            hub.renamed(conn, old, claim);
                        }
                        Err(taken) => hub.refuse(conn, taken.into()),
                    },
                    JobResult::Taken(new) => hub.refuse(conn, Refusal::NameTaken(new)),
                    _ => hub.refuse(conn, Refusal::ClusterUnavailable),
                });
            }
            // Granted to a session that left: free it, unless a local
            // session holds or claims it meanwhile (its claim came after
            // this one, and a release now would undo it).
            (Pending::Abandoned, JobResult::Claimed(username))
                if self.ledger.holder(&username).is_none() && !self.is_claimed(&username) =>
            {
                self.cluster_release(&username);
            }
            (Pending::Post { conn, reference }, result) => match result {
                // Members, the sender too, get it from `Event::Message`.
                JobResult::Posted(_) => {}
                _ => self.cluster_unavailable(conn, reference),
            },
            (Pending::Dm { conn, reference }, result) => match result {
                JobResult::DmSent { message, .. } => {
                    if self.logged_in_as(conn).is_some() {
                        self.clients.send(conn, &ServerMsg::Message(message));
                    }
                }
                JobResult::NoSuchUser(to) => self.answering_late(conn, reference, |hub| {
                    hub.refuse(conn, Refusal::NoSuchUser(to));
                }),
                _ => self.cluster_unavailable(conn, reference),
            },
            (
                Pending::History {
                    conn,
                    room,
                    range,
                    limit,
                    budget,
                    reference,
                },
                result,
            ) => match result {
                JobResult::History(slice) => {
                    let slice = trim(slice, range, limit, budget);
                    self.answer_late_charged(conn, reference, now, |hub| {
                        hub.send_backlog(conn, room, slice);
                    });
                }
                _ => self.cluster_unavailable(conn, reference),
            },
            (Pending::Backlog { conn, room, budget }, result) => {
                self.entered(conn);
                let held = self
                    .cluster
                    .as_mut()
                    .and_then(|cluster| cluster.joining.remove(&(conn, room.clone())))
                    .unwrap_or_default();
                if !self.is_member(conn, &room) {
                    return;
                }
                // Without a backlog (the read failed) the joiner still
                // gets what was held for it.
                let mut newest = 0;
                if let JobResult::History(slice) = result {
                    let slice = trim(slice, HistoryRange::Last, usize::MAX, budget);
                    newest = slice.messages.last().map_or(0, |message| message.id);
                    self.clients.send(
                        conn,
                        &ServerMsg::Backlog {
                            room,
                            messages: slice.messages,
                            more: slice.more,
                            gap: slice.gap,
                        },
                    );
                }
                for message in held.into_iter().filter(|message| message.id > newest) {
                    self.clients.send(conn, &ServerMsg::Message(message));
                }
            }
            (
                Pending::Who {
                    conn,
                    room,
                    reference,
                },
                result,
            ) => match result {
                JobResult::Members(members) => {
                    let exists = !members.is_empty() || self.ledger.members(&room).is_some();
                    self.answer_late_charged(conn, reference, now, |hub| {
                        if exists {
                            let users = members.into_iter().map(|member| member.user).collect();
                            hub.send_who(conn, room, users);
                        } else {
                            hub.refuse(conn, Refusal::NoSuchRoom(room));
                        }
                    });
                }
                _ => self.cluster_unavailable(conn, reference),
            },
            (Pending::Rooms { conn, reference }, result) => match result {
                JobResult::Rooms(mut rooms) => {
                    // The default room exists even when nobody is in it.
                    let default = &self.config.default_room;
                    if let Err(at) = rooms.binary_search_by(|(name, _)| name.cmp(default)) {
                        rooms.insert(at, (default.clone(), 0));
                    }
                    self.answer_late_charged(conn, reference, now, |hub| {
                        hub.send_room_list(conn, rooms);
                    });
                }
                _ => self.cluster_unavailable(conn, reference),
            },
            (Pending::Subscribe { room }, JobResult::Subscribed { last, .. }) => {
                self.subscribed(room, last)
            }
            (Pending::Subscribe { room }, _) => self.subscribe_failed(room),
            (Pending::Roster { room }, JobResult::Members(members)) => {
                self.seed_roster(&room, members)
            }
            (Pending::Backfill { room, epoch }, result) => self.backfilled(room, epoch, result),
            _ => {}
        }
    }

    /// Sends a late answer through `answer_it` (with the request's ref)
    /// and charges what it cost to the client's answer budget, as
    /// `take_line` charges an answer given at once.
    fn answer_late_charged(
        &mut self,
        conn: ConnId,
        reference: Option<Ref>,
        now: Now,
        answer_it: impl FnOnce(&mut Hub),
    ) {
        let before = self.pending_bytes(conn);
        self.answering_late(conn, reference, answer_it);
        let cost = self.pending_bytes(conn).saturating_sub(before);
        let rate = self.answer_rate();
        if let Some(client) = self.clients.get_mut(conn) {
            client.answers.spend(cost, rate, now.mono_ms);
        }
    }

    /// A rename moves `conn`'s memberships to the new name (other nodes
    /// see the old name leave and the new one join).
    fn cluster_rekey(&mut self, conn: ConnId, old: &Username, new: &Username) {
        let rooms = self
            .clients
            .get(conn)
            .map(|client| client.rooms.clone())
            .unwrap_or_default();
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        for room in rooms {
            let Some(view) = cluster.rooms.get_mut(&room) else {
                continue;
            };
            view.roster.remove(&old.key());
            view.roster
                .insert(new.key(), (new.clone(), cluster.node.clone()));
            if !view.is_subscribed {
                // Its `Join` is still to come, under the new name.
                continue;
            }
            // A change of case keeps the entry's key: the put rewrites it.
            if old.key() != new.key() {
                cluster.ask(
                    JobKind::Part {
                        room: room.clone(),
                        user: old.clone(),
                    },
                    Pending::Nobody,
                );
            }
            cluster.ask(
                JobKind::Join {
                    room,
                    user: new.clone(),
                },
                Pending::Nobody,
            );
        }
    }

    fn subscribed(&mut self, room: RoomName, last: u64) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let Some(view) = cluster.rooms.get_mut(&room) else {
            return;
        };
        if view.is_subscribed {
            return;
        }
        view.is_subscribed = true;
        view.last = last;
        let waiting = std::mem::take(&mut view.waiting);
        cluster.ask(
            JobKind::Members { room: room.clone() },
            Pending::Roster { room: room.clone() },
        );
        for conn in waiting {
            if self.is_member(conn, &room) {
                self.cluster_joined(conn, room.clone());
            }
        }
    }

    /// The room could not be subscribed: its waiting members are told
    /// (503) and leave it.
    fn subscribe_failed(&mut self, room: RoomName) {
        let Some(view) = self
            .cluster
            .as_mut()
            .and_then(|cluster| cluster.rooms.get_mut(&room))
        else {
            return;
        };
        if view.is_subscribed {
            return;
        }
        let waiting = std::mem::take(&mut view.waiting);
        for conn in waiting {
            self.entered(conn);
            if self.is_member(conn, &room) {
                self.clients
                    .send(conn, &Refusal::ClusterUnavailable.to_msg());
                self.remove_from_room(conn, &room);
            }
        }
    }

    fn seed_roster(&mut self, room: &RoomName, members: Vec<Member>) {
        let Some(view) = self
            .cluster
            .as_mut()
            .and_then(|cluster| cluster.rooms.get_mut(room))
        else {
            return;
        };
        for member in members {
            view.roster
                .entry(member.user.key())
                .or_insert((member.user, member.node));
        }
    }

    fn cluster_event(&mut self, event: Event) {
        match event {
            Event::Message { message, previous } => self.room_message(message, previous),
            Event::Direct(message) => self.deliver_direct(message),
            Event::Presence {
                room,
                user,
                node,
                change,
            } => self.presence(room, user, node, change),
            Event::NameLost(username) => {
                if let Some(conn) = self.ledger.holder(&username) {
                    log::warn!("{username} lost its name to another node");
                    self.clients
                        .send(conn, &Refusal::NameLost(username).to_msg());
                    self.quit(conn, QuitReason::NameLost);
                }
            }
            Event::Disconnected => self.link_lost(),
            Event::Reconnected => self.link_back(),
        }
    }

    /// Whether requests that need the cluster are refused at once (503):
    /// from the link's loss until every room caught up after it came back.
    fn is_paused(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|cluster| cluster.link != Link::Up)
    }

    /// Every logged-in session is sent `msg`.
    fn tell_logged_in(&mut self, msg: &ServerMsg) {
        let sessions: Vec<ConnId> = (0..self.clients.slots.len())
            .map(ConnId)
            .filter(|&conn| self.logged_in_as(conn).is_some())
            .collect();
        self.clients.deliver(&sessions, msg);
    }

    /// NATS is gone: chat is paused (213), requests that need the
    /// cluster are refused at once until it resumes.
    fn link_lost(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let was = std::mem::replace(&mut cluster.link, Link::Paused);
        cluster.resuming.clear();
        log::warn!("cluster: NATS connection lost; chat paused until it is back");
        if was == Link::Up {
            self.tell_logged_in(&ServerMsg::Paused);
        }
    }

    /// NATS is back and the bridge re-asserted this node's names and
    /// memberships: each subscribed room is backfilled from the last
    /// message delivered in it, rosters are read again, and chat resumes
    /// (214) once every backfill is answered.
    fn link_back(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if cluster.link != Link::Paused {
            return;
        }
        cluster.link = Link::Resuming;
        cluster.epoch += 1;
        let rooms: Vec<RoomName> = cluster
            .rooms
            .iter()
            .filter(|(_, view)| view.is_subscribed)
            .map(|(room, _)| room.clone())
            .collect();
        let me = cluster.node.clone();
        for room in rooms {
            // Who joined or left meanwhile is read again (`Members`).
            if let Some(view) = cluster.rooms.get_mut(&room) {
                view.roster.retain(|_, (_, node)| *node == me);
            }
            // Even behind one under way: that one may have read the
            // stream before the link dropped.
            cluster.backfill(&room);
            cluster.ask(
                JobKind::Members { room: room.clone() },
                Pending::Roster { room: room.clone() },
            );
            cluster.resuming.insert(room);
        }
        log::info!(
            "cluster: NATS connection back; backfilling {} room(s)",
            cluster.resuming.len()
        );
        self.resume_if_caught_up();
    }

    /// 214 once the link is back and no room's backfill is outstanding.
    fn resume_if_caught_up(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if cluster.link != Link::Resuming || !cluster.resuming.is_empty() {
            return;
        }
        cluster.link = Link::Up;
        log::info!("cluster: chat resumed");
        self.tell_logged_in(&ServerMsg::Resumed);
    }

    /// A live message of a subscribed room: delivered unless this node
    /// delivered it already; held behind a backfill under way; or, when
    /// its `previous` shows that messages in between never arrived here,
    /// held behind a backfill that reads them first.
    fn room_message(&mut self, message: ChatMessage, previous: Option<u64>) {
        let Target::Room(room) = &message.target else {
            return;
        };
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let Some(view) = cluster.rooms.get_mut(room) else {
            return;
        };
        // Before `Subscribed` (a delivery left over from an earlier
        // subscription of the room) nobody here is a member yet.
        if !view.is_subscribed || message.id <= view.last {
            return;
        }
        if let Some(held) = view.backfill.as_mut() {
            if held.messages.len() < JOIN_HOLD {
                held.messages.push(message);
            } else {
                held.is_overflowed = true;
            }
            return;
        }
        if previous.is_some_and(|previous| previous > view.last) {
            log::warn!(
                "cluster: {room}: messages after {} missed; backfilling",
                view.last
            );
            let room = room.clone();
            cluster.backfill(&room);
            if let Some(held) = cluster
                .rooms
                .get_mut(&room)
                .and_then(|view| view.backfill.as_mut())
            {
                held.messages.push(message);
            }
            return;
        }
        view.last = message.id;
        self.deliver_room_message(message);
    }

    /// A backfill's answer: its messages, then the live ones held behind
    /// it, each delivered once and in id order. A room that missed more
    /// than one read (or held too many) is read again from there. A read
    /// that failed delivers what was held: the messages it was for stay
    /// missing here (HISTORY has them), and a warning says which.
    fn backfilled(&mut self, room: RoomName, epoch: u64, result: JobResult) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let Some(view) = cluster.rooms.get_mut(&room) else {
            cluster.resuming.remove(&room);
            self.resume_if_caught_up();
            return;
        };
        if epoch != view.backfill_epoch {
            // Superseded by one asked after a reconnection: what it read
            // is delivered (in order, after what was), the rest is left
            // to the newer one.
            let mut deliver = Vec::new();
            if let JobResult::History(slice) = result {
                for message in slice.messages {
                    if message.id > view.last {
                        view.last = message.id;
                        deliver.push(message);
                    }
                }
            }
            for message in deliver {
                self.deliver_room_message(message);
            }
            return;
        }
        let mut deliver = Vec::new();
        let mut is_more = false;
        match result {
            JobResult::History(slice) => {
                is_more = slice.more;
                let mut last = view.last;
                for message in slice.messages {
                    if message.id > last {
                        last = message.id;
                        deliver.push(message);
                    }
                }
                view.last = last;
            }
            _ if cluster.link == Link::Paused => {
                // Lost again: what was held is in the stream, and the
                // backfill on reconnection reads it from `last`.
                view.backfill = None;
                return;
            }
            _ if cluster.link == Link::Resuming => {
                // Asked before the link dropped, failed by it: read again
                // (a failure with the link up takes a request's timeout;
                // one with it down comes after the `Disconnected`).
                cluster.backfill(&room);
                return;
            }
            other => log::warn!(
                "cluster: {room}: backfill after {} failed ({other:?}); those messages are \
                 not delivered here",
                view.last
            ),
        }
        let mut again = is_more;
        if !is_more {
            let held = view.backfill.take().unwrap_or_default();
            again = held.is_overflowed;
            for message in held.messages {
                if message.id > view.last {
                    view.last = message.id;
                    deliver.push(message);
                }
            }
        }
        if again {
            cluster.backfill(&room);
        } else {
            cluster.resuming.remove(&room);
        }
        for message in deliver {
            self.deliver_room_message(message);
        }
        self.resume_if_caught_up();
    }

    /// A room message from the stream, to the room's local members; held
    /// for those whose join backlog is still being read.
    fn deliver_room_message(&mut self, message: ChatMessage) {
        let Target::Room(room) = &message.target else {
            return;
        };
        let Hub {
            ledger,
            clients,
            cluster,
            ..
        } = self;
        let Some(members) = ledger.members(room) else {
            return;
        };
        let joining = cluster
            .as_mut()
            .map(|cluster| &mut cluster.joining)
            .filter(|joining| !joining.is_empty());
        let Some(joining) = joining else {
            clients.deliver(members, &ServerMsg::Message(message));
            return;
        };
        let mut now = Vec::with_capacity(members.len());
        for &member in members {
            match joining.get_mut(&(member, room.clone())) {
                Some(held) if held.len() < JOIN_HOLD => held.push(message.clone()),
                Some(_) => {}
                None => now.push(member),
            }
        }
        clients.deliver(&now, &ServerMsg::Message(message));
    }

    /// A DM for a user on this node. The sender's own copy comes with the
    /// `DmSent` answer, so a DM to oneself is delivered once.
    fn deliver_direct(&mut self, message: ChatMessage) {
        let Target::User(to) = &message.target else {
            return;
        };
        if message.from.key() == to.key() {
            return;
        }
        let Some(conn) = self.ledger.holder(to) else {
            return;
        };
        if self.logged_in_as(conn).is_some() {
            self.clients.send(conn, &ServerMsg::Message(message));
        }
    }

    /// A join or leave on another node: this node's members of the room
    /// are told (201, 204), unless the room is quiet. This node's own
    /// joins and leaves were announced locally when they happened.
    fn presence(&mut self, room: RoomName, user: Username, node: String, change: Change) {
        let quiet_room_size = self.config.quiet_room_size;
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let me = cluster.node.clone();
        let Some(view) = cluster.rooms.get_mut(&room) else {
            return;
        };
        let key = user.key();
        let msg = match change {
            Change::Joined => {
                if node == me {
                    return;
                }
                let was = view.roster.insert(key, (user.clone(), node.clone()));
                if was.is_some_and(|(_, was_node)| was_node == node) {
                    return;
                }
                if is_quiet_count(view.roster.len(), quiet_room_size) {
                    return;
                }
                ServerMsg::Connected {
                    username: user,
                    room: room.clone(),
                }
            }
            Change::Left => {
                let Some((_, held_by)) = view.roster.get(&key) else {
                    return;
                };
                if *held_by == me {
                    // Ours: announced when it happened, or a stale event
                    // from before it joined again.
                    return;
                }
                let count = view.roster.len();
                let Some((username, _)) = view.roster.remove(&key) else {
                    return;
                };
                if is_quiet_count(count, quiet_room_size) {
                    return;
                }
                ServerMsg::Disconnected {
                    username,
                    room: Some(room.clone()),
                }
            }
        };
        if let Some(members) = self.ledger.members(&room) {
            let members = members.to_vec();
            self.clients.deliver(&members, &msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::backlog_entry_bytes;

    fn message(id: u64, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            ts: 0,
            target: Target::Room(RoomName::parse("den").unwrap()),
            from: Username::parse("alice").unwrap(),
            text: text.to_owned(),
        }
    }

    fn slice(ids: &[u64]) -> HistorySlice {
        HistorySlice {
            messages: ids.iter().map(|&id| message(id, "hi")).collect(),
            more: false,
            gap: false,
        }
    }

    fn ids(slice: &Slice) -> Vec<u64> {
        slice.messages.iter().map(|message| message.id).collect()
    }

    #[test]
    fn a_backlog_keeps_the_newest_and_history_after_the_oldest_within_limit_and_budget() {
        let last = trim(slice(&[1, 2, 3]), HistoryRange::Last, 2, usize::MAX);
        assert_eq!((ids(&last), last.more), (vec![2, 3], true));
        let after = trim(slice(&[1, 2, 3]), HistoryRange::After(0), 2, usize::MAX);
        assert_eq!((ids(&after), after.more), (vec![1, 2], true));
        let one = backlog_entry_bytes(&message(3, "hi"));
        let tight = trim(slice(&[1, 2, 3]), HistoryRange::Last, 10, one);
        assert_eq!((ids(&tight), tight.more), (vec![3], true));
        let all = trim(slice(&[1, 2]), HistoryRange::After(0), 10, usize::MAX);
        assert_eq!((ids(&all), all.more), (vec![1, 2], false));
    }
}
