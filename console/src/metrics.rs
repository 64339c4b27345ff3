//! `/metrics`: requests by endpoint and code, and their latency (Prometheus text).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (s) of the latency histogram's buckets.
const BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Request counters and latency histograms per (endpoint, code).
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, u16), Series>>,
}

impl Metrics {
    /// Counts one request of `endpoint` (a known path, or `other`) answered with `code`.
    pub fn observe(&self, endpoint: &str, code: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let s = series.entry((endpoint.to_owned(), code)).or_default();
        s.count += 1;
        s.sum += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                s.buckets[i] += 1;
            }
        }
    }

    /// The Prometheus text.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::from(
            "# HELP mq_console_requests_total Requests by endpoint and envelope code.\n# TYPE mq_console_requests_total counter\n",
        );
        for ((endpoint, code), s) in series.iter() {
            let _ = writeln!(
                out,
                "mq_console_requests_total{{endpoint=\"{endpoint}\",code=\"{code}\"}} {}",
                s.count
            );
        }
        out.push_str("# HELP mq_console_request_seconds Request latency.\n# TYPE mq_console_request_seconds histogram\n");
        for ((endpoint, code), s) in series.iter() {
            let labels = format!("endpoint=\"{endpoint}\",code=\"{code}\"");
            for (bound, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(
                    out,
                    "mq_console_request_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "mq_console_request_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "mq_console_request_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(
                out,
                "mq_console_request_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_per_endpoint_and_code() {
        let m = Metrics::default();
        m.observe("/json/topic/get", 200, Duration::from_millis(3));
        m.observe("/json/topic/get", 200, Duration::from_millis(30));
        m.observe("/json/topic/get", 404, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains("mq_console_requests_total{endpoint=\"/json/topic/get\",code=\"200\"} 2")
        );
        assert!(
            text.contains("mq_console_requests_total{endpoint=\"/json/topic/get\",code=\"404\"} 1")
        );
        assert!(text.contains("code=\"200\",le=\"0.005\"} 1"));
        assert!(text.contains("code=\"200\",le=\"0.05\"} 2"));
    }
}
