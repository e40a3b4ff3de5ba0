//! The daemon: owns the data path, the node's bridges and the containers' endpoints, and
//! answers the API. Startup adopts what a previous run left (pinned maps, live
//! containers) and removes what no longer has an owner.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Weak},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use hyper::Method;
use ipnet::Ipv4Net;
use log::{info, warn};
use netd_common::published::PortKey;
use serde_json::{Value, json};
use tokio::{process::Child, sync::Mutex};

use crate::{
    api::{self, ApiError, ApiRequest, CounterView, RunRequest},
    conntrack,
    datapath::{self, Datapath},
    endpoint::{self, EndpointSpec},
    ipam,
    netlink::Netlink,
    netns,
    node_ports::node_sockets,
    ports::{self, EphemeralPorts, PortBinding, PortRange, PortSpec},
    process,
    state::{Container, Network, State, Status, Store},
};

/// The network every container joins unless told otherwise (Docker's `bridge`).
pub const DEFAULT_NETWORK: &str = "netd0";

pub struct DaemonConfig {
    pub uplink: Option<String>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    pub snat_ports: PortRange,
    pub flow_table_size: u32,
    /// Where the host-local socket hooks attach; `None`: the cgroup2 root, if mounted.
    pub cgroup: Option<PathBuf>,
    /// How often expired flows are removed from the connection table.
    pub gc_interval: Duration,
}

struct Inner {
    state: State,
    store: Store,
    datapath: Datapath,
    netlink: Netlink,
    state_dir: PathBuf,
    uplink: String,
    uplink_addr: Ipv4Addr,
    snat_ports: PortRange,
    ephemeral: EphemeralPorts,
}

pub struct Daemon {
    inner: Mutex<Inner>,
    me: Weak<Daemon>,
}

pub async fn run(config: DaemonConfig) -> Result<()> {
    let netlink = Netlink::connect()?;
    let uplink = match &config.uplink {
        Some(u) => u.clone(),
        None => default_route_link(&netlink).await?,
    };
    let uplink_index = netlink.link_index(&uplink).await?.with_context(|| {
        format!("--uplink {uplink}: no such interface in this network namespace")
    })?;
    let uplink_addr = netlink
        .ipv4_addresses()
        .await?
        .into_iter()
        .find(|(i, _)| *i == uplink_index)
        .map(|(_, net)| net.addr())
        .with_context(|| {
            format!("--uplink {uplink}: the interface has no IPv4 address to masquerade with")
        })?;
    let store = Store::open(&config.state_dir)?;
    let state = store.load()?;
    let mut datapath = Datapath::load(&config.bpffs_dir, config.flow_table_size)?;
    datapath.attach(&uplink)?;
    datapath.set_node_config(
        uplink_addr,
        (config.snat_ports.start, config.snat_ports.end),
        datapath::netns_cookie()?,
    )?;
    match config.cgroup.clone().or_else(datapath::cgroup2_mount) {
        Some(cgroup) => datapath.attach_host_local(&cgroup)?,
        None => warn!(
            "no cgroup2 mount found: processes of the node cannot reach published ports through 127.0.0.1 or the node's addresses (give --cgroup)"
        ),
    }
    write_sysctl("net/ipv4/ip_forward", "1")?;

    let daemon = Arc::new_cyclic(|me| Daemon {
        inner: Mutex::new(Inner {
            state,
            store,
            datapath,
            netlink,
            state_dir: config.state_dir.clone(),
            uplink: uplink.clone(),
            uplink_addr,
            snat_ports: config.snat_ports,
            ephemeral: EphemeralPorts::from_node(),
        }),
        me: me.clone(),
    });
    daemon.start().await?;
    info!(
        "netd ready: uplink {uplink} ({uplink_addr}), API on {}",
        config.socket.display()
    );

    tokio::spawn(collect_garbage(Arc::downgrade(&daemon), config.gc_interval));
    let handler = {
        let daemon = daemon.clone();
        Arc::new(move |req: ApiRequest| {
            let daemon = daemon.clone();
            async move { daemon.route(req).await }
        })
    };
    api::serve(&config.socket, handler, shutdown_signal()).await?;
    info!("netd stopping; containers keep running and are adopted by the next start");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

async fn default_route_link(netlink: &Netlink) -> Result<String> {
    let oif = netlink
        .ipv4_routes()
        .await?
        .into_iter()
        .find_map(|(dst, oif)| (dst.prefix_len() == 0).then_some(oif).flatten())
        .context(
            "no default route in this network namespace: name the uplink with --uplink IFACE",
        )?;
    netlink.link_name(oif).await
}

fn write_sysctl(name: &str, value: &str) -> Result<()> {
    // /proc/sys/net follows the network namespace of the writer.
    std::fs::write(format!("/proc/sys/{name}"), value)
        .with_context(|| format!("set sysctl {name}={value}"))
}

impl Daemon {
    /// Create the default network, then adopt or clean up what the state file lists.
    async fn start(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        inner.ensure_default_network().await?;
        let names: Vec<String> = inner.state.containers.keys().cloned().collect();
        for name in names {
            let c = inner.state.containers[&name].clone();
            if !process::is_alive(c.netns_holder) {
                warn!("container {name}: its network namespace is gone; removing it");
                inner.teardown(&c).await;
                inner.state.containers.remove(&name);
                continue;
            }
            let gateway = inner.state.networks.get(&c.network).map(|n| n.gateway);
            if let Some(gateway) = gateway {
                inner
                    .datapath
                    .attach_endpoint(&c.host_veth, c.host_ifindex, c.ip, gateway)?;
            }
            for b in &c.ports {
                inner.datapath.publish(b, c.ip, c.host_ifindex)?;
            }
            if let (Status::Running, Some(p)) = (&c.status, c.process) {
                if process::is_alive(p) {
                    self.watch_adopted(name.clone(), p);
                    info!("container {name}: adopted (pid {})", p.pid);
                } else {
                    inner.set_status(&name, Status::Exited { code: None });
                }
            }
        }
        let keep: Vec<PortKey> = inner
            .state
            .containers
            .values()
            .flat_map(|c| c.ports.iter().map(port_key))
            .collect();
        let removed = inner.datapath.retain_published(&keep)?;
        if removed > 0 {
            info!("removed {removed} published ports that no container owns");
        }
        inner.refresh_node_addrs().await?;
        inner.save()
    }

    async fn route(&self, req: ApiRequest) -> Result<Value, ApiError> {
        let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
        match (&req.method, path.as_slice()) {
            (&Method::GET, ["ping"]) => Ok(json!({ "version": env!("CARGO_PKG_VERSION") })),
            (&Method::GET, ["info"]) => Ok(self.info().await),
            (&Method::GET, ["containers"]) => {
                let inner = self.inner.lock().await;
                Ok(
                    serde_json::to_value(inner.state.containers.values().collect::<Vec<_>>())
                        .map_err(anyhow::Error::from)?,
                )
            }
            (&Method::POST, ["containers"]) => {
                let c = self.run_container(req.json()?).await?;
                Ok(serde_json::to_value(c).map_err(anyhow::Error::from)?)
            }
            (&Method::GET, ["containers", name]) => {
                let inner = self.inner.lock().await;
                let c = inner.container(name)?;
                Ok(serde_json::to_value(c).map_err(anyhow::Error::from)?)
            }
            (&Method::DELETE, ["containers", name]) => {
                self.remove_container(name, req.flag("force")).await?;
                Ok(json!({ "removed": name }))
            }
            (&Method::GET, ["conntrack"]) => {
                let mut inner = self.inner.lock().await;
                let entries = inner.datapath.flow_entries()?;
                let views = conntrack::views(&entries, conntrack::monotonic_now());
                Ok(serde_json::to_value(views).map_err(anyhow::Error::from)?)
            }
            (&Method::GET, ["stats"]) => {
                Ok(serde_json::to_value(self.stats().await?).map_err(anyhow::Error::from)?)
            }
            _ => Err(ApiError::not_found(anyhow!(
                "no API endpoint {} /{}",
                req.method,
                req.path.join("/")
            ))),
        }
    }

    async fn info(&self) -> Value {
        let inner = self.inner.lock().await;
        json!({
            "uplink": inner.uplink,
            "uplink_address": inner.uplink_addr,
            "snat_ports": format!("{}-{}", inner.snat_ports.start, inner.snat_ports.end),
            "networks": inner.state.networks.values().collect::<Vec<_>>(),
            "containers": inner.state.containers.len(),
        })
    }

    async fn stats(&self) -> Result<Vec<CounterView>, ApiError> {
        let inner = self.inner.lock().await;
        Ok(inner
            .datapath
            .counters()?
            .into_iter()
            .map(|(hook, reason, c)| CounterView {
                hook: format!("{hook:?}"),
                reason: reason.name().to_string(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect())
    }

    async fn run_container(&self, req: RunRequest) -> Result<Container, ApiError> {
        let mut inner = self.inner.lock().await;
        let id = random_id();
        let name = match req.name {
            Some(n) => {
                validate_name(&n).map_err(ApiError::bad_request)?;
                n
            }
            None => format!("netd_{}", &id[..8]),
        };
        if inner.state.containers.contains_key(&name) {
            return Err(ApiError::conflict(anyhow!(
                "Conflict. The container name \"{name}\" is already in use. You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        if req.cmd.is_empty() {
            return Err(ApiError::bad_request(anyhow!(
                "no command given: netd run [OPTIONS] -- CMD [ARG...]"
            )));
        }
        let network_name = if req.network == "bridge" {
            DEFAULT_NETWORK
        } else {
            req.network.as_str()
        };
        let network = inner
            .state
            .networks
            .get(network_name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(anyhow!("network {} not found", req.network)))?;
        let mut specs = req
            .publish
            .iter()
            .map(|s| s.parse::<PortSpec>())
            .collect::<Result<Vec<_>>>()
            .map_err(ApiError::bad_request)?;
        if req.publish_all {
            let extra = ports::publish_all(&specs, &req.expose).map_err(ApiError::bad_request)?;
            specs.extend(extra);
        }
        inner.refresh_node_addrs().await?;
        let bindings = inner.bind_ports(&specs).map_err(ApiError::conflict)?;
        let ip = inner.allocate_ip(&network).map_err(ApiError::conflict)?;

        let (holder, holder_child) = process::spawn_holder()?;
        reap(holder_child);
        let mut container = Container {
            id: id.clone(),
            name: name.clone(),
            network: network.name.clone(),
            ip,
            host_veth: endpoint::host_veth_name(&id),
            host_ifindex: 0,
            netns_holder: holder,
            cmd: req.cmd.clone(),
            process: None,
            status: Status::Running,
            ports: bindings,
            created: unix_now(),
        };
        match inner.wire_and_start(&mut container, &network).await {
            Ok(child) => {
                inner
                    .state
                    .containers
                    .insert(name.clone(), container.clone());
                inner.save()?;
                self.watch_child(name.clone(), child);
                info!(
                    "container {name}: started on {} with {ip}, ports [{}]",
                    network.name,
                    container
                        .ports
                        .iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Ok(container)
            }
            Err(e) => {
                inner.teardown(&container).await;
                Err(ApiError::from(e.context(format!("start container {name}"))))
            }
        }
    }

    async fn remove_container(&self, name: &str, force: bool) -> Result<(), ApiError> {
        let mut inner = self.inner.lock().await;
        let c = inner.container(name)?.clone();
        if c.status == Status::Running && !force {
            return Err(ApiError::conflict(anyhow!(
                "cannot remove container \"{name}\": container is running: stop the container before removing or force remove (netd rm -f {name})"
            )));
        }
        inner.teardown(&c).await;
        inner.state.containers.remove(name);
        inner.save()?;
        info!("container {name}: removed");
        Ok(())
    }

    /// Our own child: its exit status is known.
    fn watch_child(&self, name: String, mut child: Child) {
        let me = self.me.clone();
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| s.code());
            if let Some(daemon) = me.upgrade() {
                daemon.exited(&name, code).await;
            }
        });
    }

    /// A process adopted from a previous run is not our child: poll it.
    fn watch_adopted(&self, name: String, p: crate::state::ProcessId) {
        let me = self.me.clone();
        tokio::spawn(async move {
            while process::is_alive(p) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if let Some(daemon) = me.upgrade() {
                daemon.exited(&name, None).await;
            }
        });
    }

    async fn exited(&self, name: &str, code: Option<i32>) {
        let mut inner = self.inner.lock().await;
        if inner.state.containers.contains_key(name) {
            info!("container {name}: command exited with {code:?}");
            inner.set_status(name, Status::Exited { code });
            if let Err(e) = inner.save() {
                warn!("{e:#}");
            }
        }
    }

    async fn collect_garbage_once(&self) -> Result<usize> {
        let mut inner = self.inner.lock().await;
        inner.refresh_node_addrs().await?;
        let entries = inner.datapath.flow_entries()?;
        let expired = conntrack::expired(&entries, conntrack::monotonic_now());
        inner.datapath.remove_flows(&expired)?;
        Ok(expired.len())
    }
}

async fn collect_garbage(daemon: Weak<Daemon>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        match daemon.collect_garbage_once().await {
            Ok(0) => {}
            Ok(n) => log::debug!("conntrack: removed {n} expired entries"),
            Err(e) => warn!("conntrack garbage collection: {e:#}"),
        }
    }
}

impl Inner {
    fn save(&self) -> Result<()> {
        self.store.save(&self.state)
    }

    fn container(&self, name: &str) -> Result<&Container, ApiError> {
        self.state
            .containers
            .get(name)
            .ok_or_else(|| ApiError::not_found(anyhow!("No such container: {name}")))
    }

    fn set_status(&mut self, name: &str, status: Status) {
        if let Some(c) = self.state.containers.get_mut(name) {
            c.status = status;
        }
    }

    /// The node's addresses, where wildcard bindings answer. Refreshed on every change the
    /// daemon makes and on every garbage-collection tick, so addresses added by others
    /// are picked up within seconds.
    async fn refresh_node_addrs(&mut self) -> Result<()> {
        let addrs: Vec<Ipv4Addr> = self
            .netlink
            .ipv4_addresses()
            .await?
            .iter()
            .map(|(_, n)| n.addr())
            .collect();
        self.datapath.set_node_addrs(&addrs)
    }

    async fn ensure_default_network(&mut self) -> Result<()> {
        let network = match self.state.networks.get(DEFAULT_NETWORK) {
            Some(n) => n.clone(),
            None => {
                let mut in_use: Vec<Ipv4Net> = self
                    .netlink
                    .ipv4_routes()
                    .await?
                    .into_iter()
                    .map(|(dst, _)| dst)
                    .filter(|dst| dst.prefix_len() > 0)
                    .collect();
                in_use.extend(
                    self.netlink
                        .ipv4_addresses()
                        .await?
                        .into_iter()
                        .map(|(_, n)| n.trunc()),
                );
                in_use.extend(self.state.networks.values().map(|n| n.subnet));
                let subnet = ipam::choose_subnet(&in_use)?;
                let n = Network {
                    name: DEFAULT_NETWORK.into(),
                    bridge: DEFAULT_NETWORK.into(),
                    subnet,
                    gateway: ipam::default_gateway(&subnet),
                };
                info!(
                    "network {}: created with subnet {subnet}, gateway {}",
                    n.name, n.gateway
                );
                self.state.networks.insert(n.name.clone(), n.clone());
                n
            }
        };
        self.netlink
            .ensure_bridge(
                &network.bridge,
                network.gateway,
                network.subnet.prefix_len(),
            )
            .await?;
        self.datapath.set_masquerade(network.subnet, true)
    }

    fn bind_ports(&mut self, specs: &[PortSpec]) -> Result<Vec<PortBinding>> {
        let existing: Vec<PortBinding> = self
            .state
            .containers
            .values()
            .flat_map(|c| c.ports.iter().copied())
            .collect();
        let sockets = node_sockets();
        ports::bind(specs, &mut self.ephemeral, |candidate, chosen| {
            if existing
                .iter()
                .chain(chosen)
                .any(|b| b.conflicts_with(candidate))
            {
                return Some("port is already allocated".into());
            }
            sockets
                .iter()
                .find(|s| s.conflicts_with(candidate))
                .map(|s| {
                    format!(
                        "port is already in use by a process on the node ({}/{}:{})",
                        s.proto, s.addr, s.port
                    )
                })
        })
    }

    fn allocate_ip(&self, network: &Network) -> Result<Ipv4Addr> {
        let taken: BTreeSet<Ipv4Addr> = self
            .state
            .containers
            .values()
            .filter(|c| c.network == network.name)
            .map(|c| c.ip)
            .collect();
        ipam::allocate(&network.subnet, network.gateway, &taken)
    }

    /// Endpoint, published ports, command: each step is undone by `teardown`.
    async fn wire_and_start(&mut self, c: &mut Container, network: &Network) -> Result<Child> {
        let ns = netns::open(&c.netns_path())?;
        let bridge_index = self
            .netlink
            .link_index(&network.bridge)
            .await?
            .with_context(|| {
                format!(
                    "bridge {} of network {} is missing",
                    network.bridge, network.name
                )
            })?;
        let ep = endpoint::attach(
            &self.netlink,
            &ns,
            &EndpointSpec {
                id: &c.id,
                bridge_index,
                ip: c.ip,
                prefix: network.subnet.prefix_len(),
                gateway: network.gateway,
            },
        )
        .await
        .with_context(|| format!("attach endpoint to network {}", network.name))?;
        c.host_veth = ep.host_veth;
        c.host_ifindex = ep.host_ifindex;
        self.datapath
            .attach_endpoint(&c.host_veth, c.host_ifindex, c.ip, network.gateway)?;
        for b in &c.ports {
            self.datapath.publish(b, c.ip, c.host_ifindex)?;
        }
        let logs = self.state_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let (pid, child) = process::spawn_in(&ns, &c.cmd, &logs.join(format!("{}.log", c.name)))?;
        c.process = Some(pid);
        Ok(child)
    }

    /// Undo everything a container owns; tolerant of parts that are already gone.
    async fn teardown(&mut self, c: &Container) {
        if let Some(p) = c.process {
            process::signal(p, libc::SIGKILL);
        }
        process::signal(c.netns_holder, libc::SIGKILL);
        for b in &c.ports {
            if let Err(e) = self.datapath.unpublish(b) {
                warn!("container {}: {e:#}", c.name);
            }
        }
        let purge = self
            .datapath
            .flow_entries()
            .map(|entries| conntrack::involving(&entries, c.ip))
            .and_then(|keys| self.datapath.remove_flows(&keys));
        if let Err(e) = purge {
            warn!("container {}: purge flows: {e:#}", c.name);
        }
        if c.host_ifindex != 0
            && let Err(e) = self.datapath.detach_endpoint(&c.host_veth, c.host_ifindex)
        {
            warn!("container {}: {e:#}", c.name);
        }
        if let Err(e) = endpoint::detach(&self.netlink, &c.host_veth).await {
            warn!("container {}: {e:#}", c.name);
        }
    }
}

fn port_key(b: &PortBinding) -> PortKey {
    PortKey::new(b.proto.number(), b.host_ip, b.host_port)
}

/// Reap a child we never wait on otherwise (the holder), so it leaves no zombie.
fn reap(mut child: Child) {
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
}

/// Docker's rule for container names.
fn validate_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed (2 to 64 characters)"
        );
    }
    Ok(())
}

fn random_id() -> String {
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom into a valid buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let t = unix_now() ^ u64::from(std::process::id());
        bytes.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_dockers_rule() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("web_1.a-b").is_ok());
        assert!(validate_name("-web").is_err());
        assert!(validate_name("we b").is_err());
        assert!(validate_name("w").is_err());
    }

    #[test]
    fn ids_are_twelve_hex_digits() {
        let id = random_id();
        assert_eq!(id.len(), 12);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
