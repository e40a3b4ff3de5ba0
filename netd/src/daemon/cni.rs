//! CNI attachments (`netd-cni`): a runtime's namespace wired to a netd network as
//! `--netns` wires one, keyed by (network, container ID, interface) and persisted as a
//! container record whose sandbox is `Sandbox::Cni`. `ADD` builds in the order
//! `teardown` undoes, `DEL` is idempotent, `CHECK` compares the live interface with what
//! the runtime recorded, `GC` removes what the runtime no longer knows.

use std::{
    collections::BTreeSet,
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, anyhow};
use ipnet::IpNet;
use log::{info, warn};

use super::{Inner, containers::EndpointPlan, random_id, unix_now};
use crate::{
    api::{ApiError, CniAttachRequest, CniAttachmentView, CniCheckRequest, CniGcRequest},
    cni::{self, ValidAttachment},
    docker_plugin::short_id,
    endpoint, ipam,
    netlink::Netlink,
    netns,
    pending_del::PendingDel,
    ports::{PortBinding, PortSpec},
    process::Pidfd,
    state::{CniAttachment, Container, Network, Sandbox, Status},
};

/// The container ID and interface of a request, as the spec allows them (they name
/// records and links; `netd-cni` checks them too, the daemon trusts no client).
pub(super) fn check_key(container_id: &str, ifname: &str) -> Result<(), ApiError> {
    cni::check_container_id(container_id)
        .and_then(|()| cni::check_ifname(ifname))
        .map_err(|e| ApiError::bad_request(anyhow!("{}", e.msg)))
}

/// The process that sent an `ADD` or `CHECK` (`netd-cni`): its pid, where the paths it
/// sends are resolved, and its descriptor, which tells whether it is still waiting.
pub(super) struct Caller {
    pub pid: u32,
    pidfd: Pidfd,
}

impl Caller {
    pub fn of(pid: Option<u32>) -> Result<Caller, ApiError> {
        let pid = pid.filter(|p| *p != 0).ok_or_else(|| {
            ApiError::bad_request(anyhow!(
                "netd cannot tell which process sent the request (it is in a PID namespace netd does not see), so not how it sees CNI_NETNS: run netd-cni where netd sees its processes"
            ))
        })?;
        let pidfd = Pidfd::open(pid)
            .map_err(|e| ApiError::bad_request(anyhow!("the calling process {pid}: {e}")))?;
        Ok(Caller { pid, pidfd })
    }

    /// The runtime gave up on the call (the plugin is gone): nothing is to be committed.
    fn gave_up(&self) -> bool {
        self.pidfd.exited()
    }
}

/// The attachment's key.
fn key_of(c: &Container) -> Option<(&str, &str, &str)> {
    match &c.sandbox {
        Sandbox::Cni(a) => Some((
            c.network_mode.as_str(),
            a.container_id.as_str(),
            a.ifname.as_str(),
        )),
        _ => None,
    }
}

impl Inner {
    /// The record name of an attachment, by its key.
    pub(super) fn cni_record(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Option<String> {
        self.cni_attachment(network, container_id, ifname)
            .map(|c| c.name.clone())
    }

    /// The record of an attachment, by its key.
    fn cni_attachment(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Option<&Container> {
        self.state
            .containers
            .values()
            .find(|c| key_of(c) == Some((network, container_id, ifname)))
    }

    /// `ADD`: wire `ns` (the runtime's `CNI_NETNS`, opened outside the lock) to the
    /// network, publish the ports, record it. A failure leaves nothing behind.
    pub(super) async fn cni_add(
        &mut self,
        req: CniAttachRequest,
        ns: File,
        caller: Caller,
    ) -> Result<CniAttachmentView, ApiError> {
        // An overlay of the cluster is set up on the node with its first container.
        self.overlay_here(&req.network).await?;
        let n = self.network(&req.network)?.clone();
        super::networks::refuse_if_docker(&n, "attached to through CNI")?;
        if n.is_macvlan() {
            return Err(ApiError::bad_request(anyhow!(
                "network: {} is a macvlan network; netd-cni attaches to bridge networks",
                n.name
            )));
        }
        if let Some(c) = self.state.containers.values().find(|c| match &c.sandbox {
            Sandbox::Cni(a) => a.container_id == req.container_id && a.ifname == req.ifname,
            _ => false,
        }) {
            return Err(ApiError::conflict(anyhow!(
                "container {} already has interface {} (attachment {} on network {}): DEL it first",
                req.container_id,
                req.ifname,
                c.name,
                c.network_mode
            )));
        }
        let (dev, ino) = netns::id(&ns).map_err(anyhow::Error::from)?;
        self.check_cni_namespace(&req, (dev, ino))?;
        let cookie = netns::cookie(&ns)?;
        let specs = req
            .ports
            .iter()
            .map(|s| s.parse::<PortSpec>())
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(ApiError::bad_request)?;
        if n.internal && !specs.is_empty() {
            return Err(ApiError::bad_request(anyhow!(
                "cannot publish ports on internal network {}: it has no way in from outside",
                n.name
            )));
        }
        self.refresh_node_addrs().await?;
        let families = self.publish_families(n.subnet.is_some(), n.ipv6.is_some());
        let ports = self
            .bind_ports(&specs, families)
            .map_err(ApiError::conflict)?;
        let id = random_id();
        let name = self.cni_record_name(&req.container_id, &req.ifname, &id);
        let (ip, ip6) = self
            .cni_addresses(&n, req.ip.as_deref(), req.ip6.as_deref(), &name)
            .await?;
        let mac = match &req.mac {
            Some(m) => endpoint::parse_mac(m)
                .ok_or_else(|| ApiError::bad_request(anyhow!("invalid MAC address {m:?}")))?,
            None => self.new_mac(&n, ip)?,
        };
        // The namespace's first attachment with a way out carries the default route.
        let default_route = !n.internal
            && !self.state.containers.values().any(|c| match &c.sandbox {
                Sandbox::Cni(a) => a.container_id == req.container_id && a.default_route,
                _ => false,
            });
        let mut c = Container {
            id: id.clone(),
            name: name.clone(),
            network_mode: n.name.clone(),
            sandbox: Sandbox::Cni(CniAttachment {
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
                cni_network: req.cni_network.clone(),
                path: req.netns.clone(),
                dev,
                ino,
                cookie: Some(cookie),
                default_route,
                labels: req.labels.clone(),
            }),
            endpoints: Vec::new(),
            cmd: Vec::new(),
            process: None,
            status: Status::Running,
            ports,
            created: unix_now(),
        };
        self.sandboxes.insert(id.clone(), ns);
        let wired = match self
            .wire_cni(&mut c, &n, (ip, ip6), mac, default_route)
            .await
        {
            Ok(()) => self.cni_view(&c).await,
            Err(e) => Err(e),
        };
        let wired = wired.and_then(|view| {
            if caller.gave_up() {
                anyhow::bail!("netd-cni exited before the attachment was made (the runtime gave up on the ADD)");
            }
            Ok(view)
        });
        match wired {
            Ok(view) => {
                if let Some(net) = self.state.networks.get_mut(&n.name) {
                    net.note_allocated(ip, ip6);
                }
                self.state.containers.insert(name.clone(), c.clone());
                let saved = self.save().and_then(|()| {
                    // This ADD supersedes a DEL of the same key left while netd was down.
                    Ok(self
                        .pending_del(&req.network, &req.container_id, &req.ifname)
                        .clear(&self.pending_dels)?)
                });
                if let Err(e) = saved {
                    let c = self.state.containers.remove(&name).expect("inserted above");
                    let left = self.teardown(&c).await;
                    self.sandboxes.remove(&id);
                    if let Err(e) = self.save() {
                        warn!(
                            "CNI attachment {name}: rolled back, but the state was not saved: {e:#}"
                        );
                    }
                    return Err(ApiError::from(left.after(e)));
                }
                info!(
                    "CNI attachment {name}: container {} {} on {} at {}, ports [{}]",
                    req.container_id,
                    req.ifname,
                    n.name,
                    c.endpoints
                        .first()
                        .map(|e| e.addresses())
                        .unwrap_or_default(),
                    c.ports
                        .iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Ok(view)
            }
            Err(e) => {
                let left = self.teardown(&c).await;
                self.sandboxes.remove(&id);
                Err(ApiError::from(left.after(e).context(format!(
                    "attach container {} {} to {}",
                    req.container_id, req.ifname, n.name
                ))))
            }
        }
    }

    async fn wire_cni(
        &mut self,
        c: &mut Container,
        n: &Network,
        (ip, ip6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
        mac: [u8; 6],
        default_route: bool,
    ) -> anyhow::Result<()> {
        let ns = self.open_sandbox(c)?;
        let ifname = match &c.sandbox {
            Sandbox::Cni(a) => a.ifname.clone(),
            _ => anyhow::bail!("{} is not a CNI attachment", c.name),
        };
        let id = c.id.clone();
        let plan = EndpointPlan {
            id: &id,
            ip,
            ip6,
            mac,
            ifname: &ifname,
            default_route: super::containers::DefaultRoutes::both(default_route),
        };
        let (ep, attach) = self
            .plan_endpoint(n, &plan, crate::plan::PeerGoes::IntoContainer)
            .await?;
        let steps = crate::plan::create_container(
            crate::plan::Namespace::Given,
            attach,
            &c.ports,
            Some(crate::plan::PublishTo {
                ip,
                ip6: ep.ip6,
                via: &ep.host_veth,
            }),
        );
        self.apply_plan(Some(&ns), &steps)
            .await
            .with_context(|| format!("attach {} to network {}", c.name, n.name))?;
        let ep = self.endpoint_applied(c, ep).await?;
        c.endpoints.push(ep);
        Ok(())
    }

    /// A namespace may carry several attachments of one container (one per interface),
    /// never another container's, nor one netd manages otherwise.
    fn check_cni_namespace(&self, req: &CniAttachRequest, ns: netns::NsId) -> Result<(), ApiError> {
        let bad = |why: &str| {
            Err(ApiError::bad_request(anyhow!(
                "invalid CNI_NETNS {}: {why}",
                req.netns.display()
            )))
        };
        if netns::is_initial(ns) {
            return bad("that is the host's initial network namespace");
        }
        if netns::id(&self.node_ns).ok() == Some(ns) {
            return bad("that is the node's own network namespace");
        }
        for c in self.state.containers.values() {
            let same_container =
                matches!(&c.sandbox, Sandbox::Cni(a) if a.container_id == req.container_id);
            if let Some(held) = self.sandboxes.get(&c.id)
                && netns::id(held).ok() == Some(ns)
                && !same_container
            {
                return Err(ApiError::conflict(anyhow!(
                    "invalid CNI_NETNS {}: that namespace is already attached to {}",
                    req.netns.display(),
                    c.name
                )));
            }
        }
        Ok(())
    }

    /// A static address anywhere in the network's range (runtimes give `--ip` on any
    /// network), or the next free one; on an overlay, as for any container there (the
    /// node's blocks, recorded for the cluster under `name`).
    async fn cni_addresses(
        &self,
        n: &Network,
        wanted: Option<&str>,
        wanted6: Option<&str>,
        name: &str,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), ApiError> {
        if n.overlay.is_some() {
            let (ip, ip6) = self.overlay_address(n, wanted, wanted6, name).await?;
            return Ok((Some(ip), ip6));
        }
        let ip6 = self.choose_ip6(n, wanted6)?;
        let taken = self.taken_addresses(n);
        let ip = match (Self::pool(n), wanted) {
            (None, Some(ip)) => {
                return Err(ApiError::bad_request(anyhow!(
                    "invalid static address {ip} (runtimeConfig.ips or CNI_ARGS IP=): network {} is IPv6-only (--ipv4=false)",
                    n.name
                )));
            }
            (None, None) => None,
            (Some(pool), Some(ip)) => Some(ipam::check_static(&pool, ip, &taken).map_err(|e| {
                ApiError::conflict(
                    e.context("the static address (runtimeConfig.ips or CNI_ARGS IP=)"),
                )
            })?),
            (Some(pool), None) => {
                Some(ipam::allocate(&pool, n.last_allocated, &taken).map_err(ApiError::conflict)?)
            }
        };
        Ok((ip, ip6))
    }

    /// `SHORTID-IFNAME`, longer when another container's ID starts the same.
    fn cni_record_name(&self, container_id: &str, ifname: &str, id: &str) -> String {
        let short = format!("{}-{ifname}", short_id(container_id));
        if !self.state.containers.contains_key(&short) {
            return short;
        }
        // `check_key` keeps both to ASCII, the interface name to 15 bytes.
        let keep = 63usize.saturating_sub(ifname.len());
        let long = format!("{}-{ifname}", &container_id[..container_id.len().min(keep)]);
        if self.state.containers.contains_key(&long) {
            format!("cni-{id}-{ifname}")
        } else {
            long
        }
    }

    async fn cni_view(&self, c: &Container) -> anyhow::Result<CniAttachmentView> {
        let (Sandbox::Cni(a), Some(ep)) = (&c.sandbox, c.primary()) else {
            anyhow::bail!("{} is not a CNI attachment", c.name);
        };
        let n = self
            .state
            .networks
            .get(&ep.network)
            .with_context(|| format!("network {} is gone", ep.network))?;
        let mac_of = async |link: &str| -> anyhow::Result<String> {
            Ok(self
                .netlink
                .link_mac(link)
                .await?
                .map(|m| endpoint::format_mac(&m))
                .unwrap_or_default())
        };
        Ok(CniAttachmentView {
            name: c.name.clone(),
            network: n.name.clone(),
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
            netns: a.path.clone(),
            ip: ep.ip,
            prefix_len: n.subnet.map_or(0, |s| s.prefix_len()),
            gateway: n.gateway.filter(|_| ep.ip.is_some()),
            ip6: ep
                .ip6
                .zip(n.ipv6)
                .map(|(ip, v6)| (ip, v6.subnet.prefix_len(), v6.gateway)),
            default_route: a.default_route,
            mac: ep.mac.clone(),
            bridge: n.bridge.clone(),
            bridge_mac: mac_of(&n.bridge).await?,
            host_veth: ep.host_veth.clone(),
            host_mac: mac_of(&ep.host_veth).await?,
            ports: c.ports.clone(),
            labels: a.labels.clone(),
        })
    }

    /// `DEL`: remove the attachment if there is one. Whether there was one, and what
    /// could not be undone.
    pub(super) async fn cni_del(
        &mut self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(bool, Vec<String>), ApiError> {
        self.pending_del(network, container_id, ifname)
            .clear(&self.pending_dels)
            .map_err(anyhow::Error::from)?;
        let Some(c) = self.cni_attachment(network, container_id, ifname).cloned() else {
            return Ok((false, Vec::new()));
        };
        let warnings = self.remove_cni_record(&c).await;
        self.save()?;
        Ok((true, warnings))
    }

    fn pending_del(&self, network: &str, container_id: &str, ifname: &str) -> PendingDel {
        PendingDel {
            network: network.to_string(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        }
    }

    /// Carry out the `DEL`s `netd-cni` left while the daemon was down (at start, before
    /// anything is rebuilt), then forget them.
    pub(super) async fn carry_out_pending_dels(&mut self) {
        let (dels, strangers) = PendingDel::list(&self.pending_dels);
        for name in strangers {
            warn!(
                "{}: {name} is not a DEL netd-cni left; ignored",
                self.pending_dels.display()
            );
        }
        for d in dels {
            if let Some(c) = self
                .cni_attachment(&d.network, &d.container_id, &d.ifname)
                .cloned()
            {
                info!(
                    "CNI attachment {}: DEL of container {} {} was left while netd was down; carrying it out",
                    c.name, d.container_id, d.ifname
                );
                self.remove_cni_record(&c).await;
            }
            if let Err(e) = d.clear(&self.pending_dels) {
                warn!(
                    "{}: forget the DEL of {} {}: {e}",
                    self.pending_dels.display(),
                    d.container_id,
                    d.ifname
                );
            }
        }
    }

    async fn remove_cni_record(&mut self, c: &Container) -> Vec<String> {
        let left = self.teardown(c).await;
        self.sandboxes.remove(&c.id);
        self.state.containers.remove(&c.name);
        let warnings = left.into_warnings();
        if warnings.is_empty() {
            info!("CNI attachment {}: removed", c.name);
        }
        for w in &warnings {
            warn!("CNI attachment {}: {w}", c.name);
        }
        warnings
    }

    /// `CHECK`: the attachment is there, in the same namespace, and its interface, address,
    /// default route and ports are what `ADD` made and the runtime recorded.
    pub(super) async fn cni_check(&self, req: CniCheckRequest, ns: File) -> Result<(), ApiError> {
        let a = &req.attach;
        let c = self
            .cni_attachment(&a.network, &a.container_id, &a.ifname)
            .ok_or_else(|| {
                ApiError::not_found(anyhow!(
                    "no attachment of container {} {} on network {}",
                    a.container_id,
                    a.ifname,
                    a.network
                ))
            })?;
        let mismatch = |what: String| Err(ApiError::conflict(anyhow!("{}: {what}", c.name)));
        let Sandbox::Cni(rec) = &c.sandbox else {
            unreachable!("cni_attachment finds CNI records");
        };
        if netns::id(&ns).ok() != Some((rec.dev, rec.ino)) {
            return mismatch(format!(
                "CNI_NETNS {} is not the namespace it was attached in",
                a.netns.display()
            ));
        }
        let Some(ep) = c.primary() else {
            return mismatch("it has no interface".into());
        };
        // The address the runtime recorded: the IPv4 one, or an IPv6-only network's IPv6 one.
        let n = self.network(&a.network)?;
        let given = match req.ip {
            IpAddr::V4(_) => ep
                .ip
                .map(IpAddr::from)
                .zip(n.subnet.map(|s| s.prefix_len())),
            IpAddr::V6(_) => ep
                .ip6
                .map(IpAddr::from)
                .zip(n.ipv6.map(|v6| v6.subnet.prefix_len())),
        };
        if given != Some((req.ip, req.prefix_len)) {
            return mismatch(format!(
                "address {}/{} recorded, netd gave {}",
                req.ip,
                req.prefix_len,
                ep.addresses()
            ));
        }
        let ip = req.ip;
        let inside = Netlink::connect_in(&self.open_sandbox(c)?)?;
        let index = inside.link_index(&a.ifname).await?.ok_or_else(|| {
            ApiError::conflict(anyhow!("{}: interface {} is gone", c.name, a.ifname))
        })?;
        let live_mac = inside
            .link_mac(&a.ifname)
            .await?
            .map(|m| endpoint::format_mac(&m));
        if live_mac.as_deref() != Some(ep.mac.as_str())
            || req
                .mac
                .as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(&ep.mac))
        {
            return mismatch(format!(
                "interface {} has MAC {}, {} recorded",
                a.ifname,
                live_mac.unwrap_or_default(),
                req.mac.as_deref().unwrap_or(&ep.mac)
            ));
        }
        let (addresses, has_default) = on_link(&inside, index, ip).await?;
        if !addresses
            .iter()
            .any(|net| net.addr() == ip && net.prefix_len() == req.prefix_len)
        {
            return mismatch(format!(
                "interface {} no longer has {ip}/{}",
                a.ifname, req.prefix_len
            ));
        }
        if req.default_route && !has_default {
            return mismatch(format!("the default route via {} is gone", a.ifname));
        }
        // netd-cni sends specs with their host ports: they expand to the same bindings.
        let families = self.publish_families(ep.ip.is_some(), ep.ip6.is_some());
        let asked = a
            .ports
            .iter()
            .map(|s| s.parse::<PortSpec>())
            .collect::<anyhow::Result<Vec<_>>>()
            .and_then(|specs| {
                crate::ports::bind(&specs, families, &mut Default::default(), |_, _| None)
            });
        let asked: BTreeSet<PortBinding> = match asked {
            Ok(bindings) => bindings.into_iter().collect(),
            Err(e) => return mismatch(format!("asked for ports [{}]: {e:#}", a.ports.join(", "))),
        };
        let recorded: BTreeSet<PortBinding> = c.ports.iter().copied().collect();
        if asked != recorded {
            let list = |bs: &BTreeSet<PortBinding>| {
                bs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return mismatch(format!(
                "published ports [{}], asked for [{}]",
                list(&recorded),
                list(&asked)
            ));
        }
        for b in &c.ports {
            if !self.datapath.is_published(b, ep.ip, ep.ip6)? {
                return mismatch(format!("port {b} is missing from the data path"));
            }
        }
        Ok(())
    }

    /// `GC`: remove the network's attachments that are not in `valid`. The names removed.
    pub(super) async fn cni_gc(
        &mut self,
        req: CniGcRequest,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        self.network(&req.network)?;
        let valid: BTreeSet<ValidAttachment> = req.valid.into_iter().collect();
        // A runtime's GC covers its own CNI network: another runtime (or configuration)
        // attaching to the same netd network lists its attachments in a GC of its own.
        // A record of the first layout (no CNI network) is another runtime's as likely as
        // this one's: no GC removes it (DEL does).
        let covers = |a: &CniAttachment| match (&a.cni_network, &req.cni_network) {
            (Some(theirs), Some(asked)) => theirs == asked,
            (None, Some(_)) => false,
            _ => true,
        };
        let stale: Vec<Container> = self
            .state
            .containers
            .values()
            .filter(|c| match &c.sandbox {
                Sandbox::Cni(a) => {
                    c.network_mode == req.network
                        && covers(a)
                        && !valid.contains(&ValidAttachment {
                            container_id: a.container_id.clone(),
                            ifname: a.ifname.clone(),
                        })
                }
                _ => false,
            })
            .cloned()
            .collect();
        let mut warnings = Vec::new();
        for c in &stale {
            warnings.extend(self.remove_cni_record(c).await);
        }
        if !stale.is_empty() {
            self.save()?;
        }
        Ok((stale.into_iter().map(|c| c.name).collect(), warnings))
    }
}

/// The addresses of `family`'s family on link `index` of a namespace, and whether the
/// link carries that family's default route.
async fn on_link(
    inside: &Netlink,
    index: u32,
    family: IpAddr,
) -> anyhow::Result<(Vec<IpNet>, bool)> {
    let (addresses, defaults) = match family {
        IpAddr::V4(_) => (
            widen(inside.ipv4_addresses().await?),
            default_links(inside.ipv4_routes().await?),
        ),
        IpAddr::V6(_) => (
            widen(inside.ipv6_addresses().await?),
            default_links(inside.ipv6_routes().await?),
        ),
    };
    let on_it = addresses.into_iter().filter(|(i, _)| *i == index);
    Ok((
        on_it.map(|(_, n)| n).collect(),
        defaults.contains(&Some(index)),
    ))
}

/// The links the default routes among `routes` leave by.
fn default_links<N: Into<IpNet>>(routes: Vec<(N, Option<u32>)>) -> Vec<Option<u32>> {
    routes
        .into_iter()
        .filter_map(|(dst, oif)| (dst.into().prefix_len() == 0).then_some(oif))
        .collect()
}

fn widen<N: Into<IpNet>>(addresses: Vec<(u32, N)>) -> Vec<(u32, IpNet)> {
    addresses.into_iter().map(|(i, n)| (i, n.into())).collect()
}
