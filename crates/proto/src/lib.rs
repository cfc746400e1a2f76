//! Pure protocol logic for portcullis. Nothing in this crate opens a socket, reads a
//! clock or touches a firewall: the daemon feeds it bytes and times, and acts on what
//! it returns. That keeps every decision unit-testable with fixtures and an injected
//! clock, and fuzzable.
//!
//! # Layout
//! - [`addr`]: address normalisation (IPv4-mapped IPv6 is IPv4), applied once at input.
//! - [`service`]: `Proto` and `Service` (`tcp/22`), the vocabulary shared by every layer.
//! - [`tcpflags`]: TCP flag bits and knockd-style flag filters (`syn,!ack`).
//! - [`time`]: [`time::Millis`], a monotonic millisecond instant supplied by the caller.
//! - [`wire`]: zero-copy views over sniffed IPv4/IPv6 + TCP/UDP packets.
//! - [`bpf`]: the classic-BPF program that keeps unrelated traffic in the kernel.
//! - [`knock`]: the knock-sequence state machine (bounded, O(1) per packet).
//! - [`rotate`]: time-rotating knock sequences (md5-hourly, hmac-sha256) from an injected time.
//! - [`ratelimit`]: [`ratelimit::TokenBucket`], the rate limiter on caller-supplied time.
//! - [`spa`]: single-packet authorization codecs (fwknop and the native format).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod bpf;
pub mod knock;
pub mod ratelimit;
pub mod rotate;
pub mod service;
pub mod spa;
pub mod tcpflags;
pub mod time;
pub mod wire;

pub use service::{Proto, Service};
pub use tcpflags::{FlagFilter, TcpFlags};
pub use time::Millis;
