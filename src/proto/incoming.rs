//! Server frames as a client reads them: one JSON line into `Received`
//! (an `Incoming` frame and the `ref` it echoes, if any), with the server's
//! own types (`Username`, `RoomName`, `ChatMessage`, `AuthKind`). Keys and
//! codes it does not know are tolerated, so a newer server still talks to
//! an older client. Nothing here decides what a frame means for the client.

use super::{AuthKind, ChatMessage, ProtoError, RoomName, Target, Username};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

/// One server frame, typed.
#[derive(Debug)]
pub enum Incoming {
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
    Disconnected {
        username: Username,
        room: Option<RoomName>,
    },
    GoingDown,
    Users {
        room: RoomName,
        users: Vec<Username>,
        more: bool,
        omitted: u64,
    },
    /// `token` is the PING's token as raw JSON, byte for byte.
    Pong {
        token: Option<Box<RawValue>>,
    },
    Backlog {
        room: RoomName,
        messages: Vec<ChatMessage>,
        more: bool,
        gap: bool,
    },
    ServerPing,
    /// `auth` is `None` for a kind this client does not know; `features`
    /// is empty on a server that announces none.
    Hello {
        auth: Option<AuthKind>,
        features: Vec<String>,
    },
    PassNeeded,
    RoomList {
        rooms: Vec<(RoomName, u64)>,
        more: bool,
        omitted: u64,
    },
    /// Cluster mode: the server lost the cluster; chat waits (213).
    Paused,
    /// Cluster mode: chat goes on again (214).
    Resumed,
    /// Any 4xx or 5xx frame; `code` is its number.
    Error {
        code: u16,
        error: String,
    },
    /// A code this client does not know (a newer server's).
    Unknown {
        code: u64,
    },
}

/// A frame and the `ref` the server echoed with it.
#[derive(Debug)]
pub struct Received {
    pub frame: Incoming,
    pub reference: Option<String>,
}

/// Why a server line could not be read.
#[derive(Debug, Error)]
pub enum IncomingError {
    #[error("not a server frame: {0}")]
    Json(String),
    #[error("code {code}: missing or malformed field `{field}`")]
    Field { code: u64, field: &'static str },
    #[error("code {code}: {error}")]
    Name { code: u64, error: ProtoError },
}

#[derive(Deserialize)]
struct RawMessage {
    id: u64,
    ts: u64,
    room: Option<String>,
    to: Option<String>,
    from: String,
    text: String,
}

#[derive(Deserialize)]
struct RawRoom {
    name: String,
    users: u64,
}

/// Every key a server frame may carry; unknown keys are ignored.
#[derive(Deserialize)]
struct RawFrame {
    code: u64,
    message: Option<RawMessage>,
    new: Option<String>,
    old: Option<String>,
    room: Option<String>,
    username: Option<String>,
    users: Option<Vec<String>>,
    #[serde(default)]
    more: bool,
    #[serde(default)]
    gap: bool,
    #[serde(default)]
    omitted: u64,
    #[serde(default, deserialize_with = "present")]
    token: Option<Box<RawValue>>,
    messages: Option<Vec<RawMessage>>,
    auth: Option<String>,
    #[serde(default)]
    features: Vec<String>,
    rooms: Option<Vec<RawRoom>>,
    error: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// Keeps a token that is present with the value `null`.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// Parses one server line (without its newline).
pub fn parse_incoming(line: &str) -> Result<Received, IncomingError> {
    let raw: RawFrame = serde_json::from_str(line).map_err(|error| {
        let mut reason = error.to_string();
        if let Some(at) = reason.find(" at line ") {
            reason.truncate(at);
        }
        IncomingError::Json(reason)
    })?;
    let code = raw.code;
    let field = |field: &'static str| IncomingError::Field { code, field };
    let name_error = |error: ProtoError| IncomingError::Name { code, error };
    let user = |name: Option<&String>, key: &'static str| -> Result<Username, IncomingError> {
        Username::parse(name.ok_or(field(key))?).map_err(name_error)
    };
    let room = |name: Option<&String>| -> Result<RoomName, IncomingError> {
        RoomName::parse(name.ok_or(field("room"))?).map_err(name_error)
    };
    let message = |raw: &RawMessage| -> Result<ChatMessage, IncomingError> {
        let target = match (&raw.room, &raw.to) {
            (Some(name), _) => Target::Room(RoomName::parse(name).map_err(name_error)?),
            (None, Some(to)) => Target::User(Username::parse(to).map_err(name_error)?),
            (None, None) => return Err(field("room")),
        };
        Ok(ChatMessage {
            id: raw.id,
            ts: raw.ts,
            target,
            from: Username::parse(&raw.from).map_err(name_error)?,
            text: raw.text.clone(),
        })
    };
    let frame = match code {
        200 => Incoming::Message(message(raw.message.as_ref().ok_or(field("message"))?)?),
        201 => Incoming::Connected {
            username: user(raw.new.as_ref(), "new")?,
            room: room(raw.room.as_ref())?,
        },
        202 => Incoming::YourName {
            username: user(raw.new.as_ref(), "new")?,
        },
        203 => Incoming::Renamed {
            old: user(raw.old.as_ref(), "old")?,
            new: user(raw.new.as_ref(), "new")?,
        },
        204 => Incoming::Disconnected {
            username: user(raw.username.as_ref(), "username")?,
            room: raw
                .room
                .as_ref()
                .map(|_| room(raw.room.as_ref()))
                .transpose()?,
        },
        205 => Incoming::GoingDown,
        206 => Incoming::Users {
            room: room(raw.room.as_ref())?,
            users: raw
                .users
                .as_ref()
                .ok_or(field("users"))?
                .iter()
                .map(|name| Username::parse(name).map_err(name_error))
                .collect::<Result<_, _>>()?,
            more: raw.more,
            omitted: raw.omitted,
        },
        207 => Incoming::Pong { token: raw.token },
        208 => Incoming::Backlog {
            room: room(raw.room.as_ref())?,
            messages: raw
                .messages
                .as_ref()
                .ok_or(field("messages"))?
                .iter()
                .map(message)
                .collect::<Result<_, _>>()?,
            more: raw.more,
            gap: raw.gap,
        },
        209 => Incoming::ServerPing,
        210 => Incoming::Hello {
            auth: match raw.auth.as_deref() {
                Some("open") => Some(AuthKind::Open),
                Some("password") => Some(AuthKind::Password),
                Some("accounts") => Some(AuthKind::Accounts),
                _ => None,
            },
            features: raw.features,
        },
        211 => Incoming::PassNeeded,
        213 => Incoming::Paused,
        214 => Incoming::Resumed,
        212 => Incoming::RoomList {
            rooms: raw
                .rooms
                .as_ref()
                .ok_or(field("rooms"))?
                .iter()
                .map(|entry| {
                    RoomName::parse(&entry.name)
                        .map(|name| (name, entry.users))
                        .map_err(name_error)
                })
                .collect::<Result<_, _>>()?,
            more: raw.more,
            omitted: raw.omitted,
        },
        400..=599 => Incoming::Error {
            // The range check keeps the number in u16.
            code: u16::try_from(code).unwrap_or(u16::MAX),
            error: raw.error.unwrap_or_default(),
        },
        _ => Incoming::Unknown { code },
    };
    Ok(Received {
        frame,
        reference: raw.reference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Code, Features, Request, ServerMsg, parse_json};

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn round_trip(msg: &ServerMsg) -> Incoming {
        let line = String::from_utf8(msg.to_json_line()).unwrap();
        parse_incoming(line.trim_end()).unwrap().frame
    }

    fn chat(id: u64, target: Target) -> ChatMessage {
        ChatMessage {
            id,
            ts: 1_700_000_000_123,
            target,
            from: user("alice"),
            text: "hi \u{1b}[2J \u{202e} \"you\"".to_owned(),
        }
    }

    #[test]
    fn every_server_frame_serialised_by_the_server_parses_back() {
        let room_msg = chat(7, Target::Room(room("lobby")));
        let dm = chat(8, Target::User(user("bob")));
        match round_trip(&ServerMsg::Message(room_msg.clone())) {
            Incoming::Message(parsed) => assert_eq!(parsed, room_msg),
            other => panic!("{other:?}"),
        }
        match round_trip(&ServerMsg::Message(dm.clone())) {
            Incoming::Message(parsed) => assert_eq!(parsed, dm),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            round_trip(&ServerMsg::Connected { username: user("bob"), room: room("rust") }),
            Incoming::Connected { username, room: r } if username == user("bob") && r == room("rust")
        ));
        assert!(matches!(
            round_trip(&ServerMsg::YourName { username: user("bob") }),
            Incoming::YourName { username } if username == user("bob")
        ));
        assert!(matches!(
            round_trip(&ServerMsg::Renamed { old: user("a"), new: user("b") }),
            Incoming::Renamed { old, new } if old == user("a") && new == user("b")
        ));
        assert!(matches!(
            round_trip(&ServerMsg::Disconnected { username: user("a"), room: Some(room("x")) }),
            Incoming::Disconnected { room: Some(r), .. } if r == room("x")
        ));
        assert!(matches!(
            round_trip(&ServerMsg::Disconnected {
                username: user("a"),
                room: None
            }),
            Incoming::Disconnected { room: None, .. }
        ));
        assert!(matches!(
            round_trip(&ServerMsg::GoingDown),
            Incoming::GoingDown
        ));
        assert!(matches!(round_trip(&ServerMsg::Paused), Incoming::Paused));
        assert!(matches!(round_trip(&ServerMsg::Resumed), Incoming::Resumed));
        assert!(matches!(
            round_trip(&ServerMsg::Users { room: room("x"), users: vec![user("a"), user("b")], more: true, omitted: 0 }),
            Incoming::Users { users, more: true, omitted: 0, .. } if users == vec![user("a"), user("b")]
        ));
        assert!(matches!(
            round_trip(&ServerMsg::Users {
                room: room("x"),
                users: vec![],
                more: false,
                omitted: 3
            }),
            Incoming::Users {
                more: false,
                omitted: 3,
                ..
            }
        ));
        let Request::Ping { token } = parse_json(r#"{"code":108,"token":"lag-1"}"#).unwrap() else {
            panic!()
        };
        match round_trip(&ServerMsg::Pong { token }) {
            Incoming::Pong { token: Some(token) } => assert_eq!(token.get(), r#""lag-1""#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            round_trip(&ServerMsg::Pong { token: None }),
            Incoming::Pong { token: None }
        ));
        match round_trip(&ServerMsg::Backlog {
            room: room("lobby"),
            messages: vec![room_msg.clone()],
            more: true,
            gap: true,
        }) {
            Incoming::Backlog {
                room: r,
                messages,
                more: true,
                gap: true,
            } => {
                assert_eq!(r, room("lobby"));
                assert_eq!(messages, vec![room_msg.clone()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            round_trip(&ServerMsg::Backlog {
                room: room("lobby"),
                messages: vec![],
                more: false,
                gap: false
            }),
            Incoming::Backlog {
                more: false,
                gap: false,
                ..
            }
        ));
        assert!(matches!(
            round_trip(&ServerMsg::ServerPing),
            Incoming::ServerPing
        ));
        for auth in [AuthKind::Open, AuthKind::Password, AuthKind::Accounts] {
            assert!(matches!(
                round_trip(&ServerMsg::Hello {
                    auth,
                    features: Features { has_history: true },
                }),
                Incoming::Hello { auth: Some(parsed), features }
                    if parsed == auth && features == ["ref", "history"]
            ));
        }
        assert!(matches!(
            round_trip(&ServerMsg::PassNeeded),
            Incoming::PassNeeded
        ));
        assert!(matches!(
            round_trip(&ServerMsg::RoomList { rooms: vec![(room("a"), 2), (room("b"), 1)], more: true, omitted: 0 }),
            Incoming::RoomList { rooms, more: true, .. } if rooms == vec![(room("a"), 2), (room("b"), 1)]
        ));
        assert!(matches!(
            round_trip(&ServerMsg::error(Code::Conflict, "username bob is taken")),
            Incoming::Error { code: 409, error } if error == "username bob is taken"
        ));
    }

    #[test]
    fn refs_features_and_unknown_keys_and_codes_are_tolerated() {
        let received = parse_incoming(
            r#"{"code":210,"server":"riftd","version":"9","auth":"open","features":["ref","history"],"shiny":1}"#,
        )
        .unwrap();
        assert!(matches!(
            received.frame,
            Incoming::Hello { auth: Some(AuthKind::Open), features } if features == ["ref", "history"]
        ));
        let received = parse_incoming(r#"{"code":403,"error":"no","ref":"r7"}"#).unwrap();
        assert_eq!(received.reference.as_deref(), Some("r7"));
        assert!(matches!(
            parse_incoming(r#"{"code":299,"x":[1]}"#).unwrap().frame,
            Incoming::Unknown { code: 299 }
        ));
        assert!(matches!(
            parse_incoming(r#"{"code":210,"auth":"kerberos"}"#)
                .unwrap()
                .frame,
            Incoming::Hello { auth: None, .. }
        ));
    }

    #[test]
    fn malformed_frames_are_refused_not_guessed() {
        assert!(parse_incoming("not json").is_err());
        assert!(parse_incoming(r#"{"code":201,"room":"lobby"}"#).is_err());
        assert!(parse_incoming(r#"{"code":201,"new":"a\u001b[2J","room":"lobby"}"#).is_err());
        assert!(parse_incoming(r#"{"code":200}"#).is_err());
    }
}
