//! Per-endpoint counters: what each container sent, received and had dropped, kept by
//! the programs and served as `netd_endpoint_*` metrics labelled with the container and
//! its network. Run under every data-path combination: the fast path delivers into
//! containers past their host-side veth, so it counts them itself.

use std::{collections::HashMap, net::Ipv4Addr, time::Duration};

use anyhow::Result;
use netd_tests::{
    Daemon, EchoServer, Proto, Sandbox, addr, craft, echo_fails, echo_once, prometheus::http,
    require_root, udp_echo_sized,
};

const METRICS: &str = "127.0.0.1:9464";

/// The daemon's `netd_endpoint_*` samples: series (name and labels) to value.
fn endpoint_samples(sb: &Sandbox) -> Result<HashMap<String, u64>> {
    let body = http(&sb.node.path(), METRICS.parse()?, "GET", "/metrics", &[])?.body;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("netd_endpoint_"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect())
}

fn traffic(s: &HashMap<String, u64>, what: &str, container: &str, network: &str, dir: &str) -> u64 {
    let series = format!(
        "netd_endpoint_{what}_total{{container=\"{container}\",network=\"{network}\",direction=\"{dir}\"}}"
    );
    s.get(&series).copied().unwrap_or(0)
}

fn drops(s: &HashMap<String, u64>, container: &str, network: &str, reason: &str) -> u64 {
    let series = format!(
        "netd_endpoint_drops_total{{container=\"{container}\",network=\"{network}\",reason=\"{reason}\"}}"
    );
    s.get(&series).copied().unwrap_or(0)
}

#[test]
fn each_container_counts_what_it_sent_received_and_had_dropped() -> Result<()> {
    require_root();
    let sb = Sandbox::new("ec")?;
    let mut d = Daemon::start_with(&sb.node, Sandbox::UPLINK, &["--metrics-addr", METRICS])?;
    d.cli_ok(&["network", "create", "other"])?;
    let web = d.run_idle_on("web", "netd0", &["8080:80/udp", "8080:80"])?;
    let lone = d.run_idle_on("lone", "other", &[])?;
    let _udp = EchoServer::start(&web.netns, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 80))?;
    let _tcp = EchoServer::start(&web.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80))?;
    // Every endpoint has its series from the start, at zero or more.
    let before = endpoint_samples(&sb)?;
    for (c, n) in [("web", "netd0"), ("lone", "other")] {
        let series = format!(
            "netd_endpoint_packets_total{{container=\"{c}\",network=\"{n}\",direction=\"in\"}}"
        );
        assert!(before.contains_key(&series), "no {series}: {before:?}");
    }

    // Datagrams to a published port: each delivered to web (the neighbour discovery of
    // the node may add a frame or two), each answered.
    const N: u64 = 10;
    const PAYLOAD: u64 = 300;
    for _ in 0..N {
        udp_echo_sized(
            &sb.ext.path(),
            addr(Sandbox::NODE_ADDR, 8080),
            PAYLOAD as usize,
        )?;
    }
    let after = endpoint_samples(&sb)?;
    let delta = |s: &HashMap<String, u64>, what, c, n, dir| {
        traffic(s, what, c, n, dir) - traffic(&before, what, c, n, dir)
    };
    let got_in = delta(&after, "packets", "web", "netd0", "in");
    assert!(
        (N..=N + 3).contains(&got_in),
        "web received {got_in} packets for {N} datagrams"
    );
    assert!(delta(&after, "bytes", "web", "netd0", "in") >= N * (PAYLOAD + 42));
    let sent = delta(&after, "packets", "web", "netd0", "out");
    assert!(
        (N..=N + 3).contains(&sent),
        "web sent {sent} packets for {N} answers"
    );
    assert!(delta(&after, "bytes", "web", "netd0", "out") >= N * (PAYLOAD + 42));
    // None of it reached lone: at most a neighbour frame of the node (ARP refreshing its
    // entry for lone, seen once in six runs), never the datagrams.
    let lone_in = delta(&after, "packets", "lone", "other", "in");
    assert!(lone_in <= 2, "lone received {lone_in} packets");
    // And over TCP.
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080))?;
    // The connection's last packets may still be on their way. (Whether nothing of what
    // lone sends below reaches web is the attack tests' business: web's own neighbour
    // traffic with the node, ARP, may count as received meanwhile.)
    std::thread::sleep(Duration::from_millis(500));
    let tcp = endpoint_samples(&sb)?;
    assert!(
        traffic(&tcp, "packets", "web", "netd0", "in")
            >= traffic(&after, "packets", "web", "netd0", "in") + 3
    );

    // What a container sends that is dropped counts as sent, and as dropped by reason:
    // exactly, with frames no background traffic makes (a spoofed source) ...
    let spoofed: Vec<Vec<u8>> = (0..7).map(|i| craft::spoofed(lone.ip, web.ip, i)).collect();
    craft::send_frames(&lone.netns, "eth0", spoofed)?;
    // ... and an isolation drop, as a connection attempt makes it.
    assert!(echo_fails(&lone.netns, Proto::Tcp, addr(web.ip, 80))?);
    std::thread::sleep(Duration::from_millis(200));
    let dropped = endpoint_samples(&sb)?;
    assert_eq!(drops(&dropped, "lone", "other", "drop_spoofed_source"), 7);
    assert!(drops(&dropped, "lone", "other", "drop_network_isolation") >= 1);
    assert_eq!(drops(&dropped, "web", "netd0", "drop_network_isolation"), 0);
    let lone_out = traffic(&dropped, "packets", "lone", "other", "out")
        - traffic(&before, "packets", "lone", "other", "out");
    assert!(lone_out >= 8, "lone sent {lone_out}");

    // A restart keeps the counts; a removed container's go with it.
    d.stop(libc::SIGTERM)?;
    d.restart()?;
    let restarted = endpoint_samples(&sb)?;
    assert!(
        traffic(&restarted, "packets", "web", "netd0", "in")
            >= traffic(&dropped, "packets", "web", "netd0", "in")
    );
    assert_eq!(drops(&restarted, "lone", "other", "drop_spoofed_source"), 7);
    d.cli_ok(&["rm", "-f", "lone"])?;
    let removed = endpoint_samples(&sb)?;
    assert!(
        removed.keys().all(|k| !k.contains("container=\"lone\"")),
        "{removed:?}"
    );
    // A new container on the same name starts from zero.
    d.run_idle_on("lone", "other", &[])?;
    let fresh = endpoint_samples(&sb)?;
    assert_eq!(drops(&fresh, "lone", "other", "drop_spoofed_source"), 0);
    Ok(())
}
