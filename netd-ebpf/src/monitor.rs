//! `netd monitor`: drops, new flows and translations sent to the daemon through a ring
//! buffer while a monitor is attached. With none, a packet costs one read of the config's
//! `types` (an array lookup the verifier inlines) and a branch, at its verdict: the event
//! code is in a subprogram that is never called. Sampling and a per-CPU rate limit keep a
//! flood from flooding the daemon; what they and a full ring hold back is counted lost.

use aya_ebpf::maps::ring_buf::RingBufEntry;
use netd_common::{
    PROTO_TCP, PROTO_UDP,
    counters::{Hook, Reason},
    flow::{
        DIR_EGRESS, DIR_FROM_ENDPOINT, DIR_INGRESS, FLAG_END_REPORTED, FlowEntryOf, FlowKeyOf,
        SECOND, SEEN_CLOSED, SEEN_FIN, SEEN_PACKET, SEEN_RST,
    },
    maps::Addr6,
    monitor::{
        ENDED_FIN, ENDED_RESET, EVENT_DROP, EVENT_DROP6, EVENT_FLOW_END, EVENT_FLOW_NEW,
        EVENT_IPV6, EVENT_TRACE, EventTuple, EventTupleOf, MONITOR_DROP, MONITOR_FLOW,
        MONITOR_TRACE, MonitorEventOf,
    },
};

use crate::{
    conntrack::{Family, Tracked, Tuple, find_mut, now},
    maps::{MONITOR_CONFIG, MONITOR_EVENTS, MONITOR_STATE},
    parse::{ETH_TYPE_OFF, Frame, IP_PROTO_OFF, L4_OFF, parse_ipv4_l4, seen_bits},
    parse6::{
        ETH_P_IPV6, IP6_DST_OFF, IP6_SRC_OFF, PROTO_ICMPV6, Packet6, echo_ports, parse_frame,
    },
};

/// An address family's events: the layout's bit in `kind` (see `EVENT_IPV6`).
trait Events: Family {
    const KIND: u8;
}

impl Events for u32 {
    const KIND: u8 = 0;
}

impl Events for Addr6 {
    const KIND: u8 = EVENT_IPV6;
}

/// The `MONITOR_*` bits a monitor asked for (0 with none attached).
#[inline(always)]
fn wanted() -> u32 {
    match MONITOR_CONFIG.get_ptr(0) {
        // SAFETY: a pointer into the array's only value, read at once.
        Some(config) => unsafe { (*config).types },
        None => 0,
    }
}

/// A program's verdict, the end of every packet: a drop is sent when drops are
/// monitored, a translation when flows (its first packet) or translations are. For the
/// IPv4 programs, which translate no IPv6 (they hand it over: `verdict6`).
#[inline(always)]
pub fn verdict<F: Frame>(ctx: &F, hook: Hook, reason: Reason, ifindex: u32, len: u32) {
    if wanted() != 0 {
        events_of_verdict(ctx, hook, reason, ifindex, len);
    }
}

/// `verdict` for the programs IPv6 frames are handed to: an IPv6 packet's translation is
/// reported from its upper-layer header, wherever its extension headers put it.
#[inline(always)]
pub fn verdict6<F: Frame>(ctx: &F, hook: Hook, reason: Reason, ifindex: u32, len: u32) {
    if wanted() != 0 {
        if !reason.is_drop() && is_ipv6_frame(ctx) {
            events_of_translation6(ctx, hook, reason, ifindex, len);
        } else {
            events_of_verdict(ctx, hook, reason, ifindex, len);
        }
    }
}

/// A subprogram called from the programs' entry points only: the event code never adds to
/// the stack of the deep paths where flows are created, which are near the 512-byte limit.
#[inline(never)]
fn events_of_verdict<F: Frame>(ctx: &F, hook: Hook, reason: Reason, ifindex: u32, len: u32) {
    let wanted = wanted();
    if reason.is_drop() {
        if wanted & MONITOR_DROP != 0 {
            dropped(ctx, hook, reason, ifindex, len);
        }
        return;
    }
    let at = At {
        hook,
        reason,
        wanted,
        ifindex,
        len,
        new: false,
    };
    let proto = ctx.load::<u8>(IP_PROTO_OFF).unwrap_or(0);
    if let Some(at) = reported(ctx, at, proto, L4_OFF)
        && let Ok(after) = parse_ipv4_l4(ctx)
    {
        translated(&after.tuple(), after.proto, after.seen, &at);
    }
}

/// `events_of_verdict` for an IPv6 packet's translation: a subprogram of its own, right
/// under the IPv6 programs' entry points (an IPv6 tuple and key take more room than
/// IPv4's, and the chain of extension headers is walked to the upper layer). A fragment
/// after the first carries no upper-layer header: it is not reported.
#[inline(never)]
fn events_of_translation6<F: Frame>(ctx: &F, hook: Hook, reason: Reason, ifindex: u32, len: u32) {
    let Ok(pkt) = parse_frame(ctx) else {
        return;
    };
    if !pkt.has_l4_header() {
        return;
    }
    let at = At {
        hook,
        reason,
        wanted: wanted(),
        ifindex,
        len,
        new: false,
    };
    if let Some(at) = reported(ctx, at, pkt.proto, pkt.l4_off) {
        translated6(ctx, &pkt, &at);
    }
}

/// Whether a translation is reported (`at`, with whether it is a new flow's): not when
/// the verdict is no translation or neither flows nor translations are monitored; with
/// flows alone, only a new flow's first packet and a closing one (its upper layer `proto`
/// at `l4_off`) are of interest, told without parsing the rest.
#[inline(always)]
fn reported<F: Frame>(ctx: &F, mut at: At, proto: u8, l4_off: usize) -> Option<At> {
    let reason = at.reason;
    let translation = matches!(
        reason,
        Reason::DnatNew
            | Reason::SnatNew
            | Reason::HairpinNew
            | Reason::TrackedNew
            | Reason::DnatReply
            | Reason::SnatReply
            | Reason::Established
    );
    let new = matches!(
        reason,
        Reason::DnatNew | Reason::SnatNew | Reason::HairpinNew | Reason::TrackedNew
    );
    if !translation || at.wanted & (MONITOR_FLOW | MONITOR_TRACE) == 0 {
        return None;
    }
    if at.wanted & MONITOR_TRACE == 0 && !new && !tcp_closing(ctx, proto, l4_off) {
        return None;
    }
    at.new = new;
    Some(at)
}

/// Where and why a translated packet is reported: its program's verdict.
struct At {
    hook: Hook,
    reason: Reason,
    wanted: u32,
    ifindex: u32,
    len: u32,
    /// The translation is a new flow's first packet.
    new: bool,
}

/// A TCP segment (upper layer `proto` at `l4_off`) with FIN or RST. A translated IPv4
/// packet never carries IP options: its TCP header is at a fixed offset.
#[inline(always)]
fn tcp_closing<F: Frame>(ctx: &F, proto: u8, l4_off: usize) -> bool {
    const FIN_RST: u8 = 0x01 | 0x04;
    proto == PROTO_TCP
        && ctx
            .load::<u8>(l4_off + 13)
            .is_ok_and(|flags| flags & FIN_RST != 0)
}

/// An IPv6 packet translated (`pkt`, its chain walked), its upper layer read: the
/// packets netd translates are TCP, UDP and ICMPv6 echo.
#[inline(always)]
fn translated6<F: Frame>(ctx: &F, pkt: &Packet6, at: &At) {
    let l4 = pkt.l4_off;
    let Ok(head) = ctx.load::<[u8; 8]>(l4) else {
        return;
    };
    let proto = pkt.proto;
    let (src_port, dst_port, seen) = match proto {
        PROTO_TCP => match ctx.load::<u8>(l4 + 13) {
            Ok(flags) => (
                u16::from_ne_bytes([head[0], head[1]]),
                u16::from_ne_bytes([head[2], head[3]]),
                seen_bits(flags),
            ),
            Err(_) => return,
        },
        PROTO_UDP => (
            u16::from_ne_bytes([head[0], head[1]]),
            u16::from_ne_bytes([head[2], head[3]]),
            SEEN_PACKET,
        ),
        PROTO_ICMPV6 => match echo_ports(&head) {
            Ok((src_port, dst_port)) => (src_port, dst_port, SEEN_PACKET),
            Err(_) => return,
        },
        _ => return,
    };
    let after = Tuple {
        src_addr: pkt.src,
        dst_addr: pkt.dst,
        src_port,
        dst_port,
    };
    translated(&after, proto, seen, at);
}

#[inline(never)]
fn dropped<F: Frame>(ctx: &F, hook: Hook, reason: Reason, ifindex: u32, len: u32) {
    let pkt = parse_ipv4_l4(ctx);
    let Some(mut slot) = reserve::<u32>() else {
        return;
    };
    let e = slot.as_mut_ptr();
    // SAFETY: the reserved event is ours until it is submitted (see `reserve`).
    unsafe {
        (*e).kind = EVENT_DROP;
        (*e).hook = hook as u8;
        (*e).reason = reason as u8;
        (*e).ifindex = ifindex;
        (*e).len = len;
        match pkt {
            Ok(pkt) => {
                write_tuple(&mut (*e).before, &pkt.tuple(), pkt.proto);
                write_tuple(&mut (*e).after, &pkt.tuple(), pkt.proto);
            }
            // IPv6: its addresses, each in a tuple's 16 bytes.
            Err(_) if is_ipv6_frame(ctx) => {
                (*e).kind = EVENT_DROP6;
                let addrs = (
                    ctx.load::<Addr6>(IP6_SRC_OFF),
                    ctx.load::<Addr6>(IP6_DST_OFF),
                );
                if let (Ok(src), Ok(dst)) = addrs {
                    *(&mut (*e).before as *mut EventTuple).cast::<Addr6>() = src;
                    *(&mut (*e).after as *mut EventTuple).cast::<Addr6>() = dst;
                }
            }
            // Another ethertype, or a malformed header: no tuple.
            Err(_) => {}
        }
    }
    slot.submit(0);
}

#[inline(always)]
fn is_ipv6_frame<F: Frame>(ctx: &F) -> bool {
    ctx.load::<u16>(ETH_TYPE_OFF) == Ok(ETH_P_IPV6.to_be())
}

/// A translated packet, as it leaves: a new flow's first packet (flows monitored), any
/// translation (translations monitored), and the end of its flow when this packet ends
/// it (flows monitored). Its tuple before translation is the reversed translation of its
/// flow's other half, which the replies are looked up with (keyed by the packet's tuple
/// as written, reversed): found where the hook's flows keep their replies, or, at a
/// container's veth, also where the fast path's (masquerade, published ports) keep
/// theirs. One copy for both families; the other half is read in place, not copied (the
/// IPv4 uplink's entry frame leaves little room below it).
#[inline(always)]
fn translated<A: Events>(t: &Tuple<A>, proto: u8, seen: u8, at: &At) {
    let mut key = FlowKeyOf {
        src_addr: t.dst_addr,
        dst_addr: t.src_addr,
        src_port: t.dst_port,
        dst_port: t.src_port,
        proto,
        dir: replies_at(at.hook),
        _pad: [0; 2],
    };
    let mut reply = find_mut(&key);
    if reply.is_none() && at.hook == Hook::EndpointIngress {
        key.dir = DIR_INGRESS;
        reply = find_mut(&key);
    }
    let Some(reply) = reply else {
        return;
    };
    // SAFETY: a pointer into a map's value; racing writers only set bits and add to the
    // counts (see `ended`).
    let reply = unsafe { &*reply };
    let kind = if at.new && at.wanted & MONITOR_FLOW != 0 {
        EVENT_FLOW_NEW
    } else if at.wanted & MONITOR_TRACE != 0 {
        EVENT_TRACE
    } else {
        0
    };
    if kind != 0
        && let Some(mut slot) = reserve::<A>()
    {
        let e = slot.as_mut_ptr();
        // SAFETY: the reserved event is ours until it is submitted (see `reserve`).
        unsafe {
            (*e).kind = kind | A::KIND;
            (*e).reason = at.reason as u8;
            (*e).origin = reply.origin;
            (*e).ifindex = at.ifindex;
            (*e).endpoint = reply.ifindex;
            (*e).len = at.len;
            write_tuple(
                &mut (*e).before,
                &Tuple {
                    src_addr: reply.dst_addr,
                    dst_addr: reply.src_addr,
                    src_port: reply.dst_port,
                    dst_port: reply.src_port,
                },
                proto,
            );
            write_tuple(&mut (*e).after, t, proto);
        }
        slot.submit(0);
    }
    if at.wanted & MONITOR_FLOW != 0 && seen & SEEN_CLOSED != 0 {
        ended(&key, reply, at.reason, at.ifindex);
    }
}

/// After a FIN or a reset: the flow's end is sent once both sides sent their FIN, or
/// either a reset, with its packets, bytes and age; marked on its first half
/// (`FLAG_END_REPORTED`, cleared when a new connection takes the tuple) so that it is
/// sent once.
#[inline(always)]
fn ended<A: Events>(
    reply_key: &FlowKeyOf<A>,
    reply: &FlowEntryOf<A>,
    reason: Reason,
    ifindex: u32,
) {
    let this_key = reply_key.partner(reply);
    let Some(this) = find_mut(&this_key) else {
        return;
    };
    // SAFETY: a pointer into a map's value; racing writers only set bits and add to the
    // counts, so a torn read is harmless (at worst the end is sent twice).
    let this = unsafe { &mut *this };
    let how = if (this.seen | reply.seen) & SEEN_RST != 0 {
        ENDED_RESET
    } else if this.seen & reply.seen & SEEN_FIN != 0 {
        ENDED_FIN
    } else {
        return;
    };
    let (first_key, first_flags) = if this.is_first() {
        (&this_key, this.flags)
    } else {
        (reply_key, reply.flags)
    };
    if first_flags & FLAG_END_REPORTED != 0 {
        return;
    }
    let first_ptr = if this.is_first() {
        Some(this as *mut FlowEntryOf<A>)
    } else {
        find_mut(first_key)
    };
    let Some(first_ptr) = first_ptr else {
        return;
    };
    // SAFETY: a pointer into a map's value, as above.
    let first = unsafe { &mut *first_ptr };
    first.flags |= FLAG_END_REPORTED;
    let Some(mut slot) = reserve::<A>() else {
        return;
    };
    let e = slot.as_mut_ptr();
    // SAFETY: the reserved event is ours until it is submitted (see `reserve`).
    unsafe {
        (*e).kind = EVENT_FLOW_END | A::KIND;
        (*e).hook = how;
        (*e).reason = reason as u8;
        (*e).origin = first.origin;
        (*e).ifindex = ifindex;
        (*e).endpoint = first.ifindex;
        write_tuple(
            &mut (*e).before,
            &Tuple {
                src_addr: first_key.src_addr,
                dst_addr: first_key.dst_addr,
                src_port: first_key.src_port,
                dst_port: first_key.dst_port,
            },
            first_key.proto,
        );
        write_tuple(
            &mut (*e).after,
            &Tuple {
                src_addr: first.src_addr,
                dst_addr: first.dst_addr,
                src_port: first.src_port,
                dst_port: first.dst_port,
            },
            first_key.proto,
        );
        (*e).packets = u64::from(this.packets) + u64::from(reply.packets);
        (*e).bytes = this.bytes + reply.bytes;
        (*e).duration_ns = (*e).time_ns.saturating_sub(first.created_ns);
    }
    slot.submit(0);
}

/// Where the replies of the flows a hook translates are looked up.
#[inline(always)]
fn replies_at(hook: Hook) -> u8 {
    match hook {
        Hook::UplinkEgress => DIR_INGRESS,
        Hook::EndpointIngress => DIR_FROM_ENDPOINT,
        _ => DIR_EGRESS,
    }
}

/// Fill an event's tuple in place (in the ring, not through the stack); the event was
/// zeroed by `reserve`.
#[inline(always)]
fn write_tuple<A: Copy>(into: &mut EventTupleOf<A>, t: &Tuple<A>, proto: u8) {
    into.src_addr = t.src_addr;
    into.dst_addr = t.dst_addr;
    into.src_port = t.src_port;
    into.dst_port = t.dst_port;
    into.proto = proto;
}

/// Sample and rate-limit (this CPU's state), then reserve an event in the ring, zeroed
/// and timed, for the caller to fill and submit: written in place, not through the stack.
/// `None` when sampled out, over the rate or the ring is full (the last two counted lost).
#[inline(always)]
fn reserve<A: Events>() -> Option<RingBufEntry<MonitorEventOf<A>>> {
    let config = MONITOR_CONFIG.get_ptr(0)?;
    let state = MONITOR_STATE.get_ptr_mut(0)?;
    // SAFETY: the config is read field by field; the state is this CPU's slot, which no
    // other program touches while this one runs.
    let (sample, rate, state) = unsafe { ((*config).sample, (*config).rate, &mut *state) };
    if sample > 1 {
        state.offered = state.offered.wrapping_add(1);
        if state.offered % sample != 0 {
            return None;
        }
    }
    let now = now();
    if now.wrapping_sub(state.window_ns) >= SECOND {
        state.window_ns = now;
        state.in_window = 0;
    }
    if rate != 0 && state.in_window >= rate {
        state.lost += 1;
        return None;
    }
    state.in_window += 1;
    let Some(mut slot) = MONITOR_EVENTS.reserve::<MonitorEventOf<A>>(0) else {
        state.lost += 1;
        return None;
    };
    state.sent += 1;
    let event = slot.as_mut_ptr();
    // SAFETY: the reserved entry is ours, sized and aligned for an event, until it is
    // submitted.
    unsafe {
        core::ptr::write_bytes(event, 0, 1);
        (*event).time_ns = now;
    }
    Some(slot)
}
