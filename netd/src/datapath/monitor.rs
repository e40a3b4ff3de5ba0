//! `netd monitor`'s side of the data path: what the programs are asked to send
//! (`MONITOR_CONFIG`), the ring buffer they send it through, and their counts of events
//! sent and lost (`MONITOR_STATE`, per CPU).

use anyhow::{Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use netd_common::monitor::{self as names, MonitorConfig, MonitorState};

use super::Datapath;

/// Events the programs sent, and lost to the rate limit or a full ring, since they were
/// loaded (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorCounts {
    pub sent: u64,
    pub lost: u64,
}

impl Datapath {
    /// Ask the programs for events (all zero: none, as loaded).
    pub fn set_monitor(&mut self, config: &MonitorConfig) -> Result<()> {
        let mut map: Array<_, MonitorConfig> =
            Array::try_from(self.map_mut(names::MONITOR_CONFIG)?)?;
        map.set(0, config, 0).context("write the monitor's config")
    }

    pub fn monitor_counts(&self) -> Result<MonitorCounts> {
        let map: PerCpuArray<_, MonitorState> =
            PerCpuArray::try_from(self.map(names::MONITOR_STATE)?)?;
        let mut counts = MonitorCounts::default();
        for state in map.get(&0, 0)?.iter() {
            counts.sent += state.sent;
            counts.lost += state.lost;
        }
        Ok(counts)
    }

    /// The ring buffer the events come through, for one reader (the daemon's): taken out
    /// of the data path, so it is read without the daemon's lock.
    pub fn take_monitor_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(names::MONITOR_EVENTS)
            .context("the monitor's ring buffer is taken already")?;
        Ok(RingBuf::try_from(map)?)
    }
}
