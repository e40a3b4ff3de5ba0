//! Network sysctls, written through /proc/sys/net, which follows the network namespace of
//! the writing thread (so a thread that entered a container's namespace writes its
//! settings). IPv6 is turned off where netd wires an interface, until netd polices IPv6:
//! a container's router advertisement must configure nobody (Docker's fix for
//! CVE-2020-13401).

use std::io::ErrorKind;

use anyhow::{Context, Result};

/// Set `/proc/sys/NAME` to `value`.
pub fn write(name: &str, value: &str) -> Result<()> {
    std::fs::write(format!("/proc/sys/{name}"), value)
        .with_context(|| format!("set sysctl {name}={value}"))
}

/// IPv6 off on interface `ifname` (or `default`, for interfaces made later) of the
/// calling thread's namespace: no address, no router advertisement taken. A kernel
/// without IPv6 has nothing to turn off.
pub fn ipv6_off(ifname: &str) -> Result<()> {
    for (key, value) in [("accept_ra", "0"), ("disable_ipv6", "1")] {
        match write(&format!("net/ipv6/conf/{ifname}/{key}"), value) {
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == ErrorKind::NotFound) =>
            {
                return Ok(());
            }
            other => other?,
        }
    }
    Ok(())
}

/// A link of the node that must not take part in the node's IPv4 either: it never
/// answers ARP (`arp_ignore=8`), nothing it receives is forwarded, and only what its own
/// routes could have sent in is taken (`rp_filter=1`). With `ipv6_off`.
pub fn isolate(ifname: &str) -> Result<()> {
    ipv6_off(ifname)?;
    for (key, value) in [("arp_ignore", "8"), ("forwarding", "0"), ("rp_filter", "1")] {
        write(&format!("net/ipv4/conf/{ifname}/{key}"), value)?;
    }
    Ok(())
}

/// A link of the node that answers ARP only for its own address, and announces only its
/// own address as sender (`arp_ignore=1`, `arp_announce=2`): a shim on a LAN must not
/// claim the node's other addresses there.
pub fn arp_own_address_only(ifname: &str) -> Result<()> {
    write(&format!("net/ipv4/conf/{ifname}/arp_ignore"), "1")?;
    write(&format!("net/ipv4/conf/{ifname}/arp_announce"), "2")
}

/// Whether IPv6 is off on `ifname` of the calling thread's namespace (or absent).
pub fn ipv6_is_off(ifname: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"))
        .map_or(true, |v| v.trim() == "1")
}
