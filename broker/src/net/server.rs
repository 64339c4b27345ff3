//! The accept loop: one [`Channel`] per client connection.

use super::channel::{Closed, RequestHandler, run_connection};
use super::limits::{Admission, Admitted, ConnectionLimits, Refusal, set_keepalive};
use super::tls::{Accepted, TlsIdentity};
use crate::remoting::{CommandReader, DEFAULT_MAX_FRAME};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Counters an operator reads at `/metrics`.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections closed because of a malformed or oversized frame.
    pub bad_frames: AtomicU64,
    /// Connections that completed a TLS handshake.
    pub tls_connections: AtomicU64,
    /// Connections closed because their first byte or TLS handshake did not arrive in
    /// time, or the handshake failed.
    pub tls_handshake_failures: AtomicU64,
    /// Connections closed at accept: the port held `max_connections` already.
    pub refused_total_limit: AtomicU64,
    /// Connections closed at accept: their IP held `max_per_ip` already.
    pub refused_per_ip: AtomicU64,
    /// Connections closed after the idle timeout.
    pub idle_closed: AtomicU64,
    /// Connections closed because the peer read none of our output for the write
    /// timeout, or writing failed.
    pub write_failures: AtomicU64,
    /// Bytes of responses queued for peers, not yet taken by them (all connections).
    pub buffered_bytes: Arc<AtomicU64>,
}

/// A listening remoting server.
pub struct RemotingServer {
    listener: TcpListener,
    max_frame: usize,
    limits: Arc<ConnectionLimits>,
    admission: Arc<Admission>,
    stats: Arc<ServerStats>,
    tls: Option<Arc<TlsIdentity>>,
}

impl RemotingServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            max_frame: DEFAULT_MAX_FRAME,
            limits: Arc::default(),
            admission: Arc::default(),
            stats: Arc::default(),
            tls: None,
        })
    }

    /// Bounds what peers can hold of this port (connections, idle time, memory).
    pub fn with_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// Also serves TLS clients on this port, with `identity` (plaintext ones still work).
    pub fn with_tls(mut self, identity: Option<Arc<TlsIdentity>>) -> Self {
        self.tls = identity;
        self
    }

    /// Accepts frames up to `max_frame` bytes (length prefix included).
    pub fn with_max_frame(mut self, max_frame: usize) -> Self {
        self.max_frame = max_frame;
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Serves connections with `handler` until `shutdown` resolves.
    pub async fn serve<H: RequestHandler>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => self.spawn_connection(stream, peer, handler.clone()),
                    // Running out of descriptors must not end the server; back off briefly.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    fn spawn_connection<H: RequestHandler>(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        handler: Arc<H>,
    ) {
        let admitted = match self.admission.admit(peer.ip(), &self.limits) {
            Ok(admitted) => admitted,
            // Dropping the stream closes it: the peer sees the connection end at once.
            Err(why) => return self.refuse(peer, why),
        };
        let _ = stream.set_nodelay(true);
        if let Some(idle) = self.limits.keepalive {
            let _ = set_keepalive(&stream, idle);
        }
        let local = stream.local_addr().unwrap_or(peer);
        let conn = Connection {
            peer,
            local,
            max_frame: self.max_frame,
            limits: self.limits.clone(),
            stats: self.stats.clone(),
            _admitted: admitted,
        };
        let Some(tls) = self.tls.clone() else {
            let (read, write) = stream.into_split();
            return conn.start(read, write, handler);
        };
        // The first byte and the handshake are awaited in the connection's own task, so a
        // slow client never holds up the accept loop.
        tokio::spawn(async move {
            match tls.accept(stream).await {
                Ok(Accepted::Plain(stream)) => {
                    let (read, write) = stream.into_split();
                    conn.start(read, write, handler);
                }
                Ok(Accepted::Tls(stream)) => {
                    conn.stats.tls_connections.fetch_add(1, Ordering::Relaxed);
                    let (read, write) = tokio::io::split(*stream);
                    conn.start(read, write, handler);
                }
                Err(e) => {
                    conn.stats
                        .tls_handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, error = %e, "closed a connection before its first frame");
                }
            }
        });
    }

    /// Counts and logs a connection closed at accept.
    fn refuse(&self, peer: SocketAddr, why: Refusal) {
        let counter = match why {
            Refusal::Total => &self.stats.refused_total_limit,
            Refusal::PerIp => &self.stats.refused_per_ip,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.admission.log_refusal(peer.ip(), why, &self.limits);
    }
}

/// A connection accepted, before it runs.
struct Connection {
    peer: SocketAddr,
    local: SocketAddr,
    max_frame: usize,
    limits: Arc<ConnectionLimits>,
    stats: Arc<ServerStats>,
    /// The connection's place in the per-IP and overall counts, until it closes.
    _admitted: Admitted,
}

impl Connection {
    /// Runs the connection's tasks over `read`/`write`, counting it while open.
    fn start<R, W, H>(self, read: R, write: W, handler: Arc<H>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
        H: RequestHandler,
    {
        let (_channel, done) = run_connection(
            CommandReader::new(read, self.max_frame),
            write,
            (self.peer, self.local),
            &self.limits,
            self.stats.buffered_bytes.clone(),
            handler,
        );
        let (stats, peer, admitted) = (self.stats, self.peer, self._admitted);
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            match done.await {
                Closed::Clean => {}
                Closed::Error(e) => {
                    stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, error = %e, "closed connection after a bad frame");
                }
                Closed::Idle => {
                    stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "closed an idle connection");
                }
                Closed::WriteFailed(e) => {
                    stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, error = %e, "closed a connection whose output could not be written");
                }
            }
            stats.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(admitted);
        });
    }
}
