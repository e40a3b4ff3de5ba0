//! `cargo xtask clippy`: the lints, for the host and for the kernel programs. The eBPF
//! crate's modules only exist for the BPF target (on the host it is an empty binary), so
//! it is linted a second time, for `bpfel-unknown-none` with nightly, as aya-build builds
//! it; both runs deny warnings, with the workspace's lints (`[workspace.lints]`).

use std::process::Command;

use anyhow::Result;

use crate::cmd::{cargo, run, target_dir, workspace_root};

pub fn run_all() -> Result<()> {
    println!("clippy: the workspace, for the host");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("clippy: netd-ebpf, for the BPF target (nightly)");
    // Through rustup (as aya-build builds it): `cargo` here is stable's, by its path.
    run(Command::new("rustup")
        .current_dir(workspace_root())
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "-p",
            "netd-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(target_dir().join("bpf-clippy"))
        .args(["--", "-D", "warnings"]))
}
