//! `pollchat bench`: the load generator, itself one mio loop on one thread.
//!
//! It targets a running server (`--addr`) or starts one (`--spawn "<serve args>"`, the same
//! binary; `--redis` for Redis pub/sub), speaking the line protocol or (`--irc`) IRC, pins the server and itself to different cores, connects
//! the clients and runs a scenario: a fixed open-loop rate (or `max`), a `--step` search for the
//! highest sustainable rate, `--idle N` connections, or `--slow N` clients that stop reading. It
//! reports deliveries, loss, duplicates, latency percentiles, its own CPU use and the server's
//! CPU and memory, as a table or as `--json`.
//!
//! Layout: [`wire`] (payloads and server lines), [`stats`] (delivery accounting, the step
//! search), [`load`] (the event loop), [`target`] (the server process, `/proc`, pinning),
//! [`report`] (table and JSON), [`chart`] (the SVG chart `cargo bench` draws).

pub mod attack;
pub mod chart;
pub mod churn;
pub mod load;
pub mod report;
pub mod stats;
pub mod target;
pub mod wire;

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use attack::{Attack, AttackResult, Attacks};
use churn::{ChurnResult, MassResult};
use load::{Load, Plan, SlowOutcome, Trial, Wire};
use stats::StepSearch;
use target::{ProcStats, Spawned};

/// Deliveries a `--step` search starts at, in total per second, unless `--rate` says otherwise.
const STEP_START_DELIVERIES: f64 = 100_000.0;
/// Each `--step` trial multiplies the rate by this until one fails...
const STEP_FACTOR: f64 = 2.0;
/// ...then narrows the gap this many times...
const STEP_REFINEMENTS: u32 = 2;
/// ...within this many trials in all.
const STEP_BUDGET: u32 = 14;

/// The flags of `pollchat bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// Address of a running server to load (loopback only). Without it a server is spawned
    #[arg(long, conflicts_with = "spawn")]
    pub addr: Option<SocketAddr>,
    /// PID of the server at --addr, to read its CPU time and memory from /proc
    #[arg(long, requires = "addr")]
    pub server_pid: Option<u32>,
    /// With --addr and --attack: the running server's IRC address, for the attacks over IRC
    /// (without it they run over the line protocol only)
    #[arg(long, requires = "addr")]
    pub irc_addr: Option<SocketAddr>,
    /// Start `pollchat serve --listen 127.0.0.1:0 --flood-rate 0 --max-sendq 16777216
    /// --max-connects-per-ip 0 --no-irc ARGS`
    /// (the same binary; with --irc, `--irc-listen 127.0.0.1:0` instead of `--no-irc`) and load
    /// it, e.g. --spawn "--io threads". This is the default, with no ARGS, when --addr is not
    /// given
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub spawn: Option<String>,
    /// Speak Redis pub/sub (SUBSCRIBE/PUBLISH) instead of the line protocol: to --addr, or to
    /// a `redis-server` started from PATH
    #[arg(long)]
    pub redis: bool,
    /// Speak IRC instead of the line protocol: every client registers (NICK/USER), JOINs its
    /// room and sends PRIVMSG; --addr is then the server's IRC address. --payload must leave
    /// the PRIVMSG line within IRC's 510 bytes
    #[arg(long, conflicts_with = "redis")]
    pub irc: bool,
    /// Connected clients
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Rooms; client i joins room #r(i % rooms)
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Clients that send (the first ones of each room) [default: all but --slow]
    #[arg(long)]
    pub senders: Option<usize>,
    /// Bytes of text per message
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(24..=4000))]
    pub payload: u64,
    /// Seconds measured
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of sending before measuring starts
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Messages per second per sending client (open loop: each message carries its intended
    /// send time and latency counts from it), or `max` to send as fast as the server delivers
    /// (at most 1,000 deliveries per connection in flight).
    /// With --step: the rate to start from [default: what gives 100,000 deliveries/s]
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<Rate>,
    /// Raise the rate (×2, then bisect) until under 99% of deliveries arrive or p99 passes
    /// 50 ms, and report the highest sustainable deliveries/s and the latency at half of it
    #[arg(long, conflicts_with_all = ["idle", "slow"])]
    pub step: bool,
    /// Seconds measured per --step trial (after 0.5 s of warm-up)
    #[arg(long, default_value_t = 2.0)]
    pub step_secs: f64,
    /// Hold N connected, joined, silent clients and report the server's memory per connection
    /// and the connect time (--rooms spreads them; default rooms of 10)
    #[arg(long, value_name = "N", conflicts_with = "slow")]
    pub idle: Option<usize>,
    /// --idle: clients stay in #lobby as well as joining their room, as users who never type
    /// /part do (by default they leave it)
    #[arg(long, requires = "idle")]
    pub stay_in_lobby: bool,
    /// Hostile clients, each attack for --duration seconds against a fresh server while two
    /// bystanders measure their latency (--rate messages/s, default 50): never-read-listing,
    /// never-read-joiners, comma-lists, slow-loris, reconnect-storm, a comma-separated list of
    /// them, or `all`. Reports the server's VmRSS and VmHWM before, during and after, the
    /// bystanders' latency and how many hostile sockets the server closed
    #[arg(long, value_name = "KINDS", value_parser = Attack::parse_list,
          conflicts_with_all = ["step", "idle", "slow", "redis", "irc"])]
    pub attack: Option<Attacks>,
    /// --attack: hostile sockets
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub hostile: usize,
    /// --attack never-read-listing: clients that fill the server first, each in #lobby and in
    /// a room of its own (so up to 9,990 rooms, under the default --max-total-rooms)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub fillers: usize,
    /// Churn soak: N clients in all connect, join a room, talk and leave, in waves of --wave,
    /// for at most --churn-secs; reports server RSS before, at the peak and after the server
    /// trimmed, and its descriptors before and after
    #[arg(long, value_name = "N",
          conflicts_with_all = ["step", "idle", "slow", "redis", "irc", "attack"])]
    pub churn: Option<usize>,
    /// --churn: clients per wave
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub wave: usize,
    /// --churn: seconds the waves may take in all
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    pub churn_secs: f64,
    /// Mass disconnect: N clients in #lobby (and one of 100 rooms) close at once while two
    /// bystanders measure their latency (--rate, default 100); then N clients again and
    /// SIGTERM, timing the exit (a spawned server only)
    #[arg(long, value_name = "N",
          conflicts_with_all = ["step", "idle", "slow", "redis", "irc", "attack", "churn"])]
    pub mass_disconnect: Option<usize>,
    /// The line protocol over TLS: a spawned server gets a self-signed pair made for the run
    /// and a TLS listener (with --addr, give the TLS address); the generator trusts any
    /// certificate. Load, step and idle scenarios
    #[arg(long, conflicts_with_all = ["redis", "irc", "slow", "attack", "churn", "mass_disconnect"])]
    pub tls: bool,
    /// Make the last N clients stop reading once the run starts, and report what happened to
    /// them and the others' latency
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub slow: usize,
    /// Seconds connecting and joining every client may take before the run fails
    #[arg(long, default_value_t = 60.0)]
    pub connect_timeout: f64,
    /// Print the report as JSON on stdout (progress still goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr
    #[arg(long)]
    pub no_progress: bool,
    /// Do not pin the server and the generator to different cores
    #[arg(long)]
    pub no_pin: bool,
    /// The pollchat binary to spawn [default: this one]
    #[arg(long, hide = true)]
    pub exe: Option<PathBuf>,
}

/// Parses `pollchat bench` flags (without the subcommand name), for programs that drive the
/// generator as a library, such as `cargo bench`.
pub fn parse_opts<I, T>(args: I) -> Result<Opts, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        opts: Opts,
    }
    let args =
        std::iter::once(std::ffi::OsString::from("bench")).chain(args.into_iter().map(Into::into));
    let wrapper = Wrapper::try_parse_from(args)?;
    Ok(wrapper.opts)
}

/// A sending rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    PerSec(f64),
    Max,
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s == "max" {
        return Ok(Rate::Max);
    }
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSec(r)),
        _ => Err(format!(
            "{s:?} is neither a positive number of messages/s nor `max`"
        )),
    }
}

/// Memory per connection in the idle scenario.
#[derive(Clone, Debug, Default)]
pub struct IdleMemory {
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// (RSS after − before) / clients, once the server has settled: what it keeps per client.
    pub bytes_per_conn: f64,
    /// The peak (VmHWM) the server reached, in KiB: what a host must be able to hold while the
    /// clients arrive (a Pi is killed by the peak, not by the settled figure).
    pub peak_kib: u64,
    /// (peak − RSS before) / clients.
    pub peak_bytes_per_conn: f64,
}

/// Everything one run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// "load", "step", "idle", "slow", "attack", "churn" or "mass-disconnect".
    pub scenario: String,
    /// What was loaded: the spawn command, "redis-server", or the address.
    pub target: String,
    /// What the clients spoke: "line protocol", "IRC" or "Redis pub/sub".
    pub wire: String,
    /// Which cores server and generator ran on.
    pub pinning: String,
    pub clients: usize,
    pub rooms: usize,
    pub senders: usize,
    pub slow: usize,
    pub payload: usize,
    pub connect_secs: f64,
    /// Every measured trial (one, or each step of `--step`).
    pub trials: Vec<Trial>,
    /// `--step`: the highest sustainable trial, and the trial at half its rate.
    pub best: Option<Trial>,
    pub at_half: Option<Trial>,
    pub idle: Option<IdleMemory>,
    pub slow_outcome: Option<SlowOutcome>,
    /// `--attack`: one result per attack.
    pub attacks: Vec<AttackResult>,
    pub churn: Option<ChurnResult>,
    pub mass: Option<MassResult>,
    /// The server at the end of the run.
    pub server: Option<ProcStats>,
    /// Lines the server sent that were errors (should be none).
    pub errors: Vec<String>,
}

impl Report {
    /// The trial whose latency represents the run: at half the best rate for `--step`.
    pub fn main_trial(&self) -> Option<&Trial> {
        self.at_half.as_ref().or(self.trials.last())
    }
}

/// The server a scenario runs against: spawned (and stopped when this is dropped) or given by
/// `--addr`, and how it and the generator were pinned.
pub struct Server {
    /// Where line-protocol clients connect (`--addr` itself when given; Redis: its address).
    pub line: SocketAddr,
    /// Where IRC clients connect, if known.
    pub irc: Option<SocketAddr>,
    /// Where line-protocol clients connect over TLS (`--tls`).
    pub tls: Option<SocketAddr>,
    /// Its process, for `/proc`.
    pub pid: Option<u32>,
    /// How reports name it: the spawn command, "redis-server", or the address.
    pub name: String,
    pub pinning: String,
    pub spawned: Option<Spawned>,
}

impl Server {
    /// Spawns the server the options describe (pollchat with `--spawn`'s arguments after
    /// `extra`, with an IRC listener if `irc`; or `redis-server`) or takes `--addr`, and pins
    /// it and the generator to different cores when there are two or more.
    pub fn start(opts: &Opts, irc: bool, extra: &str) -> io::Result<Server> {
        // Each client is a descriptor (two for a Redis sender).
        let _ = crate::limits::raise_nofile();
        // Read once per process: after the first pinning the generator may run on one CPU only,
        // and a second server (one per attack) must still get the other.
        static CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
        let cpus = CPUS.get_or_init(target::allowed_cpus);
        let (server_cpu, gen_cpu) = match cpus.as_slice() {
            [first, .., last] if !opts.no_pin => (Some(*last), Some(*first)),
            _ => (None, None),
        };
        let mut srv = if let Some(addr) = opts.addr {
            Server {
                line: addr,
                irc: opts.irc_addr,
                tls: opts.tls.then_some(addr),
                pid: opts.server_pid,
                name: format!("pollchat at {addr}"),
                pinning: String::new(),
                spawned: None,
            }
        } else if opts.redis {
            let s = target::spawn_redis(server_cpu)?;
            Server {
                line: s.addr,
                irc: None,
                tls: None,
                pid: Some(s.pid()),
                name: "redis-server".into(),
                pinning: String::new(),
                spawned: Some(s),
            }
        } else {
            let exe = match &opts.exe {
                Some(e) => e.clone(),
                None => std::env::current_exe()?,
            };
            // --tls: a pair made for this run, read by the server as it starts.
            let cert_dir =
                std::env::temp_dir().join(format!("pollchat-bench-tls-{}", std::process::id()));
            let tls_args = if opts.tls {
                let (cert, key) = crate::net::tls::self_signed(&["localhost".into()])
                    .map_err(io::Error::other)?;
                fs::create_dir_all(&cert_dir)?;
                fs::write(cert_dir.join("cert.pem"), cert)?;
                fs::write(cert_dir.join("key.pem"), key)?;
                format!(
                    "--tls-cert {0}/cert.pem --tls-key {0}/key.pem --tls-listen 127.0.0.1:0",
                    cert_dir.display()
                )
            } else {
                String::new()
            };
            let args = format!(
                "{extra} {tls_args} {}",
                opts.spawn.as_deref().unwrap_or_default()
            );
            let args = args.trim();
            let s = target::spawn_pollchat(&exe, args, irc, server_cpu)?;
            let tls = if opts.tls {
                let addr = target::wait_tls_addr(&s)?;
                let _ = fs::remove_dir_all(&cert_dir);
                Some(addr)
            } else {
                None
            };
            Server {
                line: s.addr,
                irc: s.irc_addr,
                tls,
                pid: Some(s.pid()),
                name: format!("pollchat {}", target::serve_args(args, irc).join(" ")),
                pinning: String::new(),
                spawned: Some(s),
            }
        };
        srv.pinning = match (server_cpu, gen_cpu, opts.addr) {
            (Some(s), Some(g), None) if target::pin(0, g) => {
                format!("server pinned to CPU {s}, generator to CPU {g}")
            }
            (Some(_), Some(g), Some(_)) if target::pin(0, g) => {
                format!("generator pinned to CPU {g}; the server at --addr is not pinned by us")
            }
            _ => format!("not pinned ({} CPUs available)", cpus.len()),
        };
        Ok(srv)
    }

    /// Fails if a spawned server has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        if self.spawned.as_mut().is_some_and(|s| !s.alive()) {
            return Err(io::Error::other("the server exited during the run"));
        }
        Ok(())
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Runs the scenario the options describe.
pub fn run(opts: &Opts) -> io::Result<Report> {
    if let Some(kinds) = &opts.attack {
        return attack::run(opts, &kinds.0);
    }
    if let Some(n) = opts.churn {
        return churn::run_churn(opts, n);
    }
    if let Some(n) = opts.mass_disconnect {
        return churn::run_mass(opts, n);
    }
    if opts.clients == 0 || opts.rooms == 0 || opts.slow >= opts.clients.max(1) && opts.slow > 0 {
        return Err(io::Error::other(
            "need at least one client and one room, and fewer --slow than --clients",
        ));
    }
    let longest = wire::irc_privmsg_len(opts.rooms - 1, opts.payload as usize);
    if opts.irc && longest > wire::IRC_MAX_LINE {
        return Err(io::Error::other(format!(
            "--payload {} does not fit IRC: `PRIVMSG #r{} :<payload>` is {longest} bytes, over {}",
            opts.payload,
            opts.rooms - 1,
            wire::IRC_MAX_LINE
        )));
    }
    let srv = Server::start(opts, opts.irc, "")?;
    let (pid, pinning) = (srv.pid, srv.pinning.clone());
    let progress = !opts.no_progress;
    let (addr, target_name) = match (opts.addr, opts.redis, opts.irc) {
        // A given address is the one to speak to: with --irc, the IRC listener.
        (Some(addr), true, _) => (addr, format!("redis at {addr}")),
        (Some(addr), _, true) => (addr, format!("pollchat IRC at {addr}")),
        (None, false, true) => (
            srv.irc
                .ok_or_else(|| io::Error::other("the server has no IRC listener"))?,
            srv.name.clone(),
        ),
        _ if opts.tls => (
            srv.tls
                .ok_or_else(|| io::Error::other("the server has no TLS listener"))?,
            format!("{} (over TLS)", srv.name),
        ),
        _ => (srv.line, srv.name.clone()),
    };
    let mut spawned = srv.spawned;
    let idle = opts.idle;
    let clients = idle.unwrap_or(opts.clients);
    let rooms = match idle {
        Some(n) if opts.rooms == 1 => n.div_ceil(10).max(1),
        _ => opts.rooms,
    };
    let senders = if idle.is_some() {
        0
    } else {
        opts.senders.unwrap_or(clients).min(clients - opts.slow)
    };
    let plan = Plan {
        wire: match (opts.redis, opts.irc) {
            (true, _) => Wire::Redis,
            (_, true) => Wire::Irc,
            _ => Wire::Chat,
        },
        addr,
        clients,
        rooms,
        senders,
        slow: opts.slow,
        payload: opts.payload as usize,
        room_prefix: "r",
        stay_in_lobby: opts.stay_in_lobby,
        tls: opts.tls.then(crate::client::insecure_config),
    };
    let mut report = Report {
        scenario: match (opts.step, idle, opts.slow) {
            (true, ..) => "step",
            (_, Some(_), _) => "idle",
            (_, _, n) if n > 0 => "slow",
            _ => "load",
        }
        .into(),
        target: target_name,
        wire: plan.wire.name().into(),
        pinning,
        clients,
        rooms,
        senders,
        slow: opts.slow,
        payload: plan.payload,
        ..Report::default()
    };
    if progress {
        eprintln!(
            "pollchat bench: {} against {} ({})",
            report.scenario, report.target, report.pinning
        );
    }
    let rss_before = pid.and_then(ProcStats::read).map(|s| s.rss_kib);
    let mut load = Load::new(plan.clone(), pid, progress)?;
    report.connect_secs = load.connect(secs(opts.connect_timeout))?.as_secs_f64();
    if let Some(n) = idle {
        // The event loop hands freed heap memory back to the kernel once it has been quiet for
        // 5 s after clients came (see `driver::poll`): memory is read after that, as an idle
        // server would keep it.
        load.idle(Duration::from_secs(7))?;
        if let (Some(before), Some(after)) = (rss_before, pid.and_then(ProcStats::read)) {
            let per_conn = |kib: u64| (kib.saturating_sub(before) * 1024) as f64 / n as f64;
            report.idle = Some(IdleMemory {
                rss_before_kib: before,
                rss_after_kib: after.rss_kib,
                bytes_per_conn: per_conn(after.rss_kib),
                peak_kib: after.peak_rss_kib,
                peak_bytes_per_conn: per_conn(after.peak_rss_kib),
            });
        }
    } else if opts.step {
        step(opts, &plan, &mut load, &mut report, spawned.as_mut())?;
    } else {
        let rate = match opts.rate.unwrap_or(Rate::PerSec(10.0)) {
            Rate::PerSec(r) => Some(r),
            Rate::Max => None,
        };
        let t = load.trial(
            1,
            false,
            rate,
            secs(opts.warmup),
            secs(opts.duration),
            Duration::from_secs(2),
        )?;
        report.trials.push(t);
        if opts.slow > 0 {
            report.slow_outcome = Some(load.slow_outcome());
        }
    }
    report.server = pid.and_then(ProcStats::read);
    report.errors = load.errors.clone();
    if let Some(s) = spawned.as_mut()
        && !s.alive()
    {
        return Err(io::Error::other("the server exited during the run"));
    }
    Ok(report)
}

/// `--step`: the rate search, then a trial at half the best rate for latency.
fn step(
    opts: &Opts,
    plan: &Plan,
    load: &mut Load,
    report: &mut Report,
    mut spawned: Option<&mut Spawned>,
) -> io::Result<()> {
    let per_message = (0..plan.rooms)
        .map(|r| plan.recipients(r))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let start = match opts.rate {
        Some(Rate::PerSec(r)) => r,
        _ => STEP_START_DELIVERIES / (plan.senders.max(1) as f64 * per_message),
    };
    let mut search = StepSearch::new(start, STEP_FACTOR, STEP_REFINEMENTS, STEP_BUDGET);
    let mut id = 0;
    while let Some(rate) = search.next_rate() {
        id += 1;
        let t = load.trial(
            id,
            true,
            Some(rate),
            Duration::from_millis(500),
            secs(opts.step_secs),
            Duration::from_secs(1),
        )?;
        search.record(t.sustainable);
        if t.sustainable
            && report
                .best
                .as_ref()
                .is_none_or(|b| b.deliveries_per_sec() < t.deliveries_per_sec())
        {
            report.best = Some(t.clone());
        }
        let gone = t.disconnects > 0;
        report.trials.push(t);
        if gone || spawned.as_mut().is_some_and(|s| !s.alive()) {
            // Clients were dropped (or the server died): later trials would measure fewer.
            break;
        }
    }
    if let Some(best) = search.best() {
        id += 1;
        let t = load.trial(
            id,
            false,
            Some(best / 2.0),
            secs(opts.warmup),
            secs(opts.duration),
            Duration::from_secs(2),
        )?;
        report.at_half = Some(t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_for_library_callers() {
        let o = parse_opts(["--clients", "7", "--rate", "max", "--spawn", "--io threads"]).unwrap();
        assert_eq!(
            (o.clients, o.rate, o.spawn.as_deref()),
            (7, Some(Rate::Max), Some("--io threads"))
        );
        assert!(parse_opts(["--bogus"]).is_err());
        assert!(parse_opts(["--irc"]).unwrap().irc);
        assert!(parse_opts(["--irc", "--redis"]).is_err());
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("2.5"), Ok(Rate::PerSec(2.5)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
