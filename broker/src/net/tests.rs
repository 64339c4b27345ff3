//! The connection machinery over real TCP on loopback.

use super::*;
use crate::remoting::{Connection, RemotingCommand, request_code, response_code};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: i32 = 9001;
const PANIC: i32 = 9002;
const ASK_PEER: i32 = 9003;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Echoes bodies, panics on request, or asks the peer a question and relays its answer.
struct TestHandler;

impl RequestHandler for TestHandler {
    async fn handle(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        match request.code {
            ECHO => {
                let mut response =
                    RemotingCommand::response_to(&request, response_code::SUCCESS, None);
                response.body = request.body.clone();
                Some(response)
            }
            PANIC => panic!("handler bug"),
            ASK_PEER => {
                let question =
                    RemotingCommand::new_request(ECHO).with_body(&b"from the server"[..]);
                let answer = ctx.channel.request(question, TIMEOUT).await.ok()?;
                let mut response =
                    RemotingCommand::response_to(&request, response_code::SUCCESS, None);
                response.body = answer.body;
                Some(response)
            }
            _ => Some(not_supported(&request)),
        }
    }
}

async fn start() -> (
    std::net::SocketAddr,
    Arc<ServerStats>,
    tokio::sync::oneshot::Sender<()>,
) {
    let server = RemotingServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(Arc::new(TestHandler), async move {
        let _ = stopped.await;
    }));
    (addr, stats, stop)
}

async fn client(addr: std::net::SocketAddr) -> Channel {
    connect(&addr.to_string(), TIMEOUT, Arc::new(TestHandler))
        .await
        .unwrap()
}

#[tokio::test]
async fn unknown_codes_are_answered_and_the_connection_stays_usable() {
    let (addr, _, _stop) = start().await;
    let channel = client(addr).await;
    let response = channel
        .request(
            RemotingCommand::new_request(request_code::PULL_MESSAGE + 7777),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(response.code, response_code::REQUEST_CODE_NOT_SUPPORTED);
    assert!(
        response
            .remark
            .unwrap_or_default()
            .contains("not supported")
    );
    let echo = channel
        .request(
            RemotingCommand::new_request(ECHO).with_body(&b"still here"[..]),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(echo.body.as_deref(), Some(&b"still here"[..]));
}

#[tokio::test]
async fn a_panicking_handler_answers_system_error_and_others_keep_working() {
    let (addr, _, _stop) = start().await;
    let channel = client(addr).await;
    let other = client(addr).await;
    let response = channel
        .request(RemotingCommand::new_request(PANIC), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    for c in [&channel, &other] {
        let echo = c
            .request(RemotingCommand::new_request(ECHO), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(echo.code, response_code::SUCCESS);
    }
}

#[tokio::test]
async fn a_garbage_frame_closes_only_its_connection() {
    let (addr, stats, _stop) = start().await;
    let bystander = client(addr).await;
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A length prefix of 2 GiB: over any frame limit.
    raw.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(TIMEOUT, raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the server closes the connection that sent garbage");
    assert_eq!(stats.bad_frames.load(Ordering::Relaxed), 1);

    let echo = bystander
        .request(RemotingCommand::new_request(ECHO), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        echo.code,
        response_code::SUCCESS,
        "other connections are unaffected"
    );
    let mut fresh = Connection::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    fresh
        .write_command(&RemotingCommand::new_request(ECHO).with_opaque(7))
        .await
        .unwrap();
    let response = fresh.read_command().await.unwrap().unwrap();
    assert_eq!(
        (response.code, response.opaque),
        (response_code::SUCCESS, 7)
    );
}

#[tokio::test]
async fn the_server_can_call_the_client_back_on_the_same_connection() {
    let (addr, _, _stop) = start().await;
    let channel = client(addr).await;
    let response = channel
        .request(RemotingCommand::new_request(ASK_PEER), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response.code, response_code::SUCCESS);
    assert_eq!(response.body.as_deref(), Some(&b"from the server"[..]));
}

#[tokio::test]
async fn oneway_requests_get_no_answer() {
    let (addr, _, _stop) = start().await;
    let mut raw = Connection::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let mut oneway = RemotingCommand::new_request(ECHO).with_opaque(5);
    oneway.mark_oneway();
    raw.write_command(&oneway).await.unwrap();
    raw.write_command(&RemotingCommand::new_request(ECHO).with_opaque(6))
        .await
        .unwrap();
    let first = raw.read_command().await.unwrap().unwrap();
    assert_eq!(first.opaque, 6, "the oneway request got no response");
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails_with_the_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let err = connect(&addr, TIMEOUT, Arc::new(TestHandler))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ChannelError::Connect { .. }) && err.to_string().contains(&addr),
        "{err}"
    );
}

/// Waits until the server counts `open` connections.
async fn open_connections(stats: &ServerStats, open: u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while stats.connections_open.load(Ordering::Relaxed) != open {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still counts {} open connections, not {open}",
            stats.connections_open.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_shut_down_channel_and_a_dropped_admin_client_close_their_connections() {
    let (addr, stats, _stop) = start().await;
    let channel = client(addr).await;
    let echo = RemotingCommand::new_request(ECHO).with_body(&b"hi"[..]);
    channel.request(echo, TIMEOUT).await.unwrap();
    open_connections(&stats, 1).await;
    channel.shutdown();
    open_connections(&stats, 0).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !channel.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel is not closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = channel
        .request(RemotingCommand::new_request(ECHO), TIMEOUT)
        .await;
    assert!(err.is_err(), "{err:?}");

    // An admin client made per call (as the operator's reconciles do) leaves nothing open.
    for _ in 0..3 {
        let admin = crate::client::AdminClient::connect(&addr.to_string(), TIMEOUT)
            .await
            .unwrap();
        let _ = admin
            .request(RemotingCommand::new_request(ECHO))
            .await
            .unwrap();
        drop(admin);
    }
    open_connections(&stats, 0).await;
}
