//! The daemon's persistent state (networks and containers) and its crash-safe store:
//! written to a temporary file, fsynced, renamed over `state.json`, directory fsynced, so
//! a crash at any moment leaves either the old or the new state, never a torn one.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ports::PortBinding;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A process the daemon started, identified by pid and start time (so a reused pid is
/// never mistaken for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Status {
    Running,
    Exited { code: Option<i32> },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub network: String,
    pub ip: Ipv4Addr,
    /// The host end of the container's veth, on the network's bridge.
    pub host_veth: String,
    pub host_ifindex: u32,
    /// The process that keeps the network namespace alive (a pause process).
    pub netns_holder: ProcessId,
    pub cmd: Vec<String>,
    pub process: Option<ProcessId>,
    pub status: Status,
    pub ports: Vec<PortBinding>,
    pub created: u64,
}

impl Container {
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.netns_holder.pid))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
    pub containers: BTreeMap<String, Container>,
}

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("create state directory {}", dir.display()))?;
        Ok(Store {
            path: dir.join("state.json"),
        })
    }

    pub fn load(&self) -> Result<State> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parse state file {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("read state file {}", self.path.display())),
        }
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state)?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            fs::File::open(self.path.parent().unwrap_or(Path::new(".")))?.sync_all()
        };
        write().with_context(|| format!("write state file {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_save_and_load() {
        let dir = std::env::temp_dir().join(format!("netd-state-test-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        assert!(store.load().unwrap().networks.is_empty());
        let mut state = State::default();
        state.networks.insert(
            "netd0".into(),
            Network {
                name: "netd0".into(),
                bridge: "netd0".into(),
                subnet: "172.17.0.0/16".parse().unwrap(),
                gateway: "172.17.0.1".parse().unwrap(),
            },
        );
        store.save(&state).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.networks["netd0"].gateway, Ipv4Addr::new(172, 17, 0, 1));
        assert!(!dir.join("state.json.tmp").exists());
        fs::remove_dir_all(dir).unwrap();
    }
}
