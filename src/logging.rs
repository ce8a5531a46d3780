//! Log output: `log` records through env_logger, formatted for a terminal
//! (UTC timestamp, level) or, under systemd (`JOURNAL_STREAM` set), with
//! syslog priority prefixes and no timestamp, since the journal adds its own.
//! `RUST_LOG` picks the level; the default is `info` (rustls: `error`, since
//! its warnings are about clients, one per connection).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Installs the global logger. Call once, early.
pub fn init() {
    let is_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rustls=error"),
    )
    .format(move |out, record| {
        if is_journal {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            // journald files each line on its own: every line of a
            // multi-line message (a TOML error) needs the priority.
            let text = record.args().to_string();
            for line in text.lines() {
                writeln!(out, "<{priority}>{line}")?;
            }
            Ok(())
        } else {
            writeln!(
                out,
                "{} {:<5} {}",
                utc_timestamp(SystemTime::now()),
                record.level(),
                record.args()
            )
        }
    })
    .init();
}

/// `2026-11-22T03:04:05.678Z` for a wall-clock time.
pub fn utc_timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        (of_day / 60) % 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// well-known algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_iso8601() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(utc_timestamp(leap_day), "2024-02-29T12:34:56.789Z");
        let new_year = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(utc_timestamp(new_year), "2026-12-31T23:59:59.000Z");
    }
}
