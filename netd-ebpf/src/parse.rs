//! Parsing: the Ethernet/IPv4/L4 headers netd translates, read with bounds-checked loads.
//! Anything it does not translate is named by the `Reason` it is passed with.

use aya_ebpf::programs::TcContext;
use core::mem::offset_of;
use netd_common::{PROTO_TCP, PROTO_UDP, counters::Reason, flow::SEEN_PACKET};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

pub const IP_OFF: usize = EthHdr::LEN;
/// IHL 5 only: packets with IP options are passed untouched (so L4 sits at a fixed offset).
pub const L4_OFF: usize = IP_OFF + Ipv4Hdr::LEN;
pub const IP_CSUM_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, check);
pub const IP_SRC_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, src_addr);
pub const IP_DST_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, dst_addr);
pub const L4_SRC_PORT_OFF: usize = L4_OFF;
pub const L4_DST_PORT_OFF: usize = L4_OFF + 2;
const TCP_FLAGS_OFF: usize = L4_OFF + 13;
const TCP_CSUM_OFF: usize = L4_OFF + 16;
const UDP_CSUM_OFF: usize = L4_OFF + 6;
const TCP_HDR_LEN: usize = 20;
const UDP_HDR_LEN: usize = 8;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The facts about a packet that the NAT needs. Addresses and ports in network order.
#[derive(Clone, Copy)]
pub struct Packet {
    pub proto: u8,
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// `SEEN_*` bits of netd_common::flow: SEEN_PACKET, plus the TCP flags.
    pub seen: u8,
    pub l4_csum_off: usize,
}

#[inline(always)]
pub fn parse_ipv4_l4(ctx: &TcContext) -> Result<Packet, Reason> {
    let eth: EthHdr = ctx.load(0).map_err(|_| Reason::Truncated)?;
    if eth.ether_type != EtherType::Ipv4 as u16 {
        return Err(Reason::NotIpv4);
    }
    let ip: Ipv4Hdr = ctx.load(IP_OFF).map_err(|_| Reason::Truncated)?;
    if ip.vihl != 0x45 {
        return Err(if ip.vihl >> 4 != 4 {
            Reason::NotIpv4
        } else {
            Reason::IpOptions
        });
    }
    // More-fragments set or a non-zero offset: no ports to translate by.
    if u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
        return Err(Reason::Fragment);
    }
    let (l4_csum_off, l4_last_byte) = match ip.proto as u8 {
        PROTO_TCP => (TCP_CSUM_OFF, L4_OFF + TCP_HDR_LEN - 1),
        PROTO_UDP => (UDP_CSUM_OFF, L4_OFF + UDP_HDR_LEN - 1),
        _ => return Err(Reason::OtherProto),
    };
    // The whole L4 header must be there: a cut-short header is no packet to translate
    // (and a rewrite could fail half-way).
    let _: u8 = ctx.load(l4_last_byte).map_err(|_| Reason::Truncated)?;
    let ports: [u16; 2] = ctx.load(L4_OFF).map_err(|_| Reason::Truncated)?;
    let seen = if ip.proto as u8 == PROTO_TCP {
        let flags: u8 = ctx.load(TCP_FLAGS_OFF).map_err(|_| Reason::Truncated)?;
        seen_bits(flags)
    } else {
        SEEN_PACKET
    };
    Ok(Packet {
        proto: ip.proto as u8,
        src_addr: u32::from_ne_bytes(ip.src_addr),
        dst_addr: u32::from_ne_bytes(ip.dst_addr),
        src_port: ports[0],
        dst_port: ports[1],
        seen,
        l4_csum_off,
    })
}

#[inline(always)]
fn seen_bits(flags: u8) -> u8 {
    use netd_common::flow::{SEEN_ACK, SEEN_FIN, SEEN_RST, SEEN_SYN};
    let mut seen = SEEN_PACKET;
    if flags & TCP_SYN != 0 {
        seen |= SEEN_SYN;
    }
    if flags & TCP_ACK != 0 {
        seen |= SEEN_ACK;
    }
    if flags & TCP_FIN != 0 {
        seen |= SEEN_FIN;
    }
    if flags & TCP_RST != 0 {
        seen |= SEEN_RST;
    }
    seen
}
