//! The RocketMQ 4.x remoting protocol: codes, commands, frames, typed headers, connections.
//!
//! Layered like this: [`codes`] and [`command`] are plain data, [`frame`] turns a command
//! into bytes and back without I/O, [`header`] gives typed access to a command's ext
//! fields, and [`connection`] moves commands over an async byte stream. No request
//! handling policy lives here.

#![warn(missing_docs)]

pub mod admin;
pub mod body;
pub mod codes;
pub mod command;
pub mod connection;
pub mod consume;
pub mod fastjson;
pub mod frame;
pub mod header;

#[cfg(test)]
mod proptests;

pub use codes::{LanguageCode, mq_version, request_code, response_code};
pub use command::{RemotingCommand, SerializeType};
pub use connection::{CommandReader, CommandWriter, Connection, ConnectionError};
pub use frame::{DEFAULT_MAX_FRAME, FrameError};
pub use header::{
    CommandHeader, HeaderError, PullMessageRequestHeader, PullMessageResponseHeader,
    SendMessageRequestHeader, SendMessageResponseHeader,
};
