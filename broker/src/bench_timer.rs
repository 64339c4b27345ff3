//! `mq-broker bench --scheduled N`: scheduled messages (`TIMER_DELAY_SEC`,
//! `TIMER_DELIVER_MS`), measured from outside the broker.
//!
//! 1. N sends scheduled 1 h ahead, pipelined like the peak phase: sends/s into the timer
//!    store, then the broker's RSS with N pending (and before, for the difference);
//! 2. `--scheduled-due` sends all due at one instant a few seconds later: once it
//!    passes, how fast the broker re-puts them (`timerPending` falling back to N, polled
//!    every 50 ms), while the N of phase 1 keep waiting.

use super::{ChildBroker, FrameTemplate, Limit, Report, fmt_rss, load, round};
use anyhow::{Context, Result, bail};
use mq_broker::net::Channel;
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use std::time::{Duration, Instant};

/// Longest a send phase may take.
const SEND_LIMIT: Duration = Duration::from_secs(60);
/// Longest the deliveries may take once due.
const DELIVERY_LIMIT: Duration = Duration::from_secs(60);

/// Runs both scheduled phases.
pub(super) async fn measure(
    args: &super::BenchArgs,
    addr: &str,
    child: Option<&ChildBroker>,
    admin: &Channel,
    mut report: Report,
) -> Result<Report> {
    let base_pending = pending(admin).await?;
    let rss_before = child.and_then(ChildBroker::rss);
    println!("broker RSS before: {}", fmt_rss(rss_before));

    let ahead = FrameTemplate::new(
        &args.topic,
        args.queues,
        args.size,
        "TIMER_DELAY_SEC\u{1}3600\u{2}",
    )?;
    let sent = send_all(args, addr, &ahead, args.scheduled).await?;
    sent.print("scheduled sends (+1 h)", args.size);
    sent.report(&mut report, "scheduled_send", args.size);
    let waiting = pending(admin).await? - base_pending;
    let rss = child.and_then(ChildBroker::rss);
    println!(
        "broker RSS with {waiting} scheduled messages pending: {}",
        fmt_rss(rss)
    );
    report.insert("scheduled_pending".into(), waiting.into());
    report.insert("scheduled_rss_kib".into(), rss.map(|r| r.0).into());
    report.insert(
        "scheduled_rss_before_kib".into(),
        rss_before.map(|r| r.0).into(),
    );

    let due_count = args.scheduled_due;
    if due_count > 0 {
        // Leave time for every send: twice what phase 1's rate needs, plus 2 s.
        let lead = Duration::from_secs_f64(2.0 * due_count as f64 / sent.rate().max(1.0) + 2.0);
        let due_at = mq_broker::broker::table::now_millis() + lead.as_millis() as i64;
        let due = FrameTemplate::new(
            &args.topic,
            args.queues,
            args.size,
            &format!("TIMER_DELIVER_MS\u{1}{due_at}\u{2}"),
        )?;
        let sent_due = send_all(args, addr, &due, due_count).await?;
        if mq_broker::broker::table::now_millis() >= due_at {
            bail!("the due sends took longer than their lead ({lead:?})");
        }
        let target = base_pending + sent.ok;
        let took = wait_delivered(admin, due_at, target).await?;
        let rate = sent_due.ok as f64 / took.as_secs_f64().max(1e-9);
        println!(
            "scheduled deliveries: {rate:>9.0} msgs/s   ({} messages due at once, all re-put {:.2} s after their time)",
            sent_due.ok,
            took.as_secs_f64()
        );
        report.insert("scheduled_deliver_msgs_per_s".into(), round(rate).into());
        report.insert(
            "scheduled_deliver_s".into(),
            round(took.as_secs_f64()).into(),
        );
    }
    Ok(report)
}

/// Sends `count` messages from `template` at full speed.
async fn send_all(
    args: &super::BenchArgs,
    addr: &str,
    template: &FrameTemplate,
    count: u64,
) -> Result<super::LoadResult> {
    let limit = Limit {
        duration: SEND_LIMIT,
        messages: Some(count),
    };
    let result = load(addr, template, args.senders, args.connections, limit, None).await;
    if result.ok == 0 {
        bail!("no scheduled send succeeded");
    }
    Ok(result)
}

/// Waits until `timerPending` is back to `target`; returns how long after `due_at`.
async fn wait_delivered(admin: &Channel, due_at: i64, target: u64) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let now = mq_broker::broker::table::now_millis();
        if now >= due_at && pending(admin).await? <= target {
            return Ok(Duration::from_millis((now - due_at).max(0) as u64));
        }
        if start.elapsed() > SEND_LIMIT + DELIVERY_LIMIT {
            bail!("scheduled messages were not delivered within {DELIVERY_LIMIT:?} of their time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The broker's `timerPending` (GET_BROKER_RUNTIME_INFO).
async fn pending(admin: &Channel) -> Result<u64> {
    let req = RemotingCommand::new_request(request_code::GET_BROKER_RUNTIME_INFO);
    let answer = admin
        .request(req, Duration::from_secs(10))
        .await
        .context("GET_BROKER_RUNTIME_INFO")?;
    if answer.code != response_code::SUCCESS {
        bail!("GET_BROKER_RUNTIME_INFO answered {}", answer.code);
    }
    let body: serde_json::Value =
        serde_json::from_slice(answer.body.as_deref().unwrap_or_default())
            .context("the runtime info body")?;
    body["table"]["timerPending"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .context("no timerPending in the runtime info")
}
