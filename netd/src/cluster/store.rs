//! What netd needs of a cluster store, as a trait: leases, keys created only if absent
//! (a transaction, never read-then-write), keys bound to a lease, prefix reads. Every
//! call fails with an error naming the store when it cannot be reached.

use std::{future::Future, time::Duration};

use anyhow::Result;

/// A lease of the store: the keys bound to it vanish when it is not renewed in time.
pub type LeaseId = i64;

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
    /// Set `key` only if it does not exist, in one transaction; `false` if it existed.
    fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// The value of `key`.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// Every key under `prefix` with its value, in key order.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send;
    /// Remove `key` if it is there.
    fn delete(&self, key: &str) -> impl Future<Output = Result<()>> + Send;
    /// How the store is named in errors and `netd info` (`etcd://10.0.0.1:2379`).
    fn describe(&self) -> String;
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
    async fn create(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<bool> {
        (**self).create(key, value, lease).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        (**self).get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        (**self).list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key).await
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}
