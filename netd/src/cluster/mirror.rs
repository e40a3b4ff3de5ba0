//! A prefix of the store mirrored in memory: listed, then kept current by a watch from the
//! listing's revision, listed again whenever the watch is lost. Readers get the last state
//! the store was seen in, also while it is out of reach (a node keeps serving what it
//! knows).

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use anyhow::Result;
use log::{debug, warn};

use super::store::{ClusterStore, Watch, WatchEvent};

pub struct Mirror {
    prefix: String,
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Bumped at every change, for those who act on them.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Mirror {
    pub fn new(prefix: String) -> Self {
        Mirror {
            prefix,
            entries: Mutex::new(BTreeMap::new()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves (`changed()`) after each change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Every entry, by key (the prefix cut off).
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.entries().clone()
    }

    /// List the prefix (replacing what was mirrored) and watch it from there.
    pub async fn sync<S: ClusterStore>(&self, store: &S) -> Result<Watch> {
        let listing = store.list(&self.prefix).await?;
        let watch = store.watch(&self.prefix, listing.revision).await?;
        let cut = self.prefix.len();
        *self.entries() = listing
            .items
            .into_iter()
            .map(|(k, v)| (k[cut..].to_string(), v))
            .collect();
        self.bump();
        Ok(watch)
    }

    /// Apply a watch's batch.
    pub fn apply(&self, batch: Vec<WatchEvent>) {
        let cut = self.prefix.len();
        {
            let mut entries = self.entries();
            for e in batch {
                let Some(key) = e.key.get(cut..) else {
                    continue;
                };
                match e.value {
                    Some(v) => entries.insert(key.to_string(), v),
                    None => entries.remove(key),
                };
            }
        }
        self.bump();
    }

    /// Follow the store for as long as the daemon runs.
    pub async fn follow<S: ClusterStore>(&self, store: &S) {
        loop {
            match self.sync(store).await {
                Ok(mut watch) => {
                    debug!("cluster: following {}", self.prefix);
                    while let Some(batch) = watch.recv().await {
                        match batch {
                            Ok(b) => self.apply(b),
                            Err(e) => {
                                warn!("cluster: {e:#}: listing {} again", self.prefix);
                                break;
                            }
                        }
                    }
                }
                Err(e) => debug!("cluster: follow {}: {e:#}", self.prefix),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::memory::MemoryStore;

    #[test]
    fn a_mirror_follows_puts_and_removals_and_lists_again_after_a_lost_watch() {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let store = MemoryStore::default();
                store.put("/p/a", b"1".to_vec(), None).await.unwrap();
                store.put("/q/x", b"other".to_vec(), None).await.unwrap();
                let m = Mirror::new("/p/".into());
                let mut watch = m.sync(&store).await.unwrap();
                assert_eq!(m.snapshot().into_keys().collect::<Vec<_>>(), ["a"]);
                store.put("/p/b", b"2".to_vec(), None).await.unwrap();
                store.delete("/p/a").await.unwrap();
                for _ in 0..2 {
                    m.apply(watch.recv().await.unwrap().unwrap());
                }
                assert_eq!(
                    m.snapshot(),
                    BTreeMap::from([("b".to_string(), b"2".to_vec())])
                );
                // Lost while something changed: the next sync sees it all.
                store.set_down(true);
                assert!(watch.recv().await.unwrap().is_err());
                assert!(m.sync(&store).await.is_err());
                assert_eq!(m.snapshot().len(), 1, "what was known is kept");
                store.set_down(false);
                store.put("/p/c", b"3".to_vec(), None).await.unwrap();
                m.sync(&store).await.unwrap();
                assert_eq!(m.snapshot().into_keys().collect::<Vec<_>>(), ["b", "c"]);
            });
    }
}
