//! A simulated LAN for the macvlan driver: a switch (a namespace holding a bridge), the
//! node's second interface `lan0` plugged into it with no address, a LAN host and a
//! router on it. Everything is in namespaces the test made.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};

use crate::netns::{Netns, Sandbox};

/// `netd network create` flags of a macvlan network on the sandbox's uplink: containers
/// on the client's LAN (10.200.0.0/24, the client at .1), addressed from .128.
pub const ON_UPLINK_FLAGS: [&str; 10] = [
    "-d",
    "macvlan",
    "--subnet",
    "10.200.0.0/24",
    "--gateway",
    "10.200.0.1",
    "--ip-range",
    "10.200.0.128/25",
    "-o",
    "parent=uplink0",
];

/// The IPv6 side of `ON_UPLINK_FLAGS`: the client's LAN's IPv6 prefix (2001:db8:200::/64,
/// the client at ::1, the node at ::2), containers addressed from ::100.
pub const ON_UPLINK_FLAGS6: [&str; 7] = [
    "--ipv6",
    "--subnet",
    "2001:db8:200::/64",
    "--gateway",
    "2001:db8:200::1",
    "--ip-range",
    "2001:db8:200::100/120",
];

pub struct Lan {
    pub switch: Netns,
    pub host: Netns,
    pub router: Netns,
}

impl Lan {
    /// The node's interface on the LAN: the macvlan networks' parent.
    pub const PARENT: &str = "lan0";
    pub const SUBNET: &str = "192.168.77.0/24";
    pub const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
    pub const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);

    /// The LAN's IPv6 prefix (`add_ipv6`), the router at `ROUTER6`, the host at `HOST6`.
    pub const SUBNET6: &str = "fd00:77::/64";
    pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
    pub const HOST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x10);

    /// The LAN, with the node of `sb` on it.
    pub fn new(sb: &Sandbox) -> Result<Lan> {
        let base = sb.node.name.trim_end_matches("-node").to_string();
        let lan = Lan {
            switch: Netns::new(&format!("{base}-sw"))?,
            host: Netns::new(&format!("{base}-lanh"))?,
            router: Netns::new(&format!("{base}-rtr"))?,
        };
        lan.switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.switch.ip(&["link", "set", "br0", "up"])?;
        lan.plug(&sb.node, Self::PARENT, "swnode", None)?;
        lan.plug(&lan.host, "eth0", "swhost", Some("192.168.77.10/24"))?;
        lan.plug(&lan.router, "eth0", "swrtr", Some("192.168.77.1/24"))?;
        Ok(lan)
    }

    /// IPv6 on the LAN too: the router and the host at their `SUBNET6` addresses (no
    /// duplicate address detection: usable at once).
    pub fn add_ipv6(&self) -> Result<()> {
        for (ns, a) in [(&self.router, Self::ROUTER6), (&self.host, Self::HOST6)] {
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
        }
        Ok(())
    }

    /// Another address of the LAN host's: one a laptop took for itself.
    pub fn host_takes(&self, address: &str) -> Result<()> {
        let mut args = vec!["addr", "add", address, "dev", "eth0"];
        if address.contains(':') {
            // Held at once, as a host holds an address it has had for a while.
            args.push("nodad");
        }
        self.host.ip(&args).map(drop)
    }

    /// A veth from `ns` (as `ifname`, with `addr`) to a port `port` of the switch.
    fn plug(&self, ns: &Netns, ifname: &str, port: &str, addr: Option<&str>) -> Result<()> {
        crate::netns::plug(ns, ifname, addr, &self.switch, "br0", port)
    }

    /// The MAC the LAN host's neighbour table has for `ip` (after it talked to it).
    pub fn host_neighbour(&self, ip: impl Into<std::net::IpAddr>) -> Result<String> {
        let ip: std::net::IpAddr = ip.into();
        let out = self.host.ip(&["neigh", "show", &ip.to_string()])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return Ok(words.next().unwrap_or_default().to_string());
            }
        }
        bail!("the LAN host has no neighbour entry for {ip}: {text:?}")
    }

    /// Reflect frames back out of the node's switch port (a VEPA-capable switch).
    pub fn hairpin_node_port(&self) -> Result<()> {
        self.switch
            .exec(&["bridge", "link", "set", "dev", "swnode", "hairpin", "on"])
            .map(drop)
    }
}
