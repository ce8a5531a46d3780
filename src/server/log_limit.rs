//! Rate limits for log lines a remote peer can cause once per cheap event
//! (a refused connection, a failed TLS start, a disconnect): a storm of
//! such events must not become a storm of log lines. Pure: the caller
//! passes the time; nothing here reads a clock or writes a log.

use std::time::{Duration, Instant};

/// At most `burst` lines per `interval`; the events past that are counted,
/// and the next line that is written reports how many were left out.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    interval: Duration,
    window_start: Option<Instant>,
    /// Lines written in the current window.
    written: u32,
    /// Events not logged since the last line written.
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(burst: u32, interval: Duration) -> LogLimiter {
        LogLimiter {
            burst,
            interval,
            window_start: None,
            written: 0,
            suppressed: 0,
        }
    }

    /// Counts one event at `now`. `Some(n)`: write this event's line now,
    /// saying (when `n > 0`) that `n` events were left out since the last
    /// line written; `None`: leave this one out.
    pub fn event(&mut self, now: Instant) -> Option<u64> {
        let is_new_window = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if is_new_window {
            self.window_start = Some(now);
            self.written = 0;
        }
        if self.written < self.burst {
            self.written += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

/// The tail for a rate-limited line: empty, or how many `what` were left
/// out since the last line.
pub fn suppressed_note(suppressed: u64, what: &str) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more {what} not logged since the last report)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_of_events_writes_at_most_the_burst_per_interval_and_counts_the_rest() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(2, Duration::from_secs(5));
        let within: Vec<Option<u64>> = (0..300)
            .map(|i| limiter.event(start + Duration::from_millis(i)))
            .collect();
        assert_eq!(within.iter().filter(|line| line.is_some()).count(), 2);
        assert_eq!(within[..2], [Some(0), Some(0)]);
        // The next interval's first line reports the 298 left out.
        assert_eq!(limiter.event(start + Duration::from_secs(5)), Some(298));
        assert_eq!(limiter.event(start + Duration::from_secs(6)), Some(0));
        assert_eq!(limiter.event(start + Duration::from_secs(7)), None);
        assert_eq!(limiter.event(start + Duration::from_secs(11)), Some(1));
    }

    #[test]
    fn quiet_times_log_every_event() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(1, Duration::from_secs(5));
        for i in 0..10 {
            assert_eq!(limiter.event(start + Duration::from_secs(5 * i)), Some(0));
        }
    }

    #[test]
    fn the_note_names_the_count_only_when_lines_were_left_out() {
        assert_eq!(suppressed_note(0, "refusal(s)"), "");
        assert_eq!(
            suppressed_note(3, "refusal(s)"),
            " (3 more refusal(s) not logged since the last report)"
        );
    }
}
