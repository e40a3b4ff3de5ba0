//! `netd monitor`: drops, new flows and translations sent to the daemon through a ring
//! buffer while a monitor is attached. With none, a packet costs one read of the config's
//! `types` (an array lookup the verifier inlines) and a branch, at its verdict: the event
//! code is in a subprogram that is never called. Sampling and a per-CPU rate limit keep a
//! flood from flooding the daemon; what they and a full ring hold back is counted lost.

use aya_ebpf::maps::ring_buf::RingBufEntry;
use netd_common::{
    PROTO_TCP,
    counters::{Hook, Reason},
    flow::{
        DIR_EGRESS, DIR_FROM_ENDPOINT, DIR_INGRESS, FLAG_END_REPORTED, FlowEntry, FlowKey, SECOND,
        SEEN_CLOSED, SEEN_FIN, SEEN_RST,
    },
    maps::Addr6,
    monitor::{
        ENDED_FIN, ENDED_RESET, EVENT_DROP, EVENT_DROP6, EVENT_FLOW_END, EVENT_FLOW_NEW,
        EVENT_TRACE, EventTuple, MONITOR_DROP, MONITOR_FLOW, MONITOR_TRACE, MonitorEvent,
    },
};

use crate::{
    conntrack::{find, find_mut, now},
    maps::{MONITOR_CONFIG, MONITOR_EVENTS, MONITOR_STATE},
    parse::{ETH_TYPE_OFF, Frame, IP_PROTO_OFF, L4_OFF, Packet, parse_ipv4_l4},
    parse6::{ETH_P_IPV6, IP6_DST_OFF, IP6_SRC_OFF},
};

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
/// monitored, a translation when flows (its first packet) or translations are.
#[inline(always)]
pub fn verdict<F: Frame>(ctx: &F, hook: Hook, reason: Reason, ifindex: u32, len: u32) {
    if wanted() != 0 {
        events_of_verdict(ctx, hook, reason, ifindex, len);
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
    if matches!(
        reason,
        Reason::DnatNew
            | Reason::SnatNew
            | Reason::HairpinNew
            | Reason::TrackedNew
            | Reason::DnatReply
            | Reason::SnatReply
            | Reason::Established
    ) && wanted & (MONITOR_FLOW | MONITOR_TRACE) != 0
    {
        // Flows alone: only a new flow's first packet and a closing one are of interest,
        // told without parsing the rest.
        let new = matches!(
            reason,
            Reason::DnatNew | Reason::SnatNew | Reason::HairpinNew | Reason::TrackedNew
        );
        if wanted & MONITOR_TRACE == 0 && !new && !tcp_closing(ctx) {
            return;
        }
        translated(ctx, hook, reason, wanted, ifindex, len);
    }
}

/// A TCP segment with FIN or RST. Only for translated packets, which never carry IP
/// options: the TCP header is at a fixed offset.
#[inline(always)]
fn tcp_closing<F: Frame>(ctx: &F) -> bool {
    const TCP_FLAGS_OFF: usize = L4_OFF + 13;
    const FIN_RST: u8 = 0x01 | 0x04;
    ctx.load::<u8>(IP_PROTO_OFF) == Ok(PROTO_TCP)
        && ctx
            .load::<u8>(TCP_FLAGS_OFF)
            .is_ok_and(|flags| flags & FIN_RST != 0)
}

#[inline(always)]
fn dropped<F: Frame>(ctx: &F, hook: Hook, reason: Reason, ifindex: u32, len: u32) {
    let pkt = parse_ipv4_l4(ctx);
    let Some(mut slot) = reserve() else {
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
                write_tuple(&mut (*e).before, &pkt);
                write_tuple(&mut (*e).after, &pkt);
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
/// theirs.
#[inline(always)]
fn translated<F: Frame>(ctx: &F, hook: Hook, reason: Reason, wanted: u32, ifindex: u32, len: u32) {
    let Ok(after) = parse_ipv4_l4(ctx) else {
        return;
    };
    let mut key = FlowKey {
        src_addr: after.dst_addr,
        dst_addr: after.src_addr,
        src_port: after.dst_port,
        dst_port: after.src_port,
        proto: after.proto,
        dir: replies_at(hook),
        _pad: [0; 2],
    };
    let mut reply = find(&key);
    if reply.is_none() && hook == Hook::EndpointIngress {
        key.dir = DIR_INGRESS;
        reply = find(&key);
    }
    let Some((_, reply)) = reply else {
        return;
    };
    let new = matches!(
        reason,
        Reason::DnatNew | Reason::SnatNew | Reason::HairpinNew | Reason::TrackedNew
    );
    let kind = if new && wanted & MONITOR_FLOW != 0 {
        EVENT_FLOW_NEW
    } else if wanted & MONITOR_TRACE != 0 {
        EVENT_TRACE
    } else {
        0
    };
    if kind != 0
        && let Some(mut slot) = reserve()
    {
        let e = slot.as_mut_ptr();
        // SAFETY: the reserved event is ours until it is submitted (see `reserve`).
        unsafe {
            (*e).kind = kind;
            (*e).reason = reason as u8;
            (*e).origin = reply.origin;
            (*e).ifindex = ifindex;
            (*e).endpoint = reply.ifindex;
            (*e).len = len;
            (*e).before = EventTuple {
                src_addr: reply.dst_addr,
                dst_addr: reply.src_addr,
                src_port: reply.dst_port,
                dst_port: reply.src_port,
                proto: after.proto,
                _pad: [0; 3],
            };
            write_tuple(&mut (*e).after, &after);
        }
        slot.submit(0);
    }
    if wanted & MONITOR_FLOW != 0 && after.seen & SEEN_CLOSED != 0 {
        ended(&key, &reply, reason, ifindex);
    }
}

/// After a FIN or a reset: the flow's end is sent once both sides sent their FIN, or
/// either a reset, with its packets, bytes and age; marked on its first half
/// (`FLAG_END_REPORTED`, cleared when a new connection takes the tuple) so that it is
/// sent once.
#[inline(always)]
fn ended(reply_key: &FlowKey, reply: &FlowEntry, reason: Reason, ifindex: u32) {
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
        Some(this as *mut FlowEntry)
    } else {
        find_mut(first_key)
    };
    let Some(first_ptr) = first_ptr else {
        return;
    };
    // SAFETY: a pointer into a map's value, as above.
    let first = unsafe { &mut *first_ptr };
    first.flags |= FLAG_END_REPORTED;
    let Some(mut slot) = reserve() else {
        return;
    };
    let e = slot.as_mut_ptr();
    // SAFETY: the reserved event is ours until it is submitted (see `reserve`).
    unsafe {
        (*e).kind = EVENT_FLOW_END;
        (*e).hook = how;
        (*e).reason = reason as u8;
        (*e).origin = first.origin;
        (*e).ifindex = ifindex;
        (*e).endpoint = first.ifindex;
        (*e).before = EventTuple {
            src_addr: first_key.src_addr,
            dst_addr: first_key.dst_addr,
            src_port: first_key.src_port,
            dst_port: first_key.dst_port,
            proto: first_key.proto,
            _pad: [0; 3],
        };
        (*e).after = EventTuple {
            src_addr: first.src_addr,
            dst_addr: first.dst_addr,
            src_port: first.src_port,
            dst_port: first.dst_port,
            proto: first_key.proto,
            _pad: [0; 3],
        };
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

#[inline(always)]
fn write_tuple(t: &mut EventTuple, pkt: &Packet) {
    t.src_addr = pkt.src_addr;
    t.dst_addr = pkt.dst_addr;
    t.src_port = pkt.src_port;
    t.dst_port = pkt.dst_port;
    t.proto = pkt.proto;
}

/// Sample and rate-limit (this CPU's state), then reserve an event in the ring, zeroed
/// and timed, for the caller to fill and submit: written in place, not through the stack.
/// `None` when sampled out, over the rate or the ring is full (the last two counted lost).
#[inline(always)]
fn reserve() -> Option<RingBufEntry<MonitorEvent>> {
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
    let Some(mut slot) = MONITOR_EVENTS.reserve::<MonitorEvent>(0) else {
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
