//! End-to-end: the console's `/json/*` API on the testbed, with the operator and real
//! brokers. Accounts come from `mq-console account create`; every call is a signed HTTP
//! request to a console pod (straight to a pod where the replica matters: the replay cache
//! is per replica, and the testbed's Service proxy balances round-robin).
//!
//! Covered here: signatures and their refusals, region and cluster lists, instances,
//! topics, groups and grants written as resources (and kubectl's resources read back),
//! tenancy (another tenant's things answer as missing; a sub-account needs its
//! permission), and the brokers enforcing what the API granted, with the real
//! `rocketmq-client-rust`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kube::api::ListParams;
use kube::{Api, Client};
use mq_console::client::SignedClient;
use mq_operator::crd::{MQEmpower, MQGroup, MQInstance, MQTopic};
use mq_testbed::Testbed;
use mq_testbed::console::{NewAccount, create_account, ready_urls};
use mq_testbed::operator::create;
use serde_json::{Value, json};

/// Tenant A's namespace, and tenant B's.
const NS_A: &str = "con-a";
const NS_B: &str = "con-b";
/// Bound on an instance or topic becoming ready.
const READY: Duration = Duration::from_secs(120);

/// One tenant's signed client of one console replica.
struct Caller {
    client: SignedClient,
}

impl Caller {
    fn new(url: &str, account: &NewAccount) -> Result<Self> {
        Ok(Self {
            client: SignedClient::new(url, &account.access_key, &account.secret_key)?,
        })
    }

    /// Calls `path`; the envelope, checked to carry its code as the HTTP status.
    async fn call(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let (status, envelope) = self.client.post(path, params).await?;
        ensure!(
            envelope["code"] == json!(status),
            "{path}: HTTP {status} but envelope code {}",
            envelope["code"]
        );
        for field in [
            "requestId",
            "dynamicCode",
            "dynamicMessage",
            "message",
            "success",
        ] {
            ensure!(
                envelope.get(field).is_some(),
                "{path}: no {field} in {envelope}"
            );
        }
        Ok(envelope)
    }

    /// Calls `path` expecting success; its `data`.
    async fn ok(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let envelope = self.call(path, params).await?;
        ensure!(
            envelope["success"] == true && envelope["code"] == 200,
            "{path} {params:?} failed: {envelope}"
        );
        Ok(envelope["data"].clone())
    }

    /// Calls `path` expecting the error `code` with HTTP `status`; its `dynamicMessage`.
    async fn refused(
        &self,
        path: &str,
        params: &[(&str, &str)],
        code: &str,
        status: u16,
    ) -> Result<String> {
        let envelope = self.call(path, params).await?;
        ensure!(
            envelope["dynamicCode"] == code
                && envelope["code"] == status
                && envelope["success"] == false,
            "{path} {params:?}: expected {code} ({status}), got {envelope}"
        );
        Ok(envelope["dynamicMessage"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }
}

/// The suite's tests share one operator on one testbed; one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The platform with the console, and its replicas' URLs.
async fn platform() -> Result<(&'static Testbed, Client, Vec<String>)> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    mq_testbed::operator::install(tb, &client, None).await?;
    let urls = ready_urls(tb, &client, Duration::from_secs(90)).await?;
    Ok((tb, client, urls))
}

/// Tenants A and B, A's sub-accounts (one may write topics), made with the CLI once.
struct Accounts {
    a: NewAccount,
    b: NewAccount,
    a_sub: NewAccount,
    a_writer: NewAccount,
}

static ACCOUNTS: tokio::sync::OnceCell<Accounts> = tokio::sync::OnceCell::const_new();

async fn accounts(tb: &'static Testbed, client: &Client) -> Result<&'static Accounts> {
    ACCOUNTS
        .get_or_try_init(|| async {
            tb.create_namespace(client, NS_A).await?;
            tb.create_namespace(client, NS_B).await?;
            let a = create_account(tb, &["--namespace", NS_A]).await?;
            let b = create_account(tb, &["--namespace", NS_B]).await?;
            let a_sub = create_account(tb, &["--parent-user-id", &a.user_id]).await?;
            let a_writer =
                create_account(tb, &["--parent-user-id", &a.user_id, "--allow-topic-write"])
                    .await?;
            // A namespace has one tenant; a sub-account works in its parent's namespace.
            let second = create_account(tb, &["--namespace", NS_A]).await;
            ensure!(
                format!("{second:?}").contains("already has a tenant"),
                "a second tenant of {NS_A}: {second:?}"
            );
            let elsewhere =
                create_account(tb, &["--parent-user-id", &a.user_id, "--namespace", NS_B]).await;
            ensure!(
                format!("{elsewhere:?}").contains("parent's namespace"),
                "a sub-account in another namespace: {elsewhere:?}"
            );
            anyhow::Ok(Accounts {
                a,
                b,
                a_sub,
                a_writer,
            })
        })
        .await
}

/// Waits until `check` (polled) yields a value.
async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what} (last error: {last})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn signatures_are_checked_and_refusals_change_nothing() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Runtime::new()?.block_on(async {
        let (tb, client, urls) = platform().await?;
        let accounts = accounts(tb, &client).await?;
        let a = Caller::new(&urls[0], &accounts.a)?;
        let regions = a.ok("/json/region/list", &[]).await?;
        ensure!(regions[0]["regionId"] == "mq-private", "{regions}");
        let clusters = a.ok("/json/cluster/list", &[]).await?;
        ensure!(
            clusters
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["cluster"] == "default")),
            "{clusters}"
        );
        a.refused(
            "/json/region/list",
            &[("_regionId", "cn-nowhere")],
            "BIZ_REGION_NOT_FOUND",
            404,
        )
        .await?;
        a.refused(
            "/json/instance/list",
            &[("a", "1"), ("a", "2")],
            "BIZ_FIELD_CHECK_INVALID",
            400,
        )
        .await?;
        a.refused("/json/nothing/here", &[], "API_NOT_FOUND", 404)
            .await?;

        // Wrong key, unknown key, stale clock, no signature: 403 and nothing written.
        let stranger = SignedClient::new(&urls[0], "MQAK_NOBODY", "x")?;
        let (status, body) = stranger.post("/json/instance/list", &[]).await?;
        ensure!(
            status == 403 && body["dynamicCode"] == "AUTH_ACCESSKEY_NOT_FOUND",
            "{body}"
        );
        let forger = SignedClient::new(&urls[0], &accounts.a.access_key, "not-the-secret")?;
        let create = [
            ("cluster", "default"),
            ("instanceName", "forged"),
            ("independentNaming", "true"),
            ("maxSendTps", "100"),
            ("maxReceiveTps", "100"),
        ];
        let (status, body) = forger.post("/json/instance/create", &create).await?;
        ensure!(
            status == 403 && body["dynamicCode"] == "AUTH_SIGNATURE_INVALID",
            "{body}"
        );
        let hour_ago = mq_console::server::now_ms() - 3_600_000;
        let stale = a.client.signed_form_at(&create, hour_ago);
        let (status, body) = raw_post(&a.client, "/json/instance/create", stale).await?;
        ensure!(
            status == 403 && body["dynamicCode"] == "AUTH_REQUEST_EXPIRED",
            "{body}"
        );
        let form = a.client.signed_form(&[]);
        let unsigned: String = form
            .split('&')
            .filter(|kv| !kv.starts_with("_signature="))
            .collect::<Vec<_>>()
            .join("&");
        let (status, body) = raw_post(&a.client, "/json/instance/list", unsigned).await?;
        ensure!(
            status == 403 && body["dynamicCode"] == "AUTH_SIGNATURE_INVALID",
            "{body}"
        );
        let instances: Api<MQInstance> = Api::namespaced(client.clone(), NS_A);
        ensure!(
            instances
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .all(|i| i.spec.instance_name != "forged"),
            "a forged request created an instance"
        );

        // The same request twice on one replica: the second is a replay. GET works too.
        let form = a.client.signed_form(&[]);
        let (status, _) = raw_post(&a.client, "/json/instance/list", form.clone()).await?;
        ensure!(status == 200, "first request refused");
        let (status, body) = raw_post(&a.client, "/json/instance/list", form).await?;
        ensure!(
            status == 403 && body["dynamicCode"] == "AUTH_REPLAYED",
            "{body}"
        );
        let (status, body) = a.client.get("/json/region/list", &[]).await?;
        ensure!(status == 200 && body["success"] == true, "GET: {body}");
        a.refused(
            "/json/vpcTunnel/tunnelSwitch",
            &[("tunnelType", "anyTunnel"), ("instanceId", "MQ_INST_NONE")],
            "BIZ_INSTANCE_NOT_FOUND",
            404,
        )
        .await?;
        // Bodies beyond 64 KiB are refused with an envelope, unread.
        let big = format!("x={}", "a".repeat(70_000));
        let (status, body) = raw_post(&a.client, "/json/instance/list", big).await?;
        ensure!(
            status == 400 && body["dynamicCode"] == "BIZ_FIELD_CHECK_INVALID",
            "{body}"
        );
        rotation(tb, &urls[0]).await?;
        anyhow::Ok(())
    })
}

/// `mq-console account list|rotate|delete`: a rotated key replaces the old one, a deleted
/// account is refused.
async fn rotation(tb: &'static Testbed, url: &str) -> Result<()> {
    let temp = create_account(tb, &["--namespace", "con-temp"]).await?;
    let listed = mq_testbed::console::account_cli(tb, &["list"]).await?;
    ensure!(
        listed.contains(&temp.user_id) && !listed.contains(&temp.secret_key),
        "account list: {listed}"
    );
    let old = Caller::new(url, &temp)?;
    until("the new account known", Duration::from_secs(20), || async {
        Ok((old.call("/json/instance/list", &[]).await?["success"] == true).then_some(()))
    })
    .await?;
    let out = mq_testbed::console::account_cli(tb, &["rotate", "--user-id", &temp.user_id]).await?;
    let new: NewAccount = serde_json::from_str(&out)?;
    ensure!(new.access_key != temp.access_key, "rotate kept the key");
    let fresh = Caller::new(url, &new)?;
    until(
        "the rotated key in force",
        Duration::from_secs(20),
        || async {
            let gone = old.call("/json/instance/list", &[]).await?["dynamicCode"]
                == "AUTH_ACCESSKEY_NOT_FOUND";
            Ok(
                (gone && fresh.call("/json/instance/list", &[]).await?["success"] == true)
                    .then_some(()),
            )
        },
    )
    .await?;
    mq_testbed::console::account_cli(tb, &["delete", "--user-id", &temp.user_id]).await?;
    until(
        "the deleted account refused",
        Duration::from_secs(20),
        || async {
            let r = fresh.call("/json/instance/list", &[]).await?;
            Ok((r["dynamicCode"] == "AUTH_ACCESSKEY_NOT_FOUND").then_some(()))
        },
    )
    .await
}

/// POSTs an already encoded form (to replay or tamper with one).
async fn raw_post(client: &SignedClient, path: &str, form: String) -> Result<(u16, Value)> {
    Ok(client.post_form(path, form).await?)
}

/// Creates an instance through the API and waits until it serves; its id and endpoint.
async fn serving_instance<F, Fut>(
    c: &Caller,
    name: &str,
    independent: bool,
    early: F,
) -> Result<(String, String)>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let independent = independent.to_string();
    let created = c
        .ok(
            "/json/instance/create",
            &[
                ("cluster", "default"),
                ("instanceName", name),
                ("independentNaming", &independent),
                ("maxSendTps", "5000"),
                ("maxReceiveTps", "5000"),
                ("topicCapacity", "3"),
                ("remark", "made by the console suite"),
            ],
        )
        .await?;
    let id = created["instanceId"]
        .as_str()
        .context("instanceId")?
        .to_owned();
    ensure!(
        created["status"] == 1,
        "a new instance is being created: {created}"
    );
    early(id.clone()).await?;
    let endpoint = until(&format!("instance {name} serving"), READY, || async {
        let info = c
            .ok("/json/instance/baseInfo", &[("instanceId", &id)])
            .await?;
        let endpoint = info["endpoints"]["tcpEndpoint"].as_str().map(str::to_owned);
        Ok((info["status"] == 0).then_some(endpoint).flatten())
    })
    .await?;
    Ok((id, endpoint))
}

/// `vpcTunnel/tunnelSwitch`: another tenant's switch answers as missing; `anyTunnel`
/// returns the external endpoint (the testbed's NodePorts answer on 127.0.0.1), which
/// `baseInfo` then shows; `singleTunnel` returns and shows the in-cluster one again.
async fn tunnel(a: &Caller, b: &Caller, id: &str, endpoint: &str) -> Result<()> {
    let switch = "/json/vpcTunnel/tunnelSwitch";
    let any = [("tunnelType", "anyTunnel"), ("instanceId", id)];
    b.refused(switch, &any, "BIZ_INSTANCE_NOT_FOUND", 404)
        .await?;
    let external = a.ok(switch, &any).await?;
    let external = external.as_str().context("the endpoint")?.to_owned();
    ensure!(
        external.starts_with("127.0.0.1:") && external != endpoint,
        "anyTunnel answered {external}"
    );
    let info = a
        .ok("/json/instance/baseInfo", &[("instanceId", id)])
        .await?;
    ensure!(
        info["endpoints"]["tcpEndpoint"] == external.as_str(),
        "{info}"
    );
    let again = a.ok(switch, &any).await?;
    ensure!(again == external.as_str(), "a repeated anyTunnel: {again}");
    let single = [("tunnelType", "singleTunnel"), ("instanceId", id)];
    let back = a.ok(switch, &single).await?;
    ensure!(
        back == endpoint,
        "singleTunnel answered {back}, not {endpoint}"
    );
    let info = a
        .ok("/json/instance/baseInfo", &[("instanceId", id)])
        .await?;
    ensure!(info["endpoints"]["tcpEndpoint"] == endpoint, "{info}");
    Ok(())
}

/// Waits until topic `topic` of `id` serves (status 0).
async fn topic_serving(c: &Caller, id: &str, topic: &str) -> Result<Value> {
    until(&format!("topic {topic} serving"), READY, || async {
        let t = c
            .ok("/json/topic/get", &[("instanceId", id), ("topic", topic)])
            .await?;
        Ok((t["status"] == 0).then_some(t))
    })
    .await
}

#[test]
fn resources_written_through_the_api_are_the_resources_kubectl_sees() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Runtime::new()?;
    let (tb, client, urls) = runtime.block_on(platform())?;
    let accounts = runtime.block_on(accounts(tb, &client))?;
    let (id, endpoint) = runtime.block_on(write_side(&client, &urls, accounts))?;
    runtime_reads(tb, &runtime, &client, &urls, accounts, &id, &endpoint)?;
    runtime.block_on(tenancy(&urls, accounts, &id))?;
    brokers_enforce_grants(&endpoint, &id, accounts)?;
    runtime.block_on(deletes(&client, &urls, accounts, &id))
}

/// Instance → topic → group → grant through the API; kubectl's resources read back.
async fn write_side(
    client: &Client,
    urls: &[String],
    accounts: &Accounts,
) -> Result<(String, String)> {
    let a = Caller::new(&urls[0], &accounts.a)?;
    let a2 = Caller::new(&urls[1], &accounts.a)?;
    let early = |id: String| {
        let a = &a;
        async move {
            // Before the brokers run, runtime reads say what is not ready.
            let group = [("instanceId", id.as_str()), ("groupId", "GID_EARLY")];
            a.ok("/json/group/create", &group).await?;
            let why = a
                .refused("/json/consumer/accumulate", &group, "ONS_INVOKE_ERROR", 503)
                .await?;
            ensure!(
                why.contains(&id) && (why.contains("not running") || why.contains("not ready")),
                "the refusal says what is not ready: {why}"
            );
            a.ok("/json/group/delete", &group).await?;
            a.refused(
                "/json/group/delete",
                &group,
                "BIZ_SUBSCRIPTION_NOT_FOUND",
                404,
            )
            .await?;
            Ok(())
        }
    };
    let (id, endpoint) = serving_instance(&a, "orders", true, early).await?;
    tunnel(&a, &Caller::new(&urls[0], &accounts.b)?, &id, &endpoint).await?;
    let again = [
        ("cluster", "default"),
        ("instanceName", "orders"),
        ("independentNaming", "true"),
        ("maxSendTps", "10"),
        ("maxReceiveTps", "10"),
    ];
    a.refused("/json/instance/create", &again, "BIZ_INSTANCE_EXISTED", 409)
        .await?;
    let mut bad = again;
    bad[1].1 = "ab";
    let why = a
        .refused(
            "/json/instance/create",
            &bad,
            "BIZ_FIELD_CHECK_INVALID",
            400,
        )
        .await?;
    ensure!(why.contains("instanceName"), "{why}");
    bad[1].1 = "elsewhere";
    bad[0].1 = "no-such-cluster";
    let why = a
        .refused(
            "/json/instance/create",
            &bad,
            "BIZ_FIELD_CHECK_INVALID",
            400,
        )
        .await?;
    ensure!(why.contains("cluster"), "{why}");
    let list = a2.ok("/json/instance/list", &[]).await?;
    ensure!(
        list.as_array().is_some_and(|l| l
            .iter()
            .any(|i| i["instanceId"] == id.as_str() && i["namespaceRulesType"] == true)),
        "instance/list on the other replica: {list}"
    );
    a.ok(
        "/json/instance/update",
        &[("instanceId", &id), ("remark", "renamed remark")],
    )
    .await?;
    let info = a2
        .ok("/json/instance/baseInfo", &[("instanceId", &id)])
        .await?;
    ensure!(
        info["remark"] == "renamed remark" && info["instanceName"] == "orders",
        "{info}"
    );
    ensure!(
        info["Endpoints"] == info["endpoints"] && info["topicCapacity"] == 3,
        "{info}"
    );

    // Topics: create (read back on the same replica at once), validation, capacity.
    a.ok(
        "/json/topic/create",
        &[
            ("instanceId", &id),
            ("topic", "ORDERS"),
            ("orderType", "0"),
            ("remark", "orders"),
        ],
    )
    .await?;
    let t = a
        .ok(
            "/json/topic/get",
            &[("instanceId", &id), ("topic", "ORDERS")],
        )
        .await?;
    ensure!(
        t["owner"] == accounts.a.user_id.as_str() && t["relation"] == 1,
        "{t}"
    );
    ensure!([0, 1].contains(&t["status"].as_i64().unwrap_or(-1)), "{t}");
    a.refused(
        "/json/topic/create",
        &[("instanceId", &id), ("topic", "ORDERS"), ("orderType", "0")],
        "BIZ_TOPIC_EXISTED",
        409,
    )
    .await?;
    a.refused(
        "/json/topic/create",
        &[("instanceId", &id), ("topic", "GID_X"), ("orderType", "0")],
        "BIZ_FIELD_CHECK_INVALID",
        400,
    )
    .await?;
    a.refused(
        "/json/topic/create",
        &[("instanceId", &id), ("topic", "ODD"), ("orderType", "3")],
        "BIZ_FIELD_CHECK_INVALID",
        400,
    )
    .await?;
    topic_serving(&a, &id, "ORDERS").await?;
    let object = mq_operator::domain::names::console_object_name("ORDERS", &[&id, "ORDERS"]);
    let notes = until(
        "the audit Event of the topic",
        Duration::from_secs(20),
        || async {
            let notes = mq_testbed::operator::events(client, NS_A, "MQTopic", &object, "Created")
                .await
                .map_err(anyhow::Error::msg)?;
            Ok((!notes.is_empty()).then_some(notes))
        },
    )
    .await?;
    ensure!(
        format!("{notes:?}").contains(&accounts.a.user_id),
        "the audit Event does not name the user: {notes:?}"
    );
    // kubectl's topic (no owner) belongs to the namespace's tenant and is listed.
    let instance_obj = Api::<MQInstance>::namespaced(client.clone(), NS_A)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|i| i.effective_instance_id() == id)
        .context("the instance's resource")?;
    let obj_name = instance_obj.metadata.name.clone().unwrap_or_default();
    create::<MQTopic>(
        client,
        NS_A,
        mq_testbed::operator::topic("by-kubectl", &obj_name, "AUDIT"),
    )
    .await?;
    let page = until(
        "kubectl's topic listed",
        Duration::from_secs(20),
        || async {
            let page = a
                .call(
                    "/json/topic/listInPage",
                    &[("instanceId", &id), ("pageSize", "1"), ("currentPage", "2")],
                )
                .await?;
            Ok((page["total"] == 2).then_some(page))
        },
    )
    .await?;
    ensure!(page["pageSize"] == 1 && page["currentPage"] == 2, "{page}");
    ensure!(
        page["data"][0]["topic"] == "ORDERS",
        "pages by name: {page}"
    );
    let audit = a
        .ok(
            "/json/topic/get",
            &[("instanceId", &id), ("topic", "AUDIT")],
        )
        .await?;
    ensure!(
        audit["owner"] == accounts.a.user_id.as_str(),
        "kubectl's topic belongs to the tenant: {audit}"
    );
    let filtered = a
        .call(
            "/json/topic/listInPage",
            &[("instanceId", &id), ("topic", "RDER")],
        )
        .await?;
    ensure!(
        filtered["total"] == 1 && filtered["data"][0]["topic"] == "ORDERS",
        "{filtered}"
    );
    let names = a
        .ok("/json/topic/listNames", &[("instanceId", &id)])
        .await?;
    ensure!(names == json!(["AUDIT", "ORDERS"]), "{names}");
    a.ok(
        "/json/topic/create",
        &[("instanceId", &id), ("topic", "THIRD"), ("orderType", "5")],
    )
    .await?;
    a.refused(
        "/json/topic/create",
        &[("instanceId", &id), ("topic", "FOURTH"), ("orderType", "0")],
        "TOPIC_CAPACITY_EXCEEDED",
        409,
    )
    .await?;
    a.ok(
        "/json/topic/update",
        &[("instanceId", &id), ("topic", "ORDERS"), ("perm", "4")],
    )
    .await?;
    let t = a
        .ok(
            "/json/topic/get",
            &[("instanceId", &id), ("topic", "ORDERS")],
        )
        .await?;
    ensure!(t["perm"] == 4, "{t}");
    a.ok(
        "/json/topic/update",
        &[("instanceId", &id), ("topic", "ORDERS"), ("perm", "6")],
    )
    .await?;
    // Serving again once the brokers have the write permission back.
    topic_serving(&a, &id, "ORDERS").await?;
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), NS_A);
    let orders = topics
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|t| t.spec.topic == "ORDERS");
    ensure!(
        orders.is_some_and(
            |t| t.spec.owner.as_deref() == Some(accounts.a.user_id.as_str())
                && t.spec.perm.code() == 6
        ),
        "kubectl sees no ORDERS owned by A with perm 6"
    );

    // Groups: create, exists, list, consumerUpdate.
    let g = a
        .ok(
            "/json/group/create",
            &[
                ("instanceId", &id),
                ("groupId", "GID_ORDERS"),
                ("remark", "r"),
            ],
        )
        .await?;
    ensure!(g == json!({"remark": "r"}), "{g}");
    a.refused(
        "/json/group/create",
        &[("instanceId", &id), ("groupId", "GID_ORDERS")],
        "BIZ_SUBSCRIPTION_EXISTED",
        409,
    )
    .await?;
    a.refused(
        "/json/group/create",
        &[("instanceId", &id), ("groupId", "XID_ORDERS")],
        "BIZ_FIELD_CHECK_INVALID",
        400,
    )
    .await?;
    a.ok(
        "/json/group/consumerUpdate",
        &[
            ("instanceId", &id),
            ("groupId", "GID_ORDERS"),
            ("readEnable", "false"),
        ],
    )
    .await?;
    let groups = a2.ok("/json/group/list", &[("instanceId", &id)]).await?;
    ensure!(
        groups[0]["groupId"] == "GID_ORDERS" && groups[0]["readEnable"] == false,
        "{groups}"
    );
    a.ok(
        "/json/group/consumerUpdate",
        &[
            ("instanceId", &id),
            ("groupId", "GID_ORDERS"),
            ("readEnable", "true"),
        ],
    )
    .await?;

    // Grants: B may publish ORDERS.
    let b_user = accounts.b.user_id.as_str();
    let grant = [
        ("instanceId", id.as_str()),
        ("empowerUser", b_user),
        ("topic", "ORDERS"),
        ("relation", "2"),
    ];
    a.ok("/json/empower/create", &grant).await?;
    a.refused("/json/empower/create", &grant, "EMPOWER_EXIST_ERROR", 409)
        .await?;
    let listed = a
        .ok(
            "/json/empower/list",
            &[
                ("instanceId", &id),
                ("empowerUser", b_user),
                ("topic", "ORDERS"),
            ],
        )
        .await?;
    ensure!(
        listed
            == json!([{"topic": "ORDERS", "empowerUser": b_user.parse::<i64>()?, "relation": 2, "subAccount": false}]),
        "{listed}"
    );
    let grants: Api<MQEmpower> = Api::namespaced(client.clone(), NS_A);
    ensure!(
        grants.list(&ListParams::default()).await?.items.len() == 1,
        "one MQEmpower"
    );
    topic_serving(&a, &id, "AUDIT").await?;
    Ok((id, endpoint))
}

/// Tenant B and A's sub-accounts get what the rules say and no more.
async fn tenancy(urls: &[String], accounts: &Accounts, id: &str) -> Result<()> {
    let b = Caller::new(&urls[1], &accounts.b)?;
    let sub = Caller::new(&urls[0], &accounts.a_sub)?;
    let writer = Caller::new(&urls[0], &accounts.a_writer)?;
    // B sees A's instance only through its grant, and only the granted topic.
    let names = b.ok("/json/topic/listNames", &[("instanceId", id)]).await?;
    ensure!(names == json!(["ORDERS"]), "B sees {names}");
    let t = b
        .ok(
            "/json/topic/get",
            &[("instanceId", id), ("topic", "ORDERS")],
        )
        .await?;
    ensure!(t["relation"] == 2 && t["relationName"] == "PUBLISH", "{t}");
    b.refused(
        "/json/topic/get",
        &[("instanceId", id), ("topic", "AUDIT")],
        "BIZ_TOPIC_NOT_FOUND",
        404,
    )
    .await?;
    b.refused(
        "/json/topic/update",
        &[("instanceId", id), ("topic", "ORDERS"), ("perm", "2")],
        "AUTH_PERMISSION_DENIED",
        403,
    )
    .await?;
    b.refused(
        "/json/topic/delete",
        &[("instanceId", id), ("topic", "AUDIT")],
        "BIZ_TOPIC_NOT_FOUND",
        404,
    )
    .await?;
    b.refused(
        "/json/topic/create",
        &[("instanceId", id), ("topic", "B_TOPIC"), ("orderType", "0")],
        "AUTH_PERMISSION_DENIED",
        403,
    )
    .await?;
    let a_user = accounts.a.user_id.as_str();
    b.refused(
        "/json/empower/create",
        &[
            ("instanceId", id),
            ("empowerUser", a_user),
            ("topic", "ORDERS"),
            ("relation", "6"),
        ],
        "EMPOWER_OWNER_CHECK_ERROR",
        403,
    )
    .await?;
    b.refused(
        "/json/empower/create",
        &[
            ("instanceId", id),
            ("empowerUser", a_user),
            ("topic", "AUDIT"),
            ("relation", "6"),
        ],
        "BIZ_TOPIC_NOT_FOUND",
        404,
    )
    .await?;
    b.refused(
        "/json/instance/delete",
        &[("instanceId", id)],
        "AUTH_PERMISSION_DENIED",
        403,
    )
    .await?;
    b.refused(
        "/json/group/list",
        &[("instanceId", "MQ_INST_NOPE")],
        "BIZ_INSTANCE_NOT_FOUND",
        404,
    )
    .await?;
    let groups = b.ok("/json/group/list", &[("instanceId", id)]).await?;
    ensure!(groups == json!([]), "B sees A's groups: {groups}");
    // B's own group in A's instance: B owns it, A (the namespace's tenant) sees it too.
    b.ok(
        "/json/group/create",
        &[("instanceId", id), ("groupId", "GID_B_READER")],
    )
    .await?;
    let a = Caller::new(&urls[0], &accounts.a)?;
    let all = a.ok("/json/group/list", &[("instanceId", id)]).await?;
    ensure!(
        all.as_array().is_some_and(|g| g
            .iter()
            .any(|g| g["groupId"] == "GID_B_READER" && g["owner"] == accounts.b.user_id.as_str())),
        "{all}"
    );
    a.refused(
        "/json/group/create",
        &[("instanceId", id), ("groupId", "GID_B_READER")],
        "BIZ_SUBSCRIPTION_EXISTED",
        409,
    )
    .await?;
    sub.refused(
        "/json/group/create",
        &[("instanceId", id), ("groupId", "GID_B_READER")],
        "BIZ_CONSUMER_ID_BELONG_TO_OTHER_USER",
        403,
    )
    .await?;
    // A grants its sub-account AUDIT by createBySub; the sub sees it, then loses it.
    let sub_user = accounts.a_sub.user_id.as_str();
    let by_sub = [
        ("instanceId", id),
        ("empowerUser", sub_user),
        ("topic", "AUDIT"),
        ("relation", "4"),
    ];
    a.refused(
        "/json/empower/create",
        &by_sub,
        "BIZ_FIELD_CHECK_INVALID",
        400,
    )
    .await?;
    a.ok("/json/empower/createBySub", &by_sub).await?;
    let names = sub
        .ok("/json/topic/listNames", &[("instanceId", id)])
        .await?;
    ensure!(
        names == json!(["AUDIT"]),
        "the sub-account's grant: {names}"
    );
    let forget = [
        ("instanceId", id),
        ("empowerUser", sub_user),
        ("topic", "AUDIT"),
    ];
    a.ok("/json/empower/delete", &forget).await?;
    a.refused("/json/empower/delete", &forget, "EMPOWER_NOT_FOUND", 404)
        .await?;
    // A sub-account without --allow-topic-write cannot create a topic; one with it can.
    sub.refused(
        "/json/topic/create",
        &[
            ("instanceId", id),
            ("topic", "SUB_TOPIC"),
            ("orderType", "0"),
        ],
        "AUTH_PERMISSION_DENIED",
        403,
    )
    .await?;
    sub.refused(
        "/json/instance/create",
        &[
            ("cluster", "default"),
            ("instanceName", "subs"),
            ("independentNaming", "true"),
            ("maxSendTps", "1"),
            ("maxReceiveTps", "1"),
        ],
        "AUTH_PERMISSION_DENIED",
        403,
    )
    .await?;
    let names = sub
        .ok("/json/topic/listNames", &[("instanceId", id)])
        .await?;
    ensure!(
        names == json!([]),
        "a sub-account sees topics it does not own: {names}"
    );
    writer
        .refused(
            "/json/topic/create",
            &[
                ("instanceId", id),
                ("topic", "SUB_TOPIC"),
                ("orderType", "0"),
            ],
            "TOPIC_CAPACITY_EXCEEDED",
            409,
        )
        .await?;
    // B's namespace is B's: its instance list holds nothing of A's.
    let list = b.ok("/json/instance/list", &[]).await?;
    ensure!(
        list.as_array()
            .is_some_and(|l| l.iter().all(|i| i["instanceId"] == id)),
        "{list}"
    );
    Ok(())
}

fn hook(keys: &NewAccount) -> Arc<rocketmq_client_rust::AclClientRPCHook> {
    Arc::new(rocketmq_client_rust::AclClientRPCHook::new(
        rocketmq_client_rust::SessionCredentials::with_keys(
            keys.access_key.clone(),
            keys.secret_key.clone(),
        ),
    ))
}

async fn sends(p: &rocketmq_client_rust::DefaultMQProducer, topic: &str) -> bool {
    matches!(
        p.send(support::message(topic, "console-suite")).await,
        Ok(Some(_))
    )
}

/// The brokers enforce the API's grant: B publishes ORDERS, and nothing else.
fn brokers_enforce_grants(endpoint: &str, id: &str, accounts: &Accounts) -> Result<()> {
    use rocketmq_client_rust::DefaultMQProducer;
    let (endpoint, id, b, a) = (
        endpoint.to_owned(),
        id.to_owned(),
        accounts.b.clone(),
        accounts.a.clone(),
    );
    let (granted, other, owner) = support::Client::new().run(|rt| async move {
        let config = |name: &str| rocketmq_client_rust::ClientConfig {
            namespace: Some(id.clone().into()),
            ..support::client_config(&endpoint, name)
        };
        let producer = |keys: NewAccount, name: &'static str| {
            let rt = rt.clone();
            let config = config(name);
            async move {
                let mut p = DefaultMQProducer::builder(rt)
                    .client_config(config)
                    .producer_group("GID_CONSOLE_SUITE")
                    .rpc_hook(hook(&keys))
                    .build();
                p.start().await.expect("producer starts");
                p
            }
        };
        let mut pb = producer(b, "console-b").await;
        let mut pa = producer(a, "console-a").await;
        // The ACL reloads within seconds of the grant; poll (bounded) for the first send.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut granted = sends(&pb, "ORDERS").await;
        while !granted && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            granted = sends(&pb, "ORDERS").await;
        }
        let other = sends(&pb, "AUDIT").await;
        let owner = sends(&pa, "AUDIT").await;
        pb.shutdown().await;
        pa.shutdown().await;
        (granted, other, owner)
    });
    ensure!(granted, "B could not publish the topic A granted it");
    ensure!(!other, "B published a topic it was not granted");
    ensure!(owner, "A could not publish its own topic");
    Ok(())
}

/// Deletes: an instance with topics is refused; a topic deleted through the API is gone
/// from kubectl and the brokers, with its grants.
async fn deletes(client: &Client, urls: &[String], accounts: &Accounts, id: &str) -> Result<()> {
    let a = Caller::new(&urls[1], &accounts.a)?;
    a.refused(
        "/json/instance/delete",
        &[("instanceId", id)],
        "INSTANCE_NOT_EMPTY",
        409,
    )
    .await?;
    a.ok(
        "/json/topic/delete",
        &[("instanceId", id), ("topic", "ORDERS")],
    )
    .await?;
    let t = a
        .call(
            "/json/topic/get",
            &[("instanceId", id), ("topic", "ORDERS")],
        )
        .await?;
    ensure!(
        t["dynamicCode"] == "BIZ_TOPIC_NOT_FOUND" || t["data"]["status"] == 2,
        "{t}"
    );
    let grants: Api<MQEmpower> = Api::namespaced(client.clone(), NS_A);
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), NS_A);
    until("ORDERS and its grant gone from kubectl", READY, || async {
        let left_t = topics
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|t| t.spec.topic == "ORDERS");
        let left_g = !grants.list(&ListParams::default()).await?.items.is_empty();
        Ok((!left_t && !left_g).then_some(()))
    })
    .await?;
    let admin = mq_testbed::operator::instance_admin_key(client, id).await?;
    for ordinal in 0..2 {
        let (_, ip) = mq_testbed::operator::server_pod(client, id, "broker", ordinal)
            .await
            .map_err(anyhow::Error::msg)?;
        let broker =
            mq_broker::client::AdminClient::connect(&format!("{ip}:10911"), Duration::from_secs(5))
                .await?
                .with_credentials(admin.clone());
        until("ORDERS gone from the brokers", READY, || async {
            let names: Vec<String> = broker
                .topics()
                .await?
                .into_iter()
                .map(|t| t.topic_name)
                .collect();
            ensure!(
                names.iter().any(|n| n.ends_with("AUDIT")),
                "AUDIT is not on broker-{ordinal}: {names:?}"
            );
            Ok((!names
                .iter()
                .any(|n| n.ends_with("%ORDERS") || n == "ORDERS"))
            .then_some(()))
        })
        .await?;
    }
    // Emptied through the API (kubectl's topic too: the tenant owns it), the instance goes.
    for topic in ["AUDIT", "THIRD"] {
        a.ok(
            "/json/topic/delete",
            &[("instanceId", id), ("topic", topic)],
        )
        .await?;
    }
    for group in ["GID_ORDERS", "GID_B_READER", "GID_DLQ"] {
        a.ok(
            "/json/group/delete",
            &[("instanceId", id), ("groupId", group)],
        )
        .await?;
    }
    let groups: Api<MQGroup> = Api::namespaced(client.clone(), NS_A);
    until("the instance's topics and groups gone", READY, || async {
        let t = topics.list(&ListParams::default()).await?.items.len();
        let g = groups.list(&ListParams::default()).await?.items.len();
        Ok((t + g == 0).then_some(()))
    })
    .await?;
    a.ok("/json/instance/delete", &[("instanceId", id)]).await?;
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), NS_A);
    until("the instance gone from kubectl", READY, || async {
        let left = instances.list(&ListParams::default()).await?.items;
        Ok(left
            .iter()
            .all(|i| i.effective_instance_id() != id)
            .then_some(()))
    })
    .await?;
    a.refused(
        "/json/instance/baseInfo",
        &[("instanceId", id)],
        "BIZ_INSTANCE_NOT_FOUND",
        404,
    )
    .await?;
    Ok(())
}

/// Sends `m`; while the brokers refuse it (their ACL file reloads a few seconds after
/// the topic's Secret changes), again, for at most 60 s. The message id.
async fn send_when_allowed(
    producer: &rocketmq_client_rust::DefaultMQProducer,
    m: rocketmq_model::common::message::message_single::Message,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match producer.send(m.clone()).await {
            Ok(Some(sent)) => return sent.msg_id.expect("a message id").to_string(),
            other => {
                let code = other.as_ref().err().and_then(|e| e.broker_response_code());
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "send refused for 60 s (broker code {code:?}): {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// A client config of instance `id` (namespaced) at `endpoint`.
fn namespaced(endpoint: &str, id: &str, name: &str) -> rocketmq_client_rust::ClientConfig {
    rocketmq_client_rust::ClientConfig {
        namespace: Some(id.to_owned().into()),
        ..support::client_config(endpoint, name)
    }
}

/// What the real client did, as the runtime endpoints report it: A sends ten messages
/// with keys, a consumer of GID_ORDERS takes them, a consumer of GID_DLQ (kubectl's, with
/// `maxReconsumeTimes: 0`) fails a poison message into its dead-letter queue.
fn runtime_reads(
    tb: &'static Testbed,
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    urls: &[String],
    accounts: &Accounts,
    id: &str,
    endpoint: &str,
) -> Result<()> {
    use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer};
    use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
    let a = Caller::new(&urls[0], &accounts.a)?;
    let a2 = Caller::new(&urls[1], &accounts.a)?;
    runtime.block_on(async {
        let instance = Api::<MQInstance>::namespaced(client.clone(), NS_A)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|i| i.effective_instance_id() == id)
            .context("the instance's resource")?;
        let mut group = mq_testbed::operator::group(
            "gid-dlq",
            &instance.metadata.name.unwrap_or_default(),
            "GID_DLQ",
        );
        group["spec"]["maxReconsumeTimes"] = json!(0);
        create::<MQGroup>(client, NS_A, group).await?;
        until("GID_DLQ serving", READY, || async {
            let groups = a
                .ok(
                    "/json/group/list",
                    &[("instanceId", id), ("groupId", "GID_DLQ")],
                )
                .await?;
            Ok((groups[0]["status"] == 0).then_some(()))
        })
        .await
    })?;
    let begin = mq_console::server::now_ms() - 1000;
    let (ep, id_s, keys) = (endpoint.to_owned(), id.to_owned(), accounts.a.clone());
    let ids: Vec<String> = support::Client::new().run(|rt| async move {
        let mut producer = DefaultMQProducer::builder(rt)
            .client_config(namespaced(&ep, &id_s, "console-reads"))
            .producer_group("GID_CONSOLE_READS")
            .rpc_hook(hook(&keys))
            .build();
        producer.start().await.expect("producer starts");
        let mut ids = Vec::new();
        for i in 0..10 {
            let m = rocketmq_model::common::message::message_single::Message::builder()
                .topic("ORDERS")
                .tags("T")
                .keys(vec![format!("order-{i}")])
                .body_slice(format!("order-{i}").as_bytes())
                .build_unchecked();
            ids.push(send_when_allowed(&producer, m).await);
        }
        producer.shutdown().await;
        ids
    });
    let inst = ("instanceId", id);
    runtime.block_on(async {
        let offline = a
            .ok(
                "/json/consumer/accumulate",
                &[inst, ("groupId", "GID_ORDERS")],
            )
            .await?;
        ensure!(offline["onLine"] == false, "{offline}");
        a.ok(
            "/json/consumer/getConnection",
            &[inst, ("groupId", "GID_ORDERS")],
        )
        .await
        .and_then(|c| {
            ensure!(c == json!([]), "{c}");
            Ok(())
        })?;
        let one = a
            .ok(
                "/json/message/getById",
                &[inst, ("topic", "ORDERS"), ("msgId", &ids[3])],
            )
            .await?;
        ensure!(
            one["body"] == "order-3" && one["bodyEncoding"] == "text" && one["topic"] == "ORDERS",
            "{one}"
        );
        a.refused(
            "/json/message/getById",
            &[
                inst,
                ("topic", "ORDERS"),
                ("msgId", "0A0000000000000000000000"),
            ],
            "BIZ_NO_MESSAGE",
            404,
        )
        .await?;
        let by_key = a
            .ok(
                "/json/message/getByKey",
                &[inst, ("topic", "ORDERS"), ("key", "order-4")],
            )
            .await?;
        ensure!(
            by_key.as_array().map(Vec::len) == Some(1) && by_key[0]["body"] == "order-4",
            "{by_key}"
        );
        let none = a
            .ok(
                "/json/message/getByKey",
                &[inst, ("topic", "ORDERS"), ("key", "nothing")],
            )
            .await?;
        ensure!(none == json!([]), "{none}");
        // Pages: the task made on one replica is read on the other, stable.
        let (from, to) = (
            begin.to_string(),
            (mq_console::server::now_ms() + 60_000).to_string(),
        );
        let window = [
            inst,
            ("topic", "ORDERS"),
            ("beginTime", from.as_str()),
            ("endTime", to.as_str()),
            ("pageSize", "5"),
        ];
        let mut first = window.to_vec();
        first.push(("currentPage", "1"));
        let p1 = a.ok("/json/message/getByPagedTopic", &first).await?;
        let task = p1["taskId"].as_str().context("taskId")?.to_owned();
        ensure!(
            p1["maxPageCount"] == 2 && p1["data"].as_array().map(Vec::len) == Some(5),
            "{p1}"
        );
        let mut second = window.to_vec();
        second.extend([("currentPage", "2"), ("taskId", task.as_str())]);
        let p2 = a2.ok("/json/message/getByPagedTopic", &second).await?;
        let again = a.ok("/json/message/getByPagedTopic", &second).await?;
        ensure!(
            p2["data"] == again["data"],
            "page 2 differs between replicas"
        );
        let mut bodies: Vec<String> = [&p1, &p2]
            .iter()
            .flat_map(|p| p["data"].as_array().cloned().unwrap_or_default())
            .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
            .collect();
        bodies.sort();
        ensure!(
            bodies == (0..10).map(|i| format!("order-{i}")).collect::<Vec<_>>(),
            "pages hold {bodies:?}"
        );
        let mut forged = second.clone();
        let bad = format!("{task}x");
        forged[6] = ("taskId", bad.as_str());
        a.refused(
            "/json/message/getByPagedTopic",
            &forged,
            "BIZ_FIELD_CHECK_INVALID",
            400,
        )
        .await?;
        anyhow::Ok(())
    })?;

    // Consumers: GID_ORDERS takes everything; GID_DLQ fails the poison.
    let orders = Arc::new(Mutex::new(Vec::<String>::new()));
    let dlq = support::FailPoison::default();
    let (endpoint, id_s, keys) = (endpoint.to_owned(), id.to_owned(), accounts.a.clone());
    let (orders2, dlq2) = (orders.clone(), dlq.clone());
    let (urls0, urls1, a_keys, ids0) = (
        urls[0].clone(),
        urls[1].clone(),
        accounts.a.clone(),
        ids[0].clone(),
    );
    let begin_s = begin.to_string();
    let outcome: Result<()> = support::Client::new().run(|rt| async move {
        let a = Caller::new(&urls0, &a_keys)?;
        let a2 = Caller::new(&urls1, &a_keys)?;
        let consumer = |group: &str| {
            DefaultMQPushConsumer::builder(rt.clone())
                .client_config(namespaced(&endpoint, &id_s, group))
                .consumer_group(group.to_string())
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .max_reconsume_times(0)
                .consume_thread_min(2)
                .consume_thread_max(2)
                .rpc_hook(Some(hook(&keys)))
                .build()
        };
        let mut c_orders = consumer("GID_ORDERS");
        c_orders.subscribe("ORDERS", "*").await.expect("subscribe");
        c_orders.register_message_listener_concurrently(support::Collect(orders2.clone()));
        c_orders.start().await.expect("consumer starts");
        let mut c_dlq = consumer("GID_DLQ");
        c_dlq.subscribe("ORDERS", "*").await.expect("subscribe");
        c_dlq.register_message_listener_concurrently(dlq2.clone());
        c_dlq.start().await.expect("consumer starts");
        support::eventually("GID_ORDERS took the ten", Duration::from_secs(60), || {
            orders2.lock().map(|o| o.len() >= 10).unwrap_or(false)
        })
        .await;
        let inst = ("instanceId", id_s.as_str());
        let group = ("groupId", "GID_ORDERS");
        let acc = until("GID_ORDERS caught up", Duration::from_secs(30), || async {
            let acc = a
                .ok(
                    "/json/consumer/accumulate",
                    &[inst, group, ("detail", "true")],
                )
                .await?;
            Ok((acc["onLine"] == true && acc["totalDiff"] == 0).then_some(acc))
        })
        .await?;
        ensure!(acc["DetailInTopicList"][0]["topic"] == "ORDERS", "{acc}");
        let st = a2
            .ok(
                "/json/consumer/status",
                &[inst, group, ("detail", "true"), ("needJstack", "true")],
            )
            .await?;
        let info = &st["ConsumerConnectionInfoList"][0];
        ensure!(
            st["online"] == true && info["consumeType"] == "PUSH",
            "{st}"
        );
        ensure!(
            info.get("runningInfoError").is_none(),
            "running info: {info}"
        );
        ensure!(info["SubscriptionSet"][0]["topic"] == "ORDERS", "{info}");
        let conns = a.ok("/json/consumer/getConnection", &[inst, group]).await?;
        ensure!(
            conns.as_array().map(Vec::len) == Some(1) && conns[0]["clientId"].is_string(),
            "{conns}"
        );
        let span = a
            .ok(
                "/json/consumer/timespan",
                &[inst, group, ("topic", "ORDERS")],
            )
            .await?;
        let (min, max, consumed) = (
            span["minTimeStamp"].as_i64(),
            span["maxTimeStamp"].as_i64(),
            span["consumeTimeStamp"].as_i64(),
        );
        ensure!(
            matches!((min, max, consumed), (Some(lo), Some(hi), Some(c)) if lo <= hi && c >= lo),
            "{span}"
        );
        let sub = a.ok("/json/group/subDetail", &[inst, group]).await?;
        ensure!(
            sub["online"] == true
                && sub["SubscriptionDataList"] == json!([{"topic": "ORDERS", "subString": "*"}]),
            "{sub}"
        );
        let tsub = a
            .ok("/json/topic/subDetail", &[inst, ("topic", "ORDERS")])
            .await?;
        let listed = tsub["SubscriptionDataList"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ensure!(
            listed
                .iter()
                .any(|s| s["groupId"] == "GID_ORDERS" && s["messageModel"] == "CLUSTERING"),
            "{tsub}"
        );
        let trace = a
            .ok(
                "/json/message/trace",
                &[inst, ("topic", "ORDERS"), ("msgId", &ids0)],
            )
            .await?;
        let mine: Vec<&Value> = trace
            .as_array()
            .map(|t| {
                t.iter()
                    .filter(|t| t["consumerGroup"] == "GID_ORDERS")
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            mine.len() == 1 && mine[0]["trackType"] == "CONSUMED",
            "{trace}"
        );
        // Trends count the ten (and the grant test's sends come later).
        let to = (mq_console::server::now_ms() + 60_000).to_string();
        let window = [
            inst,
            ("topic", "ORDERS"),
            ("beginTime", begin_s.as_str()),
            ("endTime", to.as_str()),
            ("period", "1"),
            ("type", "0"),
        ];
        let sum = |v: &Value| {
            v["records"]
                .as_array()
                .map(|r| r.iter().filter_map(|p| p["y"].as_f64()).sum::<f64>())
                .unwrap_or(0.0)
        };
        let input = a.ok("/json/trend/topicInputTps", &window).await?;
        ensure!(sum(&input) >= 10.0, "topicInputTps: {input}");
        let mut out_window = window.to_vec();
        out_window.push(group);
        let output = until(
            "groupOutputTps counts the ten",
            Duration::from_secs(30),
            || async {
                let output = a.ok("/json/trend/groupOutputTps", &out_window).await?;
                Ok((sum(&output) >= 10.0).then_some(output))
            },
        )
        .await?;
        let _ = output;

        // The poison: dead-lettered for GID_DLQ, found, paged, resent.
        let mut producer = DefaultMQProducer::builder(rt.clone())
            .client_config(namespaced(&endpoint, &id_s, "console-poison"))
            .producer_group("GID_CONSOLE_READS")
            .rpc_hook(hook(&keys))
            .build();
        producer.start().await.expect("producer starts");
        let poison = send_when_allowed(&producer, support::message("ORDERS", "poison")).await;
        producer.shutdown().await;
        let dlq_id = [
            ("InstanceId", id_s.as_str()),
            ("GroupId", "GID_DLQ"),
            ("MsgId", poison.as_str()),
        ];
        let dead = until(
            "the poison in GID_DLQ's dead-letter queue",
            Duration::from_secs(60),
            || async {
                let r = a.call("/json/message/getByIdInDLQ", &dlq_id).await?;
                Ok((r["success"] == true).then(|| r["data"].clone()))
            },
        )
        .await?;
        ensure!(
            dead["Body"] == "poison" && dead["MsgId"] == poison.as_str(),
            "{dead}"
        );
        let now = (mq_console::server::now_ms() + 1000).to_string();
        let dlq_page = [
            ("InstanceId", id_s.as_str()),
            ("GroupId", "GID_DLQ"),
            ("BeginTime", begin_s.as_str()),
            ("EndTime", now.as_str()),
            ("CurrentPage", "1"),
        ];
        let page = a2.ok("/json/message/getByPagedDLQ", &dlq_page).await?;
        ensure!(
            page["Data"][0]["Body"] == "poison" && page["TaskId"].is_string(),
            "{page}"
        );
        a.ok("/json/message/resendByIdInDLQ", &dlq_id).await?;
        support::eventually(
            "the poison delivered to GID_DLQ again",
            Duration::from_secs(60),
            || dlq2.count("poison") >= 2,
        )
        .await;

        // Reset GID_ORDERS to before the first send: the running consumer gets all again.
        let reset = [
            inst,
            group,
            ("topic", "ORDERS"),
            ("type", "1"),
            ("resetTime", begin_s.as_str()),
        ];
        a.ok("/json/consumer/resetoffset", &reset).await?;
        support::eventually(
            "GID_ORDERS got the ten again",
            Duration::from_secs(60),
            || {
                orders2
                    .lock()
                    .map(|o| o.iter().filter(|b| b.starts_with("order-")).count() >= 20)
                    .unwrap_or(false)
            },
        )
        .await;
        c_orders.shutdown().await;
        c_dlq.shutdown().await;
        Ok(())
    });
    outcome?;
    let _ = (tb, orders, dlq);
    Ok(())
}
