//! The program on each container's host-side veth (TC ingress: packets from the
//! container). In order: anti-spoofing; flows already translated here; network policy
//! (isolation, icc, internal) on the packet's original destination; hairpin: a container
//! calling a published port through a node address is DNATed here, since such packets
//! never reach the uplink. Calling its own published port, it is also SNATed to its
//! gateway and the packet is sent straight back, so that the reply is translated here too.

use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use netd_common::{
    counters::{Hook, Reason},
    flow::{DIR_FROM_ENDPOINT, FLAG_REDIRECT_BACK, FlowEntry, FlowKey, ORIGIN_HAIRPIN},
    maps::EndpointInfo,
    published::Backend,
};

use crate::{
    conntrack::{self, Tuple},
    guard,
    maps::ENDPOINTS,
    parse::{IP_DST_OFF, Kind, Packet, parse_ipv4_l4},
    policy,
    program::{DROP, PASS, Verdict, apply, published_backend},
    stats::count,
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
        None => (Reason::NoMatch, PASS),
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
    let mut flags = 0;
    if backend.addr == pkt.src_addr {
        let Some(endpoint) = endpoint else {
            return (Reason::NoMatch, PASS);
        };
        to.src_addr = endpoint.gateway;
        flags = FLAG_REDIRECT_BACK;
    }
    match conntrack::create(key, pkt, to, ORIGIN_HAIRPIN, flags, backend.ifindex) {
        Some(entry) => deliver(ctx, pkt, &entry, Reason::HairpinNew),
        None => (Reason::DropFlowTableFull, DROP),
    }
}

/// Translate, then let the packet go on, or send it back into the container it came from
/// (MAC addresses swapped) when the flow says so.
#[inline(always)]
fn deliver(ctx: &TcContext, pkt: &Packet, entry: &FlowEntry, reason: Reason) -> Verdict {
    let (reason, verdict) = apply(ctx, pkt, entry, reason);
    if verdict != PASS || entry.flags & FLAG_REDIRECT_BACK == 0 {
        return (reason, verdict);
    }
    if swap_macs(ctx).is_err() {
        return (Reason::DropRedirectFailed, DROP);
    }
    // SAFETY: a helper taking plain integers.
    (reason, unsafe { bpf_redirect(ifindex(ctx), 0) } as i32)
}

#[inline(always)]
fn swap_macs(ctx: &TcContext) -> Result<(), i64> {
    let macs: [u8; 12] = ctx.load(0)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &swapped, 0)
}
