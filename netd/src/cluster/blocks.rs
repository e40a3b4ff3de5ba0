//! Address blocks of overlay networks: each node claims blocks of a network's addresses
//! for itself and hands addresses out of its own blocks, with no store round trip per
//! container (Calico's block affinity). A block is a key bound to its node's lease
//! (`PREFIX/v1/blocks/NETWORK/A.B.C.D-LEN`, created only if absent): when a node dies,
//! its lease lapses, its blocks vanish with it and the other nodes may claim them.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{
    overlay::OverlayNetwork,
    store::{Guard, LeaseId, Op},
};

/// A block's size: 64 addresses. A smaller subnet (or `--ip-range`) is one block.
pub const BLOCK_PREFIX_LEN: u8 = 26;

/// What a block's key holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub node: String,
}

/// The blocks a network's addresses are cut into, in address order: its `--ip-range` if
/// it has one, else its subnet.
pub fn blocks_of(n: &OverlayNetwork) -> Vec<Ipv4Net> {
    let space = n.ip_range.unwrap_or(n.subnet);
    if space.prefix_len() >= BLOCK_PREFIX_LEN {
        return vec![space];
    }
    space
        .subnets(BLOCK_PREFIX_LEN)
        .map(Iterator::collect)
        .unwrap_or_default()
}

/// A block's key under `blocks_prefix` (which ends in `/`).
pub fn key(blocks_prefix: &str, block: &Ipv4Net) -> String {
    format!("{blocks_prefix}{}-{}", block.network(), block.prefix_len())
}

/// The block a key names.
pub fn parse_key(blocks_prefix: &str, key: &str) -> Option<Ipv4Net> {
    let (addr, len) = key.strip_prefix(blocks_prefix)?.split_once('-')?;
    Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()
}

/// What the key of a block `node` holds says.
pub fn record(node: &str) -> Vec<u8> {
    let record = BlockRecord {
        node: node.to_string(),
    };
    serde_json::to_vec(&record).expect("plain data")
}

/// The first block of `n` nobody holds (`claimed`: every block held, with its node), and
/// the transaction that claims it for `node` under `lease`.
pub fn plan_claim(
    n: &OverlayNetwork,
    claimed: &[(Ipv4Net, String)],
    blocks_prefix: &str,
    node: &str,
    lease: LeaseId,
) -> Result<(Ipv4Net, Vec<Guard>, Vec<Op>)> {
    let Some(block) = blocks_of(n)
        .into_iter()
        .find(|b| !claimed.iter().any(|(c, _)| c == b))
    else {
        let mut holders: Vec<&str> = claimed.iter().map(|(_, node)| node.as_str()).collect();
        holders.sort_unstable();
        holders.dedup();
        bail!(
            "network {} has no free address block: every block of {} is held, by nodes {}",
            n.name,
            n.ip_range.unwrap_or(n.subnet),
            holders.join(", ")
        );
    };
    let key = key(blocks_prefix, &block);
    let ops = vec![Op::Put {
        key: key.clone(),
        value: record(node),
        lease: Some(lease),
    }];
    Ok((block, vec![Guard::Absent(key)], ops))
}

/// The first address of `blocks` (this node's) that is a host address of the network,
/// not its gateway and not `taken`.
pub fn free_address(
    n: &OverlayNetwork,
    blocks: &[Ipv4Net],
    taken: &std::collections::BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    blocks
        .iter()
        .flat_map(|b| b.hosts().chain([b.network(), b.broadcast()]))
        .filter(|a| crate::ipam::is_host(&n.subnet, *a) && *a != n.gateway)
        .find(|a| !taken.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(subnet: &str, range: Option<&str>) -> OverlayNetwork {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        OverlayNetwork {
            name: "ov".into(),
            id: "x".into(),
            subnet,
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            ip_range: range.map(|r| r.parse().unwrap()),
            vni: 4096,
            internal: false,
            attachable: true,
            created: 0,
            created_on: "n1".into(),
            ipv6: None,
        }
    }

    const PREFIX: &str = "/netd/v1/blocks/ov/";

    #[test]
    fn a_network_is_cut_into_blocks_and_each_node_claims_the_first_free_one() {
        let n = network("10.0.0.0/24", None);
        assert_eq!(blocks_of(&n).len(), 4);
        let (b, guards, ops) = plan_claim(&n, &[], PREFIX, "n1", 7).unwrap();
        assert_eq!(b.to_string(), "10.0.0.0/26");
        assert_eq!(
            guards,
            [Guard::Absent("/netd/v1/blocks/ov/10.0.0.0-26".into())]
        );
        assert!(matches!(&ops[..], [Op::Put { lease: Some(7), .. }]));
        let claimed = [(b, "n1".to_string())];
        let (next, _, _) = plan_claim(&n, &claimed, PREFIX, "n2", 8).unwrap();
        assert_eq!(next.to_string(), "10.0.0.64/26");
        assert_eq!(parse_key(PREFIX, &key(PREFIX, &next)), Some(next));
        // A small range is one block.
        assert_eq!(
            blocks_of(&network("10.0.0.0/24", Some("10.0.0.128/28"))).len(),
            1
        );
    }

    #[test]
    fn a_full_network_names_who_holds_its_blocks() {
        let n = network("10.0.0.0/25", None);
        let claimed: Vec<(Ipv4Net, String)> = blocks_of(&n)
            .into_iter()
            .zip(["n2", "n1"])
            .map(|(b, node)| (b, node.to_string()))
            .collect();
        let err = plan_claim(&n, &claimed, PREFIX, "n3", 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("every block of 10.0.0.0/25 is held, by nodes n1, n2"),
            "{err}"
        );
    }

    #[test]
    fn addresses_come_from_the_nodes_blocks_never_the_gateway_network_or_broadcast() {
        let n = network("10.0.0.0/24", None);
        let first: Ipv4Net = "10.0.0.0/26".parse().unwrap();
        let last: Ipv4Net = "10.0.0.192/26".parse().unwrap();
        let mut taken = std::collections::BTreeSet::new();
        assert_eq!(
            free_address(&n, &[first], &taken),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        taken.insert(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            free_address(&n, &[first], &taken),
            Some(Ipv4Addr::new(10, 0, 0, 3))
        );
        // A block's own first and last addresses are hosts of the subnet: used last.
        let hosts: std::collections::BTreeSet<Ipv4Addr> = last.hosts().collect();
        assert_eq!(
            free_address(&n, &[last], &hosts),
            Some(Ipv4Addr::new(10, 0, 0, 192))
        );
        let all: std::collections::BTreeSet<Ipv4Addr> =
            last.hosts().chain([last.network()]).collect();
        assert_eq!(
            free_address(&n, &[last], &all),
            None,
            "10.0.0.255 is the broadcast"
        );
    }
}
