//! `cargo xtask demo`: setup, build, then the demo binary of the test harness, which
//! builds a sandbox of namespaces, shows published ports and masquerade, and removes it.

use std::process::Command;

use anyhow::Result;

use crate::cmd::{build_workspace, require_root, run as run_cmd, target_dir};

/// `docker`: the same story with the real dockerd as the engine (`--docker`).
pub fn run(docker: bool) -> Result<()> {
    require_root("cargo xtask demo")?;
    crate::setup::run()?;
    build_workspace()?;
    println!();
    run_cmd(
        Command::new(target_dir().join("debug/netd-demo"))
            .args(docker.then_some("--docker"))
            .env("NETD_BIN", target_dir().join("debug/netd")),
    )
}
