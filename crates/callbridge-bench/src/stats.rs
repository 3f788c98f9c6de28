//! Summaries of repeated runs (median, min, max) and latency percentiles.

use serde::Serialize;

/// One figure over its runs: every run's value and their median, min and max.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Each run's value, in run order.
    pub runs: Vec<f64>,
}

impl Summary {
    /// `None` for no runs. The median of an even count is the mean of the middle two.
    pub fn of(runs: &[f64]) -> Option<Summary> {
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Summary {
            median,
            min,
            max,
            runs: runs.to_vec(),
        })
    }
}

/// The `q`-quantile (0.0–1.0) of `sorted` by the nearest-rank method: the smallest
/// value with at least `q` of the samples at or below it. `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A rate from a count and the seconds it took.
pub fn per_second(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_odd_count_is_the_middle_value_and_runs_keep_their_order() {
        let summary = Summary::of(&[30.0, 10.0, 20.0]).unwrap();
        assert_eq!(
            (summary.median, summary.min, summary.max),
            (20.0, 10.0, 30.0)
        );
        assert_eq!(summary.runs, vec![30.0, 10.0, 20.0]);
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let summary = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(summary.median, 2.5);
    }

    #[test]
    fn no_runs_have_no_summary() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.50), Some(50.0));
        assert_eq!(percentile(&samples, 0.99), Some(99.0));
        assert_eq!(percentile(&samples, 1.0), Some(100.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
