//! The `riftd` command: parses the command line, builds the configuration,
//! and runs the server in the foreground, or starts, stops and inspects a
//! daemon. Errors are printed with their cause and mapped to an exit code.

use clap::{Parser, ValueEnum};
use riftd::config::{Config, ConfigError, parse_listen};
use riftd::daemon::{self, DaemonError, Forked, PidFile, Probe, Stopped};
use riftd::server::{self, Server, ServerError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// A tiny, fast chat daemon: line-delimited JSON for programs, plain text for
/// people at `nc` or `telnet`.
///
/// With no options riftd runs in the foreground on 127.0.0.1:5050 with open
/// authentication and the room `lobby`, logging to stderr. Set RUST_LOG
/// (error, warn, info, debug, trace) to choose how much it logs.
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

    /// Run as a background daemon: start, stop, restart, or status
    /// (exit 0 while running, 3 when not).
    #[arg(short, long, value_name = "ACTION")]
    daemon: Option<Action>,

    /// Check the configuration, print the result and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Action {
    Start,
    Stop,
    Restart,
    Status,
}

/// LSB `status` code for "program is not running".
const NOT_RUNNING: u8 = 3;

/// What went wrong, by kind: a refused configuration exits 2, anything
/// else 1.
enum Failure {
    Config(ConfigError),
    Server(ServerError),
    Daemon(DaemonError),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Config(_) => ExitCode::from(2),
            Failure::Server(_) | Failure::Daemon(_) => ExitCode::from(1),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Failure {
        Failure::Config(error)
    }
}

impl From<ServerError> for Failure {
    fn from(error: ServerError) -> Failure {
        Failure::Server(error)
    }
}

impl From<DaemonError> for Failure {
    fn from(error: DaemonError) -> Failure {
        Failure::Daemon(error)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let error: &dyn std::error::Error = match self {
            Failure::Config(error) => error,
            Failure::Server(error) => error,
            Failure::Daemon(error) => error,
        };
        write!(f, "{error}")?;
        let mut source = error.source();
        while let Some(cause) = source {
            // thiserror messages usually include their direct cause already.
            if !error.to_string().contains(&cause.to_string()) {
                write!(f, ": {cause}")?;
            }
            source = cause.source();
        }
        Ok(())
    }
}

/// The file (if any) plus command-line overrides, validated.
fn load_config(path: Option<&PathBuf>, listen: &[SocketAddr]) -> Result<Config, ConfigError> {
    let mut config = match path {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !listen.is_empty() {
        config.listen = listen.to_vec();
    }
    config.validate()
}

/// Re-reads the config on SIGHUP, reopening the log file first if there is one.
fn reloader(cli: &Cli, log_file: Option<PathBuf>) -> Option<server::Reloader> {
    let path = cli.config.clone()?;
    let listen = cli.listen.clone();
    Some(Box::new(move || {
        if let Some(log_file) = &log_file
            && let Err(error) = daemon::reopen_log(log_file)
        {
            log::error!("SIGHUP: {error}");
        }
        load_config(Some(&path), &listen)
    }))
}

fn pid_path(config: &Config) -> PathBuf {
    daemon::absolute(
        &config
            .pid_file
            .clone()
            .unwrap_or_else(daemon::default_pid_file),
    )
}

fn foreground(cli: &Cli, config: Config) -> Result<ExitCode, Failure> {
    let mut pidfile = config
        .pid_file
        .as_ref()
        .map(|path| PidFile::acquire(&daemon::absolute(path)))
        .transpose()?;
    if let Some(pidfile) = &mut pidfile {
        pidfile.write_pid(std::process::id())?;
    }
    server::raise_fd_limit();
    let listeners = server::bind(&config)?;
    let server = Server::new(config, listeners, reloader(cli, None))?;
    let result = server.run();
    if let Some(pidfile) = pidfile {
        pidfile.remove();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Everything that can fail is checked before the fork; the command exits
/// 0 only when the daemon reports it is listening.
fn start(cli: &Cli) -> Result<ExitCode, Failure> {
    let config = load_config(cli.config.as_ref(), &cli.listen)?;
    let pid_path = pid_path(&config);
    let log_path = daemon::absolute(
        &config
            .log_file
            .clone()
            .unwrap_or_else(daemon::default_log_file),
    );
    let mut pidfile = PidFile::acquire(&pid_path)?;
    // Until the fork, a failure removes the (empty) pidfile we just made.
    let prepared = daemon::open_log(&log_path)
        .map_err(Failure::from)
        .and_then(|log| {
            server::raise_fd_limit();
            Ok((log, server::bind(&config)?))
        });
    let (log, listeners) = match prepared {
        Ok(prepared) => prepared,
        Err(failure) => {
            pidfile.remove();
            return Err(failure);
        }
    };
    let addresses: Vec<String> = listeners
        .local_addrs()
        .iter()
        .map(SocketAddr::to_string)
        .collect();
    let forked = match daemon::daemonize(log) {
        Ok(forked) => forked,
        Err(error) => {
            pidfile.remove();
            return Err(error.into());
        }
    };
    match forked {
        Forked::Parent(readiness) => {
            let pid = readiness.wait()?;
            println!(
                "riftd started (pid {pid}), listening on {}; log {}",
                addresses.join(", "),
                log_path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Forked::Daemon(ready) => {
            if let Err(error) = pidfile.write_pid(std::process::id()) {
                ready.fail(&error);
                return Err(error.into());
            }
            let server = match Server::new(config, listeners, reloader(cli, Some(log_path))) {
                Ok(server) => server,
                Err(error) => {
                    ready.fail(&error);
                    pidfile.remove();
                    return Err(error.into());
                }
            };
            log::info!(
                "riftd {} daemon started (pid {}, pidfile {})",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                pidfile.path().display()
            );
            ready.ok();
            let result = server.run();
            pidfile.remove();
            result?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn stop(cli: &Cli) -> Result<ExitCode, Failure> {
    let config = load_config(cli.config.as_ref(), &cli.listen)?;
    let path = pid_path(&config);
    match daemon::stop(&path, config.shutdown_timeout())? {
        Stopped::NotRunning { is_stale } => {
            let stale = if is_stale { " (stale pidfile)" } else { "" };
            println!("riftd is not running{stale}; pidfile {}", path.display());
        }
        Stopped::Terminated { pid } => println!("riftd stopped (pid {pid})"),
        Stopped::Killed { pid } => println!(
            "riftd (pid {pid}) ignored SIGTERM for {} s and was killed with SIGKILL",
            config.shutdown_timeout_secs
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn status(cli: &Cli) -> Result<ExitCode, Failure> {
    let config = load_config(cli.config.as_ref(), &cli.listen)?;
    let path = pid_path(&config);
    match daemon::probe(&path)? {
        Probe::Running { pid: Some(pid), .. } => {
            println!("riftd is running (pid {pid})");
            Ok(ExitCode::SUCCESS)
        }
        Probe::Running { pid: None, .. } => {
            println!("riftd is starting");
            Ok(ExitCode::SUCCESS)
        }
        Probe::NotRunning { is_stale } => {
            let stale = if is_stale { " (stale pidfile)" } else { "" };
            println!("riftd is not running{stale}; pidfile {}", path.display());
            Ok(ExitCode::from(NOT_RUNNING))
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, Failure> {
    match cli.daemon {
        None => {
            let config = load_config(cli.config.as_ref(), &cli.listen)?;
            if cli.check_config {
                println!("configuration ok");
                return Ok(ExitCode::SUCCESS);
            }
            foreground(cli, config)
        }
        Some(Action::Start) => start(cli),
        Some(Action::Stop) => stop(cli),
        Some(Action::Restart) => {
            stop(cli)?;
            start(cli)
        }
        Some(Action::Status) => status(cli),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    riftd::logging::init();
    match run(&cli) {
        Ok(code) => code,
        Err(failure) => {
            // Under systemd stderr is the journal, which wants a priority.
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                log::error!("{failure}");
            } else {
                eprintln!("riftd: {failure}");
            }
            failure.exit_code()
        }
    }
}
