//! netd's library: everything the `netd` binary is made of, one job per module, so that
//! tests can drive the same code (the datapath tests write maps through `Datapath`).

pub mod address_probe;
pub mod api;
pub mod arp_probe;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod conntrack;
pub mod daemon;
pub mod datapath;
pub mod docker_plugin;
pub mod driver;
pub mod endpoint;
pub mod events;
pub mod ipam;
pub mod ipam6;
pub mod journal;
pub mod metrics;
pub mod monitor;
pub mod nd_probe;
pub mod netlink;
pub mod netns;
pub mod network_request;
pub mod node_ports;
pub mod notify;
pub mod pending_del;
pub mod pins;
pub mod plan;
pub mod ports;
pub mod process;
pub mod readiness;
pub mod state;
pub mod sysctl;

/// Now, in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
