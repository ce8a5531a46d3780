//! Every numeric key's documented range (`RANGES`, as README's table
//! gives it), each key's value (`RawConfig::numbers`) and the check of one
//! against the other, so nothing downstream meets a configured number that
//! can overflow a clock or an allocation.

use super::{ConfigError, RawConfig, invalid};

/// The documented range of one numeric key, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
}

const fn range(key: &'static str, min: u64, max: u64) -> Range {
    Range { key, min, max }
}

/// Every numeric key's range, as README's configuration table documents
/// it. `validate` refuses a value outside it (exit 2, naming the key), so
/// nothing downstream meets a configured number that can overflow a clock
/// or an allocation. A new numeric key adds one line here and one in
/// `RawConfig::numbers` (a unit test checks the two lists agree).
pub const RANGES: &[Range] = &[
    range("max_line_bytes", 64, 1024 * 1024),
    range("max_connections", 1, 1_000_000),
    range("max_output_bytes", 64 * 1024, 1024 * 1024 * 1024),
    range("max_connections_per_ip", 0, 1_000_000),
    range("auth_timeout_secs", 1, 86_400),
    range("idle_timeout_secs", 0, 86_400),
    range("flood_rate", 0, 1_000_000),
    range("flood_burst", 1, 1_000_000),
    range("shutdown_timeout_secs", 0, 3_600),
    range(
        "history_backlog",
        0,
        crate::history::MAX_HISTORY_REPLY as u64,
    ),
    range("history_keep", 1, 1_000_000),
    range("quiet_room_size", 0, 1_000_000),
    range("history_max_bytes", 1 << 20, 1 << 40),
    range("cluster_replicas", 1, 5),
];

/// A numeric key's value, as `RawConfig::numbers` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Integer(u64),
    Real(f64),
}

/// Refuses `value` when it lies outside `key`'s entry in `RANGES` (or is
/// not a finite number).
pub(super) fn check_range(key: &'static str, value: Number) -> Result<(), ConfigError> {
    let Some(range) = RANGES.iter().find(|range| range.key == key) else {
        return Err(invalid(key, "has no documented range (a bug in riftd)"));
    };
    let is_inside = match value {
        Number::Integer(value) => (range.min..=range.max).contains(&value),
        Number::Real(value) => {
            value.is_finite() && (range.min as f64..=range.max as f64).contains(&value)
        }
    };
    if is_inside {
        return Ok(());
    }
    let shown = match value {
        Number::Integer(value) => value.to_string(),
        Number::Real(value) => value.to_string(),
    };
    Err(invalid(
        key,
        format!(
            "must be between {} and {}, not {shown}",
            range.min, range.max
        ),
    ))
}

impl RawConfig {
    /// Every numeric key with its value, for the range checks.
    pub(super) fn numbers(&self) -> Vec<(&'static str, Number)> {
        let integer = |value: usize| Number::Integer(u64::try_from(value).unwrap_or(u64::MAX));
        vec![
            ("max_line_bytes", integer(self.max_line_bytes)),
            ("max_connections", integer(self.max_connections)),
            ("max_output_bytes", integer(self.max_output_bytes)),
            (
                "max_connections_per_ip",
                integer(self.max_connections_per_ip),
            ),
            ("auth_timeout_secs", Number::Integer(self.auth_timeout_secs)),
            ("idle_timeout_secs", Number::Integer(self.idle_timeout_secs)),
            ("flood_rate", Number::Real(self.flood_rate)),
            ("flood_burst", Number::Integer(u64::from(self.flood_burst))),
            (
                "shutdown_timeout_secs",
                Number::Integer(self.shutdown_timeout_secs),
            ),
            ("history_backlog", integer(self.history_backlog)),
            ("history_keep", integer(self.history_keep)),
            ("quiet_room_size", integer(self.quiet_room_size)),
            ("history_max_bytes", integer(self.history_max_bytes)),
            (
                "cluster_replicas",
                integer(self.cluster_replicas.unwrap_or(1)),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_HISTORY_MAX_BYTES;
    use std::path::PathBuf;

    /// TOML for `key = value`, as a float for the one float key. A line
    /// may take at most half of `max_output_bytes`, so a long one comes with
    /// the largest output cap.
    fn assignment(key: &str, value: u64) -> String {
        if key == "flood_rate" {
            format!("{key} = {value}.0")
        } else if key == "max_line_bytes" {
            format!("{key} = {value}\nmax_output_bytes = 1073741824")
        } else if key == "cluster_replicas" {
            format!("{key} = {value}\ncluster_url = \"nats://127.0.0.1:4222\"")
        } else {
            format!("{key} = {value}")
        }
    }

    #[test]
    fn every_numeric_key_has_exactly_one_documented_range_holding_its_default() {
        let config = RawConfig::default();
        let mut numbers: Vec<_> = config.numbers().iter().map(|(key, _)| *key).collect();
        let mut ranged: Vec<_> = RANGES.iter().map(|range| range.key).collect();
        numbers.sort_unstable();
        ranged.sort_unstable();
        assert_eq!(numbers, ranged);
        ranged.dedup();
        assert_eq!(ranged.len(), RANGES.len(), "a key has two ranges");
        for (key, value) in config.numbers() {
            assert!(check_range(key, value).is_ok(), "default of {key}");
        }
    }

    #[test]
    fn every_numeric_key_takes_both_ends_of_its_range_and_refuses_beyond_them_by_name() {
        for range in RANGES {
            for value in [range.min, range.max] {
                let text = assignment(range.key, value);
                let config = RawConfig::from_toml(&text).unwrap();
                if let Err(error) = config.validate() {
                    panic!("{text}: {error}");
                }
            }
            let mut outside = vec![range.max + 1, i64::MAX as u64];
            if range.min > 0 {
                outside.push(range.min - 1);
            }
            for value in outside {
                let text = assignment(range.key, value);
                // A value too big for the field's type is refused by the
                // parser, the rest by `validate`; both name the key.
                let error = match RawConfig::from_toml(&text) {
                    Err(error) => error,
                    Ok(config) => config.validate().unwrap_err().to_string(),
                };
                assert!(error.contains(range.key), "{text}: {error}");
            }
        }
    }

    #[test]
    fn enormous_timeouts_that_used_to_overflow_clocks_are_refused_by_name() {
        for text in [
            "shutdown_timeout_secs = 9223372036854775807",
            "auth_timeout_secs = 18000000000000000",
            "idle_timeout_secs = 18000000000000000",
            "flood_rate = inf",
            "flood_rate = nan",
            "flood_rate = -1.0",
        ] {
            let key = text.split(' ').next().unwrap();
            let error = RawConfig::from_toml(text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("`{key}`")), "{text}: {error}");
            assert!(error.contains("must be between"), "{text}: {error}");
        }
    }

    #[test]
    fn history_max_bytes_has_a_default_and_a_range() {
        assert_eq!(
            RawConfig::default().history_max_bytes,
            DEFAULT_HISTORY_MAX_BYTES
        );
        for (value, is_valid) in [
            (0u64, false),
            ((1 << 20) - 1, false),
            (1 << 20, true),
            (1 << 40, true),
            ((1 << 40) + 1, false),
        ] {
            let mut config = RawConfig::from_toml(&format!("history_max_bytes = {value}")).unwrap();
            config.history_file = PathBuf::new();
            match config.validate() {
                Ok(config) => {
                    assert!(is_valid, "{value} accepted");
                    assert_eq!(config.hub_config().history_max_bytes as u64, value);
                }
                Err(error) => {
                    assert!(!is_valid, "{value} refused: {error}");
                    assert!(error.to_string().contains("history_max_bytes"), "{error}");
                }
            }
        }
    }
}
