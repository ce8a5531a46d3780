//! The history journal on disk, in the spirit of Redis' append-only file:
//! one JSON record per line, appended once per loop turn, replayed at start,
//! compacted by rewriting it atomically.
//!
//! `always` fsyncs the batch before the turn's output is flushed, so a
//! message any client has received survives `kill -9` and power loss.
//! `everysec` leaves fsync to a flusher thread that syncs at most once a
//! second, so the loop never waits for the disk. `never` leaves it to the
//! kernel. See `design/architecture.md`, "History".

use crate::config::FsyncPolicy;
use crate::history::History;
use crate::proto::{ChatMessage, parse_history_record, write_history_record};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// Compaction runs when the file holds this many more records than the
/// kept history (and at least `COMPACT_FACTOR` times as many), so its size
/// stays bounded.
const COMPACT_SLACK: usize = 1024;
/// The file is compacted once it holds this many times the kept records:
/// each compaction rewrites the kept history and fsyncs on the event loop
/// (about 8 ms for 10,000 records here), so it should be rare; the file
/// stays within this factor of the kept history.
const COMPACT_FACTOR: usize = 4;

pub struct Journal {
    path: PathBuf,
    file: File,
    policy: FsyncPolicy,
    /// Records in the file now (replayed + appended since).
    records: usize,
    flusher: Option<Flusher>,
    /// Reused per batch: all records of one turn, for one `write`.
    batch: Vec<u8>,
}

/// What the journal held at start.
pub struct Replayed {
    pub messages: Vec<ChatMessage>,
    /// Lines that could not be read (torn or corrupt), skipped with a warning.
    pub skipped: usize,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o640)
        .open(path)
}

impl Journal {
    /// Opens (creating it and its directory if needed) and replays the
    /// journal. A torn last record (power loss mid-write) is cut off with a
    /// warning; a corrupt line elsewhere is skipped with a warning. Never
    /// refuses to start over the content; only an unreadable file is an error.
    pub fn open(path: &Path, policy: FsyncPolicy) -> io::Result<(Journal, Replayed)> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = open_append(path)?;
        let mut messages = Vec::new();
        let mut skipped = 0;
        let mut good_length = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        let mut number = 0usize;
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line)?;
            if read == 0 {
                break;
            }
            number += 1;
            let is_complete = line.last() == Some(&b'\n');
            let parsed = std::str::from_utf8(&line)
                .map_err(|error| error.to_string())
                .and_then(|text| parse_history_record(text.trim_end()));
            match (parsed, is_complete) {
                (Ok(message), true) => {
                    messages.push(message);
                    good_length += read as u64;
                }
                (_, false) => {
                    log::warn!(
                        "history {}: torn last record at line {number} ({read} bytes) cut off",
                        path.display()
                    );
                    skipped += 1;
                    break;
                }
                (Err(error), true) => {
                    log::warn!("history {}: line {number} skipped: {error}", path.display());
                    skipped += 1;
                    good_length += read as u64;
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
        let records = messages.len();
        Ok((
            Journal {
                path: path.to_owned(),
                file,
                policy,
                records,
                flusher,
                batch: Vec::new(),
            },
            Replayed { messages, skipped },
        ))
    }

    /// Appends one turn's messages with one `write`, then fsyncs under
    /// `always` (before the caller flushes any client's output).
    pub fn append(&mut self, messages: &[ChatMessage]) -> io::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.batch.clear();
        for message in messages {
            write_history_record(message, &mut self.batch);
        }
        self.file.write_all(&self.batch)?;
        self.records += messages.len();
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

    /// True when the file has grown well past what is kept.
    pub fn needs_compaction(&self, kept: usize) -> bool {
        self.records > (COMPACT_FACTOR * kept).max(kept + COMPACT_SLACK)
    }

    /// Rewrites the file with only the kept messages: temp file, fsync,
    /// rename, fsync of the directory; then appends go to the new file.
    pub fn compact(&mut self, history: &History) -> io::Result<()> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let temp = self.path.with_extension("jsonl.compact");
        let started = std::time::Instant::now();
        let kept = history.all();
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(&temp)?;
            let mut buffer = Vec::with_capacity(kept.len() * 128);
            for message in &kept {
                write_history_record(message, &mut buffer);
            }
            file.write_all(&buffer)?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)?;
            File::open(&dir)?.sync_all()
        })();
        if let Err(error) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(error);
        }
        self.file = open_append(&self.path)?;
        self.records = kept.len();
        if let Some(flusher) = &self.flusher {
            flusher.replace(self.file.try_clone()?);
        }
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

    fn message(id: u64, room: &str) -> ChatMessage {
        ChatMessage {
            id,
            ts: 1_700_000_000_000 + id,
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
            journal.append(&[message(1, "a"), message(2, "b")]).unwrap();
            journal.append(&[message(3, "a")]).unwrap();
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
        journal.append(&[message(2, "a")]).unwrap();
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
    fn compaction_keeps_only_the_kept_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let (mut journal, _) = Journal::open(&path, FsyncPolicy::Everysec).unwrap();
        let mut history = History::new(2);
        for id in 1..=10 {
            let room = if id % 2 == 0 { "a" } else { "b" };
            history.record(&message(id, room));
            journal.append(&[message(id, room)]).unwrap();
        }
        assert!(!journal.needs_compaction(history.len() + 5000));
        journal.compact(&history).unwrap();
        journal.append(&[message(11, "b")]).unwrap();
        drop(journal);
        let (_, replayed) = Journal::open(&path, FsyncPolicy::Never).unwrap();
        let ids: Vec<u64> = replayed.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![7, 8, 9, 10, 11]);
        assert!(!dir.path().join("history.jsonl.compact").exists());
    }

    #[test]
    fn compaction_is_due_when_the_file_outgrows_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) =
            Journal::open(&dir.path().join("h.jsonl"), FsyncPolicy::Never).unwrap();
        let batch: Vec<ChatMessage> = (1..=1100).map(|id| message(id, "a")).collect();
        journal.append(&batch).unwrap();
        assert!(journal.needs_compaction(50));
        assert!(!journal.needs_compaction(1000));
    }
}
