//! The config file as written: `RawConfig` (every key with its embedded
//! default, parsed from TOML, unknown keys refused, relative paths resolved
//! against the file's directory) and the command line's `Overrides`,
//! layered over it. Nothing here checks a rule that spans keys or reads a
//! file the configuration names (see `rules`), but the config file itself.

use super::files::{MAX_CONFIG_FILE_BYTES, read_regular_text};
use super::{ConfigError, FsyncPolicy};
use crate::proto::RoomName;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Cluster mode: one or more `nats://` or `tls://` URLs of NATS
    /// servers; empty (the default) = a single node.
    #[serde(deserialize_with = "deserialize_urls")]
    pub cluster_url: Vec<String>,
    /// This node's name in the cluster (default: host name and pid).
    pub node_name: Option<String>,
    /// NATS user, with `cluster_password_file`.
    pub cluster_user: Option<String>,
    /// File whose first line is the NATS password.
    pub cluster_password_file: Option<PathBuf>,
    /// File whose first line is the NATS token.
    pub cluster_token_file: Option<PathBuf>,
    /// A NATS `.creds` file (user JWT and NKey seed).
    pub cluster_credentials_file: Option<PathBuf>,
    /// PEM CA certificate(s) NATS's certificate must chain to; sets TLS.
    pub cluster_tls_ca: Option<PathBuf>,
    /// PEM client certificate chain and key for NATS (both or neither).
    pub cluster_tls_cert: Option<PathBuf>,
    pub cluster_tls_key: Option<PathBuf>,
    /// Copies of the stream and buckets JetStream keeps (default 1): up to
    /// the number of NATS servers in the NATS cluster, e.g. 3 of 3.
    pub cluster_replicas: Option<usize>,

    /// Set SO_REUSEPORT on every listener riftd binds, so that several
    /// cluster nodes on one host share a port (needs `cluster_url`).
    pub reuse_port: bool,

    /// Serve HTTP on the listeners: WebSocket clients upgrade on `GET /`;
    /// the greeting waits for a client's first bytes (or a short delay).
    pub web: bool,
    /// `Origin`s allowed to open a WebSocket (`https://host[:port]`);
    /// empty (the default): only the page's own origin.
    pub web_origins: Vec<String>,
    /// Web listeners: HTTP from the first byte (the page, WebSocket
    /// upgrades), never a greeting before a request; `web = true` or not.
    #[serde(deserialize_with = "deserialize_listen")]
    pub web_listen: Vec<SocketAddr>,
    /// The same over TLS (`tls_cert` and `tls_key`).
    #[serde(deserialize_with = "deserialize_listen")]
    pub web_tls_listen: Vec<SocketAddr>,
    /// The file this config was read from, if any.
    #[serde(skip)]
    pub(super) source: Option<PathBuf>,
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
            cluster_url: Vec::new(),
            node_name: None,
            cluster_user: None,
            cluster_password_file: None,
            cluster_token_file: None,
            cluster_credentials_file: None,
            cluster_tls_ca: None,
            cluster_tls_cert: None,
            cluster_tls_key: None,
            cluster_replicas: None,

            reuse_port: false,

            web: false,
            web_origins: Vec::new(),
            web_listen: Vec::new(),
            web_tls_listen: Vec::new(),
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

fn deserialize_urls<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
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
                &mut config.cluster_password_file,
                &mut config.cluster_token_file,
                &mut config.cluster_credentials_file,
                &mut config.cluster_tls_ca,
                &mut config.cluster_tls_cert,
                &mut config.cluster_tls_key,
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
            ("cluster_password_file", &config.cluster_password_file),
            ("cluster_token_file", &config.cluster_token_file),
            ("cluster_credentials_file", &config.cluster_credentials_file),
            ("cluster_tls_ca", &config.cluster_tls_ca),
            ("cluster_tls_cert", &config.cluster_tls_cert),
            ("cluster_tls_key", &config.cluster_tls_key),
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
    pub(super) fn layer(mut self, overrides: &Overrides) -> RawConfig {
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
    pub(super) fn history_path(&self) -> Option<&Path> {
        (!self.history_file.as_os_str().is_empty()).then_some(self.history_file.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_empty_path_is_refused_by_name_except_history_files() {
        for key in [
            "password_file",
            "users_file",
            "tls_cert",
            "tls_key",
            "pid_file",
            "log_file",
            "cluster_password_file",
            "cluster_token_file",
            "cluster_credentials_file",
            "cluster_tls_ca",
            "cluster_tls_cert",
            "cluster_tls_key",
        ] {
            let error = RawConfig::from_toml(&format!("{key} = \"\"")).unwrap_err();
            assert!(error.contains(&format!("`{key}` is empty")), "{error}");
        }
        let config = RawConfig::from_toml("history_file = \"\"").unwrap();
        assert_eq!(config.history_path(), None);
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
