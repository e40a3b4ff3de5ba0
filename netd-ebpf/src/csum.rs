//! Checksum fix-ups with the kernel's incremental helpers, with the flags each field needs:
//! an address is in the TCP/UDP pseudo header (BPF_F_PSEUDO_HDR), so that on a
//! CHECKSUM_PARTIAL skb only the pseudo-header part is adjusted; UDP's zero checksum means
//! "none" and must stay zero (BPF_F_MARK_MANGLED_0); ICMP has no pseudo header.
//!
//! IPv6 has no header checksum, and ICMPv6 has a pseudo header. Its 16-byte addresses go
//! in as a difference (`bpf_csum_diff`), and are stored with BPF_F_RECOMPUTE_CSUM: on a
//! CHECKSUM_COMPLETE skb, `bpf_l4_csum_replace` with BPF_F_PSEUDO_HDR adjusts `skb->csum`
//! for the L4 checksum's change as if a header checksum had absorbed the address change,
//! as IPv4's does; the store puts the address change into `skb->csum` too, so the two
//! cancel out as they do in the packet (the kernel's own fix, BPF_F_IPV6, is not in every
//! kernel netd runs on).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM},
    helpers::bpf_csum_diff,
    programs::TcContext,
};
use netd_common::{PROTO_ICMP, PROTO_UDP, maps::Addr6};

use crate::parse::{IP_CSUM_OFF, Packet};

#[inline(always)]
fn l4_flags(pkt: &Packet) -> u64 {
    udp_flags(pkt.proto)
}

#[inline(always)]
fn udp_flags(proto: u8) -> u64 {
    if proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    }
}

/// Fix the IPv4 header and L4 checksums for a change of the packet's own address.
#[inline(always)]
pub fn addr_changed(ctx: &TcContext, pkt: &Packet, old: u32, new: u32) -> Result<(), i64> {
    if pkt.proto != PROTO_ICMP && pkt.has_l4_header() {
        ctx.l4_csum_replace(
            pkt.l4_csum_off as usize,
            old as u64,
            new as u64,
            BPF_F_PSEUDO_HDR as u64 | 4 | l4_flags(pkt),
        )?;
    }
    ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 4)
}

/// Fix the L4 checksum for a port (or ICMP echo identifier) change.
#[inline(always)]
pub fn port_changed(ctx: &TcContext, pkt: &Packet, old: u16, new: u16) -> Result<(), i64> {
    ctx.l4_csum_replace(
        pkt.l4_csum_off as usize,
        old as u64,
        new as u64,
        2 | l4_flags(pkt),
    )
}

/// `port_changed` for IPv6: a 16-bit field under the checksum at `csum_off` changed
/// (`flags`: `l4_flags6`; 0 for bytes an ICMPv6 error quotes).
#[inline(always)]
pub fn field6_changed(
    ctx: &TcContext,
    csum_off: usize,
    flags: u64,
    old: u16,
    new: u16,
) -> Result<(), i64> {
    ctx.l4_csum_replace(csum_off, old as u64, new as u64, 2 | flags)
}

/// The flags an IPv6 packet's own upper-layer checksum is fixed with: its addresses are
/// in its pseudo header (TCP, UDP and ICMPv6 alike), and UDP's zero stays zero.
#[inline(always)]
pub fn l4_flags6(proto: u8) -> u64 {
    BPF_F_PSEUDO_HDR as u64 | udp_flags(proto)
}

/// `addr6_changed`'s flags for a packet with no upper-layer header to fix (a fragment
/// after the first): the address is stored, `skb->csum` following, and nothing else.
pub const NO_L4: u64 = 1 << 63;

/// Write a new IPv6 address at `off` and fix the checksum at `csum_off` for it. `flags`
/// with BPF_F_PSEUDO_HDR: the address is the packet's own (in the pseudo header), and is
/// stored with BPF_F_RECOMPUTE_CSUM (see the module's comment); without: bytes an ICMPv6
/// error quotes, which only its checksum covers, the two changes cancelling in
/// `skb->csum` as they do in the packet. `NO_L4`: see there.
#[inline(always)]
pub fn addr6_changed(
    ctx: &TcContext,
    csum_off: usize,
    flags: u64,
    off: usize,
    old: &Addr6,
    new: &Addr6,
) -> Result<(), i64> {
    if flags != NO_L4 {
        let mut from = *old;
        let mut to = *new;
        // SAFETY: the helper reads 16 bytes of each buffer, both on our stack.
        let diff = unsafe {
            bpf_csum_diff(
                from.as_mut_ptr(),
                size_of::<Addr6>() as u32,
                to.as_mut_ptr(),
                size_of::<Addr6>() as u32,
                0,
            )
        };
        if diff < 0 {
            return Err(diff);
        }
        ctx.l4_csum_replace(csum_off, 0, diff as u64, flags)?;
    }
    let recompute = if flags & (BPF_F_PSEUDO_HDR as u64 | NO_L4) != 0 {
        BPF_F_RECOMPUTE_CSUM as u64
    } else {
        0
    };
    ctx.store(off, new, recompute)
}

/// Bytes inside an ICMP error's payload changed: only the ICMP checksum covers them.
#[inline(always)]
pub fn icmp_payload_changed(ctx: &TcContext, old: u64, new: u64, size: u64) -> Result<(), i64> {
    ctx.l4_csum_replace(crate::parse::ICMP_CSUM_OFF, old, new, size)
}

/// The one's-complement sum of `from` replaced by `to` (`bpf_csum_diff`).
#[inline(always)]
pub fn diff<const F: usize, const T: usize>(
    from: &mut [u32; F],
    to: &mut [u32; T],
) -> Result<u64, i64> {
    diff_from(0, from, to)
}

/// `diff` added to the sum `seed`.
#[inline(always)]
pub fn diff_from<const F: usize, const T: usize>(
    seed: u32,
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
            if T == 0 {
                core::ptr::null_mut()
            } else {
                to.as_mut_ptr()
            },
            (T * 4) as u32,
            seed,
        )
    };
    if d < 0 { Err(d) } else { Ok(d as u64) }
}

/// Fold a 32-bit sum into the 16-bit checksum of what it covers.
#[inline(always)]
pub fn folded(sum: u64) -> u16 {
    let mut s = sum;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}
