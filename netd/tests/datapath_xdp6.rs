//! The uplink's XDP program over IPv6 under BPF_PROG_TEST_RUN: `uplink_xdp` hands IPv6 to
//! `uplink_xdp6` (through `XDP_CALLS`), which translates published ports' connections
//! (DNAT66), established flows and masquerade's replies exactly as `uplink_ingress6`
//! does (its own checksum code against the kernel's helpers, byte for byte) and leaves
//! its note for TC; a port published for a container with IPv4 only goes on to
//! `uplink_xdp_nat46`, which translates NAT46 exactly as `uplink_nat46` does (the frame
//! IPv4 and 20 bytes shorter). What they do not translate they leave to TC untouched and
//! unmarked: ICMPv6, fragments, partial checksums, NAT46 behind an extension header, what
//! no flow or port claims.

mod support;

use support::*;

/// A node with CONTAINER6's TCP 80 published on 8080 and its UDP 53 on 5353.
fn published_node() -> TestDatapath {
    let mut t = nat6_node();
    publish_8080(&mut t);
    let dns = netd::ports::PortBinding {
        proto: netd::ports::Proto::Udp,
        container_port: 53,
        host_port: 5353,
        ..binding_8080()[1]
    };
    t.dp.publish(&dns, Some(CONTAINER), Some(CONTAINER6), LO)
        .unwrap();
    t
}

#[test]
fn xdp_dnats_a_new_ipv6_connection_to_a_published_port_exactly_as_tc_does() {
    let udp_no_csum = {
        let mut f = udp6(BEYOND6, 50003, NODE6, 5353);
        f[ETH + 46..ETH + 48].fill(0);
        f
    };
    let cases = [
        ("TCP", tcp6(BEYOND6, 50000, NODE6, 8080, 0x02)),
        ("UDP", udp6(BEYOND6, 50001, NODE6, 5353)),
        (
            "behind a Destination Options header",
            frame6(
                BEYOND6,
                NODE6,
                &dest_opts(TCP6),
                DEST_OPTS,
                TCP6,
                &tcp6_segment(50002, 8080, 0x02),
            ),
        ),
        ("UDP without a checksum", udp_no_csum),
    ];
    // One node for XDP and one for TC: each case is a connection of its own.
    let (mut xdp, mut tc) = (published_node(), published_node());
    for (i, (what, frame)) in cases.into_iter().enumerate() {
        let (verdict, meta, out) = xdp.run_xdp(&frame);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(note(&meta), translated_note(LO), "{what}: its veth");

        let (_, tc_out) = tc.run("uplink_ingress", &frame);
        assert_ne!(tc_out, frame, "{what}: TC translates it");
        assert_eq!(out, tc_out, "{what}: XDP and TC write the same bytes");
        let made = i as u64 + 1;
        assert_eq!(
            xdp.dp.flow_entries6().unwrap().len() as u64,
            2 * made,
            "{what}: both halves"
        );
        assert_eq!(count(&xdp, "UplinkXdp", "dnat_new_flow"), made, "{what}");
    }
    // Byte for byte what the client's stack would have sent the container.
    let (_, _, out) = xdp.run_xdp(&tcp6(BEYOND6, 50009, NODE6, 8080, 0x02));
    assert_eq!(out, tcp6(BEYOND6, 50009, CONTAINER6, 80, 0x02));
}

#[test]
fn xdp_translates_established_ipv6_flows_and_replies_to_masqueraded_ones() {
    let mut t = published_node();
    t.run_xdp(&tcp6(BEYOND6, 50000, NODE6, 8080, 0x02));
    let (verdict, meta, out) = t.run_xdp(&tcp6(BEYOND6, 50000, NODE6, 8080, 0x10));
    assert_eq!((verdict, note(&meta)), (XDP_PASS, translated_note(LO)));
    assert_eq!(out, tcp6(BEYOND6, 50000, CONTAINER6, 80, 0x10));
    assert_eq!(count(&t, "UplinkXdp", "translated_established"), 1);

    // A container's datagram out, masqueraded by TC at the uplink's egress...
    let (_, sent) = t.run("uplink_egress", &udp6(CONTAINER6, 5000, BEYOND6, 53));
    let port = u16::from_be_bytes([sent[ETH + 40], sent[ETH + 41]]);
    // ...and the reply, translated back in XDP.
    let (verdict, meta, out) = t.run_xdp(&udp6(BEYOND6, 53, NODE6, port));
    assert_eq!((verdict, note(&meta)), (XDP_PASS, translated_note(LO)));
    assert_eq!(out, udp6(BEYOND6, 53, CONTAINER6, 5000));
    assert_eq!(count(&t, "UplinkXdp", "snat_reply"), 1);
}

/// `frame` (IPv6, no extension headers) as a local socket hands it to a veth:
/// CHECKSUM_PARTIAL, its L4 checksum field seeded with the pseudo-header sum.
fn as_partial6(mut frame: Vec<u8>) -> Vec<u8> {
    let proto = frame[ETH + 6];
    let l4_len = (frame.len() - ETH - 40) as u32;
    let mut pseudo = frame[ETH + 8..ETH + 40].to_vec();
    pseudo.extend_from_slice(&l4_len.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    let seed = !checksum(&pseudo, 0);
    let off = ETH + 40 + if proto == TCP6 { 16 } else { 6 };
    frame[off..off + 2].copy_from_slice(&seed.to_be_bytes());
    frame
}

#[test]
fn xdp_leaves_to_tc_what_it_does_not_translate_over_ipv6() {
    let mut t = published_node();
    let [first, following] = udp6_fragments(BEYOND6, 50010, NODE6, 5353, 7);
    let echo = frame6(BEYOND6, NODE6, &[], 0, ICMP6, &echo6(128, 7, 1));
    for (what, frame) in [
        ("ICMPv6", with_l4_checksum6(echo, ETH + 40, ICMP6)),
        ("a first fragment", first),
        ("a following fragment", following),
        (
            "a partial checksum",
            as_partial6(tcp6(BEYOND6, 50011, NODE6, 8080, 0x02)),
        ),
        (
            "a port not published",
            tcp6(BEYOND6, 50013, NODE6, 9999, 0x02),
        ),
        ("an echo reply", {
            let reply = frame6(BEYOND6, NODE6, &[], 0, ICMP6, &echo6(129, 7, 1));
            with_l4_checksum6(reply, ETH + 40, ICMP6)
        }),
        ("to a container", tcp6(BEYOND6, 50015, CONTAINER6, 80, 0x02)),
    ] {
        let (verdict, meta, out) = t.run_xdp(&frame);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(note(&meta), None, "{what}: no note");
        assert_eq!(out, frame, "{what}: untouched");
    }
    assert!(
        t.dp.flow_entries6().unwrap().is_empty(),
        "no flow made or counted"
    );
    assert_eq!(count(&t, "UplinkXdp", "pass_checksum_partial"), 1);

    // A new connection from a source of the node's own networks is forged: dropped here
    // as TC drops it.
    let forged = tcp6(OTHER_CONTAINER6, 50016, NODE6, 8080, 0x02);
    assert_eq!(t.run_xdp(&forged).0, XDP_DROP);
    assert_eq!(t.run("uplink_ingress", &forged).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "UplinkXdp", "drop_spoofed_source"), 1);
}

/// `published_node` with NAT46 on (pool 198.18.0.0/16, the uplink's MTU 1500) and
/// CONTAINER's TCP 80 and UDP 53 (IPv4 only) published on `[::]:8081` and `[::]:5354`.
fn nat46_node() -> TestDatapath {
    let mut t = published_node();
    t.dp.set_nat46_pool(Some("198.18.0.0/16".parse().unwrap()))
        .unwrap();
    t.dp.set_nat46_uplink_mtu(1500).unwrap();
    let tcp = netd::ports::PortBinding {
        host_port: 8081,
        ..binding_8080_on(std::net::Ipv6Addr::UNSPECIFIED)
    };
    let udp = netd::ports::PortBinding {
        proto: netd::ports::Proto::Udp,
        container_port: 53,
        host_port: 5354,
        ..tcp
    };
    for binding in [tcp, udp] {
        t.dp.publish(&binding, Some(CONTAINER), None, LO).unwrap();
    }
    t
}

/// The IPv4 source a NAT46 frame was given: the client's pool address.
fn pool_source(out: &[u8]) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(out[ETH + 12], out[ETH + 13], out[ETH + 14], out[ETH + 15])
}

#[test]
fn xdp_translates_nat46_exactly_as_tc_does() {
    // Jumbo: 8940 asked, 1440 (the uplink's MTU less 60) given.
    let syn = syn6_with_options(BEYOND6, 50020, NODE6, 8081, &[2, 4, 0x22, 0xec]);
    let cases = [
        ("a SYN, its MSS clamped", syn, "nat46_new_flow"),
        (
            "an established segment",
            tcp6(BEYOND6, 50020, NODE6, 8081, 0x10),
            "nat46_translated",
        ),
        (
            "a first UDP datagram",
            udp6(BEYOND6, 50021, NODE6, 5354),
            "nat46_new_flow",
        ),
    ];
    let (mut xdp, mut tc) = (nat46_node(), nat46_node());
    for (what, frame, reason) in cases {
        let before = count(&xdp, "UplinkXdp", reason);
        let (verdict, meta, out) = xdp.run_xdp(&frame);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(note(&meta), translated_note(LO), "{what}: its veth");
        assert_eq!(out[12..14], [0x08, 0x00], "{what}: an IPv4 frame");
        assert_eq!(out.len(), frame.len() - 20, "{what}: 20 bytes shorter");
        assert_eq!(count(&xdp, "UplinkXdp", reason), before + 1, "{what}");

        let (_, tc_out) = tc.run("uplink_ingress", &frame);
        assert_eq!(out, tc_out, "{what}: XDP and TC write the same bytes");
    }
    let mss_at = ETH + 20 + 22;
    let (_, _, first) = xdp.run_xdp(&tcp6(BEYOND6, 50020, NODE6, 8081, 0x10));
    assert_eq!(
        pool_source(&first).octets()[..2],
        [198, 18],
        "a pool address"
    );
    let mapped = xdp.dp.nat46_clients_now().unwrap();
    assert_eq!(mapped.len(), 1, "the client mapped once");
    assert_eq!(mapped[0].client, BEYOND6);
    assert_eq!(mapped[0].addr, pool_source(&first));
    assert_eq!(
        xdp.dp.flow_entries6().unwrap().len(),
        4,
        "both halves of the TCP and the UDP flow"
    );
    // Beyond TC's bytes: the MSS asked for, the checksums of what XDP wrote.
    let syn = syn6_with_options(BEYOND6, 50022, NODE6, 8081, &[2, 4, 0x22, 0xec]);
    let (_, _, syn_out) = xdp.run_xdp(&syn);
    assert_eq!(
        u16::from_be_bytes([syn_out[mss_at], syn_out[mss_at + 1]]),
        1440,
        "the MSS clamped"
    );
    let csum_at = l4_csum_offset(TCP);
    assert_eq!(
        u16::from_be_bytes([syn_out[csum_at], syn_out[csum_at + 1]]),
        l4_checksum(&syn_out),
        "its TCP checksum right"
    );
    assert_eq!(
        checksum(&syn_out[ETH..ETH + 20], 0),
        0,
        "its header checksum"
    );
}

#[test]
fn xdp_leaves_to_tc_the_nat46_packets_it_does_not_translate() {
    let mut t = nat46_node();
    let [first, following] = udp6_fragments(BEYOND6, 50030, NODE6, 5354, 9);
    let echo = frame6(BEYOND6, NODE6, &[], 0, ICMP6, &echo6(128, 7, 1));
    for (what, frame) in [
        (
            "behind a Destination Options header",
            frame6(
                BEYOND6,
                NODE6,
                &dest_opts(TCP6),
                DEST_OPTS,
                TCP6,
                &tcp6_segment(50031, 8081, 0x02),
            ),
        ),
        ("a first fragment", first),
        ("a following fragment", following),
        ("ICMPv6", with_l4_checksum6(echo, ETH + 40, ICMP6)),
        (
            "a partial checksum",
            as_partial6(tcp6(BEYOND6, 50032, NODE6, 8081, 0x02)),
        ),
    ] {
        let (verdict, meta, out) = t.run_xdp(&frame);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(note(&meta), None, "{what}: no note");
        assert_eq!(out, frame, "{what}: untouched");
    }
    assert!(t.dp.flow_entries6().unwrap().is_empty(), "no flow made");
    assert!(
        t.dp.nat46_clients_now().unwrap().is_empty(),
        "no client mapped"
    );

    // A new connection from a source of the node's own networks is forged: dropped here
    // as TC drops it.
    let forged = tcp6(OTHER_CONTAINER6, 50034, NODE6, 8081, 0x02);
    assert_eq!(t.run_xdp(&forged).0, XDP_DROP);
    assert_eq!(t.run("uplink_ingress", &forged).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "UplinkXdp", "drop_spoofed_source"), 1);
}

/// A packet XDP translated that reaches TC without a note (the kernel gives XDP no frame
/// metadata, or the driver kept none; a test run never passes the metadata on), now
/// addressed to its container: TC takes it by its flow, delivered and counted as
/// `translated_in_xdp`, for IPv4, IPv6 and NAT46 alike; a packet sent to the container
/// directly, with no flow behind it, is still dropped.
#[test]
fn tc_takes_what_xdp_translated_without_a_note_by_its_flow() {
    let cases = [
        (
            "IPv4",
            standard_node(),
            Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build(),
        ),
        (
            "IPv6",
            published_node(),
            tcp6(BEYOND6, 50000, NODE6, 8080, 0x02),
        ),
        (
            "NAT46",
            nat46_node(),
            tcp6(BEYOND6, 50020, NODE6, 8081, 0x02),
        ),
    ];
    for (what, mut t, frame) in cases {
        let (verdict, _, out) = t.run_xdp(&frame);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_ne!(out, frame, "{what}: translated in XDP");
        let (verdict, _) = t.run("uplink_ingress", &out);
        assert_eq!(verdict, TC_ACT_OK, "{what}: left to the stack to route");
        assert_eq!(count(&t, "UplinkIngress", "translated_in_xdp"), 1, "{what}");
    }
    // To the container's address straight from the network: no flow's, dropped.
    let mut t = standard_node();
    let direct = Pkt::tcp(CLIENT, 40001, CONTAINER, 80, SYN).build();
    assert_eq!(t.run("uplink_ingress", &direct).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "UplinkIngress", "drop_not_published"), 1);
    assert_eq!(count(&t, "UplinkIngress", "translated_in_xdp"), 0);
}
