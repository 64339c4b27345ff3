//! The console role (`console: true` in the ACL file): the key the console reads an
//! instance with. It may make exactly the requests the console's reads, offset resets,
//! running-info queries and dead-letter resends send through the admin client
//! ([`crate::client::AdminClient`]: `topics`, `groups`, `runtime_info`, `consume_stats`,
//! `topic_stats`, `consumer_connections`, `topic_consumed_by`, `message_track`,
//! `consumer_running_info`, `reset_offset`, `resend_dlq`, `query_by_key`,
//! `query_by_unique_key`, `view_message`, `consume_time_span`, `browse`, `search_offset`,
//! `stats_minutes`), on every topic and group of the server, whether or not ACL is on —
//! and nothing else: any other code is refused (fail closed), so the console key can
//! neither send, pull, commit offsets, create or delete topics and groups, nor register a
//! broker.

use crate::remoting::request_code::*;

/// The request codes a console account may make (on any topic and group).
pub const CONSOLE_CODES: &[i32] = &[
    // Reads: topic and group lists, broker figures, consumption, messages.
    GET_ALL_TOPIC_CONFIG,
    GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
    GET_BROKER_RUNTIME_INFO,
    GET_CONSUME_STATS,
    GET_TOPIC_STATS_INFO,
    GET_CONSUMER_CONNECTION_LIST,
    QUERY_TOPIC_CONSUME_BY_WHO,
    QUERY_CONSUME_TIME_SPAN,
    QUERY_MESSAGE,
    VIEW_MESSAGE_BY_ID,
    SEARCH_OFFSET_BY_TIMESTAMP,
    BROWSE_MESSAGES,
    GET_STATS_MINUTES,
    // Asking an online client for its running info (and thread dump).
    GET_CONSUMER_RUNNING_INFO,
    // The console's two writes: a group's offset reset, a dead-letter resend.
    INVOKE_BROKER_TO_RESET_OFFSET,
    crate::broker::RESEND_DLQ_MESSAGE,
];

/// Whether a console account may make request `code`.
pub fn allows(code: i32) -> bool {
    CONSOLE_CODES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_reads_resets_and_resends_and_nothing_else() {
        let mut codes: Vec<i32> = CONSOLE_CODES.to_vec();
        codes.sort_unstable();
        assert_eq!(
            codes,
            [
                12, 21, 28, 29, 33, 201, 202, 203, 208, 222, 300, 303, 307, 30000, 30001, 30002
            ]
        );
        for code in [
            SEND_MESSAGE,
            SEND_MESSAGE_V2,
            SEND_BATCH_MESSAGE,
            PULL_MESSAGE,
            HEART_BEAT,
            UPDATE_CONSUMER_OFFSET,
            CONSUMER_SEND_MSG_BACK,
            END_TRANSACTION,
            UPDATE_AND_CREATE_TOPIC,
            DELETE_TOPIC_IN_BROKER,
            UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
            DELETE_SUBSCRIPTIONGROUP,
            UPDATE_BROKER_CONFIG,
            REGISTER_BROKER,
            UNREGISTER_BROKER,
            DELETE_TOPIC_IN_NAMESRV,
            WIPE_WRITE_PERM_OF_BROKER,
            CONSUME_MESSAGE_DIRECTLY,
            LOCK_BATCH_MQ,
            9999,
        ] {
            assert!(!allows(code), "code {code}");
        }
    }
}
