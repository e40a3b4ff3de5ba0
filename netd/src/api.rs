//! The daemon's API: HTTP/1.1 with JSON bodies on a Unix socket, like Docker's. This module
//! holds the request/response types and the transport for both ends; what the requests do
//! is the daemon's business.

use std::{
    convert::Infallible,
    future::Future,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::Ipv4Net;
use log::{debug, info, warn};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::net::Ipv4Addr;

use crate::{docker_plugin::short_id, ports::PortBinding, state};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{Notify, Semaphore, watch},
};

#[derive(Debug, Serialize, Deserialize)]
pub struct RunRequest {
    pub name: Option<String>,
    /// `bridge`, a network's name, `host`, `none` or `container:NAME`.
    pub network: String,
    /// A static address on the network (`--ip`).
    #[serde(default)]
    pub ip: Option<String>,
    /// A static IPv6 address on the network (`--ip6`), which must have IPv6.
    #[serde(default)]
    pub ip6: Option<String>,
    /// Attach this existing network namespace instead of making one (`--netns PATH`).
    #[serde(default)]
    pub netns: Option<std::path::PathBuf>,
    /// Start `cmd` (`netd run`), or only wire the namespace (`netd create`).
    #[serde(default = "yes")]
    pub start: bool,
    /// `-p` specs, parsed by the daemon so that every client gets the same errors.
    pub publish: Vec<String>,
    /// `--expose` ports, published to ephemeral host ports when `publish_all` (`-P`).
    #[serde(default)]
    pub expose: Vec<String>,
    #[serde(default)]
    pub publish_all: bool,
    pub cmd: Vec<String>,
}

fn yes() -> bool {
    true
}

/// `netd-cni ADD` (and `CHECK`): attach the namespace a runtime made to a network.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CniAttachRequest {
    pub network: String,
    /// `CNI_CONTAINERID`: with the network and the interface, the attachment's key.
    pub container_id: String,
    /// `CNI_IFNAME`: the interface inside the namespace.
    pub ifname: String,
    /// `CNI_NETNS`.
    pub netns: std::path::PathBuf,
    /// The CNI network (the configuration's `name`): a runtime's `GC` covers its own.
    #[serde(default)]
    pub cni_network: Option<String>,
    /// `portMappings` as `-p` specs.
    #[serde(default)]
    pub ports: Vec<String>,
    /// A static address (`ips` or `CNI_ARGS` `IP=`).
    #[serde(default)]
    pub ip: Option<String>,
    /// A static IPv6 address (`ips`), on a network with IPv6.
    #[serde(default)]
    pub ip6: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// What the runtime says of the container (Kubernetes' `K8S_POD_*`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// One CNI attachment, as `ADD` made it: what its result is made of.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CniAttachmentView {
    /// The record's name in `netd ps`.
    pub name: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: std::path::PathBuf,
    /// Its IPv4 address, prefix length and gateway; none on an IPv6-only network.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    pub prefix_len: u8,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Its IPv6 address, prefix length and gateway, on a network with IPv6.
    #[serde(default)]
    pub ip6: Option<(std::net::Ipv6Addr, u8, std::net::Ipv6Addr)>,
    /// The interface carries the default route (not on internal networks, and only on a
    /// namespace's first attachment).
    pub default_route: bool,
    pub mac: String,
    pub bridge: String,
    pub bridge_mac: String,
    pub host_veth: String,
    pub host_mac: String,
    pub ports: Vec<PortBinding>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `netd-cni CHECK`: the attachment as the runtime's `prevResult` says it was made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CniCheckRequest {
    pub attach: CniAttachRequest,
    /// The interface's address in `prevResult`: its IPv4 one, or its IPv6 one on an
    /// IPv6-only network.
    pub ip: std::net::IpAddr,
    pub prefix_len: u8,
    pub mac: Option<String>,
    pub default_route: bool,
}

/// `netd-cni GC`: keep these attachments of the network, remove its others.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CniGcRequest {
    pub network: String,
    /// The CNI network whose attachments the runtime lists (its configuration's `name`).
    #[serde(default)]
    pub cni_network: Option<String>,
    pub valid: Vec<crate::cni::ValidAttachment>,
}

// The API's answers are types of their own, not the persisted records: a change of the
// state's layout is a migration (`state.rs`), never a silent change of the API. Their
// JSON is what `netd inspect`, `netd network inspect` and the `--format json` listings
// print.

/// A container as the API shows it, and where its network namespace is.
#[derive(Debug, Serialize, Deserialize)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub network_mode: String,
    pub sandbox: SandboxView,
    pub endpoints: Vec<ContainerEndpointView>,
    pub cmd: Vec<String>,
    pub process: Option<ProcessView>,
    pub status: StatusView,
    pub ports: Vec<PortBinding>,
    pub created: u64,
    pub netns_path: std::path::PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessView {
    pub pid: u32,
    pub start_time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum StatusView {
    Created,
    Running,
    Exited { code: Option<i32> },
}

/// Where a container's network namespace comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SandboxView {
    Holder {
        holder: ProcessView,
    },
    Host,
    Container {
        name: String,
    },
    External {
        path: std::path::PathBuf,
        dev: u64,
        ino: u64,
    },
    /// A namespace a runtime attached through CNI.
    Cni {
        container_id: String,
        ifname: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cni_network: Option<String>,
        path: std::path::PathBuf,
        labels: std::collections::BTreeMap<String, String>,
    },
    /// An endpoint of a Docker container: Docker's IDs, shown short as Docker does.
    Docker {
        network: String,
        endpoint: String,
        /// Docker's sandbox (the container's network namespace), once joined.
        sandbox: Option<String>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerEndpointView {
    pub network: String,
    /// Its IPv4 address; null on an IPv6-only network.
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 side, under Docker's names (empty and 0 without one).
    #[serde(rename = "GlobalIPv6Address", default)]
    pub global_ipv6_address: String,
    #[serde(rename = "GlobalIPv6PrefixLen", default)]
    pub global_ipv6_prefix_len: u8,
    #[serde(rename = "IPv6Gateway", default)]
    pub ipv6_gateway: String,
    pub mac: String,
    /// The interface inside the container (empty when Docker names it).
    pub ifname: String,
    pub host_veth: String,
    pub host_ifindex: u32,
}

impl ContainerView {
    /// Container `c`; `networks` gives its endpoints' IPv6 prefix and gateway.
    pub fn new(
        c: &state::Container,
        netns_path: std::path::PathBuf,
        networks: &std::collections::BTreeMap<String, state::Network>,
    ) -> Self {
        let process = |p: state::ProcessId| ProcessView {
            pid: p.pid,
            start_time: p.start_time,
        };
        ContainerView {
            id: c.id.clone(),
            name: c.name.clone(),
            network_mode: c.network_mode.clone(),
            sandbox: match &c.sandbox {
                state::Sandbox::Holder { holder } => SandboxView::Holder {
                    holder: process(*holder),
                },
                state::Sandbox::Host => SandboxView::Host,
                state::Sandbox::Container { name } => SandboxView::Container { name: name.clone() },
                state::Sandbox::External { path, dev, ino, .. } => SandboxView::External {
                    path: path.clone(),
                    dev: *dev,
                    ino: *ino,
                },
                state::Sandbox::Cni(a) => SandboxView::Cni {
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                    cni_network: a.cni_network.clone(),
                    path: a.path.clone(),
                    labels: a.labels.clone(),
                },
                state::Sandbox::Docker(d) => SandboxView::Docker {
                    network: short_id(&d.network_id).to_string(),
                    endpoint: short_id(&d.endpoint_id).to_string(),
                    sandbox: d
                        .sandbox_key
                        .as_deref()
                        .map(|k| short_id(crate::docker_plugin::sandbox_id(k)).to_string()),
                },
            },
            endpoints: c
                .endpoints
                .iter()
                .map(|e| {
                    let v6 = networks.get(&e.network).and_then(|n| n.ipv6);
                    ContainerEndpointView {
                        network: e.network.clone(),
                        ip: e.ip,
                        global_ipv6_address: e.ip6.map(|a| a.to_string()).unwrap_or_default(),
                        global_ipv6_prefix_len: e
                            .ip6
                            .and(v6)
                            .map_or(0, |v6| v6.subnet.prefix_len()),
                        ipv6_gateway: e
                            .ip6
                            .and(v6)
                            .map(|v6| v6.gateway.to_string())
                            .unwrap_or_default(),
                        mac: e.mac.clone(),
                        ifname: e.ifname.clone(),
                        host_veth: e.host_veth.clone(),
                        host_ifindex: e.host_ifindex,
                    }
                })
                .collect(),
            cmd: c.cmd.clone(),
            process: c.process.map(process),
            status: match c.status {
                state::Status::Created => StatusView::Created,
                state::Status::Running => StatusView::Running,
                state::Status::Exited { code } => StatusView::Exited { code },
            },
            ports: c.ports.clone(),
            created: c.created,
            netns_path,
        }
    }
}

/// `netd network connect` / `disconnect`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub container: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub ip6: Option<String>,
}

/// A network as `netd network inspect` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// `local` (this node's) or `global` (an overlay, the same on every node of the
    /// cluster).
    #[serde(default = "local_scope")]
    pub scope: String,
    pub bridge: String,
    /// A macvlan network's parent and mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan: Option<state::MacvlanNet>,
    /// Whether the network has IPv4 (Docker 28's name): not with `--ipv4=false`.
    #[serde(rename = "EnableIPv4", default = "enabled")]
    pub enable_ipv4: bool,
    /// The IPv4 subnet and gateway; null on an IPv6-only network.
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    /// Whether the network has IPv6 (Docker's name).
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: bool,
    /// Its subnets, one per family, in Docker's shape.
    #[serde(rename = "IPAM", default)]
    pub ipam: IpamView,
    #[serde(default)]
    pub aux_addresses: std::collections::BTreeMap<String, Ipv4Addr>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    pub mtu: Option<u32>,
    pub gateway_mode: String,
    pub options: std::collections::BTreeMap<String, String>,
    pub created: u64,
    /// Docker's ID, when Docker made the network (`docker network create -d netd`).
    pub docker_id: Option<String>,
    pub endpoints: Vec<EndpointView>,
}

fn local_scope() -> String {
    "local".into()
}

fn enabled() -> bool {
    true
}

/// A network's address configuration as Docker's `network inspect` shows it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct IpamView {
    #[serde(rename = "Config")]
    pub config: Vec<IpamConfigView>,
}

/// One subnet of a network (IPv4 first, then IPv6).
#[derive(Debug, Serialize, Deserialize)]
pub struct IpamConfigView {
    #[serde(rename = "Subnet")]
    pub subnet: String,
    #[serde(rename = "Gateway")]
    pub gateway: String,
    #[serde(rename = "IPRange", default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
}

impl IpamView {
    fn of(v4: Option<(Ipv4Net, Ipv4Addr, Option<Ipv4Net>)>, v6: Option<&state::Network6>) -> Self {
        let v4 = v4.map(|v4| IpamConfigView {
            subnet: v4.0.to_string(),
            gateway: v4.1.to_string(),
            ip_range: v4.2.map(|r| r.to_string()),
        });
        let v6 = v6.map(|v6| IpamConfigView {
            subnet: v6.subnet.to_string(),
            gateway: v6.gateway.to_string(),
            ip_range: v6.ip_range.map(|r| r.to_string()),
        });
        IpamView {
            config: v4.into_iter().chain(v6).collect(),
        }
    }
}

impl NetworkView {
    /// An overlay network of the cluster, as every node shows it.
    pub fn overlay(n: &crate::cluster::overlay::OverlayNetwork) -> Self {
        NetworkView {
            id: n.id.clone(),
            name: n.name.clone(),
            driver: "overlay".into(),
            scope: "global".into(),
            bridge: String::new(),
            macvlan: None,
            enable_ipv4: true,
            subnet: Some(n.subnet),
            gateway: Some(n.gateway),
            ip_range: n.ip_range,
            enable_ipv6: n.ipv6.is_some(),
            ipam: IpamView::of(
                Some((n.subnet, n.gateway, n.ip_range)),
                n.network6().as_ref(),
            ),
            aux_addresses: Default::default(),
            internal: n.internal,
            icc: true,
            masquerade: !n.internal,
            mtu: None,
            gateway_mode: "nat".into(),
            options: [
                (
                    crate::cluster::overlay::OPT_VNI.to_string(),
                    n.vni.to_string(),
                ),
                ("attachable".to_string(), n.attachable.to_string()),
                ("created_on".to_string(), n.created_on.clone()),
            ]
            .into(),
            created: n.created,
            docker_id: None,
            endpoints: Vec::new(),
        }
    }

    pub fn new(n: &state::Network, endpoints: Vec<EndpointView>) -> Self {
        NetworkView {
            id: n.id.clone(),
            name: n.name.clone(),
            driver: n.driver.clone(),
            scope: local_scope(),
            bridge: n.bridge.clone(),
            macvlan: n.macvlan.clone(),
            enable_ipv4: n.subnet.is_some(),
            subnet: n.subnet,
            gateway: n.gateway,
            ip_range: n.ip_range,
            enable_ipv6: n.ipv6.is_some(),
            ipam: IpamView::of(
                n.ipv4()
                    .map(|(subnet, gateway)| (subnet, gateway, n.ip_range)),
                n.ipv6.as_ref(),
            ),
            aux_addresses: n.aux_addresses.clone(),
            internal: n.internal,
            icc: n.icc,
            masquerade: n.masquerade,
            mtu: n.mtu,
            gateway_mode: crate::network_request::gateway_mode_name(n.gateway_mode).to_string(),
            options: n.options.clone(),
            created: n.created,
            docker_id: n.docker_id.clone(),
            endpoints,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EndpointView {
    pub container: String,
    pub ip: String,
    /// Its IPv6 address with the prefix length; empty without one.
    #[serde(default)]
    pub ip6: String,
    pub mac: String,
    pub host_veth: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CounterView {
    pub hook: String,
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// An error with the HTTP status it is answered with.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: anyhow::Error,
}

impl ApiError {
    pub fn bad_request(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error,
        }
    }
    pub fn not_found(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error,
        }
    }
    pub fn forbidden(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            error,
        }
    }
    pub fn conflict(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            error,
        }
    }
}

impl ApiError {
    /// A store or service netd depends on did not answer (the cluster store).
    pub fn unavailable(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error,
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error,
        }
    }
}

/// A parsed request as the daemon's router sees it.
pub struct ApiRequest {
    pub method: Method,
    /// Path segments after the version prefix, e.g. `["containers", "web"]`.
    pub path: Vec<String>,
    pub query: String,
    pub body: Bytes,
    /// The client's process (from the socket's peer credentials), while it waits for
    /// the answer: paths it sends are resolved as it sees them where that matters.
    pub caller_pid: Option<u32>,
}

impl ApiRequest {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(anyhow::anyhow!("invalid request body: {e}")))
    }

    /// The value of query parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    pub fn flag(&self, name: &str) -> bool {
        self.query
            .split('&')
            .any(|kv| kv == format!("{name}=1") || kv == format!("{name}=true"))
    }
}

pub const API_PREFIX: &str = "/v1/";

/// What one client may cost the daemon.
pub mod limits {
    use std::time::Duration;

    /// A request body (JSON) larger than this is answered 413.
    pub const MAX_BODY: usize = 1 << 20;
    /// A request's headers must arrive within this (also the longest a connection may
    /// idle between requests).
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Its body within this after the headers (408 otherwise): a request is read in 30 s
    /// at most. The handler's own work is not timed.
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
    /// Connections served at once; more wait in the listen backlog. Each costs a file
    /// descriptor, and the daemon's must not run out.
    pub const MAX_CONNECTIONS: usize = 256;
    /// After a failed accept (e.g. EMFILE) the loop waits this long, doubling up to
    /// `ACCEPT_BACKOFF_MAX`, instead of spinning.
    pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
    pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
    /// At most one log line per this interval about failed accepts.
    pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);
}

/// Who sent a request, from the socket's peer credentials (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub pid: Option<i32>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "uid {} pid {pid}", self.uid),
            None => write!(f, "uid {} (pid unknown)", self.uid),
        }
    }
}

/// Listen on a Unix socket at `path`, mode 0660, owned by `group` if given. A stale
/// socket (left by a killed daemon) is replaced; the socket of a daemon that still
/// answers is not. The caller's umask should be restrictive: the socket is bound with it
/// before its mode is set.
pub async fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        create_public_dirs(dir)
            .with_context(|| format!("create socket directory {}", dir.display()))?;
    }
    if UnixStream::connect(path).await.is_ok() {
        bail!(
            "another netd daemon is serving {}: stop it first, or give this one another --socket",
            path.display()
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => debug!("removed stale socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale socket {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chown {} to group {gid}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))?;
    Ok(listener)
}

/// Create `dir` and its missing parents with mode 0755 whatever the umask: the socket's
/// group must be able to reach it (the socket's own mode guards it).
fn create_public_dirs(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_public_dirs(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Counts running tasks of one kind, and waits for there to be none.
#[derive(Clone, Default)]
struct Tracker(Arc<(AtomicUsize, Notify)>);

/// One tracked task: counted until dropped.
struct Tracked(Tracker);

impl Tracker {
    fn track(&self) -> Tracked {
        self.0.0.fetch_add(1, Ordering::SeqCst);
        Tracked(self.clone())
    }

    fn count(&self) -> usize {
        self.0.0.load(Ordering::SeqCst)
    }

    async fn idle(&self) {
        loop {
            let notified = self.0.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.0.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.0.1.notify_waiters();
        }
    }
}

/// Failed accepts: how long to wait before the next, and when to say so. A full file
/// table (EMFILE) fails every accept at once; retried at once, it spun a CPU and wrote
/// hundreds of MB of log in seconds.
#[derive(Debug, Default)]
struct AcceptErrors {
    delay: Option<Duration>,
    logged_at: Option<Instant>,
    /// Failures not logged since the last line.
    unlogged: u64,
}

impl AcceptErrors {
    /// One more failure at `now`: the pause before the next accept, and whether to log
    /// it (with the count of failures left unlogged before it).
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let delay = match self.delay {
            None => limits::ACCEPT_BACKOFF_MIN,
            Some(d) => (d * 2).min(limits::ACCEPT_BACKOFF_MAX),
        };
        self.delay = Some(delay);
        let log = match self.logged_at {
            Some(at) if now.duration_since(at) < limits::ACCEPT_LOG_EVERY => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.logged_at = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        };
        (delay, log)
    }

    /// An accept worked: back to full speed. The number of failures never logged, if any.
    fn succeeded(&mut self) -> Option<u64> {
        self.delay = None;
        self.logged_at = None;
        Some(std::mem::take(&mut self.unlogged)).filter(|n| *n > 0)
    }
}

/// The server after it stopped accepting: requests already started are still running.
pub struct Drain {
    handlers: Tracker,
    connections: Tracker,
    /// Held so that the connections' receivers stay open until the drain ends.
    _closing: watch::Sender<bool>,
}

impl Drain {
    /// Requests whose handlers are still running.
    pub fn requests_in_flight(&self) -> usize {
        self.handlers.count()
    }

    /// Wait for every started request to finish, then (briefly) for their answers to be
    /// written; connections between requests close at once, and a request whose body is
    /// still arriving is answered 503 instead of started.
    pub async fn finished(self) {
        self.handlers.idle().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.connections.idle()).await;
    }
}

/// Serve `handler` on `listener` (bound at `path`) until `shutdown` resolves; then stop
/// accepting, remove the socket and return what is still running. Each request's handler
/// runs in a task of its own: a client that hangs up does not cancel a change half-way.
/// The handler sees the path after `prefix` (`API_PREFIX` for netd's API, `/` for
/// Docker's plugin API), split at `/`.
pub async fn serve<H, F>(
    listener: UnixListener,
    path: &Path,
    prefix: &'static str,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<Drain>
where
    H: Fn(ApiRequest) -> F + Send + Sync + 'static,
    F: Future<Output = Result<serde_json::Value, ApiError>> + Send + 'static,
{
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits::MAX_CONNECTIONS));
    let handlers = Tracker::default();
    let connections = Tracker::default();
    let (closing, closing_rx) = watch::channel(false);
    let mut errors = AcceptErrors::default();
    let mut full_reported: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if full_reported.is_none_or(|at| at.elapsed() >= limits::ACCEPT_LOG_EVERY) {
                    full_reported = Some(Instant::now());
                    warn!(
                        "API: {} connections open, the most served at once; new ones wait",
                        limits::MAX_CONNECTIONS
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if let Some(n) = errors.succeeded() {
                    warn!(
                        "accept on {}: accepting again after {n} more failures",
                        path.display()
                    );
                }
                stream
            }
            Err(e) => {
                let (pause, log) = errors.failed(Instant::now());
                if let Some(unlogged) = log {
                    let more = if unlogged > 0 {
                        format!(" ({unlogged} more failures since the last report)")
                    } else {
                        String::new()
                    };
                    warn!(
                        "accept on {}: {e}{more}; retrying with back-off (at most one report every {}s)",
                        path.display(),
                        limits::ACCEPT_LOG_EVERY.as_secs()
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let caller = match stream.peer_cred() {
            Ok(cred) => Caller {
                uid: cred.uid(),
                pid: cred.pid(),
            },
            Err(e) => {
                warn!("API connection refused: no peer credentials: {e}");
                continue;
            }
        };
        let handler = handler.clone();
        let handlers = handlers.clone();
        let tracked = connections.track();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _tracked = tracked;
            let stopping = closing.clone();
            let service = service_fn(move |req| {
                let started = Started {
                    handlers: handlers.clone(),
                    stopping: stopping.clone(),
                };
                answer(handler.clone(), req, prefix, caller, started)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits::HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let closed = closing.wait_for(|c| *c);
            tokio::pin!(closed);
            let mut shutting_down = false;
            let result = loop {
                tokio::select! {
                    result = conn.as_mut() => break result,
                    _ = &mut closed, if !shutting_down => {
                        conn.as_mut().graceful_shutdown();
                        shutting_down = true;
                    }
                }
            };
            if let Err(e) = result {
                debug!("API connection of {caller}: {e}");
            }
        });
    }
    drop(listener);
    let _ = std::fs::remove_file(path);
    // From now on no request starts: idle connections close, requests still being read
    // are answered 503.
    let _ = closing.send(true);
    Ok(Drain {
        handlers,
        connections,
        _closing: closing,
    })
}

/// Where a request's handler is counted, and whether the daemon is stopping.
struct Started {
    handlers: Tracker,
    stopping: watch::Receiver<bool>,
}

async fn answer<H, F>(
    handler: Arc<H>,
    req: Request<hyper::body::Incoming>,
    prefix: &'static str,
    caller: Caller,
    started: Started,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    H: Fn(ApiRequest) -> F,
    F: Future<Output = Result<serde_json::Value, ApiError>> + Send + 'static,
{
    let (parts, body) = req.into_parts();
    let method = parts.method;
    let uri = parts.uri;
    let result = match read_body(body).await {
        Ok(body) => match uri.path().strip_prefix(prefix) {
            Some(rest) => {
                let path: Vec<String> = rest
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(percent_decode)
                    .collect();
                // Counted before the check, so that a stop either waits for this
                // request or is seen by it.
                let tracked = started.handlers.track();
                if *started.stopping.borrow() {
                    drop(tracked);
                    Err(ApiError {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        error: anyhow::anyhow!(
                            "the netd daemon is stopping; try again once it is back"
                        ),
                    })
                } else {
                    if method != Method::GET {
                        info!("API {method} {} by {caller}", uri.path());
                    }
                    let request = handler(ApiRequest {
                        method: method.clone(),
                        path,
                        query: uri.query().unwrap_or("").to_string(),
                        body,
                        caller_pid: caller.pid.and_then(|p| u32::try_from(p).ok()),
                    });
                    // A task of its own, which the connection cannot cancel: a client that
                    // hangs up mid-request leaves a change finished or rolled back, never
                    // half-made. Tracked, so that a stopping daemon waits for it.
                    let task = tokio::spawn(async move {
                        let _tracked = tracked;
                        request.await
                    });
                    match task.await {
                        Ok(result) => result,
                        Err(e) => Err(ApiError::from(anyhow::anyhow!(
                            "the request's handler failed: {e}"
                        ))),
                    }
                }
            }
            None => Err(ApiError::not_found(anyhow::anyhow!(
                "unknown API path {}",
                uri.path()
            ))),
        },
        Err(e) => Err(e),
    };
    let (status, body) = match result {
        Ok(value) => (StatusCode::OK, value),
        Err(e) => {
            if method != Method::GET {
                info!(
                    "API {method} {} by {caller}: {}: {:#}",
                    uri.path(),
                    e.status,
                    e.error
                );
            }
            let body = ErrorBody {
                message: format!("{:#}", e.error),
            };
            (e.status, serde_json::to_value(body).unwrap_or_default())
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The whole body, up to `limits::MAX_BODY` bytes and within `limits::BODY_TIMEOUT`.
async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, ApiError> {
    use hyper::body::Body;
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error: anyhow::anyhow!(
            "request body too large: the limit is {} bytes",
            limits::MAX_BODY
        ),
    };
    // A declared length over the limit is refused before a byte of it is read.
    if body.size_hint().lower() > limits::MAX_BODY as u64 {
        return Err(too_large());
    }
    let collect = Limited::new(body, limits::MAX_BODY).collect();
    match tokio::time::timeout(limits::BODY_TIMEOUT, collect).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(anyhow::anyhow!(
            "read request body: {e}"
        ))),
        Err(_) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            error: anyhow::anyhow!(
                "the request body did not arrive within {}s",
                limits::BODY_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// Decode `%XX` escapes of a path segment. Works on bytes: a `%` before a multi-byte
/// character is kept as it is (slicing the `str` there would panic).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(&[hi, lo])) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                out.push(hex_value(hi) << 4 | hex_value(lo));
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Escape `s` as one path segment: everything but RFC 3986's unreserved characters, so
/// that a name holding `?`, `/` or `#` stays a name (`netd rm 'web?force=1'` must not
/// force-remove `web`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The CLI's side: one request per connection.
pub struct Client {
    socket: std::path::PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        Ok(self.send(method, path, body).await?)
    }

    /// `call`, with what went wrong told apart: the daemon not reachable, or its answer
    /// with the HTTP status (`netd-cni` turns them into CNI error codes).
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            CallError::Unreachable(if e.kind() == std::io::ErrorKind::PermissionDenied {
                anyhow::anyhow!(
                    "permission denied on the netd socket {}: it is for root and the daemon's --socket-group; run as root (sudo) or join that group",
                    self.socket.display()
                )
            } else {
                anyhow::anyhow!(
                    "cannot connect to the netd daemon at {}: {e}. Is the daemon running? Start it with `netd daemon` (or `systemctl start netd`), or point --socket / NETD_SOCKET at its socket",
                    self.socket.display()
                )
            })
        })?;
        self.exchange(stream, method, path, body).await
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        stream: UnixStream,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the daemon")?;
        tokio::spawn(conn);
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(anyhow::Error::from)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{API_PREFIX}{path}"))
            .header(hyper::header::HOST, "netd")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(anyhow::Error::from)?;
        let resp = sender
            .send_request(req)
            .await
            .context("send request to the daemon")?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("read the daemon's answer")?
            .to_bytes();
        if !status.is_success() {
            let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CallError::Refused(status, msg));
        }
        Ok(serde_json::from_slice(&bytes).context("decode the daemon's answer")?)
    }
}

/// Why a call to the daemon failed.
#[derive(Debug)]
pub enum CallError {
    /// No daemon answers on the socket.
    Unreachable(anyhow::Error),
    /// The daemon answered with an error status and this message.
    Refused(StatusCode, String),
    /// The exchange broke off, or the answer did not decode.
    Transport(anyhow::Error),
}

impl From<anyhow::Error> for CallError {
    fn from(e: anyhow::Error) -> Self {
        CallError::Transport(e)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(e) | CallError::Transport(e) => write!(f, "{e:#}"),
            CallError::Refused(_, msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn dual_stack() -> (state::Network, state::Container) {
        let n: state::Network = serde_json::from_value(serde_json::json!({
            "id": "0123456789ab", "name": "front", "driver": "bridge", "bridge": "br-front",
            "subnet": "172.20.0.0/16", "gateway": "172.20.0.1", "ip_range": null,
            "ipv6": {"subnet": "fd00:1::/64", "gateway": "fd00:1::1",
                     "ip_range": "fd00:1::100/120"},
            "internal": false, "icc": true, "masquerade": true, "mtu": null,
            "options": {}, "tag": 3, "created": 0
        }))
        .unwrap();
        let c: state::Container = serde_json::from_value(serde_json::json!({
            "id": "abcdef012345", "name": "web", "network_mode": "front",
            "sandbox": {"kind": "host"}, "cmd": [], "process": null,
            "status": {"state": "created"}, "ports": [], "created": 0,
            "endpoints": [
                {"network": "front", "ip": "172.20.0.2", "ip6": "fd00:1::100",
                 "mac": "02:42:ac:14:00:02", "ifname": "eth0", "host_veth": "ndv1",
                 "host_ifindex": 7},
                {"network": "back", "ip": "172.21.0.2", "mac": "02:42:ac:15:00:02",
                 "ifname": "eth1", "host_veth": "ndv2", "host_ifindex": 8}
            ]
        }))
        .unwrap();
        (n, c)
    }

    #[test]
    fn a_dual_stack_network_shows_both_families_in_dockers_shape() {
        let (n, _) = dual_stack();
        let v = serde_json::to_value(NetworkView::new(&n, Vec::new())).unwrap();
        assert_eq!(v["EnableIPv6"], true);
        assert_eq!(
            v["IPAM"]["Config"],
            serde_json::json!([
                {"Subnet": "172.20.0.0/16", "Gateway": "172.20.0.1"},
                {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1", "IPRange": "fd00:1::100/120"}
            ])
        );
        let mut v4_only = n.clone();
        v4_only.ipv6 = None;
        let v = serde_json::to_value(NetworkView::new(&v4_only, Vec::new())).unwrap();
        assert_eq!(v["EnableIPv6"], false);
        assert_eq!(v["IPAM"]["Config"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_containers_endpoints_show_their_ipv6_side_under_dockers_names() {
        let (n, c) = dual_stack();
        let networks = [(n.name.clone(), n)].into();
        let v = serde_json::to_value(ContainerView::new(&c, "/x".into(), &networks)).unwrap();
        let (front, back) = (&v["endpoints"][0], &v["endpoints"][1]);
        assert_eq!(front["GlobalIPv6Address"], "fd00:1::100");
        assert_eq!(front["GlobalIPv6PrefixLen"], 64);
        assert_eq!(front["IPv6Gateway"], "fd00:1::1");
        assert_eq!(back["GlobalIPv6Address"], "");
        assert_eq!(back["GlobalIPv6PrefixLen"], 0);
        assert_eq!(back["IPv6Gateway"], "");
    }

    #[test]
    fn failed_accepts_back_off_and_are_reported_at_a_bounded_rate() {
        let mut errors = AcceptErrors::default();
        let t0 = Instant::now();
        let mut pauses = Vec::new();
        let mut reports = Vec::new();
        // A million failures over 30 s of clock (every 30 us): EMFILE's storm.
        for i in 0..1_000_000u64 {
            let (pause, log) = errors.failed(t0 + Duration::from_micros(30 * i));
            pauses.push(pause);
            if let Some(unlogged) = log {
                reports.push(unlogged);
            }
        }
        assert_eq!(pauses[0], limits::ACCEPT_BACKOFF_MIN);
        assert_eq!(pauses[1], limits::ACCEPT_BACKOFF_MIN * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]), "never shorter");
        assert_eq!(*pauses.last().unwrap(), limits::ACCEPT_BACKOFF_MAX);
        // 30 s at one report per 10 s: the first and one per window after it.
        assert_eq!(reports.len(), 3, "{reports:?}");
        assert_eq!(reports[0], 0);
        assert!(
            reports[1] > 300_000,
            "the report counts what it skipped: {reports:?}"
        );
        assert_eq!(
            reports.iter().sum::<u64>() + 3 + errors.succeeded().unwrap(),
            1_000_000
        );
        // One success: full speed again, and the next failure is reported at once.
        assert_eq!(errors.succeeded(), None);
        let (pause, log) = errors.failed(t0 + Duration::from_secs(31));
        assert_eq!((pause, log), (limits::ACCEPT_BACKOFF_MIN, Some(0)));
    }

    #[test]
    fn a_percent_before_a_multi_byte_character_is_kept_not_a_panic() {
        assert_eq!(percent_decode("%a\u{e9}"), "%a\u{e9}");
        assert_eq!(percent_decode("\u{e9}%\u{e9}"), "\u{e9}%\u{e9}");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("web%2d1%2F"), "web-1/");
    }

    #[test]
    fn encoded_segments_decode_to_the_same_name() {
        assert_eq!(encode_segment("web?force=1"), "web%3Fforce%3D1");
        assert_eq!(encode_segment("web_1.a-b"), "web_1.a-b");
        for name in ["web?force=1", "a/b#c", "100%", "\u{e9}t\u{e9} ", "../x", ""] {
            let encoded = encode_segment(name);
            assert!(!encoded.contains(['/', '?', '#']), "{encoded}");
            assert_eq!(percent_decode(&encoded), name);
        }
    }
}

/// A node of the cluster, as `netd node ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub address: std::net::Ipv4Addr,
    /// `ready` while its lease holds, `down` after it lapsed.
    pub status: String,
    pub version: String,
    /// Unix seconds of its last renewal.
    pub last_seen: u64,
    /// The node whose daemon answered.
    pub this_node: bool,
}

/// This node's view of the cluster, in `netd info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The store, as `--cluster-store` named it.
    pub store: String,
    /// Whether the last call to the store succeeded.
    pub reachable: bool,
    pub error: Option<String>,
    pub node: String,
    pub address: std::net::Ipv4Addr,
    /// The node's lease (hex, as etcdctl shows it).
    pub lease: Option<String>,
    pub lease_ttl: u64,
    pub last_renewal: Option<u64>,
    /// The store's members (`NAME URLS`), as last listed.
    pub store_members: Vec<String>,
    /// The overlays' MTU on this node: its underlay's less VXLAN's 50 bytes.
    pub overlay_mtu: Option<u32>,
}
