//! Which configs the split daemon cannot serve: features whose privileged work is not in
//! the request set. Asked at start (`portcullisd run`) and on reload.

use crate::config::Config;

/// Why `config` must run as one process, if it must: features whose privileged work is
/// not in the request set.
pub fn reason(config: &Config) -> Option<&'static str> {
    let spa = config.spa.as_ref();
    if spa.and_then(|s| s.udp_server).is_some_and(|p| p < 1024) {
        // Bound by the unprivileged part, which holds no CAP_NET_BIND_SERVICE.
        Some("the SPA UDP server on a port below 1024")
    } else if spa.is_some_and(|s| s.stanzas.iter().any(|st| st.cmd_cycle.is_some())) {
        Some("fwknop CMD_CYCLE commands")
    } else if config.daemon.firewall.nat
        || spa.is_some_and(|s| {
            s.forwarding || s.local_nat || s.stanzas.iter().any(|st| st.nat.force_nat.is_some())
        })
    {
        // NAT grants (an inside host chosen per packet) are not in the request set.
        Some("NAT grants (nat = true, ENABLE_IPT_FORWARDING, ENABLE_IPT_LOCAL_NAT)")
    } else {
        None
    }
}
