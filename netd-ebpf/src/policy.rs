//! Network policy for packets from a container that no flow or published port claims:
//! networks are isolated from each other, `enable_icc=false` keeps a network's containers
//! apart, and an `--internal` network reaches nothing beyond itself. The node's own
//! addresses are always reachable (Docker's rules filter forwarding, not input). Every
//! IPv4 packet is judged by its own destination (an ICMP error by where it goes, not by
//! what it quotes).
//!
//! icc off means no frame between two containers of the network, whatever it is
//! addressed to: its containers may only send to the gateway's MAC address, broadcast
//! only ARP asking for the gateway, and no IPv4 broadcast or multicast (their bridge ports
//! are isolated from each other as well, so nothing a container sends is flooded to its
//! neighbours).

use aya_ebpf::maps::lpm_trie::Key;
use netd_common::{
    counters::Reason,
    maps::{ENDPOINT_ICC_OFF, ENDPOINT_INTERNAL, EndpointInfo, NetworkInfo},
};

use crate::{
    guard::Frame,
    maps::{NETWORKS, NODE_ADDRS},
    nat::Nat,
};

/// The network `addr` (network order) belongs to, if any.
#[inline(always)]
pub fn network_of(addr: u32) -> Option<NetworkInfo> {
    NETWORKS.get(Key::new(32, addr)).copied()
}

/// `Some(reason)` when `ep` may not send to `dst` (network order).
#[inline(always)]
pub fn refuse(ep: &EndpointInfo, dst: u32) -> Option<Reason> {
    let icc_off = ep.flags & ENDPOINT_ICC_OFF != 0;
    if dst == ep.gateway || NODE_ADDRS.get_ptr(dst).is_some() {
        return None;
    }
    // Broadcast and multicast stay on the network's own bridge: its neighbours are the
    // only others who hear them.
    if is_broadcast_or_multicast(dst) {
        return icc_off.then_some(Reason::DropIccDisabled);
    }
    match network_of(dst) {
        Some(net) if net.tag == ep.network => icc_off.then_some(Reason::DropIccDisabled),
        Some(_) => Some(Reason::DropIsolated),
        None => (ep.flags & ENDPOINT_INTERNAL != 0).then_some(Reason::DropInternal),
    }
}

/// With icc off, a frame may only be for the gateway: unicast to its MAC address, or an
/// ARP broadcast asking for it; an ARP message about anyone else is refused as well.
#[inline(always)]
pub fn refuse_frame(ep: &EndpointInfo, frame: &Frame) -> Option<Reason> {
    if ep.flags & ENDPOINT_ICC_OFF == 0 {
        return None;
    }
    let to_gateway = frame.dst_mac == ep.gateway_mac;
    let broadcast = frame.dst_mac == [0xff; 6];
    let allowed = match frame.arp_target {
        Some(target) => target == ep.gateway && (to_gateway || broadcast),
        None => to_gateway,
    };
    (!allowed).then_some(Reason::DropIccDisabled)
}

/// 255.255.255.255 or 224.0.0.0/4, network order.
#[inline(always)]
fn is_broadcast_or_multicast(addr: u32) -> bool {
    addr == u32::MAX || addr.to_ne_bytes()[0] & 0xf0 == 224
}

/// Is `addr` (network order, either family) on the endpoint's own network?
#[inline(always)]
pub fn same_network<A: Nat>(ep: &EndpointInfo, addr: A) -> bool {
    A::network_of(addr).is_some_and(|net| net.tag == ep.network)
}

/// Published ports are reachable through a node address like any service of the node,
/// except where Docker's forwarding rules would drop the translated packet: from an
/// internal network to anything outside it, and with icc off to another container of the
/// same network (a container calling its own published port is fine).
#[inline(always)]
pub fn refuse_hairpin<A: Nat>(ep: &EndpointInfo, src: A, backend: A) -> Option<Reason> {
    let same = same_network(ep, backend);
    if ep.flags & ENDPOINT_INTERNAL != 0 && !same {
        Some(Reason::DropInternal)
    } else if ep.flags & ENDPOINT_ICC_OFF != 0 && same && backend != src {
        Some(Reason::DropIccDisabled)
    } else {
        None
    }
}
