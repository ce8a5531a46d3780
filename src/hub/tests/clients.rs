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

// The lifecycle the hub answers: `Fate` on input, `AfterFlush` on a flush.

/// A flush into a socket that takes everything.
fn flush_whole(chat: &mut Chat, conn: ConnId) -> (AfterFlush, Vec<u8>) {
    let mut bytes = Vec::new();
    let after = chat
        .hub
        .flush(conn, |outbox, arena| outbox.write_to(arena, &mut bytes))
        .expect("a Vec takes every byte");
    (after, bytes)
}

#[test]
fn an_open_session_stays_open_after_a_flush_whole_or_partial() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    assert_eq!(chat.hub.fate(alice), Fate::Open);
    chat.send_json(alice, json!({"code": 108}));
    let (after, bytes) = flush_whole(&mut chat, alice);
    assert_eq!(after, AfterFlush::Open(Flushed::All));
    assert!(!bytes.is_empty(), "the 207 was written");
    chat.send_json(alice, json!({"code": 108}));
    let after = chat.hub.flush(alice, |_, _| Ok(Flushed::Partly));
    assert_eq!(after.unwrap(), AfterFlush::Open(Flushed::Partly));
    assert_eq!(chat.hub.fate(alice), Fate::Open);
}

#[test]
fn quit_makes_a_session_leave_and_a_whole_flush_ends_it() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    assert_eq!(
        chat.hub.handle_line(alice, r#"{"code":109}"#, chat.now),
        Fate::Leaving
    );
    // Others hear of it at once; the leaver's output is still owed.
    assert_eq!(chat.received(bob), vec![quit("alice")]);
    // A socket that takes nothing: still leaving, the bytes still owed.
    let after = chat.hub.flush(alice, |_, _| Ok(Flushed::Partly));
    assert_eq!(after.unwrap(), AfterFlush::Leaving);
    assert_eq!(chat.hub.fate(alice), Fate::Leaving);
    // Everything written: the session has ended and the hub forgot it.
    let (after, _) = flush_whole(&mut chat, alice);
    assert_eq!(after, AfterFlush::Ended);
    assert_eq!(chat.hub.fate(alice), Fate::Ended);
    assert!(chat.hub.state(alice).is_none());
    // Its close, reported later by the shell, changes nothing for others.
    chat.hub.handle_closed(alice);
    assert!(chat.received(bob).is_empty());
    // The name is free again.
    let again = chat.login("alice");
    assert_eq!(chat.hub.fate(again), Fate::Open);
}

#[test]
fn eof_makes_a_session_leave_once() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    assert_eq!(chat.hub.handle_eof(alice), Fate::Leaving);
    assert_eq!(chat.hub.handle_eof(alice), Fate::Leaving);
    assert_eq!(chat.received(bob), vec![quit("alice")], "one 204, not two");
    // A line that still arrives is not answered.
    assert_eq!(
        chat.hub.handle_line(alice, r#"{"code":108}"#, chat.now),
        Fate::Leaving
    );
    let (after, bytes) = flush_whole(&mut chat, alice);
    assert_eq!(after, AfterFlush::Ended);
    assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(&bytes));
}

#[test]
fn a_write_error_is_handed_back_and_the_session_waits_for_its_close() {
    let mut chat = Chat::open();
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.clear_all();
    chat.send_json(alice, json!({"code": 108}));
    let after = chat
        .hub
        .flush(alice, |_, _| Err(std::io::ErrorKind::BrokenPipe.into()));
    assert_eq!(after.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    // The hub decides nothing on a write error: the shell closes the
    // socket and reports it.
    assert_eq!(chat.hub.fate(alice), Fate::Open);
    chat.hub.handle_closed(alice);
    assert_eq!(chat.hub.fate(alice), Fate::Ended);
    assert_eq!(chat.received(bob), vec![quit("alice")]);
}

#[test]
fn a_cut_off_client_is_never_written_to_again() {
    let max_output_bytes = 65_536;
    let mut chat = Chat::with(Auth::Open, max_output_bytes);
    let alice = chat.login("alice");
    let sleeper = chat.login("sleeper");
    chat.clear_all();
    let text = "z".repeat(1000);
    while !chat.stalled_flush(sleeper) {
        chat.send_json(alice, say(&text));
    }
    let Fate::CutOff(CutOff::SlowConsumer { owed, limit }) = chat.hub.fate(sleeper) else {
        panic!("not cut off: {:?}", chat.hub.fate(sleeper));
    };
    assert!(owed > limit);
    let after = chat
        .hub
        .flush(sleeper, |_, _| panic!("a cut-off client was written to"));
    assert!(matches!(after, Ok(AfterFlush::CutOff(_))));
    // Its lines are not answered, and its fate says so.
    assert!(matches!(
        chat.hub.handle_line(sleeper, r#"{"code":108}"#, chat.now),
        Fate::CutOff(_)
    ));
}

#[test]
fn a_connection_the_hub_never_knew_has_ended() {
    let mut chat = Chat::open();
    assert_eq!(chat.hub.fate(ConnId(99)), Fate::Ended);
    let after = chat.hub.flush(ConnId(99), |_, _| panic!("written"));
    assert_eq!(after.unwrap(), AfterFlush::Ended);
}
