//! Nodes that share networks across hosts, agreeing through a key-value store (etcd, as
//! Docker's `--cluster-store` did before swarm, and flannel and Calico do). `config`
//! reads the `--cluster-*` flags; `store` is the small trait the rest is written against
//! (`etcd` is the real one, `memory` the fake the unit tests use); `membership` keeps
//! this node registered under a lease and lists the nodes; `overlay` plans overlay
//! networks' records, which every node follows through a `mirror` of the store;
//! `blocks` cuts their addresses into blocks each node claims under its lease.

pub mod blocks;
pub mod config;
pub mod etcd;
pub mod membership;
#[cfg(test)]
pub mod memory;
pub mod mirror;
pub mod overlay;
pub mod store;

pub use config::ClusterConfig;
pub use membership::Member;
