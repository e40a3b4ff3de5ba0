//! IPv6's address conflict detection on a LAN (duplicate address detection, RFC 4862
//! 5.4): before an IPv6 address is handed to a macvlan container, a neighbour
//! solicitation for it from the unspecified address `::` (no host learns anything from
//! it) goes to its solicited-node group out of the parent; a neighbour advertisement for
//! it from another host, or another host's own solicitation from `::` for it (a rival
//! doing the same), is a conflict and the address is not used. As for IPv4
//! (`arp_probe`), netd waits `arp_probe::WAIT` in all, not RFC 4862's second per probe.

use std::net::Ipv6Addr;

use anyhow::Result;

use crate::{address_probe, arp_probe};

const ETH_P_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Ethernet (14), IPv6 (40), the solicitation: type, code, checksum, reserved (8) and
/// the target (16). Without options: a solicitation from `::` carries no link-layer
/// address (RFC 4861 4.3).
const FRAME_LEN: usize = 14 + 40 + 24;
const ICMP_AT: usize = 54;
const TARGET_AT: usize = ICMP_AT + 8;
const PROBES: u32 = 2;

/// The solicited-node multicast group of `target` (RFC 4291 2.7.1).
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    let mut g = [0u8; 16];
    g[..2].copy_from_slice(&[0xff, 0x02]);
    g[11..].copy_from_slice(&[0x01, 0xff, t[13], t[14], t[15]]);
    Ipv6Addr::from(g)
}

/// A duplicate address detection probe for `target` from `mac`.
pub fn probe_frame(mac: [u8; 6], target: Ipv6Addr) -> [u8; FRAME_LEN] {
    let group = solicited_node(target).octets();
    let mut f = [0u8; FRAME_LEN];
    // The group's MAC: 33:33 and its last four bytes (RFC 2464 7).
    f[0..2].copy_from_slice(&[0x33, 0x33]);
    f[2..6].copy_from_slice(&group[12..]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    // Version 6; payload 24 bytes; ICMPv6; hop limit 255 (RFC 4861 7.1.1 drops any
    // other); from `::` (f[22..38]) to the group.
    f[14] = 0x60;
    f[18..20].copy_from_slice(&24u16.to_be_bytes());
    f[20] = ICMPV6;
    f[21] = 255;
    f[38..54].copy_from_slice(&group);
    f[ICMP_AT] = NEIGHBOUR_SOLICITATION;
    f[TARGET_AT..].copy_from_slice(&target.octets());
    let check = icmpv6_checksum(&f[22..54], &f[ICMP_AT..]);
    f[ICMP_AT + 2..ICMP_AT + 4].copy_from_slice(&check.to_be_bytes());
    f
}

/// The ICMPv6 checksum of `message` between the addresses `addresses` (source then
/// destination, 32 bytes), over RFC 8200 8.1's pseudo-header.
fn icmpv6_checksum(addresses: &[u8], message: &[u8]) -> u16 {
    let words = |b: &[u8]| -> u32 {
        b.chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum()
    };
    let len = message.len() as u32;
    let sum = words(addresses) + (len >> 16) + (len & 0xffff) + u32::from(ICMPV6) + words(message);
    !netd_common::checksum::fold(sum)
}

/// The MAC of another host that `frame` shows using `target`: a neighbour advertisement
/// for it, or another host's duplicate address detection probe for it, from any MAC but
/// `own`. Only what a host may send on the link (hop limit 255, no extension header).
pub fn conflict_in(frame: &[u8], target: Ipv6Addr, own: [u8; 6]) -> Option<[u8; 6]> {
    if frame.len() < FRAME_LEN
        || frame[12..14] != ETH_P_IPV6.to_be_bytes()
        || frame[14] >> 4 != 6
        || frame[20] != ICMPV6
        || frame[21] != 255
        || frame[TARGET_AT..TARGET_AT + 16] != target.octets()
    {
        return None;
    }
    let sender_mac: [u8; 6] = frame[6..12].try_into().ok()?;
    if sender_mac == own {
        return None;
    }
    let from_unspecified = frame[22..38] == [0; 16];
    match frame[ICMP_AT] {
        NEIGHBOUR_ADVERTISEMENT => Some(sender_mac),
        NEIGHBOUR_SOLICITATION if from_unspecified => Some(sender_mac),
        _ => None,
    }
}

/// Probe `target` out of interface `ifindex` (of the calling thread's namespace), sending
/// as `mac`: the MAC of the host that answered, if one did. Blocking, `arp_probe::WAIT`
/// long.
pub fn probe(ifindex: u32, mac: [u8; 6], target: Ipv6Addr) -> Result<Option<[u8; 6]>> {
    address_probe::probe(
        &address_probe::Probe {
            ifindex,
            ethertype: ETH_P_IPV6,
            frame: &probe_frame(mac, target),
            wait: arp_probe::WAIT,
            probes: PROBES,
            all_multicast: true,
        },
        |frame| conflict_in(frame, target, mac),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const THEIRS: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn target() -> Ipv6Addr {
        "fd00:77::1:2:3".parse().unwrap()
    }

    /// `frame` as another host would send it: from `mac`, of ICMPv6 type `kind`, from
    /// `source`.
    fn from(mac: [u8; 6], kind: u8, source: Ipv6Addr) -> [u8; FRAME_LEN] {
        let mut f = probe_frame(mac, target());
        f[ICMP_AT] = kind;
        f[22..38].copy_from_slice(&source.octets());
        f
    }

    #[test]
    fn a_probe_is_a_solicitation_from_nowhere_to_the_solicited_node_group() {
        let f = probe_frame(OWN, target());
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x02, 0x00, 0x03]);
        assert_eq!(&f[6..12], &OWN);
        assert_eq!(&f[22..38], &[0; 16], "from ::");
        assert_eq!(
            Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap()),
            "ff02::1:ff02:3".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!((f[ICMP_AT], f[21]), (NEIGHBOUR_SOLICITATION, 255));
        assert_eq!(&f[TARGET_AT..], &target().octets());
    }

    #[test]
    fn the_probes_checksum_sums_to_zero_over_its_pseudo_header() {
        let f = probe_frame(OWN, target());
        // A checksum over a message that holds its checksum is 0 (ones' complement).
        assert_eq!(icmpv6_checksum(&f[22..54], &f[ICMP_AT..]), 0);
        // The solicitation for fe80::1 from ::, summed independently (Python's struct
        // over the pseudo-header and message).
        let f = probe_frame(OWN, "fe80::1".parse().unwrap());
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), 0x7c25);
    }

    #[test]
    fn conflicts_are_advertisements_and_rival_probes_from_others() {
        let t = target();
        let elsewhere: Ipv6Addr = "fd00:77::9".parse().unwrap();
        let na = from(THEIRS, NEIGHBOUR_ADVERTISEMENT, t);
        assert_eq!(conflict_in(&na, t, OWN), Some(THEIRS));
        let rival = from(THEIRS, NEIGHBOUR_SOLICITATION, Ipv6Addr::UNSPECIFIED);
        assert_eq!(conflict_in(&rival, t, OWN), Some(THEIRS), "a rival probe");
        assert_eq!(conflict_in(&probe_frame(OWN, t), t, OWN), None, "ours");
        let plain = from(THEIRS, NEIGHBOUR_SOLICITATION, elsewhere);
        assert_eq!(conflict_in(&plain, t, OWN), None, "a plain solicitation");
        assert_eq!(conflict_in(&na, elsewhere, OWN), None, "another target");
        let mut routed = na;
        routed[21] = 64;
        assert_eq!(conflict_in(&routed, t, OWN), None, "hop limit not 255");
        assert_eq!(conflict_in(&na[..60], t, OWN), None, "short");
    }
}
