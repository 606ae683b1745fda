//! Listening and admission, shared by every driver: binding with a deep backlog, accepting with
//! a reserve descriptor for EMFILE, the per-turn accept budget, and who may be served.
//!
//! The event loop and the threaded models' accept thread both poll their listeners with mio and
//! call [`Listeners::next`] until it says [`Accepted::Done`]; the loop stops after
//! [`ACCEPTS_PER_TURN`] connections in a turn (over all listeners) and resumes on its next turn,
//! as Redis's `MAX_ACCEPTS_PER_CALL` does, so a connect flood cannot starve the clients already
//! served.
//! Each new connection then passes [`Admission::admit`] (shutdown, `--irc-password-tries`,
//! `--max-connects-per-ip`, `--max-clients`, `--max-per-ip`), and a refused one gets one line of its protocol saying
//! why. The drivers tell admission when a connection leaves ([`Admission::left`]) and why it is
//! closed ([`Admission::closing`]: a wrong IRC password counts against its address).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::config::Config;
use crate::session::{Protocol, Reason};

/// Connections accepted per turn of the event loop, over all its listeners, before it serves
/// everyone else again (Redis's `MAX_ACCEPTS_PER_CALL` is 1000; a pollchat welcome also joins
/// the lobby, so fewer). At 256 a burst of 10,000 connects takes 40 turns.
pub const ACCEPTS_PER_TURN: usize = 256;
/// Connections the kernel may hold for us before we accept them.
const LISTEN_BACKLOG: i32 = 4096;
/// Pause before accepting again when no file descriptor can be had even for the reserve.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a listener's clients speak: a protocol, in clear or over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Door {
    pub protocol: Protocol,
    /// Clients start with a TLS handshake (`net::tls`).
    pub tls: bool,
}

impl Door {
    pub const LINE: Door = Door {
        protocol: Protocol::Line,
        tls: false,
    };
    pub const IRC: Door = Door {
        protocol: Protocol::Irc,
        tls: false,
    };
    pub const LINE_TLS: Door = Door {
        protocol: Protocol::Line,
        tls: true,
    };
    pub const IRC_TLS: Door = Door {
        protocol: Protocol::Irc,
        tls: true,
    };
}

/// What [`Listeners::next`] found.
pub enum Accepted {
    /// A new connection, with the door (protocol, TLS or not) of the listener it came through.
    Conn(TcpStream, SocketAddr, Door),
    /// Nobody is waiting (or accepting is paused): wait for the next readiness event, or for
    /// [`Listeners::paused_until`].
    Done,
}

/// Every listening socket of a server, each with the door its clients come through.
pub struct Listeners {
    list: Vec<(TcpListener, Door)>,
    /// A descriptor held in reserve: on EMFILE it is released for just long enough to accept the
    /// waiting client and tell it the server is full (the libev/Redis trick), instead of leaving
    /// it in the backlog where it would wake the loop again and again.
    reserve_fd: Option<File>,
    /// Accepting is paused after an fd shortage or an unexpected error until then.
    paused_until: Option<Instant>,
}

impl Listeners {
    /// Binds every `--listen` (line) and `--irc-listen` address of `config`, and with TLS
    /// configured every `--tls-listen` and `--irc-tls-listen` one, and registers listener `i`
    /// with `registry` under `token(i)`. Errors name the address that failed.
    pub fn bind(
        config: &Config,
        registry: &Registry,
        token: impl Fn(usize) -> Token,
    ) -> io::Result<Listeners> {
        let tls = config.tls.is_some();
        let doors = [
            (&config.listen, Door::LINE),
            (&config.irc_listen, Door::IRC),
            (&config.tls_listen, Door::LINE_TLS),
            (&config.irc_tls_listen, Door::IRC_TLS),
        ];
        let addrs = doors
            .into_iter()
            .filter(|(_, door)| tls || !door.tls)
            .flat_map(|(addrs, door)| addrs.iter().map(move |a| (*a, door)));
        let mut list = Vec::new();
        for (i, (addr, door)) in addrs.enumerate() {
            let bound = if config.reuse_port {
                bind_reusing_port(addr)
            } else {
                TcpListener::bind(addr)
            };
            let mut listener = bound
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            deepen_backlog(&listener);
            registry.register(&mut listener, token(i), Interest::READABLE)?;
            list.push((listener, door));
        }
        Ok(Listeners {
            list,
            reserve_fd: File::open("/dev/null").ok(),
            paused_until: None,
        })
    }

    /// The addresses actually bound for `door` (useful with port 0), in flag order.
    pub fn addrs(&self, door: Door) -> Vec<SocketAddr> {
        self.list
            .iter()
            .filter(|(_, d)| *d == door)
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
            let Some((listener, door)) = self.list.get(index) else {
                return Accepted::Done;
            };
            let door = *door;
            match listener.accept() {
                Ok((stream, peer)) => return Accepted::Conn(stream, peer, door),
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
            let (listener, door) = &self.list[index];
            // Err: nobody is waiting (WouldBlock), or the client already left.
            if let Ok((stream, peer)) = listener.accept() {
                warn!("{peer} refused: out of file descriptors");
                // (A TLS client would read a line in clear as garbage: it is only closed.)
                if !door.tls {
                    refuse(stream, door.protocol, "server full");
                }
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
///
/// Nothing here reads a clock: the drivers pass the time in.
#[derive(Debug)]
pub struct Admission {
    max_clients: usize,
    max_per_ip: usize,
    /// `--ipv6-prefix`: IPv6 peers are counted per network of this many bits ([`host_group`]).
    ipv6_prefix: u8,
    /// Open connections per host (see [`host_group`]), for `--max-per-ip`.
    per_ip: HashMap<IpAddr, usize>,
    /// `--irc-password-tries`: wrong passwords an address may give per window (0 = no limit).
    password_tries: u32,
    /// Wrong IRC passwords per address in the current window.
    bad_passwords: Window,
    /// `--max-connects-per-ip`: connections an address may open per window (0 = no limit).
    max_connects: u32,
    /// Connection attempts per address in the current window.
    connects: Window,
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        Admission {
            max_clients: config.max_clients,
            max_per_ip: config.max_per_ip,
            ipv6_prefix: config.ipv6_prefix,
            per_ip: HashMap::new(),
            password_tries: config.irc_password_tries,
            bad_passwords: Window::new(config.rate_window),
            max_connects: config.max_connects_per_ip,
            connects: Window::new(config.rate_window),
        }
    }

    /// Whether a new connection from `peer` may be served at `now` while `open` others are; a
    /// refused one is told why in one line of its protocol, logged, and closed (dropped by the
    /// Gives back the memory of per-address tables that were bigger than they are now.
    pub fn shrink_to_fit(&mut self) {
        self.per_ip.shrink_to_fit();
        self.bad_passwords.map.shrink_to_fit();
        self.connects.map.shrink_to_fit();
    }

    /// caller). An admitted one counts against its address until [`Admission::left`].
    pub fn admit(
        &mut self,
        stream: &mut impl Write,
        peer: SocketAddr,
        protocol: Protocol,
        open: usize,
        shutting_down: bool,
        now: Instant,
    ) -> bool {
        let ip = host_group(peer.ip(), self.ipv6_prefix);
        let window = self.bad_passwords.length;
        let refusal = if shutting_down {
            Some("server shutting down")
        } else if protocol == Protocol::Irc
            && self.password_tries > 0
            && let Some(strikes) = self.bad_passwords.over(ip, self.password_tries, now)
        {
            // Only IRC asks for a password: line connections from the address are still served.
            let n = strikes.n;
            strikes.warn(|| {
                format!(
                    "{peer} refused: {n} wrong IRC passwords from its address within {window:?} \
                     (--irc-password-tries); further ones logged at debug"
                )
            });
            Some("too many wrong passwords, try again later")
        } else if let Some(refused) = self.too_often(peer, ip, now) {
            Some(refused)
        } else if open >= self.max_clients {
            warn!("{peer} refused: server full ({open} clients, --max-clients)");
            Some("server full")
        } else {
            let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
            (self.max_per_ip > 0 && from_ip >= self.max_per_ip).then(|| {
                warn!("{peer} refused: {from_ip} connections from its address (--max-per-ip)");
                "too many connections from your address"
            })
        };
        if let Some(why) = refusal {
            refuse(stream, protocol, why);
            return false;
        }
        *self.per_ip.entry(ip).or_insert(0) += 1;
        true
    }

    /// `--max-connects-per-ip`: counts this attempt from `ip` (the host `peer` belongs to) and
    /// refuses it if it is one too many in the address's window. Every attempt counts, refused
    /// ones too: a client in a reconnect loop has to stop for a while to get back in.
    fn too_often(&mut self, peer: SocketAddr, ip: IpAddr, now: Instant) -> Option<&'static str> {
        let (limit, window) = (self.max_connects, self.connects.length);
        if limit == 0 {
            return None;
        }
        let strikes = self.connects.add(ip, now).filter(|s| s.n > limit)?;
        strikes.warn(|| {
            format!(
                "{peer} refused: more than {limit} connects from its address within {window:?} \
                 (--max-connects-per-ip); further ones logged at debug"
            )
        });
        Some("connecting too often, try again later")
    }

    /// A connection admitted earlier, from `ip`, is gone.
    pub fn left(&mut self, ip: IpAddr) {
        let ip = host_group(ip, self.ipv6_prefix);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// A connection is being closed for `reason` at `now`: a wrong IRC password counts against
    /// its address (`--irc-password-tries`). The session decides that a password is wrong; the
    /// count across connections is kept here, where both drivers share it.
    pub fn closing(&mut self, ip: IpAddr, reason: &Reason, now: Instant) {
        if *reason == Reason::BadPassword && self.password_tries > 0 {
            self.bad_passwords
                .add(host_group(ip, self.ipv6_prefix), now);
        }
    }
}

/// The host an address counts as for the per-address limits: an IPv4 address is itself (as is an
/// IPv4-mapped IPv6 address, `::ffff:a.b.c.d`, which is how a dual-stack listener such as
/// `[::]:9223` sees IPv4 clients); an IPv6 address is its network of `prefix` bits. A single
/// IPv6 host usually has a whole /64 to itself and can pick a new address for every connection,
/// so counting addresses would let it pass any limit; counting /64s (`--ipv6-prefix 64`) does
/// not.
pub fn host_group(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

/// Addresses tracked at most by one [`Window`]: when that many have had an event within the
/// current window, a new address is not tracked (it is served as if it had no history) rather
/// than let the table grow. 65,536 entries are a few MiB; an attacker with more addresses than
/// that is bounded by `--max-clients`, not by per-address limits.
const MAX_TRACKED: usize = 65_536;

/// Events per address within a fixed window (a wrong password, a connect): each address's
/// window starts with its first event and lasts [`Window::length`]; the next event after that
/// starts a new one. Expired entries are pruned as the table grows, so it holds at most the
/// addresses seen within one window (and never more than [`MAX_TRACKED`]).
#[derive(Debug)]
struct Window {
    length: Duration,
    map: HashMap<IpAddr, Strikes>,
    /// Prune expired entries when the table reaches this size (doubling, so pruning costs
    /// amortised O(1) per insert), at most [`MAX_TRACKED`].
    prune_at: usize,
    /// When the table was last pruned while full: a full table is pruned again only an eighth
    /// of a window later (not on every insert: a prune walks all 65,536 entries), but it is
    /// pruned again, so that it never stays full of expired entries.
    pruned_full: Option<Instant>,
}

/// One address's events in its current window.
#[derive(Debug)]
struct Strikes {
    since: Instant,
    n: u32,
    /// A refusal was logged at `warn` in this window; later ones go to `debug`, so a client
    /// hammering the server cannot flood the log too.
    warned: bool,
}

impl Strikes {
    /// Logs a refusal: the first of the window as a warning, the rest at debug.
    fn warn(&mut self, text: impl FnOnce() -> String) {
        let level = if self.warned {
            log::Level::Debug
        } else {
            log::Level::Warn
        };
        self.warned = true;
        log::log!(level, "{}", text());
    }
}

impl Window {
    const MIN_PRUNE_AT: usize = 1024;

    fn new(length: Duration) -> Window {
        Window {
            length,
            map: HashMap::new(),
            prune_at: Self::MIN_PRUNE_AT,
            pruned_full: None,
        }
    }

    fn live(&self, strikes: &Strikes, now: Instant) -> bool {
        now.saturating_duration_since(strikes.since) < self.length
    }

    /// The address's entry if it has had at least `limit` events in its current window.
    fn over(&mut self, ip: IpAddr, limit: u32, now: Instant) -> Option<&mut Strikes> {
        let length = self.length;
        self.map
            .get_mut(&ip)
            .filter(|s| s.n >= limit && now.saturating_duration_since(s.since) < length)
    }

    /// Counts one event of `ip` at `now`; returns its entry, whose `n` is the count in its
    /// current window (`None` if the address could not be tracked).
    fn add(&mut self, ip: IpAddr, now: Instant) -> Option<&mut Strikes> {
        if !self.map.contains_key(&ip) {
            let full = self.map.len() >= MAX_TRACKED;
            let recently = self
                .pruned_full
                .is_some_and(|at| now.saturating_duration_since(at) < self.length / 8);
            if self.map.len() >= self.prune_at && !(full && recently) {
                let length = self.length;
                self.map
                    .retain(|_, s| now.saturating_duration_since(s.since) < length);
                self.prune_at = (2 * self.map.len()).clamp(Self::MIN_PRUNE_AT, MAX_TRACKED);
                self.pruned_full = full.then_some(now);
            }
            if self.map.len() >= MAX_TRACKED {
                debug!("{ip}: not tracked, {MAX_TRACKED} addresses already are");
                return None;
            }
        }
        let live = self.map.get(&ip).is_some_and(|s| self.live(s, now));
        let fresh = Strikes {
            since: now,
            n: 0,
            warned: false,
        };
        let strikes = self.map.entry(ip).or_insert(fresh);
        if !live {
            *strikes = Strikes {
                since: now,
                n: 0,
                warned: false,
            };
        }
        strikes.n += 1;
        Some(strikes)
    }
}

/// Tells a client it is not admitted, in one line of its protocol. The socket is new and its
/// send buffer empty, so the one write goes through at once, blocking or not.
pub fn refuse(mut stream: impl Write, protocol: Protocol, why: &str) {
    let _ = stream.write(&protocol.refusal(why));
}

/// Sets a client socket's kernel send buffer (`--send-buffer`); the kernel doubles the value
/// for its bookkeeping, as `socket(7)` says. A failure only means the kernel keeps its default.
pub fn set_send_buffer(stream: &impl std::os::fd::AsRawFd, bytes: Option<usize>) {
    let Some(bytes) = bytes else {
        return;
    };
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a socket option on a socket we own, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &value as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A listener on `addr` with SO_REUSEPORT (and SO_REUSEADDR, as mio sets): other processes
/// that bind the same address with it share its connections, the kernel spreading them.
fn bind_reusing_port(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_port_lets_two_listeners_share_an_address() {
        let first = bind_reusing_port("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_reusing_port(addr).expect("a second SO_REUSEPORT listener binds");
        assert_eq!(second.local_addr().unwrap(), addr);
        assert!(
            TcpListener::bind(addr).is_err(),
            "without SO_REUSEPORT the address stays taken"
        );
    }

    fn admission(tweak: impl FnOnce(&mut Config)) -> Admission {
        let mut config = Config::default();
        tweak(&mut config);
        Admission::new(&config)
    }

    /// Admits a connection from `peer` at `t`; what it was told, if refused.
    fn try_admit(a: &mut Admission, peer: &str, protocol: Protocol, t: Instant) -> Option<String> {
        let mut told = Vec::new();
        let peer: SocketAddr = peer.parse().unwrap();
        if a.admit(&mut told, peer, protocol, 0, false, t) {
            assert!(told.is_empty());
            None
        } else {
            Some(String::from_utf8(told).unwrap())
        }
    }

    #[test]
    fn wrong_passwords_lock_an_address_out_of_irc_until_its_window_ends() {
        let mut a = admission(|c| c.irc_password_tries = 2);
        let t0 = Instant::now();
        let guesser: IpAddr = "10.0.0.1".parse().unwrap();
        let irc = |a: &mut Admission, peer, t| try_admit(a, peer, Protocol::Irc, t);
        assert_eq!(irc(&mut a, "10.0.0.1:1000", t0), None);
        a.closing(guesser, &Reason::BadPassword, t0);
        // Other reasons do not count.
        a.closing(guesser, &Reason::Closed, t0);
        assert_eq!(irc(&mut a, "10.0.0.1:1001", t0), None);
        a.closing(guesser, &Reason::BadPassword, t0 + Duration::from_secs(30));
        let refused = irc(&mut a, "10.0.0.1:1002", t0 + Duration::from_secs(59));
        assert_eq!(
            refused.as_deref(),
            Some("ERROR :Closing link: (too many wrong passwords, try again later)\r\n")
        );
        // Other addresses, and line connections from this one, are served.
        assert_eq!(irc(&mut a, "10.0.0.2:1000", t0), None);
        let line = try_admit(&mut a, "10.0.0.1:1003", Protocol::Line, t0);
        assert_eq!(line, None);
        // The window started with the first wrong password, and ends a minute later.
        assert_eq!(
            irc(&mut a, "10.0.0.1:1004", t0 + Duration::from_secs(60)),
            None
        );
        a.closing(guesser, &Reason::BadPassword, t0 + Duration::from_secs(61));
        assert_eq!(
            irc(&mut a, "10.0.0.1:1005", t0 + Duration::from_secs(61)),
            None
        );

        // 0: no limit.
        let mut a = admission(|c| c.irc_password_tries = 0);
        for _ in 0..100 {
            a.closing(guesser, &Reason::BadPassword, t0);
        }
        assert_eq!(irc(&mut a, "10.0.0.1:1000", t0), None);
    }

    #[test]
    fn ipv6_peers_are_grouped_by_prefix_and_ipv4_ones_are_not() {
        let g = |ip: &str, prefix| host_group(ip.parse().unwrap(), prefix).to_string();
        assert_eq!(g("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64), "2001:db8:1:2::");
        assert_eq!(g("2001:db8:1:2::1", 64), "2001:db8:1:2::");
        assert_eq!(g("2001:db8:1:3::1", 64), "2001:db8:1:3::");
        assert_eq!(g("2001:db8:1:2:aaaa::1", 48), "2001:db8:1::");
        assert_eq!(g("2001:db8:1:2:aaaa::1", 56), "2001:db8:1::");
        assert_eq!(g("2001:db8:1:2ff:aaaa::1", 56), "2001:db8:1:200::");
        assert_eq!(g("2001:db8::7", 128), "2001:db8::7");
        assert_eq!(g("::1", 64), "::");
        // IPv4 is never grouped, whether it arrives as itself or mapped into IPv6 (a
        // dual-stack listener): otherwise all IPv4 clients would share ::/64.
        assert_eq!(g("192.0.2.7", 64), "192.0.2.7");
        assert_eq!(g("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_eq!(g("::ffff:192.0.2.8", 16), "192.0.2.8");
    }

    #[test]
    fn max_per_ip_counts_an_ipv6_network_as_one_host() {
        let mut a = admission(|c| c.max_per_ip = 2);
        let t0 = Instant::now();
        let line = |a: &mut Admission, peer| try_admit(a, peer, Protocol::Line, t0);
        assert_eq!(line(&mut a, "[2001:db8:0:1::a]:1000"), None);
        assert_eq!(line(&mut a, "[2001:db8:0:1::b]:1000"), None);
        assert_eq!(
            line(&mut a, "[2001:db8:0:1:ffff::c]:1000").as_deref(),
            Some("BYE too many connections from your address\r\n")
        );
        // Another /64 is another host; IPv4 addresses are counted one by one.
        assert_eq!(line(&mut a, "[2001:db8:0:2::a]:1000"), None);
        assert_eq!(line(&mut a, "192.0.2.1:1000"), None);
        assert_eq!(line(&mut a, "192.0.2.2:1000"), None);
        // A connection leaving from any address of the network frees a slot for all of it.
        a.left("2001:db8:0:1::a".parse().unwrap());
        assert_eq!(line(&mut a, "[2001:db8:0:1::d]:1000"), None);
        assert!(line(&mut a, "[2001:db8:0:1::e]:1000").is_some());
        // Wrong passwords are counted per network too.
        let mut a = admission(|c| c.irc_password_tries = 1);
        a.closing("2001:db8::1".parse().unwrap(), &Reason::BadPassword, t0);
        assert!(try_admit(&mut a, "[2001:db8::2]:1", Protocol::Irc, t0).is_some());
        assert_eq!(
            try_admit(&mut a, "[2001:db8:0:1::2]:1", Protocol::Irc, t0),
            None
        );
    }

    #[test]
    fn connects_per_address_are_limited_per_window() {
        let mut a = admission(|c| c.max_connects_per_ip = 3);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        for (i, secs) in [0, 10, 20].into_iter().enumerate() {
            assert_eq!(
                try_admit(&mut a, "10.0.0.1:1", Protocol::Line, at(secs)),
                None
            );
            a.left("10.0.0.1".parse().unwrap());
            assert_eq!(a.connects.map.len(), 1, "{i}");
        }
        assert_eq!(
            try_admit(&mut a, "10.0.0.1:1", Protocol::Line, at(30)).as_deref(),
            Some("BYE connecting too often, try again later\r\n")
        );
        assert_eq!(
            try_admit(&mut a, "10.0.0.1:1", Protocol::Irc, at(59)).as_deref(),
            Some("ERROR :Closing link: (connecting too often, try again later)\r\n")
        );
        // Others are not affected, and the address's window ends a minute after its first
        // connect.
        assert_eq!(
            try_admit(&mut a, "10.0.0.2:1", Protocol::Line, at(30)),
            None
        );
        assert_eq!(
            try_admit(&mut a, "10.0.0.1:1", Protocol::Line, at(60)),
            None
        );
        // 0: no limit.
        let mut a = admission(|c| c.max_connects_per_ip = 0);
        for _ in 0..1000 {
            assert_eq!(try_admit(&mut a, "10.0.0.1:1", Protocol::Line, t0), None);
        }
        assert!(a.connects.map.is_empty());
    }

    #[test]
    fn a_window_table_forgets_expired_addresses_and_stays_bounded() {
        let mut w = Window::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(i));
        for i in 0..5000 {
            assert_eq!(w.add(ip(i), t0).map(|s| s.n), Some(1));
        }
        assert_eq!(
            w.add(ip(7), t0 + Duration::from_secs(59)).map(|s| s.n),
            Some(2)
        );
        let renewed = w.add(ip(7), t0 + Duration::from_secs(60)).map(|s| s.n);
        assert_eq!(renewed, Some(1), "a new window");
        // A minute later, new addresses push the expired ones out as the table grows.
        let later = t0 + Duration::from_secs(61);
        for i in 10_000..20_000 {
            w.add(ip(i), later);
        }
        assert!(w.map.len() <= 10_001, "{}", w.map.len());
        assert!(w.map.keys().all(|k| *k == ip(7) || *k >= ip(10_000)));
        // Never more than MAX_TRACKED, whatever arrives within one window.
        for i in 100_000..(100_000 + MAX_TRACKED as u32 + 10) {
            w.add(ip(i), later);
        }
        assert!(w.map.len() <= MAX_TRACKED);
        assert!(w.add(ip(1 << 30), later).is_none(), "not tracked");
        // Full of entries that then expire: a window later, new addresses are tracked again
        // (the table must not stay full of the dead).
        let much_later = later + Duration::from_secs(3600);
        assert_eq!(w.add(ip(1 << 31), much_later).map(|s| s.n), Some(1));
        assert!(w.map.len() < 10, "{}", w.map.len());
    }

    #[test]
    fn a_table_filled_by_a_burst_of_addresses_recovers() {
        // 70,000 addresses at once, then one more an hour later (the review's case).
        let mut w = Window::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(i));
        for i in 0..70_000 {
            w.add(ip(i), t0);
        }
        let later = t0 + Duration::from_secs(3600);
        for i in 0..3 {
            assert_eq!(
                w.add(ip(1_000_000), later + Duration::from_secs(i))
                    .map(|s| s.n),
                Some(i as u32 + 1)
            );
        }
    }
}
