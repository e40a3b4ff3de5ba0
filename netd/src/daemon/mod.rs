//! The daemon: owns the data path, the node's bridges and the containers' endpoints, and
//! answers the API. One lock over its state: every change is made, persisted and logged
//! under it. The parts: `networks` (create, remove, connect), `containers` (run, create,
//! remove), `reconcile` (startup: adopt what a previous run left, heal what was broken
//! behind its back, remove what no longer has an owner).

mod cni;
mod containers;
mod dataplane;
mod docker;
mod events;
mod executor;
mod leftovers;
mod monitor;
mod networks;
mod node;
mod overlays;
mod reconcile;
mod repairs;
mod scrape;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Weak},
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use hyper::Method;
use log::{info, warn};
use serde_json::{Value, json};
use tokio::{process::Child, sync::Mutex};

use crate::unix_now;
use crate::{
    api::{self, ApiError, ApiRequest, CounterView},
    cluster::{self, ClusterConfig},
    conntrack,
    datapath::{self, Datapath, Nat46Collected, Nat46InUse},
    metrics::{self, Metrics, Task},
    netlink::Netlink,
    ports::{EphemeralPorts, PortRange},
    process,
    state::{State, Status, Store},
    sysctl,
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
    /// Confirmed flows one endpoint may hold (`--flow-quota`).
    pub flow_quota: u32,
    /// Where the host-local socket hooks attach; `None`: the cgroup2 root, if mounted.
    pub cgroup: Option<PathBuf>,
    /// How often expired flows are removed from the connection table.
    pub gc_interval: Duration,
    /// The group the API socket belongs to (mode 0660).
    pub socket_group: Option<u32>,
    /// systemd's readiness notification.
    pub notifier: crate::notify::Notifier,
    /// `--xdp`: XDP on the uplink.
    pub xdp: datapath::XdpRequest,
    /// `--fast-path`: redirects past the bridge and the node's forwarding.
    pub fast_path: bool,
    /// `--docker-plugin-socket`: where Docker's plugin API is served (root only).
    pub docker_plugin_socket: Option<PathBuf>,
    /// `--metrics-addr`: where Prometheus metrics are served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `--datapath-log`: what the kernel programs log.
    pub datapath_log: datapath::DatapathLog,
    /// `--cluster-store` and the rest: the cluster this node joins.
    pub cluster: Option<ClusterConfig>,
    /// `--ipv6`, `--fixed-cidr-v6`: the default network's IPv6.
    pub default_ipv6: crate::network_request::DefaultIpv6,
    /// `--nat46-pool`: the pool NAT46 maps IPv6 clients into, or off.
    pub nat46_pool: Nat46Pool,
}

/// Why a cluster's call is refused on a node of none.
const NOT_IN_A_CLUSTER: &str = "this node is not in a cluster: start netd daemon with --cluster-store etcd://HOST:2379 --cluster-advertise IFACE";

/// This node's membership of its cluster, when it has one.
type ClusterMember = Arc<cluster::Member<cluster::etcd::EtcdStore>>;

struct Inner {
    state: State,
    /// The network namespace of each container that has one of its own (holder or
    /// `--netns`), by container id: opened once and used for every operation, so a path
    /// re-pointed later never redirects one.
    sandboxes: HashMap<String, File>,
    /// The node's network namespace (the daemon's own).
    node_ns: File,
    store: Store,
    datapath: Datapath,
    netlink: Netlink,
    state_dir: PathBuf,
    uplink: String,
    uplink_addr: Ipv4Addr,
    snat_ports: PortRange,
    ephemeral: EphemeralPorts,
    xdp: datapath::XdpInUse,
    fast_path: bool,
    flow_quota: u32,
    /// When the flow table was last reported nearly full (the warning is rate-limited).
    warned_full: Option<std::time::Instant>,
    /// Where `netd-cni` leaves the `DEL`s the daemon could not take (`pending_del`).
    pending_dels: PathBuf,
    /// The cluster this node is in: its overlay networks are shown beside the node's own.
    cluster: Option<ClusterMember>,
    /// The daemon's events: the reconcile tells of its repairs there.
    events: Arc<crate::events::Events>,
    /// The connection table as the collector's last sweep found it, for the metrics.
    /// The collector's last count of each family's connection table (IPv4's, IPv6's).
    flow_census: Option<[scrape::FlowCensus; 2]>,
    /// What the default network's IPv6 is to be (`--ipv6`, `--fixed-cidr-v6`).
    default_ipv6: crate::network_request::DefaultIpv6,
    /// `netd monitor`'s events: flows purged with their containers end there.
    monitor: Arc<crate::monitor::Monitor>,
}

/// `--nat46-pool`: the IPv4 addresses NAT46 gives its IPv6 clients, one each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat46Pool {
    /// Not given: `NAT46_DEFAULT_POOL`, unless a network already uses part of it (NAT46
    /// is then off, with a warning).
    Default,
    /// `--nat46-pool CIDR`: this pool, or the daemon does not start.
    Given(ipnet::Ipv4Net),
    /// `--nat46-pool off`.
    Off,
}

/// NAT46's pool when `--nat46-pool` is not given: part of the benchmarking block
/// (RFC 2544's 198.18.0.0/15), which no LAN or internet host uses.
pub const NAT46_DEFAULT_POOL: ipnet::Ipv4Net =
    ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(198, 18, 0, 0), 16);

impl std::str::FromStr for Nat46Pool {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Nat46Pool::Off);
        }
        let pool: ipnet::Ipv4Net = s
            .parse()
            .map_err(|_| format!("{s:?} is neither an IPv4 CIDR (198.18.0.0/16) nor off"))?;
        if pool.prefix_len() > 30 {
            return Err(format!("{pool}: a pool needs at least 4 addresses (/30)"));
        }
        if pool.trunc() != pool {
            return Err(format!(
                "{pool}: host bits set (the pool would be {})",
                pool.trunc()
            ));
        }
        Ok(Nat46Pool::Given(pool))
    }
}

impl Nat46Pool {
    /// The pool NAT46 uses with these networks, `None` for off: a pool may not overlap a
    /// network (its addresses would be two things at once).
    pub fn resolve(
        self,
        in_use: impl IntoIterator<Item = (String, ipnet::Ipv4Net)>,
    ) -> Result<Option<ipnet::Ipv4Net>> {
        let pool = match self {
            Nat46Pool::Off => return Ok(None),
            Nat46Pool::Default => NAT46_DEFAULT_POOL,
            Nat46Pool::Given(pool) => pool,
        };
        let Some((what, _)) = in_use
            .into_iter()
            .find(|(_, subnet)| crate::ipam::overlaps(subnet, &pool))
        else {
            return Ok(Some(pool));
        };
        if self == Nat46Pool::Default {
            warn!("NAT46 off: its default pool {pool} overlaps {what} (give --nat46-pool CIDR)");
            return Ok(None);
        }
        anyhow::bail!("--nat46-pool {pool} overlaps {what}: choose another pool")
    }
}

/// The node's IPv4 addresses and routes (but the default route and loopback), each with
/// what it is.
async fn node_subnets(netlink: &Netlink) -> Result<Vec<(String, ipnet::Ipv4Net)>> {
    let mut used = Vec::new();
    for (_, net) in netlink.ipv4_addresses().await? {
        if !net.addr().is_loopback() {
            used.push((format!("the node's address {net}"), net.trunc()));
        }
    }
    for (dst, _) in netlink.ipv4_routes().await? {
        if dst.prefix_len() > 0 && !dst.addr().is_loopback() {
            used.push((format!("the node's route to {dst}"), dst));
        }
    }
    Ok(used)
}

pub struct Daemon {
    inner: Mutex<Inner>,
    me: Weak<Daemon>,
    cluster: Option<ClusterMember>,
    /// Container logs, rotated on the garbage-collection tick (outside the lock).
    logs_dir: PathBuf,
    metrics: Arc<Metrics>,
    /// What changed, for `netd events` (outside the lock: clients wait on it).
    events: Arc<crate::events::Events>,
    /// The data path's events, for `netd monitor` (outside the lock, likewise).
    monitor: Arc<crate::monitor::Monitor>,
}

pub async fn run(config: DaemonConfig) -> Result<()> {
    // Everything the daemon creates is its own: the state, container logs, the socket
    // (bound before its mode is set). Commands it starts get 022 back (`spawn_in`).
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o077) };
    match process::raise_nofile_limit() {
        Ok((before, after)) if before != after => {
            info!("open files limit raised from {before} to {after}")
        }
        Ok(_) => {}
        Err(e) => warn!("raise the open files limit: {e}"),
    }
    // One daemon per state directory and per socket: checked before anything is touched.
    let store = Store::open(&config.state_dir)?;
    let _lock = store.lock()?;
    let logs_dir = store.private_dir("logs")?;
    let listener = api::bind(&config.socket, config.socket_group).await?;
    // Bound before anything slow: Docker waits 15 s for a plugin socket that is missing,
    // and gives up on containers that needed it.
    let plugin_listener = match &config.docker_plugin_socket {
        Some(path) => Some(api::bind(path, None).await?),
        None => None,
    };
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-addr {addr}: cannot listen there"))?,
        ),
        None => None,
    };
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
    // Absolute, so that the namespace holders it names are recognised by the next start.
    let state_dir = std::fs::canonicalize(&config.state_dir)?;
    let state = store.load()?;
    // NAT46's pool may overlap no network, nor the node's own addresses and routes (its
    // LAN's hosts would be taken for NAT46 clients): settled before anything is attached.
    let in_use = state
        .networks
        .values()
        .filter_map(|n| {
            let subnet = n.subnet?;
            Some((format!("network {}'s subnet {subnet}", n.name), subnet))
        })
        .chain(node_subnets(&netlink).await?);
    let nat46_pool = config.nat46_pool.resolve(in_use)?;
    let mut datapath = Datapath::load_logging(
        &config.bpffs_dir,
        config.flow_table_size,
        config.datapath_log,
    )?;
    let monitor = Arc::new(crate::monitor::Monitor::default());
    tokio::spawn(crate::monitor::read_events(
        monitor.clone(),
        datapath.take_monitor_events()?,
    ));
    if let Some(logger) = datapath.take_logger(config.datapath_log)? {
        info!("the kernel programs log at {:?}", config.datapath_log);
        tokio::spawn(read_program_logs(logger));
    }
    datapath.set_node_config(&datapath::NodeSettings {
        snat_addr: uplink_addr,
        snat_ports: (config.snat_ports.start, config.snat_ports.end),
        netns_cookie: datapath::netns_cookie()?,
        uplink_ifindex: uplink_index,
        uplink_mac: netlink.link_mac(&uplink).await?.unwrap_or_default(),
        fast_path: config.fast_path,
        flow_quota: config.flow_quota,
    })?;
    // Before the programs attach: a restart's new programs translate NAT46's flows from
    // their first packet (its settings are not pinned).
    datapath.set_nat46_uplink_mtu(netlink.link_mtu(&uplink).await?.unwrap_or(0))?;
    datapath
        .set_nat46_pool(nat46_pool)
        .context("--nat46-pool")?;
    datapath.attach(&uplink)?;
    let xdp = datapath.attach_xdp(&uplink, config.xdp)?;
    info!(
        "fast path {}, XDP {}",
        if config.fast_path { "on" } else { "off" },
        xdp.name()
    );
    match config.cgroup.clone().or_else(datapath::cgroup2_mount) {
        Some(cgroup) => datapath.attach_host_local(&cgroup)?,
        None => warn!(
            "no cgroup2 mount found: processes of the node cannot reach published ports through 127.0.0.1 or the node's addresses (give --cgroup)"
        ),
    }
    sysctl::write("net/ipv4/ip_forward", "1")?;
    let node_ns = crate::netns::open_own().context("open the node's network namespace")?;
    let cluster = match &config.cluster {
        Some(c) => Some(cluster_member(c, &netlink, &state_dir).await?),
        None => None,
    };

    let events = Arc::new(crate::events::Events::default());
    let daemon = Arc::new_cyclic(|me| Daemon {
        inner: Mutex::new(Inner {
            state,
            sandboxes: HashMap::new(),
            node_ns,
            store,
            datapath,
            netlink,
            state_dir,
            uplink: uplink.clone(),
            uplink_addr,
            snat_ports: config.snat_ports,
            ephemeral: EphemeralPorts::from_node(),
            xdp,
            fast_path: config.fast_path,
            flow_quota: config.flow_quota,
            warned_full: None,
            pending_dels: crate::pending_del::dir(&config.socket),
            cluster: cluster.clone(),
            events: events.clone(),
            flow_census: None,
            monitor: monitor.clone(),
            default_ipv6: config.default_ipv6,
        }),
        me: me.clone(),
        cluster: cluster.clone(),
        logs_dir,
        metrics: Metrics::new(),
        events,
        monitor,
    });
    // Served from here on, while the start-up reconcile runs: the handshake answers at
    // once, the calls that change the state wait for the reconcile to finish.
    let (stop_plugin, plugin_stopping) = tokio::sync::watch::channel(false);
    let plugin = plugin_listener.map(|listener| {
        let path = config.docker_plugin_socket.clone().expect("bound above");
        let handler = {
            let daemon = daemon.clone();
            Arc::new(move |req: ApiRequest| {
                let daemon = daemon.clone();
                async move { daemon.plugin_route(req).await }
            })
        };
        let mut stopping = plugin_stopping;
        info!("Docker plugin API on {}", path.display());
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stopping.wait_for(|s| *s).await;
            };
            api::serve(listener, &path, "/", handler, stopped).await
        })
    });
    daemon.start().await?;
    {
        let mut inner = daemon.inner.lock().await;
        match &cluster {
            Some(member) => {
                set_up_vxlan(&inner.netlink, member).await?;
                inner
                    .datapath
                    .attach_overlay(cluster::VXLAN_DEVICE)
                    .context("attach the overlay program")?;
                // Written under the lease when the node registers.
                member.adopt_endpoints(&inner.overlay_endpoints());
            }
            None => {
                remove_vxlan(&inner.netlink).await?;
                inner.datapath.detach_overlay()?;
            }
        }
    }
    if let Some(member) = cluster {
        cluster::membership::join(&member).await?;
        let follower = member.clone();
        tokio::spawn(async move { follower.follow_networks().await });
        let follower = member.clone();
        tokio::spawn(async move { follower.follow_endpoints().await });
        tokio::spawn(overlays::keep_remote_table(
            member.clone(),
            config.bpffs_dir.clone(),
        ));
        tokio::spawn(cluster::membership::keep_registered(member));
    }
    info!(
        "netd ready: uplink {uplink} ({uplink_addr}), API on {}",
        config.socket.display()
    );
    daemon.events.emit(
        "daemon",
        "start",
        env!("CARGO_PKG_VERSION"),
        "netd",
        &[("uplink", uplink.clone())],
    );
    let status = format!("STATUS=serving uplink {uplink} ({uplink_addr})");
    if let Err(e) = config.notifier.send(&format!("READY=1\n{status}")) {
        warn!("{e:#}");
    }

    tokio::spawn(collect_garbage(Arc::downgrade(&daemon), config.gc_interval));
    tokio::spawn(monitor::expire_sessions(Arc::downgrade(&daemon)));
    tokio::spawn(follow_node_addresses(
        Arc::downgrade(&daemon),
        Netlink::watch_addresses()?,
    ));
    if let Some(listener) = metrics_listener {
        let weak = Arc::downgrade(&daemon);
        info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(metrics::serve(listener, move |openmetrics| {
            let daemon = weak.clone();
            async move {
                let daemon = daemon.upgrade().context("the daemon is stopping")?;
                let snapshot = daemon.metrics_snapshot().await?;
                Ok(daemon.metrics.render(snapshot, openmetrics))
            }
        }));
    }
    let handler = {
        let daemon = daemon.clone();
        Arc::new(move |req: ApiRequest| {
            let daemon = daemon.clone();
            async move {
                let route = metrics::route_pattern(req.method.as_str(), &req.path);
                let started = std::time::Instant::now();
                let result = daemon.route(req).await;
                let status = match &result {
                    Ok(_) => 200,
                    Err(e) => e.status.as_u16(),
                };
                daemon
                    .metrics
                    .api_request(&route, status, started.elapsed());
                result
            }
        })
    };
    // Stopping ends the clients' waits for events first: the drain waits for requests.
    let stopping = {
        let (events, monitor) = (daemon.events.clone(), daemon.monitor.clone());
        async move {
            crate::readiness::termination_signal().await;
            events.close();
            monitor.close();
        }
    };
    let drain = api::serve(listener, &config.socket, api::API_PREFIX, handler, stopping).await?;
    let _ = config.notifier.send("STOPPING=1");
    let _ = stop_plugin.send(true);
    let plugin_drain = match plugin {
        Some(task) => Some(task.await.context("the Docker plugin API's task")??),
        None => None,
    };
    // Stop accepting, let what was started finish, then exit: a change is never cut
    // half-way by a stop.
    let pending = drain.requests_in_flight();
    if pending > 0 {
        info!(
            "netd stopping: waiting for {pending} request(s) in flight to finish (signal again to stop at once)"
        );
    }
    let finished = async {
        drain.finished().await;
        if let Some(d) = plugin_drain {
            d.finished().await;
        }
    };
    tokio::select! {
        () = finished => {}
        () = crate::readiness::termination_signal() => warn!(
            "netd stopping before the requests in flight finished: the next start removes what they left half-made"
        ),
    }
    // Background work (garbage collection, exit bookkeeping) runs under the lock: let the
    // piece of it under way end too.
    drop(daemon.inner.lock().await);
    info!(
        "netd stopping; the data path stays attached and containers keep running, adopted by the next start"
    );
    Ok(())
}

/// The node's VXLAN device for the overlays, its MTU the underlay's less VXLAN's overhead
/// (the underlay: the link with the advertised address).
async fn set_up_vxlan(netlink: &Netlink, member: &ClusterMember) -> Result<()> {
    let underlay_index = netlink
        .ipv4_addresses()
        .await?
        .into_iter()
        .find(|(_, net)| net.addr() == member.address())
        .map(|(i, _)| i)
        .with_context(|| {
            format!(
                "--cluster-advertise {}: the address is gone",
                member.address()
            )
        })?;
    let underlay = netlink.link_name(underlay_index).await?;
    let underlay_mtu = netlink
        .link_mtu(&underlay)
        .await?
        .with_context(|| format!("the MTU of {underlay}"))?;
    let mtu = underlay_mtu.saturating_sub(cluster::VXLAN_OVERHEAD);
    netlink
        .ensure_vxlan(cluster::VXLAN_DEVICE, cluster::VXLAN_PORT, mtu)
        .await?;
    member.set_overlay_mtu(mtu);
    info!(
        "cluster: VXLAN device {} on port {}, overlay MTU {mtu} ({underlay}'s {underlay_mtu} less {})",
        cluster::VXLAN_DEVICE,
        cluster::VXLAN_PORT,
        cluster::VXLAN_OVERHEAD
    );
    Ok(())
}

/// A node out of a cluster keeps no VXLAN device from when it was in one.
async fn remove_vxlan(netlink: &Netlink) -> Result<()> {
    if let Some(index) = netlink.link_index(cluster::VXLAN_DEVICE).await? {
        netlink.delete_link(index).await?;
        info!(
            "cluster: VXLAN device {} removed (this node is not in a cluster any more)",
            cluster::VXLAN_DEVICE
        );
    }
    Ok(())
}

/// This node's membership: the store's client (nothing dialled yet) and the advertised
/// address, which must be one of the node's.
async fn cluster_member(
    c: &ClusterConfig,
    netlink: &Netlink,
    state_dir: &std::path::Path,
) -> Result<ClusterMember> {
    let addresses = netlink.ipv4_addresses().await?;
    let address = match &c.advertise {
        cluster::config::Advertise::Address(ip) => {
            if !addresses.iter().any(|(_, net)| net.addr() == *ip) {
                anyhow::bail!(
                    "--cluster-advertise {ip}: not an address of this node (other nodes would send its traffic elsewhere)"
                );
            }
            *ip
        }
        cluster::config::Advertise::Interface(name) => {
            let index = netlink.link_index(name).await?.with_context(|| {
                format!("--cluster-advertise {name}: no such interface in this network namespace")
            })?;
            addresses
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, net)| net.addr())
                .with_context(|| {
                    format!("--cluster-advertise {name}: the interface has no IPv4 address")
                })?
        }
    };
    let store = cluster::etcd::EtcdStore::new(c).await?;
    Ok(Arc::new(cluster::Member::new(
        store,
        &c.node_name,
        &c.prefix,
        address,
        c.lease_ttl,
        state_dir.join("cluster-lease"),
    )))
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

impl Daemon {
    fn member(&self) -> Result<&ClusterMember, ApiError> {
        self.cluster
            .as_ref()
            .ok_or_else(|| ApiError::bad_request(anyhow!("{NOT_IN_A_CLUSTER}")))
    }

    /// Whether `name` is an overlay network of the cluster (and no network of this node's).
    async fn is_overlay(&self, name: &str) -> bool {
        let Some(m) = &self.cluster else { return false };
        m.overlay(name).is_some()
            && self
                .inner
                .lock()
                .await
                .state
                .networks
                .get(name)
                .is_none_or(|n| n.overlay.is_some())
    }

    /// `netd network create -d overlay`: checked here, committed to the store for every
    /// node; what this node's own networks and routes use is kept out of its subnet.
    async fn create_overlay(
        &self,
        req: &crate::network_request::NetworkRequest,
    ) -> Result<api::NetworkView, ApiError> {
        let member = self.cluster.as_ref().ok_or_else(|| {
            ApiError::bad_request(anyhow!(
                "invalid --driver overlay: overlay networks span the nodes of a cluster, and {NOT_IN_A_CLUSTER}"
            ))
        })?;
        let overlay = cluster::overlay::request(req).map_err(ApiError::bad_request)?;
        let local = {
            let inner = self.inner.lock().await;
            if inner.state.networks.contains_key(&req.name) {
                return Err(ApiError::conflict(anyhow!(
                    "network with name {} already exists",
                    req.name
                )));
            }
            // The overlays' own subnets are the store's to check, not this node's.
            fn not_overlays<N>(used: Vec<(N, String)>) -> Vec<(N, String)> {
                let overlay = |what: &String| what.starts_with(networks::OVERLAY_USE);
                used.into_iter()
                    .filter(|(_, what)| !overlay(what))
                    .collect()
            }
            cluster::overlay::Local {
                v4: not_overlays(inner.subnets_in_use().await?),
                v6: not_overlays(inner.subnets6_in_use().await?),
            }
        };
        let n = member
            .create_overlay(&overlay, &local, &random_id())
            .await?;
        Ok(api::NetworkView::overlay(&n))
    }

    /// Reconcile with what the state says, then persist the result.
    async fn start(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let started = std::time::Instant::now();
        let reconciled = inner.reconcile().await;
        self.metrics
            .ran(Task::Reconcile, reconciled.is_ok(), started.elapsed());
        let adopted = reconciled?;
        inner.route_ipv6_if_needed();
        for (name, p) in adopted {
            self.watch_adopted(name, p);
        }
        inner.save()
    }

    async fn route(&self, req: ApiRequest) -> Result<Value, ApiError> {
        let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
        // What may block is done before the lock is taken: opening a client's --netns.
        let mut run = match (&req.method, path.as_slice()) {
            (&Method::POST, ["containers"]) => {
                let run: api::RunRequest = req.json()?;
                let netns = match &run.netns {
                    Some(p) => Some(containers::open_client_netns(p, "--netns", None).await?),
                    None => None,
                };
                Some((run, netns))
            }
            _ => None,
        };
        let mut cni_ns = match (&req.method, path.as_slice()) {
            (&Method::POST, ["cni", "attachments"]) => {
                let add: api::CniAttachRequest = req.json()?;
                cni::check_key(&add.container_id, &add.ifname)?;
                // Known by descriptor before anything slow: a runtime that gives up on
                // the ADD meanwhile (kills the plugin) gets nothing committed.
                let caller = cni::Caller::of(req.caller_pid)?;
                let ns = containers::open_client_netns(&add.netns, "CNI_NETNS", Some(caller.pid))
                    .await?;
                Some((add, None, ns, Some(caller)))
            }
            (&Method::POST, ["cni", "check"]) => {
                let check: api::CniCheckRequest = req.json()?;
                cni::check_key(&check.attach.container_id, &check.attach.ifname)?;
                let caller = cni::Caller::of(req.caller_pid)?;
                let ns = containers::open_client_netns(
                    &check.attach.netns,
                    "CNI_NETNS",
                    Some(caller.pid),
                )
                .await?;
                Some((check.attach.clone(), Some(check), ns, None))
            }
            _ => None,
        };
        // The cluster's calls wait on the store, not on the node: outside the lock.
        let mut network_create = None;
        match (&req.method, path.as_slice()) {
            (&Method::POST, ["networks"]) => {
                let create: crate::network_request::NetworkRequest = req.json()?;
                if create.driver.as_deref() == Some("overlay") {
                    let view = self.create_overlay(&create).await?;
                    self.announce_network("create", &view);
                    return to_json(view);
                }
                network_create = Some(create);
            }
            (&Method::DELETE, ["networks", name]) if self.is_overlay(name).await => {
                let before = self.inner.lock().await.network_view(name);
                self.member()?.remove_overlay(name).await?;
                if let Ok(view) = before {
                    self.announce_network("remove", &view);
                }
                self.inner.lock().await.settle_overlays().await;
                return Ok(json!({ "removed": name, "warnings": [] }));
            }
            (&Method::GET, ["events"]) => {
                let number = |name: &str| -> Result<u64, ApiError> {
                    req.param(name).map_or(Ok(0), |v| {
                        v.parse().map_err(|_| {
                            ApiError::bad_request(anyhow!("invalid {name}={v}: expected a number"))
                        })
                    })
                };
                let (after, wait) = (number("after")?, number("wait")?);
                let since = req
                    .param("since")
                    .map(|v| v.parse::<u128>())
                    .transpose()
                    .map_err(|_| {
                        ApiError::bad_request(anyhow!("invalid since: expected Unix nanoseconds"))
                    })?
                    .unwrap_or(0);
                let page = self
                    .events
                    .wait_after(after, since, Duration::from_secs(wait))
                    .await;
                return to_json(page);
            }
            (&Method::GET, ["monitor"]) => return self.monitor_page(&req).await,
            (&Method::DELETE, ["monitor"]) => return self.monitor_detach(&req).await,
            (&Method::GET, ["nodes"]) => {
                let nodes = self.member()?.nodes().await;
                return to_json(nodes.map_err(ApiError::unavailable)?);
            }
            (&Method::DELETE, ["nodes", name]) => {
                self.member()?.remove(name).await?;
                return Ok(json!({ "removed": name }));
            }
            _ => {}
        }
        let mut inner = self.inner.lock().await;
        let value = match (&req.method, path.as_slice()) {
            (&Method::GET, ["ping"]) => json!({ "version": env!("CARGO_PKG_VERSION") }),
            (&Method::GET, ["info"]) => {
                let mut info = inner.info()?;
                info["cluster"] = match &self.cluster {
                    Some(m) => to_json(m.view())?,
                    None => Value::Null,
                };
                let counts = inner.datapath.monitor_counts()?;
                info["monitor"] = json!({
                    "sessions": self.monitor.sessions(),
                    "types": crate::monitor::type_names(self.monitor.wanted()),
                    "events_sent": counts.sent,
                    "events_lost": counts.lost,
                });
                info
            }
            (&Method::GET, ["containers"]) => to_json(inner.container_views())?,
            (&Method::POST, ["containers"]) => {
                let (run, netns) = run.take().expect("parsed above");
                let ran = inner.run_container(run, netns).await;
                // An overlay set up for it, an address recorded: not kept for nothing.
                inner.settle_overlays().await;
                let (view, child) = ran?;
                if let (Some(child), Some(_)) = (child, view.process) {
                    self.watch_child(view.name.clone(), child);
                }
                self.announce_container(&view, |n| inner.network_id(n));
                to_json(view)?
            }
            (&Method::GET, ["containers", name]) => to_json(inner.container_view(name)?)?,
            (&Method::DELETE, ["containers", name]) => {
                let before = inner.container_view(name).map(|view| {
                    let ids: BTreeMap<String, String> = view
                        .endpoints
                        .iter()
                        .map(|e| (e.network.clone(), inner.network_id(&e.network)))
                        .collect();
                    (view, ids)
                });
                let removed = inner.remove_container(name, req.flag("force")).await;
                inner.settle_overlays().await;
                let warnings = removed?;
                if let Ok((view, ids)) = &before {
                    self.announce_removal(view, |n| ids.get(n).cloned().unwrap_or_default());
                }
                json!({ "removed": name, "warnings": warnings })
            }
            (&Method::GET, ["networks"]) => to_json(inner.network_views())?,
            (&Method::POST, ["networks"]) => {
                let create = network_create.take().expect("parsed above");
                let view = inner.create_network(create).await?;
                self.announce_network("create", &view);
                to_json(view)?
            }
            (&Method::GET, ["networks", name]) => to_json(inner.network_view(name)?)?,
            (&Method::DELETE, ["networks", name]) => {
                let before = inner.network_view(name);
                let warnings = inner.remove_network(name).await?;
                if let Ok(view) = &before {
                    self.announce_network("remove", view);
                }
                json!({ "removed": name, "warnings": warnings })
            }
            (&Method::POST, ["networks", name, "connect"]) => {
                let connected = inner.connect(name, req.json()?).await;
                inner.settle_overlays().await;
                let view = connected?;
                self.announce_connection("connect", &inner.network_id(name), name, &view);
                to_json(view)?
            }
            (&Method::POST, ["networks", name, "disconnect"]) => {
                let id = inner.network_id(name);
                let disconnected = inner.disconnect(name, req.json()?, req.flag("force")).await;
                inner.settle_overlays().await;
                let (view, warnings) = disconnected?;
                self.announce_connection("disconnect", &id, name, &view);
                let mut value = to_json(view)?;
                value["warnings"] = json!(warnings);
                value
            }
            (&Method::GET, ["conntrack"]) => {
                let now = conntrack::monotonic_now();
                let mut views = conntrack::views(&inner.datapath.flow_entries()?, now);
                views.extend(conntrack::views(&inner.datapath.flow_entries6()?, now));
                to_json(views)?
            }
            (&Method::GET, ["stats"]) => to_json(inner.stats()?)?,
            (&Method::POST, ["cni", "attachments"]) => {
                let (add, _, ns, caller) = cni_ns.take().expect("parsed above");
                let added = inner.cni_add(add, ns, caller.expect("an ADD's")).await;
                inner.settle_overlays().await;
                let added = added?;
                if let Ok(view) = inner.container_view(&added.name) {
                    self.announce_container(&view, |n| inner.network_id(n));
                }
                to_json(added)?
            }
            (&Method::POST, ["cni", "check"]) => {
                let (_, check, ns, _) = cni_ns.take().expect("parsed above");
                inner.cni_check(check.expect("a check"), ns).await?;
                json!({})
            }
            (&Method::DELETE, ["cni", "attachments", network, container_id, ifname]) => {
                cni::check_key(container_id, ifname)?;
                let before = inner
                    .cni_record(network, container_id, ifname)
                    .and_then(|name| inner.container_view(&name).ok())
                    .map(|view| (view, inner.network_id(network)));
                let deleted = inner.cni_del(network, container_id, ifname).await;
                inner.settle_overlays().await;
                let (removed, warnings) = deleted?;
                if let (true, Some((view, id))) = (removed, &before) {
                    self.announce_removal(view, |_| id.clone());
                }
                json!({ "removed": removed, "warnings": warnings })
            }
            (&Method::POST, ["cni", "gc"]) => {
                let collected = inner.cni_gc(req.json()?).await;
                inner.settle_overlays().await;
                let (removed, warnings) = collected?;
                json!({ "removed": removed, "warnings": warnings })
            }
            _ => {
                return Err(ApiError::not_found(anyhow!(
                    "no API endpoint {} /{}",
                    req.method,
                    req.path.join("/")
                )));
            }
        };
        Ok(value)
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
        if let Some(c) = inner.state.containers.get_mut(name)
            && c.status == Status::Running
        {
            info!("container {name}: command exited with {code:?}");
            c.status = Status::Exited { code };
            self.announce_exit(&c.id, name, code);
            if let Err(e) = inner.save() {
                warn!("{e:#}");
            }
        }
    }

    /// Remove expired flows (both families' tables), recount what each endpoint holds
    /// against its quota, and say so when the table fills up. Returns how many halves
    /// were removed.
    async fn collect_garbage_once(&self) -> Result<usize> {
        let mut inner = self.inner.lock().await;
        inner.refresh_node_addrs().await?;
        let entries = inner.datapath.flow_entries()?;
        let expired = sweep_expired(&mut inner.datapath, &entries)?;
        self.report_expired(&mut inner.datapath, &entries, &expired);
        let kept = expired.kept(entries);
        inner.datapath.set_flow_owners(&conntrack::owners(&kept))?;
        let entries6 = inner.datapath.flow_entries6()?;
        let nat46_in_use = Nat46InUse::of(&entries6);
        let expired6 = sweep_expired(&mut inner.datapath, &entries6)?;
        self.report_expired(&mut inner.datapath, &entries6, &expired6);
        let kept6 = expired6.kept(entries6);
        inner.datapath.set_flow_owners(&conntrack::owners(&kept6))?;
        let nat46 = inner
            .datapath
            .collect_nat46_clients(&nat46_in_use, conntrack::monotonic_now())?;
        if nat46 != Nat46Collected::default() {
            log::debug!("NAT46's pool: {nat46:?}");
        }
        inner.flow_census = Some([
            scrape::FlowCensus::of(&kept),
            scrape::FlowCensus::of(&kept6),
        ]);
        inner.warn_if_flow_table_full()?;
        Ok(expired.removed + expired6.removed)
    }

    /// The ends of the flows a sweep removed, for `netd monitor` (when flows are
    /// watched): a flow whose other half a packet brought back is not over.
    fn report_expired<A: conntrack::FlowAddr + Default>(
        &self,
        datapath: &mut Datapath,
        entries: &conntrack::Snapshot<A>,
        expired: &Swept<A>,
    ) where
        netd_common::flow::FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
        netd_common::flow::FlowEntryOf<A>: aya::Pod,
    {
        if self.monitor.wanted() & netd_common::monitor::MONITOR_FLOW == 0 {
            return;
        }
        let keys: Vec<_> = expired.keys.iter().map(|(_, k)| *k).collect();
        let ended = conntrack::ended(entries, &keys)
            .into_iter()
            .filter(|(key, _, _)| !datapath.has_flow(key).unwrap_or(true))
            .collect::<Vec<_>>();
        let clock = crate::monitor::Clock::now();
        self.monitor.record(crate::monitor::flow_ends(
            &ended,
            &clock,
            netd_common::monitor::ENDED_TIMEOUT,
        ));
    }
}

/// What a sweep of one family's table did: the halves it found expired (with their map)
/// and how many it removed.
struct Swept<A> {
    keys: Vec<(conntrack::FlowTable, netd_common::flow::FlowKeyOf<A>)>,
    removed: usize,
}

impl<A: Copy + Eq + std::hash::Hash> Swept<A> {
    /// The snapshot less what the sweep was asked to remove (a flow it spared is counted
    /// again at the next sweep).
    fn kept(&self, entries: conntrack::Snapshot<A>) -> conntrack::Snapshot<A> {
        let gone: std::collections::HashSet<_> = self.keys.iter().map(|(_, k)| *k).collect();
        entries
            .into_iter()
            .filter(|(k, _, _)| !gone.contains(k))
            .collect()
    }
}

/// Remove the halves of `entries` (a snapshot of one family's table) that expired, each
/// judged again in the kernel (`Datapath::sweep_flows`).
fn sweep_expired<A: conntrack::FlowAddr>(
    datapath: &mut Datapath,
    entries: &conntrack::Snapshot<A>,
) -> Result<Swept<A>>
where
    netd_common::flow::FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
    netd_common::flow::FlowEntryOf<A>: aya::Pod,
{
    let keys = conntrack::expired(entries, conntrack::monotonic_now());
    let now = conntrack::monotonic_now();
    let mut removed = 0;
    for table in conntrack::FlowTable::BOTH {
        let batch: Vec<_> = keys
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, k)| *k)
            .collect();
        removed += datapath.sweep_flows(table, &batch, now)?;
    }
    Ok(Swept { keys, removed })
}

fn to_json(v: impl serde::Serialize) -> Result<Value, ApiError> {
    Ok(serde_json::to_value(v).map_err(anyhow::Error::from)?)
}

/// Keep the data path's node addresses (where wildcard bindings answer) in step with the
/// node's, as they change: an address added by anyone answers at once.
async fn follow_node_addresses(
    daemon: Weak<Daemon>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    while changes.recv().await.is_some() {
        // Coalesce a burst of changes into one refresh.
        while changes.try_recv().is_ok() {}
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        let mut inner = daemon.inner.lock().await;
        match inner.refresh_node_addrs().await {
            Ok(()) => log::debug!("node addresses changed: data path updated"),
            Err(e) => warn!("node addresses changed: {e:#}"),
        }
    }
    warn!("address change notifications stopped; node addresses now refresh every GC sweep");
}

/// Pass the kernel programs' log records to the daemon's log as they come.
async fn read_program_logs<L: log::Log + Send + 'static>(logger: aya_log::EbpfLogger<L>) {
    crate::readiness::drain_when_readable(logger, "the kernel programs' logs", |l| l.flush()).await
}

async fn collect_garbage(daemon: Weak<Daemon>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        let started = std::time::Instant::now();
        let collected = daemon.collect_garbage_once().await;
        daemon
            .metrics
            .ran(Task::Collector, collected.is_ok(), started.elapsed());
        match collected {
            Ok(0) => {}
            Ok(n) => log::debug!("conntrack: removed {n} expired entries"),
            Err(e) => warn!("conntrack garbage collection: {e:#}"),
        }
        // File I/O of a size the containers decide: on a blocking thread, not under the
        // lock.
        let dir = daemon.logs_dir.clone();
        let rotate =
            tokio::task::spawn_blocking(move || process::rotate_logs(&dir, process::LOG_MAX_BYTES));
        if let Ok(rotated) = rotate.await {
            for log in rotated {
                log::debug!("rotated container log {log}");
            }
        }
    }
}

impl Inner {
    fn save(&self) -> Result<()> {
        self.store.save(&self.state)
    }

    fn info(&self) -> Result<Value> {
        let counts = self.datapath.map_entry_counts()?;
        let maps: serde_json::Map<String, Value> = counts
            .iter()
            .map(|(name, n)| (name.to_string(), json!(n)))
            .collect();
        Ok(json!({
            "uplink": self.uplink,
            "uplink_address": self.uplink_addr,
            "snat_ports": format!("{}-{}", self.snat_ports.start, self.snat_ports.end),
            "fast_path": if self.fast_path { "on" } else { "off" },
            "xdp": self.xdp.name(),
            // Whether XDP leaves TC its note (the kernel lets XDP programs write frame
            // metadata); without it, TC finds what XDP translated by its flow.
            "xdp_note": self.xdp.name() != "off" && crate::datapath::kernel::xdp_metadata_supported(),
            "networks": self.state.networks.keys().collect::<Vec<_>>(),
            "containers": self.state.containers.len(),
            "flow_table": self.flow_table_fill(&counts),
            "map_entries": maps,
        }))
    }

    /// The connection table's fill level: entries of each map against its capacity.
    fn flow_table_fill(&self, counts: &[(&str, usize)]) -> Value {
        let count = |name| {
            counts
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, n)| *n)
        };
        let capacity = self.datapath.flow_capacity();
        let percent = |n: usize| (n as f64 * 1000.0 / f64::from(capacity.max(1))).round() / 10.0;
        let (confirmed, unconfirmed) = (count("flows"), count("unconfirmed_flows"));
        json!({
            "capacity": capacity,
            "confirmed": confirmed,
            "confirmed_percent": percent(confirmed),
            "unconfirmed": unconfirmed,
            "unconfirmed_percent": percent(unconfirmed),
            "flow_quota": self.flow_quota,
        })
    }

    /// Warn (at most once a minute) while the confirmed flows fill 90 % of their table:
    /// new flows then stay unconfirmed, evicted first under pressure.
    fn warn_if_flow_table_full(&mut self) -> Result<()> {
        let counts = self.datapath.map_entry_counts()?;
        let fill = self.flow_table_fill(&counts);
        let percent = fill["confirmed_percent"].as_f64().unwrap_or(0.0);
        let recently = self
            .warned_full
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
        if percent >= 90.0 && !recently {
            warn!(
                "the connection table is {percent}% full ({} of {} entries confirmed): new flows stay unconfirmed and are evicted first; raise --flow-table-size",
                fill["confirmed"], fill["capacity"]
            );
            self.warned_full = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// The ID of network `name` (its name if it is gone), for events.
    fn network_id(&self, name: &str) -> String {
        self.network_view(name)
            .map_or_else(|_| name.to_string(), |n| n.id)
    }

    fn stats(&self) -> Result<Vec<CounterView>> {
        Ok(self
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

    /// The node's addresses, where wildcard bindings answer. Refreshed when the kernel
    /// reports an address change, on every change the daemon makes, and on every
    /// garbage-collection sweep (in case a notification was lost).
    async fn refresh_node_addrs(&mut self) -> Result<()> {
        let addrs: Vec<Ipv4Addr> = self
            .netlink
            .ipv4_addresses()
            .await?
            .iter()
            .map(|(_, n)| n.addr())
            .collect();
        self.datapath.set_node_addrs(&addrs)?;
        // Link-local addresses are no node address a container may be sent to (its
        // bridge's is its gateway's, in its own entry), nor is loopback: only the ones
        // that are routed. (Link-local ones also come and go with duplicate address
        // detection, which would make the table's contents depend on timing.)
        let routed = |a: &std::net::Ipv6Addr| {
            !a.is_loopback() && !a.is_unicast_link_local() && !a.is_multicast()
        };
        let all6 = self.netlink.ipv6_addresses().await?;
        let addrs6: Vec<std::net::Ipv6Addr> =
            all6.iter().map(|(_, n)| n.addr()).filter(routed).collect();
        self.datapath.set_node_addrs6(&addrs6)?;
        // Masqueraded IPv6 leaves with the uplink's first global address (a ULA only when
        // it has none), as the IPv4 with its address; followed as it changes (an address
        // from SLAAC comes late).
        let uplink = self.netlink.link_index(&self.uplink).await?;
        let on_uplink: Vec<std::net::Ipv6Addr> = all6
            .iter()
            .filter(|(i, _)| Some(*i) == uplink)
            .map(|(_, n)| n.addr())
            .filter(routed)
            .collect();
        let snat6 = on_uplink
            .iter()
            .find(|a| !a.is_unique_local())
            .or(on_uplink.first())
            .copied();
        self.datapath.set_snat_addr6(snat6)
    }
}

/// Docker's rule for container names: like a network's, and at least two characters.
fn validate_container_name(name: &str) -> Result<()> {
    crate::network_request::validate_name("container", name)?;
    if name.len() < 2 {
        anyhow::bail!(
            "invalid container name \"{name}\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed (2 to 64 characters)"
        );
    }
    Ok(())
}

fn random_id() -> String {
    random_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Six random bytes from the kernel (or from the time and pid, if it fails).
fn random_bytes() -> [u8; 6] {
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom into a valid buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let t = unix_now() ^ u64::from(std::process::id());
        bytes.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_dockers_rule() {
        assert!(validate_container_name("web").is_ok());
        assert!(validate_container_name("web_1.a-b").is_ok());
        assert!(validate_container_name("-web").is_err());
        assert!(validate_container_name("we b").is_err());
        assert!(validate_container_name("w").is_err());
    }

    #[test]
    fn ids_are_twelve_hex_digits() {
        let id = random_id();
        assert_eq!(id.len(), 12);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn nat46_pool_is_a_cidr_or_off_and_a_default_that_gives_way_to_a_network() {
        let net = |s: &str| s.parse::<ipnet::Ipv4Net>().unwrap();
        assert_eq!("off".parse::<Nat46Pool>(), Ok(Nat46Pool::Off));
        assert_eq!(
            "100.127.0.0/24".parse::<Nat46Pool>(),
            Ok(Nat46Pool::Given(net("100.127.0.0/24")))
        );
        for (bad, why) in [
            ("198.18.0.0/31", "a pool needs at least 4 addresses (/30)"),
            (
                "198.18.0.1/16",
                "host bits set (the pool would be 198.18.0.0/16)",
            ),
            ("on", "is neither an IPv4 CIDR (198.18.0.0/16) nor off"),
            ("2001:db8::/96", "is neither an IPv4 CIDR"),
        ] {
            let e = bad.parse::<Nat46Pool>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let in_use = || {
            [
                ("network netd0's subnet 172.17.0.0/16", "172.17.0.0/16"),
                ("the node's address 198.18.4.7/24", "198.18.4.0/24"),
            ]
            .map(|(what, n)| (what.to_string(), net(n)))
        };
        assert_eq!(Nat46Pool::Off.resolve(in_use()).unwrap(), None);
        assert_eq!(
            Nat46Pool::Default.resolve(in_use()[..1].to_vec()).unwrap(),
            Some(NAT46_DEFAULT_POOL)
        );
        // The default steps aside; a pool given is refused, saying what it overlaps.
        assert_eq!(Nat46Pool::Default.resolve(in_use()).unwrap(), None);
        let e = Nat46Pool::Given(net("198.18.0.0/15"))
            .resolve(in_use())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--nat46-pool 198.18.0.0/15 overlaps the node's address 198.18.4.7/24: choose another pool"
        );
    }
}
