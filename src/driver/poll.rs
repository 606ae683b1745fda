//! The event loop: one `mio::Poll`, one thread, every socket of the server.
//!
//! The loop moves bytes and time and nothing else: what a line means, when a client must be
//! pinged or closed, how an event looks on the wire, all belong to each connection's
//! [`Session`]. One turn of [`EventLoop::run`]:
//!
//! 1. `poll` sleeps until a socket is ready or the nearest timer is due (zero when work is left
//!    over from the last turn).
//! 2. Readiness is handled: listeners accept until `WouldBlock` or the accept budget; readable
//!    connections are read into one shared scratch buffer (decrypted first if they came
//!    through a TLS door, [`Tls`]; at most `HANDSHAKES_PER_TURN` handshakes advance per
//!    turn, and one not done by `--tls-handshake-timeout` is closed), passed through their byte
//!    [`Transform`](crate::net::transform::Transform), framed into lines and handed to their session, which drives the chat core.
//!    What the core emits is rendered once per render class and the same `Rc` bytes are queued
//!    for every recipient, which is only *marked* for flushing (Redis's deferred writes).
//!    With `--backplane`, the two Redis connections are read too (within their own budget):
//!    what other nodes published goes to the core ([`Core::remote`]) and out the same way,
//!    and the core's cluster notes (subscribe, unsubscribe, publish) are queued on them.
//! 3. Work left over from a budget is resumed, and due timers fire (flood resume, session
//!    deadlines, drain deadline).
//! 4. Closes decided during the turn are applied: never in the middle of a fan-out, so no slab
//!    key is freed (and reused) while events or recipient lists may still name it.
//! 5. Each marked connection is flushed with one `writev` (a TLS one encrypts its queue in one
//!    pass first, and writes the records with one `write`); WRITABLE interest is registered only when the
//!    kernel's buffer is full, and dropped once the queue (and any ciphertext) is empty.
//!    Before them, the backplane writes the turn's pipelined Redis commands, one `write` per
//!    connection, so that the cluster is told of anything before a local client sees it (what
//!    the closes after the clients' writes add is written next turn, at once).
//!
//! SIGHUP reloads the TLS certificate and key (`EventLoop::reload_tls`).
//!
//! Mio's readiness is edge-triggered ("Draining readiness" in mio's `Poll` docs): after an event
//! a socket must be read until `WouldBlock`, or no new event will come. A connection that stops
//! early (its line budget for the turn, or flood control) is therefore remembered and resumed by
//! the loop itself: from the next turn's leftover list, or from a timer. The same holds for a
//! listener that stops at its accept budget.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Token};
use slab::Slab;

use super::listen::{ACCEPTS_PER_TURN, Accepted, Admission, Door, set_send_buffer};
use super::timer::{TimerKind, Timers, Trim, release_free_memory};
use super::{Front, IoModel, MAX_ANSWERS, REFILL_BELOW, Running, depart, new_core, wall_ms};
use crate::backplane::Backplane;
use crate::config::Config;
use crate::core::cluster::{Answer, Shared};
use crate::core::{ClientId, Core, Cursor, Outbox};
use crate::framer::Frame;
use crate::net::connection::{Awaiting, Connection, Flush, Phase};
use crate::net::flood::TokenBucket;
use crate::net::meter::{self, Counted};
use crate::net::outq::{Later, PAGE_COST, Pending};
use crate::net::tls::{self, Input, Tls};
use crate::net::transform::Transform;
use crate::session::{self, Context, Directive, Now, Reason, Rendered, Session, Step, Wake};

/// Tokens at and above this are listeners (`LISTENER_BASE + index`), up to the shutdown
/// waker's and the signals' near `usize::MAX` ([`Front`]); below are slab keys.
const LISTENER_BASE: usize = usize::MAX / 2;

/// Bytes read per `read` call into the shared scratch buffer. Also the most a throttled
/// connection can have stashed beyond one partial line.
const READ_CHUNK: usize = 16 * 1024;
/// `read` calls per connection per turn; with [`LINES_PER_TURN`] this keeps one busy client from
/// starving the others (Redis caps per-event work the same way).
const READS_PER_TURN: usize = 4;
/// Lines handled per connection per turn before the loop moves on to other connections.
const LINES_PER_TURN: usize = 128;
/// Pages rendered per connection per turn, so that one client reading a long answer fast does
/// not starve the others…
const PAGES_PER_TURN: usize = 4;
/// …and for all connections together, so that two hundred clients reading long answers make
/// many short turns, not one long one that every other client waits behind (a page is a few
/// KiB to render: 64 of them are a few milliseconds).
const PAGES_PER_TURN_TOTAL: usize = 64;
/// Connections whose TLS handshake this turn may advance, over all connections: the server's
/// side of a handshake is a signature and a key exchange (a fraction of a millisecond with an
/// ECDSA key, a millisecond or two with RSA-2048), so a burst of a thousand handshakes becomes
/// many short turns between which established clients are served, not one long one.
const HANDSHAKES_PER_TURN: usize = 32;

/// How reading a connection ended for this turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// Everything available was handled: keep reading the socket.
    Go,
    /// The turn's budget ran out; the rest is stashed and resumed next turn.
    Budget,
    /// Out of flood tokens; the rest is stashed and a timer resumes it.
    Throttled,
    /// Too many answers in progress; the rest is stashed and resumed as they are written.
    Awaiting,
    /// The connection is closing: read nothing more.
    Stop,
}

/// A chat server on one `mio::Poll`.
pub struct EventLoop {
    /// The poll itself, with the listeners, the shutdown waker and the signals.
    pub(super) front: Front,
    events: Events,
    config: Config,
    /// What every session reads, built once.
    ctx: Context,
    admission: Admission,
    /// Listeners that stopped at the accept budget, resumed next turn.
    to_accept: Vec<usize>,
    /// Connections this turn may still accept, over all listeners ([`ACCEPTS_PER_TURN`]).
    accepts_left: usize,
    /// Pages of long answers this turn may still render after a flush, over all connections
    /// ([`PAGES_PER_TURN_TOTAL`]).
    pages_left: usize,
    /// TLS handshakes this turn may still advance ([`HANDSHAKES_PER_TURN`]).
    handshakes_left: usize,
    /// What new TLS connections are served with (certificate and key), replaced on SIGHUP;
    /// connections keep the one they started with. `None`: no TLS doors.
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Every connection, keyed by slab key; the key is also its mio token and its `ClientId`.
    conns: Slab<Connection>,
    core: Core,
    /// Events the core emitted and the loop has not delivered yet (reused every time).
    outbox: Outbox,
    /// The one read buffer shared by all connections: complete lines are framed straight out of
    /// it, so a connection only ever holds its unfinished last line.
    scratch: Vec<u8>,
    /// Where a byte transform puts what it changed (telnet input only), reused.
    filtered: Vec<u8>,
    /// Connections with reading left over from their budget: (key, serial).
    to_read: Vec<(usize, u64)>,
    /// Connections with output queued this turn: (key, serial).
    to_flush: Vec<(usize, u64)>,
    /// Connections marked `Closing` this turn.
    to_close: Vec<usize>,
    /// What waits behind a paged answer, for the connections that have one (`Connection::paged`).
    later: HashMap<usize, Later<Counted>>,
    timers: Timers,
    /// Set once shutdown starts: the time by which every connection is closed.
    shutdown_deadline: Option<Instant>,
    next_serial: u64,
    /// The time of the current turn, passed to sessions and the core.
    now: Now,
    /// Hands free heap memory back to the kernel once the loop is quiet.
    trim: Trim,
    /// The cluster backplane, with `--backplane` (its two Redis connections are in `front.poll`).
    backplane: Option<Backplane>,
    /// What other nodes said, read this turn and not yet handed to the core (reused).
    received: Vec<Shared>,
}

impl EventLoop {
    /// Binds every listen address of `config`. Errors name the address that failed.
    pub fn bind(config: Config) -> io::Result<EventLoop> {
        let tls = match &config.tls {
            Some(files) => Some(tls::load(files).map_err(io::Error::other)?),
            None => None,
        };
        let front = Front::bind(&config, |i| Token(LISTENER_BASE + i))?;
        let now = Now {
            at: Instant::now(),
            wall: wall_ms(),
        };
        let mut core = new_core(&config);
        let backplane = match &config.backplane {
            Some(bp) => {
                core.set_cluster(true);
                let mut bp = Backplane::connect(bp.clone(), front.poll.registry())?;
                bp.set_history(config.history);
                core.set_node_number(bp.incarnation());
                Some(bp)
            }
            None => None,
        };
        let mut ctx = Context::new(&config, now.wall);
        if let Some(bp) = &config.backplane {
            // One msgid per room message across nodes.
            ctx.msgid_prefix = crate::protocol::irc::cluster_msgid_prefix(&bp.prefix);
        }
        if let Some(ports) = &mut ctx.tls {
            // The ports bound (with port 0 the kernel picked them).
            let port = |door| front.listeners.addrs(door).first().map(|a| a.port());
            ports.line = port(Door::LINE_TLS);
            ports.irc = port(Door::IRC_TLS);
        }
        Ok(EventLoop {
            front,
            events: Events::with_capacity(1024),
            ctx,
            admission: Admission::new(&config),
            to_accept: Vec::new(),
            accepts_left: ACCEPTS_PER_TURN,
            pages_left: PAGES_PER_TURN_TOTAL,
            handshakes_left: HANDSHAKES_PER_TURN,
            tls,
            conns: Slab::new(),
            core,
            outbox: Outbox::default(),
            scratch: vec![0; READ_CHUNK],
            filtered: Vec::new(),
            to_read: Vec::new(),
            to_flush: Vec::new(),
            to_close: Vec::new(),
            later: HashMap::new(),
            timers: Timers::default(),
            shutdown_deadline: None,
            next_serial: 0,
            now,
            trim: Trim::new(now.at),
            backplane,
            received: Vec::new(),
            config,
        })
    }

    /// Binds on a new thread and runs the loop there; returns once the server is listening.
    /// (An `EventLoop` stays on the thread that made it: its output chunks are `Rc`.)
    /// The same as `driver::spawn(IoModel::Poll, config)`.
    pub fn spawn(config: Config) -> io::Result<Running> {
        super::spawn(IoModel::Poll, config)
    }

    /// Runs until shutdown is requested and every client has been said goodbye to.
    pub fn run(mut self) -> io::Result<()> {
        self.front.log_listening();
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.front.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = self.turn();
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
        // Out of the cluster's registry, so no node has to find this one dead (one write, if
        // the kernel takes it; otherwise the others do find it dead, with no users left).
        if let Some(bp) = &mut self.backplane {
            bp.leave_cluster();
            bp.flush(self.front.poll.registry());
        }
        log::info!("server stopped");
        Ok(())
    }

    /// One turn's work after `poll` returned (steps 2 to 5 of the module doc); returns the
    /// turn's time.
    fn turn(&mut self) -> Instant {
        self.now = Now {
            at: Instant::now(),
            wall: wall_ms(),
        };
        let now = self.now.at;
        self.accepts_left = ACCEPTS_PER_TURN;
        self.pages_left = PAGES_PER_TURN_TOTAL;
        self.handshakes_left = HANDSHAKES_PER_TURN;
        // Work left over from the last turn first (reads cut by a budget, handshakes deferred
        // by theirs), then what is new: under a flood of handshakes, a deferred one is not
        // overtaken turn after turn by newer ones until its deadline.
        self.resume_reads(now);
        self.handle_events(now);
        self.resume_accepts(now);
        self.resume_backplane();
        self.fire_timers(now);
        self.compact_timers();
        self.apply_closes(now);
        // The cluster is told before the clients are: whatever a local client has seen has
        // already left for Redis, so a client that reacts to it (a test, or a person asking a
        // friend on another node to join) cannot overtake it there.
        if let Some(bp) = &mut self.backplane {
            bp.flush(self.front.poll.registry());
            // (A write that found Redis gone: the users are told in this turn's output.)
            self.deliver_remote();
        }
        self.flush_marked();
        self.apply_closes(now);
        self.shed_output(now);
        super::save_server_bans(&mut self.core, &self.config);
        now
    }

    /// Zero when work is left over; otherwise until the nearest timer or accept pause, or
    /// forever.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.to_read.is_empty()
            || !self.to_flush.is_empty()
            || !self.to_close.is_empty()
            || !self.to_accept.is_empty()
            || self
                .backplane
                .as_ref()
                .is_some_and(|b| b.read_again() || b.unwritten())
        {
            return Some(Duration::ZERO);
        }
        let retry = self.backplane.as_ref().and_then(|b| b.retry_at());
        let next = [
            self.timers.next(),
            self.front.listeners.paused_until(),
            retry,
        ]
        .into_iter()
        .flatten()
        .min();
        next.map(|at| at.saturating_duration_since(now))
    }

    fn handle_events(&mut self, now: Instant) {
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        if !events.is_empty() {
            self.trim.busy(now);
        }
        for event in events.iter() {
            match event.token() {
                token if Front::owns(token) => {
                    if let Some(why) = self.front.stop_requested(token) {
                        self.begin_shutdown(now, &why);
                    }
                    if self.front.take_reload() {
                        self.reload_tls();
                        super::reload_opers(&mut self.core, &self.config);
                    }
                }
                token if Backplane::owns(token) => {
                    if let Some(bp) = &mut self.backplane {
                        let registry = self.front.poll.registry();
                        // A refused reconnect shows as an error: reading reports it.
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        bp.ready(token, readable, registry, &mut self.received);
                    }
                    self.deliver_remote();
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

    /// Accepts from listener `index` until nobody waits or the turn's budget (shared by all
    /// listeners) is spent; a listener stopped by the budget is resumed on a later turn (no new
    /// edge would come for it).
    fn accept(&mut self, index: usize, now: Instant) {
        while self.accepts_left > 0 {
            match self.front.listeners.next(index, now) {
                Accepted::Conn(stream, peer, door) => {
                    self.accepts_left -= 1;
                    self.admit(stream, peer, door, now);
                }
                Accepted::Done => return,
            }
        }
        if !self.to_accept.contains(&index) {
            self.to_accept.push(index);
        }
    }

    /// Listeners stopped by an earlier turn's budget, or all of them after an accept pause.
    fn resume_accepts(&mut self, now: Instant) {
        if self.front.listeners.resume(now) {
            self.to_accept = (0..self.front.listeners.len()).collect();
        }
        if self.accepts_left == 0 || self.to_accept.is_empty() {
            return;
        }
        for index in std::mem::take(&mut self.to_accept) {
            self.accept(index, now);
        }
    }

    /// Admits a new connection (sockets still in their TLS handshake count against the limits
    /// like any other) and greets it, or, through a TLS door, starts its handshake: its session
    /// begins once that is done ([`EventLoop::established`]), or the connection is closed at
    /// `--tls-handshake-timeout`.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, door: Door, now: Instant) {
        let (open, closing) = (self.conns.len(), self.shutdown_deadline.is_some());
        let protocol = door.protocol;
        // A TLS client would take a refusal in clear for garbage: it is only closed.
        let admitted = if door.tls {
            self.admission
                .admit(&mut io::sink(), peer, protocol, open, closing, now)
        } else {
            self.admission
                .admit(&mut stream, peer, protocol, open, closing, now)
        };
        if !admitted {
            return;
        }
        let tls = match (&self.tls, door.tls) {
            (Some(config), true) => match Tls::new(config.clone()) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    warn!("{peer}: cannot start TLS: {e}");
                    self.admission.left(peer.ip());
                    return;
                }
            },
            _ => None,
        };
        // Chat lines are small and latency matters: never wait for Nagle to coalesce them (the
        // loop already coalesces a turn's output into one write).
        let _ = stream.set_nodelay(true);
        set_send_buffer(&stream, self.config.send_buffer);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            self.front
                .poll
                .registry()
                .register(&mut stream, Token(key), Interest::READABLE)
        {
            warn!("{peer}: cannot register: {e}");
            self.admission.left(peer.ip());
            return;
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        let bucket = TokenBucket::new(self.config.flood_burst, now);
        let session = Session::new(&self.ctx, protocol, ClientId(key), peer, now);
        let handshaking = tls.is_some();
        entry.insert(Connection::new(stream, tls, serial, bucket, session));
        self.trim.arm(now, &mut self.timers);
        if handshaking {
            let deadline = now + self.config.tls_handshake_timeout;
            self.timers
                .push(deadline, TimerKind::Handshake, key, serial);
        } else {
            self.welcome(key);
        }
        self.arm_session(key);
    }

    /// Starts connection `key`'s session.
    fn welcome(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let step = conn
            .session
            .welcome(&mut self.core, self.now, &mut self.outbox);
        self.apply(key, step);
    }

    /// Connection `key` finished its TLS handshake: its session learns it is secure, and
    /// begins.
    fn established(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if let Some(tls) = &conn.tls {
            debug!("{}: TLS established ({})", conn.peer(), tls.describe());
        }
        conn.session.secured();
        self.welcome(key);
    }

    /// SIGHUP: reads the certificate and key again. New handshakes use the new pair; open
    /// connections keep theirs. A pair that cannot be used is refused and the old one kept.
    fn reload_tls(&mut self) {
        let Some(files) = &self.config.tls else {
            return;
        };
        match tls::load(files) {
            Ok(config) => {
                self.tls = Some(config);
                log::info!(
                    "SIGHUP: TLS certificate {} and key {} reloaded; new connections use them",
                    files.cert.display(),
                    files.key.display()
                );
            }
            Err(e) => warn!("SIGHUP: {e}; keeping the certificate and key in use"),
        }
    }

    // ---- reading ---------------------------------------------------------------------------

    /// Reads a connection until `WouldBlock`, its budget, flood control or its end.
    fn read(&mut self, key: usize, now: Instant) {
        let handshaking = match self.conns.get_mut(key) {
            Some(c) if c.is_open() && !c.throttled && c.awaiting == Awaiting::Nothing => {
                c.is_handshaking()
            }
            _ => return,
        };
        if handshaking {
            if self.handshakes_left == 0 {
                // Handshakes have had their share of this turn: on the next one.
                let conn = &mut self.conns[key];
                if !conn.read_listed {
                    conn.read_listed = true;
                    self.to_read.push((key, conn.serial));
                }
                return;
            }
            self.handshakes_left -= 1;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut filtered = std::mem::take(&mut self.filtered);
        let mut lines = LINES_PER_TURN;
        // Lines stashed by an earlier turn come before anything new.
        let mut flow = self.handle_lines(key, &[], &mut lines, now);
        let (mut reads, mut fed) = (0, false);
        while flow == Flow::Go {
            if reads == READS_PER_TURN {
                flow = Flow::Budget;
                break;
            }
            let conn = &mut self.conns[key];
            let input = conn.read_input(&mut scratch);
            if conn.tls.as_mut().is_some_and(|t| t.newly_established()) {
                self.established(key);
                if !self.conns[key].is_open() {
                    break;
                }
            }
            let conn = &mut self.conns[key];
            match input {
                Ok(Input::End) => {
                    self.end_of_stream(key);
                    break;
                }
                Ok(Input::Nothing) => reads += 1,
                Ok(Input::Bytes(n)) => {
                    reads += 1;
                    let mut replies = Vec::new();
                    let data = conn
                        .transform
                        .inbound(&scratch[..n], &mut filtered, &mut replies);
                    let answered = !replies.is_empty();
                    if answered {
                        conn.bucket.charge(Transform::reply_cost(&replies));
                        self.send(key, replies);
                    }
                    fed |= !data.is_empty();
                    flow = self.handle_lines(key, data, &mut lines, now);
                    // Input that was only negotiation frames no line, so no line waited for
                    // a token: the answers' cost must still stop the reading.
                    if answered && flow == Flow::Go && !self.has_token(key, now) {
                        self.pause(key, now);
                        flow = Flow::Throttled;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if tls::is_protocol_error(&e) => {
                    debug!("{}: TLS failed: {e}", conn.peer());
                    self.mark_close(key, Reason::Tls(e.to_string().into()));
                    break;
                }
                Err(e) => {
                    debug!("{}: read failed: {e}", conn.peer());
                    self.mark_close(key, Reason::Lost);
                    break;
                }
            }
        }
        self.scratch = scratch;
        self.filtered = filtered;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // Handshake messages (or a TLS alert, a key update) to send back.
        if conn.is_open() && conn.tls.as_ref().is_some_and(|t| t.wants_write()) {
            self.mark_flush(key);
        }
        let conn = &mut self.conns[key];
        if flow == Flow::Budget && !conn.read_listed {
            conn.read_listed = true;
            self.to_read.push((key, conn.serial));
        }
        if conn.is_open() {
            let partial = conn.framer.buffered() > 0 && !conn.framer.has_backlog();
            conn.session.note_partial(&self.ctx, partial, fed, now);
            self.arm_session(key);
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
                self.pause(key, now);
                return Flow::Throttled;
            }
            if conn.paged
                && self
                    .later
                    .get(&key)
                    .is_some_and(|l| l.pages() >= MAX_ANSWERS)
            {
                conn.framer.stash(input);
                conn.awaiting = Awaiting::Pages;
                return Flow::Awaiting;
            }
            if conn.session.input_paused() || self.core.holds_input(ClientId(key)) {
                // The rest waits, framed or not, until the session (or, for a join asked of
                // the cluster, the core) has its answer.
                conn.framer.stash(input);
                conn.awaiting = Awaiting::Session;
                return Flow::Awaiting;
            }
            let max_line = conn.session.max_line(&self.ctx);
            let Some(frame) = conn.framer.next_frame(&mut input, max_line) else {
                return Flow::Go;
            };
            conn.bucket.take();
            *lines -= 1;
            // The frame borrows the framer (or the scratch input); the session is another field.
            let step =
                conn.session
                    .on_frame(&self.ctx, &mut self.core, frame, self.now, &mut self.outbox);
            conn.bucket.charge(step.extra_cost);
            self.apply(key, step);
        }
    }

    /// Whether connection `key` may go on reading (flood control is off, or it has a token).
    fn has_token(&mut self, key: usize, now: Instant) -> bool {
        let (burst, rate) = (self.config.flood_burst, self.config.flood_rate);
        rate == 0.0 || self.conns[key].bucket.ready(now, burst, rate)
    }

    /// Connection `key` is out of flood tokens: stop reading it until a timer says it has one.
    fn pause(&mut self, key: usize, now: Instant) {
        let conn = &mut self.conns[key];
        conn.throttled = true;
        let rate = self.config.flood_rate;
        let at = conn
            .bucket
            .throttle(conn.peer(), now, rate, &mut conn.flooded);
        self.timers
            .push(at, TimerKind::FloodResume, key, conn.serial);
    }

    /// The peer closed its side: its last unterminated line still counts, then it leaves
    /// (after getting what is queued for it, in case it only half-closed).
    fn end_of_stream(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let max_line = conn.session.max_line(&self.ctx);
        if let Some(last) = conn.framer.take_partial(max_line) {
            let step = conn.session.on_frame(
                &self.ctx,
                &mut self.core,
                Frame::Line(&last),
                self.now,
                &mut self.outbox,
            );
            self.apply(key, step);
        }
        self.mark_close(key, Reason::Closed);
    }

    /// Carries out what the session said: its direct reply first, then the core's events, then
    /// a departure.
    fn apply(&mut self, key: usize, step: Step) {
        if !step.reply.is_empty() {
            self.send(key, step.reply);
        }
        self.deliver();
        if let Some(reason) = step.leave {
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

    // ---- the cluster -----------------------------------------------------------------------

    /// Reads what the backplane left unread at its budget on an earlier turn, and reconnects to
    /// Redis when it is time.
    fn resume_backplane(&mut self) {
        if let Some(bp) = &mut self.backplane {
            let registry = self.front.poll.registry();
            bp.resume(registry, &mut self.received);
            bp.tick(self.now.at, registry);
        }
        self.deliver_remote();
    }

    /// Hands what other nodes published to the core, which tells the local members; tells
    /// every user when the link to them went down or came back.
    fn deliver_remote(&mut self) {
        if let Some(up) = self.backplane.as_mut().and_then(|b| b.take_link_change()) {
            self.core.tell_cluster_link(up, &mut self.outbox);
            self.deliver();
        }
        let most = self.ctx.max_line.max(crate::protocol::irc::MAX_LINE);
        // A room's shared history comes before the messages held while it was read (they are
        // newer); every other answer after what was received (a join's answer is checked
        // against the member changes that came before it).
        let answers = self.backplane.as_mut().map(|b| b.take_answers());
        let (histories, others): (Vec<Answer>, Vec<Answer>) = answers
            .into_iter()
            .flatten()
            .partition(|a| matches!(a, Answer::History { .. }));
        for mut answer in histories {
            if let Answer::History { entries, .. } = &mut answer {
                // (What no node would have published, as below.)
                entries.retain(|e| e.text.len() <= most);
            }
            self.core.answer(answer, self.now.wall, &mut self.outbox);
            self.deliver();
        }
        let mut received = std::mem::take(&mut self.received);
        for shared in received.drain(..) {
            // A text longer than any line this node accepts is not one a node published (each
            // checks its clients' lines): what else published it could send megabytes to every
            // member, whole to line clients.
            let text = match &shared {
                Shared::Message(m) => Some(&m.text),
                Shared::Private(m) => Some(&m.text),
                _ => None,
            };
            if text.is_some_and(|t| t.len() > most) {
                continue;
            }
            self.core.remote(shared, self.now.wall, &mut self.outbox);
            self.deliver();
        }
        self.received = received;
        for answer in others {
            let client = answer.client();
            self.core.answer(answer, self.now.wall, &mut self.outbox);
            self.deliver();
            if let Some(client) = client {
                self.read_held(client.0);
            }
        }
    }

    // ---- output ----------------------------------------------------------------------------

    /// Renders each event in the outbox once per render class among its recipients and queues
    /// the same bytes for all recipients of that class.
    fn deliver(&mut self) {
        if self.outbox.has_notes() {
            match &mut self.backplane {
                Some(bp) => self.outbox.drain_notes().for_each(|n| bp.note(n)),
                None => drop(self.outbox.drain_notes()),
            }
        }
        if self.outbox.is_empty() {
            return;
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        let mut decided = Vec::new();
        for (event, to) in outbox.iter() {
            match session::directive(event) {
                Directive::Render => {}
                // Handed to the session after the pass (its welcome goes out after what this
                // pass queued, such as its own arrival told to watchers).
                Directive::Registration(refused) => {
                    decided.extend(to.iter().map(|id| (id.0, refused.cloned())));
                    continue;
                }
                // Closed after the pass, as every close.
                Directive::Close(reason) => {
                    to.iter()
                        .for_each(|id| self.mark_close(id.0, reason.clone()));
                    continue;
                }
                Directive::Page(cursor) => {
                    for id in to {
                        self.start_page(id.0, cursor.clone());
                    }
                    continue;
                }
            }
            let mut rendered: Rendered<Counted> = Rendered::new();
            for id in to {
                // Nothing is rendered for a recipient that is already closing.
                let Some(conn) = self.conns.get(id.0).filter(|c| c.is_open()) else {
                    continue;
                };
                let bytes = rendered.get(conn.session.render_class(), || {
                    let me = self.core.nick(*id).map_or("*", |n| &**n);
                    session::render(
                        conn.session.render_class(),
                        event,
                        &self.ctx,
                        me,
                        self.now.wall,
                    )
                });
                self.enqueue(id.0, bytes);
            }
        }
        outbox.clear();
        self.outbox = outbox;
        for (key, refused) in decided {
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.is_open()) else {
                continue;
            };
            let step = conn
                .session
                .registration(&self.ctx, &mut self.core, refused.as_ref());
            self.apply(key, step);
            self.read_held(key);
        }
    }

    /// Reads connection `key`'s held lines again, from where they were left, if neither its
    /// session nor the core holds them any more.
    fn read_held(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && conn.awaiting == Awaiting::Session
            && !conn.session.input_paused()
            && !self.core.holds_input(ClientId(key))
        {
            conn.awaiting = Awaiting::Nothing;
            if !conn.read_listed {
                conn.read_listed = true;
                self.to_read.push((key, conn.serial));
            }
        }
    }

    /// Queues bytes meant for one connection only.
    fn send(&mut self, key: usize, bytes: Vec<u8>) {
        self.enqueue(key, bytes.into());
    }

    fn enqueue(&mut self, key: usize, bytes: Counted) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.is_open() {
            return;
        }
        let later = if conn.paged {
            self.later.get_mut(&key)
        } else {
            None
        };
        match conn.queue(bytes, later, self.config.max_sendq) {
            Ok(()) => self.mark_flush(key),
            Err(reason) => self.mark_close(key, reason),
        }
    }

    /// A paged answer for connection `key`: it waits behind whatever is already waiting, and
    /// its first page is rendered at once if the queue is low (so a short answer goes out in
    /// the same turn, like any other reply).
    fn start_page(&mut self, key: usize, cursor: Cursor) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.is_open()) else {
            return;
        };
        let later = self.later.entry(key).or_default();
        // As `Connection::queue` counts it: under TLS, the ciphertext pending too.
        let held = conn.held() + later.len();
        if later.pages() > 0 && held + PAGE_COST > self.config.max_sendq {
            warn!(
                "{}: send queue over --max-sendq {} bytes, disconnecting",
                conn.peer(),
                self.config.max_sendq
            );
            return self.mark_close(key, Reason::SendQueue);
        }
        conn.paged = true;
        later.push(Pending::Page(cursor));
        self.refill(key);
        self.mark_flush(key);
    }

    /// Moves what waits behind paged answers into connection `key`'s queue, rendering pages,
    /// until the queue holds [`REFILL_BELOW`] bytes or nothing waits any more.
    fn refill(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(later) = self.later.get_mut(&key) else {
            conn.paged = false;
            return;
        };
        let low = REFILL_BELOW.min(self.config.max_sendq / 2).max(1);
        while conn.out.len() < low {
            match later.pop() {
                None => break,
                Some(Pending::Bytes(bytes)) => conn.out.push(bytes),
                Some(Pending::Page(mut cursor)) => {
                    // A long answer is work: each page after the first (which the command
                    // paid for) costs a flood token, so a client that asks for long listings
                    // over and over is slowed down like any flooder.
                    let cursor_started = cursor.started();
                    if cursor_started {
                        conn.bucket.charge(1);
                    }
                    let class = conn.session.render_class();
                    let me = self.core.nick(ClientId(key)).map_or("*", |n| &**n);
                    let (bytes, done) = session::render_page(
                        class,
                        &self.core,
                        &mut cursor,
                        &self.ctx,
                        me,
                        self.now.wall,
                    );
                    conn.out.push(bytes.into());
                    if !done {
                        later.resume(cursor);
                    }
                    if cursor_started {
                        conn.session.note_alive(self.now.at);
                    }
                }
            }
        }
        let pages = later.pages();
        if later.is_empty() {
            conn.paged = false;
            self.later.remove(&key);
        }
        if conn.awaiting == Awaiting::Pages && pages < MAX_ANSWERS {
            // Its commands are read again, from where they were left.
            conn.awaiting = Awaiting::Nothing;
            if !conn.read_listed {
                conn.read_listed = true;
                self.to_read.push((key, conn.serial));
            }
        }
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
            let mut pages = 0;
            let mut flushed = conn.flush();
            // The socket took everything: the next pages of a paged answer, while it takes them.
            while flushed == (Flush::Done { waiting: false }) && self.conns[key].paged {
                if pages == PAGES_PER_TURN || self.pages_left == 0 {
                    flushed = Flush::Again;
                    break;
                }
                pages += 1;
                self.pages_left -= 1;
                self.refill(key);
                flushed = self.conns[key].flush();
            }
            let conn = &mut self.conns[key];
            let want_write = match flushed {
                Flush::Done { waiting } => waiting,
                Flush::Again => {
                    self.mark_flush(key);
                    continue;
                }
                Flush::Failed if draining => {
                    self.remove(key);
                    continue;
                }
                Flush::Failed => {
                    self.mark_close(key, Reason::Lost);
                    continue;
                }
            };
            if !want_write && draining && !conn.paged {
                self.remove(key);
                continue;
            }
            if want_write != conn.wants_write {
                let interest = if want_write {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                let registry = self.front.poll.registry();
                if let Err(e) = registry.reregister(&mut conn.stream, Token(key), interest) {
                    warn!("{}: cannot reregister: {e}", conn.peer());
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

    /// Decides to close a connection; the close itself waits for [`EventLoop::apply_closes`].
    fn mark_close(&mut self, key: usize, reason: Reason) {
        if let Some(conn) = self.conns.get_mut(key)
            && conn.is_open()
        {
            conn.phase = Phase::Closing(reason);
            self.to_close.push(key);
        }
    }

    /// Takes the connections marked this turn out of the chat core (telling their rooms why),
    /// then lets them drain their output with a farewell line, or removes them at once.
    fn apply_closes(&mut self, now: Instant) {
        while let Some(key) = self.to_close.pop() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let Phase::Closing(reason) = std::mem::replace(&mut conn.phase, Phase::Draining) else {
                continue;
            };
            let (peer, serial) = (conn.peer(), conn.serial);
            self.admission.closing(peer.ip(), &reason, now);
            let everyone = self.shutdown_deadline.is_some();
            let text = depart(
                &mut self.core,
                &mut self.outbox,
                ClientId(key),
                peer,
                &reason,
                everyone,
            );
            self.deliver();
            let conn = &mut self.conns[key];
            if reason.drains() {
                // The farewell comes last: after the rest of a paged answer too, which goes on
                // being paged while the connection drains (a client that asked and half-closed
                // gets its whole answer), within the drain deadline.
                let farewell = conn.session.farewell(&text).into();
                match self.later.get_mut(&key).filter(|_| conn.paged) {
                    Some(later) => later.push(Pending::Bytes(farewell)),
                    None => conn.out.push(farewell),
                }
                self.mark_flush(key);
                let deadline = now + self.config.shutdown_grace;
                self.timers
                    .push(deadline, TimerKind::DrainDeadline, key, serial);
            } else {
                self.remove(key);
            }
        }
    }

    /// `--max-output-total`: while all queues together hold more than the budget (see
    /// [`meter`]), disconnect the clients holding the most, biggest first, as Redis does for
    /// `maxmemory-clients`. Runs after the turn's writes, so a client is judged on what its
    /// socket did not take. O(clients log clients), only when over the budget.
    fn shed_output(&mut self, now: Instant) {
        let max = self.config.max_output_total;
        if max == 0 || meter::held() <= max {
            return;
        }
        let later = &self.later;
        // Ranked by what closing each would give back: the bytes only it holds (a broadcast
        // that others hold too stays), plus its references; then by all it holds.
        let mut holders: Vec<(usize, usize, usize, u64)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(key, c)| {
                let behind = later.get(&key);
                let chunks = c
                    .out
                    .chunks()
                    .chain(behind.into_iter().flat_map(|l| l.chunks()));
                let frees = chunks.map(Counted::frees).sum();
                let held = c.held() + behind.map_or(0, |l| l.len());
                (frees, held, key, c.serial)
            })
            .filter(|&(_, held, ..)| held > 0)
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        for (_, held, key, serial) in holders {
            let total = meter::held();
            if total <= max {
                break;
            }
            // An earlier close in this loop may have closed this one too (its departure pushed
            // a room-mate over --max-sendq, or a socket failed).
            let Some(conn) = self
                .conns
                .get(key)
                .filter(|c| c.serial == serial && c.is_open())
            else {
                continue;
            };
            warn!(
                "{}: holds {held} bytes of output, the most of any client, while all clients \
                 hold {total}, over --max-output-total {max}: disconnecting",
                conn.peer()
            );
            self.mark_close(key, Reason::OutputTotal);
            self.apply_closes(now);
        }
    }

    /// Forgets a connection for good; dropping the stream closes the socket.
    fn remove(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        self.later.remove(&key);
        let _ = self.front.poll.registry().deregister(&mut conn.stream);
        self.trim.arm(Instant::now(), &mut self.timers);
        self.admission.left(conn.peer().ip());
        if conn.phase != Phase::Draining {
            // Only at the shutdown deadline: the core still has it.
            self.core.disconnect(
                ClientId(key),
                "server shutting down",
                wall_ms(),
                &mut self.outbox,
            );
            self.outbox.clear();
        }
        debug!("{}: closed", conn.peer());
    }

    fn begin_shutdown(&mut self, now: Instant, why: &str) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        log::info!(
            "shutting down ({why}): saying goodbye to {} clients",
            self.conns.len()
        );
        let front = &mut self.front;
        front.listeners.close(front.poll.registry());
        self.to_accept.clear();
        self.shutdown_deadline = Some(now + self.config.shutdown_grace);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.mark_close(key, Reason::Shutdown);
        }
    }

    // ---- timers ----------------------------------------------------------------------------

    /// Makes sure the timer heap wakes connection `key` by its session's next deadline. One
    /// entry is live per connection (`armed`); a deadline that moved later is left to the
    /// earlier entry, which finds nothing due and re-arms (so chatty clients cost no pushes).
    fn arm_session(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(at) = conn.session.next_deadline(&self.ctx) else {
            return;
        };
        // Rounded up to a whole millisecond, so it never fires before the deadline.
        let tick = self.ctx.tick_after(at);
        if conn.armed.is_none_or(|armed| tick < armed) {
            conn.armed = Some(tick);
            let at = self.ctx.instant(tick);
            self.timers.push(at, TimerKind::Session, key, conn.serial);
        }
    }

    /// A session's deadline: carry out what it asks, then arm the next one.
    fn on_session_deadline(&mut self, key: usize, now: Instant) {
        let conn = &mut self.conns[key];
        conn.armed = None;
        match conn.session.on_deadline(&self.ctx, now) {
            Wake::Rearm => {}
            Wake::Send(bytes) => self.send(key, bytes),
            Wake::Close(reason) => return self.mark_close(key, reason),
            Wake::CompleteLine => {
                // Only when nothing else waits in the framer: otherwise the line is not idle,
                // just queued behind flood control, and is framed in turn.
                if !conn.throttled && conn.framer.end_partial() {
                    self.read(key, now);
                }
            }
        }
        self.arm_session(key);
    }

    /// The loop is quiet: tables that grew for a crowd that has left give their memory back, so
    /// that a server returns to its size once clients have come and gone (a slab keeps its
    /// largest size, a hash table its largest capacity). O(size of the tables), and only once
    /// the loop has been quiet for a while. Whether the core still holds state that expires
    /// (held nicks).
    fn shrink_tables(&mut self) -> bool {
        self.conns.shrink_to_fit();
        self.later.shrink_to_fit();
        self.to_read.shrink_to_fit();
        self.to_flush.shrink_to_fit();
        self.to_close.shrink_to_fit();
        self.timers.shrink_to_fit();
        self.admission.shrink_to_fit();
        self.core.shrink_to_fit(self.now.wall)
    }

    /// Drops timer entries nothing waits for any more (see [`Timers::compact`]).
    fn compact_timers(&mut self) {
        let (conns, ctx) = (&self.conns, &self.ctx);
        self.timers
            .compact(conns.len(), |at, kind, key, serial| match kind {
                TimerKind::Trim => true,
                _ => conns.get(key).is_some_and(|c| {
                    c.serial == serial
                        && (kind != TimerKind::Session || c.armed == Some(ctx.tick(at)))
                }),
            });
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, kind, key, serial)) = self.timers.pop_due(now) {
            if kind == TimerKind::Trim {
                if self.trim.fire(now, &mut self.timers) {
                    let holding = self.shrink_tables();
                    release_free_memory();
                    if holding {
                        // Nick holds expire later: trim again then.
                        self.trim.arm(now, &mut self.timers);
                    }
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
                TimerKind::Session if conn.is_open() && conn.armed == Some(self.ctx.tick(at)) => {
                    self.on_session_deadline(key, now)
                }
                TimerKind::DrainDeadline if conn.phase == Phase::Draining => self.remove(key),
                TimerKind::Handshake if conn.is_open() && conn.is_handshaking() => {
                    debug!(
                        "{}: no TLS handshake within --tls-handshake-timeout {:?}",
                        conn.peer(),
                        self.config.tls_handshake_timeout
                    );
                    self.mark_close(key, Reason::HandshakeTimeout);
                }
                _ => {}
            }
        }
    }
}

/// The loop driven a step at a time, for what no test over sockets alone can reach.
#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read as _, Write as _};
    use std::net::TcpStream as StdStream;

    /// One turn of the loop, waiting at most 10 ms for events.
    fn turn(ev: &mut EventLoop) {
        let _ = ev
            .front
            .poll
            .poll(&mut ev.events, Some(Duration::from_millis(10)));
        ev.turn();
    }

    fn drain(s: &mut StdStream) {
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("{e}"),
            }
        }
    }

    pub(super) fn shrink_rcvbuf(s: &StdStream, bytes: i32) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(s);
        // SAFETY: a socket option on a socket we own, with a correctly sized value.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &bytes as *const i32 as *const libc::c_void,
                size_of::<i32>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }

    /// shed_output computes its list of holders first, then disconnects them one by one; a
    /// disconnect's QUIT can push another listed holder over --max-sendq, and apply_closes
    /// removes it from the slab; the next iteration then indexes `self.conns[key]` (in the
    /// warn!) for a removed key and the loop thread panics.
    #[test]
    fn shed_output_survives_a_holder_removed_by_an_earlier_shed() {
        log::set_max_level(log::LevelFilter::Warn);
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            irc_listen: vec![],
            max_connects_per_ip: 0,
            flood_rate: 0.0,
            max_rooms: 1000,
            max_sendq: 4096,
            send_buffer: Some(4096),
            max_output_total: 0,
            ..Config::default()
        };
        let mut ev = EventLoop::bind(config).unwrap();
        let addr = ev.front.listeners.addrs(Door::LINE)[0];
        let mut alice = StdStream::connect(addr).unwrap();
        alice.set_nonblocking(true).unwrap();
        for _ in 0..5 {
            turn(&mut ev);
            drain(&mut alice);
        }
        let topic = "t".repeat(300);
        for i in 0..300 {
            let script = format!("/join #r{i:03}\n/topic {topic}\n");
            alice.write_all(script.as_bytes()).unwrap();
            for _ in 0..2 {
                turn(&mut ev);
                drain(&mut alice);
            }
        }
        let mut askers: Vec<StdStream> = (0..3)
            .map(|_| {
                let s = StdStream::connect(addr).unwrap();
                shrink_rcvbuf(&s, 4096);
                s
            })
            .collect();
        for _ in 0..10 {
            turn(&mut ev);
            drain(&mut alice);
        }
        for s in &mut askers {
            s.write_all(b"/rooms\n").unwrap();
        }
        for _ in 0..50 {
            turn(&mut ev);
            drain(&mut alice);
        }
        // Now the budget is passed: shed (this panicked on a holder closed by an earlier one).
        ev.config.max_output_total = 1;
        let now = Instant::now();
        ev.shed_output(now);
        assert!(
            ev.conns.get(0).is_some_and(|c| c.is_open()),
            "alice, who read everything, is kept"
        );
        let open = ev.conns.iter().filter(|(_, c)| c.is_open()).count();
        assert_eq!(open, 1, "the askers, holding pages, are gone");
    }
}

/// The TLS handshake budget, a turn at a time.
#[cfg(test)]
mod tls_tests {
    use super::*;
    use std::io::Write as _;
    use std::net::TcpStream as StdStream;
    use std::sync::Arc;

    /// A loop with one line-protocol TLS door, its address, a client configuration that trusts
    /// anything, and the directory of its certificate (for the caller to remove).
    fn tls_loop(
        tag: &str,
    ) -> (
        EventLoop,
        SocketAddr,
        Arc<rustls::ClientConfig>,
        std::path::PathBuf,
    ) {
        log::set_max_level(log::LevelFilter::Warn);
        let dir = std::env::temp_dir().join(format!("pollchat-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names = vec!["localhost".to_string()];
        let (cert, key) = crate::net::tls::self_signed(&names).unwrap();
        let files = crate::config::TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        let config = Config {
            listen: vec![],
            irc_listen: vec![],
            tls: Some(files),
            tls_listen: vec!["127.0.0.1:0".parse().unwrap()],
            irc_tls_listen: vec![],
            max_connects_per_ip: 0,
            ..Config::default()
        };
        let ev = EventLoop::bind(config).unwrap();
        let addr = ev.front.listeners.addrs(Door::LINE_TLS)[0];
        let client_config = trust_anything();
        (ev, addr, client_config, dir)
    }

    /// A client configuration that trusts any certificate (the tests' own).
    fn trust_anything() -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
            .with_no_client_auth(),
        )
    }

    /// A socket that has sent its ClientHello and waits.
    fn hello(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> StdStream {
        let mut s = StdStream::connect(addr).unwrap();
        let name = "localhost".try_into().unwrap();
        let mut c = rustls::ClientConnection::new(config.clone(), name).unwrap();
        let mut bytes = Vec::new();
        c.write_tls(&mut bytes).unwrap();
        s.write_all(&bytes).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    /// How many of `clients` have the server's answer to their ClientHello.
    fn answered(clients: &[StdStream]) -> usize {
        let mut byte = [0u8; 1];
        clients
            .iter()
            .filter(|s| s.peek(&mut byte).is_ok_and(|n| n > 0))
            .count()
    }

    /// Forty ClientHellos wait at once: one turn advances `HANDSHAKES_PER_TURN` of them, the
    /// rest are listed for the next turn (no readiness edge would come for them again), which
    /// advances them.
    #[test]
    fn a_burst_of_handshakes_is_spread_over_turns() {
        let (mut ev, addr, client_config, dir) = tls_loop("hs-budget");
        let n = HANDSHAKES_PER_TURN + 8;
        let clients: Vec<StdStream> = (0..n).map(|_| hello(addr, &client_config)).collect();
        let (mut turns, mut before, mut spent) = (0, 0, false);
        while answered(&clients) < n {
            turn(&mut ev);
            turns += 1;
            assert!(
                turns < 100,
                "only {} of {n} handshakes advanced",
                answered(&clients)
            );
            let now = answered(&clients);
            assert!(
                now - before <= HANDSHAKES_PER_TURN,
                "{} handshakes advanced in one turn",
                now - before
            );
            if ev.handshakes_left == 0 {
                // The budget is spent: the rest wait, listed for the next turn.
                spent = true;
                assert!(
                    !ev.to_read.is_empty(),
                    "a spent budget leaves connections listed"
                );
            }
            before = now;
        }
        assert!(spent, "forty ClientHellos at once spend a turn's budget");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Handshakes deferred by a spent budget go first on the next turn: a steady flood of new
    /// ClientHellos does not push them back turn after turn until their deadline.
    #[test]
    fn deferred_handshakes_are_not_overtaken_by_newer_ones() {
        let (mut ev, addr, client_config, dir) = tls_loop("hs-fair");
        let first: Vec<StdStream> = (0..HANDSHAKES_PER_TURN + 8)
            .map(|_| hello(addr, &client_config))
            .collect();
        let mut turns = 0;
        while ev.conns.len() < first.len() {
            turn(&mut ev);
            turns += 1;
            assert!(turns < 100, "the first burst was never accepted");
        }
        // A second burst, a whole budget of it, arrives while the first is being served.
        let second: Vec<StdStream> = (0..HANDSHAKES_PER_TURN)
            .map(|_| hello(addr, &client_config))
            .collect();
        // Until the first burst has spent a budget with some of it still waiting, and the
        // second is accepted: its ClientHellos are now as ready as the deferred ones.
        while ev.handshakes_left > 0 || ev.conns.len() < first.len() + second.len() {
            turn(&mut ev);
            turns += 1;
            assert!(turns < 100, "the budget was never spent");
        }
        let waiting = first.len() - answered(&first);
        assert!(waiting > 0, "the first burst was served in one turn");
        turn(&mut ev);
        assert_eq!(
            answered(&first),
            first.len(),
            "the {waiting} deferred handshakes go before the new ones"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `--max-sendq` counts the plaintext queued *and* the ciphertext pending (README, TLS
    /// limits). A second paged answer asked for by a TLS client that has stopped reading is
    /// judged the same way: `start_page` looked at the plaintext queue only, so a client whose
    /// held output was over the limit in ciphertext was given another answer.
    #[test]
    fn a_paged_answer_counts_the_ciphertext_pending_against_max_sendq() {
        use std::io::{ErrorKind, Read as _};
        log::set_max_level(log::LevelFilter::Warn);
        let dir = std::env::temp_dir().join(format!("pollchat-page-sendq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = crate::net::tls::self_signed(&["localhost".to_string()]).unwrap();
        let files = crate::config::TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            irc_listen: vec![],
            tls: Some(files),
            tls_listen: vec!["127.0.0.1:0".parse().unwrap()],
            irc_tls_listen: vec![],
            max_connects_per_ip: 0,
            flood_rate: 0.0,
            max_rooms: 1000,
            send_buffer: Some(4096),
            max_output_total: 0,
            ..Config::default()
        };
        let mut ev = EventLoop::bind(config).unwrap();
        let drain = |s: &mut StdStream| {
            let mut buf = [0u8; 65536];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        };
        // Rooms enough for a `/rooms` answer of many pages.
        let mut alice = StdStream::connect(ev.front.listeners.addrs(Door::LINE)[0]).unwrap();
        alice.set_nonblocking(true).unwrap();
        let topic = "t".repeat(300);
        for i in 0..300 {
            let script = format!("/join #r{i:03}\n/topic {topic}\n");
            alice.write_all(script.as_bytes()).unwrap();
            if i % 20 == 19 {
                for _ in 0..3 {
                    turn(&mut ev);
                    drain(&mut alice);
                }
            }
        }
        for _ in 0..5 {
            turn(&mut ev);
            drain(&mut alice);
        }
        // A TLS client, its handshake driven by hand, with a small receive buffer.
        let mut sock = StdStream::connect(ev.front.listeners.addrs(Door::LINE_TLS)[0]).unwrap();
        super::tests::shrink_rcvbuf(&sock, 4096);
        sock.set_nonblocking(true).unwrap();
        let client_config = trust_anything();
        let mut c =
            rustls::ClientConnection::new(client_config, "localhost".try_into().unwrap()).unwrap();
        let pump = |c: &mut rustls::ClientConnection, sock: &mut StdStream| {
            while c.wants_write() {
                c.write_tls(sock).unwrap();
            }
            match c.read_tls(sock) {
                Ok(_) => {
                    c.process_new_packets().unwrap();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        };
        for _ in 0..50 {
            pump(&mut c, &mut sock);
            turn(&mut ev);
            if !c.is_handshaking() {
                break;
            }
        }
        assert!(!c.is_handshaking());
        for _ in 0..5 {
            pump(&mut c, &mut sock);
            turn(&mut ev);
        }
        let key = ev
            .conns
            .iter()
            .find(|(_, conn)| conn.tls.is_some())
            .map(|(key, _)| key)
            .unwrap();
        // It asks for the room list, then never reads again: paging stops at a full socket,
        // with ciphertext pending.
        c.writer().write_all(b"/rooms\n").unwrap();
        while c.wants_write() {
            c.write_tls(&mut sock).unwrap();
        }
        for _ in 0..20 {
            turn(&mut ev);
        }
        let conn = &ev.conns[key];
        let pending = conn.tls.as_ref().unwrap().pending();
        let later = &ev.later[&key];
        assert!(conn.paged && later.pages() > 0, "the answer is still paged");
        assert!(pending > 2, "ciphertext is pending: {pending}");
        // What it holds is over the limit only with the ciphertext counted.
        let plaintext = conn.out.len() + later.len();
        ev.config.max_sendq = plaintext + PAGE_COST + pending / 2;
        ev.start_page(key, Cursor::rooms(ClientId(key)));
        assert_eq!(
            ev.conns[key].phase,
            Phase::Closing(Reason::SendQueue),
            "plaintext {plaintext} and ciphertext {pending} held, --max-sendq {}",
            ev.config.max_sendq
        );
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn turn(ev: &mut EventLoop) {
        let _ = ev
            .front
            .poll
            .poll(&mut ev.events, Some(Duration::from_millis(10)));
        ev.turn();
    }

    #[derive(Debug)]
    struct NoVerify;

    impl rustls::client::danger::ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}
