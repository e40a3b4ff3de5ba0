//! Rewriting one end (address and port) of a packet, and choosing SNAT ports.

use aya_ebpf::{helpers::bpf_get_prandom_u32, programs::TcContext};
use netd_common::{
    counters::Reason,
    flow::{FlowEntry, FlowKey},
    maps::NodeConfig,
    published::PortKey,
};

use crate::{
    conntrack::{self, EEXIST},
    csum,
    maps::PUBLISHED_PORTS,
    node_sockets,
    parse::{IP_DST_OFF, IP_SRC_OFF, Packet},
};

/// Tries at finding a free SNAT port for one destination; more rarely succeed.
const SNAT_TRIES: u32 = 32;

/// Write the entry's tuple into the packet, checksums first; unchanged fields are left
/// alone. A fragment after the first has no L4 header: only its addresses change.
/// A subprogram: every translation ends here, and its stack is then not held by each of
/// the programs' branches.
#[inline(never)]
pub fn rewrite(ctx: &TcContext, pkt: &Packet, to: &FlowEntry) -> Result<(), i64> {
    let src = End {
        addr_off: IP_SRC_OFF as u8,
        port_off: pkt.src_port_off,
        old: (pkt.src_addr, pkt.src_port),
        new: (to.src_addr, to.src_port),
    };
    let dst = End {
        addr_off: IP_DST_OFF as u8,
        port_off: pkt.dst_port_off,
        old: (pkt.dst_addr, pkt.dst_port),
        new: (to.dst_addr, to.dst_port),
    };
    rewrite_end(ctx, pkt, &src)?;
    rewrite_end(ctx, pkt, &dst)
}

/// One end of a packet: where its address and port sit, what they are and will be.
struct End {
    addr_off: u8,
    port_off: u8,
    old: (u32, u16),
    new: (u32, u16),
}

#[inline(always)]
fn rewrite_end(ctx: &TcContext, pkt: &Packet, end: &End) -> Result<(), i64> {
    if end.old.0 != end.new.0 {
        csum::addr_changed(ctx, pkt, end.old.0, end.new.0)?;
        ctx.store(end.addr_off as usize, &end.new.0, 0)?;
    }
    if end.old.1 != end.new.1 && pkt.has_l4_header() {
        csum::port_changed(ctx, pkt, end.old.1, end.new.1)?;
        ctx.store(end.port_off as usize, &end.new.1, 0)?;
    }
    Ok(())
}

/// Claim a SNAT port for a flow by inserting its reply-direction entry (`reply_key` with
/// the port filled in) with BPF_NOEXIST: the insert itself is the claim, so two CPUs
/// cannot take the same port.
///
/// The container's own source port is kept when the tuple is free, as Linux's MASQUERADE
/// does: no other flow holds it, it is not published, and no socket of the node uses it.
/// Otherwise a port from the SNAT range: the original one when it is in the range, else
/// from a random start. Returns the claimed port (network order).
#[inline(always)]
pub fn claim_snat_port(
    ctx: &TcContext,
    config: &NodeConfig,
    orig_port: u16,
    reply_key: &mut FlowKey,
    reply: &FlowEntry,
) -> Result<u16, Reason> {
    let min = config.snat_port_min as u32;
    let span = (config.snat_port_max as u32).saturating_sub(min) + 1;
    let orig = u16::from_be(orig_port) as u32;
    let in_range = orig >= min && orig < min + span;
    if !in_range
        && !node_sockets::in_use(
            ctx,
            reply_key.proto,
            reply_key.src_addr,
            reply_key.src_port,
            reply_key.dst_addr,
            orig_port,
        )
    {
        match try_claim(config, orig_port, reply_key, reply) {
            Claim::Taken | Claim::Published => {}
            other => return other.into_result(),
        }
    }
    let mut offset = if in_range {
        orig - min
    } else {
        // SAFETY: a helper with no arguments.
        (unsafe { bpf_get_prandom_u32() }) % span
    };
    for _ in 0..SNAT_TRIES {
        let port = ((min + offset) as u16).to_be();
        offset = (offset + 1) % span;
        match try_claim(config, port, reply_key, reply) {
            Claim::Taken | Claim::Published => continue,
            other => return other.into_result(),
        }
    }
    Err(Reason::DropSnatPortsExhausted)
}

/// The outcome of trying one SNAT port.
enum Claim {
    Ours(u16),
    /// Another flow holds the tuple.
    Taken,
    /// A published port of the node: its replies would be DNATed.
    Published,
    TableFull,
}

impl Claim {
    #[inline(always)]
    fn into_result(self) -> Result<u16, Reason> {
        match self {
            Claim::Ours(port) => Ok(port),
            Claim::TableFull => Err(Reason::DropFlowTableFull),
            Claim::Taken | Claim::Published => Err(Reason::DropSnatPortsExhausted),
        }
    }
}

/// Try to take `port` (network order) for the flow whose reply half is `reply_key`.
#[inline(always)]
fn try_claim(config: &NodeConfig, port: u16, reply_key: &mut FlowKey, reply: &FlowEntry) -> Claim {
    if is_published(config.snat_addr, port, reply_key.proto) {
        return Claim::Published;
    }
    reply_key.dst_port = port;
    match conntrack::claim(reply_key, reply) {
        Ok(()) => Claim::Ours(port),
        Err(EEXIST) => Claim::Taken,
        Err(_) => Claim::TableFull,
    }
}

/// A published port of the node is never handed out for SNAT: its replies would be DNATed.
#[inline(always)]
fn is_published(addr: u32, port: u16, proto: u8) -> bool {
    let exact = PortKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    let wildcard = PortKey { addr: 0, ..exact };
    PUBLISHED_PORTS.get_ptr(exact).is_some() || PUBLISHED_PORTS.get_ptr(wildcard).is_some()
}
