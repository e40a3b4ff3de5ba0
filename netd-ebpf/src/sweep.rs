//! The connection table's last word on expiry. The daemon's collector picks candidates
//! from a snapshot of the whole table, which takes a while to read, and a flow can come
//! back to life meanwhile (a client reusing the tuple). Deleting from userspace, even after
//! a fresh read, leaves a window as wide as the daemon's preemption; this program judges
//! each candidate again and removes it at once.
//!
//! The data path runs on the other CPUs meanwhile. A packet can revive a half's partner
//! between this program's read of it and the removal; the partner is read again after the
//! removal and, if it moved, the half is put back (`conntrack::lookup` covers the other
//! order: a half it revives whose partner is gone is dropped and the flow created anew).
//!
//! One copy of the code for both families: `flow_sweep` runs it over the IPv4 table with
//! keys in `SWEEP`, `flow_sweep6` over the IPv6 one with keys in `SWEEP6`.
//!
//! Run with BPF_PROG_TEST_RUN, never attached. Input: `now` (u64, CLOCK_MONOTONIC ns, read
//! by the daemon just before the run), the number of keys (u32) and the table they are in
//! (u32: 0 confirmed, 1 unconfirmed) at the start of the packet, the keys in `SWEEP`.
//! Returns how many halves it removed. A half refreshed after `now` was read is never
//! expired. Removing the first half of a confirmed flow releases it from its owner's
//! quota.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::Array, programs::TcContext};
use netd_common::{
    flow::{FlowEntryOf, FlowKeyOf, SEEN_CLOSED, is_expired},
    maps::SWEEP_BATCH,
};

use crate::{
    conntrack::{Family, Table, find, released},
    maps::{SWEEP, SWEEP6},
};

pub fn run(ctx: &TcContext) -> i32 {
    sweep(ctx, &SWEEP)
}

pub fn run6(ctx: &TcContext) -> i32 {
    sweep(ctx, &SWEEP6)
}

#[inline(always)]
fn sweep<A: Family>(ctx: &TcContext, batch: &Array<FlowKeyOf<A>>) -> i32 {
    let (Ok(now), Ok(count), Ok(table)) =
        (ctx.load::<u64>(0), ctx.load::<u32>(8), ctx.load::<u32>(12))
    else {
        return 0;
    };
    let table = if table == 0 {
        Table::Confirmed
    } else {
        Table::Pending
    };
    let mut removed = 0;
    for i in 0..SWEEP_BATCH {
        if i >= count {
            break;
        }
        let Some(key) = batch.get(i) else {
            break;
        };
        if remove_if_expired(table, key, now) {
            removed += 1;
        }
    }
    removed
}

/// Remove one half if it and its partner are idle past their timeout; put it back when
/// its partner was revived meanwhile. Whether it stays removed.
#[inline(always)]
fn remove_if_expired<A: Family>(table: Table, key: &FlowKeyOf<A>, now: u64) -> bool {
    let Some(entry) = table.get(key) else {
        return false;
    };
    let partner_key = key.partner(&entry);
    let partner = find(&partner_key).map(|(_, e)| e);
    if !is_expired(key, &entry, partner.as_ref(), now) || table.remove(key).is_err() {
        return false;
    }
    let still_gone = match (partner, find(&partner_key)) {
        (Some(before), Some((_, after)))
            if after.last_seen_ns != before.last_seen_ns || after.seen != before.seen =>
        {
            // A packet revived the flow while it was judged: the half goes back, as fresh
            // as its partner and, if the partner started over (a SYN on a closed tuple),
            // starting over too.
            table
                .insert(key, &revived(entry, &after), BPF_NOEXIST)
                .is_err()
        }
        _ => true,
    };
    if still_gone && table == Table::Confirmed && entry.is_first() {
        released(key, &entry);
    }
    still_gone
}

/// A removed half put back beside its revived partner.
#[inline(always)]
fn revived<A>(mut entry: FlowEntryOf<A>, partner: &FlowEntryOf<A>) -> FlowEntryOf<A> {
    entry.last_seen_ns = partner.last_seen_ns;
    if entry.seen & SEEN_CLOSED != 0 && partner.seen & SEEN_CLOSED == 0 {
        entry.seen = 0;
    }
    entry
}
