//! The uplink's two TC programs. Ingress: reverse SNAT of replies and DNAT of published
//! ports, then (fast path) straight into the container; a packet the XDP program already
//! translated is only delivered. Nothing else reaches a container address from the
//! network: what matches no flow and no published port is dropped, unless its network is
//! routed on purpose (Docker 28 drops it too). Egress: reverse DNAT of replies, SNAT
//! (masquerade) of container traffic that the stack routed here, and tracking of the
//! untranslated egress of networks without masquerade, so that their replies get in.
//! Whatever else they see goes to the stack untouched.

use aya_ebpf::programs::TcContext;
use netd_common::{
    counters::{Hook, Reason},
    flow::{
        DIR_EGRESS, DIR_INGRESS, FLAG_REPLY, FlowEntry, FlowEntryOf, FlowKeyOf, ORIGIN_DNAT,
        ORIGIN_SNAT, ORIGIN_TRACKED,
    },
    maps::{NETWORK_MASQUERADE, NETWORK_ROUTED},
    published::BackendOf,
};

use crate::{
    conntrack::{self, Half, NewFlow, Table, Tuple},
    fast_path, icmp,
    maps::{NODE_ADDRS, NODE_CONFIG},
    nat::{self, Nat, Translatable},
    parse::{ETH_P_IP, ETH_SRC_OFF, ETH_TYPE_OFF, IP_DST_OFF, Kind, Packet},
    policy::network_of,
    program::{DROP, PASS, Verdict, apply, published_backend, run, unparsed},
    stats::count,
};

pub fn ingress(ctx: &TcContext) -> i32 {
    if let Some(ifindex) = fast_path::translated_in_xdp(ctx) {
        count(Hook::UplinkIngress, Reason::TranslatedInXdp, ctx.len());
        return fast_path::into_container(ctx, ifindex);
    }
    run(ctx, Hook::UplinkIngress, |parsed| {
        let pkt = match parsed {
            Ok(pkt) => pkt,
            Err(reason) => return unparsed_ingress(ctx, reason),
        };
        if pkt.kind == Kind::IcmpError {
            return match icmp::translate_error_of_flow(ctx, &pkt, DIR_INGRESS) {
                (Reason::NoMatch, _) => not_ours(pkt.ip_dst),
                translated => translated,
            };
        }
        let (reason, ifindex) = match ingress_flow(&pkt) {
            Ok((entry, reason)) => match apply(ctx, &pkt, &entry, reason) {
                (reason, PASS) => (reason, entry.ifindex),
                dropped => return dropped,
            },
            Err(Reason::NoMatch) => return (Reason::NoMatch, PASS),
            Err(Reason::DropNotPublished) => match translated_unnoted(&pkt) {
                Some(ifindex) => (Reason::TranslatedInXdp, ifindex),
                None => return (Reason::DropNotPublished, DROP),
            },
            Err(reason) => return (reason, DROP),
        };
        (reason, fast_path::into_container(ctx, ifindex))
    })
}

/// A packet to a container no flow or published port claims: the container's veth if
/// the uplink's XDP program translated it but could leave no note (`xdp_handoff`), else
/// `None` (dropped). Out of line: the entry point's frame is near the limit.
#[inline(never)]
fn translated_unnoted(pkt: &Packet) -> Option<u32> {
    crate::xdp_handoff::translated4(pkt)
}

/// The flow of a packet arriving on the uplink, and what kind of translation it gets: an
/// existing flow (a reply to masqueraded traffic, or a published-port connection), or a
/// new one when the packet opens a connection to a published port. Shared by the TC and
/// XDP programs, so both translate the same packets the same way (a new connection from
/// an address of NAT46's pool is forged: dropped). `Err(NoMatch)`: not
/// netd's business; `Err(drop reason)`: dropped.
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
        return Err(not_ours(pkt.ip_dst).0);
    };
    if crate::nat46::in_pool(pkt.src_addr) {
        return Err(Reason::DropSpoofedSource);
    }
    let mut entry = FlowEntry::default();
    dnat_new_flow(&key, pkt, &backend, &mut entry)?;
    Ok((entry, Reason::DnatNew))
}

/// A new connection to a published port (`key`, its first packet `pkt`): both halves
/// created, the first (written into `entry`) leading to `backend`.
#[inline(always)]
pub fn dnat_new_flow<A: Nat, P: Translatable<A>>(
    key: &FlowKeyOf<A>,
    pkt: &P,
    backend: &BackendOf<A>,
    entry: &mut FlowEntryOf<A>,
) -> Result<(), Reason> {
    let to = Tuple {
        dst_addr: backend.addr,
        dst_port: backend.port,
        ..Tuple::of(pkt)
    };
    let half = Half {
        flags: 0,
        ifindex: backend.ifindex,
    };
    let flow = NewFlow {
        to,
        origin: ORIGIN_DNAT,
        first: half,
        reply: half,
    };
    if !conntrack::create(key, pkt, &flow, entry) {
        return Err(Reason::DropFlowTableFull);
    }
    Ok(())
}

/// A packet from the network that no flow and no published port claims: dropped if it is
/// addressed to a container (not a gateway: that is the node) of a network that is not
/// routed on purpose, else left to the stack.
#[inline(always)]
fn not_ours(dst: u32) -> Verdict {
    let protected = network_of(dst).is_some_and(|net| net.flags & NETWORK_ROUTED == 0)
        && NODE_ADDRS.get_ptr(dst).is_none();
    if protected {
        (Reason::DropNotPublished, DROP)
    } else {
        (Reason::NoMatch, PASS)
    }
}

/// What the parser did not take (other protocols, IP options, errors about nothing it
/// tracks) is still judged by its destination, whatever the reason the parser gave:
/// nothing IPv4 gets to a container unasked.
#[inline(always)]
fn unparsed_ingress(ctx: &TcContext, reason: Reason) -> Verdict {
    let (reason, verdict) = unparsed(reason);
    if verdict == PASS
        && ctx.load::<u16>(ETH_TYPE_OFF) == Ok(ETH_P_IP.to_be())
        && let Ok(dst) = ctx.load::<u32>(IP_DST_OFF)
        && let (Reason::DropNotPublished, DROP) = not_ours(dst)
    {
        return (Reason::DropNotPublished, DROP);
    }
    (reason, verdict)
}

pub fn egress(ctx: &TcContext) -> i32 {
    if crate::nat46::node_error_to_pool(ctx) {
        // Not counted here: `endpoint_nat46` does.
        return crate::nat46::TO_NAT46;
    }
    run(ctx, Hook::UplinkEgress, |parsed| {
        if sent_by_another_host(ctx) {
            return (Reason::NoMatch, PASS);
        }
        let pkt = match parsed {
            Ok(pkt) => pkt,
            Err(reason) => return unparsed(reason),
        };
        if crate::nat46::in_pool(pkt.dst_addr) {
            return (Reason::DropNat46PoolLeak, DROP);
        }
        if pkt.kind == Kind::IcmpError {
            return icmp::translate_error_of_flow(ctx, &pkt, DIR_EGRESS);
        }
        match translate_established(ctx, &pkt) {
            (Reason::NoMatch, _) if pkt.starts_flow => {
                new_flow_out(ctx, &pkt, pkt.src_addr, &mut FlowEntry::default())
            }
            verdict => verdict,
        }
    })
}

/// Whether a frame leaving through the uplink carries another source MAC than the
/// uplink's: a macvlan (a container straight on the LAN) sends through its parent's
/// transmit path, and what it sends is never the node's to translate, whatever source
/// address it forged.
#[inline(always)]
pub fn sent_by_another_host(ctx: &TcContext) -> bool {
    let Some(config) = NODE_CONFIG.get(0) else {
        return false;
    };
    if config.uplink_mac == [0; 6] {
        return false;
    }
    ctx.load::<[u8; 6]>(ETH_SRC_OFF)
        .is_ok_and(|src| src != config.uplink_mac)
}

/// A packet of an existing flow leaving through the uplink: reverse DNAT of a reply,
/// SNAT of a masqueraded connection, or a tracked one. Shared with the fast path on the
/// container's veth, which only ever translates established flows (new ones are created
/// here, whatever path they took), and with `uplink6`.
#[inline(always)]
pub fn translate_established<A: Nat, P: Translatable<A>>(ctx: &TcContext, pkt: &P) -> Verdict {
    let key = conntrack::key_of(pkt, DIR_EGRESS);
    let Some(entry) = conntrack::lookup(&key, pkt) else {
        return (Reason::NoMatch, PASS);
    };
    let reason = if entry.origin == ORIGIN_DNAT {
        Reason::DnatReply
    } else {
        Reason::Established
    };
    apply(ctx, pkt, &entry, reason)
}

/// A new connection out of a container (its address `src`): masqueraded, or tracked
/// where its network is not masqueraded (and not routed on purpose). Replies of the new
/// flow are delivered straight into the container's veth when the fast path is on. The
/// new flow's entry is made in `entry`, the caller's (the IPv6 programs keep it off their
/// stack).
#[inline(always)]
pub fn new_flow_out<A: Nat, P: Translatable<A>>(
    ctx: &TcContext,
    pkt: &P,
    src: A,
    entry: &mut FlowEntryOf<A>,
) -> Verdict {
    if A::is_node_addr(src) {
        // The node's own, from its gateway address on the network (an answer to the LAN).
        return (Reason::NoMatch, PASS);
    }
    let veth = A::veth_of(src);
    match A::network_of(src) {
        Some(net) if net.flags & NETWORK_MASQUERADE != 0 => masquerade(ctx, pkt, veth, entry),
        Some(net) if net.flags & NETWORK_ROUTED == 0 => match tracked_new_flow(pkt, veth, entry) {
            Ok(reason) => apply(ctx, pkt, entry, reason),
            Err(reason) => (reason, DROP),
        },
        _ => (Reason::NoMatch, PASS),
    }
}

/// A new masqueraded connection out of the container behind `veth`: its flow created (in
/// `entry`) and its first packet SNATed.
#[inline(always)]
pub fn masquerade<A: Nat, P: Translatable<A>>(
    ctx: &TcContext,
    pkt: &P,
    veth: u32,
    entry: &mut FlowEntryOf<A>,
) -> Verdict {
    match snat_new_flow(ctx, pkt, veth, entry) {
        Ok(reason) => apply(ctx, pkt, entry, reason),
        Err(reason) => (reason, DROP),
    }
}

/// A new connection out of a network without masquerade: nothing to translate, but both
/// halves are kept, as for any flow, so that its replies are let in.
#[inline(always)]
fn tracked_new_flow<A: Nat, P: Translatable<A>>(
    pkt: &P,
    veth: u32,
    entry: &mut FlowEntryOf<A>,
) -> Result<Reason, Reason> {
    let key = conntrack::key_of(pkt, DIR_EGRESS);
    let half = Half {
        flags: 0,
        ifindex: veth,
    };
    let flow = NewFlow {
        to: Tuple::of(pkt),
        origin: ORIGIN_TRACKED,
        first: half,
        reply: half,
    };
    if !conntrack::create(&key, pkt, &flow, entry) {
        return Err(Reason::DropFlowTableFull);
    }
    Ok(Reason::TrackedNew)
}

/// A new connection out of a container: claim a port (by inserting the reply half, made
/// in `entry`), then add the first half (`entry` again, made over); the caller SNATs.
/// A subprogram, as `conntrack::create`: the stack of creating a flow is not held while
/// looking one up.
#[inline(never)]
fn snat_new_flow<A: Nat, P: Translatable<A>>(
    ctx: &TcContext,
    pkt: &P,
    veth: u32,
    entry: &mut FlowEntryOf<A>,
) -> Result<Reason, Reason> {
    let config = NODE_CONFIG.get(0).ok_or(Reason::DropNoConfig)?;
    let snat_addr = A::snat_addr(config).ok_or(A::NO_SNAT_ADDRESS)?;
    // The reply half first (the packet's tuple reversed, to be written into replies),
    // then the first half made over it: its fields are what the steps read, rather than
    // copies of the tuple, since this path is deep.
    *entry = conntrack::new_entry(Tuple::of(pkt).reversed(), ORIGIN_SNAT, 0, FLAG_REPLY, veth);
    let mut reply_key = FlowKeyOf {
        src_addr: entry.src_addr,
        dst_addr: snat_addr,
        src_port: entry.src_port,
        dst_port: 0,
        proto: pkt.proto(),
        dir: DIR_INGRESS,
        _pad: [0; 2],
    };
    let port = nat::claim_snat_port(ctx, config, entry.dst_port, &mut reply_key, entry)?;
    let to = Tuple {
        src_addr: snat_addr,
        dst_addr: entry.src_addr,
        src_port: port,
        dst_port: entry.src_port,
    };
    conntrack::make_first(entry, to, pkt);
    let key = conntrack::key_of(pkt, DIR_EGRESS);
    if conntrack::insert_first(&key, entry) {
        return Ok(Reason::SnatNew);
    }
    // Another CPU created the flow meanwhile (use its entry), or the table is full.
    let _ = Table::Pending.remove(&reply_key);
    let theirs = conntrack::find_mut(&key).ok_or(Reason::DropFlowTableFull)?;
    // SAFETY: a pointer into a map's value, read at once.
    *entry = unsafe { *theirs };
    Ok(Reason::Established)
}
