//! The transactional case of `mq-broker bench`: each sender sends a half
//! (SEND_MESSAGE_V2 with the PREPARED sysflag, as a `TransactionMQProducer` does) and
//! commits it (END_TRANSACTION, sent as a request so its completion is timed), one
//! transaction in flight per sender. Reports transactions/s and the p50/p99 of half +
//! commit, and the halves still pending on the broker afterwards (0 when all ended).

use super::{Latencies, REQUEST_TIMEOUT, Report, ms, round};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use mq_broker::net::Channel;
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use mq_broker::store::message::decode_offset_msg_id;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Producer group of the transactional case.
const GROUP: &str = "bench_tx_producer";

/// What one sender measured.
#[derive(Default)]
struct TxResult {
    ok: u64,
    errors: u64,
    latency: Latencies,
}

/// Runs `senders` transactional senders over `channels` for `secs` and reports.
pub(super) async fn measure(
    channels: &[Channel],
    topic: &str,
    size: usize,
    senders: usize,
    secs: u64,
    report: &mut Report,
) -> Result<()> {
    let body = Bytes::from(vec![b't'; size]);
    let seq = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(senders);
    for i in 0..senders {
        let channel = channels[i % channels.len()].clone();
        let (topic, body, seq) = (topic.to_owned(), body.clone(), Arc::clone(&seq));
        tasks.push(tokio::spawn(async move {
            let mut result = TxResult::default();
            while Instant::now() < deadline {
                let begun = Instant::now();
                match transaction(&channel, &topic, &body, seq.fetch_add(1, Ordering::Relaxed))
                    .await
                {
                    Ok(()) => {
                        result.ok += 1;
                        result.latency.record(begun.elapsed());
                    }
                    Err(_) => result.errors += 1,
                }
            }
            result
        }));
    }
    let mut total = TxResult::default();
    for task in tasks {
        let r = task.await.context("a transactional sender failed")?;
        total.ok += r.ok;
        total.errors += r.errors;
        total.latency.merge(r.latency);
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    if total.ok == 0 {
        bail!("no transaction succeeded ({} errors)", total.errors);
    }
    total.latency.sort();
    let rate = total.ok as f64 / elapsed;
    let (p50, p99) = (total.latency.quantile(0.5), total.latency.quantile(0.99));
    println!(
        "transactions (half + commit), {senders} in flight: {rate:>9.0} msgs/s   p50 {} p99 {}   ({} ok, {} errors)",
        ms(p50),
        ms(p99),
        total.ok,
        total.errors
    );
    report.insert("tx_msgs_per_s".into(), round(rate).into());
    report.insert("tx_p50_ms".into(), round(super::millis(p50)).into());
    report.insert("tx_p99_ms".into(), round(super::millis(p99)).into());
    report.insert("tx_errors".into(), total.errors.into());
    Ok(())
}

/// One transaction: a half, then its commit.
async fn transaction(channel: &Channel, topic: &str, body: &Bytes, seq: u64) -> Result<()> {
    let properties = format!(
        "UNIQ_KEY\u{1}BENCHTX{:08X}{seq:016X}\u{2}TRAN_MSG\u{1}true\u{2}PGROUP\u{1}{GROUP}\u{2}TAGS\u{1}bench\u{2}",
        std::process::id()
    );
    let half = RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
        .with_ext("a", GROUP)
        .with_ext("b", topic)
        .with_ext("c", "TBW102")
        .with_ext("d", "8")
        .with_ext("e", "-1")
        .with_ext("f", "4")
        .with_ext("g", mq_broker::broker::table::now_millis().to_string())
        .with_ext("h", "0")
        .with_ext("i", properties)
        .with_body(body.clone());
    let sent = channel.request(half, REQUEST_TIMEOUT).await?;
    if sent.code != response_code::SUCCESS {
        bail!("half refused ({}): {:?}", sent.code, sent.remark);
    }
    let offset_id = sent.ext("msgId").context("no msgId")?;
    let (_, commit_log_offset) = decode_offset_msg_id(offset_id)?;
    let end = RemotingCommand::new_request(request_code::END_TRANSACTION)
        .with_ext("producerGroup", GROUP)
        .with_ext(
            "tranStateTableOffset",
            sent.ext("queueOffset").unwrap_or("0"),
        )
        .with_ext("commitLogOffset", commit_log_offset.to_string())
        .with_ext("commitOrRollback", "8")
        .with_ext("fromTransactionCheck", "false");
    let ended = channel.request(end, REQUEST_TIMEOUT).await?;
    if ended.code != response_code::SUCCESS {
        bail!("commit refused ({}): {:?}", ended.code, ended.remark);
    }
    Ok(())
}
