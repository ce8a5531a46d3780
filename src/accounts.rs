//! User accounts: the users file (one argon2id PHC string per user), its
//! strict parser, its atomic and durable writer, and password hashing.
//!
//! The file is read at start and on SIGHUP and written only by `riftd user
//! …`. Verifying a password costs tens of milliseconds by design, so the
//! server never calls `verify` on its event-loop thread (see
//! `server/verifier.rs`). Nothing here ever logs a password.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

use crate::proto::{NameKey, Username};

/// The first line of every users file; another version is refused.
pub const HEADER: &str = "# riftd users v1";

#[derive(Debug, Error)]
pub enum AccountsError {
    #[error("cannot read users file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write users file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("users file {path} is corrupt at line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("user {0} already exists")]
    Duplicate(String),
    #[error("no such user {0}")]
    Unknown(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Every account, keyed by the case-folded name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    entries: BTreeMap<NameKey, (Username, String)>,
}

impl Users {
    /// Parses a users file's text. Anything unexpected is an error: a
    /// truncated or corrupt file must stop the server, never empty it.
    pub fn parse(text: &str, path: &Path) -> Result<Users, AccountsError> {
        let corrupt = |line: usize, reason: &str| AccountsError::Corrupt {
            path: path.to_owned(),
            line,
            reason: reason.to_owned(),
        };
        let mut lines = text.split_inclusive('\n').enumerate();
        match lines.next() {
            Some((_, header)) if header.trim_end() == HEADER => {}
            Some((_, header)) if header.starts_with("# riftd users ") => {
                return Err(corrupt(1, "unknown format version"));
            }
            _ => return Err(corrupt(1, &format!("missing header `{HEADER}`"))),
        }
        let mut users = Users::default();
        for (index, line) in lines {
            let number = index + 1;
            let Some(line) = line.strip_suffix('\n') else {
                return Err(corrupt(number, "truncated (no newline at the end)"));
            };
            if line.is_empty() {
                continue;
            }
            let (name, hash) = line
                .split_once(' ')
                .ok_or_else(|| corrupt(number, "expected `NAME HASH`"))?;
            let username =
                Username::parse(name).map_err(|_| corrupt(number, "invalid username"))?;
            let parsed =
                PasswordHash::new(hash).map_err(|_| corrupt(number, "invalid PHC hash"))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(corrupt(number, "hash is not argon2id"));
            }
            if users
                .entries
                .insert(username.key(), (username, hash.to_owned()))
                .is_some()
            {
                return Err(corrupt(number, "duplicate user"));
            }
        }
        Ok(users)
    }

    /// Reads and parses a users file.
    pub fn load(path: &Path) -> Result<Users, AccountsError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccountsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Users::parse(&text, path)
    }

    /// Like `load`, but a missing file is an empty set (for `user add`).
    pub fn load_or_empty(path: &Path) -> Result<Users, AccountsError> {
        match Users::load(path) {
            Err(AccountsError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(Users::default())
            }
            other => other,
        }
    }

    /// The file's text: header, then `NAME HASH` lines sorted by name.
    pub fn render(&self) -> String {
        let mut text = format!("{HEADER}\n");
        for (username, hash) in self.entries.values() {
            text.push_str(&format!("{username} {hash}\n"));
        }
        text
    }

    /// Writes the file so that a crash leaves the old or the new file,
    /// never a mix: temp file (0600) in the same directory, fsync, rename,
    /// fsync of the directory.
    pub fn save(&self, path: &Path) -> Result<(), AccountsError> {
        let error = |source| AccountsError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| error(io::ErrorKind::InvalidInput.into()))?;
        let temp = dir.join(format!(
            ".{}.tmp.{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(self.render().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)?;
            File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.map_err(error)
    }

    pub fn hash_of(&self, username: &Username) -> Option<&str> {
        self.entries
            .get(&username.key())
            .map(|(_, hash)| hash.as_str())
    }

    pub fn add(&mut self, username: Username, password: &str) -> Result<(), AccountsError> {
        if self.entries.contains_key(&username.key()) {
            return Err(AccountsError::Duplicate(username.to_string()));
        }
        let hash = hash_password(password)?;
        self.entries.insert(username.key(), (username, hash));
        Ok(())
    }

    pub fn set_password(
        &mut self,
        username: &Username,
        password: &str,
    ) -> Result<(), AccountsError> {
        let hash = hash_password(password)?;
        let entry = self
            .entries
            .get_mut(&username.key())
            .ok_or_else(|| AccountsError::Unknown(username.to_string()))?;
        entry.1 = hash;
        Ok(())
    }

    pub fn remove(&mut self, username: &Username) -> Result<(), AccountsError> {
        self.entries
            .remove(&username.key())
            .map(|_| ())
            .ok_or_else(|| AccountsError::Unknown(username.to_string()))
    }

    /// Account names as their owners spell them, sorted.
    pub fn names(&self) -> Vec<&Username> {
        self.entries
            .values()
            .map(|(username, _)| username)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Hashes a password into an argon2id PHC string with a fresh random salt
/// and the crate's default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> Result<String, AccountsError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| AccountsError::Hash(error.to_string()))
}

/// Verifies passwords, holding the dummy hash checked for unknown users so
/// that an unknown user costs the same time as a wrong password.
///
/// The dummy is built in `new`, which the verifier calls at start: were it
/// built on first use, the first unknown-user check after a start would
/// cost twice as much and tell that the account does not exist.
pub struct Checker {
    dummy_hash: String,
}

impl Checker {
    /// Hashes the dummy now (one argon2 hash: tens of milliseconds).
    pub fn new() -> Result<Checker, AccountsError> {
        Ok(Checker {
            dummy_hash: hash_password("riftd dummy password for unknown users")?,
        })
    }

    /// Checks a password against a PHC hash, or against the dummy hash
    /// when the account does not exist (always false then, after the same
    /// work). Argon2's comparison of the computed tag is constant-time.
    pub fn verify(&self, hash: Option<&str>, password: &str) -> bool {
        let is_known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash);
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        is_known && matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Username {
        Username::parse(text).unwrap()
    }

    #[test]
    fn hashes_verify_only_their_password() {
        let checker = Checker::new().unwrap();
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(checker.verify(Some(&hash), "correct horse"));
        assert!(!checker.verify(Some(&hash), "correct hors"));
        assert!(!checker.verify(None, "correct horse"));
        assert!(!checker.verify(Some("not a hash"), "x"));
    }

    #[test]
    fn issue_11_a_checker_holds_its_dummy_hash_from_construction_with_the_real_parameters() {
        // The dummy exists as soon as the checker does (there is no lazy
        // path left), and costs what a real account's hash costs.
        let checker = Checker::new().unwrap();
        let dummy = PasswordHash::new(&checker.dummy_hash).expect("a PHC string");
        let real_hash = hash_password("x").unwrap();
        let real = PasswordHash::new(&real_hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(
            dummy.params.iter().collect::<Vec<_>>(),
            real.params.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_saved_file_round_trips_with_mode_0600_and_no_plaintext() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let mut users = Users::default();
        users.add(name("Alice"), "s3cret-one").unwrap();
        users.add(name("bob"), "s3cret-two").unwrap();
        users.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret"));
        let loaded = Users::load(&path).unwrap();
        assert_eq!(loaded, users);
        assert_eq!(
            loaded
                .names()
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>(),
            ["Alice", "bob"]
        );
        let checker = Checker::new().unwrap();
        assert!(checker.verify(loaded.hash_of(&name("alice")), "s3cret-one"));
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn add_passwd_remove_report_duplicates_and_unknowns() {
        let mut users = Users::default();
        users.add(name("alice"), "a").unwrap();
        assert!(matches!(
            users.add(name("ALICE"), "b"),
            Err(AccountsError::Duplicate(_))
        ));
        users.set_password(&name("alice"), "new").unwrap();
        assert!(
            Checker::new()
                .unwrap()
                .verify(users.hash_of(&name("alice")), "new")
        );
        assert!(matches!(
            users.set_password(&name("carol"), "x"),
            Err(AccountsError::Unknown(_))
        ));
        users.remove(&name("Alice")).unwrap();
        assert!(users.is_empty());
        assert!(matches!(
            users.remove(&name("alice")),
            Err(AccountsError::Unknown(_))
        ));
    }

    #[test]
    fn corrupt_truncated_or_unknown_version_files_are_refused() {
        let hash = hash_password("pw").unwrap();
        let good = format!("{HEADER}\nalice {hash}\n");
        let path = Path::new("users");
        assert!(Users::parse(&good, path).is_ok());
        let cases = [
            (String::new(), "missing header"),
            ("# riftd users v2\n".to_owned(), "unknown format version"),
            (
                format!("{HEADER}\nalice $argon2id$v=19$oops\n"),
                "invalid PHC hash",
            ),
            (good[..good.len() - 1].to_owned(), "truncated"),
            (format!("{HEADER}\nalice\n"), "expected `NAME HASH`"),
            (format!("{HEADER}\nal ice {hash}\n"), "invalid PHC hash"),
            (format!("{HEADER}\nal.ice {hash}\n"), "invalid username"),
            (format!("{good}ALICE {hash}\n"), "duplicate user"),
            (
                format!(
                    "{HEADER}\nalice $argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$9fXjaQ0pTbHZKu4JBgEKiw\n"
                ),
                "not argon2id",
            ),
        ];
        for (text, reason) in cases {
            let error = Users::parse(&text, path).unwrap_err();
            assert!(error.to_string().contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_missing_file_is_empty_only_for_load_or_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none");
        assert!(Users::load_or_empty(&path).unwrap().is_empty());
        assert!(matches!(
            Users::load(&path),
            Err(AccountsError::Read { .. })
        ));
    }
}
