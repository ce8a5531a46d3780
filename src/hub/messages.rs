//! Messages: SAY, DM and HISTORY (each asks the ledger for an id, a record
//! or a slice of history, then applies the answer), the journal's view of
//! ids and history, the cached join backlogs (208), and the answer budget
//! that bounds what answers of the server's choosing may cost.

use super::ledger::{Posted, Record};
use super::refusal::Refusal;
use super::{ConnId, Hub, MAX_ROOMS_PER_USER, Now};
use crate::history::{History, IdsExhausted, MAX_HISTORY_REPLY_BYTES, Slice};
use crate::proto::{BACKLOG_FRAME_BYTES, ChatMessage, RoomName, ServerMsg, Target, Username};
use std::collections::HashMap;

/// An answer whose size the server chooses (a 208 backlog or HISTORY, the
/// frames of one WHO or ROOMS answer) is at most `max_output_bytes` divided
/// by this, so no such answer can trip the slow-consumer cap by itself; a
/// 208 also fits in what is left of that share after what the client
/// already owes, so many at once (20 JOINs, 20 HISTORYs) cannot either.
pub const ANSWER_SHARE: usize = 2;
/// Answers (HISTORY, WHO, ROOMS, PING, help) may cost this many full
/// HISTORY answers at once, in encoded bytes: a client rejoining every room
/// it may be in and catching each up with one HISTORY is never refused.
pub const ANSWER_BURST: usize = MAX_ROOMS_PER_USER + 4;
/// ... and this many full HISTORY answers per second after the burst.
pub const ANSWER_RATE: usize = 4;

/// Bytes the join-backlog cache may hold, all rooms together.
pub(super) const BACKLOG_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The encoded join 208s, one per room, bounded in total bytes: every room
/// with a member could otherwise hold one (up to 256 KiB, and JSON escaping
/// makes a control character six bytes), up to several times the history
/// they encode. Past the bound a backlog is encoded per join instead.
#[derive(Debug)]
pub(super) struct BacklogCache {
    pub(super) frames: HashMap<RoomName, Box<[u8]>>,
    pub(super) bytes: usize,
    pub(super) max_bytes: usize,
}

impl Default for BacklogCache {
    fn default() -> Self {
        BacklogCache {
            frames: HashMap::new(),
            bytes: 0,
            max_bytes: BACKLOG_CACHE_BYTES,
        }
    }
}

impl BacklogCache {
    /// The cached frame of `room`, encoded by `encode` and kept if it fits.
    pub(super) fn get_or_encode(
        &mut self,
        room: &RoomName,
        encode: impl FnOnce() -> Vec<u8>,
    ) -> std::borrow::Cow<'_, [u8]> {
        if !self.frames.contains_key(room) {
            let frame = encode().into_boxed_slice();
            if self.bytes.saturating_add(frame.len()) > self.max_bytes {
                return std::borrow::Cow::Owned(frame.into_vec());
            }
            self.bytes = self.bytes.saturating_add(frame.len());
            self.frames.insert(room.clone(), frame);
        }
        std::borrow::Cow::Borrowed(self.frames.get(room).map_or(&[][..], |frame| frame))
    }

    pub(super) fn remove(&mut self, room: &RoomName) {
        if let Some(frame) = self.frames.remove(room) {
            self.bytes = self.bytes.saturating_sub(frame.len());
        }
    }

    pub(super) fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

impl Hub {
    /// Loads messages read back from the journal; ids continue after the
    /// highest one. A message whose id is above `history::MAX_MESSAGE_ID`
    /// is skipped (ids never wrap); returns how many were.
    pub fn restore_history(&mut self, messages: impl IntoIterator<Item = ChatMessage>) -> usize {
        let skipped = self.ledger.restore_history(messages);
        self.join_backlogs.clear();
        skipped
    }

    /// Continues ids at or after the journal's highest reservation
    /// (`{"next_id":N}`), which covers private messages too.
    pub fn restore_next_id(&mut self, next_id: u64) -> Result<(), IdsExhausted> {
        self.ledger.restore_next_id(next_id)
    }

    /// Room messages recorded since the last call, for the journal.
    pub fn take_unwritten_history(&mut self) -> Vec<ChatMessage> {
        self.ledger.take_unwritten_history()
    }

    /// A new id reservation to journal (with this turn's messages, before
    /// any client is sent them), if one was made since the last call.
    pub fn take_id_reservation(&mut self) -> Option<u64> {
        self.ledger.take_id_reservation()
    }

    /// Every id handed out is below this: what a compacted journal records.
    pub fn id_reservation(&self) -> u64 {
        self.ledger.id_reservation()
    }

    /// Every kept message in id order, to compact the journal.
    pub fn history(&self) -> &History {
        self.ledger.history()
    }

    /// Bytes the client owes (queued, not yet written).
    pub(super) fn pending_bytes(&self, conn: ConnId) -> usize {
        self.clients
            .get(conn)
            .map_or(0, |client| client.outbox.pending_bytes())
    }

    /// The most one answer of the server's choosing may cost, in bytes.
    pub(super) fn answer_cap(&self) -> usize {
        self.config.max_output_bytes / ANSWER_SHARE
    }

    /// A full HISTORY answer (the unit of the answer budget), in bytes.
    pub(super) fn full_history_answer(&self) -> usize {
        self.answer_cap().min(MAX_HISTORY_REPLY_BYTES)
    }

    /// Bytes of answers a client may be sent at once...
    pub(super) fn answer_burst(&self) -> f64 {
        self.full_history_answer().saturating_mul(ANSWER_BURST) as f64
    }

    /// ... and per second after that.
    pub(super) fn answer_rate(&self) -> f64 {
        self.full_history_answer().saturating_mul(ANSWER_RATE) as f64
    }

    /// Bytes of messages a 208 to this client may carry now: its share of
    /// the output cap, less what it already owes and the frame itself.
    pub(super) fn backlog_budget(&self, conn: ConnId) -> usize {
        self.full_history_answer()
            .min(self.answer_cap().saturating_sub(self.pending_bytes(conn)))
            .saturating_sub(BACKLOG_FRAME_BYTES)
    }

    /// Answers are allowed while the client's answer budget is not in debt
    /// (the answer is charged after, at its encoded size); otherwise 429,
    /// which is never a flood strike.
    pub(super) fn check_answer_budget(&self, conn: ConnId, now: Now) -> Result<(), Refusal> {
        let rate = self.answer_rate();
        let Some(client) = self.clients.get(conn) else {
            return Ok(());
        };
        match client
            .answers
            .wait_ms(rate, self.answer_burst(), now.mono_ms)
        {
            0 => Ok(()),
            wait_ms => Err(Refusal::AnswerBudget {
                bytes_per_sec: rate as u64,
                wait_ms,
            }),
        }
    }

    /// SAY, the asking half: the ledger stamps the message (and keeps it,
    /// with history on), then `said` fans it out.
    pub(super) fn say(
        &mut self,
        conn: ConnId,
        username: Username,
        text: String,
        room: Option<RoomName>,
        now: Now,
    ) -> Result<(), Refusal> {
        let room = self.room_or_current(conn, room)?;
        if !self.is_member(conn, &room) {
            return Err(Refusal::NotInRoom(room));
        }
        if self.cluster.is_some() {
            // Members get it from `Event::Message`, in the cluster's order.
            self.cluster_post(conn, room, username, text, now);
            return Ok(());
        }
        let posted = self.ledger.post(room.clone(), username, text, now)?;
        self.said(&room, posted);
        Ok(())
    }

    /// SAY, the applying half: the cached join backlogs the message made
    /// stale are dropped, and every member of `room` is sent it.
    pub(super) fn said(&mut self, room: &RoomName, posted: Posted) {
        let Posted { message, record } = posted;
        if let Record::Kept { evicted } = record {
            for dropped in evicted {
                self.join_backlogs.remove(&dropped);
            }
            self.join_backlogs.remove(room);
        }
        if let Some(members) = self.ledger.members(room) {
            self.clients.deliver(members, &ServerMsg::Message(message));
        }
    }

    /// DM, the asking half: the ledger says who holds the name and stamps
    /// the message, then `send_dm` delivers it.
    pub(super) fn dm(
        &mut self,
        conn: ConnId,
        username: Username,
        to: Username,
        text: String,
        now: Now,
    ) -> Result<(), Refusal> {
        if self.cluster.is_some() {
            // To whoever holds `to` on any node; `handle_cluster` answers.
            self.cluster_dm(conn, username, to, text, now);
            return Ok(());
        }
        let target = self
            .ledger
            .holder(&to)
            .filter(|&target| {
                self.clients
                    .get(target)
                    .is_some_and(|client| client.state.username().is_some())
            })
            .ok_or_else(|| Refusal::NoSuchUser(to.clone()))?;
        // Address the frame with the name as its holder spells it.
        let to = self
            .clients
            .get(target)
            .and_then(|client| client.state.username().cloned())
            .unwrap_or(to);
        let message = self.ledger.stamp(Target::User(to), username, text, now)?;
        self.send_dm(conn, target, message);
        Ok(())
    }

    /// DM, the applying half: the recipient and the sender (once, if they
    /// are the same) are sent the stamped message.
    pub(super) fn send_dm(&mut self, conn: ConnId, target: ConnId, message: ChatMessage) {
        let recipients: &[ConnId] = if target == conn {
            &[conn]
        } else {
            &[target, conn]
        };
        self.clients
            .deliver(recipients, &ServerMsg::Message(message));
    }

    /// HISTORY, the asking half: the ledger answers a slice of the room's
    /// history, `send_backlog` sends it.
    pub(super) fn history_request(
        &mut self,
        conn: ConnId,
        room: Option<RoomName>,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<(), Refusal> {
        let Some(backlog) = self.config.history_backlog else {
            return Err(Refusal::HistoryOff);
        };
        let room = self.room_or_current(conn, room)?;
        if !self.is_member(conn, &room) {
            return Err(Refusal::NotInRoom(room));
        }
        let limit = limit.unwrap_or(backlog.max(1));
        let budget = self.backlog_budget(conn);
        if self.cluster.is_some() {
            // Read from the stream; `handle_cluster` answers.
            self.cluster_history(conn, room, after, limit, budget);
            return Ok(());
        }
        let slice = match after {
            Some(after) => self.ledger.history_after(&room, after, limit, budget),
            None => self.ledger.backlog(&room, limit, budget),
        };
        self.send_backlog(conn, room, slice);
        Ok(())
    }

    /// HISTORY, the applying half: the slice as one 208, answering the
    /// HISTORY (with its ref, if it carried one).
    pub(super) fn send_backlog(&mut self, conn: ConnId, room: RoomName, slice: Slice) {
        self.answer(
            conn,
            &ServerMsg::Backlog {
                room,
                messages: slice.messages,
                more: slice.more,
                gap: slice.gap,
            },
        );
    }
}
