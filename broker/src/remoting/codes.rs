//! Request codes, response codes, client languages and protocol versions.
//!
//! Numbers come from Apache RocketMQ 4.x: `RequestCode.java`, `ResponseCode.java`,
//! `RemotingSysResponseCode.java`, `LanguageCode.java` and `MQVersion.java`.
//! Codes are plain `i32` constants rather than enums because a broker must be able
//! to carry and answer codes it does not know (with `REQUEST_CODE_NOT_SUPPORTED`).

use std::fmt;

/// Defines a module of `i32` code constants plus a reverse `name` lookup for logs.
macro_rules! code_table {
    (
        $(#[$meta:meta])*
        pub mod $module:ident {
            $( $(#[$doc:meta])* $name:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        pub mod $module {
            $( $(#[$doc])* pub const $name: i32 = $value; )*

            /// The Java constant name of `code`, for logs; `None` for a code we do not know.
            pub fn name(code: i32) -> Option<&'static str> {
                match code {
                    $( $value => Some(stringify!($name)), )*
                    _ => None,
                }
            }
        }
    };
}

code_table! {
    /// Request codes of RocketMQ 4.x (`RequestCode.java`); 5.x-only codes are left out.
    pub mod request_code {
        /// Client → broker: send one message with the long (V1) header names.
        SEND_MESSAGE = 10,
        /// Client → broker: pull messages from one queue.
        PULL_MESSAGE = 11,
        /// Client → broker: query messages by key.
        QUERY_MESSAGE = 12,
        /// Admin → broker: query the broker's offset.
        QUERY_BROKER_OFFSET = 13,
        /// Client → broker: read a group's committed offset.
        QUERY_CONSUMER_OFFSET = 14,
        /// Client → broker: commit a group's offset.
        UPDATE_CONSUMER_OFFSET = 15,
        /// Admin → broker: create or update a topic.
        UPDATE_AND_CREATE_TOPIC = 17,
        /// Admin → broker: all topic configs.
        GET_ALL_TOPIC_CONFIG = 21,
        /// Admin → broker: topic config list.
        GET_TOPIC_CONFIG_LIST = 22,
        /// Admin → broker: topic names.
        GET_TOPIC_NAME_LIST = 23,
        /// Admin → broker: change broker config.
        UPDATE_BROKER_CONFIG = 25,
        /// Admin → broker: read broker config.
        GET_BROKER_CONFIG = 26,
        /// Admin → broker: delete expired files now.
        TRIGGER_DELETE_FILES = 27,
        /// Admin → broker: runtime statistics.
        GET_BROKER_RUNTIME_INFO = 28,
        /// Client → broker: queue offset at a timestamp.
        SEARCH_OFFSET_BY_TIMESTAMP = 29,
        /// Client → broker: queue max offset.
        GET_MAX_OFFSET = 30,
        /// Client → broker: queue min offset.
        GET_MIN_OFFSET = 31,
        /// Client → broker: store time of a queue's earliest message.
        GET_EARLIEST_MSG_STORETIME = 32,
        /// Client → broker: one message by commit-log offset.
        VIEW_MESSAGE_BY_ID = 33,
        /// Client → broker: heartbeat with producer and consumer data.
        HEART_BEAT = 34,
        /// Client → broker: a client leaves.
        UNREGISTER_CLIENT = 35,
        /// Client → broker: a consumed message goes back for retry.
        CONSUMER_SEND_MSG_BACK = 36,
        /// Client → broker (oneway): commit or roll back a transaction.
        END_TRANSACTION = 37,
        /// Client → broker: client ids of a consumer group.
        GET_CONSUMER_LIST_BY_GROUP = 38,
        /// Broker → client (oneway): ask a producer for a transaction's state.
        CHECK_TRANSACTION_STATE = 39,
        /// Broker → client (oneway): a group's membership changed.
        NOTIFY_CONSUMER_IDS_CHANGED = 40,
        /// Client → broker: lock queues for ordered consumption.
        LOCK_BATCH_MQ = 41,
        /// Client → broker: unlock queues.
        UNLOCK_BATCH_MQ = 42,
        /// Broker → broker: all consumer offsets (slave sync).
        GET_ALL_CONSUMER_OFFSET = 43,
        /// Broker → broker: all delay offsets (slave sync).
        GET_ALL_DELAY_OFFSET = 45,
        /// Client → broker: check a filter config.
        CHECK_CLIENT_CONFIG = 46,
        /// Client → broker: read client config.
        GET_CLIENT_CONFIG = 47,
        /// Admin → broker: create or update an ACL account.
        UPDATE_AND_CREATE_ACL_CONFIG = 50,
        /// Admin → broker: delete an ACL account.
        DELETE_ACL_CONFIG = 51,
        /// Admin → broker: ACL info.
        GET_BROKER_CLUSTER_ACL_INFO = 52,
        /// Admin → broker: update the ACL global white list.
        UPDATE_GLOBAL_WHITE_ADDRS_CONFIG = 53,
        /// Admin → broker: ACL config.
        GET_BROKER_CLUSTER_ACL_CONFIG = 54,
        /// Admin → name server: put a KV config.
        PUT_KV_CONFIG = 100,
        /// Admin → name server: get a KV config.
        GET_KV_CONFIG = 101,
        /// Admin → name server: delete a KV config.
        DELETE_KV_CONFIG = 102,
        /// Broker → name server: register the broker and its topics.
        REGISTER_BROKER = 103,
        /// Broker → name server: unregister the broker.
        UNREGISTER_BROKER = 104,
        /// Client → name server: route of one topic.
        GET_ROUTEINFO_BY_TOPIC = 105,
        /// Client → name server: cluster and broker tables.
        GET_BROKER_CLUSTER_INFO = 106,
        /// Admin → broker: create or update a subscription group.
        UPDATE_AND_CREATE_SUBSCRIPTIONGROUP = 200,
        /// Admin → broker: all subscription groups.
        GET_ALL_SUBSCRIPTIONGROUP_CONFIG = 201,
        /// Admin → broker: per-queue offsets of a topic.
        GET_TOPIC_STATS_INFO = 202,
        /// Admin → broker: connections of a consumer group.
        GET_CONSUMER_CONNECTION_LIST = 203,
        /// Admin → broker: connections of a producer group.
        GET_PRODUCER_CONNECTION_LIST = 204,
        /// Admin → name server: remove a broker's write permission.
        WIPE_WRITE_PERM_OF_BROKER = 205,
        /// Admin → name server: all topic names.
        GET_ALL_TOPIC_LIST_FROM_NAMESERVER = 206,
        /// Admin → broker: delete a subscription group.
        DELETE_SUBSCRIPTIONGROUP = 207,
        /// Admin → broker: consume progress of a group.
        GET_CONSUME_STATS = 208,
        /// Admin → broker: suspend a consumer.
        SUSPEND_CONSUMER = 209,
        /// Admin → broker: resume a consumer.
        RESUME_CONSUMER = 210,
        /// Admin → consumer: reset offsets in the consumer.
        RESET_CONSUMER_OFFSET_IN_CONSUMER = 211,
        /// Admin → broker: reset offsets in the broker.
        RESET_CONSUMER_OFFSET_IN_BROKER = 212,
        /// Admin → consumer: resize the consume thread pool.
        ADJUST_CONSUMER_THREAD_POOL = 213,
        /// Admin → broker: which groups consumed a message.
        WHO_CONSUME_THE_MESSAGE = 214,
        /// Admin → broker: delete a topic.
        DELETE_TOPIC_IN_BROKER = 215,
        /// Admin → name server: delete a topic's route.
        DELETE_TOPIC_IN_NAMESRV = 216,
        /// Admin → name server: register a topic.
        REGISTER_TOPIC_IN_NAMESRV = 217,
        /// Admin → name server: KV configs of a namespace.
        GET_KVLIST_BY_NAMESPACE = 219,
        /// Broker → client: reset the consumer's offsets.
        RESET_CONSUMER_CLIENT_OFFSET = 220,
        /// Broker → client: consume status.
        GET_CONSUMER_STATUS_FROM_CLIENT = 221,
        /// Admin → broker: reset a group's offsets by timestamp.
        INVOKE_BROKER_TO_RESET_OFFSET = 222,
        /// Admin → broker: consume status of a group's clients.
        INVOKE_BROKER_TO_GET_CONSUMER_STATUS = 223,
        /// Admin → name server: topics of a cluster.
        GET_TOPICS_BY_CLUSTER = 224,
        /// Admin → broker: groups consuming a topic.
        QUERY_TOPIC_CONSUME_BY_WHO = 300,
        /// Filter server → broker: register.
        REGISTER_FILTER_SERVER = 301,
        /// Client → filter server: register a filter class.
        REGISTER_MESSAGE_FILTER_CLASS = 302,
        /// Admin → broker: consume time span of a group.
        QUERY_CONSUME_TIME_SPAN = 303,
        /// Admin → name server: system topics.
        GET_SYSTEM_TOPIC_LIST_FROM_NS = 304,
        /// Admin → broker: system topics.
        GET_SYSTEM_TOPIC_LIST_FROM_BROKER = 305,
        /// Admin → broker: clean expired consume queues.
        CLEAN_EXPIRED_CONSUMEQUEUE = 306,
        /// Admin → broker → client: running info of a consumer.
        GET_CONSUMER_RUNNING_INFO = 307,
        /// Admin → broker: offset correction.
        QUERY_CORRECTION_OFFSET = 308,
        /// Admin → broker → client: consume one message directly.
        CONSUME_MESSAGE_DIRECTLY = 309,
        /// Client → broker: send one message with the short (V2) header names.
        SEND_MESSAGE_V2 = 310,
        /// Admin → name server: unit topics.
        GET_UNIT_TOPIC_LIST = 311,
        /// Admin → name server: topics with unit subscriptions.
        GET_HAS_UNIT_SUB_TOPIC_LIST = 312,
        /// Admin → name server: non-unit topics with unit subscriptions.
        GET_HAS_UNIT_SUB_UNUNIT_TOPIC_LIST = 313,
        /// Admin → broker: copy a group's offsets.
        CLONE_GROUP_OFFSET = 314,
        /// Admin → broker: statistics items.
        VIEW_BROKER_STATS_DATA = 315,
        /// Admin → broker: delete unused topics.
        CLEAN_UNUSED_TOPIC = 316,
        /// Admin → broker: consume stats of all groups.
        GET_BROKER_CONSUME_STATS = 317,
        /// Admin → name server: change name server config.
        UPDATE_NAMESRV_CONFIG = 318,
        /// Admin → name server: read name server config.
        GET_NAMESRV_CONFIG = 319,
        /// Client → broker: send a batch (V2 header names, batch body).
        SEND_BATCH_MESSAGE = 320,
        /// Admin → broker: raw consume queue entries.
        QUERY_CONSUME_QUEUE = 321,
        /// Broker → name server: data version check.
        QUERY_DATA_VERSION = 322,
        /// Admin → broker: resume checking a half message.
        RESUME_CHECK_HALF_MESSAGE = 323,
        /// Client → broker: send a reply message (V1 names).
        SEND_REPLY_MESSAGE = 324,
        /// Client → broker: send a reply message (V2 names).
        SEND_REPLY_MESSAGE_V2 = 325,
        /// Broker → client: push a reply message.
        PUSH_REPLY_MESSAGE_TO_CLIENT = 326,
        /// Admin → name server: restore a broker's write permission.
        ADD_WRITE_PERM_OF_BROKER = 327,
        /// Admin → broker: topics a group consumes.
        QUERY_TOPICS_BY_CONSUMER = 343,
        /// Admin → broker: a group's subscription of a topic.
        QUERY_SUBSCRIPTION_BY_CONSUMER = 345,
        /// Client → broker: lite pull consumer's pull (same header as `PULL_MESSAGE`).
        LITE_PULL_MESSAGE = 361,
        /// mqfleet private, admin → broker: one queue's messages in order from an offset
        /// (the console's paged browse; `broker/query.rs`).
        BROWSE_MESSAGES = 30000,
        /// mqfleet private, admin → broker: per-minute put/consumed counts of a topic or
        /// a group on a topic (`broker/query.rs`, `broker/minute_stats.rs`).
        GET_STATS_MINUTES = 30001,
    }
}

code_table! {
    /// Response codes (`RemotingSysResponseCode.java` 0–4 and `ResponseCode.java`).
    pub mod response_code {
        /// Success (send: SEND_OK; pull: FOUND).
        SUCCESS = 0,
        /// Unexpected failure; a handler error is answered with this.
        SYSTEM_ERROR = 1,
        /// Flow control: the client backs off and retries.
        SYSTEM_BUSY = 2,
        /// The request code has no handler.
        REQUEST_CODE_NOT_SUPPORTED = 3,
        /// A transaction failed.
        TRANSACTION_FAILED = 4,
        /// Stored but not flushed in time (the send still counts as done).
        FLUSH_DISK_TIMEOUT = 10,
        /// Stored but no slave is available (the send still counts as done).
        SLAVE_NOT_AVAILABLE = 11,
        /// Stored but the slave did not confirm in time (the send still counts as done).
        FLUSH_SLAVE_TIMEOUT = 12,
        /// The message is malformed or too large.
        MESSAGE_ILLEGAL = 13,
        /// The broker cannot serve this now (e.g. slave, shutting down).
        SERVICE_NOT_AVAILABLE = 14,
        /// The client version is not supported.
        VERSION_NOT_SUPPORTED = 15,
        /// Permission denied (topic or broker permission, ACL).
        NO_PERMISSION = 16,
        /// The topic does not exist.
        TOPIC_NOT_EXIST = 17,
        /// The topic already exists.
        TOPIC_EXIST_ALREADY = 18,
        /// Pull: no new message (NO_NEW_MSG).
        PULL_NOT_FOUND = 19,
        /// Pull: none matched the filter (NO_MATCHED_MSG).
        PULL_RETRY_IMMEDIATELY = 20,
        /// Pull: the requested offset is out of range (OFFSET_ILLEGAL).
        PULL_OFFSET_MOVED = 21,
        /// Query: nothing found.
        QUERY_NOT_FOUND = 22,
        /// The subscription expression does not parse.
        SUBSCRIPTION_PARSE_FAILED = 23,
        /// No subscription for this group and topic.
        SUBSCRIPTION_NOT_EXIST = 24,
        /// The subscription is older than the broker's.
        SUBSCRIPTION_NOT_LATEST = 25,
        /// The subscription group does not exist.
        SUBSCRIPTION_GROUP_NOT_EXIST = 26,
        /// Filter data does not exist.
        FILTER_DATA_NOT_EXIST = 27,
        /// Filter data is not the latest.
        FILTER_DATA_NOT_LATEST = 28,
        /// Flushing to disk failed (late 4.x).
        FLUSH_DISK_FAILED = 29,
        /// Transaction check answer: commit.
        TRANSACTION_SHOULD_COMMIT = 200,
        /// Transaction check answer: roll back.
        TRANSACTION_SHOULD_ROLLBACK = 201,
        /// Transaction check answer: unknown (Java spelling kept).
        TRANSACTION_STATE_UNKNOW = 202,
        /// Transaction check: wrong producer group.
        TRANSACTION_STATE_GROUP_WRONG = 203,
        /// No buyer id.
        NO_BUYER_ID = 204,
        /// Not in the current unit.
        NOT_IN_CURRENT_UNIT = 205,
        /// The consumer is not online.
        CONSUMER_NOT_ONLINE = 206,
        /// Consuming directly timed out.
        CONSUME_MSG_TIMEOUT = 207,
        /// No message.
        NO_MESSAGE = 208,
        /// ACL: create or update failed.
        UPDATE_AND_CREATE_ACL_CONFIG_FAILED = 209,
        /// ACL: delete failed.
        DELETE_ACL_CONFIG_FAILED = 210,
        /// ACL: white list update failed.
        UPDATE_GLOBAL_WHITE_ADDRS_CONFIG_FAILED = 211,
    }
}

/// Protocol versions: ordinals of Java's `MQVersion.Version` enum, sent as `version`.
pub mod mq_version {
    /// V3_4_9: the broker honours `maxReconsumeTimes` only from this client version on.
    pub const V3_4_9: i32 = 121;
    /// V4_9_4: name servers honour `acceptStandardJsonOnly` from this version on.
    pub const V4_9_4: i32 = 401;
    /// V4_9_5: what a 4.9.5 Java broker puts in its responses.
    pub const V4_9_5: i32 = 403;
    /// The version this broker sends: we present ourselves as a late 4.x Java broker.
    pub const CURRENT: i32 = V4_9_5;
}

/// Java enum names of the known languages, indexed by their byte code.
const LANGUAGE_NAMES: [&str; 14] = [
    "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY", "OTHER", "HTTP", "GO", "PHP",
    "OMS", "RUST", "NODE_JS",
];

/// The language a peer says it is written in (`LanguageCode.java`).
///
/// Clients in the wild send values Java 4.x does not know (RUST, NODE_JS, or
/// anything else), so unknown bytes and names are kept rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum LanguageCode {
    /// JAVA (0); also what this broker says it is.
    #[default]
    Java,
    /// CPP (1).
    Cpp,
    /// DOTNET (2).
    Dotnet,
    /// PYTHON (3).
    Python,
    /// DELPHI (4).
    Delphi,
    /// ERLANG (5).
    Erlang,
    /// RUBY (6).
    Ruby,
    /// OTHER (7): Java's own catch-all name.
    Other,
    /// HTTP (8).
    Http,
    /// GO (9).
    Go,
    /// PHP (10).
    Php,
    /// OMS (11).
    Oms,
    /// RUST (12, 5.x).
    Rust,
    /// NODE_JS (13, late 5.x).
    NodeJs,
    /// A byte code no known client uses, kept as received (binary headers).
    Unknown(u8),
    /// A name no known client uses, kept as received (JSON headers).
    UnknownName(String),
}

impl LanguageCode {
    /// The language for a binary header's byte; unknown bytes are kept.
    pub fn from_code(code: u8) -> Self {
        use LanguageCode::*;
        match code {
            0 => Java,
            1 => Cpp,
            2 => Dotnet,
            3 => Python,
            4 => Delphi,
            5 => Erlang,
            6 => Ruby,
            7 => Other,
            8 => Http,
            9 => Go,
            10 => Php,
            11 => Oms,
            12 => Rust,
            13 => NodeJs,
            other => Unknown(other),
        }
    }

    /// The language for a JSON header's name: case-insensitive, numeric strings as codes.
    pub fn from_name(name: &str) -> Self {
        let name = name.trim();
        let known = LANGUAGE_NAMES
            .iter()
            .zip(0u8..)
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        if let Some((_, code)) = known {
            return Self::from_code(code);
        }
        match name.parse::<u8>() {
            Ok(code) => Self::from_code(code),
            Err(_) => Self::UnknownName(name.to_owned()),
        }
    }

    /// The byte for a binary header; an unknown name goes out as OTHER (7).
    pub fn code(&self) -> u8 {
        use LanguageCode::*;
        match self {
            Java => 0,
            Cpp => 1,
            Dotnet => 2,
            Python => 3,
            Delphi => 4,
            Erlang => 5,
            Ruby => 6,
            Other | UnknownName(_) => 7,
            Http => 8,
            Go => 9,
            Php => 10,
            Oms => 11,
            Rust => 12,
            NodeJs => 13,
            Unknown(code) => *code,
        }
    }

    /// The Java enum name; `None` for an unknown byte, which has no name.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Unknown(_) => None,
            Self::UnknownName(name) => Some(name),
            known => LANGUAGE_NAMES.get(usize::from(known.code())).copied(),
        }
    }
}

impl fmt::Display for LanguageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "UNKNOWN({})", self.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_language_round_trips_through_byte_and_name() {
        for code in 0u8..=13 {
            let lang = LanguageCode::from_code(code);
            assert!(!matches!(lang, LanguageCode::Unknown(_)), "code {code}");
            assert_eq!(lang.code(), code);
            let name = lang.name().expect("known languages have names");
            assert_eq!(LanguageCode::from_name(name), lang);
        }
        assert_eq!(LanguageCode::from_code(12), LanguageCode::Rust);
        assert_eq!(LanguageCode::from_code(9).name(), Some("GO"));
    }

    #[test]
    fn unknown_languages_are_kept_not_rejected() {
        assert_eq!(LanguageCode::from_code(200), LanguageCode::Unknown(200));
        assert_eq!(LanguageCode::Unknown(200).code(), 200);
        assert_eq!(LanguageCode::Unknown(200).to_string(), "UNKNOWN(200)");
        let odd = LanguageCode::from_name("COBOL");
        assert_eq!(odd, LanguageCode::UnknownName("COBOL".into()));
        assert_eq!(odd.name(), Some("COBOL"));
        assert_eq!(
            odd.code(),
            7,
            "an unknown name goes out as OTHER in binary headers"
        );
    }

    #[test]
    fn language_names_are_read_liberally() {
        assert_eq!(LanguageCode::from_name("rust"), LanguageCode::Rust);
        assert_eq!(LanguageCode::from_name(" Java "), LanguageCode::Java);
        assert_eq!(LanguageCode::from_name("9"), LanguageCode::Go);
        assert_eq!(LanguageCode::from_name("node_js"), LanguageCode::NodeJs);
    }

    #[test]
    fn code_names_are_looked_up_per_table() {
        assert_eq!(request_code::SEND_MESSAGE_V2, 310);
        assert_eq!(request_code::name(320), Some("SEND_BATCH_MESSAGE"));
        assert_eq!(request_code::name(999_999), None);
        assert_eq!(response_code::name(19), Some("PULL_NOT_FOUND"));
        assert_eq!(
            response_code::name(request_code::PULL_MESSAGE),
            Some("SLAVE_NOT_AVAILABLE")
        );
    }
}
