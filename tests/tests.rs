//! riftd's integration tests: one test binary, a module per topic. Each test
//! runs the built `riftd` binary on `127.0.0.1:0` and speaks TCP to it;
//! `common` is the harness they share. Tests of every topic run in parallel
//! threads of this one process, so none may change process-wide state (the
//! environment, the current directory, signal dispositions, inheritable
//! descriptors): a child spawned by one test inherits what another left.

mod common;

mod accounts_tls;
mod browser;
mod chat;
mod cluster;
mod cluster_chat;
mod cluster_faults;
mod cluster_replicas;
mod daemon;
mod history;
mod reuse_port;
mod riftc;
mod robustness;
mod systemd;
mod websocket;
