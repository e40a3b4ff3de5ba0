//! The cluster store on etcd (v3 API, through the `etcd-client` crate). The client dials
//! lazily and fails over between the members by itself; every call has a deadline, so a
//! store that is down or partitioned fails an operation in seconds with an error that
//! names it, and asks for a leader (a member cut off from the majority does not answer
//! with stale data).

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp,
};

use super::{
    config::{ClusterConfig, Tls},
    store::{ClusterStore, LeaseId},
};

/// How long one call to the store may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

pub struct EtcdStore {
    client: Client,
    url: String,
}

impl EtcdStore {
    /// A client of the store `config` names; nothing is dialled yet.
    pub async fn new(config: &ClusterConfig) -> Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), CALL_TIMEOUT)
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .with_context(|| format!("cluster store {}", config.url))?;
        Ok(EtcdStore {
            client,
            url: config.url.clone(),
        })
    }

    fn named<T>(&self, what: &str, r: Result<T, etcd_client::Error>) -> Result<T> {
        r.with_context(|| format!("cluster store {}: {what}", self.url))
    }
}

fn tls_options(tls: &Tls) -> Result<TlsOptions> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("--cluster-store-opt: read {}", p.display()))
    };
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca {
        options = options.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let Some((cert, key)) = &tls.identity {
        options = options.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(options)
}

/// etcd's answer for a lease that expired or was revoked.
fn lease_not_found(e: &etcd_client::Error) -> bool {
    e.to_string().contains("lease not found")
}

impl ClusterStore for EtcdStore {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        let r = self
            .client
            .clone()
            .lease_grant(ttl.as_secs().max(1) as i64, None)
            .await;
        Ok(self.named("grant a lease", r)?.id())
    }

    async fn renew(&self, lease: LeaseId) -> Result<bool> {
        let mut client = self.client.clone();
        let what = "renew the node's lease";
        let renewed = async {
            let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            answers.message().await
        };
        let answer = tokio::time::timeout(CALL_TIMEOUT, renewed)
            .await
            .with_context(|| format!("cluster store {}: {what}: no answer", self.url))?;
        match answer {
            // A TTL of 0: the lease is gone.
            Ok(a) => Ok(a.is_some_and(|a| a.ttl() > 0)),
            Err(e) if lease_not_found(&e) => Ok(false),
            Err(e) => self.named(what, Err(e)),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        let r = self.client.clone().lease_revoke(lease).await;
        match r {
            // Already expired: what revoking wanted.
            Err(e) if lease_not_found(&e) => Ok(()),
            r => self.named("revoke the node's lease", r).map(drop),
        }
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<()> {
        let options = lease.map(|l| PutOptions::new().with_lease(l));
        let r = self.client.clone().put(key, value, options).await;
        self.named(&format!("write {key}"), r).map(drop)
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<bool> {
        let options = lease.map(|l| PutOptions::new().with_lease(l));
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, options)]);
        let r = self.client.clone().txn(txn).await;
        Ok(self.named(&format!("create {key}"), r)?.succeeded())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.client.clone().get(key, None).await;
        Ok(self
            .named(&format!("read {key}"), r)?
            .kvs()
            .first()
            .map(|kv| kv.value().to_vec()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let r = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await;
        Ok(self
            .named(&format!("list {prefix}"), r)?
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let r = self.client.clone().delete(key, None).await;
        self.named(&format!("remove {key}"), r).map(drop)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}
