//! Hub tests: Fan-out: slow consumers are cut off, broadcast frames are shared.

use super::*;

// Slow consumers and shared frames.

#[test]
fn a_recipient_that_never_reads_is_cut_off_and_the_others_get_every_message() {
    // Cut-offs happen after a flush (`Hub::flush`), never just
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
        chat.stalled_flush(sleeper);
        if cut_at.is_none() && chat.cut_off(sleeper).is_some() {
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
    let Some(CutOff::SlowConsumer { owed, limit }) = chat.cut_off(sleeper) else {
        panic!("no slow-consumer cut-off");
    };
    assert!(owed > max_output_bytes, "{owed}");
    assert_eq!(limit, max_output_bytes);
    assert_eq!(chat.hub.outbox_mut(sleeper).unwrap().pending_bytes(), 0);
    assert!(chat.raw(sleeper).is_empty());

    // Its lines are ignored now, and it receives nothing more.
    chat.send_json(sleeper, say("I'm awake"));
    assert!(chat.received(bob).is_empty());
    chat.send_json(bob, say("too late"));
    assert_eq!(chat.codes(bob), vec![200]);
    assert!(chat.raw(sleeper).is_empty());
    assert!(!chat.is_leaving(sleeper));
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
    assert!(chat.cut_off(bob).is_none());
    assert!(chat.hub.outbox_mut(bob).unwrap().pending_bytes() > max_output_bytes);
    // The flush writes it all: nothing is owed, nobody is cut off.
    assert_eq!(message_ids(&chat.received(bob)).len(), 64);
    assert!(!chat.stalled_flush(bob));
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
