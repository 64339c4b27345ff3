//! The Pod status the agent reports: container states, conditions with transition
//! times, phase, addresses. Pure functions of the worker's view, so "did anything
//! change" is a comparison and the agent writes nothing while nothing changes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A container's current state.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not running; why.
    Waiting {
        /// The reason (`ContainerCreating`, `CrashLoopBackOff`, ...).
        reason: String,
        /// Details for a person.
        message: Option<String>,
    },
    /// Running since `started_at` as process `pid`.
    Running {
        /// When the process started.
        started_at: Timestamp,
        /// Its pid.
        pid: u32,
    },
    /// Exited.
    Terminated(Terminated),
}

/// How a container's process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    /// Exit code (128 + signal for a signal).
    pub exit_code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// `Completed` or `Error`.
    pub reason: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Its pid.
    pub pid: u32,
    /// Its termination message (the file at `terminationMessagePath`, or the log's tail).
    pub message: Option<String>,
}

/// What the status needs to know about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The binary the image maps to (reported as the image id).
    pub image_id: String,
    /// Current state.
    pub state: State,
    /// The previous termination.
    pub last: Option<Terminated>,
    /// Restarts so far.
    pub restarts: i32,
    /// Readiness (probe passed, or no probe and running).
    pub ready: bool,
    /// The startup probe passed (or there is none) and it runs.
    pub started: bool,
}

/// Condition values with the time each last changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    values: BTreeMap<&'static str, (bool, Timestamp)>,
}

impl Conditions {
    /// Records `kind = value`, keeping the transition time if the value is unchanged.
    pub fn set(&mut self, kind: &'static str, value: bool) {
        match self.values.get(kind) {
            Some((old, _)) if *old == value => {}
            _ => {
                self.values.insert(kind, (value, Timestamp::now()));
            }
        }
    }

    fn to_api(&self) -> Vec<PodCondition> {
        // Kubelet's order.
        ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
            .iter()
            .filter_map(|kind| {
                let (value, at) = self.values.get(kind)?;
                Some(PodCondition {
                    type_: (*kind).to_owned(),
                    status: if *value { "True" } else { "False" }.to_owned(),
                    last_transition_time: Some(Time(*at)),
                    ..Default::default()
                })
            })
            .collect()
    }
}

/// Everything a Pod status is built from.
#[derive(Debug, Clone)]
pub struct PodView<'a> {
    /// The phase.
    pub phase: &'static str,
    /// Pod address.
    pub pod_ip: Ipv4Addr,
    /// Node address.
    pub host_ip: Ipv4Addr,
    /// When the agent accepted the Pod.
    pub start_time: Timestamp,
    /// Init containers.
    pub init: &'a [ContainerView],
    /// App containers.
    pub containers: &'a [ContainerView],
    /// Conditions.
    pub conditions: &'a Conditions,
}

/// The API status for `view`.
pub fn pod_status(view: &PodView<'_>) -> PodStatus {
    let ip = view.pod_ip.to_string();
    PodStatus {
        phase: Some(view.phase.to_owned()),
        conditions: Some(view.conditions.to_api()),
        host_ip: Some(view.host_ip.to_string()),
        pod_ip: Some(ip.clone()),
        pod_ips: Some(vec![PodIP { ip }]),
        start_time: Some(Time(view.start_time)),
        qos_class: Some("BestEffort".to_owned()),
        init_container_statuses: (!view.init.is_empty())
            .then(|| view.init.iter().map(container_status).collect()),
        container_statuses: Some(view.containers.iter().map(container_status).collect()),
        ..Default::default()
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    let container_id = match &c.state {
        State::Running { pid, .. } => Some(format!("process://{pid}")),
        State::Terminated(t) => Some(format!("process://{}", t.pid)),
        State::Waiting { .. } => None,
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id,
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restarts,
        state: Some(state(&c.state)),
        last_state: Some(c.last.as_ref().map(terminated).unwrap_or_default()),
        ..Default::default()
    }
}

fn state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at, .. } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated(t) => terminated(t),
    }
}

fn terminated(t: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: Some(t.reason.clone()),
            started_at: Some(Time(t.started_at)),
            finished_at: Some(Time(t.finished_at)),
            container_id: Some(format!("process://{}", t.pid)),
            message: t.message.clone(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_times_move_only_on_change() {
        let mut c = Conditions::default();
        c.set("Ready", false);
        let first = c.to_api()[0].last_transition_time.clone();
        c.set("Ready", false);
        assert_eq!(c.to_api()[0].last_transition_time, first);
        std::thread::sleep(std::time::Duration::from_millis(2));
        c.set("Ready", true);
        let api = c.to_api();
        assert_eq!(api[0].status, "True");
        assert_ne!(api[0].last_transition_time, first);
    }

    #[test]
    fn status_carries_states_and_addresses() {
        let now = Timestamp::now();
        let running = ContainerView {
            name: "web".into(),
            image: "mqfleet/mq-testpod:dev".into(),
            image_id: "file:///t/mq-testpod".into(),
            state: State::Running {
                started_at: now,
                pid: 42,
            },
            last: Some(Terminated {
                exit_code: 137,
                signal: Some(9),
                reason: "Error".into(),
                started_at: now,
                finished_at: now,
                pid: 41,
                message: Some("StoreDamaged segment=0 offset=7: bad".into()),
            }),
            restarts: 1,
            ready: true,
            started: true,
        };
        let mut conditions = Conditions::default();
        conditions.set("Ready", true);
        conditions.set("PodScheduled", true);
        let view = PodView {
            phase: "Running",
            pod_ip: Ipv4Addr::new(127, 128, 1, 1),
            host_ip: Ipv4Addr::new(127, 128, 0, 1),
            start_time: now,
            init: &[],
            containers: std::slice::from_ref(&running),
            conditions: &conditions,
        };
        let status = pod_status(&view);
        assert_eq!(status.pod_ip.as_deref(), Some("127.128.1.1"));
        let cs = &status.container_statuses.unwrap()[0];
        assert_eq!(cs.restart_count, 1);
        assert_eq!(cs.container_id.as_deref(), Some("process://42"));
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.signal), (137, Some(9)));
        assert_eq!(
            last.message.as_deref(),
            Some("StoreDamaged segment=0 offset=7: bad")
        );
        assert!(status.init_container_statuses.is_none());
        let kinds: Vec<_> = status
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert_eq!(kinds, ["Ready", "PodScheduled"]);
    }
}
