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
//! Adding a key is adding one field to `RawConfig` (with its default in
//! `Default`), carrying it into `Config` in `RawConfig::validate`, with one
//! check there if it has rules; a numeric key also gets its documented
//! range: one line in `RANGES` and one in `RawConfig::numbers`. Reading the
//! config file and the password file is the only IO here.

use crate::accounts::{AccountsError, Users};
use crate::auth::Auth;
use crate::hub::HubConfig;
use crate::proto::RoomName;
pub use crate::server::{FsyncPolicy, HistoryConfig};
use crate::tls::{TlsError, load_server_config};
use serde::Deserialize;
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

/// `auth` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthSetting {
    Open,
    Password,
    Accounts,
}

/// `listen` may be one address or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Every key of the config file, with its default, as written: parsed but
/// not yet checked against the rules that span keys or need files (only
/// `Config::load` makes a `Config` of it). Unknown keys are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Addresses to listen on (IPv4 or IPv6, `host:port`).
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: Vec<SocketAddr>,
    pub auth: AuthSetting,
    /// File holding the shared password (first line), for `auth = "password"`.
    pub password_file: Option<PathBuf>,
    /// The accounts file (`riftd user …` writes it), for `auth = "accounts"`.
    pub users_file: Option<PathBuf>,
    /// Refuse passwords sent in plaintext from a non-loopback address.
    pub require_tls_for_password: bool,
    /// Addresses that speak TLS (same protocol inside).
    #[serde(deserialize_with = "deserialize_listen")]
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain and private key for `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Longest accepted input line in bytes, without its terminator.
    pub max_line_bytes: usize,
    /// Connections held at once; more get 503 and are closed.
    pub max_connections: usize,
    /// Output one client may owe before it is dropped as a slow consumer.
    pub max_output_bytes: usize,
    /// Connections from one address at once (IPv6: one /64); 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Seconds a connection has to log in before 408.
    pub auth_timeout_secs: u64,
    /// Seconds of silence before a logged-in JSON client is pinged (209),
    /// and as long again before 408; 0 disables.
    pub idle_timeout_secs: u64,
    /// Frames reaching others per second per session; 0 disables.
    pub flood_rate: f64,
    /// How many such frames may come at once.
    pub flood_burst: u32,
    /// The room every user joins at login.
    #[serde(deserialize_with = "deserialize_room")]
    pub default_room: RoomName,
    /// How long shutdown waits for clients to take their last bytes; also
    /// how long `riftd -d stop` waits before SIGKILL.
    pub shutdown_timeout_secs: u64,
    /// The daemon's locked pidfile (default: see `daemon::default_pid_file`).
    /// In the foreground a pidfile is written only when this is set.
    pub pid_file: Option<PathBuf>,
    /// The history journal; `""` turns history off. Default: see
    /// `default_history_file`.
    pub history_file: PathBuf,
    pub history_fsync: FsyncPolicy,
    /// Messages a client gets on joining a room.
    pub history_backlog: usize,
    /// Messages kept per room; older ones are compacted away.
    pub history_keep: usize,
    /// What all rooms' kept history may cost in memory together (message
    /// text plus a fixed part each); past it the least recently active
    /// rooms' history is dropped first.
    pub history_max_bytes: usize,
    /// A room with more members than this does not announce joins and
    /// leaves (201/204) to its members; 0 means every room announces.
    pub quiet_room_size: usize,
    /// Where the daemon's stdout and stderr go (default: see
    /// `daemon::default_log_file`); unused in the foreground.
    pub log_file: Option<PathBuf>,
    /// The file this config was read from, if any.
    #[serde(skip)]
    source: Option<PathBuf>,
}

impl Default for RawConfig {
    fn default() -> RawConfig {
        RawConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5050))],
            auth: AuthSetting::Open,
            password_file: None,
            users_file: None,
            require_tls_for_password: true,
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_line_bytes: 8192,
            max_connections: 1024,
            max_output_bytes: 1024 * 1024,
            max_connections_per_ip: 64,
            auth_timeout_secs: 30,
            idle_timeout_secs: 300,
            flood_rate: 5.0,
            flood_burst: 20,
            default_room: RoomName::parse("lobby").expect("lobby is a valid room name"),
            shutdown_timeout_secs: 10,
            pid_file: None,
            log_file: None,
            history_file: default_history_file(),
            history_fsync: FsyncPolicy::Everysec,
            history_backlog: 50,
            history_keep: 10_000,
            history_max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            quiet_room_size: 500,
            source: None,
        }
    }
}

/// What the command line overrides in the file, layered on it by
/// `Config::load` (at start and at every reload alike).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` (repeatable): replaces `listen` when not empty.
    pub listen: Vec<SocketAddr>,
    /// `--history-file`: replaces `history_file`; `""` turns history off.
    pub history_file: Option<PathBuf>,
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
}

/// The documented range of one numeric key, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
}

const fn range(key: &'static str, min: u64, max: u64) -> Range {
    Range { key, min, max }
}

/// Every numeric key's range, as README's configuration table documents
/// it. `validate` refuses a value outside it (exit 2, naming the key), so
/// nothing downstream meets a configured number that can overflow a clock
/// or an allocation. A new numeric key adds one line here and one in
/// `RawConfig::numbers` (a unit test checks the two lists agree).
pub const RANGES: &[Range] = &[
    range("max_line_bytes", 64, 1024 * 1024),
    range("max_connections", 1, 1_000_000),
    range("max_output_bytes", 64 * 1024, 1024 * 1024 * 1024),
    range("max_connections_per_ip", 0, 1_000_000),
    range("auth_timeout_secs", 1, 86_400),
    range("idle_timeout_secs", 0, 86_400),
    range("flood_rate", 0, 1_000_000),
    range("flood_burst", 1, 1_000_000),
    range("shutdown_timeout_secs", 0, 3_600),
    range(
        "history_backlog",
        0,
        crate::history::MAX_HISTORY_REPLY as u64,
    ),
    range("history_keep", 1, 1_000_000),
    range("quiet_room_size", 0, 1_000_000),
    range("history_max_bytes", 1 << 20, 1 << 40),
];

/// A numeric key's value, as `RawConfig::numbers` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Integer(u64),
    Real(f64),
}

/// Refuses `value` when it lies outside `key`'s entry in `RANGES` (or is
/// not a finite number).
fn check_range(key: &'static str, value: Number) -> Result<(), ConfigError> {
    let Some(range) = RANGES.iter().find(|range| range.key == key) else {
        return Err(invalid(key, "has no documented range (a bug in riftd)"));
    };
    let is_inside = match value {
        Number::Integer(value) => (range.min..=range.max).contains(&value),
        Number::Real(value) => {
            value.is_finite() && (range.min as f64..=range.max as f64).contains(&value)
        }
    };
    if is_inside {
        return Ok(());
    }
    let shown = match value {
        Number::Integer(value) => value.to_string(),
        Number::Real(value) => value.to_string(),
    };
    Err(invalid(
        key,
        format!(
            "must be between {} and {}, not {shown}",
            range.min, range.max
        ),
    ))
}

/// `history_max_bytes` by default: 256 MiB.
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The default history journal, in the state directory: systemd's
/// `$STATE_DIRECTORY` (`StateDirectory=riftd`), else `/var/lib/riftd` for
/// root, else `$XDG_STATE_HOME/riftd` (or `~/.local/state/riftd`).
pub fn default_history_file() -> PathBuf {
    let dir = if let Some(state) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several directories, separated by ':'.
        let first = state
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        PathBuf::from(first)
    } else if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/lib/riftd")
    } else if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
        PathBuf::from(state).join("riftd")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".local/state/riftd")
    } else {
        PathBuf::from(".")
    };
    dir.join("history.jsonl")
}

fn deserialize_listen<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SocketAddr>, D::Error> {
    let addresses = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(address) => vec![address],
        OneOrMany::Many(addresses) => addresses,
    };
    addresses
        .iter()
        .map(|address| parse_listen(address).map_err(serde::de::Error::custom))
        .collect()
}

fn deserialize_room<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<RoomName, D::Error> {
    let name = String::deserialize(deserializer)?;
    RoomName::parse(&name).map_err(serde::de::Error::custom)
}

/// Parses a listen address: `127.0.0.1:5050`, `[::1]:5050`.
pub fn parse_listen(address: &str) -> Result<SocketAddr, String> {
    address
        .parse()
        .map_err(|_| format!("`{address}` is not an address like 127.0.0.1:5050 or [::1]:5050"))
}

impl RawConfig {
    /// The config file at `path`, or the embedded defaults without one.
    pub fn read(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
        match path {
            Some(path) => RawConfig::from_file(path),
            None => Ok(RawConfig::default()),
        }
    }

    /// Reads a config file; keys it omits keep their defaults.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        // Paths in the file resolve against its directory, which must stay
        // right after a daemon changes directory to `/`.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let path = absolute.as_path();
        let text =
            read_regular_text(path, MAX_CONFIG_FILE_BYTES).map_err(|source| ConfigError::Read {
                kind: "config file",
                path: path.to_owned(),
                source,
            })?;
        let mut config = RawConfig::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        config.source = Some(path.to_owned());
        // Relative paths in the file are relative to the file.
        if let Some(dir) = path.parent() {
            for file in [
                &mut config.password_file,
                &mut config.users_file,
                &mut config.tls_cert,
                &mut config.tls_key,
                &mut config.pid_file,
                &mut config.log_file,
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
            if config.history_path().is_some() && config.history_file.is_relative() {
                config.history_file = dir.join(&config.history_file);
            }
        }
        Ok(config)
    }

    /// Parses TOML text into a config, without validating cross-key rules.
    pub fn from_toml(text: &str) -> Result<RawConfig, String> {
        let config: RawConfig =
            toml::from_str(text).map_err(|error| error.to_string().trim_end().to_owned())?;
        // Only history_file takes "" (history off). An empty path elsewhere
        // used to resolve to the config's directory and fail later as "Is a
        // directory" (exit 1), when the operator most likely meant "none".
        for (key, path) in [
            ("password_file", &config.password_file),
            ("users_file", &config.users_file),
            ("tls_cert", &config.tls_cert),
            ("tls_key", &config.tls_key),
            ("pid_file", &config.pid_file),
            ("log_file", &config.log_file),
        ] {
            if path
                .as_ref()
                .is_some_and(|path| path.as_os_str().is_empty())
            {
                return Err(format!(
                    "`{key}` is empty; leave the key out for its default \
                     (only history_file = \"\" turns something off)"
                ));
            }
        }
        Ok(config)
    }

    /// The command line over the file.
    fn layer(mut self, overrides: &Overrides) -> RawConfig {
        if !overrides.listen.is_empty() {
            self.listen = overrides.listen.clone();
        }
        if let Some(history_file) = &overrides.history_file {
            self.history_file = if history_file.as_os_str().is_empty() {
                PathBuf::new()
            } else {
                std::path::absolute(history_file).unwrap_or_else(|_| history_file.to_owned())
            };
        }
        self
    }

    /// `history_file`, or `None` for `""` (history off): the one place the
    /// empty path is read.
    fn history_path(&self) -> Option<&Path> {
        (!self.history_file.as_os_str().is_empty()).then_some(self.history_file.as_path())
    }

    /// Checks the rules that span keys or need files, and loads secrets:
    /// the one way to a `Config` (through `Config::load`).
    fn validate(self) -> Result<Config, ConfigError> {
        if self.listen.is_empty() && self.tls_listen.is_empty() {
            return Err(invalid("listen", "at least one address is needed"));
        }
        for (key, value) in self.numbers() {
            check_range(key, value)?;
        }
        check_history_file(self.history_path())?;
        // An echo of one line (a PONG's token, an error naming a key) must
        // never be dropped as a slow consumer by itself: a line may take at
        // most half of the output a client may owe, so an answer to it
        // fits the slow-consumer cap by itself.
        if self.max_line_bytes > self.max_output_bytes / crate::hub::ANSWER_SHARE {
            return Err(invalid(
                "max_line_bytes",
                "must be at most half of max_output_bytes",
            ));
        }
        self.check_distinct_files()?;
        let password = match (self.auth, &self.password_file) {
            (AuthSetting::Open, _) => None,
            (AuthSetting::Password, None) => {
                return Err(invalid(
                    "password_file",
                    "auth = \"password\" needs a password_file",
                ));
            }
            (AuthSetting::Password, Some(path)) => Some(read_password(path)?),
            (AuthSetting::Accounts, _) => None,
        };
        let users = match (self.auth, &self.users_file) {
            (AuthSetting::Accounts, None) => {
                return Err(invalid(
                    "users_file",
                    "auth = \"accounts\" needs a users_file (create it with `riftd user add NAME`)",
                ));
            }
            (AuthSetting::Accounts, Some(path)) => Some(Arc::new(Users::load(path)?)),
            _ => None,
        };
        for (key, path) in [
            ("password_file", &self.password_file),
            ("users_file", &self.users_file),
            ("tls_key", &self.tls_key),
        ] {
            if let Some(path) = path
                && let Some(mode) = world_readable_mode(path)
            {
                log::warn!(
                    "{key} {} is readable by every local user (mode {mode:04o}); \
                     it holds secrets: chmod o-rwx it",
                    path.display()
                );
            }
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(load_server_config(cert, key)?),
            (None, None) if self.tls_listen.is_empty() => None,
            (None, _) => return Err(invalid("tls_cert", "tls_listen needs tls_cert and tls_key")),
            (_, None) => return Err(invalid("tls_key", "tls_listen needs tls_cert and tls_key")),
        };
        let auth = match (password, users) {
            (Some(secret), _) => Auth::Password { secret },
            (None, Some(users)) => Auth::Accounts { users },
            (None, None) => Auth::Open,
        };
        let history_file = self.history_path().map(Path::to_owned);
        Ok(Config {
            listen: self.listen,
            tls_listen: self.tls_listen,
            tls,
            auth,
            require_tls_for_password: self.require_tls_for_password,
            max_line_bytes: self.max_line_bytes,
            max_connections: self.max_connections,
            max_output_bytes: self.max_output_bytes,
            max_connections_per_ip: self.max_connections_per_ip,
            auth_timeout_secs: self.auth_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            flood_rate: self.flood_rate,
            flood_burst: self.flood_burst,
            default_room: self.default_room,
            shutdown_timeout_secs: self.shutdown_timeout_secs,
            pid_file: self.pid_file,
            log_file: self.log_file,
            history_file,
            history_fsync: self.history_fsync,
            history_backlog: self.history_backlog,
            history_keep: self.history_keep,
            history_max_bytes: self.history_max_bytes,
            quiet_room_size: self.quiet_room_size,
        })
    }

    /// Refuses a file that riftd writes (`history_file`, `pid_file`,
    /// `log_file`, and `users_file`, which `riftd user …` rewrites) when it
    /// is the same file as the config file or another configured file,
    /// compared by path and, for files that exist, by inode (so a symlink
    /// or a second spelling is caught too). Writing one of them would
    /// destroy the other: a log appended to the config made it unparsable,
    /// so that even `riftd -d stop` refused to run.
    pub fn check_distinct_files(&self) -> Result<(), ConfigError> {
        const WRITTEN: [&str; 4] = ["history_file", "pid_file", "log_file", "users_file"];
        let mut named: Vec<(&'static str, &Path)> = Vec::new();
        if let Some(path) = &self.source {
            named.push(("the config file", path));
        }
        for (key, path) in [
            ("password_file", &self.password_file),
            ("users_file", &self.users_file),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("pid_file", &self.pid_file),
            ("log_file", &self.log_file),
        ] {
            if let Some(path) = path {
                named.push((key, path));
            }
        }
        if let Some(path) = self.history_path() {
            named.push(("history_file", path));
        }
        for (index, &(first, first_path)) in named.iter().enumerate() {
            for &(second, second_path) in &named[index + 1..] {
                let written = WRITTEN.iter().find(|key| **key == second || **key == first);
                let Some(written) = written else {
                    continue;
                };
                if is_same_file(first_path, second_path) {
                    let other = if *written == first { second } else { first };
                    let other = if other.ends_with("_file") || other.starts_with("tls_") {
                        format!("`{other}`")
                    } else {
                        other.to_owned()
                    };
                    return Err(invalid(
                        written,
                        format!(
                            "{} is also {other}; riftd writes {written}, which would destroy it",
                            first_path.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every numeric key with its value, for the range checks.
    fn numbers(&self) -> Vec<(&'static str, Number)> {
        let integer = |value: usize| Number::Integer(u64::try_from(value).unwrap_or(u64::MAX));
        vec![
            ("max_line_bytes", integer(self.max_line_bytes)),
            ("max_connections", integer(self.max_connections)),
            ("max_output_bytes", integer(self.max_output_bytes)),
            (
                "max_connections_per_ip",
                integer(self.max_connections_per_ip),
            ),
            ("auth_timeout_secs", Number::Integer(self.auth_timeout_secs)),
            ("idle_timeout_secs", Number::Integer(self.idle_timeout_secs)),
            ("flood_rate", Number::Real(self.flood_rate)),
            ("flood_burst", Number::Integer(u64::from(self.flood_burst))),
            (
                "shutdown_timeout_secs",
                Number::Integer(self.shutdown_timeout_secs),
            ),
            ("history_backlog", integer(self.history_backlog)),
            ("history_keep", integer(self.history_keep)),
            ("quiet_room_size", integer(self.quiet_room_size)),
            ("history_max_bytes", integer(self.history_max_bytes)),
        ]
    }
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

    pub fn shutdown_timeout_secs(&self) -> u64 {
        self.shutdown_timeout_secs
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    // What a reload may not change (see `Server::reload`, which says so
    // in the log): each takes the running config's value over this one's.

    /// `listen` and `tls_listen`: the sockets are bound once.
    pub(crate) fn keep_listen_of(&mut self, running: &Config) {
        self.listen = running.listen.clone();
        self.tls_listen = running.tls_listen.clone();
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

/// A journal must be a regular file or not exist yet (it is then created):
/// compaction renames a new file over it, which would replace a device
/// such as `/dev/null` or a symlink (and not its target). `lstat` is used,
/// so a symlink is refused, not followed.
fn check_history_file(path: Option<&Path>) -> Result<(), ConfigError> {
    let Some(path) = path else {
        return Ok(());
    };
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_file() => Ok(()),
        Ok(metadata) => Err(invalid(
            "history_file",
            format!(
                "{} is {}, not a regular file; point it at a file (created if missing), \
                 or set history_file = \"\" to turn history off",
                path.display(),
                describe_file_type(&metadata.file_type())
            ),
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ConfigError::Read {
            kind: "history_file",
            path: path.to_owned(),
            source,
        }),
    }
}

/// The most bytes riftd reads from each file the configuration names: far
/// beyond any real file of that kind, so that a path pointing at something
/// huge by mistake (a disk image, a log) is refused instead of read whole.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;
pub const MAX_PASSWORD_FILE_BYTES: u64 = 64 * 1024;
/// About 450,000 accounts.
pub const MAX_USERS_FILE_BYTES: u64 = 64 * 1024 * 1024;
pub const MAX_TLS_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a file the configuration names (the config file itself, the
/// password, users, certificate and key files): a regular file (symlinks
/// are followed) of at most `max` bytes. It is opened non-blocking, so a
/// FIFO can never block the caller — at start, or on SIGHUP on the event
/// loop, where a FIFO would freeze every client — and is then refused, as
/// are directories and sockets. A character device is read like a file
/// (`--config /dev/null` is an empty config), within the same bound, so
/// `/dev/zero` or a huge file is refused without being read whole.
pub fn read_regular_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let metadata = file.metadata()?;
    let file_type = metadata.file_type();
    if !file_type.is_file() && !file_type.is_char_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "it is {}, not a regular file",
                describe_file_type(&file_type)
            ),
        ));
    }
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {max} bytes, more than such a file can be"),
        )
    };
    if metadata.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(bytes)
}

/// `read_regular_file` as UTF-8 text.
pub fn read_regular_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_regular_file(path, max)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// The permission bits of `path` when others may read it (the secret
/// files: the password, the account hashes, the TLS key), else `None`.
fn world_readable_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o004 != 0).then_some(mode)
}

/// Whether two configured paths name one file: the same absolute path, or
/// (both existing, symlinks followed) the same inode.
fn is_same_file(first: &Path, second: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if std::path::absolute(first).ok() == std::path::absolute(second).ok() {
        return true;
    }
    match (std::fs::metadata(first), std::fs::metadata(second)) {
        (Ok(first), Ok(second)) => first.dev() == second.dev() && first.ino() == second.ino(),
        _ => false,
    }
}

/// "a symlink", "a directory", "a character device", … for messages.
pub fn describe_file_type(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_symlink() {
        "a symlink"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The password is the file's first line, without its line ending.
fn read_password(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let text =
        read_regular_text(path, MAX_PASSWORD_FILE_BYTES).map_err(|source| ConfigError::Read {
            kind: "password_file",
            path: path.to_owned(),
            source,
        })?;
    let password = text.lines().next().unwrap_or("");
    if password.is_empty() {
        return Err(invalid(
            "password_file",
            format!("{} holds no password on its first line", path.display()),
        ));
    }
    Ok(password.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AuthKind;
    use std::io::Write;

    #[test]
    fn the_embedded_defaults_are_the_documented_ones() {
        let config = RawConfig::default().validate().unwrap();
        assert_eq!(config.listen, vec!["127.0.0.1:5050".parse().unwrap()]);
        assert_eq!(config.auth.kind(), AuthKind::Open);
        assert_eq!(config.max_line_bytes, 8192);
        assert_eq!(config.quiet_room_size, 500);
        assert_eq!(config.default_room.as_str(), "lobby");
        assert_eq!(config.auth(), Auth::Open);
    }

    #[test]
    fn an_empty_file_means_defaults() {
        let config = RawConfig::from_toml("").unwrap();
        assert_eq!(config.max_line_bytes, 8192);
        assert_eq!(config.quiet_room_size, 500);
    }

    #[test]
    fn listen_takes_a_string_or_a_list_of_v4_and_v6() {
        let one = RawConfig::from_toml(r#"listen = "0.0.0.0:6000""#).unwrap();
        assert_eq!(one.listen, vec!["0.0.0.0:6000".parse().unwrap()]);
        let many = RawConfig::from_toml(r#"listen = ["127.0.0.1:1", "[::1]:2"]"#).unwrap();
        assert_eq!(many.listen.len(), 2);
        assert!(many.listen[1].is_ipv6());
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let error = RawConfig::from_toml("max_lines = 3").unwrap_err();
        assert!(error.contains("max_lines"), "{error}");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (text, key) in [
            ("listen = \"nowhere\"", "listen"),
            ("max_line_bytes = \"big\"", "max_line_bytes"),
            ("auth = \"kerberos\"", "auth"),
            ("default_room = \"no spaces\"", "default_room"),
        ] {
            let error = RawConfig::from_toml(text).unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
        let error = RawConfig::from_toml("max_line_bytes = 10")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("max_line_bytes"), "{error}");
        let error = RawConfig::from_toml("max_connections = 0")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("max_connections"), "{error}");
    }

    /// TOML for `key = value`, as a float for the one float key. A line
    /// may take at most half of `max_output_bytes`, so a long one comes with
    /// the largest output cap.
    fn assignment(key: &str, value: u64) -> String {
        if key == "flood_rate" {
            format!("{key} = {value}.0")
        } else if key == "max_line_bytes" {
            format!("{key} = {value}\nmax_output_bytes = 1073741824")
        } else {
            format!("{key} = {value}")
        }
    }

    #[test]
    fn every_numeric_key_has_exactly_one_documented_range_holding_its_default() {
        let config = RawConfig::default();
        let mut numbers: Vec<_> = config.numbers().iter().map(|(key, _)| *key).collect();
        let mut ranged: Vec<_> = RANGES.iter().map(|range| range.key).collect();
        numbers.sort_unstable();
        ranged.sort_unstable();
        assert_eq!(numbers, ranged);
        ranged.dedup();
        assert_eq!(ranged.len(), RANGES.len(), "a key has two ranges");
        for (key, value) in config.numbers() {
            assert!(check_range(key, value).is_ok(), "default of {key}");
        }
    }

    #[test]
    fn every_numeric_key_takes_both_ends_of_its_range_and_refuses_beyond_them_by_name() {
        for range in RANGES {
            for value in [range.min, range.max] {
                let text = assignment(range.key, value);
                let config = RawConfig::from_toml(&text).unwrap();
                if let Err(error) = config.validate() {
                    panic!("{text}: {error}");
                }
            }
            let mut outside = vec![range.max + 1, i64::MAX as u64];
            if range.min > 0 {
                outside.push(range.min - 1);
            }
            for value in outside {
                let text = assignment(range.key, value);
                // A value too big for the field's type is refused by the
                // parser, the rest by `validate`; both name the key.
                let error = match RawConfig::from_toml(&text) {
                    Err(error) => error,
                    Ok(config) => config.validate().unwrap_err().to_string(),
                };
                assert!(error.contains(range.key), "{text}: {error}");
            }
        }
    }

    #[test]
    fn enormous_timeouts_that_used_to_overflow_clocks_are_refused_by_name() {
        for text in [
            "shutdown_timeout_secs = 9223372036854775807",
            "auth_timeout_secs = 18000000000000000",
            "idle_timeout_secs = 18000000000000000",
            "flood_rate = inf",
            "flood_rate = nan",
            "flood_rate = -1.0",
        ] {
            let key = text.split(' ').next().unwrap();
            let error = RawConfig::from_toml(text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("`{key}`")), "{text}: {error}");
            assert!(error.contains("must be between"), "{text}: {error}");
        }
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
    fn issue_11_a_line_longer_than_half_of_max_output_bytes_is_refused() {
        let error = RawConfig::from_toml("max_output_bytes = 65536\nmax_line_bytes = 32769")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("max_line_bytes"), "{error}");
        assert!(error.to_string().contains("max_output_bytes"), "{error}");
        let config = RawConfig::from_toml("max_output_bytes = 65536\nmax_line_bytes = 32768")
            .unwrap()
            .validate();
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn password_auth_needs_a_readable_non_empty_password_file() {
        let error = RawConfig::from_toml("auth = \"password\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("password_file"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let mut config = RawConfig::from_toml("auth = \"password\"").unwrap();
        config.password_file = Some(missing.clone());
        let error = config.validate().unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");

        let path = dir.path().join("pw");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"s3cret\nignored\n")
            .unwrap();
        let mut config = RawConfig::from_toml("auth = \"password\"").unwrap();
        config.password_file = Some(path);
        let config = config.validate().unwrap();
        assert!(config.auth().verify("s3cret"));
        assert!(!config.auth().verify("ignored"));
    }

    #[test]
    fn a_relative_password_file_is_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "abc\n").unwrap();
        let config_path = dir.path().join("riftd.toml");
        std::fs::write(
            &config_path,
            "auth = \"password\"\npassword_file = \"pw\"\n",
        )
        .unwrap();
        let config = RawConfig::from_file(&config_path)
            .unwrap()
            .validate()
            .unwrap();
        assert!(config.auth().verify("abc"));
    }

    #[test]
    fn a_history_file_that_is_not_a_regular_file_is_refused_but_a_missing_one_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.jsonl");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for (path, kind) in [
            (PathBuf::from("/dev/null"), "a character device"),
            (link, "a symlink"),
            (dir.path().to_owned(), "a directory"),
        ] {
            let config = RawConfig {
                history_file: path.clone(),
                ..RawConfig::default()
            };
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("history_file"), "{error}");
            assert!(error.contains(kind), "{}: {error}", path.display());
            assert!(error.contains("history_file = \"\""), "{error}");
        }
        for path in [
            target,
            dir.path().join("missing/history.jsonl"),
            PathBuf::new(),
        ] {
            let config = RawConfig {
                history_file: path,
                ..RawConfig::default()
            };
            config.validate().unwrap();
        }
    }

    #[test]
    fn history_max_bytes_has_a_default_and_a_range() {
        assert_eq!(
            RawConfig::default().history_max_bytes,
            DEFAULT_HISTORY_MAX_BYTES
        );
        for (value, is_valid) in [
            (0u64, false),
            ((1 << 20) - 1, false),
            (1 << 20, true),
            (1 << 40, true),
            ((1 << 40) + 1, false),
        ] {
            let mut config = RawConfig::from_toml(&format!("history_max_bytes = {value}")).unwrap();
            config.history_file = PathBuf::new();
            match config.validate() {
                Ok(config) => {
                    assert!(is_valid, "{value} accepted");
                    assert_eq!(config.hub_config().history_max_bytes as u64, value);
                }
                Err(error) => {
                    assert!(!is_valid, "{value} refused: {error}");
                    assert!(error.to_string().contains("history_max_bytes"), "{error}");
                }
            }
        }
    }

    #[test]
    fn a_file_riftd_writes_that_is_also_another_configured_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("riftd.toml");
        std::fs::write(dir.path().join("users"), "").unwrap();
        std::os::unix::fs::symlink(&config_path, dir.path().join("link.toml")).unwrap();
        for (text, key, other) in [
            ("log_file = \"riftd.toml\"", "log_file", "the config file"),
            ("log_file = \"link.toml\"", "log_file", "the config file"),
            ("log_file = \"./riftd.toml\"", "log_file", "the config file"),
            (
                "history_file = \"riftd.toml\"",
                "history_file",
                "the config file",
            ),
            (
                "users_file = \"users\"\nhistory_file = \"users\"",
                "history_file",
                "`users_file`",
            ),
            (
                "pid_file = \"x.log\"\nlog_file = \"x.log\"",
                "log_file",
                "`pid_file`",
            ),
            (
                "users_file = \"riftd.toml\"",
                "users_file",
                "the config file",
            ),
        ] {
            std::fs::write(&config_path, format!("listen = \"127.0.0.1:0\"\n{text}\n")).unwrap();
            let config = RawConfig::from_file(&config_path).unwrap();
            let error = config.check_distinct_files().unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{text}: {error}");
            assert!(error.contains(other), "{text}: {error}");
            assert!(error.contains("would destroy it"), "{text}: {error}");
        }
        std::fs::write(
            &config_path,
            "listen = \"127.0.0.1:0\"\nlog_file = \"riftd.log\"\npid_file = \"riftd.pid\"\nhistory_file = \"h.jsonl\"\n",
        )
        .unwrap();
        RawConfig::from_file(&config_path)
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn a_secret_file_readable_by_every_local_user_is_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        for (mode, expected) in [(0o644, Some(0o644)), (0o640, None), (0o600, None)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(world_readable_mode(&path), expected, "{mode:o}");
        }
        assert_eq!(world_readable_mode(&dir.path().join("missing")), None);
    }

    #[test]
    fn an_empty_path_is_refused_by_name_except_history_files() {
        for key in [
            "password_file",
            "users_file",
            "tls_cert",
            "tls_key",
            "pid_file",
            "log_file",
        ] {
            let error = RawConfig::from_toml(&format!("{key} = \"\"")).unwrap_err();
            assert!(error.contains(&format!("`{key}` is empty")), "{error}");
        }
        let config = RawConfig::from_toml("history_file = \"\"").unwrap();
        assert_eq!(config.history_path(), None);
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn a_fifo_a_device_a_directory_or_a_huge_file_is_refused_without_blocking_or_reading_it_whole()
    {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'#'; 2048]).unwrap();
        for (path, expected) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "larger than 1024 bytes"),
            (dir.path(), "a directory"),
            (huge.as_path(), "larger than 1024 bytes"),
        ] {
            let error = read_regular_file(path, 1024).unwrap_err().to_string();
            assert!(error.contains(expected), "{}: {error}", path.display());
        }
        // Every configured file goes through it: a FIFO as the config file,
        // the password file, the users file or a TLS file is refused.
        let error = RawConfig::from_file(&fifo).unwrap_err().to_string();
        assert!(error.contains("a FIFO"), "{error}");
        for key in ["password_file", "users_file", "tls_cert"] {
            let text = match key {
                "password_file" => "auth = \"password\"",
                "users_file" => "auth = \"accounts\"",
                _ => "tls_listen = \"127.0.0.1:0\"",
            };
            let mut config = RawConfig::from_toml(text).unwrap();
            config.history_file = PathBuf::new();
            match key {
                "password_file" => config.password_file = Some(fifo.clone()),
                "users_file" => config.users_file = Some(fifo.clone()),
                _ => {
                    // One PEM file may hold both: not two jobs for one file.
                    config.tls_cert = Some(fifo.clone());
                    config.tls_key = Some(fifo.clone());
                }
            }
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("a FIFO"), "{key}: {error}");
        }
        std::fs::write(&huge, "ok\n").unwrap();
        assert_eq!(read_regular_file(&huge, 1024).unwrap(), b"ok\n");
        assert!(
            read_regular_file(Path::new("/dev/null"), 1024)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_unreadable_config_file_names_the_file() {
        let error = RawConfig::from_file(Path::new("/nonexistent/riftd.toml")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/riftd.toml"),
            "{error}"
        );
    }
}
