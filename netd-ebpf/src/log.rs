//! The programs' logs (aya-log), chosen when the daemon loads them: `netd daemon
//! --datapath-log off|error|debug` sets aya-log's read-only level (`AYA_LOG_LEVEL`).
//! The verifier knows its value, so with logging off every log call is a branch it never
//! takes and never explores: the programs run as if there were none.

use aya_ebpf::EbpfContext;
use aya_log_ebpf::{
    debug, error,
    macro_support::{Level, level_enabled},
};
use netd_common::counters::{Hook, Reason};

/// A program's verdict: an error where netd itself failed (a rewrite or a helper), a
/// debug line for every other drop.
#[inline(always)]
pub fn verdict<C: EbpfContext>(ctx: &C, hook: Hook, reason: Reason) {
    // First, before anything is computed for a log line (whether the reason is a drop
    // costs a few nanoseconds): with logging off, all that follows is pruned.
    if !level_enabled(Level::Error) {
        return;
    }
    if matches!(
        reason,
        Reason::DropRewriteFailed | Reason::DropTunnelKey | Reason::DropRedirectFailed
    ) {
        error!(ctx, "hook {} reason {}", hook as u32, reason as u32);
    } else if reason.is_drop() {
        debug!(ctx, "hook {} reason {}", hook as u32, reason as u32);
    }
}
