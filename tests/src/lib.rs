//! mq-testbed: a real Kubernetes control plane on loopback for mqfleet's tests.
//!
//! [`Testbed::start`] runs etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler v1.20.2 (built once and cached by `scripts/install-k8s.sh`) in a
//! directory of their own, in a *slot* that gives the testbed its own service range, so
//! several testbeds run side by side. [`Testbed::shared`] gives a test binary one testbed
//! for all its tests; the `mq-testbed` binary starts a detached one for humans.

#![warn(missing_docs)]

pub mod certs;
pub mod console;
pub mod controlplane;
pub mod crds;
pub mod error;
pub mod images;
pub mod install;
pub mod kubeclient;
pub mod kubeconfig;
pub mod logs;
pub mod manifests;
pub mod node;
pub mod operator;
pub mod paths;
pub mod ports;
pub mod probe;
pub mod process;
pub mod readme;
pub mod registry;
pub mod shared;
pub mod slot;
pub mod state;
pub mod status;
pub mod wait;

pub use controlplane::{Options, Testbed, stop_dir};
pub use crds::apply_crds;
pub use error::{Error, Result};
pub use install::{HelmBinaries, K8sBinaries, ensure_helm, ensure_k8s, helm_path, kubectl_path};
pub use manifests::apply_manifests;
pub use process::{Lifetime, ProcRef};
pub use state::State;
pub use status::{Status, status};
