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
        /// Config file (native TOML).
        #[arg(short, long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
        /// Debug logging.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Validate a config and print the plan: doors, protected ports, the nft ruleset.
    Check {
        /// Config file (native TOML).
        #[arg(short, long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
    },
    /// Remove portcullis' firewall table (closes every grant, unprotects every port).
    Teardown,
    /// Self-contained demonstration in throwaway network namespaces (needs root).
    Demo {
        /// Do not show the daemon's log lines.
        #[arg(short, long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Run { config, verbose } => run(&config, verbose),
        Command::Check { config } => cmd::check::check(&config),
        Command::Teardown => cmd::teardown(),
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

fn run(path: &std::path::Path, verbose: bool) -> anyhow::Result<ExitCode> {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullisd: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    log::init(config.daemon.log, verbose)?;
    for w in config.warnings() {
        tracing::warn!("config: {w}");
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown))?;
    }
    daemon::run(&config, shutdown)?;
    Ok(ExitCode::SUCCESS)
}
