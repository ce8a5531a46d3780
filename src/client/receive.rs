//! What each server frame does to the `Model`: login steps, messages into
//! buffers (each id once), presence, member lists, room lists, pongs, and
//! errors next to the command that caused them. History answers (the
//! catch-up after a (re)join, older pages) go on to `catch_up`. Nothing
//! here reads a key or draws.

use super::buffer::{BufferId, Line, LineKind};
use super::lines::mentions;
use super::model::{
    Answer, CATCH_UP_TIMEOUT_MS, CatchUp, HistoryPurpose, Login, Model, Origin, Shown,
};
use crate::proto::{ChatMessage, Incoming, Outgoing, RoomName, Target, Username, parse_incoming};

impl Model {
    /// One server frame, without the newline.
    pub fn handle_line(&mut self, line: &str, now_ms: u64) {
        let received = match parse_incoming(line) {
            Ok(received) => received,
            Err(error) => {
                let text = format!("unreadable frame from the server: {error}");
                self.error(BufferId::Server, None, &text, None, now_ms);
                return;
            }
        };
        let expected = self.backlog_expected.take();
        let reference = received.reference.as_deref();
        match received.frame {
            Incoming::Hello { auth, features } => {
                self.auth = auth;
                self.has_refs = features.iter().any(|feature| feature == "ref");
                self.start_login(now_ms);
            }
            Incoming::PassNeeded => {
                if let Login::SentUser(name) = self.login.clone() {
                    self.send_pass(name, now_ms);
                }
            }
            Incoming::YourName { username } => {
                self.take_ref(reference);
                if self.login == Login::Ready {
                    // Our own rename: others get a 203, we only this
                    // answer, so our place in every member list moves here.
                    self.held_name = Some(username.clone());
                    if let Some(old) = self.name.replace(username.clone()) {
                        for buffer in &mut self.buffers {
                            for member in &mut buffer.members {
                                if member.key() == old.key() {
                                    *member = username.clone();
                                }
                            }
                        }
                    }
                    let line = Line {
                        time_ms: now_ms,
                        kind: LineKind::YouAre(username),
                    };
                    let id = self.buffers[self.current].id.clone();
                    self.add_line(id, line);
                } else {
                    let text = format!("logged in as {username}");
                    self.notice(BufferId::Server, &text, now_ms);
                    self.logged_in(username, now_ms);
                }
            }
            Incoming::Message(message) => self.chat_message(message, Arrival::Live),
            Incoming::Connected { username, room } => self.connected(username, room, now_ms),
            Incoming::Disconnected { username, room } => {
                self.disconnected(username, room, now_ms);
            }
            Incoming::Renamed { old, new } => self.renamed(old, new, now_ms),
            Incoming::GoingDown => {
                self.notice(BufferId::Server, "the server is going down", now_ms);
            }
            Incoming::Paused => {
                let text = "chat paused: the server lost its cluster; wait for it to resume";
                self.notice(BufferId::Server, text, now_ms);
            }
            Incoming::Resumed => self.notice(BufferId::Server, "chat resumed", now_ms),
            Incoming::Users {
                room,
                users,
                more,
                omitted,
            } => self.users(room, users, more, omitted, reference, now_ms),
            Incoming::Pong { token } => {
                self.take_ref(reference);
                let token: Option<String> =
                    token.and_then(|token| serde_json::from_str(token.get()).ok());
                if let Some(token) = token {
                    if self.end_token.as_deref() == Some(token.as_str()) {
                        // Everything typed was relayed: leave politely.
                        self.send_plain(Outgoing::Quit);
                        self.is_finished = true;
                    }
                    if let Some((sent, at)) = self.lag_ping.take() {
                        if sent == token {
                            self.lag_ms = Some(now_ms.saturating_sub(at));
                        } else {
                            self.lag_ping = Some((sent, at));
                        }
                    }
                }
            }
            Incoming::Backlog {
                room,
                messages,
                more,
                gap,
            } => {
                let pending = self.take_ref(reference);
                let purpose = match pending.map(|pending| pending.answer) {
                    Some(Answer::History(_, purpose)) => Some(purpose),
                    _ if expected.as_ref() == Some(&room) => None,
                    _ => self
                        .take_unref(
                            |answer| matches!(answer, Answer::History(asked, _) if *asked == room),
                        )
                        .and_then(|answer| match answer {
                            Answer::History(_, purpose) => Some(purpose),
                            _ => None,
                        }),
                };
                self.backlog(room, messages, more, gap, purpose, now_ms);
            }
            Incoming::ServerPing => self.send_plain(Outgoing::Ping { token: None }),
            Incoming::RoomList {
                rooms,
                more,
                omitted,
            } => {
                self.take_ref(reference);
                self.room_list.extend(rooms);
                if !more {
                    let rooms = std::mem::take(&mut self.room_list);
                    for (room, _) in &rooms {
                        if !self.known_rooms.contains(room) {
                            self.known_rooms.push(room.clone());
                        }
                    }
                    let line = Line {
                        time_ms: now_ms,
                        kind: LineKind::Rooms { rooms, omitted },
                    };
                    let id = self.buffers[self.current].id.clone();
                    self.add_line(id, line);
                }
            }
            Incoming::Error { code, error } => self.server_error(code, &error, reference, now_ms),
            Incoming::Unknown { .. } => {}
        }
        self.settle(now_ms);
    }

    fn server_error(&mut self, code: u16, error: &str, reference: Option<&str>, now_ms: u64) {
        let pending = self.take_ref(reference);
        if let Some(chat) = pending.as_ref().and_then(|pending| pending.chat.as_ref()) {
            let chat = chat.clone();
            self.confirm(&chat.target, &chat.text);
        }
        if self.login != Login::Ready && pending.is_none() {
            self.login_error(code, error, now_ms);
            return;
        }
        let (buffer, command) = match &pending {
            Some(pending) => (
                pending.origin.buffer.clone(),
                pending.origin.command.clone(),
            ),
            None => (self.buffers[self.current].id.clone(), None),
        };
        let buffer = match self.buffer_index(&buffer) {
            Some(_) => buffer,
            None => BufferId::Server,
        };
        match pending.map(|pending| pending.answer) {
            Some(Answer::History(room, HistoryPurpose::CatchUp)) => {
                let retry = code == 429;
                if let Some(catch_up) = self.catch_ups.get_mut(&room).filter(|_| retry) {
                    catch_up.retry_at = Some(now_ms.saturating_add(1_000));
                    return;
                }
                let text = format!("could not catch up: {error} ({code})");
                self.finish_catch_up(&room, Some(&text), now_ms);
                return;
            }
            Some(Answer::History(room, HistoryPurpose::Older { .. })) => {
                if let Some(at) = self.buffer_index(&BufferId::Room(room)) {
                    self.buffers[at].is_loading_older = false;
                }
            }
            Some(Answer::Who(room, _)) => {
                self.who_answers.remove(&room);
                self.who_collected.remove(&room);
            }
            _ => {}
        }
        self.error(buffer, Some(code), error, command, now_ms);
    }

    /// A refusal before the login is done.
    fn login_error(&mut self, code: u16, error: &str, now_ms: u64) {
        let text = format!("{error} ({code})");
        match code {
            401 => {
                self.password = None;
                self.login_failed(&format!("login failed: {text}"), now_ms);
                if !self.is_lines() {
                    self.start_login(now_ms);
                }
            }
            409 if self.is_own_name_refused()
                && self.name_wait_until.is_none_or(|until| now_ms < until) =>
            {
                self.wait_for_name(&text, now_ms);
            }
            400 | 409 => {
                self.stop_waiting_for_name();
                self.login_failed(&format!("login failed: {text}"), now_ms);
                if !self.is_lines() {
                    self.name = None;
                    self.start_login(now_ms);
                }
            }
            408 | 503 if matches!(self.login, Login::Greeting) => {
                self.error(BufferId::Server, Some(code), error, None, now_ms);
            }
            _ => {
                self.login = Login::Stuck;
                self.login_failed(&format!("login refused: {text}"), now_ms);
                if !self.is_lines() {
                    self.notice(BufferId::Server, "type /connect to try again", now_ms);
                }
            }
        }
    }

    pub(super) fn chat_message(&mut self, message: ChatMessage, arrival: Arrival) {
        match &message.target {
            Target::Room(room) => {
                let room = room.clone();
                if let Some(catch_up) = self.catch_ups.get_mut(&room) {
                    if message.id > catch_up.after {
                        catch_up.held.insert(message.id, message);
                    }
                    return;
                }
                self.show_room_message(message, arrival);
            }
            Target::User(_) => self.show_message(message, arrival),
        }
    }

    /// A room message, unless it was shown before.
    pub(super) fn show_room_message(&mut self, message: ChatMessage, arrival: Arrival) {
        let Target::Room(room) = &message.target else {
            return;
        };
        if self.last_shown(room).is_some_and(|last| message.id <= last) {
            return;
        }
        let room = room.clone();
        let id = message.id;
        self.show_message(message, arrival);
        self.shown(&room, id);
    }

    /// Puts a message in its buffer (opening a private one), counts it
    /// unread when that buffer is not shown, and prints it in line mode.
    pub(super) fn show_message(&mut self, message: ChatMessage, arrival: Arrival) {
        let is_replay = arrival == Arrival::Replay;
        let me = self.name.clone();
        let is_own = me.as_ref().is_some_and(|me| me.key() == message.from.key());
        let (id, title, room, to) = match &message.target {
            Target::Room(room) => (
                BufferId::Room(room.clone()),
                format!("#{room}"),
                Some(room.clone()),
                None,
            ),
            Target::User(to) => {
                let partner = if is_own { to } else { &message.from };
                (
                    BufferId::Dm(partner.key()),
                    partner.as_str().to_owned(),
                    None,
                    Some(to.clone()),
                )
            }
        };
        let (is_action, text) = split_action(&message.text);
        let is_mention =
            !is_own && (to.is_some() || me.as_ref().is_some_and(|me| mentions(&text, me.as_str())));
        let line = Line {
            time_ms: message.ts,
            kind: LineKind::Chat {
                id: message.id,
                from: message.from.clone(),
                to,
                room,
                text,
                is_action,
                is_mention,
                is_replay,
            },
        };
        let at = self.ensure_buffer(id.clone(), title);
        if is_replay {
            self.print(&line, &id);
            self.buffers[at].insert_message(line);
            return;
        }
        if self.buffers[at].has_message(message.id) {
            return;
        }
        if is_own {
            self.confirm(&message.target, &message.text);
        }
        self.print(&line, &id);
        let is_shown = at == self.current;
        let buffer = &mut self.buffers[at];
        buffer.insert_message(line);
        if !is_shown && !is_own && arrival == Arrival::Live {
            if buffer.unread == 0 {
                buffer.marker = Some(message.id);
            }
            buffer.unread += 1;
            if is_mention {
                buffer.mentions += 1;
            }
        }
    }

    fn connected(&mut self, user: Username, room: RoomName, now_ms: u64) {
        let is_me = self.name.as_ref().is_some_and(|me| me.key() == user.key());
        let at = if is_me {
            self.ensure_buffer(BufferId::Room(room.clone()), format!("#{room}"))
        } else {
            match self.buffer_index(&BufferId::Room(room.clone())) {
                Some(at) => at,
                None => return,
            }
        };
        if !self.known_rooms.contains(&room) {
            self.known_rooms.push(room.clone());
        }
        if is_me && !self.buffers[at].is_joined {
            let was_joined = self.buffers[at].was_joined;
            self.buffers[at].is_joined = true;
            self.buffers[at].was_joined = true;
            self.buffers[at].add_member(&user);
            self.backlog_expected = Some(room.clone());
            let after = self.last_shown(&room).or(was_joined.then_some(0));
            if let Some(after) = after {
                self.catch_ups.insert(
                    room.clone(),
                    CatchUp {
                        after,
                        held: Default::default(),
                        has_gap: false,
                        deadline: now_ms.saturating_add(CATCH_UP_TIMEOUT_MS),
                        retry_at: None,
                        resume_after: after,
                    },
                );
                self.ask_history(
                    room.clone(),
                    Some(after),
                    None,
                    HistoryPurpose::CatchUp,
                    None,
                );
            }
            let origin = Origin {
                buffer: BufferId::Room(room.clone()),
                command: None,
            };
            self.send(
                Outgoing::Who {
                    room: Some(room.clone()),
                },
                origin,
                Answer::Who(room.clone(), Shown::Silently),
            );
            let line = Line {
                time_ms: now_ms,
                kind: LineKind::Joined {
                    user,
                    room: room.clone(),
                },
            };
            self.add_line(BufferId::Room(room.clone()), line);
            let is_wanted = self.select_on_join.as_ref() == Some(&room);
            if is_wanted || self.buffers[self.current].id == BufferId::Server {
                self.select_on_join = None;
                self.select(at);
            }
            return;
        }
        if is_me {
            if self.select_on_join.as_ref() == Some(&room) {
                self.select_on_join = None;
                self.select(at);
            }
            return;
        }
        self.buffers[at].add_member(&user);
        let line = Line {
            time_ms: now_ms,
            kind: LineKind::Joined {
                user,
                room: room.clone(),
            },
        };
        self.add_line(BufferId::Room(room), line);
    }

    fn disconnected(&mut self, user: Username, room: Option<RoomName>, now_ms: u64) {
        let is_me = self.name.as_ref().is_some_and(|me| me.key() == user.key());
        match room {
            Some(room) if is_me => {
                let line = Line {
                    time_ms: now_ms,
                    kind: LineKind::Left {
                        user,
                        room: room.clone(),
                    },
                };
                self.print(&line, &BufferId::Room(room.clone()));
                self.buffers[0].push(line);
                self.forget_room(&room);
            }
            Some(room) => {
                let Some(at) = self.buffer_index(&BufferId::Room(room.clone())) else {
                    return;
                };
                self.buffers[at].remove_member(&user);
                let line = Line {
                    time_ms: now_ms,
                    kind: LineKind::Left {
                        user,
                        room: room.clone(),
                    },
                };
                self.add_line(BufferId::Room(room), line);
            }
            None => {
                let mut places: Vec<BufferId> = Vec::new();
                for buffer in &mut self.buffers {
                    let is_partner = buffer.id == BufferId::Dm(user.key());
                    if buffer.remove_member(&user) || is_partner {
                        places.push(buffer.id.clone());
                    }
                }
                let line = Line {
                    time_ms: now_ms,
                    kind: LineKind::Quit { user },
                };
                // Printed once, shown in every buffer it concerns.
                if let Some(first) = places.first() {
                    self.print(&line, &first.clone());
                }
                for place in places {
                    if let Some(at) = self.buffer_index(&place) {
                        self.buffers[at].push(line.clone());
                    }
                }
            }
        }
    }

    fn renamed(&mut self, old: Username, new: Username, now_ms: u64) {
        let line = Line {
            time_ms: now_ms,
            kind: LineKind::Renamed {
                old: old.clone(),
                new: new.clone(),
            },
        };
        let mut places = Vec::new();
        for buffer in &mut self.buffers {
            if let Some(member) = buffer
                .members
                .iter_mut()
                .find(|member| member.key() == old.key())
            {
                *member = new.clone();
                places.push(buffer.id.clone());
            }
            if buffer.id == BufferId::Dm(old.key()) {
                buffer.id = BufferId::Dm(new.key());
                buffer.title = new.as_str().to_owned();
                places.push(buffer.id.clone());
            }
        }
        if let Some(first) = places.first() {
            self.print(&line, &first.clone());
        }
        for place in places {
            if let Some(at) = self.buffer_index(&place) {
                self.buffers[at].push(line.clone());
            }
        }
    }

    fn users(
        &mut self,
        room: RoomName,
        users: Vec<Username>,
        more: bool,
        omitted: u64,
        reference: Option<&str>,
        now_ms: u64,
    ) {
        let pending = self.take_ref(reference).map(|pending| pending.answer);
        let shown = match self.who_answers.get(&room) {
            // A later chunk of an answer already under way.
            Some(shown) => *shown,
            None => match pending {
                Some(Answer::Who(_, shown)) => shown,
                Some(_) => Shown::Visibly,
                None if self.has_refs => Shown::Visibly,
                None => match self
                    .take_unref(|answer| matches!(answer, Answer::Who(asked, _) if *asked == room))
                {
                    Some(Answer::Who(_, shown)) => shown,
                    _ => Shown::Visibly,
                },
            },
        };
        let collected = self.who_collected.entry(room.clone()).or_default();
        collected.extend(users);
        if more {
            self.who_answers.insert(room, shown);
            return;
        }
        self.who_answers.remove(&room);
        let users = self.who_collected.remove(&room).unwrap_or_default();
        let at = self.buffer_index(&BufferId::Room(room.clone()));
        if let Some(at) = at {
            self.buffers[at].members = users.clone();
        }
        if shown == Shown::Visibly {
            let line = Line {
                time_ms: now_ms,
                kind: LineKind::Users {
                    room: room.clone(),
                    users,
                    omitted,
                },
            };
            let id = match at {
                Some(_) => BufferId::Room(room),
                None => self.buffers[self.current].id.clone(),
            };
            self.add_line(id, line);
        }
    }
}

/// How a message reaches a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// For the first time: counted unread, deduplicated.
    Live,
    /// The backlog of a room joined afresh: context, not counted unread.
    Context,
    /// Shown again on request (`/history N`).
    Replay,
}

/// A `/me ` text is an action, shown without the prefix.
pub(super) fn split_action(text: &str) -> (bool, String) {
    match text.strip_prefix("/me ") {
        Some(action) => (true, action.to_owned()),
        None => (false, text.to_owned()),
    }
}
