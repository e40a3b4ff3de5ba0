//! Per-CPU counters: every verdict of every program is counted under its reason, and
//! what each endpoint sends and receives under its host-side veth.

use netd_common::counters::{Counter, EndpointDropKey, Hook, Reason, counter_index};

use crate::maps::{COUNTERS, ENDPOINT_COUNTERS, ENDPOINT_DROPS};

#[inline(always)]
pub fn count(hook: Hook, reason: Reason, bytes: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(counter_index(hook, reason)) {
        // SAFETY: a per-CPU slot; no other program touches it while this one runs.
        unsafe { add(&mut *counter, bytes) }
    }
}

/// A packet the endpoint behind host-side veth `ifindex` sent, and what became of it.
#[inline(always)]
pub fn count_sent(ifindex: u32, reason: Reason, bytes: u32) {
    let Some(counters) = ENDPOINT_COUNTERS.get_ptr_mut(ifindex) else {
        return;
    };
    // SAFETY: this CPU's slot of the entry; no other program touches it while this one
    // runs (a removed entry's memory stays valid until the program ends).
    unsafe { add(&mut (*counters).sent, bytes) };
    if reason.is_drop() {
        // SAFETY: as above.
        unsafe { add(&mut (*counters).dropped, bytes) };
        count_drop(ifindex, reason, bytes);
    }
}

/// A packet delivered to the endpoint behind host-side veth `ifindex`.
#[inline(always)]
pub fn count_received(ifindex: u32, bytes: u32) {
    if let Some(counters) = ENDPOINT_COUNTERS.get_ptr_mut(ifindex) {
        // SAFETY: as in `count_sent`.
        unsafe { add(&mut (*counters).received, bytes) }
    }
}

/// A subprogram: drops are rare, and the hot path should not carry its stack.
#[inline(never)]
fn count_drop(ifindex: u32, reason: Reason, bytes: u32) {
    let key = EndpointDropKey {
        ifindex,
        reason: reason as u32,
    };
    match ENDPOINT_DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot, as above.
        Some(counter) => unsafe { add(&mut *counter, bytes) },
        None => {
            let first = Counter {
                packets: 1,
                bytes: bytes as u64,
            };
            // From a program, an update writes this CPU's slot only: if another CPU
            // created the entry meanwhile, this CPU's slot in it was still zero.
            let _ = ENDPOINT_DROPS.insert(key, first, 0);
        }
    }
}

#[inline(always)]
fn add(counter: &mut Counter, bytes: u32) {
    counter.packets += 1;
    counter.bytes += bytes as u64;
}
