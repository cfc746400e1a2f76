//! The subcommands: one file each.

pub mod check;
pub mod demo;
pub mod gate;
pub mod generate;
pub mod run;

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::daemon::driver_for;
use crate::firewall::nft::NftDriver;
use crate::firewall::FirewallDriver;

/// `portcullisd teardown`: remove what the driver installed (and with it every grant).
/// Without a config this is the nftables table, the default backend.
pub fn teardown(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut d: Box<dyn FirewallDriver> = match config_path {
        None => Box::new(NftDriver::new()?),
        Some(p) => match config::load_as(p, config::Format::Auto) {
            Ok(c) => driver_for(&c)?,
            Err(e) => {
                eprintln!("portcullisd: {e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    d.teardown()?;
    println!("removed portcullis' {} rules (if there were any)", d.name());
    Ok(ExitCode::SUCCESS)
}
