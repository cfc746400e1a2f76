//! One `[[door]]`: name, sequence or rotation, what it opens, knockd-style commands and
//! one-time sequences, raw → [`Door`].

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use portcullis_proto::{FlagFilter, Proto, Service};
use toml::Spanned;

use super::super::error::ConfigError;
use super::super::model::{CommandLine, Commands, Door, MAX_SEQUENCE};
use super::super::one_time::load_one_time;
use super::super::raw::{RawCommand, RawDoor, RawDuration, RawKnock};
use super::super::rotating;
use super::Validator;

impl Validator<'_> {
    pub(super) fn door(&self, raw: RawDoor) -> Result<Door, ConfigError> {
        let name = raw.name.get_ref().clone();
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return self.err(
                raw.name.span(),
                format!("door name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ . -"),
            );
        }
        let name_span = raw.name.span();
        let one_time = match &raw.one_time_sequences {
            None => None,
            Some(p) => match load_one_time(Path::new(p.get_ref())) {
                Ok(ot) => Some(ot),
                Err(e) => return self.err(p.span(), format!("one_time_sequences: {e}")),
            },
        };
        let rotating = match raw.rotating {
            None => None,
            Some(r) => {
                let span = r.span();
                if raw.sequence.is_some() || one_time.is_some() {
                    return self.err(
                        span,
                        format!("door {name:?}: rotating replaces sequence and one_time_sequences; keep one"),
                    );
                }
                let mut r = r.into_inner();
                let step = match r.step.take() {
                    None => None,
                    Some(s) => {
                        let at = s.span();
                        let max = Duration::from_secs(portcullis_proto::rotate::MAX_STEP_SECS);
                        Some((self.duration(s, Duration::from_secs(1), max, "rotating.step")?, at))
                    }
                };
                let dir = self.path.parent().unwrap_or(Path::new("."));
                match rotating::validate(r, step, dir) {
                    Ok(v) => Some(v),
                    Err((at, message)) => return self.err(at, format!("door {name:?}: {message}")),
                }
            }
        };
        let (seq_span, knocks) = match (raw.sequence, &one_time) {
            (Some(s), _) => (s.span(), s.into_inner()),
            (None, Some(_)) => (name_span.clone(), Vec::new()),
            (None, None) if rotating.is_some() => (name_span.clone(), Vec::new()),
            (None, None) => {
                return self.err(
                    name_span,
                    format!("door {name:?} has no sequence (or one_time_sequences, or rotating)"),
                )
            }
        };
        let from_file = (one_time.is_some() || rotating.is_some()) && knocks.is_empty();
        if !from_file && (knocks.is_empty() || knocks.len() > MAX_SEQUENCE) {
            return self.err(seq_span, format!("sequence must have 1 to {MAX_SEQUENCE} knocks"));
        }
        let mut sequence = Vec::with_capacity(knocks.len());
        for k in knocks {
            let svc = match k.get_ref() {
                RawKnock::Port(p) => u16::try_from(*p)
                    .ok()
                    .filter(|&p| p != 0)
                    .map(Service::tcp)
                    .ok_or_else(|| format!("knock port {p} is not in 1..65535")),
                RawKnock::Text(t) => Service::parse_knock(t, Proto::Tcp)
                    .map_err(|e| format!("knock {t:?}: {e} (write PORT or PORT:tcp / PORT:udp)")),
                RawKnock::Other(v) => {
                    Err(format!("knock {v}: write a port number or text like \"7000:tcp\" / \"7000:udp\""))
                }
            };
            match svc {
                Ok(s) => sequence.push(s),
                Err(m) => return self.err(k.span(), m),
            }
        }
        if let Some(ot) = &one_time {
            // The file decides (knockd: One_Time_Sequences replaces Sequence).
            sequence = ot.remaining.first().map(|l| l.sequence.clone()).unwrap_or_default();
        }
        let seq_timeout = match raw.seq_timeout {
            None => Duration::from_secs(10),
            Some(d) => {
                self.duration(d, Duration::from_millis(100), Duration::from_secs(3600), "seq_timeout")?
            }
        };
        let flags = match raw.tcp_flags {
            None => FlagFilter::SYN_ONLY,
            Some(f) if f.get_ref() == "any" => FlagFilter::ANY,
            Some(f) => match FlagFilter::parse(f.get_ref()) {
                Ok(v) => v,
                Err(e) => return self.err(f.span(), format!("tcp_flags: {e}")),
            },
        };
        let open_span = raw.open.as_ref().map_or(name_span.clone(), |o| o.span());
        let mut open = Vec::new();
        for o in raw.open.map(Spanned::into_inner).unwrap_or_default() {
            match Service::parse_grant(o.get_ref()) {
                Ok(s) if !open.contains(&s) => open.push(s),
                Ok(_) => return self.err(o.span(), format!("{:?} is listed twice", o.get_ref())),
                Err(e) => {
                    return self
                        .err(o.span(), format!("open {:?}: {e} (write tcp/22 or udp/53)", o.get_ref()))
                }
            }
        }
        let commands = self.commands(
            raw.start_command,
            raw.start_command_6,
            raw.stop_command,
            raw.stop_command_6,
            raw.cmd_timeout,
        )?;
        if open.is_empty() && commands.is_none() {
            return self.err(
                open_span,
                "open must list at least one service, e.g. [\"tcp/22\"] (or give a start_command)",
            );
        }
        let open_for = match raw.open_for {
            // A command-only door: its "open" time is the command's.
            None if open.is_empty() => commands.as_ref().map_or(Duration::from_secs(30), |c| c.cmd_timeout),
            None => Duration::from_secs(30),
            Some(d) => self.duration(d, Duration::from_secs(1), Duration::from_secs(86_400), "open_for")?,
        };
        let target = match raw.target {
            None => None,
            Some(t) => match t.get_ref().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return self.err(t.span(), format!("target {:?} is not an IP address", t.get_ref()))
                }
            },
        };
        let fleet = match crate::fleet::config::scope(raw.scope) {
            Ok(f) => f,
            Err((at, m)) => return self.err(at.unwrap_or(name_span), m),
        };
        if fleet && open.is_empty() {
            return self.err(
                name_span,
                format!(
                    "door {name:?}: scope \"fleet\" shares what a door opens, and this one opens nothing"
                ),
            );
        }
        Ok(Door {
            name,
            sequence,
            seq_timeout,
            flags,
            open,
            open_for,
            target,
            commands,
            one_time,
            rotating,
            fleet,
        })
    }

    fn commands(
        &self,
        start: Option<Spanned<RawCommand>>,
        start6: Option<Spanned<RawCommand>>,
        stop: Option<Spanned<RawCommand>>,
        stop6: Option<Spanned<RawCommand>>,
        cmd_timeout: Option<Spanned<RawDuration>>,
    ) -> Result<Option<Commands>, ConfigError> {
        let any = start.is_some() || start6.is_some() || stop.is_some() || stop6.is_some();
        if !any {
            if let Some(t) = cmd_timeout {
                return self.err(t.span(), "cmd_timeout needs a start_command");
            }
            return Ok(None);
        }
        let one = |c: Option<Spanned<RawCommand>>,
                   what: &str|
         -> Result<Option<Option<CommandLine>>, ConfigError> {
            let Some(c) = c else { return Ok(None) };
            let span = c.span();
            match c.into_inner() {
                RawCommand::Shell(s) if s.trim().is_empty() => Ok(Some(None)),
                RawCommand::Shell(s) => Ok(Some(Some(CommandLine::Shell(s)))),
                RawCommand::Argv(v) if v.is_empty() => Ok(Some(None)),
                RawCommand::Argv(v) if v[0].is_empty() || v[0].contains("%IP%") => self.err(
                    span,
                    format!("{what}: the program (first element) must be a fixed, non-empty path"),
                ),
                RawCommand::Argv(v) => Ok(Some(Some(CommandLine::Argv(v)))),
                RawCommand::Other(v) => self.err(
                    span,
                    format!(
                        "{what}: expected a shell command line (text) or a list of text arguments, got {v}"
                    ),
                ),
            }
        };
        let start4 = one(start, "start_command")?.flatten();
        let start6 = one(start6, "start_command_6")?.unwrap_or_else(|| start4.clone());
        let stop4 = one(stop, "stop_command")?.flatten();
        let stop6 = one(stop6, "stop_command_6")?.unwrap_or_else(|| stop4.clone());
        let cmd_timeout = match cmd_timeout {
            None => Duration::from_secs(10),
            Some(d) => self.duration(d, Duration::ZERO, Duration::from_secs(86_400), "cmd_timeout")?,
        };
        Ok(Some(Commands { start4, start6, stop4, stop6, cmd_timeout }))
    }
}
