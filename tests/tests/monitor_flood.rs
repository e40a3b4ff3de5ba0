//! `netd monitor` under a flood: the kernel's per-CPU rate limit holds the events back,
//! every one held back is counted lost (shown events plus lost equal what happened,
//! exactly), no packet is lost for it, and the traffic of a traced published port goes on
//! whole. A monitor killed without a word is detached when its lease runs out. The events
//! come from the same code whatever the data path: run once.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use netd_tests::{
    Daemon, EchoServer, Proto, Sandbox, addr, craft, echo_once, monitor::wait_attached,
    require_root, stream::Stream,
};
use serde_json::Value;

const RATE: u64 = 50;
const FLOOD: u64 = 3000;

#[test]
fn a_flood_loses_events_counted_and_no_packets() -> Result<()> {
    require_root();
    let sb = Sandbox::new("mf")?;
    let d = Daemon::start(&sb.node, Sandbox::UPLINK)?;
    d.cli_ok(&["network", "create", "other"])?;
    let web = d.run_idle_on("web", "netd0", &["8080:80/udp"])?;
    let lone = d.run_idle_on("lone", "other", &[])?;
    let _server = EchoServer::start(&web.netns, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 80))?;
    let rate = RATE.to_string();
    let mon = Stream::start(
        &d,
        &[
            "monitor",
            "--type",
            "drop,trace",
            "--rate",
            &rate,
            "--format",
            "json",
        ],
    )?;
    wait_attached(&mon, &lone, web.ip)?;
    let dropped_before = d.counter("EndpointIngress", "drop_spoofed_source")?;
    let lost_before = d.info()?["monitor"]["events_lost"].as_u64().unwrap_or(0);

    // The flood: frames the endpoint program drops, each an event offered.
    let frames = (0..FLOOD)
        .map(|i| craft::spoofed(lone.ip, web.ip, (i % 250) as u8))
        .collect();
    let started = Instant::now();
    craft::send_frames(&lone.netns, "eth0", frames)?;
    // Meanwhile, a traced published port answers every datagram.
    for _ in 0..200 {
        echo_once(&sb.ext.path(), Proto::Udp, addr(Sandbox::NODE_ADDR, 8080))?;
    }
    let lines = mon.drain(Duration::from_millis(1500));
    let seconds = started.elapsed().as_secs() + 1;

    let events: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let shown = events
        .iter()
        .filter(|e| e["type"] == "drop" && e["reason"] == "drop_spoofed_source")
        .count() as u64;
    let lost: u64 = events
        .iter()
        .filter(|e| e["type"] == "lost")
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum();
    // Every frame was dropped, as without a monitor: none more, none less.
    let dropped = d.counter("EndpointIngress", "drop_spoofed_source")? - dropped_before;
    assert_eq!(dropped, FLOOD);
    // The limit held (per CPU and second), and what it held back is counted: the drops
    // shown and the lost events are the flood's drops and the traces, exactly (the
    // traces shown are what is left over).
    let cpus = std::thread::available_parallelism()?.get() as u64;
    let traces = events.iter().filter(|e| e["type"] == "trace").count() as u64;
    assert!(
        shown + traces <= RATE * cpus * (seconds + 1),
        "{shown} drops and {traces} traces shown in {seconds} s"
    );
    // The programs' count of lost events (the monitor shows it as it polls, so what it
    // showed by now may lag behind).
    let lost_now = d.info()?["monitor"]["events_lost"].as_u64().unwrap_or(0);
    let lost_all = lost_now - lost_before;
    assert!(
        lost > 0 && lost <= lost_all,
        "shown lost {lost}, counted {lost_all}"
    );
    let translated = 200 * 2;
    let accounted = shown + traces + lost_all;
    assert!(
        (FLOOD..=FLOOD + translated).contains(&accounted),
        "{shown} drops and {traces} traces shown + {lost_all} lost, for {FLOOD} drops and at most {translated} translations"
    );

    // Killed without a word, the monitor is detached when its lease runs out.
    drop(mon);
    let deadline = Instant::now() + Duration::from_secs(12);
    while d.info()?["monitor"]["sessions"] != 0 {
        if Instant::now() > deadline {
            bail!("a killed monitor stayed attached: {}", d.info()?["monitor"]);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(d.info()?["monitor"]["types"], "");
    Ok(())
}
