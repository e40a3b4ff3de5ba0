//! IPv6 from a container and from the network, under BPF_PROG_TEST_RUN: the IPv4 entry
//! points hand IPv6 to their IPv6 programs (a tail call), which police it as strictly as
//! IPv4: the endpoint's own MAC and addresses only, isolation, icc, internal, beyond the
//! node's networks only when masqueraded or routed, and the IPv6 first-hop attacks
//! (router advertisements and redirects, spoofed neighbour discovery, DHCPv6 servers),
//! also hidden behind extension headers and fragments. From the network, nothing but a
//! flow's replies reaches a container's IPv6 subnet (NAT66 is `datapath_nat6`'s).
//! Loopback stands for the container's veth.

mod support;

use std::net::Ipv6Addr;

use aya::maps::{MapData, ProgramArray};
use netd_common::{
    maps::{CALL_ENDPOINT_INGRESS6, ENDPOINT_ICC_OFF, ENDPOINT_INTERNAL},
    user::link_local_for,
};
use support::*;

const MDNS6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);
const MULTICAST_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

fn verdict(t: &mut TestDatapath, frame: &[u8]) -> u32 {
    t.run("endpoint_ingress", frame).0
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&[0, 12, 0, 0, b'p', b'i', b'n', b'g']);
    u
}

fn udp_to(dst_mac: [u8; 6], dst: Ipv6Addr) -> Vec<u8> {
    ipv6_frame(dst_mac, CONTAINER6, dst, UDP6, &udp(40000, 7))
}

/// An ICMPv6 message: type, code, checksum 0, then `body`.
fn icmp6(icmp_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, 0, 0, 0];
    m.extend_from_slice(body);
    m
}

/// A neighbour solicitation (135) or advertisement (136) about `target`, with `flags`
/// (an advertisement's R, S, O) and link-layer address options (type, MAC).
fn nd(icmp_type: u8, flags: u8, target: Ipv6Addr, options: &[(u8, [u8; 6])]) -> Vec<u8> {
    let mut body = vec![flags, 0, 0, 0];
    body.extend_from_slice(&target.octets());
    for (kind, mac) in options {
        body.extend_from_slice(&[*kind, 1]);
        body.extend_from_slice(mac);
    }
    icmp6(icmp_type, &body)
}

/// The solicited-node multicast address of `target`.
fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let o = target.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// An extension header carrying `next`, 8 bytes (Hop-by-Hop, Destination Options:
/// padding only; Routing: `segments_left` in its fourth byte).
fn ext(next: u8, fourth: u8) -> Vec<u8> {
    vec![next, 0, 0, fourth, 1, 2, 0, 0]
}

/// A Fragment header carrying `next`: offset in 8-byte units, more fragments or not.
fn frag(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let field = (offset << 3) | u16::from(more);
    let mut h = vec![next, 0];
    h.extend_from_slice(&field.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x12, 0x34]);
    h
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn a_container_of_an_ipv6_only_network_sends_no_ipv4_and_no_arp_from_any_address() {
    let mut t = node6(0);
    // What the daemon registers for an endpoint without IPv4: address and gateway 0.
    let v6_only = netd_common::maps::EndpointInfo {
        addr: 0,
        gateway: 0,
        ..endpoint_info(0)
    };
    t.dp.register_endpoint(LO, &v6_only).unwrap();
    let unspecified = std::net::Ipv4Addr::UNSPECIFIED;
    let arp = |spa, tpa| arp_request(CONTAINER_MAC, spa, tpa);
    let frames = [
        (
            "DHCP discover",
            Pkt::udp(unspecified, 68, std::net::Ipv4Addr::BROADCAST, 67).build(),
        ),
        (
            "from 0.0.0.0",
            Pkt::udp(unspecified, 40000, REMOTE, 53).build(),
        ),
        (
            "from an address of the network",
            Pkt::udp(CONTAINER, 40000, REMOTE, 53).build(),
        ),
        (
            "to the gateway",
            Pkt::udp(CONTAINER, 40000, GATEWAY, 53).build(),
        ),
        ("ARP probe", arp(unspecified, CONTAINER)),
        ("ARP request", arp(CONTAINER, GATEWAY)),
    ];
    for (what, f) in &frames {
        assert_eq!(verdict(&mut t, f), TC_ACT_SHOT, "{what}");
    }
    assert_eq!(
        count(&t, "EndpointIngress", "drop_spoofed_source"),
        frames.len() as u64
    );
    // Its IPv6 is policed as any endpoint's: from its own address, out it goes.
    assert_eq!(
        verdict(&mut t, &udp_to(GATEWAY_MAC, BEYOND6)),
        TC_ACT_OK,
        "IPv6 from its address"
    );
    // Forgotten, it leaves no address behind to be found by (it had none).
    t.dp.forget_endpoint("lo", LO).unwrap();
}

#[test]
fn ipv6_is_dropped_from_a_container_whose_network_has_none() {
    let mut t = node6(0);
    t.dp.register_endpoint6(LO, None).unwrap();
    assert_eq!(
        verdict(&mut t, &udp_to(NEIGHBOUR_MAC, NEIGHBOUR6)),
        TC_ACT_SHOT
    );
    assert_eq!(count(&t, "EndpointIngress", "drop_ipv6_not_enabled"), 1);
    t.dp.forget_endpoint("lo", LO).unwrap();
    assert_eq!(
        verdict(&mut t, &udp_to(NEIGHBOUR_MAC, NEIGHBOUR6)),
        TC_ACT_SHOT
    );
    assert_eq!(count(&t, "EndpointIngress", "drop_unknown_endpoint"), 1);
}

#[test]
fn a_container_reaches_its_network_the_node_and_beyond_only_when_masqueraded_or_routed() {
    let mut t = node6(0);
    for (what, f) in [
        ("neighbour", udp_to(NEIGHBOUR_MAC, NEIGHBOUR6)),
        ("gateway", udp_to(GATEWAY_MAC, GATEWAY6)),
        (
            "another network's gateway (a node address)",
            udp_to(GATEWAY_MAC, OTHER_GATEWAY6),
        ),
        (
            "gateway link-local",
            udp_to(GATEWAY_MAC, gateway_link_local()),
        ),
        (
            "neighbour link-local",
            udp_to(NEIGHBOUR_MAC, link_local_for(NEIGHBOUR_MAC)),
        ),
        ("multicast", udp_to(MULTICAST_MAC, MDNS6)),
        (
            "from its link-local address",
            ipv6_frame(
                NEIGHBOUR_MAC,
                own_link_local(),
                NEIGHBOUR6,
                UDP6,
                &udp(1, 2),
            ),
        ),
    ] {
        assert_eq!(verdict(&mut t, &f), TC_ACT_OK, "{what}");
    }
    assert_eq!(count(&t, "EndpointIngress", "pass_ipv6_policed"), 7);
    assert_eq!(
        verdict(&mut t, &udp_to(GATEWAY_MAC, OTHER_CONTAINER6)),
        TC_ACT_SHOT
    );
    assert_eq!(count(&t, "EndpointIngress", "drop_network_isolation"), 1);
    // Masqueraded (the default): beyond the node goes to the uplink, which translates.
    assert_eq!(verdict(&mut t, &udp_to(GATEWAY_MAC, BEYOND6)), TC_ACT_OK);
    assert_eq!(count(&t, "EndpointIngress", "pass_ipv6_policed"), 8);
    // Without masquerade (and not routed): out as it is, its flow tracked by the uplink
    // (as IPv4's).
    t.dp.set_network6(NET6.parse().unwrap(), Some(network(NETWORK_TAG, 0)))
        .unwrap();
    assert_eq!(verdict(&mut t, &udp_to(GATEWAY_MAC, BEYOND6)), TC_ACT_OK);
    assert_eq!(count(&t, "EndpointIngress", "pass_ipv6_policed"), 9);
    // From an address of no network: no way beyond the node.
    t.dp.set_network6(NET6.parse().unwrap(), None).unwrap();
    assert_eq!(verdict(&mut t, &udp_to(GATEWAY_MAC, BEYOND6)), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_ipv6_not_routed"), 1);
    let mut internal = node6(ENDPOINT_INTERNAL);
    assert_eq!(
        verdict(&mut internal, &udp_to(GATEWAY_MAC, BEYOND6)),
        TC_ACT_SHOT
    );
    assert_eq!(
        count(&internal, "EndpointIngress", "drop_internal_network"),
        1
    );
    assert_eq!(
        verdict(&mut internal, &udp_to(NEIGHBOUR_MAC, NEIGHBOUR6)),
        TC_ACT_OK
    );
}

#[test]
fn only_the_containers_own_mac_and_addresses_leave_it() {
    let mut t = node6(0);
    for (what, src) in [
        ("a neighbour's address", NEIGHBOUR6),
        ("another network's", OTHER_CONTAINER6),
        ("a neighbour's link-local", link_local_for(NEIGHBOUR_MAC)),
        ("the gateway's", GATEWAY6),
    ] {
        let f = ipv6_frame(NEIGHBOUR_MAC, src, NEIGHBOUR6, UDP6, &udp(1, 2));
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT, "{what}");
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_spoofed_source"), 4);
    let mut f = udp_to(NEIGHBOUR_MAC, NEIGHBOUR6);
    f[6..12].copy_from_slice(&NEIGHBOUR_MAC);
    assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_spoofed_mac"), 1);
    let mut v4_version = udp_to(NEIGHBOUR_MAC, NEIGHBOUR6);
    v4_version[ETH] = 0x40;
    assert_eq!(verdict(&mut t, &v4_version), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_malformed"), 1);
}

#[test]
fn router_messages_from_a_container_are_dropped() {
    let mut t = node6(0);
    let ra = icmp6(134, &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
    let redirect = cat(&[
        &icmp6(137, &[0; 4]),
        &NEIGHBOUR6.octets(),
        &BEYOND6.octets(),
    ]);
    let mld_query = icmp6(130, &[0; 20]);
    let renumbering = icmp6(138, &[0; 12]);
    for (what, m) in [
        ("router advertisement", ra),
        ("redirect", redirect),
        ("MLD query", mld_query),
        ("router renumbering", renumbering),
    ] {
        let f = ipv6_frame(MULTICAST_MAC, own_link_local(), ALL_NODES, ICMP6, &m);
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT, "{what}");
    }
    // A neighbour advertisement claiming to be a router.
    let na = nd(136, 0x80 | 0x20, CONTAINER6, &[(2, CONTAINER_MAC)]);
    let f = ipv6_frame(MULTICAST_MAC, CONTAINER6, ALL_NODES, ICMP6, &na);
    assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT, "NA with R");
    assert_eq!(count(&t, "EndpointIngress", "drop_router_message"), 5);
    let rs = icmp6(133, &[0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 2]);
    let f = ipv6_frame(MULTICAST_MAC, own_link_local(), ALL_ROUTERS, ICMP6, &rs);
    assert_eq!(verdict(&mut t, &f), TC_ACT_OK, "router solicitation");
}

#[test]
fn neighbour_discovery_only_for_the_containers_own_addresses_and_mac() {
    let mut t = node6(0);
    let na_mcast = |m: &[u8]| ipv6_frame(MULTICAST_MAC, CONTAINER6, ALL_NODES, ICMP6, m);
    let ns = |target, opts: &[(u8, [u8; 6])]| {
        ipv6_frame(
            MULTICAST_MAC,
            CONTAINER6,
            solicited_node(target),
            ICMP6,
            &nd(135, 0, target, opts),
        )
    };
    for (what, f) in [
        (
            "NA for own address",
            na_mcast(&nd(136, 0x20, CONTAINER6, &[(2, CONTAINER_MAC)])),
        ),
        (
            "NA for own link-local",
            na_mcast(&nd(136, 0x60, own_link_local(), &[])),
        ),
        ("NS for the gateway", ns(GATEWAY6, &[(1, CONTAINER_MAC)])),
        ("NS for a neighbour", ns(NEIGHBOUR6, &[(1, CONTAINER_MAC)])),
        (
            "duplicate address detection",
            ipv6_frame(
                MULTICAST_MAC,
                Ipv6Addr::UNSPECIFIED,
                solicited_node(CONTAINER6),
                ICMP6,
                &nd(135, 0, CONTAINER6, &[]),
            ),
        ),
    ] {
        assert_eq!(verdict(&mut t, &f), TC_ACT_OK, "{what}");
    }
    for (what, f) in [
        (
            "NA for a neighbour",
            na_mcast(&nd(136, 0x20, NEIGHBOUR6, &[(2, CONTAINER_MAC)])),
        ),
        (
            "NA for the gateway",
            na_mcast(&nd(136, 0x20, GATEWAY6, &[])),
        ),
        (
            "NA, another MAC",
            na_mcast(&nd(136, 0x20, CONTAINER6, &[(2, NEIGHBOUR_MAC)])),
        ),
        (
            "NA, another MAC second",
            na_mcast(&nd(
                136,
                0x20,
                CONTAINER6,
                &[(2, CONTAINER_MAC), (2, NEIGHBOUR_MAC)],
            )),
        ),
        ("NS, another source MAC", ns(GATEWAY6, &[(1, GATEWAY_MAC)])),
        ("NS, five options", ns(GATEWAY6, &[(14, CONTAINER_MAC); 5])),
    ] {
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT, "{what}");
    }
    assert_eq!(
        count(&t, "EndpointIngress", "drop_spoofed_neighbor_message"),
        6
    );
    // The unspecified address: duplicate detection of someone else's address, anything
    // but ND and MLD.
    let dad_other = ipv6_frame(
        MULTICAST_MAC,
        Ipv6Addr::UNSPECIFIED,
        solicited_node(NEIGHBOUR6),
        ICMP6,
        &nd(135, 0, NEIGHBOUR6, &[]),
    );
    let echo = ipv6_frame(
        GATEWAY_MAC,
        Ipv6Addr::UNSPECIFIED,
        GATEWAY6,
        ICMP6,
        &icmp6(128, &[0; 4]),
    );
    let udp_unspec = ipv6_frame(
        GATEWAY_MAC,
        Ipv6Addr::UNSPECIFIED,
        GATEWAY6,
        UDP6,
        &udp(1, 2),
    );
    for f in [dad_other, echo, udp_unspec] {
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT);
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_spoofed_source"), 3);
    let mut zero_len = ns(GATEWAY6, &[(1, CONTAINER_MAC)]);
    let last = zero_len.len() - 7;
    zero_len[last] = 0;
    assert_eq!(verdict(&mut t, &zero_len), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_malformed"), 1);
}

#[test]
fn dhcpv6_server_messages_from_a_container_are_dropped() {
    let mut t = node6(0);
    let server = ipv6_frame(
        MULTICAST_MAC,
        own_link_local(),
        ALL_NODES,
        UDP6,
        &udp(547, 546),
    );
    let relay = ipv6_frame(GATEWAY_MAC, CONTAINER6, GATEWAY6, UDP6, &udp(547, 547));
    assert_eq!(verdict(&mut t, &server), TC_ACT_SHOT);
    assert_eq!(verdict(&mut t, &relay), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_dhcpv6_server"), 2);
    let client = ipv6_frame(MULTICAST_MAC, own_link_local(), MDNS6, UDP6, &udp(546, 547));
    assert_eq!(verdict(&mut t, &client), TC_ACT_OK);
}

#[test]
fn extension_headers_are_walked_to_what_they_hide() {
    let mut t = node6(0);
    let ra = icmp6(134, &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
    let to_all =
        |next, rest: &[u8]| ipv6_frame(MULTICAST_MAC, own_link_local(), ALL_NODES, next, rest);
    let to_neighbour =
        |next, rest: &[u8]| ipv6_frame(NEIGHBOUR_MAC, CONTAINER6, NEIGHBOUR6, next, rest);
    let ra_hidden = to_all(HOP_BY_HOP, &cat(&[&ext(DEST_OPTS, 0), &ext(ICMP6, 0), &ra]));
    let ra_atomic = to_all(FRAGMENT, &cat(&[&frag(ICMP6, 0, false), &ra]));
    for f in [ra_hidden, ra_atomic] {
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT);
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_router_message"), 2);
    let dhcp_hidden = to_all(DEST_OPTS, &cat(&[&ext(UDP6, 0), &udp(547, 546)]));
    assert_eq!(verdict(&mut t, &dhcp_hidden), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_dhcpv6_server"), 1);
    // To another network, behind headers: judged by the fixed header's destination.
    let hidden_isolated = ipv6_frame(
        GATEWAY_MAC,
        CONTAINER6,
        OTHER_CONTAINER6,
        HOP_BY_HOP,
        &cat(&[&ext(UDP6, 0), &udp(1, 2)]),
    );
    assert_eq!(verdict(&mut t, &hidden_isolated), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_network_isolation"), 1);

    let fine = to_neighbour(
        HOP_BY_HOP,
        &cat(&[
            &ext(DEST_OPTS, 0),
            &ext(ROUTING, 0),
            &ext(UDP6, 0),
            &udp(1, 2),
        ]),
    );
    assert_eq!(
        verdict(&mut t, &fine),
        TC_ACT_OK,
        "three headers, routing with no segments left"
    );
    let seven = cat(&[
        &vec![ext(DEST_OPTS, 0); 6].concat(),
        &ext(UDP6, 0),
        &udp(1, 2),
    ]);
    assert_eq!(
        verdict(&mut t, &to_neighbour(DEST_OPTS, &seven)),
        TC_ACT_SHOT
    );
    let mut long = ext(UDP6, 0);
    long[1] = 40; // 328 bytes
    long.resize(328, 0);
    let long = cat(&[&long, &udp(1, 2)]);
    assert_eq!(
        verdict(&mut t, &to_neighbour(DEST_OPTS, &long)),
        TC_ACT_SHOT
    );
    assert_eq!(
        count(&t, "EndpointIngress", "drop_ipv6_ext_chain_too_long"),
        2
    );
    for (what, f) in [
        (
            "Hop-by-Hop second",
            to_neighbour(
                DEST_OPTS,
                &cat(&[&ext(HOP_BY_HOP, 0), &ext(UDP6, 0), &udp(1, 2)]),
            ),
        ),
        ("no next header", to_neighbour(NO_NEXT, &[0; 8])),
        (
            "two fragment headers",
            to_neighbour(
                FRAGMENT,
                &cat(&[&frag(FRAGMENT, 0, true), &frag(UDP6, 0, true), &udp(1, 2)]),
            ),
        ),
    ] {
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT, "{what}");
    }
    assert_eq!(
        count(&t, "EndpointIngress", "drop_ipv6_ext_header_invalid"),
        3
    );
    let source_routed = to_neighbour(ROUTING, &cat(&[&ext(UDP6, 1), &udp(1, 2)]));
    assert_eq!(verdict(&mut t, &source_routed), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_ipv6_routing_header"), 1);
}

#[test]
fn fragments_are_policed_and_cannot_hide_first_hop_messages() {
    let mut t = node6(0);
    let ns = nd(135, 0, GATEWAY6, &[(1, CONTAINER_MAC)]);
    let nd_first = ipv6_frame(
        MULTICAST_MAC,
        CONTAINER6,
        solicited_node(GATEWAY6),
        FRAGMENT,
        &cat(&[&frag(ICMP6, 0, true), &ns]),
    );
    assert_eq!(verdict(&mut t, &nd_first), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_nd_fragmented"), 1);
    // The upper-layer header cut by the fragment boundary (RFC 7112).
    let cut = ipv6_frame(
        NEIGHBOUR_MAC,
        CONTAINER6,
        NEIGHBOUR6,
        FRAGMENT,
        &cat(&[&frag(UDP6, 0, true), &[0x9c, 0x40, 0, 7]]),
    );
    assert_eq!(verdict(&mut t, &cut), TC_ACT_SHOT);
    assert_eq!(
        count(&t, "EndpointIngress", "drop_ipv6_first_fragment_incomplete"),
        1
    );
    let first = ipv6_frame(
        NEIGHBOUR_MAC,
        CONTAINER6,
        NEIGHBOUR6,
        FRAGMENT,
        &cat(&[&frag(UDP6, 0, true), &udp(40000, 7)]),
    );
    let following = ipv6_frame(
        NEIGHBOUR_MAC,
        CONTAINER6,
        NEIGHBOUR6,
        FRAGMENT,
        &cat(&[&frag(UDP6, 2, false), &[0; 16]]),
    );
    assert_eq!(verdict(&mut t, &first), TC_ACT_OK);
    assert_eq!(verdict(&mut t, &following), TC_ACT_OK);
    let following_isolated = ipv6_frame(
        GATEWAY_MAC,
        CONTAINER6,
        OTHER_CONTAINER6,
        FRAGMENT,
        &cat(&[&frag(UDP6, 2, false), &[0; 16]]),
    );
    assert_eq!(verdict(&mut t, &following_isolated), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_network_isolation"), 1);
    let following_spoofed = ipv6_frame(
        NEIGHBOUR_MAC,
        NEIGHBOUR6,
        CONTAINER6,
        FRAGMENT,
        &cat(&[&frag(UDP6, 2, false), &[0; 16]]),
    );
    assert_eq!(verdict(&mut t, &following_spoofed), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_spoofed_source"), 1);
}

#[test]
fn icc_off_leaves_only_what_finds_and_uses_the_gateway() {
    let mut t = node6(ENDPOINT_ICC_OFF);
    let ns = |target| {
        ipv6_frame(
            MULTICAST_MAC,
            CONTAINER6,
            solicited_node(target),
            ICMP6,
            &nd(135, 0, target, &[(1, CONTAINER_MAC)]),
        )
    };
    for (what, f) in [
        ("NS for the gateway", ns(GATEWAY6)),
        ("NS for the gateway's link-local", ns(gateway_link_local())),
        (
            "router solicitation",
            ipv6_frame(
                MULTICAST_MAC,
                own_link_local(),
                ALL_ROUTERS,
                ICMP6,
                &icmp6(133, &[0; 4]),
            ),
        ),
        ("to the gateway", udp_to(GATEWAY_MAC, GATEWAY6)),
        ("to a node address", udp_to(GATEWAY_MAC, OTHER_GATEWAY6)),
    ] {
        assert_eq!(verdict(&mut t, &f), TC_ACT_OK, "{what}");
    }
    for (what, f) in [
        ("NS for a neighbour", ns(NEIGHBOUR6)),
        ("to a neighbour", udp_to(NEIGHBOUR_MAC, NEIGHBOUR6)),
        (
            "to a neighbour through the gateway's MAC",
            udp_to(GATEWAY_MAC, NEIGHBOUR6),
        ),
        (
            "to a neighbour's link-local",
            udp_to(GATEWAY_MAC, link_local_for(NEIGHBOUR_MAC)),
        ),
        ("multicast", udp_to(MULTICAST_MAC, MDNS6)),
    ] {
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT, "{what}");
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_icc_disabled"), 5);
}

#[test]
fn from_the_network_nothing_reaches_a_containers_ipv6_subnet() {
    let mut t = node6(0);
    let from_lan = |dst| {
        let mut f = ipv6_frame(GATEWAY_MAC, BEYOND6, dst, UDP6, &udp(40000, 80));
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
        f
    };
    assert_eq!(
        t.run("uplink_ingress", &from_lan(CONTAINER6)).0,
        TC_ACT_SHOT
    );
    assert_eq!(count(&t, "UplinkIngress", "drop_not_published"), 1);
    assert_eq!(
        t.run("uplink_ingress", &from_lan(GATEWAY6)).0,
        TC_ACT_OK,
        "the node's own"
    );
    let node6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    assert_eq!(
        t.run("uplink_ingress", &from_lan(node6)).0,
        TC_ACT_OK,
        "the node's traffic"
    );
    assert_eq!(count(&t, "UplinkIngress", "pass_ipv6_node"), 2);
}

#[test]
fn an_empty_ipv6_slot_drops_ipv6_with_its_reason() {
    let mut t = node6(0);
    let pin = t.bpffs().join(netd_common::maps::CALLS);
    let mut calls = ProgramArray::try_from(aya::maps::Map::ProgramArray(
        MapData::from_pin(&pin).unwrap(),
    ))
    .unwrap();
    calls.clear_index(&CALL_ENDPOINT_INGRESS6).unwrap();
    assert_eq!(
        verdict(&mut t, &udp_to(NEIGHBOUR_MAC, NEIGHBOUR6)),
        TC_ACT_SHOT
    );
    assert_eq!(count(&t, "EndpointIngress", "drop_ipv6_dispatch_failed"), 1);
    let v4 = Pkt::udp(CONTAINER, 40000, REMOTE, 53).build();
    assert_eq!(verdict(&mut t, &v4), TC_ACT_OK, "IPv4 goes on");
}

#[test]
fn a_routed_networks_ipv6_goes_out_and_comes_in_as_it_is() {
    let mut t = node6(0);
    t.dp.set_network6(
        NET6.parse().unwrap(),
        Some(network(NETWORK_TAG, netd_common::maps::NETWORK_ROUTED)),
    )
    .unwrap();
    assert_eq!(verdict(&mut t, &udp_to(GATEWAY_MAC, BEYOND6)), TC_ACT_OK);
    assert_eq!(count(&t, "EndpointIngress", "pass_ipv6_routed"), 1);
    // Still isolated from the other (not routed) network, in both directions.
    assert_eq!(
        verdict(&mut t, &udp_to(GATEWAY_MAC, OTHER_CONTAINER6)),
        TC_ACT_SHOT
    );
    assert_eq!(count(&t, "EndpointIngress", "drop_network_isolation"), 1);
    let from_lan = |dst| {
        let mut f = ipv6_frame(GATEWAY_MAC, BEYOND6, dst, UDP6, &udp(40000, 80));
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
        f
    };
    assert_eq!(t.run("uplink_ingress", &from_lan(CONTAINER6)).0, TC_ACT_OK);
    assert_eq!(count(&t, "UplinkIngress", "pass_ipv6_routed"), 1);
    assert_eq!(
        t.run("uplink_ingress", &from_lan(OTHER_CONTAINER6)).0,
        TC_ACT_SHOT
    );
    assert_eq!(count(&t, "UplinkIngress", "drop_not_published"), 1);
}

/// The kernel keeps of a packet only what its payload length covers (`ip6_rcv_core`
/// trims the rest): what a frame carries beyond it is not the packet, and must not be
/// what the checks read. Else a first fragment whose Destination Options header ends its
/// payload, followed in the frame by a harmless-looking UDP or ICMPv6 header, passes as
/// "whole"; the receiver reassembles the upper-layer header from a following fragment
/// (policed by its outer header only), e.g. a DHCPv6 server message from port 547 or an
/// MLD query.
#[test]
fn checks_read_a_packet_only_as_far_as_its_payload_length() {
    let mut t = node6(0);
    let beyond = |mut f: Vec<u8>, extra: &[u8]| {
        f.extend_from_slice(extra);
        f
    };
    let udp_first = beyond(
        ipv6_frame(
            NEIGHBOUR_MAC,
            CONTAINER6,
            NEIGHBOUR6,
            FRAGMENT,
            &cat(&[&frag(DEST_OPTS, 0, true), &ext(UDP6, 0)]),
        ),
        &udp(40000, 7),
    );
    let icmp_first = beyond(
        ipv6_frame(
            MULTICAST_MAC,
            own_link_local(),
            ALL_NODES,
            FRAGMENT,
            &cat(&[&frag(DEST_OPTS, 0, true), &ext(ICMP6, 0)]),
        ),
        &icmp6(128, &[0; 4]),
    );
    for (what, f) in [("UDP", udp_first), ("ICMPv6", icmp_first)] {
        assert_eq!(
            verdict(&mut t, &f),
            TC_ACT_SHOT,
            "{what} beyond the payload"
        );
    }
    assert_eq!(
        count(&t, "EndpointIngress", "drop_ipv6_first_fragment_incomplete"),
        2
    );
    // What completes the datagram: its UDP header, from the DHCPv6 server port.
    let following = ipv6_frame(
        NEIGHBOUR_MAC,
        CONTAINER6,
        NEIGHBOUR6,
        FRAGMENT,
        &cat(&[&frag(DEST_OPTS, 1, false), &udp(547, 546)]),
    );
    assert_eq!(
        verdict(&mut t, &following),
        TC_ACT_OK,
        "policed by its outer header"
    );

    // A whole packet with bytes after it (padding): they are no neighbour discovery options.
    let padded_ns = beyond(
        ipv6_frame(
            MULTICAST_MAC,
            CONTAINER6,
            solicited_node(GATEWAY6),
            ICMP6,
            &nd(135, 0, GATEWAY6, &[(1, CONTAINER_MAC)]),
        ),
        &[0; 8],
    );
    assert_eq!(verdict(&mut t, &padded_ns), TC_ACT_OK, "NS with padding");
    // A payload length beyond the frame: the kernel drops it as truncated.
    let mut truncated = udp_to(NEIGHBOUR_MAC, NEIGHBOUR6);
    truncated[ETH + 5] += 8;
    assert_eq!(verdict(&mut t, &truncated), TC_ACT_SHOT, "truncated");
    assert_eq!(count(&t, "EndpointIngress", "drop_malformed"), 1);
}

/// Multicast router discovery (RFC 4286) is a router's message too: the Linux bridge's
/// snooping takes a port that sends an advertisement (151, to all-snoopers) for a
/// multicast router's, and forwards it every group's traffic and its neighbours' MLD
/// reports. Like the other first-hop messages (RFC 6980: inverse ND, SEND, MRD), none of
/// them may come fragmented either; the bridge sees reassembled datagrams when
/// br_netfilter defragments them.
#[test]
fn multicast_router_advertisements_are_router_messages() {
    let mut t = node6(0);
    let all_snoopers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x6a);
    let snoopers_mac = [0x33, 0x33, 0, 0, 0, 0x6a];
    let mrd = |icmp_type: u8| {
        ipv6_frame(
            snoopers_mac,
            own_link_local(),
            all_snoopers,
            ICMP6,
            &icmp6(icmp_type, &[0, 20, 0, 2]),
        )
    };
    for (what, icmp_type) in [("advertisement", 151), ("termination", 153)] {
        assert_eq!(verdict(&mut t, &mrd(icmp_type)), TC_ACT_SHOT, "{what}");
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_router_message"), 2);
    assert_eq!(verdict(&mut t, &mrd(152)), TC_ACT_OK, "solicitation");
    for icmp_type in [141, 148, 151] {
        let first = ipv6_frame(
            snoopers_mac,
            own_link_local(),
            all_snoopers,
            FRAGMENT,
            &cat(&[&frag(ICMP6, 0, true), &icmp6(icmp_type, &[0; 12])]),
        );
        assert_eq!(
            verdict(&mut t, &first),
            TC_ACT_SHOT,
            "{icmp_type} fragmented"
        );
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_nd_fragmented"), 3);
}

/// A DHCPv6 server is known by where it sends (a client's port, 546) as much as by where
/// it sends from (547): the source port is the sender's to choose, and clients do not
/// check it.
#[test]
fn dhcpv6_server_messages_from_another_port_are_dropped() {
    let mut t = node6(0);
    let to_client = ipv6_frame(
        NEIGHBOUR_MAC,
        own_link_local(),
        link_local_for(NEIGHBOUR_MAC),
        UDP6,
        &udp(40000, 546),
    );
    assert_eq!(verdict(&mut t, &to_client), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_dhcpv6_server"), 1);
}

/// With icc off, the multicast a container may send to find its router goes to a
/// multicast MAC: the same message addressed to a neighbour's MAC is for that neighbour
/// alone (as ARP for the gateway must be broadcast or to the gateway's MAC), whatever the
/// bridge's port isolation would do with it.
#[test]
fn icc_off_multicast_exceptions_go_to_a_multicast_mac() {
    let mut t = node6(ENDPOINT_ICC_OFF);
    let rs = |dst_mac| {
        ipv6_frame(
            dst_mac,
            own_link_local(),
            ALL_ROUTERS,
            ICMP6,
            &icmp6(133, &[0; 4]),
        )
    };
    assert_eq!(verdict(&mut t, &rs(MULTICAST_MAC)), TC_ACT_OK);
    assert_eq!(verdict(&mut t, &rs(NEIGHBOUR_MAC)), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_icc_disabled"), 1);
}
