//! The connection table: find a packet's flow entry, keep it fresh, create both halves.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
};
use netd_common::flow::{FLAG_REPLY, FlowEntry, FlowKey, SEEN_CLOSED, SEEN_SYN};

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
/// `None` also when the flow lost its other half while idle (see `still_whole`): the
/// packet then starts the flow over.
#[inline(always)]
pub fn lookup(key: &FlowKey, pkt: &Packet) -> Option<FlowEntry> {
    let entry = FLOWS.get_ptr_mut(key)?;
    // SAFETY: a pointer into the map's value; racing writers only ever set bits and
    // timestamps, so a torn read is harmless.
    let (copy, idle) = unsafe {
        let now = now();
        let idle = now.wrapping_sub((*entry).last_seen_ns) > TOUCH_EVERY_NS;
        if idle {
            (*entry).last_seen_ns = now;
        }
        let seen = updated_seen((*entry).seen, pkt.seen);
        if seen != (*entry).seen {
            (*entry).seen = seen;
        }
        (*entry, idle)
    };
    if idle && !still_whole(key, &copy) {
        return None;
    }
    Some(copy)
}

/// After an idle half was revived: whether the flow is still whole. The collector's
/// `flow_sweep` may be removing this flow's halves on another CPU at this moment: a half
/// removed under the packet is put back; if its partner is gone the half is removed too,
/// so the caller creates both again rather than translating into a flow whose replies
/// would find nothing.
#[inline(always)]
fn still_whole(key: &FlowKey, entry: &FlowEntry) -> bool {
    // SAFETY: only presence is read.
    if unsafe { FLOWS.get(key) }.is_none() {
        let _ = FLOWS.insert(key, entry, BPF_NOEXIST as u64);
    }
    if unsafe { FLOWS.get(&key.partner(entry)) }.is_some() {
        return true;
    }
    let _ = FLOWS.remove(key);
    false
}

/// The `SEEN_*` bits of a flow half after a packet with `pkt` bits. A SYN on a half that
/// has closed (FIN or RST seen) starts a new connection on the same tuple, as a client
/// reusing its port does: the half starts over, so the new connection gets the timeouts
/// of a live one rather than the 10 s of a closing one.
#[inline(always)]
fn updated_seen(entry: u8, pkt: u8) -> u8 {
    if pkt & SEEN_SYN != 0 && entry & SEEN_CLOSED != 0 {
        pkt
    } else {
        entry | pkt
    }
}

/// A translated tuple: source address and port, destination address and port.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Tuple {
    #[inline(always)]
    pub fn of(pkt: &Packet) -> Self {
        Tuple {
            src_addr: pkt.src_addr,
            dst_addr: pkt.dst_addr,
            src_port: pkt.src_port,
            dst_port: pkt.dst_port,
        }
    }

    #[inline(always)]
    pub fn reversed(&self) -> Self {
        Tuple {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// A new entry that writes `to` into the packets of one direction, seen now.
#[inline(always)]
pub fn new_entry(to: Tuple, origin: u8, seen: u8, flags: u8, ifindex: u32) -> FlowEntry {
    let now = now();
    FlowEntry {
        src_addr: to.src_addr,
        dst_addr: to.dst_addr,
        src_port: to.src_port,
        dst_port: to.dst_port,
        origin,
        seen,
        flags,
        _pad: 0,
        ifindex,
        _pad2: 0,
        created_ns: now,
        last_seen_ns: now,
    }
}

/// Both halves of a new flow whose first packet is `pkt` (looked up with `key`) and is
/// written as `to`: the first half with BPF_NOEXIST, then its partner. Returns the first
/// half's entry, or the one another CPU created meanwhile; `None` when the table is full.
#[inline(always)]
pub fn create(
    key: &FlowKey,
    pkt: &Packet,
    to: Tuple,
    origin: u8,
    first: Half,
    reply: Half,
) -> Option<FlowEntry> {
    let entry = new_entry(to, origin, pkt.seen, first.flags, first.ifindex);
    if !insert_first(key, &entry) {
        return lookup(key, pkt);
    }
    let reply = new_entry(
        Tuple::of(pkt).reversed(),
        origin,
        0,
        reply.flags | FLAG_REPLY,
        reply.ifindex,
    );
    insert_partner(key, &key.partner(&entry), &reply).ok()?;
    Some(entry)
}

/// The flags and interface of one half of a new flow.
#[derive(Clone, Copy)]
pub struct Half {
    pub flags: u8,
    pub ifindex: u32,
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
