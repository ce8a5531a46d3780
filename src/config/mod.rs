//! The configuration, parsed once: the embedded defaults and an optional
//! TOML file as a `RawConfig` (the file's keys exactly; unknown keys are
//! refused), layered with the command line's `Overrides`, go through
//! `Config::load`, the one constructor of `Config`. It checks every rule,
//! reads the secrets and builds the TLS config, so a `Config` (private
//! fields, read through methods) is valid wherever one exists; SIGHUP
//! builds its new one through the same constructor. History off is
//! `Config::history() == None`. A setting's type lives with the module
//! that uses it: `HubConfig` in the hub, `HistoryConfig` and `FsyncPolicy`
//! beside the journal (re-exported here).
//!
//! This file holds `Config`, its getters and `ConfigError`; by job:
//!
//! - `raw`: `RawConfig` (the file as written, with its defaults) and `Overrides`;
//! - `ranges`: every numeric key's documented range, and the check against it;
//! - `rules`: `RawConfig::validate`, the rules that span keys or need files;
//! - `files`: reading a file the configuration names, bounded and non-blocking;
//! - `cluster`: the `cluster_*` keys and `node_name` into `ClusterSettings`.
//!
//! `PortSharing` (`reuse_port`) is defined here rather than beside
//! `server::listen`, its user, because that module is private to `server`.
//!
//! Adding a key is adding one field to `RawConfig` (with its default in
//! `Default`), carrying it into `Config` in `RawConfig::validate`, with one
//! check there if it has rules; a numeric key also gets its documented
//! range: one line in `RANGES` and one in `RawConfig::numbers`. Reading the
//! config file and the files it names (password, users, TLS, the
//! cluster's secrets) is the only IO here.

mod cluster;
mod files;
mod ranges;
mod raw;
mod rules;

pub use crate::server::{FsyncPolicy, HistoryConfig, WebSettings};
pub use files::{
    MAX_CONFIG_FILE_BYTES, MAX_PASSWORD_FILE_BYTES, MAX_TLS_FILE_BYTES, MAX_USERS_FILE_BYTES,
    describe_file_type, read_regular_file, read_regular_text,
};
pub use ranges::{Number, RANGES, Range};
pub use raw::{
    AuthSetting, DEFAULT_HISTORY_MAX_BYTES, Overrides, RawConfig, default_history_file,
    parse_listen,
};

use crate::accounts::AccountsError;
use crate::auth::Auth;
use crate::cluster::ClusterSettings;
use crate::hub::HubConfig;
use crate::proto::RoomName;
use crate::tls::TlsError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why a configuration was refused. Each names the file or the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {kind} {path}: {source}")]
    Read {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("`users_file`: {0}")]
    Users(#[from] AccountsError),
    #[error("`tls_cert`/`tls_key`: {0}")]
    Tls(#[from] TlsError),
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The validated configuration: made only by `Config::load`, so every
/// number is within its range, the secrets are loaded and the files riftd
/// writes are distinct.
#[derive(Debug, Clone)]
pub struct Config {
    listen: Vec<SocketAddr>,
    tls_listen: Vec<SocketAddr>,
    /// The TLS server config built from `tls_cert` and `tls_key`.
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: Auth,
    require_tls_for_password: bool,
    max_line_bytes: usize,
    max_connections: usize,
    max_output_bytes: usize,
    max_connections_per_ip: usize,
    auth_timeout_secs: u64,
    idle_timeout_secs: u64,
    flood_rate: f64,
    flood_burst: u32,
    default_room: RoomName,
    shutdown_timeout_secs: u64,
    pid_file: Option<PathBuf>,
    log_file: Option<PathBuf>,
    /// The journal; `None`: history is off.
    history_file: Option<PathBuf>,
    /// The other history keys, validated, kept with history off too: a
    /// reload that turns history off keeps it on until a restart, and
    /// these apply at once (`keep_history_of`).
    history_fsync: FsyncPolicy,
    history_backlog: usize,
    history_keep: usize,
    history_max_bytes: usize,
    quiet_room_size: usize,
    /// Cluster mode, when `cluster_url` is set.
    cluster: Option<ClusterSettings>,
    /// `web = true`: who may open a WebSocket (`web_origins`).
    web: Option<Arc<WebSettings>>,
    /// Who may open a WebSocket (`web_origins`), on any listener that
    /// serves HTTP.
    web_settings: Arc<WebSettings>,
    /// Web listeners: HTTP only, plain and TLS.
    web_listen: Vec<SocketAddr>,
    web_tls_listen: Vec<SocketAddr>,
    /// `reuse_port`: whether the listeners riftd binds share their port.
    port_sharing: PortSharing,
}

/// Whether the listening sockets riftd binds may share their port with
/// other processes (`reuse_port = true`: SO_REUSEPORT before `bind`, and the
/// kernel spreads new connections over every socket on the port). Only
/// cluster nodes may share a port: `Config::load` refuses `Shared` without
/// `cluster_url`, since separate processes would be separate chats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortSharing {
    /// One listener per address; a second bind of it fails (the default).
    #[default]
    Exclusive,
    /// SO_REUSEPORT: every process with the same user that sets it too may
    /// bind the same address.
    Shared,
}

impl Config {
    /// The one constructor: the file at `path` (or the embedded defaults),
    /// the command-line `overrides` over it, every rule checked and the
    /// secrets read. SIGHUP calls it again with the same overrides.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        RawConfig::read(path)?.layer(overrides).validate()
    }

    /// Addresses to listen on.
    pub fn listen(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Addresses that speak TLS.
    pub fn tls_listen(&self) -> &[SocketAddr] {
        &self.tls_listen
    }

    /// The TLS server config, when `tls_cert` and `tls_key` are set.
    pub fn tls(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref()
    }

    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// 0 = no limit.
    pub fn max_connections_per_ip(&self) -> usize {
        self.max_connections_per_ip
    }

    /// The daemon's pidfile, if configured (absolute or relative to the
    /// config file's directory).
    pub fn pid_file(&self) -> Option<&Path> {
        self.pid_file.as_deref()
    }

    /// The daemon's log file, if configured.
    pub fn log_file(&self) -> Option<&Path> {
        self.log_file.as_deref()
    }

    /// History, or `None` when it is off.
    pub fn history(&self) -> Option<HistoryConfig> {
        self.history_file.as_ref().map(|file| HistoryConfig {
            file: file.clone(),
            fsync: self.history_fsync,
            backlog: self.history_backlog,
            keep: self.history_keep,
            max_bytes: self.history_max_bytes,
        })
    }

    pub fn auth(&self) -> Auth {
        self.auth.clone()
    }

    pub fn hub_config(&self) -> HubConfig {
        HubConfig {
            auth: self.auth(),
            default_room: self.default_room.clone(),
            max_output_bytes: self.max_output_bytes,
            require_tls_for_password: self.require_tls_for_password,
            history_backlog: self.history_file.as_ref().map(|_| self.history_backlog),
            history_keep: self.history_keep,
            history_max_bytes: self.history_max_bytes,
            quiet_room_size: self.quiet_room_size,
            auth_timeout_ms: self.auth_timeout_secs.saturating_mul(1000),
            idle_timeout_ms: self.idle_timeout_secs.saturating_mul(1000),
            flood_rate: self.flood_rate,
            flood_burst: f64::from(self.flood_burst),
        }
    }

    /// HTTP and WebSocket on the chat listeners (`web = true`), or `None`.
    pub fn web(&self) -> Option<&Arc<WebSettings>> {
        self.web.as_ref()
    }

    /// Who may open a WebSocket, on the web listeners and (`web = true`)
    /// the chat listeners.
    pub fn web_settings(&self) -> &Arc<WebSettings> {
        &self.web_settings
    }

    /// Addresses that serve HTTP only (`web_listen`).
    pub fn web_listen(&self) -> &[SocketAddr] {
        &self.web_listen
    }

    /// Addresses that serve HTTPS only (`web_tls_listen`).
    pub fn web_tls_listen(&self) -> &[SocketAddr] {
        &self.web_tls_listen
    }

    /// Cluster mode's settings, or `None` for a single node.
    pub fn cluster(&self) -> Option<&ClusterSettings> {
        self.cluster.as_ref()
    }

    /// Whether the listeners riftd binds share their port (`reuse_port`);
    /// sockets systemd passes are used as they come.
    pub fn port_sharing(&self) -> PortSharing {
        self.port_sharing
    }

    pub fn shutdown_timeout_secs(&self) -> u64 {
        self.shutdown_timeout_secs
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    // What a reload may not change (see `Server::reload`, which says so
    // in the log): each takes the running config's value over this one's.

    /// `listen`, `tls_listen`, `web_listen` and `web_tls_listen`: the
    /// sockets are bound once.
    pub(crate) fn keep_listen_of(&mut self, running: &Config) {
        self.listen = running.listen.clone();
        self.tls_listen = running.tls_listen.clone();
        self.web_listen = running.web_listen.clone();
        self.web_tls_listen = running.web_tls_listen.clone();
        // Set on the sockets when they were bound: as fixed as they are.
        self.port_sharing = running.port_sharing;
    }

    /// The certificate, while TLS listeners stay.
    pub(crate) fn keep_tls_of(&mut self, running: &Config) {
        self.tls = running.tls.clone();
    }

    /// `pid_file` and `log_file`: both are opened once, at start.
    pub(crate) fn keep_daemon_files_of(&mut self, running: &Config) {
        self.pid_file = running.pid_file.clone();
        self.log_file = running.log_file.clone();
    }

    /// Whether `history_file` (history on or off) and `history_fsync` are
    /// as in `running`: the journal is opened once, so a change waits for
    /// a restart.
    pub(crate) fn has_journal_of(&self, running: &Config) -> bool {
        self.history_file == running.history_file && self.history_fsync == running.history_fsync
    }

    /// History on or off, its file and its fsync policy; its bounds
    /// (`history_backlog`, `history_keep`, `history_max_bytes`) stay this
    /// config's.
    pub(crate) fn keep_history_of(&mut self, running: &Config) {
        self.history_file = running.history_file.clone();
        self.history_fsync = running.history_fsync;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AuthKind;

    #[test]
    fn the_embedded_defaults_are_the_documented_ones() {
        let config = RawConfig::default().validate().unwrap();
        assert_eq!(config.listen, vec!["127.0.0.1:5050".parse().unwrap()]);
        assert_eq!(config.auth.kind(), AuthKind::Open);
        assert_eq!(config.max_line_bytes, 8192);
        assert_eq!(config.quiet_room_size, 500);
        assert_eq!(config.default_room.as_str(), "lobby");
        assert_eq!(config.auth(), Auth::Open);
        assert!(config.web().is_none());
    }

    #[test]
    fn web_is_off_by_default_and_origins_must_be_origins() {
        let config = RawConfig::from_toml("web = true")
            .unwrap()
            .validate()
            .unwrap();
        assert!(config.web().is_some());
        let listed = RawConfig::from_toml(
            "web = true\nweb_origins = [\"https://chat.example\", \"http://[::1]:8080\"]",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert!(listed.web().is_some());
        for bad in [
            "chat.example",
            "https://chat.example/",
            "https://chat.example/page",
        ] {
            let error = RawConfig::from_toml(&format!("web = true\nweb_origins = [{bad:?}]"))
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(error.to_string().contains("web_origins"), "{error}");
        }
    }

    #[test]
    fn web_listeners_need_no_web_flag_and_web_tls_listen_needs_a_certificate() {
        let config =
            RawConfig::from_toml("listen = []\nweb_listen = [\"127.0.0.1:8080\", \"[::1]:8080\"]")
                .unwrap()
                .validate()
                .unwrap();
        assert_eq!(config.web_listen().len(), 2);
        assert!(config.listen().is_empty());
        assert!(config.web().is_none(), "web_listen does not turn web on");
        let error = RawConfig::from_toml("web_tls_listen = \"127.0.0.1:8443\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            error.to_string().contains("web_tls_listen needs tls_cert"),
            "{error}"
        );
        let error = RawConfig::from_toml("listen = []")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("web_listen"), "{error}");
    }

    #[test]
    fn configured_timeouts_reach_the_hub_as_milliseconds() {
        let config = RawConfig::from_toml("auth_timeout_secs = 86400\nidle_timeout_secs = 86400")
            .unwrap()
            .validate()
            .unwrap();
        let hub = config.hub_config();
        assert_eq!(hub.auth_timeout_ms, 86_400_000);
        assert_eq!(hub.idle_timeout_ms, 86_400_000);
    }

    #[test]
    fn reuse_port_shares_the_port_only_between_cluster_nodes() {
        let load = |text: &str| RawConfig::from_toml(text).unwrap().validate();
        assert_eq!(load("").unwrap().port_sharing(), PortSharing::Exclusive);
        let node = load("reuse_port = true\ncluster_url = \"nats://127.0.0.1:4222\"").unwrap();
        assert_eq!(node.port_sharing(), PortSharing::Shared);
        let alone = load("reuse_port = true").unwrap_err().to_string();
        for needle in ["`reuse_port`", "needs cluster_url", "separate chats"] {
            assert!(alone.contains(needle), "{alone}");
        }
        assert!(load("reuse_port = false").is_ok());
    }
}
