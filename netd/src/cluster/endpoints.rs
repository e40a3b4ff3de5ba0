//! Containers on overlay networks. Each node records its own under its lease
//! (`PREFIX/v1/endpoints/NETWORK/IP`: node, underlay address, container), so that a dead
//! node's containers vanish with its lease; every node follows all of them through a
//! mirror, from which the daemon keeps the data path's table of the other nodes'
//! containers. The keys a node owns (its endpoints and address blocks) are also kept in
//! memory: after the node registers under a new lease (its old one lapsed while the store
//! was out of reach), they are written again under it; a removal the store could not take
//! is retried at each renewal.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{Result, anyhow};
use log::warn;
use serde::{Deserialize, Serialize};

use super::{
    membership::Member,
    store::{ClusterStore, Guard, LeaseId, Op},
};
use crate::{api::ApiError, datapath::Remote};

/// What an endpoint's key holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub node: String,
    /// The node's underlay address: where the container's frames are sent.
    pub address: Ipv4Addr,
    pub container: String,
}

/// Who holds a key of an endpoint's or a block's record.
#[derive(Deserialize)]
struct Holder {
    node: String,
    container: Option<String>,
}

/// The keys this node owns in the store, and removals still to be made.
#[derive(Debug, Default)]
pub(super) struct Owned {
    keys: BTreeMap<String, Vec<u8>>,
    to_delete: BTreeSet<String>,
}

impl<S: ClusterStore> Member<S> {
    pub(super) fn endpoints_prefix(&self) -> String {
        format!("{}/v1/endpoints/", self.prefix)
    }

    fn endpoint_key(&self, network: &str, ip: Ipv4Addr) -> String {
        format!("{}{network}/{ip}", self.endpoints_prefix())
    }

    pub(super) fn owned(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, container: &str) -> Vec<u8> {
        let record = EndpointRecord {
            node: self.name.clone(),
            address: self.address,
            container: container.to_string(),
        };
        serde_json::to_vec(&record).expect("plain data")
    }

    /// Record a container's address on overlay network `network` for the cluster, under
    /// this node's lease: refused if another node's container holds it, or while the
    /// store is out of reach (HTTP 503, naming it).
    pub async fn add_endpoint(
        &self,
        network: &str,
        ip: Ipv4Addr,
        container: &str,
    ) -> Result<(), ApiError> {
        let unavailable = ApiError::unavailable;
        let lease = self.lease_or_unregistered().map_err(unavailable)?;
        let key = self.endpoint_key(network, ip);
        let value = self.record(container);
        match self
            .put_owned(&key, &value, lease)
            .await
            .map_err(unavailable)?
        {
            None => {
                let mut owned = self.owned();
                owned.to_delete.remove(&key);
                owned.keys.insert(key, value);
                Ok(())
            }
            Some(holder) => Err(ApiError::conflict(anyhow!(
                "address {ip} of network {network} is in use by {holder}"
            ))),
        }
    }

    /// Put `key` under `lease` unless another node holds it: `Some(who)` then.
    async fn put_owned(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<Option<String>> {
        for _ in 0..5 {
            let held = self.store.get(key).await?;
            let guard = match held {
                None => Guard::Absent(key.to_string()),
                Some(v) => match serde_json::from_slice::<Holder>(&v) {
                    Ok(h) if h.node == self.name => Guard::Unchanged {
                        key: key.to_string(),
                        value: v,
                    },
                    Ok(Holder {
                        node,
                        container: Some(c),
                    }) => return Ok(Some(format!("container {c} on node {node}"))),
                    Ok(h) => return Ok(Some(format!("node {}", h.node))),
                    Err(_) => return Ok(Some("a record this netd cannot read".into())),
                },
            };
            let put = Op::Put {
                key: key.to_string(),
                value: value.to_vec(),
                lease: Some(lease),
            };
            if self.store.commit(vec![guard], vec![put]).await? {
                return Ok(None);
            }
        }
        Err(anyhow!(
            "cluster store {}: {key} kept changing",
            self.store.describe()
        ))
    }

    /// Keep the node's endpoint records to `keep` (network, address): the others are
    /// removed from the store now, or at a later renewal if it is out of reach.
    pub async fn retain_endpoints(&self, keep: &BTreeSet<(String, Ipv4Addr)>) {
        let wanted: BTreeSet<String> = keep
            .iter()
            .map(|(n, ip)| self.endpoint_key(n, *ip))
            .collect();
        self.release(&self.endpoints_prefix(), |k| !wanted.contains(k))
            .await;
    }

    /// Forget the keys under `prefix` this node owns, removing them from the store.
    pub(super) async fn release_prefix(&self, prefix: &str) {
        self.release(prefix, |_| true).await;
    }

    /// Forget the owned keys under `prefix` that `gone` picks, and remove them from the
    /// store (now, or at a later renewal).
    async fn release(&self, prefix: &str, gone: impl Fn(&str) -> bool) {
        let released = {
            let mut owned = self.owned();
            let keys: Vec<String> = owned
                .keys
                .keys()
                .filter(|k| k.starts_with(prefix) && gone(k))
                .cloned()
                .collect();
            for k in &keys {
                owned.keys.remove(k);
                owned.to_delete.insert(k.clone());
            }
            !keys.is_empty()
        };
        if released {
            self.delete_pending().await;
        }
    }

    /// The endpoint records of this node's containers, as the daemon has them at start:
    /// written under the lease when the node registers.
    pub fn adopt_endpoints(&self, endpoints: &[(String, Ipv4Addr, String)]) {
        let mut owned = self.owned();
        for (network, ip, container) in endpoints {
            let key = self.endpoint_key(network, *ip);
            owned.keys.insert(key, self.record(container));
        }
    }

    pub(super) fn owned_keys(&self, prefix: &str) -> Vec<String> {
        self.owned()
            .keys
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub(super) fn own_key(&self, key: String, value: Vec<u8>) {
        self.owned().keys.insert(key, value);
    }

    /// Remove what is still to be removed; what fails stays for the next try.
    pub(super) async fn delete_pending(&self) {
        let pending: Vec<String> = self.owned().to_delete.iter().cloned().collect();
        for key in pending {
            match self.store.delete(&key).await {
                Ok(()) => {
                    self.owned().to_delete.remove(&key);
                }
                Err(e) => {
                    warn!("cluster: remove {key}: {e:#} (retried at the next renewal)");
                    return;
                }
            }
        }
    }

    /// After registering under `lease`: every key this node owns written again under it
    /// (a new lease's keys are gone with the old one). A key another node took meanwhile
    /// is reported and left to it.
    pub(super) async fn republish(&self, lease: LeaseId) -> Result<()> {
        let keys: Vec<(String, Vec<u8>)> = self
            .owned()
            .keys
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in keys {
            if let Some(holder) = self.put_owned(&key, &value, lease).await? {
                warn!("cluster: {key} was this node's, but is now held by {holder}: left to it");
                self.owned().keys.remove(&key);
            }
        }
        self.delete_pending().await;
        Ok(())
    }

    /// The containers of the other nodes on overlay networks this netd knows, by address
    /// (both of a network with IPv6): what the data path's remote tables should hold.
    pub fn remote_endpoints(&self) -> BTreeMap<IpAddr, Remote> {
        let overlays = self.overlays();
        let mut remotes = BTreeMap::new();
        for (key, value) in self.endpoints.snapshot() {
            let Some((network, ip)) = key.split_once('/') else {
                continue;
            };
            let (Ok(ip), Ok(record)) = (
                ip.parse::<Ipv4Addr>(),
                serde_json::from_slice::<EndpointRecord>(&value),
            ) else {
                continue;
            };
            if record.node == self.name {
                continue;
            }
            // Only addresses of the network's own subnet: a record cannot steer another
            // network's (or the node's) traffic into a tunnel.
            if let Some(n) = overlays
                .iter()
                .find(|n| n.name == network && n.subnet.contains(&ip))
            {
                let remote = Remote {
                    node: record.address,
                    vni: n.vni,
                };
                remotes.insert(IpAddr::V4(ip), remote);
                if let Some(ip6) = n.ipv6_of(ip) {
                    remotes.insert(IpAddr::V6(ip6), remote);
                }
            }
        }
        remotes
    }

    /// Every address recorded on overlay network `network`, by any node, as last seen:
    /// what no node hands out again (a static `--ip` may lie in another node's block).
    pub fn recorded_addresses(&self, network: &str) -> BTreeSet<Ipv4Addr> {
        self.endpoints
            .snapshot()
            .into_keys()
            .filter_map(|key| {
                let (net, ip) = key.split_once('/')?;
                if net == network {
                    ip.parse().ok()
                } else {
                    None
                }
            })
            .collect()
    }

    /// Follow every node's endpoints for as long as the daemon runs.
    pub async fn follow_endpoints(&self) {
        self.endpoints.follow(&self.store).await
    }

    /// Resolves when the endpoints or the overlay networks the node has seen change.
    pub fn changes(&self) -> (Changes, Changes) {
        (self.endpoints.subscribe(), self.networks.subscribe())
    }

    fn lease_or_unregistered(&self) -> Result<LeaseId> {
        self.status().lease.ok_or_else(|| {
            anyhow!(
                "cluster store {}: node {} is not registered (yet): it holds no lease to record its containers under",
                self.store.describe(),
                self.name
            )
        })
    }
}

/// A mirror's change notifications.
pub type Changes = tokio::sync::watch::Receiver<u64>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cluster::{
        membership::tests::{block_on, dir, two_registered},
        memory::MemoryStore,
        overlay,
    };

    fn ov(m: &Member<Arc<MemoryStore>>, name: &str) -> overlay::OverlayNetwork {
        let req = overlay::request(&crate::network_request::NetworkRequest {
            name: name.into(),
            driver: Some("overlay".into()),
            ..Default::default()
        })
        .unwrap();
        block_on(m.create_overlay(&req, &Default::default(), name)).unwrap()
    }

    #[test]
    fn a_nodes_containers_reach_the_others_tables_and_go_with_its_lease() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let [a, b] = two_registered(&store, &d);
        let n = ov(&a, "ov");
        block_on(async {
            let ip = a.address_for(&n, &BTreeSet::new()).await.unwrap();
            assert_eq!(
                ip,
                "10.0.0.2".parse::<Ipv4Addr>().unwrap(),
                "after the gateway"
            );
            a.add_endpoint("ov", ip, "web").await.unwrap();
            // Another node's container at that address: refused, naming it.
            let taken = b.add_endpoint("ov", ip, "db").await.unwrap_err();
            assert!(
                taken.error.to_string().contains("container web on node a"),
                "{:#}",
                taken.error
            );
            // b's own block: another address.
            let theirs = b.address_for(&n, &BTreeSet::new()).await.unwrap();
            assert_eq!(theirs, "10.0.0.65".parse::<Ipv4Addr>().unwrap());
            b.add_endpoint("ov", theirs, "db").await.unwrap();
            for m in [&a, &b] {
                m.networks.sync(&store).await.unwrap();
                m.endpoints.sync(&store).await.unwrap();
            }
            let remote = |m: &Member<Arc<MemoryStore>>| -> Vec<(IpAddr, Ipv4Addr)> {
                m.remote_endpoints()
                    .into_iter()
                    .map(|(ip, r)| (ip, r.node))
                    .collect()
            };
            assert_eq!(
                remote(&a),
                [(theirs.into(), b.address())],
                "only the others'"
            );
            assert_eq!(remote(&b), [(ip.into(), a.address())]);
            // A record outside its network's subnet steers nothing.
            store
                .put("/netd/v1/endpoints/ov/192.168.1.1", b.record("evil"), None)
                .await
                .unwrap();
            a.endpoints.sync(&store).await.unwrap();
            assert_eq!(remote(&a).len(), 1);

            // b's lease lapses (the store was out of reach too long): its container is
            // gone for a; at b's next registration it is written again.
            store.expire(b.status().lease.unwrap());
            a.endpoints.sync(&store).await.unwrap();
            assert!(remote(&a).is_empty());
            b.tick().await.unwrap();
            a.endpoints.sync(&store).await.unwrap();
            assert_eq!(remote(&a), [(theirs.into(), b.address())], "written again");

            // A static address of a's inside b's block: b's next address skips it.
            let inside = "10.0.0.66".parse::<Ipv4Addr>().unwrap();
            a.add_endpoint("ov", inside, "pinned").await.unwrap();
            b.endpoints.sync(&store).await.unwrap();
            let next = b.address_for(&n, &[theirs].into()).await.unwrap();
            assert_eq!(next, "10.0.0.67".parse::<Ipv4Addr>().unwrap());
            a.retain_endpoints(&[("ov".to_string(), ip)].into()).await;
            a.endpoints.sync(&store).await.unwrap();

            // Removed while the store is down: removed once it answers.
            store.set_down(true);
            b.retain_endpoints(&BTreeSet::new()).await;
            store.set_down(false);
            b.tick().await.unwrap();
            a.endpoints.sync(&store).await.unwrap();
            assert!(remote(&a).is_empty());
            // The last container gone, the blocks go back.
            b.release_blocks("ov").await;
            assert!(b.own_blocks(&n).await.unwrap().is_empty());
        });
    }
}
