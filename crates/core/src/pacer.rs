//! Hands out eviction slots evenly spread in time, so connections leave an
//! instance at a steady rate instead of in bursts.
//!
//! Slot `k` falls at `start + k / rate`. A caller that comes late keeps the
//! schedule (no drift) as long as it owes fewer than [`Pacer::catch_up`] slots —
//! a tenth of a second's worth, at least one — and takes the owed ones at once;
//! one that comes later than that restarts the schedule at the present moment
//! instead of catching up further (no storm after a long pause). Hence in any
//! window of `w` seconds at most `⌈rate · w⌉ + catch_up` slots are granted, and
//! `C` slots take `C / rate` seconds give or take one interval even when the
//! caller's wake-ups come a few milliseconds late, as they do on a loaded machine
//! (restarting on every late wake-up made 500/s run at 410–470/s there).

use std::time::Duration;

/// An eviction rate limiter driven by an injected clock.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval: Duration,
    next: Duration,
    catch_up: u32,
}

/// The share of a second's slots a late caller may still take at once.
const CATCH_UP_SECONDS: f64 = 0.1;

impl Pacer {
    /// A pacer granting `rate_per_second` slots per second, the first one at `now`.
    /// A non-positive or non-finite rate is treated as one slot per second; callers
    /// validate rates before they get here.
    pub fn new(rate_per_second: f64, now: Duration) -> Pacer {
        let rate = if rate_per_second.is_finite() && rate_per_second > 0.0 {
            rate_per_second
        } else {
            1.0
        };
        // Rounded up to the nanosecond, so that rounding never lets a window hold
        // one slot more than the rate allows.
        let nanos = (1e9 / rate).ceil().max(1.0) as u64;
        Pacer {
            interval: Duration::from_nanos(nanos),
            next: now,
            catch_up: ((rate * CATCH_UP_SECONDS).floor() as u32).max(1),
        }
    }

    /// How many owed slots a late caller may still take at once: the burst bound.
    pub fn catch_up(&self) -> u32 {
        self.catch_up
    }

    /// The time between two slots.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the next slot is due; a caller sleeps until then.
    pub fn next_slot(&self) -> Duration {
        self.next
    }

    /// Takes one slot if one is due at `now`.
    pub fn try_acquire(&mut self, now: Duration) -> bool {
        if now < self.next {
            return false;
        }
        let late = now - self.next;
        self.next = if late < self.interval * self.catch_up {
            self.next + self.interval
        } else {
            now + self.interval
        };
        true
    }

    /// The time `count` evictions take at this pace.
    pub fn time_for(&self, count: u64) -> Duration {
        self.interval
            .checked_mul(u32::try_from(count).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn grants_evenly_when_polled_often() {
        let mut p = Pacer::new(100.0, ms(0));
        let mut granted = Vec::new();
        for t in 0..=1000 {
            if p.try_acquire(ms(t)) {
                granted.push(t);
            }
        }
        assert_eq!(granted.len(), 101, "slots at 0, 10, …, 1000 ms");
        assert!(granted.windows(2).all(|w| w[1] - w[0] == 10));
    }

    #[test]
    fn a_late_caller_keeps_the_schedule_within_the_catch_up() {
        // 500/s: a slot every 2 ms, up to 50 owed slots taken at once.
        let mut p = Pacer::new(500.0, ms(0));
        assert_eq!(p.catch_up(), 50);
        assert!(p.try_acquire(ms(0)));
        // Woken 10 ms late: the 5 slots due by then, then the schedule again.
        let mut burst = 0;
        while p.try_acquire(ms(10)) {
            burst += 1;
        }
        assert_eq!(burst, 5);
        assert_eq!(p.next_slot(), ms(12));
    }

    #[test]
    fn a_long_pause_does_not_burst() {
        let mut p = Pacer::new(10.0, ms(0));
        assert!(p.try_acquire(ms(0)));
        assert!(p.try_acquire(ms(5000)));
        assert!(!p.try_acquire(ms(5000)), "no catch-up after a pause");
        assert_eq!(p.next_slot(), ms(5100));
    }

    #[test]
    fn count_takes_count_over_rate() {
        let mut p = Pacer::new(100.0, ms(0));
        let (mut t, mut n) = (ms(0), 0);
        while n < 500 {
            if p.try_acquire(t) {
                n += 1;
            } else {
                t = p.next_slot();
            }
        }
        // The 500th slot is at 4.99 s: C/r = 5 s minus one slot.
        assert_eq!(t, ms(4990));
        assert_eq!(p.time_for(500), ms(5000));
    }

    proptest! {
        /// Whatever moments a caller polls at, no window of w seconds gets more than
        /// ⌈r·w⌉ + catch_up slots.
        #[test]
        fn never_bursts(rate in 1u32..2000, gaps in proptest::collection::vec(0u64..50_000, 1..400), window_ms in 1u64..3000) {
            let mut p = Pacer::new(f64::from(rate), Duration::ZERO);
            let mut now = Duration::ZERO;
            let mut grants = Vec::new();
            for gap in gaps {
                now += Duration::from_micros(gap);
                while p.try_acquire(now) {
                    grants.push(now);
                }
            }
            let w = Duration::from_millis(window_ms);
            let limit = (f64::from(rate) * w.as_secs_f64()).ceil() as usize + p.catch_up() as usize;
            for (i, start) in grants.iter().enumerate() {
                let inside = grants[i..].iter().take_while(|g| **g - *start <= w).count();
                prop_assert!(inside <= limit, "{} grants in {:?} at rate {}", inside, w, rate);
            }
        }
    }
}
