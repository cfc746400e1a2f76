//! UTC calendar hours from Unix time, for the md5-hourly text `YYYY-MM-DD-HH`.

use std::fmt;

/// A UTC calendar hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcHour {
    /// Year (four digits or more).
    pub year: u64,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
}

impl UtcHour {
    /// The UTC hour number `hours` since 1970-01-01 00:00 UTC.
    pub fn from_epoch_hours(hours: u64) -> UtcHour {
        let days = hours / 24;
        let (year, month, day) = civil_from_days(days);
        UtcHour { year, month, day, hour: (hours % 24) as u8 }
    }
}

/// `YYYY-MM-DD-HH`, as `date +%Y-%m-%d-%H` prints it.
impl fmt::Display for UtcHour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}-{:02}", self.year, self.month, self.day, self.hour)
    }
}

/// Proleptic Gregorian (year, month, day) of day number `days` since 1970-01-01.
/// Howard Hinnant's `civil_from_days`, restricted to non-negative days.
fn civil_from_days(days: u64) -> (u64, u8, u8) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1st
    let mp = (5 * doy + 2) / 153; // 0..=11, March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
