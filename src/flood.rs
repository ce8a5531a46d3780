//! Flood control: a token bucket per session over the frames that reach
//! other people (SAY, DM, RENAME, JOIN, PART). Pure: time arrives as
//! monotonic milliseconds.

/// A token bucket: `burst` frames at once, refilled at `rate` per second.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: f64, now_ms: u64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one. `rate` ≤ 0 means no limit.
    pub fn try_take(&mut self, rate: f64, burst: f64, now_ms: u64) -> bool {
        if rate <= 0.0 {
            return true;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = now_ms;
        self.tokens = (self.tokens + elapsed * rate).min(burst.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let mut bucket = TokenBucket::new(5.0, 0);
        for _ in 0..5 {
            assert!(bucket.try_take(2.0, 5.0, 0));
        }
        assert!(!bucket.try_take(2.0, 5.0, 0));
        assert!(!bucket.try_take(2.0, 5.0, 400));
        assert!(bucket.try_take(2.0, 5.0, 500));
        assert!(!bucket.try_take(2.0, 5.0, 500));
        // A long pause refills to the burst, not beyond.
        let taken = (0..10)
            .filter(|_| bucket.try_take(2.0, 5.0, 60_000))
            .count();
        assert_eq!(taken, 5);
    }

    #[test]
    fn a_zero_rate_never_limits() {
        let mut bucket = TokenBucket::new(1.0, 0);
        assert!((0..1000).all(|_| bucket.try_take(0.0, 1.0, 0)));
    }
}
