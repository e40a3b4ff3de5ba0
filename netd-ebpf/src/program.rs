//! The frame every program shares: parse, decide, count; and applying a flow entry.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use netd_common::{
    counters::{Hook, Reason},
    flow::FlowEntryOf,
    published::Backend,
};

use crate::{
    fragment, monitor,
    nat::{self, Translatable},
    parse::{Packet, parse_ipv4_l4},
    stats::count,
};

/// What a program decided, and why.
pub type Verdict = (Reason, i32);

pub const PASS: i32 = TC_ACT_OK;
pub const DROP: i32 = TC_ACT_SHOT;

/// Parse, decide (on the packet, or on why it could not be parsed), count.
#[inline(always)]
pub fn run(
    ctx: &TcContext,
    hook: Hook,
    decide: impl FnOnce(Result<Packet, Reason>) -> Verdict,
) -> i32 {
    finish(ctx, hook, decide(packet(ctx)))
}

/// Count a verdict under its hook and reason, log and report it; the verdict.
#[inline(always)]
pub fn finish(ctx: &TcContext, hook: Hook, verdict: Verdict) -> i32 {
    finish_reporting(ctx, hook, verdict, monitor::verdict)
}

/// `finish` for the programs the IPv4 entry points hand IPv6 frames to (NAT46's
/// included): an IPv6 packet they translated is reported with its upper layer found
/// behind any extension headers (`monitor::verdict6`), a walk the IPv4 entry points'
/// deeper frames leave no room for.
#[inline(always)]
pub fn finish6(ctx: &TcContext, hook: Hook, verdict: Verdict) -> i32 {
    finish_reporting(ctx, hook, verdict, monitor::verdict6)
}

#[inline(always)]
fn finish_reporting(
    ctx: &TcContext,
    hook: Hook,
    (reason, verdict): Verdict,
    report: impl FnOnce(&TcContext, Hook, Reason, u32, u32),
) -> i32 {
    count(hook, reason, ctx.len());
    crate::log::verdict(ctx, hook, reason);
    report(ctx, hook, reason, ifindex(ctx), ctx.len());
    verdict
}

/// Whether the frame is IPv6 (`skb->protocol`, the ethertype the kernel took from it):
/// the IPv4 entry points hand those to the IPv6 programs.
#[inline(always)]
pub fn is_ipv6(ctx: &TcContext) -> bool {
    // SAFETY: the context's __sk_buff is valid for the program's run.
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    protocol == u32::from(crate::parse6::ETH_P_IPV6.to_be())
}

/// The interface whose program is running.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context's __sk_buff is valid for the program's run.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// The packet as the TC programs handle it: parsed, fragments tracked. A subprogram: its
/// stack is then not held while the packet is translated.
#[inline(never)]
pub fn packet(ctx: &TcContext) -> Result<Packet, Reason> {
    fragment::track(parse_ipv4_l4(ctx)?)
}

/// What becomes of a packet the parser did not take: it goes on untouched, unless the
/// reason is that it cannot be handled right (a fragment whose first was not seen).
#[inline(always)]
pub fn unparsed(reason: Reason) -> Verdict {
    if reason == Reason::DropFragmentBeforeFirst {
        (reason, DROP)
    } else {
        (reason, PASS)
    }
}

/// Write the entry's tuple into the packet and let it continue.
#[inline(always)]
pub fn apply<A, P: Translatable<A>>(
    ctx: &TcContext,
    pkt: &P,
    entry: &FlowEntryOf<A>,
    reason: Reason,
) -> Verdict {
    match pkt.rewrite(ctx, entry) {
        Ok(()) => (reason, PASS),
        Err(_) => (Reason::DropRewriteFailed, DROP),
    }
}

/// The published port a packet is addressed to (see `nat::published`).
#[inline(always)]
pub fn published_backend(pkt: &Packet) -> Option<Backend> {
    nat::published(pkt.dst_addr, pkt.dst_port, pkt.proto)
}

/// 127.0.0.0/8, for a network-order address.
#[inline(always)]
pub fn is_loopback(addr: u32) -> bool {
    addr.to_ne_bytes()[0] == 127
}
