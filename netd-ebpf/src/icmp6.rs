//! ICMPv6 errors that quote a translated packet (destination unreachable, packet too
//! big, time exceeded, parameter problem) belong to the quoted packet's flow, as for IPv4
//! (`icmp`): found under the quote reversed, and translated as the flow's packets in
//! their direction are. IPv6 routers never fragment, so without Packet Too Big reaching
//! the container path MTU discovery breaks and a connection through a narrower hop
//! stalls. The ICMPv6 checksum covers the error's own addresses (its pseudo header) and
//! the quote; the quoted packet's own L4 checksum is left as it was (nobody verifies a
//! truncated quote). Only quotes of TCP, UDP and ICMPv6 echo straight after the fixed
//! header are translated; other errors go on as any packet.

use aya_ebpf::programs::TcContext;
use netd_common::{
    PROTO_TCP, PROTO_UDP,
    counters::Reason,
    flow::{DIR_INGRESS, FlowEntry6, FlowKey6, ORIGIN_NAT46},
    maps::Addr6,
};

use crate::{
    conntrack::find_mut,
    csum,
    maps::scratch6,
    nat::Nat,
    parse::Fragment,
    parse6::{
        IP6_DST_OFF, IP6_HDR_LEN, IP6_SRC_OFF, PROTO_ICMPV6, Packet6, echo_ports, parse_frame,
    },
    program::{DROP, PASS, Verdict},
};

const ICMP6_DEST_UNREACH: u8 = 1;
const ICMP6_PARAM_PROBLEM: u8 = 4;
/// The ICMPv6 header before the quote.
const ICMP6_HDR_LEN: usize = 8;

/// An ICMPv6 error's quoted packet: its ends, and where they are.
struct Quote {
    src: Addr6,
    dst: Addr6,
    /// The ICMPv6 header.
    icmp_off: u16,
    /// The quoted fixed header.
    off: u16,
    src_port: u16,
    dst_port: u16,
    src_port_off: u16,
    dst_port_off: u16,
    proto: u8,
}

/// An ICMPv6 error seen at `dir` about a flow, translated as its flow's packets are (the
/// flow's half is left in this CPU's `SCRATCH6`, for how it is delivered); `None` when
/// the packet is no such error (it is then judged as any packet). A subprogram, as are
/// its steps: the programs do not hold their stack while they handle the others, and the
/// quote, the packet and the flow are never all on one frame.
#[inline(never)]
pub fn translate_error_of_flow(ctx: &TcContext, dir: u8) -> Option<Verdict> {
    let quote = error_quote(ctx)?;
    // Sent by one of the node's ends (leaving by the uplink, or from a container's
    // veth): only about what that end received.
    if dir != DIR_INGRESS && !sent_by_quoted_receiver(ctx, &quote) {
        return None;
    }
    let key = FlowKey6 {
        src_addr: quote.dst,
        dst_addr: quote.src,
        src_port: quote.dst_port,
        dst_port: quote.src_port,
        proto: quote.proto,
        dir,
        _pad: [0; 2],
    };
    let found = find_mut(&key)?;
    let scratch = scratch6()?;
    // SAFETY: a copy out of a map value (see `conntrack::lookup`).
    scratch.entry = unsafe { *found };
    let entry = &scratch.entry;
    // A NAT46 flow's error becomes ICMPv4, in `uplink_nat46`; its flows have no IPv6
    // end anywhere else.
    if entry.origin == ORIGIN_NAT46 {
        return Some(if dir == DIR_INGRESS {
            (Reason::IcmpErrorTranslated, crate::nat46::TO_NAT46)
        } else {
            (Reason::DropNat46Untranslatable, DROP)
        });
    }
    let hides_source = entry.src_addr != key.src_addr;
    Some(if translate(ctx, &quote, entry, hides_source) {
        (Reason::IcmpErrorTranslated, PASS)
    } else {
        (Reason::DropRewriteFailed, DROP)
    })
}

/// Leaving the node or a container, an error speaks for the quoted packet's receiver:
/// sent by it (a container about what it received), or by the node (about what it
/// forwarded), never by a container about another's flow. A subprogram: its lookups stay off the frame
/// `error_quote` is called under.
#[inline(never)]
fn sent_by_quoted_receiver(ctx: &TcContext, quote: &Quote) -> bool {
    match ctx.load::<Addr6>(IP6_SRC_OFF) {
        Ok(src) => src == quote.dst || Addr6::is_node_addr(src),
        Err(_) => false,
    }
}

/// The packet an ICMPv6 error quotes, when it is TCP, UDP or an echo with its ports (the
/// identifier) within the error, and the error goes to its source: one addressed
/// anywhere else is not that flow's (else any party to a flow could send errors
/// anywhere, translated).
#[inline(never)]
fn error_quote(ctx: &TcContext) -> Option<Quote> {
    let pkt = parse_frame(ctx).ok()?;
    if pkt.proto != PROTO_ICMPV6 || pkt.fragment != Fragment::Whole {
        return None;
    }
    let quote = quote_of(ctx, &pkt)?;
    (pkt.dst == quote.src).then_some(quote)
}

#[inline(always)]
fn quote_of(ctx: &TcContext, pkt: &Packet6) -> Option<Quote> {
    let icmp: [u8; 2] = ctx.load(pkt.l4_off).ok()?;
    if !(ICMP6_DEST_UNREACH..=ICMP6_PARAM_PROBLEM).contains(&icmp[0]) {
        return None;
    }
    let off = pkt.l4_off + ICMP6_HDR_LEN;
    let l4 = off + IP6_HDR_LEN;
    if l4 + 8 > pkt.end {
        return None;
    }
    let fixed: [u8; 8] = ctx.load(off).ok()?;
    if fixed[0] >> 4 != 6 {
        return None;
    }
    let proto = fixed[6];
    let head: [u8; 8] = ctx.load(l4).ok()?;
    let (src_port, dst_port, src_port_off, dst_port_off) = match proto {
        PROTO_TCP | PROTO_UDP => (
            u16::from_ne_bytes([head[0], head[1]]),
            u16::from_ne_bytes([head[2], head[3]]),
            l4,
            l4 + 2,
        ),
        PROTO_ICMPV6 => {
            let (src, dst) = echo_ports(&head).ok()?;
            (src, dst, l4 + 4, l4 + 4)
        }
        _ => return None,
    };
    Some(Quote {
        src: ctx.load(off + 8).ok()?,
        dst: ctx.load(off + 24).ok()?,
        icmp_off: pkt.l4_off as u16,
        off: off as u16,
        src_port,
        dst_port,
        src_port_off: src_port_off as u16,
        dst_port_off: dst_port_off as u16,
        proto,
    })
}

/// Translate an ICMPv6 error as its flow's half `entry` translates packets: the error
/// goes to the translated destination, a source the flow hides (a masqueraded end) is
/// hidden in the error too, whoever on the way sent it, and the quote's ends become the
/// ones the flow's other side knows (the quoted packet went the other way: its source is
/// the flow's destination end). Whether all of it was written.
#[inline(never)]
fn translate(ctx: &TcContext, quote: &Quote, entry: &FlowEntry6, hides_source: bool) -> bool {
    rewrite(ctx, quote, entry, hides_source).is_ok()
}

#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    quote: &Quote,
    entry: &FlowEntry6,
    hides_source: bool,
) -> Result<(), i64> {
    let csum_off = quote.icmp_off as usize + 2;
    let off = quote.off as usize;
    let own = csum::l4_flags6(PROTO_ICMPV6);
    // `error_quote` saw to it that the error goes to the quoted packet's source.
    if quote.src != entry.dst_addr {
        csum::addr6_changed(ctx, csum_off, own, IP6_DST_OFF, &quote.src, &entry.dst_addr)?;
    }
    if hides_source {
        let src: Addr6 = ctx.load(IP6_SRC_OFF)?;
        if src != entry.src_addr {
            csum::addr6_changed(ctx, csum_off, own, IP6_SRC_OFF, &src, &entry.src_addr)?;
        }
    }
    quoted_end(ctx, csum_off, off + 8, &quote.src, &entry.dst_addr)?;
    quoted_end(ctx, csum_off, off + 24, &quote.dst, &entry.src_addr)?;
    let (src_port_off, dst_port_off) = (quote.src_port_off as usize, quote.dst_port_off as usize);
    quoted_port(ctx, csum_off, src_port_off, quote.src_port, entry.dst_port)?;
    quoted_port(ctx, csum_off, dst_port_off, quote.dst_port, entry.src_port)?;
    Ok(())
}

/// A quoted address (only the ICMPv6 checksum covers it).
#[inline(always)]
fn quoted_end(
    ctx: &TcContext,
    csum_off: usize,
    off: usize,
    old: &Addr6,
    new: &Addr6,
) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    csum::addr6_changed(ctx, csum_off, 0, off, old, new)
}

/// A quoted port (or echo identifier).
#[inline(always)]
fn quoted_port(
    ctx: &TcContext,
    csum_off: usize,
    off: usize,
    old: u16,
    new: u16,
) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    csum::field6_changed(ctx, csum_off, 0, old, new)?;
    ctx.store(off, &new, 0)
}
