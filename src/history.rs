//! Room history in memory: the newest `history_keep` messages of each room,
//! answers for the backlog on join and for HISTORY, and the records not yet
//! written to disk. Pure: the journal file is `server/journal.rs`'s job.

use crate::proto::{ChatMessage, RoomName, Target, backlog_entry_bytes};
use std::collections::{HashMap, VecDeque};

/// Most messages one HISTORY answer (208) carries.
pub const MAX_HISTORY_REPLY: usize = 1000;
/// Most bytes of messages one 208 carries, counted as encoded on the wire
/// (`backlog_entry_bytes`: JSON escaping or text rendering, whichever is
/// longer). The hub lowers it further to a share of `max_output_bytes`, so
/// a reply never trips the slow-consumer cap on its own; a longer answer is
/// cut and says `more`.
pub const MAX_HISTORY_REPLY_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct History {
    /// Messages kept per room, oldest first, ids increasing.
    rooms: HashMap<RoomName, VecDeque<ChatMessage>>,
    /// Per room, the highest id ever dropped from its kept window (or, after
    /// a restart, that may have been dropped before it): an `after` below it
    /// has lost messages, an `after` at or above it has not. Kept apart from
    /// `rooms` so it outlives a room whose whole history is dropped.
    dropped_up_to: HashMap<RoomName, u64>,
    keep: usize,
    /// Recorded since the shell last took them for the journal.
    unwritten: Vec<ChatMessage>,
}

/// One answer: the messages (oldest first), whether more were left out, and
/// whether messages between the asked-for `after` and the first one here
/// are gone from the kept history.
#[derive(Debug, PartialEq, Eq)]
pub struct Slice {
    pub messages: Vec<ChatMessage>,
    pub more: bool,
    pub gap: bool,
}

/// Raises a room's "dropped up to" marker to `id`.
fn note_dropped(dropped_up_to: &mut HashMap<RoomName, u64>, room: &RoomName, id: u64) {
    let marker = dropped_up_to.entry(room.clone()).or_insert(id);
    *marker = (*marker).max(id);
}

impl History {
    pub fn new(keep: usize) -> History {
        History {
            rooms: HashMap::new(),
            dropped_up_to: HashMap::new(),
            keep: keep.max(1),
            unwritten: Vec::new(),
        }
    }

    pub fn set_keep(&mut self, keep: usize) {
        self.keep = keep.max(1);
        for (room, messages) in &mut self.rooms {
            while messages.len() > self.keep {
                if let Some(dropped) = messages.pop_front() {
                    note_dropped(&mut self.dropped_up_to, room, dropped.id);
                }
            }
        }
    }

    fn remember(&mut self, message: ChatMessage) {
        let Target::Room(room) = &message.target else {
            // Private messages are never history.
            return;
        };
        let room = room.clone();
        let messages = self.rooms.entry(room.clone()).or_default();
        if messages.back().is_some_and(|last| last.id >= message.id) {
            // Replay of an older or duplicate record: keep ids increasing.
            return;
        }
        messages.push_back(message);
        if messages.len() > self.keep
            && let Some(dropped) = messages.pop_front()
        {
            note_dropped(&mut self.dropped_up_to, &room, dropped.id);
        }
    }

    /// A message read back from the journal at start. The journal does not
    /// say what a compaction dropped, so a room it fills to `keep` is taken
    /// to have lost what came before its oldest kept message (a gap may be
    /// reported that was not one; a real one is never hidden).
    pub fn restore(&mut self, message: ChatMessage) {
        let room = match &message.target {
            Target::Room(room) => room.clone(),
            Target::User(_) => return,
        };
        self.remember(message);
        if let Some(messages) = self.rooms.get(&room)
            && messages.len() >= self.keep
            && let Some(oldest) = messages.front()
        {
            note_dropped(&mut self.dropped_up_to, &room, oldest.id.saturating_sub(1));
        }
    }

    /// A new room message: kept, and queued for the journal.
    pub fn record(&mut self, message: &ChatMessage) {
        if matches!(message.target, Target::Room(_)) {
            self.unwritten.push(message.clone());
            self.remember(message.clone());
        }
    }

    /// Records not yet handed to the journal, oldest first.
    pub fn take_unwritten(&mut self) -> Vec<ChatMessage> {
        std::mem::take(&mut self.unwritten)
    }

    /// The last `count` messages of a room, as many as fit in `budget`
    /// bytes as encoded on the wire (`backlog_entry_bytes`); `more` when
    /// older ones were left out. `gap` is never set: the newest messages
    /// continue nothing the client asked for.
    pub fn last(&self, room: &RoomName, count: usize, budget: usize) -> Slice {
        let Some(messages) = self.rooms.get(room) else {
            return Slice {
                messages: Vec::new(),
                more: false,
                gap: false,
            };
        };
        let count = count.min(MAX_HISTORY_REPLY);
        let start = messages.len().saturating_sub(count);
        // Walk back from the newest while the byte budget lasts.
        let mut budget = budget.min(MAX_HISTORY_REPLY_BYTES);
        let mut first = messages.len();
        while first > start {
            let size = backlog_entry_bytes(&messages[first - 1]);
            if size > budget {
                break;
            }
            budget -= size;
            first -= 1;
        }
        Slice {
            messages: messages.range(first..).cloned().collect(),
            more: first > 0,
            gap: false,
        }
    }

    /// Messages of a room with an id above `after`, oldest first, at most
    /// `limit` and as many as fit in `budget` encoded bytes; `more` when
    /// newer ones were left out, `gap` when some with an id above `after`
    /// were dropped from the kept history (the answer does not start right
    /// after `after`). Ids are global, so the gap is judged by what the room
    /// dropped, never by `after + 1`.
    pub fn after(&self, room: &RoomName, after: u64, limit: usize, budget: usize) -> Slice {
        let gap = self
            .dropped_up_to
            .get(room)
            .is_some_and(|&dropped| after < dropped);
        let Some(messages) = self.rooms.get(room) else {
            return Slice {
                messages: Vec::new(),
                more: false,
                gap,
            };
        };
        let limit = limit.min(MAX_HISTORY_REPLY);
        let start = messages.partition_point(|message| message.id <= after);
        let mut budget = budget.min(MAX_HISTORY_REPLY_BYTES);
        let mut taken = Vec::new();
        for message in messages.range(start..) {
            let size = backlog_entry_bytes(message);
            if taken.len() == limit || size > budget {
                break;
            }
            budget -= size;
            taken.push(message.clone());
        }
        let more = start + taken.len() < messages.len();
        Slice {
            messages: taken,
            more,
            gap,
        }
    }

    /// Every kept message, in id order (for compacting the journal).
    pub fn all(&self) -> Vec<&ChatMessage> {
        let mut all: Vec<&ChatMessage> = self.rooms.values().flatten().collect();
        all.sort_unstable_by_key(|message| message.id);
        all
    }

    /// How many messages are kept in all.
    pub fn len(&self) -> usize {
        self.rooms.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest id kept, for continuing ids after a restart.
    pub fn max_id(&self) -> Option<u64> {
        self.rooms
            .values()
            .filter_map(|messages| messages.back())
            .map(|message| message.id)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Username;

    fn message(id: u64, room: &str, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            ts: id * 10,
            target: Target::Room(RoomName::parse(room).unwrap()),
            from: Username::parse("alice").unwrap(),
            text: text.to_owned(),
        }
    }

    fn ids(slice: &Slice) -> Vec<u64> {
        slice.messages.iter().map(|message| message.id).collect()
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    /// A byte budget that never binds.
    const ANY: usize = usize::MAX;

    #[test]
    fn each_room_keeps_its_newest_messages() {
        let mut history = History::new(3);
        for id in 1..=5 {
            history.record(&message(id, "a", "x"));
        }
        history.record(&message(6, "b", "y"));
        assert_eq!(ids(&history.last(&room("a"), 10, ANY)), vec![3, 4, 5]);
        assert_eq!(ids(&history.last(&room("b"), 10, ANY)), vec![6]);
        assert_eq!(history.len(), 4);
        assert_eq!(history.max_id(), Some(6));
        assert_eq!(
            history.all().iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
    }

    #[test]
    fn private_messages_are_never_kept() {
        let mut history = History::new(10);
        let dm = ChatMessage {
            target: Target::User(Username::parse("bob").unwrap()),
            ..message(1, "a", "psst")
        };
        history.record(&dm);
        assert!(history.is_empty());
        assert!(history.take_unwritten().is_empty());
    }

    #[test]
    fn after_returns_newer_messages_with_a_limit_and_says_more() {
        let mut history = History::new(100);
        for id in 1..=10 {
            history.record(&message(id, "a", "x"));
        }
        let slice = history.after(&room("a"), 4, 3, ANY);
        assert_eq!(ids(&slice), vec![5, 6, 7]);
        assert!(slice.more);
        let slice = history.after(&room("a"), 7, 100, ANY);
        assert_eq!(ids(&slice), vec![8, 9, 10]);
        assert!(!slice.more);
        assert_eq!(
            ids(&history.after(&room("a"), 10, 5, ANY)),
            Vec::<u64>::new()
        );
        assert_eq!(
            ids(&history.after(&room("zzz"), 0, 5, ANY)),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn last_is_capped_in_count_and_bytes() {
        let mut history = History::new(5000);
        for id in 1..=1500 {
            history.record(&message(id, "a", "x"));
        }
        let slice = history.last(&room("a"), 5000, ANY);
        assert_eq!(slice.messages.len(), MAX_HISTORY_REPLY);
        assert_eq!(slice.messages.last().unwrap().id, 1500);
        assert!(slice.more);

        let mut big = History::new(500);
        let text = "y".repeat(4096);
        for id in 1..=100 {
            big.record(&message(id, "a", &text));
        }
        let slice = big.last(&room("a"), 100, ANY);
        let entry = backlog_entry_bytes(&message(1, "a", &text));
        assert!(entry > 4096, "{entry}");
        assert_eq!(slice.messages.len(), MAX_HISTORY_REPLY_BYTES / entry);
        assert_eq!(slice.messages.last().unwrap().id, 100);
        assert!(slice.more);
    }

    #[test]
    fn recorded_messages_wait_for_the_journal_once() {
        let mut history = History::new(10);
        history.record(&message(1, "a", "x"));
        history.restore(message(0, "a", "old"));
        assert_eq!(history.take_unwritten().len(), 1);
        assert!(history.take_unwritten().is_empty());
    }

    #[test]
    fn replayed_duplicates_and_older_ids_are_ignored() {
        let mut history = History::new(10);
        history.restore(message(5, "a", "x"));
        history.restore(message(5, "a", "x"));
        history.restore(message(3, "a", "x"));
        assert_eq!(ids(&history.last(&room("a"), 10, ANY)), vec![5]);
    }

    #[test]
    fn issue_11_the_byte_budget_counts_json_escaping_not_raw_text() {
        // 4096 × \x01 is 4096 bytes of text but 24576 bytes of JSON.
        let mut history = History::new(100);
        let text = "\u{1}".repeat(4096);
        for id in 1..=50 {
            history.record(&message(id, "a", &text));
        }
        let entry = backlog_entry_bytes(&message(1, "a", &text));
        assert!(entry > 6 * 4096, "{entry}");
        let slice = history.last(&room("a"), 50, 65_536);
        assert_eq!(slice.messages.len(), 65_536 / entry);
        assert!(slice.more);
        let encoded: usize = slice.messages.iter().map(backlog_entry_bytes).sum();
        assert!(encoded <= 65_536, "{encoded}");
        let slice = history.after(&room("a"), 10, 50, 65_536);
        assert_eq!(
            ids(&slice),
            (11..11 + (65_536 / entry) as u64).collect::<Vec<_>>()
        );
        assert!(slice.more);
    }

    #[test]
    fn a_budget_smaller_than_one_message_answers_nothing_and_says_more() {
        let mut history = History::new(10);
        history.record(&message(1, "a", "hello"));
        let slice = history.last(&room("a"), 10, 10);
        assert!(slice.messages.is_empty());
        assert!(slice.more);
        let slice = history.after(&room("a"), 0, 10, 10);
        assert!(slice.messages.is_empty());
        assert!(slice.more);
    }

    #[test]
    fn issue_11_after_an_id_older_than_the_kept_window_says_gap() {
        let mut history = History::new(3);
        // Ids are global: this room gets every third one.
        for id in [3, 6, 9, 12, 15] {
            history.record(&message(id, "a", "x"));
        }
        history.record(&message(16, "b", "y"));
        // 3 and 6 were dropped; 9, 12, 15 are kept.
        let slice = history.after(&room("a"), 3, 10, ANY);
        assert_eq!(ids(&slice), vec![9, 12, 15]);
        assert!(slice.gap, "6 is gone");
        // After 6 (or after 7 or 8, ids of other rooms) nothing is missing.
        for after in [6, 7, 8, 12] {
            assert!(!history.after(&room("a"), after, 10, ANY).gap, "{after}");
        }
        assert!(history.after(&room("a"), 0, 10, ANY).gap);
        // A room that never dropped anything has no gap, whatever `after`.
        assert!(!history.after(&room("b"), 0, 10, ANY).gap);
        // The newest messages never claim a gap.
        assert!(!history.last(&room("a"), 1, ANY).gap);
    }

    #[test]
    fn a_smaller_keep_on_reload_counts_as_dropped() {
        let mut history = History::new(10);
        for id in 1..=5 {
            history.record(&message(id, "a", "x"));
        }
        assert!(!history.after(&room("a"), 1, 10, ANY).gap);
        history.set_keep(2);
        let slice = history.after(&room("a"), 1, 10, ANY);
        assert_eq!(ids(&slice), vec![4, 5]);
        assert!(slice.gap);
        assert!(!history.after(&room("a"), 3, 10, ANY).gap);
    }

    #[test]
    fn a_room_restored_full_may_have_lost_what_came_before_it() {
        // A compacted journal holds only the kept window: what it dropped
        // is unknown, so a full room reports a gap below its oldest message.
        let mut full = History::new(2);
        full.restore(message(7, "a", "x"));
        full.restore(message(9, "a", "x"));
        assert!(full.after(&room("a"), 5, 10, ANY).gap);
        assert!(!full.after(&room("a"), 6, 10, ANY).gap);
        let mut partial = History::new(3);
        partial.restore(message(7, "a", "x"));
        partial.restore(message(9, "a", "x"));
        assert!(!partial.after(&room("a"), 0, 10, ANY).gap);
    }
}
