//! Hub tests: RENAME, WHO, JOIN, PART, ROOMS and quiet rooms.

use super::*;

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
