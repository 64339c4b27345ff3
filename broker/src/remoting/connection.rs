//! Buffered reading and writing of commands over any async byte stream.
//!
//! [`Connection`] owns the whole stream; [`Connection::into_split`] gives a reader and a
//! writer half so a server can keep reading while slow requests (long polls) are answered
//! from other tasks.

use bytes::BytesMut;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf,
};

use super::command::RemotingCommand;
use super::frame::{self, DEFAULT_MAX_FRAME, FrameError};

/// Smallest read-buffer growth; frames larger than this grow it geometrically.
const READ_CHUNK: usize = 8 * 1024;

/// Why reading or writing a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame we cannot decode, or a command cannot be encoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed mid-frame with {buffered} bytes buffered")]
    EofMidFrame {
        /// Bytes of the unfinished frame received.
        buffered: usize,
    },
}

/// A command stream over `S`, with a read buffer and a buffered writer.
#[derive(Debug)]
pub struct Connection<S> {
    /// The stream; reads pass through the `BufWriter` untouched.
    stream: BufWriter<S>,
    /// Received bytes not yet decoded.
    buffer: BytesMut,
    /// Largest frame accepted, length prefix included.
    max_frame: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection accepting frames up to [`DEFAULT_MAX_FRAME`] (16 MiB).
    pub fn new(stream: S) -> Self {
        Self::with_max_frame(stream, DEFAULT_MAX_FRAME)
    }

    /// A connection accepting frames up to `max_frame` bytes.
    pub fn with_max_frame(stream: S, max_frame: usize) -> Self {
        Self {
            stream: BufWriter::new(stream),
            buffer: BytesMut::new(),
            max_frame,
        }
    }

    /// The largest frame this connection accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The underlying stream, e.g. to read the peer address.
    pub fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// The next command; `None` when the peer closed cleanly between frames.
    pub async fn read_command(&mut self) -> Result<Option<RemotingCommand>, ConnectionError> {
        read_command(&mut self.stream, &mut self.buffer, self.max_frame).await
    }

    /// Writes one command and flushes it.
    pub async fn write_command(&mut self, cmd: &RemotingCommand) -> Result<(), ConnectionError> {
        write_command(&mut self.stream, cmd).await
    }

    /// Splits into a reader and a writer that can be used from different tasks.
    ///
    /// Bytes already buffered for reading move to the reader.
    pub fn into_split(self) -> (CommandReader<ReadHalf<S>>, CommandWriter<WriteHalf<S>>) {
        // Every write flushes, so the BufWriter holds nothing here.
        let (read, write) = tokio::io::split(self.stream.into_inner());
        let reader = CommandReader {
            stream: read,
            buffer: self.buffer,
            max_frame: self.max_frame,
        };
        (reader, CommandWriter::new(write))
    }
}

/// The reading half of a split [`Connection`], or a reader over any `AsyncRead`.
#[derive(Debug)]
pub struct CommandReader<R> {
    /// The byte source.
    stream: R,
    /// Received bytes not yet decoded.
    buffer: BytesMut,
    /// Largest frame accepted, length prefix included.
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> CommandReader<R> {
    /// A reader accepting frames up to `max_frame` bytes.
    pub fn new(stream: R, max_frame: usize) -> Self {
        Self {
            stream,
            buffer: BytesMut::new(),
            max_frame,
        }
    }

    /// The next command; `None` when the peer closed cleanly between frames.
    pub async fn read_command(&mut self) -> Result<Option<RemotingCommand>, ConnectionError> {
        read_command(&mut self.stream, &mut self.buffer, self.max_frame).await
    }
}

/// The writing half of a split [`Connection`], or a writer over any `AsyncWrite`.
#[derive(Debug)]
pub struct CommandWriter<W> {
    /// The byte sink, buffered so a small frame goes out in one write.
    stream: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin> CommandWriter<W> {
    /// A writer over `stream`.
    pub fn new(stream: W) -> Self {
        Self {
            stream: BufWriter::new(stream),
        }
    }

    /// Writes one command and flushes it.
    pub async fn write_command(&mut self, cmd: &RemotingCommand) -> Result<(), ConnectionError> {
        write_command(&mut self.stream, cmd).await
    }

    /// Writes one command into the buffer without flushing, so several replies ready at
    /// once leave in one system call; call [`CommandWriter::flush`] after the last.
    pub async fn feed(&mut self, cmd: &RemotingCommand) -> Result<(), ConnectionError> {
        write_frame(&mut self.stream, cmd).await
    }

    /// Sends everything fed so far.
    pub async fn flush(&mut self) -> Result<(), ConnectionError> {
        self.stream.flush().await?;
        Ok(())
    }
}

/// Reads until `buffer` holds a whole frame, then decodes it.
async fn read_command<R: AsyncRead + Unpin>(
    stream: &mut R,
    buffer: &mut BytesMut,
    max_frame: usize,
) -> Result<Option<RemotingCommand>, ConnectionError> {
    loop {
        if let Some(cmd) = frame::decode(buffer, max_frame)? {
            return Ok(Some(cmd));
        }
        reserve_for_frame(buffer, max_frame)?;
        if stream.read_buf(buffer).await? == 0 {
            return match buffer.len() {
                0 => Ok(None),
                buffered => Err(ConnectionError::EofMidFrame { buffered }),
            };
        }
    }
}

/// Grows `buffer` toward the pending frame's size, at most doubling what has arrived,
/// so a peer announcing a large frame cannot make us allocate it before sending it.
fn reserve_for_frame(buffer: &mut BytesMut, max_frame: usize) -> Result<(), FrameError> {
    let missing = match frame::frame_len(buffer, max_frame)? {
        Some(total) => total.saturating_sub(buffer.len()),
        None => READ_CHUNK,
    };
    let step = missing.min(buffer.len().max(READ_CHUNK)).max(1);
    if buffer.capacity() - buffer.len() < step {
        buffer.reserve(step);
    }
    Ok(())
}

/// Encodes `cmd` and writes it; the body is written from its own buffer, not copied.
async fn write_command<W: AsyncWrite + Unpin>(
    stream: &mut BufWriter<W>,
    cmd: &RemotingCommand,
) -> Result<(), ConnectionError> {
    write_frame(stream, cmd).await?;
    stream.flush().await?;
    Ok(())
}

/// Encodes `cmd` into the buffered stream without flushing.
async fn write_frame<W: AsyncWrite + Unpin>(
    stream: &mut BufWriter<W>,
    cmd: &RemotingCommand,
) -> Result<(), ConnectionError> {
    let mut head = BytesMut::new();
    frame::encode_head(cmd, &mut head)?;
    stream.write_all(&head).await?;
    if let Some(body) = &cmd.body {
        stream.write_all(body).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::codes::{request_code, response_code};
    use crate::remoting::command::SerializeType;

    /// A request with a body, in the given encoding.
    fn request(opaque: i32, serialize_type: SerializeType) -> RemotingCommand {
        RemotingCommand::new_request(request_code::SEND_MESSAGE)
            .with_opaque(opaque)
            .with_ext("topic", "TopicTest")
            .with_body(vec![7u8; 100_000])
            .with_serialize_type(serialize_type)
    }

    #[tokio::test]
    async fn commands_cross_a_duplex_stream_and_eof_is_clean() {
        let (client, server) = tokio::io::duplex(1024);
        let mut client = Connection::new(client);
        let mut server = Connection::new(server);
        let sent = [
            request(1, SerializeType::Json),
            request(2, SerializeType::RocketMq),
        ];
        let writer = tokio::spawn(async move {
            for cmd in &sent {
                client.write_command(cmd).await.expect("write");
            }
            sent
        });
        let first = server
            .read_command()
            .await
            .expect("read")
            .expect("a command");
        let second = server
            .read_command()
            .await
            .expect("read")
            .expect("a command");
        let sent = writer.await.expect("writer task");
        assert_eq!([first, second], sent);
        assert!(server.read_command().await.expect("clean EOF").is_none());
    }

    #[tokio::test]
    async fn eof_mid_frame_is_an_error() {
        let mut bytes = BytesMut::new();
        frame::encode(&request(1, SerializeType::Json), &mut bytes).expect("encodable");
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client
            .write_all(&bytes[..bytes.len() - 1])
            .await
            .expect("write");
        drop(client);
        let mut server = Connection::new(server);
        let err = server.read_command().await.expect_err("truncated stream");
        assert!(
            matches!(err, ConnectionError::EofMidFrame { buffered } if buffered == bytes.len() - 1)
        );
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_from_their_prefix() {
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(&[0x00, 0x10, 0x00, 0x00])
            .await
            .expect("write");
        let mut server = Connection::with_max_frame(server, 4096);
        assert_eq!(server.max_frame(), 4096);
        let err = server.read_command().await.expect_err("too large");
        assert!(matches!(
            err,
            ConnectionError::Frame(FrameError::TooLarge {
                len: 0x10_0004,
                max: 4096
            })
        ));
    }

    #[tokio::test]
    async fn split_halves_keep_buffered_bytes_and_answer() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut client = Connection::new(client);
        client
            .write_command(&request(5, SerializeType::Json))
            .await
            .expect("write");
        client
            .write_command(&request(6, SerializeType::RocketMq))
            .await
            .expect("write");
        let mut server = Connection::new(server);
        let first = server
            .read_command()
            .await
            .expect("read")
            .expect("a command");
        let (mut reader, mut writer) = server.into_split();
        let second = reader
            .read_command()
            .await
            .expect("read")
            .expect("a command");
        for req in [&first, &second] {
            let response = RemotingCommand::response_to(req, response_code::SUCCESS, None);
            writer.write_command(&response).await.expect("write");
        }
        for (opaque, serialize_type) in [(5, SerializeType::Json), (6, SerializeType::RocketMq)] {
            let response = client
                .read_command()
                .await
                .expect("read")
                .expect("a response");
            assert_eq!(
                (response.opaque, response.serialize_type),
                (opaque, serialize_type)
            );
            assert!(response.is_response());
        }
    }
}
