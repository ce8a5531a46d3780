//! The wire vocabulary: codes, names, client requests and server frames, and
//! their two spellings (one JSON object per line, or readable text lines).
//!
//! This is the only module that knows JSON. It never does IO and never decides
//! what a request means for the chat: it only parses and renders. See
//! `design/protocol.md` for every frame.

use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use std::fmt;
use thiserror::Error;

/// Longest chat message, in bytes after JSON decoding. A 200 frame carrying it
/// (id, ts, names, escaping) still fits comfortably in a client's line buffer.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest user or room name, in bytes (all names are ASCII).
pub const MAX_NAME_BYTES: usize = 32;
/// Names nobody may take, so that server lines cannot be impersonated.
const RESERVED_USERNAMES: [&str; 3] = ["server", "riftd", "admin"];

/// Every code on the wire, with its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Code {
    Say = 100,
    Rename = 101,
    Dm = 102,
    Who = 103,
    Join = 104,
    Part = 105,
    History = 106,
    Rooms = 107,
    Ping = 108,
    Quit = 109,
    User = 110,
    Pass = 111,
    Message = 200,
    Connected = 201,
    YourName = 202,
    Renamed = 203,
    Disconnected = 204,
    GoingDown = 205,
    Users = 206,
    Pong = 207,
    Backlog = 208,
    ServerPing = 209,
    Hello = 210,
    PassNeeded = 211,
    RoomList = 212,
    BadRequest = 400,
    WrongPassword = 401,
    Forbidden = 403,
    NotFound = 404,
    Timeout = 408,
    Conflict = 409,
    TooLong = 413,
    TooMany = 429,
    Unavailable = 503,
}

impl Code {
    /// The codes a client may send, for parsing.
    const CLIENT: [Code; 12] = [
        Code::History,
        Code::Say,
        Code::Rename,
        Code::Dm,
        Code::Who,
        Code::Join,
        Code::Part,
        Code::Rooms,
        Code::Ping,
        Code::Quit,
        Code::User,
        Code::Pass,
    ];

    pub fn number(self) -> u16 {
        self as u16
    }

    fn client_code(number: u64) -> Option<Code> {
        Code::CLIENT
            .into_iter()
            .find(|code| u64::from(code.number()) == number)
    }
}

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

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.bytes().all(is_name_byte)
}

/// A valid name (at most `MAX_NAME_BYTES` ASCII name bytes) stored inline,
/// without a heap allocation: names are copied into every message and held
/// by every connection, so they cost no `malloc` and no pointer chase.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ShortName {
    /// The name, zero-padded; names hold no zero byte, so the derived
    /// ordering is the names' byte order.
    bytes: [u8; MAX_NAME_BYTES],
    len: u8,
}

impl ShortName {
    /// `name` must satisfy `is_valid_name`.
    fn new(name: &str) -> ShortName {
        let mut bytes = [0; MAX_NAME_BYTES];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        ShortName {
            bytes,
            len: name.len() as u8,
        }
    }

    fn as_str(&self) -> &str {
        // Built from a valid (ASCII) name only.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// A valid username, as the user spelled it. Uniqueness is case-insensitive:
/// compare `key()`s, display the name itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(ShortName);

/// A username folded to lower case: what decides uniqueness.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey(ShortName);

impl Username {
    pub fn parse(name: &str) -> Result<Username, ProtoError> {
        if !is_valid_name(name) {
            return Err(ProtoError::InvalidUsername);
        }
        if RESERVED_USERNAMES
            .iter()
            .any(|reserved| reserved.eq_ignore_ascii_case(name))
        {
            return Err(ProtoError::ReservedUsername(name.to_owned()));
        }
        Ok(Username(ShortName::new(name)))
    }

    /// The case-folded form that decides uniqueness.
    pub fn key(&self) -> NameKey {
        let mut folded = self.0.clone();
        folded.bytes.make_ascii_lowercase();
        NameKey(folded)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl NameKey {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Username").field(&self.as_str()).finish()
    }
}

impl fmt::Debug for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NameKey").field(&self.as_str()).finish()
    }
}

/// A valid room name in its canonical form: lower case, without the optional
/// leading `#`, so `#Lobby` and `lobby` are the same room.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(ShortName);

impl RoomName {
    pub fn parse(name: &str) -> Result<RoomName, ProtoError> {
        let bare = name.strip_prefix('#').unwrap_or(name);
        if !is_valid_name(bare) {
            return Err(ProtoError::InvalidRoom);
        }
        let mut room = ShortName::new(bare);
        room.bytes.make_ascii_lowercase();
        Ok(RoomName(room))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RoomName").field(&self.as_str()).finish()
    }
}

/// A PING token, echoed byte for byte, whatever JSON it is.
pub type Token = Box<RawValue>;

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

/// True for a character that shows nothing yet changes what a terminal
/// shows around it or hides text: Unicode's default-ignorable code points,
/// which include the bidi embeddings, overrides, isolates and marks
/// (U+202A–E, U+2066–9, U+200E, U+200F, U+061C), the zero-width characters
/// (U+200B–D, U+2060, U+FEFF), the soft hyphen, variation selectors, the
/// Hangul fillers and the tag characters (U+E0000–E007F).
fn is_invisible(ch: char) -> bool {
    matches!(
        ch,
        '\u{ad}'
            | '\u{34f}'
            | '\u{61c}'
            | '\u{115f}'..='\u{1160}'
            | '\u{17b4}'..='\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fffb}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// True for a format control that is not default-ignorable but still
/// changes how the text around it is laid out (Unicode category Cf): the
/// prepended concatenation marks (U+0600–5, U+06DD, U+070F, U+0890–1,
/// U+08E2, U+110BD, U+110CD) span the characters after them, and the
/// Egyptian hieroglyph format controls (U+13430–1345F) stack them.
fn is_format_control(ch: char) -> bool {
    matches!(
        ch,
        '\u{600}'..='\u{605}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1345f}'
    )
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

/// Parses one JSON-mode line into a request.
pub fn parse_json(line: &str) -> Result<Request, ProtoError> {
    // serde accepts an array for a struct; the protocol does not.
    if !line.trim_start().starts_with('{') {
        return Err(ProtoError::BadJson("expected `{`".to_owned()));
    }
    let frame: RawFrame = serde_json::from_str(line).map_err(|error| {
        let mut reason = error.to_string();
        // serde_json appends " at line 1 column N"; keep the message short.
        if let Some(at) = reason.find(" at line ") {
            reason.truncate(at);
        }
        ProtoError::BadJson(reason)
    })?;
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
    Error {
        code: Code,
        error: String,
    },
    /// Text mode's `/help` page; JSON clients never receive it.
    Help,
}

impl ServerMsg {
    pub fn error(code: Code, error: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            code,
            error: error.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
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
            ServerMsg::Error { code, .. } => *code,
            ServerMsg::Help => Code::Rooms,
        }
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
            ServerMsg::Hello { auth } => {
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

const HELP_TEXT: &str = "\
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
fn escape_controls(text: &str) -> String {
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

/// One history record as stored on disk: the `message` object of a 200
/// frame on one line.
pub fn history_record(message: &ChatMessage) -> Vec<u8> {
    let mut line = Vec::with_capacity(96 + message.text.len());
    write_history_record(message, &mut line);
    line
}

/// Appends the journal record of `message`, `\n` included.
pub fn write_history_record(message: &ChatMessage, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and every field serialises.
    serde_json::to_writer(&mut *out, &MessageBody(message)).expect("records always serialise");
    out.push(b'\n');
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    id: u64,
    ts: u64,
    room: String,
    from: String,
    text: String,
}

/// Parses one history record; anything else (a torn or corrupt line) is
/// an error for the caller to report.
pub fn parse_history_record(line: &str) -> Result<ChatMessage, String> {
    let record: RawRecord = serde_json::from_str(line).map_err(|error| error.to_string())?;
    Ok(ChatMessage {
        id: record.id,
        ts: record.ts,
        target: Target::Room(RoomName::parse(&record.room).map_err(|error| error.to_string())?),
        from: Username::parse(&record.from).map_err(|error| error.to_string())?,
        text: record.text,
    })
}

/// Appends the journal's id reservation record, `{"next_id":N}\n`: every
/// id handed out (to room and private messages alike) is below N.
pub fn write_id_reservation(next_id: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{{\"next_id\":{next_id}}}\n").as_bytes());
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReservation {
    next_id: u64,
}

/// Parses an id reservation record (`{"next_id":N}`).
pub fn parse_id_reservation(line: &str) -> Result<u64, String> {
    serde_json::from_str::<RawReservation>(line)
        .map(|record| record.next_id)
        .map_err(|error| error.to_string())
}

struct MessageBody<'a>(&'a ChatMessage);

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
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("code", &self.code().number())?;
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
            | ServerMsg::ServerPing => {}
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
            ServerMsg::Hello { auth } => {
                map.serialize_entry("server", "riftd")?;
                map.serialize_entry("version", env!("CARGO_PKG_VERSION"))?;
                map.serialize_entry("auth", auth.as_str())?;
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
    fn usernames_follow_the_charset_and_length_rules() {
        assert!(Username::parse("alice_B-9").is_ok());
        assert!(Username::parse(&"a".repeat(32)).is_ok());
        assert_eq!(
            Username::parse(&"a".repeat(33)),
            Err(ProtoError::InvalidUsername)
        );
        for bad in ["", "al ice", "é", "a.b", "#x"] {
            assert_eq!(
                Username::parse(bad),
                Err(ProtoError::InvalidUsername),
                "{bad}"
            );
        }
        assert!(matches!(
            Username::parse("Server"),
            Err(ProtoError::ReservedUsername(_))
        ));
        assert_eq!(user("Alice").key(), user("aLICE").key());
    }

    #[test]
    fn room_names_are_canonical_without_hash_and_lower_case() {
        assert_eq!(room("#Lobby"), room("lobby"));
        assert_eq!(room("#Lobby").as_str(), "lobby");
        for bad in ["", "#", "##x", "a b", &"r".repeat(33)] {
            assert_eq!(RoomName::parse(bad), Err(ProtoError::InvalidRoom), "{bad}");
        }
    }

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
        assert_eq!(
            json(&ServerMsg::error(Code::Forbidden, "no")),
            "{\"code\":403,\"error\":\"no\"}\n"
        );
        let hello = json(&ServerMsg::Hello {
            auth: AuthKind::Open,
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
        assert_eq!(
            text(&ServerMsg::error(Code::NotFound, "no such user bob")),
            "! no such user bob (404)\n"
        );
    }
}
