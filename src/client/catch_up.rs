//! History answers (208): the catch-up after a (re)join, older pages for
//! scrollback, and `/history N`. Nothing here reads a key or draws.
//!
//! The catch-up rule: when our own 201 says we (re)joined room R (we were
//! not in it on this connection) and R has a last shown id L, riftc holds
//! every message of R with id > L that arrives (live 200s, the join
//! backlog, HISTORY answers) and sends HISTORY after L, asking again after
//! the last id of each answer that says `more`. When an answer says no
//! more, the held messages are shown in id order and L moves on. Messages
//! with id <= L are never shown again; a `gap` adds a notice to R. A room
//! rejoined after a drop that showed no message yet catches up from L = 0.
//! Then our own lines to R that no echo confirmed are sent again.
//!
//! Older pages: HISTORY has no `before`, so riftc asks for the last
//! (messages loaded + `OLDER_PAGE`) messages and keeps those older than
//! what it holds; an answer with nothing older, or shorter than asked
//! without `more`, or the server's cap of 1000 reached, marks the start.

use super::buffer::{BufferId, Line, LineKind};
use super::lines::mentions;
use super::model::{CATCH_UP_TIMEOUT_MS, HistoryPurpose, Login, Model};
use super::receive::{Arrival, split_action};
use crate::proto::{ChatMessage, RoomName};

/// Largest answer one HISTORY may bring (the server's cap).
const HISTORY_CAP: u64 = 1000;
/// Messages per older page.
pub(super) const OLDER_PAGE: u64 = 100;

impl Model {
    pub(super) fn backlog(
        &mut self,
        room: RoomName,
        messages: Vec<ChatMessage>,
        more: bool,
        gap: bool,
        purpose: Option<HistoryPurpose>,
        now_ms: u64,
    ) {
        match purpose {
            // The join backlog: held if a catch-up runs, else context.
            None => {
                for message in messages {
                    self.chat_message(message, Arrival::Context);
                }
            }
            Some(HistoryPurpose::CatchUp) => {
                let Some(catch_up) = self.catch_ups.get_mut(&room) else {
                    for message in messages {
                        self.chat_message(message, Arrival::Live);
                    }
                    return;
                };
                catch_up.has_gap |= gap;
                catch_up.deadline = now_ms.saturating_add(CATCH_UP_TIMEOUT_MS);
                let last = messages.last().map(|message| message.id);
                for message in messages {
                    if message.id > catch_up.after {
                        catch_up.held.insert(message.id, message);
                    }
                }
                if more {
                    let after = last.unwrap_or(catch_up.resume_after);
                    catch_up.resume_after = after;
                    self.ask_history(room, Some(after), None, HistoryPurpose::CatchUp, None);
                } else {
                    self.finish_catch_up(&room, None, now_ms);
                }
            }
            Some(HistoryPurpose::Older { asked }) => {
                let Some(at) = self.buffer_index(&BufferId::Room(room.clone())) else {
                    return;
                };
                let oldest = self.buffers[at].oldest_id();
                let got = messages.len() as u64;
                let mut added = 0;
                for message in messages {
                    if oldest.is_some_and(|oldest| message.id < oldest)
                        || self
                            .last_shown(&room)
                            .is_some_and(|last| message.id <= last)
                        || oldest.is_none()
                    {
                        let (is_action, text) = split_action(&message.text);
                        let line = Line {
                            time_ms: message.ts,
                            kind: LineKind::Chat {
                                id: message.id,
                                from: message.from.clone(),
                                to: None,
                                room: Some(room.clone()),
                                is_mention: self
                                    .name
                                    .as_ref()
                                    .is_some_and(|me| mentions(&text, me.as_str())),
                                text,
                                is_action,
                                is_replay: false,
                            },
                        };
                        if self.buffers[at].insert_message(line) {
                            added += 1;
                        }
                    }
                }
                let buffer = &mut self.buffers[at];
                buffer.is_loading_older = false;
                if added == 0 || (got < asked && !more) || asked >= HISTORY_CAP {
                    buffer.at_history_start = true;
                }
            }
            Some(HistoryPurpose::Show) => {
                if gap {
                    self.add_line(
                        BufferId::Room(room.clone()),
                        Line {
                            time_ms: now_ms,
                            kind: LineKind::Gap { room: room.clone() },
                        },
                    );
                }
                for message in messages {
                    self.show_message(message, Arrival::Replay);
                }
            }
        }
    }

    /// Shows what a catch-up holds, in id order, and ends it.
    pub(super) fn finish_catch_up(&mut self, room: &RoomName, problem: Option<&str>, now_ms: u64) {
        let Some(catch_up) = self.catch_ups.remove(room) else {
            return;
        };
        let id = BufferId::Room(room.clone());
        if catch_up.has_gap {
            let line = Line {
                time_ms: now_ms,
                kind: LineKind::Gap { room: room.clone() },
            };
            self.add_line(id.clone(), line);
        }
        if let Some(problem) = problem {
            self.error(id, None, problem, None, now_ms);
        }
        for (_, message) in catch_up.held {
            self.show_room_message(message, Arrival::Live);
        }
        self.resend_unconfirmed(room);
    }

    /// The next older page of the shown room, when scrolled past the top.
    pub(super) fn load_older(&mut self) {
        let buffer = &self.buffers[self.current];
        let Some(room) = buffer.room().cloned() else {
            return;
        };
        if buffer.at_history_start
            || buffer.is_loading_older
            || !buffer.is_joined
            || self.login != Login::Ready
        {
            return;
        }
        let asked = (buffer.message_count() as u64)
            .saturating_add(OLDER_PAGE)
            .min(HISTORY_CAP);
        self.buffers[self.current].is_loading_older = true;
        self.ask_history(
            room,
            None,
            Some(asked),
            HistoryPurpose::Older { asked },
            None,
        );
    }
}
