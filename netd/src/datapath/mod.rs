//! The eBPF data path: loads netd's kernel programs, attaches them to the uplink, and is
//! the only place that writes their maps. Maps are pinned under the bpffs directory so a
//! restarted daemon adopts the same tables.
//!
//! By concern: `load` loads the object and adopts the pinned maps, `links` attaches the
//! programs and keeps their pinned links, `tables` reads and writes the maps that describe
//! the node, its endpoints and published ports (`tables6` their IPv6 side), `endpoint_counters` keeps and reads each
//! endpoint's counters, `flows` reads and sweeps the connection table, `monitor` asks the
//! programs for events and hands over their ring buffer.

mod endpoint_counters;
mod flows;
pub mod kernel;
mod links;
mod load;
mod monitor;
mod nat46;
mod overlay;
mod tables;
mod tables6;

use std::{collections::HashSet, path::PathBuf};

use aya::{Ebpf, programs::TcAttachType};

pub use endpoint_counters::EndpointTotals;
pub use links::{XdpInUse, XdpRequest, cgroup2_mount};
pub use load::{DatapathLog, NamedVerdicts, check_bpffs};
pub use monitor::MonitorCounts;
pub use nat46::{Nat46Client, Nat46Collected, Nat46InUse};
pub use overlay::{Remote, RemoteTable};
pub use tables::{MapFill, NodeSettings, netns_cookie};

/// The kernel object built by netd/build.rs.
pub static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd-ebpf"));

pub struct Datapath {
    ebpf: Ebpf,
    /// Where the program links are pinned.
    links: PathBuf,
    /// Host-side veths the endpoint program is attached to (by this daemon or its
    /// predecessor, whose pinned link was updated).
    endpoints_attached: HashSet<String>,
    /// `--flow-table-size`: entries in each of the connection table's maps.
    flow_capacity: u32,
    /// Flows purged with their endpoints since the daemon last took them (`take_purged`),
    /// each as its first half with its other half: for `netd monitor`'s flow ends.
    purged: crate::conntrack::Purged,
    /// NAT46's pool while NAT46 is on (`set_nat46_pool`).
    nat46: Option<ipnet::Ipv4Net>,
    /// Pool addresses the last NAT46 collection found held by no client's mapping and
    /// no flow (freed if the next one finds them so again).
    nat46_orphans: HashSet<u32>,
    /// The uplink's MTU as NAT46 knows it (`set_nat46_uplink_mtu`; 0: unknown).
    nat46_uplink_mtu: u32,
}

/// The uplink's programs and where they attach.
pub const UPLINK_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("uplink_ingress", TcAttachType::Ingress),
    ("uplink_egress", TcAttachType::Egress),
];

/// The uplink's XDP program (`--xdp`).
pub const XDP_PROGRAM: &str = "uplink_xdp";
/// Its IPv6 half, tail-called through `XDP_CALLS`.
pub const XDP6_PROGRAM: &str = "uplink_xdp6";
/// NAT46 in the uplink's XDP program, tail-called by `XDP6_PROGRAM` (slot
/// `XDP_CALL_NAT46` of `XDP_CALLS`).
pub const XDP_NAT46_PROGRAM: &str = "uplink_xdp_nat46";

/// The program on each container's host-side veth (TC ingress).
pub const ENDPOINT_PROGRAM: &str = "endpoint_ingress";
/// Its partner on TC egress: counts what is delivered to the container.
pub const ENDPOINT_EGRESS_PROGRAM: &str = "endpoint_egress";
/// The IPv6 programs the IPv4 entry points tail-call through `CALLS`, by slot.
pub const IPV6_PROGRAMS: [(&str, u32); 8] = [
    (
        "endpoint_ingress6",
        netd_common::maps::CALL_ENDPOINT_INGRESS6,
    ),
    ("uplink_ingress6", netd_common::maps::CALL_UPLINK_INGRESS6),
    ("uplink_egress6", netd_common::maps::CALL_UPLINK_EGRESS6),
    (
        "uplink_egress6_new",
        netd_common::maps::CALL_UPLINK_EGRESS6_NEW,
    ),
    (
        "uplink_ingress6_new",
        netd_common::maps::CALL_UPLINK_INGRESS6_NEW,
    ),
    (
        "endpoint_ingress6_new",
        netd_common::maps::CALL_ENDPOINT_INGRESS6_NEW,
    ),
    ("uplink_nat46", netd_common::maps::CALL_UPLINK_NAT46),
    ("endpoint_nat46", netd_common::maps::CALL_ENDPOINT_NAT46),
];
/// The program on the node's VXLAN device (TC ingress): frames from other nodes.
pub const OVERLAY_PROGRAM: &str = "overlay_ingress";
/// Run by the collector, never attached (see `sweep_flows`).
pub const SWEEP_PROGRAM: &str = "flow_sweep";
/// `SWEEP_PROGRAM` for the IPv6 connection table.
pub const SWEEP6_PROGRAM: &str = "flow_sweep6";

/// The socket hooks for host-local access, attached to a cgroup.
pub const HOST_LOCAL_PROGRAMS: [&str; 8] = [
    "host_connect4",
    "host_sendmsg4",
    "host_recvmsg4",
    "host_getpeername4",
    "host_connect6",
    "host_sendmsg6",
    "host_recvmsg6",
    "host_getpeername6",
];
