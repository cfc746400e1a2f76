//! Rotating sequences on the client: the shared command-line options, `portcullis
//! sequence`, and the current sequence for `knock --rotating`, `open` and `connect`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use portcullis_proto::rotate::{
    format_knocks, Algorithm, AlgorithmName, PortRange, Protocols, Rotation, Secret, DEFAULT_STEP_SECS,
};
use portcullis_proto::Service;

use crate::secretfile;

/// How a rotating door derives its ports (see docs/rotating.md).
#[derive(Args, Debug, Default, Clone)]
pub struct RotatingOpts {
    /// md5-hourly (the 2008 recipe) or hmac-sha256.
    #[arg(long, value_name = "NAME")]
    pub algorithm: Option<String>,
    /// The secret, as text (visible to other local users in `ps`: prefer --secret-file).
    #[arg(long, value_name = "TEXT", conflicts_with = "secret_file")]
    pub secret: Option<String>,
    /// File holding the secret (mode 0600, yours); a trailing newline is ignored.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Port range BOTTOM-TOP, e.g. 10000-10999.
    #[arg(long, value_name = "BOTTOM-TOP")]
    pub range: Option<String>,
    /// Knocks per sequence.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    /// hmac-sha256: step length (30s default; `45`, `2m`, `1h`).
    #[arg(long, value_name = "DURATION")]
    pub step: Option<String>,
    /// hmac-sha256: protocol of the knocks, tcp (default), udp or mixed.
    #[arg(long, value_name = "tcp|udp|mixed")]
    pub protocols: Option<String>,
}

impl RotatingOpts {
    /// True if any option was given.
    pub fn any(&self) -> bool {
        self.algorithm.is_some()
            || self.secret.is_some()
            || self.secret_file.is_some()
            || self.range.is_some()
            || self.count.is_some()
            || self.step.is_some()
            || self.protocols.is_some()
    }

    /// Check the options and read the secret.
    pub fn rotation(&self) -> anyhow::Result<Rotation> {
        let name: AlgorithmName = self
            .algorithm
            .as_deref()
            .context("rotating: give --algorithm md5-hourly|hmac-sha256")?
            .parse()?;
        let secret = match (&self.secret, &self.secret_file) {
            (Some(s), None) => Secret::new(s.as_bytes().to_vec())?,
            (None, Some(p)) => Secret::from_file_contents(secretfile::read_secret(p)?)
                .with_context(|| format!("secret file {}", p.display()))?,
            _ => bail!("rotating: give --secret-file FILE (or --secret TEXT)"),
        };
        let range: PortRange = self
            .range
            .as_deref()
            .context("rotating: give --range BOTTOM-TOP")?
            .parse()
            .with_context(|| format!("--range {:?}", self.range.as_deref().unwrap_or_default()))?;
        let count = self.count.context("rotating: give --count N")?;
        let algorithm = match name {
            AlgorithmName::Md5Hourly => {
                if self.step.is_some() || self.protocols.is_some() {
                    bail!("md5-hourly has a fixed one-hour step and TCP knocks: drop --step and --protocols");
                }
                Algorithm::Md5Hourly
            }
            AlgorithmName::HmacSha256 => Algorithm::HmacSha256 {
                step_secs: match &self.step {
                    Some(s) => parse_step(s)?,
                    None => DEFAULT_STEP_SECS,
                },
                protocols: self.protocols.as_deref().map_or(Ok(Protocols::Tcp), str::parse)?,
            },
        };
        Ok(Rotation::new(algorithm, secret, range, count)?)
    }
}

/// A step: whole seconds, as `30`, `30s`, `2m`, `1h`.
pub fn parse_step(s: &str) -> anyhow::Result<u64> {
    let d = if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        Duration::from_secs(s.parse().context("--step: number too large")?)
    } else {
        humantime::parse_duration(s).map_err(|e| anyhow::anyhow!("--step {s:?} is not a duration: {e}"))?
    };
    if d.subsec_nanos() != 0 {
        bail!("--step {s:?} must be a whole number of seconds");
    }
    Ok(d.as_secs())
}

/// `--at`: RFC 3339 UTC (`2008-08-19T17:59:12Z`) or `@UNIXSECONDS`.
pub fn parse_at(s: &str) -> anyhow::Result<u64> {
    let bad = || {
        anyhow::anyhow!(
            "--at {s:?} is not a time: give RFC 3339 UTC like 2008-08-19T17:59:12Z, or @UNIX-SECONDS"
        )
    };
    if let Some(secs) = s.strip_prefix('@') {
        if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        return secs.parse().map_err(|_| bad());
    }
    let t = humantime::parse_rfc3339(s).map_err(|_| bad())?;
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).map_err(|_| bad())
}

/// Seconds since the epoch, now.
pub fn now_unix() -> anyhow::Result<u64> {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).context("the clock is before 1970")
}

/// Arguments of `portcullis sequence`.
#[derive(Args, Debug)]
pub struct SequenceArgs {
    #[command(flatten)]
    opts: RotatingOpts,
    /// The time to compute for (default: now): 2008-08-19T17:59:12Z or @UNIX-SECONDS.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

/// Run `portcullis sequence`: the ports, space-separated, on one line.
pub fn run(a: &SequenceArgs) -> anyhow::Result<()> {
    let at = match &a.at {
        Some(s) => parse_at(s)?,
        None => now_unix()?,
    };
    let r = a.opts.rotation()?;
    println!("{}", format_knocks(&r.sequence_at(at)));
    Ok(())
}

/// For `knock`: the current rotating sequence if `--rotating` was given, None for a
/// fixed sequence; rotating options without `--rotating` are an error, not ignored.
pub fn knock_override(rotating: bool, opts: &RotatingOpts) -> anyhow::Result<Option<Vec<Service>>> {
    match (rotating, opts.any()) {
        (true, _) => Ok(Some(opts.rotation()?.sequence_at(now_unix()?))),
        (false, true) => bail!("--algorithm, --secret, --range, ... need --rotating"),
        (false, false) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(alg: &str, secret: &str, range: &str, count: usize) -> RotatingOpts {
        RotatingOpts {
            algorithm: Some(alg.into()),
            secret: Some(secret.into()),
            range: Some(range.into()),
            count: Some(count),
            ..Default::default()
        }
    }

    #[test]
    fn the_write_up_example() {
        let r = opts("md5-hourly", "f00b4r", "10000-10999", 5).rotation().unwrap();
        let at = parse_at("2008-08-19T17:59:12Z").unwrap();
        assert_eq!(format_knocks(&r.sequence_at(at)), "10978 10024 10722 10688 10711");
        assert_eq!(parse_at("@1219168752").unwrap(), at);
    }

    #[test]
    fn bad_times_steps_and_ranges_are_clear_errors() {
        for bad in
            ["yesterday", "2008-08-19", "2008-08-19 17:59:12", "2008-13-01T00:00:00Z", "@", "@-1", "@1e3", ""]
        {
            let e = parse_at(bad).unwrap_err().to_string();
            assert!(e.contains("is not a time"), "{bad:?}: {e}");
        }
        assert_eq!(parse_step("30s").unwrap(), 30);
        assert_eq!(parse_step("45").unwrap(), 45);
        assert_eq!(parse_step("2m").unwrap(), 120);
        assert!(parse_step("1500ms").is_err());
        assert!(parse_step("soon").is_err());
        let e = opts("md5-hourly", "s", "10000-10003", 5).rotation().unwrap_err().to_string();
        assert!(e.contains("fewer than the 5 knocks"), "{e}");
        let e = opts("md5", "s", "10000-10999", 5).rotation().unwrap_err().to_string();
        assert!(e.contains("md5-hourly or hmac-sha256"), "{e}");
        let mut o = opts("hmac-sha256", "s", "10000-10999", 5);
        o.step = Some("0s".into());
        assert!(o.rotation().unwrap_err().to_string().contains("step"));
        let mut o = opts("md5-hourly", "s", "10000-10999", 5);
        o.step = Some("30s".into());
        assert!(o.rotation().unwrap_err().to_string().contains("drop --step"));
        let o = RotatingOpts { secret: None, ..opts("hmac-sha256", "s", "10000-10999", 5) };
        assert!(o.rotation().unwrap_err().to_string().contains("--secret-file"));
    }

    #[test]
    fn hmac_options_are_used() {
        let mut o = opts("hmac-sha256", "f00b4r", "10000-10999", 5);
        let at = parse_at("2008-08-19T17:59:12Z").unwrap();
        assert_eq!(format_knocks(&o.rotation().unwrap().sequence_at(at)), "10088 10979 10708 10718 10193");
        o.protocols = Some("udp".into());
        assert!(format_knocks(&o.rotation().unwrap().sequence_at(at)).ends_with("10193:udp"));
        o.step = Some("1h".into());
        assert_eq!(o.rotation().unwrap().step_secs(), 3600);
    }

    #[test]
    fn rotating_options_need_the_flag() {
        assert!(knock_override(false, &RotatingOpts::default()).unwrap().is_none());
        assert!(knock_override(false, &opts("md5-hourly", "s", "1-9", 3)).is_err());
        assert_eq!(knock_override(true, &opts("md5-hourly", "s", "1-9", 3)).unwrap().unwrap().len(), 3);
    }
}
