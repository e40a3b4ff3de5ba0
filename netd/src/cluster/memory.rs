//! An in-memory `ClusterStore` for unit tests, with etcd's semantics where netd relies on
//! them (revisions, guarded transactions, watches after a revision, leases whose keys
//! vanish): leases expire only when a test says so (`expire`), and the whole store can
//! be made unreachable (`set_down`).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Result, bail};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::store::{ClusterStore, Guard, LeaseId, Listing, Op, Watch, WatchEvent};

struct Entry {
    value: Vec<u8>,
    lease: Option<LeaseId>,
    mod_revision: i64,
}

#[derive(Default)]
struct Data {
    keys: BTreeMap<String, Entry>,
    leases: Vec<LeaseId>,
    next_lease: LeaseId,
    revision: i64,
    watchers: Vec<(String, UnboundedSender<Result<Vec<WatchEvent>>>)>,
}

impl Data {
    /// Apply one revision's changes and tell the watchers.
    fn apply(&mut self, ops: Vec<Op>) {
        self.revision += 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let entry = Entry {
                        value: value.clone(),
                        lease,
                        mod_revision: self.revision,
                    };
                    self.keys.insert(key.clone(), entry);
                    events.push(WatchEvent {
                        key,
                        value: Some(value),
                    });
                }
                Op::Delete(key) => {
                    if self.keys.remove(&key).is_some() {
                        events.push(WatchEvent { key, value: None });
                    }
                }
            }
        }
        self.watchers.retain(|(prefix, tx)| {
            let seen: Vec<WatchEvent> = events
                .iter()
                .filter(|e| e.key.starts_with(prefix.as_str()))
                .cloned()
                .collect();
            seen.is_empty() || tx.send(Ok(seen)).is_ok()
        });
    }

    fn holds(&self, guard: &Guard) -> bool {
        match guard {
            Guard::Absent(key) => !self.keys.contains_key(key),
            Guard::UnchangedSince { prefix, revision } => self
                .keys
                .iter()
                .filter(|(k, _)| k.starts_with(prefix.as_str()))
                .all(|(_, e)| e.mod_revision <= *revision),
            Guard::Unchanged { key, value } => {
                self.keys.get(key).is_some_and(|e| e.value == *value)
            }
        }
    }
}

#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
    down: AtomicBool,
}

impl MemoryStore {
    /// Let `lease` expire: its keys vanish.
    pub fn expire(&self, lease: LeaseId) {
        let mut d = self.data.lock().unwrap();
        d.leases.retain(|l| *l != lease);
        let gone: Vec<Op> = d
            .keys
            .iter()
            .filter(|(_, e)| e.lease == Some(lease))
            .map(|(k, _)| Op::Delete(k.clone()))
            .collect();
        if !gone.is_empty() {
            d.apply(gone);
        }
    }

    /// Unreachable (`true`) or back; going down ends every watch, as losing etcd does.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for (_, tx) in self.data.lock().unwrap().watchers.drain(..) {
                let _ = tx.send(Err(anyhow::anyhow!("cluster store memory://: watch lost")));
            }
        }
    }

    pub fn leases(&self) -> Vec<LeaseId> {
        self.data.lock().unwrap().leases.clone()
    }

    fn open(&self) -> Result<std::sync::MutexGuard<'_, Data>> {
        if self.down.load(Ordering::SeqCst) {
            bail!("cluster store memory://: unreachable");
        }
        Ok(self.data.lock().unwrap())
    }
}

fn check_lease(d: &Data, lease: Option<LeaseId>) -> Result<()> {
    match lease {
        Some(l) if !d.leases.contains(&l) => {
            bail!("cluster store memory://: lease {l:x} not found")
        }
        _ => Ok(()),
    }
}

impl ClusterStore for MemoryStore {
    async fn grant(&self, _: Duration) -> Result<LeaseId> {
        let mut d = self.open()?;
        d.next_lease += 1;
        let l = d.next_lease;
        d.leases.push(l);
        Ok(l)
    }

    async fn renew(&self, lease: LeaseId) -> Result<bool> {
        Ok(self.open()?.leases.contains(&lease))
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        drop(self.open()?);
        self.expire(lease);
        Ok(())
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<()> {
        let key = key.to_string();
        self.commit(Vec::new(), vec![Op::Put { key, value, lease }])
            .await
            .map(drop)
    }

    async fn commit(&self, guards: Vec<Guard>, ops: Vec<Op>) -> Result<bool> {
        let mut d = self.open()?;
        for op in &ops {
            if let Op::Put { lease, .. } = op {
                check_lease(&d, *lease)?;
            }
        }
        if !guards.iter().all(|g| d.holds(g)) {
            return Ok(false);
        }
        d.apply(ops);
        Ok(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.open()?.keys.get(key).map(|e| e.value.clone()))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let d = self.open()?;
        Ok(Listing {
            items: d
                .keys
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect(),
            revision: d.revision,
        })
    }

    async fn watch(&self, prefix: &str, revision: i64) -> Result<Watch> {
        let mut d = self.open()?;
        if revision != d.revision {
            bail!("cluster store memory://: the fake watches only from its present revision");
        }
        let (tx, rx) = unbounded_channel();
        d.watchers.push((prefix.to_string(), tx));
        Ok(rx)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.commit(Vec::new(), vec![Op::Delete(key.to_string())])
            .await
            .map(drop)
    }

    fn describe(&self) -> String {
        "memory://".into()
    }

    async fn members(&self) -> Result<Vec<String>> {
        drop(self.open()?);
        Ok(vec!["memory memory://".into()])
    }
}
