//! Hub tests: what reaches the log.

use super::*;
use std::sync::{Mutex, Once};

// What reaches the log (issue 11, item 20).

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
