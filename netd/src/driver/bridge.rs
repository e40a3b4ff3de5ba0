//! The bridge driver, Docker's default: a Linux bridge with the gateway address (and the
//! IPv6 one, on a dual-stack network); each container a veth pair whose host end is on the
//! bridge, policed by netd's programs (isolation, anti-spoofing, publishing, masquerade,
//! the fast paths).

use std::net::IpAddr;

use anyhow::Result;
use netd_common::maps::{NETWORK_MASQUERADE, NETWORK_ROUTED, NetworkInfo};

use super::{Capabilities, NetworkDriver};
use crate::{
    endpoint,
    network_request::{self, NetworkRequest, Settings},
    plan::{self, At, Attached, EndpointPlan, PeerGoes, Planned, Policing, Step},
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

/// What the data path knows of a bridge network's IPv6 side: its tag, and whether it is
/// routed (`gateway_mode_ipv6=routed`) or masqueraded (NAT66, the default, unless
/// `enable_ip_masquerade=false`: then its IPv6 has no way beyond the node).
pub fn network_info6(n: &Network) -> NetworkInfo {
    let routed = n
        .ipv6
        .is_some_and(|v6| v6.gateway_mode.direct_routing() && !n.internal);
    let flags = if routed {
        NETWORK_ROUTED
    } else if n.masquerade && !n.internal {
        NETWORK_MASQUERADE
    } else {
        0
    };
    NetworkInfo { tag: n.tag, flags }
}

/// The bridge's MAC: fixed (Docker's scheme, from the gateway), so that the gateway's
/// link-local address, derived from it, is fixed too.
pub fn bridge_mac(n: &Network) -> [u8; 6] {
    endpoint::mac_of(n.gateway, n.ipv6.map(|v6| v6.gateway))
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

    fn setup(&self, n: &Network, _: &[IpAddr], fresh: bool) -> Vec<Planned> {
        let undo = |steps: Vec<Step>| if fresh { steps } else { Vec::new() };
        let mut plan = vec![Planned {
            step: Step::EnsureBridge {
                name: n.bridge.clone(),
                gateway: n.ipv4().map(|(subnet, gw)| (gw, subnet.prefix_len())),
                gateway6: n.ipv6.map(|v6| (v6.gateway, v6.subnet.prefix_len())),
                mac: bridge_mac(n),
                mtu: n.mtu,
            },
            undo: undo(vec![Step::DeleteLink {
                at: At::Node,
                link: n.bridge.clone(),
            }]),
        }];
        if let Some(subnet) = n.subnet {
            plan.push(Planned {
                step: Step::SetNetwork {
                    subnet,
                    info: Some(network_info(n)),
                },
                undo: undo(vec![Step::SetNetwork { subnet, info: None }]),
            });
        }
        if let Some(v6) = n.ipv6 {
            plan.push(Planned {
                step: Step::SetNetwork6 {
                    subnet: v6.subnet,
                    info: Some(network_info6(n)),
                },
                undo: undo(vec![Step::SetNetwork6 {
                    subnet: v6.subnet,
                    info: None,
                }]),
            });
        }
        plan
    }

    fn teardown(&self, n: &Network) -> Vec<Step> {
        let v6 = n.ipv6.map(|v6| Step::SetNetwork6 {
            subnet: v6.subnet,
            info: None,
        });
        let v4 = n
            .subnet
            .map(|subnet| Step::SetNetwork { subnet, info: None });
        let bridge = Step::DeleteLink {
            at: At::Node,
            link: n.bridge.clone(),
        };
        v6.into_iter().chain(v4).chain([bridge]).collect()
    }

    fn attach(
        &self,
        n: &Network,
        p: &EndpointPlan,
        police: Option<Policing>,
        peer_goes: PeerGoes,
    ) -> Vec<Planned> {
        let police = police.unwrap_or_default();
        plan::attach_bridge(p, &n.bridge, !n.icc, police, peer_goes)
    }

    fn detach(&self, _: Option<&Network>, ep: &Endpoint, _: bool) -> Vec<Step> {
        plan::detach(
            ep.ip,
            ep.ip6,
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

    #[test]
    fn a_dual_stack_network_registers_its_ipv6_subnet_with_the_same_policy() {
        let mut n = network();
        n.ipv6 = Some(crate::state::Network6 {
            gateway_mode: Default::default(),
            subnet: "fd00:1::/64".parse().unwrap(),
            gateway: "fd00:1::1".parse().unwrap(),
            ip_range: None,
            last_allocated: None,
        });
        let fresh = Bridge.setup(&n, &[], true);
        assert!(matches!(
            fresh[0].step,
            Step::EnsureBridge { gateway6: Some((gw, 64)), .. } if gw == "fd00:1::1".parse::<std::net::Ipv6Addr>().unwrap()
        ));
        assert_eq!(
            fresh[2],
            Planned {
                step: Step::SetNetwork6 {
                    subnet: "fd00:1::/64".parse().unwrap(),
                    info: Some(network_info6(&n)),
                },
                undo: vec![Step::SetNetwork6 {
                    subnet: "fd00:1::/64".parse().unwrap(),
                    info: None,
                }],
            }
        );
        let teardown: Vec<String> = Bridge.teardown(&n).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            teardown,
            [
                "forget IPv6 subnet fd00:1::/64 in the data path",
                "forget subnet 172.20.0.0/16 in the data path",
                "remove br-front"
            ]
        );
    }
}
