//! Login throttling: failed passwords earn a growing wait, during which
//! further attempts get 429. Pure: time arrives as monotonic milliseconds
//! (a wall clock set back would stretch every block by as much).
//!
//! Three records per attempt, each with its own allowance (documented in
//! `design/security.md`, "Guessing"):
//! - the client **address** (IPv6 grouped per /64), for any name: a guesser
//!   spraying many names, with room for a few people behind one NAT;
//! - the **address and name** pair: one address guessing one account, the
//!   tightest budget, and blocks that grow to 15 minutes;
//! - the **name**, from any address: many addresses guessing one account.
//!   Its blocks are capped short (`NAME_MAX_BLOCK_MS`), and they do not
//!   stop an address that logged in to the name lately (`known`): other
//!   addresses can keep a name blocked for strangers, never its owner out.
//!
//! A check counts from the moment it starts (`begin`), not when its verdict
//! returns: checks in flight count as failures that may come, so N guesses
//! sent at once are treated like N sent one after another.

use std::collections::HashMap;
use std::net::IpAddr;

/// Failures one address may make on one name before it waits.
pub const FREE_FAILURES: u32 = 3;
/// Failures one address may make over all names before it waits.
pub const ADDRESS_FREE_FAILURES: u32 = 10;
/// Failures from all addresses on one name before the name waits.
pub const NAME_FREE_FAILURES: u32 = 10;
pub const BASE_BLOCK_MS: u64 = 1_000;
/// The longest block of an address, or of an address and name.
pub const MAX_BLOCK_MS: u64 = 15 * 60 * 1_000;
/// The longest block of a name on its own (it stops the owner too).
pub const NAME_MAX_BLOCK_MS: u64 = 30 * 1_000;
/// The wait suggested while earlier checks are still under way.
pub const IN_FLIGHT_WAIT_MS: u64 = 1_000;
/// An entry with no failure for this long is forgotten.
const FORGET_AFTER_MS: u64 = 60 * 60 * 1_000;
/// Above this many entries, forgotten ones are pruned. What is left is
/// bounded by the failures an hour can bring (`FORGET_AFTER_MS`), which the
/// per-address blocks and the verifier's pace limit, not by a constant.
const PRUNE_ABOVE: usize = 65_536;
/// Addresses (groups) remembered per name as having logged in to it.
const KNOWN_PER_NAME: usize = 4;
/// A remembered address is forgotten after this long without a login.
const KNOWN_FOR_MS: u64 = 30 * 24 * 60 * 60 * 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Pair(IpAddr, String),
    Name(String),
}

impl Key {
    /// Free failures, then the cap on the doubling block.
    fn policy(&self) -> (u32, u64) {
        match self {
            Key::Address(_) => (ADDRESS_FREE_FAILURES, MAX_BLOCK_MS),
            Key::Pair(..) => (FREE_FAILURES, MAX_BLOCK_MS),
            Key::Name(_) => (NAME_FREE_FAILURES, NAME_MAX_BLOCK_MS),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    /// Checks begun and not yet ended.
    in_flight: u32,
    last_failure_ms: u64,
    blocked_until_ms: u64,
}

/// Why an attempt must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Too many failures: blocked for this long.
    Blocked { ms: u64 },
    /// Past an allowance with checks still under way, whose failures would
    /// block: try again once they are answered.
    InFlight,
}

impl Wait {
    /// How long to wait before trying again, in milliseconds.
    pub fn ms(self) -> u64 {
        match self {
            Wait::Blocked { ms } => ms,
            Wait::InFlight => IN_FLIGHT_WAIT_MS,
        }
    }
}

impl Entry {
    /// Why an attempt must wait, if it must: blocked, or past the
    /// allowance with a check still under way (its failure would block).
    fn admits(&self, free: u32, now_ms: u64) -> Result<(), Wait> {
        let ms = self.blocked_until_ms.saturating_sub(now_ms);
        if ms > 0 {
            return Err(Wait::Blocked { ms });
        }
        let may_fail = self.failures.saturating_add(self.in_flight);
        if self.in_flight > 0 && may_fail > free {
            return Err(Wait::InFlight);
        }
        Ok(())
    }

    /// The entry a shared count stands for (cluster mode): the block the
    /// `failures`-th failure began `age_ms` ago, and the checks this node
    /// has in flight.
    fn shared(policy: (u32, u64), counted: Counted, in_flight: u32, now_ms: u64) -> Entry {
        let (free, max_block_ms) = policy;
        let blocked_until_ms = block_ms(free, max_block_ms, counted.failures).map_or(0, |block| {
            now_ms.saturating_add(block.saturating_sub(counted.age_ms))
        });
        Entry {
            failures: counted.failures,
            in_flight,
            last_failure_ms: now_ms.saturating_sub(counted.age_ms),
            blocked_until_ms,
        }
    }

    fn is_idle(&self) -> bool {
        self.failures == 0 && self.in_flight == 0 && self.blocked_until_ms == 0
    }
}

/// The block a record earns with `failures` failures, past `free`: one
/// second, doubling with each further failure up to `max_block_ms`.
fn block_ms(free: u32, max_block_ms: u64, failures: u32) -> Option<u64> {
    if failures <= free {
        return None;
    }
    let doublings = (failures - free - 1).min(20);
    Some((BASE_BLOCK_MS << doublings).min(max_block_ms))
}

/// One record's failures as the cluster counts them (cluster mode): how
/// many, and how long ago the last one was counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub failures: u32,
    pub age_ms: u64,
}

/// The three records of an attempt as the cluster counts them, in the
/// order of `keys`: the address, the address and name, the name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shared {
    pub address: Counted,
    pub pair: Counted,
    pub name: Counted,
}

#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<Key, Entry>,
    /// Per name, the addresses (groups) that logged in to it lately, with
    /// when: the name's own record does not stop them, so failures from
    /// other addresses can block a name for strangers but never lock its
    /// owner out (a device-cookie rule, by address).
    known: HashMap<String, Vec<(IpAddr, u64)>>,
    /// `entries` is pruned once it holds more than this (0: `PRUNE_ABOVE`),
    /// raised to twice what a prune keeps, so a table of recent failures
    /// is not rescanned on every check.
    prune_above: usize,
    /// Prunes run (for tests of their cost).
    #[cfg(test)]
    prunes: usize,
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
    fn keys(address: IpAddr, username_key: &str) -> [Key; 3] {
        let address = group(address);
        [
            Key::Address(address),
            Key::Pair(address, username_key.to_owned()),
            Key::Name(username_key.to_owned()),
        ]
    }

    /// Why an attempt for this name from this address must wait, if it
    /// must (the longest block wins). Counts nothing (USER asks this).
    pub fn check(&self, address: IpAddr, username_key: &str, now_ms: u64) -> Result<(), Wait> {
        self.verdict(address, username_key, now_ms, |key| {
            self.entries.get(key).copied()
        })
    }

    /// `check` in cluster mode: the failures and blocks are the cluster's
    /// counts (`shared`, the same arithmetic as `record_failure`'s, from
    /// the age of each record's last failure); only the checks in flight
    /// and the addresses known to have logged in are this node's.
    pub fn check_shared(
        &self,
        address: IpAddr,
        username_key: &str,
        now_ms: u64,
        shared: &Shared,
    ) -> Result<(), Wait> {
        self.verdict(address, username_key, now_ms, |key| {
            let counted = match key {
                Key::Address(_) => shared.address,
                Key::Pair(..) => shared.pair,
                Key::Name(_) => shared.name,
            };
            let in_flight = self.entries.get(key).map_or(0, |entry| entry.in_flight);
            Some(Entry::shared(key.policy(), counted, in_flight, now_ms))
        })
    }

    /// `begin` in cluster mode: admitted by `check_shared`, then counted in
    /// flight on this node as `begin` does.
    pub fn begin_shared(
        &mut self,
        address: IpAddr,
        username_key: &str,
        now_ms: u64,
        shared: &Shared,
    ) -> Result<(), Wait> {
        self.check_shared(address, username_key, now_ms, shared)?;
        self.count_in_flight(address, username_key, now_ms);
        Ok(())
    }

    /// The longest wait the three records' entries (as `entry` gives them)
    /// impose, skipping the name's for an address that logged in to it.
    fn verdict(
        &self,
        address: IpAddr,
        username_key: &str,
        now_ms: u64,
        entry: impl Fn(&Key) -> Option<Entry>,
    ) -> Result<(), Wait> {
        let mut verdict = Ok(());
        let is_known = self.is_known(address, username_key, now_ms);
        for key in Throttle::keys(address, username_key) {
            if is_known && matches!(key, Key::Name(_)) {
                continue;
            }
            let Some(entry) = entry(&key) else {
                continue;
            };
            match (entry.admits(key.policy().0, now_ms), verdict) {
                (Ok(()), _) => {}
                (Err(wait), Ok(())) => verdict = Err(wait),
                (Err(Wait::Blocked { ms }), Err(Wait::Blocked { ms: longest })) => {
                    verdict = Err(Wait::Blocked {
                        ms: ms.max(longest),
                    })
                }
                (Err(Wait::Blocked { ms }), Err(Wait::InFlight)) => {
                    verdict = Err(Wait::Blocked { ms })
                }
                (Err(Wait::InFlight), Err(_)) => {}
            }
        }
        verdict
    }

    /// Starts a password check if the throttle admits it, and counts it in
    /// flight until `record_failure`, `record_success` or `abandon` ends it.
    pub fn begin(&mut self, address: IpAddr, username_key: &str, now_ms: u64) -> Result<(), Wait> {
        self.check(address, username_key, now_ms)?;
        self.count_in_flight(address, username_key, now_ms);
        Ok(())
    }

    fn count_in_flight(&mut self, address: IpAddr, username_key: &str, now_ms: u64) {
        self.prune(now_ms);
        for key in Throttle::keys(address, username_key) {
            let entry = self.entries.entry(key).or_default();
            entry.in_flight = entry.in_flight.saturating_add(1);
        }
    }

    /// Ends a check with a wrong password: it counts against all three
    /// records, and past an allowance blocks that record.
    pub fn record_failure(&mut self, address: IpAddr, username_key: &str, now_ms: u64) {
        for key in Throttle::keys(address, username_key) {
            let (free, max_block_ms) = key.policy();
            let entry = self.entries.entry(key).or_default();
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if now_ms.saturating_sub(entry.last_failure_ms) >= FORGET_AFTER_MS {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure_ms = now_ms;
            if let Some(block) = block_ms(free, max_block_ms, entry.failures) {
                entry.blocked_until_ms = now_ms.saturating_add(block);
            }
        }
    }

    /// Ends a check with the right password: the name's records are
    /// cleared. The address keeps its failures on other names (a guesser
    /// with one account of its own cannot wipe its record by logging in).
    pub fn record_success(&mut self, address: IpAddr, username_key: &str, now_ms: u64) {
        self.remember(address, username_key, now_ms);
        for key in Throttle::keys(address, username_key) {
            let is_address = matches!(key, Key::Address(_));
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if !is_address {
                entry.failures = 0;
                entry.blocked_until_ms = 0;
            }
            if entry.is_idle() {
                self.entries.remove(&key);
            }
        }
    }

    /// Ends a check that never ran (the verifier's queue was full), or a
    /// right one whose client left: nothing is learnt, so nothing is
    /// counted. (A client that leaves mid-check does not end its check:
    /// the hub keeps it in flight until the verdict.)
    pub fn abandon(&mut self, address: IpAddr, username_key: &str) {
        for key in Throttle::keys(address, username_key) {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if entry.is_idle() {
                self.entries.remove(&key);
            }
        }
    }

    /// True if this address (group) logged in to this name within
    /// `KNOWN_FOR_MS`.
    fn is_known(&self, address: IpAddr, username_key: &str, now_ms: u64) -> bool {
        let address = group(address);
        self.known.get(username_key).is_some_and(|known| {
            known.iter().any(|&(known, at_ms)| {
                known == address && now_ms.saturating_sub(at_ms) < KNOWN_FOR_MS
            })
        })
    }

    /// Remembers a login: the name's newest `KNOWN_PER_NAME` addresses are
    /// kept. The table holds names that logged in (accounts, under
    /// accounts auth) and is pruned like `entries`.
    fn remember(&mut self, address: IpAddr, username_key: &str, now_ms: u64) {
        let address = group(address);
        if self.known.len() > PRUNE_ABOVE {
            self.known.retain(|_, known| {
                known.retain(|&(_, at_ms)| now_ms.saturating_sub(at_ms) < KNOWN_FOR_MS);
                !known.is_empty()
            });
            if self.known.len() > PRUNE_ABOVE {
                self.known.clear();
            }
        }
        let known = self.known.entry(username_key.to_owned()).or_default();
        known.retain(|&(known, _)| known != address);
        if known.len() >= KNOWN_PER_NAME {
            known.remove(0);
        }
        known.push((address, now_ms));
    }

    /// Keeps the table bounded: above `PRUNE_ABOVE` entries, those with
    /// nothing in flight, no block and no recent failure go.
    fn prune(&mut self, now_ms: u64) {
        if self.entries.len() <= self.prune_above.max(PRUNE_ABOVE) {
            return;
        }
        #[cfg(test)]
        {
            self.prunes += 1;
        }
        self.entries.retain(|_, entry| {
            entry.in_flight > 0
                || entry.blocked_until_ms > now_ms
                || now_ms.saturating_sub(entry.last_failure_ms) < FORGET_AFTER_MS
        });
        // Before, a table of more than PRUNE_ABOVE recent entries was
        // rescanned whole by every `begin`: O(entries) of loop time per
        // PASS, for as long as an hour of sprayed names lasted.
        self.prune_above = self.entries.len().saturating_mul(2);
    }

    /// Entries held (for tests of the bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// One whole check: begun, then failed.
    fn fail(throttle: &mut Throttle, address: IpAddr, name: &str, now: u64) {
        throttle.begin(address, name, now).expect("admitted");
        throttle.record_failure(address, name, now);
    }

    #[test]
    fn free_failures_cost_nothing_then_the_wait_doubles_up_to_the_cap() {
        let mut throttle = Throttle::default();
        let address = ip("192.0.2.1");
        let mut now = 1_000_000;
        for _ in 0..FREE_FAILURES {
            fail(&mut throttle, address, "alice", now);
            assert_eq!(throttle.check(address, "alice", now), Ok(()));
        }
        let mut expected = BASE_BLOCK_MS;
        for _ in 0..30 {
            fail(&mut throttle, address, "alice", now);
            assert_eq!(
                throttle.check(address, "alice", now),
                Err(Wait::Blocked { ms: expected })
            );
            now += expected;
            assert_eq!(throttle.check(address, "alice", now), Ok(()));
            expected = (expected * 2).min(MAX_BLOCK_MS);
        }
        assert_eq!(expected, MAX_BLOCK_MS);
    }

    #[test]
    fn issue_11_checks_in_flight_count_so_parallel_guesses_are_throttled_like_sequential_ones() {
        let address = ip("192.0.2.1");
        // Twelve guesses one after another: FREE_FAILURES + 1 are checked,
        // then the address and name are blocked.
        let mut sequential = Throttle::default();
        let mut checked_sequentially = 0;
        for _ in 0..12 {
            if sequential.begin(address, "alice", 0).is_ok() {
                sequential.record_failure(address, "alice", 0);
                checked_sequentially += 1;
            }
        }
        // Twelve guesses at once, before any verdict: the same number.
        let mut parallel = Throttle::default();
        let admitted = (0..12)
            .filter(|_| parallel.begin(address, "alice", 0).is_ok())
            .count();
        assert_eq!(checked_sequentially, FREE_FAILURES as usize + 1);
        assert_eq!(admitted, checked_sequentially);
        // The refused ones are told to wait, and the verdicts then block.
        assert_eq!(parallel.check(address, "alice", 0), Err(Wait::InFlight));
        for _ in 0..admitted {
            parallel.record_failure(address, "alice", 0);
        }
        assert_eq!(
            parallel.check(address, "alice", 0),
            Err(Wait::Blocked { ms: BASE_BLOCK_MS })
        );
    }

    #[test]
    fn past_the_allowance_one_check_at_a_time_is_admitted() {
        let address = ip("192.0.2.1");
        let mut throttle = Throttle::default();
        for _ in 0..=FREE_FAILURES {
            fail(&mut throttle, address, "alice", 0);
        }
        let now = BASE_BLOCK_MS;
        assert!(throttle.begin(address, "alice", now).is_ok());
        assert_eq!(throttle.begin(address, "alice", now), Err(Wait::InFlight));
    }

    #[test]
    fn right_passwords_at_once_within_the_allowances_are_all_admitted() {
        // People behind one address logging in at once are not refused.
        let mut throttle = Throttle::default();
        let address = ip("192.0.2.1");
        for index in 0..=ADDRESS_FREE_FAILURES {
            let name = format!("user{index}");
            assert!(throttle.begin(address, &name, 0).is_ok(), "{name}");
        }
        for index in 0..=ADDRESS_FREE_FAILURES {
            throttle.record_success(address, &format!("user{index}"), 0);
        }
        assert_eq!(throttle.len(), 0, "successes leave nothing behind");
    }

    #[test]
    fn issue_11_other_addresses_delay_an_owner_only_briefly() {
        let mut throttle = Throttle::default();
        // Many addresses, each within its own allowance, guess alice.
        let mut now = 0;
        for index in 0..200u32 {
            let address = IpAddr::from([198, 18, (index / 250) as u8, (index % 250) as u8]);
            if throttle.begin(address, "alice", now).is_ok() {
                throttle.record_failure(address, "alice", now);
            }
            now += 10;
        }
        // The owner, from an address of their own, waits at most the
        // short name cap, never the long address cap.
        let owner = ip("203.0.113.5");
        match throttle.check(owner, "alice", now) {
            Ok(()) => {}
            Err(wait) => assert!(wait.ms() <= NAME_MAX_BLOCK_MS, "owner waits {wait:?}"),
        }
        assert!(
            throttle
                .check(owner, "alice", now + NAME_MAX_BLOCK_MS)
                .is_ok()
        );
    }

    #[test]
    fn guessers_that_keep_a_name_blocked_never_stop_an_address_that_logged_in_to_it() {
        // Before: one guess every 30 s from a fresh address (an IPv6 /48
        // holds 65,536 /64s) kept the name's block up for good, and with it
        // the owner, whose address had logged in to it many times.
        let mut throttle = Throttle::default();
        let owner = ip("203.0.113.5");
        throttle.begin(owner, "alice", 0).unwrap();
        throttle.record_success(owner, "alice", 0);
        let mut now = 1_000;
        for index in 0..2_000u32 {
            let address = IpAddr::from([198, 18, (index / 250) as u8, (index % 250) as u8]);
            if throttle.begin(address, "alice", now).is_ok() {
                throttle.record_failure(address, "alice", now);
            }
            now += 1_000;
        }
        let stranger = ip("192.0.2.9");
        assert!(
            matches!(
                throttle.check(stranger, "alice", now),
                Err(Wait::Blocked { .. })
            ),
            "the name stays blocked for strangers"
        );
        assert_eq!(throttle.check(owner, "alice", now), Ok(()));
        throttle
            .begin(owner, "alice", now)
            .expect("the owner is admitted");
        // The owner's own address and name records still count the owner's
        // (or a neighbour's) failures.
        throttle.record_failure(owner, "alice", now);
        for _ in 0..FREE_FAILURES {
            throttle.begin(owner, "alice", now).unwrap();
            throttle.record_failure(owner, "alice", now);
        }
        assert!(throttle.check(owner, "alice", now).is_err());
        // A remembered address is forgotten after a month without a login.
        let mut other = Throttle::default();
        other.begin(owner, "bob", 0).unwrap();
        other.record_success(owner, "bob", 0);
        assert!(other.is_known(owner, "bob", KNOWN_FOR_MS - 1));
        assert!(!other.is_known(owner, "bob", KNOWN_FOR_MS));
        // At most KNOWN_PER_NAME addresses per name, the newest.
        for index in 0..10u8 {
            let address = IpAddr::from([192, 0, 2, index]);
            other.record_success(address, "carol", u64::from(index));
        }
        assert_eq!(other.known["carol"].len(), KNOWN_PER_NAME);
        assert!(other.is_known(IpAddr::from([192, 0, 2, 9]), "carol", 10));
        assert!(!other.is_known(IpAddr::from([192, 0, 2, 0]), "carol", 10));
    }

    #[test]
    fn a_guessing_address_is_blocked_long_for_that_name_and_then_for_every_name() {
        let mut throttle = Throttle::default();
        let guesser = ip("192.0.2.1");
        for _ in 0..=FREE_FAILURES {
            fail(&mut throttle, guesser, "alice", 0);
        }
        // The pair is blocked; the name from elsewhere and other names from
        // the guesser are not (yet).
        assert!(throttle.check(guesser, "alice", 10).is_err());
        assert!(throttle.check(ip("198.51.100.7"), "alice", 10).is_ok());
        assert!(throttle.check(guesser, "bob", 10).is_ok());
        // Spraying many names exhausts the address's own allowance.
        let mut now = 10;
        for index in 0..ADDRESS_FREE_FAILURES {
            let name = format!("user{index}");
            if throttle.begin(guesser, &name, now).is_ok() {
                throttle.record_failure(guesser, &name, now);
            }
            now += 1;
        }
        assert!(throttle.check(guesser, "zed", now).is_err());
        assert!(throttle.check(ip("198.51.100.7"), "zed", now).is_ok());
    }

    #[test]
    fn success_clears_the_name_but_not_the_addresss_other_failures() {
        let mut throttle = Throttle::default();
        let address = ip("192.0.2.1");
        for _ in 0..=FREE_FAILURES {
            fail(&mut throttle, address, "alice", 0);
        }
        throttle.begin(address, "alice", BASE_BLOCK_MS).unwrap();
        throttle.record_success(address, "alice", 0);
        assert!(throttle.check(address, "alice", BASE_BLOCK_MS).is_ok());
        // The address still carries its failures toward its own allowance.
        let left = ADDRESS_FREE_FAILURES - (FREE_FAILURES + 1);
        for index in 0..left {
            fail(&mut throttle, address, &format!("u{index}"), BASE_BLOCK_MS);
        }
        fail(&mut throttle, address, "last", BASE_BLOCK_MS);
        assert!(throttle.check(address, "anyone", BASE_BLOCK_MS).is_err());
    }

    #[test]
    fn an_abandoned_check_counts_nothing() {
        let mut throttle = Throttle::default();
        let address = ip("192.0.2.1");
        for _ in 0..=FREE_FAILURES {
            throttle.begin(address, "alice", 0).unwrap();
        }
        for _ in 0..=FREE_FAILURES {
            throttle.abandon(address, "alice");
        }
        assert_eq!(throttle.len(), 0);
        assert!(throttle.check(address, "alice", 0).is_ok());
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_share_a_budget() {
        let mut throttle = Throttle::default();
        for index in 0..=FREE_FAILURES {
            fail(
                &mut throttle,
                ip(&format!("2001:db8::{index}")),
                "someone",
                0,
            );
        }
        assert!(throttle.check(ip("2001:db8::ffff"), "someone", 1).is_err());
        assert!(throttle.check(ip("2001:db8:0:1::1"), "someone", 1).is_ok());
    }

    #[test]
    fn a_table_of_recent_failures_is_not_rescanned_on_every_check() {
        let mut throttle = Throttle::default();
        // Sprayed names from many addresses, all within the hour: nothing
        // can be pruned.
        let mut index = 0u32;
        while throttle.len() <= PRUNE_ABOVE {
            let address = IpAddr::from((0xC612_0000u32 + index).to_be_bytes());
            fail(&mut throttle, address, &format!("n{index}"), 0);
            index += 1;
        }
        for more in 0..1_000u32 {
            let address = IpAddr::from((0x0A00_0000u32 + more).to_be_bytes());
            fail(&mut throttle, address, &format!("m{more}"), 0);
        }
        assert!(throttle.prunes <= 1, "{} full scans", throttle.prunes);
        // Once the hour has passed, the next prune forgets them all.
        let later = FORGET_AFTER_MS + 1;
        throttle.prune_above = 0;
        throttle.begin(ip("192.0.2.1"), "alice", later).unwrap();
        assert_eq!(throttle.len(), 3);
    }

    #[test]
    fn shared_counts_give_the_waits_local_failures_give() {
        // Cluster mode: another node counted the failures; this node gets
        // the counts and the age of the last one, and must give the same
        // wait a single node that counted them itself gives.
        let address = ip("192.0.2.1");
        for failures in 0..=(ADDRESS_FREE_FAILURES + 3) {
            let mut local = Throttle::default();
            for _ in 0..failures {
                local.record_failure(address, "alice", 1_000);
            }
            for later in [0, 1, 999, 1_000, 1_500, 4_000, 70_000] {
                let counted = Counted {
                    failures,
                    age_ms: later,
                };
                let shared = Shared {
                    address: counted,
                    pair: counted,
                    name: counted,
                };
                let elsewhere = Throttle::default();
                assert_eq!(
                    elsewhere.check_shared(address, "alice", 1_000 + later, &shared),
                    local.check(address, "alice", 1_000 + later),
                    "{failures} failures, {later} ms later"
                );
            }
        }
        // Checks in flight are this node's: past the allowance, one at a
        // time, as `begin` admits them.
        let counted = Counted {
            failures: FREE_FAILURES + 1,
            age_ms: BASE_BLOCK_MS,
        };
        let shared = Shared {
            pair: counted,
            ..Shared::default()
        };
        let mut throttle = Throttle::default();
        assert!(throttle.begin_shared(address, "alice", 0, &shared).is_ok());
        assert_eq!(
            throttle.begin_shared(address, "alice", 0, &shared),
            Err(Wait::InFlight)
        );
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut throttle = Throttle::default();
        for _ in 0..FREE_FAILURES {
            fail(&mut throttle, ip("192.0.2.1"), "alice", 0);
        }
        fail(&mut throttle, ip("192.0.2.1"), "alice", FORGET_AFTER_MS + 1);
        assert!(
            throttle
                .check(ip("192.0.2.1"), "alice", FORGET_AFTER_MS + 1)
                .is_ok()
        );
    }
}
