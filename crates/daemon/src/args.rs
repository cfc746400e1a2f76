//! `portcullisd`'s command line, in the library so that man pages and shell completions
//! are generated from the same definitions the binary parses.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config;

/// The default config path, as installed by the package.
pub const DEFAULT_CONFIG: &str = "/etc/portcullis/portcullis.toml";

/// `portcullisd [COMMAND]`.
#[derive(Parser, Debug)]
#[command(name = "portcullisd", version, about = "Port-knocking and SPA daemon")]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground (use systemd or similar to supervise it).
    Run {
        /// Config file (native TOML, or an unchanged knockd.conf or fwknopd.conf).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Config syntax: auto (detect), native, knockd or fwknopd.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
        /// Override the state directory (pending stop commands live there).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Sniff on these interfaces instead of the config's (like knockd -i); repeatable.
        #[arg(short, long)]
        interface: Vec<String>,
        /// Log here instead of where the config says (e.g. stderr for a knockd.conf
        /// that says UseSyslog); a LogFile still gets the lines too.
        #[arg(long, value_enum)]
        log: Option<LogArg>,
        /// Debug logging.
        #[arg(short, long)]
        verbose: bool,
        /// Split into a privileged part (firewall, commands) and an unprivileged one
        /// (capture, SPA, store, API); see docs/privsep.md. The default when started as
        /// root; accepted for compatibility.
        #[arg(long, conflicts_with = "no_privsep")]
        privsep: bool,
        /// Run as one process with the privileges given (debugging).
        #[arg(long)]
        no_privsep: bool,
    },
    /// Validate a config, refuse what `run` would refuse at start, and print the plan:
    /// doors, SPA, API, protected ports, the nft ruleset.
    Check {
        /// Config file (native TOML, or a knockd.conf or fwknopd.conf).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Config syntax: auto (detect), native, knockd or fwknopd.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
        /// Print nothing unless the config is refused (for ExecStartPre=).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Install the firewall gate for a config and exit (boot-time protection).
    ///
    /// Protected ports are closed from now on, even if the daemon never starts; run it
    /// before the network comes up. Grants already in the firewall are kept.
    Gate {
        /// Config file (native TOML, or a knockd.conf or fwknopd.conf).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Config syntax: auto (detect), native, knockd or fwknopd.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
    },
    /// Print a kernel-only ruleset for a config's doors: nftables or iptables track the
    /// knocks themselves and no daemon runs (see docs/kernel.md for what that cannot do).
    Generate {
        /// Which ruleset: nftables, iptables or ip6tables.
        #[arg(long, value_enum)]
        kernel: KernelArg,
        /// Config file (native TOML, or a knockd.conf).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Config syntax: auto (detect), native or knockd.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
        /// Write the ruleset to this file (atomically, mode 0600) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Also write portcullis-kernel.service (and .timer for rotating doors) here.
        #[arg(long)]
        systemd_units: Option<PathBuf>,
        /// Generate for this time (RFC 3339 UTC or @UNIX-SECONDS) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Print a config (typically /etc/knockd.conf or /etc/fwknop/fwknopd.conf) as equivalent native TOML.
    Convert {
        /// The file to convert.
        file: PathBuf,
        /// Its syntax: auto (detect), native, knockd or fwknopd.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
    },
    /// Remove what portcullis installed in the firewall (closes every grant, unprotects
    /// every port): the nftables table by default, or the backend a config names.
    Teardown {
        /// Use this config's backend (e.g. iptables) instead of nftables.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Self-contained demonstration in throwaway network namespaces (needs root).
    Demo {
        /// Do not show the daemon's log lines.
        #[arg(short, long)]
        quiet: bool,
    },
}

/// `--format` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FormatArg {
    /// Detect from the contents.
    Auto,
    /// portcullis TOML.
    Native,
    /// knockd.conf.
    Knockd,
    /// fwknopd.conf (with the access.conf it names).
    Fwknopd,
}

impl From<FormatArg> for config::Format {
    fn from(f: FormatArg) -> config::Format {
        match f {
            FormatArg::Auto => config::Format::Auto,
            FormatArg::Native => config::Format::Native,
            FormatArg::Knockd => config::Format::Knockd,
            FormatArg::Fwknopd => config::Format::Fwknopd,
        }
    }
}

/// `--kernel` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KernelArg {
    /// `nft -f` text (IPv4 and IPv6, rotating doors too).
    Nftables,
    /// `iptables-restore --noflush` text with `recent` lists.
    Iptables,
    /// `ip6tables-restore --noflush` text with `recent` lists.
    Ip6tables,
}

impl From<KernelArg> for crate::kernel::Kind {
    fn from(k: KernelArg) -> Self {
        match k {
            KernelArg::Nftables => Self::Nftables,
            KernelArg::Iptables => Self::Iptables,
            KernelArg::Ip6tables => Self::Ip6tables,
        }
    }
}

/// `--log` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogArg {
    /// Standard error.
    Stderr,
    /// syslog(3).
    Syslog,
    /// The systemd journal.
    Journald,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn gate_defaults_to_the_installed_config() {
        let a = Args::try_parse_from(["portcullisd", "gate"]).unwrap();
        match a.command {
            Command::Gate { config, .. } => assert_eq!(config, PathBuf::from(DEFAULT_CONFIG)),
            other => panic!("parsed as {other:?}"),
        }
    }
}
