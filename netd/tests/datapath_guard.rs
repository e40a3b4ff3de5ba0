//! What may leave a container, under BPF_PROG_TEST_RUN: only untagged IPv4 and ARP (IPv6:
//! datapath_ipv6) from
//! the endpoint's own addresses; policy by a packet's own destination (an ICMP error by
//! where it goes, whatever it quotes); icc off keeping every frame but those for the
//! gateway. Loopback stands for the container's veth, as in datapath_endpoint.

mod support;

use std::net::Ipv4Addr;

use netd_common::maps::{ENDPOINT_ICC_OFF, ENDPOINT_INTERNAL};
use support::*;

const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
const OTHER_NET: &str = "172.18.0.0/16";
const OTHER_CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);

fn node(flags: u16) -> TestDatapath {
    let mut t = standard_node();
    t.dp.set_network(
        OTHER_NET.parse().unwrap(),
        Some(network(NETWORK_TAG + 1, NETWORK_MASQUERADE)),
    )
    .unwrap();
    t.dp.set_node_addrs(&[NODE, GATEWAY]).unwrap();
    t.dp.register_endpoint(LO, &endpoint_info(flags)).unwrap();
    t
}

fn verdict(t: &mut TestDatapath, frame: &[u8]) -> u32 {
    t.run("endpoint_ingress", frame).0
}

fn with_ethertype(frame: &[u8], ethertype: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f
}

fn with_dst_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&mac);
    frame
}

/// A VLAN tag inserted in front of the frame's ethertype.
fn tagged(frame: &[u8], tpid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&frame[12..]);
    f
}

#[test]
fn only_ipv4_and_arp_leave_a_container_whatever_else_it_sends() {
    let mut t = node(0);
    let ipv4 = Pkt::udp(CONTAINER, 40000, REMOTE, 53).build();
    assert_eq!(verdict(&mut t, &ipv4), TC_ACT_OK);
    for ethertype in [0x88cc, 0x8035, 0x0600, 0x1234, 0x0040] {
        let f = with_ethertype(&ipv4, ethertype);
        assert_eq!(
            verdict(&mut t, &f),
            TC_ACT_SHOT,
            "ethertype {ethertype:#06x}"
        );
    }
    assert_eq!(
        count(&t, "EndpointIngress", "drop_ethertype_not_allowed"),
        5
    );
    // IPv6 goes to the IPv6 program, which drops it: this endpoint's network has none.
    assert_eq!(verdict(&mut t, &with_ethertype(&ipv4, 0x86dd)), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_ipv6_not_enabled"), 1);
    for tpid in [0x8100, 0x88a8, 0x9100] {
        assert_eq!(
            verdict(&mut t, &tagged(&ipv4, tpid)),
            TC_ACT_SHOT,
            "{tpid:#06x}"
        );
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_vlan_tagged"), 3);
}

#[test]
fn malformed_ipv4_and_arp_from_a_container_are_dropped() {
    let mut t = node(0);
    let ipv4 = Pkt::udp(CONTAINER, 40000, REMOTE, 53).build();
    let mut v6_in_v4 = ipv4.clone();
    v6_in_v4[ETH] = 0x65;
    let mut short_ihl = ipv4.clone();
    short_ihl[ETH] = 0x44;
    // (A cut IPv4 header cannot be fed in: BPF_PROG_TEST_RUN refuses it.)
    for (what, f) in [("version 6", v6_in_v4), ("IHL 4", short_ihl)] {
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT, "{what}");
    }
    let arp = |hlen: u8, oper: u8| {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&CONTAINER_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, hlen, 4, 0, oper]);
        f.extend_from_slice(&CONTAINER_MAC);
        f.extend_from_slice(&CONTAINER.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&GATEWAY.octets());
        f
    };
    assert_eq!(verdict(&mut t, &arp(6, 1)), TC_ACT_OK);
    assert_eq!(
        verdict(&mut t, &arp(8, 1)),
        TC_ACT_SHOT,
        "another address length"
    );
    assert_eq!(verdict(&mut t, &arp(6, 3)), TC_ACT_SHOT, "RARP's operation");
    assert_eq!(verdict(&mut t, &arp(6, 1)[..30]), TC_ACT_SHOT, "cut");
    assert_eq!(count(&t, "EndpointIngress", "drop_malformed"), 5);
}

#[test]
fn a_veth_without_its_endpoint_passes_nothing() {
    let mut t = node(0);
    t.dp.forget_endpoint("lo", LO).unwrap();
    let f = Pkt::udp(CONTAINER, 40000, REMOTE, 53).build();
    assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_unknown_endpoint"), 1);
}

/// An ICMP error from CONTAINER to `dst`, quoting a UDP packet from `quoted_src` to
/// `quoted_dst`, its quote's first byte replaced by `version_ihl`.
fn error_to(dst: Ipv4Addr, quoted_src: Ipv4Addr, quoted_dst: Ipv4Addr, version_ihl: u8) -> Vec<u8> {
    let quoted = Pkt::udp(quoted_src, 53, quoted_dst, 40000).build();
    let mut e = icmp_error(CONTAINER, dst, 3, 3, &quoted);
    e[ETH + 28] = version_ihl;
    e
}

#[test]
fn an_icmp_error_is_policed_by_where_it_goes_not_by_what_it_quotes() {
    let mut t = node(0);
    for version_ihl in [0x45, 0x65, 0x4f, 0x00] {
        // To another network, quoting the sender itself (the old policy looked at that).
        let e = error_to(OTHER_CONTAINER, OTHER_CONTAINER, CONTAINER, version_ihl);
        assert_eq!(verdict(&mut t, &e), TC_ACT_SHOT, "{version_ihl:#x}");
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_network_isolation"), 4);
    // Within its own network, and to the outside, it goes.
    let e = error_to(NEIGHBOUR, NEIGHBOUR, CONTAINER, 0x45);
    assert_eq!(verdict(&mut t, &e), TC_ACT_OK);
    let e = error_to(REMOTE, REMOTE, CONTAINER, 0x45);
    assert_eq!(verdict(&mut t, &e), TC_ACT_OK);

    let mut internal = node(ENDPOINT_INTERNAL);
    let e = error_to(REMOTE, REMOTE, CONTAINER, 0x65);
    assert_eq!(
        verdict(&mut internal, &e),
        TC_ACT_SHOT,
        "out of an internal network"
    );
}

#[test]
fn an_error_about_a_flow_the_endpoint_is_not_part_of_is_not_translated_for_it() {
    let mut t = node(0);
    // NEIGHBOUR calls the published port 8080 (hairpin): a flow of NEIGHBOUR's.
    t.dp.register_endpoint(LO, &endpoint_at(NEIGHBOUR, 0))
        .unwrap();
    let (v, _) = t.run(
        "endpoint_ingress",
        &Pkt::tcp(NEIGHBOUR, 40000, NODE, 8080, SYN).build(),
    );
    assert_eq!(v, TC_ACT_OK);
    // CONTAINER quotes that flow's packet as if the error were its own, to another
    // network: it is policed as CONTAINER's, and dropped.
    t.dp.register_endpoint(LO, &endpoint_info(0)).unwrap();
    let quoted = Pkt::tcp(NODE, 8080, NEIGHBOUR, 40000, SYN | ACK).build();
    let e = icmp_error(CONTAINER, OTHER_CONTAINER, 3, 3, &quoted);
    assert_eq!(verdict(&mut t, &e), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "icmp_error_translated"), 0);
}

#[test]
fn with_icc_off_only_the_gateway_is_spoken_to() {
    let mut t = node(ENDPOINT_ICC_OFF);
    let to_gateway = |dst| with_dst_mac(Pkt::udp(CONTAINER, 40000, dst, 53).build(), GATEWAY_MAC);
    assert_eq!(
        verdict(&mut t, &to_gateway(REMOTE)),
        TC_ACT_OK,
        "routed out"
    );
    assert_eq!(verdict(&mut t, &to_gateway(GATEWAY)), TC_ACT_OK, "the node");
    for dst in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(239, 1, 2, 3),
        Ipv4Addr::new(172, 17, 255, 255),
        NEIGHBOUR,
    ] {
        assert_eq!(verdict(&mut t, &to_gateway(dst)), TC_ACT_SHOT, "{dst}");
    }
    // Not to the gateway's MAC: bridged to someone else, whatever its address says.
    for mac in [[0xff; 6], [1, 0, 0x5e, 0, 0, 1], [2, 0x42, 172, 17, 0, 3]] {
        let f = with_dst_mac(Pkt::udp(CONTAINER, 40000, REMOTE, 53).build(), mac);
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT, "{mac:x?}");
    }
    let arp = |tpa: Ipv4Addr| arp_request(CONTAINER_MAC, CONTAINER, tpa);
    assert_eq!(
        verdict(&mut t, &arp(GATEWAY)),
        TC_ACT_OK,
        "asking for the gateway"
    );
    assert_eq!(
        verdict(&mut t, &arp(NEIGHBOUR)),
        TC_ACT_SHOT,
        "asking for a neighbour"
    );
    assert_eq!(count(&t, "EndpointIngress", "drop_icc_disabled"), 9);

    // With icc on, broadcast within the network is fine.
    let mut on = node(0);
    let f = with_dst_mac(
        Pkt::udp(CONTAINER, 40000, Ipv4Addr::BROADCAST, 53).build(),
        [0xff; 6],
    );
    assert_eq!(verdict(&mut on, &f), TC_ACT_OK);
}

#[test]
fn dhcp_server_messages_from_a_container_are_dropped_whatever_their_source_port() {
    let mut t = node(0);
    let broadcast = Ipv4Addr::BROADCAST;
    for (what, sport, dport) in [
        ("offer to the client port", 67, 68),
        ("relay reply", 67, 67),
        ("from another port to a client", 40000, 68),
    ] {
        let f = Pkt::udp(CONTAINER, sport, broadcast, dport).build();
        assert_eq!(verdict(&mut t, &f), TC_ACT_SHOT, "{what}");
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_dhcp_server"), 3);
    // A client's own request goes (to the node, which answers nothing, or a relay).
    let request = Pkt::udp(CONTAINER, 68, broadcast, 67).build();
    assert_eq!(verdict(&mut t, &request), TC_ACT_OK);
    // A first fragment whose total length ends before the ports: refused, not read past.
    let mut cut = as_fragment(Pkt::udp(CONTAINER, 40000, broadcast, 68).build(), 0x2000);
    cut[ETH + 2..ETH + 4].copy_from_slice(&22u16.to_be_bytes());
    assert_eq!(verdict(&mut t, &cut), TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_malformed"), 1);
}
