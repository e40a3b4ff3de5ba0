//! XDP on the uplink for IPv6 (`uplink_xdp6`, tail-called by `uplink_xdp` through
//! `XDP_CALLS`): what `uplink_ingress6` translates of TCP and UDP from the network —
//! replies of masqueraded flows (NAT66), connections to ports published on the node's
//! IPv6 addresses (DNAT66, the client's address kept), new and established — done before
//! the kernel builds an skb, with the note (`XdpMeta`) that has TC only deliver it, as
//! `xdp` does for IPv4. IPv6 has no header checksum; the TCP/UDP checksum is fixed
//! incrementally for the 16-byte addresses and the ports (netd-common's `checksum`).
//!
//! A published port whose container has IPv4 only (NAT46) goes on to `uplink_xdp_nat46`
//! (`xdp_nat46`), looked at before any flow, so that no NAT46 flow is counted twice.
//!
//! What it does not translate passes on unchanged, for `uplink_ingress6` to handle as
//! ever, drops included: ICMPv6, fragments, a chain of extension headers it cannot walk,
//! a checksum still partial, and whatever no flow or published port claims.
//! A new connection to a published port from a source of the node's own networks is
//! dropped here, as TC drops it.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use netd_common::{
    PROTO_UDP,
    checksum::{pseudo_header6, replace128},
    counters::{Hook, Reason},
    flow::{DIR_INGRESS, FlowEntry6, ORIGIN_SNAT},
    maps::{Addr6, XDP_CALL_NAT46, XDP_CALL_UPLINK6},
    published::Backend6,
};

use crate::{
    conntrack,
    maps::{XDP_CALLS, scratch6},
    monitor,
    nat::{self, Nat},
    nat46,
    parse::{Fragment, Frame},
    parse6::{
        Flow6, IP6_DST_OFF, IP6_SRC_OFF, MAX_L4_OFF, PROTO_ICMPV6, Packet6, flow_of, parse_frame,
    },
    policy6::network_of,
    stats::count,
    uplink,
    xdp::{L4Checksum, ifindex, leave_note, rewrite_ports, store},
};

/// From `uplink_xdp`: hand an IPv6 frame to `uplink_xdp6`; if that fails (a daemon gone
/// left the array empty), the frame goes on to TC, which translates it.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext) -> u32 {
    // SAFETY: a tail call replaces this program's run with the callee's; on return
    // nothing happened.
    unsafe { XDP_CALLS.tail_call(ctx, XDP_CALL_UPLINK6) };
    XDP_PASS
}

/// `uplink_xdp6`. The tail call to `uplink_xdp_nat46` from here, the entry point: the
/// kernel refuses one from a subprogram.
#[inline(always)]
pub fn uplink(ctx: &XdpContext) -> u32 {
    let reason = match translate(ctx) {
        FOR_NAT46 => {
            // SAFETY: as in `hand_over`.
            unsafe { XDP_CALLS.tail_call(ctx, XDP_CALL_NAT46) };
            // An empty slot: TC translates it.
            Reason::NoMatch
        }
        reason => reason,
    };
    finished(ctx, reason)
}

/// `translate`'s answer for a packet to a port published for a container with IPv4 only
/// (never counted: `uplink_xdp_nat46` counts what it does with it).
const FOR_NAT46: Reason = Reason::Nat46;

/// Count, log and report what became of the packet; its action. Beside `translate`, not
/// under it: the entry point's frame stays empty, and the deepest chain (a new flow
/// created) fits the 512 bytes.
#[inline(never)]
pub fn finished(ctx: &XdpContext, reason: Reason) -> u32 {
    let (len, _) = ctx.extent();
    let len = len as u32;
    count(Hook::UplinkXdp, reason, len);
    crate::log::verdict(ctx, Hook::UplinkXdp, reason);
    monitor::verdict6(ctx, Hook::UplinkXdp, reason, ifindex(ctx), len);
    if reason.is_drop() { XDP_DROP } else { XDP_PASS }
}

/// Why the packet is translated, passed on untouched, or dropped (a drop reason). Each
/// step a subprogram of its own (the packet, the lookups and the flow to create are never
/// on the stack at once); the flow and its entry in this CPU's `SCRATCH6`. A reason
/// alone, as the verifier refuses the stack address the compiler leaves in r0 when a
/// pair is returned through the caller's stack.
#[inline(never)]
fn translate(ctx: &XdpContext) -> Reason {
    let Some(scratch) = scratch6() else {
        return Reason::NoMatch;
    };
    if let Err(reason) = parsed(ctx, &mut scratch.flow) {
        return reason;
    }
    let reason = match ingress_flow(&scratch.flow, &mut scratch.entry) {
        Ok(reason) => reason,
        Err(reason) => return reason,
    };
    if rewrite(ctx, &scratch.flow, &scratch.entry).is_err() {
        return Reason::DropRewriteFailed;
    }
    // Without the note the translated packet is still right: the stack routes it.
    if leave_note(ctx, scratch.entry.ifindex).is_err() {
        count(Hook::FastPath, Reason::StackXdpNoteFailed, 0);
    }
    reason
}

/// The packet's flow facts, into `flow`, if XDP may translate it: whole (no fragment),
/// TCP or UDP, its checksum complete; else why it goes on to TC untouched (a packet
/// that cannot be parsed included: TC judges it).
#[inline(never)]
fn parsed(ctx: &XdpContext, flow: &mut Flow6) -> Result<(), Reason> {
    let pkt = parse_frame(ctx).map_err(|_| Reason::NoMatch)?;
    if pkt.fragment != Fragment::Whole {
        return Err(Reason::Fragment);
    }
    if pkt.proto == PROTO_ICMPV6 {
        return Err(Reason::OtherProto);
    }
    *flow = flow_of(ctx, &pkt).map_err(|_| Reason::OtherProto)?;
    match looks_partial(ctx, &pkt, flow) {
        Ok(false) => Ok(()),
        Ok(true) => Err(Reason::ChecksumPartial),
        Err(()) => Err(Reason::Truncated),
    }
}

/// The flow's entry for a packet from the network (into `entry`), with the reason it is
/// translated: a reply of a masqueraded flow, an established one, or a new connection
/// to a published port (its flow created). `Err(NoMatch)`: TC's business;
/// `Err(FOR_NAT46)`: `uplink_xdp_nat46`'s.
#[inline(never)]
fn ingress_flow(flow: &Flow6, entry: &mut FlowEntry6) -> Result<Reason, Reason> {
    let Some(backend) = nat::published(flow.dst, flow.dst_port, flow.proto) else {
        // No published port: a masqueraded flow's reply, or TC's.
        return established(flow, entry).ok_or(Reason::NoMatch);
    };
    if nat46::as_ipv4(&backend.addr).is_some() {
        return Err(FOR_NAT46);
    }
    if let Some(reason) = established(flow, entry) {
        return Ok(reason);
    }
    if !flow.starts_flow {
        return Err(Reason::NoMatch);
    }
    if forged_source(flow) {
        return Err(Reason::DropSpoofedSource);
    }
    opened(flow, &backend, entry)?;
    Ok(Reason::DnatNew)
}

/// Whether a new connection from the network comes from a source of the node's own (a
/// container's, the node's): IPv6 has no rp_filter (see `uplink6::decide_new_in`).
#[inline(always)]
pub fn forged_source(flow: &Flow6) -> bool {
    network_of(flow.src).is_some() || Addr6::is_node_addr(flow.src)
}

/// The entry of the flow the packet belongs to, into `entry`, and the reason it is
/// translated.
#[inline(never)]
fn established(flow: &Flow6, entry: &mut FlowEntry6) -> Option<Reason> {
    let found = conntrack::lookup(&conntrack::key_of(flow, DIR_INGRESS), flow)?;
    *entry = found;
    Some(if found.origin == ORIGIN_SNAT {
        Reason::SnatReply
    } else {
        Reason::Established
    })
}

/// A new connection to `backend`, a published port: its flow created, its first half's
/// entry in `entry`.
#[inline(never)]
fn opened(flow: &Flow6, backend: &Backend6, entry: &mut FlowEntry6) -> Result<(), Reason> {
    uplink::dnat_new_flow(&conntrack::key_of(flow, DIR_INGRESS), flow, backend, entry)
}

/// Whether the TCP or UDP checksum holds just the pseudo-header sum (see
/// `xdp::looks_partial`).
#[inline(always)]
fn looks_partial(ctx: &XdpContext, pkt: &Packet6, flow: &Flow6) -> Result<bool, ()> {
    let csum: u16 = ctx.load(bounded(flow.l4_csum_off)?)?;
    if flow.proto == PROTO_UDP && csum == 0 {
        return Ok(false);
    }
    let l4_len = u16::try_from(pkt.end - pkt.l4_off).map_err(|_| ())?;
    Ok(csum == pseudo_header6(&flow.src, &flow.dst, flow.proto, l4_len))
}

/// An offset into the upper-layer header the parser found, bounded for the verifier: read
/// back out of `SCRATCH6` it has none, and a packet pointer moved by up to 64 KiB is
/// never deemed checked against the packet's end.
#[inline(always)]
pub fn bounded(off: u16) -> Result<usize, ()> {
    const FURTHEST: usize = MAX_L4_OFF + 20;
    let off = off as usize;
    if off > FURTHEST {
        return Err(());
    }
    Ok(off)
}

/// Write the entry's addresses and ports into the frame, the TCP/UDP checksum fixed.
#[inline(never)]
fn rewrite(ctx: &XdpContext, flow: &Flow6, to: &FlowEntry6) -> Result<(), ()> {
    let off = bounded(flow.l4_csum_off)?;
    let mut csum: u16 = ctx.load(off)?;
    let udp = flow.proto == PROTO_UDP;
    // A UDP checksum of 0 (which IPv6 receivers drop) stays as it is, as TC keeps it.
    let summed = !(udp && csum == 0);
    let addrs = [
        (IP6_SRC_OFF, &flow.src, &to.src_addr),
        (IP6_DST_OFF, &flow.dst, &to.dst_addr),
    ];
    for (at, old, new) in addrs {
        if old != new {
            if summed {
                csum = replace128(csum, old, new);
            }
            store(ctx, at, *new)?;
        }
    }
    let ports = [
        (bounded(flow.src_port_off)?, flow.src_port, to.src_port),
        (bounded(flow.dst_port_off)?, flow.dst_port, to.dst_port),
    ];
    let l4 = L4Checksum {
        off,
        value: csum,
        summed,
        udp,
    };
    rewrite_ports(ctx, ports, l4)
}
