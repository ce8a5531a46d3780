//! Giving freed heap memory back to the kernel once a burst is over.
//!
//! glibc's allocator returns memory to the kernel only from the top of the
//! heap. After a burst (a mass login, a flood of messages, many
//! disconnects) the freed blocks in the middle stay resident, so an idle
//! server would keep the RSS of its busiest moment: measured at 10,000
//! idle connections, about 100 bytes per connection. `malloc_trim` hands
//! those pages back. The shell calls [`HeapTrim::note`] for every
//! connection opened or closed, and [`HeapTrim::due`] when a poll returns
//! no events; the trim runs once the churn since the last one is worth it
//! and no connection has opened or closed for `QUIET`. It runs on the loop
//! (a few milliseconds for a heap of tens of MB; logged at debug).

use std::time::{Duration, Instant};

/// Connections opened or closed since the last trim before one is worth it.
const CHURN: usize = 256;
/// How long the loop must be quiet before the trim runs.
pub const QUIET: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct HeapTrim {
    churn: usize,
    last_churn: Option<Instant>,
}

impl HeapTrim {
    /// A connection was opened or closed.
    pub fn note(&mut self, now: Instant) {
        self.churn += 1;
        self.last_churn = Some(now);
    }

    /// When the loop should wake to trim, if a trim is pending.
    pub fn deadline(&self) -> Option<Instant> {
        (self.churn >= CHURN)
            .then_some(self.last_churn)
            .flatten()
            .and_then(|last| last.checked_add(QUIET))
    }

    /// Trims if enough churn has happened and it has been quiet long
    /// enough, after `release` has freed what the caller holds for bursts;
    /// returns true if it trimmed.
    pub fn due(&mut self, now: Instant, release: impl FnOnce()) -> bool {
        if self.deadline().is_none_or(|deadline| now < deadline) {
            return false;
        }
        self.churn = 0;
        self.last_churn = None;
        release();
        release_free_memory();
        true
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    unsafe extern "C" {
        /// glibc: releases free memory from the heap to the kernel.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own
    // heap under its own locks; any thread may call it at any time.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_waits_for_enough_churn_and_a_quiet_second() {
        let start = Instant::now();
        let mut trim = HeapTrim::default();
        for _ in 0..CHURN - 1 {
            trim.note(start);
        }
        assert_eq!(trim.deadline(), None, "not enough churn yet");
        assert!(!trim.due(start + QUIET * 10, || {}));
        trim.note(start);
        assert_eq!(trim.deadline(), Some(start + QUIET));
        assert!(!trim.due(start + QUIET / 2, || {}), "not quiet long enough");
        let mut released = false;
        assert!(trim.due(start + QUIET, || released = true));
        assert!(released, "the caller's burst memory goes first");
        assert_eq!(trim.deadline(), None, "the churn starts again from 0");
    }
}
