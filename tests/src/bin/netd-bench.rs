//! `netd-bench`: the benchmark `cargo xtask bench` runs (see `netd_tests::bench`). Prints
//! progress and a table, writes `bench.json` (every raw sample) and `bench.svg`.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use netd_tests::{
    bench::{
        self, Options, bed::Datapath, cni::CniPlugin, engines::Engine, overlay::CrossNode, svg,
    },
    require_root,
};

#[derive(Parser)]
#[command(
    name = "netd-bench",
    about = "netd against iptables, nftables and the direct path",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,
    /// The reduced matrix (one run each, short runs, 1 and 10,000 ports): under 3 minutes.
    #[arg(long)]
    quick: bool,
    /// Where to write bench.json, bench.svg and bench.txt.
    #[arg(long, default_value_os_t = bench::default_out_dir())]
    out: PathBuf,
    /// The `datapath_cost` bench's JSON (per-packet cost of netd's programs) to include.
    #[arg(long)]
    program_cost: Option<PathBuf>,
    /// Only these datapaths (direct, iptables, nftables, netd-tc, netd-redirect, netd-xdp, netd-macvlan,
    /// netd-observed;
    /// netd means the three netd bridge ones), Docker engines (docker-bridge, docker-netd;
    /// docker means both), CNI plugins (cni-bridge, cni-netd; cni means both) and cross-node
    /// beds (vxlan-fdb, netd-overlay, netd-overlay-noxdp, netd-same-node; overlay means all four); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Published ports of the scale runs (default 1,1000,10000; quick 1,10000).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=10000))]
    scales: Option<Vec<u16>>,
    /// Repeats of each measurement (default 3; quick 1).
    #[arg(long)]
    runs: Option<usize>,
}

/// What the benchmark runs of itself inside its namespaces.
#[derive(Subcommand)]
enum Internal {
    /// The 64-byte frame generator: send FRAME COUNT times out of interface IFINDEX of
    /// this network namespace (BPF_PROG_TEST_RUN, live frames, XDP_TX). Run it only in a
    /// mount namespace of its own (`unshare --mount`): it mounts a bpffs there.
    #[command(hide = true)]
    Transmit {
        #[arg(long)]
        ifindex: u32,
        /// The frame, in hex.
        #[arg(long)]
        frame: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50_000_000))]
        count: u32,
        #[arg(long, default_value_t = bench::generator::BATCH)]
        batch: u32,
    },
}

fn main() -> ExitCode {
    require_root();
    let cli = Cli::parse();
    if let Some(Internal::Transmit {
        ifindex,
        frame,
        count,
        batch,
    }) = &cli.command
    {
        let result = bench::generator::from_hex(frame)
            .and_then(|f| bench::generator::transmit(*ifindex, &f, *count, *batch));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("netd-bench transmit: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    bench::stop_on_signals();
    let started = Instant::now();
    match run(cli) {
        Ok(()) => {
            println!(
                "bench: done in {:.0}s; every namespace removed",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(_) if bench::interrupted() => {
            eprintln!("bench: interrupted; every namespace removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Append the items of `more` that `to` does not hold yet.
fn add_new<T: PartialEq>(to: &mut Vec<T>, more: Vec<T>) {
    for item in more {
        if !to.contains(&item) {
            to.push(item);
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let (datapaths, engines, cni, overlays) = if cli.only.is_empty() {
        (
            Datapath::ALL.to_vec(),
            Engine::ALL.to_vec(),
            CniPlugin::ALL.to_vec(),
            CrossNode::ALL.to_vec(),
        )
    } else {
        let mut chosen: Vec<Datapath> = Vec::new();
        let mut engines: Vec<Engine> = Vec::new();
        let mut cni: Vec<CniPlugin> = Vec::new();
        let mut overlays: Vec<CrossNode> = Vec::new();
        for name in &cli.only {
            if let Some(es) = Engine::by_name(name) {
                add_new(&mut engines, es);
            } else if let Some(ps) = CniPlugin::by_name(name) {
                add_new(&mut cni, ps);
            } else if let Some(ks) = CrossNode::by_name(name) {
                add_new(&mut overlays, ks);
            } else {
                let dps = Datapath::by_name(name).with_context(|| {
                    format!(
                        "--only: unknown datapath {name:?} (direct, iptables, nftables, netd-tc, netd-redirect, netd-xdp, netd-macvlan, netd-observed, or netd for the three bridge ones; docker-bridge, docker-netd, or docker for both; cni-bridge, cni-netd, or cni for both; vxlan-fdb, netd-overlay, netd-overlay-noxdp, netd-same-node, or overlay for all four)"
                    )
                })?;
                add_new(&mut chosen, dps);
            }
        }
        (chosen, engines, cni, overlays)
    };
    println!(
        "bench: {} matrix over {}; clients on CPU {}, servers on CPU {}",
        if cli.quick { "quick" } else { "full" },
        datapaths
            .iter()
            .map(|d| d.to_string())
            .chain(engines.iter().map(|e| e.to_string()))
            .chain(cni.iter().map(|p| p.to_string()))
            .chain(overlays.iter().map(|k| k.to_string()))
            .collect::<Vec<_>>()
            .join(", "),
        bench::tools::CLIENT_CPU,
        bench::tools::SERVER_CPU
    );
    let mut results = bench::run(&Options {
        quick: cli.quick,
        datapaths,
        engines,
        cni,
        overlays,
        scales: cli.scales,
        runs: cli.runs,
    })?;
    if let Some(path) = &cli.program_cost {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        results.program_cost = Some(serde_json::from_str(&text)?);
    }
    std::fs::create_dir_all(&cli.out)?;
    let table = results.table();
    let json_path = cli.out.join("bench.json");
    let svg_path = cli.out.join("bench.svg");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&results.to_json())?,
    )?;
    std::fs::write(&svg_path, svg::chart(&results))?;
    std::fs::write(cli.out.join("bench.txt"), &table)?;
    println!("\n{table}");
    println!("raw samples: {}", json_path.display());
    println!("chart:       {}", svg_path.display());
    Ok(())
}
