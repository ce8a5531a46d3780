//! Room history in memory: the newest `history_keep` messages of each room,
//! answers for the backlog on join and for HISTORY, and the records not yet
//! written to disk. Pure: the journal file is `server/journal.rs`'s job.

use crate::proto::{ChatMessage, RoomName, Target};
use std::collections::{HashMap, VecDeque};

/// Most messages one HISTORY answer (208) carries.
pub const MAX_HISTORY_REPLY: usize = 1000;
/// Most bytes of message text one 208 carries, so a reply never trips the
/// slow-consumer cap on its own; a longer answer is cut and says `more`.
pub const MAX_HISTORY_REPLY_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct History {
    /// Messages kept per room, oldest first, ids increasing.
    rooms: HashMap<RoomName, VecDeque<ChatMessage>>,
    keep: usize,
    /// Recorded since the shell last took them for the journal.
    unwritten: Vec<ChatMessage>,
}

/// One answer: the messages (oldest first) and whether more were left out.
#[derive(Debug, PartialEq, Eq)]
pub struct Slice {
    pub messages: Vec<ChatMessage>,
    pub more: bool,
}

impl History {
    pub fn new(keep: usize) -> History {
        History {
            rooms: HashMap::new(),
            keep: keep.max(1),
            unwritten: Vec::new(),
        }
    }

    pub fn set_keep(&mut self, keep: usize) {
        self.keep = keep.max(1);
        for messages in self.rooms.values_mut() {
            while messages.len() > self.keep {
                messages.pop_front();
            }
        }
    }

    fn remember(&mut self, message: ChatMessage) {
        let Target::Room(room) = &message.target else {
            // Private messages are never history.
            return;
        };
        let messages = self.rooms.entry(room.clone()).or_default();
        if messages.back().is_some_and(|last| last.id >= message.id) {
            // Replay of an older or duplicate record: keep ids increasing.
            return;
        }
        messages.push_back(message);
        if messages.len() > self.keep {
            messages.pop_front();
        }
    }

    /// A message read back from the journal at start.
    pub fn restore(&mut self, message: ChatMessage) {
        self.remember(message);
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

    /// The last `count` messages of a room.
    pub fn last(&self, room: &RoomName, count: usize) -> Slice {
        let Some(messages) = self.rooms.get(room) else {
            return Slice {
                messages: Vec::new(),
                more: false,
            };
        };
        let count = count.min(MAX_HISTORY_REPLY);
        let start = messages.len().saturating_sub(count);
        // Walk back from the newest while the byte budget lasts.
        let mut budget = MAX_HISTORY_REPLY_BYTES;
        let mut first = messages.len();
        while first > start {
            let size = messages[first - 1].text.len();
            if size > budget {
                break;
            }
            budget -= size;
            first -= 1;
        }
        Slice {
            messages: messages.range(first..).cloned().collect(),
            more: first > 0,
        }
    }

    /// Messages of a room with an id above `after`, oldest first, at most
    /// `limit`; `more` when newer ones were left out.
    pub fn after(&self, room: &RoomName, after: u64, limit: usize) -> Slice {
        let Some(messages) = self.rooms.get(room) else {
            return Slice {
                messages: Vec::new(),
                more: false,
            };
        };
        let limit = limit.min(MAX_HISTORY_REPLY);
        let start = messages.partition_point(|message| message.id <= after);
        let mut budget = MAX_HISTORY_REPLY_BYTES;
        let mut taken = Vec::new();
        for message in messages.range(start..) {
            if taken.len() == limit || message.text.len() > budget {
                break;
            }
            budget -= message.text.len();
            taken.push(message.clone());
        }
        let more = start + taken.len() < messages.len();
        Slice {
            messages: taken,
            more,
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

    #[test]
    fn each_room_keeps_its_newest_messages() {
        let mut history = History::new(3);
        for id in 1..=5 {
            history.record(&message(id, "a", "x"));
        }
        history.record(&message(6, "b", "y"));
        assert_eq!(ids(&history.last(&room("a"), 10)), vec![3, 4, 5]);
        assert_eq!(ids(&history.last(&room("b"), 10)), vec![6]);
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
        let slice = history.after(&room("a"), 4, 3);
        assert_eq!(ids(&slice), vec![5, 6, 7]);
        assert!(slice.more);
        let slice = history.after(&room("a"), 7, 100);
        assert_eq!(ids(&slice), vec![8, 9, 10]);
        assert!(!slice.more);
        assert_eq!(ids(&history.after(&room("a"), 10, 5)), Vec::<u64>::new());
        assert_eq!(ids(&history.after(&room("zzz"), 0, 5)), Vec::<u64>::new());
    }

    #[test]
    fn last_is_capped_in_count_and_bytes() {
        let mut history = History::new(5000);
        for id in 1..=1500 {
            history.record(&message(id, "a", "x"));
        }
        let slice = history.last(&room("a"), 5000);
        assert_eq!(slice.messages.len(), MAX_HISTORY_REPLY);
        assert_eq!(slice.messages.last().unwrap().id, 1500);
        assert!(slice.more);

        let mut big = History::new(500);
        let text = "y".repeat(4096);
        for id in 1..=100 {
            big.record(&message(id, "a", &text));
        }
        let slice = big.last(&room("a"), 100);
        assert_eq!(slice.messages.len(), MAX_HISTORY_REPLY_BYTES / 4096);
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
        assert_eq!(ids(&history.last(&room("a"), 10)), vec![5]);
    }
}
