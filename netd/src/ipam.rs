//! IP address management: choosing and checking a network's IPv4 subnet, gateway and
//! range, and handing out addresses inside it, with the search both families share (the
//! IPv6 side is `ipam6`). Pure logic; the caller supplies what the node and the other
//! networks use.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{Result, bail};
use ipnet::{IpNet, Ipv4Net};

/// Docker's default pools, in Docker's order: 172.17.0.0/16 … 172.31.0.0/16, then
/// 192.168.0.0/16 cut into /20s.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (17..=31u8).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap());
    let twenties = (0..16u8).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).unwrap());
    sixteens.chain(twenties)
}

/// Whether two subnets share an address (of either family; never across families).
pub fn overlaps<N: Into<IpNet> + Copy>(a: &N, b: &N) -> bool {
    let (a, b): (IpNet, IpNet) = ((*a).into(), (*b).into());
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Refuse a given `--subnet` that overlaps one of `in_use` (each with what it is), in
/// Docker's words.
pub fn check_free<N: Into<IpNet> + Copy + std::fmt::Display>(
    subnet: &N,
    in_use: &[(N, String)],
) -> Result<()> {
    match in_use.iter().find(|(u, _)| overlaps(subnet, u)) {
        Some((_, what)) => bail!(
            "invalid --subnet {subnet}: Pool overlaps with other one on this address space ({what})"
        ),
        None => Ok(()),
    }
}

/// The first of `pools` that overlaps none of `in_use`.
pub fn first_free<N: Into<IpNet> + Copy>(
    mut pools: impl Iterator<Item = N>,
    in_use: &[N],
) -> Option<N> {
    pools.find(|pool| !in_use.iter().any(|used| overlaps(pool, used)))
}

/// The first default pool that overlaps none of `in_use` (the node's routes and addresses
/// and the other networks' subnets).
pub fn choose_subnet(in_use: &[Ipv4Net]) -> Result<Ipv4Net> {
    first_free(default_pools(), in_use).ok_or_else(|| {
        anyhow::anyhow!(
            "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
        )
    })
}

/// Docker's serial order, for both families (addresses as numbers): the first address of
/// `lo..=hi` after `last` that `unusable` does not hold, wrapping to `lo` after `hi`. The
/// search steps over unusable addresses only, so a /64 costs no more than a /24.
pub fn next_free(
    (lo, hi): (u128, u128),
    last: Option<u128>,
    unusable: &BTreeSet<u128>,
) -> Option<u128> {
    let first_free_in = |from: u128, to: u128| {
        let mut a = from;
        while unusable.contains(&a) {
            if a >= to {
                return None;
            }
            a += 1;
        }
        (a <= to).then_some(a)
    };
    let start = match last {
        Some(l) if (lo..hi).contains(&l) => l + 1,
        _ => lo,
    };
    first_free_in(start, hi)
        .or_else(|| (start > lo).then(|| first_free_in(lo, start - 1)).flatten())
}

/// A network's addresses: where it lives, its gateway, and where dynamic addresses come
/// from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub range: Option<Ipv4Net>,
}

/// Special-purpose IPv4 blocks (RFC 6890) no network may use or overlap.
const RESERVED: [(&str, &str); 5] = [
    ("0.0.0.0/8", "reserved for \"this network\" (RFC 1122)"),
    ("127.0.0.0/8", "reserved for loopback"),
    ("169.254.0.0/16", "reserved for link-local addresses"),
    ("224.0.0.0/4", "reserved for multicast"),
    (
        "240.0.0.0/4",
        "reserved for future use and the broadcast address",
    ),
];

/// Parse `--subnet`: an IPv4 CIDR with no host bits set, outside the special-purpose
/// blocks, and with room for a gateway and at least one container.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        anyhow::anyhow!("invalid --subnet {s}: expected an IPv4 CIDR such as 10.10.0.0/24")
    })?;
    if net.network() != net.addr() {
        bail!(
            "invalid --subnet {s}: it should be {} (the address has host bits set)",
            net.trunc()
        );
    }
    if let Some((reserved, why)) = RESERVED
        .iter()
        .map(|(n, why)| (n.parse::<Ipv4Net>().expect("a valid CIDR"), why))
        .find(|(r, _)| overlaps(&net, r))
    {
        bail!(
            "invalid --subnet {s}: it overlaps {reserved}, {why}; container addresses there would be dropped as martians or never routed"
        );
    }
    if net.prefix_len() > 30 {
        bail!(
            "invalid --subnet {s}: a /{} has no room for a gateway and containers (use /30 or larger)",
            net.prefix_len()
        );
    }
    Ok(net)
}

fn parse_addr(flag: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| {
        anyhow::anyhow!("invalid {flag} {s}: expected an IPv4 address such as 10.10.0.1")
    })
}

/// Check `--gateway` and `--ip-range` against `subnet` and build the pool.
pub fn plan(subnet: Ipv4Net, gateway: Option<&str>, ip_range: Option<&str>) -> Result<Pool> {
    let gateway = match gateway {
        Some(g) => {
            let addr = parse_addr("--gateway", g)?;
            if !is_host(&subnet, addr) {
                bail!("invalid --gateway {g}: not a host address of subnet {subnet}");
            }
            addr
        }
        None => first_host(&subnet),
    };
    let range = match ip_range {
        Some(r) => {
            let net: Ipv4Net = r.parse().map_err(|_| {
                anyhow::anyhow!("invalid --ip-range {r}: expected an IPv4 CIDR inside the subnet")
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
    let pool = Pool {
        subnet,
        gateway,
        range,
    };
    if next_free(span(&pool), None, &unusable(&pool, &BTreeSet::new())).is_none() {
        bail!(
            "invalid --ip-range {}: it holds no address for containers",
            ip_range.unwrap_or_default()
        );
    }
    Ok(pool)
}

/// A network's default pool when only the subnet is known.
pub fn default_pool(subnet: Ipv4Net) -> Pool {
    Pool {
        subnet,
        gateway: first_host(&subnet),
        range: None,
    }
}

fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Neither the network nor the broadcast address of `subnet`.
/// `--aux-address NAME=IP` entries: each a host address of the pool's subnet, not its
/// gateway, each name and address once.
pub fn aux_addresses(pool: &Pool, given: &[String]) -> Result<BTreeMap<String, Ipv4Addr>> {
    let mut out = BTreeMap::new();
    for entry in given {
        let (name, ip) = entry
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("invalid --aux-address {entry}: expected NAME=IP"))?;
        if name.is_empty() {
            bail!("invalid --aux-address {entry}: the name is empty");
        }
        let addr = parse_addr("--aux-address", ip)?;
        if !is_host(&pool.subnet, addr) {
            bail!(
                "invalid --aux-address {entry}: no matching subnet for aux-address {ip} (the network's subnet is {})",
                pool.subnet
            );
        }
        if addr == pool.gateway {
            bail!("invalid --aux-address {entry}: it is the network's gateway");
        }
        if out.values().any(|a| *a == addr) || out.insert(name.to_string(), addr).is_some() {
            bail!("invalid --aux-address {entry}: given twice");
        }
    }
    Ok(out)
}

/// `--aux-address` on a network without IPv4: refused, as its addresses are IPv4.
pub fn no_aux_addresses(given: &[String]) -> Result<BTreeMap<String, Ipv4Addr>> {
    match given.first() {
        Some(entry) => bail!(
            "invalid --aux-address {entry}: the network is IPv6-only (--ipv4=false), and auxiliary addresses are IPv4"
        ),
        None => Ok(BTreeMap::new()),
    }
}

pub fn is_host(subnet: &Ipv4Net, addr: Ipv4Addr) -> bool {
    subnet.contains(&addr) && addr != subnet.network() && addr != subnet.broadcast()
}

/// Where dynamic addresses come from, as numbers.
fn span(pool: &Pool) -> (u128, u128) {
    let span = pool.range.unwrap_or(pool.subnet);
    (
        u32::from(span.network()).into(),
        u32::from(span.broadcast()).into(),
    )
}

/// What dynamic allocation never hands out: `taken`, the gateway, and the subnet's
/// network and broadcast addresses.
fn unusable(pool: &Pool, taken: &BTreeSet<Ipv4Addr>) -> BTreeSet<u128> {
    let special = [pool.gateway, pool.subnet.network(), pool.subnet.broadcast()];
    taken
        .iter()
        .chain(&special)
        .map(|a| u32::from(*a).into())
        .collect()
}

/// The next free address after `last` (wrapping), Docker's serial order: not the gateway,
/// not in `taken`.
pub fn allocate(
    pool: &Pool,
    last: Option<Ipv4Addr>,
    taken: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let last = last.map(|l| u32::from(l).into());
    let found = next_free(span(pool), last, &unusable(pool, taken));
    // In the span of an IPv4 subnet: the number fits.
    found.map(|a| Ipv4Addr::from(a as u32)).ok_or_else(|| {
        anyhow::anyhow!(
            "no available IPv4 addresses on the network's {} {}",
            if pool.range.is_some() {
                "range"
            } else {
                "subnet"
            },
            pool.range.unwrap_or(pool.subnet)
        )
    })
}

/// Check a static address (`--ip`): a free host address of the subnet, not the gateway.
pub fn check_static(pool: &Pool, s: &str, taken: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr> {
    let addr = parse_addr("--ip", s)?;
    if !is_host(&pool.subnet, addr) {
        bail!(
            "invalid --ip {s}: not a host address of the network's subnet {}",
            pool.subnet
        );
    }
    if addr == pool.gateway {
        bail!("invalid --ip {s}: it is the network's gateway");
    }
    if taken.contains(&addr) {
        bail!("invalid --ip {s}: Address already in use");
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_given_subnet_overlapping_one_in_use_is_refused_saying_which() {
        let used = [(net("10.10.0.0/16"), "network red".to_string())];
        assert!(check_free(&net("10.11.0.0/24"), &used).is_ok());
        let e = check_free(&net("10.10.3.0/24"), &used)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid --subnet 10.10.3.0/24: Pool overlaps with other one on this address space (network red)"
        );
        let used6 = [(
            "fd00:1::/48".parse::<ipnet::Ipv6Net>().unwrap(),
            "x".to_string(),
        )];
        assert!(
            check_free(
                &"fd00:1:0:2::/64".parse::<ipnet::Ipv6Net>().unwrap(),
                &used6
            )
            .is_err()
        );
    }

    #[test]
    fn first_pool_is_docker0s_when_nothing_overlaps() {
        assert_eq!(
            choose_subnet(&[net("10.200.0.0/24")]).unwrap(),
            net("172.17.0.0/16")
        );
    }

    #[test]
    fn pools_that_overlap_a_host_route_are_skipped() {
        let used = [net("172.17.5.0/24"), net("172.16.0.0/12")];
        // 172.16/12 covers every 172.x/16 default, so the first /20 of 192.168 is next.
        assert_eq!(choose_subnet(&used).unwrap(), net("192.168.0.0/20"));
        assert_eq!(
            choose_subnet(&[net("172.17.5.0/24")]).unwrap(),
            net("172.18.0.0/16")
        );
        let used = [
            net("172.16.0.0/12"),
            net("192.168.0.0/20"),
            net("192.168.17.0/24"),
        ];
        assert_eq!(choose_subnet(&used).unwrap(), net("192.168.32.0/20"));
    }

    #[test]
    fn an_address_inside_a_pool_blocks_it() {
        // Callers leave the default route out; an address (as a /32) still counts.
        assert_eq!(
            choose_subnet(&[net("172.17.0.1/32")]).unwrap(),
            net("172.18.0.0/16")
        );
    }

    #[test]
    fn no_pool_left_is_a_clear_error() {
        let err = choose_subnet(&[net("172.16.0.0/12"), net("192.168.0.0/16")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("could not find an available, non-overlapping IPv4 address pool")
        );
    }

    #[test]
    fn subnets_are_checked() {
        assert_eq!(parse_subnet("10.1.0.0/16").unwrap(), net("10.1.0.0/16"));
        let e = parse_subnet("10.1.0.5/16").unwrap_err().to_string();
        assert!(e.contains("it should be 10.1.0.0/16"), "{e}");
        assert!(
            parse_subnet("10.1.0.0/31")
                .unwrap_err()
                .to_string()
                .contains("no room")
        );
        assert!(
            parse_subnet("fd00::/64")
                .unwrap_err()
                .to_string()
                .contains("--subnet")
        );
        assert!(parse_subnet("banana").is_err());
    }

    #[test]
    fn reserved_subnets_and_any_that_overlap_them_are_refused() {
        for (bad, reserved) in [
            ("0.0.0.0/8", "0.0.0.0/8"),
            ("0.1.2.0/24", "0.0.0.0/8"),
            ("127.0.0.0/8", "127.0.0.0/8"),
            ("127.5.0.0/16", "127.0.0.0/8"),
            ("169.254.0.0/16", "169.254.0.0/16"),
            ("169.254.3.0/24", "169.254.0.0/16"),
            ("224.0.0.0/4", "224.0.0.0/4"),
            ("239.1.0.0/16", "224.0.0.0/4"),
            ("240.0.0.0/24", "240.0.0.0/4"),
            ("255.255.255.0/24", "240.0.0.0/4"),
            // Larger than the reserved block: it contains it.
            ("0.0.0.0/1", "0.0.0.0/8"),
            ("128.0.0.0/1", "169.254.0.0/16"),
            ("192.0.0.0/2", "224.0.0.0/4"),
        ] {
            let e = parse_subnet(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "invalid --subnet {bad}: it overlaps {reserved}, reserved"
                )),
                "{bad}: {e}"
            );
        }
        for good in [
            "1.0.0.0/8",
            "126.0.0.0/8",
            "128.0.0.0/8",
            "169.253.0.0/16",
            "223.255.255.0/24",
        ] {
            assert!(parse_subnet(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn no_default_pool_is_reserved() {
        for pool in default_pools() {
            assert!(parse_subnet(&pool.to_string()).is_ok(), "{pool}");
        }
    }

    #[test]
    fn gateway_and_range_must_be_inside_the_subnet() {
        let s = net("10.1.0.0/24");
        assert_eq!(plan(s, None, None).unwrap().gateway, ip("10.1.0.1"));
        assert_eq!(
            plan(s, Some("10.1.0.254"), None).unwrap().gateway,
            ip("10.1.0.254")
        );
        for bad in ["10.2.0.1", "10.1.0.0", "10.1.0.255", "x"] {
            let e = plan(s, Some(bad), None).unwrap_err().to_string();
            assert!(e.contains("--gateway"), "{bad}: {e}");
        }
        assert_eq!(
            plan(s, None, Some("10.1.0.128/25")).unwrap().range,
            Some(net("10.1.0.128/25"))
        );
        for bad in ["10.2.0.0/25", "10.1.0.0/23", "10.1.0.1/25", "10.1.0.0"] {
            let e = plan(s, None, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("--ip-range"), "{bad}: {e}");
        }
    }

    #[test]
    fn allocation_is_serial_skips_gateway_and_taken_and_wraps() {
        let pool = plan(net("10.1.0.0/29"), None, None).unwrap();
        let mut taken = BTreeSet::new();
        let a = allocate(&pool, None, &taken).unwrap();
        assert_eq!(a, ip("10.1.0.2"));
        taken.insert(a);
        let b = allocate(&pool, Some(a), &taken).unwrap();
        assert_eq!(b, ip("10.1.0.3"));
        // Releasing .2 does not make it the next address: allocation goes on after .3.
        taken.remove(&a);
        taken.insert(b);
        assert_eq!(allocate(&pool, Some(b), &taken).unwrap(), ip("10.1.0.4"));
        // After the last host address it wraps to the first free one.
        taken.extend([ip("10.1.0.4"), ip("10.1.0.5")]);
        assert_eq!(
            allocate(&pool, Some(ip("10.1.0.6")), &taken).unwrap(),
            ip("10.1.0.2")
        );
        taken.extend([ip("10.1.0.2"), ip("10.1.0.6")]);
        let e = allocate(&pool, None, &taken).unwrap_err().to_string();
        assert!(e.contains("no available IPv4 addresses"), "{e}");
    }

    #[test]
    fn allocation_stays_inside_the_range() {
        let pool = plan(net("10.1.0.0/24"), None, Some("10.1.0.128/30")).unwrap();
        let mut taken = BTreeSet::new();
        for want in ["10.1.0.128", "10.1.0.129", "10.1.0.130", "10.1.0.131"] {
            let a = allocate(&pool, None, &taken).unwrap();
            assert_eq!(a, ip(want));
            taken.insert(a);
        }
        assert!(allocate(&pool, None, &taken).is_err());
    }

    #[test]
    fn the_shared_search_steps_over_unusable_addresses_and_wraps() {
        let unusable = BTreeSet::from([10, 11, 12]);
        assert_eq!(next_free((10, 20), None, &unusable), Some(13));
        assert_eq!(next_free((10, 20), Some(15), &unusable), Some(16));
        assert_eq!(next_free((10, 20), Some(20), &unusable), Some(13));
        // Taken up to the end: wraps to the start.
        let unusable = BTreeSet::from([18, 19, 20, 10]);
        assert_eq!(next_free((10, 20), Some(17), &unusable), Some(11));
        let all: BTreeSet<u128> = (10..=20).collect();
        assert_eq!(next_free((10, 20), Some(14), &all), None);
        // The top of the number space does not overflow.
        let top = BTreeSet::from([u128::MAX]);
        assert_eq!(
            next_free((u128::MAX - 1, u128::MAX), Some(u128::MAX - 1), &top),
            Some(u128::MAX - 1)
        );
    }

    #[test]
    fn static_addresses_are_checked() {
        let pool = plan(net("10.1.0.0/24"), None, None).unwrap();
        let taken = BTreeSet::from([ip("10.1.0.7")]);
        assert_eq!(
            check_static(&pool, "10.1.0.9", &taken).unwrap(),
            ip("10.1.0.9")
        );
        for (bad, why) in [
            ("10.1.0.7", "already in use"),
            ("10.1.0.1", "gateway"),
            ("10.9.0.1", "not a host address"),
            ("10.1.0.255", "not a host address"),
            ("nope", "expected an IPv4 address"),
        ] {
            let e = check_static(&pool, bad, &taken).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn aux_addresses_are_host_addresses_of_the_subnet_each_once() {
        let pool = plan("192.168.1.0/24".parse().unwrap(), None, None).unwrap();
        let ok = aux_addresses(&pool, &["printer=192.168.1.5".into()]).unwrap();
        assert_eq!(ok["printer"], Ipv4Addr::new(192, 168, 1, 5));
        for (entry, want) in [
            ("printer", "expected NAME=IP"),
            ("=192.168.1.5", "the name is empty"),
            ("x=10.0.0.5", "no matching subnet for aux-address 10.0.0.5"),
            ("x=192.168.1.1", "the network's gateway"),
            ("x=192.168.1.255", "no matching subnet"),
            ("x=bad", "expected an IPv4 address"),
        ] {
            let e = aux_addresses(&pool, &[entry.into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{entry}: {e}");
        }
        let twice = aux_addresses(&pool, &["a=192.168.1.5".into(), "b=192.168.1.5".into()]);
        assert!(twice.unwrap_err().to_string().contains("given twice"));
    }
}
