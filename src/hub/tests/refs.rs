//! Hub tests: the `ref` a JSON client ties to a request, echoed on the
//! frames that answer that request alone and on no broadcast, and the
//! `features` of the greeting (issue 13).

use super::*;
use crate::auth::Checked;

/// `frame` with `"ref": reference` added.
fn with_ref(mut frame: Value, reference: &str) -> Value {
    frame["ref"] = json!(reference);
    frame
}

/// The line a frame gets when it answers a request with ref `r`: the same
/// bytes with `,"ref":"r"` before the closing brace.
fn tied(line: &str, reference: &str) -> String {
    let body = line.strip_suffix('}').expect("a JSON object");
    format!("{body},\"ref\":\"{reference}\"}}")
}

/// A JSON user logged in on a hub with history; its own output is read.
fn login_with_history(chat: &mut Chat, name: &str) -> ConnId {
    let conn = chat.connect();
    chat.send_json(conn, json!({"code": 110, "username": name}));
    assert_eq!(
        chat.codes(conn),
        vec![210, 202, 201, 208],
        "login of {name}"
    );
    conn
}

fn history_chat() -> Chat {
    let mut chat = Chat::open();
    chat.hub.set_config(HubConfig {
        history_backlog: Some(50),
        ..test_config()
    });
    chat
}

// The greeting.

#[test]
fn the_greeting_lists_ref_and_lists_history_only_when_history_is_on() {
    let mut chat = Chat::open();
    let conn = chat.connect();
    assert_eq!(
        chat.received_text(conn),
        vec![format!(
            "{{\"code\":210,\"server\":\"riftd\",\"version\":\"{}\",\"auth\":\"open\",\"features\":[\"ref\"],\"hint\":\"send JSON frames, or type a username to chat in plain text\"}}",
            env!("CARGO_PKG_VERSION")
        )]
    );
    let mut chat = history_chat();
    let conn = chat.connect();
    assert_eq!(
        chat.received(conn)[0]["features"],
        json!(["ref", "history"])
    );
}

// Answers carry the ref.

#[test]
fn an_error_refusing_a_frame_with_a_ref_carries_it() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    chat.login("bob");
    chat.clear_all();
    let cases = [
        (json!({"code": 100, "message": " ", "ref": "e1"}), 400),
        (
            json!({"code": 100, "message": "x", "room": "side", "ref": "e2"}),
            403,
        ),
        (json!({"code": 110, "username": "again", "ref": "e3"}), 403),
        (
            json!({"code": 102, "to": "nobody", "message": "x", "ref": "e4"}),
            404,
        ),
        (json!({"code": 106, "ref": "e5"}), 404),
        (json!({"code": 101, "username": "BOB", "ref": "e6"}), 409),
        (json!({"code": 104, "room": "bad room", "ref": "e7"}), 400),
    ];
    for (frame, code) in cases {
        let reference = frame["ref"].as_str().unwrap().to_owned();
        chat.send_json(alice, frame.clone());
        let frames = chat.received(alice);
        assert_eq!(frames.len(), 1, "{frame}: {frames:?}");
        assert_eq!(frames[0]["code"], code, "{frame}: {frames:?}");
        assert_eq!(frames[0]["ref"], reference.as_str(), "{frame}: {frames:?}");
    }
}

#[test]
fn a_flood_refusal_carries_the_ref_of_the_frame_it_drops() {
    let mut chat = Chat::open();
    chat.hub.set_config(HubConfig {
        flood_rate: 1.0,
        flood_burst: 1.0,
        ..test_config()
    });
    let alice = chat.login("alice");
    chat.send_json(alice, with_ref(say("one"), "f1"));
    assert_eq!(
        chat.received(alice),
        vec![room_message(1, TS, LOBBY, "alice", "one")]
    );
    chat.send_json(alice, with_ref(say("two"), "f2"));
    let frames = chat.received(alice);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["code"], 429);
    assert_eq!(frames[0]["ref"], "f2");
}

#[test]
fn pong_who_rooms_and_history_answers_carry_the_ref() {
    let mut chat = history_chat();
    let alice = login_with_history(&mut chat, "alice");
    chat.send_json(alice, say("hello"));
    chat.clear_all();
    chat.send_json(alice, json!({"code": 108, "token": 42, "ref": "p"}));
    assert_eq!(
        chat.received_text(alice),
        vec![r#"{"code":207,"token":42,"ref":"p"}"#]
    );
    chat.send_json(alice, json!({"code": 103, "ref": "w"}));
    assert_eq!(
        chat.received(alice),
        vec![json!({"code": 206, "room": LOBBY, "users": ["alice"], "ref": "w"})]
    );
    chat.send_json(alice, json!({"code": 107, "ref": "r"}));
    assert_eq!(
        chat.received(alice),
        vec![with_ref(room_list(&[(LOBBY, 1)]), "r")]
    );
    chat.send_json(alice, json!({"code": 106, "after": 0, "ref": "h"}));
    let frames = chat.received(alice);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["code"], 208);
    assert_eq!(frames[0]["messages"][0]["text"], "hello");
    assert_eq!(frames[0]["ref"], "h");
}

#[test]
fn every_chunk_of_a_who_and_of_a_rooms_answer_carries_the_ref() {
    let mut chat = Chat::open();
    let first = chat.login("user000");
    for index in 1..2 * WHO_CHUNK + 10 {
        let member = chat.login(&format!("user{index:03}"));
        // Rooms enough for three 212 chunks, at most 20 per member.
        for room_index in 0..2 {
            chat.send_json(member, join(&format!("r{index:03}x{room_index}")));
        }
        chat.raw(first);
    }
    chat.clear_all();
    chat.send_json(first, json!({"code": 103, "ref": "who"}));
    let frames = chat.received(first);
    assert_eq!(frames.len(), 3);
    assert!(
        frames.iter().all(|frame| frame["ref"] == "who"),
        "{frames:?}"
    );
    chat.send_json(first, json!({"code": 107, "ref": "rooms"}));
    let frames = chat.received(first);
    assert!(frames.len() >= 3, "{} frames", frames.len());
    assert!(
        frames
            .iter()
            .all(|frame| frame["code"] == 212 && frame["ref"] == "rooms")
    );
}

#[test]
fn user_pass_and_rename_answers_carry_the_ref_and_what_follows_them_does_not() {
    // Open auth: USER's 202 answers it; the 201 of the default room is
    // presence.
    let mut chat = Chat::open();
    let bob = chat.login("bob");
    let alice = chat.connect();
    chat.raw(alice);
    chat.send_json(alice, json!({"code": 110, "username": "alice", "ref": "u"}));
    assert_eq!(
        chat.received(alice),
        vec![with_ref(your_name("alice"), "u"), joined("alice", LOBBY)]
    );
    assert_eq!(chat.received(bob), vec![joined("alice", LOBBY)]);
    chat.send_json(alice, with_ref(rename("alice2"), "n"));
    assert_eq!(
        chat.received(alice),
        vec![with_ref(your_name("alice2"), "n")]
    );
    assert_eq!(chat.received(bob), vec![renamed("alice", "alice2")]);

    // A shared password: 211 answers USER, 401 or 202 answers PASS.
    let mut chat = Chat::with_password();
    let conn = chat.connect();
    chat.raw(conn);
    chat.send_json(conn, json!({"code": 110, "username": "carol", "ref": "1"}));
    assert_eq!(chat.received(conn), vec![json!({"code": 211, "ref": "1"})]);
    chat.send_json(conn, json!({"code": 111, "password": "wrong", "ref": "2"}));
    let frames = chat.received(conn);
    assert_eq!(frames[0]["code"], 401);
    assert_eq!(frames[0]["ref"], "2");
    chat.send_json(conn, json!({"code": 110, "username": "carol"}));
    chat.send_json(conn, json!({"code": 111, "password": SECRET, "ref": "3"}));
    assert_eq!(
        chat.received(conn),
        vec![
            json!({"code": 211}),
            with_ref(your_name("carol"), "3"),
            joined("carol", LOBBY)
        ]
    );
}

#[test]
fn a_password_checked_off_the_loop_is_answered_with_its_ref() {
    use crate::accounts::Users;
    let mut users = Users::default();
    users.add(user("alice"), "alice-pw").unwrap();
    let mut chat = Chat::open();
    chat.hub.set_config(HubConfig {
        auth: Auth::Accounts {
            users: std::sync::Arc::new(users),
        },
        ..test_config()
    });
    let conn = chat.connect();
    chat.send_json(conn, json!({"code": 110, "username": "alice"}));
    chat.send_json(
        conn,
        json!({"code": 111, "password": "alice-pw", "ref": "a"}),
    );
    let job = chat.hub.drain_verify_jobs().next().expect("a check");
    chat.raw(conn);
    // The queue was full: 503 answers that PASS.
    chat.hub.handle_verify_busy(conn, job.ticket);
    let frames = chat.received(conn);
    assert_eq!(
        (frames[0]["code"].clone(), frames[0]["ref"].clone()),
        (json!(503), json!("a"))
    );
    // Sent again with another ref, then a wrong verdict: 401 with it.
    chat.send_json(conn, json!({"code": 111, "password": "nope", "ref": "b"}));
    let job = chat.hub.drain_verify_jobs().next().expect("a check");
    chat.hub
        .handle_verified(conn, job.ticket, Checked::Wrong, chat.now);
    let frames = chat.received(conn);
    assert_eq!(
        (frames[0]["code"].clone(), frames[0]["ref"].clone()),
        (json!(401), json!("b"))
    );
    // Without a ref, nothing of an earlier one is left to echo.
    chat.send_json(conn, json!({"code": 110, "username": "alice"}));
    chat.send_json(conn, json!({"code": 111, "password": "alice-pw"}));
    let job = chat.hub.drain_verify_jobs().next().expect("a check");
    chat.hub
        .handle_verified(conn, job.ticket, Checked::Valid, chat.now);
    assert_eq!(
        chat.received(conn),
        vec![
            json!({"code": 211}),
            your_name("alice"),
            joined("alice", LOBBY)
        ]
    );
    assert!(chat.hub.check_refs.is_empty());
}

// Broadcasts never carry it.

#[test]
fn broadcasts_caused_by_a_frame_with_a_ref_carry_none_not_even_the_senders_copy() {
    let mut chat = history_chat();
    let alice = login_with_history(&mut chat, "alice");
    let bob = login_with_history(&mut chat, "bob");
    chat.clear_all();
    chat.send_json(alice, with_ref(say("hi"), "s"));
    let expected = vec![room_message(1, TS, LOBBY, "alice", "hi")];
    assert_eq!(chat.received(alice), expected);
    assert_eq!(chat.received(bob), expected);
    chat.send_json(alice, with_ref(dm("bob", "psst"), "d"));
    let expected = vec![direct_message(2, TS, "bob", "alice", "psst")];
    assert_eq!(chat.received(alice), expected);
    assert_eq!(chat.received(bob), expected);
    // JOIN: the 201 is presence and the 208 the room's backlog, not an
    // answer: neither carries the JOIN's ref.
    chat.send_json(bob, join("side"));
    chat.clear_all();
    chat.send_json(alice, with_ref(join("side"), "j"));
    assert_eq!(
        chat.received(alice),
        vec![
            joined("alice", "side"),
            json!({"code": 208, "room": "side", "messages": []})
        ]
    );
    assert_eq!(chat.received(bob), vec![joined("alice", "side")]);
    chat.send_json(alice, with_ref(part("side"), "p"));
    assert_eq!(chat.received(alice), vec![left_room("alice", "side")]);
    assert_eq!(chat.received(bob), vec![left_room("alice", "side")]);
    chat.send_json(alice, json!({"code": 109, "ref": "q"}));
    assert!(chat.received(alice).is_empty());
    assert_eq!(chat.received(bob), vec![quit("alice")]);
}

// A bad ref.

#[test]
fn a_bad_ref_is_a_400_without_a_ref_and_the_request_is_not_carried_out() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    let too_long = "x".repeat(MAX_REF_BYTES + 1);
    let too_long_multibyte = "é".repeat(MAX_REF_BYTES / 2 + 1);
    for bad in [
        json!(7),
        json!(null),
        json!(["a"]),
        json!({"a": 1}),
        json!(""),
        json!(too_long),
        json!(too_long_multibyte),
        json!("a\nb"),
        json!("tab\there"),
        json!("\u{7f}"),
        json!("\u{85}"),
    ] {
        let mut frame = say("hi");
        frame["ref"] = bad.clone();
        chat.send_json(alice, frame);
        let frames = chat.received(alice);
        assert_eq!(frames.len(), 1, "{bad}: {frames:?}");
        assert_eq!(frames[0]["code"], 400, "{bad}: {frames:?}");
        assert_eq!(frames[0].get("ref"), None, "{bad}: {frames:?}");
        let error = frames[0]["error"].as_str().unwrap();
        assert!(error.contains("`ref`"), "{bad}: {error}");
        assert!(chat.received(bob).is_empty(), "{bad}: said anyway");
    }
    // A line the server cannot read as a frame of known keys: its ref is
    // not read either.
    chat.send(alice, r#"{"code":108,"ref":"k","bogus":1}"#);
    let frames = chat.received(alice);
    assert_eq!(
        (frames[0]["code"].clone(), frames[0].get("ref")),
        (json!(400), None)
    );
}

#[test]
fn a_ref_of_64_bytes_any_printable_unicode_is_echoed_as_the_same_string() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    for good in [
        "x".repeat(MAX_REF_BYTES),
        "é".repeat(MAX_REF_BYTES / 2),
        "a \"quoted\" \\ ref ✓".to_owned(),
        "1".to_owned(),
    ] {
        chat.send_json(alice, json!({"code": 108, "ref": good}));
        assert_eq!(
            chat.received(alice),
            vec![json!({"code": 207, "ref": good})]
        );
    }
    // Echoed as the same string, whatever escapes spelled it.
    chat.send(alice, r#"{"code":108,"ref":"\u0041b"}"#);
    assert_eq!(
        chat.received_text(alice),
        vec![r#"{"code":207,"ref":"Ab"}"#]
    );
}

// Without a ref, nothing changes.

#[test]
fn without_a_ref_every_answer_is_byte_identical_and_a_ref_only_adds_its_key() {
    let requests = [
        json!({"code": 108}),
        json!({"code": 108, "token": {"a": [1, 2.50]}}),
        json!({"code": 103}),
        json!({"code": 107}),
        json!({"code": 106}),
        json!({"code": 106, "room": "elsewhere"}),
        json!({"code": 100, "message": ""}),
        json!({"code": 110, "username": "again"}),
        json!({"code": 101, "username": "alice2"}),
    ];
    for request in requests {
        let mut answers = Vec::new();
        for reference in [None, Some("tag")] {
            let mut chat = history_chat();
            let alice = login_with_history(&mut chat, "alice");
            chat.send_json(alice, say("kept"));
            chat.clear_all();
            let mut frame = request.clone();
            if let Some(reference) = reference {
                frame["ref"] = json!(reference);
            }
            chat.send_json(alice, frame);
            answers.push(chat.received_text(alice));
        }
        let (plain, with) = (&answers[0], &answers[1]);
        assert!(!plain.is_empty(), "{request}");
        assert!(plain.iter().all(|line| !line.contains("ref")), "{plain:?}");
        let expected: Vec<String> = plain.iter().map(|line| tied(line, "tag")).collect();
        assert_eq!(*with, expected, "{request}");
    }
    // The exact bytes of before, for a few of them.
    let mut chat = history_chat();
    let alice = login_with_history(&mut chat, "alice");
    chat.clear_all();
    chat.send_json(alice, json!({"code": 108, "token": 1}));
    chat.send_json(alice, json!({"code": 103}));
    chat.send_json(alice, json!({"code": 106}));
    chat.send_json(alice, json!({"code": 100, "message": ""}));
    assert_eq!(
        chat.raw(alice),
        "{\"code\":207,\"token\":1}\n\
         {\"code\":206,\"room\":\"lobby\",\"users\":[\"alice\"]}\n\
         {\"code\":208,\"room\":\"lobby\",\"messages\":[]}\n\
         {\"code\":400,\"error\":\"message is empty\"}\n"
    );
}

#[test]
fn a_text_mode_line_never_carries_a_ref() {
    let mut chat = Chat::open();
    let alice = chat.login_text("alice");
    chat.send(alice, "/ping");
    assert_eq!(chat.received_text(alice), vec!["* pong"]);
    chat.send(alice, r#"{"code":108,"ref":"x"}"#);
    let lines = chat.received_text(alice);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].ends_with(r#"<alice> {"code":108,"ref":"x"}"#),
        "{lines:?}"
    );
}
