//! Checksum fix-ups with the kernel's incremental helpers, with the flags each field needs:
//! an address is in the TCP/UDP pseudo header (BPF_F_PSEUDO_HDR), so that on a
//! CHECKSUM_PARTIAL skb only the pseudo-header part is adjusted; UDP's zero checksum means
//! "none" and must stay zero (BPF_F_MARK_MANGLED_0); ICMP has no pseudo header.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netd_common::{PROTO_ICMP, PROTO_UDP};

use crate::parse::{IP_CSUM_OFF, Packet};

#[inline(always)]
fn l4_flags(pkt: &Packet) -> u64 {
    if pkt.proto == PROTO_UDP {
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

/// Bytes inside an ICMP error's payload changed: only the ICMP checksum covers them.
#[inline(always)]
pub fn icmp_payload_changed(ctx: &TcContext, old: u64, new: u64, size: u64) -> Result<(), i64> {
    ctx.l4_csum_replace(crate::parse::ICMP_CSUM_OFF, old, new, size)
}
