//! TCP's maximum segment size option (RFC 9293, 3.7.1): clamped in a SYN, so that the
//! other end's segments fit a path the SYN's sender does not know of (NAT46: the
//! container's segments grow by 20 bytes as IPv6).

use aya_ebpf::programs::TcContext;

/// TCP's SYN flag, in the flags byte (offset 13).
const SYN: u8 = 0x02;
/// The MSS option: kind 2, length 4.
const KIND_END: u8 = 0;
const KIND_NOP: u8 = 1;
const KIND_MSS: u8 = 2;
/// Options looked at before giving up (the MSS option comes first in the SYNs of every
/// common stack; padding and other options before it are walked).
const MAX_OPTIONS: usize = 10;

/// If the TCP segment at `l4` is a SYN whose MSS option asks for more than `max`, ask
/// for `max` instead, the checksum kept right. `max` 0: left as it is.
#[inline(never)]
pub fn clamp(ctx: &TcContext, l4: usize, max: u16) -> Result<(), i64> {
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
fn clamp_at(ctx: &TcContext, l4: usize, at: usize, max: u16) -> Result<(), i64> {
    let asked: u16 = ctx.load(at)?;
    if u16::from_be(asked) <= max {
        return Ok(());
    }
    let max = max.to_be();
    // The checksum's 16-bit word replaced (size 2 in the flags).
    ctx.l4_csum_replace(l4 + 16, u64::from(asked), u64::from(max), 2)?;
    ctx.store(at, &max, 0)?;
    Ok(())
}
