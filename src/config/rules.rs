//! `RawConfig::validate`, the one way from a `RawConfig` to a `Config`
//! (through `Config::load`): the rules that span keys (ranges, the line
//! and output caps, auth and its files, TLS) or need the files themselves
//! (distinct files riftd writes, a regular history file, secrets read and
//! not readable by everyone).

use super::files::{MAX_PASSWORD_FILE_BYTES, describe_file_type, read_regular_text};
use super::ranges::check_range;
use super::{AuthSetting, Config, ConfigError, PortSharing, RawConfig, invalid};
use crate::accounts::Users;
use crate::auth::Auth;
use crate::server::WebSettings;
use crate::tls::load_server_config;
use std::path::Path;
use std::sync::Arc;

impl RawConfig {
    /// Checks the rules that span keys or need files, and loads secrets:
    /// the one way to a `Config` (through `Config::load`).
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
        if self.listen.is_empty()
            && self.tls_listen.is_empty()
            && self.web_listen.is_empty()
            && self.web_tls_listen.is_empty()
        {
            return Err(invalid(
                "listen",
                "at least one address is needed (listen, tls_listen, web_listen or web_tls_listen)",
            ));
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
            ("cluster_password_file", &self.cluster_password_file),
            ("cluster_token_file", &self.cluster_token_file),
            ("cluster_credentials_file", &self.cluster_credentials_file),
            ("cluster_tls_key", &self.cluster_tls_key),
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
            (None, None) if self.tls_listen.is_empty() && self.web_tls_listen.is_empty() => None,
            (None, _) => return Err(invalid("tls_cert", self.needs_cert())),
            (_, None) => return Err(invalid("tls_key", self.needs_cert())),
        };
        let auth = match (password, users) {
            (Some(secret), _) => Auth::Password { secret },
            (None, Some(users)) => Auth::Accounts { users },
            (None, None) => Auth::Open,
        };
        for origin in &self.web_origins {
            if !crate::server::is_origin(origin) {
                return Err(invalid(
                    "web_origins",
                    format!(
                        "{origin:?} is not an origin: write scheme and host as a browser sends them, like \"https://chat.example\" or \"http://127.0.0.1:5050\" (no path, no trailing slash)"
                    ),
                ));
            }
        }
        let web_settings = Arc::new(WebSettings::new(&self.web_origins));
        let web = self.web.then(|| Arc::clone(&web_settings));
        let cluster = self.cluster_settings()?;

        // reuse_port: processes sharing a port are one chat only through
        // NATS; without it each would be a chat of its own.
        let port_sharing = match (self.reuse_port, &cluster) {
            (false, _) => PortSharing::Exclusive,
            (true, Some(_)) => PortSharing::Shared,
            (true, None) => {
                return Err(invalid(
                    "reuse_port",
                    "needs cluster_url: riftd processes sharing a port without a cluster \
                     would be separate chats, each client seeing only the users the kernel \
                     happened to give the same process",
                ));
            }
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
            cluster,
            web,
            web_settings,
            web_listen: self.web_listen,
            web_tls_listen: self.web_tls_listen,
            port_sharing,
        })
    }

    /// Why a missing `tls_cert` or `tls_key` is refused: the TLS listen
    /// keys set, by name.
    fn needs_cert(&self) -> String {
        let keys = match (self.tls_listen.is_empty(), self.web_tls_listen.is_empty()) {
            (false, false) => "tls_listen and web_tls_listen need",
            (true, false) => "web_tls_listen needs",
            _ => "tls_listen needs",
        };
        format!("{keys} tls_cert and tls_key")
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
            ("cluster_password_file", &self.cluster_password_file),
            ("cluster_token_file", &self.cluster_token_file),
            ("cluster_credentials_file", &self.cluster_credentials_file),
            ("cluster_tls_ca", &self.cluster_tls_ca),
            ("cluster_tls_cert", &self.cluster_tls_cert),
            ("cluster_tls_key", &self.cluster_tls_key),
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
                    let other = if other.ends_with("_file")
                        || other.starts_with("tls_")
                        || other.starts_with("cluster_")
                    {
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

/// The password is the file's first line, without its line ending.
fn read_password(path: &Path) -> Result<Vec<u8>, ConfigError> {
    read_first_line("password_file", path).map(String::into_bytes)
}

/// A secret file's first line, without its line ending; refused when empty.
pub(super) fn read_first_line(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text =
        read_regular_text(path, MAX_PASSWORD_FILE_BYTES).map_err(|source| ConfigError::Read {
            kind: key,
            path: path.to_owned(),
            source,
        })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        let what = if key.ends_with("token_file") {
            "token"
        } else {
            "password"
        };
        return Err(invalid(
            key,
            format!("{} holds no {what} on its first line", path.display()),
        ));
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

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
}
