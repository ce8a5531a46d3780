//! The cluster's settings once validated (`config` makes them from the
//! `cluster_*` keys and `node_name`): where NATS is, who this node is, and
//! the secrets and TLS config read from files at config time. Secrets
//! never print: `Secret`'s `Debug` hides them. Nothing here connects.

use std::fmt;
use std::sync::Arc;

/// A secret read from a file (password, token, `.creds` text).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How this node proves itself to NATS: at most one way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAuth {
    None,
    /// `cluster_user` + `cluster_password_file`.
    UserPassword {
        user: String,
        password: Secret,
    },
    /// `cluster_token_file`.
    Token(Secret),
    /// `cluster_credentials_file`: a `.creds` file (JWT and NKey seed).
    Credentials(Secret),
}

/// Cluster mode's settings: present only when `cluster_url` is set.
#[derive(Clone)]
pub struct ClusterSettings {
    /// `nats://` or `tls://` URLs, without credentials; tried in order.
    pub urls: Vec<String>,
    /// This node's name: unique per process, a NATS-token-safe string.
    pub node_name: String,
    pub auth: ClusterAuth,
    /// TLS to NATS: set by `cluster_tls_ca`, a client certificate or a
    /// `tls://` URL. With it every connection must be TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `cluster_replicas`: copies JetStream keeps of the stream and the
    /// buckets (1 to 5; at most the NATS cluster's size).
    pub replicas: usize,
}

impl fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("urls", &self.urls)
            .field("node_name", &self.node_name)
            .field("auth", &self.auth)
            .field("tls", &self.tls.is_some())
            .field("replicas", &self.replicas)
            .finish()
    }
}

impl ClusterSettings {
    /// Settings for `urls` with no auth and no TLS (tests, a local NATS).
    pub fn plain(urls: Vec<String>, node_name: impl Into<String>) -> ClusterSettings {
        ClusterSettings {
            urls,
            node_name: node_name.into(),
            auth: ClusterAuth::None,
            tls: None,
            replicas: 1,
        }
    }
}

/// Longest `node_name`.
pub const MAX_NODE_NAME_BYTES: usize = 64;

/// Whether `name` may be a node name: 1 to 64 ASCII letters, digits, `-`
/// or `_` (it is a NATS key token and appears in logs).
pub fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NODE_NAME_BYTES
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The default node name: the host name (its first label, other bytes as
/// `-`) and the process id, e.g. `chat1-4242`.
pub fn default_node_name() -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    let label: String = host
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NODE_NAME_BYTES - 11)
        .collect();
    let host = if label.is_empty() { "riftd" } else { &label };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_node_name_is_a_valid_one_ending_in_the_pid() {
        let name = default_node_name();
        assert!(is_valid_node_name(&name), "{name}");
        assert!(
            name.ends_with(&format!("-{}", std::process::id())),
            "{name}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let auth = ClusterAuth::Token(Secret::new("hunter2".into()));
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
