//! Configuration. Two syntaxes are read into one validated model:
//!
//! - [`model`]: the validated [`Config`] the daemon runs on (re-exported here);
//! - [`raw`]: native TOML as serde reads it, with source spans;
//! - [`validate`]: raw → model, refusing with file, line and reason. Unknown keys are
//!   errors, not silently ignored, because a typo in a security config must not quietly
//!   weaken it;
//! - [`spa`], [`api`], [`stanza`], [`access_conf`]: the `[spa]` and `[api]` sections,
//!   fwknop stanzas and fwknop's own `access.conf`;
//! - [`knockd`]: an unchanged `knockd.conf`; [`fwknopd`]: an unchanged `fwknopd.conf`;
//!   [`convert`] prints any config as native TOML;
//! - [`warnings`]: advice about weak doors that does not stop the daemon.
//!
//! The format is documented in `docs/config.md` and `examples/portcullis.toml`; [`load`]
//! detects which syntax a file is in (see `docs/knockd.md`).

pub mod access_conf;
pub mod api;
pub mod convert;
pub mod convert_hint;
pub mod error;
pub mod files;
pub mod fwknopd;
pub mod grant_prefix;
pub mod knockd;
pub mod limits;
pub mod model;
pub mod one_time;
mod raw;
pub mod rotating;
pub mod secret_file;
pub mod source;
pub mod spa;
pub mod stanza;
pub mod validate;
mod warnings;

use std::path::Path;

pub use api::ApiConfig;
pub use error::ConfigError;
pub use grant_prefix::{GrantPrefix, GrantPrefixes};
pub use limits::{DoorLimits, Limits, Rate, StoreSettings};
pub use model::*;
pub use rotating::RotatingDoor;
pub use source::read_bounded;
pub use spa::SpaConfig;
pub use validate::parse;

/// Which syntax a config file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Decide from the content ([`fwknopd::looks_like_fwknopd`], [`knockd::looks_like_knockd`]).
    #[default]
    Auto,
    /// portcullis' TOML.
    Native,
    /// knockd's `knockd.conf`.
    Knockd,
    /// fwknopd's `fwknopd.conf` (with the `access.conf` it names).
    Fwknopd,
}

/// Read and validate a config file, detecting its format.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_as(path, Format::Auto)
}

/// Read and validate a config file in the given format.
pub fn load_as(path: &Path, format: Format) -> Result<Config, ConfigError> {
    parse_as(&read_checked(path, format)?, path, format)
}

/// Read a config file's text, refusing a file that holds secrets others may read.
pub fn read_checked(path: &Path, format: Format) -> Result<String, ConfigError> {
    let text = read_bounded(path)?;
    if format != Format::Knockd {
        secret_file::check(path, &text).map_err(|message| ConfigError {
            path: path.to_owned(),
            line: None,
            message,
        })?;
    }
    Ok(text)
}

/// Validate a config text read from `path` (files it names are read from disk).
pub fn parse_as(text: &str, path: &Path, format: Format) -> Result<Config, ConfigError> {
    match format {
        Format::Native => parse(text, path),
        Format::Knockd => knockd::parse(text, path),
        Format::Fwknopd => fwknopd::parse(text, path),
        Format::Auto if fwknopd::looks_like_fwknopd(text, path) => fwknopd::parse(text, path),
        Format::Auto if knockd::looks_like_knockd(text) => knockd::parse(text, path),
        Format::Auto => parse(text, path).map_err(|mut e| {
            // Detection guessed native; say so if the file would have read as knockd.conf.
            if knockd::parse(text, path).is_ok() {
                e.message.push_str(" (this file reads as a knockd.conf: use --format knockd)");
            }
            e
        }),
    }
}

#[cfg(test)]
mod spa_tests;
#[cfg(test)]
mod tests;
