//! Room history over real TCP: backlog on join, HISTORY, durability across
//! `kill -9` and restarts, torn tails and compaction (issue 5).

use crate::common;

use common::{Client, Launch, Server};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A server keeping history in `file` with `settings` (TOML lines).
fn server(file: &Path, settings: &str) -> Server {
    Launch::new()
        .config(&format!("listen = \"127.0.0.1:0\"\n{settings}\n"))
        .arg("--history-file")
        .arg(file.to_str().expect("temporary paths are UTF-8"))
        .start()
}

/// Logs in as a JSON client and returns the backlog (208) of the lobby.
fn join(port: u16, name: &str) -> (Client, Value) {
    let mut client = Client::json(port);
    client.login(name);
    let backlog = client.expect_code(208);
    (client, backlog)
}

fn texts(frame: &Value) -> Vec<String> {
    frame["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {frame}"))
        .iter()
        .map(|message| message["text"].as_str().expect("text").to_owned())
        .collect()
}

fn ids(frame: &Value) -> Vec<u64> {
    frame["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {frame}"))
        .iter()
        .map(|message| message["id"].as_u64().expect("id"))
        .collect()
}

/// Says each text and waits for its echo; returns the 200 frames.
fn say_all(client: &mut Client, texts: &[&str]) -> Vec<Value> {
    texts
        .iter()
        .map(|text| {
            client.send_json(&json!({"code": 100, "message": text}));
            client.expect_code(200)
        })
        .collect()
}

fn history_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("history.jsonl")
}

#[test]
fn joining_gets_the_last_backlog_messages_as_one_208() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&history_path(&dir), "history_backlog = 3");
    let (mut alice, empty) = join(server.port(), "alice");
    assert_eq!(empty, json!({"code": 208, "room": "lobby", "messages": []}));
    let said = say_all(&mut alice, &["one", "two", "three", "four"]);
    let (_, backlog) = join(server.port(), "bob");
    assert_eq!(texts(&backlog), vec!["two", "three", "four"]);
    assert_eq!(backlog["messages"][2], said[3]["message"]);

    let mut carol = Client::text(server.port());
    carol.send("carol");
    carol.expect_line("* history of #lobby: 3 message(s)");
    let line = carol.expect_line("* history: ");
    assert!(line.ends_with("#lobby <alice> two"), "{line}");
}

#[test]
fn history_after_an_id_and_with_a_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&history_path(&dir), "");
    let (mut alice, _) = join(server.port(), "alice");
    let said = say_all(&mut alice, &["a", "b", "c", "d", "e"]);
    let second = said[1]["message"]["id"].as_u64().expect("id");
    alice.send_json(&json!({"code": 106, "room": "lobby", "after": second}));
    let answer = alice.expect_code(208);
    assert_eq!(texts(&answer), vec!["c", "d", "e"]);
    assert_eq!(answer.get("more"), None);
    alice.send_json(&json!({"code": 106, "room": "lobby", "after": second, "limit": 2}));
    let answer = alice.expect_code(208);
    assert_eq!(texts(&answer), vec!["c", "d"]);
    assert_eq!(answer["more"], true);
    alice.send_json(&json!({"code": 106, "limit": 1}));
    assert_eq!(texts(&alice.expect_code(208)), vec!["e"]);
    alice.send_json(&json!({"code": 106, "room": "elsewhere"}));
    alice.expect_code(403);
}

#[test]
fn private_messages_never_reach_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let server = server(&path, "history_fsync = \"always\"");
    let (mut alice, _) = join(server.port(), "alice");
    let (mut bob, _) = join(server.port(), "bob");
    alice.send_json(&json!({"code": 102, "to": "bob", "message": "whisper"}));
    bob.expect_code(200);
    say_all(&mut alice, &["aloud"]);
    let (_, backlog) = join(server.port(), "carol");
    assert_eq!(texts(&backlog), vec!["aloud"]);
    let file = std::fs::read_to_string(&path).expect("history file");
    assert!(!file.contains("whisper"), "{file}");
    assert!(file.contains("aloud"), "{file}");
}

#[test]
fn with_always_what_a_client_received_survives_kill_9_and_ids_keep_rising() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let last_id = {
        let mut server = server(&path, "history_fsync = \"always\"");
        let (mut alice, _) = join(server.port(), "alice");
        let (mut bob, _) = join(server.port(), "bob");
        say_all(&mut alice, &["before", "the", "crash"]);
        // Bob has received the last one: from now on it must survive.
        let mut last = Value::Null;
        for _ in 0..3 {
            last = bob.expect_code(200);
        }
        server.signal("KILL");
        server.wait_exit();
        last["message"]["id"].as_u64().expect("id")
    };
    let server = server(&path, "history_fsync = \"always\"");
    let (mut carol, backlog) = join(server.port(), "carol");
    assert_eq!(texts(&backlog), vec!["before", "the", "crash"]);
    assert_eq!(*ids(&backlog).last().expect("an id"), last_id);
    let after = say_all(&mut carol, &["after"]);
    assert!(after[0]["message"]["id"].as_u64().expect("id") > last_id);
}

#[test]
fn a_torn_last_record_is_tolerated_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    std::fs::write(
        &path,
        "{\"id\":7,\"ts\":1,\"room\":\"lobby\",\"from\":\"old\",\"text\":\"kept\"}\n\
         {\"id\":8,\"ts\":2,\"room\":\"lobby\",\"fr",
    )
    .expect("write history");
    let server = server(&path, "");
    assert!(
        server
            .log
            .iter()
            .any(|line| line.contains("torn last record")),
        "{:#?}",
        server.log
    );
    let (mut alice, backlog) = join(server.port(), "alice");
    assert_eq!(texts(&backlog), vec!["kept"]);
    let said = say_all(&mut alice, &["next"]);
    assert_eq!(said[0]["message"]["id"], 8);
    // The torn bytes were cut off: the file is whole records again.
    let file = std::fs::read_to_string(&path).expect("history file");
    assert!(file.lines().all(|line| line.ends_with('}')), "{file}");
}

#[test]
fn compaction_keeps_the_newest_history_keep_messages_per_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let mut server = server(
        &path,
        "history_keep = 5\nhistory_fsync = \"never\"\nflood_rate = 0",
    );
    let (mut alice, _) = join(server.port(), "alice");
    alice.send_json(&json!({"code": 104, "room": "other"}));
    alice.expect_code(208);
    // Well past the compaction threshold (kept + 1024 records).
    for index in 0..1100 {
        let room = if index % 2 == 0 { "lobby" } else { "other" };
        alice.send_json(&json!({"code": 100, "message": format!("m{index}"), "room": room}));
    }
    alice.send_json(&json!({"code": 108, "token": "done"}));
    alice.expect_code(207);
    server.wait_for_log("compacted to");
    let lines = std::fs::read_to_string(&path)
        .expect("history file")
        .lines()
        .count();
    assert!(lines < 1100, "the journal still holds {lines} records");
    let (_, backlog) = join(server.port(), "bob");
    assert_eq!(
        texts(&backlog),
        vec!["m1090", "m1092", "m1094", "m1096", "m1098"]
    );
    drop(server);
    // After a restart the compacted file still holds the newest per room.
    let server = self::server(&path, "history_keep = 5");
    let (mut carol, backlog) = join(server.port(), "carol");
    assert_eq!(
        texts(&backlog),
        vec!["m1090", "m1092", "m1094", "m1096", "m1098"]
    );
    carol.send_json(&json!({"code": 104, "room": "other"}));
    assert_eq!(
        texts(&carol.expect_code(208)),
        vec!["m1091", "m1093", "m1095", "m1097", "m1099"]
    );
}

#[test]
fn history_can_be_turned_off() {
    let server = Launch::new().arg("--history-file").arg("").start();
    let mut alice = Client::json(server.port());
    alice.login("alice");
    alice.send_json(&json!({"code": 106}));
    let error = alice.expect_code(404);
    assert!(
        error["error"]
            .as_str()
            .expect("error")
            .contains("history is off"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------
// Issue 11: the journal, ids, back-off and reload.

/// A server whose config file (`riftd.toml`, returned) holds `settings`,
/// history included; the config can be rewritten for a SIGHUP.
fn configured(settings: &str) -> (Server, PathBuf) {
    let launch = Launch::new().config(&format!("listen = \"127.0.0.1:0\"\n{settings}\n"));
    let config = launch.dir().join("riftd.toml");
    (launch.start(), config)
}

/// Rewrites the config, sends SIGHUP and waits for the reload's verdict.
fn reload(server: &mut Server, config: &Path, settings: &str, verdict: &str) -> String {
    std::fs::write(config, format!("listen = \"127.0.0.1:0\"\n{settings}\n"))
        .expect("rewrite the config");
    server.signal("HUP");
    server.wait_for_log(verdict)
}

#[test]
fn a_history_file_that_is_a_device_or_a_symlink_is_refused_with_exit_2() {
    common::assert_config_refused(
        Launch::new().args(&["--history-file", "/dev/null"]),
        "history_file",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("precious.txt");
    std::fs::write(&target, "precious\n").expect("write the target");
    let link = history_path(&dir);
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let finished = Launch::new()
        .args(&["--listen", "127.0.0.1:0", "--history-file"])
        .arg(link.to_str().expect("UTF-8 path"))
        .run_to_exit();
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("is a symlink, not a regular file")
            && finished.stderr.contains("history_file = \"\""),
        "{}",
        finished.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("target"),
        "precious\n"
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_reload_that_points_history_at_a_device_is_refused_and_history_goes_on() {
    let (mut server, config) = configured("history_file = \"history.jsonl\"");
    let (mut alice, _) = join(server.port(), "alice");
    let line = reload(
        &mut server,
        &config,
        "history_file = \"/dev/null\"",
        "keeping the old configuration",
    );
    assert!(
        line.contains("history_file") && line.contains("character device"),
        "{line}"
    );
    say_all(&mut alice, &["still kept"]);
    alice.send_json(&json!({"code": 106}));
    assert_eq!(texts(&alice.expect_code(208)), vec!["still kept"]);
    let journal = config.with_file_name("history.jsonl");
    let file = std::fs::read_to_string(&journal).expect("history file");
    assert!(file.contains("still kept"), "{file}");
}

#[test]
fn private_message_ids_are_not_reused_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let dm_id = {
        let server = server(&path, "");
        let (mut alice, _) = join(server.port(), "alice");
        let (mut bob, _) = join(server.port(), "bob");
        alice.expect_code(201);
        alice.send_json(&json!({"code": 102, "to": "bob", "message": "psst"}));
        let dm = bob.expect_code(200);
        alice.expect_code(200);
        dm["message"]["id"].as_u64().expect("id")
    };
    let server = server(&path, "");
    let (mut carol, _) = join(server.port(), "carol");
    let (mut dave, _) = join(server.port(), "dave");
    carol.send_json(&json!({"code": 102, "to": "dave", "message": "again"}));
    let dm = dave.expect_code(200);
    assert_eq!(carol.expect_code(200), dm);
    let id = dm["message"]["id"].as_u64().expect("id");
    assert!(id > dm_id, "DM id {id} after a restart reuses {dm_id}");
    let said = say_all(&mut carol, &["aloud"]);
    assert!(said[0]["message"]["id"].as_u64().expect("id") > id);
}

#[test]
fn a_journal_record_with_the_largest_id_is_skipped_and_new_messages_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    std::fs::write(
        &path,
        "{\"id\":7,\"ts\":1,\"room\":\"lobby\",\"from\":\"old\",\"text\":\"kept\"}\n\
         {\"id\":18446744073709551615,\"ts\":2,\"room\":\"lobby\",\"from\":\"old\",\"text\":\"bogus\"}\n",
    )
    .expect("write history");
    let server = server(&path, "");
    // Logged before `listening on`, which the harness waited for.
    assert!(
        server
            .log
            .iter()
            .any(|line| line.contains("line 2 skipped") && line.contains("above the largest id")),
        "{:#?}",
        server.log
    );
    let (mut alice, backlog) = join(server.port(), "alice");
    assert_eq!(texts(&backlog), vec!["kept"]);
    let said = say_all(&mut alice, &["new"]);
    assert_eq!(said[0]["message"]["id"], 8);
    alice.send_json(&json!({"code": 106}));
    assert_eq!(texts(&alice.expect_code(208)), vec!["kept", "new"]);
}

#[test]
fn a_failing_compaction_backs_off_instead_of_retrying_every_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    // As root no permission stops a write, so block the temporary file.
    std::fs::create_dir(dir.path().join("history.jsonl.compact")).expect("mkdir");
    let mut server = server(
        &path,
        "history_keep = 5\nhistory_fsync = \"never\"\nflood_rate = 0",
    );
    let (mut alice, _) = join(server.port(), "alice");
    for index in 0..1100 {
        alice.send_json(&json!({"code": 100, "message": format!("m{index}")}));
    }
    alice.send_json(&json!({"code": 108, "token": "done"}));
    alice.expect_code(207);
    server.wait_for_log("compaction failed");
    // Thirty more turns, each with a message to journal.
    for index in 0..30 {
        alice.send_json(&json!({"code": 100, "message": format!("n{index}")}));
        alice.send_json(&json!({"code": 108, "token": format!("t{index}")}));
        alice.expect_code(207);
    }
    // A login logs a line after all of the above: every earlier line is in.
    let _zed = join(server.port(), "zed");
    server.wait_for_log("login zed");
    let failures = server
        .log
        .iter()
        .filter(|line| line.contains("compaction failed"))
        .count();
    assert!(
        failures < 10,
        "{failures} failed compactions logged: {:#?}",
        server.log
    );
    let first = server
        .log
        .iter()
        .find(|line| line.contains("compaction failed"))
        .expect("a failure");
    assert!(first.contains("next attempt in 1 s"), "{first}");
}

#[test]
fn a_reload_that_turns_history_off_keeps_it_on_until_a_restart() {
    let (mut server, config) = configured("history_file = \"history.jsonl\"");
    let (mut alice, _) = join(server.port(), "alice");
    say_all(&mut alice, &["before"]);
    let line = reload(
        &mut server,
        &config,
        "history_file = \"\"\nhistory_backlog = 7",
        "history_file or history_fsync changed",
    );
    assert!(line.contains("history stays on"), "{line}");
    server.wait_for_log("SIGHUP: configuration reloaded");
    say_all(&mut alice, &["after"]);
    alice.send_json(&json!({"code": 106}));
    assert_eq!(texts(&alice.expect_code(208)), vec!["before", "after"]);
    let file = std::fs::read_to_string(config.with_file_name("history.jsonl")).expect("journal");
    assert!(
        file.contains("after"),
        "not journaled after the reload: {file}"
    );
}

#[test]
fn a_reload_that_turns_history_on_keeps_it_off_until_a_restart() {
    let (mut server, config) = configured("history_file = \"\"");
    let mut alice = Client::json(server.port());
    alice.login("alice");
    let line = reload(
        &mut server,
        &config,
        "history_file = \"history.jsonl\"",
        "history_file or history_fsync changed",
    );
    assert!(line.contains("history stays off"), "{line}");
    server.wait_for_log("SIGHUP: configuration reloaded");
    say_all(&mut alice, &["unjournaled"]);
    alice.send_json(&json!({"code": 106}));
    let error = alice.expect_code(404);
    assert!(
        error["error"]
            .as_str()
            .expect("error")
            .contains("history is off"),
        "{error}"
    );
    assert!(!config.with_file_name("history.jsonl").exists());
}

#[test]
fn cycling_through_many_rooms_keeps_history_within_history_max_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    // 1 MiB, the least allowed, holds about 250 messages of 4000 bytes.
    let server = server(
        &path,
        "history_max_bytes = 1048576\nflood_rate = 0\nhistory_fsync = \"never\"\nmax_output_bytes = 16777216",
    );
    let (mut alice, _) = join(server.port(), "alice");
    let text = "x".repeat(4000);
    for index in 0..400 {
        let room = format!("r{index}");
        alice.send_json(&json!({"code": 104, "room": room}));
        alice.send_json(&json!({"code": 100, "room": room, "message": text}));
        alice.send_json(&json!({"code": 105, "room": room}));
    }
    alice.send_json(&json!({"code": 108, "token": "done"}));
    alice.expect_code(207);
    // The least recently active rooms' history went first; the newest stayed.
    let (mut bob, _) = join(server.port(), "bob");
    for (room, expected) in [("r0", 0), ("r399", 1)] {
        bob.send_json(&json!({"code": 104, "room": room}));
        let backlog = bob.expect_code(208);
        assert_eq!(texts(&backlog).len(), expected, "{room}: {backlog}");
    }
}

/// A journal of `count` records per room, each `text`, ids rising across
/// rooms in turn.
fn journal(path: &Path, rooms: &[String], count: usize, text: &str) {
    let mut file = String::new();
    let mut id = 0;
    for _ in 0..count {
        for room in rooms {
            id += 1;
            let record = json!({"id": id, "ts": 1, "room": room, "from": "old", "text": text});
            file.push_str(&record.to_string());
            file.push('\n');
        }
    }
    std::fs::write(path, file).expect("write history");
}

#[test]
fn issue_11_a_lobby_of_control_characters_does_not_cut_off_logins_at_the_minimum_max_output_bytes()
{
    // 50 × 4096 × \x01: 200 KiB of text, 1.2 MB as JSON, kept across restarts.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let text = "\u{1}".repeat(4096);
    journal(&path, &["lobby".to_owned()], 50, &text);
    let server = server(&path, "max_output_bytes = 65536");
    for name in ["alice", "bob"] {
        let (_client, backlog) = join(server.port(), name);
        let ids = ids(&backlog);
        assert!(!ids.is_empty(), "{backlog}");
        assert_eq!(ids.last(), Some(&50), "the newest ones");
        assert_eq!(backlog["more"], true);
        assert_eq!(texts(&backlog)[0], text);
    }
    let mut carol = Client::text(server.port());
    carol.send("carol");
    carol.expect_line("* you are now carol");
    carol.expect_line("* history of #lobby: ");
    carol.expect_line("* history: ");
    // Each of them is still connected and served.
    carol.send("/ping");
    carol.expect_line("* pong");
}

#[test]
fn issue_11_history_after_an_id_older_than_the_kept_window_says_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&history_path(&dir), "history_keep = 3");
    let (mut alice, _) = join(server.port(), "alice");
    let said = say_all(&mut alice, &["a", "b", "c", "d", "e"]);
    let id = |index: usize| said[index]["message"]["id"].as_u64().expect("id");
    alice.send_json(&json!({"code": 106, "after": id(0)}));
    let answer = alice.expect_code(208);
    assert_eq!(texts(&answer), vec!["c", "d", "e"]);
    assert_eq!(answer["gap"], true, "b is gone: {answer}");
    alice.send_json(&json!({"code": 106, "after": id(1)}));
    let answer = alice.expect_code(208);
    assert_eq!(texts(&answer), vec!["c", "d", "e"]);
    assert_eq!(
        answer.get("gap"),
        None,
        "nothing is missing after b: {answer}"
    );
}

#[test]
fn twenty_rooms_caught_up_with_history_at_once_are_never_refused() {
    // At the minimum max_output_bytes a full HISTORY answer is 32 KiB, and
    // the answer budget's burst is 24 of them. Each room holds a little
    // more than one full answer (eight messages of 4000 bytes), and the
    // twenty answers at once owe more than the client's share of output, so
    // they come shortened, with `more`, and the client pages on.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let rooms: Vec<String> = (0..20)
        .map(|index| {
            if index == 0 {
                "lobby".to_owned()
            } else {
                format!("r{index}")
            }
        })
        .collect();
    let per_room = 8;
    journal(&path, &rooms, per_room, &"x".repeat(4000));
    let server = server(&path, "max_output_bytes = 65536");
    let (mut alice, _) = join(server.port(), "alice");
    for room in &rooms[1..] {
        alice.send_json(&json!({"code": 104, "room": room}));
        alice.expect_code(208);
    }
    let mut behind: Vec<(String, u64)> = rooms.iter().map(|room| (room.clone(), 0)).collect();
    let mut received = 0;
    for _round in 0..50 {
        if behind.is_empty() {
            break;
        }
        // One HISTORY per room still behind, all in one write.
        let mut batch = String::new();
        for (room, after) in &behind {
            let request = json!({"code": 106, "room": room, "after": after, "limit": 1000});
            batch.push_str(&request.to_string());
            batch.push('\n');
        }
        alice.send_raw(batch.as_bytes());
        let mut still = Vec::new();
        for (room, after) in &behind {
            let answer = alice.recv_json();
            assert_eq!(answer["code"], 208, "refused: {answer}");
            assert_eq!(answer["room"], room.as_str());
            let ids = ids(&answer);
            received += ids.len();
            if answer["more"] == true {
                still.push((room.clone(), ids.last().copied().unwrap_or(*after)));
            }
        }
        behind = still;
    }
    assert!(behind.is_empty(), "still behind: {behind:?}");
    assert_eq!(received, rooms.len() * per_room);
}

#[test]
fn a_flood_of_history_requests_is_refused_with_429_past_the_answer_budget_and_never_disconnected() {
    // Each HISTORY of this lobby is a full answer (256 KiB by default); the
    // budget lets 24 of them through at once, then 4 a second.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    journal(&path, &["lobby".to_owned()], 1000, &"x".repeat(4000));
    let server = server(&path, "");
    let (mut alice, _) = join(server.port(), "alice");
    // One at a time, each answer read before the next request, so that
    // every answer is a full one (nothing else is owed), until refused:
    // 400 full answers (100 MiB) would take the budget 94 s to earn.
    let mut answered = 0;
    let mut refusal = None;
    while answered < 400 && refusal.is_none() {
        alice.send_json(&json!({"code": 106, "limit": 1000}));
        let frame = alice.recv_json();
        match frame["code"].as_u64() {
            Some(208) => answered += 1,
            Some(429) => refusal = Some(frame),
            _ => panic!("unexpected {frame}"),
        }
    }
    let refusal = refusal.unwrap_or_else(|| panic!("{answered} full answers, no 429"));
    let error = refusal["error"].as_str().expect("error");
    assert!(error.contains("bytes a second"), "{error}");
    assert!(error.contains("try again in"), "{error}");
    assert!(answered >= 24, "{answered}");
    // Not a flood: chat goes on, and nobody was disconnected.
    let said = say_all(&mut alice, &["still here"]);
    assert_eq!(said[0]["message"]["text"], "still here");
}

#[test]
fn a_second_riftd_on_the_same_journal_is_refused_and_the_first_one_keeps_it() {
    // Two servers on one journal (two instances with the default state
    // directory, say) used to both append: the first one's compaction then
    // unlinked the file the second went on appending to, losing its
    // messages, and a replay could cut the other's record in half.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let first = server(&path, "");
    let (mut alice, _) = join(first.port(), "alice");
    say_all(&mut alice, &["one"]);
    let finished = Launch::new()
        .args(&["--listen", "127.0.0.1:0", "--history-file"])
        .arg(path.to_str().expect("temporary paths are UTF-8"))
        .run_to_exit();
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("in use by another riftd"),
        "{}",
        finished.stderr
    );
    say_all(&mut alice, &["two"]);
    drop(alice);
    drop(first);
    let second = server(&path, "");
    let (_, backlog) = join(second.port(), "bob");
    assert_eq!(texts(&backlog), vec!["one", "two"]);
}

#[test]
fn a_journal_write_cut_short_by_a_full_disk_costs_no_message_written_after_it() {
    // A write cut short (ENOSPC; here EFBIG under `ulimit -f`) left part of
    // a record in the journal; the first record written once there was
    // room again was glued to that fragment, and skipped at the next start
    // as one corrupt line.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let settings = "listen = \"127.0.0.1:0\"\nflood_rate = 0.0\nhistory_fsync = \"never\"\n";
    let mut server = Launch::new()
        .config(settings)
        .arg("--history-file")
        .arg(path.to_str().expect("temporary paths are UTF-8"))
        .file_size_kib(8)
        .start();
    let (mut alice, _) = join(server.port(), "alice");
    let text = "x".repeat(1000);
    // 8 KiB hold seven such records: the ninth write cannot fit.
    for _ in 0..9 {
        say_all(&mut alice, &[&text]);
    }
    server.wait_for_log("history: cannot append");
    let lifted = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", server.pid()))
        .arg("--fsize=unlimited:unlimited")
        .status()
        .expect("cannot run prlimit (util-linux)");
    assert!(lifted.success());
    say_all(&mut alice, &["after the disk had room again"]);
    // A PING answered means the turn that journaled the message is over.
    alice.send_json(&json!({"code": 108}));
    alice.expect_code(207);
    server.signal("KILL");
    server.wait_exit();
    let mut restarted = Launch::new()
        .config(settings)
        .arg("--history-file")
        .arg(path.to_str().expect("temporary paths are UTF-8"))
        .start();
    let (_, backlog) = join(restarted.port(), "bob");
    let texts = texts(&backlog);
    assert_eq!(
        texts.last().map(String::as_str),
        Some("after the disk had room again"),
        "{} message(s) replayed",
        texts.len()
    );
    // Logged before `listening on`, which `start` waited for.
    let log = restarted.drain_log().join("\n");
    assert!(log.contains("message(s) replayed"), "{log}");
    assert!(!log.contains("skipped"), "{log}");
}

#[test]
fn a_journal_reaching_the_file_size_limit_is_an_append_failure_not_a_crash() {
    // Under `ulimit -f` (or systemd's LimitFSIZE=) the write past the limit
    // raised SIGXFSZ, which killed riftd without a log line.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let mut server = Launch::new()
        .config("listen = \"127.0.0.1:0\"\nflood_rate = 0.0\n")
        .arg("--history-file")
        .arg(path.to_str().expect("temporary paths are UTF-8"))
        .file_size_kib(4)
        .start();
    let (mut alice, _) = join(server.port(), "alice");
    let text = "x".repeat(1000);
    for _ in 0..6 {
        say_all(&mut alice, &[&text]);
    }
    let line = server.wait_for_log("history: cannot append");
    assert!(line.contains("too large"), "{line}");
    alice.send_json(&json!({"code": 108, "token": "alive"}));
    alice.expect_code(207);
}

/// The peak resident memory of process `pid` in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kib * 1024
}

#[test]
fn replaying_a_journal_far_larger_than_the_kept_history_never_holds_it_in_memory() {
    // Replay collected every record before the history kept its last
    // `history_keep`: a journal may legitimately be several times the kept
    // history (compaction runs at 4x, and not while it fails), and starting
    // on 237 MB of records peaked at 333 MB RSS for 2.5 MB kept.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let text = "y".repeat(150);
    let mut journal = Vec::new();
    for id in 1..=200_000u64 {
        journal.extend_from_slice(
            format!(
                "{{\"id\":{id},\"ts\":1,\"room\":\"lobby\",\"from\":\"al\",\"text\":\"{text}\"}}\n"
            )
            .as_bytes(),
        );
    }
    std::fs::write(&path, &journal).expect("write the journal");
    let server = server(&path, "history_keep = 100");
    let (_, backlog) = join(server.port(), "bob");
    assert_eq!(ids(&backlog).last().copied(), Some(200_000));
    let peak = peak_rss(server.pid());
    let size = journal.len() as u64;
    assert!(
        peak < size,
        "peak RSS {peak} bytes while replaying a journal of {size} bytes"
    );
}

#[test]
fn a_journal_of_garbage_logs_ten_skipped_lines_and_a_count_not_a_line_each() {
    // Every unreadable line used to get its own WARN line: 200,000 lines of
    // junk wrote 200,000 log lines at start.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = history_path(&dir);
    let mut journal = "junk\n".repeat(1000);
    journal.push_str("{\"id\":7,\"ts\":1,\"room\":\"lobby\",\"from\":\"old\",\"text\":\"kept\"}\n");
    std::fs::write(&path, journal).expect("write history");
    let server = server(&path, "");
    let skipped: Vec<&String> = server
        .log
        .iter()
        .filter(|line| line.contains("skipped:"))
        .collect();
    assert_eq!(skipped.len(), 10, "{:#?}", server.log);
    assert!(skipped[9].contains("only counted"), "{:#?}", server.log);
    assert!(
        server
            .log
            .iter()
            .any(|line| line.contains("1 message(s) replayed, 1000 unreadable line(s) skipped")),
        "{:#?}",
        server.log
    );
    let (_, backlog) = join(server.port(), "alice");
    assert_eq!(texts(&backlog), vec!["kept"]);
}
