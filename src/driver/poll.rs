//! The event loop: one `mio::Poll`, one thread, every socket of the server.
//!
//! One turn of [`Server::run`]:
//!
//! 1. `poll` sleeps until a socket is ready or the nearest timer is due (zero when work is left
//!    over from the last turn).
//! 2. Readiness is handled: listeners accept until `WouldBlock`; readable connections are read
//!    into one shared scratch buffer, framed into lines, parsed, and handed to the chat core. What
//!    the core emits is rendered once per event and the same `Rc` bytes are queued for every
//!    recipient, which is only *marked* for flushing (Redis's deferred writes).
//! 3. Work left over from a budget is resumed, and due timers fire (flood resume, idle timeout,
//!    drain deadline).
//! 4. Closes decided during the turn are applied: never in the middle of a fan-out, so no slab
//!    key is freed (and reused) while events or recipient lists may still name it.
//! 5. Each marked connection is flushed with one `writev`; WRITABLE interest is registered only
//!    when the kernel's buffer is full, and dropped once the queue is empty.
//!
//! Mio's readiness is edge-triggered ("Draining readiness" in mio's `Poll` docs): after an event
//! a socket must be read until `WouldBlock`, or no new event will come. A connection that stops
//! early (its line budget for the turn, or flood control) is therefore remembered and resumed by
//! the loop itself: from the next turn's leftover list, or from a timer.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::timer::{TimerKind, Timers};
use super::{IoModel, is_fd_shortage, new_core, reject, wall_ms};
// Shared by every I/O model now; re-exported where they were.
pub use super::{Running, ShutdownHandle};
use crate::config::Config;
use crate::core::{ClientId, Core, Millis, Outbox};
use crate::framer::Frame;
use crate::net::connection::{Connection, Phase};
use crate::net::flood::TokenBucket;
use crate::net::outq::Flushed;
use crate::protocol::{irc, line, telnet};
use crate::session::irc as irc_session;
use crate::session::{self, Proto, Protocol, Reason, Step};

/// Tokens at and above this are listeners (`LISTENER_BASE + index`); below are slab keys.
const LISTENER_BASE: usize = usize::MAX / 2;
const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// Bytes read per `read` call into the shared scratch buffer. Also the most a throttled
/// connection can have stashed beyond one partial line.
const READ_CHUNK: usize = 16 * 1024;
/// `read` calls per connection per turn; with [`LINES_PER_TURN`] this keeps one busy client from
/// starving the others (Redis caps per-event work the same way).
const READS_PER_TURN: usize = 4;
/// Lines handled per connection per turn before the loop moves on to other connections.
const LINES_PER_TURN: usize = 128;
/// How long after clients come and go, and after the last socket event, free heap memory is
/// handed back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// Pause before accepting again when no file descriptor can be had even for the reserve.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How reading a connection ended for this turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// Everything available was handled: keep reading the socket.
    Go,
    /// The turn's budget ran out; the rest is stashed and resumed next turn.
    Budget,
    /// Out of flood tokens; the rest is stashed and a timer resumes it.
    Throttled,
    /// The connection is closing: read nothing more.
    Stop,
}

/// A chat server on one `mio::Poll`.
pub struct Server {
    poll: Poll,
    events: Events,
    config: Config,
    /// Each listener with the protocol its clients speak.
    listeners: Vec<(TcpListener, Protocol)>,
    /// Every connection, keyed by slab key; the key is also its mio token and its `ClientId`.
    conns: Slab<Connection>,
    core: Core,
    /// Events the core emitted and the loop has not delivered yet (reused every time).
    outbox: Outbox,
    /// The one read buffer shared by all connections: complete lines are framed straight out of
    /// it, so a connection only ever holds its unfinished last line.
    scratch: Vec<u8>,
    /// Connections with reading left over from their budget: (key, serial).
    to_read: Vec<(usize, u64)>,
    /// Connections with output queued this turn: (key, serial).
    to_flush: Vec<(usize, u64)>,
    /// Connections marked `Closing` this turn.
    to_close: Vec<usize>,
    timers: Timers,
    /// Open connections per peer address, for `--max-per-ip`.
    per_ip: HashMap<IpAddr, usize>,
    /// A descriptor held in reserve: on EMFILE it is released for just long enough to accept the
    /// waiting client and tell it the server is full (the libev/Redis trick), instead of leaving
    /// it in the backlog where it would wake the loop again and again.
    reserve_fd: Option<File>,
    /// Accepting is paused after an fd shortage; a timer resumes it.
    accept_paused: bool,
    signals: Option<Signals>,
    waker: Arc<Waker>,
    shutdown_requested: Arc<AtomicBool>,
    /// Set once shutdown starts: the time by which every connection is closed.
    shutdown_deadline: Option<Instant>,
    next_serial: u64,
    /// Wall-clock time of the current turn, passed to the core.
    now_ms: Millis,
    /// When the server started (IRC's 003).
    started_ms: Millis,
    /// A Trim timer is pending.
    trim_armed: bool,
    /// The last turn that had socket events.
    last_busy: Instant,
    /// The timer heap's size after its last compaction.
    compacted_len: usize,
}

impl Server {
    /// Binds every listen address of `config`. Errors name the address that failed.
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        let line = config.listen.iter().map(|a| (*a, Protocol::Line));
        let irc = config.irc_listen.iter().map(|a| (*a, Protocol::Irc));
        for (i, (addr, protocol)) in line.chain(irc).enumerate() {
            let mut listener = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            deepen_backlog(&listener);
            poll.registry().register(
                &mut listener,
                Token(LISTENER_BASE + i),
                Interest::READABLE,
            )?;
            listeners.push((listener, protocol));
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            poll,
            events: Events::with_capacity(1024),
            listeners,
            conns: Slab::new(),
            core: new_core(&config),
            outbox: Outbox::default(),
            scratch: vec![0; READ_CHUNK],
            to_read: Vec::new(),
            to_flush: Vec::new(),
            to_close: Vec::new(),
            timers: Timers::default(),
            per_ip: HashMap::new(),
            reserve_fd: File::open("/dev/null").ok(),
            accept_paused: false,
            signals: None,
            waker,
            shutdown_requested: Arc::new(AtomicBool::new(false)),
            shutdown_deadline: None,
            next_serial: 0,
            now_ms: wall_ms(),
            started_ms: wall_ms(),
            trim_armed: false,
            last_busy: Instant::now(),
            compacted_len: 0,
            config,
        })
    }

    /// Binds on a new thread and runs the loop there; returns once the server is listening.
    /// (A `Server` stays on the thread that made it: its output chunks are `Rc`.)
    /// The same as `driver::spawn(IoModel::Poll, config)`.
    pub fn spawn(config: Config) -> io::Result<Running> {
        super::spawn(IoModel::Poll, config)
    }

    /// The line-protocol addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound(Protocol::Line)
    }

    /// The IRC addresses actually bound.
    pub fn irc_addrs(&self) -> Vec<SocketAddr> {
        self.bound(Protocol::Irc)
    }

    fn bound(&self, protocol: Protocol) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|(_, p)| *p == protocol)
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            waker: self.waker.clone(),
            requested: self.shutdown_requested.clone(),
        }
    }

    /// Shuts down gracefully on SIGINT and SIGTERM.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.signals = Some(super::shutdown_signals(self.poll.registry(), SIGNALS)?);
        Ok(())
    }

    /// Runs until shutdown is requested and every client has been said goodbye to.
    pub fn run(mut self) -> io::Result<()> {
        for addr in self.local_addrs() {
            info!("listening on {addr}");
        }
        for addr in self.irc_addrs() {
            info!("listening for IRC on {addr}");
        }
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.now_ms = wall_ms();
            self.handle_events(now);
            self.resume_reads(now);
            self.fire_timers(now);
            self.compact_timers();
            self.apply_closes(now);
            self.flush_marked();
            self.apply_closes(now);
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() {
                    break;
                }
                if now >= deadline {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    keys.into_iter().for_each(|k| self.remove(k));
                    break;
                }
            }
        }
        info!("server stopped");
        Ok(())
    }

    /// Zero when work is left over; otherwise until the nearest timer, or forever.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.to_read.is_empty() || !self.to_flush.is_empty() || !self.to_close.is_empty() {
            return Some(Duration::ZERO);
        }
        self.timers
            .next()
            .map(|at| at.saturating_duration_since(now))
    }

    fn handle_events(&mut self, now: Instant) {
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        if !events.is_empty() {
            self.last_busy = now;
        }
        for event in events.iter() {
            match event.token() {
                WAKER => {
                    if self.shutdown_requested.load(Ordering::SeqCst) {
                        self.begin_shutdown(now, "shutdown requested");
                    }
                }
                SIGNALS => {
                    let received: Vec<i32> = self
                        .signals
                        .as_mut()
                        .map(|s| s.pending().collect())
                        .unwrap_or_default();
                    if let Some(signal) = received.first() {
                        self.begin_shutdown(now, &format!("signal {signal}"));
                    }
                }
                Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE, now),
                Token(key) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.read(key, now);
                    }
                    if event.is_writable() {
                        self.mark_flush(key);
                    }
                }
            }
        }
        self.events = events;
    }

    // ---- accepting -------------------------------------------------------------------------

    fn accept(&mut self, index: usize, now: Instant) {
        while !self.accept_paused {
            let Some((listener, protocol)) = self.listeners.get(index) else {
                return;
            };
            let protocol = *protocol;
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, protocol, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_fd_shortage(&e) => {
                    if !self.on_fd_shortage(index, now) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.pause_accepting(now);
                }
            }
        }
    }

    /// Out of descriptors: use the reserve to turn the next waiting client away with a reason,
    /// or, without one, stop accepting for a moment instead of spinning on EMFILE (which
    /// `accept` returns even when no client is waiting). Returns whether to go on accepting.
    fn on_fd_shortage(&mut self, index: usize, now: Instant) -> bool {
        if self.reserve_fd.take().is_none() {
            warn!("out of file descriptors; pausing accepts for {ACCEPT_BACKOFF:?}");
            self.pause_accepting(now);
            return false;
        }
        let (listener, protocol) = &self.listeners[index];
        let more = match listener.accept() {
            Ok((stream, peer)) => {
                warn!("{peer} refused: out of file descriptors");
                reject(stream, *protocol, "server full");
                true
            }
            // Nobody is waiting (WouldBlock), or the client already left.
            Err(_) => false,
        };
        self.reserve_fd = File::open("/dev/null").ok();
        if self.reserve_fd.is_none() {
            warn!("out of file descriptors; pausing accepts for {ACCEPT_BACKOFF:?}");
            self.pause_accepting(now);
            return false;
        }
        more
    }

    fn pause_accepting(&mut self, now: Instant) {
        self.accept_paused = true;
        self.timers
            .push(now + ACCEPT_BACKOFF, TimerKind::AcceptResume, 0, 0);
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, protocol: Protocol, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return reject(stream, protocol, "server shutting down");
        }
        if self.conns.len() >= self.config.max_clients {
            warn!(
                "{peer} refused: server full ({} clients, --max-clients)",
                self.conns.len()
            );
            return reject(stream, protocol, "server full");
        }
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if self.config.max_per_ip > 0 && from_ip >= self.config.max_per_ip {
            warn!("{peer} refused: {from_ip} connections from its address (--max-per-ip)");
            return reject(stream, protocol, "too many connections from your address");
        }
        // Chat lines are small and latency matters: never wait for Nagle to coalesce them (the
        // loop already coalesces a turn's output into one write).
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            warn!("{peer}: cannot register: {e}");
            return;
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        let bucket = TokenBucket::new(self.config.flood_burst, now);
        let proto = Proto::new(protocol);
        entry.insert(Connection::new(stream, peer, serial, bucket, proto, now));
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.arm_trim(now);
        match protocol {
            Protocol::Line => {
                let (greeting, nick) = session::welcome(
                    &mut self.core,
                    ClientId(key),
                    &session::host_of(peer.ip()),
                    self.now_ms,
                    &mut self.outbox,
                );
                info!("{peer} connected as {nick}");
                self.send(key, greeting);
                self.deliver();
                if let Some(idle) = self.config.idle_timeout {
                    self.timers.push(now + idle, TimerKind::Idle, key, serial);
                }
            }
            Protocol::Irc => {
                info!("{peer} connected (IRC)");
                let register_by = now + self.config.irc_register_timeout;
                self.timers
                    .push(register_by, TimerKind::Register, key, serial);
                let ping_at = now + self.config.irc_ping_after;
                self.timers.push(ping_at, TimerKind::Idle, key, serial);
            }
        }
    }

    // ---- reading ---------------------------------------------------------------------------

    /// Reads a connection until `WouldBlock`, its budget, flood control or its end.
    fn read(&mut self, key: usize, now: Instant) {
        match self.conns.get(key) {
            Some(c) if c.is_open() && !c.throttled => {}
            _ => return,
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut lines = LINES_PER_TURN;
        // Lines stashed by an earlier turn come before anything new.
        let mut flow = self.handle_lines(key, &[], &mut lines, now);
        let mut reads = 0;
        while flow == Flow::Go {
            if reads == READS_PER_TURN {
                flow = Flow::Budget;
                break;
            }
            let conn = &mut self.conns[key];
            match conn.stream.read(&mut scratch) {
                Ok(0) => {
                    self.end_of_stream(key);
                    break;
                }
                Ok(n) => {
                    reads += 1;
                    let data = &scratch[..n];
                    flow = if matches!(conn.proto, Proto::Line) && data.contains(&telnet::IAC) {
                        let (mut text, mut replies) = (Vec::with_capacity(n), Vec::new());
                        telnet::filter(data, &mut text, &mut replies);
                        if !replies.is_empty() {
                            self.send(key, replies);
                        }
                        self.handle_lines(key, &text, &mut lines, now)
                    } else {
                        self.handle_lines(key, data, &mut lines, now)
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{}: read failed: {e}", conn.peer);
                    self.mark_close(key, Reason::Lost);
                    break;
                }
            }
        }
        self.scratch = scratch;
        if flow == Flow::Budget {
            let conn = &mut self.conns[key];
            if !conn.read_listed {
                conn.read_listed = true;
                self.to_read.push((key, conn.serial));
            }
        }
    }

    /// Frames and handles the lines in `input` (after any stashed ones) until the input is used
    /// up or the connection must stop; what is left is stashed in its framer.
    fn handle_lines(
        &mut self,
        key: usize,
        mut input: &[u8],
        lines: &mut usize,
        now: Instant,
    ) -> Flow {
        let (burst, rate) = (self.config.flood_burst, self.config.flood_rate);
        loop {
            let conn = &mut self.conns[key];
            let max_line = conn.max_line(self.config.max_line);
            if !conn.is_open() {
                return Flow::Stop;
            }
            if input.is_empty() && !conn.framer.has_backlog() {
                return Flow::Go;
            }
            if *lines == 0 {
                conn.framer.stash(input);
                return Flow::Budget;
            }
            if rate > 0.0 && !conn.bucket.ready(now, burst, rate) {
                conn.framer.stash(input);
                conn.throttled = true;
                let at = conn.bucket.ready_at(rate);
                self.timers
                    .push(at, TimerKind::FloodResume, key, conn.serial);
                // Logged at info the first time a client hits the limit, then at debug: a client
                // that floods on purpose would otherwise flood the log too.
                let level = if conn.flooded {
                    log::Level::Debug
                } else {
                    log::Level::Info
                };
                conn.flooded = true;
                log::log!(
                    level,
                    "{}: over --flood-rate, reading paused for {:?}",
                    conn.peer,
                    at - now
                );
                return Flow::Throttled;
            }
            let Some(frame) = conn.framer.next_frame(&mut input, max_line) else {
                return Flow::Go;
            };
            conn.bucket.take();
            conn.last_heard = now;
            *lines -= 1;
            // The frame borrows the framer (or the scratch input); the session needs only the
            // connection's protocol state, the core and the outbox: other fields.
            let (proto, peer) = (&mut conn.proto, conn.peer);
            let outcome = on_frame(
                proto,
                &mut self.core,
                &mut self.outbox,
                &self.config,
                self.started_ms,
                self.now_ms,
                key,
                peer,
                frame,
            );
            self.apply(key, outcome);
        }
    }

    /// The peer closed its side: its last unterminated line still counts, then it leaves
    /// (after getting what is queued for it, in case it only half-closed).
    fn end_of_stream(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let max_line = conn.max_line(self.config.max_line);
        if let Some(last) = conn.framer.take_partial(max_line) {
            let (proto, peer) = (&mut conn.proto, conn.peer);
            let frame = Frame::Line(&last);
            let outcome = on_frame(
                proto,
                &mut self.core,
                &mut self.outbox,
                &self.config,
                self.started_ms,
                self.now_ms,
                key,
                peer,
                frame,
            );
            self.apply(key, outcome);
        }
        self.mark_close(key, Reason::Closed);
    }

    /// Carries out what the session said about one line: its direct reply first, then the
    /// core's events, then a departure.
    fn apply(&mut self, key: usize, (reply, leave): (Vec<u8>, Option<Reason>)) {
        if !reply.is_empty() {
            self.send(key, reply);
        }
        self.deliver();
        if let Some(reason) = leave {
            self.mark_close(key, reason);
        }
    }

    fn resume_reads(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.to_read);
        for &(key, serial) in &list {
            match self.conns.get_mut(key) {
                Some(c) if c.serial == serial => c.read_listed = false,
                _ => continue,
            }
            self.read(key, now);
        }
        list.clear();
        if self.to_read.is_empty() {
            self.to_read = list;
        }
    }

    // ---- output ----------------------------------------------------------------------------

    /// Renders each event in the outbox once per protocol variant (line, IRC, IRC with
    /// server-time) and queues the same bytes for all recipients of that variant.
    fn deliver(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        for (event, to) in outbox.iter() {
            let mut rendered: [Option<Rc<[u8]>>; 3] = [None, None, None];
            for id in to {
                let Some(conn) = self.conns.get(id.0) else {
                    continue;
                };
                let variant = match &conn.proto {
                    Proto::Line => 0,
                    Proto::Irc(s) if s.caps.server_time => 2,
                    Proto::Irc(_) => 1,
                };
                let bytes = rendered[variant].get_or_insert_with(|| {
                    let bytes = match variant {
                        0 => line::render(event),
                        // Only single-recipient events use the recipient's nick.
                        v => {
                            let me = self.core.nick(*id).map_or("*", |n| &**n);
                            irc::render(event, &self.config.server_name, me, v == 2, self.now_ms)
                        }
                    };
                    bytes.into()
                });
                let bytes = bytes.clone();
                self.enqueue(id.0, bytes);
            }
        }
        outbox.clear();
        self.outbox = outbox;
    }

    /// Queues bytes meant for one connection only.
    fn send(&mut self, key: usize, bytes: Vec<u8>) {
        self.enqueue(key, bytes.into());
    }

    fn enqueue(&mut self, key: usize, bytes: Rc<[u8]>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.is_open() {
            return;
        }
        // A client is a slow consumer when what it has not taken yet, plus this chunk, is over
        // the limit. A chunk into an empty queue always goes in: one reply bigger than the limit
        // (a long /who or LIST) says nothing about how the client reads.
        let over = |queued: usize| queued > 0 && queued + bytes.len() > self.config.max_sendq;
        if over(conn.out.len()) {
            // Over the limit only counts once the client has had its chance: write what its
            // socket takes now (a burst from many senders within one turn is no reason to
            // disconnect a client that reads), and judge what is left.
            match conn.out.flush_to(&mut conn.stream) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    self.mark_close(key, Reason::Lost);
                    return;
                }
            }
            if over(conn.out.len()) {
                self.over_sendq(key);
                return;
            }
        }
        conn.out.push(bytes);
        self.mark_flush(key);
    }

    fn over_sendq(&mut self, key: usize) {
        warn!(
            "{}: send queue over --max-sendq {} bytes, disconnecting",
            self.conns[key].peer, self.config.max_sendq
        );
        self.mark_close(key, Reason::SendQueue);
    }

    fn mark_flush(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.flush_listed
        {
            conn.flush_listed = true;
            self.to_flush.push((key, conn.serial));
        }
    }

    /// One vectored write for each connection marked this turn.
    fn flush_marked(&mut self) {
        let mut list = std::mem::take(&mut self.to_flush);
        for &(key, serial) in &list {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            conn.flush_listed = false;
            if let Phase::Closing(_) = conn.phase {
                continue;
            }
            let draining = conn.phase == Phase::Draining;
            let want_write = match conn.out.flush_to(&mut conn.stream) {
                Ok(Flushed::All) => false,
                Ok(Flushed::Short) => true,
                Ok(Flushed::More) => {
                    // Not blocked, just capped: go on next turn, no WRITABLE edge will come.
                    self.mark_flush(key);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.mark_flush(key);
                    continue;
                }
                Err(e) => {
                    debug!("{}: write failed: {e}", conn.peer);
                    if draining {
                        self.remove(key);
                    } else {
                        self.mark_close(key, Reason::Lost);
                    }
                    continue;
                }
            };
            if !want_write && draining {
                self.remove(key);
                continue;
            }
            if want_write != conn.wants_write {
                let interest = if want_write {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                if let Err(e) =
                    self.poll
                        .registry()
                        .reregister(&mut conn.stream, Token(key), interest)
                {
                    warn!("{}: cannot reregister: {e}", conn.peer);
                }
                conn.wants_write = want_write;
            }
        }
        list.clear();
        if self.to_flush.is_empty() {
            self.to_flush = list;
        }
    }

    // ---- closing ---------------------------------------------------------------------------

    /// Decides to close a connection; the close itself waits for [`Server::apply_closes`].
    fn mark_close(&mut self, key: usize, reason: Reason) {
        if let Some(conn) = self.conns.get_mut(key)
            && conn.is_open()
        {
            conn.phase = Phase::Closing(reason);
            self.to_close.push(key);
        }
    }

    /// Takes the connections marked this turn out of the chat core (telling their rooms why),
    /// then lets them drain their output with a last `BYE`, or removes them at once.
    fn apply_closes(&mut self, now: Instant) {
        while let Some(key) = self.to_close.pop() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let Phase::Closing(reason) = std::mem::replace(&mut conn.phase, Phase::Draining) else {
                continue;
            };
            let (peer, serial) = (conn.peer, conn.serial);
            let text = reason.text();
            let nick = self
                .core
                .nick(ClientId(key))
                .cloned()
                .unwrap_or_else(|| "?".into());
            info!("{peer} ({nick}) disconnected: {text}");
            self.core.disconnect(ClientId(key), &text, &mut self.outbox);
            if self.shutdown_deadline.is_some() {
                // Everyone is leaving; nobody needs to be told who else did.
                self.outbox.clear();
            } else {
                self.deliver();
            }
            if reason.drains() {
                let conn = &mut self.conns[key];
                let bye = match conn.proto {
                    Proto::Line => line::render_bye(&text),
                    Proto::Irc(_) => irc::render_close(&text),
                };
                conn.out.push(bye.into());
                self.mark_flush(key);
                let deadline = now + self.config.shutdown_grace;
                self.timers
                    .push(deadline, TimerKind::DrainDeadline, key, serial);
            } else {
                self.remove(key);
            }
        }
    }

    /// Forgets a connection for good; dropping the stream closes the socket.
    fn remove(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.arm_trim(Instant::now());
        if let Some(n) = self.per_ip.get_mut(&conn.peer.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&conn.peer.ip());
            }
        }
        if conn.phase != Phase::Draining {
            // Only at the shutdown deadline: the core still has it.
            self.core
                .disconnect(ClientId(key), "server shutting down", &mut self.outbox);
            self.outbox.clear();
        }
        debug!("{}: closed", conn.peer);
    }

    fn begin_shutdown(&mut self, now: Instant, why: &str) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "shutting down ({why}): saying goodbye to {} clients",
            self.conns.len()
        );
        for (mut listener, _) in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.shutdown_deadline = Some(now + self.config.shutdown_grace);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.mark_close(key, Reason::Shutdown);
        }
    }

    // ---- timers ----------------------------------------------------------------------------

    /// A silent connection: the line protocol closes it after `--idle-timeout`; IRC first sends
    /// a PING and closes it only if nothing at all comes back. Re-arms itself while the client is
    /// active, so one heap entry per connection suffices.
    fn check_silence(&mut self, key: usize, now: Instant) {
        let conn = &mut self.conns[key];
        let serial = conn.serial;
        let next = match &mut conn.proto {
            Proto::Line => {
                let idle = self.config.idle_timeout.unwrap_or(Duration::MAX);
                if conn.last_heard + idle <= now {
                    info!("{}: silent for {idle:?} (--idle-timeout)", conn.peer);
                    self.mark_close(key, Reason::Idle);
                    return;
                }
                conn.last_heard + idle
            }
            Proto::Irc(session) => {
                let (ping_after, timeout) =
                    (self.config.irc_ping_after, self.config.irc_ping_timeout);
                if conn.last_heard + timeout <= now {
                    info!("{}: no answer to PING", conn.peer);
                    self.mark_close(key, Reason::PingTimeout);
                    return;
                }
                if conn.last_heard + ping_after <= now {
                    if !session.pinged {
                        session.pinged = true;
                        let ping = format!("PING :{}\r\n", self.config.server_name);
                        self.send(key, ping.into_bytes());
                    }
                    self.conns[key].last_heard + timeout
                } else {
                    conn.last_heard + ping_after
                }
            }
        };
        self.timers.push(next, TimerKind::Idle, key, serial);
    }

    /// Keeps the timer heap proportional to the number of connections.
    /// Keeps the timer heap proportional to the number of connections. Live connections can
    /// have a few timers each, so after a compaction the next one waits until the heap has
    /// doubled again: never a scan per turn that removes nothing.
    fn compact_timers(&mut self) {
        let threshold = (2 * self.conns.len() + 1024).max(self.compacted_len * 2);
        if self.timers.len() > threshold {
            let conns = &self.conns;
            self.timers.retain(|kind, key, serial| {
                matches!(kind, TimerKind::AcceptResume | TimerKind::Trim)
                    || conns.get(key).is_some_and(|c| c.serial == serial)
            });
            self.compacted_len = self.timers.len();
        }
    }

    /// Schedules handing free memory back to the kernel a little later, once: after clients
    /// come and go (bursts of output and state are freed then). An idle server is never woken
    /// for it.
    fn arm_trim(&mut self, now: Instant) {
        if !self.trim_armed {
            self.trim_armed = true;
            self.timers.push(now + TRIM_EVERY, TimerKind::Trim, 0, 0);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((kind, key, serial)) = self.timers.pop_due(now) {
            if kind == TimerKind::AcceptResume {
                self.accept_paused = false;
                for index in 0..self.listeners.len() {
                    self.accept(index, now);
                }
                continue;
            }
            if kind == TimerKind::Trim {
                // Walking the heap takes milliseconds: never while clients are chatting, where
                // it would show as a latency spike. A busy server keeps its memory anyway.
                if now.saturating_duration_since(self.last_busy) < TRIM_EVERY {
                    let quiet_at = self.last_busy + TRIM_EVERY;
                    self.timers.push(quiet_at, TimerKind::Trim, 0, 0);
                } else {
                    self.trim_armed = false;
                    release_free_memory();
                }
                continue;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            match kind {
                TimerKind::FloodResume => {
                    conn.throttled = false;
                    self.read(key, now);
                }
                TimerKind::Idle if conn.is_open() => self.check_silence(key, now),
                TimerKind::Register if conn.is_open() => {
                    if matches!(&conn.proto, Proto::Irc(s) if !s.registered) {
                        info!("{}: did not register in time", conn.peer);
                        self.mark_close(key, Reason::RegistrationTimeout);
                    }
                }
                TimerKind::DrainDeadline if conn.phase == Phase::Draining => self.remove(key),
                _ => {}
            }
        }
    }
}

/// Hands one frame to the connection's protocol session; returns the direct reply and whether
/// the client leaves.
#[allow(clippy::too_many_arguments)]
fn on_frame(
    proto: &mut Proto,
    core: &mut Core,
    outbox: &mut Outbox,
    config: &Config,
    started_ms: Millis,
    now_ms: Millis,
    key: usize,
    peer: SocketAddr,
    frame: Frame<'_>,
) -> (Vec<u8>, Option<Reason>) {
    let id = ClientId(key);
    match proto {
        Proto::Line => match session::on_frame(core, id, frame, config.max_line, now_ms, outbox) {
            Step::Done => (Vec::new(), None),
            Step::Reply(bytes) => (bytes, None),
            Step::Leave(reason) => (Vec::new(), Some(reason)),
        },
        Proto::Irc(irc) => {
            let ctx = irc_session::Context {
                server: &config.server_name,
                password: config.irc_password.as_deref(),
                motd: config.motd.as_deref(),
                started: started_ms,
                max_rooms: config.max_rooms,
            };
            let step = irc.on_frame(core, id, frame, peer.ip(), &ctx, now_ms, outbox);
            (step.reply, step.leave)
        }
    }
}

/// Connections the kernel may hold for us before we accept them.
const LISTEN_BACKLOG: i32 = 4096;

/// mio (like std) listens with a backlog of 128. A burst of connects larger than that within one
/// loop turn overflows it, and the kernel drops SYNs: those clients wait a full second for the
/// retransmit. Calling `listen` again on a listening socket just sets the new backlog (Linux caps
/// it at `net.core.somaxconn`).
pub(crate) fn deepen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen on a descriptor we own, which is already a bound, listening socket.
    unsafe {
        libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG);
    }
}

/// Gives freed heap pages back to the kernel. Bursts (a flood of joins, a big fan-out) leave
/// free memory scattered through the heap, which glibc's allocator keeps mapped; on a small host
/// the resident size should come back down once the burst is over. `malloc_trim` walks the heap
/// (milliseconds for tens of MiB), so it runs on a slow timer, never per event.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}
