//! Across nodes: a container on node 1 talking to a container on node 2 of one overlay
//! network, on the multi-node bed of the end-to-end tests (`crate::cluster`: two node
//! namespaces on an underlay switch, a three-member etcd running in every case).
//!
//! - `vxlan-fdb`: the kernel's own path, as flannel's vxlan backend builds it: on each
//!   node a bridge with a VXLAN device (`nolearning`) and the container's veth, a static
//!   FDB entry sending the other container's MAC to the other node, a permanent
//!   neighbour entry in each container (no ARP, no flooding); MTU 1450 on the containers.
//! - `netd-overlay`: `netd network create -d overlay`, a container run on each node;
//!   netd's programs encapsulate at the client's veth and deliver from the VXLAN device.
//!   With the daemons' defaults (XDP on the uplinks), and as `netd-overlay-noxdp` with
//!   `--xdp off`: an XDP program on a veth uplink turns off segmentation offload on its
//!   peer, so the underlay hands the receiving node every 1450-byte packet on its own
//!   (virtio-net with XDP likewise needs guest TSO off); the two show what that costs.
//! - `netd-same-node`: the same two containers on one node of the same overlay (netd's
//!   bridge of the overlay, nothing encapsulated): what crossing nodes costs.
//!
//! Each bed is measured with the tools of the datapath rows: iperf3 TCP throughput,
//! `netd-load` connections/s and request/response latency, and the 64-byte generator
//! sending out of the client container's own interface.

use std::{fmt, net::Ipv4Addr, net::SocketAddrV4, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};

use super::{
    Delivery, Progress, bed, check, check_seen,
    generator::{self, Cycles, Link, SINK_PORT, SOURCE_PORT, Sink},
    report::Results,
    tools::{self, Servers},
};
use crate::{
    cluster::{Cluster, UNDERLAY_IF, node_addr},
    netns::{Netns, plug, run, unique_name},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossNode {
    /// A plain VXLAN device on a bridge with static FDB entries (the kernel's path).
    Vxlan,
    /// netd's overlay, the containers on two nodes; the daemons' defaults.
    Netd,
    /// The same with no XDP program on the nodes' uplinks (`--xdp off`).
    NetdNoXdp,
    /// netd's overlay, both containers on one node.
    SameNode,
}

impl CrossNode {
    /// In the table's order: the baseline first, netd's ratio is over it.
    pub const ALL: [CrossNode; 4] = [
        CrossNode::Vxlan,
        CrossNode::Netd,
        CrossNode::NetdNoXdp,
        CrossNode::SameNode,
    ];

    /// `overlay` names them all.
    pub fn by_name(name: &str) -> Option<Vec<CrossNode>> {
        if name == "overlay" {
            return Some(Self::ALL.to_vec());
        }
        Self::ALL
            .into_iter()
            .find(|k| k.to_string() == name)
            .map(|k| vec![k])
    }
}

impl fmt::Display for CrossNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CrossNode::Vxlan => "vxlan-fdb",
            CrossNode::Netd => "netd-overlay",
            CrossNode::NetdNoXdp => "netd-overlay-noxdp",
            CrossNode::SameNode => "netd-same-node",
        })
    }
}

/// How much: repeats, seconds of each load run, frames of each generator run.
pub struct OverlayPlan {
    pub runs: usize,
    pub iperf_secs: u64,
    pub load_secs: f64,
    pub frames: u32,
}

/// The VXLAN ID, addresses and MTU of the `vxlan-fdb` bed (netd's overlay picks its own).
const BASELINE_VNI: &str = "4242";
const OVERLAY_MTU: &str = "1450";

fn baseline_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, 0, 10 + i as u8)
}

/// One side of the conversation: a container's network namespace and address.
struct End {
    netns: PathBuf,
    addr: Ipv4Addr,
}

/// Two containers on the multi-node bed, the client on node 1.
struct CrossBed {
    kind: CrossNode,
    client: End,
    server: End,
    /// The client's host-side veth on node 1.
    client_veth: String,
    /// The `vxlan-fdb` containers' namespaces (netd's are the daemons').
    _containers: Vec<Netns>,
    cluster: Cluster,
}

impl CrossBed {
    fn new(kind: CrossNode) -> Result<Self> {
        let mut cluster = Cluster::new("bov", 2)?;
        let bed = match kind {
            CrossNode::Vxlan => Self::kernel_vxlan(cluster)?,
            CrossNode::Netd | CrossNode::NetdNoXdp | CrossNode::SameNode => {
                let xdp = if kind == CrossNode::NetdNoXdp {
                    "off"
                } else {
                    "native"
                };
                for i in 0..2 {
                    cluster.start_daemon(i, 10, &["--fast-path", "on", "--xdp", xdp])?;
                }
                Self::netd_overlay(kind, cluster)?
            }
        };
        // NAPI on the client's host-side veth: it then takes the generator's XDP_TX frames
        // from the container's end (the same for every bed).
        bed.cluster.nodes[0]
            .exec(&["ethtool", "-K", &bed.client_veth, "gro", "on"])
            .context("turn GRO on on the client's veth")?;
        bed.wait_reachable()?;
        Ok(bed)
    }

    /// The kernel's path: a bridge and a `nolearning` VXLAN device on each node, one
    /// container each, static FDB and neighbour entries for the other container.
    fn kernel_vxlan(cluster: Cluster) -> Result<Self> {
        let base = unique_name("bvx");
        let mut containers = Vec::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            let local = node_addr(i).to_string();
            node.ip(&["link", "add", "br0", "type", "bridge"])?;
            node.ip(&["link", "set", "br0", "up"])?;
            node.ip(&[
                "link",
                "add",
                "vx0",
                "type",
                "vxlan",
                "id",
                BASELINE_VNI,
                "dstport",
                "4789",
                "local",
                &local,
                "dev",
                UNDERLAY_IF,
                "nolearning",
            ])?;
            node.ip(&["link", "set", "vx0", "master", "br0", "up"])?;
            let ct = Netns::new(&format!("{base}c{i}"))?;
            let addr = format!("{}/24", baseline_addr(i));
            plug(&ct, "eth0", Some(&addr), node, "br0", "vc0")?;
            ct.ip(&["link", "set", "eth0", "mtu", OVERLAY_MTU])?;
            node.ip(&["link", "set", "vc0", "mtu", OVERLAY_MTU])?;
            containers.push(ct);
        }
        let macs = containers
            .iter()
            .map(|c| Link::read(&c.path(), "eth0").map(|l| bed::mac_text(&l.mac)))
            .collect::<Result<Vec<_>>>()?;
        for (i, (node, ct)) in cluster.nodes.iter().zip(&containers).enumerate() {
            let j = 1 - i;
            let remote = node_addr(j).to_string();
            // The bridge sends the other container's MAC to the VXLAN port, which sends
            // it to the other node: no flooding, no learning.
            run(
                "bridge",
                &[
                    "-n", &node.name, "fdb", "add", &macs[j], "dev", "vx0", "master", "static",
                ],
            )?;
            run(
                "bridge",
                &[
                    "-n",
                    &node.name,
                    "fdb",
                    "add",
                    &macs[j],
                    "dev",
                    "vx0",
                    "self",
                    "dst",
                    &remote,
                    "permanent",
                ],
            )?;
            ct.ip(&[
                "neigh",
                "replace",
                &baseline_addr(j).to_string(),
                "lladdr",
                &macs[j],
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
        }
        let end = |i: usize| End {
            netns: containers[i].path(),
            addr: baseline_addr(i),
        };
        Ok(CrossBed {
            kind: CrossNode::Vxlan,
            client: end(0),
            server: end(1),
            client_veth: "vc0".into(),
            _containers: containers,
            cluster,
        })
    }

    /// netd's overlay, made on node 1 and seen by node 2; the server on node 2, or on
    /// node 1 beside the client.
    fn netd_overlay(kind: CrossNode, cluster: Cluster) -> Result<Self> {
        let (d1, d2) = (&cluster.daemons[0], &cluster.daemons[1]);
        d1.cli_ok(&["network", "create", "-d", "overlay", "bench"])?;
        wait("node 2 sees the overlay", Duration::from_secs(5), || {
            Ok(d2.cli_ok(&["network", "ls"])?.contains("bench"))
        })?;
        let server_node = if kind == CrossNode::SameNode { d1 } else { d2 };
        let server = server_node.run_idle_on("srv", "bench", &[])?;
        let client = d1.run_idle_on("cli", "bench", &[])?;
        Ok(CrossBed {
            kind,
            client: End {
                netns: client.netns,
                addr: client.ip,
            },
            server: End {
                netns: server.netns,
                addr: server.ip,
            },
            client_veth: client.host_veth,
            _containers: Vec::new(),
            cluster,
        })
    }

    /// Until the client pings the server (netd: the endpoint has reached node 1's table).
    fn wait_reachable(&self) -> Result<()> {
        let net = format!("--net={}", self.client.netns.display());
        let to = self.server.addr.to_string();
        wait(
            "the client reaches the server",
            Duration::from_secs(10),
            || {
                Ok(std::process::Command::new("nsenter")
                    .args([&net, "ping", "-c", "1", "-W", "1", &to])
                    .output()?
                    .status
                    .success())
            },
        )
    }

    /// The MAC the client sends the server's packets to (its neighbour entry).
    fn server_mac(&self) -> Result<[u8; 6]> {
        let out = run(
            "nsenter",
            &[
                &format!("--net={}", self.client.netns.display()),
                "ip",
                "-j",
                "neigh",
                "show",
                &self.server.addr.to_string(),
            ],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let text = v[0]["lladdr"]
            .as_str()
            .context("the client has no neighbour entry for the server")?;
        generator::parse_mac(text)
    }

    /// Evidence that the path was the one named: VXLAN counters or netd's own.
    fn evidence(&self) -> Result<String> {
        let stats = |i: usize| -> Result<serde_json::Value> {
            Ok(serde_json::from_str(
                &self.cluster.daemons[i].cli_ok(&["stats", "--format", "json"])?,
            )?)
        };
        Ok(match self.kind {
            CrossNode::Vxlan => {
                let packets = |i: usize, dir: &str| -> Result<u64> {
                    let out = self.cluster.nodes[i].ip(&["-j", "-s", "link", "show", "vx0"])?;
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                    Ok(v[0]["stats64"][dir]["packets"].as_u64().unwrap_or(0))
                };
                let (tx, rx) = (packets(0, "tx")?, packets(1, "rx")?);
                if tx == 0 || rx == 0 {
                    bail!(
                        "{}: vx0 sent {tx} on node 1 and received {rx} on node 2",
                        self.kind
                    );
                }
                format!("vx0 sent {tx} packets on node 1, received {rx} on node 2")
            }
            CrossNode::Netd | CrossNode::NetdNoXdp => {
                let (s1, s2) = (stats(0)?, stats(1)?);
                let sent = bed::netd_sum(&s1, |_, r| r == "overlay_sent");
                let delivered = bed::netd_sum(&s2, |_, r| r == "overlay_delivered");
                if sent == 0 || delivered == 0 {
                    bail!(
                        "{}: node 1 sent {sent}, node 2 delivered {delivered}",
                        self.kind
                    );
                }
                format!(
                    "node 1 sent {sent} frames into VXLAN, node 2 delivered {delivered}; drops: node 1 {}, node 2 {}",
                    bed::netd_drops_text(&s1),
                    bed::netd_drops_text(&s2)
                )
            }
            CrossNode::SameNode => {
                let s1 = stats(0)?;
                let sent = bed::netd_sum(&s1, |_, r| r == "overlay_sent");
                if sent != 0 {
                    bail!("{}: node 1 sent {sent} frames into VXLAN", self.kind);
                }
                format!(
                    "nothing sent into VXLAN (both containers on node 1's bridge of the overlay); drops: {}",
                    bed::netd_drops_text(&s1)
                )
            }
        })
    }
}

/// Until `f` holds, for at most `within`.
fn wait(what: &str, within: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = std::time::Instant::now() + within;
    while !f()? {
        if std::time::Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Measure one cross-node bed.
pub(super) fn measure(
    kind: CrossNode,
    plan: &OverlayPlan,
    cycles: &Cycles,
    progress: &Progress,
    results: &mut Results,
) -> Result<()> {
    progress.step(
        kind,
        "building the bed (underlay, etcd, two nodes, two containers)",
    )?;
    let bed = CrossBed::new(kind)?;
    let lifetime = Duration::from_secs(1800);
    let server = Servers::start(&bed.server.netns, lifetime)?;
    let sink = Sink::bind(&bed.server.netns)?;
    let client = &bed.client.netns;
    let client_if = Link::read(client, "eth0")?;
    let frame = generator::udp_frame(
        client_if.mac,
        bed.server_mac()?,
        SocketAddrV4::new(bed.client.addr, SOURCE_PORT),
        SocketAddrV4::new(bed.server.addr, SINK_PORT),
        generator::PAYLOAD,
    );
    let mut add = |key: &str, value: f64| results.add_overlay(&kind.to_string(), key, value);
    for run in 1..=plan.runs {
        let of = format!("run {run}/{}", plan.runs);
        progress.step(kind, &format!("TCP throughput ({of})"))?;
        let gbps = tools::iperf_tcp(client, bed.server.addr, plan.iperf_secs)?;
        check(gbps > 0.0, kind, "TCP throughput is zero")?;
        add("tcp_gbps", gbps);

        progress.step(kind, &format!("new connections ({of})"))?;
        let c = tools::conns(client, bed.server.addr, plan.load_secs)?;
        check_seen(kind, &c.seen, bed.client.addr, bed.server.addr)?;
        add("conn_rate", c.per_second);
        add("conn_p50", c.p50_us);
        add("conn_p99", c.p99_us);
        add("conn_errors", c.errors);

        progress.step(kind, &format!("request/response latency ({of})"))?;
        let r = tools::rr(client, bed.server.addr, plan.load_secs)?;
        check_seen(kind, &r.seen, bed.client.addr, bed.server.addr)?;
        add("rr_p50", r.p50_us);
        add("rr_p99", r.p99_us);

        progress.step(kind, &format!("64-byte frames, XDP generator ({of})"))?;
        Delivery::measure(
            &kind,
            client,
            client_if.ifindex,
            &frame,
            &server,
            &sink,
            plan.frames,
            cycles,
        )?
        .record(|what, value| add(&format!("fwd64_{what}"), value));
    }
    let evidence = bed.evidence()?;
    progress.step(kind, &format!("done; {evidence}"))?;
    results.overlay_evidence(&kind.to_string(), evidence);
    Ok(())
}
