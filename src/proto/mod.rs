//! The wire vocabulary: codes, names, client requests and server frames, and
//! their two spellings (one JSON object per line, or readable text lines).
//!
//! This is the only module that knows JSON. It never does IO and never decides
//! what a request means for the chat: it only parses and renders. See
//! `design/protocol.md` for every frame. By job:
//!
//! - `codes`: `Code`, every code on the wire with its number;
//! - `names`: `Username`, `NameKey`, `RoomName`, valid once they exist;
//! - `requests`: `Request` from a JSON or a text line (with its `Ref`), and
//!   `ProtoError`;
//! - `frames`: `ServerMsg` and its JSON and text spellings, the help page;
//! - `records`: the journal's history and id reservation records;
//! - `chars`: the invisible and layout-changing characters both sides check;
//! - `incoming`: server frames as a client (riftc) reads them;
//! - `outgoing`: requests as a client writes them.

mod chars;
mod codes;
mod frames;
mod incoming;
mod names;
mod outgoing;
mod records;
mod requests;

pub use codes::Code;
pub use frames::{
    AuthKind, BACKLOG_FRAME_BYTES, ChatMessage, Features, ServerMsg, Target, backlog_entry_bytes,
    escape_controls,
};
pub use incoming::{Incoming, IncomingError, Received, parse_incoming};
pub use names::{MAX_NAME_BYTES, NameKey, RoomName, Username};
pub use outgoing::Outgoing;
pub use records::{
    history_record, parse_history_record, parse_id_reservation, write_history_record,
    write_id_reservation,
};
pub use requests::{
    JsonLine, MAX_MESSAGE_BYTES, MAX_REF_BYTES, ProtoError, Ref, Request, TextExpect, Token,
    looks_like_http, parse_json, parse_json_line, parse_text,
};
