//! portcullisd internals. See README for the layout.

pub mod firewall;
