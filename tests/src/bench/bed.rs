//! One test bed per datapath, all with the same addresses and links: the standard sandbox
//! (ext client, node with uplink0), bridge `netd0` 172.17.0.1/16 on the node, and one
//! container at 172.17.0.2 running the benchmark's servers. What differs is only who
//! translates: nobody (`direct`: ext routes to the container's address), Docker's
//! iptables rules, one nftables rule with a map (as netavark does), or netd in one of
//! three configurations (TC only, TC with the redirect fast path, XDP). `netd-macvlan`
//! is netd's other driver under netd-xdp's flags: the container is a macvlan of
//! `uplink0` on the client's LAN (10.200.0.128, no bridge, nothing translated). GRO is on
//! on the node's uplink for all of them: a veth accepts XDP frames (the 64-byte
//! generator's) only when its peer has NAPI, which GRO or an XDP program gives it.
//!
//! Every bed but netd-macvlan is dual-stack: the bridge has `fd00:17::1/64` too and the
//! container `fd00:17::2` (netd: `--ipv6 --fixed-cidr-v6 fd00:17::/64`), and each
//! translation is installed for both families as its owner installs it (Docker with
//! ip6tables, a second nftables table of the ip6 family), so the IPv6 rows measure the
//! same paths over IPv6.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    generator::SINK_PORT,
    tools::{IPERF_PORT, LOAD_PORT},
};
use crate::{Daemon, Netns, Sandbox, netns::run, unique_name};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datapath {
    Direct,
    Iptables,
    Nftables,
    /// netd with its TC programs only: `--fast-path off --xdp off`.
    NetdTc,
    /// netd's TC programs redirecting straight to the container's veth:
    /// `--fast-path on --xdp off`.
    NetdRedirect,
    /// netd with its XDP program on the uplink: `--fast-path on --xdp native`.
    NetdXdp,
    /// netd-xdp's daemon, the container on a macvlan network whose parent is the uplink:
    /// the client reaches it on its own LAN, at its own address and MAC.
    NetdMacvlan,
    /// netd-xdp watched as in production: its metrics scraped every second and
    /// `netd monitor --type drop,flow` attached (`observers`).
    NetdObserved,
}

impl Datapath {
    /// In the table's order: netd-macvlan beside netd's bridge variants, so that the
    /// columns show what each driver costs.
    pub const ALL: [Datapath; 8] = [
        Datapath::Direct,
        Datapath::Iptables,
        Datapath::Nftables,
        Datapath::NetdTc,
        Datapath::NetdRedirect,
        Datapath::NetdXdp,
        Datapath::NetdMacvlan,
        Datapath::NetdObserved,
    ];

    /// netd's bridge driver in its three data-path configurations (`--only netd`).
    pub const NETD: [Datapath; 3] = [Datapath::NetdTc, Datapath::NetdRedirect, Datapath::NetdXdp];

    /// Whether the node translates the container's traffic: publishes its ports (the
    /// client dials the node) and masquerades what it sends. `direct` routes to the
    /// container and `netd-macvlan` puts it on the client's LAN: both keep its address.
    pub fn translates(self) -> bool {
        !matches!(self, Datapath::Direct | Datapath::NetdMacvlan)
    }

    /// Whether a netd daemon runs the node.
    pub fn is_netd(self) -> bool {
        self.daemon_flags().is_some()
    }

    /// The `netd daemon` flags of a netd variant, and what `netd info` must then say
    /// (`fast_path`, `xdp`). netd-macvlan runs netd-xdp's (netd's defaults on a NIC with
    /// native XDP), so that the two differ only in the network driver.
    pub fn daemon_flags(self) -> Option<(&'static [&'static str], (&'static str, &'static str))> {
        match self {
            Datapath::NetdTc => Some((&["--fast-path", "off", "--xdp", "off"], ("off", "off"))),
            Datapath::NetdRedirect => Some((&["--fast-path", "on", "--xdp", "off"], ("on", "off"))),
            Datapath::NetdXdp | Datapath::NetdMacvlan => {
                Some((&["--fast-path", "on", "--xdp", "native"], ("on", "native")))
            }
            Datapath::NetdObserved => Some((
                &[
                    "--fast-path",
                    "on",
                    "--xdp",
                    "native",
                    "--metrics-addr",
                    super::observers::METRICS_ADDR,
                ],
                ("on", "native"),
            )),
            Datapath::Direct | Datapath::Iptables | Datapath::Nftables => None,
        }
    }

    /// The `netd network create` the container's network needs (netd only; `None`: the
    /// default bridge network).
    pub fn netd_network(self) -> Option<&'static NetdNetwork> {
        match self {
            Datapath::NetdMacvlan => Some(&MACVLAN_NETWORK),
            _ => None,
        }
    }

    /// The container's own address.
    pub fn container_addr(self) -> Ipv4Addr {
        match self {
            Datapath::NetdMacvlan => MACVLAN_CONTAINER_ADDR,
            _ => CONTAINER_ADDR,
        }
    }

    /// What the client dials: the node's published port, or the container's own address.
    pub fn target(self) -> Ipv4Addr {
        if self.translates() {
            Sandbox::NODE_ADDR
        } else {
            self.container_addr()
        }
    }

    /// Whether the bed is dual-stack: every one but netd-macvlan (netd's macvlan networks
    /// have no IPv6 yet).
    pub fn has_ipv6(self) -> bool {
        self != Datapath::NetdMacvlan
    }

    /// The container's IPv6 address, on a dual-stack bed.
    pub fn container_addr6(self) -> Option<Ipv6Addr> {
        self.has_ipv6().then_some(CONTAINER_ADDR6)
    }

    /// What the client dials over IPv6: the node's address, or the container's own where
    /// nothing translates.
    pub fn target6(self) -> Option<Ipv6Addr> {
        if self.translates() {
            self.has_ipv6().then_some(Sandbox::NODE_ADDR6)
        } else {
            self.container_addr6()
        }
    }

    /// What the report divides a netd datapath's medians by: the bridge variants by
    /// Docker's iptables rules and by the direct path; netd-macvlan by netd's bridge under
    /// the same daemon flags (the driver's cost) and by the direct path.
    pub fn baselines(self) -> &'static [Datapath] {
        match self {
            Datapath::NetdTc | Datapath::NetdRedirect | Datapath::NetdXdp => {
                &[Datapath::Iptables, Datapath::Direct]
            }
            Datapath::NetdMacvlan => &[Datapath::NetdXdp, Datapath::Direct],
            Datapath::NetdObserved => &[Datapath::NetdXdp],
            Datapath::Direct | Datapath::Iptables | Datapath::Nftables => &[],
        }
    }

    /// What a reader must know to read its column (the report's notes).
    pub fn note(self) -> Option<&'static str> {
        match self {
            Datapath::NetdMacvlan => Some(
                "netd's macvlan driver: `netd network create -d macvlan --subnet 10.200.0.0/24 --gateway 10.200.0.1 --ip-range 10.200.0.128/25 -o parent=uplink0 lan`, the container created on it (10.200.0.128, MAC 02:42:0a:c8:00:80, a macvlan of uplink0 in bridge mode), the daemon with netd-xdp's flags; the client dials the container's own address on its LAN (no bridge, no forwarding, no published port: the scale runs are skipped, as for direct), and the rows labelled published port and masqueraded measure the container's own address both ways (no masquerade); 64-byte frames are addressed to the container's MAC and address. Its ratios are to netd-xdp (netd's bridge, the same daemon) and to direct",
            ),
            Datapath::NetdObserved => Some(
                "netd-xdp's daemon watched as in production for the whole measurement: its /metrics read every second (a plain HTTP GET from the node's namespace, as Prometheus scrapes; each scrape walks every table's keys and the connection table's entries under the daemon's lock) and `netd monitor --type drop,flow` attached (the programs send drops and flows' beginnings and ends through the ring buffer, at most 1,000 events/s per CPU, the rest counted lost). Its ratio is to netd-xdp (the same daemon, unwatched): the issue's target is within 3 % on connections/s and 64-byte frames",
            ),
            _ => None,
        }
    }

    /// The datapaths a `--only` name means: one, or for `netd` the three bridge variants.
    pub fn by_name(name: &str) -> Option<Vec<Datapath>> {
        if name == "netd" {
            return Some(Self::NETD.to_vec());
        }
        Self::from_name(name).map(|d| vec![d])
    }

    /// The datapath its `Display` names.
    pub fn from_name(name: &str) -> Option<Datapath> {
        Self::ALL.into_iter().find(|d| d.to_string() == name)
    }
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Datapath::Direct => "direct",
            Datapath::Iptables => "iptables",
            Datapath::Nftables => "nftables",
            Datapath::NetdTc => "netd-tc",
            Datapath::NetdRedirect => "netd-redirect",
            Datapath::NetdXdp => "netd-xdp",
            Datapath::NetdMacvlan => "netd-macvlan",
            Datapath::NetdObserved => "netd-observed",
        })
    }
}

/// The container's address on netd's (or the baselines') bridge.
pub const CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
/// The container's IPv6 address on the dual-stack beds' bridge.
pub const CONTAINER_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 2);
/// The bridge's IPv6 subnet (netd: `--fixed-cidr-v6`); the bridge is its `::1`.
pub const SUBNET6: &str = "fd00:17::/64";
/// The daemon flags that make netd's default bridge dual-stack like the baselines'.
const NETD_IPV6_FLAGS: [&str; 3] = ["--ipv6", "--fixed-cidr-v6", SUBNET6];
/// netd-macvlan's container: the first address of the network's `--ip-range`.
pub const MACVLAN_CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 128);
/// netd-macvlan's network: the client's LAN, with the node's uplink as the parent.
const MACVLAN_NETWORK: NetdNetwork = NetdNetwork {
    name: "lan",
    flags: &crate::lan::ON_UPLINK_FLAGS,
};

/// A network a netd bed creates for its containers (instead of the default bridge).
pub struct NetdNetwork {
    pub name: &'static str,
    /// `netd network create` flags before the name.
    pub flags: &'static [&'static str],
}

/// Where the filler mappings of the scale runs start (host port = container port).
pub const FILLER_BASE: u16 = 20000;
/// The host port `add_one` publishes (after the largest filler range).
pub const EXTRA_PORT: u16 = 30000;

pub struct Bed {
    pub datapath: Datapath,
    pub sandbox: Sandbox,
    /// The container's namespace.
    pub container: PathBuf,
    /// The container's own address (its servers see themselves at it).
    pub container_addr: Ipv4Addr,
    /// What the client dials: the node's address, or the container's own where nothing
    /// translates (`direct`, `netd-macvlan`).
    pub target: Ipv4Addr,
    /// The container's IPv6 address and what the client dials over IPv6 (dual-stack beds).
    pub container_addr6: Option<Ipv6Addr>,
    pub target6: Option<Ipv6Addr>,
    /// The container's MAC when it is on the client's LAN itself (macvlan): the client's
    /// frames go to it, not to the node's uplink.
    pub lan_mac: Option<[u8; 6]>,
    /// The daemon (netd only).
    pub daemon: Option<Daemon>,
    /// Filler mappings installed now.
    fillers: u16,
    /// Whether the translation rules are in place (baselines).
    installed: bool,
    /// How long netd took to create a container without ports (netd).
    bare_container: Option<Duration>,
    /// `netd info`'s `fast_path` and `xdp`, and the network driver (netd only).
    pub netd_config: Option<serde_json::Value>,
    /// The container's namespace when the bed made it itself (baselines).
    _own_container: Option<Netns>,
    /// The scraper and the monitor (`netd-observed`), stopped before the daemon.
    observers: Option<super::observers::Observers>,
}

impl Bed {
    /// A bed with only the measured ports published.
    pub fn new(datapath: Datapath) -> Result<Self> {
        let code = match datapath {
            Datapath::Direct => "di",
            Datapath::Iptables => "ip",
            Datapath::Nftables => "nf",
            Datapath::NetdTc => "nt",
            Datapath::NetdRedirect => "nr",
            Datapath::NetdXdp => "nx",
            Datapath::NetdMacvlan => "nm",
            Datapath::NetdObserved => "no",
        };
        let sandbox = Sandbox::new(&format!("b{code}"))?;
        // The client's connections come from the whole port range, so short connections
        // reuse a 4-tuple as late as possible.
        sandbox
            .ext
            .sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
        // NAPI on the uplink, so that it accepts the generator's XDP_TX frames from its
        // peer; the same for every datapath (netd-xdp's program would give it NAPI anyway).
        sandbox
            .node
            .exec(&["ethtool", "-K", Sandbox::UPLINK, "gro", "on"])
            .context("turn GRO on on the node's uplink")?;
        if datapath.is_netd() {
            Self::netd(sandbox, datapath)
        } else {
            Self::baseline(sandbox, datapath)
        }
    }

    fn netd(sandbox: Sandbox, datapath: Datapath) -> Result<Self> {
        let (flags, (fast_path, xdp)) = datapath.daemon_flags().context("not a netd datapath")?;
        let mut flags = flags.to_vec();
        if datapath.has_ipv6() {
            flags.extend(NETD_IPV6_FLAGS);
        }
        let daemon = Daemon::start_with(&sandbox.node, Sandbox::UPLINK, &flags)
            .with_context(|| format!("{datapath}: start netd daemon {}", flags.join(" ")))?;
        let info = daemon.info().context("netd info")?;
        let network = datapath.netd_network();
        let config = serde_json::json!({
            "flags": flags.join(" "),
            "fast_path": info["fast_path"],
            "xdp": info["xdp"],
            "network": network.map_or_else(
                || "the default bridge (netd0)".to_string(),
                |n| format!("netd network create {} {}", n.flags.join(" "), n.name),
            ),
        });
        if info["xdp"].as_str() != Some(xdp) || info["fast_path"].as_str() != Some(fast_path) {
            bail!(
                "{datapath}: netd info says fast_path = {}, xdp = {}; the bench asked for fast_path {fast_path}, xdp {xdp} ({})",
                info["fast_path"],
                info["xdp"],
                flags.join(" ")
            );
        }
        if let Some(n) = network {
            let mut args = vec!["network", "create"];
            args.extend(n.flags);
            args.push(n.name);
            daemon.cli_ok(&args)?;
        }
        let mut args = create_args(datapath, "web");
        let publish = if datapath.translates() {
            published_specs()
        } else {
            Vec::new()
        };
        for p in &publish {
            args.extend(["-p", p.as_str()]);
        }
        let path = PathBuf::from(daemon.cli_ok(&args)?.trim());
        let web = daemon.container("web")?;
        let ip = web.ip;
        let want = datapath.container_addr();
        if ip != want {
            bail!("netd gave the container {ip}, the bed expects {want}");
        }
        if web.ip6 != datapath.container_addr6() {
            bail!(
                "netd gave the container IPv6 address {:?}, the bed expects {:?}",
                web.ip6,
                datapath.container_addr6()
            );
        }
        let lan_mac = match network {
            Some(n) => Some(
                macvlan_mac(&path, ip)
                    .with_context(|| format!("the container's interface on network {}", n.name))?,
            ),
            None => None,
        };
        let observers = if datapath == Datapath::NetdObserved {
            Some(super::observers::Observers::start(
                sandbox.node.path(),
                &daemon,
            )?)
        } else {
            None
        };
        Ok(Bed {
            datapath,
            sandbox,
            container: path,
            container_addr: ip,
            target: datapath.target(),
            container_addr6: datapath.container_addr6(),
            target6: datapath.target6(),
            lan_mac,
            daemon: Some(daemon),
            fillers: 0,
            installed: false,
            bare_container: None,
            netd_config: Some(config),
            _own_container: None,
            observers,
        })
    }

    /// The wiring netd would make, by hand, then the translation under test.
    fn baseline(sandbox: Sandbox, datapath: Datapath) -> Result<Self> {
        let node = &sandbox.node;
        let ctr = Netns::new(&unique_name("bctr"))?;
        node.ip(&["link", "add", "netd0", "type", "bridge"])?;
        node.ip(&["addr", "add", "172.17.0.1/16", "dev", "netd0"])?;
        node.ip(&["link", "set", "netd0", "up"])?;
        run(
            "ip",
            &[
                "link",
                "add",
                "vethbench",
                "netns",
                &node.name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ctr.name,
            ],
        )?;
        node.ip(&["link", "set", "vethbench", "master", "netd0", "up"])?;
        ctr.ip(&["addr", "add", "172.17.0.2/16", "dev", "eth0"])?;
        ctr.ip(&["link", "set", "eth0", "up"])?;
        ctr.ip(&["link", "set", "lo", "up"])?;
        ctr.ip(&["route", "add", "default", "via", "172.17.0.1"])?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        // IPv6 as netd's `--fixed-cidr-v6` lays it out (no duplicate address detection:
        // usable at once).
        node.ip(&[
            "-6",
            "addr",
            "add",
            "fd00:17::1/64",
            "dev",
            "netd0",
            "nodad",
        ])?;
        ctr.ip(&["-6", "addr", "add", "fd00:17::2/64", "dev", "eth0", "nodad"])?;
        ctr.ip(&["-6", "route", "add", "default", "via", "fd00:17::1"])?;
        node.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        if !datapath.translates() {
            sandbox
                .ext
                .ip(&["route", "add", "172.17.0.0/16", "via", "10.200.0.2"])?;
            sandbox
                .ext
                .ip(&["-6", "route", "add", SUBNET6, "via", "2001:db8:200::2"])?;
        }
        let mut bed = Bed {
            datapath,
            container: ctr.path(),
            sandbox,
            container_addr: CONTAINER_ADDR,
            target: datapath.target(),
            container_addr6: datapath.container_addr6(),
            target6: datapath.target6(),
            lan_mac: None,
            daemon: None,
            fillers: 0,
            installed: false,
            bare_container: None,
            netd_config: None,
            _own_container: Some(ctr),
            observers: None,
        };
        bed.install(0)?;
        Ok(bed)
    }

    /// Install `fillers` more published ports before the measured ones (so a linear scan
    /// pays for them), replacing the previous set in one call; how long that call took.
    /// `None` where nothing translates (`direct`, `netd-macvlan`): nothing is published.
    pub fn install(&mut self, fillers: u16) -> Result<Option<Duration>> {
        let node = &self.sandbox.node;
        let took = match self.datapath {
            Datapath::Direct | Datapath::NetdMacvlan => return Ok(None),
            Datapath::Iptables => timed(|| {
                node.exec_stdin(&["iptables-restore"], &iptables_rules(fillers, V4))?;
                node.exec_stdin(&["ip6tables-restore"], &iptables_rules(fillers, V6))
                    .map(drop)
            })?,
            Datapath::Nftables => {
                if self.installed {
                    node.exec(&["nft", "delete", "table", "ip", "netavark"])?;
                    node.exec(&["nft", "delete", "table", "ip6", "netavark"])?;
                }
                timed(|| {
                    node.exec_stdin(&["nft", "-f", "-"], &nftables_rules(fillers))
                        .map(drop)
                })?
            }
            Datapath::NetdTc
            | Datapath::NetdRedirect
            | Datapath::NetdXdp
            | Datapath::NetdObserved => {
                let daemon = self.daemon.as_ref().context("no daemon")?;
                if self.fillers > 0 {
                    daemon.cli_ok(&["rm", "filler"])?;
                }
                if fillers == 0 {
                    Duration::ZERO
                } else {
                    let last = FILLER_BASE + fillers - 1;
                    let range = format!("{FILLER_BASE}-{last}:{FILLER_BASE}-{last}");
                    timed(|| {
                        daemon
                            .cli_ok(&["create", "--name", "filler", "-p", &range])
                            .map(drop)
                    })?
                }
            }
        };
        self.fillers = fillers;
        self.installed = true;
        Ok(Some(took))
    }

    /// Publish one more port the way the datapath's owner does it (Docker: three iptables
    /// commands per family; netavark: one map element per family; netd: a container with
    /// `-p`, which publishes on both families); how long it took.
    /// `None` where nothing is published (`direct`, `netd-macvlan`).
    pub fn add_one(&mut self) -> Result<Option<Duration>> {
        let p = EXTRA_PORT.to_string();
        // netd publishes with a container: what a container without ports costs first, so
        // the report can tell the mapping's share (nothing without a daemon).
        self.bare_container()?;
        let node = &self.sandbox.node;
        let took = match self.datapath {
            Datapath::Direct | Datapath::NetdMacvlan => return Ok(None),
            Datapath::Iptables => timed(|| {
                for family in [V4, V6] {
                    for rule in docker_port_rules("tcp", EXTRA_PORT, family.container) {
                        let mut args = vec![family.iptables, "-t", rule.table, "-A", rule.chain];
                        args.extend(rule.spec.split_whitespace());
                        node.exec(&args)?;
                    }
                }
                Ok(())
            })?,
            Datapath::Nftables => timed(|| {
                for family in [V4, V6] {
                    let element = format!("{{ {p} : {} . {p} }}", family.container);
                    node.exec(&[
                        "nft",
                        "add",
                        "element",
                        family.nft,
                        "netavark",
                        "tcp_ports",
                        &element,
                    ])?;
                }
                Ok(())
            })?,
            Datapath::NetdTc
            | Datapath::NetdRedirect
            | Datapath::NetdXdp
            | Datapath::NetdObserved => {
                let daemon = self.daemon.as_ref().context("no daemon")?;
                let spec = format!("{p}:{p}");
                timed(|| {
                    daemon
                        .cli_ok(&["create", "--name", "extra", "-p", &spec])
                        .map(drop)
                })?
            }
        };
        Ok(Some(took))
    }

    /// How long netd took to create a container without published ports on the measured
    /// container's network (netd only): measured once, by `add_one` with the fillers in
    /// place where there are some, else when first asked.
    pub fn bare_container(&mut self) -> Result<Option<Duration>> {
        if self.bare_container.is_none()
            && let Some(daemon) = &self.daemon
        {
            let args = create_args(self.datapath, "bare");
            self.bare_container = Some(timed(|| daemon.cli_ok(&args).map(drop))?);
        }
        Ok(self.bare_container)
    }

    /// Forget the kernel's connection tracking state (baselines), so each run starts from
    /// an empty table like netd's; netd's own table is left to its timeouts and GC.
    pub fn forget_connections(&self) {
        if matches!(self.datapath, Datapath::Iptables | Datapath::Nftables) {
            for family in ["ipv4", "ipv6"] {
                let _ = self.sandbox.node.exec(&["conntrack", "-F", "-f", family]);
            }
        }
    }

    /// The daemon's resident memory in KiB (netd only).
    pub fn daemon_rss_kib(&self) -> Option<u64> {
        let pid = self.daemon.as_ref()?.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// CPU time the daemon has used so far, user and system, in seconds (netd only).
    pub fn daemon_cpu_seconds(&self) -> Option<f64> {
        let pid = self.daemon.as_ref()?.pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Some(ticks as f64 / hz)
    }

    /// The source address a server outside sees for the container's connections: the
    /// node's where it masquerades, else the container's own.
    pub fn egress_source(&self) -> Ipv4Addr {
        if self.datapath.translates() {
            Sandbox::NODE_ADDR
        } else {
            self.container_addr
        }
    }

    /// The same over IPv6 (NAT66 behind the node's address), on a dual-stack bed.
    pub fn egress_source6(&self) -> Option<Ipv6Addr> {
        if self.datapath.translates() {
            self.target6
        } else {
            self.container_addr6
        }
    }

    /// Evidence that the datapath itself translated: its own counters, read back.
    pub fn translation_counters(&self) -> Result<String> {
        let node = &self.sandbox.node;
        let text = |args: &[&str]| -> Result<String> {
            Ok(String::from_utf8_lossy(&node.exec(args)?.stdout).into_owned())
        };
        Ok(match self.datapath {
            Datapath::Direct => "routed, nothing to translate".into(),
            Datapath::Iptables => {
                let nat = text(&["iptables", "-t", "nat", "-L", "DOCKER", "-n", "-v", "-x"])?;
                let hits = nat
                    .lines()
                    .filter(|l| l.contains("DNAT") && l.contains(&format!("dpt:{LOAD_PORT}")))
                    .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                    .sum::<u64>();
                if hits == 0 {
                    bail!("iptables' DNAT rule for {LOAD_PORT} counted no packets");
                }
                format!("DNAT rule for {LOAD_PORT}: {hits} packets")
            }
            Datapath::Nftables => {
                let set = text(&["nft", "list", "map", "ip", "netavark", "tcp_ports"])?;
                if !set.contains(&LOAD_PORT.to_string()) {
                    bail!("nftables map lacks {LOAD_PORT}");
                }
                "map in place".into()
            }
            Datapath::NetdTc
            | Datapath::NetdRedirect
            | Datapath::NetdXdp
            | Datapath::NetdObserved => {
                let stats = self.netd_stats()?;
                // With XDP the DNAT may be counted under `UplinkXdp`: any hook counts.
                let dnat = netd_sum(&stats, |_, r| r == "dnat_new_flow");
                let snat = netd_sum(&stats, |_, r| r == "snat_new_flow");
                if dnat == 0 || snat == 0 {
                    bail!("netd counted {dnat} DNAT and {snat} SNAT flows");
                }
                let observed = match (&self.observers, &self.daemon) {
                    (Some(o), Some(d)) => format!("; {}", o.evidence(d)?),
                    _ => String::new(),
                };
                format!(
                    "{dnat} DNAT flows ({}), {snat} SNAT flows ({}); drops: {}{observed}",
                    by_hook(&stats, "dnat_new_flow"),
                    by_hook(&stats, "snat_new_flow"),
                    netd_drops_text(&stats)
                )
            }
            Datapath::NetdMacvlan => {
                // The other way round: netd must have translated nothing, and the client
                // must have reached the container at its own MAC, not the node's.
                let stats = self.netd_stats()?;
                let dnat = netd_sum(&stats, |_, r| r == "dnat_new_flow");
                let snat = netd_sum(&stats, |_, r| r == "snat_new_flow");
                if dnat != 0 || snat != 0 {
                    bail!(
                        "netd counted {dnat} DNAT and {snat} SNAT flows; the macvlan container's traffic must pass untranslated"
                    );
                }
                let addr = self.container_addr.to_string();
                let neigh = self
                    .sandbox
                    .ext
                    .ip(&["neigh", "show", &addr, "dev", "ext0"])?;
                let neigh = String::from_utf8_lossy(&neigh.stdout);
                let seen = neigh
                    .split_whitespace()
                    .skip_while(|w| *w != "lladdr")
                    .nth(1)
                    .unwrap_or("none");
                let want = self.lan_mac.map(|m| mac_text(&m)).unwrap_or_default();
                if seen != want {
                    bail!(
                        "the client's neighbour entry for {addr} is {seen}, not the container's MAC {want}"
                    );
                }
                format!(
                    "nothing translated (0 DNAT, 0 SNAT flows); the client reached {addr} at {seen} on ext0; the uplink's programs passed it ({}); drops: {}",
                    by_hook(&stats, "pass_no_match"),
                    netd_drops_text(&stats)
                )
            }
        })
    }
}

impl Bed {
    /// `netd stats --format json` (netd only).
    fn netd_stats(&self) -> Result<serde_json::Value> {
        let daemon = self.daemon.as_ref().context("no daemon")?;
        serde_json::from_str(&daemon.cli_ok(&["stats", "--format", "json"])?)
            .context("netd stats is not JSON")
    }

    /// Packets netd's programs dropped so far, every hook and `drop_` reason (netd only).
    pub fn netd_drops(&self) -> Result<Option<u64>> {
        if self.daemon.is_none() {
            return Ok(None);
        }
        let stats = self.netd_stats()?;
        Ok(Some(netd_sum(&stats, |_, r| r.starts_with("drop_"))))
    }
}

/// `HOOK PACKETS` of every hook that counted `reason`, comma-separated.
fn by_hook(stats: &serde_json::Value, reason: &str) -> String {
    stats
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["reason"] == reason)
        .filter(|c| c["packets"].as_u64().unwrap_or(0) > 0)
        .map(|c| format!("{} {}", c["hook"].as_str().unwrap_or("?"), c["packets"]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every `drop_` counter of `netd stats` that moved, or `none`.
pub(super) fn netd_drops_text(stats: &serde_json::Value) -> String {
    let drops: Vec<String> = stats
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["reason"].as_str().is_some_and(|r| r.starts_with("drop_")))
        .filter(|c| c["packets"].as_u64().unwrap_or(0) > 0)
        .map(|c| format!("{} {} {}", c["hook"], c["reason"], c["packets"]))
        .collect();
    if drops.is_empty() {
        "none".to_string()
    } else {
        drops.join(", ")
    }
}

/// `netd create --name NAME` on the datapath's network.
fn create_args(datapath: Datapath, name: &str) -> Vec<&str> {
    let mut args = vec!["create", "--name", name];
    if let Some(n) = datapath.netd_network() {
        args.extend(["--network", n.name]);
    }
    args
}

/// netd's (Docker's) MAC for a container's address: `02:42` and the address.
fn scheme_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub(super) fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC of the container's macvlan of the uplink, checked against netd's scheme for
/// its address `ip`: the one MAC the client's frames for it may carry.
fn macvlan_mac(container: &Path, ip: Ipv4Addr) -> Result<[u8; 6]> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", container.display()))
        .args(["ip", "-j", "-d", "link", "show"])
        .output()
        .context("run ip link in the container")?;
    if !out.status.success() {
        bail!(
            "ip link in the container: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let link = links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["linkinfo"]["info_kind"] == "macvlan")
        .with_context(|| format!("no macvlan in the container: {links}"))?;
    let want = mac_text(&scheme_mac(ip));
    let mac = link["address"].as_str().unwrap_or_default();
    if mac != want {
        bail!(
            "{} has MAC {mac}, netd's scheme gives {want} for {ip}",
            link["ifname"]
        );
    }
    Ok(scheme_mac(ip))
}

/// The packets of the counters of `netd stats` whose (hook, reason) pass `want`.
pub(super) fn netd_sum(stats: &serde_json::Value, want: impl Fn(&str, &str) -> bool) -> u64 {
    stats
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            want(
                c["hook"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or(""),
            )
        })
        .map(|c| c["packets"].as_u64().unwrap_or(0))
        .sum()
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

/// The measured services: `netd-load`, iperf3 (TCP and UDP) and the 64-byte sink.
fn published_specs() -> Vec<String> {
    vec![
        format!("{LOAD_PORT}:{LOAD_PORT}"),
        format!("{IPERF_PORT}:{IPERF_PORT}"),
        format!("{IPERF_PORT}:{IPERF_PORT}/udp"),
        format!("{SINK_PORT}:{SINK_PORT}/udp"),
    ]
}

/// (protocol, port) of every mapping, fillers first so that a linear scan pays for them.
fn mappings(fillers: u16) -> Vec<(&'static str, u16)> {
    let mut all: Vec<(&str, u16)> = (0..fillers).map(|i| ("tcp", FILLER_BASE + i)).collect();
    all.extend([
        ("tcp", LOAD_PORT),
        ("tcp", IPERF_PORT),
        ("udp", IPERF_PORT),
        ("udp", SINK_PORT),
    ]);
    all
}

/// What differs between the two families' rules: the tool, nftables' family, the
/// container's address, the bridge's subnet and the loopback range.
#[derive(Clone, Copy)]
struct Family {
    iptables: &'static str,
    nft: &'static str,
    container: IpAddr,
    subnet: &'static str,
    loopback: &'static str,
}

const V4: Family = Family {
    iptables: "iptables",
    nft: "ip",
    container: IpAddr::V4(CONTAINER_ADDR),
    subnet: "172.17.0.0/16",
    loopback: "127.0.0.0/8",
};

const V6: Family = Family {
    iptables: "ip6tables",
    nft: "ip6",
    container: IpAddr::V6(CONTAINER_ADDR6),
    subnet: SUBNET6,
    loopback: "::1/128",
};

/// One rule Docker adds for a published port.
struct Rule {
    table: &'static str,
    chain: &'static str,
    spec: String,
}

/// The three rules Docker adds per published port and family on the default bridge:
/// DNAT in the nat DOCKER chain, ACCEPT in the filter DOCKER chain, and the hairpin
/// MASQUERADE (ip6tables' the same with the container's IPv6 address).
fn docker_port_rules(proto: &str, port: u16, ctr: IpAddr) -> [Rule; 3] {
    let host = if ctr.is_ipv4() { 32 } else { 128 };
    let to = SocketAddr::new(ctr, port);
    [
        Rule {
            table: "nat",
            chain: "DOCKER",
            spec: format!(
                "! -i netd0 -p {proto} -m {proto} --dport {port} -j DNAT --to-destination {to}"
            ),
        },
        Rule {
            table: "filter",
            chain: "DOCKER",
            spec: format!(
                "-d {ctr}/{host} ! -i netd0 -o netd0 -p {proto} -m {proto} --dport {port} -j ACCEPT"
            ),
        },
        Rule {
            table: "nat",
            chain: "POSTROUTING",
            spec: format!(
                "-s {ctr}/{host} -d {ctr}/{host} -p {proto} -m {proto} --dport {port} -j MASQUERADE"
            ),
        },
    ]
}

/// Docker's rules for `-p` and masquerade on the default bridge, as `iptables-save` shows
/// them on a Docker 27 host (bridge named netd0 here): nat DOCKER chain from PREROUTING
/// and OUTPUT for local destinations, MASQUERADE for the subnet and per port for hairpin;
/// filter FORWARD through DOCKER-USER, the isolation chains, the conntrack accept and the
/// per-port accepts; for IPv6 the same in `ip6tables-save`'s form.
fn iptables_rules(fillers: u16, family: Family) -> String {
    let Family {
        container,
        subnet,
        loopback,
        ..
    } = family;
    let mut nat = format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT ! -d {loopback} -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s {subnet} ! -o netd0 -j MASQUERADE\n\
         -A DOCKER -i netd0 -j RETURN\n",
    );
    let mut filter = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         :DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n\
         -A FORWARD -j DOCKER-USER\n\
         -A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
         -A FORWARD -o netd0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o netd0 -j DOCKER\n\
         -A FORWARD -i netd0 ! -o netd0 -j ACCEPT\n\
         -A FORWARD -i netd0 -o netd0 -j ACCEPT\n\
         -A DOCKER-ISOLATION-STAGE-1 -i netd0 ! -o netd0 -j DOCKER-ISOLATION-STAGE-2\n\
         -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
         -A DOCKER-ISOLATION-STAGE-2 -o netd0 -j DROP\n\
         -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n\
         -A DOCKER-USER -j RETURN\n",
    );
    for (proto, port) in mappings(fillers) {
        for rule in docker_port_rules(proto, port, container) {
            let table = if rule.table == "nat" {
                &mut nat
            } else {
                &mut filter
            };
            table.push_str(&format!("-A {} {}\n", rule.chain, rule.spec));
        }
    }
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}

/// One DNAT rule with a map per protocol, and masquerade, as netavark installs them: a
/// table of the ip family and its twin of the ip6 family.
fn nftables_rules(fillers: u16) -> String {
    [V4, V6].map(|f| nftables_table(fillers, f)).concat()
}

fn nftables_table(fillers: u16, family: Family) -> String {
    let Family {
        nft,
        container,
        subnet,
        ..
    } = family;
    let addr_type = if container.is_ipv4() {
        "ipv4_addr"
    } else {
        "ipv6_addr"
    };
    let elements = |want: &str| {
        mappings(fillers)
            .into_iter()
            .filter(|(p, _)| *p == want)
            .map(|(_, port)| format!("{port} : {container} . {port}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "table {nft} netavark {{\n\
           map tcp_ports {{ type inet_service : {addr_type} . inet_service; elements = {{ {} }} }}\n\
           map udp_ports {{ type inet_service : {addr_type} . inet_service; elements = {{ {} }} }}\n\
           chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n\
             fib daddr type local dnat {nft} to tcp dport map @tcp_ports\n\
             fib daddr type local dnat {nft} to udp dport map @udp_ports\n\
           }}\n\
           chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
             {nft} saddr {subnet} oifname != \"netd0\" masquerade\n\
           }}\n\
         }}\n",
        elements("tcp"),
        elements("udp")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netd_macvlan_is_its_own_name_and_netd_means_the_bridge_variants() {
        assert_eq!(
            Datapath::by_name("netd-macvlan"),
            Some(vec![Datapath::NetdMacvlan])
        );
        assert_eq!(Datapath::by_name("netd"), Some(Datapath::NETD.to_vec()));
        assert!(Datapath::NetdMacvlan.is_netd());
        assert_eq!(
            Datapath::NetdMacvlan.daemon_flags(),
            Datapath::NetdXdp.daemon_flags()
        );
    }

    #[test]
    fn only_the_translating_datapaths_are_dialled_at_the_node() {
        for dp in Datapath::ALL {
            let want = match dp {
                Datapath::Direct => CONTAINER_ADDR,
                Datapath::NetdMacvlan => MACVLAN_CONTAINER_ADDR,
                _ => Sandbox::NODE_ADDR,
            };
            assert_eq!(dp.target(), want, "{dp}");
        }
        assert_eq!(
            mac_text(&scheme_mac(MACVLAN_CONTAINER_ADDR)),
            "02:42:0a:c8:00:80"
        );
    }

    #[test]
    fn docker_rules_put_the_fillers_before_the_measured_port() {
        for family in [V4, V6] {
            let rules = iptables_rules(2, family);
            let pos = |needle: &str| rules.find(needle).unwrap();
            let filler = pos("--dport 20001 -j DNAT");
            let measured = pos(&format!("--dport {LOAD_PORT} -j DNAT"));
            assert!(filler < measured);
            // Three rules per mapping, as Docker installs them: 2 fillers + 4 measured.
            assert_eq!(rules.matches("-j DNAT").count(), 6);
            assert_eq!(rules.matches("-j ACCEPT\n").count() - 3, 6);
            assert_eq!(rules.matches("-j MASQUERADE").count() - 1, 6);
        }
        let v6 = iptables_rules(0, V6);
        assert!(v6.contains(&format!(
            "--dport {LOAD_PORT} -j DNAT --to-destination [fd00:17::2]:{LOAD_PORT}\n"
        )));
        assert!(v6.contains("-d fd00:17::2/128 ! -i netd0 -o netd0"));
        assert!(v6.contains("-A POSTROUTING -s fd00:17::/64 ! -o netd0 -j MASQUERADE\n"));
        assert!(v6.contains("-A OUTPUT ! -d ::1/128 "));
    }

    #[test]
    fn the_nftables_map_holds_every_mapping_once() {
        let rules = nftables_rules(3);
        assert_eq!(rules.matches(" : 172.17.0.2 . ").count(), 7);
        assert_eq!(rules.matches(" : fd00:17::2 . ").count(), 7);
        assert_eq!(rules.matches("dnat ip to").count(), 2);
        assert_eq!(rules.matches("dnat ip6 to").count(), 2);
        assert!(rules.contains("table ip6 netavark {"));
        assert!(rules.contains("ip6 saddr fd00:17::/64 oifname"));
    }
}
