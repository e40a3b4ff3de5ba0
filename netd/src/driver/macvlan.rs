//! The macvlan driver: containers straight on the LAN, each with its own MAC and address,
//! as Docker's `-d macvlan`. A container's interface is a macvlan link on the network's
//! parent, made in the node (named like a veth's container end, so that a daemon that
//! dies before moving it leaves nothing its next start does not remove), moved into the
//! container and configured there. No program sees its traffic: it never crosses the
//! node's stack.

use std::{fs::File, net::IpAddr};

use anyhow::{Context, Result, bail};
use netlink_packet_route::link::MacVlanMode as KernelMode;

use super::{Capabilities, NetworkDriver};
use crate::{
    endpoint,
    netlink::Netlink,
    network_request::{self, MacvlanMode, NetworkRequest, Settings},
    plan::{self, At, Attached, EndpointPlan, PeerGoes, Planned, Policing, Step},
    state::{Endpoint, MacvlanNet, Network, Shim},
};

/// The link types the driver asks the kernel about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// `-d ipvlan` (`CONFIG_IPVLAN`).
    Ipvlan,
    /// A parent such as `eth0.50`, which Docker makes as an 802.1Q link
    /// (`CONFIG_VLAN_8021Q`).
    Vlan,
}

impl ProbeKind {
    pub fn config(self) -> &'static str {
        match self {
            ProbeKind::Ipvlan => "CONFIG_IPVLAN",
            ProbeKind::Vlan => "CONFIG_VLAN_8021Q",
        }
    }
}

pub fn kernel_mode(mode: MacvlanMode) -> KernelMode {
    match mode {
        MacvlanMode::Bridge => KernelMode::Bridge,
        MacvlanMode::Vepa => KernelMode::Vepa,
        MacvlanMode::Private => KernelMode::Private,
        MacvlanMode::Passthru => KernelMode::Passthrough,
    }
}

/// The parent netd makes for a network without one: a veth pair whose ends are both up
/// (so the macvlans on it have a carrier) and go nowhere. This kernel has no dummy links,
/// which Docker uses.
pub fn made_parent_name(network_id: &str) -> String {
    format!("nm{}", &network_id[..network_id.len().min(12)])
}

fn made_parent_peer(parent: &str) -> String {
    format!("{}x", &parent[..parent.len().min(14)])
}

/// A macvlan network's parent, present and up (made first if netd makes it, `made`);
/// its index.
pub async fn ensure_parent(node: &Netlink, parent: &str, made: bool) -> Result<u32> {
    if let Some(index) = node.link_index(parent).await? {
        node.up(index).await?;
        return Ok(index);
    }
    if !made {
        bail!("parent interface {parent} is missing");
    }
    let peer = made_parent_peer(parent);
    node.create_veth(parent, &peer).await?;
    let index = node
        .link_index(parent)
        .await?
        .with_context(|| format!("{parent} vanished after creation"))?;
    // The stub goes nowhere: neither end takes part in the node's own networking (an
    // internal network's container reaches no address of the node through it).
    crate::sysctl::isolate(parent)?;
    crate::sysctl::isolate(&peer)?;
    let peer_index = node.link_index(&peer).await?.context("peer vanished")?;
    node.up(peer_index).await?;
    node.up(index).await?;
    Ok(index)
}

/// The shim's name for a network.
pub fn shim_name(network_id: &str) -> String {
    format!("nh{}", &network_id[..network_id.len().min(12)])
}

/// The node's shim on the parent (bridge mode, the addresses' MAC, the IPv4 address as
/// /32 and the IPv6 one as /128, those it has, up) and a host route through it to each of
/// `containers` of a family it has an address of; idempotent. Its index.
pub async fn ensure_shim(
    node: &Netlink,
    parent: u32,
    shim: &Shim,
    containers: &[IpAddr],
) -> Result<u32> {
    let index = match node.link_index(&shim.name).await? {
        Some(i) => i,
        None => {
            node.create_macvlan(&shim.name, parent, KernelMode::Bridge)
                .await?;
            let i = node
                .link_index(&shim.name)
                .await?
                .with_context(|| format!("{} vanished after creation", shim.name))?;
            node.set_mac(i, endpoint::mac_of(shim.ip, shim.ip6)).await?;
            match shim.ip6 {
                // No router advertisement, autoconfiguration or redirect taken on it: its
                // address is netd's.
                Some(_) => crate::sysctl::ipv6_on(&shim.name)?,
                None => crate::sysctl::ipv6_off(&shim.name)?,
            }
            crate::sysctl::arp_own_address_only(&shim.name)?;
            i
        }
    };
    if let Some(ip6) = shim.ip6 {
        node.ensure_addresses6(index, &[(ip6, 128)]).await?;
    }
    if let Some(ip) = shim.ip {
        node.ensure_address(index, ip, 32).await?;
    }
    node.up(index).await?;
    for &to in containers {
        let src = match to {
            IpAddr::V4(_) => shim.ip.map(IpAddr::V4),
            IpAddr::V6(_) => shim.ip6.map(IpAddr::V6),
        };
        if let Some(src) = src {
            node.replace_host_route(to, index, src).await?;
        }
    }
    Ok(index)
}

/// Is the container's macvlan `ifname` in `ns`?
pub async fn is_present(ns: &File, ifname: &str) -> Result<bool> {
    Ok(Netlink::connect_in(ns)?.link_index(ifname).await?.is_some())
}

/// The macvlan driver (`-d macvlan`).
pub struct Macvlan;

fn settings_of(n: &Network) -> &MacvlanNet {
    n.macvlan
        .as_ref()
        .expect("the macvlan driver is only asked about macvlan networks")
}

/// The parent's step: a stub netd makes (idempotent), or a link that must be there.
fn parent_step(m: &MacvlanNet) -> Step {
    if m.parent_made {
        Step::EnsureStubParent {
            name: m.parent.clone(),
        }
    } else {
        Step::RequireLink {
            name: m.parent.clone(),
        }
    }
}

impl NetworkDriver for Macvlan {
    fn name(&self) -> &'static str {
        "macvlan"
    }

    /// None of netd's: the containers' frames never cross the node's stack.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            publish: false,
            masquerade: false,
            isolation: false,
            fast_paths: false,
        }
    }

    fn validate(&self, req: &NetworkRequest) -> Result<Settings> {
        network_request::macvlan_settings(req)
    }

    fn setup(&self, n: &Network, endpoints: &[IpAddr], fresh: bool) -> Vec<Planned> {
        let m = settings_of(n);
        let undo = |link: &str| {
            if fresh {
                vec![Step::DeleteLink {
                    at: At::Node,
                    link: link.to_string(),
                }]
            } else {
                Vec::new()
            }
        };
        let mut plan = vec![Planned {
            step: parent_step(m),
            undo: if m.parent_made {
                undo(&m.parent)
            } else {
                Vec::new()
            },
        }];
        if let Some(shim) = &m.shim {
            plan.push(Planned {
                step: Step::EnsureShim {
                    shim: shim.clone(),
                    parent: m.parent.clone(),
                    routes: endpoints.to_vec(),
                },
                undo: undo(&shim.name),
            });
        }
        plan
    }

    fn teardown(&self, n: &Network) -> Vec<Step> {
        let m = settings_of(n);
        let shim = m.shim.iter().map(|s| Step::DeleteLink {
            at: At::Node,
            link: s.name.clone(),
        });
        let parent = m.parent_made.then(|| Step::DeleteLink {
            at: At::Node,
            link: m.parent.clone(),
        });
        shim.chain(parent).collect()
    }

    fn attach(
        &self,
        n: &Network,
        p: &EndpointPlan,
        _: Option<Policing>,
        _: PeerGoes,
    ) -> Vec<Planned> {
        let m = settings_of(n);
        let shim = m.shim.as_ref();
        let mut steps = vec![Planned {
            step: parent_step(m),
            undo: Vec::new(),
        }];
        steps.extend(plan::attach_macvlan(p, &m.parent, m.mode, shim));
        steps
    }

    fn detach(&self, n: Option<&Network>, ep: &Endpoint, namespace_open: bool) -> Vec<Step> {
        let shim = n
            .and_then(|n| n.macvlan.as_ref())
            .and_then(|m| m.shim.as_ref())
            .map(|s| s.name.as_str());
        plan::detach(
            ep.ip,
            ep.ip6,
            &Attached::Macvlan {
                ifname: &ep.ifname,
                namespace_open,
                shim,
            },
        )
    }
}
