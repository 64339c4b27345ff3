//! Registration with the name servers: the broker's whole topic table, to every name
//! server, every `register_interval` and whenever it changes; signed with the instance's
//! admin key when the broker has one (name servers with that key refuse anything else,
//! whether or not ACL is on), else with the ACL file's first admin account if any.
//! A broker reachable from outside the cluster also sends its external address
//! (`externalBrokerAddr`, see [`crate::namesrv`]); a change of it registers at once.

use super::core::Broker;
use super::topics::registration_view;
use crate::namesrv::RegisterBrokerRequestHeader;
use crate::net::NoRequests;
use crate::net::{Channel, connect};
use crate::remoting::body::{self, RegisterBrokerBody};
use crate::remoting::{RemotingCommand, request_code, response_code};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long one registration may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest pause between checks of the table's version.
const CHANGE_CHECK: Duration = Duration::from_millis(500);

impl Broker {
    /// Whether at least one name server has accepted this broker.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    /// Registers with every name server now and then forever (spawn it). The name server
    /// list is read each round, so it can change at run time.
    pub async fn run_registration(
        self: Arc<Self>,
        namesrv_addrs: impl Fn() -> Vec<String> + Send + 'static,
    ) {
        let mut channels: HashMap<String, Channel> = HashMap::new();
        let mut last_version = None;
        let mut last_addrs = None;
        let mut last_external = None;
        let mut since_full = Duration::MAX;
        // After a round no name server accepted, the next comes this soon (doubling up
        // to the register interval), so a broker that started before its name servers
        // becomes routable within seconds, not a whole interval later.
        let mut retry = None::<Duration>;
        loop {
            let view = registration_view(&self.topics);
            // A changed name-server list (config file re-read) registers at once.
            let addrs = namesrv_addrs();
            // So is a changed external address (the operator pinned a node port).
            let external = self.cfg.external_addr.get();
            if last_version != Some(view.data_version)
                || since_full >= retry.unwrap_or(self.cfg.register_interval)
                || last_addrs.as_ref() != Some(&addrs)
                || last_external.as_ref() != Some(&external)
            {
                last_external = Some(external);
                let ok = self.register_all(&addrs, &mut channels).await;
                last_addrs = Some(addrs);
                self.registered.store(ok > 0, Ordering::Release);
                last_version = Some(view.data_version);
                since_full = Duration::ZERO;
                retry = (ok == 0 && !last_addrs.as_ref().is_some_and(Vec::is_empty)).then(|| {
                    retry
                        .map_or(CHANGE_CHECK, |r| r * 2)
                        .min(self.cfg.register_interval)
                });
            }
            // A topic change registers at once: clients look a new topic up right away.
            let started = std::time::Instant::now();
            tokio::select! {
                _ = self.topics.changed() => {}
                _ = tokio::time::sleep(CHANGE_CHECK) => {}
            }
            since_full = since_full.saturating_add(started.elapsed());
        }
    }

    /// Registers with each name server; returns how many accepted.
    async fn register_all(
        &self,
        addrs: &[String],
        channels: &mut HashMap<String, Channel>,
    ) -> usize {
        channels.retain(|addr, ch| addrs.contains(addr) && !ch.is_closed());
        let body = body::to_json(&RegisterBrokerBody {
            topic_config_serialize_wrapper: registration_view(&self.topics),
            filter_server_list: vec![],
        });
        let mut accepted = 0;
        for addr in addrs {
            match self.register_one(addr, channels, body.clone()).await {
                Ok(()) => accepted += 1,
                Err(e) => {
                    channels.remove(addr);
                    tracing::warn!(namesrv = %addr, error = %e, "registration failed");
                }
            }
        }
        accepted
    }

    async fn register_one(
        &self,
        addr: &str,
        channels: &mut HashMap<String, Channel>,
        body: bytes::Bytes,
    ) -> Result<(), String> {
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = connect(addr, REGISTER_TIMEOUT, Arc::new(NoRequests))
                    .await
                    .map_err(|e| e.to_string())?;
                channels.insert(addr.to_owned(), c.clone());
                c
            }
        };
        let external = self.cfg.external_addr.get();
        let mut req = RemotingCommand::new_request(request_code::REGISTER_BROKER).with_body(body);
        req.set_header(&RegisterBrokerRequestHeader {
            broker_name: self.cfg.broker_name.clone(),
            broker_addr: self.cfg.advertised_addr.clone(),
            cluster_name: self.cfg.cluster.clone(),
            ha_server_addr: None,
            broker_id: self.cfg.broker_id,
            compressed: Some(false),
            body_crc32: None,
            external_broker_addr: external,
        });
        // Signed with the admin key, else whenever the ACL file names an admin, so
        // registration keeps working while name servers switch ACL on before or after
        // this broker does, and before the ACL file's accounts arrive.
        if let Some(credentials) = self.cfg.acl.signer() {
            crate::acl::sign::sign(&mut req, &credentials);
        }
        let response = channel
            .request(req, REGISTER_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if response.code != response_code::SUCCESS {
            return Err(format!(
                "refused ({}): {}",
                response.code,
                response.remark.unwrap_or_default()
            ));
        }
        Ok(())
    }
}
