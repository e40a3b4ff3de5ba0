//! TC's side of a packet the uplink's XDP program translated but left no note on: the
//! kernel gives XDP no frame metadata (`xdp::notes_left`), or the driver kept none
//! (`stack_xdp_note_failed`). Such a packet arrives at TC already addressed to its
//! container, which TC would otherwise take for a packet sent to a container from outside
//! (`drop_not_published`); only there is it looked for. It is recognised by its flow: a
//! TCP or UDP packet whose reversed tuple is the half of a flow the container's own packets
//! take (`DIR_EGRESS`; a NAT46 client's, under its v4-mapped addresses in the IPv6 table).
//! A packet forged to look so reaches the container only as the same packet sent to the
//! node's address would, translated.

use netd_common::{
    PROTO_TCP, PROTO_UDP,
    flow::{DIR_EGRESS, FlowKeyOf},
};

use crate::{
    conntrack::{self, Family, Tracked, Tuple},
    parse::Packet,
};

/// The host-side veth of the container a packet XDP translated is for (0: its flow does
/// not know; the stack routes it), or `None`: not one XDP translated.
#[inline(always)]
pub fn translated<A: Family>(pkt: &impl Tracked<A>) -> Option<u32> {
    if !matches!(pkt.proto(), PROTO_TCP | PROTO_UDP) {
        return None;
    }
    containers_half(&pkt.tuple().reversed(), pkt.proto())
}

/// `translated` for an IPv4 packet, which may be NAT46's: from a pool address, its flow in
/// the IPv6 table under v4-mapped addresses.
#[inline(always)]
pub fn translated4(pkt: &Packet) -> Option<u32> {
    if !matches!(pkt.proto, PROTO_TCP | PROTO_UDP) {
        return None;
    }
    let t = pkt.tuple().reversed();
    if !crate::nat46::in_pool(pkt.src_addr) {
        return containers_half(&t, pkt.proto);
    }
    let mapped = Tuple {
        src_addr: crate::nat46::mapped(t.src_addr),
        dst_addr: crate::nat46::mapped(t.dst_addr),
        src_port: t.src_port,
        dst_port: t.dst_port,
    };
    containers_half(&mapped, pkt.proto)
}

/// The container's veth in the half of tuple `t` (protocol `proto`) the container's
/// packets take, if there is one.
#[inline(always)]
fn containers_half<A: Family>(t: &Tuple<A>, proto: u8) -> Option<u32> {
    let key = FlowKeyOf {
        src_addr: t.src_addr,
        dst_addr: t.dst_addr,
        src_port: t.src_port,
        dst_port: t.dst_port,
        proto,
        dir: DIR_EGRESS,
        _pad: [0; 2],
    };
    conntrack::find(&key).map(|(_, entry)| entry.ifindex)
}
