//! `cargo bench`'s end-to-end benchmark: the scenario matrix (fan-out, rooms, broadcast,
//! idle, slow consumer) against every I/O model of the binary cargo built, fan-out over IRC
//! against the models that serve IRC, plus Redis pub/sub when `redis-server` is on PATH, printed as one table with poll/threads and poll/redis ratios,
//! and an SVG chart of deliveries/s and p99 against clients per model.
//!
//! Each run spawns `pollchat serve --io MODEL` (env!("CARGO_BIN_EXE_pollchat")) pinned to one
//! core and drives it with the `pollchat bench` generator (the library, one mio loop) on the
//! other. A model the binary does not know (`--io` refused) is reported and skipped.
//!
//! `cargo bench -- --quick` (or POLLCHAT_BENCH_QUICK=1) runs a smaller matrix. Under
//! `cargo test --all-targets` (no `--bench` argument) nothing runs: speed is shown only here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use pollchat::bench::{self, Report, chart, report::thousands, target};

const MODELS: [&str; 3] = ["poll", "threads", "threads-direct"];
/// The models whose IRC listener the IRC scenarios load: every model serves IRC.
const IRC_MODELS: [&str; 3] = MODELS;

/// Which targets a scenario runs against.
#[derive(Clone, Copy, PartialEq)]
enum On {
    /// Every I/O model and Redis.
    ModelsAndRedis,
    /// Every I/O model.
    Models,
    /// The models in [`IRC_MODELS`].
    IrcModels,
}

impl On {
    fn includes(self, target: &str) -> bool {
        match self {
            On::ModelsAndRedis => true,
            On::Models => target != "redis",
            On::IrcModels => IRC_MODELS.contains(&target),
        }
    }
}

/// One scenario of the matrix: generator flags and extra server flags.
struct Scenario {
    name: &'static str,
    args: String,
    serve: &'static str,
    on: On,
}

/// How long the trials run. Quick mode keeps every scenario and every model but measures most
/// for a quarter of the time: enough to see that everything works and roughly where each model
/// stands, not figures to publish.
struct Timing {
    /// Seconds measured and of warm-up in the scenarios, and per `--step` trial.
    measure: &'static str,
    warmup: &'static str,
    step_secs: &'static str,
    /// The same for the trial at half the best rate of the chart's sweep.
    sweep_measure: &'static str,
    sweep_warmup: &'static str,
    /// Clients in the idle scenario.
    idle: usize,
    /// Seconds measured and of warm-up in the slow-consumer scenario: the five have to fill the
    /// kernel's socket buffers and a 1 MiB send queue before they are cut off (after 2.5 s of
    /// sending none was, here; after 4 s all five were).
    slow_measure: &'static str,
    slow_warmup: &'static str,
}

fn timing(quick: bool) -> Timing {
    if quick {
        Timing {
            measure: "2",
            warmup: "0.5",
            step_secs: "0.5",
            sweep_measure: "2",
            sweep_warmup: "0.5",
            idle: 2000,
            slow_measure: "3",
            slow_warmup: "1",
        }
    } else {
        Timing {
            measure: "8",
            warmup: "2",
            step_secs: "1.5",
            sweep_measure: "3",
            sweep_warmup: "1",
            idle: 10_000,
            slow_measure: "8",
            slow_warmup: "2",
        }
    }
}

fn matrix(quick: bool) -> Vec<Scenario> {
    let Timing {
        measure,
        warmup,
        step_secs,
        idle,
        slow_measure,
        slow_warmup,
        ..
    } = timing(quick);
    let load = format!("--duration {measure} --warmup {warmup}");
    let slow_load = format!("--duration {slow_measure} --warmup {slow_warmup}");
    vec![
        Scenario {
            name: "fan-out",
            args: format!("--clients 100 --rooms 1 --step --step-secs {step_secs} {load}"),
            serve: "",
            on: On::ModelsAndRedis,
        },
        Scenario {
            name: "fan-out, IRC",
            // The same over IRC: every delivery is a `:nick!user@host PRIVMSG #r0 :` line.
            args: format!("--irc --clients 100 --rooms 1 --step --step-secs {step_secs} {load}"),
            serve: "",
            on: On::IrcModels,
        },
        Scenario {
            name: "rooms",
            args: format!("--clients 1000 --rooms 100 --rate 2 {load}"),
            serve: "",
            on: On::Models,
        },
        Scenario {
            name: "broadcast",
            args: format!("--clients 1000 --rooms 1 --senders 1 --rate 100 {load}"),
            serve: "",
            on: On::ModelsAndRedis,
        },
        Scenario {
            name: "idle",
            args: format!("--idle {idle} --rooms {}", idle / 10),
            serve: "",
            on: On::Models,
        },
        Scenario {
            name: "slow consumer",
            // Big messages at a modest rate: the 5 fill the kernel's buffers and a 1 MiB send
            // queue within seconds while the others' deliveries stay light for the generator.
            args: format!("--clients 100 --rooms 1 --slow 5 --payload 1000 --rate 20 {slow_load}"),
            serve: "--max-sendq 1048576",
            on: On::Models,
        },
    ]
}

/// Client counts of the chart's sweep (fan-out step searches; 100 is the fan-out scenario).
fn sweep(quick: bool) -> Vec<usize> {
    if quick {
        vec![30, 100]
    } else {
        vec![30, 100, 300]
    }
}

/// Runs the generator against `target` (a model name or "redis"); `io` is the `--io` flag to
/// pass (none for a binary whose only server is the poll loop).
fn run(args: &str, target: &str, io: &str, serve: &str, exe: &str) -> Result<Report, String> {
    let mut argv: Vec<String> = args.split_whitespace().map(String::from).collect();
    argv.extend([
        "--no-progress".into(),
        "--connect-timeout".into(),
        "30".into(),
    ]);
    if target == "redis" {
        argv.push("--redis".into());
    } else {
        argv.extend(["--exe".into(), exe.into(), "--spawn".into()]);
        argv.push(format!("{io} {serve}"));
    }
    let opts = bench::parse_opts(&argv).map_err(|e| e.to_string())?;
    bench::run(&opts).map_err(|e| e.to_string())
}

/// The figures of one scenario's report that go in the table: (metric, value, higher is better).
fn figures(name: &str, r: &Report) -> Vec<(String, f64, bool)> {
    let mut out = Vec::new();
    let main = r.main_trial();
    match name {
        "fan-out" | "fan-out, IRC" => {
            let best = r.best.as_ref().map_or(0.0, |b| b.deliveries_per_sec());
            out.push(("sustainable deliveries/s".into(), best, true));
            if let Some(h) = &r.at_half {
                out.push(("p50 ms at half".into(), h.p50_us as f64 / 1e3, false));
                out.push(("p99 ms at half".into(), h.p99_us as f64 / 1e3, false));
                if let Some(c) = h.server_cpu {
                    out.push(("server CPU % at half".into(), c, false));
                }
            }
        }
        "idle" => {
            if let Some(i) = &r.idle {
                out.push(("server bytes/connection".into(), i.bytes_per_conn, false));
                out.push((
                    "server peak bytes/connection".into(),
                    i.peak_bytes_per_conn,
                    false,
                ));
            }
            out.push((
                format!("connect {} clients, s", r.clients),
                r.connect_secs,
                false,
            ));
        }
        _ => {
            if let Some(t) = main {
                out.push(("p50 ms".into(), t.p50_us as f64 / 1e3, false));
                out.push(("p99 ms".into(), t.p99_us as f64 / 1e3, false));
                if name == "rooms" {
                    out.push(("p99.9 ms".into(), t.p999_us as f64 / 1e3, false));
                }
                out.push(("lost".into(), t.lost as f64, false));
            }
            if let Some(o) = &r.slow_outcome {
                let sendq = o
                    .reasons
                    .iter()
                    .filter(|(k, _)| k.contains("send queue"))
                    .map(|(_, n)| *n)
                    .sum::<usize>();
                out.push(("slow ones cut for sendq".into(), sendq as f64, true));
                if let Some(s) = &r.server {
                    out.push((
                        "server peak RSS MiB".into(),
                        s.peak_rss_kib as f64 / 1024.0,
                        false,
                    ));
                }
            }
        }
    }
    if let Some(t) = main {
        out.push((
            "generator lag p99 ms".into(),
            t.lag_p99_us as f64 / 1e3,
            false,
        ));
    }
    out
}

fn fmt(x: f64) -> String {
    if x >= 10_000.0 {
        thousands(x)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("e2e: the benchmark matrix runs only under `cargo bench`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("POLLCHAT_BENCH_QUICK").is_some_and(|v| v != "0");
    let exe = env!("CARGO_BIN_EXE_pollchat");
    let started = Instant::now();
    let mut targets: Vec<String> = Vec::new();
    // The `--io` flag for each target; a binary without `--io` at all serves with the poll loop.
    let mut io_flags: BTreeMap<String, String> = BTreeMap::new();
    let has_io = MODELS.iter().any(|m| target::supports_io(exe.as_ref(), m));
    for model in MODELS {
        if target::supports_io(exe.as_ref(), model) {
            targets.push(model.into());
            io_flags.insert(model.into(), format!("--io {model}"));
        } else if model == "poll" && !has_io {
            println!(
                "e2e: this pollchat has no `--io` flag: its only server, the poll loop, is `poll`"
            );
            targets.push(model.into());
            io_flags.insert(model.into(), String::new());
        } else {
            println!("e2e: this pollchat has no `serve --io {model}`: skipped");
        }
    }
    if target::have_redis() {
        targets.push("redis".into());
    } else {
        println!("e2e: redis-server is not on PATH: no Redis comparison");
    }
    let cpus = target::allowed_cpus().len();
    println!(
        "e2e: {} matrix on {cpus} CPUs{}",
        if quick { "quick" } else { "full" },
        if cpus >= 2 {
            " (server pinned to the last CPU, generator to the first)"
        } else {
            " (not pinned: one CPU)"
        }
    );

    // (scenario, metric) → target → (value, higher is better)
    let mut table: BTreeMap<(usize, String), BTreeMap<String, (f64, bool)>> = BTreeMap::new();
    let mut order: Vec<(usize, String)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut series: Vec<chart::Series> = Vec::new();
    let scenarios = matrix(quick);
    for target_name in &targets {
        let mut points = chart::Series {
            name: target_name.clone(),
            points: Vec::new(),
        };
        for &clients in &sweep(quick) {
            if clients == 100 {
                continue; // the fan-out scenario itself
            }
            let t = timing(quick);
            let args = format!(
                "--clients {clients} --rooms 1 --step --step-secs {} --duration {} --warmup {}",
                t.step_secs, t.sweep_measure, t.sweep_warmup
            );
            let io = io_flags.get(target_name).map_or("", String::as_str);
            match run(&args, target_name, io, "", exe) {
                Ok(r) => {
                    let best = r.best.as_ref().map_or(0.0, |b| b.deliveries_per_sec());
                    let p99 = r.at_half.as_ref().map_or(0.0, |h| h.p99_us as f64 / 1e3);
                    println!(
                        "e2e: sweep {target_name} {clients} clients: {} deliveries/s",
                        thousands(best)
                    );
                    points.points.push((clients as f64, best, p99));
                }
                Err(e) => failures.push(format!("sweep {clients} clients, {target_name}: {e}")),
            }
        }
        for (k, sc) in scenarios.iter().enumerate() {
            if !sc.on.includes(target_name) {
                continue;
            }
            let t0 = Instant::now();
            let io = io_flags.get(target_name).map_or("", String::as_str);
            match run(&sc.args, target_name, io, sc.serve, exe) {
                Ok(r) => {
                    if sc.name == "fan-out"
                        && let (Some(b), Some(h)) = (&r.best, &r.at_half)
                    {
                        points
                            .points
                            .push((100.0, b.deliveries_per_sec(), h.p99_us as f64 / 1e3));
                    }
                    for (metric, value, higher) in figures(sc.name, &r) {
                        let key = (k, metric);
                        if !order.contains(&key) {
                            order.push(key.clone());
                        }
                        table
                            .entry(key)
                            .or_default()
                            .insert(target_name.clone(), (value, higher));
                    }
                    println!(
                        "e2e: {} on {target_name}: done in {:.0} s",
                        sc.name,
                        t0.elapsed().as_secs_f64()
                    );
                }
                Err(e) => {
                    println!("e2e: {} on {target_name}: failed: {e}", sc.name);
                    failures.push(format!("{}, {target_name}: {e}", sc.name));
                }
            }
        }
        points.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(points);
    }

    let mut out = String::new();
    let has = |t: &str| targets.iter().any(|x| x == t);
    let _ = write!(out, "| scenario | metric |");
    for t in &targets {
        let _ = write!(out, " {t} |");
    }
    if has("poll") && has("threads") {
        let _ = write!(out, " poll/threads |");
    }
    if has("poll") && has("redis") {
        let _ = write!(out, " poll/redis |");
    }
    out.push('\n');
    let _ = write!(out, "|---|---|");
    for _ in &targets {
        let _ = write!(out, "---:|");
    }
    if has("poll") && has("threads") {
        let _ = write!(out, "---:|");
    }
    if has("poll") && has("redis") {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for key in &order {
        let row = &table[key];
        let _ = write!(out, "| {} | {} |", scenarios[key.0].name, key.1);
        for t in &targets {
            let cell = row.get(t).map_or("–".into(), |(v, _)| fmt(*v));
            let _ = write!(out, " {cell} |");
        }
        for other in ["threads", "redis"] {
            if has("poll") && has(other) {
                let ratio = match (row.get("poll"), row.get(other)) {
                    (Some((p, _)), Some((o, _))) if *o > 0.0 => format!("{:.2}×", p / o),
                    _ => "–".into(),
                };
                let _ = write!(out, " {ratio} |");
            }
        }
        out.push('\n');
    }
    println!("\n{out}");
    println!(
        "ratios are poll ÷ other: above 1 is better for poll on deliveries/s, below 1 on latency, memory and time"
    );
    for f in &failures {
        println!("failed: {f}");
    }

    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("pollchat-bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("table.md"), &out);
    let svg = dir.join("chart.svg");
    let title = format!("pollchat fan-out, one room, 64-byte messages ({cpus} cores, loopback)");
    match chart::draw(&svg, &title, &series) {
        Ok(()) => println!("chart: {}", svg.display()),
        Err(e) => println!("chart failed: {e}"),
    }
    println!("table: {}", dir.join("table.md").display());
    println!(
        "e2e: whole matrix took {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
