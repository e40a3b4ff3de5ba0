//! Network policy for IPv6 from a container (the IPv4 twin is `policy`): networks are
//! isolated from each other, `enable_icc=false` keeps a network's containers apart, an
//! `--internal` network reaches nothing beyond itself, and the node's own addresses are
//! always reachable. Beyond the node's networks, a network's IPv6 is masqueraded (NAT66,
//! the default), routed (`gateway_mode_ipv6=routed`), or, without masquerade, sent as it
//! is with its flows tracked by the uplink; an endpoint of no known network sends nothing
//! there (`drop_ipv6_not_routed`).
//!
//! Link-local destinations are neighbours on the bridge (or the bridge itself), so icc
//! off refuses every one but the gateway's. Multicast stays on the network's own bridge,
//! whose ports are isolated from each other with icc off; there, a container may only
//! send what it needs to reach its router: router solicitations, MLD reports, and
//! neighbour solicitations for the gateway (or for itself, detecting duplicates).

use aya_ebpf::maps::lpm_trie::Key;
use netd_common::{
    counters::Reason,
    maps::{
        Addr6, ENDPOINT_ICC_OFF, ENDPOINT_INTERNAL, Endpoint6Info, EndpointInfo, NETWORK_ROUTED,
        NetworkInfo,
    },
};

use crate::{
    guard6::{
        Frame6, ICMP6_MLD_DONE, ICMP6_MLD_REPORT, ICMP6_MLD2_REPORT, ICMP6_NEIGHBOR_SOLICIT,
        ICMP6_ROUTER_SOLICIT,
    },
    maps::{NETWORKS6, NODE_ADDRS6},
};

/// The network `addr` belongs to, if any.
#[inline(always)]
pub fn network_of(addr: Addr6) -> Option<NetworkInfo> {
    NETWORKS6.get(Key::new(128, addr)).copied()
}

/// Whether `ep` may send to `dst`: `Ok` with the reason it passes under, or `Err` with
/// the reason it is dropped.
#[inline(always)]
pub fn judge(ep: &EndpointInfo, ep6: &Endpoint6Info, dst: &Addr6) -> Result<Reason, Reason> {
    let icc = |allowed: Reason| {
        if ep.flags & ENDPOINT_ICC_OFF != 0 {
            Err(Reason::DropIccDisabled)
        } else {
            Ok(allowed)
        }
    };
    if *dst == ep6.gateway || *dst == ep6.gateway_link_local || is_node_addr(dst) {
        return Ok(Reason::Ipv6Policed);
    }
    if is_multicast(dst) {
        // What icc off allows of it is `refuse_frame`'s to say.
        return Ok(Reason::Ipv6Policed);
    }
    if is_link_local(dst) {
        return icc(Reason::Ipv6Policed);
    }
    match network_of(*dst) {
        Some(net) if net.tag == ep.network => icc(Reason::Ipv6Policed),
        Some(_) => Err(Reason::DropIsolated),
        None if ep.flags & ENDPOINT_INTERNAL != 0 => Err(Reason::DropInternal),
        None => beyond_the_node(ep6),
    }
}

/// What the endpoint sends beyond the node's networks: masqueraded by the uplink's
/// `uplink_egress6` (NAT66, the default), or, where its network's IPv6 is routed by the
/// node (`gateway_mode_ipv6=routed`), going out as it is; from a network without
/// masquerade (`enable_ip_masquerade=false`), going out as it is too, its flows tracked
/// there so that their replies, and nothing else, come back in (as for IPv4). An
/// endpoint of no network has no way out.
#[inline(always)]
fn beyond_the_node(ep6: &Endpoint6Info) -> Result<Reason, Reason> {
    match network_of(ep6.addr) {
        Some(net) if net.flags & NETWORK_ROUTED != 0 => Ok(Reason::Ipv6Routed),
        Some(_) => Ok(Reason::Ipv6Policed),
        None => Err(Reason::DropIpv6NotRouted),
    }
}

/// With icc off, a frame may only be for the gateway: unicast to its MAC, or one of the
/// multicast messages a host needs to find and use its router, to a multicast MAC.
#[inline(always)]
pub fn refuse_frame(ep: &EndpointInfo, ep6: &Endpoint6Info, frame: &Frame6) -> Option<Reason> {
    if ep.flags & ENDPOINT_ICC_OFF == 0 || frame.dst_mac == ep.gateway_mac {
        return None;
    }
    // The group bit: to a multicast MAC, never a neighbour's own.
    let allowed = is_multicast(&frame.pkt.dst)
        && frame.dst_mac[0] & 1 != 0
        && match frame.icmp_type {
            ICMP6_ROUTER_SOLICIT | ICMP6_MLD_REPORT | ICMP6_MLD_DONE | ICMP6_MLD2_REPORT => true,
            ICMP6_NEIGHBOR_SOLICIT => {
                let t = &frame.target;
                *t == ep6.gateway
                    || *t == ep6.gateway_link_local
                    || *t == ep6.addr
                    || *t == ep6.link_local
            }
            _ => false,
        };
    (!allowed).then_some(Reason::DropIccDisabled)
}

#[inline(always)]
fn is_node_addr(addr: &Addr6) -> bool {
    NODE_ADDRS6.get_ptr(addr).is_some()
}

/// ff00::/8.
#[inline(always)]
pub fn is_multicast(addr: &Addr6) -> bool {
    addr[0].to_ne_bytes()[0] == 0xff
}

/// fe80::/10.
#[inline(always)]
fn is_link_local(addr: &Addr6) -> bool {
    let b = addr[0].to_ne_bytes();
    b[0] == 0xfe && b[1] & 0xc0 == 0x80
}
