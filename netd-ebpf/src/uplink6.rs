//! IPv6 arriving on the uplink (tail-called by `uplink_ingress`; the XDP program leaves
//! IPv6 to it). netd does not publish IPv6 ports yet, so nothing from the network reaches
//! a container's IPv6 address, even on a node that forwards IPv6 for other reasons: what
//! is addressed into a network's IPv6 subnet is dropped (`drop_not_published`), unless
//! that network's IPv6 is routed on purpose (`gateway_mode_ipv6=routed`:
//! `pass_ipv6_routed`) or it is one of the node's own addresses there (its gateways).
//! The rest is the node's own traffic, passed untouched.

use aya_ebpf::programs::TcContext;
use netd_common::{
    counters::{Hook, Reason},
    maps::{Addr6, CALL_UPLINK_INGRESS6, NETWORK_ROUTED},
};

use crate::{
    maps::{CALLS, NODE_ADDRS6},
    parse6::IP6_DST_OFF,
    policy6::network_of,
    program::{DROP, PASS, Verdict, finish},
};

/// From `uplink_ingress`: hand an IPv6 frame to `uplink_ingress6`.
#[inline(always)]
pub fn hand_over(ctx: &TcContext) -> i32 {
    // SAFETY: a tail call replaces this program's run with the callee's; on return
    // nothing happened and the fallback below decides.
    unsafe { CALLS.tail_call(ctx, CALL_UPLINK_INGRESS6) };
    finish(
        ctx,
        Hook::UplinkIngress,
        (Reason::DropIpv6DispatchFailed, DROP),
    )
}

pub fn ingress(ctx: &TcContext) -> i32 {
    finish(ctx, Hook::UplinkIngress, decide(ctx))
}

#[inline(always)]
fn decide(ctx: &TcContext) -> Verdict {
    // Too short for a whole header: the stack drops it.
    let Ok(dst) = ctx.load::<Addr6>(IP6_DST_OFF) else {
        return (Reason::Ipv6ForNode, PASS);
    };
    match network_of(dst) {
        _ if NODE_ADDRS6.get_ptr(dst).is_some() => (Reason::Ipv6ForNode, PASS),
        Some(net) if net.flags & NETWORK_ROUTED != 0 => (Reason::Ipv6Routed, PASS),
        Some(_) => (Reason::DropNotPublished, DROP),
        None => (Reason::Ipv6ForNode, PASS),
    }
}
