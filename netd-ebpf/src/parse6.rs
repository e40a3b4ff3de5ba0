//! Parsing IPv6: the fixed header, then the extension-header chain walked to the upper
//! layer, bounded (a chain longer than `MAX_EXT_HEADERS` headers, or reaching past
//! `MAX_L4_OFF`, is refused, never passed unread). The IPv4 parser is `parse`.
//!
//! Refused with a reason: a Hop-by-Hop header anywhere but first (RFC 8200 4.1), a second
//! Fragment header, "No Next Header" (nothing to police), and a Routing header with
//! segments left (the destination in the fixed header is then not where the packet ends,
//! so policy on it would judge the wrong hop).

use netd_common::{PROTO_TCP, PROTO_UDP, counters::Reason, flow::SEEN_PACKET, maps::Addr6};

use crate::{
    conntrack::{Tracked, Tuple},
    parse::{Fragment, Frame, seen_bits},
};

pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IP6_OFF: usize = 14;
pub const IP6_HDR_LEN: usize = 40;
pub const IP6_SRC_OFF: usize = IP6_OFF + 8;
pub const IP6_DST_OFF: usize = IP6_OFF + 24;

pub const PROTO_ICMPV6: u8 = 58;

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const NO_NEXT_HEADER: u8 = 59;
const DEST_OPTIONS: u8 = 60;
/// Extension headers in RFC 6564's uniform format (length in 8-byte units, less one):
/// Mobility, HIP, Shim6, and the two experimental numbers.
const UNIFORM_EXT: [u8; 5] = [135, 139, 140, 253, 254];

/// Extension headers walked before the upper layer must have been reached.
pub const MAX_EXT_HEADERS: usize = 6;
/// The furthest the upper-layer header may start (Ethernet, fixed header, 256 bytes of
/// extension headers).
pub const MAX_L4_OFF: usize = IP6_OFF + IP6_HDR_LEN + 256;

/// The facts policy needs about an IPv6 packet. Addresses as the maps hold them.
#[derive(Clone, Copy)]
pub struct Packet6 {
    pub src: Addr6,
    pub dst: Addr6,
    /// The upper-layer protocol (after the extension headers).
    pub proto: u8,
    /// Where its header starts (for a following fragment: where its data starts).
    pub l4_off: usize,
    /// Where the packet ends in the frame: its payload length's worth after the fixed
    /// header. The kernel trims anything after it (`ip6_rcv_core`), so nothing there may
    /// be read as part of the packet.
    pub end: usize,
    pub fragment: Fragment,
    /// The Fragment header's identification (network order), 0 without one.
    pub frag_id: u32,
}

impl Packet6 {
    /// Whether the upper-layer header is in this packet.
    #[inline(always)]
    pub fn has_l4_header(&self) -> bool {
        self.fragment != Fragment::Following
    }
}

/// Parse the fixed header and walk the extension headers of the frame, `frame_len` long
/// (`gso`: a GSO skb's, see `packet_end`).
#[inline(always)]
pub fn parse_ipv6<F: Frame>(ctx: &F, frame_len: usize, gso: bool) -> Result<Packet6, Reason> {
    let fixed: [u8; 8] = ctx.load(IP6_OFF).map_err(|_| Reason::DropMalformed)?;
    if fixed[0] >> 4 != 6 {
        return Err(Reason::DropMalformed);
    }
    let end = packet_end(u16::from_be_bytes([fixed[4], fixed[5]]), frame_len, gso)?;
    let src: Addr6 = ctx.load(IP6_SRC_OFF).map_err(|_| Reason::DropMalformed)?;
    let dst: Addr6 = ctx.load(IP6_DST_OFF).map_err(|_| Reason::DropMalformed)?;
    let (proto, l4_off, fragment, frag_id) = walk_chain(ctx, fixed[6], end)?;
    Ok(Packet6 {
        src,
        dst,
        proto,
        l4_off,
        end,
        fragment,
        frag_id,
    })
}

/// Where a packet with this payload length ends in a frame `frame_len` long; a payload
/// length past the frame is a truncated packet (the kernel drops it). A payload length of
/// 0 is a BIG TCP packet's when the skb is a GSO one (`gso`): the frame's length is then
/// the packet's. Otherwise it is a packet of no payload at all: the kernel trims the
/// rest of the frame (or, behind a Hop-by-Hop header, drops it unless it is a real
/// jumbogram, which no frame of 64 KiB or less is), so nothing after the fixed header
/// may be read as the packet's.
#[inline(always)]
fn packet_end(payload_len: u16, frame_len: usize, gso: bool) -> Result<usize, Reason> {
    if payload_len == 0 && gso {
        return Ok(frame_len);
    }
    let end = IP6_OFF + IP6_HDR_LEN + payload_len as usize;
    if end > frame_len {
        return Err(Reason::DropMalformed);
    }
    Ok(end)
}

/// From the fixed header's next header to the upper layer: its protocol, offset, where
/// the packet stands in its datagram and the datagram's identification (0 unfragmented).
/// A subprogram: the loop's loads would otherwise each hold a stack slot of the caller.
#[inline(never)]
fn walk_chain<F: Frame>(
    ctx: &F,
    first: u8,
    end: usize,
) -> Result<(u8, usize, Fragment, u32), Reason> {
    let mut next = first;
    let mut off = IP6_OFF + IP6_HDR_LEN;
    let mut fragment = Fragment::Whole;
    let mut fragmented = false;
    let mut id = 0;
    for i in 0..MAX_EXT_HEADERS {
        let h: [u8; 4] = match next {
            HOP_BY_HOP | ROUTING | FRAGMENT | AUTH | DEST_OPTIONS => load_ext(ctx, off)?,
            n if UNIFORM_EXT.contains(&n) => load_ext(ctx, off)?,
            NO_NEXT_HEADER => return Err(Reason::DropIpv6ExtHeaderInvalid),
            upper => return Ok((upper, off, fragment, id)),
        };
        let len = match next {
            HOP_BY_HOP if i != 0 => return Err(Reason::DropIpv6ExtHeaderInvalid),
            ROUTING if h[3] != 0 => return Err(Reason::DropIpv6RoutingHeader),
            FRAGMENT => {
                if fragmented {
                    return Err(Reason::DropIpv6ExtHeaderInvalid);
                }
                fragmented = true;
                fragment = fragment_of(h);
                id = ctx.load(off + 4).map_err(|_| Reason::DropMalformed)?;
                8
            }
            AUTH => (h[1] as usize + 2) * 4,
            _ => (h[1] as usize + 1) * 8,
        };
        next = h[0];
        off += len;
        // The whole header must be in the packet, not only its first bytes.
        if off > end {
            return Err(Reason::DropMalformed);
        }
        if fragment == Fragment::Following {
            // No upper-layer header here: the data of the datagram goes on.
            return Ok((next, off, fragment, id));
        }
        if off > MAX_L4_OFF {
            return Err(Reason::DropIpv6ExtChainTooLong);
        }
    }
    match next {
        HOP_BY_HOP | ROUTING | FRAGMENT | AUTH | DEST_OPTIONS | NO_NEXT_HEADER => {
            Err(Reason::DropIpv6ExtChainTooLong)
        }
        n if UNIFORM_EXT.contains(&n) => Err(Reason::DropIpv6ExtChainTooLong),
        upper => Ok((upper, off, fragment, id)),
    }
}

#[inline(always)]
fn load_ext<F: Frame>(ctx: &F, off: usize) -> Result<[u8; 4], Reason> {
    ctx.load(off).map_err(|_| Reason::DropMalformed)
}

/// A Fragment header's first four bytes: next header, reserved, offset and M flag. An
/// "atomic fragment" (offset 0, no more: RFC 6946) is a whole packet.
#[inline(always)]
fn fragment_of(h: [u8; 4]) -> Fragment {
    let offset_and_m = u16::from_be_bytes([h[2], h[3]]);
    if offset_and_m & 0xfff8 != 0 {
        Fragment::Following
    } else if offset_and_m & 1 != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    }
}

const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;

/// An IPv6 packet as the connection table and the NAT see it (the twin of
/// `parse::Packet`): its tuple, where its ports and L4 checksum are, what it says about
/// its flow. TCP, UDP and ICMPv6 echo (its identifier standing in for the port on the
/// asking side, as for ICMP).
#[derive(Clone, Copy, Default)]
pub struct Flow6 {
    pub src: Addr6,
    pub dst: Addr6,
    pub src_port: u16,
    pub dst_port: u16,
    pub src_port_off: u16,
    pub dst_port_off: u16,
    pub l4_csum_off: u16,
    /// The payload length and the fixed header: what a flow's bytes count.
    pub ip_len: u16,
    pub proto: u8,
    /// `SEEN_*` bits: SEEN_PACKET, plus the TCP flags.
    pub seen: u8,
    /// Not an echo reply: its identifier is its destination "port".
    pub starts_flow: bool,
    /// A fragment after the first carries no upper-layer header: its ports are its first
    /// fragment's (`fragment::track6`), and only its addresses are rewritten.
    pub fragment: Fragment,
    /// The datagram's identification (network order), for fragments.
    pub frag_id: u32,
}

impl Flow6 {
    /// Whether the upper-layer header (ports and checksum) is in this packet.
    #[inline(always)]
    pub fn has_l4_header(&self) -> bool {
        self.fragment != Fragment::Following
    }
}

impl Tracked<Addr6> for Flow6 {
    #[inline(always)]
    fn tuple(&self) -> Tuple<Addr6> {
        Tuple {
            src_addr: self.src,
            dst_addr: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn seen(&self) -> u8 {
        self.seen
    }
    #[inline(always)]
    fn ip_len(&self) -> u16 {
        self.ip_len
    }
}

/// The flow facts of a parsed packet: its upper-layer header read, which must be whole
/// within the packet. A fragment after the first has none: its ports are 0 until
/// `fragment::track6` gives it its first fragment's. `OtherProto` for anything but TCP,
/// UDP and ICMPv6 echo, `Truncated` for a header cut short.
#[inline(always)]
pub fn flow_of<F: Frame>(ctx: &F, pkt: &Packet6) -> Result<Flow6, Reason> {
    if !pkt.has_l4_header() {
        if !matches!(pkt.proto, PROTO_TCP | PROTO_UDP | PROTO_ICMPV6) {
            return Err(Reason::OtherProto);
        }
        return Ok(Flow6 {
            src: pkt.src,
            dst: pkt.dst,
            ip_len: (pkt.end - IP6_OFF) as u16,
            proto: pkt.proto,
            seen: SEEN_PACKET,
            fragment: Fragment::Following,
            frag_id: pkt.frag_id,
            ..Flow6::default()
        });
    }
    let l4 = pkt.l4_off;
    let (header_len, csum_off) = match pkt.proto {
        PROTO_TCP => (20, 16),
        PROTO_UDP => (8, 6),
        PROTO_ICMPV6 => (8, 2),
        _ => return Err(Reason::OtherProto),
    };
    if l4 + header_len > pkt.end {
        return Err(Reason::Truncated);
    }
    let head: [u8; 8] = ctx.load(l4).map_err(|_| Reason::Truncated)?;
    let mut flow = Flow6 {
        src: pkt.src,
        dst: pkt.dst,
        src_port: u16::from_ne_bytes([head[0], head[1]]),
        dst_port: u16::from_ne_bytes([head[2], head[3]]),
        src_port_off: l4 as u16,
        dst_port_off: (l4 + 2) as u16,
        l4_csum_off: (l4 + csum_off) as u16,
        ip_len: (pkt.end - IP6_OFF) as u16,
        proto: pkt.proto,
        seen: SEEN_PACKET,
        starts_flow: true,
        fragment: pkt.fragment,
        frag_id: pkt.frag_id,
    };
    match pkt.proto {
        PROTO_TCP => {
            let flags: u8 = ctx.load(l4 + 13).map_err(|_| Reason::Truncated)?;
            flow.seen = seen_bits(flags);
        }
        PROTO_ICMPV6 => {
            let (src_port, dst_port) = echo_ports(&head)?;
            flow.src_port = src_port;
            flow.dst_port = dst_port;
            flow.src_port_off = (l4 + 4) as u16;
            flow.dst_port_off = (l4 + 4) as u16;
            flow.starts_flow = head[0] == ICMP6_ECHO_REQUEST;
        }
        _ => {}
    }
    Ok(flow)
}

/// An ICMPv6 echo's "ports" from its first 8 bytes: a request's identifier is its source
/// port, a reply's its destination port (the other is 0). Anything else is no echo.
#[inline(always)]
pub fn echo_ports(head: &[u8; 8]) -> Result<(u16, u16), Reason> {
    let id = u16::from_ne_bytes([head[4], head[5]]);
    match head[0] {
        ICMP6_ECHO_REQUEST => Ok((id, 0)),
        ICMP6_ECHO_REPLY => Ok((0, id)),
        _ => Err(Reason::OtherProto),
    }
}

/// `parse_ipv6` of the whole frame, as the program's hook has it.
#[inline(always)]
pub fn parse_frame<F: Frame>(ctx: &F) -> Result<Packet6, Reason> {
    let (len, gso) = ctx.extent();
    parse_ipv6(ctx, len, gso)
}
