//! Fragmented datagrams: only the first fragment carries the ports a flow is found by.
//! Each program remembers them by (source, destination, protocol, IP ID) when a first
//! fragment passes, as Cilium's fragment map does, and gives them to the fragments that
//! follow, so that those are translated with their datagram (addresses only: the L4
//! checksum, in the first fragment, covers the whole datagram and is fixed there). A
//! following fragment that comes before its first, or so long after that its IP ID may
//! belong to another datagram, cannot be told where it goes: it is dropped and counted,
//! as the datagram could not be reassembled where it was headed anyway. IPv6 datagrams
//! (`track6`) have a map of their own, keyed by their Fragment header's identification.

use aya_ebpf::{bindings::BPF_ANY, maps::LruHashMap};
use netd_common::{
    counters::Reason,
    maps::{FRAGMENT_TIMEOUT_NS, FragmentKey, FragmentKey6, FragmentPorts},
};

use crate::{
    conntrack::now,
    maps::{FRAGMENTS, FRAGMENTS6},
    parse::{Fragment, Packet},
    parse6::Flow6,
};

/// `pkt` as a program handles it: a first fragment's ports remembered, a following
/// fragment's filled in.
#[inline(always)]
pub fn track(mut pkt: Packet) -> Result<Packet, Reason> {
    let key = FragmentKey {
        src_addr: pkt.src_addr,
        dst_addr: pkt.dst_addr,
        id: pkt.ip_id,
        proto: pkt.proto,
        _pad: 0,
    };
    let mut ports = (pkt.src_port, pkt.dst_port);
    ports_of(&FRAGMENTS, &key, pkt.fragment, &mut ports)?;
    pkt.src_port = ports.0;
    pkt.dst_port = ports.1;
    Ok(pkt)
}

/// `track` for an IPv6 packet's flow facts.
#[inline(always)]
pub fn track6(flow: &mut Flow6) -> Result<(), Reason> {
    let key = FragmentKey6 {
        src_addr: flow.src,
        dst_addr: flow.dst,
        id: flow.frag_id,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let mut ports = (flow.src_port, flow.dst_port);
    ports_of(&FRAGMENTS6, &key, flow.fragment, &mut ports)?;
    flow.src_port = ports.0;
    flow.dst_port = ports.1;
    Ok(())
}

/// A datagram's ports (source, destination; network order) through its fragments:
/// remembered under `key` from its first fragment, filled in for the following ones.
#[inline(always)]
fn ports_of<K>(
    map: &LruHashMap<K, FragmentPorts>,
    key: &K,
    fragment: Fragment,
    ports: &mut (u16, u16),
) -> Result<(), Reason> {
    match fragment {
        Fragment::Whole => {}
        Fragment::First => {
            let first = FragmentPorts {
                src_port: ports.0,
                dst_port: ports.1,
                _pad: 0,
                seen_ns: now(),
            };
            // Best effort: without it the following fragments are dropped and counted.
            let _ = map.insert(key, first, BPF_ANY as u64);
        }
        Fragment::Following => {
            // SAFETY: a copy out of the map value.
            let first = unsafe { map.get(key) }
                .copied()
                .filter(|p| now().wrapping_sub(p.seen_ns) < FRAGMENT_TIMEOUT_NS)
                .ok_or(Reason::DropFragmentBeforeFirst)?;
            *ports = (first.src_port, first.dst_port);
        }
    }
    Ok(())
}
