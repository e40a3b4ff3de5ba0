//! `cargo xtask test`: setup, the lints (`cargo xtask clippy`), build, then every test of
//! the workspace, as root: unit and datapath (BPF_PROG_TEST_RUN) tests, the end-to-end
//! tests no data-path combination changes once, and the rest of the end-to-end suite
//! (in network namespaces) under every data-path combination (fast path on and off, XDP
//! native, generic and off), a few test binaries at a time; the Debian package; and the
//! benchmark's quick matrix as a smoke test: it fails unless every datapath produced
//! numbers and really translated (the servers saw the expected addresses, the datapath's
//! own counters moved). Timings are reported, never asserted.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::cmd::{
    build_workspace, cargo, require_root, run as run_cmd, target_dir, workspace_root,
};

/// Left out of the other combinations: a control-plane stress test (a thousand
/// create/remove cycles, two minutes) whose data-path part, attaching the endpoint
/// program, is the same in every combination; it runs in the default one.
const CONTROL_PLANE_ONLY: &str = "failures_half_way_and_a_thousand_cycles_leave_the_node_as_it_was";

/// End-to-end test binaries left out of the other combinations: an engine driving netd
/// (`docker`, `podman`, the CNI plugin `cni`) changes its control plane only; the packets
/// its containers send take the same data path as `netd run`'s, which every combination
/// covers. A macvlan container's packets never cross netd's programs (`macvlan`). Cluster
/// membership (`cluster`) is the daemons and etcd alone; the overlay leak test
/// (`overlay_leaks`) checks bookkeeping (keys, links, table entries) only, while the
/// overlay's traffic (`overlay`) runs in every combination. The metrics (`metrics`) are
/// the daemon's reading of counters the other tests check per combination; the events
/// (`events`), the attacks on the API (`attacks_api`: requests, clients, namespace
/// paths) and what the daemon writes to disk (`container_logs`) are the control plane's
/// alone. IPv6 isolation, icc, `--internal` and the first-hop guards
/// (`ipv6_policing`) are decided in the endpoint program before the fast path may take a
/// packet, on traffic that never enters by the uplink's XDP.
const DATA_PATH_INDEPENDENT: [&str; 12] = [
    "docker",
    "podman",
    "cni",
    "macvlan",
    "cluster",
    "overlay_leaks",
    "metrics",
    "events",
    "monitor_flood",
    "attacks_api",
    "container_logs",
    "ipv6_policing",
];

/// `cargo test` of every crate's unit tests (the test harness's own included) and netd's
/// datapath tests, which run the programs on crafted packets.
const UNIT_AND_DATAPATH: [&str; 6] = [
    "test",
    "--workspace",
    "--lib",
    "--bins",
    "--test",
    "datapath_*",
];

/// End-to-end test binaries run at once for the other combinations: each test builds its
/// own namespaces, so they do not interfere; three keep a 2-CPU machine busy without
/// starving the timing-sensitive ones.
const PARALLEL: usize = 3;

/// The combination the data-path-independent tests run under (and a filtered run's):
/// the daemon's defaults, with XDP's mode spelled out so that a silent fall-back of
/// `auto` cannot go unnoticed (the tests' uplinks are veths, which have native XDP).
const FIRST_COMBINATION: &str = "--fast-path on --xdp native";

/// The data-path combinations the end-to-end suite runs under, `FIRST_COMBINATION`
/// first. The harness passes them to every test daemon (NETD_TEST_DATAPATH).
const COMBINATIONS: [&str; 6] = [
    FIRST_COMBINATION,
    "--fast-path on --xdp generic",
    "--fast-path on --xdp off",
    "--fast-path off --xdp native",
    "--fast-path off --xdp generic",
    "--fast-path off --xdp off",
];

pub fn run(extra: &[String]) -> Result<()> {
    require_root("cargo xtask test")?;
    crate::setup::run()?;
    crate::clippy::run_all()?;
    build_workspace()?;
    if !extra.is_empty() {
        println!(
            "test: cargo test --workspace {} (end to end with `netd daemon {FIRST_COMBINATION}`)",
            extra.join(" ")
        );
        run_cmd(with_daemon(
            cargo().args(["test", "--workspace"]).args(extra),
            FIRST_COMBINATION,
        ))?;
        println!(
            "test: a filter was given; the other data-path combinations and the benchmark smoke test are skipped"
        );
        return Ok(());
    }
    // Every cargo call selects the whole workspace, so that features resolve the same
    // way each time and nothing is built twice.
    println!("test: unit and datapath tests, doc tests (cargo test --workspace)");
    run_cmd(cargo().args(UNIT_AND_DATAPATH))?;
    run_cmd(cargo().args(["test", "--workspace", "--doc"]))?;
    println!(
        "test: the end-to-end tests no data-path combination changes, once (`netd daemon {FIRST_COMBINATION}`)"
    );
    let once = DATA_PATH_INDEPENDENT.iter().flat_map(|b| ["--test", b]);
    run_cmd(with_daemon(
        cargo().args(["test", "--workspace"]).args(once),
        FIRST_COMBINATION,
    ))?;
    run_combinations()?;
    println!(
        "test: the Debian package (cargo xtask package: contents, maintainer scripts, lintian)"
    );
    let deb = crate::package::run()?;
    crate::package::check(&deb)?;
    println!("test: benchmark smoke test (cargo xtask bench --quick)");
    crate::bench::run(true, &[])
}

/// `command` with the test daemons' binary and data-path flags (`combination`).
fn with_daemon<'a>(command: &'a mut Command, combination: &str) -> &'a mut Command {
    command
        .env("NETD_BIN", target_dir().join("debug/netd"))
        .env("NETD_TEST_DATAPATH", combination)
}

/// The rest of the end-to-end suite under every combination: each test binary once per
/// combination, a few at a time, the longest first; `CONTROL_PLANE_ONLY` in the first
/// combination only. Output goes to a log per run (`target/test-logs/`), of which the
/// line with cargo's test counts is printed; a failing run's log is printed whole.
fn run_combinations() -> Result<()> {
    let binaries: Vec<PathBuf> = e2e_binaries()?
        .into_iter()
        .filter(|b| !DATA_PATH_INDEPENDENT.contains(&name_of(b).as_str()))
        .collect();
    let logs = target_dir().join("test-logs");
    fs::create_dir_all(&logs)?;
    let mut jobs: Vec<(&str, PathBuf)> = COMBINATIONS
        .iter()
        .flat_map(|c| binaries.iter().map(move |b| (*c, b.clone())))
        .collect();
    // The longest first. Jobs are popped from the end, and the sort is ascending and
    // stable: binaries not listed (key None) stay at the front, the listed ones go to the
    // end in the list's order, so the list runs from the shortest to the longest (per
    // combination in CI, before `ipv6_policing` left `ipv6`: ipv6 ~85 s, restart ~65,
    // attacks ~54, reconcile ~42, overlay ~40, networks ~34) and ipv6's runs start first.
    jobs.sort_by_key(|(_, b)| {
        [
            "networks",
            "overlay",
            "reconcile",
            "attacks",
            "restart",
            "ipv6",
        ]
        .iter()
        .position(|n| name_of(b) == *n)
    });
    let total = jobs.len();
    println!(
        "test: end-to-end suite under {} data-path combinations ({total} runs, {PARALLEL} at a time, without {}, and {CONTROL_PLANE_ONLY} in `{FIRST_COMBINATION}` only; logs in {})",
        COMBINATIONS.len(),
        DATA_PATH_INDEPENDENT.join(", "),
        logs.display()
    );
    let started = Instant::now();
    let mut running: Vec<(String, PathBuf, Instant, Child)> = Vec::new();
    let (mut done, mut failed) = (0, Vec::new());
    while !jobs.is_empty() || !running.is_empty() {
        while running.len() < PARALLEL
            && let Some((combination, binary)) = jobs.pop()
        {
            let log = logs.join(format!(
                "{}--{}.log",
                combination.replace(['-', ' '], ""),
                name_of(&binary)
            ));
            let out = fs::File::create(&log)?;
            let mut command = Command::new(&binary);
            if combination != FIRST_COMBINATION {
                command.args(["--skip", CONTROL_PLANE_ONLY]);
            }
            let child = with_daemon(&mut command, combination)
                .current_dir(workspace_root().join("tests"))
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("start {}", binary.display()))?;
            running.push((combination.to_string(), log, Instant::now(), child));
        }
        thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            let Some(status) = running[i].3.try_wait()? else {
                i += 1;
                continue;
            };
            let (combination, log, since, _) = running.swap_remove(i);
            done += 1;
            let verdict = if status.success() { "ok" } else { "FAILED" };
            println!(
                "test: [{done}/{total}] {verdict:6} {:40} `{combination}` ({:.1}s) {}",
                log.file_stem().unwrap_or_default().to_string_lossy(),
                since.elapsed().as_secs_f64(),
                counts_in(&log)
            );
            if !status.success() {
                failed.push(log);
            }
        }
    }
    for log in &failed {
        println!("---- {} ----", log.display());
        println!("{}", fs::read_to_string(log).unwrap_or_default());
    }
    if !failed.is_empty() {
        bail!("{} end-to-end runs failed (logs above)", failed.len());
    }
    println!(
        "test: end-to-end suite passed under every combination in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The counts of the `test result:` line of a test binary's log (`12 passed; 0 failed;
/// 1 ignored; ...`), or nothing if it has none.
fn counts_in(log: &std::path::Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("test result: "))
        .and_then(|r| r.split_once(". "))
        .map(|(_, counts)| {
            counts
                .split("; finished")
                .next()
                .unwrap_or(counts)
                .to_string()
        })
        .unwrap_or_default()
}

/// The end-to-end test executables (`tests/tests/*.rs`), built if needed.
fn e2e_binaries() -> Result<Vec<PathBuf>> {
    let suite = workspace_root().join("tests/tests");
    let out = cargo()
        .args(["test", "--workspace", "--tests", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("build the end-to-end tests")?;
    if !out.status.success() {
        bail!("building the end-to-end tests failed");
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        let end_to_end = msg["target"]["src_path"]
            .as_str()
            .is_some_and(|p| std::path::Path::new(p).starts_with(&suite));
        if msg["reason"] == "compiler-artifact"
            && is_test
            && end_to_end
            && let Some(exe) = msg["executable"].as_str()
        {
            binaries.push(PathBuf::from(exe));
        }
    }
    if binaries.is_empty() {
        bail!("no end-to-end test binaries found");
    }
    Ok(binaries)
}

/// `conntrack` for `target/debug/deps/conntrack-0123abcd`.
fn name_of(binary: &std::path::Path) -> String {
    let stem = binary.file_name().unwrap_or_default().to_string_lossy();
    stem.rsplit_once('-')
        .map_or(stem.to_string(), |(name, _)| name.to_string())
}
