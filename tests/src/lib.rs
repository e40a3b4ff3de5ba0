//! The end-to-end harness: namespaces that clean up after themselves, a netd daemon run
//! inside a node namespace exactly as a user would run it, and a connection tester.
//!
//! Topology (`Sandbox::new`):
//!
//! ```text
//!   ext (client, 10.200.0.1) --veth-- node (netd, uplink0 10.200.0.2) --bridge-- containers
//!    |  routes between its two links
//!   inet (10.201.0.2): the "internet"; it knows no route to container subnets
//! ```
//!
//! Every test gets its own namespaces (names carry the pid and a counter), so tests run
//! in parallel; nothing is ever created in the root network namespace.

pub mod bench;
pub mod cluster;
pub mod cni;
pub mod collector;
pub mod craft;
pub mod daemon;
pub mod docker;
pub mod echo;
pub mod engine;
pub mod ipv6;
pub mod lan;
pub mod monitor;
pub mod netns;
pub mod podman;
pub mod prometheus;
pub mod stream;

pub use daemon::{Daemon, assert_fast_paths_taken};
pub use echo::{
    EchoServer, HeldConnection, Proto, echo_fails, echo_once, udp_echo_from, udp_echo_sized,
};
pub use netns::{Netns, Sandbox, require_root, unique_name};

/// An IPv4 or IPv6 address and a port.
pub fn addr(ip: impl Into<std::net::IpAddr>, port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(ip.into(), port)
}
