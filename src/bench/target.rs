//! The server under test, seen from outside: starting it (pollchat or `redis-server`), pinning
//! it and the generator to different cores, and reading its CPU time and memory from `/proc`.
//!
//! A spawned pollchat server is the same binary (`serve --listen 127.0.0.1:0 ...`); its log goes
//! to a file, from which the bound addresses are read ("listening on ADDR", and "listening for
//! IRC on ADDR" when the generator speaks IRC). A file rather than a pipe, so the generator's
//! single loop never has to drain the server's logging, and the server never blocks on a full
//! pipe.

use std::fs::{self, File};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Flags the generator gives a spawned pollchat server unless the `--spawn` string sets them:
/// no flood control (the load is the point; it applies to IRC connections too), and a send
/// queue deep enough for bursts at high rates (the slow-consumer scenario sets its own
/// `--max-sendq`), and no limit on connects per address (every client comes from 127.0.0.1,
/// thousands of them within a second).
pub const SERVE_DEFAULTS: &[(&str, &str)] = &[
    ("--flood-rate", "0"),
    ("--max-sendq", "16777216"),
    ("--max-connects-per-ip", "0"),
];

/// The IRC listener's flags, unless the `--spawn` string sets `--irc-listen` or `--no-irc`
/// itself: none when the generator speaks the line protocol (IRC's fixed default port would
/// make two servers, or a server already running, collide), an ephemeral loopback port when it
/// speaks IRC. An empty value is a flag without one.
const NO_IRC: (&str, &str) = ("--no-irc", "");
const IRC_EPHEMERAL: (&str, &str) = ("--irc-listen", "127.0.0.1:0");

/// How long a spawned server may take, after logging its line-protocol address, to log its IRC
/// one: they are logged together, so only a server without an IRC listener takes longer.
const IRC_LOG_GRACE: Duration = Duration::from_secs(2);

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A server process started by the generator; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Spawned {
    child: Child,
    /// Where it accepts line-protocol clients (Redis: its only address).
    pub addr: SocketAddr,
    /// Where it accepts IRC clients, when asked for.
    pub irc_addr: Option<SocketAddr>,
    pub log: PathBuf,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; returns how long it took
    /// (`None`: still running at `limit`, and killed when dropped).
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        while start.elapsed() < limit {
            if !self.alive() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// Lines of the server's log containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        fs::read_to_string(&self.log)
            .map(|s| s.lines().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                let _ = fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.log);
    }
}

/// The full argument list for a spawned pollchat server: `serve`, a loopback ephemeral port, the
/// defaults not overridden by `extra` (with an IRC listener on an ephemeral port if `irc`), then
/// `extra` itself (split on whitespace).
pub fn serve_args(extra: &str, irc: bool) -> Vec<String> {
    let set = |flag: &str| sets_flag(extra, flag);
    let extra: Vec<String> = extra.split_whitespace().map(String::from).collect();
    let mut args = vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into()];
    let irc_default = if irc { IRC_EPHEMERAL } else { NO_IRC };
    let irc_set = set(NO_IRC.0) || set(IRC_EPHEMERAL.0);
    for &(flag, value) in SERVE_DEFAULTS
        .iter()
        .chain((!irc_set).then_some(&irc_default))
    {
        if !set(flag) {
            args.push(flag.to_string());
            if !value.is_empty() {
                args.push(value.to_string());
            }
        }
    }
    args.extend(extra);
    args
}

/// Whether the serve arguments `extra` set `flag` (as `--flag value` or `--flag=value`).
pub fn sets_flag(extra: &str, flag: &str) -> bool {
    extra
        .split_whitespace()
        .any(|a| a == flag || a.strip_prefix(flag).is_some_and(|v| v.starts_with('=')))
}

/// Starts `exe serve ...` pinned to `cpu` (if any) and waits for its "listening on" log line,
/// and with `irc` for its "listening for IRC on" line too. The same for every I/O model: one
/// that does not log an IRC address has no IRC listener, and `irc` fails for it.
pub fn spawn_pollchat(
    exe: &Path,
    extra: &str,
    irc: bool,
    cpu: Option<usize>,
) -> io::Result<Spawned> {
    let log = log_path("pollchat");
    let mut cmd = Command::new(exe);
    cmd.args(serve_args(extra, irc));
    let child = start(cmd, &log, cpu)?;
    let mut spawned = Spawned {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        irc_addr: None,
        log,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let mut listening_since = None;
    loop {
        let text = fs::read_to_string(&spawned.log).unwrap_or_default();
        if let Some(addr) = listening_addr(&text) {
            spawned.addr = addr;
            spawned.irc_addr = irc_listening_addr(&text);
            if !irc || spawned.irc_addr.is_some() {
                return Ok(spawned);
            }
            let since = *listening_since.get_or_insert_with(Instant::now);
            if since.elapsed() > IRC_LOG_GRACE {
                return Err(io::Error::other(format!(
                    "server `{} {}` has no IRC listener (no \"listening for IRC on\" in its log)",
                    exe.display(),
                    extra
                )));
            }
        }
        if !spawned.alive() || Instant::now() > deadline {
            let why = text
                .lines()
                .last()
                .unwrap_or("no output")
                .trim()
                .to_string();
            return Err(io::Error::other(format!(
                "server `{} {}` did not start: {why}",
                exe.display(),
                extra
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the binary's `serve` accepts `--io MODEL` (an older build, or a model it lacks, makes
/// clap refuse the flag before `--help` is reached).
pub fn supports_io(exe: &Path, model: &str) -> bool {
    Command::new(exe)
        .args(["serve", "--io", model, "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `redis-server` from PATH on a free loopback port, pinned to `cpu`, without persistence.
pub fn spawn_redis(cpu: Option<usize>) -> io::Result<Spawned> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = log_path("redis");
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args(["--maxclients", "19000"]);
    let child = start(cmd, &log, cpu)?;
    let mut spawned = Spawned {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        irc_addr: None,
        log,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(spawned.addr).is_err() {
        if !spawned.alive() || Instant::now() > deadline {
            return Err(io::Error::other("redis-server did not start"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(spawned)
}

/// Whether `redis-server` is on PATH.
pub fn have_redis() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start(mut cmd: Command, log: &Path, cpu: Option<usize>) -> io::Result<Child> {
    let out = File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    if let Some(cpu) = cpu {
        // SAFETY: between fork and exec only sched_setaffinity runs, which is async-signal-safe;
        // threads the server starts later inherit the mask.
        unsafe {
            cmd.pre_exec(move || {
                pin(0, cpu);
                Ok(())
            });
        }
    }
    cmd.spawn()
}

fn log_path(what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "pollchat-bench-{}-{what}-{n}.log",
        std::process::id()
    ))
}

/// The address in a "listening on ADDR" log line.
pub fn listening_addr(log: &str) -> Option<SocketAddr> {
    logged_addr(log, "listening on ")
}

/// The address in a "listening over TLS on ADDR" log line (the line protocol's TLS door).
pub fn tls_listening_addr(log: &str) -> Option<SocketAddr> {
    logged_addr(log, "listening over TLS on ")
}

/// Waits for a spawned server's "listening over TLS on ADDR" line (logged right after its
/// plain listeners).
pub fn wait_tls_addr(spawned: &Spawned) -> io::Result<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = fs::read_to_string(&spawned.log).unwrap_or_default();
        if let Some(addr) = tls_listening_addr(&text) {
            return Ok(addr);
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(
                "the server has no TLS listener (no \"listening over TLS on\" in its log)",
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The address in a "listening for IRC on ADDR" log line.
pub fn irc_listening_addr(log: &str) -> Option<SocketAddr> {
    logged_addr(log, "listening for IRC on ")
}

fn logged_addr(log: &str, before: &str) -> Option<SocketAddr> {
    log.lines().find_map(|l| {
        let rest = &l[l.find(before)? + before.len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins thread/process `pid` (0: the caller) to one CPU. Returns whether it worked.
pub fn pin(pid: libc::pid_t, cpu: usize) -> bool {
    // SAFETY: as above; a plain system call on a local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// CPU time (user + system) this process has used so far, from getrusage.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A process's CPU time and memory, from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// User + system time of all its threads.
    pub cpu: Duration,
    /// Resident set size now, and its peak, in KiB.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

impl ProcStats {
    pub fn read(pid: u32) -> Option<ProcStats> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(parse_proc(&stat, &status, clock_ticks()))
    }
}

/// How many file descriptors process `pid` holds (`/proc/PID/fd`), if it can be read.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Resets process `pid`'s peak resident size (VmHWM) to its current one (`echo 5 >
/// /proc/PID/clear_refs`, Linux 4.0 and later), so the next reading is the peak of what
/// happens from now on. Returns whether it worked (it needs the right to write there).
pub fn reset_peak(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Parses the two `/proc` files (kept apart from reading them, for tests).
pub fn parse_proc(stat: &str, status: &str, ticks_per_sec: u64) -> ProcStats {
    // The command name, field 2, is in parentheses and may hold spaces: count from after it.
    let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the whole line are 12 and 13 after the name.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = tick(11) + tick(12);
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    ProcStats {
        cpu: Duration::from_micros(ticks * 1_000_000 / ticks_per_sec.max(1)),
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_args_keep_what_the_user_set() {
        assert_eq!(
            serve_args("--io threads", false),
            [
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--flood-rate",
                "0",
                "--max-sendq",
                "16777216",
                "--max-connects-per-ip",
                "0",
                "--no-irc",
                "--io",
                "threads"
            ]
        );
        let args = serve_args("--max-sendq 1048576", false);
        assert_eq!(args.iter().filter(|a| *a == "--max-sendq").count(), 1);
        assert!(args.ends_with(&["--max-sendq".into(), "1048576".into()]));
    }

    #[test]
    fn spawn_args_for_irc_listen_on_an_ephemeral_port() {
        let args = serve_args("--io threads", true);
        assert!(!args.contains(&"--no-irc".to_string()));
        let at = args.iter().position(|a| a == "--irc-listen").unwrap();
        assert_eq!(args[at + 1], "127.0.0.1:0");
        assert!(args.contains(&"--flood-rate".to_string()));
        // What the user says about IRC wins, either way.
        for (extra, irc) in [("--irc-listen 127.0.0.1:7000", true), ("--no-irc", true)] {
            let args = serve_args(extra, irc);
            assert_eq!(
                args.iter().filter(|a| a.contains("irc")).count(),
                1,
                "{args:?}"
            );
        }
        let args = serve_args("--irc-listen=127.0.0.1:7000", false);
        assert!(!args.contains(&"--no-irc".to_string()));
    }

    #[test]
    fn finds_the_bound_address_in_the_log() {
        let log = "2026-11-27T19:00:00.000Z INFO  [pollchat] max clients 19968\n\
                   2026-11-27T19:00:00.001Z INFO  [pollchat::driver::poll] listening on 127.0.0.1:40123\n";
        assert_eq!(
            listening_addr(log),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(listening_addr("starting\n"), None);
        let both = format!(
            "{log}2026-11-27T19:00:00.001Z INFO  [pollchat::driver::poll] listening for IRC on 127.0.0.1:40124\n"
        );
        assert_eq!(listening_addr(&both), listening_addr(log));
        assert_eq!(
            irc_listening_addr(&both),
            Some("127.0.0.1:40124".parse().unwrap())
        );
        assert_eq!(irc_listening_addr(log), None);
    }

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (pollchat serve) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        let status = "Name:\tpollchat\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        let s = parse_proc(stat, status, 100);
        assert_eq!(s.cpu, Duration::from_secs(3));
        assert_eq!((s.rss_kib, s.peak_rss_kib), (10240, 20480));
    }
}
