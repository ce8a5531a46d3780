//! Rooms and presence: JOIN, PART, WHO, ROOMS and RENAME, who shares a room
//! with whom (neighbours), quiet rooms that announce no joins and leaves,
//! and leaving the server. Who is in which room and who holds which name
//! are the ledger's to decide; this file asks it and announces the answer.

use super::ledger::{Claim, Parted};
use super::refusal::Refusal;
use super::{ConnId, Hub};
use crate::proto::{AuthKind, BACKLOG_FRAME_BYTES, MAX_NAME_BYTES, RoomName, ServerMsg, Username};
use crate::session::{Input, Mode, State};
use std::collections::HashSet;

/// Rooms one user may be in at once.
pub const MAX_ROOMS_PER_USER: usize = 20;
/// Names per 206 frame, so a WHO of a huge room stays within line limits.
pub const WHO_CHUNK: usize = 200;
/// Rooms per 212 frame, for the same reason.
pub const ROOMS_CHUNK: usize = 200;
/// Most bytes one name adds to a 206 (JSON: quotes and a comma).
pub(super) const WHO_ENTRY_BYTES: usize = MAX_NAME_BYTES + 3;
/// Most bytes one room adds to a 212 (JSON: `{"name":"…","users":N},`).
pub(super) const ROOMS_ENTRY_BYTES: usize = MAX_NAME_BYTES + 42;
/// Bytes a 206 or 212 frame spends besides its entries.
pub(super) const LIST_FRAME_BYTES: usize = 128;

/// A room with `members` is too big to announce joins and leaves
/// (`quiet_room_size`, 0 = never).
fn is_quiet(members: &[ConnId], quiet_room_size: usize) -> bool {
    is_quiet_count(members.len(), quiet_room_size)
}

/// A room of `count` members is quiet (`quiet_room_size`, 0 = never).
pub(super) fn is_quiet_count(count: usize, quiet_room_size: usize) -> bool {
    quiet_room_size > 0 && count > quiet_room_size
}

/// Splits a list answer into frames of at most `chunk` entries, as many
/// frames as fit in `cap` bytes (each entry at most `entry_bytes`, each frame
/// `LIST_FRAME_BYTES` more), and always one frame, if only an empty one.
pub(super) fn capped_chunks<T>(
    items: &[T],
    chunk: usize,
    entry_bytes: usize,
    cap: usize,
) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut used = LIST_FRAME_BYTES;
    for piece in items.chunks(chunk) {
        let size = LIST_FRAME_BYTES.saturating_add(piece.len().saturating_mul(entry_bytes));
        if used.saturating_add(size) > cap {
            break;
        }
        used = used.saturating_add(size);
        chunks.push(piece);
    }
    if chunks.is_empty() {
        chunks.push(&items[..0]);
    }
    chunks
}

/// Which of a connection's rooms `Hub::neighbours` looks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rooms {
    /// Every room (a rename is news in quiet rooms too).
    All,
    /// Rooms that announce presence (not quiet ones): for joins and leaves.
    Announcing,
}

impl Hub {
    pub(super) fn current_room(&self, conn: ConnId) -> Option<RoomName> {
        self.clients.get(conn)?.rooms.last().cloned()
    }

    /// The named room, or the current one when none is named.
    pub(super) fn room_or_current(
        &self,
        conn: ConnId,
        room: Option<RoomName>,
    ) -> Result<RoomName, Refusal> {
        match room {
            Some(room) => Ok(room),
            None => self.current_room(conn).ok_or(Refusal::InNoRoom),
        }
    }

    pub(super) fn is_member(&self, conn: ConnId, room: &RoomName) -> bool {
        self.clients
            .get(conn)
            .is_some_and(|client| client.rooms.contains(room))
    }

    /// RENAME, the asking half: the ledger moves the name, then `renamed`
    /// announces it.
    pub(super) fn rename(
        &mut self,
        conn: ConnId,
        old: Username,
        new: Username,
    ) -> Result<(), Refusal> {
        if self.config.auth.kind() == AuthKind::Accounts {
            // A name is an account here: appearing under another one would
            // impersonate its owner (issue 11, item 1).
            return Err(Refusal::NamesAreAccounts);
        }
        if self.cluster.is_some() {
            // Moved cluster-wide; `handle_cluster` applies it.
            return self.cluster_claim(conn, new, Some(old), false);
        }
        let claim = self.ledger.rename(conn, &old, new)?;
        self.renamed(conn, old, claim);
        Ok(())
    }

    /// RENAME, the applying half: the session takes the granted name, and
    /// it and everyone who shares a room with it are told.
    pub(super) fn renamed(&mut self, conn: ConnId, old: Username, claim: Claim) {
        let new = claim.into_username();
        self.transition(
            conn,
            Input::Renamed {
                username: new.clone(),
            },
        );
        if let Some(client) = self.clients.get(conn) {
            log::info!("{} renamed {old} -> {new}", client.tag(conn));
        }
        self.answer(
            conn,
            &ServerMsg::YourName {
                username: new.clone(),
            },
        );
        let neighbours = self.neighbours(conn, Rooms::All);
        self.clients
            .deliver(&neighbours, &ServerMsg::Renamed { old, new });
    }

    /// Everyone who shares one of `conn`'s rooms (`which` of them) with it,
    /// once each, not `conn`: with `Rooms::Announcing`, members of quiet
    /// rooms (presence is not announced there) are left out unless they
    /// share a room that is not quiet.
    pub(super) fn neighbours(&self, conn: ConnId, which: Rooms) -> Vec<ConnId> {
        let Some(client) = self.clients.get(conn) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        client
            .rooms
            .iter()
            .filter_map(|room| Some((room, self.ledger.members(room)?)))
            .filter(|(room, members)| which == Rooms::All || !self.is_room_quiet(room, members))
            .flat_map(|(_, members)| members.iter().copied())
            .filter(|&member| member != conn && seen.insert(member))
            .collect()
    }

    pub(super) fn is_quiet(&self, members: &[ConnId]) -> bool {
        is_quiet(members, self.config.quiet_room_size)
    }

    /// Whether `room` (whose local members are `members`) is quiet: in a
    /// cluster, counted over every node.
    pub(super) fn is_room_quiet(&self, room: &RoomName, members: &[ConnId]) -> bool {
        match &self.cluster {
            None => self.is_quiet(members),
            Some(cluster) => is_quiet_count(
                cluster.count(room).max(members.len()),
                self.config.quiet_room_size,
            ),
        }
    }

    pub(super) fn who(&mut self, conn: ConnId, room: Option<RoomName>) -> Result<(), Refusal> {
        let room = self.room_or_current(conn, room)?;
        if self.cluster.is_some() {
            // Everyone on every node; `handle_cluster` answers.
            self.cluster_who(conn, room);
            return Ok(());
        }
        let members = self
            .ledger
            .members(&room)
            .ok_or_else(|| Refusal::NoSuchRoom(room.clone()))?;
        let users: Vec<Username> = members
            .iter()
            .filter_map(|&member| self.clients.get(member)?.state.username().cloned())
            .collect();
        self.send_who(conn, room, users);
        Ok(())
    }

    /// WHO, the applying half: the names in 206 frames within the answer's
    /// share of the output cap.
    pub(super) fn send_who(&mut self, conn: ConnId, room: RoomName, users: Vec<Username>) {
        let chunks = capped_chunks(&users, WHO_CHUNK, WHO_ENTRY_BYTES, self.answer_cap());
        let last = chunks.len() - 1;
        let omitted = users.len() - chunks.iter().map(|chunk| chunk.len()).sum::<usize>();
        for (index, chunk) in chunks.into_iter().enumerate() {
            self.answer(
                conn,
                &ServerMsg::Users {
                    room: room.clone(),
                    users: chunk.to_vec(),
                    more: index < last,
                    omitted: if index == last { omitted } else { 0 },
                },
            );
        }
    }

    /// ROOMS: every room with its member count, sorted by name, in 212
    /// frames of at most `ROOMS_CHUNK` rooms, the whole answer within its
    /// share of the output cap (`omitted` counts the rooms left out).
    pub(super) fn room_list(&mut self, conn: ConnId) {
        if self.cluster.is_some() {
            // Every node's rooms; `handle_cluster` answers.
            self.cluster_rooms(conn);
            return;
        }
        let rooms: Vec<(RoomName, usize)> = self
            .ledger
            .rooms()
            .map(|(name, count)| (name.clone(), count))
            .collect();
        self.send_room_list(conn, rooms);
    }

    /// ROOMS, the applying half: 212 frames within the answer's share.
    pub(super) fn send_room_list(&mut self, conn: ConnId, rooms: Vec<(RoomName, usize)>) {
        let chunks = capped_chunks(&rooms, ROOMS_CHUNK, ROOMS_ENTRY_BYTES, self.answer_cap());
        let last = chunks.len() - 1;
        let omitted = rooms.len() - chunks.iter().map(|chunk| chunk.len()).sum::<usize>();
        for (index, chunk) in chunks.into_iter().enumerate() {
            self.answer(
                conn,
                &ServerMsg::RoomList {
                    rooms: chunk.to_vec(),
                    more: index < last,
                    omitted: if index == last { omitted } else { 0 },
                },
            );
        }
    }

    /// JOIN, the asking half: checked against the connection's own rooms,
    /// then `enter_room` applies it.
    pub(super) fn join(
        &mut self,
        conn: ConnId,
        username: Username,
        room: RoomName,
    ) -> Result<(), Refusal> {
        let Some(client) = self.clients.get_mut(conn) else {
            return Ok(());
        };
        if let Some(position) = client.rooms.iter().position(|joined| *joined == room) {
            // Already a member: make it current and confirm to this user only.
            let room = client.rooms.remove(position);
            client.rooms.push(room.clone());
            self.clients
                .send(conn, &ServerMsg::Connected { username, room });
            return Ok(());
        }
        if client.rooms.len() >= MAX_ROOMS_PER_USER {
            return Err(Refusal::TooManyRooms);
        }
        self.enter_room(conn, username, room);
        Ok(())
    }

    /// Entering a room (JOIN, or the default room at login), the applying
    /// half: the ledger records the membership; the members are told (only
    /// the newcomer, in a quiet room) and the newcomer gets the backlog.
    pub(super) fn enter_room(&mut self, conn: ConnId, username: Username, room: RoomName) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.rooms.capacity() == 0 {
            // Most users are in one room: hold exactly that (idle memory).
            client.rooms.reserve_exact(1);
        }
        client.rooms.push(room.clone());
        if self.cluster.is_some() {
            self.cluster_enter_room(conn, username, room);
            return;
        }
        let quiet_room_size = self.config.quiet_room_size;
        let members = self.ledger.join(conn, &room);
        let joined = ServerMsg::Connected {
            username,
            room: room.clone(),
        };
        if is_quiet(members, quiet_room_size) {
            self.clients.send(conn, &joined);
        } else {
            self.clients.deliver(members, &joined);
        }
        if let Some(backlog) = self.config.history_backlog {
            // The 208 must fit in what is left of the client's answer share:
            // the cached JSON frame (built for a client that owes nothing)
            // if it does, else a shorter one, built for this client alone.
            let room_left = self.answer_cap().saturating_sub(self.pending_bytes(conn));
            let budget = self.backlog_budget(conn);
            let full_budget = self
                .full_history_answer()
                .saturating_sub(BACKLOG_FRAME_BYTES);
            let Hub {
                clients,
                ledger,
                join_backlogs,
                ..
            } = self;
            let frame = |budget: usize| {
                let slice = ledger.backlog(&room, backlog, budget);
                ServerMsg::Backlog {
                    room: room.clone(),
                    messages: slice.messages,
                    more: slice.more,
                    gap: slice.gap,
                }
            };
            clients.enqueue_with(conn, |mode, arena| match mode {
                Mode::Json => {
                    let cached =
                        join_backlogs.get_or_encode(&room, || frame(full_budget).to_json_line());
                    if cached.len() <= room_left {
                        arena.append(|out| out.extend_from_slice(&cached))
                    } else {
                        arena.append(|out| frame(budget).write_json_line(out))
                    }
                }
                Mode::Text => {
                    arena.append(|out| out.extend_from_slice(&frame(budget).to_text_lines()))
                }
            });
        }
    }

    /// PART, the asking half: the room must exist and hold the
    /// connection, then `parted` applies it.
    pub(super) fn part(
        &mut self,
        conn: ConnId,
        username: Username,
        room: Option<RoomName>,
    ) -> Result<(), Refusal> {
        let room = self.room_or_current(conn, room)?;
        // In a cluster a member may still wait for the room's subscription,
        // before this node's ledger has the room (never so locally).
        if self.ledger.members(&room).is_none() && !self.is_member(conn, &room) {
            return Err(Refusal::NoSuchRoom(room));
        }
        if !self.is_member(conn, &room) {
            return Err(Refusal::NotInRoom(room));
        }
        self.parted(conn, username, room);
        Ok(())
    }

    /// PART, the applying half: the members, the leaver among them, are
    /// told (only the leaver, in a quiet room), then it leaves the room.
    pub(super) fn parted(&mut self, conn: ConnId, username: Username, room: RoomName) {
        let left = ServerMsg::Disconnected {
            username,
            room: Some(room.clone()),
        };
        match self.ledger.members(&room) {
            Some(members) if !self.is_room_quiet(&room, members) => {
                self.clients.deliver(members, &left);
            }
            // Quiet, or (in a cluster) left before its subscription came.
            _ => self.clients.send(conn, &left),
        }
        self.remove_from_room(conn, &room);
    }

    pub(super) fn remove_from_room(&mut self, conn: ConnId, room: &RoomName) {
        if let Some(client) = self.clients.get_mut(conn) {
            client.rooms.retain(|joined| joined != room);
        }
        if self.ledger.part(conn, room) == Parted::Closed {
            self.join_backlogs.remove(room);
        }
        if self.cluster.is_some()
            && let Some(username) = self.state(conn).and_then(State::username).cloned()
        {
            self.cluster_left_room(conn, &username, room);
        }
    }

    /// Leaves the server: 204 to everyone who shared a room, name freed,
    /// rooms left. Idempotent.
    pub(super) fn leave(&mut self, conn: ConnId) {
        let Some(client) = self.clients.get(conn) else {
            return;
        };
        let username = client.state.username().cloned();
        // Nobody is left to answer: the ref of a PASS under way goes too.
        let _ = self.orphan_pending_check(conn);
        self.cluster_forget(conn);
        if let Some(username) = username {
            let neighbours = self.neighbours(conn, Rooms::Announcing);
            self.clients.deliver(
                &neighbours,
                &ServerMsg::Disconnected {
                    username: username.clone(),
                    room: None,
                },
            );
            self.ledger.release_name(&username);
            self.cluster_release(&username);
        }
        let rooms = self
            .clients
            .get(conn)
            .map(|client| client.rooms.clone())
            .unwrap_or_default();
        for room in &rooms {
            self.remove_from_room(conn, room);
        }
        if self.state(conn).is_some_and(|state| *state != State::Quit) {
            self.transition(conn, Input::Leave);
        }
    }
}
