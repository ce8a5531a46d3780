//! Hub tests: SAY, DM, room history (the join backlog and HISTORY) and the sizes and
//! budgets of answers.

use super::*;

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
        assert!(chat.hub.ledger.has_logged_ids_exhausted);
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
            !chat.stalled_flush(alice),
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
        assert!(!chat.stalled_flush(bob));
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
            assert!(!chat.stalled_flush(alice));
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
        assert!(!chat.stalled_flush(alice));
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
                assert!(!chat.stalled_flush(alice));
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
        assert!(!chat.is_leaving(alice));
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
            assert!(!chat.stalled_flush(first));
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
