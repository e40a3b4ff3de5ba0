//! The connection table's last word on expiry. The daemon's collector picks candidates
//! from a snapshot of the whole table, which takes a while to read, and a flow can come
//! back to life meanwhile (a client reusing the tuple). Deleting from userspace, even after
//! a fresh read, leaves a window as wide as the daemon's preemption; this program judges
//! each candidate again and removes it in one non-preemptible step.
//!
//! Run with BPF_PROG_TEST_RUN, never attached. Input: `now` (u64, CLOCK_MONOTONIC ns, read
//! by the daemon just before the run) and the number of keys (u32) at the start of the
//! packet, the keys in `SWEEP`. Returns how many halves it removed. A half refreshed after
//! `now` was read is never expired.

use aya_ebpf::programs::TcContext;
use netd_common::{flow::is_expired, maps::SWEEP_BATCH};

use crate::maps::{FLOWS, SWEEP};

pub fn run(ctx: &TcContext) -> i32 {
    let (Ok(now), Ok(count)) = (ctx.load::<u64>(0), ctx.load::<u32>(8)) else {
        return 0;
    };
    let mut removed = 0;
    for i in 0..SWEEP_BATCH {
        if i >= count {
            break;
        }
        let Some(key) = SWEEP.get(i) else {
            break;
        };
        // SAFETY: map values read by value at once; a racing writer only refreshes them.
        let Some(entry) = (unsafe { FLOWS.get(key) }).copied() else {
            continue;
        };
        let partner = unsafe { FLOWS.get(&key.partner(&entry)) }.copied();
        if is_expired(key, &entry, partner.as_ref(), now) && FLOWS.remove(key).is_ok() {
            removed += 1;
        }
    }
    removed
}
