//! Starting and stopping the servers of each mode.

use crate::cli::{BrokerArgs, Flush, Mode, NamesrvArgs, TlsArgs};
use crate::settings::{AclSettings, FileSettings, LiveSettings, TpsSettings};
use anyhow::{Context, Result};
use mq_broker::acl::{self, Acl};
use mq_broker::broker::{Broker, BrokerConfig, parse_delay_levels, schedule};
use mq_broker::conf;
use mq_broker::names::Namespace;
use mq_broker::namesrv::{ExternalView, NameServer};
use mq_broker::net::RemotingServer;
use mq_broker::net::tls::TlsIdentity;
use mq_broker::ops::{OpsServer, OpsState};
use mq_broker::store::{FlushPolicy, MessageStore, StoreConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs a server mode until SIGTERM or Ctrl-C, then stops cleanly: stop accepting,
/// answer what was already received (bounded by `--shutdown-timeout-secs`), persist
/// consumer offsets, flush and close the store; exit 0.
pub async fn run(mode: Mode) -> Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    let mut ready = serde_json::Map::new();
    let (name, http_listen) = match &mode {
        Mode::Namesrv(args) => ("namesrv", http_addr(args.http_listen, args.listen, 9879)),
        Mode::Broker(args) => ("broker", http_addr(args.http_listen, args.listen, 10912)),
        Mode::Standalone(args) => (
            "standalone",
            http_addr(args.broker.http_listen, args.broker.listen, 10912),
        ),
        other => anyhow::bail!("{other:?} is not a server mode"),
    };
    // The ops port comes first, so probes get "starting" (not a refused connection)
    // while a large store recovers. It serves until the process exits.
    let ops = Arc::new(OpsState::new(name, name != "namesrv"));
    let http = OpsServer::bind(http_listen)
        .await
        .with_context(|| format!("binding the ops HTTP port to {http_listen}"))?;
    ready.insert("http".into(), http.local_addr()?.to_string().into());
    tokio::spawn(http.serve(ops.clone(), std::future::pending()));
    let broker = match mode {
        Mode::Namesrv(args) => {
            let file = FileSettings::load(args.config.as_deref())?;
            let ns = Namespace::new(args.instance_id.as_deref());
            let acl = start_acl(file.acl(&args.acl, &ns)?, &ops);
            warn_if_open(&acl.acl, "name server");
            let tls = tls_identity(&args.tls)?;
            let (ns_addr, external) =
                start_namesrv(&args, acl.acl.clone(), tls, &ops, stop.clone()).await?;
            ready.insert("namesrv".into(), ns_addr.to_string().into());
            if let Some(external) = external {
                ready.insert("namesrvExternal".into(), external.to_string().into());
            }
            watch_config(file, None, acl, None, None);
            None
        }
        Mode::Broker(args) => {
            let file = FileSettings::load(args.config.as_deref())?;
            let ns = Namespace::new(args.instance_id.as_deref());
            let acl = start_acl(file.acl(&args.acl, &ns)?, &ops);
            warn_if_open(&acl.acl, "broker");
            let tls = tls_identity(&args.tls)?;
            let servers = Servers {
                tls,
                ops: &ops,
                stop: stop.clone(),
            };
            Some(start_broker(args, file, acl, None, &servers, &mut ready).await?)
        }
        Mode::Standalone(args) => {
            // One config file and one ACL for both servers, in force before either serves.
            let file = FileSettings::load(args.broker.config.as_deref())?;
            let ns = Namespace::new(args.broker.instance_id.as_deref());
            let acl = start_acl(file.acl(&args.broker.acl, &ns)?, &ops);
            let ns_args = NamesrvArgs {
                listen: args.namesrv_listen,
                external_listen: None,
                broker_expiry_secs: 120,
                instance_id: args.broker.instance_id.clone(),
                http_listen: args.broker.http_listen,
                config: None,
                acl: args.broker.acl.clone(),
                tls: args.broker.tls.clone(),
                connections: args.broker.connections.clone(),
            };
            let tls = tls_identity(&args.broker.tls)?;
            let (ns_addr, _) =
                start_namesrv(&ns_args, acl.acl.clone(), tls.clone(), &ops, stop.clone()).await?;
            ready.insert("namesrv".into(), ns_addr.to_string().into());
            let embedded = reachable(ns_addr);
            let servers = Servers {
                tls,
                ops: &ops,
                stop: stop.clone(),
            };
            let started =
                start_broker(args.broker, file, acl, Some(embedded), &servers, &mut ready);
            Some(started.await?)
        }
        other => anyhow::bail!("{other:?} is not a server mode"),
    };
    // One line on stdout says where everything listens (tests and scripts read it).
    println!("{}", serde_json::Value::Object(ready));
    wait_for_signal().await;
    tracing::info!("stopping");
    ops.begin_shutdown();
    // Stops the accept loops: no new connections.
    let _ = stop_tx.send(true);
    if let Some((broker, bound)) = broker {
        broker.begin_shutdown();
        if !broker.drain(bound).await {
            tracing::warn!(
                in_flight = broker.in_flight(),
                "requests still in flight after {bound:?}; closing the store anyway"
            );
        }
        tokio::task::spawn_blocking(move || broker.shutdown())
            .await?
            .map_err(anyhow::Error::msg)
            .context("flushing the broker's state")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The ops port: as given, else on the service's IP with `port` (or an ephemeral port
/// when the service itself asked for one, so parallel test processes never collide).
fn http_addr(given: Option<SocketAddr>, listen: SocketAddr, port: u16) -> SocketAddr {
    given.unwrap_or_else(|| {
        let port = if listen.port() == 0 { 0 } else { port };
        SocketAddr::new(listen.ip(), port)
    })
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn until_stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Warns once, at start, that a server without an admin key lets anyone make admin
/// requests and register brokers while ACL is off (standalone, for local use, does not).
fn warn_if_open(acl: &Acl, server: &str) {
    if !acl.has_admin_key() {
        tracing::warn!(
            "this {server} has no admin key (--admin-access-key/--admin-secret-key, MQ_ADMIN_ACCESS_KEY/MQ_ADMIN_SECRET_KEY): admin requests and broker registrations are open to anyone while ACL is off"
        );
    }
}

/// Starts re-reading the ACL file and shows the ACL in the metrics.
fn start_acl(mut settings: AclSettings, ops: &OpsState) -> AclSettings {
    ops.set_acl(settings.acl.clone());
    if let Some(watch) = settings.watch.take() {
        let acl = settings.acl.clone();
        tokio::spawn(acl::watch::run(watch, acl, acl::watch::POLL_INTERVAL));
    }
    settings
}

/// Re-reads the config file (when there is one) and applies its live keys.
fn watch_config(
    file: FileSettings,
    namesrvs: Option<conf::NamesrvList>,
    acl: AclSettings,
    tps: Option<TpsSettings>,
    external: Option<(String, conf::Live<Option<String>>)>,
) {
    let Some(watch) = file.watch else {
        return;
    };
    let live = LiveSettings {
        namesrvs,
        acl: acl.acl,
        acl_enable: acl.enable,
        tps,
        external,
    };
    tokio::spawn(conf::watch_file(
        watch,
        Duration::from_secs(1),
        move |path, props| live.apply(path, &props),
    ));
}

/// The TLS identity of `args` (none without a certificate), renewed as its files change.
fn tls_identity(args: &TlsArgs) -> Result<Option<Arc<TlsIdentity>>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let timeout = Duration::from_millis(args.tls_handshake_timeout_ms.max(1));
    let identity = Arc::new(TlsIdentity::load(cert, key, timeout).map_err(anyhow::Error::msg)?);
    tokio::spawn(identity.clone().run_reload());
    tracing::info!(cert = %cert.display(), "TLS on beside plaintext (permissive)");
    Ok(Some(identity))
}

/// What every remoting port of a process shares.
struct Servers<'a> {
    tls: Option<Arc<TlsIdentity>>,
    ops: &'a OpsState,
    stop: watch::Receiver<bool>,
}

async fn start_namesrv(
    args: &NamesrvArgs,
    acl: Acl,
    tls: Option<Arc<TlsIdentity>>,
    ops: &OpsState,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, Option<SocketAddr>)> {
    let limits = args.connections.limits();
    let server = RemotingServer::bind(args.listen)
        .await
        .with_context(|| format!("binding the name server to {}", args.listen))?
        .with_limits(limits.clone())
        .with_tls(tls.clone());
    let addr = server.local_addr()?;
    let namesrv = Arc::new(
        NameServer::new(
            Namespace::new(args.instance_id.as_deref()),
            Duration::from_secs(args.broker_expiry_secs),
        )
        .with_acl(acl),
    );
    tokio::spawn(namesrv.clone().run_expiry(Duration::from_secs(1)));
    ops.add_server("namesrv", server.stats());
    ops.set_namesrv(namesrv.clone());
    let mut external_addr = None;
    if let Some(listen) = args.external_listen {
        let external = RemotingServer::bind(listen)
            .await
            .with_context(|| format!("binding the name server's external port to {listen}"))?
            .with_limits(limits)
            .with_tls(tls);
        let bound = external.local_addr()?;
        tracing::info!(addr = %bound, "name server listening for clients outside the cluster");
        ops.add_server("namesrv-external", external.stats());
        let view = Arc::new(ExternalView(namesrv.clone()));
        tokio::spawn(external.serve(view, until_stopped(stop.clone())));
        external_addr = Some(bound);
    }
    tokio::spawn(server.serve(namesrv, until_stopped(stop)));
    tracing::info!(%addr, "name server listening");
    Ok((addr, external_addr))
}

/// Starts the broker; returns it and how long a clean stop may wait for requests.
/// `embedded_namesrv` is the standalone mode's own name server.
async fn start_broker(
    args: BrokerArgs,
    file: FileSettings,
    acl: AclSettings,
    embedded_namesrv: Option<SocketAddr>,
    servers: &Servers<'_>,
    ready: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(Arc<Broker>, Duration)> {
    let Servers { tls, ops, stop } = servers;
    let standalone = embedded_namesrv.is_some();
    let max_message = file.max_message_size(&args)?;
    let limits = args.connections.limits();
    let server = RemotingServer::bind(args.listen)
        .await
        .with_context(|| format!("binding the broker to {}", args.listen))?
        .with_max_frame(frame_limit(max_message))
        .with_limits(limits.clone())
        .with_tls(tls.clone());
    let addr = server.local_addr()?;
    let vip = vip_server(&args, addr).await?.map(|vip| {
        vip.with_max_frame(frame_limit(max_message))
            .with_limits(limits)
            .with_tls(tls.clone())
    });
    let advertised = args.advertise_addr.unwrap_or_else(|| reachable(addr));
    let store_dir = file.store_dir(&args);
    let levels = parse_delay_levels(&args.delay_levels).map_err(anyhow::Error::msg)?;

    let mut store_cfg = StoreConfig::new(&store_dir);
    store_cfg.store_host = advertised;
    store_cfg.commitlog_segment_size = args.segment_size;
    store_cfg.recover_truncate = args.recover_truncate;
    let broker_name = file.broker_name(&args);
    store_cfg.recover_truncate_at = file.recover_truncate_at(&broker_name)?;
    if let Some(at) = store_cfg.recover_truncate_at {
        tracing::warn!(
            offset = at,
            "recoverTruncateAt: recovery may cut a commit log damaged at exactly this offset"
        );
    }
    store_cfg.disk_reserve_bytes = args.disk_reserve_bytes;
    store_cfg.commitlog_preallocate = args.preallocate_bytes;
    store_cfg.max_body_bytes = max_message;
    store_cfg.retention = Duration::from_secs(args.retention_secs);
    store_cfg.clean_interval = store_cfg
        .clean_interval
        .min(store_cfg.retention.max(Duration::from_secs(1)));
    store_cfg.tags_code = Some(schedule::tags_code_hook(levels.clone()));
    if file.flush(&args)? == Flush::Sync {
        store_cfg.flush = FlushPolicy::Sync;
    }
    let store_path = store_dir.clone();
    let store = tokio::task::spawn_blocking(move || MessageStore::open(store_cfg))
        .await?
        .with_context(|| format!("opening the store in {}", store_path.display()))?;

    let mut cfg = BrokerConfig::new(store_dir);
    cfg.broker_name = broker_name;
    cfg.cluster = file.cluster(&args);
    cfg.max_send_wait = file.max_send_wait(&args)?;
    cfg.advertised_addr = advertised.to_string();
    cfg.external_addr = conf::Live::new(
        args.external_addr.clone().map(Some),
        Some(file.external_addr(&cfg.broker_name)),
        None,
    );
    cfg.namespace = Namespace::new(args.instance_id.as_deref());
    cfg.auto_create_topics = standalone;
    cfg.auto_create_groups = standalone;
    cfg.delay_levels = levels;
    cfg.timer_max_delay = Duration::from_secs(args.timer_max_delay_secs);
    cfg.register_interval = Duration::from_secs(args.register_interval_secs.max(1));
    cfg.client_call_timeout = Duration::from_millis(args.client_call_timeout_ms.max(1));
    cfg.reset_offset_guard = Duration::from_secs(args.reset_guard_secs);
    cfg.acl = acl.acl.clone();
    let tps = file.tps(&args)?;
    cfg.limits = tps.limits.clone();
    cfg.stats_bucket_ms = args.stats_bucket_ms.max(1);
    cfg.stats_max_series = args.stats_max_series;
    cfg.transactions = file.transactions(&args)?;
    let (cfg_name, external_addr) = (cfg.broker_name.clone(), cfg.external_addr.clone());
    let broker = Arc::new(
        Broker::new(cfg, Arc::new(store))
            .context("loading the broker's topics, groups and offsets")?,
    );

    let namesrvs = file.namesrv_list(&args, embedded_namesrv);
    tracing::info!(namesrv = %namesrvs.get().join(";"), "name servers");
    let external = Some((cfg_name.clone(), external_addr));
    watch_config(file, Some(namesrvs.clone()), acl, Some(tps), external);
    tokio::spawn(broker.clone().run_registration(move || namesrvs.get()));
    ops.set_broker(broker.clone());
    ops.add_server("broker", server.stats());
    tokio::spawn(broker.clone().run_schedule());
    tokio::spawn(broker.clone().run_transaction_check());
    tokio::spawn(broker.clone().run_timer());
    tokio::spawn(broker.clone().run_maintenance());
    tokio::spawn(server.serve(broker.clone(), until_stopped(stop.clone())));
    if let Some(vip) = vip {
        ready.insert("vip".into(), vip.local_addr()?.to_string().into());
        ops.add_server("vip", vip.stats());
        tokio::spawn(vip.serve(broker.clone(), until_stopped(stop.clone())));
    }
    tracing::info!(%addr, %advertised, "broker listening");
    ready.insert("broker".into(), addr.to_string().into());
    ready.insert("advertised".into(), advertised.to_string().into());
    Ok((broker, Duration::from_secs(args.shutdown_timeout_secs)))
}

/// The largest frame a broker port reads: the largest message and 1 MiB for its header
/// (properties are at most 32 KiB) or a request body that is not a message.
fn frame_limit(max_message: usize) -> usize {
    max_message + (1 << 20)
}

/// The VIP channel Java clients use by default: the same service on port − 2.
async fn vip_server(args: &BrokerArgs, addr: SocketAddr) -> Result<Option<RemotingServer>> {
    if args.no_vip || addr.port() < 1026 || args.listen.port() == 0 {
        return Ok(None);
    }
    let vip = SocketAddr::new(addr.ip(), addr.port() - 2);
    Ok(Some(RemotingServer::bind(vip).await.with_context(
        || format!("binding the VIP channel to {vip} (use --no-vip to skip it)"),
    )?))
}

pub(crate) fn default_store_dir() -> std::path::PathBuf {
    std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/tmp".into())
        .join("store")
}

/// An address others can reach for a listen address: all-interfaces becomes this host's
/// first non-loopback IPv4 (loopback when there is none), as RocketMQ does.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if !addr.ip().is_unspecified() {
        return addr;
    }
    SocketAddr::new(
        first_ipv4().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        addr.port(),
    )
}

fn first_ipv4() -> Option<IpAddr> {
    let mut ifaddrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free with freeifaddrs; we only read it in between.
    unsafe {
        if libc::getifaddrs(&mut ifaddrs) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = ifaddrs;
        while !cur.is_null() && found.is_none() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    found = Some(IpAddr::V4(ip));
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifaddrs);
        found
    }
}
