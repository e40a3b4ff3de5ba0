//! 100,000 random and mutated IPv6 frames through a container's veth program (which hands
//! them to its IPv6 program) and the uplink's (TC, and XDP, which hands them to
//! `uplink_xdp6`): none is ever changed, none a container
//! sends passes unless an independent reading of it (written here, not shared with the
//! programs) finds it allowed, and none of the legitimate frames the generator makes is
//! dropped. Frames come from the container's addresses and others', to its network, the
//! node, another network and beyond; behind random chains of extension headers
//! (Hop-by-Hop anywhere, routing with segments left, fragments first, following and
//! atomic, AH, "no next header", too many or too long); carrying UDP (DHCPv6's ports
//! too), TCP, and ICMPv6 of every first-hop type with link-layer options of any MAC.

mod support;

use std::net::Ipv6Addr;

use netd_common::{maps::ENDPOINT_INTERNAL, user::link_local_for};
use support::*;

const ROUNDS: usize = 100_000;

/// What a frame was made to be: legitimate ones must pass.
struct Made {
    frame: Vec<u8>,
    legitimate: bool,
}

fn make(rng: &mut Rng) -> Made {
    let mut legitimate = true;
    let src = match rng.below(8) {
        0..=3 => CONTAINER6,
        4 | 5 => own_link_local(),
        6 => Ipv6Addr::UNSPECIFIED,
        _ => {
            legitimate = false;
            rng.pick(&[
                NEIGHBOUR6,
                OTHER_CONTAINER6,
                GATEWAY6,
                link_local_for(NEIGHBOUR_MAC),
            ])
        }
    };
    let dst = rng.pick(&[
        NEIGHBOUR6,
        GATEWAY6,
        gateway_link_local(),
        link_local_for(NEIGHBOUR_MAC),
        OTHER_GATEWAY6,
        ALL_NODES,
        ALL_ROUTERS,
        OTHER_CONTAINER6,
        BEYOND6,
    ]);
    if [OTHER_CONTAINER6, BEYOND6].contains(&dst) {
        legitimate = false;
    }
    let (upper, mut payload, upper_ok, may_be_unspecified) = upper_layer(rng);
    legitimate &= upper_ok;
    if src.is_unspecified() && !may_be_unspecified {
        legitimate = false;
    }
    let (first, chain, chain_ok) = chain(rng, upper);
    legitimate &= chain_ok;
    let mut rest = chain;
    rest.append(&mut payload);
    let dst_mac = if dst.is_multicast() {
        [0x33, 0x33, 0, 0, 0, 1]
    } else {
        rng.pick(&[GATEWAY_MAC, NEIGHBOUR_MAC])
    };
    let mut frame = ipv6_frame(dst_mac, src, dst, first, &rest);
    if rng.chance(20) {
        frame[6..12].copy_from_slice(&NEIGHBOUR_MAC);
        legitimate = false;
    }
    Made { frame, legitimate }
}

/// The upper layer: its protocol, bytes, whether a container may send it, and whether
/// it may come from `::`.
fn upper_layer(rng: &mut Rng) -> (u8, Vec<u8>, bool, bool) {
    match rng.below(4) {
        0 => {
            let sport = rng.pick(&[40000, 546, 547, 53]);
            let dport = rng.pick(&[7, 546, 547, 53]);
            let mut u = [sport, dport, 16, 0]
                .iter()
                .flat_map(|v: &u16| v.to_be_bytes())
                .collect::<Vec<u8>>();
            u.extend_from_slice(b"fuzzing!");
            (UDP6, u, sport != 547 && dport != 546, false)
        }
        1 => {
            let mut t = vec![
                0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff,
            ];
            t.extend_from_slice(&[0; 4]);
            (TCP6, t, true, false)
        }
        _ => icmp6(rng),
    }
}

fn icmp6(rng: &mut Rng) -> (u8, Vec<u8>, bool, bool) {
    let kind = rng.pick(&[
        128, 129, 1, 2, 3, 4, 130, 131, 132, 133, 134, 135, 136, 137, 138, 143, 151, 152, 153,
    ]);
    let mut m = vec![kind, 0, 0, 0];
    let mut ok = ![130, 134, 137, 138, 151, 153].contains(&kind);
    let mut unspecified_ok = [131, 132, 133, 143].contains(&kind);
    match kind {
        135 | 136 => {
            let mut flags = rng.pick(&[0u8, 0x20, 0x40, 0x60, 0x80, 0xe0]);
            if kind == 135 {
                flags = 0;
            }
            if flags & 0x80 != 0 {
                ok = false;
            }
            m.extend_from_slice(&[flags, 0, 0, 0]);
            let target = rng.pick(&[
                CONTAINER6,
                own_link_local(),
                GATEWAY6,
                NEIGHBOUR6,
                gateway_link_local(),
            ]);
            let own = target == CONTAINER6 || target == own_link_local();
            if kind == 136 && !own {
                ok = false;
            }
            unspecified_ok = kind == 135 && own;
            m.extend_from_slice(&target.octets());
            for _ in 0..rng.below(6) {
                let opt = rng.pick(&[1u8, 2, 14, 5]);
                let mac = if rng.chance(4) {
                    NEIGHBOUR_MAC
                } else {
                    CONTAINER_MAC
                };
                if (opt == 1 || opt == 2) && mac != CONTAINER_MAC {
                    ok = false;
                }
                m.extend_from_slice(&[opt, 1]);
                m.extend_from_slice(&mac);
            }
            if m.len() > 24 + 4 * 8 {
                ok = false; // more options than the programs read
            }
        }
        // A router solicitation: reserved, then its options (none here).
        133 => m.extend_from_slice(&[0; 4]),
        _ => m.extend_from_slice(&[0; 12]),
    }
    (ICMP6, m, ok, unspecified_ok)
}

/// Extension headers in front of `upper`: the first protocol, the bytes, whether the
/// chain is one a container may send.
fn chain(rng: &mut Rng, upper: u8) -> (u8, Vec<u8>, bool) {
    let n = rng.pick(&[0usize, 0, 0, 1, 1, 2, 3, 7]);
    let mut kinds: Vec<u8> = (0..n)
        .map(|_| {
            rng.pick(&[
                HOP_BY_HOP, DEST_OPTS, DEST_OPTS, ROUTING, FRAGMENT, AUTH, MOBILITY, NO_NEXT,
            ])
        })
        .collect();
    if rng.chance(2) && !kinds.is_empty() {
        kinds[0] = HOP_BY_HOP;
    }
    let mut ok = n <= 6;
    let mut bytes = Vec::new();
    let mut fragmented = false;
    for (i, kind) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(upper);
        match *kind {
            HOP_BY_HOP | DEST_OPTS | MOBILITY => {
                ok &= *kind != HOP_BY_HOP || i == 0;
                bytes.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            ROUTING => {
                let left = rng.pick(&[0u8, 0, 1]);
                ok &= left == 0;
                bytes.extend_from_slice(&[next, 0, 4, left, 0, 0, 0, 0]);
            }
            FRAGMENT => {
                // Atomic fragments only: a legitimate first fragment is checked by the
                // upper-layer rules, a following one by its outer header; both are
                // mutated into existence below.
                ok &= !fragmented;
                fragmented = true;
                let field: u16 = rng.pick(&[0, 0, 1, 8 << 3]);
                if field != 0 {
                    ok = false;
                }
                bytes.extend_from_slice(&[next, 0]);
                bytes.extend_from_slice(&field.to_be_bytes());
                bytes.extend_from_slice(&[0, 0, 0, 7]);
            }
            AUTH => bytes.extend_from_slice(&[next, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]),
            _ => {
                ok = false;
                bytes.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
            }
        }
    }
    (kinds.first().copied().unwrap_or(upper), bytes, ok)
}

fn mutate(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    match rng.below(9) {
        0..=3 => f,
        4 | 5 => {
            for _ in 0..=rng.below(3) {
                let i = ETH + rng.below(f.len() - ETH);
                f[i] = rng.next() as u8;
            }
            f
        }
        6 => {
            let keep = (ETH + 40).max(rng.below(f.len() + 1));
            f.truncate(keep.min(f.len()));
            f
        }
        7 => {
            for b in f.iter_mut().skip(ETH + 40 + rng.below(16)) {
                *b = rng.next() as u8;
            }
            f
        }
        // Bytes after the packet (its payload length unchanged): not the packet's.
        _ => {
            for _ in 0..=rng.below(24) {
                f.push(rng.next() as u8);
            }
            f
        }
    }
}

/// This test's own reading of an IPv6 frame from the container: why it must not pass,
/// if it must not.
fn refusal(f: &[u8]) -> Option<&'static str> {
    if f[6..12] != CONTAINER_MAC {
        return Some("another source MAC");
    }
    if f[12..14] != [0x86, 0xdd] || f.len() < ETH + 40 || f[ETH] >> 4 != 6 {
        return Some("not IPv6");
    }
    // The packet is what its payload length covers (0, on these frames that are no GSO
    // ones: nothing beyond the fixed header); the kernel trims the rest of the frame, and
    // drops a packet longer than its frame.
    let payload = usize::from(u16::from_be_bytes([f[ETH + 4], f[ETH + 5]]));
    let end = ETH + 40 + payload;
    if end > f.len() {
        return Some("truncated");
    }
    let f = &f[..end];
    let addr = |off: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&f[off..off + 16]).unwrap());
    let src = addr(ETH + 8);
    let dst = addr(ETH + 24);
    if !(src == CONTAINER6 || src == own_link_local() || src.is_unspecified()) {
        return Some("another source address");
    }
    // The chain.
    let mut next = f[ETH + 6];
    let mut off = ETH + 40;
    let mut following = false;
    let mut headers = 0;
    let mut fragments = 0;
    let mut first_fragment = false;
    loop {
        match next {
            HOP_BY_HOP | DEST_OPTS | ROUTING | FRAGMENT | AUTH | MOBILITY | 139 | 140 | 253
            | 254 => {}
            NO_NEXT => return Some("no next header"),
            _ => break,
        }
        headers += 1;
        if headers > 6 || f.len() < off + 8 {
            return Some("chain too long or cut");
        }
        if next == HOP_BY_HOP && headers != 1 {
            return Some("hop-by-hop not first");
        }
        if next == ROUTING && f[off + 3] != 0 {
            return Some("segments left");
        }
        let len = match next {
            FRAGMENT => {
                fragments += 1;
                if fragments > 1 {
                    return Some("two fragment headers");
                }
                let field = u16::from_be_bytes([f[off + 2], f[off + 3]]);
                following = field & 0xfff8 != 0;
                first_fragment = field == 1;
                8
            }
            AUTH => (f[off + 1] as usize + 2) * 4,
            _ => (f[off + 1] as usize + 1) * 8,
        };
        next = f[off];
        off += len;
        if following {
            break;
        }
        if off > ETH + 40 + 256 {
            return Some("chain too long");
        }
    }
    let l4 = &f[off.min(f.len())..];
    let mut icmp_type = 0;
    let mut target = Ipv6Addr::UNSPECIFIED;
    if !following {
        match next {
            UDP6 if l4.len() >= 4
                && (u16::from_be_bytes([l4[0], l4[1]]) == 547
                    || u16::from_be_bytes([l4[2], l4[3]]) == 546) =>
            {
                return Some("DHCPv6 server");
            }
            ICMP6 if l4.is_empty() => return Some("no ICMPv6 type"),
            ICMP6 if first_fragment && (130..=155).contains(&l4[0]) => {
                return Some("fragmented ND");
            }
            ICMP6 if !first_fragment => {
                icmp_type = l4[0];
                if [130, 134, 137, 138, 151, 153].contains(&icmp_type) {
                    return Some("router message");
                }
                if icmp_type == 135 || icmp_type == 136 {
                    if l4.len() < 24 {
                        return Some("cut ND");
                    }
                    target = Ipv6Addr::from(<[u8; 16]>::try_from(&l4[8..24]).unwrap());
                    let own = target == CONTAINER6 || target == own_link_local();
                    if icmp_type == 136 && (!own || l4[4] & 0x80 != 0) {
                        return Some("NA not own or router");
                    }
                    options_refused(&l4[24..])?;
                } else if icmp_type == 133 {
                    if l4.len() < 8 {
                        return Some("cut RS");
                    }
                    options_refused(&l4[8..])?;
                }
            }
            _ => {}
        }
    }
    if src.is_unspecified() {
        let own_target = target == CONTAINER6 || target == own_link_local();
        if !([131, 132, 133, 143].contains(&icmp_type) || icmp_type == 135 && own_target) {
            return Some("unspecified source");
        }
    }
    let in_net = |net: &str, a: Ipv6Addr| net.parse::<ipnet::Ipv6Net>().unwrap().contains(&a);
    if [GATEWAY6, gateway_link_local(), OTHER_GATEWAY6].contains(&dst) || dst.is_multicast() {
        return None;
    }
    if (dst.segments()[0] & 0xffc0) == 0xfe80 || in_net(NET6, dst) {
        return None;
    }
    Some("beyond the network")
}

/// Neighbour discovery options: at most four, none of length 0, every link-layer address
/// the container's MAC. `Some(why)` bubbles up as the frame's refusal.
fn options_refused(opts: &[u8]) -> Option<&'static str> {
    let mut o = 0;
    let mut n = 0;
    while o < opts.len() {
        n += 1;
        if n > 4
            || o + 2 > opts.len()
            || opts[o + 1] == 0
            || o + opts[o + 1] as usize * 8 > opts.len()
        {
            return Some("options");
        }
        if (opts[o] == 1 || opts[o] == 2)
            && (o + 8 > opts.len() || opts[o + 2..o + 8] != CONTAINER_MAC)
        {
            return Some("another link-layer address");
        }
        o += opts[o + 1] as usize * 8;
    }
    None
}

#[test]
fn random_and_mutated_ipv6_is_never_changed_and_never_passed_unpoliced() {
    // An `--internal` network (neither masqueraded nor routed): nothing may leave beyond
    // the node's networks, so every destination has a verdict the oracle can tell
    // (masquerade and tracked egress are `datapath_nat6`'s and `datapath_ipv6`'s).
    let mut t = node6(ENDPOINT_INTERNAL);
    t.dp.set_network6(NET6.parse().unwrap(), Some(network(NETWORK_TAG, 0)))
        .unwrap();
    let mut rng = Rng(0x0006_f00d_5eed);
    let (mut passed, mut dropped, mut legit) = (0, 0, 0);
    for round in 0..ROUNDS {
        let made = make(&mut rng);
        let mutated = rng.below(2) == 0;
        let input = if mutated {
            mutate(&mut rng, made.frame.clone())
        } else {
            made.frame.clone()
        };
        if rng.chance(10) {
            // The uplink's XDP program (its IPv6 half): with no published port and no
            // flow here, nothing is its to translate or drop; TC judges it all.
            let (verdict, note, out) = t.run_xdp(&input);
            let ctx = format!("round {round}, uplink_xdp, frame {input:02x?}");
            assert_eq!((verdict, note.len()), (XDP_PASS, 0), "{ctx}");
            assert_eq!(out, input, "changed: {ctx}");
            continue;
        }
        let program = if rng.chance(5) {
            "uplink_ingress"
        } else {
            "endpoint_ingress"
        };
        let (verdict, out) = t.run(program, &input);
        let ctx = || format!("round {round}, {program}, frame {input:02x?}");
        assert_eq!(out, input, "changed: {}", ctx());
        if program == "uplink_ingress" {
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&input[ETH + 24..ETH + 40]).unwrap());
            let protected = [NET6, OTHER_NET6]
                .iter()
                .any(|n| n.parse::<ipnet::Ipv6Net>().unwrap().contains(&dst))
                && ![GATEWAY6, OTHER_GATEWAY6].contains(&dst);
            // Whatever the rest says: the fixed header's destination is where it goes.
            assert_eq!(verdict == TC_ACT_SHOT, protected, "{}", ctx());
            continue;
        }
        match verdict {
            TC_ACT_OK => {
                passed += 1;
                if let Some(why) = refusal(&input) {
                    panic!("passed a frame to refuse ({why}): {}", ctx());
                }
            }
            TC_ACT_SHOT => {
                dropped += 1;
                if made.legitimate && !mutated {
                    panic!("dropped a legitimate frame: {}", ctx());
                }
            }
            other => panic!("verdict {other}: {}", ctx()),
        }
        if made.legitimate && !mutated {
            legit += 1;
        }
    }
    eprintln!("{passed} passed, {dropped} dropped, {legit} legitimate unmutated");
    assert!(passed > ROUNDS / 10 && dropped > ROUNDS / 10 && legit > ROUNDS / 20);
}
