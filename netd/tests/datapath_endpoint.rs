//! The endpoint program (a container's host-side veth) under BPF_PROG_TEST_RUN: hairpin.

mod support;

use std::net::Ipv4Addr;

use netd::ports::{PortBinding, Proto};
use support::*;

const NODE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const WEB: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const APP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
/// BPF_PROG_TEST_RUN runs skb programs on loopback: the "veth" the packet came from.
const LO: u32 = 1;
const TC_ACT_REDIRECT: u32 = 7;

fn node() -> TestDatapath {
    let mut t = TestDatapath::new();
    t.dp.set_node_config(NODE, (61000, 65535), 0).unwrap();
    t.dp.set_node_addrs(&[NODE]).unwrap();
    let b = PortBinding {
        proto: Proto::Tcp,
        container_port: 80,
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port: 8080,
    };
    t.dp.publish(&b, WEB, LO).unwrap();
    t
}

#[test]
fn a_container_calling_another_ones_published_port_is_dnated_only() {
    let mut t = node();
    let syn = Pkt::tcp(APP, 40000, NODE, 8080, SYN).build();

    let (verdict, out) = t.run("endpoint_ingress", &syn);

    assert_eq!(verdict, TC_ACT_OK, "the stack forwards it to the backend");
    assert_eq!(src_of(&out), (APP, 40000), "the caller's address is kept");
    assert_eq!(dst_of(&out), (WEB, 80));
    assert_checksums_valid(&out);

    let (verdict, reply) = t.run(
        "endpoint_ingress",
        &Pkt::tcp(WEB, 80, APP, 40000, SYN | ACK).build(),
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
    t.dp.register_endpoint(LO, WEB, GATEWAY).unwrap();
    let syn = Pkt::tcp(WEB, 40000, NODE, 8080, SYN).build();

    let (verdict, out) = t.run("endpoint_ingress", &syn);

    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(src_of(&out), (GATEWAY, 40000), "masqueraded to the gateway");
    assert_eq!(dst_of(&out), (WEB, 80));
    assert_eq!(
        out[..6],
        syn[6..12],
        "the container's own MAC is the destination now"
    );
    assert_eq!(out[6..12], syn[..6]);
    assert_checksums_valid(&out);

    let (verdict, reply) = t.run(
        "endpoint_ingress",
        &Pkt::tcp(WEB, 80, GATEWAY, 40000, SYN | ACK).build(),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(src_of(&reply), (NODE, 8080));
    assert_eq!(dst_of(&reply), (WEB, 40000));
    assert_checksums_valid(&reply);
}

#[test]
fn traffic_to_anything_else_passes_unchanged() {
    let mut t = node();
    for pkt in [
        Pkt::tcp(APP, 40000, NODE, 7000, SYN),
        Pkt::tcp(APP, 40000, WEB, 80, SYN),
        Pkt::tcp(APP, 40000, Ipv4Addr::new(10, 201, 0, 2), 8080, SYN),
    ] {
        let p = pkt.build();
        assert_eq!(t.run("endpoint_ingress", &p), (TC_ACT_OK, p));
    }
}
