//! `portcullis`: the client. One module per subcommand; `main` maps errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use portcullis_cli::args::{Args, Command};
use portcullis_cli::{connect, grants, keygen, knock, opener, rotating, spa};

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
