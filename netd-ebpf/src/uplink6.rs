//! IPv6 on the uplink (tail-called by `uplink_ingress` and `uplink_egress`; the XDP
//! program leaves IPv6 to them), sharing the IPv4 programs' connection table code
//! (`uplink::translate_established`, `uplink::masquerade`, `uplink::dnat_new_flow`)
//! over the IPv6 table.
//!
//! Egress: masquerade (NAT66) of what containers of a masqueraded network send beyond
//! the node, port-preserving as for IPv4, fragmented datagrams included (a network
//! without masquerade has its connections tracked, untranslated, as for IPv4); what netd
//! cannot translate from such a network (a fragment whose first was not seen, other
//! protocols, ICMPv6 errors about no flow) is dropped (`drop_ipv6_not_translated`)
//! rather than leaving with the container's own address; and the replies of published
//! ports, translated back. Ingress: the replies of masqueraded flows, translated back
//! and routed by the stack to their container; connections to ports published on `[::]`
//! (DNAT66, the client's address kept), which the redirect fast path delivers into the
//! container where it is on (`fast_path::into_container6`); ICMPv6 errors about those flows (Packet Too Big
//! above all), translated both ways (`icmp6`). Nothing else from the network reaches a
//! container's IPv6 address, even on a node that forwards IPv6 for other reasons: what is
//! addressed into a network's IPv6 subnet is dropped (`drop_not_published`), unless that
//! network's IPv6 is routed on purpose (`gateway_mode_ipv6=routed`: `pass_ipv6_routed`)
//! or it is one of the node's own addresses there (its gateways). The rest is the node's
//! own traffic, passed untouched.

use aya_ebpf::programs::TcContext;
use netd_common::{
    counters::{Hook, Reason},
    flow::{DIR_EGRESS, DIR_INGRESS, FlowEntry6, ORIGIN_NAT46, ORIGIN_SNAT},
    maps::{
        Addr6, CALL_UPLINK_EGRESS6, CALL_UPLINK_EGRESS6_NEW, CALL_UPLINK_INGRESS6,
        CALL_UPLINK_INGRESS6_NEW, CALL_UPLINK_NAT46, NETWORK_MASQUERADE, NETWORK_ROUTED,
    },
    published::Backend6,
};

use crate::{
    conntrack, fast_path, fragment, icmp6,
    maps::{CALLS, NODE_ADDRS6, scratch6},
    nat::{self, Nat},
    nat46,
    parse6::{Flow6, IP6_DST_OFF, IP6_SRC_OFF, flow_of, parse_frame},
    policy6::network_of,
    program::{DROP, PASS, Verdict, apply, finish, finish6},
    stats::count,
    uplink,
};

/// From `uplink_ingress`: hand an IPv6 frame to `uplink_ingress6`.
#[inline(always)]
pub fn hand_over(ctx: &TcContext) -> i32 {
    hand_over_to(ctx, Hook::UplinkIngress, CALL_UPLINK_INGRESS6)
}

/// From `uplink_egress`: hand an IPv6 frame to `uplink_egress6`.
#[inline(always)]
pub fn hand_over_egress(ctx: &TcContext) -> i32 {
    hand_over_to(ctx, Hook::UplinkEgress, CALL_UPLINK_EGRESS6)
}

#[inline(always)]
fn hand_over_to(ctx: &TcContext, hook: Hook, index: u32) -> i32 {
    // SAFETY: a tail call replaces this program's run with the callee's; on return
    // nothing happened and the fallback below decides.
    unsafe { CALLS.tail_call(ctx, index) };
    finish(ctx, hook, (Reason::DropIpv6DispatchFailed, DROP))
}

/// The first packet of a connection to one of the node's addresses goes on to
/// `uplink_ingress6_new` (from here, as in `egress`), which finds it a published port.
pub fn ingress(ctx: &TcContext) -> i32 {
    // Translated by `uplink_xdp6` already: only delivered.
    if let Some(ifindex) = fast_path::translated_in_xdp(ctx) {
        return delivered_from_xdp(ctx, ifindex);
    }
    let decided = decide_ingress(ctx);
    decided_or_new(
        ctx,
        Hook::UplinkIngress,
        decided,
        CALL_UPLINK_INGRESS6_NEW,
        DIR_INGRESS,
        by_destination,
    )
}

/// A packet `uplink_xdp6` translated, counted and delivered into its container (behind
/// host-side veth `ifindex`) as a translation here would have been.
#[inline(never)]
fn delivered_from_xdp(ctx: &TcContext, ifindex: u32) -> i32 {
    count(Hook::UplinkIngress, Reason::TranslatedInXdp, ctx.len());
    fast_path::into_container6(ctx, ifindex)
}

/// What the IPv6 uplink programs decided about a packet.
enum Decided {
    Verdict(Verdict),
    /// A new flow's first packet: for the program of its own (`*_new`).
    NewFlow,
    /// An ICMPv6 message that is no echo: perhaps an error about a flow (`icmp6`), judged
    /// from the entry point, where its chain of calls has room.
    Icmp,
    /// A packet of a NAT46 flow: for `uplink_nat46`.
    Nat46,
}

/// The verdict code of a decision that hands the packet to `uplink_nat46` (never
/// returned to the kernel): `nat46`'s, which `icmp6` returns too.
use crate::nat46::TO_NAT46;

/// Count and report a decision. A new flow's first packet goes on to the program in slot
/// `new` of `CALLS` (dropped if that slot is empty); an ICMPv6 message is translated if
/// it is an error about a flow at `dir`, else judged by `otherwise`.
#[inline(always)]
fn decided_or_new(
    ctx: &TcContext,
    hook: Hook,
    decided: Decided,
    new: u32,
    dir: u8,
    otherwise: fn(&TcContext) -> Verdict,
) -> i32 {
    let verdict = match decided {
        Decided::Verdict(verdict) => verdict,
        Decided::NewFlow => {
            // SAFETY: as in `hand_over_to`.
            unsafe { CALLS.tail_call(ctx, new) };
            (Reason::DropIpv6DispatchFailed, DROP)
        }
        Decided::Icmp => match icmp6::translate_error_of_flow(ctx, dir) {
            // An error about a NAT46 flow.
            Some((_, TO_NAT46)) => to_nat46(ctx),
            Some(verdict) => verdict,
            None => otherwise(ctx),
        },
        Decided::Nat46 => to_nat46(ctx),
    };
    // Out of line, so that the entry point's frame stays nearly empty.
    finished(ctx, hook, verdict)
}

/// Hand the packet to `uplink_nat46`; the verdict if that fails.
#[inline(always)]
fn to_nat46(ctx: &TcContext) -> Verdict {
    // SAFETY: as in `hand_over_to`.
    unsafe { CALLS.tail_call(ctx, CALL_UPLINK_NAT46) };
    (Reason::DropIpv6DispatchFailed, DROP)
}

/// `uplink_ingress6_new`: a connection to a published port of the node's IPv6 addresses
/// (DNAT66, the client's address kept), its flow created; anything else to the node is
/// the node's. In a program of its own, as `egress_new`.
pub fn ingress_new(ctx: &TcContext) -> i32 {
    let verdict = match decide_new_in(ctx) {
        (_, TO_NAT46) => to_nat46(ctx),
        verdict => verdict,
    };
    finished(ctx, Hook::UplinkIngress, verdict)
}

#[inline(never)]
fn decide_new_in(ctx: &TcContext) -> Verdict {
    let Some(scratch) = scratch6() else {
        return (Reason::DropFlowTableFull, DROP);
    };
    if flow_packet(ctx, &mut scratch.flow).is_err() {
        return (Reason::Ipv6ForNode, PASS);
    }
    let flow = &scratch.flow;
    match backend_of(flow) {
        // From the LAN with a source of the node's own (a container's, the node's): IPv6
        // has no rp_filter, and a container must not be reached "from" its neighbour.
        Some(_) if network_of(flow.src).is_some() || Addr6::is_node_addr(flow.src) => {
            (Reason::DropSpoofedSource, DROP)
        }
        // A container with IPv4 only: NAT46.
        Some(backend) if nat46::as_ipv4(&backend.addr).is_some() => (Reason::Nat46New, TO_NAT46),
        Some(backend) => {
            let verdict = opened_in(ctx, flow, &backend, &mut scratch.entry);
            into_container(ctx, verdict, scratch.entry.ifindex)
        }
        None => not_ours(&flow.dst),
    }
}

/// A packet translated on its way in goes into its container by the fast path where it
/// can (`fast_path::into_container6`), else on to the stack.
#[inline(always)]
fn into_container(ctx: &TcContext, verdict: Verdict, ifindex: u32) -> Verdict {
    match verdict {
        (reason, PASS) => (reason, fast_path::into_container6(ctx, ifindex)),
        dropped => dropped,
    }
}

/// Whether `flow` is addressed to a published port. A subprogram, as `backend_of`: the
/// decision's frame holds neither keys nor backend.
#[inline(never)]
pub fn leads_to_a_container(flow: &Flow6) -> bool {
    backend_of(flow).is_some()
}

/// Whether `flow` comes from a container whose connections the uplink keeps flows for:
/// of a masqueraded network, or of one without masquerade whose IPv6 is not routed
/// (tracked). A subprogram, as `leads_to_a_container`.
#[inline(never)]
fn from_translated_container(flow: &Flow6) -> bool {
    network_of(flow.src).is_some_and(|net| net.flags & NETWORK_ROUTED == 0)
        && !Addr6::is_node_addr(flow.src)
}

/// The published port `flow` is addressed to (see `nat::published`).
#[inline(never)]
fn backend_of(flow: &Flow6) -> Option<Backend6> {
    nat::published(flow.dst, flow.dst_port, flow.proto)
}

/// A new connection to `backend`, a published port: its flow created (its entry made in
/// `entry`) and its first packet DNATed.
#[inline(never)]
fn opened_in(ctx: &TcContext, flow: &Flow6, backend: &Backend6, entry: &mut FlowEntry6) -> Verdict {
    let key = conntrack::key_of(flow, DIR_INGRESS);
    match uplink::dnat_new_flow(&key, flow, backend, entry) {
        Ok(()) => apply(ctx, flow, entry, Reason::DnatNew),
        Err(reason) => (reason, DROP),
    }
}

/// The first packet of a flow goes on to `uplink_egress6_new`: from here, the entry point
/// (the kernel refuses a tail call from a subprogram of a program without BTF).
pub fn egress(ctx: &TcContext) -> i32 {
    let decided = decide_egress(ctx);
    decided_or_new(
        ctx,
        Hook::UplinkEgress,
        decided,
        CALL_UPLINK_EGRESS6_NEW,
        DIR_EGRESS,
        |ctx| untranslated(ctx, Reason::OtherProto),
    )
}

/// `program::finish` in a frame of its own, beside the decision's rather than under it:
/// the entry points' own frames stay nearly empty.
#[inline(never)]
fn finished(ctx: &TcContext, hook: Hook, verdict: Verdict) -> i32 {
    finish6(ctx, hook, verdict)
}

/// The IPv6 programs' stack holds bigger tuples than the IPv4 ones' (40-byte keys,
/// 72-byte entries): each step is a subprogram of its own, so that no frame holds the
/// packet, a key and entries of two steps at once, and the deepest chain (entry point,
/// decision, step, connection table) stays within the 512 bytes.
#[inline(never)]
fn decide_ingress(ctx: &TcContext) -> Decided {
    let mut flow = Flow6::default();
    match flow_packet(ctx, &mut flow) {
        Ok(()) => {
            if let Some((verdict, ifindex)) = reply_in(ctx, &flow) {
                if verdict.1 == TO_NAT46 {
                    return Decided::Nat46;
                }
                return Decided::Verdict(into_container(ctx, verdict, ifindex));
            }
            // Only a connection to a published port goes on: the node's own traffic is
            // not parsed twice.
            if flow.starts_flow && leads_to_a_container(&flow) {
                return Decided::NewFlow;
            }
            return Decided::Verdict(unclaimed(ctx, &flow));
        }
        Err(Reason::OtherProto) => return Decided::Icmp,
        Err(_) => {}
    }
    Decided::Verdict(by_destination(ctx))
}

/// A parsed packet from the network that no flow claims, by its destination (`not_ours`);
/// one to a container that the uplink's XDP program translated but left no note on
/// (`xdp_handoff`) is delivered as a noted one.
#[inline(never)]
fn unclaimed(ctx: &TcContext, flow: &Flow6) -> Verdict {
    match not_ours(&flow.dst) {
        (Reason::DropNotPublished, DROP) => match crate::xdp_handoff::translated(flow) {
            Some(ifindex) => (
                Reason::TranslatedInXdp,
                fast_path::into_container6(ctx, ifindex),
            ),
            None => (Reason::DropNotPublished, DROP),
        },
        verdict => verdict,
    }
}

/// A packet from the network that no flow claims, by its destination (see `not_ours`);
/// too short for a whole header, the stack drops it.
#[inline(never)]
fn by_destination(ctx: &TcContext) -> Verdict {
    match ctx.load::<Addr6>(IP6_DST_OFF) {
        Ok(dst) => not_ours(&dst),
        Err(_) => (Reason::Ipv6ForNode, PASS),
    }
}

/// The packet's flow facts (see `parse6::flow_of`), into `flow` (the caller's, or this
/// CPU's `SCRATCH6`), a fragment's ports tracked (`fragment::track6`).
#[inline(never)]
pub fn flow_packet(ctx: &TcContext, flow: &mut Flow6) -> Result<(), Reason> {
    let pkt = parse_frame(ctx).map_err(|_| Reason::NoMatch)?;
    *flow = flow_of(ctx, &pkt)?;
    fragment::track6(flow)
}

/// A packet of a flow coming in: the reply to masqueraded traffic, or a published-port
/// connection's, translated; with the host-side veth of the flow's container where the
/// flow knows it (published ports), for the fast path (masquerade's replies are routed
/// by the stack).
#[inline(never)]
fn reply_in(ctx: &TcContext, flow: &Flow6) -> Option<(Verdict, u32)> {
    let key = conntrack::key_of(flow, DIR_INGRESS);
    let entry = conntrack::lookup(&key, flow)?;
    if entry.origin == ORIGIN_NAT46 {
        return Some(((Reason::Nat46, TO_NAT46), 0));
    }
    let reason = if entry.origin == ORIGIN_SNAT {
        Reason::SnatReply
    } else {
        Reason::Established
    };
    Some((apply(ctx, flow, &entry, reason), entry.ifindex))
}

/// A packet from the network that no flow claims, by its destination.
#[inline(always)]
fn not_ours(dst: &Addr6) -> Verdict {
    match network_of(*dst) {
        _ if NODE_ADDRS6.get_ptr(dst).is_some() => (Reason::Ipv6ForNode, PASS),
        Some(net) if net.flags & NETWORK_ROUTED != 0 => (Reason::Ipv6Routed, PASS),
        Some(_) => (Reason::DropNotPublished, DROP),
        None => (Reason::Ipv6ForNode, PASS),
    }
}

/// The verdict on a packet leaving by the uplink (see `Decided`).
#[inline(never)]
fn decide_egress(ctx: &TcContext) -> Decided {
    if uplink::sent_by_another_host(ctx) {
        return Decided::Verdict((Reason::NoMatch, PASS));
    }
    // The node's own unparsable traffic goes on: the containers' frames were checked
    // where they entered.
    let mut flow = Flow6::default();
    match flow_packet(ctx, &mut flow) {
        Ok(()) => {}
        Err(Reason::OtherProto) => return Decided::Icmp,
        Err(reason) => return Decided::Verdict(untranslated(ctx, reason)),
    }
    Decided::Verdict(match established_out(ctx, &flow) {
        // Only a container's connection (masqueraded or tracked) goes on: the node's own
        // traffic is not parsed twice.
        (Reason::NoMatch, _) if flow.starts_flow && from_translated_container(&flow) => {
            return Decided::NewFlow;
        }
        (Reason::NoMatch, _) if flow.starts_flow => (Reason::NoMatch, PASS),
        (Reason::NoMatch, _) => untranslated(ctx, Reason::NoMatch),
        verdict => verdict,
    })
}

/// A packet of an established flow leaving (`uplink::translate_established`); shared
/// with the fast path out of the uplink (`endpoint6`).
#[inline(never)]
pub fn established_out(ctx: &TcContext, flow: &Flow6) -> Verdict {
    uplink::translate_established(ctx, flow)
}

/// `uplink_egress6_new`, tail-called by `uplink_egress6` for the first packet of a flow:
/// creating a flow (claiming a SNAT port) is the deepest path there is, and it gets a
/// program, and a stack, of its own. The packet is parsed again.
pub fn egress_new(ctx: &TcContext) -> i32 {
    finished(ctx, Hook::UplinkEgress, decide_new(ctx))
}

#[inline(never)]
fn decide_new(ctx: &TcContext) -> Verdict {
    let Some(scratch) = scratch6() else {
        return (Reason::DropFlowTableFull, DROP);
    };
    if let Err(reason) = flow_packet(ctx, &mut scratch.flow) {
        return untranslated(ctx, reason);
    }
    // Masqueraded, or tracked where the network has no masquerade; a routed network's
    // containers go out as they are, and so does what the node sends from its own
    // addresses (its gateways').
    uplink::new_flow_out(ctx, &scratch.flow, scratch.flow.src, &mut scratch.entry)
}

/// A packet the connection table cannot take (or an echo reply of no flow): from a
/// masqueraded network it would leave with a container's own address, so it is dropped;
/// the node's own goes on. A subprogram: its lookups are not held on `decide_egress`'s
/// stack while a flow is looked up.
#[inline(never)]
fn untranslated(ctx: &TcContext, reason: Reason) -> Verdict {
    match ctx.load::<Addr6>(IP6_SRC_OFF) {
        Ok(src) if masqueraded_container(src) => (Reason::DropIpv6NotTranslated, DROP),
        _ => (reason, PASS),
    }
}

/// Whether `src` is a container's of a masqueraded network (not the node's own address
/// there, its gateway's).
#[inline(always)]
fn masqueraded_container(src: Addr6) -> bool {
    network_of(src).is_some_and(|net| net.flags & NETWORK_MASQUERADE != 0)
        && !Addr6::is_node_addr(src)
}
