//! A small async admin client for brokers and name servers: what the operator, the
//! console and `mq-broker admin` use.
//!
//! One [`AdminClient`] talks to one server, broker or name server; the method says which
//! kind it must be (broker methods first, name-server methods last). The connection is
//! opened by [`AdminClient::connect`] and reopened on the next call after it closes. Names
//! go as given: the server canonicalises them into its instance namespace and answers with
//! canonical names. Against servers with ACL on, give the client an admin account's keys
//! ([`AdminClient::with_credentials`]): it then signs every request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mq_broker::client::AdminError> {
//! use mq_broker::client::AdminClient;
//! use std::time::Duration;
//! let namesrv = AdminClient::connect("127.0.0.1:9876", Duration::from_secs(3)).await?;
//! for broker in namesrv.cluster_info().await?.broker_addr_table.values() {
//!     if let Some(addr) = broker.broker_addrs.get(&0) {
//!         let broker = AdminClient::connect(addr, Duration::from_secs(3)).await?;
//!         println!("{} topics on {addr}", broker.topics().await?.len());
//!     }
//! }
//! # Ok(()) }
//! ```

mod consume;
mod error;
mod messages;
mod query;

pub use crate::acl::Credentials;
pub use consume::{DlqMessageRef, TrackedMessage};
pub use error::AdminError;
pub use messages::{Pulled, Sent, pull_request};
pub use query::{BrowsePage, QueriedMessage};

use crate::broker::admin::{
    CreateTopicRequestHeader, DeleteSubscriptionGroupRequestHeader, GetConsumeStatsRequestHeader,
    GetConsumerConnectionListRequestHeader, GetProducerConnectionListRequestHeader,
    SubscriptionGroupWrapper,
};
use crate::broker::groups::SubscriptionGroupConfig;
use crate::names::{self, DEFAULT_TOPIC};
use crate::namesrv::{GetRouteInfoRequestHeader, TopicRequestHeader};
use crate::net::NoRequests;
use crate::net::{Channel, connect};
use crate::remoting::admin::{
    ConsumeStats, ConsumerConnection, KvTable, ProducerConnection, TopicStatsTable,
};
use crate::remoting::body::{
    ClusterInfo, TopicConfig, TopicConfigSerializeWrapper, TopicRouteData,
};
use crate::remoting::{CommandHeader, RemotingCommand, fastjson, request_code, response_code};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A connection to one broker or name server for admin calls.
pub struct AdminClient {
    addr: String,
    timeout: Duration,
    channel: tokio::sync::Mutex<Channel>,
    credentials: Option<Credentials>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("addr", &self.addr)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl Drop for AdminClient {
    /// Closes the connection: it would otherwise stay open (on both ends) until the
    /// server closed it, one per client ever made.
    fn drop(&mut self) {
        self.channel.get_mut().shutdown();
    }
}

impl AdminClient {
    /// Connects to `addr` (`host:port`); `timeout` bounds connecting and each call.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, AdminError> {
        Ok(Self {
            channel: tokio::sync::Mutex::new(open(addr, timeout).await?),
            addr: addr.to_owned(),
            timeout,
            credentials: None,
        })
    }

    /// Signs every request as `credentials`' account (servers with ACL on need an admin).
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends a request (signed when the client has credentials) and returns the response
    /// whatever its code.
    pub async fn request(&self, mut req: RemotingCommand) -> Result<RemotingCommand, AdminError> {
        if let Some(credentials) = &self.credentials {
            crate::acl::sign::sign(&mut req, credentials);
        }
        let channel = {
            let mut channel = self.channel.lock().await;
            if channel.is_closed() {
                *channel = open(&self.addr, self.timeout).await?;
            }
            channel.clone()
        };
        channel
            .request(req, self.timeout)
            .await
            .map_err(|source| AdminError::Connection {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Sends a request; anything but SUCCESS is an error.
    async fn call(&self, req: RemotingCommand) -> Result<RemotingCommand, AdminError> {
        let code = req.code;
        let response = self.request(req).await?;
        if response.code != response_code::SUCCESS {
            return Err(AdminError::refused(
                &self.addr,
                code,
                response.code,
                response.remark,
            ));
        }
        Ok(response)
    }

    /// Sends a request and reads the success response's body.
    async fn fetch<T: DeserializeOwned>(&self, req: RemotingCommand) -> Result<T, AdminError> {
        let code = req.code;
        let response = self.call(req).await?;
        fastjson::from_slice(response.body.as_deref().unwrap_or(b"{}")).map_err(|e| {
            AdminError::BadBody {
                addr: self.addr.clone(),
                request: request_code::name(code).unwrap_or("request"),
                reason: e.to_string(),
            }
        })
    }

    /// Broker: creates a topic, or updates it to `config` (idempotent).
    pub async fn create_topic(&self, config: &TopicConfig) -> Result<(), AdminError> {
        let header = CreateTopicRequestHeader {
            topic: config.topic_name.clone(),
            default_topic: Some(DEFAULT_TOPIC.to_owned()),
            read_queue_nums: config.read_queue_nums,
            write_queue_nums: config.write_queue_nums,
            perm: Some(config.perm),
            topic_filter_type: Some(config.topic_filter_type.as_str().to_owned()),
            topic_sys_flag: Some(config.topic_sys_flag),
            order: Some(config.order),
        };
        self.call(with_header(request_code::UPDATE_AND_CREATE_TOPIC, &header))
            .await
            .map(drop)
    }

    /// Broker: deletes a topic and the offsets on it; absent topics are no error.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), AdminError> {
        self.call(topic_request(request_code::DELETE_TOPIC_IN_BROKER, topic))
            .await
            .map(drop)
    }

    /// Broker: every topic config, sorted by name.
    pub async fn topics(&self) -> Result<Vec<TopicConfig>, AdminError> {
        let wrapper: TopicConfigSerializeWrapper = self
            .fetch(RemotingCommand::new_request(
                request_code::GET_ALL_TOPIC_CONFIG,
            ))
            .await?;
        Ok(wrapper.topic_config_table.into_values().collect())
    }

    /// Broker: creates a subscription group (and its retry topic), or updates it.
    pub async fn create_group(&self, config: &SubscriptionGroupConfig) -> Result<(), AdminError> {
        let req = RemotingCommand::new_request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(crate::remoting::body::to_json(config));
        self.call(req).await.map(drop)
    }

    /// Broker: deletes a group, its offsets and, as mqadmin does, its `%RETRY%` and
    /// `%DLQ%` topics; absent ones are no error.
    pub async fn delete_group(&self, group: &str) -> Result<(), AdminError> {
        let header = DeleteSubscriptionGroupRequestHeader {
            group_name: group.to_owned(),
            clean_offset: Some(true),
        };
        self.call(with_header(request_code::DELETE_SUBSCRIPTIONGROUP, &header))
            .await?;
        self.delete_topic(&names::retry_topic(group)).await?;
        self.delete_topic(&names::dlq_topic(group)).await
    }

    /// Broker: every subscription group config, sorted by name.
    pub async fn groups(&self) -> Result<Vec<SubscriptionGroupConfig>, AdminError> {
        let wrapper: SubscriptionGroupWrapper = self
            .fetch(RemotingCommand::new_request(
                request_code::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
            ))
            .await?;
        Ok(wrapper.subscription_group_table.into_values().collect())
    }

    /// Broker: a group's progress per queue, on one topic or all it consumes.
    pub async fn consume_stats(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<ConsumeStats, AdminError> {
        let header = GetConsumeStatsRequestHeader {
            consumer_group: group.to_owned(),
            topic: topic.map(str::to_owned),
        };
        self.fetch(with_header(request_code::GET_CONSUME_STATS, &header))
            .await
    }

    /// Broker: min/max offsets per queue of a topic.
    pub async fn topic_stats(&self, topic: &str) -> Result<TopicStatsTable, AdminError> {
        self.fetch(topic_request(request_code::GET_TOPIC_STATS_INFO, topic))
            .await
    }

    /// Broker: a consumer group's online clients and subscriptions (refused with
    /// `CONSUMER_NOT_ONLINE` when none).
    pub async fn consumer_connections(
        &self,
        group: &str,
    ) -> Result<ConsumerConnection, AdminError> {
        let header = GetConsumerConnectionListRequestHeader {
            consumer_group: group.to_owned(),
        };
        self.fetch(with_header(
            request_code::GET_CONSUMER_CONNECTION_LIST,
            &header,
        ))
        .await
    }

    /// Broker: a producer group's online clients (refused when none).
    pub async fn producer_connections(
        &self,
        group: &str,
    ) -> Result<ProducerConnection, AdminError> {
        let header = GetProducerConnectionListRequestHeader {
            producer_group: group.to_owned(),
        };
        self.fetch(with_header(
            request_code::GET_PRODUCER_CONNECTION_LIST,
            &header,
        ))
        .await
    }

    /// Broker: runtime figures (`msgPutTotalTodayNow`, `commitLogMaxOffset`, …).
    pub async fn runtime_info(&self) -> Result<BTreeMap<String, String>, AdminError> {
        let table: KvTable = self
            .fetch(RemotingCommand::new_request(
                request_code::GET_BROKER_RUNTIME_INFO,
            ))
            .await?;
        Ok(table.table)
    }

    /// Name server: clusters and their brokers.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, AdminError> {
        self.fetch(RemotingCommand::new_request(
            request_code::GET_BROKER_CLUSTER_INFO,
        ))
        .await
    }

    /// Name server: a topic's route, `None` when no live broker has the topic.
    pub async fn route(&self, topic: &str) -> Result<Option<TopicRouteData>, AdminError> {
        let header = GetRouteInfoRequestHeader {
            topic: topic.to_owned(),
            accept_standard_json_only: Some(true),
        };
        match self
            .fetch(with_header(request_code::GET_ROUTEINFO_BY_TOPIC, &header))
            .await
        {
            Err(e) if e.response_code() == Some(response_code::TOPIC_NOT_EXIST) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Name server: forgets a topic's route until a broker registers it again.
    pub async fn delete_topic_in_namesrv(&self, topic: &str) -> Result<(), AdminError> {
        self.call(topic_request(request_code::DELETE_TOPIC_IN_NAMESRV, topic))
            .await
            .map(drop)
    }
}

/// Opens an admin connection.
async fn open(addr: &str, timeout: Duration) -> Result<Channel, AdminError> {
    connect(addr, timeout, Arc::new(NoRequests))
        .await
        .map_err(|source| AdminError::Connection {
            addr: addr.to_owned(),
            source,
        })
}

/// A request with a typed header.
fn with_header<H: CommandHeader>(code: i32, header: &H) -> RemotingCommand {
    let mut req = RemotingCommand::new_request(code);
    req.set_header(header);
    req
}

/// A request naming one topic.
fn topic_request(code: i32, topic: &str) -> RemotingCommand {
    with_header(
        code,
        &TopicRequestHeader {
            topic: topic.to_owned(),
        },
    )
}
