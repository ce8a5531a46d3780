//! Buffers: the server buffer, one per room and one per private
//! conversation, each a list of `Line`s kept in message-id order with the
//! ids it holds (so nothing shows twice), its unread and mention counts, the
//! first-unread marker, its member list and its scroll position. Nothing
//! here sends a request or renders a line.

use crate::proto::{NameKey, RoomName, Username};
use std::collections::BTreeSet;

/// Which buffer: the server's notices, a room, or a private conversation
/// (keyed by the partner's case-folded name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum BufferId {
    Server,
    Room(RoomName),
    Dm(NameKey),
}

/// What one line of a buffer says. Text from peers is kept raw and escaped
/// when rendered (`lines::escape`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    Chat {
        id: u64,
        from: Username,
        /// `None` for a room message; the recipient of a private one.
        to: Option<Username>,
        room: Option<RoomName>,
        text: String,
        /// The text started with `/me ` (shown without it).
        is_action: bool,
        /// It names you (or is a private message to you).
        is_mention: bool,
        /// Shown again on request (`/history` in line mode).
        is_replay: bool,
    },
    Joined {
        user: Username,
        room: RoomName,
    },
    Left {
        user: Username,
        room: RoomName,
    },
    Quit {
        user: Username,
    },
    Renamed {
        old: Username,
        new: Username,
    },
    YouAre(Username),
    Users {
        room: RoomName,
        users: Vec<Username>,
        omitted: u64,
    },
    Rooms {
        rooms: Vec<(RoomName, u64)>,
        omitted: u64,
    },
    /// Messages of this room were lost: the server no longer keeps them.
    Gap {
        room: RoomName,
    },
    Notice(String),
    /// `code` is the server's error code (`None` for riftc's own errors);
    /// `command` is what was typed, when the error is known to answer it.
    Error {
        code: Option<u16>,
        text: String,
        command: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Unix milliseconds: the message's `ts`, or when riftc learned of it.
    pub time_ms: u64,
    pub kind: LineKind,
}

impl Line {
    pub fn chat_id(&self) -> Option<u64> {
        match self.kind {
            LineKind::Chat { id, .. } => Some(id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Buffer {
    pub id: BufferId,
    /// `riftd`, `#lobby`, or the partner's name as they spell it.
    pub title: String,
    pub lines: Vec<Line>,
    ids: BTreeSet<u64>,
    pub unread: usize,
    pub mentions: usize,
    /// Id of the first message that arrived unseen; cleared when the
    /// buffer is left.
    pub marker: Option<u64>,
    /// Room members in join order.
    pub members: Vec<Username>,
    /// Lines scrolled up from the bottom.
    pub scroll: usize,
    /// The server has us in this room (a room buffer outlives a drop).
    pub is_joined: bool,
    /// We were in this room before on this run: a rejoin catches up from
    /// the start of its kept history if no message was shown yet.
    pub was_joined: bool,
    /// No older messages can be loaded.
    pub at_history_start: bool,
    /// An older page was asked for and has not come.
    pub is_loading_older: bool,
}

impl Buffer {
    pub fn new(id: BufferId, title: String) -> Buffer {
        Buffer {
            id,
            title,
            lines: Vec::new(),
            ids: BTreeSet::new(),
            unread: 0,
            mentions: 0,
            marker: None,
            members: Vec::new(),
            scroll: 0,
            is_joined: false,
            was_joined: false,
            at_history_start: false,
            is_loading_older: false,
        }
    }

    pub fn room(&self) -> Option<&RoomName> {
        match &self.id {
            BufferId::Room(room) => Some(room),
            _ => None,
        }
    }

    pub fn has_message(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// Oldest message id held.
    pub fn oldest_id(&self) -> Option<u64> {
        self.ids.first().copied()
    }

    pub fn message_count(&self) -> usize {
        self.ids.len()
    }

    /// Appends a line; a view scrolled up stays where it is.
    pub fn push(&mut self, line: Line) {
        if let Some(id) = line.chat_id() {
            self.ids.insert(id);
        }
        self.lines.push(line);
        if self.scroll > 0 {
            self.scroll += 1;
        }
    }

    /// Puts a message line where its id belongs (before the first message
    /// with a greater id), unless the buffer already holds that id. True
    /// when added.
    pub fn insert_message(&mut self, line: Line) -> bool {
        let Some(id) = line.chat_id() else {
            self.push(line);
            return true;
        };
        if !self.ids.insert(id) {
            return false;
        }
        match self
            .lines
            .iter()
            .position(|line| line.chat_id().is_some_and(|other| other > id))
        {
            Some(at) => self.lines.insert(at, line),
            None => {
                self.lines.push(line);
                if self.scroll > 0 {
                    self.scroll += 1;
                }
            }
        }
        true
    }

    pub fn add_member(&mut self, user: &Username) {
        if !self.members.iter().any(|member| member.key() == user.key()) {
            self.members.push(user.clone());
        }
    }

    /// True when the user was a member.
    pub fn remove_member(&mut self, user: &Username) -> bool {
        let before = self.members.len();
        self.members.retain(|member| member.key() != user.key());
        self.members.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(id: u64) -> Line {
        Line {
            time_ms: id,
            kind: LineKind::Chat {
                id,
                from: Username::parse("a").unwrap(),
                to: None,
                room: None,
                text: format!("m{id}"),
                is_action: false,
                is_mention: false,
                is_replay: false,
            },
        }
    }

    #[test]
    fn messages_go_in_id_order_once() {
        let mut buffer = Buffer::new(BufferId::Server, "x".into());
        assert!(buffer.insert_message(chat(5)));
        assert!(buffer.insert_message(chat(9)));
        assert!(buffer.insert_message(chat(2)));
        assert!(buffer.insert_message(chat(7)));
        assert!(!buffer.insert_message(chat(7)));
        let ids: Vec<u64> = buffer.lines.iter().filter_map(Line::chat_id).collect();
        assert_eq!(ids, [2, 5, 7, 9]);
        assert_eq!(buffer.oldest_id(), Some(2));
        assert_eq!(buffer.message_count(), 4);
    }

    #[test]
    fn a_view_scrolled_up_stays_put_when_lines_arrive() {
        let mut buffer = Buffer::new(BufferId::Server, "x".into());
        buffer.insert_message(chat(5));
        buffer.scroll = 1;
        buffer.insert_message(chat(6));
        assert_eq!(buffer.scroll, 2);
        buffer.insert_message(chat(1));
        assert_eq!(buffer.scroll, 2);
    }
}
