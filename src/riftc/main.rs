//! riftc, the terminal chat client shipped with riftd. This is its shell:
//! the command line and config file, the connection (a thread per attempt),
//! the terminal or line-mode loop, and the state file. Every decision —
//! what to send, what to show, when to reconnect, when to exit — is the
//! sans-IO model's (`riftd::client`); the shell feeds it events with the
//! time and carries out what it asks. See `design/client.md`.

mod config;
mod net;
mod state;
mod target;
mod term;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use net::{Link, NetEvent};
use riftd::client::model::{Mode, Model, SavedState, Settings, Want};
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Everything the loop waits for, from every thread.
#[derive(Debug)]
pub enum Event {
    /// From the connection thread of link number `.0`.
    Net(u64, NetEvent),
    Key(KeyEvent),
    Paste(String),
    Resize(u16, u16),
    /// Line mode: one line of standard input.
    Stdin(String),
    /// Line mode: standard input ended.
    StdinEnd,
    Signal(i32),
}

/// The loop wakes at least this often, so the model's timers run.
const TICK: Duration = Duration::from_millis(250);
/// How long queued lines may take to leave when riftc exits.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The state file is written at most this often while riftc runs (and at
/// exit).
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args = <config::Args as clap::Parser>::parse();
    let file = match config::read_file(args.config.as_deref()) {
        Ok(file) => file,
        Err(error) => return fail(&error, 2),
    };
    let settings = match config::layer(args, file) {
        Ok(settings) => settings,
        Err(error) => return fail(&error, 2),
    };
    let tls = match settings.tls {
        false => None,
        true => match tls_config(settings.ca.as_deref()) {
            Ok(config) => Some(config),
            Err(error) => return fail(&error, 2),
        },
    };
    let is_ui = io::stdin().is_terminal() && io::stdout().is_terminal() && !settings.force_lines;
    let servers: Vec<String> = settings.targets.iter().map(ToString::to_string).collect();
    // Keyed by the whole list: message ids are cluster-wide, so the last
    // shown ids hold whichever node riftc is connected to.
    let state_path = settings
        .state_dir
        .clone()
        .or_else(state::default_dir)
        .map(|dir| state::path_for(&dir, &state::key_for(&servers)));
    let saved = match state_path.as_deref().map(state::load) {
        None => SavedState::default(),
        Some(Ok(saved)) => saved,
        Some(Err(warning)) => {
            eprintln!("riftc: {warning}");
            SavedState::default()
        }
    };
    let model = Model::new(
        Settings {
            servers,
            user: settings.user.clone(),
            room: settings.room.clone(),
            password: settings.password.clone(),
            mode: if is_ui {
                Mode::Ui
            } else {
                Mode::Lines {
                    json: settings.json,
                }
            },
            tz_offset_secs: chrono::Local::now().offset().local_minus_utc(),
        },
        saved,
        now_ms(),
    );
    let (events, inbox) = mpsc::channel();
    if let Err(error) = spawn_signals(events.clone()) {
        return fail(&format!("cannot watch signals: {error}"), 1);
    }
    let mut shell = Shell {
        model,
        targets: settings.targets,
        tls,
        events,
        inbox,
        link: None,
        link_id: 0,
        state_path,
        last_save: Instant::now(),
        screen: None,
    };
    if is_ui {
        match term::Guard::enter() {
            Ok(guard) => shell.screen = Some(guard),
            Err(error) => return fail(&format!("cannot set up the terminal: {error}"), 1),
        }
        if let Err(error) = term::spawn_input(shell.events.clone()) {
            drop(shell.screen.take());
            return fail(&format!("cannot read the keyboard: {error}"), 1);
        }
    } else if let Err(error) = spawn_stdin(shell.events.clone()) {
        return fail(&format!("cannot read standard input: {error}"), 1);
    }
    let code = shell.run();
    // The terminal is restored before anything more is printed.
    drop(shell.screen.take());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("riftc: {message}");
    ExitCode::from(code)
}

/// rustls with the ring provider (as the server): the system's roots, or
/// only the given CA's certificates.
fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|error| format!("{}: {error}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|error| format!("{}: {error}", path.display()))?;
            if certificates.is_empty() {
                return Err(format!("{}: no certificate in the file", path.display()));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for certificate in found.certs {
                let _ = roots.add(certificate);
            }
            if roots.is_empty() {
                return Err("no system certificate roots found; use --ca FILE".to_owned());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// SIGTERM, SIGHUP (the terminal went away) and SIGINT (line mode: in
/// raw mode Ctrl-C is a key) become events, so the terminal is restored
/// and the state saved before riftc exits.
fn spawn_signals(events: Sender<Event>) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGINT])?;
    std::thread::Builder::new()
        .name("riftc-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                if events.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Line mode: standard input, line by line, then its end.
fn spawn_stdin(events: Sender<Event>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("riftc-stdin".to_owned())
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else {
                    break;
                };
                if events.send(Event::Stdin(line)).is_err() {
                    return;
                }
            }
            let _ = events.send(Event::StdinEnd);
        })?;
    Ok(())
}

struct Shell {
    model: Model,
    /// The servers, as the model numbers them.
    targets: Vec<target::Target>,
    tls: Option<Arc<rustls::ClientConfig>>,
    events: Sender<Event>,
    inbox: Receiver<Event>,
    /// The connection, from its first attempt until it is reported closed.
    link: Option<Link>,
    /// Numbers links, so events of an earlier one are ignored.
    link_id: u64,
    state_path: Option<PathBuf>,
    last_save: Instant,
    /// The full-screen terminal, in UI mode.
    screen: Option<term::Guard>,
}

impl Shell {
    /// Runs until the model wants to quit (or a signal ends riftc); returns
    /// the exit code.
    fn run(&mut self) -> i32 {
        if let Some(guard) = &self.screen
            && let Ok(size) = guard.screen.size()
        {
            self.model.handle_resize(size.width, size.height);
        }
        loop {
            let now = now_ms();
            match self.model.want(now) {
                Want::Quit(code) => {
                    self.carry_out();
                    self.finish();
                    return code;
                }
                Want::Connect { server } if self.link.is_none() => self.connect(server, now),
                Want::Connect { .. } | Want::Wait => {}
            }
            self.carry_out();
            if let Some(code) = self.ask_password() {
                self.finish();
                return code;
            }
            self.draw();
            let wait = self
                .model
                .next_deadline()
                .map(|deadline| Duration::from_millis(deadline.saturating_sub(now)))
                .map_or(TICK, |wait| wait.min(TICK));
            match self.inbox.recv_timeout(wait) {
                Ok(event) => {
                    if let Some(code) = self.handle(event) {
                        self.finish();
                        return code;
                    }
                    // Whatever else already waits, before drawing again.
                    while let Ok(event) = self.inbox.try_recv() {
                        if let Some(code) = self.handle(event) {
                            self.finish();
                            return code;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return 1,
            }
            let now = now_ms();
            if self
                .model
                .next_deadline()
                .is_none_or(|deadline| deadline <= now)
            {
                self.model.handle_tick(now);
            }
        }
    }

    /// Feeds one event to the model; `Some(code)` when riftc must exit now.
    fn handle(&mut self, event: Event) -> Option<i32> {
        let now = now_ms();
        match event {
            Event::Net(id, _) if id != self.link_id => {}
            Event::Net(_, NetEvent::Connected) => self.model.handle_connected(now),
            Event::Net(_, NetEvent::Line(line)) => self.model.handle_line(&line, now),
            Event::Net(_, NetEvent::ConnectFailed(reason)) => {
                self.link = None;
                self.model.handle_connect_failed(&reason, now);
            }
            Event::Net(_, NetEvent::Closed(reason)) => {
                self.link = None;
                self.model.handle_disconnected(&reason, now);
            }
            Event::Key(key)
                if key.modifiers.contains(KeyModifiers::CONTROL)
                    && key.code == KeyCode::Char('c') =>
            {
                // Raw mode turns Ctrl-C into a key: leave as /quit does.
                self.model.handle_input_line("/quit", now);
            }
            Event::Key(key) => self.model.handle_key(key, now),
            Event::Paste(text) => self.model.handle_paste(&text, now),
            Event::Resize(width, height) => {
                self.model.handle_resize(width, height);
                if let Some(guard) = &mut self.screen {
                    let _ = guard.screen.autoresize();
                }
            }
            Event::Stdin(line) => self.model.handle_input_line(&line, now),
            Event::StdinEnd => self.model.handle_input_end(now),
            Event::Signal(signal) => return Some(128 + signal),
        }
        None
    }

    fn connect(&mut self, server: usize, now: u64) {
        let Some(target) = self.targets.get(server) else {
            self.model
                .handle_connect_failed(&format!("no server number {server}"), now);
            return;
        };
        self.link_id += 1;
        match Link::open(target, self.tls.clone(), self.link_id, self.events.clone()) {
            Ok(link) => self.link = Some(link),
            Err(error) => self
                .model
                .handle_connect_failed(&format!("cannot start a connection: {error}"), now),
        }
    }

    /// Sends, prints and saves what the model produced.
    fn carry_out(&mut self) {
        for line in self.model.take_outgoing() {
            if let Some(link) = &self.link {
                link.send(line);
            }
        }
        let printed = self.model.take_printed();
        if !printed.is_empty() {
            let mut stdout = io::stdout().lock();
            for line in printed {
                let _ = writeln!(stdout, "{line}");
            }
            let _ = stdout.flush();
        }
        if self.last_save.elapsed() >= SAVE_INTERVAL {
            self.save();
        }
    }

    fn save(&mut self) {
        self.last_save = Instant::now();
        if let (Some(state), Some(path)) = (self.model.saved_state(), &self.state_path)
            && let Err(error) = state::save(path, &state)
            && self.screen.is_none()
        {
            eprintln!("riftc: cannot save {}: {error}", path.display());
        }
    }

    /// Line mode: the server asked for a password none was given for;
    /// asked on the terminal, never echoed. `Some(code)` if it cannot be.
    fn ask_password(&mut self) -> Option<i32> {
        if self.screen.is_some() || !self.model.needs_password() {
            return None;
        }
        match rpassword::prompt_password("password: ") {
            Ok(password) => {
                self.model.handle_password(password, now_ms());
                None
            }
            Err(error) => {
                eprintln!(
                    "riftc: the server asks for a password and none can be read ({error}); use --password-file"
                );
                Some(1)
            }
        }
    }

    fn draw(&mut self) {
        if let Some(guard) = &mut self.screen {
            let model = &self.model;
            let _ = guard
                .screen
                .draw(|frame| riftd::client::view::draw(frame, model));
        }
    }

    /// Sends what is still queued, closes the connection, saves the state.
    fn finish(&mut self) {
        self.carry_out();
        if let Some(link) = self.link.take() {
            link.close(CLOSE_WAIT);
        }
        self.save();
    }
}
