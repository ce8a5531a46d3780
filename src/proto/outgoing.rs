//! Requests as a client writes them: `Outgoing` into one JSON line,
//! `\n`-terminated, optionally with a `ref` the server echoes in its
//! answer or its refusal. Nothing here decides when to send what.

use super::{RoomName, Username};
use serde_json::{Map, Value};

/// One request a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Say {
        text: String,
        room: Option<RoomName>,
    },
    Rename {
        username: Username,
    },
    Dm {
        to: Username,
        text: String,
    },
    Who {
        room: Option<RoomName>,
    },
    Join {
        room: RoomName,
    },
    Part {
        room: RoomName,
    },
    History {
        room: RoomName,
        after: Option<u64>,
        limit: Option<u64>,
    },
    Rooms,
    /// The token is sent as a JSON string.
    Ping {
        token: Option<String>,
    },
    Quit,
    User {
        username: Username,
    },
    Pass {
        password: String,
    },
}

impl Outgoing {
    pub fn code(&self) -> u16 {
        match self {
            Outgoing::Say { .. } => 100,
            Outgoing::Rename { .. } => 101,
            Outgoing::Dm { .. } => 102,
            Outgoing::Who { .. } => 103,
            Outgoing::Join { .. } => 104,
            Outgoing::Part { .. } => 105,
            Outgoing::History { .. } => 106,
            Outgoing::Rooms => 107,
            Outgoing::Ping { .. } => 108,
            Outgoing::Quit => 109,
            Outgoing::User { .. } => 110,
            Outgoing::Pass { .. } => 111,
        }
    }

    /// The request as one JSON line, `\n` included; `reference` (1–64
    /// bytes) is sent as `"ref"` when given.
    pub fn to_line(&self, reference: Option<&str>) -> String {
        let mut map = Map::new();
        map.insert("code".to_owned(), Value::from(self.code()));
        let mut put = |key: &str, value: Value| {
            map.insert(key.to_owned(), value);
        };
        match self {
            Outgoing::Say { text, room } => {
                put("message", Value::from(text.as_str()));
                if let Some(room) = room {
                    put("room", Value::from(room.as_str()));
                }
            }
            Outgoing::Rename { username } | Outgoing::User { username } => {
                put("username", Value::from(username.as_str()));
            }
            Outgoing::Dm { to, text } => {
                put("to", Value::from(to.as_str()));
                put("message", Value::from(text.as_str()));
            }
            Outgoing::Who { room } => {
                if let Some(room) = room {
                    put("room", Value::from(room.as_str()));
                }
            }
            Outgoing::Join { room } | Outgoing::Part { room } => {
                put("room", Value::from(room.as_str()));
            }
            Outgoing::History { room, after, limit } => {
                put("room", Value::from(room.as_str()));
                if let Some(after) = after {
                    put("after", Value::from(*after));
                }
                if let Some(limit) = limit {
                    put("limit", Value::from(*limit));
                }
            }
            Outgoing::Ping { token } => {
                if let Some(token) = token {
                    put("token", Value::from(token.as_str()));
                }
            }
            Outgoing::Pass { password } => put("password", Value::from(password.as_str())),
            Outgoing::Rooms | Outgoing::Quit => {}
        }
        if let Some(reference) = reference {
            map.insert("ref".to_owned(), Value::from(reference));
        }
        let mut line = Value::Object(map).to_string();
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Request, parse_json};

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    /// The line as the server parses it today (it does not know `ref`
    /// yet): the ref is checked and removed first.
    fn server_reads(line: &str, reference: Option<&str>) -> Request {
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let mut value: Value = serde_json::from_str(line).unwrap();
        let object = value.as_object_mut().unwrap();
        assert_eq!(
            object.remove("ref").as_ref().and_then(Value::as_str),
            reference
        );
        parse_json(&value.to_string()).unwrap()
    }

    #[test]
    fn every_request_line_parses_with_the_servers_parser() {
        let read = |out: Outgoing| server_reads(&out.to_line(None), None);
        assert!(matches!(
            read(Outgoing::Say { text: "hi \"x\"\u{1}".into(), room: Some(room("rust")) }),
            Request::Say { text, room: Some(r) } if text == "hi \"x\"\u{1}" && r == room("rust")
        ));
        assert!(matches!(
            read(Outgoing::Say { text: "/me waves".into(), room: None }),
            Request::Say { text, room: None } if text == "/me waves"
        ));
        assert!(matches!(
            read(Outgoing::Rename { username: user("bob") }),
            Request::Rename { username } if username == user("bob")
        ));
        assert!(matches!(
            read(Outgoing::Dm { to: user("bob"), text: "psst".into() }),
            Request::Dm { to, text } if to == user("bob") && text == "psst"
        ));
        assert!(matches!(
            read(Outgoing::Who { room: None }),
            Request::Who { room: None }
        ));
        assert!(matches!(
            read(Outgoing::Who { room: Some(room("x")) }),
            Request::Who { room: Some(r) } if r == room("x")
        ));
        assert!(matches!(
            read(Outgoing::Join { room: room("x") }),
            Request::Join { room: r } if r == room("x")
        ));
        assert!(matches!(
            read(Outgoing::Part { room: room("x") }),
            Request::Part { room: Some(r) } if r == room("x")
        ));
        assert!(matches!(
            read(Outgoing::History { room: room("x"), after: Some(41), limit: Some(20) }),
            Request::History { room: Some(r), after: Some(41), limit: Some(20) } if r == room("x")
        ));
        assert!(matches!(
            read(Outgoing::History {
                room: room("x"),
                after: None,
                limit: None
            }),
            Request::History {
                after: None,
                limit: None,
                ..
            }
        ));
        assert!(matches!(read(Outgoing::Rooms), Request::Rooms));
        match read(Outgoing::Ping {
            token: Some("end-1".into()),
        }) {
            Request::Ping { token: Some(token) } => assert_eq!(token.get(), r#""end-1""#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(Outgoing::Ping { token: None }),
            Request::Ping { token: None }
        ));
        assert!(matches!(read(Outgoing::Quit), Request::Quit));
        assert!(matches!(
            read(Outgoing::User { username: user("alice") }),
            Request::User { username } if username == user("alice")
        ));
        assert!(matches!(
            read(Outgoing::Pass { password: "s3 \"cret".into() }),
            Request::Pass { password } if password == "s3 \"cret"
        ));
    }

    #[test]
    fn a_ref_is_sent_as_the_ref_key() {
        let line = Outgoing::Join { room: room("x") }.to_line(Some("r12"));
        assert!(matches!(
            server_reads(&line, Some("r12")),
            Request::Join { .. }
        ));
    }
}
