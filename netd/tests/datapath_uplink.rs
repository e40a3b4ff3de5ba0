//! The uplink programs under BPF_PROG_TEST_RUN: crafted packets in, exact bytes out.

mod support;

use std::net::Ipv4Addr;

use netd::{
    datapath::NodeSettings,
    ports::{PortBinding, Proto},
};
use support::*;

fn node() -> TestDatapath {
    standard_node()
}

/// Everything but the rewritten fields is unchanged.
fn assert_only_nat_fields_changed(before: &[u8], after: &[u8]) {
    assert_eq!(before.len(), after.len());
    let nat_fields = [
        24..26,
        26..34,
        34..38,
        l4_csum_offset(before[23])..l4_csum_offset(before[23]) + 2,
    ];
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        if !nat_fields.iter().any(|r| r.contains(&i)) {
            assert_eq!(a, b, "byte {i} changed");
        }
    }
}

#[test]
fn syn_to_published_port_is_dnated_with_valid_checksums() {
    let mut t = node();
    let syn = Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build();

    let (verdict, out) = t.run("uplink_ingress", &syn);

    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(dst_of(&out), (CONTAINER, 80));
    assert_eq!(
        src_of(&out),
        (CLIENT, 40000),
        "the client's address is preserved"
    );
    assert_checksums_valid(&out);
    assert_only_nat_fields_changed(&syn, &out);
    assert_eq!(
        t.dp.flow_entries().unwrap().len(),
        2,
        "both halves of the flow are recorded"
    );
}

#[test]
fn reply_of_a_published_flow_is_reverse_translated() {
    let mut t = node();
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build(),
    );
    let syn_ack = Pkt::tcp(CONTAINER, 80, CLIENT, 40000, SYN | ACK).build();

    let (verdict, out) = t.run("uplink_egress", &syn_ack);

    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(src_of(&out), (NODE, 8080));
    assert_eq!(dst_of(&out), (CLIENT, 40000));
    assert_checksums_valid(&out);
}

#[test]
fn a_binding_on_the_exact_address_wins_over_the_wildcard() {
    let mut t = node();
    let second = Ipv4Addr::new(10, 200, 0, 3);
    let other = Ipv4Addr::new(172, 17, 0, 3);
    t.dp.set_node_addrs(&[NODE, second]).unwrap();
    let exact = PortBinding {
        proto: Proto::Tcp,
        container_port: 81,
        host_ip: second.into(),
        host_port: 8080,
    };
    t.dp.publish(&exact, Some(other), None, 8).unwrap();

    let (_, to_second) = t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, second, 8080, SYN).build(),
    );
    let (_, to_node) = t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40001, NODE, 8080, SYN).build(),
    );

    assert_eq!(
        dst_of(&to_second),
        (other, 81),
        "the exact binding answers on its address"
    );
    assert_eq!(
        dst_of(&to_node),
        (CONTAINER, 80),
        "the wildcard answers on the other addresses"
    );
}

#[test]
fn a_packet_from_outside_addressed_to_loopback_is_never_translated() {
    let mut t = node();
    let local = PortBinding {
        proto: Proto::Tcp,
        container_port: 443,
        host_ip: Ipv4Addr::LOCALHOST.into(),
        host_port: 8443,
    };
    t.dp.publish(&local, Some(CONTAINER), None, 7).unwrap();
    // TC ingress runs before the kernel drops such martians (moby#45610).
    for dst in [Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 2)] {
        for port in [8443, 8080] {
            let p = Pkt::tcp(CLIENT, 40000, dst, port, SYN).build();
            assert_eq!(t.run("uplink_ingress", &p), (TC_ACT_OK, p), "{dst}:{port}");
        }
    }
}

#[test]
fn packet_to_unpublished_port_passes_unchanged() {
    let mut t = node();
    for pkt in [
        Pkt::tcp(CLIENT, 40000, NODE, 8081, SYN),
        Pkt::udp(CLIENT, 40000, NODE, 8080),
        Pkt::tcp(CLIENT, 40000, Ipv4Addr::new(10, 200, 0, 9), 8080, SYN),
    ] {
        let p = pkt.build();
        let (verdict, out) = t.run("uplink_ingress", &p);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out, p);
    }
    assert!(t.dp.flow_entries().unwrap().is_empty());
}

#[test]
fn container_egress_is_masqueraded_and_the_reply_finds_its_way_back() {
    let mut t = node();
    let out_pkt = Pkt::tcp(CONTAINER, 5555, REMOTE, 9000, SYN).build();

    let (verdict, out) = t.run("uplink_egress", &out_pkt);

    assert_eq!(verdict, TC_ACT_OK);
    let (src, port) = src_of(&out);
    assert_eq!(
        (src, port),
        (NODE, 5555),
        "the node's address, and the container's own port while the tuple is free"
    );
    assert_eq!(dst_of(&out), (REMOTE, 9000));
    assert_checksums_valid(&out);

    let reply = Pkt::tcp(REMOTE, 9000, NODE, port, SYN | ACK).build();
    let (verdict, back) = t.run("uplink_ingress", &reply);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(dst_of(&back), (CONTAINER, 5555));
    assert_checksums_valid(&back);
}

#[test]
fn what_the_node_sends_from_its_gateway_address_is_never_masqueraded() {
    let mut t = node();
    t.dp.set_node_addrs(&[NODE, GATEWAY]).unwrap();
    // The node answering a LAN host at its address on the network (the bridge's).
    let answer = Pkt::tcp(GATEWAY, 22, REMOTE, 40000, SYN | ACK).build();
    assert_eq!(t.run("uplink_egress", &answer), (TC_ACT_OK, answer.clone()));
    assert!(t.dp.flow_entries().unwrap().is_empty());
}

#[test]
fn udp_is_translated_and_a_zero_checksum_stays_zero() {
    let mut t = node();
    let with = Pkt::udp(CLIENT, 40000, NODE, 5353).build();
    let (_, out) = t.run("uplink_ingress", &with);
    assert_eq!(dst_of(&out), (CONTAINER, 53));
    assert_checksums_valid(&out);
    assert_ne!(&out[l4_csum_offset(UDP)..l4_csum_offset(UDP) + 2], [0, 0]);

    let without = Pkt {
        udp_no_csum: true,
        ..Pkt::udp(CLIENT, 40001, NODE, 5353)
    }
    .build();
    let (_, out) = t.run("uplink_ingress", &without);
    assert_eq!(dst_of(&out), (CONTAINER, 53));
    assert_eq!(
        &out[l4_csum_offset(UDP)..l4_csum_offset(UDP) + 2],
        [0, 0],
        "no checksum means none"
    );
    assert_checksums_valid(&out);
}

#[test]
fn malformed_and_foreign_packets_pass_unchanged() {
    let mut t = node();
    let good = Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build();
    let mut options = good.clone();
    options[ETH] = 0x46; // IHL 6: IP options
    // (Fragments are translated with their datagram: datapath_fragments.)
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut ipv6_in_v4_frame = good.clone();
    ipv6_in_v4_frame[ETH] = 0x65;
    // TCP header cut short. (An IPv4 frame shorter than an IPv4 header cannot be crafted:
    // BPF_PROG_TEST_RUN itself refuses it with EINVAL.)
    let truncated = good[..ETH + 20 + 10].to_vec();
    // Found by the fuzz loop: ports and checksum present, urgent pointer missing.
    let almost = good[..ETH + 20 + 18].to_vec();
    let mut icmp = good.clone();
    icmp[ETH + 9] = 1;

    for (what, p) in [
        ("IP options", options),
        ("ARP", arp),
        ("version 6 in an IPv4 frame", ipv6_in_v4_frame),
        ("truncated TCP", truncated),
        ("TCP header two bytes short", almost),
        ("other protocol", icmp),
    ] {
        let (verdict, out) = t.run("uplink_ingress", &p);
        assert_eq!(verdict, TC_ACT_OK, "{what}");
        assert_eq!(out, p, "{what} must pass unchanged");
    }
    assert!(t.dp.flow_entries().unwrap().is_empty());
}

#[test]
fn counters_name_every_verdict() {
    let mut t = node();
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build(),
    );
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, ACK).build(),
    );
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 9999, SYN).build(),
    );
    let counters = t.dp.counters().unwrap();
    let get = |reason: &str| {
        counters
            .iter()
            .find(|(h, r, _)| format!("{h:?}") == "UplinkIngress" && r.name() == reason)
            .map(|(_, _, c)| c.packets)
            .unwrap()
    };
    assert_eq!(get("dnat_new_flow"), 1);
    assert_eq!(get("translated_established"), 1);
    assert_eq!(get("pass_no_match"), 1);
}

#[test]
fn a_source_port_another_flow_holds_is_remapped_into_the_snat_range() {
    let mut t = node();
    let other = Ipv4Addr::new(172, 17, 0, 3);
    t.run(
        "uplink_egress",
        &Pkt::tcp(CONTAINER, 5555, REMOTE, 9000, SYN).build(),
    );

    let (verdict, out) = t.run(
        "uplink_egress",
        &Pkt::tcp(other, 5555, REMOTE, 9000, SYN).build(),
    );

    assert_eq!(verdict, TC_ACT_OK);
    let (src, port) = src_of(&out);
    assert_eq!(src, NODE);
    assert!((61000..=65535).contains(&port), "SNAT port {port} in range");
    assert_checksums_valid(&out);
    let reply = Pkt::tcp(REMOTE, 9000, NODE, port, SYN | ACK).build();
    let (_, back) = t.run("uplink_ingress", &reply);
    assert_eq!(dst_of(&back), (other, 5555));
}

/// Runs `f` on a thread of its own, in a network namespace of its own (BPF_PROG_TEST_RUN
/// and the programs' socket lookups use the caller's namespace).
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which ends with the closure.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn a_source_port_a_node_socket_uses_is_remapped_into_the_snat_range() {
    in_fresh_netns(|| {
        let mut t = node();
        let _tcp = std::net::TcpListener::bind("0.0.0.0:5556").unwrap();
        let _udp = std::net::UdpSocket::bind("0.0.0.0:5557").unwrap();
        for pkt in [
            Pkt::tcp(CONTAINER, 5556, REMOTE, 9000, SYN),
            Pkt::udp(CONTAINER, 5557, REMOTE, 9000),
        ] {
            let (verdict, out) = t.run("uplink_egress", &pkt.build());
            assert_eq!(verdict, TC_ACT_OK);
            let (src, port) = src_of(&out);
            assert_eq!(src, NODE);
            assert!(
                (61000..=65535).contains(&port),
                "proto {}: the node's socket keeps port {}; got {port}",
                pkt.proto,
                pkt.sport
            );
        }
        // A port no socket of the node uses is kept.
        let (_, out) = t.run(
            "uplink_egress",
            &Pkt::udp(CONTAINER, 5558, REMOTE, 9000).build(),
        );
        assert_eq!(src_of(&out), (NODE, 5558));
    });
}

#[test]
fn nothing_reaches_a_container_from_the_network_unasked_unless_its_network_is_routed() {
    let mut t = node();
    let unasked = [
        Pkt::tcp(CLIENT, 40000, CONTAINER, 22, SYN).build(),
        Pkt::udp(CLIENT, 40000, CONTAINER, 7777).build(),
        icmp_echo(CLIENT, CONTAINER, 7, true),
    ];
    for p in &unasked {
        assert_eq!(t.run("uplink_ingress", p).0, TC_ACT_SHOT);
    }
    let (verdict, _, _) = t.run_xdp(&unasked[0]);
    assert_eq!(verdict, XDP_DROP, "XDP drops it before an skb exists");
    let mut gre = Pkt::udp(CLIENT, 40000, CONTAINER, 7777).build();
    gre[ETH + 9] = 47;
    assert_eq!(
        t.run("uplink_ingress", &gre).0,
        TC_ACT_SHOT,
        "another protocol"
    );
    assert_eq!(
        t.run("uplink_ingress", &as_fragment(gre.clone(), 0x2000)).0,
        TC_ACT_SHOT,
        "a fragment of it"
    );
    assert!(count(&t, "UplinkIngress", "drop_not_published") >= 5);
    // The gateway is the node's: the stack's business.
    let to_gateway = Pkt::tcp(CLIENT, 40000, GATEWAY, 22, SYN).build();
    t.dp.set_node_addrs(&[NODE, GATEWAY]).unwrap();
    assert_eq!(
        t.run("uplink_ingress", &to_gateway),
        (TC_ACT_OK, to_gateway)
    );

    // Routed on purpose: the network's containers may be reached directly.
    t.dp.set_network(
        "172.17.0.0/16".parse().unwrap(),
        Some(network(NETWORK_TAG, netd_common::maps::NETWORK_ROUTED)),
    )
    .unwrap();
    for p in &unasked {
        assert_eq!(t.run("uplink_ingress", p), (TC_ACT_OK, p.clone()));
    }
}

#[test]
fn replies_to_a_network_without_masquerade_are_let_in_as_a_tracked_flow() {
    let mut t = node();
    t.dp.set_network(
        "172.17.0.0/16".parse().unwrap(),
        Some(network(NETWORK_TAG, 0)),
    )
    .unwrap();
    let out = Pkt::tcp(CONTAINER, 5555, REMOTE, 9000, SYN).build();
    assert_eq!(
        t.run("uplink_egress", &out),
        (TC_ACT_OK, out.clone()),
        "not translated"
    );
    let reply = Pkt::tcp(REMOTE, 9000, CONTAINER, 5555, SYN | ACK).build();
    assert_eq!(t.run("uplink_ingress", &reply), (TC_ACT_OK, reply.clone()));
    assert_eq!(count(&t, "UplinkEgress", "tracked_new_flow"), 1);
    let stranger = Pkt::tcp(REMOTE, 9000, CONTAINER, 5556, SYN | ACK).build();
    assert_eq!(t.run("uplink_ingress", &stranger).0, TC_ACT_SHOT);
}

#[test]
fn what_leaves_with_another_source_mac_than_the_uplinks_is_never_translated() {
    // A macvlan container on the uplink sends through the uplink's transmit path, with its
    // own MAC, whatever source address it forges (here: a bridge container's).
    let uplink_mac = [0x02, 0, 0, 0, 0, 0x09];
    let mut t = node();
    t.dp.set_node_config(&NodeSettings {
        uplink_mac,
        ..node_settings(false)
    })
    .unwrap();
    let forged = Pkt::tcp(CONTAINER, 5555, REMOTE, 9000, SYN).build();
    assert_eq!(&forged[6..12], &CONTAINER_MAC);
    let (verdict, out) = t.run("uplink_egress", &forged);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, forged, "passed untouched");
    assert!(t.dp.flow_entries().unwrap().is_empty(), "no flow made");

    let mut from_node = forged.clone();
    from_node[6..12].copy_from_slice(&uplink_mac);
    let (_, out) = t.run("uplink_egress", &from_node);
    assert_eq!(
        src_of(&out),
        (NODE, 5555),
        "the node's own frames are masqueraded"
    );
}
