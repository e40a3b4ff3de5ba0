//! IPv6 from a container (tail-called by `endpoint_ingress` on its host-side veth): the
//! frame checked (`guard6`), then policy on its destination (`policy6`). netd does not
//! translate IPv6 yet, so there are no flows here: what passes goes to the bridge (its
//! neighbours) or the node, as Docker's bridge would let it.

use aya_ebpf::programs::TcContext;
use netd_common::{
    counters::Reason,
    maps::{CALL_ENDPOINT_INGRESS6, Endpoint6Info, EndpointInfo},
};

use crate::{
    endpoint, guard6,
    maps::{CALLS, ENDPOINTS, ENDPOINTS6},
    policy6,
    program::{DROP, PASS, Verdict, ifindex},
};

/// From `endpoint_ingress`: hand an IPv6 frame to `endpoint_ingress6`.
#[inline(always)]
pub fn hand_over(ctx: &TcContext) -> i32 {
    // SAFETY: as in `uplink6::hand_over`.
    unsafe { CALLS.tail_call(ctx, CALL_ENDPOINT_INGRESS6) };
    endpoint::finish(ctx, (Reason::DropIpv6DispatchFailed, DROP))
}

pub fn ingress(ctx: &TcContext) -> i32 {
    endpoint::finish(ctx, judge(ctx))
}

/// A subprogram: the endpoint and the frame are on its stack, not on the entry point's,
/// which `finish` adds the monitor's to.
#[inline(never)]
fn judge(ctx: &TcContext) -> Verdict {
    let ifindex = ifindex(ctx);
    // SAFETY: references into the map values, used before the program ends.
    match unsafe { (ENDPOINTS.get(ifindex), ENDPOINTS6.get(ifindex)) } {
        (Some(ep), Some(ep6)) => decide(ctx, ep, ep6),
        // Its network has no IPv6 (the container's IPv6 is off, or it turned it on).
        (Some(_), None) => (Reason::DropIpv6NotEnabled, DROP),
        (None, _) => (Reason::DropUnknownEndpoint, DROP),
    }
}

#[inline(always)]
fn decide(ctx: &TcContext, ep: &EndpointInfo, ep6: &Endpoint6Info) -> Verdict {
    let frame = match guard6::check_frame(ctx, ep, ep6) {
        Ok(frame) => frame,
        Err(reason) => return (reason, DROP),
    };
    if let Some(reason) = policy6::refuse_frame(ep, ep6, &frame) {
        return (reason, DROP);
    }
    match policy6::judge(ep, ep6, &frame.pkt.dst) {
        Ok(reason) => (reason, PASS),
        Err(reason) => (reason, DROP),
    }
}
