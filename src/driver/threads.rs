//! The threaded baselines: blocking std sockets, threads, and the chat core behind one `Mutex`.
//!
//! They exist so that the event loop can be measured against threads with nothing else changed:
//! the same framer, session glue, protocol, core, limits, disconnect policy and log lines as
//! [`super::poll`]. Two variants share this file because they differ only in how output leaves:
//!
//! - **`--io threads`**: per connection, a *reader* thread (blocking `read`, framing, flood
//!   control, the core under the lock) and a *writer* thread fed by a [`SendChannel`], bounded in
//!   bytes by `--max-sendq`. A broadcast is rendered once under the lock into an `Arc<[u8]>` and
//!   pushed to each recipient's channel (a pointer and a count bump each); a push that would pass
//!   `--max-sendq` disconnects that recipient ("send queue exceeded"), exactly as in the loop.
//!   Nobody ever blocks on another client's socket.
//! - **`--io threads-direct`**: one thread per connection, which writes each rendered event
//!   straight into every recipient's socket *while holding the core's lock*. This is the design
//!   of the sketch pollchat replaced, done without its bugs, and it is here to show head-of-line
//!   blocking: one recipient that stops reading stalls every sender and, through the lock, every
//!   client (even accepting and the start of a shutdown wait for the lock). Each write may wait
//!   at most `--write-timeout` (SO_SNDTIMEO) for the kernel to take a byte; then that recipient
//!   is disconnected with the reason "send queue exceeded" (its kernel socket buffer *is* its
//!   send queue) and everyone else carries on.
//!
//! Closes are decided during a pass and applied after it (`State::apply_closes`), as in the
//! loop: never in the middle of a fan-out. A client id is never reused, so a late line or write
//! from a closed connection finds nothing and does nothing.
//!
//! **Stopping.** The accept thread (the one that calls [`Server::run`]) is a tiny `mio::Poll`
//! over the non-blocking listeners, a [`Waker`] for the [`ShutdownHandle`] and, with
//! [`Server::handle_signals`], SIGINT/SIGTERM through `signal-hook-mio`, as in the loop. So
//! accepting stops at once on shutdown, without a self-connect trick and without polling a flag.
//! Accepted sockets are switched back to blocking for their threads. On shutdown every client is
//! closed with `BYE server shutting down`; writers deliver what is queued, and whatever is not
//! written after `shutdown_grace` is cut off by shutting the sockets down (which wakes a thread
//! blocked in `read` or `write`). Readers and writers then exit on their own.
//!
//! **Timers live in the threads**: a reader waits for its flood bucket with a sleep (it holds no
//! lock meanwhile, and not reading is the back-pressure) and notices `--idle-timeout` through a
//! read timeout set to the time left. A writer's blocking write has a timeout of
//! `shutdown_grace`, so that a drain deadline is noticed even by a write that started before it;
//! that timeout only fires while a peer is not reading.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use super::poll::deepen_backlog;
use super::{ShutdownHandle, is_fd_shortage, new_core, reject, wall_ms};
use crate::config::Config;
use crate::core::{ClientId, Core, Outbox};
use crate::framer::{Frame, LineFramer};
use crate::net::flood::TokenBucket;
use crate::net::outq::OutQueue;
use crate::net::sendq::{Chunk, SendChannel, Take};
use crate::protocol::{line, telnet};
use crate::session::{self, Protocol, Reason, Step};

const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// Bytes per `read` into a reader thread's buffer (its own: threads share nothing to read into).
const READ_CHUNK: usize = 8 * 1024;
/// Stack reserved per thread. Only the pages a thread touches become resident (a few KiB for a
/// reader or writer), but the reservation is address space and, under strict overcommit, commit
/// charge: std's 2 MiB default would reserve 4 MiB per client. 256 KiB leaves ample room for an
/// unoptimised build.
const STACK_SIZE: usize = 256 * 1024;
/// Pause before accepting again when no file descriptor can be had even for the reserve.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A threaded chat server: an accept thread, and threads per connection.
pub struct Server {
    /// The accept thread's poller: listeners, the shutdown waker, signals.
    poll: Poll,
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    signals: Option<Signals>,
    waker: Arc<Waker>,
    shutdown_requested: Arc<AtomicBool>,
    /// A descriptor held in reserve for EMFILE, as in the loop: released for just long enough to
    /// accept the waiting client and tell it the server is full.
    reserve_fd: Option<File>,
    /// Accepting is paused after an fd shortage until then.
    paused_until: Option<Instant>,
}

/// What every thread of the server shares.
struct Shared {
    config: Config,
    /// threads-direct: no writer threads, the fan-out writes into the sockets.
    direct: bool,
    /// The chat core and the connection table, behind the one lock.
    state: Mutex<State>,
    /// Signalled whenever a closed connection's writer is done, for the shutdown wait.
    gone: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked holding the lock leaves the state as consistent as any other
        // pass does between lines: carry on rather than take every client down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes connection `id` for `reason` if it is still open; `log` says why, once.
    fn close(&self, id: usize, reason: Reason, log: impl FnOnce()) {
        let mut st = self.lock();
        if st.is_open(id) {
            log();
            st.mark_close(id, reason);
            st.apply_closes();
        }
    }
}

/// Everything guarded by the lock.
struct State {
    core: Core,
    /// Events the core emitted and not delivered yet (reused every time).
    outbox: Outbox,
    /// Admitted connections not closed yet, by id. The id is also the `ClientId`, and it is never
    /// reused, so nothing stale can reach a newer connection.
    clients: HashMap<usize, Client>,
    /// Closed connections whose writer thread is still delivering their last output.
    draining: HashMap<usize, Arc<Conn>>,
    /// Open connections per peer address, for `--max-per-ip`.
    per_ip: HashMap<IpAddr, usize>,
    /// Connections marked closing during the current pass.
    to_close: Vec<usize>,
    next_id: usize,
    /// Set once shutdown starts: the time by which every connection is closed.
    shutdown_deadline: Option<Instant>,
    max_sendq: usize,
    write_timeout: Duration,
    grace: Duration,
}

struct Client {
    conn: Arc<Conn>,
    /// Set when a close is decided; the close is applied after the pass.
    closing: Option<Reason>,
}

/// What a connection's threads and the fan-out share.
struct Conn {
    id: usize,
    peer: SocketAddr,
    /// Blocking; read by the reader thread, written by the writer thread (or, under
    /// threads-direct, by whichever thread is fanning out).
    stream: TcpStream,
    /// `--io threads`: the channel to the writer thread. `None` under threads-direct.
    out: Option<SendChannel>,
}

impl Server {
    /// Binds every listen address of `config`; `direct` picks threads-direct. Errors name the
    /// address that failed.
    pub fn bind(config: Config, direct: bool) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        for (i, addr) in config.listen.iter().enumerate() {
            let mut listener = TcpListener::bind(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            // The loop's deeper backlog: a burst of connects must not meet SYN drops here
            // either, or a benchmark would measure the backlog instead of the I/O model.
            deepen_backlog(&listener);
            poll.registry()
                .register(&mut listener, Token(i), Interest::READABLE)?;
            listeners.push(listener);
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let state = State {
            core: new_core(&config),
            outbox: Outbox::default(),
            clients: HashMap::new(),
            draining: HashMap::new(),
            per_ip: HashMap::new(),
            to_close: Vec::new(),
            next_id: 0,
            shutdown_deadline: None,
            max_sendq: config.max_sendq,
            write_timeout: config.write_timeout,
            grace: config.shutdown_grace,
        };
        Ok(Server {
            poll,
            listeners,
            shared: Arc::new(Shared {
                config,
                direct,
                state: Mutex::new(state),
                gone: Condvar::new(),
            }),
            signals: None,
            waker,
            shutdown_requested: Arc::new(AtomicBool::new(false)),
            reserve_fd: File::open("/dev/null").ok(),
            paused_until: None,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
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

    /// Accepts until shutdown is requested, then says goodbye to every client and returns.
    pub fn run(mut self) -> io::Result<()> {
        for addr in self.local_addrs() {
            info!("listening on {addr}");
        }
        if !self.shared.config.irc_listen.is_empty() {
            info!("the threaded I/O models speak the line protocol only: no IRC listener");
        }
        let mut events = Events::with_capacity(64);
        let why = 'run: loop {
            let now = Instant::now();
            if self.paused_until.is_some_and(|t| t <= now) {
                self.paused_until = None;
                // Edge-triggered: clients that arrived meanwhile sent no new event.
                for index in 0..self.listeners.len() {
                    self.accept(index);
                }
            }
            let timeout = self.paused_until.map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER if self.shutdown_requested.load(Ordering::SeqCst) => {
                        break 'run "shutdown requested".to_string();
                    }
                    WAKER => {}
                    SIGNALS => {
                        let received = self.signals.as_mut().and_then(|s| s.pending().next());
                        if let Some(signal) = received {
                            break 'run format!("signal {signal}");
                        }
                    }
                    Token(index) => self.accept(index),
                }
            }
        };
        self.shutdown(&why);
        info!("server stopped");
        Ok(())
    }

    // ---- accepting -------------------------------------------------------------------------

    fn accept(&mut self, index: usize) {
        while self.paused_until.is_none() {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream.into(), peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_fd_shortage(&e) => {
                    if !self.on_fd_shortage(index) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// Out of descriptors: the loop's reserve-descriptor trick (see `poll::Server`). Returns
    /// whether to go on accepting.
    fn on_fd_shortage(&mut self, index: usize) -> bool {
        let pause = |server: &mut Server| {
            warn!("out of file descriptors; pausing accepts for {ACCEPT_BACKOFF:?}");
            server.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
            false
        };
        if self.reserve_fd.take().is_none() {
            return pause(self);
        }
        let more = match self.listeners[index].accept() {
            Ok((stream, peer)) => {
                warn!("{peer} refused: out of file descriptors");
                reject(stream, Protocol::Line, "server full");
                true
            }
            Err(_) => false,
        };
        self.reserve_fd = File::open("/dev/null").ok();
        if self.reserve_fd.is_none() {
            return pause(self);
        }
        more
    }

    /// Checks the limits, registers the connection, starts its threads and greets it.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let (config, direct) = (&self.shared.config, self.shared.direct);
        // Accepted from a non-blocking listener, the socket is non-blocking: these threads block.
        if let Err(e) = stream.set_nonblocking(false) {
            debug!("{peer}: cannot make the socket blocking: {e}");
            return;
        }
        // As in the loop: chat lines are small and latency matters.
        let _ = stream.set_nodelay(true);
        if direct && !config.write_timeout.is_zero() {
            let _ = stream.set_write_timeout(Some(config.write_timeout));
        }
        let mut st = self.shared.lock();
        if st.clients.len() >= config.max_clients {
            warn!(
                "{peer} refused: server full ({} clients, --max-clients)",
                st.clients.len()
            );
            return reject(stream, Protocol::Line, "server full");
        }
        let from_ip = st.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if config.max_per_ip > 0 && from_ip >= config.max_per_ip {
            warn!("{peer} refused: {from_ip} connections from its address (--max-per-ip)");
            return reject(
                stream,
                Protocol::Line,
                "too many connections from your address",
            );
        }
        st.next_id += 1;
        let id = st.next_id;
        let conn = Arc::new(Conn {
            id,
            peer,
            stream,
            out: (!direct).then(|| SendChannel::new(config.max_sendq)),
        });
        st.clients.insert(
            id,
            Client {
                conn: conn.clone(),
                closing: None,
            },
        );
        *st.per_ip.entry(peer.ip()).or_insert(0) += 1;
        // The threads start while the lock is held, so the reader cannot handle a line before
        // the greeting below has registered the client with the core.
        if let Err(e) = self.start_threads(&conn) {
            warn!("{peer} refused: cannot start a thread: {e}");
            st.forget(id);
            if let Some(channel) = &conn.out {
                channel.abort();
            }
            reject(&conn.stream, Protocol::Line, "server full");
            let _ = conn.stream.shutdown(Shutdown::Both);
            return;
        }
        // Greeted here, in accept order, as the loop does: guest numbers follow arrival.
        let st = &mut *st;
        let (greeting, nick) = session::welcome(
            &mut st.core,
            ClientId(id),
            &session::host_of(peer.ip()),
            wall_ms(),
            &mut st.outbox,
        );
        info!("{peer} connected as {nick}");
        st.enqueue(id, &greeting.into());
        st.deliver();
        st.apply_closes();
    }

    fn start_threads(&self, conn: &Arc<Conn>) -> io::Result<()> {
        if conn.out.is_some() {
            let (shared, conn) = (self.shared.clone(), conn.clone());
            std::thread::Builder::new()
                .name(format!("pollchat-w{}", conn.id))
                .stack_size(STACK_SIZE)
                .spawn(move || writer(&shared, &conn))?;
        }
        let reader = Reader {
            shared: self.shared.clone(),
            conn: conn.clone(),
            framer: LineFramer::default(),
            bucket: TokenBucket::new(self.shared.config.flood_burst, Instant::now()),
            last_heard: Instant::now(),
            flooded: false,
        };
        std::thread::Builder::new()
            .name(format!("pollchat-r{}", conn.id))
            .stack_size(STACK_SIZE)
            .spawn(move || reader.run())?;
        Ok(())
    }

    // ---- stopping --------------------------------------------------------------------------

    /// Stops accepting, closes every client with a `BYE`, and waits up to the grace time for
    /// the writers to deliver; then cuts off whatever is left.
    fn shutdown(&mut self, why: &str) {
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let mut st = self.shared.lock();
        info!(
            "shutting down ({why}): saying goodbye to {} clients",
            st.clients.len()
        );
        let deadline = Instant::now() + self.shared.config.shutdown_grace;
        st.shutdown_deadline = Some(deadline);
        let ids: Vec<usize> = st.clients.keys().copied().collect();
        for id in ids {
            st.mark_close(id, Reason::Shutdown);
        }
        st.apply_closes();
        while !st.draining.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .shared
                .gone
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        for conn in st.draining.values() {
            if let Some(channel) = &conn.out {
                channel.abort();
            }
            // Wakes a writer blocked on a peer that does not read.
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }
}

impl State {
    fn is_open(&self, id: usize) -> bool {
        self.clients.get(&id).is_some_and(|c| c.closing.is_none())
    }

    /// Carries out what the session said about one line.
    fn apply(&mut self, id: usize, step: Step) {
        match step {
            Step::Done => self.deliver(),
            Step::Reply(bytes) => self.enqueue(id, &bytes.into()),
            Step::Leave(reason) => self.mark_close(id, reason),
        }
    }

    /// Renders each event in the outbox once and hands the same bytes to all its recipients.
    fn deliver(&mut self) {
        let mut outbox = std::mem::take(&mut self.outbox);
        for (event, to) in outbox.iter() {
            let bytes: Chunk = line::render(event).into();
            for id in to {
                self.enqueue(id.0, &bytes);
            }
        }
        outbox.clear();
        self.outbox = outbox;
    }

    /// Queues bytes for one connection's writer, or (threads-direct) writes them into its
    /// socket right here, with the lock held.
    fn enqueue(&mut self, id: usize, bytes: &Chunk) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        if client.closing.is_some() {
            return;
        }
        let conn = &client.conn;
        let failed = match &conn.out {
            Some(channel) => match channel.push(bytes) {
                Ok(()) => None,
                Err(_full) => {
                    warn!(
                        "{}: send queue over --max-sendq {} bytes, disconnecting",
                        conn.peer, self.max_sendq
                    );
                    Some(Reason::SendQueue)
                }
            },
            None => match (&conn.stream).write_all(bytes) {
                Ok(()) => None,
                Err(e) if is_timeout(&e) => {
                    warn!(
                        "{}: socket took nothing for {:?} (--write-timeout), disconnecting",
                        conn.peer, self.write_timeout
                    );
                    Some(Reason::SendQueue)
                }
                Err(e) => {
                    debug!("{}: write failed: {e}", conn.peer);
                    Some(Reason::Lost)
                }
            },
        };
        if let Some(reason) = failed {
            self.mark_close(id, reason);
        }
    }

    /// Decides to close a connection; the close itself waits for [`State::apply_closes`].
    fn mark_close(&mut self, id: usize, reason: Reason) {
        if let Some(client) = self.clients.get_mut(&id)
            && client.closing.is_none()
        {
            client.closing = Some(reason);
            self.to_close.push(id);
        }
    }

    /// Removes a connection from the table and its address's count.
    fn forget(&mut self, id: usize) -> Option<Client> {
        let client = self.clients.remove(&id)?;
        let ip = client.conn.peer.ip();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(client)
    }

    /// Takes the connections marked this pass out of the chat core (telling their rooms why),
    /// then lets them deliver their output with a last `BYE`, or cuts them off at once. A closed
    /// connection no longer counts for `--max-clients` and `--max-per-ip`, even while its writer
    /// drains (at most the grace time).
    fn apply_closes(&mut self) {
        while let Some(id) = self.to_close.pop() {
            let Some(Client {
                conn,
                closing: Some(reason),
            }) = self.forget(id)
            else {
                continue;
            };
            let text = reason.text();
            let nick = self
                .core
                .nick(ClientId(id))
                .cloned()
                .unwrap_or_else(|| "?".into());
            info!("{} ({nick}) disconnected: {text}", conn.peer);
            self.core.disconnect(ClientId(id), &text, &mut self.outbox);
            if self.shutdown_deadline.is_some() {
                // Everyone is leaving; nobody needs to be told who else did.
                self.outbox.clear();
            } else {
                self.deliver();
            }
            let bye: Option<Chunk> = reason.drains().then(|| line::render_bye(&text).into());
            match (&conn.out, bye) {
                (Some(channel), Some(bye)) => channel.finish(bye, Instant::now() + self.grace),
                (Some(channel), None) => {
                    channel.abort();
                    // Wakes the writer if it is blocked on this very peer, and the reader.
                    let _ = conn.stream.shutdown(Shutdown::Both);
                }
                (None, bye) => {
                    let late = self.shutdown_deadline.is_some_and(|d| Instant::now() >= d);
                    if let Some(bye) = bye
                        && !late
                    {
                        let _ = (&conn.stream).write_all(&bye);
                    }
                    let _ = conn.stream.shutdown(Shutdown::Both);
                    debug!("{}: closed", conn.peer);
                }
            }
            if conn.out.is_some() {
                self.draining.insert(id, conn);
            }
        }
    }
}

/// A connection's reader thread: reads, frames and handles its lines until the connection ends.
struct Reader {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    framer: LineFramer,
    bucket: TokenBucket,
    /// Last time a line arrived, for `--idle-timeout`.
    last_heard: Instant,
    /// Has been over the flood rate before: logged at info only the first time, as in the loop.
    flooded: bool,
}

impl Reader {
    fn run(mut self) {
        let mut buf = vec![0u8; READ_CHUNK];
        let idle = self.shared.config.idle_timeout;
        loop {
            if let Some(idle) = idle {
                let left = (self.last_heard + idle).saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let peer = self.conn.peer;
                    self.shared.close(self.conn.id, Reason::Idle, || {
                        info!("{peer}: silent for {idle:?} (--idle-timeout)")
                    });
                    return;
                }
                let _ = self.conn.stream.set_read_timeout(Some(left));
            }
            match (&self.conn.stream).read(&mut buf) {
                Ok(0) => return self.end_of_stream(),
                Ok(n) => {
                    let data = &buf[..n];
                    let handled = if data.contains(&telnet::IAC) {
                        // As in the loop: telnet's negotiation is refused and stripped.
                        let (mut text, mut replies) = (Vec::with_capacity(n), Vec::new());
                        telnet::filter(data, &mut text, &mut replies);
                        if !replies.is_empty() {
                            let id = self.conn.id;
                            let mut st = self.shared.lock();
                            st.enqueue(id, &replies.into());
                            st.apply_closes();
                        }
                        self.handle_input(&text)
                    } else {
                        self.handle_input(data)
                    };
                    if !handled {
                        return;
                    }
                }
                // The read timeout: the loop checks the idle deadline again.
                Err(e) if is_timeout(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let peer = self.conn.peer;
                    self.shared.close(self.conn.id, Reason::Lost, || {
                        debug!("{peer}: read failed: {e}")
                    });
                    return;
                }
            }
        }
    }

    /// Frames and handles the lines in `input`, holding the lock from the first line to the
    /// last (but never while waiting for flood tokens). False once the connection is closed.
    fn handle_input(&mut self, mut input: &[u8]) -> bool {
        let config = &self.shared.config;
        let (id, max_line, burst, rate) = (
            self.conn.id,
            config.max_line,
            config.flood_burst,
            config.flood_rate,
        );
        let mut guard: Option<MutexGuard<'_, State>> = None;
        loop {
            if input.is_empty() && !self.framer.has_backlog() {
                return true;
            }
            let now = Instant::now();
            if rate > 0.0 && !self.bucket.ready(now, burst, rate) {
                // Back-pressure: this thread stops reading until a token is there, so the kernel
                // buffer fills and TCP slows the sender down. Nothing is dropped.
                drop(guard.take());
                let wait = self.bucket.ready_at(rate).saturating_duration_since(now);
                let level = if self.flooded {
                    log::Level::Debug
                } else {
                    log::Level::Info
                };
                self.flooded = true;
                log::log!(
                    level,
                    "{}: over --flood-rate, reading paused for {wait:?}",
                    self.conn.peer
                );
                std::thread::sleep(wait);
                continue;
            }
            let Some(frame) = self.framer.next_frame(&mut input, max_line) else {
                return true;
            };
            self.bucket.take();
            self.last_heard = now;
            let st = &mut **guard.get_or_insert_with(|| self.shared.lock());
            if !st.is_open(id) {
                return false;
            }
            let step = session::on_frame(
                &mut st.core,
                ClientId(id),
                frame,
                max_line,
                wall_ms(),
                &mut st.outbox,
            );
            st.apply(id, step);
            st.apply_closes();
            if !st.is_open(id) {
                return false;
            }
        }
    }

    /// The peer closed its side: its last unterminated line still counts, then it leaves
    /// (after getting what is queued for it, in case it only half-closed).
    fn end_of_stream(mut self) {
        let id = self.conn.id;
        let max_line = self.shared.config.max_line;
        let last = self.framer.take_partial(max_line);
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        if !st.is_open(id) {
            return;
        }
        if let Some(last) = last {
            let step = session::on_frame(
                &mut st.core,
                ClientId(id),
                Frame::Line(&last),
                max_line,
                wall_ms(),
                &mut st.outbox,
            );
            st.apply(id, step);
            st.apply_closes();
        }
        st.mark_close(id, Reason::Closed);
        st.apply_closes();
    }
}

/// A connection's writer thread (`--io threads`): takes everything queued on its channel at
/// once and writes it with as few `writev` calls as the socket allows.
fn writer(shared: &Shared, conn: &Conn) {
    let Some(channel) = &conn.out else {
        return;
    };
    let grace = shared.config.shutdown_grace;
    if !grace.is_zero() {
        let _ = conn.stream.set_write_timeout(Some(grace));
    }
    let mut out: OutQueue<Chunk> = OutQueue::default();
    'run: while channel.take(&mut out) == Take::Write {
        while !out.is_empty() {
            // Asked before every write, so that a close decided while this thread was blocked
            // on the peer is noticed after at most one write timeout.
            if let Some(deadline) = channel.deadline() {
                // Closing: give up on what is not written by the deadline.
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break 'run;
                }
                let _ = conn.stream.set_write_timeout(Some(left));
            }
            let before = out.len();
            match out.flush_to(&mut &conn.stream) {
                Ok(_) => channel.written(before - out.len()),
                // A peer that reads slowly or not at all: keep trying; the send queue limit
                // decides when it has had enough, and a deadline is checked above.
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let peer = conn.peer;
                    shared.close(conn.id, Reason::Lost, || {
                        debug!("{peer}: write failed: {e}")
                    });
                    break 'run;
                }
            }
        }
    }
    // Everything is delivered (or given up): end the connection, which also wakes its reader.
    let _ = conn.stream.shutdown(Shutdown::Both);
    let mut st = shared.lock();
    st.draining.remove(&conn.id);
    debug!("{}: closed", conn.peer);
    drop(st);
    shared.gone.notify_all();
}

/// What a blocking socket with SO_RCVTIMEO/SO_SNDTIMEO returns when the time is up.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
