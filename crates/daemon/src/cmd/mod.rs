//! Subcommands other than `run`: one file each.

pub mod check;
pub mod demo;

use std::process::ExitCode;

use crate::firewall::nft::NftDriver;
use crate::firewall::FirewallDriver;

/// `portcullisd teardown`: remove the nftables table (and with it every grant).
pub fn teardown() -> anyhow::Result<ExitCode> {
    let mut d = NftDriver::new()?;
    d.teardown()?;
    println!("removed table inet portcullis (if it existed)");
    Ok(ExitCode::SUCCESS)
}
