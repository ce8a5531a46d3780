//! Server frames: `ServerMsg` (with `ChatMessage`, `Target`, `AuthKind`,
//! `Features`) and its two spellings, one JSON object per line
//! (`write_json_line`, or `write_json_line_with_ref` for an answer to a
//! request that carried a `Ref`) or
//! readable text lines (`to_text_lines`, escaped so that no peer can drive
//! or garble a terminal), the text-only help page, and the byte budget of
//! a history answer. Nothing here parses a client line.

use super::chars::{is_format_control, is_invisible};
use super::{Code, Ref, RoomName, Token, Username};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Where a chat message went: a room, or one user (a private message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Room(RoomName),
    User(Username),
}

/// The `message` object of a 200 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Server-wide increasing id.
    pub id: u64,
    /// Unix milliseconds when the server accepted it.
    pub ts: u64,
    pub target: Target,
    pub from: Username,
    pub text: String,
}

/// Authentication the server asks for, as announced in the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Open,
    Password,
    Accounts,
}

impl AuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Open => "open",
            AuthKind::Password => "password",
            AuthKind::Accounts => "accounts",
        }
    }
}

/// The optional features a server announces in its greeting (`features`):
/// what a client may use that a riftd speaking protocol version 1 may lack.
/// What every server has (rooms, DMs, WHO, ROOMS, PING) is not listed, nor
/// what another greeting field already tells (RENAME: `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// History is on: HISTORY is answered and joining a room sends a
    /// backlog (208).
    pub has_history: bool,
}

impl Features {
    /// The names, in the order the greeting lists them: `ref` (always, on
    /// this server), then `history` when history is on.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [("ref", true), ("history", self.has_history)]
            .into_iter()
            .filter_map(|(name, is_on)| is_on.then_some(name))
    }
}

/// One frame the server sends.
#[derive(Debug)]
pub enum ServerMsg {
    Message(ChatMessage),
    Connected {
        username: Username,
        room: RoomName,
    },
    YourName {
        username: Username,
    },
    Renamed {
        old: Username,
        new: Username,
    },
    /// `room` is set for a PART; a user who left the server has none.
    Disconnected {
        username: Username,
        room: Option<RoomName>,
    },
    GoingDown,
    /// One chunk of a WHO answer; `more` is true on every chunk but the
    /// last. `omitted` (on the last chunk) counts members left out to keep
    /// the answer under its share of the output cap.
    Users {
        room: RoomName,
        users: Vec<Username>,
        more: bool,
        omitted: usize,
    },
    Pong {
        token: Option<Token>,
    },
    /// Room history, oldest first; `more` when the answer was cut short
    /// (ask again with `after` = the last id); `gap` when messages between
    /// the asked-for `after` and the first one here were dropped from the
    /// kept history.
    Backlog {
        room: RoomName,
        messages: Vec<ChatMessage>,
        more: bool,
        gap: bool,
    },
    /// "Say something": the server has heard nothing for a while.
    ServerPing,
    Hello {
        auth: AuthKind,
        features: Features,
    },
    PassNeeded,
    /// One chunk of a ROOMS answer, sorted by name; `more` is true on every
    /// chunk but the last. `omitted` (on the last chunk) counts rooms left
    /// out to keep the answer under its share of the output cap.
    RoomList {
        rooms: Vec<(RoomName, usize)>,
        more: bool,
        omitted: usize,
    },
    /// Cluster mode: this node lost its link to the cluster; requests
    /// that need it are refused (503) until `Resumed`.
    Paused,
    /// Cluster mode: the link is back and every room caught up.
    Resumed,
    Error {
        code: Code,
        error: String,
    },
    /// Text mode's `/help` page. It has no code: only a text-mode line
    /// asks for it, so it is only ever spelled as text.
    Help,
}

impl ServerMsg {
    pub fn error(code: Code, error: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            code,
            error: error.into(),
        }
    }

    /// The frame's code; `None` for the help page, which has none.
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            ServerMsg::Message(_) => Code::Message,
            ServerMsg::Connected { .. } => Code::Connected,
            ServerMsg::YourName { .. } => Code::YourName,
            ServerMsg::Renamed { .. } => Code::Renamed,
            ServerMsg::Disconnected { .. } => Code::Disconnected,
            ServerMsg::GoingDown => Code::GoingDown,
            ServerMsg::Users { .. } => Code::Users,
            ServerMsg::Pong { .. } => Code::Pong,
            ServerMsg::Backlog { .. } => Code::Backlog,
            ServerMsg::ServerPing => Code::ServerPing,
            ServerMsg::Hello { .. } => Code::Hello,
            ServerMsg::PassNeeded => Code::PassNeeded,
            ServerMsg::RoomList { .. } => Code::RoomList,
            ServerMsg::Paused => Code::Paused,
            ServerMsg::Resumed => Code::Resumed,
            ServerMsg::Error { code, .. } => *code,
            ServerMsg::Help => return None,
        })
    }

    /// The frame as one JSON line, `\n` included.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(96);
        self.write_json_line(&mut line);
        line
    }

    /// Appends the frame as one JSON line, `\n` included.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and every field serialises.
        serde_json::to_writer(&mut *out, self).expect("server frames always serialise");
        out.push(b'\n');
    }

    /// Appends the frame as one JSON line answering a request that carried
    /// `reference`: the same object with `"ref"` as its last key.
    pub fn write_json_line_with_ref(&self, reference: &Ref, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and every field serialises.
        serde_json::to_writer(&mut *out, &WithRef(self, reference))
            .expect("server frames always serialise");
        out.push(b'\n');
    }

    /// The frame as readable text for `nc`/`telnet` users, `\n` included.
    pub fn to_text_lines(&self) -> Vec<u8> {
        let text = match self {
            ServerMsg::Message(message) => render_message(message),
            ServerMsg::Connected { username, room } => format!("* {username} joined #{room}"),
            ServerMsg::YourName { username } => format!("* you are now {username}"),
            ServerMsg::Renamed { old, new } => format!("* {old} is now known as {new}"),
            ServerMsg::Disconnected {
                username,
                room: Some(room),
            } => format!("* {username} left #{room}"),
            ServerMsg::Disconnected {
                username,
                room: None,
            } => format!("* {username} quit"),
            ServerMsg::GoingDown => "* server going down".to_owned(),
            ServerMsg::Users {
                room,
                users,
                omitted,
                ..
            } => {
                let names: Vec<&str> = users.iter().map(Username::as_str).collect();
                let mut line = format!("* in #{room}: {}", names.join(" "));
                if *omitted > 0 {
                    line.push_str(&format!(" (and {omitted} more, not shown)"));
                }
                line
            }
            ServerMsg::Pong { .. } => "* pong".to_owned(),
            ServerMsg::ServerPing => "* are you there?".to_owned(),
            ServerMsg::Paused => {
                "* chat paused: this server lost the cluster; messages, joins and logins are refused until it resumes".to_owned()
            }
            ServerMsg::Resumed => "* chat resumed".to_owned(),
            ServerMsg::Backlog {
                room,
                messages,
                more,
                gap,
            } => {
                let mut lines = format!("* history of #{room}: {} message(s)", messages.len());
                if *gap {
                    lines.push_str(
                        "\n* history: (older messages are missing: some were dropped before these)",
                    );
                }
                for message in messages {
                    lines.push_str("\n* history: ");
                    lines.push_str(&render_message(message));
                }
                if *more {
                    lines.push_str("\n* history: (more; /history COUNT shows more)");
                }
                lines
            }
            ServerMsg::Hello { auth, .. } => {
                format!(
                    "* riftd {} ({} auth)",
                    env!("CARGO_PKG_VERSION"),
                    auth.as_str()
                )
            }
            ServerMsg::PassNeeded => "* password:".to_owned(),
            ServerMsg::RoomList { rooms, omitted, .. } => {
                let rooms: Vec<String> = rooms
                    .iter()
                    .map(|(room, users)| format!("#{room} ({users})"))
                    .collect();
                let mut line = format!("* rooms: {}", rooms.join(" "));
                if *omitted > 0 {
                    line.push_str(&format!(" (and {omitted} more, not shown)"));
                }
                line
            }
            // An error may quote the peer (`unknown command /…`).
            ServerMsg::Error { code, error } => {
                format!("! {} ({})", escape_controls(error), code.number())
            }
            ServerMsg::Help => HELP_TEXT.to_owned(),
        };
        let mut bytes = text.into_bytes();
        bytes.push(b'\n');
        bytes
    }
}

pub(super) const HELP_TEXT: &str = "\
* Type a line to say it in your current room. Commands:
*   /nick NAME        change your name (not where names are accounts)
*   /msg NAME TEXT    private message
*   /join ROOM        join (or create) a room and make it current
*   /part [ROOM]      leave a room (default: the current one); also /leave
*   /who [ROOM]       who is in a room; also /names
*   /rooms            list rooms; also /list
*   /history [COUNT]  the last messages of the current room
*   /me TEXT          an action (* you TEXT)
*   /ping             ask the server for a * pong
*   //TEXT            say a line that starts with /
*   /help             this list (also at the name and password prompts)
*   /quit             leave; also /exit";

/// `HH:MM:SS` in UTC for a Unix-milliseconds timestamp.
fn clock(ts_ms: u64) -> String {
    let seconds = (ts_ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60
    )
}

/// Replaces control characters with caret notation (`ESC` → `^[`) so that
/// nobody can drive another user's terminal, and invisible characters
/// (bidi controls, zero-width characters, tags: `is_invisible`) with their
/// code point (`<U+202E>`), so nobody can reorder or hide text on it. The
/// emoji and text presentation selectors (U+FE0F, U+FE0E) are kept: they
/// only choose how the character before them is drawn.
pub fn escape_controls(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\t' => out.push(' '),
            '\u{0}'..='\u{1f}' => {
                out.push('^');
                out.push(char::from(ch as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}' => out.push('?'),
            '\u{fe0e}' | '\u{fe0f}' => out.push(ch),
            ch if is_invisible(ch) || is_format_control(ch) => {
                // Writing into a String cannot fail.
                let _ = write!(out, "<U+{:04X}>", u32::from(ch));
            }
            _ => out.push(ch),
        }
    }
    out
}

fn render_message(message: &ChatMessage) -> String {
    let time = clock(message.ts);
    let from = &message.from;
    let (is_action, text) = match message.text.strip_prefix("/me ") {
        Some(action) => (true, escape_controls(action)),
        None => (false, escape_controls(&message.text)),
    };
    match (&message.target, is_action) {
        (Target::Room(room), false) => format!("[{time}] #{room} <{from}> {text}"),
        (Target::Room(room), true) => format!("[{time}] #{room} * {from} {text}"),
        (Target::User(to), false) => format!("[{time}] *{from} -> {to}* {text}"),
        (Target::User(to), true) => format!("[{time}] *{from} -> {to}* * {from} {text}"),
    }
}

/// Counts bytes instead of keeping them.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(bytes.len());
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes a 208 spends on its frame (code, room, brackets, `more`, `gap`;
/// text mode's header and trailer lines), message entries aside.
pub const BACKLOG_FRAME_BYTES: usize = 512;

/// Bytes one message adds to a 208, in the longer of its two encodings: a
/// JSON entry (escaping makes a control character six bytes) or a text
/// `* history:` line (escaping makes one two). Budgets of history answers
/// count these, never raw text bytes.
pub fn backlog_entry_bytes(message: &ChatMessage) -> usize {
    let mut json = ByteCount(1); // the comma between entries
    // Writing into a counter cannot fail, and every field serialises.
    serde_json::to_writer(&mut json, &MessageBody(message)).expect("records always serialise");
    let text = "\n* history: "
        .len()
        .saturating_add(render_message(message).len());
    json.0.max(text)
}
pub(super) struct MessageBody<'a>(pub(super) &'a ChatMessage);

impl Serialize for MessageBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let message = self.0;
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("id", &message.id)?;
        map.serialize_entry("ts", &message.ts)?;
        match &message.target {
            Target::Room(room) => map.serialize_entry("room", room.as_str())?,
            Target::User(to) => map.serialize_entry("to", to.as_str())?,
        }
        map.serialize_entry("from", message.from.as_str())?;
        map.serialize_entry("text", &message.text)?;
        map.end()
    }
}

impl Serialize for ServerMsg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.serialize_with_ref(None, serializer)
    }
}

/// A frame answering a request that carried a ref.
struct WithRef<'a>(&'a ServerMsg, &'a Ref);

impl Serialize for WithRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_with_ref(Some(self.1), serializer)
    }
}

impl ServerMsg {
    /// The frame's JSON object, with `"ref"` last when `reference` is set.
    fn serialize_with_ref<S: Serializer>(
        &self,
        reference: Option<&Ref>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        // Every frame a JSON client can receive has a code; the help page
        // (text mode's only) has none, so none is written for it.
        if let Some(code) = self.code() {
            map.serialize_entry("code", &code.number())?;
        }
        match self {
            ServerMsg::Message(message) => map.serialize_entry("message", &MessageBody(message))?,
            ServerMsg::Connected { username, room } => {
                map.serialize_entry("new", username.as_str())?;
                map.serialize_entry("room", room.as_str())?;
            }
            ServerMsg::YourName { username } => map.serialize_entry("new", username.as_str())?,
            ServerMsg::Renamed { old, new } => {
                map.serialize_entry("old", old.as_str())?;
                map.serialize_entry("new", new.as_str())?;
            }
            ServerMsg::Disconnected { username, room } => {
                map.serialize_entry("username", username.as_str())?;
                if let Some(room) = room {
                    map.serialize_entry("room", room.as_str())?;
                }
            }
            ServerMsg::GoingDown
            | ServerMsg::PassNeeded
            | ServerMsg::Help
            | ServerMsg::ServerPing
            | ServerMsg::Paused
            | ServerMsg::Resumed => {}
            ServerMsg::Users {
                room,
                users,
                more,
                omitted,
            } => {
                map.serialize_entry("room", room.as_str())?;
                let names: Vec<&str> = users.iter().map(Username::as_str).collect();
                map.serialize_entry("users", &names)?;
                if *more {
                    map.serialize_entry("more", &true)?;
                }
                if *omitted > 0 {
                    map.serialize_entry("omitted", omitted)?;
                }
            }
            ServerMsg::Pong { token } => {
                if let Some(token) = token {
                    map.serialize_entry("token", token)?;
                }
            }
            ServerMsg::Backlog {
                room,
                messages,
                more,
                gap,
            } => {
                map.serialize_entry("room", room.as_str())?;
                let bodies: Vec<MessageBody> = messages.iter().map(MessageBody).collect();
                map.serialize_entry("messages", &bodies)?;
                if *more {
                    map.serialize_entry("more", &true)?;
                }
                if *gap {
                    map.serialize_entry("gap", &true)?;
                }
            }
            ServerMsg::Hello { auth, features } => {
                map.serialize_entry("server", "riftd")?;
                map.serialize_entry("version", env!("CARGO_PKG_VERSION"))?;
                map.serialize_entry("auth", auth.as_str())?;
                let names: Vec<&str> = features.names().collect();
                map.serialize_entry("features", &names)?;
                map.serialize_entry(
                    "hint",
                    "send JSON frames, or type a username to chat in plain text",
                )?;
            }
            ServerMsg::RoomList {
                rooms,
                more,
                omitted,
            } => {
                let rooms: Vec<RoomEntry> = rooms
                    .iter()
                    .map(|(room, users)| RoomEntry {
                        name: room.as_str(),
                        users: *users,
                    })
                    .collect();
                map.serialize_entry("rooms", &rooms)?;
                if *more {
                    map.serialize_entry("more", &true)?;
                }
                if *omitted > 0 {
                    map.serialize_entry("omitted", omitted)?;
                }
            }
            ServerMsg::Error { error, .. } => map.serialize_entry("error", error)?,
        }
        if let Some(reference) = reference {
            map.serialize_entry("ref", reference.as_str())?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
struct RoomEntry<'a> {
    name: &'a str,
    users: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ProtoError, Request, parse_json};

    fn json(msg: &ServerMsg) -> String {
        String::from_utf8(msg.to_json_line()).unwrap()
    }

    fn text(msg: &ServerMsg) -> String {
        String::from_utf8(msg.to_text_lines()).unwrap()
    }

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn ping_token_is_echoed_byte_for_byte() {
        for token in [
            r#""""#,
            "null",
            r#"{"a": [1, 2.50]}"#,
            "12345678901234567890",
        ] {
            let Request::Ping { token: parsed } =
                parse_json(&format!(r#"{{"code":108,"token":{token}}}"#)).unwrap()
            else {
                panic!("not a ping");
            };
            let pong = json(&ServerMsg::Pong { token: parsed });
            assert_eq!(pong, format!("{{\"code\":207,\"token\":{token}}}\n"));
        }
        assert_eq!(json(&ServerMsg::Pong { token: None }), "{\"code\":207}\n");
    }

    #[test]
    fn server_frames_have_the_contract_shapes() {
        let message = ChatMessage {
            id: 7,
            ts: 1_700_000_000_123,
            target: Target::Room(room("lobby")),
            from: user("alice"),
            text: "hi \"you\"".to_owned(),
        };
        assert_eq!(
            json(&ServerMsg::Message(message.clone())),
            "{\"code\":200,\"message\":{\"id\":7,\"ts\":1700000000123,\"room\":\"lobby\",\"from\":\"alice\",\"text\":\"hi \\\"you\\\"\"}}\n"
        );
        let dm = ChatMessage {
            target: Target::User(user("bob")),
            ..message
        };
        assert!(json(&ServerMsg::Message(dm)).contains("\"to\":\"bob\""));
        assert_eq!(
            json(&ServerMsg::Connected {
                username: user("alice"),
                room: room("lobby")
            }),
            "{\"code\":201,\"new\":\"alice\",\"room\":\"lobby\"}\n"
        );
        assert_eq!(
            json(&ServerMsg::YourName {
                username: user("alice")
            }),
            "{\"code\":202,\"new\":\"alice\"}\n"
        );
        assert_eq!(
            json(&ServerMsg::Renamed {
                old: user("alice"),
                new: user("bob")
            }),
            "{\"code\":203,\"old\":\"alice\",\"new\":\"bob\"}\n"
        );
        assert_eq!(
            json(&ServerMsg::Disconnected {
                username: user("alice"),
                room: None
            }),
            "{\"code\":204,\"username\":\"alice\"}\n"
        );
        assert_eq!(json(&ServerMsg::GoingDown), "{\"code\":205}\n");
        assert_eq!(json(&ServerMsg::PassNeeded), "{\"code\":211}\n");
        assert_eq!(json(&ServerMsg::Paused), "{\"code\":213}\n");
        assert_eq!(json(&ServerMsg::Resumed), "{\"code\":214}\n");
        assert_eq!(
            json(&ServerMsg::error(Code::Forbidden, "no")),
            "{\"code\":403,\"error\":\"no\"}\n"
        );
        let hello = json(&ServerMsg::Hello {
            auth: AuthKind::Open,
            features: Features { has_history: false },
        });
        assert!(hello.starts_with(&format!(
            "{{\"code\":210,\"server\":\"riftd\",\"version\":\"{}\",\"auth\":\"open\"",
            env!("CARGO_PKG_VERSION")
        )));
        assert_eq!(
            json(&ServerMsg::RoomList {
                rooms: vec![(room("lobby"), 2)],
                more: false,
                omitted: 0,
            }),
            "{\"code\":212,\"rooms\":[{\"name\":\"lobby\",\"users\":2}]}\n"
        );
    }

    #[test]
    fn the_help_page_has_no_code_and_is_spelled_as_text() {
        assert_eq!(ServerMsg::Help.code(), None);
        assert_eq!(ServerMsg::GoingDown.code(), Some(Code::GoingDown));
        assert_eq!(
            ServerMsg::error(Code::Forbidden, "no").code(),
            Some(Code::Forbidden)
        );
        let page = text(&ServerMsg::Help);
        assert!(page.starts_with("* Type a line"), "{page}");
        assert!(
            page.ends_with("*   /quit             leave; also /exit\n"),
            "{page}"
        );
        assert!(!json(&ServerMsg::Help).contains("code"));
    }

    #[test]
    fn text_rendering_shows_bidi_controls_zero_width_and_tag_characters_as_code_points() {
        let invisible = [
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{61c}',
            '\u{200b}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{e0001}',
            '\u{e0041}',
            '\u{e007f}',
            '\u{ad}',
            // Interlinear annotation controls: the annotation may be hidden.
            '\u{fff9}',
            '\u{fffa}',
            '\u{fffb}',
            // Format controls that span or stack what follows them.
            '\u{600}',
            '\u{605}',
            '\u{6dd}',
            '\u{70f}',
            '\u{8e2}',
            '\u{110bd}',
            '\u{13430}',
        ];
        for ch in invisible {
            let shown = format!("<U+{:04X}>", u32::from(ch));
            let message = ChatMessage {
                id: 1,
                ts: 0,
                target: Target::Room(room("lobby")),
                from: user("mallory"),
                text: format!("a{ch}b"),
            };
            assert_eq!(
                text(&ServerMsg::Message(message.clone())),
                format!("[00:00:00] #lobby <mallory> a{shown}b\n")
            );
            let action = ChatMessage {
                text: format!("/me x{ch}"),
                ..message.clone()
            };
            assert!(text(&ServerMsg::Message(action.clone())).ends_with(&format!("x{shown}\n")));
            let backlog = ServerMsg::Backlog {
                room: room("lobby"),
                messages: vec![message, action],
                more: false,
                gap: false,
            };
            assert!(!text(&backlog).contains(ch), "{ch:?} in a backlog");
        }
        // An error quoting the peer is escaped too.
        let unknown = ProtoError::UnknownCommand("x\u{202e}\u{1b}]0;pwned".to_owned());
        assert_eq!(
            text(&ServerMsg::error(Code::BadRequest, unknown.to_string())),
            "! unknown command /x<U+202E>^[]0;pwned; type /help (400)\n"
        );
        // Emoji keep their presentation selector.
        let heart = ChatMessage {
            id: 1,
            ts: 0,
            target: Target::Room(room("lobby")),
            from: user("alice"),
            text: "\u{2764}\u{fe0f}".to_owned(),
        };
        assert!(text(&ServerMsg::Message(heart)).ends_with("<alice> \u{2764}\u{fe0f}\n"));
    }

    #[test]
    fn issue_11_gap_more_and_omitted_appear_only_when_set_in_json_and_text() {
        let message = ChatMessage {
            id: 9,
            ts: 0,
            target: Target::Room(room("lobby")),
            from: user("alice"),
            text: "hi".to_owned(),
        };
        let backlog = |more, gap| ServerMsg::Backlog {
            room: room("lobby"),
            messages: vec![message.clone()],
            more,
            gap,
        };
        let plain = json(&backlog(false, false));
        assert!(!plain.contains("gap") && !plain.contains("more"), "{plain}");
        assert!(json(&backlog(false, true)).ends_with("}],\"gap\":true}\n"));
        assert!(json(&backlog(true, true)).ends_with("}],\"more\":true,\"gap\":true}\n"));
        assert!(!text(&backlog(false, false)).contains("missing"));
        assert_eq!(
            text(&backlog(false, true)),
            "* history of #lobby: 1 message(s)\n\
             * history: (older messages are missing: some were dropped before these)\n\
             * history: [00:00:00] #lobby <alice> hi\n"
        );
        let rooms = |more, omitted| ServerMsg::RoomList {
            rooms: vec![(room("a"), 1), (room("b"), 2)],
            more,
            omitted,
        };
        assert_eq!(
            json(&rooms(true, 0)),
            "{\"code\":212,\"rooms\":[{\"name\":\"a\",\"users\":1},{\"name\":\"b\",\"users\":2}],\"more\":true}\n"
        );
        assert!(json(&rooms(false, 7)).ends_with("}],\"omitted\":7}\n"));
        assert_eq!(text(&rooms(true, 0)), "* rooms: #a (1) #b (2)\n");
        assert_eq!(
            text(&rooms(false, 7)),
            "* rooms: #a (1) #b (2) (and 7 more, not shown)\n"
        );
        let users = ServerMsg::Users {
            room: room("lobby"),
            users: vec![user("alice")],
            more: false,
            omitted: 3,
        };
        assert_eq!(
            json(&users),
            "{\"code\":206,\"room\":\"lobby\",\"users\":[\"alice\"],\"omitted\":3}\n"
        );
        assert_eq!(text(&users), "* in #lobby: alice (and 3 more, not shown)\n");
    }

    #[test]
    fn a_backlog_entry_is_budgeted_at_its_longest_encoding() {
        let message = |text: &str| ChatMessage {
            id: 12,
            ts: 34,
            target: Target::Room(room("lobby")),
            from: user("alice"),
            text: text.to_owned(),
        };
        for body in [
            "plain",
            "\u{1}\u{1}\u{1}",
            "\u{7f}\u{7f}\u{7f}\u{7f}",
            "\"quoted\"",
            "\u{85}é",
        ] {
            let entry = message(body);
            let frame = ServerMsg::Backlog {
                room: room("lobby"),
                messages: vec![entry.clone(), entry.clone()],
                more: false,
                gap: false,
            };
            let empty = ServerMsg::Backlog {
                room: room("lobby"),
                messages: vec![],
                more: false,
                gap: false,
            };
            let bytes = backlog_entry_bytes(&entry);
            for render in [json, text] {
                let grown = render(&frame).len() - render(&empty).len();
                assert!(grown <= 2 * bytes, "{body:?}: {grown} > 2 × {bytes}");
            }
            assert!(json(&empty).len() <= BACKLOG_FRAME_BYTES);
        }
    }

    #[test]
    fn text_rendering_is_readable_and_escapes_control_characters() {
        let message = ChatMessage {
            id: 1,
            ts: (12 * 3600 + 60 + 7) * 1000,
            target: Target::Room(room("lobby")),
            from: user("alice"),
            text: "hello\u{1b}[2J".to_owned(),
        };
        assert_eq!(
            text(&ServerMsg::Message(message.clone())),
            "[12:01:07] #lobby <alice> hello^[[2J\n"
        );
        let action = ChatMessage {
            text: "/me waves".to_owned(),
            ..message.clone()
        };
        assert_eq!(
            text(&ServerMsg::Message(action)),
            "[12:01:07] #lobby * alice waves\n"
        );
        let dm = ChatMessage {
            target: Target::User(user("bob")),
            text: "psst".to_owned(),
            ..message
        };
        assert_eq!(
            text(&ServerMsg::Message(dm)),
            "[12:01:07] *alice -> bob* psst\n"
        );
        assert_eq!(text(&ServerMsg::GoingDown), "* server going down\n");
        assert!(text(&ServerMsg::Paused).starts_with("* chat paused: "));
        assert_eq!(text(&ServerMsg::Resumed), "* chat resumed\n");
        assert_eq!(
            text(&ServerMsg::error(Code::NotFound, "no such user bob")),
            "! no such user bob (404)\n"
        );
    }
}
