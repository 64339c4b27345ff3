//! mq-testbed: a real Kubernetes control plane on loopback for mqfleet's tests.
