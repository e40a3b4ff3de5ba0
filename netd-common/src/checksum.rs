//! Incremental Internet checksum updates (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`),
//! for XDP, which has no checksum helpers. Pure functions, unit-tested here against a full
//! recomputation.
//!
//! Byte order does not matter as long as it is the same for all operands: a ones'
//! complement sum of 16-bit words read natively from memory is the byte-swapped sum of
//! the same words read big-endian. So pass fields exactly as loaded from the packet.
//!
//! Only for packets whose checksums are complete (frames from a NIC). A CHECKSUM_PARTIAL
//! packet (sent by a local socket through a veth) holds a pseudo-header seed in its L4
//! checksum instead, which these updates would get wrong: container-originated traffic
//! is never translated in XDP.

/// Fold a 32-bit ones' complement sum into 16 bits.
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// `check` after a 16-bit word it covers changed from `old` to `new`.
#[inline(always)]
pub const fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(!check as u32 + !old as u32 + new as u32)
}

/// `check` after a 32-bit field it covers (an IPv4 address) changed from `old` to `new`.
#[inline(always)]
pub const fn replace32(check: u16, old: u32, new: u32) -> u16 {
    let sum = !check as u32 + (!old & 0xffff) + (!old >> 16) + (new & 0xffff) + (new >> 16);
    !fold(sum)
}

/// `check` after a 128-bit field it covers (an IPv6 address, as four words loaded
/// natively) changed from `old` to `new`.
#[inline(always)]
pub const fn replace128(check: u16, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    let mut sum = !check as u32;
    let mut i = 0;
    while i < 4 {
        sum += (!old[i] & 0xffff) + (!old[i] >> 16) + (new[i] & 0xffff) + (new[i] >> 16);
        i += 1;
    }
    !fold(sum)
}

/// The folded TCP/UDP pseudo-header sum (addresses as loaded, `l4_len` in host order), in
/// the same byte order as fields loaded natively. It is what a CHECKSUM_PARTIAL packet
/// holds in its L4 checksum field until the device completes it.
#[inline(always)]
pub const fn pseudo_header(src: u32, dst: u32, proto: u8, l4_len: u16) -> u16 {
    let proto_word = u16::from_ne_bytes([0, proto]) as u32;
    let len_word = u16::from_ne_bytes(l4_len.to_be_bytes()) as u32;
    fold((src & 0xffff) + (src >> 16) + (dst & 0xffff) + (dst >> 16) + proto_word + len_word)
}

/// `pseudo_header` for IPv6 (RFC 8200, 8.1): the two addresses, the upper-layer length
/// (`l4_len`, host order; a packet's fits 16 bits) and the next header.
#[inline(always)]
pub const fn pseudo_header6(src: &[u32; 4], dst: &[u32; 4], proto: u8, l4_len: u16) -> u16 {
    let mut sum =
        u16::from_ne_bytes([0, proto]) as u32 + u16::from_ne_bytes(l4_len.to_be_bytes()) as u32;
    let mut i = 0;
    while i < 4 {
        sum += (src[i] & 0xffff) + (src[i] >> 16) + (dst[i] & 0xffff) + (dst[i] >> 16);
        i += 1;
    }
    fold(sum)
}

/// A UDP checksum of 0 means "none": it stays 0, and a computed 0 is sent as 0xffff
/// (RFC 768).
#[inline(always)]
pub const fn udp_wire(check: u16) -> u16 {
    if check == 0 { 0xffff } else { check }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// The checksum of `bytes` (big-endian words), as written into a header.
    fn full(bytes: &[u8]) -> u16 {
        let mut sum = 0u32;
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += word as u32;
        }
        !fold(sum)
    }

    /// A deterministic xorshift, so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// `block` gets a checksum in its first two bytes that verifies; `change` rewrites a
    /// field and returns the checksum the incremental update gives from the stored one
    /// (fields loaded natively, as the programs do). It must equal a full recomputation.
    fn assert_incremental(mut block: Vec<u8>, change: impl FnOnce(&mut [u8], u16) -> u16) {
        block[0..2].fill(0);
        let check = full(&block);
        block[0..2].copy_from_slice(&check.to_be_bytes());
        let stored = u16::from_ne_bytes([block[0], block[1]]);
        let updated = change(&mut block, stored);
        block[0..2].fill(0);
        assert_eq!(updated.to_ne_bytes(), full(&block).to_be_bytes());
    }

    #[test]
    fn an_address_change_updates_the_checksum_like_a_full_recomputation() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..10_000 {
            let len = 8 + (rng.next() % 60) as usize * 2;
            let field = 2 + 2 * (rng.next() as usize % ((len - 6) / 2));
            let new = rng.next() as u32;
            assert_incremental(rng.bytes(len), |block, stored| {
                let old = u32::from_ne_bytes(block[field..field + 4].try_into().unwrap());
                block[field..field + 4].copy_from_slice(&new.to_ne_bytes());
                replace32(stored, old, new)
            });
        }
    }

    #[test]
    fn a_port_change_updates_the_checksum_like_a_full_recomputation() {
        let mut rng = Rng(42);
        for _ in 0..10_000 {
            let field = 2 + 2 * (rng.next() as usize % 19);
            let new = rng.next() as u16;
            assert_incremental(rng.bytes(40), |block, stored| {
                let old = u16::from_ne_bytes([block[field], block[field + 1]]);
                block[field..field + 2].copy_from_slice(&new.to_ne_bytes());
                replace16(stored, old, new)
            });
        }
    }

    /// A real header: 10.200.0.1 -> 10.200.0.2 rewritten to 172.17.0.2 still sums to
    /// all ones.
    #[test]
    fn an_ipv4_header_still_verifies_after_dnat() {
        let mut ip = [
            0x45, 0, 0, 0x3c, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2,
        ];
        let check = full(&ip);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        let old = u32::from_ne_bytes(ip[16..20].try_into().unwrap());
        let new = u32::from_ne_bytes([172, 17, 0, 2]);
        let updated = replace32(u16::from_ne_bytes([ip[10], ip[11]]), old, new);
        ip[10..12].copy_from_slice(&updated.to_ne_bytes());
        ip[16..20].copy_from_slice(&new.to_ne_bytes());
        // A header with a right checksum sums to 0xffff (its complement is 0).
        assert_eq!(full(&ip), 0);
    }

    /// Linux seeds a CHECKSUM_PARTIAL TCP or UDP packet with `~csum_tcpudp_magic(...)`:
    /// the folded, uncomplemented sum of the pseudo header in big-endian words.
    #[test]
    fn the_pseudo_header_sum_is_what_a_partial_checksum_holds() {
        let (src, dst) = ([10u8, 200, 0, 1], [10u8, 200, 0, 2]);
        let len = 40u16;
        let mut pseudo = std::vec::Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&len.to_be_bytes());
        let seed = !full(&pseudo);
        let ours = pseudo_header(u32::from_ne_bytes(src), u32::from_ne_bytes(dst), 6, len);
        assert_eq!(ours.to_ne_bytes(), seed.to_be_bytes());
    }

    /// Four native words of 16 bytes, as the programs load an IPv6 address.
    fn words(bytes: &[u8]) -> [u32; 4] {
        core::array::from_fn(|i| u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()))
    }

    #[test]
    fn an_ipv6_address_change_updates_the_checksum_like_a_full_recomputation() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..10_000 {
            let extra = rng.next() as usize % 40;
            let block = rng.bytes(2 + 16 + extra);
            let new = rng.bytes(16);
            assert_incremental(block, |b, check| {
                let old = words(&b[2..18]);
                b[2..18].copy_from_slice(&new);
                replace128(check, &old, &words(&new))
            });
        }
    }

    /// Linux seeds a CHECKSUM_PARTIAL TCP or UDP packet over IPv6 as over IPv4: with the
    /// folded, uncomplemented sum of the pseudo header.
    #[test]
    fn the_ipv6_pseudo_header_sum_is_what_a_partial_checksum_holds() {
        let mut rng = Rng(7);
        for _ in 0..1_000 {
            let (src, dst) = (rng.bytes(16), rng.bytes(16));
            let (proto, len) = (6 + 11 * (rng.next() as u8 & 1), rng.next() as u16);
            let mut pseudo = std::vec::Vec::new();
            pseudo.extend_from_slice(&src);
            pseudo.extend_from_slice(&dst);
            pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
            let seed = !full(&pseudo);
            let ours = pseudo_header6(&words(&src), &words(&dst), proto, len);
            assert_eq!(ours.to_ne_bytes(), seed.to_be_bytes());
        }
    }

    #[test]
    fn udp_sends_a_computed_zero_as_all_ones() {
        assert_eq!(udp_wire(0), 0xffff);
        assert_eq!(udp_wire(0x1234), 0x1234);
    }
}
