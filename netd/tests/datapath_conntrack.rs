//! The connection table's life cycle under BPF_PROG_TEST_RUN: a tuple reused after its
//! connection closed, and a sweep racing with a flow that comes back to life (the kernel's
//! `flow_sweep` judges each candidate again; the data path repairs a flow that lost a half
//! while it was idle).

mod support;

use netd::conntrack;
use netd_common::flow::{FlowEntry, FlowKey};
use support::*;

const FIN: u8 = 0x01;

/// Both halves of the table's only flow, forward half first.
fn the_flow(t: &mut TestDatapath) -> (FlowKey, FlowEntry, FlowEntry) {
    let entries = t.dp.flow_entries().unwrap();
    assert_eq!(entries.len(), 2, "one flow, two halves");
    let (key, entry, _) = entries
        .iter()
        .find(|(k, _, _)| k.src_addr == netd_common::user::addr_be(CLIENT))
        .copied()
        .unwrap();
    let partner = entries
        .iter()
        .find(|(k, _, _)| *k == key.partner(&entry))
        .map(|(_, e, _)| *e)
        .unwrap();
    (key, entry, partner)
}

/// Sweep the expired halves, each in its own map; how many went.
fn sweep(t: &mut TestDatapath, expired: &[(conntrack::FlowTable, FlowKey)], now: u64) -> usize {
    conntrack::FlowTable::BOTH
        .iter()
        .map(|table| {
            let keys: Vec<FlowKey> = expired
                .iter()
                .filter(|(t, _)| t == table)
                .map(|(_, k)| *k)
                .collect();
            t.dp.sweep_flows(*table, &keys, now).unwrap()
        })
        .sum()
}

fn handshake(t: &mut TestDatapath) {
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build(),
    );
    t.run(
        "uplink_egress",
        &Pkt::tcp(CONTAINER, 80, CLIENT, 40000, SYN | ACK).build(),
    );
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, ACK).build(),
    );
}

#[test]
fn a_connection_reusing_a_closed_tuple_gets_the_timeouts_of_a_live_one() {
    let mut t = standard_node();
    handshake(&mut t);
    let (key, a, b) = the_flow(&mut t);
    assert_eq!(
        conntrack::timeout(&key, &a, Some(&b)),
        conntrack::TCP_ESTABLISHED_TIMEOUT
    );
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, FIN | ACK).build(),
    );
    t.run(
        "uplink_egress",
        &Pkt::tcp(CONTAINER, 80, CLIENT, 40000, FIN | ACK).build(),
    );
    let (key, a, b) = the_flow(&mut t);
    assert_eq!(
        conntrack::timeout(&key, &a, Some(&b)),
        conntrack::TCP_CLOSING_TIMEOUT
    );

    // The client opens a new connection from the same port.
    handshake(&mut t);

    let (key, a, b) = the_flow(&mut t);
    assert_eq!(
        conntrack::timeout(&key, &a, Some(&b)),
        conntrack::TCP_ESTABLISHED_TIMEOUT,
        "the new connection is not aged out as a closing one (seen {:#x} / {:#x})",
        a.seen,
        b.seen
    );
}

#[test]
fn a_sweep_spares_a_flow_that_came_back_to_life_after_its_snapshot() {
    let mut t = standard_node();
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build(),
    );
    let snapshot = t.dp.flow_entries().unwrap();
    let last = latest_seen(&snapshot);
    // A sweep that judges the snapshot one nanosecond past the SYN timeout.
    let now = last + conntrack::TCP_SYN_TIMEOUT + 1;
    let expired = conntrack::expired(&snapshot, now);
    assert_eq!(expired.len(), 2);

    // Meanwhile the client sends again (the data path refreshes at most once a second).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build(),
    );

    let removed = sweep(&mut t, &expired, now);
    assert_eq!(removed, 0, "neither half of the refreshed flow is removed");
    assert_eq!(t.dp.flow_entries().unwrap().len(), 2);

    let later = now + 2 * 1_000_000_000;
    let removed = sweep(&mut t, &expired, later);
    assert_eq!(removed, 2, "once idle past its timeout it goes");
}

#[test]
fn a_sweep_removes_more_than_one_batch_of_expired_flows() {
    let mut t = standard_node();
    // 300 flows: 600 halves, three batches of the sweep program.
    for port in 0..300 {
        t.run(
            "uplink_ingress",
            &Pkt::tcp(CLIENT, 30000 + port, NODE, 8080, SYN).build(),
        );
    }
    let snapshot = t.dp.flow_entries().unwrap();
    assert_eq!(snapshot.len(), 600);
    let last = latest_seen(&snapshot);
    let now = last + conntrack::TCP_SYN_TIMEOUT + 1;
    let expired = conntrack::expired(&snapshot, now);

    assert_eq!(sweep(&mut t, &expired, now), 600);
    assert!(t.dp.flow_entries().unwrap().is_empty());
}

#[test]
fn a_masqueraded_flow_that_lost_its_reply_half_while_idle_is_created_again() {
    let mut t = standard_node();
    let out = |flags| Pkt::tcp(CONTAINER, 5555, REMOTE, 9000, flags).build();
    let back = |flags| Pkt::tcp(REMOTE, 9000, NODE, 5555, flags).build();
    t.run("uplink_egress", &out(SYN));
    t.run("uplink_ingress", &back(SYN | ACK));
    t.run("uplink_egress", &out(FIN | ACK));
    t.run("uplink_ingress", &back(FIN | ACK));
    let entries = t.dp.flow_entries().unwrap();
    assert_eq!(entries.len(), 2);
    let (first, entry, _) = entries
        .iter()
        .copied()
        .find(|(k, _, _)| k.src_addr == netd_common::user::addr_be(CONTAINER))
        .unwrap();
    // The collector removes the reply half on another CPU just as the container reuses
    // its port, after the data path's once-a-second refresh.
    t.dp.remove_flows(&[first.partner(&entry)]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let (verdict, syn) = t.run("uplink_egress", &out(SYN));

    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(src_of(&syn), (NODE, 5555));
    assert_eq!(
        t.dp.flow_entries().unwrap().len(),
        2,
        "the flow is whole again, not a first half whose replies find nothing"
    );
    let (verdict, reply) = t.run("uplink_ingress", &back(SYN | ACK));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        dst_of(&reply),
        (CONTAINER, 5555),
        "the reply is translated back"
    );
    assert_checksums_valid(&reply);
}

#[test]
fn each_direction_of_a_flow_counts_its_packets_and_bytes() {
    let mut t = standard_node();
    handshake(&mut t);
    let data = Pkt::tcp(CLIENT, 40000, NODE, 8080, ACK).build();
    for _ in 0..5 {
        t.run("uplink_ingress", &data);
    }
    let reply = Pkt::tcp(CONTAINER, 80, CLIENT, 40000, ACK).build();
    t.run("uplink_egress", &reply);
    let (_, forward, back) = the_flow(&mut t);
    // IP lengths, as Linux's conntrack counts bytes: the frames less their Ethernet header.
    let ip_len = |frame: &[u8]| (frame.len() - 14) as u64;
    // SYN, ACK, five more.
    assert_eq!(forward.packets, 7, "{forward:?}");
    assert_eq!(forward.bytes, 7 * ip_len(&data));
    // SYN-ACK and one reply.
    assert_eq!(back.packets, 2, "{back:?}");
    assert_eq!(back.bytes, 2 * ip_len(&reply));
}

#[test]
fn flows_of_the_previous_layout_are_adopted_with_counts_from_zero() {
    use netd_common::flow::FLOW_ENTRY_V1_SIZE;
    let mut t = standard_node();
    handshake(&mut t);
    let (key, entry, _) = the_flow(&mut t);
    let in_table =
        t.dp.flow_entries()
            .unwrap()
            .iter()
            .find(|(k, _, _)| *k == key)
            .unwrap()
            .2;
    // The previous layout's table of the same kind, pinned beside the current ones,
    // holding a flow the current tables do not have (its tuple moved to another client
    // port).
    let (name, kind) = match in_table {
        conntrack::FlowTable::Confirmed => ("NETD_FLOWS_V1", "hash"),
        conntrack::FlowTable::Unconfirmed => ("NETD_PENDING_V1", "lru_hash"),
    };
    let old = t.bpffs().join(name);
    let created = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&old)
        .args(["type", kind, "key", "16", "value", "40", "entries", "64"])
        .args(["name", name])
        .status()
        .unwrap();
    assert!(created.success(), "bpftool map create");
    let moved = FlowKey {
        src_port: 41000u16.to_be(),
        ..key
    };
    let mut v1: [u8; FLOW_ENTRY_V1_SIZE] = bytemuck::bytes_of(&entry)[..FLOW_ENTRY_V1_SIZE]
        .try_into()
        .unwrap();
    v1[20..24].copy_from_slice(&[0xab; 4]);
    {
        let data = aya::maps::MapData::from_pin(&old).unwrap();
        let mut map: aya::maps::HashMap<_, FlowKey, [u8; FLOW_ENTRY_V1_SIZE]> =
            aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap();
        map.insert(moved, v1, 0).unwrap();
        // One the current table has already: kept as it is.
        map.insert(key, [0xee; FLOW_ENTRY_V1_SIZE], 0).unwrap();
        // (The old layout's padding where the packet count is now: not taken for one.)
    }
    let bpffs = t.bpffs().to_path_buf();
    assert_eq!(t.dp.adopt_old_flows(&bpffs).unwrap(), 1);
    assert!(!old.exists(), "the previous table's pin is removed");
    let entries = t.dp.flow_entries().unwrap();
    let adopted = entries.iter().find(|(k, _, _)| *k == moved).unwrap().1;
    assert_eq!(
        adopted,
        FlowEntry {
            packets: 0,
            bytes: 0,
            ..entry
        }
    );
    let kept = entries.iter().find(|(k, _, _)| *k == key).unwrap().1;
    assert_eq!(kept, entry);
}
