//! IP/ICMP translation between the families (RFC 7915) for NAT46: an IPv6 client's
//! TCP/UDP packet rewritten as the IPv4 packet a container without IPv6 can take, and
//! that container's replies back (for `nat46`). ICMP is not translated yet.
//!
//! Both directions only take packets whose upper-layer header follows the fixed header
//! (no IPv6 extension header, no IPv4 option, no fragment): anything else is for the
//! caller to drop with a reason. The length and protocol terms of the two pseudo headers
//! sum the same (the upper-layer length and the protocol, zero-padded), so the L4
//! checksum only follows the address change (`csum_diff` over 32 bytes against 8) and
//! the port.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::bpf_csum_diff,
    programs::TcContext,
};
use netd_common::{PROTO_UDP, maps::Addr6};

use crate::{
    parse::{ETH_P_IP, ETH_TYPE_OFF, IP_OFF, Packet},
    parse6::{ETH_P_IPV6, Flow6, IP6_HDR_LEN, IP6_OFF},
};

/// The IPv4 header (20 bytes, no options) an IPv6 packet becomes.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Header {
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
fn csum_at(proto: u8) -> usize {
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

/// The one's-complement sum of `from` replaced by `to` (`bpf_csum_diff`).
#[inline(always)]
fn diff<const F: usize, const T: usize>(
    from: &mut [u32; F],
    to: &mut [u32; T],
) -> Result<u64, i64> {
    // SAFETY: the helper reads F and T words of buffers on this stack.
    let d = unsafe {
        bpf_csum_diff(
            // Nothing taken away: NULL, which the helper takes with a size of 0 (an empty
            // array's pointer is dangling).
            if F == 0 {
                core::ptr::null_mut()
            } else {
                from.as_mut_ptr()
            },
            (F * 4) as u32,
            to.as_mut_ptr(),
            (T * 4) as u32,
            0,
        )
    };
    if d < 0 { Err(d) } else { Ok(d as u64) }
}

/// Fold a 32-bit sum into the 16-bit checksum of what it covers.
#[inline(always)]
fn folded(sum: u64) -> u16 {
    let mut s = sum;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// What an IPv6 packet becomes in IPv4: its addresses and destination port.
pub struct To4 {
    pub src: u32,
    pub dst: u32,
    /// Network order.
    pub dst_port: u16,
}

/// Rewrite an IPv6 TCP/UDP packet (`flow`, its upper layer right behind the fixed
/// header) as IPv4 to `to`. A subprogram, as `v4_to_v6`: its headers are not held on its
/// callers' stacks.
#[inline(never)]
pub fn v6_to_v4(ctx: &TcContext, flow: &Flow6, to: &To4) -> Result<(), i64> {
    let (src, dst, proto, old_port) = (&flow.src, &flow.dst, flow.proto, flow.dst_port);
    let payload_len = u16::from_be(ctx.load::<u16>(IP6_OFF + 4)?);
    let hop_limit = ctx.load::<u8>(IP6_OFF + 7)?;
    let mut old = [
        src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3],
    ];
    let mut new = [to.src, to.dst];
    let addr_diff = diff(&mut old, &mut new)?;
    ctx.change_proto(ETH_P_IP.to_be(), 0)?;
    let mut hdr = Ipv4Header {
        version_ihl: 0x45,
        tos: 0,
        tot_len: (payload_len + 20).to_be(),
        id: 0,
        // Don't fragment: the IPv6 sender does PMTU discovery.
        frag_off: 0x4000u16.to_be(),
        ttl: hop_limit.saturating_sub(1),
        proto,
        check: 0,
        src: to.src,
        dst: to.dst,
    };
    // SAFETY: the header is 20 bytes, 5 words, on this stack.
    let words = unsafe { &mut *(&raw mut hdr).cast::<[u32; 5]>() };
    hdr.check = folded(diff(&mut [], words)?);
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
    let mut old = [src, dst];
    let (s, d) = (to.src, to.dst);
    let mut new = [s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]];
    let addr_diff = diff(&mut old, &mut new)?;
    ctx.change_proto(ETH_P_IPV6.to_be(), 0)?;
    let hdr = Ipv6Header {
        version_class_flow: 0x6000_0000u32.to_be(),
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
