//! The benchmark's frame generator. In BPF_PROG_TEST_RUN's live-frames mode the kernel
//! fills each page from `data_in` only once and recycles it: a frame the node forwarded
//! comes back with the stack's edits in it (new MACs, TTL, NAT), so the program writes
//! the whole frame again every time, from a template userspace sets before loading.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

/// Bytes of the IPv4 template: a minimum-size Ethernet frame without its FCS.
pub const FRAME_LEN: usize = 60;
/// Bytes of the IPv6 template: the same UDP payload behind an IPv6 header (20 bytes more
/// than IPv4's; no IPv6 UDP frame fits in 60).
pub const FRAME6_LEN: usize = 80;

const _: () = assert!(FRAME_LEN.is_multiple_of(4) && FRAME6_LEN.is_multiple_of(4));

/// Set with `EbpfLoader::override_global("BENCH_FRAME", ...)` by the benchmark; zeros (and
/// never used) in the daemon.
#[unsafe(no_mangle)]
static BENCH_FRAME: Template<FRAME_LEN> = Template([0; FRAME_LEN]);

/// The IPv6 template (`bench_transmit6`), set as `BENCH_FRAME`.
#[unsafe(no_mangle)]
static BENCH_FRAME6: Template<FRAME6_LEN> = Template([0; FRAME6_LEN]);

/// A frame's bytes, aligned so that they can be read four at a time.
#[repr(C, align(4))]
struct Template<const N: usize>([u8; N]);

pub fn transmit(ctx: &XdpContext) -> u32 {
    write_frame(ctx, &raw const BENCH_FRAME)
}

pub fn transmit6(ctx: &XdpContext) -> u32 {
    write_frame(ctx, &raw const BENCH_FRAME6)
}

/// Write the template at `frame` over the packet, four bytes at a time (no copy of it on
/// the stack), and send it back out (XDP_TX).
#[inline(always)]
fn write_frame<const N: usize>(ctx: &XdpContext, frame: *const Template<N>) -> u32 {
    let start = ctx.data();
    if start + N > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let words = frame.cast::<u32>();
    for i in 0..N / 4 {
        // SAFETY: a read inside our own static (N is a multiple of 4); volatile so that
        // the loader's value is used, not the zeros the compiler sees.
        let word = unsafe { core::ptr::read_volatile(words.add(i)) };
        // SAFETY: N bytes from `start` are inside the packet (checked above).
        unsafe { core::ptr::write_unaligned((start + 4 * i) as *mut u32, word) };
    }
    xdp_action::XDP_TX
}
