//! Endpoints: the veth pair that wires a container's namespace to a network's bridge.
//! The host end is enslaved to the bridge; the other end becomes `eth0` inside, with the
//! container's address and a default route via the gateway.

use std::{fs::File, net::Ipv4Addr};

use anyhow::{Context, Result};

use crate::netlink::Netlink;

pub struct EndpointSpec<'a> {
    /// Unique per container: names the veth pair.
    pub id: &'a str,
    pub bridge_index: u32,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

pub struct Endpoint {
    pub host_veth: String,
    pub host_ifindex: u32,
}

/// Link names are at most 15 bytes.
pub fn host_veth_name(id: &str) -> String {
    format!("veth{}", &id[..id.len().min(11)])
}

/// Create and configure the endpoint; on failure nothing is left behind.
pub async fn attach(node: &Netlink, ns: &File, spec: &EndpointSpec<'_>) -> Result<Endpoint> {
    let host_veth = host_veth_name(spec.id);
    let peer = format!("ctr{}", &spec.id[..spec.id.len().min(12)]);
    node.create_veth(&host_veth, &peer).await?;
    let host_ifindex = node
        .link_index(&host_veth)
        .await?
        .with_context(|| format!("veth {host_veth} vanished after creation"))?;
    match configure(node, ns, spec, host_ifindex, &peer).await {
        Ok(()) => Ok(Endpoint {
            host_veth,
            host_ifindex,
        }),
        Err(e) => {
            // Deleting one end deletes the pair, wherever the peer is by now.
            let _ = node.delete_link(host_ifindex).await;
            Err(e)
        }
    }
}

async fn configure(
    node: &Netlink,
    ns: &File,
    spec: &EndpointSpec<'_>,
    host_ifindex: u32,
    peer: &str,
) -> Result<()> {
    let peer_index = node.link_index(peer).await?.context("veth peer vanished")?;
    node.set_controller(host_ifindex, spec.bridge_index).await?;
    node.up(host_ifindex).await?;
    node.move_to_netns(peer_index, ns).await?;
    let inside = Netlink::connect_in(ns)?;
    let index = inside
        .link_index(peer)
        .await?
        .context("veth peer not found inside the container's namespace")?;
    inside.rename(index, "eth0").await?;
    inside.add_address(index, spec.ip, spec.prefix).await?;
    inside.up(index).await?;
    let lo = inside
        .link_index("lo")
        .await?
        .context("no lo in the container's namespace")?;
    inside.up(lo).await?;
    inside.add_default_route(spec.gateway).await
}

/// Remove the endpoint's veth if it still exists (it dies with its namespace anyway).
pub async fn detach(node: &Netlink, host_veth: &str) -> Result<()> {
    if let Some(index) = node.link_index(host_veth).await? {
        node.delete_link(index).await?;
    }
    Ok(())
}
