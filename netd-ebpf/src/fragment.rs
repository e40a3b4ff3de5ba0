//! Fragmented datagrams: only the first fragment carries the ports a flow is found by.
//! Each program remembers them by (source, destination, protocol, IP ID) when a first
//! fragment passes, as Cilium's fragment map does, and gives them to the fragments that
//! follow, so that those are translated with their datagram (addresses only: the L4
//! checksum, in the first fragment, covers the whole datagram and is fixed there). A
//! following fragment that comes before its first, or so long after that its IP ID may
//! belong to another datagram, cannot be told where it goes: it is dropped and counted,
//! as the datagram could not be reassembled where it was headed anyway.

use aya_ebpf::bindings::BPF_ANY;
use netd_common::{
    counters::Reason,
    maps::{FRAGMENT_TIMEOUT_NS, FragmentKey, FragmentPorts},
};

use crate::{
    conntrack::now,
    maps::FRAGMENTS,
    parse::{Fragment, Packet},
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
    match pkt.fragment {
        Fragment::Whole => {}
        Fragment::First => {
            let ports = FragmentPorts {
                src_port: pkt.src_port,
                dst_port: pkt.dst_port,
                _pad: 0,
                seen_ns: now(),
            };
            // Best effort: without it the following fragments are dropped and counted.
            let _ = FRAGMENTS.insert(key, ports, BPF_ANY as u64);
        }
        Fragment::Following => {
            // SAFETY: a copy out of the map value.
            let ports = unsafe { FRAGMENTS.get(key) }
                .copied()
                .filter(|p| now().wrapping_sub(p.seen_ns) < FRAGMENT_TIMEOUT_NS)
                .ok_or(Reason::DropFragmentBeforeFirst)?;
            pkt.src_port = ports.src_port;
            pkt.dst_port = ports.dst_port;
        }
    }
    Ok(pkt)
}
