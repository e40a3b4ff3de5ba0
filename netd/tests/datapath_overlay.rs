//! The overlay programs under BPF_PROG_TEST_RUN: a container's frame to a container of
//! another node is sent into the VXLAN device (never translated), its ARP request for one
//! is answered on the spot, policy holds across nodes; the VXLAN device's program drops
//! what carries no tunnel metadata, delivers a frame only when its VXLAN ID, sending node,
//! source and destination agree (run through `overlay_ingress_keyed`, which gives the
//! frame the tunnel key a test run cannot), and counts why it refused. (The tunnel key a
//! program sets is not visible after a test run: the outer headers the kernel adds are
//! tested end to end, in tests/tests/overlay.rs.) The same for IPv6, where neighbour
//! solicitations take ARP's place: answered with an advertisement built here.

mod support;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netd::datapath::{Remote, RemoteTable};
use netd_common::maps::{ENDPOINT_ICC_OFF, OverlayInfo};
use support::*;

/// A container of the overlay (CONTAINER's network, tag NETWORK_TAG) on another node.
const PEER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 9);
const PEER_NODE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 7);
/// A container of another overlay, set up on another node only.
const STRANGER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 10);
/// Their IPv6 addresses (CONTAINER's network has IPv6).
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 9);
const STRANGER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 0x10);
const VNI: u32 = 4096;

fn overlay_node() -> TestDatapath {
    let mut t = node6(0);
    t.dp.set_overlay(
        VNI,
        Some(OverlayInfo {
            tag: NETWORK_TAG,
            vxlan_ifindex: LO,
        }),
    )
    .unwrap();
    let peer = Remote {
        node: PEER_NODE,
        vni: VNI,
    };
    let stranger = Remote {
        node: PEER_NODE,
        vni: VNI + 1,
    };
    let remotes = BTreeMap::from([
        (IpAddr::from(PEER), peer),
        (IpAddr::from(STRANGER), stranger),
        (IpAddr::from(PEER6), peer),
        (IpAddr::from(STRANGER6), stranger),
    ]);
    let mut table = RemoteTable::open(t.bpffs()).unwrap();
    assert_eq!(table.sync(&remotes).unwrap(), (4, 0));
    assert_eq!(table.sync(&remotes).unwrap(), (0, 0), "nothing to change");
    t
}

/// STRANGER's overlay (VNI + 1) set up on this node too, as another network's.
fn set_up_strangers_overlay(t: &mut TestDatapath) {
    t.dp.set_overlay(
        VNI + 1,
        Some(OverlayInfo {
            tag: NETWORK_TAG + 1,
            vxlan_ifindex: LO,
        }),
    )
    .unwrap();
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

    // Not a request, about someone on this node, or about a container of another overlay
    // (not set up here, or another network's): the bridge carries it, as before; nobody
    // answers for another network.
    let f = arp(1, STRANGER);
    assert_eq!(t.run("endpoint_ingress", &f), (TC_ACT_OK, f));
    set_up_strangers_overlay(&mut t);
    for f in [
        arp(2, PEER),
        arp(1, Ipv4Addr::new(172, 17, 0, 3)),
        arp(1, STRANGER),
    ] {
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
    assert_eq!(table.sync(&BTreeMap::new()).unwrap(), (0, 4));
    for f in [
        tcp6(CONTAINER6, 40000, PEER6, 80, SYN),
        solicitation(CONTAINER6, PEER6),
    ] {
        assert_eq!(
            t.run("endpoint_ingress", &f),
            (TC_ACT_OK, f),
            "IPv6: left to the bridge"
        );
    }
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

/// The VXLAN device's program on `frame` as received with VXLAN ID `vni` from the node
/// at `node` (through `overlay_ingress_keyed`, which sets that tunnel key first).
fn receive(t: &mut TestDatapath, vni: u32, node: Ipv4Addr, frame: &[u8]) -> (u32, Vec<u8>) {
    use aya::programs::{TestRun, TestRunOptions};
    let prog = t.dp.program("overlay_ingress_keyed").unwrap();
    if prog.fd().is_err() {
        prog.load().unwrap();
    }
    // struct __sk_buff up to its cb[5] (at byte 48): the key's VXLAN ID, then the node's
    // address in network order.
    let mut ctx = [0u8; 68];
    ctx[48..52].copy_from_slice(&vni.to_ne_bytes());
    ctx[52..56].copy_from_slice(&node.octets());
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .unwrap();
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// `frame` as the VXLAN device's program delivers it into CONTAINER: to its MAC from the
/// gateway's, nothing else changed.
fn delivered(frame: &[u8]) -> Vec<u8> {
    let mut want = CONTAINER_MAC.to_vec();
    want.extend_from_slice(&GATEWAY_MAC);
    want.extend_from_slice(&frame[12..]);
    want
}

/// Each case `(what, VXLAN ID, sending node, frame, reason)` received and dropped, counted
/// under its reason.
fn assert_refused<const N: usize>(
    t: &mut TestDatapath,
    cases: [(&str, u32, Ipv4Addr, Vec<u8>, &str); N],
) {
    for (what, vni, node, frame, reason) in cases {
        let before = count(t, "Overlay", reason);
        assert_eq!(receive(t, vni, node, &frame).0, TC_ACT_SHOT, "{what}");
        assert_eq!(count(t, "Overlay", reason), before + 1, "{what}: {reason}");
    }
}

#[test]
fn a_frame_from_the_right_node_and_vni_is_delivered_into_its_container() {
    let mut t = overlay_node();
    for p in [
        Pkt::tcp(PEER, 80, CONTAINER, 40000, SYN | ACK).build(),
        Pkt::udp(PEER, 53, CONTAINER, 40000).build(),
    ] {
        let (verdict, out) = receive(&mut t, VNI, PEER_NODE, &p);
        assert_eq!(verdict, TC_ACT_REDIRECT, "into the container's veth peer");
        assert_eq!(
            out,
            delivered(&p),
            "from the gateway's MAC, nothing else changed"
        );
    }
    assert_eq!(count(&t, "Overlay", "overlay_delivered"), 2);
}

#[test]
fn the_vxlan_devices_program_refuses_what_does_not_agree() {
    let mut t = overlay_node();
    set_up_strangers_overlay(&mut t);
    let to_container = |from: Ipv4Addr| Pkt::tcp(from, 80, CONTAINER, 40000, SYN).build();
    let other_node = Ipv4Addr::new(10, 200, 0, 8);
    let cases = [
        (
            "a real container's frame sent by another node",
            VNI,
            other_node,
            to_container(PEER),
            "drop_overlay_foreign_source",
        ),
        (
            "the right sender under the wrong VNI",
            VNI + 1,
            PEER_NODE,
            to_container(PEER),
            "drop_overlay_foreign_source",
        ),
        (
            "another overlay's container into this overlay's",
            VNI + 1,
            PEER_NODE,
            to_container(STRANGER),
            "drop_overlay_wrong_vni",
        ),
        (
            "a VNI not set up here",
            VNI + 7,
            PEER_NODE,
            to_container(PEER),
            "drop_overlay_unknown_vni",
        ),
        (
            "no such container here",
            VNI,
            PEER_NODE,
            Pkt::tcp(PEER, 80, Ipv4Addr::new(172, 17, 0, 50), 40000, SYN).build(),
            "drop_overlay_no_such_endpoint",
        ),
        (
            "ARP across nodes (each node answers for the others)",
            VNI,
            PEER_NODE,
            arp(1, CONTAINER),
            "drop_ethertype_not_allowed",
        ),
    ];
    assert_refused(&mut t, cases);
    assert_eq!(count(&t, "Overlay", "overlay_delivered"), 0);

    // icc off: not even from a container of the same overlay.
    t.dp.register_endpoint(LO, &endpoint_info(ENDPOINT_ICC_OFF))
        .unwrap();
    let p = to_container(PEER);
    assert_eq!(receive(&mut t, VNI, PEER_NODE, &p).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "Overlay", "drop_icc_disabled"), 1);
}

/// A neighbour solicitation from CONTAINER6 (or `src`) for `target`, to its
/// solicited-node group, with CONTAINER_MAC as its source link-layer address.
fn solicitation(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut body = vec![135, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&CONTAINER_MAC);
    let t = target.segments();
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | (t[6] & 0xff), t[7]);
    frame6(src, group, &[], 0, ICMP6, &body)
}

#[test]
fn ipv6_to_a_container_of_another_node_goes_into_the_vxlan_device_untranslated() {
    let mut t = overlay_node();
    for p in [
        tcp6(CONTAINER6, 40000, PEER6, 80, SYN),
        udp6(CONTAINER6, 40000, PEER6, 53),
    ] {
        let (verdict, out) = t.run("endpoint_ingress", &p);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(out, p, "sent as it is");
    }
    assert_eq!(count(&t, "EndpointIngress", "overlay_sent"), 2);
    // Another overlay's container (its overlay set up here as another network's): policy.
    set_up_strangers_overlay(&mut t);
    let p = tcp6(CONTAINER6, 40000, STRANGER6, 80, SYN);
    assert_eq!(t.run("endpoint_ingress", &p).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "EndpointIngress", "drop_network_isolation"), 1);
}

#[test]
fn a_neighbour_solicitation_for_a_container_of_another_node_is_answered_with_the_gateways_mac() {
    let mut t = overlay_node();
    let (verdict, reply) = t.run("endpoint_ingress", &solicitation(CONTAINER6, PEER6));
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back into the container");
    // The advertisement as RFC 4861 has it: from the target to the asker, hop limit 255,
    // Solicited and Override, the gateway's MAC as the target's link-layer address.
    let mut body = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    body.extend_from_slice(&PEER6.octets());
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&GATEWAY_MAC);
    let mut want = ipv6_frame(CONTAINER_MAC, PEER6, CONTAINER6, ICMP6, &body);
    want[6..12].copy_from_slice(&GATEWAY_MAC);
    let want = with_l4_checksum6(want, ETH + 40, ICMP6);
    assert_eq!(reply, want);
    assert_eq!(l4_sum6(&reply, ETH + 40, ICMP6), 0, "its checksum is right");
    assert_eq!(count(&t, "EndpointIngress", "neighbor_answered"), 1);

    // A container of another overlay, a neighbour on this node: nobody answers here; the
    // bridge carries it, as before. (Duplicate address detection of an address not the
    // container's own never gets this far: `guard6` drops it.)
    for f in [
        solicitation(CONTAINER6, STRANGER6),
        solicitation(CONTAINER6, NEIGHBOUR6),
    ] {
        assert_eq!(t.run("endpoint_ingress", &f), (TC_ACT_OK, f));
    }
    assert_eq!(count(&t, "EndpointIngress", "neighbor_answered"), 1);
}

#[test]
fn ipv6_from_the_right_node_and_vni_is_delivered_and_what_does_not_agree_is_refused() {
    let mut t = overlay_node();
    set_up_strangers_overlay(&mut t);
    let p = tcp6(PEER6, 80, CONTAINER6, 40000, SYN | ACK);
    let (verdict, out) = receive(&mut t, VNI, PEER_NODE, &p);
    assert_eq!(verdict, TC_ACT_REDIRECT, "into the container's veth peer");
    assert_eq!(
        out,
        delivered(&p),
        "from the gateway's MAC, nothing else changed"
    );
    assert_eq!(count(&t, "Overlay", "overlay_delivered"), 1);

    let mut advert = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    advert.extend_from_slice(&GATEWAY6.octets());
    let cases = [
        (
            "a real container's packet sent by another node",
            VNI,
            Ipv4Addr::new(10, 200, 0, 8),
            tcp6(PEER6, 80, CONTAINER6, 40000, SYN),
            "drop_overlay_foreign_source",
        ),
        (
            "another overlay's container into this overlay's",
            VNI + 1,
            PEER_NODE,
            tcp6(STRANGER6, 80, CONTAINER6, 40000, SYN),
            "drop_overlay_wrong_vni",
        ),
        (
            "no such container here",
            VNI,
            PEER_NODE,
            tcp6(PEER6, 80, NEIGHBOUR6, 40000, SYN),
            "drop_overlay_no_such_endpoint",
        ),
        (
            "a neighbour advertisement across nodes (claiming the gateway)",
            VNI,
            PEER_NODE,
            frame6(PEER6, CONTAINER6, &[], 0, ICMP6, &advert),
            "drop_overlay_neighbor_discovery",
        ),
    ];
    assert_refused(&mut t, cases);
    assert_eq!(count(&t, "Overlay", "overlay_delivered"), 1);
}
