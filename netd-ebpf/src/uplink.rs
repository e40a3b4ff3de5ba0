//! The uplink's two TC programs. Ingress: reverse SNAT of replies and DNAT of published
//! ports, then (fast path) straight into the container; a packet the XDP program already
//! translated is only delivered. Egress: reverse DNAT of replies and SNAT (masquerade) of
//! container traffic that the stack routed here. Whatever they do not own goes to the
//! stack untouched.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use netd_common::{
    counters::{Hook, Reason},
    flow::{DIR_EGRESS, DIR_INGRESS, FLAG_REPLY, FlowEntry, FlowKey, ORIGIN_DNAT, ORIGIN_SNAT},
};

use crate::{
    conntrack::{self, Half, Tuple},
    fast_path, icmp,
    maps::{FLOWS, MASQ_SUBNETS, NODE_CONFIG},
    nat,
    parse::{Kind, Packet},
    program::{DROP, PASS, Verdict, apply, published_backend, run},
    stats::count,
};

pub fn ingress(ctx: &TcContext) -> i32 {
    if let Some(ifindex) = fast_path::translated_in_xdp(ctx) {
        count(Hook::UplinkIngress, Reason::TranslatedInXdp, ctx.len());
        return fast_path::into_container(ctx, ifindex);
    }
    run(ctx, Hook::UplinkIngress, |pkt| {
        if pkt.kind == Kind::IcmpError {
            return icmp::translate_error(ctx, pkt, DIR_INGRESS);
        }
        let (entry, reason) = match ingress_flow(pkt) {
            Ok(found) => found,
            Err(Reason::NoMatch) => return (Reason::NoMatch, PASS),
            Err(reason) => return (reason, DROP),
        };
        match apply(ctx, pkt, &entry, reason) {
            (reason, PASS) => (reason, fast_path::into_container(ctx, entry.ifindex)),
            dropped => dropped,
        }
    })
}

/// The flow of a packet arriving on the uplink, and what kind of translation it gets: an
/// existing flow (a reply to masqueraded traffic, or a published-port connection), or a
/// new one when the packet opens a connection to a published port. Shared by the TC and
/// XDP programs, so both translate the same packets the same way.
#[inline(always)]
pub fn ingress_flow(pkt: &Packet) -> Result<(FlowEntry, Reason), Reason> {
    let key = conntrack::key_of(pkt, DIR_INGRESS);
    if let Some(entry) = conntrack::lookup(&key, pkt) {
        let reason = if entry.origin == ORIGIN_SNAT {
            Reason::SnatReply
        } else {
            Reason::Established
        };
        return Ok((entry, reason));
    }
    let Some(backend) = pkt.starts_flow.then(|| published_backend(pkt)).flatten() else {
        return Err(Reason::NoMatch);
    };
    let to = Tuple {
        dst_addr: backend.addr,
        dst_port: backend.port,
        ..Tuple::of(pkt)
    };
    let half = Half {
        flags: 0,
        ifindex: backend.ifindex,
    };
    conntrack::create(&key, pkt, to, ORIGIN_DNAT, half, half)
        .map(|entry| (entry, Reason::DnatNew))
        .ok_or(Reason::DropFlowTableFull)
}

pub fn egress(ctx: &TcContext) -> i32 {
    run(ctx, Hook::UplinkEgress, |pkt| {
        if pkt.kind == Kind::IcmpError {
            return icmp::translate_error(ctx, pkt, DIR_EGRESS);
        }
        translate_egress(ctx, pkt, 0)
    })
}

/// A packet leaving through the uplink: reverse DNAT of a reply, or SNAT of container
/// traffic. `from_ifindex` is the sending container's host-side veth when known (at the
/// veth; not at the uplink, after the bridge): replies of a new masqueraded flow can
/// then be delivered straight into it.
#[inline(always)]
pub fn translate_egress(ctx: &TcContext, pkt: &Packet, from_ifindex: u32) -> Verdict {
    let key = conntrack::key_of(pkt, DIR_EGRESS);
    if let Some(entry) = conntrack::lookup(&key, pkt) {
        let reason = if entry.origin == ORIGIN_DNAT {
            Reason::DnatReply
        } else {
            Reason::Established
        };
        apply(ctx, pkt, &entry, reason)
    } else if pkt.starts_flow && is_masqueraded(pkt.src_addr) {
        snat_new_flow(ctx, pkt, &key, from_ifindex)
    } else {
        (Reason::NoMatch, PASS)
    }
}

#[inline(always)]
fn is_masqueraded(addr: u32) -> bool {
    MASQ_SUBNETS.get(Key::new(32, addr)).is_some()
}

/// A new connection out of a container: claim a port (by inserting the reply half), add
/// the first half, then SNAT.
#[inline(always)]
fn snat_new_flow(ctx: &TcContext, pkt: &Packet, key: &FlowKey, from_ifindex: u32) -> Verdict {
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
    let reply = conntrack::new_entry(
        Tuple::of(pkt).reversed(),
        ORIGIN_SNAT,
        0,
        FLAG_REPLY,
        from_ifindex,
    );
    let port = match nat::claim_snat_port(ctx, config, pkt.src_port, &mut reply_key, &reply) {
        Ok(port) => port,
        Err(reason) => return (reason, DROP),
    };
    let to = Tuple {
        src_addr: config.snat_addr,
        src_port: port,
        ..Tuple::of(pkt)
    };
    let entry = conntrack::new_entry(to, ORIGIN_SNAT, pkt.seen, 0, from_ifindex);
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
