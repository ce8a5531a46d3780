//! Line mode's output: each buffer line as one readable line, or as one
//! JSON object (`--json`); and the helpers the view shares with it (the
//! clock, escaping, mention detection). Nothing here decides what to print.
//!
//! Readable lines: `[HH:MM] #room <alice> hi`, `[HH:MM] #room * alice
//! waves`, `[HH:MM] *bob -> alice* psst`, `* bob joined #lobby`, `! error
//! (409) [/nick bob]`. Peer text and names are escaped as the server's text
//! mode does (`^[`, `<U+202E>`), so nobody can drive the reader's terminal.
//!
//! JSON lines (`--json`): one object per line, always with `"type"` and
//! `"time"` (Unix ms; a message's own `ts`). Text is exact (JSON escapes
//! control characters; bidi and zero-width characters pass unchanged, as
//! in the server's JSON mode). Types and their other keys:
//!
//! | type      | keys |
//! |-----------|------|
//! | `message` | `id`, `room` or `to`, `from`, `text` (a `/me ` action without the prefix), `action`, `mention`, `history` (true when shown again for `/history`) |
//! | `join`    | `room`, `user` |
//! | `part`    | `room`, `user` |
//! | `quit`    | `user` |
//! | `rename`  | `old`, `new` |
//! | `name`    | `name` (your name is now this) |
//! | `users`   | `room`, `users` (array), `omitted` |
//! | `rooms`   | `rooms` (array of `{"name","users"}`), `omitted` |
//! | `gap`     | `room` (messages of the room were lost: the server no longer keeps them) |
//! | `notice`  | `buffer` (`"#room"`, `"@name"`, or null), `text` |
//! | `error`   | `code` (the server's, or null for riftc's own), `error`, `command` (what was typed, or null), `buffer` |

use super::buffer::{BufferId, Line, LineKind};
use crate::proto::escape_controls;
use serde_json::{Value, json};

/// Peer text made safe for a terminal (the server's text-mode escaping).
pub fn escape(text: &str) -> String {
    escape_controls(text)
}

/// `HH:MM` at a fixed offset from UTC.
pub fn clock(time_ms: u64, tz_offset_secs: i32) -> String {
    let seconds = i64::try_from(time_ms / 1000).unwrap_or(i64::MAX / 2);
    let day = seconds
        .saturating_add(i64::from(tz_offset_secs))
        .rem_euclid(86_400);
    format!("{:02}:{:02}", day / 3600, (day / 60) % 60)
}

/// True when `text` names `name` as a whole word (ASCII case aside).
pub fn mentions(text: &str, name: &str) -> bool {
    let is_name_char = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-';
    let lower = text.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    lower.match_indices(&name).any(|(at, _)| {
        let before = lower[..at].chars().next_back();
        let after = lower[at + name.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

pub fn buffer_label(buffer: &BufferId) -> Option<String> {
    match buffer {
        BufferId::Server => None,
        BufferId::Room(room) => Some(format!("#{room}")),
        BufferId::Dm(key) => Some(format!("@{}", key.as_str())),
    }
}

/// The readable form of a line (no newline).
pub fn text_line(line: &Line, tz_offset_secs: i32) -> String {
    let time = clock(line.time_ms, tz_offset_secs);
    match &line.kind {
        LineKind::Chat {
            from,
            to,
            room,
            text,
            is_action,
            is_replay,
            ..
        } => {
            let replay = if *is_replay { "(history) " } else { "" };
            let text = escape(text);
            match (room, to, is_action) {
                (Some(room), _, false) => format!("{replay}[{time}] #{room} <{from}> {text}"),
                (Some(room), _, true) => format!("{replay}[{time}] #{room} * {from} {text}"),
                (None, Some(to), false) => format!("{replay}[{time}] *{from} -> {to}* {text}"),
                (None, Some(to), true) => {
                    format!("{replay}[{time}] *{from} -> {to}* * {from} {text}")
                }
                (None, None, _) => format!("{replay}[{time}] <{from}> {text}"),
            }
        }
        LineKind::Joined { user, room } => format!("* {user} joined #{room}"),
        LineKind::Left { user, room } => format!("* {user} left #{room}"),
        LineKind::Quit { user } => format!("* {user} quit"),
        LineKind::Renamed { old, new } => format!("* {old} is now known as {new}"),
        LineKind::YouAre(name) => format!("* you are now {name}"),
        LineKind::Users {
            room,
            users,
            omitted,
        } => {
            let names: Vec<&str> = users.iter().map(|user| user.as_str()).collect();
            let mut text = format!("* in #{room}: {}", names.join(" "));
            if *omitted > 0 {
                text.push_str(&format!(" (and {omitted} more, not shown)"));
            }
            text
        }
        LineKind::Rooms { rooms, omitted } => {
            let rooms: Vec<String> = rooms
                .iter()
                .map(|(room, users)| format!("#{room} ({users})"))
                .collect();
            let mut text = format!("* rooms: {}", rooms.join(" "));
            if *omitted > 0 {
                text.push_str(&format!(" (and {omitted} more, not shown)"));
            }
            text
        }
        LineKind::Gap { room } => format!(
            "* #{room}: some messages sent while you were away are lost (the server no longer keeps them)"
        ),
        LineKind::Notice(text) => format!("* {}", escape(text)),
        LineKind::Error {
            code,
            text,
            command,
        } => {
            let mut out = format!("! {}", escape(text));
            if let Some(code) = code {
                out.push_str(&format!(" ({code})"));
            }
            if let Some(command) = command {
                out.push_str(&format!(" [{}]", escape(command)));
            }
            out
        }
    }
}

/// The JSON form of a line (no newline); see the module doc.
pub fn json_line(line: &Line, buffer: &BufferId) -> String {
    let time = line.time_ms;
    let value: Value = match &line.kind {
        LineKind::Chat {
            id,
            from,
            to,
            room,
            text,
            is_action,
            is_mention,
            is_replay,
        } => {
            let mut value = json!({
                "type": "message", "time": time, "id": id, "from": from.as_str(),
                "text": text, "action": is_action, "mention": is_mention, "history": is_replay,
            });
            if let Some(room) = room {
                value["room"] = json!(room.as_str());
            }
            if let Some(to) = to {
                value["to"] = json!(to.as_str());
            }
            value
        }
        LineKind::Joined { user, room } => {
            json!({"type": "join", "time": time, "room": room.as_str(), "user": user.as_str()})
        }
        LineKind::Left { user, room } => {
            json!({"type": "part", "time": time, "room": room.as_str(), "user": user.as_str()})
        }
        LineKind::Quit { user } => json!({"type": "quit", "time": time, "user": user.as_str()}),
        LineKind::Renamed { old, new } => {
            json!({"type": "rename", "time": time, "old": old.as_str(), "new": new.as_str()})
        }
        LineKind::YouAre(name) => json!({"type": "name", "time": time, "name": name.as_str()}),
        LineKind::Users {
            room,
            users,
            omitted,
        } => {
            let users: Vec<&str> = users.iter().map(|user| user.as_str()).collect();
            json!({"type": "users", "time": time, "room": room.as_str(), "users": users, "omitted": omitted})
        }
        LineKind::Rooms { rooms, omitted } => {
            let rooms: Vec<Value> = rooms
                .iter()
                .map(|(room, users)| json!({"name": room.as_str(), "users": users}))
                .collect();
            json!({"type": "rooms", "time": time, "rooms": rooms, "omitted": omitted})
        }
        LineKind::Gap { room } => json!({"type": "gap", "time": time, "room": room.as_str()}),
        LineKind::Notice(text) => {
            json!({"type": "notice", "time": time, "buffer": buffer_label(buffer), "text": text})
        }
        LineKind::Error {
            code,
            text,
            command,
        } => json!({
            "type": "error", "time": time, "code": code, "error": text,
            "command": command, "buffer": buffer_label(buffer),
        }),
    };
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{RoomName, Username};

    fn chat(text: &str, is_action: bool) -> Line {
        Line {
            time_ms: 1_700_000_000_000,
            kind: LineKind::Chat {
                id: 3,
                from: Username::parse("alice").unwrap(),
                to: None,
                room: Some(RoomName::parse("lobby").unwrap()),
                text: text.to_owned(),
                is_action,
                is_mention: false,
                is_replay: false,
            },
        }
    }

    #[test]
    fn the_clock_uses_the_offset_and_wraps_the_day() {
        // 1_700_000_000 s is 22:13:20 UTC.
        assert_eq!(clock(1_700_000_000_000, 0), "22:13");
        assert_eq!(clock(1_700_000_000_000, 3600 * 2), "00:13");
        assert_eq!(clock(1_700_000_000_000, -3600 * 23), "23:13");
    }

    #[test]
    fn mentions_are_whole_words() {
        assert!(mentions("hi Alice!", "alice"));
        assert!(mentions("alice: yo", "alice"));
        assert!(!mentions("malice", "alice"));
        assert!(!mentions("alice_2 hi", "alice"));
        assert!(mentions("x alice_2 alice", "alice"));
    }

    #[test]
    fn readable_lines_escape_hostile_text() {
        let line = chat("\u{1b}[2Jgone \u{202e}evil", false);
        assert_eq!(
            text_line(&line, 0),
            "[22:13] #lobby <alice> ^[[2Jgone <U+202E>evil"
        );
        assert_eq!(
            text_line(&chat("waves", true), 0),
            "[22:13] #lobby * alice waves"
        );
    }

    #[test]
    fn json_lines_carry_exact_text_and_type() {
        let line = chat("\u{1b}x", true);
        let value: Value = serde_json::from_str(&json_line(
            &line,
            &BufferId::Room(RoomName::parse("lobby").unwrap()),
        ))
        .unwrap();
        assert_eq!(value["type"], "message");
        assert_eq!(value["text"], "\u{1b}x");
        assert_eq!(value["action"], true);
        assert_eq!(value["room"], "lobby");
        assert_eq!(value["id"], 3);
        let error = Line {
            time_ms: 5,
            kind: LineKind::Error {
                code: Some(409),
                text: "taken".into(),
                command: Some("/nick bob".into()),
            },
        };
        assert_eq!(text_line(&error, 0), "! taken (409) [/nick bob]");
        let value: Value = serde_json::from_str(&json_line(&error, &BufferId::Server)).unwrap();
        assert_eq!(value["code"], 409);
        assert_eq!(value["command"], "/nick bob");
        assert!(value["buffer"].is_null());
    }
}
