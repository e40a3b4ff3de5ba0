//! The maps that describe the node to the programs: endpoints, published ports, node
//! settings and addresses, networks; and the counters and entry counts read back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use aya::maps::{self, Array, LpmTrie, MapData, PerCpuArray, lpm_trie::Key};
use ipnet::Ipv4Net;
use log::warn;
use netd_common::{
    counters::{Counter, EndpointCounters, EndpointDropKey, Hook, Reason, counter_index},
    fast_path::FAST_PATH,
    flow::{FlowEntry, FlowEntry6, FlowKey, FlowKey6},
    maps::{
        self as names, Addr6, Endpoint6Info, EndpointInfo, FragmentKey, FragmentKey6,
        FragmentPorts, Nat46Mapping, NetworkInfo, NodeConfig, OverlayInfo, RemoteEndpoint,
    },
    published::{Backend, Backend6, PortKey, PortKey6},
    sockets::{SocketOrigin, SocketOrigin6, SocketPeer, SocketPeer6},
    user::addr_be,
};

use super::Datapath;
use crate::ports::PortBinding;

/// The node-wide settings the programs read.
pub struct NodeSettings {
    /// The uplink's address: masqueraded traffic leaves with it.
    pub snat_addr: Ipv4Addr,
    pub snat_ports: (u16, u16),
    /// The node's network namespace, where the socket hooks act (0: off).
    pub netns_cookie: u64,
    pub uplink_ifindex: u32,
    /// Redirect translated packets straight into containers and out of the uplink.
    pub fast_path: bool,
    /// Confirmed flows per endpoint address (0: no limit).
    pub flow_quota: u32,
    /// The uplink's MAC: frames leaving with another (a macvlan container's on the
    /// uplink) are not translated. All zero: no check.
    pub uplink_mac: [u8; 6],
}

/// A table's fill level: its entries against its capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

impl Datapath {
    /// Say who is behind the host-side veth `ifindex`: its address, MAC, network. An
    /// endpoint without IPv4 (address 0.0.0.0) has no address to be found by.
    pub fn register_endpoint(&mut self, ifindex: u32, info: &EndpointInfo) -> Result<()> {
        let mut endpoints: maps::HashMap<_, u32, EndpointInfo> =
            maps::HashMap::try_from(self.map_mut(names::ENDPOINTS)?)?;
        endpoints.insert(ifindex, info, 0)?;
        if info.addr != 0 {
            self.endpoint_veths()?.insert(info.addr, ifindex, 0)?;
        }
        self.create_endpoint_counters(ifindex)
    }

    fn endpoint_veths(&mut self) -> Result<maps::HashMap<&mut MapData, u32, u32>> {
        Ok(maps::HashMap::try_from(
            self.map_mut(names::ENDPOINT_VETHS)?,
        )?)
    }

    /// Remove the endpoints whose host-side veth is not in `keep` (left by a previous run
    /// or a container removed while the daemon was down).
    pub fn retain_endpoints(&mut self, keep: &[u32]) -> Result<usize> {
        let stale = retain_in::<u32, EndpointInfo>(self.map_mut(names::ENDPOINTS)?, keep)?;
        retain_veths::<u32>(self.map_mut(names::ENDPOINT_VETHS)?, keep)?;
        self.retain_endpoint_counters(keep)?;
        self.retain_endpoints6(keep)?;
        Ok(stale)
    }

    /// Undo `attach_endpoint`, step one: forget who is behind the veth, so that its
    /// program drops whatever still comes from it (`drop_unknown_endpoint`) until the
    /// veth is gone and `unpin_endpoint` detaches the program. Tolerant of an endpoint
    /// already forgotten.
    pub fn forget_endpoint(&mut self, host_veth: &str, ifindex: u32) -> Result<()> {
        self.unregister_endpoint(host_veth, ifindex)
    }

    fn unregister_endpoint(&mut self, host_veth: &str, ifindex: u32) -> Result<()> {
        let mut endpoints: maps::HashMap<_, u32, EndpointInfo> =
            maps::HashMap::try_from(self.map_mut(names::ENDPOINTS)?)?;
        let addr = endpoints
            .get(&ifindex, 0)
            .ok()
            .map(|info| info.addr)
            .filter(|addr| *addr != 0);
        endpoints
            .remove(&ifindex)
            .or_else(ignore_missing)
            .with_context(|| format!("unregister endpoint {host_veth}"))?;
        if let Some(addr) = addr {
            let mut veths = self.endpoint_veths()?;
            if veths.get(&addr, 0).ok() == Some(ifindex) {
                veths
                    .remove(&addr)
                    .or_else(ignore_missing)
                    .with_context(|| format!("unregister the address of endpoint {host_veth}"))?;
            }
        }
        self.register_endpoint6(ifindex, None)?;
        self.remove_endpoint_counters(&[ifindex])
            .with_context(|| format!("remove the counters of endpoint {host_veth}"))
    }

    pub fn set_node_config(&mut self, node: &NodeSettings) -> Result<()> {
        // Three quarters of the confirmed table, in flows (two entries each).
        let flow_high_water = self.flow_capacity / 2 / 4 * 3;
        let mut config: Array<_, NodeConfig> = Array::try_from(self.map_mut(names::NODE_CONFIG)?)?;
        let value = NodeConfig {
            snat_addr: addr_be(node.snat_addr),
            snat_port_min: node.snat_ports.0,
            snat_port_max: node.snat_ports.1,
            netns_cookie: node.netns_cookie,
            uplink_ifindex: node.uplink_ifindex,
            flags: if node.fast_path { FAST_PATH } else { 0 },
            flow_quota: node.flow_quota,
            flow_high_water,
            uplink_mac: node.uplink_mac,
            _pad: [0; 2],
        };
        config.set(0, value, 0).context("write node config")
    }

    /// Replace the set of node addresses (where wildcard bindings answer). Beyond the
    /// map's capacity the rest are left out, with a warning: wildcard bindings then do not
    /// answer on them, and nothing else is affected.
    pub fn set_node_addrs(&mut self, addrs: &[Ipv4Addr]) -> Result<()> {
        let mut map: maps::HashMap<_, u32, u8> =
            maps::HashMap::try_from(self.map_mut(names::NODE_ADDRS)?)?;
        let stale: Vec<u32> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !addrs.iter().any(|a| addr_be(*a) == *k))
            .collect();
        for key in stale {
            map.remove(&key).or_else(ignore_missing)?;
        }
        let mut left_out = Vec::new();
        for addr in addrs {
            match map.insert(addr_be(*addr), 1, 0) {
                Ok(()) => {}
                Err(e) if is_full(&e) => left_out.push(*addr),
                Err(e) => return Err(e).with_context(|| format!("add node address {addr}")),
            }
        }
        if !left_out.is_empty() {
            warn!(
                "the node has {} IPv4 addresses, more than the {} the data path keeps: published ports bound to 0.0.0.0 do not answer on {} of them ({}{})",
                addrs.len(),
                names::NODE_ADDRS_MAX,
                left_out.len(),
                left_out[0],
                if left_out.len() > 1 { ", ..." } else { "" }
            );
        }
        Ok(())
    }

    /// Tell the data path about network `subnet`: its tag (for isolation) and `NETWORK_*`
    /// flags (masquerade, direct routing); `None` forgets it.
    pub fn set_network(&mut self, subnet: Ipv4Net, info: Option<NetworkInfo>) -> Result<()> {
        let key = Key::new(u32::from(subnet.prefix_len()), addr_be(subnet.network()));
        set_subnet(self.map_mut(names::NETWORKS)?, key, info, &subnet)
    }

    /// Keep only the listed subnets in the network table.
    pub fn retain_subnets(&mut self, networks: &[Ipv4Net]) -> Result<usize> {
        let wanted: Vec<Key<u32>> = networks
            .iter()
            .map(|n| Key::new(u32::from(n.prefix_len()), addr_be(n.network())))
            .collect();
        retain_keys(self.map_mut(names::NETWORKS)?, &wanted)
    }

    /// How many entries each table holds (for `netd info`, and tests that check that
    /// nothing leaks).
    pub fn map_entry_counts(&self) -> Result<Vec<(&'static str, usize)>> {
        Ok(self
            .map_fill()?
            .into_iter()
            .map(|f| (f.name, f.entries))
            .collect())
    }

    /// Each table's entries and capacity (its `max_entries`), for the metrics.
    pub fn map_fill(&self) -> Result<Vec<MapFill>> {
        self.map_fill_with(None)
    }

    /// `map_fill`, with each family's connection table counted by the caller
    /// (confirmed, unconfirmed entries; IPv4's, then IPv6's) rather than walked: they are
    /// the big ones.
    pub fn map_fill_with(&self, flows: Option<[(usize, usize); 2]>) -> Result<Vec<MapFill>> {
        fn capacity<K: aya::Pod, V>(m: &impl maps::IterableMap<K, V>) -> Result<u32> {
            Ok(m.map().info()?.max_entries())
        }
        fn hash<K: aya::Pod, V: aya::Pod>(map: &aya::maps::Map) -> Result<(usize, u32)> {
            let m: maps::HashMap<_, K, V> = maps::HashMap::try_from(map)?;
            Ok((m.keys().filter(Result::is_ok).count(), capacity(&m)?))
        }
        fn per_cpu<K: aya::Pod, V: aya::Pod>(map: &aya::maps::Map) -> Result<(usize, u32)> {
            let m: maps::PerCpuHashMap<_, K, V> = maps::PerCpuHashMap::try_from(map)?;
            Ok((m.keys().filter(Result::is_ok).count(), capacity(&m)?))
        }
        fn trie<K: aya::Pod, V: aya::Pod>(map: &aya::maps::Map) -> Result<(usize, u32)> {
            let m: LpmTrie<_, K, V> = LpmTrie::try_from(map)?;
            Ok((m.keys().filter(Result::is_ok).count(), capacity(&m)?))
        }
        let tables: Vec<(&'static str, (usize, u32))> = vec![
            (
                "published_ports",
                hash::<PortKey, Backend>(self.map(names::PUBLISHED_PORTS)?)?,
            ),
            (
                "published_ports6",
                hash::<PortKey6, Backend6>(self.map(names::PUBLISHED_PORTS6)?)?,
            ),
            (
                "flows",
                match flows {
                    Some([(confirmed, _), _]) => (confirmed, self.flow_capacity),
                    None => hash::<FlowKey, FlowEntry>(self.map(names::FLOWS)?)?,
                },
            ),
            (
                "unconfirmed_flows",
                match flows {
                    Some([(_, unconfirmed), _]) => (unconfirmed, self.flow_capacity),
                    None => hash::<FlowKey, FlowEntry>(self.map(names::PENDING_FLOWS)?)?,
                },
            ),
            (
                "flows6",
                match flows {
                    Some([_, (confirmed, _)]) => (confirmed, self.flow_capacity),
                    None => hash::<FlowKey6, FlowEntry6>(self.map(names::FLOWS6)?)?,
                },
            ),
            (
                "unconfirmed_flows6",
                match flows {
                    Some([_, (_, unconfirmed)]) => (unconfirmed, self.flow_capacity),
                    None => hash::<FlowKey6, FlowEntry6>(self.map(names::PENDING_FLOWS6)?)?,
                },
            ),
            (
                "flow_owners",
                hash::<u32, u64>(self.map(names::FLOW_OWNERS)?)?,
            ),
            (
                "flow_owners6",
                hash::<Addr6, u64>(self.map(names::FLOW_OWNERS6)?)?,
            ),
            (
                "nat46_clients",
                hash::<Addr6, Nat46Mapping>(self.map(names::NAT46_CLIENTS)?)?,
            ),
            (
                "fragments",
                hash::<FragmentKey, FragmentPorts>(self.map(names::FRAGMENTS)?)?,
            ),
            (
                "fragments6",
                hash::<FragmentKey6, FragmentPorts>(self.map(names::FRAGMENTS6)?)?,
            ),
            (
                "endpoints",
                hash::<u32, EndpointInfo>(self.map(names::ENDPOINTS)?)?,
            ),
            (
                "endpoint_addresses",
                hash::<u32, u32>(self.map(names::ENDPOINT_VETHS)?)?,
            ),
            (
                "socket_origins",
                hash::<SocketPeer, SocketOrigin>(self.map(names::SOCKET_ORIGINS)?)?,
            ),
            (
                "socket_origins6",
                hash::<SocketPeer6, SocketOrigin6>(self.map(names::SOCKET_ORIGINS6)?)?,
            ),
            (
                "node_addresses",
                hash::<u32, u8>(self.map(names::NODE_ADDRS)?)?,
            ),
            (
                "networks",
                trie::<u32, NetworkInfo>(self.map(names::NETWORKS)?)?,
            ),
            (
                "endpoints6",
                hash::<u32, Endpoint6Info>(self.map(names::ENDPOINTS6)?)?,
            ),
            (
                "endpoint_addresses6",
                hash::<Addr6, u32>(self.map(names::ENDPOINT_VETHS6)?)?,
            ),
            (
                "networks6",
                trie::<Addr6, NetworkInfo>(self.map(names::NETWORKS6)?)?,
            ),
            (
                "node_addresses6",
                hash::<Addr6, u8>(self.map(names::NODE_ADDRS6)?)?,
            ),
            (
                "remote_endpoints",
                hash::<u32, RemoteEndpoint>(self.map(names::REMOTE_ENDPOINTS)?)?,
            ),
            (
                "remote_endpoints6",
                hash::<Addr6, RemoteEndpoint>(self.map(names::REMOTE_ENDPOINTS6)?)?,
            ),
            (
                "overlays",
                hash::<u32, OverlayInfo>(self.map(names::OVERLAYS)?)?,
            ),
            (
                "endpoint_counters",
                per_cpu::<u32, EndpointCounters>(self.map(names::ENDPOINT_COUNTERS)?)?,
            ),
            (
                "endpoint_drops",
                per_cpu::<EndpointDropKey, Counter>(self.map(names::ENDPOINT_DROPS)?)?,
            ),
        ];
        Ok(tables
            .into_iter()
            .map(|(name, (entries, capacity))| MapFill {
                name,
                entries,
                capacity,
            })
            .collect())
    }

    fn ports(&mut self) -> Result<maps::HashMap<&mut MapData, PortKey, Backend>> {
        Ok(maps::HashMap::try_from(
            self.map_mut(names::PUBLISHED_PORTS)?,
        )?)
    }

    /// Publish `b`, leading to the endpoint's address of the binding's family (`addr`,
    /// or `addr6` for a binding on an IPv6 address) behind host-side veth `ifindex`.
    /// A binding of a family the endpoint has no address of (an IPv6 binding published
    /// again for an endpoint without IPv6 now) leads nowhere:
    /// its entry is removed, not left leading to an address that may be another
    /// container's by now.
    pub fn publish(
        &mut self,
        b: &PortBinding,
        addr: Option<Ipv4Addr>,
        addr6: Option<Ipv6Addr>,
        ifindex: u32,
    ) -> Result<()> {
        match (port_key(b), self.backend6_addr(addr, addr6)) {
            (Slot::V4(key), _) => match addr {
                Some(addr) => {
                    self.ports()?
                        .insert(key, Backend::new(addr, b.container_port, ifindex), 0)
                }
                None => {
                    warn!("{b}: the container has no IPv4 address; not published");
                    self.ports()?.remove(&key).or_else(ignore_missing)
                }
            },
            (Slot::V6(key), Some(addr6)) => {
                self.ports6()?
                    .insert(key, Backend6::new(addr6, b.container_port, ifindex), 0)
            }
            (Slot::V6(key), None) => {
                warn!("{b}: the container has no IPv6 address (now); not published");
                self.ports6()?.remove(&key).or_else(ignore_missing)
            }
        }
        .with_context(|| format!("publish {b}"))
    }

    /// Where an IPv6 binding of an endpoint with `addr` and `addr6` leads: its IPv6
    /// address, or with NAT46 on its IPv4 address v4-mapped (the uplink translates).
    fn backend6_addr(&self, addr: Option<Ipv4Addr>, addr6: Option<Ipv6Addr>) -> Option<Ipv6Addr> {
        addr6.or_else(|| self.nat46.and(addr).map(|addr| addr.to_ipv6_mapped()))
    }

    /// The data path translates `b` to the endpoint's `addr` or `addr6` (`CHECK` of a
    /// CNI attachment).
    pub fn is_published(
        &self,
        b: &PortBinding,
        addr: Option<Ipv4Addr>,
        addr6: Option<Ipv6Addr>,
    ) -> Result<bool> {
        let found = match port_key(b) {
            Slot::V4(key) => {
                let ports: maps::HashMap<&MapData, PortKey, Backend> =
                    maps::HashMap::try_from(self.map(names::PUBLISHED_PORTS)?)?;
                ports.get(&key, 0).map(|got| {
                    addr.is_some_and(|addr| {
                        let want = Backend::new(addr, b.container_port, got.ifindex);
                        (got.addr, got.port) == (want.addr, want.port)
                    })
                })
            }
            Slot::V6(key) => {
                let ports: maps::HashMap<&MapData, PortKey6, Backend6> =
                    maps::HashMap::try_from(self.map(names::PUBLISHED_PORTS6)?)?;
                ports.get(&key, 0).map(|got| {
                    self.backend6_addr(addr, addr6).is_some_and(|addr6| {
                        let want = Backend6::new(addr6, b.container_port, got.ifindex);
                        (got.addr, got.port) == (want.addr, want.port)
                    })
                })
            }
        };
        match found {
            Ok(same) => Ok(same),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("look up {b}")),
        }
    }

    pub fn unpublish(&mut self, b: &PortBinding) -> Result<()> {
        match port_key(b) {
            Slot::V4(key) => self.ports()?.remove(&key),
            Slot::V6(key) => self.ports6()?.remove(&key),
        }
        .or_else(ignore_missing)
        .with_context(|| format!("unpublish {b}"))
    }

    /// Remove every published port not in `keep` (left over from a previous run), of
    /// both families. Returns how many were removed.
    pub fn retain_published(&mut self, keep: &[PortBinding]) -> Result<usize> {
        let (mut keep4, mut keep6) = (Vec::new(), Vec::new());
        for b in keep {
            match port_key(b) {
                Slot::V4(key) => keep4.push(key),
                Slot::V6(key) => keep6.push(key),
            }
        }
        let stale = retain_in::<_, Backend>(self.map_mut(names::PUBLISHED_PORTS)?, &keep4)?;
        let stale6 = retain_in::<_, Backend6>(self.map_mut(names::PUBLISHED_PORTS6)?, &keep6)?;
        Ok(stale + stale6)
    }

    fn ports6(&mut self) -> Result<maps::HashMap<&mut MapData, PortKey6, Backend6>> {
        Ok(maps::HashMap::try_from(
            self.map_mut(names::PUBLISHED_PORTS6)?,
        )?)
    }

    /// Counters summed over CPUs, by hook and reason.
    pub fn counters(&self) -> Result<Vec<(Hook, Reason, Counter)>> {
        let map: PerCpuArray<_, Counter> = PerCpuArray::try_from(self.map(names::COUNTERS)?)?;
        let mut out = Vec::new();
        for hook in Hook::ALL.iter().copied() {
            for reason in Reason::ALL {
                let per_cpu = map.get(&counter_index(hook, *reason), 0)?;
                let mut sum = Counter::default();
                for c in per_cpu.iter() {
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                }
                out.push((hook, *reason, sum));
            }
        }
        Ok(out)
    }
}

/// `BPF_NOEXIST`: create, never overwrite.
pub(super) const NO_EXIST: u64 = 1;

/// A map insert refused for lack of room (E2BIG).
/// Add a network's subnet (`key`) to an LPM table of networks (`NETWORKS`, `NETWORKS6`)
/// with its tag and flags, or remove it (`None`).
pub(super) fn set_subnet<K: aya::Pod>(
    map: &mut aya::maps::Map,
    key: Key<K>,
    info: Option<NetworkInfo>,
    subnet: &dyn std::fmt::Display,
) -> Result<()> {
    let mut trie: LpmTrie<_, K, NetworkInfo> = LpmTrie::try_from(map)?;
    match info {
        Some(info) => trie
            .insert(&key, info, 0)
            .with_context(|| format!("add network {subnet}")),
        None => trie
            .remove(&key)
            .or_else(ignore_missing)
            .with_context(|| format!("remove network {subnet}")),
    }
}

/// Keep only the keys in `keep` of a hash map (whose values are `V`); how many went.
pub(super) fn retain_in<K: aya::Pod + PartialEq, V: aya::Pod>(
    map: &mut aya::maps::Map,
    keep: &[K],
) -> Result<usize> {
    let mut hash: maps::HashMap<_, K, V> = maps::HashMap::try_from(map)?;
    let stale: Vec<K> = hash
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !keep.contains(k))
        .collect();
    for key in &stale {
        hash.remove(key).or_else(ignore_missing)?;
    }
    Ok(stale.len())
}

/// Remove the entries of an address -> host-side veth table whose veth is not in `keep`.
pub(super) fn retain_veths<K: aya::Pod>(map: &mut aya::maps::Map, keep: &[u32]) -> Result<()> {
    let mut veths: maps::HashMap<_, K, u32> = maps::HashMap::try_from(map)?;
    let stale: Vec<K> = veths
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, ifindex)| !keep.contains(ifindex))
        .map(|(addr, _)| addr)
        .collect();
    for addr in &stale {
        veths.remove(addr).or_else(ignore_missing)?;
    }
    Ok(())
}

/// Keep only the `wanted` keys in an LPM table of networks; how many went.
pub(super) fn retain_keys<K: aya::Pod + PartialEq>(
    map: &mut aya::maps::Map,
    wanted: &[Key<K>],
) -> Result<usize> {
    let mut trie: LpmTrie<_, K, NetworkInfo> = LpmTrie::try_from(map)?;
    let wanted: Vec<(u32, K)> = wanted.iter().map(|k| (k.prefix_len(), k.data())).collect();
    let stale: Vec<Key<K>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
        .collect();
    for key in &stale {
        trie.remove(key).or_else(ignore_missing)?;
    }
    Ok(stale.len())
}

pub(super) fn is_full(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG))
}

pub(super) fn ignore_missing(e: aya::maps::MapError) -> Result<(), aya::maps::MapError> {
    match &e {
        aya::maps::MapError::KeyNotFound => Ok(()),
        aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        _ => Err(e),
    }
}

/// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE, Linux 5.14).
pub fn netns_cookie() -> Result<u64> {
    crate::netns::current_cookie()
}

/// A binding's place in the published-port table of its family.
enum Slot {
    V4(PortKey),
    V6(PortKey6),
}

fn port_key(b: &PortBinding) -> Slot {
    match b.host_ip {
        IpAddr::V4(ip) => Slot::V4(PortKey::new(b.proto.number(), ip, b.host_port)),
        IpAddr::V6(ip) => Slot::V6(PortKey6::new(b.proto.number(), ip, b.host_port)),
    }
}
