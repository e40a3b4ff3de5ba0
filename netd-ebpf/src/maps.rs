//! The maps, pinned by name so that a restarted daemon finds the same state. Their names
//! and value types come from netd-common; keep the two in step.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use netd_common::{
    counters::{Counter, HOOK_COUNT, REASON_COUNT},
    flow::{FlowEntry, FlowKey},
    maps::{
        ENDPOINTS_MAX, EndpointInfo, FLOWS_MAX, MASQ_SUBNETS_MAX, NETWORKS_MAX, NODE_ADDRS_MAX,
        NetworkTag, NodeConfig, PUBLISHED_PORTS_MAX, SWEEP_BATCH,
    },
    published::{Backend, PortKey},
    sockets::{SOCKET_ORIGINS_MAX, SocketOrigin, SocketPeer},
};

#[map(name = "NETD_PORTS_V1")]
pub static PUBLISHED_PORTS: HashMap<PortKey, Backend> = HashMap::pinned(PUBLISHED_PORTS_MAX, 0);

/// A plain hash (not LRU): the kernel never evicts half of a flow; the daemon's garbage
/// collector removes both halves together, and a full table is counted.
#[map(name = "NETD_FLOWS_V1")]
pub static FLOWS: HashMap<FlowKey, FlowEntry> = HashMap::pinned(FLOWS_MAX, 0);

#[map(name = "NETD_CONFIG_V2")]
pub static NODE_CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// The node's own addresses: where a wildcard published port answers.
#[map(name = "NETD_ADDRS_V1")]
pub static NODE_ADDRS: HashMap<u32, u8> = HashMap::pinned(NODE_ADDRS_MAX, 0);

/// Container subnets whose egress is masqueraded.
#[map(name = "NETD_MASQ_V1")]
pub static MASQ_SUBNETS: LpmTrie<u32, u8> =
    LpmTrie::pinned(MASQ_SUBNETS_MAX, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

#[map(name = "NETD_COUNTERS_V3")]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(HOOK_COUNT * REASON_COUNT, 0);

/// Who is behind each container's host-side veth, by its ifindex.
#[map(name = "NETD_ENDPOINTS_V3")]
pub static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::pinned(ENDPOINTS_MAX, 0);

/// Every network's subnet, to its tag: which network a destination belongs to.
#[map(name = "NETD_NETWORKS_V1")]
pub static NETWORKS: LpmTrie<u32, NetworkTag> =
    LpmTrie::pinned(NETWORKS_MAX, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// For host-local sockets that were pointed at a container: the address they called. An
/// LRU: losing an entry only changes the peer address a process is shown.
#[map(name = "NETD_SOCKETS_V1")]
pub static SOCKET_ORIGINS: LruHashMap<SocketPeer, SocketOrigin> =
    LruHashMap::pinned(SOCKET_ORIGINS_MAX, 0);

/// One batch of flow keys the daemon's collector found expired, for `flow_sweep` to judge
/// again and remove (not pinned: it carries nothing across runs).
#[map(name = "SWEEP_BATCH")]
pub static SWEEP: Array<FlowKey> = Array::with_max_entries(SWEEP_BATCH, 0);
