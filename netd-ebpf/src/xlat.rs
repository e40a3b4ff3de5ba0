//! IP/ICMP translation between the families (RFC 7915) for NAT46: an IPv6 client's
//! TCP/UDP packet rewritten as the IPv4 packet a container without IPv6 can take, and
//! that container's replies back (for `nat46`), and the ICMP errors about such a flow's
//! packets: ICMPv6 ones as the ICMPv4 error the container can take (RFC 7915, 5.2), the
//! container's ICMPv4 ones as the ICMPv6 error its client can (4.2).
//!
//! Both directions only take packets whose upper-layer header follows the fixed header
//! (no IPv6 extension header, no IPv4 option, no fragment): anything else is for the
//! caller to drop with a reason. The length and protocol terms of the two pseudo headers
//! sum the same (the upper-layer length and the protocol, zero-padded), so the L4
//! checksum only follows the address change (`csum_diff` over 32 bytes against 8) and
//! the port.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, bpf_adj_room_mode::BPF_ADJ_ROOM_NET},
    programs::TcContext,
};
use netd_common::{PROTO_ICMP, PROTO_TCP, PROTO_UDP, maps::Addr6};

use crate::{
    csum::{diff, diff_from, folded},
    parse::{ETH_P_IP, ETH_TYPE_OFF, Frame, IP_OFF, Packet},
    parse6::{ETH_P_IPV6, Flow6, IP6_HDR_LEN, IP6_OFF, PROTO_ICMPV6},
};

/// The IPv4 header (20 bytes, no options) an IPv6 packet becomes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Header {
    version_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    src: u32,
    dst: u32,
}

impl Ipv4Header {
    /// Its five words.
    #[inline(always)]
    fn words(self) -> [u32; 5] {
        // SAFETY: 20 bytes of plain integers, aligned as u32.
        unsafe { core::mem::transmute::<Ipv4Header, [u32; 5]>(self) }
    }

    /// The header with its checksum.
    #[inline(always)]
    fn checked(mut self) -> Result<Ipv4Header, i64> {
        self.check = 0;
        self.check = folded(diff(&mut [], &mut self.words())?);
        Ok(self)
    }
}

/// Two ports (or any two 16-bit fields) as the word they make in the packet.
#[inline(always)]
fn word_of(a: u16, b: u16) -> u32 {
    let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
    u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
}

/// The IPv6 fixed header an IPv4 packet becomes.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Header {
    version_class_flow: u32,
    payload_len: u16,
    next_header: u8,
    hop_limit: u8,
    src: Addr6,
    dst: Addr6,
}

/// Where the TCP and UDP checksums sit in their headers.
#[inline(always)]
pub fn csum_at(proto: u8) -> usize {
    if proto == PROTO_UDP { 6 } else { 16 }
}

#[inline(always)]
fn l4_flags(proto: u8) -> u64 {
    let mangled = if proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    BPF_F_PSEUDO_HDR as u64 | mangled
}

/// What an IPv6 packet becomes in IPv4: its addresses and destination port.
pub struct To4 {
    pub src: u32,
    pub dst: u32,
    /// Network order.
    pub dst_port: u16,
}

/// What of an IPv6 packet's fixed header its IPv4 header keeps (RFC 7915, 5.1).
pub struct Fixed6 {
    /// Host order.
    pub payload_len: u16,
    pub hop_limit: u8,
    pub traffic_class: u8,
}

impl Fixed6 {
    /// The frame's (TC's skb or XDP's), read before it is translated.
    #[inline(always)]
    pub fn of<F: Frame>(ctx: &F) -> Result<Fixed6, ()> {
        Ok(Fixed6 {
            payload_len: u16::from_be(ctx.load::<u16>(IP6_OFF + 4)?),
            hop_limit: ctx.load::<u8>(IP6_OFF + 7)?,
            traffic_class: (u32::from_be(ctx.load::<u32>(IP6_OFF)?) >> 20) as u8,
        })
    }

    /// The IPv4 header of the packet translated to `to`, its checksum made: TC's
    /// translation and XDP's write the same.
    #[inline(always)]
    pub fn to_ipv4(&self, proto: u8, to: &To4) -> Result<Ipv4Header, i64> {
        Ipv4Header {
            version_ihl: 0x45,
            // RFC 7915, 5.1: the Traffic Class becomes the TOS octet (DSCP and ECN kept).
            tos: self.traffic_class,
            tot_len: (self.payload_len + 20).to_be(),
            id: 0,
            // Don't fragment: the IPv6 sender does PMTU discovery.
            frag_off: 0x4000u16.to_be(),
            // As it came: the node forwards the IPv4 packet, and its forwarding counts
            // the hop (the replies, redirected past it, are decremented in `v4_to_v6`).
            ttl: self.hop_limit,
            proto,
            check: 0,
            src: to.src,
            dst: to.dst,
        }
        .checked()
    }
}

/// Rewrite an IPv6 TCP/UDP packet (`flow`, its upper layer right behind the fixed
/// header) as IPv4 to `to`. A subprogram, as `v4_to_v6`: its headers are not held on its
/// callers' stacks. (XDP's translation: `xdp_nat46::rewrite`.)
#[inline(never)]
pub fn v6_to_v4(ctx: &TcContext, flow: &Flow6, to: &To4) -> Result<(), i64> {
    let (src, dst, proto, old_port) = (&flow.src, &flow.dst, flow.proto, flow.dst_port);
    // A frame too short for the fixed header (never parsed into a flow).
    let fixed = Fixed6::of(ctx).map_err(|()| -1i64)?;
    let mut old = [
        src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3],
    ];
    let mut new = [to.src, to.dst];
    let addr_diff = diff(&mut old, &mut new)?;
    ctx.change_proto(ETH_P_IP.to_be(), 0)?;
    let hdr = fixed.to_ipv4(proto, to)?;
    ctx.store(IP_OFF, &hdr, 0)?;
    ctx.store(ETH_TYPE_OFF, &ETH_P_IP.to_be(), 0)?;
    let l4 = IP_OFF + 20;
    let csum = l4 + csum_at(proto);
    ctx.l4_csum_replace(csum, 0, addr_diff, l4_flags(proto))?;
    if old_port != to.dst_port {
        ctx.l4_csum_replace(
            csum,
            old_port as u64,
            to.dst_port as u64,
            2 | (l4_flags(proto) & !(BPF_F_PSEUDO_HDR as u64)),
        )?;
        ctx.store(l4 + 2, &to.dst_port, 0)?;
    }
    Ok(())
}

/// What an IPv4 packet becomes in IPv6: its addresses and source port.
pub struct To6 {
    pub src: Addr6,
    pub dst: Addr6,
    /// Network order.
    pub src_port: u16,
}

/// Rewrite an IPv4 TCP/UDP packet without options (`pkt`) as IPv6 from `to.src`. A
/// UDP datagram without a checksum cannot be translated (RFC 7915 lets it be dropped):
/// the caller checks.
#[inline(never)]
pub fn v4_to_v6(ctx: &TcContext, pkt: &Packet, to: &To6) -> Result<(), i64> {
    let (src, dst, proto, old_port) = (pkt.src_addr, pkt.dst_addr, pkt.proto, pkt.src_port);
    let tot_len = u16::from_be(ctx.load::<u16>(IP_OFF + 2)?);
    let ttl = ctx.load::<u8>(IP_OFF + 8)?;
    // RFC 7915, 4.1: the TOS octet becomes the Traffic Class.
    let tos = ctx.load::<u8>(IP_OFF + 1)?;
    let mut old = [src, dst];
    let (s, d) = (to.src, to.dst);
    let mut new = [s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]];
    let addr_diff = diff(&mut old, &mut new)?;
    ctx.change_proto(ETH_P_IPV6.to_be(), 0)?;
    let hdr = Ipv6Header {
        version_class_flow: (0x6000_0000 | u32::from(tos) << 20).to_be(),
        payload_len: (tot_len - 20).to_be(),
        next_header: proto,
        hop_limit: ttl.saturating_sub(1),
        src: to.src,
        dst: to.dst,
    };
    ctx.store(IP6_OFF, &hdr, 0)?;
    ctx.store(ETH_TYPE_OFF, &ETH_P_IPV6.to_be(), 0)?;
    let l4 = IP6_OFF + IP6_HDR_LEN;
    let csum = l4 + csum_at(proto);
    ctx.l4_csum_replace(csum, 0, addr_diff, l4_flags(proto))?;
    if old_port != to.src_port {
        ctx.l4_csum_replace(
            csum,
            old_port as u64,
            to.src_port as u64,
            2 | (l4_flags(proto) & !(BPF_F_PSEUDO_HDR as u64)),
        )?;
        ctx.store(l4, &to.src_port, 0)?;
    }
    Ok(())
}

/// The ICMPv6 header of an error right behind the fixed header.
const ERR_OFF: usize = IP6_OFF + IP6_HDR_LEN;
/// The fixed header of the packet the error quotes.
const QUOTE_OFF: usize = ERR_OFF + 8;
/// The quoted packet's TCP or UDP header.
const QUOTED_L4_OFF: usize = QUOTE_OFF + IP6_HDR_LEN;

/// An ICMPv6 error about a TCP or UDP packet, as ICMPv4 says it (RFC 7915, 5.2).
pub struct Icmp6Error {
    /// ICMPv4's type and code.
    pub kind: [u8; 2],
    /// ICMPv4's word after the checksum: a Fragmentation Needed's next-hop MTU (network
    /// order), else zero.
    pub rest: u32,
    /// The quoted packet's ends, ports (network order) and protocol.
    pub quoted_src: Addr6,
    pub quoted_dst: Addr6,
    pub quoted_src_port: u16,
    pub quoted_dst_port: u16,
    pub quoted_proto: u8,
}

/// The packet as an ICMPv6 error (right behind the fixed header) that ICMPv4 can say,
/// quoting TCP or UDP right behind its fixed header; `None` for anything else (Parameter
/// Problem's pointer, informational messages, extension headers: not translated).
#[inline(never)]
pub fn icmp6_error(ctx: &TcContext) -> Option<Icmp6Error> {
    let next: u8 = ctx.load(IP6_OFF + 6).ok()?;
    if next != PROTO_ICMPV6 || (ctx.len() as usize) < QUOTED_L4_OFF + 8 {
        return None;
    }
    let head: [u8; 2] = ctx.load(ERR_OFF).ok()?;
    let word = u32::from_be(ctx.load::<u32>(ERR_OFF + 4).ok()?);
    let (kind, rest) = match (head[0], head[1]) {
        // Packet Too Big: Fragmentation Needed, the MTU less the headers' difference.
        (2, 0) => ([3, 4], (word.saturating_sub(20).min(0xffff)).to_be()),
        // Destination Unreachable: no route, beyond scope, address -> host unreachable;
        // administratively prohibited -> host prohibited; port -> port.
        (1, 0 | 2 | 3) => ([3, 1], 0),
        (1, 1) => ([3, 10], 0),
        (1, 4) => ([3, 3], 0),
        // Time Exceeded, in transit or in reassembly.
        (3, code @ (0 | 1)) => ([11, code], 0),
        _ => return None,
    };
    let fixed: [u8; 8] = ctx.load(QUOTE_OFF).ok()?;
    let proto = fixed[6];
    if fixed[0] >> 4 != 6 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    let ports: [u16; 2] = ctx.load(QUOTED_L4_OFF).ok()?;
    Some(Icmp6Error {
        kind,
        rest,
        quoted_src: ctx.load(QUOTE_OFF + 8).ok()?,
        quoted_dst: ctx.load(QUOTE_OFF + 24).ok()?,
        quoted_src_port: ports[0],
        quoted_dst_port: ports[1],
        quoted_proto: proto,
    })
}

/// What an ICMP error about a NAT46 flow becomes in the other family: from `src` to
/// `dst`, quoting the packet `dst` sent, from `dst:quoted_src_port` to
/// `src:quoted_dst_port`.
pub struct ErrorTo<A> {
    pub src: A,
    pub dst: A,
    /// Network order.
    pub quoted_src_port: u16,
    pub quoted_dst_port: u16,
}

/// An ICMPv6 error as ICMPv4: from the client's pool address to the container.
pub type ErrorTo4 = ErrorTo<u32>;
/// A container's ICMPv4 error as ICMPv6: from the address its client called to the
/// client.
pub type ErrorTo6 = ErrorTo<Addr6>;

/// Rewrite the ICMPv6 error `err` as ICMPv4 (`to`): the outer header and the quoted one
/// each 20 bytes shorter (`bpf_skb_change_proto`, then `bpf_skb_adjust_room` takes the
/// ICMPv6 header and the quote's first 12 bytes, and the ICMPv4 header and the quoted
/// IPv4 header are written over the rest), the quoted ports the container's. ICMPv4's
/// checksum is ICMPv6's with the pseudo header, the two headers and the ports replaced
/// (the quote's tail stays as it was, at an even offset in both).
///
/// Two subprograms side by side (the new headers first, then the rewrite), so that
/// neither frame holds the other's buffers.
#[inline(always)]
pub fn icmp6_error_to_v4(ctx: &TcContext, err: &Icmp6Error, to: &ErrorTo4) -> Result<(), i64> {
    let kept = kept_sum(ctx, err)?;
    let new_head = icmp4_head(ctx, err, to, kept)?;
    rewrite_error(ctx, &new_head, to)
}

/// The error rewritten as ICMPv4 with `new_head` (see `icmp6_error_to_v4`).
#[inline(never)]
fn rewrite_error(ctx: &TcContext, new_head: &[u32; 7], to: &ErrorTo4) -> Result<(), i64> {
    let payload_len = u16::from_be(ctx.load::<u16>(IP6_OFF + 4)?);
    let hop_limit: u8 = ctx.load(IP6_OFF + 7)?;
    let new_ports = word_of(to.quoted_src_port, to.quoted_dst_port);
    ctx.change_proto(ETH_P_IP.to_be(), 0)?;
    ctx.adjust_room(-20, BPF_ADJ_ROOM_NET, 0)?;
    let icmp = IP_OFF + 20;
    ctx.store(icmp, new_head, 0)?;
    ctx.store(icmp + 28, &new_ports, 0)?;
    // The ICMPv4 message is 20 bytes shorter, as is its header: the same total.
    let outer = Ipv4Header {
        version_ihl: 0x45,
        tos: 0,
        tot_len: payload_len.to_be(),
        id: 0,
        frag_off: 0,
        ttl: hop_limit,
        proto: PROTO_ICMP,
        check: 0,
        src: to.src,
        dst: to.dst,
    }
    .checked()?;
    ctx.store(IP_OFF, &outer, 0)?;
    ctx.store(ETH_TYPE_OFF, &ETH_P_IP.to_be(), 0)?;
    Ok(())
}

/// The sum of what ICMPv6's checksum covers that stays: ICMPv6's sum less its pseudo
/// header, its own header and the quoted fixed header and ports. A subprogram, beside
/// `icmp4_head`: neither frame holds the other's buffers.
#[inline(never)]
fn kept_sum(ctx: &TcContext, err: &Icmp6Error) -> Result<u32, i64> {
    let payload_len = u16::from_be(ctx.load::<u16>(IP6_OFF + 4)?);
    let old_csum: u16 = ctx.load(ERR_OFF + 2)?;
    let mut pseudo: [u32; 10] = ctx.load(IP6_OFF + 8).map(|a: [u32; 8]| {
        [
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            (payload_len as u32).to_be(),
            (PROTO_ICMPV6 as u32).to_be(),
        ]
    })?;
    let sum = diff_from(!old_csum as u32, &mut pseudo, &mut [])?;
    // The ICMPv6 header (its checksum as zero, as it was summed) and the quoted header.
    let mut old_head: [u32; 12] = ctx.load(ERR_OFF)?;
    let first = old_head[0].to_ne_bytes();
    old_head[0] = u32::from_ne_bytes([first[0], first[1], 0, 0]);
    let sum = diff_from(sum as u32, &mut old_head, &mut [])?;
    let mut ports = [word_of(err.quoted_src_port, err.quoted_dst_port)];
    Ok(diff_from(sum as u32, &mut ports, &mut [])? as u32)
}

/// The ICMPv4 header (its checksum written over `kept`, the sum of what stays) and the
/// quoted IPv4 header that replace the ICMPv6 header and the quoted IPv6 one.
#[inline(never)]
fn icmp4_head(
    ctx: &TcContext,
    err: &Icmp6Error,
    to: &ErrorTo4,
    kept: u32,
) -> Result<[u32; 7], i64> {
    let quoted_len = u16::from_be(ctx.load::<u16>(QUOTE_OFF + 4)?);
    let quoted_hops: u8 = ctx.load(QUOTE_OFF + 7)?;
    let q = Ipv4Header {
        version_ihl: 0x45,
        tos: 0,
        tot_len: (quoted_len + 20).to_be(),
        id: 0,
        frag_off: 0x4000u16.to_be(),
        ttl: quoted_hops,
        proto: err.quoted_proto,
        check: 0,
        src: to.dst,
        dst: to.src,
    }
    .checked()?
    .words();
    // The new headers and the quoted ports, as the checksum covers them.
    let mut added = [
        u32::from_ne_bytes([err.kind[0], err.kind[1], 0, 0]),
        err.rest,
        q[0],
        q[1],
        q[2],
        q[3],
        q[4],
        word_of(to.quoted_src_port, to.quoted_dst_port),
    ];
    let check = folded(diff_from(kept, &mut [], &mut added)?).to_ne_bytes();
    Ok([
        u32::from_ne_bytes([err.kind[0], err.kind[1], check[0], check[1]]),
        added[1],
        added[2],
        added[3],
        added[4],
        added[5],
        added[6],
    ])
}

/// An ICMPv4 error (no IP options, outside or quoted) about a TCP or UDP packet, as
/// ICMPv6 says it (RFC 7915, 4.2).
pub struct Icmp4Error {
    /// ICMPv6's type and code.
    pub kind: [u8; 2],
    /// ICMPv6's word after the checksum: Packet Too Big's MTU (network order), else zero.
    pub rest: u32,
    /// The error's own ends.
    pub src: u32,
    pub dst: u32,
    /// The quoted packet's ends, ports (network order) and protocol.
    pub quoted_src: u32,
    pub quoted_dst: u32,
    pub quoted_src_port: u16,
    pub quoted_dst_port: u16,
    pub quoted_proto: u8,
}

/// The ICMPv4 header of an error without IP options.
const ERR4_OFF: usize = IP_OFF + 20;
/// The quoted IPv4 header, and its TCP or UDP header.
const QUOTE4_OFF: usize = ERR4_OFF + 8;
const QUOTED4_L4_OFF: usize = QUOTE4_OFF + 20;

/// The packet as an ICMPv4 error that ICMPv6 can say, quoting TCP or UDP, with no IP
/// options in either header; `None` for anything else (Parameter Problem, protocol
/// unreachable, informational messages: not translated).
#[inline(never)]
pub fn icmp4_error(ctx: &TcContext) -> Option<Icmp4Error> {
    let outer: [u8; 20] = ctx.load(IP_OFF).ok()?;
    if outer[0] != 0x45 || outer[9] != PROTO_ICMP || (ctx.len() as usize) < QUOTED4_L4_OFF + 8 {
        return None;
    }
    let head: [u8; 2] = ctx.load(ERR4_OFF).ok()?;
    let word = u32::from_be(ctx.load::<u32>(ERR4_OFF + 4).ok()?);
    let (kind, rest) = match (head[0], head[1]) {
        // Fragmentation Needed: Packet Too Big, the MTU plus the headers' difference
        // (IPv6's minimum at least).
        (3, 4) => ([2, 0], ((word & 0xffff) + 20).max(1280).to_be()),
        (3, 0 | 1 | 5 | 6 | 7 | 8 | 11 | 12) => ([1, 0], 0),
        (3, 3) => ([1, 4], 0),
        (3, 9 | 10 | 13 | 15) => ([1, 1], 0),
        (11, code @ (0 | 1)) => ([3, code], 0),
        _ => return None,
    };
    let quoted: [u8; 20] = ctx.load(QUOTE4_OFF).ok()?;
    let proto = quoted[9];
    if quoted[0] != 0x45 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    let ports: [u16; 2] = ctx.load(QUOTED4_L4_OFF).ok()?;
    let addr =
        |b: &[u8; 20], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    Some(Icmp4Error {
        kind,
        rest,
        src: addr(&outer, 12),
        dst: addr(&outer, 16),
        quoted_src: addr(&quoted, 12),
        quoted_dst: addr(&quoted, 16),
        quoted_src_port: ports[0],
        quoted_dst_port: ports[1],
        quoted_proto: proto,
    })
}

/// Rewrite the ICMPv4 error `err` as ICMPv6 (`to`), the mirror of `icmp6_error_to_v4`:
/// `bpf_skb_change_proto` and `bpf_skb_adjust_room` make each header 20 bytes longer,
/// and ICMPv6's checksum follows from ICMPv4's, its pseudo header added.
#[inline(always)]
pub fn icmp4_error_to_v6(ctx: &TcContext, err: &Icmp4Error, to: &ErrorTo6) -> Result<(), i64> {
    let kept = kept_sum4(ctx, err)?;
    let new_head = icmp6_head(ctx, err, to, kept)?;
    rewrite_error6(ctx, &new_head, to)
}

/// The sum of what ICMPv4's checksum covers that stays: less its header and the quoted
/// header and ports.
#[inline(never)]
fn kept_sum4(ctx: &TcContext, err: &Icmp4Error) -> Result<u32, i64> {
    let old_csum: u16 = ctx.load(ERR4_OFF + 2)?;
    let mut old_head: [u32; 7] = ctx.load(ERR4_OFF)?;
    let first = old_head[0].to_ne_bytes();
    old_head[0] = u32::from_ne_bytes([first[0], first[1], 0, 0]);
    let sum = diff_from(!old_csum as u32, &mut old_head, &mut [])?;
    let mut ports = [word_of(err.quoted_src_port, err.quoted_dst_port)];
    Ok(diff_from(sum as u32, &mut ports, &mut [])? as u32)
}

/// The ICMPv6 header (its checksum written over `kept`, with the pseudo header) and the
/// quoted IPv6 header.
#[inline(never)]
fn icmp6_head(
    ctx: &TcContext,
    err: &Icmp4Error,
    to: &ErrorTo6,
    kept: u32,
) -> Result<[u32; 12], i64> {
    // ICMPv6's message is as long as the IPv4 packet was (header and quote each 20
    // bytes longer, the outer header gone).
    let len = u16::from_be(ctx.load::<u16>(IP_OFF + 2)?);
    let quoted_len = u16::from_be(ctx.load::<u16>(QUOTE4_OFF + 2)?);
    let quoted_ttl: u8 = ctx.load(QUOTE4_OFF + 8)?;
    let (s, d) = (&to.src, &to.dst);
    let mut pseudo = [
        s[0],
        s[1],
        s[2],
        s[3],
        d[0],
        d[1],
        d[2],
        d[3],
        (len as u32).to_be(),
        (PROTO_ICMPV6 as u32).to_be(),
        word_of(to.quoted_src_port, to.quoted_dst_port),
    ];
    let sum = diff_from(kept, &mut [], &mut pseudo)?;
    let (qs, qd) = (&to.dst, &to.src);
    let mut head = [
        u32::from_ne_bytes([err.kind[0], err.kind[1], 0, 0]),
        err.rest,
        0x6000_0000u32.to_be(),
        word_of(
            quoted_len.saturating_sub(20).to_be(),
            u16::from_ne_bytes([err.quoted_proto, quoted_ttl]),
        ),
        qs[0],
        qs[1],
        qs[2],
        qs[3],
        qd[0],
        qd[1],
        qd[2],
        qd[3],
    ];
    let check = folded(diff_from(sum as u32, &mut [], &mut head)?).to_ne_bytes();
    head[0] = u32::from_ne_bytes([err.kind[0], err.kind[1], check[0], check[1]]);
    Ok(head)
}

/// The error rewritten as ICMPv6 with `new_head` (see `icmp4_error_to_v6`).
#[inline(never)]
fn rewrite_error6(ctx: &TcContext, new_head: &[u32; 12], to: &ErrorTo6) -> Result<(), i64> {
    let len = u16::from_be(ctx.load::<u16>(IP_OFF + 2)?);
    let ttl: u8 = ctx.load(IP_OFF + 8)?;
    let new_ports = word_of(to.quoted_src_port, to.quoted_dst_port);
    ctx.change_proto(ETH_P_IPV6.to_be(), 0)?;
    ctx.adjust_room(20, BPF_ADJ_ROOM_NET, 0)?;
    let icmp = IP6_OFF + IP6_HDR_LEN;
    ctx.store(icmp, new_head, 0)?;
    ctx.store(icmp + 48, &new_ports, 0)?;
    let hdr = Ipv6Header {
        version_class_flow: 0x6000_0000u32.to_be(),
        payload_len: len.to_be(),
        next_header: PROTO_ICMPV6,
        hop_limit: ttl.saturating_sub(1),
        src: to.src,
        dst: to.dst,
    };
    ctx.store(IP6_OFF, &hdr, 0)?;
    ctx.store(ETH_TYPE_OFF, &ETH_P_IPV6.to_be(), 0)?;
    Ok(())
}
