//! `cargo xtask run -- [daemon flags]`: build and run the daemon in the foreground, in the
//! caller's network namespace. Meant for real hosts; never for these shared machines'
//! root namespace (tests and the demo start daemons inside namespaces they create).

use std::process::Command;

use anyhow::Result;

use crate::cmd::{build_workspace, require_root, run as run_cmd, target_dir};

pub fn run(args: &[String]) -> Result<()> {
    require_root("cargo xtask run")?;
    crate::setup::run()?;
    build_workspace()?;
    run_cmd(
        Command::new(target_dir().join("debug/netd"))
            .arg("daemon")
            .args(args),
    )
}
