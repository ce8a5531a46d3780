//! Hub tests: Random traffic against the hub's invariants (proptest).

use super::*;

// Random traffic.

/// What one step of random traffic does.
#[derive(Debug, Clone)]
enum Step {
    Line { slot: usize, line: String },
    CodecError { slot: usize, is_too_long: bool },
    Eof { slot: usize },
    Close { slot: usize },
    Connect { slot: usize },
    Drain,
}

const SLOTS: usize = 6;

fn any_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "alice", "Alice", "ALICE", "bob", "Bob", "carol", "dave", "server", "bad name", "",
    ])
    .prop_map(str::to_owned)
}

fn any_room() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "lobby", "#Lobby", "side", "#side", "Other", "x y", "", "#",
    ])
    .prop_map(str::to_owned)
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,12}",
        Just("\u{1b}[2J".to_owned()),
        Just(" ".to_owned()),
        "\\PC{0,8}",
    ]
}

fn any_json_frame() -> impl Strategy<Value = String> {
    prop_oneof![
        any_name().prop_map(|name| json!({"code": 110, "username": name})),
        prop::sample::select(vec![SECRET, "nope", ""])
            .prop_map(|password| json!({"code": 111, "password": password})),
        (any_text(), prop::option::of(any_room())).prop_map(|(text, room)| match room {
            Some(room) => say_in(&room, &text),
            None => say(&text),
        }),
        any_name().prop_map(|name| rename(&name)),
        (any_name(), any_text()).prop_map(|(to, text)| dm(&to, &text)),
        prop::option::of(any_room()).prop_map(|room| match room {
            Some(room) => json!({"code": 103, "room": room}),
            None => json!({"code": 103}),
        }),
        any_room().prop_map(|room| join(&room)),
        any_room().prop_map(|room| part(&room)),
        Just(json!({"code": 107})),
        prop_oneof![Just(json!(null)), Just(json!("t")), Just(json!({"n": [1]}))]
            .prop_map(|token| json!({"code": 108, "token": token})),
        Just(json!({"code": 109})),
        (0u64..1000).prop_map(|code| json!({"code": code})),
    ]
    .prop_map(|frame| frame.to_string())
}

fn any_text_line() -> impl Strategy<Value = String> {
    prop_oneof![
        any_name(),
        Just(SECRET.to_owned()),
        any_text(),
        any_name().prop_map(|name| format!("/nick {name}")),
        (any_name(), any_text()).prop_map(|(name, text)| format!("/msg {name} {text}")),
        any_room().prop_map(|room| format!("/join {room}")),
        any_room().prop_map(|room| format!("/part {room}")),
        prop::sample::select(vec![
            "/part",
            "/who",
            "/who side",
            "/rooms",
            "/me waves",
            "/quit",
            "/help",
            "//slash",
            "/ping",
            "/bogus",
            "/msg",
            "/me",
        ])
        .prop_map(str::to_owned),
    ]
}

fn any_garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\{[ -~]{0,20}",
        Just("GET / HTTP/1.1".to_owned()),
        Just(r#"{"code":110,"username":"a","x":1}"#.to_owned()),
        Just(format!("{{\"code\":108,\"token\":{}}}", "[".repeat(200))),
    ]
}

fn any_step() -> impl Strategy<Value = Step> {
    let slot = 0..SLOTS;
    prop_oneof![
        8 => (slot.clone(), any_json_frame()).prop_map(|(slot, line)| Step::Line { slot, line }),
        6 => (slot.clone(), any_text_line()).prop_map(|(slot, line)| Step::Line { slot, line }),
        2 => (slot.clone(), any_garbage()).prop_map(|(slot, line)| Step::Line { slot, line }),
        1 => (slot.clone(), any::<bool>())
            .prop_map(|(slot, is_too_long)| Step::CodecError { slot, is_too_long }),
        1 => slot.clone().prop_map(|slot| Step::Eof { slot }),
        1 => slot.clone().prop_map(|slot| Step::Close { slot }),
        2 => slot.prop_map(|slot| Step::Connect { slot }),
        1 => Just(Step::Drain),
    ]
}

/// The names held by live connections: logged-in ones only (a name
/// waiting in PASS AUTH is not held).
fn held_names(hub: &Hub, connected: &[bool]) -> Vec<Username> {
    (0..connected.len())
        .filter_map(|slot| hub.state(ConnId(slot))?.username().cloned())
        .collect()
}

fn run_random_traffic(is_password: bool, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut chat = if is_password {
        Chat::with_password()
    } else {
        Chat::open()
    };
    chat.next_conn = SLOTS;
    let peer = SocketAddr::from(([192, 0, 2, 1], 4_000));
    let mut connected = [false; SLOTS];
    for (index, step) in steps.into_iter().enumerate() {
        chat.now = Now {
            unix_ms: TS + index as u64,
            mono_ms: index as u64,
        };
        match step {
            Step::Line { slot, line } => {
                let conn = ConnId(slot);
                let was_quitting = chat.is_leaving(conn);
                let owed_before = chat
                    .hub
                    .outbox_mut(conn)
                    .map(|outbox| outbox.pending_bytes());
                chat.send(conn, &line);
                if was_quitting {
                    prop_assert_eq!(chat.state_of(conn), Some(State::Quit));
                    let owed_after = chat
                        .hub
                        .outbox_mut(conn)
                        .map(|outbox| outbox.pending_bytes());
                    prop_assert_eq!(owed_before, owed_after, "a quitting session answered");
                }
            }
            Step::CodecError { slot, is_too_long } => {
                let error = if is_too_long {
                    CodecError::TooLong { max: 8192 }
                } else {
                    CodecError::InvalidUtf8
                };
                chat.hub.handle_codec_error(ConnId(slot), error);
            }
            Step::Eof { slot } => {
                chat.hub.handle_eof(ConnId(slot));
            }
            Step::Close { slot } => {
                chat.hub.handle_closed(ConnId(slot));
                connected[slot] = false;
            }
            Step::Connect { slot } => {
                if !connected[slot] {
                    chat.hub
                        .handle_connected(ConnId(slot), peer, Wire::Plain, Now::default());
                    connected[slot] = true;
                }
            }
            Step::Drain => {
                let mut dirty = Vec::new();
                chat.hub.drain_dirty(&mut dirty);
                for conn in dirty {
                    chat.raw(conn);
                }
            }
        }
        for (slot, &is_connected) in connected.iter().enumerate() {
            if !is_connected {
                prop_assert_eq!(chat.hub.state(ConnId(slot)), None);
            }
        }
        prop_assert_eq!(
            chat.hub.connection_count(),
            connected
                .iter()
                .filter(|&&is_connected| is_connected)
                .count()
        );
        let mut keys: Vec<NameKey> = held_names(&chat.hub, &connected)
            .iter()
            .map(Username::key)
            .collect();
        let held = keys.len();
        keys.sort();
        keys.dedup();
        prop_assert_eq!(keys.len(), held, "a name is held twice");
    }

    // Every held name is refused to a newcomer, in another case too.
    let held = held_names(&chat.hub, &connected);
    let probe = chat.connect();
    chat.received(probe);
    for name in &held {
        chat.send_json(
            probe,
            json!({"code": 110, "username": name.as_str().to_ascii_uppercase()}),
        );
        prop_assert_eq!(chat.codes(probe), vec![409], "{} is held", name);
    }
    chat.send_json(probe, json!({"code": 110, "username": "probe"}));
    if is_password {
        chat.send_json(probe, json!({"code": 111, "password": SECRET}));
    }
    chat.received(probe);
    prop_assert_eq!(chat.state_of(probe), Some(broadcast("probe")));

    // ROOMS and WHO agree with each other and list only live, logged-in users.
    let logged_in: Vec<String> = (0..chat.next_conn)
        .filter_map(|slot| chat.hub.state(ConnId(slot))?.username().cloned())
        .map(|username| username.as_str().to_owned())
        .collect();
    chat.send_json(probe, json!({"code": 107}));
    let listing = chat.received(probe);
    prop_assert_eq!(listing.len(), 1);
    let rooms = listing[0]["rooms"].as_array().expect("rooms is an array");
    for entry in rooms {
        let name = entry["name"].as_str().expect("a room has a name");
        let count = entry["users"].as_u64().expect("a room has a count");
        prop_assert!(name == LOBBY || count > 0, "empty room {} kept", name);
        chat.send_json(probe, json!({"code": 103, "room": name}));
        let mut users = Vec::new();
        for frame in chat.received(probe) {
            prop_assert_eq!(&frame["code"], &json!(206));
            for listed in frame["users"].as_array().expect("users is an array") {
                users.push(listed.as_str().expect("a user is a string").to_owned());
            }
        }
        prop_assert_eq!(
            users.len() as u64,
            count,
            "WHO and ROOMS disagree on {}",
            name
        );
        for listed in &users {
            prop_assert!(logged_in.contains(listed), "ghost {} in {}", listed, name);
        }
        let mut unique = users.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), users.len(), "someone is twice in {}", name);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Thousands of random lines, codec errors, EOFs, closes and reconnects
    /// from several connections never panic the hub, never give one name to
    /// two sessions, and never leave a closed connection behind.
    #[test]
    fn random_traffic_never_panics_and_keeps_names_unique(
        is_password in any::<bool>(),
        steps in prop::collection::vec(any_step(), 1..400),
    ) {
        run_random_traffic(is_password, steps)?;
    }
}
