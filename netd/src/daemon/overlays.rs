//! This node's share of the cluster's overlay networks: set up when its first container on
//! one arrives and torn down when its last leaves (its address blocks given back then);
//! addresses from the node's own blocks; each container recorded in the store for the
//! other nodes; and the data path's table of the other nodes' containers, kept from the
//! store by a task of its own.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::anyhow;
use log::{info, warn};

use super::{ClusterMember, Inner};
use crate::{
    api::ApiError,
    datapath::RemoteTable,
    driver, ipam,
    state::{Network, OverlayNet},
};

impl Inner {
    /// Overlay network `name` set up on this node, if it is one of the cluster's and is
    /// not here yet: a bridge with the overlay's gateway and MTU, its subnet and VXLAN ID
    /// registered with the data path.
    pub(super) async fn overlay_here(&mut self, name: &str) -> Result<(), ApiError> {
        if self.state.networks.contains_key(name) {
            return Ok(());
        }
        let Some(member) = self.cluster.clone() else {
            return Ok(());
        };
        let Some(o) = member.overlay(name) else {
            return Ok(());
        };
        let mtu = member.overlay_mtu().ok_or_else(|| {
            ApiError::unavailable(anyhow!(
                "network {name}: this node's VXLAN device is not set up yet"
            ))
        })?;
        let n = Network {
            id: o.id.clone(),
            name: o.name.clone(),
            driver: "overlay".into(),
            bridge: format!("ov{}", o.vni),
            macvlan: None,
            subnet: Some(o.subnet),
            gateway: Some(o.gateway),
            ip_range: o.ip_range,
            ipv6: o.network6(),
            aux_addresses: BTreeMap::new(),
            internal: o.internal,
            icc: true,
            masquerade: !o.internal,
            mtu: Some(mtu),
            gateway_mode: Default::default(),
            options: BTreeMap::new(),
            tag: self.next_network_tag(),
            last_allocated: None,
            created: o.created,
            docker_id: None,
            overlay: Some(OverlayNet { vni: o.vni }),
        };
        // As a network's creation: recorded first, undone if its set-up fails.
        self.state.networks.insert(n.name.clone(), n.clone());
        self.save()?;
        let plan = driver::of(&n).setup(&n, &[], true);
        if let Err(e) = self.apply_plan(None, &plan).await {
            self.state.networks.remove(&n.name);
            self.save()?;
            return Err(ApiError::from(
                e.context(format!("set up overlay network {name} on this node")),
            ));
        }
        // Its IPv6 leaves by this node, as a bridge network's.
        self.route_ipv6_if_needed();
        info!(
            "network {name}: overlay set up on this node: bridge {}, subnet {}{}, VXLAN ID {}, MTU {mtu}",
            n.bridge,
            o.subnet,
            o.ipv6
                .map(|v6| format!(" and {}", v6.subnet))
                .unwrap_or_default(),
            o.vni
        );
        Ok(())
    }

    /// The node's overlay endpoints as its containers have them: records of containers
    /// gone are removed from the store, and an overlay with none of the node's containers
    /// left is torn down here, its blocks given back.
    pub(super) async fn settle_overlays(&mut self) {
        let Some(member) = self.cluster.clone() else {
            return;
        };
        let keep = self.overlay_endpoints();
        let keys: BTreeSet<(String, Ipv4Addr)> =
            keep.iter().map(|(n, ip, _)| (n.clone(), *ip)).collect();
        member.retain_endpoints(&keys).await;
        let idle: Vec<Network> = self
            .state
            .networks
            .values()
            .filter(|n| n.overlay.is_some() && !keys.iter().any(|(net, _)| *net == n.name))
            .cloned()
            .collect();
        for n in idle {
            match self.drop_network(&n).await {
                Ok(left) => {
                    for w in left {
                        warn!("network {}: {w}", n.name);
                    }
                }
                Err(e) => warn!("network {}: tear down: {:#}", n.name, e.error),
            }
            member.release_blocks(&n.name).await;
        }
    }

    /// Every endpoint of this node's containers on an overlay: network, address, container.
    pub(super) fn overlay_endpoints(&self) -> Vec<(String, Ipv4Addr, String)> {
        self.state
            .endpoints()
            .filter(|(_, e)| {
                self.state
                    .networks
                    .get(&e.network)
                    .is_some_and(|n| n.overlay.is_some())
            })
            .filter_map(|(c, e)| Some((e.network.clone(), e.ip?, c.name.clone())))
            .collect()
    }

    /// An address for a container of this node on overlay network `n`: the static one
    /// asked for (any free host address of the subnet, whoever's block it is in), or the
    /// next free one of the node's address blocks; recorded for the cluster under
    /// `container` (an address another node recorded first is refused, naming it).
    pub(super) async fn overlay_address(
        &self,
        n: &Network,
        wanted: Option<&str>,
        wanted6: Option<&str>,
        container: &str,
    ) -> Result<(Ipv4Addr, Option<Ipv6Addr>), ApiError> {
        if wanted6.is_some() && n.ipv6.is_none() {
            // The network's own refusal of an IPv6 address.
            self.choose_ip6(n, wanted6)?;
        }
        let member = self.cluster.as_ref().ok_or_else(|| {
            ApiError::bad_request(anyhow!("network {} is an overlay network", n.name))
        })?;
        let o = member.overlay(&n.name).ok_or_else(|| {
            ApiError::not_found(anyhow!(
                "overlay network {} is gone from the cluster",
                n.name
            ))
        })?;
        // `--ip6` stands for the IPv4 address whose place it is.
        let mapped = wanted6
            .map(|w| overlay_ipv4_for(&o, w, wanted))
            .transpose()
            .map_err(ApiError::bad_request)?
            .map(|ip| ip.to_string());
        let wanted = mapped.as_deref().or(wanted);
        let taken = self.taken_addresses(n);
        let ip = match (wanted, Self::pool(n)) {
            (Some(w), Some(pool)) => {
                let mut taken = taken;
                taken.extend(member.recorded_addresses(&n.name));
                ipam::check_static(&pool, w, &taken).map_err(|e| {
                    ApiError::conflict(match wanted6 {
                        Some(w6) => e.context(format!("--ip6 {w6} is the place of {w}")),
                        None => e,
                    })
                })?
            }
            (Some(_), None) => {
                return Err(ApiError::from(anyhow!(
                    "overlay network {} has no IPv4 subnet",
                    n.name
                )));
            }
            (None, _) => member.address_for(&o, &taken).await?,
        };
        member.add_endpoint(&n.name, ip, container).await?;
        Ok((ip, o.ipv6_of(ip)))
    }
}

/// Keep the data path's table of the other nodes' containers as the store has them,
/// rewritten at each change of the endpoints or networks seen (and kept as it is while
/// the store is out of reach).
pub(super) async fn keep_remote_table(member: ClusterMember, bpffs_dir: PathBuf) {
    let mut table = match RemoteTable::open(&bpffs_dir) {
        Ok(t) => t,
        Err(e) => {
            log::error!("cluster: {e:#}: containers of other nodes are unreachable");
            return;
        }
    };
    let (mut endpoints, mut networks) = member.changes();
    loop {
        match table.sync(&member.remote_endpoints()) {
            Ok((0, 0)) => {}
            Ok((changed, removed)) => info!(
                "cluster: containers of other nodes: {changed} added or moved, {removed} gone"
            ),
            Err(e) => warn!("cluster: {e:#}"),
        }
        let changed = tokio::select! {
            r = endpoints.changed() => r,
            r = networks.changed() => r,
        };
        if changed.is_err() {
            return;
        }
    }
}

/// The IPv4 address `--ip6 wanted6` on overlay `o` stands for: a container's IPv6 address
/// there is its IPv4 address's place in the IPv6 subnet. Refused outside those places, or
/// beside a `--ip` of another address.
fn overlay_ipv4_for(
    o: &crate::cluster::overlay::OverlayNetwork,
    wanted6: &str,
    wanted: Option<&str>,
) -> anyhow::Result<Ipv4Addr> {
    let ip6: Ipv6Addr = wanted6
        .parse()
        .map_err(|_| anyhow!("invalid --ip6 {wanted6}: not an IPv6 address"))?;
    let Some(ip) = o.ipv4_of(ip6) else {
        let v6 = o.ipv6.map(|v6| v6.subnet.to_string()).unwrap_or_default();
        anyhow::bail!(
            "invalid --ip6 {wanted6}: on overlay {} a container's IPv6 address is its IPv4 address's place in {v6}, and no address of {} has this one",
            o.name,
            o.subnet
        );
    };
    match wanted {
        Some(w) if w != ip.to_string() => anyhow::bail!(
            "invalid --ip6 {wanted6}: it is the place of IPv4 address {ip} on overlay {}, and --ip {w} was given; give one of them",
            o.name
        ),
        _ => Ok(ip),
    }
}
