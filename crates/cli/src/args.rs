//! `portcullis`' command line, in the library so that man pages and shell completions
//! are generated from the same definitions the binary parses.

use clap::{Parser, Subcommand};

use crate::{connect, grants, keygen, knock, opener, rotating, spa};

/// `portcullis COMMAND`.
#[derive(Parser)]
#[command(name = "portcullis", version, about = "Port-knocking and SPA client")]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Args::command().debug_assert();
    }
}
