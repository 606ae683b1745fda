//! Delivery and latency accounting for one measured trial, and the search for the highest
//! sustainable rate (`--step`).
//!
//! Pure bookkeeping, unit-tested without sockets. Every delivery is checked against the last
//! sequence number its receiver saw from that sender, so duplicates are counted, not assumed
//! away; loss is what was expected (messages sent in the window × their recipients) minus what
//! arrived before the drain deadline.

use hdrhistogram::Histogram;

use super::wire::Payload;

/// Latencies are recorded in microseconds, up to a minute; 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

/// A trial passes `--step` when at least this share of the expected deliveries arrived...
pub const MIN_DELIVERED: f64 = 0.99;
/// ...and its p99 latency stays under this.
pub const MAX_P99_US: u64 = 50_000;

/// The counters of one trial.
pub struct Tally {
    /// Messages whose intended send time falls in `[start_ns, end_ns)` of trial `trial` count.
    pub trial: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Test messages sent in the window.
    pub sent: u64,
    /// Deliveries those messages should cause (recipients summed).
    pub expected: u64,
    /// Distinct deliveries of those messages that arrived.
    pub delivered: u64,
    /// Deliveries seen twice, or out of order (any trial: each is a bug).
    pub duplicates: u64,
    /// Deliveries of earlier trials or of the warm-up (not measured).
    pub unmeasured: u64,
    /// Latency from intended send time to arrival, in microseconds.
    pub latency: Histogram<u64>,
    /// How late the generator sent each measured message after its intended time, in
    /// microseconds: the generator's own share of the latency, and a sign of it being the limit.
    pub send_lag: Histogram<u64>,
}

impl Tally {
    pub fn new(trial: u32, start_ns: u64, end_ns: u64) -> Tally {
        Tally {
            trial,
            start_ns,
            end_ns,
            sent: 0,
            expected: 0,
            delivered: 0,
            duplicates: 0,
            unmeasured: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            send_lag: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
        }
    }

    /// Whether a message meant to be sent at `intended_ns` is measured.
    pub fn in_window(&self, intended_ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&intended_ns)
    }

    /// A message was sent that `recipients` clients should receive.
    pub fn on_send(&mut self, intended_ns: u64, recipients: u64) {
        if self.in_window(intended_ns) {
            self.sent += 1;
            self.expected += recipients;
        }
    }

    /// A message meant for `intended_ns` was queued at `now_ns`.
    pub fn on_lag(&mut self, intended_ns: u64, now_ns: u64) {
        if self.in_window(intended_ns) {
            let us = now_ns.saturating_sub(intended_ns) / 1000;
            self.send_lag.saturating_record(us.max(1));
        }
    }

    pub fn lag_percentile_us(&self, q: f64) -> u64 {
        if self.send_lag.is_empty() {
            0
        } else {
            self.send_lag.value_at_quantile(q)
        }
    }

    /// A message arrived at a receiver whose last sequence numbers per sender slot are `seen`.
    pub fn on_delivery(&mut self, seen: &mut Vec<u32>, p: Payload, now_ns: u64) {
        let slot = p.slot as usize;
        if seen.len() <= slot {
            seen.resize(slot + 1, 0);
        }
        if p.seq <= seen[slot] {
            self.duplicates += 1;
            return;
        }
        seen[slot] = p.seq;
        if p.trial != self.trial || !self.in_window(p.intended_ns) {
            self.unmeasured += 1;
            return;
        }
        self.delivered += 1;
        let us = now_ns.saturating_sub(p.intended_ns) / 1000;
        self.latency.saturating_record(us.max(1));
    }

    /// Deliveries that did not arrive (never negative: duplicates are counted apart).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// Whether everything expected has arrived, so draining can stop early.
    pub fn complete(&self) -> bool {
        self.delivered >= self.expected
    }

    pub fn window_secs(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }

    pub fn percentile_us(&self, q: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(q)
        }
    }

    /// The `--step` criterion: enough deliveries arrived, fast enough, nobody was dropped.
    pub fn sustainable(&self, disconnects: u64) -> bool {
        self.expected > 0
            && disconnects == 0
            && self.delivered as f64 >= MIN_DELIVERED * self.expected as f64
            && self.percentile_us(0.99) <= MAX_P99_US
    }
}

/// The rate search of `--step`: grow the per-client rate by `factor` until a trial fails, then
/// narrow the gap between the last good and the first bad rate by geometric bisection. A failed
/// rate is tried once more before it counts as bad: on a shared machine one trial can fail for
/// reasons that have nothing to do with the server, and a single failure ends the growth.
#[derive(Debug)]
pub struct StepSearch {
    next: Option<f64>,
    good: Option<f64>,
    bad: Option<f64>,
    factor: f64,
    /// Bisections left once a failure bounds the search.
    refinements: u32,
    /// Trials left in all: every run is bounded in time.
    budget: u32,
    /// Rates below this are not worth trying.
    floor: f64,
    /// The rate that failed once and is being tried again.
    retrying: Option<f64>,
}

impl StepSearch {
    pub fn new(start: f64, factor: f64, refinements: u32, budget: u32) -> StepSearch {
        StepSearch {
            next: Some(start),
            good: None,
            bad: None,
            factor,
            refinements,
            budget,
            floor: start / factor.powi(6),
            retrying: None,
        }
    }

    /// The per-client rate to try next, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// Records the outcome of a trial at the rate `next_rate` gave, and picks the next one.
    pub fn record(&mut self, passed: bool) {
        let Some(rate) = self.next else {
            return;
        };
        self.budget = self.budget.saturating_sub(1);
        if !passed && self.retrying != Some(rate) && self.budget > 0 {
            self.retrying = Some(rate);
            return;
        }
        self.retrying = None;
        if passed {
            self.good = Some(self.good.map_or(rate, |g| g.max(rate)));
        } else {
            self.bad = Some(self.bad.map_or(rate, |b| b.min(rate)));
        }
        self.next = match (self.good, self.bad) {
            _ if self.budget == 0 => None,
            (Some(g), None) => Some(g * self.factor),
            (None, Some(b)) => Some(b / self.factor).filter(|&r| r >= self.floor),
            (Some(g), Some(b)) if self.refinements > 0 && b > g * 1.05 => {
                self.refinements -= 1;
                Some((g * b).sqrt())
            }
            _ => None,
        };
    }

    /// The highest rate that passed.
    pub fn best(&self) -> Option<f64> {
        self.good
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(slot: u32, seq: u32, intended_ns: u64) -> Payload {
        Payload {
            trial: 1,
            slot,
            seq,
            intended_ns,
        }
    }

    #[test]
    fn counts_deliveries_duplicates_and_loss() {
        let mut t = Tally::new(1, 1_000_000, 2_000_000);
        let mut seen = Vec::new();
        t.on_send(1_000_000, 2);
        t.on_send(1_500_000, 2);
        t.on_send(500_000, 2); // warm-up: not expected
        t.on_delivery(&mut seen, p(0, 1, 500_000), 600_000);
        t.on_delivery(&mut seen, p(0, 2, 1_000_000), 1_250_000);
        t.on_delivery(&mut seen, p(0, 2, 1_000_000), 1_300_000); // again
        t.on_delivery(&mut seen, p(3, 1, 1_500_000), 4_500_000);
        assert_eq!((t.sent, t.expected, t.delivered), (2, 4, 2));
        assert_eq!((t.duplicates, t.unmeasured, t.lost()), (1, 1, 2));
        assert!(!t.complete());
        assert_eq!(seen, [2, 0, 0, 1]);
    }

    #[test]
    fn measures_latency_from_the_intended_time() {
        // A message meant for t=1 ms but only sent (and delivered) at 31 ms counts 30 ms, not
        // the few microseconds of its last hop: a stalled sender cannot hide the stall.
        let mut t = Tally::new(1, 0, 10_000_000);
        let mut seen = Vec::new();
        t.on_delivery(&mut seen, p(0, 1, 1_000_000), 31_000_000);
        for seq in 2..=100 {
            t.on_delivery(&mut seen, p(0, seq, 2_000_000), 2_100_000);
        }
        assert_eq!(t.percentile_us(0.5), 100);
        assert!((29_900..=30_100).contains(&t.percentile_us(1.0)));
    }

    #[test]
    fn other_trials_are_not_measured() {
        let mut t = Tally::new(2, 0, 10);
        let mut seen = Vec::new();
        t.on_delivery(&mut seen, p(0, 1, 5), 6);
        assert_eq!((t.delivered, t.unmeasured), (0, 1));
    }

    #[test]
    fn sustainable_needs_99_percent_and_p99_under_50ms() {
        let mut t = Tally::new(1, 0, 1_000_000_000);
        let mut seen = Vec::new();
        for seq in 1..=100 {
            t.on_send(10, 1);
            t.on_delivery(&mut seen, p(0, seq, 10), 10_000_010);
        }
        assert!(t.sustainable(0));
        assert!(!t.sustainable(1));
        t.on_send(10, 2);
        assert!(!t.sustainable(0), "98 of 102 is under 99%");
        let mut slow = Tally::new(1, 0, 1_000_000_000);
        slow.on_send(10, 1);
        slow.on_delivery(&mut Vec::new(), p(0, 1, 10), 60_000_010);
        assert!(!slow.sustainable(0), "p99 60 ms");
    }

    #[test]
    fn step_search_doubles_then_bisects() {
        let mut s = StepSearch::new(100.0, 2.0, 2, 20);
        let limit = 700.0;
        let mut tried = Vec::new();
        while let Some(rate) = s.next_rate() {
            tried.push(rate.round());
            s.record(rate <= limit);
        }
        assert_eq!(tried[..5], [100.0, 200.0, 400.0, 800.0, 800.0]);
        assert_eq!(tried.len(), 7);
        let best = s.best().unwrap();
        assert!(best > 400.0 && best <= limit, "{best}");
    }

    #[test]
    fn step_search_goes_down_when_the_start_fails_and_stops_within_budget() {
        let mut s = StepSearch::new(100.0, 2.0, 0, 20);
        let mut tried = Vec::new();
        while let Some(rate) = s.next_rate() {
            tried.push(rate);
            s.record(rate <= 30.0);
        }
        assert_eq!(tried, [100.0, 100.0, 50.0, 50.0, 25.0]);
        assert_eq!(s.best(), Some(25.0));

        let mut never = StepSearch::new(100.0, 2.0, 3, 4);
        let mut n = 0;
        while never.next_rate().is_some() {
            never.record(false);
            n += 1;
        }
        assert_eq!((n, never.best()), (4, None));

        let mut flaky = StepSearch::new(100.0, 2.0, 0, 3);
        flaky.record(false);
        assert_eq!(
            flaky.next_rate(),
            Some(100.0),
            "a first failure is tried again"
        );
        flaky.record(true);
        assert_eq!(
            (flaky.best(), flaky.next_rate()),
            (Some(100.0), Some(200.0))
        );

        let mut always = StepSearch::new(1.0, 2.0, 3, 5);
        while always.next_rate().is_some() {
            always.record(true);
        }
        assert_eq!(always.best(), Some(16.0));
    }
}
