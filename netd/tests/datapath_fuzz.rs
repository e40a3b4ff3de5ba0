//! 100,000 random and mutated packets through the uplink programs (TC and XDP) and the
//! endpoint program: none may be rewritten wrongly, and none dropped that the programs
//! must pass. Besides TCP, UDP and ICMP they get VLAN-tagged and double-tagged frames,
//! IPv6, ARP, fragments, and ICMP errors whose quotes are hostile (another IP version, a
//! cut-short or optioned header, a quoted fragment). A packet either comes out byte for
//! byte unchanged, or it was a well-formed IPv4 TCP/UDP/ICMP packet (no options; a first
//! fragment counts, a following one may only have its addresses changed) whose only
//! changed bytes are the addresses, ports and checksums, and every checksum that was
//! right going in is right coming out. Drops are allowed only for what the programs
//! refuse by rule: from a container, anything not untagged IPv4 or ARP from its own
//! addresses, and from the network, what is addressed to a container and claimed by no
//! flow and no published port.

mod support;

use std::net::Ipv4Addr;

use support::*;

const ROUNDS: usize = 100_000;
const TC_ACT_REDIRECT: u32 = 7;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// A packet that may hit a translation: aimed at published ports, masqueraded sources,
/// or nothing in particular.
fn template(rng: &mut Rng) -> Vec<u8> {
    let addrs = [
        NODE,
        CONTAINER,
        Ipv4Addr::new(10, 200, 0, 1),
        Ipv4Addr::new(10, 201, 0, 2),
        Ipv4Addr::new(172, 17, 0, 9),
    ];
    let ports = [
        8080,
        5353,
        80,
        53,
        40000,
        61000,
        1 + rng.below(65535) as u16,
    ];
    let src = rng.pick(&addrs);
    let dst = rng.pick(&addrs);
    let (sport, dport) = (rng.pick(&ports), rng.pick(&ports));
    let mut pkt = if rng.below(2) == 0 {
        Pkt::tcp(src, sport, dst, dport, rng.next() as u8)
    } else {
        Pkt::udp(src, sport, dst, dport)
    };
    pkt.udp_no_csum = rng.below(4) == 0;
    match rng.below(10) {
        0 => icmp_echo(src, dst, rng.pick(&ports), rng.below(2) == 0),
        // An error goes back to the quoted packet's source; now and then it does not.
        1 => icmp_error(
            rng.pick(&addrs),
            if rng.below(4) == 0 { dst } else { src },
            rng.pick(&[3, 11, 12]),
            rng.below(5) as u8,
            &pkt.build(),
        ),
        2 => {
            let error = icmp_error(rng.pick(&addrs), src, 3, 3, &pkt.build());
            hostile_quote(rng, error)
        }
        3 => vlan_tagged(rng, pkt.build()),
        4 => ipv6_frame(rng),
        5 => fragment(rng, pkt.build()),
        _ => pkt.build(),
    }
}

/// An ICMP error whose quoted IPv4 header lies: another version, options, a fragment,
/// another protocol, or a cut.
fn hostile_quote(rng: &mut Rng, mut p: Vec<u8>) -> Vec<u8> {
    const QUOTE: usize = ETH + 28;
    match rng.below(5) {
        0 => p[QUOTE] = 0x65,
        1 => p[QUOTE] = 0x46 + rng.below(9) as u8,
        2 => p[QUOTE + 6] |= 0x20 | rng.below(2) as u8,
        3 => p[QUOTE + 9] = rng.pick(&[1, 47, 58, 132]),
        _ => p.truncate(QUOTE + rng.below(28)),
    }
    p
}

/// One or two VLAN tags (802.1Q, 802.1ad) in front of the frame's ethertype.
fn vlan_tagged(rng: &mut Rng, p: Vec<u8>) -> Vec<u8> {
    let mut tagged = p[..12].to_vec();
    for _ in 0..=rng.below(2) {
        tagged.extend_from_slice(&[rng.pick(&[0x81, 0x88]), rng.pick(&[0x00, 0xa8]), 0, 0]);
    }
    tagged.extend_from_slice(&p[12..]);
    tagged
}

/// An IPv6 frame (a router advertisement's shape, or anything).
fn ipv6_frame(rng: &mut Rng) -> Vec<u8> {
    let mut p = vec![
        0x33, 0x33, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd, 0x60, 0, 0, 0,
    ];
    p.extend_from_slice(&[0, 16, 58, 255]);
    p.extend((0..48).map(|_| rng.next() as u8));
    p
}

/// The packet as the first or a following fragment of a datagram.
fn fragment(rng: &mut Rng, mut p: Vec<u8>) -> Vec<u8> {
    let (hi, lo) = if rng.below(2) == 0 {
        (0x20, 0)
    } else {
        (
            rng.below(0x20) as u8 | rng.pick(&[0, 0x20]),
            1 + rng.below(255) as u8,
        )
    };
    p[ETH + 6] = hi;
    p[ETH + 7] = lo;
    let c = checksum(
        &[&p[ETH..ETH + 10], &[0, 0], &p[ETH + 12..ETH + 20]].concat(),
        0,
    );
    p[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
    p
}

fn mutate(rng: &mut Rng, mut p: Vec<u8>) -> Vec<u8> {
    match rng.below(6) {
        0 => p,
        1 | 2 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(p.len());
                p[i] = rng.next() as u8;
            }
            p
        }
        3 => {
            // Header fields the parser decides on.
            let field = rng.pick(&[ETH, ETH + 6, ETH + 7, ETH + 9, 12, 13]);
            p[field] = rng.next() as u8;
            p
        }
        4 => {
            let keep = (ETH + 20).max(rng.below(p.len() + 1));
            p.truncate(keep.min(p.len()));
            p
        }
        _ => {
            // Random bytes behind a valid Ethernet/IPv4 prefix.
            for b in p.iter_mut().skip(ETH + 20) {
                *b = rng.next() as u8;
            }
            p
        }
    }
}

/// An IPv4 packet the programs may translate (a following fragment only in its IP
/// header: see `following_fragment`).
fn well_formed(p: &[u8]) -> bool {
    p.len() >= ETH + 20 + 8
        && p[12..14] == [0x08, 0x00]
        && p[ETH] == 0x45
        && (p[ETH + 9] == TCP && p.len() >= ETH + 40 || p[ETH + 9] == UDP || p[ETH + 9] == ICMP)
}

fn following_fragment(p: &[u8]) -> bool {
    p.len() >= ETH + 20
        && p[12..14] == [0x08, 0x00]
        && u16::from_be_bytes([p[ETH + 6], p[ETH + 7]]) & 0x1fff != 0
}

/// Addressed to a container (172.17.0.0/16, not its gateway): from the network, only
/// flows and published ports get there.
fn to_a_container(p: &[u8]) -> bool {
    p.len() >= ETH + 20
        && p[12..14] == [0x08, 0x00]
        && p[ETH + 16..ETH + 18] == [172, 17]
        && p[ETH + 16..ETH + 20] != [172, 17, 0, 1]
}

/// Whether `program` may drop `p` (from `endpoint`, for the endpoint's program).
fn may_drop(program: &str, p: &[u8], endpoint: Ipv4Addr) -> bool {
    let refused = match program {
        "endpoint_ingress" => {
            !from_endpoint(p, endpoint)
                || !(p.get(12..14) == Some(&[0x08, 0x00]) || p.get(12..14) == Some(&[0x08, 0x06]))
                || p.len() < ETH + 20
                || p[12..14] == [0x08, 0x00] && (p[ETH] >> 4 != 4 || p[ETH] & 0x0f < 5)
                || p[12..14] == [0x08, 0x06] && !well_formed_arp(p)
        }
        _ => program != "uplink_egress" && to_a_container(p),
    };
    // Otherwise only a translation that cannot complete drops (counted by reason), and a
    // following fragment whose first was not seen.
    refused || well_formed(p) || following_fragment(p)
}

fn well_formed_arp(p: &[u8]) -> bool {
    p.len() >= ETH + 28
        && p[ETH..ETH + 6] == [0, 1, 8, 0, 6, 4]
        && matches!(p[ETH + 7], 1 | 2)
        && p[ETH + 6] == 0
}

/// Does the frame carry the endpoint's own MAC and address (anti-spoofing passes it)?
fn from_endpoint(p: &[u8], addr: Ipv4Addr) -> bool {
    let field = |r: std::ops::Range<usize>| p.get(r);
    let addr = addr.octets();
    let mac_ok = field(6..12).is_none_or(|m| m == CONTAINER_MAC);
    let ip_ok = match field(12..14) {
        Some([0x08, 0x00]) => field(26..30).is_none_or(|a| a == addr),
        Some([0x08, 0x06]) => {
            field(22..28).is_none_or(|m| m == CONTAINER_MAC)
                && field(28..32).is_none_or(|a| a == addr || a == [0; 4])
        }
        _ => true,
    };
    mac_ok && ip_ok
}

/// An ICMP packet's checksum covers everything after the IP header.
fn icmp_csum_ok(p: &[u8]) -> bool {
    checksum(&p[ETH + 20..], 0) == 0
}

fn ip_csum_ok(p: &[u8]) -> bool {
    checksum(&p[ETH..ETH + 20], 0) == 0
}

fn l4_csum_ok(p: &[u8]) -> bool {
    let proto = p[ETH + 9];
    let off = l4_csum_offset(proto);
    let stored = u16::from_be_bytes([p[off], p[off + 1]]);
    // The L4 length comes from the frame here, as the programs never look at tot_len.
    stored == l4_checksum(p)
}

#[test]
fn random_and_mutated_packets_are_never_rewritten_wrongly() {
    let mut t = standard_node();
    let mut rng = Rng(0x005e_ed0f_4e7d);
    let (mut rewritten, mut dropped) = (0, 0);
    for round in 0..ROUNDS {
        let base = template(&mut rng);
        let mut input = mutate(&mut rng, base);
        // BPF_PROG_TEST_RUN refuses an IPv6 frame without a whole IPv6 header.
        if input[12..14] == [0x86, 0xdd] && input.len() < ETH + 40 {
            input.resize(ETH + 40, 0);
        }
        let program = rng.pick(&[
            "uplink_ingress",
            "uplink_egress",
            "endpoint_ingress",
            "uplink_xdp",
        ]);
        // Behind the endpoint is, mostly, whoever the packet says it comes from; the rest
        // of the time the packet is spoofed.
        let endpoint = match input.get(26..30) {
            Some(a) if !rng.next().is_multiple_of(8) => Ipv4Addr::new(a[0], a[1], a[2], a[3]),
            _ => CONTAINER,
        };
        if program == "endpoint_ingress" {
            t.dp.register_endpoint(LO, &endpoint_at(endpoint, 0))
                .unwrap();
        }
        let (verdict, out) = if program == "uplink_xdp" {
            // XDP's verdicts, mapped onto TC's for the same checks.
            let (verdict, _note, out) = t.run_xdp(&input);
            let verdict = match verdict {
                XDP_PASS => TC_ACT_OK,
                XDP_DROP => TC_ACT_SHOT,
                other => panic!("XDP verdict {other}"),
            };
            (verdict, out)
        } else {
            t.run(program, &input)
        };
        let ctx = || format!("round {round}, {program}, packet {input:02x?}");
        match verdict {
            TC_ACT_OK if out == input => {}
            TC_ACT_OK | TC_ACT_REDIRECT => {
                rewritten += 1;
                assert!(
                    well_formed(&input) || following_fragment(&input),
                    "rewrote a packet it must pass: {}",
                    ctx()
                );
                assert_eq!(out.len(), input.len(), "{}", ctx());
                if following_fragment(&input) {
                    // No L4 header: the addresses and the IP checksum, nothing else.
                    for (i, (a, b)) in input.iter().zip(&out).enumerate() {
                        let nat = (ETH + 10..ETH + 20).contains(&i);
                        let mac = verdict == TC_ACT_REDIRECT && i < 12;
                        assert!(nat || mac || a == b, "byte {i} changed: {}", ctx());
                    }
                    if ip_csum_ok(&input) {
                        assert!(ip_csum_ok(&out), "broke the IP checksum: {}", ctx());
                    }
                    continue;
                }
                let proto = input[ETH + 9];
                if proto == ICMP {
                    // Addresses and IP checksum, the echo identifier or the quoted packet,
                    // and the ICMP checksum may change; nothing before but the MACs of a
                    // packet sent back into the container it came from (a hairpin).
                    let macs = if verdict == TC_ACT_REDIRECT { 12 } else { 0 };
                    assert_eq!(input[macs..ETH + 10], out[macs..ETH + 10], "{}", ctx());
                    if ip_csum_ok(&input) {
                        assert!(ip_csum_ok(&out), "broke the IP checksum: {}", ctx());
                    }
                    if icmp_csum_ok(&input) {
                        assert!(icmp_csum_ok(&out), "broke the ICMP checksum: {}", ctx());
                    }
                    continue;
                }
                let csum = l4_csum_offset(proto);
                for (i, (a, b)) in input.iter().zip(&out).enumerate() {
                    let nat = (ETH + 10..ETH + 20).contains(&i)
                        || (ETH + 20..ETH + 24).contains(&i)
                        || (csum..csum + 2).contains(&i);
                    // Sent back into the container it came from: MACs swapped.
                    let mac = verdict == TC_ACT_REDIRECT && i < 12;
                    assert!(nat || mac || a == b, "byte {i} changed: {}", ctx());
                }
                if ip_csum_ok(&input) {
                    assert!(ip_csum_ok(&out), "broke the IP checksum: {}", ctx());
                }
                let zero_udp = proto == UDP && input[csum..csum + 2] == [0, 0];
                if zero_udp {
                    assert_eq!(
                        out[csum..csum + 2],
                        [0, 0],
                        "a zero UDP checksum must stay zero: {}",
                        ctx()
                    );
                } else if l4_csum_ok(&input) {
                    assert!(l4_csum_ok(&out), "broke the L4 checksum: {}", ctx());
                }
            }
            TC_ACT_SHOT => {
                dropped += 1;
                assert!(
                    may_drop(program, &input, endpoint),
                    "dropped a packet it must pass: {}",
                    ctx()
                );
            }
            other => panic!("unexpected verdict {other}: {}", ctx()),
        }
    }
    eprintln!("{ROUNDS} packets: {rewritten} rewritten, {dropped} dropped, the rest unchanged");
    assert!(
        rewritten > ROUNDS / 25,
        "the loop must exercise the translations, not only the passes"
    );
}
