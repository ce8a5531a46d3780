//! riftc's settings: the command line over the optional config file
//! (`$XDG_CONFIG_HOME/riftc/config.toml`, `~/.config/riftc/config.toml`)
//! over the defaults.

use crate::target::{self, Target};
use clap::Parser;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// riftc: a terminal chat client for riftd.
///
/// On a terminal riftc draws a full-screen chat; when stdin or stdout is
/// not a terminal it runs in line mode: each input line is sent (slash
/// commands work) and each event is printed as one line.
#[derive(Debug, Parser)]
#[command(name = "riftc", version, about, long_about = None)]
#[command(
    after_help = "Examples:\n  riftc --user alice\n  riftc --tls --ca ca.pem chat.example.org\n  riftc --user alice node-a:5050,node-b:5050\n  echo 'deploy done' | riftc --user ci --room ops chat.example.org"
)]
pub struct Args {
    /// The server, HOST[:PORT] (IPv6 as [::1]:5050), or the nodes of one
    /// cluster separated by commas (node-a:5050,node-b:5050): the first
    /// is tried first, the next after a failed or dropped connection
    /// [default: 127.0.0.1:5050]
    pub server: Option<String>,
    /// Your name (asked when missing, on a terminal)
    #[arg(short, long, value_name = "NAME")]
    pub user: Option<String>,
    /// A room to join besides the server's default room, made current
    #[arg(short, long, value_name = "ROOM")]
    pub room: Option<String>,
    /// Speak TLS (the system's certificate roots, or --ca)
    #[arg(long)]
    pub tls: bool,
    /// Trust this PEM certificate (a self-signed server); implies --tls
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Read the password from this file (else it is asked when needed)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Line mode even on a terminal
    #[arg(long)]
    pub lines: bool,
    /// Line mode with one JSON object per event (see design/client.md)
    #[arg(long)]
    pub json: bool,
    /// The config file [default: $XDG_CONFIG_HOME/riftc/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the last shown message ids are kept [default: $XDG_STATE_HOME/riftc]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// The config file's keys, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// One server, several separated by commas as on the command line,
    /// or a TOML array of them.
    pub server: Option<Servers>,
    pub user: Option<String>,
    pub room: Option<String>,
    pub tls: Option<bool>,
    pub ca: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
}

/// The file's `server`: `"a:5050,b:5051"` or `["a:5050", "b:5051"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Servers {
    One(String),
    Many(Vec<String>),
}

impl Servers {
    /// As the command line spells a list.
    fn joined(self) -> String {
        match self {
            Servers::One(text) => text,
            Servers::Many(list) => list.join(","),
        }
    }
}

/// Everything the shell needs, layered and checked.
#[derive(Debug)]
pub struct Settings {
    /// The servers in the order given; never empty.
    pub targets: Vec<Target>,
    pub user: Option<String>,
    pub room: Option<String>,
    pub tls: bool,
    pub ca: Option<PathBuf>,
    pub password: Option<String>,
    pub force_lines: bool,
    pub json: bool,
    pub state_dir: Option<PathBuf>,
}

fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("riftc").join("config.toml"))
}

/// Reads the config file: the one named on the command line must exist;
/// the default one may be missing.
pub fn read_file(named: Option<&Path>) -> Result<FileConfig, String> {
    let (path, must_exist) = match named {
        Some(path) => (path.to_owned(), true),
        None => match default_config_path() {
            Some(path) => (path, false),
            None => return Ok(FileConfig::default()),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|error| format!("{}: {error}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            Ok(FileConfig::default())
        }
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

/// The command line over the file over the defaults.
pub fn layer(args: Args, file: FileConfig) -> Result<Settings, String> {
    let server = args
        .server
        .or(file.server.map(Servers::joined))
        .unwrap_or_else(|| format!("127.0.0.1:{}", crate::target::DEFAULT_PORT));
    let targets = target::parse_list(&server)?;
    let ca = args.ca.or(file.ca);
    let tls = args.tls || ca.is_some() || file.tls.unwrap_or(false);
    let password = match args.password_file.or(file.password_file) {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            Some(text.trim_end_matches(['\n', '\r']).to_owned())
        }
    };
    Ok(Settings {
        targets,
        user: args.user.or(file.user),
        room: args.room.or(file.room),
        tls,
        ca,
        password,
        force_lines: args.lines || args.json,
        json: args.json,
        state_dir: args.state_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::parse_from(std::iter::once("riftc").chain(list.iter().copied()))
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_the_file_over_defaults() {
        let file: FileConfig =
            toml::from_str("server = \"chat.example.org:6000\"\nuser = \"filed\"\ntls = true\n")
                .unwrap();
        let settings = layer(args(&["--user", "alice"]), file).unwrap();
        assert_eq!(
            settings.targets,
            [Target::parse("chat.example.org:6000").unwrap()]
        );
        assert_eq!(settings.user.as_deref(), Some("alice"));
        assert!(settings.tls);
        let settings = layer(args(&[]), FileConfig::default()).unwrap();
        assert_eq!(settings.targets, [Target::parse("127.0.0.1:5050").unwrap()]);
        assert!(!settings.tls && settings.user.is_none());
    }

    #[test]
    fn several_servers_come_from_the_command_line_or_the_file_in_order() {
        let expected = vec![
            Target::parse("node-a:5050").unwrap(),
            Target::parse("node-b:5051").unwrap(),
        ];
        let settings = layer(args(&["node-a:5050,node-b:5051"]), FileConfig::default()).unwrap();
        assert_eq!(settings.targets, expected);
        let file: FileConfig = toml::from_str("server = \"node-a:5050, node-b:5051\"\n").unwrap();
        assert_eq!(layer(args(&[]), file).unwrap().targets, expected);
        let file: FileConfig = toml::from_str("server = \"node-a,\"\n").unwrap();
        assert!(layer(args(&[]), file).unwrap_err().contains("empty server")); // A TOML array says the same.
        let file: FileConfig =
            toml::from_str("server = [\"node-a:5050\", \"node-b:5051\"]\n").unwrap();
        assert_eq!(layer(args(&[]), file).unwrap().targets, expected);
        let file: FileConfig = toml::from_str("server = []\n").unwrap();
        assert!(layer(args(&[]), file).is_err());
    }

    #[test]
    fn a_ca_implies_tls_and_json_implies_line_mode() {
        let settings = layer(args(&["--ca", "ca.pem", "--json"]), FileConfig::default()).unwrap();
        assert!(settings.tls && settings.force_lines && settings.json);
    }

    #[test]
    fn unknown_file_keys_and_bad_servers_are_refused() {
        assert!(toml::from_str::<FileConfig>("colour = \"red\"").is_err());
        assert!(layer(args(&["host:0"]), FileConfig::default()).is_err());
    }

    #[test]
    fn the_password_file_loses_its_line_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, " s3cret \n").unwrap();
        let settings = layer(
            args(&["--password-file", path.to_str().unwrap()]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(settings.password.as_deref(), Some(" s3cret "));
    }
}
