//! Networks: create (validated, then persisted before the bridge exists, so a crash never
//! leaks a bridge), remove (refused while endpoints are attached), connect and disconnect
//! a container, and what each network amounts to in the data path.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result, anyhow};
use ipnet::{Ipv4Net, Ipv6Net};
use log::info;
use netd_common::{
    maps::{ENDPOINT_ICC_OFF, ENDPOINT_INTERNAL, Endpoint6Info, EndpointInfo},
    user::{addr_be, addr6_be, link_local_for},
};

use super::{
    DEFAULT_NETWORK, Inner,
    containers::{DefaultRoutes, EndpointPlan},
    executor,
    node::LiveNode,
    random_id, unix_now,
};
use crate::{
    api::{ApiError, ConnectRequest, ContainerView, EndpointView, NetworkView},
    arp_probe,
    driver::{
        self,
        macvlan::{self, ProbeKind},
    },
    endpoint,
    ipam::{self, Pool},
    ipam6::{self, Pool6},
    nd_probe,
    network_request::{AddressFlags, Driver, NetworkRequest, Settings, families, settings},
    state::{Container, Endpoint, MacvlanNet, Network, Network6, Sandbox, Shim},
};

/// How many addresses a container start probes on the LAN before it gives up.
const PROBED_CANDIDATES: usize = 8;

/// How `subnets_in_use` names an overlay network's subnet.
pub(super) const OVERLAY_USE: &str = "overlay network ";

impl Inner {
    pub(super) fn network(&self, name: &str) -> Result<&Network, ApiError> {
        let name = if name == "bridge" {
            DEFAULT_NETWORK
        } else {
            name
        };
        self.state.networks.get(name).ok_or_else(|| {
            if self.overlays().iter().any(|o| o.name == name) {
                return ApiError::bad_request(anyhow!(
                    "network {name} is an overlay network with no container on this node"
                ));
            }
            ApiError::not_found(anyhow!("network {name} not found"))
        })
    }

    /// The cluster's overlay networks as last seen; none outside a cluster.
    fn overlays(&self) -> Vec<crate::cluster::overlay::OverlayNetwork> {
        self.cluster
            .as_ref()
            .map(|m| m.overlays())
            .unwrap_or_default()
    }

    /// The node's networks, then the cluster's overlays.
    pub(super) fn network_views(&self) -> Vec<NetworkView> {
        let local = self.state.networks.values().map(|n| self.view_of(n));
        let overlays = self
            .overlays()
            .into_iter()
            .filter(|o| !self.state.networks.contains_key(&o.name))
            .map(|o| NetworkView::overlay(&o));
        local.chain(overlays).collect()
    }

    pub(super) fn network_view(&self, name: &str) -> Result<NetworkView, ApiError> {
        if !self.state.networks.contains_key(name)
            && let Some(o) = self.overlays().into_iter().find(|o| o.name == name)
        {
            return Ok(NetworkView::overlay(&o));
        }
        Ok(self.view_of(self.network(name)?))
    }

    fn view_of(&self, n: &Network) -> NetworkView {
        let endpoints = self
            .state
            .endpoints()
            .filter(|(_, e)| e.network == n.name)
            .map(|(c, e)| EndpointView {
                container: c.name.clone(),
                ip: e
                    .ip
                    .zip(n.subnet)
                    .map(|(a, v4)| format!("{a}/{}", v4.prefix_len()))
                    .unwrap_or_default(),
                ip6: e
                    .ip6
                    .zip(n.ipv6)
                    .map(|(a, v6)| format!("{a}/{}", v6.subnet.prefix_len()))
                    .unwrap_or_default(),
                mac: e.mac.clone(),
                host_veth: e.host_veth.clone(),
            })
            .collect();
        // An overlay's share: shown as the cluster's network, with this node's containers.
        if n.overlay.is_some()
            && let Some(o) = self.overlays().into_iter().find(|o| o.name == n.name)
        {
            return NetworkView {
                endpoints,
                bridge: n.bridge.clone(),
                mtu: n.mtu,
                ..NetworkView::overlay(&o)
            };
        }
        NetworkView::new(n, endpoints)
    }

    /// The indexes of the links netd owns for its networks (bridges, made parents, shims).
    async fn our_links(&self) -> Result<BTreeSet<u32>> {
        let mut ours = BTreeSet::new();
        for n in self.state.networks.values() {
            let links = match &n.macvlan {
                Some(m) => {
                    let mut l: Vec<&str> = m.shim.iter().map(|s| s.name.as_str()).collect();
                    if m.parent_made {
                        l.push(&m.parent);
                    }
                    l
                }
                None => vec![n.bridge.as_str()],
            };
            for link in links {
                if let Some(i) = self.netlink.link_index(link).await? {
                    ours.insert(i);
                }
            }
        }
        Ok(ours)
    }

    /// Subnets in use on the node that a new network must not overlap: routes and
    /// addresses of links netd does not own, and every network's subnet.
    pub(super) async fn subnets_in_use(&self) -> Result<Vec<(Ipv4Net, String)>> {
        let ours = self.our_links().await?;
        let mut used: Vec<(Ipv4Net, String)> = self
            .state
            .networks
            .values()
            .filter_map(|n| Some((n.subnet?, format!("network {}", n.name))))
            .chain(
                self.overlays()
                    .into_iter()
                    .map(|o| (o.subnet, format!("{OVERLAY_USE}{}", o.name))),
            )
            .chain(
                self.datapath
                    .nat46_pool()
                    .map(|p| (p, "NAT46's pool, netd daemon --nat46-pool".to_string())),
            )
            .collect();
        for (dst, oif) in self.netlink.ipv4_routes().await? {
            if dst.prefix_len() > 0 && !oif.is_some_and(|i| ours.contains(&i)) {
                used.push((dst, format!("the node's route to {dst}")));
            }
        }
        for (index, net) in self.netlink.ipv4_addresses().await? {
            if !ours.contains(&index) && !net.addr().is_loopback() {
                used.push((net.trunc(), format!("the node's address {}", net.addr())));
            }
        }
        Ok(used)
    }

    /// The IPv6 twin of `subnets_in_use`: the networks' IPv6 subnets, and the node's IPv6
    /// routes and addresses on links netd does not own, but for the link-local and
    /// multicast ones every link has (no network may use those blocks anyway).
    pub(super) async fn subnets6_in_use(&self) -> Result<Vec<(Ipv6Net, String)>> {
        self.subnets6_in_use_beside(None).await
    }

    /// `subnets6_in_use` but the node's routes and addresses on link `lan`: a macvlan
    /// network's parent, whose LAN the network shares.
    async fn subnets6_in_use_beside(&self, lan: Option<u32>) -> Result<Vec<(Ipv6Net, String)>> {
        let mut ours = self.our_links().await?;
        ours.extend(lan);
        let per_link = |net: &Ipv6Net| {
            ["fe80::/10", "ff00::/8"]
                .iter()
                .any(|b| b.parse::<Ipv6Net>().is_ok_and(|b| b.contains(net)))
        };
        let mut used: Vec<(Ipv6Net, String)> = self
            .state
            .networks
            .values()
            .filter_map(|n| n.ipv6.map(|v6| (v6.subnet, format!("network {}", n.name))))
            .chain(self.overlays().into_iter().filter_map(|o| {
                o.ipv6
                    .map(|v6| (v6.subnet, format!("{OVERLAY_USE}{}", o.name)))
            }))
            .collect();
        for (dst, oif) in self.netlink.ipv6_routes().await? {
            if dst.prefix_len() > 0 && !per_link(&dst) && !oif.is_some_and(|i| ours.contains(&i)) {
                used.push((dst, format!("the node's route to {dst}")));
            }
        }
        for (index, net) in self.netlink.ipv6_addresses().await? {
            if !ours.contains(&index) && !net.addr().is_loopback() && !per_link(&net) {
                used.push((net.trunc(), format!("the node's address {}", net.addr())));
            }
        }
        Ok(used)
    }

    /// With a bridge network whose IPv6 leaves the node (every one but `--internal`:
    /// routed with `gateway_mode_ipv6=routed`, masqueraded, or tracked without
    /// masquerade), the node routes IPv6 (`sysctl::route_ipv6`); a failure is logged: those networks' IPv6 then
    /// stays on the node.
    pub(super) fn route_ipv6_if_needed(&self) {
        let leaves = self
            .state
            .networks
            .values()
            .any(|n| n.ipv6.is_some() && !n.internal && n.macvlan.is_none());
        if leaves && let Err(e) = crate::sysctl::route_ipv6(&self.uplink) {
            log::warn!("route IPv6 for the networks whose IPv6 leaves the node: {e:#}");
        }
    }

    /// The node's ULA /48, its global ID drawn the first time one is needed (and saved
    /// with the state).
    pub(super) fn ula_base(&mut self) -> Ipv6Net {
        let id = *self
            .state
            .ula_global_id
            .get_or_insert_with(ipam6::random_global_id);
        ipam6::ula_base(id)
    }

    /// A new network's IPv6 side from its IPv6 flags: the subnet given (checked against
    /// what the node uses), or the next free /64 of the node's ULA /48.
    /// A macvlan network's (`lan`: its parent) may share the subnet of the node's own
    /// addresses on that LAN.
    pub(super) async fn plan_ipv6(
        &mut self,
        v6: AddressFlags<'_>,
        lan: Option<u32>,
    ) -> Result<Network6, ApiError> {
        let used = self.subnets6_in_use_beside(lan).await?;
        let pool = match v6.subnet {
            Some(subnet) => {
                let subnet = ipam6::parse_subnet(subnet).map_err(ApiError::bad_request)?;
                ipam::check_free(&subnet, &used).map_err(ApiError::conflict)?;
                ipam6::plan(subnet, v6.gateway, v6.ip_range).map_err(ApiError::bad_request)?
            }
            None => {
                let nets: Vec<Ipv6Net> = used.iter().map(|(n, _)| *n).collect();
                let subnet =
                    ipam6::choose_subnet(self.ula_base(), &nets).map_err(ApiError::conflict)?;
                ipam6::default_pool(subnet)
            }
        };
        Ok(Network6 {
            subnet: pool.subnet,
            gateway: pool.gateway,
            ip_range: pool.range,
            last_allocated: None,
            gateway_mode: Default::default(),
        })
    }

    /// The subnets of link `index`'s own routes and addresses.
    async fn nets_on_link(&self, index: u32) -> Result<BTreeSet<Ipv4Net>> {
        let routes = self.netlink.ipv4_routes().await?;
        let addresses = self.netlink.ipv4_addresses().await?;
        Ok(routes
            .into_iter()
            .filter(|(_, oif)| *oif == Some(index))
            .map(|(dst, _)| dst)
            .chain(
                addresses
                    .into_iter()
                    .filter(|(i, _)| *i == index)
                    .map(|(_, a)| a.trunc()),
            )
            .collect())
    }

    pub(super) async fn create_network(
        &mut self,
        req: NetworkRequest,
    ) -> Result<NetworkView, ApiError> {
        self.create_network_as(req, None).await
    }

    /// Create a network; `docker_id` when Docker asked for it (`-d netd`): its short ID is
    /// then the network's ID and names its bridge, as Docker's bridge driver does.
    pub(super) async fn create_network_as(
        &mut self,
        req: NetworkRequest,
        docker_id: Option<String>,
    ) -> Result<NetworkView, ApiError> {
        let s = settings(&req).map_err(ApiError::bad_request)?;
        let families = families(&req).map_err(ApiError::bad_request)?;
        if self.state.networks.contains_key(&req.name)
            || self.overlays().iter().any(|o| o.name == req.name)
        {
            return Err(ApiError::conflict(anyhow!(
                "network with name {} already exists",
                req.name
            )));
        }
        let id = match &docker_id {
            Some(d) => crate::docker_plugin::short_id(d).to_string(),
            None => random_id(),
        };
        let macvlan = match s.driver {
            Driver::Bridge => None,
            Driver::Ipvlan => return Err(self.refuse_ipvlan().await),
            Driver::Macvlan => Some(self.macvlan_plan(&id, &s).await?),
        };
        // A macvlan network shares its parent's LAN: the parent's own routes are that LAN.
        let parent_index = match &macvlan {
            Some(m) if !m.parent_made => self.netlink.link_index(&m.parent).await?,
            _ => None,
        };
        let lan: BTreeSet<Ipv4Net> = match parent_index {
            Some(p) => self.nets_on_link(p).await?,
            None => BTreeSet::new(),
        };
        let used: Vec<(Ipv4Net, String)> = self
            .subnets_in_use()
            .await?
            .into_iter()
            .filter(|(net, what)| !(what.starts_with("the node's") && lan.contains(net)))
            .collect();
        let pool = match families.v4 {
            Some(v4) => Some(match v4.subnet {
                Some(subnet) => {
                    let subnet = ipam::parse_subnet(subnet).map_err(ApiError::bad_request)?;
                    ipam::check_free(&subnet, &used).map_err(ApiError::conflict)?;
                    ipam::plan(subnet, v4.gateway, v4.ip_range).map_err(ApiError::bad_request)?
                }
                None => {
                    let nets: Vec<Ipv4Net> = used.iter().map(|(n, _)| *n).collect();
                    ipam::default_pool(ipam::choose_subnet(&nets).map_err(ApiError::conflict)?)
                }
            }),
            None => None,
        };
        let aux_addresses = match &pool {
            Some(pool) => ipam::aux_addresses(pool, &req.aux_addresses),
            None => ipam::no_aux_addresses(&req.aux_addresses),
        }
        .map_err(ApiError::bad_request)?;
        let ipv6 = match families.v6 {
            Some(v6) => Some(Network6 {
                gateway_mode: s.gateway_mode6,
                ..self.plan_ipv6(v6, parent_index).await?
            }),
            None => None,
        };
        let bridge = match &macvlan {
            Some(_) => String::new(),
            None => s.bridge.clone().unwrap_or_else(|| format!("br-{id}")),
        };
        if macvlan.is_none()
            && let Some(other) = self.state.networks.values().find(|n| n.bridge == bridge)
        {
            return Err(ApiError::conflict(anyhow!(
                "invalid option com.netd.bridge.name={bridge}: already the bridge of network {}",
                other.name
            )));
        }
        if macvlan.is_none() && self.netlink.link_index(&bridge).await?.is_some() {
            return Err(ApiError::conflict(anyhow!(
                "invalid option com.netd.bridge.name={bridge}: an interface of that name already exists on the node"
            )));
        }
        let mut network = Network {
            id,
            name: req.name.clone(),
            driver: if macvlan.is_some() {
                "macvlan"
            } else {
                "bridge"
            }
            .into(),
            bridge,
            // No parent: internal, as Docker makes it.
            internal: req.internal || macvlan.as_ref().is_some_and(|m| m.parent_made),
            macvlan,
            subnet: pool.as_ref().map(|p| p.subnet),
            gateway: pool.as_ref().map(|p| p.gateway),
            ip_range: pool.as_ref().and_then(|p| p.range),
            ipv6,
            aux_addresses,
            icc: s.icc,
            masquerade: s.masquerade && !req.internal,
            mtu: s.mtu,
            gateway_mode: s.gateway_mode,
            options: s.options,
            tag: self.next_network_tag(),
            last_allocated: None,
            created: unix_now(),
            docker_id,
            overlay: None,
        };
        if network.macvlan.as_ref().is_some_and(|m| m.host_access) {
            // The node's addresses on the LAN of the network, from its ranges.
            let shim = Shim {
                name: macvlan::shim_name(&network.id),
                ip: self.choose_ip_probed(&network, None).await?,
                ip6: self.choose_ip6_probed(&network, None).await?,
            };
            if let Some(m) = network.macvlan.as_mut() {
                m.shim = Some(shim);
            }
        }
        // Persisted first: if the daemon dies before the bridge exists, the next start
        // makes it (a network is never half there without a record of it). The set-up is
        // planned fresh: a failure undoes what it made, in reverse (the bridge's name was
        // checked free above).
        self.state
            .networks
            .insert(network.name.clone(), network.clone());
        self.save()?;
        let plan = driver::of(&network).setup(&network, &[], true);
        if let Err(e) = self.apply_plan(None, &plan).await {
            self.state.networks.remove(&network.name);
            self.save()?;
            return Err(ApiError::from(
                e.context(format!("create network {}", network.name)),
            ));
        }
        self.route_ipv6_if_needed();
        // The bridge's new addresses are the node's: reachable at once, not only when the
        // address watcher catches up.
        if let Err(e) = self.refresh_node_addrs().await {
            log::warn!(
                "network {}: refresh the node's addresses: {e:#}",
                network.name
            );
        }
        info!(
            "network {}: created, {}{}{}{}{}{}",
            network.name,
            match &network.macvlan {
                Some(m) => format!("macvlan on {} ({} mode)", m.parent, m.mode.name()),
                None => format!("bridge {}", network.bridge),
            },
            match network.ipv4() {
                Some((subnet, gateway)) => format!(", subnet {subnet}, gateway {gateway}"),
                None => ", IPv6 only".to_string(),
            },
            match &network.ipv6 {
                Some(v6) => format!(", IPv6 subnet {}, gateway {}", v6.subnet, v6.gateway),
                None => String::new(),
            },
            if network.internal { ", internal" } else { "" },
            if network.icc { "" } else { ", icc off" },
            if network.masquerade {
                ""
            } else {
                ", no masquerade"
            },
        );
        Ok(self.view_of(&network))
    }

    /// `-d ipvlan`: refused, saying whether the kernel has it (asked, not guessed).
    async fn refuse_ipvlan(&self) -> ApiError {
        let probed = async {
            let uplink = self
                .netlink
                .link_index(&self.uplink)
                .await?
                .context("the uplink is missing")?;
            self.netlink
                .probe_link_kind(ProbeKind::Ipvlan, uplink)
                .await
        };
        match probed.await {
            Ok(false) => ApiError::bad_request(anyhow!(
                "invalid --driver ipvlan: this kernel has no ipvlan links ({}): it refused to make one; use -d macvlan",
                ProbeKind::Ipvlan.config()
            )),
            Ok(true) => ApiError::bad_request(anyhow!(
                "invalid --driver ipvlan: netd has no ipvlan driver yet; use -d macvlan"
            )),
            Err(e) => ApiError::from(e.context("invalid --driver ipvlan")),
        }
    }

    /// A macvlan network's parent, checked against the node and the other networks.
    async fn macvlan_plan(&self, id: &str, s: &Settings) -> Result<MacvlanNet, ApiError> {
        let m = s.macvlan.clone().expect("macvlan settings");
        let Some(parent) = m.parent else {
            return Ok(MacvlanNet {
                parent: macvlan::made_parent_name(id),
                parent_made: true,
                mode: m.mode,
                host_access: false,
                shim: None,
            });
        };
        if let Some(other) = self
            .state
            .networks
            .values()
            .find(|n| n.macvlan.as_ref().is_some_and(|o| o.parent == parent))
        {
            return Err(ApiError::conflict(anyhow!(
                "network {} is already using parent interface {parent}: two macvlan networks cannot share a parent (their containers' MACs would share one LAN port unknowingly)",
                other.name
            )));
        }
        if let Some(other) = self.state.networks.values().find(|n| n.bridge == parent) {
            return Err(ApiError::bad_request(anyhow!(
                "invalid option parent={parent}: that is the bridge of netd network {}",
                other.name
            )));
        }
        if [
            crate::endpoint::HOST_VETH_PREFIX,
            crate::endpoint::PEER_PREFIX,
            "nm",
            "nh",
            "ndq",
        ]
        .iter()
        .any(|p| parent.starts_with(p))
            || parent == "lo"
        {
            return Err(ApiError::bad_request(anyhow!(
                "invalid option parent={parent}: that is a link netd made (or the loopback), not a LAN interface"
            )));
        }
        if m.mode == crate::network_request::MacvlanMode::Passthru && parent == self.uplink {
            return Err(ApiError::bad_request(anyhow!(
                "invalid option macvlan_mode=passthru: parent {parent} is netd's uplink, and a passthru container would take it over (and with it the node's published ports and masquerade)"
            )));
        }
        if self.netlink.link_index(&parent).await?.is_some() {
            return Ok(MacvlanNet {
                parent,
                parent_made: false,
                mode: m.mode,
                host_access: m.host_access,
                shim: None,
            });
        }
        // Docker makes a missing `eth0.50` as VLAN 50 of eth0.
        if let Some((base, vid)) = parent.rsplit_once('.')
            && vid.parse::<u16>().is_ok_and(|v| (1..=4094).contains(&v))
        {
            let Some(base_index) = self.netlink.link_index(base).await? else {
                return Err(ApiError::bad_request(anyhow!(
                    "invalid option parent={parent}: no interface {base} on the node to make VLAN {vid} on"
                )));
            };
            let has = self
                .netlink
                .probe_link_kind(ProbeKind::Vlan, base_index)
                .await?;
            return Err(ApiError::bad_request(if has {
                anyhow!(
                    "invalid option parent={parent}: netd does not make VLAN links yet; create {parent} first"
                )
            } else {
                anyhow!(
                    "invalid option parent={parent}: this kernel has no 802.1Q VLAN links ({}): it refused to make VLAN {vid} on {base}",
                    ProbeKind::Vlan.config()
                )
            }));
        }
        Err(ApiError::bad_request(anyhow!(
            "invalid option parent={parent}: no interface {parent} on the node"
        )))
    }

    pub(super) fn next_network_tag(&self) -> u32 {
        self.state
            .networks
            .values()
            .map(|n| n.tag)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// The network's links and its place in the data path, as its driver plans them;
    /// idempotent (at start, for every network).
    pub(super) async fn realize_network(&mut self, n: &Network) -> Result<()> {
        let ips: Vec<IpAddr> = self
            .state
            .endpoints()
            .filter(|(_, e)| e.network == n.name)
            .flat_map(|(_, e)| [e.ip.map(IpAddr::from), e.ip6.map(IpAddr::from)])
            .flatten()
            .collect();
        let plan = driver::of(n).setup(n, &ips, false);
        self.apply_plan(None, &plan)
            .await
            .with_context(|| format!("set up network {}", n.name))
    }

    /// Apply a plan on the node and, for a plan that concerns a container, in its
    /// namespace `ns`.
    pub(super) async fn apply_plan(
        &mut self,
        ns: Option<&std::fs::File>,
        plan: &[crate::plan::Planned],
    ) -> Result<()> {
        let node = LiveNode {
            netlink: &self.netlink,
            container: ns,
        };
        let applied = executor::apply(&node, &mut self.datapath, plan).await;
        self.report_purged(None);
        applied
    }

    /// Remove a network; what could not be undone comes back as warnings.
    pub(super) async fn remove_network(&mut self, name: &str) -> Result<Vec<String>, ApiError> {
        let n = self.network(name)?.clone();
        if n.name == DEFAULT_NETWORK {
            return Err(ApiError::forbidden(anyhow!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        refuse_if_docker(&n, "removed")?;
        self.drop_network(&n).await
    }

    /// Remove network `n` (refused while endpoints are attached); what could not be
    /// undone comes back as warnings.
    pub(super) async fn drop_network(&mut self, n: &Network) -> Result<Vec<String>, ApiError> {
        let attached: Vec<&str> = self
            .state
            .endpoints()
            .filter(|(_, e)| e.network == n.name)
            .map(|(c, _)| c.name.as_str())
            .collect();
        if !attached.is_empty() {
            return Err(ApiError::forbidden(anyhow!(
                "error while removing network: network {} has active endpoints (containers: {}); disconnect or remove them first",
                n.name,
                attached.join(", ")
            )));
        }
        let node = LiveNode {
            netlink: &self.netlink,
            container: None,
        };
        let left = executor::teardown(
            &node,
            &mut self.datapath,
            &format!("network {}", n.name),
            &driver::of(n).teardown(n),
        )
        .await;
        self.report_purged(None);
        self.state.networks.remove(&n.name);
        self.save()?;
        info!("network {}: removed", n.name);
        Ok(left.into_warnings())
    }

    /// The pool a network allocates IPv4 addresses from; none on an IPv6-only network.
    pub(super) fn pool(n: &Network) -> Option<Pool> {
        let (subnet, gateway) = n.ipv4()?;
        Some(Pool {
            subnet,
            gateway,
            range: n.ip_range,
        })
    }

    /// An address on `network`: the static one asked for (checked), or the next free one;
    /// none on an IPv6-only network.
    pub(super) fn choose_ip(
        &self,
        network: &Network,
        wanted: Option<&str>,
    ) -> Result<Option<Ipv4Addr>, ApiError> {
        let Some(pool) = Self::pool(network) else {
            return match wanted {
                Some(ip) => Err(ApiError::bad_request(anyhow!(
                    "invalid --ip {ip}: network {} is IPv6-only (--ipv4=false); give --ip6",
                    network.name
                ))),
                None => Ok(None),
            };
        };
        let taken = self.taken_addresses(network);
        match wanted {
            Some(ip) if network.name == DEFAULT_NETWORK => Err(ApiError::bad_request(anyhow!(
                "invalid --ip {ip}: user specified IP address is supported on user defined networks only"
            ))),
            Some(ip) => ipam::check_static(&pool, ip, &taken).map_err(ApiError::conflict),
            None => {
                ipam::allocate(&pool, network.last_allocated, &taken).map_err(ApiError::conflict)
            }
        }
        .map(Some)
    }

    /// The IPv6 address of a new endpoint on `network`: the static one asked for (`--ip6`,
    /// checked), or the next free one; none on a network without IPv6.
    pub(super) fn choose_ip6(
        &self,
        network: &Network,
        wanted: Option<&str>,
    ) -> Result<Option<Ipv6Addr>, ApiError> {
        let Some(v6) = network.ipv6 else {
            return match wanted {
                Some(ip) => Err(ApiError::bad_request(anyhow!(
                    "invalid --ip6 {ip}: network {} has no IPv6 (create it with --ipv6)",
                    network.name
                ))),
                None => Ok(None),
            };
        };
        let pool = Pool6 {
            subnet: v6.subnet,
            gateway: v6.gateway,
            range: v6.ip_range,
        };
        let taken = self.taken_addresses6(network);
        match wanted {
            Some(ip) if network.name == DEFAULT_NETWORK => Err(ApiError::bad_request(anyhow!(
                "invalid --ip6 {ip}: user specified IP address is supported on user defined networks only"
            ))),
            Some(ip) => ipam6::check_static(&pool, ip, &taken).map_err(ApiError::conflict),
            None => ipam6::allocate(&pool, v6.last_allocated, &taken).map_err(ApiError::conflict),
        }
        .map(Some)
    }

    /// The addresses of container `container`'s new endpoint on `n` (`wanted`: `--ip`,
    /// `wanted6`: `--ip6`): on an overlay, from the node's blocks and recorded for the
    /// cluster; elsewhere `choose_ip_probed` and `choose_ip6_probed`.
    pub(super) async fn addresses_for(
        &self,
        n: &Network,
        wanted: Option<&str>,
        wanted6: Option<&str>,
        container: &str,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), ApiError> {
        if n.overlay.is_some() {
            let (ip, ip6) = self.overlay_address(n, wanted, wanted6, container).await?;
            return Ok((Some(ip), ip6));
        }
        let ip6 = self.choose_ip6_probed(n, wanted6).await?;
        let ip = self.choose_ip_probed(n, wanted).await?;
        Ok((ip, ip6))
    }

    /// `choose_ip`, and on a network on the LAN (macvlan with a parent) only an address no
    /// other host answers for (`arp_probe`): a taken one is skipped, or refused if asked
    /// for by `--ip`.
    pub(super) async fn choose_ip_probed(
        &self,
        n: &Network,
        wanted: Option<&str>,
    ) -> Result<Option<Ipv4Addr>, ApiError> {
        let (Some(pool), Some(lan)) = (Self::pool(n), self.lan_of(n).await?) else {
            return self.choose_ip(n, wanted);
        };
        let node_addrs = self
            .netlink
            .ipv4_addresses()
            .await?
            .into_iter()
            .map(|(_, a)| a.addr())
            .filter(|a| pool.subnet.contains(a));
        let candidates = Candidates {
            flag: "--ip",
            wanted,
            taken: self.taken_addresses(n),
            node_addrs: node_addrs.collect(),
        };
        let next = |taken: &BTreeSet<Ipv4Addr>| match wanted {
            Some(ip) => ipam::check_static(&pool, ip, taken).map_err(ApiError::conflict),
            None => ipam::allocate(&pool, n.last_allocated, taken).map_err(ApiError::conflict),
        };
        first_unanswered(n, &lan, candidates, next, arp_probe::probe)
            .await
            .map(Some)
    }

    /// `choose_ip6`, and on a network on the LAN only an address no other host answers
    /// for (`nd_probe`, duplicate address detection), as `choose_ip_probed`.
    pub(super) async fn choose_ip6_probed(
        &self,
        n: &Network,
        wanted: Option<&str>,
    ) -> Result<Option<Ipv6Addr>, ApiError> {
        let (Some(v6), Some(lan)) = (n.ipv6, self.lan_of(n).await?) else {
            return self.choose_ip6(n, wanted);
        };
        let node_addrs = self
            .netlink
            .ipv6_addresses()
            .await?
            .into_iter()
            .map(|(_, a)| a.addr())
            .filter(|a| v6.subnet.contains(a));
        let candidates = Candidates {
            flag: "--ip6",
            wanted,
            taken: self.taken_addresses6(n),
            node_addrs: node_addrs.collect(),
        };
        let pool = Pool6 {
            subnet: v6.subnet,
            gateway: v6.gateway,
            range: v6.ip_range,
        };
        let next = |taken: &BTreeSet<Ipv6Addr>| match wanted {
            Some(_) => self
                .choose_ip6(n, wanted)?
                .context("the network has IPv6")
                .map_err(ApiError::from),
            None => ipam6::allocate(&pool, v6.last_allocated, taken).map_err(ApiError::conflict),
        };
        first_unanswered(n, &lan, candidates, next, nd_probe::probe)
            .await
            .map(Some)
    }

    /// The LAN a network's containers sit on (a macvlan network's parent, unless netd
    /// made it), where their addresses are probed first.
    async fn lan_of(&self, n: &Network) -> Result<Option<Lan>> {
        let Some(m) = n.macvlan.as_ref().filter(|m| !m.parent_made) else {
            return Ok(None);
        };
        let index = self
            .netlink
            .link_index(&m.parent)
            .await?
            .with_context(|| format!("parent {} of network {} is missing", m.parent, n.name))?;
        let mac = self.netlink.link_mac(&m.parent).await?.unwrap_or_default();
        Ok(Some(Lan {
            parent: m.parent.clone(),
            index,
            mac,
        }))
    }

    /// The MAC of a new endpoint on `n` at IPv4 address `ip`: Docker's scheme from it, and
    /// without one (an IPv6-only network) a random locally administered MAC that no
    /// endpoint of the network, nor its bridge or shim, has.
    pub(super) fn new_mac(&self, n: &Network, ip: Option<Ipv4Addr>) -> Result<[u8; 6]> {
        if let Some(ip) = ip {
            return Ok(endpoint::mac_for(ip));
        }
        let shim = n.macvlan.iter().flat_map(|m| &m.shim);
        let taken: BTreeSet<[u8; 6]> = self
            .state
            .endpoints()
            .filter(|(_, e)| e.network == n.name)
            .map(|(_, e)| e.mac_bytes())
            .chain(shim.map(|s| endpoint::mac_of(s.ip, s.ip6)))
            .chain([driver::bridge::bridge_mac(n)])
            .collect();
        // A repeat only if the kernel's random source failed (`random_bytes`' fallback).
        (0..=u8::MAX)
            .map(|attempt| {
                let mut bytes = super::random_bytes();
                bytes[5] ^= attempt;
                endpoint::random_mac(bytes)
            })
            .find(|mac| !taken.contains(mac))
            .with_context(|| format!("no free MAC address for network {}", n.name))
    }

    /// The addresses of `network` its endpoints hold.
    pub(super) fn taken_addresses(&self, network: &Network) -> BTreeSet<std::net::Ipv4Addr> {
        let shim = network
            .macvlan
            .iter()
            .flat_map(|m| &m.shim)
            .flat_map(|s| s.ip);
        self.state
            .endpoints()
            .filter(|(_, e)| e.network == network.name)
            .filter_map(|(_, e)| e.ip)
            .chain(shim)
            .chain(network.aux_addresses.values().copied())
            .collect()
    }

    /// The IPv6 addresses of `network` its endpoints (and its shim) hold.
    pub(super) fn taken_addresses6(&self, network: &Network) -> BTreeSet<Ipv6Addr> {
        let shim = network
            .macvlan
            .iter()
            .flat_map(|m| &m.shim)
            .flat_map(|s| s.ip6);
        self.state
            .endpoints()
            .filter(|(_, e)| e.network == network.name)
            .filter_map(|(_, e)| e.ip6)
            .chain(shim)
            .collect()
    }

    /// What the endpoint program needs to know of an endpoint.
    pub(super) async fn endpoint_info(&self, n: &Network, e: &Endpoint) -> Result<EndpointInfo> {
        let bridge_ifindex = self
            .netlink
            .link_index(&n.bridge)
            .await?
            .with_context(|| format!("bridge {} of network {} is missing", n.bridge, n.name))?;
        let mut flags = 0;
        if !n.icc {
            flags |= ENDPOINT_ICC_OFF;
        }
        if n.internal {
            flags |= ENDPOINT_INTERNAL;
        }
        // 0.0.0.0 on an IPv6-only network: the programs drop every IPv4 and ARP frame.
        Ok(EndpointInfo {
            addr: e.ip.map_or(0, addr_be),
            gateway: n.gateway.map_or(0, addr_be),
            mac: e.mac_bytes(),
            flags,
            network: n.tag,
            gateway_mac: driver::bridge::bridge_mac(n),
            _pad: [0; 2],
            bridge_ifindex,
        })
    }

    /// What the endpoint program needs to know of an endpoint's IPv6 side; none for an
    /// endpoint without IPv6 (its IPv6 frames are dropped).
    pub(super) fn endpoint6_info(n: &Network, e: &Endpoint) -> Option<Endpoint6Info> {
        let (v6, addr) = (n.ipv6?, e.ip6?);
        Some(Endpoint6Info {
            addr: addr6_be(addr),
            link_local: addr6_be(link_local_for(e.mac_bytes())),
            gateway: addr6_be(v6.gateway),
            gateway_link_local: addr6_be(link_local_for(driver::bridge::bridge_mac(n))),
        })
    }

    pub(super) async fn connect(
        &mut self,
        network: &str,
        req: ConnectRequest,
    ) -> Result<ContainerView, ApiError> {
        self.overlay_here(network).await?;
        let n = self.network(network)?.clone();
        refuse_if_docker(&n, "connected to by netd")?;
        let c = self.container(&req.container)?.clone();
        match &c.sandbox {
            Sandbox::Holder { .. } | Sandbox::External { .. } if c.network_mode != "none" => {}
            Sandbox::Cni(_) => return Err(refuse_cni(&c, "connected to a network by netd")),
            _ => {
                return Err(ApiError::bad_request(anyhow!(
                    "container {} uses --network {}: a container sharing the network namespace of the host or of another container, or with networking disabled, cannot be connected to a network",
                    c.name,
                    c.network_mode
                )));
            }
        }
        if c.endpoint(&n.name).is_some() {
            return Err(ApiError::forbidden(anyhow!(
                "endpoint with name {} already exists in network {}",
                c.name,
                n.name
            )));
        }
        let (ip, ip6) = self
            .addresses_for(&n, req.ip.as_deref(), req.ip6.as_deref(), &c.name)
            .await?;
        let ifname = next_ifname(&c);
        let plan = EndpointPlan {
            id: &random_id(),
            ip,
            ip6,
            mac: self.new_mac(&n, ip)?,
            ifname: &ifname,
            default_route: self.default_routes_for_new(&c, &n, ip, ip6),
        };
        let ep = self
            .attach_endpoint(&c, &n, &plan)
            .await
            .map_err(|e| ApiError::from(e.context(format!("connect {} to {}", c.name, n.name))))?;
        let c = self
            .state
            .containers
            .get_mut(&c.name)
            .expect("checked above");
        let addresses = ep.addresses();
        c.endpoints.push(ep);
        if let Some(n) = self.state.networks.get_mut(&n.name) {
            n.note_allocated(ip, ip6);
        }
        self.save()?;
        info!(
            "container {}: connected to {} with {addresses} ({ifname})",
            req.container, n.name,
        );
        self.container_view(&req.container)
    }

    pub(super) async fn disconnect(
        &mut self,
        network: &str,
        req: ConnectRequest,
        force: bool,
    ) -> Result<(ContainerView, Vec<String>), ApiError> {
        let n = self.network(network)?.clone();
        refuse_if_docker(&n, "disconnected from by netd")?;
        let c = self.container(&req.container)?.clone();
        if matches!(c.sandbox, Sandbox::Cni(_)) {
            return Err(refuse_cni(&c, "disconnected by netd"));
        }
        let Some(index) = c.endpoints.iter().position(|e| e.network == n.name) else {
            return Err(ApiError::bad_request(anyhow!(
                "container {} is not connected to network {}",
                c.name,
                n.name
            )));
        };
        if index == 0 && !c.ports.is_empty() && !force {
            return Err(ApiError::forbidden(anyhow!(
                "container {}'s published ports lead to its address on {}: remove the container to unpublish them, or disconnect with --force (the ports stop answering)",
                c.name,
                n.name
            )));
        }
        let ep = c.endpoints[index].clone();
        // The ports lead to the first endpoint's address: they go with it.
        let ports = if index == 0 {
            c.ports.clone()
        } else {
            Vec::new()
        };
        let steps = crate::plan::remove_networking(&ports, vec![self.detach_steps(&c, &ep)]);
        let left = self.teardown_steps(&c, &steps).await;
        let had_route = self.default_routes(&c, &ep);
        let c = self
            .state
            .containers
            .get_mut(&c.name)
            .expect("checked above");
        c.endpoints.remove(index);
        if index == 0 {
            c.ports.clear();
        }
        if had_route.any() {
            self.move_default_route(&req.container, had_route).await;
        }
        self.save()?;
        info!("container {}: disconnected from {}", req.container, n.name);
        Ok((self.container_view(&req.container)?, left.into_warnings()))
    }

    /// Which families' default routes endpoint `e` of container `c` carries: a CNI
    /// attachment's as `ADD` decided; otherwise each family's is the first endpoint's on a
    /// network that is not internal with an address of that family (so a container on an
    /// IPv4 network and an IPv6-only one has both).
    pub(super) fn default_routes(&self, c: &Container, e: &Endpoint) -> DefaultRoutes {
        if let Sandbox::Cni(a) = &c.sandbox {
            return DefaultRoutes::both(a.default_route);
        }
        let routed = |x: &&Endpoint| {
            self.state
                .networks
                .get(&x.network)
                .is_some_and(|n| !n.internal)
        };
        let first_with = |has: fn(&Endpoint) -> bool| {
            c.endpoints
                .iter()
                .filter(routed)
                .find(|x| has(x))
                .is_some_and(|x| x.ifname == e.ifname)
        };
        DefaultRoutes {
            v4: first_with(|x| x.ip.is_some()),
            v6: first_with(|x| x.ip6.is_some()),
        }
    }

    /// Which default routes a new endpoint with these addresses on `n` takes: those of its
    /// families no endpoint of `c` carries yet.
    fn default_routes_for_new(
        &self,
        c: &Container,
        n: &Network,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
    ) -> DefaultRoutes {
        let carried = c
            .endpoints
            .iter()
            .map(|e| self.default_routes(c, e))
            .fold(DefaultRoutes::default(), DefaultRoutes::or);
        DefaultRoutes {
            v4: !n.internal && ip.is_some() && !carried.v4,
            v6: !n.internal && ip6.is_some() && !carried.v6,
        }
    }

    /// After the endpoint with the default routes `moved` left, give each to the next
    /// endpoint that takes it.
    async fn move_default_route(&mut self, container: &str, moved: DefaultRoutes) {
        let Some(c) = self.state.containers.get(container) else {
            return;
        };
        let (mut gateway, mut gateway6) = (None, None);
        for e in &c.endpoints {
            let to = self.default_routes(c, e);
            let Some(n) = self.state.networks.get(&e.network) else {
                continue;
            };
            if to.v4 && moved.v4 {
                gateway = n.gateway;
            }
            if to.v6 && moved.v6 {
                gateway6 = n.ipv6.map(|v6| (v6.gateway, e.ifname.clone()));
            }
        }
        if let Ok(ns) = self.open_sandbox(c) {
            let result = async {
                let inside = crate::netlink::Netlink::connect_in(&ns)?;
                if let Some(gateway) = gateway {
                    inside.add_default_route(gateway).await?;
                }
                if let Some((gateway6, ifname)) = gateway6 {
                    let oif = inside
                        .link_index(&ifname)
                        .await?
                        .with_context(|| format!("{ifname} not found in the container"))?;
                    inside.add_default_route6(gateway6, oif).await?;
                }
                anyhow::Ok(())
            };
            if let Err(e) = result.await {
                log::warn!("container {container}: move the default route: {e:#}");
            }
        }
    }
}

/// A network Docker made is Docker's to change: netd's own commands refuse it, naming
/// the Docker command that does it.
pub(super) fn refuse_if_docker(n: &Network, what: &str) -> Result<(), ApiError> {
    if n.docker_id.is_some() {
        return Err(ApiError::forbidden(anyhow!(
            "network {} belongs to Docker (docker network create -d netd) and cannot be {what} here: use docker network rm, docker run --network or docker network connect/disconnect",
            n.name
        )));
    }
    Ok(())
}

/// A CNI attachment is its runtime's to change: netd's own commands refuse it.
pub(super) fn refuse_cni(c: &Container, what: &str) -> ApiError {
    let (id, ifname) = match &c.sandbox {
        Sandbox::Cni(a) => (a.container_id.as_str(), a.ifname.as_str()),
        _ => ("", ""),
    };
    ApiError::forbidden(anyhow!(
        "{} is the CNI attachment of container {id} ({ifname} on {}) and cannot be {what}: its runtime adds and removes it (CNI ADD and DEL; GC removes what the runtime no longer knows)",
        c.name,
        c.network_mode
    ))
}

/// One endpoint, by what names it uniquely (a macvlan endpoint has no host veth).
/// The first `ethN` the container does not use yet.
fn next_ifname(c: &Container) -> String {
    (0..)
        .map(|i| format!("eth{i}"))
        .find(|name| !c.endpoints.iter().any(|e| &e.ifname == name))
        .expect("an unused interface name")
}

/// A macvlan network's LAN: its parent, by name and index, and the MAC probes go out as.
struct Lan {
    parent: String,
    index: u32,
    mac: [u8; 6],
}

/// Where a new endpoint's address of one family comes from: `wanted` (asked for by
/// `flag`), or the next free one past `taken`; never one of the node's own addresses
/// on the LAN (`node_addrs`: its probe would go unanswered by the node itself).
struct Candidates<'a, A> {
    flag: &'static str,
    wanted: Option<&'a str>,
    taken: BTreeSet<A>,
    node_addrs: BTreeSet<A>,
}

/// A family's probe (`arp_probe::probe`, `nd_probe::probe`): out of the link of an index,
/// from a MAC, for an address; the MAC of a host that answered.
type Prober<A> = fn(u32, [u8; 6], A) -> Result<Option<[u8; 6]>>;

/// The first candidate (`next` past what is taken) that no host on `lan` answers for
/// when `probe` asks; a taken one is skipped (or refused, if asked for), at most
/// `PROBED_CANDIDATES` tried: a LAN answering for every address of the range is not
/// searched to the end, one probe wait after another.
async fn first_unanswered<A>(
    n: &Network,
    lan: &Lan,
    mut c: Candidates<'_, A>,
    next: impl Fn(&BTreeSet<A>) -> Result<A, ApiError>,
    probe: Prober<A>,
) -> Result<A, ApiError>
where
    A: Copy + Ord + std::fmt::Display + std::str::FromStr + Send + 'static,
{
    let flag = c.flag;
    if let Some(ip) = c
        .wanted
        .and_then(|w| w.parse::<A>().ok())
        .filter(|ip| c.node_addrs.contains(ip))
    {
        return Err(ApiError::conflict(anyhow!(
            "invalid {flag} {ip}: Address already in use (it is the node's own address)"
        )));
    }
    c.taken.append(&mut c.node_addrs);
    let (index, mac) = (lan.index, lan.mac);
    for _ in 0..PROBED_CANDIDATES {
        let ip = next(&c.taken)?;
        let answered = tokio::task::spawn_blocking(move || probe(index, mac, ip))
            .await
            .map_err(|e| anyhow!("address probe: {e}"))?
            .with_context(|| format!("probe {ip} on {}", lan.parent))?;
        let Some(theirs) = answered else {
            return Ok(ip);
        };
        let theirs = endpoint::format_mac(&theirs);
        if c.wanted.is_some() {
            return Err(ApiError::conflict(anyhow!(
                "invalid {flag} {ip}: Address already in use on the LAN of {} (host {theirs} answers for it)",
                lan.parent
            )));
        }
        log::warn!(
            "network {}: {ip} is in use on the LAN (host {theirs} answers for it); skipped",
            n.name
        );
        c.taken.insert(ip);
    }
    Err(ApiError::conflict(anyhow!(
        "no address found on network {}: the last {PROBED_CANDIDATES} tried are all answered for on the LAN of {}",
        n.name,
        lan.parent
    )))
}
