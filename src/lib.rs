//! riftd: a tiny, fast chat daemon.
//!
//! Code map (the pure core first; it does no socket IO and reads no clock;
//! `accounts` and `config` read and write their own files, nothing else does):
//! - [`codec`]: bytes to lines (cap, `\r\n`, telnet stripping, UTF-8).
//! - [`websocket`]: RFC 6455 framing: the handshake key, server frames, and
//!   client frames decoded into protocol lines.
//! - [`proto`]: codes, names, requests, frames and the journal's records;
//!   the only JSON user.
//! - [`session`]: the LISTEN → USER AUTH → PASS AUTH → BROADCAST → QUIT machine.
//! - [`flood`]: the per-session token bucket for frames reaching others,
//!   and the byte budget of answers (HISTORY, WHO, ROOMS, PING).
//! - [`history`]: room history in memory (per room and for all rooms),
//!   backlog and HISTORY answers, message ids.
//! - [`hub`]: the chat, split by job: `hub/mod.rs` (the `Hub`, dispatch and
//!   its contract with the shell), `clients` (connection table, fan-out into
//!   outboxes, each connection's fate and flush), `ledger` (names,
//!   membership, ids and history: the cluster seam), `login`, `rooms`,
//!   `messages`, `refusal` (typed refusals).
//! - [`outbox`]: one connection's queue of shared encoded frames.
//! - [`auth`]: open, shared password or accounts: what a login needs.
//! - [`accounts`]: the users file (argon2id PHC strings), hashing, verifying.
//! - [`throttle`]: growing waits after failed logins, per address, per
//!   address and name, and per name; checks in flight count.
//! - [`config`]: defaults + TOML file + flags, validated.
//!
//! - [`client`]: riftc's model (pure), its terminal view and line-mode
//!   output; its shell lives in `src/riftc/`.
//!
//! The shell around it:
//! - [`server`]: the single-threaded mio event loop, signals and timers;
//!   each connection with its phase and its transport (plain, TLS, the HTTP
//!   gate of `web = true`, WebSocket over either).
//! - [`daemon`]: locked pidfile, fork with a readiness pipe, stop/status.
//! - [`tls`]: certificates into rustls; bytes between socket, rustls, outbox.
//! - [`cluster`]: cluster mode's bridge to NATS JetStream: one thread with
//!   its own runtime, plain-data jobs in and results out (not yet wired to
//!   the hub; `design/cluster.md`).
//! - [`logging`]: `log` records to stderr (or the journal's format).
//!
//! `design/architecture.md` describes how they fit together.

pub mod accounts;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod flood;
pub mod history;
pub mod hub;
pub mod logging;
pub mod outbox;
pub mod proto;
pub mod server;
pub mod session;
pub mod throttle;
pub mod tls;
pub mod websocket;
