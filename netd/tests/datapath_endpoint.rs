//! The endpoint program (a container's host-side veth) under BPF_PROG_TEST_RUN: hairpin.

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

    let (verdict, out) = t.run("endpoint_ingress", &syn);

    assert_eq!(verdict, TC_ACT_OK, "the stack forwards it to the backend");
    assert_eq!(src_of(&out), (APP, 40000), "the caller's address is kept");
    assert_eq!(dst_of(&out), (CONTAINER, 80));
    assert_checksums_valid(&out);

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
    for pkt in [
        Pkt::tcp(APP, 40000, NODE, 7000, SYN),
        Pkt::tcp(APP, 40000, CONTAINER, 80, SYN),
        Pkt::tcp(APP, 40000, Ipv4Addr::new(10, 201, 0, 2), 8080, SYN),
    ] {
        let p = pkt.build();
        assert_eq!(t.run("endpoint_ingress", &p), (TC_ACT_OK, p));
    }
}
