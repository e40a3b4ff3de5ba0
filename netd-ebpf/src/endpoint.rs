//! The program on each container's host-side veth (TC ingress: packets from the
//! container). In order: anti-spoofing; flows already translated here; network policy
//! (isolation, icc, internal) on the packet's original destination; hairpin: a container
//! calling a published port through a node address is DNATed here, since such packets
//! never reach the uplink. Calling its own published port, it is also SNATed to its
//! gateway and the packet is sent straight back, so that the reply is translated here too.
//! Last, with the fast path on: traffic routed out of the uplink is translated here and
//! sent out of it directly.

use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use netd_common::{
    counters::{Hook, Reason},
    flow::{
        DIR_FROM_ENDPOINT, FLAG_REDIRECT_BACK, FLAG_REDIRECT_TO_CALLER, FlowEntry, FlowKey,
        ORIGIN_HAIRPIN,
    },
    maps::EndpointInfo,
    published::Backend,
};

use crate::{
    conntrack::{self, Half, Tuple},
    fast_path, guard,
    maps::ENDPOINTS,
    parse::{IP_DST_OFF, Kind, Packet, parse_ipv4_l4},
    policy,
    program::{DROP, PASS, Verdict, apply, published_backend},
    stats::count,
    uplink,
};

pub fn ingress(ctx: &TcContext) -> i32 {
    // SAFETY: a copy out of the map value.
    let endpoint = unsafe { ENDPOINTS.get(&ifindex(ctx)) }.copied();
    let (reason, verdict) = decide(ctx, endpoint.as_ref());
    count(Hook::EndpointIngress, reason, ctx.len());
    verdict
}

#[inline(always)]
fn decide(ctx: &TcContext, endpoint: Option<&EndpointInfo>) -> Verdict {
    if let Some(ep) = endpoint
        && let Err(reason) = guard::check_source(ctx, ep)
    {
        return (reason, DROP);
    }
    let pkt = match parse_ipv4_l4(ctx) {
        Ok(pkt) => pkt,
        // Not translated, but still subject to policy (other protocols, fragments).
        Err(reason) => return police_raw(ctx, endpoint, reason),
    };
    let key = conntrack::key_of(&pkt, DIR_FROM_ENDPOINT);
    if pkt.kind == Kind::Flow
        && let Some(entry) = conntrack::lookup(&key, &pkt)
    {
        return deliver(ctx, &pkt, &entry, Reason::Established);
    }
    if let Some(reason) = endpoint.and_then(|ep| policy::refuse(ep, pkt.dst_addr)) {
        return (reason, DROP);
    }
    if pkt.kind == Kind::IcmpError {
        // Errors about hairpin flows are left to the stack.
        return (Reason::NoMatch, PASS);
    }
    match pkt.starts_flow.then(|| published_backend(&pkt)).flatten() {
        Some(backend) => hairpin_new_flow(ctx, &pkt, &key, &backend, endpoint),
        None => leave_by_uplink(ctx, &pkt, endpoint),
    }
}

/// Fast path: traffic routed out of the uplink is translated here (SNAT, or reverse DNAT
/// of a reply) and sent out directly. Otherwise, or when the fast path is off, the stack
/// routes it and the uplink's egress program translates it.
#[inline(always)]
fn leave_by_uplink(ctx: &TcContext, pkt: &Packet, endpoint: Option<&EndpointInfo>) -> Verdict {
    let (Some(config), Some(endpoint)) = (fast_path::config(), endpoint) else {
        return (Reason::NoMatch, PASS);
    };
    if !fast_path::sent_to_gateway(ctx, endpoint) {
        return (Reason::NoMatch, PASS);
    }
    let route = match fast_path::route_via_uplink(ctx, pkt, endpoint, &config) {
        Ok(route) => route,
        Err(reason) => {
            count(Hook::FastPath, reason, ctx.len());
            return (Reason::NoMatch, PASS);
        }
    };
    match uplink::translate_egress(ctx, pkt, ifindex(ctx)) {
        (Reason::NoMatch, verdict) => (Reason::NoMatch, verdict),
        (reason, PASS) => (
            reason,
            fast_path::out_of_uplink(ctx, &route, config.uplink_ifindex),
        ),
        dropped => dropped,
    }
}

/// Policy for an IPv4 packet the parser did not take; anything else passes as it was.
#[inline(always)]
fn police_raw(ctx: &TcContext, endpoint: Option<&EndpointInfo>, reason: Reason) -> Verdict {
    if reason != Reason::NotIpv4
        && let (Some(ep), Ok(dst)) = (endpoint, ctx.load::<u32>(IP_DST_OFF))
        && let Some(refused) = policy::refuse(ep, dst)
    {
        return (refused, DROP);
    }
    (reason, PASS)
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context's __sk_buff is valid for the program's run.
    unsafe { (*ctx.skb.skb).ifindex }
}

#[inline(always)]
fn hairpin_new_flow(
    ctx: &TcContext,
    pkt: &Packet,
    key: &FlowKey,
    backend: &Backend,
    endpoint: Option<&EndpointInfo>,
) -> Verdict {
    let mut to = Tuple {
        dst_addr: backend.addr,
        dst_port: backend.port,
        ..Tuple::of(pkt)
    };
    let Some(endpoint) = endpoint else {
        return (Reason::NoMatch, PASS);
    };
    let mut first = Half {
        flags: 0,
        ifindex: backend.ifindex,
    };
    let mut reply = first;
    if let Some(refused) = policy::refuse_hairpin(endpoint, pkt.src_addr, backend.addr) {
        return (refused, DROP);
    }
    if backend.addr == pkt.src_addr {
        to.src_addr = endpoint.gateway;
        first.flags = FLAG_REDIRECT_BACK;
        reply.flags = FLAG_REDIRECT_BACK;
    } else if !policy::same_network(endpoint, backend.addr) {
        reply = Half {
            flags: FLAG_REDIRECT_TO_CALLER,
            ifindex: ifindex(ctx),
        };
    }
    match conntrack::create(key, pkt, to, ORIGIN_HAIRPIN, first, reply) {
        Some(entry) => deliver(ctx, pkt, &entry, Reason::HairpinNew),
        None => (Reason::DropFlowTableFull, DROP),
    }
}

/// Translate, then let the packet go on, or send it into a container directly when the
/// flow says so: back into the one it came from (MAC addresses swapped), or into the one
/// that called across networks.
#[inline(always)]
fn deliver(ctx: &TcContext, pkt: &Packet, entry: &FlowEntry, reason: Reason) -> Verdict {
    let (reason, verdict) = apply(ctx, pkt, entry, reason);
    if verdict != PASS {
        return (reason, verdict);
    }
    let target = if entry.flags & FLAG_REDIRECT_BACK != 0 {
        swap_macs(ctx).map(|()| ifindex(ctx))
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
    // SAFETY: a copy out of the map value.
    let Some(ep) = (unsafe { ENDPOINTS.get(&caller) }).copied() else {
        return Err(0);
    };
    let gateway_mac: [u8; 6] = ctx.load(0)?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&ep.mac);
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
