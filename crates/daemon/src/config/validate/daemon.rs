//! `[daemon]` and its firewall settings: raw → [`DaemonSettings`].

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::super::error::ConfigError;
use super::super::model::{
    valid_ifname, valid_syslog_identity, Backend, DaemonSettings, FirewallSettings, Interfaces,
    IptablesVariant, LogTarget, SyslogFacility, SyslogSettings, DEFAULT_COMMAND_TIME_LIMIT,
    DEFAULT_MAX_GRANTS, DEFAULT_MAX_TRACKED,
};
use super::super::raw::RawDaemon;
use super::Validator;

impl Validator<'_> {
    pub(super) fn daemon(&self, raw: RawDaemon) -> Result<DaemonSettings, ConfigError> {
        let interfaces = match raw.interfaces {
            None => Interfaces::All,
            Some(list) => {
                let span = list.span();
                let names: Vec<Spanned<String>> = list.into_inner();
                if names.is_empty() {
                    return self.err(span, "interfaces is empty (omit it, or use [\"all\"])");
                }
                if names.iter().any(|n| n.get_ref() == "all") {
                    if names.len() > 1 {
                        return self.err(span, "\"all\" cannot be combined with named interfaces");
                    }
                    Interfaces::All
                } else {
                    let mut out = Vec::new();
                    for n in names {
                        if !valid_ifname(n.get_ref()) {
                            return self.err(n.span(), format!("invalid interface name {:?}", n.get_ref()));
                        }
                        out.push(n.into_inner());
                    }
                    Interfaces::Named(out)
                }
            }
        };
        let state_dir = match raw.state_dir {
            None => PathBuf::from("/var/lib/portcullis"),
            Some(s) if s.get_ref().starts_with('/') => PathBuf::from(s.into_inner()),
            Some(s) => return self.err(s.span(), "state_dir must be an absolute path"),
        };
        let log = match raw.log {
            None => LogTarget::Stderr,
            Some(s) => match s.get_ref().as_str() {
                "stderr" => LogTarget::Stderr,
                "syslog" => LogTarget::Syslog,
                "journald" => LogTarget::Journald,
                other => {
                    return self
                        .err(s.span(), format!("log must be stderr, syslog or journald, not {other:?}"))
                }
            },
        };
        let max_tracked = match raw.max_tracked {
            None => DEFAULT_MAX_TRACKED,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(v) if (1_000..=50_000_000).contains(&v) => v,
                _ => return self.err(n.span(), "max_tracked must be between 1000 and 50000000"),
            },
        };
        let backend = match raw.backend {
            None => Backend::Nftables,
            Some(s) => match s.get_ref().as_str() {
                "nftables" => Backend::Nftables,
                "iptables" => Backend::Iptables(IptablesVariant::Auto),
                "iptables-legacy" => Backend::Iptables(IptablesVariant::Legacy),
                "iptables-nft" => Backend::Iptables(IptablesVariant::Nft),
                "none" => Backend::None,
                other => {
                    return self.err(
                        s.span(),
                        format!(
                            "backend must be nftables, iptables, iptables-legacy, iptables-nft or none, \
                             not {other:?}"
                        ),
                    )
                }
            },
        };
        let max_grants = match raw.max_grants {
            None => DEFAULT_MAX_GRANTS,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if (16..=4_194_304).contains(&v) => v,
                _ => return self.err(n.span(), "max_grants must be between 16 and 4194304"),
            },
        };
        let log_file = match raw.log_file {
            None => None,
            Some(s) if s.get_ref().starts_with('/') => Some(PathBuf::from(s.into_inner())),
            Some(s) => return self.err(s.span(), "log_file must be an absolute path"),
        };
        let pid_file = match raw.pid_file {
            None => None,
            Some(s) if s.get_ref().starts_with('/') => Some(PathBuf::from(s.into_inner())),
            Some(s) => return self.err(s.span(), "pid_file must be an absolute path"),
        };
        let command_time_limit = match raw.command_time_limit {
            None => DEFAULT_COMMAND_TIME_LIMIT,
            Some(d) => {
                self.duration(d, Duration::from_millis(100), Duration::from_secs(3600), "command_time_limit")?
            }
        };
        let mut never_gate = Vec::new();
        for s in raw.never_gate.map(|l| l.into_inner()).unwrap_or_default() {
            match s.get_ref().parse::<crate::firewall::Prefix>() {
                Ok(p) if never_gate.contains(&p) => {
                    return self.err(s.span(), format!("never_gate lists {p} twice"))
                }
                Ok(p) => never_gate.push(p),
                Err(e) => return self.err(s.span(), format!("never_gate: {e}")),
            }
        }
        let mut syslog = SyslogSettings::default();
        if let Some(i) = raw.syslog_identity {
            if !valid_syslog_identity(i.get_ref()) {
                return self.err(i.span(), "syslog_identity must be 1-32 characters of A-Z a-z 0-9 _ . -");
            }
            syslog.identity = i.into_inner();
        }
        if let Some(f) = raw.syslog_facility {
            syslog.facility = match SyslogFacility::parse(f.get_ref()) {
                Some(v) => v,
                None => {
                    return self.err(
                        f.span(),
                        "syslog_facility must be daemon, auth, authpriv, user or local0..local7",
                    )
                }
            };
        }
        let mut firewall = self.firewall(
            &raw.mode,
            raw.gate_forward,
            raw.iptables_chain,
            raw.iptables_jump,
            raw.accept_table,
            backend,
        )?;
        firewall.nat = raw.nat.is_some_and(|n| *n.get_ref());
        Ok(DaemonSettings {
            never_gate,
            firewall,
            interfaces,
            state_dir,
            log,
            max_tracked,
            backend,
            max_grants,
            log_file,
            pid_file,
            command_time_limit,
            flush_at_start: raw.flush_at_start.unwrap_or(false),
            flush_at_exit: raw.flush_at_exit.unwrap_or(false),
            syslog,
            verbose: raw.verbose.unwrap_or(false),
        })
    }

    fn firewall(
        &self,
        mode: &Option<Spanned<String>>,
        gate_forward: Option<Spanned<bool>>,
        chain: Option<Spanned<String>>,
        jump: Option<Spanned<i64>>,
        accept_table: Option<Spanned<String>>,
        backend: Backend,
    ) -> Result<FirewallSettings, ConfigError> {
        let mut f = FirewallSettings::default();
        if let Some(m) = mode {
            f.accept = match m.get_ref().as_str() {
                "gate" => false,
                "accept" => true,
                other => return self.err(m.span(), format!("mode must be gate or accept, not {other:?}")),
            };
        }
        if let Some(g) = gate_forward {
            f.gate_forward = *g.get_ref();
        }
        if let Some(c) = chain {
            let name = c.get_ref();
            let builtin =
                ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"].contains(&name.as_str());
            let ok = (1..=24).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok || builtin {
                return self.err(
                    c.span(),
                    format!("iptables_chain {name:?} must be 1-24 letters, digits, '_' or '-', and not a built-in chain"),
                );
            }
            f.iptables_chain = c.into_inner();
        }
        if let Some(j) = jump {
            f.iptables_jump = match u32::try_from(*j.get_ref()) {
                Ok(v) if (1..=10_000).contains(&v) => v,
                _ => {
                    return self
                        .err(j.span(), "iptables_jump must be between 1 and 10000 (1 = first rule of INPUT)")
                }
            };
        }
        if let Some(t) = accept_table {
            let words: Vec<&str> = t.get_ref().split_whitespace().collect();
            let ok = match words.as_slice() {
                [family, name] => {
                    *family == "inet"
                        && (1..=64).contains(&name.len())
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                        && *name != "portcullis"
                }
                _ => false,
            };
            if !ok {
                return self.err(
                    t.span(),
                    format!(
                        "accept_table must be \"inet <table>\" naming your own inet table (like \"inet filter\"), not {:?}",
                        t.get_ref()
                    ),
                );
            }
            if !f.accept {
                return self.err(t.span(), "accept_table is only used with mode = \"accept\"");
            }
            f.accept_table = Some((words[0].to_string(), words[1].to_string()));
        }
        if let (Some(m), true, Backend::Nftables, None) = (mode, f.accept, backend, &f.accept_table) {
            return self.err(
                m.span(),
                "mode = \"accept\" with nftables needs accept_table = \"inet <table>\": an accept is final only \
                 in the admin's own table",
            );
        }
        Ok(f)
    }
}
