//! Process limits: how many descriptors the server may hold, and so how many clients.
//!
//! At start the soft RLIMIT_NOFILE is raised to the hard limit (a server that refuses clients
//! while the kernel would allow more is misconfigured by default), and `--max-clients` defaults to
//! that minus [`RESERVED_FDS`] for the listeners, the poller, the signal pipe and the reserve
//! descriptor kept for EMFILE.

use std::io;

/// Descriptors kept for everything that is not a client.
pub const RESERVED_FDS: u64 = 32;

/// Raises the soft descriptor limit to the hard one and returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Clients that fit in `nofile` descriptors.
pub fn clients_for(nofile: u64) -> usize {
    nofile.saturating_sub(RESERVED_FDS).max(1) as usize
}
