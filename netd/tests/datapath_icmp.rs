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
