//! Connections that carry remoting commands both ways: the server accept loop, the
//! outgoing client, and the [`Channel`] both share.
//!
//! A connection runs a reader task and a writer task. Requests from the peer go to a
//! [`RequestHandler`], each in its own task so a slow or panicking handler cannot stall or
//! kill the connection; responses from the peer complete the request this side sent with
//! the same opaque (the broker calls clients too: check-transaction, notify-consumer-ids,
//! running info). A malformed or oversized frame closes that one connection and is counted.

mod channel;
mod client;
mod limits;
mod server;
mod stall;
pub mod tls;

pub use channel::{Channel, ChannelError, RequestContext, RequestHandler};
pub use client::connect;
pub use limits::{ConnectionLimits, Refusal};
pub use server::{RemotingServer, ServerStats};

use crate::remoting::{RemotingCommand, response_code};

/// The handler of connections on which the peer is not expected to call us (admin,
/// registration, load generators, tests): every request gets [`not_supported`].
pub struct NoRequests;

impl RequestHandler for NoRequests {
    async fn handle(
        &self,
        _ctx: RequestContext,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        Some(not_supported(&request))
    }
}

/// The answer to a request code no processor handles: the connection stays open.
pub fn not_supported(request: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(
        request,
        response_code::REQUEST_CODE_NOT_SUPPORTED,
        Some(&format!("request code {} not supported", request.code)),
    )
}

#[cfg(test)]
mod tests;
