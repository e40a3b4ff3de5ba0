//! The connection table: find a packet's flow entry, keep it fresh, create both halves,
//! and confirm flows that proved themselves.
//!
//! Two maps hold it. A new flow starts in `PENDING`, an LRU: until it is confirmed (a TCP
//! handshake completed, a reply to anything else) it is what a flood is made of, and a
//! flood of such flows, from a container or spoofed from the network, only evicts other
//! unconfirmed ones. Once confirmed, both halves move to `FLOWS`, a plain hash the kernel
//! never evicts from, as long as the flow's endpoint holds fewer confirmed flows than its
//! quota (`NodeConfig::flow_quota`), and, once the table is three quarters full, only for
//! endpoints holding few flows (`flow_high_water`): a few endpoints cannot take the table
//! from the others. A flow over quota keeps working from `PENDING`.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use netd_common::{
    counters::{Hook, Reason},
    flow::{
        FLAG_END_REPORTED, FLAG_REPLY, FlowEntry, FlowKey, SEEN_CLOSED, SEEN_SYN, confirmed, owner,
    },
    maps::ALL_OWNERS,
};

use crate::{
    maps::{FLOW_OWNERS, FLOWS, NODE_CONFIG, PENDING},
    parse::Packet,
    stats::count,
};

/// last-seen is written at most this often, so a busy flow does not dirty its cache line
/// on every packet.
const TOUCH_EVERY_NS: u64 = 1_000_000_000;
/// What an insert with BPF_NOEXIST returns when the key is taken.
pub const EEXIST: i32 = -17;

/// Which of the two maps a flow half is in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Confirmed,
    Pending,
}

impl Table {
    #[inline(always)]
    pub fn get(self, key: &FlowKey) -> Option<FlowEntry> {
        // SAFETY: a copy out of the map value; a racing writer only sets bits and times.
        unsafe {
            match self {
                Table::Confirmed => FLOWS.get(key).copied(),
                Table::Pending => PENDING.get(key).copied(),
            }
        }
    }

    #[inline(always)]
    fn get_ptr_mut(self, key: &FlowKey) -> Option<*mut FlowEntry> {
        match self {
            Table::Confirmed => FLOWS.get_ptr_mut(key),
            Table::Pending => PENDING.get_ptr_mut(key),
        }
    }

    #[inline(always)]
    pub fn insert(self, key: &FlowKey, entry: &FlowEntry, flags: u32) -> Result<(), i32> {
        match self {
            Table::Confirmed => FLOWS.insert(key, entry, flags as u64),
            Table::Pending => PENDING.insert(key, entry, flags as u64),
        }
    }

    #[inline(always)]
    pub fn remove(self, key: &FlowKey) -> Result<(), i32> {
        match self {
            Table::Confirmed => FLOWS.remove(key),
            Table::Pending => PENDING.remove(key),
        }
    }
}

/// The half stored under `key`, wherever it is (confirmed flows first).
#[inline(always)]
pub fn find(key: &FlowKey) -> Option<(Table, FlowEntry)> {
    if let Some(entry) = Table::Confirmed.get(key) {
        return Some((Table::Confirmed, entry));
    }
    Table::Pending.get(key).map(|e| (Table::Pending, e))
}

/// The half stored under `key`, in place, wherever it is (confirmed flows first).
#[inline(always)]
pub fn find_mut(key: &FlowKey) -> Option<*mut FlowEntry> {
    FLOWS.get_ptr_mut(key).or_else(|| PENDING.get_ptr_mut(key))
}

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

/// The entry for this packet's direction, with its last-seen time, TCP flags and counts
/// updated. `None` also when the flow lost its other half while idle (see
/// `still_whole`): the packet then starts the flow over. An unconfirmed flow whose state
/// moved on is confirmed here if it now qualifies: by a call of the caller's own, not one
/// below `touch`, since the deepest paths of the programs are at their stack's limit.
#[inline(always)]
pub fn lookup(key: &FlowKey, pkt: &Packet) -> Option<FlowEntry> {
    let (entry, try_confirm) = touch(key, pkt)?;
    if try_confirm {
        confirm_pending(key);
    }
    Some(entry)
}

/// `lookup`'s work on the entry; whether the flow is unconfirmed and worth trying to
/// confirm. A subprogram: every program looks flows up, and its stack would otherwise add
/// to each of their branches.
#[inline(never)]
fn touch(key: &FlowKey, pkt: &Packet) -> Option<(FlowEntry, bool)> {
    let (table, entry) = match FLOWS.get_ptr_mut(key) {
        Some(entry) => (Table::Confirmed, entry),
        None => (Table::Pending, PENDING.get_ptr_mut(key)?),
    };
    // SAFETY: a pointer into the map's value; racing writers only ever set bits and
    // timestamps and add to the counts (atomically), so a torn read is harmless.
    let (copy, idle, moved) = unsafe {
        let now = now();
        let idle = now.wrapping_sub((*entry).last_seen_ns) > TOUCH_EVERY_NS;
        if idle {
            (*entry).last_seen_ns = now;
        }
        atomic_add32(&raw mut (*entry).packets, 1);
        atomic_add(&raw mut (*entry).bytes, u64::from(pkt.ip_len));
        if pkt.seen & SEEN_SYN != 0 && (*entry).seen & SEEN_CLOSED != 0 {
            // A new connection on a closed tuple: its end is yet to be reported.
            (*entry).flags &= !FLAG_END_REPORTED;
        }
        let seen = updated_seen((*entry).seen, pkt.seen);
        let moved = seen != (*entry).seen;
        if moved {
            (*entry).seen = seen;
        }
        (*entry, idle, moved)
    };
    // An unconfirmed half is checked every time: the LRU evicts halves one by one, and
    // a half whose partner was evicted, or whose partner's key another flow claimed
    // since, would translate into a flow whose replies go elsewhere.
    if (table == Table::Pending || idle) && !still_whole(table, key, &copy) {
        return None;
    }
    // Tried when the flow's state moved, and at most once a second otherwise (a flow over
    // its endpoint's quota asks again as it goes on).
    Some((copy, table == Table::Pending && (moved || idle)))
}

/// Whether `partner` is this flow's other half: its own partner is `key`.
#[inline(always)]
fn points_back(key: &FlowKey, partner_key: &FlowKey, partner: &FlowEntry) -> bool {
    partner_key.partner(partner) == *key
}

/// After an idle half was revived: whether the flow is still whole. The collector's
/// `flow_sweep` may be removing this flow's halves on another CPU at this moment: a half
/// removed under the packet is put back; if its partner is gone the half is removed too,
/// so the caller creates both again rather than translating into a flow whose replies
/// would find nothing.
#[inline(always)]
fn still_whole(table: Table, key: &FlowKey, entry: &FlowEntry) -> bool {
    if table.get_ptr_mut(key).is_none() {
        let _ = table.insert(key, entry, BPF_NOEXIST);
    }
    let partner_key = key.partner(entry);
    if let Some((_, partner)) = find(&partner_key)
        && points_back(key, &partner_key, &partner)
    {
        return true;
    }
    if table.remove(key).is_ok() && table == Table::Confirmed && entry.is_first() {
        released(key, entry);
    }
    if table == Table::Pending {
        // The unconfirmed table is an LRU: under pressure it evicts halves one by one.
        count(Hook::FlowTable, Reason::FlowEvicted, 0);
    }
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

/// Move an unconfirmed flow (this half `key`, just updated by `touch`) to
/// `FLOWS` if it has proved itself and its endpoint is under quota. Each outcome but "not
/// yet" is counted. Not inlined, and working on the map values in place rather than on
/// copies: it runs once per state change of an unconfirmed flow, and its stack adds to
/// that of every program that looks flows up.
#[inline(never)]
fn confirm_pending(key: &FlowKey) {
    let Some(entry) = PENDING.get_ptr(key) else {
        return;
    };
    // SAFETY: `entry` and `partner` point into PENDING's values for this program's run.
    let (entry, partner_key) = unsafe { (&*entry, key.partner(&*entry)) };
    let Some(partner) = PENDING.get_ptr(partner_key) else {
        return;
    };
    // SAFETY: as above.
    let partner = unsafe { &*partner };
    if !points_back(key, &partner_key, partner) {
        return;
    }
    let (first_key, first, reply_key, reply) = if entry.is_first() {
        (key, entry, &partner_key, partner)
    } else {
        (&partner_key, partner, key, entry)
    };
    if !confirmed(key.proto, first.seen, reply.seen) {
        return;
    }
    let outcome = confirm(first_key, first, reply_key, reply);
    count(Hook::FlowTable, outcome, 0);
}

#[inline(always)]
fn confirm(
    first_key: &FlowKey,
    first: &FlowEntry,
    reply_key: &FlowKey,
    reply: &FlowEntry,
) -> Reason {
    let (Some(owned), Some(all)) = (
        owner_count(owner(first_key, first)),
        owner_count(ALL_OWNERS),
    ) else {
        return Reason::ConfirmTableFull;
    };
    let (quota, high_water) = NODE_CONFIG.get(0).map_or((0, 0), |c| {
        (u64::from(c.flow_quota), u64::from(c.flow_high_water))
    });
    // SAFETY: pointers into FLOW_OWNERS' values, each read once.
    let (holds, in_all) = unsafe { (*owned, *all) };
    if quota != 0 && holds >= quota {
        return Reason::ConfirmOverQuota;
    }
    if high_water != 0 && in_all >= high_water && holds >= (quota / 8).max(1) {
        return Reason::ConfirmReserved;
    }
    match Table::Confirmed.insert(first_key, first, BPF_NOEXIST) {
        Ok(()) => {}
        // Another CPU confirmed it a moment ago.
        Err(EEXIST) => return Reason::FlowConfirmed,
        Err(_) => return Reason::ConfirmTableFull,
    }
    if Table::Confirmed.insert(reply_key, reply, BPF_ANY).is_err() {
        let _ = Table::Confirmed.remove(first_key);
        return Reason::ConfirmTableFull;
    }
    let _ = Table::Pending.remove(first_key);
    let _ = Table::Pending.remove(reply_key);
    atomic_add(owned, 1);
    atomic_add(all, 1);
    Reason::FlowConfirmed
}

/// The counter of confirmed flows that `addr` owns, created at 0 if it has none.
#[inline(always)]
fn owner_count(addr: u32) -> Option<*mut u64> {
    if let Some(count) = FLOW_OWNERS.get_ptr_mut(addr) {
        return Some(count);
    }
    let _ = FLOW_OWNERS.insert(addr, 0, BPF_NOEXIST as u64);
    FLOW_OWNERS.get_ptr_mut(addr)
}

/// Add `delta` (wrapping: `u64::MAX` takes one away) to a count several CPUs change at
/// once (an owner's flows: every CPU confirms and the sweep removes; a flow's packets).
#[inline(always)]
pub fn atomic_add(count: *mut u64, delta: u64) {
    // SAFETY: a valid, aligned u64 in a map value. The BPF target has no compare and swap,
    // so core's atomic types offer no fetch_add; BPF's own atomic add (XADD) is what the
    // intrinsic compiles to.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, delta) };
}

/// `atomic_add` for a 32-bit count.
#[inline(always)]
pub fn atomic_add32(count: *mut u32, delta: u32) {
    // SAFETY: as in `atomic_add`, for a valid, aligned u32.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(count, delta) };
}

/// One confirmed flow of `first_key`/`first` is gone: its owner, and all, hold one fewer.
#[inline(always)]
pub fn released(first_key: &FlowKey, first: &FlowEntry) {
    for owner in [owner(first_key, first), ALL_OWNERS] {
        if let Some(count) = FLOW_OWNERS.get_ptr_mut(owner) {
            // SAFETY: read once, not to go below zero after the daemon's recount.
            if unsafe { *count } > 0 {
                atomic_add(count, u64::MAX);
            }
        }
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

/// A new entry that writes `to` into the packets of one direction, seen now, with no
/// packet counted yet (see `counted`).
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
        created_ns: now,
        last_seen_ns: now,
        packets: 0,
        bytes: 0,
    }
}

/// `entry` with `pkt` counted: the first half of a new flow, made by its first packet.
#[inline(always)]
pub fn counted(mut entry: FlowEntry, pkt: &Packet) -> FlowEntry {
    entry.packets = 1;
    entry.bytes = u64::from(pkt.ip_len);
    entry
}

/// Turn a new flow's reply half (`new_entry`, no flags but `FLAG_REPLY`) into its first
/// half, in place: writing `to`, having seen and counted `pkt`.
#[inline(always)]
pub fn make_first(entry: &mut FlowEntry, to: Tuple, pkt: &Packet) {
    entry.src_addr = to.src_addr;
    entry.dst_addr = to.dst_addr;
    entry.src_port = to.src_port;
    entry.dst_port = to.dst_port;
    entry.seen = pkt.seen;
    entry.flags = 0;
    entry.packets = 1;
    entry.bytes = u64::from(pkt.ip_len);
}

/// A flow to create: what its first packet is written as, how it came about, and the
/// flags and interface of each half.
pub struct NewFlow {
    pub to: Tuple,
    pub origin: u8,
    pub first: Half,
    pub reply: Half,
}

/// Both halves of a new (unconfirmed) flow whose first packet is `pkt` (looked up with
/// `key`): the first half with BPF_NOEXIST, then its partner. Returns the first half's
/// entry, or the one another CPU created meanwhile; `None` when the table cannot take it.
/// A subprogram: the stack of creating a flow is not held while looking one up.
#[inline(never)]
pub fn create(key: &FlowKey, pkt: &Packet, flow: &NewFlow) -> Option<FlowEntry> {
    let entry = counted(
        new_entry(
            flow.to,
            flow.origin,
            pkt.seen,
            flow.first.flags,
            flow.first.ifindex,
        ),
        pkt,
    );
    if !insert_first(key, &entry) {
        // Another CPU created it a moment ago: its entry serves.
        return find(key).map(|(_, entry)| entry);
    }
    let reply = new_entry(
        Tuple::of(pkt).reversed(),
        flow.origin,
        0,
        flow.reply.flags | FLAG_REPLY,
        flow.reply.ifindex,
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

/// The partner half of a new flow whose first half is already in the table. On failure
/// the first half is removed again, so the table never holds half a flow.
#[inline(always)]
pub fn insert_partner(first: &FlowKey, partner: &FlowKey, entry: &FlowEntry) -> Result<(), ()> {
    if Table::Pending.insert(partner, entry, BPF_ANY).is_err() {
        let _ = Table::Pending.remove(first);
        return Err(());
    }
    Ok(())
}

/// Insert the first half of a new flow; `false` if another CPU created it meanwhile or the
/// table cannot take it.
#[inline(always)]
pub fn insert_first(key: &FlowKey, entry: &FlowEntry) -> bool {
    Table::Pending.insert(key, entry, BPF_NOEXIST).is_ok()
}

/// Claim `key` for a new flow's reply half (a SNAT port): inserted unless any flow, in
/// either table, holds it. The pending insert comes first, so that two CPUs cannot both
/// claim it; a confirmed flow on the tuple then takes it back.
#[inline(always)]
pub fn claim(key: &FlowKey, entry: &FlowEntry) -> Result<(), i32> {
    Table::Pending.insert(key, entry, BPF_NOEXIST)?;
    if FLOWS.get_ptr(key).is_some() {
        let _ = Table::Pending.remove(key);
        return Err(EEXIST);
    }
    Ok(())
}
