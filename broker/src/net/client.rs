//! Outgoing connections: to name servers (registration), brokers (admin), clients.

use super::channel::{Channel, ChannelError, RequestHandler, run_connection};
use super::limits::ConnectionLimits;
use crate::remoting::{CommandReader, DEFAULT_MAX_FRAME};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Connects to `addr` (`host:port`) within `timeout`; requests the peer sends on this
/// connection go to `handler`. The connection closes when the peer closes it.
pub async fn connect<H: RequestHandler>(
    addr: &str,
    timeout: Duration,
    handler: Arc<H>,
) -> Result<Channel, ChannelError> {
    let connect_err = |source| ChannelError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_err)?;
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map_err(connect_err)?;
    let local = stream.local_addr().map_err(connect_err)?;
    let (read, write) = stream.into_split();
    let (channel, done) = run_connection(
        CommandReader::new(read, DEFAULT_MAX_FRAME),
        write,
        (peer, local),
        &ConnectionLimits::outgoing(),
        Arc::default(),
        handler,
    );
    tokio::spawn(done);
    Ok(channel)
}
