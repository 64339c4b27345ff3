//! A small cluster DNS responder for the test harness.
//!
//! It serves RFC 1035 queries over UDP and TCP on one address, answers A
//! queries for the cluster zone from a caller-supplied [`Zone`], and forwards
//! every other name, byte for byte, to upstream resolvers. The wire format is
//! hand-written so that the harness needs no DNS crate.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tracing::{debug, warn};

/// What the cluster zone knows about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name exists and has these IPv4 addresses.
    A(Vec<Ipv4Addr>),
    /// The name exists but has no records of the asked type.
    NoData,
    /// The name is inside the cluster zone and does not exist.
    NxDomain,
    /// The name is outside the cluster zone: forward it upstream.
    NotOurs,
}

/// The cluster zone, implemented by the caller (names arrive lower-cased, without the trailing dot).
pub trait Zone: Send + Sync + 'static {
    /// Looks up a lower-cased name without the trailing dot; called inline on the serving task, so it should be quick.
    fn lookup(&self, name: &str) -> Lookup;
}

const HEADER_LEN: usize = 12;
const MAX_NAME_LEN: usize = 255;
// Backward-only pointers already rule out loops; the cap also bounds the work
// a hostile message can cause by chaining many short backward hops.
const MAX_POINTER_JUMPS: usize = 64;

const TYPE_A: u16 = 1;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const ANSWER_TTL: u32 = 5;
/// An A record whose name is a 2-byte pointer: name, type, class, TTL, rdlength, address.
const A_RECORD_LEN: usize = 2 + 2 + 2 + 4 + 2 + 4;
/// The question name always sits right after the header, so answers point at offset 12.
const QUESTION_POINTER: [u8; 2] = [0xC0, HEADER_LEN as u8];

const FLAG_QR: u16 = 0x8000;
const MASK_OPCODE: u16 = 0x7800;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;

const RCODE_NOERROR: u16 = 0;
const RCODE_FORMERR: u16 = 1;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_NOTIMP: u16 = 4;

/// RFC 1035 limit for UDP replies when the client did not advertise EDNS.
const UDP_PLAIN_LIMIT: usize = 512;
/// Cap on an EDNS-advertised size: we answer without OPT, so stay at a size
/// every common stub accepts rather than trusting a huge advertised value.
const UDP_EDNS_CAP: usize = 4096;
const TCP_LIMIT: usize = u16::MAX as usize;
/// Largest datagram we read; anything longer is cut by the kernel and then fails to parse.
const UDP_RECV_BUF: usize = 65_535;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Queries are tiny; refusing longer TCP frames keeps a client from making us buffer 64 KiB per connection.
const MAX_TCP_QUERY: usize = 4096;
/// Bounds in-flight forwards so a burst of external names cannot exhaust sockets or memory.
const MAX_FORWARDS: usize = 256;
/// Bounds open TCP connections for the same reason.
const MAX_TCP_CONNECTIONS: usize = 256;
/// Pause after a socket error so a persistent failure (e.g. EMFILE) does not spin a core.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// A running DNS server; dropping it stops it (aborts its tasks).
#[derive(Debug)]
pub struct DnsServer {
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: UDP picks, TCP binds the same port) and starts serving.
    pub async fn start(
        addr: SocketAddr,
        zone: Arc<dyn Zone>,
        upstreams: Vec<SocketAddr>,
    ) -> io::Result<DnsServer> {
        let (udp, tcp) = bind_pair(addr).await?;
        let local_addr = udp.local_addr()?;
        let shared = Arc::new(Shared {
            zone,
            upstreams,
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            connections: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
        });
        let udp_task = tokio::spawn(serve_udp(Arc::new(udp), Arc::clone(&shared)));
        let tcp_task = tokio::spawn(serve_tcp(tcp, shared));
        Ok(DnsServer {
            local_addr,
            tasks: vec![udp_task, tcp_task],
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Each serving task owns a JoinSet of its per-query and per-connection
        // tasks, so aborting it also aborts everything it spawned.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `nameserver` lines of a resolv.conf text as port-53 socket addresses (IPv4 and IPv6), in order.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        // resolv.conf comments start with '#' or ';'; cutting at the first one
        // also tolerates trailing comments, which some generators write.
        let line = match line.find(['#', ';']) {
            Some(cut) => &line[..cut],
            None => line,
        };
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        match parse_nameserver(word) {
            Some(addr) => servers.push(addr),
            None => debug!(
                nameserver = word,
                "ignoring unusable resolv.conf nameserver"
            ),
        }
    }
    servers
}

/// Parses one nameserver address; a link-local IPv6 scope is accepted only as
/// a number, since turning an interface name into an index needs libc.
fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    if let Some((ip, scope)) = word.split_once('%') {
        let ip: Ipv6Addr = ip.parse().ok()?;
        let scope: u32 = scope.parse().ok()?;
        return Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope)));
    }
    let ip: IpAddr = word.parse().ok()?;
    Some(SocketAddr::new(ip, 53))
}

/// State shared by the UDP and TCP sides.
struct Shared {
    zone: Arc<dyn Zone>,
    upstreams: Vec<SocketAddr>,
    forwards: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

/// Binds UDP first and TCP on the port UDP got.
async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    // With port 0 the port the OS picks for UDP may already be taken for TCP;
    // retrying with a fresh UDP port beats failing the whole harness.
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("could not bind UDP and TCP on one port")))
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    // Forwarding tasks live here so that aborting this task aborts them too.
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; UDP_RECV_BUF];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => {
                    let query = &buf[..len];
                    match handle(query, shared.zone.as_ref(), Transport::Udp) {
                        Action::Drop => {}
                        Action::Reply(reply) => send_udp(&socket, &reply, peer).await,
                        Action::Forward { servfail } => {
                            match Arc::clone(&shared.forwards).try_acquire_owned() {
                                Ok(permit) => {
                                    let query = query.to_vec();
                                    let socket = Arc::clone(&socket);
                                    let shared = Arc::clone(&shared);
                                    tasks.spawn(async move {
                                        let _permit = permit;
                                        let reply = forward_udp(&query, &shared.upstreams)
                                            .await
                                            .unwrap_or(servfail);
                                        send_udp(&socket, &reply, peer).await;
                                    });
                                }
                                Err(_) => {
                                    // Waiting for a permit would stall every other query on
                                    // this socket; a fast SERVFAIL lets the client retry.
                                    debug!(%peer, "forwarding limit reached; answering SERVFAIL");
                                    send_udp(&socket, &servfail, peer).await;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "DNS UDP receive failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            },
            // Reap finished forwards so the set does not grow without bound.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(reply, peer).await {
        debug!(%peer, error = %e, "DNS UDP send failed");
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live here so that aborting this task closes them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match Arc::clone(&shared.connections).try_acquire_owned() {
                    Ok(permit) => {
                        let shared = Arc::clone(&shared);
                        connections.spawn(async move {
                            let _permit = permit;
                            serve_tcp_connection(stream, &shared).await;
                        });
                    }
                    // Dropping the stream closes it; the client falls back or retries.
                    Err(_) => debug!(%peer, "TCP connection limit reached; closing"),
                },
                Err(e) => {
                    warn!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves length-prefixed queries one after another until the client closes,
/// idles, or sends something unframeable. Pipelined queries are answered in order.
async fn serve_tcp_connection(mut stream: TcpStream, shared: &Shared) {
    loop {
        let mut len = [0u8; 2];
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 || len > MAX_TCP_QUERY {
            debug!(len, "closing TCP connection with unacceptable frame length");
            return;
        }
        let mut query = vec![0u8; len];
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut query)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let reply = match handle(&query, shared.zone.as_ref(), Transport::Tcp) {
            // Not a query we can answer at all; closing tells the client
            // immediately instead of leaving it waiting for a reply.
            Action::Drop => return,
            Action::Reply(reply) => reply,
            Action::Forward { servfail } => {
                match Arc::clone(&shared.forwards).try_acquire_owned() {
                    Ok(_permit) => forward_tcp(&query, &shared.upstreams)
                        .await
                        .unwrap_or(servfail),
                    Err(_) => servfail,
                }
            }
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            // Cannot happen: local replies are capped and upstream replies came framed.
            return;
        };
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        // A client that stops reading must not pin this task forever.
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// Tries each upstream in order over UDP and returns the first matching response.
async fn forward_udp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for &upstream in upstreams {
        match timeout(UPSTREAM_TIMEOUT, udp_exchange(query, upstream)).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(e)) => debug!(%upstream, error = %e, "UDP upstream failed"),
            Err(_) => debug!(%upstream, "UDP upstream timed out"),
        }
    }
    None
}

async fn udp_exchange(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    // A fresh socket per query gets a random source port from the OS, and
    // connecting it makes the kernel drop datagrams from anyone but the upstream.
    let socket = UdpSocket::bind(unspecified_for(upstream)).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; UDP_RECV_BUF];
    loop {
        let len = socket.recv(&mut buf).await?;
        // Stale or spoofed datagrams are skipped; the caller's timeout bounds the wait.
        if is_response_to(query, &buf[..len]) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// Tries each upstream in order over TCP and returns the first matching response.
async fn forward_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for &upstream in upstreams {
        match timeout(UPSTREAM_TIMEOUT, tcp_exchange(query, upstream)).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(e)) => debug!(%upstream, error = %e, "TCP upstream failed"),
            Err(_) => debug!(%upstream, "TCP upstream timed out"),
        }
    }
    None
}

async fn tcp_exchange(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let query_len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long for TCP"))?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(2 + query.len());
    framed.extend_from_slice(&query_len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    // The 16-bit length itself bounds this buffer to 64 KiB.
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    if is_response_to(query, &reply) {
        Ok(reply)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "upstream reply does not match the query",
        ))
    }
}

fn unspecified_for(upstream: SocketAddr) -> SocketAddr {
    match upstream {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    }
}

/// A reply belongs to a query when it is a response carrying the same ID.
fn is_response_to(query: &[u8], reply: &[u8]) -> bool {
    match (parse_header(query), parse_header(reply)) {
        (Some(q), Some(r)) => r.id == q.id && r.flags & FLAG_QR != 0,
        _ => false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// What to do with one incoming message.
enum Action {
    /// Not answerable (no readable header, or not a query): say nothing.
    Drop,
    /// Send this reply.
    Reply(Vec<u8>),
    /// Forward the query bytes upstream; send `servfail` if every upstream fails.
    Forward { servfail: Vec<u8> },
}

#[derive(Clone, Copy)]
struct Header {
    id: u16,
    flags: u16,
    qdcount: u16,
    ancount: u16,
    nscount: u16,
    arcount: u16,
}

struct Question {
    /// Labels as sent, keeping the client's case so the echoed question matches
    /// (resolvers using 0x20 case randomisation check this).
    labels: Vec<Vec<u8>>,
    qtype: u16,
    qclass: u16,
}

fn parse_header(msg: &[u8]) -> Option<Header> {
    let h: &[u8; HEADER_LEN] = msg.get(..HEADER_LEN)?.try_into().ok()?;
    let word = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    Some(Header {
        id: word(0),
        flags: word(2),
        qdcount: word(4),
        ancount: word(6),
        nscount: word(8),
        arcount: word(10),
    })
}

fn read_u16(msg: &[u8], pos: usize) -> Option<u16> {
    let bytes = msg.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Reads a possibly compressed name at `start`; returns its labels and the
/// offset just past the name where it first appears. `None` if malformed.
fn read_name(msg: &[u8], start: usize) -> Option<(Vec<Vec<u8>>, usize)> {
    let mut labels = Vec::new();
    let mut pos = start;
    let mut end = None;
    // Where the labels being read began; a pointer must land strictly before
    // it, so targets strictly decrease and no chain can loop.
    let mut segment_start = start;
    // Wire length counts each length octet plus the final root octet, per RFC 1035's 255 limit.
    let mut wire_len = 1;
    let mut jumps = 0;
    loop {
        let len_octet = *msg.get(pos)?;
        let len = usize::from(len_octet);
        match len_octet & 0xC0 {
            // Two top bits clear means a plain label, which also caps it at 63 bytes.
            0x00 => {
                if len == 0 {
                    return Some((labels, end.unwrap_or(pos + 1)));
                }
                wire_len += 1 + len;
                if wire_len > MAX_NAME_LEN {
                    return None;
                }
                labels.push(msg.get(pos + 1..pos + 1 + len)?.to_vec());
                pos += 1 + len;
            }
            0xC0 => {
                let low = usize::from(*msg.get(pos + 1)?);
                let target = ((len & 0x3F) << 8) | low;
                // Encoders only ever point back at earlier names, never into
                // the name being read; the jump cap is a second guard.
                jumps += 1;
                if target >= segment_start || jumps > MAX_POINTER_JUMPS {
                    return None;
                }
                end.get_or_insert(pos + 2);
                pos = target;
                segment_start = target;
            }
            // 0x40 (extended) and 0x80 (reserved) label types are not valid here.
            _ => return None,
        }
    }
}

/// Finds the UDP payload size advertised by an OPT record, if any.
/// Returns `None` on any parse trouble: the question is all we need to answer,
/// so damaged trailing sections only cost the client the larger size.
fn edns_udp_size(msg: &[u8], mut pos: usize, header: &Header) -> Option<u16> {
    let skipped = u32::from(header.ancount) + u32::from(header.nscount);
    for index in 0..skipped + u32::from(header.arcount) {
        let (labels, after_name) = read_name(msg, pos)?;
        let rtype = read_u16(msg, after_name)?;
        let class = read_u16(msg, after_name + 2)?;
        let rdlength = usize::from(read_u16(msg, after_name + 8)?);
        if index >= skipped && rtype == TYPE_OPT && labels.is_empty() {
            return Some(class);
        }
        pos = after_name + 10 + rdlength;
        if pos > msg.len() {
            return None;
        }
    }
    None
}

/// Turns wire labels into the lower-cased dotted name the zone expects.
/// Bytes that cannot appear in a plain hostname are escaped in master-file
/// style (`\.`, `\DDD`) so they can never alias a real cluster name.
fn lookup_name(labels: &[Vec<u8>]) -> String {
    let mut name = String::new();
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            name.push('.');
        }
        for &byte in label {
            match byte {
                b'.' | b'\\' => {
                    name.push('\\');
                    name.push(char::from(byte));
                }
                0x21..=0x7E => name.push(char::from(byte.to_ascii_lowercase())),
                _ => name.push_str(&format!("\\{byte:03}")),
            }
        }
    }
    name
}

/// Decides how to answer one message; pure, so the wire logic is testable without sockets.
fn handle(msg: &[u8], zone: &dyn Zone, transport: Transport) -> Action {
    let Some(header) = parse_header(msg) else {
        return Action::Drop;
    };
    // Answering responses could set two servers bouncing packets at each other.
    if header.flags & FLAG_QR != 0 {
        return Action::Drop;
    }
    if header.flags & MASK_OPCODE != 0 {
        return Action::Reply(build_reply(&header, None, RCODE_NOTIMP, false, &[], 0));
    }
    let formerr = || Action::Reply(build_reply(&header, None, RCODE_FORMERR, false, &[], 0));
    if header.qdcount != 1 {
        return formerr();
    }
    let Some((labels, after_name)) = read_name(msg, HEADER_LEN) else {
        return formerr();
    };
    let (Some(qtype), Some(qclass)) = (read_u16(msg, after_name), read_u16(msg, after_name + 2))
    else {
        return formerr();
    };
    let question = Question {
        labels,
        qtype,
        qclass,
    };
    let limit = match transport {
        Transport::Tcp => TCP_LIMIT,
        // We reply without OPT, but a client that advertised a bigger buffer
        // can take a bigger plain reply, which saves it a TCP retry.
        Transport::Udp => edns_udp_size(msg, after_name + 4, &header)
            .map_or(UDP_PLAIN_LIMIT, |size| {
                usize::from(size).clamp(UDP_PLAIN_LIMIT, UDP_EDNS_CAP)
            }),
    };
    let q = Some(&question);
    match zone.lookup(&lookup_name(&question.labels)) {
        Lookup::NotOurs => Action::Forward {
            servfail: build_reply(&header, q, RCODE_SERVFAIL, false, &[], limit),
        },
        Lookup::A(ips) if question.qtype == TYPE_A && question.qclass == CLASS_IN => {
            Action::Reply(build_reply(&header, q, RCODE_NOERROR, true, &ips, limit))
        }
        // The name exists but this type (or class) has nothing: NODATA.
        Lookup::A(_) | Lookup::NoData => {
            Action::Reply(build_reply(&header, q, RCODE_NOERROR, true, &[], limit))
        }
        Lookup::NxDomain => {
            Action::Reply(build_reply(&header, q, RCODE_NXDOMAIN, true, &[], limit))
        }
    }
}

/// Builds a reply echoing `question`; answers that would exceed `limit` are
/// dropped and TC is set so the client retries over TCP.
fn build_reply(
    query: &Header,
    question: Option<&Question>,
    rcode: u16,
    authoritative: bool,
    ips: &[Ipv4Addr],
    limit: usize,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(UDP_PLAIN_LIMIT);
    if let Some(q) = question {
        for label in &q.labels {
            // read_name guarantees labels are at most 63 bytes.
            body.push(label.len() as u8);
            body.extend_from_slice(label);
        }
        body.push(0);
        body.extend_from_slice(&q.qtype.to_be_bytes());
        body.extend_from_slice(&q.qclass.to_be_bytes());
    }
    // Only answers are ever cut: header-only error replies must not claim TC.
    let fits = ips.is_empty() || HEADER_LEN + body.len() + ips.len() * A_RECORD_LEN <= limit;
    let answers = if fits { ips } else { &[] };
    for ip in answers {
        body.extend_from_slice(&QUESTION_POINTER);
        body.extend_from_slice(&TYPE_A.to_be_bytes());
        body.extend_from_slice(&CLASS_IN.to_be_bytes());
        body.extend_from_slice(&ANSWER_TTL.to_be_bytes());
        body.extend_from_slice(&4u16.to_be_bytes());
        body.extend_from_slice(&ip.octets());
    }

    let mut flags = FLAG_QR | (query.flags & (MASK_OPCODE | FLAG_RD)) | FLAG_RA | rcode;
    if authoritative {
        flags |= FLAG_AA;
    }
    if !fits {
        flags |= FLAG_TC;
    }
    let mut reply = Vec::with_capacity(HEADER_LEN + body.len());
    reply.extend_from_slice(&query.id.to_be_bytes());
    reply.extend_from_slice(&flags.to_be_bytes());
    reply.extend_from_slice(&u16::from(question.is_some()).to_be_bytes());
    // `fits` bounds the count by limit / 16, far below u16::MAX.
    reply.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    reply.extend_from_slice(&0u16.to_be_bytes());
    reply.extend_from_slice(&0u16.to_be_bytes());
    reply.extend_from_slice(&body);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::future::Future;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(5);
    const TYPE_AAAA: u16 = 28;

    /// Bounds every await in the tests so a bug fails fast instead of hanging.
    async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
        timeout(WAIT, fut)
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    /// A map of known names; anything else under `suffix` is NXDOMAIN, the rest is not ours.
    struct TestZone {
        suffix: &'static str,
        names: HashMap<String, Lookup>,
    }

    impl Zone for TestZone {
        fn lookup(&self, name: &str) -> Lookup {
            if let Some(found) = self.names.get(name) {
                return found.clone();
            }
            if name == self.suffix || name.ends_with(&format!(".{}", self.suffix)) {
                Lookup::NxDomain
            } else {
                Lookup::NotOurs
            }
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, last)
    }

    fn cluster_zone() -> Arc<dyn Zone> {
        let many: Vec<Ipv4Addr> = (1..=40).map(ip).collect();
        let names = HashMap::from([
            (
                "web.default.svc.cluster.local".to_string(),
                Lookup::A(vec![ip(10), ip(11)]),
            ),
            ("big.default.svc.cluster.local".to_string(), Lookup::A(many)),
            (
                "empty.default.svc.cluster.local".to_string(),
                Lookup::NoData,
            ),
        ]);
        Arc::new(TestZone {
            suffix: "cluster.local",
            names,
        })
    }

    fn upstream_zone() -> Arc<dyn Zone> {
        let names = HashMap::from([("example.test".to_string(), Lookup::A(vec![ip(99)]))]);
        Arc::new(TestZone {
            suffix: "test",
            names,
        })
    }

    async fn start(zone: Arc<dyn Zone>, upstreams: Vec<SocketAddr>) -> DnsServer {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        within("start", DnsServer::start(addr, zone, upstreams))
            .await
            .expect("server starts")
    }

    fn encode_name(out: &mut Vec<u8>, name: &str) {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    }

    fn header(id: u16, flags: u16, qd: u16, ar: u16) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [id, flags, qd, 0, 0, ar] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut out = header(id, FLAG_RD, 1, 0);
        encode_name(&mut out, name);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out
    }

    fn build_edns_query(id: u16, name: &str, udp_size: u16) -> Vec<u8> {
        let mut out = build_query(id, name, TYPE_A);
        out[11] = 1; // ARCOUNT
        out.push(0); // root name
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&udp_size.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // TTL (ext. rcode, flags), rdlength
        out
    }

    #[derive(Debug)]
    struct Answer {
        pointer: [u8; 2],
        rtype: u16,
        ttl: u32,
        ip: Ipv4Addr,
    }

    #[derive(Debug)]
    struct Reply {
        id: u16,
        flags: u16,
        qdcount: u16,
        question: Option<String>,
        answers: Vec<Answer>,
    }

    impl Reply {
        fn rcode(&self) -> u16 {
            self.flags & 0x000F
        }
        fn has(&self, flag: u16) -> bool {
            self.flags & flag != 0
        }
        fn ips(&self) -> Vec<Ipv4Addr> {
            self.answers.iter().map(|a| a.ip).collect()
        }
    }

    fn parse_reply(msg: &[u8]) -> Reply {
        let h = parse_header(msg).expect("reply header");
        let mut pos = HEADER_LEN;
        let mut question = None;
        if h.qdcount == 1 {
            let (labels, after) = read_name(msg, pos).expect("question name");
            let text: Vec<String> = labels
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            question = Some(text.join("."));
            pos = after + 4;
        }
        let mut answers = Vec::new();
        for _ in 0..h.ancount {
            let pointer = [msg[pos], msg[pos + 1]];
            let (_, after) = read_name(msg, pos).expect("answer name");
            let rtype = read_u16(msg, after).expect("type");
            let ttl = u32::from_be_bytes(msg[after + 4..after + 8].try_into().expect("ttl"));
            let rdlength = usize::from(read_u16(msg, after + 8).expect("rdlength"));
            assert_eq!(rdlength, 4);
            let rdata: [u8; 4] = msg[after + 10..after + 14].try_into().expect("rdata");
            answers.push(Answer {
                pointer,
                rtype,
                ttl,
                ip: Ipv4Addr::from(rdata),
            });
            pos = after + 10 + rdlength;
        }
        assert_eq!(pos, msg.len(), "no trailing bytes");
        Reply {
            id: h.id,
            flags: h.flags,
            qdcount: h.qdcount,
            question,
            answers,
        }
    }

    async fn client() -> UdpSocket {
        within("bind client", UdpSocket::bind("127.0.0.1:0"))
            .await
            .expect("client socket")
    }

    async fn udp_ask(server: SocketAddr, query: &[u8]) -> Reply {
        let socket = client().await;
        within("send", socket.send_to(query, server))
            .await
            .expect("send");
        let mut buf = vec![0u8; UDP_RECV_BUF];
        let (len, _) = within("udp reply", socket.recv_from(&mut buf))
            .await
            .expect("recv");
        parse_reply(&buf[..len])
    }

    async fn tcp_send(stream: &mut TcpStream, query: &[u8]) {
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        within("tcp write", stream.write_all(&framed))
            .await
            .expect("write");
    }

    async fn tcp_recv(stream: &mut TcpStream) -> Reply {
        let mut len = [0u8; 2];
        within("tcp length", stream.read_exact(&mut len))
            .await
            .expect("length");
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        within("tcp body", stream.read_exact(&mut msg))
            .await
            .expect("body");
        parse_reply(&msg)
    }

    async fn tcp_connect(server: SocketAddr) -> TcpStream {
        within("tcp connect", TcpStream::connect(server))
            .await
            .expect("connect")
    }

    /// A port with nothing listening: bind, note the address, close.
    async fn closed_udp_port() -> SocketAddr {
        let socket = client().await;
        socket.local_addr().expect("local addr")
    }

    #[tokio::test]
    async fn a_query_gets_both_ips() {
        let server = start(cluster_zone(), vec![]).await;
        let reply = udp_ask(
            server.local_addr(),
            &build_query(0x1234, "web.default.svc.cluster.local", TYPE_A),
        )
        .await;
        assert_eq!(reply.id, 0x1234);
        assert_eq!(reply.rcode(), RCODE_NOERROR);
        assert!(reply.has(FLAG_QR) && reply.has(FLAG_AA) && reply.has(FLAG_RA));
        assert!(reply.has(FLAG_RD), "RD copied");
        assert!(!reply.has(FLAG_TC));
        assert_eq!(
            reply.question.as_deref(),
            Some("web.default.svc.cluster.local")
        );
        assert_eq!(reply.ips(), vec![ip(10), ip(11)]);
        for answer in &reply.answers {
            assert_eq!(answer.pointer, [0xC0, 0x0C]);
            assert_eq!(answer.rtype, TYPE_A);
            assert_eq!(answer.ttl, 5);
        }
    }

    #[tokio::test]
    async fn names_are_case_insensitive_and_case_is_echoed() {
        let server = start(cluster_zone(), vec![]).await;
        let name = "WeB.Default.SVC.cluster.LOCAL";
        let reply = udp_ask(server.local_addr(), &build_query(7, name, TYPE_A)).await;
        assert_eq!(reply.rcode(), RCODE_NOERROR);
        assert_eq!(reply.ips(), vec![ip(10), ip(11)]);
        assert_eq!(reply.question.as_deref(), Some(name));
    }

    #[tokio::test]
    async fn other_types_and_nodata_get_empty_noerror() {
        let server = start(cluster_zone(), vec![]).await;
        let addr = server.local_addr();
        let aaaa = udp_ask(
            addr,
            &build_query(8, "web.default.svc.cluster.local", TYPE_AAAA),
        )
        .await;
        assert_eq!(aaaa.rcode(), RCODE_NOERROR);
        assert!(aaaa.has(FLAG_AA));
        assert!(aaaa.answers.is_empty());
        let nodata = udp_ask(
            addr,
            &build_query(9, "empty.default.svc.cluster.local", TYPE_A),
        )
        .await;
        assert_eq!(nodata.rcode(), RCODE_NOERROR);
        assert!(nodata.answers.is_empty());
    }

    #[tokio::test]
    async fn unknown_cluster_name_is_nxdomain() {
        let server = start(cluster_zone(), vec![]).await;
        let reply = udp_ask(
            server.local_addr(),
            &build_query(10, "nope.default.svc.cluster.local", TYPE_A),
        )
        .await;
        assert_eq!(reply.rcode(), RCODE_NXDOMAIN);
        assert!(reply.has(FLAG_AA));
        assert!(reply.answers.is_empty());
    }

    #[tokio::test]
    async fn foreign_names_are_forwarded_over_udp_and_tcp() {
        let upstream = start(upstream_zone(), vec![]).await;
        // A dead first upstream checks that the next one is tried.
        let dead = closed_udp_port().await;
        let server = start(cluster_zone(), vec![dead, upstream.local_addr()]).await;
        let query = build_query(11, "Example.Test", TYPE_A);

        let reply = udp_ask(server.local_addr(), &query).await;
        assert_eq!(reply.id, 11);
        assert_eq!(reply.rcode(), RCODE_NOERROR);
        assert_eq!(reply.ips(), vec![ip(99)]);

        let mut stream = tcp_connect(server.local_addr()).await;
        tcp_send(&mut stream, &query).await;
        let reply = tcp_recv(&mut stream).await;
        assert_eq!(reply.ips(), vec![ip(99)]);
    }

    #[tokio::test]
    async fn dead_upstreams_give_servfail() {
        let dead = closed_udp_port().await;
        // Bound but never read: exercises the 2 s timeout rather than a quick refusal.
        let silent = client().await;
        let server = start(
            cluster_zone(),
            vec![dead, silent.local_addr().expect("addr")],
        )
        .await;
        let started = Instant::now();
        let reply = udp_ask(server.local_addr(), &build_query(12, "example.org", TYPE_A)).await;
        let elapsed = started.elapsed();
        assert_eq!(reply.id, 12);
        assert_eq!(reply.rcode(), RCODE_SERVFAIL);
        assert_eq!(reply.question.as_deref(), Some("example.org"));
        assert!(
            elapsed >= Duration::from_millis(1500) && elapsed <= Duration::from_secs(4),
            "took {elapsed:?}"
        );
        // A cluster name is still answered at once while nothing upstream works.
        let local = udp_ask(
            server.local_addr(),
            &build_query(13, "web.default.svc.cluster.local", TYPE_A),
        )
        .await;
        assert_eq!(local.ips().len(), 2);
    }

    #[tokio::test]
    async fn forwarding_does_not_block_local_answers() {
        let silent = client().await;
        let server = start(cluster_zone(), vec![silent.local_addr().expect("addr")]).await;
        let slow = client().await;
        within(
            "send",
            slow.send_to(&build_query(1, "example.org", TYPE_A), server.local_addr()),
        )
        .await
        .expect("send");
        let started = Instant::now();
        let reply = udp_ask(
            server.local_addr(),
            &build_query(2, "web.default.svc.cluster.local", TYPE_A),
        )
        .await;
        assert_eq!(reply.ips().len(), 2);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn tcp_serves_several_queries_per_connection() {
        let server = start(cluster_zone(), vec![]).await;
        let mut stream = tcp_connect(server.local_addr()).await;
        // Both queries are written before reading: pipelined, answered in order.
        tcp_send(
            &mut stream,
            &build_query(21, "web.default.svc.cluster.local", TYPE_A),
        )
        .await;
        tcp_send(
            &mut stream,
            &build_query(22, "nope.default.svc.cluster.local", TYPE_A),
        )
        .await;
        let first = tcp_recv(&mut stream).await;
        let second = tcp_recv(&mut stream).await;
        assert_eq!((first.id, first.ips()), (21, vec![ip(10), ip(11)]));
        assert_eq!((second.id, second.rcode()), (22, RCODE_NXDOMAIN));
    }

    #[tokio::test]
    async fn large_udp_answers_truncate_unless_edns_or_tcp() {
        let server = start(cluster_zone(), vec![]).await;
        let addr = server.local_addr();
        let name = "big.default.svc.cluster.local";

        let plain = udp_ask(addr, &build_query(31, name, TYPE_A)).await;
        assert!(plain.has(FLAG_TC));
        assert!(plain.answers.is_empty());
        assert_eq!(plain.qdcount, 1);

        let edns = udp_ask(addr, &build_edns_query(32, name, 4096)).await;
        assert!(!edns.has(FLAG_TC));
        assert_eq!(edns.answers.len(), 40);

        let mut stream = tcp_connect(addr).await;
        tcp_send(&mut stream, &build_query(33, name, TYPE_A)).await;
        let tcp = tcp_recv(&mut stream).await;
        assert!(!tcp.has(FLAG_TC));
        assert_eq!(tcp.answers.len(), 40);
    }

    #[tokio::test]
    async fn garbage_does_not_stop_the_server() {
        let server = start(cluster_zone(), vec![]).await;
        let addr = server.local_addr();
        let junk = client().await;

        // Deterministic pseudo-random packets (xorshift) of assorted lengths.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in [1usize, 11, 12, 13, 17, 40, 300, 512, 1500] {
            let packet: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            within("send junk", junk.send_to(&packet, addr))
                .await
                .expect("send");
        }
        within("send short", junk.send_to(&[0x12, 0x34, 0, 0, 0], addr))
            .await
            .expect("send");

        // A question name that points at itself: readable header, so FORMERR.
        let mut looped = header(0x4242, 0, 1, 0);
        looped.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        let reply = udp_ask(addr, &looped).await;
        assert_eq!((reply.id, reply.rcode()), (0x4242, RCODE_FORMERR));
        assert!(reply.has(FLAG_QR) && !reply.has(FLAG_TC) && !reply.has(FLAG_AA));
        assert_eq!(reply.qdcount, 0);

        let mut stream = tcp_connect(addr).await;
        tcp_send(&mut stream, &looped).await;
        assert_eq!(tcp_recv(&mut stream).await.rcode(), RCODE_FORMERR);
        // Still usable after the bad query.
        tcp_send(
            &mut stream,
            &build_query(43, "web.default.svc.cluster.local", TYPE_A),
        )
        .await;
        assert_eq!(tcp_recv(&mut stream).await.ips().len(), 2);

        let reply = udp_ask(
            addr,
            &build_query(44, "web.default.svc.cluster.local", TYPE_A),
        )
        .await;
        assert_eq!((reply.id, reply.ips().len()), (44, 2));
    }

    #[tokio::test]
    async fn dropping_the_server_stops_it() {
        let server = start(cluster_zone(), vec![]).await;
        let addr = server.local_addr();
        drop(server);
        // Let the runtime run the aborts, which close the listener.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let connected = within("connect after drop", TcpStream::connect(addr)).await;
        assert!(connected.is_err());
    }

    fn action_rcode(msg: &[u8]) -> Option<u16> {
        match handle(msg, cluster_zone().as_ref(), Transport::Udp) {
            Action::Reply(reply) => Some(parse_reply(&reply).rcode()),
            Action::Forward { .. } => Some(u16::MAX),
            Action::Drop => None,
        }
    }

    #[test]
    fn malformed_messages_are_rejected_without_panicking() {
        // Unreadable header or a response: dropped.
        assert_eq!(action_rcode(&[1, 2, 3]), None);
        let mut response = build_query(1, "a.cluster.local", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(action_rcode(&response), None);

        let with_name = |name_bytes: &[u8]| {
            let mut msg = header(1, 0, 1, 0);
            msg.extend_from_slice(name_bytes);
            msg.extend_from_slice(&[0, 1, 0, 1]);
            msg
        };
        // Forward pointer, self pointer, reserved label types, truncated label.
        for bad in [
            &[0xC0, 0x20][..],
            &[0xC0, 0x0C],
            &[0x40, 0],
            &[0x80, 0],
            &[5, b'a', b'b'],
        ] {
            assert_eq!(
                action_rcode(&with_name(bad)),
                Some(RCODE_FORMERR),
                "{bad:?}"
            );
        }
        // Four 63-byte labels make a 257-byte name.
        let mut long = Vec::new();
        for _ in 0..4 {
            long.push(63);
            long.extend_from_slice(&[b'x'; 63]);
        }
        long.push(0);
        assert_eq!(action_rcode(&with_name(&long)), Some(RCODE_FORMERR));
        // Missing QTYPE/QCLASS.
        let mut short = header(1, 0, 1, 0);
        encode_name(&mut short, "a.cluster.local");
        assert_eq!(action_rcode(&short), Some(RCODE_FORMERR));
        // QDCOUNT 0 and 2.
        assert_eq!(action_rcode(&header(1, 0, 0, 0)), Some(RCODE_FORMERR));
        let mut two = build_query(1, "a.cluster.local", TYPE_A);
        two[5] = 2;
        assert_eq!(action_rcode(&two), Some(RCODE_FORMERR));
        // STATUS opcode.
        assert_eq!(action_rcode(&header(1, 2 << 11, 1, 0)), Some(RCODE_NOTIMP));
        // A damaged additional section only loses EDNS; the query is still answered.
        let mut damaged = build_query(1, "web.default.svc.cluster.local", TYPE_A);
        damaged[11] = 3;
        assert_eq!(action_rcode(&damaged), Some(RCODE_NOERROR));
    }

    #[test]
    fn compressed_question_names_are_followed() {
        // A pointer back into the name being read would loop: rejected.
        let mut msg = header(5, 0, 1, 0);
        msg.extend_from_slice(&[3, b'w', b'e', b'b', 0xC0, 0x0C]);
        assert_eq!(read_name(&msg, HEADER_LEN), None);
        // "web" + pointer to an earlier "cluster.local" is followed, and the
        // name ends (for the caller) right after the pointer.
        let mut prefix = Vec::new();
        encode_name(&mut prefix, "cluster.local");
        let (labels, end) = {
            let mut buf = prefix.clone();
            buf.extend_from_slice(&[3, b'w', b'e', b'b', 0xC0, 0x00]);
            read_name(&buf, prefix.len()).expect("name")
        };
        assert_eq!(lookup_name(&labels), "web.cluster.local");
        assert_eq!(end, prefix.len() + 6);
    }

    #[test]
    fn odd_bytes_in_labels_are_escaped() {
        let labels = vec![b"A.b".to_vec(), vec![b'c', 0, b'\\', b' ']];
        assert_eq!(lookup_name(&labels), "a\\.b.c\\000\\\\\\032");
    }

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "\
# generated by the node
; old-style comment
search default.svc.cluster.local svc.cluster.local
nameserver 192.0.2.53
options ndots:5 timeout:1
nameserver\t2001:db8::1   # trailing comment
  nameserver 127.0.0.53
#nameserver 192.0.2.99
nameserver fe80::1%2
nameserver fe80::2%eth0
nameserver not-an-address
nameserver
nameservers 192.0.2.98
";
        let expected: Vec<SocketAddr> = vec![
            "192.0.2.53:53".parse().expect("v4"),
            "[2001:db8::1]:53".parse().expect("v6"),
            "127.0.0.53:53".parse().expect("v4"),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().expect("v6"), 53, 0, 2)),
        ];
        assert_eq!(parse_resolv_conf(text), expected);
        assert!(parse_resolv_conf("").is_empty());
    }
}
