//! What can go wrong talking to a broker or name server.

use crate::net::ChannelError;
use crate::remoting::{request_code, response_code};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Connecting failed, the connection closed, or no answer came in time.
    #[error("{addr}: {source}")]
    Connection {
        /// The server.
        addr: String,
        /// What happened to the connection.
        #[source]
        source: ChannelError,
    },
    /// The server answered with an error code.
    #[error("{addr} refused {request}: {code} ({code_name}) {remark}")]
    Refused {
        /// The server.
        addr: String,
        /// The request's name.
        request: &'static str,
        /// The response code (`response_code`).
        code: i32,
        /// The response code's name.
        code_name: &'static str,
        /// The server's reason.
        remark: String,
    },
    /// The server answered success with a body we cannot read.
    #[error("{addr} answered {request} with an unreadable body: {reason}")]
    BadBody {
        /// The server.
        addr: String,
        /// The request's name.
        request: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl AdminError {
    /// A refusal of request `code` with the response `response`.
    pub(crate) fn refused(addr: &str, code: i32, response: i32, remark: Option<String>) -> Self {
        Self::Refused {
            addr: addr.to_owned(),
            request: request_code::name(code).unwrap_or("request"),
            code: response,
            code_name: response_code::name(response).unwrap_or("UNKNOWN"),
            remark: remark.unwrap_or_default(),
        }
    }

    /// The response code when the server refused, `None` for connection and body errors.
    pub fn response_code(&self) -> Option<i32> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's remark when it refused.
    pub fn remark(&self) -> Option<&str> {
        match self {
            Self::Refused { remark, .. } => Some(remark),
            _ => None,
        }
    }

    /// Whether the server said the thing asked about does not exist (topic, group,
    /// consumer group offline): the 404 of remoting.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.response_code(),
            Some(
                response_code::TOPIC_NOT_EXIST
                    | response_code::SUBSCRIPTION_GROUP_NOT_EXIST
                    | response_code::CONSUMER_NOT_ONLINE
                    | response_code::QUERY_NOT_FOUND
            )
        )
    }
}
