//! Nodes that share networks across hosts, agreeing through a key-value store (etcd, as
//! Docker's `--cluster-store` did before swarm, and flannel and Calico do). `config`
//! reads the `--cluster-*` flags; `store` is the small trait the rest is written against
//! (`etcd` is the real one, `memory` the fake the unit tests use); `membership` keeps
//! this node registered under a lease and lists the nodes; `overlay` plans overlay
//! networks' records, which every node follows through a `mirror` of the store;
//! `blocks` cuts their addresses into blocks each node claims under its lease; `networks`
//! is what a member does with both in the store; `endpoints` records the containers on
//! them, each under its node's lease, and follows the other nodes'.

pub mod blocks;
pub mod config;
pub mod endpoints;
pub mod etcd;
pub mod membership;
#[cfg(test)]
pub mod memory;
pub mod mirror;
pub mod networks;
pub mod overlay;
pub mod store;

pub use config::ClusterConfig;
pub use membership::Member;

use crate::ports::Proto;

/// The node's one VXLAN device, shared by every overlay network (external mode).
pub const VXLAN_DEVICE: &str = "netd-vxlan";
/// VXLAN's IANA port.
pub const VXLAN_PORT: u16 = 4789;
/// What VXLAN adds to each frame: outer IPv4 (20), UDP (8), VXLAN (8) headers and the
/// inner Ethernet header (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Host ports a node of a cluster keeps for the cluster's own traffic on the underlay:
/// `-p` refuses them there (a published port would take the traffic from the node).
pub const RESERVED_PORTS: [(Proto, u16, &str); 3] = [
    (Proto::Udp, 4789, "VXLAN, the overlay's transport"),
    (Proto::Tcp, 2379, "etcd's clients"),
    (Proto::Tcp, 2380, "etcd's peers"),
];

/// Why a node of a cluster cannot publish on `proto`/`port`, if it cannot.
pub fn reserved_port(proto: Proto, port: u16) -> Option<String> {
    RESERVED_PORTS
        .iter()
        .find(|(p, n, _)| *p == proto && *n == port)
        .map(|(_, _, what)| {
            format!("port is reserved on a node of a cluster for {what} ({port}/{proto})")
        })
}
