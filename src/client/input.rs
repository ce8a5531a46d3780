//! What the user does to the `Model`: keys (editing, buffers, scrolling),
//! pastes, line-mode stdin lines, and the slash commands they turn into.
//! Nothing here reads a frame or draws.

use super::buffer::{BufferId, Line, LineKind};
use super::commands::{COMMANDS, Command, HELP, parse_command};
use super::editor::Recall;
use super::model::{Answer, HistoryPurpose, Link, Login, Model, Origin, QUIT_WAIT_MS, Shown};
use crate::proto::{Outgoing, RoomName, Username};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

impl Model {
    pub fn handle_key(&mut self, key: KeyEvent, now_ms: u64) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        // At the name and password prompts nothing is recalled or completed.
        let is_prompt = self.is_password_prompt() || self.is_name_prompt();
        let editor = &mut self.editor;
        match key.code {
            // AltGr arrives as Ctrl+Alt on some terminals: it types.
            KeyCode::Char(ch) if ctrl && alt => editor.insert_char(ch),
            KeyCode::Char('c') if ctrl => self.run(Command::Quit, None, now_ms),
            KeyCode::Char('a') if ctrl => editor.home(),
            KeyCode::Char('e') if ctrl => editor.end(),
            KeyCode::Char('w') if ctrl => editor.delete_word(),
            KeyCode::Char('u') if ctrl => editor.delete_to_start(),
            KeyCode::Char('k') if ctrl => editor.delete_to_end(),
            KeyCode::Char('h') if ctrl => editor.backspace(),
            KeyCode::Char('n') if ctrl => self.select((self.current + 1) % self.buffers.len()),
            KeyCode::Char('p') if ctrl => {
                let count = self.buffers.len();
                self.select((self.current + count - 1) % count);
            }
            KeyCode::Char(digit @ '1'..='9') if alt => {
                self.select(usize::from(digit as u8 - b'1'));
            }
            KeyCode::Char(_) if ctrl || alt => {}
            KeyCode::Char(ch) => editor.insert_char(ch),
            KeyCode::Left => editor.left(),
            KeyCode::Right => editor.right(),
            KeyCode::Home => editor.home(),
            KeyCode::End => editor.end(),
            KeyCode::Backspace => editor.backspace(),
            KeyCode::Delete => editor.delete(),
            KeyCode::Up | KeyCode::Down | KeyCode::Tab if is_prompt => {}
            KeyCode::Up => editor.history_up(),
            KeyCode::Down => editor.history_down(),
            KeyCode::Tab => self.complete(),
            KeyCode::F(2) => self.show_members = !self.show_members,
            KeyCode::PageUp => self.scroll_up(),
            KeyCode::PageDown => {
                let page = self.page();
                let buffer = &mut self.buffers[self.current];
                buffer.scroll = buffer.scroll.saturating_sub(page);
            }
            KeyCode::Enter => self.enter(now_ms),
            _ => {}
        }
    }

    pub fn handle_paste(&mut self, text: &str, _now_ms: u64) {
        self.editor.insert_str(text);
    }

    /// Line mode: one stdin line.
    pub fn handle_input_line(&mut self, text: &str, now_ms: u64) {
        if text.trim().is_empty() {
            return;
        }
        if self.login != Login::Ready || self.link != Link::Up {
            self.queued_input.push(text.to_owned());
            return;
        }
        self.submit(text, now_ms);
    }

    /// Line mode: stdin closed. Once the server has answered a PING sent
    /// after everything typed, `want` says `Quit(0)`.
    pub fn handle_input_end(&mut self, now_ms: u64) {
        if self.input_ended {
            return;
        }
        self.input_ended = true;
        self.settle(now_ms);
    }

    /// Rows of the message pane moved by PgUp/PgDn.
    fn page(&self) -> usize {
        usize::from(self.height.saturating_sub(4)).max(2) / 2
    }

    /// Scrolls up half a page, never past the oldest line: at the top the
    /// pane shows the buffer's first lines (the view anchors them at the
    /// bottom otherwise, so scrolling further would leave the pane empty),
    /// and an older page is asked for.
    fn scroll_up(&mut self) {
        let page = self.page();
        // The message pane: all rows but the status and input lines.
        let rows = usize::from(self.height.saturating_sub(2)).max(1);
        let buffer = &mut self.buffers[self.current];
        let top = buffer.lines.len().saturating_sub(rows);
        buffer.scroll = buffer.scroll.saturating_add(page).min(top);
        if buffer.scroll >= top {
            self.load_older();
        }
    }

    fn enter(&mut self, now_ms: u64) {
        match self.login.clone() {
            Login::AskingName => {
                let line = self.editor.take_line(Recall::Forget);
                match Username::parse(line.trim()) {
                    Ok(name) => {
                        self.name = Some(name);
                        self.start_login(now_ms);
                    }
                    Err(error) => {
                        self.error(BufferId::Server, None, &error.to_string(), None, now_ms);
                    }
                }
            }
            Login::AskingPassword(name) => {
                let password = self.editor.take_line(Recall::Forget);
                self.password = Some(password);
                self.send_pass(name, now_ms);
            }
            _ => {
                let line = self.editor.take_line(Recall::Remember);
                if !line.trim().is_empty() {
                    self.submit(&line, now_ms);
                }
            }
        }
    }

    /// The input prompt kind, for the view.
    pub fn is_password_prompt(&self) -> bool {
        matches!(self.login, Login::AskingPassword(_)) && self.link == Link::Up
    }

    pub fn is_name_prompt(&self) -> bool {
        self.login == Login::AskingName && self.link == Link::Up
    }

    /// One typed line: a message for the shown buffer, or a command.
    fn submit(&mut self, line: &str, now_ms: u64) {
        match parse_command(line) {
            Ok(command) => self.run(command, Some(line.to_owned()), now_ms),
            Err(error) => {
                let id = self.buffers[self.current].id.clone();
                self.error(id, None, &error.to_string(), Some(line.to_owned()), now_ms);
            }
        }
    }

    fn origin(&self, command: Option<String>) -> Origin {
        Origin {
            buffer: self.buffers[self.current].id.clone(),
            command,
        }
    }

    fn run(&mut self, command: Command, typed: Option<String>, now_ms: u64) {
        let here = self.buffers[self.current].id.clone();
        let needs_link = !matches!(
            command,
            Command::Quit | Command::Help | Command::Close | Command::Connect
        );
        if needs_link && (self.link != Link::Up || self.login != Login::Ready) {
            let text = "not connected; nothing was sent";
            self.error(here, None, text, typed, now_ms);
            return;
        }
        let origin = self.origin(typed.clone());
        match command {
            Command::Say(text) => self.say(text, origin, now_ms),
            Command::Me(text) => self.say(format!("/me {text}"), origin, now_ms),
            Command::Join(room) => {
                self.select_on_join = Some(room.clone());
                self.send(Outgoing::Join { room }, origin, Answer::Nothing);
            }
            Command::Part(room) => {
                let room = room.or_else(|| self.buffers[self.current].room().cloned());
                match room {
                    Some(room) => self.send(Outgoing::Part { room }, origin, Answer::Nothing),
                    None => self.error(here, None, "usage: /part ROOM", typed, now_ms),
                }
            }
            Command::Msg { to, text } => {
                let at = self.ensure_buffer(BufferId::Dm(to.key()), to.as_str().to_owned());
                if !self.is_lines() {
                    self.select(at);
                }
                if let Some(text) = text {
                    let origin = Origin {
                        buffer: BufferId::Dm(to.key()),
                        command: typed,
                    };
                    self.send(Outgoing::Dm { to, text }, origin, Answer::Nothing);
                }
            }
            Command::Nick(username) => {
                self.send(Outgoing::Rename { username }, origin, Answer::Nothing);
            }
            Command::Who(room) => {
                let room = room.or_else(|| self.buffers[self.current].room().cloned());
                match room {
                    Some(room) => {
                        let answer = Answer::Who(room.clone(), Shown::Visibly);
                        self.send(Outgoing::Who { room: Some(room) }, origin, answer);
                    }
                    None => self.error(here, None, "usage: /who ROOM", typed, now_ms),
                }
            }
            Command::Rooms => self.send(Outgoing::Rooms, origin, Answer::Nothing),
            Command::History(count) => match self.buffers[self.current].room().cloned() {
                Some(room) => {
                    let purpose = HistoryPurpose::Show;
                    self.ask_history(room, None, count, purpose, Some(origin));
                }
                None => self.error(here, None, "/history works in a room", typed, now_ms),
            },
            Command::Close => match here {
                BufferId::Dm(_) => {
                    self.buffers.remove(self.current);
                    self.current = self.current.saturating_sub(1);
                }
                _ => self.error(
                    here,
                    None,
                    "/close closes a private conversation; use /part for a room",
                    typed,
                    now_ms,
                ),
            },
            Command::Connect => match self.link {
                Link::Down => self.retry_at = Some(now_ms),
                Link::Up if self.login != Login::Ready => self.start_login(now_ms),
                Link::Up => self.notice(here, "already connected", now_ms),
            },
            Command::Quit => {
                if self.link == Link::Up {
                    self.send_plain(Outgoing::Quit);
                    self.quit_deadline = Some(now_ms.saturating_add(QUIT_WAIT_MS));
                } else {
                    self.quit_deadline = Some(now_ms);
                }
            }
            Command::Help => {
                for text in HELP {
                    self.notice(here.clone(), text, now_ms);
                }
            }
        }
    }

    /// Plain text: to the shown room or conversation.
    fn say(&mut self, text: String, origin: Origin, now_ms: u64) {
        match origin.buffer.clone() {
            BufferId::Room(room) => {
                let request = Outgoing::Say {
                    text,
                    room: Some(room),
                };
                self.send(request, origin, Answer::Nothing);
            }
            BufferId::Dm(_) => {
                let to = self.buffers[self.current].title.clone();
                match Username::parse(&to) {
                    Ok(to) => self.send(Outgoing::Dm { to, text }, origin, Answer::Nothing),
                    Err(error) => {
                        let text = error.to_string();
                        self.error(origin.buffer, None, &text, origin.command, now_ms);
                    }
                }
            }
            // No room known yet: the server's current room.
            BufferId::Server if self.is_lines() => {
                self.send(Outgoing::Say { text, room: None }, origin, Answer::Nothing);
            }
            BufferId::Server => {
                let line = Line {
                    time_ms: now_ms,
                    kind: LineKind::Error {
                        code: None,
                        text: "this is the server buffer: /join a room or /msg someone".into(),
                        command: origin.command,
                    },
                };
                self.add_line(BufferId::Server, line);
            }
        }
    }

    /// Tab: commands first on the line, `#rooms`, rooms after /join and
    /// /part, otherwise names (the room's members, then conversations).
    fn complete(&mut self) {
        let rooms: Vec<RoomName> = self.known_rooms.clone();
        let mut names: Vec<String> = Vec::new();
        let buffer = &self.buffers[self.current];
        names.extend(buffer.members.iter().map(|name| name.as_str().to_owned()));
        for buffer in &self.buffers {
            if matches!(buffer.id, BufferId::Dm(_)) {
                names.push(buffer.title.clone());
            }
        }
        if let Some(me) = &self.name {
            names.retain(|name| name != me.as_str());
        }
        let line = self.editor.text().to_ascii_lowercase();
        let wants_room = line.starts_with("/join ") || line.starts_with("/part ");
        self.editor.complete(|word, is_first| {
            if is_first && word.starts_with('/') {
                COMMANDS
                    .iter()
                    .map(|command| (*command).to_owned())
                    .collect()
            } else if word.starts_with('#') || wants_room {
                let hash = if word.starts_with('#') { "#" } else { "" };
                rooms.iter().map(|room| format!("{hash}{room}")).collect()
            } else {
                names
            }
        });
    }
}
