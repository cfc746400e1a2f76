//! Which packets are "for us": the interfaces we listen on and their addresses.
//!
//! Kept current without polling: a thread listens to rtnetlink link and address
//! notifications and rebuilds the view after each burst of events (a DHCP renew, a
//! PPPoE reconnect, an interface created after start). The capture loop picks up a
//! new view by checking a generation counter, one relaxed atomic load per packet.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::ifaddrs::getifaddrs;
use portcullis_proto::addr::canonical;

use crate::config::Interfaces;

/// The interfaces we listen on and the addresses knocks may be sent to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalView {
    /// Local addresses of the selected interfaces, in canonical form
    /// ([`portcullis_proto::addr::canonical`]), as parsed packets carry them.
    pub addrs: HashSet<IpAddr>,
    /// Interface indexes we accept packets from; `None` means every interface.
    pub ifindexes: Option<HashSet<u32>>,
}

impl LocalView {
    /// Build the view from the kernel's current interfaces.
    pub fn snapshot(sel: &Interfaces) -> io::Result<LocalView> {
        let wanted = |name: &str| match sel {
            Interfaces::All => true,
            Interfaces::Named(names) => names.iter().any(|n| n == name),
        };
        let mut view = LocalView {
            addrs: HashSet::new(),
            ifindexes: match sel {
                Interfaces::All => None,
                Interfaces::Named(_) => Some(HashSet::new()),
            },
        };
        for ifa in getifaddrs().map_err(io::Error::from)? {
            if !wanted(&ifa.interface_name) {
                continue;
            }
            if let Some(set) = view.ifindexes.as_mut() {
                if let Ok(idx) = nix::net::if_::if_nametoindex(ifa.interface_name.as_str()) {
                    set.insert(idx);
                }
            }
            let Some(addr) = ifa.address else { continue };
            // The input point for local addresses: stored canonical, like parsed packets.
            if let Some(v4) = addr.as_sockaddr_in() {
                view.addrs.insert(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                view.addrs.insert(canonical(IpAddr::V6(v6.ip())));
            }
        }
        Ok(view)
    }
}

/// Shared, always-current [`LocalView`].
#[derive(Debug)]
pub struct Monitor {
    generation: AtomicU64,
    view: Mutex<Arc<LocalView>>,
    stop: AtomicBool,
}

/// rtnetlink multicast groups: links, IPv4 and IPv6 addresses.
const GROUPS: u32 = 0x1 /* RTMGRP_LINK */ | 0x10 /* RTMGRP_IPV4_IFADDR */ | 0x100 /* RTMGRP_IPV6_IFADDR */;

impl Monitor {
    /// Take a first snapshot and start the refresh thread.
    pub fn start(sel: Interfaces) -> io::Result<Arc<Monitor>> {
        let first = LocalView::snapshot(&sel)?;
        let mon = Arc::new(Monitor {
            generation: AtomicU64::new(1),
            view: Mutex::new(Arc::new(first)),
            stop: AtomicBool::new(false),
        });
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, GROUPS))?;
        let m = Arc::clone(&mon);
        thread::Builder::new().name("addr-monitor".into()).spawn(move || m.run(sock, sel))?;
        Ok(mon)
    }

    fn run(&self, sock: Socket, sel: Interfaces) {
        let mut buf = vec![0u8; 64 * 1024];
        // A periodic refresh as well, in case the kernel dropped notifications (ENOBUFS).
        let _ = nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        );
        while !self.stop.load(Ordering::Relaxed) {
            let _ = sock.recv(&mut &mut buf[..], 0);
            // Coalesce a burst of events (an interface coming up emits several).
            thread::sleep(Duration::from_millis(20));
            let _ = sock.set_non_blocking(true);
            while sock.recv(&mut &mut buf[..], 0).is_ok() {}
            let _ = sock.set_non_blocking(false);
            self.refresh(&sel);
        }
    }

    /// Rebuild the view now.
    pub fn refresh(&self, sel: &Interfaces) {
        match LocalView::snapshot(sel) {
            Ok(v) => {
                let mut cur = self.view.lock().unwrap_or_else(|p| p.into_inner());
                if **cur != v {
                    tracing::info!(
                        "local addresses changed: {} address(es) on {} interface(s)",
                        v.addrs.len(),
                        v.ifindexes.as_ref().map_or("all".to_string(), |s| s.len().to_string())
                    );
                    *cur = Arc::new(v);
                    self.generation.fetch_add(1, Ordering::Release);
                }
            }
            Err(e) => tracing::warn!("cannot read interface addresses: {e}"),
        }
    }

    /// The generation of the current view; changes whenever the view does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current view.
    pub fn view(&self) -> Arc<LocalView> {
        Arc::clone(&self.view.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Ask the refresh thread to stop (it notices within its receive timeout).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
