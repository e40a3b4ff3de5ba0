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
    flow::{FLOW_ENTRY_V1_SIZE, FlowEntry, FlowKey},
    maps::{self as names, SWEEP_BATCH},
};

use super::{
    Datapath, SWEEP_PROGRAM,
    tables::{NO_EXIST, ignore_missing, is_full},
};
use crate::conntrack::FlowTable;

impl Datapath {
    fn flows(
        &mut self,
        table: FlowTable,
    ) -> Result<maps::HashMap<&mut MapData, FlowKey, FlowEntry>> {
        let name = match table {
            FlowTable::Confirmed => names::FLOWS,
            FlowTable::Unconfirmed => names::PENDING_FLOWS,
        };
        Ok(maps::HashMap::try_from(self.map_mut(name)?)?)
    }

    /// Every entry of the connection table's two maps.
    /// A walk stops after twice the map's capacity: a walk whose current key is evicted
    /// meanwhile starts over from the first bucket, which a flood could make endless; a
    /// key seen twice is listed once.
    pub fn flow_entries(&mut self) -> Result<crate::conntrack::Snapshot> {
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

    /// Keep the flows a purge removed, for `take_purged`.
    pub fn note_purged(&mut self, flows: Vec<crate::conntrack::FlowHalves>) {
        self.purged.extend(flows);
    }

    /// The flows purged since the last call.
    pub fn take_purged(&mut self) -> Vec<crate::conntrack::FlowHalves> {
        std::mem::take(&mut self.purged)
    }

    /// Whether either table holds `key`.
    pub fn has_flow(&mut self, key: &FlowKey) -> Result<bool> {
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
    pub fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<()> {
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
        let map: maps::HashMap<_, u32, u64> =
            maps::HashMap::try_from(self.map(names::FLOW_OWNERS)?)?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// Set how many confirmed flows each endpoint address holds (the daemon counts them
    /// from a snapshot, correcting any drift of the programs' own counting); addresses not
    /// listed hold none.
    pub fn set_flow_owners(&mut self, owned: &std::collections::HashMap<u32, u64>) -> Result<()> {
        let mut map: maps::HashMap<_, u32, u64> =
            maps::HashMap::try_from(self.map_mut(names::FLOW_OWNERS)?)?;
        let stale: Vec<u32> = map
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
    /// `flow_sweep` in batches: a half refreshed after the caller's snapshot (a client
    /// reusing the tuple) stays. Returns how many halves were removed.
    pub fn sweep_flows(&mut self, table: FlowTable, keys: &[FlowKey], now: u64) -> Result<usize> {
        let mut removed = 0;
        for batch in keys.chunks(SWEEP_BATCH as usize) {
            {
                let mut slots: Array<_, FlowKey> = Array::try_from(self.map_mut(names::SWEEP)?)?;
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
                .program(SWEEP_PROGRAM)?
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
