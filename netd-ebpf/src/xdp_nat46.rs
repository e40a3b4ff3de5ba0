//! NAT46 in the uplink's XDP program (`uplink_xdp_nat46`, tail-called by `uplink_xdp6`
//! for a port published for a container with IPv4 only): what `uplink_nat46` does of an
//! IPv6 client's TCP and UDP (the client's pool address, its flow found or created, the
//! packet rewritten as IPv4, a SYN's MSS clamped), done before the kernel builds an skb,
//! with the note (`XdpMeta`) that has the IPv4 `uplink_ingress` only deliver it. The
//! frame loses 20 bytes at its front (`bpf_xdp_adjust_head`); its Ethernet header is
//! written anew, the IPv4 header from scratch as `xlat` writes it, and the TCP/UDP
//! checksum is fixed incrementally for the pseudo header's addresses and the port (the
//! length and protocol terms of both pseudo headers sum the same).
//!
//! Only a whole TCP or UDP packet with no extension header and a complete checksum (what
//! `uplink_xdp6` hands over): anything else passes on unchanged, for TC to translate or
//! drop with its reason.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use netd_common::{
    PROTO_UDP,
    checksum::replace128,
    counters::{Hook, Reason},
    flow::{DIR_INGRESS, FlowEntry6, ORIGIN_NAT46},
};

use crate::{
    conntrack,
    maps::scratch6,
    nat46,
    parse::{ETH_P_IP, ETH_TYPE_OFF, Frame, IP_OFF, L4_OFF},
    parse6::Flow6,
    stats::count,
    xdp::{L4Checksum, ifindex, leave_note, rewrite_ports, store},
    xdp6::{self, bounded, forged_source},
    xlat::{Fixed6, To4, csum_at},
};

/// How much shorter the IPv4 header is than IPv6's fixed one.
const SHRINK: i32 = 20;

/// `uplink_xdp_nat46`.
#[inline(always)]
pub fn uplink(ctx: &XdpContext) -> u32 {
    xdp6::finished(ctx, translate(ctx))
}

/// Why the packet is translated, passed on untouched, or dropped (a drop reason), as
/// `uplink_nat46` decides it. Each step a subprogram; the flow (where `uplink_xdp6` left
/// it) and its entry in this CPU's `SCRATCH6`.
#[inline(never)]
fn translate(ctx: &XdpContext) -> Reason {
    let Some(scratch) = scratch6() else {
        return Reason::NoMatch;
    };
    // The packet as `uplink_xdp6` parsed it into this CPU's `SCRATCH6` just before its
    // tail call (XDP runs to its end on one CPU: nothing else wrote it since), its
    // checksum already found complete: not parsed a second time.
    // Behind extension headers: TC's (which drops what it cannot translate).
    if !nat46::translatable(&scratch.flow) {
        return Reason::NoMatch;
    }
    let reason = match flow_entry(ctx, &scratch.flow, &mut scratch.entry) {
        Ok(reason) => reason,
        Err(reason) => return reason,
    };
    let Some(to) = nat46::to_ipv4(&scratch.entry) else {
        return Reason::DropNat46NoFlow;
    };
    if rewrite(ctx, &scratch.flow, &to).is_err() || nat46::clamped(ctx, &scratch.flow).is_err() {
        return Reason::DropRewriteFailed;
    }
    // Without the note the translated packet is still right: the stack routes it.
    if leave_note(ctx, scratch.entry.ifindex).is_err() {
        count(Hook::FastPath, Reason::StackXdpNoteFailed, 0);
    }
    reason
}

/// The flow of the packet, into `entry`, with the reason it is translated: an
/// established NAT46 flow (counted, as `uplink_ingress6` counts it) while its client
/// still holds its pool address, or a new one (`nat46::opened`). `Err(NoMatch)`: TC's
/// business (a flow of another kind, a packet that starts none).
#[inline(never)]
fn flow_entry(ctx: &XdpContext, flow: &Flow6, entry: &mut FlowEntry6) -> Result<Reason, Reason> {
    let key = conntrack::key_of(flow, DIR_INGRESS);
    if let Some(found) = established(&key, flow, entry) {
        return found;
    }
    if !flow.starts_flow {
        return Err(Reason::NoMatch);
    }
    if forged_source(flow) {
        return Err(Reason::DropSpoofedSource);
    }
    nat46::opened(flow, ifindex(ctx), Hook::UplinkXdp, &key, entry)?;
    Ok(Reason::Nat46New)
}

/// The entry of the NAT46 flow the packet belongs to, into `entry`, and what becomes of
/// the packet (`nat46::still_held`); `None` when no flow has it.
#[inline(never)]
fn established(
    key: &netd_common::flow::FlowKey6,
    flow: &Flow6,
    entry: &mut FlowEntry6,
) -> Option<Result<Reason, Reason>> {
    let found = conntrack::lookup(key, flow)?;
    *entry = found;
    // A flow of the port's former container, which had IPv6: TC translates it.
    if found.origin != ORIGIN_NAT46 {
        return Some(Err(Reason::NoMatch));
    }
    Some(nat46::still_held(entry, &flow.src))
}

/// The frame rewritten as IPv4 to `to`: 20 bytes shorter, its Ethernet header written
/// anew in front of the IPv4 header `xlat` makes, the TCP/UDP checksum and destination
/// port fixed.
#[inline(never)]
fn rewrite(ctx: &XdpContext, flow: &Flow6, to: &To4) -> Result<(), ()> {
    let proto = flow.proto;
    let macs: [u8; 12] = ctx.load(0)?;
    let fixed = Fixed6::of(ctx)?;
    let header = fixed.to_ipv4(proto, to).map_err(|_| ())?;
    let l4_csum_off = bounded(flow.l4_csum_off)?;
    let csum: u16 = ctx.load(l4_csum_off)?;
    let udp = proto == PROTO_UDP;
    // A UDP checksum of 0 stays as it is, as TC keeps it.
    let summed = !(udp && csum == 0);
    let csum = if summed {
        // The pseudo header's addresses: IPv6's out, IPv4's in.
        let csum = replace128(csum, &flow.src, &[0, 0, 0, to.src]);
        replace128(csum, &flow.dst, &[0, 0, 0, to.dst])
    } else {
        csum
    };
    // SAFETY: the helper moves the frame's start within the frame, or fails.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, SHRINK) } != 0 {
        return Err(());
    }
    store(ctx, 0, macs)?;
    store(ctx, ETH_TYPE_OFF, ETH_P_IP.to_be())?;
    store(ctx, IP_OFF, header)?;
    let ports = [
        (L4_OFF, flow.src_port, flow.src_port),
        (L4_OFF + 2, flow.dst_port, to.dst_port),
    ];
    let l4 = L4Checksum {
        off: L4_OFF + csum_at(proto),
        value: csum,
        summed,
        udp,
    };
    rewrite_ports(ctx, ports, l4)
}
