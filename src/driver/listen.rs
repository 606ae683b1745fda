//! Listening and admission, shared by every driver: binding with a deep backlog, accepting with
//! a reserve descriptor for EMFILE, the per-turn accept budget, and who may be served.
//!
//! The event loop and the threaded models' accept thread both poll their listeners with mio and
//! call [`Listeners::next`] until it says [`Accepted::Done`]; the loop stops after
//! [`ACCEPTS_PER_TURN`] connections in a turn (over all listeners) and resumes on its next turn,
//! as Redis's `MAX_ACCEPTS_PER_CALL` does, so a connect flood cannot starve the clients already
//! served.
//! Each new connection then passes [`Admission::admit`] (shutdown, `--max-clients`,
//! `--max-per-ip`), and a refused one gets one line of its protocol saying why.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::warn;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::config::Config;
use crate::session::Protocol;

/// Connections accepted per turn of the event loop, over all its listeners, before it serves
/// everyone else again (Redis's `MAX_ACCEPTS_PER_CALL` is 1000; a pollchat welcome also joins
/// the lobby, so fewer). At 256 a burst of 10,000 connects takes 40 turns.
pub const ACCEPTS_PER_TURN: usize = 256;
/// Connections the kernel may hold for us before we accept them.
const LISTEN_BACKLOG: i32 = 4096;
/// Pause before accepting again when no file descriptor can be had even for the reserve.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What [`Listeners::next`] found.
pub enum Accepted {
    /// A new connection, with the protocol of the listener it came through.
    Conn(TcpStream, SocketAddr, Protocol),
    /// Nobody is waiting (or accepting is paused): wait for the next readiness event, or for
    /// [`Listeners::paused_until`].
    Done,
}

/// Every listening socket of a server, each with the protocol its clients speak.
pub struct Listeners {
    list: Vec<(TcpListener, Protocol)>,
    /// A descriptor held in reserve: on EMFILE it is released for just long enough to accept the
    /// waiting client and tell it the server is full (the libev/Redis trick), instead of leaving
    /// it in the backlog where it would wake the loop again and again.
    reserve_fd: Option<File>,
    /// Accepting is paused after an fd shortage or an unexpected error until then.
    paused_until: Option<Instant>,
}

impl Listeners {
    /// Binds every `--listen` (line) and `--irc-listen` address of `config` and registers
    /// listener `i` with `registry` under `token(i)`. Errors name the address that failed.
    pub fn bind(
        config: &Config,
        registry: &Registry,
        token: impl Fn(usize) -> Token,
    ) -> io::Result<Listeners> {
        let line = config.listen.iter().map(|a| (*a, Protocol::Line));
        let irc = config.irc_listen.iter().map(|a| (*a, Protocol::Irc));
        let mut list = Vec::new();
        for (i, (addr, protocol)) in line.chain(irc).enumerate() {
            let mut listener = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            deepen_backlog(&listener);
            registry.register(&mut listener, token(i), Interest::READABLE)?;
            list.push((listener, protocol));
        }
        Ok(Listeners {
            list,
            reserve_fd: File::open("/dev/null").ok(),
            paused_until: None,
        })
    }

    /// The addresses actually bound for `protocol` (useful with port 0), in flag order.
    pub fn addrs(&self, protocol: Protocol) -> Vec<SocketAddr> {
        self.list
            .iter()
            .filter(|(_, p)| *p == protocol)
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Until when accepting is paused, if it is.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Ends a pause that is over; true if one ended (the caller must then accept on every
    /// listener: readiness is edge-triggered, and clients that arrived meanwhile sent no event).
    pub fn resume(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
            return true;
        }
        false
    }

    /// The next connection waiting on listener `index`.
    pub fn next(&mut self, index: usize, now: Instant) -> Accepted {
        loop {
            if self.paused_until.is_some() {
                return Accepted::Done;
            }
            let Some((listener, protocol)) = self.list.get(index) else {
                return Accepted::Done;
            };
            let protocol = *protocol;
            match listener.accept() {
                Ok((stream, peer)) => return Accepted::Conn(stream, peer, protocol),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::Done,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) if is_fd_shortage(&e) => {
                    if !self.on_fd_shortage(index, now) {
                        return Accepted::Done;
                    }
                }
                Err(e) => {
                    warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.paused_until = Some(now + ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// Out of descriptors: use the reserve to turn the next waiting client away with a reason,
    /// or, without one, stop accepting for a moment instead of spinning on EMFILE (which
    /// `accept` returns even when no client is waiting). Returns whether to go on accepting.
    fn on_fd_shortage(&mut self, index: usize, now: Instant) -> bool {
        let mut more = false;
        if self.reserve_fd.take().is_some() {
            let (listener, protocol) = &self.list[index];
            // Err: nobody is waiting (WouldBlock), or the client already left.
            if let Ok((stream, peer)) = listener.accept() {
                warn!("{peer} refused: out of file descriptors");
                refuse(stream, *protocol, "server full");
                more = true;
            }
            self.reserve_fd = File::open("/dev/null").ok();
        }
        if self.reserve_fd.is_none() {
            warn!("out of file descriptors; pausing accepts for {ACCEPT_BACKOFF:?}");
            self.paused_until = Some(now + ACCEPT_BACKOFF);
            return false;
        }
        more
    }

    /// Stops listening (shutdown): new connects are refused by the kernel from now on.
    pub fn close(&mut self, registry: &Registry) {
        for (mut listener, _) in self.list.drain(..) {
            let _ = registry.deregister(&mut listener);
        }
    }
}

/// Who may be served: the server-wide and per-address limits.
#[derive(Debug)]
pub struct Admission {
    max_clients: usize,
    max_per_ip: usize,
    /// Open connections per peer address, for `--max-per-ip`.
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        Admission {
            max_clients: config.max_clients,
            max_per_ip: config.max_per_ip,
            per_ip: HashMap::new(),
        }
    }

    /// Whether a new connection from `peer` may be served while `open` others are; a refused
    /// one is told why in one line of its protocol, logged, and closed (dropped by the caller).
    /// An admitted one counts against its address until [`Admission::left`].
    pub fn admit(
        &mut self,
        stream: &mut impl Write,
        peer: SocketAddr,
        protocol: Protocol,
        open: usize,
        shutting_down: bool,
    ) -> bool {
        let refusal = if shutting_down {
            Some("server shutting down")
        } else if open >= self.max_clients {
            warn!("{peer} refused: server full ({open} clients, --max-clients)");
            Some("server full")
        } else {
            let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
            (self.max_per_ip > 0 && from_ip >= self.max_per_ip).then(|| {
                warn!("{peer} refused: {from_ip} connections from its address (--max-per-ip)");
                "too many connections from your address"
            })
        };
        if let Some(why) = refusal {
            refuse(stream, protocol, why);
            return false;
        }
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        true
    }

    /// A connection admitted earlier is gone.
    pub fn left(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// Tells a client it is not admitted, in one line of its protocol. The socket is new and its
/// send buffer empty, so the one write goes through at once, blocking or not.
pub fn refuse(mut stream: impl Write, protocol: Protocol, why: &str) {
    let _ = stream.write(&protocol.refusal(why));
}

fn is_fd_shortage(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// mio (like std) listens with a backlog of 128. A burst of connects larger than that within one
/// loop turn overflows it, and the kernel drops SYNs: those clients wait a full second for the
/// retransmit. Calling `listen` again on a listening socket just sets the new backlog (Linux caps
/// it at `net.core.somaxconn`).
fn deepen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen on a descriptor we own, which is already a bound, listening socket.
    unsafe {
        libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG);
    }
}
