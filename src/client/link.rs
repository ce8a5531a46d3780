//! The connection's life in the `Model`: retries with backoff (each to the
//! next server of the list), what one connection knows (forgotten at a
//! drop), the login steps and refusals (our own name waited for at a
//! reconnect),
//! what happens once logged in (rejoin, queued input, lost lines), and
//! line mode's end (the last PING, then QUIT). Nothing here parses a frame
//! or reads a key.

use super::buffer::BufferId;
use super::model::{
    Answer, CATCH_UP_TIMEOUT_MS, Link, Login, MAX_BACKOFF_MS, MIN_BACKOFF_MS, Model, NAME_RETRY_MS,
    NAME_WAIT_MS, Origin, Unconfirmed,
};
use crate::proto::{Outgoing, RoomName, Target, Username};
use std::collections::VecDeque;

impl Model {
    pub(super) fn schedule_retry(&mut self, text: &str, now_ms: u64) {
        if self.exit.is_some() {
            return;
        }
        let wait = self.backoff_ms;
        self.retry_at = Some(now_ms.saturating_add(wait));
        self.backoff_ms = wait.saturating_mul(2).min(MAX_BACKOFF_MS);
        self.link_note = format!("reconnecting in {} s", wait / 1000);
        // With several servers, say which one comes next.
        let to = match self.has_several_servers() {
            false => String::new(),
            true => format!(" to {}", self.server()),
        };
        self.notice(
            BufferId::Server,
            &format!("{text}; reconnecting{to} in {} s", wait / 1000),
            now_ms,
        );
    }

    /// Forgets what belongs to one connection.
    pub(super) fn reset_connection_state(&mut self) {
        self.refs.clear();
        self.unref_answers.clear();
        self.backlog_expected = None;
        self.catch_ups.clear();
        self.who_answers.clear();
        self.who_collected.clear();
        self.room_list.clear();
        self.has_refs = false;
        for buffer in &mut self.buffers {
            buffer.is_joined = false;
            buffer.is_loading_older = false;
        }
    }

    /// Sends USER for the name we have, or asks for one.
    pub(super) fn start_login(&mut self, now_ms: u64) {
        match self.name.clone() {
            Some(name) => {
                self.login = Login::SentUser(name.clone());
                self.send_plain(Outgoing::User { username: name });
            }
            None if self.is_lines() => {
                self.fail(2, "line mode needs a name: give --user NAME", now_ms);
            }
            None => {
                self.login = Login::AskingName;
                self.notice(BufferId::Server, "choose a name and press Enter", now_ms);
            }
        }
    }

    pub(super) fn send_pass(&mut self, name: Username, now_ms: u64) {
        match self.password.clone() {
            Some(password) => {
                self.login = Login::SentPass(name);
                self.send_plain(Outgoing::Pass { password });
            }
            None => {
                self.login = Login::AskingPassword(name);
                if !self.is_lines() {
                    self.notice(
                        BufferId::Server,
                        "password needed: type it and press Enter",
                        now_ms,
                    );
                }
            }
        }
    }

    /// A login refusal: final in line mode; the UI asks again or waits.
    pub(super) fn login_failed(&mut self, text: &str, now_ms: u64) {
        if self.is_lines() {
            self.fail(1, text, now_ms);
        } else {
            self.error(BufferId::Server, None, text, None, now_ms);
        }
    }

    /// A 409 for the name our last session held, at a reconnect: that
    /// session may live on a node that died, until the cluster frees its
    /// name (`NAME_TTL`, 10 s).
    pub(super) fn is_own_name_refused(&self) -> bool {
        let (Login::SentUser(asked) | Login::SentPass(asked)) = &self.login else {
            return false;
        };
        self.held_name
            .as_ref()
            .is_some_and(|held| held.key() == asked.key())
    }

    /// Sends USER again for our own name after `NAME_RETRY_MS`, until
    /// `NAME_WAIT_MS` after the first such refusal; says so once.
    pub(super) fn wait_for_name(&mut self, refusal: &str, now_ms: u64) {
        let (Login::SentUser(name) | Login::SentPass(name)) = self.login.clone() else {
            return;
        };
        let until = match self.name_wait_until {
            Some(until) => until,
            None => {
                let until = now_ms.saturating_add(NAME_WAIT_MS);
                self.name_wait_until = Some(until);
                let text = format!(
                    "{refusal}: waiting for your name to be released (up to {} s)",
                    NAME_WAIT_MS / 1000
                );
                self.notice(BufferId::Server, &text, now_ms);
                until
            }
        };
        self.login = Login::WaitingName {
            name,
            retry_at: now_ms.saturating_add(NAME_RETRY_MS).min(until),
        };
    }

    /// The wait for our own name is over (or was never started): a 409
    /// from now on is someone else's name.
    pub(super) fn stop_waiting_for_name(&mut self) {
        self.held_name = None;
        self.name_wait_until = None;
    }

    /// Ends the process with `code` after saying why.
    pub(super) fn fail(&mut self, code: i32, text: &str, now_ms: u64) {
        self.error(BufferId::Server, None, text, None, now_ms);
        if self.exit.is_none() {
            self.exit = Some(code);
        }
    }

    /// The login succeeded: rejoin every room buffer, flush queued input.
    pub(super) fn logged_in(&mut self, name: Username, now_ms: u64) {
        self.login = Login::Ready;
        self.held_name = Some(name.clone());
        self.name_wait_until = None;
        self.name = Some(name);
        self.backoff_ms = MIN_BACKOFF_MS;
        self.link_note = "connected".to_owned();
        self.next_lag_at = now_ms;
        let rooms: Vec<RoomName> = self
            .buffers
            .iter()
            .filter_map(|buffer| buffer.room().cloned())
            .collect();
        for room in rooms {
            self.send_plain(Outgoing::Join { room });
        }
        let dms: Vec<BufferId> = self
            .buffers
            .iter()
            .filter(|buffer| matches!(buffer.id, BufferId::Dm(_)) && !buffer.lines.is_empty())
            .map(|buffer| buffer.id.clone())
            .collect();
        for dm in dms {
            self.notice(
                dm,
                "private messages are not stored by the server: any sent to you while you were disconnected are lost",
                now_ms,
            );
        }
        let mut kept = VecDeque::new();
        for line in std::mem::take(&mut self.unconfirmed) {
            match &line.target {
                Target::User(to) => {
                    let text = format!(
                        "this private message may not have been delivered: {}",
                        line.text
                    );
                    self.ensure_buffer(BufferId::Dm(to.key()), to.as_str().to_owned());
                    self.notice(BufferId::Dm(to.key()), &text, now_ms);
                }
                Target::Room(_) => kept.push_back(line),
            }
        }
        self.unconfirmed = kept;
        self.logged_in_at = now_ms;
        for line in std::mem::take(&mut self.queued_input) {
            self.handle_input_line(&line, now_ms);
        }
        self.settle(now_ms);
    }

    /// Line mode, input ended: once every room is back and caught up (or
    /// the wait for it is over), a PING whose PONG ends the run.
    pub(super) fn settle(&mut self, now_ms: u64) {
        if !self.input_ended
            || self.end_token.is_some()
            || self.link != Link::Up
            || self.login != Login::Ready
            || !self.queued_input.is_empty()
            || !self.catch_ups.is_empty()
        {
            return;
        }
        let all_joined = self
            .buffers
            .iter()
            .all(|buffer| buffer.room().is_none() || buffer.is_joined);
        if all_joined || now_ms >= self.logged_in_at.saturating_add(CATCH_UP_TIMEOUT_MS) {
            self.send_end_ping();
        }
    }

    /// Our own message came back: it was not lost.
    pub(super) fn confirm(&mut self, target: &Target, text: &str) {
        if let Some(at) = self
            .unconfirmed
            .iter()
            .position(|line| &line.target == target && line.text == text)
        {
            self.unconfirmed.remove(at);
        }
    }

    /// Sends again the lines to `room` that no echo confirmed.
    pub(super) fn resend_unconfirmed(&mut self, room: &RoomName) {
        let target = Target::Room(room.clone());
        let (again, kept): (VecDeque<Unconfirmed>, VecDeque<Unconfirmed>) =
            std::mem::take(&mut self.unconfirmed)
                .into_iter()
                .partition(|line| line.target == target);
        self.unconfirmed = kept;
        for line in again {
            let origin = Origin {
                buffer: BufferId::Room(room.clone()),
                command: None,
            };
            let request = Outgoing::Say {
                text: line.text,
                room: Some(room.clone()),
            };
            self.send(request, origin, Answer::Nothing);
        }
    }

    pub(super) fn send_end_ping(&mut self) {
        let token = self.token("end");
        self.end_token = Some(token.clone());
        self.send_plain(Outgoing::Ping { token: Some(token) });
    }

    pub(super) fn token(&mut self, kind: &str) -> String {
        let token = format!("{kind}-{}", self.next_token);
        self.next_token += 1;
        token
    }
}
