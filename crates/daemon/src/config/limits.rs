//! Bounds on what knocks can make the daemon do and keep: open rates per door and per
//! source prefix, live grants per door (`[daemon]` and `[[door]]` keys), and how long
//! closed grant records are kept (`[store]`). The model here, the checks of the TOML
//! values next to it; [`crate::grants::admission`] enforces them.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawDaemon, RawDuration, RawRate, RawStore};

/// Default budget of opens per source prefix: 30 a minute (a burst of 30).
pub const DEFAULT_OPENS_PER_PREFIX: Rate = Rate { count: 30, per: Duration::from_secs(60) };
/// Default opens per second per door (and burst).
pub const DEFAULT_OPENS_PER_SECOND: u32 = 100;
/// Default cap on live grants per door.
pub const DEFAULT_MAX_LIVE_GRANTS: usize = 4096;
/// Default IPv4 prefix length that shares one budget.
pub const DEFAULT_PREFIX_V4: u8 = 24;
/// Default IPv6 prefix length that shares one budget.
pub const DEFAULT_PREFIX_V6: u8 = 56;
/// Default time closed grant records are kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period (and at once).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// One door's bounds (`None`: unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorLimits {
    /// Opens per second, and burst.
    pub opens_per_second: Option<u32>,
    /// Live grants at most.
    pub max_live_grants: Option<usize>,
}

impl Default for DoorLimits {
    fn default() -> DoorLimits {
        DoorLimits {
            opens_per_second: Some(DEFAULT_OPENS_PER_SECOND),
            max_live_grants: Some(DEFAULT_MAX_LIVE_GRANTS),
        }
    }
}

/// Bounds on knock opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Opens per source prefix (any door).
    pub opens_per_prefix: Option<Rate>,
    /// IPv4 prefix length of a source prefix.
    pub prefix_v4: u8,
    /// IPv6 prefix length of a source prefix.
    pub prefix_v6: u8,
    /// Bounds of doors not listed in `doors`.
    pub default_door: DoorLimits,
    /// Bounds by door name.
    pub doors: BTreeMap<String, DoorLimits>,
    /// Doors and SPA users that grant a prefix rather than the single address.
    pub grant_prefix: super::GrantPrefixes,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            opens_per_prefix: Some(DEFAULT_OPENS_PER_PREFIX),
            prefix_v4: DEFAULT_PREFIX_V4,
            prefix_v6: DEFAULT_PREFIX_V6,
            default_door: DoorLimits::default(),
            doors: BTreeMap::new(),
            grant_prefix: super::GrantPrefixes::default(),
        }
    }
}

impl Limits {
    /// No bounds (tests, dry runs).
    pub fn unbounded() -> Limits {
        Limits {
            opens_per_prefix: None,
            default_door: DoorLimits { opens_per_second: None, max_live_grants: None },
            ..Limits::default()
        }
    }

    /// The defaults for a firewall that holds `max_grants` grants per family.
    pub fn for_max_grants(max_grants: u32) -> Limits {
        let mut l = Limits::default();
        l.default_door.max_live_grants = Some(default_max_live(max_grants));
        l
    }

    /// The bounds of door `name`.
    pub fn door(&self, name: &str) -> DoorLimits {
        self.doors.get(name).copied().unwrap_or(self.default_door)
    }
}

/// `[store]`: the grant records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// Closed records older than this are deleted.
    pub retention: Duration,
}

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings { retention: DEFAULT_RETENTION }
    }
}

/// A refusal: the span it is about and the message.
pub(super) type Bad = (std::ops::Range<usize>, String);

/// Parse a rate.
pub(super) fn rate(r: Spanned<RawRate>, what: &str) -> Result<Rate, Bad> {
    let span = r.span();
    let bad = |m: String| Err((span.clone(), m));
    let (count, per) = match r.into_inner() {
        RawRate::PerSecond(n) => (n, Duration::from_secs(1)),
        RawRate::Text(t) => {
            let Some((n, unit)) = t.split_once('/') else {
                return bad(format!("{what} {t:?}: write N/s, N/min or N/h (e.g. \"30/min\")"));
            };
            let per = match unit.trim() {
                "s" | "sec" | "second" => Duration::from_secs(1),
                "m" | "min" | "minute" => Duration::from_secs(60),
                "h" | "hour" => Duration::from_secs(3600),
                u => return bad(format!("{what} {t:?}: unit {u:?} is not s, min or h")),
            };
            match n.trim().parse::<i64>() {
                Ok(n) => (n, per),
                Err(_) => return bad(format!("{what} {t:?}: {n:?} is not a whole number")),
            }
        }
        RawRate::Other(v) => return bad(format!("{what} {v}: write a number (per second) or \"N/min\"")),
    };
    match u32::try_from(count) {
        Ok(c) if (1..=1_000_000).contains(&c) => Ok(Rate { count: c, per }),
        _ => bad(format!("{what}: the count must be between 1 and 1000000, not {count}")),
    }
}

/// Parse a prefix length of at most `max` bits.
pub(super) fn prefix_len(v: Spanned<i64>, max: u8, what: &str) -> Result<u8, Bad> {
    match u8::try_from(*v.get_ref()) {
        Ok(n) if (8..=max).contains(&n) => Ok(n),
        _ => Err((v.span(), format!("{what} must be between 8 and {max}"))),
    }
}

/// Parse a door's `opens_per_second`.
pub(super) fn opens_per_second(v: Spanned<i64>) -> Result<u32, Bad> {
    match u32::try_from(*v.get_ref()) {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err((v.span(), "opens_per_second must be between 1 and 1000000".into())),
    }
}

/// Parse a door's `max_live_grants` (at most the firewall's `max_grants`).
pub(super) fn max_live_grants(v: Spanned<i64>, max_grants: u32) -> Result<usize, Bad> {
    match u32::try_from(*v.get_ref()) {
        Ok(n) if n >= 1 && n <= max_grants => Ok(n as usize),
        _ => Err((v.span(), format!("max_live_grants must be between 1 and max_grants ({max_grants})"))),
    }
}

/// A door's bound keys as written: `(door name, opens_per_second, max_live_grants)`.
pub(super) type RawDoorBounds = (String, Option<Spanned<i64>>, Option<Spanned<i64>>);

/// The bound keys as written, taken out of `[daemon]` and each `[[door]]`.
#[derive(Default)]
pub(super) struct RawBounds {
    opens_per_prefix: Option<Spanned<RawRate>>,
    prefix_v4: Option<Spanned<i64>>,
    prefix_v6: Option<Spanned<i64>>,
    /// Each door's keys.
    pub doors: Vec<RawDoorBounds>,
}

impl RawBounds {
    /// Take the daemon-wide keys out of `d`.
    pub fn take(d: &mut RawDaemon) -> RawBounds {
        RawBounds {
            opens_per_prefix: d.opens_per_prefix.take(),
            prefix_v4: d.prefix_v4.take(),
            prefix_v6: d.prefix_v6.take(),
            doors: Vec::new(),
        }
    }

    /// Check them, for a firewall that holds `max_grants` grants per family.
    pub fn build(self, max_grants: u32) -> Result<Limits, Bad> {
        let mut l = Limits::for_max_grants(max_grants);
        if let Some(r) = self.opens_per_prefix {
            l.opens_per_prefix = Some(rate(r, "opens_per_prefix")?);
        }
        if let Some(v) = self.prefix_v4 {
            l.prefix_v4 = prefix_len(v, 32, "prefix_v4")?;
        }
        if let Some(v) = self.prefix_v6 {
            l.prefix_v6 = prefix_len(v, 128, "prefix_v6")?;
        }
        for (name, per_sec, max_live) in self.doors {
            if per_sec.is_none() && max_live.is_none() {
                continue;
            }
            let mut d = l.default_door;
            if let Some(v) = per_sec {
                d.opens_per_second = Some(opens_per_second(v)?);
            }
            if let Some(v) = max_live {
                d.max_live_grants = Some(max_live_grants(v, max_grants)?);
            }
            l.doors.insert(name, d);
        }
        Ok(l)
    }
}

/// Check `[store]`.
pub(super) fn store(raw: Option<Spanned<RawStore>>) -> Result<StoreSettings, Bad> {
    let mut s = StoreSettings::default();
    let Some(raw) = raw else { return Ok(s) };
    if let Some(r) = raw.into_inner().retention {
        let span = r.span();
        let parsed = match r.into_inner() {
            RawDuration::Seconds(n) => u64::try_from(n).ok().map(Duration::from_secs),
            RawDuration::Text(t) => humantime::parse_duration(&t).ok(),
            RawDuration::Other(_) => None,
        };
        match parsed {
            Some(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(100 * 365 * 86_400) => {
                s.retention = d
            }
            _ => {
                return Err((
                    span,
                    "retention must be a duration between 1 s and 100 years, e.g. \"30d\" or \"12h\"".into(),
                ))
            }
        }
    }
    Ok(s)
}

/// The default cap: [`DEFAULT_MAX_LIVE_GRANTS`], or less if the firewall holds less.
pub fn default_max_live(max_grants: u32) -> usize {
    DEFAULT_MAX_LIVE_GRANTS.min(max_grants as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(toml_value: &str) -> Result<Rate, String> {
        #[derive(serde::Deserialize)]
        struct T {
            v: Spanned<RawRate>,
        }
        let t: T = toml::from_str(&format!("v = {toml_value}")).unwrap();
        rate(t.v, "opens_per_prefix").map_err(|e| e.1)
    }

    #[test]
    fn rates_parse_with_units_and_refuse_the_rest() {
        assert_eq!(r("5"), Ok(Rate { count: 5, per: Duration::from_secs(1) }));
        assert_eq!(r("\"30/min\""), Ok(Rate { count: 30, per: Duration::from_secs(60) }));
        assert_eq!(r("\" 2 / h \""), Ok(Rate { count: 2, per: Duration::from_secs(3600) }));
        assert_eq!(r("\"1000000/s\"").unwrap().count, 1_000_000);
        for bad in ["0", "-1", "\"1000001/s\"", "\"5\"", "\"5/day\"", "\"x/min\"", "1.5", "[1]"] {
            assert!(r(bad).is_err(), "{bad} accepted");
        }
        assert!(r("\"5/fortnight\"").unwrap_err().contains("not s, min or h"));
        assert_eq!(Rate { count: 30, per: Duration::from_secs(60) }.to_string(), "30/min");
    }

    #[test]
    fn config_keys_reach_the_model_and_refusals_name_the_line() {
        let path = std::path::Path::new("t.toml");
        let door = "[[door]]\nname = 'ssh'\nsequence = [1, 2, 3]\nopen = ['tcp/22']\n";
        let c = super::super::parse(door, path).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.store.retention, DEFAULT_RETENTION);
        let text = format!(
            "[daemon]\nmax_grants = 100\nopens_per_prefix = '6/min'\nprefix_v4 = 16\nprefix_v6 = 48\n\
             [store]\nretention = '12h'\n{door}opens_per_second = 5\n\
             [[door]]\nname = 'web'\nsequence = [4, 5, 6]\nopen = ['tcp/443']\nmax_live_grants = 7\n"
        );
        let c = super::super::parse(&text, path).unwrap();
        assert_eq!(c.limits.opens_per_prefix, Some(Rate { count: 6, per: Duration::from_secs(60) }));
        assert_eq!((c.limits.prefix_v4, c.limits.prefix_v6), (16, 48));
        assert_eq!(
            c.limits.door("ssh"),
            DoorLimits { opens_per_second: Some(5), max_live_grants: Some(100) }
        );
        assert_eq!(
            c.limits.door("web"),
            DoorLimits { opens_per_second: Some(100), max_live_grants: Some(7) }
        );
        assert_eq!(c.limits.door("other").max_live_grants, Some(100), "capped at max_grants");
        assert_eq!(c.store.retention, Duration::from_secs(12 * 3600));
        for (bad, line, what) in [
            ("[daemon]\nopens_per_prefix = '0/min'\n", 2, "between 1 and 1000000"),
            ("[daemon]\nprefix_v6 = 130\n", 2, "prefix_v6 must be between 8 and 128"),
            ("[store]\nretention = '0s'\n", 2, "retention must be"),
            ("[store]\nkeep = '1d'\n", 2, "unknown field"),
            ("[daemon]\nmax_grants = 16\n[[door]]\nname = 'x'\nsequence = [1]\nopen = ['tcp/1']\nmax_live_grants = 17\n", 7, "max_grants (16)"),
        ] {
            let text = if bad.contains("[[door]]") { bad.to_string() } else { format!("{bad}{door}") };
            let e = super::super::parse(&text, path).unwrap_err();
            assert_eq!(e.line, Some(line), "{bad}: {e}");
            assert!(e.message.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn bounds_of_integer_keys() {
        let s = |v: i64| Spanned::new(0..1, v);
        assert_eq!(prefix_len(s(24), 32, "prefix_v4"), Ok(24));
        assert_eq!(prefix_len(s(8), 32, "prefix_v4"), Ok(8));
        assert_eq!(prefix_len(s(32), 32, "prefix_v4"), Ok(32));
        assert!(prefix_len(s(7), 32, "prefix_v4").is_err());
        assert!(prefix_len(s(33), 32, "prefix_v4").is_err());
        assert_eq!(prefix_len(s(128), 128, "prefix_v6"), Ok(128));
        assert!(prefix_len(s(129), 128, "prefix_v6").is_err());
        assert_eq!(opens_per_second(s(1)), Ok(1));
        assert!(opens_per_second(s(0)).is_err());
        assert_eq!(max_live_grants(s(16), 16), Ok(16));
        assert!(max_live_grants(s(17), 16).unwrap_err().1.contains("max_grants (16)"));
        assert!(max_live_grants(s(0), 16).is_err());
        assert_eq!(default_max_live(100), 100);
        assert_eq!(default_max_live(1 << 20), DEFAULT_MAX_LIVE_GRANTS);
    }
}
