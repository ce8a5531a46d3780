//! Cluster mode of the sans-IO hub (issue 14): requests leave as jobs, the
//! answers and events are handed back by hand, as the bridge would.

use super::*;
use crate::cluster::{Change, Event, HistoryRange, Job, JobKind, JobResult, Member, Output};

const NODE: &str = "node-a";

fn clustered() -> Chat {
    let mut chat = Chat::open();
    chat.hub.enable_cluster(NODE);
    chat
}

impl Chat {
    fn jobs(&mut self) -> Vec<Job> {
        self.hub.drain_cluster_jobs()
    }

    fn answer(&mut self, ticket: u64, result: JobResult) {
        self.hub
            .handle_cluster(Output::Done { ticket, result }, self.now);
        self.hub.end_turn();
    }

    fn event(&mut self, event: Event) {
        self.hub.handle_cluster(Output::Event(event), self.now);
        self.hub.end_turn();
    }

    /// Logs `name` in through the cluster and subscribes the lobby if it
    /// is the node's first member there; its own output is read.
    fn cluster_login(&mut self, name: &str) -> ConnId {
        let conn = self.connect();
        self.send_json(conn, json!({"code": 110, "username": name}));
        let jobs = self.jobs();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].kind, JobKind::ClaimName { user: user(name) });
        self.answer(jobs[0].ticket, JobResult::Claimed(user(name)));
        for job in self.jobs() {
            if let JobKind::Subscribe { room } = job.kind {
                self.answer(job.ticket, JobResult::Subscribed { room, last: 0 });
            }
        }
        // Members, Join: nobody waits for them here.
        self.jobs();
        assert_eq!(self.codes(conn), vec![210, 202, 201], "login of {name}");
        conn
    }
}

#[test]
fn a_login_waits_for_the_cluster_claim_and_the_room_for_its_subscription() {
    let mut chat = clustered();
    let alice = chat.connect();
    chat.send_json(
        alice,
        json!({"code": 110, "username": "alice", "ref": "r1"}),
    );
    assert_eq!(chat.codes(alice), vec![210], "nothing before the claim");
    let claim = chat.jobs().remove(0);
    chat.answer(claim.ticket, JobResult::Claimed(user("alice")));
    assert_eq!(
        chat.received(alice),
        vec![json!({"code": 202, "new": "alice", "ref": "r1"})]
    );
    let subscribe = chat.jobs().remove(0);
    assert_eq!(subscribe.kind, JobKind::Subscribe { room: room(LOBBY) });
    chat.answer(
        subscribe.ticket,
        JobResult::Subscribed {
            room: room(LOBBY),
            last: 0,
        },
    );
    assert_eq!(chat.received(alice), vec![joined("alice", LOBBY)]);
    let kinds: Vec<JobKind> = chat.jobs().into_iter().map(|job| job.kind).collect();
    assert_eq!(
        kinds,
        vec![
            JobKind::Members { room: room(LOBBY) },
            JobKind::Join {
                room: room(LOBBY),
                user: user("alice")
            },
        ]
    );
}

#[test]
fn a_name_taken_elsewhere_is_409_and_one_node_never_claims_a_name_twice() {
    let mut chat = clustered();
    let (one, two) = (chat.connect(), chat.connect());
    chat.clear_all();
    chat.send_json(one, json!({"code": 110, "username": "carol"}));
    chat.send_json(two, json!({"code": 110, "username": "CAROL"}));
    chat.expect_error(two, 409, "taken");
    let jobs = chat.jobs();
    assert_eq!(jobs.len(), 1, "one claim leaves: {jobs:?}");
    // A second USER while the claim is under way is refused.
    chat.send_json(one, json!({"code": 110, "username": "dave"}));
    chat.expect_error(one, 429, "under way");
    chat.answer(jobs[0].ticket, JobResult::Taken(user("carol")));
    chat.expect_error(one, 409, "carol");
    assert_eq!(chat.state_of(one), Some(State::UserAuth));
}

#[test]
fn a_claim_granted_after_its_connection_left_is_released() {
    let mut chat = clustered();
    let gone = chat.connect();
    chat.send_json(gone, json!({"code": 110, "username": "erin"}));
    let claim = chat.jobs().remove(0);
    chat.hub.handle_closed(gone);
    chat.answer(claim.ticket, JobResult::Claimed(user("erin")));
    let kinds: Vec<JobKind> = chat.jobs().into_iter().map(|job| job.kind).collect();
    assert_eq!(kinds, vec![JobKind::ReleaseName { user: user("erin") }]);
}

#[test]
fn say_is_delivered_from_the_stream_event_only_and_a_failure_is_503() {
    let mut chat = clustered();
    let alice = chat.cluster_login("alice");
    chat.send_json(alice, say("hi"));
    let post = chat.jobs().remove(0);
    assert!(matches!(post.kind, JobKind::Post { .. }), "{post:?}");
    chat.answer(
        post.ticket,
        JobResult::Posted(ChatMessage {
            id: 7,
            ts: TS,
            target: Target::Room(room(LOBBY)),
            from: user("alice"),
            text: "hi".into(),
        }),
    );
    assert!(chat.received(alice).is_empty(), "not from the answer");
    let message = ChatMessage {
        id: 7,
        ts: TS,
        target: Target::Room(room(LOBBY)),
        from: user("alice"),
        text: "hi".into(),
    };
    chat.event(Event::Message {
        message,
        previous: None,
    });
    assert_eq!(
        chat.received(alice),
        vec![room_message(7, TS, LOBBY, "alice", "hi")]
    );
    chat.send_json(alice, json!({"code": 100, "message": "again", "ref": "s2"}));
    let post = chat.jobs().remove(0);
    chat.answer(post.ticket, JobResult::Failed("timed out".into()));
    let refused = chat.received(alice);
    assert_eq!(
        (refused[0]["code"].clone(), refused[0]["ref"].clone()),
        (json!(503), json!("s2"))
    );
    // A full queue is refused the same way, and the session goes on.
    chat.send_json(alice, say("third"));
    let post = chat.jobs().remove(0);
    chat.hub.handle_cluster_busy(post.ticket, chat.now);
    chat.expect_error(alice, 503, "cluster");
    assert_eq!(chat.state_of(alice), Some(broadcast("alice")));
}

#[test]
fn another_nodes_joins_and_leaves_are_announced_and_this_nodes_events_ignored() {
    let mut chat = clustered();
    let alice = chat.cluster_login("alice");
    let presence = |name: &str, node: &str, change| Event::Presence {
        room: room(LOBBY),
        user: user(name),
        node: node.to_owned(),
        change,
    };
    chat.event(presence("alice", NODE, Change::Joined));
    assert!(chat.received(alice).is_empty());
    chat.event(presence("bob", "node-b", Change::Joined));
    chat.event(presence("bob", "node-b", Change::Joined));
    assert_eq!(chat.received(alice), vec![joined("bob", LOBBY)]);
    // An expiry names the key only; the 204 spells it as it joined.
    chat.event(Event::Presence {
        room: room(LOBBY),
        user: user("bob"),
        node: String::new(),
        change: Change::Left,
    });
    assert_eq!(chat.received(alice), vec![left_room("bob", LOBBY)]);
    chat.event(presence("bob", "", Change::Left));
    assert!(chat.received(alice).is_empty(), "once");
}

#[test]
fn dms_go_through_the_cluster_and_who_lists_every_node() {
    let mut chat = clustered();
    let alice = chat.cluster_login("alice");
    chat.send_json(alice, dm("nobody", "hello?"));
    let job = chat.jobs().remove(0);
    chat.answer(job.ticket, JobResult::NoSuchUser(user("nobody")));
    chat.expect_error(alice, 404, "nobody");
    // A DM from another node reaches its local holder.
    let private = ChatMessage {
        id: 9,
        ts: TS,
        target: Target::User(user("alice")),
        from: user("bob"),
        text: "psst".into(),
    };
    chat.event(Event::Direct(private));
    assert_eq!(
        chat.received(alice),
        vec![direct_message(9, TS, "alice", "bob", "psst")]
    );
    chat.send_json(alice, json!({"code": 103}));
    let who = chat.jobs().remove(0);
    assert_eq!(who.kind, JobKind::Members { room: room(LOBBY) });
    let member = |name: &str, node: &str| Member {
        user: user(name),
        node: node.to_owned(),
    };
    chat.answer(
        who.ticket,
        JobResult::Members(vec![member("alice", NODE), member("bob", "node-b")]),
    );
    let frames = chat.received(alice);
    assert_eq!(frames[0]["users"], json!(["alice", "bob"]));
}

#[test]
fn rooms_lists_every_nodes_rooms_and_the_default_room_even_when_empty() {
    let mut chat = clustered();
    let alice = chat.cluster_login("alice");
    chat.send_json(alice, json!({"code": 107, "ref": "all"}));
    let job = chat.jobs().remove(0);
    assert_eq!(job.kind, JobKind::Rooms);
    chat.answer(job.ticket, JobResult::Rooms(vec![(room("den"), 3)]));
    let frames = chat.received(alice);
    assert_eq!(
        (frames[0]["rooms"].clone(), frames[0]["ref"].clone()),
        (
            json!([{"name": "den", "users": 3}, {"name": "lobby", "users": 0}]),
            json!("all")
        )
    );
}

fn lobby_message(id: u64, text: &str) -> ChatMessage {
    ChatMessage {
        id,
        ts: TS,
        target: Target::Room(room(LOBBY)),
        from: user("bob"),
        text: text.into(),
    }
}

#[test]
fn a_joiner_gets_its_backlog_first_and_no_message_twice() {
    let mut chat = clustered();
    chat.hub.set_config(HubConfig {
        history_backlog: Some(10),
        ..test_config()
    });
    let alice = chat.connect();
    chat.send_json(alice, json!({"code": 110, "username": "alice"}));
    let claim = chat.jobs().remove(0);
    chat.answer(claim.ticket, JobResult::Claimed(user("alice")));
    let subscribe = chat.jobs().remove(0);
    chat.answer(
        subscribe.ticket,
        JobResult::Subscribed {
            room: room(LOBBY),
            last: 0,
        },
    );
    assert_eq!(chat.codes(alice), vec![210, 202, 201]);
    let backlog = chat
        .jobs()
        .into_iter()
        .find(|job| matches!(job.kind, JobKind::History { .. }))
        .expect("the backlog is read");
    // Stored while the backlog is read: one is in it, one is newer.
    let live = |id, text| Event::Message {
        message: lobby_message(id, text),
        previous: None,
    };
    chat.event(live(5, "in the backlog"));
    chat.event(live(6, "newer"));
    assert!(chat.received(alice).is_empty(), "held until the backlog");
    chat.answer(
        backlog.ticket,
        JobResult::History(crate::cluster::HistorySlice {
            messages: vec![lobby_message(4, "old"), lobby_message(5, "in the backlog")],
            more: false,
            gap: false,
        }),
    );
    let frames = chat.received(alice);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["code"], 208);
    assert_eq!(frames[0]["messages"][1]["id"], 5);
    assert_eq!(frames[0]["messages"][0]["id"], 4);
    assert_eq!(frames[1], room_message(6, TS, LOBBY, "bob", "newer"));
    chat.event(live(7, "live"));
    assert_eq!(
        chat.received(alice),
        vec![room_message(7, TS, LOBBY, "bob", "live")]
    );
}

#[test]
fn a_login_and_a_join_hold_the_connections_input_until_the_cluster_decides() {
    let mut chat = clustered();
    chat.hub.set_config(HubConfig {
        history_backlog: Some(10),
        ..test_config()
    });
    let empty = || {
        JobResult::History(crate::cluster::HistorySlice {
            messages: Vec::new(),
            more: false,
            gap: false,
        })
    };
    let alice = chat.connect();
    assert!(!chat.hub.is_waiting(alice));
    chat.send_json(alice, json!({"code": 110, "username": "alice"}));
    assert!(chat.hub.is_waiting(alice), "the claim is under way");
    let claim = chat.jobs().remove(0);
    chat.answer(claim.ticket, JobResult::Claimed(user("alice")));
    assert!(chat.hub.is_waiting(alice), "the lobby is not entered yet");
    let subscribe = chat.jobs().remove(0);
    chat.answer(
        subscribe.ticket,
        JobResult::Subscribed {
            room: room(LOBBY),
            last: 0,
        },
    );
    assert!(
        chat.hub.is_waiting(alice),
        "the lobby's backlog is not read yet"
    );
    let history = |chat: &mut Chat| {
        chat.jobs()
            .into_iter()
            .find(|job| matches!(job.kind, JobKind::History { .. }))
            .expect("the backlog is read")
    };
    let backlog = history(&mut chat);
    chat.answer(backlog.ticket, empty());
    assert!(!chat.hub.is_waiting(alice), "logged in, with the backlog");
    let mut resumed = Vec::new();
    chat.hub.take_resumed(&mut resumed);
    assert!(resumed.contains(&alice), "{resumed:?}");

    // A JOIN holds it again, and a failed backlog read ends the wait too.
    chat.send_json(alice, join("den"));
    assert!(chat.hub.is_waiting(alice), "den is not subscribed yet");
    let subscribe = chat.jobs().remove(0);
    chat.answer(
        subscribe.ticket,
        JobResult::Subscribed {
            room: room("den"),
            last: 0,
        },
    );
    assert!(chat.hub.is_waiting(alice), "den's backlog is not read yet");
    let backlog = history(&mut chat);
    chat.answer(backlog.ticket, JobResult::Failed("timed out".into()));
    assert!(!chat.hub.is_waiting(alice));

    // A room that cannot be subscribed ends the wait with a 503.
    chat.received(alice);
    chat.send_json(alice, join("attic"));
    assert!(chat.hub.is_waiting(alice));
    let subscribe = chat.jobs().remove(0);
    chat.answer(subscribe.ticket, JobResult::Failed("no NATS".into()));
    assert!(!chat.hub.is_waiting(alice));
    assert!(chat.codes(alice).contains(&503));
}

/// The jobs queued, as kinds.
fn kinds(jobs: &[Job]) -> Vec<JobKind> {
    jobs.iter().map(|job| job.kind.clone()).collect()
}

fn live(id: u64, previous: Option<u64>, text: &str) -> Event {
    Event::Message {
        message: lobby_message(id, text),
        previous,
    }
}

fn backfill_of(after: u64) -> JobKind {
    JobKind::History {
        room: room(LOBBY),
        range: HistoryRange::After(after),
        limit: crate::history::MAX_HISTORY_REPLY,
    }
}

fn slice(messages: Vec<ChatMessage>, more: bool) -> JobResult {
    JobResult::History(crate::cluster::HistorySlice {
        messages,
        more,
        gap: false,
    })
}

#[test]
fn a_lost_link_pauses_every_session_and_refuses_at_once_until_every_room_caught_up() {
    let mut chat = clustered();
    let alice = chat.cluster_login("alice");
    let waiting = chat.connect();
    chat.clear_all();
    chat.event(Event::Disconnected);
    assert_eq!(chat.received(alice), vec![json!({"code": 213})]);
    assert!(chat.received(waiting).is_empty(), "not logged in");
    // Whatever needs the cluster is refused at once, without a job.
    for request in [
        json!({"code": 100, "message": "hi", "ref": "s"}),
        dm("bob", "psst"),
        join("den"),
        json!({"code": 103}),
        json!({"code": 107}),
        rename("alice2"),
    ] {
        chat.send_json(alice, request.clone());
        let refused = chat.received(alice);
        assert_eq!(refused.len(), 1, "{request}: {refused:?}");
        assert_eq!(refused[0]["code"], 503, "{request}: {refused:?}");
        assert!(
            refused[0]["error"].as_str().unwrap().contains("paused"),
            "{refused:?}"
        );
    }
    chat.send_json(waiting, json!({"code": 110, "username": "carol"}));
    chat.expect_error(waiting, 503, "paused");
    assert!(chat.jobs().is_empty(), "nothing asked of the cluster");
    assert_eq!(chat.state_of(alice), Some(broadcast("alice")));
    assert_eq!(
        chat.hub.clients.get(alice).unwrap().rooms,
        vec![room(LOBBY)]
    );
    chat.send_json(alice, json!({"code": 108, "token": 1}));
    assert_eq!(chat.received(alice), vec![json!({"code": 207, "token": 1})]);
    // A second loss before the link is back says nothing more.
    chat.event(Event::Disconnected);
    assert!(chat.received(alice).is_empty());

    // Back: the room is read from the last id delivered (none yet: the
    // room's newest at subscription, 0), its roster read again.
    chat.event(Event::Reconnected);
    let jobs = chat.jobs();
    assert_eq!(
        kinds(&jobs),
        vec![backfill_of(0), JobKind::Members { room: room(LOBBY) }]
    );
    chat.send_json(alice, say("too soon"));
    chat.expect_error(alice, 503, "paused");
    // Stored meanwhile: delivered once, in order, then 214.
    chat.event(live(4, Some(3), "live, behind the backfill"));
    assert!(chat.received(alice).is_empty(), "held behind the backfill");
    chat.answer(
        jobs[0].ticket,
        slice(
            vec![lobby_message(2, "one"), lobby_message(3, "two")],
            false,
        ),
    );
    assert_eq!(
        chat.received(alice),
        vec![
            room_message(2, TS, LOBBY, "bob", "one"),
            room_message(3, TS, LOBBY, "bob", "two"),
            room_message(4, TS, LOBBY, "bob", "live, behind the backfill"),
            json!({"code": 214}),
        ]
    );
    chat.send_json(alice, say("now"));
    assert!(matches!(chat.jobs()[0].kind, JobKind::Post { .. }));
}

#[test]
fn a_hole_in_a_rooms_live_order_is_backfilled_and_no_message_is_delivered_twice() {
    let mut chat = clustered();
    let alice = chat.connect();
    chat.send_json(alice, json!({"code": 110, "username": "alice"}));
    let claim = chat.jobs().remove(0);
    chat.answer(claim.ticket, JobResult::Claimed(user("alice")));
    let subscribe = chat.jobs().remove(0);
    // The lobby's newest message when this node subscribed was 4.
    chat.answer(
        subscribe.ticket,
        JobResult::Subscribed {
            room: room(LOBBY),
            last: 4,
        },
    );
    chat.jobs();
    chat.clear_all();
    chat.event(live(6, Some(4), "next"));
    chat.event(live(6, Some(4), "next"));
    assert_eq!(
        chat.received(alice),
        vec![room_message(6, TS, LOBBY, "bob", "next")],
        "once"
    );
    // 8 and 9 never arrived (a slow consumer's drop): 10 names 9.
    chat.event(live(10, Some(9), "after the hole"));
    let jobs = chat.jobs();
    assert_eq!(kinds(&jobs), vec![backfill_of(6)]);
    chat.event(live(11, Some(10), "held"));
    assert!(chat.received(alice).is_empty(), "held behind the backfill");
    // A room that missed more than one read is read again from there.
    chat.answer(jobs[0].ticket, slice(vec![lobby_message(8, "eight")], true));
    let again = chat.jobs();
    assert_eq!(kinds(&again), vec![backfill_of(8)]);
    chat.answer(
        again[0].ticket,
        slice(
            vec![
                lobby_message(9, "nine"),
                lobby_message(10, "after the hole"),
            ],
            false,
        ),
    );
    assert_eq!(
        message_ids(&chat.received(alice)),
        vec![8, 9, 10, 11],
        "in order, each once"
    );
    chat.event(live(11, Some(10), "held"));
    chat.event(live(12, Some(11), "live again"));
    assert_eq!(message_ids(&chat.received(alice)), vec![12]);
    assert!(chat.jobs().is_empty());
}

#[test]
fn a_part_or_quit_while_paused_is_done_locally_and_handed_to_the_bridge() {
    let mut chat = clustered();
    let alice = chat.cluster_login("alice");
    let bob = chat.cluster_login("bob");
    chat.clear_all();
    chat.event(Event::Disconnected);
    chat.clear_all();
    chat.send_json(alice, part(LOBBY));
    assert_eq!(chat.received(alice), vec![left_room("alice", LOBBY)]);
    assert_eq!(chat.received(bob), vec![left_room("alice", LOBBY)]);
    assert_eq!(
        kinds(&chat.jobs()),
        vec![JobKind::Part {
            room: room(LOBBY),
            user: user("alice")
        }]
    );
    chat.send_json(bob, json!({"code": 109}));
    assert!(chat.is_leaving(bob));
    assert_eq!(
        kinds(&chat.jobs()),
        vec![
            JobKind::ReleaseName { user: user("bob") },
            JobKind::Part {
                room: room(LOBBY),
                user: user("bob")
            },
            JobKind::Unsubscribe { room: room(LOBBY) },
        ]
    );
    // No room left to catch up: chat resumes as soon as the link is back.
    chat.event(Event::Reconnected);
    assert_eq!(chat.received(alice), vec![json!({"code": 214})]);
}

#[test]
fn a_name_another_node_took_during_an_outage_is_told_with_409_and_its_session_closes() {
    let mut chat = clustered();
    let alice = chat.cluster_login("alice");
    chat.event(Event::NameLost(user("alice")));
    let frames = chat.received(alice);
    assert_eq!(frames[0]["code"], 409, "{frames:?}");
    assert!(
        frames[0]["error"]
            .as_str()
            .unwrap()
            .contains("claimed on another server"),
        "{frames:?}"
    );
    assert!(chat.is_leaving(alice));
}

#[test]
fn text_sessions_read_the_pause_and_the_resumption_as_lines() {
    let mut chat = clustered();
    let alice = chat.connect();
    chat.send(alice, "alice");
    let claim = chat.jobs().remove(0);
    chat.answer(claim.ticket, JobResult::Claimed(user("alice")));
    for job in chat.jobs() {
        if let JobKind::Subscribe { room } = job.kind {
            chat.answer(job.ticket, JobResult::Subscribed { room, last: 0 });
        }
    }
    chat.jobs();
    chat.received_text(alice);
    chat.event(Event::Disconnected);
    let paused = chat.received_text(alice);
    assert!(paused[0].starts_with("* chat paused: "), "{paused:?}");
    chat.send(alice, "hello?");
    let refused = chat.received_text(alice);
    assert!(refused[0].ends_with("(503)"), "{refused:?}");
    chat.event(Event::Reconnected);
    let backfill = chat.jobs().remove(0);
    chat.answer(backfill.ticket, slice(Vec::new(), false));
    assert_eq!(chat.received_text(alice), vec!["* chat resumed"]);
}

#[test]
fn a_backfill_asked_before_the_link_dropped_does_not_end_the_one_after_it() {
    let mut chat = clustered();
    let alice = chat.cluster_login("alice");
    chat.event(live(3, Some(1), "after a hole"));
    let before = chat.jobs();
    assert_eq!(kinds(&before), vec![backfill_of(0)]);
    chat.event(Event::Disconnected);
    chat.event(Event::Reconnected);
    let after = chat.jobs();
    assert_eq!(
        kinds(&after),
        vec![backfill_of(0), JobKind::Members { room: room(LOBBY) }]
    );
    chat.clear_all();
    // The first read, done before the outage, knows only 1 (and 3).
    chat.answer(
        before[0].ticket,
        slice(
            vec![lobby_message(1, "one"), lobby_message(3, "after a hole")],
            false,
        ),
    );
    assert_eq!(message_ids(&chat.received(alice)), vec![1, 3], "no 214 yet");
    chat.answer(
        after[0].ticket,
        slice(
            vec![
                lobby_message(1, "one"),
                lobby_message(3, "after a hole"),
                lobby_message(5, "during the outage"),
            ],
            false,
        ),
    );
    assert_eq!(
        chat.received(alice),
        vec![
            room_message(5, TS, LOBBY, "bob", "during the outage"),
            json!({"code": 214}),
        ]
    );
}
