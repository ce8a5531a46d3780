//! Hub tests: scripted connections drive the hub through its public API only
//! (`handle_*`, `outbox_mut`, `state`, `is_quitting`, `cut_off`) and read
//! back exactly what each connection would receive on the wire.

use super::*;
use crate::proto::MAX_MESSAGE_BYTES;
use proptest::prelude::*;
use serde_json::{Value, json};

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
    HubConfig {
        auth: Auth::Open,
        default_room: room(LOBBY),
        max_output_bytes: PLENTY_OF_OUTPUT,
        require_tls_for_password: false,
        history_backlog: None,
        history_keep: 100,
        history_max_bytes: usize::MAX,
        quiet_room_size: 0,
        auth_timeout_ms: u64::MAX / 4,
        idle_timeout_ms: 0,
        flood_rate: 0.0,
        flood_burst: 1.0,
    }
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
            false,
            Now::default(),
        );
        conn
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

// Greeting and mode.

#[test]
fn a_new_connection_is_greeted_with_210_announcing_open_auth() {
    let mut chat = Chat::open();
    let conn = chat.connect();
    assert_eq!(
        chat.received(conn),
        vec![json!({
            "code": 210,
            "server": "riftd",
            "version": env!("CARGO_PKG_VERSION"),
            "auth": "open",
            "hint": "send JSON frames, or type a username to chat in plain text",
        })]
    );
    assert_eq!(chat.state_of(conn), Some(State::Listen));
}

#[test]
fn a_password_server_greets_with_auth_password() {
    let mut chat = Chat::with_password();
    let conn = chat.connect();
    let frames = chat.received(conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["code"], 210);
    assert_eq!(frames[0]["auth"], "password");
}

#[test]
fn a_first_line_starting_with_a_brace_selects_json_mode() {
    let mut chat = Chat::open();
    let conn = chat.connect();
    chat.received(conn);
    chat.send(conn, r#"{"code":110,"username":"alice"}"#);
    assert_eq!(
        chat.received(conn),
        vec![your_name("alice"), joined("alice", LOBBY)]
    );
    chat.send(conn, "hello there");
    chat.expect_error(conn, 400, "not a JSON object");
    assert_eq!(chat.state_of(conn), Some(broadcast("alice")));
}

#[test]
fn a_first_line_without_a_brace_selects_readable_text_mode() {
    let mut chat = Chat::open();
    let conn = chat.connect();
    chat.received(conn);
    chat.send(conn, "alice");
    assert_eq!(
        chat.received_text(conn),
        vec!["* you are now alice", "* alice joined #lobby"]
    );
    chat.send(conn, "hi");
    assert_eq!(
        chat.received_text(conn),
        vec![format!("[{TS_CLOCK}] #lobby <alice> hi")]
    );
}

#[test]
fn a_leading_space_before_the_brace_selects_text_mode() {
    let mut chat = Chat::open();
    let conn = chat.connect();
    chat.received(conn);
    chat.send(conn, r#" {"code":110,"username":"alice"}"#);
    assert_eq!(
        chat.received_text(conn),
        vec!["! username must be 1-32 letters, digits, '_' or '-' (400)"]
    );
    assert_eq!(chat.state_of(conn), Some(State::UserAuth));
}

#[test]
fn text_and_json_users_see_the_same_events_each_in_their_own_mode() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    let bob = chat.login("bob");
    assert_eq!(chat.received_text(alice), vec!["* bob joined #lobby"]);
    chat.now = Now {
        unix_ms: (12 * 3600 + 60 + 7) * 1000,
        mono_ms: 0,
    };
    chat.send_json(bob, say("hi alice"));
    assert_eq!(
        chat.received_text(alice),
        vec!["[12:01:07] #lobby <bob> hi alice"]
    );
    assert_eq!(
        chat.received(bob),
        vec![room_message(1, 43_267_000, LOBBY, "bob", "hi alice")]
    );
}

// USER in open auth.

#[test]
fn user_in_open_auth_gets_202_then_201_and_present_members_see_201() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.connect();
    chat.received(bob);
    chat.send_json(bob, json!({"code": 110, "username": "bob"}));
    assert_eq!(
        chat.received(bob),
        vec![your_name("bob"), joined("bob", LOBBY)]
    );
    assert_eq!(chat.received(alice), vec![joined("bob", LOBBY)]);
    assert_eq!(chat.state_of(bob), Some(broadcast("bob")));
}

#[test]
fn user_with_an_invalid_name_gets_400_and_stays_in_user_auth() {
    let mut chat = Chat::open();
    let conn = chat.connect();
    chat.received(conn);
    for bad in ["", "al ice", "a.b", "#alice", "é", &"a".repeat(33)] {
        chat.send_json(conn, json!({"code": 110, "username": bad}));
        chat.expect_error(conn, 400, "username must be 1-32");
        assert_eq!(chat.state_of(conn), Some(State::UserAuth), "{bad:?}");
    }
    chat.send_json(conn, json!({"code": 110, "username": "a".repeat(32)}));
    assert_eq!(chat.codes(conn), vec![202, 201]);
}

#[test]
fn user_with_a_name_taken_in_another_case_gets_409() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let other = chat.connect();
    chat.received(other);
    for taken in ["alice", "Alice", "ALICE"] {
        chat.send_json(other, json!({"code": 110, "username": taken}));
        chat.expect_error(other, 409, &format!("username {taken} is taken"));
        assert_eq!(chat.state_of(other), Some(State::UserAuth));
    }
    assert!(chat.received(alice).is_empty());
}

#[test]
fn user_with_a_reserved_name_gets_400() {
    let mut chat = Chat::open();
    let conn = chat.connect();
    chat.received(conn);
    for reserved in ["server", "Server", "riftd", "ADMIN"] {
        chat.send_json(conn, json!({"code": 110, "username": reserved}));
        chat.expect_error(conn, 400, "reserved");
        assert_eq!(chat.state_of(conn), Some(State::UserAuth));
    }
}

// Password auth.

#[test]
fn user_on_a_password_server_gets_211_and_waits_in_pass_auth() {
    let mut chat = Chat::with_password();
    let conn = chat.connect();
    chat.received(conn);
    chat.send_json(conn, json!({"code": 110, "username": "alice"}));
    assert_eq!(chat.received(conn), vec![json!({"code": 211})]);
    assert_eq!(
        chat.state_of(conn),
        Some(State::PassAuth {
            username: user("alice")
        })
    );
}

#[test]
fn the_right_password_logs_in_with_202_and_201_to_the_room() {
    let mut chat = Chat::with_password();
    let alice = chat.login_with_password("alice");
    let bob = chat.connect();
    chat.received(bob);
    chat.send_json(bob, json!({"code": 110, "username": "bob"}));
    assert!(
        chat.received(alice).is_empty(),
        "PASS AUTH is not announced"
    );
    chat.send_json(bob, json!({"code": 111, "password": SECRET}));
    assert_eq!(
        chat.received(bob),
        vec![json!({"code": 211}), your_name("bob"), joined("bob", LOBBY)]
    );
    assert_eq!(chat.received(alice), vec![joined("bob", LOBBY)]);
    assert_eq!(chat.state_of(bob), Some(broadcast("bob")));
}

#[test]
fn a_wrong_password_in_json_mode_gets_401_and_returns_to_user_auth() {
    let mut chat = Chat::with_password();
    let conn = chat.connect();
    chat.received(conn);
    chat.send_json(conn, json!({"code": 110, "username": "alice"}));
    chat.send_json(conn, json!({"code": 111, "password": "S3cret"}));
    let frames = chat.received(conn);
    assert_eq!(
        frames,
        vec![
            json!({"code": 211}),
            json!({"code": 401, "error": "wrong password; send USER again"})
        ]
    );
    assert_eq!(chat.state_of(conn), Some(State::UserAuth));
    assert!(!chat.hub.is_quitting(conn));

    // The name is free for someone else at once ...
    let other = chat.login_with_password("Alice");
    // ... and the failed connection can try again with another name.
    chat.send_json(conn, json!({"code": 110, "username": "alice"}));
    chat.expect_error(conn, 409, "taken");
    chat.send_json(conn, json!({"code": 110, "username": "carol"}));
    chat.send_json(conn, json!({"code": 111, "password": SECRET}));
    assert_eq!(chat.codes(conn), vec![211, 202, 201]);
    assert_eq!(chat.received(other), vec![joined("carol", LOBBY)]);
}

#[test]
fn three_wrong_passwords_close_the_connection() {
    let mut chat = Chat::with_password();
    let conn = chat.connect();
    chat.received(conn);
    for attempt in 1..=3 {
        chat.send_json(conn, json!({"code": 110, "username": "alice"}));
        chat.send_json(conn, json!({"code": 111, "password": "guess"}));
        let frames = chat.received(conn);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[1]["code"], 401);
        assert_eq!(
            chat.hub.is_quitting(conn),
            attempt == 3,
            "attempt {attempt}"
        );
    }
    assert_eq!(chat.state_of(conn), Some(State::Quit));
    chat.send_json(conn, json!({"code": 110, "username": "alice"}));
    assert!(chat.received(conn).is_empty(), "a quitting session is deaf");
    // The name was released by the last failure.
    chat.login_with_password("alice");
}

#[test]
fn issue_11_a_name_is_held_only_once_its_password_is_verified() {
    let mut chat = Chat::with_password();
    let squatter = chat.connect();
    chat.send_json(squatter, json!({"code": 110, "username": "alice"}));
    let owner = chat.connect();
    chat.clear_all();
    // USER alone holds nothing: the owner is asked for the password too.
    chat.send_json(owner, json!({"code": 110, "username": "ALICE"}));
    assert_eq!(chat.received(owner), vec![json!({"code": 211})]);
    chat.send_json(owner, json!({"code": 111, "password": SECRET}));
    assert_eq!(
        chat.received(owner),
        vec![your_name("ALICE"), joined("ALICE", LOBBY)]
    );
    // The one who came first, verified later, finds the name taken: 409,
    // back in USER AUTH, no failure counted.
    chat.send_json(squatter, json!({"code": 111, "password": SECRET}));
    chat.expect_error(squatter, 409, "username alice is taken");
    assert_eq!(chat.state_of(squatter), Some(State::UserAuth));
    assert!(chat.received(owner).is_empty(), "nothing is announced");
    chat.send_json(squatter, json!({"code": 110, "username": "carol"}));
    chat.send_json(squatter, json!({"code": 111, "password": SECRET}));
    assert_eq!(chat.codes(squatter), vec![211, 202, 201]);
}

#[test]
fn issue_11_a_text_user_whose_name_was_taken_during_the_check_is_closed_not_sent_back_to_the_name_prompt()
 {
    // What the person types next was meant for the password prompt: read as
    // a username it could be announced, so the connection closes.
    let mut chat = Chat::with_password();
    let text = chat.connect();
    chat.send(text, "alice");
    chat.login_with_password("ALICE");
    chat.raw(text);
    chat.send(text, SECRET);
    let lines = chat.received_text(text);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("was taken") && lines[0].ends_with("(409)"),
        "{lines:?}"
    );
    assert!(chat.hub.is_quitting(text));
}

#[test]
fn a_name_waiting_for_its_password_can_be_taken_by_rename_and_its_pass_then_gets_409() {
    let mut chat = Chat::with_password();
    let bob = chat.login_with_password("bob");
    let pending = chat.connect();
    chat.send_json(pending, json!({"code": 110, "username": "alice"}));
    chat.clear_all();
    chat.send_json(bob, rename("alice"));
    assert_eq!(chat.received(bob), vec![your_name("alice")]);
    chat.send_json(pending, json!({"code": 111, "password": SECRET}));
    chat.expect_error(pending, 409, "taken");
    assert_eq!(chat.state_of(bob), Some(broadcast("alice")));
}

#[test]
fn closing_in_pass_auth_leaves_the_name_free() {
    let mut chat = Chat::with_password();
    let pending = chat.connect();
    chat.send_json(pending, json!({"code": 110, "username": "alice"}));
    chat.hub.handle_closed(pending);
    assert_eq!(chat.state_of(pending), None);
    chat.login_with_password("alice");

    let quitter = chat.connect();
    chat.send_json(quitter, json!({"code": 110, "username": "bob"}));
    chat.send_json(quitter, json!({"code": 109}));
    assert!(chat.hub.is_quitting(quitter));
    chat.login_with_password("bob");
}

#[test]
fn a_text_user_on_a_password_server_is_asked_for_the_password_again_after_a_wrong_one() {
    let mut chat = Chat::with_password();
    let conn = chat.connect();
    chat.received(conn);
    chat.send(conn, "alice");
    assert_eq!(chat.received_text(conn), vec!["* password:"]);
    chat.send(conn, "s3cret ");
    assert_eq!(
        chat.received_text(conn),
        vec![
            "! wrong password; type it again, or /quit (401)",
            "* password:"
        ]
    );
    assert_eq!(
        chat.state_of(conn),
        Some(State::PassAuth {
            username: user("alice")
        })
    );
    chat.send(conn, SECRET);
    assert_eq!(
        chat.received_text(conn),
        vec!["* you are now alice", "* alice joined #lobby"]
    );
}

#[test]
fn issue_11_a_retyped_password_is_read_as_a_password_never_announced_as_a_name() {
    // The attack: a person mistypes, then retypes the password, which the
    // server used to read as a username and announce to the lobby.
    let mut chat = Chat::with_password();
    let lobby = chat.login_with_password("watcher");
    let conn = chat.connect();
    chat.send(conn, "alice");
    chat.send(conn, "Tr0ub4dor");
    chat.send(conn, SECRET);
    assert_eq!(chat.received(lobby), vec![joined("alice", LOBBY)]);
    assert!(chat.raw(conn).contains("* you are now alice"));
    assert_eq!(chat.state_of(conn), Some(broadcast("alice")));
    // In text mode every wrong password keeps the password prompt, up to
    // the third, which closes.
    let typo = chat.connect();
    chat.send(typo, "bob");
    for _ in 0..MAX_PASSWORD_FAILURES {
        chat.send(typo, "Tr0ub4dor");
    }
    let lines = chat.received_text(typo);
    assert_eq!(
        lines.iter().filter(|line| *line == "* password:").count(),
        usize::from(MAX_PASSWORD_FAILURES),
        "{lines:?}"
    );
    assert!(chat.hub.is_quitting(typo));
    assert!(chat.raw(lobby).is_empty(), "nothing reached the lobby");
}

#[test]
fn issue_11_quit_and_help_at_the_password_prompt_are_commands_not_failed_passwords() {
    let mut chat = Chat::with_password();
    let conn = chat.connect();
    chat.send(conn, "alice");
    chat.clear_all();
    for _ in 0..MAX_PASSWORD_FAILURES {
        chat.send(conn, "/help");
    }
    let lines = chat.received_text(conn);
    assert!(lines.iter().all(|line| line.starts_with('*')), "{lines:?}");
    assert!(
        lines.iter().any(|line| line.contains("/history")),
        "{lines:?}"
    );
    assert!(!chat.hub.is_quitting(conn), "/help counted as a failure");
    assert!(matches!(chat.state_of(conn), Some(State::PassAuth { .. })));
    chat.send(conn, "/quit");
    assert!(chat.hub.is_quitting(conn));
    assert!(
        !chat.raw(conn).contains("401"),
        "/quit counted as a failed password"
    );
}

// Legality of every code in every state.

/// One well-formed frame for each client code.
fn one_frame_of_every_client_code() -> Vec<(u64, Value)> {
    vec![
        (100, say("hi")),
        (101, rename("zed")),
        (102, dm("zed", "hi")),
        (103, json!({"code": 103})),
        (104, join("elsewhere")),
        (105, part(LOBBY)),
        (107, json!({"code": 107})),
        (108, json!({"code": 108})),
        (109, json!({"code": 109})),
        (110, json!({"code": 110, "username": "zed"})),
        (111, json!({"code": 111, "password": "pw"})),
    ]
}

/// A fresh hub with one connection in the named state, its output read.
fn session_in(state_name: &str) -> (Chat, ConnId) {
    match state_name {
        "USER AUTH" => {
            let mut chat = Chat::with_password();
            let conn = chat.connect();
            chat.send_json(conn, json!({"code": 108}));
            chat.received(conn);
            (chat, conn)
        }
        "PASS AUTH" => {
            let mut chat = Chat::with_password();
            let conn = chat.connect();
            chat.send_json(conn, json!({"code": 110, "username": "alice"}));
            chat.received(conn);
            (chat, conn)
        }
        "BROADCAST" => {
            let mut chat = Chat::open();
            let conn = chat.login("alice");
            (chat, conn)
        }
        _ => unreachable!("no such test state {state_name}"),
    }
}

#[test]
fn every_code_outside_its_states_gets_403_naming_the_state_and_changes_nothing() {
    let legal: [(&str, &[u64]); 3] = [
        ("USER AUTH", &[108, 109, 110]),
        ("PASS AUTH", &[108, 109, 111]),
        ("BROADCAST", &[100, 101, 102, 103, 104, 105, 107, 108, 109]),
    ];
    for (state_name, allowed) in legal {
        for (code, frame) in one_frame_of_every_client_code() {
            let (mut chat, conn) = session_in(state_name);
            let before = chat.state_of(conn);
            assert_eq!(before.as_ref().map(State::name), Some(state_name));
            chat.send_json(conn, frame);
            let frames = chat.received(conn);
            if allowed.contains(&code) {
                assert!(
                    frames.iter().all(|frame| frame["code"] != 403),
                    "{code} in {state_name} is legal, got {frames:?}"
                );
            } else {
                assert_eq!(
                    frames,
                    vec![json!({
                        "code": 403,
                        "error": format!("code {code} is not allowed in state {state_name}"),
                    })],
                    "{code} in {state_name}"
                );
                assert_eq!(chat.state_of(conn), before, "{code} in {state_name}");
            }
        }
    }
}

#[test]
fn say_before_login_gets_403() {
    let mut chat = Chat::open();
    let conn = chat.connect();
    chat.received(conn);
    chat.send_json(conn, say("hi"));
    chat.expect_error(conn, 403, "USER AUTH");
    assert_eq!(chat.state_of(conn), Some(State::UserAuth));
}

#[test]
fn a_second_user_after_login_gets_403_in_broadcast() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.send_json(alice, json!({"code": 110, "username": "bob"}));
    chat.expect_error(alice, 403, "code 110 is not allowed in state BROADCAST");
    assert_eq!(chat.state_of(alice), Some(broadcast("alice")));
}

#[test]
fn pass_before_user_gets_403_in_user_auth() {
    let mut chat = Chat::with_password();
    let conn = chat.connect();
    chat.received(conn);
    chat.send_json(conn, json!({"code": 111, "password": SECRET}));
    chat.expect_error(conn, 403, "code 111 is not allowed in state USER AUTH");
    assert_eq!(chat.state_of(conn), Some(State::UserAuth));
}

// SAY.

#[test]
fn say_reaches_every_member_of_the_current_room_including_the_sender() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let carol = chat.login("carol");
    chat.send_json(carol, join("side"));
    chat.send_json(carol, part(LOBBY));
    chat.clear_all();
    chat.send_json(alice, say("hi"));
    let expected = room_message(1, TS, LOBBY, "alice", "hi");
    assert_eq!(chat.received(alice), vec![expected.clone()]);
    assert_eq!(chat.received(bob), vec![expected]);
    assert!(chat.received(carol).is_empty());
}

#[test]
fn say_with_an_explicit_room_goes_to_that_room_only() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.send_json(alice, join("side"));
    chat.send_json(alice, join(LOBBY));
    chat.clear_all();
    chat.send_json(alice, say_in("#Side", "over here"));
    assert_eq!(
        chat.received(alice),
        vec![room_message(1, TS, "side", "alice", "over here")]
    );
    assert!(chat.received(bob).is_empty());
    // The explicit room did not become current.
    chat.send_json(alice, say("back"));
    assert_eq!(
        chat.received(bob),
        vec![room_message(2, TS, LOBBY, "alice", "back")]
    );
}

#[test]
fn say_to_a_room_you_are_not_in_gets_403() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.send_json(bob, join("side"));
    chat.clear_all();
    chat.send_json(alice, say_in("side", "let me in"));
    chat.expect_error(alice, 403, "you are not in room side");
    assert!(chat.received(bob).is_empty());
}

#[test]
fn message_ids_increase_strictly_across_rooms_and_dms() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.send_json(alice, join("side"));
    chat.send_json(bob, join("side"));
    chat.clear_all();
    chat.send_json(alice, say("one"));
    chat.send_json(bob, say_in(LOBBY, "two"));
    chat.send_json(bob, dm("alice", "three"));
    chat.send_json(alice, say("four"));
    chat.send_json(alice, dm("bob", "five"));
    assert_eq!(message_ids(&chat.received(alice)), vec![1, 2, 3, 4, 5]);
    assert_eq!(message_ids(&chat.received(bob)), vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_message_carries_the_time_given_to_handle_line() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    for unix_ms in [0, 1, TS, u64::MAX / 2] {
        chat.now = Now {
            unix_ms,
            mono_ms: 0,
        };
        chat.send_json(alice, say("tick"));
        let frames = chat.received(alice);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["message"]["ts"], unix_ms);
    }
}

#[test]
fn an_empty_or_blank_message_gets_400() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    for blank in ["", " ", "\t \t"] {
        chat.send_json(alice, say(blank));
        chat.expect_error(alice, 400, "message is empty");
        chat.send_json(alice, dm("bob", blank));
        chat.expect_error(alice, 400, "message is empty");
    }
    assert!(chat.received(bob).is_empty());
}

#[test]
fn a_message_over_4096_bytes_gets_400_and_one_of_exactly_4096_is_relayed() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.send_json(alice, say(&"x".repeat(MAX_MESSAGE_BYTES + 1)));
    chat.expect_error(alice, 400, "longer than 4096 bytes");
    // 2049 two-byte characters: 4098 bytes, fewer than 4096 characters.
    chat.send_json(alice, say(&"é".repeat(2049)));
    chat.expect_error(alice, 400, "longer than 4096 bytes");
    chat.send_json(alice, dm("alice", &"x".repeat(MAX_MESSAGE_BYTES + 1)));
    chat.expect_error(alice, 400, "longer than 4096 bytes");

    let longest = "x".repeat(MAX_MESSAGE_BYTES);
    chat.send_json(alice, say(&longest));
    assert_eq!(
        chat.received(alice),
        vec![room_message(1, TS, LOBBY, "alice", &longest)]
    );
}

// DM.

#[test]
fn a_dm_reaches_the_target_and_the_sender_with_to() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let carol = chat.login("carol");
    chat.clear_all();
    chat.send_json(alice, dm("bob", "psst"));
    let expected = direct_message(1, TS, "bob", "alice", "psst");
    assert_eq!(chat.received(bob), vec![expected.clone()]);
    assert_eq!(chat.received(alice), vec![expected]);
    assert!(chat.received(carol).is_empty());
}

#[test]
fn a_dm_is_addressed_with_the_name_as_its_holder_spells_it() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("Bob");
    chat.clear_all();
    chat.send_json(alice, dm("BOB", "hey"));
    let expected = direct_message(1, TS, "Bob", "alice", "hey");
    assert_eq!(chat.received(bob), vec![expected.clone()]);
    assert_eq!(chat.received(alice), vec![expected]);
}

#[test]
fn a_dm_needs_no_shared_room() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.send_json(bob, join("side"));
    chat.send_json(bob, part(LOBBY));
    chat.clear_all();
    chat.send_json(alice, dm("bob", "where are you"));
    assert_eq!(
        chat.received(bob),
        vec![direct_message(1, TS, "bob", "alice", "where are you")]
    );
}

#[test]
fn a_dm_to_an_unknown_user_gets_404() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.send_json(alice, dm("zed", "anyone?"));
    chat.expect_error(alice, 404, "no such user zed");
}

#[test]
fn a_user_in_pass_auth_is_not_a_dm_target() {
    let mut chat = Chat::with_password();
    let alice = chat.login_with_password("alice");
    let pending = chat.connect();
    chat.send_json(pending, json!({"code": 110, "username": "bob"}));
    chat.clear_all();
    chat.send_json(alice, dm("bob", "are you there"));
    chat.expect_error(alice, 404, "no such user bob");
    assert!(chat.received(pending).is_empty());
}

#[test]
fn a_dm_to_yourself_is_delivered_once() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    chat.send_json(alice, dm("Alice", "note to self"));
    assert_eq!(
        chat.received(alice),
        vec![direct_message(1, TS, "alice", "alice", "note to self")]
    );
    assert!(chat.received(bob).is_empty());
}

// RENAME.

#[test]
fn rename_sends_202_to_self_and_203_once_to_each_user_sharing_a_room() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let carol = chat.login("carol");
    let dave = chat.login("dave");
    chat.send_json(alice, join("side"));
    chat.send_json(bob, join("side"));
    chat.send_json(alice, join("third"));
    chat.send_json(bob, join("third"));
    chat.send_json(dave, join("other"));
    chat.send_json(dave, part(LOBBY));
    chat.clear_all();

    chat.send_json(alice, rename("alicia"));
    assert_eq!(chat.received(alice), vec![your_name("alicia")]);
    assert_eq!(chat.received(bob), vec![renamed("alice", "alicia")]);
    assert_eq!(chat.received(carol), vec![renamed("alice", "alicia")]);
    assert!(chat.received(dave).is_empty());
    assert_eq!(chat.state_of(alice), Some(broadcast("alicia")));
}

#[test]
fn rename_to_a_taken_name_gets_409_in_any_case() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    for taken in ["bob", "BOB"] {
        chat.send_json(alice, rename(taken));
        chat.expect_error(alice, 409, &format!("username {taken} is taken"));
    }
    assert_eq!(chat.state_of(alice), Some(broadcast("alice")));
    assert!(chat.received(bob).is_empty());
}

#[test]
fn rename_to_an_invalid_or_reserved_name_gets_400() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.send_json(alice, rename("bad name"));
    chat.expect_error(alice, 400, "username must be 1-32");
    chat.send_json(alice, rename("Admin"));
    chat.expect_error(alice, 400, "reserved");
    assert_eq!(chat.state_of(alice), Some(broadcast("alice")));
}

#[test]
fn renaming_to_another_case_of_your_own_name_is_allowed() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    chat.send_json(alice, rename("ALICE"));
    assert_eq!(chat.received(alice), vec![your_name("ALICE")]);
    assert_eq!(chat.received(bob), vec![renamed("alice", "ALICE")]);
    // The name is still held, in every case.
    let other = chat.connect();
    chat.send_json(other, json!({"code": 110, "username": "alice"}));
    assert_eq!(chat.codes(other), vec![210, 409]);
}

#[test]
fn the_old_name_is_free_as_soon_as_a_rename_is_done() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.send_json(alice, rename("alicia"));
    let newcomer = chat.login("Alice");
    chat.clear_all();
    chat.send_json(alice, say("who took my name"));
    assert_eq!(
        chat.received(newcomer),
        vec![room_message(1, TS, LOBBY, "alicia", "who took my name")]
    );
    assert_eq!(chat.codes(alice), vec![200]);
    chat.send_json(newcomer, dm("alicia", "me"));
    assert_eq!(
        chat.received(alice),
        vec![direct_message(2, TS, "alicia", "Alice", "me")]
    );
}

// WHO.

#[test]
fn who_lists_the_current_room_in_join_order() {
    let mut chat = Chat::open();
    let bob = chat.login("bob");
    chat.login("Alice");
    chat.login("carol");
    chat.clear_all();
    chat.send_json(bob, json!({"code": 103}));
    assert_eq!(
        chat.received(bob),
        vec![json!({"code": 206, "room": LOBBY, "users": ["bob", "Alice", "carol"]})]
    );
}

#[test]
fn who_of_a_named_room_lists_it_even_for_a_non_member() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.send_json(bob, join("side"));
    chat.clear_all();
    chat.send_json(alice, json!({"code": 103, "room": "#SIDE"}));
    assert_eq!(
        chat.received(alice),
        vec![json!({"code": 206, "room": "side", "users": ["bob"]})]
    );
}

#[test]
fn who_of_an_empty_default_room_is_one_empty_206() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.send_json(alice, join("side"));
    chat.send_json(alice, part(LOBBY));
    chat.clear_all();
    chat.send_json(alice, json!({"code": 103, "room": LOBBY}));
    assert_eq!(
        chat.received(alice),
        vec![json!({"code": 206, "room": LOBBY, "users": []})]
    );
}

#[test]
fn who_of_a_missing_room_gets_404() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.send_json(alice, json!({"code": 103, "room": "nowhere"}));
    chat.expect_error(alice, 404, "no such room nowhere");
}

#[test]
fn who_of_a_huge_room_is_chunked_with_more_on_every_frame_but_the_last() {
    let mut chat = Chat::open();
    let total = 2 * WHO_CHUNK + 50;
    let names: Vec<String> = (0..total).map(|index| format!("user{index:03}")).collect();
    let first = chat.login(&names[0]);
    for name in &names[1..] {
        chat.login(name);
        chat.raw(first);
    }
    chat.clear_all();
    chat.send_json(first, json!({"code": 103}));
    let frames = chat.received(first);
    assert_eq!(frames.len(), 3);
    let mut listed = Vec::new();
    for (index, frame) in frames.iter().enumerate() {
        assert_eq!(frame["code"], 206);
        assert_eq!(frame["room"], LOBBY);
        let is_last = index == frames.len() - 1;
        if is_last {
            assert_eq!(frame.get("more"), None, "the last chunk has no `more`");
        } else {
            assert_eq!(frame["more"], true);
        }
        let users = frame["users"].as_array().expect("users is an array");
        let expected_len = if is_last { 50 } else { WHO_CHUNK };
        assert_eq!(users.len(), expected_len);
        listed.extend(users.iter().map(|name| name.as_str().unwrap().to_owned()));
    }
    assert_eq!(listed, names);
}

#[test]
fn who_of_a_room_of_exactly_one_chunk_is_a_single_frame() {
    let mut chat = Chat::open();
    let first = chat.login("user000");
    for index in 1..WHO_CHUNK {
        chat.login(&format!("user{index:03}"));
        chat.raw(first);
    }
    chat.clear_all();
    chat.send_json(first, json!({"code": 103}));
    let frames = chat.received(first);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].get("more"), None);
    assert_eq!(frames[0]["users"].as_array().unwrap().len(), WHO_CHUNK);
}

// JOIN, PART and ROOMS.

#[test]
fn join_creates_a_room_and_announces_201_to_its_members() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let carol = chat.login("carol");
    chat.clear_all();
    chat.send_json(alice, join("#Side"));
    assert_eq!(chat.received(alice), vec![joined("alice", "side")]);
    assert!(chat.received(bob).is_empty());
    chat.send_json(bob, join("side"));
    assert_eq!(chat.received(alice), vec![joined("bob", "side")]);
    assert_eq!(chat.received(bob), vec![joined("bob", "side")]);
    assert!(chat.received(carol).is_empty());
    chat.send_json(carol, json!({"code": 107}));
    assert_eq!(
        chat.received(carol),
        vec![room_list(&[(LOBBY, 3), ("side", 2)])]
    );
}

#[test]
fn joining_a_room_again_makes_it_current_and_tells_only_you() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.send_json(alice, join("side"));
    chat.clear_all();
    chat.send_json(alice, join(LOBBY));
    assert_eq!(chat.received(alice), vec![joined("alice", LOBBY)]);
    assert!(chat.received(bob).is_empty());
    chat.send_json(alice, say("back in the lobby"));
    assert_eq!(
        chat.received(bob),
        vec![room_message(1, TS, LOBBY, "alice", "back in the lobby")]
    );
    chat.send_json(alice, json!({"code": 107}));
    assert_eq!(
        chat.received(alice)[1],
        room_list(&[(LOBBY, 2), ("side", 1)]),
        "rejoining does not add a second membership"
    );
}

#[test]
fn joining_a_21st_room_gets_403() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    // The default room counts: 19 more make 20.
    for index in 1..MAX_ROOMS_PER_USER {
        chat.send_json(alice, join(&format!("room{index:02}")));
        assert_eq!(chat.codes(alice), vec![201], "room {index}");
    }
    chat.send_json(alice, join("one-too-many"));
    chat.expect_error(alice, 403, "you are in 20 rooms already");
    chat.send_json(alice, json!({"code": 103, "room": "one-too-many"}));
    chat.expect_error(alice, 404, "no such room");
    // Rejoining a room already held is still fine, and parting makes room.
    chat.send_json(alice, join("room05"));
    assert_eq!(chat.received(alice), vec![joined("alice", "room05")]);
    chat.send_json(alice, part("room01"));
    chat.send_json(alice, join("one-too-many"));
    assert_eq!(
        chat.received(alice),
        vec![
            left_room("alice", "room01"),
            joined("alice", "one-too-many")
        ]
    );
}

#[test]
fn part_sends_204_with_the_room_to_its_members_including_the_parter() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let carol = chat.login("carol");
    chat.send_json(alice, join("side"));
    chat.send_json(bob, join("side"));
    chat.clear_all();
    chat.send_json(alice, part("#side"));
    assert_eq!(chat.received(alice), vec![left_room("alice", "side")]);
    assert_eq!(chat.received(bob), vec![left_room("alice", "side")]);
    assert!(chat.received(carol).is_empty());
    chat.send_json(bob, say_in("side", "alone now"));
    assert_eq!(chat.codes(bob), vec![200]);
    assert!(chat.received(alice).is_empty());
}

#[test]
fn part_of_a_room_not_joined_gets_403_and_of_a_missing_room_404() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.send_json(bob, join("side"));
    chat.clear_all();
    chat.send_json(alice, part("side"));
    chat.expect_error(alice, 403, "you are not in room side");
    chat.send_json(alice, part("nowhere"));
    chat.expect_error(alice, 404, "no such room nowhere");
    assert!(chat.received(bob).is_empty());
}

#[test]
fn an_empty_room_disappears_but_the_default_room_stays() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.send_json(alice, join("side"));
    chat.clear_all();
    chat.send_json(alice, json!({"code": 107}));
    assert_eq!(
        chat.received(alice),
        vec![room_list(&[(LOBBY, 1), ("side", 1)])]
    );
    chat.send_json(alice, part("side"));
    chat.send_json(alice, part(LOBBY));
    chat.clear_all();
    chat.send_json(alice, json!({"code": 107}));
    assert_eq!(chat.received(alice), vec![room_list(&[(LOBBY, 0)])]);
    chat.send_json(alice, json!({"code": 103, "room": "side"}));
    chat.expect_error(alice, 404, "no such room side");
}

#[test]
fn after_parting_the_current_room_say_goes_to_the_room_joined_before() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.send_json(alice, join("side"));
    chat.send_json(bob, join("side"));
    chat.send_json(alice, join("other"));
    chat.send_json(alice, part("other"));
    chat.clear_all();
    chat.send_json(alice, say("still here"));
    assert_eq!(
        chat.received(bob),
        vec![room_message(1, TS, "side", "alice", "still here")]
    );
}

#[test]
fn a_user_in_no_room_gets_403_for_say_and_who_without_a_room() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.send_json(alice, part(LOBBY));
    chat.clear_all();
    chat.send_json(alice, say("hello?"));
    chat.expect_error(alice, 403, "you are in no room");
    chat.send_json(alice, json!({"code": 103}));
    chat.expect_error(alice, 403, "you are in no room");
    // Joining a room still works.
    chat.send_json(alice, join(LOBBY));
    assert_eq!(chat.received(alice), vec![joined("alice", LOBBY)]);
}

// PING.

#[test]
fn ping_echoes_the_token_byte_for_byte() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let cases = [
        (
            r#"{"code":108,"token":"abc"}"#,
            r#"{"code":207,"token":"abc"}"#,
        ),
        (r#"{"code":108,"token":""}"#, r#"{"code":207,"token":""}"#),
        (
            r#"{"code":108,"token":null}"#,
            r#"{"code":207,"token":null}"#,
        ),
        (
            r#"{"code":108,"token":{"a": [1, 2.50], "b": "\u00e9"}}"#,
            r#"{"code":207,"token":{"a": [1, 2.50], "b": "\u00e9"}}"#,
        ),
        (
            r#"{"code":108,"token":12345678901234567890123}"#,
            r#"{"code":207,"token":12345678901234567890123}"#,
        ),
        (r#"{"code":108}"#, r#"{"code":207}"#),
    ];
    for (ping, pong) in cases {
        chat.send(alice, ping);
        assert_eq!(chat.received_text(alice), vec![pong], "{ping}");
    }
}

#[test]
fn ping_is_answered_in_every_live_state() {
    for state_name in ["USER AUTH", "PASS AUTH", "BROADCAST"] {
        let (mut chat, conn) = session_in(state_name);
        let before = chat.state_of(conn);
        chat.send_json(conn, json!({"code": 108, "token": 7}));
        assert_eq!(
            chat.received(conn),
            vec![json!({"code": 207, "token": 7})],
            "{state_name}"
        );
        assert_eq!(chat.state_of(conn), before);
    }
    let mut chat = Chat::open();
    let conn = chat.connect();
    chat.received(conn);
    chat.send_json(conn, json!({"code": 108, "token": "first line"}));
    assert_eq!(
        chat.received(conn),
        vec![json!({"code": 207, "token": "first line"})]
    );
    assert_eq!(chat.state_of(conn), Some(State::UserAuth));
}

// QUIT, EOF, close and shutdown.

/// alice, bob and carol share the lobby; alice and bob also share two more
/// rooms; dave is alone elsewhere. Everyone's output is read.
fn four_users() -> (Chat, [ConnId; 4]) {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let carol = chat.login("carol");
    let dave = chat.login("dave");
    for shared in ["side", "third"] {
        chat.send_json(alice, join(shared));
        chat.send_json(bob, join(shared));
    }
    chat.send_json(dave, join("other"));
    chat.send_json(dave, part(LOBBY));
    chat.clear_all();
    (chat, [alice, bob, carol, dave])
}

#[test]
fn quit_tells_each_user_sharing_a_room_204_once_and_frees_the_name() {
    let (mut chat, [alice, bob, carol, dave]) = four_users();
    chat.send_json(alice, json!({"code": 109}));
    assert!(chat.hub.is_quitting(alice));
    assert_eq!(chat.state_of(alice), Some(State::Quit));
    assert!(chat.received(alice).is_empty());
    assert_eq!(chat.received(bob), vec![quit("alice")]);
    assert_eq!(chat.received(carol), vec![quit("alice")]);
    assert!(chat.received(dave).is_empty());
    chat.login("ALICE");
    chat.send_json(bob, json!({"code": 107}));
    assert_eq!(
        chat.received(bob)[1],
        room_list(&[(LOBBY, 3), ("other", 1), ("side", 1), ("third", 1)])
    );
}

#[test]
fn a_quitting_connection_ignores_further_lines() {
    let (mut chat, [alice, bob, ..]) = four_users();
    chat.send_json(alice, json!({"code": 109}));
    chat.clear_all();
    for line in [
        say("still there?").to_string(),
        json!({"code": 108}).to_string(),
        json!({"code": 110, "username": "alice"}).to_string(),
        "garbage".to_owned(),
        "GET / HTTP/1.1".to_owned(),
    ] {
        chat.send(alice, &line);
        assert!(chat.received(alice).is_empty(), "{line}");
        assert!(chat.received(bob).is_empty(), "{line}");
        assert_eq!(chat.state_of(alice), Some(State::Quit));
    }
}

#[test]
fn eof_behaves_like_quit() {
    let (mut chat, [alice, bob, carol, dave]) = four_users();
    chat.hub.handle_eof(alice);
    assert!(chat.hub.is_quitting(alice));
    assert_eq!(chat.received(bob), vec![quit("alice")]);
    assert_eq!(chat.received(carol), vec![quit("alice")]);
    assert!(chat.received(dave).is_empty());
    // A second EOF and then the close change nothing more.
    chat.hub.handle_eof(alice);
    chat.hub.handle_closed(alice);
    assert!(chat.received(bob).is_empty());
    assert_eq!(chat.state_of(alice), None);
    chat.login("alice");
}

#[test]
fn an_abrupt_close_sends_the_same_204_and_frees_the_name() {
    let (mut chat, [alice, bob, carol, dave]) = four_users();
    chat.hub.handle_closed(alice);
    assert_eq!(chat.state_of(alice), None);
    assert!(!chat.hub.is_quitting(alice));
    assert!(chat.hub.outbox_mut(alice).is_none());
    assert_eq!(chat.received(bob), vec![quit("alice")]);
    assert_eq!(chat.received(carol), vec![quit("alice")]);
    assert!(chat.received(dave).is_empty());
    chat.send_json(bob, dm("alice", "gone?"));
    chat.expect_error(bob, 404, "no such user alice");
    chat.login("alice");
}

#[test]
fn lines_for_a_closed_connection_are_ignored_and_its_id_can_be_reused() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.hub.handle_closed(alice);
    chat.clear_all();
    chat.send_json(alice, say("ghost"));
    chat.hub.handle_codec_error(alice, CodecError::InvalidUtf8);
    chat.hub.handle_eof(alice);
    chat.hub.handle_closed(alice);
    assert_eq!(chat.state_of(alice), None);
    assert!(chat.received(bob).is_empty());

    chat.hub.handle_connected(
        alice,
        SocketAddr::from(([10, 0, 0, 5], 51_234)),
        false,
        Now::default(),
    );
    assert_eq!(chat.state_of(alice), Some(State::Listen));
    chat.send(alice, "newcomer");
    assert_eq!(
        chat.received_text(alice)[1..],
        ["* you are now newcomer", "* newcomer joined #lobby"]
    );
    assert_eq!(chat.received(bob), vec![joined("newcomer", LOBBY)]);
}

#[test]
fn quit_before_login_tells_nobody() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let stranger = chat.connect();
    chat.send(stranger, "/quit");
    assert!(chat.hub.is_quitting(stranger));
    chat.hub.handle_closed(stranger);
    assert!(chat.received(alice).is_empty());
}

#[test]
fn shutdown_sends_205_to_every_connection_and_all_are_quitting() {
    let mut chat = Chat::with_password();
    let alice = chat.login_with_password("alice");
    let bob = chat.connect();
    chat.send(bob, "bob");
    chat.send(bob, SECRET);
    let pending = chat.connect();
    chat.send_json(pending, json!({"code": 110, "username": "carol"}));
    let silent = chat.connect();
    chat.clear_all();

    chat.hub.handle_shutdown();
    assert_eq!(chat.received(alice), vec![json!({"code": 205})]);
    assert_eq!(chat.received_text(bob), vec!["* server going down"]);
    assert_eq!(chat.received(pending), vec![json!({"code": 205})]);
    assert_eq!(chat.received(silent), vec![json!({"code": 205})]);
    for conn in [alice, bob, pending, silent] {
        assert!(chat.hub.is_quitting(conn), "{conn}");
    }
    chat.send_json(alice, say("wait"));
    assert!(chat.received(alice).is_empty());
    assert!(chat.received_text(bob).is_empty());
    // A second signal sends nothing twice.
    chat.hub.handle_shutdown();
    assert!(chat.received(alice).is_empty());
}

#[test]
fn drain_dirty_lists_each_changed_connection_once() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let carol = chat.login("carol");
    let mut dirty = Vec::new();
    chat.hub.drain_dirty(&mut dirty);
    chat.clear_all();
    chat.send_json(alice, say("one"));
    chat.send_json(alice, say("two"));
    chat.send_json(carol, json!({"code": 109}));
    chat.hub.drain_dirty(&mut dirty);
    dirty.sort();
    assert_eq!(dirty, vec![alice, bob, carol]);
    chat.hub.drain_dirty(&mut dirty);
    assert!(dirty.is_empty());
}

// Codec errors and HTTP.

#[test]
fn a_too_long_line_gets_413_and_the_session_goes_on() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.hub
        .handle_codec_error(alice, CodecError::TooLong { max: 8192 });
    assert_eq!(
        chat.received(alice),
        vec![json!({"code": 413, "error": "line longer than 8192 bytes; it was discarded"})]
    );
    assert_eq!(chat.state_of(alice), Some(broadcast("alice")));
    chat.send_json(alice, say("after"));
    assert_eq!(chat.codes(alice), vec![200]);
}

#[test]
fn invalid_utf8_gets_400_and_the_session_goes_on() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    chat.hub.handle_codec_error(alice, CodecError::InvalidUtf8);
    assert_eq!(
        chat.received_text(alice),
        vec!["! line is not valid UTF-8 (400)"]
    );
    chat.send(alice, "after");
    assert_eq!(
        chat.received_text(alice),
        vec![format!("[{TS_CLOCK}] #lobby <alice> after")]
    );
}

#[test]
fn a_codec_error_before_the_first_line_does_not_fix_the_mode() {
    let mut chat = Chat::open();
    let conn = chat.connect();
    chat.received(conn);
    chat.hub
        .handle_codec_error(conn, CodecError::TooLong { max: 8192 });
    assert_eq!(chat.codes(conn), vec![413]);
    assert_eq!(chat.state_of(conn), Some(State::Listen));
    chat.send(conn, "alice");
    assert_eq!(
        chat.received_text(conn),
        vec!["* you are now alice", "* alice joined #lobby"]
    );
}

#[test]
fn an_http_request_line_first_gets_400_mentioning_http_and_quits() {
    for request in ["GET / HTTP/1.1", "POST /login HTTP/1.0", "HEAD / HTTP/2"] {
        let mut chat = Chat::open();
        let conn = chat.connect();
        chat.received(conn);
        chat.send(conn, request);
        assert_eq!(
            chat.received_text(conn),
            vec![
                "! this is not an HTTP server; riftd speaks line-delimited JSON or plain text (400)"
            ],
            "{request}"
        );
        assert!(chat.hub.is_quitting(conn), "{request}");
        chat.send(conn, "Host: example.com");
        assert!(chat.received_text(conn).is_empty());
    }
}

// Slow consumers and shared frames.

#[test]
fn a_recipient_that_never_reads_is_cut_off_and_the_others_get_every_message() {
    // Cut-offs happen after a flush (`enforce_output_cap`), never just
    // because one turn queued a burst: see the next test.
    let max_output_bytes = 65_536;
    let mut chat = Chat::with(Auth::Open, max_output_bytes);
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let sleeper = chat.login("sleeper");
    chat.clear_all();
    let text = "z".repeat(1000);
    let count: usize = 100;
    let mut bob_ids = Vec::new();
    let mut alice_ids = Vec::new();
    let mut cut_at = None;
    for index in 0..count {
        chat.send_json(alice, say(&text));
        bob_ids.extend(message_ids(&chat.received(bob)));
        alice_ids.extend(message_ids(&chat.received(alice)));
        // What the shell does after a flush that could not write everything.
        chat.hub.enforce_output_cap(sleeper);
        if cut_at.is_none() && chat.hub.cut_off(sleeper).is_some() {
            cut_at = Some(index);
        }
    }
    let expected_ids: Vec<u64> = (1..=100).collect();
    assert_eq!(bob_ids, expected_ids);
    assert_eq!(alice_ids, expected_ids);

    let cut_at = cut_at.expect("the sleeper was cut off");
    let frame_len = room_message(1, TS, LOBBY, "alice", &text).to_string().len() + 1;
    assert_eq!(
        cut_at,
        max_output_bytes / frame_len,
        "cut at the first excess"
    );
    let Some(CutOff::SlowConsumer { pending }) = chat.hub.cut_off(sleeper).cloned() else {
        panic!("no slow-consumer cut-off");
    };
    assert!(pending > max_output_bytes, "{pending}");
    assert_eq!(chat.hub.outbox_mut(sleeper).unwrap().pending_bytes(), 0);
    assert!(chat.raw(sleeper).is_empty());

    // Its lines are ignored now, and it receives nothing more.
    chat.send_json(sleeper, say("I'm awake"));
    assert!(chat.received(bob).is_empty());
    chat.send_json(bob, say("too late"));
    assert_eq!(chat.codes(bob), vec![200]);
    assert!(chat.raw(sleeper).is_empty());
    assert!(!chat.hub.is_quitting(sleeper));
    chat.hub.handle_closed(sleeper);
    assert_eq!(chat.received(bob), vec![quit("sleeper")]);
}

#[test]
fn issue_6_a_burst_queued_in_one_turn_does_not_cut_off_a_reader_that_keeps_up() {
    let max_output_bytes = 65_536;
    let mut chat = Chat::with(Auth::Open, max_output_bytes);
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    let text = "z".repeat(1000);
    // One turn's worth: 64 lines of about 1 KB, more than the cap in all.
    for _ in 0..64 {
        chat.send_json(alice, say(&text));
    }
    assert!(chat.hub.cut_off(bob).is_none());
    assert!(chat.hub.outbox_mut(bob).unwrap().pending_bytes() > max_output_bytes);
    // The flush writes it all: nothing is owed, nobody is cut off.
    assert_eq!(message_ids(&chat.received(bob)).len(), 64);
    assert!(!chat.hub.enforce_output_cap(bob));
}

#[test]
fn a_broadcast_frame_has_the_same_bytes_for_every_json_recipient() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let carol = chat.login_text("carol");
    chat.clear_all();
    chat.send_json(alice, say("same for all"));
    let alice_bytes = chat.raw(alice);
    assert_eq!(chat.raw(bob), alice_bytes);
    assert_eq!(
        alice_bytes,
        format!(
            "{{\"code\":200,\"message\":{{\"id\":1,\"ts\":{TS},\"room\":\"lobby\",\"from\":\"alice\",\"text\":\"same for all\"}}}}\n"
        )
    );
    assert_eq!(
        chat.raw(carol),
        format!("[{TS_CLOCK}] #lobby <alice> same for all\n")
    );
}

// Text mode commands.

#[test]
fn text_nick_renames_and_neighbours_read_it() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    let bob = chat.login_text("bob");
    chat.clear_all();
    chat.send(alice, "/nick alicia");
    assert_eq!(chat.received_text(alice), vec!["* you are now alicia"]);
    assert_eq!(
        chat.received_text(bob),
        vec!["* alice is now known as alicia"]
    );
    chat.send(alice, "/nick bob");
    assert_eq!(
        chat.received_text(alice),
        vec!["! username bob is taken (409)"]
    );
    chat.send(alice, "/nick");
    assert_eq!(chat.received_text(alice), vec!["! usage: /nick NAME (400)"]);
}

#[test]
fn text_msg_sends_a_private_message() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    let bob = chat.login_text("bob");
    let carol = chat.login_text("carol");
    chat.clear_all();
    chat.send(alice, "/msg bob   psst, over here");
    let line = format!("[{TS_CLOCK}] *alice -> bob* psst, over here");
    assert_eq!(chat.received_text(bob), vec![line.clone()]);
    assert_eq!(chat.received_text(alice), vec![line]);
    assert!(chat.received_text(carol).is_empty());
    chat.send(alice, "/msg zed hi");
    assert_eq!(chat.received_text(alice), vec!["! no such user zed (404)"]);
    chat.send(alice, "/msg bob");
    assert_eq!(
        chat.received_text(alice),
        vec!["! usage: /msg NAME TEXT (400)"]
    );
}

#[test]
fn text_join_part_who_and_rooms_work_on_the_current_room() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    let bob = chat.login_text("bob");
    chat.clear_all();
    chat.send(alice, "/join #Rust");
    assert_eq!(chat.received_text(alice), vec!["* alice joined #rust"]);
    chat.send(bob, "/join rust");
    assert_eq!(chat.received_text(alice), vec!["* bob joined #rust"]);
    assert_eq!(chat.received_text(bob), vec!["* bob joined #rust"]);
    chat.send(alice, "/who");
    assert_eq!(chat.received_text(alice), vec!["* in #rust: alice bob"]);
    chat.send(alice, "/who #lobby");
    assert_eq!(chat.received_text(alice), vec!["* in #lobby: alice bob"]);
    chat.send(alice, "/rooms");
    assert_eq!(
        chat.received_text(alice),
        vec!["* rooms: #lobby (2) #rust (2)"]
    );
    chat.send(alice, "hello rust");
    assert_eq!(
        chat.received_text(bob),
        vec![format!("[{TS_CLOCK}] #rust <alice> hello rust")]
    );
    assert_eq!(chat.received_text(alice).len(), 1);
    chat.send(alice, "/part");
    assert_eq!(chat.received_text(alice), vec!["* alice left #rust"]);
    assert_eq!(chat.received_text(bob), vec!["* alice left #rust"]);
    chat.send(alice, "/part #nowhere");
    assert_eq!(
        chat.received_text(alice),
        vec!["! no such room nowhere (404)"]
    );
    chat.send(alice, "/join");
    assert_eq!(chat.received_text(alice), vec!["! usage: /join ROOM (400)"]);
}

#[test]
fn text_me_is_shown_as_an_action() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    let bob = chat.login_text("bob");
    let carol = chat.login("carol");
    chat.clear_all();
    chat.send(alice, "/me waves");
    assert_eq!(
        chat.received_text(bob),
        vec![format!("[{TS_CLOCK}] #lobby * alice waves")]
    );
    assert_eq!(
        chat.received(carol),
        vec![room_message(1, TS, LOBBY, "alice", "/me waves")]
    );
}

#[test]
fn text_double_slash_says_a_line_starting_with_a_slash() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    chat.send(alice, "//etc/passwd is a path");
    assert_eq!(
        chat.received(bob),
        vec![room_message(1, TS, LOBBY, "alice", "/etc/passwd is a path")]
    );
    assert_eq!(
        chat.received_text(alice),
        vec![format!("[{TS_CLOCK}] #lobby <alice> /etc/passwd is a path")]
    );
}

#[test]
fn text_quit_leaves_and_neighbours_read_it() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    let bob = chat.login_text("bob");
    chat.clear_all();
    chat.send(alice, "/quit");
    assert!(chat.hub.is_quitting(alice));
    assert_eq!(chat.received_text(bob), vec!["* alice quit"]);
}

#[test]
fn text_help_ping_and_unknown_commands_answer_the_sender_only() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    let bob = chat.login_text("bob");
    chat.clear_all();
    chat.send(alice, "/help");
    let help = chat.received_text(alice);
    assert_eq!(
        help.first().map(String::as_str),
        Some("* Type a line to say it in your current room. Commands:")
    );
    assert!(help.iter().any(|line| line.contains("/nick NAME")));
    assert!(help.iter().all(|line| line.starts_with('*')));
    chat.send(alice, "/ping");
    assert_eq!(chat.received_text(alice), vec!["* pong"]);
    chat.send(alice, "/bogus stuff");
    assert_eq!(
        chat.received_text(alice),
        vec!["! unknown command /bogus; type /help (400)"]
    );
    assert!(chat.received_text(bob).is_empty());
}

#[test]
fn text_help_before_choosing_a_name_shows_the_help() {
    // `parse_text` accepts /help at the name prompt on purpose ("Let a user
    // type /quit or /help before choosing a name"), so it must be answered.
    let mut chat = Chat::open();
    let conn = chat.connect();
    chat.received(conn);
    chat.send(conn, "/help");
    let lines = chat.received_text(conn);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("* Type a line to say it in your current room. Commands:"),
        "{lines:?}"
    );
    assert_eq!(chat.state_of(conn), Some(State::UserAuth));
}

#[test]
fn control_characters_are_escaped_for_text_users_and_kept_for_json_users() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login_text("bob");
    chat.clear_all();
    let text = "\u{1b}[2Jgotcha\u{7}\ttab\u{7f}\u{85}";
    chat.send_json(alice, say(text));
    assert_eq!(
        chat.received_text(bob),
        vec![format!("[{TS_CLOCK}] #lobby <alice> ^[[2Jgotcha^G tab^??")]
    );
    assert_eq!(
        chat.received(alice),
        vec![room_message(1, TS, LOBBY, "alice", text)]
    );
    chat.send_json(alice, dm("bob", "\u{1b}]0;owned\u{7}"));
    assert_eq!(
        chat.received_text(bob),
        vec![format!("[{TS_CLOCK}] *alice -> bob* ^[]0;owned^G")]
    );
}

// Random traffic.

/// What one step of random traffic does.
#[derive(Debug, Clone)]
enum Step {
    Line { slot: usize, line: String },
    CodecError { slot: usize, is_too_long: bool },
    Eof { slot: usize },
    Close { slot: usize },
    Connect { slot: usize },
    Drain,
}

const SLOTS: usize = 6;

fn any_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "alice", "Alice", "ALICE", "bob", "Bob", "carol", "dave", "server", "bad name", "",
    ])
    .prop_map(str::to_owned)
}

fn any_room() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "lobby", "#Lobby", "side", "#side", "Other", "x y", "", "#",
    ])
    .prop_map(str::to_owned)
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,12}",
        Just("\u{1b}[2J".to_owned()),
        Just(" ".to_owned()),
        "\\PC{0,8}",
    ]
}

fn any_json_frame() -> impl Strategy<Value = String> {
    prop_oneof![
        any_name().prop_map(|name| json!({"code": 110, "username": name})),
        prop::sample::select(vec![SECRET, "nope", ""])
            .prop_map(|password| json!({"code": 111, "password": password})),
        (any_text(), prop::option::of(any_room())).prop_map(|(text, room)| match room {
            Some(room) => say_in(&room, &text),
            None => say(&text),
        }),
        any_name().prop_map(|name| rename(&name)),
        (any_name(), any_text()).prop_map(|(to, text)| dm(&to, &text)),
        prop::option::of(any_room()).prop_map(|room| match room {
            Some(room) => json!({"code": 103, "room": room}),
            None => json!({"code": 103}),
        }),
        any_room().prop_map(|room| join(&room)),
        any_room().prop_map(|room| part(&room)),
        Just(json!({"code": 107})),
        prop_oneof![Just(json!(null)), Just(json!("t")), Just(json!({"n": [1]}))]
            .prop_map(|token| json!({"code": 108, "token": token})),
        Just(json!({"code": 109})),
        (0u64..1000).prop_map(|code| json!({"code": code})),
    ]
    .prop_map(|frame| frame.to_string())
}

fn any_text_line() -> impl Strategy<Value = String> {
    prop_oneof![
        any_name(),
        Just(SECRET.to_owned()),
        any_text(),
        any_name().prop_map(|name| format!("/nick {name}")),
        (any_name(), any_text()).prop_map(|(name, text)| format!("/msg {name} {text}")),
        any_room().prop_map(|room| format!("/join {room}")),
        any_room().prop_map(|room| format!("/part {room}")),
        prop::sample::select(vec![
            "/part",
            "/who",
            "/who side",
            "/rooms",
            "/me waves",
            "/quit",
            "/help",
            "//slash",
            "/ping",
            "/bogus",
            "/msg",
            "/me",
        ])
        .prop_map(str::to_owned),
    ]
}

fn any_garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\{[ -~]{0,20}",
        Just("GET / HTTP/1.1".to_owned()),
        Just(r#"{"code":110,"username":"a","x":1}"#.to_owned()),
        Just(format!("{{\"code\":108,\"token\":{}}}", "[".repeat(200))),
    ]
}

fn any_step() -> impl Strategy<Value = Step> {
    let slot = 0..SLOTS;
    prop_oneof![
        8 => (slot.clone(), any_json_frame()).prop_map(|(slot, line)| Step::Line { slot, line }),
        6 => (slot.clone(), any_text_line()).prop_map(|(slot, line)| Step::Line { slot, line }),
        2 => (slot.clone(), any_garbage()).prop_map(|(slot, line)| Step::Line { slot, line }),
        1 => (slot.clone(), any::<bool>())
            .prop_map(|(slot, is_too_long)| Step::CodecError { slot, is_too_long }),
        1 => slot.clone().prop_map(|slot| Step::Eof { slot }),
        1 => slot.clone().prop_map(|slot| Step::Close { slot }),
        2 => slot.prop_map(|slot| Step::Connect { slot }),
        1 => Just(Step::Drain),
    ]
}

/// The names held by live connections: logged-in ones only (a name
/// waiting in PASS AUTH is not held).
fn held_names(hub: &Hub, connected: &[bool]) -> Vec<Username> {
    (0..connected.len())
        .filter_map(|slot| hub.state(ConnId(slot))?.username().cloned())
        .collect()
}

fn run_random_traffic(is_password: bool, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut chat = if is_password {
        Chat::with_password()
    } else {
        Chat::open()
    };
    chat.next_conn = SLOTS;
    let peer = SocketAddr::from(([192, 0, 2, 1], 4_000));
    let mut connected = [false; SLOTS];
    for (index, step) in steps.into_iter().enumerate() {
        chat.now = Now {
            unix_ms: TS + index as u64,
            mono_ms: index as u64,
        };
        match step {
            Step::Line { slot, line } => {
                let conn = ConnId(slot);
                let was_quitting = chat.hub.is_quitting(conn);
                let owed_before = chat
                    .hub
                    .outbox_mut(conn)
                    .map(|outbox| outbox.pending_bytes());
                chat.send(conn, &line);
                if was_quitting {
                    prop_assert_eq!(chat.state_of(conn), Some(State::Quit));
                    let owed_after = chat
                        .hub
                        .outbox_mut(conn)
                        .map(|outbox| outbox.pending_bytes());
                    prop_assert_eq!(owed_before, owed_after, "a quitting session answered");
                }
            }
            Step::CodecError { slot, is_too_long } => {
                let error = if is_too_long {
                    CodecError::TooLong { max: 8192 }
                } else {
                    CodecError::InvalidUtf8
                };
                chat.hub.handle_codec_error(ConnId(slot), error);
            }
            Step::Eof { slot } => chat.hub.handle_eof(ConnId(slot)),
            Step::Close { slot } => {
                chat.hub.handle_closed(ConnId(slot));
                connected[slot] = false;
            }
            Step::Connect { slot } => {
                if !connected[slot] {
                    chat.hub
                        .handle_connected(ConnId(slot), peer, false, Now::default());
                    connected[slot] = true;
                }
            }
            Step::Drain => {
                let mut dirty = Vec::new();
                chat.hub.drain_dirty(&mut dirty);
                for conn in dirty {
                    chat.raw(conn);
                }
            }
        }
        for (slot, &is_connected) in connected.iter().enumerate() {
            if !is_connected {
                prop_assert_eq!(chat.hub.state(ConnId(slot)), None);
            }
        }
        prop_assert_eq!(
            chat.hub.connection_count(),
            connected
                .iter()
                .filter(|&&is_connected| is_connected)
                .count()
        );
        let mut keys: Vec<NameKey> = held_names(&chat.hub, &connected)
            .iter()
            .map(Username::key)
            .collect();
        let held = keys.len();
        keys.sort();
        keys.dedup();
        prop_assert_eq!(keys.len(), held, "a name is held twice");
    }

    // Every held name is refused to a newcomer, in another case too.
    let held = held_names(&chat.hub, &connected);
    let probe = chat.connect();
    chat.received(probe);
    for name in &held {
        chat.send_json(
            probe,
            json!({"code": 110, "username": name.as_str().to_ascii_uppercase()}),
        );
        prop_assert_eq!(chat.codes(probe), vec![409], "{} is held", name);
    }
    chat.send_json(probe, json!({"code": 110, "username": "probe"}));
    if is_password {
        chat.send_json(probe, json!({"code": 111, "password": SECRET}));
    }
    chat.received(probe);
    prop_assert_eq!(chat.state_of(probe), Some(broadcast("probe")));

    // ROOMS and WHO agree with each other and list only live, logged-in users.
    let logged_in: Vec<String> = (0..chat.next_conn)
        .filter_map(|slot| chat.hub.state(ConnId(slot))?.username().cloned())
        .map(|username| username.as_str().to_owned())
        .collect();
    chat.send_json(probe, json!({"code": 107}));
    let listing = chat.received(probe);
    prop_assert_eq!(listing.len(), 1);
    let rooms = listing[0]["rooms"].as_array().expect("rooms is an array");
    for entry in rooms {
        let name = entry["name"].as_str().expect("a room has a name");
        let count = entry["users"].as_u64().expect("a room has a count");
        prop_assert!(name == LOBBY || count > 0, "empty room {} kept", name);
        chat.send_json(probe, json!({"code": 103, "room": name}));
        let mut users = Vec::new();
        for frame in chat.received(probe) {
            prop_assert_eq!(&frame["code"], &json!(206));
            for listed in frame["users"].as_array().expect("users is an array") {
                users.push(listed.as_str().expect("a user is a string").to_owned());
            }
        }
        prop_assert_eq!(
            users.len() as u64,
            count,
            "WHO and ROOMS disagree on {}",
            name
        );
        for listed in &users {
            prop_assert!(logged_in.contains(listed), "ghost {} in {}", listed, name);
        }
        let mut unique = users.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), users.len(), "someone is twice in {}", name);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Thousands of random lines, codec errors, EOFs, closes and reconnects
    /// from several connections never panic the hub, never give one name to
    /// two sessions, and never leave a closed connection behind.
    #[test]
    fn random_traffic_never_panics_and_keeps_names_unique(
        is_password in any::<bool>(),
        steps in prop::collection::vec(any_step(), 1..400),
    ) {
        run_random_traffic(is_password, steps)?;
    }
}

// Accounts, throttling and the TLS rule (issue 4).

mod accounts_auth {
    use super::*;
    use crate::accounts::{Users, hash_password};
    use std::sync::Arc;

    const ALICE_PASSWORD: &str = "alice-pw";

    /// A hub with one account, `alice`; `hash` is not verified here: the
    /// tests play the verifier's part with `handle_verified`.
    fn accounts_chat(require_tls_for_password: bool) -> Chat {
        let mut users = Users::default();
        users
            .add(Username::parse("alice").unwrap(), ALICE_PASSWORD)
            .unwrap();
        let mut chat = Chat::open();
        chat.hub.set_config(HubConfig {
            auth: Auth::Accounts {
                users: Arc::new(users),
            },
            require_tls_for_password,
            ..test_config()
        });
        chat
    }

    fn connect_from(chat: &mut Chat, address: [u8; 4], is_tls: bool) -> ConnId {
        let conn = ConnId(chat.next_conn);
        chat.next_conn += 1;
        chat.hub.handle_connected(
            conn,
            SocketAddr::from((address, 40_000)),
            is_tls,
            Now::default(),
        );
        conn
    }

    /// Sends USER and PASS and returns the job the hub asks the shell to run.
    fn attempt(chat: &mut Chat, conn: ConnId, name: &str, password: &str) -> VerifyJob {
        chat.send_json(conn, json!({"code": 110, "username": name}));
        chat.send_json(conn, json!({"code": 111, "password": password}));
        let mut jobs: Vec<VerifyJob> = chat.hub.drain_verify_jobs().collect();
        assert_eq!(jobs.len(), 1, "one check per PASS");
        jobs.remove(0)
    }

    #[test]
    fn the_greeting_announces_accounts() {
        let mut chat = accounts_chat(false);
        let conn = chat.connect();
        assert_eq!(chat.received(conn)[0]["auth"], "accounts");
    }

    #[test]
    fn pass_is_checked_off_the_loop_and_a_valid_verdict_logs_in() {
        let mut chat = accounts_chat(false);
        let conn = chat.connect();
        let job = attempt(&mut chat, conn, "alice", ALICE_PASSWORD);
        assert_eq!(job.password, ALICE_PASSWORD);
        assert!(
            job.hash
                .as_deref()
                .is_some_and(|hash| hash.starts_with("$argon2id$"))
        );
        // Nothing is decided until the verdict arrives.
        assert_eq!(chat.codes(conn), vec![210, 211]);
        assert!(matches!(chat.hub.state(conn), Some(State::PassAuth { .. })));
        chat.hub.handle_verified(conn, job.ticket, true, chat.now);
        assert_eq!(chat.codes(conn), vec![202, 201]);
    }

    #[test]
    fn an_unknown_user_is_asked_for_a_password_and_gets_the_same_401() {
        let mut chat = accounts_chat(false);
        let known = chat.connect();
        let job = attempt(&mut chat, known, "alice", "wrong");
        chat.hub.handle_verified(known, job.ticket, false, chat.now);
        let unknown = chat.connect();
        let job = attempt(&mut chat, unknown, "mallory", "whatever");
        // The worker verifies a dummy hash for an unknown user.
        assert_eq!(job.hash, None);
        chat.hub
            .handle_verified(unknown, job.ticket, false, chat.now);
        let known_frames = chat.received(known);
        let unknown_frames = chat.received(unknown);
        assert_eq!(known_frames[1..], unknown_frames[1..]);
        assert_eq!(unknown_frames[1]["code"], 211);
        assert_eq!(unknown_frames[2]["code"], 401);
    }

    #[test]
    fn a_second_pass_while_one_is_checked_gets_429_and_no_second_job() {
        let mut chat = accounts_chat(false);
        let conn = chat.connect();
        let _job = attempt(&mut chat, conn, "alice", "one");
        chat.raw(conn);
        chat.send_json(conn, json!({"code": 111, "password": "two"}));
        assert_eq!(chat.hub.drain_verify_jobs().count(), 0);
        assert_eq!(chat.codes(conn), vec![429]);
    }

    #[test]
    fn a_stale_or_foreign_verdict_is_ignored() {
        let mut chat = accounts_chat(false);
        let conn = chat.connect();
        let job = attempt(&mut chat, conn, "alice", ALICE_PASSWORD);
        chat.raw(conn);
        chat.hub
            .handle_verified(conn, job.ticket + 1, true, chat.now);
        assert!(chat.raw(conn).is_empty());
        // The connection closes and its id is reused before the answer.
        chat.hub.handle_closed(conn);
        chat.hub.handle_connected(
            conn,
            SocketAddr::from(([127, 0, 0, 1], 40_001)),
            false,
            Now::default(),
        );
        chat.raw(conn);
        chat.hub.handle_verified(conn, job.ticket, true, chat.now);
        assert!(chat.raw(conn).is_empty());
        assert_eq!(chat.hub.state(conn), Some(&State::Listen));
    }

    #[test]
    fn a_full_verifier_queue_answers_503_and_the_client_may_retry() {
        let mut chat = accounts_chat(false);
        let conn = chat.connect();
        let job = attempt(&mut chat, conn, "alice", ALICE_PASSWORD);
        chat.raw(conn);
        chat.hub.handle_verify_busy(conn, job.ticket);
        assert_eq!(chat.codes(conn), vec![503]);
        chat.send_json(conn, json!({"code": 111, "password": ALICE_PASSWORD}));
        let retry: Vec<VerifyJob> = chat.hub.drain_verify_jobs().collect();
        chat.hub
            .handle_verified(conn, retry[0].ticket, true, chat.now);
        assert_eq!(chat.codes(conn), vec![202, 201]);
    }

    #[test]
    fn a_full_verifier_queue_asks_a_text_user_to_type_the_password_again() {
        let mut chat = accounts_chat(false);
        let conn = chat.connect();
        chat.received(conn);
        chat.send(conn, "alice");
        assert_eq!(chat.received_text(conn), vec!["* password:"]);
        chat.send(conn, ALICE_PASSWORD);
        let job = chat.hub.drain_verify_jobs().next().expect("a check");
        chat.hub.handle_verify_busy(conn, job.ticket);
        assert_eq!(
            chat.received_text(conn),
            vec![
                "! too many logins at once; type the password again shortly (503)",
                "* password:"
            ]
        );
        chat.send(conn, ALICE_PASSWORD);
        let retry = chat.hub.drain_verify_jobs().next().expect("a new check");
        chat.hub.handle_verified(conn, retry.ticket, true, chat.now);
        assert_eq!(
            chat.received_text(conn),
            vec!["* you are now alice", "* alice joined #lobby"]
        );
    }

    #[test]
    fn repeated_failures_are_throttled_with_429_and_a_success_resets() {
        let mut chat = accounts_chat(false);
        for _ in 0..crate::throttle::FREE_FAILURES + 1 {
            let conn = chat.connect();
            let job = attempt(&mut chat, conn, "alice", "wrong");
            chat.hub.handle_verified(conn, job.ticket, false, chat.now);
        }
        let conn = chat.connect();
        chat.raw(conn);
        chat.send_json(conn, json!({"code": 110, "username": "alice"}));
        let frames = chat.received(conn);
        assert_eq!(frames[0]["code"], 429);
        assert!(
            frames[0]["error"]
                .as_str()
                .unwrap()
                .contains("try again in 1 s")
        );
        // Another address is not blocked by these failures: the owner of
        // the name is not locked out by someone else's guesses.
        let elsewhere = connect_from(&mut chat, [192, 0, 2, 9], false);
        chat.raw(elsewhere);
        chat.send_json(elsewhere, json!({"code": 110, "username": "alice"}));
        assert_eq!(chat.codes(elsewhere), vec![211]);
        // After the wait, the right password logs in and clears the record.
        chat.now.mono_ms += crate::throttle::BASE_BLOCK_MS;
        let job = attempt(&mut chat, conn, "alice", ALICE_PASSWORD);
        chat.hub.handle_verified(conn, job.ticket, true, chat.now);
        assert_eq!(chat.codes(conn), vec![211, 202, 201]);
    }

    #[test]
    fn the_shared_password_is_throttled_too() {
        let mut chat = Chat::with_password();
        for _ in 0..crate::throttle::FREE_FAILURES + 1 {
            let conn = chat.connect();
            chat.send_json(conn, json!({"code": 110, "username": "bob"}));
            chat.send_json(conn, json!({"code": 111, "password": "nope"}));
        }
        let conn = chat.connect();
        chat.raw(conn);
        chat.send_json(conn, json!({"code": 110, "username": "bob"}));
        assert_eq!(chat.codes(conn), vec![429]);
    }

    #[test]
    fn a_login_block_lasts_its_time_on_the_monotonic_clock_whatever_the_wall_clock_does() {
        // Before: the throttle ran on the wall clock, so a clock set back a
        // day (NTP, a VM resumed) stretched a 1 s block into a day.
        let mut chat = Chat::with_password();
        for _ in 0..crate::throttle::FREE_FAILURES + 1 {
            let conn = chat.connect();
            chat.send_json(conn, json!({"code": 110, "username": "bob"}));
            chat.send_json(conn, json!({"code": 111, "password": "nope"}));
        }
        chat.now.unix_ms -= 24 * 3600 * 1000;
        chat.now.mono_ms += crate::throttle::BASE_BLOCK_MS;
        let conn = chat.connect();
        chat.raw(conn);
        chat.send_json(conn, json!({"code": 110, "username": "bob"}));
        assert_eq!(chat.codes(conn), vec![211]);
    }

    #[test]
    fn a_password_login_over_plaintext_from_afar_is_refused_when_tls_is_required() {
        let mut chat = accounts_chat(true);
        let remote = connect_from(&mut chat, [192, 0, 2, 1], false);
        chat.raw(remote);
        chat.send_json(remote, json!({"code": 110, "username": "alice"}));
        let frames = chat.received(remote);
        assert_eq!(frames[0]["code"], 403);
        assert!(frames[0]["error"].as_str().unwrap().contains("TLS"));
        assert_eq!(chat.hub.state(remote), Some(&State::UserAuth));
        // Over TLS, or from loopback, the same login proceeds.
        for conn in [
            connect_from(&mut chat, [192, 0, 2, 1], true),
            connect_from(&mut chat, [127, 0, 0, 1], false),
        ] {
            chat.raw(conn);
            chat.send_json(conn, json!({"code": 110, "username": "alice"}));
            assert_eq!(chat.codes(conn), vec![211]);
            chat.send_json(conn, json!({"code": 109}));
            chat.hub.handle_closed(conn);
        }
    }

    #[test]
    fn open_auth_needs_no_tls_from_afar() {
        let mut chat = Chat::open();
        chat.hub.set_config(HubConfig {
            require_tls_for_password: true,
            ..test_config()
        });
        let remote = connect_from(&mut chat, [192, 0, 2, 1], false);
        chat.raw(remote);
        chat.send_json(remote, json!({"code": 110, "username": "carol"}));
        assert_eq!(chat.codes(remote), vec![202, 201]);
    }

    #[test]
    fn a_verify_job_never_prints_the_password() {
        let job = VerifyJob {
            conn: ConnId(1),
            ticket: 2,
            hash: Some(hash_password("x").unwrap()),
            password: "hunter2".to_owned(),
        };
        assert!(!format!("{job:?}").contains("hunter2"));
    }

    /// Logs `name` in with its account (the test plays the verifier).
    fn login_account(chat: &mut Chat, name: &str) -> ConnId {
        let conn = chat.connect();
        let job = attempt(chat, conn, name, ALICE_PASSWORD);
        chat.hub.handle_verified(conn, job.ticket, true, chat.now);
        assert_eq!(
            chat.codes(conn),
            vec![210, 211, 202, 201],
            "login of {name}"
        );
        conn
    }

    #[test]
    fn issue_11_parallel_guesses_are_throttled_like_sequential_ones() {
        let mut chat = accounts_chat(false);
        // Twelve connections from one address send USER and PASS before any
        // verdict returns.
        let conns: Vec<ConnId> = (0..12).map(|_| chat.connect()).collect();
        for &conn in &conns {
            chat.send_json(conn, json!({"code": 110, "username": "alice"}));
            chat.send_json(conn, json!({"code": 111, "password": "guess"}));
        }
        let jobs: Vec<VerifyJob> = chat.hub.drain_verify_jobs().collect();
        let free = crate::throttle::FREE_FAILURES as usize;
        assert_eq!(
            jobs.len(),
            free + 1,
            "as many checks as sequential guesses get"
        );
        // Refused at USER already (then PASS is 403 in USER AUTH), or at
        // PASS: 429 either way, and no check.
        let refused = conns
            .iter()
            .filter(|&&conn| {
                let codes = chat.codes(conn);
                codes == vec![210, 429, 403] || codes == vec![210, 211, 429]
            })
            .count();
        assert_eq!(refused, 12 - (free + 1));
        for job in jobs {
            chat.hub
                .handle_verified(job.conn, job.ticket, false, chat.now);
        }
        // The verdicts then block the name from this address, as after
        // that many sequential failures.
        let late = chat.connect();
        chat.raw(late);
        chat.send_json(late, json!({"code": 110, "username": "alice"}));
        chat.expect_error(late, 429, "try again in 1 s");
    }

    #[test]
    fn a_check_refused_by_a_full_queue_stops_counting_against_the_throttle() {
        let mut chat = accounts_chat(false);
        let free = crate::throttle::FREE_FAILURES as usize;
        // Checks refused by a full queue never ran: they are not failures,
        // and as many again are admitted afterwards (their clients still
        // connected, or gone by the time the queue refused them).
        for round in 0..3 {
            let conns: Vec<ConnId> = (0..=free).map(|_| chat.connect()).collect();
            for &conn in &conns {
                chat.send_json(conn, json!({"code": 110, "username": "alice"}));
                chat.send_json(conn, json!({"code": 111, "password": "guess"}));
            }
            let jobs: Vec<VerifyJob> = chat.hub.drain_verify_jobs().collect();
            assert_eq!(jobs.len(), free + 1, "round {round}");
            for job in jobs {
                if round == 2 {
                    chat.hub.handle_closed(job.conn);
                }
                chat.hub.handle_verify_busy(job.conn, job.ticket);
            }
        }
    }

    #[test]
    fn a_check_whose_client_left_counts_in_flight_until_its_verdict_and_a_wrong_one_fails() {
        // Before: leaving mid-check forgot the check at once, though the
        // worker still ran it, so one address could keep the verifier's
        // queue full (503 for everyone) without ever failing.
        let mut chat = accounts_chat(false);
        let free = crate::throttle::FREE_FAILURES as usize;
        let conns: Vec<ConnId> = (0..=free).map(|_| chat.connect()).collect();
        for &conn in &conns {
            chat.send_json(conn, json!({"code": 110, "username": "alice"}));
            chat.send_json(conn, json!({"code": 111, "password": "guess"}));
        }
        let jobs: Vec<VerifyJob> = chat.hub.drain_verify_jobs().collect();
        assert_eq!(jobs.len(), free + 1);
        // Half leave by closing the socket, half by QUIT.
        for (index, job) in jobs.iter().enumerate() {
            if index % 2 == 0 {
                chat.hub.handle_closed(job.conn);
            } else {
                chat.send_json(job.conn, json!({"code": 109}));
            }
        }
        // Still running: another guess from the address is refused.
        let probe = chat.connect();
        chat.raw(probe);
        chat.send_json(probe, json!({"code": 110, "username": "alice"}));
        chat.expect_error(probe, 429, "being checked");
        assert_eq!(chat.hub.drain_verify_jobs().count(), 0);
        // The verdicts come back to nobody; the wrong passwords count.
        for job in &jobs {
            chat.hub
                .handle_verified(job.conn, job.ticket, false, chat.now);
        }
        chat.send_json(probe, json!({"code": 110, "username": "alice"}));
        chat.expect_error(probe, 429, "too many failed logins");
        // A right password whose client left counts nothing, and the
        // connection that reuses the slot is not logged in by it.
        let mut other = accounts_chat(false);
        let conn = other.connect();
        let job = attempt(&mut other, conn, "alice", ALICE_PASSWORD);
        other.hub.handle_closed(conn);
        let reused = conn;
        other.hub.handle_connected(
            reused,
            SocketAddr::from(([127, 0, 0, 1], 40_001)),
            false,
            Now::default(),
        );
        other.raw(reused);
        other
            .hub
            .handle_verified(reused, job.ticket, true, other.now);
        assert_eq!(other.state_of(reused), Some(State::Listen));
        assert!(other.received(reused).is_empty());
    }

    #[test]
    fn issue_11_rename_under_accounts_is_refused_with_403_saying_names_are_accounts() {
        let mut chat = accounts_chat(false);
        let alice = login_account(&mut chat, "alice");
        // The test plays the verifier, so any name can log in here.
        let watcher = login_account(&mut chat, "watcher");
        chat.clear_all();
        chat.send_json(alice, rename("bob"));
        chat.expect_error(alice, 403, "names are accounts");
        assert_eq!(chat.state_of(alice), Some(broadcast("alice")));
        assert!(
            chat.received(watcher).is_empty(),
            "a refused rename is not announced"
        );
        // The name alice still holds, bob is still free for its owner.
        let probe = chat.connect();
        chat.raw(probe);
        chat.send_json(probe, json!({"code": 110, "username": "alice"}));
        assert_eq!(chat.codes(probe), vec![409]);
        chat.send_json(probe, json!({"code": 110, "username": "bob"}));
        assert_eq!(chat.codes(probe), vec![211]);
    }

    #[test]
    fn issue_11_a_reload_to_accounts_closes_sessions_whose_names_were_never_verified() {
        let mut chat = Chat::open();
        let alice = chat.login("alice");
        let pending = chat.connect();
        chat.send_json(pending, json!({"code": 108}));
        chat.clear_all();
        let users = match accounts_chat(false).hub.config.auth.clone() {
            Auth::Accounts { users } => users,
            other => panic!("{other:?}"),
        };
        chat.hub.set_config(HubConfig {
            auth: Auth::Accounts {
                users: users.clone(),
            },
            ..test_config()
        });
        let frames = chat.received(alice);
        assert_eq!(frames[0]["code"], 403, "{frames:?}");
        assert!(chat.hub.is_quitting(alice));
        // A session still choosing a name holds none: it is untouched and
        // will log in with an account.
        assert!(!chat.hub.is_quitting(pending));
        // Sessions that logged in with an account survive a reload.
        let verified = login_account(&mut chat, "alice");
        chat.hub.set_config(HubConfig {
            auth: Auth::Accounts { users },
            ..test_config()
        });
        assert!(!chat.hub.is_quitting(verified));
        assert!(chat.received(verified).is_empty());
    }

    fn reload_users(chat: &mut Chat, accounts: &[(&str, &str)]) {
        let mut users = Users::default();
        for (name, password) in accounts {
            users.add(Username::parse(name).unwrap(), password).unwrap();
        }
        chat.hub.set_config(HubConfig {
            auth: Auth::Accounts {
                users: Arc::new(users),
            },
            ..test_config()
        });
    }

    #[test]
    fn a_reload_that_removes_or_changes_an_account_closes_its_session_and_voids_its_check() {
        // Before: a removed account kept chatting under its name (and kept
        // the name from a new owner); a changed password did not end the
        // session that proved the old one.
        let mut chat = Chat::open();
        reload_users(
            &mut chat,
            &[("alice", ALICE_PASSWORD), ("bob", "b"), ("erin", "e")],
        );
        let alice = login_account(&mut chat, "alice");
        let bob = login_account(&mut chat, "bob");
        let carol = login_account(&mut chat, "carol");
        let checking = chat.connect();
        let job = attempt(&mut chat, checking, "erin", "e");
        let untouched = chat.connect();
        let untouched_job = attempt(&mut chat, untouched, "dave", "d");
        chat.clear_all();
        // alice's password changes, bob and erin are removed, carol's
        // account is as it was (none: the test plays the verifier).
        reload_users(&mut chat, &[("alice", "new password")]);
        chat.expect_error(alice, 403, "alice had its password changed");
        assert!(chat.hub.is_quitting(alice));
        let frames = chat.received(bob);
        assert!(
            frames.iter().any(|frame| frame["code"] == 403
                && frame["error"]
                    .as_str()
                    .is_some_and(|error| error.contains("bob was removed"))),
            "{frames:?}"
        );
        assert!(chat.hub.is_quitting(bob));
        assert!(!chat.hub.is_quitting(carol));
        chat.expect_error(checking, 503, "send PASS again");
        assert!(matches!(
            chat.state_of(checking),
            Some(State::PassAuth { .. })
        ));
        // The old check's verdict logs nobody in; PASS is checked anew.
        chat.hub
            .handle_verified(checking, job.ticket, true, chat.now);
        assert!(matches!(
            chat.state_of(checking),
            Some(State::PassAuth { .. })
        ));
        assert!(chat.received(checking).is_empty());
        chat.send_json(checking, json!({"code": 111, "password": "e"}));
        let retry: Vec<VerifyJob> = chat.hub.drain_verify_jobs().collect();
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].hash, None, "erin has no account now");
        // A check for an account the reload did not touch goes on.
        chat.hub
            .handle_verified(untouched, untouched_job.ticket, false, chat.now);
        assert_eq!(chat.codes(untouched), vec![401]);
        // bob's name is free for whoever owns it next.
        let next = chat.connect();
        chat.raw(next);
        chat.send_json(next, json!({"code": 110, "username": "bob"}));
        assert_eq!(chat.codes(next), vec![211]);
    }

    #[test]
    fn a_reload_away_from_accounts_voids_a_check_under_way() {
        // Before: the account's verdict, returning after a switch to a
        // shared password, logged in a client that never sent that password.
        let mut chat = accounts_chat(false);
        let conn = chat.connect();
        let job = attempt(&mut chat, conn, "alice", ALICE_PASSWORD);
        chat.clear_all();
        chat.hub.set_config(HubConfig {
            auth: Auth::Password {
                secret: SECRET.as_bytes().to_vec(),
            },
            ..test_config()
        });
        chat.expect_error(conn, 503, "send PASS again");
        chat.hub.handle_verified(conn, job.ticket, true, chat.now);
        assert!(chat.received(conn).is_empty());
        assert!(matches!(chat.state_of(conn), Some(State::PassAuth { .. })));
        // The password is now checked by the new rules.
        chat.send_json(conn, json!({"code": 111, "password": SECRET}));
        assert_eq!(chat.codes(conn), vec![202, 201]);
    }

    #[test]
    fn issue_11_text_nick_under_accounts_is_refused_too() {
        let mut chat = accounts_chat(false);
        let conn = chat.connect();
        chat.send(conn, "alice");
        chat.send(conn, ALICE_PASSWORD);
        let job = chat.hub.drain_verify_jobs().next().expect("one check");
        chat.hub.handle_verified(conn, job.ticket, true, chat.now);
        chat.raw(conn);
        chat.send(conn, "/nick bob");
        let lines = chat.received_text(conn);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("names are accounts"), "{lines:?}");
        assert!(lines[0].ends_with("(403)"), "{lines:?}");
        assert_eq!(chat.state_of(conn), Some(broadcast("alice")));
    }
}

// Room history (issue 5).

mod room_history {
    use super::*;

    fn history_chat(backlog: usize, keep: usize) -> Chat {
        let mut chat = Chat::open();
        chat.hub.set_config(HubConfig {
            history_backlog: Some(backlog),
            history_keep: keep,
            ..test_config()
        });
        chat
    }

    /// Logs in and returns the 208 backlog the login brought.
    fn login_with_backlog(chat: &mut Chat, name: &str) -> (ConnId, Value) {
        let conn = chat.connect();
        chat.send_json(conn, json!({"code": 110, "username": name}));
        let frames = chat.received(conn);
        let codes: Vec<u64> = frames.iter().map(|f| f["code"].as_u64().unwrap()).collect();
        assert_eq!(codes, vec![210, 202, 201, 208], "login of {name}");
        (conn, frames[3].clone())
    }

    fn texts(frame: &Value) -> Vec<String> {
        frame["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["text"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_join_backlog_cache_stays_within_its_byte_bound_and_joins_past_it_get_full_208s() {
        // Before: every room with a member kept its encoded join 208, with
        // no bound but the rooms' count (20 per connection), each up to
        // six times the history it encodes (a control character is six
        // bytes in JSON).
        let mut chat = history_chat(50, 100);
        chat.hub.join_backlogs.max_bytes = 64 * 1024;
        let (writer, _) = login_with_backlog(&mut chat, "writer");
        let text = "\u{1}".repeat(4096);
        let mut sizes = Vec::new();
        let mut reader = writer;
        for index in 0..30 {
            if index % 15 == 0 {
                // A reader holds 15 rooms (of its 20), so each stays alive.
                reader = login_with_backlog(&mut chat, &format!("reader{index}")).0;
            }
            let room = format!("r{index}");
            chat.send_json(writer, json!({"code": 104, "room": room}));
            chat.send_json(writer, json!({"code": 100, "message": text, "room": room}));
            chat.send_json(writer, json!({"code": 105, "room": room}));
            chat.send_json(reader, json!({"code": 104, "room": room}));
            let frames = chat.received(reader);
            let backlog = frames
                .iter()
                .find(|frame| frame["code"] == 208)
                .unwrap_or_else(|| panic!("no 208 in {frames:?}"));
            assert_eq!(texts(backlog), vec![text.clone()], "room {room}");
            sizes.push(chat.hub.join_backlogs.bytes);
        }
        assert!(
            sizes.iter().all(|&bytes| bytes <= 64 * 1024),
            "cache sizes {sizes:?}"
        );
        assert!(sizes.iter().any(|&bytes| bytes > 48 * 1024), "{sizes:?}");
        chat.clear_all();
    }

    #[test]
    fn joining_sends_the_last_backlog_messages_oldest_first_in_the_200_shape() {
        let mut chat = history_chat(2, 100);
        let (alice, empty) = login_with_backlog(&mut chat, "alice");
        assert_eq!(empty, json!({"code": 208, "room": "lobby", "messages": []}));
        for text in ["one", "two", "three"] {
            chat.send_json(alice, json!({"code": 100, "message": text}));
        }
        let said = chat.received(alice);
        let (_, backlog) = login_with_backlog(&mut chat, "bob");
        assert_eq!(texts(&backlog), vec!["two", "three"]);
        assert_eq!(backlog["messages"][1], said[2]["message"]);
        assert_eq!(backlog["more"], true);
    }

    #[test]
    fn the_join_backlog_is_fresh_after_every_message() {
        let mut chat = history_chat(2, 100);
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        chat.send_json(alice, json!({"code": 100, "message": "one"}));
        let (_, first) = login_with_backlog(&mut chat, "bob");
        let (_, same) = login_with_backlog(&mut chat, "carol");
        assert_eq!(texts(&first), vec!["one"]);
        assert_eq!(first, same, "no message in between: the same 208");
        chat.send_json(alice, json!({"code": 100, "message": "two"}));
        let (_, fresh) = login_with_backlog(&mut chat, "dave");
        assert_eq!(texts(&fresh), vec!["one", "two"]);
        // A text client joining gets the same backlog, as text.
        let eve = chat.connect();
        chat.send(eve, "eve");
        let lines = chat.received_text(eve);
        assert!(lines.iter().any(|line| line.contains("two")), "{lines:?}");
    }

    #[test]
    fn joining_another_room_sends_its_backlog() {
        let mut chat = history_chat(10, 100);
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        chat.send_json(alice, json!({"code": 104, "room": "rust"}));
        chat.send_json(alice, json!({"code": 100, "message": "in rust"}));
        let (bob, _) = login_with_backlog(&mut chat, "bob");
        chat.send_json(bob, json!({"code": 104, "room": "#Rust"}));
        let frames = chat.received(bob);
        assert_eq!(frames[0]["code"], 201);
        assert_eq!(frames[1]["code"], 208);
        assert_eq!(texts(&frames[1]), vec!["in rust"]);
    }

    #[test]
    fn history_after_an_id_catches_up_exactly_and_limit_takes_the_last() {
        let mut chat = history_chat(50, 100);
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        for index in 1..=6 {
            chat.send_json(alice, json!({"code": 100, "message": format!("m{index}")}));
        }
        let ids: Vec<u64> = chat
            .received(alice)
            .iter()
            .map(|frame| frame["message"]["id"].as_u64().unwrap())
            .collect();
        chat.send_json(
            alice,
            json!({"code": 106, "room": "lobby", "after": ids[2], "limit": 2}),
        );
        let frame = &chat.received(alice)[0];
        assert_eq!(texts(frame), vec!["m4", "m5"]);
        assert_eq!(frame["more"], true);
        chat.send_json(alice, json!({"code": 106, "after": ids[4]}));
        assert_eq!(texts(&chat.received(alice)[0]), vec!["m6"]);
        chat.send_json(alice, json!({"code": 106, "limit": 3}));
        assert_eq!(texts(&chat.received(alice)[0]), vec!["m4", "m5", "m6"]);
    }

    #[test]
    fn history_of_a_room_you_are_not_in_is_403_and_private_messages_never_appear() {
        let mut chat = history_chat(50, 100);
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        let (bob, _) = login_with_backlog(&mut chat, "bob");
        chat.send_json(
            alice,
            json!({"code": 102, "to": "bob", "message": "secret"}),
        );
        chat.send_json(alice, json!({"code": 100, "message": "public"}));
        chat.clear_all();
        chat.send_json(bob, json!({"code": 106, "room": "lobby"}));
        assert_eq!(texts(&chat.received(bob)[0]), vec!["public"]);
        chat.send_json(bob, json!({"code": 106, "room": "elsewhere"}));
        chat.expect_error(bob, 403, "not in room elsewhere");
    }

    #[test]
    fn history_with_a_bad_field_is_400_and_when_off_is_404() {
        let mut chat = history_chat(50, 100);
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        chat.send_json(alice, json!({"code": 106, "after": -1}));
        chat.expect_error(alice, 400, "`after`");
        let mut off = Chat::open();
        let carol = off.login("carol");
        off.send_json(carol, json!({"code": 106}));
        off.expect_error(carol, 404, "history is off");
    }

    #[test]
    fn kept_messages_are_bounded_per_room_and_handed_to_the_journal_once() {
        let mut chat = history_chat(50, 3);
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        for index in 1..=5 {
            chat.send_json(alice, json!({"code": 100, "message": format!("m{index}")}));
        }
        assert_eq!(chat.hub.take_unwritten_history().len(), 5);
        assert!(chat.hub.take_unwritten_history().is_empty());
        assert_eq!(chat.hub.history().len(), 3);
    }

    #[test]
    fn restored_history_continues_ids_and_is_served() {
        let mut chat = history_chat(50, 100);
        chat.hub.restore_history([ChatMessage {
            id: 41,
            ts: 5,
            target: Target::Room(room(LOBBY)),
            from: Username::parse("old").unwrap(),
            text: "from before".to_owned(),
        }]);
        let (alice, backlog) = login_with_backlog(&mut chat, "alice");
        assert_eq!(texts(&backlog), vec!["from before"]);
        chat.send_json(alice, json!({"code": 100, "message": "new"}));
        assert_eq!(chat.received(alice)[0]["message"]["id"], 42);
    }

    fn old_message(id: u64, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            ts: 5,
            target: Target::Room(room(LOBBY)),
            from: Username::parse("old").unwrap(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn a_journal_record_with_the_largest_u64_id_is_skipped_so_ids_never_wrap() {
        let mut chat = history_chat(50, 100);
        let skipped = chat
            .hub
            .restore_history([old_message(7, "kept"), old_message(u64::MAX, "bogus")]);
        assert_eq!(skipped, 1);
        let (alice, backlog) = login_with_backlog(&mut chat, "alice");
        assert_eq!(texts(&backlog), vec!["kept"]);
        chat.send_json(alice, json!({"code": 100, "message": "new"}));
        assert_eq!(chat.received(alice)[0]["message"]["id"], 8);
        // The new message is history, not silently dropped behind id 2^64-1.
        chat.send_json(alice, json!({"code": 106}));
        assert_eq!(texts(&chat.received(alice)[0]), vec!["kept", "new"]);
    }

    #[test]
    fn when_ids_run_out_messages_are_refused_with_503_not_wrapped() {
        let mut chat = history_chat(50, 100);
        let last = crate::history::MAX_MESSAGE_ID;
        assert_eq!(chat.hub.restore_history([old_message(last, "last")]), 0);
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        chat.send_json(alice, json!({"code": 100, "message": "one more"}));
        chat.expect_error(alice, 503, "ids are exhausted");
        chat.send_json(alice, json!({"code": 102, "to": "alice", "message": "dm"}));
        chat.expect_error(alice, 503, "ids are exhausted");
    }

    #[test]
    fn exhausted_ids_are_logged_once_not_once_per_refused_message() {
        let mut chat = history_chat(50, 100);
        assert_eq!(
            chat.hub
                .restore_history([old_message(crate::history::MAX_MESSAGE_ID, "last")]),
            0
        );
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        for _ in 0..3 {
            chat.send_json(alice, json!({"code": 100, "message": "one more"}));
            chat.expect_error(alice, 503, "ids are exhausted");
        }
        assert!(chat.hub.has_logged_ids_exhausted);
    }

    #[test]
    fn ids_keep_rising_past_private_messages_across_a_restart() {
        let mut before = history_chat(50, 100);
        let (alice, _) = login_with_backlog(&mut before, "alice");
        let (bob, _) = login_with_backlog(&mut before, "bob");
        before.received(alice);
        before.send_json(alice, json!({"code": 102, "to": "bob", "message": "psst"}));
        let dm_id = before.received(bob)[0]["message"]["id"].as_u64().unwrap();
        // Private messages are never history, but their ids are reserved.
        assert!(before.hub.take_unwritten_history().is_empty());
        let reserved = before.hub.take_id_reservation().expect("a reservation");
        assert!(reserved > dm_id, "{reserved} does not cover {dm_id}");
        assert_eq!(before.hub.take_id_reservation(), None);

        // A restart: nothing but the reservation was journaled.
        let mut after = history_chat(50, 100);
        after.hub.restore_history([]);
        after.hub.restore_next_id(reserved).unwrap();
        let (carol, _) = login_with_backlog(&mut after, "carol");
        after.send_json(carol, json!({"code": 100, "message": "hello"}));
        let id = after.received(carol)[0]["message"]["id"].as_u64().unwrap();
        assert!(id > dm_id, "id {id} reuses the private message's {dm_id}");
    }

    #[test]
    fn the_history_bound_drops_the_least_recently_active_rooms_and_their_backlog() {
        let mut chat = history_chat(50, 100);
        let one = crate::history::cost(&old_message(1, "x"));
        chat.hub.set_config(HubConfig {
            history_backlog: Some(50),
            history_max_bytes: one * 3,
            ..test_config()
        });
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        chat.send_json(alice, json!({"code": 100, "message": "x"}));
        // Bob's login caches the lobby's 208.
        let (_, backlog) = login_with_backlog(&mut chat, "bob");
        assert_eq!(texts(&backlog), vec!["x"]);
        for name in ["r1", "r2", "r3"] {
            chat.send_json(alice, json!({"code": 104, "room": name}));
            chat.send_json(alice, json!({"code": 100, "room": name, "message": "x"}));
        }
        // Four rooms' worth at a bound of three: the lobby went first.
        assert!(chat.hub.history().bytes() <= one * 3);
        let (_, backlog) = login_with_backlog(&mut chat, "carol");
        assert_eq!(texts(&backlog), Vec::<String>::new());
    }

    #[test]
    fn text_users_see_history_as_marked_lines() {
        let mut chat = history_chat(50, 100);
        let (alice, _) = login_with_backlog(&mut chat, "alice");
        chat.send_json(alice, json!({"code": 100, "message": "earlier"}));
        let bob = chat.connect();
        chat.send(bob, "bob");
        let lines = chat.received_text(bob);
        assert!(
            lines.contains(&"* history of #lobby: 1 message(s)".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&format!("* history: [{TS_CLOCK}] #lobby <alice> earlier")),
            "{lines:?}"
        );
        chat.send(bob, "/history 5");
        assert!(chat.received_text(bob)[0].starts_with("* history of #lobby"));
    }
}

// Timeouts and flood control (issue 6).

mod limits {
    use super::*;

    fn limited_chat(auth_timeout_ms: u64, idle_timeout_ms: u64, flood_rate: f64) -> Chat {
        let mut chat = Chat::open();
        chat.hub.set_config(HubConfig {
            auth_timeout_ms,
            idle_timeout_ms,
            flood_rate,
            flood_burst: 3.0,
            ..test_config()
        });
        chat
    }

    fn at(chat: &mut Chat, mono_ms: u64) {
        chat.now.mono_ms = mono_ms;
    }

    #[test]
    fn a_connection_not_logged_in_by_the_deadline_gets_408_and_quits() {
        let mut chat = limited_chat(1000, 0, 0.0);
        let conn = chat.connect();
        chat.raw(conn);
        assert_eq!(chat.hub.deadline(conn), Some(1000));
        at(&mut chat, 999);
        chat.hub.handle_timeout(conn, chat.now);
        assert!(chat.raw(conn).is_empty(), "an early call does nothing");
        at(&mut chat, 1000);
        chat.hub.handle_timeout(conn, chat.now);
        chat.expect_error(conn, 408, "not logged in in time");
        assert!(chat.hub.is_quitting(conn));
    }

    #[test]
    fn enormous_timeouts_saturate_instead_of_wrapping_into_an_immediate_408() {
        let mut chat = limited_chat(u64::MAX, u64::MAX, 0.0);
        at(&mut chat, 5_000);
        let conn = ConnId(chat.next_conn);
        chat.next_conn += 1;
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        chat.hub.handle_connected(conn, peer, false, chat.now);
        chat.raw(conn);
        assert_eq!(chat.hub.deadline(conn), Some(u64::MAX));
        at(&mut chat, 10_000);
        chat.hub.handle_timeout(conn, chat.now);
        assert!(chat.raw(conn).is_empty(), "a login deadline wrapped");
        // The idle deadline of a logged-in JSON client, counted from its
        // last input, saturates the same way.
        let alice = chat.login("alice");
        assert_eq!(chat.hub.deadline(alice), Some(u64::MAX));
        at(&mut chat, 20_000);
        chat.hub.handle_timeout(alice, chat.now);
        assert!(chat.raw(alice).is_empty(), "an idle deadline wrapped");
    }

    #[test]
    fn logging_in_clears_the_login_deadline() {
        let mut chat = limited_chat(1000, 0, 0.0);
        let alice = chat.login("alice");
        assert_eq!(chat.hub.deadline(alice), None);
        at(&mut chat, 5000);
        chat.hub.handle_timeout(alice, chat.now);
        assert!(chat.raw(alice).is_empty());
    }

    #[test]
    fn a_silent_json_client_is_pinged_then_closed_and_any_frame_answers() {
        let mut chat = limited_chat(1000, 500, 0.0);
        let alice = chat.login("alice");
        assert_eq!(chat.hub.deadline(alice), Some(500));
        at(&mut chat, 500);
        chat.hub.handle_timeout(alice, chat.now);
        assert_eq!(chat.codes(alice), vec![209]);
        // Answering (any frame) moves the deadline on.
        at(&mut chat, 700);
        chat.send_json(alice, json!({"code": 108}));
        assert_eq!(chat.codes(alice), vec![207]);
        assert_eq!(chat.hub.deadline(alice), Some(1200));
        at(&mut chat, 1200);
        chat.hub.handle_timeout(alice, chat.now);
        assert_eq!(chat.codes(alice), vec![209]);
        at(&mut chat, 1700);
        chat.hub.handle_timeout(alice, chat.now);
        chat.expect_error(alice, 408, "no answer to the ping");
        assert!(chat.hub.is_quitting(alice));
    }

    #[test]
    fn text_clients_are_never_pinged() {
        let mut chat = limited_chat(1000, 500, 0.0);
        let bob = chat.login_text("bob");
        assert_eq!(chat.hub.deadline(bob), None);
        at(&mut chat, 10_000);
        chat.hub.handle_timeout(bob, chat.now);
        assert!(chat.raw(bob).is_empty());
    }

    #[test]
    fn a_flood_gets_429_for_frames_past_the_burst_and_they_are_not_relayed() {
        let mut chat = limited_chat(1000, 0, 1.0);
        let alice = chat.login("alice");
        let bob = chat.login("bob");
        chat.clear_all();
        for index in 0..5 {
            chat.send_json(alice, say(&format!("m{index}")));
        }
        let to_bob = chat.received(bob);
        assert_eq!(to_bob.len(), 3, "the burst of 3 passes: {to_bob:?}");
        let to_alice = chat.codes(alice);
        assert_eq!(to_alice, vec![200, 200, 200, 429, 429]);
        // PING, WHO and ROOMS are never counted.
        for _ in 0..10 {
            chat.send_json(alice, json!({"code": 108}));
            chat.send_json(alice, json!({"code": 103}));
        }
        assert!(!chat.codes(alice).contains(&429));
        // A second later one more token is there.
        chat.now.mono_ms += 1000;
        chat.send_json(alice, say("later"));
        assert_eq!(chat.codes(bob), vec![200]);
    }

    #[test]
    fn a_client_that_keeps_flooding_is_disconnected() {
        let mut chat = limited_chat(1000, 0, 1.0);
        let alice = chat.login("alice");
        let bob = chat.login("bob");
        chat.clear_all();
        for index in 0..(3 + MAX_FLOOD_STRIKES) {
            chat.send_json(alice, say(&format!("m{index}")));
        }
        let frames = chat.received(alice);
        let last = frames.last().unwrap();
        assert_eq!(last["code"], 429);
        assert!(last["error"].as_str().unwrap().contains("excess flood"));
        assert!(chat.hub.is_quitting(alice));
        assert!(chat.codes(bob).contains(&204));
    }
}

// Quiet rooms: presence is not announced in rooms past `quiet_room_size`.

mod quiet_rooms {
    use super::*;

    /// Rooms of more than two members are quiet.
    fn quiet_chat() -> Chat {
        let mut chat = Chat::open();
        chat.hub.set_config(HubConfig {
            quiet_room_size: 2,
            ..test_config()
        });
        chat
    }

    #[test]
    fn joins_past_the_size_are_confirmed_to_the_joiner_only() {
        let mut chat = quiet_chat();
        let alice = chat.login("alice");
        let bob = chat.login("bob");
        assert_eq!(chat.codes(alice), vec![201], "a room of two announces");
        let _carol = chat.login("carol");
        assert!(chat.codes(alice).is_empty());
        assert!(chat.codes(bob).is_empty());
        // JOIN of another quiet-sized room is the same rule, per room.
        chat.send_json(alice, json!({"code": 104, "room": "side"}));
        chat.send_json(bob, json!({"code": 104, "room": "side"}));
        assert_eq!(chat.codes(alice), vec![201, 201]);
        assert_eq!(chat.codes(bob), vec![201]);
    }

    #[test]
    fn leaves_are_told_only_where_the_room_is_not_quiet() {
        let mut chat = quiet_chat();
        let alice = chat.login("alice");
        let bob = chat.login("bob");
        let carol = chat.login("carol");
        chat.send_json(alice, json!({"code": 104, "room": "side"}));
        chat.send_json(carol, json!({"code": 104, "room": "side"}));
        chat.clear_all();
        // PART of the quiet lobby: only the leaver hears it.
        chat.send_json(bob, json!({"code": 105, "room": "lobby"}));
        assert_eq!(chat.codes(bob), vec![204]);
        assert!(chat.codes(alice).is_empty());
        // Now the lobby holds two: it announces again.
        chat.send_json(bob, json!({"code": 104, "room": "lobby"}));
        assert_eq!(chat.codes(alice), Vec::<u64>::new(), "three again: quiet");
        chat.clear_all();
        // Quitting: carol shares the small room "side" with alice, so alice
        // is told; bob shares only the quiet lobby, so he is not.
        chat.hub.handle_eof(carol);
        chat.hub.end_turn();
        assert_eq!(chat.codes(alice), vec![204]);
        assert!(chat.codes(bob).is_empty());
    }

    #[test]
    fn renames_are_announced_even_in_quiet_rooms() {
        let mut chat = quiet_chat();
        let alice = chat.login("alice");
        let _bob = chat.login("bob");
        let carol = chat.login("carol");
        chat.clear_all();
        chat.send_json(carol, json!({"code": 101, "username": "caroline"}));
        assert_eq!(chat.codes(alice), vec![203]);
    }
}

// What reaches the log (issue 11, item 20).

mod logs {
    use super::*;
    use std::sync::{Mutex, Once};

    /// Every record logged in this test process, formatted as the daemon's
    /// logger would print its message. Tests run in parallel, so each looks
    /// only at records with a marker of its own.
    static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }

        fn log(&self, record: &log::Record) {
            let text = record.args().to_string();
            RECORDS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(text);
        }

        fn flush(&self) {}
    }

    fn capture() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            log::set_logger(&Capture).expect("no other logger in unit tests");
            log::set_max_level(log::LevelFilter::Trace);
        });
    }

    /// The records that mention `marker`.
    fn logged_with(marker: &str) -> Vec<String> {
        RECORDS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|text| text.contains(marker))
            .cloned()
            .collect()
    }

    #[test]
    fn issue_11_no_line_that_may_carry_a_password_is_logged_at_any_level() {
        capture();
        let secret = "Hunter2-item20-pw";
        let mut chat = Chat::with_password();
        // Malformed PASS frames (an extra key, truncated JSON, a wrong
        // type, a PASS out of place), in every state before login.
        let json = chat.connect();
        let text = chat.connect();
        chat.send_json(json, json!({"code": 108}));
        let malformed = [
            format!(r#"{{"code":111,"password":"{secret}","extra":1}}"#),
            format!(r#"{{"code":111,"password":"{secret}"#),
            format!(r#"{{"code":111,"password":["{secret}"]}}"#),
            format!(r#"{{"code":110,"username":"x","password":"{secret}"}}"#),
            format!(r#"{{"code":111,"password":"{secret}"}}"#),
        ];
        for line in &malformed {
            chat.send(json, line);
        }
        chat.send_json(json, json!({"code": 110, "username": "alice"}));
        for line in &malformed {
            chat.send(json, line);
        }
        // A text user at the password prompt: whatever is typed.
        chat.send(text, "bob");
        for line in [
            secret.to_owned(),
            format!("/{secret}"),
            format!("{{{secret}"),
        ] {
            chat.send(text, &line);
        }
        chat.clear_all();
        assert_eq!(logged_with(secret), Vec::<String>::new());
        // The same lines after login are chat, and logged (escaped) at
        // debug: the filter is by state and content, not by accident.
        let alice = chat.login_with_password("alice-logs");
        chat.send_json(alice, say("item20-visible-marker"));
        assert!(!logged_with("item20-visible-marker").is_empty());
    }

    #[test]
    fn issue_11_peer_text_in_the_log_is_escaped_so_it_cannot_forge_lines_or_reach_a_terminal() {
        capture();
        let mut chat = Chat::open();
        let json = chat.connect();
        // An unknown key with an escaped newline: serde decodes it, and the
        // refusal quotes it.
        chat.send(
            json,
            r#"{"code":108,"item20\n2026-01-01T00:00:00.000Z INFO  forged":1}"#,
        );
        let text = chat.login_text("item20text");
        // A text command with ESC, OSC and BEL.
        chat.send(text, "/item20cmd\u{1b}]0;owned\u{7}\u{1b}[2J");
        chat.send(text, "item20say \u{1b}[31m red");
        chat.clear_all();
        let records = logged_with("item20");
        assert!(records.len() >= 3, "{records:#?}");
        for record in &records {
            assert!(
                !record.chars().any(|c| c.is_control()),
                "raw control character in {record:?}"
            );
        }
    }
}

// Telnet echo at the password prompt (issue 11).

mod telnet_echo {
    use super::*;

    /// Everything the connection is owed, as raw bytes (telnet commands
    /// are not UTF-8).
    fn raw_bytes(chat: &mut Chat, conn: ConnId) -> Vec<u8> {
        let mut bytes = Vec::new();
        if let Some(written) = chat
            .hub
            .with_output(conn, |outbox, arena| outbox.write_to(arena, &mut bytes))
        {
            written.expect("a Vec takes every byte it is offered");
        }
        bytes
    }

    #[test]
    fn a_telnet_client_is_told_will_echo_at_the_password_prompt_and_wont_echo_after() {
        let mut chat = Chat::with_password();
        let conn = chat.connect();
        raw_bytes(&mut chat, conn);
        chat.hub.handle_telnet(conn);
        chat.send(conn, "alice");
        assert_eq!(raw_bytes(&mut chat, conn), b"\xff\xfb\x01* password:\n");
        // A wrong password: the prompt again, echo still off (no second
        // WILL), and only the end of the typed line is echoed.
        chat.send(conn, "wrong");
        assert_eq!(
            raw_bytes(&mut chat, conn),
            b"\r\n! wrong password; type it again, or /quit (401)\n* password:\n"
        );
        chat.send(conn, SECRET);
        let bytes = raw_bytes(&mut chat, conn);
        assert!(
            bytes.starts_with(b"\r\n\xff\xfc\x01* you are now alice\n"),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
        // Logged in: echo is the client's again, and nothing more is sent.
        chat.send(conn, "hello");
        let bytes = raw_bytes(&mut chat, conn);
        assert!(!bytes.contains(&255) && !bytes.starts_with(b"\r\n"));
    }

    #[test]
    fn echo_comes_back_whenever_the_prompt_ends_without_a_login() {
        let mut chat = Chat::with_password();
        let quitter = chat.connect();
        chat.hub.handle_telnet(quitter);
        chat.send(quitter, "alice");
        raw_bytes(&mut chat, quitter);
        chat.send(quitter, "/quit");
        assert_eq!(raw_bytes(&mut chat, quitter), b"\r\n\xff\xfc\x01");
    }

    #[test]
    fn a_shutdown_at_the_password_prompt_gives_echo_back_too() {
        // Before: handle_shutdown moved the session to QUIT itself, around
        // `transition`, and the telnet client was left with echo off.
        let mut chat = Chat::with_password();
        let conn = chat.connect();
        chat.hub.handle_telnet(conn);
        chat.send(conn, "alice");
        raw_bytes(&mut chat, conn);
        chat.hub.handle_shutdown();
        let bytes = raw_bytes(&mut chat, conn);
        assert!(
            bytes.starts_with(b"\xff\xfc\x01"),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
    }

    #[test]
    fn nc_and_json_clients_never_get_telnet_bytes() {
        let mut chat = Chat::with_password();
        let nc = chat.connect();
        let json = chat.connect();
        chat.hub.handle_telnet(json);
        chat.clear_all();
        chat.send(nc, "alice");
        chat.send(nc, "wrong");
        chat.send(nc, SECRET);
        chat.send_json(json, json!({"code": 110, "username": "bob"}));
        chat.send_json(json, json!({"code": 111, "password": SECRET}));
        for conn in [nc, json] {
            let bytes = raw_bytes(&mut chat, conn);
            assert!(
                !bytes.contains(&255),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(!bytes.contains(&b'\r'));
        }
    }
}

// Sizes and budgets of server answers (issue 11, items 15 and 18, and the
// weaknesses "unthrottled answers" and "212 is one frame").

mod answers {
    use super::*;

    /// The documented minimum of `max_output_bytes`.
    const MIN_OUTPUT: usize = 65_536;

    fn history_chat(max_output_bytes: usize, backlog: usize, keep: usize) -> Chat {
        let mut chat = Chat::with(Auth::Open, max_output_bytes);
        chat.hub.set_config(HubConfig {
            max_output_bytes,
            history_backlog: Some(backlog),
            history_keep: keep,
            ..test_config()
        });
        chat
    }

    fn chat_message(id: u64, room_name: &str, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            ts: TS,
            target: Target::Room(room(room_name)),
            from: user("old"),
            text: text.to_owned(),
        }
    }

    /// Every frame's code and the whole output's size, as read.
    fn codes_and_bytes(chat: &mut Chat, conn: ConnId) -> (Vec<Value>, usize) {
        let raw = chat.raw(conn);
        let frames = raw
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON"))
            .collect();
        (frames, raw.len())
    }

    /// A JSON login on a hub with history: 210, 202, 201 and a 208, read.
    fn login(chat: &mut Chat, name: &str) -> ConnId {
        let conn = chat.connect();
        chat.send_json(conn, json!({"code": 110, "username": name}));
        assert_eq!(
            chat.codes(conn),
            vec![210, 202, 201, 208],
            "login of {name}"
        );
        conn
    }

    fn code_list(frames: &[Value]) -> Vec<u64> {
        frames.iter().map(|f| f["code"].as_u64().unwrap()).collect()
    }

    #[test]
    fn issue_11_a_json_login_into_a_lobby_of_control_characters_gets_its_202_and_a_208_under_the_cap()
     {
        // 50 messages of 4096 × \x01: 200 KiB of text, 1.2 MB of JSON.
        let mut chat = history_chat(MIN_OUTPUT, 50, 100);
        let text = "\u{1}".repeat(4096);
        chat.hub
            .restore_history((1..=50).map(|id| chat_message(id, LOBBY, &text)));
        let alice = chat.connect();
        chat.send_json(alice, json!({"code": 110, "username": "alice"}));
        // Nothing was written yet: what the client owes is the whole login.
        assert!(
            !chat.hub.enforce_output_cap(alice),
            "cut off: owed {} bytes",
            chat.hub.outbox_mut(alice).unwrap().pending_bytes()
        );
        let (frames, bytes) = codes_and_bytes(&mut chat, alice);
        assert_eq!(code_list(&frames), vec![210, 202, 201, 208]);
        assert!(bytes <= MIN_OUTPUT / ANSWER_SHARE, "{bytes}");
        let messages = frames[3]["messages"].as_array().unwrap();
        assert!(!messages.is_empty());
        assert_eq!(messages.last().unwrap()["id"], 50, "the newest ones");
        assert_eq!(messages[0]["text"], text);
        assert_eq!(frames[3]["more"], true);

        // A text client too (text mode escapes as well).
        let bob = chat.connect();
        chat.send(bob, "bob");
        assert!(!chat.hub.enforce_output_cap(bob));
        let lines = chat.received_text(bob);
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with("* history of #lobby")),
            "{lines:?}"
        );
        assert!(lines.len() > 4, "{lines:?}");
    }

    #[test]
    fn issue_11_history_of_control_characters_fits_the_cap_and_pages_on_with_more() {
        let mut chat = history_chat(MIN_OUTPUT, 50, 1000);
        let text = "\u{1}".repeat(4096);
        chat.hub
            .restore_history((1..=50).map(|id| chat_message(id, LOBBY, &text)));
        let alice = chat.connect();
        chat.send_json(alice, json!({"code": 110, "username": "alice"}));
        chat.raw(alice);
        let mut after = 0;
        let mut seen: Vec<u64> = Vec::new();
        for _ in 0..100 {
            // A second apart: this test is about sizes, not the byte rate.
            chat.now.mono_ms += 1000;
            chat.send_json(alice, json!({"code": 106, "after": after, "limit": 1000}));
            assert!(!chat.hub.enforce_output_cap(alice));
            let (frames, bytes) = codes_and_bytes(&mut chat, alice);
            assert_eq!(code_list(&frames), vec![208]);
            assert!(bytes <= MIN_OUTPUT / ANSWER_SHARE, "{bytes}");
            let ids = message_ids_of(&frames[0]);
            assert!(
                !ids.is_empty(),
                "an answer to a reader that keeps up moves on"
            );
            seen.extend(&ids);
            after = *ids.last().unwrap();
            if frames[0].get("more").is_none() {
                break;
            }
        }
        assert_eq!(seen, (1..=50).collect::<Vec<u64>>());
    }

    fn message_ids_of(frame: &Value) -> Vec<u64> {
        frame["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["id"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn issue_11_twenty_joins_at_once_never_owe_more_than_the_answer_share() {
        let mut chat = history_chat(MIN_OUTPUT, 50, 100);
        let text = "\u{1}".repeat(4096);
        let rooms: Vec<String> = (1..MAX_ROOMS_PER_USER).map(|i| format!("r{i}")).collect();
        let mut id = 0;
        for name in &rooms {
            for _ in 0..5 {
                id += 1;
                chat.hub.restore_history([chat_message(id, name, &text)]);
            }
        }
        let alice = login(&mut chat, "alice");
        // Nineteen JOINs, none of their answers read.
        for name in &rooms {
            chat.send_json(alice, join(name));
        }
        assert!(!chat.hub.enforce_output_cap(alice));
        let (frames, bytes) = codes_and_bytes(&mut chat, alice);
        assert!(bytes <= MIN_OUTPUT / ANSWER_SHARE, "{bytes}");
        let backlogs: Vec<&Value> = frames.iter().filter(|f| f["code"] == 208).collect();
        assert_eq!(backlogs.len(), rooms.len(), "every JOIN still gets its 208");
        assert!(backlogs.iter().all(|frame| frame["more"] == true));
    }

    #[test]
    fn issue_11_history_after_an_id_older_than_the_kept_window_says_gap() {
        let mut chat = history_chat(PLENTY_OF_OUTPUT, 50, 3);
        let alice = login(&mut chat, "alice");
        chat.raw(alice);
        let bob = login(&mut chat, "bob");
        chat.send_json(bob, join("side"));
        let mut ids = Vec::new();
        for index in 1..=5 {
            chat.send_json(alice, say(&format!("m{index}")));
            // Ids are global: a DM between lobby messages takes one.
            chat.send_json(bob, dm("alice", "psst"));
            ids.extend(message_ids(&chat.received(alice)));
        }
        let lobby: Vec<u64> = ids.iter().copied().step_by(2).collect();
        // m1 and m2 are gone; m3, m4, m5 are kept.
        chat.send_json(alice, json!({"code": 106, "after": lobby[0]}));
        let frame = &chat.received(alice)[0];
        assert_eq!(message_ids_of(frame), lobby[2..].to_vec());
        assert_eq!(frame["gap"], true, "m2 was dropped: {frame}");
        // After m2, or after the DM that followed it, nothing is missing.
        for after in [lobby[1], lobby[1] + 1] {
            chat.send_json(alice, json!({"code": 106, "after": after}));
            let frame = &chat.received(alice)[0];
            assert_eq!(message_ids_of(frame), lobby[2..].to_vec());
            assert_eq!(frame.get("gap"), None, "after {after}: {frame}");
        }
        // The join backlog is the newest messages: it continues nothing.
        let carol = chat.connect();
        chat.send_json(carol, json!({"code": 110, "username": "carol"}));
        let frames = chat.received(carol);
        assert_eq!(frames[3]["code"], 208);
        assert_eq!(frames[3].get("gap"), None);
        // Text mode says it in words.
        let dave = chat.connect();
        chat.send(dave, "dave");
        chat.raw(dave);
        chat.send_json(alice, say("m6"));
        chat.raw(dave);
        chat.send(dave, "/history 2");
        let lines = chat.received_text(dave);
        assert!(
            !lines.iter().any(|line| line.contains("missing")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_gap_is_said_for_history_after_an_id_never_for_the_newest_messages() {
        let mut chat = history_chat(PLENTY_OF_OUTPUT, 50, 1);
        chat.hub.restore_history([
            chat_message(1, LOBBY, "gone"),
            chat_message(2, LOBBY, "kept"),
        ]);
        let alice = login(&mut chat, "alice");
        chat.send_json(alice, json!({"code": 106, "after": 0}));
        let frame = &chat.received(alice)[0];
        assert_eq!(frame["gap"], true);
        // Text mode has no `after`: its /history is the newest, never a gap.
        let bob = chat.connect();
        chat.send(bob, "bob");
        chat.raw(bob);
        chat.send(bob, "/history");
        let lines = chat.received_text(bob);
        assert!(
            !lines.iter().any(|line| line.contains("missing")),
            "{lines:?}"
        );
    }

    /// A chat where `alice` sits in 20 rooms, each with `per_room` messages
    /// of `size` bytes; her own output is read.
    fn twenty_rooms(max_output_bytes: usize, per_room: u64, size: usize) -> (Chat, ConnId) {
        let mut chat = history_chat(max_output_bytes, 0, 1000);
        let text = "x".repeat(size);
        let mut id = 0;
        let rooms: Vec<String> = (1..MAX_ROOMS_PER_USER).map(|i| format!("r{i}")).collect();
        for name in rooms.iter().map(String::as_str).chain([LOBBY]) {
            for _ in 0..per_room {
                id += 1;
                chat.hub.restore_history([chat_message(id, name, &text)]);
            }
        }
        let alice = login(&mut chat, "alice");
        for name in &rooms {
            chat.send_json(alice, join(name));
        }
        chat.raw(alice);
        (chat, alice)
    }

    #[test]
    fn twenty_rooms_caught_up_with_history_at_once_are_never_refused() {
        for max_output_bytes in [MIN_OUTPUT, 1024 * 1024] {
            // Each room holds a full HISTORY answer of history, or more.
            let per_room = (max_output_bytes / ANSWER_SHARE).min(256 * 1024) / 4000 + 1;
            let (mut chat, alice) = twenty_rooms(max_output_bytes, per_room as u64, 4000);
            let mut rooms: Vec<(String, u64)> = (1..MAX_ROOMS_PER_USER)
                .map(|i| (format!("r{i}"), 0))
                .chain([(LOBBY.to_owned(), 0)])
                .collect();
            let mut received = 0;
            for _round in 0..100 {
                if rooms.is_empty() {
                    break;
                }
                // One HISTORY per room still behind, all at once, unread.
                for (name, after) in &rooms {
                    chat.send_json(
                        alice,
                        json!({"code": 106, "room": name, "after": after, "limit": 1000}),
                    );
                }
                assert!(!chat.hub.enforce_output_cap(alice));
                let frames = chat.received(alice);
                assert!(
                    frames.iter().all(|frame| frame["code"] == 208),
                    "{max_output_bytes}: refused: {:?}",
                    frames.iter().find(|frame| frame["code"] != 208)
                );
                let mut behind = Vec::new();
                for ((name, after), frame) in rooms.iter().zip(&frames) {
                    let ids = message_ids_of(frame);
                    received += ids.len();
                    let after = ids.last().copied().unwrap_or(*after);
                    if frame["more"] == true {
                        behind.push((name.clone(), after));
                    }
                }
                rooms = behind;
            }
            assert!(rooms.is_empty(), "{max_output_bytes}: still behind");
            assert_eq!(received, MAX_ROOMS_PER_USER * per_room);
        }
    }

    #[test]
    fn answers_past_their_byte_budget_get_429_without_counting_as_flood() {
        let max_output_bytes = MIN_OUTPUT;
        let (mut chat, alice) = twenty_rooms(max_output_bytes, 10, 4000);
        let full = max_output_bytes / ANSWER_SHARE;
        let burst = full * ANSWER_BURST;
        let mut answered = 0;
        let mut answered_bytes = 0;
        let mut refused = 0;
        // Far more than the burst, from one client, without a pause.
        for _ in 0..(4 * ANSWER_BURST) {
            chat.send_json(alice, json!({"code": 106, "after": 0, "limit": 1000}));
            for line in chat.received_text(alice) {
                let frame: Value = serde_json::from_str(&line).unwrap();
                match frame["code"].as_u64() {
                    Some(208) => {
                        answered += 1;
                        answered_bytes += line.len() + 1;
                    }
                    Some(429) => {
                        refused += 1;
                        let error = frame["error"].as_str().unwrap();
                        assert!(error.contains("bytes a second"), "{error}");
                        assert!(error.contains("try again in"), "{error}");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        // The burst, and at most one answer beyond it (the one that ran
        // the budget into debt).
        assert!(answered_bytes >= burst, "{answered_bytes} < {burst}");
        assert!(answered_bytes <= burst + full, "{answered_bytes}");
        assert!(refused >= 4 * ANSWER_BURST - answered, "{refused}");
        // Never an "excess flood" disconnect, and chat is unaffected.
        assert!(!chat.hub.is_quitting(alice));
        chat.send_json(alice, say("still here"));
        assert_eq!(chat.codes(alice), vec![200]);
        // PING, WHO and ROOMS share that budget.
        for code in [108, 103, 107] {
            chat.send_json(alice, json!({"code": code}));
            assert_eq!(chat.codes(alice), vec![429], "code {code}");
        }
        // The budget comes back with time: a full answer every 1/RATE s.
        chat.now.mono_ms += 2 * 1000 * full as u64 / (full * ANSWER_RATE) as u64;
        chat.send_json(alice, json!({"code": 108}));
        assert_eq!(chat.codes(alice), vec![207]);
    }

    #[test]
    fn rooms_is_chunked_like_who_with_more_on_every_frame_but_the_last() {
        let mut chat = Chat::open();
        let total = 2 * ROOMS_CHUNK + 49; // plus the lobby
        let mut member = chat.login("u0");
        for index in 0..total {
            if index % (MAX_ROOMS_PER_USER - 1) == 0 {
                member = chat.login(&format!("u{index}x"));
            }
            chat.send_json(member, join(&format!("room{index:03}")));
        }
        chat.clear_all();
        let alice = chat.login("alice");
        chat.send_json(alice, json!({"code": 107}));
        let frames = chat.received(alice);
        assert_eq!(frames.len(), 3);
        let mut listed = Vec::new();
        for (index, frame) in frames.iter().enumerate() {
            assert_eq!(frame["code"], 212);
            let rooms = frame["rooms"].as_array().unwrap();
            if index < 2 {
                assert_eq!(frame["more"], true);
                assert_eq!(rooms.len(), ROOMS_CHUNK);
            } else {
                assert_eq!(frame.get("more"), None);
                assert_eq!(rooms.len(), 50);
            }
            assert_eq!(frame.get("omitted"), None);
            listed.extend(rooms.iter().map(|r| r["name"].as_str().unwrap().to_owned()));
        }
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "sorted by name across frames");
        assert_eq!(listed.len(), total + 1);
        // Text mode: one line per frame.
        let bob = chat.login_text("bob");
        chat.send(bob, "/rooms");
        let lines = chat.received_text(bob);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines.iter().all(|line| line.starts_with("* rooms: #")));
    }

    #[test]
    fn issue_11_a_room_list_or_who_longer_than_the_answer_share_is_cut_and_says_omitted() {
        let mut chat = Chat::with(Auth::Open, MIN_OUTPUT);
        // 1000 users with 32-byte names, 19 rooms each beside the lobby.
        let names: Vec<String> = (0..1000).map(|index| format!("{index:0>32}")).collect();
        let first = chat.login(&names[0]);
        for (index, name) in names.iter().enumerate().skip(1) {
            let conn = chat.login(name);
            if index < 250 {
                for room_index in 0..MAX_ROOMS_PER_USER - 1 {
                    let room_name = format!("{:0>30}{room_index:02}", index);
                    chat.send_json(conn, join(&room_name));
                }
            }
            chat.clear_all();
        }
        for (code, key, entries) in [(103, "users", 1000), (107, "rooms", 1 + 249 * 19)] {
            chat.send_json(first, json!({"code": code}));
            assert!(!chat.hub.enforce_output_cap(first));
            let raw = chat.raw(first);
            assert!(
                raw.len() <= MIN_OUTPUT / ANSWER_SHARE,
                "{code}: {}",
                raw.len()
            );
            let frames: Vec<Value> = raw
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            let shown: usize = frames
                .iter()
                .map(|frame| frame[key].as_array().unwrap().len())
                .sum();
            let last = frames.last().unwrap();
            assert_eq!(last.get("more"), None);
            assert!(shown > 0);
            assert_eq!(last["omitted"], entries - shown, "{code}: {last}");
        }
    }
}
