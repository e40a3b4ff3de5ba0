//! One test bed per datapath, all with the same addresses and links: the standard sandbox
//! (ext client, node with uplink0, inet host), bridge `netd0` 172.17.0.1/16 on the node,
//! and one container at 172.17.0.2 serving the benchmark ports. What differs is only who
//! translates: nobody (`direct`: the client routes to the container's address), Docker's
//! iptables rules, one nftables rule with a verdict map (as netavark does), or netd.

use std::{fmt, net::Ipv4Addr, path::PathBuf};

use anyhow::{Context, Result, bail};

use crate::{Daemon, Netns, Sandbox, netns::run, unique_name};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datapath {
    Direct,
    Iptables,
    Nftables,
    Netd,
}

impl Datapath {
    pub const ALL: [Datapath; 4] = [
        Datapath::Direct,
        Datapath::Iptables,
        Datapath::Nftables,
        Datapath::Netd,
    ];
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Datapath::Direct => "direct",
            Datapath::Iptables => "iptables",
            Datapath::Nftables => "nftables",
            Datapath::Netd => "netd",
        })
    }
}

pub const CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
/// Container ports of the services the benchmark runs, published on the same host port.
pub const TCP_PORT: u16 = 8080;
pub const IPERF_PORT: u16 = 5201;
pub const UDP_PORT: u16 = 9000;
/// Where the filler mappings of the scale runs start (host port = container port).
pub const FILLER_BASE: u16 = 20000;

pub struct Bed {
    pub datapath: Datapath,
    pub sandbox: Sandbox,
    /// The container's namespace.
    pub container: PathBuf,
    /// What the client dials: the node's address, or the container's for `direct`.
    pub target: Ipv4Addr,
    /// The daemon (netd only).
    pub daemon: Option<Daemon>,
    /// The container's namespace when the bed made it itself (baselines).
    _own_container: Option<Netns>,
}

impl Bed {
    /// A bed with `fillers` extra published ports installed before the measured ones.
    pub fn new(datapath: Datapath, fillers: u16) -> Result<Self> {
        let sandbox = Sandbox::new(&format!("b{}", &datapath.to_string()[..2]))?;
        match datapath {
            Datapath::Netd => Self::netd(sandbox, fillers),
            _ => Self::baseline(sandbox, datapath, fillers),
        }
    }

    fn netd(sandbox: Sandbox, fillers: u16) -> Result<Self> {
        let daemon = Daemon::start(&sandbox.node, Sandbox::UPLINK)?;
        let publish = published_specs();
        let mut args = vec!["create", "--name", "web"];
        for p in &publish {
            args.extend(["-p", p.as_str()]);
        }
        let path = daemon.cli_ok(&args)?;
        // The fillers come after the measured container (a hash lookup does not care about
        // order; the container keeps the address the baselines use).
        if fillers > 0 {
            let range = format!(
                "{}-{}:{}-{}",
                FILLER_BASE,
                FILLER_BASE + fillers - 1,
                FILLER_BASE,
                FILLER_BASE + fillers - 1
            );
            daemon.cli_ok(&["create", "--name", "filler", "-p", &range])?;
        }
        let container = PathBuf::from(path.trim());
        let ip = daemon.container("web")?.ip;
        if ip != CONTAINER_ADDR {
            bail!("netd gave the container {ip}, the bed expects {CONTAINER_ADDR}");
        }
        Ok(Bed {
            datapath: Datapath::Netd,
            sandbox,
            container,
            target: Sandbox::NODE_ADDR,
            daemon: Some(daemon),
            _own_container: None,
        })
    }

    /// The wiring netd would make, by hand, then the translation under test.
    fn baseline(sandbox: Sandbox, datapath: Datapath, fillers: u16) -> Result<Self> {
        let node = &sandbox.node;
        let ctr = Netns::new(&unique_name("bctr"))?;
        node.ip(&["link", "add", "netd0", "type", "bridge"])?;
        node.ip(&["addr", "add", "172.17.0.1/16", "dev", "netd0"])?;
        node.ip(&["link", "set", "netd0", "up"])?;
        run(
            "ip",
            &[
                "link", "add", "vethbench", "netns", &node.name, "type", "veth", "peer", "name",
                "eth0", "netns", &ctr.name,
            ],
        )?;
        node.ip(&["link", "set", "vethbench", "master", "netd0", "up"])?;
        ctr.ip(&["addr", "add", "172.17.0.2/16", "dev", "eth0"])?;
        ctr.ip(&["link", "set", "eth0", "up"])?;
        ctr.ip(&["route", "add", "default", "via", "172.17.0.1"])?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        let target = match datapath {
            Datapath::Direct => {
                sandbox
                    .ext
                    .ip(&["route", "add", "172.17.0.0/16", "via", "10.200.0.2"])?;
                CONTAINER_ADDR
            }
            Datapath::Iptables => {
                node.exec_stdin(&["iptables-restore"], &iptables_rules(fillers))?;
                Sandbox::NODE_ADDR
            }
            Datapath::Nftables => {
                node.exec_stdin(&["nft", "-f", "-"], &nftables_rules(fillers))?;
                Sandbox::NODE_ADDR
            }
            Datapath::Netd => unreachable!("netd wires its own"),
        };
        Ok(Bed {
            datapath,
            container: ctr.path(),
            sandbox,
            target,
            daemon: None,
            _own_container: Some(ctr),
        })
    }

    /// The node's view of the translation state, for checks: rule or entry counts.
    pub fn describe(&self) -> Result<String> {
        let out = match self.datapath {
            Datapath::Direct => return Ok("routed, no translation".into()),
            Datapath::Iptables => self.sandbox.node.exec(&["iptables-save", "-t", "nat"])?,
            Datapath::Nftables => self.sandbox.node.exec(&["nft", "list", "ruleset"])?,
            Datapath::Netd => {
                return self
                    .daemon
                    .as_ref()
                    .context("no daemon")?
                    .cli_ok(&["info"]);
            }
        };
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The measured services: TCP echo, iperf3 (TCP and UDP), UDP echo.
fn published_specs() -> Vec<String> {
    vec![
        format!("{TCP_PORT}:{TCP_PORT}"),
        format!("{IPERF_PORT}:{IPERF_PORT}"),
        format!("{IPERF_PORT}:{IPERF_PORT}/udp"),
        format!("{UDP_PORT}:{UDP_PORT}/udp"),
    ]
}

/// (protocol, port) of every mapping, fillers first so that a linear scan pays for them.
fn mappings(fillers: u16) -> Vec<(&'static str, u16)> {
    let mut all: Vec<(&str, u16)> = (0..fillers).map(|i| ("tcp", FILLER_BASE + i)).collect();
    all.extend([
        ("tcp", TCP_PORT),
        ("tcp", IPERF_PORT),
        ("udp", IPERF_PORT),
        ("udp", UDP_PORT),
    ]);
    all
}

/// Docker's rules for `-p` and masquerade on the default bridge, as `iptables-save` shows
/// them on a Docker host (nat: DOCKER chain from PREROUTING and OUTPUT for local
/// destinations, MASQUERADE for the subnet; filter: the FORWARD accepts).
pub fn iptables_rules(fillers: u16) -> String {
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s 172.17.0.0/16 ! -o netd0 -j MASQUERADE\n\
         -A DOCKER -i netd0 -j RETURN\n",
    );
    let mut filter = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A FORWARD -o netd0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o netd0 -j DOCKER\n\
         -A FORWARD -i netd0 ! -o netd0 -j ACCEPT\n\
         -A FORWARD -i netd0 -o netd0 -j ACCEPT\n",
    );
    for (proto, port) in mappings(fillers) {
        nat.push_str(&format!(
            "-A DOCKER ! -i netd0 -p {proto} -m {proto} --dport {port} -j DNAT --to-destination {CONTAINER_ADDR}:{port}\n"
        ));
        filter.push_str(&format!(
            "-A DOCKER -d {CONTAINER_ADDR}/32 ! -i netd0 -o netd0 -p {proto} -m {proto} --dport {port} -j ACCEPT\n"
        ));
    }
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}

/// One DNAT rule with a map per protocol, and masquerade, as netavark installs them.
pub fn nftables_rules(fillers: u16) -> String {
    let elements = |want: &str| {
        mappings(fillers)
            .into_iter()
            .filter(|(p, _)| *p == want)
            .map(|(_, port)| format!("{port} : {CONTAINER_ADDR} . {port}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "table ip netavark {{\n\
           map tcp_ports {{ type inet_service : ipv4_addr . inet_service; elements = {{ {} }} }}\n\
           map udp_ports {{ type inet_service : ipv4_addr . inet_service; elements = {{ {} }} }}\n\
           chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n\
             fib daddr type local dnat ip to tcp dport map @tcp_ports\n\
             fib daddr type local dnat ip to udp dport map @udp_ports\n\
           }}\n\
           chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
             ip saddr 172.17.0.0/16 oifname != \"netd0\" masquerade\n\
           }}\n\
         }}\n",
        elements("tcp"),
        elements("udp")
    )
}
