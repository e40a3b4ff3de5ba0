//! `GET /monitor` (`netd monitor`): a client's poll attaches its session (asking the
//! programs for what it wants), waits for events without the daemon's lock, then names
//! them (containers, networks, interfaces) under it. `DELETE /monitor` detaches a client
//! that leaves; one that vanishes is detached when its lease (`SESSION_TTL`) runs out.

use std::{
    collections::HashMap,
    sync::Weak,
    time::{Duration, Instant},
};

use anyhow::anyhow;
use serde_json::Value;

use super::{Daemon, Inner, to_json};
use netd_common::monitor::{ENDED_REMOVED, MONITOR_FLOW, MonitorConfig};

use crate::{
    api::{ApiError, ApiRequest},
    monitor::{self, DEFAULT_RATE, Names, Page, Record, Want},
    state::Container,
};

/// The longest a monitor's poll waits: well inside the session's lease.
const MAX_WAIT: Duration = Duration::from_secs(5);

impl Daemon {
    pub(super) async fn monitor_page(&self, req: &ApiRequest) -> Result<Value, ApiError> {
        let number = |name: &str, default: u64| -> Result<u64, ApiError> {
            req.param(name).map_or(Ok(default), |v| {
                v.parse().map_err(|_| {
                    ApiError::bad_request(anyhow!("invalid {name}={v}: expected a number"))
                })
            })
        };
        let small = |name: &str, default: u32| -> Result<u32, ApiError> {
            u32::try_from(number(name, u64::from(default))?)
                .map_err(|_| ApiError::bad_request(anyhow!("invalid {name}: at most {}", u32::MAX)))
        };
        let types: Vec<String> = req.param("types").map(str::to_string).into_iter().collect();
        let want = Want {
            types: monitor::parse_types(&types).map_err(ApiError::bad_request)?,
            sample: small("sample", 1)?,
            rate: small("rate", DEFAULT_RATE)?,
        };
        let session = number("session", 0)?;
        self.ask_programs(self.monitor.attach(session, want, Instant::now()))
            .await?;
        let (records, last) = match req.param("after") {
            // A new client: from the next event on.
            None => (Vec::new(), self.monitor.last()),
            Some(_) => {
                let wait = Duration::from_secs(number("wait", 0)?).min(MAX_WAIT);
                self.monitor
                    .wait_after(number("after", 0)?, want.types, wait)
                    .await
            }
        };
        let inner = self.inner.lock().await;
        let counts = inner.datapath.monitor_counts().map_err(ApiError::from)?;
        let container = req.param("container");
        let network = req.param("network");
        let events = inner
            .monitor_views(&records)
            .into_iter()
            .filter(|e| container.is_none_or(|c| e.container.as_deref() == Some(c)))
            .filter(|e| network.is_none_or(|n| e.network.as_deref() == Some(n)))
            .collect();
        to_json(Page {
            events,
            last,
            sent: counts.sent,
            lost: counts.lost,
        })
    }
}

impl Daemon {
    /// Ask the programs for what the monitor's sessions now want, when it changed.
    async fn ask_programs(&self, changed: Option<MonitorConfig>) -> anyhow::Result<()> {
        match changed {
            Some(config) => self.inner.lock().await.datapath.set_monitor(&config),
            None => Ok(()),
        }
    }

    /// `DELETE /monitor?session=ID`: a client leaving (interrupted) detaches at once.
    pub(super) async fn monitor_detach(&self, req: &ApiRequest) -> Result<Value, ApiError> {
        let session: u64 = req
            .param("session")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ApiError::bad_request(anyhow!("session=ID is required")))?;
        self.monitor.detach(session);
        self.ask_programs(self.monitor.expire(Instant::now()))
            .await?;
        Ok(serde_json::json!({ "detached": session }))
    }
}

impl Inner {
    /// The flows the last changes purged (a container, an endpoint, a network removed):
    /// their ends for `netd monitor`, named now (`gone`: the container being removed,
    /// which the state may not hold any more).
    pub(super) fn report_purged(&mut self, gone: Option<&Container>) {
        let ended = self.datapath.take_purged();
        if ended.is_empty() || self.monitor.wanted() & MONITOR_FLOW == 0 {
            return;
        }
        let mut names = self.endpoint_names();
        for e in gone
            .iter()
            .flat_map(|c| c.endpoints.iter().map(move |e| (c, e)))
        {
            names.insert(e.1.host_ifindex, (e.0.name.clone(), e.1.network.clone()));
        }
        let clock = monitor::Clock::now();
        let records = monitor::flow_ends(&ended.v4, &clock, ENDED_REMOVED)
            .into_iter()
            .chain(monitor::flow_ends(&ended.v6, &clock, ENDED_REMOVED))
            .map(|mut r| {
                r.names = names.get(&r.event.endpoint).cloned();
                r
            })
            .collect();
        self.monitor.record(records);
    }

    /// Each endpoint's container and network, by its host-side veth.
    fn endpoint_names(&self) -> HashMap<u32, (String, String)> {
        self.state
            .endpoints()
            .filter(|(_, e)| e.host_ifindex != 0)
            .map(|(c, e)| (e.host_ifindex, (c.name.clone(), e.network.clone())))
            .collect()
    }

    /// The events with their containers, networks and interfaces named.
    fn monitor_views(&self, records: &[Record]) -> Vec<monitor::EventView> {
        let endpoints = self.endpoint_names();
        let endpoint = |ifindex: u32| endpoints.get(&ifindex).cloned();
        let interface = |ifindex: u32| crate::netns::interface_name(ifindex);
        let names = Names {
            endpoint: &endpoint,
            interface: &interface,
        };
        records.iter().map(|r| r.view(&names)).collect()
    }
}

/// Detach the monitor sessions that stopped polling, and ask the programs for less (for
/// nothing, once none is left), for as long as the daemon runs.
pub(super) async fn expire_sessions(daemon: Weak<Daemon>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        if let Err(e) = daemon
            .ask_programs(daemon.monitor.expire(Instant::now()))
            .await
        {
            log::warn!("netd monitor: {e:#}");
        }
    }
}
