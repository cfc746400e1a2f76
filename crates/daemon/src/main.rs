//! `portcullisd`: parse arguments, set up logging, dispatch, map errors to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use portcullis_daemon::args::{Args, Command, FormatArg, LogArg};
use portcullis_daemon::{cmd, config, daemon, log};

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
        Command::Run { config, format, state_dir, interface, log, verbose, privsep: _, no_privsep } => {
            let privsep = !no_privsep;
            run(&config, RunArgs { log, format, state_dir, interfaces: interface, privsep }, verbose)
        }
        Command::Check { config, format, quiet } => cmd::check::check(&config, format.into(), quiet),
        Command::Gate { config, format } => cmd::gate::gate(&config, format.into()),
        Command::Generate { kernel, config, format, output, systemd_units, at } => {
            cmd::generate::generate(&cmd::generate::GenerateArgs {
                kind: kernel.into(),
                config,
                format: format.into(),
                output,
                systemd_units,
                at,
            })
        }
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

/// The command line's settings over the file's (at start and at every reload).
fn apply_overrides(config: &mut config::Config, args: &RunArgs) {
    match args.log {
        // stderr under systemd is the journal without priorities: write to it directly.
        None if config.daemon.log == config::LogTarget::Stderr && daemon::service::under_systemd() => {
            config.daemon.log = config::LogTarget::Journald
        }
        None => {}
        Some(LogArg::Stderr) => config.daemon.log = config::LogTarget::Stderr,
        Some(LogArg::Syslog) => config.daemon.log = config::LogTarget::Syslog,
        Some(LogArg::Journald) => config.daemon.log = config::LogTarget::Journald,
    }
    if let Some(dir) = &args.state_dir {
        config.daemon.state_dir = dir.clone();
    }
    if !args.interfaces.is_empty() {
        config.daemon.interfaces = config::Interfaces::Named(args.interfaces.clone());
    }
}

fn run(path: &std::path::Path, args: RunArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    if let Some(bad) = args.interfaces.iter().find(|n| !config::valid_ifname(n)) {
        eprintln!("portcullisd: invalid interface name {bad:?}");
        return Ok(ExitCode::from(2));
    }
    let mut config = match config::load_as(path, args.format.into()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullisd: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    apply_overrides(&mut config, &args);
    log::set_syslog(config.daemon.syslog.clone());
    log::init_with_file(
        config.daemon.log,
        verbose || config.daemon.verbose,
        config.daemon.log_file.as_deref(),
    )?;
    for w in config.warnings() {
        tracing::warn!("config: {w}");
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown))?;
    }
    let (path, format, privsep) = (path.to_path_buf(), args.format, args.privsep);
    let file = path.clone();
    let loader = daemon::reload::Loader {
        read: Box::new(move || config::read_checked(&file, format.into()).map_err(|e| e.to_string())),
        parse: Box::new(move |text| {
            let mut c = config::parse_as(text, &path, format.into()).map_err(|e| e.to_string())?;
            apply_overrides(&mut c, &args);
            Ok(c)
        }),
    };
    // The state dir lock is taken, and the PID file written, inside.
    cmd::run::run(&config, shutdown, privsep, Some(loader))?;
    Ok(ExitCode::SUCCESS)
}
