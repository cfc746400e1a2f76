//! `portcullis`: the client. One module per subcommand; `main` maps errors to exit codes.
#![forbid(unsafe_code)]

mod connect;
mod fwknoprc;
mod grants;
mod keygen;
mod knock;
mod opener;
mod profile;
mod rotating;
mod secretfile;
mod spa;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Port-knocking and SPA client")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a knock sequence, like knock(1): `portcullis knock HOST 7000 8000:udp 9000`.
    Knock(knock::KnockArgs),
    /// Send one SPA packet (fwknop-compatible by default, `--native` for portcullis' format).
    Spa(Box<spa::SpaArgs>),
    /// Generate keys: fwknop KEY/HMAC_KEY (default), or native `--server` / `--user` pairs.
    Keygen(keygen::KeygenArgs),
    /// Grants on a local portcullisd through its API: list, show, allow, revoke.
    Grants(grants::GrantsArgs),
    /// Print a rotating door's sequence: `--algorithm md5-hourly --secret-file F --range 10000-10999 --count 5`.
    Sequence(rotating::SequenceArgs),
    /// Open a server as its client profile (or the flags) says: `portcullis open myserver`.
    Open(Box<opener::OpenCmdArgs>),
    /// ssh ProxyCommand: open HOST, connect to PORT, relay stdin/stdout (`connect %h %p`).
    Connect(Box<connect::ConnectArgs>),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Knock(a) => knock::run(&a),
        Command::Spa(a) => spa::run(&a),
        Command::Keygen(a) => keygen::run(&a),
        Command::Grants(a) => grants::run(&a),
        Command::Sequence(a) => rotating::run(&a),
        Command::Open(a) => opener::run_open(&a),
        Command::Connect(a) => return connect::main(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::from(1)
        }
    }
}
