//! The cluster store on etcd (v3 API, through the `etcd-client` crate). The client dials
//! lazily and fails over between the members by itself; every call has a deadline, so a
//! store that is down or partitioned fails an operation in seconds with an error that
//! names it, and asks for a leader (a member cut off from the majority does not answer
//! with stale data).

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc::unbounded_channel;

use super::{
    config::{ClusterConfig, Tls},
    store::{ClusterStore, Guard, LeaseId, Listing, Op, Watch, WatchEvent},
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
        // One keep-alive, whose answer the client checks (a TTL of 0: the lease is gone).
        let mut client = self.client.clone();
        let renewed = tokio::time::timeout(CALL_TIMEOUT, client.lease_keep_alive(lease))
            .await
            .with_context(|| {
                format!(
                    "cluster store {}: renew the node's lease: no answer",
                    self.url
                )
            })?;
        match renewed {
            Ok(_) => Ok(true),
            Err(e) if lease_not_found(&e) => Ok(false),
            Err(e) => self.named("renew the node's lease", Err(e)),
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

    async fn commit(&self, guards: Vec<Guard>, ops: Vec<Op>) -> Result<bool> {
        let compares: Vec<Compare> = guards
            .into_iter()
            .map(|g| match g {
                Guard::Absent(key) => Compare::version(key, CompareOp::Equal, 0),
                Guard::UnchangedSince { prefix, revision } => {
                    Compare::mod_revision(prefix, CompareOp::Less, revision + 1).with_prefix()
                }
                Guard::Unchanged { key, value } => Compare::value(key, CompareOp::Equal, value),
            })
            .collect();
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l)))
                }
                Op::Delete(key) => TxnOp::delete(key, None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let r = self.client.clone().txn(txn).await;
        Ok(self.named("commit a transaction", r)?.succeeded())
    }

    async fn watch(&self, prefix: &str, revision: i64) -> Result<Watch> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let r = self.client.clone().watch(prefix, Some(options)).await;
        let mut stream = self.named(&format!("watch {prefix}"), r)?;
        let (tx, rx) = unbounded_channel();
        let url = self.url.clone();
        tokio::spawn(async move {
            // Dropping the stream (when the receiver is gone) cancels the watch.
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    () = tx.closed() => return,
                };
                let lost = |why: String| Err(anyhow!("cluster store {url}: watch lost: {why}"));
                let batch = match message {
                    Ok(Some(r)) if r.canceled() || r.compact_revision() > 0 => {
                        lost(format!("canceled ({})", r.cancel_reason()))
                    }
                    Ok(Some(r)) => Ok(r
                        .events()
                        .iter()
                        .filter_map(|e| {
                            let kv = e.kv()?;
                            Some(WatchEvent {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                value: match e.event_type() {
                                    EventType::Put => Some(kv.value().to_vec()),
                                    EventType::Delete => None,
                                },
                            })
                        })
                        .collect::<Vec<_>>()),
                    Ok(None) => lost("the stream ended".into()),
                    Err(e) => lost(e.to_string()),
                };
                let ended = batch.is_err();
                if batch.as_ref().is_ok_and(Vec::is_empty) {
                    continue;
                }
                if tx.send(batch).is_err() || ended {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.client.clone().get(key, None).await;
        Ok(self
            .named(&format!("read {key}"), r)?
            .kvs()
            .first()
            .map(|kv| kv.value().to_vec()))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let r = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await;
        let r = self.named(&format!("list {prefix}"), r)?;
        Ok(Listing {
            items: r
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        kv.value().to_vec(),
                    )
                })
                .collect(),
            revision: r.header().map_or(0, |h| h.revision()),
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let r = self.client.clone().delete(key, None).await;
        self.named(&format!("remove {key}"), r).map(drop)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn members(&self) -> Result<Vec<String>> {
        let r = self.client.clone().member_list().await;
        Ok(self
            .named("list its members", r)?
            .members()
            .iter()
            .map(|m| format!("{} {}", m.name(), m.client_urls().join(",")))
            .collect())
    }
}
