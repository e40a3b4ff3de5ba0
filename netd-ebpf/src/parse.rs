//! Parsing: the Ethernet/IPv4/L4 headers netd translates, read with bounds-checked loads.
//! Anything it does not translate is named by the `Reason` it is passed with.
//!
//! ICMP echo is a flow like TCP and UDP, its identifier standing in for the port on the
//! asking side (the request's source "port", the reply's destination "port"; the other is
//! 0). An ICMP error is parsed as the packet it quotes (`Kind::IcmpError`), since that is
//! what finds its flow.
//!
//! Fragments: the first fragment of a datagram carries its L4 header and is parsed like
//! any packet; the following ones carry none, and `fragment::track` gives them the ports
//! their first fragment had.

use aya_ebpf::programs::{TcContext, XdpContext};
use core::mem::offset_of;
use netd_common::{PROTO_ICMP, PROTO_TCP, PROTO_UDP, counters::Reason, flow::SEEN_PACKET};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

/// Where the source MAC is in an Ethernet frame.
pub const ETH_SRC_OFF: usize = 6;
pub const ETH_TYPE_OFF: usize = 12;
pub const ETH_P_IP: u16 = 0x0800;
pub const IP_OFF: usize = EthHdr::LEN;
/// IHL 5 only: packets with IP options are passed untouched (so L4 sits at a fixed offset).
pub const L4_OFF: usize = IP_OFF + Ipv4Hdr::LEN;
pub const IPV4_HDR_LEN: u16 = Ipv4Hdr::LEN as u16;
pub const IP_TOT_LEN_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, tot_len);
pub const IP_CSUM_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, check);
pub const IP_PROTO_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, proto);
pub const IP_SRC_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, src_addr);
pub const IP_DST_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, dst_addr);
const TCP_FLAGS_OFF: usize = L4_OFF + 13;
pub const IP_TTL_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, ttl);
const TCP_CSUM_OFF: usize = L4_OFF + 16;
const UDP_CSUM_OFF: usize = L4_OFF + 6;
pub const ICMP_CSUM_OFF: usize = L4_OFF + 2;
const ICMP_ID_OFF: usize = L4_OFF + 4;
const TCP_HDR_LEN: usize = 20;
const UDP_HDR_LEN: usize = 8;
const ICMP_HDR_LEN: usize = 8;

/// Where an ICMP error's quoted packet sits.
pub const INNER_IP_OFF: usize = L4_OFF + ICMP_HDR_LEN;
pub const INNER_IP_CSUM_OFF: usize = INNER_IP_OFF + offset_of!(Ipv4Hdr, check);
pub const INNER_IP_SRC_OFF: usize = INNER_IP_OFF + offset_of!(Ipv4Hdr, src_addr);
pub const INNER_IP_DST_OFF: usize = INNER_IP_OFF + offset_of!(Ipv4Hdr, dst_addr);
pub const INNER_L4_OFF: usize = INNER_IP_OFF + Ipv4Hdr::LEN;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Where a packet stands in its datagram.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum Fragment {
    #[default]
    Whole,
    /// Offset 0, more fragments follow: the L4 header is here.
    First,
    /// Offset > 0: no L4 header; its ports are the first fragment's.
    Following,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP, UDP or ICMP echo: the packet's own tuple.
    Flow,
    /// An ICMP error: the tuple is the quoted packet's (TCP or UDP).
    IcmpError,
}

/// The facts about a packet that the NAT needs. Addresses and ports in network order.
#[derive(Clone, Copy)]
pub struct Packet {
    pub kind: Kind,
    pub proto: u8,
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// Where the "ports" are written (for ICMP echo both name the identifier; the side
    /// that is 0 never changes).
    pub src_port_off: u8,
    pub dst_port_off: u8,
    /// `SEEN_*` bits of netd_common::flow: SEEN_PACKET, plus the TCP flags.
    pub seen: u8,
    /// May this packet start a new flow? Not an ICMP echo reply: its identifier is its
    /// destination "port", so it can only ever be a reply.
    pub starts_flow: bool,
    /// The L4 checksum of the packet itself (for an ICMP error: the ICMP checksum).
    pub l4_csum_off: u8,
    /// The IPv4 header's own destination (for an ICMP error: where the error goes, which
    /// policy judges, not the quoted packet's).
    pub ip_dst: u32,
    /// The IP identification (network order), which ties fragments together.
    pub ip_id: u16,
    /// The IP total length (host order): what a flow's bytes count, as Linux's
    /// conntrack counts them.
    pub ip_len: u16,
    pub fragment: Fragment,
}

impl Packet {
    /// Whether the L4 header (ports and checksum) is in this packet.
    #[inline(always)]
    pub fn has_l4_header(&self) -> bool {
        self.fragment != Fragment::Following
    }
}

/// A packet's bytes as a program sees them: through `bpf_skb_load_bytes` at TC, directly
/// at XDP. Parsing is the same for both.
pub trait Frame {
    /// The frame's length, and whether it is a GSO skb's (see `parse6::packet_end`).
    fn extent(&self) -> (usize, bool);
    fn load<T>(&self, off: usize) -> Result<T, ()>;
}

impl Frame for TcContext {
    #[inline(always)]
    fn extent(&self) -> (usize, bool) {
        // SAFETY: the context's __sk_buff is valid for the program's run.
        let gso = unsafe { (*self.skb.skb).gso_size } != 0;
        (self.len() as usize, gso)
    }
    #[inline(always)]
    fn load<T>(&self, off: usize) -> Result<T, ()> {
        TcContext::load(self, off).map_err(|_| ())
    }
}

impl Frame for XdpContext {
    #[inline(always)]
    fn extent(&self) -> (usize, bool) {
        (self.data_end() - self.data(), false)
    }
    #[inline(always)]
    fn load<T>(&self, off: usize) -> Result<T, ()> {
        let at = self.data() + off;
        if at + size_of::<T>() > self.data_end() {
            return Err(());
        }
        // SAFETY: bounds-checked against data_end just above.
        Ok(unsafe { (at as *const T).read_unaligned() })
    }
}

#[inline(always)]
pub fn parse_ipv4_l4<F: Frame>(ctx: &F) -> Result<Packet, Reason> {
    let eth: EthHdr = ctx.load(0).map_err(|_| Reason::Truncated)?;
    if eth.ether_type != EtherType::Ipv4 as u16 {
        return Err(Reason::NotIpv4);
    }
    let ip = ipv4_header(ctx, IP_OFF)?;
    let proto = ip.proto;
    if proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP {
        return Err(Reason::OtherProto);
    }
    match fragment_of(&ip) {
        Fragment::Following => Ok(following_fragment(&ip)),
        fragment if proto == PROTO_ICMP => icmp(ctx, &ip, fragment),
        fragment => transport(ctx, &ip, fragment),
    }
}

/// An IPv4 header without options.
#[inline(always)]
fn ipv4_header<F: Frame>(ctx: &F, off: usize) -> Result<Ipv4Hdr, Reason> {
    let ip: Ipv4Hdr = ctx.load(off).map_err(|_| Reason::Truncated)?;
    if ip.vihl != 0x45 {
        return Err(if ip.vihl >> 4 != 4 {
            Reason::NotIpv4
        } else {
            Reason::IpOptions
        });
    }
    Ok(ip)
}

#[inline(always)]
fn fragment_of(ip: &Ipv4Hdr) -> Fragment {
    const MORE_FRAGMENTS: u16 = 0x2000;
    const OFFSET: u16 = 0x1fff;
    let frags = u16::from_be_bytes(ip.frags);
    if frags & OFFSET != 0 {
        Fragment::Following
    } else if frags & MORE_FRAGMENTS != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    }
}

/// A fragment after the first: addresses only, ports to be filled in from the first.
#[inline(always)]
fn following_fragment(ip: &Ipv4Hdr) -> Packet {
    Packet {
        kind: Kind::Flow,
        proto: ip.proto,
        src_addr: u32::from_ne_bytes(ip.src_addr),
        dst_addr: u32::from_ne_bytes(ip.dst_addr),
        src_port: 0,
        dst_port: 0,
        src_port_off: 0,
        dst_port_off: 0,
        seen: SEEN_PACKET,
        starts_flow: false,
        l4_csum_off: 0,
        ip_dst: u32::from_ne_bytes(ip.dst_addr),
        ip_id: u16::from_ne_bytes(ip.id),
        ip_len: u16::from_be_bytes(ip.tot_len),
        fragment: Fragment::Following,
    }
}

#[inline(always)]
fn transport<F: Frame>(ctx: &F, ip: &Ipv4Hdr, fragment: Fragment) -> Result<Packet, Reason> {
    let proto = ip.proto;
    let (l4_csum_off, l4_last_byte) = if proto == PROTO_TCP {
        (TCP_CSUM_OFF, L4_OFF + TCP_HDR_LEN - 1)
    } else {
        (UDP_CSUM_OFF, L4_OFF + UDP_HDR_LEN - 1)
    };
    // The whole L4 header must be there: a cut-short header is no packet to translate
    // (and a rewrite could fail half-way).
    let _: u8 = ctx.load(l4_last_byte).map_err(|_| Reason::Truncated)?;
    let ports: [u16; 2] = ctx.load(L4_OFF).map_err(|_| Reason::Truncated)?;
    let seen = if proto == PROTO_TCP {
        let flags: u8 = ctx.load(TCP_FLAGS_OFF).map_err(|_| Reason::Truncated)?;
        seen_bits(flags)
    } else {
        SEEN_PACKET
    };
    Ok(Packet {
        kind: Kind::Flow,
        proto,
        src_addr: u32::from_ne_bytes(ip.src_addr),
        dst_addr: u32::from_ne_bytes(ip.dst_addr),
        src_port: ports[0],
        dst_port: ports[1],
        src_port_off: L4_OFF as u8,
        dst_port_off: (L4_OFF + 2) as u8,
        seen,
        starts_flow: true,
        l4_csum_off: l4_csum_off as u8,
        ip_dst: u32::from_ne_bytes(ip.dst_addr),
        ip_id: u16::from_ne_bytes(ip.id),
        ip_len: u16::from_be_bytes(ip.tot_len),
        fragment,
    })
}

#[inline(always)]
fn icmp<F: Frame>(ctx: &F, ip: &Ipv4Hdr, fragment: Fragment) -> Result<Packet, Reason> {
    let header: [u8; ICMP_HDR_LEN] = ctx.load(L4_OFF).map_err(|_| Reason::Truncated)?;
    let id = u16::from_ne_bytes([header[4], header[5]]);
    let (src_port, dst_port) = match header[0] {
        ICMP_ECHO_REQUEST => (id, 0),
        ICMP_ECHO_REPLY => (0, id),
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
            if fragment == Fragment::Whole =>
        {
            return icmp_error(ctx, ip);
        }
        _ => return Err(Reason::OtherProto),
    };
    Ok(Packet {
        kind: Kind::Flow,
        proto: PROTO_ICMP,
        src_addr: u32::from_ne_bytes(ip.src_addr),
        dst_addr: u32::from_ne_bytes(ip.dst_addr),
        src_port,
        dst_port,
        src_port_off: ICMP_ID_OFF as u8,
        dst_port_off: ICMP_ID_OFF as u8,
        seen: SEEN_PACKET,
        starts_flow: header[0] == ICMP_ECHO_REQUEST,
        l4_csum_off: ICMP_CSUM_OFF as u8,
        ip_dst: u32::from_ne_bytes(ip.dst_addr),
        ip_id: u16::from_ne_bytes(ip.id),
        ip_len: u16::from_be_bytes(ip.tot_len),
        fragment,
    })
}

/// The packet an ICMP error quotes (its first 8 bytes of L4 at least): TCP or UDP by
/// their ports, an ICMP echo by its identifier. A quote of another kind, of a following
/// fragment, or whose header is not a plain IPv4 one names no flow (`OtherProto`: an
/// error netd does not translate, judged as any packet by its own destination).
#[inline(always)]
fn icmp_error<F: Frame>(ctx: &F, ip: &Ipv4Hdr) -> Result<Packet, Reason> {
    let inner = ipv4_header(ctx, INNER_IP_OFF).map_err(|_| Reason::OtherProto)?;
    if fragment_of(&inner) == Fragment::Following {
        return Err(Reason::OtherProto);
    }
    let proto = inner.proto;
    let (src_port, dst_port, src_port_off, dst_port_off) = match proto {
        PROTO_TCP | PROTO_UDP => {
            let ports: [u16; 2] = ctx.load(INNER_L4_OFF).map_err(|_| Reason::Truncated)?;
            (ports[0], ports[1], INNER_L4_OFF, INNER_L4_OFF + 2)
        }
        PROTO_ICMP => {
            let header: [u8; ICMP_HDR_LEN] =
                ctx.load(INNER_L4_OFF).map_err(|_| Reason::Truncated)?;
            let id = u16::from_ne_bytes([header[4], header[5]]);
            let at = INNER_L4_OFF + 4;
            match header[0] {
                ICMP_ECHO_REQUEST => (id, 0, at, at),
                ICMP_ECHO_REPLY => (0, id, at, at),
                _ => return Err(Reason::OtherProto),
            }
        }
        _ => return Err(Reason::OtherProto),
    };
    Ok(Packet {
        kind: Kind::IcmpError,
        proto,
        src_addr: u32::from_ne_bytes(inner.src_addr),
        dst_addr: u32::from_ne_bytes(inner.dst_addr),
        src_port,
        dst_port,
        src_port_off: src_port_off as u8,
        dst_port_off: dst_port_off as u8,
        seen: 0,
        starts_flow: false,
        l4_csum_off: ICMP_CSUM_OFF as u8,
        ip_dst: u32::from_ne_bytes(ip.dst_addr),
        ip_id: u16::from_ne_bytes(ip.id),
        ip_len: u16::from_be_bytes(ip.tot_len),
        fragment: Fragment::Whole,
    })
}

/// The `SEEN_*` bits of a TCP segment with these flags.
#[inline(always)]
pub fn seen_bits(flags: u8) -> u8 {
    use netd_common::flow::{SEEN_ACK, SEEN_ACK_ONLY, SEEN_FIN, SEEN_RST, SEEN_SYN};
    let mut seen = SEEN_PACKET;
    if flags & TCP_SYN != 0 {
        seen |= SEEN_SYN;
    }
    if flags & TCP_ACK != 0 {
        seen |= SEEN_ACK;
        if flags & (TCP_SYN | TCP_RST) == 0 {
            seen |= SEEN_ACK_ONLY;
        }
    }
    if flags & TCP_FIN != 0 {
        seen |= SEEN_FIN;
    }
    if flags & TCP_RST != 0 {
        seen |= SEEN_RST;
    }
    seen
}
