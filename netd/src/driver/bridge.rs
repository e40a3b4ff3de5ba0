//! The bridge driver, Docker's default: a Linux bridge with the gateway address; each
//! container a veth pair whose host end is on the bridge, policed by netd's programs
//! (isolation, anti-spoofing, publishing, masquerade, the fast paths).

use std::net::Ipv4Addr;

use anyhow::Result;
use netd_common::maps::{EndpointInfo, NETWORK_MASQUERADE, NETWORK_ROUTED, NetworkInfo};

use super::{Capabilities, NetworkDriver};
use crate::{
    endpoint,
    network_request::{self, NetworkRequest, Settings},
    plan::{self, At, Attached, EndpointPlan, PeerGoes, Planned, Step},
    state::{Endpoint, Network},
};

pub struct Bridge;

/// What the data path knows of a bridge network: its tag and policy flags.
pub fn network_info(n: &Network) -> NetworkInfo {
    let mut flags = 0;
    if n.masquerade {
        flags |= NETWORK_MASQUERADE;
    }
    if n.gateway_mode.direct_routing() && !n.internal {
        flags |= NETWORK_ROUTED;
    }
    NetworkInfo { tag: n.tag, flags }
}

impl NetworkDriver for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            publish: true,
            masquerade: true,
            isolation: true,
            fast_paths: true,
        }
    }

    fn validate(&self, req: &NetworkRequest) -> Result<Settings> {
        network_request::bridge_settings(req)
    }

    fn setup(&self, n: &Network, _: &[Ipv4Addr], fresh: bool) -> Vec<Planned> {
        let undo = |steps: Vec<Step>| if fresh { steps } else { Vec::new() };
        vec![
            Planned {
                step: Step::EnsureBridge {
                    name: n.bridge.clone(),
                    gateway: n.gateway,
                    prefix: n.subnet.prefix_len(),
                    mac: endpoint::mac_for(n.gateway),
                    mtu: n.mtu,
                },
                undo: undo(vec![Step::DeleteLink {
                    at: At::Node,
                    link: n.bridge.clone(),
                }]),
            },
            Planned {
                step: Step::SetNetwork {
                    subnet: n.subnet,
                    info: Some(network_info(n)),
                },
                undo: undo(vec![Step::SetNetwork {
                    subnet: n.subnet,
                    info: None,
                }]),
            },
        ]
    }

    fn teardown(&self, n: &Network) -> Vec<Step> {
        vec![
            Step::SetNetwork {
                subnet: n.subnet,
                info: None,
            },
            Step::DeleteLink {
                at: At::Node,
                link: n.bridge.clone(),
            },
        ]
    }

    fn attach(
        &self,
        n: &Network,
        p: &EndpointPlan,
        police: Option<EndpointInfo>,
        peer_goes: PeerGoes,
    ) -> Vec<Planned> {
        plan::attach_bridge(p, &n.bridge, !n.icc, police.unwrap_or_default(), peer_goes)
    }

    fn detach(&self, _: Option<&Network>, ep: &Endpoint, _: bool) -> Vec<Step> {
        plan::detach(
            ep.ip,
            &Attached::Bridge {
                host_veth: &ep.host_veth,
                ifindex: ep.host_ifindex,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> Network {
        serde_json::from_value(serde_json::json!({
            "id": "0123456789ab", "name": "front", "driver": "bridge", "bridge": "br-front",
            "subnet": "172.20.0.0/16", "gateway": "172.20.0.1", "ip_range": null,
            "internal": false, "icc": true, "masquerade": true, "mtu": null,
            "options": {}, "tag": 3, "created": 0
        }))
        .unwrap()
    }

    #[test]
    fn a_fresh_bridge_network_is_undone_if_it_fails_and_one_at_start_is_not() {
        let n = network();
        let fresh = Bridge.setup(&n, &[], true);
        let steps: Vec<String> = fresh.iter().map(|p| p.step.to_string()).collect();
        assert_eq!(
            steps,
            [
                "set up bridge br-front",
                "register subnet 172.20.0.0/16 with the data path"
            ]
        );
        assert_eq!(
            fresh[0].undo,
            [Step::DeleteLink {
                at: At::Node,
                link: "br-front".into()
            }]
        );
        assert!(
            Bridge
                .setup(&n, &[], false)
                .iter()
                .all(|p| p.undo.is_empty())
        );
        let teardown: Vec<String> = Bridge.teardown(&n).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            teardown,
            [
                "forget subnet 172.20.0.0/16 in the data path",
                "remove br-front"
            ]
        );
    }
}
