//! Clients coming and going: `pollchat bench --churn N` (does a long-running server give back
//! its memory and every descriptor?) and `--mass-disconnect N` (does the loop keep answering
//! while thousands leave at once, and does SIGTERM with thousands connected exit within the
//! drain?).
//!
//! Both reuse the generator's loop ([`Load`]): a wave of clients is a `Load` that connects,
//! joins, talks in one short trial and is dropped (every socket closed at once). Memory and
//! descriptors are read from `/proc/PID/status` and `/proc/PID/fd`, polled with a deadline
//! after the last client left, since the server hands memory back only once it has been quiet
//! for 5 s (its `Trim` timer).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::load::{Load, Plan, Trial, Wire};
use super::target::{self, ProcStats};
use super::{Opts, Rate, Report, Server, secs};

/// After the last client left, memory and descriptors are polled this long at most: past the
/// server's 5 s quiet-time trim, and past the default 30 s `--nick-delay` (a wave bigger than
/// `--big-room` makes the lobby big, and its leavers' nicks are held that long, up to 10,000 of
/// them; the trim forgets them once expired). A pass ends the wait at once.
const SETTLE: Duration = Duration::from_secs(40);
/// How often they are polled meanwhile.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// The churn passes if the settled RSS is at most this much over the baseline.
const RSS_TOLERANCE: f64 = 0.10;
/// Each wave's clients send at this rate for [`WAVE_TALK`], messages per second.
const WAVE_RATE: f64 = 2.0;
const WAVE_TALK: Duration = Duration::from_millis(500);
/// Rooms in the mass-disconnect scenario: every client is in `#lobby` and one of these.
const MASS_ROOMS: usize = 100;
/// The bystanders' rate in the mass disconnect when `--rate` does not say.
const BYSTANDER_RATE: f64 = 100.0;
/// The mass close happens this long into the bystanders' measured window, which lasts
/// [`MASS_WINDOW`].
const MASS_CLOSE_AT: Duration = Duration::from_secs(1);
const MASS_WINDOW: Duration = Duration::from_secs(4);
/// The drain SIGTERM allows (the server's `shutdown_grace`), and how long the exit is awaited.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// What the churn soak found.
#[derive(Clone, Debug, Default)]
pub struct ChurnResult {
    /// Clients that connected, joined and left in all, and in how many waves.
    pub clients: usize,
    pub waves: usize,
    pub secs: f64,
    /// Server VmRSS before any client (cold), KiB.
    pub rss_cold_kib: u64,
    /// Server VmRSS after a first, uncounted wave and the same settling (the baseline the
    /// verdict uses), its peak (VmHWM), and once settled after the counted waves, KiB.
    pub rss_before_kib: u64,
    pub peak_kib: u64,
    pub rss_after_kib: u64,
    /// Descriptors the server held before and after.
    pub fds_before: usize,
    pub fds_after: usize,
    /// Seconds from the last client leaving to the last reading.
    pub settle_secs: f64,
    /// RSS back within 10% of the baseline and the descriptors back to it.
    pub passed: bool,
    /// Messages the waves sent and deliveries lost (each wave's trial).
    pub sent: u64,
    pub lost: u64,
}

/// `--churn N`: waves of `--wave` clients until N have come and gone or `--churn-secs` is up.
pub fn run_churn(opts: &Opts, total: usize) -> io::Result<Report> {
    let progress = !opts.no_progress;
    let mut srv = Server::start(opts, false, "")?;
    let pid = srv.pid.ok_or_else(|| {
        io::Error::other("--churn reads /proc: spawn the server or give --server-pid")
    })?;
    if progress {
        eprintln!(
            "pollchat bench: churn against {} ({})",
            srv.name, srv.pinning
        );
    }
    // The first clients a server ever serves grow what it keeps for any number of them: the
    // code pages their handling touches, the buffers a turn reuses, the allocator's arena. A
    // first wave that is not counted, and the same settling, give the baseline, so the soak
    // measures what churn adds, not what serving anyone at all costs; the cold figure is
    // reported beside it.
    let cold = ProcStats::read(pid).unwrap_or_default();
    let wave = opts.wave.clamp(1, total.max(1));
    let mut warm_up = ChurnResult::default();
    churn_wave(opts, &mut srv, wave, &mut warm_up)?;
    if progress {
        eprintln!(
            "  warm-up wave of {wave}: settling for {} s",
            SETTLE.as_secs()
        );
    }
    std::thread::sleep(SETTLE);
    let before = ProcStats::read(pid).unwrap_or_default();
    let fds_before = target::fd_count(pid).unwrap_or(0);
    let start = Instant::now();
    let mut r = ChurnResult {
        rss_cold_kib: cold.rss_kib,
        rss_before_kib: before.rss_kib,
        fds_before,
        ..ChurnResult::default()
    };
    while r.clients < total && start.elapsed() < secs(opts.churn_secs) {
        let n = wave.min(total - r.clients);
        churn_wave(opts, &mut srv, n, &mut r)?;
        if progress {
            eprintln!(
                "  wave {}: {} clients in all, server RSS {:.1} MiB, {} descriptors",
                r.waves,
                r.clients,
                ProcStats::read(pid).unwrap_or_default().rss_kib as f64 / 1024.0,
                target::fd_count(pid).unwrap_or(0)
            );
        }
    }
    r.secs = start.elapsed().as_secs_f64();
    let left = Instant::now();
    let limit = before.rss_kib as f64 * (1.0 + RSS_TOLERANCE);
    loop {
        let now = ProcStats::read(pid).unwrap_or_default();
        (r.rss_after_kib, r.peak_kib) = (now.rss_kib, now.peak_rss_kib);
        r.fds_after = target::fd_count(pid).unwrap_or(0);
        r.settle_secs = left.elapsed().as_secs_f64();
        r.passed = r.rss_after_kib as f64 <= limit && r.fds_after == fds_before;
        if r.passed || left.elapsed() >= SETTLE {
            break;
        }
        std::thread::sleep(POLL_EVERY);
    }
    srv.check_alive()?;
    Ok(Report {
        scenario: "churn".into(),
        target: srv.name.clone(),
        wire: Wire::Chat.name().into(),
        pinning: srv.pinning.clone(),
        clients: r.clients,
        churn: Some(r),
        server: ProcStats::read(pid),
        ..Report::default()
    })
}

/// One wave: `n` clients connect, join, talk for [`WAVE_TALK`] and all leave at once; counted
/// into `r`.
fn churn_wave(opts: &Opts, srv: &mut Server, n: usize, r: &mut ChurnResult) -> io::Result<()> {
    let mut load = Load::new(
        Plan {
            wire: Wire::Chat,
            addr: srv.line,
            clients: n,
            rooms: n.div_ceil(10),
            senders: n,
            slow: 0,
            payload: 64,
            room_prefix: "ch",
            stay_in_lobby: false,
            tls: None,
        },
        None,
        false,
    )?;
    load.connect(secs(opts.connect_timeout))?;
    let t = load.trial(
        r.waves as u32 + 1,
        false,
        Some(WAVE_RATE),
        Duration::ZERO,
        WAVE_TALK,
        Duration::from_secs(1),
    )?;
    (r.sent, r.lost) = (r.sent + t.sent, r.lost + t.lost);
    // Dropping the generator closes every socket of the wave at once.
    drop(load);
    r.clients += n;
    r.waves += 1;
    srv.check_alive()
}

/// What the mass disconnect found.
#[derive(Clone, Debug, Default)]
pub struct MassResult {
    pub clients: usize,
    pub connect_secs: f64,
    /// The bystanders' trial over the mass close (which happens 1 s into it).
    pub bystander: Trial,
    /// From the close to a watcher seeing `#lobby` down to itself, seconds.
    pub lobby_empty_secs: Option<f64>,
    /// Server CPU time spent from the close until the lobby was empty, seconds.
    pub close_cpu_secs: Option<f64>,
    /// Clients connected when SIGTERM was sent, and how long the process took to exit
    /// (`None`: not within 10 s, or the server was not spawned).
    pub sigterm_clients: usize,
    pub exit_secs: Option<f64>,
}

/// `--mass-disconnect N`.
pub fn run_mass(opts: &Opts, n: usize) -> io::Result<Report> {
    let progress = !opts.no_progress;
    let mut srv = Server::start(opts, false, "")?;
    if progress {
        eprintln!(
            "pollchat bench: mass disconnect against {} ({})",
            srv.name, srv.pinning
        );
    }
    let lobby_members = |addr| Plan {
        wire: Wire::Chat,
        addr,
        clients: n,
        rooms: MASS_ROOMS.min(n.max(1)),
        senders: 0,
        slow: 0,
        payload: 64,
        room_prefix: "r",
        stay_in_lobby: true,
        tls: None,
    };
    let mut members = Load::new(lobby_members(srv.line), None, progress)?;
    let connect_secs = members.connect(secs(opts.connect_timeout))?.as_secs_f64();
    let mut watcher = Watcher::join(srv.line)?;
    let mut bystanders = Load::new(Plan::bystanders(srv.line), srv.pid, false)?;
    bystanders.connect(secs(opts.connect_timeout))?;
    // The close happens on another thread while this one runs the bystanders' trial.
    let warmup = Duration::from_millis(200);
    let close_at = Instant::now() + warmup + MASS_CLOSE_AT;
    let pid = srv.pid;
    let (tx, rx) = mpsc::channel();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(close_at.saturating_duration_since(Instant::now()));
        let cpu0 = pid.and_then(ProcStats::read);
        let closed = Instant::now();
        drop(members);
        let empty = watcher.wait_lobby_alone(Duration::from_secs(10));
        let cpu = match (cpu0, pid.and_then(ProcStats::read)) {
            (Some(a), Some(b)) if empty.is_ok() => Some((b.cpu - a.cpu).as_secs_f64()),
            _ => None,
        };
        let _ = tx.send((empty.ok().map(|()| closed.elapsed().as_secs_f64()), cpu));
    });
    let rate = match opts.rate {
        Some(Rate::PerSec(r)) => r,
        _ => BYSTANDER_RATE,
    };
    let bystander = bystanders.trial(
        1,
        false,
        Some(rate),
        warmup,
        MASS_WINDOW,
        Duration::from_secs(2),
    )?;
    let (lobby_empty_secs, close_cpu_secs) = rx
        .recv()
        .map_err(|_| io::Error::other("the closing thread panicked"))?;
    let _ = closer.join();
    srv.check_alive()?;
    let mut r = MassResult {
        clients: n,
        connect_secs,
        bystander,
        lobby_empty_secs,
        close_cpu_secs,
        ..MassResult::default()
    };
    if let Some(spawned) = srv.spawned.as_mut() {
        let mut again = Load::new(lobby_members(srv.line), None, progress)?;
        again.connect(secs(opts.connect_timeout))?;
        r.sigterm_clients = again.connections();
        if progress {
            eprintln!("  SIGTERM with {} clients connected", r.sigterm_clients);
        }
        r.exit_secs = spawned.terminate(EXIT_WAIT).map(|d| d.as_secs_f64());
    }
    Ok(Report {
        scenario: "mass-disconnect".into(),
        target: srv.name.clone(),
        wire: Wire::Chat.name().into(),
        pinning: srv.pinning.clone(),
        clients: n,
        connect_secs,
        mass: Some(r),
        ..Report::default()
    })
}

/// A plain blocking line client that watches `#lobby`'s member count through `/rooms`.
struct Watcher {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Watcher {
    /// Connects (into `#lobby`) and waits until the greeting is over.
    fn join(addr: SocketAddr) -> io::Result<Watcher> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut w = Watcher {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        };
        w.stream.write_all(b"/away watching\n")?;
        w.until(|l| l.starts_with("NOTICE you are marked as away"))?;
        Ok(w)
    }

    /// Reads lines until one satisfies `done`, and returns it.
    fn until(&mut self, done: impl Fn(&str) -> bool) -> io::Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::other("the server closed the watcher"));
            }
            if done(line.trim_end()) {
                return Ok(line.trim_end().to_string());
            }
        }
    }

    /// Asks `/rooms` until `#lobby` holds only the watcher, for at most `limit`.
    fn wait_lobby_alone(&mut self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            self.stream.write_all(b"/rooms\n")?;
            let lobby = self.until(|l| l.starts_with("ROOM #lobby "))?;
            self.until(|l| l.starts_with("NOTICE ") && l.ends_with(" rooms"))?;
            if lobby.split(' ').nth(2) == Some("1") {
                return Ok(());
            }
            // Not a busy loop of requests: the server is busy enough.
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(io::Error::other("the lobby did not empty"))
    }
}
