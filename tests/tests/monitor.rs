//! `netd monitor`: the data path's events as they happen. An isolation drop, a published
//! port's flow beginning, its translations and its end reach the monitor within a second,
//! with the right tuples and containers; filters keep to one container; `netd conntrack`
//! shows the flow's packets and bytes; a monitor that goes away stops the programs'
//! events. Run under every data-path combination (the events come from TC and XDP).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netd_tests::{
    Daemon, EchoServer, HeldConnection, Proto, Sandbox, addr, craft, echo_fails, echo_once,
    monitor::{expect, unix_now, wait_attached},
    require_root,
    stream::Stream,
};
use serde_json::Value;

fn field<'a>(e: &'a Value, name: &str) -> &'a str {
    e[name].as_str().unwrap_or("")
}

#[test]
fn monitor_shows_drops_flows_their_translations_and_ends_within_a_second() -> Result<()> {
    require_root();
    let sb = Sandbox::new("mo")?;
    let d = Daemon::start(&sb.node, Sandbox::UPLINK)?;
    d.cli_ok(&["network", "create", "other"])?;
    let web = d.run_idle_on("web", "netd0", &["8080:80"])?;
    let lone = d.run_idle_on("lone", "other", &[])?;
    let _server = EchoServer::start(&web.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80))?;
    let mut mon = Stream::start(&d, &["monitor", "--format", "json"])?;
    wait_attached(&mon, &lone, web.ip)?;

    // An isolation drop: lone tries web.
    let started = unix_now();
    assert!(echo_fails(&lone.netns, Proto::Tcp, addr(web.ip, 80))?);
    let dropped = expect(&mon, Duration::from_secs(1), |e| {
        e["type"] == "drop" && e["reason"] == "drop_network_isolation"
    })?;
    assert_eq!(field(&dropped, "hook"), "EndpointIngress", "{dropped}");
    assert_eq!(field(&dropped, "container"), "lone", "{dropped}");
    assert_eq!(field(&dropped, "network"), "other", "{dropped}");
    assert_eq!(field(&dropped, "proto"), "tcp");
    assert!(
        field(&dropped, "src").starts_with(&format!("{}:", lone.ip)),
        "{dropped}"
    );
    assert_eq!(field(&dropped, "dst"), format!("{}:80", web.ip));
    let at = dropped["time_nano"].as_u64().context("time")? as u128;
    assert!(at >= started && at - started < 1_000_000_000, "{dropped}");
    mon.drain(Duration::from_millis(300));

    // A connection to the published port: its first packet, its translations both ways,
    // and its end, all within a second.
    let client = echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080))?;
    let done = Instant::now();
    let mut events = Vec::new();
    while !events.iter().any(|e: &Value| e["type"] == "flow-end") {
        let left = Duration::from_secs(1).saturating_sub(done.elapsed());
        match mon.next(left) {
            Ok(e) => events.push(e),
            Err(_) => bail!("no flow-end within a second: {events:#?}"),
        }
    }
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind)
            .cloned()
            .with_context(|| format!("no {kind}: {events:#?}"))
    };
    let published = format!("{}:8080", Sandbox::NODE_ADDR);
    let new = find("flow-new")?;
    assert_eq!(field(&new, "origin"), "dnat", "{new}");
    assert_eq!(field(&new, "container"), "web", "{new}");
    assert_eq!(field(&new, "src"), client.to_string(), "{new}");
    assert_eq!(field(&new, "dst"), published, "{new}");
    assert_eq!(
        field(&new, "translated_dst"),
        format!("{}:80", web.ip),
        "{new}"
    );
    let end = find("flow-end")?;
    assert_eq!(field(&end, "reason"), "fin", "{end}");
    assert_eq!(field(&end, "container"), "web", "{end}");
    assert_eq!(field(&end, "src"), client.to_string(), "{end}");
    assert_eq!(field(&end, "dst"), published, "{end}");
    // Handshake, data and its echo, two FINs: seven packets at least.
    let packets = end["packets"].as_u64().context("packets")?;
    assert!(packets >= 7, "{end}");
    assert!(end["bytes"].as_u64().unwrap_or(0) >= packets * 40, "{end}");
    assert!(end["duration_ns"].as_u64().unwrap_or(0) > 0, "{end}");
    // The replies' translations: from the container, written as from the published port.
    assert!(
        events.iter().any(|e| e["type"] == "trace"
            && e["reason"] == "dnat_reply"
            && field(e, "src") == format!("{}:80", web.ip)
            && field(e, "translated_src") == published),
        "no trace of a reply: {events:#?}"
    );
    // The connection table agrees with the end's counts.
    let flows: Value = serde_json::from_str(&d.cli_ok(&["conntrack", "--format", "json"])?)?;
    let flow = flows
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| field(f, "original").starts_with(&client.to_string()))
        .with_context(|| format!("no flow of {client}: {flows}"))?;
    let counted = flow["packets_original"].as_u64().unwrap_or(0)
        + flow["packets_reply"].as_u64().unwrap_or(0);
    assert!(counted >= packets, "{flow} against {end}");

    // One container's drops only: web's monitor sees nothing of lone's.
    let mut web_only = Stream::start(
        &d,
        &[
            "monitor",
            "--type",
            "drop",
            "--container",
            "web",
            "--format",
            "json",
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    assert!(echo_fails(&lone.netns, Proto::Tcp, addr(web.ip, 80))?);
    assert!(web_only.drain(Duration::from_millis(500)).is_empty());
    assert!(web_only.interrupt()?.success());

    // A connection still open when its container is removed ends with it.
    let held = HeldConnection::open(&sb.ext.path(), addr(Sandbox::NODE_ADDR, 8080))?;
    let local = held.local_addr()?;
    expect(&mon, Duration::from_secs(1), |e| {
        e["type"] == "flow-new" && field(e, "src") == local.to_string()
    })?;
    d.cli_ok(&["rm", "-f", "web"])?;
    let gone = expect(&mon, Duration::from_secs(1), |e| {
        e["type"] == "flow-end" && field(e, "src") == local.to_string()
    })?;
    assert_eq!(field(&gone, "reason"), "removed", "{gone}");
    assert_eq!(field(&gone, "container"), "web", "{gone}");
    assert!(gone["packets"].as_u64().unwrap_or(0) >= 3, "{gone}");
    drop(held);

    // The monitors are interrupted: the programs are asked for nothing more, at once.
    assert!(mon.interrupt()?.success());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let monitor = &d.info()?["monitor"];
        if monitor["sessions"] == 0 && monitor["types"] == "" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the monitors stayed attached: {monitor}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = d.info()?["monitor"]["events_sent"].as_u64();
    craft::send_frames(
        &lone.netns,
        "eth0",
        vec![craft::spoofed(lone.ip, web.ip, 2)],
    )?;
    assert!(echo_fails(&lone.netns, Proto::Tcp, addr(web.ip, 80))?);
    assert_eq!(d.info()?["monitor"]["events_sent"].as_u64(), sent);
    Ok(())
}
