//! Containers: run and create (every mode), remove, and the endpoints they own. Creation
//! checks everything that can be checked before touching the node, then builds in an order
//! `teardown` can undo from any point, so a failure leaves nothing behind; a daemon killed
//! half-way leaves only things `reconcile` recognises and removes.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use log::{info, warn};
use netd_common::user::link_local_for;
use tokio::process::Child;

use super::{
    Inner, executor, leftovers::Leftovers, node::LiveNode, random_id, unix_now,
    validate_container_name,
};
use crate::{
    api::{ApiError, ContainerView, RunRequest},
    driver::{self, NetworkDriver},
    endpoint,
    netns::{self, NsId},
    node_ports::node_sockets,
    plan::{self, PeerGoes},
    ports::{self, Families, PortBinding, PortSpec},
    process,
    state::{Container, Endpoint, Network, Sandbox, Status},
};

/// What an endpoint is to be: its veth's ID, addresses, MAC, name inside, and whether it
/// carries the default route.
pub(super) struct EndpointPlan<'a> {
    pub id: &'a str,
    /// Its IPv4 address; none on an IPv6-only network.
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, on a network with IPv6.
    pub ip6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
    pub ifname: &'a str,
    pub default_route: DefaultRoutes,
}

/// Which families' default routes an endpoint carries (through its network's gateway of
/// that family).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct DefaultRoutes {
    pub v4: bool,
    pub v6: bool,
}

impl DefaultRoutes {
    pub fn both(carries: bool) -> DefaultRoutes {
        DefaultRoutes {
            v4: carries,
            v6: carries,
        }
    }

    pub fn any(self) -> bool {
        self.v4 || self.v6
    }

    pub fn or(self, other: DefaultRoutes) -> DefaultRoutes {
        DefaultRoutes {
            v4: self.v4 || other.v4,
            v6: self.v6 || other.v6,
        }
    }
}

/// How deep `container:NAME` may chain before it is called a loop.
const MAX_JOIN_DEPTH: usize = 8;

/// What `--network` asked for, resolved.
enum Mode {
    Bridge(Box<Network>),
    Host,
    None,
    Container(String),
}

/// How the log names an endpoint.
pub(super) fn describe(ep: &Endpoint) -> String {
    if ep.host_veth.is_empty() {
        format!(
            "{} (macvlan) on {} with {}",
            ep.ifname,
            ep.network,
            ep.addresses()
        )
    } else {
        format!(
            "endpoint {} on {} with {}",
            ep.host_veth,
            ep.network,
            ep.addresses()
        )
    }
}

impl Inner {
    /// A container by name; a Docker container also by its sandbox's short ID (as `netd
    /// ps` shows it), which leads to its endpoint with published ports if it has one.
    pub(super) fn container(&self, name: &str) -> Result<&Container, ApiError> {
        if let Some(c) = self.state.containers.get(name) {
            return Ok(c);
        }
        let in_sandbox = |c: &&Container| match &c.sandbox {
            Sandbox::Docker(d) => d.sandbox_key.as_deref().is_some_and(|k| {
                crate::docker_plugin::short_id(crate::docker_plugin::sandbox_id(k)) == name
            }),
            _ => false,
        };
        let mut endpoints: Vec<&Container> =
            self.state.containers.values().filter(in_sandbox).collect();
        endpoints.sort_by_key(|c| c.ports.is_empty());
        endpoints
            .first()
            .copied()
            .ok_or_else(|| ApiError::not_found(anyhow!("No such container: {name}")))
    }

    pub(super) fn container_views(&self) -> Vec<ContainerView> {
        self.state
            .containers
            .values()
            .map(|c| self.view(c))
            .collect()
    }

    pub(super) fn container_view(&self, name: &str) -> Result<ContainerView, ApiError> {
        Ok(self.view(self.container(name)?))
    }

    fn view(&self, c: &Container) -> ContainerView {
        ContainerView::new(c, self.netns_path(c), &self.state.networks)
    }

    /// Where a container's network namespace can be opened.
    pub(super) fn netns_path(&self, c: &Container) -> PathBuf {
        let mut c = c;
        for _ in 0..MAX_JOIN_DEPTH {
            match &c.sandbox {
                Sandbox::Holder { holder } => {
                    return PathBuf::from(format!("/proc/{}/ns/net", holder.pid));
                }
                Sandbox::Host => {
                    return PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
                }
                Sandbox::External { path, .. } => return path.clone(),
                Sandbox::Cni(a) => return a.path.clone(),
                Sandbox::Docker(d) => {
                    return PathBuf::from(d.sandbox_key.as_deref().unwrap_or("/nonexistent"));
                }
                Sandbox::Container { name } => match self.state.containers.get(name) {
                    Some(target) => c = target,
                    None => break,
                },
            }
        }
        PathBuf::from("/nonexistent")
    }

    /// The container's network namespace: the descriptor the daemon holds for it (opened
    /// once, when the container was made or at start), never its path opened again.
    pub(super) fn open_sandbox(&self, c: &Container) -> Result<File> {
        let mut c = c;
        for _ in 0..MAX_JOIN_DEPTH {
            match &c.sandbox {
                Sandbox::Host => return Ok(self.node_ns.try_clone()?),
                Sandbox::Container { name } => {
                    c = self.state.containers.get(name).with_context(|| {
                        format!(
                            "container {}: the container {name} it joins is gone",
                            c.name
                        )
                    })?;
                }
                Sandbox::Holder { holder } => {
                    return match self.sandboxes.get(&c.id) {
                        Some(ns) => Ok(ns.try_clone()?),
                        None => process::open_holder(*holder).with_context(|| {
                            format!("container {}: its network namespace", c.name)
                        }),
                    };
                }
                Sandbox::Docker(_) => anyhow::bail!(
                    "{} is an endpoint of a Docker container: its network namespace is Docker's",
                    c.name
                ),
                Sandbox::External { .. } | Sandbox::Cni(_) => {
                    let ns = self.sandboxes.get(&c.id).with_context(|| {
                        format!("container {}: its network namespace is not open", c.name)
                    })?;
                    return Ok(ns.try_clone()?);
                }
            }
        }
        anyhow::bail!("container {}: network namespaces joined too deep", c.name)
    }

    /// Can a namespace a client named (`--netns`) be attached? Not the host's initial
    /// one, not the node's (the daemon's own), not one netd already manages (another
    /// `--netns` container's, or the holder namespace of one of its own containers).
    fn check_attachable(&self, path: &Path, ns: NsId) -> Result<(), ApiError> {
        let refuse = |why: String| {
            Err(ApiError::bad_request(anyhow!(
                "invalid --netns {}: {why}",
                path.display()
            )))
        };
        if netns::is_initial(ns) {
            return refuse("that is the host's initial network namespace".into());
        }
        if netns::id(&self.node_ns).ok() == Some(ns) {
            return refuse("that is the node's own network namespace (use --network host)".into());
        }
        for c in self.state.containers.values() {
            if let Some(held) = self.sandboxes.get(&c.id)
                && netns::id(held).ok() == Some(ns)
            {
                return Err(ApiError::conflict(anyhow!(
                    "invalid --netns {}: that namespace is already attached to a container ({})",
                    path.display(),
                    c.name
                )));
            }
        }
        Ok(())
    }

    fn resolve_mode(&self, req: &RunRequest) -> Result<Mode, ApiError> {
        let bad = |msg: String| Err(ApiError::bad_request(anyhow!(msg)));
        let mode = match req.network.as_str() {
            "host" => Mode::Host,
            "none" => Mode::None,
            m if m.starts_with("container:") => {
                let target = &m["container:".len()..];
                let t = self.container(target)?;
                if t.status != Status::Running && t.status != Status::Created {
                    return Err(ApiError::conflict(anyhow!(
                        "cannot join network namespace of container {target}: it is not running"
                    )));
                }
                Mode::Container(target.to_string())
            }
            name => {
                let n = self.network(name)?;
                super::networks::refuse_if_docker(n, "joined by netd run")?;
                Mode::Bridge(Box::new(n.clone()))
            }
        };
        let has_ports = !req.publish.is_empty() || req.publish_all;
        match &mode {
            Mode::Container(_) if has_ports => {
                return bad(
                    "conflicting options: port publishing and the container type network mode"
                        .into(),
                );
            }
            Mode::None if has_ports => {
                return bad("conflicting options: port publishing and --network none (the container has no interface to publish on)".into());
            }
            Mode::Bridge(n) if !crate::driver::capabilities(n).publish && has_ports => {
                return bad(format!(
                    "cannot publish ports on macvlan network {}: its containers are on the LAN at their own addresses, with no NAT on the node (Docker ignores -p here; netd says so); reach {} at its own address",
                    n.name,
                    req.name.as_deref().unwrap_or("the container")
                ));
            }
            Mode::Bridge(n) if n.internal && has_ports => {
                return bad(format!(
                    "cannot publish ports on internal network {}: it has no way in from outside",
                    n.name
                ));
            }
            Mode::Host | Mode::None | Mode::Container(_)
                if req.ip.is_some() || req.ip6.is_some() =>
            {
                let flag = if req.ip.is_some() { "--ip" } else { "--ip6" };
                return bad(format!(
                    "invalid {flag}: a static address needs a bridge network, not --network {}",
                    req.network
                ));
            }
            Mode::Host | Mode::Container(_) if req.netns.is_some() => {
                return bad(format!(
                    "conflicting options: --netns and --network {}",
                    req.network
                ));
            }
            _ => {}
        }
        Ok(mode)
    }

    /// `netd run` / `netd create`: the container and, when started, its command's child.
    /// `netns` is `req.netns` opened (outside the daemon's lock, by `open_client_netns`).
    pub(super) async fn run_container(
        &mut self,
        req: RunRequest,
        netns: Option<File>,
    ) -> Result<(ContainerView, Option<Child>), ApiError> {
        let id = random_id();
        let name = match &req.name {
            Some(n) => {
                validate_container_name(n).map_err(ApiError::bad_request)?;
                n.clone()
            }
            None => format!("netd_{}", &id[..8]),
        };
        if self.state.containers.contains_key(&name) {
            return Err(ApiError::conflict(anyhow!(
                "Conflict. The container name \"{name}\" is already in use. You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        if req.start && req.cmd.is_empty() {
            return Err(ApiError::bad_request(anyhow!(
                "no command given: netd run [OPTIONS] -- CMD [ARG...]"
            )));
        }
        self.overlay_here(&req.network).await?;
        let mode = self.resolve_mode(&req)?;
        // Host mode: Docker discards -p (the CLI prints Docker's warning).
        let bindings = if let Mode::Bridge(n) = &mode {
            let mut specs = req
                .publish
                .iter()
                .map(|s| s.parse::<PortSpec>())
                .collect::<Result<Vec<_>>>()
                .map_err(ApiError::bad_request)?;
            if req.publish_all {
                let extra =
                    ports::publish_all(&specs, &req.expose).map_err(ApiError::bad_request)?;
                specs.extend(extra);
            }
            self.refresh_node_addrs().await?;
            let families = self.publish_families(n.subnet.is_some(), n.ipv6.is_some());
            self.bind_ports(&specs, families)
                .map_err(ApiError::conflict)?
        } else {
            Vec::new()
        };
        let ip = match &mode {
            Mode::Bridge(n) => Some(
                self.addresses_for(n, req.ip.as_deref(), req.ip6.as_deref(), &name)
                    .await?,
            ),
            _ => None,
        };
        let (sandbox, ns) = match (&mode, &req.netns, netns) {
            (Mode::Host, _, _) => (Sandbox::Host, None),
            (Mode::Container(target), _, _) => (
                Sandbox::Container {
                    name: target.clone(),
                },
                None,
            ),
            (_, Some(path), Some(ns)) => {
                let (dev, ino) = netns::id(&ns).map_err(anyhow::Error::from)?;
                self.check_attachable(path, (dev, ino))?;
                let sandbox = Sandbox::External {
                    path: path.clone(),
                    dev,
                    ino,
                    cookie: Some(netns::cookie(&ns)?),
                };
                (sandbox, Some(ns))
            }
            (_, Some(path), None) => {
                return Err(ApiError::from(anyhow!(
                    "--netns {} was not opened",
                    path.display()
                )));
            }
            _ => {
                let (holder, child) = process::spawn_holder(&self.state_dir, &id)?;
                reap(child);
                match process::open_holder(holder) {
                    Ok(ns) => (Sandbox::Holder { holder }, Some(ns)),
                    Err(e) => {
                        process::signal(holder, libc::SIGKILL);
                        return Err(ApiError::from(e.context("open the new network namespace")));
                    }
                }
            }
        };
        // Held from here on: every later operation on the container uses this descriptor.
        if let Some(ns) = ns {
            self.sandboxes.insert(id.clone(), ns);
        }
        let mut c = Container {
            id: id.clone(),
            name: name.clone(),
            network_mode: if req.netns.is_some() && !matches!(mode, Mode::None) {
                format!("{} (netns)", req.network)
            } else {
                req.network.clone()
            },
            sandbox,
            endpoints: Vec::new(),
            cmd: req.cmd.clone(),
            process: None,
            status: if req.start {
                Status::Running
            } else {
                Status::Created
            },
            ports: bindings,
            created: unix_now(),
        };
        match self.wire_and_start(&mut c, &mode, ip, req.start).await {
            Ok(child) => {
                if let (Mode::Bridge(n), Some((ip, ip6))) = (&mode, ip)
                    && let Some(n) = self.state.networks.get_mut(&n.name)
                {
                    n.note_allocated(ip, ip6);
                }
                self.state.containers.insert(name.clone(), c.clone());
                self.save()?;
                info!(
                    "container {name}: {} with --network {}{}, ports [{}]",
                    if req.start { "started" } else { "created" },
                    c.network_mode,
                    match c.endpoints.first() {
                        Some(ep) => format!(" at {}", ep.addresses()),
                        None => String::new(),
                    },
                    c.ports
                        .iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Ok((self.view(&c), child))
            }
            Err(e) => {
                let left = self.teardown(&c).await;
                self.sandboxes.remove(&c.id);
                Err(ApiError::from(
                    left.after(e).context(format!("start container {name}")),
                ))
            }
        }
    }

    /// The container's networking as one plan (`plan::create_container`: namespace,
    /// endpoint, published ports), applied, then its command started. What is done is
    /// undone by `teardown` if the command cannot start.
    async fn wire_and_start(
        &mut self,
        c: &mut Container,
        mode: &Mode,
        ip: Option<(Option<Ipv4Addr>, Option<Ipv6Addr>)>,
        start: bool,
    ) -> Result<Option<Child>> {
        let ns = self.open_sandbox(c)?;
        let namespace = match c.sandbox {
            Sandbox::Holder { .. } => plan::Namespace::Own,
            Sandbox::External { .. } => plan::Namespace::Given,
            _ => plan::Namespace::Shared,
        };
        let id = random_id();
        let endpoint = match (mode, ip) {
            (Mode::Bridge(n), Some((ip, ip6))) => {
                let p = EndpointPlan {
                    id: &id,
                    ip,
                    ip6,
                    mac: self.new_mac(n, ip)?,
                    ifname: "eth0",
                    default_route: DefaultRoutes::both(!n.internal),
                };
                Some(self.plan_endpoint(n, &p, PeerGoes::IntoContainer).await?)
            }
            _ => None,
        };
        let (ep, attach) = endpoint.unzip();
        let to = ep.as_ref().map(|e| plan::PublishTo {
            ip: e.ip,
            ip6: e.ip6,
            via: e.host_veth.as_str(),
        });
        let steps = plan::create_container(namespace, attach.unwrap_or_default(), &c.ports, to);
        self.apply_plan(Some(&ns), &steps)
            .await
            .with_context(|| format!("set up the networking of container {}", c.name))?;
        if let Some(ep) = ep {
            let ep = self.endpoint_applied(c, ep).await?;
            info!("container {}: {}", c.name, describe(&ep));
            c.endpoints.push(ep);
            for b in &c.ports {
                info!("container {}: published {b}", c.name);
            }
        }
        if !start {
            return Ok(None);
        }
        let log = process::log_path(&self.state_dir, &c.name);
        let (pid, child) = process::spawn_in(&ns, &c.cmd, &log)?;
        c.process = Some(pid);
        Ok(Some(child))
    }

    /// A new endpoint of container `c` on network `n` (`netd network connect`, a healed
    /// one at start), with its own link names (`plan.id`).
    pub(super) async fn attach_endpoint(
        &mut self,
        c: &Container,
        n: &Network,
        plan: &EndpointPlan<'_>,
    ) -> Result<Endpoint> {
        let ns = self.open_sandbox(c)?;
        self.wire_endpoint(c, n, plan, &ns).await
    }

    /// Wire `plan`'s endpoint on network `n` into container `c`'s namespace: planned by
    /// the network's driver, applied by the executor, which undoes it in reverse if a
    /// step fails.
    pub(super) async fn wire_endpoint(
        &mut self,
        c: &Container,
        n: &Network,
        plan: &EndpointPlan<'_>,
        ns: &File,
    ) -> Result<Endpoint> {
        let (ep, steps) = self.plan_endpoint(n, plan, PeerGoes::IntoContainer).await?;
        self.apply_plan(Some(ns), &steps)
            .await
            .with_context(|| format!("attach endpoint to network {}", n.name))?;
        let ep = self.endpoint_applied(c, ep).await?;
        info!("container {}: {}", c.name, describe(&ep));
        Ok(ep)
    }

    /// What attaching `plan`'s endpoint to network `n` takes (its driver's `attach`),
    /// and the endpoint as it is to be recorded once the plan is applied
    /// (`endpoint_applied` completes it). A bridge endpoint's container end goes into the
    /// container's namespace, or stays in the node's for an engine to take (`peer_goes`).
    pub(super) async fn plan_endpoint(
        &self,
        n: &Network,
        plan: &EndpointPlan<'_>,
        peer_goes: PeerGoes,
    ) -> Result<(Endpoint, Vec<plan::Planned>)> {
        let p = plan::EndpointPlan {
            id: plan.id,
            ip: plan.ip,
            mac: plan.mac,
            ifname: plan.ifname,
            prefix: n.subnet.map_or(0, |s| s.prefix_len()),
            mtu: n.mtu,
            gateway: n
                .gateway
                .filter(|_| plan.default_route.v4 && plan.ip.is_some()),
            ipv6: plan.ip6.zip(n.ipv6).map(|(ip, v6)| plan::Inside6 {
                ip,
                prefix: v6.subnet.prefix_len(),
                link_local: link_local_for(plan.mac),
                gateway: plan.default_route.v6.then_some(v6.gateway),
            }),
        };
        let mut ep = Endpoint {
            network: n.name.clone(),
            ip: plan.ip,
            ip6: plan.ip6,
            mac: endpoint::format_mac(&plan.mac),
            ifname: plan.ifname.to_string(),
            host_veth: String::new(),
            host_ifindex: 0,
        };
        let d = driver::of(n);
        if peer_goes == PeerGoes::Stays && !d.capabilities().isolation {
            bail!(
                "network {}: a {} interface goes into a namespace netd opened",
                n.name,
                d.name()
            );
        }
        // What netd's programs are to enforce for it, if the driver's traffic passes them
        // (observed: the bridge's ifindex).
        let police = if d.capabilities().isolation {
            ep.host_veth = endpoint::host_veth_name(plan.id);
            let info = self.endpoint_info(n, &ep).await?;
            Some((info, Self::endpoint6_info(n, &ep)))
        } else {
            None
        };
        Ok((ep, d.attach(n, &p, police, peer_goes)))
    }

    /// An endpoint whose plan was applied, with its host end's index as recorded (by
    /// which it is forgotten later). If that end vanished meanwhile, the endpoint is
    /// detached and the error returned.
    pub(super) async fn endpoint_applied(
        &mut self,
        c: &Container,
        mut ep: Endpoint,
    ) -> Result<Endpoint> {
        if ep.host_veth.is_empty() {
            return Ok(ep);
        }
        match self.netlink.link_index(&ep.host_veth).await {
            Ok(Some(index)) => {
                ep.host_ifindex = index;
                Ok(ep)
            }
            lookup => {
                let e = match lookup {
                    Err(e) => e,
                    _ => anyhow!("{} vanished", ep.host_veth),
                };
                let left = self.detach_endpoint(c, &ep).await;
                Err(left
                    .after(e)
                    .context(format!("attach endpoint to network {}", ep.network)))
            }
        }
    }

    /// The plan steps detaching endpoint `ep` of container `c` takes (`NetworkDriver::detach`).
    pub(super) fn detach_steps(&self, c: &Container, ep: &Endpoint) -> Vec<plan::Step> {
        let n = self.state.networks.get(&ep.network);
        // A network removed meanwhile: known by what the endpoint is.
        let d: &dyn NetworkDriver = match n {
            Some(n) => driver::of(n),
            None if ep.host_veth.is_empty() => &driver::macvlan::Macvlan,
            None => &driver::bridge::Bridge,
        };
        d.detach(n, ep, self.sandboxes.contains_key(&c.id))
    }

    /// Run teardown steps for container `c` (in its namespace, if it is still held),
    /// every one tried; what could not be undone is returned.
    pub(super) async fn teardown_steps(
        &mut self,
        c: &Container,
        steps: &[plan::Step],
    ) -> Leftovers {
        let node = LiveNode {
            netlink: &self.netlink,
            container: self.sandboxes.get(&c.id),
        };
        let left = executor::teardown(
            &node,
            &mut self.datapath,
            &format!("container {}", c.name),
            steps,
        )
        .await;
        self.report_purged(Some(c));
        left
    }

    /// Detach one endpoint, tolerant of parts already gone: every step tried; what
    /// could not be undone is returned.
    pub(super) async fn detach_endpoint(&mut self, c: &Container, ep: &Endpoint) -> Leftovers {
        let steps = self.detach_steps(c, ep);
        self.teardown_steps(c, &steps).await
    }

    /// Remove a container; what could not be undone comes back as warnings (the record
    /// goes all the same: the next start's reconcile removes the leftovers).
    pub(super) async fn remove_container(
        &mut self,
        name: &str,
        force: bool,
    ) -> Result<Vec<String>, ApiError> {
        let c = self.container(name)?.clone();
        if let Sandbox::Docker(d) = &c.sandbox {
            return Err(ApiError::forbidden(anyhow!(
                "{name} is an endpoint of a Docker container (sandbox {}): remove the container with docker rm",
                d.sandbox_key
                    .as_deref()
                    .map_or("not joined yet", crate::docker_plugin::sandbox_id)
            )));
        }
        if matches!(c.sandbox, Sandbox::Cni(_)) {
            return Err(super::networks::refuse_cni(&c, "removed by netd rm"));
        }
        if c.status == Status::Running && !force {
            return Err(ApiError::conflict(anyhow!(
                "cannot remove container \"{name}\": container is running: stop the container before removing or force remove (netd rm -f {name})"
            )));
        }
        let joined: Vec<&str> = self
            .state
            .containers
            .values()
            .filter(|o| {
                o.sandbox
                    == Sandbox::Container {
                        name: name.to_string(),
                    }
            })
            .map(|o| o.name.as_str())
            .collect();
        if !joined.is_empty() {
            return Err(ApiError::conflict(anyhow!(
                "cannot remove container \"{name}\": containers {} share its network namespace; remove them first",
                joined.join(", ")
            )));
        }
        let left = self.teardown(&c).await;
        self.sandboxes.remove(&c.id);
        self.remove_log(&c);
        self.state.containers.remove(name);
        self.save()?;
        if left.is_empty() {
            info!("container {name}: removed");
        } else {
            warn!("container {name}: removed, with leftovers");
        }
        Ok(left.into_warnings())
    }

    /// Undo everything a container owns; tolerant of parts that are already gone. Every
    /// step is tried; what could not be undone is returned.
    pub(super) async fn teardown(&mut self, c: &Container) -> Leftovers {
        let detached = c
            .endpoints
            .iter()
            .map(|ep| self.detach_steps(c, ep))
            .collect();
        let steps = plan::remove_networking(&c.ports, detached);
        let left = self.teardown_steps(c, &steps).await;
        if let Some(p) = c.process {
            process::signal(p, libc::SIGKILL);
        }
        if let Sandbox::Holder { holder } = &c.sandbox {
            // Everything in the container's own namespace goes with it (exec sessions,
            // a command started by a daemon that died before recording it).
            if process::is_alive(*holder)
                && let Some(ns) = process::netns_id(&self.netns_path(c))
            {
                process::kill_namespace(ns);
            }
            process::signal(*holder, libc::SIGKILL);
        }
        left
    }

    /// A removed container's output goes with it. Only containers netd runs have one (the
    /// name of a CNI or Docker record is not one of netd's checked container names).
    pub(super) fn remove_log(&self, c: &Container) {
        if matches!(c.sandbox, Sandbox::Cni(_) | Sandbox::Docker(_)) {
            return;
        }
        let log = process::log_path(&self.state_dir, &c.name);
        if let Err(e) = process::remove_log(&log) {
            warn!("container {}: remove log {}: {e}", c.name, log.display());
        }
    }

    /// The families a spec without a host address publishes on for an endpoint with these
    /// families: IPv6 too for one of IPv4 only with NAT46 on (`[::]:8080` then reaches
    /// its IPv4 address). An IPv6-only endpoint is published on IPv6 only (Docker proxies
    /// IPv4 to it in userland; netd has no proxy).
    pub(super) fn publish_families(&self, ipv4: bool, ipv6: bool) -> Families {
        Families {
            ipv4,
            ipv6: ipv6 || (ipv4 && self.datapath.nat46()),
        }
    }

    /// Bindings for `specs`, for an endpoint of `families`, none taken already.
    pub(super) fn bind_ports(
        &mut self,
        specs: &[PortSpec],
        families: Families,
    ) -> Result<Vec<PortBinding>> {
        let existing: Vec<PortBinding> = self
            .state
            .containers
            .values()
            .flat_map(|c| c.ports.iter().copied())
            .collect();
        let sockets = node_sockets();
        let in_cluster = self.cluster.is_some();
        ports::bind(specs, families, &mut self.ephemeral, |candidate, chosen| {
            if in_cluster
                && let Some(why) =
                    crate::cluster::reserved_port(candidate.proto, candidate.host_port)
            {
                return Some(why);
            }
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
                        "port is already in use by a process on the node ({}/{})",
                        s.proto,
                        ports::host_end(s.addr, s.port)
                    )
                })
        })
    }
}

/// Reap a child we never wait on otherwise (the holder), so it leaves no zombie.
fn reap(mut child: Child) {
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
}

/// Open a client's `--netns` path: off the async workers and outside the daemon's lock,
/// bounded in time (a path on a hung file system must not hold up the API).
/// `field` names where the path came from in errors (`--netns`, `CNI_NETNS`). With
/// `seen_by`, the path is resolved as that process sees it (its mount namespace).
pub(super) async fn open_client_netns(
    path: &Path,
    field: &str,
    seen_by: Option<u32>,
) -> Result<File, ApiError> {
    let owned = path.to_path_buf();
    let open = tokio::task::spawn_blocking(move || match seen_by {
        Some(pid) => netns::open_path_seen_by(pid, &owned),
        None => netns::open_path(&owned),
    });
    let bad =
        |why: String| ApiError::bad_request(anyhow!("invalid {field} {}: {why}", path.display()));
    match tokio::time::timeout(std::time::Duration::from_secs(10), open).await {
        Ok(Ok(Ok(ns))) => Ok(ns),
        Ok(Ok(Err(e))) => Err(bad(format!("{e:#}"))),
        Ok(Err(e)) => Err(ApiError::from(anyhow!(
            "open {field} {}: {e}",
            path.display()
        ))),
        Err(_) => Err(bad("opening it took longer than 10 s".into())),
    }
}
