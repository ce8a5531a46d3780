//! Hub tests: Greeting, USER and PASS, password checks and their verdicts, accounts,
//! the login throttle, the TLS rule and telnet echo at the password prompt.

use super::*;
use crate::auth::Checked;

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
            "features": ["ref"],
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
    assert!(!chat.is_leaving(conn));

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
        assert_eq!(chat.is_leaving(conn), attempt == 3, "attempt {attempt}");
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
    assert!(chat.is_leaving(text));
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
    assert!(chat.is_leaving(quitter));
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
    assert!(chat.is_leaving(typo));
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
    assert!(!chat.is_leaving(conn), "/help counted as a failure");
    assert!(matches!(chat.state_of(conn), Some(State::PassAuth { .. })));
    chat.send(conn, "/quit");
    assert!(chat.is_leaving(conn));
    assert!(
        !chat.raw(conn).contains("401"),
        "/quit counted as a failed password"
    );
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

    fn connect_from(chat: &mut Chat, address: [u8; 4], wire: Wire) -> ConnId {
        let conn = ConnId(chat.next_conn);
        chat.next_conn += 1;
        chat.hub.handle_connected(
            conn,
            SocketAddr::from((address, 40_000)),
            wire,
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
        chat.hub
            .handle_verified(conn, job.ticket, Checked::Valid, chat.now);
        assert_eq!(chat.codes(conn), vec![202, 201]);
    }

    #[test]
    fn an_unknown_user_is_asked_for_a_password_and_gets_the_same_401() {
        let mut chat = accounts_chat(false);
        let known = chat.connect();
        let job = attempt(&mut chat, known, "alice", "wrong");
        chat.hub
            .handle_verified(known, job.ticket, Checked::Wrong, chat.now);
        let unknown = chat.connect();
        let job = attempt(&mut chat, unknown, "mallory", "whatever");
        // The worker verifies a dummy hash for an unknown user.
        assert_eq!(job.hash, None);
        chat.hub
            .handle_verified(unknown, job.ticket, Checked::Wrong, chat.now);
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
            .handle_verified(conn, job.ticket + 1, Checked::Valid, chat.now);
        assert!(chat.raw(conn).is_empty());
        // The connection closes and its id is reused before the answer.
        chat.hub.handle_closed(conn);
        chat.hub.handle_connected(
            conn,
            SocketAddr::from(([127, 0, 0, 1], 40_001)),
            Wire::Plain,
            Now::default(),
        );
        chat.raw(conn);
        chat.hub
            .handle_verified(conn, job.ticket, Checked::Valid, chat.now);
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
            .handle_verified(conn, retry[0].ticket, Checked::Valid, chat.now);
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
        chat.hub
            .handle_verified(conn, retry.ticket, Checked::Valid, chat.now);
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
            chat.hub
                .handle_verified(conn, job.ticket, Checked::Wrong, chat.now);
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
        let elsewhere = connect_from(&mut chat, [192, 0, 2, 9], Wire::Plain);
        chat.raw(elsewhere);
        chat.send_json(elsewhere, json!({"code": 110, "username": "alice"}));
        assert_eq!(chat.codes(elsewhere), vec![211]);
        // After the wait, the right password logs in and clears the record.
        chat.now.mono_ms += crate::throttle::BASE_BLOCK_MS;
        let job = attempt(&mut chat, conn, "alice", ALICE_PASSWORD);
        chat.hub
            .handle_verified(conn, job.ticket, Checked::Valid, chat.now);
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
        let remote = connect_from(&mut chat, [192, 0, 2, 1], Wire::Plain);
        chat.raw(remote);
        chat.send_json(remote, json!({"code": 110, "username": "alice"}));
        let frames = chat.received(remote);
        assert_eq!(frames[0]["code"], 403);
        assert!(frames[0]["error"].as_str().unwrap().contains("TLS"));
        assert_eq!(chat.hub.state(remote), Some(&State::UserAuth));
        // Over TLS, or from loopback, the same login proceeds.
        for conn in [
            connect_from(&mut chat, [192, 0, 2, 1], Wire::Tls),
            connect_from(&mut chat, [127, 0, 0, 1], Wire::Plain),
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
        let remote = connect_from(&mut chat, [192, 0, 2, 1], Wire::Plain);
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
        chat.hub
            .handle_verified(conn, job.ticket, Checked::Valid, chat.now);
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
                .handle_verified(job.conn, job.ticket, Checked::Wrong, chat.now);
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
                .handle_verified(job.conn, job.ticket, Checked::Wrong, chat.now);
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
            Wire::Plain,
            Now::default(),
        );
        other.raw(reused);
        other
            .hub
            .handle_verified(reused, job.ticket, Checked::Valid, other.now);
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
        assert!(chat.is_leaving(alice));
        // A session still choosing a name holds none: it is untouched and
        // will log in with an account.
        assert!(!chat.is_leaving(pending));
        // Sessions that logged in with an account survive a reload.
        let verified = login_account(&mut chat, "alice");
        chat.hub.set_config(HubConfig {
            auth: Auth::Accounts { users },
            ..test_config()
        });
        assert!(!chat.is_leaving(verified));
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
        assert!(chat.is_leaving(alice));
        let frames = chat.received(bob);
        assert!(
            frames.iter().any(|frame| frame["code"] == 403
                && frame["error"]
                    .as_str()
                    .is_some_and(|error| error.contains("bob was removed"))),
            "{frames:?}"
        );
        assert!(chat.is_leaving(bob));
        assert!(!chat.is_leaving(carol));
        chat.expect_error(checking, 503, "send PASS again");
        assert!(matches!(
            chat.state_of(checking),
            Some(State::PassAuth { .. })
        ));
        // The old check's verdict logs nobody in; PASS is checked anew.
        chat.hub
            .handle_verified(checking, job.ticket, Checked::Valid, chat.now);
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
            .handle_verified(untouched, untouched_job.ticket, Checked::Wrong, chat.now);
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
        chat.hub
            .handle_verified(conn, job.ticket, Checked::Valid, chat.now);
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
        chat.hub
            .handle_verified(conn, job.ticket, Checked::Valid, chat.now);
        chat.raw(conn);
        chat.send(conn, "/nick bob");
        let lines = chat.received_text(conn);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("names are accounts"), "{lines:?}");
        assert!(lines[0].ends_with("(403)"), "{lines:?}");
        assert_eq!(chat.state_of(conn), Some(broadcast("alice")));
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
