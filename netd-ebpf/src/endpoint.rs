//! The program on each container's host-side veth (TC ingress: packets from the
//! container). In order: what may leave a container at all (`guard`: allowlisted
//! ethertypes, no VLAN tags, its own MAC and address); flows already translated here;
//! network policy (isolation, icc, internal) on the packet's own destination; hairpin: a container
//! calling a published port through a node address is DNATed here, since such packets
//! never reach the uplink. Calling its own published port, it is also SNATed to its
//! gateway and the packet is sent straight back, so that the reply is translated here too.
//! Last, with the fast path on: traffic routed out of the uplink is translated here and
//! sent out of it directly.

use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use netd_common::{
    counters::{Hook, Reason},
    flow::{
        DIR_FROM_ENDPOINT, FLAG_REDIRECT_BACK, FLAG_REDIRECT_TO_CALLER, FlowEntry, FlowEntryOf,
        ORIGIN_HAIRPIN,
    },
    maps::EndpointInfo,
    published::{Backend, BackendOf},
};

use crate::{
    conntrack::{self, Half, NewFlow, Tuple},
    fast_path, guard, icmp,
    maps::ENDPOINTS,
    nat::Nat,
    overlay,
    parse::{IP_DST_OFF, Kind, Packet},
    policy,
    program::{self, DROP, PASS, Verdict, apply, ifindex, packet, published_backend, unparsed},
    stats::{count_received, count_sent},
    uplink,
};

pub fn ingress(ctx: &TcContext) -> i32 {
    // SAFETY: a copy out of the map value.
    let endpoint = unsafe { ENDPOINTS.get(ifindex(ctx)) }.copied();
    let verdict = match endpoint {
        Some(ep) => match decide(ctx, &ep) {
            // Not counted here: `endpoint_nat46` does.
            (_, crate::nat46::TO_NAT46) => return crate::nat46::TO_NAT46,
            verdict => verdict,
        },
        // Registered before the program is attached and removed after it is detached:
        // a veth without an entry is one netd is tearing down.
        None => (Reason::DropUnknownEndpoint, DROP),
    };
    finish(ctx, verdict)
}

/// Count a packet the endpoint sent under what became of it (for the endpoint too), log
/// and report it; the verdict.
#[inline(always)]
pub fn finish(ctx: &TcContext, (reason, verdict): Verdict) -> i32 {
    count_sent(ifindex(ctx), reason, ctx.len());
    program::finish(ctx, Hook::EndpointIngress, (reason, verdict))
}

/// `finish` for the programs IPv6 frames are handed to (`program::finish6`).
#[inline(always)]
pub fn finish6(ctx: &TcContext, (reason, verdict): Verdict) -> i32 {
    count_sent(ifindex(ctx), reason, ctx.len());
    program::finish6(ctx, Hook::EndpointIngress, (reason, verdict))
}

/// TC egress of a container's host-side veth: what is delivered to the container through
/// its veth (bridged, routed by the node, or redirected to the veth), counted; never
/// changed. What the fast path and the overlay redirect into the container's side
/// directly is counted where they do it.
pub fn egress(ctx: &TcContext) -> i32 {
    count_received(ifindex(ctx), ctx.len());
    PASS
}

#[inline(always)]
fn decide(ctx: &TcContext, ep: &EndpointInfo) -> Verdict {
    match admit(ctx, ep) {
        Ok(Frame::Ipv4) => {}
        Ok(Frame::Arp(target)) => {
            return overlay::answer_arp(ctx, ep, target).unwrap_or((Reason::NotIpv4, PASS));
        }
        Err(reason) => return (reason, DROP),
    }
    // A reply to a NAT46 client (its own address checked by `admit`).
    if crate::nat46::to_pool(ctx) {
        return (Reason::Nat46, crate::nat46::TO_NAT46);
    }
    // A container of another node: sent there as it is, never translated.
    if let Some(verdict) = overlay::to_remote(ctx, ep) {
        return verdict;
    }
    let pkt = match packet(ctx) {
        Ok(pkt) => pkt,
        // Not translated, but still subject to policy (other protocols, IP options).
        Err(reason) => return police_unparsed(ctx, ep, reason),
    };
    let established = if pkt.kind == Kind::IcmpError {
        established_error(ctx, ep, &pkt)
    } else {
        established_flow(ctx, &pkt)
    };
    if let Some(verdict) = established {
        return verdict;
    }
    if let Some(reason) = policy::refuse(ep, pkt.ip_dst) {
        return (reason, DROP);
    }
    if pkt.kind == Kind::IcmpError {
        // Errors about flows of the node's other ends are the uplink's business.
        return (Reason::NoMatch, PASS);
    }
    match pkt.starts_flow.then(|| published_backend(&pkt)).flatten() {
        Some(backend) => hairpin_new_flow(ctx, &pkt, &backend, ep),
        None => leave_by_uplink(ctx, &pkt, ep),
    }
}

/// What kind of frame the container may send: checked by `guard` (what may leave a
/// container at all) and `policy` (what icc off allows on the link). A subprogram of its
/// own, as are the other big steps below: inlined together, they would not fit the
/// program's 512-byte stack.
#[inline(never)]
fn admit(ctx: &TcContext, ep: &EndpointInfo) -> Result<Frame, Reason> {
    let frame = guard::check_frame(ctx, ep)?;
    if let Some(reason) = policy::refuse_frame(ep, &frame) {
        return Err(reason);
    }
    Ok(match frame.arp_target {
        Some(target) => Frame::Arp(target),
        None => Frame::Ipv4,
    })
}

/// The frames a container may send.
enum Frame {
    Ipv4,
    /// ARP, about this address (network order).
    Arp(u32),
}

/// A packet of a flow this veth already translates (a hairpin flow), or an ICMP error the
/// endpoint sends about one: it goes on as the flow does, policy having been applied when
/// the flow began. An error only counts as the flow's when the endpoint is the flow's own
/// end in that direction, never for a flow it merely quotes.
#[inline(never)]
fn established_flow(ctx: &TcContext, pkt: &Packet) -> Option<Verdict> {
    let entry = conntrack::lookup(&conntrack::key_of(pkt, DIR_FROM_ENDPOINT), pkt)?;
    Some(deliver(
        ctx,
        &entry,
        apply(ctx, pkt, &entry, Reason::Established),
    ))
}

#[inline(never)]
fn established_error(ctx: &TcContext, ep: &EndpointInfo, pkt: &Packet) -> Option<Verdict> {
    let (key, entry) = icmp::error_flow(pkt, DIR_FROM_ENDPOINT)?;
    if key.src_addr != ep.addr {
        return None;
    }
    Some(deliver(
        ctx,
        &entry,
        icmp::translate_error(ctx, pkt, &key, &entry),
    ))
}

/// Fast path: traffic of an established flow routed out of the uplink is translated here
/// (SNAT, or reverse DNAT of a reply) and sent out directly (`fast_path::leave_by_uplink`).
/// Otherwise (a new flow, or the fast path off), the stack routes it and the uplink's
/// egress program translates it.
#[inline(never)]
fn leave_by_uplink(ctx: &TcContext, pkt: &Packet, endpoint: &EndpointInfo) -> Verdict {
    fast_path::leave_by_uplink(ctx, pkt, endpoint, uplink::translate_established)
}

/// Policy for an IPv4 packet the parser did not take, by its own destination.
#[inline(always)]
fn police_unparsed(ctx: &TcContext, ep: &EndpointInfo, reason: Reason) -> Verdict {
    let (reason, verdict) = unparsed(reason);
    if verdict != PASS {
        return (reason, verdict);
    }
    // The guard checked the whole header is there.
    let Ok(dst) = ctx.load::<u32>(IP_DST_OFF) else {
        return (Reason::DropMalformed, DROP);
    };
    match policy::refuse(ep, dst) {
        Some(refused) => (refused, DROP),
        None => (reason, PASS),
    }
}

#[inline(never)]
fn hairpin_new_flow(
    ctx: &TcContext,
    pkt: &Packet,
    backend: &Backend,
    endpoint: &EndpointInfo,
) -> Verdict {
    let flow = match hairpin(ctx, Tuple::of(pkt), backend, endpoint, endpoint.gateway) {
        Ok(flow) => flow,
        Err(refused) => return (refused, DROP),
    };
    let key = conntrack::key_of(pkt, DIR_FROM_ENDPOINT);
    let mut entry = FlowEntry::default();
    if !conntrack::create(&key, pkt, &flow, &mut entry) {
        return (Reason::DropFlowTableFull, DROP);
    }
    deliver(ctx, &entry, apply(ctx, pkt, &entry, Reason::HairpinNew))
}

/// The flow of a container calling `backend`, a published port, through a node address
/// (either family), from `from`: DNATed to the backend; calling its own port, also
/// SNATed to its `gateway` and sent straight back (both ways); calling a container of
/// another network, the replies sent straight to the caller. Refused where Docker's
/// forwarding rules would drop the translated packet (`policy::refuse_hairpin`).
#[inline(always)]
pub fn hairpin<A: Nat>(
    ctx: &TcContext,
    from: Tuple<A>,
    backend: &BackendOf<A>,
    endpoint: &EndpointInfo,
    gateway: A,
) -> Result<NewFlow<A>, Reason> {
    if let Some(refused) = policy::refuse_hairpin(endpoint, from.src_addr, backend.addr) {
        return Err(refused);
    }
    let mut to = Tuple {
        dst_addr: backend.addr,
        dst_port: backend.port,
        ..from
    };
    let mut first = Half {
        flags: 0,
        ifindex: backend.ifindex,
    };
    let mut reply = first;
    if backend.addr == from.src_addr {
        to.src_addr = gateway;
        first.flags = FLAG_REDIRECT_BACK;
        reply.flags = FLAG_REDIRECT_BACK;
    } else if !policy::same_network(endpoint, backend.addr) {
        reply = Half {
            flags: FLAG_REDIRECT_TO_CALLER,
            ifindex: ifindex(ctx),
        };
    }
    Ok(NewFlow {
        to,
        origin: ORIGIN_HAIRPIN,
        first,
        reply,
    })
}

/// After translation (`translated`): let the packet go on, or send it into a container
/// directly when the flow says so: back into the one it came from (MAC addresses
/// swapped), or into the one that called across networks.
#[inline(always)]
pub fn deliver<A>(ctx: &TcContext, entry: &FlowEntryOf<A>, translated: Verdict) -> Verdict {
    deliver_at(ctx, ifindex(ctx), entry, translated)
}

/// `deliver`, the interface the program runs on (`own`) read by the caller: where it
/// was read at the start, the compiler keeps no pointer into the context across calls.
#[inline(always)]
pub fn deliver_at<A>(
    ctx: &TcContext,
    own: u32,
    entry: &FlowEntryOf<A>,
    translated: Verdict,
) -> Verdict {
    let (reason, verdict) = translated;
    if verdict != PASS {
        return (reason, verdict);
    }
    let target = if entry.flags & FLAG_REDIRECT_BACK != 0 {
        swap_macs(ctx).map(|()| own)
    } else if entry.flags & FLAG_REDIRECT_TO_CALLER != 0 {
        address_to_caller(ctx, entry.ifindex).map(|()| entry.ifindex)
    } else {
        return (reason, verdict);
    };
    match target {
        // SAFETY: a helper taking plain integers.
        Ok(target) => (reason, unsafe { bpf_redirect(target, 0) } as i32),
        Err(_) => (Reason::DropRedirectFailed, DROP),
    }
}

/// MAC addresses for a frame sent into the container behind `caller` (a host-side veth):
/// to the container's own MAC, from the gateway MAC the frame was sent to.
#[inline(always)]
fn address_to_caller(ctx: &TcContext, caller: u32) -> Result<(), i64> {
    let Some(ep) = ENDPOINTS.get_ptr(caller) else {
        return Err(0);
    };
    let gateway_mac: [u8; 6] = ctx.load(0)?;
    let mut macs = [0u8; 12];
    // SAFETY: a pointer into the map's value, read at once.
    macs[..6].copy_from_slice(unsafe { &(*ep).mac });
    macs[6..].copy_from_slice(&gateway_mac);
    ctx.store(0, &macs, 0)
}

#[inline(always)]
fn swap_macs(ctx: &TcContext) -> Result<(), i64> {
    let macs: [u8; 12] = ctx.load(0)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &swapped, 0)
}
