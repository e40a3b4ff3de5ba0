//! Overlay networks across nodes. A container's frame to a container of another node
//! is encapsulated at its host-side veth: the tunnel key (the network's VXLAN ID, the
//! other node's underlay address) set for the node's VXLAN device, which it is redirected
//! into; the kernel adds the outer headers, with a source port from the inner flow. The
//! container's ARP requests for such containers are answered here, with its gateway's MAC
//! address: nothing is flooded to other nodes. On the VXLAN device's ingress a frame is
//! delivered into its container only if all of it agrees: its VXLAN ID is an overlay set
//! up here, its destination is a container of that overlay on this node, and its source
//! is a container of that overlay on the node that sent it.

use aya_ebpf::{
    bindings::{BPF_F_DONT_FRAGMENT, BPF_F_ZERO_CSUM_TX, bpf_tunnel_key},
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use netd_common::{
    counters::{Hook, Reason},
    maps::{ENDPOINT_ICC_OFF, EndpointInfo, OverlayInfo, RemoteEndpoint},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    fast_path::{fits, redirected},
    maps::{ENDPOINT_VETHS, ENDPOINTS, OVERLAYS, REMOTE_ENDPOINTS},
    parse::{ETH_P_IP, ETH_TYPE_OFF, IP_DST_OFF, IP_OFF},
    parse6::ETH_P_IPV6,
    policy,
    program::{DROP, PASS, Verdict},
    stats::{count, count_received},
};

/// The outer header's TTL.
const TUNNEL_TTL: u8 = 64;
/// Where the ARP message starts in the frame.
const ARP_OFF: usize = EthHdr::LEN;
const ARP_LEN: usize = 28;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// TC ingress of the node's VXLAN device: frames from the other nodes.
pub fn ingress(ctx: &TcContext) -> i32 {
    let (reason, verdict) = deliver(ctx);
    count(Hook::Overlay, reason, ctx.len());
    crate::log::verdict(ctx, Hook::Overlay, reason);
    crate::monitor::verdict(
        ctx,
        Hook::Overlay,
        reason,
        crate::program::ifindex(ctx),
        ctx.len(),
    );
    verdict
}

/// `ingress` with the tunnel key a VXLAN device gives a received frame, taken from the
/// context's control block: the VXLAN ID in `cb[0]`, the sending node's underlay address
/// (network order) in `cb[1]`. Only for BPF_PROG_TEST_RUN (its program is never
/// attached): the receiving side's checks, tested on crafted frames.
pub fn ingress_keyed(ctx: &TcContext) -> i32 {
    let cb = ctx.cb();
    // SAFETY: all-zero is a valid value of the plain-integer struct.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = cb[0];
    // A received frame's key has the outer source as its remote address, which the
    // helper fills from the local one set here.
    key.__bindgen_anon_3.local_ipv4 = u32::from_be(cb[1]);
    let size = core::mem::size_of::<bpf_tunnel_key>() as u32;
    // SAFETY: the helper reads `size` bytes of `key`.
    if unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, size, 0) } != 0 {
        count(Hook::Overlay, Reason::DropTunnelKey, ctx.len());
        return DROP;
    }
    ingress(ctx)
}

/// At a container's host-side veth, for an IPv4 frame from it: `Some` when its
/// destination is a container of another node (sent there, or refused by policy).
#[inline(never)]
pub fn to_remote(ctx: &TcContext, ep: &EndpointInfo) -> Option<Verdict> {
    let dst: u32 = ctx.load(IP_DST_OFF).ok()?;
    // SAFETY: a copy out of the map value.
    let remote = unsafe { REMOTE_ENDPOINTS.get(dst) }.copied()?;
    if let Some(refused) = policy::refuse(ep, dst) {
        return Some((refused, DROP));
    }
    Some(send(ctx, ep, &remote))
}

/// Send a container's frame to the node of `remote`, a container of its overlay there.
#[inline(always)]
pub fn send(ctx: &TcContext, ep: &EndpointInfo, remote: &RemoteEndpoint) -> Verdict {
    let Some(overlay) = overlay_of(remote.vni) else {
        return (Reason::DropUnknownVni, DROP);
    };
    if overlay.tag != ep.network {
        return (Reason::DropIsolated, DROP);
    }
    // Too big for the overlay: the stack routes it to the bridge, whose MTU is the
    // overlay's, and answers "fragmentation needed" as a router would.
    if fits(ctx, overlay.vxlan_ifindex).is_err() {
        return (Reason::StackOverlayFragNeeded, PASS);
    }
    // SAFETY: all-zero is a valid value of the plain-integer struct.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = remote.vni;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(remote.node);
    key.tunnel_ttl = TUNNEL_TTL;
    // The key up to (not including) the local address: the kernel picks the source
    // address by its route to the other node.
    let size = core::mem::offset_of!(bpf_tunnel_key, __bindgen_anon_3) as u32;
    let flags = (BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT) as u64;
    // SAFETY: the helper reads `size` bytes of `key`.
    if unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, size, flags) } != 0 {
        return (Reason::DropTunnelKey, DROP);
    }
    // SAFETY: a helper taking plain integers.
    redirected(Reason::OverlaySent, unsafe {
        bpf_redirect(overlay.vxlan_ifindex, 0)
    })
}

/// An ARP request from the container about `target`: answered here, with the gateway's
/// MAC address, when `target` is a container of another node on its network. `None`:
/// not this module's (the bridge carries it, as any ARP message).
#[inline(never)]
pub fn answer_arp(ctx: &TcContext, ep: &EndpointInfo, target: u32) -> Option<Verdict> {
    // SAFETY: a copy out of the map value.
    let remote = unsafe { REMOTE_ENDPOINTS.get(target) }.copied()?;
    // Only for a container of the asker's own overlay: another network's address stays
    // unanswered, as on one node, so a connection to it fails at once instead of hanging.
    if overlay_of(remote.vni).is_none_or(|o| o.tag != ep.network) {
        return None;
    }
    let request: [u8; ARP_LEN] = ctx.load(ARP_OFF).ok()?;
    if u16::from_be_bytes([request[6], request[7]]) != ARP_REQUEST {
        return None;
    }
    if let Some(refused) = policy::refuse(ep, target) {
        return Some((refused, DROP));
    }
    let mut frame = [0u8; EthHdr::LEN + ARP_LEN];
    // Ethernet: to the asker, from the gateway.
    frame[..6].copy_from_slice(&request[8..14]);
    frame[6..12].copy_from_slice(&ep.gateway_mac);
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // The same hardware and protocol types and sizes; a reply: the target is at the
    // gateway's MAC address, told to the asker.
    let arp = &mut frame[EthHdr::LEN..];
    arp[..6].copy_from_slice(&request[..6]);
    arp[6..8].copy_from_slice(&ARP_REPLY.to_be_bytes());
    arp[8..14].copy_from_slice(&ep.gateway_mac);
    arp[14..18].copy_from_slice(&target.to_ne_bytes());
    arp[18..28].copy_from_slice(&request[8..18]);
    if ctx.store(0, &frame, 0).is_err() {
        return Some((Reason::DropRewriteFailed, DROP));
    }
    // SAFETY: the context's __sk_buff is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Back out of the veth it came in by: into the container.
    // SAFETY: a helper taking plain integers.
    Some(redirected(Reason::ArpAnswered, unsafe {
        bpf_redirect(ifindex, 0)
    }))
}

/// A frame from another node: into its container, or dropped with why.
#[inline(always)]
fn deliver(ctx: &TcContext) -> Verdict {
    // SAFETY: all-zero is a valid value of the plain-integer struct.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    let size = core::mem::size_of::<bpf_tunnel_key>() as u32;
    // SAFETY: the helper writes at most `size` bytes into `key`.
    if unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, size, 0) } != 0 {
        return (Reason::DropTunnelKey, DROP);
    }
    let Some(overlay) = overlay_of(key.tunnel_id) else {
        return (Reason::DropUnknownVni, DROP);
    };
    // Only IP crosses: ARP (and IPv6's neighbour discovery) is answered on each node for
    // the others' containers.
    match ctx.load::<[u8; 2]>(ETH_TYPE_OFF) {
        Ok(t) if u16::from_be_bytes(t) == ETH_P_IP => {}
        Ok(t) if u16::from_be_bytes(t) == ETH_P_IPV6 => {
            return crate::overlay6::deliver(ctx, &key, &overlay);
        }
        Ok(_) => return (Reason::DropEthertype, DROP),
        Err(_) => return (Reason::DropMalformed, DROP),
    }
    let Ok(ip) = ctx.load::<Ipv4Hdr>(IP_OFF) else {
        return (Reason::DropMalformed, DROP);
    };
    if ip.vihl >> 4 != 4 || ip.vihl & 0x0f < 5 {
        return (Reason::DropMalformed, DROP);
    }
    // SAFETY: the helper filled the key; the union's IPv4 member is the one written.
    let sender = u32::to_be(unsafe { key.__bindgen_anon_1.remote_ipv4 });
    if !sent_by(u32::from_ne_bytes(ip.src_addr), key.tunnel_id, sender) {
        return (Reason::DropForeignSource, DROP);
    }
    let dst = u32::from_ne_bytes(ip.dst_addr);
    let Some((veth, ep)) = local_endpoint(dst) else {
        return (Reason::DropNoSuchEndpoint, DROP);
    };
    into_container(ctx, &overlay, veth, &ep)
}

/// A frame from another node for the container `ep` behind host-side veth `veth`: into
/// it, if it is a container of `overlay` that takes frames from its neighbours.
#[inline(always)]
pub fn into_container(
    ctx: &TcContext,
    overlay: &OverlayInfo,
    veth: u32,
    ep: &EndpointInfo,
) -> Verdict {
    if ep.network != overlay.tag {
        return (Reason::DropWrongVni, DROP);
    }
    if ep.flags & ENDPOINT_ICC_OFF != 0 {
        return (Reason::DropIccDisabled, DROP);
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&ep.mac);
    macs[6..].copy_from_slice(&ep.gateway_mac);
    if ctx.store(0, &macs, 0).is_err() {
        return (Reason::DropRewriteFailed, DROP);
    }
    // SAFETY: a helper taking plain integers.
    let delivered = redirected(Reason::OverlayDelivered, unsafe {
        bpf_redirect_peer(veth, 0)
    });
    if delivered.0 == Reason::OverlayDelivered {
        // Past the host-side veth, whose egress program does not see it.
        count_received(veth, ctx.len());
    }
    delivered
}

#[inline(always)]
pub fn overlay_of(vni: u32) -> Option<OverlayInfo> {
    // SAFETY: a copy out of the map value.
    unsafe { OVERLAYS.get(vni) }.copied()
}

/// Whether `src` (network order) is a container of overlay `vni` on the node at underlay
/// address `node` (network order).
#[inline(always)]
fn sent_by(src: u32, vni: u32, node: u32) -> bool {
    // SAFETY: a copy out of the map value.
    unsafe { REMOTE_ENDPOINTS.get(src) }.is_some_and(|r| r.vni == vni && r.node == node)
}

/// The container on this node at `addr`: its host-side veth and what it is.
#[inline(always)]
fn local_endpoint(addr: u32) -> Option<(u32, EndpointInfo)> {
    // SAFETY: a copy out of the map value.
    let veth = unsafe { ENDPOINT_VETHS.get(addr) }.copied()?;
    // SAFETY: as above.
    let ep = unsafe { ENDPOINTS.get(veth) }.copied()?;
    (ep.addr == addr).then_some((veth, ep))
}
