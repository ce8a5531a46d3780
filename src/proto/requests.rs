//! Client requests: `Request`, parsed from one JSON-mode line
//! (`parse_json_line`, with the `Ref` a client may tie to it, or
//! `parse_json`) or one text-mode line (`parse_text`, read as `TextExpect`
//! says), and `ProtoError`, why a line was refused (always a 400). Nothing
//! here decides what a request means for the chat.

use super::chars::is_invisible;
use super::{Code, RoomName, Username};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use thiserror::Error;

/// Longest chat message, in bytes after JSON decoding. A 200 frame carrying it
/// (id, ts, names, escaping) still fits comfortably in a client's line buffer.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Why a name or a frame was refused; every variant is a 400 on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    #[error("not a JSON object: {0}")]
    BadJson(String),
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown code {0}")]
    UnknownCode(String),
    #[error("field `{field}` is not used by code {code}")]
    UnusedField { field: &'static str, code: u16 },
    #[error("username must be 1-32 letters, digits, '_' or '-'")]
    InvalidUsername,
    #[error("the username `{0}` is reserved")]
    ReservedUsername(String),
    #[error("room name must be 1-32 letters, digits, '_' or '-', with an optional leading '#'")]
    InvalidRoom,
    #[error("message is empty")]
    EmptyMessage,
    #[error("message is longer than {MAX_MESSAGE_BYTES} bytes")]
    MessageTooLong,
    #[error("unknown command /{0}; type /help")]
    UnknownCommand(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("this is not an HTTP server; riftd speaks line-delimited JSON or plain text")]
    Http,
}

impl ProtoError {
    pub fn code(&self) -> Code {
        Code::BadRequest
    }
}

/// A PING token, echoed byte for byte, whatever JSON it is.
pub type Token = Box<RawValue>;

/// Longest `ref` a client may tie to a JSON frame, in bytes (UTF-8).
pub const MAX_REF_BYTES: usize = 64;

/// What a `ref` must be, as its 400 says.
const REF_EXPECTED: &str = "a string of 1 to 64 bytes without control characters";

/// The label a JSON client may tie to one frame (`"ref"`): 1 to
/// `MAX_REF_BYTES` bytes of UTF-8 without control characters. The hub
/// echoes it in the frames that answer that request alone. Held inline, so
/// a frame that carries one allocates nothing to keep it, and a frame
/// without one costs nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Ref {
    len: u8,
    bytes: [u8; MAX_REF_BYTES],
}

impl Ref {
    /// A ref from its decoded JSON string; a 400 naming `ref` otherwise.
    pub fn parse(text: &str) -> Result<Ref, ProtoError> {
        let bad = ProtoError::WrongType {
            field: "ref",
            expected: REF_EXPECTED,
        };
        let len = match u8::try_from(text.len()) {
            Ok(len) if (1..=MAX_REF_BYTES).contains(&text.len()) => len,
            _ => return Err(bad),
        };
        if text.chars().any(char::is_control) {
            return Err(bad);
        }
        let mut bytes = [0; MAX_REF_BYTES];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Ok(Ref { len, bytes })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("a Ref holds the UTF-8 string it was parsed from")
    }
}

impl std::fmt::Debug for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ref({:?})", self.as_str())
    }
}

/// One parsed client frame.
#[derive(Debug)]
pub enum Request {
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
        room: Option<RoomName>,
    },
    Rooms,
    /// Messages of a room after an id, or the last `limit`.
    History {
        room: Option<RoomName>,
        after: Option<u64>,
        limit: Option<usize>,
    },
    Ping {
        token: Option<Token>,
    },
    Quit,
    User {
        username: Username,
    },
    Pass {
        password: String,
    },
    /// Text mode's `/help`; it has no JSON code.
    Help,
}

impl Request {
    /// The code the state machine checks. `/help` is checked like a PING:
    /// a local answer that every live state allows.
    pub fn code(&self) -> Code {
        match self {
            Request::Say { .. } => Code::Say,
            Request::Rename { .. } => Code::Rename,
            Request::Dm { .. } => Code::Dm,
            Request::Who { .. } => Code::Who,
            Request::Join { .. } => Code::Join,
            Request::Part { .. } => Code::Part,
            Request::Rooms => Code::Rooms,
            Request::History { .. } => Code::History,
            Request::Ping { .. } | Request::Help => Code::Ping,
            Request::Quit => Code::Quit,
            Request::User { .. } => Code::User,
            Request::Pass { .. } => Code::Pass,
        }
    }
}

/// Every key a client frame may carry, each kept as raw JSON so a mistyped
/// one can be reported by name. No `serde_json::Value` is built.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    code: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    username: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    password: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    message: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    after: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    limit: Option<&'a RawValue>,
    /// Any code may carry a ref (`Ref`).
    #[serde(rename = "ref", borrow, default, deserialize_with = "present")]
    reference: Option<&'a RawValue>,
}

/// Keeps a key that is present with the value `null` (serde would make it
/// `None`), so a PING token of `null` is echoed and a null room is refused.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

fn string_field(field: &'static str, raw: Option<&RawValue>) -> Result<String, ProtoError> {
    let raw = raw.ok_or(ProtoError::MissingField(field))?;
    serde_json::from_str::<String>(raw.get()).map_err(|_| ProtoError::WrongType {
        field,
        expected: "a string",
    })
}

fn optional_string_field(
    field: &'static str,
    raw: Option<&RawValue>,
) -> Result<Option<String>, ProtoError> {
    raw.map(|raw| string_field(field, Some(raw))).transpose()
}

fn optional_integer_field(
    field: &'static str,
    raw: Option<&RawValue>,
) -> Result<Option<u64>, ProtoError> {
    raw.map(|raw| {
        serde_json::from_str::<u64>(raw.get()).map_err(|_| ProtoError::WrongType {
            field,
            expected: "a non-negative integer",
        })
    })
    .transpose()
}
/// True when `text` would show nothing: only white space and invisible
/// characters.
fn is_blank(text: &str) -> bool {
    text.chars()
        .all(|ch| ch.is_whitespace() || is_invisible(ch))
}

/// A message shows something: not only white space and invisible
/// characters, nor an action (`/me `) of only those.
fn message_text(text: String) -> Result<String, ProtoError> {
    if is_blank(&text) || text.strip_prefix("/me ").is_some_and(is_blank) {
        Err(ProtoError::EmptyMessage)
    } else if text.len() > MAX_MESSAGE_BYTES {
        Err(ProtoError::MessageTooLong)
    } else {
        Ok(text)
    }
}

fn optional_room(raw: Option<&RawValue>) -> Result<Option<RoomName>, ProtoError> {
    optional_string_field("room", raw)?
        .map(|room| RoomName::parse(&room))
        .transpose()
}

/// One JSON-mode line: the request or why it is refused, and the ref the
/// client tied to it. The ref is read whenever the line is a JSON object of
/// known, distinct keys and the ref itself is valid, so a 400 for another
/// field can carry it; a bad ref is refused, and its 400 has none.
#[derive(Debug)]
pub struct JsonLine {
    pub request: Result<Request, ProtoError>,
    pub reference: Option<Ref>,
}

/// Parses one JSON-mode line into a request, without its ref.
pub fn parse_json(line: &str) -> Result<Request, ProtoError> {
    parse_json_line(line).request
}

/// Parses one JSON-mode line into a request and its ref.
pub fn parse_json_line(line: &str) -> JsonLine {
    let refused = |error| JsonLine {
        request: Err(error),
        reference: None,
    };
    let frame = match raw_frame(line) {
        Ok(frame) => frame,
        Err(error) => return refused(error),
    };
    let reference = match frame.reference.map(parse_ref).transpose() {
        Ok(reference) => reference,
        Err(error) => return refused(error),
    };
    JsonLine {
        request: request_of(frame),
        reference,
    }
}

fn parse_ref(raw: &RawValue) -> Result<Ref, ProtoError> {
    let bad = || ProtoError::WrongType {
        field: "ref",
        expected: REF_EXPECTED,
    };
    // Borrowed unless the string has escapes.
    let text: Cow<'_, str> = match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(serde_json::from_str::<String>(raw.get()).map_err(|_| bad())?),
    };
    Ref::parse(&text)
}

fn raw_frame(line: &str) -> Result<RawFrame<'_>, ProtoError> {
    // serde accepts an array for a struct; the protocol does not.
    if !line.trim_start().starts_with('{') {
        return Err(ProtoError::BadJson("expected `{`".to_owned()));
    }
    serde_json::from_str(line).map_err(|error| {
        let mut reason = error.to_string();
        // serde_json appends " at line 1 column N"; keep the message short.
        if let Some(at) = reason.find(" at line ") {
            reason.truncate(at);
        }
        ProtoError::BadJson(reason)
    })
}

fn request_of(frame: RawFrame<'_>) -> Result<Request, ProtoError> {
    let raw_code = frame.code.ok_or(ProtoError::MissingField("code"))?;
    let number: u64 = serde_json::from_str(raw_code.get()).map_err(|_| ProtoError::WrongType {
        field: "code",
        expected: "an integer",
    })?;
    let code =
        Code::client_code(number).ok_or_else(|| ProtoError::UnknownCode(number.to_string()))?;
    let present = [
        ("username", frame.username.is_some()),
        ("password", frame.password.is_some()),
        ("message", frame.message.is_some()),
        ("room", frame.room.is_some()),
        ("to", frame.to.is_some()),
        ("token", frame.token.is_some()),
        ("after", frame.after.is_some()),
        ("limit", frame.limit.is_some()),
    ];
    let allowed: &[&str] = match code {
        Code::Say => &["message", "room"],
        Code::Rename | Code::User => &["username"],
        Code::Dm => &["to", "message"],
        Code::Who | Code::Join | Code::Part => &["room"],
        Code::History => &["room", "after", "limit"],
        Code::Ping => &["token"],
        Code::Pass => &["password"],
        _ => &[],
    };
    if let Some((field, _)) = present
        .iter()
        .find(|(field, is_present)| *is_present && !allowed.contains(field))
    {
        return Err(ProtoError::UnusedField {
            field,
            code: code.number(),
        });
    }
    let username = || -> Result<Username, ProtoError> {
        Username::parse(&string_field("username", frame.username)?)
    };
    Ok(match code {
        Code::Say => Request::Say {
            text: message_text(string_field("message", frame.message)?)?,
            room: optional_room(frame.room)?,
        },
        Code::Rename => Request::Rename {
            username: username()?,
        },
        Code::User => Request::User {
            username: username()?,
        },
        Code::Dm => Request::Dm {
            to: Username::parse(&string_field("to", frame.to)?)?,
            text: message_text(string_field("message", frame.message)?)?,
        },
        Code::Who => Request::Who {
            room: optional_room(frame.room)?,
        },
        Code::Join => Request::Join {
            room: RoomName::parse(&string_field("room", frame.room)?)?,
        },
        Code::Part => Request::Part {
            room: Some(RoomName::parse(&string_field("room", frame.room)?)?),
        },
        Code::Rooms => Request::Rooms,
        Code::History => Request::History {
            room: optional_room(frame.room)?,
            after: optional_integer_field("after", frame.after)?,
            limit: optional_integer_field("limit", frame.limit)?
                .map(|limit| usize::try_from(limit).unwrap_or(usize::MAX)),
        },
        Code::Ping => Request::Ping {
            token: frame.token.map(RawValue::to_owned),
        },
        Code::Quit => Request::Quit,
        Code::Pass => Request::Pass {
            password: string_field("password", frame.password)?,
        },
        _ => return Err(ProtoError::UnknownCode(number.to_string())),
    })
}

/// What a text-mode line means depends on where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextExpect {
    Username,
    Password,
    Chat,
}

/// Parses one text-mode line. Chat lines are messages unless they start with
/// `/`; `//` sends a message that starts with `/`.
pub fn parse_text(line: &str, expect: TextExpect) -> Result<Request, ProtoError> {
    match expect {
        TextExpect::Username => {
            if looks_like_http(line) {
                return Err(ProtoError::Http);
            }
            let name = line.trim();
            // Let a user type "/quit" or "/help" before choosing a name.
            match prompt_command(name) {
                Some(request) => Ok(request),
                None => Ok(Request::User {
                    username: Username::parse(name)?,
                }),
            }
        }
        // At the password prompt too: "/quit" and "/help" are commands, not
        // failed passwords (so a text user cannot have a password that is
        // exactly one of them; a JSON client can).
        TextExpect::Password => Ok(
            prompt_command(line.trim()).unwrap_or_else(|| Request::Pass {
                password: line.to_owned(),
            }),
        ),
        TextExpect::Chat => parse_chat_line(line),
    }
}

/// The commands a text user may type at the name and password prompts.
fn prompt_command(line: &str) -> Option<Request> {
    if line.eq_ignore_ascii_case("/quit") {
        Some(Request::Quit)
    } else if line.eq_ignore_ascii_case("/help") {
        Some(Request::Help)
    } else {
        None
    }
}

/// True for the request line of an HTTP client that dialled the chat port.
pub fn looks_like_http(line: &str) -> bool {
    const METHODS: [&str; 9] = [
        "GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ",
    ];
    METHODS.iter().any(|method| line.starts_with(method)) && line.contains(" HTTP/")
}

fn parse_chat_line(line: &str) -> Result<Request, ProtoError> {
    if let Some(escaped) = line.strip_prefix("//") {
        return Ok(Request::Say {
            text: message_text(format!("/{escaped}"))?,
            room: None,
        });
    }
    let Some(command_line) = line.strip_prefix('/') else {
        return Ok(Request::Say {
            text: message_text(line.to_owned())?,
            room: None,
        });
    };
    let (command, rest) = command_line
        .split_once(char::is_whitespace)
        .map(|(command, rest)| (command, rest.trim()))
        .unwrap_or((command_line, ""));
    let mut words = rest.split_whitespace();
    let room_arg = |usage| -> Result<RoomName, ProtoError> {
        RoomName::parse(
            rest.split_whitespace()
                .next()
                .ok_or(ProtoError::Usage(usage))?,
        )
    };
    match command.to_ascii_lowercase().as_str() {
        "nick" => Ok(Request::Rename {
            username: Username::parse(words.next().ok_or(ProtoError::Usage("/nick NAME"))?)?,
        }),
        "msg" => {
            let (to, text) = rest
                .split_once(char::is_whitespace)
                .ok_or(ProtoError::Usage("/msg NAME TEXT"))?;
            Ok(Request::Dm {
                to: Username::parse(to)?,
                text: message_text(text.trim_start().to_owned())?,
            })
        }
        "join" => Ok(Request::Join {
            room: room_arg("/join ROOM")?,
        }),
        "part" | "leave" => Ok(Request::Part {
            room: words.next().map(RoomName::parse).transpose()?,
        }),
        "who" | "names" => Ok(Request::Who {
            room: words.next().map(RoomName::parse).transpose()?,
        }),
        "rooms" | "list" => Ok(Request::Rooms),
        "history" => Ok(Request::History {
            room: None,
            after: None,
            limit: match words.next() {
                Some(count) => Some(
                    count
                        .parse()
                        .map_err(|_| ProtoError::Usage("/history [COUNT]"))?,
                ),
                None => None,
            },
        }),
        "me" if rest.is_empty() => Err(ProtoError::Usage("/me TEXT")),
        "me" => Ok(Request::Say {
            text: message_text(format!("/me {rest}"))?,
            room: None,
        }),
        "ping" => Ok(Request::Ping { token: None }),
        "quit" | "exit" => Ok(Request::Quit),
        "help" => Ok(Request::Help),
        _ => Err(ProtoError::UnknownCommand(
            command.chars().take(32).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frames::HELP_TEXT;

    #[test]
    fn every_client_code_parses() {
        let cases = [
            (r#"{"code":100,"message":"hi"}"#, Code::Say),
            (r##"{"code":100,"message":"hi","room":"#r"}"##, Code::Say),
            (r#"{"code":101,"username":"bob"}"#, Code::Rename),
            (r#"{"code":102,"to":"bob","message":"psst"}"#, Code::Dm),
            (r#"{"code":103}"#, Code::Who),
            (r#"{"code":103,"room":"x"}"#, Code::Who),
            (r#"{"code":104,"room":"x"}"#, Code::Join),
            (r#"{"code":105,"room":"x"}"#, Code::Part),
            (r#"{"code":107}"#, Code::Rooms),
            (r#"{"code":108}"#, Code::Ping),
            (r#"{"code":108,"token":[1,{"a":null}]}"#, Code::Ping),
            (r#"{"code":109}"#, Code::Quit),
            (r#"{"code":110,"username":"alice"}"#, Code::User),
            (r#"{"code":111,"password":"pw"}"#, Code::Pass),
        ];
        for (line, code) in cases {
            assert_eq!(parse_json(line).unwrap().code(), code, "{line}");
        }
    }

    #[test]
    fn bad_json_frames_are_400_with_a_reason_naming_the_problem() {
        let cases = [
            ("{", "not a JSON object"),
            ("[1]", "not a JSON object"),
            (r#"{"username":"x"}"#, "missing field `code`"),
            (r#"{"code":"110"}"#, "field `code` must be an integer"),
            (r#"{"code":-1}"#, "field `code` must be an integer"),
            (r#"{"code":999}"#, "unknown code 999"),
            (r#"{"code":110}"#, "missing field `username`"),
            (
                r#"{"code":110,"username":5}"#,
                "field `username` must be a string",
            ),
            (r#"{"code":110,"username":"a","x":1}"#, "unknown field `x`"),
            (
                r#"{"code":110,"code":110,"username":"a"}"#,
                "duplicate field `code`",
            ),
            (
                r#"{"code":108,"room":"a"}"#,
                "field `room` is not used by code 108",
            ),
            (r#"{"code":100,"message":""}"#, "message is empty"),
            (r#"{"code":100,"message":"  "}"#, "message is empty"),
            (r#"{"code":1e400}"#, "field `code` must be an integer"),
            (
                r#"{"code":100,"message":"x","room":null}"#,
                "field `room` must be a string",
            ),
        ];
        for (line, reason) in cases {
            let error = parse_json(line).unwrap_err();
            assert_eq!(error.code(), Code::BadRequest);
            assert!(
                error.to_string().contains(reason),
                "{line}: {error} lacks {reason}"
            );
        }
    }

    #[test]
    fn issue_13_a_ref_is_read_with_any_code_and_kept_when_another_field_is_refused() {
        let parsed = parse_json_line(r#"{"code":107,"ref":"r1"}"#);
        assert!(matches!(parsed.request, Ok(Request::Rooms)));
        assert_eq!(parsed.reference.as_ref().map(Ref::as_str), Some("r1"));
        let parsed = parse_json_line(r#"{"ref":"r2","code":100,"message":""}"#);
        assert_eq!(parsed.request.unwrap_err(), ProtoError::EmptyMessage);
        assert_eq!(parsed.reference.as_ref().map(Ref::as_str), Some("r2"));
        // Unreadable lines and bad refs have no ref.
        for line in [
            r#"{"code":108,"ref":"r3","x":1}"#,
            r#"{"code":108,"ref":"r4","ref":"r4"}"#,
            r#"{"code":108,"ref":1}"#,
            r#"{"code":108,"ref":"\u0000"}"#,
        ] {
            let parsed = parse_json_line(line);
            assert!(parsed.request.is_err(), "{line}");
            assert!(parsed.reference.is_none(), "{line}");
        }
        assert!(parse_json(r#"{"code":109,"ref":"q"}"#).is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let line = format!(r#"{{"code":108,"token":{}}}"#, "[".repeat(8000));
        assert!(parse_json(&line).is_err());
    }

    #[test]
    fn a_message_over_the_cap_is_refused() {
        let line = format!(
            r#"{{"code":100,"message":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES + 1)
        );
        assert_eq!(parse_json(&line).unwrap_err(), ProtoError::MessageTooLong);
    }

    #[test]
    fn text_lines_parse_by_state() {
        assert!(matches!(
            parse_text(" alice ", TextExpect::Username),
            Ok(Request::User { .. })
        ));
        assert!(matches!(
            parse_text("not valid", TextExpect::Username),
            Err(ProtoError::InvalidUsername)
        ));
        assert!(matches!(
            parse_text("GET / HTTP/1.1", TextExpect::Username),
            Err(ProtoError::Http)
        ));
        assert!(matches!(
            parse_text("s3cret ", TextExpect::Password),
            Ok(Request::Pass { password }) if password == "s3cret "
        ));
        let cases: [(&str, Code); 14] = [
            ("hello", Code::Say),
            ("//slash", Code::Say),
            ("/me waves", Code::Say),
            ("/nick bob", Code::Rename),
            ("/msg bob hi there", Code::Dm),
            ("/join #rust", Code::Join),
            ("/part", Code::Part),
            ("/part rust", Code::Part),
            ("/who", Code::Who),
            ("/rooms", Code::Rooms),
            ("/ping", Code::Ping),
            ("/quit", Code::Quit),
            ("/QUIT", Code::Quit),
            ("/help", Code::Ping),
        ];
        for (line, code) in cases {
            assert_eq!(
                parse_text(line, TextExpect::Chat).unwrap().code(),
                code,
                "{line}"
            );
        }
        for bad in [
            "/msg bob",
            "/nick",
            "/join",
            "/bogus",
            "/msg bad.name hi",
            "/me",
            "/me  ",
        ] {
            assert!(parse_text(bad, TextExpect::Chat).is_err(), "{bad}");
        }
    }

    #[test]
    fn issue_11_quit_and_help_at_the_password_prompt_are_commands_not_passwords() {
        for line in ["/quit", "/QUIT "] {
            let parsed = parse_text(line, TextExpect::Password);
            assert!(matches!(parsed, Ok(Request::Quit)), "{line:?}");
        }
        for line in ["/help", " /Help"] {
            let parsed = parse_text(line, TextExpect::Password);
            assert!(matches!(parsed, Ok(Request::Help)), "{line:?}");
        }
        // Anything else, other slash words included, is a password.
        for line in ["/quitx", "/ping", "/help me", "hunter2"] {
            let parsed = parse_text(line, TextExpect::Password);
            assert!(
                matches!(&parsed, Ok(Request::Pass { password }) if password == line),
                "{line:?}"
            );
        }
    }

    /// Every command word `parse_chat_line` knows, aliases included.
    const TEXT_COMMANDS: [&str; 15] = [
        "nick", "msg", "join", "part", "leave", "who", "names", "rooms", "list", "history", "me",
        "ping", "quit", "exit", "help",
    ];

    #[test]
    fn issue_11_help_lists_every_command_the_text_parser_accepts_and_no_other() {
        // Each known command is accepted (with an argument where it needs
        // one) and named in /help ...
        for command in TEXT_COMMANDS {
            let line = format!("/{command} bob hello");
            assert!(
                !matches!(
                    parse_text(&line, TextExpect::Chat),
                    Err(ProtoError::UnknownCommand(_))
                ),
                "{line}"
            );
            assert!(
                HELP_TEXT.contains(&format!("/{command} "))
                    || HELP_TEXT.contains(&format!("/{command}\n"))
                    || HELP_TEXT.ends_with(&format!("/{command}")),
                "/help does not name /{command}"
            );
        }
        // ... and every /word that /help names is a command the parser
        // knows (so the sweep above is complete).
        let named: Vec<&str> = HELP_TEXT
            .split(|c: char| c.is_whitespace() || c == ';' || c == '(' || c == ')')
            .filter_map(|word| word.strip_prefix('/'))
            .filter(|word| !word.is_empty() && !word.starts_with('/'))
            .collect();
        for word in &named {
            assert!(TEXT_COMMANDS.contains(word), "/help names unknown /{word}");
        }
        // Every unknown word is refused, so the list above is the whole set.
        for word in ["bogus", "user", "pass", "kick", "away"] {
            assert!(matches!(
                parse_text(&format!("/{word}"), TextExpect::Chat),
                Err(ProtoError::UnknownCommand(_))
            ));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// The stable stand-in for `fuzz/fuzz_targets/frame_parser.rs`: any
        /// line, JSON-ish or not, parses to a request or a 400, never a panic.
        #[test]
        fn any_line_parses_or_is_refused_without_panicking(
            line in proptest::prelude::prop_oneof![
                proptest::prelude::any::<String>(),
                "\\{\"code\":1[0-1][0-9](,\"[a-z]{1,8}\":(\"[^\"]{0,20}\"|[0-9]{1,25}|null|\\[|\\{|true))*\\}?",
                "/[a-z]{0,8}( [^\n]{0,30})?",
            ]
        ) {
            if let Err(error) = parse_json(&line) {
                proptest::prop_assert_eq!(error.code(), Code::BadRequest);
            }
            for expect in [TextExpect::Username, TextExpect::Password, TextExpect::Chat] {
                let _ = parse_text(&line, expect);
            }
        }
    }

    #[test]
    fn a_message_of_only_invisible_characters_is_empty_in_both_modes() {
        for blank in [
            "\u{200b}",
            "\u{feff}",
            " \u{200b}\u{200d} \u{2060}",
            "\u{202e}",
            "\u{e0020}\u{e0041}",
            "\u{3000}\u{200b}",
            "\u{fff9}\u{fffa}\u{fffb}",
        ] {
            let say = serde_json::json!({"code": 100, "message": blank}).to_string();
            assert_eq!(
                parse_json(&say).unwrap_err(),
                ProtoError::EmptyMessage,
                "{blank:?}"
            );
            let dm = serde_json::json!({"code": 102, "to": "bob", "message": blank}).to_string();
            assert_eq!(
                parse_json(&dm).unwrap_err(),
                ProtoError::EmptyMessage,
                "{blank:?}"
            );
            let action = serde_json::json!({"code": 100, "message": format!("/me {blank}")});
            assert_eq!(
                parse_json(&action.to_string()).unwrap_err(),
                ProtoError::EmptyMessage,
                "{blank:?}"
            );
            for line in [
                blank.to_owned(),
                format!("/msg bob {blank}"),
                format!("/me {blank}"),
            ] {
                assert!(
                    matches!(
                        parse_text(&line, TextExpect::Chat),
                        Err(ProtoError::EmptyMessage | ProtoError::Usage(_))
                    ),
                    "{line:?}"
                );
            }
        }
        // Visible text around invisible characters is a message.
        assert!(parse_text("a\u{200b}", TextExpect::Chat).is_ok());
        assert!(parse_text("/me \u{200b}waves", TextExpect::Chat).is_ok());
    }
}
