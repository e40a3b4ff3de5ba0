//! Every workflow that is more than `cargo build`:
//! `cargo xtask setup|clippy|test|demo|bench|package|run`.

mod bench;
mod clippy;
mod cmd;
mod demo;
mod package;
mod run;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "netd's workflows")]
struct Xtask {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks (Debian packages, nightly rust-src, bpf-linker,
    /// bpffs); idempotent.
    Setup,
    /// Lint the workspace for the host and the kernel programs for the BPF target,
    /// denying warnings.
    Clippy,
    /// Setup, lint, build, and run every test of the workspace (needs root).
    Test {
        /// Passed to `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, build, and show netd's main job in a sandbox of network namespaces.
    Demo {
        /// The same story with the real dockerd as the engine and netd as its network
        /// driver (`docker network create -d netd`, `docker run -p`).
        #[arg(long)]
        docker: bool,
    },
    /// Measure netd against Docker's iptables rules, an nftables map and the direct
    /// path, in namespaces it creates (needs root); table, JSON and SVG in target/bench.
    Bench {
        /// The reduced matrix (one run each, short runs): under 3 minutes, for CI.
        #[arg(long)]
        quick: bool,
        /// Passed to netd-bench (e.g. `--only netd,iptables`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build netd's Debian package (target/package/netd_VERSION_ARCH.deb) and check it
    /// (contents, maintainer scripts, lintian); installs and starts nothing.
    Package,
    /// Build and run `netd daemon` in the foreground on THIS host's network namespace
    /// (for real hosts; tests and the demo never use it).
    Run {
        /// Flags for `netd daemon`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let result = match Xtask::parse().command {
        Task::Setup => setup::run(),
        Task::Clippy => clippy::run_all(),
        Task::Test { args } => test::run(&args),
        Task::Demo { docker } => demo::run(docker),
        Task::Bench { quick, args } => bench::run(quick, &args),
        Task::Run { args } => run::run(&args),
        Task::Package => package::run().and_then(|deb| package::check(&deb)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
