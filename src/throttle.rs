//! Login throttling: failed passwords per client address and per username
//! earn a growing wait, during which further attempts get 429. A success
//! clears both. Pure: time arrives as Unix milliseconds.
//!
//! Defaults (documented in `design/security.md`): the first
//! `FREE_FAILURES` failures cost nothing; each further one blocks the address
//! and the name for `BASE_BLOCK_MS` × 2^(n-1), capped at `MAX_BLOCK_MS`.
//! IPv6 addresses are grouped by /64, since one host usually owns a /64.

use std::collections::HashMap;
use std::net::IpAddr;

pub const FREE_FAILURES: u32 = 3;
pub const BASE_BLOCK_MS: u64 = 1_000;
pub const MAX_BLOCK_MS: u64 = 15 * 60 * 1_000;
/// An entry with no failure for this long is forgotten.
const FORGET_AFTER_MS: u64 = 60 * 60 * 1_000;
/// Above this many entries, forgotten ones are pruned (bounded memory
/// whatever an attacker's address space).
const PRUNE_ABOVE: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure_ms: u64,
    blocked_until_ms: u64,
}

#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<Key, Entry>,
}

/// IPv6 addresses count per /64; IPv4 (and IPv4-mapped) per address.
pub fn group(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

impl Throttle {
    fn keys(address: IpAddr, username_key: &str) -> [Key; 2] {
        [
            Key::Address(group(address)),
            Key::User(username_key.to_owned()),
        ]
    }

    /// `Err(ms)` while the address or the name is blocked: retry after `ms`.
    pub fn check(&self, address: IpAddr, username_key: &str, now_ms: u64) -> Result<(), u64> {
        let wait = Throttle::keys(address, username_key)
            .iter()
            .filter_map(|key| self.entries.get(key))
            .map(|entry| entry.blocked_until_ms.saturating_sub(now_ms))
            .max()
            .unwrap_or(0);
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    pub fn record_failure(&mut self, address: IpAddr, username_key: &str, now_ms: u64) {
        if self.entries.len() > PRUNE_ABOVE {
            self.entries.retain(|_, entry| {
                now_ms.saturating_sub(entry.last_failure_ms) < FORGET_AFTER_MS
                    || entry.blocked_until_ms > now_ms
            });
        }
        for key in Throttle::keys(address, username_key) {
            let entry = self.entries.entry(key).or_insert(Entry {
                failures: 0,
                last_failure_ms: now_ms,
                blocked_until_ms: 0,
            });
            if now_ms.saturating_sub(entry.last_failure_ms) >= FORGET_AFTER_MS {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure_ms = now_ms;
            if entry.failures > FREE_FAILURES {
                let doublings = (entry.failures - FREE_FAILURES - 1).min(20);
                let block = (BASE_BLOCK_MS << doublings).min(MAX_BLOCK_MS);
                entry.blocked_until_ms = now_ms.saturating_add(block);
            }
        }
    }

    pub fn record_success(&mut self, address: IpAddr, username_key: &str) {
        for key in Throttle::keys(address, username_key) {
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn free_failures_cost_nothing_then_the_wait_doubles_up_to_the_cap() {
        let mut throttle = Throttle::default();
        let address = ip("192.0.2.1");
        let mut now = 1_000_000;
        for _ in 0..FREE_FAILURES {
            throttle.record_failure(address, "alice", now);
            assert_eq!(throttle.check(address, "alice", now), Ok(()));
        }
        let mut expected = BASE_BLOCK_MS;
        for _ in 0..30 {
            throttle.record_failure(address, "alice", now);
            assert_eq!(throttle.check(address, "alice", now), Err(expected));
            now += expected;
            assert_eq!(throttle.check(address, "alice", now), Ok(()));
            expected = (expected * 2).min(MAX_BLOCK_MS);
        }
        assert_eq!(expected, MAX_BLOCK_MS);
    }

    #[test]
    fn a_blocked_name_is_blocked_from_any_address_and_an_address_for_any_name() {
        let mut throttle = Throttle::default();
        for _ in 0..=FREE_FAILURES {
            throttle.record_failure(ip("192.0.2.1"), "alice", 0);
        }
        assert!(throttle.check(ip("198.51.100.7"), "alice", 10).is_err());
        assert!(throttle.check(ip("192.0.2.1"), "bob", 10).is_err());
        assert!(throttle.check(ip("198.51.100.7"), "bob", 10).is_ok());
    }

    #[test]
    fn success_clears_both() {
        let mut throttle = Throttle::default();
        for _ in 0..=FREE_FAILURES {
            throttle.record_failure(ip("192.0.2.1"), "alice", 0);
        }
        throttle.record_success(ip("192.0.2.1"), "alice");
        assert!(throttle.check(ip("192.0.2.1"), "alice", 0).is_ok());
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_share_a_budget() {
        let mut throttle = Throttle::default();
        for index in 0..=FREE_FAILURES {
            throttle.record_failure(ip(&format!("2001:db8::{index}")), &format!("u{index}"), 0);
        }
        assert!(throttle.check(ip("2001:db8::ffff"), "someone", 1).is_err());
        assert!(throttle.check(ip("2001:db8:0:1::1"), "someone", 1).is_ok());
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut throttle = Throttle::default();
        for _ in 0..FREE_FAILURES {
            throttle.record_failure(ip("192.0.2.1"), "alice", 0);
        }
        throttle.record_failure(ip("192.0.2.1"), "alice", FORGET_AFTER_MS + 1);
        assert!(
            throttle
                .check(ip("192.0.2.1"), "alice", FORGET_AFTER_MS + 1)
                .is_ok()
        );
    }
}
