//! `cargo xtask bench`: netd (TC only, TC with the redirect fast path, XDP; and its
//! macvlan driver beside them) against Docker's iptables rules, a netavark-style nftables
//! map and the direct routed path (the floor), on the same topology, in one run.
//!
//! For each datapath a bed is built (`bed`), servers start in the container and in the
//! client's namespace (`tools`), a frame generator measures 64-byte forwarding
//! (`generator`), and every metric is measured `runs` times; the scale metrics again with
//! 1,000 and 10,000 published ports. `report` turns the samples into the terminal table,
//! the JSON file and the SVG chart.

pub mod bed;
pub mod cni;
pub mod engines;
pub mod generator;
pub mod load;
mod observers;
pub mod overlay;
pub mod report;
pub mod svg;
pub mod tools;

use std::{
    net::{IpAddr, SocketAddrV4, SocketAddrV6},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use bed::{Bed, Datapath};
use generator::{Cycles, Link, SINK_PORT, SOURCE_PORT, Sink};
use report::Results;
use tools::{LOAD_PORT, Servers};

use crate::Sandbox;

/// What to run.
pub struct Options {
    /// The reduced matrix for CI: one run of each, short, 1 and 10,000 ports.
    pub quick: bool,
    /// Datapaths to measure (all by default).
    pub datapaths: Vec<Datapath>,
    /// Docker engines to compare (Docker's bridge driver, Docker with netd).
    pub engines: Vec<engines::Engine>,
    /// CNI plugins to compare (the reference chain, netd-cni).
    pub cni: Vec<cni::CniPlugin>,
    /// Cross-node beds (the kernel's VXLAN, netd's overlay across and within a node).
    pub overlays: Vec<overlay::CrossNode>,
    /// Published ports of the scale runs, instead of the plan's.
    pub scales: Option<Vec<u16>>,
    /// Repeats of each measurement, instead of the plan's.
    pub runs: Option<usize>,
}

/// How much of everything: repeats, durations, scales.
struct Plan {
    runs: usize,
    /// Seconds of each iperf3 run.
    iperf_secs: u64,
    /// Seconds of each connection-rate and request/response run.
    load_secs: f64,
    /// Frames of each 64-byte generator run.
    frames: u32,
    /// Whether to run iperf3's 64-byte UDP too (sender-limited; left out of the quick run).
    iperf_udp: bool,
    /// Published ports for the scale runs.
    scales: Vec<u16>,
    /// Ranges published with `docker run -p` in the Docker comparison.
    docker_ranges: Vec<u16>,
    /// Containers attached and detached per scale in the CNI comparison.
    cni_attachments: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                runs: 1,
                iperf_secs: 1,
                load_secs: 0.5,
                frames: 200_000,
                iperf_udp: false,
                scales: vec![1, 10_000],
                docker_ranges: vec![100],
                cni_attachments: 20,
            }
        } else {
            Plan {
                runs: 3,
                iperf_secs: 3,
                load_secs: 2.0,
                frames: 3_000_000,
                iperf_udp: true,
                scales: vec![1, 1_000, 10_000],
                docker_ranges: vec![100, 1_000],
                cni_attachments: 200,
            }
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C or SIGTERM end the run at the next step; the beds' drops then remove
/// everything (the signal also reaches the load tools, which are in our process group).
pub fn stop_on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether Ctrl-C or SIGTERM asked the run to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Progress lines with the time since the start.
struct Progress {
    started: Instant,
}

impl Progress {
    fn step(&self, dp: impl std::fmt::Display, what: &str) -> Result<()> {
        if interrupted() {
            bail!("interrupted");
        }
        let t = self.started.elapsed().as_secs();
        println!(
            "[{:02}:{:02}] {:<13} {what}",
            t / 60,
            t % 60,
            dp.to_string()
        );
        Ok(())
    }
}

/// Measure every datapath of `opts`.
pub fn run(opts: &Options) -> Result<Results> {
    let mut plan = Plan::new(opts.quick);
    if let Some(scales) = &opts.scales {
        plan.scales = scales.clone();
    }
    if let Some(runs) = opts.runs {
        plan.runs = runs.max(1);
    }
    let progress = Progress {
        started: Instant::now(),
    };
    let mut results = Results::new(opts.quick, plan.runs);
    let cycles = Cycles::detect();
    results.note(
        "cycles",
        match &cycles {
            Cycles::Supported => "perf stat -e cycles -C <generator CPU> around each generator run; cycles/packet = cycles / delivered".into(),
            Cycles::Unsupported(why) => why.clone(),
        },
    );
    if !opts.datapaths.is_empty() {
        results.note(
            "fwd64",
            format!(
                "64-byte forwarding: {} frames per run from netd's bench_transmit (BPF_PROG_TEST_RUN, XDP live frames, batch {}, XDP_TX out of the client's veth) on CPU {} at SCHED_FIFO priority 1, which also runs the node's and the container's receive path (where the kernel refuses live frames, EPERM as on 6.18.44-fc, an AF_PACKET socket on the same CPU sends the same frame instead, 64 per sendmmsg past the qdisc: its syscalls count in the time too; the log says so); delivered = the container's Ip InDelivers delta; pps = delivered / generator wall time; ns/packet = that CPU's wall time / delivered (one CPU busy the whole run); dropped = frames - delivered",
                plan.frames,
                generator::BATCH,
                tools::CLIENT_CPU
            ),
        );
    }
    if opts.datapaths.iter().any(|d| d.has_ipv6()) {
        results.note(
            "ipv6",
            format!("IPv6 rows: every bed but netd-macvlan is dual-stack (the bridge fd00:17::1/64, the container fd00:17::2; netd: `--ipv6 --fixed-cidr-v6 {}`; Docker's rules installed with ip6tables-restore as well, netavark's map in a second table of the ip6 family), and every port is published on both families (the scale runs' fillers and `adding one mapping` too); the client dials the node's 2001:db8:200::2 (direct: the container's own address), the container dials the client's 2001:db8:200::1; the servers listen on [::]; the generator's IPv6 frames carry the same 18-byte payload behind an IPv6 header, 80 bytes (84 on a wire: no IPv6 UDP frame fits the 64-byte minimum), delivered = the container's Ip6InDelivers delta. netd translates IPv6 in its TC programs and, in netd-xdp, TCP and UDP from the network in its XDP program (`uplink_xdp6`: DNAT66, established flows, masquerade's replies); the fast path takes it into the container", bed::SUBNET6),
        );
    }
    for &dp in &opts.datapaths {
        measure(dp, &plan, &cycles, &progress, &mut results)?;
    }
    let engine_plan = engines::EnginePlan {
        runs: plan.runs,
        iperf_secs: plan.iperf_secs,
        load_secs: plan.load_secs,
        ranges: plan.docker_ranges.clone(),
    };
    if !opts.engines.is_empty() {
        results.note(
            "docker",
            "Docker 20.10 (Debian's docker.io) in the node: docker-bridge is Docker's bridge driver as shipped (--iptables=true, userland proxy on: iptables DNAT and a docker-proxy per port and family), docker-netd is `docker network create -d netd --ipam-driver netd` with --iptables=false; the same client, container servers and load as the datapath rows; a range is `docker run -p B-E:B-E` of an idle busybox container, its time includes creating and starting the container (`docker run, no ports` is that alone); memory is the RSS added to dockerd, netd and docker-proxy processes; new connections with the range are measured through the container `web`'s port with the range's container running".into(),
        );
    }
    for &engine in &opts.engines {
        engines::measure(engine, &engine_plan, &progress, &mut results)?;
    }
    let cni_plan = cni::CniPlan {
        attachments: plan.cni_attachments,
        scales: vec![0, 10_000],
    };
    if !opts.cni.is_empty() {
        results.note(
            "cni",
            format!("CNI attachment latency: {} containers per scale, each publishing one port, attached (ADD) then detached (DEL) one after the other by exec'ing the plugins from the node's network namespace as libcni does (cni-bridge: bridge with host-local, then portmap with the previous result; DEL in reverse); the time of the whole chain per container, median and p99; 10,000 ports published first (netd: one container with a range; the reference: portmap's chains filled with one iptables-restore)", plan.cni_attachments),
        );
    }
    for &plugin in &opts.cni {
        cni::measure(plugin, &cni_plan, &progress, &mut results)?;
    }
    let overlay_plan = overlay::OverlayPlan {
        runs: plan.runs,
        iperf_secs: plan.iperf_secs,
        load_secs: plan.load_secs,
        frames: plan.frames,
    };
    if !opts.overlays.is_empty() {
        results.note(
            "cross-node",
            format!("a container on node 1 to a container on node 2 of one overlay network: two node namespaces on an underlay switch (a bridge in its own namespace), a three-member etcd 3.4 running for every bed; vxlan-fdb is the kernel's path as flannel's vxlan backend lays it out (a bridge with a `nolearning` VXLAN device and the container's veth on each node, a static FDB entry for the other container's MAC, a permanent neighbour entry in each container), netd-overlay is `netd network create -d overlay` with the daemons' defaults (--fast-path on --xdp native), netd-overlay-noxdp the same with --xdp off (an XDP program on a veth turns segmentation offload off on its peer, so the underlay hands the receiving node each 1450-byte packet on its own: the difference between the two is that, and with XDP off published ports are translated in TC only), netd-same-node the overlay with both containers on node 1; MTU 1450 on every container; the client's tools in the client container, the servers in the server container; 64-byte frames: {} per run from the generator out of the client container's eth0 (XDP_TX into its veth), delivered = the server container's Ip InDelivers delta; the ratio columns are each bed's median over vxlan-fdb's", plan.frames),
        );
    }
    for &kind in &opts.overlays {
        overlay::measure(kind, &overlay_plan, &cycles, &progress, &mut results)?;
    }
    Ok(results)
}

fn measure(
    dp: Datapath,
    plan: &Plan,
    cycles: &Cycles,
    progress: &Progress,
    results: &mut Results,
) -> Result<()> {
    progress.step(
        dp,
        "building the bed (namespaces, network, container, translation)",
    )?;
    let mut bed = Bed::new(dp)?;
    if let Some(text) = dp.note() {
        results.note(&dp.to_string(), text.into());
    }
    if let Some(config) = &bed.netd_config {
        results.config(dp, config.clone());
    }
    // Servers live at most as long as a whole run could; they stop by themselves.
    let lifetime = Duration::from_secs(1800);
    let container = Servers::start_on(&bed.container, lifetime, dp.has_ipv6())?;
    let outside = Servers::start_on(&bed.sandbox.ext.path(), lifetime, dp.has_ipv6())?;
    let client = bed.sandbox.ext.path();
    let sink = Sink::bind_on(&bed.container, dp.has_ipv6())?;
    let max_scale = plan.scales.iter().copied().max().unwrap_or(1);
    if let Some(kib) = bed.daemon_rss_kib() {
        results.add(dp, "rss_idle", kib as f64 / 1024.0);
    }
    for &ports in &plan.scales {
        if ports > 1 && !dp.translates() {
            continue;
        }
        if dp.translates() {
            progress.step(dp, &format!("installing {ports} published ports"))?;
        }
        if let Some(took) = bed.install(ports - 1)?
            && ports == max_scale
            && ports > 1
        {
            results.add(dp, "install_all", took.as_secs_f64() * 1e3);
        }
        for run in 1..=plan.runs {
            let of = format!("{ports} ports, run {run}/{}", plan.runs);
            if ports == 1 {
                progress.step(dp, &format!("TCP throughput ({of})"))?;
                let gbps = tools::iperf_tcp(&client, bed.target, plan.iperf_secs)?;
                check(gbps > 0.0, dp, "TCP throughput is zero")?;
                results.add(dp, "tcp_gbps", gbps);

                progress.step(dp, &format!("64-byte frames, XDP generator ({of})"))?;
                forwarding_64(&bed, &container, &sink, plan, cycles, results, Family::Ipv4)?;

                if plan.iperf_udp {
                    progress.step(dp, &format!("UDP 64-byte packets, iperf3 ({of})"))?;
                    let udp = tools::iperf_udp64(&client, bed.target, plan.iperf_secs)?;
                    check(udp.received_pps > 0.0, dp, "no UDP packet arrived")?;
                    results.add(dp, "udp_rx_pps", udp.received_pps);
                    results.add(dp, "udp_tx_pps", udp.sent_pps);
                    results.add(dp, "udp_loss", udp.loss_percent);
                }

                progress.step(dp, &format!("masqueraded TCP throughput ({of})"))?;
                let gbps = tools::iperf_tcp(&bed.container, Sandbox::EXT_ADDR, plan.iperf_secs)?;
                check(gbps > 0.0, dp, "egress throughput is zero")?;
                results.add(dp, "egress_gbps", gbps);

                progress.step(dp, &format!("masqueraded connections ({of})"))?;
                bed.forget_connections();
                let overflows = outside.listen_overflows();
                let c = tools::conns(&bed.container, Sandbox::EXT_ADDR, plan.load_secs)?;
                let overflows = outside.listen_overflows() - overflows;
                results.add(dp, "egress_conn_overflows", overflows as f64);
                check_seen(dp, &c.seen, bed.egress_source(), Sandbox::EXT_ADDR)?;
                results.add(dp, "egress_conn_rate", c.per_second);
                results.add(dp, "egress_conn_p50", c.p50_us);
                results.add(dp, "egress_conn_p99", c.p99_us);
                results.add(dp, "egress_conn_errors", c.errors);
            }
            progress.step(dp, &format!("new connections ({of})"))?;
            bed.forget_connections();
            let overflows = container.listen_overflows();
            let c = tools::conns(&client, bed.target, plan.load_secs)?;
            let overflows = container.listen_overflows() - overflows;
            results.add(dp, &format!("conn_overflows@{ports}"), overflows as f64);
            check_seen(dp, &c.seen, Sandbox::EXT_ADDR, bed.container_addr)?;
            results.add(dp, &format!("conn_rate@{ports}"), c.per_second);
            results.add(dp, &format!("conn_p50@{ports}"), c.p50_us);
            results.add(dp, &format!("conn_p99@{ports}"), c.p99_us);
            results.add(dp, &format!("conn_errors@{ports}"), c.errors);

            progress.step(dp, &format!("request/response latency ({of})"))?;
            let r = tools::rr(&client, bed.target, plan.load_secs)?;
            check_seen(dp, &r.seen, Sandbox::EXT_ADDR, bed.container_addr)?;
            results.add(dp, &format!("rr_p50@{ports}"), r.p50_us);
            results.add(dp, &format!("rr_p99@{ports}"), r.p99_us);

            let ctx = Ipv6Run {
                servers: &container,
                sink: &sink,
                cycles,
                progress,
            };
            measure_ipv6(&bed, ports, &of, plan, &ctx, results)?;
        }
        if ports == max_scale && ports > 1 {
            if let Some(kib) = bed.daemon_rss_kib() {
                results.add(dp, "rss_all", kib as f64 / 1024.0);
            }
            progress.step(dp, &format!("adding one mapping to {ports}"))?;
            if let Some(took) = bed.add_one()? {
                results.add(dp, "add_one", took.as_secs_f64() * 1e3);
            }
        }
    }
    // With the fillers in place if `add_one` ran; else (netd-macvlan publishes nothing)
    // on an otherwise idle daemon.
    if let Some(took) = bed.bare_container()? {
        results.add(dp, "create_bare", took.as_secs_f64() * 1e3);
    }
    if let Some(cpu) = bed.daemon_cpu_seconds() {
        results.add(dp, "daemon_cpu", cpu);
    }
    let evidence = bed.translation_counters()?;
    progress.step(dp, &format!("done; translation evidence: {evidence}"))?;
    results.evidence(dp, evidence);
    Ok(())
}

/// The IPv6 twins of the published-port and masquerade rows, on a dual-stack bed: the
/// client dials the node's IPv6 address (or the container's own where nothing
/// translates), the container dials the client's; each checked as the IPv4 rows are, by
/// the addresses the server saw.
fn measure_ipv6(
    bed: &Bed,
    ports: u16,
    of: &str,
    plan: &Plan,
    run: &Ipv6Run,
    results: &mut Results,
) -> Result<()> {
    let Ipv6Run {
        servers,
        sink,
        cycles,
        progress,
    } = *run;
    let dp = bed.datapath;
    let (Some(target), Some(container), Some(egress)) =
        (bed.target6, bed.container_addr6, bed.egress_source6())
    else {
        return Ok(());
    };
    let client = bed.sandbox.ext.path();
    if ports == 1 {
        progress.step(dp, &format!("IPv6: 80-byte frames, XDP generator ({of})"))?;
        forwarding_64(bed, servers, sink, plan, cycles, results, Family::Ipv6)?;

        progress.step(dp, &format!("IPv6: TCP throughput ({of})"))?;
        let gbps = tools::iperf_tcp(&client, target, plan.iperf_secs)?;
        check(gbps > 0.0, dp, "IPv6 TCP throughput is zero")?;
        results.add(dp, "tcp6_gbps", gbps);

        progress.step(dp, &format!("IPv6: masqueraded TCP throughput ({of})"))?;
        let gbps = tools::iperf_tcp(&bed.container, Sandbox::EXT_ADDR6, plan.iperf_secs)?;
        check(gbps > 0.0, dp, "IPv6 egress throughput is zero")?;
        results.add(dp, "egress6_gbps", gbps);

        progress.step(dp, &format!("IPv6: masqueraded connections ({of})"))?;
        bed.forget_connections();
        let c = tools::conns(&bed.container, Sandbox::EXT_ADDR6, plan.load_secs)?;
        check_seen(dp, &c.seen, egress, Sandbox::EXT_ADDR6)?;
        results.add(dp, "egress6_conn_rate", c.per_second);
        results.add(dp, "egress6_conn_p50", c.p50_us);
        results.add(dp, "egress6_conn_p99", c.p99_us);
        results.add(dp, "egress6_conn_errors", c.errors);
    }
    progress.step(dp, &format!("IPv6: new connections ({of})"))?;
    bed.forget_connections();
    let c = tools::conns(&client, target, plan.load_secs)?;
    check_seen(dp, &c.seen, Sandbox::EXT_ADDR6, container)?;
    results.add(dp, &format!("conn6_rate@{ports}"), c.per_second);
    results.add(dp, &format!("conn6_p50@{ports}"), c.p50_us);
    results.add(dp, &format!("conn6_p99@{ports}"), c.p99_us);
    results.add(dp, &format!("conn6_errors@{ports}"), c.errors);
    Ok(())
}

/// What the IPv6 rows measure with, besides the bed: the container's servers and sink,
/// the cycle counter, the progress lines.
#[derive(Clone, Copy)]
struct Ipv6Run<'a> {
    servers: &'a Servers,
    sink: &'a Sink,
    cycles: &'a Cycles,
    progress: &'a Progress,
}

/// The family of the generator's frames: IPv4's 60 bytes (64 on a wire) or the same
/// payload over IPv6 (80 bytes), and the prefix of their rows' keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    fn prefix(self) -> &'static str {
        match self {
            Family::Ipv4 => "fwd64",
            Family::Ipv6 => "fwd6",
        }
    }
}

/// One run of the generator toward the sink port (64-byte IPv4 frames, or their IPv6
/// twins): what the container received, what was lost where, and the CPU cost per packet.
fn forwarding_64(
    bed: &Bed,
    container: &Servers,
    sink: &Sink,
    plan: &Plan,
    cycles: &Cycles,
    results: &mut Results,
    family: Family,
) -> Result<()> {
    let dp = bed.datapath;
    let (ext, node) = (&bed.sandbox.ext, &bed.sandbox.node);
    let client_if = Link::read(&ext.path(), "ext0")?;
    let uplink = Link::read(&node.path(), Sandbox::UPLINK)?;
    // To the node's uplink, or straight to the container where it is on the client's LAN.
    let dst_mac = bed.lan_mac.unwrap_or(uplink.mac);
    let frame = match (family, bed.target6) {
        (Family::Ipv4, _) => generator::udp_frame(
            client_if.mac,
            dst_mac,
            SocketAddrV4::new(Sandbox::EXT_ADDR, SOURCE_PORT),
            SocketAddrV4::new(bed.target, SINK_PORT),
            generator::PAYLOAD,
        ),
        (Family::Ipv6, Some(target6)) => generator::udp6_frame(
            client_if.mac,
            dst_mac,
            SocketAddrV6::new(Sandbox::EXT_ADDR6, SOURCE_PORT, 0, 0),
            SocketAddrV6::new(target6, SINK_PORT, 0, 0),
            generator::PAYLOAD,
        ),
        (Family::Ipv6, None) => bail!("{dp}: the bed has no IPv6"),
    };
    let key = |what: &str| format!("{}_{what}", family.prefix());
    let netd_before = bed.netd_drops()?;
    let driver_before = generator::driver_drops(node, Sandbox::UPLINK)?;
    let softnet_before = generator::softnet_dropped(tools::CLIENT_CPU)?;
    let d = Delivery::measure(
        &dp,
        &ext.path(),
        client_if.ifindex,
        &frame,
        container,
        sink,
        plan.frames,
        cycles,
    )?;
    let driver = generator::driver_drops(node, Sandbox::UPLINK)?.saturating_sub(driver_before);
    let softnet = generator::softnet_dropped(tools::CLIENT_CPU)?.saturating_sub(softnet_before);
    let client_after = Link::read(&ext.path(), "ext0")?;
    let uplink_after = Link::read(&node.path(), Sandbox::UPLINK)?;
    let netd_drops = match (netd_before, bed.netd_drops()?) {
        (Some(a), Some(b)) => Some((b - a) as f64),
        _ => None,
    };
    d.record(|what, value| results.add(dp, &key(what), value));
    results.add(
        dp,
        &key("client_tx_dropped"),
        client_after.tx_dropped.saturating_sub(client_if.tx_dropped) as f64,
    );
    results.add(
        dp,
        &key("uplink_rx_dropped"),
        uplink_after.rx_dropped.saturating_sub(uplink.rx_dropped) as f64,
    );
    results.add(dp, &key("uplink_xdp_errors"), driver as f64);
    results.add(dp, &key("softnet_dropped"), softnet as f64);
    if let Some(d) = netd_drops {
        results.add(dp, &key("netd_drops"), d);
    }
    Ok(())
}

/// What one run of the 64-byte generator delivered to the servers' namespace.
struct Delivery {
    sent: generator::Sent,
    delivered: f64,
    rcvbuf_full: f64,
}

impl Delivery {
    /// Send `frames` copies of `frame` out of interface `ifindex` of the namespace at
    /// `client`, and count what the namespace of `server` delivered (its Ip InDelivers).
    /// Fails unless a frame reached the sink intact from the frame's own source and the
    /// namespace counted no UDP checksum error: proof the path delivered it unharmed.
    #[allow(clippy::too_many_arguments)]
    fn measure(
        what: &dyn std::fmt::Display,
        client: &std::path::Path,
        ifindex: u32,
        frame: &[u8],
        server: &Servers,
        sink: &Sink,
        frames: u32,
        cycles: &Cycles,
    ) -> Result<Delivery> {
        let from = generator::source_of(frame).context("not a UDP frame the bench makes")?;
        let ipv6 = from.is_ipv6();
        sink.drain()?;
        let pid = server.pid();
        let [delivered_before, csum_before, rcvbuf_before] = generator::udp_counts(pid, ipv6)?;
        let sent = generator::run(
            client,
            ifindex,
            frame,
            frames,
            cycles,
            Duration::from_secs(60),
        )?;
        let [delivered_after, _, rcvbuf_after] = generator::udp_counts(pid, ipv6)?;
        let delivered = (delivered_after - delivered_before) as f64;
        let rcvbuf_full = (rcvbuf_after - rcvbuf_before) as f64;
        // Honesty: a frame reached the container's socket intact (the stack checks the
        // UDP checksum when it is read) from the frame's own source.
        let first = sink.drain()?;
        let csum_errors = generator::udp_counts(pid, ipv6)?[1] - csum_before;
        if csum_errors != 0 {
            bail!("{what}: the container counted {csum_errors} UDP checksum errors");
        }
        match first {
            Some((seen, true)) if seen == from => {}
            Some((seen, ok)) => bail!(
                "{what}: the sink got a frame from {seen} (payload {}), expected {from}",
                if ok { "intact" } else { "changed" },
            ),
            None => bail!("{what}: no generator frame reached the container's socket"),
        }
        if delivered <= 0.0 {
            bail!("{what}: no 64-byte frame was delivered");
        }
        Ok(Delivery {
            sent,
            delivered,
            rcvbuf_full,
        })
    }

    /// The figures every 64-byte row reports, by key (after the family's prefix).
    fn record(&self, mut add: impl FnMut(&str, f64)) {
        let (sent, delivered) = (self.sent.frames, self.delivered);
        let seconds = self.sent.seconds.max(1e-9);
        add("pps", delivered / seconds);
        add("sent_pps", sent / seconds);
        add("dropped", (sent - delivered).max(0.0) / sent * 100.0);
        add("ns_per_packet", seconds * 1e9 / delivered);
        add("rcvbuf_full", self.rcvbuf_full);
        if let Some(c) = self.sent.cycles {
            add("cycles_per_packet", c / delivered);
        }
    }
}

fn check(ok: bool, dp: impl std::fmt::Display, what: &str) -> Result<()> {
    if !ok {
        bail!("{dp}: {what}");
    }
    Ok(())
}

/// The server's `PEER LOCAL` line must show the expected client and server addresses:
/// proof that the datapath delivered (and translated) the connection as it should. A
/// dual-stack server sees an IPv4 client as `::ffff:a.b.c.d`: read back as IPv4.
fn check_seen(
    dp: impl std::fmt::Display,
    seen: &str,
    peer: impl Into<IpAddr>,
    local: impl Into<IpAddr>,
) -> Result<()> {
    let (peer, local) = (peer.into(), local.into());
    let mut parts = seen.split_whitespace();
    let ip = |s: Option<&str>| s.and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    let (Some(p), Some(l)) = (ip(parts.next()), ip(parts.next())) else {
        bail!("{dp}: the server's answer {seen:?} is not `PEER LOCAL`");
    };
    if p.ip().to_canonical() != peer || l.ip().to_canonical() != local || l.port() != LOAD_PORT {
        bail!(
            "{dp}: the server saw {p} -> {l}, expected {peer} -> {} (not translated as it should be)",
            std::net::SocketAddr::new(local, LOAD_PORT)
        );
    }
    Ok(())
}

/// Where the report files go by default.
pub fn default_out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench")
}
