//! Hub tests: Text-mode commands, and what text users see of peer text.

use super::*;

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
    assert!(chat.is_leaving(alice));
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
