//! The overlay networks' part of the data path: the program on the node's VXLAN device,
//! the overlays set up on this node (by VXLAN ID), and the table of the cluster's other
//! containers, which a task following the cluster store keeps through its own handle on
//! the pinned map (it never waits for the daemon's lock).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use anyhow::{Context, Result};
use aya::{
    maps::{self, Map, MapData},
    programs::TcAttachType,
};
use netd_common::{
    maps::{self as names, Addr6, OverlayInfo, RemoteEndpoint},
    user::{addr_be, addr6_be},
};

use super::{Datapath, OVERLAY_PROGRAM, tables::ignore_missing};
use crate::pins;

/// The pin name prefix of the VXLAN device's program link.
const LINK_PREFIX: &str = "overlay-";

impl Datapath {
    /// Attach the overlay program to the VXLAN device's TC ingress (or swap it into the
    /// pinned link), dropping links to any other device.
    pub fn attach_overlay(&mut self, vxlan: &str) -> Result<()> {
        let pin = format!("{LINK_PREFIX}{vxlan}");
        self.attach_tc_pinned(OVERLAY_PROGRAM, vxlan, TcAttachType::Ingress, &pin)?;
        pins::retain_links(&self.links, LINK_PREFIX, &[pin]);
        Ok(())
    }

    /// A node out of a cluster: no overlay program, no overlays, no remote containers.
    pub fn detach_overlay(&mut self) -> Result<()> {
        pins::retain_links(&self.links, LINK_PREFIX, &[]);
        self.retain_overlays(&[])?;
        self.clear::<u32>(names::REMOTE_ENDPOINTS)?;
        self.clear::<Addr6>(names::REMOTE_ENDPOINTS6)
    }

    /// Empty the table of other nodes' containers `name` (keyed by `K`).
    fn clear<K: aya::Pod>(&mut self, name: &str) -> Result<()> {
        let mut remotes: maps::HashMap<_, K, RemoteEndpoint> =
            maps::HashMap::try_from(self.map_mut(name)?)?;
        let all: Vec<K> = remotes.keys().filter_map(Result::ok).collect();
        for k in all {
            remotes.remove(&k).or_else(ignore_missing)?;
        }
        Ok(())
    }

    /// Overlay `vni` set up on this node (its network's tag and the VXLAN device), or
    /// `None`: no longer.
    pub fn set_overlay(&mut self, vni: u32, info: Option<OverlayInfo>) -> Result<()> {
        let mut overlays: maps::HashMap<_, u32, OverlayInfo> =
            maps::HashMap::try_from(self.map_mut(names::OVERLAYS)?)?;
        match info {
            Some(info) => overlays
                .insert(vni, info, 0)
                .with_context(|| format!("add overlay VXLAN ID {vni}")),
            None => overlays
                .remove(&vni)
                .or_else(ignore_missing)
                .with_context(|| format!("remove overlay VXLAN ID {vni}")),
        }
    }

    /// Keep only the listed VXLAN IDs among the overlays set up.
    pub fn retain_overlays(&mut self, keep: &[u32]) -> Result<usize> {
        super::tables::retain_in::<u32, OverlayInfo>(self.map_mut(names::OVERLAYS)?, keep)
    }
}

/// The cluster's other containers as the programs see them (by IPv4 address, and by IPv6
/// address on overlays with IPv6): opened from the pins, so their writer needs nothing
/// else of the data path.
pub struct RemoteTable {
    v4: maps::HashMap<MapData, u32, RemoteEndpoint>,
    v6: maps::HashMap<MapData, Addr6, RemoteEndpoint>,
}

/// A container of another node: where its frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    pub node: Ipv4Addr,
    pub vni: u32,
}

impl RemoteTable {
    pub fn open(bpffs_dir: &Path) -> Result<Self> {
        let open = |name: &str| -> Result<Map> {
            let path = bpffs_dir.join(name);
            let data =
                MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
            Ok(Map::from_map_data(data)?)
        };
        Ok(RemoteTable {
            v4: maps::HashMap::try_from(open(names::REMOTE_ENDPOINTS)?)?,
            v6: maps::HashMap::try_from(open(names::REMOTE_ENDPOINTS6)?)?,
        })
    }

    /// Make the tables exactly `wanted`; returns how many entries were added or changed,
    /// and removed. An entry that does not fit (a table is full) is reported at the end,
    /// after all others were written.
    pub fn sync(&mut self, wanted: &BTreeMap<IpAddr, Remote>) -> Result<(usize, usize)> {
        let value = |r: &Remote| RemoteEndpoint {
            node: addr_be(r.node),
            vni: r.vni,
        };
        let mut v4 = BTreeMap::new();
        let mut v6 = BTreeMap::new();
        for (ip, r) in wanted {
            match ip {
                IpAddr::V4(ip) => v4.insert(addr_be(*ip), value(r)),
                IpAddr::V6(ip) => v6.insert(addr6_be(*ip), value(r)),
            };
        }
        let (changed4, removed4, failed4) = sync_map(&mut self.v4, &v4)?;
        let (changed6, removed6, failed6) = sync_map(&mut self.v6, &v6)?;
        if let Some(e) = failed4.or(failed6) {
            return Err(anyhow::Error::from(e).context(format!(
                "the table of the cluster's other containers (at most {} per family)",
                names::REMOTE_ENDPOINTS_MAX
            )));
        }
        Ok((changed4 + changed6, removed4 + removed6))
    }
}

/// Make `map` exactly `wanted`: how many entries were written and removed, and the
/// error of an entry that did not fit (the others written all the same).
fn sync_map<K: aya::Pod + Ord>(
    map: &mut maps::HashMap<MapData, K, RemoteEndpoint>,
    wanted: &BTreeMap<K, RemoteEndpoint>,
) -> Result<(usize, usize, Option<aya::maps::MapError>)> {
    let present: BTreeMap<K, RemoteEndpoint> = map.iter().filter_map(Result::ok).collect();
    let mut removed = 0;
    for k in present.keys().filter(|k| !wanted.contains_key(k)) {
        map.remove(k).or_else(ignore_missing)?;
        removed += 1;
    }
    let mut changed = 0;
    let mut failed = None;
    for (k, v) in wanted {
        if present.get(k) == Some(v) {
            continue;
        }
        match map.insert(k, v, 0) {
            Ok(()) => changed += 1,
            Err(e) => failed = Some(e),
        }
    }
    Ok((changed, removed, failed))
}
