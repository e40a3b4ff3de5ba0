//! The load generators, run inside the benchmark's namespaces and pinned to a CPU: iperf3
//! for throughput and 64-byte UDP, `netd-load` for connection rate and request/response
//! latency. Servers are owned processes (stopped on drop); clients are bounded by their
//! own duration and killed if they overrun it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Where load runs: clients on CPU 0, servers on CPU 1 (the machine has 2; the node's
/// forwarding runs in softirq on whichever CPU sent the packet).
pub const CLIENT_CPU: u32 = 0;
pub const SERVER_CPU: u32 = 1;

/// The `netd-load` binary next to this one.
pub fn load_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("netd-load")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("netd-load"))
}

fn in_netns(netns: &Path, cpu: u32, program: &Path, args: &[String]) -> Command {
    let mut c = Command::new("nsenter");
    // nsenter and taskset exec in place: the child's pid is the program's.
    c.arg(format!("--net={}", netns.display()))
        .args(["taskset", "-c", &cpu.to_string()])
        .arg(program)
        .args(args);
    c
}

/// A server process in a namespace; stopped (and reaped) on drop.
pub struct Server {
    child: Child,
    what: String,
}

impl Server {
    /// Start `program args` in `netns` on the server CPU and wait until it listens on
    /// TCP `port` (read from its namespace's /proc/PID/net/tcp).
    pub fn start(netns: &Path, port: u16, program: &Path, args: &[String]) -> Result<Self> {
        let what = format!("{} {}", program.display(), args.join(" "));
        let child = in_netns(netns, SERVER_CPU, program, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {what}"))?;
        let mut server = Server { child, what };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.listens(port) {
            if let Some(status) = server.child.try_wait()? {
                bail!("{} exited with {status} before listening", server.what);
            }
            if Instant::now() > deadline {
                bail!("{} is not listening on {port} after 5s", server.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn listens(&self, port: u16) -> bool {
        // iperf3 listens on `::` (dual stack), so look in both tables.
        let table = ["tcp", "tcp6"]
            .map(|t| {
                std::fs::read_to_string(format!("/proc/{}/net/{t}", self.child.id()))
                    .unwrap_or_default()
            })
            .concat();
        let want = format!(":{port:04X}");
        table.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: the pid of our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The servers every bed runs: iperf3 and `netd-load serve` on `addr` in `netns`.
pub struct Servers {
    _iperf: Server,
    load: Server,
}

pub const LOAD_PORT: u16 = 8080;
pub const IPERF_PORT: u16 = 5201;

impl Servers {
    /// The servers on IPv4 (`netd-load` on `0.0.0.0`).
    pub fn start(netns: &Path, lifetime: Duration) -> Result<Self> {
        Self::start_on(netns, lifetime, false)
    }

    /// The servers on both families where `dual_stack` (`netd-load` on `[::]`, which takes
    /// IPv4 too: the bench reads IPv4-mapped peers back as IPv4); iperf3 is dual-stack
    /// either way.
    pub fn start_on(netns: &Path, lifetime: Duration, dual_stack: bool) -> Result<Self> {
        let any = if dual_stack {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let iperf = Server::start(
            netns,
            IPERF_PORT,
            Path::new("iperf3"),
            &strings(&["-s", "-p", &IPERF_PORT.to_string()]),
        )?;
        let load = Server::start(
            netns,
            LOAD_PORT,
            &load_bin(),
            &strings(&[
                "serve",
                &SocketAddr::new(any, LOAD_PORT).to_string(),
                "--lifetime",
                &lifetime.as_secs().to_string(),
            ]),
        )?;
        Ok(Servers {
            _iperf: iperf,
            load,
        })
    }

    /// A process in the servers' namespace, to read its /proc/PID/net counters.
    pub fn pid(&self) -> u32 {
        self.load.child.id()
    }

    /// SYNs the servers' namespace dropped so far because an accept queue was full
    /// (TcpExt ListenOverflows): a client error that is the server's, not the path's.
    pub fn listen_overflows(&self) -> u64 {
        proc_net_counter(self.load.child.id(), "netstat", "TcpExt", "ListenOverflows").unwrap_or(0)
    }
}

/// A counter of `/proc/PID/net/FILE` (`snmp`, `netstat`: a line of names after `GROUP:`,
/// then one of values), in the network namespace of process `pid`.
pub fn proc_net_counter(pid: u32, file: &str, group: &str, name: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/net/{file}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("no {group} counters in {path}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no {group} {name} in {path}"))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Run a client to completion on the client CPU; its stdout. Killed after `limit`.
fn client(netns: &Path, program: &Path, args: &[String], limit: Duration) -> Result<String> {
    let what = format!("{} {}", program.display(), args.join(" "));
    let child = in_netns(netns, CLIENT_CPU, program, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {what}"))?;
    let out = wait_bounded(child, &what, limit)?;
    if !out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        // iperf3 -J reports its error inside the JSON.
        let reason = serde_json::from_str::<Value>(&stdout)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| stdout.trim().to_string());
        bail!(
            "{what} failed with {}: {}{reason}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Wait for a bench process that bounds itself, killing it if it overruns `limit`; its
/// output.
pub fn wait_bounded(mut child: Child, what: &str, limit: Duration) -> Result<Output> {
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child.wait_with_output()?)
}

fn json(out: &str) -> Result<Value> {
    serde_json::from_str(out).with_context(|| format!("not JSON: {out}"))
}

fn num(v: &Value, path: &[&str]) -> Result<f64> {
    let mut cur = v;
    for k in path {
        cur = cur
            .get(k)
            .with_context(|| format!("no {} in {v}", path.join(".")))?;
    }
    cur.as_f64()
        .with_context(|| format!("{} is not a number", path.join(".")))
}

/// Single-stream TCP throughput from `netns` to `to`, in Gbit/s (as the receiver saw it).
pub fn iperf_tcp(netns: &Path, to: impl Into<IpAddr>, seconds: u64) -> Result<f64> {
    let out = client(
        netns,
        Path::new("iperf3"),
        &strings(&[
            "-c",
            &to.into().to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ]),
        Duration::from_secs(seconds + 15),
    )?;
    let v = json(&out)?;
    Ok(num(&v, &["end", "sum_received", "bits_per_second"])? / 1e9)
}

/// What arrived of a 64-byte-frame UDP flood (18 bytes of payload).
pub struct UdpResult {
    pub sent_pps: f64,
    pub received_pps: f64,
    pub loss_percent: f64,
}

/// 64-byte frames (Ethernet 14 + IP 20 + UDP 8 + 18 bytes + FCS 4) as fast as iperf3
/// sends them, for `seconds`.
pub fn iperf_udp64(netns: &Path, to: Ipv4Addr, seconds: u64) -> Result<UdpResult> {
    let out = client(
        netns,
        Path::new("iperf3"),
        &strings(&[
            "-c",
            &to.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-u",
            "-b",
            "0",
            "-l",
            "18",
            "-t",
            &seconds.to_string(),
            "-J",
        ]),
        Duration::from_secs(seconds + 15),
    )?;
    let v = json(&out)?;
    let secs = num(&v, &["end", "sum", "seconds"])?.max(1e-9);
    let packets = num(&v, &["end", "sum", "packets"])?;
    let lost = num(&v, &["end", "sum", "lost_packets"])?;
    Ok(UdpResult {
        sent_pps: packets / secs,
        received_pps: (packets - lost).max(0.0) / secs,
        loss_percent: num(&v, &["end", "sum", "lost_percent"])?,
    })
}

/// Short connections: rate, latency percentiles, and what the server saw.
pub struct ConnResult {
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: f64,
    /// `PEER LOCAL` as the server saw them.
    pub seen: String,
}

pub fn conns(netns: &Path, to: impl Into<IpAddr>, seconds: f64) -> Result<ConnResult> {
    let out = client(
        netns,
        &load_bin(),
        &strings(&[
            "conns",
            &SocketAddr::new(to.into(), LOAD_PORT).to_string(),
            "--seconds",
            &seconds.to_string(),
        ]),
        Duration::from_secs_f64(seconds + 15.0),
    )?;
    let v = json(&out)?;
    Ok(ConnResult {
        per_second: num(&v, &["per_second"])?,
        p50_us: num(&v, &["p50_us"])?,
        p99_us: num(&v, &["p99_us"])?,
        errors: num(&v, &["errors"])?,
        seen: v["seen"].as_str().unwrap_or_default().to_string(),
    })
}

/// Request/response on a kept connection: latency percentiles and what the server saw.
pub struct RrResult {
    pub p50_us: f64,
    pub p99_us: f64,
    pub seen: String,
}

pub fn rr(netns: &Path, to: impl Into<IpAddr>, seconds: f64) -> Result<RrResult> {
    let out = client(
        netns,
        &load_bin(),
        &strings(&[
            "rr",
            &SocketAddr::new(to.into(), LOAD_PORT).to_string(),
            "--seconds",
            &seconds.to_string(),
        ]),
        Duration::from_secs_f64(seconds + 15.0),
    )?;
    let v = json(&out)?;
    Ok(RrResult {
        p50_us: num(&v, &["p50_us"])?,
        p99_us: num(&v, &["p99_us"])?,
        seen: v["seen"].as_str().unwrap_or_default().to_string(),
    })
}
