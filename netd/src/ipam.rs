//! IP address management: choosing a network's subnet from Docker's default pools, and
//! handing out addresses inside it. Pure logic; the caller supplies what the host uses.

use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::{Result, bail};
use ipnet::Ipv4Net;

/// Docker's default pools, in Docker's order: 172.17.0.0/16 … 172.31.0.0/16, then
/// 192.168.0.0/16 cut into /20s.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (17..=31u8).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap());
    let twenties = (0..16u8).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).unwrap());
    sixteens.chain(twenties)
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first default pool that overlaps none of `in_use` (the host's routes and addresses
/// and the other networks' subnets).
pub fn choose_subnet(in_use: &[Ipv4Net]) -> Result<Ipv4Net> {
    for pool in default_pools() {
        if !in_use.iter().any(|used| overlaps(&pool, used)) {
            return Ok(pool);
        }
    }
    bail!(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    )
}

/// The gateway a network gets when none is given: the first host address.
pub fn default_gateway(subnet: &Ipv4Net) -> Ipv4Addr {
    first_host(subnet)
}

fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The lowest free host address of `subnet`: not the network or broadcast address, not
/// the gateway, not in `taken`.
pub fn allocate(
    subnet: &Ipv4Net,
    gateway: Ipv4Addr,
    taken: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()).saturating_sub(1);
    for n in first..=last {
        let addr = Ipv4Addr::from(n);
        if addr != gateway && !taken.contains(&addr) {
            return Ok(addr);
        }
    }
    bail!("no available IPv4 addresses on the network's subnet {subnet}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
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
    }

    #[test]
    fn a_default_route_does_not_block_every_pool() {
        // 0.0.0.0/0 is the default route: callers leave it out; an address inside a pool
        // (as a /32) still blocks that pool.
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
    fn addresses_skip_gateway_and_taken_and_run_out() {
        let subnet = net("10.1.0.0/30");
        let gw = default_gateway(&subnet);
        assert_eq!(gw, Ipv4Addr::new(10, 1, 0, 1));
        let mut taken = BTreeSet::new();
        let a = allocate(&subnet, gw, &taken).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 1, 0, 2));
        taken.insert(a);
        assert!(allocate(&subnet, gw, &taken).is_err());
    }
}
