//! Endpoints: the veth pair that wires a container's namespace to a network's bridge.
//! The host end (`ndv…`) is enslaved to the bridge; the other end becomes `ethN` inside,
//! with the container's address and MAC, and the default route when it carries it. Wired
//! in two steps (`create`, then `plug`), so that the endpoint's guard is in place before
//! a frame can pass.

use std::{fs::File, net::Ipv4Addr};

use anyhow::{Context, Result};

use crate::{netlink::Netlink, netns, sysctl};

/// Every host-side veth netd makes starts with this, so that leftovers are recognised.
pub const HOST_VETH_PREFIX: &str = "ndv";
/// The container-side end before it moves into the container's namespace.
pub const PEER_PREFIX: &str = "ndp";

pub struct EndpointSpec<'a> {
    /// Unique per endpoint: names the veth pair (at most 12 characters are used).
    pub id: &'a str,
    pub bridge_index: u32,
    pub ifname: &'a str,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub prefix: u8,
    pub mtu: Option<u32>,
    /// The default route's gateway, when this endpoint carries it.
    pub default_gateway: Option<Ipv4Addr>,
    /// The network has icc off: its bridge ports are isolated from each other.
    pub isolated: bool,
}

/// A veth pair made for an endpoint, not yet plugged in: both ends down, the host end
/// outside any bridge.
pub struct Veth {
    pub host_veth: String,
    pub host_ifindex: u32,
    peer: String,
}

impl Veth {
    /// The container end's name while it is in the node's namespace.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

/// Link names are at most 15 bytes.
pub fn host_veth_name(id: &str) -> String {
    format!("{HOST_VETH_PREFIX}{}", &id[..id.len().min(12)])
}

/// Docker's MAC scheme: 02:42 followed by the IPv4 address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `02:42:ac:11:00:02` back to bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Step one of wiring an endpoint: the veth pair, down, with its MTU and the container
/// end's MAC, IPv6 off on the host end. Nothing can pass through it yet, so the data path
/// can register the endpoint and attach its program before `plug` lets traffic in. On
/// failure nothing is left behind.
pub async fn create(node: &Netlink, spec: &EndpointSpec<'_>) -> Result<Veth> {
    let host_veth = host_veth_name(spec.id);
    let peer = format!("{PEER_PREFIX}{}", &spec.id[..spec.id.len().min(12)]);
    node.create_veth(&host_veth, &peer).await?;
    let host_ifindex = node
        .link_index(&host_veth)
        .await?
        .with_context(|| format!("veth {host_veth} vanished after creation"))?;
    let veth = Veth {
        host_veth,
        host_ifindex,
        peer,
    };
    let prepared = async {
        let peer_index = node
            .link_index(&veth.peer)
            .await?
            .context("veth peer vanished")?;
        if let Some(mtu) = spec.mtu {
            node.set_mtu(veth.host_ifindex, mtu).await?;
            node.set_mtu(peer_index, mtu).await?;
        }
        node.set_mac(peer_index, spec.mac).await?;
        sysctl::ipv6_off(&veth.host_veth)
    };
    if let Err(e) = prepared.await {
        let _ = node.delete_link(veth.host_ifindex).await;
        return Err(e);
    }
    Ok(veth)
}

/// Step two: the host end on the bridge (isolated if asked) and up, the other end moved
/// into the container as `ifname` with its address, IPv6 off, up, and the default route
/// if it carries it. On failure the pair is deleted.
pub async fn plug(node: &Netlink, ns: &File, spec: &EndpointSpec<'_>, veth: &Veth) -> Result<()> {
    let plugged = async {
        plug_host_end(node, spec, veth).await?;
        let peer_index = node
            .link_index(&veth.peer)
            .await?
            .context("veth peer vanished")?;
        node.move_to_netns(peer_index, ns).await?;
        configure_inside(ns, spec, &veth.peer).await
    };
    let result = plugged.await;
    if result.is_err() {
        // Deleting one end deletes the pair, wherever the peer is by now.
        let _ = node.delete_link(veth.host_ifindex).await;
    }
    result
}

/// Step two for an engine that moves the other end itself (Docker, at `Join`): the host
/// end on the bridge (isolated if asked) and up; the other end stays in the node's
/// namespace, down, under `Veth::peer`'s name. Nothing is undone on failure (the caller
/// deletes the pair).
pub async fn plug_host_end(node: &Netlink, spec: &EndpointSpec<'_>, veth: &Veth) -> Result<()> {
    node.set_controller(veth.host_ifindex, spec.bridge_index)
        .await?;
    if spec.isolated {
        node.set_port_isolated(veth.host_ifindex, true).await?;
    }
    node.up(veth.host_ifindex).await
}

/// Configure a container's interface, moved into `ns` under the name `peer`: renamed to
/// `ifname`, IPv6 off, its address, up, `lo` up, and the default route if it carries it.
pub async fn configure_inside(ns: &File, spec: &EndpointSpec<'_>, peer: &str) -> Result<()> {
    let inside = Netlink::connect_in(ns)?;
    let index = inside
        .link_index(peer)
        .await?
        .context("veth peer not found inside the container's namespace")?;
    inside.rename(index, spec.ifname).await?;
    let ifname = spec.ifname.to_string();
    netns::run_in(ns, move || sysctl::ipv6_off(&ifname))
        .with_context(|| format!("turn IPv6 off on {} in the container", spec.ifname))?;
    inside.add_address(index, spec.ip, spec.prefix).await?;
    inside.up(index).await?;
    bring_up_loopback(&inside).await?;
    if let Some(gateway) = spec.default_gateway {
        inside.add_default_route(gateway).await?;
    }
    Ok(())
}

/// `lo` up in a container's namespace (every mode with a namespace of its own).
pub async fn bring_up_loopback(inside: &Netlink) -> Result<()> {
    let lo = inside
        .link_index("lo")
        .await?
        .context("no lo in the container's namespace")?;
    inside.up(lo).await
}

/// Remove the endpoint's veth if it still exists (it dies with its namespace anyway).
/// By name: `host_veth` names a veth netd made (`ndv…`, which netd never lets a user
/// give a link).
pub async fn detach(node: &Netlink, host_veth: &str) -> Result<()> {
    if let Some(index) = node.link_index(host_veth).await? {
        node.delete_link(index).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_dockers_scheme_and_round_trip() {
        let mac = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(&mac), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(mac));
        assert_eq!(parse_mac(""), None);
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(host_veth_name("0123456789abcdef"), "ndv0123456789ab");
    }
}
