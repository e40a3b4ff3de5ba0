//! Per-CPU counters: every verdict of every program is counted under its reason.

use netd_common::counters::{Hook, Reason, counter_index};

use crate::maps::COUNTERS;

#[inline(always)]
pub fn count(hook: Hook, reason: Reason, bytes: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(counter_index(hook, reason)) {
        // SAFETY: a per-CPU slot; no other program touches it while this one runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        }
    }
}
