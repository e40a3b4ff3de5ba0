//! The uplink's two programs. Ingress: reverse SNAT of replies and DNAT of published
//! ports. Egress: reverse DNAT of replies and SNAT (masquerade) of container traffic.
//! Whatever they do not own goes to the stack untouched.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use netd_common::{
    counters::{Hook, Reason},
    flow::{DIR_EGRESS, DIR_INGRESS, FLAG_REPLY, FlowKey, ORIGIN_DNAT, ORIGIN_SNAT},
    published::Backend,
};

use crate::{
    conntrack::{self, Half, Tuple},
    icmp,
    maps::{FLOWS, MASQ_SUBNETS, NODE_CONFIG},
    nat,
    parse::{Kind, Packet},
    program::{DROP, PASS, Verdict, apply, published_backend, run},
};

pub fn ingress(ctx: &TcContext) -> i32 {
    run(ctx, Hook::UplinkIngress, |pkt| {
        if pkt.kind == Kind::IcmpError {
            return icmp::translate_error(ctx, pkt, DIR_INGRESS);
        }
        let key = conntrack::key_of(pkt, DIR_INGRESS);
        if let Some(entry) = conntrack::lookup(&key, pkt) {
            let reason = if entry.origin == ORIGIN_SNAT {
                Reason::SnatReply
            } else {
                Reason::Established
            };
            apply(ctx, pkt, &entry, reason)
        } else if let Some(backend) = pkt.starts_flow.then(|| published_backend(pkt)).flatten() {
            dnat_new_flow(ctx, pkt, &key, &backend)
        } else {
            (Reason::NoMatch, PASS)
        }
    })
}

pub fn egress(ctx: &TcContext) -> i32 {
    run(ctx, Hook::UplinkEgress, |pkt| {
        if pkt.kind == Kind::IcmpError {
            return icmp::translate_error(ctx, pkt, DIR_EGRESS);
        }
        let key = conntrack::key_of(pkt, DIR_EGRESS);
        if let Some(entry) = conntrack::lookup(&key, pkt) {
            let reason = if entry.origin == ORIGIN_DNAT {
                Reason::DnatReply
            } else {
                Reason::Established
            };
            apply(ctx, pkt, &entry, reason)
        } else if pkt.starts_flow && is_masqueraded(pkt.src_addr) {
            snat_new_flow(ctx, pkt, &key)
        } else {
            (Reason::NoMatch, PASS)
        }
    })
}

#[inline(always)]
fn is_masqueraded(addr: u32) -> bool {
    MASQ_SUBNETS.get(Key::new(32, addr)).is_some()
}

/// A new connection to a published port: both halves of the flow, then DNAT.
#[inline(always)]
fn dnat_new_flow(ctx: &TcContext, pkt: &Packet, key: &FlowKey, backend: &Backend) -> Verdict {
    let to = Tuple {
        dst_addr: backend.addr,
        dst_port: backend.port,
        ..Tuple::of(pkt)
    };
    let half = Half {
        flags: 0,
        ifindex: backend.ifindex,
    };
    match conntrack::create(key, pkt, to, ORIGIN_DNAT, half, half) {
        Some(entry) => apply(ctx, pkt, &entry, Reason::DnatNew),
        None => (Reason::DropFlowTableFull, DROP),
    }
}

/// A new connection out of a container: claim a port (by inserting the reply half), add
/// the first half, then SNAT.
#[inline(always)]
fn snat_new_flow(ctx: &TcContext, pkt: &Packet, key: &FlowKey) -> Verdict {
    let Some(config) = NODE_CONFIG.get(0) else {
        return (Reason::DropNoConfig, DROP);
    };
    if config.snat_addr == 0 {
        return (Reason::DropNoConfig, DROP);
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
    let reply = conntrack::new_entry(Tuple::of(pkt).reversed(), ORIGIN_SNAT, 0, FLAG_REPLY, 0);
    let port = match nat::claim_snat_port(ctx, config, pkt.src_port, &mut reply_key, &reply) {
        Ok(port) => port,
        Err(reason) => return (reason, DROP),
    };
    let to = Tuple {
        src_addr: config.snat_addr,
        src_port: port,
        ..Tuple::of(pkt)
    };
    let entry = conntrack::new_entry(to, ORIGIN_SNAT, pkt.seen, 0, 0);
    if conntrack::insert_first(key, &entry) {
        return apply(ctx, pkt, &entry, Reason::SnatNew);
    }
    // Another CPU created the flow meanwhile (use its entry), or the table is full.
    let _ = FLOWS.remove(&reply_key);
    match conntrack::lookup(key, pkt) {
        Some(entry) => apply(ctx, pkt, &entry, Reason::Established),
        None => (Reason::DropFlowTableFull, DROP),
    }
}
