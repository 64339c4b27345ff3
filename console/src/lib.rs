//! mq-console: the `/json/*` management API (spec/console-api.md).
//!
//! It writes the same custom resources a person would (`mq_operator::crd`) and
//! reads runtime facts from brokers. The HTTP server arrives with its own issue.
