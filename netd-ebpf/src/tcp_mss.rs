//! TCP's maximum segment size option (RFC 9293, 3.7.1): clamped in a SYN, so that the
//! other end's segments fit a path the SYN's sender does not know of (NAT46: the
//! container's segments grow by 20 bytes as IPv6).

use aya_ebpf::programs::{TcContext, XdpContext};
use netd_common::checksum::replace16;

use crate::{parse::Frame, xdp};

/// TCP's SYN flag, in the flags byte (offset 13).
const SYN: u8 = 0x02;
/// The MSS option: kind 2, length 4.
const KIND_END: u8 = 0;
const KIND_NOP: u8 = 1;
const KIND_MSS: u8 = 2;
/// Options looked at before giving up (the MSS option comes first in the SYNs of every
/// common stack; padding and other options before it are walked).
const MAX_OPTIONS: usize = 10;

/// A frame whose TCP segment's 16-bit words can be rewritten, its checksum kept right:
/// an skb by the kernel's helper (TC), an XDP frame by incremental arithmetic (its
/// checksum complete: see netd-common's `checksum`).
pub trait Segment: Frame {
    /// Write `new` over `old` at `at`, fixing the checksum at `csum`.
    fn replace_word(&self, csum: usize, at: usize, old: u16, new: u16) -> Result<(), ()>;
}

impl Segment for TcContext {
    #[inline(always)]
    fn replace_word(&self, csum: usize, at: usize, old: u16, new: u16) -> Result<(), ()> {
        // The checksum's 16-bit word replaced (size 2 in the flags).
        self.l4_csum_replace(csum, u64::from(old), u64::from(new), 2)
            .map_err(|_| ())?;
        self.store(at, &new, 0).map_err(|_| ())
    }
}

impl Segment for XdpContext {
    #[inline(always)]
    fn replace_word(&self, csum: usize, at: usize, old: u16, new: u16) -> Result<(), ()> {
        let check: u16 = self.load(csum)?;
        xdp::store(self, csum, replace16(check, old, new))?;
        xdp::store(self, at, new)
    }
}

/// If the TCP segment at `l4` is a SYN whose MSS option asks for more than `max`, ask
/// for `max` instead, the checksum kept right. `max` 0: left as it is.
#[inline(never)]
pub fn clamp<F: Segment>(ctx: &F, l4: usize, max: u16) -> Result<(), ()> {
    if max == 0 || ctx.load::<u8>(l4 + 13)? & SYN == 0 {
        return Ok(());
    }
    let header_len = usize::from(ctx.load::<u8>(l4 + 12)? >> 4) * 4;
    let mut off = 20;
    for _ in 0..MAX_OPTIONS {
        if off + 4 > header_len {
            return Ok(());
        }
        let [kind, len]: [u8; 2] = ctx.load(l4 + off)?;
        match kind {
            KIND_END => return Ok(()),
            KIND_NOP => off += 1,
            KIND_MSS if len == 4 => return clamp_at(ctx, l4, l4 + off + 2, max),
            _ if len < 2 => return Ok(()),
            _ => off += usize::from(len),
        }
    }
    Ok(())
}

/// The MSS value at `at` (of the segment at `l4`) no larger than `max`.
#[inline(always)]
fn clamp_at<F: Segment>(ctx: &F, l4: usize, at: usize, max: u16) -> Result<(), ()> {
    let asked: u16 = ctx.load(at)?;
    if u16::from_be(asked) <= max {
        return Ok(());
    }
    ctx.replace_word(l4 + 16, at, asked, max.to_be())
}
