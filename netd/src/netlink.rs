//! Links, addresses and routes over rtnetlink, in the namespace the connection was opened
//! in. No shelling out to `ip`.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
};

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags},
    link::{LinkAttribute, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
};
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkIpVlan, LinkMacVlan, LinkUnspec, LinkVeth, LinkVlan,
    LinkVxlan, RouteMessageBuilder,
};

use crate::netns;

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the calling thread's network namespace.
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("open rtnetlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A receiver that gets a message whenever an IPv4 or IPv6 address is added to or
    /// removed from a link of this namespace (RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR); its
    /// sender closes if the socket fails.
    pub fn watch_addresses() -> Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
        use rtnetlink::sys::{AsyncSocket, SocketAddr};
        let (mut conn, _handle, mut messages) =
            rtnetlink::new_connection().context("open rtnetlink socket")?;
        conn.socket_mut()
            .socket_mut()
            .bind(&SocketAddr::new(
                0,
                rtnetlink::constants::RTMGRP_IPV4_IFADDR | rtnetlink::constants::RTMGRP_IPV6_IFADDR,
            ))
            .context("subscribe to address changes")?;
        tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            use futures::StreamExt;
            while messages.next().await.is_some() {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// A connection whose socket lives in namespace `ns` (a socket keeps the namespace it
    /// was created in), driven by the current runtime.
    pub fn connect_in(ns: &File) -> Result<Self> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle) = netns::run_in(ns, move || {
            let _guard = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection().context("open rtnetlink socket")?;
            Ok((conn, handle))
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The link named `name`, if there is one.
    async fn link(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(e).with_context(|| format!("look up link {name}")),
        }
    }

    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name).await?.map(|l| l.header.index))
    }

    pub async fn link_name(&self, index: u32) -> Result<String> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await?
            .with_context(|| format!("no link with index {index}"))?;
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .with_context(|| format!("link {index} has no name"))
    }

    /// The bridge `name` with `gateway/prefix` on it, MAC address `mac`, up, with `mtu` if
    /// given; created if missing. The MAC is set, as Docker does, so that it does not
    /// change as ports join and leave (the kernel otherwise takes the lowest port's).
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gateway: Option<(Ipv4Addr, u8)>,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<u32> {
        let index = match self.link_index(name).await? {
            Some(index) => index,
            None => {
                self.handle
                    .link()
                    .add(LinkBridge::new(name).build())
                    .execute()
                    .await
                    .with_context(|| format!("create bridge {name}"))?;
                self.link_index(name)
                    .await?
                    .with_context(|| format!("bridge {name} vanished"))?
            }
        };
        if let Some((gateway, prefix)) = gateway {
            self.ensure_address(index, gateway, prefix).await?;
        }
        if self.link_mac(name).await? != Some(mac) {
            self.set_mac(index, mac).await?;
        }
        if let Some(mtu) = mtu {
            self.set_mtu(index, mtu).await?;
        }
        self.up(index).await?;
        Ok(index)
    }

    /// IPv6 addresses on link `index` without duplicate address detection (they are
    /// usable at once, and netd's IPAM already made them unique); those it has already
    /// are left as they are.
    pub async fn ensure_addresses6(&self, index: u32, addrs: &[(Ipv6Addr, u8)]) -> Result<()> {
        let present = self.ipv6_addresses().await?;
        for &(addr, prefix) in addrs {
            if present
                .iter()
                .any(|(i, net)| *i == index && net.addr() == addr)
            {
                continue;
            }
            let mut add = self.handle.address().add(index, IpAddr::V6(addr), prefix);
            let msg = add.message_mut();
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            add.execute()
                .await
                .with_context(|| format!("add address {addr}/{prefix} to link {index}"))?;
        }
        Ok(())
    }

    pub async fn create_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .with_context(|| format!("create veth pair {name}/{peer}"))
    }

    /// A macvlan link on `parent`, down.
    pub async fn create_macvlan(
        &self,
        name: &str,
        parent: u32,
        mode: netlink_packet_route::link::MacVlanMode,
    ) -> Result<()> {
        self.handle
            .link()
            .add(LinkMacVlan::new(name, parent, mode).build())
            .execute()
            .await
            .with_context(|| format!("create macvlan {name}"))
    }

    /// Whether the kernel makes links of `kind`: one is made on `parent` and deleted at
    /// once; `false` when the kernel refuses the type (`EOPNOTSUPP`).
    pub async fn probe_link_kind(
        &self,
        kind: crate::driver::macvlan::ProbeKind,
        parent: u32,
    ) -> Result<bool> {
        use crate::driver::macvlan::ProbeKind;
        let name = format!("ndq{}", std::process::id() % 1_000_000);
        let msg = match kind {
            ProbeKind::Ipvlan => {
                LinkIpVlan::new(&name, parent, netlink_packet_route::link::IpVlanMode::L2).build()
            }
            ProbeKind::Vlan => LinkVlan::new(&name, parent, 4094).build(),
        };
        match self.handle.link().add(msg).execute().await {
            Ok(()) => {
                if let Some(index) = self.link_index(&name).await? {
                    self.delete_link(index).await?;
                }
                Ok(true)
            }
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.map(|c| -c.get()) == Some(libc::EOPNOTSUPP) =>
            {
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("ask the kernel for a {kind:?} link")),
        }
    }

    /// Apply a link change (`ip link set`), naming it in the error.
    async fn set_link(&self, change: LinkMessage, what: impl FnOnce() -> String) -> Result<()> {
        self.handle
            .link()
            .set(change)
            .execute()
            .await
            .with_context(what)
    }

    /// Make bridge port `index` isolated (or not): isolated ports exchange no frame with
    /// each other, only with the bridge itself and ports that are not isolated
    /// (`ip link set dev X type bridge_slave isolated on`).
    pub async fn set_port_isolated(&self, index: u32, isolated: bool) -> Result<()> {
        let change = LinkBridgePort::new(index).isolated(isolated).build();
        self.handle
            .link()
            .add(change)
            .set_flags(NLM_F_REQUEST | NLM_F_ACK)
            .execute()
            .await
            .with_context(|| format!("set bridge port {index} isolated {isolated}"))
    }

    pub async fn set_controller(&self, index: u32, bridge: u32) -> Result<()> {
        let change = LinkUnspec::new_with_index(index).controller(bridge).build();
        self.set_link(change, || format!("attach link {index} to bridge {bridge}"))
            .await
    }

    pub async fn move_to_netns(&self, index: u32, ns: &File) -> Result<()> {
        let change = LinkUnspec::new_with_index(index)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        self.set_link(change, || {
            format!("move link {index} into the container's namespace")
        })
        .await
    }

    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        let change = LinkUnspec::new_with_index(index)
            .name(name.to_string())
            .build();
        self.set_link(change, || format!("rename link {index} to {name}"))
            .await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let change = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set_link(change, || format!("set MTU {mtu} on link {index}"))
            .await
    }

    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        let change = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.set_link(change, || format!("set the MAC address of link {index}"))
            .await
    }

    /// The MAC address of link `name`, if it exists and has one.
    pub async fn link_mac(&self, name: &str) -> Result<Option<[u8; 6]>> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Address(mac) => mac.as_slice().try_into().ok(),
                _ => None,
            })
        }))
    }

    /// The MTU of link `name`, if it exists.
    pub async fn link_mtu(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        }))
    }

    /// A VXLAN device in external mode (collect_md: the sender sets the VNI and the remote
    /// per packet) on UDP `port`, learning off, with `mtu`, up; made if missing.
    pub async fn ensure_vxlan(&self, name: &str, port: u16, mtu: u32) -> Result<u32> {
        if self.link_index(name).await?.is_none() {
            let link = LinkVxlan::new(name, 0)
                .port(port)
                .collect_metadata(true)
                .learning(false)
                .build();
            self.handle
                .link()
                .add(link)
                .execute()
                .await
                .with_context(|| format!("create VXLAN device {name}"))?;
        }
        let index = self
            .link_index(name)
            .await?
            .with_context(|| format!("VXLAN device {name} vanished"))?;
        self.set_mtu(index, mtu).await?;
        self.up(index).await?;
        Ok(index)
    }

    /// Every link of the namespace: index and name.
    pub async fn links(&self) -> Result<Vec<(u32, String)>> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.context("list links")? {
            if let Some(name) = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }) {
                out.push((msg.header.index, name));
            }
        }
        Ok(out)
    }

    pub async fn up(&self, index: u32) -> Result<()> {
        let change = LinkUnspec::new_with_index(index).up().build();
        self.set_link(change, || format!("set link {index} up"))
            .await
    }

    pub async fn delete_link(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .with_context(|| format!("delete link {index}"))
    }

    /// IPv4 address `addr/prefix` on link `index`, unless it has it already.
    pub async fn ensure_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let has = self
            .ipv4_addresses()
            .await?
            .iter()
            .any(|(i, net)| *i == index && net.addr() == addr);
        match has {
            true => Ok(()),
            false => self.add_address(index, addr, prefix).await,
        }
    }

    pub async fn add_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
            .with_context(|| format!("add address {addr}/{prefix} to link {index}"))
    }

    /// The route to `dst` alone (/32, /128) through link `oif`, from `src` (of its
    /// family); replaced if there is one.
    pub async fn replace_host_route(&self, dst: IpAddr, oif: u32, src: IpAddr) -> Result<()> {
        let route = match (dst, src) {
            (IpAddr::V4(dst), IpAddr::V4(src)) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst, 32)
                .output_interface(oif)
                .pref_source(src)
                .build(),
            (IpAddr::V6(dst), IpAddr::V6(src)) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst, 128)
                .output_interface(oif)
                .pref_source(src)
                .build(),
            _ => bail!("a route to {dst} from {src}: not one family"),
        };
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .with_context(|| format!("add route to {dst} through link {oif}"))
    }

    /// Remove the route to `dst` alone through link `oif`, if there is one.
    pub async fn delete_host_route(&self, dst: IpAddr, oif: u32) -> Result<()> {
        let route = match dst {
            IpAddr::V4(dst) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst, 32)
                .output_interface(oif)
                .build(),
            IpAddr::V6(dst) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst, 128)
                .output_interface(oif)
                .build(),
        };
        match self.handle.route().del(route).execute().await {
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.map(|c| -c.get()) == Some(libc::ESRCH) =>
            {
                Ok(())
            }
            other => other.with_context(|| format!("remove route to {dst} through link {oif}")),
        }
    }

    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .with_context(|| format!("add default route via {gateway}"))
    }

    /// The default IPv6 route via `gateway` on link `oif` (where its subnet's address is),
    /// on-link: IPv6 refuses a gateway it cannot resolve to a live route at that moment
    /// ("No route to host"), which a veth whose peer is not up yet does not have.
    pub async fn add_default_route6(&self, gateway: Ipv6Addr, oif: u32) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gateway)
            .output_interface(oif)
            .onlink()
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .with_context(|| format!("add default IPv6 route via {gateway}"))
    }

    /// Every address of the namespace, both families, with its link index: its own address
    /// (`IFA_LOCAL`, which IPv6 leaves out but for point-to-point links; `IFA_ADDRESS`
    /// then).
    async fn addresses(&self) -> Result<Vec<(u32, IpNet)>> {
        let mut out = Vec::new();
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.context("list addresses")? {
            let find = |local: bool| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) if local => Some(*ip),
                    AddressAttribute::Address(ip) if !local => Some(*ip),
                    _ => None,
                })
            };
            if let Some(ip) = find(true).or_else(|| find(false)) {
                out.push((msg.header.index, IpNet::new(ip, msg.header.prefix_len)?));
            }
        }
        Ok(out)
    }

    /// Every IPv4 address of the namespace, with its link index.
    pub async fn ipv4_addresses(&self) -> Result<Vec<(u32, Ipv4Net)>> {
        Ok(self
            .addresses()
            .await?
            .into_iter()
            .filter_map(|(i, net)| match net {
                IpNet::V4(n) => Some((i, n)),
                IpNet::V6(_) => None,
            })
            .collect())
    }

    /// Every IPv6 address of the namespace, with its link index.
    pub async fn ipv6_addresses(&self) -> Result<Vec<(u32, Ipv6Net)>> {
        Ok(self
            .addresses()
            .await?
            .into_iter()
            .filter_map(|(i, net)| match net {
                IpNet::V6(n) => Some((i, n)),
                IpNet::V4(_) => None,
            })
            .collect())
    }

    /// The routes `query` lists: destination and output link.
    async fn routes(&self, query: RouteMessage) -> Result<Vec<(IpNet, Option<u32>)>> {
        let mut out = Vec::new();
        let unspecified = match query.header.address_family {
            netlink_packet_route::AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let mut routes = self.handle.route().get(query).execute();
        while let Some(msg) = routes.try_next().await.context("list routes")? {
            let mut dst = unspecified;
            let mut oif = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = IpAddr::V4(*a),
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = IpAddr::V6(*a),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            out.push((IpNet::new(dst, msg.header.destination_prefix_length)?, oif));
        }
        Ok(out)
    }

    /// Every IPv4 route of the main table: destination and output link.
    pub async fn ipv4_routes(&self) -> Result<Vec<(Ipv4Net, Option<u32>)>> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        Ok(self
            .routes(query)
            .await?
            .into_iter()
            .filter_map(|(dst, oif)| match dst {
                IpNet::V4(n) => Some((n, oif)),
                IpNet::V6(_) => None,
            })
            .collect())
    }

    /// Every IPv6 route of the main table: destination and output link.
    pub async fn ipv6_routes(&self) -> Result<Vec<(Ipv6Net, Option<u32>)>> {
        let query = RouteMessageBuilder::<Ipv6Addr>::new().build();
        Ok(self
            .routes(query)
            .await?
            .into_iter()
            .filter_map(|(dst, oif)| match dst {
                IpNet::V6(n) => Some((n, oif)),
                IpNet::V4(_) => None,
            })
            .collect())
    }
}
