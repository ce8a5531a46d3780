//! End-to-end tests: the built `riftd` binary on `127.0.0.1:0`, driven over
//! real TCP by JSON and text clients. Each test starts its own server. See
//! `design/protocol.md` for the behaviour asserted here.

use crate::common;

use common::{Client, Launch, Server, assert_config_refused};
use serde_json::{Value, json};
use std::net::SocketAddr;

/// A config file for shared-password auth, with the password file beside it.
fn password_server() -> Server {
    Launch::new()
        .config("auth = \"password\"\npassword_file = \"pw\"\n")
        .file("pw", "s3cret\n")
        .start()
}

/// Two JSON clients logged in as `alice` and `bob`; alice has seen bob join.
fn alice_and_bob(server: &Server) -> (Client, Client) {
    let mut alice = Client::json(server.port());
    alice.login("alice");
    let mut bob = Client::json(server.port());
    bob.login("bob");
    assert_eq!(
        alice.expect_code(201),
        json!({"code": 201, "new": "bob", "room": "lobby"})
    );
    (alice, bob)
}

fn say(client: &mut Client, text: &str) {
    client.send_json(&json!({"code": 100, "message": text}));
}

/// A JSON line of exactly `len` bytes: `prefix`, then `x`s, then `suffix`.
fn padded_line(prefix: &str, suffix: &str, len: usize) -> String {
    let padding = len - prefix.len() - suffix.len();
    let line = format!("{prefix}{}{suffix}", "x".repeat(padding));
    assert_eq!(line.len(), len);
    line
}

/// Strips and checks the `[HH:MM:SS] ` prefix of a text-mode chat line.
fn without_clock(line: &str) -> &str {
    let bytes = line.as_bytes();
    let is_clock = bytes.len() > 11
        && bytes[0] == b'['
        && bytes[9] == b']'
        && bytes[10] == b' '
        && bytes[3] == b':'
        && bytes[6] == b':'
        && [1, 2, 4, 5, 7, 8]
            .iter()
            .all(|&i| bytes[i].is_ascii_digit());
    assert!(is_clock, "no [HH:MM:SS] prefix: {line:?}");
    &line[11..]
}

fn error_text(frame: &Value) -> &str {
    frame["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {frame}"))
}

// ---------------------------------------------------------------------------
// The process: greeting, flags, configuration, listeners.

#[test]
fn the_greeting_names_the_server_its_version_and_open_auth() {
    let server = Server::start();
    let client = Client::json(server.port());
    assert_eq!(client.greeting["code"], 210);
    assert_eq!(client.greeting["server"], "riftd");
    assert_eq!(client.greeting["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(client.greeting["auth"], "open");
}

#[test]
fn the_greeting_announces_password_auth_when_configured() {
    let server = password_server();
    let client = Client::json(server.port());
    assert_eq!(client.greeting["auth"], "password");
}

#[test]
fn issue_13_a_ref_comes_back_on_the_answers_to_its_request_and_features_are_announced() {
    let server = Server::start();
    let mut alice = Client::json(server.port());
    assert_eq!(alice.greeting["features"], json!(["ref"]));
    alice.send(r#"{"code":110,"username":"alice","ref":"login-1"}"#);
    assert_eq!(
        alice.recv_line(),
        r#"{"code":202,"new":"alice","ref":"login-1"}"#
    );
    assert_eq!(
        alice.recv_line(),
        r#"{"code":201,"new":"alice","room":"lobby"}"#
    );
    alice.send(r#"{"code":108,"token":[1,"two"],"ref":"ping-2"}"#);
    assert_eq!(
        alice.recv_line(),
        r#"{"code":207,"token":[1,"two"],"ref":"ping-2"}"#
    );
    alice.send(r#"{"code":100,"message":" ","ref":"say-3"}"#);
    assert_eq!(
        alice.recv_line(),
        r#"{"code":400,"error":"message is empty","ref":"say-3"}"#
    );
    // A broadcast carries no ref, not even the sender's own copy.
    alice.send(r#"{"code":100,"message":"hi","ref":"say-4"}"#);
    let line = alice.recv_line();
    assert!(line.starts_with(r#"{"code":200,"#), "{line}");
    assert!(!line.contains("ref"), "{line}");
    // A bad ref is a 400 without one.
    alice.send(r#"{"code":108,"ref":""}"#);
    let refused = alice.expect_code(400);
    assert_eq!(refused.get("ref"), None, "{refused}");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let history = dir.path().join("history.jsonl");
    let server = Launch::new()
        .arg("--history-file")
        .arg(history.to_str().expect("a UTF-8 path"))
        .start();
    let mut bob = Client::json(server.port());
    assert_eq!(bob.greeting["features"], json!(["ref", "history"]));
    bob.login("bob");
    bob.expect_code(208);
    bob.send(r#"{"code":106,"ref":"catch-up"}"#);
    assert_eq!(
        bob.recv_line(),
        r#"{"code":208,"room":"lobby","messages":[],"ref":"catch-up"}"#
    );
}

#[test]
fn version_flag_prints_the_version_and_exits_0() {
    let finished = Launch::new().arg("--version").run_to_exit();
    assert_eq!(finished.status.code(), Some(0), "{}", finished.stderr);
    assert!(
        finished
            .stdout
            .contains(&format!("riftd {}", env!("CARGO_PKG_VERSION"))),
        "{:?}",
        finished.stdout
    );
}

#[test]
fn help_flag_prints_usage_and_exits_0() {
    let finished = Launch::new().arg("--help").run_to_exit();
    assert_eq!(finished.status.code(), Some(0), "{}", finished.stderr);
    assert!(
        finished.stdout.contains("Usage: riftd"),
        "{}",
        finished.stdout
    );
    for option in ["--config", "--listen", "--version", "--help"] {
        assert!(finished.stdout.contains(option), "{option} missing");
    }
}

#[test]
fn an_unknown_config_key_is_refused_with_exit_2_naming_the_key() {
    assert_config_refused(Launch::new().config("max_lines = 3\n"), "max_lines");
}

#[test]
fn a_bad_config_value_is_refused_with_exit_2_naming_the_key() {
    for (text, key) in [
        ("max_line_bytes = \"big\"\n", "max_line_bytes"),
        ("max_line_bytes = 10\n", "max_line_bytes"),
        ("max_connections = 0\n", "max_connections"),
        (
            "max_output_bytes = 65536\nmax_line_bytes = 65536\n",
            "max_line_bytes",
        ),
        ("auth = \"kerberos\"\n", "auth"),
        ("listen = \"nowhere\"\n", "listen"),
        ("default_room = \"no spaces\"\n", "default_room"),
    ] {
        assert_config_refused(Launch::new().config(text), key);
    }
}

#[test]
fn an_unreadable_config_file_is_refused_with_exit_2_naming_the_file() {
    let launch = Launch::new();
    let missing = common::missing_path(launch.dir());
    let missing = missing.to_str().expect("temp paths are UTF-8").to_owned();
    assert_config_refused(launch.arg("--config").arg(missing.clone()), &missing);
}

#[test]
fn password_auth_without_a_password_file_is_refused_with_exit_2() {
    assert_config_refused(
        Launch::new().config("auth = \"password\"\n"),
        "password_file",
    );
}

#[test]
fn password_auth_with_a_missing_password_file_is_refused_naming_the_file() {
    assert_config_refused(
        Launch::new().config("auth = \"password\"\npassword_file = \"no-such-pw\"\n"),
        "no-such-pw",
    );
}

#[test]
fn listen_given_twice_listens_on_both_addresses() {
    // Use IPv6 loopback when this host has it; otherwise two IPv4 listeners
    // still show that both addresses are served.
    let has_ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let second = if has_ipv6 {
        "[::1]:0"
    } else {
        eprintln!("::1 cannot be bound here; using a second IPv4 listener");
        "127.0.0.1:0"
    };
    let server = Launch::new()
        .args(&["--listen", "127.0.0.1:0", "--listen", second])
        .start();
    assert_eq!(server.addrs.len(), 2, "{:?}", server.addrs);
    let v4: SocketAddr = server.addrs[0];
    let other: SocketAddr = server.addrs[1];
    assert!(v4.is_ipv4(), "{v4}");
    assert_eq!(other.is_ipv6(), has_ipv6, "{other}");
    assert_ne!(v4, other);

    let mut alice = Client::greeted(v4);
    alice.login("alice");
    let mut bob = Client::greeted(other);
    bob.login("bob");
    alice.expect_code(201);
    say(&mut bob, "across listeners");
    assert_eq!(
        alice.expect_code(200)["message"]["text"],
        "across listeners"
    );
}

// ---------------------------------------------------------------------------
// Text and JSON clients together.

/// A text client, alice, and a JSON client, bob, logged in to the lobby,
/// once alice has seen bob join.
fn text_alice_and_json_bob(server: &Server) -> (Client, Client) {
    let mut alice = Client::text(server.port());
    alice.login_text("alice");
    let mut bob = Client::json(server.port());
    bob.login("bob");
    assert_eq!(alice.recv_line(), "* bob joined #lobby");
    (alice, bob)
}

#[test]
fn a_text_client_and_a_json_client_chat_with_each_other() {
    let server = Server::start();
    let (mut alice, mut bob) = text_alice_and_json_bob(&server);

    alice.send("hello from text");
    assert_eq!(
        without_clock(&alice.recv_line()),
        "#lobby <alice> hello from text"
    );
    let heard = bob.expect_code(200)["message"].clone();
    assert_eq!(heard["room"], "lobby");
    assert_eq!(heard["from"], "alice");
    assert_eq!(heard["text"], "hello from text");
    assert!(heard["id"].is_u64() && heard["ts"].is_u64(), "{heard}");

    say(&mut bob, "hi from json");
    assert_eq!(bob.recv_json()["message"]["text"], "hi from json");
    assert_eq!(
        without_clock(&alice.recv_line()),
        "#lobby <bob> hi from json"
    );

    bob.send_json(&json!({"code": 102, "to": "alice", "message": "psst"}));
    assert_eq!(bob.recv_json()["message"]["to"], "alice");
    assert_eq!(without_clock(&alice.recv_line()), "*bob -> alice* psst");

    alice.send("/msg bob back at you");
    assert_eq!(
        without_clock(&alice.recv_line()),
        "*alice -> bob* back at you"
    );
    let dm = bob.recv_json()["message"].clone();
    assert_eq!((&dm["from"], &dm["to"]), (&json!("alice"), &json!("bob")));
    assert_eq!(dm["text"], "back at you");

    // Control characters cannot reach a terminal.
    say(&mut bob, "bell\u{7}esc\u{1b}[2J");
    assert_eq!(
        without_clock(&alice.recv_line()),
        "#lobby <bob> bell^Gesc^[[2J"
    );
}

#[test]
fn text_mode_slash_commands_work() {
    let server = Server::start();
    let mut alice = Client::text(server.port());
    alice.login_text("alice");
    let mut bob = Client::json(server.port());
    bob.login("bob");
    alice.expect_line("* bob joined #lobby");

    alice.send("/who");
    assert_eq!(alice.recv_line(), "* in #lobby: alice bob");
    alice.send("/me waves");
    assert_eq!(without_clock(&alice.recv_line()), "#lobby * alice waves");
    assert_eq!(bob.expect_code(200)["message"]["text"], "/me waves");
    alice.send("//slash");
    assert_eq!(without_clock(&alice.recv_line()), "#lobby <alice> /slash");
    alice.send("/join #Rust");
    assert_eq!(alice.recv_line(), "* alice joined #rust");
    alice.send("/rooms");
    assert_eq!(alice.recv_line(), "* rooms: #lobby (2) #rust (1)");
    alice.send("in rust");
    assert_eq!(without_clock(&alice.recv_line()), "#rust <alice> in rust");
    alice.send("/part");
    assert_eq!(alice.recv_line(), "* alice left #rust");
    alice.send("/nick alicia");
    assert_eq!(alice.recv_line(), "* you are now alicia");
    assert_eq!(
        bob.expect_code(203),
        json!({"code": 203, "old": "alice", "new": "alicia"})
    );
    alice.send("/nick Bob");
    assert_eq!(alice.recv_line(), "! username Bob is taken (409)");
    alice.send("/bogus");
    let error = alice.recv_line();
    assert!(
        error.starts_with("! ") && error.ends_with("(400)"),
        "{error}"
    );
    alice.send("/ping");
    assert_eq!(alice.recv_line(), "* pong");
    alice.send("/help");
    assert!(alice.recv_line().starts_with("* "));
    alice.expect_line("/quit");
    alice.send("/quit");
    alice.expect_eof();
    assert_eq!(
        bob.expect_code(204),
        json!({"code": 204, "username": "alicia"})
    );
}

// ---------------------------------------------------------------------------
// Framing.

#[test]
fn a_frame_sent_one_byte_per_write_arrives_whole() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    for byte in b"{\"code\":108,\"token\":\"byte by byte\"}\n" {
        client.send_raw(&[*byte]);
    }
    assert_eq!(
        client.recv_json(),
        json!({"code": 207, "token": "byte by byte"})
    );
}

#[test]
fn many_frames_in_one_write_are_answered_in_order() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    let burst: String = (0..50)
        .map(|i| format!("{{\"code\":108,\"token\":{i}}}\n"))
        .collect();
    client.send_raw(burst.as_bytes());
    for i in 0..50 {
        assert_eq!(client.recv_json(), json!({"code": 207, "token": i}));
    }
}

#[test]
fn bidi_overrides_zero_width_and_tag_characters_reach_a_text_terminal_as_code_points() {
    let server = Server::start();
    let (mut alice, mut bob) = text_alice_and_json_bob(&server);

    say(
        &mut bob,
        "evil\u{202e}txt.exe\u{2066}\u{200b}\u{feff}\u{e0041}",
    );
    // JSON clients get the text as sent.
    assert_eq!(
        bob.expect_code(200)["message"]["text"],
        "evil\u{202e}txt.exe\u{2066}\u{200b}\u{feff}\u{e0041}"
    );
    assert_eq!(
        without_clock(&alice.recv_line()),
        "#lobby <bob> evil<U+202E>txt.exe<U+2066><U+200B><U+FEFF><U+E0041>"
    );
    // An unknown command quoting one is escaped in the error too.
    alice.send("/x\u{202e}y");
    assert_eq!(
        alice.recv_line(),
        "! unknown command /x<U+202E>y; type /help (400)"
    );
}

#[test]
fn annotation_and_other_format_controls_reach_a_text_terminal_as_code_points() {
    // Before: U+FFF9–B (which may hide the annotation between them) and
    // the format controls that span the text after them reached
    // terminals raw.
    let server = Server::start();
    let (mut alice, mut bob) = text_alice_and_json_bob(&server);
    let text = "pay \u{fff9}10\u{fffa}1000\u{fffb} \u{600}12 \u{13430}";
    say(&mut bob, text);
    assert_eq!(bob.expect_code(200)["message"]["text"], text);
    assert_eq!(
        without_clock(&alice.recv_line()),
        "#lobby <bob> pay <U+FFF9>10<U+FFFA>1000<U+FFFB> <U+0600>12 <U+13430>"
    );
}

#[test]
fn a_message_of_only_invisible_characters_is_refused_as_empty_in_both_modes() {
    let server = Server::start();
    let (mut alice, mut bob) = text_alice_and_json_bob(&server);

    say(&mut bob, "\u{200b}");
    let refused = bob.expect_code(400);
    assert_eq!(error_text(&refused), "message is empty");
    bob.send_json(&json!({"code": 102, "to": "alice", "message": "\u{feff} \u{2060}"}));
    assert_eq!(error_text(&bob.expect_code(400)), "message is empty");
    alice.send("\u{200b}\u{200d}");
    assert_eq!(alice.recv_line(), "! message is empty (400)");
    // Nothing was relayed: the next thing each sees is a real message.
    say(&mut bob, "visible");
    assert_eq!(bob.expect_code(200)["message"]["text"], "visible");
    assert_eq!(without_clock(&alice.recv_line()), "#lobby <bob> visible");
}

#[test]
fn a_telnet_window_size_of_255_escaped_as_iac_iac_does_not_leak_into_the_username() {
    let server = Server::start();
    let mut alice = Client::text(server.port());
    // What telnet sends for a 255-column window: IAC SB NAWS 0 IAC IAC 0 24
    // IAC SE; the doubled IAC is the escaped 255 inside the subnegotiation.
    alice.send_raw(b"\xff\xfa\x1f\x00\xff\xff\x00\x18\xff\xf0");
    alice.login_text("alice");
}

#[test]
fn crlf_terminated_frames_are_accepted() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    client.send_raw(b"{\"code\":110,\"username\":\"alice\"}\r\n");
    assert_eq!(client.recv_json(), json!({"code": 202, "new": "alice"}));
    client.expect_code(201);
    client.send_raw(b"{\"code\":100,\"message\":\"crlf\"}\r\n");
    assert_eq!(client.recv_json()["message"]["text"], "crlf");
}

#[test]
fn empty_lines_are_ignored_before_and_after_login() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    // Empty lines do not choose the mode: the first real line is JSON.
    client.send_raw(b"\n\r\n\n");
    client.login("alice");
    client.send_raw(b"\n\n\r\n{\"code\":108,\"token\":1}\n\n");
    assert_eq!(client.recv_json(), json!({"code": 207, "token": 1}));
}

#[test]
fn invalid_utf8_gets_400_and_the_session_continues() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    client.login("alice");
    client.send_raw(b"{\"code\":100,\"message\":\"bad \xc3\x28 bytes\"}\n");
    let error = client.recv_json();
    assert_eq!(error["code"], 400, "{error}");
    assert!(error_text(&error).contains("UTF-8"), "{error}");
    say(&mut client, "still here");
    assert_eq!(client.recv_json()["message"]["text"], "still here");
}

#[test]
fn a_line_of_exactly_8192_bytes_is_accepted_and_8193_gets_413() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);

    let longest = padded_line("{\"code\":108,\"token\":\"", "\"}", 8192);
    alice.send(&longest);
    let pong = alice.recv_json();
    assert_eq!(pong["code"], 207);
    assert_eq!(pong["token"].as_str().map(str::len), Some(8192 - 23));

    let too_long = padded_line("{\"code\":100,\"message\":\"", "\"}", 8193);
    alice.send(&too_long);
    let error = alice.recv_json();
    assert_eq!(error["code"], 413, "{error}");
    assert!(error_text(&error).contains("8192"), "{error}");

    // The session goes on, and the over-long SAY was never relayed.
    say(&mut alice, "after");
    assert_eq!(alice.recv_json()["message"]["text"], "after");
    assert_eq!(bob.recv_json()["message"]["text"], "after");
}

#[test]
fn an_overlong_line_split_across_writes_gets_one_413() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    client.login("alice");
    client.send_raw(&vec![b'x'; 20_000]);
    client.send_raw(&vec![b'y'; 20_000]);
    client.send_raw(b"\n{\"code\":108,\"token\":2}\n");
    assert_eq!(client.recv_json()["code"], 413);
    assert_eq!(client.recv_json(), json!({"code": 207, "token": 2}));
}

#[test]
fn max_line_bytes_from_the_config_file_is_enforced() {
    let server = Server::with_config("max_line_bytes = 100\n");
    let mut client = Client::json(server.port());
    client.login("alice");
    client.send(&padded_line("{\"code\":108,\"token\":\"", "\"}", 100));
    assert_eq!(client.recv_json()["code"], 207);
    client.send(&padded_line("{\"code\":108,\"token\":\"", "\"}", 101));
    let error = client.recv_json();
    assert_eq!(error["code"], 413, "{error}");
    assert!(error_text(&error).contains("100"), "{error}");
    client.send("{\"code\":108,\"token\":3}");
    assert_eq!(client.recv_json(), json!({"code": 207, "token": 3}));
}

// ---------------------------------------------------------------------------
// Login and request validation.

#[test]
fn invalid_usernames_get_400_and_the_client_may_try_again() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    for bad in [
        "",
        "al ice",
        "a.b",
        "#x",
        "Server",
        "admin",
        &"a".repeat(33),
    ] {
        client.send_json(&json!({"code": 110, "username": bad}));
        let error = client.recv_json();
        assert_eq!(error["code"], 400, "{bad:?}: {error}");
    }
    client.login(&"a".repeat(32));
}

#[test]
fn a_taken_username_gets_409_regardless_of_case() {
    let server = Server::start();
    let mut alice = Client::json(server.port());
    alice.login("alice");
    let mut other = Client::json(server.port());
    other.send_json(&json!({"code": 110, "username": "ALICE"}));
    let error = other.recv_json();
    assert_eq!(error["code"], 409, "{error}");
    assert!(error_text(&error).contains("ALICE"), "{error}");
    other.login("alice2");
}

#[test]
fn password_auth_accepts_the_right_password_after_a_wrong_one() {
    let server = password_server();
    let mut alice = Client::json(server.port());
    alice.send_json(&json!({"code": 110, "username": "alice"}));
    assert_eq!(alice.recv_json(), json!({"code": 211}));
    alice.send_json(&json!({"code": 100, "message": "too early"}));
    let error = alice.recv_json();
    assert_eq!(error["code"], 403, "{error}");
    assert!(error_text(&error).contains("PASS AUTH"), "{error}");
    alice.send_json(&json!({"code": 111, "password": "wrong"}));
    assert_eq!(alice.recv_json()["code"], 401);
    // Back in USER AUTH: a PASS now is out of place.
    alice.send_json(&json!({"code": 111, "password": "s3cret"}));
    let error = alice.recv_json();
    assert_eq!(error["code"], 403, "{error}");
    assert!(error_text(&error).contains("USER AUTH"), "{error}");
    alice.send_json(&json!({"code": 110, "username": "alice"}));
    assert_eq!(alice.recv_json(), json!({"code": 211}));
    alice.send_json(&json!({"code": 111, "password": "s3cret"}));
    assert_eq!(alice.recv_json(), json!({"code": 202, "new": "alice"}));
    assert_eq!(
        alice.recv_json(),
        json!({"code": 201, "new": "alice", "room": "lobby"})
    );

    // A text client logs in with the password on its own line.
    let mut bob = Client::text(server.port());
    bob.send("bob");
    assert_eq!(bob.recv_line(), "* password:");
    bob.send("s3cret");
    assert_eq!(bob.recv_line(), "* you are now bob");
    assert_eq!(
        alice.recv_json(),
        json!({"code": 201, "new": "bob", "room": "lobby"})
    );
}

#[test]
fn three_wrong_passwords_close_the_connection() {
    let server = password_server();
    let mut client = Client::json(server.port());
    for attempt in 1..=3 {
        client.send_json(&json!({"code": 110, "username": "mallory"}));
        assert_eq!(
            client.recv_json(),
            json!({"code": 211}),
            "attempt {attempt}"
        );
        client.send_json(&json!({"code": 111, "password": format!("guess{attempt}")}));
        assert_eq!(client.recv_json()["code"], 401, "attempt {attempt}");
    }
    client.expect_eof();
    // The name was never taken for good.
    let mut again = Client::json(server.port());
    again.send_json(&json!({"code": 110, "username": "mallory"}));
    assert_eq!(again.recv_json(), json!({"code": 211}));
}

#[test]
fn a_text_user_who_retypes_a_password_is_asked_for_it_again_and_it_is_never_announced_or_logged() {
    let mut server = password_server();
    let mut alice = Client::json(server.port());
    alice.send_json(&json!({"code": 110, "username": "alice"}));
    alice.send_json(&json!({"code": 111, "password": "s3cret"}));
    alice.expect_code(201);

    let mut bob = Client::text(server.port());
    bob.send("bob");
    assert_eq!(bob.recv_line(), "* password:");
    bob.send("Tr0ub4dor");
    assert_eq!(
        bob.recv_line(),
        "! wrong password; type it again, or /quit (401)"
    );
    assert_eq!(bob.recv_line(), "* password:");
    // /help at the password prompt is help, not a second failure, and it
    // lists every command.
    bob.send("/help");
    let mut help = Vec::new();
    loop {
        let line = bob.recv_line();
        let is_last = line.contains("/quit");
        help.push(line);
        if is_last {
            break;
        }
    }
    for command in ["/history", "/ping", "/nick", "/who", "/quit"] {
        assert!(
            help.iter().any(|line| line.contains(command)),
            "/help lacks {command}: {help:#?}"
        );
    }
    // The person retypes the same wrong password, then the right one: both
    // are passwords (two failures of three), and bob logs in as bob.
    bob.send("Tr0ub4dor");
    assert_eq!(
        bob.recv_line(),
        "! wrong password; type it again, or /quit (401)"
    );
    assert_eq!(bob.recv_line(), "* password:");
    bob.send("s3cret");
    assert_eq!(bob.recv_line(), "* you are now bob");
    assert_eq!(
        alice.expect_code(201),
        json!({"code": 201, "new": "bob", "room": "lobby"})
    );
    server.wait_for_log("login bob");
    let leaked: Vec<&String> = server
        .drain_log()
        .iter()
        .filter(|line| line.contains("Tr0ub4dor"))
        .collect();
    assert!(leaked.is_empty(), "a password reached the log: {leaked:#?}");

    // /quit at the password prompt leaves without a failed password.
    let mut carol = Client::text(server.port());
    carol.send("carol");
    assert_eq!(carol.recv_line(), "* password:");
    carol.send("/quit");
    carol.expect_eof();
}

/// Reads raw bytes until they hold `needle` (bounded by the harness's read
/// timeout); telnet commands are not UTF-8, so lines will not do.
fn read_until_holding(stream: &mut std::net::TcpStream, needle: &[u8]) -> Vec<u8> {
    use std::io::Read;
    stream
        .set_read_timeout(Some(common::READ_TIMEOUT))
        .expect("set_read_timeout");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 512];
    while !bytes.windows(needle.len()).any(|window| window == needle) {
        let count = stream
            .read(&mut buf)
            .unwrap_or_else(|error| panic!("read failed after {bytes:?}: {error}"));
        assert!(count > 0, "EOF after {:?}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&buf[..count]);
    }
    bytes
}

#[test]
fn a_telnet_client_gets_its_echo_turned_off_for_the_password_and_back_on_after() {
    use std::io::Write;
    let server = password_server();
    let mut telnet = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    read_until_holding(&mut telnet, b"\n");
    // What a telnet client sends first: negotiation (IAC WILL NAWS), then
    // the name the person typed.
    telnet.write_all(b"\xff\xfb\x1fbob\r\n").unwrap();
    assert_eq!(
        read_until_holding(&mut telnet, b"* password:\n"),
        b"\xff\xfb\x01* password:\n"
    );
    telnet.write_all(b"s3cret\r\n").unwrap();
    let after = read_until_holding(&mut telnet, b"* you are now bob\n");
    assert!(
        after.starts_with(b"\r\n\xff\xfc\x01* you are now bob\n"),
        "{after:?}"
    );

    // nc sends no IAC and gets none.
    let mut nc = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    read_until_holding(&mut nc, b"\n");
    nc.write_all(b"carol\n").unwrap();
    assert_eq!(read_until_holding(&mut nc, b"\n"), b"* password:\n");
    nc.write_all(b"s3cret\n").unwrap();
    let after = read_until_holding(&mut nc, b"* you are now carol\n");
    assert!(after.starts_with(b"* you are now carol\n"), "{after:?}");
    assert!(!after.contains(&255), "{after:?}");
}

#[test]
fn say_before_login_gets_403_naming_the_state() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    say(&mut client, "hello?");
    let error = client.recv_json();
    assert_eq!(error["code"], 403, "{error}");
    assert!(error_text(&error).contains("USER AUTH"), "{error}");
    client.login("alice");
    client.send_json(&json!({"code": 110, "username": "again"}));
    let error = client.recv_json();
    assert_eq!(error["code"], 403, "{error}");
    assert!(error_text(&error).contains("BROADCAST"), "{error}");
}

#[test]
fn an_unknown_code_or_a_non_object_gets_400() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    client.send("{\"code\":999}");
    let error = client.recv_json();
    assert_eq!(error["code"], 400, "{error}");
    assert!(error_text(&error).contains("999"), "{error}");
    client.send("{\"code\":");
    assert_eq!(client.recv_json()["code"], 400);
    client.send("{\"code\":108,\"extra\":1}");
    let error = client.recv_json();
    assert_eq!(error["code"], 400, "{error}");
    assert!(error_text(&error).contains("extra"), "{error}");
    client.login("alice");
}

#[test]
fn a_missing_or_mistyped_field_gets_400_naming_it() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    for (frame, field) in [
        (json!({"username": "alice"}), "code"),
        (json!({"code": "110", "username": "alice"}), "code"),
        (json!({"code": 110}), "username"),
        (json!({"code": 110, "username": 5}), "username"),
    ] {
        client.send_json(&frame);
        let error = client.recv_json();
        assert_eq!(error["code"], 400, "{frame}: {error}");
        assert!(error_text(&error).contains(field), "{frame}: {error}");
    }
    client.login("alice");
    for (frame, field) in [
        (json!({"code": 100}), "message"),
        (json!({"code": 100, "message": ["hi"]}), "message"),
        (json!({"code": 100, "message": "hi", "room": 1}), "room"),
        (json!({"code": 102, "message": "hi"}), "to"),
        (json!({"code": 104}), "room"),
    ] {
        client.send_json(&frame);
        let error = client.recv_json();
        assert_eq!(error["code"], 400, "{frame}: {error}");
        assert!(error_text(&error).contains(field), "{frame}: {error}");
    }
}

// ---------------------------------------------------------------------------
// Chatting.

#[test]
fn say_goes_to_the_named_or_current_room_and_403_outside_it() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);

    say(&mut alice, "to the default room");
    for client in [&mut alice, &mut bob] {
        let message = client.recv_json()["message"].clone();
        assert_eq!(message["room"], "lobby");
        assert_eq!(message["text"], "to the default room");
    }

    alice.send_json(&json!({"code": 104, "room": "#Rust"}));
    assert_eq!(
        alice.recv_json(),
        json!({"code": 201, "new": "alice", "room": "rust"})
    );
    // Without a room the message goes to the current (last joined) room.
    say(&mut alice, "to rust");
    assert_eq!(alice.recv_json()["message"]["room"], "rust");
    alice.send_json(&json!({"code": 100, "message": "to lobby", "room": "LOBBY"}));
    assert_eq!(alice.recv_json()["message"]["room"], "lobby");
    let message = bob.recv_json()["message"].clone();
    assert_eq!(
        (&message["room"], &message["text"]),
        (&json!("lobby"), &json!("to lobby"))
    );

    bob.send_json(&json!({"code": 100, "message": "let me in", "room": "rust"}));
    let error = bob.recv_json();
    assert_eq!(error["code"], 403, "{error}");
    assert!(error_text(&error).contains("rust"), "{error}");
    bob.send_json(&json!({"code": 100, "message": "x".repeat(4097)}));
    assert_eq!(bob.recv_json()["code"], 400);
}

#[test]
fn message_ids_increase_across_senders() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let mut carol = Client::json(server.port());
    carol.login("carol");
    for i in 0..10 {
        let sender = if i % 2 == 0 { &mut alice } else { &mut bob };
        say(sender, &format!("m{i}"));
        // Wait for the echo so the next sender's message comes later.
        while sender.expect_code(200)["message"]["text"] != format!("m{i}") {}
    }
    let mut last = 0;
    for i in 0..10 {
        let message = carol.expect_code(200)["message"].clone();
        assert_eq!(message["text"], format!("m{i}"));
        let id = message["id"].as_u64().expect("id is an integer");
        assert!(id > last, "id {id} after {last}");
        last = id;
    }
}

#[test]
fn a_dm_reaches_the_target_and_the_sender_and_an_unknown_user_gets_404() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    let mut carol = Client::json(server.port());
    carol.login("carol");

    alice.send_json(&json!({"code": 102, "to": "BOB", "message": "psst"}));
    for client in [&mut alice, &mut bob] {
        let message = client.expect_code(200)["message"].clone();
        assert_eq!(message["to"], "bob", "{message}");
        assert_eq!(message["from"], "alice");
        assert_eq!(message["text"], "psst");
        assert!(message.get("room").is_none(), "{message}");
    }
    alice.send_json(&json!({"code": 102, "to": "nobody", "message": "hello?"}));
    let error = alice.recv_json();
    assert_eq!(error["code"], 404, "{error}");
    assert!(error_text(&error).contains("nobody"), "{error}");

    // Carol saw no DM: her next message is a room message.
    say(&mut bob, "public");
    let message = carol.expect_code(200)["message"].clone();
    assert_eq!(message["text"], "public");
}

#[test]
fn rename_sends_202_to_self_and_203_to_room_mates() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    alice.send_json(&json!({"code": 101, "username": "alicia"}));
    assert_eq!(alice.recv_json(), json!({"code": 202, "new": "alicia"}));
    assert_eq!(
        bob.recv_json(),
        json!({"code": 203, "old": "alice", "new": "alicia"})
    );
    alice.send_json(&json!({"code": 101, "username": "Bob"}));
    assert_eq!(alice.recv_json()["code"], 409);
    // The old name is free now; the new one is used for messages.
    let mut other = Client::json(server.port());
    other.login("alice");
    say(&mut alice, "renamed");
    assert_eq!(bob.expect_code(200)["message"]["from"], "alicia");
}

#[test]
fn who_lists_the_members_of_a_room_in_join_order() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    alice.send_json(&json!({"code": 103}));
    assert_eq!(
        alice.recv_json(),
        json!({"code": 206, "room": "lobby", "users": ["alice", "bob"]})
    );
    bob.send_json(&json!({"code": 104, "room": "rust"}));
    bob.expect_code(201);
    alice.send_json(&json!({"code": 103, "room": "#rust"}));
    assert_eq!(
        alice.recv_json(),
        json!({"code": 206, "room": "rust", "users": ["bob"]})
    );
    alice.send_json(&json!({"code": 103, "room": "nowhere"}));
    assert_eq!(alice.recv_json()["code"], 404);
}

#[test]
fn join_part_and_rooms_track_membership() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    alice.send_json(&json!({"code": 104, "room": "rust"}));
    assert_eq!(
        alice.recv_json(),
        json!({"code": 201, "new": "alice", "room": "rust"})
    );
    bob.send_json(&json!({"code": 104, "room": "#RUST"}));
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            client.recv_json(),
            json!({"code": 201, "new": "bob", "room": "rust"})
        );
    }
    alice.send_json(&json!({"code": 107}));
    assert_eq!(
        alice.recv_json(),
        json!({"code": 212, "rooms": [{"name": "lobby", "users": 2}, {"name": "rust", "users": 2}]})
    );
    alice.send_json(&json!({"code": 105, "room": "rust"}));
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            client.recv_json(),
            json!({"code": 204, "username": "alice", "room": "rust"})
        );
    }
    alice.send_json(&json!({"code": 105, "room": "rust"}));
    assert_eq!(alice.recv_json()["code"], 403);
    bob.send_json(&json!({"code": 105, "room": "rust"}));
    assert_eq!(bob.recv_json()["code"], 204);
    // The empty room is gone; the default room stays.
    bob.send_json(&json!({"code": 107}));
    assert_eq!(
        bob.recv_json(),
        json!({"code": 212, "rooms": [{"name": "lobby", "users": 2}]})
    );
    bob.send_json(&json!({"code": 105, "room": "rust"}));
    assert_eq!(bob.recv_json()["code"], 404);
}

#[test]
fn ping_echoes_its_token_byte_for_byte() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    // PING is allowed before login, and the token is echoed as sent.
    for token in [
        r#"{"a":[1,2]}"#,
        r#""""#,
        "null",
        "42",
        r#"{"a": [1, 2.50]}"#,
    ] {
        client.send(&format!("{{\"code\":108,\"token\":{token}}}"));
        assert_eq!(
            client.recv_line(),
            format!("{{\"code\":207,\"token\":{token}}}")
        );
    }
    client.send("{\"code\":108}");
    assert_eq!(client.recv_line(), "{\"code\":207}");
    client.login("alice");
    client.send("{\"code\":108,\"token\":[\"after\",\"login\"]}");
    assert_eq!(
        client.recv_line(),
        "{\"code\":207,\"token\":[\"after\",\"login\"]}"
    );
}

#[test]
fn quit_sends_204_to_others_and_closes_the_quitter() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    alice.send_json(&json!({"code": 109}));
    alice.expect_eof();
    assert_eq!(bob.recv_json(), json!({"code": 204, "username": "alice"}));
    bob.send_json(&json!({"code": 103}));
    assert_eq!(
        bob.recv_json(),
        json!({"code": 206, "room": "lobby", "users": ["bob"]})
    );
}

#[test]
fn an_abrupt_disconnect_sends_204_and_frees_the_name() {
    let server = Server::start();
    let (alice, mut bob) = alice_and_bob(&server);
    drop(alice);
    assert_eq!(bob.recv_json(), json!({"code": 204, "username": "alice"}));
    let mut again = Client::json(server.port());
    again.login("alice");
    assert_eq!(
        bob.recv_json(),
        json!({"code": 201, "new": "alice", "room": "lobby"})
    );
}

#[test]
fn a_reset_connection_sends_204_and_frees_the_name() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    // Alice closes with bytes unread, so her kernel answers with a reset.
    say(&mut bob, "unread");
    assert_eq!(bob.recv_json()["message"]["text"], "unread");
    alice.send("{\"code\":108,\"token\":\"sync\"}");
    alice.expect_code(207);
    say(&mut bob, "also unread");
    bob.expect_code(200);
    drop(alice);
    assert_eq!(bob.recv_json(), json!({"code": 204, "username": "alice"}));
    let mut again = Client::json(server.port());
    again.login("alice");
}

#[test]
fn a_half_closed_client_still_receives_what_it_is_owed() {
    let server = Server::start();
    let (mut alice, mut bob) = alice_and_bob(&server);
    alice.send("{\"code\":108,\"token\":\"last\"}");
    alice.shutdown_write();
    assert_eq!(alice.recv_json(), json!({"code": 207, "token": "last"}));
    alice.expect_eof();
    assert_eq!(bob.recv_json(), json!({"code": 204, "username": "alice"}));
}

// ---------------------------------------------------------------------------
// Connections the server turns away.

#[test]
fn an_http_request_gets_400_and_is_closed() {
    let server = Server::start();
    let mut client = Client::json(server.port());
    client.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let line = client.recv_line();
    assert!(
        line.starts_with("! ") && line.contains("HTTP") && line.ends_with("(400)"),
        "{line}"
    );
    client.expect_eof();
}

#[test]
fn a_connection_over_max_connections_gets_503_and_is_closed() {
    let server = Server::with_config("max_connections = 2\n");
    let mut first = Client::json(server.port());
    let second = Client::json(server.port());
    let mut third = Client::connect(server.addrs[0]);
    let refusal = third.recv_json();
    assert_eq!(refusal["code"], 503, "{refusal}");
    assert!(refusal["error"].is_string(), "{refusal}");
    third.expect_eof();
    // Those already in are unaffected.
    first.login("alice");
    drop(second);
}

// ---------------------------------------------------------------------------
// Shutdown and hostile input.

#[test]
fn sigterm_says_goodbye_to_every_client_and_exits_0() {
    let mut server = Server::start();
    let mut json_client = Client::json(server.port());
    json_client.login("alice");
    let mut text_client = Client::text(server.port());
    text_client.login_text("bob");
    json_client.expect_code(201);

    server.signal("TERM");
    assert_eq!(json_client.expect_code(205), json!({"code": 205}));
    json_client.expect_eof();
    text_client.expect_line("server going down");
    text_client.expect_eof();
    drop(json_client);
    drop(text_client);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    server.wait_for_log("shutdown complete");
}

/// A small deterministic generator, so no `rand` is needed.
struct XorShift(u64);

impl XorShift {
    fn next_byte(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u8
    }
}

#[test]
fn garbage_from_one_client_does_not_disturb_others_chatting() {
    const CHUNKS: usize = 25;
    // The pair sends faster than a person would: flood control is not the
    // subject here.
    let server = Server::with_config("flood_rate = 0\n");
    let (mut alice, mut bob) = alice_and_bob(&server);
    let mut garbage = Client::json(server.port());
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);

    for i in 0..CHUNKS {
        let chunk: Vec<u8> = (0..4096)
            .map(|_| random.next_byte())
            .map(|byte| if byte == b'\n' { b'.' } else { byte })
            .collect();
        garbage.send_raw(&chunk);
        say(&mut alice, &format!("a{i}"));
        say(&mut bob, &format!("b{i}"));
    }

    let mut seen = Vec::new();
    for client in [&mut alice, &mut bob] {
        let texts: Vec<String> = (0..2 * CHUNKS)
            .map(|_| {
                let frame = client.recv_json();
                assert_eq!(frame["code"], 200, "{frame}");
                frame["message"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        for prefix in ["a", "b"] {
            let from_one: Vec<&String> = texts
                .iter()
                .filter(|text| text.starts_with(prefix))
                .collect();
            let expected: Vec<String> = (0..CHUNKS).map(|i| format!("{prefix}{i}")).collect();
            assert_eq!(from_one, expected.iter().collect::<Vec<_>>());
        }
        seen.push(texts);
    }
    assert_eq!(seen[0], seen[1], "alice and bob saw different orders");

    // The garbage line was refused once and never buffered whole; after a
    // newline (past any telnet subnegotiation) the connection still works.
    garbage.send_raw(&[b'x'; 1024]);
    garbage.send("\n{\"code\":108,\"token\":\"alive\"}");
    assert_eq!(garbage.recv_json()["code"], 413);
    assert_eq!(garbage.recv_json(), json!({"code": 207, "token": "alive"}));
}
