//! The `riftd` command: parses the command line, builds the configuration,
//! binds the listeners and runs the event loop in the foreground. Errors are
//! printed with their cause and mapped to an exit code.

use clap::Parser;
use riftd::config::{Config, ConfigError, parse_listen};
use riftd::server::{self, Server, ServerError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// A tiny, fast chat daemon: line-delimited JSON for programs, plain text for
/// people at `nc` or `telnet`.
///
/// With no options riftd listens on 127.0.0.1:5050 with open authentication
/// and the room `lobby`. Set RUST_LOG (error, warn, info, debug, trace) to
/// choose how much it logs to stderr.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Read settings from this TOML file (see contrib/riftd.toml).
    #[arg(short, long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Listen on this address instead of the config's (repeatable;
    /// e.g. 0.0.0.0:5050 or [::]:5050).
    #[arg(short, long, value_name = "ADDR", value_parser = parse_listen)]
    listen: Vec<SocketAddr>,

    /// Check the configuration, print the result and exit.
    #[arg(long)]
    check_config: bool,
}

/// Exit codes: 2 for a refused configuration, 1 for a runtime failure.
enum Failure {
    Config(ConfigError),
    Server(ServerError),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Config(_) => ExitCode::from(2),
            Failure::Server(_) => ExitCode::from(1),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let error: &dyn std::error::Error = match self {
            Failure::Config(error) => error,
            Failure::Server(error) => error,
        };
        write!(f, "{error}")?;
        let mut source = error.source();
        while let Some(cause) = source {
            // thiserror messages already include their direct cause.
            if !error.to_string().contains(&cause.to_string()) {
                write!(f, ": {cause}")?;
            }
            source = cause.source();
        }
        Ok(())
    }
}

/// The file (if any) plus command-line overrides, validated.
fn load_config(cli_config: Option<&PathBuf>, listen: &[SocketAddr]) -> Result<Config, ConfigError> {
    let mut config = match cli_config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !listen.is_empty() {
        config.listen = listen.to_vec();
    }
    config.validate()
}

fn run(cli: Cli) -> Result<(), Failure> {
    let config = load_config(cli.config.as_ref(), &cli.listen).map_err(Failure::Config)?;
    if cli.check_config {
        println!("configuration ok");
        return Ok(());
    }
    let listeners = server::bind(&config.listen).map_err(Failure::Server)?;
    let reloader: Option<server::Reloader> = cli.config.clone().map(|path| {
        let listen = cli.listen.clone();
        Box::new(move || load_config(Some(&path), &listen)) as server::Reloader
    });
    let server = Server::new(config, listeners, reloader).map_err(Failure::Server)?;
    server.run().map_err(Failure::Server)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    riftd::logging::init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            log::error!("{failure}");
            eprintln!("riftd: {failure}");
            failure.exit_code()
        }
    }
}
