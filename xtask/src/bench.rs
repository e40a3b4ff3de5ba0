//! `cargo xtask bench [--quick] [-- netd-bench flags]`: setup, a release build, the
//! per-packet cost of netd's programs (the `datapath_cost` bench), then `netd-bench`,
//! which measures netd against Docker's iptables rules, an nftables map and the direct
//! path in namespaces it creates, and writes the table, JSON and SVG under target/bench.

use std::process::Command;

use anyhow::Result;

use crate::cmd::{cargo, require_root, run as run_cmd, target_dir, workspace_root};

pub fn run(quick: bool, extra: &[String]) -> Result<()> {
    require_root("cargo xtask bench")?;
    crate::setup::run()?;
    println!("build: netd and the benchmark, release profile");
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "netd",
        "-p",
        "netd-tests",
        "--bins",
    ]))?;
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let cost = out.join("program-cost.json");
    println!("bench: per-packet cost of netd's programs (BPF_PROG_TEST_RUN)");
    // Its bpffs mounts, too, stay in a mount namespace of its own.
    let mut cost_bench = Command::new("unshare");
    cost_bench
        .args(["--mount", "--propagation", "private"])
        .arg(cargo().get_program())
        .current_dir(workspace_root())
        .args(["bench", "-p", "netd", "--bench", "datapath_cost", "--"]);
    if quick {
        cost_bench.arg("--quick");
    }
    run_cmd(cost_bench.arg("--out").arg(&cost))?;

    // In a private mount namespace: the bpffs and cgroup mounts of the netd daemons it
    // starts (and the namespaces' bind mounts) stay out of the machine's own.
    let mut bench = Command::new("unshare");
    bench
        .args(["--mount", "--propagation", "private"])
        .arg(target_dir().join("release/netd-bench"));
    if quick {
        bench.arg("--quick");
    }
    bench
        .arg("--out")
        .arg(&out)
        .arg("--program-cost")
        .arg(&cost)
        .args(extra)
        .env("NETD_BIN", target_dir().join("release/netd"));
    // Ctrl-C reaches netd-bench too, which stops and removes its namespaces: wait for it
    // rather than leave it cleaning up behind the prompt.
    // SAFETY: changing a signal's disposition has no memory-safety preconditions.
    let previous = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let result = run_cmd(&mut bench);
    // SAFETY: as above, restoring what was there.
    unsafe { libc::signal(libc::SIGINT, previous) };
    result
}
