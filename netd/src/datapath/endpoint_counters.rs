//! Per-endpoint counters: what each container sent, received and had dropped, kept by
//! the programs under its host-side veth's ifindex. The daemon creates an endpoint's
//! entry when it registers the endpoint (keeping one a previous daemon left, so counts
//! survive a restart) and removes its entries with it.

use std::collections::HashMap;

use anyhow::{Context, Result};
use aya::maps::{PerCpuHashMap, PerCpuValues};
use netd_common::{
    counters::{Counter, EndpointCounters, EndpointDropKey, Reason},
    maps as names,
};

use super::{
    Datapath,
    tables::{NO_EXIST, ignore_missing},
};

/// One endpoint's counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointTotals {
    pub sent: Counter,
    pub received: Counter,
    pub dropped: Counter,
    /// Dropped packets by reason (only reasons that happened).
    pub drops: Vec<(Reason, Counter)>,
}

impl Datapath {
    /// Give the endpoint behind host-side veth `ifindex` its counters, zero, unless it has
    /// them already.
    pub(super) fn create_endpoint_counters(&mut self, ifindex: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zero = PerCpuValues::try_from(vec![EndpointCounters::default(); cpus])?;
        let mut map: PerCpuHashMap<_, u32, EndpointCounters> =
            PerCpuHashMap::try_from(self.map_mut(names::ENDPOINT_COUNTERS)?)?;
        match map.insert(ifindex, zero, NO_EXIST) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            Err(e) => Err(e).context("create the endpoint's counters"),
        }
    }

    /// Remove the counters of the endpoints behind the host-side veths in `gone`.
    pub(super) fn remove_endpoint_counters(&mut self, gone: &[u32]) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        let mut map: PerCpuHashMap<_, u32, EndpointCounters> =
            PerCpuHashMap::try_from(self.map_mut(names::ENDPOINT_COUNTERS)?)?;
        for ifindex in gone {
            map.remove(ifindex).or_else(ignore_missing)?;
        }
        let mut drops: PerCpuHashMap<_, EndpointDropKey, Counter> =
            PerCpuHashMap::try_from(self.map_mut(names::ENDPOINT_DROPS)?)?;
        let stale: Vec<EndpointDropKey> = drops
            .keys()
            .filter_map(Result::ok)
            .filter(|k| gone.contains(&k.ifindex))
            .collect();
        for key in &stale {
            drops.remove(key).or_else(ignore_missing)?;
        }
        Ok(())
    }

    /// Remove the counters of every endpoint whose host-side veth is not in `keep`.
    pub(super) fn retain_endpoint_counters(&mut self, keep: &[u32]) -> Result<()> {
        let map: PerCpuHashMap<_, u32, EndpointCounters> =
            PerCpuHashMap::try_from(self.map(names::ENDPOINT_COUNTERS)?)?;
        let mut gone: Vec<u32> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        let drops: PerCpuHashMap<_, EndpointDropKey, Counter> =
            PerCpuHashMap::try_from(self.map(names::ENDPOINT_DROPS)?)?;
        gone.extend(
            drops
                .keys()
                .filter_map(Result::ok)
                .map(|k| k.ifindex)
                .filter(|i| !keep.contains(i)),
        );
        gone.sort_unstable();
        gone.dedup();
        self.remove_endpoint_counters(&gone)
    }

    /// Every endpoint's counters, by host-side veth, summed over CPUs.
    pub fn endpoint_counters(&self) -> Result<HashMap<u32, EndpointTotals>> {
        let map: PerCpuHashMap<_, u32, EndpointCounters> =
            PerCpuHashMap::try_from(self.map(names::ENDPOINT_COUNTERS)?)?;
        let mut out: HashMap<u32, EndpointTotals> = HashMap::new();
        for entry in map.iter() {
            let (ifindex, per_cpu) = entry?;
            let totals = out.entry(ifindex).or_default();
            for c in per_cpu.iter() {
                add(&mut totals.sent, &c.sent);
                add(&mut totals.received, &c.received);
                add(&mut totals.dropped, &c.dropped);
            }
        }
        let drops: PerCpuHashMap<_, EndpointDropKey, Counter> =
            PerCpuHashMap::try_from(self.map(names::ENDPOINT_DROPS)?)?;
        for entry in drops.iter() {
            let (key, per_cpu) = entry?;
            let (Some(totals), Some(reason)) = (
                out.get_mut(&key.ifindex),
                Reason::ALL.get(key.reason as usize),
            ) else {
                continue;
            };
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                add(&mut sum, c);
            }
            totals.drops.push((*reason, sum));
        }
        for totals in out.values_mut() {
            totals.drops.sort_by_key(|(r, _)| *r as u32);
        }
        Ok(out)
    }
}

fn add(sum: &mut Counter, c: &Counter) {
    sum.packets += c.packets;
    sum.bytes += c.bytes;
}
