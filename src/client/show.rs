//! Putting lines in buffers: which buffer is shown, adding a line (and
//! printing it in line mode), notices and errors, and the last shown id
//! per room that `SavedState` keeps. Nothing here sends a request.

use super::buffer::{Buffer, BufferId, Line, LineKind};
use super::lines::{json_line, text_line};
use super::model::{Mode, Model};
use crate::proto::RoomName;

impl Model {
    // ---- buffers and lines ---------------------------------------------

    pub(super) fn buffer_index(&self, id: &BufferId) -> Option<usize> {
        self.buffers.iter().position(|buffer| &buffer.id == id)
    }

    pub(super) fn ensure_buffer(&mut self, id: BufferId, title: String) -> usize {
        match self.buffer_index(&id) {
            Some(at) => at,
            None => {
                self.buffers.push(Buffer::new(id, title));
                self.buffers.len() - 1
            }
        }
    }

    /// Shows buffer `at`: the one left loses its marker, the one shown its
    /// counts (its marker stays until it is left).
    pub(super) fn select(&mut self, at: usize) {
        if at >= self.buffers.len() || at == self.current {
            return;
        }
        self.buffers[self.current].marker = None;
        self.current = at;
        let buffer = &mut self.buffers[at];
        buffer.unread = 0;
        buffer.mentions = 0;
    }

    /// Adds a line to a buffer (the server buffer when `id` has none) and
    /// prints it in line mode.
    pub(super) fn add_line(&mut self, id: BufferId, line: Line) {
        let at = self.buffer_index(&id).unwrap_or(0);
        self.print(&line, &id);
        self.buffers[at].push(line);
    }

    pub(super) fn print(&mut self, line: &Line, id: &BufferId) {
        match self.settings.mode {
            Mode::Ui => {}
            Mode::Lines { json: false } => {
                let text = text_line(line, self.settings.tz_offset_secs);
                self.printed.push(text);
            }
            Mode::Lines { json: true } => self.printed.push(json_line(line, id)),
        }
    }

    pub(super) fn notice(&mut self, id: BufferId, text: &str, now_ms: u64) {
        let line = Line {
            time_ms: now_ms,
            kind: LineKind::Notice(text.to_owned()),
        };
        self.add_line(id, line);
    }

    pub(super) fn error(
        &mut self,
        id: BufferId,
        code: Option<u16>,
        text: &str,
        command: Option<String>,
        now_ms: u64,
    ) {
        let line = Line {
            time_ms: now_ms,
            kind: LineKind::Error {
                code,
                text: text.to_owned(),
                command,
            },
        };
        self.add_line(id, line);
    }

    /// Records that message `id` of `room` was shown.
    pub(super) fn shown(&mut self, room: &RoomName, id: u64) {
        let entry = self
            .saved
            .last_shown
            .entry(room.as_str().to_owned())
            .or_insert(0);
        if id > *entry {
            *entry = id;
            self.saved_changed = true;
        }
    }

    pub(super) fn last_shown(&self, room: &RoomName) -> Option<u64> {
        self.saved.last_shown.get(room.as_str()).copied()
    }

    pub(super) fn forget_room(&mut self, room: &RoomName) {
        if self.saved.last_shown.remove(room.as_str()).is_some() {
            self.saved_changed = true;
        }
        self.catch_ups.remove(room);
        if let Some(at) = self.buffer_index(&BufferId::Room(room.clone())) {
            self.buffers.remove(at);
            if self.current >= at && self.current > 0 {
                self.current -= 1;
            }
            self.current = self.current.min(self.buffers.len() - 1);
        }
    }
}
