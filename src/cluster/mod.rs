//! Cluster mode (issue 14): several riftd nodes on one NATS JetStream
//! behave as one chat server. `design/cluster.md` is the design: the
//! subjects, the stream and the buckets below, the path of a message, and
//! what happens on each failure.
//!
//! - `protocol`: the `Job`s the loop submits and the `Output`s it takes
//!   back; plain data, the hub's vocabulary with the cluster.
//! - `bridge`: the `Bridge`, the loop's handle on the one bridge thread
//!   (bounded job queue, doorbell, results channel and `mio::Waker`).
//! - `nats`: the bridge thread's side: the connection, the stream and
//!   buckets, one async function per job kind, the room subscriptions.
//! - `settings`: the validated `cluster_*` settings (`config` makes them).
//!
//! Nothing here runs unless `cluster_url` is set; the loop thread never
//! touches tokio or NATS, only channels.

mod bridge;
mod nats;
mod protocol;
mod settings;

pub use bridge::{
    Bridge, BridgeOptions, CONNECT_TIMEOUT, ClusterError, NAME_TTL, OUTPUTS, PING_INTERVAL,
    PROBE_INTERVAL, QUEUE, REQUEST_TIMEOUT,
};
pub use protocol::{
    Change, Event, HistoryRange, HistorySlice, Job, JobKind, JobResult, Member, Output,
    ThrottleKey, Ticket,
};
pub use settings::{
    ClusterAuth, ClusterSettings, MAX_NODE_NAME_BYTES, Secret, default_node_name,
    is_valid_node_name,
};

/// The one stream: every room's messages (`riftd.room.<room>`, at most
/// `history_keep` each) and the private-message id markers (`riftd.dm`).
pub const STREAM: &str = "RIFTD_CHAT";
/// A room's messages are published to `riftd.room.<room>`.
pub const ROOM_PREFIX: &str = "riftd.room";
/// Each stored room message is republished by the server, with its stream
/// sequence, to `riftd.live.<room>`: what nodes subscribe to.
pub const LIVE_PREFIX: &str = "riftd.live";
/// An empty message published here gets a private message's id.
pub const DM_SUBJECT: &str = "riftd.dm";
/// Delivery probes (`PROBE_INTERVAL`) are published to
/// `riftd.room.~probe` and come back on `riftd.live.~probe`: a token no
/// room can take (room names are `[a-z0-9_-]`), so it is never a room's
/// history or a member's delivery, and the stream keeps at most
/// `history_keep` of them like any subject.
pub const PROBE_TOKEN: &str = "~probe";
/// A node's inbox, `riftd.node.<node_name>`: private messages for the
/// users it holds (core NATS, never stored).
pub const NODE_PREFIX: &str = "riftd.node";
/// Case-folded name → `{user, node}`; created if absent, refreshed.
pub const NAMES_BUCKET: &str = "riftd_names";
/// `<room>.<case-folded name>` → `{user, node}`: who is in which room.
pub const MEMBERS_BUCKET: &str = "riftd_members";
/// Throttle key → failed logins; forgotten after `THROTTLE_MEMORY`.
pub const THROTTLE_BUCKET: &str = "riftd_throttle";
/// How long the cluster remembers failed logins (as `throttle` does).
pub const THROTTLE_MEMORY: std::time::Duration = std::time::Duration::from_secs(60 * 60);
