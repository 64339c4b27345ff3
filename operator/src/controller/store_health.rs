//! Broker stores in trouble, in the instance's status: `StoreDamaged` while a broker pod
//! refuses to start because its commit log is damaged (its termination message, written
//! by `mq-broker --termination-log`, parses as
//! [`Termination::StoreDamaged`]), and `DiskFull` while a running broker refuses sends
//! for lack of space (its runtime info's `storeDiskFull`). Either makes `Ready=False`.
//!
//! The repair is the tenant's decision, since it drops messages: annotating the instance
//! `mqfleet.io/recover-truncate: <pod>` makes the operator write
//! `recoverTruncateAt.<brokerName>=<offset of that pod's reported damage>` into
//! broker.conf, outside the part whose change rolls the brokers, so only that broker is
//! affected, and it can never cut more than the damage it reported (the broker refuses
//! any other damage). The pending cut is kept in `status.storeRecovery` (tenants cannot
//! write status). Once that broker is Ready again the key and the annotation go, and
//! `StoreDamaged=False, reason=Recovered` says what was cut. Only the instance's own
//! broker pods can be named: anything else is ignored with a Warning.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use mq_broker::broker::admin::{RUNTIME_STORE_DISK_FULL, RUNTIME_STORE_RECOVERY_CUT};
use mq_broker::conf::RECOVER_TRUNCATE_AT_PREFIX;
use mq_broker::store::DISK_FULL_ADVICE;
use mq_broker::store::termination::Termination;

use crate::crd::{StoreRecovery, condition, set_condition};

/// Condition type: a broker's commit log is damaged and it refuses to start.
pub const STORE_DAMAGED: &str = "StoreDamaged";
/// Condition type: a broker's volume is full and it refuses sends.
pub const DISK_FULL: &str = "DiskFull";
/// Annotation on an `MQInstance`: the broker pod whose damaged log may be cut.
pub const RECOVER_TRUNCATE_ANNOTATION: &str = "mqfleet.io/recover-truncate";
/// Name of the broker container in broker pods.
pub const BROKER_CONTAINER: &str = "broker";
/// Bound on one runtime-info request.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A broker pod's reported damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The pod.
    pub pod: String,
    /// Its broker name (`broker-<ordinal>`).
    pub broker: String,
    /// The segment file holding the damage.
    pub segment: String,
    /// Where the valid log ends.
    pub offset: u64,
    /// The broker's own words.
    pub message: String,
}

/// The broker name of a broker pod (`<sts>-<ordinal>` → `broker-<ordinal>`).
pub fn broker_name(pod: &str) -> Option<String> {
    let ordinal = pod.rsplit('-').next()?;
    ordinal
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| format!("broker-{ordinal}"))
        .filter(|_| !ordinal.is_empty())
}

fn broker_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == BROKER_CONTAINER)
}

/// Whether the pod's broker container is ready.
pub fn broker_ready(pod: &Pod) -> bool {
    broker_status(pod).is_some_and(|c| c.ready)
}

/// The damage a broker pod reports: while its broker is not ready, the termination
/// message of its current or last run parses as `StoreDamaged`.
pub fn damage_of(pod: &Pod) -> Option<Damage> {
    let status = broker_status(pod)?;
    if status.ready {
        return None;
    }
    let current = status.state.as_ref().and_then(|s| s.terminated.as_ref());
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let message = current
        .and_then(|t| t.message.as_deref())
        .or_else(|| last.and_then(|t| t.message.as_deref()))?;
    match Termination::parse(message)? {
        Termination::StoreDamaged {
            segment,
            offset,
            message,
        } => Some(Damage {
            pod: pod.name_any(),
            broker: broker_name(&pod.name_any())?,
            segment,
            offset,
            message,
        }),
        _ => None,
    }
}

/// Whether the broker container waits to be restarted after crashing (a new pod starts
/// it at once, with the current broker.conf).
pub fn crash_looping(pod: &Pod) -> bool {
    broker_status(pod)
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .is_some_and(|r| r == "CrashLoopBackOff")
        || broker_status(pod)
            .and_then(|c| c.state.as_ref()?.terminated.as_ref())
            .is_some()
}

/// The broker.conf line of a pending cut (read at start; not in the restart hash).
pub fn recover_truncate_line(recovery: &StoreRecovery) -> String {
    format!(
        "{RECOVER_TRUNCATE_AT_PREFIX}{}={}\n",
        recovery.broker, recovery.offset
    )
}

/// What the annotation asks for, given the instance's own broker pods' damage: the cut
/// to make, or why the annotation is ignored.
pub fn requested_cut(
    annotation: Option<&str>,
    pending: Option<&StoreRecovery>,
    damages: &[Damage],
) -> Result<Option<StoreRecovery>, String> {
    let Some(pod) = annotation.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if let Some(p) = pending.filter(|p| p.pod == pod) {
        return Ok(Some(p.clone()));
    }
    match damages.iter().find(|d| d.pod == pod) {
        Some(d) => Ok(Some(StoreRecovery {
            pod: d.pod.clone(),
            broker: d.broker.clone(),
            segment: d.segment.clone(),
            offset: d.offset,
        })),
        None => Err(format!(
            "{RECOVER_TRUNCATE_ANNOTATION}={pod} is ignored: no broker pod of this instance named {pod} reports a damaged commit log"
        )),
    }
}

/// How `kubectl` reaches the instance.
fn annotate_hint(ns: &str, name: &str, pod: &str) -> String {
    format!("kubectl -n {ns} annotate mqi {name} {RECOVER_TRUNCATE_ANNOTATION}={pod}")
}

/// The `StoreDamaged` condition's message for `damages` (non-empty).
pub fn damaged_message(
    ns: &str,
    name: &str,
    damages: &[Damage],
    pending: Option<&StoreRecovery>,
) -> String {
    let parts: Vec<String> = damages
        .iter()
        .map(|d| {
            let what = format!(
                "broker pod {} ({}) refuses to start: its commit log is damaged in segment {} at offset {}",
                d.pod, d.broker, d.segment, d.offset
            );
            match pending.filter(|p| p.pod == d.pod) {
                Some(p) if p.offset == d.offset => format!(
                    "{what}; cutting it at offset {} as asked (everything from there on is dropped), waiting for the broker to start",
                    p.offset
                ),
                _ => format!(
                    "{what}. To start it, dropping every message stored from offset {} on: `{}`",
                    d.offset,
                    annotate_hint(ns, name, &d.pod)
                ),
            }
        })
        .collect();
    parts.join("; ")
}

/// The `DiskFull` condition's message for `full` (pod → reason, non-empty). The
/// broker's own advice at the end of its reason goes: the message ends with the
/// operator's, said once.
pub fn disk_full_message(full: &BTreeMap<String, String>) -> String {
    let advice = format!("; {DISK_FULL_ADVICE}");
    let parts: Vec<String> = full
        .iter()
        .map(|(pod, reason)| {
            let reason = reason.strip_suffix(&advice).unwrap_or(reason);
            format!("broker pod {pod} refuses sends: {reason}")
        })
        .collect();
    format!(
        "{}; free space on the volume or give the instance bigger volumes",
        parts.join("; ")
    )
}

/// Sets `StoreDamaged` and `DiskFull` from what was found; a condition that was never
/// True is not added. Returns the Ready override (reason, message), if any.
pub fn record(
    conditions: &mut Vec<Condition>,
    damaged: Option<String>,
    recovered: Option<String>,
    disk_full: Option<String>,
    generation: Option<i64>,
) -> Option<(&'static str, String)> {
    let has = |conditions: &Vec<Condition>, t: &str| conditions.iter().any(|c| c.type_ == t);
    let mut ready = None;
    match (damaged, recovered) {
        (Some(message), _) => {
            set_condition(
                conditions,
                condition(
                    STORE_DAMAGED,
                    true,
                    STORE_DAMAGED,
                    message.clone(),
                    generation,
                ),
            );
            ready = Some((STORE_DAMAGED, message));
        }
        (None, Some(message)) => set_condition(
            conditions,
            condition(STORE_DAMAGED, false, "Recovered", message, generation),
        ),
        (None, None) => {
            let was_true = conditions
                .iter()
                .any(|c| c.type_ == STORE_DAMAGED && c.status == "True");
            if was_true {
                set_condition(
                    conditions,
                    condition(
                        STORE_DAMAGED,
                        false,
                        "NoDamage",
                        "no broker reports a damaged commit log",
                        generation,
                    ),
                );
            }
        }
    }
    match disk_full {
        Some(message) => {
            set_condition(
                conditions,
                condition(DISK_FULL, true, DISK_FULL, message.clone(), generation),
            );
            if ready.is_none() {
                ready = Some((DISK_FULL, message));
            }
        }
        None if has(conditions, DISK_FULL) => set_condition(
            conditions,
            condition(
                DISK_FULL,
                false,
                "SpaceAvailable",
                "every running broker takes sends",
                generation,
            ),
        ),
        None => {}
    }
    ready
}

/// Reads the runtime-info keys the operator watches: (`storeDiskFull`, `storeRecoveryCut`).
pub fn store_keys(info: &BTreeMap<String, String>) -> (Option<String>, Option<String>) {
    let get = |k: &str| info.get(k).filter(|v| !v.is_empty()).cloned();
    (
        get(RUNTIME_STORE_DISK_FULL),
        get(RUNTIME_STORE_RECOVERY_CUT),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ready: bool, state: serde_json::Value, last: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "mqfleet-system"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "broker", "image": "x", "imageID": "", "restartCount": 3,
                "ready": ready, "state": state, "lastState": last,
            }]},
        }))
        .unwrap()
    }

    const DAMAGED: &str = "StoreDamaged segment=00000000000000000000 offset=4242: the commit log in /store/commitlog is damaged at offset 4242";

    fn terminated(message: &str) -> serde_json::Value {
        json!({"terminated": {"exitCode": 1, "reason": "Error", "message": message}})
    }

    #[test]
    fn damage_is_read_from_the_termination_message_while_the_broker_is_not_ready() {
        let waiting = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        let p = pod(
            "mq-inst-1-abc-broker-1",
            false,
            waiting.clone(),
            terminated(DAMAGED),
        );
        let d = damage_of(&p).expect("damage");
        assert_eq!(
            (
                d.pod.as_str(),
                d.broker.as_str(),
                d.segment.as_str(),
                d.offset
            ),
            (
                "mq-inst-1-abc-broker-1",
                "broker-1",
                "00000000000000000000",
                4242
            )
        );
        assert!(crash_looping(&p));
        // The current run's own message counts too.
        let p = pod("x-broker-0", false, terminated(DAMAGED), json!({}));
        assert_eq!(damage_of(&p).map(|d| d.offset), Some(4242));
        // Ready again: the last run's message is history.
        let running = json!({"running": {}});
        assert_eq!(
            damage_of(&pod(
                "x-broker-0",
                true,
                running.clone(),
                terminated(DAMAGED)
            )),
            None
        );
        // Other terminations, or a log tail, are not damage.
        for other in [
            "VolumeTooSmall: too small",
            "Fatal: bind",
            "panicked at main.rs",
            "",
        ] {
            assert_eq!(
                damage_of(&pod(
                    "x-broker-0",
                    false,
                    waiting.clone(),
                    terminated(other)
                )),
                None
            );
        }
        assert!(!crash_looping(&pod(
            "x-broker-0",
            false,
            running,
            json!({})
        )));
    }

    #[test]
    fn the_annotation_names_only_a_pod_of_this_instance_that_reports_damage() {
        let damage = Damage {
            pod: "mq-a-broker-1".into(),
            broker: "broker-1".into(),
            segment: "00000000000000000000".into(),
            offset: 77,
            message: "damaged".into(),
        };
        let damages = [damage];
        let cut = requested_cut(Some("mq-a-broker-1"), None, &damages)
            .expect("accepted")
            .expect("a cut");
        assert_eq!((cut.broker.as_str(), cut.offset), ("broker-1", 77));
        assert_eq!(
            recover_truncate_line(&cut),
            "recoverTruncateAt.broker-1=77\n"
        );
        assert_eq!(requested_cut(None, None, &damages), Ok(None));
        // Another instance's pod (not in this instance's list), or a healthy one.
        for other in ["mq-b-broker-1", "mq-a-broker-0", "kube-apiserver"] {
            let err = requested_cut(Some(other), None, &damages).expect_err(other);
            assert!(err.contains("ignored"), "{err}");
        }
        // Once accepted, the cut stays what was reported, even while the pod restarts
        // and has no termination message yet.
        assert_eq!(
            requested_cut(Some("mq-a-broker-1"), Some(&cut), &[]),
            Ok(Some(cut.clone()))
        );
    }

    #[test]
    fn conditions_and_ready_follow_the_stores() {
        let mut conditions = Vec::new();
        assert_eq!(record(&mut conditions, None, None, None, Some(1)), None);
        assert!(conditions.is_empty(), "never True: not shown");
        let ready = record(
            &mut conditions,
            Some("pod p damaged".into()),
            None,
            Some("full".into()),
            Some(1),
        );
        assert_eq!(ready, Some((STORE_DAMAGED, "pod p damaged".to_owned())));
        let ready = record(
            &mut conditions,
            None,
            Some("cut at offset 7".into()),
            Some("full".into()),
            Some(1),
        );
        assert_eq!(ready.map(|r| r.0), Some(DISK_FULL));
        let damaged = conditions
            .iter()
            .find(|c| c.type_ == STORE_DAMAGED)
            .unwrap();
        assert_eq!(
            (damaged.status.as_str(), damaged.reason.as_str()),
            ("False", "Recovered")
        );
        // Recovered stays until something changes.
        assert_eq!(record(&mut conditions, None, None, None, Some(1)), None);
        let damaged = conditions
            .iter()
            .find(|c| c.type_ == STORE_DAMAGED)
            .unwrap();
        assert_eq!(damaged.reason, "Recovered");
        let full = conditions.iter().find(|c| c.type_ == DISK_FULL).unwrap();
        assert_eq!(
            (full.status.as_str(), full.reason.as_str()),
            ("False", "SpaceAvailable")
        );
    }

    #[test]
    fn messages_say_which_pod_where_and_what_to_do() {
        let d = Damage {
            pod: "mq-a-broker-0".into(),
            broker: "broker-0".into(),
            segment: "00000000000000000000".into(),
            offset: 99,
            message: "m".into(),
        };
        let text = damaged_message("shop", "orders", std::slice::from_ref(&d), None);
        for wanted in [
            "mq-a-broker-0",
            "segment 00000000000000000000",
            "offset 99",
            "kubectl -n shop annotate mqi orders mqfleet.io/recover-truncate=mq-a-broker-0",
        ] {
            assert!(text.contains(wanted), "{wanted:?} in {text}");
        }
        let full = BTreeMap::from([("p-0".to_owned(), "95 % used".to_owned())]);
        assert!(disk_full_message(&full).contains("p-0 refuses sends: 95 % used"));
        // The broker's advice is replaced by the operator's, not repeated.
        let full = BTreeMap::from([
            ("p-0".to_owned(), format!("93 % used; {DISK_FULL_ADVICE}")),
            (
                "p-1".to_owned(),
                "no space left writing /store/x".to_owned(),
            ),
        ]);
        let text = disk_full_message(&full);
        assert_eq!(
            text,
            "broker pod p-0 refuses sends: 93 % used; broker pod p-1 refuses sends: no space left writing /store/x; free space on the volume or give the instance bigger volumes"
        );
        assert_eq!(broker_name("mq-x-broker-12").as_deref(), Some("broker-12"));
        assert_eq!(broker_name("mq-x-broker-"), None);
    }
}
