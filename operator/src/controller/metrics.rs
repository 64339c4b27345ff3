//! The operator's `/healthz`, `/readyz`, `/livez` and `/metrics` (Prometheus text), served
//! by the broker library's small ops responder. What the health routes say is decided in
//! [`super::health`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use mq_broker::ops::Routes;

use super::health::Health;

/// The kinds the operator reconciles, in metric label order.
pub const KINDS: [&str; 4] = ["MQInstance", "MQTopic", "MQGroup", "MQEmpower"];

/// Counters per kind.
#[derive(Default)]
struct PerKind {
    reconciles: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
    in_flight: AtomicU64,
}

/// What the operator counts.
#[derive(Default)]
pub struct Metrics {
    kinds: [PerKind; 4],
    writes: AtomicU64,
    leader: AtomicBool,
    running: AtomicBool,
    cached: [AtomicU64; 4],
    /// Liveness and readiness.
    pub health: Health,
}

impl Metrics {
    /// Metrics whose health routes decide with `health`.
    pub fn with_health(health: Health) -> Self {
        Self {
            health,
            ..Self::default()
        }
    }

    fn kind(&self, kind: &str) -> Option<&PerKind> {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .map(|i| &self.kinds[i])
    }

    /// Counts a reconcile of `kind` as running until [`Metrics::reconciled`].
    pub fn begin(&self, kind: &str) {
        if let Some(k) = self.kind(kind) {
            k.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        self.health.began(kind, Instant::now());
    }

    /// Records one reconcile of `kind` that began at `started`.
    pub fn reconciled(&self, kind: &str, started: Instant, ok: bool) {
        if let Some(k) = self.kind(kind) {
            let _ = k
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            k.reconciles.fetch_add(1, Ordering::Relaxed);
            if !ok {
                k.errors.fetch_add(1, Ordering::Relaxed);
            }
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            k.micros.fetch_add(micros, Ordering::Relaxed);
        }
        self.health.finished(kind, Instant::now());
    }

    /// Counts one write to the Kubernetes API (apply, status, annotation).
    pub fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets how many objects of `kind` the operator's caches hold.
    pub fn set_cached(&self, kind: &str, count: usize) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.cached[i].store(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// Marks this replica as the leader (or not).
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
        self.health.set_leader(leader);
    }

    /// Marks the controllers as running.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    /// API writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "mq_operator_reconciles_total",
            "counter",
            "Reconciles run, by resource kind.",
        );
        for (kind, k) in KINDS.iter().zip(&self.kinds) {
            let _ = writeln!(
                out,
                "mq_operator_reconciles_total{{kind=\"{kind}\"}} {}",
                k.reconciles.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "mq_operator_reconcile_errors_total",
            "counter",
            "Reconciles that failed (retried with back-off).",
        );
        for (kind, k) in KINDS.iter().zip(&self.kinds) {
            let _ = writeln!(
                out,
                "mq_operator_reconcile_errors_total{{kind=\"{kind}\"}} {}",
                k.errors.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "mq_operator_reconcile_seconds_total",
            "counter",
            "Time spent reconciling; divide by reconciles for the mean.",
        );
        for (kind, k) in KINDS.iter().zip(&self.kinds) {
            let secs = k.micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "mq_operator_reconcile_seconds_total{{kind=\"{kind}\"}} {secs:.6}"
            );
        }
        family(
            &mut out,
            "mq_operator_reconciles_in_flight",
            "gauge",
            "Reconciles running now, by kind (the controllers' work in progress).",
        );
        for (kind, k) in KINDS.iter().zip(&self.kinds) {
            let _ = writeln!(
                out,
                "mq_operator_reconciles_in_flight{{kind=\"{kind}\"}} {}",
                k.in_flight.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "mq_operator_objects",
            "gauge",
            "Objects in the operator's caches (the work a resync queues).",
        );
        for (kind, c) in KINDS.iter().zip(&self.cached) {
            let _ = writeln!(
                out,
                "mq_operator_objects{{kind=\"{kind}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "mq_operator_api_writes_total",
            "counter",
            "Writes to the Kubernetes API (0 while nothing changes).",
        );
        let _ = writeln!(out, "mq_operator_api_writes_total {}", self.writes());
        family(
            &mut out,
            "mq_operator_leader",
            "gauge",
            "1 when this replica holds the leader lease.",
        );
        let _ = writeln!(
            out,
            "mq_operator_leader {}",
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        let now = Instant::now();
        for (name, help, value) in [
            (
                "mq_operator_live",
                "1 when /livez answers 200 (controllers running and making progress).",
                self.health.liveness(now).is_ok(),
            ),
            (
                "mq_operator_ready",
                "1 when /readyz answers 200 (the API server answered within 30 s).",
                self.health.readiness(now).is_ok(),
            ),
            (
                "mq_operator_apiserver_reachable",
                "1 when the API server answered a check within the last 30 s.",
                self.health.api_reachable(now),
            ),
        ] {
            family(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", u8::from(value));
        }
        let kinds = self.health.kinds(now);
        family(
            &mut out,
            "mq_operator_controller_stopped",
            "gauge",
            "1 when a kind's controller stream ended on the leader (liveness fails).",
        );
        for (kind, (stopped, _)) in KINDS.iter().zip(kinds) {
            let _ = writeln!(
                out,
                "mq_operator_controller_stopped{{kind=\"{kind}\"}} {}",
                u8::from(stopped)
            );
        }
        family(
            &mut out,
            "mq_operator_reconcile_stalled",
            "gauge",
            "1 when a kind has reconciles in flight and none finished within the stall bound.",
        );
        for (kind, (_, stalled)) in KINDS.iter().zip(kinds) {
            let _ = writeln!(
                out,
                "mq_operator_reconcile_stalled{{kind=\"{kind}\"}} {}",
                u8::from(stalled)
            );
        }
        if let Some(rss) = mq_broker::ops::resident_bytes() {
            family(
                &mut out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory.",
            );
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        out
    }
}

impl Routes for Metrics {
    fn route(&self, path: &str) -> (u16, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        match path {
            // Readiness: the API server answers. `/healthz` (what the Deployment's
            // readiness probe asks) also fails while not live, so a leader whose
            // controllers stopped leaves the webhook Service until it restarts.
            "/readyz" => answer(self.health.readiness(Instant::now())),
            "/livez" => answer(self.health.liveness(Instant::now())),
            "/healthz" => {
                let now = Instant::now();
                answer(
                    self.health
                        .readiness(now)
                        .and_then(|()| self.health.liveness(now)),
                )
            }
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.render(),
            ),
            _ => (
                404,
                TEXT,
                "not found: try /healthz, /livez or /metrics\n".into(),
            ),
        }
    }
}

/// 200 `ok`, or 503 with the reason.
fn answer(health: Result<(), String>) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match health {
        Ok(()) => (200, TEXT, "ok\n".into()),
        Err(why) => (503, TEXT, format!("{why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_counts_per_kind() {
        let m = Metrics::default();
        m.begin("MQTopic");
        m.begin("MQEmpower");
        m.reconciled("MQTopic", Instant::now(), true);
        m.reconciled("MQTopic", Instant::now(), false);
        m.wrote();
        m.set_cached("MQGroup", 7);
        m.set_leader(true);
        let (code, _, text) = m.route("/metrics");
        assert_eq!(code, 200);
        assert!(text.contains("mq_operator_reconciles_total{kind=\"MQTopic\"} 2"));
        assert!(text.contains("mq_operator_reconcile_errors_total{kind=\"MQTopic\"} 1"));
        assert!(text.contains("mq_operator_objects{kind=\"MQGroup\"} 7"));
        assert!(text.contains("mq_operator_api_writes_total 1"));
        assert!(text.contains("mq_operator_leader 1"));
        assert!(text.contains("mq_operator_reconciles_in_flight{kind=\"MQTopic\"} 0"));
        assert!(text.contains("mq_operator_reconciles_in_flight{kind=\"MQEmpower\"} 1"));
        assert!(text.contains("mq_operator_live 1\n"), "{text}");
        assert!(text.contains("mq_operator_ready 1\n"), "{text}");
        assert!(text.contains("mq_operator_controller_stopped{kind=\"MQGroup\"} 0\n"));
        assert_eq!(m.route("/nope").0, 404);
    }

    #[test]
    fn health_routes_answer_503_with_the_reason() {
        let m = Metrics::default();
        assert_eq!(m.route("/livez").0, 200);
        assert_eq!(m.route("/healthz").0, 200);
        m.set_leader(true);
        m.health.ended("MQEmpower");
        let (code, _, why) = m.route("/livez");
        assert_eq!(
            (code, why.as_str()),
            (503, "the MQEmpower controller stopped\n")
        );
        assert_eq!(m.route("/healthz").0, 503);
        assert_eq!(m.route("/readyz").0, 200);
        let text = m.route("/metrics").2;
        assert!(text.contains("mq_operator_live 0\n"), "{text}");
        assert!(text.contains("mq_operator_controller_stopped{kind=\"MQEmpower\"} 1\n"));
    }
}
