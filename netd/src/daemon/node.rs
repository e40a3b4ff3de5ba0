//! What the executor changes on the node, as a trait: links, addresses, routes and
//! sysctls, in the node's namespace or in the container's a plan is for. `LiveNode` is the
//! real one (rtnetlink); the executor's tests use a recording fake.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result};
use netd_common::user::link_local_for;

use crate::{
    driver::macvlan::{self, kernel_mode},
    endpoint,
    netlink::Netlink,
    netns,
    network_request::MacvlanMode,
    plan::{At, Inside},
    state::Shim,
    sysctl,
};

/// The prefix of the link-local addresses netd gives bridges and container interfaces.
const LINK_LOCAL_PREFIX: u8 = 64;

pub(super) trait Node {
    /// The container's loopback up; with `own`, IPv6 off for the links made in it later.
    async fn prepare_namespace(&self, own: bool) -> Result<()>;
    /// The bridge; IPv6 on with `gateway6` (and the link-local address of `mac`), off
    /// without.
    async fn ensure_bridge(
        &self,
        name: &str,
        gateway: Option<(Ipv4Addr, u8)>,
        gateway6: Option<(Ipv6Addr, u8)>,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<()>;
    async fn ensure_parent(&self, name: &str, made: bool) -> Result<()>;
    async fn ensure_shim(&self, shim: &Shim, parent: &str, routes: &[IpAddr]) -> Result<()>;
    async fn create_veth(&self, host: &str, peer: &str) -> Result<()>;
    async fn create_macvlan(&self, name: &str, parent: &str, mode: MacvlanMode) -> Result<()>;
    async fn set_mtu(&self, link: &str, mtu: u32) -> Result<()>;
    async fn set_mac(&self, link: &str, mac: [u8; 6]) -> Result<()>;
    fn ipv6_off(&self, link: &str) -> Result<()>;
    async fn join_bridge(&self, link: &str, bridge: &str, isolated: bool) -> Result<()>;
    async fn move_into_container(&self, link: &str) -> Result<()>;
    async fn configure(&self, link: &str, inside: &Inside) -> Result<()>;
    async fn host_route(&self, to: IpAddr, via: &str, src: IpAddr) -> Result<()>;
    async fn delete_host_route(&self, to: IpAddr, via: &str) -> Result<()>;
    /// Delete a link if it is there.
    async fn delete_link(&self, at: At, link: &str) -> Result<()>;
    async fn link_index(&self, link: &str) -> Result<Option<u32>>;
}

/// The node itself, and the namespace of the container a plan is for, if it has one.
pub(super) struct LiveNode<'a> {
    pub netlink: &'a Netlink,
    pub container: Option<&'a File>,
}

impl LiveNode<'_> {
    fn container(&self) -> Result<&File> {
        self.container
            .context("the step needs the container's namespace, and the plan has none")
    }

    async fn index_of(&self, link: &str) -> Result<u32> {
        self.netlink
            .link_index(link)
            .await?
            .with_context(|| format!("no link {link} on the node"))
    }
}

impl Node for LiveNode<'_> {
    async fn prepare_namespace(&self, own: bool) -> Result<()> {
        let ns = self.container()?;
        endpoint::bring_up_loopback(&Netlink::connect_in(ns)?).await?;
        if own {
            netns::run_in(ns, || sysctl::ipv6_off("default"))
                .context("turn IPv6 off in the container's namespace")?;
        }
        Ok(())
    }

    async fn ensure_bridge(
        &self,
        name: &str,
        gateway: Option<(Ipv4Addr, u8)>,
        gateway6: Option<(Ipv6Addr, u8)>,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<()> {
        let index = self.netlink.ensure_bridge(name, gateway, mac, mtu).await?;
        let Some(gateway6) = gateway6 else {
            return sysctl::ipv6_off(name)
                .with_context(|| format!("turn IPv6 off on bridge {name}"));
        };
        sysctl::ipv6_on(name).with_context(|| format!("turn IPv6 on on bridge {name}"))?;
        let link_local = (link_local_for(mac), LINK_LOCAL_PREFIX);
        self.netlink
            .ensure_addresses6(index, &[gateway6, link_local])
            .await
            .with_context(|| format!("give bridge {name} its IPv6 addresses"))
    }

    async fn ensure_parent(&self, name: &str, made: bool) -> Result<()> {
        macvlan::ensure_parent(self.netlink, name, made)
            .await
            .map(drop)
    }

    async fn ensure_shim(&self, shim: &Shim, parent: &str, routes: &[IpAddr]) -> Result<()> {
        let parent = self.index_of(parent).await?;
        macvlan::ensure_shim(self.netlink, parent, shim, routes)
            .await
            .map(drop)
    }

    async fn create_veth(&self, host: &str, peer: &str) -> Result<()> {
        self.netlink.create_veth(host, peer).await
    }

    async fn create_macvlan(&self, name: &str, parent: &str, mode: MacvlanMode) -> Result<()> {
        let parent = self.index_of(parent).await?;
        self.netlink
            .create_macvlan(name, parent, kernel_mode(mode))
            .await
    }

    async fn set_mtu(&self, link: &str, mtu: u32) -> Result<()> {
        self.netlink.set_mtu(self.index_of(link).await?, mtu).await
    }

    async fn set_mac(&self, link: &str, mac: [u8; 6]) -> Result<()> {
        self.netlink.set_mac(self.index_of(link).await?, mac).await
    }

    fn ipv6_off(&self, link: &str) -> Result<()> {
        sysctl::ipv6_off(link)
    }

    async fn join_bridge(&self, link: &str, bridge: &str, isolated: bool) -> Result<()> {
        let index = self.index_of(link).await?;
        let bridge = self
            .netlink
            .link_index(bridge)
            .await?
            .with_context(|| format!("bridge {bridge} is missing"))?;
        self.netlink.set_controller(index, bridge).await?;
        if isolated {
            self.netlink.set_port_isolated(index, true).await?;
        }
        self.netlink.up(index).await
    }

    async fn move_into_container(&self, link: &str) -> Result<()> {
        let ns = self.container()?;
        self.netlink
            .move_to_netns(self.index_of(link).await?, ns)
            .await
    }

    async fn configure(&self, link: &str, inside: &Inside) -> Result<()> {
        let ns = self.container()?;
        let netlink = Netlink::connect_in(ns)?;
        let index = netlink
            .link_index(link)
            .await?
            .with_context(|| format!("{link} not found inside the container's namespace"))?;
        let configured = async {
            netlink.rename(index, &inside.ifname).await?;
            let ifname = inside.ifname.clone();
            match inside.ipv6 {
                None => {
                    netns::run_in(ns, move || sysctl::ipv6_off(&ifname)).with_context(|| {
                        format!("turn IPv6 off on {} in the container", inside.ifname)
                    })?
                }
                Some(_) => netns::run_in(ns, move || {
                    sysctl::ipv6_on(&ifname)?;
                    sysctl::ipv6_on_loopback()
                })
                .with_context(|| {
                    format!("turn IPv6 on on {} and lo in the container", inside.ifname)
                })?,
            }
            if let Some(ip) = inside.ip {
                netlink.add_address(index, ip, inside.prefix).await?;
            }
            if let Some(v6) = &inside.ipv6 {
                let addrs = [(v6.ip, v6.prefix), (v6.link_local, LINK_LOCAL_PREFIX)];
                netlink.ensure_addresses6(index, &addrs).await?;
            }
            netlink.up(index).await?;
            endpoint::bring_up_loopback(&netlink).await?;
            if let Some(gateway) = inside.gateway {
                netlink.add_default_route(gateway).await?;
            }
            if let Some(gateway) = inside.ipv6.and_then(|v6| v6.gateway) {
                netlink.add_default_route6(gateway, index).await?;
            }
            anyhow::Ok(())
        };
        let result = configured.await;
        if result.is_err() && inside.remove_on_failure {
            // Half configured (renamed, addressed ...): removed by its index, whatever its
            // name is by now, so that no undo by name misses it or takes another's.
            let _ = netlink.delete_link(index).await;
        }
        result
    }

    async fn host_route(&self, to: IpAddr, via: &str, src: IpAddr) -> Result<()> {
        let index = self.index_of(via).await?;
        self.netlink.replace_host_route(to, index, src).await
    }

    async fn delete_host_route(&self, to: IpAddr, via: &str) -> Result<()> {
        match self.netlink.link_index(via).await? {
            Some(index) => self.netlink.delete_host_route(to, index).await,
            None => Ok(()),
        }
    }

    async fn delete_link(&self, at: At, link: &str) -> Result<()> {
        let netlink = match at {
            At::Node => self.netlink.clone(),
            At::Container => Netlink::connect_in(self.container()?)?,
        };
        if let Some(index) = netlink.link_index(link).await? {
            netlink.delete_link(index).await?;
        }
        Ok(())
    }

    async fn link_index(&self, link: &str) -> Result<Option<u32>> {
        self.netlink.link_index(link).await
    }
}
