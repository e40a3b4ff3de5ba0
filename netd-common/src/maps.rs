//! Map names and sizes. The names carry a layout version (`_V1`): whenever a map's key,
//! value or size changes, its version goes up, so that a daemon never reuses a pinned map
//! of another layout (the daemon removes pins of other versions and rebuilds their
//! contents from its state).

pub const PUBLISHED_PORTS: &str = "NETD_PORTS_V1";
pub const FLOWS: &str = "NETD_FLOWS_V1";
pub const NODE_CONFIG: &str = "NETD_CONFIG_V2";
pub const NODE_ADDRS: &str = "NETD_ADDRS_V1";
pub const MASQ_SUBNETS: &str = "NETD_MASQ_V1";
pub const COUNTERS: &str = "NETD_COUNTERS_V3";
pub const ENDPOINTS: &str = "NETD_ENDPOINTS_V3";
pub const NETWORKS: &str = "NETD_NETWORKS_V1";
pub const SOCKET_ORIGINS: &str = "NETD_SOCKETS_V1";

pub const PUBLISHED_PORTS_MAX: u32 = 65_536;
/// Two entries per translated flow (one per direction).
pub const FLOWS_MAX: u32 = 262_144;
pub const NODE_ADDRS_MAX: u32 = 256;
pub const MASQ_SUBNETS_MAX: u32 = 1_024;
pub const ENDPOINTS_MAX: u32 = 65_536;
pub const NETWORKS_MAX: u32 = 4_096;
/// Candidate keys one run of the sweep program judges (an array map, not pinned: it
/// only carries one batch from the daemon to the program).
pub const SWEEP_BATCH: u32 = 256;
pub const SWEEP: &str = "SWEEP_BATCH";

/// Value of `ENDPOINTS`, keyed by the host-side veth's ifindex: who is behind it, and
/// what it may send.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The container's address and its network's gateway (network order).
    pub addr: u32,
    pub gateway: u32,
    /// The container interface's MAC address: frames from any other are dropped.
    pub mac: [u8; 6],
    /// `ENDPOINT_*` flags of its network.
    pub flags: u16,
    /// Its network's tag (as in `NETWORKS`).
    pub network: u32,
    /// Its bridge's MAC address: frames to it are routed by the node, all others are
    /// bridged (the fast path only takes the former).
    pub gateway_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Its bridge's ifindex: where the node routes the endpoint's packets from (the fast
    /// path's route lookup starts there, as the stack's would).
    pub bridge_ifindex: u32,
}

/// The endpoint's network has inter-container communication off (`enable_icc=false`).
pub const ENDPOINT_ICC_OFF: u16 = 1;
/// The endpoint's network is `--internal`: nothing outside the network is reachable.
pub const ENDPOINT_INTERNAL: u16 = 2;

/// `NETWORKS` is an LPM trie keyed by (prefix length, network-order address) of each
/// network's subnet; the value is the network's tag, so that a destination address tells
/// which network it belongs to.
pub type NetworkTag = u32;

/// The node-wide settings the programs read from index 0 of `NODE_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The uplink's IPv4 address that masqueraded traffic leaves with (network order).
    pub snat_addr: u32,
    /// First and last port of the SNAT range (host order, inclusive).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// The node's network namespace (SO_NETNS_COOKIE): the socket hooks act only on
    /// sockets there; 0 turns them off.
    pub netns_cookie: u64,
    /// The uplink's ifindex: where the egress fast path sends packets.
    pub uplink_ifindex: u32,
    /// `fast_path::FAST_PATH` when the redirects are on.
    pub flags: u32,
}

/// `MASQ_SUBNETS` is an LPM trie keyed by (prefix length, network-order address) with a
/// `u8` value: the container subnets whose egress is masqueraded.
pub const MASQ_VALUE: u8 = 1;
