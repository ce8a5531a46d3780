//! `Code`: every code on the wire with its number, and which of them a
//! client may send. Nothing here parses or renders a frame.

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
    Paused = 213,
    Resumed = 214,
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
    pub(super) const CLIENT: [Code; 12] = [
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

    pub(super) fn client_code(number: u64) -> Option<Code> {
        Code::CLIENT
            .into_iter()
            .find(|code| u64::from(code.number()) == number)
    }
}
