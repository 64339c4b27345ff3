//! A request the broker answers with an error code instead of success.

use super::persist::PersistError;
use crate::remoting::{HeaderError, RemotingCommand, response_code};
use crate::store::StoreError;

/// An error answer: a response code and a remark saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Response code.
    pub code: i32,
    /// Human-readable reason.
    pub remark: String,
}

impl Refusal {
    /// A refusal with `code`.
    pub fn new(code: i32, remark: impl Into<String>) -> Self {
        Self {
            code,
            remark: remark.into(),
        }
    }

    /// The response to `request` carrying this refusal.
    pub fn into_response(self, request: &RemotingCommand) -> RemotingCommand {
        RemotingCommand::response_to(request, self.code, Some(&self.remark))
    }
}

impl From<HeaderError> for Refusal {
    fn from(e: HeaderError) -> Self {
        Self::new(response_code::SYSTEM_ERROR, e.to_string())
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            // What RocketMQ answers a send while its disk is full (SERVICE_NOT_AVAILABLE,
            // "maybe your disk full"): clients retry another broker.
            StoreError::DiskFull { .. } => Self::new(
                response_code::SERVICE_NOT_AVAILABLE,
                format!("service not available now, the broker's {e}"),
            ),
            e => Self::new(response_code::SYSTEM_ERROR, format!("store: {e}")),
        }
    }
}

impl From<PersistError> for Refusal {
    fn from(e: PersistError) -> Self {
        Self::new(response_code::SYSTEM_ERROR, format!("broker state: {e}"))
    }
}

impl From<serde_json::Error> for Refusal {
    fn from(e: serde_json::Error) -> Self {
        Self::new(
            response_code::SYSTEM_ERROR,
            format!("bad request body: {e}"),
        )
    }
}

/// What a processor returns.
pub type Reply = Result<RemotingCommand, Refusal>;
