//! Flood control: a token bucket per session over the frames that reach
//! other people (SAY, DM, RENAME, JOIN, PART), and one over the bytes of
//! answers to the sender alone (HISTORY, WHO, ROOMS, PING). Pure: time arrives as monotonic milliseconds.

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

/// A budget of bytes over time, as one number (the generic cell rate
/// algorithm): the moment, in µs, by which everything spent so far is
/// earned back at `rate` bytes a second. Up to `burst` bytes may be owed;
/// an answer is allowed while less is, and is charged after, at its
/// encoded size (so the budget may run one answer into debt). Eight bytes
/// per session, where a token bucket would take sixteen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteBudget {
    paid_until_us: u64,
}

impl ByteBudget {
    /// 0 if less than `burst` bytes are owed at `now_ms`; otherwise how
    /// long until that is so (at least 1 ms). A `rate` ≤ 0 never limits.
    pub fn wait_ms(&self, rate: f64, burst: f64, now_ms: u64) -> u64 {
        if rate <= 0.0 {
            return 0;
        }
        let owed_us = self
            .paid_until_us
            .saturating_sub(now_ms.saturating_mul(1000)) as f64;
        let allowed_us = burst / rate * 1e6;
        if owed_us < allowed_us {
            0
        } else {
            // Saturates (`as` from f64), never wraps.
            (((owed_us - allowed_us) / 1000.0).ceil() as u64).max(1)
        }
    }

    /// Charges `bytes` at `rate` bytes a second.
    pub fn spend(&mut self, bytes: usize, rate: f64, now_ms: u64) {
        if rate <= 0.0 {
            return;
        }
        let cost_us = (bytes as f64 / rate * 1e6) as u64;
        self.paid_until_us = self
            .paid_until_us
            .max(now_ms.saturating_mul(1000))
            .saturating_add(cost_us);
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

    #[test]
    fn a_byte_budget_allows_answers_until_in_debt_then_says_how_long_to_wait() {
        let (rate, burst) = (1000.0, 3000.0);
        let mut budget = ByteBudget::default();
        assert_eq!(budget.wait_ms(rate, burst, 0), 0, "full at the start");
        budget.spend(2500, rate, 0);
        assert_eq!(
            budget.wait_ms(rate, burst, 0),
            0,
            "500 bytes left: one more"
        );
        budget.spend(1000, rate, 0);
        assert_eq!(
            budget.wait_ms(rate, burst, 0),
            500,
            "500 bytes of debt at 1000/s"
        );
        assert_eq!(budget.wait_ms(rate, burst, 499), 1);
        assert_eq!(budget.wait_ms(rate, burst, 501), 0);
        // A long pause refills to the burst, not beyond.
        budget.spend(3000, rate, 3_600_000);
        assert_eq!(budget.wait_ms(rate, burst, 3_600_000), 1);
        // A clock that goes back earns nothing.
        assert!(budget.wait_ms(rate, burst, 0) > 0);
        // Huge numbers saturate instead of wrapping.
        let mut huge = ByteBudget::default();
        huge.spend(usize::MAX, 1e-300, u64::MAX / 2);
        assert!(huge.wait_ms(rate, burst, 0) > 1_000_000_000);
        assert_eq!(huge.wait_ms(rate, burst, u64::MAX), 0);
        assert_eq!(ByteBudget::default().wait_ms(0.0, 0.0, 0), 0);
    }
}
