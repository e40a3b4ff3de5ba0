//! The eBPF data path: loads netd's kernel programs, attaches them to the uplink, and is
//! the only place that writes their maps. Maps are pinned under the bpffs directory so a
//! restarted daemon adopts the same tables.

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use aya::{
    Ebpf, EbpfLoader,
    maps::{self, Array, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, TestRun, TestRunOptions,
        Xdp, XdpMode, links::FdLink,
    },
};
use ipnet::Ipv4Net;
use log::{info, warn};
use netd_common::{
    counters::{Counter, Hook, Reason, counter_index},
    fast_path::FAST_PATH,
    flow::{FlowEntry, FlowKey},
    maps::{
        self as names, EndpointInfo, FragmentKey, FragmentPorts, NetworkInfo, NodeConfig,
        SWEEP_BATCH,
    },
    published::{Backend, PortKey},
    user::addr_be,
};

use crate::{conntrack::FlowTable, pins, ports::PortBinding};

/// The kernel object built by netd/build.rs.
pub static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd-ebpf"));

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub struct Datapath {
    ebpf: Ebpf,
    /// Where the program links are pinned.
    links: PathBuf,
    /// Host-side veths the endpoint program is attached to (by this daemon or its
    /// predecessor, whose pinned link was updated).
    endpoints_attached: HashSet<String>,
    /// `--flow-table-size`: entries in each of the connection table's maps.
    flow_capacity: u32,
}

/// Refuse a directory that is not on bpffs: pins there would not survive, or fail.
pub fn check_bpffs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create bpffs directory {}", dir.display()))?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: all-zero is a valid statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs into that struct, with a NUL-terminated path.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", dir.display()));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "--bpffs-dir {} is not on a bpf filesystem: mount one first (mount -t bpf bpf {}) or choose a directory under a bpffs mount",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The uplink's programs and where they attach.
pub const UPLINK_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("uplink_ingress", TcAttachType::Ingress),
    ("uplink_egress", TcAttachType::Egress),
];

/// The uplink's XDP program (`--xdp`).
pub const XDP_PROGRAM: &str = "uplink_xdp";

/// `--xdp`: how to run the XDP program on the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpRequest {
    /// Native (driver) mode where the uplink's driver has it, else no XDP.
    Auto,
    /// Native mode, or fail.
    Native,
    /// Generic (skb) mode: slower than TC, for testing on drivers without XDP.
    Generic,
    /// No XDP: TC does all the translation.
    Off,
}

/// The XDP mode in use on the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpInUse {
    Native,
    Generic,
    Off,
}

impl XdpInUse {
    pub fn name(self) -> &'static str {
        match self {
            XdpInUse::Native => "native",
            XdpInUse::Generic => "generic",
            XdpInUse::Off => "off",
        }
    }
}

/// The program on each container's host-side veth (TC ingress).
pub const ENDPOINT_PROGRAM: &str = "endpoint_ingress";
/// Run by the collector, never attached (see `sweep_flows`).
pub const SWEEP_PROGRAM: &str = "flow_sweep";

/// The socket hooks for host-local access, attached to a cgroup.
pub const HOST_LOCAL_PROGRAMS: [&str; 4] = [
    "host_connect4",
    "host_sendmsg4",
    "host_recvmsg4",
    "host_getpeername4",
];

impl Datapath {
    /// Load and verify the programs, with their maps pinned in `bpffs_dir` (adopting maps
    /// a previous run pinned there). Nothing is attached yet.
    /// `flow_table_size` is the connection table's capacity in entries (two per flow).
    pub fn load(bpffs_dir: &Path, flow_table_size: u32) -> Result<Self> {
        check_bpffs(bpffs_dir)?;
        pins::check_pinned_maps(bpffs_dir, &pins::expected_maps(PROGRAMS, flow_table_size)?)?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(bpffs_dir)
            .map_max_entries(names::FLOWS, flow_table_size)
            .map_max_entries(names::PENDING_FLOWS, flow_table_size)
            .load(PROGRAMS)
            .context("load netd's eBPF programs")?;
        let mut datapath = Datapath {
            ebpf,
            links: pins::links_dir(bpffs_dir),
            endpoints_attached: HashSet::new(),
            flow_capacity: flow_table_size,
        };
        let names = UPLINK_PROGRAMS
            .iter()
            .map(|(name, _)| *name)
            .chain([ENDPOINT_PROGRAM, SWEEP_PROGRAM]);
        for name in names {
            datapath
                .program(name)?
                .load()
                .with_context(|| format!("verify program {name}"))?;
        }
        for name in HOST_LOCAL_PROGRAMS {
            datapath
                .socket_program(name)?
                .load()
                .with_context(|| format!("verify program {name}"))?;
        }
        Ok(datapath)
    }

    /// Attach the uplink programs to `uplink` (TC ingress and egress), or swap them into
    /// the links a previous daemon pinned there; links of another uplink are removed.
    pub fn attach(&mut self, uplink: &str) -> Result<()> {
        let mut keep = Vec::new();
        for (name, attach) in UPLINK_PROGRAMS {
            let pin = format!("uplink-{uplink}-{name}");
            self.attach_tc_pinned(name, uplink, attach, &pin)?;
            keep.push(pin);
        }
        pins::retain_links(&self.links, "uplink-", &keep);
        info!("data path attached to uplink {uplink}");
        Ok(())
    }

    /// Swap program `name` into the link pinned as `pin`, or attach it to `iface` and
    /// pin the new link. A pinned link that cannot take the program (its interface is
    /// gone) is replaced.
    fn attach_tc_pinned(
        &mut self,
        name: &str,
        iface: &str,
        attach: TcAttachType,
        pin: &str,
    ) -> Result<()> {
        let path = self.links.join(pin);
        let prog = self.program(name)?;
        if swap_into_pinned_link(&path, prog.fd()?.as_fd()) {
            return Ok(());
        }
        let id = prog
            .attach(iface, attach)
            .with_context(|| format!("attach {name} to {iface}"))?;
        let link = FdLink::try_from(prog.take_link(id)?)?;
        pins::pin_link(link, &path)
    }

    /// Attach the XDP program to the uplink as `want` says, or swap it into the link a
    /// previous daemon pinned for the same mode. An XDP link of another mode is removed
    /// first (an interface cannot run native and generic XDP at once), and all of them
    /// for `off`. Returns the mode in use.
    pub fn attach_xdp(&mut self, uplink: &str, want: XdpRequest) -> Result<XdpInUse> {
        let mode = match want {
            XdpRequest::Auto | XdpRequest::Native => XdpInUse::Native,
            XdpRequest::Generic => XdpInUse::Generic,
            XdpRequest::Off => {
                pins::retain_links(&self.links, "xdp-", &[]);
                return Ok(XdpInUse::Off);
            }
        };
        if mode == XdpInUse::Generic {
            warn!(
                "generic XDP on {uplink} is for testing: slower than TC, and on NICs that report CHECKSUM_COMPLETE the kernel re-checks translated packets in software"
            );
        }
        let pin = format!("xdp-{uplink}-{}", mode.name());
        pins::retain_links(&self.links, "xdp-", std::slice::from_ref(&pin));
        match self.attach_xdp_pinned(uplink, mode, &pin) {
            Ok(()) => {
                info!("XDP attached to uplink {uplink} in {} mode", mode.name());
                Ok(mode)
            }
            Err(e) if want == XdpRequest::Auto => {
                warn!("XDP in native mode on {uplink}: {e:#}; running without XDP");
                pins::retain_links(&self.links, "xdp-", &[]);
                Ok(XdpInUse::Off)
            }
            Err(e) => Err(e),
        }
    }

    fn attach_xdp_pinned(&mut self, uplink: &str, mode: XdpInUse, pin: &str) -> Result<()> {
        let path = self.links.join(pin);
        let prog = self.xdp_program()?;
        if swap_into_pinned_link(&path, prog.fd()?.as_fd()) {
            return Ok(());
        }
        let flags = if mode == XdpInUse::Generic {
            XdpMode::Skb
        } else {
            XdpMode::Driver
        };
        let id = prog
            .attach(uplink, flags)
            .with_context(|| format!("attach {XDP_PROGRAM} to {uplink}"))?;
        let link = FdLink::try_from(prog.take_link(id)?)?;
        pins::pin_link(link, &path)
    }

    /// The uplink's XDP program (e.g. for `BPF_PROG_TEST_RUN`), verified on first use:
    /// a daemon with `--xdp off` never loads it.
    pub fn xdp_program(&mut self) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .with_context(|| format!("program {XDP_PROGRAM} missing"))?
            .try_into()
            .with_context(|| format!("program {XDP_PROGRAM} is not XDP"))?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("verify program {XDP_PROGRAM}"))?;
        }
        Ok(prog)
    }

    /// Attach the endpoint program to a container's host-side veth and say who is behind
    /// it. Idempotent (a restarted daemon re-attaches to the veths it finds).
    pub fn attach_endpoint(
        &mut self,
        host_veth: &str,
        ifindex: u32,
        info: &EndpointInfo,
    ) -> Result<()> {
        self.register_endpoint(ifindex, info)
            .with_context(|| format!("register endpoint {host_veth}"))?;
        if !self.endpoints_attached.contains(host_veth) {
            let pin = endpoint_pin(host_veth);
            self.attach_tc_pinned(ENDPOINT_PROGRAM, host_veth, TcAttachType::Ingress, &pin)?;
            self.endpoints_attached.insert(host_veth.to_string());
        }
        Ok(())
    }

    /// Say who is behind the host-side veth `ifindex`: its address, MAC, network.
    pub fn register_endpoint(&mut self, ifindex: u32, info: &EndpointInfo) -> Result<()> {
        let mut endpoints: maps::HashMap<_, u32, EndpointInfo> =
            maps::HashMap::try_from(self.map_mut(names::ENDPOINTS)?)?;
        endpoints.insert(ifindex, info, 0)?;
        self.endpoint_veths()?.insert(info.addr, ifindex, 0)?;
        Ok(())
    }

    fn endpoint_veths(&mut self) -> Result<maps::HashMap<&mut MapData, u32, u32>> {
        Ok(maps::HashMap::try_from(
            self.map_mut(names::ENDPOINT_VETHS)?,
        )?)
    }

    /// Unpin the endpoint links of host-side veths not in `keep`.
    pub fn retain_endpoint_links(&mut self, keep: &[String]) -> usize {
        let keep: Vec<String> = keep.iter().map(|v| endpoint_pin(v)).collect();
        self.endpoints_attached
            .retain(|v| keep.contains(&endpoint_pin(v)));
        pins::retain_links(&self.links, "endpoint-", &keep)
    }

    /// Remove the endpoints whose host-side veth is not in `keep` (left by a previous run
    /// or a container removed while the daemon was down).
    pub fn retain_endpoints(&mut self, keep: &[u32]) -> Result<usize> {
        let mut endpoints: maps::HashMap<_, u32, EndpointInfo> =
            maps::HashMap::try_from(self.map_mut(names::ENDPOINTS)?)?;
        let stale: Vec<u32> = endpoints
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for key in &stale {
            endpoints.remove(key).or_else(ignore_missing)?;
        }
        let mut veths = self.endpoint_veths()?;
        let stale_veths: Vec<u32> = veths
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, ifindex)| !keep.contains(ifindex))
            .map(|(addr, _)| addr)
            .collect();
        for addr in &stale_veths {
            veths.remove(addr).or_else(ignore_missing)?;
        }
        Ok(stale.len())
    }

    /// Undo `attach_endpoint`, step one: forget who is behind the veth, so that its
    /// program drops whatever still comes from it (`drop_unknown_endpoint`) until the
    /// veth is gone and `unpin_endpoint` detaches the program. Tolerant of an endpoint
    /// already forgotten.
    pub fn forget_endpoint(&mut self, host_veth: &str, ifindex: u32) -> Result<()> {
        self.unregister_endpoint(host_veth, ifindex)
    }

    /// Undo `attach_endpoint`, step two (after the veth is deleted): unpin the program's
    /// link. Tolerant of a link already gone.
    pub fn unpin_endpoint(&mut self, host_veth: &str) -> Result<()> {
        self.endpoints_attached.remove(host_veth);
        pins::unpin_link(&self.links.join(endpoint_pin(host_veth)))
    }

    fn unregister_endpoint(&mut self, host_veth: &str, ifindex: u32) -> Result<()> {
        let mut endpoints: maps::HashMap<_, u32, EndpointInfo> =
            maps::HashMap::try_from(self.map_mut(names::ENDPOINTS)?)?;
        let addr = endpoints.get(&ifindex, 0).ok().map(|info| info.addr);
        endpoints
            .remove(&ifindex)
            .or_else(ignore_missing)
            .with_context(|| format!("unregister endpoint {host_veth}"))?;
        if let Some(addr) = addr {
            let mut veths = self.endpoint_veths()?;
            if veths.get(&addr, 0).ok() == Some(ifindex) {
                veths
                    .remove(&addr)
                    .or_else(ignore_missing)
                    .with_context(|| format!("unregister the address of endpoint {host_veth}"))?;
            }
        }
        Ok(())
    }

    /// Attach the host-local socket hooks to the cgroup at `cgroup` (a cgroup2 directory):
    /// processes in it, and only those in the node's network namespace, reach published
    /// ports on 127.0.0.1 and the node's addresses. Other programs attached there stay
    /// (a link attachment never replaces another).
    pub fn attach_host_local(&mut self, cgroup: &Path) -> Result<()> {
        let dir = std::fs::File::open(cgroup)
            .with_context(|| format!("--cgroup {}: open", cgroup.display()))?;
        let ino = std::os::unix::fs::MetadataExt::ino(&dir.metadata()?);
        let mut keep = Vec::new();
        for name in HOST_LOCAL_PROGRAMS {
            let pin = format!("cgroup-{ino}-{name}");
            let path = self.links.join(&pin);
            keep.push(pin);
            let prog = self.socket_program(name)?;
            match pins::update_pinned_link(&path, prog.fd()?.as_fd()) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    log::warn!("{e:#}: attaching afresh");
                    pins::remove_link(&path);
                }
            }
            // On kernels with bpf_link (5.7+, which this needs anyway for the netns
            // cookie) aya attaches with a link, which is always multi-attach and takes no
            // flags: BPF_F_ALLOW_MULTI there is EINVAL.
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .with_context(|| format!("attach {name} to cgroup {}", cgroup.display()))?;
            pins::pin_link(FdLink::try_from(prog.take_link(id)?)?, &path)?;
        }
        pins::retain_links(&self.links, "cgroup-", &keep);
        info!(
            "host-local access to published ports for cgroup {}",
            cgroup.display()
        );
        Ok(())
    }

    fn socket_program(&mut self, name: &str) -> Result<&mut CgroupSockAddr> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?)
    }

    /// A program of the object, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?)
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("map {name} missing"))
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("map {name} missing"))
    }

    pub fn set_node_config(&mut self, node: &NodeSettings) -> Result<()> {
        // Three quarters of the confirmed table, in flows (two entries each).
        let flow_high_water = self.flow_capacity / 2 / 4 * 3;
        let mut config: Array<_, NodeConfig> = Array::try_from(self.map_mut(names::NODE_CONFIG)?)?;
        let value = NodeConfig {
            snat_addr: addr_be(node.snat_addr),
            snat_port_min: node.snat_ports.0,
            snat_port_max: node.snat_ports.1,
            netns_cookie: node.netns_cookie,
            uplink_ifindex: node.uplink_ifindex,
            flags: if node.fast_path { FAST_PATH } else { 0 },
            flow_quota: node.flow_quota,
            flow_high_water,
        };
        config.set(0, value, 0).context("write node config")
    }

    /// Replace the set of node addresses (where wildcard bindings answer). Beyond the
    /// map's capacity the rest are left out, with a warning: wildcard bindings then do not
    /// answer on them, and nothing else is affected.
    pub fn set_node_addrs(&mut self, addrs: &[Ipv4Addr]) -> Result<()> {
        let mut map: maps::HashMap<_, u32, u8> =
            maps::HashMap::try_from(self.map_mut(names::NODE_ADDRS)?)?;
        let stale: Vec<u32> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !addrs.iter().any(|a| addr_be(*a) == *k))
            .collect();
        for key in stale {
            map.remove(&key).or_else(ignore_missing)?;
        }
        let mut left_out = Vec::new();
        for addr in addrs {
            match map.insert(addr_be(*addr), 1, 0) {
                Ok(()) => {}
                Err(e) if is_full(&e) => left_out.push(*addr),
                Err(e) => return Err(e).with_context(|| format!("add node address {addr}")),
            }
        }
        if !left_out.is_empty() {
            warn!(
                "the node has {} IPv4 addresses, more than the {} the data path keeps: published ports bound to 0.0.0.0 do not answer on {} of them ({}{})",
                addrs.len(),
                names::NODE_ADDRS_MAX,
                left_out.len(),
                left_out[0],
                if left_out.len() > 1 { ", ..." } else { "" }
            );
        }
        Ok(())
    }

    /// Tell the data path about network `subnet`: its tag (for isolation) and `NETWORK_*`
    /// flags (masquerade, direct routing); `None` forgets it.
    pub fn set_network(&mut self, subnet: Ipv4Net, info: Option<NetworkInfo>) -> Result<()> {
        let mut trie: LpmTrie<_, u32, NetworkInfo> =
            LpmTrie::try_from(self.map_mut(names::NETWORKS)?)?;
        let key = Key::new(u32::from(subnet.prefix_len()), addr_be(subnet.network()));
        match info {
            Some(info) => trie
                .insert(&key, info, 0)
                .with_context(|| format!("add network {subnet}")),
            None => trie
                .remove(&key)
                .or_else(ignore_missing)
                .with_context(|| format!("remove network {subnet}")),
        }
    }

    /// Keep only the listed subnets in the network table.
    pub fn retain_subnets(&mut self, networks: &[Ipv4Net]) -> Result<usize> {
        let mut trie: LpmTrie<_, u32, NetworkInfo> =
            LpmTrie::try_from(self.map_mut(names::NETWORKS)?)?;
        let wanted: Vec<(u32, u32)> = networks
            .iter()
            .map(|n| (u32::from(n.prefix_len()), addr_be(n.network())))
            .collect();
        let stale: Vec<Key<u32>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
            .collect();
        for key in &stale {
            trie.remove(key).or_else(ignore_missing)?;
        }
        Ok(stale.len())
    }

    /// How many entries each table holds (for `netd info`, and tests that check that
    /// nothing leaks).
    pub fn map_entry_counts(&self) -> Result<Vec<(&'static str, usize)>> {
        fn hash<K: aya::Pod, V: aya::Pod>(map: &aya::maps::Map) -> Result<usize> {
            let m: maps::HashMap<_, K, V> = maps::HashMap::try_from(map)?;
            Ok(m.keys().filter(Result::is_ok).count())
        }
        fn trie<V: aya::Pod>(map: &aya::maps::Map) -> Result<usize> {
            let m: LpmTrie<_, u32, V> = LpmTrie::try_from(map)?;
            Ok(m.keys().filter(Result::is_ok).count())
        }
        Ok(vec![
            (
                "published_ports",
                hash::<PortKey, Backend>(self.map(names::PUBLISHED_PORTS)?)?,
            ),
            (
                "flows",
                hash::<FlowKey, FlowEntry>(self.map(names::FLOWS)?)?,
            ),
            (
                "unconfirmed_flows",
                hash::<FlowKey, FlowEntry>(self.map(names::PENDING_FLOWS)?)?,
            ),
            (
                "flow_owners",
                hash::<u32, u64>(self.map(names::FLOW_OWNERS)?)?,
            ),
            (
                "fragments",
                hash::<FragmentKey, FragmentPorts>(self.map(names::FRAGMENTS)?)?,
            ),
            (
                "endpoints",
                hash::<u32, EndpointInfo>(self.map(names::ENDPOINTS)?)?,
            ),
            (
                "node_addresses",
                hash::<u32, u8>(self.map(names::NODE_ADDRS)?)?,
            ),
            ("networks", trie::<NetworkInfo>(self.map(names::NETWORKS)?)?),
        ])
    }

    fn ports(&mut self) -> Result<maps::HashMap<&mut MapData, PortKey, Backend>> {
        Ok(maps::HashMap::try_from(
            self.map_mut(names::PUBLISHED_PORTS)?,
        )?)
    }

    pub fn publish(&mut self, b: &PortBinding, addr: Ipv4Addr, ifindex: u32) -> Result<()> {
        let key = PortKey::new(b.proto.number(), b.host_ip, b.host_port);
        self.ports()?
            .insert(key, Backend::new(addr, b.container_port, ifindex), 0)
            .with_context(|| format!("publish {b}"))
    }

    /// The data path translates `b` to `addr` (`CHECK` of a CNI attachment).
    pub fn is_published(&self, b: &PortBinding, addr: Ipv4Addr) -> Result<bool> {
        let key = PortKey::new(b.proto.number(), b.host_ip, b.host_port);
        let ports: maps::HashMap<&MapData, PortKey, Backend> =
            maps::HashMap::try_from(self.map(names::PUBLISHED_PORTS)?)?;
        match ports.get(&key, 0) {
            Ok(backend) => {
                let want = Backend::new(addr, b.container_port, backend.ifindex);
                Ok((backend.addr, backend.port) == (want.addr, want.port))
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("look up {b}")),
        }
    }

    pub fn unpublish(&mut self, b: &PortBinding) -> Result<()> {
        let key = PortKey::new(b.proto.number(), b.host_ip, b.host_port);
        self.ports()?
            .remove(&key)
            .or_else(ignore_missing)
            .with_context(|| format!("unpublish {b}"))
    }

    /// Remove every published port not in `keep` (left over from a previous run).
    pub fn retain_published(&mut self, keep: &[PortKey]) -> Result<usize> {
        let mut ports = self.ports()?;
        let stale: Vec<PortKey> = ports
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for key in &stale {
            ports.remove(key).or_else(ignore_missing)?;
        }
        Ok(stale.len())
    }

    fn flows(
        &mut self,
        table: FlowTable,
    ) -> Result<maps::HashMap<&mut MapData, FlowKey, FlowEntry>> {
        let name = match table {
            FlowTable::Confirmed => names::FLOWS,
            FlowTable::Unconfirmed => names::PENDING_FLOWS,
        };
        Ok(maps::HashMap::try_from(self.map_mut(name)?)?)
    }

    /// Every entry of the connection table's two maps.
    /// A walk stops after twice the map's capacity: a walk whose current key is evicted
    /// meanwhile starts over from the first bucket, which a flood could make endless; a
    /// key seen twice is listed once.
    pub fn flow_entries(&mut self) -> Result<crate::conntrack::Snapshot> {
        let limit = 2 * self.flow_capacity as usize;
        let mut out = Vec::new();
        for table in FlowTable::BOTH {
            let mut seen = HashSet::new();
            out.extend(
                self.flows(table)?
                    .iter()
                    .take(limit)
                    .filter_map(Result::ok)
                    .filter(|(k, _)| seen.insert(*k))
                    .map(|(k, e)| (k, e, table)),
            );
        }
        Ok(out)
    }

    /// The capacity of each of the connection table's maps, in entries.
    pub fn flow_capacity(&self) -> u32 {
        self.flow_capacity
    }

    /// Remove each listed flow half from both maps (missing halves are fine).
    pub fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<()> {
        for table in FlowTable::BOTH {
            let mut flows = self.flows(table)?;
            for key in keys {
                flows.remove(key).or_else(ignore_missing)?;
            }
        }
        Ok(())
    }

    /// How many confirmed flows each endpoint address holds, as the programs count them.
    pub fn flow_owner_counts(&self) -> Result<std::collections::HashMap<u32, u64>> {
        let map: maps::HashMap<_, u32, u64> =
            maps::HashMap::try_from(self.map(names::FLOW_OWNERS)?)?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// Set how many confirmed flows each endpoint address holds (the daemon counts them
    /// from a snapshot, correcting any drift of the programs' own counting); addresses not
    /// listed hold none.
    pub fn set_flow_owners(&mut self, owned: &std::collections::HashMap<u32, u64>) -> Result<()> {
        let mut map: maps::HashMap<_, u32, u64> =
            maps::HashMap::try_from(self.map_mut(names::FLOW_OWNERS)?)?;
        let stale: Vec<u32> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !owned.contains_key(k))
            .collect();
        for key in stale {
            map.remove(&key).or_else(ignore_missing)?;
        }
        for (addr, n) in owned {
            match map.insert(*addr, *n, 0) {
                Ok(()) => {}
                // More owners than endpoints can only be stale ones: the programs add them.
                Err(e) if is_full(&e) => break,
                Err(e) => return Err(e).context("write the flow owners"),
            }
        }
        Ok(())
    }

    /// Remove each listed flow half of `table` that is still expired at `now`
    /// (CLOCK_MONOTONIC ns, read just before the call), judged again in the kernel by
    /// `flow_sweep` in batches: a half refreshed after the caller's snapshot (a client
    /// reusing the tuple) stays. Returns how many halves were removed.
    pub fn sweep_flows(&mut self, table: FlowTable, keys: &[FlowKey], now: u64) -> Result<usize> {
        let mut removed = 0;
        for batch in keys.chunks(SWEEP_BATCH as usize) {
            {
                let mut slots: Array<_, FlowKey> = Array::try_from(self.map_mut(names::SWEEP)?)?;
                for (i, key) in batch.iter().enumerate() {
                    slots
                        .set(i as u32, *key, 0)
                        .context("fill the sweep batch")?;
                }
            }
            // Packet data: now, the batch's length and its table; padded to a minimal frame.
            let mut input = [0u8; 64];
            input[..8].copy_from_slice(&now.to_ne_bytes());
            input[8..12].copy_from_slice(&(batch.len() as u32).to_ne_bytes());
            input[12..16].copy_from_slice(&(table as u32).to_ne_bytes());
            let result = self
                .program(SWEEP_PROGRAM)?
                .test_run(TestRunOptions {
                    data_in: Some(&input),
                    ..Default::default()
                })
                .context("run the flow sweep")?;
            removed += result.return_value as usize;
        }
        Ok(removed)
    }

    /// Counters summed over CPUs, by hook and reason.
    pub fn counters(&self) -> Result<Vec<(Hook, Reason, Counter)>> {
        let map: PerCpuArray<_, Counter> = PerCpuArray::try_from(self.map(names::COUNTERS)?)?;
        let mut out = Vec::new();
        for hook in Hook::ALL.iter().copied() {
            for reason in Reason::ALL {
                let per_cpu = map.get(&counter_index(hook, *reason), 0)?;
                let mut sum = Counter::default();
                for c in per_cpu.iter() {
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                }
                out.push((hook, *reason, sum));
            }
        }
        Ok(out)
    }
}

/// The node-wide settings the programs read.
pub struct NodeSettings {
    /// The uplink's address: masqueraded traffic leaves with it.
    pub snat_addr: Ipv4Addr,
    pub snat_ports: (u16, u16),
    /// The node's network namespace, where the socket hooks act (0: off).
    pub netns_cookie: u64,
    pub uplink_ifindex: u32,
    /// Redirect translated packets straight into containers and out of the uplink.
    pub fast_path: bool,
    /// Confirmed flows per endpoint address (0: no limit).
    pub flow_quota: u32,
}

/// Swap `prog` into the link pinned at `path`; `false` when there is none, or when the
/// pinned link cannot take it (its interface is gone; the pin is removed then).
fn swap_into_pinned_link(path: &Path, prog: std::os::fd::BorrowedFd<'_>) -> bool {
    match pins::update_pinned_link(path, prog) {
        Ok(updated) => updated,
        Err(e) => {
            warn!("{e:#}: attaching afresh");
            pins::remove_link(path);
            false
        }
    }
}

/// The pin name of the endpoint program's link on a host-side veth.
fn endpoint_pin(host_veth: &str) -> String {
    format!("endpoint-{host_veth}")
}

/// A map insert refused for lack of room (E2BIG).
fn is_full(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG))
}

fn ignore_missing(e: aya::maps::MapError) -> Result<(), aya::maps::MapError> {
    match &e {
        aya::maps::MapError::KeyNotFound => Ok(()),
        aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        _ => Err(e),
    }
}

/// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE, Linux 5.14).
pub fn netns_cookie() -> Result<u64> {
    crate::netns::current_cookie()
}

/// The cgroup2 hierarchy's mount point, if this mount namespace has one.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[1]))
    })
}
