//! Native TOML → [`Config`]: serde reads the [`raw`](super::raw) shapes, then every value
//! is checked for meaning and range. Each refusal names the line it is about, and a
//! message says what would be accepted, not how the parser failed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::model::Config;
use super::raw::{RawConfig, RawDuration};
use super::source::line_of;
use super::{api, grant_prefix, limits, spa};

mod daemon;
mod door;

/// Parse and validate native TOML text (`path` is only used in messages and to resolve
/// relative paths).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        match single_bracket_array_table(text) {
            Some((l, (table, noun))) => ConfigError {
                path: path.to_owned(),
                line: Some(l),
                message: format!(
                    "[{table}] is a single table, but each {noun} is a [[{table}]] table (double brackets), \
                     one per {noun}"
                ),
            },
            None => ConfigError { path: path.to_owned(), line, message: e.message().to_string() },
        }
    })?;
    Validator { text, path }.config(raw)
}

/// Tables that may appear many times, so they must be written `[[name]]`: (name, what
/// one of them is).
const ARRAY_TABLES: &[(&str, &str)] = &[("door", "door"), ("spa.user", "user"), ("spa.fwknop", "stanza")];

/// The first line that opens one of [`ARRAY_TABLES`] with single brackets, if any: serde
/// then only says "duplicate key" or "invalid type: map".
fn single_bracket_array_table(text: &str) -> Option<(usize, (&'static str, &'static str))> {
    text.lines().enumerate().find_map(|(i, line)| {
        let t = line.trim();
        let t = t.split_once('#').map_or(t, |(a, _)| a).trim_end();
        let name = t.strip_prefix('[')?.strip_suffix(']')?;
        if name.starts_with('[') {
            return None;
        }
        let name = name.trim();
        ARRAY_TABLES.iter().find(|(a, _)| *a == name).map(|&a| (i + 1, a))
    })
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn err<T>(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError {
            path: self.path.to_owned(),
            line: Some(line_of(self.text, span.start)),
            message: message.into(),
        })
    }

    fn config(&self, mut raw: RawConfig) -> Result<Config, ConfigError> {
        let mut bounds = limits::RawBounds::take(&mut raw.daemon);
        for d in &mut raw.doors {
            let d = d.get_mut();
            bounds.doors.push((
                d.name.get_ref().clone(),
                d.opens_per_second.take(),
                d.max_live_grants.take(),
            ));
        }
        let (prefixes, prefix_at) = grant_prefix::take(&mut raw).or_else(|(at, m)| self.err(at, m))?;
        let store = limits::store(raw.store.take());
        let daemon = self.daemon(raw.daemon)?;
        if let (Some(at), true) = (prefix_at, daemon.firewall.accept) {
            return self.err(at, "grant_prefix_v4/grant_prefix_v6 work in mode = \"gate\" only");
        }
        let mut limits = bounds.build(daemon.max_grants).or_else(|(at, m)| self.err(at, m))?;
        limits.grant_prefix = prefixes;
        let store = store.or_else(|(at, m)| self.err(at, m))?;
        let mut doors = Vec::with_capacity(raw.doors.len());
        let mut names = BTreeSet::new();
        for d in raw.doors {
            let span = d.span();
            let door = self.door(d.into_inner())?;
            if !names.insert(door.name.clone()) {
                return self.err(span, format!("door name {:?} is used twice", door.name));
            }
            doors.push(door);
        }
        let mut notes = Vec::new();
        let spa = match raw.spa {
            None => None,
            Some(s) => {
                let span = s.span();
                let dir = self.path.parent().unwrap_or(Path::new("."));
                let at_line = |offset| format!("{}:{}", self.path.display(), line_of(self.text, offset));
                match spa::validate(s.into_inner(), dir, &at_line) {
                    Ok((v, _)) if (v.forwarding || v.local_nat) && !daemon.firewall.nat => {
                        return self
                            .err(span, "[spa] forwarding/local_nat need [daemon] nat = true (NAT grants)")
                    }
                    Ok((v, n)) => {
                        notes = n;
                        Some(v)
                    }
                    Err((at, message)) => return self.err(at.unwrap_or(span), message),
                }
            }
        };
        let api = match raw.api {
            None => None,
            Some(a) => {
                let span = a.span();
                let dir = self.path.parent().unwrap_or(Path::new("."));
                match api::validate(a.into_inner(), dir) {
                    Ok(v) => Some(v),
                    Err((at, message)) => return self.err(at.unwrap_or(span), message),
                }
            }
        };
        let fleet = match raw.fleet {
            None => None,
            Some(f) => {
                let span = f.span();
                let dir = self.path.parent().unwrap_or(Path::new("."));
                match crate::fleet::config::validate(f.into_inner(), dir) {
                    Ok(v) => Some(v),
                    Err((at, message)) => return self.err(at.unwrap_or(span), message),
                }
            }
        };
        let fleet_scoped = doors.iter().any(|d| d.fleet)
            || spa
                .as_ref()
                .is_some_and(|s| s.users.values().any(|u| u.fleet) || s.stanzas.iter().any(|s| s.fleet));
        if fleet.is_none() && fleet_scoped {
            return self.err(
                0..0,
                "a door, [[spa.user]] or fwknop stanza has scope = \"fleet\" but there is no [fleet] section",
            );
        }
        // Fleet grants are shared as single addresses: a prefix would silently narrow on
        // the other nodes, so the combination is refused rather than half-applied.
        let wide_fleet = doors
            .iter()
            .filter(|d| d.fleet && !limits.grant_prefix.door(&d.name).is_single())
            .map(|d| format!("door {:?}", d.name))
            .chain(spa.iter().flat_map(|s| {
                s.users
                    .iter()
                    .filter(|(n, u)| u.fleet && !limits.grant_prefix.user(n).is_single())
                    .map(|(n, _)| format!("[[spa.user]] {n:?}"))
            }))
            .next();
        if let Some(what) = wide_fleet {
            return self.err(
                0..0,
                format!(
                    "{what}: scope = \"fleet\" with a grant prefix is not supported (fleet grants are \
                     shared for single addresses); use scope = \"local\" or drop grant_prefix_v4/v6"
                ),
            );
        }
        if doors.is_empty() && spa.is_none() {
            return Err(ConfigError {
                path: self.path.to_owned(),
                line: None,
                message: "nothing to do: add at least one [[door]] or an [spa] section".into(),
            });
        }
        if doors.len() > usize::from(u16::MAX) {
            return Err(ConfigError {
                path: self.path.to_owned(),
                line: None,
                message: "more than 65535 doors".into(),
            });
        }
        Ok(Config { path: self.path.to_owned(), daemon, doors, spa, api, fleet, notes, limits, store })
    }

    fn duration(
        &self,
        d: Spanned<RawDuration>,
        min: Duration,
        max: Duration,
        what: &str,
    ) -> Result<Duration, ConfigError> {
        let (parsed, written) = match d.get_ref() {
            RawDuration::Seconds(s) => (u64::try_from(*s).ok().map(Duration::from_secs), s.to_string()),
            RawDuration::Text(t) => match humantime::parse_duration(t) {
                Ok(v) => (Some(v), format!("{t:?}")),
                Err(_) => {
                    return self.err(
                        d.span(),
                        format!(
                            "{what}: {t:?} is not a duration; write a whole number of seconds or text \
                             like \"500ms\", \"5s\" or \"2m\""
                        ),
                    )
                }
            },
            RawDuration::Other(v) => {
                return self.err(
                    d.span(),
                    format!(
                        "{what}: expected a whole number of seconds or a duration like \"500ms\" or \"5s\", \
                         got {v}"
                    ),
                )
            }
        };
        match parsed {
            Some(v) if v >= min && v <= max => Ok(v),
            _ => self.err(
                d.span(),
                format!("{what} must be between {} and {}, got {written}", human(min), human(max)),
            ),
        }
    }
}

/// A limit as messages show it: `100 ms`, `1 s`, `90 s`, `5 min`, `24 h`.
pub(super) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        format!("{} ms", d.as_millis())
    } else if secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs % 60 == 0 && secs >= 300 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}
