//! A writer that gives up on a peer that stopped reading.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

/// Wraps a writer so that a write or flush making no progress for `limit` fails with
/// `TimedOut`. Only the time without progress counts: a slow reader that keeps taking
/// bytes is never cut off, one that takes none is.
pub(crate) struct StallGuard<W> {
    inner: W,
    limit: Duration,
    /// Armed while the inner writer is pending.
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl<W> StallGuard<W> {
    /// Guards `inner` with `limit`.
    pub(crate) fn new(inner: W, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// Turns a `Pending` of the inner writer into `TimedOut` once it has lasted `limit`.
    fn stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.limit);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer read nothing for {:?}", self.limit),
        )))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallGuard<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.stalled(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.stalled(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_times_out_one_that_takes_bytes_does_not() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(near, Duration::from_secs(5));
        // The far end reads slowly but steadily: 64 bytes every 4 s, under the limit.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut got = 0;
            while got < 512 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                got += far.read(&mut buf).await.expect("read");
            }
            far
        });
        guarded
            .write_all(&[1u8; 512])
            .await
            .expect("a slow reader is served");
        let _far = reader.await.expect("reader");
        // Now nobody reads: the write fails after the limit instead of hanging.
        let err = guarded.write_all(&[2u8; 512]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
