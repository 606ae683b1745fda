//! The generator's event loop: one `mio::Poll` on one thread driving every client connection.
//!
//! It connects the clients (a bounded number at a time, so the server's listen backlog never
//! overflows into SYN retries), moves each into its room, then runs trials: an open-loop schedule
//! (a heap of per-sender due times) or `max` (keep every sender's socket busy), reading every
//! delivery into the [`Tally`]. Output to each socket is coalesced into one buffer and written
//! once per loop turn, and every socket has TCP_NODELAY, so the generator never meets Nagle's
//! algorithm and delayed ACKs itself.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::stats::Tally;
use super::target::{self, ProcStats};
use super::wire::{self, Line, Payload};

/// Connections opened but not yet joined, at most. Far under the listen backlog, and small on
/// purpose: pollchat puts every arriving client in #lobby until its `/part` is read, and each
/// one there is told of every other arrival and departure, so the cost of connecting grows with
/// the number in flight (32: 10,000 clients in about 1 s here; 1,000: over 4 s).
const MAX_CONNECTING: usize = 32;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// `read` calls per connection per turn: a server writing to one socket as fast as it is read
/// must not keep the loop there while other sockets and due sends wait. What is left is read
/// next turn (edge-triggered readiness will not report it again).
const READS_PER_TURN: usize = 4;
/// Messages a `max`-rate sender queues each time its socket has taken everything.
const MAX_BATCH: usize = 32;
/// `max` rate keeps at most this many deliveries per connection in flight (sent, not yet
/// arrived), so it measures how fast the server delivers instead of how fast its send queues
/// overflow; by Little's law its latency is then this window over the throughput.
const MAX_IN_FLIGHT_PER_CONN: u64 = 1000;
/// Open-loop messages queued per loop turn at most, so reading is never starved for long.
const SENDS_PER_TURN: usize = 20_000;
/// A `--step` trial stops sending once a delivery takes this long: it has failed already
/// (p99 over 50 ms is near), and going on only piles up a backlog that would push the server's
/// send queues past `--max-sendq`, cut clients off and spoil the trials after it.
const ABORT_LATENCY_US: u64 = 200_000;
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the generator speaks to the server (named apart from the server's own `Protocol`,
/// which is what a listener speaks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// pollchat's line protocol: `/part #lobby`, `/join #rN`, plain lines to the room.
    Chat,
    /// IRC, to the server's IRC listener: `NICK`/`USER`, then `JOIN #rN` once welcomed (001),
    /// `PRIVMSG #rN :text` to the room; `PING` is answered. No capabilities are requested, so
    /// a sender does not get its own messages back.
    Irc,
    /// Redis pub/sub: a SUBSCRIBE connection per client and a PUBLISH connection per sender.
    Redis,
}

impl Wire {
    /// How reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Wire::Chat => "line protocol",
            Wire::Irc => "IRC",
            Wire::Redis => "Redis pub/sub",
        }
    }
}

/// Who connects where.
#[derive(Clone, Debug)]
pub struct Plan {
    pub wire: Wire,
    pub addr: SocketAddr,
    pub clients: usize,
    /// Client `i` is in room `i % rooms`.
    pub rooms: usize,
    /// Clients `0..senders` send.
    pub senders: usize,
    /// The last `slow` clients stop reading (and never send) once trials begin.
    pub slow: usize,
    /// Bytes of message text.
    pub payload: usize,
    /// Room `i` is `#{room_prefix}{i}` (`r` for the measured clients; other prefixes keep the
    /// helpers of a scenario, such as the bystanders of `--attack`, out of each other's rooms).
    pub room_prefix: &'static str,
    /// Line protocol: stay in `#lobby` as well as joining the room, as a user who never types
    /// `/part` does (the lobby's size then weighs on memory and on every arrival).
    pub stay_in_lobby: bool,
    /// Over TLS, with this client configuration (`--tls`; line protocol only).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Plan {
    /// Two bystanders in a room of their own, one sending: what the hostile-client and mass
    /// departure scenarios measure everyone else's latency with.
    pub fn bystanders(addr: SocketAddr) -> Plan {
        Plan {
            wire: Wire::Chat,
            addr,
            clients: 2,
            rooms: 1,
            senders: 1,
            slow: 0,
            payload: 64,
            room_prefix: "by",
            stay_in_lobby: false,
            tls: None,
        }
    }
}

impl Plan {
    /// Deliveries one message from a sender in `room` should cause: the other members that
    /// read (Redis also delivers to the sender's own subscription).
    pub fn recipients(&self, room: usize) -> u64 {
        let members = (0..self.clients).filter(|i| i % self.rooms == room);
        let readers = members.filter(|&i| i < self.clients - self.slow).count() as u64;
        match self.wire {
            Wire::Chat | Wire::Irc => readers.saturating_sub(1),
            Wire::Redis => readers,
        }
    }
}

/// One connection.
struct Conn {
    stream: TcpStream,
    /// Its TLS client state (`--tls`), between the socket and the lines.
    tls: Option<Box<rustls::ClientConnection>>,
    room: usize,
    /// Index in its room: identifies the sender in payloads.
    slot: u32,
    /// Sends test messages.
    sends: bool,
    /// Stops reading once trials begin.
    slow: bool,
    joined: bool,
    /// Its nick, from WELCOME (line protocol: a guest nick) or 001 (IRC).
    nick: Option<String>,
    /// Why it ended, once it has.
    closed: Option<String>,
    /// The reason in a `BYE` line, if the server sent one before closing.
    bye: Option<String>,
    /// Output coalesced until the end of the loop turn, and how much of it is written.
    out: Vec<u8>,
    out_pos: usize,
    dirty: bool,
    /// The unfinished last line read.
    partial: Vec<u8>,
    /// Last sequence number seen per sender slot of its room.
    seen: Vec<u32>,
    /// Last sequence number sent.
    seq: u32,
    /// Deliveries each of its messages should cause.
    recipients: u64,
}

/// The outcome of one measured trial.
#[derive(Clone, Debug, Default)]
pub struct Trial {
    /// Messages per second per sending client (`None`: as fast as possible).
    pub rate: Option<f64>,
    pub secs: f64,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// How late the generator sent measured messages, p99: near zero unless it was the limit.
    pub lag_p99_us: u64,
    /// Generator and server CPU over the measured window, in percent of one core; the
    /// generator's without the time it spun waiting for the next message's due time.
    pub gen_cpu: f64,
    pub server_cpu: Option<f64>,
    /// Connections (of clients that read) that ended during the trial.
    pub disconnects: u64,
    pub sustainable: bool,
    /// Stopped early: a delivery took over 200 ms.
    pub aborted: bool,
}

impl Trial {
    pub fn deliveries_per_sec(&self) -> f64 {
        self.delivered as f64 / self.secs.max(1e-9)
    }
    pub fn msgs_per_sec(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9)
    }
}

/// What happened to the clients that stopped reading.
#[derive(Clone, Debug, Default)]
pub struct SlowOutcome {
    /// The reason the server gave their rooms (`QUIT nick reason`), counted per reason.
    pub reasons: Vec<(String, usize)>,
    /// Closed by the server without a reason seen.
    pub closed_silently: usize,
    /// Still connected at the end.
    pub connected: usize,
}

/// The generator.
pub struct Load {
    poll: Poll,
    events: Events,
    plan: Plan,
    conns: Vec<Conn>,
    base: Instant,
    scratch: Vec<u8>,
    dirty: Vec<usize>,
    /// Connections whose reading stopped at [`READS_PER_TURN`] with data left.
    unread: Vec<usize>,
    /// Open-loop senders by due time: (intended send time in ns, connection).
    schedule: BinaryHeap<Reverse<(u64, usize)>>,
    interval_ns: u64,
    max_rate: bool,
    sending: bool,
    slow_stopped: bool,
    pub tally: Tally,
    joined: usize,
    /// Nick → connection, to tell whose QUIT a line reports.
    nicks: HashMap<String, usize>,
    /// Reasons the server gave for clients that left: connection → reason.
    quits: HashMap<usize, String>,
    /// Reading clients whose connection ended.
    disconnects: u64,
    pub errors: Vec<String>,
    server_pid: Option<u32>,
    progress: bool,
    /// What the progress line says it is doing.
    label: String,
    /// Messages queued so far (all trials).
    queued: u64,
    /// Deliveries those messages should cause, and deliveries that arrived, over all trials
    /// (for `max` rate's in-flight window).
    owed: u64,
    arrived: u64,
    /// Time spent spinning through sub-millisecond waits for the next due message: CPU the
    /// generator burns by choice, left out of the CPU share it reports.
    spin: Duration,
}

fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

impl Load {
    pub fn new(plan: Plan, server_pid: Option<u32>, progress: bool) -> io::Result<Load> {
        Ok(Load {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Vec::new(),
            base: Instant::now(),
            scratch: vec![0; READ_CHUNK],
            dirty: Vec::new(),
            unread: Vec::new(),
            schedule: BinaryHeap::new(),
            interval_ns: 0,
            max_rate: false,
            sending: false,
            slow_stopped: false,
            tally: Tally::new(0, 0, 0),
            joined: 0,
            nicks: HashMap::new(),
            quits: HashMap::new(),
            disconnects: 0,
            errors: Vec::new(),
            server_pid,
            progress,
            label: String::new(),
            queued: 0,
            owed: 0,
            arrived: 0,
            spin: Duration::ZERO,
            plan,
        })
    }

    /// The connections to make: (client, sends) in order; Redis senders get a second one.
    fn layout(&self) -> Vec<(usize, bool)> {
        let p = &self.plan;
        let mut out: Vec<(usize, bool)> = (0..p.clients)
            .map(|c| (c, p.wire != Wire::Redis && c < p.senders))
            .collect();
        if p.wire == Wire::Redis {
            out.extend((0..p.senders).map(|c| (c, true)));
        }
        out
    }

    /// Connects every client and puts it in its room; returns how long that took.
    pub fn connect(&mut self, timeout: Duration) -> io::Result<Duration> {
        let layout = self.layout();
        let recipients: Vec<u64> = (0..self.plan.rooms)
            .map(|r| self.plan.recipients(r))
            .collect();
        let start = Instant::now();
        let deadline = start + timeout;
        self.label = "connecting".into();
        let mut next = 0;
        let mut last_progress = start;
        while self.joined < layout.len() {
            while next < layout.len() && next - self.joined < MAX_CONNECTING {
                let (client, sends) = layout[next];
                self.open(client, sends, recipients[client % self.plan.rooms])?;
                next += 1;
            }
            if Instant::now() > deadline {
                // An IRC registration refused (a nick in use, say) leaves a client waiting for
                // a 001 that never comes: say what the server answered.
                let said = self
                    .errors
                    .first()
                    .map_or(String::new(), |e| format!("; the server said: {e}"));
                return Err(io::Error::other(format!(
                    "only {} of {} connections joined within {timeout:?}{said}",
                    self.joined,
                    layout.len()
                )));
            }
            if let Some(why) = self
                .conns
                .iter()
                .find_map(|c| c.closed.clone().or(c.bye.clone()))
            {
                return Err(io::Error::other(format!("a connection ended early: {why}")));
            }
            self.turn(Some(Duration::from_millis(10)))?;
            if self.progress && last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                eprintln!(
                    "  connecting: {} of {} joined ({:.1}s)",
                    self.joined,
                    layout.len(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        Ok(start.elapsed())
    }

    fn open(&mut self, client: usize, sends: bool, recipients: u64) -> io::Result<()> {
        let mut stream = TcpStream::connect(self.plan.addr)?;
        // Each turn's output is one write already; never let Nagle hold it back.
        stream.set_nodelay(true)?;
        let i = self.conns.len();
        self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let room = client % self.plan.rooms;
        let redis_pub = self.plan.wire == Wire::Redis && sends;
        let tls = match &self.plan.tls {
            Some(config) => {
                let name = "localhost".try_into().expect("a valid name");
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(io::Error::other)?;
                Some(Box::new(conn))
            }
            None => None,
        };
        let mut conn = Conn {
            stream,
            tls,
            room,
            slot: (client / self.plan.rooms) as u32,
            sends,
            slow: client >= self.plan.clients - self.plan.slow,
            joined: false,
            nick: None,
            closed: None,
            bye: None,
            out: Vec::new(),
            out_pos: 0,
            dirty: false,
            partial: Vec::new(),
            seen: Vec::new(),
            seq: 0,
            recipients,
        };
        match self.plan.wire {
            Wire::Chat => {
                // The server puts every client in #lobby; leaving it at once keeps thousands of
                // connecting clients from each being told of every other one's arrival.
                if !self.plan.stay_in_lobby {
                    conn.out.extend_from_slice(b"/part #lobby\n");
                }
                let _ = writeln!(conn.out, "/join #{}{room}", self.plan.room_prefix);
            }
            Wire::Irc => {
                // JOIN follows 001; the process id keeps two generators' nicks apart on one
                // server.
                let _ = write!(
                    conn.out,
                    "NICK pb{}-{client}\r\nUSER pb 0 * :pollchat bench\r\n",
                    std::process::id()
                );
            }
            Wire::Redis if redis_pub => {}
            Wire::Redis => wire::write_resp(
                &mut conn.out,
                &[
                    b"SUBSCRIBE",
                    format!("{}{room}", self.plan.room_prefix).as_bytes(),
                ],
            ),
        }
        self.conns.push(conn);
        if redis_pub {
            // A publishing connection is ready once connected; nothing to wait for.
            self.conns[i].joined = true;
            self.joined += 1;
        } else {
            self.mark_dirty(i);
        }
        Ok(())
    }

    fn mark_dirty(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(i);
        }
    }

    /// One loop turn: wait for readiness (at most `timeout`), read, queue due messages, flush.
    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if let Err(e) = self.poll.poll(&mut self.events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable(),
                )
            })
            .collect();
        let mut readable: Vec<usize> = std::mem::take(&mut self.unread);
        for (i, read, writable) in ready {
            if writable {
                self.mark_dirty(i);
            }
            if read {
                readable.push(i);
            }
        }
        readable.sort_unstable();
        readable.dedup();
        for i in readable {
            if !(self.slow_stopped && self.conns[i].slow) {
                self.read(i);
            }
        }
        if self.sending {
            self.send_due();
        }
        self.flush_dirty();
        Ok(self.events.iter().count())
    }

    /// Plaintext from a TLS connection: what rustls has decrypted, else one read of records from
    /// the socket. `Ok(0)` at the end, `WouldBlock` when the socket has nothing more.
    fn tls_read(
        tls: &mut rustls::ClientConnection,
        stream: &mut TcpStream,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.read_tls(stream)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    /// Reads a connection until `WouldBlock` (mio is edge-triggered) and accounts every line.
    fn read(&mut self, i: usize) {
        let now = now_ns(self.base);
        let kind = self.plan.wire;
        let mut scratch = std::mem::take(&mut self.scratch);
        for reads in 0.. {
            let c = &mut self.conns[i];
            if c.closed.is_some() {
                break;
            }
            if reads == READS_PER_TURN {
                self.unread.push(i);
                break;
            }
            let read = match &mut c.tls {
                Some(tls) => Self::tls_read(tls, &mut c.stream, &mut scratch),
                None => c.stream.read(&mut scratch),
            };
            if c.tls.as_ref().is_some_and(|t| t.wants_write()) {
                // Handshake messages (or a key update) to answer.
                self.mark_dirty(i);
            }
            let c = &mut self.conns[i];
            match read {
                Ok(0) => {
                    self.close(i, "closed by the server".into());
                    break;
                }
                Ok(n) => {
                    let tls = c.tls.is_some();
                    self.lines(i, &scratch[..n], kind, now);
                    // (TLS: a record's worth may come out of a socket read that took more.)
                    if n < scratch.len() && !tls {
                        // A short read emptied the socket's queue; new data brings a new edge.
                        // (Tokio skips the extra `WouldBlock` read the same way: one system
                        // call per wake-up instead of two.)
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close(i, format!("read failed: {e}"));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn lines(&mut self, i: usize, input: &[u8], kind: Wire, now: u64) {
        let Load {
            conns,
            tally,
            nicks,
            quits,
            errors,
            joined,
            arrived,
            plan,
            ..
        } = self;
        let prefix = plan.room_prefix;
        let c = &mut conns[i];
        let mut partial = std::mem::take(&mut c.partial);
        let out_before = c.out.len();
        wire::for_each_line(&mut partial, input, |line| {
            let parsed = match kind {
                Wire::Chat => wire::parse_chat_line(line),
                Wire::Irc => wire::parse_irc_line(line),
                Wire::Redis => wire::parse_redis_line(line),
            };
            match parsed {
                Line::Msg(p) => {
                    *arrived += 1;
                    tally.on_delivery(&mut c.seen, p, now);
                }
                Line::Welcome(nick) => {
                    nicks.insert(nick.to_string(), i);
                    c.nick = Some(nick.to_string());
                    if kind == Wire::Irc {
                        let _ = write!(c.out, "JOIN #{prefix}{}\r\n", c.room);
                    }
                }
                Line::Ping(token) => {
                    let _ = write!(c.out, "PONG :{token}\r\n");
                }
                Line::Join { room, nick } if !c.joined => {
                    let mine = match kind {
                        Wire::Chat | Wire::Irc => {
                            c.nick.as_deref() == Some(nick)
                                && room.strip_prefix('#').and_then(|r| r.strip_prefix(prefix))
                                    == Some(&c.room.to_string())
                        }
                        Wire::Redis => true,
                    };
                    if mine {
                        c.joined = true;
                        *joined += 1;
                    }
                }
                Line::Quit { nick, reason } => {
                    if let Some(&who) = nicks.get(nick) {
                        quits.entry(who).or_insert_with(|| reason.to_string());
                    }
                }
                Line::Bye(reason) if kind == Wire::Irc => c.bye = Some(format!("ERROR {reason}")),
                Line::Bye(reason) => c.bye = Some(format!("BYE {reason}")),
                Line::Error(text) if errors.len() < 10 => errors.push(text.to_string()),
                _ => {}
            }
        });
        c.partial = partial;
        if c.out.len() > out_before {
            // Answers to PING, and IRC's JOIN.
            self.mark_dirty(i);
        }
    }

    fn close(&mut self, i: usize, why: String) {
        let c = &mut self.conns[i];
        let _ = self.poll.registry().deregister(&mut c.stream);
        if c.closed.is_some() {
            return;
        }
        c.closed = Some(c.bye.take().unwrap_or(why));
        if !c.slow {
            self.disconnects += 1;
        }
    }

    /// Queues the messages that are due: open-loop from the schedule, or for `max` a batch for
    /// every sender whose socket took everything it had.
    fn send_due(&mut self) {
        let now = now_ns(self.base);
        if self.max_rate {
            for i in 0..self.conns.len() {
                let c = &self.conns[i];
                let in_flight = self.owed.saturating_sub(self.arrived);
                if in_flight < MAX_IN_FLIGHT_PER_CONN * self.conns.len() as u64
                    && c.sends
                    && c.closed.is_none()
                    && c.out_pos == c.out.len()
                {
                    for _ in 0..MAX_BATCH {
                        self.queue_message(i, now);
                    }
                }
            }
            return;
        }
        let mut n = 0;
        while let Some(&Reverse((due, i))) = self.schedule.peek() {
            if due > now || n == SENDS_PER_TURN {
                break;
            }
            self.schedule.pop();
            if self.conns[i].closed.is_some() {
                continue;
            }
            self.queue_message(i, due);
            self.tally.on_lag(due, now);
            self.schedule.push(Reverse((due + self.interval_ns, i)));
            n += 1;
        }
    }

    fn queue_message(&mut self, i: usize, intended_ns: u64) {
        let (trial, size, kind) = (self.tally.trial, self.plan.payload, self.plan.wire);
        let prefix = self.plan.room_prefix;
        let c = &mut self.conns[i];
        c.seq += 1;
        let p = Payload {
            trial,
            slot: c.slot,
            seq: c.seq,
            intended_ns,
        };
        match kind {
            Wire::Chat => {
                wire::write_payload(&mut c.out, p, size);
                c.out.push(b'\n');
            }
            Wire::Irc => {
                let _ = write!(c.out, "PRIVMSG #{prefix}{} :", c.room);
                wire::write_payload(&mut c.out, p, size);
                c.out.extend_from_slice(b"\r\n");
            }
            Wire::Redis => {
                let mut text = Vec::with_capacity(size + 8);
                wire::write_payload(&mut text, p, size);
                let room = format!("{prefix}{}", c.room);
                wire::write_resp(&mut c.out, &[b"PUBLISH", room.as_bytes(), &text]);
            }
        }
        self.tally.on_send(intended_ns, c.recipients);
        self.queued += 1;
        self.owed += c.recipients;
        self.mark_dirty(i);
    }

    /// Writes each connection with output once: one system call per connection per turn.
    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let c = &mut self.conns[i];
            c.dirty = false;
            if c.closed.is_some() {
                continue;
            }
            if let Some(tls) = &mut c.tls {
                // Into rustls (it holds what comes before the handshake ends), then its records
                // to the socket, one write per turn as in clear.
                if c.out_pos < c.out.len() {
                    match tls.writer().write(&c.out[c.out_pos..]) {
                        Ok(n) => c.out_pos += n,
                        Err(e) => {
                            self.close(i, format!("TLS write failed: {e}"));
                            continue;
                        }
                    }
                }
                let c = &mut self.conns[i];
                let tls = c.tls.as_mut().expect("a TLS connection");
                if tls.wants_write() {
                    match tls.write_tls(&mut c.stream) {
                        Ok(_) => {}
                        Err(e)
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::NotConnected
                                || e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            self.close(i, format!("write failed: {e}"));
                            continue;
                        }
                    }
                }
                let c = &mut self.conns[i];
                if c.tls.as_ref().is_some_and(|t| t.wants_write()) || c.out_pos < c.out.len() {
                    // Left for the next turn (a WRITABLE edge, or the handshake's progress).
                    self.mark_dirty(i);
                }
            }
            let c = &mut self.conns[i];
            while c.tls.is_none() && c.out_pos < c.out.len() {
                match c.stream.write(&c.out[c.out_pos..]) {
                    Ok(n) => c.out_pos += n,
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::NotConnected =>
                    {
                        // A WRITABLE edge comes when there is room (or the connect completes).
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let why = format!("write failed: {e}");
                        self.close(i, why);
                        break;
                    }
                }
                // One write per turn: whatever the kernel did not take waits for WRITABLE.
                break;
            }
            let c = &mut self.conns[i];
            if c.out_pos == c.out.len() {
                c.out.clear();
                c.out_pos = 0;
                if c.out.capacity() > 1 << 16 {
                    c.out = Vec::new();
                }
            } else if c.out_pos > 0 && c.out_pos * 2 > c.out.len() {
                c.out.drain(..c.out_pos);
                c.out_pos = 0;
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Runs one trial: `warmup` of sending unmeasured, `measure` of measured sending, then up
    /// to `drain` for the measured messages still in flight. An `abortable` trial (a `--step`
    /// one) stops early, failed, once a delivery takes over [`ABORT_LATENCY_US`].
    pub fn trial(
        &mut self,
        id: u32,
        abortable: bool,
        rate: Option<f64>,
        warmup: Duration,
        measure: Duration,
        drain: Duration,
    ) -> io::Result<Trial> {
        let start = now_ns(self.base);
        let window_start = start + warmup.as_nanos() as u64;
        let window_end = window_start + measure.as_nanos() as u64;
        self.tally = Tally::new(id, window_start, window_end);
        self.slow_stopped = self.plan.slow > 0;
        self.max_rate = rate.is_none();
        self.schedule.clear();
        if let Some(rate) = rate {
            self.interval_ns = (1e9 / rate.max(1e-3)) as u64;
            let senders: Vec<usize> = (0..self.conns.len())
                .filter(|&i| self.conns[i].sends && self.conns[i].closed.is_none())
                .collect();
            let n = senders.len().max(1) as u64;
            for (k, &i) in senders.iter().enumerate() {
                // Spread the senders over one interval so they do not all fire at once.
                let offset = self.interval_ns * k as u64 / n;
                self.schedule.push(Reverse((start + offset, i)));
            }
        }
        let disconnects_before = self.disconnects;
        self.sending = true;
        self.label = match rate {
            Some(r) => format!("trial {id}: {r:.1} msg/s per sender"),
            None => format!("trial {id}: max rate"),
        };
        self.run_until(self.base + Duration::from_nanos(window_start), |_| false)?;
        let (cpu0, spin0) = (target::self_cpu(), self.spin);
        let srv0 = self.server_pid.and_then(ProcStats::read);
        let wall0 = Instant::now();
        let abort = |l: &Load| abortable && l.tally.latency.max() > ABORT_LATENCY_US;
        self.run_until(self.base + Duration::from_nanos(window_end), abort)?;
        let aborted = abort(self);
        if aborted {
            // Measure what was sent: messages meant for later were never queued.
            self.tally.end_ns = now_ns(self.base).min(window_end);
        }
        let wall = wall0.elapsed().as_secs_f64();
        let busy = (target::self_cpu() - cpu0).saturating_sub(self.spin - spin0);
        let gen_cpu = busy.as_secs_f64() / wall * 100.0;
        let srv1 = self.server_pid.and_then(ProcStats::read);
        let server_cpu = match (srv0, srv1) {
            (Some(a), Some(b)) => Some((b.cpu - a.cpu).as_secs_f64() / wall * 100.0),
            _ => None,
        };
        self.sending = false;
        self.label = format!("trial {id}: draining");
        self.run_until(Instant::now() + drain, |l| l.tally.complete())?;
        let t = &self.tally;
        let disconnects = self.disconnects - disconnects_before;
        Ok(Trial {
            rate,
            secs: t.window_secs(),
            sent: t.sent,
            expected: t.expected,
            delivered: t.delivered,
            lost: t.lost(),
            duplicates: t.duplicates,
            p50_us: t.percentile_us(0.5),
            p99_us: t.percentile_us(0.99),
            p999_us: t.percentile_us(0.999),
            max_us: t.percentile_us(1.0),
            lag_p99_us: t.lag_percentile_us(0.99),
            gen_cpu,
            server_cpu,
            disconnects,
            sustainable: !aborted && t.sustainable(disconnects),
            aborted,
        })
    }

    /// Runs loop turns until `until` or until `done` says so, printing progress every second.
    fn run_until(&mut self, until: Instant, done: impl Fn(&Load) -> bool) -> io::Result<()> {
        let mut last = Instant::now();
        let (mut sent0, mut delivered0, mut cpu0) =
            (self.tally.sent, self.tally.delivered, target::self_cpu());
        loop {
            let now = Instant::now();
            if now >= until || done(self) {
                return Ok(());
            }
            let mut timeout = (until - now).min(PROGRESS_EVERY);
            if !self.unread.is_empty() {
                timeout = Duration::ZERO;
            } else if self.sending {
                if self.max_rate {
                    timeout = Duration::ZERO;
                } else if let Some(&Reverse((due, _))) = self.schedule.peek() {
                    // epoll's timeout is whole milliseconds and mio rounds up: wait the whole
                    // milliseconds before the next due message, and spin through the rest, so
                    // messages leave on time (the send lag shows how well that went).
                    let wait =
                        (self.base + Duration::from_nanos(due)).saturating_duration_since(now);
                    timeout = timeout.min(Duration::from_millis(wait.as_millis() as u64));
                }
            }
            let spinning = timeout.is_zero() && self.unread.is_empty() && !self.max_rate;
            let (t0, queued0) = (Instant::now(), self.queued);
            let events = self.turn(Some(timeout))?;
            if spinning && events == 0 && self.queued == queued0 {
                self.spin += t0.elapsed();
            }
            if self.progress && last.elapsed() >= PROGRESS_EVERY {
                let secs = last.elapsed().as_secs_f64();
                let cpu = target::self_cpu();
                eprintln!(
                    "  {}: sent {:.0}/s, delivered {:.0}/s (measured), p99 so far {:.2} ms, generator CPU {:.0}%",
                    self.label,
                    (self.tally.sent - sent0) as f64 / secs,
                    (self.tally.delivered - delivered0) as f64 / secs,
                    self.tally.percentile_us(0.99) as f64 / 1000.0,
                    (cpu - cpu0).as_secs_f64() / secs * 100.0
                );
                (sent0, delivered0, cpu0, last) =
                    (self.tally.sent, self.tally.delivered, cpu, Instant::now());
            }
        }
    }

    /// Keeps the connections open, doing nothing but reading, for `d` (idle scenario: lets the
    /// server settle before its memory is read).
    pub fn idle(&mut self, d: Duration) -> io::Result<()> {
        self.sending = false;
        self.label = "idle".into();
        self.run_until(Instant::now() + d, |_| false)
    }

    /// Reads what the slow clients were sent until their sockets are empty or closed, and says
    /// what became of them.
    pub fn slow_outcome(&mut self) -> SlowOutcome {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut out = SlowOutcome::default();
        let mut reasons: HashMap<String, usize> = HashMap::new();
        for i in 0..self.conns.len() {
            if !self.conns[i].slow || self.conns[i].sends && self.plan.wire == Wire::Redis {
                continue;
            }
            let c = &mut self.conns[i];
            let mut eof = c.closed.is_some();
            let deadline = Instant::now() + Duration::from_secs(2);
            while !eof && Instant::now() < deadline {
                match c.stream.read(&mut scratch) {
                    Ok(0) => eof = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => eof = true,
                }
            }
            match self.quits.get(&i) {
                Some(reason) => *reasons.entry(reason.clone()).or_default() += 1,
                None if eof => out.closed_silently += 1,
                None => out.connected += 1,
            }
        }
        self.scratch = scratch;
        out.reasons = reasons.into_iter().collect();
        out.reasons.sort();
        out
    }

    /// Connections of reading clients that ended so far.
    pub fn disconnects(&self) -> u64 {
        self.disconnects
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(kind: Wire, clients: usize, rooms: usize, slow: usize) -> Plan {
        Plan {
            wire: kind,
            addr: "127.0.0.1:1".parse().unwrap(),
            clients,
            rooms,
            senders: clients,
            slow,
            payload: 64,
            room_prefix: "r",
            stay_in_lobby: false,
            tls: None,
        }
    }

    /// The generator against a real server in this process, over each wire pollchat serves:
    /// every client connects and joins, and every measured delivery arrives once, under every
    /// I/O model.
    #[test]
    fn every_delivery_arrives_over_each_wire() {
        use crate::config::Config;
        use crate::driver::{self, IoModel};
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cases = IoModel::ALL
            .into_iter()
            .flat_map(|model| [(model, Wire::Chat), (model, Wire::Irc)]);
        for (model, kind) in cases {
            let config = Config {
                listen: vec![loopback],
                irc_listen: vec![loopback],
                flood_rate: 0.0,
                ..Config::default()
            };
            let server = driver::spawn(model, config).unwrap();
            let addr = match kind {
                Wire::Irc => server.irc_addrs[0],
                _ => server.addrs[0],
            };
            let mut p = plan(kind, 5, 2, 0);
            p.addr = addr;
            let mut load = Load::new(p, None, false).unwrap();
            every_delivery_arrives_on(&mut load, &format!("{model:?} {kind:?}"));
            server.handle.shutdown();
            server.thread.join().unwrap().unwrap();
        }
    }

    /// Connects `load`, has 5 senders send at 100 msg/s for 0.2 s (the drain ends as soon as
    /// all have arrived) and checks every delivery arrived once.
    fn every_delivery_arrives_on(load: &mut Load, what: &str) {
        load.connect(Duration::from_secs(10)).unwrap();
        let t = load
            .trial(
                1,
                false,
                Some(100.0),
                Duration::from_millis(50),
                Duration::from_millis(200),
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(t.sent >= 5, "{what}: {t:?}");
        assert_eq!(
            (t.delivered, t.lost, t.duplicates),
            (t.expected, 0, 0),
            "{what}: {t:?}"
        );
        assert!(load.errors.is_empty(), "{what}: {:?}", load.errors);
    }

    /// The same over TLS (`--tls`, the event loop only): the handshake, then every delivery.
    #[test]
    fn every_delivery_arrives_over_tls() {
        use crate::config::{Config, TlsFiles};
        let dir = std::env::temp_dir().join(format!("pollchat-load-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = crate::net::tls::self_signed(&["localhost".into()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = Config {
            listen: vec![loopback],
            irc_listen: vec![],
            tls: Some(files),
            tls_listen: vec![loopback],
            flood_rate: 0.0,
            max_connects_per_ip: 0,
            ..Config::default()
        };
        let server = crate::driver::spawn(crate::driver::IoModel::Poll, config).unwrap();
        let mut p = plan(Wire::Chat, 5, 2, 0);
        p.addr = server.tls_addrs[0];
        p.tls = Some(crate::client::insecure_config());
        let mut load = Load::new(p, None, false).unwrap();
        every_delivery_arrives_on(&mut load, "TLS");
        server.handle.shutdown();
        server.thread.join().unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn recipients_leave_out_the_sender_and_the_slow() {
        assert_eq!(plan(Wire::Chat, 100, 1, 0).recipients(0), 99);
        assert_eq!(plan(Wire::Chat, 100, 1, 5).recipients(0), 94);
        assert_eq!(plan(Wire::Chat, 1000, 100, 0).recipients(7), 9);
        // Redis delivers to the sender's own subscription too.
        assert_eq!(plan(Wire::Redis, 100, 1, 0).recipients(0), 100);
        assert_eq!(plan(Wire::Chat, 5, 2, 0).recipients(0), 2);
        assert_eq!(plan(Wire::Chat, 5, 2, 0).recipients(1), 1);
        // IRC without echo-message: like the line protocol.
        assert_eq!(plan(Wire::Irc, 100, 1, 5).recipients(0), 94);
    }
}
