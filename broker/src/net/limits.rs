//! What one peer, or all of them, can hold of a server: connections overall and per
//! client IP, idle time, a stalled reader, bytes queued and requests in flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Bounds a server puts on its peers (the defaults suit a production broker).
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once on the port (10,000); more are closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one client IP (1,000); more are closed at accept.
    pub max_per_ip: usize,
    /// A connection with no frame received and nothing in flight for this long is closed
    /// (120 s, as RocketMQ closes idle channels); `None` keeps idle connections.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive: probes start after this much silence (30 s), so a peer that
    /// vanished without a FIN is noticed; `None` leaves keepalive off.
    pub keepalive: Option<Duration>,
    /// A write (of queued responses) that makes no progress for this long closes the
    /// connection (30 s): a peer that stopped reading is let go.
    pub write_timeout: Duration,
    /// Bytes of responses queued for one peer (8 MiB); past it, handlers wait for the
    /// peer to read, and the reader stops taking requests once they are all waiting.
    pub max_buffered_bytes: usize,
    /// Bytes of requests one peer may have being handled at once (32 MiB, at least one
    /// frame of the largest size always fits).
    pub max_in_flight_bytes: usize,
    /// Requests one peer may have being handled at once (1,024; long polls count).
    pub max_in_flight_requests: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_per_ip: 1_000,
            idle_timeout: Some(Duration::from_secs(120)),
            keepalive: Some(Duration::from_secs(30)),
            write_timeout: Duration::from_secs(30),
            max_buffered_bytes: 8 << 20,
            max_in_flight_bytes: 32 << 20,
            max_in_flight_requests: 1024,
        }
    }
}

impl ConnectionLimits {
    /// The limits of an outgoing connection we opened ourselves: no idle timeout (its
    /// owner decides when to close it), the same memory bounds.
    pub fn outgoing() -> Self {
        Self {
            idle_timeout: None,
            ..Self::default()
        }
    }
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The port holds `max_connections` already.
    Total,
    /// The client's IP holds `max_per_ip` already.
    PerIp,
}

/// Counts the open connections of one server, overall and per client IP.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    open: Mutex<Open>,
    /// When a refusal was last logged (one line per second at most: a flood of
    /// connections must not become a flood of log lines).
    last_log: Mutex<Option<Instant>>,
    /// Refusals not logged yet.
    unlogged: AtomicU64,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Takes a place for a connection from `ip`, or says why there is none.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &ConnectionLimits,
    ) -> Result<Admitted, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= limits.max_connections {
            return Err(Refusal::Total);
        }
        let from_ip = open.per_ip.entry(ip).or_default();
        if *from_ip >= limits.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *from_ip += 1;
        open.total += 1;
        Ok(Admitted {
            admission: self.clone(),
            ip,
        })
    }

    /// Logs a refusal, folding those of the same second into the next line.
    pub(crate) fn log_refusal(&self, ip: IpAddr, why: Refusal, limits: &ConnectionLimits) {
        let pending = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        self.unlogged.fetch_sub(pending, Ordering::Relaxed);
        let (limit, what) = match why {
            Refusal::Total => (limits.max_connections, "connections on this port"),
            Refusal::PerIp => (limits.max_per_ip, "connections from one IP"),
        };
        tracing::warn!(%ip, refused = pending, limit, "refused new connections: at most {limit} {what}");
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&ip);
            }
        }
    }
}

/// A connection's place in its server's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.ip);
    }
}

/// Turns TCP keepalive on for `stream` (probes after `idle`, then every 10 s, 3 tries).
pub(crate) fn set_keepalive(stream: &TcpStream, idle: Duration) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Bytes queued on one connection's way out, counted into a server-wide gauge too.
#[derive(Debug)]
pub(crate) struct BufferedBytes {
    /// The server's gauge of queued bytes (all connections).
    pub(crate) gauge: Arc<AtomicU64>,
}

impl BufferedBytes {
    /// Counts `n` bytes as queued until the returned guard drops.
    pub(crate) fn hold(&self, n: usize) -> HeldBytes {
        self.gauge.fetch_add(n as u64, Ordering::Relaxed);
        HeldBytes {
            gauge: self.gauge.clone(),
            n: n as u64,
        }
    }
}

/// Queued bytes, uncounted when dropped (after they were written, or the connection
/// closed).
#[derive(Debug)]
pub(crate) struct HeldBytes {
    gauge: Arc<AtomicU64>,
    n: u64,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.gauge.fetch_sub(self.n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_counts_per_ip_and_overall_and_gives_places_back() {
        let limits = ConnectionLimits {
            max_connections: 3,
            max_per_ip: 2,
            ..ConnectionLimits::default()
        };
        let admission = Arc::new(Admission::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = admission.admit(a, &limits).expect("first from a");
        let _a2 = admission.admit(a, &limits).expect("second from a");
        assert_eq!(admission.admit(a, &limits).unwrap_err(), Refusal::PerIp);
        let _b1 = admission.admit(b, &limits).expect("b has its own count");
        assert_eq!(admission.admit(b, &limits).unwrap_err(), Refusal::Total);
        drop(a1);
        admission.admit(a, &limits).expect("a place came back");
    }
}
