//! The threaded baselines: blocking std sockets, threads, and the chat core behind one `Mutex`.
//!
//! They exist so that the event loop can be measured against threads with nothing else changed:
//! the same listeners and admission ([`super::listen`]), byte transforms, framer, sessions (so
//! both the line protocol and IRC), core, limits, disconnect policy and log lines as
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
//! **Stopping.** The accept thread (the one that calls [`ThreadedServer::run`]) is a tiny `mio::Poll`
//! over the non-blocking listeners, a `Waker` for the [`ShutdownHandle`](super::ShutdownHandle) and, with
//! [`Front::handle_signals`](super::Front::handle_signals), SIGINT/SIGTERM through `signal-hook-mio`, as in the loop. So
//! accepting stops at once on shutdown, without a self-connect trick and without polling a flag.
//! Accepted sockets are switched back to blocking for their threads. On shutdown every client is
//! closed with its protocol's farewell (`BYE server shutting down`); writers deliver what is queued, and whatever is not
//! written after `shutdown_grace` is cut off by shutting the sockets down (which wakes a thread
//! blocked in `read` or `write`). Readers and writers then exit on their own.
//!
//! **Timers live in the threads**: a reader waits for its flood bucket with a sleep (it holds no
//! lock meanwhile, and not reading is the back-pressure) and notices its session's next deadline
//! (idle timeout, PING, registration deadline, an unfinished line to complete) through a read
//! timeout set to the time left. A writer's blocking write has a timeout of
//! `shutdown_grace`, so that a drain deadline is noticed even by a write that started before it;
//! that timeout only fires while a peer is not reading.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::{Events, Token};

use super::listen::{Accepted, Admission, refuse, set_send_buffer};
use super::{Front, MAX_ANSWERS, REFILL_BELOW, depart, new_core, wall_ms};
use crate::config::Config;
use crate::core::{ClientId, Core, Cursor, Millis, Outbox};
use crate::framer::{Frame, LineFramer};
use crate::net::flood::TokenBucket;
use crate::net::outq::OutQueue;
use crate::net::sendq::{Chunk, SendChannel, Take};
use crate::net::transform::Transform;
use crate::session::{
    self, Context, Directive, Now, Protocol, Reason, RenderClass, Rendered, Session, Step, Wake,
};

/// Bytes per `read` into a reader thread's buffer (its own: threads share nothing to read into).
const READ_CHUNK: usize = 8 * 1024;
/// Stack reserved per thread. Only the pages a thread touches become resident (a few KiB for a
/// reader or writer), but the reservation is address space and, under strict overcommit, commit
/// charge: std's 2 MiB default would reserve 4 MiB per client. 256 KiB leaves ample room for an
/// unoptimised build.
const STACK_SIZE: usize = 256 * 1024;

/// A threaded chat server: an accept thread, and threads per connection.
pub struct ThreadedServer {
    /// The accept thread's poll: listeners, the shutdown waker, signals.
    pub(super) front: Front,
    shared: Arc<Shared>,
}

/// What every thread of the server shares.
struct Shared {
    config: Config,
    /// What every session reads, built once.
    ctx: Context,
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
            st.apply_closes(&self.ctx);
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
    admission: Admission,
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
    /// The connection's protocol state, under the lock: the reader drives it, and every fan-out
    /// asks it how to render for this recipient.
    session: Session,
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
    /// How to render for it once its session is gone (the rest of a paged answer while it
    /// drains).
    protocol: Protocol,
}

fn now() -> Now {
    Now {
        at: Instant::now(),
        wall: wall_ms(),
    }
}

impl ThreadedServer {
    /// Binds every listen address of `config`; `direct` picks threads-direct. Errors name the
    /// address that failed.
    pub fn bind(config: Config, direct: bool) -> io::Result<ThreadedServer> {
        // The loop's listeners, deep backlog included: a burst of connects must not meet SYN
        // drops here either, or a benchmark would measure the backlog instead of the I/O model.
        let front = Front::bind(&config, Token)?;
        let state = State {
            core: new_core(&config),
            outbox: Outbox::default(),
            clients: HashMap::new(),
            draining: HashMap::new(),
            admission: Admission::new(&config),
            to_close: Vec::new(),
            next_id: 0,
            shutdown_deadline: None,
            max_sendq: config.max_sendq,
            write_timeout: config.write_timeout,
            grace: config.shutdown_grace,
        };
        Ok(ThreadedServer {
            front,
            shared: Arc::new(Shared {
                ctx: Context::new(&config, wall_ms()),
                config,
                direct,
                state: Mutex::new(state),
                gone: Condvar::new(),
            }),
        })
    }

    /// Accepts until shutdown is requested, then says goodbye to every client and returns.
    pub fn run(mut self) -> io::Result<()> {
        self.front.log_listening();
        let mut events = Events::with_capacity(64);
        let why = 'run: loop {
            let now = Instant::now();
            if self.front.listeners.resume(now) {
                // Edge-triggered: clients that arrived meanwhile sent no new event.
                for index in 0..self.front.listeners.len() {
                    self.accept(index, now);
                }
            }
            let timeout = self
                .front
                .listeners
                .paused_until()
                .map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.front.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    token if Front::owns(token) => {
                        if let Some(why) = self.front.stop_requested(token) {
                            break 'run why;
                        }
                        if self.front.take_reload() {
                            let shared = &*self.shared;
                            super::reload_opers(&mut shared.lock().core, &shared.config);
                        }
                    }
                    Token(index) => self.accept(index, Instant::now()),
                }
            }
        };
        self.shutdown(&why);
        log::info!("server stopped");
        Ok(())
    }

    // ---- accepting -------------------------------------------------------------------------

    /// Accepts until nobody waits: this thread has nothing else to do, so no budget.
    fn accept(&mut self, index: usize, now: Instant) {
        while let Accepted::Conn(stream, peer, door) = self.front.listeners.next(index, now) {
            // Never a TLS door: `Server::bind` refuses TLS for the threaded models.
            let protocol = door.protocol;
            self.admit(stream.into(), peer, protocol);
        }
    }

    /// Checks the limits, registers the connection, starts its threads and greets it.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, protocol: Protocol) {
        let (shared, direct) = (&*self.shared, self.shared.direct);
        let config = &shared.config;
        // Accepted from a non-blocking listener, the socket is non-blocking: these threads block.
        if let Err(e) = stream.set_nonblocking(false) {
            debug!("{peer}: cannot make the socket blocking: {e}");
            return;
        }
        // As in the loop: chat lines are small and latency matters.
        let _ = stream.set_nodelay(true);
        set_send_buffer(&stream, config.send_buffer);
        if direct && !config.write_timeout.is_zero() {
            let _ = stream.set_write_timeout(Some(config.write_timeout));
        }
        let mut st = shared.lock();
        let open = st.clients.len();
        if !st
            .admission
            .admit(&mut stream, peer, protocol, open, false, Instant::now())
        {
            return;
        }
        st.next_id += 1;
        let id = st.next_id;
        let conn = Arc::new(Conn {
            id,
            peer,
            stream,
            out: (!direct).then(|| SendChannel::new(config.max_sendq)),
            protocol,
        });
        let session = Session::new(&shared.ctx, protocol, ClientId(id), peer, Instant::now());
        let transform = session.transform();
        st.clients.insert(
            id,
            Client {
                conn: conn.clone(),
                session,
                closing: None,
            },
        );
        // The threads start while the lock is held, so the reader cannot handle a line before
        // the greeting below has registered the client with the core.
        if let Err(e) = self.start_threads(&conn, transform) {
            warn!("{peer} refused: cannot start a thread: {e}");
            st.forget(id);
            if let Some(channel) = &conn.out {
                channel.abort();
            }
            refuse(&conn.stream, protocol, "server full");
            let _ = conn.stream.shutdown(Shutdown::Both);
            return;
        }
        // Greeted here, in accept order, as the loop does: guest numbers follow arrival.
        let st = &mut *st;
        let client = st.clients.get_mut(&id).expect("just inserted");
        let step = client.session.welcome(&mut st.core, now(), &mut st.outbox);
        st.apply(&shared.ctx, id, step);
        st.apply_closes(&shared.ctx);
    }

    fn start_threads(&self, conn: &Arc<Conn>, transform: Transform) -> io::Result<()> {
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
            transform,
            framer: LineFramer::default(),
            bucket: TokenBucket::new(self.shared.config.flood_burst, Instant::now()),
            flooded: false,
        };
        std::thread::Builder::new()
            .name(format!("pollchat-r{}", conn.id))
            .stack_size(STACK_SIZE)
            .spawn(move || reader.run())?;
        Ok(())
    }

    // ---- stopping --------------------------------------------------------------------------

    /// Stops accepting, closes every client with its farewell, and waits up to the grace time
    /// for the writers to deliver; then cuts off whatever is left.
    fn shutdown(&mut self, why: &str) {
        let front = &mut self.front;
        front.listeners.close(front.poll.registry());
        let mut st = self.shared.lock();
        log::info!(
            "shutting down ({why}): saying goodbye to {} clients",
            st.clients.len()
        );
        let deadline = Instant::now() + self.shared.config.shutdown_grace;
        st.shutdown_deadline = Some(deadline);
        let ids: Vec<usize> = st.clients.keys().copied().collect();
        for id in ids {
            st.mark_close(id, Reason::Shutdown);
        }
        st.apply_closes(&self.shared.ctx);
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

    /// Carries out what a session said: its reply first, then the core's events, then a
    /// departure.
    fn apply(&mut self, ctx: &Context, id: usize, step: Step) {
        if !step.reply.is_empty() {
            self.enqueue(id, &step.reply.into());
        }
        self.deliver(ctx);
        if let Some(reason) = step.leave {
            self.mark_close(id, reason);
        }
    }

    /// Renders each event in the outbox once per render class among its recipients and hands
    /// the same bytes to all recipients of that class.
    fn deliver(&mut self, ctx: &Context) {
        if self.outbox.is_empty() {
            return;
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        let wall = wall_ms();
        for (event, to) in outbox.iter() {
            match session::directive(event) {
                Directive::Render => {}
                // Closed after the pass, as every close.
                Directive::Close(reason) => {
                    to.iter()
                        .for_each(|id| self.mark_close(id.0, reason.clone()));
                    continue;
                }
                Directive::Page(cursor) => {
                    for id in to {
                        self.start_page(ctx, id.0, cursor, wall);
                    }
                    continue;
                }
                // Only a clustered core makes these, and the threaded models refuse a backplane.
                Directive::Registration(_) => continue,
            }
            let mut rendered: Rendered<Chunk> = Rendered::new();
            for id in to {
                // Nothing is rendered for a recipient that is already closing.
                let Some(client) = self.clients.get(&id.0).filter(|c| c.closing.is_none()) else {
                    continue;
                };
                let class = client.session.render_class();
                let bytes = rendered.get(class, || {
                    let me = self.core.nick(*id).map_or("*", |n| &**n);
                    session::render(class, event, ctx, me, wall)
                });
                // One table lookup per recipient, as before sessions had render classes.
                if let Some(reason) = self.push(&client.conn, &bytes) {
                    self.mark_close(id.0, reason);
                }
            }
        }
        outbox.clear();
        self.outbox = outbox;
    }

    /// A paged answer. Its first page is rendered here, as the loop does when the queue is
    /// low (a short answer is then complete at once, and says how things were when asked);
    /// the writer renders the rest a page at a time as the socket takes it. Under
    /// threads-direct every page is written here, with the lock held, like any other output.
    fn start_page(&mut self, ctx: &Context, id: usize, cursor: &Cursor, wall: Millis) {
        let Some(client) = self.clients.get(&id).filter(|c| c.closing.is_none()) else {
            return;
        };
        let (class, mut cursor) = (client.session.render_class(), cursor.clone());
        let me = self.core.nick(ClientId(id)).map_or("*", |n| &**n);
        let low = REFILL_BELOW.min(self.max_sendq / 2);
        loop {
            if let Some(channel) = &client.conn.out
                && channel.held() >= low
            {
                if channel.push_page(cursor).is_err() {
                    warn!(
                        "{}: send queue over --max-sendq {} bytes, disconnecting",
                        client.conn.peer, self.max_sendq
                    );
                    self.mark_close(id, Reason::SendQueue);
                }
                return;
            }
            let (bytes, done) = session::render_page(class, &self.core, &mut cursor, ctx, me, wall);
            if let Some(reason) = self.push(&client.conn, &bytes.into()) {
                return self.mark_close(id, reason);
            }
            if done {
                return;
            }
        }
    }

    /// Queues bytes for one connection's writer, or (threads-direct) writes them into its
    /// socket right here, with the lock held.
    fn enqueue(&mut self, id: usize, bytes: &Chunk) {
        let Some(client) = self.clients.get(&id).filter(|c| c.closing.is_none()) else {
            return;
        };
        if let Some(reason) = self.push(&client.conn, bytes) {
            self.mark_close(id, reason);
        }
    }

    /// Hands bytes to a connection's writer (or its socket); why it must close, if it must.
    fn push(&self, conn: &Conn, bytes: &Chunk) -> Option<Reason> {
        match &conn.out {
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
            None => match write_within(&conn.stream, bytes, self.write_timeout) {
                Ok(()) => None,
                Err(e) if is_timeout(&e) => {
                    warn!(
                        "{}: socket did not take a message within {:?} (--write-timeout), \
                         disconnecting",
                        conn.peer, self.write_timeout
                    );
                    Some(Reason::SendQueue)
                }
                Err(e) => {
                    debug!("{}: write failed: {e}", conn.peer);
                    Some(Reason::Lost)
                }
            },
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
        self.admission.left(client.conn.peer.ip());
        Some(client)
    }

    /// Takes the connections marked this pass out of the chat core (telling their rooms why),
    /// then lets them deliver their output with a farewell line, or cuts them off at once. A
    /// closed connection no longer counts for `--max-clients` and `--max-per-ip`, even while its
    /// writer drains (at most the grace time).
    fn apply_closes(&mut self, ctx: &Context) {
        while let Some(id) = self.to_close.pop() {
            let Some(Client {
                conn,
                session,
                closing: Some(reason),
            }) = self.forget(id)
            else {
                continue;
            };
            self.admission
                .closing(conn.peer.ip(), &reason, Instant::now());
            let everyone = self.shutdown_deadline.is_some();
            let text = depart(
                &mut self.core,
                &mut self.outbox,
                ClientId(id),
                conn.peer,
                &reason,
                everyone,
            );
            self.deliver(ctx);
            let bye: Option<Chunk> = reason.drains().then(|| session.farewell(&text).into());
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

/// A connection's reader thread: reads, frames and handles its lines until the connection ends,
/// and wakes its session at the session's deadlines.
struct Reader {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    transform: Transform,
    framer: LineFramer,
    bucket: TokenBucket,
    /// Has been throttled before (see [`TokenBucket::throttle`]).
    flooded: bool,
}

/// After a reader handled something: the connection goes on, with its session's next deadline,
/// or it is closed.
type Going = Option<Option<Instant>>;

impl Reader {
    fn run(mut self) {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut filtered = Vec::new();
        // Whether the socket has a read timeout set: a session without deadlines (most line
        // clients) then costs no system call per read.
        let mut timeout_set = false;
        let mut deadline = match self.with_session(|session, ctx| session.next_deadline(ctx)) {
            Some(deadline) => deadline,
            None => return,
        };
        loop {
            if let Some(at) = deadline {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    match self.wake() {
                        Some(next) => deadline = next,
                        None => return,
                    }
                    continue;
                }
                let _ = self.conn.stream.set_read_timeout(Some(left));
                timeout_set = true;
            } else if timeout_set {
                let _ = self.conn.stream.set_read_timeout(None);
                timeout_set = false;
            }
            let going = match (&self.conn.stream).read(&mut buf) {
                Ok(0) => return self.end_of_stream(),
                Ok(n) => {
                    let mut replies = Vec::new();
                    let data = self
                        .transform
                        .inbound(&buf[..n], &mut filtered, &mut replies);
                    if !replies.is_empty() {
                        self.bucket.charge(Transform::reply_cost(&replies));
                        let mut st = self.shared.lock();
                        st.enqueue(self.conn.id, &replies.into());
                        st.apply_closes(&self.shared.ctx);
                        drop(st);
                        // Input that was only negotiation frames no line, so no line would
                        // wait for a token: the answers' cost must still stop the reading.
                        if data.is_empty() {
                            self.wait_for_token();
                        }
                    }
                    self.handle_input(data)
                }
                // The read timeout: the deadline is checked again above.
                Err(e) if is_timeout(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let peer = self.conn.peer;
                    self.shared.close(self.conn.id, Reason::Lost, || {
                        debug!("{peer}: read failed: {e}")
                    });
                    return;
                }
            };
            match going {
                Some(next) => deadline = next,
                None => return,
            }
        }
    }

    /// Runs `f` on this connection's session under the lock; `None` once it is closed.
    fn with_session<T>(&self, f: impl FnOnce(&mut Session, &Context) -> T) -> Option<T> {
        let mut st = self.shared.lock();
        let client = st.clients.get_mut(&self.conn.id)?;
        if client.closing.is_some() {
            return None;
        }
        Some(f(&mut client.session, &self.shared.ctx))
    }

    /// The session's deadline came: carry out what it asks.
    fn wake(&mut self) -> Going {
        let (id, ctx) = (self.conn.id, &self.shared.ctx);
        let mut st = self.shared.lock();
        let wake = st
            .clients
            .get_mut(&id)
            .filter(|c| c.closing.is_none())?
            .session
            .on_deadline(ctx, Instant::now());
        match wake {
            Wake::Rearm => {}
            Wake::Send(bytes) => {
                st.enqueue(id, &bytes.into());
                st.apply_closes(ctx);
            }
            Wake::Close(reason) => {
                st.mark_close(id, reason);
                st.apply_closes(ctx);
                return None;
            }
            Wake::CompleteLine => {
                drop(st);
                // Only when nothing else waits in the framer (see the loop).
                if self.framer.end_partial() {
                    return self.handle_input(&[]);
                }
                return self.with_session(|session, ctx| session.next_deadline(ctx));
            }
        }
        drop(st);
        self.with_session(|session, ctx| session.next_deadline(ctx))
    }

    /// Frames and handles the lines in `input`, holding the lock from the first line to the
    /// last (but never while waiting for flood tokens).
    fn handle_input(&mut self, mut input: &[u8]) -> Going {
        let fed = !input.is_empty();
        let shared = &*self.shared;
        let (id, burst, rate) = (
            self.conn.id,
            shared.config.flood_burst,
            shared.config.flood_rate,
        );
        let mut guard: Option<MutexGuard<'_, State>> = None;
        loop {
            if input.is_empty() && !self.framer.has_backlog() {
                break;
            }
            let now = Instant::now();
            if rate > 0.0 && !self.bucket.ready(now, burst, rate) {
                drop(guard.take());
                let peer = self.conn.peer;
                wait_for_token(&mut self.bucket, &mut self.flooded, peer, &shared.config);
                continue;
            }
            // As the loop does: no more commands while too many answers are in progress, so
            // a client that asks faster than it reads is held back by TCP.
            if let Some(channel) = &self.conn.out
                && channel.answers() >= MAX_ANSWERS
            {
                drop(guard.take());
                channel.wait_for_answers(MAX_ANSWERS);
                continue;
            }
            let st = &mut **guard.get_or_insert_with(|| shared.lock());
            let client = st.clients.get_mut(&id).filter(|c| c.closing.is_none())?;
            let max_line = client.session.max_line(&shared.ctx);
            let Some(frame) = self.framer.next_frame(&mut input, max_line) else {
                break;
            };
            self.bucket.take();
            let step = client.session.on_frame(
                &shared.ctx,
                &mut st.core,
                frame,
                now_wall(now),
                &mut st.outbox,
            );
            self.bucket.charge(step.extra_cost);
            st.apply(&shared.ctx, id, step);
            st.apply_closes(&shared.ctx);
            super::save_server_bans(&mut st.core, &shared.config);
        }
        let st = &mut **guard.get_or_insert_with(|| shared.lock());
        let client = st.clients.get_mut(&id).filter(|c| c.closing.is_none())?;
        let partial = self.framer.buffered() > 0 && !self.framer.has_backlog();
        client
            .session
            .note_partial(&shared.ctx, partial, fed, Instant::now());
        Some(client.session.next_deadline(&shared.ctx))
    }

    /// Flood control: when out of tokens, sleeps until the next one (never holding the lock).
    /// Back-pressure: this thread stops reading meanwhile, so the kernel buffer fills and TCP
    /// slows the sender down. Nothing is dropped.
    fn wait_for_token(&mut self) {
        let config = &self.shared.config;
        let peer = self.conn.peer;
        wait_for_token(&mut self.bucket, &mut self.flooded, peer, config);
    }

    /// The peer closed its side: its last unterminated line still counts, then it leaves
    /// (after getting what is queued for it, in case it only half-closed).
    fn end_of_stream(mut self) {
        let (id, shared) = (self.conn.id, &*self.shared);
        let mut guard = shared.lock();
        let st = &mut *guard;
        let Some(client) = st.clients.get_mut(&id).filter(|c| c.closing.is_none()) else {
            return;
        };
        let max_line = client.session.max_line(&shared.ctx);
        if let Some(last) = self.framer.take_partial(max_line) {
            let frame = Frame::Line(&last);
            let step =
                client
                    .session
                    .on_frame(&shared.ctx, &mut st.core, frame, now(), &mut st.outbox);
            st.apply(&shared.ctx, id, step);
            st.apply_closes(&shared.ctx);
        }
        st.mark_close(id, Reason::Closed);
        st.apply_closes(&shared.ctx);
    }
}

/// [`Reader::wait_for_token`], on the fields it needs (so it can be called while the reader's
/// shared state is borrowed).
fn wait_for_token(bucket: &mut TokenBucket, flooded: &mut bool, peer: SocketAddr, config: &Config) {
    let (burst, rate) = (config.flood_burst, config.flood_rate);
    let now = Instant::now();
    if rate > 0.0 && !bucket.ready(now, burst, rate) {
        let at = bucket.throttle(peer, now, rate, flooded);
        std::thread::sleep(at.saturating_duration_since(now));
    }
}

fn now_wall(at: Instant) -> Now {
    Now {
        at,
        wall: wall_ms(),
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
    'run: loop {
        match channel.take(&mut out) {
            Take::Write => {}
            Take::Stop => break,
            Take::Page(mut cursor) => {
                let st = shared.lock();
                // A connection that is closing has left the table but may still be draining.
                let class = match st.clients.get(&conn.id) {
                    Some(client) => client.session.render_class(),
                    None if conn.protocol == Protocol::Irc => RenderClass::IRC,
                    None => RenderClass::LINE,
                };
                let me = st.core.nick(ClientId(conn.id)).map_or("*", |n| &**n);
                let (bytes, done) =
                    session::render_page(class, &st.core, &mut cursor, &shared.ctx, me, wall_ms());
                drop(st);
                channel.paged(bytes.into(), (!done).then_some(cursor));
                continue;
            }
        }
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

/// threads-direct: writes all of `bytes` within `limit` in all, or fails with a timeout. The
/// socket's SO_SNDTIMEO (`--write-timeout`, set at accept) bounds each `write`; a peer that
/// reads a little now and then would otherwise restart it on every partial write and hold the
/// lock (so everyone) for as long as it likes. Only a partial write pays for setting the
/// timeout to what is left (and back): a write the socket takes whole costs one system call.
fn write_within(mut stream: &TcpStream, mut bytes: &[u8], limit: Duration) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut shortened = false;
    let result = loop {
        if bytes.is_empty() {
            break Ok(());
        }
        match stream.write(bytes) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
        if bytes.is_empty() {
            break Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(io::ErrorKind::TimedOut.into());
        }
        shortened = true;
        let _ = stream.set_write_timeout(Some(left));
    };
    if shortened {
        let _ = stream.set_write_timeout(Some(limit));
    }
    result
}

/// What a blocking socket with SO_RCVTIMEO/SO_SNDTIMEO returns when the time is up.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
