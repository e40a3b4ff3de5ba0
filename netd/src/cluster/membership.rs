//! This node in the cluster: registered under a lease it keeps renewing, listed with
//! every other node. Two keys per node: `PREFIX/v1/nodes/NAME`, its record (address,
//! version, when it started, when it last renewed), kept after it stops so `netd node ls`
//! can show it down; and `PREFIX/v1/alive/NAME`, bound to its lease, which the store
//! removes when the lease expires: a node is ready while that key exists. The name is
//! claimed in a transaction (created only if absent): two live nodes never share one.
//! The lease's ID is kept in the state directory, so a daemon restarted within the TTL
//! takes its lease back and the node never shows down.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use log::{info, warn};
use serde::{Deserialize, Serialize};

use super::{
    mirror::Mirror,
    store::{ClusterStore, Guard, LeaseId, Op},
};
use crate::api::{ApiError, ClusterView, NodeView};

/// What `nodes/NAME` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub address: Ipv4Addr,
    pub version: String,
    /// Unix seconds.
    pub started: u64,
    pub last_seen: u64,
}

/// What `alive/NAME` holds: the lease that keeps it and the address of its holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Alive {
    lease: LeaseId,
    pub(super) address: Ipv4Addr,
}

/// What the state directory keeps of the lease: the lease, and whose it is (a lease
/// recorded for another name, prefix or store is not this node's to take back).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedLease {
    lease: LeaseId,
    pub(super) name: String,
    pub(super) prefix: String,
    store: String,
}

/// Why registering failed: another live node holds the name (the daemon refuses to
/// start), or the store failed (it keeps trying).
#[derive(Debug)]
pub enum RegisterError {
    NameTaken(String),
    Store(anyhow::Error),
}

impl From<anyhow::Error> for RegisterError {
    fn from(e: anyhow::Error) -> Self {
        RegisterError::Store(e)
    }
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::NameTaken(why) => f.write_str(why),
            RegisterError::Store(e) => write!(f, "{e:#}"),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Status {
    pub(super) lease: Option<LeaseId>,
    /// The last call's error, while the store fails.
    error: Option<String>,
    /// Unix seconds of the last successful registration or renewal.
    last_renewal: Option<u64>,
    started: u64,
    /// The store's members, as last listed.
    members: Vec<String>,
}

pub struct Member<S> {
    pub(super) store: S,
    pub(super) name: String,
    pub(super) prefix: String,
    pub(super) address: Ipv4Addr,
    pub(super) ttl: Duration,
    /// Where the lease's ID is kept across restarts.
    pub(super) lease_file: PathBuf,
    pub(super) status: Mutex<Status>,
    /// The cluster's overlay networks, as last seen in the store.
    pub(super) networks: Mirror,
    /// Every node's containers on overlay networks, as last seen in the store.
    pub(super) endpoints: Mirror,
    /// The keys this node owns (endpoints, blocks), written again under a new lease.
    pub(super) owned: Mutex<super::endpoints::Owned>,
    /// The MTU of the overlays' interfaces on this node, once its VXLAN device is set up.
    pub(super) overlay_mtu: std::sync::OnceLock<u32>,
}

impl<S: ClusterStore> Member<S> {
    pub fn new(
        store: S,
        name: &str,
        prefix: &str,
        address: Ipv4Addr,
        ttl: Duration,
        lease_file: PathBuf,
    ) -> Self {
        Member {
            store,
            name: name.to_string(),
            prefix: prefix.to_string(),
            address,
            ttl,
            lease_file,
            status: Mutex::new(Status {
                started: crate::unix_now(),
                ..Status::default()
            }),
            networks: Mirror::new(format!("{prefix}/v1/networks/")),
            endpoints: Mirror::new(format!("{prefix}/v1/endpoints/")),
            owned: Mutex::default(),
            overlay_mtu: std::sync::OnceLock::new(),
        }
    }

    /// The underlay address other nodes reach this one at.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn overlay_mtu(&self) -> Option<u32> {
        self.overlay_mtu.get().copied()
    }

    pub fn set_overlay_mtu(&self, mtu: u32) {
        let _ = self.overlay_mtu.set(mtu);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}/v1/{kind}/{name}", self.prefix)
    }

    pub(super) fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How often the lease is renewed: three times per TTL, so one lost renewal never
    /// lets it lapse.
    pub fn renew_interval(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(500))
    }

    /// One round: renew the lease, or register (again, after it lapsed).
    pub async fn tick(&self) -> Result<(), RegisterError> {
        let lease = self.status().lease;
        if let Some(lease) = lease {
            if self.store.renew(lease).await? && self.holds_name(lease).await? {
                self.record_seen().await?;
                self.delete_pending().await;
                // Shown in `netd info`; a failure here is no failed renewal.
                if let Ok(mut members) = self.store.members().await {
                    members.sort();
                    self.status().members = members;
                }
                return Ok(());
            }
            warn!(
                "cluster: node {} lost its lease or its name's claim (the store was out of reach for longer than the TTL, or the claim was removed): registering again",
                self.name
            );
            self.status().lease = None;
        }
        self.register().await
    }

    async fn register(&self) -> Result<(), RegisterError> {
        let recorded = self.recorded_lease();
        let lease = match &recorded {
            Some(r) if self.this_nodes(r) && self.store.renew(r.lease).await? => r.lease,
            Some(r) => {
                // Another name's (or store's) lease: its keys are not this node's.
                if r.store == self.store.describe() && !self.this_nodes(r) {
                    let _ = self.store.revoke(r.lease).await;
                }
                self.store.grant(self.ttl).await?
            }
            None => self.store.grant(self.ttl).await?,
        };
        let reused = recorded.as_ref().is_some_and(|r| r.lease == lease);
        if let Err(e) = self.claim_name(lease).await {
            if !reused {
                let _ = self.store.revoke(lease).await;
            }
            return Err(e);
        }
        self.remember_lease(lease);
        {
            let mut s = self.status();
            s.lease = Some(lease);
        }
        self.record_seen().await?;
        self.republish(lease).await?;
        info!(
            "cluster: node {} registered at {} (lease {lease:x}, TTL {} s) in {}",
            self.name,
            self.address,
            self.ttl.as_secs(),
            self.store.describe()
        );
        Ok(())
    }

    /// Claim `alive/NAME` under `lease`, in transactions only: created if absent; taken
    /// over from a claim of this node's own address (a run whose lease ID was lost) only
    /// if that claim is still the one read; refused if another live node holds it.
    async fn claim_name(&self, lease: LeaseId) -> Result<(), RegisterError> {
        let key = self.key("alive", &self.name);
        let alive = Alive {
            lease,
            address: self.address,
        };
        let value = serde_json::to_vec(&alive).expect("plain data");
        for _ in 0..10 {
            if self.store.create(&key, value.clone(), Some(lease)).await? {
                return Ok(());
            }
            let Some(held) = self.store.get(&key).await? else {
                // Gone in between (its lease lapsed): create it again.
                continue;
            };
            match serde_json::from_slice::<Alive>(&held) {
                Ok(h) if h.lease == lease => return Ok(()),
                Ok(h) if h.address != self.address => {
                    return Err(RegisterError::NameTaken(format!(
                        "cluster store {}: node name {} is taken by a live node at {}: give this node another --node-name",
                        self.store.describe(),
                        self.name,
                        h.address
                    )));
                }
                // This node's own address (or a record netd cannot read): taken over, if
                // it is still what was read.
                _ => {
                    let guard = Guard::Unchanged {
                        key: key.clone(),
                        value: held,
                    };
                    let put = Op::Put {
                        key: key.clone(),
                        value: value.clone(),
                        lease: Some(lease),
                    };
                    if self.store.commit(vec![guard], vec![put]).await? {
                        return Ok(());
                    }
                }
            }
        }
        Err(RegisterError::Store(anyhow::anyhow!(
            "cluster store {}: the claim on node name {} kept changing",
            self.store.describe(),
            self.name
        )))
    }

    /// Whether `alive/NAME` still holds `lease` (someone may have removed or taken it).
    async fn holds_name(&self, lease: LeaseId) -> Result<bool> {
        let held = self.store.get(&self.key("alive", &self.name)).await?;
        Ok(held
            .and_then(|v| serde_json::from_slice::<Alive>(&v).ok())
            .is_some_and(|a| a.lease == lease))
    }

    /// The node's record, with now as when it was last seen.
    async fn record_seen(&self) -> Result<()> {
        let seen = crate::unix_now();
        let record = NodeRecord {
            name: self.name.clone(),
            address: self.address,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: self.status().started,
            last_seen: seen,
        };
        let value = serde_json::to_vec(&record).expect("plain data");
        self.store
            .put(&self.key("nodes", &self.name), value, None)
            .await?;
        let mut s = self.status();
        s.last_renewal = Some(seen);
        s.error = None;
        Ok(())
    }

    /// The lease a previous run of this node (same name, prefix and store) recorded.
    fn recorded_lease(&self) -> Option<RecordedLease> {
        let text = std::fs::read(&self.lease_file).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn this_nodes(&self, r: &RecordedLease) -> bool {
        r.name == self.name && r.prefix == self.prefix && r.store == self.store.describe()
    }

    fn remember_lease(&self, lease: LeaseId) {
        let record = RecordedLease {
            lease,
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            store: self.store.describe(),
        };
        let text = serde_json::to_vec(&record).expect("plain data");
        if let Err(e) = std::fs::write(&self.lease_file, text) {
            warn!(
                "cluster: keep the lease ID in {}: {e} (a restart registers anew)",
                self.lease_file.display()
            );
        }
    }

    /// Every node the store knows, ready or down, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeView>> {
        let alive: Vec<(String, Alive)> = self
            .store
            .list(&format!("{}/v1/alive/", self.prefix))
            .await?
            .items
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.rsplit('/').next()?.to_string();
                Some((name, serde_json::from_slice(&v).ok()?))
            })
            .collect();
        let records = self
            .store
            .list(&format!("{}/v1/nodes/", self.prefix))
            .await?
            .items;
        let mut nodes = Vec::new();
        for (key, value) in records {
            let record: NodeRecord = serde_json::from_slice(&value).with_context(|| {
                format!(
                    "cluster store {}: {key} is not a node record",
                    self.store.describe()
                )
            })?;
            let ready = alive.iter().any(|(n, _)| *n == record.name);
            nodes.push(NodeView {
                this_node: record.name == self.name,
                status: if ready { "ready" } else { "down" }.to_string(),
                name: record.name,
                address: record.address,
                version: record.version,
                last_seen: record.last_seen,
            });
        }
        Ok(nodes)
    }

    /// Forget a node that is down (`netd node rm`): its record goes.
    pub async fn remove(&self, name: &str) -> Result<(), ApiError> {
        let unavailable = ApiError::unavailable;
        let record = self.key("nodes", name);
        if self
            .store
            .get(&record)
            .await
            .map_err(unavailable)?
            .is_none()
        {
            return Err(ApiError::not_found(anyhow::anyhow!(
                "node {name} not found"
            )));
        }
        if name == self.name {
            return Err(ApiError::conflict(anyhow::anyhow!(
                "node {name} is this node: it is removed by stopping its daemon and removing its record from another node"
            )));
        }
        // Only while no claim is alive, in one transaction.
        let guards = vec![Guard::Absent(self.key("alive", name))];
        if !self
            .store
            .commit(guards, vec![Op::Delete(record)])
            .await
            .map_err(unavailable)?
        {
            return Err(ApiError::conflict(anyhow::anyhow!(
                "node {name} is ready: stop its daemon first (its lease then lapses within {} s)",
                self.ttl.as_secs()
            )));
        }
        Ok(())
    }

    /// The cluster as `netd info` shows it.
    pub fn view(&self) -> ClusterView {
        let s = self.status();
        ClusterView {
            store: self.store.describe(),
            reachable: s.error.is_none() && s.last_renewal.is_some(),
            error: s.error.clone(),
            node: self.name.clone(),
            address: self.address,
            lease: s.lease.map(|l| format!("{l:x}")),
            lease_ttl: self.ttl.as_secs(),
            last_renewal: s.last_renewal,
            store_members: s.members.clone(),
            overlay_mtu: self.overlay_mtu.get().copied(),
        }
    }

    fn failed(&self, e: &RegisterError) {
        let text = e.to_string();
        let mut s = self.status();
        if s.error.as_deref() != Some(&text) {
            warn!("cluster: {text}");
        }
        s.error = Some(text);
    }
}

/// Register, then keep the lease renewed for as long as the daemon runs; a failing store
/// is retried every second, and the error shown in `netd info` meanwhile.
pub async fn keep_registered<S: ClusterStore>(member: Arc<Member<S>>) {
    loop {
        let wait = match member.tick().await {
            Ok(()) => member.renew_interval(),
            Err(e) => {
                member.failed(&e);
                Duration::from_secs(1).min(member.renew_interval())
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The first registration, at start: a name another live node holds stops the daemon;
/// a store out of reach does not (the node keeps serving its containers and registers
/// when the store answers).
pub async fn join<S: ClusterStore>(member: &Member<S>) -> Result<()> {
    match member.tick().await {
        Ok(()) => Ok(()),
        Err(RegisterError::NameTaken(why)) => bail!(why),
        Err(e) => {
            member.failed(&e);
            warn!("cluster: not registered yet, retrying in the background");
            Ok(())
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cluster::memory::MemoryStore;

    pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    pub(crate) struct Dir(pub(crate) PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn dir() -> Dir {
        let d = std::env::temp_dir().join(format!(
            "netd-membership-{}-{:x}",
            std::process::id(),
            rand_id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn rand_id() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::Instant::now())
    }

    pub(crate) fn member(
        store: &Arc<MemoryStore>,
        name: &str,
        ip: [u8; 4],
        dir: &Dir,
    ) -> Member<Arc<MemoryStore>> {
        Member::new(
            store.clone(),
            name,
            "/netd",
            Ipv4Addr::from(ip),
            Duration::from_secs(6),
            dir.0.join(format!("{name}.lease")),
        )
    }

    /// Nodes a (10.0.0.1) and b (10.0.0.2), both registered.
    pub(crate) fn two_registered(
        store: &Arc<MemoryStore>,
        d: &Dir,
    ) -> [Member<Arc<MemoryStore>>; 2] {
        let a = member(store, "a", [10, 0, 0, 1], d);
        let b = member(store, "b", [10, 0, 0, 2], d);
        block_on(a.tick()).unwrap();
        block_on(b.tick()).unwrap();
        [a, b]
    }

    pub(crate) fn statuses<S: ClusterStore>(m: &Member<S>) -> Vec<(String, String)> {
        block_on(m.nodes())
            .unwrap()
            .into_iter()
            .map(|n| (n.name, n.status))
            .collect()
    }

    #[test]
    fn nodes_register_and_a_lapsed_lease_shows_the_node_down_until_it_renews() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let [a, b] = two_registered(&store, &d);
        assert_eq!(
            statuses(&a),
            [("a".into(), "ready".into()), ("b".into(), "ready".into())]
        );
        let lease_b = b.status().lease.unwrap();
        store.expire(lease_b);
        assert_eq!(statuses(&a)[1], ("b".into(), "down".into()));
        // The next round notices and registers again, with a new lease.
        block_on(b.tick()).unwrap();
        assert_eq!(statuses(&a)[1], ("b".into(), "ready".into()));
        assert_ne!(b.status().lease, Some(lease_b));
    }

    #[test]
    fn a_restart_within_the_ttl_takes_the_same_lease_back() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let first = member(&store, "a", [10, 0, 0, 1], &d);
        block_on(first.tick()).unwrap();
        let lease = first.status().lease;
        drop(first);
        let again = member(&store, "a", [10, 0, 0, 1], &d);
        block_on(again.tick()).unwrap();
        assert_eq!(again.status().lease, lease);
        assert_eq!(store.leases().len(), 1, "no second lease was granted");
    }

    #[test]
    fn a_name_held_by_another_live_node_is_refused_and_nothing_is_left() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let a = member(&store, "a", [10, 0, 0, 1], &d);
        block_on(a.tick()).unwrap();
        let d2 = dir();
        let impostor = member(&store, "a", [10, 0, 0, 9], &d2);
        match block_on(impostor.tick()) {
            Err(RegisterError::NameTaken(why)) => {
                assert!(
                    why.contains("node name a is taken by a live node at 10.0.0.1"),
                    "{why}"
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(store.leases().len(), 1, "the impostor's lease was revoked");
        assert_eq!(
            block_on(a.nodes()).unwrap()[0].address,
            Ipv4Addr::new(10, 0, 0, 1)
        );
    }

    #[test]
    fn a_store_out_of_reach_is_reported_and_registration_resumes_when_it_answers() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let a = member(&store, "a", [10, 0, 0, 1], &d);
        store.set_down(true);
        block_on(join(&a)).unwrap();
        let view = a.view();
        assert!(!view.reachable);
        assert!(view.error.unwrap().contains("memory://: unreachable"));
        store.set_down(false);
        block_on(a.tick()).unwrap();
        assert!(a.view().reachable);
        assert_eq!(statuses(&a), [("a".into(), "ready".into())]);
    }

    #[test]
    fn only_a_down_node_other_than_this_one_is_removed() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let [a, b] = two_registered(&store, &d);
        let err = |r: Result<(), ApiError>| format!("{:#}", r.unwrap_err().error);
        assert!(err(block_on(a.remove("b"))).contains("node b is ready"));
        assert!(err(block_on(a.remove("a"))).contains("is this node"));
        assert!(err(block_on(a.remove("c"))).contains("node c not found"));
        store.expire(b.status().lease.unwrap());
        block_on(a.remove("b")).unwrap();
        assert_eq!(statuses(&a), [("a".into(), "ready".into())]);
    }

    #[test]
    fn a_lease_recorded_under_another_name_is_not_taken_back_and_a_removed_claim_is_made_again() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let first = member(&store, "a", [10, 0, 0, 1], &d);
        block_on(first.tick()).unwrap();
        let old = first.status().lease.unwrap();
        drop(first);
        // Restarted under another name with the same state directory (lease file).
        let mut renamed = member(&store, "c", [10, 0, 0, 1], &d);
        renamed.lease_file = d.0.join("a.lease");
        block_on(renamed.tick()).unwrap();
        assert_ne!(renamed.status().lease, Some(old));
        assert!(
            !store.leases().contains(&old),
            "the old name's lease was revoked"
        );
        assert_eq!(
            statuses(&renamed),
            [("a".into(), "down".into()), ("c".into(), "ready".into())]
        );
        // Someone removes the claim (etcdctl del): the next round claims it again.
        block_on(store.delete("/netd/v1/alive/c")).unwrap();
        assert_eq!(statuses(&renamed)[1], ("c".into(), "down".into()));
        block_on(renamed.tick()).unwrap();
        assert_eq!(statuses(&renamed)[1], ("c".into(), "ready".into()));
    }

    #[test]
    fn a_claim_of_this_address_under_a_lost_lease_is_taken_over() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let first = member(&store, "a", [10, 0, 0, 1], &d);
        block_on(first.tick()).unwrap();
        // The state directory wiped: the old lease ID is unknown, its claim still alive.
        std::fs::remove_file(d.0.join("a.lease")).unwrap();
        let again = member(&store, "a", [10, 0, 0, 1], &d);
        block_on(again.tick()).unwrap();
        assert!(block_on(again.holds_name(again.status().lease.unwrap())).unwrap());
        assert!(!block_on(first.holds_name(first.status().lease.unwrap())).unwrap());
    }
}
