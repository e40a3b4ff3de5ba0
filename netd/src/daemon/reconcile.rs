//! Startup: make the node match the state. What the state says must exist is recreated if
//! missing (a bridge, a container's veth, a map entry); what netd made and no longer
//! needs is removed (veths and namespace holders left by a daemon killed half-way,
//! entries of endpoints and ports that no container owns). Containers whose namespace is
//! gone are removed.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use log::{info, warn};

use super::{DEFAULT_NETWORK, Inner, containers::EndpointPlan, repairs, unix_now};
use crate::{
    ipam, netns,
    network_request::{AddressFlags, DefaultIpv6},
    ports::PortBinding,
    process,
    state::{Container, Network, Network6, ProcessId, Sandbox, Status},
    sysctl,
};

/// How the log names a network's IPv6 side.
fn describe6(v6: Option<&Network6>) -> String {
    match v6 {
        Some(v6) => format!(", IPv6 subnet {}, gateway {}", v6.subnet, v6.gateway),
        None => String::new(),
    }
}

impl Inner {
    /// Returns the adopted processes of running containers, to be watched.
    pub(super) async fn reconcile(&mut self) -> Result<Vec<(String, ProcessId)>> {
        self.ensure_default_network().await?;
        let networks: Vec<Network> = self.state.networks.values().cloned().collect();
        for n in &networks {
            match self.realize_network(n).await {
                // A macvlan network whose parent is missing (a NIC renamed, one that
                // comes up later) fails alone: its containers' interfaces live in their
                // namespaces; the rest of the node starts.
                Err(e) if n.is_macvlan() => warn!("{e:#}; its containers may be cut off"),
                other => other?,
            }
        }
        self.remove_dead_containers().await;
        self.carry_out_pending_dels().await;
        let mut adopted = Vec::new();
        let names: Vec<String> = self.state.containers.keys().cloned().collect();
        for name in names {
            self.heal_endpoints(&name).await?;
            let Some(c) = self.state.containers.get(&name).cloned() else {
                continue;
            };
            if let Some(primary) = c.primary() {
                for b in &c.ports {
                    self.datapath
                        .publish(b, primary.ip, primary.ip6, primary.host_ifindex)?;
                }
            }
            if let (Status::Running, Some(p)) = (&c.status, c.process) {
                if process::is_alive(p) {
                    info!("container {name}: adopted (pid {})", p.pid);
                    adopted.push((name.clone(), p));
                } else if let Some(c) = self.state.containers.get_mut(&name) {
                    c.status = Status::Exited { code: None };
                }
            }
        }
        self.remove_leftovers().await?;
        self.refresh_node_addrs().await?;
        Ok(adopted)
    }

    async fn ensure_default_network(&mut self) -> Result<()> {
        if self.state.networks.contains_key(DEFAULT_NETWORK) {
            return self.align_default_ipv6().await;
        }
        let mut in_use: Vec<ipnet::Ipv4Net> = self
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
                .filter(|(_, n)| !n.addr().is_loopback())
                .map(|(_, n)| n.trunc()),
        );
        in_use.extend(self.state.networks.values().filter_map(|n| n.subnet));
        let pool = ipam::default_pool(ipam::choose_subnet(&in_use)?);
        let ipv6 = self.default_network6().await?;
        let n = Network {
            macvlan: None,
            aux_addresses: Default::default(),
            id: super::random_id(),
            name: DEFAULT_NETWORK.into(),
            driver: "bridge".into(),
            bridge: DEFAULT_NETWORK.into(),
            subnet: Some(pool.subnet),
            gateway: Some(pool.gateway),
            ip_range: None,
            ipv6,
            internal: false,
            icc: true,
            masquerade: true,
            mtu: None,
            gateway_mode: Default::default(),
            options: Default::default(),
            tag: self
                .state
                .networks
                .values()
                .map(|n| n.tag)
                .max()
                .unwrap_or(0)
                + 1,
            last_allocated: None,
            created: unix_now(),
            docker_id: None,
            overlay: None,
        };
        info!(
            "network {}: created with subnet {}, gateway {}{}",
            n.name,
            pool.subnet,
            pool.gateway,
            describe6(n.ipv6.as_ref())
        );
        self.state.networks.insert(n.name.clone(), n);
        self.save()
    }

    /// The IPv6 side `--ipv6` and `--fixed-cidr-v6` ask the default network for, chosen
    /// or checked as a user network's.
    async fn default_network6(&mut self) -> Result<Option<Network6>> {
        let fixed = match self.default_ipv6 {
            DefaultIpv6::Off => return Ok(None),
            DefaultIpv6::Chosen => None,
            DefaultIpv6::Fixed(net) => Some(net.to_string()),
        };
        let flags = AddressFlags {
            subnet: fixed.as_deref(),
            ..AddressFlags::default()
        };
        let planned = self.plan_ipv6(flags, None).await.map_err(|e| e.error);
        planned.map(Some).context("--fixed-cidr-v6")
    }

    /// A default network kept from an earlier start gets the IPv6 the daemon's flags now
    /// ask for while no container is on it (its addresses would change under them);
    /// otherwise it keeps what it has, with a warning saying so.
    async fn align_default_ipv6(&mut self) -> Result<()> {
        let n = self.state.networks[DEFAULT_NETWORK].clone();
        let same = match (self.default_ipv6, n.ipv6) {
            (DefaultIpv6::Off, None) | (DefaultIpv6::Chosen, Some(_)) => true,
            (DefaultIpv6::Fixed(net), Some(v6)) => v6.subnet == net,
            _ => false,
        };
        if same {
            return Ok(());
        }
        let users: Vec<&str> = self
            .state
            .endpoints()
            .filter(|(_, e)| e.network == n.name)
            .map(|(c, _)| c.name.as_str())
            .collect();
        if !users.is_empty() {
            warn!(
                "network {}: keeps its IPv6 as it is ({}): the daemon's --ipv6/--fixed-cidr-v6 ask otherwise, but containers are on it ({}); remove them and restart to change it",
                n.name,
                match n.ipv6 {
                    Some(_) => describe6(n.ipv6.as_ref()).replacen(", ", "", 1),
                    None => "none".into(),
                },
                users.join(", ")
            );
            return Ok(());
        }
        // Its old IPv6 side goes: the bridge's addresses with IPv6 off (made again by its
        // set-up), its subnet in the data path with the reconcile's sweep.
        if let Some(n) = self.state.networks.get_mut(DEFAULT_NETWORK) {
            n.ipv6 = None;
        }
        sysctl::ipv6_off(&n.bridge)?;
        let ipv6 = self.default_network6().await?;
        info!(
            "network {}: IPv6 changed as the daemon's flags ask{}",
            n.name,
            match &ipv6 {
                Some(_) => describe6(ipv6.as_ref()),
                None => ": none".into(),
            }
        );
        if let Some(n) = self.state.networks.get_mut(DEFAULT_NETWORK) {
            n.ipv6 = ipv6;
        }
        self.save()
    }

    /// Open the network namespace of every container that has one of its own, the safe
    /// way a client's `--netns` is opened: a holder's through `/proc/PID/ns/net`, checked
    /// to still be that holder; a `--netns` path again, checked to be the same namespace
    /// (device and inode) as recorded. Why a namespace is gone, if it is.
    fn open_recorded_sandbox(&self, c: &Container) -> Result<Option<std::fs::File>, String> {
        match &c.sandbox {
            Sandbox::Holder { holder } => process::open_holder(*holder)
                .map(Some)
                .map_err(|e| format!("{e:#}")),
            // A runtime's path may live in the runtime's mount namespace only: the
            // namespace is looked for wherever a process or a bind mount keeps it.
            Sandbox::Cni(a) => netns::open_path(&a.path)
                .ok()
                .filter(|ns| netns::id(ns).ok() == Some((a.dev, a.ino)))
                .or_else(|| netns::find((a.dev, a.ino)))
                // The same inode may name a newer namespace: the cookie tells (when it
                // cannot be read, the namespace is kept: removing a live pod's network
                // is worse than keeping a dead one's until the runtime's DEL or GC).
                .filter(|ns| match (a.cookie, netns::cookie(ns)) {
                    (Some(recorded), Ok(now)) => recorded == now,
                    (Some(_), Err(e)) => {
                        warn!(
                            "container {}: read its namespace's cookie: {e:#}; keeping it",
                            c.name
                        );
                        true
                    }
                    (None, _) => true,
                })
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "no process is in it and no mount namespace has it mounted ({})",
                        a.path.display()
                    )
                }),
            Sandbox::External {
                path,
                dev,
                ino,
                cookie,
            } => {
                let ns = netns::open_path(path)
                    .map_err(|e| format!("{} cannot be opened: {e:#}", path.display()))?;
                match netns::id(&ns) {
                    Ok(id) if id == (*dev, *ino) => match (cookie, netns::cookie(&ns)) {
                        (Some(recorded), Ok(now)) if *recorded != now => Err(format!(
                            "{} now names a newer namespace with the same inode number",
                            path.display()
                        )),
                        (Some(_), Err(e)) => {
                            warn!(
                                "container {}: read its namespace's cookie: {e:#}; keeping it",
                                c.name
                            );
                            Ok(Some(ns))
                        }
                        _ => Ok(Some(ns)),
                    },
                    Ok(_) => Err(format!(
                        "{} now names another network namespace",
                        path.display()
                    )),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                }
            }
            // Docker's namespace is not netd's to open; a dead one shows as a missing veth.
            Sandbox::Host | Sandbox::Container { .. } | Sandbox::Docker(_) => Ok(None),
        }
    }

    /// Open every container's namespace; remove the containers whose namespace is gone
    /// (and those that joined one of them).
    async fn remove_dead_containers(&mut self) {
        let mut gone: BTreeMap<String, String> = BTreeMap::new();
        for c in self.state.containers.values() {
            match self.open_recorded_sandbox(c) {
                Ok(Some(ns)) => {
                    self.sandboxes.insert(c.id.clone(), ns);
                }
                Ok(None) => {}
                Err(why) => {
                    gone.insert(c.name.clone(), why);
                }
            }
        }
        // Joined containers follow their target, however deep.
        let gone = repairs::dead_containers(&self.state, gone);
        for (name, why) in gone {
            let Some(c) = self.state.containers.get(&name).cloned() else {
                continue;
            };
            warn!("container {name}: its network namespace is gone ({why}); removing it");
            self.repaired(
                &name,
                format!("removed: its network namespace is gone ({why})"),
            );
            self.teardown(&c).await;
            self.sandboxes.remove(&c.id);
            self.remove_log(&c);
            self.state.containers.remove(&name);
        }
    }

    /// Recreate a container's endpoints whose veth was deleted (deleting either end of a
    /// veth deletes both), and register all of them with the data path.
    async fn heal_endpoints(&mut self, name: &str) -> Result<()> {
        let c = self.state.containers[name].clone();
        for (i, ep) in c.endpoints.iter().enumerate() {
            let Some(n) = self.state.networks.get(&ep.network).cloned() else {
                warn!(
                    "container {name}: network {} is gone; dropping its endpoint",
                    ep.network
                );
                self.detach_endpoint(&c, ep).await;
                continue;
            };
            if n.is_macvlan() {
                if let Err(e) = self.heal_macvlan(&c, &n, i, ep).await {
                    warn!("container {name}: heal {} on {}: {e:#}", ep.ifname, n.name);
                }
                continue;
            }
            let present = self.netlink.link_index(&ep.host_veth).await? == Some(ep.host_ifindex);
            if !present && super::docker::is_docker(&c) {
                // Its container's namespace died (netd cannot make it again: Docker hands
                // a new one at the container's next start, with a new endpoint).
                warn!(
                    "Docker endpoint {name}: veth {} is gone with its container; forgetting the endpoint",
                    ep.host_veth
                );
                for w in self.teardown(&c).await.into_warnings() {
                    warn!("Docker endpoint {name}: {w}");
                }
                self.state.containers.remove(name);
                return Ok(());
            }
            let healed = if present {
                // Settings an older netd did not make (or someone undid).
                sysctl::ipv6_off(&ep.host_veth)?;
                self.netlink
                    .set_port_isolated(ep.host_ifindex, !n.icc)
                    .await?;
                let mut ep = ep.clone();
                if ep.mac.is_empty() {
                    // Upgraded from a layout that did not record it: the interface's own.
                    let inside = crate::netlink::Netlink::connect_in(&self.open_sandbox(&c)?)?;
                    if let Some(mac) = inside.link_mac(&ep.ifname).await? {
                        ep.mac = crate::endpoint::format_mac(&mac);
                    }
                }
                ep
            } else {
                warn!(
                    "container {name}: veth {} on {} is missing; recreating it",
                    ep.host_veth, n.name
                );
                self.repaired(
                    name,
                    format!("veth {} on {} recreated", ep.host_veth, n.name),
                );
                self.detach_endpoint(&c, ep).await;
                self.reattach(&c, &n, ep).await?
            };
            let info = self.endpoint_info(&n, &healed).await?;
            let info6 = Self::endpoint6_info(&n, &healed);
            // The IPv6 side first, as `Step::Police` does.
            self.datapath
                .register_endpoint6(healed.host_ifindex, info6.as_ref())?;
            self.datapath
                .attach_endpoint(&healed.host_veth, healed.host_ifindex, &info)?;
            if let Some(c) = self.state.containers.get_mut(name) {
                c.endpoints[i] = healed;
            }
        }
        let networks = &self.state.networks;
        if let Some(c) = self.state.containers.get_mut(name) {
            c.endpoints.retain(|e| networks.contains_key(&e.network));
        }
        Ok(())
    }

    /// A macvlan endpoint: its interface, recreated (same address and MAC) if it is gone
    /// from the container's namespace.
    async fn heal_macvlan(
        &mut self,
        c: &Container,
        n: &Network,
        i: usize,
        ep: &crate::state::Endpoint,
    ) -> Result<()> {
        let ns = self.open_sandbox(c)?;
        if crate::driver::macvlan::is_present(&ns, &ep.ifname).await? {
            return Ok(());
        }
        warn!(
            "container {}: {} on macvlan {} is missing; recreating it",
            c.name, ep.ifname, n.name
        );
        let healed = self.reattach(c, n, ep).await?;
        if let Some(c) = self.state.containers.get_mut(&c.name) {
            c.endpoints[i] = healed;
        }
        Ok(())
    }

    /// Endpoint `ep` of `c` made again, as it was: its addresses, its MAC (a runtime may
    /// have chosen it; the scheme's otherwise), its name inside, its default route.
    async fn reattach(
        &mut self,
        c: &Container,
        n: &Network,
        ep: &crate::state::Endpoint,
    ) -> Result<crate::state::Endpoint> {
        let plan = EndpointPlan {
            id: &super::random_id(),
            ip: ep.ip,
            ip6: ep.ip6,
            mac: ep.mac_bytes(),
            ifname: &ep.ifname,
            default_route: self.default_routes(c, ep),
        };
        self.attach_endpoint(c, n, &plan).await
    }

    /// A repair the reconcile made, for `netd events` (`daemon repair`, naming what).
    fn repaired(&self, name: &str, what: String) {
        self.events.emit(
            "daemon",
            "repair",
            env!("CARGO_PKG_VERSION"),
            name,
            &[("repair", what)],
        );
    }

    /// Remove what netd made that the state does not account for.
    async fn remove_leftovers(&mut self) -> Result<()> {
        let holders = process::find_holders(&self.state_dir);
        for (id, holder) in repairs::stray_holders(&self.state, &holders) {
            warn!(
                "removing the namespace of unfinished container {id} (holder pid {})",
                holder.pid
            );
            self.repaired(&id, "namespace of an unfinished container removed".into());
            // Its namespace, opened and then checked to still be the holder's (so a
            // reused pid never names the namespace whose processes are killed).
            if let Ok(ns) = process::open_holder(holder)
                && let Ok(id) = netns::id(&ns)
            {
                process::kill_namespace(id);
            }
            process::signal(holder, libc::SIGKILL);
        }
        let links = self.netlink.links().await?;
        for (index, name) in repairs::stray_links(&self.state, &links) {
            warn!("removing veth {name}: no container owns it");
            self.repaired(&name, "veth removed: no container owns it".into());
            if let Err(e) = self.netlink.delete_link(index).await {
                warn!("remove veth {name}: {e:#}");
            }
        }
        let keep_ports: Vec<PortBinding> = self
            .state
            .containers
            .values()
            .flat_map(|c| c.ports.iter().copied())
            .collect();
        let ports = self.datapath.retain_published(&keep_ports)?;
        let keep_eps: Vec<u32> = self
            .state
            .endpoints()
            .map(|(_, e)| e.host_ifindex)
            .collect();
        let eps = self.datapath.retain_endpoints(&keep_eps)?;
        let subnets: Vec<_> = self
            .state
            .networks
            .values()
            .filter_map(|n| n.subnet)
            .collect();
        let subnets6: Vec<_> = self
            .state
            .networks
            .values()
            .filter_map(|n| n.ipv6.map(|v6| v6.subnet))
            .collect();
        let nets =
            self.datapath.retain_subnets(&subnets)? + self.datapath.retain_subnets6(&subnets6)?;
        let vnis: Vec<u32> = self
            .state
            .networks
            .values()
            .filter_map(|n| n.vni())
            .collect();
        self.datapath.retain_overlays(&vnis)?;
        if ports + eps + nets > 0 {
            info!(
                "removed {ports} published ports, {eps} endpoints and {nets} subnets that nothing owns"
            );
        }
        let veth_names: Vec<String> = self
            .state
            .endpoints()
            .map(|(_, e)| e.host_veth.clone())
            .filter(|v| !v.is_empty())
            .collect();
        let links = self.datapath.retain_endpoint_links(&veth_names);
        if links > 0 {
            info!("detached the endpoint program from {links} veths that no container owns");
        }
        Ok(())
    }
}
