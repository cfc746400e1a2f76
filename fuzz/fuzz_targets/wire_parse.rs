//! `parse_ip` on arbitrary bytes: must never panic. When it succeeds, the filter built
//! for the parsed port and flags must pass the same packet (soundness of `bpf`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proto::bpf::{self, Match};
use portcullis_proto::wire::parse_ip;
use portcullis_proto::FlagFilter;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = parse_ip(data) else { return };
    let flags = FlagFilter {
        set: d.flags.0,
        clear: !d.flags.0,
    };
    let m = [Match {
        proto: d.proto,
        port: d.dst_port,
        flags,
    }];
    assert!(m[0].accepts(&d));
    let ethertype = if data[0] >> 4 == 6 {
        bpf::ETH_P_IPV6
    } else {
        bpf::ETH_P_IP
    };
    let verdict = bpf::interpret(&bpf::program(&m), data, bpf::PACKET_HOST, ethertype);
    assert_ne!(verdict, 0, "filter dropped a packet user space accepts");
});
