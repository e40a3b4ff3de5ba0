//! What a metrics scrape reads (`netd daemon --metrics-addr`): the node under the
//! daemon's lock (counters, tables, endpoints; the connection table as the collector last
//! counted it), and the monitor's sessions outside it.

use anyhow::Result;
use netd_common::counters::Counter;

use super::{Daemon, Inner};
use crate::{conntrack, metrics};

impl Daemon {
    pub(super) async fn metrics_snapshot(&self) -> Result<metrics::Snapshot> {
        let mut snapshot = self.inner.lock().await.metrics_snapshot()?;
        snapshot.monitor_sessions = self.monitor.sessions() as u64;
        Ok(snapshot)
    }
}

/// The connection table's entries, counted by the collector on its sweep: a scrape
/// reads these rather than walk the table (which can hold millions) under the lock.
#[derive(Clone, Copy, Debug)]
pub struct FlowCensus {
    confirmed: usize,
    unconfirmed: usize,
    snat_ports_in_use_max: u64,
}

impl FlowCensus {
    pub fn of<A: Copy + Eq + std::hash::Hash>(flows: &conntrack::Snapshot<A>) -> Self {
        let confirmed = flows
            .iter()
            .filter(|(_, _, t)| *t == conntrack::FlowTable::Confirmed)
            .count();
        FlowCensus {
            confirmed,
            unconfirmed: flows.len() - confirmed,
            snat_ports_in_use_max: conntrack::snat_ports_in_use_max(flows),
        }
    }
}

impl Inner {
    fn metrics_snapshot(&mut self) -> Result<metrics::Snapshot> {
        let [census, census6] = match self.flow_census {
            Some(both) => both,
            // Before the collector's first sweep.
            None => [
                FlowCensus::of(&self.datapath.flow_entries()?),
                FlowCensus::of(&self.datapath.flow_entries6()?),
            ],
        };
        let fill = self.datapath.map_fill_with(Some([
            (census.confirmed, census.unconfirmed),
            (census6.confirmed, census6.unconfirmed),
        ]))?;
        let entries = |name: &str| {
            fill.iter()
                .find(|f| f.name == name)
                .map_or(0, |f| f.entries as u64)
        };
        let counters = self.stats()?;
        let counted = |hook: Option<&str>, reason: &str| {
            counters
                .iter()
                .filter(|c| c.reason == reason && hook.is_none_or(|h| c.hook == h))
                .map(|c| c.packets)
                .sum::<u64>()
        };
        let monitor = self.datapath.monitor_counts()?;
        Ok(metrics::Snapshot {
            flow_evictions: counted(Some("FlowTable"), "flow_evicted"),
            flow_table_full_drops: counted(None, "drop_flow_table_full"),
            snat_exhausted_drops: counted(None, "drop_snat_ports_exhausted"),
            snat_ports: u64::from(self.snat_ports.end - self.snat_ports.start) + 1,
            snat_ports_in_use_max: census
                .snat_ports_in_use_max
                .max(census6.snat_ports_in_use_max),
            monitor_sent: monitor.sent,
            monitor_lost: monitor.lost,
            monitor_sessions: 0,
            counters: counters
                .into_iter()
                .map(|c| (c.hook, c.reason, c.packets, c.bytes))
                .collect(),
            tables: fill
                .iter()
                .map(|f| (f.name.to_string(), f.entries as u64, u64::from(f.capacity)))
                .collect(),
            containers: self.state.containers.len() as u64,
            networks: self.state.networks.len() as u64,
            published_ports: entries("published_ports") + entries("published_ports6"),
            flow_capacity: u64::from(self.datapath.flow_capacity()),
            flows_confirmed: entries("flows"),
            flows_unconfirmed: entries("unconfirmed_flows"),
            endpoints: self.endpoint_samples()?,
        })
    }

    /// Each endpoint's counters, named by its container and network. Endpoints without a
    /// host-side veth (macvlan) have none: no program of netd's sees their packets.
    fn endpoint_samples(&self) -> Result<Vec<metrics::EndpointSample>> {
        let mut counters = self.datapath.endpoint_counters()?;
        let pair = |c: Counter| (c.packets, c.bytes);
        Ok(self
            .state
            .endpoints()
            .filter_map(|(c, e)| {
                let totals = counters.remove(&e.host_ifindex)?;
                Some(metrics::EndpointSample {
                    container: c.name.clone(),
                    network: e.network.clone(),
                    out: pair(totals.sent),
                    r#in: pair(totals.received),
                    drops: totals
                        .drops
                        .iter()
                        .map(|(r, c)| (r.name().to_string(), c.packets))
                        .collect(),
                })
            })
            .collect())
    }
}
