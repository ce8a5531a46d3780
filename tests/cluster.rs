//! Cluster mode's bridge (issue 14) against a real `nats-server` with
//! JetStream, started per test on a free loopback port in a temporary
//! directory and killed when the test ends: two bridges ("nodes") on one
//! NATS agree on names, ids, order, history, presence and the login
//! throttle. The server comes from `tests/cluster/nats-server.sh` (which
//! `.ci/run` calls first) or `$RIFTD_NATS_SERVER`.

use crate::common::nats::Nats;
use mio::{Events, Poll, Token, Waker};
use riftd::cluster::{
    Bridge, BridgeOptions, Change, ClusterError, ClusterSettings, Event, HistoryRange,
    HistorySlice, Job, JobKind, JobResult, Member, Output, ThrottleKey,
};
use riftd::proto::{ChatMessage, RoomName, Username};
use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one answer or event may take.
const WAIT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node: a bridge and the poll its waker belongs to, as the loop
/// would hold them.
struct Node {
    poll: Poll,
    bridge: Bridge,
    next_ticket: u64,
    events: VecDeque<Event>,
}

fn options(history_keep: usize, name_ttl: Duration) -> BridgeOptions {
    let mut options = BridgeOptions::new(history_keep);
    options.name_ttl = name_ttl;
    options
}

impl Node {
    fn start(nats: &Nats, name: &str, options: BridgeOptions) -> Node {
        Node::try_start(&nats.url(), name, options).expect("the bridge starts")
    }

    fn try_start(url: &str, name: &str, options: BridgeOptions) -> Result<Node, ClusterError> {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let settings = ClusterSettings::plain(vec![url.to_owned()], name);
        let bridge = Bridge::start(settings, options, waker)?;
        Ok(Node {
            poll,
            bridge,
            next_ticket: 1,
            events: VecDeque::new(),
        })
    }

    /// Waits for the waker (bounded), then takes what arrived.
    fn take_outputs(&mut self, deadline: Instant) -> Vec<Output> {
        let mut events = Events::with_capacity(4);
        loop {
            let outputs: Vec<Output> = self.bridge.outputs().collect();
            if !outputs.is_empty() {
                return outputs;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "nothing from the bridge in time");
            self.poll
                .poll(&mut events, Some(left.min(Duration::from_millis(200))))
                .unwrap();
        }
    }

    /// Submits a job and waits for its answer; events meanwhile are kept.
    fn call(&mut self, kind: JobKind) -> JobResult {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.bridge
            .submit(Job { ticket, kind })
            .expect("the queue has room");
        let deadline = Instant::now() + WAIT;
        let mut answer = None;
        while answer.is_none() {
            for output in self.take_outputs(deadline) {
                match output {
                    Output::Done {
                        ticket: done,
                        result,
                    } if done == ticket => answer = Some(result),
                    Output::Done { ticket, .. } => panic!("an answer to ticket {ticket}"),
                    Output::Event(event) => self.events.push_back(event),
                }
            }
        }
        answer.unwrap()
    }

    /// The next event (bounded by `within`).
    fn event(&mut self, within: Duration) -> Event {
        let deadline = Instant::now() + within;
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            for output in self.take_outputs(deadline) {
                match output {
                    Output::Event(event) => self.events.push_back(event),
                    Output::Done { ticket, .. } => panic!("an answer to ticket {ticket}"),
                }
            }
        }
    }

    /// The next room message, skipping presence.
    fn message(&mut self) -> (ChatMessage, Option<u64>) {
        loop {
            if let Event::Message { message, previous } = self.event(WAIT) {
                return (message, previous);
            }
        }
    }

    fn claim(&mut self, name: &str) -> JobResult {
        self.call(JobKind::ClaimName { user: user(name) })
    }

    fn post(&mut self, room_name: &str, text: &str) -> ChatMessage {
        match self.call(JobKind::Post {
            room: room(room_name),
            from: user("alice"),
            text: text.to_owned(),
            ts: 1_700_000_000_000,
        }) {
            JobResult::Posted(message) => message,
            other => panic!("{other:?}"),
        }
    }

    fn history(&mut self, room_name: &str, range: HistoryRange, limit: usize) -> HistorySlice {
        match self.call(JobKind::History {
            room: room(room_name),
            range,
            limit,
        }) {
            JobResult::History(slice) => slice,
            other => panic!("{other:?}"),
        }
    }

    fn subscribe(&mut self, room_name: &str) {
        let answer = self.call(JobKind::Subscribe {
            room: room(room_name),
        });
        assert!(
            matches!(&answer, JobResult::Subscribed { room: subscribed, .. } if *subscribed == room(room_name)),
            "{answer:?}"
        );
    }
}

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn texts(slice: &HistorySlice) -> Vec<&str> {
    slice.messages.iter().map(|m| m.text.as_str()).collect()
}

#[test]
fn a_name_claimed_on_one_node_is_taken_on_another_whatever_its_case_until_released() {
    let nats = Nats::start();
    let mut one = Node::start(&nats, "one", options(100, Duration::from_secs(10)));
    let mut two = Node::start(&nats, "two", options(100, Duration::from_secs(10)));
    assert_eq!(one.claim("Alice"), JobResult::Claimed(user("Alice")));
    assert_eq!(two.claim("alice"), JobResult::Taken(user("alice")));
    assert_eq!(two.claim("ALICE"), JobResult::Taken(user("ALICE")));
    // Its holder may claim it again, in another spelling.
    assert_eq!(one.claim("ALICE"), JobResult::Claimed(user("ALICE")));
    // A rename frees the old name and holds the new one.
    let renamed = one.call(JobKind::Rename {
        old: user("ALICE"),
        new: user("Bob"),
    });
    assert_eq!(renamed, JobResult::Claimed(user("Bob")));
    assert_eq!(two.claim("alice"), JobResult::Claimed(user("alice")));
    let refused = one.call(JobKind::Rename {
        old: user("Bob"),
        new: user("Alice"),
    });
    assert_eq!(refused, JobResult::Taken(user("Alice")));
    assert_eq!(two.claim("bob"), JobResult::Taken(user("bob")));
    let released = one.call(JobKind::ReleaseName { user: user("BOB") });
    assert_eq!(released, JobResult::Released);
    assert_eq!(two.claim("bob"), JobResult::Claimed(user("bob")));
}

#[test]
fn two_nodes_racing_for_one_name_get_it_once() {
    let nats = Nats::start();
    let mut one = Node::start(&nats, "one", options(100, Duration::from_secs(10)));
    let mut two = Node::start(&nats, "two", options(100, Duration::from_secs(10)));
    for round in 0..20 {
        let name = format!("racer{round}");
        // Both jobs are queued before either answer is read.
        for (node, ticket) in [(&one, 1000 + round), (&two, 1000 + round)] {
            let kind = JobKind::ClaimName { user: user(&name) };
            node.bridge.submit(Job { ticket, kind }).unwrap();
        }
        let mut claimed = 0;
        for node in [&mut one, &mut two] {
            let deadline = Instant::now() + WAIT;
            let result = loop {
                let done = node
                    .take_outputs(deadline)
                    .into_iter()
                    .find_map(|o| match o {
                        Output::Done { result, .. } => Some(result),
                        Output::Event(_) => None,
                    });
                if let Some(result) = done {
                    break result;
                }
            };
            match result {
                JobResult::Claimed(_) => claimed += 1,
                JobResult::Taken(_) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(claimed, 1, "{name} was granted {claimed} times");
    }
}

#[test]
fn a_dead_nodes_names_and_memberships_expire_within_the_ttl_and_a_live_nodes_do_not() {
    let nats = Nats::start();
    let ttl = Duration::from_secs(2);
    let mut dead = Node::start(&nats, "dead", options(100, ttl));
    let mut live = Node::start(&nats, "live", options(100, ttl));
    let mut watcher = Node::start(&nats, "watcher", options(100, ttl));
    watcher.subscribe("den");
    assert_eq!(dead.claim("carol"), JobResult::Claimed(user("carol")));
    let joined = dead.call(JobKind::Join {
        room: room("den"),
        user: user("carol"),
    });
    assert_eq!(joined, JobResult::Done);
    assert_eq!(live.claim("dave"), JobResult::Claimed(user("dave")));
    match watcher.event(WAIT) {
        Event::Presence {
            user: who,
            node,
            change: Change::Joined,
            ..
        } => assert_eq!((who, node.as_str()), (user("carol"), "dead")),
        other => panic!("{other:?}"),
    }
    // As `kill -9`: the node stops refreshing and releases nothing.
    let died = Instant::now();
    drop(dead);
    assert_eq!(watcher.claim("carol"), JobResult::Taken(user("carol")));
    // Its member entry expires: the watcher sees carol leave.
    match watcher.event(ttl + Duration::from_secs(5)) {
        Event::Presence {
            user: who,
            change: Change::Left,
            ..
        } => assert_eq!(who.key(), user("carol").key()),
        other => panic!("{other:?}"),
    }
    let left_after = died.elapsed();
    loop {
        match watcher.claim("carol") {
            JobResult::Claimed(_) => break,
            JobResult::Taken(_) => {
                assert!(died.elapsed() < ttl + Duration::from_secs(3));
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("{other:?}"),
        }
    }
    let freed_after = died.elapsed();
    assert!(
        left_after <= ttl + Duration::from_secs(2) && freed_after <= ttl + Duration::from_secs(3),
        "left after {left_after:?}, freed after {freed_after:?} (ttl {ttl:?})"
    );
    // The live node refreshed its name all along.
    assert!(died.elapsed() > ttl);
    assert_eq!(watcher.claim("dave"), JobResult::Taken(user("dave")));
}

#[test]
fn room_messages_get_increasing_ids_and_reach_the_other_node_in_order() {
    let nats = Nats::start();
    let mut one = Node::start(&nats, "one", options(100, Duration::from_secs(10)));
    let mut two = Node::start(&nats, "two", options(100, Duration::from_secs(10)));
    two.subscribe("den");
    let mut sent = Vec::new();
    let mut last_id = 0;
    for n in 0..30 {
        let message = one.post("den", &format!("den {n}"));
        assert!(message.id > last_id, "{} after {last_id}", message.id);
        last_id = message.id;
        sent.push(message);
        // Other rooms and private messages share the id space.
        let elsewhere = one.post("lab", &format!("lab {n}"));
        assert!(elsewhere.id > last_id);
        let JobResult::DmId(dm) = two.call(JobKind::AllocateDmId) else {
            panic!("no DM id");
        };
        assert!(dm > elsewhere.id);
        last_id = dm;
    }
    let mut previous_id = None;
    for expected in &sent {
        let (message, previous) = two.message();
        assert_eq!(&message, expected);
        // The stream says which den message came before: no hole.
        assert_eq!(previous, previous_id, "message {}", message.id);
        previous_id = Some(message.id);
    }
    // Unsubscribed, the node gets no more of the room.
    let answer = two.call(JobKind::Unsubscribe { room: room("den") });
    assert_eq!(answer, JobResult::Unsubscribed(room("den")));
    one.post("den", "unheard");
    two.subscribe("lab");
    let heard = one.post("lab", "heard");
    assert_eq!(two.message().0, heard);
}

#[test]
fn history_after_an_id_and_the_last_messages_come_from_the_stream_on_another_node() {
    let nats = Nats::start();
    let keep = 5;
    let mut one = Node::start(&nats, "one", options(keep, Duration::from_secs(10)));
    let mut two = Node::start(&nats, "two", options(keep, Duration::from_secs(10)));
    let mut ids = Vec::new();
    for n in 1..=8 {
        ids.push(one.post("den", &format!("m{n}")).id);
        one.post("lab", &format!("other {n}"));
    }
    let last = two.history("den", HistoryRange::Last, 3);
    assert_eq!(texts(&last), ["m6", "m7", "m8"]);
    assert!(last.more && !last.gap);
    assert_eq!(last.messages[2].id, ids[7]);
    // The stream keeps history_keep per room.
    let all = two.history("den", HistoryRange::Last, 50);
    assert_eq!(texts(&all), ["m4", "m5", "m6", "m7", "m8"]);
    assert!(!all.more);
    let after = two.history("den", HistoryRange::After(ids[5]), 10);
    assert_eq!(texts(&after), ["m7", "m8"]);
    assert!(!after.more && !after.gap);
    let limited = two.history("den", HistoryRange::After(ids[3]), 2);
    assert_eq!(texts(&limited), ["m5", "m6"]);
    assert!(limited.more && !limited.gap);
    // m1..m3 are gone: asking after 0 says so.
    let trimmed = two.history("den", HistoryRange::After(0), 10);
    assert_eq!(texts(&trimmed), ["m4", "m5", "m6", "m7", "m8"]);
    assert!(trimmed.gap);
    let empty = two.history("nowhere", HistoryRange::Last, 10);
    assert!(empty.messages.is_empty() && !empty.gap && !empty.more);
}

#[test]
fn presence_and_membership_cross_nodes() {
    let nats = Nats::start();
    let mut one = Node::start(&nats, "one", options(100, Duration::from_secs(10)));
    let mut two = Node::start(&nats, "two", options(100, Duration::from_secs(10)));
    two.subscribe("den");
    for (node, name) in [(&mut one, "Alice"), (&mut two, "bob")] {
        let joined = node.call(JobKind::Join {
            room: room("den"),
            user: user(name),
        });
        assert_eq!(joined, JobResult::Done);
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Event::Presence {
            user, node, change, ..
        } = two.event(WAIT)
        {
            seen.push((user.as_str().to_owned(), node, change));
        }
    }
    assert_eq!(
        seen,
        [
            ("Alice".to_owned(), "one".to_owned(), Change::Joined),
            ("bob".to_owned(), "two".to_owned(), Change::Joined),
        ]
    );
    let members = one.call(JobKind::Members { room: room("den") });
    assert_eq!(
        members,
        JobResult::Members(vec![
            Member {
                user: user("Alice"),
                node: "one".into()
            },
            Member {
                user: user("bob"),
                node: "two".into()
            },
        ])
    );
    let parted = one.call(JobKind::Part {
        room: room("den"),
        user: user("Alice"),
    });
    assert_eq!(parted, JobResult::Done);
    match two.event(WAIT) {
        Event::Presence {
            user: who,
            change: Change::Left,
            ..
        } => assert_eq!(who.key(), user("alice").key()),
        other => panic!("{other:?}"),
    }
    let members = two.call(JobKind::Members { room: room("den") });
    assert_eq!(
        members,
        JobResult::Members(vec![Member {
            user: user("bob"),
            node: "two".into()
        }])
    );
}

#[test]
fn login_failures_count_across_nodes_until_cleared() {
    let nats = Nats::start();
    let mut one = Node::start(&nats, "one", options(100, Duration::from_secs(10)));
    let mut two = Node::start(&nats, "two", options(100, Duration::from_secs(10)));
    let address = "192.0.2.7".parse().unwrap();
    let name = user("Alice").key();
    let keys = vec![ThrottleKey::address(address), ThrottleKey::name(&name)];
    for (is_first, expected) in [(true, 1), (false, 2), (true, 3)] {
        let node = if is_first { &mut one } else { &mut two };
        let counted = node.call(JobKind::RecordFailures { keys: keys.clone() });
        let expected: Vec<_> = keys.iter().map(|key| (key.clone(), expected)).collect();
        assert_eq!(counted, JobResult::Failures(expected));
    }
    let other = ThrottleKey::address_and_name(address, &name);
    let read = two.call(JobKind::ReadFailures {
        keys: vec![keys[0].clone(), other.clone()],
    });
    assert_eq!(
        read,
        JobResult::Failures(vec![(keys[0].clone(), 3), (other, 0)])
    );
    let cleared = one.call(JobKind::ClearFailures { keys: keys.clone() });
    assert_eq!(cleared, JobResult::Done);
    let read = two.call(JobKind::ReadFailures { keys: keys.clone() });
    let zero: Vec<_> = keys.iter().map(|key| (key.clone(), 0)).collect();
    assert_eq!(read, JobResult::Failures(zero));
}

#[test]
fn without_a_reachable_nats_the_bridge_fails_to_start_within_its_bound() {
    let mut quick = options(100, Duration::from_secs(10));
    quick.connect_timeout = Duration::from_secs(2);
    let url = format!("nats://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let error = Node::try_start(&url, "lonely", quick)
        .err()
        .expect("nobody listens there");
    assert!(started.elapsed() < Duration::from_secs(5), "{error}");
    let text = error.to_string();
    assert!(text.contains("127.0.0.1"), "{text}");
}

#[test]
fn refused_cluster_settings_stop_riftd_with_exit_2_before_it_listens() {
    use crate::common::{Launch, assert_config_refused};
    for (config, needle) in [
        ("node_name = \"alone\"\n", "needs cluster_url"),
        ("cluster_url = \"http://127.0.0.1:4222\"\n", "cluster_url"),
        (
            "cluster_url = \"nats://127.0.0.1:4222\"\ncluster_user = \"riftd\"\n",
            "cluster_password_file",
        ),
        (
            "cluster_url = \"nats://127.0.0.1:4222\"\ncluster_token_file = \"token\"\n\
             cluster_credentials_file = \"node.creds\"\n",
            "at most one way",
        ),
    ] {
        let launch = Launch::new()
            .config(config)
            .file("token", "t0ken\n")
            .file("node.creds", "x\n");
        assert_config_refused(launch, needle);
    }
}

/// The cluster settings `Config::load` makes of `text`, written with its
/// files in `dir`.
fn cluster_settings(dir: &std::path::Path, text: &str) -> ClusterSettings {
    let path = dir.join("riftd.toml");
    std::fs::write(&path, text).unwrap();
    let config = riftd::config::Config::load(Some(&path), &Default::default()).unwrap();
    config.cluster().cloned().expect("cluster mode is on")
}

fn start_bridge(settings: ClusterSettings) -> Result<Bridge, ClusterError> {
    let poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
    let mut options = options(100, Duration::from_secs(10));
    options.connect_timeout = Duration::from_secs(3);
    Bridge::start(settings, options, waker)
}

#[test]
fn a_node_logs_in_to_nats_with_the_password_from_its_file_and_a_wrong_one_is_refused() {
    let nats = Nats::start_with(&["--user", "riftd", "--pass", "s3cret"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("right"), "s3cret\n").unwrap();
    std::fs::write(dir.path().join("wrong"), "guess\n").unwrap();
    let config = |file: &str| {
        format!(
            "cluster_url = \"{}\"\nnode_name = \"n1\"\ncluster_user = \"riftd\"\n\
             cluster_password_file = \"{file}\"\n",
            nats.url()
        )
    };
    let bridge = start_bridge(cluster_settings(dir.path(), &config("right"))).unwrap();
    assert_eq!(bridge.node_name(), "n1");
    drop(bridge);
    let started = Instant::now();
    let error = start_bridge(cluster_settings(dir.path(), &config("wrong")))
        .err()
        .expect("a wrong password is refused");
    assert!(started.elapsed() < Duration::from_secs(6), "{error}");
    let text = error.to_string().to_lowercase();
    assert!(text.contains("author"), "{text}");
    assert!(!text.contains("guess"), "{text}");
}

#[test]
fn a_node_reaches_nats_over_tls_with_the_ca_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let server = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("nats.pem");
    let key = dir.path().join("nats.key");
    std::fs::write(&cert, server.cert.pem()).unwrap();
    std::fs::write(&key, server.signing_key.serialize_pem()).unwrap();
    let nats = Nats::start_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let settings = cluster_settings(
        dir.path(),
        &format!("cluster_url = \"{url}\"\ncluster_tls_ca = \"nats.pem\"\n"),
    );
    let bridge = start_bridge(settings).expect("TLS with the configured CA");
    drop(bridge);
    // Without TLS settings, a plain connection to a TLS server fails.
    let plain = ClusterSettings::plain(vec![nats.url()], "plain");
    assert!(start_bridge(plain).is_err());
}

#[test]
fn a_private_message_reaches_the_node_holding_the_name_and_nobody_gets_404() {
    let nats = Nats::start();
    // Probes take ids too: only the first, at start, within this test.
    let mut quiet = options(100, Duration::from_secs(10));
    quiet.probe_interval = Duration::from_secs(3600);
    let mut one = Node::start(&nats, "one", quiet);
    let mut two = Node::start(&nats, "two", quiet);
    assert_eq!(two.claim("Bob"), JobResult::Claimed(user("Bob")));
    let before = one.post("den", "before").id;
    let sent = one.call(JobKind::SendDm {
        from: user("alice"),
        to: user("BOB"),
        text: "psst".into(),
        ts: 1_700_000_000_001,
    });
    let JobResult::DmSent { message, node } = sent else {
        panic!("{sent:?}");
    };
    assert_eq!(node, "two");
    assert!(
        message.id > before,
        "DM ids share the room messages' id space"
    );
    assert_eq!(message.target, riftd::proto::Target::User(user("Bob")));
    loop {
        if let Event::Direct(received) = two.event(WAIT) {
            assert_eq!(received, message);
            break;
        }
    }
    let nobody = one.call(JobKind::SendDm {
        from: user("alice"),
        to: user("nobody"),
        text: "hello?".into(),
        ts: 1_700_000_000_002,
    });
    assert_eq!(nobody, JobResult::NoSuchUser(user("nobody")));
    // A refused DM spends no id.
    let JobResult::DmId(next) = one.call(JobKind::AllocateDmId) else {
        panic!("no DM id");
    };
    assert_eq!(next, message.id + 1);
}

/// Turns the stream's republishing off or on again, as an operator editing
/// `RIFTD_CHAT` by hand would: stored messages then stop reaching every
/// node's live subscriptions, silently (the connection stays up).
fn set_republish(nats: &Nats, on: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        let mut stream = jetstream.get_stream(riftd::cluster::STREAM).await.unwrap();
        let mut config = stream.info().await.unwrap().config.clone();
        config.republish = on.then(|| async_nats::jetstream::stream::Republish {
            source: format!("{}.*", riftd::cluster::ROOM_PREFIX),
            destination: format!("{}.{{{{wildcard(1)}}}}", riftd::cluster::LIVE_PREFIX),
            headers_only: false,
        });
        jetstream.update_stream(config).await.unwrap();
    });
}

#[test]
fn a_node_whose_delivery_path_breaks_silently_pauses_and_resumes_when_it_heals() {
    let nats = Nats::start();
    let mut options = options(100, Duration::from_secs(10));
    options.probe_interval = Duration::from_millis(300);
    let mut node = Node::start(&nats, "node-a", options);
    node.subscribe("den");
    // The connection stays up; only the stream's republishing stops.
    set_republish(&nats, false);
    let broken = Instant::now();
    let event = node.event(WAIT);
    assert!(matches!(event, Event::Disconnected), "{event:?}");
    let noticed = broken.elapsed();
    // While it is down, what needs NATS fails at once (the hub says 503).
    assert!(matches!(
        node.call(JobKind::Post {
            room: room("den"),
            from: user("alice"),
            text: "refused".into(),
            ts: 1_700_000_000_000,
        }),
        JobResult::Failed(_)
    ));
    set_republish(&nats, true);
    loop {
        match node.event(WAIT) {
            Event::Reconnected => break,
            Event::Message { .. } | Event::Presence { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // Noticed within two probe intervals (plus this machine's scheduling).
    assert!(
        noticed < Duration::from_secs(3),
        "a broken path took {noticed:?} to notice"
    );
    // Healed: a message goes out and comes back live again.
    let posted = node.post("den", "after the repair");
    assert_eq!(node.message().0, posted);
}
