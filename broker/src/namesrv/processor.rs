//! The name server's request handling.

use super::headers::{
    GetRouteInfoRequestHeader, RegisterBrokerRequestHeader, RegisterBrokerResponseHeader,
    TopicRequestHeader, UnregisterBrokerRequestHeader,
};
use super::routes::{Registration, RouteTable, View};
use crate::acl::Acl;
use crate::names::Namespace;
use crate::net::{RequestContext, RequestHandler, not_supported};
use crate::remoting::body::{self, RegisterBrokerBody};
use crate::remoting::{CommandHeader, RemotingCommand, request_code, response_code};
use std::sync::Arc;
use std::time::Duration;

/// A name server: routes plus the instance namespace bare route queries are mapped into.
pub struct NameServer {
    routes: Arc<RouteTable>,
    namespace: Namespace,
    acl: Acl,
}

impl NameServer {
    /// A name server forgetting brokers silent for `expiry`.
    pub fn new(namespace: Namespace, expiry: Duration) -> Self {
        Self {
            routes: Arc::new(RouteTable::new(expiry)),
            namespace,
            acl: Acl::default(),
        }
    }

    /// Checks requests against `acl` (see [`super::acl`] for what needs what; with an
    /// admin key, every request but the open queries needs its signature).
    pub fn with_acl(mut self, acl: Acl) -> Self {
        self.acl = acl;
        self
    }

    /// The ACL requests are checked against.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Removes expired brokers every `interval`, forever (spawn it).
    pub async fn run_expiry(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            self.routes.expire();
        }
    }

    fn dispatch(&self, ctx: &RequestContext, req: &RemotingCommand) -> RemotingCommand {
        let result = match req.code {
            request_code::REGISTER_BROKER => self.register(ctx, req),
            request_code::UNREGISTER_BROKER => self.unregister(req),
            request_code::GET_ROUTEINFO_BY_TOPIC => self.route(req, View::Internal),
            request_code::GET_BROKER_CLUSTER_INFO => {
                Ok(ok(req).with_body(body::to_json(&self.routes.cluster_info())))
            }
            request_code::GET_ALL_TOPIC_LIST_FROM_NAMESERVER | request_code::GET_KV_CONFIG => {
                Ok(self.dispatch_open(req))
            }
            request_code::DELETE_TOPIC_IN_NAMESRV => self.delete_topic(req),
            _ => Ok(not_supported(req)),
        };
        result.unwrap_or_else(|remark| {
            RemotingCommand::response_to(req, response_code::SYSTEM_ERROR, Some(&remark))
        })
    }

    /// An open query other than routes and cluster info (no broker addresses in them).
    fn dispatch_open(&self, req: &RemotingCommand) -> RemotingCommand {
        match req.code {
            request_code::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
                ok(req).with_body(body::to_json(&self.routes.topics()))
            }
            // No KV config is kept: clients treat "not found" as "no order config".
            request_code::GET_KV_CONFIG => RemotingCommand::response_to(
                req,
                response_code::QUERY_NOT_FOUND,
                Some("no such kv config"),
            ),
            _ => not_supported(req),
        }
    }

    fn register(
        &self,
        ctx: &RequestContext,
        req: &RemotingCommand,
    ) -> Result<RemotingCommand, String> {
        let h = RegisterBrokerRequestHeader::from_command(req).map_err(|e| e.to_string())?;
        if h.compressed == Some(true) {
            return Err(
                "compressed registration bodies are not supported; register with JSON".into(),
            );
        }
        let body: RegisterBrokerBody = body::from_json(req.body.as_deref())
            .map_err(|e| format!("bad registration body: {e}"))?;
        let master = self.routes.register(Registration {
            cluster: h.cluster_name,
            broker_name: h.broker_name,
            broker_addr: h.broker_addr,
            broker_id: h.broker_id,
            external_addr: h.external_broker_addr.filter(|a| !a.is_empty()),
            topics: body
                .topic_config_serialize_wrapper
                .topic_config_table
                .into_values()
                .collect(),
            channel: Some(ctx.channel.clone()),
        });
        let mut response = ok(req).with_body(&br#"{"table":{}}"#[..]);
        response.set_header(&RegisterBrokerResponseHeader {
            ha_server_addr: None,
            master_addr: master,
        });
        Ok(response)
    }

    fn unregister(&self, req: &RemotingCommand) -> Result<RemotingCommand, String> {
        let h = UnregisterBrokerRequestHeader::from_command(req).map_err(|e| e.to_string())?;
        self.routes.unregister(&h.broker_addr);
        Ok(ok(req))
    }

    fn route(&self, req: &RemotingCommand, view: View) -> Result<RemotingCommand, String> {
        let h = GetRouteInfoRequestHeader::from_command(req).map_err(|e| e.to_string())?;
        let canonical = self.namespace.canonical(&h.topic);
        match self
            .routes
            .route_in(&canonical, view)
            .or_else(|| self.routes.route_in(&h.topic, view))
        {
            Some(route) => Ok(ok(req).with_body(body::to_json(&route))),
            None => Ok(RemotingCommand::response_to(
                req,
                response_code::TOPIC_NOT_EXIST,
                Some(&format!(
                    "No topic route info in name server for the topic: {}",
                    h.topic
                )),
            )),
        }
    }

    fn delete_topic(&self, req: &RemotingCommand) -> Result<RemotingCommand, String> {
        let h = TopicRequestHeader::from_command(req).map_err(|e| e.to_string())?;
        self.routes
            .delete_topic(&self.namespace.canonical(&h.topic));
        Ok(ok(req))
    }
}

fn ok(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, response_code::SUCCESS, None)
}

/// The name server as clients outside the cluster see it (its external port): routes
/// and cluster info name the brokers' external addresses; only the open queries are
/// answered (see the module docs of [`crate::namesrv`]).
pub struct ExternalView(pub Arc<NameServer>);

impl ExternalView {
    fn dispatch(&self, req: &RemotingCommand) -> RemotingCommand {
        let ns = &self.0;
        let result = match req.code {
            request_code::GET_ROUTEINFO_BY_TOPIC => ns.route(req, View::External),
            request_code::GET_BROKER_CLUSTER_INFO => {
                Ok(ok(req).with_body(body::to_json(&ns.routes.cluster_info_in(View::External))))
            }
            code if super::acl::is_open(code) => return ns.dispatch_open(req),
            _ => {
                return RemotingCommand::response_to(
                    req,
                    response_code::NO_PERMISSION,
                    Some("the name server's external port answers route queries only"),
                );
            }
        };
        result.unwrap_or_else(|remark| {
            RemotingCommand::response_to(req, response_code::SYSTEM_ERROR, Some(&remark))
        })
    }
}

impl RequestHandler for ExternalView {
    async fn handle(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let response = self.dispatch(&request);
        tracing::trace!(code = request.code, answer = response.code, topic = ?request.ext("topic"), peer = %ctx.channel.peer_addr(), "name server request (external port)");
        Some(response)
    }
}

impl RequestHandler for NameServer {
    async fn handle(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let checked = if super::acl::is_open(request.code) {
            Ok(())
        } else {
            self.acl.authorize_admin(&request)
        };
        let response = match checked {
            Ok(()) => self.dispatch(&ctx, &request),
            Err(denied) => denied.into_response(&request),
        };
        tracing::trace!(code = request.code, answer = response.code, topic = ?request.ext("topic"), peer = %ctx.channel.peer_addr(), "name server request");
        Some(response)
    }
}
