//! `portcullisd`: parse arguments, set up logging, dispatch, map errors to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use portcullis_daemon::{cmd, config, daemon, log};

#[derive(Parser)]
#[command(name = "portcullisd", version, about = "Port-knocking and SPA daemon")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (use systemd or similar to supervise it).
    Run {
        /// Config file (native TOML, or an unchanged knockd.conf).
        #[arg(short, long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
        /// Config syntax: auto (detect), native or knockd.
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
        /// Run as one process with full privileges instead of splitting into a
        /// privileged and an unprivileged part (debugging only; see docs/privsep.md).
        #[arg(long)]
        no_privsep: bool,
    },
    /// Validate a config, refuse what `run` would refuse at start, and print the plan:
    /// doors, SPA, API, protected ports, the nft ruleset.
    Check {
        /// Config file (native TOML, or a knockd.conf).
        #[arg(short, long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
        /// Config syntax: auto (detect), native or knockd.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
    },
    /// Print a config (typically /etc/knockd.conf) as equivalent native TOML.
    Convert {
        /// The file to convert.
        file: PathBuf,
        /// Its syntax: auto (detect), native or knockd.
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
#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Auto,
    Native,
    Knockd,
}

impl From<FormatArg> for config::Format {
    fn from(f: FormatArg) -> config::Format {
        match f {
            FormatArg::Auto => config::Format::Auto,
            FormatArg::Native => config::Format::Native,
            FormatArg::Knockd => config::Format::Knockd,
        }
    }
}

/// `--log` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogArg {
    Stderr,
    Syslog,
    Journald,
}

struct RunArgs {
    log: Option<LogArg>,
    format: FormatArg,
    state_dir: Option<PathBuf>,
    interfaces: Vec<String>,
    privsep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Run { config, format, state_dir, interface, log, verbose, no_privsep } => run(
            &config,
            RunArgs { log, format, state_dir, interfaces: interface, privsep: !no_privsep },
            verbose,
        ),
        Command::Check { config, format } => cmd::check::check(&config, format.into()),
        Command::Convert { file, format } => convert(&file, format),
        Command::Teardown { config } => cmd::teardown(config.as_deref()),
        Command::Demo { quiet } => cmd::demo::demo(!quiet),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullisd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn convert(path: &std::path::Path, format: FormatArg) -> anyhow::Result<ExitCode> {
    match config::load_as(path, format.into()) {
        Ok(c) => {
            print!("{}", config::convert::to_toml(&c));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("portcullisd: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

fn run(path: &std::path::Path, args: RunArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let mut config = match config::load_as(path, args.format.into()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullisd: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match args.log {
        None => {}
        Some(LogArg::Stderr) => config.daemon.log = config::LogTarget::Stderr,
        Some(LogArg::Syslog) => config.daemon.log = config::LogTarget::Syslog,
        Some(LogArg::Journald) => config.daemon.log = config::LogTarget::Journald,
    }
    if let Some(dir) = args.state_dir {
        config.daemon.state_dir = dir;
    }
    if !args.interfaces.is_empty() {
        if let Some(bad) = args.interfaces.iter().find(|n| !config::valid_ifname(n)) {
            eprintln!("portcullisd: invalid interface name {bad:?}");
            return Ok(ExitCode::from(2));
        }
        config.daemon.interfaces = config::Interfaces::Named(args.interfaces);
    }
    log::init_with_file(config.daemon.log, verbose, config.daemon.log_file.as_deref())?;
    for w in config.warnings() {
        tracing::warn!("config: {w}");
    }
    let pid_file = config.daemon.pid_file.clone();
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| anyhow::anyhow!("writing pid file {}: {e}", p.display()))?;
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown))?;
    }
    let result = daemon::run(&config, shutdown, args.privsep);
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    result?;
    Ok(ExitCode::SUCCESS)
}
