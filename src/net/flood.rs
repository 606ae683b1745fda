//! Flood control: a token bucket per connection.
//!
//! Each line costs one token; tokens refill at `rate` per second up to `burst`. When a connection
//! has none, the event loop stops reading its socket until [`TokenBucket::ready_at`]: the kernel's
//! receive buffer fills, TCP pushes back on the sender, and nothing is dropped. The same idea as
//! ngircd's penalty time, expressed as a bucket so short bursts stay free.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The most tokens a connection can owe after [`TokenBucket::charge`]: about six seconds of
/// throttle at the default rate of 5 lines a second.
pub const MAX_DEBT: f64 = 32.0;

/// Shortest pause of a throttled connection.
pub const MIN_WAIT: Duration = Duration::from_millis(1);
/// Longest pause (a rate so low that the next token is days away is treated as this).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    /// Tokens available at `updated`.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, burst: u32, rate: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.updated = now;
    }

    /// Whether a token is available now (without taking it).
    pub fn ready(&mut self, now: Instant, burst: u32, rate: f64) -> bool {
        self.refill(now, burst, rate);
        self.tokens >= 1.0
    }

    /// Spends one token; call after [`TokenBucket::ready`] said yes.
    pub fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// Spends `n` more tokens for a line that caused more work than one (a message to several
    /// targets, a JOIN of several rooms, telnet answers), as ngircd's penalties do: the bucket
    /// may go below zero, and the connection's next line then waits until it has refilled. The
    /// debt stops at [`MAX_DEBT`] whatever is charged: a throttle of minutes would leave a client
    /// that hangs up meanwhile unnoticed for as long.
    pub fn charge(&mut self, n: u32) {
        self.tokens = (self.tokens - f64::from(n)).max(-MAX_DEBT);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant, burst: u32, rate: f64) -> bool {
        let ready = self.ready(now, burst, rate);
        if ready {
            self.take();
        }
        ready
    }

    /// The connection from `peer` is out of tokens and stops reading: logs it and returns
    /// [`TokenBucket::ready_at`], when reading may resume. A client's first throttle is logged
    /// at info, later ones (`flooded` is set) at debug: a client that floods on purpose would
    /// otherwise flood the log too. (`flooded` lives with the connection's other flags, where it
    /// costs no padding.)
    pub fn throttle(
        &self,
        peer: SocketAddr,
        now: Instant,
        rate: f64,
        flooded: &mut bool,
    ) -> Instant {
        let at = self.ready_at(rate);
        let level = if *flooded {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        *flooded = true;
        log::log!(
            level,
            "{peer}: over --flood-rate, reading paused for {:?}",
            at.saturating_duration_since(now)
        );
        at
    }

    /// When the next token will be there: always later than the last refill, by at least
    /// [`MIN_WAIT`], so a timer set for it can never be due in the same pass (rounding could
    /// otherwise make "ready at" equal "now" while not ready, and the loop would spin).
    pub fn ready_at(&self, rate: f64) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        let wait = Duration::try_from_secs_f64(missing / rate).unwrap_or(MAX_WAIT);
        self.updated + wait.clamp(MIN_WAIT, MAX_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_never_leaves_more_than_max_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        b.charge(3);
        assert!(b.ready(t0, 10, 5.0), "7 tokens left");
        b.charge(u32::MAX);
        assert!(!b.ready(t0, 10, 5.0));
        // From -32 at 5 a second, one token is back after 6.6 s, not after years.
        let back = b.ready_at(5.0).saturating_duration_since(t0);
        assert!(back <= Duration::from_millis(6_600), "{back:?}");
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| b.try_take(t0, 3, 2.0)));
        assert!(!b.try_take(t0, 3, 2.0));
        assert_eq!(b.ready_at(2.0), t0 + Duration::from_millis(500));
        assert!(b.try_take(t0 + Duration::from_millis(500), 3, 2.0));
        // A long pause refills only up to the burst.
        // Never "ready at" the refill instant itself, even one rounding step short of a token.
        let mut c = TokenBucket::new(1, t0);
        assert!(c.try_take(t0, 1, 240.0));
        let almost = t0 + Duration::from_nanos(4_166_666);
        assert!(!c.ready(almost, 1, 240.0) || c.try_take(almost, 1, 240.0));
        assert!(c.ready_at(240.0) > almost);
        assert!(TokenBucket::new(0, t0).ready_at(1e-300) == t0 + MAX_WAIT);
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later, 3, 2.0)).count(), 3);
    }
}
