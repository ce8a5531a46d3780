//! Room history in memory: the newest `history_keep` messages of each room,
//! within `history_max_bytes` for all rooms together; answers for the
//! backlog on join and for HISTORY; the records not yet written to disk; and
//! the message ids (`MessageIds`). Pure: the journal file is
//! `server/journal.rs`'s job.

use crate::proto::{ChatMessage, RoomName, Target, backlog_entry_bytes};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Most messages one HISTORY answer (208) carries.
pub const MAX_HISTORY_REPLY: usize = 1000;
/// Most bytes of messages one 208 carries, counted as encoded on the wire
/// (`backlog_entry_bytes`: JSON escaping or text rendering, whichever is
/// longer). The hub lowers it further to a share of `max_output_bytes`, so
/// a reply never trips the slow-consumer cap on its own; a longer answer is
/// cut and says `more`.
pub const MAX_HISTORY_REPLY_BYTES: usize = 256 * 1024;
/// Gap markers (`dropped_up_to`) kept for rooms with no kept history; past
/// this (or twice the rooms with history, if more) they are forgotten
/// into one server-wide marker, `forgotten_through`.
const MAX_GAP_MARKERS: usize = 65_536;

#[derive(Debug)]
pub struct History {
    /// Messages kept per room, oldest first, ids increasing.
    rooms: HashMap<RoomName, VecDeque<ChatMessage>>,
    /// Per room, the highest id ever dropped from its kept window (or, after
    /// a restart, that may have been dropped before it): an `after` below it
    /// has lost messages, an `after` at or above it has not. Kept apart from
    /// `rooms` so it outlives a room whose whole history is dropped, within
    /// `MAX_GAP_MARKERS` for such rooms.
    dropped_up_to: HashMap<RoomName, u64>,
    /// The highest marker forgotten to keep `dropped_up_to` bounded (0:
    /// none): a room without a marker whose kept history does not reach
    /// back to an `after` below it may have lost messages.
    forgotten_through: u64,
    keep: usize,
    /// Recorded since the shell last took them for the journal.
    unwritten: Vec<ChatMessage>,
    /// What the kept messages cost, as counted by `cost`.
    bytes: usize,
    /// The bound on `bytes` for all rooms together (`history_max_bytes`).
    max_bytes: usize,
    /// Each room with history with the id of its newest message, in that
    /// order: the first entry is the least recently active room, dropped
    /// first.
    activity: BTreeSet<(u64, RoomName)>,
    /// The highest id `history_max_bytes` dropped (0: none): a room with no
    /// kept history may have lost messages up to it.
    evicted_through: u64,
}

/// What one kept message counts against `history_max_bytes`: its text and
/// its fixed part (names are stored inline).
pub fn cost(message: &ChatMessage) -> usize {
    std::mem::size_of::<ChatMessage>().saturating_add(message.text.len())
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
            forgotten_through: 0,
            keep: keep.max(1),
            unwritten: Vec::new(),
            bytes: 0,
            max_bytes: usize::MAX,
            activity: BTreeSet::new(),
            evicted_through: 0,
        }
    }

    pub fn set_keep(&mut self, keep: usize) {
        self.keep = keep.max(1);
        for (room, messages) in &mut self.rooms {
            while messages.len() > self.keep {
                if let Some(dropped) = messages.pop_front() {
                    self.bytes = self.bytes.saturating_sub(cost(&dropped));
                    note_dropped(&mut self.dropped_up_to, room, dropped.id);
                }
            }
        }
    }

    /// Sets the bound for all rooms together and applies it at once;
    /// returns the rooms whose history was dropped.
    pub fn set_max_bytes(&mut self, max_bytes: usize) -> Vec<RoomName> {
        self.max_bytes = max_bytes;
        self.enforce_max_bytes()
    }

    /// Keeps `message` if it is newer than its room's newest; returns the
    /// rooms whose history the global bound dropped to make room.
    fn remember(&mut self, message: ChatMessage) -> Vec<RoomName> {
        let Target::Room(room) = &message.target else {
            // Private messages are never history.
            return Vec::new();
        };
        let room = room.clone();
        let messages = self.rooms.entry(room.clone()).or_default();
        let previous = messages.back().map(|last| last.id);
        if previous.is_some_and(|last| last >= message.id) {
            // Replay of an older or duplicate record: keep ids increasing.
            // (The room has a message, so no empty entry is left behind.)
            return Vec::new();
        }
        let id = message.id;
        self.bytes = self.bytes.saturating_add(cost(&message));
        messages.push_back(message);
        if messages.len() > self.keep
            && let Some(dropped) = messages.pop_front()
        {
            self.bytes = self.bytes.saturating_sub(cost(&dropped));
            note_dropped(&mut self.dropped_up_to, &room, dropped.id);
        }
        let mut entry = (previous.unwrap_or(0), room);
        self.activity.remove(&entry);
        entry.0 = id;
        self.activity.insert(entry);
        self.enforce_max_bytes()
    }

    /// The retention rule of `history_max_bytes`: while the kept history
    /// costs more, the least recently active room's history is dropped
    /// whole; the most recently active room (the one just written to) is
    /// never dropped, only trimmed from its oldest message, down to its
    /// newest one.
    fn enforce_max_bytes(&mut self) -> Vec<RoomName> {
        let mut dropped = Vec::new();
        while self.bytes > self.max_bytes {
            if self.activity.len() > 1
                && let Some((newest, room)) = self.activity.pop_first()
            {
                self.evicted_through = self.evicted_through.max(newest);
                // HISTORY after an id below `newest` must say `gap`.
                note_dropped(&mut self.dropped_up_to, &room, newest);
                if let Some(messages) = self.rooms.remove(&room) {
                    let freed = messages.iter().map(cost).fold(0, usize::saturating_add);
                    self.bytes = self.bytes.saturating_sub(freed);
                }
                dropped.push(room);
                continue;
            }
            // Only the most recently active room is left: trim it.
            let Some((_, room)) = self.activity.last() else {
                break;
            };
            let Some(messages) = self.rooms.get_mut(room) else {
                break;
            };
            if messages.len() <= 1 {
                break;
            }
            if let Some(old) = messages.pop_front() {
                self.bytes = self.bytes.saturating_sub(cost(&old));
                self.evicted_through = self.evicted_through.max(old.id);
                note_dropped(&mut self.dropped_up_to, room, old.id);
            }
        }
        self.bound_gap_markers();
        dropped
    }

    /// Keeps the markers of rooms dropped whole bounded: past the bound,
    /// those of rooms with no kept history are folded into
    /// `forgotten_through` (before, cycling SAY over fresh room names left
    /// one marker per room ever dropped, without bound). Rescans only once
    /// the map has doubled past what it keeps, so it costs O(1) a message.
    fn bound_gap_markers(&mut self) {
        let bound = MAX_GAP_MARKERS.max(self.rooms.len().saturating_mul(2));
        if self.dropped_up_to.len() <= bound {
            return;
        }
        let rooms = &self.rooms;
        let forgotten = &mut self.forgotten_through;
        self.dropped_up_to.retain(|room, &mut marker| {
            let is_kept = rooms.contains_key(room);
            if !is_kept {
                *forgotten = (*forgotten).max(marker);
            }
            is_kept
        });
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

    /// A new room message: kept, and queued for the journal. Returns the
    /// rooms whose history `history_max_bytes` dropped to make room.
    pub fn record(&mut self, message: &ChatMessage) -> Vec<RoomName> {
        if matches!(message.target, Target::Room(_)) {
            self.unwritten.push(message.clone());
            self.remember(message.clone())
        } else {
            Vec::new()
        }
    }

    /// The highest message id the global bound (`history_max_bytes`) has
    /// dropped, 0 if none: HISTORY `after` an id below it, in a room whose
    /// kept history does not reach back to `after`, may have missed messages.
    pub fn evicted_through(&self) -> u64 {
        self.evicted_through
    }

    /// What the kept messages cost against `history_max_bytes`.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        let first = messages.len() - newest_that_fit(messages.iter(), count, budget);
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
        // A forgotten marker is judged as its room's would have been: drops
        // take the oldest first, so a kept history that reaches back to
        // `after` lost nothing after it (a gap may be reported that was not
        // one; a real one is never hidden).
        let gap = self
            .dropped_up_to
            .get(room)
            .is_some_and(|&dropped| after < dropped)
            || (after < self.forgotten_through
                && self
                    .rooms
                    .get(room)
                    .and_then(VecDeque::front)
                    .is_none_or(|first| first.id > after));
        let Some(messages) = self.rooms.get(room) else {
            return Slice {
                messages: Vec::new(),
                more: false,
                gap,
            };
        };
        let start = messages.partition_point(|message| message.id <= after);
        let kept = oldest_that_fit(messages.range(start..), limit, budget);
        let taken: Vec<ChatMessage> = messages.range(start..start + kept).cloned().collect();
        let more = start + kept < messages.len();
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

    /// The highest id kept (ids after a restart continue from `MessageIds`,
    /// which the replay feeds; this is for tests and diagnostics).
    pub fn max_id(&self) -> Option<u64> {
        self.rooms
            .values()
            .filter_map(|messages| messages.back())
            .map(|message| message.id)
            .max()
    }
}

/// The largest message id riftd hands out or accepts from the journal:
/// 2^53 − 1, so that every id is exact in a JavaScript number.
pub const MAX_MESSAGE_ID: u64 = (1 << 53) - 1;
/// Ids reserved on disk ahead of use at a time: one small journal record
/// per this many messages (room or private) keeps ids rising across
/// restarts without a write per private message.
pub const ID_BLOCK: u64 = 1024;

/// Message ids: increasing, never reused (across restarts too, while the
/// journal holds its reservations), never above `MAX_MESSAGE_ID`, never
/// wrapping. Before an id is handed out it is covered by a reservation
/// (`{"next_id":N}` in the journal: ids below N may be in use), written by
/// the shell in the same turn, before any client is sent the message.
#[derive(Debug)]
pub struct MessageIds {
    /// The next id to hand out.
    next: u64,
    /// Ids below this are covered by a reservation.
    reserved: u64,
    /// A new reservation the journal has not taken yet.
    unwritten: Option<u64>,
}

/// Every id up to `MAX_MESSAGE_ID` has been handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdsExhausted;

impl Default for MessageIds {
    fn default() -> MessageIds {
        MessageIds {
            next: 1,
            reserved: 1,
            unwritten: None,
        }
    }
}

impl MessageIds {
    /// The next id, reserving a new block first when the last one is used up.
    pub fn take(&mut self) -> Result<u64, IdsExhausted> {
        let id = self.next;
        if id > MAX_MESSAGE_ID {
            return Err(IdsExhausted);
        }
        self.next = id.checked_add(1).ok_or(IdsExhausted)?;
        if id >= self.reserved {
            self.reserved = id
                .saturating_add(ID_BLOCK)
                .min(MAX_MESSAGE_ID.saturating_add(1));
            self.unwritten = Some(self.reserved);
        }
        Ok(id)
    }

    /// Continues after a message replayed from the journal; an id above
    /// `MAX_MESSAGE_ID` is refused (the caller skips that record).
    pub fn restore_message(&mut self, id: u64) -> Result<(), IdsExhausted> {
        if id > MAX_MESSAGE_ID {
            return Err(IdsExhausted);
        }
        self.restore_mark(id.checked_add(1).ok_or(IdsExhausted)?)
    }

    /// Continues at or after a reservation replayed from the journal.
    pub fn restore_mark(&mut self, next_id: u64) -> Result<(), IdsExhausted> {
        if next_id > MAX_MESSAGE_ID.saturating_add(1) {
            return Err(IdsExhausted);
        }
        self.next = self.next.max(next_id);
        self.reserved = self.reserved.max(self.next);
        Ok(())
    }

    /// The reservation to journal this turn, if a new one was made.
    pub fn take_unwritten(&mut self) -> Option<u64> {
        self.unwritten.take()
    }

    /// Every id handed out so far is below this (what a compacted journal
    /// must record).
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The id the next message will get.
    pub fn peek(&self) -> u64 {
        self.next
    }
}

/// How many of the newest of `messages` (oldest first) one answer holds:
/// at most `count` (and `MAX_HISTORY_REPLY`), walking back from the newest
/// while their encoded size (`backlog_entry_bytes`) fits `budget` (and
/// `MAX_HISTORY_REPLY_BYTES`). The local history and the cluster's stream
/// reads cut their answers with it.
pub(crate) fn newest_that_fit<'a>(
    messages: impl DoubleEndedIterator<Item = &'a ChatMessage>,
    count: usize,
    budget: usize,
) -> usize {
    fit(messages.rev(), count, budget)
}

/// How many of the oldest of `messages` one answer holds: at most `limit`
/// (and `MAX_HISTORY_REPLY`), while their encoded size fits `budget` (and
/// `MAX_HISTORY_REPLY_BYTES`).
pub(crate) fn oldest_that_fit<'a>(
    messages: impl Iterator<Item = &'a ChatMessage>,
    limit: usize,
    budget: usize,
) -> usize {
    fit(messages, limit, budget)
}

fn fit<'a>(messages: impl Iterator<Item = &'a ChatMessage>, limit: usize, budget: usize) -> usize {
    let limit = limit.min(MAX_HISTORY_REPLY);
    let mut budget = budget.min(MAX_HISTORY_REPLY_BYTES);
    let mut kept = 0;
    for message in messages {
        let size = backlog_entry_bytes(message);
        if kept == limit || size > budget {
            break;
        }
        budget -= size;
        kept += 1;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Username;

    fn message(id: u64, room: &str, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            ts: id.saturating_mul(10),
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
    fn history_dropped_by_the_global_bound_is_reported_as_a_gap() {
        let mut history = History::new(100);
        let one = cost(&message(1, "a", "x"));
        history.set_max_bytes(one * 3);
        history.record(&message(1, "b", "x"));
        history.record(&message(2, "a", "x"));
        history.record(&message(3, "a", "x"));
        // Room b, least recently active, is dropped whole for this one.
        assert_eq!(history.record(&message(4, "a", "x")), vec![room("b")]);
        let slice = history.after(&room("b"), 0, 10, usize::MAX);
        assert!(slice.messages.is_empty() && slice.gap, "{slice:?}");
        // Room a alone over the bound loses its oldest: a gap after 0 too,
        // none after what it still holds.
        history.record(&message(5, "a", "x"));
        assert!(history.after(&room("a"), 0, 10, usize::MAX).gap);
        assert!(!history.after(&room("a"), 3, 10, usize::MAX).gap);
    }

    #[test]
    fn the_global_bound_drops_the_least_recently_active_room_first() {
        let mut history = History::new(100);
        let one = cost(&message(1, "a", "x"));
        history.set_max_bytes(one * 4);
        assert!(history.record(&message(1, "a", "x")).is_empty());
        assert!(history.record(&message(2, "b", "x")).is_empty());
        assert!(history.record(&message(3, "a", "x")).is_empty());
        assert!(history.record(&message(4, "c", "x")).is_empty());
        // Room b was active last at id 2, before a (3) and c (4).
        assert_eq!(history.record(&message(5, "a", "x")), vec![room("b")]);
        assert_eq!(
            ids(&history.last(&room("b"), 10, usize::MAX)),
            Vec::<u64>::new()
        );
        assert_eq!(history.evicted_through(), 2);
        assert_eq!(
            ids(&history.last(&room("a"), 10, usize::MAX)),
            vec![1, 3, 5]
        );
        assert_eq!(history.bytes(), one * 4);
        assert_eq!(
            history.all().iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 3, 4, 5]
        );
    }

    #[test]
    fn cycling_through_many_rooms_keeps_memory_within_the_bound() {
        let mut history = History::new(100);
        let bound = cost(&message(1, "a", "x")) * 10;
        history.set_max_bytes(bound);
        for id in 1..=10_000u64 {
            history.record(&message(id, &format!("r{id}"), "x"));
            assert!(history.bytes() <= bound);
        }
        assert_eq!(history.len(), 10);
        assert_eq!(history.rooms.len(), 10);
        assert_eq!(history.activity.len(), 10);
    }

    #[test]
    fn rooms_dropped_whole_leave_bounded_gap_markers_and_still_say_gap() {
        // Before: each room the global bound dropped kept its gap marker
        // for good, so cycling SAY over fresh room names grew memory
        // without bound (one entry per room ever dropped).
        let mut history = History::new(100);
        history.set_max_bytes(cost(&message(1, "a", "x")) * 2);
        let count = (MAX_GAP_MARKERS as u64) * 2 + 10;
        for id in 1..=count {
            history.record(&message(id, &format!("r{id}"), "x"));
        }
        assert!(
            history.dropped_up_to.len() <= MAX_GAP_MARKERS + 1,
            "{} markers",
            history.dropped_up_to.len()
        );
        // A room whose marker was forgotten still reports its gap...
        let slice = history.after(&room("r5"), 0, 10, ANY);
        assert!(slice.messages.is_empty() && slice.gap, "{slice:?}");
        // ... also once it has history again, below its oldest message.
        history.record(&message(count + 1, "r5", "x"));
        assert!(history.after(&room("r5"), 4, 10, ANY).gap);
        assert!(!history.after(&room("r5"), count + 1, 10, ANY).gap);
        // The newest rooms are kept exactly: no gap after what they hold.
        assert!(
            !history
                .after(&room(&format!("r{count}")), count - 1, 10, ANY)
                .gap
        );
    }

    #[test]
    fn a_room_alone_over_the_bound_loses_its_oldest_messages_but_not_its_newest() {
        let mut history = History::new(100);
        history.set_max_bytes(cost(&message(1, "a", "x")) * 2);
        for id in 1..=5 {
            history.restore(message(id, "a", "x"));
        }
        assert_eq!(ids(&history.last(&room("a"), 10, usize::MAX)), vec![4, 5]);
        assert_eq!(history.evicted_through(), 3);
        // A bound below one message keeps the newest all the same.
        history.set_max_bytes(1);
        assert_eq!(ids(&history.last(&room("a"), 10, usize::MAX)), vec![5]);
        history.set_keep(1);
        assert_eq!(history.bytes(), cost(&message(5, "a", "x")));
    }

    #[test]
    fn the_same_id_in_two_rooms_does_not_confuse_which_room_is_oldest() {
        let mut history = History::new(100);
        history.restore(message(5, "a", "x"));
        history.restore(message(5, "b", "x"));
        history.set_max_bytes(cost(&message(1, "a", "x")) * 2);
        assert_eq!(history.record(&message(6, "a", "x")), vec![room("b")]);
        assert_eq!(ids(&history.last(&room("a"), 10, usize::MAX)), vec![5, 6]);
        assert_eq!(history.activity.len(), 1);
    }

    #[test]
    fn ids_are_reserved_a_block_ahead_and_journaled_once_per_block() {
        let mut ids = MessageIds::default();
        assert_eq!(ids.take(), Ok(1));
        assert_eq!(ids.take_unwritten(), Some(1 + ID_BLOCK));
        assert_eq!(ids.take_unwritten(), None);
        for expected in 2..=ID_BLOCK {
            assert_eq!(ids.take(), Ok(expected));
        }
        assert_eq!(ids.take_unwritten(), None);
        assert_eq!(ids.take(), Ok(ID_BLOCK + 1));
        assert_eq!(ids.take_unwritten(), Some(2 * ID_BLOCK + 1));
        assert!(ids.reserved() > ID_BLOCK + 1);
    }

    #[test]
    fn restored_ids_continue_after_the_highest_message_or_reservation() {
        let mut ids = MessageIds::default();
        ids.restore_message(41).unwrap();
        ids.restore_mark(30).unwrap();
        assert_eq!(ids.peek(), 42);
        ids.restore_mark(2000).unwrap();
        assert_eq!(ids.take(), Ok(2000));
        // Past a restart the first id is reserved again before use.
        assert_eq!(ids.take_unwritten(), Some(2000 + ID_BLOCK));
    }

    #[test]
    fn ids_never_wrap_and_stop_at_the_largest() {
        let mut ids = MessageIds::default();
        assert_eq!(ids.restore_message(u64::MAX), Err(IdsExhausted));
        assert_eq!(ids.restore_message(MAX_MESSAGE_ID + 1), Err(IdsExhausted));
        assert_eq!(ids.restore_mark(u64::MAX), Err(IdsExhausted));
        assert_eq!(ids.peek(), 1);
        ids.restore_message(MAX_MESSAGE_ID - 1).unwrap();
        assert_eq!(ids.take(), Ok(MAX_MESSAGE_ID));
        assert_eq!(ids.take_unwritten(), Some(MAX_MESSAGE_ID + 1));
        assert_eq!(ids.take(), Err(IdsExhausted));
        assert_eq!(ids.take(), Err(IdsExhausted));
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
