//! IPv6 address management: a network's IPv6 subnet (given, or a /64 of the node's own
//! ULA /48), its gateway and range, and addresses handed out inside it in the same serial
//! order as IPv4 (`ipam::next_free`). Pure logic, like `ipam`.

use std::{collections::BTreeSet, net::Ipv6Addr};

use anyhow::{Result, anyhow, bail};
use ipnet::Ipv6Net;

use crate::ipam;

/// The prefix of every network's subnet netd chooses (Docker's: one /64 of the /48).
pub const DEFAULT_PREFIX: u8 = 64;

/// A network's IPv6 addresses: where it lives, its gateway, and where dynamic addresses
/// come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool6 {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
    pub range: Option<Ipv6Net>,
}

/// IPv6 blocks no network may use or overlap (RFC 4291): container addresses there would
/// clash with the link-local addresses netd gives every interface, or never be routed.
const RESERVED: [(&str, &str); 3] = [
    (
        "::/8",
        "reserved for the unspecified, loopback and IPv4-mapped addresses",
    ),
    ("fe80::/10", "reserved for link-local addresses"),
    ("ff00::/8", "reserved for multicast"),
];

/// The /48 of unique local addresses (RFC 4193) a node with this 40-bit global ID owns:
/// `fd` and the ID. Networks without a given IPv6 subnet take /64s of it.
pub fn ula_base(global_id: u64) -> Ipv6Net {
    let id = u128::from(global_id & 0xff_ffff_ffff);
    let addr = (0xfd_u128 << 120) | (id << 80);
    Ipv6Net::new(Ipv6Addr::from(addr), 48).expect("a /48 is a valid prefix")
}

/// A new random 40-bit global ID (RFC 4193 section 3.2: random, so that two sites' ULAs
/// are unlikely to collide).
pub fn random_global_id() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom into a valid buffer of that length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let t = crate::unix_now() ^ (u64::from(std::process::id()) << 24);
        bytes = t.to_le_bytes();
    }
    u64::from_le_bytes(bytes) & 0xff_ffff_ffff
}

/// The first /64 of the node's ULA /48 (`base`) that overlaps none of `in_use` (the node's
/// IPv6 routes and addresses, the other networks' IPv6 subnets).
pub fn choose_subnet(base: Ipv6Net, in_use: &[Ipv6Net]) -> Result<Ipv6Net> {
    let pools = base.subnets(DEFAULT_PREFIX).into_iter().flatten();
    ipam::first_free(pools, in_use).ok_or_else(|| {
        anyhow!(
            "could not find an available, non-overlapping IPv6 /64 in the node's pool {base} to assign to the network"
        )
    })
}

/// Parse an IPv6 `--subnet`: a CIDR with no host bits set, outside the reserved blocks,
/// with room for the subnet-router anycast address, a gateway and a container.
pub fn parse_subnet(s: &str) -> Result<Ipv6Net> {
    parse_subnet_of("--subnet", s)
}

/// `parse_subnet` for the flag `flag` (`--fixed-cidr-v6`).
pub fn parse_subnet_of(flag: &str, s: &str) -> Result<Ipv6Net> {
    let net: Ipv6Net = s
        .parse()
        .map_err(|_| anyhow!("invalid {flag} {s}: expected an IPv6 CIDR such as fd00:1::/64"))?;
    if net.network() != net.addr() {
        bail!(
            "invalid {flag} {s}: it should be {} (the address has host bits set)",
            net.trunc()
        );
    }
    if let Some((reserved, why)) = RESERVED
        .iter()
        .map(|(n, why)| (n.parse::<Ipv6Net>().expect("a valid CIDR"), why))
        .find(|(r, _)| ipam::overlaps(&net, r))
    {
        bail!("invalid {flag} {s}: it overlaps {reserved}, {why}");
    }
    if net.prefix_len() > 126 {
        bail!(
            "invalid {flag} {s}: a /{} has no room for a gateway and containers (use /126 or larger; /64 is usual)",
            net.prefix_len()
        );
    }
    Ok(net)
}

fn parse_addr(flag: &str, s: &str) -> Result<Ipv6Addr> {
    s.parse()
        .map_err(|_| anyhow!("invalid {flag} {s}: expected an IPv6 address such as fd00:1::2"))
}

/// An address containers may have on `subnet`: inside it, and not its subnet-router
/// anycast address (the first, RFC 4291 2.6.1).
pub fn is_host(subnet: &Ipv6Net, addr: Ipv6Addr) -> bool {
    subnet.contains(&addr) && addr != subnet.network()
}

/// Check an IPv6 `--gateway` and `--ip-range` against `subnet` and build the pool.
pub fn plan(subnet: Ipv6Net, gateway: Option<&str>, ip_range: Option<&str>) -> Result<Pool6> {
    let gateway = match gateway {
        Some(g) => {
            let addr = parse_addr("--gateway", g)?;
            if !is_host(&subnet, addr) {
                bail!(
                    "invalid --gateway {g}: not a host address of subnet {subnet} (the first address is the subnet-router anycast address)"
                );
            }
            addr
        }
        None => first_host(&subnet),
    };
    let range = match ip_range {
        Some(r) => {
            let net: Ipv6Net = r.parse().map_err(|_| {
                anyhow!("invalid --ip-range {r}: expected an IPv6 CIDR inside the subnet")
            })?;
            if net.network() != net.addr() {
                bail!(
                    "invalid --ip-range {r}: it should be {} (the address has host bits set)",
                    net.trunc()
                );
            }
            if !subnet.contains(&net) {
                bail!("invalid --ip-range {r}: not inside subnet {subnet}");
            }
            Some(net)
        }
        None => None,
    };
    let pool = Pool6 {
        subnet,
        gateway,
        range,
    };
    if ipam::next_free(span(&pool), None, &unusable(&pool, &BTreeSet::new())).is_none() {
        bail!(
            "invalid --ip-range {}: it holds no address for containers",
            ip_range.unwrap_or_default()
        );
    }
    Ok(pool)
}

/// A network's default pool when only the subnet is known: the gateway is its first host
/// address (`::1` of it).
pub fn default_pool(subnet: Ipv6Net) -> Pool6 {
    Pool6 {
        subnet,
        gateway: first_host(&subnet),
        range: None,
    }
}

fn first_host(subnet: &Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.network()) + 1)
}

fn span(pool: &Pool6) -> (u128, u128) {
    let span = pool.range.unwrap_or(pool.subnet);
    (span.network().into(), span.broadcast().into())
}

/// What dynamic allocation never hands out: `taken`, the gateway, and the subnet-router
/// anycast address.
fn unusable(pool: &Pool6, taken: &BTreeSet<Ipv6Addr>) -> BTreeSet<u128> {
    let special = [pool.gateway, pool.subnet.network()];
    taken.iter().chain(&special).map(|a| (*a).into()).collect()
}

/// The next free address after `last` (wrapping), in Docker's serial order.
pub fn allocate(
    pool: &Pool6,
    last: Option<Ipv6Addr>,
    taken: &BTreeSet<Ipv6Addr>,
) -> Result<Ipv6Addr> {
    let found = ipam::next_free(span(pool), last.map(u128::from), &unusable(pool, taken));
    found.map(Ipv6Addr::from).ok_or_else(|| {
        anyhow!(
            "no available IPv6 addresses on the network's {} {}",
            if pool.range.is_some() {
                "range"
            } else {
                "subnet"
            },
            pool.range.unwrap_or(pool.subnet)
        )
    })
}

/// Check a static address (`--ip6`): a free host address of the subnet, not the gateway.
pub fn check_static(pool: &Pool6, s: &str, taken: &BTreeSet<Ipv6Addr>) -> Result<Ipv6Addr> {
    let addr = parse_addr("--ip6", s)?;
    if !pool.subnet.contains(&addr) {
        bail!(
            "invalid --ip6 {s}: not an address of the network's IPv6 subnet {}",
            pool.subnet
        );
    }
    if addr == pool.subnet.network() {
        bail!(
            "invalid --ip6 {s}: it is the subnet-router anycast address of {}",
            pool.subnet
        );
    }
    if addr == pool.gateway {
        bail!("invalid --ip6 {s}: it is the network's IPv6 gateway");
    }
    if taken.contains(&addr) {
        bail!("invalid --ip6 {s}: Address already in use");
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_ula_base_is_fd_and_the_global_id_and_stable_for_an_id() {
        assert_eq!(ula_base(0x42_98fc_1c14), net("fd42:98fc:1c14::/48"));
        assert_eq!(ula_base(0), net("fd00::/48"));
        // Only 40 bits are the ID.
        assert_eq!(ula_base(0xff_0000_0000_0001), net("fd00:0:1::/48"));
        assert_eq!(ula_base(0x12_3456_789a), ula_base(0x12_3456_789a));
        let id = random_global_id();
        assert!(id < 1 << 40);
        assert!(parse_subnet(&ula_base(id).to_string()).is_ok());
    }

    #[test]
    fn subnets_are_the_base_s_64s_in_order_skipping_those_in_use() {
        let base = net("fd42:98fc:1c14::/48");
        assert_eq!(
            choose_subnet(base, &[]).unwrap(),
            net("fd42:98fc:1c14::/64")
        );
        let used = [
            net("fd42:98fc:1c14::/64"),
            // A route or address inside a /64 blocks it.
            net("fd42:98fc:1c14:1::5/128"),
            // A larger route blocks every /64 in it.
            net("fd42:98fc:1c14:2::/63"),
            net("2001:db8::/32"),
        ];
        assert_eq!(
            choose_subnet(base, &used).unwrap(),
            net("fd42:98fc:1c14:4::/64")
        );
        let e = choose_subnet(base, &[net("fd00::/8")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("could not find an available, non-overlapping IPv6 /64"),
            "{e}"
        );
    }

    #[test]
    fn subnets_are_checked() {
        assert_eq!(parse_subnet("fd00:1::/64").unwrap(), net("fd00:1::/64"));
        for (bad, why) in [
            ("fd00:1::5/64", "it should be fd00:1::/64"),
            ("fd00::/127", "no room for a gateway"),
            ("fd00::", "expected an IPv6 CIDR"),
            ("10.0.0.0/8", "expected an IPv6 CIDR"),
            ("fe80::/64", "link-local"),
            ("ff02::/16", "multicast"),
            ("::/0", "it overlaps ::/8"),
            ("::ffff:0:0/96", "IPv4-mapped"),
        ] {
            let e = parse_subnet(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid --subnet {bad}: ")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn gateway_and_range_must_be_inside_the_subnet() {
        let s = net("fd00:1::/64");
        let pool = plan(s, None, None).unwrap();
        assert_eq!(pool.gateway, ip("fd00:1::1"));
        assert_eq!(
            plan(s, Some("fd00:1::fe"), None).unwrap().gateway,
            ip("fd00:1::fe")
        );
        for bad in ["fd00:2::1", "fd00:1::", "10.0.0.1", "x"] {
            let e = plan(s, Some(bad), None).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid --gateway {bad}")), "{e}");
        }
        assert_eq!(
            plan(s, None, Some("fd00:1::100/120")).unwrap().range,
            Some(net("fd00:1::100/120"))
        );
        for (bad, why) in [
            ("fd00:2::/120", "not inside subnet"),
            ("fd00::/48", "not inside subnet"),
            ("fd00:1::1/120", "host bits set"),
            ("fd00:1::", "expected an IPv6 CIDR"),
        ] {
            let e = plan(s, None, Some(bad)).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid --ip-range {bad}")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
        // A range of the anycast address and the gateway only.
        let e = plan(s, None, Some("fd00:1::/127")).unwrap_err().to_string();
        assert!(e.contains("holds no address for containers"), "{e}");
    }

    #[test]
    fn allocation_is_serial_after_the_gateway_and_wraps() {
        let pool = plan(net("fd00:1::/64"), None, None).unwrap();
        let mut taken = BTreeSet::new();
        let a = allocate(&pool, None, &taken).unwrap();
        assert_eq!(a, ip("fd00:1::2"));
        taken.insert(a);
        let b = allocate(&pool, Some(a), &taken).unwrap();
        assert_eq!(b, ip("fd00:1::3"));
        // Released: not reused at once.
        taken.remove(&a);
        taken.insert(b);
        assert_eq!(allocate(&pool, Some(b), &taken).unwrap(), ip("fd00:1::4"));
        // After the subnet's last address (no broadcast in IPv6: it is usable), the first
        // free one, never the anycast address.
        let last = ip("fd00:1::ffff:ffff:ffff:ffff");
        assert_eq!(
            allocate(&pool, Some(ip("fd00:1::ffff:ffff:ffff:fffe")), &taken).unwrap(),
            last
        );
        assert_eq!(
            allocate(&pool, Some(last), &taken).unwrap(),
            ip("fd00:1::2")
        );
        // A gateway elsewhere: the first address after the anycast one is handed out.
        let pool = plan(net("fd00:1::/64"), Some("fd00:1::ff"), None).unwrap();
        assert_eq!(
            allocate(&pool, None, &BTreeSet::new()).unwrap(),
            ip("fd00:1::1")
        );
    }

    #[test]
    fn a_full_range_is_a_clear_error() {
        let pool = plan(net("fd00:1::/64"), None, Some("fd00:1::/126")).unwrap();
        let mut taken = BTreeSet::new();
        for want in ["fd00:1::2", "fd00:1::3"] {
            let a = allocate(&pool, None, &taken).unwrap();
            assert_eq!(a, ip(want));
            taken.insert(a);
        }
        let e = allocate(&pool, None, &taken).unwrap_err().to_string();
        assert_eq!(
            e,
            "no available IPv6 addresses on the network's range fd00:1::/126"
        );
    }

    #[test]
    fn static_addresses_are_checked() {
        let pool = plan(net("fd00:1::/64"), None, None).unwrap();
        let taken = BTreeSet::from([ip("fd00:1::7")]);
        assert_eq!(
            check_static(&pool, "fd00:1::9", &taken).unwrap(),
            ip("fd00:1::9")
        );
        for (bad, why) in [
            ("fd00:1::7", "Address already in use"),
            ("fd00:1::1", "the network's IPv6 gateway"),
            ("fd00:1::", "subnet-router anycast"),
            (
                "fd00:2::9",
                "not an address of the network's IPv6 subnet fd00:1::/64",
            ),
            ("10.0.0.2", "expected an IPv6 address"),
        ] {
            let e = check_static(&pool, bad, &taken).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid --ip6 {bad}: ")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
