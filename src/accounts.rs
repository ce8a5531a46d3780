//! User accounts: the users file (one argon2id PHC string per user), its
//! strict parser, its locked, atomic and durable writer, and password
//! hashing.
//!
//! The file is read at start and on SIGHUP and written only by `riftd user
//! …`, through `Users::update`: read, change and write under an exclusive
//! lock, so concurrent commands never lose each other's changes; a rewrite
//! keeps the old file's owner, group and mode. Verifying a password costs
//! tens of milliseconds by design, so the server never calls `verify` on
//! its event-loop thread (see `server/verifier.rs`). Nothing here ever logs
//! a password.

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
    #[error("cannot lock users file {path} (lock file {lock}): {source}")]
    Lock {
        path: PathBuf,
        lock: PathBuf,
        source: io::Error,
    },
    /// A rewrite could not keep the file's owner; nothing was written.
    #[error("users file {path} {reason}")]
    Owner { path: PathBuf, reason: String },
    /// The users file is a symlink: a rewrite (a rename into place) would
    /// replace the link with a regular file and leave its target stale,
    /// and as root it must not write wherever a link points. Nothing was
    /// written.
    #[error(
        "users file {path} is a symbolic link (to {target}); riftd user … replaces the file it \
         names, which would turn the link into a file and leave {target} stale; set users_file to \
         the real file instead"
    )]
    Symlink { path: PathBuf, target: String },
}

impl AccountsError {
    /// Whether the configuration is at fault (exit 2), not the run.
    pub fn is_refused_config(&self) -> bool {
        matches!(self, AccountsError::Symlink { .. })
    }
}

/// The owner, group and permission bits of an existing users file, which a
/// rewrite gives to the new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Ownership {
    fn of(metadata: &std::fs::Metadata) -> Ownership {
        use std::os::unix::fs::MetadataExt;
        Ownership {
            uid: metadata.uid(),
            gid: metadata.gid(),
            mode: metadata.mode() & 0o7777,
        }
    }

    /// Whether a process running as `euid` can give a new file this owner
    /// (only root can give a file away); if not, what to run instead.
    pub fn check_keepable(&self, euid: u32) -> Result<(), String> {
        if euid == 0 || euid == self.uid {
            return Ok(());
        }
        let owner = user_name(self.uid)
            .map(|name| format!("{name} (uid {})", self.uid))
            .unwrap_or_else(|| format!("uid {}", self.uid));
        Err(format!(
            "belongs to {owner}, and a rewrite by uid {euid} could not keep that owner \
             (the server could then no longer read it); run the command as root \
             (sudo riftd user …) or as its owner (sudo -u '#{}' riftd user …)",
            self.uid
        ))
    }
}

/// The login name of `uid` from /etc/passwd, for messages.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

/// The existing file's ownership, or `None` when there is no file yet.
fn existing_ownership(path: &Path) -> Result<Option<Ownership>, AccountsError> {
    match std::fs::metadata(path) {
        Ok(metadata) => Ok(Some(Ownership::of(&metadata))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AccountsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The lock file beside the users file: `.NAME.lock`. The users file
/// itself cannot carry the lock, since every write replaces its inode; this
/// path stays, and is never deleted.
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.lock"))
}

/// Why an opened lock file cannot be riftd's own (empty, regular, one
/// link), or `None` when it can.
fn foreign_lock_file(metadata: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !metadata.file_type().is_file() {
        Some(format!(
            "is {}",
            crate::config::describe_file_type(&metadata.file_type())
        ))
    } else if metadata.nlink() != 1 {
        Some(format!("has {} names (hard links)", metadata.nlink()))
    } else if metadata.len() != 0 {
        Some(format!("holds {} bytes", metadata.len()))
    } else {
        None
    }
}

/// Holds the users file's exclusive lock until dropped.
#[derive(Debug)]
pub struct UsersLock {
    _file: File,
}

/// How long `riftd user …` waits for another one's lock: that one holds it
/// for one argon2 hash, well under a second. A lock held longer is some
/// other process (or a stuck one), reported instead of waited on forever.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl UsersLock {
    /// Waits for and takes the lock, for at most `LOCK_WAIT`.
    pub fn acquire(path: &Path) -> Result<UsersLock, AccountsError> {
        UsersLock::acquire_within(path, LOCK_WAIT)
    }

    fn acquire_within(path: &Path, wait: std::time::Duration) -> Result<UsersLock, AccountsError> {
        let lock = lock_path(path);
        let error = |source| AccountsError::Lock {
            path: path.to_owned(),
            lock: lock.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&lock)
            .map_err(error)?;
        // A lock file is empty, with one name: anything else is some other
        // file linked there (a hard link to /etc/shadow, say, by whoever
        // may write the directory), which root must not chown below.
        let metadata = file.metadata().map_err(error)?;
        if let Some(reason) = foreign_lock_file(&metadata) {
            return Err(error(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it {reason}, so it is not riftd's lock file; remove it if it is stale"),
            )));
        }
        // Root makes the lock file usable by the users file's owner too.
        if rustix::process::geteuid().is_root()
            && let Ok(Some(owner)) = existing_ownership(path)
        {
            let _ = std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid));
        }
        let started = std::time::Instant::now();
        let mut is_told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(UsersLock { _file: file }),
                Err(std::fs::TryLockError::Error(source)) => return Err(error(source)),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() >= wait => {
                    return Err(error(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "another process has held it for {} s; if no other riftd user … \
                             is running, find the holder with `fuser {}`",
                            wait.as_secs(),
                            lock.display()
                        ),
                    )));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !is_told {
                        log::warn!(
                            "waiting for the lock on {} (another riftd user … is running)",
                            path.display()
                        );
                        is_told = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }
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
        let text = crate::config::read_regular_text(path, crate::config::MAX_USERS_FILE_BYTES)
            .map_err(|source| AccountsError::Read {
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

    /// Reads the file (a missing one is empty), applies `change` and
    /// writes the result, all under the file's lock: two `riftd user …` at
    /// once each see the other's change, and a `remove` racing an `add`
    /// cannot bring the removed account back.
    pub fn update(
        path: &Path,
        change: impl FnOnce(&mut Users) -> Result<(), AccountsError>,
    ) -> Result<(), AccountsError> {
        let _lock = UsersLock::acquire(path)?;
        let mut users = Users::load_or_empty(path)?;
        change(&mut users)?;
        users.save(path)
    }

    /// Refuses early (before a password is asked for) a rewrite that could
    /// not keep the existing file's owner, or one of a symlink (`save`
    /// checks again under the lock).
    pub fn check_rewritable(path: &Path) -> Result<(), AccountsError> {
        if std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_symlink()) {
            let target = std::fs::read_link(path)
                .map(|target| target.display().to_string())
                .unwrap_or_else(|_| "an unreadable target".to_owned());
            return Err(AccountsError::Symlink {
                path: path.to_owned(),
                target,
            });
        }
        let euid = rustix::process::geteuid().as_raw();
        match existing_ownership(path)? {
            Some(old) => old
                .check_keepable(euid)
                .map_err(|reason| AccountsError::Owner {
                    path: path.to_owned(),
                    reason,
                }),
            None => Ok(()),
        }
    }

    /// Writes the file so that a crash leaves the old or the new file,
    /// never a mix: temp file in the same directory, fsync, rename, fsync
    /// of the directory. The new file gets the old one's owner, group and
    /// mode (a new file: ours, 0600); when that is impossible nothing is
    /// written. Callers other than tests go through `update`.
    pub fn save(&self, path: &Path) -> Result<(), AccountsError> {
        let error = |source| AccountsError::Write {
            path: path.to_owned(),
            source,
        };
        Users::check_rewritable(path)?;
        let old = existing_ownership(path)?;
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
            if let Some(old) = old {
                let ours = Ownership::of(&file.metadata()?);
                if (ours.uid, ours.gid) != (old.uid, old.gid) {
                    std::os::unix::fs::fchown(&file, Some(old.uid), Some(old.gid)).map_err(
                        |error| {
                            io::Error::new(
                                error.kind(),
                                format!(
                                    "cannot give the new file the old one's owner uid {} and group gid {} ({error}); run the command as root",
                                    old.uid, old.gid
                                ),
                            )
                        },
                    )?;
                }
                // After the chown, which may clear set-id bits.
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(old.mode))?;
            }
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
/// that an unknown user costs the same time as a wrong password, and the
/// argon2 working memory, allocated once and reused by every check.
///
/// The dummy is built in `new`, which the verifier calls at start: were it
/// built on first use, the first unknown-user check after a start would
/// cost twice as much and tell that the account does not exist.
///
/// Why the memory is kept: argon2's own `verify_password` allocates its
/// 19 MiB (64-byte aligned) afresh for each check, and glibc's allocator
/// served those from new space in the worker's arena, check after check:
/// the daemon's RSS grew by about 19 MiB per check up to some 160 MiB (issue
/// 11's report of 80–218 MB for 12 parallel checks, with one worker). One
/// buffer, reused, costs the memory of one check for good.
pub struct Checker {
    dummy_hash: String,
    memory: Vec<Block>,
}

impl Checker {
    /// Hashes the dummy now (one argon2 hash: tens of milliseconds).
    pub fn new() -> Result<Checker, AccountsError> {
        Ok(Checker {
            dummy_hash: hash_password("riftd dummy password for unknown users")?,
            memory: Vec::new(),
        })
    }

    /// Checks a password against a PHC hash, or against the dummy hash
    /// when the account does not exist (always false then, after the same
    /// work). The computed tag is compared in constant time (`Output`'s
    /// equality).
    pub fn verify(&mut self, hash: Option<&str>, password: &str) -> bool {
        let is_known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash);
        let matches = matches(&mut self.memory, hash, password).unwrap_or(false);
        is_known && matches
    }
}

/// Argon2's `verify_password`, with `memory` as working memory.
fn matches(memory: &mut Vec<Block>, hash: &str, password: &str) -> Option<bool> {
    let parsed = PasswordHash::new(hash).ok()?;
    let (salt, expected) = (parsed.salt.as_ref()?, parsed.hash.as_ref()?);
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).ok()?;
    let version = match parsed.version {
        Some(version) => Version::try_from(version).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).ok()?;
    let blocks = params.block_count();
    // Grows to the largest cost in the users file (set by the operator),
    // never per check.
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut computed = [0u8; Output::MAX_LENGTH];
    let computed = computed.get_mut(..expected.len())?;
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            computed,
            &mut memory[..blocks],
        )
        .ok()?;
    Some(Output::new(computed).ok()? == *expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    fn name(text: &str) -> Username {
        Username::parse(text).unwrap()
    }

    #[test]
    fn a_symlinked_users_file_is_refused_and_neither_link_nor_target_is_changed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real-users");
        let link = dir.path().join("users");
        let text = format!("{HEADER}\n");
        std::fs::write(&target, &text).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // Reading through the link is fine: the server loads it.
        assert!(Users::load(&link).unwrap().is_empty());
        let error = Users::check_rewritable(&link).unwrap_err();
        assert!(error.is_refused_config(), "{error}");
        assert!(error.to_string().contains("real-users"), "{error}");
        let error = Users::update(&link, |users| users.remove(&name("nobody"))).unwrap_err();
        assert!(matches!(error, AccountsError::Unknown(_)), "{error}");
        let error = Users::default().save(&link).unwrap_err();
        assert!(error.is_refused_config(), "{error}");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), text);
    }

    #[test]
    fn a_lock_held_by_another_process_is_reported_after_the_wait_not_waited_on_forever() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        // Another open file description holding the lock stands in for
        // another process.
        let holder = File::create(lock_path(&path)).unwrap();
        holder.lock().unwrap();
        let error =
            UsersLock::acquire_within(&path, std::time::Duration::from_millis(100)).unwrap_err();
        assert!(matches!(error, AccountsError::Lock { .. }), "{error}");
        assert!(error.to_string().contains("held it for"), "{error}");
        drop(holder);
        UsersLock::acquire_within(&path, std::time::Duration::from_millis(100)).unwrap();
    }

    #[test]
    fn a_lock_file_that_is_another_file_linked_there_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "root:x:0:0\n").unwrap();
        std::fs::hard_link(&precious, lock_path(&path)).unwrap();
        let error = UsersLock::acquire(&path).unwrap_err();
        assert!(error.to_string().contains("hard links"), "{error}");
        std::fs::remove_file(&precious).unwrap();
        // Now one name, but not empty: still not a lock file.
        let error = UsersLock::acquire(&path).unwrap_err();
        assert!(error.to_string().contains("holds 11 bytes"), "{error}");
        assert_eq!(
            std::fs::read_to_string(lock_path(&path)).unwrap(),
            "root:x:0:0\n"
        );
        std::fs::remove_file(lock_path(&path)).unwrap();
        let _held = UsersLock::acquire(&path).unwrap();
        UsersLock::acquire_within(&path, std::time::Duration::ZERO).unwrap_err();
    }

    #[test]
    fn hashes_verify_only_their_password() {
        let mut checker = Checker::new().unwrap();
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(checker.verify(Some(&hash), "correct horse"));
        assert!(!checker.verify(Some(&hash), "correct hors"));
        assert!(!checker.verify(None, "correct horse"));
        assert!(!checker.verify(Some("not a hash"), "x"));
    }

    #[test]
    fn checks_reuse_one_working_memory_and_verify_hashes_of_any_parameters() {
        let mut checker = Checker::new().unwrap();
        let hash = hash_password("pw").unwrap();
        for _ in 0..3 {
            assert!(checker.verify(Some(&hash), "pw"));
            assert!(!checker.verify(None, "pw"));
        }
        let default_blocks = Params::default().block_count();
        assert_eq!(checker.memory.len(), default_blocks);
        let buffer = checker.memory.as_ptr();
        // Hashes made with other algorithms, versions and costs (a users
        // file from elsewhere) verify as argon2's own `verify_password`
        // does, in the same memory when it is big enough.
        for (algorithm, version, m_cost) in [
            (Algorithm::Argon2i, Version::V0x10, 64),
            (Algorithm::Argon2d, Version::V0x13, 256),
            (Algorithm::Argon2id, Version::V0x13, 8),
        ] {
            let params = Params::new(m_cost, 1, 1, None).unwrap();
            let other = Argon2::new(algorithm, version, params)
                .hash_password(b"other")
                .unwrap()
                .to_string();
            assert!(checker.verify(Some(&other), "other"), "{other}");
            assert!(!checker.verify(Some(&other), "othe"), "{other}");
            assert!(
                Argon2::default()
                    .verify_password(b"other", &PasswordHash::new(&other).unwrap())
                    .is_ok()
            );
        }
        assert_eq!(checker.memory.len(), default_blocks);
        assert_eq!(checker.memory.as_ptr(), buffer, "no new allocation");
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
        let mut checker = Checker::new().unwrap();
        assert!(checker.verify(loaded.hash_of(&name("alice")), "s3cret-one"));
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn concurrent_updates_lose_no_account_and_a_removal_stays_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::update(&path, |users| users.add(name("zed"), "pw")).unwrap();
        let names: Vec<String> = (0..8).map(|index| format!("user{index}")).collect();
        std::thread::scope(|scope| {
            scope.spawn(|| Users::update(&path, |users| users.remove(&name("zed"))).unwrap());
            for user in &names {
                let path = &path;
                scope.spawn(move || {
                    Users::update(path, |users| users.add(name(user), "pw")).unwrap()
                });
            }
        });
        let users = Users::load(&path).unwrap();
        let listed: Vec<&str> = users.names().iter().map(|n| n.as_str()).collect();
        assert_eq!(listed, names.iter().map(String::as_str).collect::<Vec<_>>());
        // The lock file stays beside the users file; no temp file is left.
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, [".users.lock", "users"]);
    }

    #[test]
    fn a_failed_change_under_the_lock_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::update(&path, |users| users.add(name("alice"), "pw")).unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        let error = Users::update(&path, |users| users.add(name("ALICE"), "pw")).unwrap_err();
        assert!(matches!(error, AccountsError::Duplicate(_)), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn a_rewrite_keeps_the_old_files_owner_group_and_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::update(&path, |users| users.add(name("alice"), "pw")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        // Root (as `riftd user add` usually runs) hands the file to the
        // service's account; anyone else can only test the mode.
        let is_root = rustix::process::geteuid().is_root();
        let (uid, gid) = if is_root {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
            (65534, 65534)
        } else {
            let metadata = std::fs::metadata(&path).unwrap();
            (metadata.uid(), metadata.gid())
        };
        Users::update(&path, |users| users.add(name("bob"), "pw")).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o640);
        assert_eq!((metadata.uid(), metadata.gid()), (uid, gid));
        assert_eq!(Users::load(&path).unwrap().len(), 2);
    }

    #[test]
    fn only_root_or_the_owner_may_rewrite_and_the_refusal_says_what_to_run() {
        let old = Ownership {
            uid: 998,
            gid: 998,
            mode: 0o640,
        };
        assert!(old.check_keepable(0).is_ok());
        assert!(old.check_keepable(998).is_ok());
        let refusal = old.check_keepable(1000).unwrap_err();
        assert!(refusal.contains("uid 998"), "{refusal}");
        assert!(refusal.contains("sudo riftd user"), "{refusal}");
        assert!(refusal.contains("sudo -u '#998'"), "{refusal}");
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
