//! XDP on the uplink: the uplink's ingress translation (`uplink::ingress_flow`: replies to
//! masqueraded flows, published-port connections, new and established) done before the
//! kernel builds an skb, for TCP and UDP. Checksums are fixed with netd-common's
//! incremental `checksum` module (XDP has no checksum helpers); frames from the network
//! carry complete checksums (a packet whose checksum is still partial is left to TC). The
//! translated packet goes on (XDP_PASS) with a note
//! (`XdpMeta`) naming its container, so that the TC program only delivers it. ICMP,
//! fragments and whatever XDP does not own pass unchanged, for TC to handle as ever
//! (what XDP does not translate but must not let in, TC drops).
//! This program only sees traffic arriving from the network: container traffic, whose
//! checksums are partial, is never translated here. IPv6 goes on to `uplink_xdp6`
//! (`xdp6`).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_xdp_adjust_meta,
    programs::XdpContext,
};
use netd_common::{
    PROTO_ICMP, PROTO_UDP,
    checksum::{pseudo_header, replace16, replace32, udp_wire},
    counters::{Hook, Reason},
    fast_path::{XDP_META_MAGIC, XdpMeta},
    flow::FlowEntry,
};

use crate::{
    monitor,
    parse::{
        ETH_TYPE_OFF, Fragment, Frame, IP_CSUM_OFF, IP_DST_OFF, IP_OFF, IP_SRC_OFF, IP_TOT_LEN_OFF,
        IPV4_HDR_LEN, Kind, Packet, parse_ipv4_l4,
    },
    parse6::ETH_P_IPV6,
    stats::count,
    uplink,
};

pub fn uplink(ctx: &XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    let (reason, action) = match parse_ipv4_l4(ctx) {
        Ok(pkt) if pkt.fragment != Fragment::Whole => (Reason::Fragment, XDP_PASS),
        Ok(pkt) if pkt.kind == Kind::Flow && pkt.proto != PROTO_ICMP => translate(ctx, &pkt),
        Ok(_) => (Reason::OtherProto, XDP_PASS),
        Err(reason) => (reason, XDP_PASS),
    };
    count(Hook::UplinkXdp, reason, len);
    crate::log::verdict(ctx, Hook::UplinkXdp, reason);
    monitor::verdict(ctx, Hook::UplinkXdp, reason, ifindex(ctx), len);
    action
}

/// Whether the frame is IPv6 (for `uplink_xdp6`).
#[inline(always)]
pub fn is_ipv6(ctx: &XdpContext) -> bool {
    ctx.load::<u16>(ETH_TYPE_OFF) == Ok(ETH_P_IPV6.to_be())
}

/// The interface the frame arrived on.
#[inline(always)]
pub fn ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: the context's xdp_md is valid for the program's run.
    unsafe { (*ctx.ctx).ingress_ifindex }
}

#[inline(always)]
fn translate(ctx: &XdpContext, pkt: &Packet) -> (Reason, u32) {
    let Ok(l4_csum) = ctx.load::<u16>(pkt.l4_csum_off as usize) else {
        return (Reason::Truncated, XDP_PASS);
    };
    match looks_partial(ctx, pkt, l4_csum) {
        Ok(false) => {}
        Ok(true) => return (Reason::ChecksumPartial, XDP_PASS),
        Err(()) => return (Reason::Truncated, XDP_PASS),
    }
    let (entry, reason) = match uplink::ingress_flow(pkt) {
        Ok(found) => found,
        Err(Reason::NoMatch) => return (Reason::NoMatch, XDP_PASS),
        Err(reason) => return (reason, XDP_DROP),
    };
    if rewrite(ctx, pkt, l4_csum, &entry).is_err() {
        return (Reason::DropRewriteFailed, XDP_DROP);
    }
    // Without the note TC finds the translated packet by its flow (`xdp_handoff`).
    if leave_note(ctx, entry.ifindex).is_err() {
        count(Hook::FastPath, Reason::StackXdpNoteFailed, 0);
    }
    (reason, XDP_PASS)
}

/// Whether the packet's L4 checksum field holds just the pseudo-header sum: a
/// CHECKSUM_PARTIAL packet, which a local socket sent through a veth (a NIC delivers
/// complete checksums), for a device to complete later. The arithmetic here is for
/// complete checksums, so such packets are left to TC, whose helpers know the
/// difference. A complete checksum equal to that sum by chance (1 in 65,536) goes to TC
/// as well, which is only slower.
#[inline(always)]
fn looks_partial(ctx: &XdpContext, pkt: &Packet, csum: u16) -> Result<bool, ()> {
    if pkt.proto == PROTO_UDP && csum == 0 {
        return Ok(false);
    }
    let tot_len = u16::from_be(ctx.load(IP_TOT_LEN_OFF)?);
    // A length the frame does not hold (0 for BIG TCP): not a packet to reason about.
    if tot_len < IPV4_HDR_LEN || IP_OFF + tot_len as usize > ctx.data_end() - ctx.data() {
        return Err(());
    }
    let l4_len = tot_len - IPV4_HDR_LEN;
    Ok(csum == pseudo_header(pkt.src_addr, pkt.dst_addr, pkt.proto, l4_len))
}

/// Write the entry's tuple into the frame, and fix the IPv4 and L4 checksums (`l4_csum`
/// as loaded) for it. A UDP checksum of 0 ("none") stays 0.
#[inline(always)]
fn rewrite(ctx: &XdpContext, pkt: &Packet, mut l4_csum: u16, to: &FlowEntry) -> Result<(), ()> {
    let mut ip_csum: u16 = ctx.load(IP_CSUM_OFF)?;
    let udp = pkt.proto == PROTO_UDP;
    let l4_summed = !(udp && l4_csum == 0);
    let addrs = [
        (IP_SRC_OFF, pkt.src_addr, to.src_addr),
        (IP_DST_OFF, pkt.dst_addr, to.dst_addr),
    ];
    for (off, old, new) in addrs {
        if old != new {
            ip_csum = replace32(ip_csum, old, new);
            if l4_summed {
                l4_csum = replace32(l4_csum, old, new);
            }
            store(ctx, off, new)?;
        }
    }
    let ports = [
        (pkt.src_port_off as usize, pkt.src_port, to.src_port),
        (pkt.dst_port_off as usize, pkt.dst_port, to.dst_port),
    ];
    store(ctx, IP_CSUM_OFF, ip_csum)?;
    let l4 = L4Checksum {
        off: pkt.l4_csum_off as usize,
        value: l4_csum,
        summed: l4_summed,
        udp,
    };
    rewrite_ports(ctx, ports, l4)
}

/// A packet's TCP or UDP checksum as its rewrite goes.
pub struct L4Checksum {
    /// Where it is in the frame.
    pub off: usize,
    /// Its value so far (updated for the addresses already rewritten).
    pub value: u16,
    /// It covers the packet: not a UDP "none" (0), which stays 0.
    pub summed: bool,
    pub udp: bool,
}

/// Write the ports (`(offset, old, new)` each), then the L4 checksum `l4` fixed for them.
#[inline(always)]
pub fn rewrite_ports(
    ctx: &XdpContext,
    ports: [(usize, u16, u16); 2],
    mut l4: L4Checksum,
) -> Result<(), ()> {
    for (off, old, new) in ports {
        if old != new {
            if l4.summed {
                l4.value = replace16(l4.value, old, new);
            }
            store(ctx, off, new)?;
        }
    }
    if l4.udp && l4.summed {
        l4.value = udp_wire(l4.value);
    }
    store(ctx, l4.off, l4.value)
}

#[inline(always)]
pub fn store<T>(ctx: &XdpContext, off: usize, value: T) -> Result<(), ()> {
    let at = ctx.data() + off;
    if at + size_of::<T>() > ctx.data_end() {
        return Err(());
    }
    // SAFETY: bounds-checked against data_end just above.
    unsafe { (at as *mut T).write_unaligned(value) };
    Ok(())
}

/// Set by the loader (`override_global`): 1 where the kernel lets XDP programs call
/// `bpf_xdp_adjust_meta`, 0 where it does not. Read-only, so the verifier prunes the call
/// (which it would otherwise refuse, failing the whole program) where it is 0.
#[unsafe(no_mangle)]
static XDP_METADATA: u8 = 0;

/// Whether XDP leaves notes (the kernel lets it write frame metadata).
#[inline(always)]
pub fn notes_left() -> bool {
    // SAFETY: a read of a static; volatile, so that it is read from the map the loader
    // set, not folded into the default at compile time.
    unsafe { core::ptr::read_volatile(&raw const XDP_METADATA) != 0 }
}

/// The note for the uplink's TC program, in the frame's metadata area; where the kernel
/// has no metadata area for XDP, none: TC recognises the packet by its flow instead
/// (`xdp_handoff`), as when the driver keeps no metadata.
#[inline(always)]
pub fn leave_note(ctx: &XdpContext, ifindex: u32) -> Result<(), ()> {
    if !notes_left() {
        return Ok(());
    }
    let size = size_of::<XdpMeta>();
    // SAFETY: the helper moves data_meta within the frame's headroom, or fails.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(size as i32)) } != 0 {
        return Err(());
    }
    let at = ctx.metadata();
    if at + size > ctx.metadata_end() {
        return Err(());
    }
    let note = XdpMeta {
        magic: XDP_META_MAGIC,
        ifindex,
    };
    // SAFETY: bounds-checked against the end of the metadata area just above.
    unsafe { (at as *mut XdpMeta).write_unaligned(note) };
    Ok(())
}
