//! ICMP errors that quote a translated packet (port unreachable, fragmentation needed,
//! time exceeded, parameter problem) belong to the quoted packet's flow: they travel
//! against it, so they are found under the quote reversed, and translated like the
//! flow's packets in their direction are. Otherwise path MTU discovery and "connection
//! refused" silently break. The quoted L4 checksum is left as it was (nobody verifies a
//! truncated quote); the quoted IP checksum and the ICMP checksum are fixed.

use aya_ebpf::programs::TcContext;
use netd_common::{
    counters::Reason,
    flow::{FlowEntry, FlowKey},
};

use crate::{
    conntrack::find,
    csum,
    parse::{
        INNER_IP_CSUM_OFF, INNER_IP_DST_OFF, INNER_IP_SRC_OFF, IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF,
        Packet,
    },
    program::{DROP, PASS, Verdict},
};

/// An ICMP error seen at `dir`, translated as its flow's packets are; `NoMatch` when it
/// is about no flow. A subprogram, so that the programs do not hold its stack while they
/// handle all other packets.
#[inline(never)]
pub fn translate_error_of_flow(ctx: &TcContext, pkt: &Packet, dir: u8) -> Verdict {
    match error_flow(pkt, dir) {
        Some((key, entry)) => translate_error(ctx, pkt, &key, &entry),
        None => (Reason::NoMatch, PASS),
    }
}

/// The flow half an ICMP error (`pkt` is its quoted packet) travels with at `dir`: the
/// one whose key is the quote reversed. An error goes to the source of the packet it
/// quotes; one addressed anywhere else is not that flow's (else any party to a flow
/// could send errors anywhere, translated and unpoliced), and is judged as any packet.
#[inline(always)]
pub fn error_flow(pkt: &Packet, dir: u8) -> Option<(FlowKey, FlowEntry)> {
    if pkt.ip_dst != pkt.src_addr {
        return None;
    }
    let key = FlowKey {
        src_addr: pkt.dst_addr,
        dst_addr: pkt.src_addr,
        src_port: pkt.dst_port,
        dst_port: pkt.src_port,
        proto: pkt.proto,
        dir,
        _pad: [0; 2],
    };
    find(&key).map(|(_, entry)| (key, entry))
}

/// Translate an ICMP error as its flow's half `key`/`entry` translates packets: the
/// quote's ends become the ones the flow's other side knows, the error goes to the
/// translated destination, and a source the flow hides (a masqueraded or published end)
/// is hidden in the error too, whoever on the way sent it.
#[inline(always)]
pub fn translate_error(ctx: &TcContext, pkt: &Packet, key: &FlowKey, entry: &FlowEntry) -> Verdict {
    // `error_flow` saw to it that the error goes to the flow's destination end.
    let outer_dst = Outer {
        off: IP_DST_OFF,
        old: pkt.ip_dst,
        new: entry.dst_addr,
        applies: true,
    };
    let outer_src = Outer {
        off: IP_SRC_OFF,
        old: 0,
        new: entry.src_addr,
        applies: entry.src_addr != key.src_addr,
    };
    // The quoted packet went the other way: its source is the flow's destination end.
    let quoted_src = Quoted {
        addr_off: INNER_IP_SRC_OFF,
        port_off: pkt.src_port_off as usize,
        old: (pkt.src_addr, pkt.src_port),
        new: (entry.dst_addr, entry.dst_port),
    };
    let quoted_dst = Quoted {
        addr_off: INNER_IP_DST_OFF,
        port_off: pkt.dst_port_off as usize,
        old: (pkt.dst_addr, pkt.dst_port),
        new: (entry.src_addr, entry.src_port),
    };
    let result = rewrite_outer(ctx, &outer_dst)
        .and_then(|()| rewrite_outer(ctx, &outer_src))
        .and_then(|()| rewrite_quoted(ctx, &quoted_src))
        .and_then(|()| rewrite_quoted(ctx, &quoted_dst));
    match result {
        Ok(()) => (Reason::IcmpErrorTranslated, PASS),
        Err(_) => (Reason::DropRewriteFailed, DROP),
    }
}

/// An address of the error's own header.
struct Outer {
    off: usize,
    /// As parsed; 0: read it here.
    old: u32,
    new: u32,
    applies: bool,
}

/// One end of the quoted packet.
struct Quoted {
    addr_off: usize,
    port_off: usize,
    old: (u32, u16),
    new: (u32, u16),
}

#[inline(always)]
fn rewrite_outer(ctx: &TcContext, outer: &Outer) -> Result<(), i64> {
    if !outer.applies {
        return Ok(());
    }
    let old = if outer.old != 0 {
        outer.old
    } else {
        ctx.load(outer.off)?
    };
    if old != outer.new {
        // ICMP has no pseudo header: only the outer IP checksum covers the outer address.
        ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, outer.new as u64, 4)?;
        ctx.store(outer.off, &outer.new, 0)?;
    }
    Ok(())
}

#[inline(always)]
fn rewrite_quoted(ctx: &TcContext, quoted: &Quoted) -> Result<(), i64> {
    if quoted.old.0 != quoted.new.0 {
        let csum_old: u16 = ctx.load(INNER_IP_CSUM_OFF)?;
        ctx.l3_csum_replace(
            INNER_IP_CSUM_OFF,
            quoted.old.0 as u64,
            quoted.new.0 as u64,
            4,
        )?;
        let csum_new: u16 = ctx.load(INNER_IP_CSUM_OFF)?;
        ctx.store(quoted.addr_off, &quoted.new.0, 0)?;
        csum::icmp_payload_changed(ctx, quoted.old.0 as u64, quoted.new.0 as u64, 4)?;
        csum::icmp_payload_changed(ctx, csum_old as u64, csum_new as u64, 2)?;
    }
    if quoted.old.1 != quoted.new.1 {
        ctx.store(quoted.port_off, &quoted.new.1, 0)?;
        csum::icmp_payload_changed(ctx, quoted.old.1 as u64, quoted.new.1 as u64, 2)?;
    }
    Ok(())
}
