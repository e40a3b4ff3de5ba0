//! Reconcile and rollback: what is deleted behind the daemon's back is recreated at the
//! next start, what a daemon killed half-way left is removed, a command that fails
//! half-way leaves nothing, and many create/remove cycles leave the node as it was.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use netd_tests::{
    Daemon, EchoServer, Netns, Proto, Sandbox, addr, daemon::netd_bin, echo_once, require_root,
    unique_name,
};
use serde_json::Value;

/// Everything of the node a container could leave behind: its links, addresses, map entry
/// counts (except flows, which age out on their own) and the daemon's records.
fn node_snapshot(sb: &Sandbox, d: &Daemon) -> (Vec<String>, String, BTreeMap<String, u64>, String) {
    let links = String::from_utf8(sb.node.ip(&["-o", "link"]).unwrap().stdout).unwrap();
    let mut names: Vec<String> = links
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap().to_string())
        })
        .collect();
    names.sort();
    let addrs = String::from_utf8(sb.node.ip(&["-o", "-4", "addr"]).unwrap().stdout).unwrap();
    let info: Value = serde_json::from_str(&d.cli_ok(&["info"]).unwrap()).unwrap();
    let maps = info["map_entries"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "flows")
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    let mut networks: Value =
        serde_json::from_str(&d.cli_ok(&["network", "ls", "--format", "json"]).unwrap()).unwrap();
    for n in networks.as_array_mut().unwrap() {
        n.as_object_mut().unwrap().remove("last_allocated");
    }
    let records = format!(
        "{networks}{}",
        d.cli_ok(&["ps", "-a", "--format", "json"]).unwrap()
    );
    (names, addrs, maps, records)
}

#[test]
fn what_is_deleted_behind_the_daemons_back_heals_and_leftovers_go() {
    require_root();
    let sb = Sandbox::new("rh").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    d.stop(libc::SIGKILL).unwrap();

    // Behind its back: the container's veth and its published port's map entry go, and
    // leftovers of a half-made container appear (a veth and a namespace holder).
    sb.node.ip(&["link", "del", &web.host_veth]).unwrap();
    let ports = d.dir.join("bpf/NETD_PORTS_V1");
    let dump: Value = serde_json::from_slice(
        &Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(&ports)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let key: Vec<String> = dump[0]["key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().trim_start_matches("0x").to_string())
        .collect();
    let mut del = Command::new("bpftool");
    del.args(["map", "delete", "pinned"])
        .arg(&ports)
        .arg("key")
        .arg("hex")
        .args(&key);
    assert!(del.status().unwrap().success());
    sb.node
        .ip(&[
            "link",
            "add",
            "ndvleftover01",
            "type",
            "veth",
            "peer",
            "name",
            "ndpleftover01",
        ])
        .unwrap();
    let state_dir = std::fs::canonicalize(d.dir.join("state")).unwrap();
    // In a namespace of its own, like every holder.
    let mut orphan = Command::new("unshare")
        .arg("--net")
        .arg(netd_bin())
        .arg("netns-holder")
        .arg(&state_dir)
        .arg("0123456789ab")
        .env("NETD_TEST_TAG", &d.node)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // The holder takes a moment to exec (longer on a loaded machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.holders() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.holders(), 2);

    d.restart().unwrap();
    let healed = d.container("web").unwrap();
    assert_ne!(healed.host_veth, web.host_veth, "a new veth");
    assert_eq!(healed.ip, web.ip, "with the same address");
    let _srv = EchoServer::start(&healed.netns, Proto::Tcp, addr(healed.ip, 80)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080))
        .expect("the port answers again");
    assert!(
        sb.node.ip(&["link", "show", "ndvleftover01"]).is_err(),
        "the leftover veth is gone"
    );
    assert!(orphan.wait().is_ok(), "the orphaned holder was killed");
    assert_eq!(d.holders(), 1);
    let log = d.log();
    assert!(
        log.contains("is missing; recreating it") && log.contains("unfinished container"),
        "{log}"
    );
}

#[test]
fn a_daemon_killed_half_way_through_run_leaks_nothing() {
    require_root();
    let sb = Sandbox::new("rk").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let baseline = node_snapshot(&sb, &d);
    for i in 0..6u64 {
        let port = format!("{}:80", 8100 + i);
        let name = format!("k{i}");
        let mut run = Command::new("ip");
        run.args(["netns", "exec", &sb.node.name])
            .arg(netd_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args([
                "run", "-d", "--name", &name, "-p", &port, "--", "sleep", "infinity",
            ])
            .env("NETD_TEST_TAG", &d.node)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut cli = run.spawn().unwrap();
        // Kill it at a different point of `run` each time.
        std::thread::sleep(Duration::from_millis(3 + 7 * i));
        d.stop(libc::SIGKILL).unwrap();
        let _ = cli.wait();
        d.restart().unwrap();
    }
    // Whatever was recorded is whole; nothing else remains.
    let ps: Value =
        serde_json::from_str(&d.cli_ok(&["ps", "-a", "--format", "json"]).unwrap()).unwrap();
    let containers = ps.as_array().unwrap();
    let info: Value = serde_json::from_str(&d.cli_ok(&["info"]).unwrap()).unwrap();
    assert_eq!(info["map_entries"]["endpoints"], containers.len());
    assert_eq!(info["map_entries"]["published_ports"], containers.len());
    // Each one's [::] binding too (NAT46).
    assert_eq!(info["map_entries"]["published_ports6"], containers.len());
    assert_eq!(d.holders(), containers.len());
    let links = String::from_utf8(sb.node.ip(&["-o", "link"]).unwrap().stdout).unwrap();
    assert_eq!(links.matches(": ndv").count(), containers.len(), "{links}");
    assert_eq!(links.matches(": ndp").count(), 0, "{links}");
    for c in containers {
        d.cli_ok(&["rm", "-f", c["name"].as_str().unwrap()])
            .unwrap();
    }
    assert_eq!(node_snapshot(&sb, &d), baseline);
}

#[test]
fn failures_half_way_and_a_thousand_cycles_leave_the_node_as_it_was() {
    require_root();
    let sb = Sandbox::new("rc").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.cli_ok(&["network", "create", "--subnet", "10.66.0.0/24", "user"])
        .unwrap();
    d.run_idle_container("holder", &["8080:80"]).unwrap();
    let baseline = node_snapshot(&sb, &d);

    // A namespace that already has an eth0: the endpoint fails after its veth exists.
    let theirs = Netns::new(&unique_name("rcx")).unwrap();
    theirs
        .ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ])
        .unwrap();
    let their_path = theirs.path();
    let failing: &[&[&str]] = &[
        &["run", "-d", "-p", "8080:80", "--", "true"],
        &[
            "run",
            "-d",
            "--network",
            "user",
            "--ip",
            "10.66.0.1",
            "--",
            "true",
        ],
        &[
            "run",
            "-d",
            "--netns",
            their_path.to_str().unwrap(),
            "--",
            "true",
        ],
        &["run", "-d", "--", "/nonexistent/command"],
    ];
    for args in failing {
        let out = d.cli(args).unwrap();
        assert_eq!(out.status.code(), Some(1), "netd {}", args.join(" "));
        assert_eq!(
            node_snapshot(&sb, &d),
            baseline,
            "after netd {}",
            args.join(" ")
        );
    }
    let links = String::from_utf8(theirs.ip(&["-o", "link"]).unwrap().stdout).unwrap();
    assert_eq!(
        links.lines().count(),
        3,
        "their namespace keeps only lo and its veth pair: {links}"
    );

    for i in 0..1000 {
        let name = format!("c{i}");
        let network = if i % 2 == 0 { "bridge" } else { "user" };
        d.cli_ok(&[
            "create",
            "--name",
            &name,
            "--network",
            network,
            "-p",
            "9000:80",
        ])
        .unwrap();
        d.cli_ok(&["rm", &name]).unwrap();
    }
    assert_eq!(
        node_snapshot(&sb, &d),
        baseline,
        "after 1,000 create/remove cycles"
    );
    assert_eq!(d.holders(), 1);
}
