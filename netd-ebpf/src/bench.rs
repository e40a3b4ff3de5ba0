//! The benchmark's frame generator. In BPF_PROG_TEST_RUN's live-frames mode the kernel
//! fills each page from `data_in` only once and recycles it: a frame the node forwarded
//! comes back with the stack's edits in it (new MACs, TTL, NAT), so the program writes
//! the whole frame again every time, from a template userspace sets before loading.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

/// Bytes of the template: a minimum-size Ethernet frame without its FCS.
pub const FRAME_LEN: usize = 60;

/// Set with `EbpfLoader::override_global("BENCH_FRAME", ...)` by the benchmark; zeros (and
/// never used) in the daemon.
#[unsafe(no_mangle)]
static BENCH_FRAME: [u8; FRAME_LEN] = [0; FRAME_LEN];

pub fn transmit(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    if start + FRAME_LEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: a read of our own static; volatile so that the loader's value is used, not
    // the zeros the compiler sees.
    let frame = unsafe { core::ptr::read_volatile(&raw const BENCH_FRAME) };
    // SAFETY: FRAME_LEN bytes from `start` are inside the packet (checked above).
    unsafe { core::ptr::write_unaligned(start as *mut [u8; FRAME_LEN], frame) };
    xdp_action::XDP_TX
}
