//! The cluster keys (`cluster_url`, `node_name`, `cluster_user` with
//! `cluster_password_file`, `cluster_token_file`,
//! `cluster_credentials_file`, `cluster_tls_ca`, `cluster_tls_cert`,
//! `cluster_tls_key`) into `ClusterSettings`: URLs checked, at most one
//! way to authenticate, secrets and TLS files read now (never at connect,
//! never from the command line). Without `cluster_url` every other cluster
//! key is refused, so a half-configured cluster cannot pass for a single
//! node.

use super::files::{MAX_TLS_FILE_BYTES, read_regular_file, read_regular_text};
use super::rules::read_first_line;
use super::{ConfigError, RawConfig, invalid};
use crate::cluster::{
    ClusterAuth, ClusterSettings, MAX_NODE_NAME_BYTES, Secret, default_node_name,
    is_valid_node_name,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A `.creds` file is a JWT and an NKey seed in armoured blocks: far below this.
const MAX_CREDENTIALS_FILE_BYTES: u64 = 64 * 1024;

impl RawConfig {
    /// The cluster's settings, `None` without `cluster_url`.
    pub(super) fn cluster_settings(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        if self.cluster_url.is_empty() {
            if let Some(key) = self.cluster_keys_set().next() {
                return Err(invalid(
                    key,
                    "needs cluster_url (without it riftd is a single node and uses no cluster key)",
                ));
            }
            return Ok(None);
        }
        for url in &self.cluster_url {
            check_url(url)?;
        }
        let node_name = match &self.node_name {
            Some(name) if is_valid_node_name(name) => name.clone(),
            Some(name) => {
                return Err(invalid(
                    "node_name",
                    format!(
                        "`{name}` is not 1 to {MAX_NODE_NAME_BYTES} letters, digits, `-` or `_`"
                    ),
                ));
            }
            None => default_node_name(),
        };
        Ok(Some(ClusterSettings {
            urls: self.cluster_url.clone(),
            node_name,
            auth: self.cluster_auth()?,
            tls: self.cluster_tls()?,
            replicas: self.cluster_replicas.unwrap_or(1),
        }))
    }

    /// The cluster keys other than `cluster_url` that are set.
    fn cluster_keys_set(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("node_name", self.node_name.is_some()),
            ("cluster_user", self.cluster_user.is_some()),
            (
                "cluster_password_file",
                self.cluster_password_file.is_some(),
            ),
            ("cluster_token_file", self.cluster_token_file.is_some()),
            (
                "cluster_credentials_file",
                self.cluster_credentials_file.is_some(),
            ),
            ("cluster_tls_ca", self.cluster_tls_ca.is_some()),
            ("cluster_tls_cert", self.cluster_tls_cert.is_some()),
            ("cluster_tls_key", self.cluster_tls_key.is_some()),
            ("cluster_replicas", self.cluster_replicas.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, is_set)| is_set.then_some(key))
    }

    fn cluster_auth(&self) -> Result<ClusterAuth, ConfigError> {
        let ways = [
            self.cluster_user.is_some() || self.cluster_password_file.is_some(),
            self.cluster_token_file.is_some(),
            self.cluster_credentials_file.is_some(),
        ];
        if ways.iter().filter(|&&is_set| is_set).count() > 1 {
            return Err(invalid(
                "cluster_token_file",
                "give at most one way to log in to NATS: cluster_user with \
                 cluster_password_file, cluster_token_file, or cluster_credentials_file",
            ));
        }
        match (&self.cluster_user, &self.cluster_password_file) {
            (Some(user), Some(path)) => {
                if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(invalid(
                        "cluster_user",
                        "must be a non-empty name without spaces",
                    ));
                }
                let password = read_first_line("cluster_password_file", path)?;
                return Ok(ClusterAuth::UserPassword {
                    user: user.clone(),
                    password: Secret::new(password),
                });
            }
            (Some(_), None) => {
                return Err(invalid(
                    "cluster_password_file",
                    "cluster_user needs cluster_password_file (the password is never in the config)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "cluster_user",
                    "cluster_password_file needs cluster_user",
                ));
            }
            (None, None) => {}
        }
        if let Some(path) = &self.cluster_token_file {
            let token = read_first_line("cluster_token_file", path)?;
            return Ok(ClusterAuth::Token(Secret::new(token)));
        }
        if let Some(path) = &self.cluster_credentials_file {
            let text = read_regular_text(path, MAX_CREDENTIALS_FILE_BYTES).map_err(|source| {
                ConfigError::Read {
                    kind: "cluster_credentials_file",
                    path: path.to_owned(),
                    source,
                }
            })?;
            if !text.contains("BEGIN NATS USER JWT") || !text.contains("BEGIN USER NKEY SEED") {
                return Err(invalid(
                    "cluster_credentials_file",
                    format!(
                        "{} is not a NATS .creds file (a user JWT and an NKey seed)",
                        path.display()
                    ),
                ));
            }
            return Ok(ClusterAuth::Credentials(Secret::new(text)));
        }
        Ok(ClusterAuth::None)
    }

    /// A TLS client config when a CA, a client certificate or a `tls://`
    /// URL asks for TLS: roots from `cluster_tls_ca`, else the system's.
    fn cluster_tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        let wants_tls = self.cluster_tls_ca.is_some()
            || self.cluster_tls_cert.is_some()
            || self.cluster_tls_key.is_some()
            || self.cluster_url.iter().any(|url| url.starts_with("tls://"));
        if !wants_tls {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        match &self.cluster_tls_ca {
            Some(path) => {
                let certificates = read_certificates("cluster_tls_ca", path)?;
                for certificate in certificates {
                    roots.add(certificate).map_err(|error| {
                        invalid("cluster_tls_ca", format!("{}: {error}", path.display()))
                    })?;
                }
            }
            None => {
                for certificate in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(certificate);
                }
                if roots.is_empty() {
                    return Err(invalid(
                        "cluster_tls_ca",
                        "TLS to NATS needs a CA: the system has none; set cluster_tls_ca",
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid("cluster_tls_ca", error.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.cluster_tls_cert, &self.cluster_tls_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certificates("cluster_tls_cert", cert)?;
                let pem = read_regular_file(key, MAX_TLS_FILE_BYTES).map_err(|source| {
                    ConfigError::Read {
                        kind: "cluster_tls_key",
                        path: key.to_owned(),
                        source,
                    }
                })?;
                let private_key = PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
                    invalid("cluster_tls_key", format!("{}: {error}", key.display()))
                })?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|error| invalid("cluster_tls_cert", error.to_string()))?
            }
            (Some(_), None) => {
                return Err(invalid(
                    "cluster_tls_key",
                    "cluster_tls_cert needs cluster_tls_key",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "cluster_tls_cert",
                    "cluster_tls_key needs cluster_tls_cert",
                ));
            }
        };
        Ok(Some(Arc::new(config)))
    }
}

/// `nats://host[:port]` or `tls://host[:port]`, without credentials.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let Some(rest) = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
    else {
        return Err(invalid(
            "cluster_url",
            format!("`{url}` is not a nats:// or tls:// URL"),
        ));
    };
    if rest.contains('@') {
        return Err(invalid(
            "cluster_url",
            format!(
                "`{url}` holds credentials; put them in cluster_user and \
                 cluster_password_file, cluster_token_file or cluster_credentials_file"
            ),
        ));
    }
    let host_port = rest.trim_end_matches('/');
    let is_valid = !host_port.is_empty()
        && !host_port.contains('/')
        && !host_port.chars().any(char::is_whitespace)
        && match host_port.rsplit_once(':') {
            // An IPv6 address without a port ends in `]`.
            Some((host, port)) if !port.ends_with(']') => {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0)
            }
            _ => true,
        };
    if !is_valid {
        return Err(invalid(
            "cluster_url",
            format!("`{url}` is not a URL like nats://host:4222"),
        ));
    }
    Ok(())
}

fn read_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_regular_file(path, MAX_TLS_FILE_BYTES).map_err(|source| ConfigError::Read {
        kind: key,
        path: path.to_owned(),
        source,
    })?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|error| invalid(key, format!("{}: {error}", path.display())))?;
    if certificates.is_empty() {
        return Err(invalid(
            key,
            format!("{}: no certificate in the file", path.display()),
        ));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, ConfigError> {
        RawConfig::from_toml(text).unwrap().validate()
    }

    fn refusal(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn without_cluster_url_riftd_is_a_single_node_and_other_cluster_keys_are_refused() {
        assert!(load("").unwrap().cluster().is_none());
        for (text, key) in [
            ("node_name = \"a\"", "node_name"),
            ("cluster_user = \"u\"", "cluster_user"),
            ("cluster_token_file = \"/t\"", "cluster_token_file"),
            ("cluster_tls_ca = \"/ca.pem\"", "cluster_tls_ca"),
            ("cluster_replicas = 3", "cluster_replicas"),
        ] {
            let error = refusal(text);
            assert!(error.contains(key), "{text}: {error}");
            assert!(error.contains("needs cluster_url"), "{text}: {error}");
        }
    }

    #[test]
    fn cluster_url_takes_one_or_several_nats_urls_and_names_the_node() {
        let config =
            load("cluster_url = \"nats://127.0.0.1:4222\"\nnode_name = \"chat-1\"").unwrap();
        let cluster = config.cluster().unwrap();
        assert_eq!(cluster.urls, ["nats://127.0.0.1:4222"]);
        assert_eq!(cluster.node_name, "chat-1");
        assert_eq!(cluster.auth, ClusterAuth::None);
        assert!(cluster.tls.is_none());
        let config =
            load("cluster_url = [\"nats://a:4222\", \"nats://b\", \"nats://[::1]:4222\"]").unwrap();
        let cluster = config.cluster().unwrap();
        assert_eq!(cluster.urls.len(), 3);
        assert!(is_valid_node_name(&cluster.node_name));
    }

    #[test]
    fn bad_cluster_urls_and_node_names_are_refused_by_key() {
        for (text, needle) in [
            (
                "cluster_url = \"http://a:4222\"",
                "not a nats:// or tls:// URL",
            ),
            ("cluster_url = \"a:4222\"", "not a nats:// or tls:// URL"),
            ("cluster_url = \"nats://u:p@a:4222\"", "holds credentials"),
            ("cluster_url = \"nats://a:99999\"", "nats://host:4222"),
            ("cluster_url = \"nats://\"", "nats://host:4222"),
            ("cluster_url = []\nnode_name = \"x\"", "needs cluster_url"),
            (
                "cluster_url = \"nats://a\"\nnode_name = \"has space\"",
                "node_name",
            ),
        ] {
            let error = refusal(text);
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn nats_credentials_come_from_files_one_way_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let password = write("pw", "s3cret\nignored\n");
        let token = write("token", "t0ken\n");
        let creds = write(
            "node.creds",
            "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n\
             -----BEGIN USER NKEY SEED-----\nSUAM\n------END USER NKEY SEED------\n",
        );
        let empty = write("empty", "\n");
        let url = "cluster_url = \"nats://a\"\n";
        let cluster = |text: &str| {
            load(&format!("{url}{text}"))
                .unwrap()
                .cluster()
                .cloned()
                .unwrap()
        };
        assert_eq!(
            cluster(&format!(
                "cluster_user = \"riftd\"\ncluster_password_file = \"{password}\""
            ))
            .auth,
            ClusterAuth::UserPassword {
                user: "riftd".into(),
                password: Secret::new("s3cret".into())
            }
        );
        assert_eq!(
            cluster(&format!("cluster_token_file = \"{token}\"")).auth,
            ClusterAuth::Token(Secret::new("t0ken".into()))
        );
        assert!(matches!(
            cluster(&format!("cluster_credentials_file = \"{creds}\"")).auth,
            ClusterAuth::Credentials(_)
        ));
        for (text, needle) in [
            (
                format!("cluster_token_file = \"{token}\"\ncluster_credentials_file = \"{creds}\""),
                "at most one way",
            ),
            (
                format!(
                    "cluster_user = \"u\"\ncluster_password_file = \"{password}\"\ncluster_token_file = \"{token}\""
                ),
                "at most one way",
            ),
            (
                "cluster_user = \"u\"".to_owned(),
                "needs cluster_password_file",
            ),
            (
                format!("cluster_password_file = \"{password}\""),
                "needs cluster_user",
            ),
            (
                format!("cluster_token_file = \"{empty}\""),
                "holds no token",
            ),
            (
                format!("cluster_credentials_file = \"{token}\""),
                "not a NATS .creds file",
            ),
            (
                "cluster_token_file = \"/nonexistent/token\"".to_owned(),
                "/nonexistent/token",
            ),
        ] {
            let error = refusal(&format!("{url}{text}"));
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn tls_to_nats_reads_its_files_at_config_time() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["nats.test".into()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["node".into()]).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let ca_path = write("ca.pem", &ca.cert.pem());
        let cert_path = write("client.pem", &client.cert.pem());
        let key_path = write("client.key", &client.signing_key.serialize_pem());
        let url = "cluster_url = \"tls://nats.test:4222\"\n";
        let config = load(&format!("{url}cluster_tls_ca = \"{ca_path}\"")).unwrap();
        assert!(config.cluster().unwrap().tls.is_some());
        let config = load(&format!(
            "{url}cluster_tls_ca = \"{ca_path}\"\ncluster_tls_cert = \"{cert_path}\"\ncluster_tls_key = \"{key_path}\""
        ))
        .unwrap();
        assert!(config.cluster().unwrap().tls.is_some());
        for (text, needle) in [
            (
                format!("cluster_tls_ca = \"{ca_path}\"\ncluster_tls_cert = \"{cert_path}\""),
                "cluster_tls_cert needs cluster_tls_key",
            ),
            (format!("cluster_tls_ca = \"{key_path}\""), "no certificate"),
            (
                "cluster_tls_ca = \"/nonexistent/ca.pem\"".to_owned(),
                "/nonexistent/ca.pem",
            ),
        ] {
            let error = refusal(&format!("{url}{text}"));
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}
