//! The cluster's overlay networks as this node sees and changes them: their records,
//! followed through a mirror of the store and created or removed in guarded transactions
//! (`overlay` plans them), and the address blocks this node claims in them (`blocks`
//! plans those). Each change is planned from a listing and committed only if what was
//! read still holds; a node that loses plans again (`store::plan_and_commit`).

use anyhow::Result;
use log::info;

use super::{
    blocks,
    membership::Member,
    overlay::{self, OverlayNetwork, OverlayRequest},
    store::{ClusterStore, Guard, Op, WatchEvent, plan_and_commit},
};
use crate::api::ApiError;

impl<S: ClusterStore> Member<S> {
    /// Follow the store's overlay networks for as long as the daemon runs.
    pub async fn follow_networks(&self) {
        self.networks.follow(&self.store).await
    }

    /// The overlay networks as last seen (also while the store is out of reach).
    pub fn overlays(&self) -> Vec<OverlayNetwork> {
        self.networks
            .snapshot()
            .into_values()
            .filter_map(|v| serde_json::from_slice(&v).ok())
            .collect()
    }

    pub fn overlay(&self, name: &str) -> Option<OverlayNetwork> {
        self.overlays().into_iter().find(|n| n.name == name)
    }

    /// Create an overlay network for the whole cluster: planned from the records as the
    /// store has them now, committed only if none changed meanwhile (else planned again).
    /// `local`: what this node's own networks and routes use.
    pub async fn create_overlay(
        &self,
        req: &OverlayRequest,
        local: &overlay::Local,
        id: &str,
    ) -> Result<OverlayNetwork, ApiError> {
        let prefix = self.networks.prefix();
        let store = self.store.describe();
        let network = plan_and_commit(&self.store, prefix, ApiError::unavailable, |listing| {
            // A record this node cannot read might hold the VNI or subnet it would pick.
            let existing = listing
                .items
                .iter()
                .map(|(k, v)| {
                    serde_json::from_slice::<OverlayNetwork>(v).map_err(|e| {
                        ApiError::from(anyhow::anyhow!(
                            "cluster store {store}: {k} is not an overlay network record this netd can read ({e}): is a newer netd on another node?"
                        ))
                    })
                })
                .collect::<Result<Vec<OverlayNetwork>, ApiError>>()?;
            let origin = overlay::Origin {
                id,
                node: &self.name,
                now: crate::unix_now(),
            };
            overlay::plan_create(req, &existing, local, prefix, listing.revision, &origin)
                .map_err(ApiError::conflict)
        })
        .await?;
        // Seen here at once, not when the watch brings it.
        self.networks.apply(vec![WatchEvent {
            key: format!("{prefix}{}", network.name),
            value: Some(serde_json::to_vec(&network).expect("plain data")),
        }]);
        info!(
            "cluster: overlay network {} created: subnet {}, VXLAN ID {}",
            network.name, network.subnet, network.vni
        );
        Ok(network)
    }

    fn blocks_prefix(&self, network: &str) -> String {
        format!("{}/v1/blocks/{network}/", self.prefix)
    }

    /// The blocks of overlay network `n` this node holds, in address order.
    pub async fn own_blocks(&self, n: &OverlayNetwork) -> Result<Vec<ipnet::Ipv4Net>> {
        let prefix = self.blocks_prefix(&n.name);
        Ok(self
            .store
            .list(&prefix)
            .await?
            .items
            .into_iter()
            .filter(|(_, v)| {
                serde_json::from_slice::<blocks::BlockRecord>(v).is_ok_and(|r| r.node == self.name)
            })
            .filter_map(|(k, _)| blocks::parse_key(&prefix, &k))
            .collect())
    }

    /// Claim one more block of overlay network `n` for this node, under its lease.
    /// A store out of reach (or this node not registered yet) is HTTP 503; a network
    /// with no block left, 409.
    pub async fn claim_block(&self, n: &OverlayNetwork) -> Result<ipnet::Ipv4Net, ApiError> {
        let Some(lease) = self.status().lease else {
            return Err(ApiError::unavailable(anyhow::anyhow!(
                "cluster store {}: node {} is not registered (yet): it holds no lease to claim addresses under",
                self.store.describe(),
                self.name
            )));
        };
        let prefix = self.blocks_prefix(&n.name);
        let block = plan_and_commit(&self.store, &prefix, ApiError::unavailable, |listing| {
            let claimed: Vec<(ipnet::Ipv4Net, String)> = listing
                .items
                .iter()
                .filter_map(|(k, v)| {
                    let record: blocks::BlockRecord = serde_json::from_slice(v).ok()?;
                    Some((blocks::parse_key(&prefix, k)?, record.node))
                })
                .collect();
            blocks::plan_claim(n, &claimed, &prefix, &self.name, lease).map_err(ApiError::conflict)
        })
        .await?;
        self.own_key(blocks::key(&prefix, &block), blocks::record(&self.name));
        info!(
            "cluster: node {} holds block {block} of network {}",
            self.name, n.name
        );
        Ok(block)
    }

    /// An address for a container of this node on overlay network `n`: the first free one
    /// (`taken`: the node's containers') of the node's blocks, claiming one more block when
    /// they are full. The blocks held are read from the store once, then known.
    pub async fn address_for(
        &self,
        n: &OverlayNetwork,
        taken: &std::collections::BTreeSet<std::net::Ipv4Addr>,
    ) -> Result<std::net::Ipv4Addr, ApiError> {
        let prefix = self.blocks_prefix(&n.name);
        let mut held = self.held_blocks(&prefix);
        if held.is_empty() {
            held = self.own_blocks(n).await.map_err(ApiError::unavailable)?;
            for block in &held {
                self.own_key(blocks::key(&prefix, block), blocks::record(&self.name));
            }
        }
        // Also what other nodes hold in this node's blocks (static addresses).
        let mut taken = taken.clone();
        taken.extend(self.recorded_addresses(&n.name));
        if let Some(ip) = blocks::free_address(n, &held, &taken) {
            return Ok(ip);
        }
        let block = self.claim_block(n).await?;
        blocks::free_address(n, &[block], &taken).ok_or_else(|| {
            ApiError::conflict(anyhow::anyhow!(
                "block {block} of network {} has no free address",
                n.name
            ))
        })
    }

    fn held_blocks(&self, prefix: &str) -> Vec<ipnet::Ipv4Net> {
        self.owned_keys(prefix)
            .iter()
            .filter_map(|k| blocks::parse_key(prefix, k))
            .collect()
    }

    /// The node's last container on `network` left: its blocks go back to the cluster.
    pub async fn release_blocks(&self, network: &str) {
        self.release_prefix(&self.blocks_prefix(network)).await;
    }

    /// Remove an overlay network from the cluster: refused while a container of any node
    /// is on it; its address blocks go with it.
    pub async fn remove_overlay(&self, name: &str) -> Result<(), ApiError> {
        let key = format!("{}{name}", self.networks.prefix());
        let unavailable = ApiError::unavailable;
        if self.store.get(&key).await.map_err(unavailable)?.is_none() {
            return Err(ApiError::not_found(anyhow::anyhow!(
                "network {name} not found"
            )));
        }
        let endpoints = format!("{}/v1/endpoints/{name}/", self.prefix);
        let listing = self.store.list(&endpoints).await.map_err(unavailable)?;
        if !listing.items.is_empty() {
            return Err(ApiError::forbidden(anyhow::anyhow!(
                "error while removing network: network {name} has active endpoints ({} on the cluster's nodes)",
                listing.items.len()
            )));
        }
        let guards = vec![Guard::UnchangedSince {
            prefix: endpoints,
            revision: listing.revision,
        }];
        let blocks = self
            .store
            .list(&self.blocks_prefix(name))
            .await
            .map_err(unavailable)?;
        let ops = std::iter::once(Op::Delete(key.clone()))
            .chain(blocks.items.into_iter().map(|(k, _)| Op::Delete(k)))
            .collect();
        if !self.store.commit(guards, ops).await.map_err(unavailable)? {
            return Err(ApiError::forbidden(anyhow::anyhow!(
                "error while removing network: network {name} got an endpoint meanwhile"
            )));
        }
        self.networks.apply(vec![WatchEvent { key, value: None }]);
        info!("cluster: overlay network {name} removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cluster::{
        membership::tests::{block_on, dir, two_registered},
        memory::MemoryStore,
    };

    fn overlay_request(name: &str) -> OverlayRequest {
        overlay::request(&crate::network_request::NetworkRequest {
            name: name.into(),
            driver: Some("overlay".into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn two_nodes_creating_overlays_at_once_never_take_the_same_subnet_or_vni() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let [a, b] = two_registered(&store, &d);
        block_on(async {
            // Both plan from the same revision: the same free /24 and VNI.
            let prefix = "/netd/v1/networks/";
            let listing = store.list(prefix).await.unwrap();
            let plan = |name: &str, node: &str| {
                let origin = overlay::Origin {
                    id: "x",
                    node,
                    now: 0,
                };
                overlay::plan_create(
                    &overlay_request(name),
                    &[],
                    &Default::default(),
                    prefix,
                    listing.revision,
                    &origin,
                )
                .unwrap()
            };
            let (first, g1, o1) = plan("x", "a");
            let (second, g2, o2) = plan("y", "b");
            assert_eq!((first.subnet, first.vni), (second.subnet, second.vni));
            assert!(store.commit(g1, o1).await.unwrap());
            assert!(
                !store.commit(g2, o2).await.unwrap(),
                "the second commit must fail"
            );
            // Through the members, which plan again when they lose: distinct.
            let y = b
                .create_overlay(&overlay_request("y"), &Default::default(), "y1")
                .await
                .unwrap();
            assert_ne!(y.subnet, first.subnet);
            assert_ne!(y.vni, first.vni);
            let taken = a
                .create_overlay(&overlay_request("y"), &Default::default(), "y2")
                .await
                .unwrap_err();
            assert!(
                taken
                    .error
                    .to_string()
                    .contains("network with name y already exists")
            );
            // Every node sees both once it follows the store; removal is seen too.
            a.networks.sync(&store).await.unwrap();
            let names: Vec<String> = a.overlays().into_iter().map(|n| n.name).collect();
            assert_eq!(names, ["x", "y"]);
            b.remove_overlay("x").await.unwrap();
            a.networks.sync(&store).await.unwrap();
            assert!(a.overlay("x").is_none());
            store.set_down(true);
            let err = b
                .create_overlay(&overlay_request("z"), &Default::default(), "z")
                .await
                .unwrap_err();
            assert_eq!(err.status, hyper::StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(a.overlays().len(), 1, "what was known is still shown");
        });
    }

    #[test]
    fn blocks_are_claimed_per_node_and_freed_when_a_nodes_lease_lapses() {
        let store = Arc::new(MemoryStore::default());
        let d = dir();
        let [a, b] = two_registered(&store, &d);
        block_on(async {
            let mut req = overlay_request("ov");
            req.pool = Some(crate::ipam::default_pool("10.9.0.0/25".parse().unwrap()));
            let n = a
                .create_overlay(&req, &Default::default(), "ov")
                .await
                .unwrap();
            let first = a.claim_block(&n).await.unwrap();
            let second = b.claim_block(&n).await.unwrap();
            assert_eq!(
                (first.to_string(), second.to_string()),
                ("10.9.0.0/26".into(), "10.9.0.64/26".into())
            );
            assert_eq!(a.own_blocks(&n).await.unwrap(), [first]);
            let full = a.claim_block(&n).await.unwrap_err().error.to_string();
            assert!(full.contains("held, by nodes a, b"), "{full}");
            // b dies: its block goes with its lease, and a may take it.
            store.expire(b.status().lease.unwrap());
            assert_eq!(a.claim_block(&n).await.unwrap(), second);
            assert_eq!(a.own_blocks(&n).await.unwrap(), [first, second]);
        });
    }
}
