//! Clients outside the cluster (`spec.exposure`): the rule the webhook, the operator and
//! the console share (external exposure needs ACL on), and the external addresses an
//! exposed instance gets.
//!
//! Why ACL: a node port or a load balancer is reachable by anyone who can reach the
//! nodes; only signed requests keep another tenant (or a stranger) out of the brokers.

use crate::crd::{Exposure, MQInstanceSpec};

/// The `Ready=False` reason of an exposed instance with ACL off (no webhook installed).
pub const ACL_REQUIRED_REASON: &str = "ExposureRequiresAcl";

/// The refusal of `spec` when it asks for external exposure with ACL off.
pub fn acl_refusal(spec: &MQInstanceSpec) -> Option<String> {
    (spec.exposure.is_external() && !spec.acl_enabled).then(|| {
        format!(
            "spec.exposure {} makes the instance reachable from outside the cluster, which requires ACL: set spec.aclEnabled: true (clients then sign with their AccessKey/SecretKey), or keep spec.exposure: cluster",
            spec.exposure.as_str()
        )
    })
}

/// The external address of a node port: `host:port`.
pub fn node_port_addr(host: &str, node_port: i32) -> String {
    format!("{host}:{node_port}")
}

/// The external address of a load balancer: its first ingress (IP, else host name) with
/// the Service `port`; `None` until a cloud controller filled the ingress in.
pub fn load_balancer_addr(
    ingress: &[(Option<String>, Option<String>)],
    port: i32,
) -> Option<String> {
    ingress
        .iter()
        .find_map(|(ip, hostname)| {
            ip.as_deref()
                .filter(|s| !s.is_empty())
                .or(hostname.as_deref().filter(|s| !s.is_empty()))
        })
        .map(|host| format!("{host}:{port}"))
}

/// Whether `exposure` needs the profile's external host (node ports do).
pub fn needs_external_host(exposure: Exposure) -> bool {
    exposure == Exposure::NodePort
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> MQInstanceSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn external_exposure_with_acl_off_is_refused_with_a_message_saying_to_enable_acl() {
        for exposure in ["nodePort", "loadBalancer"] {
            let off = spec(serde_json::json!({"instanceName": "orders", "exposure": exposure}));
            let refusal = acl_refusal(&off).expect("refused");
            assert!(refusal.contains("spec.aclEnabled: true"), "{refusal}");
            assert!(refusal.contains(exposure), "{refusal}");
            let on = spec(
                serde_json::json!({"instanceName": "orders", "exposure": exposure, "aclEnabled": true}),
            );
            assert_eq!(acl_refusal(&on), None);
        }
        let cluster = spec(serde_json::json!({"instanceName": "orders"}));
        assert_eq!(acl_refusal(&cluster), None, "in-cluster needs no ACL");
    }

    #[test]
    fn a_load_balancer_address_waits_for_an_ingress_and_prefers_its_ip() {
        assert_eq!(load_balancer_addr(&[], 9876), None);
        assert_eq!(load_balancer_addr(&[(None, None)], 9876), None);
        let both = [(Some("198.51.100.7".into()), Some("lb.example".into()))];
        assert_eq!(
            load_balancer_addr(&both, 9876).as_deref(),
            Some("198.51.100.7:9876")
        );
        let name = [(None, Some("lb.example".into()))];
        assert_eq!(
            load_balancer_addr(&name, 80).as_deref(),
            Some("lb.example:80")
        );
        assert_eq!(node_port_addr("127.0.0.1", 30001), "127.0.0.1:30001");
    }
}
