//! What netd needs of a cluster store, as a trait: leases, keys bound to a lease,
//! transactions (keys created only if absent, guarded by "nothing under this prefix
//! changed since I read it": never read-then-write), prefix reads at a revision, and
//! watches from that revision. Every call fails with an error naming the store when it
//! cannot be reached.

use std::{future::Future, time::Duration};

use anyhow::Result;

/// A lease of the store: the keys bound to it vanish when it is not renewed in time.
pub type LeaseId = i64;

/// Every key under a prefix, as of one revision of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<(String, Vec<u8>)>,
    pub revision: i64,
}

/// A condition a transaction needs to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guard {
    /// The key does not exist.
    Absent(String),
    /// No key under the prefix was written after `revision` (what was read then still
    /// holds; keys removed since are not seen).
    UnchangedSince { prefix: String, revision: i64 },
    /// The key holds exactly this value.
    Unchanged { key: String, value: Vec<u8> },
}

/// A change a transaction makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete(String),
}

/// One change seen by a watch: a key written (`Some` value) or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// The changes under a prefix, in the store's order, a batch per revision; an error when
/// the watch is lost (the store went away, or compacted what was asked for): the watcher
/// lists again and watches from there.
pub type Watch = tokio::sync::mpsc::UnboundedReceiver<Result<Vec<WatchEvent>>>;

pub trait ClusterStore: Send + Sync {
    /// A new lease that expires after `ttl` unless renewed.
    fn grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseId>> + Send;
    /// Renew `lease`; `false` when it has expired (or was revoked) meanwhile.
    fn renew(&self, lease: LeaseId) -> impl Future<Output = Result<bool>> + Send;
    /// End `lease` now: its keys vanish.
    fn revoke(&self, lease: LeaseId) -> impl Future<Output = Result<()>> + Send;
    /// Set `key`, bound to `lease` if given.
    fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Make every change of `ops` at once if every guard holds; `false` (and nothing
    /// changed) if one does not.
    fn commit(&self, guards: Vec<Guard>, ops: Vec<Op>)
    -> impl Future<Output = Result<bool>> + Send;
    /// The value of `key`.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// Every key under `prefix` with its value, in key order.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing>> + Send;
    /// The changes under `prefix` after `revision` (a listing's).
    fn watch(&self, prefix: &str, revision: i64) -> impl Future<Output = Result<Watch>> + Send;
    /// Remove `key` if it is there.
    fn delete(&self, key: &str) -> impl Future<Output = Result<()>> + Send;
    /// How the store is named in errors and `netd info` (`etcd://10.0.0.1:2379`).
    fn describe(&self) -> String;
    /// The store's own members, as `NAME URL[,URL]` (`netd info`).
    fn members(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Set `key` only if it does not exist; `false` if it existed.
    fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> impl Future<Output = Result<bool>> + Send {
        let key = key.to_string();
        async move {
            let guard = Guard::Absent(key.clone());
            self.commit(vec![guard], vec![Op::Put { key, value, lease }])
                .await
        }
    }
}

/// How often a plan is made again after another node's commit won.
const ATTEMPTS: usize = 10;

/// List `prefix`, plan from the listing (a value, and the guarded transaction that makes
/// it so), commit; plan again from a fresh listing while the guards fail because another
/// node changed what was read. `unavailable` turns the store's own failures into `E`.
pub async fn plan_and_commit<S: ClusterStore, T, E: From<anyhow::Error>>(
    store: &S,
    prefix: &str,
    unavailable: impl Fn(anyhow::Error) -> E,
    mut plan: impl FnMut(&Listing) -> Result<(T, Vec<Guard>, Vec<Op>), E>,
) -> Result<T, E> {
    for _ in 0..ATTEMPTS {
        let listing = store.list(prefix).await.map_err(&unavailable)?;
        let (value, guards, ops) = plan(&listing)?;
        if store.commit(guards, ops).await.map_err(&unavailable)? {
            return Ok(value);
        }
    }
    Err(unavailable(anyhow::anyhow!(
        "cluster store {}: what is under {prefix} kept changing while this node planned its change: try again",
        store.describe()
    )))
}

/// A store shared between owners (the tests keep a handle on their fake).
impl<S: ClusterStore> ClusterStore for std::sync::Arc<S> {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        (**self).grant(ttl).await
    }
    async fn renew(&self, lease: LeaseId) -> Result<bool> {
        (**self).renew(lease).await
    }
    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        (**self).revoke(lease).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<()> {
        (**self).put(key, value, lease).await
    }
    async fn commit(&self, guards: Vec<Guard>, ops: Vec<Op>) -> Result<bool> {
        (**self).commit(guards, ops).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        (**self).get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        (**self).list(prefix).await
    }
    async fn watch(&self, prefix: &str, revision: i64) -> Result<Watch> {
        (**self).watch(prefix, revision).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key).await
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn members(&self) -> Result<Vec<String>> {
        (**self).members().await
    }
}
