//! The native SPA decoder on arbitrary bytes: never panics
//! (see `portcullis_proto::spa::native::fuzz_open`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis_proto::spa::native::fuzz_open(data));
