//! Address conflict detection on a LAN (RFC 5227): before an address is handed to a
//! container that sits on the LAN itself (macvlan), ask who has it. An ARP probe (sender
//! address 0.0.0.0, so no host learns anything from it) goes out of the parent twice;
//! any ARP from another host claiming the address within the wait is a conflict, and the
//! address is not used (a laptop's DHCP lease is never stolen).
//!
//! RFC 5227 waits one to two seconds per probe; a container start cannot, so netd waits
//! `WAIT` in all. A host that answers later than that is not seen.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Result;

use crate::address_probe;

/// How long answers are waited for, in all.
pub const WAIT: Duration = Duration::from_millis(300);
/// Probes sent, `WAIT / PROBES` apart.
const PROBES: u32 = 2;

const ETH_P_ARP: u16 = 0x0806;
const FRAME_LEN: usize = 42;

/// An ARP probe for `target` from `mac`: broadcast, sender address 0.0.0.0.
pub fn probe_frame(mac: [u8; 6], target: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // Ethernet, IPv4, address lengths 6 and 4, request.
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    // Sender address 0.0.0.0 (f[28..32]), target hardware address zero (f[32..38]).
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The MAC of another host that `frame` shows using `target`: an ARP (request or reply)
/// whose sender address is `target`, or another host's probe for it (RFC 5227 2.1.1),
/// from any MAC but `own`.
pub fn conflict_in(frame: &[u8], target: Ipv4Addr, own: [u8; 6]) -> Option<[u8; 6]> {
    if frame.len() < FRAME_LEN || frame[12..14] != ETH_P_ARP.to_be_bytes() {
        return None;
    }
    if frame[14..20] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let sender_mac: [u8; 6] = frame[22..28].try_into().ok()?;
    if sender_mac == own {
        return None;
    }
    let sender_ip = Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]);
    let target_ip = Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]);
    let op = u16::from_be_bytes([frame[20], frame[21]]);
    let claims = sender_ip == target;
    let probes_too = op == 1 && sender_ip.is_unspecified() && target_ip == target;
    (claims || probes_too).then_some(sender_mac)
}

/// Probe `target` out of interface `ifindex` (of the calling thread's namespace), sending
/// as `mac`: the MAC of the host that answered, if one did. Blocking, `WAIT` long.
pub fn probe(ifindex: u32, mac: [u8; 6], target: Ipv4Addr) -> Result<Option<[u8; 6]>> {
    address_probe::probe(
        &address_probe::Probe {
            ifindex,
            ethertype: ETH_P_ARP,
            frame: &probe_frame(mac, target),
            wait: WAIT,
            probes: PROBES,
            all_multicast: false,
        },
        |frame| conflict_in(frame, target, mac),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const THEIRS: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn arp(op: u16, mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> [u8; FRAME_LEN] {
        let mut f = probe_frame(mac, target);
        f[20..22].copy_from_slice(&op.to_be_bytes());
        f[28..32].copy_from_slice(&sender.octets());
        f
    }

    #[test]
    fn a_probe_says_nothing_of_its_sender() {
        let f = probe_frame(OWN, Ipv4Addr::new(192, 168, 1, 9));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[28..32], &[0, 0, 0, 0], "sender address 0.0.0.0");
        assert_eq!(&f[38..42], &[192, 168, 1, 9]);
    }

    #[test]
    fn conflicts_are_answers_announcements_and_rival_probes_from_others() {
        let t = Ipv4Addr::new(192, 168, 1, 9);
        let other = Ipv4Addr::new(192, 168, 1, 7);
        assert_eq!(conflict_in(&arp(2, THEIRS, t, other), t, OWN), Some(THEIRS));
        assert_eq!(conflict_in(&arp(1, THEIRS, t, t), t, OWN), Some(THEIRS));
        assert_eq!(
            conflict_in(&arp(1, THEIRS, Ipv4Addr::UNSPECIFIED, t), t, OWN),
            Some(THEIRS),
            "another host probing for it"
        );
        assert_eq!(
            conflict_in(&probe_frame(OWN, t), t, OWN),
            None,
            "our own probe"
        );
        assert_eq!(conflict_in(&arp(2, THEIRS, other, t), t, OWN), None);
        assert_eq!(
            conflict_in(&arp(1, THEIRS, other, t), t, OWN),
            None,
            "a plain request"
        );
        assert_eq!(conflict_in(&[0u8; 20], t, OWN), None);
    }
}
