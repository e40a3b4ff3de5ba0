//! The maps that describe the node's IPv6 side to the programs: each endpoint's IPv6
//! addresses, the networks' IPv6 subnets, and the node's own IPv6 addresses. The IPv4
//! twins are in `tables`.

use std::net::Ipv6Addr;

use anyhow::{Context, Result};
use aya::maps::{self, lpm_trie::Key};
use ipnet::Ipv6Net;
use log::warn;
use netd_common::{
    maps::{self as names, Addr6, Endpoint6Info, NetworkInfo, NodeConfig6},
    user::addr6_be,
};

use super::{
    Datapath,
    tables::{ignore_missing, is_full, retain_in, retain_keys, retain_veths, set_subnet},
};

impl Datapath {
    /// Say what IPv6 addresses the endpoint behind host-side veth `ifindex` has; `None`:
    /// it has no IPv6 (its IPv6 frames are then dropped). Its address leads back to the
    /// veth (`ENDPOINT_VETHS6`: where its masqueraded flows' replies go).
    pub fn register_endpoint6(&mut self, ifindex: u32, info: Option<&Endpoint6Info>) -> Result<()> {
        let old = self.endpoint6(ifindex)?.map(|e| e.addr);
        let mut endpoints = self.endpoints6()?;
        match info {
            Some(info) => endpoints
                .insert(ifindex, info, 0)
                .with_context(|| format!("register the IPv6 side of endpoint {ifindex}"))?,
            None => endpoints
                .remove(&ifindex)
                .or_else(ignore_missing)
                .with_context(|| format!("forget the IPv6 side of endpoint {ifindex}"))?,
        }
        let mut veths = self.endpoint_veths6()?;
        if let Some(old) = old.filter(|old| info.is_none_or(|i| i.addr != *old))
            && veths.get(&old, 0).ok() == Some(ifindex)
        {
            veths
                .remove(&old)
                .or_else(ignore_missing)
                .with_context(|| format!("forget the IPv6 address of endpoint {ifindex}"))?;
        }
        if let Some(info) = info {
            veths
                .insert(info.addr, ifindex, 0)
                .with_context(|| format!("register the IPv6 address of endpoint {ifindex}"))?;
        }
        Ok(())
    }

    fn endpoint_veths6(&mut self) -> Result<maps::HashMap<&mut aya::maps::MapData, Addr6, u32>> {
        Ok(maps::HashMap::try_from(
            self.map_mut(names::ENDPOINT_VETHS6)?,
        )?)
    }

    /// The IPv6 side of endpoint `ifindex`, if it has one.
    pub fn endpoint6(&mut self, ifindex: u32) -> Result<Option<Endpoint6Info>> {
        Ok(self.endpoints6()?.get(&ifindex, 0).ok())
    }

    fn endpoints6(&mut self) -> Result<maps::HashMap<&mut aya::maps::MapData, u32, Endpoint6Info>> {
        Ok(maps::HashMap::try_from(self.map_mut(names::ENDPOINTS6)?)?)
    }

    /// Remove the IPv6 sides of endpoints whose host-side veth is not in `keep`.
    pub(super) fn retain_endpoints6(&mut self, keep: &[u32]) -> Result<usize> {
        let stale = retain_in::<u32, Endpoint6Info>(self.map_mut(names::ENDPOINTS6)?, keep)?;
        retain_veths::<Addr6>(self.map_mut(names::ENDPOINT_VETHS6)?, keep)?;
        Ok(stale)
    }

    /// Tell the data path about a network's IPv6 subnet (its tag and flags, as
    /// `set_network`); `None` forgets it.
    pub fn set_network6(&mut self, subnet: Ipv6Net, info: Option<NetworkInfo>) -> Result<()> {
        let key = Key::new(u32::from(subnet.prefix_len()), addr6_be(subnet.network()));
        set_subnet(self.map_mut(names::NETWORKS6)?, key, info, &subnet)
    }

    /// Keep only the listed IPv6 subnets in the network table.
    pub fn retain_subnets6(&mut self, networks: &[Ipv6Net]) -> Result<usize> {
        let wanted: Vec<Key<Addr6>> = networks
            .iter()
            .map(|n| Key::new(u32::from(n.prefix_len()), addr6_be(n.network())))
            .collect();
        retain_keys(self.map_mut(names::NETWORKS6)?, &wanted)
    }

    /// Replace the set of the node's IPv6 addresses (which containers may always reach,
    /// as the IPv4 ones). Beyond the map's capacity the rest are left out, with a warning.
    pub fn set_node_addrs6(&mut self, addrs: &[Ipv6Addr]) -> Result<()> {
        let mut map: maps::HashMap<_, Addr6, u8> =
            maps::HashMap::try_from(self.map_mut(names::NODE_ADDRS6)?)?;
        let wanted: Vec<Addr6> = addrs.iter().map(|a| addr6_be(*a)).collect();
        let stale: Vec<Addr6> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(k))
            .collect();
        for key in stale {
            map.remove(&key).or_else(ignore_missing)?;
        }
        let mut left_out = 0;
        for (addr, key) in addrs.iter().zip(&wanted) {
            match map.insert(key, 1, 0) {
                Ok(()) => {}
                Err(e) if is_full(&e) => left_out += 1,
                Err(e) => return Err(e).with_context(|| format!("add node address {addr}")),
            }
        }
        if left_out > 0 {
            warn!(
                "the node has {} IPv6 addresses, more than the {} the data path keeps: containers are refused {left_out} of them",
                addrs.len(),
                names::NODE_ADDRS_MAX
            );
        }
        Ok(())
    }

    /// Say which IPv6 address masqueraded IPv6 leaves with (the uplink's); `None` while the
    /// uplink has none (masqueraded IPv6 is then dropped: `drop_ipv6_no_snat_address`).
    pub fn set_snat_addr6(&mut self, addr: Option<Ipv6Addr>) -> Result<()> {
        let mut config: maps::Array<_, NodeConfig6> =
            maps::Array::try_from(self.map_mut(names::NODE_CONFIG6)?)?;
        let value = NodeConfig6 {
            snat_addr: addr.map_or([0; 4], addr6_be),
        };
        config
            .set(0, value, 0)
            .context("write the node's IPv6 settings")
    }
}
