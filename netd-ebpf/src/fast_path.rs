//! The fast paths: a translated packet goes straight into its container
//! (`bpf_redirect_peer` from the uplink's TC ingress) or straight out of the uplink
//! (`bpf_redirect_neigh` from a container's host-side veth), skipping the bridge and the
//! node's routing and forwarding. They act as the router they stand in for: the TTL is
//! decremented, and a packet whose TTL runs out, that the route would have to fragment,
//! or that is not headed where the fast path goes is left to the stack, which answers it
//! as before. Each outcome is counted under `Hook::FastPath`.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup, bpf_redir_neigh,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netd_common::{
    counters::{Hook, Reason},
    fast_path::{FAST_PATH, XDP_META_MAGIC, XdpMeta},
    maps::{EndpointInfo, NodeConfig},
};

use crate::{
    maps::{ENDPOINTS, NODE_CONFIG},
    parse::{IP_CSUM_OFF, IP_DST_OFF, IP_TOT_LEN_OFF, IP_TTL_OFF, Packet},
    program::PASS,
    stats::count,
};

const AF_INET: u8 = 2;
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
        if meta + core::mem::size_of::<XdpMeta>() > (*skb).data as usize {
            return None;
        }
        let meta = &*(meta as *const XdpMeta);
        (meta.magic == XDP_META_MAGIC).then_some(meta.ifindex)
    }
}

/// After translation at the uplink: deliver the packet into the container behind
/// host-side veth `ifindex`, or let the stack route it (fast path off, owner unknown).
#[inline(always)]
pub fn into_container(ctx: &TcContext, ifindex: u32) -> i32 {
    if ifindex == 0 || config().is_none() {
        return PASS;
    }
    let (reason, action) = match redirect_peer(ctx, ifindex) {
        Ok(action) => (Reason::RedirectToContainer, action),
        Err(reason) => (reason, PASS),
    };
    count(Hook::FastPath, reason, ctx.len());
    action
}

#[inline(always)]
fn redirect_peer(ctx: &TcContext, ifindex: u32) -> Result<i32, Reason> {
    // SAFETY: the context's __sk_buff is valid for the program's run.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        // Not addressed to this node at layer 2: the stack drops it, as it always did.
        return Err(Reason::StackNotForThisHost);
    }
    // SAFETY: a copy out of the map value.
    let endpoint: EndpointInfo = unsafe { ENDPOINTS.get(&ifindex) }
        .copied()
        .ok_or(Reason::NoMatch)?;
    // The endpoint must own the (translated) destination: a flow that outlived its veth
    // (an endpoint re-wired under a new ifindex) is routed by the stack instead.
    let dst: u32 = ctx.load(IP_DST_OFF).map_err(|_| Reason::Truncated)?;
    if dst != endpoint.addr {
        return Err(Reason::NoMatch);
    }
    forward_hop(ctx)?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&endpoint.mac);
    macs[6..].copy_from_slice(&endpoint.gateway_mac);
    ctx.store(0, &macs, 0)
        .map_err(|_| Reason::DropRewriteFailed)?;
    // SAFETY: a helper taking plain integers.
    Ok(unsafe { bpf_redirect_peer(ifindex, 0) } as i32)
}

/// Before translation at a container's host-side veth: whether the packet is routed out
/// of the uplink, and through which next hop. Only frames sent to the gateway are routed
/// (others are bridged to another container), and only while their TTL lasts.
#[inline(always)]
pub fn route_via_uplink(
    ctx: &TcContext,
    pkt: &Packet,
    endpoint: &EndpointInfo,
    config: &NodeConfig,
) -> Result<u32, Reason> {
    let dst_mac: [u8; 6] = ctx.load(0).map_err(|_| Reason::Truncated)?;
    if dst_mac != endpoint.gateway_mac {
        return Err(Reason::StackNotViaUplink);
    }
    ttl_left(ctx)?;
    let tot_len: u16 = ctx.load(IP_TOT_LEN_OFF).map_err(|_| Reason::Truncated)?;
    // SAFETY: all-zero is a valid value of the plain-integer struct.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = pkt.proto;
    fib.sport = pkt.src_port;
    fib.dport = pkt.dst_port;
    fib.__bindgen_anon_1.tot_len = u16::from_be(tot_len);
    // SAFETY: the context's __sk_buff is valid for the program's run.
    fib.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    fib.__bindgen_anon_3.ipv4_src = pkt.src_addr;
    fib.__bindgen_anon_4.ipv4_dst = pkt.dst_addr;
    // SAFETY: the helper writes into `fib`, whose size is passed.
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb as *mut _,
            &mut fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    } as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH
            if fib.ifindex == config.uplink_ifindex =>
        {
            // SAFETY: the lookup wrote the next hop (the gateway, or the destination).
            Ok(unsafe { fib.__bindgen_anon_4.ipv4_dst })
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(Reason::StackFragNeeded),
        _ => Err(Reason::StackNotViaUplink),
    }
}

/// After translation at a container's host-side veth: out of the uplink to `nexthop`,
/// the kernel filling in the MAC addresses from its neighbour table (resolving them
/// first if needed).
#[inline(always)]
pub fn out_of_uplink(ctx: &TcContext, nexthop: u32, uplink: u32) -> i32 {
    let (reason, action) = match forward_hop(ctx) {
        Ok(()) => {
            // SAFETY: all-zero is a valid value of the plain-integer struct.
            let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
            nh.nh_family = AF_INET as u32;
            nh.__bindgen_anon_1.ipv4_nh = nexthop;
            // SAFETY: the helper reads `nh`, whose size is passed.
            let action = unsafe {
                bpf_redirect_neigh(
                    uplink,
                    &mut nh,
                    core::mem::size_of::<bpf_redir_neigh>() as i32,
                    0,
                )
            };
            (Reason::RedirectToUplink, action as i32)
        }
        Err(reason) => (reason, PASS),
    };
    count(Hook::FastPath, reason, ctx.len());
    action
}

/// The TTL may be decremented without reaching 0.
#[inline(always)]
fn ttl_left(ctx: &TcContext) -> Result<u8, Reason> {
    let ttl: u8 = ctx.load(IP_TTL_OFF).map_err(|_| Reason::Truncated)?;
    if ttl <= 1 {
        return Err(Reason::StackTtlExpiring);
    }
    Ok(ttl)
}

/// One hop, as a router makes it: TTL minus one, the header checksum fixed.
#[inline(always)]
fn forward_hop(ctx: &TcContext) -> Result<(), Reason> {
    let ttl = ttl_left(ctx)?;
    // The checksum covers TTL and protocol as one 16-bit word.
    let word: [u8; 2] = ctx.load(IP_TTL_OFF).map_err(|_| Reason::Truncated)?;
    let new = [ttl - 1, word[1]];
    ctx.l3_csum_replace(
        IP_CSUM_OFF,
        u16::from_ne_bytes(word) as u64,
        u16::from_ne_bytes(new) as u64,
        2,
    )
    .map_err(|_| Reason::DropRewriteFailed)?;
    ctx.store(IP_TTL_OFF, &new[0], 0)
        .map_err(|_| Reason::DropRewriteFailed)
}
