//! `netd-load`: the benchmark's TCP load generator and server (see `bench::load`). Run
//! by `netd-bench` inside the benchmark's namespaces; every mode stops by itself.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use netd_tests::bench::load;

#[derive(Parser)]
#[command(name = "netd-load", about = "TCP load for `cargo xtask bench`")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Answer connections on LISTEN, then exit after --lifetime seconds.
    Serve {
        listen: SocketAddr,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 600)]
        lifetime: u64,
    },
    /// Short connections to TO: connections/s and latency percentiles, as JSON.
    Conns {
        to: SocketAddr,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 200_000)]
        max: u64,
    },
    /// One-byte request/response on one connection to TO: latency percentiles, as JSON.
    Rr {
        to: SocketAddr,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 2_000_000)]
        max: u64,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().mode {
        Mode::Serve {
            listen,
            threads,
            lifetime,
        } => load::serve(listen, threads, Duration::from_secs(lifetime)),
        Mode::Conns {
            to,
            threads,
            seconds,
            max,
        } => load::conns(to, threads, Duration::from_secs_f64(seconds), max),
        Mode::Rr { to, seconds, max } => load::rr(to, Duration::from_secs_f64(seconds), max),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
