//! Hub tests: scripted connections drive the hub through its public API only
//! (`handle_*`, `fate`, `flush`, and the test-only `outbox_mut`, `state`,
//! `with_output`) and read
//! back exactly what each connection would receive on the wire.

use super::*;
use crate::outbox::Flushed;
use crate::proto::{ChatMessage, MAX_MESSAGE_BYTES, MAX_REF_BYTES, Target};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// The default room of every test hub.
const LOBBY: &str = "lobby";
/// 2023-11-14 22:13:20 UTC, the clock of every test unless a test moves it.
const TS: u64 = 1_700_000_000_000;
/// How `TS` reads in a text-mode line.
const TS_CLOCK: &str = "22:13:20";
/// The shared password of password-auth test hubs.
const SECRET: &str = "s3cret";
/// Large enough that no test client is cut off unless a test wants it.
const PLENTY_OF_OUTPUT: usize = 1 << 30;

/// A hub plus the bookkeeping a test needs: fresh connection ids and a clock.
struct Chat {
    hub: Hub,
    next_conn: usize,
    now: Now,
}

/// Open auth, no history, no limits that tests do not ask for.
fn test_config() -> HubConfig {
    HubConfig::for_tests()
}

impl Chat {
    fn open() -> Chat {
        Chat::with(Auth::Open, PLENTY_OF_OUTPUT)
    }

    fn with_password() -> Chat {
        Chat::with(
            Auth::Password {
                secret: SECRET.as_bytes().to_vec(),
            },
            PLENTY_OF_OUTPUT,
        )
    }

    fn with(auth: Auth, max_output_bytes: usize) -> Chat {
        Chat {
            hub: Hub::new(HubConfig {
                auth,
                max_output_bytes,
                ..test_config()
            }),
            next_conn: 0,
            now: Now {
                unix_ms: TS,
                mono_ms: 0,
            },
        }
    }

    /// A new connection; its greeting is left unread.
    fn connect(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.hub.handle_connected(
            conn,
            SocketAddr::from(([127, 0, 0, 1], 40_000)),
            Wire::Plain,
            Now::default(),
        );
        conn
    }

    /// True once the session has left and the shell would close it once
    /// flushed (`Fate::Leaving`).
    fn is_leaving(&self, conn: ConnId) -> bool {
        self.hub.fate(conn) == Fate::Leaving
    }

    /// Why the connection is to be closed at once, if it is.
    fn cut_off(&self, conn: ConnId) -> Option<CutOff> {
        match self.hub.fate(conn) {
            Fate::CutOff(cut_off) => Some(cut_off),
            _ => None,
        }
    }

    /// What the shell does after a flush the socket took nothing of: true
    /// if the hub answered that the client is cut off (a slow consumer).
    fn stalled_flush(&mut self, conn: ConnId) -> bool {
        let after = self.hub.flush(conn, |outbox, _| {
            Ok(if outbox.is_empty() {
                Flushed::All
            } else {
                Flushed::Partly
            })
        });
        matches!(after, Ok(AfterFlush::CutOff(_)))
    }

    /// One line, as one loop turn: what is not read before the next
    /// line has been sealed out of the turn arena, as in the server.
    fn send(&mut self, conn: ConnId, line: &str) {
        self.hub.handle_line(conn, line, self.now);
        self.hub.end_turn();
    }

    fn send_json(&mut self, conn: ConnId, frame: Value) {
        self.send(conn, &frame.to_string());
    }

    /// Everything the connection is owed, as the socket would get it.
    fn raw(&mut self, conn: ConnId) -> String {
        let mut bytes = Vec::new();
        if let Some(written) = self
            .hub
            .with_output(conn, |outbox, arena| outbox.write_to(arena, &mut bytes))
        {
            written.expect("a Vec takes every byte it is offered");
        }
        String::from_utf8(bytes).expect("the hub only sends UTF-8")
    }

    fn received_text(&mut self, conn: ConnId) -> Vec<String> {
        self.raw(conn).lines().map(str::to_owned).collect()
    }

    fn received(&mut self, conn: ConnId) -> Vec<Value> {
        self.received_text(conn)
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?}: {error}"))
            })
            .collect()
    }

    fn codes(&mut self, conn: ConnId) -> Vec<u64> {
        self.received(conn)
            .iter()
            .map(|frame| frame["code"].as_u64().expect("every frame has a code"))
            .collect()
    }

    /// Reads and drops everything every connection is owed.
    fn clear_all(&mut self) {
        for index in 0..self.next_conn {
            self.raw(ConnId(index));
        }
    }

    /// A JSON user logged in on an open hub; its own output is read.
    fn login(&mut self, name: &str) -> ConnId {
        let conn = self.connect();
        self.send_json(conn, json!({"code": 110, "username": name}));
        let codes = self.codes(conn);
        assert_eq!(codes, vec![210, 202, 201], "login of {name}");
        conn
    }

    /// A JSON user logged in on a password hub; its own output is read.
    fn login_with_password(&mut self, name: &str) -> ConnId {
        let conn = self.connect();
        self.send_json(conn, json!({"code": 110, "username": name}));
        self.send_json(conn, json!({"code": 111, "password": SECRET}));
        let codes = self.codes(conn);
        assert_eq!(codes, vec![210, 211, 202, 201], "login of {name}");
        conn
    }

    /// A text-mode user logged in on an open hub; its own output is read.
    fn login_text(&mut self, name: &str) -> ConnId {
        let conn = self.connect();
        self.send(conn, name);
        let lines = self.received_text(conn);
        assert_eq!(lines.len(), 3, "login of {name}: {lines:?}");
        assert_eq!(lines[1], format!("* you are now {name}"));
        conn
    }

    /// Asserts the connection received exactly one error frame, with this
    /// code and an error text containing `needle`.
    #[track_caller]
    fn expect_error(&mut self, conn: ConnId, code: u64, needle: &str) {
        let frames = self.received(conn);
        assert_eq!(frames.len(), 1, "expected one {code} frame, got {frames:?}");
        assert_eq!(frames[0]["code"], code, "{frames:?}");
        let error = frames[0]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error text in {frames:?}"));
        assert!(error.contains(needle), "{error:?} lacks {needle:?}");
    }

    fn state_of(&self, conn: ConnId) -> Option<State> {
        self.hub.state(conn).cloned()
    }
}

fn user(name: &str) -> Username {
    Username::parse(name).expect("test names are valid")
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("test rooms are valid")
}

fn broadcast(name: &str) -> State {
    State::Broadcast {
        username: user(name),
    }
}

fn say(text: &str) -> Value {
    json!({"code": 100, "message": text})
}

fn say_in(room: &str, text: &str) -> Value {
    json!({"code": 100, "message": text, "room": room})
}

fn dm(to: &str, text: &str) -> Value {
    json!({"code": 102, "to": to, "message": text})
}

fn join(room: &str) -> Value {
    json!({"code": 104, "room": room})
}

fn part(room: &str) -> Value {
    json!({"code": 105, "room": room})
}

fn rename(name: &str) -> Value {
    json!({"code": 101, "username": name})
}

fn room_message(id: u64, ts: u64, room: &str, from: &str, text: &str) -> Value {
    json!({"code": 200, "message": {"id": id, "ts": ts, "room": room, "from": from, "text": text}})
}

fn direct_message(id: u64, ts: u64, to: &str, from: &str, text: &str) -> Value {
    json!({"code": 200, "message": {"id": id, "ts": ts, "to": to, "from": from, "text": text}})
}

fn joined(name: &str, room: &str) -> Value {
    json!({"code": 201, "new": name, "room": room})
}

fn your_name(name: &str) -> Value {
    json!({"code": 202, "new": name})
}

fn renamed(old: &str, new: &str) -> Value {
    json!({"code": 203, "old": old, "new": new})
}

fn left_room(name: &str, room: &str) -> Value {
    json!({"code": 204, "username": name, "room": room})
}

fn quit(name: &str) -> Value {
    json!({"code": 204, "username": name})
}

fn room_list(rooms: &[(&str, usize)]) -> Value {
    let rooms: Vec<Value> = rooms
        .iter()
        .map(|(name, users)| json!({"name": name, "users": users}))
        .collect();
    json!({"code": 212, "rooms": rooms})
}

fn message_ids(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|frame| frame["code"] == 200)
        .map(|frame| frame["message"]["id"].as_u64().expect("ids are integers"))
        .collect()
}

mod clients;
mod cluster;
mod login;
mod logs;
mod messages;
mod random;
mod refs;
mod rooms;
mod session;
mod text;
