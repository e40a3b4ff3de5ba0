//! NAT46: an IPv6 client reaches a published port of a container that has only IPv4,
//! translated in the kernel (`xlat`), statefully through the IPv6 connection table, and
//! each client mapped to an address of its own from the pool (`--nat46-pool`), so that
//! the container tells clients apart.
//!
//! A NAT46 flow's halves are both in the IPv6 table, its IPv4 ends as v4-mapped
//! addresses: the first half, looked up at the uplink's ingress, {client -> node:port}
//! writes {pool address -> container:port}; its partner, looked up where the container's
//! replies leave its veth (`endpoint_nat46`), {container -> pool address} writes
//! {node:port -> client}.

use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::bpf_redirect_neigh,
    programs::TcContext,
};
use netd_common::{
    counters::{Hook, Reason},
    flow::{DIR_INGRESS, FlowEntry6, ORIGIN_NAT46},
    maps::{Addr6, NAT46_CONFIRMED, NAT46_UNCONFIRMED_HOLD_NS, Nat46Mapping},
};

use crate::{
    conntrack::{self, Half, NewFlow, Tuple},
    maps::{NAT46_CLIENTS, NAT46_CONFIG, NAT46_MAPPED, scratch6},
    nat,
    parse::Fragment,
    parse6::{Flow6, IP6_HDR_LEN, IP6_OFF},
    program::{self, DROP, PASS, Verdict, finish},
    stats::count,
    tcp_mss, uplink6,
    xlat::{self, To4},
};

/// The third word of a v4-mapped address (`::ffff:0:0/96`), as `Addr6` holds it.
const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The IPv4 address behind a v4-mapped one: a published port's backend that has only
/// IPv4 is written so (see `Datapath::publish`).
#[inline(always)]
pub fn as_ipv4(addr: &Addr6) -> Option<u32> {
    (addr[0] == 0 && addr[1] == 0 && addr[2] == V4_MAPPED).then_some(addr[3])
}

#[inline(always)]
pub fn mapped(addr: u32) -> Addr6 {
    [0, 0, V4_MAPPED, addr]
}

/// `uplink_nat46`: a packet of an IPv6 client to a published port of an IPv4-only
/// container, or an ICMPv6 error about a packet of such a flow (tail-called by
/// `uplink_ingress6` and `uplink_ingress6_new`).
pub fn ingress(ctx: &TcContext) -> i32 {
    if is_icmp6(ctx) {
        return error_in(ctx);
    }
    let verdict = onward(ctx, decide_in(ctx));
    finish(ctx, Hook::UplinkIngress, verdict)
}

/// A translated packet goes into its container by the fast path where it can
/// (`fast_path::into_container`, as a published port's IPv4 connections do), else on to
/// the node's IPv4 forwarding. After the translation's frames are gone.
#[inline(never)]
fn onward(ctx: &TcContext, verdict: Verdict) -> Verdict {
    match verdict {
        (reason, PASS) => {
            let ifindex = scratch6().map_or(0, |s| s.entry.ifindex);
            (reason, crate::fast_path::into_container(ctx, ifindex))
        }
        dropped => dropped,
    }
}

/// Whether the packet is ICMPv6 right behind the fixed header. Out of line, as
/// `error_in`: the entry point's frame stays as small as `decide_in`'s chain needs.
#[inline(never)]
fn is_icmp6(ctx: &TcContext) -> bool {
    ctx.load::<u8>(IP6_OFF + 6) == Ok(crate::parse6::PROTO_ICMPV6)
}

#[inline(never)]
fn error_in(ctx: &TcContext) -> i32 {
    finish(ctx, Hook::UplinkIngress, decide_error_in(ctx))
}

/// An ICMPv6 error about a NAT46 flow's packet (a router between the node and the
/// client about the container's reply: Packet Too Big above all, as IPv6 routers do not
/// fragment) becomes the ICMPv4 error the container can take, from the client's pool
/// address, quoting the packet as the container sent it.
#[inline(never)]
fn decide_error_in(ctx: &TcContext) -> Verdict {
    let Some(err) = xlat::icmp6_error(ctx) else {
        return (Reason::DropNat46Untranslatable, DROP);
    };
    let Some(to) = error_flow(&err) else {
        return (Reason::DropNat46NoFlow, DROP);
    };
    match xlat::icmp6_error_to_v4(ctx, &err, &to) {
        Ok(()) => (Reason::IcmpErrorTranslated, PASS),
        Err(_) => (Reason::DropRewriteFailed, DROP),
    }
}

/// The ends of the NAT46 flow whose reply `err` quotes (the reply went from the node's
/// published address to the client: the flow's first half is the quote reversed).
#[inline(never)]
fn error_flow(err: &xlat::Icmp6Error) -> Option<xlat::ErrorTo4> {
    let key = netd_common::flow::FlowKey6 {
        src_addr: err.quoted_dst,
        dst_addr: err.quoted_src,
        src_port: err.quoted_dst_port,
        dst_port: err.quoted_src_port,
        proto: err.quoted_proto,
        dir: DIR_INGRESS,
        _pad: [0; 2],
    };
    // SAFETY: a pointer into a map's value, read at once.
    let e = unsafe { &*conntrack::find_mut(&key)? };
    if e.origin != ORIGIN_NAT46 {
        return None;
    }
    let src = as_ipv4(&e.src_addr)?;
    if !holds(src, &key.src_addr) {
        return None;
    }
    Some(xlat::ErrorTo4 {
        src,
        dst: as_ipv4(&e.dst_addr)?,
        quoted_src_port: e.dst_port,
        quoted_dst_port: e.src_port,
    })
}

#[inline(never)]
fn decide_in(ctx: &TcContext) -> Verdict {
    let Some(scratch) = scratch6() else {
        return (Reason::DropFlowTableFull, DROP);
    };
    if uplink6::flow_packet(ctx, &mut scratch.flow).is_err() || !translatable(&scratch.flow) {
        return (Reason::DropNat46Untranslatable, DROP);
    }
    let flow = &scratch.flow;
    let reason = match flow_entry(ctx, flow, &mut scratch.entry) {
        Ok(reason) => reason,
        Err(reason) => return (reason, DROP),
    };
    let Some(to) = to_ipv4(&scratch.entry) else {
        return (Reason::DropNat46NoFlow, DROP);
    };
    if xlat::v6_to_v4(ctx, flow, &to).is_err() || clamped(ctx, flow).is_err() {
        return (Reason::DropRewriteFailed, DROP);
    }
    (reason, PASS)
}

/// What the client's packet becomes in IPv4, by its flow's first half `e`: from the
/// client's pool address to the container.
#[inline(always)]
pub fn to_ipv4(e: &FlowEntry6) -> Option<To4> {
    Some(To4 {
        src: as_ipv4(&e.src_addr)?,
        dst: as_ipv4(&e.dst_addr)?,
        dst_port: e.dst_port,
    })
}

/// A translated TCP SYN's MSS option clamped for the uplink (`client_mss`).
#[inline(always)]
pub fn clamped<F: tcp_mss::Segment>(ctx: &F, flow: &Flow6) -> Result<(), ()> {
    if flow.proto != netd_common::PROTO_TCP {
        return Ok(());
    }
    tcp_mss::clamp(ctx, crate::parse::L4_OFF, client_mss())
}

/// The longest TCP segment a NAT46 client may ask of a container: the uplink's MTU less
/// its IPv6 and TCP headers, so that the container's segments fit it translated (0: no
/// limit known).
#[inline(never)]
fn client_mss() -> u16 {
    NAT46_CONFIG
        .get(0)
        .map_or(0, |c| c.uplink_mtu.saturating_sub(60).min(0xffff) as u16)
}

/// Whether a container's packet of `ip_len` bytes fits the uplink once IPv6 (20 bytes
/// more). A GSO packet (the container's TCP, segmented on its way out) is segments of
/// the size its stack chose, after the clamped MSS and path MTU discovery: it goes.
#[inline(never)]
fn fits_uplink(ctx: &TcContext, ip_len: u16) -> bool {
    // SAFETY: the context's __sk_buff is valid for the program's run.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return true;
    }
    NAT46_CONFIG
        .get(0)
        .is_none_or(|c| c.uplink_mtu == 0 || u32::from(ip_len) + 20 <= c.uplink_mtu)
}

/// The flow of `flow`'s packet, into `entry`: found (counted already by
/// `uplink_ingress6`, which found it) while its client still holds its pool address,
/// or created. A subprogram: the key is not held on
/// the decision's stack while the packet is translated.
#[inline(never)]
fn flow_entry(ctx: &TcContext, flow: &Flow6, entry: &mut FlowEntry6) -> Result<Reason, Reason> {
    let key = conntrack::key_of(flow, DIR_INGRESS);
    if let Some(found) = conntrack::find_mut(&key) {
        // SAFETY: a pointer into a map's value, copied at once.
        *entry = unsafe { *found };
        return still_held(entry, &flow.src);
    }
    let uplink = program::ifindex(ctx);
    opened(flow, uplink, Hook::UplinkIngress, &key, entry).map(|()| Reason::Nat46New)
}

/// The reason a packet of the flow whose first half is `entry` is translated, while its
/// client still holds the flow's pool address (`holds`); else the drop's.
#[inline(always)]
pub fn still_held(entry: &FlowEntry6, client: &Addr6) -> Result<Reason, Reason> {
    match as_ipv4(&entry.src_addr) {
        Some(addr) if holds(addr, client) => Ok(Reason::Nat46),
        _ => Err(Reason::DropNat46AddressLost),
    }
}

/// TCP or UDP right behind the fixed header, whole (no extension header, no fragment).
#[inline(always)]
pub fn translatable(flow: &Flow6) -> bool {
    flow.src_port_off as usize == IP6_OFF + IP6_HDR_LEN
        && flow.fragment == Fragment::Whole
        && (flow.proto == netd_common::PROTO_TCP || flow.proto == netd_common::PROTO_UDP)
}

/// A new flow of the client to the published port its first packet is addressed to: the
/// client's pool address (`client_address`, counted at `hook`), both halves created (in
/// `entry`); its replies leave by `uplink`, the interface the packet came in by.
#[inline(never)]
pub fn opened(
    flow: &Flow6,
    uplink: u32,
    hook: Hook,
    key: &netd_common::flow::FlowKey6,
    entry: &mut FlowEntry6,
) -> Result<(), Reason> {
    if !flow.starts_flow {
        return Err(Reason::DropNat46NoFlow);
    }
    let backend =
        nat::published(flow.dst, flow.dst_port, flow.proto).ok_or(Reason::DropNat46NoFlow)?;
    let pool_addr = client_address(&flow.src, hook)?;
    let new = NewFlow {
        to: Tuple {
            src_addr: mapped(pool_addr),
            dst_addr: backend.addr,
            src_port: flow.src_port,
            dst_port: backend.port,
        },
        origin: ORIGIN_NAT46,
        first: Half {
            flags: 0,
            ifindex: backend.ifindex,
        },
        reply: Half {
            flags: 0,
            ifindex: uplink,
        },
    };
    if !conntrack::create(key, flow, &new, entry) {
        return Err(Reason::DropFlowTableFull);
    }
    Ok(())
}

/// Tries at a free pool address for a new client.
const POOL_TRIES: u32 = 16;

/// NAT46's pool as `NAT46_CONFIG` holds it: its first address and how many it has
/// (host order), while NAT46 is on.
#[inline(always)]
fn pool() -> Option<(u32, u32)> {
    let c = NAT46_CONFIG.get(0)?;
    (c.pool_len >= 2).then(|| (u32::from_be(c.pool), c.pool_len))
}

/// The pool address of `client`: the one it has, else a free one (`claim`). A client's
/// address is its own only while `NAT46_MAPPED` says so: it may have been taken while it
/// had no confirmed flow, freed by the collector, or be outside a pool given since. An
/// address taken is counted at `hook`.
#[inline(never)]
fn client_address(client: &Addr6, hook: Hook) -> Result<u32, Reason> {
    let (base, len) = pool().ok_or(Reason::DropNat46PoolExhausted)?;
    let now = conntrack::now();
    if let Some(m) = NAT46_CLIENTS.get_ptr_mut(client) {
        // SAFETY: a pointer into the map's value; a racing writer only writes the time
        // and the flags.
        let addr = unsafe { (*m).addr };
        if u32::from_be(addr).wrapping_sub(base) < len && holds(addr, client) {
            // SAFETY: as above.
            unsafe { (*m).last_used_ns = now };
            return Ok(addr);
        }
        let _ = NAT46_CLIENTS.remove(client);
    }
    claim(client, base, len, hook)
}

/// A pool address for a new client, from a hash of its address on: a free one (the
/// insert into `NAT46_MAPPED` with BPF_NOEXIST is the claim), or, with none free among
/// the tries, one a client without a confirmed flow holds (`take`).
#[inline(never)]
fn claim(client: &Addr6, base: u32, len: u32, hook: Hook) -> Result<u32, Reason> {
    // Read here, not passed: the arguments fill the five registers BPF calls take.
    let now = conntrack::now();
    let hash = (client[0] ^ client[1] ^ client[2] ^ client[3]).wrapping_mul(0x9e37_79b1);
    for i in 0..POOL_TRIES {
        // Not the pool's first address (its network's).
        let index = 1 + hash.wrapping_add(i.wrapping_mul(0x2545)) % (len - 1);
        let addr = base.wrapping_add(index).to_be();
        let taken = NAT46_MAPPED
            .insert(addr, client, BPF_NOEXIST as u64)
            .is_err();
        if taken && !take(addr, client, now) {
            continue;
        }
        let mapping = Nat46Mapping {
            addr,
            flags: 0,
            last_used_ns: now,
        };
        if NAT46_CLIENTS
            .insert(client, mapping, BPF_NOEXIST as u64)
            .is_ok()
        {
            if taken {
                count(hook, Reason::Nat46AddressTaken, 0);
            }
            return Ok(addr);
        }
        // Another CPU mapped this client a moment ago: its address serves.
        let _ = NAT46_MAPPED.remove(addr);
        // SAFETY: a copy out of the map's value.
        return unsafe { NAT46_CLIENTS.get(client) }
            .map(|m| m.addr)
            .ok_or(Reason::DropNat46PoolExhausted);
    }
    Err(Reason::DropNat46PoolExhausted)
}

/// Take `addr` for `client` from the client holding it, if that one never had a flow
/// confirmed and got none for `NAT46_UNCONFIRMED_HOLD_NS`: a spoofed source, or a real
/// one still in its first handshake while a flood fills the pool (its flow then ends:
/// `drop_nat46_address_lost`). Held by no mapping (being claimed, or freed), it is left.
#[inline(never)]
fn take(addr: u32, client: &Addr6, now: u64) -> bool {
    // SAFETY: copies out of the maps' values.
    let Some(holder) = (unsafe { NAT46_MAPPED.get(addr) }).copied() else {
        return false;
    };
    // SAFETY: as above.
    let Some(held) = (unsafe { NAT46_CLIENTS.get(holder) }).copied() else {
        return false;
    };
    if held.addr != addr
        || held.flags & NAT46_CONFIRMED != 0
        || now.wrapping_sub(held.last_used_ns) < NAT46_UNCONFIRMED_HOLD_NS
    {
        return false;
    }
    if NAT46_MAPPED.insert(addr, client, BPF_EXIST as u64).is_err() {
        return false;
    }
    let _ = NAT46_CLIENTS.remove(holder);
    true
}

/// Whether `addr` is `client`'s, as a packet of its flow is translated: a flow whose
/// client lost the address must not go on under another's. Freed under a flow still
/// going (the collector judged the client idle a moment before its packet), it is
/// claimed back, unless another client took it meanwhile.
#[inline(never)]
fn holds(addr: u32, client: &Addr6) -> bool {
    // SAFETY: a copy out of the map's value.
    if let Some(holder) = unsafe { NAT46_MAPPED.get(addr) } {
        return holder == client;
    }
    NAT46_MAPPED
        .insert(addr, client, BPF_NOEXIST as u64)
        .is_ok()
        // SAFETY: as above.
        || unsafe { NAT46_MAPPED.get(addr) } == Some(client)
}

/// A flow of `client` (whose first half writes `pool_addr`, v4-mapped) proved itself:
/// its address stays its own (`take` passes it by). From the connection table.
#[inline(always)]
pub fn confirmed_client(client: &Addr6, pool_addr: &Addr6) {
    if let Some(m) = NAT46_CLIENTS.get_ptr_mut(client) {
        // SAFETY: a pointer into the map's value; racing writers only write the time and
        // set this bit.
        unsafe {
            if as_ipv4(pool_addr) == Some((*m).addr) {
                (*m).flags |= NAT46_CONFIRMED;
            }
        }
    }
}

/// The verdict code of a decision that hands the packet to `uplink_nat46` or
/// `endpoint_nat46` (never returned to the kernel).
pub const TO_NAT46: i32 = i32::MIN;

/// Whether the packet a container sends is addressed into the pool: a reply to a NAT46
/// client, for `endpoint_nat46` (nothing else to the pool leaves the node).
#[inline(never)]
pub fn to_pool(ctx: &TcContext) -> bool {
    ctx.load::<u32>(crate::parse::IP_DST_OFF).is_ok_and(in_pool)
}

/// Whether `addr` (network order) is an address of NAT46's pool, while NAT46 is on: only
/// NAT46's translation writes such a source, so an IPv4 packet from the LAN with one is
/// forged (a container would take it for that IPv6 client's).
#[inline(never)]
pub fn in_pool(addr: u32) -> bool {
    pool().is_some_and(|(base, len)| u32::from_be(addr).wrapping_sub(base) < len)
}

/// `__sk_buff.cb[0]` as `endpoint_nat46` finds it: the node's own ICMP error, handed over
/// by `uplink_egress` (anything else: a container's packet, from `endpoint_ingress`).
const FROM_NODE: u32 = 0x4e34_3645;

/// Who hands `endpoint_nat46` its packet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// A container, at its veth's ingress: it speaks only for itself.
    Container,
    /// The node's own stack, at the uplink's egress: an ICMP error it sent a client's pool
    /// address (Time Exceeded for a packet that came with hop limit 1, Fragmentation
    /// Needed on the way to a container of a narrower MTU).
    Node,
}

/// From `endpoint_ingress`: hand a packet to the pool to `endpoint_nat46`.
#[inline(always)]
pub fn hand_over_reply(ctx: &TcContext) -> i32 {
    hand_over_from(ctx, 0);
    crate::endpoint::finish(ctx, (Reason::DropIpv6DispatchFailed, DROP))
}

/// From `uplink_egress`: hand the node's ICMP error to a pool address to
/// `endpoint_nat46`, which translates it for the client (or drops it).
#[inline(always)]
pub fn hand_over_node_error(ctx: &TcContext) -> i32 {
    hand_over_from(ctx, FROM_NODE);
    finish(ctx, Hook::UplinkEgress, (Reason::DropNat46PoolLeak, DROP))
}

#[inline(always)]
fn hand_over_from(ctx: &TcContext, sender: u32) {
    // SAFETY: cb[] is the program's scratch space in the skb, kept across a tail call.
    unsafe { (*ctx.skb.skb).cb[0] = sender };
    // SAFETY: a tail call replaces this program's run with the callee's; on return
    // nothing happened and the caller's fallback decides.
    unsafe { crate::maps::CALLS.tail_call(ctx, netd_common::maps::CALL_ENDPOINT_NAT46) };
}

/// Whether the packet leaving by the uplink is the node's own ICMP error to an address of
/// the pool (for `endpoint_nat46`; anything else to the pool is dropped there: nothing to
/// it belongs on the network). Out of line: the IPv4 uplink's frame is at its limit.
#[inline(never)]
pub fn node_error_to_pool(ctx: &TcContext) -> bool {
    is_icmp4(ctx)
        && !crate::uplink::sent_by_another_host(ctx)
        && ctx.load::<u32>(crate::parse::IP_DST_OFF).is_ok_and(in_pool)
}

/// `endpoint_nat46`: a container's reply to a NAT46 client, translated to IPv6 and sent
/// out of the uplink the client came in by (the network's bridge may have IPv6 off); or
/// the node's own ICMP error about a client's packet (`hand_over_node_error`).
pub fn reply(ctx: &TcContext) -> i32 {
    // SAFETY: as in `hand_over_from`.
    let sender = match unsafe { (*ctx.skb.skb).cb[0] } {
        FROM_NODE => Sender::Node,
        _ => Sender::Container,
    };
    // An ICMPv4 error about a NAT46 flow's packet (a UDP port nobody listens on, above
    // all) goes to the client as ICMPv6 from the address it called.
    let (decided, reason) = if is_icmp4(ctx) {
        (decide_error_reply(ctx, sender), Reason::IcmpErrorTranslated)
    } else {
        (decide_reply(ctx), Reason::Nat46)
    };
    let verdict = match decided {
        // SAFETY: the helper takes no neighbour parameters (null, 0): it looks the next
        // hop up in the FIB itself.
        Ok(ifindex) => (
            reason,
            unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) } as i32,
        ),
        Err(reason) => (reason, DROP),
    };
    // Reported as the IPv6 packets they now are.
    match sender {
        Sender::Container => crate::endpoint::finish6(ctx, verdict),
        Sender::Node => program::finish6(ctx, Hook::UplinkEgress, verdict),
    }
}

/// Whether the container's packet is ICMP.
#[inline(never)]
fn is_icmp4(ctx: &TcContext) -> bool {
    ctx.load::<u8>(crate::parse::IP_PROTO_OFF) == Ok(netd_common::PROTO_ICMP)
}

#[inline(never)]
fn decide_error_reply(ctx: &TcContext, sender: Sender) -> Result<u32, Reason> {
    let err = xlat::icmp4_error(ctx).ok_or(Reason::DropNat46Untranslatable)?;
    // The container speaks only for what it received itself; the node for what it
    // forwarded. Either, only to whom sent it.
    if (sender == Sender::Container && err.src != err.quoted_dst) || err.dst != err.quoted_src {
        return Err(Reason::DropNat46NoFlow);
    }
    let scratch = scratch6().ok_or(Reason::DropFlowTableFull)?;
    let to = error_reply_flow(&err, &mut scratch.entry).ok_or(Reason::DropNat46NoFlow)?;
    xlat::icmp4_error_to_v6(ctx, &err, &to).map_err(|_| Reason::DropRewriteFailed)?;
    Ok(scratch.entry.ifindex)
}

/// The IPv6 ends of the NAT46 flow whose packet `err` quotes (the client's, as
/// translated: the flow's reply half is the quote reversed), its half into `entry`.
#[inline(never)]
fn error_reply_flow(err: &xlat::Icmp4Error, entry: &mut FlowEntry6) -> Option<xlat::ErrorTo6> {
    let key = netd_common::flow::FlowKey6 {
        src_addr: mapped(err.quoted_dst),
        dst_addr: mapped(err.quoted_src),
        src_port: err.quoted_dst_port,
        dst_port: err.quoted_src_port,
        proto: err.quoted_proto,
        dir: netd_common::flow::DIR_EGRESS,
        _pad: [0; 2],
    };
    // SAFETY: a pointer into a map's value, copied at once.
    *entry = unsafe { *conntrack::find_mut(&key)? };
    if entry.origin != ORIGIN_NAT46 || !holds(err.quoted_src, &entry.dst_addr) {
        return None;
    }
    Some(xlat::ErrorTo6 {
        src: entry.src_addr,
        dst: entry.dst_addr,
        quoted_src_port: entry.dst_port,
        quoted_dst_port: entry.src_port,
    })
}

#[inline(never)]
fn decide_reply(ctx: &TcContext) -> Result<u32, Reason> {
    let pkt = program::packet(ctx).map_err(|_| Reason::DropNat46Untranslatable)?;
    if pkt.fragment != Fragment::Whole
        || (pkt.proto != netd_common::PROTO_TCP && pkt.proto != netd_common::PROTO_UDP)
    {
        return Err(Reason::DropNat46Untranslatable);
    }
    if pkt.proto == netd_common::PROTO_UDP
        && ctx
            .load::<u16>(pkt.l4_csum_off as usize)
            .map_or(true, |c| c == 0)
    {
        return Err(Reason::DropNat46Untranslatable);
    }
    if !fits_uplink(ctx, pkt.ip_len) {
        return Err(Reason::DropNat46TooBig);
    }
    let scratch = scratch6().ok_or(Reason::DropFlowTableFull)?;
    reply_flow(&Mapped(&pkt), &mut scratch.entry)?;
    if !holds(pkt.dst_addr, &scratch.entry.dst_addr) {
        return Err(Reason::DropNat46AddressLost);
    }
    to_ipv6(ctx, &pkt, &scratch.entry)?;
    Ok(scratch.entry.ifindex)
}

/// The reply half of the flow `pkt` belongs to, counted, into `entry`. A subprogram, as
/// `to_ipv6`: the key and the entry's copy are not held while the packet is translated.
#[inline(never)]
fn reply_flow(pkt: &Mapped, entry: &mut FlowEntry6) -> Result<(), Reason> {
    let key = conntrack::key_of(pkt, netd_common::flow::DIR_EGRESS);
    *entry = conntrack::lookup(&key, pkt).ok_or(Reason::DropNat46NoFlow)?;
    Ok(())
}

/// `pkt` rewritten as IPv6 from the flow's published address and port to its client.
#[inline(never)]
fn to_ipv6(ctx: &TcContext, pkt: &crate::parse::Packet, entry: &FlowEntry6) -> Result<(), Reason> {
    let to = xlat::To6 {
        src: entry.src_addr,
        dst: entry.dst_addr,
        src_port: entry.src_port,
    };
    xlat::v4_to_v6(ctx, pkt, &to).map_err(|_| Reason::DropRewriteFailed)
}

/// An IPv4 packet as the IPv6 table holds NAT46 flows: its addresses v4-mapped.
struct Mapped<'a>(&'a crate::parse::Packet);

impl conntrack::Tracked<Addr6> for Mapped<'_> {
    #[inline(always)]
    fn tuple(&self) -> Tuple<Addr6> {
        Tuple {
            src_addr: mapped(self.0.src_addr),
            dst_addr: mapped(self.0.dst_addr),
            src_port: self.0.src_port,
            dst_port: self.0.dst_port,
        }
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.0.proto
    }
    #[inline(always)]
    fn seen(&self) -> u8 {
        self.0.seen
    }
    #[inline(always)]
    fn ip_len(&self) -> u16 {
        self.0.ip_len
    }
}
