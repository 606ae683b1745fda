//! The bench's output: a human table, and the same figures as JSON for scripts (`--json`).
//!
//! JSON is written by hand: the report is a few flat records of numbers and strings, which a
//! serializer crate would not make shorter.

use std::fmt::Write;

use super::Report;
use super::load::Trial;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.0}%"))
}

/// The human-readable report.
pub fn human(r: &Report) -> String {
    let mut s = String::new();
    if !r.attacks.is_empty() {
        attacks(&mut s, r);
    } else if let Some(c) = &r.churn {
        churn(&mut s, r, c);
    } else if let Some(m) = &r.mass {
        mass(&mut s, r, m);
    } else {
        load(&mut s, r);
    }
    for e in &r.errors {
        let _ = writeln!(s, "server error line: {e}");
    }
    s
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `--attack`: one row per attack, then why the hostile connections were closed.
fn attacks(s: &mut String, r: &Report) {
    let first = &r.attacks[0];
    let _ = writeln!(
        s,
        "pollchat bench: attack — {} hostile sockets for {:.0} s each, a fresh server per attack",
        first.hostile, first.secs
    );
    let _ = writeln!(s, "target: {}", first.target);
    let _ = writeln!(s, "cores: {}", r.pinning);
    let _ = writeln!(
        s,
        "\n{:<20} {:>7} {:>7} {:>22} {:>22} {:>22} {:>6}",
        "attack",
        "opened",
        "closed",
        "RSS MiB bef/dur/aft",
        "HWM MiB bef/dur/aft",
        "bystander ms p50/p99/max",
        "lost"
    );
    for a in &r.attacks {
        let b = &a.bystander;
        let _ = writeln!(
            s,
            "{:<20} {:>7} {:>7} {:>22} {:>22} {:>22} {:>6}{}",
            a.attack,
            a.outcome.opened,
            a.outcome.closed_by_server,
            format!(
                "{:.1} / {:.1} / {:.1}",
                mib(a.rss_before_kib),
                mib(a.rss_during_kib),
                mib(a.rss_after_kib)
            ),
            format!(
                "{:.1} / {:.1} / {:.1}",
                mib(a.peak_before_kib),
                mib(a.peak_during_kib),
                mib(a.peak_after_kib)
            ),
            format!(
                "{:.2} / {:.2} / {:.1}",
                ms(b.p50_us),
                ms(b.p99_us),
                ms(b.max_us)
            ),
            b.lost,
            if a.server_alive {
                ""
            } else {
                "  (the server died)"
            }
        );
    }
    let _ = writeln!(s);
    for a in &r.attacks {
        let o = &a.outcome;
        let _ = write!(
            s,
            "{}: hostile sockets read {:.1} MiB",
            a.attack,
            o.bytes_read as f64 / (1 << 20) as f64
        );
        if a.attack == "reconnect-storm" {
            let _ = write!(s, "; {} of {} connects greeted", o.admitted, o.opened);
        }
        let reasons: Vec<String> = o.reasons.iter().map(|(k, n)| format!("{n}× {k}")).collect();
        if !reasons.is_empty() {
            let _ = write!(s, "; closed: {}", reasons.join(", "));
        }
        let _ = writeln!(s);
    }
    let reset = r.attacks.iter().all(|a| a.peak_reset);
    let _ = writeln!(
        s,
        "(RSS during is the highest of samples every 100 ms; HWM during is {}; after is read once \
         the server has been quiet 7 s, past its quiet-time trim; closed counts hostile \
         connections that saw an end of stream, a reset, or a BYE/ERROR line)",
        if reset {
            "the attack's own peak (VmHWM reset before it)"
        } else {
            "the server's lifetime peak (VmHWM could not be reset)"
        }
    );
}

/// `--churn`.
fn churn(s: &mut String, r: &Report, c: &super::ChurnResult) {
    let _ = writeln!(
        s,
        "pollchat bench: churn — {} clients connected, joined, talked and left in {} waves over {:.1} s",
        c.clients, c.waves, c.secs
    );
    let _ = writeln!(s, "target: {}", r.target);
    let _ = writeln!(s, "cores: {}", r.pinning);
    let _ = writeln!(
        s,
        "server RSS {:.1} MiB cold, {:.1} MiB after a first wave settled (the baseline), peak (VmHWM) {:.1} MiB, {:.1} MiB {:.1} s after the last left",
        mib(c.rss_cold_kib),
        mib(c.rss_before_kib),
        mib(c.peak_kib),
        mib(c.rss_after_kib),
        c.settle_secs
    );
    let _ = writeln!(
        s,
        "server descriptors {} before, {} after; {} messages sent, {} deliveries lost",
        c.fds_before, c.fds_after, c.sent, c.lost
    );
    let _ = writeln!(
        s,
        "{}: RSS {} within 10% of the baseline, descriptors {} the baseline",
        if c.passed { "PASS" } else { "FAIL" },
        if c.rss_after_kib as f64 <= c.rss_before_kib as f64 * 1.1 {
            "back"
        } else {
            "not back"
        },
        if c.fds_after == c.fds_before {
            "back to"
        } else {
            "not back to"
        }
    );
}

/// `--mass-disconnect`.
fn mass(s: &mut String, r: &Report, m: &super::MassResult) {
    let _ = writeln!(
        s,
        "pollchat bench: mass disconnect — {} clients in #lobby and one of 100 rooms close at once",
        m.clients
    );
    let _ = writeln!(s, "target: {}", r.target);
    let _ = writeln!(s, "cores: {}", r.pinning);
    let _ = writeln!(
        s,
        "connected and joined {} clients in {:.2} s",
        m.clients, m.connect_secs
    );
    let b = &m.bystander;
    let _ = writeln!(
        s,
        "bystanders over the close: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} of {} delivered",
        ms(b.p50_us),
        ms(b.p99_us),
        ms(b.max_us),
        b.delivered,
        b.expected
    );
    match (m.lobby_empty_secs, m.close_cpu_secs) {
        (Some(t), cpu) => {
            let _ = writeln!(
                s,
                "#lobby back to one member {:.3} s after the close{}",
                t,
                cpu.map_or(String::new(), |c| format!(
                    " (server CPU {c:.2} s meanwhile)"
                ))
            );
        }
        (None, _) => {
            let _ = writeln!(s, "#lobby did not empty within 10 s");
        }
    }
    let _ = writeln!(
        s,
        "{}: the loop answered within a second during the mass close (max {:.0} ms)",
        if b.max_us < 1_000_000 && b.lost == 0 {
            "PASS"
        } else {
            "FAIL"
        },
        ms(b.max_us)
    );
    match m.exit_secs {
        Some(t) => {
            let _ = writeln!(
                s,
                "{}: SIGTERM with {} clients connected: exited in {:.3} s (drain limit {:.0} s)",
                if t <= super::churn::DRAIN_LIMIT.as_secs_f64() {
                    "PASS"
                } else {
                    "FAIL"
                },
                m.sigterm_clients,
                t,
                super::churn::DRAIN_LIMIT.as_secs_f64()
            );
        }
        None if m.sigterm_clients > 0 => {
            let _ = writeln!(
                s,
                "FAIL: SIGTERM with {} clients connected: still running after 10 s",
                m.sigterm_clients
            );
        }
        None => {
            let _ = writeln!(s, "(SIGTERM not tried: the server was not spawned)");
        }
    }
}

/// The load, step, idle and slow scenarios.
fn load(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "pollchat bench: {} over {} — {} clients in {} room(s), {} sending, {} slow, {}-byte payloads",
        r.scenario, r.wire, r.clients, r.rooms, r.senders, r.slow, r.payload
    );
    let _ = writeln!(s, "target: {}", r.target);
    let _ = writeln!(s, "cores: {}", r.pinning);
    let _ = writeln!(
        s,
        "connected and joined {} clients in {:.2} s",
        r.clients, r.connect_secs
    );
    if !r.trials.is_empty() {
        let _ = writeln!(
            s,
            "\n{:>10} {:>10} {:>13} {:>8} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}  ok",
            "rate/cli",
            "msgs/s",
            "deliveries/s",
            "lost",
            "dup",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "lag p99",
            "gen CPU",
            "srv CPU"
        );
        let rows = r.trials.iter().chain(r.at_half.iter());
        for t in rows {
            let _ = writeln!(
                s,
                "{:>10} {:>10} {:>13} {:>8} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>7}  {}",
                t.rate.map_or("max".into(), |r| format!("{r:.1}")),
                thousands(t.msgs_per_sec()),
                thousands(t.deliveries_per_sec()),
                t.lost,
                t.duplicates,
                ms(t.p50_us),
                ms(t.p99_us),
                ms(t.p999_us),
                ms(t.max_us),
                ms(t.lag_p99_us),
                pct(Some(t.gen_cpu)),
                pct(t.server_cpu),
                match (t.sustainable, t.aborted) {
                    (true, _) => "yes",
                    (false, true) => "no (stopped: a delivery took > 200 ms)",
                    (false, false) => "no",
                }
            );
        }
    }
    if r.scenario == "step" {
        match &r.best {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "\nhighest sustainable: {} deliveries/s ({:.1} msg/s per sender; ≥99% delivered, p99 ≤ 50 ms)",
                    thousands(b.deliveries_per_sec()),
                    b.rate.unwrap_or(0.0)
                );
            }
            None => {
                let _ = writeln!(s, "\nno rate tried was sustainable");
            }
        }
        if let Some(h) = &r.at_half {
            let _ = writeln!(
                s,
                "at half that rate (last row): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, server CPU {}",
                ms(h.p50_us),
                ms(h.p99_us),
                ms(h.p999_us),
                pct(h.server_cpu)
            );
        }
    }
    if let Some(i) = &r.idle {
        let _ = writeln!(
            s,
            "server RSS {:.1} MiB before, {:.1} MiB with {} clients: {:.0} bytes per connection; \
             peak (VmHWM) {:.1} MiB: {:.0} bytes per connection",
            i.rss_before_kib as f64 / 1024.0,
            i.rss_after_kib as f64 / 1024.0,
            r.clients,
            i.bytes_per_conn,
            i.peak_kib as f64 / 1024.0,
            i.peak_bytes_per_conn
        );
    }
    if let Some(o) = &r.slow_outcome {
        let _ = write!(s, "the {} slow clients: ", r.slow);
        for (reason, n) in &o.reasons {
            let _ = write!(s, "{n} disconnected ({reason}); ");
        }
        let _ = writeln!(
            s,
            "{} closed without a reason seen; {} still connected",
            o.closed_silently, o.connected
        );
    }
    if let Some(srv) = &r.server {
        let _ = writeln!(
            s,
            "server RSS at the end {:.1} MiB, peak {:.1} MiB; server CPU time {:.2} s",
            srv.rss_kib as f64 / 1024.0,
            srv.peak_rss_kib as f64 / 1024.0,
            srv.cpu.as_secs_f64()
        );
    }
    if let Some(t) = r.main_trial()
        && (t.lag_p99_us > 1000 || t.rate.is_none() && t.gen_cpu > 90.0)
    {
        let _ = writeln!(
            s,
            "note: the generator sent late (p99 {:.2} ms) or used {:.0}% of its core: it, not the server, may be the limit",
            ms(t.lag_p99_us),
            t.gen_cpu
        );
    }
    let _ = writeln!(
        s,
        "(latency counts from each message's intended send time; lag p99 is how late the generator sent; gen CPU leaves out its spinning through sub-millisecond waits)"
    );
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn json_opt(x: Option<f64>) -> String {
    x.map_or("null".into(), json_num)
}

fn trial_json(t: &Trial) -> String {
    format!(
        "{{\"rate_per_sender\":{},\"secs\":{},\"sent\":{},\"expected\":{},\"delivered\":{},\"lost\":{},\"duplicates\":{},\"msgs_per_sec\":{},\"deliveries_per_sec\":{},\"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{},\"send_lag_p99_ms\":{},\"generator_cpu_pct\":{},\"server_cpu_pct\":{},\"disconnects\":{},\"sustainable\":{},\"aborted\":{}}}",
        json_opt(t.rate),
        json_num(t.secs),
        t.sent,
        t.expected,
        t.delivered,
        t.lost,
        t.duplicates,
        json_num(t.msgs_per_sec()),
        json_num(t.deliveries_per_sec()),
        json_num(ms(t.p50_us)),
        json_num(ms(t.p99_us)),
        json_num(ms(t.p999_us)),
        json_num(ms(t.max_us)),
        json_num(ms(t.lag_p99_us)),
        json_num(t.gen_cpu),
        json_opt(t.server_cpu),
        t.disconnects,
        t.sustainable,
        t.aborted
    )
}

/// The report as one JSON object.
pub fn json(r: &Report) -> String {
    let opt_trial = |t: &Option<Trial>| t.as_ref().map_or("null".into(), trial_json);
    let trials: Vec<String> = r.trials.iter().map(trial_json).collect();
    let idle = r.idle.as_ref().map_or("null".into(), |i| {
        format!(
            "{{\"rss_before_kib\":{},\"rss_after_kib\":{},\"bytes_per_conn\":{},\
             \"peak_kib\":{},\"peak_bytes_per_conn\":{}}}",
            i.rss_before_kib,
            i.rss_after_kib,
            json_num(i.bytes_per_conn),
            i.peak_kib,
            json_num(i.peak_bytes_per_conn)
        )
    });
    let slow = r.slow_outcome.as_ref().map_or("null".into(), |o| {
        let reasons: Vec<String> = o
            .reasons
            .iter()
            .map(|(k, n)| format!("{}:{n}", json_str(k)))
            .collect();
        format!(
            "{{\"disconnected\":{{{}}},\"closed_silently\":{},\"connected\":{}}}",
            reasons.join(","),
            o.closed_silently,
            o.connected
        )
    });
    let server = r.server.as_ref().map_or("null".into(), |s| {
        format!(
            "{{\"rss_kib\":{},\"peak_rss_kib\":{},\"cpu_secs\":{}}}",
            s.rss_kib,
            s.peak_rss_kib,
            json_num(s.cpu.as_secs_f64())
        )
    });
    let errors: Vec<String> = r.errors.iter().map(|e| json_str(e)).collect();
    let attacks: Vec<String> = r
        .attacks
        .iter()
        .map(|a| {
            let reasons: Vec<String> = a
                .outcome
                .reasons
                .iter()
                .map(|(k, n)| format!("{}:{n}", json_str(k)))
                .collect();
            format!(
                "{{\"attack\":{},\"hostile\":{},\"secs\":{},\"opened\":{},\"closed_by_server\":{},\
                 \"reasons\":{{{}}},\"admitted\":{},\"bytes_read\":{},\"rss_before_kib\":{},\
                 \"rss_during_kib\":{},\"rss_after_kib\":{},\"peak_before_kib\":{},\
                 \"peak_during_kib\":{},\"peak_after_kib\":{},\"peak_reset\":{},\
                 \"server_alive\":{},\"bystander\":{}}}",
                json_str(a.attack),
                a.hostile,
                json_num(a.secs),
                a.outcome.opened,
                a.outcome.closed_by_server,
                reasons.join(","),
                a.outcome.admitted,
                a.outcome.bytes_read,
                a.rss_before_kib,
                a.rss_during_kib,
                a.rss_after_kib,
                a.peak_before_kib,
                a.peak_during_kib,
                a.peak_after_kib,
                a.peak_reset,
                a.server_alive,
                trial_json(&a.bystander)
            )
        })
        .collect();
    let churn = r.churn.as_ref().map_or("null".into(), |c| {
        format!(
            "{{\"clients\":{},\"waves\":{},\"secs\":{},\"rss_cold_kib\":{},\"rss_before_kib\":{},\"peak_kib\":{},\
             \"rss_after_kib\":{},\"fds_before\":{},\"fds_after\":{},\"settle_secs\":{},\
             \"sent\":{},\"lost\":{},\"passed\":{}}}",
            c.clients,
            c.waves,
            json_num(c.secs),
            c.rss_cold_kib,
            c.rss_before_kib,
            c.peak_kib,
            c.rss_after_kib,
            c.fds_before,
            c.fds_after,
            json_num(c.settle_secs),
            c.sent,
            c.lost,
            c.passed
        )
    });
    let mass = r.mass.as_ref().map_or("null".into(), |m| {
        format!(
            "{{\"clients\":{},\"connect_secs\":{},\"bystander\":{},\"lobby_empty_secs\":{},\
             \"close_cpu_secs\":{},\"sigterm_clients\":{},\"exit_secs\":{}}}",
            m.clients,
            json_num(m.connect_secs),
            trial_json(&m.bystander),
            json_opt(m.lobby_empty_secs),
            json_opt(m.close_cpu_secs),
            m.sigterm_clients,
            json_opt(m.exit_secs)
        )
    });
    format!(
        "{{\"scenario\":{},\"wire\":{},\"target\":{},\"pinning\":{},\"clients\":{},\"rooms\":{},\"senders\":{},\"slow\":{},\"payload\":{},\"connect_secs\":{},\"trials\":[{}],\"best\":{},\"at_half\":{},\"idle\":{},\"slow_outcome\":{},\"attacks\":[{}],\"churn\":{},\"mass_disconnect\":{},\"server\":{},\"errors\":[{}]}}",
        json_str(&r.scenario),
        json_str(&r.wire),
        json_str(&r.target),
        json_str(&r.pinning),
        r.clients,
        r.rooms,
        r.senders,
        r.slow,
        r.payload,
        json_num(r.connect_secs),
        trials.join(","),
        opt_trial(&r.best),
        opt_trial(&r.at_half),
        idle,
        slow,
        attacks.join(","),
        churn,
        mass,
        server,
        errors.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_and_strings() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(json_num(f64::NAN), "null");
    }

    #[test]
    fn json_has_every_section() {
        let r = Report {
            scenario: "load".into(),
            trials: vec![Trial::default()],
            ..Report::default()
        };
        let j = json(&r);
        assert!(j.starts_with("{\"scenario\":\"load\""), "{j}");
        assert!(j.contains("\"trials\":[{\"rate_per_sender\":null"), "{j}");
        assert!(j.ends_with("\"errors\":[]}"), "{j}");
    }
}
