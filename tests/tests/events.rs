//! `netd events`: what changes on the node, as it happens, like `docker events`: networks
//! created, connected, disconnected and removed, containers created, started, exited and
//! removed, ports published and unpublished, in the order they happened; the kept ones
//! again with `--since`, filtered by type, event and name; bad filters refused.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use netd_tests::{Daemon, Sandbox, cni, require_root, stream::Stream};
use serde_json::Value;

/// An event as `type action name [attribute]`.
fn short(e: &Value, attribute: &str) -> String {
    let attrs = &e["actor"]["attributes"];
    let mut s = format!(
        "{} {} {}",
        e["type"].as_str().unwrap_or("?"),
        e["action"].as_str().unwrap_or("?"),
        attrs["name"].as_str().unwrap_or("?")
    );
    if let Some(v) = attrs[attribute].as_str() {
        s.push(' ');
        s.push_str(v);
    }
    s
}

#[test]
fn events_tell_what_changed_as_it_happens_and_again_since() -> Result<()> {
    require_root();
    let sb = Sandbox::new("ev")?;
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK)?;
    let live = Stream::start(&d, &["events", "--format", "json"])?;
    // The stream has asked once before anything happens.
    std::thread::sleep(Duration::from_millis(500));

    d.cli_ok(&["network", "create", "front"])?;
    d.run_idle_on("web", "front", &["8080:80"])?;
    d.cli_ok(&["network", "connect", "netd0", "web"])?;
    d.cli_ok(&["network", "disconnect", "netd0", "web"])?;
    d.cli_ok(&["rm", "-f", "web"])?;
    d.cli_ok(&["run", "-d", "--name", "brief", "--", "sh", "-c", "exit 3"])?;

    let want = [
        "network create front",
        "container create web front",
        "container start web front",
        "network connect front web",
        // One event per binding: [::] too (NAT46, the container having IPv4 only).
        "port publish web web 80/tcp -> 0.0.0.0:8080",
        "port publish web web 80/tcp -> [::]:8080",
        "network connect netd0 web",
        "network disconnect netd0 web",
        "port unpublish web web 80/tcp -> 0.0.0.0:8080",
        "port unpublish web web 80/tcp -> [::]:8080",
        "network disconnect front web",
        "container remove web front",
        "container create brief bridge",
        "container start brief bridge",
        "network connect netd0 brief",
    ];
    let key = |e: &Value| match e["type"].as_str() {
        Some("network") => short(e, "container"),
        Some("port") => format!(
            "{} {}",
            short(e, "container"),
            e["actor"]["id"].as_str().unwrap_or("?")
        ),
        _ => short(e, "network"),
    };
    let mut seen = Vec::new();
    let mut died = None;
    while seen.len() < want.len() || died.is_none() {
        let e = live
            .next(Duration::from_secs(3))
            .with_context(|| format!("after {seen:?}"))?;
        if e["action"] == "die" {
            died = Some(e);
            continue;
        }
        seen.push(key(&e));
    }
    assert_eq!(seen, want, "in the order it happened");
    let died = died.expect("seen");
    assert_eq!(short(&died, "exitCode"), "container die brief 3");
    let more = live.drain(Duration::from_millis(300));
    assert!(more.is_empty(), "nothing more: {more:?}");

    // Again, from the daemon's history: the die only, and the network's life as text.
    let replay = Stream::start(
        &d,
        &[
            "events",
            "--since",
            "1m",
            "--filter",
            "type=container",
            "--filter",
            "event=die",
            "--format",
            "json",
        ],
    )?;
    let e = replay.next(Duration::from_secs(3))?;
    assert_eq!(short(&e, "exitCode"), "container die brief 3");
    assert!(replay.drain(Duration::from_millis(500)).is_empty());
    d.cli_ok(&["network", "rm", "front"])?;
    let text = Stream::start(
        &d,
        &[
            "events",
            "--since",
            "5m",
            "--filter",
            "type=network,name=front",
        ],
    )?;
    let lines = text.drain(Duration::from_secs(1));
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        ["create", "connect", "disconnect", "remove"],
        "{lines:?}"
    );
    // `2026-12-04T12:00:00.123456789Z network create ID (driver=bridge, name=front, ...)`.
    let first: Vec<&str> = lines[0].split_whitespace().collect();
    if !(first[0].len() == 30 && first[0].ends_with('Z') && first[1] == "network") {
        bail!("not docker's line: {}", lines[0]);
    }
    assert!(lines[0].contains("name=front") && lines[0].contains("driver=bridge"));

    // A runtime's container through netd-cni: the same story.
    let pod = netd_tests::Netns::new(&netd_tests::unique_name("evpod"))?;
    let pod_path = pod.path();
    let mut conf = cni::conf("1.0.0", "netd0", &d.socket);
    conf["runtimeConfig"] = serde_json::json!({
        "portMappings": [{ "hostPort": 8090, "containerPort": 80, "protocol": "tcp" }]
    });
    let by_cni = Stream::start(&d, &["events", "--format", "json"])?;
    std::thread::sleep(Duration::from_millis(500));
    let call = |command| cni::Call::new(command, "pod0123456789", Some(&pod_path));
    cni::exec(&d, &call("ADD"), &conf)?.ok()?;
    cni::exec(&d, &call("DEL"), &conf)?.ok()?;
    let told: Vec<String> = (0..8)
        .map(|_| {
            by_cni
                .next(Duration::from_secs(3))
                .map(|e| match e["type"].as_str() {
                    Some("port") => key(&e),
                    _ => short(&e, "container"),
                })
        })
        .collect::<Result<_>>()?;
    let record = "pod012345678-eth0";
    assert_eq!(
        told,
        [
            format!("container create {record}"),
            format!("network connect netd0 {record}"),
            format!("port publish {record} {record} 80/tcp -> 0.0.0.0:8090"),
            format!("port publish {record} {record} 80/tcp -> [::]:8090"),
            format!("port unpublish {record} {record} 80/tcp -> 0.0.0.0:8090"),
            format!("port unpublish {record} {record} 80/tcp -> [::]:8090"),
            format!("network disconnect netd0 {record}"),
            format!("container remove {record}"),
        ]
    );

    // What the start-up reconcile repairs is told too: a veth deleted behind the daemon's
    // back while it was down.
    let keep = d.run_idle_on("keep", "netd0", &[])?;
    d.stop(libc::SIGTERM)?;
    sb.node.ip(&["link", "del", &keep.host_veth])?;
    d.restart()?;
    let repairs = Stream::start(
        &d,
        &[
            "events",
            "--since",
            "1m",
            "--format",
            "json",
            "--filter",
            "type=daemon",
        ],
    )?;
    let lines = repairs.drain(Duration::from_secs(1));
    let said: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<Result<_, _>>()?;
    assert!(
        said.iter().any(|e| e["action"] == "repair"
            && e["actor"]["attributes"]["name"] == "keep"
            && e["actor"]["attributes"]["repair"]
                .as_str()
                .is_some_and(|r| r.contains("recreated"))),
        "{lines:?}"
    );
    assert!(said.iter().any(|e| e["action"] == "start"), "{lines:?}");

    for (args, says) in [
        (
            vec!["--filter", "type=volume"],
            "expected container, network, port or daemon",
        ),
        (vec!["--filter", "name"], "KEY=VALUE"),
        (vec!["--since", "10"], "expected a duration"),
        (vec!["--format", "yaml"], "expected text or json"),
    ] {
        let mut all = vec!["events"];
        all.extend(args);
        let out = d.cli(&all)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{all:?}: {err}"
        );
    }
    Ok(())
}
