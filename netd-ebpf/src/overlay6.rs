//! Overlay networks for IPv6 (the IPv4 twin is `overlay`, whose tunnel this shares). A
//! container's packet to a container of another node on its overlay is sent there
//! (`to_remote`); its neighbour solicitation for such a container is answered here with
//! its gateway's MAC address (`answer_solicitation`), as `overlay::answer_arp` answers
//! ARP, so neighbour discovery never crosses nodes. On the VXLAN device's ingress, an IPv6
//! packet is delivered under the IPv4 checks (`deliver`): its VXLAN ID set up here, its
//! source a container of that overlay on the node that sent it, its destination one of
//! that overlay here; neighbour discovery and routers' messages from there are dropped.

use aya_ebpf::{
    bindings::bpf_tunnel_key,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use netd_common::{
    counters::Reason,
    maps::{Addr6, Endpoint6Info, EndpointInfo, OverlayInfo, RemoteEndpoint},
};

use crate::{
    csum::{diff, diff_from, folded},
    fast_path::redirected,
    guard6::{ICMP6_NEIGHBOR_ADVERT, ICMP6_NEIGHBOR_SOLICIT, ICMP6_REDIRECT, ICMP6_ROUTER_SOLICIT},
    maps::{ENDPOINT_VETHS6, ENDPOINTS, ENDPOINTS6, REMOTE_ENDPOINTS6},
    overlay::{into_container, overlay_of, send},
    parse6::{IP6_DST_OFF, IP6_HDR_LEN, IP6_OFF, IP6_SRC_OFF, PROTO_ICMPV6},
    policy6,
    program::{DROP, Verdict},
};

/// The fixed header's next header and hop limit.
const NEXT_HEADER_OFF: usize = IP6_OFF + 6;
/// Where an ICMPv6 message right after the fixed header starts, and a neighbour
/// solicitation's target in it.
const ICMP6_OFF: usize = IP6_OFF + IP6_HDR_LEN;
const ND_TARGET_OFF: usize = ICMP6_OFF + 8;
/// Neighbour discovery's messages must come with the hop limit no router lowered.
const ND_HOP_LIMIT: u8 = 255;
/// A neighbour advertisement with a target link-layer address option: 24 + 8 bytes.
const NA_LEN: usize = 32;
/// Solicited and Override.
const NA_FLAGS: u8 = 0x60;
const OPT_TARGET_LLADDR: u8 = 2;
const ETH_P_IPV6: u16 = crate::parse6::ETH_P_IPV6;

/// From `endpoint_ingress6`, for an IPv6 frame the endpoint may send (`guard6` passed it)
/// to `dst`: `Some` when it is this module's (a neighbour solicitation answered, a packet
/// sent to another node, or refused by policy).
#[inline(never)]
pub fn from_container(
    ctx: &TcContext,
    ep: &EndpointInfo,
    ep6: &Endpoint6Info,
    dst: &Addr6,
) -> Option<Verdict> {
    if let Some(verdict) = answer_solicitation(ctx, ep, ep6) {
        return Some(verdict);
    }
    to_remote(ctx, ep, ep6, dst)
}

/// A packet to a container of another node: sent there as it is, or refused by policy.
#[inline(always)]
fn to_remote(
    ctx: &TcContext,
    ep: &EndpointInfo,
    ep6: &Endpoint6Info,
    dst: &Addr6,
) -> Option<Verdict> {
    let remote = remote_of(dst)?;
    if let Err(refused) = policy6::judge(ep, ep6, dst) {
        return Some((refused, DROP));
    }
    Some(send(ctx, ep, &remote))
}

/// A neighbour solicitation (with no extension header: what hosts send) whose target is a
/// container of another node on the asker's overlay, from an address of its own (not
/// duplicate address detection): answered with the gateway's MAC address, the frame
/// turned into the advertisement and sent back into the container.
#[inline(always)]
fn answer_solicitation(ctx: &TcContext, ep: &EndpointInfo, ep6: &Endpoint6Info) -> Option<Verdict> {
    let next: [u8; 2] = ctx.load(NEXT_HEADER_OFF).ok()?;
    if next != [PROTO_ICMPV6, ND_HOP_LIMIT]
        || ctx.load::<u8>(ICMP6_OFF).ok()? != ICMP6_NEIGHBOR_SOLICIT
    {
        return None;
    }
    let target: Addr6 = ctx.load(ND_TARGET_OFF).ok()?;
    let asker: Addr6 = ctx.load(IP6_SRC_OFF).ok()?;
    let remote = remote_of(&target)?;
    // Another network's address stays unanswered, as on one node.
    if asker == [0; 4] || overlay_of(remote.vni).is_none_or(|o| o.tag != ep.network) {
        return None;
    }
    if let Err(refused) = policy6::judge(ep, ep6, &target) {
        return Some((refused, DROP));
    }
    if advertise(ctx, ep, &target, &asker).is_err() {
        return Some((Reason::DropRewriteFailed, DROP));
    }
    // SAFETY: the context's __sk_buff is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Back out of the veth it came in by: into the container.
    // SAFETY: a helper taking plain integers.
    Some(redirected(Reason::NeighborAnswered, unsafe {
        bpf_redirect(ifindex, 0)
    }))
}

/// Turn the frame into the neighbour advertisement for `target` to `asker`: from the
/// gateway's MAC address (which it names as the target's), the target as its source.
#[inline(never)]
fn advertise(ctx: &TcContext, ep: &EndpointInfo, target: &Addr6, asker: &Addr6) -> Result<(), i64> {
    // SAFETY: the helper resizes the packet this program runs on.
    let resized = unsafe { bpf_skb_change_tail(ctx.skb.skb, (ICMP6_OFF + NA_LEN) as u32, 0) };
    if resized != 0 {
        return Err(resized);
    }
    let mut eth = [0u8; 14];
    eth[..6].copy_from_slice(&ep.mac);
    eth[6..12].copy_from_slice(&ep.gateway_mac);
    eth[12..].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let head: [u8; 8] = [0x60, 0, 0, 0, 0, NA_LEN as u8, PROTO_ICMPV6, ND_HOP_LIMIT];
    // Source and destination, also the pseudo header's first 32 bytes.
    let mut addrs = [0u32; 8];
    addrs[..4].copy_from_slice(target);
    addrs[4..].copy_from_slice(asker);
    let mut na = [0u32; 8];
    na[0] = u32::from_ne_bytes([ICMP6_NEIGHBOR_ADVERT, 0, 0, 0]);
    na[1] = u32::from_ne_bytes([NA_FLAGS, 0, 0, 0]);
    na[2..6].copy_from_slice(target);
    let m = &ep.gateway_mac;
    na[6] = u32::from_ne_bytes([OPT_TARGET_LLADDR, 1, m[0], m[1]]);
    na[7] = u32::from_ne_bytes([m[2], m[3], m[4], m[5]]);
    // The pseudo header's rest: the upper-layer length and next header, 32-bit each.
    let mut rest = [(NA_LEN as u32).to_be(), u32::from(PROTO_ICMPV6).to_be()];
    let sum = diff(&mut [], &mut addrs)?;
    let sum = diff_from(sum as u32, &mut [], &mut rest)?;
    let check = folded(diff_from(sum as u32, &mut [], &mut na)?).to_ne_bytes();
    na[0] = u32::from_ne_bytes([ICMP6_NEIGHBOR_ADVERT, 0, check[0], check[1]]);
    ctx.store(0, &eth, 0)?;
    ctx.store(IP6_OFF, &head, 0)?;
    ctx.store(IP6_SRC_OFF, &addrs, 0)?;
    ctx.store(ICMP6_OFF, &na, 0)
}

/// An IPv6 packet from another node (`key`: its tunnel key), over `overlay`: into its
/// container, or dropped with why.
#[inline(never)]
pub fn deliver(ctx: &TcContext, key: &bpf_tunnel_key, overlay: &OverlayInfo) -> Verdict {
    let Ok(head) = ctx.load::<[u8; 8]>(IP6_OFF) else {
        return (Reason::DropMalformed, DROP);
    };
    if head[0] >> 4 != 6 {
        return (Reason::DropMalformed, DROP);
    }
    if head[6] == PROTO_ICMPV6
        && ctx
            .load::<u8>(ICMP6_OFF)
            .is_ok_and(|t| (ICMP6_ROUTER_SOLICIT..=ICMP6_REDIRECT).contains(&t))
    {
        return (Reason::DropNdAcrossNodes, DROP);
    }
    let (Ok(src), Ok(dst)) = (
        ctx.load::<Addr6>(IP6_SRC_OFF),
        ctx.load::<Addr6>(IP6_DST_OFF),
    ) else {
        return (Reason::DropMalformed, DROP);
    };
    // SAFETY: the helper filled the key; the union's IPv4 member is the one written.
    let sender = u32::to_be(unsafe { key.__bindgen_anon_1.remote_ipv4 });
    if !remote_of(&src).is_some_and(|r| r.vni == key.tunnel_id && r.node == sender) {
        return (Reason::DropForeignSource, DROP);
    }
    let Some((veth, ep)) = local_endpoint(&dst) else {
        return (Reason::DropNoSuchEndpoint, DROP);
    };
    into_container(ctx, overlay, veth, &ep)
}

#[inline(always)]
fn remote_of(addr: &Addr6) -> Option<RemoteEndpoint> {
    // SAFETY: a copy out of the map value.
    unsafe { REMOTE_ENDPOINTS6.get(addr) }.copied()
}

/// The container on this node at IPv6 address `addr`: its host-side veth and what it is.
#[inline(always)]
fn local_endpoint(addr: &Addr6) -> Option<(u32, EndpointInfo)> {
    // SAFETY: copies out of the map values.
    let veth = unsafe { ENDPOINT_VETHS6.get(addr) }.copied()?;
    // SAFETY: as above.
    let ep6 = unsafe { ENDPOINTS6.get(veth) }.copied()?;
    if ep6.addr != *addr {
        return None;
    }
    // SAFETY: as above.
    unsafe { ENDPOINTS.get(veth) }.copied().map(|ep| (veth, ep))
}
