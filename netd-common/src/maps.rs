//! Map names and sizes. The names carry a layout version (`_V1`): whenever a map's key,
//! value or size changes, its version goes up, so that a daemon never reuses a pinned map
//! of another layout (the daemon removes pins of other versions and rebuilds their
//! contents from its state).

pub const PUBLISHED_PORTS: &str = "NETD_PORTS_V1";
/// Confirmed flows (a reply seen, a TCP handshake completed): never evicted.
pub const FLOWS: &str = "NETD_FLOWS_V2";
/// Flows not confirmed yet: an LRU, where a flood only evicts other unconfirmed flows.
pub const PENDING_FLOWS: &str = "NETD_PENDING_V2";
/// The flow tables of the previous layout (entries without counts), and the table each
/// is copied into when a daemon adopts them: flows survive the upgrade.
pub const FLOWS_UPGRADED: [(&str, &str); 2] =
    [("NETD_FLOWS_V1", FLOWS), ("NETD_PENDING_V1", PENDING_FLOWS)];
/// Confirmed flows per endpoint address, for the per-endpoint quota.
pub const FLOW_OWNERS: &str = "NETD_OWNERS_V1";
/// The ports of fragmented datagrams, by their first fragment.
pub const FRAGMENTS: &str = "NETD_FRAGS_V1";
/// The same for IPv6 datagrams.
pub const FRAGMENTS6: &str = "NETD_FRAGS6_V1";
pub const NODE_CONFIG: &str = "NETD_CONFIG_V4";
pub const NODE_ADDRS: &str = "NETD_ADDRS_V2";
pub const COUNTERS: &str = "NETD_COUNTERS_V4";
pub const ENDPOINTS: &str = "NETD_ENDPOINTS_V3";
/// Each endpoint's address to its host-side veth (the reverse of `ENDPOINTS`).
pub const ENDPOINT_VETHS: &str = "NETD_VETHS_V1";
pub const NETWORKS: &str = "NETD_NETWORKS_V2";
pub const SOCKET_ORIGINS: &str = "NETD_SOCKETS_V1";
/// `SOCKET_ORIGINS` of IPv6 sockets.
pub const SOCKET_ORIGINS6: &str = "NETD_SOCKETS6_V1";
/// Containers on other nodes of the cluster, by overlay address.
pub const REMOTE_ENDPOINTS: &str = "NETD_REMOTES_V1";
/// `REMOTE_ENDPOINTS` for the overlays' IPv6 addresses.
pub const REMOTE_ENDPOINTS6: &str = "NETD_REMOTES6_V1";
/// The overlay networks set up on this node, by VXLAN ID.
pub const OVERLAYS: &str = "NETD_OVERLAYS_V1";
/// Per-endpoint counters (per CPU), by host-side veth: sent, received, dropped.
pub const ENDPOINT_COUNTERS: &str = "NETD_EPCOUNTERS_V1";
/// Per-endpoint drops by reason (per CPU): an LRU, so a table full of stale keys never
/// stops counting.
pub const ENDPOINT_DROPS: &str = "NETD_EPDROPS_V1";
/// The IPv6 side of each endpoint with IPv6, by host-side veth (as `ENDPOINTS`).
pub const ENDPOINTS6: &str = "NETD_ENDPOINTS6_V1";
/// The networks' IPv6 subnets (an LPM trie, as `NETWORKS`).
pub const NETWORKS6: &str = "NETD_NETWORKS6_V1";
/// Each endpoint's IPv6 address to its host-side veth (as `ENDPOINT_VETHS`): the flows a
/// container masquerades over IPv6 know where their replies go.
pub const ENDPOINT_VETHS6: &str = "NETD_VETHS6_V1";
/// The node's own IPv6 addresses (as `NODE_ADDRS`).
pub const NODE_ADDRS6: &str = "NETD_ADDRS6_V1";
/// The IPv6 connection table (as `FLOWS`, `PENDING_FLOWS` and `FLOW_OWNERS`): the same
/// layout over IPv6 addresses, sized as the IPv4 one.
pub const FLOWS6: &str = "NETD_FLOWS6_V2";
pub const PENDING_FLOWS6: &str = "NETD_PENDING6_V1";
pub const FLOW_OWNERS6: &str = "NETD_OWNERS6_V1";
/// The published ports on the node's IPv6 addresses (as `PUBLISHED_PORTS`).
pub const PUBLISHED_PORTS6: &str = "NETD_PORTS6_V1";
/// The connection table's maps sized by `--flow-table-size` (both families).
pub const FLOW_TABLES: [&str; 4] = [FLOWS, PENDING_FLOWS, FLOWS6, PENDING_FLOWS6];
/// The node's IPv6 settings (index 0), beside `NODE_CONFIG`.
pub const NODE_CONFIG6: &str = "NETD_CONFIG6_V1";
/// The IPv6 programs the IPv4 entry points hand IPv6 frames to (`CALL_*` indexes). Pinned:
/// the kernel empties a program array when its last user reference goes.
pub const CALLS: &str = "NETD_CALLS_V1";
/// NAT46: IPv6 client -> its pool address (`Nat46Mapping`), and the pool address -> the
/// client. Pinned: the flows of the IPv6 table hold the mapped addresses.
pub const NAT46_CLIENTS: &str = "NETD_NAT46_CLIENTS_V1";
pub const NAT46_MAPPED: &str = "NETD_NAT46_MAPPED_V1";
/// NAT46's settings (index 0), not pinned.
pub const NAT46_CONFIG: &str = "NAT46_CONFIG";

/// Every pinned map of the kernel object (a test checks the object has exactly these).
pub const PINNED: [&str; 31] = [
    PUBLISHED_PORTS,
    FLOWS,
    PENDING_FLOWS,
    FLOW_OWNERS,
    FRAGMENTS,
    NODE_CONFIG,
    NODE_ADDRS,
    COUNTERS,
    ENDPOINTS,
    ENDPOINT_VETHS,
    NETWORKS,
    SOCKET_ORIGINS,
    SOCKET_ORIGINS6,
    REMOTE_ENDPOINTS,
    REMOTE_ENDPOINTS6,
    OVERLAYS,
    ENDPOINT_COUNTERS,
    ENDPOINT_DROPS,
    ENDPOINTS6,
    NETWORKS6,
    NODE_ADDRS6,
    CALLS,
    FLOWS6,
    PENDING_FLOWS6,
    FLOW_OWNERS6,
    NODE_CONFIG6,
    PUBLISHED_PORTS6,
    FRAGMENTS6,
    ENDPOINT_VETHS6,
    NAT46_CLIENTS,
    NAT46_MAPPED,
];

pub const PUBLISHED_PORTS_MAX: u32 = 65_536;
/// Two entries per translated flow (one per direction); the unconfirmed table has as
/// many again.
pub const FLOWS_MAX: u32 = 262_144;
/// Well above the addresses netd itself adds (a gateway per network, NETWORKS_MAX).
pub const NODE_ADDRS_MAX: u32 = 16_384;
pub const ENDPOINTS_MAX: u32 = 65_536;
pub const NETWORKS_MAX: u32 = 4_096;
/// (endpoint, drop reason) pairs counted; beyond it the least recently bumped go.
pub const ENDPOINT_DROPS_MAX: u32 = 65_536;
/// Containers of the cluster's other nodes this node can reach over its overlays.
pub const REMOTE_ENDPOINTS_MAX: u32 = 65_536;
/// Slots of `CALLS`.
pub const CALLS_MAX: u32 = 8;
/// `CALLS` index of `endpoint_ingress6`.
pub const CALL_ENDPOINT_INGRESS6: u32 = 0;
/// `CALLS` index of `uplink_ingress6`.
pub const CALL_UPLINK_INGRESS6: u32 = 1;
/// `CALLS` index of `uplink_egress6`.
pub const CALL_UPLINK_EGRESS6: u32 = 2;
/// `CALLS` index of `uplink_egress6_new` (tail-called by `uplink_egress6`).
pub const CALL_UPLINK_EGRESS6_NEW: u32 = 3;
/// `CALLS` index of `uplink_ingress6_new` (tail-called by `uplink_ingress6`).
pub const CALL_UPLINK_INGRESS6_NEW: u32 = 4;
/// `CALLS` index of `endpoint_ingress6_new` (tail-called by `endpoint_ingress6`).
pub const CALL_ENDPOINT_INGRESS6_NEW: u32 = 5;
/// `CALLS` index of `uplink_nat46` (tail-called by `uplink_ingress6`): NAT46 in.
pub const CALL_UPLINK_NAT46: u32 = 6;
/// `CALLS` index of `endpoint_nat46` (tail-called by `endpoint_ingress`): NAT46's
/// replies out.
pub const CALL_ENDPOINT_NAT46: u32 = 7;
/// Slots of `XDP_CALLS`: the uplink's XDP programs for IPv6, tail-called by `uplink_xdp`.
pub const XDP_CALLS_MAX: u32 = 2;
/// `XDP_CALLS` index of `uplink_xdp6`.
pub const XDP_CALL_UPLINK6: u32 = 0;
/// `XDP_CALLS` index of `uplink_xdp_nat46` (tail-called by `uplink_xdp6`): NAT46 in.
pub const XDP_CALL_NAT46: u32 = 1;
/// The program array `uplink_xdp` hands IPv6 frames to. Not pinned: an XDP program left
/// attached by a daemon gone finds it empty, and passes IPv6 on to TC, which translates
/// it as ever.
pub const XDP_CALLS: &str = "XDP_CALLS";
/// IPv6 clients NAT46 maps to addresses of its pool at once (a /16 at most).
pub const NAT46_CLIENTS_MAX: u32 = 65_536;
/// Fragmented datagrams in flight whose first fragment was seen.
pub const FRAGMENTS_MAX: u32 = 16_384;
/// Candidate keys one run of the sweep program judges (an array map, not pinned: it
/// only carries one batch from the daemon to the program).
pub const SWEEP_BATCH: u32 = 64;
pub const SWEEP: &str = "SWEEP_BATCH";
/// The batch of `flow_sweep6` (IPv6 keys).
pub const SWEEP6: &str = "SWEEP_BATCH6";

/// Value of `ENDPOINTS`, keyed by the host-side veth's ifindex: who is behind it, and
/// what it may send.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The container's address and its network's gateway (network order); both 0 on an
    /// IPv6-only network (every IPv4 and ARP frame from the endpoint is then dropped).
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

/// An IPv6 address as the programs compare it: its 16 bytes in packet order, read as four
/// native `u32`s (the shape of `bpf_sock_addr.user_ip6` and `bpf_fib_lookup.ipv6_*`).
pub type Addr6 = [u32; 4];

/// Value of `ENDPOINTS6`, keyed by the host-side veth's ifindex: the IPv6 addresses of an
/// endpoint whose network has IPv6 (its MAC and flags are `ENDPOINTS`').
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint6Info {
    /// The container's address on the network (from IPAM).
    pub addr: Addr6,
    /// The container interface's link-local address (EUI-64 of its MAC).
    pub link_local: Addr6,
    /// The network's gateway (the bridge's address on the subnet).
    pub gateway: Addr6,
    /// The bridge's link-local address (EUI-64 of its MAC).
    pub gateway_link_local: Addr6,
}

/// The endpoint's network has inter-container communication off (`enable_icc=false`).
pub const ENDPOINT_ICC_OFF: u16 = 1;
/// The endpoint's network is `--internal`: nothing outside the network is reachable.
pub const ENDPOINT_INTERNAL: u16 = 2;

/// `NETWORKS` is an LPM trie keyed by (prefix length, network-order address) of each
/// network's subnet: which network a destination belongs to, and how it is reached.
pub type NetworkTag = u32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    pub tag: NetworkTag,
    /// `NETWORK_*` flags.
    pub flags: u32,
}

/// The network's egress is masqueraded behind the uplink's address.
pub const NETWORK_MASQUERADE: u32 = 1;
/// Hosts beyond the uplink may reach its containers directly (`gateway_mode=routed`);
/// otherwise only published ports and the replies of the containers' own flows get in.
pub const NETWORK_ROUTED: u32 = 2;

/// Value of `REMOTE_ENDPOINTS`, keyed by the container's overlay address (network
/// order): where its frames are sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// The underlay address of the node it runs on (network order).
    pub node: u32,
    /// Its network's VXLAN ID.
    pub vni: u32,
}

/// Value of `OVERLAYS`, keyed by VXLAN ID: an overlay network set up on this node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlayInfo {
    /// Its tag (as in `NETWORKS` and its endpoints').
    pub tag: NetworkTag,
    /// The node's VXLAN device: where its frames to other nodes are sent.
    pub vxlan_ifindex: u32,
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
    /// The uplink's ifindex: where the egress fast path sends packets.
    pub uplink_ifindex: u32,
    /// `fast_path::FAST_PATH` when the redirects are on.
    pub flags: u32,
    /// Confirmed flows one endpoint address may hold; beyond it, its flows stay in the
    /// unconfirmed table (working, but evicted first when the table is under pressure).
    pub flow_quota: u32,
    /// Confirmed flows in all, above which only endpoints holding fewer than an eighth
    /// of their quota confirm more: the rest of the table is kept for them, so that a few
    /// endpoints at their quota cannot fill it. 0: no such reserve.
    pub flow_high_water: u32,
    /// The uplink's MAC address: what leaves through the uplink with another source MAC
    /// is not the node's (a macvlan container on the uplink) and is never translated.
    /// All zero: no such check.
    pub uplink_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// The key of `FLOW_OWNERS` that counts every confirmed flow (0.0.0.0 owns none).
pub const ALL_OWNERS: u32 = 0;
/// The key of `FLOW_OWNERS6` that counts every confirmed IPv6 flow (`::` owns none).
pub const ALL_OWNERS6: Addr6 = [0; 4];

/// The node-wide IPv6 settings the programs read from index 0 of `NODE_CONFIG6` (the
/// SNAT port range and the rest are `NodeConfig`'s).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig6 {
    /// The uplink's IPv6 address that masqueraded traffic leaves with; `::` while the
    /// uplink has none (masqueraded IPv6 is then dropped: `drop_ipv6_no_snat_address`).
    pub snat_addr: Addr6,
}

/// NAT46's settings, index 0 of `NAT46_CONFIG` (not pinned: the daemon writes it at
/// every start): the pool IPv6 clients are mapped into (`--nat46-pool`), its first
/// address (network order) and how many addresses it has (0: NAT46 off); and the
/// uplink's MTU (0: unknown), which a container's packet, 20 bytes longer as IPv6, must
/// fit: a client's SYN asks for segments no longer than it less 60 (its IPv6 and TCP
/// headers), and what would not fit is dropped with its reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat46Config {
    pub pool: u32,
    pub pool_len: u32,
    pub uplink_mtu: u32,
}

/// Value of `NAT46_CLIENTS`: the pool address an IPv6 client is mapped to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat46Mapping {
    /// Network order.
    pub addr: u32,
    /// `NAT46_CONFIRMED` once a flow of the client's proved itself (its address then
    /// stays its own until its flows are gone; before, a new client may take it while
    /// the pool is full: see `NAT46_UNCONFIRMED_HOLD_NS`).
    pub flags: u32,
    /// `bpf_ktime_get_ns` of the latest flow it was given to.
    pub last_used_ns: u64,
}

/// `Nat46Mapping::flags`: a flow of the client was confirmed (a TCP handshake completed,
/// a reply to anything else), which a source spoofed from afar cannot bring about.
pub const NAT46_CONFIRMED: u32 = 1;

/// How long a client none of whose flows was ever confirmed keeps its pool address
/// against a new client that finds no free one: a flood of spoofed sources only takes
/// addresses from one another (and from clients still in their first handshake), as
/// unconfirmed flows only evict one another.
pub const NAT46_UNCONFIRMED_HOLD_NS: u64 = 500_000_000;

/// Key of `FRAGMENTS`: a datagram as its fragments carry it (addresses network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    /// The IP identification, network order.
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Key of `FRAGMENTS6`: an IPv6 datagram as its fragments carry it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentKey6 {
    pub src_addr: Addr6,
    pub dst_addr: Addr6,
    /// The Fragment header's identification, network order.
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of `FRAGMENTS` and `FRAGMENTS6`: the ports (network order) the first fragment
/// carried.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentPorts {
    pub src_port: u16,
    pub dst_port: u16,
    pub _pad: u32,
    /// When the first fragment passed (CLOCK_MONOTONIC ns).
    pub seen_ns: u64,
}

/// How long the following fragments of a datagram are translated after its first (as
/// Linux's ipfrag_time): an IP ID reused later is a new datagram.
pub const FRAGMENT_TIMEOUT_NS: u64 = 30_000_000_000;

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<EndpointInfo>() == 32);
    assert!(size_of::<Endpoint6Info>() == 64);
    assert!(size_of::<NetworkInfo>() == 8);
    assert!(size_of::<RemoteEndpoint>() == 8);
    assert!(size_of::<OverlayInfo>() == 8);
    assert!(size_of::<NodeConfig>() == 40);
    assert!(size_of::<NodeConfig6>() == 16);
    assert!(size_of::<FragmentKey>() == 12);
    assert!(size_of::<FragmentKey6>() == 40);
    assert!(size_of::<FragmentPorts>() == 16);
};
