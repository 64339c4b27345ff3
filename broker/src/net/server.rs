//! The accept loop: one [`Channel`] per client connection.

use super::channel::{Closed, RequestHandler, run_connection};
use super::tls::{Accepted, TlsIdentity};
use crate::remoting::{CommandReader, CommandWriter, DEFAULT_MAX_FRAME};
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
}

/// A listening remoting server.
pub struct RemotingServer {
    listener: TcpListener,
    max_frame: usize,
    stats: Arc<ServerStats>,
    tls: Option<Arc<TlsIdentity>>,
}

impl RemotingServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            max_frame: DEFAULT_MAX_FRAME,
            stats: Arc::default(),
            tls: None,
        })
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
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let conn = Connection {
            peer,
            local,
            max_frame: self.max_frame,
            stats: self.stats.clone(),
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
}

/// A connection accepted, before it runs.
struct Connection {
    peer: SocketAddr,
    local: SocketAddr,
    max_frame: usize,
    stats: Arc<ServerStats>,
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
            CommandWriter::new(write),
            self.peer,
            self.local,
            handler,
        );
        let (stats, peer) = (self.stats, self.peer);
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Closed::Error(e) = done.await {
                stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, error = %e, "closed connection after a bad frame");
            }
            stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
