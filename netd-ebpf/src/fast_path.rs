//! The fast paths: a translated packet goes straight into its container
//! (`bpf_redirect_peer` from the uplink's TC ingress) or straight out of the uplink
//! (`bpf_redirect_neigh` from a container's host-side veth), IPv4 and IPv6, skipping the
//! bridge and the node's routing and forwarding. They act as the router they stand in for: the TTL is
//! decremented, and a packet whose TTL runs out, that does not fit the next link's MTU,
//! whose source is a martian, or that is not headed where the fast path goes is left to
//! the stack, which handles it as before. Each outcome is counted under `Hook::FastPath`.
//! What they skip besides: netfilter's FORWARD hook, rp_filter and IPsec policy (as
//! Cilium's host routing does).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_REDIRECT, bpf_fib_lookup,
        bpf_redir_neigh,
    },
    helpers::{bpf_check_mtu, bpf_fib_lookup as fib_lookup, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netd_common::{
    PROTO_ICMP,
    counters::{Hook, Reason},
    fast_path::{FAST_PATH, XDP_META_MAGIC, XdpMeta},
    maps::{Addr6, EndpointInfo, NodeConfig},
};
use network_types::ip::Ipv4Hdr;

use crate::{
    maps::{ENDPOINTS, ENDPOINTS6, NODE_CONFIG},
    parse::{IP_CSUM_OFF, IP_OFF, IP_TTL_OFF, Packet},
    parse6::{Flow6, IP6_DST_OFF, IP6_OFF, IP6_SRC_OFF, PROTO_ICMPV6},
    program::{DROP, PASS, Verdict},
    stats::{count, count_received},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const PACKET_HOST: u32 = 0;

/// The node's config when the fast paths are on.
#[inline(always)]
pub fn config() -> Option<NodeConfig> {
    let config = NODE_CONFIG.get(0)?;
    (config.flags & FAST_PATH != 0).then_some(*config)
}

/// The note the uplink's XDP program left on a packet it translated: the host-side veth
/// of the packet's container (0 when unknown).
#[inline(always)]
pub fn translated_in_xdp(ctx: &TcContext) -> Option<u32> {
    // SAFETY: the context's __sk_buff is valid for the program's run; data_meta..data is
    // the metadata area, read only after the bounds check the verifier requires.
    unsafe {
        let skb = ctx.skb.skb;
        let meta = (*skb).data_meta as usize;
        if meta + size_of::<XdpMeta>() > (*skb).data as usize {
            return None;
        }
        let meta = &*(meta as *const XdpMeta);
        (meta.magic == XDP_META_MAGIC).then_some(meta.ifindex)
    }
}

/// After translation at the uplink: deliver the IPv4 packet into the container behind
/// host-side veth `ifindex`, or let the stack route it (fast path off, owner unknown).
#[inline(always)]
pub fn into_container(ctx: &TcContext, ifindex: u32) -> i32 {
    into_container_as::<Hop>(ctx, ifindex)
}

/// The same for an IPv6 packet (DNAT66 at the uplink). A subprogram: the IPv6 programs'
/// frames are near the limit, and this one runs after the translation's have returned.
#[inline(never)]
pub fn into_container6(ctx: &TcContext, ifindex: u32) -> i32 {
    into_container_as::<Hop6>(ctx, ifindex)
}

#[inline(always)]
fn into_container_as<H: Forward>(ctx: &TcContext, ifindex: u32) -> i32 {
    if ifindex == 0 || config().is_none() {
        return PASS;
    }
    let (reason, action) = match redirect_peer::<H>(ctx, ifindex) {
        Ok(action) => redirected(Reason::RedirectToContainer, action),
        Err(reason) => (reason, PASS),
    };
    count(Hook::FastPath, reason, ctx.len());
    if reason == Reason::RedirectToContainer {
        // Past the host-side veth, whose egress program does not see it.
        count_received(ifindex, ctx.len());
    }
    action
}

#[inline(always)]
fn redirect_peer<H: Forward>(ctx: &TcContext, ifindex: u32) -> Result<i64, Reason> {
    // SAFETY: the context's __sk_buff is valid for the program's run.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        // Not addressed to this node at layer 2: the stack drops it, as it always did.
        return Err(Reason::StackNotForThisHost);
    }
    let ip = H::of(ctx)?;
    if ip.martian_source() {
        return Err(Reason::StackMartianSource);
    }
    // SAFETY: a copy out of the map value.
    let endpoint: EndpointInfo = unsafe { ENDPOINTS.get(ifindex) }
        .copied()
        .ok_or(Reason::NoMatch)?;
    // The endpoint must own the (translated) destination: a flow that outlived its veth
    // (an endpoint re-wired under a new ifindex) is routed by the stack instead.
    if !ip.to_endpoint(&endpoint, ifindex) {
        return Err(Reason::NoMatch);
    }
    fits(ctx, ifindex)?;
    ip.ttl_left()?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&endpoint.mac);
    macs[6..].copy_from_slice(&endpoint.gateway_mac);
    ctx.store(0, &macs, 0).map_err(|_| Reason::Truncated)?;
    ip.forward(ctx)?;
    // SAFETY: a helper taking plain integers.
    Ok(unsafe { bpf_redirect_peer(ifindex, 0) })
}

/// A frame the container sent to its gateway, i.e. for the node to route (any other is
/// bridged to another container, which may route it on: not the fast path's business).
#[inline(always)]
pub fn sent_to_gateway(ctx: &TcContext, endpoint: &EndpointInfo) -> bool {
    ctx.load::<[u8; 6]>(0)
        .is_ok_and(|dst_mac| dst_mac == endpoint.gateway_mac)
}

/// A packet the fast path sends out of the uplink: its next hop, and its hop fields
/// (translation does not change them).
pub struct Route<H> {
    nexthop: bpf_redir_neigh,
    hop: H,
}

/// What the route lookup of a packet reads of it, per family.
pub trait Routed {
    /// The packet's IP header fields a hop reads and changes.
    type Hop: Forward;
    /// `fib`'s family, addresses and upper-layer fields, for this packet and its header.
    fn ask(&self, hop: &Self::Hop, fib: &mut bpf_fib_lookup);
    /// The next hop the lookup wrote into `fib`, for `bpf_redirect_neigh`.
    fn nexthop(fib: &bpf_fib_lookup) -> bpf_redir_neigh;
}

impl Routed for Packet {
    type Hop = Hop;
    #[inline(always)]
    fn ask(&self, hop: &Hop, fib: &mut bpf_fib_lookup) {
        fib.family = AF_INET;
        fib.l4_protocol = self.proto;
        if self.proto != PROTO_ICMP {
            fib.sport = self.src_port;
            fib.dport = self.dst_port;
        }
        fib.__bindgen_anon_2.tos = hop.tos;
        fib.__bindgen_anon_3.ipv4_src = self.src_addr;
        fib.__bindgen_anon_4.ipv4_dst = self.dst_addr;
    }
    #[inline(always)]
    fn nexthop(fib: &bpf_fib_lookup) -> bpf_redir_neigh {
        // SAFETY: all-zero is a valid value of the plain-integer struct.
        let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
        nh.nh_family = AF_INET as u32;
        // SAFETY: the lookup wrote the next hop (the gateway, or the destination itself).
        nh.__bindgen_anon_1.ipv4_nh = unsafe { fib.__bindgen_anon_4.ipv4_dst };
        nh
    }
}

impl Routed for Flow6 {
    type Hop = Hop6;
    #[inline(always)]
    fn ask(&self, hop: &Hop6, fib: &mut bpf_fib_lookup) {
        fib.family = AF_INET6;
        fib.l4_protocol = self.proto;
        if self.proto != PROTO_ICMPV6 {
            fib.sport = self.src_port;
            fib.dport = self.dst_port;
        }
        fib.__bindgen_anon_2.flowinfo = hop.flowinfo;
        fib.__bindgen_anon_3.ipv6_src = self.src;
        fib.__bindgen_anon_4.ipv6_dst = self.dst;
    }
    #[inline(always)]
    fn nexthop(fib: &bpf_fib_lookup) -> bpf_redir_neigh {
        // SAFETY: as for IPv4.
        let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
        nh.nh_family = AF_INET6 as u32;
        // SAFETY: as for IPv4.
        nh.__bindgen_anon_1.ipv6_nh = unsafe { fib.__bindgen_anon_4.ipv6_dst };
        nh
    }
}

/// At a container's host-side veth: a packet of an established flow routed out of the
/// uplink is translated (`translate`: SNAT, or reverse DNAT of a reply) and sent out of
/// it directly; `(NoMatch, PASS)` where the fast path does not take it (off, a frame to
/// another container, another route, a new flow), which the stack then routes and the
/// uplink's egress program translates.
#[inline(always)]
pub fn leave_by_uplink<P: Routed>(
    ctx: &TcContext,
    pkt: &P,
    endpoint: &EndpointInfo,
    translate: impl FnOnce(&TcContext, &P) -> Verdict,
) -> Verdict {
    let Some(config) = config() else {
        return (Reason::NoMatch, PASS);
    };
    if !sent_to_gateway(ctx, endpoint) {
        return (Reason::NoMatch, PASS);
    }
    let uplink = config.uplink_ifindex;
    let route = match route_via_uplink(ctx, pkt, endpoint, uplink) {
        Ok(route) => route,
        Err(reason) => {
            count(Hook::FastPath, reason, ctx.len());
            return (Reason::NoMatch, PASS);
        }
    };
    match translate(ctx, pkt) {
        (Reason::NoMatch, verdict) => (Reason::NoMatch, verdict),
        (reason, PASS) => (reason, out_of_uplink(ctx, &route, uplink)),
        dropped => dropped,
    }
}

/// Before translation at a container's host-side veth: whether the packet is routed out
/// of the uplink (looked up as the stack would, from the container's bridge), fits its
/// MTU and has TTL (hop limit) to spare; where it goes if so.
/// A subprogram: the route lookup's stack is not held while the packet is translated.
#[inline(never)]
fn route_via_uplink<P: Routed>(
    ctx: &TcContext,
    pkt: &P,
    endpoint: &EndpointInfo,
    uplink: u32,
) -> Result<Route<P::Hop>, Reason> {
    let hop = P::Hop::of(ctx)?;
    hop.ttl_left()?;
    // SAFETY: all-zero is a valid value of the plain-integer struct.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    // tot_len 0: the MTU is checked below, in a way that knows GSO packets.
    pkt.ask(&hop, &mut fib);
    fib.ifindex = endpoint.bridge_ifindex;
    // SAFETY: the helper writes into `fib`, whose size is passed.
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb as *mut _,
            &mut fib,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    } as u32;
    let routed = rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH;
    if !routed || fib.ifindex != uplink {
        return Err(Reason::StackNotViaUplink);
    }
    fits(ctx, uplink)?;
    Ok(Route {
        nexthop: P::nexthop(&fib),
        hop,
    })
}

/// After translation at a container's host-side veth: out of the uplink to the route's
/// next hop, the kernel filling in the MAC addresses from its neighbour table (resolving
/// them first if needed).
#[inline(always)]
fn out_of_uplink<H: Forward>(ctx: &TcContext, route: &Route<H>, uplink: u32) -> i32 {
    let (reason, action) = match route.hop.forward(ctx) {
        Ok(()) => {
            let mut nh = route.nexthop;
            // SAFETY: the helper reads `nh`, whose size is passed.
            let action = unsafe {
                bpf_redirect_neigh(uplink, &mut nh, size_of::<bpf_redir_neigh>() as i32, 0)
            };
            redirected(Reason::RedirectToUplink, action)
        }
        Err(reason) => (reason, PASS),
    };
    count(Hook::FastPath, reason, ctx.len());
    action
}

/// A redirect helper's verdict: TC_ACT_REDIRECT, or TC_ACT_SHOT if it refused.
#[inline(always)]
pub fn redirected(reason: Reason, action: i64) -> (Reason, i32) {
    if action == TC_ACT_REDIRECT as i64 {
        (reason, action as i32)
    } else {
        (Reason::DropRedirectFailed, DROP)
    }
}

/// The packet fits the MTU of `ifindex` (a GSO packet: each of its segments).
#[inline(always)]
pub fn fits(ctx: &TcContext, ifindex: u32) -> Result<(), Reason> {
    let mut mtu_len = 0u32;
    // SAFETY: the helper writes the MTU into `mtu_len`.
    match unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, ifindex, &mut mtu_len, 0, 0) } {
        0 => Ok(()),
        _ => Err(Reason::StackFragNeeded),
    }
}

/// What forwarding a packet one hop reads and changes in its IP header, per family.
pub trait Forward: Sized {
    /// The header's fields, loaded once.
    fn of(ctx: &TcContext) -> Result<Self, Reason>;
    /// A source a router drops: the stack judges it, as before.
    fn martian_source(&self) -> bool;
    /// Whether the destination is the address of the endpoint behind veth `ifindex`.
    fn to_endpoint(&self, endpoint: &EndpointInfo, ifindex: u32) -> bool;
    /// The TTL (hop limit) may be decremented without reaching 0.
    fn ttl_left(&self) -> Result<(), Reason>;
    /// One hop, as a router makes it.
    fn forward(&self, ctx: &TcContext) -> Result<(), Reason>;
}

/// Whether a hop's TTL or hop limit may be decremented without reaching 0.
#[inline(always)]
fn ttl_left(ttl: u8) -> Result<(), Reason> {
    if ttl <= 1 {
        return Err(Reason::StackTtlExpiring);
    }
    Ok(())
}

impl Forward for Hop {
    #[inline(always)]
    fn of(ctx: &TcContext) -> Result<Self, Reason> {
        Hop::of(ctx)
    }
    /// 0/8, 127/8, multicast, 240/4 and broadcast.
    #[inline(always)]
    fn martian_source(&self) -> bool {
        let first = self.src.to_ne_bytes()[0];
        first == 0 || first == 127 || first >= 224
    }
    #[inline(always)]
    fn to_endpoint(&self, endpoint: &EndpointInfo, _: u32) -> bool {
        self.dst == endpoint.addr
    }
    #[inline(always)]
    fn ttl_left(&self) -> Result<(), Reason> {
        Hop::ttl_left(self)
    }
    #[inline(always)]
    fn forward(&self, ctx: &TcContext) -> Result<(), Reason> {
        Hop::forward(self, ctx)
    }
}

/// The traffic class and flow label in the IPv6 header's first word (host order).
const FLOWINFO_MASK: u32 = 0x0fff_ffff;

/// Offset of the IPv6 header's hop limit.
const IP6_HOP_LIMIT_OFF: usize = IP6_OFF + 7;

/// The IPv6 fields a hop reads: the addresses, traffic class and flow label (for the
/// route lookup) and the hop limit (no header checksum).
pub struct Hop6 {
    src: Addr6,
    dst: Addr6,
    flowinfo: u32,
    hop_limit: u8,
}

impl Forward for Hop6 {
    #[inline(always)]
    fn of(ctx: &TcContext) -> Result<Self, Reason> {
        Ok(Hop6 {
            src: ctx.load(IP6_SRC_OFF).map_err(|_| Reason::Truncated)?,
            dst: ctx.load(IP6_DST_OFF).map_err(|_| Reason::Truncated)?,
            flowinfo: ctx.load::<u32>(IP6_OFF).map_err(|_| Reason::Truncated)?
                & FLOWINFO_MASK.to_be(),
            hop_limit: ctx.load(IP6_HOP_LIMIT_OFF).map_err(|_| Reason::Truncated)?,
        })
    }
    /// Unspecified (`::`), loopback (`::1`), multicast (`ff00::/8`) and link-local
    /// (`fe80::/10`, which a router never forwards).
    #[inline(always)]
    fn martian_source(&self) -> bool {
        let first = self.src[0].to_ne_bytes();
        let unspecified_or_loopback =
            self.src[..3] == [0; 3] && (self.src[3] == 0 || self.src[3] == 1u32.to_be());
        unspecified_or_loopback || first[0] == 0xff || (first[0] == 0xfe && first[1] & 0xc0 == 0x80)
    }
    #[inline(always)]
    fn to_endpoint(&self, _: &EndpointInfo, ifindex: u32) -> bool {
        // SAFETY: a read of the map value, compared at once.
        unsafe { ENDPOINTS6.get(ifindex) }.is_some_and(|e| e.addr == self.dst)
    }
    #[inline(always)]
    fn ttl_left(&self) -> Result<(), Reason> {
        ttl_left(self.hop_limit)
    }
    #[inline(always)]
    fn forward(&self, ctx: &TcContext) -> Result<(), Reason> {
        self.ttl_left()?;
        ctx.store(IP6_HOP_LIMIT_OFF, &(self.hop_limit - 1), 0)
            .map_err(|_| Reason::Truncated)
    }
}

/// The IPv4 fields a hop reads, loaded once: addresses, TOS, TTL and protocol.
#[derive(Clone, Copy)]
pub struct Hop {
    src: u32,
    dst: u32,
    tos: u8,
    ttl: u8,
    proto: u8,
}

impl Hop {
    #[inline(always)]
    fn of(ctx: &TcContext) -> Result<Self, Reason> {
        let ip: Ipv4Hdr = ctx.load(IP_OFF).map_err(|_| Reason::Truncated)?;
        Ok(Hop {
            src: u32::from_ne_bytes(ip.src_addr),
            dst: u32::from_ne_bytes(ip.dst_addr),
            tos: ip.tos,
            ttl: ip.ttl,
            proto: ip.proto,
        })
    }

    /// The TTL may be decremented without reaching 0.
    #[inline(always)]
    fn ttl_left(&self) -> Result<(), Reason> {
        ttl_left(self.ttl)
    }

    /// One hop, as a router makes it: TTL minus one, the header checksum fixed.
    #[inline(always)]
    fn forward(&self, ctx: &TcContext) -> Result<(), Reason> {
        self.ttl_left()?;
        // The checksum covers TTL and protocol as one 16-bit word.
        let old = [self.ttl, self.proto];
        let new = [self.ttl - 1, self.proto];
        ctx.l3_csum_replace(
            IP_CSUM_OFF,
            u16::from_ne_bytes(old) as u64,
            u16::from_ne_bytes(new) as u64,
            2,
        )
        .map_err(|_| Reason::Truncated)?;
        ctx.store(IP_TTL_OFF, &new[0], 0)
            .map_err(|_| Reason::Truncated)
    }
}
