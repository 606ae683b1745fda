//! Flood control: a token bucket per connection.
//!
//! Each line costs one token; tokens refill at `rate` per second up to `burst`. When a connection
//! has none, the event loop stops reading its socket until [`TokenBucket::ready_at`]: the kernel's
//! receive buffer fills, TCP pushes back on the sender, and nothing is dropped. The same idea as
//! ngircd's penalty time, expressed as a bucket so short bursts stay free.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    /// Tokens available at `updated`.
    tokens: f32,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst as f32,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, burst: u32, rate: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens as f64 + elapsed * rate).min(burst as f64) as f32;
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

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant, burst: u32, rate: f64) -> bool {
        let ready = self.ready(now, burst, rate);
        if ready {
            self.take();
        }
        ready
    }

    /// When the next token will be there.
    pub fn ready_at(&self, rate: f64) -> Instant {
        let missing = (1.0 - self.tokens as f64).max(0.0);
        self.updated + Duration::from_secs_f64(missing / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| b.try_take(t0, 3, 2.0)));
        assert!(!b.try_take(t0, 3, 2.0));
        assert_eq!(b.ready_at(2.0), t0 + Duration::from_millis(500));
        assert!(b.try_take(t0 + Duration::from_millis(500), 3, 2.0));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later, 3, 2.0)).count(), 3);
    }
}
