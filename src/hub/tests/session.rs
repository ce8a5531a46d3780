//! Hub tests: Legality of every code in every state, PING, leaving (QUIT, EOF, close,
//! shutdown), codec errors, timeouts and flood control.

use super::*;

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
    assert!(chat.is_leaving(alice));
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
    assert!(chat.is_leaving(alice));
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
    assert!(!chat.is_leaving(alice));
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
        Wire::Plain,
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
    assert!(chat.is_leaving(stranger));
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
        assert!(chat.is_leaving(conn), "{conn}");
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
        assert!(chat.is_leaving(conn), "{request}");
        chat.send(conn, "Host: example.com");
        assert!(chat.received_text(conn).is_empty());
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
        assert!(chat.is_leaving(conn));
    }

    #[test]
    fn enormous_timeouts_saturate_instead_of_wrapping_into_an_immediate_408() {
        let mut chat = limited_chat(u64::MAX, u64::MAX, 0.0);
        at(&mut chat, 5_000);
        let conn = ConnId(chat.next_conn);
        chat.next_conn += 1;
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        chat.hub.handle_connected(conn, peer, Wire::Plain, chat.now);
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
        assert!(chat.is_leaving(alice));
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
        assert!(chat.is_leaving(alice));
        assert!(chat.codes(bob).contains(&204));
    }
}
