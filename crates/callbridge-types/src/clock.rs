//! Where time-dependent code reads the current instant.
//!
//! Rules that depend on the time of day (calling windows, start times, pacing) take
//! `now` from a [`Clock`] instead of the system clock or SQL `now()`, so a test can set
//! the clock to 20:59:30 in New York or run an hour of pacing in minutes. Services use
//! [`SystemClock`]; tests use [`ManualClock`] (set by hand) or [`ScaledClock`] (runs N×
//! real time from a chosen start).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

/// A source of the current instant.
pub trait Clock: fmt::Debug + Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// How long in real time this clock takes to advance by `span`: what a loop sleeps
    /// to wait for a clock instant. The real-time clocks' answer is `span` itself (also a
    /// manual clock's, which does not advance by itself: a loop just polls).
    fn real_duration(&self, span: Duration) -> Duration {
        span
    }
}

/// A clock shared by the parts of a service (one value, cheap to clone).
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock: what every service runs with.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is set or advanced. Clones share one time, so a
/// test keeps a clone and moves the clock of the service it started.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock reading `start` until it is changed.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Sets the time (it may move backwards: a test decides).
    pub fn set(&self, now: DateTime<Utc>) {
        *self.lock() = now;
    }

    /// Moves the time forward by `by` and returns the new time.
    pub fn advance(&self, by: TimeDelta) -> DateTime<Utc> {
        let mut now = self.lock();
        *now += by;
        *now
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A panic while holding the lock cannot leave a half-written instant behind.
        self.now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// A clock that reads `start` when it is made and then runs `factor` times as fast as
/// real time (monotonic: a change of the system clock does not move it).
///
/// Lets a test watch five minutes of pacing in thirty seconds: with `factor` 10, one real
/// second is ten clock seconds.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    start: DateTime<Utc>,
    origin: Instant,
    factor: f64,
}

impl ScaledClock {
    /// A clock reading `start` now and running `factor` × real time from here.
    ///
    /// # Panics
    /// When `factor` is not a finite number above zero: time would stand still or run
    /// backwards.
    pub fn new(start: DateTime<Utc>, factor: f64) -> Self {
        assert!(
            factor.is_finite() && factor > 0.0,
            "a scaled clock's factor must be a finite number above zero, got {factor}"
        );
        ScaledClock {
            start,
            origin: Instant::now(),
            factor,
        }
    }

    /// How many clock seconds pass per real second.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The real duration until the clock reads `at` (zero when it already has).
    pub fn real_time_until(&self, at: DateTime<Utc>) -> Duration {
        self.real_duration((at - self.now()).to_std().unwrap_or_default())
    }
}

impl Clock for ScaledClock {
    fn real_duration(&self, span: Duration) -> Duration {
        span.div_f64(self.factor)
    }

    fn now(&self) -> DateTime<Utc> {
        let real = self.origin.elapsed();
        let scaled = real.mul_f64(self.factor);
        // TimeDelta holds ±292 years: a scaled test clock never gets there.
        self.start + TimeDelta::from_std(scaled).unwrap_or(TimeDelta::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    #[test]
    fn manual_clock_stands_still_until_set_and_clones_share_the_time() {
        let clock = ManualClock::new(instant("2026-03-08T06:59:00Z"));
        let seen_by_service: SharedClock = Arc::new(clock.clone());
        assert_eq!(seen_by_service.now(), instant("2026-03-08T06:59:00Z"));
        assert_eq!(
            clock.advance(TimeDelta::seconds(90)),
            instant("2026-03-08T07:00:30Z")
        );
        assert_eq!(seen_by_service.now(), instant("2026-03-08T07:00:30Z"));
        clock.set(instant("2020-01-01T00:00:00Z"));
        assert_eq!(seen_by_service.now(), instant("2020-01-01T00:00:00Z"));
    }

    #[test]
    fn scaled_clock_runs_factor_times_real_time_from_its_start() {
        let start = instant("2026-06-01T00:59:30Z");
        let clock = ScaledClock::new(start, 100.0);
        let real_before = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let read = clock.now();
        let real_elapsed = real_before.elapsed();
        let clock_elapsed = (read - start).to_std().unwrap();
        // At least 100 × the 50 ms slept, at most 100 × the real time measured around it.
        assert!(
            clock_elapsed >= std::time::Duration::from_secs(5),
            "{clock_elapsed:?}"
        );
        assert!(
            clock_elapsed <= real_elapsed.mul_f64(100.0),
            "{clock_elapsed:?}"
        );
        let until = clock.real_time_until(read + TimeDelta::seconds(100));
        assert!(until <= std::time::Duration::from_secs(1), "{until:?}");
        assert!(until >= std::time::Duration::from_millis(900), "{until:?}");
    }

    #[test]
    #[should_panic(expected = "finite number above zero")]
    fn scaled_clock_refuses_a_factor_that_stops_time() {
        ScaledClock::new(Utc::now(), 0.0);
    }

    #[test]
    fn system_clock_reads_the_wall_clock() {
        let before = Utc::now();
        let read = SystemClock.now();
        assert!(read >= before && read <= Utc::now());
    }
}
