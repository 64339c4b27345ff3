//! Publishing and consumption trends: the brokers' per-minute counts summed and cut into
//! buckets of 1, 5 or 10 minutes, as totals or TPS.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Broker, Runtime, absent_here};
use crate::envelope::ApiError;

/// Most points one trend answers.
pub const MAX_POINTS: i64 = 1440;

/// One point of a trend.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Record {
    /// Bucket start (ms).
    pub x: i64,
    /// Count or TPS.
    pub y: f64,
}

/// Per-minute counts summed over brokers: bucket start (ms) → count.
pub type Minutes = BTreeMap<i64, u64>;

impl Runtime {
    /// Messages put into `topic` (`group` `None`) or consumed by `group` from it, per
    /// minute starting within `[begin, end]`, summed over `brokers`.
    pub async fn minutes(
        &self,
        brokers: &[Broker],
        topic: &str,
        group: Option<&str>,
        begin: i64,
        end: i64,
    ) -> Result<Minutes, ApiError> {
        let mut sum = Minutes::new();
        for b in brokers {
            let stats = match b
                .client
                .stats_minutes(topic, group, Some(begin), Some(end))
                .await
            {
                Ok(s) => s,
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            };
            for (at, n) in stats.minutes {
                *sum.entry(at).or_default() += n;
            }
        }
        Ok(sum)
    }
}

/// The buckets of `period_min` minutes (aligned to the epoch) from the one holding `begin`
/// to the one holding `end`, each the total of its minutes, or that over its seconds
/// when `tps`.
pub fn buckets(minutes: &Minutes, begin: i64, end: i64, period_min: i64, tps: bool) -> Vec<Record> {
    let width = period_min.max(1) * 60_000;
    let first = begin.div_euclid(width) * width;
    let mut out = Vec::new();
    let mut x = first;
    while x <= end && (out.len() as i64) < MAX_POINTS {
        let total: u64 = minutes.range(x..x + width).map(|(_, n)| n).sum();
        let y = if tps {
            total as f64 / (width / 1000) as f64
        } else {
            total as f64
        };
        out.push(Record { x, y });
        x += width;
    }
    out
}

/// Checks a trend's range and period: `end` after `begin`, at most [`MAX_POINTS`] buckets.
pub fn check_range(begin: i64, end: i64, period_min: i64) -> Result<(), ApiError> {
    if end <= begin {
        return Err(ApiError::field(
            "endTime",
            format!("{end} is not after beginTime {begin}"),
        ));
    }
    let width = period_min * 60_000;
    if (end - begin) / width >= MAX_POINTS {
        return Err(ApiError::field(
            "beginTime",
            format!(
                "the range holds more than {MAX_POINTS} periods of {period_min} min: narrow it"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    #[test]
    fn minutes_sum_into_aligned_buckets_as_totals_or_tps() {
        let base = 1_700_000_100 * 1000 / (5 * M) * (5 * M);
        let minutes: Minutes = [
            (base, 60),
            (base + M, 120),
            (base + 5 * M, 300),
            (base + 9 * M, 30),
        ]
        .into_iter()
        .collect();
        let totals = buckets(&minutes, base + 30_000, base + 9 * M, 5, false);
        assert_eq!(
            totals,
            vec![
                Record { x: base, y: 180.0 },
                Record {
                    x: base + 5 * M,
                    y: 330.0
                }
            ]
        );
        let tps = buckets(&minutes, base, base + 9 * M, 5, true);
        assert_eq!(tps[0].y, 180.0 / 300.0);
        let per_minute = buckets(&minutes, base, base + 2 * M, 1, true);
        assert_eq!(
            per_minute.iter().map(|r| r.y).collect::<Vec<_>>(),
            vec![1.0, 2.0, 0.0],
            "a minute without messages is a zero, not a gap"
        );
    }

    #[test]
    fn ranges_are_checked() {
        assert!(check_range(10, 10, 1).is_err());
        assert!(check_range(0, MAX_POINTS * M, 1).is_err());
        assert!(check_range(0, MAX_POINTS * M, 10).is_ok());
        let e = check_range(5, 1, 5).unwrap_err();
        assert!(e.detail.starts_with("endTime: "));
    }
}
