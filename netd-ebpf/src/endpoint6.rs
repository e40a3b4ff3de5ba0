//! IPv6 from a container (tail-called by `endpoint_ingress` on its host-side veth): the
//! frame checked (`guard6`), packets of hairpin flows translated and delivered as their
//! flow says, then policy on the destination (`policy6`); what passes goes to the bridge
//! (its neighbours) or the node, as Docker's bridge would let it, or with the fast path
//! on, an established flow's straight out of the uplink. A container calling a
//! port published on a node's IPv6 address (hairpin, as for IPv4 in `endpoint`) goes on
//! to `endpoint_ingress6_new`, which creates its flow with a stack of its own.

use aya_ebpf::programs::TcContext;
use netd_common::{
    counters::Reason,
    flow::{DIR_FROM_ENDPOINT, FlowEntry6},
    maps::{
        Addr6, CALL_ENDPOINT_INGRESS6, CALL_ENDPOINT_INGRESS6_NEW, Endpoint6Info, EndpointInfo,
    },
};

use crate::{
    conntrack::{self, Half, NewFlow, Tuple},
    endpoint, fast_path, guard6, icmp6,
    maps::{CALLS, ENDPOINTS, ENDPOINTS6, scratch6},
    nat, overlay6,
    parse6::{Flow6, IP6_DST_OFF, IP6_SRC_OFF, PROTO_ICMPV6},
    policy6,
    program::{DROP, PASS, Verdict, apply, ifindex},
    uplink6::{self, flow_packet, leads_to_a_container},
};

/// From `endpoint_ingress`: hand an IPv6 frame to `endpoint_ingress6`.
#[inline(always)]
pub fn hand_over(ctx: &TcContext) -> i32 {
    // SAFETY: as in `uplink6::hand_over`.
    unsafe { CALLS.tail_call(ctx, CALL_ENDPOINT_INGRESS6) };
    endpoint::finish(ctx, (Reason::DropIpv6DispatchFailed, DROP))
}

/// What `endpoint_ingress6` decided about a frame.
enum Decided {
    Verdict(Verdict),
    /// The first packet of a connection to a published port: for `endpoint_ingress6_new`.
    Hairpin,
    /// An ICMPv6 error the endpoint may send (its frame admitted): translated if it is
    /// about a hairpin flow, from the entry point, where its chain of calls has room;
    /// else policy decides (`policed`).
    IcmpError,
}

/// The verdict code of a packet with flow facts policy lets through (never returned to
/// the kernel): with the fast path on, an established flow's is translated and sent out of the uplink
/// (`leave_by_uplink`, from the entry point as well); else it goes on to the bridge or
/// the node. A code rather than a variant of `Decided`: the verifier refuses what the
/// compiler makes of a variant carrying a reason.
const PASSED: i32 = i32::MIN + 1;

pub fn ingress(ctx: &TcContext) -> i32 {
    match judge(ctx) {
        Decided::Verdict((reason, PASSED)) => finished(ctx, leave_by_uplink(ctx, reason)),
        Decided::Verdict(verdict) => finished(ctx, verdict),
        Decided::IcmpError => icmp_error_finished(ctx),
        Decided::Hairpin => {
            // SAFETY: as in `hand_over`; from the entry point (the kernel refuses a tail
            // call from a subprogram of a program without BTF).
            unsafe { CALLS.tail_call(ctx, CALL_ENDPOINT_INGRESS6_NEW) };
            finished(ctx, (Reason::DropIpv6DispatchFailed, DROP))
        }
    }
}

/// `endpoint::finish6` in a frame of its own, beside the decision's: the entry point's
/// frame stays nearly empty.
#[inline(never)]
fn finished(ctx: &TcContext, verdict: Verdict) -> i32 {
    endpoint::finish6(ctx, verdict)
}

/// A subprogram: the endpoint and the frame are on its stack, not on the entry point's,
/// which `finish` adds the monitor's to.
#[inline(never)]
fn judge(ctx: &TcContext) -> Decided {
    let ifindex = ifindex(ctx);
    // SAFETY: references into the map values, used before the program ends.
    match unsafe { (ENDPOINTS.get(ifindex), ENDPOINTS6.get(ifindex)) } {
        (Some(ep), Some(ep6)) => decide(ctx, ep, ep6),
        // Its network has no IPv6 (the container's IPv6 is off, or it turned it on).
        (Some(_), None) => Decided::Verdict((Reason::DropIpv6NotEnabled, DROP)),
        (None, _) => Decided::Verdict((Reason::DropUnknownEndpoint, DROP)),
    }
}

#[inline(always)]
fn decide(ctx: &TcContext, ep: &EndpointInfo, ep6: &Endpoint6Info) -> Decided {
    let dst = match admit(ctx, ep, ep6) {
        Ok(dst) => dst,
        Err(reason) => return Decided::Verdict((reason, DROP)),
    };
    // A container of another node on its overlay: sent there as it is, never translated.
    if let Some(verdict) = overlay6::from_container(ctx, ep, ep6, &dst) {
        return Decided::Verdict(verdict);
    }
    if is_icmp6_error(ctx) {
        return Decided::IcmpError;
    }
    let seen = seen(ctx);
    if let Seen::Flow(verdict) = seen {
        return Decided::Verdict(verdict);
    }
    match policy6::judge(ep, ep6, &dst) {
        Err(reason) => Decided::Verdict((reason, DROP)),
        Ok(_) if matches!(seen, Seen::ToPublished) => Decided::Hairpin,
        Ok(reason) if matches!(seen, Seen::Other) => Decided::Verdict((reason, PASSED)),
        Ok(reason) => Decided::Verdict((reason, PASS)),
    }
}

/// What the endpoint may send at all (`guard6`) and what icc off allows on the link
/// (`policy6::refuse_frame`); the frame's destination.
#[inline(never)]
fn admit(ctx: &TcContext, ep: &EndpointInfo, ep6: &Endpoint6Info) -> Result<Addr6, Reason> {
    let frame = guard6::check_frame(ctx, ep, ep6)?;
    if let Some(reason) = policy6::refuse_frame(ep, ep6, &frame) {
        return Err(reason);
    }
    Ok(frame.pkt.dst)
}

/// An ICMPv6 error (types 1-127) straight after the fixed header, where `icmp6` takes
/// errors from (`error_quote`).
#[inline(always)]
fn is_icmp6_error(ctx: &TcContext) -> bool {
    const NEXT_HEADER_OFF: usize = IP6_SRC_OFF - 2;
    const ICMP6_TYPE_OFF: usize = IP6_SRC_OFF + 32;
    ctx.load::<u8>(NEXT_HEADER_OFF) == Ok(PROTO_ICMPV6)
        && ctx
            .load::<u8>(ICMP6_TYPE_OFF)
            .is_ok_and(|t| (1..128).contains(&t))
}

/// What the connection table makes of a packet the endpoint sends.
enum Seen {
    /// A packet of a hairpin flow (either way), translated and on its way.
    Flow(Verdict),
    /// The first packet of a connection to a published port.
    ToPublished,
    /// Another flow's packet, its facts in this CPU's `SCRATCH6` (for the fast path,
    /// `leave_by_uplink`): policy decides.
    Other,
    /// A packet with no flow facts (another protocol, a fragment whose first was not
    /// seen): policy decides.
    Unparsed,
}

/// The packet parsed into this CPU's `SCRATCH6` (off this frame, and kept for
/// `leave_by_uplink`, which would otherwise parse it again), then looked up.
#[inline(never)]
fn seen(ctx: &TcContext) -> Seen {
    let Some(scratch) = scratch6() else {
        return Seen::Unparsed;
    };
    if flow_packet(ctx, &mut scratch.flow).is_err() {
        return Seen::Unparsed;
    }
    let flow = &scratch.flow;
    if let Some(verdict) = established(ctx, flow) {
        return Seen::Flow(verdict);
    }
    if flow.starts_flow && leads_to_a_container(flow) {
        Seen::ToPublished
    } else {
        Seen::Other
    }
}

/// A packet of a flow this veth translates: policy was applied when the flow began.
#[inline(never)]
fn established(ctx: &TcContext, flow: &Flow6) -> Option<Verdict> {
    let entry = conntrack::lookup(&conntrack::key_of(flow, DIR_FROM_ENDPOINT), flow)?;
    Some(endpoint::deliver(
        ctx,
        &entry,
        apply(ctx, flow, &entry, Reason::Established),
    ))
}

/// A packet policy let through (`passed`): sent out of the uplink by the fast path if it
/// is an established flow's routed there (as `endpoint::leave_by_uplink`), its flow as
/// `seen` left it in this CPU's `SCRATCH6`.
#[inline(never)]
fn leave_by_uplink(ctx: &TcContext, passed: Reason) -> Verdict {
    let unchanged = (passed, PASS);
    // SAFETY: a reference into the map value, used before the program ends.
    let (Some(ep), Some(scratch)) = (unsafe { ENDPOINTS.get(ifindex(ctx)) }, scratch6()) else {
        return unchanged;
    };
    match fast_path::leave_by_uplink(ctx, &scratch.flow, ep, uplink6::established_out) {
        (Reason::NoMatch, PASS) => unchanged,
        verdict => verdict,
    }
}

/// An ICMPv6 error: translated if it is about a hairpin flow, else judged by policy.
/// Out of line: the entry point keeps a single slot for what it is told.
#[inline(never)]
fn icmp_error_finished(ctx: &TcContext) -> i32 {
    let verdict = match error_of_flow(ctx) {
        Some(verdict) => verdict,
        None => policed(ctx),
    };
    finished(ctx, verdict)
}

/// An admitted ICMPv6 error about no hairpin flow: policy on its destination, as any
/// packet's (`decide` stopped before it).
#[inline(never)]
fn policed(ctx: &TcContext) -> Verdict {
    let ifindex = ifindex(ctx);
    // SAFETY: references into the map values, used before the program ends.
    let (Some(ep), Some(ep6)) = (unsafe { (ENDPOINTS.get(ifindex), ENDPOINTS6.get(ifindex)) })
    else {
        return (Reason::DropUnknownEndpoint, DROP);
    };
    let Ok(dst) = ctx.load::<Addr6>(IP6_DST_OFF) else {
        return (Reason::DropMalformed, DROP);
    };
    match policy6::judge(ep, ep6, &dst) {
        Ok(reason) => (reason, PASS),
        Err(reason) => (reason, DROP),
    }
}

/// An ICMPv6 error the endpoint sends about a hairpin flow it received (port
/// unreachable, say): translated as the flow's replies are, and delivered as they are.
#[inline(never)]
fn error_of_flow(ctx: &TcContext) -> Option<Verdict> {
    let own = ifindex(ctx);
    let verdict = icmp6::translate_error_of_flow(ctx, DIR_FROM_ENDPOINT)?;
    // The flow's half, which `translate_error_of_flow` left there.
    let scratch = scratch6()?;
    Some(endpoint::deliver_at(ctx, own, &scratch.entry, verdict))
}

/// `endpoint_ingress6_new`: a container's connection to a port published on a node's
/// IPv6 address (hairpin), its flow created (the packet and entry in this CPU's
/// `SCRATCH6`), its first packet translated and delivered.
pub fn ingress_new(ctx: &TcContext) -> i32 {
    finished(ctx, hairpin_new(ctx))
}

#[inline(never)]
fn hairpin_new(ctx: &TcContext) -> Verdict {
    let Some(scratch) = scratch6() else {
        return (Reason::DropFlowTableFull, DROP);
    };
    // The packet `endpoint_ingress6` parsed: it parses again.
    if flow_packet(ctx, &mut scratch.flow).is_err() {
        return (Reason::DropMalformed, DROP);
    }
    if let Err(verdict) = created(ctx, &scratch.flow, &mut scratch.entry) {
        return verdict;
    }
    delivered(ctx, &scratch.flow, &scratch.entry)
}

/// The hairpin flow of `flow`, created, its first half's entry in `entry`; or what
/// becomes of the packet instead. A subprogram of its own, as `planned` and `delivered`:
/// the lookups of planning it and the flow to create are not on the stack at once, nor
/// while the packet is rewritten.
#[inline(never)]
fn created(ctx: &TcContext, flow: &Flow6, entry: &mut FlowEntry6) -> Result<(), Verdict> {
    let mut new = NewFlow {
        to: Tuple::of(flow),
        origin: 0,
        first: Half {
            flags: 0,
            ifindex: 0,
        },
        reply: Half {
            flags: 0,
            ifindex: 0,
        },
    };
    planned(ctx, flow, &mut new)?;
    let key = conntrack::key_of(flow, DIR_FROM_ENDPOINT);
    if !conntrack::create(&key, flow, &new, entry) {
        return Err((Reason::DropFlowTableFull, DROP));
    }
    Ok(())
}

/// The hairpin flow `flow` starts (see `endpoint::hairpin`), into `new`.
#[inline(never)]
fn planned(ctx: &TcContext, flow: &Flow6, new: &mut NewFlow<Addr6>) -> Result<(), Verdict> {
    let ifindex = ifindex(ctx);
    // SAFETY: references into the map values, used before the program ends.
    let (Some(ep), Some(ep6)) = (unsafe { (ENDPOINTS.get(ifindex), ENDPOINTS6.get(ifindex)) })
    else {
        return Err((Reason::DropUnknownEndpoint, DROP));
    };
    // Unpublished a moment ago: policy let it through to the node's address.
    let Some(backend) = nat::published(flow.dst, flow.dst_port, flow.proto) else {
        return Err((Reason::Ipv6Policed, PASS));
    };
    // A container with IPv4 only behind it (NAT46's): never a DNAT66 to its v4-mapped
    // address.
    if crate::nat46::as_ipv4(&backend.addr).is_some() {
        return Err((Reason::DropNat46FromContainer, DROP));
    }
    *new = endpoint::hairpin(ctx, Tuple::of(flow), &backend, ep, ep6.gateway)
        .map_err(|refused| (refused, DROP))?;
    Ok(())
}

/// The first packet of a new hairpin flow, translated and delivered.
#[inline(never)]
fn delivered(ctx: &TcContext, flow: &Flow6, entry: &FlowEntry6) -> Verdict {
    endpoint::deliver(ctx, entry, apply(ctx, flow, entry, Reason::HairpinNew))
}
