//! The accept loop: one [`Channel`] per client connection.

use super::channel::{Closed, RequestHandler, run_connection};
use crate::remoting::{CommandReader, CommandWriter, DEFAULT_MAX_FRAME};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// A listening remoting server.
pub struct RemotingServer {
    listener: TcpListener,
    max_frame: usize,
    stats: Arc<ServerStats>,
}

impl RemotingServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            max_frame: DEFAULT_MAX_FRAME,
            stats: Arc::default(),
        })
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
        let (read, write) = stream.into_split();
        let (_channel, done) = run_connection(
            CommandReader::new(read, self.max_frame),
            CommandWriter::new(write),
            peer,
            local,
            handler,
        );
        let stats = self.stats.clone();
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
