//! Starting and stopping the servers of each mode.

use crate::cli::{BrokerArgs, Cli, Flush, Mode, NamesrvArgs};
use anyhow::{Context, Result};
use mq_broker::broker::{Broker, BrokerConfig, parse_delay_levels, schedule};
use mq_broker::names::Namespace;
use mq_broker::namesrv::NameServer;
use mq_broker::net::RemotingServer;
use mq_broker::store::{FlushPolicy, MessageStore, StoreConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs the chosen mode until SIGTERM or Ctrl-C.
pub async fn run(cli: Cli) -> Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    let mut ready = serde_json::Map::new();
    let broker = match cli.mode {
        Mode::Namesrv(args) => {
            ready.insert(
                "namesrv".into(),
                start_namesrv(&args, stop.clone()).await?.to_string().into(),
            );
            None
        }
        Mode::Broker(args) => Some(start_broker(args, false, &mut ready, stop.clone()).await?),
        Mode::Standalone(mut args) => {
            let ns_args = NamesrvArgs {
                listen: args.namesrv_listen,
                broker_expiry_secs: 120,
                instance_id: args.broker.instance_id.clone(),
            };
            let ns_addr = start_namesrv(&ns_args, stop.clone()).await?;
            ready.insert("namesrv".into(), ns_addr.to_string().into());
            args.broker.namesrv_addr = reachable(ns_addr).to_string();
            Some(start_broker(args.broker, true, &mut ready, stop.clone()).await?)
        }
    };
    // One line on stdout says where everything listens (tests and scripts read it).
    println!("{}", serde_json::Value::Object(ready));
    wait_for_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    if let Some(broker) = broker {
        tokio::task::spawn_blocking(move || broker.shutdown())
            .await?
            .map_err(anyhow::Error::msg)
            .context("flushing the broker's state")?;
    }
    Ok(())
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

async fn start_namesrv(args: &NamesrvArgs, stop: watch::Receiver<bool>) -> Result<SocketAddr> {
    let server = RemotingServer::bind(args.listen)
        .await
        .with_context(|| format!("binding the name server to {}", args.listen))?;
    let addr = server.local_addr()?;
    let namesrv = Arc::new(NameServer::new(
        Namespace::new(args.instance_id.as_deref()),
        Duration::from_secs(args.broker_expiry_secs),
    ));
    tokio::spawn(namesrv.clone().run_expiry(Duration::from_secs(1)));
    tokio::spawn(server.serve(namesrv, until_stopped(stop)));
    tracing::info!(%addr, "name server listening");
    Ok(addr)
}

async fn start_broker(
    args: BrokerArgs,
    standalone: bool,
    ready: &mut serde_json::Map<String, serde_json::Value>,
    stop: watch::Receiver<bool>,
) -> Result<Arc<Broker>> {
    let server = RemotingServer::bind(args.listen)
        .await
        .with_context(|| format!("binding the broker to {}", args.listen))?;
    let addr = server.local_addr()?;
    let vip = vip_server(&args, addr).await?;
    let advertised = args.advertise_addr.unwrap_or_else(|| reachable(addr));
    let store_dir = args.store_dir.clone().unwrap_or_else(default_store_dir);
    let levels = parse_delay_levels(&args.delay_levels).map_err(anyhow::Error::msg)?;

    let mut store_cfg = StoreConfig::new(&store_dir);
    store_cfg.store_host = advertised;
    store_cfg.commitlog_segment_size = args.segment_size;
    store_cfg.tags_code = Some(schedule::tags_code_hook(levels.clone()));
    if args.flush == Flush::Sync {
        store_cfg.flush = FlushPolicy::Sync;
    }
    let store = tokio::task::spawn_blocking(move || MessageStore::open(store_cfg))
        .await?
        .with_context(|| format!("opening the store in {}", store_dir.display()))?;

    let mut cfg = BrokerConfig::new(args.store_dir.clone().unwrap_or_else(default_store_dir));
    cfg.broker_name = args.broker_name.clone();
    cfg.cluster = args.cluster.clone();
    cfg.advertised_addr = advertised.to_string();
    cfg.namespace = Namespace::new(args.instance_id.as_deref());
    cfg.auto_create_topics = standalone;
    cfg.auto_create_groups = standalone;
    cfg.delay_levels = levels;
    cfg.register_interval = Duration::from_secs(args.register_interval_secs.max(1));
    let broker = Arc::new(
        Broker::new(cfg, Arc::new(store))
            .context("loading the broker's topics, groups and offsets")?,
    );

    let namesrv_addrs: Vec<String> = args
        .namesrv_addr
        .split(';')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    tokio::spawn(
        broker
            .clone()
            .run_registration(move || namesrv_addrs.clone()),
    );
    tokio::spawn(broker.clone().run_schedule());
    tokio::spawn(broker.clone().run_maintenance());
    tokio::spawn(server.serve(broker.clone(), until_stopped(stop.clone())));
    if let Some(vip) = vip {
        ready.insert("vip".into(), vip.local_addr()?.to_string().into());
        tokio::spawn(vip.serve(broker.clone(), until_stopped(stop)));
    }
    tracing::info!(%addr, %advertised, "broker listening");
    ready.insert("broker".into(), addr.to_string().into());
    ready.insert("advertised".into(), advertised.to_string().into());
    Ok(broker)
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

fn default_store_dir() -> std::path::PathBuf {
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
