//! The journal's records: one history message per line (the `message`
//! object of a 200 frame) and the id reservation (`{"next_id":N}`), each
//! written and parsed here. Nothing here touches a file.

use super::frames::MessageBody;
use super::{ChatMessage, RoomName, Target, Username};
use serde::Deserialize;

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
