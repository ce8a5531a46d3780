//! The `Model`: everything riftc knows (connection and login state,
//! buffers, the input line, pending requests, catch-up after a drop), and
//! its contract with the shell. Sans-IO: no socket, terminal, file or clock;
//! time arrives as `now_ms`. Frames are handled in `receive` (history
//! answers in `catch_up`), keys and commands in `input`, lines put into
//! buffers in `show`.
//!
//! Drain `take_printed` before acting on `Quit`: the last lines say why.
//!
//! The shell's loop: feed inputs (`handle_*`), then drain outputs
//! (`take_outgoing` to the socket, `take_printed` to stdout in line mode,
//! `saved_state` to the state file), redraw (`view::draw`) in UI mode, then
//! act on `want`: `Connect { server }` (connect now to `servers[server]`,
//! then `handle_connected` or `handle_connect_failed`; `want` keeps saying
//! `Connect` until one of them is called), `Quit(code)` (exit), `Wait`
//! (sleep until input or `next_deadline`, and call `handle_tick` at least
//! every 250 ms).
//!
//! Several servers are the nodes of one cluster: the first connection goes
//! to the first, and each one after a failed or dropped connection to the
//! next, round robin, with the one reconnect backoff.

use super::buffer::{Buffer, BufferId};
use super::editor::Editor;
use crate::proto::{AuthKind, Outgoing, RoomName, Target, Username};
use std::collections::{BTreeMap, VecDeque};

/// First wait before a reconnect; doubled per failure up to `MAX_BACKOFF_MS`.
pub(super) const MIN_BACKOFF_MS: u64 = 1_000;
pub(super) const MAX_BACKOFF_MS: u64 = 30_000;
/// UI mode measures the round trip this often.
pub(super) const LAG_PING_MS: u64 = 30_000;
/// A catch-up not answered in this long shows what it has and says so.
pub(super) const CATCH_UP_TIMEOUT_MS: u64 = 15_000;
/// Our own name refused (409) at a reconnect login: probably still held
/// by our old session on a dead node, which the cluster frees within
/// 10 s (`NAME_TTL`). USER is sent again this often, for up to
/// `NAME_WAIT_MS`, before the refusal counts as it does at a first login.
pub(super) const NAME_RETRY_MS: u64 = 1_000;
pub(super) const NAME_WAIT_MS: u64 = 15_000;
/// After `/quit`, how long to wait for the server to close.
pub(super) const QUIT_WAIT_MS: u64 = 1_000;
/// Refs kept for answers that may never come (a SAY has no answer).
const REFS_KEPT: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ui,
    Lines { json: bool },
}

pub struct Settings {
    /// The servers, e.g. "127.0.0.1:5050", in the order they are tried
    /// (several: the nodes of one cluster); the one in use is shown in the
    /// status line and the notices. Never empty.
    pub servers: Vec<String>,
    /// `None`: the UI asks for a name; line mode fails.
    pub user: Option<String>,
    /// Joined in addition to the default room, and made current.
    pub room: Option<String>,
    /// `None`: asked when the server answers 211.
    pub password: Option<String>,
    pub mode: Mode,
    /// Local time offset for displayed timestamps.
    pub tz_offset_secs: i32,
}

/// What survives a restart: per room, the last message id shown.
#[derive(Default, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedState {
    pub last_shown: BTreeMap<String, u64>,
}

/// What the shell should do now about the connection or the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Connect to `Settings::servers[server]`.
    Connect {
        server: usize,
    },
    Wait,
    Quit(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    Down,
    Up,
}

/// Where the login stands on a live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Login {
    /// Waiting for the 210 greeting.
    Greeting,
    /// The UI asks the user for a name.
    AskingName,
    SentUser(Username),
    /// 211 came and no password is known: the UI or the shell asks.
    AskingPassword(Username),
    SentPass(Username),
    /// Our own name was refused at a reconnect (409): USER again at
    /// `retry_at`.
    WaitingName {
        name: Username,
        retry_at: u64,
    },
    /// A refusal the model cannot fix by itself; `/connect` tries again.
    Stuck,
    Ready,
}

/// What a 208 answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HistoryPurpose {
    /// Messages after the last shown, after a (re)join.
    CatchUp,
    /// An older page for scrollback: the last `asked` messages.
    Older { asked: u64 },
    /// `/history N`.
    Show,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    Silently,
    Visibly,
}

/// The direct answer a request expects, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    Nothing,
    History(RoomName, HistoryPurpose),
    Who(RoomName, Shown),
}

/// Who asked: the buffer the command was typed in, and the command.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    pub(super) buffer: BufferId,
    pub(super) command: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) origin: Origin,
    pub(super) answer: Answer,
    /// The chat line it sent, to forget once refused.
    pub(super) chat: Option<Unconfirmed>,
}

/// A chat line sent whose echo (our own 200) has not come yet; a drop
/// may have lost it. Room lines are sent again once that room is caught
/// up (the catch-up brings the echo of any that did arrive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unconfirmed {
    pub(super) target: Target,
    pub(super) text: String,
}

/// Most unconfirmed lines kept (a server without refs never says which
/// line it refused).
const UNCONFIRMED_KEPT: usize = 256;

/// A room being caught up: messages after `after` are held, in id order,
/// until the last HISTORY page is in, then shown at once.
#[derive(Debug, Clone)]
pub(super) struct CatchUp {
    pub(super) after: u64,
    pub(super) held: BTreeMap<u64, crate::proto::ChatMessage>,
    pub(super) has_gap: bool,
    pub(super) deadline: u64,
    /// Set after a 429: ask again then, after `resume_after`.
    pub(super) retry_at: Option<u64>,
    pub(super) resume_after: u64,
}

pub struct Model {
    pub(super) settings: Settings,
    pub(super) saved: SavedState,
    pub(super) saved_changed: bool,
    pub(super) buffers: Vec<Buffer>,
    pub(super) current: usize,
    pub(super) editor: Editor,
    pub(super) link: Link,
    pub(super) login: Login,
    pub(super) auth: Option<AuthKind>,
    pub(super) has_refs: bool,
    /// The name asked for, then the name held.
    pub(super) name: Option<Username>,
    /// The name our last session held (set at a login, moved by our own
    /// renames): a 409 for it at a reconnect is waited out.
    pub(super) held_name: Option<Username>,
    /// Until when a 409 for `held_name` is waited out; set at the first
    /// one, cleared at a login.
    pub(super) name_wait_until: Option<u64>,
    /// Index into `settings.servers` of the connection in use or the next
    /// one.
    pub(super) server_at: usize,
    pub(super) password: Option<String>,
    pub(super) retry_at: Option<u64>,
    pub(super) backoff_ms: u64,
    pub(super) exit: Option<i32>,
    pub(super) quit_deadline: Option<u64>,
    pub(super) outgoing: Vec<String>,
    pub(super) printed: Vec<String>,
    pub(super) next_ref: u64,
    pub(super) refs: BTreeMap<u64, Pending>,
    /// Expected answers in order, for a server without refs.
    pub(super) unref_answers: VecDeque<Answer>,
    /// Our 201 for a room we were not in came just now: a 208 right after
    /// it is the join backlog.
    pub(super) backlog_expected: Option<RoomName>,
    pub(super) catch_ups: BTreeMap<RoomName, CatchUp>,
    pub(super) select_on_join: Option<RoomName>,
    pub(super) room_list: Vec<(RoomName, u64)>,
    /// WHO answers arriving in chunks: how each is shown, what came so far.
    pub(super) who_answers: BTreeMap<RoomName, Shown>,
    pub(super) who_collected: BTreeMap<RoomName, Vec<Username>>,
    pub(super) known_rooms: Vec<RoomName>,
    pub(super) lag_ms: Option<u64>,
    pub(super) lag_ping: Option<(String, u64)>,
    pub(super) next_lag_at: u64,
    pub(super) next_token: u64,
    /// Line mode: lines typed before the login, sent once in.
    pub(super) queued_input: Vec<String>,
    pub(super) input_ended: bool,
    pub(super) end_token: Option<String>,
    pub(super) unconfirmed: VecDeque<Unconfirmed>,
    pub(super) logged_in_at: u64,
    pub(super) is_finished: bool,
    pub(super) width: u16,
    pub(super) height: u16,
    pub(super) show_members: bool,
    pub(super) link_note: String,
}

impl Model {
    pub fn new(settings: Settings, saved: SavedState, now_ms: u64) -> Model {
        let mut model = Model {
            saved,
            saved_changed: false,
            buffers: vec![Buffer::new(BufferId::Server, "riftd".to_owned())],
            current: 0,
            editor: Editor::default(),
            link: Link::Down,
            login: Login::Greeting,
            auth: None,
            has_refs: false,
            name: None,
            held_name: None,
            name_wait_until: None,
            server_at: 0,
            password: settings.password.clone(),
            retry_at: Some(now_ms),
            backoff_ms: MIN_BACKOFF_MS,
            exit: None,
            quit_deadline: None,
            outgoing: Vec::new(),
            printed: Vec::new(),
            next_ref: 1,
            refs: BTreeMap::new(),
            unref_answers: VecDeque::new(),
            backlog_expected: None,
            catch_ups: BTreeMap::new(),
            select_on_join: None,
            room_list: Vec::new(),
            who_answers: BTreeMap::new(),
            who_collected: BTreeMap::new(),
            known_rooms: Vec::new(),
            lag_ms: None,
            lag_ping: None,
            next_lag_at: 0,
            next_token: 1,
            queued_input: Vec::new(),
            input_ended: false,
            end_token: None,
            unconfirmed: VecDeque::new(),
            logged_in_at: 0,
            is_finished: false,
            width: 80,
            height: 24,
            show_members: true,
            link_note: "connecting".to_owned(),
            settings,
        };
        match model
            .settings
            .user
            .clone()
            .map(|user| Username::parse(&user))
        {
            Some(Ok(name)) => model.name = Some(name),
            Some(Err(error)) => {
                let text = format!("cannot log in as that name: {error}");
                model.login_failed(&text, now_ms);
            }
            None if model.is_lines() => {
                model.fail(2, "line mode needs a name: give --user NAME", now_ms);
            }
            None => {}
        }
        if let Some(room) = model.settings.room.clone() {
            match RoomName::parse(&room) {
                Ok(room) => {
                    let at = model.ensure_buffer(BufferId::Room(room.clone()), format!("#{room}"));
                    model.current = at;
                }
                Err(error) => model.fail(2, &format!("--room: {error}"), now_ms),
            }
        }
        model
    }

    // ---- inputs -------------------------------------------------------

    pub fn handle_connected(&mut self, now_ms: u64) {
        self.link = Link::Up;
        self.retry_at = None;
        self.login = Login::Greeting;
        self.link_note = "logging in".to_owned();
        let text = format!("connected to {}", self.server());
        self.notice(BufferId::Server, &text, now_ms);
    }

    pub fn handle_connect_failed(&mut self, reason: &str, now_ms: u64) {
        self.link = Link::Down;
        let text = match self.has_several_servers() {
            false => format!("could not connect: {reason}"),
            true => format!("could not connect to {}: {reason}", self.server()),
        };
        self.next_server();
        self.schedule_retry(&text, now_ms);
    }

    pub fn handle_disconnected(&mut self, reason: &str, now_ms: u64) {
        let was_up = self.link == Link::Up;
        let was_stuck = self.login == Login::Stuck;
        self.link = Link::Down;
        self.login = Login::Greeting;
        self.lag_ping = None;
        self.end_token = None;
        self.reset_connection_state();
        if self.quit_deadline.is_some() || self.exit.is_some() || self.is_finished {
            return;
        }
        // With several servers, say which one went away.
        let from = match self.has_several_servers() {
            false => String::new(),
            true => format!(" from {}", self.server()),
        };
        self.next_server();
        if was_stuck {
            // The refusal would only come again: wait for /connect.
            self.retry_at = None;
            self.link_note = "type /connect".to_owned();
            let text = format!("disconnected{from}: {reason}; type /connect to try again");
            self.notice(BufferId::Server, &text, now_ms);
            return;
        }
        let text = if was_up {
            format!("disconnected{from}: {reason}")
        } else {
            format!("connection lost{from}: {reason}")
        };
        self.schedule_retry(&text, now_ms);
    }

    pub fn handle_resize(&mut self, width: u16, height: u16) {
        self.width = width;
        self.height = height;
    }

    /// Line mode: the password the shell read on the terminal.
    pub fn handle_password(&mut self, password: String, now_ms: u64) {
        self.password = Some(password);
        if let Login::AskingPassword(name) = self.login.clone() {
            self.send_pass(name, now_ms);
        }
    }

    pub fn handle_tick(&mut self, now_ms: u64) {
        if let Login::WaitingName { name, retry_at } = self.login.clone()
            && self.link == Link::Up
            && now_ms >= retry_at
        {
            self.login = Login::SentUser(name.clone());
            self.send_plain(Outgoing::User { username: name });
        }
        if self.link == Link::Up
            && self.login == Login::Ready
            && self.settings.mode == Mode::Ui
            && now_ms >= self.next_lag_at
        {
            let token = self.token("lag");
            self.lag_ping = Some((token.clone(), now_ms));
            self.next_lag_at = now_ms.saturating_add(LAG_PING_MS);
            self.send_plain(Outgoing::Ping { token: Some(token) });
        }
        let rooms: Vec<RoomName> = self.catch_ups.keys().cloned().collect();
        for room in rooms {
            let Some(catch_up) = self.catch_ups.get(&room) else {
                continue;
            };
            if catch_up.retry_at.is_some_and(|at| now_ms >= at) {
                let after = catch_up.resume_after;
                if let Some(catch_up) = self.catch_ups.get_mut(&room) {
                    catch_up.retry_at = None;
                }
                self.ask_history(
                    room.clone(),
                    Some(after),
                    None,
                    HistoryPurpose::CatchUp,
                    None,
                );
            } else if now_ms >= catch_up.deadline {
                self.finish_catch_up(
                    &room,
                    Some("the server did not answer in time; some messages may be missing"),
                    now_ms,
                );
            }
        }
        self.settle(now_ms);
    }

    // ---- outputs ------------------------------------------------------

    pub fn take_outgoing(&mut self) -> Vec<String> {
        std::mem::take(&mut self.outgoing)
    }

    pub fn take_printed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.printed)
    }

    pub fn want(&self, now_ms: u64) -> Want {
        if let Some(code) = self.exit {
            return Want::Quit(code);
        }
        if self.is_finished {
            // Once the QUIT is taken.
            return if self.outgoing.is_empty() {
                Want::Quit(0)
            } else {
                Want::Wait
            };
        }
        if let Some(deadline) = self.quit_deadline {
            let is_sent = self.outgoing.is_empty();
            if self.link == Link::Down || (is_sent && now_ms >= deadline) {
                return Want::Quit(0);
            }
            return Want::Wait;
        }
        match (self.link, self.retry_at) {
            (Link::Down, Some(at)) if now_ms >= at => Want::Connect {
                server: self.server_at,
            },
            _ => Want::Wait,
        }
    }

    pub fn needs_password(&self) -> bool {
        matches!(self.login, Login::AskingPassword(_)) && self.password.is_none()
    }

    pub fn saved_state(&mut self) -> Option<SavedState> {
        if !self.saved_changed {
            return None;
        }
        self.saved_changed = false;
        Some(self.saved.clone())
    }

    pub fn next_deadline(&self) -> Option<u64> {
        let mut deadlines = Vec::new();
        if self.link == Link::Down {
            deadlines.extend(self.retry_at);
        }
        if self.link == Link::Up && self.login == Login::Ready && self.settings.mode == Mode::Ui {
            deadlines.push(self.next_lag_at);
        }
        if let (Link::Up, Login::WaitingName { retry_at, .. }) = (self.link, &self.login) {
            deadlines.push(*retry_at);
        }
        for catch_up in self.catch_ups.values() {
            deadlines.push(catch_up.retry_at.unwrap_or(catch_up.deadline));
        }
        deadlines.extend(self.quit_deadline);
        deadlines.into_iter().min()
    }

    // ---- read access for the view and the tests -----------------------

    pub fn buffers(&self) -> &[Buffer] {
        &self.buffers
    }

    pub fn current_buffer(&self) -> &Buffer {
        &self.buffers[self.current]
    }

    pub fn editor(&self) -> &Editor {
        &self.editor
    }

    pub fn name(&self) -> Option<&Username> {
        self.name.as_ref()
    }

    /// The server in use, or the one the next connection goes to.
    pub fn server(&self) -> &str {
        self.settings
            .servers
            .get(self.server_at)
            .map_or("-", String::as_str)
    }

    pub(super) fn has_several_servers(&self) -> bool {
        self.settings.servers.len() > 1
    }

    /// The next connection goes to the next server, round robin.
    pub(super) fn next_server(&mut self) {
        self.server_at = match self.settings.servers.len() {
            0 => 0,
            count => (self.server_at + 1) % count,
        };
    }

    pub fn lag_ms(&self) -> Option<u64> {
        self.lag_ms
    }

    pub fn is_lines(&self) -> bool {
        matches!(self.settings.mode, Mode::Lines { .. })
    }

    // ---- sending -------------------------------------------------------

    /// Sends a request with no answer to track and no command to blame.
    pub(super) fn send_plain(&mut self, request: Outgoing) {
        self.outgoing.push(request.to_line(None));
    }

    /// Sends a request; with a server that echoes refs, its refusal (or
    /// answer) is traced back to `origin` and `answer`.
    pub(super) fn send(&mut self, request: Outgoing, origin: Origin, answer: Answer) {
        let chat = match &request {
            Outgoing::Say {
                text,
                room: Some(room),
            } => Some(Unconfirmed {
                target: Target::Room(room.clone()),
                text: text.clone(),
            }),
            Outgoing::Dm { to, text } => Some(Unconfirmed {
                target: Target::User(to.clone()),
                text: text.clone(),
            }),
            _ => None,
        };
        if let Some(chat) = chat.clone() {
            if self.unconfirmed.len() == UNCONFIRMED_KEPT {
                self.unconfirmed.pop_front();
            }
            self.unconfirmed.push_back(chat);
        }
        if self.has_refs {
            let number = self.next_ref;
            self.next_ref += 1;
            self.refs.insert(
                number,
                Pending {
                    origin,
                    answer,
                    chat,
                },
            );
            if number > REFS_KEPT {
                self.refs = self.refs.split_off(&(number - REFS_KEPT));
            }
            self.outgoing
                .push(request.to_line(Some(&format!("r{number}"))));
        } else {
            if answer != Answer::Nothing {
                self.unref_answers.push_back(answer);
            }
            self.outgoing.push(request.to_line(None));
        }
    }

    /// The pending entry a `ref` names, removed.
    pub(super) fn take_ref(&mut self, reference: Option<&str>) -> Option<Pending> {
        let number: u64 = reference?.strip_prefix('r')?.parse().ok()?;
        self.refs.remove(&number)
    }

    /// For a server without refs: the first expected answer that matches.
    pub(super) fn take_unref(&mut self, matches: impl Fn(&Answer) -> bool) -> Option<Answer> {
        let at = self.unref_answers.iter().position(matches)?;
        self.unref_answers.remove(at)
    }

    pub(super) fn ask_history(
        &mut self,
        room: RoomName,
        after: Option<u64>,
        limit: Option<u64>,
        purpose: HistoryPurpose,
        origin: Option<Origin>,
    ) {
        let origin = origin.unwrap_or(Origin {
            buffer: BufferId::Room(room.clone()),
            command: None,
        });
        self.send(
            Outgoing::History {
                room: room.clone(),
                after,
                limit,
            },
            origin,
            Answer::History(room, purpose),
        );
    }
}
