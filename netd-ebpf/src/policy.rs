//! Network policy for packets from a container that no flow or published port claims:
//! networks are isolated from each other, `enable_icc=false` keeps a network's containers
//! apart, and an `--internal` network reaches nothing beyond itself. The node's own
//! addresses are always reachable (Docker's rules filter forwarding, not input).

use aya_ebpf::maps::lpm_trie::Key;
use netd_common::{
    counters::Reason,
    maps::{ENDPOINT_ICC_OFF, ENDPOINT_INTERNAL, EndpointInfo},
};

use crate::maps::{NETWORKS, NODE_ADDRS};

/// `Some(reason)` when `ep` may not send to `dst` (network order).
#[inline(always)]
pub fn refuse(ep: &EndpointInfo, dst: u32) -> Option<Reason> {
    if dst == ep.gateway || NODE_ADDRS.get_ptr(&dst).is_some() {
        return None;
    }
    match NETWORKS.get(Key::new(32, dst)) {
        Some(tag) if *tag == ep.network => {
            (ep.flags & ENDPOINT_ICC_OFF != 0).then_some(Reason::DropIccDisabled)
        }
        Some(_) => Some(Reason::DropIsolated),
        None => (ep.flags & ENDPOINT_INTERNAL != 0).then_some(Reason::DropInternal),
    }
}

/// Is `addr` (network order) on the endpoint's own network?
#[inline(always)]
pub fn same_network(ep: &EndpointInfo, addr: u32) -> bool {
    NETWORKS
        .get(Key::new(32, addr))
        .is_some_and(|tag| *tag == ep.network)
}

/// Published ports are reachable through a node address like any service of the node,
/// except where Docker's forwarding rules would drop the translated packet: from an
/// internal network to anything outside it, and with icc off to another container of the
/// same network (a container calling its own published port is fine).
#[inline(always)]
pub fn refuse_hairpin(ep: &EndpointInfo, src: u32, backend: u32) -> Option<Reason> {
    let same = same_network(ep, backend);
    if ep.flags & ENDPOINT_INTERNAL != 0 && !same {
        Some(Reason::DropInternal)
    } else if ep.flags & ENDPOINT_ICC_OFF != 0 && same && backend != src {
        Some(Reason::DropIccDisabled)
    } else {
        None
    }
}
