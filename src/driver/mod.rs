//! Drivers: what moves bytes between sockets and the chat core, one per I/O model.
//!
//! - [`poll`]: the server proper, one `mio::Poll` loop on one thread ([`IoModel::Poll`]), with
//!   [`timer`], its heap of deadlines.
//! - [`listen`]: binding, accepting (EMFILE reserve, per-turn budget) and admission, which every
//!   driver shares.
//! - [`threads`]: the threaded baselines the loop is measured against: a reader and a writer
//!   thread per connection fed by a bounded channel ([`IoModel::Threads`]), or one thread per
//!   connection writing straight into its recipients' sockets under the core's lock
//!   ([`IoModel::ThreadsDirect`], which exists to show head-of-line blocking).
//!
//! Drivers move bytes and time and decide nothing about protocols: every driver keeps a
//! [`crate::session::Session`] per connection, which owns the protocol's state and deadlines, and
//! uses the same framer, byte transforms, core and limits; only the I/O model differs. This
//! module holds what they share: the model names, the [`Server`] that binds any of them,
//! [`spawn`] for tests and benchmarks, the [`ShutdownHandle`], and how a departure is told.

pub mod listen;
pub mod poll;
pub mod threads;
pub mod timer;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::info;
use mio::{Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::core::{ClientId, Cloak, Core, CoreLimits, Millis, Outbox};
use crate::session::Reason;
use listen::Door;

/// A paged answer's next page is rendered once the asker's queue holds less than this (or
/// half of `--max-sendq`, if smaller): enough to keep its socket busy, little to hold.
pub(crate) const REFILL_BELOW: usize = 16 * 1024;

/// Answers in progress a client may have before its commands are no longer read until they are
/// under way: a client that asks for long answers faster than it reads them is held back (TCP
/// pushes back on it), rather than the server holding a growing list of answers or spending
/// its time on them.
pub(crate) const MAX_ANSWERS: usize = 4;

/// How a server does its I/O (`pollchat serve --io …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoModel {
    /// One `mio::Poll` loop on one thread: the server proper.
    Poll,
    /// Blocking sockets, a reader and a writer thread per connection, the core behind a lock.
    Threads,
    /// Blocking sockets, one thread per connection that writes into every recipient's socket
    /// while holding the core's lock: a slow reader stalls everyone (head-of-line blocking).
    ThreadsDirect,
}

impl IoModel {
    pub const ALL: [IoModel; 3] = [IoModel::Poll, IoModel::Threads, IoModel::ThreadsDirect];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            IoModel::Poll => "poll",
            IoModel::Threads => "threads",
            IoModel::ThreadsDirect => "threads-direct",
        }
    }
}

impl fmt::Display for IoModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for IoModel {
    type Err = String;

    fn from_str(s: &str) -> Result<IoModel, String> {
        IoModel::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown I/O model {s:?}: poll, threads or threads-direct"))
    }
}

/// Stops a running server from another thread (tests, embedding programs): the server wakes,
/// says goodbye to every client and returns. Every I/O model has a `mio::Poll` that waits for
/// it: the event loop's, or the accept thread's of the threaded models.
#[derive(Clone)]
pub struct ShutdownHandle {
    pub(crate) waker: Arc<Waker>,
    pub(crate) requested: Arc<AtomicBool>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// The shutdown waker's token in every driver's poll.
const WAKER: Token = Token(usize::MAX - 1);
/// The token of SIGINT/SIGTERM/SIGHUP in every driver's poll.
const SIGNALS: Token = Token(usize::MAX - 2);

/// What every driver's `mio::Poll` watches besides its clients: the listeners, the waker of its
/// [`ShutdownHandle`], and SIGINT/SIGTERM once [`Front::handle_signals`] is called. The event
/// loop polls clients on the same `Poll`; the threaded models' accept thread polls only this.
pub struct Front {
    pub poll: Poll,
    pub listeners: listen::Listeners,
    signals: Option<Signals>,
    /// A SIGHUP came: the driver reloads what it can (the TLS certificate and key).
    reload: bool,
    waker: Arc<Waker>,
    shutdown_requested: Arc<AtomicBool>,
}

impl Front {
    /// Binds every listen address of `config`, listener `i` under `token(i)` (which must stay
    /// clear of the two tokens below `usize::MAX`).
    pub fn bind(config: &Config, token: impl Fn(usize) -> Token) -> io::Result<Front> {
        let poll = Poll::new()?;
        let listeners = listen::Listeners::bind(config, poll.registry(), token)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Front {
            poll,
            listeners,
            signals: None,
            reload: false,
            waker,
            shutdown_requested: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            waker: self.waker.clone(),
            requested: self.shutdown_requested.clone(),
        }
    }

    /// SIGINT and SIGTERM become events of this poll: the server shuts down gracefully (no
    /// signal thread, no self-pipe written by hand). SIGHUP too: a reload ([`Front::take_reload`]).
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, mio::Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Whether `token` is the waker's or the signals'.
    pub fn owns(token: Token) -> bool {
        token == WAKER || token == SIGNALS
    }

    /// After an event for one of [`Front::owns`]'s tokens: why the server must stop, if it must.
    pub fn stop_requested(&mut self, token: Token) -> Option<String> {
        match token {
            WAKER if self.shutdown_requested.load(Ordering::SeqCst) => {
                Some("shutdown requested".into())
            }
            SIGNALS => {
                let signals = self.signals.as_mut()?;
                let received: Vec<i32> = signals.pending().collect();
                self.reload |= received.contains(&libc::SIGHUP);
                received
                    .iter()
                    .find(|&&s| s != libc::SIGHUP)
                    .map(|signal| format!("signal {signal}"))
            }
            _ => None,
        }
    }

    /// Whether a SIGHUP came since the last call.
    pub fn take_reload(&mut self) -> bool {
        std::mem::take(&mut self.reload)
    }

    /// Logs every address the server listens on.
    pub fn log_listening(&self) {
        for addr in self.listeners.addrs(Door::LINE) {
            info!("listening on {addr}");
        }
        for addr in self.listeners.addrs(Door::IRC) {
            info!("listening for IRC on {addr}");
        }
        for addr in self.listeners.addrs(Door::LINE_TLS) {
            info!("listening over TLS on {addr}");
        }
        for addr in self.listeners.addrs(Door::IRC_TLS) {
            info!("listening for IRC over TLS on {addr}");
        }
    }
}

/// A server running on a thread of its own (tests, benchmarks, embedding programs).
pub struct Running {
    /// The line-protocol addresses actually bound, in `--listen` order (useful with port 0).
    pub addrs: Vec<SocketAddr>,
    /// The IRC addresses, in `--irc-listen` order.
    pub irc_addrs: Vec<SocketAddr>,
    /// The line protocol's TLS addresses, in `--tls-listen` order (none without TLS).
    pub tls_addrs: Vec<SocketAddr>,
    /// IRC's TLS addresses, in `--irc-tls-listen` order.
    pub irc_tls_addrs: Vec<SocketAddr>,
    pub handle: ShutdownHandle,
    /// Ends once the server has stopped, with what its `run` returned.
    pub thread: std::thread::JoinHandle<io::Result<()>>,
}

/// A bound server of any I/O model; `pollchat serve` is a thin wrapper over it.
pub enum Server {
    /// Boxed: the loop's state is several times the size of the threaded server's handle.
    Poll(Box<poll::EventLoop>),
    Threads(threads::ThreadedServer),
}

impl Server {
    /// Binds every listen address of `config`. Errors name the address that failed, or the
    /// TLS certificate or key that cannot be used; the threaded models refuse TLS (they are
    /// baselines for the loop, and a rustls connection per thread would measure something
    /// else).
    pub fn bind(io: IoModel, config: Config) -> io::Result<Server> {
        if config.backplane.is_some() && io != IoModel::Poll {
            return Err(io::Error::other(format!(
                "--backplane needs --io poll: --io {io} is a single-process baseline and cannot join a cluster"
            )));
        }
        if config.tls.is_some() && io != IoModel::Poll {
            return Err(io::Error::other(format!(
                "TLS (--tls-cert, --tls-key) needs --io poll: --io {io} speaks plain TCP only"
            )));
        }
        Ok(match io {
            IoModel::Poll => Server::Poll(Box::new(poll::EventLoop::bind(config)?)),
            IoModel::Threads => Server::Threads(threads::ThreadedServer::bind(config, false)?),
            IoModel::ThreadsDirect => Server::Threads(threads::ThreadedServer::bind(config, true)?),
        })
    }

    fn front(&mut self) -> &mut Front {
        match self {
            Server::Poll(s) => &mut s.front,
            Server::Threads(s) => &mut s.front,
        }
    }

    /// The addresses actually bound for `door` (useful with port 0), in flag order.
    pub fn addrs(&mut self, door: Door) -> Vec<SocketAddr> {
        self.front().listeners.addrs(door)
    }

    pub fn shutdown_handle(&mut self) -> ShutdownHandle {
        self.front().shutdown_handle()
    }

    /// Shuts down gracefully on SIGINT and SIGTERM.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.front().handle_signals()
    }

    /// Serves until shutdown is requested and every client has been said goodbye to.
    pub fn run(self) -> io::Result<()> {
        match self {
            Server::Poll(s) => (*s).run(),
            Server::Threads(s) => s.run(),
        }
    }
}

/// Binds a server of the given I/O model on a new thread and runs it there; returns once it is
/// listening. (The event loop must stay on the thread that made it: its output chunks are `Rc`.)
pub fn spawn(io: IoModel, config: Config) -> io::Result<Running> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = match io {
        IoModel::Poll => "pollchat-loop",
        IoModel::Threads | IoModel::ThreadsDirect => "pollchat-accept",
    };
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut server = match Server::bind(io, config) {
                Ok(server) => server,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            let bound = (
                [Door::LINE, Door::IRC, Door::LINE_TLS, Door::IRC_TLS].map(|d| server.addrs(d)),
                server.shutdown_handle(),
            );
            let _ = tx.send(Ok(bound));
            server.run()
        })?;
    let ([addrs, irc_addrs, tls_addrs, irc_tls_addrs], handle) = rx
        .recv()
        .map_err(|_| io::Error::other("server thread died"))??;
    Ok(Running {
        addrs,
        irc_addrs,
        tls_addrs,
        irc_tls_addrs,
        handle,
        thread,
    })
}

/// A chat core with the limits of `config`, refusing as nicks the server's own name and the
/// `--reserved-nick` names (besides the services' names every core refuses), cloaking hosts
/// with `--cloak-key` or a random key.
pub(crate) fn new_core(config: &Config) -> Core {
    let limits = CoreLimits {
        history: config.history,
        max_rooms: config.max_rooms,
        big_room: config.big_room,
        room_history_bytes: config.room_history_bytes,
        history_bytes: config.history_bytes,
        max_total_rooms: config.max_total_rooms,
        nick_delay: config.nick_delay.as_millis() as Millis,
    };
    let mut core = Core::new(limits, wall_ms());
    core.set_cloak(match &config.cloak_key {
        Some(phrase) => Cloak::from_phrase(phrase, config.ipv6_prefix),
        None => Cloak::random(config.ipv6_prefix),
    });
    core.set_server_bans(config.server_bans.clone());
    match load_opers(config) {
        Ok(opers) => core.set_opers(opers),
        Err(e) => {
            log::error!("{e}; only the --oper operators are known");
            core.set_opers(config.opers.clone());
        }
    }
    core.reserve_nick(&config.server_name);
    for nick in &config.reserved_nicks {
        core.reserve_nick(nick);
    }
    core
}

/// Takes a closing client out of the chat core, which tells its rooms why (events into
/// `outbox`, for the caller to deliver), and logs the departure; returns the reason's text for
/// the client's farewell line. While `everyone_leaves` (shutdown) nobody is told who else left.
pub(crate) fn depart(
    core: &mut Core,
    outbox: &mut Outbox,
    id: ClientId,
    peer: SocketAddr,
    reason: &Reason,
    everyone_leaves: bool,
) -> String {
    let text = reason.text();
    let nick = core.nick(id).cloned().unwrap_or_else(|| "?".into());
    info!("{peer} ({nick}) disconnected: {text}");
    core.disconnect(id, &text, wall_ms(), outbox);
    if everyone_leaves {
        outbox.clear();
    }
    text
}

/// Every server operator: those of `--oper` flags, then those of `--oper-file` (read now).
pub(crate) fn load_opers(config: &Config) -> Result<Vec<crate::core::oper::Oper>, String> {
    let mut opers = config.opers.clone();
    if let Some(path) = &config.oper_file {
        let more = crate::core::oper::read_file(path)
            .map_err(|e| format!("--oper-file {}: {e}", path.display()))?;
        opers.extend(more);
    }
    Ok(opers)
}

/// SIGHUP: reads `--oper-file` again; a file that no longer reads is logged and the operators
/// in force are kept.
pub(crate) fn reload_opers(core: &mut Core, config: &Config) {
    if config.oper_file.is_none() {
        return;
    }
    match load_opers(config) {
        Ok(opers) => {
            info!(
                "SIGHUP: {} server operators from --oper and --oper-file",
                opers.len()
            );
            core.set_opers(opers);
        }
        Err(e) => log::warn!("SIGHUP: {e}; keeping the operators in force"),
    }
}

/// Writes the server bans to `--kline-file` if they changed: to a temporary file renamed over
/// the old one, so a crash never leaves half a file. A few hundred bytes per operator command
/// at most, so the loop may do it in place. A failure is logged; the bans stay in force.
pub(crate) fn save_server_bans(core: &mut Core, config: &Config) {
    let Some(text) = core.take_server_ban_changes() else {
        return;
    };
    let Some(path) = &config.kline_file else {
        return;
    };
    let tmp = path.with_extension("tmp");
    let saved = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    match saved {
        Ok(()) => info!("server bans saved to {}", path.display()),
        Err(e) => log::error!("cannot save server bans to {}: {e}", path.display()),
    }
}

/// Wall-clock time for the core, which reads no clock itself.
pub(crate) fn wall_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
