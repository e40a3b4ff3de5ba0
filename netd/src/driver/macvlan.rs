//! The macvlan driver: containers straight on the LAN, each with its own MAC and address,
//! as Docker's `-d macvlan`. A container's interface is a macvlan link on the network's
//! parent, made in the node (named like a veth's container end, so that a daemon that
//! dies before moving it leaves nothing its next start does not remove), moved into the
//! container and configured there. No program sees its traffic: it never crosses the
//! node's stack.

use std::fs::File;

use anyhow::{Context, Result, bail};
use netlink_packet_route::link::MacVlanMode as KernelMode;

use crate::{
    endpoint,
    netlink::Netlink,
    network_request::MacvlanMode,
    state::{MacvlanNet, Network, Shim},
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

/// The network's parent, present (made if netd makes it) and up; its index.
pub async fn ensure_parent(node: &Netlink, n: &Network, m: &MacvlanNet) -> Result<u32> {
    if let Some(index) = node.link_index(&m.parent).await? {
        node.up(index).await?;
        return Ok(index);
    }
    if !m.parent_made {
        bail!(
            "parent interface {} of macvlan network {} is missing",
            m.parent,
            n.name
        );
    }
    let peer = made_parent_peer(&m.parent);
    node.create_veth(&m.parent, &peer).await?;
    let index = node
        .link_index(&m.parent)
        .await?
        .with_context(|| format!("{} vanished after creation", m.parent))?;
    crate::sysctl::ipv6_off(&m.parent)?;
    let peer_index = node.link_index(&peer).await?.context("peer vanished")?;
    node.up(peer_index).await?;
    node.up(index).await?;
    Ok(index)
}

/// The shim's name for a network.
pub fn shim_name(network_id: &str) -> String {
    format!("nh{}", &network_id[..network_id.len().min(12)])
}

/// The node's shim on the parent (bridge mode, the address's MAC, the address as /32,
/// up) and a host route through it to each of `containers`; idempotent. Its index.
pub async fn ensure_shim(
    node: &Netlink,
    parent: u32,
    shim: &Shim,
    containers: &[std::net::Ipv4Addr],
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
            node.set_mac(i, endpoint::mac_for(shim.ip)).await?;
            crate::sysctl::ipv6_off(&shim.name)?;
            i
        }
    };
    let has = node
        .ipv4_addresses()
        .await?
        .iter()
        .any(|(i, a)| *i == index && a.addr() == shim.ip);
    if !has {
        node.add_address(index, shim.ip, 32).await?;
    }
    node.up(index).await?;
    for ip in containers {
        node.replace_host_route(*ip, index, shim.ip).await?;
    }
    Ok(index)
}

/// Remove the shim, with its routes, if it is there.
pub async fn remove_shim(node: &Netlink, shim: &Shim) -> Result<()> {
    if let Some(index) = node.link_index(&shim.name).await? {
        node.delete_link(index).await?;
    }
    Ok(())
}

/// Remove a parent netd made, if it is there.
pub async fn remove_parent(node: &Netlink, m: &MacvlanNet) -> Result<()> {
    if !m.parent_made {
        return Ok(());
    }
    if let Some(index) = node.link_index(&m.parent).await? {
        node.delete_link(index).await?;
    }
    Ok(())
}

/// Is the container's macvlan `ifname` in `ns`?
pub async fn is_present(ns: &File, ifname: &str) -> Result<bool> {
    Ok(Netlink::connect_in(ns)?.link_index(ifname).await?.is_some())
}
