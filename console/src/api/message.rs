//! `/json/message/{trace,getById,getByKey,getByPagedTopic}` (spec §6 "Message queries"),
//! and the paged query both topics and dead-letter queues use.

use serde_json::{Value, json};

use super::Scope;
use super::live::{self, Live};
use crate::envelope::{ApiError, ApiResult, Reply};
use crate::params::{Params, rules};
use crate::runtime::messages::no_message;
use crate::runtime::now_ms;
use crate::runtime::view::{BodyBudget, MessageView, view};
use crate::task::{MAX_PAGES, PAGE_SIZES, Snapshot, Source, TASK_TTL_MS, Task};

/// `message/trace`: for each group consuming the topic, where the message stands.
pub async fn trace(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let (topic, rights) = live::topic(s, p, &instance, "topic")?;
    live::may_read(&topic, &rights)?;
    let msg_id = p.str("msgId")?;
    let shown = live::shown_groups(s, &instance, &rights);
    let live = Live::for_instance(s, instance).await?;
    let rt = &s.cx.runtime;
    let found = rt
        .find(&live.target, &live.brokers, &topic, msg_id)
        .await?
        .ok_or_else(|| no_message(msg_id))?;
    let tracks = rt.trace(&live.target, &live.brokers, &found).await?;
    let list: Vec<Value> = tracks
        .into_iter()
        .filter(|t| shown.as_ref().is_none_or(|g| g.contains(&t.consumer_group)))
        .map(|t| {
            json!({"instanceId": live.id(), "consumerGroup": t.consumer_group,
                   "trackType": t.track_type, "exceptionDesc": t.exception_desc})
        })
        .collect();
    Ok(Reply::data(list))
}

/// `message/getById`: the one message of the topic with that id, else `BIZ_NO_MESSAGE`.
pub async fn get_by_id(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let (topic, rights) = live::topic(s, p, &instance, "topic")?;
    live::may_read(&topic, &rights)?;
    let msg_id = p.str("msgId")?;
    let live = Live::for_instance(s, instance).await?;
    let found =
        s.cx.runtime
            .find(&live.target, &live.brokers, &topic, msg_id)
            .await?
            .ok_or_else(|| no_message(msg_id))?;
    Ok(Reply::data(view(
        &live.target,
        &found.message,
        &mut BodyBudget::page(),
    )))
}

/// `message/getByKey`: the messages of the topic with that key, newest first (empty when
/// none).
pub async fn get_by_key(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let (topic, rights) = live::topic(s, p, &instance, "topic")?;
    live::may_read(&topic, &rights)?;
    let key = p.str("key")?;
    let live = Live::for_instance(s, instance).await?;
    let found = s.cx.runtime.by_key(&live.brokers, &topic, key).await?;
    let mut budget = BodyBudget::page();
    let list: Vec<MessageView> = found
        .iter()
        .map(|m| view(&live.target, m, &mut budget))
        .collect();
    Ok(Reply::data(list))
}

/// `message/getByPagedTopic`.
pub async fn get_by_paged_topic(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let (topic, rights) = live::topic(s, p, &instance, "topic")?;
    live::may_read(&topic, &rights)?;
    let names = PagedNames::TOPIC;
    let live = Live::for_instance(s, instance).await?;
    let page = paged(s, p, &live, Source::Topic, &topic, &topic, &names).await?;
    Ok(page)
}

/// The parameter and field names of a paged query (the DLQ's are capitalised).
pub struct PagedNames {
    /// Parameters: begin, end, current page, page size, task id.
    pub params: [&'static str; 5],
    /// Answer fields: task id, max page count, current page, data.
    pub fields: [&'static str; 4],
}

impl PagedNames {
    /// `getByPagedTopic`'s names.
    pub const TOPIC: Self = Self {
        params: ["beginTime", "endTime", "currentPage", "pageSize", "taskId"],
        fields: ["taskId", "maxPageCount", "currentPage", "data"],
    };
    /// `getByPagedDLQ`'s names.
    pub const DLQ: Self = Self {
        params: ["BeginTime", "EndTime", "CurrentPage", "PageSize", "TaskId"],
        fields: ["TaskId", "MaxPageCount", "CurrentPage", "Data"],
    };
}

/// One page of a paged query of `stored` (the topic, or the DLQ topic) named `name` by the
/// caller: the first call (no task id) takes the snapshot and seals it into the task id;
/// every call reads its page of that snapshot.
pub async fn paged(
    s: &Scope<'_>,
    p: &Params,
    live: &Live,
    source: Source,
    name: &str,
    stored: &str,
    n: &PagedNames,
) -> ApiResult {
    let [begin_f, end_f, page_f, size_f, task_f] = n.params;
    let current = p.opt_long(page_f)?.unwrap_or(1);
    rules::within(page_f, current, 1, MAX_PAGES)?;
    let size = p.opt_long(size_f)?;
    if let Some(size) = size {
        rules::within(size_f, size, PAGE_SIZES.0, PAGE_SIZES.1)?;
    }
    let query = Task {
        source,
        instance: live.id().to_owned(),
        name: name.to_owned(),
        caller: s.account().user_id.clone(),
        begin: 0,
        end: 0,
        page_size: size.unwrap_or(PAGE_SIZES.2),
        expires: 0,
        snapshot: Snapshot::default(),
    };
    let now = now_ms();
    let (id, task) = match p.opt_str(task_f) {
        Some(id) => {
            let task = s.cx.tasks.open(task_f, id, now, &query)?;
            if size.is_some_and(|size| size != task.page_size) {
                return Err(ApiError::field(
                    size_f,
                    format!(
                        "this task pages by {}; omit {size_f} or start a new query",
                        task.page_size
                    ),
                ));
            }
            (id.to_owned(), task)
        }
        None => {
            let begin = p.long(begin_f)?;
            let end = p.long(end_f)?;
            if end < begin {
                return Err(ApiError::field(
                    end_f,
                    format!("{end} is before {begin_f} {begin}"),
                ));
            }
            let snapshot =
                s.cx.runtime
                    .snapshot(&live.brokers, stored, begin, end)
                    .await?;
            let task = Task {
                begin,
                end,
                expires: now + TASK_TTL_MS,
                snapshot,
                ..query
            };
            (s.cx.tasks.seal(&task)?, task)
        }
    };
    let max_pages = task.max_pages();
    let messages = if current <= max_pages {
        s.cx.runtime
            .read_segments(&live.brokers, stored, &task.page(current))
            .await?
    } else {
        Vec::new()
    };
    let mut budget = BodyBudget::page();
    let list: Vec<Value> = messages
        .iter()
        .map(|m| {
            let v = serde_json::to_value(view(&live.target, m, &mut budget)).unwrap_or(Value::Null);
            if source == Source::Dlq {
                crate::runtime::view::capitalised(v)
            } else {
                v
            }
        })
        .collect();
    let [task_k, max_k, page_k, data_k] = n.fields;
    let mut out = serde_json::Map::new();
    out.insert(task_k.into(), json!(id));
    out.insert(max_k.into(), json!(max_pages));
    out.insert(page_k.into(), json!(current));
    out.insert(data_k.into(), Value::Array(list));
    Ok(Reply::paged(
        Value::Object(out),
        crate::envelope::Page {
            current,
            size: task.page_size,
            // Every match, though only the first 50 pages can be read.
            total: task.snapshot.total(),
        },
    ))
}
