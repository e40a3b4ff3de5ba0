//! ICMP through the uplink programs: echo through masquerade, and errors that quote a
//! translated flow reaching the original sender translated back.

mod support;

use std::net::Ipv4Addr;

use support::*;

const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 254);

fn node() -> TestDatapath {
    standard_node()
}

fn echo_id(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[ETH + 24], p[ETH + 25]])
}

#[test]
fn ping_through_masquerade_and_its_reply_come_back() {
    let mut t = node();
    let (verdict, out) = t.run("uplink_egress", &icmp_echo(CONTAINER, REMOTE, 4242, true));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(src_of(&out).0, NODE);
    let id = echo_id(&out);
    assert!(
        (61000..=65535).contains(&id) || id == 4242,
        "the identifier is the flow's port: {id}"
    );
    assert_icmp_checksums_valid(&out);

    let (verdict, back) = t.run("uplink_ingress", &icmp_echo(REMOTE, NODE, id, false));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(dst_of(&back).0, CONTAINER);
    assert_eq!(echo_id(&back), 4242);
    assert_icmp_checksums_valid(&back);
}

#[test]
fn ping_to_the_node_itself_is_left_alone() {
    let mut t = node();
    let ping = icmp_echo(CLIENT, NODE, 7, true);
    assert_eq!(t.run("uplink_ingress", &ping), (TC_ACT_OK, ping));
}

#[test]
fn port_unreachable_for_a_masqueraded_flow_reaches_the_container() {
    let mut t = node();
    let (_, sent) = t.run(
        "uplink_egress",
        &Pkt::udp(CONTAINER, 5555, REMOTE, 9999).build(),
    );
    let (node_addr, snat_port) = src_of(&sent);
    assert_eq!(node_addr, NODE);

    let error = icmp_error(REMOTE, NODE, 3, 3, &sent);
    let (verdict, out) = t.run("uplink_ingress", &error);

    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(dst_of(&out).0, CONTAINER, "the error goes to the container");
    assert_eq!(src_of(&out).0, REMOTE);
    assert_eq!(
        quoted_ends(&out),
        ((CONTAINER, 5555), (REMOTE, 9999)),
        "it quotes what the container sent"
    );
    assert_icmp_checksums_valid(&out);
    assert_ne!(snat_port, 0);
}

#[test]
fn frag_needed_from_a_router_reaches_the_container() {
    let mut t = node();
    let (_, sent) = t.run(
        "uplink_egress",
        &Pkt::tcp(CONTAINER, 5555, REMOTE, 443, ACK).build(),
    );

    let (verdict, out) = t.run("uplink_ingress", &icmp_error(ROUTER, NODE, 3, 4, &sent));

    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(dst_of(&out).0, CONTAINER);
    assert_eq!(quoted_ends(&out).0, (CONTAINER, 5555));
    assert_eq!(out[ETH + 26..ETH + 28], [0x05, 0x78], "the MTU is kept");
    assert_icmp_checksums_valid(&out);
}

#[test]
fn an_error_from_a_container_about_a_published_flow_leaves_with_the_node_address() {
    let mut t = node();
    let (_, delivered) = t.run(
        "uplink_ingress",
        &Pkt::udp(CLIENT, 40000, NODE, 5353).build(),
    );
    assert_eq!(dst_of(&delivered), (CONTAINER, 53));

    let (verdict, out) = t.run(
        "uplink_egress",
        &icmp_error(CONTAINER, CLIENT, 3, 3, &delivered),
    );

    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(src_of(&out).0, NODE);
    assert_eq!(
        quoted_ends(&out),
        ((CLIENT, 40000), (NODE, 5353)),
        "it quotes what the client sent"
    );
    assert_icmp_checksums_valid(&out);
}

#[test]
fn an_error_quoting_an_unknown_flow_passes_unchanged() {
    let mut t = node();
    let stray = icmp_error(
        ROUTER,
        NODE,
        11,
        0,
        &Pkt::udp(NODE, 33434, REMOTE, 33434).build(),
    );
    assert_eq!(t.run("uplink_ingress", &stray), (TC_ACT_OK, stray));
}

/// An error belongs to a flow only when it goes to the quoted packet's source: one a LAN
/// host addresses to a container, quoting a flow of the node, is a packet to a
/// protected container like any other.
#[test]
fn an_error_sent_to_anyone_but_the_quoted_sender_is_not_let_in_by_its_flow() {
    let mut t = node();
    let (_, sent) = t.run(
        "uplink_egress",
        &Pkt::udp(CONTAINER, 5555, REMOTE, 9999).build(),
    );
    assert_eq!(src_of(&sent).0, NODE);
    for reporter in [REMOTE, CLIENT, ROUTER] {
        let misaddressed = icmp_error(reporter, CONTAINER, 3, 3, &sent);
        assert_eq!(
            t.run("uplink_ingress", &misaddressed).0,
            TC_ACT_SHOT,
            "from {reporter}"
        );
    }
    assert!(count(&t, "UplinkIngress", "drop_not_published") >= 3);
    // The same error addressed right still reaches the container.
    let (verdict, out) = t.run("uplink_ingress", &icmp_error(REMOTE, NODE, 3, 3, &sent));
    assert_eq!((verdict, dst_of(&out).0), (TC_ACT_OK, CONTAINER));
}

/// Errors whose quote cannot be read are not errors of any flow: addressed to a
/// protected container, they are dropped whatever the quote pretends to be.
#[test]
fn an_error_with_an_unreadable_quote_does_not_reach_a_protected_container() {
    let mut t = node();
    let (_, sent) = t.run(
        "uplink_egress",
        &Pkt::tcp(CONTAINER, 5555, REMOTE, 443, SYN).build(),
    );
    let good = icmp_error(REMOTE, CONTAINER, 3, 1, &sent);
    const QUOTE: usize = ETH + 28;
    let spoiled = |spoil: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        spoil(&mut p);
        p
    };
    let hostile = [
        ("IPv6 quote", spoiled(&|p| p[QUOTE] = 0x65)),
        ("quote with options", spoiled(&|p| p[QUOTE] = 0x47)),
        (
            "quote too short for ports",
            spoiled(&|p| p.truncate(QUOTE + 22)),
        ),
        ("quoted fragment", spoiled(&|p| p[QUOTE + 7] = 0x10)),
        ("header length under 20", spoiled(&|p| p[QUOTE] = 0x44)),
    ];
    for (what, p) in hostile {
        assert_eq!(t.run("uplink_ingress", &p).0, TC_ACT_SHOT, "{what}");
    }
}

/// On a network without masquerade the container's own address is on the wire: an error
/// about its ping comes to it directly, and is let in as part of the tracked flow.
#[test]
fn an_error_about_a_ping_of_a_container_without_masquerade_reaches_it() {
    let mut t = node();
    t.dp.set_network(
        "172.17.0.0/16".parse().unwrap(),
        Some(network(NETWORK_TAG, 0)),
    )
    .unwrap();
    let ping = icmp_echo(CONTAINER, REMOTE, 77, true);
    assert_eq!(t.run("uplink_egress", &ping), (TC_ACT_OK, ping.clone()));

    let error = icmp_error(ROUTER, CONTAINER, 11, 0, &ping);
    assert_eq!(t.run("uplink_ingress", &error), (TC_ACT_OK, error));
    // An error about a ping it never sent is not.
    let unasked = icmp_error(
        ROUTER,
        CONTAINER,
        11,
        0,
        &icmp_echo(CONTAINER, REMOTE, 78, true),
    );
    assert_eq!(t.run("uplink_ingress", &unasked).0, TC_ACT_SHOT);
}
