//! A userspace TCP proxy in the manner of kube-proxy's old userspace mode.
//!
//! Every listen address has its own accept task. Each accepted connection is
//! spliced to one backend, chosen round-robin, by its own connection task.
//! Connection tasks live in one `JoinSet` shared by the whole proxy rather than
//! by their listener, so that removing a listener or changing its backends
//! leaves established connections alone (as kube-proxy does), while dropping
//! the proxy still ends every one of them.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

/// The routes the proxy should serve: listen address -> backends.
pub type Routes = HashMap<SocketAddr, Vec<SocketAddr>>;

/// How long to wait for one backend to accept before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept, so that e.g. EMFILE does not spin the CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Pending-connection queue length of each listener.
const LISTEN_BACKLOG: u32 = 1024;

/// A listener's backends. The inner `Arc` lets a connection take a snapshot
/// for the price of a reference count, and lets `apply` swap the list without
/// touching the socket.
type Backends = Arc<RwLock<Arc<[SocketAddr]>>>;
/// Every connection task of a proxy, whichever listener accepted it.
type Connections = Arc<Mutex<JoinSet<()>>>;

/// One bound listen address.
struct Listener {
    backends: Backends,
    task: JoinHandle<()>,
}

/// A userspace TCP proxy; dropping it closes every listener (aborts their tasks).
pub struct Proxy {
    listeners: Mutex<HashMap<SocketAddr, Listener>>,
    connections: Connections,
    /// Serialises `apply`, which awaits between reading and updating
    /// `listeners`; two interleaved calls could otherwise bind one address twice.
    apply_lock: tokio::sync::Mutex<()>,
}

impl Default for Proxy {
    /// Same as [`Proxy::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    /// A proxy with no listeners. Must be called inside a Tokio runtime.
    pub fn new() -> Proxy {
        Proxy {
            listeners: Mutex::new(HashMap::new()),
            connections: Arc::new(Mutex::new(JoinSet::new())),
            apply_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Makes the listeners equal `routes`: binds new addresses, closes removed ones, swaps the
    /// backend list of existing ones in place (no re-bind). Returns the addresses that could
    /// not be bound with their errors; the rest are applied.
    pub async fn apply(&self, mut routes: Routes) -> Vec<(SocketAddr, io::Error)> {
        let _serial = self.apply_lock.lock().await;

        let removed: Vec<(SocketAddr, JoinHandle<()>)> = {
            let mut listeners = lock(&self.listeners);
            let gone: Vec<SocketAddr> = listeners
                .keys()
                .filter(|addr| !routes.contains_key(addr))
                .copied()
                .collect();
            for (addr, listener) in listeners.iter() {
                // Taking the entry out of `routes` leaves only new addresses there.
                if let Some(backends) = routes.remove(addr) {
                    *write(&listener.backends) = backends.into();
                }
            }
            gone.into_iter()
                .filter_map(|addr| listeners.remove(&addr).map(|l| (addr, l.task)))
                .inspect(|(_, task)| {
                    // Abort all before awaiting any: if this future is dropped
                    // midway, no removed listener is left running unowned.
                    task.abort();
                })
                .collect()
        };
        for (addr, task) in removed {
            // Awaiting the aborted task means its future, and with it the
            // listening socket, has been dropped: once `apply` returns, the
            // address refuses connections and can be bound again.
            if let Err(e) = task.await
                && e.is_panic()
            {
                warn!(%addr, "proxy listener task panicked");
            }
        }

        let mut errors = Vec::new();
        for (addr, backends) in routes {
            let listener = match bind(addr) {
                Ok(listener) => listener,
                Err(e) => {
                    warn!(%addr, error = %e, "proxy could not listen");
                    errors.push((addr, e));
                    continue;
                }
            };
            let backends: Backends = Arc::new(RwLock::new(backends.into()));
            let task = tokio::spawn(accept_loop(
                addr,
                listener,
                Arc::clone(&backends),
                Arc::clone(&self.connections),
            ));
            lock(&self.listeners).insert(addr, Listener { backends, task });
        }
        errors.sort_by_key(|(addr, _)| *addr);
        errors
    }

    /// Addresses currently listened on, sorted.
    pub fn listening(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = lock(&self.listeners).keys().copied().collect();
        addrs.sort();
        addrs
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let listeners = self
            .listeners
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for listener in listeners.values() {
            listener.task.abort();
        }
        // An accept task running on another worker right now may still add a
        // connection after this; that one is aborted when the `JoinSet` itself
        // drops, which happens once the last aborted accept task lets go of it.
        lock(&self.connections).abort_all();
    }
}

/// Locks `mutex`, ignoring poison: every critical section here leaves the
/// data consistent, so a panic elsewhere is no reason to stop proxying.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Snapshot of a listener's backends (poison ignored, as in [`lock`]).
fn read(backends: &Backends) -> Arc<[SocketAddr]> {
    Arc::clone(&backends.read().unwrap_or_else(PoisonError::into_inner))
}

/// Write access to a listener's backends (poison ignored, as in [`lock`]).
fn write(backends: &Backends) -> std::sync::RwLockWriteGuard<'_, Arc<[SocketAddr]>> {
    backends.write().unwrap_or_else(PoisonError::into_inner)
}

/// Binds a listener with SO_REUSEADDR, so that an address that was just
/// removed binds again at once although its old connections are still open.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections on `listener` until the task is aborted.
async fn accept_loop(
    addr: SocketAddr,
    listener: TcpListener,
    backends: Backends,
    connections: Connections,
) {
    // Only this task touches the counter, so it needs no atomics.
    let mut next: usize = 0;
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Errors such as EMFILE are usually transient; returning would
                // silently kill the listener for good.
                warn!(%addr, error = %e, "proxy accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let snapshot = read(&backends);
        if snapshot.is_empty() {
            // Dropping the stream closes it now, so the client sees EOF
            // instead of hanging on a service that has no endpoints.
            debug!(%addr, %peer, "proxy has no backends; closing connection");
            drop(client);
            continue;
        }
        let start = next % snapshot.len();
        next = next.wrapping_add(1);

        let mut tasks = lock(&connections);
        // A `JoinSet` keeps finished tasks until joined; reap them here so a
        // long-lived proxy does not accumulate one entry per past connection.
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                warn!(%addr, "proxy connection task panicked");
            }
        }
        tasks.spawn(serve(addr, client, peer, snapshot, start));
    }
}

/// Connects `client` to the first reachable backend, starting at `start`, and
/// copies bytes both ways until both directions are closed.
async fn serve(
    addr: SocketAddr,
    mut client: TcpStream,
    peer: SocketAddr,
    backends: Arc<[SocketAddr]>,
    start: usize,
) {
    for i in 0..backends.len() {
        let backend = backends[(start + i) % backends.len()];
        let mut server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend))
            .await
        {
            Ok(Ok(server)) => server,
            Ok(Err(e)) => {
                debug!(%addr, %backend, error = %e, "proxy backend connect failed; trying next");
                continue;
            }
            Err(_) => {
                debug!(%addr, %backend, "proxy backend connect timed out; trying next");
                continue;
            }
        };
        // Proxied protocols are often request/response; Nagle on either hop
        // would add delay that the client never asked for.
        for (side, stream) in [("client", &client), ("backend", &server)] {
            if let Err(e) = stream.set_nodelay(true) {
                debug!(%addr, side, error = %e, "proxy could not set TCP_NODELAY");
            }
        }
        // copy_bidirectional shuts down the write side of one stream when the
        // other reaches EOF, which carries a half-close through the proxy.
        match tokio::io::copy_bidirectional(&mut client, &mut server).await {
            Ok((up, down)) => {
                debug!(%addr, %peer, %backend, up, down, "proxy connection closed");
            }
            Err(e) => {
                debug!(%addr, %peer, %backend, error = %e, "proxy connection failed");
            }
        }
        return;
    }
    warn!(%addr, %peer, "proxy found no reachable backend; closing connection");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicU16, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::time::{Instant, sleep, timeout};

    type TestResult<T = ()> = Result<T, Box<dyn Error + Send + Sync>>;
    /// A proxied connection with its greeting already read.
    type Conn = BufReader<TcpStream>;

    /// Upper bound for every wait, so a broken proxy fails a test instead of hanging it.
    const WAIT: Duration = Duration::from_secs(5);

    static NEXT_IP: AtomicU16 = AtomicU16::new(0);

    /// A loopback address used by no other test in this process (tests run in
    /// parallel), with a port that was free a moment ago.
    fn fresh_addr() -> io::Result<SocketAddr> {
        let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
        let ip = Ipv4Addr::new(127, 77, (n / 250) as u8, (n % 250 + 1) as u8);
        // Binding port 0 and dropping the socket yields a free port without
        // leaving TIME_WAIT behind, since nothing ever connected to it.
        std::net::TcpListener::bind((ip, 0))?.local_addr()
    }

    fn routes(entries: &[(SocketAddr, &[SocketAddr])]) -> Routes {
        entries.iter().map(|(l, b)| (*l, b.to_vec())).collect()
    }

    /// A test backend: greets with its name, echoes, answers EOF with "eof".
    struct Backend {
        addr: SocketAddr,
        task: JoinHandle<()>,
    }

    impl Drop for Backend {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn backend(name: &'static str) -> TestResult<Backend> {
        let listener = TcpListener::bind(fresh_addr()?).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(echo(name, stream));
            }
        });
        Ok(Backend { addr, task })
    }

    async fn echo(name: &str, mut stream: TcpStream) -> io::Result<()> {
        stream.write_all(format!("{name}\n").as_bytes()).await?;
        let mut buf = [0; 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n]).await?;
        }
        // Written only after EOF: reaching the client proves the half-close
        // went through the proxy and the other direction stayed open.
        stream.write_all(b"eof\n").await?;
        stream.shutdown().await
    }

    /// Connects through the proxy and returns the answering backend's name.
    async fn greet(addr: SocketAddr) -> TestResult<(String, Conn)> {
        let mut conn = BufReader::new(timeout(WAIT, TcpStream::connect(addr)).await??);
        let name = read_line(&mut conn).await?;
        Ok((name, conn))
    }

    async fn read_line(conn: &mut Conn) -> TestResult<String> {
        let mut line = String::new();
        timeout(WAIT, conn.read_line(&mut line)).await??;
        Ok(line.trim_end().to_owned())
    }

    /// Sends one line and returns the echo.
    async fn roundtrip(conn: &mut Conn, msg: &str) -> TestResult<String> {
        timeout(
            WAIT,
            conn.get_mut().write_all(format!("{msg}\n").as_bytes()),
        )
        .await??;
        read_line(conn).await
    }

    /// Waits (bounded) until the peer closes `stream`; EOF and reset both count.
    async fn closed_by_peer(stream: &mut TcpStream) -> TestResult {
        let mut buf = [0; 64];
        match timeout(WAIT, stream.read(&mut buf)).await? {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Ok(n) => Err(format!("expected close, got {n} bytes").into()),
            Err(e) => Err(e.into()),
        }
    }

    fn is_refused<T>(result: &io::Result<T>) -> bool {
        matches!(result, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    }

    #[tokio::test]
    async fn round_robin_across_backends() -> TestResult {
        let (a, b) = (backend("a").await?, backend("b").await?);
        let listen = fresh_addr()?;
        let proxy = Proxy::new();
        assert!(
            proxy
                .apply(routes(&[(listen, &[a.addr, b.addr])]))
                .await
                .is_empty()
        );
        assert_eq!(proxy.listening(), vec![listen]);

        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(greet(listen).await?.0);
        }
        names.sort();
        assert_eq!(names, ["a", "a", "b", "b"]);
        Ok(())
    }

    #[tokio::test]
    async fn dead_backend_is_skipped() -> TestResult {
        let a = backend("a").await?;
        let dead = fresh_addr()?; // nothing listens there: connect is refused
        let listen = fresh_addr()?;
        let proxy = Proxy::new();
        assert!(
            proxy
                .apply(routes(&[(listen, &[dead, a.addr])]))
                .await
                .is_empty()
        );
        for _ in 0..4 {
            assert_eq!(greet(listen).await?.0, "a");
        }
        Ok(())
    }

    #[tokio::test]
    async fn only_dead_backends_close_the_client() -> TestResult {
        let listen = fresh_addr()?;
        let proxy = Proxy::new();
        assert!(
            proxy
                .apply(routes(&[(listen, &[fresh_addr()?])]))
                .await
                .is_empty()
        );
        let mut client = timeout(WAIT, TcpStream::connect(listen)).await??;
        closed_by_peer(&mut client).await
    }

    #[tokio::test]
    async fn no_backends_closes_at_once() -> TestResult {
        let listen = fresh_addr()?;
        let proxy = Proxy::new();
        assert!(proxy.apply(routes(&[(listen, &[])])).await.is_empty());
        let started = Instant::now();
        let mut client = timeout(WAIT, TcpStream::connect(listen)).await??;
        closed_by_peer(&mut client).await?;
        assert!(started.elapsed() < Duration::from_secs(1));
        Ok(())
    }

    #[tokio::test]
    async fn connect_timeout_falls_through_to_next_backend() -> TestResult {
        // A listener whose accept queue is full and never drained: Linux drops
        // further SYNs, so connecting to it hangs like an unreachable host.
        let blackhole = TcpSocket::new_v4()?;
        blackhole.bind(fresh_addr()?)?;
        let blackhole = blackhole.listen(1)?;
        let hole = blackhole.local_addr()?;
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) = timeout(Duration::from_millis(200), TcpStream::connect(hole)).await {
                fillers.push(s);
            }
        }
        assert!(
            timeout(Duration::from_millis(300), TcpStream::connect(hole))
                .await
                .is_err(),
            "the blackhole backend accepted a connection; cannot test the timeout"
        );

        let a = backend("a").await?;
        let listen = fresh_addr()?;
        let proxy = Proxy::new();
        assert!(
            proxy
                .apply(routes(&[(listen, &[hole, a.addr])]))
                .await
                .is_empty()
        );
        let started = Instant::now();
        // The first connection starts at the blackhole, so it waits out the
        // connect timeout before landing on `a`.
        assert_eq!(greet(listen).await?.0, "a");
        assert!(started.elapsed() >= CONNECT_TIMEOUT - Duration::from_millis(100));
        Ok(())
    }

    #[tokio::test]
    async fn backend_swap_keeps_the_listening_socket() -> TestResult {
        let (a, b) = (backend("a").await?, backend("b").await?);
        let listen = fresh_addr()?;
        let proxy = Proxy::new();
        assert!(proxy.apply(routes(&[(listen, &[a.addr])])).await.is_empty());
        let task_id = |p: &Proxy| lock(&p.listeners).get(&listen).map(|l| l.task.id());
        let before = task_id(&proxy);
        let (name, mut old) = greet(listen).await?;
        assert_eq!(name, "a");

        // Connect over and over while the backends flip: a re-bind would leave
        // a moment in which connecting is refused.
        let prober = tokio::spawn(async move {
            for _ in 0..100 {
                let (name, _) = greet(listen).await?;
                assert!(name == "a" || name == "b", "unexpected backend {name}");
                sleep(Duration::from_millis(2)).await;
            }
            TestResult::Ok(())
        });
        for i in 0..20 {
            let to = if i % 2 == 0 { b.addr } else { a.addr };
            assert!(proxy.apply(routes(&[(listen, &[to])])).await.is_empty());
            sleep(Duration::from_millis(5)).await;
        }
        assert!(proxy.apply(routes(&[(listen, &[b.addr])])).await.is_empty());
        timeout(WAIT * 2, prober).await???;

        assert_eq!(task_id(&proxy), before, "the listener was replaced");
        assert_eq!(proxy.listening(), vec![listen]);
        for _ in 0..3 {
            assert_eq!(greet(listen).await?.0, "b");
        }
        // The connection made before the swap still reaches the old backend.
        assert_eq!(roundtrip(&mut old, "still here").await?, "still here");
        Ok(())
    }

    #[tokio::test]
    async fn removed_route_closes_listener_but_not_connections_and_readds() -> TestResult {
        let a = backend("a").await?;
        let (listen, other) = (fresh_addr()?, fresh_addr()?);
        let proxy = Proxy::new();
        let both = routes(&[(listen, &[a.addr]), (other, &[a.addr])]);
        assert!(proxy.apply(both.clone()).await.is_empty());
        let mut expected = vec![listen, other];
        expected.sort();
        assert_eq!(proxy.listening(), expected);
        let (_, mut established) = greet(listen).await?;

        assert!(proxy.apply(routes(&[(other, &[a.addr])])).await.is_empty());
        assert_eq!(proxy.listening(), vec![other]);
        // `apply` waits for the listener to close, so this needs no retry.
        assert!(is_refused(
            &timeout(WAIT, TcpStream::connect(listen)).await?
        ));
        assert_eq!(roundtrip(&mut established, "ping").await?, "ping");
        assert_eq!(greet(other).await?.0, "a");

        // Re-adding binds again at once, although `established` still holds
        // a connection on that very address and port.
        assert!(proxy.apply(both).await.is_empty());
        assert_eq!(proxy.listening(), expected);
        assert_eq!(greet(listen).await?.0, "a");
        assert_eq!(roundtrip(&mut established, "pong").await?, "pong");
        Ok(())
    }

    #[tokio::test]
    async fn address_in_use_is_reported_and_the_rest_applied() -> TestResult {
        let a = backend("a").await?;
        let busy = fresh_addr()?;
        let occupant = std::net::TcpListener::bind(busy)?;
        let listen = fresh_addr()?;
        let proxy = Proxy::new();
        let wanted = routes(&[(busy, &[a.addr]), (listen, &[a.addr])]);

        let errors = proxy.apply(wanted.clone()).await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, busy);
        assert_eq!(errors[0].1.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(proxy.listening(), vec![listen]);
        assert_eq!(greet(listen).await?.0, "a");

        // Once the address is free, applying the same routes again binds it.
        drop(occupant);
        assert!(proxy.apply(wanted).await.is_empty());
        assert_eq!(greet(busy).await?.0, "a");
        Ok(())
    }

    #[tokio::test]
    async fn half_close_is_propagated() -> TestResult {
        let a = backend("a").await?;
        let listen = fresh_addr()?;
        let proxy = Proxy::new();
        assert!(proxy.apply(routes(&[(listen, &[a.addr])])).await.is_empty());
        let (_, mut conn) = greet(listen).await?;
        let stream = conn.get_mut();
        timeout(WAIT, stream.write_all(b"last words\n")).await??;
        timeout(WAIT, stream.shutdown()).await??;
        let mut rest = String::new();
        timeout(WAIT, conn.read_to_string(&mut rest)).await??;
        assert_eq!(rest, "last words\neof\n");
        Ok(())
    }

    #[tokio::test]
    async fn drop_closes_listeners_and_connections() -> TestResult {
        let a = backend("a").await?;
        let listen = fresh_addr()?;
        let proxy = Proxy::new();
        assert!(proxy.apply(routes(&[(listen, &[a.addr])])).await.is_empty());
        let (_, mut established) = greet(listen).await?;
        // A connection whose listener was already removed must end as well.
        let removed = fresh_addr()?;
        let both = routes(&[(listen, &[a.addr]), (removed, &[a.addr])]);
        assert!(proxy.apply(both).await.is_empty());
        let (_, mut orphan) = greet(removed).await?;
        assert!(proxy.apply(routes(&[(listen, &[a.addr])])).await.is_empty());

        drop(proxy);
        // Aborted tasks are dropped by the runtime shortly after, not inside
        // `drop`, hence the (bounded) polling.
        timeout(WAIT, async {
            while !is_refused(&TcpStream::connect(listen).await) {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await?;
        closed_by_peer(established.get_mut()).await?;
        closed_by_peer(orphan.get_mut()).await
    }
}
