//! Map names and sizes. The names carry a layout version (`_v1`): a daemon that finds a
//! pinned map of another version must not reuse it blindly.

pub const PUBLISHED_PORTS: &str = "NETD_PORTS_V1";
pub const FLOWS: &str = "NETD_FLOWS_V1";
pub const NODE_CONFIG: &str = "NETD_CONFIG_V1";
pub const NODE_ADDRS: &str = "NETD_ADDRS_V1";
pub const MASQ_SUBNETS: &str = "NETD_MASQ_V1";
pub const COUNTERS: &str = "NETD_COUNTERS_V1";
pub const ENDPOINTS: &str = "NETD_ENDPOINTS_V1";
pub const SOCKET_ORIGINS: &str = "NETD_SOCKETS_V1";

pub const PUBLISHED_PORTS_MAX: u32 = 65_536;
/// Two entries per translated flow (one per direction).
pub const FLOWS_MAX: u32 = 262_144;
pub const NODE_ADDRS_MAX: u32 = 256;
pub const MASQ_SUBNETS_MAX: u32 = 1_024;
pub const ENDPOINTS_MAX: u32 = 65_536;

/// Value of `ENDPOINTS`, keyed by the host-side veth's ifindex: who is behind it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The container's address and its network's gateway (network order).
    pub addr: u32,
    pub gateway: u32,
}

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
}

/// `MASQ_SUBNETS` is an LPM trie keyed by (prefix length, network-order address) with a
/// `u8` value: the container subnets whose egress is masqueraded.
pub const MASQ_VALUE: u8 = 1;
