//! The ledger: the one place that decides what the whole chat must agree
//! on: who holds which name, who is in which room, which id a message
//! gets, and what each room's history keeps. The hub asks it and applies
//! the answer; it never edits these tables itself. Connections and output
//! (outboxes, fan-out, the join-backlog cache, flood, the answer budget)
//! are the hub's, never the ledger's. Pure: no IO, no clock.
//!
//! # Where a cluster backend plugs in
//!
//! Locally every answer is immediate. Each handler that asks is split into
//! an asking half and an applying half that takes the answer, so a cluster
//! ledger (nodes on NATS JetStream) can answer later, the way a password
//! check does (`pass` → `VerifyJob` → `handle_verified` → `finish_pass`):
//! the asking half would queue a job for the shell to drain (as
//! `drain_verify_jobs`), the hub would hold the request under a ticket
//! (as `Client::pending_check`), and the verdict, handed back through a
//! `handle_*` input, would call the same applying half as today.
//!
//! - Names: `user` asks `claim_name`, `user_claimed` applies the `Claim`;
//!   `finish_pass` asks `claim_name`, `pass_claimed` applies the `Claim`
//!   or `Taken`; `rename` asks `rename`, `renamed` applies. In a cluster
//!   each claim is a compare-and-set on a shared name table, and
//!   `release_name` a job whose answer nobody waits for.
//! - Ids and history: `say` asks `post` (an id, a time, kept in history),
//!   `said` fans the `Posted` message out; `dm` asks `stamp`, `send_dm`
//!   delivers. In a cluster the stream's acknowledgement of the publish is
//!   the id and the record; the applying halves do not change.
//! - HISTORY asks `history_after` or `backlog`, `send_backlog` applies the
//!   `Slice`; a cluster reads the stream, or a node's cache of it.
//! - Rooms: the member sets here are also the node's fan-out index, so
//!   the applying halves `enter_room` and `parted` update them (`join`,
//!   `part`); a cluster would publish the change before applying it, from
//!   `join` and `part` (the asking halves, which only validate today).
//! - Always local: connections and their room lists, outboxes and fan-out,
//!   the join-backlog cache, flood and answer budgets, the login throttle.

use super::refusal::Refusal;
use super::{ConnId, HubConfig, Now};
use crate::history::{History, IdsExhausted, MessageIds, Slice};
use crate::proto::{ChatMessage, NameKey, RoomName, Target, Username};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

/// A name the ledger granted to a connection: what logs a session in or
/// renames it. Only the ledger makes one.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Claim(Username);

impl Claim {
    pub(super) fn username(&self) -> &Username {
        &self.0
    }

    pub(super) fn into_username(self) -> Username {
        self.0
    }
}

/// The name is held by another connection (409).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Taken(pub(super) Username);

impl From<Taken> for Refusal {
    fn from(Taken(username): Taken) -> Refusal {
        Refusal::NameTaken(username)
    }
}

/// What leaving a room did to the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parted {
    /// It still exists (it has members, or it is the default room).
    Kept,
    /// It was left empty and is gone.
    Closed,
}

/// A room message the ledger stamped (id and time) and, with history on,
/// recorded.
#[derive(Debug)]
pub(super) struct Posted {
    pub(super) message: ChatMessage,
    pub(super) record: Record,
}

/// What history did with a posted message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Record {
    /// History is off: nothing was kept.
    Off,
    /// Kept; `evicted` are the rooms whose history `history_max_bytes`
    /// dropped to make room for it.
    Kept { evicted: Vec<RoomName> },
}

/// Names, room membership, message ids and history.
#[derive(Debug)]
pub(super) struct Ledger {
    /// Case-folded username → holder: logged-in sessions only (behind a
    /// password a name is held once verified, never by USER alone).
    names: HashMap<NameKey, ConnId>,
    /// Each room's members in join order.
    rooms: BTreeMap<RoomName, Vec<ConnId>>,
    /// The room that exists even when empty.
    default_room: RoomName,
    /// Chat message ids: they only grow, across restarts too.
    ids: MessageIds,
    /// Set once "message ids are exhausted" has been logged: every later
    /// SAY or DM is refused the same way, and must not write a line each.
    pub(super) has_logged_ids_exhausted: bool,
    /// Room history (empty and unused when history is off).
    history: History,
    is_history_on: bool,
}

impl Ledger {
    pub(super) fn new(config: &HubConfig) -> Ledger {
        let mut history = History::new(config.history_keep);
        history.set_max_bytes(config.history_max_bytes);
        let mut rooms = BTreeMap::new();
        rooms.insert(config.default_room.clone(), Vec::new());
        Ledger {
            names: HashMap::new(),
            rooms,
            default_room: config.default_room.clone(),
            ids: MessageIds::default(),
            has_logged_ids_exhausted: false,
            history,
            is_history_on: config.history_backlog.is_some(),
        }
    }

    /// A reload: the default room exists from now on (the old one stays
    /// until it is left empty); retention applies at once.
    pub(super) fn set_config(&mut self, config: &HubConfig) {
        self.rooms.entry(config.default_room.clone()).or_default();
        self.default_room = config.default_room.clone();
        self.history.set_keep(config.history_keep);
        self.history.set_max_bytes(config.history_max_bytes);
        self.is_history_on = config.history_backlog.is_some();
    }

    // Names.

    /// Whether `conn` could claim `username` (it is free, or `conn` holds
    /// it); nothing is held. USER behind a password asks this, and claims
    /// only once the password is verified.
    pub(super) fn check_name(&self, conn: ConnId, username: &Username) -> Result<(), Taken> {
        match self.names.get(&username.key()) {
            Some(&holder) if holder != conn => Err(Taken(username.clone())),
            _ => Ok(()),
        }
    }

    /// Holds `username` for `conn`, unless another connection holds it.
    pub(super) fn claim_name(&mut self, conn: ConnId, username: Username) -> Result<Claim, Taken> {
        match self.names.entry(username.key()) {
            Entry::Occupied(holder) if *holder.get() != conn => Err(Taken(username)),
            Entry::Occupied(_) => Ok(Claim(username)),
            Entry::Vacant(free) => {
                free.insert(conn);
                Ok(Claim(username))
            }
        }
    }

    /// Moves `conn` from `old` to `new`, unless another connection holds
    /// `new` (a change of case only is always granted).
    pub(super) fn rename(
        &mut self,
        conn: ConnId,
        old: &Username,
        new: Username,
    ) -> Result<Claim, Taken> {
        self.check_name(conn, &new)?;
        self.names.remove(&old.key());
        self.names.insert(new.key(), conn);
        Ok(Claim(new))
    }

    /// The name is free again.
    pub(super) fn release_name(&mut self, username: &Username) {
        self.names.remove(&username.key());
    }

    /// Who holds `username`, in any case.
    pub(super) fn holder(&self, username: &Username) -> Option<ConnId> {
        self.names.get(&username.key()).copied()
    }

    // Rooms.

    /// `conn` is in `room` (made if new) from now on; returns the members,
    /// `conn` last. The caller has checked it was not a member.
    pub(super) fn join(&mut self, conn: ConnId, room: &RoomName) -> &[ConnId] {
        let members = self.rooms.entry(room.clone()).or_default();
        members.push(conn);
        members
    }

    /// `conn` is not in `room` from now on; a room left empty is gone,
    /// unless it is the default room.
    pub(super) fn part(&mut self, conn: ConnId, room: &RoomName) -> Parted {
        let Some(members) = self.rooms.get_mut(room) else {
            return Parted::Kept;
        };
        members.retain(|&member| member != conn);
        if members.is_empty() && *room != self.default_room {
            self.rooms.remove(room);
            return Parted::Closed;
        }
        Parted::Kept
    }

    /// The room's members in join order, or `None` if there is no such room.
    pub(super) fn members(&self, room: &RoomName) -> Option<&[ConnId]> {
        self.rooms.get(room).map(Vec::as_slice)
    }

    /// Every room with its member count, sorted by name.
    pub(super) fn rooms(&self) -> impl Iterator<Item = (&RoomName, usize)> {
        self.rooms
            .iter()
            .map(|(name, members)| (name, members.len()))
    }

    /// Everyone leaves at once (shutdown): every name is free and every
    /// room empty.
    pub(super) fn release_everyone(&mut self) {
        self.names.clear();
        for members in self.rooms.values_mut() {
            members.clear();
        }
    }

    /// Sizes the default room for `count` members up front.
    pub(super) fn reserve_default_room(&mut self, count: usize) {
        if let Some(members) = self.rooms.get_mut(&self.default_room) {
            members.reserve_exact(count.saturating_sub(members.len()));
        }
    }

    // Message ids and history.

    /// A message with the next id and the time of `now`. Refused (503) once
    /// ids are exhausted, which is logged once.
    pub(super) fn stamp(
        &mut self,
        target: Target,
        from: Username,
        text: String,
        now: Now,
    ) -> Result<ChatMessage, Refusal> {
        let has_logged = &mut self.has_logged_ids_exhausted;
        let id = self.ids.take().map_err(|IdsExhausted| {
            if !std::mem::replace(has_logged, true) {
                log::error!(
                    "message ids are exhausted: SAY and DM get 503 until the history journal is reset"
                );
            }
            Refusal::IdsExhausted
        })?;
        Ok(ChatMessage {
            id,
            ts: now.unix_ms,
            target,
            from,
            text,
        })
    }

    /// A room message: stamped, and kept in history when history is on.
    pub(super) fn post(
        &mut self,
        room: RoomName,
        from: Username,
        text: String,
        now: Now,
    ) -> Result<Posted, Refusal> {
        let message = self.stamp(Target::Room(room), from, text, now)?;
        let record = if self.is_history_on {
            Record::Kept {
                evicted: self.history.record(&message),
            }
        } else {
            Record::Off
        };
        Ok(Posted { message, record })
    }

    /// The room's last `count` messages within `budget` bytes (a join's
    /// 208, or HISTORY without `after`).
    pub(super) fn backlog(&self, room: &RoomName, count: usize, budget: usize) -> Slice {
        self.history.last(room, count, budget)
    }

    /// The room's messages after id `after` (HISTORY with `after`).
    pub(super) fn history_after(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
        budget: usize,
    ) -> Slice {
        self.history.after(room, after, limit, budget)
    }

    /// Loads messages read back from the journal; ids continue after the
    /// highest one. Returns how many were skipped (id too high).
    pub(super) fn restore_history(
        &mut self,
        messages: impl IntoIterator<Item = ChatMessage>,
    ) -> usize {
        let mut skipped = 0usize;
        for message in messages {
            if self.ids.restore_message(message.id).is_err() {
                skipped = skipped.saturating_add(1);
                continue;
            }
            self.history.restore(message);
        }
        skipped
    }

    pub(super) fn restore_next_id(&mut self, next_id: u64) -> Result<(), IdsExhausted> {
        self.ids.restore_mark(next_id)
    }

    pub(super) fn take_unwritten_history(&mut self) -> Vec<ChatMessage> {
        self.history.take_unwritten()
    }

    pub(super) fn take_id_reservation(&mut self) -> Option<u64> {
        self.ids.take_unwritten()
    }

    pub(super) fn id_reservation(&self) -> u64 {
        self.ids.reserved()
    }

    pub(super) fn history(&self) -> &History {
        &self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Auth;
    use crate::history::MAX_MESSAGE_ID;

    fn config(history_backlog: Option<usize>) -> HubConfig {
        HubConfig {
            auth: Auth::Open,
            default_room: room("lobby"),
            max_output_bytes: 1 << 20,
            require_tls_for_password: false,
            history_backlog,
            history_keep: 2,
            history_max_bytes: usize::MAX,
            quiet_room_size: 0,
            auth_timeout_ms: 1000,
            idle_timeout_ms: 0,
            flood_rate: 0.0,
            flood_burst: 1.0,
        }
    }

    fn name(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    const NOW: Now = Now {
        unix_ms: 1_700_000_000_000,
        mono_ms: 0,
    };

    fn say(ledger: &mut Ledger, room_name: &str, text: &str) -> Posted {
        ledger
            .post(room(room_name), name("alice"), text.to_owned(), NOW)
            .unwrap()
    }

    fn texts(slice: &Slice) -> Vec<&str> {
        slice.messages.iter().map(|m| m.text.as_str()).collect()
    }

    #[test]
    fn a_name_is_held_once_whatever_its_case_until_released() {
        let mut ledger = Ledger::new(&config(None));
        let (one, two) = (ConnId(1), ConnId(2));
        assert_eq!(
            ledger.claim_name(one, name("Alice")).unwrap().username(),
            &name("Alice")
        );
        assert_eq!(ledger.holder(&name("aLICE")), Some(one));
        assert_eq!(
            ledger.claim_name(two, name("alice")),
            Err(Taken(name("alice")))
        );
        assert_eq!(
            ledger.check_name(two, &name("ALICE")),
            Err(Taken(name("ALICE")))
        );
        // Its holder may claim it again, in another case too.
        assert!(ledger.check_name(one, &name("alice")).is_ok());
        assert!(ledger.claim_name(one, name("alice")).is_ok());
        ledger.release_name(&name("ALICE"));
        assert_eq!(ledger.holder(&name("alice")), None);
        assert!(ledger.claim_name(two, name("alice")).is_ok());
        assert_eq!(ledger.holder(&name("Alice")), Some(two));
    }

    #[test]
    fn checking_a_name_holds_nothing() {
        let mut ledger = Ledger::new(&config(None));
        assert!(ledger.check_name(ConnId(1), &name("bob")).is_ok());
        assert_eq!(ledger.holder(&name("bob")), None);
        assert!(ledger.claim_name(ConnId(2), name("bob")).is_ok());
    }

    #[test]
    fn a_rename_frees_the_old_name_and_never_takes_a_held_one() {
        let mut ledger = Ledger::new(&config(None));
        let (one, two) = (ConnId(1), ConnId(2));
        ledger.claim_name(one, name("alice")).unwrap();
        ledger.claim_name(two, name("bob")).unwrap();
        assert_eq!(
            ledger.rename(one, &name("alice"), name("BOB")),
            Err(Taken(name("BOB")))
        );
        assert_eq!(ledger.holder(&name("alice")), Some(one));
        let claim = ledger.rename(one, &name("alice"), name("carol")).unwrap();
        assert_eq!(claim.into_username(), name("carol"));
        assert_eq!(ledger.holder(&name("alice")), None);
        assert_eq!(ledger.holder(&name("carol")), Some(one));
        // A change of case keeps the name.
        assert!(ledger.rename(one, &name("carol"), name("Carol")).is_ok());
        assert_eq!(ledger.holder(&name("carol")), Some(one));
    }

    #[test]
    fn members_join_in_order_and_an_empty_room_closes_except_the_default() {
        let mut ledger = Ledger::new(&config(None));
        let (one, two) = (ConnId(1), ConnId(2));
        assert_eq!(ledger.members(&room("lobby")), Some(&[][..]));
        assert_eq!(ledger.members(&room("den")), None);
        assert_eq!(ledger.join(one, &room("den")), &[one]);
        assert_eq!(ledger.join(two, &room("den")), &[one, two]);
        ledger.join(one, &room("lobby"));
        let rooms: Vec<_> = ledger.rooms().collect();
        assert_eq!(rooms, vec![(&room("den"), 2), (&room("lobby"), 1)]);
        assert_eq!(ledger.part(one, &room("den")), Parted::Kept);
        assert_eq!(ledger.members(&room("den")), Some(&[two][..]));
        assert_eq!(ledger.part(two, &room("den")), Parted::Closed);
        assert_eq!(ledger.members(&room("den")), None);
        assert_eq!(ledger.part(one, &room("lobby")), Parted::Kept);
        assert_eq!(ledger.members(&room("lobby")), Some(&[][..]));
    }

    #[test]
    fn everyone_leaving_frees_every_name_and_empties_every_room() {
        let mut ledger = Ledger::new(&config(None));
        ledger.claim_name(ConnId(1), name("alice")).unwrap();
        ledger.join(ConnId(1), &room("den"));
        ledger.release_everyone();
        assert_eq!(ledger.holder(&name("alice")), None);
        assert_eq!(ledger.members(&room("den")), Some(&[][..]));
    }

    #[test]
    fn ids_grow_by_one_across_rooms_and_private_messages() {
        let mut ledger = Ledger::new(&config(None));
        let first = say(&mut ledger, "lobby", "a").message;
        let private = ledger
            .stamp(Target::User(name("bob")), name("alice"), "b".into(), NOW)
            .unwrap();
        let third = say(&mut ledger, "den", "c").message;
        assert_eq!((first.id, private.id, third.id), (1, 2, 3));
        assert_eq!(first.ts, NOW.unix_ms);
        assert!(ledger.id_reservation() > third.id);
        assert!(ledger.take_id_reservation().is_some());
        assert_eq!(ledger.take_id_reservation(), None);
    }

    #[test]
    fn ids_continue_after_a_restore_and_are_refused_once_exhausted() {
        let mut ledger = Ledger::new(&config(None));
        ledger.restore_next_id(500).unwrap();
        assert_eq!(say(&mut ledger, "lobby", "a").message.id, 500);
        ledger.restore_next_id(MAX_MESSAGE_ID).unwrap();
        assert_eq!(say(&mut ledger, "lobby", "b").message.id, MAX_MESSAGE_ID);
        for _ in 0..2 {
            let refused = ledger.post(room("lobby"), name("alice"), "c".into(), NOW);
            assert!(matches!(refused, Err(Refusal::IdsExhausted)));
        }
        assert!(ledger.has_logged_ids_exhausted);
    }

    #[test]
    fn history_keeps_the_newest_posts_per_room_and_answers_ranges() {
        let mut ledger = Ledger::new(&config(Some(10)));
        let first = say(&mut ledger, "lobby", "one");
        assert_eq!(first.record, Record::Kept { evicted: vec![] });
        say(&mut ledger, "den", "elsewhere");
        say(&mut ledger, "lobby", "two");
        say(&mut ledger, "lobby", "three");
        let lobby = room("lobby");
        // history_keep = 2: the oldest lobby message is gone.
        assert_eq!(
            texts(&ledger.backlog(&lobby, 10, usize::MAX)),
            ["two", "three"]
        );
        assert_eq!(texts(&ledger.backlog(&lobby, 1, usize::MAX)), ["three"]);
        let after = ledger.history_after(&lobby, 3, 10, usize::MAX);
        assert_eq!(texts(&after), ["three"]);
        assert!(!after.gap);
        assert!(ledger.history_after(&lobby, 0, 10, usize::MAX).gap);
        assert_eq!(ledger.take_unwritten_history().len(), 4);
        assert_eq!(ledger.history().len(), 3);
    }

    #[test]
    fn with_history_off_nothing_is_kept() {
        let mut ledger = Ledger::new(&config(None));
        assert_eq!(say(&mut ledger, "lobby", "one").record, Record::Off);
        assert!(ledger.history().is_empty());
        assert!(ledger.take_unwritten_history().is_empty());
    }

    #[test]
    fn restored_history_continues_ids_and_skips_ids_too_high() {
        let mut ledger = Ledger::new(&config(Some(10)));
        let mut kept = say(&mut ledger, "lobby", "old").message;
        let mut too_high = kept.clone();
        kept.id = 41;
        too_high.id = MAX_MESSAGE_ID + 1;
        let mut fresh = Ledger::new(&config(Some(10)));
        assert_eq!(fresh.restore_history([kept, too_high]), 1);
        assert_eq!(
            texts(&fresh.backlog(&room("lobby"), 10, usize::MAX)),
            ["old"]
        );
        assert_eq!(say(&mut fresh, "lobby", "new").message.id, 42);
    }
}
