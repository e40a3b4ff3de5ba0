//! An in-memory `ClusterStore` for unit tests: leases expire only when a test says so
//! (`expire`), and the whole store can be made unreachable (`set_down`).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use anyhow::{Result, bail};

use super::store::{ClusterStore, LeaseId};

/// Each key's value and the lease it is bound to.
type Keys = BTreeMap<String, (Vec<u8>, Option<LeaseId>)>;

#[derive(Default)]
pub struct MemoryStore {
    keys: Mutex<Keys>,
    leases: Mutex<Vec<LeaseId>>,
    next_lease: AtomicI64,
    down: AtomicBool,
}

impl MemoryStore {
    /// Let `lease` expire: its keys vanish.
    pub fn expire(&self, lease: LeaseId) {
        self.leases.lock().unwrap().retain(|l| *l != lease);
        self.keys
            .lock()
            .unwrap()
            .retain(|_, (_, l)| *l != Some(lease));
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn leases(&self) -> Vec<LeaseId> {
        self.leases.lock().unwrap().clone()
    }

    fn up(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            bail!("cluster store memory://: unreachable");
        }
        Ok(())
    }

    fn bound(&self, lease: Option<LeaseId>) -> Result<()> {
        match lease {
            Some(l) if !self.leases.lock().unwrap().contains(&l) => {
                bail!("cluster store memory://: lease {l:x} not found")
            }
            _ => Ok(()),
        }
    }
}

impl ClusterStore for MemoryStore {
    async fn grant(&self, _: Duration) -> Result<LeaseId> {
        self.up()?;
        let l = self.next_lease.fetch_add(1, Ordering::SeqCst) + 1;
        self.leases.lock().unwrap().push(l);
        Ok(l)
    }

    async fn renew(&self, lease: LeaseId) -> Result<bool> {
        self.up()?;
        Ok(self.leases.lock().unwrap().contains(&lease))
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.up()?;
        self.expire(lease);
        Ok(())
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<()> {
        self.up()?;
        self.bound(lease)?;
        self.keys
            .lock()
            .unwrap()
            .insert(key.to_string(), (value, lease));
        Ok(())
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<bool> {
        self.up()?;
        self.bound(lease)?;
        let mut keys = self.keys.lock().unwrap();
        if keys.contains_key(key) {
            return Ok(false);
        }
        keys.insert(key.to_string(), (value, lease));
        Ok(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.up()?;
        Ok(self.keys.lock().unwrap().get(key).map(|(v, _)| v.clone()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.up()?;
        Ok(self
            .keys
            .lock()
            .unwrap()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.up()?;
        self.keys.lock().unwrap().remove(key);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory://".into()
    }
}
