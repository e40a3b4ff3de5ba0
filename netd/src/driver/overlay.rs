//! The overlay driver: a cluster's network, spanning nodes. On each node with containers
//! on it, it is a bridge network (the same gateway address on every node, an anycast
//! gateway, so a container reaches the outside and is published through its own node),
//! with the overlay's MTU (the underlay's less VXLAN's overhead) on the bridge and the
//! containers' interfaces, and its VXLAN ID registered with the data path, which sends
//! frames to the other nodes' containers through the node's VXLAN device.

use std::net::IpAddr;

use anyhow::{Result, bail};

use super::{Capabilities, NetworkDriver, bridge::Bridge};
use crate::{
    network_request::{NetworkRequest, Settings},
    plan::{EndpointPlan, PeerGoes, Planned, Policing, Step},
    state::{Endpoint, Network},
};

pub struct Overlay;

impl NetworkDriver for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn capabilities(&self) -> Capabilities {
        Bridge.capabilities()
    }

    fn validate(&self, _: &NetworkRequest) -> Result<Settings> {
        bail!("an overlay network is created for the whole cluster, not on one node")
    }

    fn setup(&self, n: &Network, endpoints: &[IpAddr], fresh: bool) -> Vec<Planned> {
        let mut plan = Bridge.setup(n, endpoints, fresh);
        if let Some(vni) = n.vni() {
            plan.push(Planned {
                step: Step::SetOverlay {
                    vni,
                    tag: Some(n.tag),
                },
                undo: if fresh {
                    vec![Step::SetOverlay { vni, tag: None }]
                } else {
                    Vec::new()
                },
            });
        }
        plan
    }

    fn teardown(&self, n: &Network) -> Vec<Step> {
        let forget = n.vni().map(|vni| Step::SetOverlay { vni, tag: None });
        forget.into_iter().chain(Bridge.teardown(n)).collect()
    }

    fn attach(
        &self,
        n: &Network,
        p: &EndpointPlan,
        police: Option<Policing>,
        peer_goes: PeerGoes,
    ) -> Vec<Planned> {
        Bridge.attach(n, p, police, peer_goes)
    }

    fn detach(&self, n: Option<&Network>, ep: &Endpoint, namespace_open: bool) -> Vec<Step> {
        Bridge.detach(n, ep, namespace_open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_is_a_bridge_network_with_its_vxlan_id_registered_last_and_forgotten_first() {
        let n: Network = serde_json::from_value(serde_json::json!({
            "id": "0123456789ab", "name": "ov", "driver": "overlay", "bridge": "ov4096",
            "subnet": "10.0.1.0/24", "gateway": "10.0.1.1", "ip_range": null,
            "internal": false, "icc": true, "masquerade": true, "mtu": 1450,
            "options": {}, "tag": 3, "created": 0, "overlay": {"vni": 4096}
        }))
        .unwrap();
        let steps: Vec<String> = Overlay
            .setup(&n, &[], true)
            .iter()
            .map(|p| p.step.to_string())
            .collect();
        assert_eq!(
            steps,
            [
                "set up bridge ov4096",
                "register subnet 10.0.1.0/24 with the data path",
                "register VXLAN ID 4096 with the data path"
            ]
        );
        let teardown: Vec<String> = Overlay.teardown(&n).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            teardown,
            [
                "forget VXLAN ID 4096 in the data path",
                "forget subnet 10.0.1.0/24 in the data path",
                "remove ov4096"
            ]
        );
    }
}
