//! NAT46's state in the maps: its pool (`NAT46_CONFIG`), and the collection of the pool
//! addresses its clients hold (`NAT46_CLIENTS`, `NAT46_MAPPED`). The programs claim an
//! address on a client's first packet (`netd-ebpf`'s `nat46`); the collector frees it once
//! no flow of the client's is left, and tells the programs which clients proved
//! themselves (their addresses are never taken by a new client).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use aya::maps;
use netd_common::{
    flow::ORIGIN_NAT46,
    maps::{self as names, Addr6, NAT46_CONFIRMED, Nat46Config, Nat46Mapping},
    user::{addr_be, addr_from_be, addr6_from_be},
};

use super::{Datapath, tables::ignore_missing};
use crate::conntrack::{FlowTable, Snapshot};

/// An update of a map's entry that exists only (`BPF_EXIST`).
const BPF_EXIST: u64 = 2;

/// How long a NAT46 client's pool address stays its own after the last flow it was
/// given to, with no flow of its own left: a flow being created holds the mapping before
/// it is in the table.
const NAT46_MAPPING_GRACE_NS: u64 = 60 * 1_000_000_000;

/// What the flows of a snapshot of the IPv6 table hold of NAT46's pool: each client's
/// pool addresses, and the clients with a confirmed flow. Taken from the table as read
/// before the sweep: a flow the sweep removes holds its address one round longer, and one
/// it spares (a packet came) is never missed.
#[derive(Debug, Default)]
pub struct Nat46InUse {
    held: HashSet<(Addr6, u32)>,
    /// The clients of `held`, looked up once per mapping.
    clients: HashSet<Addr6>,
    confirmed: HashSet<Addr6>,
}

impl Nat46InUse {
    pub fn of(flows: &Snapshot<Addr6>) -> Self {
        let mut out = Self::default();
        for (key, entry, table) in flows {
            if entry.origin != ORIGIN_NAT46 || !entry.is_first() {
                continue;
            }
            let Some(addr) = pool_addr(&entry.src_addr) else {
                continue;
            };
            out.held.insert((key.src_addr, addr));
            out.clients.insert(key.src_addr);
            if *table == FlowTable::Confirmed {
                out.confirmed.insert(key.src_addr);
            }
        }
        out
    }

    fn holds_client(&self, client: &Addr6) -> bool {
        self.clients.contains(client)
    }
}

/// The IPv4 address (network order) behind a v4-mapped one, as a NAT46 flow holds its
/// client's pool address.
fn pool_addr(addr: &Addr6) -> Option<u32> {
    addr6_from_be(*addr).to_ipv4_mapped().map(addr_be)
}

/// What one collection did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Nat46Collected {
    /// Clients whose pool address was freed.
    pub freed: usize,
    /// Addresses freed that no client's mapping led to any more (left by a race between
    /// the programs and the collector, or by a client mapped anew).
    pub orphans: usize,
    /// Clients newly marked as having a confirmed flow.
    pub confirmed: usize,
}

/// One NAT46 client's mapping, as the maps hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat46Client {
    pub client: std::net::Ipv6Addr,
    pub addr: std::net::Ipv4Addr,
    /// A flow of the client's was confirmed: no new client takes its address.
    pub confirmed: bool,
    /// `NAT46_MAPPED` leads the address back to the client (else it lost it).
    pub holds: bool,
}

impl Datapath {
    /// The clients NAT46 has mapped, each with its pool address.
    pub fn nat46_clients_now(&self) -> Result<Vec<Nat46Client>> {
        let mapped: maps::HashMap<_, u32, Addr6> =
            maps::HashMap::try_from(self.map(names::NAT46_MAPPED)?)?;
        let mut out = Vec::new();
        for entry in self.nat46_clients()?.iter() {
            let (client, m) = entry?;
            out.push(Nat46Client {
                client: addr6_from_be(client),
                addr: addr_from_be(m.addr),
                confirmed: m.flags & NAT46_CONFIRMED != 0,
                holds: mapped.get(&m.addr, 0).ok() == Some(client),
            });
        }
        Ok(out)
    }

    /// How many pool addresses are held (by a client's mapping, or a flow left without
    /// one).
    pub fn nat46_addresses_held(&self) -> Result<usize> {
        let mapped: maps::HashMap<_, u32, Addr6> =
            maps::HashMap::try_from(self.map(names::NAT46_MAPPED)?)?;
        Ok(mapped.keys().count())
    }

    /// NAT46 on (its pool), or off.
    pub fn set_nat46_pool(&mut self, pool: Option<ipnet::Ipv4Net>) -> Result<()> {
        self.nat46 = pool;
        self.write_nat46_config()
    }

    /// The uplink's MTU, which NAT46's translated packets must fit (`Nat46Config`).
    pub fn set_nat46_uplink_mtu(&mut self, mtu: u32) -> Result<()> {
        self.nat46_uplink_mtu = mtu;
        self.write_nat46_config()
    }

    fn write_nat46_config(&mut self) -> Result<()> {
        let value = self.nat46.map_or_else(Default::default, |p| Nat46Config {
            pool: u32::from(p.network()).to_be(),
            pool_len: 1u32
                .checked_shl(32 - u32::from(p.prefix_len()))
                .unwrap_or(u32::MAX)
                .min(names::NAT46_CLIENTS_MAX),
            uplink_mtu: self.nat46_uplink_mtu,
        });
        let mut config: maps::Array<_, Nat46Config> =
            maps::Array::try_from(self.map_mut(names::NAT46_CONFIG)?)?;
        config.set(0, value, 0).context("write NAT46's settings")
    }

    /// Whether NAT46 is on.
    pub fn nat46(&self) -> bool {
        self.nat46.is_some()
    }

    /// NAT46's pool, while NAT46 is on.
    pub fn nat46_pool(&self) -> Option<ipnet::Ipv4Net> {
        self.nat46
    }

    fn nat46_clients(&self) -> Result<maps::HashMap<&maps::MapData, Addr6, Nat46Mapping>> {
        Ok(maps::HashMap::try_from(self.map(names::NAT46_CLIENTS)?)?)
    }

    fn nat46_clients_mut(
        &mut self,
    ) -> Result<maps::HashMap<&mut maps::MapData, Addr6, Nat46Mapping>> {
        Ok(maps::HashMap::try_from(
            self.map_mut(names::NAT46_CLIENTS)?,
        )?)
    }

    fn nat46_mapped_mut(&mut self) -> Result<maps::HashMap<&mut maps::MapData, u32, Addr6>> {
        Ok(maps::HashMap::try_from(self.map_mut(names::NAT46_MAPPED)?)?)
    }

    /// The collector's round over NAT46's mappings, with `in_use` from the IPv6 table as
    /// read before this round's sweep:
    /// - a client with a confirmed flow is marked so (the programs mark it too, as its
    ///   flow proves itself: this covers mappings from before a restart);
    /// - a client no flow holds, idle for the grace, gives its address back (its
    ///   address first, then its mapping unless a new flow took it meanwhile: the
    ///   programs claim the address back as they find it free);
    /// - an address no mapping leads to and no flow holds, found so twice in a row (the
    ///   programs claim an address just before they map its client), is freed.
    ///
    /// With NAT46 off (a daemon restarted without it), every mapping is freed.
    pub fn collect_nat46_clients(
        &mut self,
        in_use: &Nat46InUse,
        now: u64,
    ) -> Result<Nat46Collected> {
        let on = self.nat46.is_some();
        let clients: HashMap<Addr6, Nat46Mapping> = self
            .nat46_clients()?
            .iter()
            .filter_map(Result::ok)
            .collect();
        let mapped: HashMap<u32, Addr6> = {
            let map: maps::HashMap<_, u32, Addr6> =
                maps::HashMap::try_from(self.map(names::NAT46_MAPPED)?)?;
            map.iter().filter_map(Result::ok).collect()
        };
        let mut done = Nat46Collected::default();
        for (client, m) in &clients {
            if !on
                || (!in_use.holds_client(client)
                    && now.saturating_sub(m.last_used_ns) > NAT46_MAPPING_GRACE_NS)
            {
                if mapped.get(&m.addr) == Some(client) {
                    self.nat46_mapped_mut()?
                        .remove(&m.addr)
                        .or_else(ignore_missing)?;
                }
                let again = self.nat46_clients()?.get(client, 0).ok();
                if !on || again.is_some_and(|a| a.last_used_ns == m.last_used_ns) {
                    self.nat46_clients_mut()?
                        .remove(client)
                        .or_else(ignore_missing)?;
                    done.freed += 1;
                }
            } else if m.flags & NAT46_CONFIRMED == 0 && in_use.confirmed.contains(client) {
                let marked = Nat46Mapping {
                    flags: m.flags | NAT46_CONFIRMED,
                    ..*m
                };
                self.nat46_clients_mut()?
                    .insert(client, marked, BPF_EXIST)
                    .or_else(ignore_missing)?;
                done.confirmed += 1;
            }
        }
        let orphans: HashSet<u32> = mapped
            .iter()
            .filter(|(addr, client)| {
                clients.get(*client).map(|m| m.addr) != Some(**addr)
                    && (!on || !in_use.held.contains(&(**client, **addr)))
            })
            .map(|(addr, _)| *addr)
            .collect();
        let previous = std::mem::take(&mut self.nat46_orphans);
        for addr in &orphans {
            if !on || previous.contains(addr) {
                self.nat46_mapped_mut()?
                    .remove(addr)
                    .or_else(ignore_missing)?;
                done.orphans += 1;
            } else {
                self.nat46_orphans.insert(*addr);
            }
        }
        Ok(done)
    }
}
