//! Names: `Username` (and its case-folded `NameKey`, which decides
//! uniqueness) and `RoomName` (canonical: lower case, no `#`), each valid
//! once it exists, stored inline without a heap allocation. Nothing here
//! knows frames or JSON.

use super::ProtoError;
use std::fmt;

/// Longest user or room name, in bytes (all names are ASCII).
pub const MAX_NAME_BYTES: usize = 32;
/// Names nobody may take, so that server lines cannot be impersonated.
const RESERVED_USERNAMES: [&str; 3] = ["server", "riftd", "admin"];

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
