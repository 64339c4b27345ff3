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
/// Answers after 1 s (a held long poll).
const SLOW: i32 = 9004;
/// Answers with a 1 MiB body.
const BIG: i32 = 9005;
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
            SLOW => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some(RemotingCommand::response_to(
                    &request,
                    response_code::SUCCESS,
                    None,
                ))
            }
            BIG => {
                let mut response =
                    RemotingCommand::response_to(&request, response_code::SUCCESS, None);
                response.body = Some(vec![7u8; 1 << 20].into());
                Some(response)
            }
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
    start_with(ConnectionLimits::default()).await
}

async fn start_with(
    limits: ConnectionLimits,
) -> (
    std::net::SocketAddr,
    Arc<ServerStats>,
    tokio::sync::oneshot::Sender<()>,
) {
    let server = RemotingServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_limits(limits);
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

/// A raw connection to `addr` from the loopback address `from` (any of 127/8 is local).
async fn raw_from(from: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server closed `stream` within the timeout (EOF or reset on read).
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(TIMEOUT, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// An echo over a new connection is answered; the connection is closed after.
async fn echo_works(addr: std::net::SocketAddr) {
    let channel = client(addr).await;
    let echo = RemotingCommand::new_request(ECHO).with_body(&b"hi"[..]);
    let response = channel.request(echo, TIMEOUT).await.expect("answered");
    assert_eq!(response.body.as_deref(), Some(&b"hi"[..]));
    channel.shutdown();
}

#[tokio::test]
async fn connections_over_the_per_ip_and_total_limits_are_closed_at_accept() {
    let limits = ConnectionLimits {
        max_connections: 6,
        max_per_ip: 3,
        ..ConnectionLimits::default()
    };
    let (addr, stats, _stop) = start_with(limits).await;
    let mut flood = Vec::new();
    for _ in 0..5 {
        flood.push(raw_from([127, 0, 0, 2], addr).await);
    }
    // Three are kept; the other two are closed by the server.
    let mut refused = 0;
    for stream in flood.iter_mut().skip(3) {
        refused += usize::from(closed_by_server(stream).await);
    }
    assert_eq!(refused, 2);
    assert_eq!(stats.refused_per_ip.load(Ordering::Relaxed), 2);
    open_connections(&stats, 3).await;
    // Another address is still served.
    echo_works(addr).await;
    open_connections(&stats, 3).await;
    // Six open in all: a seventh from a third address is over the total.
    let _b = raw_from([127, 0, 0, 3], addr).await;
    let _c = raw_from([127, 0, 0, 3], addr).await;
    open_connections(&stats, 5).await;
    let _d = raw_from([127, 0, 0, 4], addr).await;
    let mut e = raw_from([127, 0, 0, 4], addr).await;
    assert!(closed_by_server(&mut e).await, "over the total limit");
    assert_eq!(stats.refused_total_limit.load(Ordering::Relaxed), 1);
    // Closing one gives its place back.
    drop(flood);
    open_connections(&stats, 3).await;
    echo_works(addr).await;
}

#[tokio::test]
async fn idle_connections_close_and_a_held_request_keeps_one_open() {
    let limits = ConnectionLimits {
        idle_timeout: Some(Duration::from_millis(300)),
        ..ConnectionLimits::default()
    };
    let (addr, stats, _stop) = start_with(limits).await;
    let mut idle = raw_from([127, 0, 0, 1], addr).await;
    assert!(
        closed_by_server(&mut idle).await,
        "an idle connection stays open"
    );
    assert_eq!(stats.idle_closed.load(Ordering::Relaxed), 1);
    // A request held for 1 s (more than the idle timeout) is answered.
    let channel = client(addr).await;
    let response = channel
        .request(RemotingCommand::new_request(SLOW), TIMEOUT)
        .await
        .expect("a held request keeps its connection");
    assert_eq!(response.code, response_code::SUCCESS);
}

#[tokio::test]
async fn a_peer_that_never_reads_holds_at_most_the_budget_then_is_let_go() {
    let budget = 2 << 20;
    let limits = ConnectionLimits {
        max_buffered_bytes: budget,
        write_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let (addr, stats, _stop) = start_with(limits).await;
    let stream = raw_from([127, 0, 0, 1], addr).await;
    let mut peer = Connection::new(stream);
    // 64 MiB of answers asked for, none read: far beyond the socket buffers.
    for opaque in 0..64 {
        peer.write_command(&RemotingCommand::new_request(BIG).with_opaque(opaque))
            .await
            .expect("requests go out");
    }
    let deadline = std::time::Instant::now() + TIMEOUT * 2;
    let mut peak = 0;
    while stats.write_failures.load(Ordering::Relaxed) == 0 {
        peak = peak.max(stats.buffered_bytes.load(Ordering::Relaxed));
        assert!(std::time::Instant::now() < deadline, "never let go");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(peak > 0, "nothing was ever queued");
    assert!(
        peak <= budget as u64,
        "queued {peak} bytes over a {budget} budget"
    );
    open_connections(&stats, 0).await;
    assert_eq!(stats.buffered_bytes.load(Ordering::Relaxed), 0);
}
