//! The comparison Docker users ask for: Docker's own bridge driver (iptables DNAT and
//! masquerade, a docker-proxy process per published port, as Docker ships it) against
//! Docker with netd as its network driver, on the same sandbox, driven the same way
//! (`docker run -p`). Measured: new connections through a published port with 1 and
//! with N published ports, TCP throughput, and what publishing a range of ports with
//! `docker run -p` costs (time, processes, memory) and removing it with `docker rm`.

use std::{
    fmt,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    Progress,
    report::Results,
    tools::{self, IPERF_PORT, LOAD_PORT, Servers},
};
use crate::{
    Daemon, Sandbox,
    docker::{Docker, Networking},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Docker's bridge driver: `docker network create bench`.
    DockerBridge,
    /// netd as Docker's driver: `docker network create -d netd --ipam-driver netd bench`.
    DockerNetd,
}

impl Engine {
    pub const ALL: [Engine; 2] = [Engine::DockerBridge, Engine::DockerNetd];

    pub fn by_name(name: &str) -> Option<Vec<Engine>> {
        if name == "docker" {
            return Some(Self::ALL.to_vec());
        }
        Self::ALL
            .into_iter()
            .find(|e| e.to_string() == name)
            .map(|e| vec![e])
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::DockerBridge => "docker-bridge",
            Engine::DockerNetd => "docker-netd",
        })
    }
}

/// Where the published range starts (host port = container port).
const RANGE_BASE: u16 = 20000;

/// How much: repeats and durations as the datapath runs have, and the published ranges.
pub struct EnginePlan {
    pub runs: usize,
    pub iperf_secs: u64,
    pub load_secs: f64,
    /// Sizes of the `docker run -p` ranges; new connections are measured again with the
    /// largest in place.
    pub ranges: Vec<u16>,
}

/// One engine's sandbox: netd (if it is the driver) and dockerd in the node, a network
/// `bench`, and a container `web` publishing the load and iperf3 ports.
struct EngineBed {
    // Dropped in this order: Docker's containers and dockerd, netd, the namespaces.
    docker: Docker,
    netd: Option<Daemon>,
    sandbox: Sandbox,
    container: PathBuf,
    container_ip: Ipv4Addr,
}

impl EngineBed {
    fn new(engine: Engine) -> Result<Self> {
        let sandbox = Sandbox::new(match engine {
            Engine::DockerBridge => "bdb",
            Engine::DockerNetd => "bdn",
        })?;
        sandbox
            .ext
            .sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
        let (netd, docker) = match engine {
            Engine::DockerNetd => {
                let socket = Docker::plugin_socket_for(&sandbox.node);
                let netd = Daemon::start_with(
                    &sandbox.node,
                    Sandbox::UPLINK,
                    &["--docker-plugin-socket", &socket.to_string_lossy()],
                )?;
                let docker = Docker::start(&sandbox.node, &socket)?;
                docker.netd_network("bench", &[])?;
                (Some(netd), docker)
            }
            Engine::DockerBridge => {
                sandbox.node.sysctl("net.ipv4.ip_forward", "1")?;
                let docker = Docker::start_with(&sandbox.node, Networking::Own)?;
                docker.ok(&["network", "create", "bench"])?;
                (None, docker)
            }
        };
        let load = format!("{LOAD_PORT}:{LOAD_PORT}");
        let iperf = format!("{IPERF_PORT}:{IPERF_PORT}");
        docker.run_idle(&[
            "--name",
            "web",
            "--network",
            "bench",
            "-p",
            &load,
            "-p",
            &iperf,
        ])?;
        let container = docker.netns("web")?;
        let container_ip = docker.ip("web", "bench")?;
        Ok(EngineBed {
            docker,
            netd,
            sandbox,
            container,
            container_ip,
        })
    }

    /// Resident memory of what networking costs the engine: dockerd, netd if it is the
    /// driver, and every docker-proxy process; and how many docker-proxy processes run.
    fn footprint(&self) -> (u64, usize) {
        let proxies = processes_named("docker-proxy");
        let pids = proxies
            .iter()
            .copied()
            .chain(self.docker.pid())
            .chain(self.netd.as_ref().and_then(Daemon::pid));
        (pids.filter_map(rss_kib).sum(), proxies.len())
    }
}

fn processes_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (name.trim() == comm).then_some(pid)
        })
        .collect()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The IPv4 peer of the server's `PEER LOCAL` line, which must name the container.
fn seen_peer(engine: Engine, seen: &str, container: Ipv4Addr) -> Result<Ipv4Addr> {
    let mut parts = seen.split_whitespace();
    let addr = |s: Option<&str>| s.and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    match (addr(parts.next()), addr(parts.next())) {
        (Some(std::net::SocketAddr::V4(p)), Some(l)) if l.ip() == container => Ok(*p.ip()),
        _ => bail!(
            "{engine}: the server saw {seen:?}, expected an IPv4 peer -> {container}:{LOAD_PORT}"
        ),
    }
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

pub(super) fn measure(
    engine: Engine,
    plan: &EnginePlan,
    progress: &Progress,
    results: &mut Results,
) -> Result<()> {
    progress.step(
        engine,
        "building the bed (namespaces, dockerd, network, container)",
    )?;
    let bed = EngineBed::new(engine)?;
    let name = engine.to_string();
    let lifetime = Duration::from_secs(1800);
    let _servers = Servers::start(&bed.container, lifetime)?;
    let client = bed.sandbox.ext.path();
    let mut seen6 = None;
    for run in 1..=plan.runs {
        let of = format!("1 port, run {run}/{}", plan.runs);
        progress.step(engine, &format!("TCP throughput ({of})"))?;
        let gbps = tools::iperf_tcp(&client, Sandbox::NODE_ADDR, plan.iperf_secs)?;
        if gbps <= 0.0 {
            bail!("{engine}: TCP throughput is zero");
        }
        results.add_engine(&name, "tcp_gbps", gbps);
        progress.step(engine, &format!("new connections ({of})"))?;
        bed.conns_for(plan, results, engine, "1")?;
        // The same container (IPv4 only) from an IPv6 client at the node's IPv6 address:
        // Docker's docker-proxy on [::], netd's NAT46 in the kernel.
        progress.step(
            engine,
            &format!("IPv6 client to the IPv4-only container: TCP throughput ({of})"),
        )?;
        let gbps = tools::iperf_tcp(&client, Sandbox::NODE_ADDR6, plan.iperf_secs)?;
        if gbps <= 0.0 {
            bail!("{engine}: TCP throughput from an IPv6 client is zero");
        }
        results.add_engine(&name, "tcp6_gbps", gbps);
        progress.step(
            engine,
            &format!("IPv6 client to the IPv4-only container: new connections ({of})"),
        )?;
        seen6 = bed.conns6_for(plan, results, engine)?;
    }
    progress.step(
        engine,
        "docker run without ports (the container's own cost)",
    )?;
    let bare = timed(|| {
        bed.docker
            .run_idle(&["--name", "bare", "--network", "bench"])
            .map(drop)
    })?;
    results.add_engine(&name, "docker_run_bare_s", bare.as_secs_f64());
    bed.docker.ok(&["rm", "-f", "bare"])?;
    let largest = plan.ranges.iter().copied().max().unwrap_or(0);
    for &n in &plan.ranges {
        let last = RANGE_BASE + n - 1;
        let spec = format!("{RANGE_BASE}-{last}:{RANGE_BASE}-{last}");
        let (rss_before, procs_before) = bed.footprint();
        progress.step(engine, &format!("docker run -p {spec} ({n} ports)"))?;
        let took = timed(|| {
            bed.docker
                .run_idle(&["--name", "range", "--network", "bench", "-p", &spec])
                .map(drop)
        })?;
        let (rss_after, procs_after) = bed.footprint();
        results.add_engine(&name, &format!("publish_s@{n}"), took.as_secs_f64());
        results.add_engine(
            &name,
            &format!("publish_procs@{n}"),
            procs_after.saturating_sub(procs_before) as f64,
        );
        results.add_engine(
            &name,
            &format!("publish_mib@{n}"),
            rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        );
        if n == largest {
            for run in 1..=plan.runs {
                progress.step(
                    engine,
                    &format!("new connections ({} ports, run {run}/{})", n + 2, plan.runs),
                )?;
                bed.conns_for(plan, results, engine, "range")?;
            }
        }
        progress.step(engine, &format!("docker rm -f range ({n} ports)"))?;
        let took = timed(|| bed.docker.ok(&["rm", "-f", "range"]).map(drop))?;
        results.add_engine(&name, &format!("remove_s@{n}"), took.as_secs_f64());
    }
    let evidence = match &bed.netd {
        Some(netd) => {
            let dnat: u64 = ["UplinkXdp", "UplinkIngress"]
                .iter()
                .filter_map(|h| netd.counter(h, "dnat_new_flow").ok())
                .sum();
            let nat46_xdp = netd.counter("UplinkXdp", "nat46_new_flow").unwrap_or(0);
            let nat46 = netd.counter("UplinkIngress", "nat46_new_flow").unwrap_or(0) + nat46_xdp;
            let redirected = netd
                .counter("FastPath", "redirect_to_container")
                .unwrap_or(0);
            format!(
                "netd translated {dnat} new IPv4 flows and {nat46} of IPv6 clients by NAT46 ({nat46_xdp} of them in XDP; {redirected} packets into the container by the fast path); docker-proxy processes: {}",
                processes_named("docker-proxy").len()
            )
        }
        None => {
            let rules = bed.sandbox.node.exec(&["iptables-save", "-t", "nat"])?;
            let dnat = String::from_utf8_lossy(&rules.stdout)
                .lines()
                .filter(|l| l.contains("-j DNAT"))
                .count();
            format!("iptables DNAT rules now: {dnat} (the range's were removed with it)")
        }
    };
    let evidence = match seen6 {
        Some(peer) => format!("{evidence}; the container saw the IPv6 client as {peer}"),
        None => evidence,
    };
    progress.step(engine, &format!("done; {evidence}"))?;
    results.engine_evidence(&name, evidence);
    drop(bed);
    Ok(())
}

impl EngineBed {
    fn conns_for(
        &self,
        plan: &EnginePlan,
        results: &mut Results,
        engine: Engine,
        scale: &str,
    ) -> Result<()> {
        let peer = self.conns_to(
            plan,
            results,
            engine,
            Sandbox::NODE_ADDR.into(),
            "conn",
            scale,
        )?;
        if peer != Sandbox::EXT_ADDR {
            bail!(
                "{engine}: the server saw {peer}, expected the client's {}",
                Sandbox::EXT_ADDR
            );
        }
        Ok(())
    }

    /// New connections from the IPv6 client to the node's IPv6 address, into the
    /// IPv4-only container: the address the container saw the client as (netd: one of
    /// NAT46's pool, the client's own; Docker: its proxy's).
    fn conns6_for(
        &self,
        plan: &EnginePlan,
        results: &mut Results,
        engine: Engine,
    ) -> Result<Option<Ipv4Addr>> {
        let peer = self.conns_to(
            plan,
            results,
            engine,
            Sandbox::NODE_ADDR6.into(),
            "conn6",
            "1",
        )?;
        let pool = netd::daemon::NAT46_DEFAULT_POOL;
        if engine == Engine::DockerNetd && !pool.contains(&peer) {
            bail!(
                "{engine}: the container saw the IPv6 client as {peer}, not an address of NAT46's pool {pool}"
            );
        }
        Ok(Some(peer))
    }

    /// New connections from the client to `to`, recorded as `{metric}_rate@{scale}`,
    /// `_p99@` and `_errors@`: the address the container saw the client as.
    fn conns_to(
        &self,
        plan: &EnginePlan,
        results: &mut Results,
        engine: Engine,
        to: std::net::IpAddr,
        metric: &str,
        scale: &str,
    ) -> Result<Ipv4Addr> {
        if self.netd.is_none() {
            // The kernel's connection table starts empty each run, like netd's.
            let _ = self.sandbox.node.exec(&["conntrack", "-F"]);
        }
        let c = tools::conns(&self.sandbox.ext.path(), to, plan.load_secs)
            .with_context(|| format!("{engine}: new connections to {to}"))?;
        let peer = seen_peer(engine, &c.seen, self.container_ip)?;
        let name = engine.to_string();
        results.add_engine(&name, &format!("{metric}_rate@{scale}"), c.per_second);
        results.add_engine(&name, &format!("{metric}_p99@{scale}"), c.p99_us);
        results.add_engine(&name, &format!("{metric}_errors@{scale}"), c.errors);
        Ok(peer)
    }
}
