//! The daemon decides, then acts: what setting a network up, attaching or detaching an
//! endpoint takes is planned as a list of steps (by the network's driver, `driver`),
//! from the state and what was observed on the node, without touching anything; the
//! daemon's executor applies a plan through its `Node` and `Dataplane` traits and undoes
//! it in reverse on failure. Planning is pure, so the order of every change and of every
//! undo is unit-tested without root.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{Ipv4Net, Ipv6Net};
use netd_common::maps::{Endpoint6Info, EndpointInfo, NetworkInfo};

use crate::{endpoint, network_request::MacvlanMode, ports::PortBinding, state::Shim};

/// Where a link is: in the node's namespace, or in the container's the plan is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Node,
    Container,
}

/// How a container's interface is set up once it is inside: renamed from the name it
/// had in the node, addressed, up, with the default route if it carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inside {
    pub ifname: String,
    /// Its IPv4 address (with `prefix`); none on an IPv6-only network.
    pub ip: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Its IPv6 side, on a network with IPv6 (IPv6 stays off on it otherwise).
    pub ipv6: Option<Inside6>,
    /// Remove the link if configuring it fails half-way: a macvlan, which nothing else
    /// removes. Not a veth's container end: it goes with its pair, whose undo must first
    /// find the host end to forget the endpoint by.
    pub remove_on_failure: bool,
}

/// A container interface's IPv6 side: its address, its link-local address (the two the
/// kernel programs let it send from), and the default route's gateway if it carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inside6 {
    pub ip: Ipv6Addr,
    pub prefix: u8,
    pub link_local: Ipv6Addr,
    pub gateway: Option<Ipv6Addr>,
}

/// What netd's programs enforce for an endpoint: its IPv4 side, and its IPv6 side if it
/// has one.
pub type Policing = (EndpointInfo, Option<Endpoint6Info>);

/// One change to the node or to the data path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The container's namespace made usable: its loopback up; in a namespace of netd's
    /// own (`own`), IPv6 off for every interface made in it later too.
    PrepareNamespace {
        own: bool,
    },
    /// The bridge with the gateway address (if IPv4), a fixed MAC, the MTU if given, up; made if
    /// missing. IPv6 off, or with `gateway6` on, with that address and its link-local one.
    EnsureBridge {
        name: String,
        /// The IPv4 gateway and prefix; none on an IPv6-only network.
        gateway: Option<(Ipv4Addr, u8)>,
        gateway6: Option<(Ipv6Addr, u8)>,
        mac: [u8; 6],
        mtu: Option<u32>,
    },
    /// The network's entry in the data path (its subnet and policy); `None` removes it.
    SetNetwork {
        subnet: Ipv4Net,
        info: Option<NetworkInfo>,
    },
    /// The network's IPv6 subnet in the data path (the same tag and policy); `None`
    /// removes it.
    SetNetwork6 {
        subnet: Ipv6Net,
        info: Option<NetworkInfo>,
    },
    /// An overlay network set up on the node, by VXLAN ID: its network's tag, for frames
    /// to and from the node's VXLAN device; `None` removes it.
    SetOverlay {
        vni: u32,
        tag: Option<u32>,
    },
    /// A link that must already be there (a macvlan network's parent), up.
    RequireLink {
        name: String,
    },
    /// A veth pair that goes nowhere, both ends up: the parent of a macvlan network
    /// without one (this kernel has no dummy links).
    EnsureStubParent {
        name: String,
    },
    /// The node's shim on a parent: a bridge-mode macvlan with its addresses, up, and a
    /// host route through it to each of `routes` (of the families it has an address of).
    EnsureShim {
        shim: Shim,
        parent: String,
        routes: Vec<IpAddr>,
    },
    /// A veth pair in the node, both ends down.
    CreateVeth {
        host: String,
        peer: String,
    },
    /// A macvlan on `parent` in the node, down.
    CreateMacvlan {
        name: String,
        parent: String,
        mode: MacvlanMode,
    },
    SetMtu {
        link: String,
        mtu: u32,
    },
    SetMac {
        link: String,
        mac: [u8; 6],
    },
    /// IPv6 off on a link of the node (no router advertisement reaches or leaves it).
    Ipv6Off {
        link: String,
    },
    /// The endpoint registered with the data path (its IPv6 side too, or none: its IPv6
    /// is then dropped) and its program attached to the host end, before any frame can
    /// pass.
    Police {
        host_veth: String,
        info: EndpointInfo,
        info6: Option<Endpoint6Info>,
    },
    /// The host end on its bridge, isolated from the other ports if asked, and up.
    JoinBridge {
        link: String,
        bridge: String,
        isolated: bool,
    },
    /// A link of the node moved into the container's namespace.
    MoveIntoContainer {
        link: String,
    },
    /// The moved link configured inside (`Inside`).
    Configure {
        link: String,
        inside: Inside,
    },
    /// The node's route to a container's address through a link (a macvlan network's
    /// shim), from the node's address `src` of the same family.
    HostRoute {
        to: IpAddr,
        via: String,
        src: IpAddr,
    },
    DeleteHostRoute {
        to: IpAddr,
        via: String,
    },
    /// Delete a link if it is there.
    DeleteLink {
        at: At,
        link: String,
    },
    /// Unregister the endpoint: its program then drops all the endpoint still sends.
    /// Without the ifindex, the host end's present one.
    Forget {
        host_veth: String,
        ifindex: Option<u32>,
    },
    /// Remove the pinned link of the endpoint's program.
    Unpin {
        host_veth: String,
    },
    /// Remove the flows of a container address (either family) from the connection table.
    PurgeFlows {
        ip: IpAddr,
    },
    /// A published port, leading to the endpoint's address of the binding's family
    /// (`ip`, or `ip6` for a binding on an IPv6 address) behind the host veth `via`.
    Publish {
        binding: PortBinding,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
        via: String,
    },
    Unpublish {
        binding: PortBinding,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::PrepareNamespace { own } => match own {
                true => write!(f, "bring up the container's loopback, IPv6 off"),
                false => write!(f, "bring up the container's loopback"),
            },
            Step::EnsureBridge { name, .. } => write!(f, "set up bridge {name}"),
            Step::SetNetwork { subnet, info } => match info {
                Some(_) => write!(f, "register subnet {subnet} with the data path"),
                None => write!(f, "forget subnet {subnet} in the data path"),
            },
            Step::SetNetwork6 { subnet, info } => match info {
                Some(_) => write!(f, "register IPv6 subnet {subnet} with the data path"),
                None => write!(f, "forget IPv6 subnet {subnet} in the data path"),
            },
            Step::SetOverlay { vni, tag } => match tag {
                Some(_) => write!(f, "register VXLAN ID {vni} with the data path"),
                None => write!(f, "forget VXLAN ID {vni} in the data path"),
            },
            Step::RequireLink { name } => write!(f, "check that {name} is there"),
            Step::EnsureStubParent { name } => write!(f, "set up parent {name}"),
            Step::EnsureShim { shim, parent, .. } => {
                write!(f, "set up shim {} on {parent}", shim.name)
            }
            Step::CreateVeth { host, peer } => write!(f, "create veth {host}/{peer}"),
            Step::CreateMacvlan { name, parent, mode } => {
                write!(f, "create macvlan {name} on {parent} ({})", mode.name())
            }
            Step::SetMtu { link, mtu } => write!(f, "set the MTU of {link} to {mtu}"),
            Step::SetMac { link, mac } => {
                write!(f, "set the MAC of {link} to {}", endpoint::format_mac(mac))
            }
            Step::Ipv6Off { link } => write!(f, "turn IPv6 off on {link}"),
            Step::Police { host_veth, .. } => write!(f, "police {host_veth}"),
            Step::JoinBridge { link, bridge, .. } => write!(f, "put {link} on bridge {bridge}"),
            Step::MoveIntoContainer { link } => write!(f, "move {link} into the container"),
            Step::Configure { link, inside } => {
                let v4 = inside.ip.map(|ip| format!("{ip}/{}", inside.prefix));
                let v6 = inside.ipv6.map(|v6| format!("{}/{}", v6.ip, v6.prefix));
                let addresses: Vec<String> = v4.into_iter().chain(v6).collect();
                write!(
                    f,
                    "configure {link} as {} with {}",
                    inside.ifname,
                    addresses.join(" and ")
                )
            }
            Step::HostRoute { to, via, .. } => write!(f, "route the node to {to} through {via}"),
            Step::DeleteHostRoute { to, via } => {
                write!(f, "remove the node's route to {to} through {via}")
            }
            Step::DeleteLink { at, link } => match at {
                At::Node => write!(f, "remove {link}"),
                At::Container => write!(f, "remove {link} from the container"),
            },
            Step::Forget { host_veth, .. } => write!(f, "forget endpoint {host_veth}"),
            Step::Unpin { host_veth } => write!(f, "unpin the program link of {host_veth}"),
            Step::PurgeFlows { ip } => write!(f, "purge the flows of {ip}"),
            Step::Publish {
                binding, ip, ip6, ..
            } => match (binding.host_ip, ip, ip6) {
                (IpAddr::V4(_), Some(ip), _) => write!(f, "publish {binding} to {ip}"),
                (IpAddr::V4(_), None, _) => write!(f, "publish {binding} (no IPv4 address)"),
                (IpAddr::V6(_), _, Some(ip6)) => write!(f, "publish {binding} to {ip6}"),
                (IpAddr::V6(_), _, None) => write!(f, "publish {binding} (no IPv6 address)"),
            },
            Step::Unpublish { binding } => write!(f, "unpublish {binding}"),
        }
    }
}

/// A step and what undoes it (in this order) if a later step fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub step: Step,
    pub undo: Vec<Step>,
}

fn step(step: Step) -> Planned {
    Planned {
        step,
        undo: Vec::new(),
    }
}

fn undone_by(step: Step, undo: Vec<Step>) -> Planned {
    Planned { step, undo }
}

/// What an endpoint is to be.
#[derive(Clone, Debug)]
pub struct EndpointPlan<'a> {
    /// Unique per endpoint: names its links (at most 12 characters are used).
    pub id: &'a str,
    /// Its IPv4 address; none on an IPv6-only network.
    pub ip: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    pub ifname: &'a str,
    pub prefix: u8,
    pub mtu: Option<u32>,
    /// The default route's gateway, when this endpoint carries it.
    pub gateway: Option<Ipv4Addr>,
    /// Its IPv6 side, on a network with IPv6.
    pub ipv6: Option<Inside6>,
}

impl EndpointPlan<'_> {
    /// The container end's (or the macvlan's) name while it is in the node.
    pub fn peer_name(&self) -> String {
        peer_name(self.id)
    }

    fn inside(&self, remove_on_failure: bool) -> Inside {
        Inside {
            ifname: self.ifname.to_string(),
            ip: self.ip,
            prefix: self.prefix,
            gateway: self.gateway,
            ipv6: self.ipv6,
            remove_on_failure,
        }
    }
}

/// The name of the container end (or the macvlan) of endpoint `id` while it is in the
/// node.
pub fn peer_name(id: &str) -> String {
    format!("{}{}", endpoint::PEER_PREFIX, &id[..id.len().min(12)])
}

/// The network's MTU on each of `links` (when it has one), the container's MAC on `mac_on`.
fn mtu_and_mac(p: &EndpointPlan, links: &[&str], mac_on: &str) -> Vec<Planned> {
    let mtus = p.mtu.into_iter().flat_map(|mtu| {
        links.iter().map(move |l| {
            step(Step::SetMtu {
                link: l.to_string(),
                mtu,
            })
        })
    });
    mtus.chain([step(Step::SetMac {
        link: mac_on.to_string(),
        mac: p.mac,
    })])
    .collect()
}

/// Where a bridge endpoint's container end goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerGoes {
    /// Into the container's namespace, configured there.
    IntoContainer,
    /// Nowhere: an engine moves it itself (Docker, at `Join`).
    Stays,
}

/// A bridge endpoint: the veth pair down, its MTU, the container end's MAC, IPv6 off on
/// the host end; then the program attached to the host end (no frame can pass before);
/// then the host end on the bridge and up; then the container end moved and configured.
/// A failure undoes what was done in reverse: the endpoint is forgotten first (its
/// program drops all it still sends), the pair deleted, the program's link unpinned.
pub fn attach_bridge(
    p: &EndpointPlan,
    bridge: &str,
    isolated: bool,
    (info, info6): Policing,
    peer_goes: PeerGoes,
) -> Vec<Planned> {
    let host = endpoint::host_veth_name(p.id);
    let peer = p.peer_name();
    let mut plan = vec![undone_by(
        Step::CreateVeth {
            host: host.clone(),
            peer: peer.clone(),
        },
        vec![
            Step::DeleteLink {
                at: At::Node,
                link: host.clone(),
            },
            Step::Unpin {
                host_veth: host.clone(),
            },
        ]
        .into_iter()
        .chain(purge_flows(p.ip, p.ipv6.map(|v6| v6.ip)))
        .collect(),
    )];
    plan.extend(mtu_and_mac(p, &[&host, &peer], &peer));
    plan.push(step(Step::Ipv6Off { link: host.clone() }));
    plan.push(undone_by(
        Step::Police {
            host_veth: host.clone(),
            info,
            info6,
        },
        vec![Step::Forget {
            host_veth: host.clone(),
            ifindex: None,
        }],
    ));
    plan.push(step(Step::JoinBridge {
        link: host,
        bridge: bridge.to_string(),
        isolated,
    }));
    if peer_goes == PeerGoes::IntoContainer {
        plan.push(step(Step::MoveIntoContainer { link: peer.clone() }));
        plan.push(step(Step::Configure {
            link: peer,
            inside: p.inside(false),
        }));
    }
    plan
}

/// A macvlan endpoint: the macvlan on the parent, down, with its MTU and MAC, moved into
/// the container and configured there; with a shim, the node's route to it. No program:
/// its frames never cross the node's stack.
pub fn attach_macvlan(
    p: &EndpointPlan,
    parent: &str,
    mode: MacvlanMode,
    shim: Option<&Shim>,
) -> Vec<Planned> {
    let name = p.peer_name();
    let mut plan = vec![undone_by(
        Step::CreateMacvlan {
            name: name.clone(),
            parent: parent.to_string(),
            mode,
        },
        vec![Step::DeleteLink {
            at: At::Node,
            link: name.clone(),
        }],
    )];
    plan.extend(mtu_and_mac(p, &[&name], &name));
    plan.push(undone_by(
        Step::MoveIntoContainer { link: name.clone() },
        vec![Step::DeleteLink {
            at: At::Container,
            link: name.clone(),
        }],
    ));
    plan.push(undone_by(
        Step::Configure {
            link: name,
            inside: p.inside(true),
        },
        vec![Step::DeleteLink {
            at: At::Container,
            link: p.ifname.to_string(),
        }],
    ));
    if let Some(shim) = shim {
        plan.extend(shim_routes(shim, p.ip, p.ipv6.map(|v6| v6.ip)).map(step));
    }
    plan
}

/// The node's routes through its shim to a container's addresses: IPv4's, and IPv6's if
/// both have IPv6.
fn shim_routes(
    shim: &Shim,
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
) -> impl Iterator<Item = Step> {
    let v4 = ip
        .zip(shim.ip)
        .map(|(to, src)| (IpAddr::from(to), IpAddr::from(src)));
    let v6 = ip6
        .zip(shim.ip6)
        .map(|(to, src)| (IpAddr::from(to), IpAddr::from(src)));
    [v4, v6]
        .into_iter()
        .flatten()
        .map(|(to, src)| Step::HostRoute {
            to,
            via: shim.name.clone(),
            src,
        })
}

/// Where a container's published ports lead: its endpoint's address (IPv6 too, on a
/// dual-stack network) behind its host veth.
#[derive(Clone, Copy, Debug)]
pub struct PublishTo<'a> {
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub via: &'a str,
}

impl PublishTo<'_> {
    fn step(&self, binding: &PortBinding) -> Step {
        Step::Publish {
            binding: *binding,
            ip: self.ip,
            ip6: self.ip6,
            via: self.via.to_string(),
        }
    }
}

/// A container's published ports, leading to `to`; each undone if a later one fails.
pub fn publish(ports: &[PortBinding], to: &PublishTo) -> Vec<Planned> {
    ports
        .iter()
        .map(|b| undone_by(to.step(b), vec![Step::Unpublish { binding: *b }]))
        .collect()
}

/// Unpublish a container's ports, every one tried.
pub fn unpublish(ports: &[PortBinding]) -> Vec<Step> {
    ports
        .iter()
        .map(|b| Step::Unpublish { binding: *b })
        .collect()
}

/// Replace an endpoint's published ports `old` by `new` (Docker's
/// `ProgramExternalConnectivity`, which may come again for the same endpoint): the ports
/// no longer wanted unpublished first, then every wanted one published, a binding of
/// `old` with the same key replaced in place. A failure restores `old` as it was.
pub fn republish(old: &[PortBinding], new: &[PortBinding], to: &PublishTo) -> Vec<Planned> {
    let publish_step = |b: &PortBinding| to.step(b);
    let dropped = old
        .iter()
        .filter(|b| !new.iter().any(|n| n.same_key(b)))
        .map(|b| undone_by(Step::Unpublish { binding: *b }, vec![publish_step(b)]));
    let wanted = new.iter().map(|b| {
        let undo = match old.iter().find(|o| o.same_key(b)) {
            Some(replaced) => publish_step(replaced),
            None => Step::Unpublish { binding: *b },
        };
        undone_by(publish_step(b), vec![undo])
    });
    dropped.chain(wanted).collect()
}

/// Whose network namespace a new container has, for what preparing it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// One netd made for it.
    Own,
    /// One it was given (`--netns`, a CNI runtime's).
    Given,
    /// None to prepare: the node's, another container's, or none yet (an engine's).
    Shared,
}

/// A new container's networking as one plan: its namespace prepared, then its endpoint
/// (`endpoint`: its driver's `attach`, empty without one), then its published ports,
/// leading to the endpoint's address behind its host veth (`to`). A failure anywhere
/// undoes everything before it in reverse: the ports before the endpoint.
pub fn create_container(
    ns: Namespace,
    endpoint: Vec<Planned>,
    ports: &[PortBinding],
    to: Option<PublishTo>,
) -> Vec<Planned> {
    let prepare = match ns {
        Namespace::Own => Some(true),
        Namespace::Given => Some(false),
        Namespace::Shared => None,
    };
    let mut plan: Vec<Planned> = prepare
        .map(|own| step(Step::PrepareNamespace { own }))
        .into_iter()
        .collect();
    plan.extend(endpoint);
    if let Some(to) = to {
        plan.extend(publish(ports, &to));
    }
    plan
}

/// Removing a container's networking (or one endpoint of it, with the ports that lead
/// there: `netd network disconnect`): its ports unpublished first, so that no new connection is sent to an endpoint
/// on its way out; then each endpoint's detachment (`detach`). Every step is tried.
pub fn remove_networking(ports: &[PortBinding], endpoints: Vec<Vec<Step>>) -> Vec<Step> {
    let mut steps = unpublish(ports);
    steps.extend(endpoints.into_iter().flatten());
    steps
}

/// What an endpoint that exists now is, for its detachment.
#[derive(Clone, Debug)]
pub enum Attached<'a> {
    /// A veth on a bridge, policed.
    Bridge { host_veth: &'a str, ifindex: u32 },
    /// A macvlan in the container (removable while its namespace is open), with the
    /// node's shim route to it if the network has a shim.
    Macvlan {
        ifname: &'a str,
        namespace_open: bool,
        shim: Option<&'a str>,
    },
}

/// Detach an endpoint at `ip`: every step is tried whatever the others do. A policed
/// endpoint is forgotten first (its program then drops all it still sends), its veth
/// deleted, its program's link unpinned, and its flows (of `ip` and `ip6`) purged last,
/// when it can create no more.
pub fn detach(ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>, attached: &Attached) -> Vec<Step> {
    match *attached {
        Attached::Bridge { host_veth, ifindex } => vec![
            Step::Forget {
                host_veth: host_veth.to_string(),
                // 0: never known (its veth vanished before it was looked up).
                ifindex: (ifindex != 0).then_some(ifindex),
            },
            Step::DeleteLink {
                at: At::Node,
                link: host_veth.to_string(),
            },
            Step::Unpin {
                host_veth: host_veth.to_string(),
            },
        ]
        .into_iter()
        .chain(purge_flows(ip, ip6))
        .collect(),
        Attached::Macvlan {
            ifname,
            namespace_open,
            shim,
        } => {
            let addresses = [ip.map(IpAddr::from), ip6.map(IpAddr::from)];
            let mut steps: Vec<Step> = shim
                .into_iter()
                .flat_map(|via| {
                    addresses
                        .into_iter()
                        .flatten()
                        .map(|to| Step::DeleteHostRoute {
                            to,
                            via: via.to_string(),
                        })
                })
                .collect();
            if namespace_open {
                steps.push(Step::DeleteLink {
                    at: At::Container,
                    link: ifname.to_string(),
                });
            }
            steps
        }
    }
}

/// Purge the flows of an endpoint's addresses: each family's it has.
fn purge_flows(ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> impl Iterator<Item = Step> {
    ip.map(IpAddr::from)
        .into_iter()
        .chain(ip6.map(IpAddr::from))
        .map(|ip| Step::PurgeFlows { ip })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> EndpointPlan<'static> {
        EndpointPlan {
            id: "0123456789abcdef",
            ip: Some(Ipv4Addr::new(172, 18, 0, 2)),
            mac: endpoint::mac_for(Ipv4Addr::new(172, 18, 0, 2)),
            ifname: "eth1",
            prefix: 16,
            mtu: Some(1400),
            gateway: Some(Ipv4Addr::new(172, 18, 0, 1)),
            ipv6: None,
        }
    }

    /// What undoing all of `steps` runs, in order.
    fn undos(steps: &[Planned]) -> Vec<String> {
        steps
            .iter()
            .rev()
            .flat_map(|p| p.undo.iter().map(|s| s.to_string()))
            .collect()
    }

    fn names(steps: &[Planned]) -> Vec<String> {
        steps.iter().map(|p| p.step.to_string()).collect()
    }

    #[test]
    fn a_bridge_endpoint_is_policed_before_it_joins_the_bridge_or_the_container() {
        let steps = attach_bridge(
            &plan(),
            "br-x",
            true,
            (EndpointInfo::default(), None),
            PeerGoes::IntoContainer,
        );
        assert_eq!(
            names(&steps),
            [
                "create veth ndv0123456789ab/ndp0123456789ab",
                "set the MTU of ndv0123456789ab to 1400",
                "set the MTU of ndp0123456789ab to 1400",
                "set the MAC of ndp0123456789ab to 02:42:ac:12:00:02",
                "turn IPv6 off on ndv0123456789ab",
                "police ndv0123456789ab",
                "put ndv0123456789ab on bridge br-x",
                "move ndp0123456789ab into the container",
                "configure ndp0123456789ab as eth1 with 172.18.0.2/16",
            ]
        );
        // Undone in reverse: forgotten (its program drops all) before the pair goes, the
        // program's link unpinned only after, the flows it made purged last.
        let undo = undos(&steps);
        assert_eq!(
            undo,
            [
                "forget endpoint ndv0123456789ab",
                "remove ndv0123456789ab",
                "unpin the program link of ndv0123456789ab",
                "purge the flows of 172.18.0.2",
            ]
        );
        let dual_stack: Vec<String> = detach(
            Some(Ipv4Addr::new(172, 18, 0, 2)),
            Some("fd00:18::2".parse().unwrap()),
            &Attached::Bridge {
                host_veth: "ndv1",
                ifindex: 7,
            },
        )
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            dual_stack[3..],
            [
                "purge the flows of 172.18.0.2",
                "purge the flows of fd00:18::2"
            ]
        );
    }

    #[test]
    fn a_dual_stack_endpoint_registers_its_ipv6_side_when_it_is_policed() {
        let mut p = plan();
        p.mtu = None;
        p.ipv6 = Some(Inside6 {
            ip: "fd00:1::2".parse().unwrap(),
            prefix: 64,
            link_local: netd_common::user::link_local_for(p.mac),
            gateway: Some("fd00:1::1".parse().unwrap()),
        });
        let info6 = Endpoint6Info::default();
        let steps = attach_bridge(
            &p,
            "br-x",
            false,
            (EndpointInfo::default(), Some(info6)),
            PeerGoes::IntoContainer,
        );
        let police = steps
            .iter()
            .find(|s| matches!(s.step, Step::Police { .. }))
            .unwrap();
        assert!(matches!(police.step, Step::Police { info6: Some(_), .. }));
        // Undone like IPv4's: forgetting the endpoint forgets its IPv6 side too.
        assert_eq!(
            police.undo,
            [Step::Forget {
                host_veth: "ndv0123456789ab".into(),
                ifindex: None
            }]
        );
        assert_eq!(
            names(&steps).last().unwrap(),
            "configure ndp0123456789ab as eth1 with 172.18.0.2/16 and fd00:1::2/64"
        );
        // The host end is a bridge port: IPv6 off there all the same.
        assert!(names(&steps).contains(&"turn IPv6 off on ndv0123456789ab".to_string()));
    }

    #[test]
    fn an_engines_endpoint_leaves_the_container_end_in_the_node() {
        let mut p = plan();
        p.mtu = None;
        let steps = attach_bridge(
            &p,
            "br-x",
            false,
            (EndpointInfo::default(), None),
            PeerGoes::Stays,
        );
        assert_eq!(
            names(&steps).last().map(String::as_str),
            Some("put ndv0123456789ab on bridge br-x")
        );
        assert!(!names(&steps).iter().any(|s| s.contains("MTU")));
    }

    #[test]
    fn a_macvlan_endpoint_has_no_program_and_routes_the_shim_last() {
        let shim = Shim {
            name: "nhabc".into(),
            ip: Some(Ipv4Addr::new(172, 18, 0, 3)),
            ip6: None,
        };
        let steps = attach_macvlan(&plan(), "eth1", MacvlanMode::Bridge, Some(&shim));
        assert_eq!(
            names(&steps),
            [
                "create macvlan ndp0123456789ab on eth1 (bridge)",
                "set the MTU of ndp0123456789ab to 1400",
                "set the MAC of ndp0123456789ab to 02:42:ac:12:00:02",
                "move ndp0123456789ab into the container",
                "configure ndp0123456789ab as eth1 with 172.18.0.2/16",
                "route the node to 172.18.0.2 through nhabc",
            ]
        );
        assert!(!names(&steps).iter().any(|s| s.starts_with("police")));
        // Wherever the macvlan is when a step fails, an undo finds it.
        let undo = undos(&steps);
        assert_eq!(
            undo,
            [
                "remove eth1 from the container",
                "remove ndp0123456789ab from the container",
                "remove ndp0123456789ab",
            ]
        );
    }

    #[test]
    fn a_dual_stack_macvlan_endpoint_is_routed_through_a_dual_stack_shim_both_ways() {
        let mut p = plan();
        p.ipv6 = Some(Inside6 {
            ip: "fd00:77::101".parse().unwrap(),
            prefix: 64,
            link_local: "fe80::42:acff:fe12:2".parse().unwrap(),
            gateway: None,
        });
        let mut shim = Shim {
            name: "nhabc".into(),
            ip: Some(Ipv4Addr::new(172, 18, 0, 3)),
            ip6: Some("fd00:77::100".parse().unwrap()),
        };
        let routes = |shim: &Shim| -> Vec<String> {
            names(&attach_macvlan(&p, "eth1", MacvlanMode::Bridge, Some(shim)))
                .into_iter()
                .filter(|s| s.starts_with("route"))
                .collect()
        };
        assert_eq!(
            routes(&shim),
            [
                "route the node to 172.18.0.2 through nhabc",
                "route the node to fd00:77::101 through nhabc",
            ]
        );
        // A shim without an IPv6 address has no source for an IPv6 route: IPv4 only.
        shim.ip6 = None;
        assert_eq!(
            routes(&shim),
            ["route the node to 172.18.0.2 through nhabc"]
        );
        let gone = detach(
            p.ip,
            p.ipv6.map(|v6| v6.ip),
            &Attached::Macvlan {
                ifname: "eth0",
                namespace_open: false,
                shim: Some("nhabc"),
            },
        );
        assert_eq!(gone.len(), 2, "{gone:?}");
    }

    #[test]
    fn detaching_forgets_before_it_deletes_and_purges_last() {
        let ip = Some(Ipv4Addr::new(172, 18, 0, 2));
        let steps: Vec<String> = detach(
            ip,
            None,
            &Attached::Bridge {
                host_veth: "ndv1",
                ifindex: 7,
            },
        )
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            steps,
            [
                "forget endpoint ndv1",
                "remove ndv1",
                "unpin the program link of ndv1",
                "purge the flows of 172.18.0.2",
            ]
        );
        let gone_namespace = detach(
            ip,
            None,
            &Attached::Macvlan {
                ifname: "eth0",
                namespace_open: false,
                shim: Some("nhabc"),
            },
        );
        assert_eq!(
            gone_namespace,
            [Step::DeleteHostRoute {
                to: Ipv4Addr::new(172, 18, 0, 2).into(),
                via: "nhabc".into()
            }]
        );
    }

    fn binding(host_port: u16) -> PortBinding {
        PortBinding {
            proto: crate::ports::Proto::Tcp,
            container_port: 80,
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port,
        }
    }

    #[test]
    fn a_new_container_is_one_plan_whose_ports_are_undone_before_its_endpoint() {
        let p = plan();
        let attach = attach_bridge(
            &p,
            "br-x",
            false,
            (EndpointInfo::default(), None),
            PeerGoes::IntoContainer,
        );
        let steps = create_container(
            Namespace::Own,
            attach,
            &[binding(8080), binding(8081)],
            Some(PublishTo {
                ip: p.ip,
                ip6: None,
                via: "ndv0123456789ab",
            }),
        );
        let names = names(&steps);
        assert_eq!(
            names.first().map(String::as_str),
            Some("bring up the container's loopback, IPv6 off")
        );
        assert_eq!(
            names[names.len() - 2..],
            [
                "publish 80/tcp -> 0.0.0.0:8080 to 172.18.0.2",
                "publish 80/tcp -> 0.0.0.0:8081 to 172.18.0.2",
            ]
        );
        // A failure at the last port: the ports before it go first, then the endpoint.
        let undo = undos(&steps[..steps.len() - 1]);
        assert_eq!(
            undo,
            [
                "unpublish 80/tcp -> 0.0.0.0:8080",
                "forget endpoint ndv0123456789ab",
                "remove ndv0123456789ab",
                "unpin the program link of ndv0123456789ab",
                "purge the flows of 172.18.0.2",
            ]
        );
    }

    #[test]
    fn a_container_without_a_namespace_of_its_own_or_an_endpoint_plans_nothing() {
        assert!(create_container(Namespace::Shared, Vec::new(), &[], None).is_empty());
        let given = create_container(Namespace::Given, Vec::new(), &[], None);
        assert_eq!(names(&given), ["bring up the container's loopback"]);
    }

    #[test]
    fn removing_unpublishes_before_any_endpoint_goes() {
        let ip = Some(Ipv4Addr::new(172, 18, 0, 2));
        let eth0 = detach(
            ip,
            None,
            &Attached::Bridge {
                host_veth: "ndv1",
                ifindex: 7,
            },
        );
        let eth1 = detach(
            Some(Ipv4Addr::new(10, 0, 0, 5)),
            None,
            &Attached::Macvlan {
                ifname: "eth1",
                namespace_open: true,
                shim: None,
            },
        );
        let steps: Vec<String> = remove_networking(&[binding(8080)], vec![eth0, eth1])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            steps,
            [
                "unpublish 80/tcp -> 0.0.0.0:8080",
                "forget endpoint ndv1",
                "remove ndv1",
                "unpin the program link of ndv1",
                "purge the flows of 172.18.0.2",
                "remove eth1 from the container",
            ]
        );
    }

    #[test]
    fn republishing_drops_only_what_is_no_longer_wanted_and_restores_it_on_failure() {
        let ip = Some(Ipv4Addr::new(172, 18, 0, 2));
        let mut moved = binding(8080);
        moved.container_port = 81;
        let to = PublishTo {
            ip,
            ip6: None,
            via: "ndv1",
        };
        let steps = republish(
            &[binding(8080), binding(9090)],
            &[moved, binding(7070)],
            &to,
        );
        assert_eq!(
            names(&steps),
            [
                "unpublish 80/tcp -> 0.0.0.0:9090",
                "publish 81/tcp -> 0.0.0.0:8080 to 172.18.0.2",
                "publish 80/tcp -> 0.0.0.0:7070 to 172.18.0.2",
            ]
        );
        // Undone: the replaced binding is published as it was, the dropped one again.
        assert_eq!(
            undos(&steps[..2]),
            [
                "publish 80/tcp -> 0.0.0.0:8080 to 172.18.0.2",
                "publish 80/tcp -> 0.0.0.0:9090 to 172.18.0.2",
            ]
        );
    }
}
