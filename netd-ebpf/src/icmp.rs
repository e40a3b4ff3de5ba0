//! ICMP errors that quote a translated packet (port unreachable, fragmentation needed,
//! time exceeded, parameter problem): the outer header and the quoted packet are
//! translated like the flow's replies would be, or path MTU discovery and "connection
//! refused" silently break. The quoted L4 checksum is left as it was (nobody verifies a
//! truncated quote); the quoted IP checksum and the ICMP checksum are fixed.

use aya_ebpf::programs::TcContext;
use netd_common::{
    counters::Reason,
    flow::{DIR_INGRESS, FlowKey},
};

use crate::{
    csum,
    maps::FLOWS,
    parse::{
        INNER_IP_CSUM_OFF, INNER_IP_DST_OFF, INNER_IP_SRC_OFF, IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF,
        Packet,
    },
    program::{DROP, PASS, Verdict},
};

/// `pkt` is the quoted packet of an ICMP error seen at `dir`.
#[inline(always)]
pub fn translate_error(ctx: &TcContext, pkt: &Packet, dir: u8) -> Verdict {
    // The quoted packet went the other way; a reply to it is what the table knows.
    let key = FlowKey {
        src_addr: pkt.dst_addr,
        dst_addr: pkt.src_addr,
        src_port: pkt.dst_port,
        dst_port: pkt.src_port,
        proto: pkt.proto,
        dir,
        _pad: [0; 2],
    };
    // SAFETY: a copy out of the map value.
    let Some(entry) = (unsafe { FLOWS.get(&key) }).copied() else {
        return (Reason::NoMatch, PASS);
    };
    // A reply is written as `entry`: at ingress its destination is the inside end (the
    // error goes there, and the quote's source becomes it); at egress its source is the
    // outside end (the error comes from there, and the quote's destination becomes it).
    let result = if dir == DIR_INGRESS {
        let quoted = Quoted {
            addr_off: INNER_IP_SRC_OFF,
            port_off: pkt.src_port_off,
            old: (pkt.src_addr, pkt.src_port),
        };
        translate(ctx, IP_DST_OFF, &quoted, (entry.dst_addr, entry.dst_port))
    } else {
        let quoted = Quoted {
            addr_off: INNER_IP_DST_OFF,
            port_off: pkt.dst_port_off,
            old: (pkt.dst_addr, pkt.dst_port),
        };
        translate(ctx, IP_SRC_OFF, &quoted, (entry.src_addr, entry.src_port))
    };
    match result {
        Ok(()) => (Reason::IcmpErrorTranslated, PASS),
        Err(_) => (Reason::DropRewriteFailed, DROP),
    }
}

/// One end of the quoted packet.
struct Quoted {
    addr_off: usize,
    port_off: usize,
    old: (u32, u16),
}

/// Write `new` into the quoted end, and its address into the outer header at `outer_off`.
#[inline(always)]
fn translate(
    ctx: &TcContext,
    outer_off: usize,
    quoted: &Quoted,
    new: (u32, u16),
) -> Result<(), i64> {
    let outer_old: u32 = ctx.load(outer_off)?;
    if outer_old != new.0 {
        // ICMP has no pseudo header: only the outer IP checksum covers the outer address.
        ctx.l3_csum_replace(IP_CSUM_OFF, outer_old as u64, new.0 as u64, 4)?;
        ctx.store(outer_off, &new.0, 0)?;
    }
    if quoted.old.0 != new.0 {
        let csum_old: u16 = ctx.load(INNER_IP_CSUM_OFF)?;
        ctx.l3_csum_replace(INNER_IP_CSUM_OFF, quoted.old.0 as u64, new.0 as u64, 4)?;
        let csum_new: u16 = ctx.load(INNER_IP_CSUM_OFF)?;
        ctx.store(quoted.addr_off, &new.0, 0)?;
        csum::icmp_payload_changed(ctx, quoted.old.0 as u64, new.0 as u64, 4)?;
        csum::icmp_payload_changed(ctx, csum_old as u64, csum_new as u64, 2)?;
    }
    if quoted.old.1 != new.1 {
        ctx.store(quoted.port_off, &new.1, 0)?;
        csum::icmp_payload_changed(ctx, quoted.old.1 as u64, new.1 as u64, 2)?;
    }
    Ok(())
}
