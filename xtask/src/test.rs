//! `cargo xtask test`: setup, build, then every test of the workspace (unit, datapath
//! with BPF_PROG_TEST_RUN, end to end in network namespaces), as root, and the benchmark's
//! quick matrix as a smoke test: it fails unless every datapath produced numbers and
//! really translated (the servers saw the expected addresses, the datapath's own
//! counters moved). Timings are reported, never asserted.

use anyhow::Result;

use crate::cmd::{build_workspace, cargo, require_root, run as run_cmd, target_dir};

pub fn run(extra: &[String]) -> Result<()> {
    require_root("cargo xtask test")?;
    crate::setup::run()?;
    build_workspace()?;
    println!("test: cargo test --workspace");
    run_cmd(
        cargo()
            .args(["test", "--workspace"])
            .args(extra)
            .env("NETD_BIN", target_dir().join("debug/netd")),
    )?;
    if !extra.is_empty() {
        println!("test: a filter was given; the benchmark smoke test is skipped");
        return Ok(());
    }
    println!("test: benchmark smoke test (cargo xtask bench --quick)");
    crate::bench::run(true, &[])
}
