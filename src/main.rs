//! The `riftd` command: parses the command line, builds the configuration,
//! and runs the server in the foreground, or starts, stops and inspects a
//! daemon. Errors are printed with their cause and mapped to an exit code.

use clap::{Parser, Subcommand, ValueEnum};
use riftd::accounts::{AccountsError, Users};
use riftd::config::{Config, ConfigError, Overrides, RawConfig, parse_listen};
use riftd::daemon::{self, DaemonError, Forked, PidFile, Probe, Stopped};
use riftd::proto::Username;
use riftd::server::{self, Server, ServerError};
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    #[arg(short, long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,

    /// Listen on this address instead of the config's (repeatable;
    /// e.g. 0.0.0.0:5050 or [::]:5050).
    #[arg(short, long, value_name = "ADDR", value_parser = parse_listen)]
    listen: Vec<SocketAddr>,

    /// Keep room history in this file instead of the config's
    /// (`""` turns history off).
    #[arg(long, value_name = "PATH", global = true, value_parser = parse_path)]
    history_file: Option<PathBuf>,

    /// Run as a background daemon: start, stop, restart, or status
    /// (exit 0 while running, 3 when not).
    #[arg(short, long, value_name = "ACTION")]
    daemon: Option<Action>,

    /// Check the configuration, print the result and exit.
    #[arg(long)]
    check_config: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the accounts in the config's `users_file` (for auth = "accounts").
    /// Passwords are read from the terminal without echo (asked twice), or
    /// from the first line of stdin when it is not a terminal.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create an account.
    Add { name: String },
    /// Change an account's password.
    Passwd { name: String },
    /// Delete an account.
    Remove { name: String },
    /// List the accounts.
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Action {
    Start,
    Stop,
    Restart,
    Status,
}

/// `println!` without its panic: output to a closed pipe (`riftd user
/// list | head -1`) is dropped instead of aborting with exit 101.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` without its panic (stderr may be a closed pipe too).
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// LSB `status` code for "program is not running".
const NOT_RUNNING: u8 = 3;

/// What went wrong, by kind: a refused configuration exits 2, anything
/// else 1.
enum Failure {
    Config(ConfigError),
    Server(ServerError),
    Daemon(DaemonError),
    Accounts(AccountsError),
    Usage(String),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Config(_) | Failure::Usage(_) => ExitCode::from(2),
            Failure::Daemon(error) if error.is_refused_config() => ExitCode::from(2),
            Failure::Accounts(error) if error.is_refused_config() => ExitCode::from(2),
            // A socket unit that passes unusable sockets is a configuration
            // mistake too: exit 2, which the unit does not restart.
            Failure::Server(ServerError::Activation(_)) => ExitCode::from(2),
            Failure::Server(_) | Failure::Daemon(_) | Failure::Accounts(_) => ExitCode::from(1),
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

impl From<AccountsError> for Failure {
    fn from(error: AccountsError) -> Failure {
        Failure::Accounts(error)
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
            Failure::Accounts(error) => error,
            Failure::Usage(message) => return write!(f, "{message}"),
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

/// A path that may be empty (`--history-file ""` turns history off).
fn parse_path(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text))
}

/// What the command line overrides in the config.
fn overrides(cli: &Cli) -> Overrides {
    Overrides {
        listen: cli.listen.clone(),
        history_file: cli.history_file.clone(),
    }
}

/// The file (if any) plus command-line overrides, validated.
fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    Config::load(cli.config.as_deref(), &overrides(cli))
}

/// Re-reads the config on SIGHUP, reopening the log file first if there is one.
fn reloader(cli: &Cli, log_file: Option<PathBuf>) -> Option<server::Reloader> {
    let path = cli.config.clone()?;
    let overrides = overrides(cli);
    Some(Box::new(move || {
        if let Some(log_file) = &log_file
            && let Err(error) = daemon::reopen_log(log_file)
        {
            log::error!("SIGHUP: {error}");
        }
        Config::load(Some(&path), &overrides)
    }))
}

fn pid_path(config: &Config) -> PathBuf {
    daemon::absolute(
        &config
            .pid_file()
            .map_or_else(daemon::default_pid_file, Path::to_path_buf),
    )
}

/// Catches SIGHUP from here on, for a server about to start: until the
/// loop takes signals over, SIGHUP's default action would end riftd (a
/// logrotate `kill -HUP $(cat pidfile)` right after the pid is written).
/// The loop reloads once if one came (`Server::request_reload`). Only the
/// serving paths call it: a SIGHUP still ends `riftd user add` and friends,
/// as a closed terminal should.
fn catch_early_sighup() -> Arc<AtomicBool> {
    let caught = Arc::new(AtomicBool::new(false));
    if let Err(error) =
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&caught))
    {
        log::warn!("cannot catch SIGHUP during start-up: {error}");
    }
    caught
}

/// Builds the server, and has it reload once at start if a SIGHUP came
/// while it was being built.
fn build_server(
    config: Config,
    listeners: server::Listeners,
    reloader: Option<server::Reloader>,
    early_sighup: &AtomicBool,
) -> Result<Server, ServerError> {
    let mut server = Server::new(config, listeners, reloader)?;
    // Checked after `Server::new`: from then on the loop's own handler sees
    // every SIGHUP as well, so none falls between the two.
    if early_sighup.swap(false, Ordering::SeqCst) {
        server.request_reload();
    }
    Ok(server)
}

/// The pidfile (if `pid_file` is set) is removed however the run ends,
/// including a failure to bind: it must never be left naming a dead pid.
fn foreground(cli: &Cli, config: Config) -> Result<ExitCode, Failure> {
    let early_sighup = catch_early_sighup();
    let mut pidfile = config
        .pid_file()
        .map(|path| PidFile::acquire(&daemon::absolute(path)))
        .transpose()?;
    let result = serve_foreground(cli, config, pidfile.as_mut(), &early_sighup);
    if let Some(pidfile) = pidfile {
        pidfile.remove();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

fn serve_foreground(
    cli: &Cli,
    config: Config,
    pidfile: Option<&mut PidFile>,
    early_sighup: &AtomicBool,
) -> Result<(), Failure> {
    if let Some(pidfile) = pidfile {
        pidfile.write_pid(std::process::id())?;
    }
    server::raise_fd_limit();
    let listeners = server::bind(&config)?;
    let server = build_server(config, listeners, reloader(cli, None), early_sighup)?;
    server.run()?;
    Ok(())
}

/// Everything that can fail is checked before the fork; the command exits
/// 0 only when the daemon reports it is listening.
fn start(cli: &Cli) -> Result<ExitCode, Failure> {
    let config = load_config(cli)?;
    // Inherited by the daemon, which writes its pid before its loop runs.
    let early_sighup = catch_early_sighup();
    let pid_path = pid_path(&config);
    let log_path = daemon::absolute(
        &config
            .log_file()
            .map_or_else(daemon::default_log_file, Path::to_path_buf),
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
            say!(
                "riftd started (pid {pid}), listening on {}; log {}",
                addresses.join(", "),
                log_path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Forked::Daemon(ready) => {
            if let Err(error) = pidfile.write_pid(std::process::id()) {
                ready.fail(&error);
                pidfile.remove();
                return Err(error.into());
            }
            let server = match build_server(
                config,
                listeners,
                reloader(cli, Some(log_path)),
                &early_sighup,
            ) {
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
    let config = load_config(cli)?;
    let path = pid_path(&config);
    match daemon::stop(&path, config.shutdown_timeout())? {
        Stopped::NotRunning { is_stale } => {
            let stale = if is_stale { " (stale pidfile)" } else { "" };
            say!("riftd is not running{stale}; pidfile {}", path.display());
        }
        Stopped::Terminated { pid } => say!("riftd stopped (pid {pid})"),
        Stopped::Killed { pid } => say!(
            "riftd (pid {pid}) ignored SIGTERM for {} s and was killed with SIGKILL",
            config.shutdown_timeout_secs()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn status(cli: &Cli) -> Result<ExitCode, Failure> {
    let config = load_config(cli)?;
    let path = pid_path(&config);
    match daemon::probe(&path)? {
        Probe::Running { pid: Some(pid), .. } => {
            say!("riftd is running (pid {pid})");
            Ok(ExitCode::SUCCESS)
        }
        Probe::Running { pid: None, .. } => {
            say!("riftd is starting");
            Ok(ExitCode::SUCCESS)
        }
        Probe::NotRunning { is_stale } => {
            let stale = if is_stale { " (stale pidfile)" } else { "" };
            say!("riftd is not running{stale}; pidfile {}", path.display());
            Ok(ExitCode::from(NOT_RUNNING))
        }
    }
}

/// Reads a new password: twice without echo from a terminal, or the first
/// line of stdin from a pipe.
fn read_new_password() -> Result<String, Failure> {
    let io_failure =
        |error: std::io::Error| Failure::Usage(format!("cannot read the password: {error}"));
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ").map_err(io_failure)?;
        let second = rpassword::prompt_password("Repeat it: ").map_err(io_failure)?;
        if first != second {
            return Err(Failure::Usage("the two passwords differ".to_owned()));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(io_failure)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err(Failure::Usage("the password is empty".to_owned()));
    }
    Ok(password)
}

fn user_command(cli: &Cli, action: &UserAction) -> Result<ExitCode, Failure> {
    // The config need not be valid for serving (the users file may not
    // exist yet), so only its file is read here.
    let config = RawConfig::read(cli.config.as_deref())?;
    // A users_file that is also the config (or another file riftd writes)
    // would be replaced by the accounts.
    config.check_distinct_files()?;
    let path = config.users_file.clone().ok_or_else(|| {
        Failure::Usage(
            "the config sets no users_file; pass --config PATH with users_file = \"…\"".to_owned(),
        )
    })?;
    let username = |name: &str| {
        Username::parse(name)
            .map_err(|error| Failure::Usage(format!("invalid user name {name:?}: {error}")))
    };
    // A first look, unlocked, so that a doomed command fails before it
    // asks for a password; the change itself is re-checked under the lock.
    let users = Users::load_or_empty(&path)?;
    let done = match action {
        UserAction::List => {
            for name in users.names() {
                say!("{name}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        UserAction::Add { name } => {
            let name = username(name)?;
            if users.hash_of(&name).is_some() {
                return Err(AccountsError::Duplicate(name.to_string()).into());
            }
            Users::check_rewritable(&path)?;
            let password = read_new_password()?;
            Users::update(&path, |users| users.add(name.clone(), &password))?;
            format!("added {name}")
        }
        UserAction::Passwd { name } => {
            let name = username(name)?;
            if users.hash_of(&name).is_none() {
                return Err(AccountsError::Unknown(name.to_string()).into());
            }
            Users::check_rewritable(&path)?;
            let password = read_new_password()?;
            Users::update(&path, |users| users.set_password(&name, &password))?;
            format!("changed the password of {name}")
        }
        UserAction::Remove { name } => {
            let name = username(name)?;
            Users::check_rewritable(&path)?;
            Users::update(&path, |users| users.remove(&name))?;
            format!("removed {name}")
        }
    };
    say!(
        "{done} in {}; a running riftd applies it on SIGHUP (systemctl reload riftd, or kill -HUP its pid)",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run(cli: &Cli) -> Result<ExitCode, Failure> {
    if cli.check_config && (cli.daemon.is_some() || cli.command.is_some()) {
        // It would otherwise be ignored, and a daemon started (or an
        // account changed) by a command meant only to check.
        return Err(Failure::Usage(
            "--check-config only checks the configuration; run it without -d and without a subcommand"
                .to_owned(),
        ));
    }
    if let Some(Command::User { action }) = &cli.command {
        return user_command(cli, action);
    }
    match cli.daemon {
        None => {
            let config = load_config(cli)?;
            if cli.check_config {
                // What `start` (or a foreground run with pid_file set)
                // would refuse about the pidfile and the log, looked at
                // without touching them.
                daemon::check_pid_file(&pid_path(&config))?;
                daemon::check_log_file(&daemon::absolute(
                    &config
                        .log_file()
                        .map_or_else(daemon::default_log_file, Path::to_path_buf),
                ))?;
                say!("configuration ok");
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
    let mut cli = Cli::parse();
    // The daemon changes directory to `/` and re-reads its config on
    // SIGHUP: a relative `--config riftd.toml` would then name `/riftd.toml`
    // (so no reload could ever apply, or another file would be read), and
    // a relative `--history-file` would seem changed. Both are made
    // absolute once, against the directory riftd was started in.
    cli.config = cli.config.as_deref().map(daemon::absolute);
    cli.history_file = cli.history_file.as_deref().map(|path| {
        if path.as_os_str().is_empty() {
            PathBuf::new()
        } else {
            daemon::absolute(path)
        }
    });
    riftd::logging::init();
    // A write past RLIMIT_FSIZE (`ulimit -f`, systemd's LimitFSIZE=) must
    // fail with EFBIG, which the journal and the log handle like a full
    // disk, instead of killing riftd with SIGXFSZ without a word. A
    // handler that does nothing has that effect and survives the fork.
    if let Err(error) = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ) {
        log::warn!("cannot catch SIGXFSZ: {error}");
    }
    match run(&cli) {
        Ok(code) => code,
        Err(failure) => {
            // Under systemd stderr is the journal, which wants a priority.
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                log::error!("{failure}");
            } else {
                say_err!("riftd: {failure}");
            }
            failure.exit_code()
        }
    }
}
