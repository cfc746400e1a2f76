//! The messages between the daemon's two parts, on arbitrary bytes: decoding never
//! panics, and the privileged part's handler (policy, sequence numbers, a recording
//! driver) answers every input with a well-formed reply that round-trips, with and
//! without a config on offer (whose pages a request may ask for).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_daemon::config;
use portcullis_daemon::firewall::none::NoFirewall;
use portcullis_daemon::privsep::codec;
use portcullis_daemon::privsep::policy::Policy;
use portcullis_daemon::privsep::server::Server;

const CONF: &str = "[[door]]\nname = \"ssh\"\nsequence = [7000, 8000]\nopen = [\"tcp/22\"]\nopen_for = 30\n";

fn config() -> &'static config::Config {
    static C: OnceLock<config::Config> = OnceLock::new();
    C.get_or_init(|| config::parse(CONF, std::path::Path::new("fuzz.toml")).expect("fuzz config"))
}

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode_reply(data);
    if let Ok(r) = codec::decode_request(data) {
        assert_eq!(codec::decode_request(&codec::encode(&r)).as_ref(), Ok(&r));
    }
    let c = config();
    let mut server = Server::new(
        Box::new(NoFirewall::default()),
        portcullis_daemon::daemon::plan_for(c),
        Policy::from_config(c),
        None,
    );
    if data.first().is_some_and(|b| b & 1 == 1) {
        let bundle = codec::encode(&codec::Bundle { text: "é".repeat(40_000), tokens: None, files: Default::default() });
        server.offer(c.clone(), String::from_utf8(bundle).expect("JSON is UTF-8"));
    }
    // Try the input as the first request and, split in two, as a pair.
    for part in [data, &data[..data.len() / 2], &data[data.len() / 2..]] {
        let reply = server.handle(part, part.len() > codec::MAX_REQUEST);
        let bytes = codec::encode(&reply);
        assert!(bytes.len() <= codec::MAX_REPLY);
        assert_eq!(codec::decode_reply(&bytes), Ok(reply));
    }
});
