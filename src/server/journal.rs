//! The history journal on disk, in the spirit of Redis' append-only file:
//! one JSON record per line, appended once per loop turn, replayed at start,
//! compacted by rewriting it atomically.
//!
//! `always` fsyncs the batch before the turn's output is flushed, so a
//! message any client has received survives `kill -9` and power loss.
//! `everysec` leaves fsync to a flusher thread that syncs at most once a
//! second, so the loop never waits for the disk. `never` leaves it to the
//! kernel. See `design/architecture.md`, "History".
//!
//! Besides messages the file holds id reservations (`{"next_id":N}`), so
//! ids keep rising across restarts even for private messages, which are
//! never written. It must never buffer an unbounded line, follow a symlink
//! or replace anything but a regular file.

use crate::history::{History, MAX_MESSAGE_ID};
use crate::proto::{
    ChatMessage, MAX_MESSAGE_BYTES, parse_history_record, parse_id_reservation,
    write_history_record, write_id_reservation,
};
use serde::Deserialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// `history_fsync`: when appended history reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before any client is sent the message: survives `kill -9` and power loss.
    Always,
    /// About once a second, on a flusher thread: at most ~1 s is lost.
    Everysec,
    /// When the kernel decides.
    Never,
}

/// History when it is on (`Config::history` is `None` when it is off):
/// the journal and its fsync policy, and the bounds the hub keeps it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The journal, an absolute path (or relative to the working directory
    /// riftd started in); a regular file or not yet there.
    pub file: PathBuf,
    pub fsync: FsyncPolicy,
    /// Messages a client gets on joining a room.
    pub backlog: usize,
    /// Messages kept per room; older ones are compacted away.
    pub keep: usize,
    /// What all rooms' kept history may cost in memory together.
    pub max_bytes: usize,
}

/// Compaction runs when the file holds this many more records than the
/// kept history (and at least `COMPACT_FACTOR` times as many), so its size
/// stays bounded.
const COMPACT_SLACK: usize = 1024;
/// The file is compacted once it holds this many times the kept records:
/// each compaction rewrites the kept history and fsyncs on the event loop
/// (about 8 ms for 10,000 records here), so it should be rare; the file
/// stays within this factor of the kept history.
const COMPACT_FACTOR: usize = 4;
/// The longest record replay reads: a message's text is at most 4096
/// bytes, six times that when every byte is JSON-escaped, plus the other
/// fields. A longer line is corrupt and skipped without being buffered.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Replay logs this many unreadable lines one by one; the rest are only
/// counted (the server logs the total): a journal of garbage must not
/// write a log line per line of it.
const MAX_SKIPPED_LOGGED: usize = 10;
/// After a failed compaction the next attempt waits this long, doubling
/// with each failure in a row up to `MAX_COMPACT_RETRY`.
const FIRST_COMPACT_RETRY: Duration = Duration::from_secs(1);
const MAX_COMPACT_RETRY: Duration = Duration::from_secs(300);
/// At most one "cannot append" log line per this interval.
const APPEND_LOG_INTERVAL: Duration = Duration::from_secs(5);

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Holds the exclusive `flock` on the file at `path` for this riftd's
    /// life: a second riftd on the same journal is refused at start (its
    /// appends would go to a file the first one's compaction unlinks, and
    /// its replay could cut the first one's record in half). Compaction
    /// locks the new file before renaming it into place.
    _lock: File,
    policy: FsyncPolicy,
    /// Records in the file now (replayed + appended since).
    records: usize,
    /// The file's length up to its last whole record.
    length: u64,
    /// Set when a failed append left part of a record behind and cutting it
    /// off failed too: the next append cuts it first.
    is_torn: bool,
    /// An id reservation whose append failed: it goes out with the next
    /// batch, since ids handed out under it must never be reused after a
    /// restart.
    unwritten_reservation: Option<u64>,
    flusher: Option<Flusher>,
    /// Reused per batch: all records of one turn, for one `write`.
    batch: Vec<u8>,
    /// When compaction may be tried again after a failure.
    backoff: Backoff,
    /// Rate limit of the "cannot append" log line.
    append_failures: FailureLog,
}

/// What the journal held at start.
pub struct Replayed {
    /// The messages, from `open` (tests); `replay` hands them out one by
    /// one instead.
    #[cfg(test)]
    pub messages: Vec<ChatMessage>,
    /// How many messages were replayed.
    pub count: usize,
    /// The highest id reservation (`{"next_id":N}`), 0 when there was none.
    pub next_id: u64,
    /// Lines that could not be read (torn, corrupt, over-long, or an id out
    /// of range), skipped with a warning.
    pub skipped: usize,
}

/// A compaction that failed, and when the next attempt is due.
#[derive(Debug, Error)]
#[error("{source}; next attempt in {} s", retry_in.as_secs())]
pub struct CompactionFailed {
    #[source]
    pub source: io::Error,
    pub retry_in: Duration,
}

/// The back-off of compaction after failures (EACCES, ENOSPC, a read-only
/// directory): without it every turn would re-serialise the whole kept
/// history and log an error.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    pub fn is_due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// Records a failure at `now`; returns how long until the next attempt.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let doublings = self.failures.min(31);
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST_COMPACT_RETRY
            .saturating_mul(1u32 << doublings)
            .min(MAX_COMPACT_RETRY);
        self.retry_at = Some(now.checked_add(delay).unwrap_or(now));
        delay
    }

    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

/// One log line per `APPEND_LOG_INTERVAL` for a failure that recurs every
/// turn (a full disk), with how many were not logged.
#[derive(Debug, Default)]
pub struct FailureLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl FailureLog {
    /// Counts a failure at `now`; returns how many failures the line due
    /// now reports (this one included), or `None` while the interval runs.
    pub fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unlogged = self.unlogged.saturating_add(1);
        let is_due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= APPEND_LOG_INTERVAL);
        if !is_due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// Opens the journal for appending without following a symlink, and
/// refuses anything but a regular file: compaction renames over the path.
fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o640)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file",
                path.display(),
                crate::config::describe_file_type(&file_type)
            ),
        ));
    }
    Ok(file)
}

/// The compaction's temporary file: the journal's whole name plus
/// `.compact` (`history.jsonl.compact`). Replacing the extension instead
/// gave `h.one` and `h.two` the same temporary file, so one riftd's
/// compaction removed the other's half-written file, or renamed it over
/// its own journal.
fn compaction_temp(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".compact");
    path.with_file_name(name)
}

/// Takes the journal's exclusive lock (on a duplicate of `file`'s
/// descriptor, which shares it), or refuses when another process holds it.
fn lock_journal(file: &File, path: &Path) -> io::Result<File> {
    let lock = file.try_clone()?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "{} is in use by another riftd (it holds the file's lock); \
                 give each riftd its own history_file",
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(error)) => Err(error),
    }
}

/// One line read by `read_record`.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A whole line (its newline included) of `length` bytes; the bytes are
    /// in the buffer unless it `is_too_long`.
    Whole {
        length: u64,
        is_too_long: bool,
    },
    /// The file ended inside a line of `length` bytes.
    Torn {
        length: u64,
    },
    End,
}

/// Reads one line into `line`, keeping at most `max` bytes of it: the rest
/// of an over-long line is consumed without being buffered.
fn read_record(reader: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    line.clear();
    let mut length = 0u64;
    let mut is_too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(if length == 0 {
                Line::End
            } else {
                Line::Torn { length }
            });
        }
        let newline = available.iter().position(|&byte| byte == b'\n');
        let chunk = match newline {
            Some(at) => &available[..=at],
            None => available,
        };
        let taken = chunk.len();
        if !is_too_long {
            if line.len().saturating_add(taken) > max {
                is_too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        length = length.saturating_add(taken as u64);
        reader.consume(taken);
        if newline.is_some() {
            return Ok(Line::Whole {
                length,
                is_too_long,
            });
        }
    }
}

/// What one whole line of the journal holds.
enum Record {
    Message(ChatMessage),
    NextId(u64),
}

fn parse_record(line: &[u8]) -> Result<Record, String> {
    let text = std::str::from_utf8(line).map_err(|error| error.to_string())?;
    let text = text.trim_end();
    match parse_history_record(text) {
        Ok(message) if message.id > MAX_MESSAGE_ID => Err(format!(
            "message id {} is above the largest id, {MAX_MESSAGE_ID}",
            message.id
        )),
        // Nothing a client can send: a hand-edited or foreign journal must
        // not bring a longer message back than SAY and DM accept.
        Ok(message) if message.text.len() > MAX_MESSAGE_BYTES => Err(format!(
            "message {} is {} bytes long, above the largest message, {MAX_MESSAGE_BYTES}",
            message.id,
            message.text.len()
        )),
        Ok(message) => Ok(Record::Message(message)),
        Err(error) => match parse_id_reservation(text) {
            Ok(next_id) if next_id > MAX_MESSAGE_ID.saturating_add(1) => Err(format!(
                "id reservation {next_id} is above the largest id, {MAX_MESSAGE_ID}"
            )),
            Ok(next_id) => Ok(Record::NextId(next_id)),
            Err(_) => Err(error),
        },
    }
}

impl Journal {
    /// `replay`, collecting the messages (for tests).
    #[cfg(test)]
    pub fn open(path: &Path, policy: FsyncPolicy) -> io::Result<(Journal, Replayed)> {
        let mut messages = Vec::new();
        let (journal, mut replayed) =
            Journal::replay(path, policy, &mut |message| messages.push(message))?;
        replayed.messages = messages;
        Ok((journal, replayed))
    }

    /// Opens (creating it and its directory if needed), locks and replays
    /// the journal. A torn last record (power loss mid-write) is cut off
    /// with a warning; a corrupt line elsewhere is skipped with a warning.
    /// Never refuses to start over the content; only an unreadable file, or
    /// one another riftd holds, is an error.
    ///
    /// Each message goes to `restore` as it is read, none is collected: the
    /// server keeps only what its history bounds keep, so a journal
    /// many times larger than the kept history (up to `COMPACT_FACTOR`
    /// times, more while compaction fails) never has to fit in memory at
    /// once.
    pub fn replay(
        path: &Path,
        policy: FsyncPolicy,
        restore: &mut dyn FnMut(ChatMessage),
    ) -> io::Result<(Journal, Replayed)> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = open_append(path)?;
        let lock = lock_journal(&file, path)?;
        let mut count = 0usize;
        let mut next_id = 0u64;
        let mut skipped = 0usize;
        let mut good_length = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            let read = read_record(&mut reader, &mut line, MAX_RECORD_BYTES)?;
            number = number.saturating_add(1);
            let parsed = match read {
                Line::End => break,
                Line::Torn { length } => {
                    log::warn!(
                        "history {}: torn last record at line {number} ({length} bytes) cut off",
                        path.display()
                    );
                    skipped = skipped.saturating_add(1);
                    break;
                }
                Line::Whole { length, .. } => {
                    good_length = good_length.saturating_add(length);
                    match read {
                        Line::Whole {
                            is_too_long: true, ..
                        } => Err(format!("longer than {MAX_RECORD_BYTES} bytes ({length})")),
                        _ => parse_record(&line),
                    }
                }
            };
            match parsed {
                Ok(Record::Message(message)) => {
                    count = count.saturating_add(1);
                    restore(message);
                }
                Ok(Record::NextId(mark)) => next_id = next_id.max(mark),
                Err(error) => {
                    skipped = skipped.saturating_add(1);
                    if skipped <= MAX_SKIPPED_LOGGED {
                        log::warn!(
                            "history {}: line {number} skipped: {}{}",
                            path.display(),
                            error.escape_debug(),
                            if skipped == MAX_SKIPPED_LOGGED {
                                "; further unreadable lines are only counted"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
        }
        drop(reader);
        if file.metadata()?.len() != good_length {
            file.set_len(good_length)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        let flusher = (policy == FsyncPolicy::Everysec)
            .then(|| Flusher::start(file.try_clone()?))
            .transpose()?;
        let records = count;
        Ok((
            Journal {
                path: path.to_owned(),
                file,
                _lock: lock,
                policy,
                records,
                length: good_length,
                is_torn: false,
                unwritten_reservation: None,
                flusher,
                batch: Vec::new(),
                backoff: Backoff::default(),
                append_failures: FailureLog::default(),
            },
            Replayed {
                #[cfg(test)]
                messages: Vec::new(),
                count,
                next_id,
                skipped,
            },
        ))
    }

    /// Appends one turn's id reservation (if any) and messages with one
    /// `write`, then fsyncs under `always` (before the caller flushes any
    /// client's output).
    ///
    /// A failed write (ENOSPC, EFBIG, EIO) may have written part of the
    /// batch: that fragment is cut off again, so that the next record does
    /// not get glued to it and skipped at replay as one corrupt line; and
    /// the batch's id reservation is kept for the next append.
    pub fn append(&mut self, next_id: Option<u64>, messages: &[ChatMessage]) -> io::Result<()> {
        let next_id = next_id.max(self.unwritten_reservation.take());
        if messages.is_empty() && next_id.is_none() {
            return Ok(());
        }
        self.batch.clear();
        if let Some(next_id) = next_id {
            write_id_reservation(next_id, &mut self.batch);
        }
        for message in messages {
            write_history_record(message, &mut self.batch);
        }
        let written = self
            .cut_torn_tail()
            .and_then(|()| self.file.write_all(&self.batch));
        if let Err(error) = written {
            self.unwritten_reservation = next_id;
            self.is_torn = true;
            let _ = self.cut_torn_tail();
            return Err(error);
        }
        self.length = self.length.saturating_add(self.batch.len() as u64);
        self.records = self
            .records
            .saturating_add(messages.len())
            .saturating_add(usize::from(next_id.is_some()));
        match self.policy {
            FsyncPolicy::Always => self.file.sync_data()?,
            FsyncPolicy::Everysec => {
                if let Some(flusher) = &self.flusher {
                    flusher.mark_dirty();
                }
            }
            FsyncPolicy::Never => {}
        }
        Ok(())
    }

    /// Cuts off what a failed append left after the last whole record.
    fn cut_torn_tail(&mut self) -> io::Result<()> {
        if self.is_torn {
            self.file.set_len(self.length)?;
            self.is_torn = false;
        }
        Ok(())
    }

    /// Counts a failed `append`; `Some(count)` when it is time to log it.
    pub fn append_failed(&mut self, now: Instant) -> Option<u64> {
        self.append_failures.failed(now)
    }

    /// True when the file has grown well past what is kept, and no failed
    /// compaction is backing off at `now`.
    pub fn needs_compaction(&self, kept: usize, now: Instant) -> bool {
        let due_at = COMPACT_FACTOR
            .saturating_mul(kept)
            .max(kept.saturating_add(COMPACT_SLACK));
        self.records > due_at && self.backoff.is_due(now)
    }

    /// Rewrites the file with only the kept messages, after the id
    /// reservation `next_id` (every id handed out is below it): temp file,
    /// fsync, rename, fsync of the directory; then appends go to the new
    /// file. A failure backs off (see `Backoff`).
    pub fn compact(
        &mut self,
        history: &History,
        next_id: u64,
        now: Instant,
    ) -> Result<(), CompactionFailed> {
        self.rewrite(history, next_id)
            .map_err(|source| CompactionFailed {
                source,
                retry_in: self.backoff.failed(now),
            })?;
        self.backoff.succeeded();
        Ok(())
    }

    fn rewrite(&mut self, history: &History, next_id: u64) -> io::Result<()> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let temp = compaction_temp(&self.path);
        let started = std::time::Instant::now();
        let kept = history.all();
        let result = (|| {
            // A leftover (ours, from a crash) is removed; `create_new`
            // (O_EXCL) then never follows a symlink planted at the path,
            // so no other file can be truncated by a compaction.
            if std::fs::symlink_metadata(&temp).is_ok_and(|metadata| !metadata.is_dir()) {
                std::fs::remove_file(&temp)?;
            }
            // Opened for appending: after the rename this very descriptor
            // is the journal, so nothing can fail between the rename and
            // the switch to the new file.
            let mut file = OpenOptions::new()
                .append(true)
                .read(true)
                .create_new(true)
                .mode(0o640)
                .open(&temp)?;
            let mut buffer = Vec::with_capacity(kept.len().saturating_mul(128));
            write_id_reservation(next_id, &mut buffer);
            for message in &kept {
                write_history_record(message, &mut buffer);
            }
            file.write_all(&buffer)?;
            file.sync_all()?;
            let written = buffer.len() as u64;
            // Locked before it takes the journal's name, so no other
            // riftd can ever find it unlocked; the flusher's descriptor is
            // taken now too, for the same reason.
            let lock = lock_journal(&file, &temp)?;
            let for_flusher = self
                .flusher
                .as_ref()
                .map(|_| file.try_clone())
                .transpose()?;
            std::fs::rename(&temp, &self.path)?;
            Ok((file, lock, for_flusher, written))
        })();
        let (file, lock, for_flusher, written) = match result {
            Ok(done) => done,
            Err(error) => {
                let _ = std::fs::remove_file(&temp);
                return Err(error);
            }
        };
        // The rename is done: from here on the new file is the journal,
        // whatever fails next. (Before, a failure to open the directory or
        // to reopen the path, EMFILE among others, left appends going to
        // the old, unlinked file, unlocked the new one, and lost what
        // `always` had acknowledged at the next crash.)
        self.file = file;
        self._lock = lock;
        self.records = kept.len().saturating_add(1);
        self.length = written;
        self.is_torn = false;
        if let (Some(flusher), Some(file)) = (&self.flusher, for_flusher) {
            flusher.replace(file);
        }
        // The rename is made durable; if that fails the compaction is
        // reported failed (and backs off), but appends already go to the
        // new file, which holds everything the old one did.
        File::open(&dir)?.sync_all()?;
        log::info!(
            "history {}: compacted to {} records in {:.1} ms",
            self.path.display(),
            kept.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }
}

/// The `everysec` fsync thread: syncs the journal at most once a second
/// when something was appended, off the event loop.
struct Flusher {
    dirty: Arc<AtomicBool>,
    files: Option<Sender<File>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(file: File) -> io::Result<Flusher> {
        let dirty = Arc::new(AtomicBool::new(false));
        let (files, receiver) = mpsc::channel::<File>();
        let thread_dirty = Arc::clone(&dirty);
        let thread = std::thread::Builder::new()
            .name("riftd-fsync".to_owned())
            .spawn(move || {
                let mut file = file;
                loop {
                    let next = receiver.recv_timeout(Duration::from_secs(1));
                    if thread_dirty.swap(false, Ordering::AcqRel)
                        && let Err(error) = file.sync_data()
                    {
                        log::error!("history fsync failed: {error}");
                    }
                    match next {
                        Ok(new_file) => file = new_file,
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Flusher {
            dirty,
            files: Some(files),
            thread: Some(thread),
        })
    }

    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    fn replace(&self, file: File) {
        if let Some(files) = &self.files {
            let _ = files.send(file);
        }
    }
}

impl Drop for Flusher {
    /// A last sync happens on the way out (the thread syncs if dirty).
    fn drop(&mut self) {
        self.files = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::history_record;
    use crate::proto::{RoomName, Target, Username};
    use std::os::unix::fs::FileTypeExt;

    fn message(id: u64, room: &str) -> ChatMessage {
        ChatMessage {
            id,
            ts: 1_700_000_000_000u64.saturating_add(id),
            target: Target::Room(RoomName::parse(room).unwrap()),
            from: Username::parse("alice").unwrap(),
            text: format!("message {id} \"quoted\" ✓"),
        }
    }

    #[test]
    fn appended_messages_are_replayed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/history.jsonl");
        {
            let (mut journal, replayed) = Journal::open(&path, FsyncPolicy::Always).unwrap();
            assert!(replayed.messages.is_empty());
            journal
                .append(None, &[message(1, "a"), message(2, "b")])
                .unwrap();
            journal.append(None, &[message(3, "a")]).unwrap();
        }
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Everysec).unwrap();
        assert_eq!(
            replayed.messages,
            vec![message(1, "a"), message(2, "b"), message(3, "a")]
        );
        assert_eq!(replayed.skipped, 0);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut text = history_record(&message(1, "a"));
        text.extend_from_slice(&history_record(&message(2, "a"))[..20]);
        std::fs::write(&path, &text).unwrap();
        let (mut journal, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.messages, vec![message(1, "a")]);
        assert_eq!(replayed.skipped, 1);
        journal.append(None, &[message(2, "a")]).unwrap();
        drop(journal);
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.messages, vec![message(1, "a"), message(2, "a")]);
    }

    #[test]
    fn a_corrupt_line_in_the_middle_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut text = history_record(&message(1, "a"));
        text.extend_from_slice(b"\x00\xffgarbage\n{\"id\":1}\n");
        text.extend_from_slice(&history_record(&message(3, "a")));
        std::fs::write(&path, &text).unwrap();
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.messages, vec![message(1, "a"), message(3, "a")]);
        assert_eq!(replayed.skipped, 2);
    }

    #[test]
    fn a_second_journal_on_the_same_file_is_refused_also_after_a_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (mut first, _) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        let refused = |path: &Path| {
            let Err(error) = Journal::open(path, FsyncPolicy::Never) else {
                panic!("a second journal on {} was opened", path.display());
            };
            assert_eq!(error.kind(), io::ErrorKind::ResourceBusy, "{error}");
            assert!(error.to_string().contains("another riftd"), "{error}");
        };
        refused(&path);
        let mut history = History::new(2);
        history.record(&message(1, "a"));
        first.append(None, &[message(1, "a")]).unwrap();
        // Compaction puts a new file at the path: it is locked too.
        first.compact(&history, 2, Instant::now()).unwrap();
        refused(&path);
        first.append(None, &[message(2, "a")]).unwrap();
        drop(first);
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        let ids: Vec<u64> = replayed.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn a_failed_append_leaves_no_fragment_and_its_id_reservation_goes_out_with_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (mut journal, _) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        journal.append(None, &[message(1, "a")]).unwrap();
        // A write cut short: part of a record reached the file, then the
        // file refused more (here: a read-only descriptor).
        let writable = journal.file.try_clone().unwrap();
        journal.file.write_all(b"{\"id\":2,\"ro").unwrap();
        journal.file = File::open(&path).unwrap();
        assert!(journal.append(Some(4096), &[message(2, "a")]).is_err());
        journal.file = writable;
        journal.append(None, &[message(3, "a")]).unwrap();
        drop(journal);
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        let ids: Vec<u64> = replayed.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(replayed.next_id, 4096);
        assert_eq!(replayed.skipped, 0);
    }

    #[test]
    fn a_record_with_a_message_longer_than_any_client_may_send_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut text = Vec::new();
        let mut longest = message(1, "a");
        longest.text = "y".repeat(MAX_MESSAGE_BYTES);
        let mut too_long = message(2, "a");
        too_long.text = "z".repeat(MAX_MESSAGE_BYTES + 1);
        for record in [&longest, &too_long, &message(3, "a")] {
            write_history_record(record, &mut text);
        }
        std::fs::write(&path, &text).unwrap();
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        let ids: Vec<u64> = replayed.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(replayed.skipped, 1);
    }

    #[test]
    fn journals_that_differ_only_in_extension_compact_through_their_own_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            compaction_temp(&dir.path().join("history.jsonl")),
            dir.path().join("history.jsonl.compact")
        );
        let one = dir.path().join("h.one");
        let two = dir.path().join("h.two");
        assert_ne!(compaction_temp(&one), compaction_temp(&two));
        // Another journal's temporary file under the old naming is left
        // alone by this journal's compaction.
        let other = dir.path().join("h.jsonl.compact");
        std::fs::write(&other, "another riftd's compaction\n").unwrap();
        let (mut journal, _) = Journal::open(&one, FsyncPolicy::Never).unwrap();
        let mut history = History::new(2);
        history.record(&message(1, "a"));
        journal.append(None, &[message(1, "a")]).unwrap();
        journal.compact(&history, 2, Instant::now()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&other).unwrap(),
            "another riftd's compaction\n"
        );
        assert!(!compaction_temp(&one).exists());
    }

    #[test]
    fn compaction_keeps_only_the_kept_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (mut journal, _) = Journal::open(&path, FsyncPolicy::Everysec).unwrap();
        let mut history = History::new(2);
        for id in 1..=10 {
            let room = if id % 2 == 0 { "a" } else { "b" };
            history.record(&message(id, room));
            journal.append(None, &[message(id, room)]).unwrap();
        }
        assert!(!journal.needs_compaction(history.len() + 5000, Instant::now()));
        journal.compact(&history, 11, Instant::now()).unwrap();
        journal.append(None, &[message(11, "b")]).unwrap();
        drop(journal);
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        let ids: Vec<u64> = replayed.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![7, 8, 9, 10, 11]);
        assert!(!dir.path().join("history.jsonl.compact").exists());
    }

    #[test]
    fn an_over_long_line_is_skipped_without_being_buffered() {
        let mut text = history_record(&message(1, "a"));
        text.extend(std::iter::repeat_n(b'x', 1_000_000));
        text.push(b'\n');
        text.extend_from_slice(&history_record(&message(3, "a")));
        let mut reader = BufReader::with_capacity(64, text.as_slice());
        let mut line = Vec::new();
        let max = 200;
        assert!(matches!(
            read_record(&mut reader, &mut line, max).unwrap(),
            Line::Whole {
                is_too_long: false,
                ..
            }
        ));
        assert_eq!(line, history_record(&message(1, "a")));
        assert_eq!(
            read_record(&mut reader, &mut line, max).unwrap(),
            Line::Whole {
                length: 1_000_001,
                is_too_long: true
            }
        );
        assert!(line.capacity() <= 2 * max, "{} bytes", line.capacity());
        read_record(&mut reader, &mut line, max).unwrap();
        assert_eq!(line, history_record(&message(3, "a")));
        assert_eq!(read_record(&mut reader, &mut line, max).unwrap(), Line::End);

        // The same through a journal: the long line is one skipped record.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut long = text.clone();
        long.extend(std::iter::repeat_n(b'y', MAX_RECORD_BYTES + 1));
        std::fs::write(&path, &long).unwrap();
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.messages, vec![message(1, "a"), message(3, "a")]);
        // The over-long middle line, and the torn over-long tail.
        assert_eq!(replayed.skipped, 2);
        assert_eq!(std::fs::read(&path).unwrap(), text);
    }

    #[test]
    fn records_with_ids_past_the_largest_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut text = history_record(&message(1, "a"));
        text.extend_from_slice(&history_record(&message(u64::MAX, "a")));
        text.extend_from_slice(&history_record(&message(MAX_MESSAGE_ID + 1, "a")));
        write_id_reservation(u64::MAX, &mut text);
        text.extend_from_slice(&history_record(&message(2, "a")));
        std::fs::write(&path, &text).unwrap();
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.messages, vec![message(1, "a"), message(2, "a")]);
        assert_eq!(replayed.next_id, 0);
        assert_eq!(replayed.skipped, 3);
    }

    #[test]
    fn id_reservations_are_replayed_and_survive_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (mut journal, _) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        journal.append(Some(1025), &[message(1, "a")]).unwrap();
        journal.append(Some(2049), &[]).unwrap();
        drop(journal);
        let (mut journal, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.next_id, 2049);
        assert_eq!(replayed.messages, vec![message(1, "a")]);
        let mut history = History::new(10);
        history.restore(message(1, "a"));
        journal.compact(&history, 3073, Instant::now()).unwrap();
        drop(journal);
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.next_id, 3073);
        assert_eq!(replayed.messages, vec![message(1, "a")]);
        assert_eq!(replayed.skipped, 0);
    }

    #[test]
    fn a_journal_that_is_a_symlink_or_a_device_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "not history\n").unwrap();
        let link = dir.path().join("history.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(Journal::open(&link, FsyncPolicy::Never).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"not history\n");
        let error = Journal::open(Path::new("/dev/null"), FsyncPolicy::Never)
            .err()
            .expect("/dev/null refused");
        assert!(error.to_string().contains("character device"), "{error}");
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn compaction_never_writes_through_a_symlink_at_its_temporary_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("history.jsonl.compact")).unwrap();
        let (mut journal, _) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        let mut history = History::new(10);
        history.record(&message(1, "a"));
        journal.append(None, &history.take_unwritten()).unwrap();
        journal.compact(&history, 1025, Instant::now()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
        drop(journal);
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.messages, vec![message(1, "a")]);
    }

    #[test]
    fn a_recurring_append_failure_is_logged_once_per_interval_with_a_count() {
        let start = Instant::now();
        let mut log = FailureLog::default();
        assert_eq!(log.failed(start), Some(1));
        for turn in 1..100 {
            assert_eq!(log.failed(start + Duration::from_millis(turn)), None);
        }
        assert_eq!(log.failed(start + APPEND_LOG_INTERVAL), Some(100));
        assert_eq!(log.failed(start + APPEND_LOG_INTERVAL), None);
    }

    #[test]
    fn compaction_backs_off_from_one_second_doubling_to_five_minutes() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        assert!(backoff.is_due(start));
        let mut now = start;
        let mut delays = Vec::new();
        for _ in 0..12 {
            let delay = backoff.failed(now);
            assert!(!backoff.is_due(now));
            assert!(!backoff.is_due(now + delay - Duration::from_millis(1)));
            now += delay;
            assert!(backoff.is_due(now));
            delays.push(delay.as_secs());
        }
        assert_eq!(
            delays,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
        backoff.succeeded();
        assert_eq!(backoff.failed(now), Duration::from_secs(1));
    }

    #[test]
    fn a_failing_compaction_waits_for_its_back_off_and_then_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (mut journal, _) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        let batch: Vec<ChatMessage> = (1..=1100).map(|id| message(id, "a")).collect();
        journal.append(None, &batch).unwrap();
        let mut history = History::new(5);
        for message in &batch {
            history.restore(message.clone());
        }
        // The temporary file cannot be created: a directory is in its way.
        let temp = dir.path().join("history.jsonl.compact");
        std::fs::create_dir(&temp).unwrap();
        let now = Instant::now();
        assert!(journal.needs_compaction(history.len(), now));
        let failed = journal.compact(&history, 1101, now).unwrap_err();
        assert_eq!(failed.retry_in, Duration::from_secs(1));
        assert!(!journal.needs_compaction(history.len(), now));
        let later = now + Duration::from_secs(1);
        assert!(journal.needs_compaction(history.len(), later));
        let failed = journal.compact(&history, 1101, later).unwrap_err();
        assert_eq!(failed.retry_in, Duration::from_secs(2));
        assert!(!journal.needs_compaction(history.len(), later + Duration::from_secs(1)));
        std::fs::remove_dir(&temp).unwrap();
        let latest = later + Duration::from_secs(2);
        assert!(journal.needs_compaction(history.len(), latest));
        journal.compact(&history, 1101, latest).unwrap();
        assert!(!journal.needs_compaction(history.len(), latest));
        drop(journal);
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.messages.len(), 5);
    }

    #[test]
    fn compaction_is_due_when_the_file_outgrows_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) =
            Journal::open(&dir.path().join("h.jsonl"), FsyncPolicy::Never).unwrap();
        let batch: Vec<ChatMessage> = (1..=1100).map(|id| message(id, "a")).collect();
        journal.append(None, &batch).unwrap();
        assert!(journal.needs_compaction(50, Instant::now()));
        assert!(!journal.needs_compaction(1000, Instant::now()));
    }

    /// Set in the child process of the test below, which lowers the
    /// process-wide descriptor limit and so must run alone.
    const FD_LIMIT_CHILD: &str = "RIFTD_TEST_JOURNAL_FD_LIMIT_CHILD";

    #[test]
    fn a_compaction_whose_directory_sync_fails_still_appends_to_the_new_locked_journal() {
        let name = "server::journal::tests::\
                    a_compaction_whose_directory_sync_fails_still_appends_to_the_new_locked_journal";
        if std::env::var_os(FD_LIMIT_CHILD).is_none() {
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1"])
                .env(FD_LIMIT_CHILD, "1")
                .output()
                .unwrap();
            assert!(
                child.status.success(),
                "the child test failed: {}\n{}",
                String::from_utf8_lossy(&child.stdout),
                String::from_utf8_lossy(&child.stderr)
            );
            let ran = String::from_utf8_lossy(&child.stdout);
            assert!(ran.contains("1 passed"), "the child ran no test: {ran}");
            return;
        }
        use rustix::process::{Resource, getrlimit, setrlimit};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (mut journal, _) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        journal.append(Some(1025), &[message(1, "a")]).unwrap();
        let mut history = History::new(10);
        history.restore(message(1, "a"));

        // Leave exactly two free descriptors: the compaction's temporary
        // file and its lock take them, so opening the directory to sync
        // the rename fails with EMFILE (as it can in a riftd whose
        // connections use up its descriptors).
        let saved = getrlimit(Resource::Nofile);
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let mut lowered = saved;
        lowered.current = Some(highest + 32);
        setrlimit(Resource::Nofile, lowered).unwrap();
        let mut fillers = Vec::new();
        while let Ok(file) = File::open("/dev/null") {
            fillers.push(file);
        }
        fillers.truncate(fillers.len() - 2);
        let compacted = journal.compact(&history, 2049, Instant::now());
        drop(fillers);
        setrlimit(Resource::Nofile, saved).unwrap();
        // Whether or not the directory sync worked, the journal at the
        // path is the new file: locked, and where appends go.
        let _ = compacted;
        let second = Journal::open(&path, FsyncPolicy::Never).map(|_| ());
        assert_eq!(
            second.unwrap_err().kind(),
            io::ErrorKind::ResourceBusy,
            "the compacted journal was left unlocked"
        );
        journal.append(Some(3073), &[message(2, "b")]).unwrap();
        drop(journal);
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(replayed.messages, vec![message(1, "a"), message(2, "b")]);
        assert_eq!(replayed.next_id, 3073);
    }
}
