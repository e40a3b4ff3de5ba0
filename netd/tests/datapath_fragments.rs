//! Fragmented datagrams under BPF_PROG_TEST_RUN: the first fragment is translated like
//! any packet and its ports remembered; the following ones are translated from them
//! (addresses only); one that comes before its first is dropped and counted.

mod support;

use support::*;

/// The first fragment of a UDP datagram to the published port 5353, and a following
/// fragment of it (offset 1480 bytes, the rest of the datagram's bytes).
fn datagram(sport: u16) -> (Vec<u8>, Vec<u8>) {
    let first = as_fragment(Pkt::udp(CLIENT, sport, NODE, 5353).build(), 0x2000);
    let mut following = as_fragment(Pkt::udp(CLIENT, sport, NODE, 5353).build(), 185);
    // Whatever the following fragment carries is payload, not a UDP header.
    for b in following.iter_mut().skip(ETH + 20) {
        *b = 0xab;
    }
    (first, following)
}

#[test]
fn the_fragments_of_a_datagram_to_a_published_port_are_translated_with_it() {
    let mut t = standard_node();
    let (first, following) = datagram(40000);

    let (verdict, out) = t.run("uplink_ingress", &first);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(dst_of(&out), (CONTAINER, 53), "the first fragment, DNATed");
    assert_checksums_valid(&out);

    let (verdict, out) = t.run("uplink_ingress", &following);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        &out[ETH + 16..ETH + 20],
        &CONTAINER.octets(),
        "its address follows"
    );
    assert_eq!(checksum(&out[ETH..ETH + 20], 0), 0, "IPv4 header checksum");
    assert_eq!(
        out[ETH + 20..],
        following[ETH + 20..],
        "its payload is untouched"
    );
    assert_eq!(out[..ETH + 10], following[..ETH + 10]);
    assert_eq!(out[ETH + 12..ETH + 16], following[ETH + 12..ETH + 16]);
}

#[test]
fn a_following_fragment_before_its_first_is_dropped_and_counted() {
    let mut t = standard_node();
    let (_, following) = datagram(40001);
    let (verdict, _) = t.run("uplink_ingress", &following);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(count(&t, "UplinkIngress", "drop_fragment_before_first"), 1);
}

#[test]
fn the_fragments_of_a_masqueraded_datagram_are_translated_both_ways() {
    let mut t = standard_node();
    let first = as_fragment(Pkt::udp(CONTAINER, 5000, REMOTE, 53).build(), 0x2000);
    let following = as_fragment(Pkt::udp(CONTAINER, 5000, REMOTE, 53).build(), 185);

    let (verdict, out) = t.run("uplink_egress", &first);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(src_of(&out), (NODE, 5000));
    let (verdict, out) = t.run("uplink_egress", &following);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(&out[ETH + 12..ETH + 16], &NODE.octets());
    assert_eq!(checksum(&out[ETH..ETH + 20], 0), 0);

    // The reply's fragments come back to the node's address and go to the container.
    let reply_first = as_fragment(Pkt::udp(REMOTE, 53, NODE, 5000).build(), 0x2000);
    let reply_following = as_fragment(Pkt::udp(REMOTE, 53, NODE, 5000).build(), 185);
    let (_, out) = t.run("uplink_ingress", &reply_first);
    assert_eq!(dst_of(&out), (CONTAINER, 5000));
    let (verdict, out) = t.run("uplink_ingress", &reply_following);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(&out[ETH + 16..ETH + 20], &CONTAINER.octets());
}

#[test]
fn xdp_leaves_fragments_to_tc() {
    let mut t = standard_node();
    let (first, _) = datagram(40002);
    let (verdict, meta, out) = t.run_xdp(&first);
    assert_eq!(verdict, XDP_PASS);
    assert!(meta.is_empty());
    assert_eq!(out, first);
}
