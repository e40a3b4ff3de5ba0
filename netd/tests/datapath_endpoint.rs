//! The endpoint program (a container's host-side veth) under BPF_PROG_TEST_RUN: hairpin,
//! anti-spoofing and network policy. Loopback stands for every container's veth: a test
//! says which endpoint is behind it before each packet.

mod support;

use std::net::Ipv4Addr;

use support::*;

const APP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
const TC_ACT_REDIRECT: u32 = 7;

fn node() -> TestDatapath {
    standard_node()
}

#[test]
fn a_container_calling_another_ones_published_port_is_dnated_only() {
    let mut t = node();
    let syn = Pkt::tcp(APP, 40000, NODE, 8080, SYN).build();

    t.dp.register_endpoint(LO, &endpoint_at(APP, 0)).unwrap();
    let (verdict, out) = t.run("endpoint_ingress", &syn);

    assert_eq!(verdict, TC_ACT_OK, "the stack forwards it to the backend");
    assert_eq!(src_of(&out), (APP, 40000), "the caller's address is kept");
    assert_eq!(dst_of(&out), (CONTAINER, 80));
    assert_checksums_valid(&out);

    t.dp.register_endpoint(LO, &endpoint_at(CONTAINER, 0))
        .unwrap();
    let (verdict, reply) = t.run(
        "endpoint_ingress",
        &Pkt::tcp(CONTAINER, 80, APP, 40000, SYN | ACK).build(),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        src_of(&reply),
        (NODE, 8080),
        "the reply comes from the address the caller used"
    );
    assert_checksums_valid(&reply);
}

#[test]
fn a_container_calling_its_own_published_port_is_sent_straight_back() {
    let mut t = node();
    let syn = Pkt::tcp(CONTAINER, 40000, NODE, 8080, SYN).build();

    let (verdict, out) = t.run("endpoint_ingress", &syn);

    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(src_of(&out), (GATEWAY, 40000), "masqueraded to the gateway");
    assert_eq!(dst_of(&out), (CONTAINER, 80));
    assert_eq!(
        out[..6],
        syn[6..12],
        "the container's own MAC is the destination now"
    );
    assert_eq!(out[6..12], syn[..6]);
    assert_checksums_valid(&out);

    let (verdict, reply) = t.run(
        "endpoint_ingress",
        &Pkt::tcp(CONTAINER, 80, GATEWAY, 40000, SYN | ACK).build(),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(src_of(&reply), (NODE, 8080));
    assert_eq!(dst_of(&reply), (CONTAINER, 40000));
    assert_checksums_valid(&reply);
}

#[test]
fn traffic_to_anything_else_passes_unchanged() {
    let mut t = node();
    t.dp.register_endpoint(LO, &endpoint_at(APP, 0)).unwrap();
    for pkt in [
        Pkt::tcp(APP, 40000, NODE, 7000, SYN),
        Pkt::tcp(APP, 40000, CONTAINER, 80, SYN),
        Pkt::tcp(APP, 40000, Ipv4Addr::new(10, 201, 0, 2), 8080, SYN),
    ] {
        let p = pkt.build();
        assert_eq!(t.run("endpoint_ingress", &p), (TC_ACT_OK, p));
    }
}

/// Another network on the node, with its own subnet and gateway (a node address).
const OTHER_NET: &str = "172.18.0.0/16";
const OTHER_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
const OTHER_CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);

fn node_with_two_networks(flags: u16) -> TestDatapath {
    let mut t = node();
    t.dp.set_network(
        OTHER_NET.parse().unwrap(),
        Some(network(NETWORK_TAG + 1, NETWORK_MASQUERADE)),
    )
    .unwrap();
    t.dp.set_node_addrs(&[NODE, GATEWAY, OTHER_GATEWAY])
        .unwrap();
    t.dp.register_endpoint(LO, &endpoint_info(flags)).unwrap();
    t
}

fn verdict(t: &mut TestDatapath, p: &[u8]) -> u32 {
    t.run("endpoint_ingress", p).0
}

#[test]
fn a_frame_from_another_mac_or_address_is_dropped() {
    let mut t = node_with_two_networks(0);
    let mut p = Pkt::tcp(CONTAINER, 40000, REMOTE, 80, SYN).build();
    assert_eq!(verdict(&mut t, &p), TC_ACT_OK, "its own MAC and address");
    p[11] = 9;
    assert_eq!(verdict(&mut t, &p), TC_ACT_SHOT, "another source MAC");
    let p = Pkt::tcp(APP, 40000, REMOTE, 80, SYN).build();
    assert_eq!(verdict(&mut t, &p), TC_ACT_SHOT, "another source address");
}

#[test]
fn arp_must_name_the_endpoint_as_sender() {
    let mut t = node_with_two_networks(0);
    let arp = |sha: [u8; 6], spa: Ipv4Addr| arp_request(sha, spa, GATEWAY);
    assert_eq!(verdict(&mut t, &arp(CONTAINER_MAC, CONTAINER)), TC_ACT_OK);
    assert_eq!(
        verdict(&mut t, &arp(CONTAINER_MAC, Ipv4Addr::UNSPECIFIED)),
        TC_ACT_OK,
        "a probe"
    );
    assert_eq!(
        verdict(&mut t, &arp(CONTAINER_MAC, APP)),
        TC_ACT_SHOT,
        "claims another address"
    );
    assert_eq!(
        verdict(&mut t, &arp([2, 0, 0, 0, 0, 9], CONTAINER)),
        TC_ACT_SHOT,
        "claims another MAC"
    );
}

#[test]
fn networks_are_isolated_but_the_node_and_published_ports_are_reachable() {
    let mut t = node_with_two_networks(0);
    let to = |dst, port| Pkt::tcp(CONTAINER, 40000, dst, port, SYN).build();
    assert_eq!(
        verdict(&mut t, &to(OTHER_CONTAINER, 80)),
        TC_ACT_SHOT,
        "another network"
    );
    assert_eq!(
        verdict(
            &mut t,
            &Pkt::udp(CONTAINER, 40000, OTHER_CONTAINER, 53).build()
        ),
        TC_ACT_SHOT
    );
    assert_eq!(
        verdict(&mut t, &to(OTHER_GATEWAY, 22)),
        TC_ACT_OK,
        "the node, by any address"
    );
    assert_eq!(verdict(&mut t, &to(APP, 80)), TC_ACT_OK, "its own network");
    assert_eq!(verdict(&mut t, &to(REMOTE, 80)), TC_ACT_OK, "the outside");
    // A protocol the parser does not translate is policed all the same.
    let mut gre = Pkt::udp(CONTAINER, 40000, OTHER_CONTAINER, 53).build();
    gre[ETH + 9] = 47;
    assert_eq!(verdict(&mut t, &gre), TC_ACT_SHOT, "GRE to another network");
}

/// The frame as a container sends it to be routed: to its gateway's MAC address.
fn via_gateway(mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&GATEWAY_MAC);
    frame
}

#[test]
fn icc_off_keeps_a_networks_containers_apart() {
    let mut t = node_with_two_networks(netd_common::maps::ENDPOINT_ICC_OFF);
    let to = |dst| via_gateway(Pkt::tcp(CONTAINER, 40000, dst, 80, SYN).build());
    assert_eq!(verdict(&mut t, &to(APP)), TC_ACT_SHOT);
    assert_eq!(verdict(&mut t, &to(GATEWAY)), TC_ACT_OK);
    assert_eq!(verdict(&mut t, &to(REMOTE)), TC_ACT_OK);
}

#[test]
fn an_internal_network_reaches_only_itself_and_the_node() {
    let mut t = node_with_two_networks(netd_common::maps::ENDPOINT_INTERNAL);
    let to = |dst| Pkt::tcp(CONTAINER, 40000, dst, 80, SYN).build();
    assert_eq!(verdict(&mut t, &to(REMOTE)), TC_ACT_SHOT, "no way out");
    assert_eq!(verdict(&mut t, &to(OTHER_CONTAINER)), TC_ACT_SHOT);
    assert_eq!(verdict(&mut t, &to(APP)), TC_ACT_OK);
    assert_eq!(verdict(&mut t, &to(GATEWAY)), TC_ACT_OK);
}

#[test]
fn a_reply_to_a_caller_on_another_network_is_delivered_straight_to_it() {
    let mut t = node_with_two_networks(0);
    let mut caller = endpoint_at(OTHER_CONTAINER, 0);
    caller.network = NETWORK_TAG + 1;
    t.dp.register_endpoint(LO, &caller).unwrap();
    let (verdict, out) = t.run(
        "endpoint_ingress",
        &Pkt::tcp(OTHER_CONTAINER, 40000, NODE, 8080, SYN).build(),
    );
    assert_eq!(verdict, TC_ACT_OK, "the call is routed by the stack");
    assert_eq!(dst_of(&out), (CONTAINER, 80));

    // The reply comes from the node's address: the stack would drop it as a martian, so
    // it goes straight into the caller's veth.
    t.dp.register_endpoint(LO, &endpoint_info(0)).unwrap();
    let (verdict, reply) = t.run(
        "endpoint_ingress",
        &Pkt::tcp(CONTAINER, 80, OTHER_CONTAINER, 40000, SYN | ACK).build(),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(src_of(&reply), (NODE, 8080));
    assert_eq!(dst_of(&reply), (OTHER_CONTAINER, 40000));
    assert_checksums_valid(&reply);
}

#[test]
fn published_ports_through_the_node_follow_internal_and_icc() {
    use netd_common::maps::{ENDPOINT_ICC_OFF, ENDPOINT_INTERNAL};
    // CONTAINER's own network holds the backend of 8080; OTHER_NET holds nothing.
    let syn = |src| via_gateway(Pkt::tcp(src, 40000, NODE, 8080, SYN).build());
    let mut t = node_with_two_networks(ENDPOINT_ICC_OFF);
    t.dp.register_endpoint(LO, &endpoint_at(APP, ENDPOINT_ICC_OFF))
        .unwrap();
    assert_eq!(
        verdict(&mut t, &syn(APP)),
        TC_ACT_SHOT,
        "icc off: not a neighbour's port"
    );
    t.dp.register_endpoint(LO, &endpoint_info(ENDPOINT_ICC_OFF))
        .unwrap();
    assert_eq!(
        verdict(&mut t, &syn(CONTAINER)),
        TC_ACT_REDIRECT,
        "but its own"
    );

    let mut caller = endpoint_at(OTHER_CONTAINER, ENDPOINT_INTERNAL);
    caller.network = NETWORK_TAG + 1;
    t.dp.register_endpoint(LO, &caller).unwrap();
    assert_eq!(
        verdict(&mut t, &syn(OTHER_CONTAINER)),
        TC_ACT_SHOT,
        "internal: nothing outside"
    );
}

#[test]
fn each_endpoint_counts_what_it_sent_had_dropped_and_received() {
    use netd_common::counters::{Counter, Reason};
    let mut t = node_with_two_networks(0);
    let ok = Pkt::tcp(CONTAINER, 40000, REMOTE, 80, SYN).build();
    let spoofed = Pkt::tcp(APP, 40000, REMOTE, 80, SYN).build();
    for _ in 0..3 {
        assert_eq!(verdict(&mut t, &ok), TC_ACT_OK);
    }
    for _ in 0..2 {
        assert_eq!(verdict(&mut t, &spoofed), TC_ACT_SHOT);
    }
    assert_eq!(t.run("endpoint_egress", &ok).0, TC_ACT_OK);
    let len = ok.len() as u64;
    let counters = t.dp.endpoint_counters().unwrap();
    let c = &counters[&LO];
    assert_eq!(
        c.sent,
        Counter {
            packets: 5,
            bytes: 5 * len
        },
        "{c:?}"
    );
    assert_eq!(
        c.dropped,
        Counter {
            packets: 2,
            bytes: 2 * len
        }
    );
    assert_eq!(
        c.received,
        Counter {
            packets: 1,
            bytes: len
        }
    );
    let two = Counter {
        packets: 2,
        bytes: 2 * len,
    };
    assert_eq!(c.drops, vec![(Reason::DropSpoofedSource, two)]);
    // Registering again (a restarted daemon) keeps the counts.
    t.dp.register_endpoint(LO, &endpoint_info(0)).unwrap();
    assert_eq!(t.dp.endpoint_counters().unwrap()[&LO].sent.packets, 5);
    // Forgotten, the endpoint's counters go, and what still comes from its veth creates
    // none (the programs only add to entries the daemon made).
    t.dp.forget_endpoint("lo", LO).unwrap();
    assert!(t.dp.endpoint_counters().unwrap().is_empty());
    assert_eq!(verdict(&mut t, &spoofed), TC_ACT_SHOT);
    assert_eq!(t.run("endpoint_egress", &ok).0, TC_ACT_OK);
    assert!(t.dp.endpoint_counters().unwrap().is_empty());
    let fill = t.dp.map_entry_counts().unwrap();
    assert!(fill.contains(&("endpoint_counters", 0)), "{fill:?}");
    assert!(fill.contains(&("endpoint_drops", 0)), "{fill:?}");
}
