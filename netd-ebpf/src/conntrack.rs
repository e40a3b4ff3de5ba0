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
//!
//! IPv6 flows have maps of their own (`FLOWS6`, `PENDING6`, `FLOW_OWNERS6`) and the same
//! code: everything here is generic over the address (`Family`, implemented by `u32` and
//! `Addr6`) and over the packet (`Tracked`), and monomorphised. The IPv6 instances only
//! run in the IPv6 programs, so they take nothing of the IPv4 programs' stack.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    maps::{HashMap, LruHashMap},
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use netd_common::{
    counters::{Hook, Reason},
    flow::{
        FLAG_END_REPORTED, FLAG_REPLY, FlowEntryOf, FlowKeyOf, ORIGIN_NAT46, SEEN_CLOSED, SEEN_SYN,
        confirmed, owner,
    },
    maps::{ALL_OWNERS, ALL_OWNERS6, Addr6},
};

use crate::{
    maps::{FLOW_OWNERS, FLOW_OWNERS6, FLOWS, FLOWS6, NODE_CONFIG, PENDING, PENDING6},
    parse::Packet,
    stats::count,
};

/// An address family's connection table: the maps its flows are in.
pub trait Family: Copy + PartialEq + Default + 'static {
    /// Confirmed flows.
    fn flows() -> &'static HashMap<FlowKeyOf<Self>, FlowEntryOf<Self>>;
    /// Flows not confirmed yet.
    fn pending() -> &'static LruHashMap<FlowKeyOf<Self>, FlowEntryOf<Self>>;
    /// Confirmed flows per endpoint address.
    fn owners() -> &'static HashMap<Self, u64>;
    /// A flow (its first half `first_key`/`first`) proved itself (`confirmed`), whether
    /// or not its endpoint's quota lets it into `flows`.
    #[inline(always)]
    fn proved(_first_key: &FlowKeyOf<Self>, _first: &FlowEntryOf<Self>) {}
    /// The key of `owners` that counts every confirmed flow.
    const ALL_OWNERS: Self;
}

impl Family for u32 {
    #[inline(always)]
    fn flows() -> &'static HashMap<FlowKeyOf<u32>, FlowEntryOf<u32>> {
        &FLOWS
    }
    #[inline(always)]
    fn pending() -> &'static LruHashMap<FlowKeyOf<u32>, FlowEntryOf<u32>> {
        &PENDING
    }
    #[inline(always)]
    fn owners() -> &'static HashMap<u32, u64> {
        &FLOW_OWNERS
    }
    const ALL_OWNERS: u32 = ALL_OWNERS;
}

impl Family for Addr6 {
    #[inline(always)]
    fn flows() -> &'static HashMap<FlowKeyOf<Addr6>, FlowEntryOf<Addr6>> {
        &FLOWS6
    }
    #[inline(always)]
    fn pending() -> &'static LruHashMap<FlowKeyOf<Addr6>, FlowEntryOf<Addr6>> {
        &PENDING6
    }
    #[inline(always)]
    fn owners() -> &'static HashMap<Addr6, u64> {
        &FLOW_OWNERS6
    }
    const ALL_OWNERS: Addr6 = ALL_OWNERS6;
    /// A NAT46 client with a confirmed flow keeps its pool address.
    #[inline(always)]
    fn proved(first_key: &FlowKeyOf<Addr6>, first: &FlowEntryOf<Addr6>) {
        if first.origin == ORIGIN_NAT46 {
            crate::nat46::confirmed_client(&first_key.src_addr, &first.src_addr);
        }
    }
}

/// What the connection table needs of a packet: its tuple, what it says about the flow's
/// state, and its length.
pub trait Tracked<A> {
    fn tuple(&self) -> Tuple<A>;
    fn proto(&self) -> u8;
    /// `SEEN_*` bits: SEEN_PACKET, plus the TCP flags.
    fn seen(&self) -> u8;
    /// The IP length (header included), as Linux's conntrack counts bytes.
    fn ip_len(&self) -> u16;
}

impl Tracked<u32> for Packet {
    #[inline(always)]
    fn tuple(&self) -> Tuple<u32> {
        Tuple {
            src_addr: self.src_addr,
            dst_addr: self.dst_addr,
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn seen(&self) -> u8 {
        self.seen
    }
    #[inline(always)]
    fn ip_len(&self) -> u16 {
        self.ip_len
    }
}

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
    pub fn get<A: Family>(self, key: &FlowKeyOf<A>) -> Option<FlowEntryOf<A>> {
        // SAFETY: a copy out of the map value; a racing writer only sets bits and times.
        unsafe {
            match self {
                Table::Confirmed => A::flows().get(key).copied(),
                Table::Pending => A::pending().get(key).copied(),
            }
        }
    }

    #[inline(always)]
    fn get_ptr_mut<A: Family>(self, key: &FlowKeyOf<A>) -> Option<*mut FlowEntryOf<A>> {
        match self {
            Table::Confirmed => A::flows().get_ptr_mut(key),
            Table::Pending => A::pending().get_ptr_mut(key),
        }
    }

    #[inline(always)]
    pub fn insert<A: Family>(
        self,
        key: &FlowKeyOf<A>,
        entry: &FlowEntryOf<A>,
        flags: u32,
    ) -> Result<(), i32> {
        match self {
            Table::Confirmed => A::flows().insert(key, entry, flags as u64),
            Table::Pending => A::pending().insert(key, entry, flags as u64),
        }
    }

    #[inline(always)]
    pub fn remove<A: Family>(self, key: &FlowKeyOf<A>) -> Result<(), i32> {
        match self {
            Table::Confirmed => A::flows().remove(key),
            Table::Pending => A::pending().remove(key),
        }
    }
}

/// The half stored under `key`, wherever it is (confirmed flows first).
#[inline(always)]
pub fn find<A: Family>(key: &FlowKeyOf<A>) -> Option<(Table, FlowEntryOf<A>)> {
    if let Some(entry) = Table::Confirmed.get(key) {
        return Some((Table::Confirmed, entry));
    }
    Table::Pending.get(key).map(|e| (Table::Pending, e))
}

/// The half stored under `key`, in place, wherever it is (confirmed flows first).
#[inline(always)]
pub fn find_mut<A: Family>(key: &FlowKeyOf<A>) -> Option<*mut FlowEntryOf<A>> {
    A::flows()
        .get_ptr_mut(key)
        .or_else(|| A::pending().get_ptr_mut(key))
}

#[inline(always)]
pub fn key_of<A: Family>(pkt: &impl Tracked<A>, dir: u8) -> FlowKeyOf<A> {
    let t = pkt.tuple();
    FlowKeyOf {
        src_addr: t.src_addr,
        dst_addr: t.dst_addr,
        src_port: t.src_port,
        dst_port: t.dst_port,
        proto: pkt.proto(),
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
pub fn lookup<A: Family>(key: &FlowKeyOf<A>, pkt: &impl Tracked<A>) -> Option<FlowEntryOf<A>> {
    let (entry, try_confirm) = touch(key, pkt.seen(), pkt.ip_len())?;
    // Copied before a confirmation moves the half out of the map `entry` points into.
    // SAFETY: a copy out of the map value; racing writers only ever set bits and
    // timestamps and add to the counts, so a torn read is harmless.
    let entry = unsafe { *entry };
    if try_confirm {
        confirm_pending(key);
    }
    Some(entry)
}

/// `lookup`'s work on the entry, for a packet with `seen` bits and `ip_len` bytes: the
/// entry, in place, and whether the flow is unconfirmed and worth trying to confirm. A
/// subprogram: every program looks flows up, and its stack would otherwise add to each
/// of their branches. It copies no entry onto its stack: the IPv6 programs' chain of
/// calls through it would not fit theirs.
#[inline(never)]
fn touch<A: Family>(
    key: &FlowKeyOf<A>,
    pkt_seen: u8,
    ip_len: u16,
) -> Option<(*const FlowEntryOf<A>, bool)> {
    let (table, entry) = match A::flows().get_ptr_mut(key) {
        Some(entry) => (Table::Confirmed, entry),
        None => (Table::Pending, A::pending().get_ptr_mut(key)?),
    };
    // SAFETY: a pointer into the map's value; racing writers only ever set bits and
    // timestamps and add to the counts (atomically), so a torn read is harmless.
    let (idle, moved) = unsafe {
        let now = now();
        let idle = now.wrapping_sub((*entry).last_seen_ns) > TOUCH_EVERY_NS;
        if idle {
            (*entry).last_seen_ns = now;
        }
        atomic_add32(&raw mut (*entry).packets, 1);
        atomic_add(&raw mut (*entry).bytes, u64::from(ip_len));
        if pkt_seen & SEEN_SYN != 0 && (*entry).seen & SEEN_CLOSED != 0 {
            // A new connection on a closed tuple: its end is yet to be reported.
            (*entry).flags &= !FLAG_END_REPORTED;
        }
        let seen = updated_seen((*entry).seen, pkt_seen);
        let moved = seen != (*entry).seen;
        if moved {
            (*entry).seen = seen;
        }
        (idle, moved)
    };
    // An unconfirmed half is checked every time: the LRU evicts halves one by one, and
    // a half whose partner was evicted, or whose partner's key another flow claimed
    // since, would translate into a flow whose replies go elsewhere.
    let entry = if table == Table::Pending || idle {
        // SAFETY: as above.
        if !still_whole(table, key, unsafe { &*entry }) {
            return None;
        }
        // Found again: `still_whole` may have put the half back, and the map may have
        // reused the element it was in meanwhile.
        table.get_ptr_mut(key)?
    } else {
        entry
    };
    // Tried when the flow's state moved, and at most once a second otherwise (a flow over
    // its endpoint's quota asks again as it goes on).
    Some((entry, table == Table::Pending && (moved || idle)))
}

/// Whether `partner` is this flow's other half: its own partner is `key`.
#[inline(always)]
fn points_back<A: Family>(
    key: &FlowKeyOf<A>,
    partner_key: &FlowKeyOf<A>,
    partner: &FlowEntryOf<A>,
) -> bool {
    partner_key.partner(partner) == *key
}

/// After an idle half was revived: whether the flow is still whole. The collector's
/// `flow_sweep` may be removing this flow's halves on another CPU at this moment: a half
/// removed under the packet is put back; if its partner is gone the half is removed too,
/// so the caller creates both again rather than translating into a flow whose replies
/// would find nothing.
#[inline(always)]
fn still_whole<A: Family>(table: Table, key: &FlowKeyOf<A>, entry: &FlowEntryOf<A>) -> bool {
    if table.get_ptr_mut(key).is_none() {
        let _ = table.insert(key, entry, BPF_NOEXIST);
    }
    let partner_key = key.partner(entry);
    if let Some(partner) = find_mut(&partner_key)
        // SAFETY: a pointer into a map's value, read at once.
        && points_back(key, &partner_key, unsafe { &*partner })
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
fn confirm_pending<A: Family>(key: &FlowKeyOf<A>) {
    let Some(entry) = A::pending().get_ptr(key) else {
        return;
    };
    // SAFETY: `entry` and `partner` point into PENDING's values for this program's run.
    let (entry, partner_key) = unsafe { (&*entry, key.partner(&*entry)) };
    let Some(partner) = A::pending().get_ptr(partner_key) else {
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
    A::proved(first_key, first);
    let outcome = confirm(first_key, first, reply_key, reply);
    count(Hook::FlowTable, outcome, 0);
}

#[inline(always)]
fn confirm<A: Family>(
    first_key: &FlowKeyOf<A>,
    first: &FlowEntryOf<A>,
    reply_key: &FlowKeyOf<A>,
    reply: &FlowEntryOf<A>,
) -> Reason {
    let (Some(owned), Some(all)) = (
        owner_count(owner(first_key, first)),
        owner_count(A::ALL_OWNERS),
    ) else {
        return Reason::ConfirmTableFull;
    };
    let (quota, high_water) = NODE_CONFIG.get(0).map_or((0, 0), |c| {
        (u64::from(c.flow_quota), u64::from(c.flow_high_water))
    });
    // SAFETY: pointers into the owners' values, each read once.
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
fn owner_count<A: Family>(addr: A) -> Option<*mut u64> {
    if let Some(count) = A::owners().get_ptr_mut(addr) {
        return Some(count);
    }
    let _ = A::owners().insert(addr, 0, BPF_NOEXIST as u64);
    A::owners().get_ptr_mut(addr)
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
pub fn released<A: Family>(first_key: &FlowKeyOf<A>, first: &FlowEntryOf<A>) {
    for owner in [owner(first_key, first), A::ALL_OWNERS] {
        if let Some(count) = A::owners().get_ptr_mut(owner) {
            // SAFETY: read once, not to go below zero after the daemon's recount.
            if unsafe { *count } > 0 {
                atomic_add(count, u64::MAX);
            }
        }
    }
}

/// A translated tuple: source address and port, destination address and port.
#[derive(Clone, Copy)]
pub struct Tuple<A> {
    pub src_addr: A,
    pub dst_addr: A,
    pub src_port: u16,
    pub dst_port: u16,
}

impl<A: Family> Tuple<A> {
    #[inline(always)]
    pub fn of(pkt: &impl Tracked<A>) -> Self {
        pkt.tuple()
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
pub fn new_entry<A: Family>(
    to: Tuple<A>,
    origin: u8,
    seen: u8,
    flags: u8,
    ifindex: u32,
) -> FlowEntryOf<A> {
    let now = now();
    FlowEntryOf {
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
pub fn counted<A: Family>(mut entry: FlowEntryOf<A>, pkt: &impl Tracked<A>) -> FlowEntryOf<A> {
    entry.packets = 1;
    entry.bytes = u64::from(pkt.ip_len());
    entry
}

/// Turn a new flow's reply half (`new_entry`, no flags but `FLAG_REPLY`) into its first
/// half, in place: writing `to`, having seen and counted `pkt`.
#[inline(always)]
pub fn make_first<A: Family>(entry: &mut FlowEntryOf<A>, to: Tuple<A>, pkt: &impl Tracked<A>) {
    entry.src_addr = to.src_addr;
    entry.dst_addr = to.dst_addr;
    entry.src_port = to.src_port;
    entry.dst_port = to.dst_port;
    entry.seen = pkt.seen();
    entry.flags = 0;
    entry.packets = 1;
    entry.bytes = u64::from(pkt.ip_len());
}

/// A flow to create: what its first packet is written as, how it came about, and the
/// flags and interface of each half.
pub struct NewFlow<A> {
    pub to: Tuple<A>,
    pub origin: u8,
    pub first: Half,
    pub reply: Half,
}

/// Both halves of a new (unconfirmed) flow whose first packet is `pkt` (looked up with
/// `key`): the first half with BPF_NOEXIST, then its partner. The first half's entry is
/// made in `entry` (the caller's: the IPv6 programs keep it off their stack), or, when
/// another CPU created the flow meanwhile, that one's is read into it; `false` when the
/// table cannot take it. A subprogram: the stack of creating a flow is not held while
/// looking one up.
#[inline(never)]
pub fn create<A: Family, P: Tracked<A>>(
    key: &FlowKeyOf<A>,
    pkt: &P,
    flow: &NewFlow<A>,
    entry: &mut FlowEntryOf<A>,
) -> bool {
    *entry = counted(
        new_entry(
            flow.to,
            flow.origin,
            pkt.seen(),
            flow.first.flags,
            flow.first.ifindex,
        ),
        pkt,
    );
    if !insert_first(key, entry) {
        // Another CPU created it a moment ago: its entry serves.
        let Some(theirs) = find_mut(key) else {
            return false;
        };
        // SAFETY: a pointer into a map's value, read at once.
        *entry = unsafe { *theirs };
        return true;
    }
    let reply = new_entry(
        Tuple::of(pkt).reversed(),
        flow.origin,
        0,
        flow.reply.flags | FLAG_REPLY,
        flow.reply.ifindex,
    );
    insert_partner(key, &key.partner(entry), &reply).is_ok()
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
pub fn insert_partner<A: Family>(
    first: &FlowKeyOf<A>,
    partner: &FlowKeyOf<A>,
    entry: &FlowEntryOf<A>,
) -> Result<(), ()> {
    if Table::Pending.insert(partner, entry, BPF_ANY).is_err() {
        let _ = Table::Pending.remove(first);
        return Err(());
    }
    Ok(())
}

/// Insert the first half of a new flow; `false` if another CPU created it meanwhile or the
/// table cannot take it.
#[inline(always)]
pub fn insert_first<A: Family>(key: &FlowKeyOf<A>, entry: &FlowEntryOf<A>) -> bool {
    Table::Pending.insert(key, entry, BPF_NOEXIST).is_ok()
}

/// Claim `key` for a new flow's reply half (a SNAT port): inserted unless any flow, in
/// either table, holds it. The pending insert comes first, so that two CPUs cannot both
/// claim it; a confirmed flow on the tuple then takes it back.
#[inline(always)]
pub fn claim<A: Family>(key: &FlowKeyOf<A>, entry: &FlowEntryOf<A>) -> Result<(), i32> {
    Table::Pending.insert(key, entry, BPF_NOEXIST)?;
    if A::flows().get_ptr(key).is_some() {
        let _ = Table::Pending.remove(key);
        return Err(EEXIST);
    }
    Ok(())
}
