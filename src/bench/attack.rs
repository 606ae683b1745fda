//! `pollchat bench --attack KIND`: hostile clients against a server, while two bystanders
//! measure what the attack costs everyone else.
//!
//! Each attack gets a fresh server (what one attack leaves behind must not be charged to the
//! next), set up as the attack needs it (filler clients, a full `#lobby` history), then two
//! bystanders in a room of their own start an open-loop exchange measured like any other trial
//! ([`Load::trial`]), and `--hostile` sockets, driven by a second mio loop on their own thread,
//! attack for `--duration` seconds. The server's VmRSS is sampled during the attack, and its
//! peak (VmHWM) is reset first where `/proc/PID/clear_refs` allows, so "during" is the attack's
//! own peak. Then the hostile sockets read what is left for them (an end of stream or a `BYE`
//! or `ERROR` line counts as the server having closed them), close, and the server is left
//! quiet long enough for its quiet-time trim before memory is read once more.
//!
//! The attacks:
//! - `never-read-listing`: sockets with a tiny receive buffer that ask once for a big reply
//!   (line protocol `/who #lobby` and `/rooms`, IRC `WHO #lobby`, `NAMES #lobby`, `LIST`) and
//!   never read it, after `--fillers` clients filled the lobby and the room list.
//! - `never-read-joiners`: sockets that join a `#lobby` whose history is full of long messages
//!   (line clients are put in it on connect, IRC ones ask for `server-time` and `JOIN`) and
//!   never read the replay.
//! - `comma-lists`: IRC clients looping over `JOIN #own`, `PRIVMSG #own,#own,…`,
//!   `NAMES #lobby,#lobby,…`, `JOIN` of 31 rooms and `JOIN 0`, as fast as the server reads.
//! - `slow-loris`: one byte at a time of a line that never ends, past the longest line (half
//!   line protocol, half IRC connections that sent `NICK` and never `USER`).
//! - `reconnect-storm`: connecting and closing (with a reset) as fast as the server answers,
//!   from one address, against the server's default `--max-connects-per-ip` of 60 a minute.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::load::{Load, Plan, Trial, Wire};
use super::target::{self, ProcStats};
use super::wire::{self, Line};
use super::{Opts, Report, Server, secs};

/// The receive buffer of a never-reading socket. Linux doubles what is asked and keeps a floor
/// of a few KiB: the point is that the server's reply cannot hide in the client's kernel.
const TINY_RCVBUF: usize = 2048;
/// Rooms the fillers may create: under the server's default `--max-total-rooms` (10,000) with
/// room to spare for the lobby, the bystanders' room and a few more.
const MAX_FILLER_ROOMS: usize = 9_990;
/// `never-read-joiners`: messages sent to `#lobby` before the attack, each this long: past the
/// room's default 64 KiB of history, so the history is full whatever its message count.
const HISTORY_MESSAGES: usize = 64;
const HISTORY_TEXT: usize = 4000;
/// `slow-loris`: bytes each socket trickles in all, one at a time: past the longest line of
/// either protocol (`--max-line` is 4096 by default, IRC's 512).
const LORIS_BYTES: usize = 4096 + 64;
/// The server's memory is sampled this often during an attack.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// After an attack, hostile sockets read what is left for them for at most this long.
const DRAIN: Duration = Duration::from_secs(3);
/// After the hostile sockets close, the server is left quiet this long before memory is read:
/// it trims its heap once it has been quiet for 5 s.
const SETTLE: Duration = Duration::from_secs(7);
/// The bystanders' rate when `--rate` does not say, messages per second.
const BYSTANDER_RATE: f64 = 50.0;

/// What the hostile clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    NeverReadListing,
    NeverReadJoiners,
    CommaLists,
    SlowLoris,
    ReconnectStorm,
}

impl Attack {
    pub const ALL: [Attack; 5] = [
        Attack::NeverReadListing,
        Attack::NeverReadJoiners,
        Attack::CommaLists,
        Attack::SlowLoris,
        Attack::ReconnectStorm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::NeverReadListing => "never-read-listing",
            Attack::NeverReadJoiners => "never-read-joiners",
            Attack::CommaLists => "comma-lists",
            Attack::SlowLoris => "slow-loris",
            Attack::ReconnectStorm => "reconnect-storm",
        }
    }

    /// `all`, or attack names separated by commas.
    pub fn parse_list(s: &str) -> Result<Attacks, String> {
        if s == "all" {
            return Ok(Attacks(Attack::ALL.to_vec()));
        }
        s.split(',')
            .map(|name| {
                Attack::ALL
                    .into_iter()
                    .find(|a| a.name() == name.trim())
                    .ok_or_else(|| {
                        let names: Vec<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
                        format!(
                            "unknown attack {name:?}: one of {}, or all",
                            names.join(", ")
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(Attacks)
    }

    /// Server flags the attack needs unless `--spawn` sets them: the reconnect storm meets the
    /// server's default connect limit (the bench turns it off for everything else).
    fn serve_args(self) -> &'static str {
        match self {
            Attack::ReconnectStorm => "--max-connects-per-ip 60",
            _ => "",
        }
    }
}

/// The attacks `--attack` runs, in order (one value for clap, which would take a `Vec` for a
/// repeated flag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attacks(pub Vec<Attack>);

/// What the hostile sockets saw.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Connections opened (the reconnect storm opens many per socket).
    pub opened: usize,
    /// Connections the server closed: an end of stream, a reset, or a `BYE`/`ERROR` line.
    pub closed_by_server: usize,
    /// Why, counted per reason (the `BYE`/`ERROR` text, or "end of stream" / "reset").
    pub reasons: BTreeMap<String, usize>,
    /// Reconnect storm: connections greeted (`WELCOME`), the rest being refused.
    pub admitted: usize,
    /// Bytes the hostile sockets read, the final drain included.
    pub bytes_read: u64,
    /// The highest VmRSS sampled during the attack, KiB.
    pub rss_max_kib: u64,
}

/// One attack's figures.
#[derive(Clone, Debug, Default)]
pub struct AttackResult {
    pub attack: &'static str,
    pub target: String,
    pub hostile: usize,
    pub secs: f64,
    pub outcome: Outcome,
    /// VmRSS before the attack, the highest sampled during it, and after the settle, KiB.
    pub rss_before_kib: u64,
    pub rss_during_kib: u64,
    pub rss_after_kib: u64,
    /// VmHWM before the attack, at its end (the attack's own peak when `peak_reset`), and after.
    pub peak_before_kib: u64,
    pub peak_during_kib: u64,
    pub peak_after_kib: u64,
    pub peak_reset: bool,
    /// The bystanders' trial over the attack.
    pub bystander: Trial,
    /// Whether the server was still running at the end.
    pub server_alive: bool,
}

/// Runs each attack against a fresh server (or, with `--addr`, the same one).
pub fn run(opts: &Opts, attacks: &[Attack]) -> io::Result<Report> {
    let progress = !opts.no_progress;
    let mut report = Report {
        scenario: "attack".into(),
        wire: "line protocol and IRC".into(),
        ..Report::default()
    };
    for &attack in attacks {
        let extra = match &opts.spawn {
            Some(s) if target::sets_flag(s, "--max-connects-per-ip") => "",
            _ => attack.serve_args(),
        };
        let mut srv = Server::start(opts, true, extra)?;
        if progress {
            eprintln!(
                "pollchat bench: {} against {} ({})",
                attack.name(),
                srv.name,
                srv.pinning
            );
        }
        report.target = srv.name.clone();
        report.pinning = srv.pinning.clone();
        let result = one(opts, attack, &mut srv, progress)?;
        if progress {
            eprintln!(
                "  {}: server closed {} of {} hostile connections; bystander p99 {:.2} ms",
                attack.name(),
                result.outcome.closed_by_server,
                result.outcome.opened,
                result.bystander.p99_us as f64 / 1000.0
            );
        }
        report.attacks.push(result);
    }
    Ok(report)
}

fn one(opts: &Opts, attack: Attack, srv: &mut Server, progress: bool) -> io::Result<AttackResult> {
    let connect_timeout = secs(opts.connect_timeout);
    // What the attack needs in place first. The fillers stay connected (and unread: nothing is
    // sent to them) until the attack is over.
    let _fillers = match attack {
        Attack::NeverReadListing if opts.fillers > 0 => {
            let mut fillers = Load::new(
                Plan {
                    wire: Wire::Chat,
                    addr: srv.line,
                    clients: opts.fillers,
                    rooms: opts.fillers.min(MAX_FILLER_ROOMS),
                    senders: 0,
                    slow: 0,
                    payload: 64,
                    room_prefix: "f",
                    stay_in_lobby: true,
                    tls: None,
                },
                None,
                progress,
            )?;
            fillers.connect(connect_timeout)?;
            Some(fillers)
        }
        Attack::NeverReadJoiners => {
            fill_lobby_history(srv.line)?;
            None
        }
        _ => None,
    };
    let mut bystanders = Load::new(Plan::bystanders(srv.line), srv.pid, false)?;
    bystanders.connect(connect_timeout)?;
    let before = srv.pid.and_then(ProcStats::read).unwrap_or_default();
    let peak_reset = srv.pid.is_some_and(target::reset_peak);
    // The attack starts just after the bystanders' measured window opens and ends with it.
    let warmup = Duration::from_millis(200);
    let attack_secs = secs(opts.duration);
    let start_at = Instant::now() + warmup + Duration::from_millis(100);
    let (tx, rx) = mpsc::channel();
    let hostile = Hostile {
        attack,
        line: srv.line,
        irc: srv.irc,
        sockets: opts.hostile,
        start_at,
        until: start_at + attack_secs,
        pid: srv.pid,
    };
    let thread = std::thread::spawn(move || {
        let _ = tx.send(hostile.run());
    });
    let rate = match opts.rate {
        Some(super::Rate::PerSec(r)) => r,
        _ => BYSTANDER_RATE,
    };
    let bystander = bystanders.trial(
        1,
        false,
        Some(rate),
        warmup,
        attack_secs + Duration::from_millis(200),
        Duration::from_secs(2),
    )?;
    let outcome = rx
        .recv()
        .map_err(|_| io::Error::other("the hostile clients' thread panicked"))??;
    let _ = thread.join();
    let during = srv.pid.and_then(ProcStats::read).unwrap_or_default();
    bystanders.idle(SETTLE)?;
    let after = srv.pid.and_then(ProcStats::read).unwrap_or_default();
    let server_alive = srv.check_alive().is_ok();
    Ok(AttackResult {
        attack: attack.name(),
        target: srv.name.clone(),
        hostile: opts.hostile,
        secs: attack_secs.as_secs_f64(),
        rss_before_kib: before.rss_kib,
        rss_during_kib: outcome.rss_max_kib.max(during.rss_kib),
        rss_after_kib: after.rss_kib,
        peak_before_kib: before.peak_rss_kib,
        peak_during_kib: during.peak_rss_kib,
        peak_after_kib: after.peak_rss_kib,
        peak_reset,
        bystander,
        server_alive,
        outcome,
    })
}

/// Fills `#lobby`'s history with long messages from one line client, and waits until the
/// server has handled them all (its answer to a later command proves it).
fn fill_lobby_history(addr: SocketAddr) -> io::Result<()> {
    let stream = StdStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = Vec::new();
    for i in 0..HISTORY_MESSAGES {
        let _ = write!(out, "history {i} ");
        out.resize(out.len() + HISTORY_TEXT, b'h');
        out.push(b'\n');
    }
    out.extend_from_slice(b"/away filled\n");
    (&stream).write_all(&out)?;
    let mut reader = io::BufReader::new(&stream);
    let mut line = String::new();
    loop {
        line.clear();
        if io::BufRead::read_line(&mut reader, &mut line)? == 0 {
            return Err(io::Error::other(
                "the server closed while history was filled",
            ));
        }
        if line.starts_with("NOTICE you are marked as away") {
            return Ok(());
        }
    }
}

/// The hostile side of one attack: its own mio loop, on its own thread.
struct Hostile {
    attack: Attack,
    line: SocketAddr,
    irc: Option<SocketAddr>,
    sockets: usize,
    start_at: Instant,
    until: Instant,
    pid: Option<u32>,
}

/// One hostile connection.
struct Conn {
    stream: TcpStream,
    irc: bool,
    /// Reads what the server sends during the attack (the never-read ones only at the end).
    reads: bool,
    /// Output not yet taken by the socket.
    out: Vec<u8>,
    /// The unfinished last line read.
    partial: Vec<u8>,
    /// The server closed it, and why.
    ended: Option<String>,
    /// A `BYE` or IRC `ERROR` line seen.
    bye: Option<String>,
    /// Reconnect storm: the first line came.
    answered: bool,
    /// Slow loris: when the next byte is due, and how many were sent.
    next_byte: Instant,
    trickled: usize,
}

impl Hostile {
    fn run(self) -> io::Result<Outcome> {
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let mut out = Outcome::default();
        let mut conns: Vec<Conn> = Vec::with_capacity(self.sockets);
        std::thread::sleep(self.start_at.saturating_duration_since(Instant::now()));
        for i in 0..self.sockets {
            let c = self.open(i, &mut poll, Token(i))?;
            conns.push(c);
            out.opened += 1;
        }
        let loris_every = self
            .until
            .saturating_duration_since(Instant::now())
            .div_f64(LORIS_BYTES as f64)
            .max(Duration::from_millis(1));
        for (i, c) in conns.iter_mut().enumerate() {
            // Spread the trickles over one interval.
            c.next_byte = Instant::now() + loris_every.mul_f64(i as f64 / self.sockets as f64);
        }
        let mut scratch = vec![0u8; 64 * 1024];
        let mut next_sample = Instant::now();
        let mut round = 0u64;
        loop {
            let now = Instant::now();
            if now >= next_sample {
                if let Some(s) = self.pid.and_then(ProcStats::read) {
                    out.rss_max_kib = out.rss_max_kib.max(s.rss_kib);
                }
                next_sample = now + SAMPLE_EVERY;
            }
            if now >= self.until {
                break;
            }
            let mut timeout = next_sample.min(self.until) - now;
            if self.attack == Attack::SlowLoris {
                timeout = timeout.min(Duration::from_millis(1));
            }
            poll.poll(&mut events, Some(timeout))?;
            for e in events.iter() {
                let c = &mut conns[e.token().0];
                if c.reads && (e.is_readable() || e.is_read_closed() || e.is_error()) {
                    out.bytes_read += read(c, &mut scratch);
                }
                if e.is_writable() {
                    flush(c);
                }
            }
            round += 1;
            match self.attack {
                Attack::CommaLists => {
                    for (i, c) in conns.iter_mut().enumerate() {
                        if c.ended.is_none() && c.out.is_empty() {
                            comma_batch(&mut c.out, i, round);
                            flush(c);
                        }
                    }
                }
                Attack::SlowLoris => {
                    let now = Instant::now();
                    for c in conns.iter_mut() {
                        if c.ended.is_none() && c.next_byte <= now {
                            // One byte per write, TCP_NODELAY: one segment per byte.
                            if c.stream.write(b"x").is_ok() {
                                c.trickled += 1;
                            }
                            c.next_byte += loris_every;
                        }
                    }
                }
                Attack::ReconnectStorm => {
                    for (i, c) in conns.iter_mut().enumerate() {
                        if c.answered || c.ended.is_some() {
                            let old = std::mem::replace(c, self.open(i, &mut poll, Token(i))?);
                            out.opened += 1;
                            tally_storm(&mut out, &old);
                            reset_on_close(&old.stream);
                        }
                    }
                }
                Attack::NeverReadListing | Attack::NeverReadJoiners => {}
            }
        }
        // What is left for each socket, until it ends or has nothing more for a moment.
        let drain_until = Instant::now() + DRAIN;
        for c in conns.iter_mut() {
            c.reads = true;
            out.bytes_read += read(c, &mut scratch);
        }
        while Instant::now() < drain_until {
            poll.poll(&mut events, Some(Duration::from_millis(300)))?;
            if events.is_empty() {
                break;
            }
            for e in events.iter() {
                out.bytes_read += read(&mut conns[e.token().0], &mut scratch);
            }
        }
        for c in &conns {
            if self.attack == Attack::ReconnectStorm {
                tally_storm(&mut out, c);
            } else if let Some(why) = c.bye.clone().or(c.ended.clone()) {
                out.closed_by_server += 1;
                *out.reasons.entry(why).or_default() += 1;
            }
            reset_on_close(&c.stream);
        }
        Ok(out)
    }

    /// Opens hostile connection `i` and queues what it says first.
    fn open(&self, i: usize, poll: &mut Poll, token: Token) -> io::Result<Conn> {
        // Which wire connection `i` speaks, and whether it reads during the attack.
        let (irc, reads, rcvbuf) = match self.attack {
            Attack::NeverReadListing => (i % 5 >= 2, false, Some(TINY_RCVBUF)),
            Attack::NeverReadJoiners => (i % 2 == 1, false, Some(TINY_RCVBUF)),
            Attack::CommaLists => (true, true, None),
            Attack::SlowLoris => (i % 2 == 1, true, None),
            Attack::ReconnectStorm => (false, true, None),
        };
        // Without an IRC address (a server at --addr without --irc-addr), IRC's share speaks
        // the line protocol's nearest request instead.
        let irc = irc && self.irc.is_some();
        let addr = if irc {
            self.irc.unwrap_or(self.line)
        } else {
            self.line
        };
        let mut stream = connect(addr, rcvbuf)?;
        poll.registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let mut out = Vec::new();
        // Nicks unique on the server even with two generators: the process id and `i`.
        let nick = format!("h{}x{i}", std::process::id());
        if irc && self.attack != Attack::SlowLoris {
            let _ = write!(out, "NICK {nick}\r\nUSER h 0 * :hostile\r\n");
        }
        match (self.attack, irc) {
            (Attack::NeverReadListing, false) => {
                out.extend_from_slice([&b"/who #lobby\n"[..], b"/rooms\n"][i % 2]);
            }
            (Attack::NeverReadListing, true) => {
                out.extend_from_slice(
                    [&b"WHO #lobby\r\n"[..], b"NAMES #lobby\r\n", b"LIST\r\n"][i % 5 - 2],
                );
            }
            // A line client is put in #lobby, history and all, on connect; an IRC one is
            // replayed history only with server-time.
            (Attack::NeverReadJoiners, true) => {
                out.splice(0..0, b"CAP REQ :server-time\r\nCAP END\r\n".iter().copied());
                out.extend_from_slice(b"JOIN #lobby\r\n");
            }
            (Attack::SlowLoris, true) => {
                // Half registered: a NICK and never a USER.
                let _ = write!(out, "NICK {nick}\r\n");
            }
            _ => {}
        }
        Ok(Conn {
            stream,
            irc,
            reads,
            out,
            partial: Vec::new(),
            ended: None,
            bye: None,
            answered: false,
            next_byte: Instant::now(),
            trickled: 0,
        })
    }
}

/// One round of `comma-lists` for connection `i`: each line is one cheap line to send and a
/// list for the server to walk.
fn comma_batch(out: &mut Vec<u8>, i: usize, round: u64) {
    let own = format!("#cl{i}");
    let _ = write!(out, "JOIN {own}\r\nPRIVMSG ");
    repeat_to(out, &own, 480);
    let _ = write!(out, " :round {round}\r\nNAMES ");
    repeat_to(out, "#lobby", 500);
    out.extend_from_slice(b"\r\nJOIN ");
    let rooms: Vec<String> = (1..32).map(|k| format!("#c{i}_{k}")).collect();
    out.extend_from_slice(rooms.join(",").as_bytes());
    out.extend_from_slice(b"\r\nJOIN 0\r\n");
}

/// Appends `item,item,…` while the list stays within `len` bytes.
fn repeat_to(out: &mut Vec<u8>, item: &str, len: usize) {
    let start = out.len();
    out.extend_from_slice(item.as_bytes());
    while out.len() - start + 1 + item.len() <= len {
        out.push(b',');
        out.extend_from_slice(item.as_bytes());
    }
}

/// A reconnect-storm connection that is done: greeted, or refused.
fn tally_storm(out: &mut Outcome, c: &Conn) {
    if c.bye.is_some() || c.ended.is_some() {
        out.closed_by_server += 1;
        let why = c.bye.clone().or(c.ended.clone()).unwrap_or_default();
        *out.reasons.entry(why).or_default() += 1;
    } else if c.answered {
        out.admitted += 1;
    }
}

/// Reads until `WouldBlock` or the end; returns the bytes read.
fn read(c: &mut Conn, scratch: &mut [u8]) -> u64 {
    let mut total = 0;
    while c.ended.is_none() {
        match c.stream.read(scratch) {
            Ok(0) => c.ended = Some("end of stream".into()),
            Ok(n) => {
                total += n as u64;
                let (irc, bye, answered) = (c.irc, &mut c.bye, &mut c.answered);
                wire::for_each_line(&mut c.partial, &scratch[..n], |l| {
                    let line = if irc {
                        wire::parse_irc_line(l)
                    } else {
                        wire::parse_chat_line(l)
                    };
                    match line {
                        Line::Bye(why) if bye.is_none() => {
                            *bye = Some(if irc {
                                format!("ERROR {why}")
                            } else {
                                format!("BYE {why}")
                            })
                        }
                        Line::Welcome(_) => *answered = true,
                        _ => {}
                    }
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => c.ended = Some("reset".into()),
            Err(e) => c.ended = Some(format!("read failed: {e}")),
        }
    }
    total
}

/// Writes what the socket takes.
fn flush(c: &mut Conn) {
    while !c.out.is_empty() && c.ended.is_none() {
        match c.stream.write(&c.out) {
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Not connected yet, or full: a WRITABLE edge comes.
            Err(_) => break,
        }
    }
}

/// A non-blocking connect with the receive buffer set before the handshake (so the window the
/// server sees is small from the start) and TCP_NODELAY (every byte of a slow loris is its own
/// segment). IPv4 only: the bench runs over loopback.
fn connect(addr: SocketAddr, rcvbuf: Option<usize>) -> io::Result<TcpStream> {
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::other("--attack needs an IPv4 server address"));
    };
    // SAFETY: plain socket system calls on a descriptor this function owns; `StdStream` takes
    // it over at once, so it is closed on every path.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = StdStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, &one);
        if let Some(bytes) = rcvbuf {
            setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &(bytes as libc::c_int),
            );
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&raw const sa).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(TcpStream::from_std(stream))
    }
}

/// SO_LINGER of zero: closing sends a reset and leaves no TIME_WAIT behind, so a storm of
/// thousands of connections a second does not run out of local ports.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a socket option on a descriptor the stream owns.
    unsafe {
        setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger,
        )
    };
}

/// # Safety
/// `fd` must be an open socket.
unsafe fn setsockopt<T>(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: &T) {
    // SAFETY: `value` is a valid `T` for the call's duration; the size passed is its size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_attack_lists() {
        assert_eq!(Attack::parse_list("all").unwrap().0, Attack::ALL);
        assert_eq!(
            Attack::parse_list("slow-loris,comma-lists").unwrap().0,
            [Attack::SlowLoris, Attack::CommaLists]
        );
        assert!(Attack::parse_list("loris").is_err());
    }

    #[test]
    fn comma_lists_fit_irc_lines() {
        let mut out = Vec::new();
        comma_batch(&mut out, 199, 12345);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 5, "{text}");
        for l in &lines {
            assert!(l.len() <= wire::IRC_MAX_LINE, "{} bytes: {l}", l.len());
        }
        assert!(lines[1].starts_with("PRIVMSG #cl199,#cl199,"));
        assert_eq!(lines[3].matches(',').count(), 30);
        assert_eq!(lines[4], "JOIN 0");
    }
}
