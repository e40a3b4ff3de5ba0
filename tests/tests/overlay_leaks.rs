//! 200 containers created and removed across three nodes of an overlay leave nothing
//! behind: no key in etcd (endpoint records, address blocks), no link on a node, no entry
//! in any node's tables. Run once: what it checks is the control plane's bookkeeping,
//! the same whatever the data path.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use netd_tests::{cluster::Cluster, daemon::Daemon, netns::require_root};

const NODES: usize = 3;
const CONTAINERS: usize = 200;

fn map_entries(d: &Daemon) -> Result<serde_json::Value> {
    Ok(d.info()?["map_entries"].clone())
}

fn links(c: &Cluster, i: usize) -> Result<Vec<String>> {
    let out = c.nodes[i].ip(&["-o", "link"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

/// `f` on each node's share of the containers (`c{k}`, every NODES-th), the nodes at once.
fn each_nodes_share(c: &Cluster, f: impl Fn(&Daemon, &str) -> Result<String> + Sync) -> Result<()> {
    std::thread::scope(|s| {
        let f = &f;
        let shares: Vec<_> = c
            .daemons
            .iter()
            .enumerate()
            .map(|(i, d)| {
                s.spawn(move || -> Result<()> {
                    for k in (i..CONTAINERS).step_by(NODES) {
                        f(d, &format!("c{k}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        shares
            .into_iter()
            .try_for_each(|r| r.join().expect("no panic"))
    })
}

#[test]
fn two_hundred_containers_across_nodes_leave_no_key_link_or_table_entry() -> Result<()> {
    require_root();
    let mut c = Cluster::new("ol", NODES)?;
    for i in 0..NODES {
        c.start_daemon(i, 6, &[])?;
    }
    let before: Vec<(Vec<String>, serde_json::Value)> = (0..NODES)
        .map(|i| Ok((links(&c, i)?, map_entries(&c.daemons[i])?)))
        .collect::<Result<_>>()?;
    c.daemons[0].cli_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.20.0.0/22",
        "big",
    ])?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !c.daemons.iter().all(|d| {
        d.cli_ok(&["network", "ls"])
            .is_ok_and(|t| t.contains("big"))
    }) {
        if Instant::now() > deadline {
            bail!("the overlay is not seen by every node");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each node creates its share, the nodes at once.
    each_nodes_share(&c, |d, name| {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(["--network", "big", "--", "sleep", "infinity"]);
        d.cli_ok(&args)
    })?;
    // Every node knows every other node's containers.
    let deadline = Instant::now() + Duration::from_secs(5);
    for (i, d) in c.daemons.iter().enumerate() {
        let own = (i..CONTAINERS).step_by(NODES).count() as u64;
        loop {
            let remote = map_entries(d)?["remote_endpoints"].as_u64().unwrap_or(0);
            if remote == CONTAINERS as u64 - own {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {i} knows {remote} containers of the others");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let keys = c.etcdctl(&["get", "--prefix", "--keys-only", "/netd/v1/endpoints/big/"])?;
    let records = String::from_utf8_lossy(&keys.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(records, CONTAINERS);

    each_nodes_share(&c, |d, name| d.cli_ok(&["rm", "-f", name]))?;
    c.daemons[1].cli_ok(&["network", "rm", "big"])?;

    let keys = c.etcdctl(&["get", "--prefix", "--keys-only", "/netd/v1/"])?;
    let keys = String::from_utf8_lossy(&keys.stdout);
    let left: Vec<&str> = keys
        .lines()
        .filter(|k| !k.is_empty() && !k.contains("/nodes/") && !k.contains("/alive/"))
        .collect();
    assert!(left.is_empty(), "keys left in etcd: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    for (i, was) in before.iter().enumerate() {
        loop {
            let now = (links(&c, i)?, map_entries(&c.daemons[i])?);
            if now == *was {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {i}: links and tables {now:?}, before {:?}", before[i]);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
