//! The daemon's persistent state (networks and containers) and its crash-safe store:
//! written to a temporary file, fsynced, renamed over `state.json`, directory fsynced, so
//! a crash at any moment leaves either the old or the new state, never a torn one.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::ports::PortBinding;

/// The layout of `state.json`; a file of another version is refused, not guessed at.
/// Layout 3: a binding on every address is one family's (`0.0.0.0` or `::`).
/// Layout 4: a network, endpoint or shim may have no IPv4 (`subnet`, `gateway`, `ip`
/// absent: an IPv6-only network), which a netd of layout 3 must not misread.
pub const STATE_VERSION: u32 = 4;

/// A bridge network, as `netd network create` made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The Linux bridge, with the gateway address on it (empty for a macvlan network).
    pub bridge: String,
    /// A macvlan network's parent and mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan: Option<MacvlanNet>,
    /// The IPv4 subnet and gateway (on the bridge); none on an IPv6-only network
    /// (`--ipv4=false`), which then has `ipv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Where dynamic addresses come from (default: the whole subnet).
    pub ip_range: Option<Ipv4Net>,
    /// `--aux-address`: other hosts' addresses on the network, never handed out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// The network's IPv6 side (`--ipv6`); none in a network of IPv4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Network6>,
    /// No masquerade, no route out, no published ports.
    pub internal: bool,
    /// Containers of this network may talk to each other (`enable_icc`).
    pub icc: bool,
    /// Egress is masqueraded behind the uplink's address (`enable_ip_masquerade`).
    pub masquerade: bool,
    pub mtu: Option<u32>,
    /// How hosts beyond the uplink reach its containers (`gateway_mode`).
    #[serde(default)]
    pub gateway_mode: crate::network_request::GatewayMode,
    /// The `-o` options as given.
    pub options: BTreeMap<String, String>,
    /// The network's number in the data path (endpoints and subnets carry it).
    pub tag: u32,
    /// The address handed out last: allocation goes on after it (Docker's serial order),
    /// so a released address is not reused at once.
    #[serde(default)]
    pub last_allocated: Option<Ipv4Addr>,
    pub created: u64,
    /// Docker's ID for the network, when Docker made it (`docker network create -d netd`):
    /// Docker names it by this ID alone, and never tells a driver again.
    #[serde(default)]
    pub docker_id: Option<String>,
    /// An overlay network of the cluster, set up on this node while containers of the node
    /// are on it (its record is the store's; this is the node's share of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayNet>,
}

/// A dual-stack network's IPv6 subnet, gateway (on the bridge) and range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network6 {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
    /// Where dynamic addresses come from (default: the whole subnet).
    pub ip_range: Option<Ipv6Net>,
    /// The address handed out last (allocation goes on after it, as for IPv4).
    #[serde(default)]
    pub last_allocated: Option<Ipv6Addr>,
    /// `gateway_mode_ipv6`: `Nat` (nothing beyond the node's networks, until netd
    /// masquerades IPv6) or `Routed` (the subnet routed by the node, both ways).
    #[serde(default)]
    pub gateway_mode: crate::network_request::GatewayMode,
}

/// What makes a node's network an overlay's share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNet {
    pub vni: u32,
}

/// What a macvlan network is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacvlanNet {
    /// The link the containers' macvlans sit on.
    pub parent: String,
    /// netd made the parent (a network with no `parent` option: internal, as Docker's
    /// dummy parent) and removes it with the network.
    pub parent_made: bool,
    pub mode: crate::network_request::MacvlanMode,
    /// A shim on the node reaches the containers (`com.netd.macvlan.host_access`).
    pub host_access: bool,
    /// The node's own macvlan on the parent and its address, with `host_access`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim: Option<Shim>,
}

/// The node's macvlan on a macvlan network's parent: the kernel never passes frames
/// between a parent and its macvlans, so the node reaches its containers through a
/// sibling macvlan of its own, with a host route per container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shim {
    pub name: String,
    /// Taken from the network's range, so that containers answer it on the LAN; none on
    /// an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, from the network's IPv6 range, on a network with IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
}

impl Network {
    /// Record the addresses just handed out: the next allocation goes on after them.
    pub fn note_allocated(&mut self, ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) {
        if ip.is_some() {
            self.last_allocated = ip;
        }
        if let (Some(v6), Some(ip6)) = (self.ipv6.as_mut(), ip6) {
            v6.last_allocated = Some(ip6);
        }
    }

    /// Its IPv4 subnet and gateway, unless it is IPv6-only.
    pub fn ipv4(&self) -> Option<(Ipv4Net, Ipv4Addr)> {
        self.subnet.zip(self.gateway)
    }

    pub fn is_macvlan(&self) -> bool {
        self.macvlan.is_some()
    }

    pub fn vni(&self) -> Option<u32> {
        self.overlay.map(|o| o.vni)
    }
}

/// A process the daemon started, identified by pid and start time (so a reused pid is
/// never mistaken for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Status {
    /// Wired by `netd create`, no process started.
    Created,
    Running,
    Exited {
        code: Option<i32>,
    },
}

/// Where a container's network namespace comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Sandbox {
    /// Its own namespace, kept alive by a pause process of ours (bridge networks, none).
    Holder { holder: ProcessId },
    /// The node's own namespace (`--network host`).
    Host,
    /// The namespace of another container (`--network container:NAME`).
    Container { name: String },
    /// A namespace someone else made (`--netns PATH`), identified by device and inode so
    /// that a path reused for another namespace is noticed, and by its cookie, so that a
    /// newer namespace that got a freed one's inode number is too.
    External {
        path: PathBuf,
        dev: u64,
        ino: u64,
        #[serde(default)]
        cookie: Option<u64>,
    },
    /// A namespace a runtime made and attached through CNI (`netd-cni ADD`): like
    /// `External`, with the attachment's key.
    Cni(CniAttachment),
    /// A namespace Docker makes (Docker's `-d netd` endpoints): netd never opens it. It
    /// makes the veth, keeps the host end, and hands `peer` to Docker by name at `Join`.
    Docker(DockerEndpoint),
}

/// A CNI attachment: (network, container ID, interface) is its key; the namespace is
/// known by path and by device and inode, like `--netns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAttachment {
    pub container_id: String,
    pub ifname: String,
    /// The runtime's CNI network (its configuration's `name`), which scopes its `GC`;
    /// absent in records of netd 0.1's first CNI layout.
    #[serde(default)]
    pub cni_network: Option<String>,
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// The namespace's cookie: (device, inode) find a candidate, the cookie tells whether
    /// it is still this namespace (inode numbers are reused).
    #[serde(default)]
    pub cookie: Option<u64>,
    /// This interface carries the namespace's default route.
    pub default_route: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What Docker told netd of one of its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    pub network_id: String,
    pub endpoint_id: String,
    /// The container end of the veth while it is in the node's namespace.
    pub peer: String,
    /// Where Docker puts the container's namespace (known from `Join` on).
    pub sandbox_key: Option<String>,
}

/// An address pool of netd's IPAM driver, as Docker asked for it (`--ipam-driver netd`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamPool {
    pub subnet: Ipv4Net,
    /// `--ip-range`: where addresses are handed out.
    pub range: Option<Ipv4Net>,
    /// The addresses handed out (the gateway among them).
    pub addresses: std::collections::BTreeSet<Ipv4Addr>,
    pub last_allocated: Option<Ipv4Addr>,
}

/// The IPv6 twin of `IpamPool`: a pool Docker asked for with `V6` (`--ipv6`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamPool6 {
    pub subnet: Ipv6Net,
    /// `--ip-range`: where addresses are handed out.
    pub range: Option<Ipv6Net>,
    /// The addresses handed out (the gateway among them).
    pub addresses: std::collections::BTreeSet<Ipv6Addr>,
    pub last_allocated: Option<Ipv6Addr>,
}

impl Endpoint {
    /// Its MAC address as bytes (as recorded; from its addresses if the record is bad).
    pub fn mac_bytes(&self) -> [u8; 6] {
        crate::endpoint::parse_mac(&self.mac)
            .unwrap_or_else(|| crate::endpoint::mac_of(self.ip, self.ip6))
    }

    /// Its addresses as the log says them: `10.1.0.2`, `10.1.0.2 and fd00:1::2`, or
    /// `fd00:1::2` on an IPv6-only network.
    pub fn addresses(&self) -> String {
        let v4 = self.ip.map(|ip| ip.to_string());
        let v6 = self.ip6.map(|ip| ip.to_string());
        v4.into_iter().chain(v6).collect::<Vec<_>>().join(" and ")
    }
}

/// A container's interface on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    /// Its IPv4 address; none on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, on a network with IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: String,
    /// The interface inside the container (`eth0`, `eth1`, ...).
    pub ifname: String,
    /// The host end of the veth, on the network's bridge; empty for a driver that has no
    /// host end (macvlan: the container's interface sits on the parent directly).
    pub host_veth: String,
    pub host_ifindex: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// As given: `bridge`, a network's name, `host`, `none`, `container:NAME`, or `netns`.
    pub network_mode: String,
    pub sandbox: Sandbox,
    /// One per network, in the order joined; the first carries the default route and
    /// the published ports.
    pub endpoints: Vec<Endpoint>,
    pub cmd: Vec<String>,
    pub process: Option<ProcessId>,
    pub status: Status,
    pub ports: Vec<PortBinding>,
    pub created: u64,
}

impl Container {
    /// The endpoint that published ports lead to.
    pub fn primary(&self) -> Option<&Endpoint> {
        self.endpoints.first()
    }

    pub fn endpoint(&self, network: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.network == network)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub networks: BTreeMap<String, Network>,
    pub containers: BTreeMap<String, Container>,
    /// Docker's IPAM pools, by pool ID.
    #[serde(default)]
    pub ipam_pools: BTreeMap<String, IpamPool>,
    /// Docker's IPv6 IPAM pools, by pool ID (unique across both maps).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ipam_pools6: BTreeMap<String, IpamPool6>,
    /// The node's ULA global ID (40 bits, RFC 4193), drawn when a network first needs an
    /// IPv6 subnet of the node's own `ipam6::ula_base`, and kept so that it stays the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ula_global_id: Option<u64>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            networks: BTreeMap::new(),
            containers: BTreeMap::new(),
            ipam_pools: BTreeMap::new(),
            ipam_pools6: BTreeMap::new(),
            ula_global_id: None,
        }
    }
}

impl State {
    /// Each record is filed under its own name (the daemon looks records up by key and
    /// removes them by name).
    fn check_keys(&self) -> Result<()> {
        for (key, n) in &self.networks {
            if *key != n.name {
                bail!("network {key:?} holds a record named {:?}", n.name);
            }
        }
        for (key, c) in &self.containers {
            if *key != c.name {
                bail!("container {key:?} holds a record named {:?}", c.name);
            }
        }
        Ok(())
    }

    /// Every endpoint of every container, with its container.
    pub fn endpoints(&self) -> impl Iterator<Item = (&Container, &Endpoint)> {
        self.containers
            .values()
            .flat_map(|c| c.endpoints.iter().map(move |e| (c, e)))
    }
}

pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The state directory, created 0700 if missing, and tightened to 0700 if it is
    /// open to others (it holds commands and their output). A sticky directory (a shared
    /// one such as /tmp) is not changed, only reported.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create state directory {}", dir.display()))?;
        let mode = fs::metadata(dir)
            .with_context(|| format!("state directory {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            if mode & 0o1000 != 0 {
                log::warn!(
                    "state directory {} is a shared (sticky) directory, mode {:04o}: give netd a directory of its own",
                    dir.display(),
                    mode & 0o7777
                );
            } else {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("chmod 0700 {}", dir.display()))?;
                log::info!(
                    "state directory {}: mode {:04o} tightened to 0700",
                    dir.display(),
                    mode & 0o7777
                );
            }
        }
        Ok(Store {
            path: dir.join("state.json"),
        })
    }

    /// A directory of the state's, created 0700 (or tightened to it).
    pub fn private_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.path.with_file_name(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
        Ok(dir)
    }

    /// Hold the state directory for this daemon (released when the returned file closes,
    /// also when the daemon is killed).
    pub fn lock(&self) -> Result<fs::File> {
        use std::os::fd::AsRawFd;
        let path = self.path.with_file_name("lock");
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
        // SAFETY: flock on a file we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "another netd daemon is using the state directory {}: stop it first, or give this one another --state-dir",
                self.path.parent().unwrap_or(Path::new(".")).display()
            );
        }
        Ok(f)
    }

    pub fn load(&self) -> Result<State> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => {
                return Err(e).with_context(|| format!("read state file {}", self.path.display()));
            }
        };
        let parse = || -> Result<State> {
            let mut value: serde_json::Value = serde_json::from_slice(&bytes)?;
            if !value.is_object() {
                bail!(
                    "it holds a JSON {} where an object with \"version\", \"networks\" and \"containers\" belongs",
                    json_kind(&value)
                );
            }
            let version = match value.get("version") {
                None => 1,
                Some(v) => v
                    .as_u64()
                    .with_context(|| format!("\"version\" is {v}, not a layout number"))?,
            };
            if version == 1 {
                value = migrate_v1(value)?;
            } else if !(2..=u64::from(STATE_VERSION)).contains(&version) {
                bail!(
                    "it has layout version {version}, this netd reads version {STATE_VERSION}; start the netd that wrote it, or move the file away to start empty"
                );
            }
            let mut state: State = serde_json::from_value(value)?;
            if version < 3 {
                upgrade_v2(&mut state);
            }
            if version < u64::from(STATE_VERSION) {
                state.version = STATE_VERSION;
                log::info!(
                    "state file {}: upgraded from layout version {version}",
                    self.path.display()
                );
            }
            state.check_keys()?;
            Ok(state)
        };
        parse().with_context(|| format!("state file {}", self.path.display()))
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state)?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // An older temporary file keeps its mode through O_CREAT: set it.
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            fs::File::open(self.path.parent().unwrap_or(Path::new(".")))?.sync_all()
        };
        write().with_context(|| format!("write state file {}", self.path.display()))
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The object under `key` of `v`, if there is one; anything else there is an error.
fn object_at<'a>(
    v: &'a mut serde_json::Value,
    key: &str,
) -> Result<Option<&'a mut serde_json::Map<String, serde_json::Value>>> {
    match v.get_mut(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(m)) => Ok(Some(m)),
        Some(other) => bail!("\"{key}\" is a JSON {}, not an object", json_kind(other)),
    }
}

/// Layout 2 to 3: a binding on `0.0.0.0` meant every address of both families for a
/// container with IPv6 (the `[::]` binding was implied); it is written out.
fn upgrade_v2(state: &mut State) {
    for c in state.containers.values_mut() {
        if c.primary().is_none_or(|e| e.ip6.is_none()) {
            continue;
        }
        let twins: Vec<PortBinding> = c
            .ports
            .iter()
            .filter(|b| b.host_ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            .map(|b| PortBinding {
                host_ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ..*b
            })
            .filter(|twin| !c.ports.contains(twin))
            .collect();
        c.ports.extend(twins);
    }
}

/// Layout 1 (one network per container, no modes) to layout 2: each container's network,
/// address and veth become its one endpoint in its own namespace; networks get the fields
/// the default network has. A record that lacks what layout 1 always wrote is an error
/// naming it, never a guess.
fn migrate_v1(mut v: serde_json::Value) -> Result<serde_json::Value> {
    use serde_json::json;
    let mut tag = 0;
    if let Some(networks) = object_at(&mut v, "networks")? {
        for (name, n) in networks.iter_mut() {
            tag += 1;
            let id = format!("{:012x}", tag);
            let defaults = json!({
                "id": id, "driver": "bridge", "ip_range": null, "internal": false,
                "icc": true, "masquerade": true, "mtu": null, "options": {}, "tag": tag,
                "last_allocated": null, "created": 0,
            });
            let n = n
                .as_object_mut()
                .with_context(|| format!("network {name:?} is not an object"))?;
            for (k, d) in defaults.as_object().into_iter().flatten() {
                n.entry(k.clone()).or_insert(d.clone());
            }
        }
    }
    if let Some(containers) = object_at(&mut v, "containers")? {
        for (name, c) in containers.iter_mut() {
            let obj = c
                .as_object_mut()
                .with_context(|| format!("container {name:?} is not an object"))?;
            let mut take = |key: &str| {
                obj.remove(key).with_context(|| {
                    format!("container {name:?} has no {key:?} (layout 1 always records it)")
                })
            };
            let (network, ip, host_veth, host_ifindex, holder) = (
                take("network")?,
                take("ip")?,
                take("host_veth")?,
                take("host_ifindex")?,
                take("netns_holder")?,
            );
            // Layout 1 did not choose MACs: the next start reads the live one.
            let endpoint = json!({
                "network": network, "ip": ip, "mac": "", "ifname": "eth0",
                "host_veth": host_veth, "host_ifindex": host_ifindex,
            });
            obj.insert("network_mode".into(), network);
            obj.insert(
                "sandbox".into(),
                json!({"kind": "holder", "holder": holder}),
            );
            obj.insert("endpoints".into(), json!([endpoint]));
        }
    }
    v["version"] = json!(STATE_VERSION);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(tag: &str) -> (PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("netd-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        (dir, store)
    }

    #[test]
    fn state_survives_a_save_and_load() {
        let (dir, store) = temp_store("roundtrip");
        assert!(store.load().unwrap().networks.is_empty());
        let mut state = State::default();
        state.networks.insert(
            "netd0".into(),
            Network {
                id: "0123456789ab".into(),
                name: "netd0".into(),
                driver: "bridge".into(),
                bridge: "netd0".into(),
                macvlan: None,
                aux_addresses: Default::default(),
                subnet: Some("172.17.0.0/16".parse().unwrap()),
                gateway: Some("172.17.0.1".parse().unwrap()),
                ip_range: None,
                ipv6: Some(Network6 {
                    gateway_mode: Default::default(),
                    subnet: "fd42:98fc:1c14::/64".parse().unwrap(),
                    gateway: "fd42:98fc:1c14::1".parse().unwrap(),
                    ip_range: None,
                    last_allocated: None,
                }),
                internal: false,
                icc: true,
                masquerade: true,
                mtu: None,
                gateway_mode: Default::default(),
                options: BTreeMap::new(),
                tag: 1,
                last_allocated: None,
                created: 0,
                docker_id: None,
                overlay: None,
            },
        );
        store.save(&state).unwrap();
        state.ula_global_id = Some(0x42_98fc_1c14);
        state.ipam_pools6.insert(
            "p6".into(),
            IpamPool6 {
                subnet: "fd00:30::/64".parse().unwrap(),
                range: None,
                addresses: ["fd00:30::1".parse().unwrap()].into(),
                last_allocated: None,
            },
        );
        store.save(&state).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.networks["netd0"], state.networks["netd0"]);
        assert_eq!(back.ula_global_id, state.ula_global_id);
        assert_eq!(back.ipam_pools6, state.ipam_pools6);
        assert!(!dir.join("state.json.tmp").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_state_of_an_unknown_layout_is_refused_with_what_to_do() {
        let (dir, store) = temp_store("version");
        fs::write(
            dir.join("state.json"),
            br#"{"version":9,"networks":{},"containers":{}}"#,
        )
        .unwrap();
        let err = format!("{:#}", store.load().unwrap_err());
        assert!(err.contains("layout version 9"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_layout_1_state_is_upgraded() {
        let (dir, store) = temp_store("v1");
        let v1 = br#"{
          "networks": {"netd0": {"name": "netd0", "bridge": "netd0",
                                 "subnet": "172.17.0.0/16", "gateway": "172.17.0.1"}},
          "containers": {"web": {"id": "0123456789ab", "name": "web", "network": "netd0",
            "ip": "172.17.0.2", "host_veth": "veth0123456789a", "host_ifindex": 7,
            "netns_holder": {"pid": 42, "start_time": 99}, "cmd": ["sleep", "1"],
            "process": null, "status": {"state": "running"},
            "ports": [], "created": 1}}
        }"#;
        fs::write(dir.join("state.json"), v1).unwrap();
        let state = store.load().unwrap();
        let web = &state.containers["web"];
        assert_eq!(web.network_mode, "netd0");
        let holder = ProcessId {
            pid: 42,
            start_time: 99,
        };
        assert_eq!(web.sandbox, Sandbox::Holder { holder });
        assert_eq!(web.endpoints[0].ip, Some(Ipv4Addr::new(172, 17, 0, 2)));
        assert_eq!(web.endpoints[0].mac, "", "read from the interface at start");
        assert_eq!(web.endpoints[0].host_ifindex, 7);
        assert!(state.networks["netd0"].icc);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_state_file_of_the_wrong_shape_is_a_clean_error_naming_the_file() {
        let (dir, store) = temp_store("shape");
        let file = dir.join("state.json");
        for (content, why) in [
            ("[]", "JSON array where an object"),
            ("42", "JSON number where an object"),
            ("null", "JSON null where an object"),
            (r#"{"version":"2"}"#, "not a layout number"),
            (
                r#"{"networks":[],"containers":{}}"#,
                "\"networks\" is a JSON array",
            ),
            (
                r#"{"networks":{},"containers":7}"#,
                "\"containers\" is a JSON number",
            ),
            (
                r#"{"networks":{"n":1},"containers":{}}"#,
                "network \"n\" is not an object",
            ),
            (
                r#"{"networks":{},"containers":{"web":[]}}"#,
                "container \"web\" is not an object",
            ),
            (
                r#"{"networks":{},"containers":{"web":{"id":"0123456789ab","name":"web",
                   "ip":"172.17.0.2","host_veth":"v","host_ifindex":7,
                   "netns_holder":{"pid":42,"start_time":99},"cmd":[],"process":null,
                   "status":{"state":"running"},"ports":[],"created":1}}}"#,
                "container \"web\" has no \"network\"",
            ),
            (
                r#"{"version":2,"networks":{},"containers":{},"extra":1}"#,
                "",
            ),
            (
                r#"{"version":2,"networks":{"a":5},"containers":{}}"#,
                "expected struct Network",
            ),
        ] {
            fs::write(&file, content).unwrap();
            match store.load() {
                Ok(_) => assert!(why.is_empty(), "{content} was accepted"),
                Err(e) => {
                    let e = format!("{e:#}");
                    assert!(e.contains(why), "{content}: {e}");
                    assert!(e.contains(&file.display().to_string()), "{content}: {e}");
                }
            }
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_layout_2_binding_on_every_address_keeps_its_ipv6_twin() {
        let (dir, store) = temp_store("v2");
        let binding = |host_ip: &str, host_port| PortBinding {
            proto: crate::ports::Proto::Tcp,
            container_port: 80,
            host_ip: host_ip.parse().unwrap(),
            host_port,
        };
        let container = |name: &str, ip6: Option<Ipv6Addr>| Container {
            id: "0123456789ab".into(),
            name: name.into(),
            network_mode: "netd0".into(),
            sandbox: Sandbox::Host,
            endpoints: vec![Endpoint {
                network: "netd0".into(),
                ip: Some(Ipv4Addr::new(172, 17, 0, 2)),
                ip6,
                mac: String::new(),
                ifname: "eth0".into(),
                host_veth: "veth0".into(),
                host_ifindex: 7,
            }],
            cmd: Vec::new(),
            process: None,
            status: Status::Created,
            ports: vec![binding("0.0.0.0", 8080), binding("127.0.0.1", 8081)],
            created: 0,
        };
        let mut state = State::default();
        let dual = container("dual", Some("fd00:30::2".parse().unwrap()));
        state.containers.insert("dual".into(), dual);
        state.containers.insert("v4".into(), container("v4", None));
        store.save(&state).unwrap();
        let file = dir.join("state.json");
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        v["version"] = serde_json::json!(2);
        fs::write(&file, v.to_string()).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.version, STATE_VERSION);
        assert_eq!(
            back.containers["dual"].ports,
            [
                binding("0.0.0.0", 8080),
                binding("127.0.0.1", 8081),
                binding("::", 8080)
            ]
        );
        assert_eq!(back.containers["v4"].ports, state.containers["v4"].ports);
        // Saved as the present layout, loaded again: nothing added twice.
        store.save(&back).unwrap();
        assert_eq!(store.load().unwrap().containers["dual"].ports.len(), 3);
        // A file of layout 3 (before IPv6-only networks) is read as it is.
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        v["version"] = serde_json::json!(3);
        fs::write(&file, v.to_string()).unwrap();
        let v3 = store.load().unwrap();
        assert_eq!(v3.version, STATE_VERSION);
        assert_eq!(v3.containers["dual"].ports, back.containers["dual"].ports);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_record_filed_under_another_name_is_refused() {
        let (dir, store) = temp_store("keys");
        let mut state = State::default();
        state.containers.insert(
            "web".into(),
            Container {
                id: "0123456789ab".into(),
                name: "db".into(),
                network_mode: "none".into(),
                sandbox: Sandbox::Host,
                endpoints: Vec::new(),
                cmd: Vec::new(),
                process: None,
                status: Status::Created,
                ports: Vec::new(),
                created: 0,
            },
        );
        store.save(&state).unwrap();
        let e = format!("{:#}", store.load().unwrap_err());
        assert!(
            e.contains("container \"web\" holds a record named \"db\""),
            "{e}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_state_is_readable_by_its_owner_only() {
        let dir = std::env::temp_dir().join(format!("netd-state-modes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // Made by netd: 0700 whatever the umask.
        let store = Store::open(&dir.join("new")).unwrap();
        assert_eq!(mode(&dir.join("new")), 0o700);
        // Left open by an older netd (or by hand): tightened, and its files too.
        fs::create_dir_all(dir.join("old")).unwrap();
        fs::set_permissions(dir.join("old"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("old/lock"), b"").unwrap();
        fs::set_permissions(dir.join("old/lock"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(dir.join("old/state.json.tmp"), b"").unwrap();
        fs::set_permissions(
            dir.join("old/state.json.tmp"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let old = Store::open(&dir.join("old")).unwrap();
        assert_eq!(mode(&dir.join("old")), 0o700);
        let _lock = old.lock().unwrap();
        assert_eq!(mode(&dir.join("old/lock")), 0o600);
        old.save(&State::default()).unwrap();
        assert_eq!(mode(&dir.join("old/state.json")), 0o600);
        fs::create_dir_all(dir.join("old/logs")).unwrap();
        fs::set_permissions(dir.join("old/logs"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(mode(&old.private_dir("logs").unwrap()), 0o700);
        // A shared sticky directory is left as it is.
        fs::create_dir_all(dir.join("shared")).unwrap();
        fs::set_permissions(dir.join("shared"), fs::Permissions::from_mode(0o1777)).unwrap();
        Store::open(&dir.join("shared")).unwrap();
        assert_eq!(mode(&dir.join("shared")), 0o1777);
        drop(store);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_temporary_file_does_not_matter() {
        let (dir, store) = temp_store("torn");
        store.save(&State::default()).unwrap();
        // A crash mid-write leaves a partial temporary file; the state is the last rename.
        fs::write(dir.join("state.json.tmp"), b"{\"versi").unwrap();
        assert!(store.load().unwrap().containers.is_empty());
        store.save(&State::default()).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }
}
