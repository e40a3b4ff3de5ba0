//! The fast paths under BPF_PROG_TEST_RUN: the uplink's XDP program translates exactly as
//! the TC program does (its own checksum code against the kernel's helpers, byte for
//! byte) and leaves its note for TC; with the fast path on, TC ingress redirects into the
//! container as a router would forward.

mod support;

use support::*;

#[test]
fn xdp_dnats_a_new_connection_to_a_published_port_exactly_as_tc_does() {
    for pkt in [
        Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN),
        Pkt::udp(CLIENT, 40001, NODE, 5353),
        Pkt {
            udp_no_csum: true,
            ..Pkt::udp(CLIENT, 40002, NODE, 5353)
        },
    ] {
        let frame = pkt.build();
        let mut xdp = standard_node();
        let (verdict, meta, out) = xdp.run_xdp(&frame);
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(note(&meta), translated_note(LO), "the container's veth");
        assert_checksums_valid(&out);
        let l4 = l4_csum_offset(pkt.proto);
        if pkt.udp_no_csum {
            assert_eq!(&out[l4..l4 + 2], &[0, 0], "no checksum stays no checksum");
        }

        let mut tc = standard_node();
        let (_, tc_out) = tc.run("uplink_ingress", &frame);
        assert_eq!(out, tc_out, "XDP and TC write the same bytes");
        assert_eq!(xdp.dp.flow_entries().unwrap().len(), 2, "both halves");
        assert_eq!(count(&xdp, "UplinkXdp", "dnat_new_flow"), 1);
    }
}

#[test]
fn xdp_translates_established_flows_and_replies_to_masqueraded_ones() {
    let mut t = standard_node();
    t.run_xdp(&Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build());
    let (verdict, meta, out) = t.run_xdp(&Pkt::tcp(CLIENT, 40000, NODE, 8080, ACK).build());
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(note(&meta), translated_note(LO));
    assert_eq!(dst_of(&out), (CONTAINER, 80));
    assert_checksums_valid(&out);
    assert_eq!(count(&t, "UplinkXdp", "translated_established"), 1);

    // A container's connection out, masqueraded by TC at the uplink's egress...
    let (_, out) = t.run(
        "uplink_egress",
        &Pkt::tcp(CONTAINER, 45000, REMOTE, 443, SYN).build(),
    );
    let (node, port) = src_of(&out);
    assert_eq!(node, NODE);
    // ...and the reply, reverse-translated in XDP.
    let reply = Pkt::tcp(REMOTE, 443, NODE, port, SYN | ACK).build();
    let (verdict, meta, out) = t.run_xdp(&reply);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(note(&meta), translated_note(LO));
    assert_eq!(dst_of(&out), (CONTAINER, 45000));
    assert_checksums_valid(&out);
    assert_eq!(count(&t, "UplinkXdp", "snat_reply"), 1);
}

/// `frame` as a local socket hands it to a veth: CHECKSUM_PARTIAL, its L4 checksum field
/// seeded with the pseudo-header sum for the device to complete.
fn as_partial(mut frame: Vec<u8>) -> Vec<u8> {
    let l4_len = (frame.len() - ETH - 20) as u16;
    let mut pseudo = frame[ETH + 12..ETH + 20].to_vec();
    pseudo.extend_from_slice(&[0, frame[ETH + 9]]);
    pseudo.extend_from_slice(&l4_len.to_be_bytes());
    let seed = !checksum(&pseudo, 0);
    let off = l4_csum_offset(frame[ETH + 9]);
    frame[off..off + 2].copy_from_slice(&seed.to_be_bytes());
    frame
}

#[test]
fn xdp_leaves_partial_checksums_to_tc() {
    let mut t = standard_node();
    for frame in [
        as_partial(Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build()),
        as_partial(Pkt::udp(CLIENT, 40001, NODE, 5353).build()),
    ] {
        let (verdict, meta, out) = t.run_xdp(&frame);
        assert_eq!(verdict, XDP_PASS);
        assert!(meta.is_empty());
        assert_eq!(out, frame, "untouched: TC's helpers translate it");
    }
    assert_eq!(count(&t, "UplinkXdp", "pass_checksum_partial"), 2);
    assert!(t.dp.flow_entries().unwrap().is_empty());
}

#[test]
fn xdp_leaves_what_it_does_not_own_untouched_and_unmarked() {
    let mut t = standard_node();
    for frame in [
        Pkt::tcp(CLIENT, 40000, NODE, 9999, SYN).build(),
        Pkt::tcp(CLIENT, 40000, REMOTE, 8080, SYN).build(),
        icmp_echo(CLIENT, NODE, 7, true),
    ] {
        let (verdict, meta, out) = t.run_xdp(&frame);
        assert_eq!(verdict, XDP_PASS);
        assert!(meta.is_empty(), "no note on a packet XDP did not translate");
        assert_eq!(out, frame);
    }
    assert!(t.dp.flow_entries().unwrap().is_empty());
}

/// A frame to the node's MAC as the test device (loopback) sees it: the all-zero address.
fn to_this_host(mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&[0; 6]);
    frame
}

#[test]
fn with_the_fast_path_tc_redirects_into_the_container_as_a_router_forwards() {
    let mut t = standard_node();
    t.dp.set_node_config(&node_settings(true)).unwrap();
    let syn = to_this_host(Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build());

    let (verdict, out) = t.run("uplink_ingress", &syn);

    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(dst_of(&out), (CONTAINER, 80));
    assert_eq!(&out[..6], &CONTAINER_MAC, "to the container's MAC");
    assert_eq!(&out[6..12], &GATEWAY_MAC, "from its gateway's");
    assert_eq!(out[ETH + 8], syn[ETH + 8] - 1, "TTL decremented");
    assert_checksums_valid(&out);
    assert_eq!(count(&t, "FastPath", "redirect_to_container"), 1);
}

#[test]
fn the_fast_path_leaves_expiring_foreign_and_unrouted_packets_to_the_stack() {
    let mut t = standard_node();
    t.dp.set_node_config(&node_settings(true)).unwrap();

    // TTL 1: the stack answers with time exceeded, as a router does.
    let mut syn = to_this_host(Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build());
    syn[ETH + 8] = 1;
    let sum = checksum(
        &[&syn[ETH..ETH + 10], &[0, 0], &syn[ETH + 12..ETH + 20]].concat(),
        0,
    );
    syn[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
    let (verdict, out) = t.run("uplink_ingress", &syn);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out[ETH + 8], 1);
    assert_eq!(dst_of(&out), (CONTAINER, 80), "translated all the same");
    assert_eq!(count(&t, "FastPath", "stack_ttl_expiring"), 1);

    // Not addressed to this host at layer 2: the stack drops it, as before.
    let other = Pkt::tcp(CLIENT, 40001, NODE, 8080, SYN).build();
    let (verdict, _) = t.run("uplink_ingress", &other);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(count(&t, "FastPath", "stack_not_for_this_host"), 1);

    // The endpoint behind the flow's veth no longer owns the address (re-wired): the
    // stack routes it.
    t.dp.register_endpoint(LO, &endpoint_at(REMOTE, 0)).unwrap();
    let syn = to_this_host(Pkt::tcp(CLIENT, 40003, NODE, 8080, SYN).build());
    let (verdict, out) = t.run("uplink_ingress", &syn);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        out[ETH + 8],
        syn[ETH + 8],
        "TTL untouched: the stack forwards it"
    );
    assert_eq!(count(&t, "FastPath", "pass_no_match"), 1);
    t.dp.register_endpoint(LO, &endpoint_info(0)).unwrap();

    // Fast path off: translated and passed, nothing counted.
    t.dp.set_node_config(&node_settings(false)).unwrap();
    let syn = to_this_host(Pkt::tcp(CLIENT, 40002, NODE, 8080, SYN).build());
    let (verdict, _) = t.run("uplink_ingress", &syn);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(count(&t, "FastPath", "redirect_to_container"), 0);
}

#[test]
fn container_frames_not_sent_to_the_gateway_are_bridged_not_fast_pathed() {
    let mut t = standard_node();
    t.dp.set_node_config(&node_settings(true)).unwrap();
    // To another container's MAC (it may route for this one): the bridge's business.
    let frame = Pkt::tcp(CONTAINER, 45000, REMOTE, 443, SYN).build();
    let (verdict, out) = t.run("endpoint_ingress", &frame);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        out, frame,
        "untouched: the uplink translates it if it gets there"
    );
    let fast_path: u64 =
        t.dp.counters()
            .unwrap()
            .iter()
            .filter(|(h, _, _)| format!("{h:?}") == "FastPath")
            .map(|(_, _, c)| c.packets)
            .sum();
    assert_eq!(
        fast_path, 0,
        "bridged traffic is none of the fast path's business"
    );
    assert!(t.dp.flow_entries().unwrap().is_empty());
}
