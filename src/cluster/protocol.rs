//! What the loop and the bridge say to each other: `Job`s in (each with a
//! ticket), `Output`s back (a job's `Done` echoing its ticket, or an
//! unasked `Event` such as a room message from another node). Plain data:
//! no tokio or NATS type appears here, so the sans-IO hub can make jobs
//! and take results the way it makes a `VerifyJob` and takes a verdict.

use crate::proto::{ChatMessage, NameKey, RoomName, Username};
use crate::throttle::Counted;
use std::fmt;
use std::net::IpAddr;

/// Names a job; its `Done` carries the same ticket. Chosen by the caller.
pub type Ticket = u64;

/// One request to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub ticket: Ticket,
    pub kind: JobKind,
}

/// Which history a `JobKind::History` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// Messages with an id above this one (HISTORY with `after`), oldest
    /// first, at most `limit`.
    After(u64),
    /// The room's last `limit` messages (a join's backlog, HISTORY
    /// without `after`).
    Last,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Hold `user` cluster-wide (create-if-absent on its case-folded key).
    /// `Claimed`, or `Taken` when another node holds it. A name this node
    /// already holds is granted again (in the new spelling).
    ClaimName { user: Username },
    /// Move this node's claim from `old` to `new`: `Claimed(new)` (and
    /// `old` freed) or `Taken(new)` (and `old` kept).
    Rename { old: Username, new: Username },
    /// Free a name this node holds; `Released` (also when it was not held).
    ReleaseName { user: Username },
    /// Store a room message; `Posted` with its id (the stream sequence).
    /// Every subscribed node, this one too, also gets it as
    /// `Event::Message`, in the room's order.
    Post {
        room: RoomName,
        from: Username,
        text: String,
        /// Unix milliseconds when this node accepted it.
        ts: u64,
    },
    /// A cluster-wide id for a private message: `DmId`.
    AllocateDmId,
    /// A private message to whoever holds `to`, on any node: looked up in
    /// the name table (`NoSuchUser` when nobody holds it, and no id is
    /// spent), given an id, and sent to the holder's node, which gets it
    /// as `Event::Direct`: `DmSent` with the stamped message. Never stored.
    SendDm {
        from: Username,
        to: Username,
        text: String,
        ts: u64,
    },
    /// Read a room's history from the stream: `History`.
    History {
        room: RoomName,
        range: HistoryRange,
        limit: usize,
    },
    /// Deliver the room's messages and presence to this node from now on
    /// (as `Event::Message` and `Event::Presence`): `Subscribed`, with the
    /// id of the room's newest message before the subscription (0 if
    /// none), read before subscribing: a live message whose `previous` is
    /// newer shows one that came in between (backfilled).
    Subscribe { room: RoomName },
    /// Stop delivering the room: `Unsubscribed`.
    Unsubscribe { room: RoomName },
    /// `user` (on this node) is in `room`: every subscribed node gets
    /// `Event::Presence` `Joined`. `Done`.
    Join { room: RoomName, user: Username },
    /// `user` left `room`: `Event::Presence` `Left` everywhere. `Done`.
    Part { room: RoomName, user: Username },
    /// Everyone in `room`, on every node: `Members`.
    Members { room: RoomName },
    /// Every room with members on any node, with its member count, sorted
    /// by name: `Rooms`.
    Rooms,
    /// One more failed login for each key: `Failures` with the new counts.
    RecordFailures { keys: Vec<ThrottleKey> },
    /// The current failure counts: `Failures`.
    ReadFailures { keys: Vec<ThrottleKey> },
    /// The current failure counts with the age of each key's last
    /// failure (its last write, by the bridge's clock against NATS's
    /// timestamp), which the throttle's waits are computed from:
    /// `FailuresAged`.
    ReadFailuresAged { keys: Vec<ThrottleKey> },
    /// A successful login forgets these keys' failures: `Done`.
    ClearFailures { keys: Vec<ThrottleKey> },
}

/// What the bridge hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The answer to the job with this ticket.
    Done { ticket: Ticket, result: JobResult },
    /// Something no job asked for at that moment.
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Claimed(Username),
    Taken(Username),
    Released,
    Posted(ChatMessage),
    DmId(u64),
    /// The stamped message, and the node it was sent to.
    DmSent {
        message: ChatMessage,
        node: String,
    },
    NoSuchUser(Username),
    History(HistorySlice),
    Subscribed {
        room: RoomName,
        last: u64,
    },
    Unsubscribed(RoomName),
    Members(Vec<Member>),
    Rooms(Vec<(RoomName, usize)>),
    Failures(Vec<(ThrottleKey, u32)>),
    /// Counts and the age of their last failure, in the keys' order.
    FailuresAged(Vec<(ThrottleKey, Counted)>),
    /// The job did its work (Join, Part, ClearFailures).
    Done,
    /// NATS did not answer or refused; nothing was changed that the job
    /// asked for (or it cannot be known): the hub answers 503.
    Failed(String),
}

/// Messages from the stream, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySlice {
    pub messages: Vec<ChatMessage>,
    /// More messages matched than `limit` allowed.
    pub more: bool,
    /// Messages of this room after the asked-for id may be gone (the room's
    /// history is full and starts after it).
    pub gap: bool,
}

/// Someone in a room, and the node that holds their connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: Username,
    pub node: String,
}

/// What happened to someone's presence in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Joined,
    /// Parted, quit, or their node died (their entry expired).
    Left,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message of a subscribed room, in the room's order (the same on
    /// every node). `previous` is the id of the room's message before it,
    /// when NATS says so: a hole between the two means a lost delivery.
    Message {
        message: ChatMessage,
        previous: Option<u64>,
    },
    /// A private message for a user on this node (`target` names them);
    /// if they left meanwhile it is dropped, as a DM to someone who quit
    /// a moment after the lookup.
    Direct(ChatMessage),
    /// A presence change in a subscribed room. `node` is empty when an
    /// entry expired (its node stopped refreshing it).
    Presence {
        room: RoomName,
        user: Username,
        node: String,
        change: Change,
    },
    /// A name this node held was lost (its claim expired and another node
    /// took it, e.g. after a long NATS outage); the session must go.
    NameLost(Username),
    /// The NATS connection dropped (the client keeps reconnecting). Until
    /// `Reconnected`, jobs that need NATS fail at once; `Part`,
    /// `ReleaseName` and `Unsubscribe` are done locally and reach NATS on
    /// reconnection.
    Disconnected,
    /// The NATS connection is back and the bridge re-asserted what this
    /// node holds: withdrawals made meanwhile sent, names claimed again
    /// (`NameLost` first for any taken meanwhile), memberships put again,
    /// every room subscribed afresh. Messages stored meanwhile are not
    /// replayed: the hub backfills each room from what it delivered.
    Reconnected,
}

/// A login-throttle counter's key: safe as a NATS key token (letters,
/// digits, `-`, `_`, `.` separating its parts).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThrottleKey(String);

impl ThrottleKey {
    /// Failures from one address (its throttle group, e.g. an IPv6 /64).
    pub fn address(address: IpAddr) -> ThrottleKey {
        ThrottleKey(format!("a.{}", hex_address(address)))
    }

    /// Failures for one name, from anywhere.
    pub fn name(key: &NameKey) -> ThrottleKey {
        ThrottleKey(format!("n.{}", key.as_str()))
    }

    /// Failures for one name from one address.
    pub fn address_and_name(address: IpAddr, key: &NameKey) -> ThrottleKey {
        ThrottleKey(format!("an.{}.{}", hex_address(address), key.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ThrottleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ThrottleKey").field(&self.0).finish()
    }
}

fn hex_address(address: IpAddr) -> String {
    let bytes = match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_keys_are_nats_key_tokens() {
        let name = Username::parse("Alice").unwrap().key();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::".parse().unwrap();
        assert_eq!(ThrottleKey::address(v4).as_str(), "a.0a000001");
        assert_eq!(ThrottleKey::name(&name).as_str(), "n.alice");
        assert_eq!(
            ThrottleKey::address_and_name(v6, &name).as_str(),
            "an.20010db8000000000000000000000000.alice"
        );
    }
}
