//! The connection table's two maps (confirmed and unconfirmed flows) as the collector
//! sees them: snapshots, removals, per-endpoint owner counts, and the in-kernel sweep of
//! expired halves.

use std::collections::HashSet;

use anyhow::{Context, Result};
use aya::{
    maps::{self, Array, MapData},
    programs::{TestRun, TestRunOptions},
};
use netd_common::{
    flow::{FLOW_ENTRY_V1_SIZE, FlowEntry, FlowEntryOf, FlowKey, FlowKeyOf},
    maps::{self as names, Addr6, SWEEP_BATCH},
};

use super::{
    Datapath,
    tables::{NO_EXIST, ignore_missing, is_full},
};
use crate::conntrack::{FlowAddr, FlowTable, Snapshot};

impl Datapath {
    fn flows<A: FlowAddr>(
        &mut self,
        table: FlowTable,
    ) -> Result<maps::HashMap<&mut MapData, FlowKeyOf<A>, FlowEntryOf<A>>>
    where
        FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
        FlowEntryOf<A>: aya::Pod,
    {
        Ok(maps::HashMap::try_from(
            self.map_mut(A::TABLES[table as usize])?,
        )?)
    }

    /// Every entry of the IPv4 connection table's two maps.
    pub fn flow_entries(&mut self) -> Result<Snapshot> {
        self.flow_entries_of()
    }

    /// Every entry of the IPv6 connection table's two maps.
    pub fn flow_entries6(&mut self) -> Result<Snapshot<Addr6>> {
        self.flow_entries_of()
    }

    /// Every entry of a family's connection table.
    /// A walk stops after twice the map's capacity: a walk whose current key is evicted
    /// meanwhile starts over from the first bucket, which a flood could make endless; a
    /// key seen twice is listed once.
    pub fn flow_entries_of<A: FlowAddr>(&mut self) -> Result<Snapshot<A>>
    where
        FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
        FlowEntryOf<A>: aya::Pod,
    {
        let limit = 2 * self.flow_capacity as usize;
        let mut out = Vec::new();
        for table in FlowTable::BOTH {
            let mut seen = HashSet::new();
            out.extend(
                self.flows(table)?
                    .iter()
                    .take(limit)
                    .filter_map(Result::ok)
                    .filter(|(k, _)| seen.insert(*k))
                    .map(|(k, e)| (k, e, table)),
            );
        }
        Ok(out)
    }

    /// Flow tables of the previous layout left pinned in `dir` (an upgrade): their entries
    /// are copied into the current tables, counts from zero, so connections survive the
    /// upgrade; then their pins are removed. Returns the entries adopted. Flows the old
    /// programs create between this copy and the swap of the programs are not carried
    /// over: their next packets make them again (a connection's reply in that instant is
    /// answered by a retransmission).
    pub fn adopt_old_flows(&mut self, dir: &std::path::Path) -> Result<usize> {
        let mut adopted = 0;
        for (old, new) in names::FLOWS_UPGRADED {
            let path = dir.join(old);
            if !path.exists() {
                continue;
            }
            let data = MapData::from_pin(&path)
                .with_context(|| format!("open the previous flow table {}", path.display()))?;
            let previous: maps::HashMap<_, FlowKey, [u8; FLOW_ENTRY_V1_SIZE]> =
                maps::HashMap::try_from(maps::Map::from_map_data(data)?)?;
            let entries: Vec<(FlowKey, FlowEntry)> = previous
                .iter()
                .take(2 * self.flow_capacity as usize)
                .filter_map(Result::ok)
                .map(|(k, v)| {
                    let mut bytes = [0u8; size_of::<FlowEntry>()];
                    bytes[..FLOW_ENTRY_V1_SIZE].copy_from_slice(&v);
                    let mut entry: FlowEntry = bytemuck::pod_read_unaligned(&bytes);
                    // Padding then, zero or not.
                    entry.packets = 0;
                    (k, entry)
                })
                .collect();
            let mut current: maps::HashMap<_, FlowKey, FlowEntry> =
                maps::HashMap::try_from(self.map_mut(new)?)?;
            for (key, entry) in &entries {
                match current.insert(key, entry, NO_EXIST) {
                    Ok(()) => adopted += 1,
                    // Already there (adopted before), or no room: the rest still go in.
                    Err(e) if is_full(&e) => break,
                    Err(_) => {}
                }
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("remove the previous flow table {}", path.display()))?;
            log::info!(
                "adopted {} flows of {old}, the previous layout's table, into {new}",
                entries.len()
            );
        }
        Ok(adopted)
    }

    /// Keep the IPv4 flows a purge removed, for `take_purged`.
    pub fn note_purged(&mut self, flows: Vec<crate::conntrack::FlowHalves>) {
        self.purged.v4.extend(flows);
    }

    /// Keep the IPv6 flows a purge removed, for `take_purged`.
    pub fn note_purged6(&mut self, flows: Vec<crate::conntrack::FlowHalves<Addr6>>) {
        self.purged.v6.extend(flows);
    }

    /// The flows purged since the last call.
    pub fn take_purged(&mut self) -> crate::conntrack::Purged {
        std::mem::take(&mut self.purged)
    }

    /// Whether either table holds `key`.
    pub fn has_flow<A: FlowAddr>(&mut self, key: &FlowKeyOf<A>) -> Result<bool>
    where
        FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
        FlowEntryOf<A>: aya::Pod,
    {
        for table in FlowTable::BOTH {
            match self.flows(table)?.get(key, 0) {
                Ok(_) => return Ok(true),
                Err(maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// The capacity of each of the connection table's maps, in entries.
    pub fn flow_capacity(&self) -> u32 {
        self.flow_capacity
    }

    /// Remove each listed flow half from both maps (missing halves are fine).
    pub fn remove_flows<A: FlowAddr>(&mut self, keys: &[FlowKeyOf<A>]) -> Result<()>
    where
        FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
        FlowEntryOf<A>: aya::Pod,
    {
        for table in FlowTable::BOTH {
            let mut flows = self.flows(table)?;
            for key in keys {
                flows.remove(key).or_else(ignore_missing)?;
            }
        }
        Ok(())
    }

    /// How many confirmed flows each endpoint address holds, as the programs count them.
    pub fn flow_owner_counts(&self) -> Result<std::collections::HashMap<u32, u64>> {
        self.flow_owner_counts_of()
    }

    /// `flow_owner_counts` for a family's table.
    pub fn flow_owner_counts_of<A: FlowAddr>(&self) -> Result<std::collections::HashMap<A, u64>>
    where
        FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
        FlowEntryOf<A>: aya::Pod,
    {
        let map: maps::HashMap<_, A, u64> = maps::HashMap::try_from(self.map(A::OWNERS)?)?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// Set how many confirmed flows each endpoint address holds (the daemon counts them
    /// from a snapshot, correcting any drift of the programs' own counting); addresses not
    /// listed hold none.
    pub fn set_flow_owners<A: FlowAddr>(
        &mut self,
        owned: &std::collections::HashMap<A, u64>,
    ) -> Result<()>
    where
        FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
        FlowEntryOf<A>: aya::Pod,
    {
        let mut map: maps::HashMap<_, A, u64> = maps::HashMap::try_from(self.map_mut(A::OWNERS)?)?;
        let stale: Vec<A> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !owned.contains_key(k))
            .collect();
        for key in stale {
            map.remove(&key).or_else(ignore_missing)?;
        }
        for (addr, n) in owned {
            match map.insert(*addr, *n, 0) {
                Ok(()) => {}
                // More owners than endpoints can only be stale ones: the programs add them.
                Err(e) if is_full(&e) => break,
                Err(e) => return Err(e).context("write the flow owners"),
            }
        }
        Ok(())
    }

    /// Remove each listed flow half of `table` that is still expired at `now`
    /// (CLOCK_MONOTONIC ns, read just before the call), judged again in the kernel by
    /// `flow_sweep` (`flow_sweep6`) in batches: a half refreshed after the caller's
    /// snapshot (a client reusing the tuple) stays. Returns how many halves were removed.
    pub fn sweep_flows<A: FlowAddr>(
        &mut self,
        table: FlowTable,
        keys: &[FlowKeyOf<A>],
        now: u64,
    ) -> Result<usize>
    where
        FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
        FlowEntryOf<A>: aya::Pod,
    {
        let mut removed = 0;
        for batch in keys.chunks(SWEEP_BATCH as usize) {
            {
                let mut slots: Array<_, FlowKeyOf<A>> = Array::try_from(self.map_mut(A::SWEEP)?)?;
                for (i, key) in batch.iter().enumerate() {
                    slots
                        .set(i as u32, *key, 0)
                        .context("fill the sweep batch")?;
                }
            }
            // Packet data: now, the batch's length and its table; padded to a minimal frame.
            let mut input = [0u8; 64];
            input[..8].copy_from_slice(&now.to_ne_bytes());
            input[8..12].copy_from_slice(&(batch.len() as u32).to_ne_bytes());
            input[12..16].copy_from_slice(&(table as u32).to_ne_bytes());
            let result = self
                .program(A::SWEEP_PROGRAM)?
                .test_run(TestRunOptions {
                    data_in: Some(&input),
                    ..Default::default()
                })
                .context("run the flow sweep")?;
            removed += result.return_value as usize;
        }
        Ok(removed)
    }
}
