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
//! addresses (no DHCP server's message, no UDP without its ports), and from the network, what is addressed to a container and claimed by no
//! flow and no published port.
//!
//! The node is a member of a cluster (overlays set up, containers of other nodes known),
//! and every sixth round of 120,000 is overlay material, mutated as the rest: VXLAN
//! datagrams through the uplink programs, which must leave the node's VXLAN traffic as it
//! came (no flow claims VXLAN's port); a container's frames to containers of other nodes,
//! its ARP requests for them and its own VXLAN datagrams through its veth's program,
//! which sends such a frame to the other node untranslated, refuses it when that overlay
//! is none of the container's here, and answers such a request with a well-formed reply;
//! and anything through the VXLAN device's program, which under test-run (no tunnel
//! metadata) must drop every frame. What the guard refuses never leaves a container.

mod support;

use std::{collections::HashSet, net::Ipv4Addr};

use netd::datapath::{Remote, RemoteTable};
use netd_common::{flow::FlowKey, maps::OverlayInfo};
use support::*;

const ROUNDS: usize = 100_000;
/// Rounds of overlay material on top of `ROUNDS`, every `OVERLAY_EVERY`th: a fifth more
/// rounds, about a fifth more time.
const OVERLAY_ROUNDS: usize = 20_000;
const OVERLAY_EVERY: usize = (ROUNDS + OVERLAY_ROUNDS) / OVERLAY_ROUNDS;
const TC_ACT_REDIRECT: u32 = 7;

/// The programs the generic rounds pick from.
const PROGRAMS: [&str; 4] = [
    "uplink_ingress",
    "uplink_egress",
    "endpoint_ingress",
    "uplink_xdp",
];
/// The uplink's programs: the node's VXLAN traffic passes through each.
const UPLINK_PROGRAMS: [&str; 3] = ["uplink_ingress", "uplink_egress", "uplink_xdp"];

/// VXLAN's port, which a node of a cluster keeps for its VXLAN device.
const VXLAN_PORT: u16 = 4789;
/// The overlay of CONTAINER's network.
const VNI: u32 = 4096;
/// An overlay set up on other nodes only.
const UNKNOWN_VNI: u32 = 4097;
/// An overlay set up here, for another network than CONTAINER's.
const OTHER_VNI: u32 = 4098;
/// The overlays set up here: VXLAN ID, network tag.
const OVERLAYS: [(u32, u32); 2] = [(VNI, NETWORK_TAG), (OTHER_VNI, NETWORK_TAG + 1)];
const PEER_NODE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 7);
/// The cluster's other nodes, as their VXLAN datagrams come from and go to them.
const NODES: [Ipv4Addr; 3] = [PEER_NODE, CLIENT, REMOTE];
/// Containers of other nodes (none of them an address the template uses), with the
/// overlay each is on: two on CONTAINER's (one in its network's subnet, one outside every
/// network of this node), one on an overlay this node has not set up, one on another
/// network's.
const REMOTES: [(Ipv4Addr, u32); 4] = [
    (Ipv4Addr::new(172, 17, 1, 9), VNI),
    (Ipv4Addr::new(10, 0, 5, 3), VNI),
    (Ipv4Addr::new(172, 17, 1, 10), UNKNOWN_VNI),
    (Ipv4Addr::new(10, 0, 9, 5), OTHER_VNI),
];

/// The addresses the template's packets go between: the node, the container, a client,
/// a host of another network, another container of the network.
const ADDRS: [Ipv4Addr; 5] = [
    NODE,
    CONTAINER,
    Ipv4Addr::new(10, 200, 0, 1),
    Ipv4Addr::new(10, 201, 0, 2),
    Ipv4Addr::new(172, 17, 0, 9),
];

/// A packet that may hit a translation: aimed at published ports, masqueraded sources,
/// or nothing in particular.
fn template(rng: &mut Rng) -> Vec<u8> {
    let src = rng.pick(&ADDRS);
    let dst = rng.pick(&ADDRS);
    template_between(rng, src, dst)
}

/// The template's packet from `src` to `dst` (an ICMP error may come from elsewhere, an
/// IPv6 frame has neither).
fn template_between(rng: &mut Rng, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let ports = [
        8080,
        5353,
        80,
        53,
        40000,
        61000,
        1 + rng.below(65535) as u16,
    ];
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
            rng.pick(&ADDRS),
            if rng.below(4) == 0 { dst } else { src },
            rng.pick(&[3, 11, 12]),
            rng.below(5) as u8,
            &pkt.build(),
        ),
        2 => {
            let error = icmp_error(rng.pick(&ADDRS), src, 3, 3, &pkt.build());
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
    set_ip_checksum(&mut p);
    p
}

/// The IPv4 header's checksum, computed again after a change.
fn set_ip_checksum(p: &mut [u8]) {
    p[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
    let c = checksum(&p[ETH..ETH + 20], 0);
    p[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
}

/// A round of overlay material, and the program it is for: the node's VXLAN traffic
/// through an uplink program, a container's frame through its veth's, or anything through
/// the VXLAN device's.
fn overlay_material(rng: &mut Rng) -> (Vec<u8>, &'static str) {
    match rng.below(5) {
        0 | 1 => (node_vxlan_datagram(rng), rng.pick(&UPLINK_PROGRAMS)),
        2 | 3 => (container_frame(rng), "endpoint_ingress"),
        _ => {
            let frame = match rng.below(3) {
                0 => node_vxlan_datagram(rng),
                1 => container_frame(rng),
                _ => inner_frame(rng),
            };
            (frame, "overlay_ingress")
        }
    }
}

/// The node's VXLAN traffic on the uplink: from another node to this one's VXLAN port, or
/// from this node to another's.
fn node_vxlan_datagram(rng: &mut Rng) -> Vec<u8> {
    let other = rng.pick(&NODES);
    let (src, dst) = if rng.below(4) == 0 {
        (NODE, other)
    } else {
        (other, NODE)
    };
    vxlan_datagram(rng, src, dst)
}

/// A VXLAN datagram from `src` to `dst`: outer Ethernet/IPv4/UDP to VXLAN's port from a
/// source port as Linux picks them (or VXLAN's own), mostly without a UDP checksum (as
/// Linux sends them, and netd's tunnel key asks), then the VXLAN header (flags 0x08: a
/// VXLAN ID follows) and an inner frame.
fn vxlan_datagram(rng: &mut Rng, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let sport = if rng.below(8) == 0 {
        VXLAN_PORT
    } else {
        32768 + rng.below(28232) as u16
    };
    let mut outer = Pkt::udp(src, sport, dst, VXLAN_PORT);
    outer.udp_no_csum = rng.below(4) != 0;
    let vni = match rng.below(4) {
        0 => VNI,
        1 => OTHER_VNI,
        2 => UNKNOWN_VNI,
        _ => rng.next() as u32 & 0x00ff_ffff,
    };
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend(inner_frame(rng));
    udp_carrying(outer, &payload)
}

/// What a VXLAN datagram carries: a remote container's frame to CONTAINER (IPv4 as the
/// template makes it, or ARP, whose MAC address does not matter here), or anything the
/// template makes.
fn inner_frame(rng: &mut Rng) -> Vec<u8> {
    let (remote, _) = rng.pick(&REMOTES);
    match rng.below(4) {
        0 => template(rng),
        1 => arp_frame(rng.pick(&[1, 2]), remote, CONTAINER),
        _ => template_between(rng, remote, CONTAINER),
    }
}

/// A frame CONTAINER sends that the overlay decides on: to a container of another node
/// (IPv4 as the template makes it, or a VXLAN datagram of the container's own), or an ARP
/// request for one; now and then to one of the template's addresses instead, an ARP reply,
/// or an address probe (sender 0.0.0.0).
fn container_frame(rng: &mut Rng) -> Vec<u8> {
    let to = if rng.below(8) == 0 {
        rng.pick(&ADDRS)
    } else {
        rng.pick(&REMOTES).0
    };
    match rng.below(4) {
        0 => {
            let oper = if rng.below(8) == 0 { 2 } else { 1 };
            let sender = if rng.below(8) == 0 {
                Ipv4Addr::UNSPECIFIED
            } else {
                CONTAINER
            };
            arp_frame(oper, sender, to)
        }
        1 => vxlan_datagram(rng, CONTAINER, to),
        _ => template_between(rng, CONTAINER, to),
    }
}

/// An ARP message over Ethernet from CONTAINER's MAC address (the request broadcast, the
/// reply to the target's unknown MAC) about `target`.
fn arp_frame(oper: u16, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CONTAINER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&oper.to_be_bytes());
    f.extend_from_slice(&CONTAINER_MAC);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// `pkt` (UDP) carrying `payload` instead of the test payload, its lengths and checksums
/// made right again.
fn udp_carrying(pkt: Pkt, payload: &[u8]) -> Vec<u8> {
    let mut p = pkt.build();
    p.truncate(ETH + 28);
    p.extend_from_slice(payload);
    let ip_len = (p.len() - ETH) as u16;
    p[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
    p[ETH + 24..ETH + 26].copy_from_slice(&(ip_len - 20).to_be_bytes());
    set_ip_checksum(&mut p);
    if !pkt.udp_no_csum {
        let c = l4_checksum(&p);
        p[ETH + 26..ETH + 28].copy_from_slice(&c.to_be_bytes());
    }
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
        "endpoint_ingress" => admitted(p, endpoint).is_none(),
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

/// What the guard lets out of the container at `endpoint` (its own MAC and address, a
/// whole IPv4 header or ARP message), as the overlay then sees it.
enum Admitted {
    Ipv4 { dst: Ipv4Addr },
    Arp { request: bool, target: Ipv4Addr },
}

fn admitted(p: &[u8], endpoint: Ipv4Addr) -> Option<Admitted> {
    if p.len() < ETH + 20 || !from_endpoint(p, endpoint) {
        return None;
    }
    match p[12..14] {
        [0x08, 0x00] if p[ETH] >> 4 == 4 && p[ETH] & 0x0f >= 5 && !dhcp_refused(p) => {
            Some(Admitted::Ipv4 {
                dst: addr_at(p, ETH + 16),
            })
        }
        [0x08, 0x06] if well_formed_arp(p) => Some(Admitted::Arp {
            request: p[ETH + 7] == 1,
            target: addr_at(p, ETH + 24),
        }),
        _ => None,
    }
}

/// Whether the guard refuses a UDP datagram (not a following fragment) as a DHCP
/// server's (from 67, or to a client's 68), or because its ports are not in the packet.
fn dhcp_refused(p: &[u8]) -> bool {
    let header = usize::from(p[ETH] & 0x0f) * 4;
    let offset = u16::from_be_bytes([p[ETH + 6], p[ETH + 7]]) & 0x1fff;
    if p[ETH + 9] != UDP || offset != 0 {
        return false;
    }
    let total = usize::from(u16::from_be_bytes([p[ETH + 2], p[ETH + 3]]));
    let at = ETH + header;
    if total < header + 4 || p.len() < at + 4 {
        return true;
    }
    let sport = u16::from_be_bytes([p[at], p[at + 1]]);
    let dport = u16::from_be_bytes([p[at + 2], p[at + 3]]);
    sport == 67 || dport == 68
}

fn addr_at(p: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(p[off], p[off + 1], p[off + 2], p[off + 3])
}

/// What the overlay must make of a frame from the container at `endpoint`, where it
/// decides: before any parsing, so whatever IPv4 the guard admits counts, options,
/// fragments and other protocols too. (The endpoint has icc on and is not internal:
/// policy lets it reach every remote container.)
#[derive(Clone, Copy, Debug, PartialEq)]
enum Overlay {
    /// To a container of its overlay on another node: into the VXLAN device, untranslated.
    Sent,
    /// To a container of an overlay this node has not set up: dropped.
    UnknownVni,
    /// To a container of another network's overlay: dropped.
    Isolated,
    /// An ARP request for a container of its overlay on another node: answered on the
    /// spot.
    ArpAnswered,
    /// An ARP request for a container of another overlay (not set up here, or another
    /// network's): left to the bridge untouched, never answered (nobody answers for
    /// another network, as on one node).
    ArpForeign,
}

fn overlay_fate(p: &[u8], endpoint: Ipv4Addr) -> Option<Overlay> {
    match admitted(p, endpoint)? {
        Admitted::Ipv4 { dst } => {
            let vni = remote_vni(dst)?;
            let tag = OVERLAYS
                .iter()
                .find(|(v, _)| *v == vni)
                .map(|(_, tag)| *tag);
            Some(match tag {
                Some(NETWORK_TAG) => Overlay::Sent,
                Some(_) => Overlay::Isolated,
                None => Overlay::UnknownVni,
            })
        }
        Admitted::Arp {
            request: true,
            target,
        } => Some(if remote_vni(target)? == VNI {
            Overlay::ArpAnswered
        } else {
            Overlay::ArpForeign
        }),
        Admitted::Arp { .. } => None,
    }
}

/// The overlay `addr` is on, if it is a container of another node.
fn remote_vni(addr: Ipv4Addr) -> Option<u32> {
    REMOTES
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, vni)| *vni)
}

/// The answer to `request`, an ARP request for a container of another node: to the
/// asker, from the gateway's MAC address, saying the asked address is at the gateway's
/// (the node routes the container's frames to it). Whatever follows the 42 bytes of the
/// message stays as it was.
fn arp_answer(request: &[u8]) -> Vec<u8> {
    let asker_mac = &request[ETH + 8..ETH + 14];
    let asker_ip = &request[ETH + 14..ETH + 18];
    let asked = &request[ETH + 24..ETH + 28];
    [
        asker_mac,
        &GATEWAY_MAC,
        &[0x08, 0x06],
        &request[ETH..ETH + 6],
        &[0, 2],
        &GATEWAY_MAC,
        asked,
        asker_mac,
        asker_ip,
        &request[ETH + 28..],
    ]
    .concat()
}

/// Part of the node's VXLAN traffic: a UDP datagram to VXLAN's port (its UDP header here:
/// whole or a first fragment, behind any IP options) from or to the node, the other end
/// outside the containers' network. Nothing of netd's claims it: a node of a cluster never
/// publishes 4789/udp, SNAT hands out ports from 61000 up (or a container's own, where no
/// socket of the node uses it: the VXLAN device's uses 4789), and only containers' traffic
/// is masqueraded. So each uplink program passes it as it came, to the VXLAN socket,
/// whatever its VXLAN header says: that is the socket's to judge.
fn node_vxlan(p: &[u8]) -> bool {
    if p.len() < ETH + 20 || p[12..14] != [0x08, 0x00] || p[ETH] >> 4 != 4 || p[ETH + 9] != UDP {
        return false;
    }
    let udp = ETH + usize::from(p[ETH] & 0x0f) * 4;
    let first = u16::from_be_bytes([p[ETH + 6], p[ETH + 7]]) & 0x1fff == 0;
    let (src, dst) = (addr_at(p, ETH + 12), addr_at(p, ETH + 16));
    let of_the_node =
        src == NODE && !in_containers_network(dst) || dst == NODE && !in_containers_network(src);
    udp >= ETH + 20
        && p.len() >= udp + 4
        && first
        && of_the_node
        && p[udp + 2..udp + 4] == VXLAN_PORT.to_be_bytes()
}

/// 172.17.0.0/16, masqueraded: a datagram from there is a container's, SNATed on the way
/// out, and one to there is for a container, not the node.
fn in_containers_network(addr: Ipv4Addr) -> bool {
    addr.octets()[..2] == [172, 17]
}

/// A UDP datagram's ends, (address, port) each: what a flow of it would be keyed by.
type Ends = ((Ipv4Addr, u16), (Ipv4Addr, u16));

fn datagram_ends(p: &[u8]) -> Ends {
    let udp = ETH + usize::from(p[ETH] & 0x0f) * 4;
    let port = |off: usize| u16::from_be_bytes([p[off], p[off + 1]]);
    (
        (addr_at(p, ETH + 12), port(udp)),
        (addr_at(p, ETH + 16), port(udp + 2)),
    )
}

fn flow_key_ends(key: &FlowKey) -> Ends {
    let addr = |a: u32| Ipv4Addr::from(a.to_ne_bytes());
    (
        (addr(key.src_addr), u16::from_be(key.src_port)),
        (addr(key.dst_addr), u16::from_be(key.dst_port)),
    )
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

/// The standard node as a member of a cluster: the overlays of `OVERLAYS` set up, the
/// containers of `REMOTES` on another node.
fn cluster_node() -> TestDatapath {
    let mut t = standard_node();
    for (vni, tag) in OVERLAYS {
        let info = OverlayInfo {
            tag,
            vxlan_ifindex: LO,
        };
        t.dp.set_overlay(vni, Some(info)).unwrap();
    }
    let remotes = REMOTES
        .iter()
        .map(|&(addr, vni)| {
            let remote = Remote {
                node: PEER_NODE,
                vni,
            };
            (addr.into(), remote)
        })
        .collect();
    RemoteTable::open(t.bpffs())
        .unwrap()
        .sync(&remotes)
        .unwrap();
    t
}

/// Who is behind the endpoint: mostly whoever the frame says it comes from (an IPv4
/// packet's source, an ARP message's sender unless it probes); the rest of the time
/// CONTAINER, and the frame is spoofed (unless it is CONTAINER's).
fn endpoint_for(rng: &mut Rng, p: &[u8]) -> Ipv4Addr {
    let claimed = match p.get(12..14) {
        Some([0x08, 0x06]) => p.get(28..32),
        _ => p.get(26..30),
    };
    match claimed {
        Some(a) if !rng.next().is_multiple_of(8) && a != [0; 4] => addr_at(a, 0),
        _ => CONTAINER,
    }
}

/// BPF_PROG_TEST_RUN refuses an IPv6 frame without a whole IPv6 header: padded to one.
fn runnable(mut p: Vec<u8>) -> Vec<u8> {
    if p[12..14] == [0x86, 0xdd] && p.len() < ETH + 40 {
        p.resize(ETH + 40, 0);
    }
    p
}

/// Run `program` once on `input`: the verdict (XDP's mapped onto TC's, for the same
/// checks), the note XDP left in front of the frame (none from TC), and the packet as it
/// came out.
fn run(t: &mut TestDatapath, program: &str, input: &[u8]) -> (u32, Vec<u8>, Vec<u8>) {
    if program != "uplink_xdp" {
        let (verdict, out) = t.run(program, input);
        return (verdict, Vec::new(), out);
    }
    let (verdict, note, out) = t.run_xdp(input);
    let verdict = match verdict {
        XDP_PASS => TC_ACT_OK,
        XDP_DROP => TC_ACT_SHOT,
        other => panic!("XDP verdict {other}"),
    };
    (verdict, note, out)
}

/// Checks that the program did with a container's frame what the overlay must (`fate`).
fn assert_overlay_fate(fate: Overlay, input: &[u8], verdict: u32, out: &[u8], ctx: &str) {
    match fate {
        Overlay::Sent => {
            assert_eq!(verdict, TC_ACT_REDIRECT, "not sent to its node: {ctx}");
            assert!(
                out == input,
                "translated for another node: {out:02x?}: {ctx}"
            );
        }
        Overlay::UnknownVni | Overlay::Isolated => {
            assert_eq!(verdict, TC_ACT_SHOT, "{fate:?} but let go: {ctx}");
        }
        Overlay::ArpAnswered => {
            assert_eq!(verdict, TC_ACT_REDIRECT, "ARP request not answered: {ctx}");
            assert_eq!(out, arp_answer(input), "a wrong ARP answer: {ctx}");
        }
        Overlay::ArpForeign => {
            assert_eq!(verdict, TC_ACT_OK, "ARP request dropped: {ctx}");
            assert!(out == input, "ARP request changed: {out:02x?}: {ctx}");
        }
    }
}

/// What the rounds came to: for the summary, and to check that the overlay rounds
/// exercised each path and that the programs counted each as the test judged it.
#[derive(Default)]
struct Tally {
    rewritten: usize,
    dropped: usize,
    vxlan_passed: usize,
    sent: u64,
    unknown_vni: u64,
    isolated: u64,
    arp_answered: u64,
    no_tunnel_key: u64,
}

impl Tally {
    fn overlay(&mut self, fate: Overlay) {
        *match fate {
            Overlay::Sent => &mut self.sent,
            Overlay::UnknownVni => &mut self.unknown_vni,
            Overlay::Isolated => &mut self.isolated,
            Overlay::ArpAnswered => &mut self.arp_answered,
            Overlay::ArpForeign => return,
        } += 1;
    }

    /// The programs' counters agree: every overlay decision the test expected was made
    /// for that reason, and every frame on the VXLAN device was dropped for want of
    /// tunnel metadata.
    fn assert_counted(&self, t: &TestDatapath) {
        for (hook, reason, want) in [
            ("EndpointIngress", "overlay_sent", self.sent),
            (
                "EndpointIngress",
                "drop_overlay_unknown_vni",
                self.unknown_vni,
            ),
            ("EndpointIngress", "drop_network_isolation", self.isolated),
            ("EndpointIngress", "arp_answered", self.arp_answered),
            ("Overlay", "drop_overlay_tunnel_key", self.no_tunnel_key),
        ] {
            assert_eq!(count(t, hook, reason), want, "{hook}/{reason}");
        }
    }
}

/// No flow, of any direction, is keyed by a datagram of the node's VXLAN traffic (either
/// way round): the uplink programs never took it for a connection.
fn assert_no_flow_of(t: &mut TestDatapath, vxlan: &HashSet<Ends>) {
    for (key, _, _) in t.dp.flow_entries().unwrap() {
        let (a, b) = flow_key_ends(&key);
        let of_vxlan = vxlan.contains(&(a, b)) || vxlan.contains(&(b, a));
        assert!(
            key.proto != UDP || !of_vxlan,
            "a flow of VXLAN, {a:?} to {b:?}: {key:?}"
        );
    }
}

#[test]
fn random_and_mutated_packets_are_never_rewritten_wrongly() {
    let mut t = cluster_node();
    let mut rng = Rng(0x005e_ed0f_4e7d);
    let mut tally = Tally::default();
    let mut vxlan = HashSet::new();
    for round in 0..ROUNDS + OVERLAY_ROUNDS {
        let (base, program) = if round % OVERLAY_EVERY == OVERLAY_EVERY - 1 {
            overlay_material(&mut rng)
        } else {
            (template(&mut rng), rng.pick(&PROGRAMS))
        };
        let input = runnable(mutate(&mut rng, base));
        let endpoint = endpoint_for(&mut rng, &input);
        if program == "endpoint_ingress" {
            t.dp.register_endpoint(LO, &endpoint_at(endpoint, 0))
                .unwrap();
        }
        let (verdict, note, out) = run(&mut t, program, &input);
        let ctx = || format!("round {round}, {program}, packet {input:02x?}");
        if program == "overlay_ingress" {
            assert_eq!(verdict, TC_ACT_SHOT, "no tunnel metadata: {}", ctx());
            tally.no_tunnel_key += 1;
            continue;
        }
        if UPLINK_PROGRAMS.contains(&program) && node_vxlan(&input) {
            assert!(
                verdict == TC_ACT_OK && note.is_empty() && out == input,
                "VXLAN not passed as it came (verdict {verdict}, note {note:02x?}, out \
                 {out:02x?}): {}",
                ctx()
            );
            tally.vxlan_passed += 1;
            vxlan.insert(datagram_ends(&input));
            continue;
        }
        if program == "endpoint_ingress" {
            if verdict != TC_ACT_SHOT {
                assert!(
                    admitted(&input, endpoint).is_some(),
                    "let out a frame the guard refuses: {}",
                    ctx()
                );
            }
            if let Some(fate) = overlay_fate(&input, endpoint) {
                assert_overlay_fate(fate, &input, verdict, &out, &ctx());
                tally.overlay(fate);
                continue;
            }
        }
        match verdict {
            TC_ACT_OK if out == input => {}
            TC_ACT_OK | TC_ACT_REDIRECT => {
                tally.rewritten += 1;
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
                tally.dropped += 1;
                assert!(
                    may_drop(program, &input, endpoint),
                    "dropped a packet it must pass: {}",
                    ctx()
                );
            }
            other => panic!("unexpected verdict {other}: {}", ctx()),
        }
    }
    eprintln!(
        "{ROUNDS} packets and {OVERLAY_ROUNDS} of overlay material: {} rewritten, {} dropped; \
         {} of the node's VXLAN passed, {} sent to other nodes, {} refused there ({} of an \
         unknown overlay), {} ARP requests answered, {} frames dropped without tunnel \
         metadata; the rest unchanged",
        tally.rewritten,
        tally.dropped,
        tally.vxlan_passed,
        tally.sent,
        tally.unknown_vni + tally.isolated,
        tally.unknown_vni,
        tally.arp_answered,
        tally.no_tunnel_key,
    );
    assert!(
        tally.rewritten > ROUNDS / 25,
        "the loop must exercise the translations, not only the passes"
    );
    let paths = [
        tally.vxlan_passed as u64,
        tally.sent,
        tally.unknown_vni,
        tally.isolated,
        tally.arp_answered,
        tally.no_tunnel_key,
    ];
    assert!(
        paths.iter().all(|&n| n > OVERLAY_ROUNDS as u64 / 200),
        "the overlay rounds must exercise every overlay path"
    );
    tally.assert_counted(&t);
    assert_no_flow_of(&mut t, &vxlan);
}
