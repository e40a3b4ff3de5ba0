//! Rewriting one end (address and port) of a packet, and choosing SNAT ports, for both
//! address families: what differs between them is behind `Nat` (the node's tables) and
//! `Translatable` (where a packet's fields are and how its checksums follow).

use aya_ebpf::{
    bindings::BPF_F_PSEUDO_HDR, helpers::bpf_get_prandom_u32, maps::HashMap, programs::TcContext,
};
use netd_common::{
    counters::Reason,
    flow::{FlowEntry, FlowEntry6, FlowEntryOf, FlowKeyOf},
    maps::{Addr6, NetworkInfo, NodeConfig},
    published::{Backend, Backend6, BackendOf, PortKey, PortKey6, PortKeyOf},
};

use crate::{
    conntrack::{self, EEXIST, Family, Tracked},
    csum,
    maps::{
        ENDPOINT_VETHS, ENDPOINT_VETHS6, NODE_ADDRS, NODE_ADDRS6, NODE_CONFIG6, PUBLISHED_PORTS,
        PUBLISHED_PORTS6,
    },
    node_sockets,
    parse::{IP_DST_OFF, IP_SRC_OFF, Packet},
    parse6::{Flow6, IP6_DST_OFF, IP6_SRC_OFF},
    policy, policy6, program,
};

/// What masquerading needs of an address family's tables.
pub trait Nat: Family {
    /// The network `addr` belongs to.
    fn network_of(addr: Self) -> Option<NetworkInfo>;
    /// The host-side veth of the endpoint with address `addr`; 0 when unknown.
    fn veth_of(addr: Self) -> u32;
    /// Whether `addr` is one of the node's own (its gateway on a network, say): what the
    /// node sends from it is its own, never masqueraded.
    fn is_node_addr(addr: Self) -> bool;
    /// The address masqueraded traffic leaves with; `None` while the node has none.
    fn snat_addr(config: &NodeConfig) -> Option<Self>;
    /// Why masqueraded traffic is dropped while there is no such address.
    const NO_SNAT_ADDRESS: Reason;
    /// Whether a packet from `remote:remote_port` to `local:port` would reach a socket of
    /// the node (see `node_sockets::in_use`).
    fn socket_in_use(
        ctx: &TcContext,
        proto: u8,
        remote: Self,
        remote_port: u16,
        local: Self,
        port: u16,
    ) -> bool;
    /// The family's published ports.
    fn ports() -> &'static HashMap<PortKeyOf<Self>, BackendOf<Self>>;
    /// Loopback: nothing from outside addressed to it is ever published.
    fn is_loopback(addr: Self) -> bool;
}

impl Nat for u32 {
    #[inline(always)]
    fn network_of(addr: u32) -> Option<NetworkInfo> {
        policy::network_of(addr)
    }
    #[inline(always)]
    fn veth_of(addr: u32) -> u32 {
        // SAFETY: a copy out of the map value.
        unsafe { ENDPOINT_VETHS.get(addr) }.copied().unwrap_or(0)
    }
    #[inline(always)]
    fn is_node_addr(addr: u32) -> bool {
        NODE_ADDRS.get_ptr(addr).is_some()
    }
    #[inline(always)]
    fn snat_addr(config: &NodeConfig) -> Option<u32> {
        (config.snat_addr != 0).then_some(config.snat_addr)
    }
    const NO_SNAT_ADDRESS: Reason = Reason::DropNoConfig;
    #[inline(always)]
    fn socket_in_use(
        ctx: &TcContext,
        proto: u8,
        remote: u32,
        remote_port: u16,
        local: u32,
        port: u16,
    ) -> bool {
        node_sockets::in_use(ctx, proto, remote, remote_port, local, port)
    }
    #[inline(always)]
    fn ports() -> &'static HashMap<PortKey, Backend> {
        &PUBLISHED_PORTS
    }
    #[inline(always)]
    fn is_loopback(addr: u32) -> bool {
        program::is_loopback(addr)
    }
}

impl Nat for Addr6 {
    #[inline(always)]
    fn network_of(addr: Addr6) -> Option<NetworkInfo> {
        policy6::network_of(addr)
    }
    #[inline(always)]
    fn veth_of(addr: Addr6) -> u32 {
        // SAFETY: a copy out of the map value.
        unsafe { ENDPOINT_VETHS6.get(addr) }.copied().unwrap_or(0)
    }
    #[inline(always)]
    fn is_node_addr(addr: Addr6) -> bool {
        NODE_ADDRS6.get_ptr(addr).is_some()
    }
    #[inline(always)]
    fn snat_addr(_: &NodeConfig) -> Option<Addr6> {
        NODE_CONFIG6
            .get(0)
            .map(|c| c.snat_addr)
            .filter(|a| *a != [0; 4])
    }
    const NO_SNAT_ADDRESS: Reason = Reason::DropIpv6NoSnatAddress;
    #[inline(always)]
    fn socket_in_use(
        ctx: &TcContext,
        proto: u8,
        remote: Addr6,
        remote_port: u16,
        local: Addr6,
        port: u16,
    ) -> bool {
        node_sockets::in_use6(ctx, proto, remote, remote_port, local, port)
    }
    #[inline(always)]
    fn ports() -> &'static HashMap<PortKey6, Backend6> {
        &PUBLISHED_PORTS6
    }
    /// `::1`.
    #[inline(always)]
    fn is_loopback(addr: Addr6) -> bool {
        addr == [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]
    }
}

/// The published port a packet to `dst:port` is addressed to: the binding on the exact
/// address wins over the wildcard; the wildcard only answers on the node's own
/// addresses. A packet addressed to loopback never matches: it can only have come from
/// outside (TC runs before the kernel drops such martians), and bindings on loopback
/// must stay local.
#[inline(always)]
pub fn published<A: Nat>(dst: A, port: u16, proto: u8) -> Option<BackendOf<A>> {
    if A::is_loopback(dst) {
        return None;
    }
    binding(dst, port, proto, A::is_node_addr(dst))
}

/// The binding of `addr:port`: the one on that exact address, else, where
/// `every_address_answers`, the one on every address of the family.
#[inline(always)]
pub fn binding<A: Nat>(
    addr: A,
    port: u16,
    proto: u8,
    every_address_answers: bool,
) -> Option<BackendOf<A>> {
    let exact = PortKeyOf {
        addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: a copy out of the map value.
    if let Some(backend) = unsafe { A::ports().get(exact) } {
        return Some(*backend);
    }
    if !every_address_answers {
        return None;
    }
    let wildcard = PortKeyOf {
        addr: A::default(),
        ..exact
    };
    // SAFETY: as above.
    unsafe { A::ports().get(wildcard) }.copied()
}

/// Whether `port` of `addr` is published, exactly or by the wildcard binding (its replies
/// would be DNATed).
#[inline(always)]
fn is_published<A: Nat>(addr: A, port: u16, proto: u8) -> bool {
    let exact = PortKeyOf {
        addr,
        port,
        proto,
        _pad: 0,
    };
    let wildcard = PortKeyOf {
        addr: A::default(),
        ..exact
    };
    A::ports().get_ptr(exact).is_some() || A::ports().get_ptr(wildcard).is_some()
}

/// A parsed packet whose tuple a flow entry can be written into.
pub trait Translatable<A>: Tracked<A> {
    fn rewrite(&self, ctx: &TcContext, to: &FlowEntryOf<A>) -> Result<(), i64>;
}

impl Translatable<u32> for Packet {
    #[inline(always)]
    fn rewrite(&self, ctx: &TcContext, to: &FlowEntry) -> Result<(), i64> {
        rewrite(ctx, self, to)
    }
}

impl Translatable<Addr6> for Flow6 {
    #[inline(always)]
    fn rewrite(&self, ctx: &TcContext, to: &FlowEntry6) -> Result<(), i64> {
        rewrite6(ctx, self, to)
    }
}

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
pub fn claim_snat_port<A: Nat>(
    ctx: &TcContext,
    config: &NodeConfig,
    orig_port: u16,
    reply_key: &mut FlowKeyOf<A>,
    reply: &FlowEntryOf<A>,
) -> Result<u16, Reason> {
    let min = config.snat_port_min as u32;
    let span = (config.snat_port_max as u32).saturating_sub(min) + 1;
    let orig = u16::from_be(orig_port) as u32;
    let in_range = orig >= min && orig < min + span;
    if !in_range
        && !A::socket_in_use(
            ctx,
            reply_key.proto,
            reply_key.src_addr,
            reply_key.src_port,
            reply_key.dst_addr,
            orig_port,
        )
    {
        match try_claim(orig_port, reply_key, reply) {
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
        match try_claim(port, reply_key, reply) {
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

/// Try to take `port` (network order) for the flow whose reply half is `reply_key`
/// (addressed to the SNAT address). A published port of the node is never handed out:
/// its replies would be DNATed.
#[inline(always)]
fn try_claim<A: Nat>(port: u16, reply_key: &mut FlowKeyOf<A>, reply: &FlowEntryOf<A>) -> Claim {
    if is_published(reply_key.dst_addr, port, reply_key.proto) {
        return Claim::Published;
    }
    reply_key.dst_port = port;
    match conntrack::claim(reply_key, reply) {
        Ok(()) => Claim::Ours(port),
        Err(EEXIST) => Claim::Taken,
        Err(_) => Claim::TableFull,
    }
}

/// `rewrite` for IPv6: no header checksum, but the addresses are in the pseudo header of
/// TCP, UDP and ICMPv6 alike. A subprogram, as `rewrite`.
#[inline(never)]
pub fn rewrite6(ctx: &TcContext, pkt: &Flow6, to: &FlowEntry6) -> Result<(), i64> {
    // A fragment after the first has no upper-layer header: its addresses only (the
    // datagram's checksum is in the first fragment, fixed there).
    let (csum, flags) = if pkt.has_l4_header() {
        (pkt.l4_csum_off as usize, csum::l4_flags6(pkt.proto))
    } else {
        (0, csum::NO_L4)
    };
    if pkt.src != to.src_addr {
        csum::addr6_changed(ctx, csum, flags, IP6_SRC_OFF, &pkt.src, &to.src_addr)?;
    }
    if pkt.dst != to.dst_addr {
        csum::addr6_changed(ctx, csum, flags, IP6_DST_OFF, &pkt.dst, &to.dst_addr)?;
    }
    if !pkt.has_l4_header() {
        return Ok(());
    }
    let ports = [
        (pkt.src_port_off, pkt.src_port, to.src_port),
        (pkt.dst_port_off, pkt.dst_port, to.dst_port),
    ];
    for (off, old, new) in ports {
        if old != new {
            // Not BPF_F_PSEUDO_HDR: ports are not in the pseudo header.
            csum::field6_changed(ctx, csum, flags & !(BPF_F_PSEUDO_HDR as u64), old, new)?;
            ctx.store(off as usize, &new, 0)?;
        }
    }
    Ok(())
}
