//! Cluster mode end to end (issue 14): a real `nats-server` with JetStream
//! and two riftd nodes started with `cluster_url`, clients on each over
//! TCP. Every wait is bounded (a frame, a log line, an exit); the node
//! death test waits for the documented bound (`NAME_TTL`, 10 s, plus the
//! server's sweep), never a fixed sleep.

use crate::common::nats::Nats;
use crate::common::{Client, EXIT_TIMEOUT, Launch, Server, free_port};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `riftd::cluster::NAME_TTL`: a dead node's names and memberships expire
/// within it.
const NAME_TTL: Duration = Duration::from_secs(10);

/// A node on `nats`, history on (kept in JetStream; the file is unused).
fn node_launch(nats: &Nats, name: &str) -> Launch {
    node_launch_with(nats, name, "")
}

/// The same with more config lines.
fn node_launch_with(nats: &Nats, name: &str, extra: &str) -> Launch {
    Launch::new().config(&format!(
        "cluster_url = \"{}\"\nnode_name = \"{name}\"\nhistory_file = \"history.jsonl\"\n{extra}",
        nats.url()
    ))
}

fn node(nats: &Nats, name: &str) -> Server {
    node_launch(nats, name).start()
}

fn two_nodes() -> (Nats, Server, Server) {
    let nats = Nats::start();
    let a = node(&nats, "node-a");
    let b = node(&nats, "node-b");
    (nats, a, b)
}

/// Logged in under open auth: 202, 201 (the default room), and the
/// backlog (208), which comes once the node reads it from the stream.
fn login(server: &Server, name: &str) -> (Client, Value) {
    let mut client = Client::json(server.port());
    client.login(name);
    let backlog = client.expect_code(208);
    (client, backlog)
}

fn say(client: &mut Client, text: &str) {
    client.send_json(&json!({"code": 100, "message": text}));
}

/// The next `count` chat messages (200), as (id, text).
fn heard(client: &mut Client, count: usize) -> Vec<(u64, String)> {
    (0..count)
        .map(|_| {
            let frame = client.expect_code(200);
            let message = &frame["message"];
            (
                message["id"].as_u64().unwrap(),
                message["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn texts(backlog: &Value) -> Vec<String> {
    backlog["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn room_messages_cross_nodes_in_one_order_with_increasing_ids() {
    let (_nats, a, b) = two_nodes();
    let (mut alice, _) = login(&a, "alice");
    let (mut bob, _) = login(&b, "bob");
    // Both nodes are subscribed to the lobby once each has seen the
    // other's join.
    assert_eq!(alice.expect_code(201)["new"], "bob");
    for round in 0..5 {
        say(&mut alice, &format!("a{round}"));
        say(&mut bob, &format!("b{round}"));
    }
    let on_a = heard(&mut alice, 10);
    let on_b = heard(&mut bob, 10);
    assert_eq!(on_a, on_b, "both nodes deliver one order");
    assert!(
        on_a.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "{on_a:?}"
    );
    // Each sender's own messages keep their order.
    let from_alice: Vec<_> = on_a.iter().filter(|(_, t)| t.starts_with('a')).collect();
    assert_eq!(from_alice.len(), 5);
    assert!(from_alice.windows(2).all(|pair| pair[0].1 < pair[1].1));
}

#[test]
fn a_name_held_on_one_node_is_taken_on_the_other_in_any_case() {
    let (_nats, a, b) = two_nodes();
    let (_alice, _) = login(&a, "alice");
    let mut other = Client::json(b.port());
    other.send_json(&json!({"code": 110, "username": "ALICE"}));
    assert_eq!(other.expect_code(409)["code"], 409);
    // RENAME into it from the other node is refused too, and the old name
    // is kept.
    let (mut bob, _) = login(&b, "bob");
    bob.send_json(&json!({"code": 101, "username": "Alice"}));
    bob.expect_code(409);
    bob.send_json(&json!({"code": 101, "username": "robert"}));
    assert_eq!(bob.expect_code(202)["new"], "robert");
    // "bob" is free again, cluster-wide.
    let (_bob_again, _) = login(&a, "Bob");
}

/// Sends `frames` in one write.
fn pipeline(client: &mut Client, frames: &[Value]) {
    let bytes: String = frames.iter().map(|frame| format!("{frame}\n")).collect();
    client.send_raw(bytes.as_bytes());
}

/// Asserts that the login (202) came first, then `said` as a chat
/// message (the last of `frames`), and nothing was refused.
fn assert_answered_in_order(frames: &[Value], said: &str) {
    let position = |code: u64| frames.iter().position(|frame| frame["code"] == code);
    let login = position(202);
    let message = position(200);
    assert!(
        login.is_some() && message > login,
        "the SAY was not answered after the login: {frames:?}"
    );
    assert_eq!(frames[message.unwrap()]["message"]["text"], said);
    assert!(
        frames
            .iter()
            .all(|frame| frame["code"].as_u64() < Some(400)),
        "a pipelined line was refused: {frames:?}"
    );
}

#[test]
fn lines_pipelined_behind_a_login_wait_for_the_clusters_grant_of_the_name() {
    // The name is granted by NATS, a round trip away: a SAY and a PING
    // sent in the same write as USER (or PASS) are answered after the
    // login, as a single node answers them, not refused in USER AUTH.
    // (The SAY's own copy comes back from the stream, so the PING's 207
    // may come before it.)
    let nats = Nats::start();
    let open = node(&nats, "node-a");
    let mut client = Client::json(open.port());
    pipeline(
        &mut client,
        &[
            json!({"code": 110, "username": "quick"}),
            json!({"code": 100, "message": "at once"}),
            json!({"code": 108, "token": "t"}),
        ],
    );
    assert_answered_in_order(&client.frames_until(200), "at once");

    let config = "auth = \"password\"\npassword_file = \"pw\"\n";
    let guarded = node_launch_with(&nats, "node-b", config)
        .file("pw", "sesame\n")
        .start();
    let mut client = Client::json(guarded.port());
    pipeline(
        &mut client,
        &[
            json!({"code": 110, "username": "careful"}),
            json!({"code": 111, "password": "sesame"}),
            json!({"code": 100, "message": "after the password"}),
            json!({"code": 108, "token": "t"}),
        ],
    );
    assert_answered_in_order(&client.frames_until(200), "after the password");
}

#[test]
fn behind_a_password_the_name_is_claimed_cluster_wide_once_the_password_is_right() {
    let nats = Nats::start();
    let config = "auth = \"password\"\npassword_file = \"pw\"\n";
    let a = node_launch_with(&nats, "node-a", config)
        .file("pw", "sesame\n")
        .start();
    let b = node_launch_with(&nats, "node-b", config)
        .file("pw", "sesame\n")
        .start();
    let mut alice = Client::json(a.port());
    alice.send_json(&json!({"code": 110, "username": "alice"}));
    alice.expect_code(211);
    alice.send_json(&json!({"code": 111, "password": "sesame", "ref": "p7"}));
    assert_eq!(
        alice.recv_json(),
        json!({"code": 202, "new": "alice", "ref": "p7"})
    );
    alice.expect_code(201);
    // USER alone holds nothing and checks only this node; the verified
    // password's claim meets the other node's holder.
    let mut other = Client::json(b.port());
    other.send_json(&json!({"code": 110, "username": "Alice"}));
    other.expect_code(211);
    other.send_json(&json!({"code": 111, "password": "sesame", "ref": "p8"}));
    let taken = other.expect_code(409);
    assert_eq!(taken["ref"], "p8", "{taken}");
}

#[test]
fn a_room_too_big_cluster_wide_is_quiet_on_every_node() {
    let nats = Nats::start();
    let quiet = "quiet_room_size = 1\n";
    let a = node_launch_with(&nats, "node-a", quiet).start();
    let b = node_launch_with(&nats, "node-b", quiet).start();
    let (mut alice, _) = login(&a, "alice");
    let (mut bob, _) = login(&b, "bob");
    // Two members on two nodes: more than 1, so bob's join is not
    // announced to alice, whose next frame is bob's message.
    bob.send_json(&json!({"code": 103}));
    assert_eq!(bob.expect_code(206)["users"].as_array().unwrap().len(), 2);
    say(&mut bob, "hello");
    let next = alice.recv_json();
    assert_eq!(
        (next["code"].clone(), next["message"]["text"].clone()),
        (json!(200), json!("hello"))
    );
}

#[test]
fn two_nodes_racing_for_one_name_give_it_to_exactly_one() {
    let (_nats, a, b) = two_nodes();
    for round in 0..5 {
        let name = format!("racer{round}");
        let mut on_a = Client::json(a.port());
        let mut on_b = Client::json(b.port());
        let claim = json!({"code": 110, "username": name});
        on_a.send_json(&claim);
        on_b.send_json(&claim);
        let answers = [
            on_a.recv_json()["code"].clone(),
            on_b.recv_json()["code"].clone(),
        ];
        let won = answers.iter().filter(|code| **code == 202).count();
        let lost = answers.iter().filter(|code| **code == 409).count();
        assert_eq!((won, lost), (1, 1), "round {round}: {answers:?}");
    }
}

#[test]
fn a_dm_reaches_the_holder_on_another_node_and_nobody_is_404() {
    let (_nats, a, b) = two_nodes();
    let (mut alice, _) = login(&a, "alice");
    let (mut bob, _) = login(&b, "bob");
    alice.send_json(&json!({"code": 102, "to": "BOB", "message": "psst"}));
    let got = bob.expect_code(200)["message"].clone();
    assert_eq!(
        (got["from"].clone(), got["text"].clone()),
        (json!("alice"), json!("psst"))
    );
    let echo = alice.expect_code(200)["message"].clone();
    assert_eq!(echo["id"], got["id"]);
    say(&mut bob, "after the dm");
    let said = bob.expect_code(200)["message"]["id"].as_u64().unwrap();
    assert!(
        said > got["id"].as_u64().unwrap(),
        "DM ids share the room ids' order"
    );
    alice.send_json(&json!({"code": 102, "to": "nobody", "message": "hello?"}));
    alice.expect_code(404);
}

#[test]
fn who_lists_members_of_every_node_and_presence_crosses_nodes() {
    let (_nats, a, b) = two_nodes();
    let (mut alice, _) = login(&a, "alice");
    let (mut bob, _) = login(&b, "bob");
    assert_eq!(alice.expect_code(201)["new"], "bob");
    bob.send_json(&json!({"code": 103}));
    let mut users: Vec<String> = bob.expect_code(206)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user.as_str().unwrap().to_owned())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    // A room joined on both nodes: each side sees the other come and go.
    alice.send_json(&json!({"code": 104, "room": "den"}));
    alice.expect_code(201);
    bob.send_json(&json!({"code": 104, "room": "den"}));
    let joined = alice.expect_code(201);
    assert_eq!(
        (joined["new"].clone(), joined["room"].clone()),
        (json!("bob"), json!("den"))
    );
    // ROOMS counts every node's members.
    bob.send_json(&json!({"code": 107}));
    assert_eq!(
        bob.expect_code(212)["rooms"],
        json!([{"name": "den", "users": 2}, {"name": "lobby", "users": 2}])
    );
    bob.send_json(&json!({"code": 105, "room": "den"}));
    let left = alice.expect_code(204);
    assert_eq!(
        (left["username"].clone(), left["room"].clone()),
        (json!("bob"), json!("den"))
    );
    drop(bob);
    let quit = alice.expect_code(204);
    assert_eq!(quit["username"], "bob");
}

#[test]
fn the_join_backlog_and_history_on_one_node_show_what_was_said_on_the_other() {
    let nats = Nats::start();
    let launch = node_launch(&nats, "node-a");
    let history_file = launch.dir().join("history.jsonl");
    let a = launch.start();
    let b = node(&nats, "node-b");
    let (mut alice, _) = login(&a, "alice");
    for text in ["one", "two", "three"] {
        say(&mut alice, text);
    }
    let ids: Vec<u64> = heard(&mut alice, 3).into_iter().map(|(id, _)| id).collect();
    let (mut carol, backlog) = login(&b, "carol");
    assert_eq!(texts(&backlog), ["one", "two", "three"]);
    carol.send_json(&json!({"code": 106, "after": ids[0], "ref": "catch-up"}));
    let answer = carol.expect_code(208);
    assert_eq!(texts(&answer), ["two", "three"]);
    assert_eq!(answer["ref"], "catch-up");
    carol.send_json(&json!({"code": 106, "limit": 1}));
    assert_eq!(texts(&carol.expect_code(208)), ["three"]);
    // History lives in JetStream: the local journal is not written.
    assert!(
        !history_file.exists(),
        "{} was written",
        history_file.display()
    );
}

#[test]
fn a_killed_nodes_users_leave_and_their_names_are_free_within_the_bound() {
    let (_nats, mut a, b) = two_nodes();
    let (_alice, _) = login(&a, "alice");
    let (mut bob, _) = login(&b, "bob");
    bob.send_json(&json!({"code": 103}));
    assert!(
        bob.expect_code(206)["users"]
            .as_array()
            .unwrap()
            .contains(&json!("alice"))
    );
    a.signal("KILL");
    a.wait_exit();
    let killed = Instant::now();
    let bound = NAME_TTL + Duration::from_secs(3);
    let left = bob.expect_code_within(204, bound);
    assert_eq!(left["username"], "alice");
    // The name is free on the other node, within the same bound.
    loop {
        let mut again = Client::json(b.port());
        again.send_json(&json!({"code": 110, "username": "alice"}));
        let answer = again.recv_json();
        if answer["code"] == 202 {
            break;
        }
        assert_eq!(answer["code"], 409, "{answer}");
        assert!(
            killed.elapsed() < bound,
            "alice still taken after {bound:?}"
        );
        // Asked again once the answer came; each try waits for its answer.
    }
}

#[test]
fn a_node_shut_down_releases_its_users_names_at_once() {
    // SIGTERM, not SIGKILL: the node tells the cluster its users left as
    // it goes, so the other node shows the leave and frees the name well
    // before the entries would expire (`NAME_TTL`).
    let (_nats, mut a, b) = two_nodes();
    let (mut alice, _) = login(&a, "alice");
    let (mut bob, _) = login(&b, "bob");
    alice.expect_code(201); // bob joined the lobby
    a.signal("TERM");
    a.wait_exit();
    let left = bob.expect_code_within(204, NAME_TTL / 2);
    assert_eq!(left["username"], "alice");
    let mut again = Client::json(b.port());
    again.send_json(&json!({"code": 110, "username": "alice"}));
    assert_eq!(again.recv_json()["code"], 202, "alice is free at once");
}

#[test]
fn without_a_reachable_nats_a_node_exits_1_naming_it() {
    let port = free_port();
    let started = Instant::now();
    let finished = Launch::new()
        .config(&format!("cluster_url = \"nats://127.0.0.1:{port}\"\n"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .run_to_exit();
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        finished.stderr
    );
    assert!(started.elapsed() < EXIT_TIMEOUT);
}

#[test]
fn when_nats_goes_away_requests_get_503_and_the_session_goes_on() {
    let nats = Nats::start();
    let a = node(&nats, "node-a");
    let (mut alice, _) = login(&a, "alice");
    drop(nats);
    alice.send_json(&json!({"code": 100, "message": "anyone?", "ref": "lost"}));
    // The closed socket is noticed at once: the SAY is refused while
    // paused, or fails at once if it was in flight (`unless_down`). The
    // bound is `REQUEST_TIMEOUT` (5 s) with a margin, for a machine busy
    // enough that the loss is noticed late.
    let refused = alice.expect_code_within(503, Duration::from_secs(10));
    assert_eq!(refused["ref"], "lost", "{refused}");
    alice.send_json(&json!({"code": 108, "token": "still here"}));
    assert_eq!(alice.expect_code(207)["token"], "still here");
}

#[test]
fn a_daemon_that_cannot_reach_nats_makes_start_exit_1_naming_it() {
    let port = free_port();
    let launch = Launch::new()
        .config(&format!(
            "listen = \"127.0.0.1:0\"\npid_file = \"riftd.pid\"\nlog_file = \"riftd.log\"\n\
             cluster_url = \"nats://127.0.0.1:{port}\"\n"
        ))
        .args(&["-d", "start"]);
    let finished = launch.run_to_exit();
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        finished.stderr
    );
}

/// USER then a wrong PASS on a fresh JSON connection: the answer to the
/// PASS, or the 429 that refused the USER.
fn guess(port: u16, client: &mut Option<Client>) -> Value {
    let connection = client.get_or_insert_with(|| Client::json(port));
    connection.send_json(&json!({"code": 110, "username": "alice"}));
    let asked = connection.recv_json();
    if asked["code"] != 211 {
        return asked;
    }
    connection.send_json(&json!({"code": 111, "password": "wrong"}));
    let answer = connection.recv_json();
    if answer["error"]
        .as_str()
        .is_some_and(|error| error.contains("closing"))
    {
        *client = None;
    }
    answer
}

/// The 429 a fresh connection gets for USER alice.
fn refused_user(port: u16) -> Value {
    let mut client = Client::json(port);
    client.send_json(&json!({"code": 110, "username": "alice"}));
    client.recv_json()
}

#[test]
fn wrong_passwords_on_one_node_throttle_the_same_address_on_the_other() {
    let nats = Nats::start();
    let config = "auth = \"password\"\npassword_file = \"pw\"\n";
    let a = node_launch_with(&nats, "node-a", config)
        .file("pw", "sesame\n")
        .start();
    let b = node_launch_with(&nats, "node-b", config)
        .file("pw", "sesame\n")
        .start();
    // Three free failures, then the fourth blocks the address and name
    // for 1 s (`throttle::FREE_FAILURES`, `BASE_BLOCK_MS`), all on A.
    let mut on_a = None;
    for _ in 0..4 {
        let answer = guess(a.port(), &mut on_a);
        assert_eq!(answer["code"], 401, "{answer}");
    }
    // The next attempt from the same address on B is refused with the
    // wait a single node gives (A says the same).
    let expected = json!({"code": 429, "error": "too many failed logins; try again in 1 s"});
    assert_eq!(refused_user(b.port()), expected);
    assert_eq!(refused_user(a.port()), expected);
    // Once the block is over, one more failure on B doubles it, and A
    // refuses with the doubled wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut on_b = None;
    let answer = loop {
        let answer = guess(b.port(), &mut on_b);
        if answer["code"] != 429 {
            break answer;
        }
        assert!(Instant::now() < deadline, "still refused: {answer}");
        on_b = None;
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(answer["code"], 401, "{answer}");
    let doubled = json!({"code": 429, "error": "too many failed logins; try again in 2 s"});
    assert_eq!(refused_user(a.port()), doubled);
    assert_eq!(refused_user(b.port()), doubled);
    // The right password, once admitted, clears the name's records on
    // every node.
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut alice = loop {
        let mut client = Client::json(a.port());
        client.send_json(&json!({"code": 110, "username": "alice"}));
        if client.recv_json()["code"] == 211 {
            break client;
        }
        assert!(Instant::now() < deadline, "never admitted");
        std::thread::sleep(Duration::from_millis(100));
    };
    alice.send_json(&json!({"code": 111, "password": "sesame"}));
    alice.expect_code(202);
    let mut fresh = None;
    assert_eq!(guess(b.port(), &mut fresh)["code"], 401);
}
