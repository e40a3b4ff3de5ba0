//! Prometheus metrics: `netd daemon --metrics-addr` serves every family in the Prometheus
//! text format (promtool finds nothing to report) and in OpenMetrics when asked; the real
//! Prometheus, run in the node's namespace, scrapes the daemon, and after traffic its
//! query API shows a published port's connection, an isolation drop and the API calls
//! that made the containers.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context, Result};
use netd_tests::{
    Daemon, EchoServer, Proto, Sandbox, addr, echo_fails, echo_once,
    prometheus::{Prometheus, http},
    require_root, udp_echo_from,
};

const METRICS: &str = "127.0.0.1:9464";

#[test]
fn prometheus_scrapes_the_daemon_and_sees_its_traffic_drops_and_calls() -> Result<()> {
    require_root();
    let sb = Sandbox::new("mt")?;
    // The connection table's figures are the collector's, as of its last sweep.
    let d = Daemon::start_with(
        &sb.node,
        Sandbox::UPLINK,
        &["--metrics-addr", METRICS, "--conntrack-gc-interval", "2"],
    )?;
    let node = sb.node.path();
    let metrics = METRICS.parse()?;

    // The exposition as a scraper without preferences gets it, and as promtool reads it.
    let plain = http(&node, metrics, "GET", "/metrics", &[])?;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for family in [
        "# TYPE netd_datapath_packets_total counter",
        "# TYPE netd_datapath_bytes_total counter",
        "netd_table_capacity{table=\"flows\"}",
        "netd_flow_capacity ",
        "netd_build_info{version=",
        "netd_start_time_seconds ",
        "netd_task_runs_total{task=\"reconcile\",result=\"ok\"} 1",
    ] {
        assert!(plain.body.contains(family), "{family}: {}", plain.body);
    }
    let lint = sb
        .node
        .exec_stdin(&["promtool", "check", "metrics"], &plain.body)
        .context("promtool check metrics")?;
    let said =
        String::from_utf8_lossy(&lint.stdout).to_string() + &String::from_utf8_lossy(&lint.stderr);
    assert!(said.trim().is_empty(), "promtool: {said}");
    // OpenMetrics when asked; nothing but /metrics, and only to read.
    let om = http(
        &node,
        metrics,
        "GET",
        "/metrics",
        &["Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5"],
    )?;
    assert!(
        om.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        om.headers
    );
    assert!(om.body.ends_with("# EOF\n"));
    assert_eq!(http(&node, metrics, "GET", "/", &[])?.status, 404);
    assert_eq!(http(&node, metrics, "POST", "/metrics", &[])?.status, 405);

    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/prometheus");
    let rules = docs.join("netd-alerts.yml");
    let checked = sb
        .node
        .exec(&["promtool", "check", "rules", &rules.to_string_lossy()])?;
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("SUCCESS"),
        "{checked:?}"
    );
    let prometheus = Prometheus::start(&sb.node, metrics, "127.0.0.1:9090".parse()?, Some(&rules))?;
    prometheus.wait_for("up{job=\"netd\"}", 1.0, Duration::from_secs(10))?;

    // A published port's connection: a DNAT flow counted, seen by Prometheus.
    d.cli_ok(&["network", "create", "other"])?;
    let web = d.run_idle_on("web", "netd0", &["8080:80"])?;
    let lone = d.run_idle_on("lone", "other", &["8081:90"])?;
    let _server = EchoServer::start(&web.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80))?;
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080))?;
    let dnat = prometheus.wait_for(
        "sum(netd_datapath_packets_total{reason=\"dnat_new_flow\"})",
        1.0,
        Duration::from_secs(10),
    )?;
    // ... and web's own counter (tests/endpoint_counters.rs counts exactly).
    prometheus.wait_for(
        "netd_endpoint_packets_total{container=\"web\",network=\"netd0\",direction=\"in\"}",
        3.0,
        Duration::from_secs(10),
    )?;
    // An isolation drop: a container of another network tries web's address; counted
    // under its reason, node-wide and for lone.
    assert!(echo_fails(&lone.netns, Proto::Tcp, addr(web.ip, 80))?);
    prometheus.wait_for(
        "netd_datapath_packets_total{hook=\"EndpointIngress\",reason=\"drop_network_isolation\"}",
        1.0,
        Duration::from_secs(10),
    )?;
    prometheus.wait_for(
        "netd_endpoint_drops_total{container=\"lone\",network=\"other\",reason=\"drop_network_isolation\"}",
        1.0,
        Duration::from_secs(10),
    )?;
    // SNAT port pressure: three masqueraded flows from web to one destination hold three
    // ports of the range.
    let _outside = EchoServer::start(
        &sb.ext.path(),
        Proto::Udp,
        addr(Ipv4Addr::UNSPECIFIED, 7000),
    )?;
    for port in [41001, 41002, 41003] {
        udp_echo_from(&web.netns, port, addr(Sandbox::EXT_ADDR, 7000))?;
    }
    prometheus.wait_for("netd_snat_ports_in_use_max", 3.0, Duration::from_secs(15))?;
    let ratio = prometheus.query("netd_snat_port_usage_ratio")?;
    assert!(
        ratio.first().is_some_and(|(_, v)| *v > 0.0 && *v < 0.01),
        "{ratio:?}"
    );
    // What made it: the API calls by route and status, with their latency.
    prometheus.wait_for(
        "netd_api_requests_total{route=\"POST /containers\",code=\"200\"}",
        2.0,
        Duration::from_secs(10),
    )?;
    prometheus.wait_for(
        "netd_api_request_duration_seconds_count{route=\"POST /containers\"}",
        2.0,
        Duration::from_secs(10),
    )?;
    prometheus.wait_for("netd_containers", 2.0, Duration::from_secs(10))?;
    prometheus.wait_for("netd_published_ports", 2.0, Duration::from_secs(10))?;
    // A refused call counts under its status, its name never a label.
    assert!(!d.cli(&["rm", "nosuch"])?.status.success());
    let refused = prometheus.wait_for(
        "netd_api_requests_total{route=\"DELETE /containers/{}\",code=\"404\"}",
        1.0,
        Duration::from_secs(10),
    )?;
    assert_eq!(refused, 1.0);
    assert!(
        prometheus
            .query("netd_api_requests_total{route=~\".*nosuch.*\"}")?
            .is_empty()
    );
    // The alert rules evaluate against these series without error; every query of the
    // dashboard is valid PromQL and names only metrics the daemon serves.
    std::thread::sleep(Duration::from_secs(2));
    let evaluated = prometheus.rules()?;
    assert_eq!(evaluated.len(), 8, "{evaluated:?}");
    for (name, health, error) in &evaluated {
        assert_eq!(health, "ok", "rule {name}: {error}");
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(docs.join("netd-dashboard.json"))?)?;
    let exposition = http(&node, metrics, "GET", "/metrics", &[])?.body;
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().context("no panels")? {
        for target in panel["targets"].as_array().context("no targets")? {
            let expr = target["expr"].as_str().context("no expr")?;
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("netd_"))
            {
                assert!(
                    exposition.contains(&format!("\n{name}")),
                    "{}: {name} is not served",
                    panel["title"]
                );
            }
            let runnable = expr
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m");
            prometheus
                .query(&runnable)
                .with_context(|| format!("{}", panel["title"]))?;
            queries += 1;
        }
    }
    assert!(queries >= 10);
    // The counters Prometheus saw are the daemon's own.
    assert!(
        dnat as u64
            <= d.counter("UplinkIngress", "dnat_new_flow")?
                + d.counter("UplinkXdp", "dnat_new_flow")?
    );
    Ok(())
}

#[test]
fn the_programs_log_their_drops_when_asked_and_nothing_by_default() -> Result<()> {
    require_root();
    let sb = Sandbox::new("dl")?;
    let d = Daemon::start_with(&sb.node, Sandbox::UPLINK, &["--datapath-log", "debug"])?;
    d.cli_ok(&["network", "create", "other"])?;
    let web = d.run_idle_on("web", "netd0", &[])?;
    let lone = d.run_idle_on("lone", "other", &[])?;
    assert!(echo_fails(&lone.netns, Proto::Tcp, addr(web.ip, 80))?);
    let wanted = "EndpointIngress: drop_network_isolation";
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !d.log().contains(wanted) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("no {wanted:?} in the daemon's log: {}", d.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.log().contains("the kernel programs log at Debug"));

    // By default, nothing: the same drop leaves no line.
    let quiet_sb = Sandbox::new("dq")?;
    let quiet = Daemon::start(&quiet_sb.node, Sandbox::UPLINK)?;
    quiet.cli_ok(&["network", "create", "other"])?;
    let web = quiet.run_idle_on("web", "netd0", &[])?;
    let lone = quiet.run_idle_on("lone", "other", &[])?;
    assert!(echo_fails(&lone.netns, Proto::Tcp, addr(web.ip, 80))?);
    std::thread::sleep(Duration::from_millis(500));
    assert!(quiet.counter("EndpointIngress", "drop_network_isolation")? >= 1);
    assert!(
        !quiet.log().contains("drop_network_isolation"),
        "{}",
        quiet.log()
    );
    Ok(())
}
