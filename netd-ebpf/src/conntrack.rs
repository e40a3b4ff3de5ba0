//! The connection table: find a packet's flow entry, keep it fresh, create both halves.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
};
use netd_common::flow::{FlowEntry, FlowKey};

use crate::{maps::FLOWS, parse::Packet};

/// last-seen is written at most this often, so a busy flow does not dirty its cache line
/// on every packet.
const TOUCH_EVERY_NS: u64 = 1_000_000_000;

#[inline(always)]
pub fn key_of(pkt: &Packet, dir: u8) -> FlowKey {
    FlowKey {
        src_addr: pkt.src_addr,
        dst_addr: pkt.dst_addr,
        src_port: pkt.src_port,
        dst_port: pkt.dst_port,
        proto: pkt.proto,
        dir,
        _pad: [0; 2],
    }
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The entry for this packet's direction, with its last-seen time and TCP flags updated.
#[inline(always)]
pub fn lookup(key: &FlowKey, pkt: &Packet) -> Option<FlowEntry> {
    let entry = FLOWS.get_ptr_mut(key)?;
    // SAFETY: a pointer into the map's value; racing writers only ever set bits and
    // timestamps, so a torn read is harmless.
    unsafe {
        let now = now();
        if now.wrapping_sub((*entry).last_seen_ns) > TOUCH_EVERY_NS {
            (*entry).last_seen_ns = now;
        }
        if (*entry).seen & pkt.seen != pkt.seen {
            (*entry).seen |= pkt.seen;
        }
        Some(*entry)
    }
}

/// A new entry for one direction, seen now.
#[inline(always)]
pub fn new_entry(
    pkt: &Packet,
    rewrite: u8,
    origin: u8,
    addr: u32,
    port: u16,
    ifindex: u32,
) -> FlowEntry {
    let now = now();
    FlowEntry {
        new_addr: addr,
        new_port: port,
        rewrite,
        origin,
        seen: pkt.seen,
        _pad: [0; 3],
        ifindex,
        created_ns: now,
        last_seen_ns: now,
    }
}

/// The partner half of a flow whose first half is already in the table. On failure the
/// first half is removed again, so the table never holds half a flow.
#[inline(always)]
pub fn insert_partner(first: &FlowKey, partner: &FlowKey, entry: &FlowEntry) -> Result<(), ()> {
    if FLOWS.insert(partner, entry, BPF_ANY as u64).is_err() {
        let _ = FLOWS.remove(first);
        return Err(());
    }
    Ok(())
}

/// Insert the first half of a new flow; `false` if another CPU created it meanwhile or the
/// table is full.
#[inline(always)]
pub fn insert_first(key: &FlowKey, entry: &FlowEntry) -> bool {
    FLOWS.insert(key, entry, BPF_NOEXIST as u64).is_ok()
}
