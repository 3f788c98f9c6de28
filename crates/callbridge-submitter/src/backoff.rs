//! When a failed attempt is tried again: exponential backoff with jitter, never sooner
//! than the API's `Retry-After`.

use std::time::Duration;

use rand::Rng;

/// Backoff growth: the delay before retry `n` (1-based) is `base * 2^(n-1)`, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The un-jittered delay before retry `retry` (the row's `retry_count` after this
    /// failure, so 1 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(32);
        self.base
            .saturating_mul(2_u32.saturating_pow(exponent))
            .min(self.max)
    }

    /// "Equal jitter": half the ceiling plus a random part of the other half, so
    /// submitters that failed together do not retry together, yet every wait grows.
    /// The API's `Retry-After` is a floor.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling(retry);
        let half = ceiling / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=ceiling - half)
        };
        (half + jitter).max(retry_after.unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn ceiling_doubles_per_retry_and_stops_at_the_maximum() {
        let ceilings: Vec<u64> = (1..=8)
            .map(|retry| BACKOFF.ceiling(retry).as_secs())
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(BACKOFF.ceiling(u32::MAX), BACKOFF.max);
    }

    #[test]
    fn delay_stays_between_half_and_all_of_the_ceiling() {
        for retry in 1..=10 {
            let ceiling = BACKOFF.ceiling(retry);
            for _ in 0..50 {
                let delay = BACKOFF.delay(retry, None);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{delay:?} for {ceiling:?}"
                );
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let delay = BACKOFF.delay(1, Some(Duration::from_secs(120)));
        assert_eq!(delay, Duration::from_secs(120));
        // A shorter Retry-After does not shorten the backoff.
        assert!(BACKOFF.delay(8, Some(Duration::from_secs(1))) >= Duration::from_secs(30));
    }
}
