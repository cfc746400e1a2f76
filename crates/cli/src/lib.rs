//! The `portcullis` client: one module per subcommand, and [`args`], the command line
//! (shared with the man page and completion generator).
#![forbid(unsafe_code)]

pub mod args;
pub mod connect;
pub mod fwknoprc;
pub mod grants;
pub mod keygen;
pub mod knock;
pub mod opener;
pub mod profile;
pub mod rotating;
pub mod secretfile;
pub mod spa;
