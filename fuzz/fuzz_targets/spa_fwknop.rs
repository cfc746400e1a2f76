//! The fwknop SPA decoder on arbitrary bytes: never panics, and what it accepts
//! re-encodes to the same plaintext (see `portcullis_proto::spa::fwknop::fuzz_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis_proto::spa::fwknop::fuzz_decode(data));
