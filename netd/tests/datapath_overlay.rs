//! The overlay programs under BPF_PROG_TEST_RUN: a container's frame to a container of
//! another node is sent into the VXLAN device (never translated), its ARP request for one
//! is answered on the spot, policy holds across nodes, and the VXLAN device's program
//! drops what carries no tunnel metadata. (The tunnel key a program sets is not visible
//! after a test run, and no test run can give a frame one: what the kernel adds and what
//! the receiving side checks are tested end to end, in tests/tests/cluster.rs.)

mod support;

use std::{collections::BTreeMap, net::Ipv4Addr};

use netd::datapath::{Remote, RemoteTable};
use netd_common::maps::{ENDPOINT_ICC_OFF, OverlayInfo};
use support::*;

/// A container of the overlay (CONTAINER's network, tag NETWORK_TAG) on another node.
const PEER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 9);
const PEER_NODE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 7);
/// A container of another overlay, set up on another node only.
const STRANGER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 10);
const VNI: u32 = 4096;

fn overlay_node() -> TestDatapath {
    let mut t = standard_node();
    t.dp.set_overlay(
        VNI,
        Some(OverlayInfo {
            tag: NETWORK_TAG,
            vxlan_ifindex: LO,
        }),
    )
    .unwrap();
    let remotes = BTreeMap::from([
        (
            PEER,
            Remote {
                node: PEER_NODE,
                vni: VNI,
            },
        ),
        (
            STRANGER,
            Remote {
                node: PEER_NODE,
                vni: VNI + 1,
            },
        ),
    ]);
    let mut table = RemoteTable::open(t.bpffs()).unwrap();
    assert_eq!(table.sync(&remotes).unwrap(), (2, 0));
    assert_eq!(table.sync(&remotes).unwrap(), (0, 0), "nothing to change");
    t
}

fn arp(oper: u16, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CONTAINER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&oper.to_be_bytes());
    f.extend_from_slice(&CONTAINER_MAC);
    f.extend_from_slice(&CONTAINER.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

#[test]
fn a_frame_to_a_container_of_another_node_goes_into_the_vxlan_device_untranslated() {
    let mut t = overlay_node();
    for p in [
        Pkt::tcp(CONTAINER, 40000, PEER, 80, SYN).build(),
        Pkt::udp(CONTAINER, 40000, PEER, 53).build(),
        // Even to a port the node publishes: PEER is not the node.
        Pkt::tcp(CONTAINER, 40000, PEER, 8080, SYN).build(),
    ] {
        let (verdict, out) = t.run("endpoint_ingress", &p);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(
            out, p,
            "the kernel adds the outer headers; nothing else changes"
        );
    }
    assert_eq!(count(&t, "EndpointIngress", "overlay_sent"), 3);
    assert_eq!(count(&t, "EndpointIngress", "dnat_new_flow"), 0);
}

#[test]
fn arp_for_a_container_of_another_node_is_answered_with_the_gateways_mac() {
    let mut t = overlay_node();
    let (verdict, reply) = t.run("endpoint_ingress", &arp(1, PEER));
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back into the container");
    let mut want = CONTAINER_MAC.to_vec();
    want.extend_from_slice(&GATEWAY_MAC);
    want.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    want.extend_from_slice(&GATEWAY_MAC);
    want.extend_from_slice(&PEER.octets());
    want.extend_from_slice(&CONTAINER_MAC);
    want.extend_from_slice(&CONTAINER.octets());
    assert_eq!(reply, want);
    assert_eq!(count(&t, "EndpointIngress", "arp_answered"), 1);

    // Not a request, or about someone on this node: the bridge carries it, as before.
    for f in [arp(2, PEER), arp(1, Ipv4Addr::new(172, 17, 0, 3))] {
        assert_eq!(t.run("endpoint_ingress", &f), (TC_ACT_OK, f));
    }
}

#[test]
fn policy_holds_across_nodes() {
    let mut t = overlay_node();
    let syn = Pkt::tcp(CONTAINER, 40000, STRANGER, 80, SYN).build();
    assert_eq!(t.run("endpoint_ingress", &syn).0, TC_ACT_SHOT);
    assert_eq!(
        count(&t, "EndpointIngress", "drop_overlay_unknown_vni"),
        1,
        "an overlay not set up here is no network of this endpoint"
    );

    // icc off: not even a container of the same overlay on another node.
    t.dp.register_endpoint(LO, &endpoint_info(ENDPOINT_ICC_OFF))
        .unwrap();
    let syn = Pkt::tcp(CONTAINER, 40000, PEER, 80, SYN).build();
    assert_eq!(t.run("endpoint_ingress", &syn).0, TC_ACT_SHOT);
    assert_eq!(t.run("endpoint_ingress", &arp(1, PEER)).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_icc_disabled"), 2);

    // A container of another network on this node reaches neither PEER nor its address.
    t.dp.set_network(
        "172.18.0.0/16".parse().unwrap(),
        Some(network(NETWORK_TAG + 1, NETWORK_MASQUERADE)),
    )
    .unwrap();
    let mut other = endpoint_at(Ipv4Addr::new(172, 18, 0, 2), 0);
    other.network = NETWORK_TAG + 1;
    t.dp.register_endpoint(LO, &other).unwrap();
    let syn = Pkt::tcp(Ipv4Addr::new(172, 18, 0, 2), 40000, PEER, 80, SYN).build();
    assert_eq!(t.run("endpoint_ingress", &syn).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_network_isolation"), 1);
}

#[test]
fn a_remote_container_that_left_is_no_longer_sent_to() {
    let mut t = overlay_node();
    let mut table = RemoteTable::open(t.bpffs()).unwrap();
    assert_eq!(table.sync(&BTreeMap::new()).unwrap(), (0, 2));
    let syn = Pkt::tcp(CONTAINER, 40000, PEER, 80, SYN).build();
    assert_eq!(
        t.run("endpoint_ingress", &syn).0,
        TC_ACT_OK,
        "left to the stack"
    );
    let f = arp(1, PEER);
    assert_eq!(
        t.run("endpoint_ingress", &f),
        (TC_ACT_OK, f),
        "not answered"
    );
}

#[test]
fn the_vxlan_devices_program_drops_frames_without_tunnel_metadata() {
    let mut t = overlay_node();
    let p = Pkt::tcp(PEER, 80, CONTAINER, 40000, SYN | ACK).build();
    assert_eq!(t.run("overlay_ingress", &p).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "Overlay", "drop_overlay_tunnel_key"), 1);
}
