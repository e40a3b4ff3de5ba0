//! Nodes joining a cluster through a real three-member etcd 3.4: they register under a
//! lease and list each other; a node whose daemon dies shows down once its lease lapses,
//! a daemon restarted within the lease never does; etcd losing a member changes nothing,
//! losing all of them is reported naming the store and heals when they return; a name a
//! live node holds is refused.

use std::time::Duration;

use anyhow::Result;
use netd_tests::{cluster::Cluster, netns::require_root};

const TTL: u64 = 3;
/// For the test that restarts a daemon within the lease: room for a slow start on a busy
/// 2-core machine.
const RESTART_TTL: u64 = 8;

#[test]
fn nodes_register_list_each_other_and_a_dead_node_shows_down_after_its_lease() -> Result<()> {
    require_root();
    let mut c = Cluster::new("cl", 3)?;
    for i in 0..3 {
        c.start_daemon(i, RESTART_TTL, &[])?;
    }
    let all_ready = [("n1", "ready"), ("n2", "ready"), ("n3", "ready")];
    Cluster::wait_statuses(&c.daemons[0], &all_ready, Duration::from_secs(10))?;
    // The table: this node marked, each node's underlay address.
    let table = c.daemons[0].cli_ok(&["node", "ls"])?;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("n1 *"), "{table}");
    assert!(
        table.contains("10.98.0.2") && table.contains("Ready"),
        "{table}"
    );
    let info = c.daemons[1].info()?;
    assert_eq!(info["cluster"]["node"], "n2");
    assert_eq!(info["cluster"]["address"], "10.98.0.2");
    assert_eq!(info["cluster"]["reachable"], true);
    // The node's VXLAN device: external, VXLAN's port, no learning, the overlay MTU.
    assert_eq!(info["cluster"]["overlay_mtu"], 1450);
    let vxlan = c.nodes[1].ip(&["-d", "link", "show", "netd-vxlan"])?;
    let vxlan = String::from_utf8_lossy(&vxlan.stdout);
    for says in [
        "mtu 1450",
        "vxlan external",
        "dstport 4789",
        "nolearning",
        "state UNKNOWN",
    ] {
        assert!(vxlan.contains(says), "{says}: {vxlan}");
    }
    // The store's members, listed at a renewal.
    std::thread::sleep(Duration::from_secs(RESTART_TTL / 3 + 1));
    let members = c.daemons[1].info()?["cluster"]["store_members"].clone();
    assert_eq!(
        members,
        serde_json::json!([
            "e1 http://10.98.0.11:2379",
            "e2 http://10.98.0.12:2379",
            "e3 http://10.98.0.13:2379"
        ]),
        "{members}"
    );

    // n2's daemon killed and started again at once: the same lease, never down.
    let lease = info["cluster"]["lease"].clone();
    c.daemons[1].stop(libc::SIGKILL)?;
    c.daemons[1].restart()?;
    assert_eq!(c.daemons[1].info()?["cluster"]["lease"], lease);
    assert_eq!(
        Cluster::node_statuses(&c.daemons[0])?,
        all_ready.map(|(n, s)| (n.into(), s.into()))
    );

    // n3's daemon killed for good: down once its lease lapses, on every other node.
    c.daemons[2].stop(libc::SIGKILL)?;
    let n3_down = [("n1", "ready"), ("n2", "ready"), ("n3", "down")];
    Cluster::wait_statuses(
        &c.daemons[0],
        &n3_down,
        Duration::from_secs(RESTART_TTL + 5),
    )?;
    Cluster::wait_statuses(&c.daemons[1], &n3_down, Duration::from_secs(1))?;
    // A ready node cannot be forgotten; a down one can.
    let refused = c.daemons[0].cli(&["node", "rm", "n2"])?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("node n2 is ready"));
    c.daemons[0].cli_ok(&["node", "rm", "n3"])?;
    Cluster::wait_statuses(&c.daemons[0], &all_ready[..2], Duration::from_secs(1))?;
    // Back: registered again.
    c.daemons[2].restart()?;
    Cluster::wait_statuses(&c.daemons[0], &all_ready, Duration::from_secs(5))
        .map_err(|e| e.context(c.daemons[2].log()))?;
    Ok(())
}

#[test]
fn etcd_losing_a_member_changes_nothing_and_losing_all_is_reported_then_heals() -> Result<()> {
    require_root();
    let mut c = Cluster::new("cs", 2)?;
    c.start_daemon(0, TTL, &[])?;
    c.start_daemon(1, TTL, &[])?;
    let ready = [("n1", "ready"), ("n2", "ready")];
    Cluster::wait_statuses(&c.daemons[0], &ready, Duration::from_secs(10))?;
    c.daemons[1].cli_ok(&["network", "create", "-d", "overlay", "ov"])?;

    // One member killed (whichever leads): a majority remains, nothing changes.
    c.members[0].stop(libc::SIGKILL)?;
    std::thread::sleep(Duration::from_secs(TTL));
    Cluster::wait_statuses(&c.daemons[1], &ready, Duration::from_secs(5))?;

    // All gone: every call fails, naming the store; the daemon serves on.
    c.members[1].stop(libc::SIGKILL)?;
    c.members[2].stop(libc::SIGKILL)?;
    let out = c.daemons[0].cli(&["node", "ls"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster store etcd://10.98.0.11:2379"),
        "{err}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = c.daemons[0].info()?;
        if info["cluster"]["reachable"] == false {
            assert!(
                info["cluster"]["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("cluster store")
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still reachable: {info}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    c.daemons[0].cli_ok(&["ps"])?;

    // The store returns (longer than a lease later): both nodes ready again.
    for m in &mut c.members {
        m.restart()?;
    }
    c.wait_healthy(Duration::from_secs(30))?;
    Cluster::wait_statuses(&c.daemons[0], &ready, Duration::from_secs(10))?;
    wait_reachable(&c, true)?;
    let names = overlay_names(&c.daemons[1])?;
    assert_eq!(names, ["ov"], "ov2 was never created");
    Ok(())
}

/// The overlay networks a node lists.
fn overlay_names(d: &netd_tests::daemon::Daemon) -> Result<Vec<String>> {
    let out = d.cli_ok(&["network", "ls", "--format", "json"])?;
    let networks: Vec<serde_json::Value> = serde_json::from_str(&out)?;
    Ok(networks
        .iter()
        .filter(|n| n["driver"] == "overlay")
        .map(|n| n["name"].as_str().unwrap_or_default().to_string())
        .collect())
}

/// Wait until every daemon of `c` lists exactly these overlay networks.
fn wait_overlays(c: &Cluster, want: &[&str]) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let seen: Vec<Vec<String>> = c.daemons.iter().map(overlay_names).collect::<Result<_>>()?;
        if seen.iter().all(|s| s == want) {
            return Ok(());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes list {seen:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_overlay_network_made_on_one_node_is_every_nodes_and_unique_in_the_cluster() -> Result<()> {
    require_root();
    let mut c = Cluster::new("co", 3)?;
    for i in 0..3 {
        c.start_daemon(i, TTL, &[])?;
    }
    c.daemons[0].cli_ok(&["network", "create", "-d", "overlay", "--attachable", "ov1"])?;
    wait_overlays(&c, &["ov1"])?;
    let table = c.daemons[2].cli_ok(&["network", "ls"])?;
    let row = table
        .lines()
        .find(|l| l.contains("ov1"))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("overlay") && row.contains("global"), "{table}");
    let inspect: serde_json::Value =
        serde_json::from_str(&c.daemons[2].cli_ok(&["network", "inspect", "ov1"])?)?;
    let ov1 = &inspect[0];
    assert_eq!(ov1["subnet"], "10.0.0.0/24");
    assert_eq!(ov1["options"]["com.netd.vxlan.id"], "4096");
    assert_eq!(ov1["options"]["created_on"], "n1");

    // Refused from other nodes, each naming its reason.
    for (node, args, says) in [
        (
            1,
            vec!["-d", "overlay", "ov1"],
            "network with name ov1 already exists",
        ),
        (
            1,
            vec!["-d", "overlay", "-o", "com.netd.vxlan.id=4096", "ov2"],
            "VXLAN ID 4096 is in use by network ov1",
        ),
        (
            2,
            vec!["-d", "overlay", "--subnet", "10.0.0.0/16", "ov2"],
            "overlaps overlay network ov1's subnet 10.0.0.0/24",
        ),
        (
            2,
            vec!["--subnet", "10.0.0.128/25", "local"],
            "Pool overlaps with other one on this address space (overlay network ov1)",
        ),
        (1, vec!["ov1"], "network with name ov1 already exists"),
    ] {
        let mut all = vec!["network", "create"];
        all.extend(args);
        let out = c.daemons[node].cli(&all)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{all:?}: {err}"
        );
    }
    // The cluster's own ports cannot be published on its nodes.
    for (spec, says) in [
        (
            "4789:80/udp",
            "reserved on a node of a cluster for VXLAN, the overlay's transport (4789/udp)",
        ),
        ("2379:80", "for etcd's clients (2379/tcp)"),
        ("2380:80", "for etcd's peers (2380/tcp)"),
    ] {
        let out = c.daemons[1].cli(&["run", "-d", "-p", spec, "--", "sleep", "60"])?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{spec}: {err}");
    }
    c.daemons[1].cli_ok(&[
        "run",
        "-d",
        "--name",
        "udp4789tcp",
        "-p",
        "4789:80",
        "--",
        "sleep",
        "60",
    ])?;
    // Three nodes creating at the same moment: each gets its own subnet and VNI.
    std::thread::scope(|s| {
        let runs: Vec<_> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let d = &c.daemons[i];
                s.spawn(move || d.cli_ok(&["network", "create", "-d", "overlay", name]))
            })
            .collect();
        for r in runs {
            r.join().expect("no panic").expect("created");
        }
    });
    wait_overlays(&c, &["a", "b", "c", "ov1"])?;
    let out = c.daemons[0].cli_ok(&["network", "inspect", "a", "b", "c", "ov1"])?;
    let views: Vec<serde_json::Value> = serde_json::from_str(&out)?;
    let mut subnets: Vec<&str> = views.iter().filter_map(|v| v["subnet"].as_str()).collect();
    let mut vnis: Vec<&str> = views
        .iter()
        .filter_map(|v| v["options"]["com.netd.vxlan.id"].as_str())
        .collect();
    subnets.sort_unstable();
    subnets.dedup();
    vnis.sort_unstable();
    vnis.dedup();
    assert_eq!((subnets.len(), vnis.len()), (4, 4), "{out}");

    // Removed on one node: gone from all, and its name free again.
    for name in ["ov1", "a", "b", "c"] {
        c.daemons[2].cli_ok(&["network", "rm", name])?;
    }
    wait_overlays(&c, &[])?;
    let keys = c.etcdctl(&["get", "--prefix", "--keys-only", "/netd/v1/networks/"])?;
    assert!(String::from_utf8_lossy(&keys.stdout).trim().is_empty());
    Ok(())
}

/// Wait until node 1's `netd info` says the store is (not) reachable; its info then.
fn wait_reachable(c: &Cluster, reachable: bool) -> Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = c.daemons[0].info()?;
        if info["cluster"]["reachable"] == reachable {
            return Ok(info);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reachable is not {reachable}: {info}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_name_a_live_node_holds_is_refused_and_bad_flags_are_named() -> Result<()> {
    require_root();
    let mut c = Cluster::new("cn", 2)?;
    c.start_daemon(0, TTL, &[])?;
    // Node 2 under node 1's name: refused at start, saying who holds it.
    let url = c.store_url();
    let taken = netd_tests::daemon::Daemon::start_with(
        &c.nodes[1],
        "eth0",
        &[
            "--cluster-store",
            &url,
            "--cluster-advertise",
            "eth0",
            "--node-name",
            "n1",
        ],
    );
    let err = format!("{:#}", taken.err().expect("a taken name is refused"));
    assert!(
        err.contains("node name n1 is taken by a live node at 10.98.0.1"),
        "{err}"
    );
    for (flags, says) in [
        (
            vec![
                "--cluster-store",
                "consul://10.98.0.11:8500",
                "--cluster-advertise",
                "eth0",
            ],
            "netd's cluster store is etcd",
        ),
        (vec!["--cluster-store", &url], "needs --cluster-advertise"),
        (
            vec!["--cluster-store", &url, "--cluster-advertise", "10.98.0.77"],
            "--cluster-advertise 10.98.0.77: not an address of this node",
        ),
        (
            vec![
                "--cluster-store",
                &url,
                "--cluster-advertise",
                "eth0",
                "--cluster-store-opt",
                "kv.certfile=/x",
            ],
            "kv.certfile and kv.keyfile go together",
        ),
    ] {
        let refused = netd_tests::daemon::Daemon::start_with(&c.nodes[1], "eth0", &flags);
        let err = format!("{:#}", refused.err().expect("refused"));
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    // Not in a cluster: node ls says how to join one.
    let lone = netd_tests::daemon::Daemon::start(&c.nodes[1], "eth0")?;
    let out = lone.cli(&["node", "ls"])?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in a cluster"));
    // Outside a cluster, the cluster's ports are ports like any other.
    lone.cli_ok(&["run", "-d", "-p", "4789:80/udp", "--", "sleep", "60"])?;
    Ok(())
}

#[test]
fn the_store_over_tls_with_dockers_options_and_a_node_without_a_client_certificate_stays_out()
-> Result<()> {
    require_root();
    let mut c = Cluster::with_tls("ct", 2)?;
    c.start_daemon(0, TTL, &[])?;
    Cluster::wait_statuses(&c.daemons[0], &[("n1", "ready")], Duration::from_secs(10))?;
    c.daemons[0].cli_ok(&["network", "create", "-d", "overlay", "ov"])?;
    let keys = c.etcdctl(&["get", "--prefix", "--keys-only", "/netd/v1/networks/"])?;
    assert!(String::from_utf8_lossy(&keys.stdout).contains("/netd/v1/networks/ov"));
    // The CA alone: etcd asks for a client certificate, the node never registers.
    let certs = c.tls.as_ref().expect("a TLS cluster");
    let url = c.store_url();
    let ca = format!("kv.cacertfile={}", certs.ca.display());
    let lone = netd_tests::daemon::Daemon::start_with(
        &c.nodes[1],
        "eth0",
        &[
            "--cluster-store",
            &url,
            "--cluster-store-opt",
            &ca,
            "--cluster-advertise",
            "eth0",
            "--node-name",
            "n2",
        ],
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let info = lone.info()?;
    assert_eq!(info["cluster"]["reachable"], false, "{info}");
    // etcd refuses the handshake: the node sees a TLS alert or a closed connection,
    // either way an error naming the store.
    let err = info["cluster"]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("cluster store etcd://10.98.0.11:2379"),
        "{err}"
    );
    assert_eq!(
        Cluster::node_statuses(&c.daemons[0])?,
        [("n1".into(), "ready".into())]
    );
    // n1 out of the cluster: its VXLAN device goes.
    assert!(c.nodes[0].ip(&["link", "show", "netd-vxlan"]).is_ok());
    c.daemons[0].stop(libc::SIGTERM)?;
    c.daemons[0].restart_without(&[
        "--cluster-store",
        "--cluster-store-opt",
        "--cluster-advertise",
        "--node-name",
        "--cluster-lease-ttl",
    ])?;
    assert!(c.nodes[0].ip(&["link", "show", "netd-vxlan"]).is_err());
    Ok(())
}

/// The guards netd's transactions rely on, against the real etcd: a write under the
/// prefix after the read revision fails the commit; a removal does not; an empty prefix
/// passes; `Unchanged` compares the value.
#[test]
fn etcds_transactions_hold_the_guards_netd_relies_on() -> Result<()> {
    use netd::cluster::{
        ClusterConfig,
        etcd::EtcdStore,
        store::{ClusterStore, Guard, Op},
    };
    require_root();
    let c = Cluster::new("cg", 1)?;
    let config = ClusterConfig::parse(
        &c.store_url(),
        &[],
        Some("eth0"),
        "n1",
        Duration::from_secs(5),
    )?;
    let ns = c.nodes[0].open()?;
    netd::netns::run_in(&ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let store = EtcdStore::new(&config).await?;
            let put = |k: &str, v: &str| Op::Put {
                key: k.into(),
                value: v.as_bytes().to_vec(),
                lease: None,
            };
            let since = |rev| Guard::UnchangedSince {
                prefix: "/t/n/".into(),
                revision: rev,
            };
            let empty = store.list("/t/n/").await?;
            assert!(
                store
                    .commit(vec![since(empty.revision)], vec![put("/t/n/a", "1")])
                    .await?
            );
            let read = store.list("/t/n/").await?;
            assert!(
                store
                    .commit(vec![since(read.revision)], vec![put("/t/n/b", "2")])
                    .await?
            );
            // Planned from `read`, after b was written: refused.
            assert!(
                !store
                    .commit(vec![since(read.revision)], vec![put("/t/n/c", "3")])
                    .await?
            );
            assert!(store.get("/t/n/c").await?.is_none());
            // A removal after the read is not a change the guard sees.
            let read = store.list("/t/n/").await?;
            store.delete("/t/n/a").await?;
            assert!(
                store
                    .commit(vec![since(read.revision)], vec![put("/t/n/c", "3")])
                    .await?
            );
            let same = Guard::Unchanged {
                key: "/t/n/c".into(),
                value: b"3".to_vec(),
            };
            let other = Guard::Unchanged {
                key: "/t/n/c".into(),
                value: b"4".to_vec(),
            };
            assert!(!store.commit(vec![other], vec![put("/t/n/c", "5")]).await?);
            assert!(store.commit(vec![same], vec![put("/t/n/c", "5")]).await?);
            assert!(!store.create("/t/n/c", b"6".to_vec(), None).await?);
            anyhow::Ok(())
        })
    })?;
    Ok(())
}
