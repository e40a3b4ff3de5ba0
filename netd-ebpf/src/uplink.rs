//! The uplink's two programs. Ingress: reverse SNAT of replies and DNAT of published
//! ports. Egress: reverse DNAT of replies and SNAT (masquerade) of container traffic.
//! Whatever they do not own goes to the stack untouched.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use netd_common::{
    counters::{Hook, Reason},
    flow::{
        DIR_EGRESS, DIR_INGRESS, FlowEntry, FlowKey, ORIGIN_DNAT, ORIGIN_SNAT, REWRITE_DST,
        REWRITE_SRC,
    },
    published::{Backend, PortKey},
};

use crate::{
    conntrack,
    maps::{FLOWS, MASQ_SUBNETS, NODE_ADDRS, NODE_CONFIG, PUBLISHED_PORTS},
    nat,
    parse::{Packet, parse_ipv4_l4},
    stats::count,
};

type Verdict = (Reason, i32);

pub fn ingress(ctx: &TcContext) -> i32 {
    run(ctx, Hook::UplinkIngress, |pkt| {
        let key = conntrack::key_of(pkt, DIR_INGRESS);
        if let Some(entry) = conntrack::lookup(&key, pkt) {
            let reason = if entry.origin == ORIGIN_SNAT {
                Reason::SnatReply
            } else {
                Reason::Established
            };
            apply(ctx, pkt, &entry, reason)
        } else if let Some(backend) = published_backend(pkt) {
            dnat_new_flow(ctx, pkt, &key, &backend)
        } else {
            (Reason::NoMatch, TC_ACT_OK)
        }
    })
}

pub fn egress(ctx: &TcContext) -> i32 {
    run(ctx, Hook::UplinkEgress, |pkt| {
        let key = conntrack::key_of(pkt, DIR_EGRESS);
        if let Some(entry) = conntrack::lookup(&key, pkt) {
            let reason = if entry.origin == ORIGIN_DNAT {
                Reason::DnatReply
            } else {
                Reason::Established
            };
            apply(ctx, pkt, &entry, reason)
        } else if is_masqueraded(pkt.src_addr) {
            snat_new_flow(ctx, pkt, &key)
        } else {
            (Reason::NoMatch, TC_ACT_OK)
        }
    })
}

/// Parse, decide, count: the frame every uplink program shares.
#[inline(always)]
fn run(ctx: &TcContext, hook: Hook, decide: impl FnOnce(&Packet) -> Verdict) -> i32 {
    let (reason, verdict) = match parse_ipv4_l4(ctx) {
        Ok(pkt) => decide(&pkt),
        Err(reason) => (reason, TC_ACT_OK),
    };
    count(hook, reason, ctx.len());
    verdict
}

#[inline(always)]
fn apply(ctx: &TcContext, pkt: &Packet, entry: &FlowEntry, reason: Reason) -> Verdict {
    match nat::rewrite(ctx, pkt, entry.rewrite, entry.new_addr, entry.new_port) {
        Ok(()) => (reason, TC_ACT_OK as i32),
        Err(_) => (Reason::DropRewriteFailed, TC_ACT_SHOT as i32),
    }
}

/// The binding on the packet's exact address wins over the wildcard; the wildcard only
/// answers on the node's own addresses.
#[inline(always)]
fn published_backend(pkt: &Packet) -> Option<Backend> {
    let exact = PortKey {
        addr: pkt.dst_addr,
        port: pkt.dst_port,
        proto: pkt.proto,
        _pad: 0,
    };
    if let Some(backend) = unsafe { PUBLISHED_PORTS.get(&exact) } {
        return Some(*backend);
    }
    NODE_ADDRS.get_ptr(&pkt.dst_addr)?;
    let wildcard = PortKey { addr: 0, ..exact };
    unsafe { PUBLISHED_PORTS.get(&wildcard) }.copied()
}

#[inline(always)]
fn is_masqueraded(addr: u32) -> bool {
    MASQ_SUBNETS.get(Key::new(32, addr)).is_some()
}

/// A new connection to a published port: both halves of the flow, then DNAT.
#[inline(always)]
fn dnat_new_flow(ctx: &TcContext, pkt: &Packet, key: &FlowKey, backend: &Backend) -> Verdict {
    let entry = conntrack::new_entry(
        pkt,
        REWRITE_DST,
        ORIGIN_DNAT,
        backend.addr,
        backend.port,
        backend.ifindex,
    );
    if !conntrack::insert_first(key, &entry) {
        return raced_or_full(ctx, pkt, key);
    }
    let mut reply = conntrack::new_entry(
        pkt,
        REWRITE_SRC,
        ORIGIN_DNAT,
        pkt.dst_addr,
        pkt.dst_port,
        backend.ifindex,
    );
    reply.seen = 0;
    if conntrack::insert_partner(key, &key.partner(&entry), &reply).is_err() {
        return (Reason::DropFlowTableFull, TC_ACT_SHOT as i32);
    }
    apply(ctx, pkt, &entry, Reason::DnatNew)
}

/// A new connection out of a container: claim a port, both halves, then SNAT.
#[inline(always)]
fn snat_new_flow(ctx: &TcContext, pkt: &Packet, key: &FlowKey) -> Verdict {
    let Some(config) = NODE_CONFIG.get(0) else {
        return (Reason::DropNoConfig, TC_ACT_SHOT as i32);
    };
    if config.snat_addr == 0 {
        return (Reason::DropNoConfig, TC_ACT_SHOT as i32);
    }
    let mut reply_key = FlowKey {
        src_addr: pkt.dst_addr,
        dst_addr: config.snat_addr,
        src_port: pkt.dst_port,
        dst_port: 0,
        proto: pkt.proto,
        dir: DIR_INGRESS,
        _pad: [0; 2],
    };
    let mut reply =
        conntrack::new_entry(pkt, REWRITE_DST, ORIGIN_SNAT, pkt.src_addr, pkt.src_port, 0);
    reply.seen = 0;
    let port = match nat::claim_snat_port(config, pkt.src_port, &mut reply_key, &reply) {
        Ok(port) => port,
        Err(reason) => return (reason, TC_ACT_SHOT as i32),
    };
    let entry = conntrack::new_entry(pkt, REWRITE_SRC, ORIGIN_SNAT, config.snat_addr, port, 0);
    if !conntrack::insert_first(key, &entry) {
        let _ = FLOWS.remove(&reply_key);
        return raced_or_full(ctx, pkt, key);
    }
    apply(ctx, pkt, &entry, Reason::SnatNew)
}

/// The first half could not be inserted: another CPU created the flow (use its entry), or
/// the table is full.
#[inline(always)]
fn raced_or_full(ctx: &TcContext, pkt: &Packet, key: &FlowKey) -> Verdict {
    match conntrack::lookup(key, pkt) {
        Some(entry) => apply(ctx, pkt, &entry, Reason::Established),
        None => (Reason::DropFlowTableFull, TC_ACT_SHOT as i32),
    }
}
