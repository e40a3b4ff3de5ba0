//! The per-packet cost of netd's programs alone, under BPF_PROG_TEST_RUN on crafted
//! packets: a new flow to a published port (DNAT), a new masqueraded flow (SNAT), a packet
//! of an established flow, a miss (a packet netd does not own), and a container's packet
//! at its host-side veth with and without the per-endpoint counters. `cargo xtask bench`
//! runs it and puts the figures in its report.
//!
//! New flows are measured one packet per run (each packet a different flow, so every one
//! really creates its flow); established and miss with the kernel's `repeat`, which
//! reports the mean per repetition. Each case is measured in several rounds; the samples
//! are the rounds' means in ns per packet.
//!
//! `cargo bench -p netd --bench datapath_cost -- [--quick] [--out FILE]` (as root).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{net::Ipv4Addr, time::Duration};

use aya::programs::{TestRun, TestRunOptions};
use netd_common::monitor::{MONITOR_DROP, MONITOR_FLOW, MONITOR_TRACE, MonitorConfig};
use serde_json::json;
use support::*;

struct Args {
    quick: bool,
    out: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = it.next(),
            // cargo bench passes --bench to harness-less benches.
            _ => {}
        }
    }
    a
}

/// One run of `program` on `packet`, `repeat` times: verdict, packet out, mean duration.
fn run(
    t: &mut TestDatapath,
    program: &str,
    packet: &[u8],
    repeat: u32,
) -> (u32, Vec<u8>, Duration) {
    let mut out = vec![0u8; packet.len() + 256];
    let result =
        t.dp.program(program)
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                repeat,
                ..Default::default()
            })
            .unwrap();
    out.truncate(result.data_size_out as usize);
    (result.return_value, out, result.duration)
}

/// The `i`th address of 10.`net`.0.0/16, skipping .0 and .255 host bytes.
fn nth_addr(net: u8, i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, net, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn mean_ns(durations: &[Duration]) -> f64 {
    durations.iter().map(Duration::as_nanos).sum::<u128>() as f64 / durations.len() as f64
}

fn main() {
    let args = args();
    let (rounds, flows_per_round, repeat) = if args.quick {
        (3, 1_000, 20_000)
    } else {
        (5, 10_000, 200_000)
    };
    let mut t = standard_node();
    let mut report = serde_json::Map::new();
    let mut record = |case: &str, samples: Vec<f64>| {
        println!(
            "datapath_cost: {case:<12} {:>8.1} ns/packet (rounds: {})",
            samples.iter().sum::<f64>() / samples.len() as f64,
            samples
                .iter()
                .map(|s| format!("{s:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        report.insert(case.into(), json!({ "samples": samples }));
    };

    // A new flow to a published port: each packet from another client.
    let mut dnat = Vec::new();
    for round in 0..rounds {
        let times: Vec<Duration> = (0..flows_per_round)
            .map(|i| {
                let client = nth_addr(100 + round as u8, i);
                let syn = Pkt::tcp(client, 40000, NODE, 8080, SYN).build();
                let (verdict, out, took) = run(&mut t, "uplink_ingress", &syn, 1);
                assert_eq!((verdict, dst_of(&out)), (TC_ACT_OK, (CONTAINER, 80)));
                took
            })
            .collect();
        dnat.push(mean_ns(&times));
    }
    record("dnat_new", dnat);

    // A new masqueraded flow: each packet to another destination (SNAT ports are per
    // destination).
    let mut snat = Vec::new();
    for round in 0..rounds {
        let times: Vec<Duration> = (0..flows_per_round)
            .map(|i| {
                let remote = nth_addr(150 + round as u8, i);
                let syn = Pkt::tcp(CONTAINER, 5555, remote, 443, SYN).build();
                let (verdict, out, took) = run(&mut t, "uplink_egress", &syn, 1);
                assert_eq!((verdict, src_of(&out).0), (TC_ACT_OK, NODE));
                took
            })
            .collect();
        snat.push(mean_ns(&times));
    }
    record("snat_new", snat);

    // An established flow: the container's reply of a published connection whose
    // handshake completed and whose server acknowledged the client's data, so the flow is
    // in the confirmed table, as a long-lived connection's is.
    let from_client = |flags| Pkt::tcp(CLIENT, 41000, NODE, 8080, flags).build();
    let from_server = |flags| Pkt::tcp(CONTAINER, 80, CLIENT, 41000, flags).build();
    run(&mut t, "uplink_ingress", &from_client(SYN), 1);
    run(&mut t, "uplink_egress", &from_server(SYN | ACK), 1);
    run(&mut t, "uplink_ingress", &from_client(ACK), 1);
    let reply = from_server(ACK);
    run(&mut t, "uplink_egress", &reply, 1);
    let confirmed = t.dp.flow_entries().unwrap();
    assert!(
        confirmed
            .iter()
            .any(|(_, _, table)| *table == netd::conntrack::FlowTable::Confirmed),
        "the measured flow is confirmed"
    );
    let established = |t: &mut TestDatapath| -> Vec<f64> {
        (0..rounds)
            .map(|_| {
                let (verdict, out, took) = run(t, "uplink_egress", &reply, repeat);
                assert_eq!((verdict, src_of(&out)), (TC_ACT_OK, (NODE, 8080)));
                took.as_nanos() as f64
            })
            .collect()
    };
    record("established", established(&mut t));
    // The same with `netd monitor` attached (its default rate limit; no reader, so the
    // ring fills and the rest is counted lost, as under a flood): drops and flows (an
    // established packet is neither: a few loads to tell), then every translation.
    for (case, types) in [
        ("established_monitored", MONITOR_DROP | MONITOR_FLOW),
        (
            "established_traced",
            MONITOR_DROP | MONITOR_FLOW | MONITOR_TRACE,
        ),
    ] {
        let monitor = MonitorConfig {
            types,
            sample: 1,
            rate: netd::monitor::DEFAULT_RATE,
            _pad: 0,
        };
        t.dp.set_monitor(&monitor).unwrap();
        record(case, established(&mut t));
    }
    t.dp.set_monitor(&MonitorConfig::default()).unwrap();
    let counts = t.dp.monitor_counts().unwrap();
    assert!(
        counts.sent + counts.lost > 0,
        "the traced runs offered events"
    );

    // A miss: a packet to a port nobody published, left to the stack unchanged.
    let miss_pkt = Pkt::tcp(CLIENT, 42000, NODE, 9999, SYN).build();
    let miss: Vec<f64> = (0..rounds)
        .map(|_| {
            let (verdict, out, took) = run(&mut t, "uplink_ingress", &miss_pkt, repeat);
            assert_eq!((verdict, &out), (TC_ACT_OK, &miss_pkt));
            took.as_nanos() as f64
        })
        .collect();
    record("miss", miss);

    // What a container sends, at its host-side veth (a new connection to a host beyond
    // the uplink, left to the stack: guard, policy, the published-port lookup), with the
    // per-endpoint counters and without them (the entry removed: the program then skips
    // them), and what is delivered to it (the egress program, which only counts).
    let outgoing = Pkt::tcp(CONTAINER, 43000, REMOTE, 443, SYN).build();
    let endpoint_out = |t: &mut TestDatapath| -> Vec<f64> {
        (0..rounds)
            .map(|_| {
                let (verdict, out, took) = run(t, "endpoint_ingress", &outgoing, repeat);
                assert_eq!((verdict, &out), (TC_ACT_OK, &outgoing));
                took.as_nanos() as f64
            })
            .collect()
    };
    let counted = endpoint_out(&mut t);
    let sent_before = t.dp.endpoint_counters().unwrap()[&LO].sent.packets;
    assert!(sent_before >= u64::from(repeat), "the runs were counted");
    let endpoint_in: Vec<f64> = (0..rounds)
        .map(|_| {
            let (verdict, _, took) = run(&mut t, "endpoint_egress", &outgoing, repeat);
            assert_eq!(verdict, TC_ACT_OK);
            took.as_nanos() as f64
        })
        .collect();
    remove_endpoint_counters(&t);
    let uncounted = endpoint_out(&mut t);
    assert!(!t.dp.endpoint_counters().unwrap().contains_key(&LO));
    record("endpoint_out", counted);
    record("endpoint_out_uncounted", uncounted);
    record("endpoint_in", endpoint_in);

    if let Some(path) = args.out {
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("datapath_cost: written to {path}");
    }
}

/// Remove the endpoint behind loopback's counters, through the pinned map (the daemon
/// only removes them with the endpoint).
fn remove_endpoint_counters(t: &TestDatapath) {
    let pin = t.bpffs().join(netd_common::maps::ENDPOINT_COUNTERS);
    let map = aya::maps::Map::PerCpuHashMap(aya::maps::MapData::from_pin(pin).unwrap());
    let mut counters: aya::maps::PerCpuHashMap<_, u32, netd_common::counters::EndpointCounters> =
        aya::maps::PerCpuHashMap::try_from(map).unwrap();
    counters.remove(&LO).unwrap();
}
