//! The maps, pinned by name so that a restarted daemon finds the same state. Their names
//! and value types come from netd-common; keep the two in step.

use crate::parse6::Flow6;
use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap,
        ProgramArray, RingBuf,
    },
};
use netd_common::{
    counters::{COUNTERS_LEN, Counter, EndpointCounters, EndpointDropKey},
    flow::{FlowEntry, FlowEntry6, FlowKey, FlowKey6},
    maps::{
        Addr6, CALLS_MAX, ENDPOINT_DROPS_MAX, ENDPOINTS_MAX, Endpoint6Info, EndpointInfo,
        FLOWS_MAX, FRAGMENTS_MAX, FragmentKey, FragmentKey6, FragmentPorts, NAT46_CLIENTS_MAX,
        NETWORKS_MAX, NODE_ADDRS_MAX, Nat46Config, Nat46Mapping, NetworkInfo, NodeConfig,
        NodeConfig6, OverlayInfo, PUBLISHED_PORTS_MAX, REMOTE_ENDPOINTS_MAX, RemoteEndpoint,
        SWEEP_BATCH, XDP_CALLS_MAX,
    },
    monitor::{MONITOR_RING_BYTES, MonitorConfig, MonitorState},
    published::{Backend, Backend6, PortKey, PortKey6},
    sockets::{SOCKET_ORIGINS_MAX, SocketOrigin, SocketOrigin6, SocketPeer, SocketPeer6},
};

#[map(name = "NETD_PORTS_V1")]
pub static PUBLISHED_PORTS: HashMap<PortKey, Backend> = HashMap::pinned(PUBLISHED_PORTS_MAX, 0);

/// The ports published on the node's IPv6 addresses (only the wildcard binding, `[::]`,
/// so far).
#[map(name = "NETD_PORTS6_V1")]
pub static PUBLISHED_PORTS6: HashMap<PortKey6, Backend6> = HashMap::pinned(PUBLISHED_PORTS_MAX, 0);

/// Confirmed flows. A plain hash (not LRU): the kernel never evicts half of a flow; the
/// daemon's garbage collector removes both halves together, and a full table is counted.
#[map(name = "NETD_FLOWS_V2")]
pub static FLOWS: HashMap<FlowKey, FlowEntry> = HashMap::pinned(FLOWS_MAX, 0);

/// Flows until they are confirmed (`conntrack`): an LRU, so that a flood of flows that
/// are never answered (spoofed SYNs, a container spraying datagrams) only ever evicts its
/// own kind, never a confirmed flow. Sized like `FLOWS` by the daemon.
#[map(name = "NETD_PENDING_V2")]
pub static PENDING: LruHashMap<FlowKey, FlowEntry> = LruHashMap::pinned(FLOWS_MAX, 0);

/// Confirmed flows per endpoint address (see `flow::owner`), against its quota.
#[map(name = "NETD_OWNERS_V1")]
pub static FLOW_OWNERS: HashMap<u32, u64> = HashMap::pinned(ENDPOINTS_MAX, 0);

/// The ports of fragmented datagrams, remembered from their first fragment.
#[map(name = "NETD_FRAGS_V1")]
pub static FRAGMENTS: LruHashMap<FragmentKey, FragmentPorts> = LruHashMap::pinned(FRAGMENTS_MAX, 0);

/// `FRAGMENTS` for IPv6 datagrams.
#[map(name = "NETD_FRAGS6_V1")]
pub static FRAGMENTS6: LruHashMap<FragmentKey6, FragmentPorts> =
    LruHashMap::pinned(FRAGMENTS_MAX, 0);

#[map(name = "NETD_CONFIG_V4")]
pub static NODE_CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// The node's own addresses: where a wildcard published port answers.
#[map(name = "NETD_ADDRS_V2")]
pub static NODE_ADDRS: HashMap<u32, u8> = HashMap::pinned(NODE_ADDRS_MAX, 0);

#[map(name = "NETD_COUNTERS_V4")]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(COUNTERS_LEN, 0);

/// Each container address's host-side veth (the reverse of `ENDPOINTS`): where the
/// replies of a flow created at the uplink go when the fast path delivers them.
#[map(name = "NETD_VETHS_V1")]
pub static ENDPOINT_VETHS: HashMap<u32, u32> = HashMap::pinned(ENDPOINTS_MAX, 0);

/// Who is behind each container's host-side veth, by its ifindex.
#[map(name = "NETD_ENDPOINTS_V3")]
pub static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::pinned(ENDPOINTS_MAX, 0);

/// Every network's subnet: which network an address belongs to, whether its egress is
/// masqueraded, whether it may be routed to directly.
#[map(name = "NETD_NETWORKS_V2")]
pub static NETWORKS: LpmTrie<u32, NetworkInfo> =
    LpmTrie::pinned(NETWORKS_MAX, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// For host-local sockets that were pointed at a container: the address they called. An
/// LRU: losing an entry only changes the peer address a process is shown.
#[map(name = "NETD_SOCKETS_V1")]
pub static SOCKET_ORIGINS: LruHashMap<SocketPeer, SocketOrigin> =
    LruHashMap::pinned(SOCKET_ORIGINS_MAX, 0);

/// `SOCKET_ORIGINS` of IPv6 sockets.
#[map(name = "NETD_SOCKETS6_V1")]
pub static SOCKET_ORIGINS6: LruHashMap<SocketPeer6, SocketOrigin6> =
    LruHashMap::pinned(SOCKET_ORIGINS_MAX, 0);

/// Containers on the cluster's other nodes, by overlay address: which node and VXLAN ID
/// their frames go to. Written by the daemon from the cluster store's endpoints.
#[map(name = "NETD_REMOTES_V1")]
pub static REMOTE_ENDPOINTS: HashMap<u32, RemoteEndpoint> =
    HashMap::pinned(REMOTE_ENDPOINTS_MAX, 0);

/// `REMOTE_ENDPOINTS` for their IPv6 addresses (on overlays with IPv6).
#[map(name = "NETD_REMOTES6_V1")]
pub static REMOTE_ENDPOINTS6: HashMap<Addr6, RemoteEndpoint> =
    HashMap::pinned(REMOTE_ENDPOINTS_MAX, 0);

/// The overlay networks set up on this node, by VXLAN ID.
#[map(name = "NETD_OVERLAYS_V1")]
pub static OVERLAYS: HashMap<u32, OverlayInfo> = HashMap::pinned(NETWORKS_MAX, 0);

/// Each endpoint's packets and bytes sent, received and dropped, by its host-side veth.
/// Entries are the daemon's to create and remove; the programs only add to them.
#[map(name = "NETD_EPCOUNTERS_V1")]
pub static ENDPOINT_COUNTERS: PerCpuHashMap<u32, EndpointCounters> =
    PerCpuHashMap::pinned(ENDPOINTS_MAX, 0);

/// What each endpoint sent that was dropped, by reason.
#[map(name = "NETD_EPDROPS_V1")]
pub static ENDPOINT_DROPS: LruPerCpuHashMap<EndpointDropKey, Counter> =
    LruPerCpuHashMap::pinned(ENDPOINT_DROPS_MAX, 0);

/// Each endpoint's IPv6 address to its host-side veth (the reverse of `ENDPOINTS6`).
#[map(name = "NETD_VETHS6_V1")]
pub static ENDPOINT_VETHS6: HashMap<Addr6, u32> = HashMap::pinned(ENDPOINTS_MAX, 0);

/// The IPv6 side of the endpoints whose network has IPv6, by host-side veth.
#[map(name = "NETD_ENDPOINTS6_V1")]
pub static ENDPOINTS6: HashMap<u32, Endpoint6Info> = HashMap::pinned(ENDPOINTS_MAX, 0);

/// Every network's IPv6 subnet, as `NETWORKS`.
#[map(name = "NETD_NETWORKS6_V1")]
pub static NETWORKS6: LpmTrie<Addr6, NetworkInfo> =
    LpmTrie::pinned(NETWORKS_MAX, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// The node's own IPv6 addresses.
#[map(name = "NETD_ADDRS6_V1")]
pub static NODE_ADDRS6: HashMap<Addr6, u8> = HashMap::pinned(NODE_ADDRS_MAX, 0);

/// The IPv6 programs, tail-called by the IPv4 entry points for IPv6 frames
/// (`netd_common::maps::CALL_*`). Filled by the daemon at every start.
#[map(name = "NETD_CALLS_V1")]
pub static CALLS: ProgramArray = ProgramArray::pinned(CALLS_MAX, 0);

/// The uplink's XDP programs for IPv6, tail-called by `uplink_xdp`
/// (`netd_common::maps::XDP_CALL_*`; not pinned, see `netd_common::maps::XDP_CALLS`).
/// Filled by the daemon when it loads the XDP program.
#[map(name = "XDP_CALLS")]
pub static XDP_CALLS: ProgramArray = ProgramArray::with_max_entries(XDP_CALLS_MAX, 0);

/// The IPv6 connection table: as `FLOWS`, `PENDING` and `FLOW_OWNERS`, over IPv6
/// addresses (sized as those by the daemon). Its confirmed flows take memory as they
/// come (no preallocation): a node with little IPv6 pays little for it.
#[map(name = "NETD_FLOWS6_V2")]
pub static FLOWS6: HashMap<FlowKey6, FlowEntry6> =
    HashMap::pinned(FLOWS_MAX, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

#[map(name = "NETD_PENDING6_V1")]
pub static PENDING6: LruHashMap<FlowKey6, FlowEntry6> = LruHashMap::pinned(FLOWS_MAX, 0);

#[map(name = "NETD_OWNERS6_V1")]
pub static FLOW_OWNERS6: HashMap<Addr6, u64> = HashMap::pinned(ENDPOINTS_MAX, 0);

#[map(name = "NETD_CONFIG6_V1")]
pub static NODE_CONFIG6: Array<NodeConfig6> = Array::pinned(1, 0);

/// NAT46: each IPv6 client's address of the pool, and the pool's addresses' clients.
#[map(name = "NETD_NAT46_CLIENTS_V1")]
pub static NAT46_CLIENTS: HashMap<Addr6, Nat46Mapping> = HashMap::pinned(NAT46_CLIENTS_MAX, 0);
#[map(name = "NETD_NAT46_MAPPED_V1")]
pub static NAT46_MAPPED: HashMap<u32, Addr6> = HashMap::pinned(NAT46_CLIENTS_MAX, 0);
#[map(name = "NAT46_CONFIG")]
pub static NAT46_CONFIG: Array<Nat46Config> = Array::with_max_entries(1, 0);

/// One batch of flow keys the daemon's collector found expired, for `flow_sweep` to judge
/// again and remove (not pinned: it carries nothing across runs).
#[map(name = "SWEEP_BATCH")]
pub static SWEEP: Array<FlowKey> = Array::with_max_entries(SWEEP_BATCH, 0);

/// `SWEEP` for `flow_sweep6`.
#[map(name = "SWEEP_BATCH6")]
pub static SWEEP6: Array<FlowKey6> = Array::with_max_entries(SWEEP_BATCH, 0);

/// Each CPU's room for what the IPv6 programs' stack has no room for (see `uplink6`);
/// carries nothing from one packet to the next.
#[map(name = "SCRATCH6")]
pub static SCRATCH6: PerCpuArray<Scratch6> = PerCpuArray::with_max_entries(1, 0);

/// A value of `SCRATCH6`.
pub struct Scratch6 {
    /// The packet a program creates a flow for.
    pub flow: Flow6,
    /// The flow's entry as it is made, or one read out of the table.
    pub entry: FlowEntry6,
}

/// This CPU's `SCRATCH6`, for this packet only.
#[inline(always)]
pub fn scratch6() -> Option<&'static mut Scratch6> {
    // SAFETY: a per-CPU value, used by one program run at a time (the programs run with
    // preemption off) and only until it ends.
    SCRATCH6.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

/// What `netd monitor` asks of the programs (see `monitor`); all zero, as loaded: nothing.
#[map(name = "MONITOR_CONFIG")]
pub static MONITOR_CONFIG: Array<MonitorConfig> = Array::with_max_entries(1, 0);

/// Each CPU's sampling and rate-limit state, and its events sent and lost.
#[map(name = "MONITOR_STATE")]
pub static MONITOR_STATE: PerCpuArray<MonitorState> = PerCpuArray::with_max_entries(1, 0);

/// The events, for the daemon to read.
#[map(name = "MONITOR_EVENTS")]
pub static MONITOR_EVENTS: RingBuf = RingBuf::with_byte_size(MONITOR_RING_BYTES, 0);
