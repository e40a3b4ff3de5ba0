//! Docker's network and IPAM driver (`docker network create -d netd --ipam-driver netd`):
//! the plugin API's calls on the daemon's state. A Docker network is a netd network keyed
//! by Docker's ID; a Docker endpoint is a container record whose namespace is Docker's
//! (`Sandbox::Docker`): netd makes the veth at `CreateEndpoint`, keeps the host end on the
//! bridge with its program, and hands the other end to Docker by name at `Join`. Every
//! handler answers from the state alone and never calls Docker back (Docker waits on the
//! driver while it holds its own locks). Removals are idempotent: Docker retries them and
//! rolls back failed joins with them.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, anyhow, bail};
use log::info;
use serde_json::{Value, json};

use super::{Daemon, Inner, containers::EndpointPlan, random_id, unix_now};
use crate::{
    api::{ApiError, ApiRequest},
    docker_plugin::{
        self as wire, CreateEndpoint, CreateNetwork, EndpointRef, Join,
        ProgramExternalConnectivity, ReleaseAddress, ReleasePool, RequestAddress, RequestPool,
        check_id, short_id,
    },
    endpoint, ipam, ipam6,
    network_request::NetworkRequest,
    state::{Container, DockerEndpoint, IpamPool, IpamPool6, Network, Sandbox, Status},
};

/// Which of Docker's interfaces a call belongs to: they spell errors differently.
#[derive(Clone, Copy)]
enum Interface {
    Plugin,
    Network,
    Ipam,
}

impl Daemon {
    /// One call of Docker's plugin API: `POST /Interface.Method`. The handshake is
    /// answered without the daemon's lock, so Docker finds the driver at once even while
    /// a start-up reconcile runs. A failed call is answered 200 with the error under
    /// `Err` (network driver) or `Error` (IPAM driver), which Docker prints; an unknown
    /// method is answered 404, which Docker takes as "not implemented".
    pub(super) async fn plugin_route(&self, req: ApiRequest) -> Result<Value, ApiError> {
        let method = req.path.join("/");
        let interface = match method.split_once('.').map(|(i, _)| i) {
            Some("NetworkDriver") => Interface::Network,
            Some("IpamDriver") => Interface::Ipam,
            _ => Interface::Plugin,
        };
        let result = match method.as_str() {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({ "Scope": "local", "ConnectivityScope": "local" }))
            }
            "IpamDriver.GetCapabilities" => {
                Ok(json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }))
            }
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": wire::LOCAL_ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": wire::GLOBAL_ADDRESS_SPACE,
            })),
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
            _ => {
                let mut inner = self.inner.lock().await;
                match inner.plugin_call(&method, &req).await {
                    Some(result) => result,
                    None => {
                        return Err(ApiError::not_found(anyhow!(
                            "netd does not implement {method}"
                        )));
                    }
                }
            }
        };
        Ok(match result {
            Ok(value) => value,
            Err(e) => {
                let message = format!("{e:#}");
                log::warn!("Docker {method}: {message}");
                match interface {
                    Interface::Ipam => json!({ "Error": message }),
                    Interface::Network | Interface::Plugin => json!({ "Err": message }),
                }
            }
        })
    }
}

fn body<T: serde::de::DeserializeOwned>(req: &ApiRequest) -> Result<T> {
    serde_json::from_slice(&req.body).context("invalid request body")
}

impl Inner {
    /// The calls that read or change the state; `None` for a method netd does not have.
    async fn plugin_call(&mut self, method: &str, req: &ApiRequest) -> Option<Result<Value>> {
        let result = match method {
            "NetworkDriver.CreateNetwork" => match body(req) {
                Ok(r) => self.docker_create_network(r).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.DeleteNetwork" => match body(req) {
                Ok(r) => self.docker_delete_network(r).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.CreateEndpoint" => match body(req) {
                Ok(r) => self.docker_create_endpoint(r).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.DeleteEndpoint" => match body(req) {
                Ok(r) => self.docker_delete_endpoint(r).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.EndpointOperInfo" => match body::<EndpointRef>(req) {
                Ok(r) => Ok(self.docker_endpoint_info(&r)),
                Err(e) => Err(e),
            },
            "NetworkDriver.Join" => body(req).and_then(|r| self.docker_join(r)),
            "NetworkDriver.Leave" => body(req).and_then(|r| self.docker_leave(r)),
            "NetworkDriver.ProgramExternalConnectivity" => match body(req) {
                Ok(r) => self.docker_program_ports(r).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.RevokeExternalConnectivity" => match body(req) {
                Ok(r) => self.docker_revoke_ports(r).await,
                Err(e) => Err(e),
            },
            "IpamDriver.RequestPool" => match body(req) {
                Ok(r) => self.ipam_request_pool(r).await,
                Err(e) => Err(e),
            },
            "IpamDriver.ReleasePool" => body(req).and_then(|r| self.ipam_release_pool(r)),
            "IpamDriver.RequestAddress" => body(req).and_then(|r| self.ipam_request_address(r)),
            "IpamDriver.ReleaseAddress" => body(req).and_then(|r| self.ipam_release_address(r)),
            _ => return None,
        };
        Some(result)
    }

    /// The network Docker knows by `network_id`.
    fn docker_network(&self, network_id: &str) -> Result<&Network> {
        self.state
            .networks
            .values()
            .find(|n| n.docker_id.as_deref() == Some(network_id))
            .with_context(|| {
                format!(
                    "network {} is not known to netd (was it created while netd's state was lost?)",
                    short_id(network_id)
                )
            })
    }

    /// The record of Docker's endpoint `endpoint_id`, by its name (the short ID).
    fn docker_endpoint(&self, endpoint_id: &str) -> Option<(&Container, &DockerEndpoint)> {
        let c = self.state.containers.get(short_id(endpoint_id))?;
        match &c.sandbox {
            Sandbox::Docker(d) if d.endpoint_id == endpoint_id => Some((c, d)),
            _ => None,
        }
    }

    async fn docker_create_network(&mut self, req: CreateNetwork) -> Result<Value> {
        check_id("network ID", &req.network_id)?;
        if self.docker_network(&req.network_id).is_ok() {
            return Ok(json!({}));
        }
        let plan = req.plan()?;
        // With netd's IPAM, the pools carry the --ip-range.
        let range = self
            .state
            .ipam_pools
            .values()
            .find(|p| p.subnet == plan.subnet)
            .and_then(|p| p.range);
        let range6 = plan.ipv6.and_then(|(subnet, _)| {
            self.state
                .ipam_pools6
                .values()
                .find(|p| p.subnet == subnet)
                .and_then(|p| p.range)
        });
        let (mut subnet, mut gateway) = (
            vec![plan.subnet.to_string()],
            vec![plan.gateway.to_string()],
        );
        if let Some((subnet6, gateway6)) = plan.ipv6 {
            subnet.push(subnet6.to_string());
            gateway.push(gateway6.to_string());
        }
        let request = NetworkRequest {
            name: short_id(&req.network_id).to_string(),
            driver: None,
            subnet,
            gateway,
            ip_range: range
                .iter()
                .map(ToString::to_string)
                .chain(range6.iter().map(ToString::to_string))
                .collect(),
            ipv6: plan.ipv6.is_some(),
            ipv4: None,
            internal: plan.internal,
            options: plan.options,
            mtu: None,
            aux_addresses: Vec::new(),
            attachable: false,
        };
        let view = self
            .create_network_as(request, Some(req.network_id.clone()))
            .await
            .map_err(|e| e.error)?;
        info!(
            "Docker network {}: created as netd network {}",
            short_id(&req.network_id),
            view.name
        );
        Ok(json!({}))
    }

    async fn docker_delete_network(&mut self, req: EndpointRef) -> Result<Value> {
        let Ok(n) = self.docker_network(&req.network_id).cloned() else {
            return Ok(json!({}));
        };
        let warnings = self.drop_network(&n).await.map_err(|e| e.error)?;
        for w in warnings {
            log::warn!("Docker network {}: {w}", n.name);
        }
        Ok(json!({}))
    }

    /// The veth of a new endpoint, policed and on the bridge, its other end left in the
    /// node's namespace for `Join`. The address is Docker's (from netd's IPAM or
    /// Docker's own); an empty MAC is filled with netd's scheme and returned, the only
    /// field a driver may fill.
    async fn docker_create_endpoint(&mut self, req: CreateEndpoint) -> Result<Value> {
        check_id("endpoint ID", &req.endpoint_id)?;
        let n = self.docker_network(&req.network_id)?.clone();
        let iface = req.interface.unwrap_or_default();
        let filled_mac = |mac: &str| {
            if iface.mac_address.is_empty() {
                json!({ "Interface": { "MacAddress": mac } })
            } else {
                json!({})
            }
        };
        if let Some((c, _)) = self.docker_endpoint(&req.endpoint_id) {
            let mac = c.endpoints.first().map_or("", |e| e.mac.as_str());
            return Ok(filled_mac(mac));
        }
        let name = short_id(&req.endpoint_id).to_string();
        if self.state.containers.contains_key(&name) {
            bail!("a netd container is already named {name}, the endpoint's short ID");
        }
        let ip = match (iface.address.as_str(), n.ipv4()) {
            ("", Some(_)) => {
                bail!(
                    "no IPv4 address given for the endpoint: network {} has IPv4",
                    n.name
                )
            }
            ("", None) => None,
            (a, _) => {
                let ip = wire::cidr_address(a)?;
                self.check_endpoint_address(&n, ip)?;
                Some(ip)
            }
        };
        let ip6 = match iface.address_ipv6.as_str() {
            "" if ip.is_none() => {
                bail!(
                    "no IPv6 address given for the endpoint of IPv6-only network {}",
                    n.name
                )
            }
            "" => None,
            a => {
                let ip6 = wire::cidr_address6(a)?;
                self.check_endpoint_address6(&n, ip6)?;
                Some(ip6)
            }
        };
        let mac = match iface.mac_address.as_str() {
            "" => endpoint::mac_of(ip, ip6),
            given => endpoint::parse_mac(given)
                .filter(|m| m[0] & 1 == 0 && *m != [0; 6])
                .with_context(|| format!("invalid MAC address {given:?}: expected a unicast address such as 02:42:ac:11:00:02"))?,
        };
        let mut c = Container {
            id: name.clone(),
            name: name.clone(),
            network_mode: n.name.clone(),
            sandbox: Sandbox::Docker(DockerEndpoint {
                network_id: req.network_id.clone(),
                endpoint_id: req.endpoint_id.clone(),
                peer: String::new(),
                sandbox_key: None,
            }),
            endpoints: Vec::new(),
            cmd: Vec::new(),
            process: None,
            status: Status::Created,
            ports: Vec::new(),
            created: unix_now(),
        };
        let plan = EndpointPlan {
            id: &name,
            ip,
            // Docker configures the container's side itself (addresses and routes from
            // this endpoint's interface and `Join`); netd polices what it may send.
            ip6,
            mac,
            ifname: "",
            default_route: Default::default(),
        };
        // The container end stays in the node's namespace: Docker moves it at `Join`.
        let (ep, steps) = self
            .plan_endpoint(&n, &plan, crate::plan::PeerGoes::Stays)
            .await?;
        self.apply_plan(None, &steps)
            .await
            .with_context(|| format!("attach endpoint to network {}", n.name))?;
        let ep = self.endpoint_applied(&c, ep).await?;
        if let Sandbox::Docker(d) = &mut c.sandbox {
            d.peer = crate::plan::peer_name(&name);
        }
        c.endpoints.push(ep);
        self.state.containers.insert(name.clone(), c);
        if let Err(e) = self.save() {
            // Not recorded: undone, so that the next start finds nothing unowned.
            let c = self.state.containers.remove(&name).expect("inserted above");
            let left = self.teardown(&c).await;
            return Err(left.after(e));
        }
        Ok(filled_mac(&endpoint::format_mac(&mac)))
    }

    /// An endpoint's address: a host address of the network's subnet, not its gateway,
    /// used by no other endpoint.
    fn check_endpoint_address(&self, n: &Network, ip: Ipv4Addr) -> Result<()> {
        let Some((subnet, gateway)) = n.ipv4() else {
            bail!(
                "invalid address {ip}: network {} is IPv6-only (--ipv4=false)",
                n.name
            );
        };
        if !crate::ipam::is_host(&subnet, ip) {
            bail!(
                "invalid address {ip}: not a host address of network {}'s subnet {subnet}",
                n.name,
            );
        }
        if ip == gateway {
            bail!("invalid address {ip}: it is network {}'s gateway", n.name);
        }
        if let Some((c, _)) = self
            .state
            .endpoints()
            .find(|(_, e)| e.network == n.name && e.ip == Some(ip))
        {
            bail!(
                "address {ip} is already in use on network {} (by {})",
                n.name,
                c.name
            );
        }
        Ok(())
    }

    /// The IPv6 twin of `check_endpoint_address`: on a network with IPv6, an address of
    /// its subnet but the subnet-router anycast address and the gateway, used by no other
    /// endpoint.
    fn check_endpoint_address6(&self, n: &Network, ip: Ipv6Addr) -> Result<()> {
        let Some(v6) = n.ipv6 else {
            bail!(
                "invalid IPv6 address {ip}: network {} has no IPv6 (create it with --ipv6)",
                n.name
            );
        };
        if !ipam6::is_host(&v6.subnet, ip) {
            bail!(
                "invalid IPv6 address {ip}: not a host address of network {}'s subnet {}",
                n.name,
                v6.subnet
            );
        }
        if ip == v6.gateway {
            bail!(
                "invalid IPv6 address {ip}: it is network {}'s IPv6 gateway",
                n.name
            );
        }
        if let Some((c, _)) = self
            .state
            .endpoints()
            .find(|(_, e)| e.network == n.name && e.ip6 == Some(ip))
        {
            bail!(
                "IPv6 address {ip} is already in use on network {} (by {})",
                n.name,
                c.name
            );
        }
        Ok(())
    }

    async fn docker_delete_endpoint(&mut self, req: EndpointRef) -> Result<Value> {
        let Some((c, _)) = self.docker_endpoint(&req.endpoint_id) else {
            return Ok(json!({}));
        };
        let c = c.clone();
        let left = self.teardown(&c).await;
        self.state.containers.remove(&c.name);
        self.save()?;
        for w in left.into_warnings() {
            log::warn!("Docker endpoint {}: {w}", c.name);
        }
        info!("Docker endpoint {}: removed", c.name);
        Ok(json!({}))
    }

    fn docker_endpoint_info(&self, req: &EndpointRef) -> Value {
        let Some((c, _)) = self.docker_endpoint(&req.endpoint_id) else {
            return json!({ "Value": {} });
        };
        let ports: Vec<String> = c.ports.iter().map(ToString::to_string).collect();
        json!({ "Value": { "com.netd.ports": ports } })
    }

    /// Hand the container end over by name; the gateway is always given (except on an
    /// internal network), or Docker adds its own `docker_gwbridge` interface and publishes
    /// the container's ports itself, with iptables and docker-proxy.
    fn docker_join(&mut self, req: Join) -> Result<Value> {
        let (c, d) = self
            .docker_endpoint(&req.endpoint_id)
            .with_context(|| format!("endpoint {} not found", short_id(&req.endpoint_id)))?;
        let (name, peer) = (c.name.clone(), d.peer.clone());
        let has_ip6 = c.endpoints.first().is_some_and(|e| e.ip6.is_some());
        let n = self.docker_network(&req.network_id)?;
        let gateway = n.gateway.filter(|_| !n.internal).map(|g| g.to_string());
        let gateway6 = n
            .ipv6
            .filter(|_| !n.internal && has_ip6)
            .map(|v6| v6.gateway.to_string());
        if let Some(c) = self.state.containers.get_mut(&name) {
            c.status = Status::Running;
            if let Sandbox::Docker(d) = &mut c.sandbox {
                d.sandbox_key = Some(req.sandbox_key.clone());
            }
        }
        self.save()?;
        info!(
            "Docker endpoint {name}: joined sandbox {}",
            wire::sandbox_id(&req.sandbox_key)
        );
        let mut answer = json!({ "InterfaceName": { "SrcName": peer, "DstPrefix": "eth" } });
        if let Some(g) = gateway {
            answer["Gateway"] = json!(g);
        }
        if let Some(g) = gateway6 {
            answer["GatewayIPv6"] = json!(g);
        }
        Ok(answer)
    }

    fn docker_leave(&mut self, req: EndpointRef) -> Result<Value> {
        let Some((c, _)) = self.docker_endpoint(&req.endpoint_id) else {
            return Ok(json!({}));
        };
        let name = c.name.clone();
        if let Some(c) = self.state.containers.get_mut(&name) {
            c.status = Status::Created;
        }
        self.save()?;
        Ok(json!({}))
    }

    /// Publish the container's ports on this endpoint (Docker's gateway endpoint of the
    /// sandbox). A port Docker leaves open (`-P`, `-p 80`) is chosen by netd; a range
    /// gives its first free port. Called again, the new set replaces the old one.
    async fn docker_program_ports(&mut self, req: ProgramExternalConnectivity) -> Result<Value> {
        let (c, _) = self
            .docker_endpoint(&req.endpoint_id)
            .with_context(|| format!("endpoint {} not found", short_id(&req.endpoint_id)))?;
        let name = c.name.clone();
        let specs = wire::port_specs(&req.options)?;
        if specs.is_empty() && c.ports.is_empty() {
            return Ok(json!({}));
        }
        let ep = c
            .endpoints
            .first()
            .context("the endpoint has no interface")?
            .clone();
        self.refresh_node_addrs().await?;
        // This endpoint's own ports do not conflict with their replacement.
        let old = std::mem::take(&mut self.state.containers.get_mut(&name).expect("found").ports);
        let families = self.publish_families(ep.ip.is_some(), ep.ip6.is_some());
        let bound = self.bind_ports(&specs, families);
        let container = self.state.containers.get_mut(&name).expect("found");
        let bindings = match bound {
            Ok(b) => b,
            Err(e) => {
                container.ports = old;
                return Err(e);
            }
        };
        container.ports = bindings.clone();
        let to = crate::plan::PublishTo {
            ip: ep.ip,
            ip6: ep.ip6,
            via: &ep.host_veth,
        };
        let steps = crate::plan::republish(&old, &bindings, &to);
        if let Err(e) = self.apply_plan(None, &steps).await {
            // Undone: the endpoint keeps the ports it had.
            self.state.containers.get_mut(&name).expect("found").ports = old;
            return Err(e);
        }
        self.save()?;
        info!(
            "Docker endpoint {name}: published [{}]",
            bindings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(json!({}))
    }

    async fn docker_revoke_ports(&mut self, req: EndpointRef) -> Result<Value> {
        let Some((c, _)) = self.docker_endpoint(&req.endpoint_id) else {
            return Ok(json!({}));
        };
        let name = c.name.clone();
        let c = self.state.containers.get(&name).expect("found").clone();
        let left = self
            .teardown_steps(&c, &crate::plan::unpublish(&c.ports))
            .await;
        let ports = std::mem::take(&mut self.state.containers.get_mut(&name).expect("found").ports);
        self.save()?;
        if !left.is_empty() {
            return Err(left.after(anyhow::anyhow!("unpublish the ports of endpoint {name}")));
        }
        if !ports.is_empty() {
            info!("Docker endpoint {name}: unpublished {} ports", ports.len());
        }
        Ok(json!({}))
    }

    /// A pool for a new network: the subnet asked for (`--subnet`), checked to overlap
    /// nothing, or the first of Docker's default pools that overlaps nothing.
    async fn ipam_request_pool(&mut self, req: RequestPool) -> Result<Value> {
        if req.v6 {
            return self.ipam_request_pool6(req).await;
        }
        let mut used = self.subnets_in_use().await?;
        used.extend(self.state.ipam_pools.values().map(|p| {
            (
                p.subnet,
                format!("the pool of another network ({})", p.subnet),
            )
        }));
        let subnet = match req.pool.as_str() {
            "" => {
                let nets: Vec<_> = used.iter().map(|(n, _)| *n).collect();
                ipam::choose_subnet(&nets)?
            }
            pool => {
                let subnet = ipam::parse_subnet(pool)?;
                ipam::check_free(&subnet, &used)?;
                subnet
            }
        };
        let range = match req.sub_pool.as_str() {
            "" => None,
            r => ipam::plan(subnet, None, Some(r))?.range,
        };
        let id = random_id();
        self.state.ipam_pools.insert(
            id.clone(),
            IpamPool {
                subnet,
                range,
                addresses: Default::default(),
                last_allocated: None,
            },
        );
        self.save()?;
        info!("IPAM pool {id}: {subnet}");
        Ok(json!({ "PoolID": id, "Pool": subnet.to_string(), "Data": {} }))
    }

    /// An IPv6 pool (`--ipv6`): the subnet asked for, checked as `netd network create
    /// --ipv6` checks it, or the next free /64 of the node's ULA /48.
    async fn ipam_request_pool6(&mut self, req: RequestPool) -> Result<Value> {
        let mut used = self.subnets6_in_use().await?;
        used.extend(self.state.ipam_pools6.values().map(|p| {
            (
                p.subnet,
                format!("the pool of another network ({})", p.subnet),
            )
        }));
        let subnet = match req.pool.as_str() {
            "" => {
                let nets: Vec<_> = used.iter().map(|(n, _)| *n).collect();
                let base = self.ula_base();
                ipam6::choose_subnet(base, &nets)?
            }
            pool => {
                let subnet = ipam6::parse_subnet(pool)?;
                ipam::check_free(&subnet, &used)?;
                subnet
            }
        };
        let range = match req.sub_pool.as_str() {
            "" => None,
            r => ipam6::plan(subnet, None, Some(r))?.range,
        };
        let id = random_id();
        self.state.ipam_pools6.insert(
            id.clone(),
            IpamPool6 {
                subnet,
                range,
                addresses: Default::default(),
                last_allocated: None,
            },
        );
        self.save()?;
        info!("IPAM pool {id}: {subnet}");
        Ok(json!({ "PoolID": id, "Pool": subnet.to_string(), "Data": {} }))
    }

    fn ipam_release_pool(&mut self, req: ReleasePool) -> Result<Value> {
        if self.state.ipam_pools.remove(&req.pool_id).is_some()
            || self.state.ipam_pools6.remove(&req.pool_id).is_some()
        {
            self.save()?;
            info!("IPAM pool {}: released", req.pool_id);
        }
        Ok(json!({}))
    }

    /// The gateway (the subnet's first host unless `--gateway` names one), an endpoint's
    /// `--ip`, or the next free address in Docker's serial order.
    fn ipam_request_address(&mut self, req: RequestAddress) -> Result<Value> {
        let is_gateway = req
            .options
            .get(wire::keys::REQUEST_ADDRESS_TYPE)
            .map(String::as_str)
            == Some(wire::keys::GATEWAY_REQUEST);
        if self.state.ipam_pools6.contains_key(&req.pool_id) {
            return self.ipam_request_address6(&req, is_gateway);
        }
        let pool = self
            .state
            .ipam_pools
            .get(&req.pool_id)
            .with_context(|| format!("no IPAM pool {}", req.pool_id))?;
        let shape = ipam::Pool {
            subnet: pool.subnet,
            // Never a candidate: allocation skips nothing more than what is taken.
            gateway: pool.subnet.network(),
            range: pool.range,
        };
        let addr = match (req.address.as_str(), is_gateway) {
            ("", true) => {
                let first = ipam::default_pool(pool.subnet).gateway;
                if pool.addresses.contains(&first) {
                    bail!("the gateway {first} is already allocated");
                }
                first
            }
            ("", false) => ipam::allocate(&shape, pool.last_allocated, &pool.addresses)?,
            (wanted, _) => ipam::check_static(&shape, wanted, &pool.addresses)?,
        };
        let (subnet, pool) = (
            pool.subnet,
            self.state.ipam_pools.get_mut(&req.pool_id).expect("found"),
        );
        pool.addresses.insert(addr);
        if !is_gateway {
            pool.last_allocated = Some(addr);
        }
        self.save()?;
        Ok(json!({ "Address": format!("{addr}/{}", subnet.prefix_len()), "Data": {} }))
    }

    /// `ipam_request_address` on an IPv6 pool: the gateway (`::1` of the subnet unless
    /// `--gateway` names one), an endpoint's `--ip6`, or the next free address.
    fn ipam_request_address6(&mut self, req: &RequestAddress, is_gateway: bool) -> Result<Value> {
        let pool = &self.state.ipam_pools6[&req.pool_id];
        let shape = ipam6::Pool6 {
            subnet: pool.subnet,
            // Never a candidate anyway: allocation skips nothing more than what is taken.
            gateway: pool.subnet.network(),
            range: pool.range,
        };
        let addr = match (req.address.as_str(), is_gateway) {
            ("", true) => {
                let first = ipam6::default_pool(pool.subnet).gateway;
                if pool.addresses.contains(&first) {
                    bail!("the IPv6 gateway {first} is already allocated");
                }
                first
            }
            ("", false) => ipam6::allocate(&shape, pool.last_allocated, &pool.addresses)?,
            (wanted, _) => ipam6::check_static(&shape, wanted, &pool.addresses)?,
        };
        let pool = self.state.ipam_pools6.get_mut(&req.pool_id).expect("found");
        pool.addresses.insert(addr);
        if !is_gateway {
            pool.last_allocated = Some(addr);
        }
        let prefix = pool.subnet.prefix_len();
        self.save()?;
        Ok(json!({ "Address": format!("{addr}/{prefix}"), "Data": {} }))
    }

    fn ipam_release_address(&mut self, req: ReleaseAddress) -> Result<Value> {
        if req.address.is_empty() {
            return Ok(json!({}));
        }
        let released = if let Some(pool) = self.state.ipam_pools.get_mut(&req.pool_id) {
            pool.addresses.remove(&wire::cidr_address(&req.address)?)
        } else if let Some(pool) = self.state.ipam_pools6.get_mut(&req.pool_id) {
            pool.addresses.remove(&wire::cidr_address6(&req.address)?)
        } else {
            false
        };
        if released {
            self.save()?;
        }
        Ok(json!({}))
    }
}

/// Whether a container record is one of Docker's endpoints.
pub(super) fn is_docker(c: &Container) -> bool {
    matches!(c.sandbox, Sandbox::Docker(_))
}
