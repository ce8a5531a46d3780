//! The model without a terminal or a socket: frames in as the server's own
//! serialiser writes them, requests out as the server's parser reads them.

use super::buffer::{BufferId, LineKind};
use super::model::{Mode, Model, SavedState, Settings, Want};
use crate::proto::{AuthKind, ChatMessage, Code, Features, RoomName, ServerMsg, Target, Username};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::Value;

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn settings(mode: Mode, name: Option<&str>) -> Settings {
    Settings {
        servers: vec!["127.0.0.1:5050".into()],
        user: name.map(str::to_owned),
        room: None,
        password: None,
        mode,
        tz_offset_secs: 0,
    }
}

const LINES: Mode = Mode::Lines { json: false };

/// Feeds a frame as the server serialises it.
fn feed(model: &mut Model, msg: ServerMsg, now: u64) {
    let line = String::from_utf8(msg.to_json_line()).unwrap();
    model.handle_line(line.trim_end(), now);
}

/// The greeting of a server from before `features` (and refs): most tests
/// read plain answers; `hello_with_features` is today's riftd.
fn hello(model: &mut Model, auth: AuthKind) {
    let kind = match auth {
        AuthKind::Open => "open",
        AuthKind::Password => "password",
        AuthKind::Accounts => "accounts",
    };
    model.handle_line(
        &format!(r#"{{"code":210,"server":"riftd","version":"0.1.0","auth":"{kind}"}}"#),
        0,
    );
}

/// Today's riftd greeting, as the server serialises it: refs and history.
fn hello_with_features(model: &mut Model, auth: AuthKind) {
    feed(
        model,
        ServerMsg::Hello {
            auth,
            features: Features { has_history: true },
        },
        0,
    );
}

fn chat(id: u64, to: &str, from: &str, text: &str) -> ChatMessage {
    let target = match to.strip_prefix('@') {
        Some(name) => Target::User(user(name)),
        None => Target::Room(room(to)),
    };
    ChatMessage {
        id,
        ts: id * 60_000,
        target,
        from: user(from),
        text: text.into(),
    }
}

fn message(model: &mut Model, id: u64, to: &str, from: &str, text: &str) {
    feed(model, ServerMsg::Message(chat(id, to, from, text)), 0);
}

fn joined(model: &mut Model, name: &str, room_name: &str) {
    feed(
        model,
        ServerMsg::Connected {
            username: user(name),
            room: room(room_name),
        },
        0,
    );
}

fn backlog(model: &mut Model, room_name: &str, ids: &[u64], more: bool, gap: bool) {
    let messages = ids
        .iter()
        .map(|id| chat(*id, room_name, "bob", &format!("m{id}")))
        .collect();
    feed(
        model,
        ServerMsg::Backlog {
            room: room(room_name),
            messages,
            more,
            gap,
        },
        0,
    );
}

/// Requests sent since the last call, as JSON values.
fn sent(model: &mut Model) -> Vec<Value> {
    model
        .take_outgoing()
        .iter()
        .map(|line| {
            assert!(line.ends_with('\n'));
            serde_json::from_str(line).unwrap()
        })
        .collect()
}

fn codes(values: &[Value]) -> Vec<u64> {
    values
        .iter()
        .map(|value| value["code"].as_u64().unwrap())
        .collect()
}

/// Connected, greeted (open), logged in as `name` and in `lobby` with an
/// empty backlog; everything sent so far is dropped.
fn logged_in(mode: Mode, name: &str, saved: SavedState) -> Model {
    let mut model = Model::new(settings(mode, Some(name)), saved, 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user(name),
        },
        0,
    );
    joined(&mut model, name, "lobby");
    backlog(&mut model, "lobby", &[], false, false);
    sent(&mut model);
    model
}

fn ids(model: &Model, id: &BufferId) -> Vec<u64> {
    let buffer = model
        .buffers()
        .iter()
        .find(|buffer| &buffer.id == id)
        .unwrap();
    buffer
        .lines
        .iter()
        .filter_map(|line| line.chat_id())
        .collect()
}

fn lobby() -> BufferId {
    BufferId::Room(room("lobby"))
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn type_line(model: &mut Model, text: &str) {
    for ch in text.chars() {
        model.handle_key(key(KeyCode::Char(ch)), 0);
    }
    model.handle_key(key(KeyCode::Enter), 0);
}

// ---- login ----------------------------------------------------------------

#[test]
fn an_open_login_sends_user_then_joins_the_default_room_and_asks_who_is_there() {
    let mut model = Model::new(settings(Mode::Ui, Some("alice")), SavedState::default(), 5);
    assert_eq!(model.want(5), Want::Connect { server: 0 });
    model.handle_connected(5);
    assert_eq!(model.want(5), Want::Wait);
    hello(&mut model, AuthKind::Open);
    let out = sent(&mut model);
    assert_eq!(out, [serde_json::json!({"code":110,"username":"alice"})]);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        0,
    );
    joined(&mut model, "alice", "lobby");
    let out = sent(&mut model);
    assert_eq!(out, [serde_json::json!({"code":103,"room":"lobby"})]);
    backlog(&mut model, "lobby", &[1, 2], false, false);
    assert_eq!(model.current_buffer().id, lobby());
    assert_eq!(ids(&model, &lobby()), [1, 2]);
    feed(
        &mut model,
        ServerMsg::Users {
            room: room("lobby"),
            users: vec![user("alice"), user("bob")],
            more: false,
            omitted: 0,
        },
        0,
    );
    assert_eq!(model.current_buffer().members, [user("alice"), user("bob")]);
    // Renaming ourselves moves our own entry (others' 203 never reaches us).
    type_line(&mut model, "/nick Alicia");
    sent(&mut model);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("Alicia"),
        },
        0,
    );
    assert_eq!(
        model.current_buffer().members,
        [user("Alicia"), user("bob")]
    );
    // The silent WHO adds no line.
    assert!(
        !model
            .current_buffer()
            .lines
            .iter()
            .any(|line| matches!(line.kind, LineKind::Users { .. }))
    );
}

#[test]
fn a_password_login_uses_the_given_password_or_asks_for_it_masked() {
    let mut with = settings(Mode::Ui, Some("alice"));
    with.password = Some("s3cret".into());
    let mut model = Model::new(with, SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Password);
    feed(&mut model, ServerMsg::PassNeeded, 0);
    assert_eq!(codes(&sent(&mut model)), [110, 111]);

    let mut model = Model::new(settings(Mode::Ui, Some("alice")), SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Password);
    feed(&mut model, ServerMsg::PassNeeded, 0);
    assert!(model.is_password_prompt());
    model.handle_key(key(KeyCode::Tab), 0);
    type_line(&mut model, "pw");
    let out = sent(&mut model);
    assert_eq!(out[1], serde_json::json!({"code":111,"password":"pw"}));
    // A password is never recalled by Up.
    model.handle_key(key(KeyCode::Up), 0);
    assert_eq!(model.editor().text(), "");
}

#[test]
fn line_mode_asks_the_shell_for_a_missing_password() {
    let mut model = Model::new(settings(LINES, Some("alice")), SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Accounts);
    assert!(!model.needs_password());
    feed(&mut model, ServerMsg::PassNeeded, 0);
    assert!(model.needs_password());
    model.handle_password("pw".into(), 0);
    assert!(!model.needs_password());
    assert_eq!(codes(&sent(&mut model)), [110, 111]);
}

#[test]
fn a_taken_name_asks_for_another_in_the_ui_and_fails_in_line_mode() {
    let mut model = Model::new(settings(Mode::Ui, Some("alice")), SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::error(Code::Conflict, "username alice is taken"),
        0,
    );
    assert!(model.is_name_prompt());
    sent(&mut model);
    type_line(&mut model, "alice2");
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":110,"username":"alice2"})]
    );
    assert_eq!(model.want(0), Want::Wait);

    let mut model = Model::new(settings(LINES, Some("alice")), SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::error(Code::Conflict, "username alice is taken"),
        0,
    );
    assert_eq!(model.want(0), Want::Quit(1));
    assert_eq!(
        model.take_printed().last().unwrap(),
        "! login failed: username alice is taken (409)"
    );
}

#[test]
fn a_wrong_password_is_final_in_line_mode_and_asked_again_in_the_ui() {
    let mut with = settings(LINES, Some("alice"));
    with.password = Some("bad".into());
    let mut model = Model::new(with, SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Password);
    feed(&mut model, ServerMsg::PassNeeded, 0);
    feed(
        &mut model,
        ServerMsg::error(Code::WrongPassword, "wrong password; send USER again"),
        0,
    );
    assert_eq!(model.want(0), Want::Quit(1));
    // Even a drop after it does not bring a retry.
    model.handle_disconnected("closed", 0);
    assert_eq!(model.want(60_000), Want::Quit(1));

    let mut with = settings(Mode::Ui, Some("alice"));
    with.password = Some("bad".into());
    let mut model = Model::new(with, SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Password);
    feed(&mut model, ServerMsg::PassNeeded, 0);
    sent(&mut model);
    feed(
        &mut model,
        ServerMsg::error(Code::WrongPassword, "wrong password; send USER again"),
        0,
    );
    assert_eq!(codes(&sent(&mut model)), [110]);
    feed(&mut model, ServerMsg::PassNeeded, 0);
    assert!(model.is_password_prompt());
    assert_eq!(model.want(0), Want::Wait);
}

#[test]
fn line_mode_without_a_name_fails_at_once() {
    let mut model = Model::new(settings(LINES, None), SavedState::default(), 0);
    assert_eq!(model.want(0), Want::Quit(2));
    assert!(model.take_printed()[0].contains("--user"));
}

#[test]
fn a_refusal_the_ui_cannot_fix_waits_for_connect() {
    let mut model = Model::new(settings(Mode::Ui, Some("alice")), SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Password);
    sent(&mut model);
    feed(
        &mut model,
        ServerMsg::error(Code::Forbidden, "this server takes passwords only over TLS"),
        0,
    );
    assert!(sent(&mut model).is_empty());
    type_line(&mut model, "/connect");
    assert_eq!(codes(&sent(&mut model)), [110]);
    feed(
        &mut model,
        ServerMsg::error(Code::Forbidden, "this server takes passwords only over TLS"),
        0,
    );
    model.handle_disconnected("closed", 0);
    assert_eq!(
        model.want(60_000),
        Want::Wait,
        "no reconnect loop into the same refusal"
    );
    assert_eq!(model.next_deadline(), None);
    type_line(&mut model, "/connect");
    assert_eq!(model.want(0), Want::Connect { server: 0 });
}

// ---- several servers: the nodes of one cluster -------------------------------

const NODES: [&str; 3] = ["node-a:5050", "node-b:5051", "node-c:5052"];

fn cluster_settings(mode: Mode) -> Settings {
    let mut with = settings(mode, Some("alice"));
    with.servers = NODES.iter().map(|node| (*node).to_owned()).collect();
    with
}

/// The server buffer's notices, in order.
fn notices(model: &Model) -> Vec<String> {
    model.buffers()[0]
        .lines
        .iter()
        .filter_map(|line| match &line.kind {
            LineKind::Notice(text) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn logged_in_on_a_cluster(mode: Mode) -> Model {
    let mut model = Model::new(cluster_settings(mode), SavedState::default(), 0);
    assert_eq!(model.want(0), Want::Connect { server: 0 });
    model.handle_connected(0);
    hello(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        0,
    );
    joined(&mut model, "alice", "lobby");
    backlog(&mut model, "lobby", &[], false, false);
    sent(&mut model);
    model
}

#[test]
fn each_connection_after_a_failure_or_a_drop_goes_to_the_next_server_with_the_one_backoff() {
    let mut model = logged_in_on_a_cluster(Mode::Ui);
    assert_eq!(model.server(), "node-a:5050");
    assert!(notices(&model).contains(&"connected to node-a:5050".to_owned()));
    model.handle_disconnected("reset by peer", 1_000);
    // The status line now names the server the next attempt goes to.
    assert_eq!(model.server(), "node-b:5051");
    assert_eq!(model.want(1_999), Want::Wait);
    assert_eq!(model.want(2_000), Want::Connect { server: 1 });
    model.handle_connect_failed("refused", 2_000);
    assert_eq!(
        model.want(3_999),
        Want::Wait,
        "the backoff doubles as before"
    );
    assert_eq!(model.want(4_000), Want::Connect { server: 2 });
    model.handle_connect_failed("refused", 4_000);
    // Round robin: back to the first.
    assert_eq!(model.want(8_000), Want::Connect { server: 0 });
    model.handle_connect_failed("refused", 8_000);
    assert_eq!(model.want(16_000), Want::Connect { server: 1 });
    model.handle_connected(16_000);
    assert_eq!(model.server(), "node-b:5051");
    hello(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        16_000,
    );
    assert_eq!(
        notices(&model)[2..],
        [
            "disconnected from node-a:5050: reset by peer; reconnecting to node-b:5051 in 1 s",
            "could not connect to node-b:5051: refused; reconnecting to node-c:5052 in 2 s",
            "could not connect to node-c:5052: refused; reconnecting to node-a:5050 in 4 s",
            "could not connect to node-a:5050: refused; reconnecting to node-b:5051 in 8 s",
            "connected to node-b:5051",
            "logged in as alice",
        ]
    );
    // The login reset the backoff; the next drop moves on to node-c.
    model.handle_disconnected("gone", 20_000);
    assert_eq!(model.want(21_000), Want::Connect { server: 2 });
}

#[test]
fn after_failing_over_the_new_node_is_asked_for_what_came_after_the_last_shown_id() {
    let mut model = logged_in_on_a_cluster(LINES);
    message(&mut model, 1, "lobby", "bob", "m1");
    message(&mut model, 2, "lobby", "bob", "m2");
    model.take_printed();
    model.handle_disconnected("reset", 10_000);
    assert_eq!(model.want(11_000), Want::Connect { server: 1 });
    let out = relogin(&mut model, 11_000);
    assert_eq!(codes(&out), [110, 104]);
    joined(&mut model, "alice", "lobby");
    // Ids are cluster-wide: node-b is asked after node-a's last shown id.
    assert_eq!(
        sent(&mut model)[0],
        serde_json::json!({"code":106,"room":"lobby","after":2})
    );
    backlog(&mut model, "lobby", &[1, 2, 3], false, false);
    backlog(&mut model, "lobby", &[3], false, false);
    let printed: Vec<String> = model
        .take_printed()
        .into_iter()
        .filter(|line| line.contains("<bob>"))
        .collect();
    assert_eq!(printed, ["[00:03] #lobby <bob> m3"]);
    assert_eq!(ids(&model, &lobby()), [1, 2, 3]);
}

fn refuse_name(model: &mut Model, now: u64) {
    feed(
        model,
        ServerMsg::error(Code::Conflict, "username alice is taken"),
        now,
    );
}

#[test]
fn our_own_name_refused_at_a_reconnect_is_asked_for_again_until_it_is_released() {
    let mut model = logged_in_on_a_cluster(Mode::Ui);
    model.handle_disconnected("reset", 1_000);
    assert_eq!(model.want(2_000), Want::Connect { server: 1 });
    model.handle_connected(2_000);
    hello(&mut model, AuthKind::Open);
    assert_eq!(codes(&sent(&mut model)), [110]);
    // node-a died holding "alice": node-b refuses it until the cluster
    // frees it.
    refuse_name(&mut model, 2_000);
    assert!(!model.is_name_prompt(), "no new name is asked for");
    assert_eq!(model.name(), Some(&user("alice")));
    assert_eq!(
        notices(&model).last().unwrap(),
        "username alice is taken (409): waiting for your name to be released (up to 15 s)"
    );
    assert_eq!(model.want(2_500), Want::Wait);
    assert_eq!(model.next_deadline(), Some(3_000));
    model.handle_tick(2_999);
    assert!(sent(&mut model).is_empty());
    model.handle_tick(3_000);
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":110,"username":"alice"})]
    );
    // Refused again: asked again a second later, said only once.
    let shown = notices(&model).len();
    refuse_name(&mut model, 3_000);
    assert_eq!(notices(&model).len(), shown);
    model.handle_tick(4_000);
    assert_eq!(codes(&sent(&mut model)), [110]);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        4_000,
    );
    assert_eq!(
        codes(&sent(&mut model)),
        [104],
        "the rooms are joined again"
    );
    assert_eq!(notices(&model).last().unwrap(), "logged in as alice");
}

#[test]
fn our_own_name_still_refused_after_fifteen_seconds_is_handled_as_at_a_first_login() {
    for mode in [Mode::Ui, LINES] {
        let mut model = logged_in_on_a_cluster(mode);
        model.handle_disconnected("reset", 1_000);
        model.handle_connected(2_000);
        hello(&mut model, AuthKind::Open);
        sent(&mut model);
        let mut now = 2_000;
        refuse_name(&mut model, now);
        while now < 17_000 {
            assert_eq!(model.want(now), Want::Wait, "{mode:?} at {now}");
            now = model.next_deadline().unwrap();
            model.handle_tick(now);
            assert_eq!(codes(&sent(&mut model)), [110], "{mode:?} at {now}");
            refuse_name(&mut model, now);
        }
        assert_eq!(now, 17_000, "the last try is at the bound");
        match mode {
            Mode::Ui => {
                assert!(model.is_name_prompt());
                assert_eq!(model.want(now), Want::Wait);
            }
            Mode::Lines { .. } => {
                assert_eq!(model.want(now), Want::Quit(1));
                assert!(
                    model
                        .take_printed()
                        .contains(&"! login failed: username alice is taken (409)".to_owned())
                );
            }
        }
    }
    // Once given up, the same name typed again is someone else's: no wait.
    let mut model = logged_in_on_a_cluster(Mode::Ui);
    model.handle_disconnected("reset", 0);
    model.handle_connected(1_000);
    hello(&mut model, AuthKind::Open);
    refuse_name(&mut model, 1_000);
    refuse_name(&mut model, 16_000);
    assert!(model.is_name_prompt());
    type_line(&mut model, "alice");
    sent(&mut model);
    refuse_name(&mut model, 16_500);
    assert!(model.is_name_prompt());
}

#[test]
fn a_refused_name_at_the_first_login_or_a_new_name_is_not_waited_for() {
    // The first login: the name is someone else's (the existing rule).
    let mut model = Model::new(cluster_settings(Mode::Ui), SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Open);
    refuse_name(&mut model, 0);
    assert!(model.is_name_prompt());
    // A reconnect for a name never held (typed after a refusal).
    type_line(&mut model, "alicia");
    sent(&mut model);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alicia"),
        },
        0,
    );
    model.handle_disconnected("reset", 0);
    model.handle_connected(1_000);
    hello(&mut model, AuthKind::Open);
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":110,"username":"alicia"})]
    );
    feed(
        &mut model,
        ServerMsg::error(Code::Conflict, "username bob is taken"),
        1_000,
    );
    // "alicia" was held: this 409 is waited out as ours.
    assert!(!model.is_name_prompt());
}

// ---- buffers, unread, mentions, DMs -----------------------------------------

#[test]
fn unread_and_mentions_count_in_buffers_not_shown_and_the_marker_stays_until_left() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    joined(&mut model, "alice", "rust");
    backlog(&mut model, "rust", &[], false, false);
    assert_eq!(model.current_buffer().id, lobby());
    message(&mut model, 10, "rust", "bob", "hi all");
    message(&mut model, 11, "rust", "bob", "ALICE: look");
    message(&mut model, 12, "rust", "bob", "malice is not you");
    message(&mut model, 13, "rust", "alice", "my own line counts not");
    message(&mut model, 14, "lobby", "bob", "alice in the shown buffer");
    let rust = &model.buffers()[2];
    assert_eq!((rust.unread, rust.mentions, rust.marker), (3, 1, Some(10)));
    assert_eq!(
        (
            model.current_buffer().unread,
            model.current_buffer().mentions
        ),
        (0, 0)
    );
    let mention = |model: &Model, at: usize, id: u64| {
        model.buffers()[at].lines.iter().any(|line| {
            matches!(line.kind, LineKind::Chat { id: got, is_mention: true, .. } if got == id)
        })
    };
    assert!(mention(&model, 2, 11) && !mention(&model, 2, 12) && mention(&model, 1, 14));
    model.handle_key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::CONTROL), 0);
    let rust = model.current_buffer();
    assert_eq!((rust.unread, rust.mentions, rust.marker), (0, 0, Some(10)));
    model.handle_key(KeyEvent::new(KeyCode::Char('p'), KeyModifiers::CONTROL), 0);
    assert_eq!(model.buffers()[2].marker, None);
    model.handle_key(KeyEvent::new(KeyCode::Char('1'), KeyModifiers::ALT), 0);
    assert_eq!(model.current_buffer().id, BufferId::Server);
}

#[test]
fn a_private_message_opens_its_own_buffer_and_counts_as_a_mention() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    message(&mut model, 20, "@alice", "Bob", "psst");
    let dm = model
        .buffers()
        .iter()
        .find(|buffer| buffer.id == BufferId::Dm(user("bob").key()))
        .unwrap();
    assert_eq!((dm.title.as_str(), dm.unread, dm.mentions), ("Bob", 1, 1));
    type_line(&mut model, "/msg carol hello there");
    assert_eq!(model.current_buffer().title, "carol");
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":102,"to":"carol","message":"hello there"})]
    );
    // The echo of our own message lands in carol's buffer, not a new one.
    message(&mut model, 21, "@carol", "alice", "hello there");
    assert_eq!(ids(&model, &BufferId::Dm(user("carol").key())), [21]);
    type_line(&mut model, "more");
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":102,"to":"carol","message":"more"})]
    );
    feed(
        &mut model,
        ServerMsg::Renamed {
            old: user("carol"),
            new: user("caz"),
        },
        0,
    );
    assert_eq!(model.current_buffer().title, "caz");
    assert_eq!(model.current_buffer().id, BufferId::Dm(user("caz").key()));
}

#[test]
fn me_is_sent_as_text_and_shown_as_an_action() {
    let mut model = logged_in(LINES, "alice", SavedState::default());
    model.take_printed();
    model.handle_input_line("/me waves", 0);
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":100,"message":"/me waves","room":"lobby"})]
    );
    message(&mut model, 3, "lobby", "alice", "/me waves");
    assert_eq!(model.take_printed(), ["[00:03] #lobby * alice waves"]);
}

#[test]
fn presence_and_renames_update_the_member_list_with_notices() {
    let mut model = logged_in(LINES, "alice", SavedState::default());
    joined(&mut model, "bob", "lobby");
    feed(
        &mut model,
        ServerMsg::Renamed {
            old: user("bob"),
            new: user("rob"),
        },
        0,
    );
    joined(&mut model, "eve", "lobby");
    feed(
        &mut model,
        ServerMsg::Disconnected {
            username: user("eve"),
            room: Some(room("lobby")),
        },
        0,
    );
    feed(
        &mut model,
        ServerMsg::Disconnected {
            username: user("rob"),
            room: None,
        },
        0,
    );
    assert_eq!(
        model.take_printed()[3..],
        [
            "* bob joined #lobby",
            "* bob is now known as rob",
            "* eve joined #lobby",
            "* eve left #lobby",
            "* rob quit",
        ]
    );
    assert_eq!(model.current_buffer().members, [user("alice")]);
}

#[test]
fn parting_a_room_closes_its_buffer_and_forgets_its_last_id() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    message(&mut model, 4, "lobby", "bob", "x");
    assert!(
        model
            .saved_state()
            .unwrap()
            .last_shown
            .contains_key("lobby")
    );
    type_line(&mut model, "/part");
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":105,"room":"lobby"})]
    );
    feed(
        &mut model,
        ServerMsg::Disconnected {
            username: user("alice"),
            room: Some(room("lobby")),
        },
        0,
    );
    assert_eq!(model.buffers().len(), 1);
    assert!(model.saved_state().unwrap().last_shown.is_empty());
}

#[test]
fn hostile_text_is_escaped_and_hostile_names_are_refused_not_printed() {
    let mut model = logged_in(LINES, "alice", SavedState::default());
    model.take_printed();
    message(
        &mut model,
        5,
        "lobby",
        "bob",
        "\u{1b}]0;pwned\u{7}\u{202e}txt\u{200b}\r",
    );
    assert_eq!(
        model.take_printed(),
        ["[00:05] #lobby <bob> ^[]0;pwned^G<U+202E>txt<U+200B>^M"]
    );
    model.handle_line(r#"{"code":201,"new":"ev\u001b[31mil","room":"lobby"}"#, 0);
    let printed = model.take_printed();
    assert_eq!(printed.len(), 1);
    assert!(
        printed[0].starts_with("! unreadable frame from the server"),
        "{printed:?}"
    );
    assert!(!printed[0].chars().any(char::is_control));
    model.handle_line("\u{1b}[2J not json", 0);
    assert!(!model.take_printed()[0].chars().any(char::is_control));
}

// ---- scrollback -------------------------------------------------------------

#[test]
fn scrolling_past_the_top_asks_for_an_older_page_and_stops_at_the_start() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    model.handle_resize(80, 24);
    for id in 50..=99 {
        message(&mut model, id, "lobby", "bob", "x");
    }
    model.handle_key(key(KeyCode::PageUp), 0);
    assert!(
        sent(&mut model).is_empty(),
        "one page up is still inside what is loaded"
    );
    // Scrolling stops at the oldest line (the pane never empties) and
    // only then asks for more.
    let mut presses = 1;
    let asked = loop {
        model.handle_key(key(KeyCode::PageUp), 0);
        presses += 1;
        let asked = sent(&mut model);
        if !asked.is_empty() {
            break asked;
        }
        assert!(presses < 10, "never asked for older messages");
    };
    // 50 messages in a 22-row pane, half a page (10 rows) a press.
    assert_eq!(presses, 3);
    let top = model.current_buffer().lines.len() - 22;
    assert_eq!(model.current_buffer().scroll, top);
    // HISTORY has no `before`: ask for the last (loaded + a page).
    assert_eq!(
        asked,
        [serde_json::json!({"code":106,"room":"lobby","limit":150})]
    );
    model.handle_key(key(KeyCode::PageUp), 0);
    assert!(sent(&mut model).is_empty(), "one older page at a time");
    assert_eq!(model.current_buffer().scroll, top, "not past the top");
    let mut answer = vec![40, 41];
    answer.extend(50..=99);
    backlog(&mut model, "lobby", &answer, false, false);
    assert_eq!(ids(&model, &lobby()), answer);
    assert!(model.current_buffer().at_history_start);
    model.handle_key(key(KeyCode::PageUp), 0);
    assert!(sent(&mut model).is_empty());
    // Back down to the newest line, half a page a press.
    for _ in 0..4 {
        model.handle_key(key(KeyCode::PageDown), 0);
    }
    assert_eq!(model.current_buffer().scroll, 0);
}

// ---- reconnect and catch-up -------------------------------------------------

#[test]
fn reconnects_back_off_from_one_to_thirty_seconds_and_reset_after_a_login() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    model.handle_disconnected("reset by peer", 1_000);
    assert_eq!(model.want(1_999), Want::Wait);
    assert_eq!(model.next_deadline(), Some(2_000));
    assert_eq!(model.want(2_000), Want::Connect { server: 0 });
    let mut now = 2_000;
    for wait in [2_000, 4_000, 8_000, 16_000, 30_000, 30_000] {
        model.handle_connect_failed("refused", now);
        assert_eq!(model.want(now + wait - 1), Want::Wait);
        assert_eq!(model.want(now + wait), Want::Connect { server: 0 });
        now += wait;
    }
    model.handle_connected(now);
    hello(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        now,
    );
    model.handle_disconnected("again", now);
    assert_eq!(model.want(now + 1_000), Want::Connect { server: 0 });
    let shown = model.buffers()[0].lines.iter().any(|line| {
        matches!(&line.kind, LineKind::Notice(text) if text == "disconnected: reset by peer; reconnecting in 1 s")
    });
    assert!(shown);
}

/// Logs in again on the same model and returns what it sent at the login.
fn relogin(model: &mut Model, now: u64) -> Vec<Value> {
    model.handle_connected(now);
    hello(model, AuthKind::Open);
    feed(
        model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        now,
    );
    sent(model)
}

#[test]
fn after_a_drop_every_room_message_shows_exactly_once_in_order() {
    let mut model = logged_in(LINES, "alice", SavedState::default());
    joined(&mut model, "alice", "rust");
    backlog(&mut model, "rust", &[], false, false);
    message(&mut model, 1, "lobby", "bob", "m1");
    message(&mut model, 2, "lobby", "bob", "m2");
    message(&mut model, 3, "lobby", "bob", "m3");
    sent(&mut model);
    model.take_printed();
    model.handle_disconnected("reset", 10_000);
    assert_eq!(model.want(11_000), Want::Connect { server: 0 });
    let out = relogin(&mut model, 11_000);
    // Every room is joined again (lobby too: we cannot know it is the default).
    assert_eq!(out[0], serde_json::json!({"code":110,"username":"alice"}));
    assert_eq!(
        out[1..],
        [
            serde_json::json!({"code":104,"room":"lobby"}),
            serde_json::json!({"code":104,"room":"rust"}),
        ]
    );
    // The server's login join of the default room, then its backlog, which
    // overlaps what was shown and runs past it.
    joined(&mut model, "alice", "lobby");
    assert_eq!(
        sent(&mut model),
        [
            serde_json::json!({"code":106,"room":"lobby","after":3}),
            serde_json::json!({"code":103,"room":"lobby"}),
        ]
    );
    backlog(&mut model, "lobby", &[2, 3, 4, 9], false, false);
    joined(&mut model, "alice", "lobby");
    joined(&mut model, "alice", "rust");
    backlog(&mut model, "rust", &[], false, false);
    // rust showed nothing yet: it catches up from the start of its history.
    assert_eq!(
        sent(&mut model)[0],
        serde_json::json!({"code":106,"room":"rust","after":0})
    );
    backlog(&mut model, "rust", &[], false, false);
    // A live message while the catch-up runs.
    message(&mut model, 10, "lobby", "bob", "m10");
    // HISTORY answers, in pages.
    backlog(&mut model, "lobby", &[4, 5, 6], true, false);
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":106,"room":"lobby","after":6})]
    );
    assert_eq!(
        ids(&model, &lobby()),
        [1, 2, 3],
        "nothing shown before the catch-up ends"
    );
    backlog(&mut model, "lobby", &[7, 8, 9], false, false);
    assert_eq!(ids(&model, &lobby()), (1..=10).collect::<Vec<_>>());
    let printed: Vec<String> = model
        .take_printed()
        .into_iter()
        .filter(|line| line.contains("#lobby <bob>"))
        .collect();
    let expected: Vec<String> = (4..=10)
        .map(|id| format!("[00:{id:02}] #lobby <bob> m{id}"))
        .collect();
    assert_eq!(printed, expected);
    assert_eq!(model.saved_state().unwrap().last_shown["lobby"], 10);
    message(&mut model, 9, "lobby", "bob", "m9 again");
    assert_eq!(ids(&model, &lobby()).len(), 10);
}

#[test]
fn a_gap_in_the_catch_up_is_told_in_that_room() {
    let mut model = logged_in(LINES, "alice", SavedState::default());
    message(&mut model, 3, "lobby", "bob", "m3");
    model.handle_disconnected("reset", 0);
    relogin(&mut model, 1_000);
    joined(&mut model, "alice", "lobby");
    backlog(&mut model, "lobby", &[90], false, false);
    model.take_printed();
    backlog(&mut model, "lobby", &[80, 90], false, true);
    assert_eq!(
        model.take_printed(),
        [
            "* #lobby: some messages sent while you were away are lost (the server no longer keeps them)",
            "[01:20] #lobby <bob> m80",
            "[01:30] #lobby <bob> m90",
        ]
    );
}

#[test]
fn the_last_shown_id_survives_a_restart_and_the_join_backlog_is_not_shown_twice() {
    let mut saved = SavedState::default();
    saved.last_shown.insert("lobby".into(), 41);
    let mut model = Model::new(settings(LINES, Some("alice")), saved, 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        0,
    );
    sent(&mut model);
    joined(&mut model, "alice", "lobby");
    assert_eq!(
        sent(&mut model)[0],
        serde_json::json!({"code":106,"room":"lobby","after":41})
    );
    backlog(&mut model, "lobby", &[40, 41, 42], false, false);
    backlog(&mut model, "lobby", &[42, 43], false, false);
    assert_eq!(ids(&model, &lobby()), [42, 43]);
    assert_eq!(model.saved_state().unwrap().last_shown["lobby"], 43);
    assert_eq!(model.saved_state(), None);
}

#[test]
fn a_catch_up_the_server_never_answers_ends_with_a_notice() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    message(&mut model, 3, "lobby", "bob", "m3");
    model.handle_disconnected("reset", 0);
    relogin(&mut model, 1_000);
    joined(&mut model, "alice", "lobby");
    backlog(&mut model, "lobby", &[5], false, false);
    assert!(model.next_deadline().unwrap() <= 16_000);
    model.handle_tick(16_000);
    assert_eq!(ids(&model, &lobby()), [3, 5]);
    let told = model.current_buffer().lines.iter().any(|line| matches!(&line.kind, LineKind::Error { text, .. } if text.contains("did not answer")));
    assert!(told);
}

#[test]
fn private_conversations_are_told_at_reconnect_that_dms_are_not_stored() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    message(&mut model, 7, "@alice", "bob", "psst");
    model.handle_disconnected("reset", 0);
    relogin(&mut model, 1_000);
    let dm = model
        .buffers()
        .iter()
        .find(|buffer| buffer.id == BufferId::Dm(user("bob").key()))
        .unwrap();
    let told = dm
        .lines
        .iter()
        .any(|line| matches!(&line.kind, LineKind::Notice(text) if text.contains("not stored")));
    assert!(told);
}

// ---- refs -------------------------------------------------------------------

#[test]
fn with_refs_an_error_shows_in_the_buffer_where_its_command_was_typed() {
    let mut model = Model::new(settings(Mode::Ui, Some("alice")), SavedState::default(), 0);
    model.handle_connected(0);
    // The greeting as today's riftd writes it, refs included.
    hello_with_features(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        0,
    );
    joined(&mut model, "alice", "lobby");
    backlog(&mut model, "lobby", &[], false, false);
    joined(&mut model, "alice", "rust");
    backlog(&mut model, "rust", &[], false, false);
    sent(&mut model);
    type_line(&mut model, "/nick bob");
    let out = sent(&mut model);
    let reference = out[0]["ref"].as_str().unwrap().to_owned();
    // The user moves on to another buffer before the answer comes.
    model.handle_key(KeyEvent::new(KeyCode::Char('3'), KeyModifiers::ALT), 0);
    model.handle_line(
        &format!(r#"{{"code":409,"error":"username bob is taken","ref":"{reference}"}}"#),
        0,
    );
    let lobby_buffer = &model.buffers()[1];
    assert_eq!(lobby_buffer.id, lobby());
    assert!(matches!(
        &lobby_buffer.lines.last().unwrap().kind,
        LineKind::Error { code: Some(409), command: Some(command), .. } if command == "/nick bob"
    ));
}

#[test]
fn without_the_ref_feature_no_ref_is_sent() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    type_line(&mut model, "/who");
    type_line(&mut model, "/rooms");
    type_line(&mut model, "hello");
    for value in sent(&mut model) {
        assert!(value.get("ref").is_none(), "{value}");
    }
}

// ---- line mode end, lag, quit ---------------------------------------------------

#[test]
fn line_mode_sends_what_was_typed_before_login_and_quits_once_the_server_relayed_it() {
    let mut model = Model::new(settings(LINES, Some("alice")), SavedState::default(), 0);
    model.handle_input_line("early", 0);
    model.handle_input_end(0);
    assert_eq!(model.want(0), Want::Connect { server: 0 });
    model.handle_connected(0);
    hello(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        0,
    );
    let out = sent(&mut model);
    assert_eq!(out[0]["code"], 110);
    assert_eq!(out[1], serde_json::json!({"code":100,"message":"early"}));
    assert_eq!(out[2]["code"], 108);
    let token = out[2]["token"].as_str().unwrap().to_owned();
    assert_eq!(model.want(0), Want::Wait);
    feed(&mut model, ServerMsg::Pong { token: None }, 0);
    assert_eq!(model.want(0), Want::Wait);
    model.handle_line(&format!(r#"{{"code":207,"token":"{token}"}}"#), 0);
    assert_eq!(model.want(0), Want::Wait, "the QUIT is not taken yet");
    assert_eq!(codes(&sent(&mut model)), [109]);
    assert_eq!(model.want(0), Want::Quit(0));
}

#[test]
fn line_mode_input_after_login_goes_to_the_given_room() {
    let mut with = settings(LINES, Some("alice"));
    with.room = Some("#Rust".into());
    let mut model = Model::new(with, SavedState::default(), 0);
    model.handle_connected(0);
    hello(&mut model, AuthKind::Open);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        0,
    );
    assert_eq!(
        sent(&mut model)[1..],
        [serde_json::json!({"code":104,"room":"rust"})]
    );
    joined(&mut model, "alice", "lobby");
    joined(&mut model, "alice", "rust");
    sent(&mut model);
    model.handle_input_line("hi", 0);
    model.handle_input_line("/msg bob psst", 0);
    model.handle_input_line("still rust", 0);
    let out = sent(&mut model);
    assert_eq!(
        out[0],
        serde_json::json!({"code":100,"message":"hi","room":"rust"})
    );
    assert_eq!(
        out[2],
        serde_json::json!({"code":100,"message":"still rust","room":"rust"})
    );
    model.handle_input_end(0);
    assert_eq!(sent(&mut model)[0]["code"], 108);
}

#[test]
fn json_lines_are_one_object_per_event() {
    let mut model = logged_in(Mode::Lines { json: true }, "alice", SavedState::default());
    model.take_printed();
    message(&mut model, 9, "lobby", "bob", "hi\u{1b}");
    let printed = model.take_printed();
    let value: Value = serde_json::from_str(&printed[0]).unwrap();
    assert_eq!(value["type"], "message");
    assert_eq!(value["text"], "hi\u{1b}");
    assert!(!printed[0].contains('\u{1b}'));
}

#[test]
fn the_ui_measures_lag_every_thirty_seconds() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    model.handle_tick(100);
    let out = sent(&mut model);
    assert_eq!(codes(&out), [108]);
    let token = out[0]["token"].as_str().unwrap().to_owned();
    model.handle_line(&format!(r#"{{"code":207,"token":"{token}"}}"#), 142);
    assert_eq!(model.lag_ms(), Some(42));
    model.handle_tick(20_000);
    assert!(sent(&mut model).is_empty());
    assert_eq!(model.next_deadline(), Some(30_100));
    model.handle_tick(30_100);
    assert_eq!(codes(&sent(&mut model)), [108]);
}

#[test]
fn quit_sends_quit_and_ends_when_the_server_closes() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    type_line(&mut model, "/quit");
    assert_eq!(model.want(0), Want::Wait, "QUIT is not sent yet");
    assert_eq!(codes(&sent(&mut model)), [109]);
    assert_eq!(model.want(0), Want::Wait);
    model.handle_disconnected("closed", 10);
    assert_eq!(model.want(10), Want::Quit(0));
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    model.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), 0);
    sent(&mut model);
    assert_eq!(model.want(1_000), Want::Quit(0));
}

#[test]
fn tab_completes_members_rooms_and_commands() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    feed(
        &mut model,
        ServerMsg::Users {
            room: room("lobby"),
            users: vec![user("alice"), user("bobby")],
            more: false,
            omitted: 0,
        },
        0,
    );
    for ch in "hi bo".chars() {
        model.handle_key(key(KeyCode::Char(ch)), 0);
    }
    model.handle_key(key(KeyCode::Tab), 0);
    assert_eq!(model.editor().text(), "hi bobby");
    model.handle_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL), 0);
    for ch in "/jo".chars() {
        model.handle_key(key(KeyCode::Char(ch)), 0);
    }
    model.handle_key(key(KeyCode::Tab), 0);
    model.handle_key(key(KeyCode::Char(' ')), 0);
    model.handle_key(key(KeyCode::Char('l')), 0);
    model.handle_key(key(KeyCode::Tab), 0);
    assert_eq!(model.editor().text(), "/join lobby");
}

#[test]
fn history_n_shows_the_last_messages_again_in_line_mode() {
    let mut model = logged_in(LINES, "alice", SavedState::default());
    model.handle_input_line("/history 2", 0);
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":106,"room":"lobby","limit":2})]
    );
    model.take_printed();
    backlog(&mut model, "lobby", &[1, 2], false, false);
    assert_eq!(
        model.take_printed(),
        [
            "(history) [00:01] #lobby <bob> m1",
            "(history) [00:02] #lobby <bob> m2"
        ]
    );
}

#[test]
fn commands_while_disconnected_are_refused_not_lost_silently() {
    let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
    model.handle_disconnected("reset", 0);
    type_line(&mut model, "hello");
    assert!(sent(&mut model).is_empty());
    assert!(matches!(
        &model.current_buffer().lines.last().unwrap().kind,
        LineKind::Error { command: Some(command), .. } if command == "hello"
    ));
}

#[test]
fn line_mode_waits_for_the_rooms_to_be_back_before_its_last_ping_and_resends_lost_lines() {
    let mut model = logged_in(LINES, "alice", SavedState::default());
    message(&mut model, 1, "lobby", "bob", "m1");
    model.handle_input_line("confirmed", 0);
    model.handle_input_line("lost", 0);
    model.handle_input_line("/msg bob lost too", 0);
    sent(&mut model);
    message(&mut model, 2, "lobby", "alice", "confirmed");
    model.handle_input_end(0);
    assert_eq!(codes(&sent(&mut model)), [108]);
    model.handle_disconnected("reset", 0);
    assert_eq!(model.want(1_000), Want::Connect { server: 0 });
    let out = relogin(&mut model, 1_000);
    assert_eq!(codes(&out), [110, 104], "no PING before lobby is back");
    joined(&mut model, "alice", "lobby");
    assert!(sent(&mut model).iter().all(|value| value["code"] != 108));
    backlog(&mut model, "lobby", &[1, 2], false, false);
    backlog(&mut model, "lobby", &[], false, false);
    let out = sent(&mut model);
    assert_eq!(
        out[0],
        serde_json::json!({"code":100,"message":"lost","room":"lobby"})
    );
    assert_eq!(out[1]["code"], 108);
    assert!(
        model
            .take_printed()
            .iter()
            .any(|line| line == "* this private message may not have been delivered: lost too")
    );
    let token = out[1]["token"].as_str().unwrap().to_owned();
    model.handle_line(&format!(r#"{{"code":207,"token":"{token}"}}"#), 0);
    assert_eq!(codes(&sent(&mut model)), [109]);
    assert_eq!(model.want(0), Want::Quit(0));
}

#[test]
fn with_refs_a_refused_line_is_not_sent_again() {
    let mut model = Model::new(settings(Mode::Ui, Some("alice")), SavedState::default(), 0);
    model.handle_connected(0);
    model.handle_line(r#"{"code":210,"auth":"open","features":["ref"]}"#, 0);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        0,
    );
    joined(&mut model, "alice", "lobby");
    backlog(&mut model, "lobby", &[], false, false);
    message(&mut model, 1, "lobby", "bob", "m1");
    sent(&mut model);
    type_line(&mut model, "too fast");
    let reference = sent(&mut model)[0]["ref"].as_str().unwrap().to_owned();
    model.handle_line(
        &format!(r#"{{"code":429,"error":"slow down","ref":"{reference}"}}"#),
        0,
    );
    model.handle_disconnected("reset", 0);
    model.handle_connected(1_000);
    model.handle_line(r#"{"code":210,"auth":"open","features":["ref"]}"#, 0);
    feed(
        &mut model,
        ServerMsg::YourName {
            username: user("alice"),
        },
        0,
    );
    sent(&mut model);
    joined(&mut model, "alice", "lobby");
    let out = sent(&mut model);
    assert_eq!(out[0]["code"], 106);
    let history = out[0]["ref"].as_str().unwrap().to_owned();
    backlog(&mut model, "lobby", &[1], false, false);
    model.handle_line(
        &format!(r#"{{"code":208,"room":"lobby","messages":[],"ref":"{history}"}}"#),
        0,
    );
    assert!(model.catch_ups.is_empty(), "the catch-up ended");
    assert!(sent(&mut model).iter().all(|value| value["code"] != 100));
}

#[test]
fn a_who_answer_in_chunks_is_one_member_list_and_one_line() {
    let mut model = logged_in(LINES, "alice", SavedState::default());
    model.take_printed();
    let chunk = |users: &[&str], more: bool, omitted: usize| ServerMsg::Users {
        room: room("lobby"),
        users: users.iter().map(|name| user(name)).collect(),
        more,
        omitted,
    };
    // The silent WHO sent at the join, in two chunks: no line.
    feed(&mut model, chunk(&["alice", "bob"], true, 0), 0);
    feed(&mut model, chunk(&["carol"], false, 0), 0);
    assert!(model.take_printed().is_empty());
    assert_eq!(
        model.current_buffer().members,
        [user("alice"), user("bob"), user("carol")]
    );
    model.handle_input_line("/who", 0);
    assert_eq!(
        sent(&mut model),
        [serde_json::json!({"code":103,"room":"lobby"})]
    );
    feed(&mut model, chunk(&["alice"], true, 0), 0);
    feed(&mut model, chunk(&["bob"], false, 7), 0);
    assert_eq!(
        model.take_printed(),
        ["* in #lobby: alice bob (and 7 more, not shown)"]
    );
    assert_eq!(model.current_buffer().members, [user("alice"), user("bob")]);
}

#[test]
fn a_fresh_join_backlog_is_context_but_a_catch_up_counts_unread() {
    let mut saved = SavedState::default();
    saved.last_shown.insert("rust".into(), 5);
    let mut model = logged_in(Mode::Ui, "alice", saved);
    joined(&mut model, "alice", "news");
    backlog(&mut model, "news", &[1, 2], false, false);
    joined(&mut model, "alice", "rust");
    backlog(&mut model, "rust", &[4, 5, 6], false, false);
    backlog(&mut model, "rust", &[6, 7], false, false);
    let counts: Vec<(String, usize)> = model
        .buffers()
        .iter()
        .map(|buffer| (buffer.title.clone(), buffer.unread))
        .collect();
    assert_eq!(
        counts,
        [
            ("riftd".into(), 0),
            ("#lobby".into(), 0),
            ("#news".into(), 0),
            ("#rust".into(), 2)
        ]
    );
}

mod random {
    use super::*;
    use proptest::prelude::*;

    fn frame() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["alice", "bob", "Bob", "lobby", "rust", "x\u{1b}"]);
        let text = ".{0,12}";
        (
            100u16..=520,
            name.clone(),
            name,
            text,
            0u64..20,
            any::<bool>(),
        )
            .prop_map(|(code, a, b, text, id, flag)| {
                serde_json::json!({
                    "code": code, "new": a, "old": b, "room": b, "username": a, "to": a,
                    "users": [a, b], "more": flag, "gap": !flag, "error": text,
                    "rooms": [{"name": b, "users": id}], "token": text, "auth": "open",
                    "message": {"id": id, "ts": id, "room": b, "from": a, "text": text},
                    "messages": [{"id": id, "ts": id, "room": b, "from": a, "text": text}],
                    "ref": format!("r{id}"), "features": ["ref"],
                })
                .to_string()
            })
    }

    fn event() -> impl Strategy<Value = u8> {
        0u8..12
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_frames_keys_and_drops_leave_a_model_that_draws(
            frames in prop::collection::vec(frame(), 0..40),
            events in prop::collection::vec(event(), 0..40),
            junk in ".{0,40}",
        ) {
            let mut model = logged_in(Mode::Ui, "alice", SavedState::default());
            model.handle_line(&junk, 0);
            for (at, frame) in frames.iter().enumerate() {
                let now = at as u64 * 500;
                model.handle_line(frame, now);
                match events.get(at).copied().unwrap_or(0) {
                    1 => model.handle_key(key(KeyCode::PageUp), now),
                    2 => model.handle_key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::CONTROL), now),
                    3 => model.handle_key(key(KeyCode::Tab), now),
                    4 => model.handle_disconnected("drop", now),
                    5 => model.handle_connected(now),
                    6 => type_line(&mut model, "/part"),
                    7 => type_line(&mut model, "/msg bob hi"),
                    8 => type_line(&mut model, "/close"),
                    9 => model.handle_tick(now + 20_000),
                    10 => model.handle_paste("漢\u{1b}字\n", now),
                    11 => model.handle_key(key(KeyCode::Left), now),
                    _ => {}
                }
                model.take_outgoing();
                let _ = model.want(now);
                let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(30, 6)).unwrap();
                terminal.draw(|frame| super::super::view::draw(frame, &model)).unwrap();
            }
        }
    }
}
