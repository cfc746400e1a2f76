//! Kernel-side drops of the capture socket (`PACKET_STATISTICS`): packets the filter
//! accepted but the receive buffer had no room for. Neither nix nor socket2 exposes
//! this option, hence the one `getsockopt` call below.

use std::io;
use std::os::fd::AsRawFd;

/// Drops since the last call (the kernel resets its counters on every read).
#[allow(unsafe_code)]
pub fn take_drops(sock: &impl AsRawFd) -> io::Result<u64> {
    let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tpacket_stats>())
        .map_err(|_| io::Error::other("tpacket_stats size"))?;
    // SAFETY: `st` is a live, writable `tpacket_stats` and `len` is its exact size, so
    // the kernel writes at most `len` bytes into it; the fd is owned by `sock` and open
    // for the duration of the call.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(st.tp_drops))
}
