//! One connection to a peer, usable from any task.

use super::limits::{BufferedBytes, ConnectionLimits, HeldBytes};
use super::stall::StallGuard;
use crate::remoting::{
    CommandReader, CommandWriter, ConnectionError, RemotingCommand, response_code,
};
use futures::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Commands queued for the writer before senders wait (back-pressure, bounded memory).
const WRITE_QUEUE: usize = 1024;

/// Handles requests a peer sends on a connection.
pub trait RequestHandler: Send + Sync + 'static {
    /// The response to `request`, or `None` to send nothing (oneway requests never get one).
    fn handle(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> impl Future<Output = Option<RemotingCommand>> + Send;
}

/// What a handler knows about the request's connection.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The connection the request came on; also used to call the peer back.
    pub channel: Channel,
    /// When the request's frame was read (time queued before the handler counts, e.g.
    /// for the broker's SYSTEM_BUSY bound on sends).
    pub received: std::time::Instant,
}

/// Why a request to the peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The connection is closed.
    #[error("connection to {0} is closed")]
    Closed(SocketAddr),
    /// No response arrived in time.
    #[error("no response from {peer} within {timeout:?}")]
    Timeout {
        /// The peer.
        peer: SocketAddr,
        /// How long we waited.
        timeout: Duration,
    },
    /// Connecting failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Where we tried to connect.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A cheap handle to one connection: send commands, call the peer, see who it is.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    outbox: mpsc::Sender<Queued>,
    /// Bytes that may still be queued for the peer (`max_buffered_bytes`).
    budget: Arc<Semaphore>,
    /// The largest share of `budget` one command takes (all of it).
    max_buffered: usize,
    buffered: BufferedBytes,
    pending: Mutex<HashMap<i32, oneshot::Sender<RemotingCommand>>>,
    next_opaque: AtomicI32,
    closed: AtomicBool,
    /// Wakes the connection's reader to end the connection ([`Channel::shutdown`]).
    shutdown: Notify,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.inner.id)
            .field("peer", &self.inner.peer)
            .finish()
    }
}

static NEXT_CHANNEL_ID: AtomicU64 = AtomicU64::new(1);

impl Channel {
    /// A process-unique id of this connection.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Our end's address (what the peer connected to).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Ends the connection: requests awaiting a response fail, and the socket closes
    /// (the peer sees it closed). The connection's own tasks hold handles too, so an
    /// outgoing connection nobody uses any more stays open until this is called or the
    /// peer closes it.
    pub fn shutdown(&self) {
        self.inner.shutdown.notify_one();
    }

    /// Queues a command for the peer (a response, or a oneway request), first waiting
    /// while the bytes queued for the peer are at the budget (a peer that does not
    /// read holds only that much).
    pub async fn send(&self, cmd: RemotingCommand) -> Result<(), ChannelError> {
        let closed = || ChannelError::Closed(self.inner.peer);
        let len = cmd.approx_len();
        let share = len.min(self.inner.max_buffered).max(1) as u32;
        let permit = (self.inner.budget.clone())
            .acquire_many_owned(share)
            .await
            .map_err(|_| closed())?;
        let queued = Queued {
            cmd,
            _permit: permit,
            _held: self.inner.buffered.hold(len),
        };
        self.inner.outbox.send(queued).await.map_err(|_| closed())
    }

    /// Sends `cmd` as a oneway request: the peer answers nothing.
    pub async fn send_oneway(&self, mut cmd: RemotingCommand) -> Result<(), ChannelError> {
        cmd.mark_oneway();
        cmd.opaque = self.next_opaque();
        self.send(cmd).await
    }

    /// Sends a request and waits for the response with the same opaque.
    pub async fn request(
        &self,
        mut cmd: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, ChannelError> {
        let opaque = self.next_opaque();
        cmd.opaque = opaque;
        let (tx, rx) = oneshot::channel();
        self.pending().insert(opaque, tx);
        let result = async {
            self.send(cmd).await?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(_)) => Err(ChannelError::Closed(self.inner.peer)),
                Err(_) => Err(ChannelError::Timeout {
                    peer: self.inner.peer,
                    timeout,
                }),
            }
        }
        .await;
        self.pending().remove(&opaque);
        result
    }

    fn next_opaque(&self) -> i32 {
        self.inner.next_opaque.fetch_add(1, Ordering::Relaxed)
    }

    /// The map of requests awaiting a response; poisoning cannot leave it inconsistent
    /// (single inserts/removes), so a poisoned lock is simply taken over.
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<RemotingCommand>>> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn complete(&self, response: RemotingCommand) {
        if let Some(tx) = self.pending().remove(&response.opaque) {
            let _ = tx.send(response);
        } else {
            tracing::debug!(peer = %self.inner.peer, opaque = response.opaque, "response nobody waits for");
        }
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        // Wakes senders waiting for budget; they see the connection closed.
        self.inner.budget.close();
        // Dropping the senders wakes every waiting request with "closed".
        self.pending().clear();
    }
}

/// A command on its way out, holding its share of the connection's byte budget until
/// it has been written.
struct Queued {
    cmd: RemotingCommand,
    _permit: OwnedSemaphorePermit,
    _held: HeldBytes,
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Closed {
    /// The peer closed between frames.
    Clean,
    /// The peer sent a malformed or oversized frame, or the stream failed.
    Error(ConnectionError),
    /// Nothing arrived and nothing was in flight for the idle timeout.
    Idle,
    /// The peer read none of our output for the write timeout, or writing failed.
    WriteFailed(std::io::Error),
}

/// Starts the tasks of one connection and returns its channel and a future that resolves
/// when the connection has closed.
pub(crate) fn run_connection<R, W, H>(
    reader: CommandReader<R>,
    writer: W,
    ends: (SocketAddr, SocketAddr),
    limits: &ConnectionLimits,
    buffered: Arc<std::sync::atomic::AtomicU64>,
    handler: Arc<H>,
) -> (Channel, impl Future<Output = Closed> + Send + use<R, W, H>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    H: RequestHandler,
{
    let (peer, local) = ends;
    let (outbox, inbox) = mpsc::channel(WRITE_QUEUE);
    let max_buffered = limits.max_buffered_bytes.clamp(1, u32::MAX as usize);
    let channel = Channel {
        inner: Arc::new(Inner {
            id: NEXT_CHANNEL_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            local,
            outbox,
            budget: Arc::new(Semaphore::new(max_buffered)),
            max_buffered,
            buffered: BufferedBytes { gauge: buffered },
            pending: Mutex::new(HashMap::new()),
            next_opaque: AtomicI32::new(1),
            closed: AtomicBool::new(false),
            shutdown: Notify::new(),
        }),
    };
    let writer = CommandWriter::new(StallGuard::new(writer, limits.write_timeout));
    let mut write_task = tokio::spawn(write_loop(writer, inbox));
    let read_channel = channel.clone();
    let reading = InFlight::new(limits);
    let done = async move {
        let closed = tokio::select! {
            closed = read_loop(reader, &read_channel, handler, reading) => closed,
            () = read_channel.inner.shutdown.notified() => Closed::Clean,
            ended = &mut write_task => match ended {
                Ok(Err(e)) => Closed::WriteFailed(e),
                _ => Closed::Clean,
            },
        };
        read_channel.close();
        write_task.abort();
        closed
    };
    (channel, done)
}

/// Writes queued commands until the channel closes; an error (a peer that stopped
/// reading, a reset) ends the connection.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: CommandWriter<W>,
    mut inbox: mpsc::Receiver<Queued>,
) -> std::io::Result<()> {
    while let Some(first) = inbox.recv().await {
        // Everything already queued goes out with one flush (pipelined clients). Each
        // command's budget share is given back once the flush has taken it.
        let mut written = Vec::new();
        let mut next = Some(first);
        let mut result = Ok(());
        while let (Some(queued), Ok(())) = (next.take(), &result) {
            result = writer.feed(&queued.cmd).await;
            written.push(queued);
            next = inbox.try_recv().ok();
        }
        if let Err(e) = result.and(writer.flush().await) {
            tracing::debug!(error = %e, "write failed; closing the connection");
            return Err(match e {
                ConnectionError::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            });
        }
        drop(written);
    }
    Ok(())
}

/// What one peer may have being handled at once: requests and their bytes.
struct InFlight {
    requests: Arc<Semaphore>,
    max_requests: usize,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    idle_timeout: Option<Duration>,
}

impl InFlight {
    fn new(limits: &ConnectionLimits) -> Self {
        let max_requests = limits.max_in_flight_requests.max(1);
        let max_bytes = limits.max_in_flight_bytes.clamp(1, u32::MAX as usize);
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Whether any request of the peer is being handled (a held long poll counts).
    fn busy(&self) -> bool {
        self.requests.available_permits() < self.max_requests
    }

    /// Waits for room for `request`; `None` once the connection is closing.
    async fn admit(&self, request: &RemotingCommand) -> Option<Admitted> {
        let share = request.approx_len().min(self.max_bytes).max(1) as u32;
        let bytes = self.bytes.clone().acquire_many_owned(share).await.ok()?;
        let request = self.requests.clone().acquire_owned().await.ok()?;
        Some(Admitted {
            _request: request,
            _bytes: bytes,
        })
    }
}

/// A request's place among the peer's requests in flight, given back when handled.
struct Admitted {
    _request: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

async fn read_loop<R: AsyncRead + Unpin, H: RequestHandler>(
    mut reader: CommandReader<R>,
    channel: &Channel,
    handler: Arc<H>,
    in_flight: InFlight,
) -> Closed {
    loop {
        let cmd = match next_command(&mut reader, channel, &in_flight).await {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return Closed::Clean,
            Err(closed) => return closed,
        };
        if cmd.is_response() {
            channel.complete(cmd);
            continue;
        }
        let received = std::time::Instant::now();
        let Some(admitted) = in_flight.admit(&cmd).await else {
            return Closed::Clean;
        };
        tokio::spawn(dispatch(
            channel.clone(),
            handler.clone(),
            cmd,
            received,
            admitted,
        ));
    }
}

/// The next command, or why the connection ends: a bad frame, or idleness (no frame
/// for the idle timeout while nothing is in flight either way).
async fn next_command<R: AsyncRead + Unpin>(
    reader: &mut CommandReader<R>,
    channel: &Channel,
    in_flight: &InFlight,
) -> Result<Option<RemotingCommand>, Closed> {
    let Some(idle) = in_flight.idle_timeout else {
        return reader.read_command().await.map_err(Closed::Error);
    };
    loop {
        // Reading is cancel-safe: bytes of a partial frame stay in the reader's buffer.
        if let Ok(read) = tokio::time::timeout(idle, reader.read_command()).await {
            return read.map_err(Closed::Error);
        }
        if !in_flight.busy() && channel.pending().is_empty() {
            return Err(Closed::Idle);
        }
    }
}

/// Runs the handler in a task of its own so a panic becomes a `SYSTEM_ERROR` answer
/// instead of a dead connection.
async fn dispatch<H: RequestHandler>(
    channel: Channel,
    handler: Arc<H>,
    request: RemotingCommand,
    received: std::time::Instant,
    _admitted: Admitted,
) {
    let oneway = request.is_oneway();
    // Enough of the request to answer it if the handler panics (no ext fields or body).
    let header_only = RemotingCommand {
        code: request.code,
        opaque: request.opaque,
        serialize_type: request.serialize_type,
        ..RemotingCommand::default()
    };
    let ctx = RequestContext {
        channel: channel.clone(),
        received,
    };
    // A panicking handler must not take the connection down: catch it here rather than
    // spawning a second task per request.
    let handled = std::panic::AssertUnwindSafe(handler.handle(ctx, request)).catch_unwind();
    let response = match handled.await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(code = header_only.code, peer = %channel.peer_addr(), "request handler panicked");
            Some(RemotingCommand::response_to(
                &header_only,
                response_code::SYSTEM_ERROR,
                Some("internal error while handling the request"),
            ))
        }
    };
    if let Some(response) = response.filter(|_| !oneway) {
        let _ = channel.send(response).await;
    }
}
