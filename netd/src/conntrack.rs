//! The connection table seen from userspace: which flows have expired (timeouts like
//! Cilium's and Calico's), removing both halves of a flow together, and how many
//! confirmed flows each endpoint holds. The table is two maps (see netd-ebpf's
//! `conntrack`): confirmed flows, never evicted, and flows not confirmed yet, an LRU.
//! IPv4 and IPv6 flows have a table each, of the same layout over their address type
//! (`FlowAddr`); everything here serves both.

use std::{
    collections::{HashMap, HashSet},
    fmt::Debug,
    hash::Hash,
    net::IpAddr,
};

use netd_common::{
    PROTO_ICMP, PROTO_TCP,
    flow::{
        FlowEntryOf, FlowKeyOf, ORIGIN_DNAT, ORIGIN_HAIRPIN, ORIGIN_NAT46, ORIGIN_SNAT,
        SEEN_PACKET, owner,
    },
    maps::{self as names, ALL_OWNERS, ALL_OWNERS6, Addr6},
    user::{addr_from_be, addr6_from_be},
};

pub use netd_common::flow::{
    OTHER_TIMEOUT, SECOND, TCP_CLOSING_TIMEOUT, TCP_ESTABLISHED_TIMEOUT, TCP_SYN_TIMEOUT,
    UNREPLIED_TIMEOUT, is_expired, timeout,
};

/// An address family's flows: its address type, maps and sweep program.
pub trait FlowAddr: aya::Pod + Copy + Eq + Hash + Debug + Send + 'static
where
    FlowKeyOf<Self>: aya::Pod + Hash + Eq,
    FlowEntryOf<Self>: aya::Pod,
{
    /// The confirmed and unconfirmed flows' maps (`FlowTable` order).
    const TABLES: [&'static str; 2];
    /// Confirmed flows per endpoint address.
    const OWNERS: &'static str;
    /// The key of `OWNERS` that counts every confirmed flow.
    const ALL_OWNERS: Self;
    /// The batch `SWEEP_PROGRAM` reads.
    const SWEEP: &'static str;
    const SWEEP_PROGRAM: &'static str;
    fn ip(self) -> IpAddr;
}

impl FlowAddr for u32 {
    const TABLES: [&'static str; 2] = [names::FLOWS, names::PENDING_FLOWS];
    const OWNERS: &'static str = names::FLOW_OWNERS;
    const ALL_OWNERS: u32 = ALL_OWNERS;
    const SWEEP: &'static str = names::SWEEP;
    const SWEEP_PROGRAM: &'static str = crate::datapath::SWEEP_PROGRAM;
    fn ip(self) -> IpAddr {
        IpAddr::V4(addr_from_be(self))
    }
}

impl FlowAddr for Addr6 {
    const TABLES: [&'static str; 2] = [names::FLOWS6, names::PENDING_FLOWS6];
    const OWNERS: &'static str = names::FLOW_OWNERS6;
    const ALL_OWNERS: Addr6 = ALL_OWNERS6;
    const SWEEP: &'static str = names::SWEEP6;
    const SWEEP_PROGRAM: &'static str = crate::datapath::SWEEP6_PROGRAM;
    /// A v4-mapped address (a NAT46 flow's IPv4 end) as the IPv4 address it is.
    fn ip(self) -> IpAddr {
        let addr = addr6_from_be(self);
        match addr.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(addr),
        }
    }
}

/// One of the connection table's two maps. The numbers are what `flow_sweep` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowTable {
    Confirmed = 0,
    Unconfirmed = 1,
}

impl FlowTable {
    pub const BOTH: [FlowTable; 2] = [FlowTable::Confirmed, FlowTable::Unconfirmed];
}

/// A snapshot of the table: every half, with the map it was in.
pub type Snapshot<A = u32> = Vec<(FlowKeyOf<A>, FlowEntryOf<A>, FlowTable)>;

fn by_key<A: Copy + Eq + Hash>(entries: &Snapshot<A>) -> HashMap<FlowKeyOf<A>, &FlowEntryOf<A>> {
    entries.iter().map(|(k, e, _)| (*k, e)).collect()
}

/// The halves of every flow idle past its timeout at `now` (CLOCK_MONOTONIC ns), with the
/// map each is in (a flow being confirmed can have a half in each).
pub fn expired<A: Copy + Eq + Hash>(
    entries: &Snapshot<A>,
    now: u64,
) -> Vec<(FlowTable, FlowKeyOf<A>)> {
    let by_key = by_key(entries);
    let mut out = Vec::new();
    for (key, entry, table) in entries {
        let partner = by_key.get(&key.partner(entry)).copied();
        if is_expired(key, entry, partner, now) {
            // Each half is visited once; push only this half, its partner pushes itself
            // (or is already gone).
            out.push((*table, *key));
        }
    }
    out
}

/// A flow as its first half's key and entry, with its other half's entry if there was one.
pub type FlowHalves<A = u32> = (FlowKeyOf<A>, FlowEntryOf<A>, Option<FlowEntryOf<A>>);

/// Flows a purge removed (with their endpoint, network or container), of both families,
/// kept until their ends are reported to `netd monitor`.
#[derive(Default)]
pub struct Purged {
    pub v4: Vec<FlowHalves>,
    pub v6: Vec<FlowHalves<Addr6>>,
}

impl Purged {
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// The flows among the halves `keys` (expired, or purged), each with its other half if
/// the snapshot has it. Only those halves and their partners are indexed, not the whole
/// snapshot: a purge runs under the daemon's lock, with a few keys of a table that may
/// hold millions.
pub fn ended<A: Copy + Eq + Hash>(
    entries: &Snapshot<A>,
    keys: &[FlowKeyOf<A>],
) -> Vec<FlowHalves<A>> {
    let wanted: HashSet<FlowKeyOf<A>> = keys.iter().copied().collect();
    let firsts: Vec<(FlowKeyOf<A>, FlowEntryOf<A>)> = entries
        .iter()
        .filter(|(k, e, _)| e.is_first() && wanted.contains(k))
        .map(|(k, e, _)| (*k, *e))
        .collect();
    let partner_keys: HashSet<FlowKeyOf<A>> = firsts.iter().map(|(k, e)| k.partner(e)).collect();
    let partners: HashMap<FlowKeyOf<A>, FlowEntryOf<A>> = entries
        .iter()
        .filter(|(k, _, _)| partner_keys.contains(k))
        .map(|(k, e, _)| (*k, *e))
        .collect();
    firsts
        .into_iter()
        .map(|(key, entry)| (key, entry, partners.get(&key.partner(&entry)).copied()))
        .collect()
}

/// SNAT port pressure: the most ports of the SNAT range that masqueraded flows to one
/// destination (address, port, protocol) hold. Ports are taken per destination, so this
/// is what runs out first (`drop_snat_ports_exhausted`).
pub fn snat_ports_in_use_max<A: Copy + Eq + Hash>(entries: &Snapshot<A>) -> u64 {
    let mut per_destination: HashMap<(A, u16, u8), u64> = HashMap::new();
    for (key, entry, _) in entries {
        if entry.is_first() && entry.origin == ORIGIN_SNAT {
            *per_destination
                .entry((entry.dst_addr, entry.dst_port, key.proto))
                .or_default() += 1;
        }
    }
    per_destination.values().copied().max().unwrap_or(0)
}

/// The keys of every flow that involves `addr` (a removed container's address): so that a
/// reused address inherits nothing.
pub fn involving<A: FlowAddr>(entries: &Snapshot<A>, addr: IpAddr) -> Vec<FlowKeyOf<A>>
where
    FlowKeyOf<A>: aya::Pod + Hash + Eq,
    FlowEntryOf<A>: aya::Pod,
{
    let is = |a: A| a.ip() == addr;
    entries
        .iter()
        .filter(|(k, e, _)| is(k.src_addr) || is(k.dst_addr) || is(e.src_addr) || is(e.dst_addr))
        .map(|(k, _, _)| *k)
        .collect()
}

/// How many confirmed flows each endpoint address holds (network-order address), as the
/// programs count them against `--flow-quota`, and under `ALL_OWNERS` how many in all.
pub fn owners<A: FlowAddr>(entries: &Snapshot<A>) -> HashMap<A, u64>
where
    FlowKeyOf<A>: aya::Pod + Hash + Eq,
    FlowEntryOf<A>: aya::Pod,
{
    let mut out = HashMap::new();
    for (key, entry, table) in entries {
        if *table == FlowTable::Confirmed && entry.is_first() {
            *out.entry(owner(key, entry)).or_insert(0) += 1;
            *out.entry(A::ALL_OWNERS).or_insert(0) += 1;
        }
    }
    out
}

pub fn monotonic_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * SECOND + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd_common::{
        flow::{DIR_INGRESS, FLAG_REPLY, FlowEntry, FlowKey, SEEN_ACK, SEEN_FIN, SEEN_SYN},
        user::addr_be,
    };
    use std::net::Ipv4Addr;

    fn flow(seen_in: u8, seen_out: u8, last: u64) -> Snapshot {
        let key = FlowKey {
            src_addr: addr_be(Ipv4Addr::new(10, 0, 0, 1)),
            dst_addr: addr_be(Ipv4Addr::new(10, 0, 0, 2)),
            src_port: 40000u16.to_be(),
            dst_port: 8080u16.to_be(),
            proto: PROTO_TCP,
            dir: DIR_INGRESS,
            _pad: [0; 2],
        };
        let entry = FlowEntry {
            src_addr: key.src_addr,
            src_port: key.src_port,
            dst_addr: addr_be(Ipv4Addr::new(172, 17, 0, 2)),
            dst_port: 80u16.to_be(),
            origin: ORIGIN_DNAT,
            seen: seen_in,
            last_seen_ns: last,
            ..Default::default()
        };
        let partner = key.partner(&entry);
        let reply = FlowEntry {
            src_addr: key.dst_addr,
            src_port: key.dst_port,
            dst_addr: key.src_addr,
            dst_port: key.src_port,
            seen: seen_out,
            flags: FLAG_REPLY,
            ..entry
        };
        vec![
            (key, entry, FlowTable::Confirmed),
            (partner, reply, FlowTable::Confirmed),
        ]
    }

    #[test]
    fn ended_flows_are_their_first_halves_with_their_partners() {
        let snapshot = flow(SEEN_SYN, SEEN_SYN | SEEN_ACK, 0);
        let (first, reply) = (snapshot[0].0, snapshot[1].0);
        let both = ended(&snapshot, &[reply, first]);
        assert_eq!(both, vec![(first, snapshot[0].1, Some(snapshot[1].1))]);
        assert!(
            ended(&snapshot, &[reply]).is_empty(),
            "a reply half alone is no flow"
        );
        let alone = ended(&snapshot[..1].to_vec(), &[first]);
        assert_eq!(alone, vec![(first, snapshot[0].1, None)]);
    }

    #[test]
    fn partner_of_the_partner_is_the_original() {
        let f = flow(0, 0, 0);
        assert_eq!(f[1].0.partner(&f[1].1), f[0].0);
    }

    #[test]
    fn confirmed_flows_count_against_the_container_they_lead_to_or_came_from() {
        let mut f = flow(SEEN_SYN | SEEN_ACK, SEEN_SYN | SEEN_ACK, 0);
        let backend = addr_be(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(owners(&f), HashMap::from([(backend, 1), (ALL_OWNERS, 1)]));
        f[0].1.origin = ORIGIN_SNAT;
        assert_eq!(
            owners(&f),
            HashMap::from([(f[0].0.src_addr, 1), (ALL_OWNERS, 1)])
        );
        f[0].2 = FlowTable::Unconfirmed;
        assert!(owners(&f).is_empty(), "unconfirmed flows count for nobody");
    }

    #[test]
    fn a_flow_never_answered_goes_sooner_than_an_answered_one() {
        let mut f = flow(SEEN_PACKET, 0, 0);
        for (k, _, _) in f.iter_mut() {
            k.proto = 17;
        }
        assert_eq!(expired(&f, UNREPLIED_TIMEOUT + 1).len(), 2);
        f[1].1.seen = SEEN_PACKET;
        assert!(expired(&f, UNREPLIED_TIMEOUT + 1).is_empty());
        assert_eq!(expired(&f, OTHER_TIMEOUT + 1).len(), 2);
    }

    #[test]
    fn a_syn_only_flow_expires_after_a_minute_and_an_established_one_does_not() {
        let syn = flow(SEEN_SYN, 0, 0);
        assert!(expired(&syn, TCP_SYN_TIMEOUT - 1).is_empty());
        assert_eq!(expired(&syn, TCP_SYN_TIMEOUT + 1).len(), 2);
        let est = flow(SEEN_SYN | SEEN_ACK, SEEN_SYN | SEEN_ACK, 0);
        assert!(expired(&est, TCP_SYN_TIMEOUT + 1).is_empty());
        let closing = flow(SEEN_ACK | SEEN_FIN, SEEN_ACK, 0);
        assert_eq!(expired(&closing, TCP_CLOSING_TIMEOUT + 1).len(), 2);
    }

    #[test]
    fn views_show_each_flow_once_with_both_tuples() {
        let v = views(&flow(SEEN_SYN | SEEN_ACK, SEEN_SYN | SEEN_ACK, 0), 0);
        assert!(v[0].confirmed);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].original, "10.0.0.1:40000 -> 10.0.0.2:8080");
        assert_eq!(v[0].translated, "10.0.0.1:40000 -> 172.17.0.2:80");
        assert_eq!(
            (v[0].kind.as_str(), v[0].state.as_str()),
            ("dnat", "established")
        );
    }

    #[test]
    fn flows_of_an_address_are_found_from_both_halves() {
        let f = flow(0, 0, 0);
        assert_eq!(involving(&f, Ipv4Addr::new(172, 17, 0, 2).into()).len(), 2);
        assert!(involving(&f, Ipv4Addr::new(172, 17, 0, 3).into()).is_empty());
    }

    #[test]
    fn ipv6_flows_are_shown_with_bracketed_addresses_and_counted_by_their_owner() {
        use netd_common::{flow::FlowEntry6, flow::FlowKey6, user::addr6_be};
        let container = addr6_be("fd00:17::2".parse().unwrap());
        let node = addr6_be("2001:db8:ff::1".parse().unwrap());
        let remote = addr6_be("2001:db8::1".parse().unwrap());
        let key = FlowKey6 {
            src_addr: container,
            dst_addr: remote,
            src_port: 40000u16.to_be(),
            dst_port: 443u16.to_be(),
            proto: PROTO_TCP,
            dir: netd_common::flow::DIR_EGRESS,
            _pad: [0; 2],
        };
        let entry = FlowEntry6 {
            src_addr: node,
            src_port: key.src_port,
            dst_addr: remote,
            dst_port: key.dst_port,
            origin: ORIGIN_SNAT,
            seen: SEEN_SYN | SEEN_ACK,
            ..Default::default()
        };
        let reply = FlowEntry6 {
            src_addr: remote,
            src_port: key.dst_port,
            dst_addr: container,
            dst_port: key.src_port,
            flags: FLAG_REPLY,
            seen: SEEN_SYN | SEEN_ACK,
            ..entry
        };
        let snapshot: Snapshot<Addr6> = vec![
            (key, entry, FlowTable::Confirmed),
            (key.partner(&entry), reply, FlowTable::Confirmed),
        ];
        let v = views(&snapshot, 0);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].original, "[fd00:17::2]:40000 -> [2001:db8::1]:443");
        assert_eq!(
            v[0].translated,
            "[2001:db8:ff::1]:40000 -> [2001:db8::1]:443"
        );
        assert_eq!(v[0].kind, "snat");
        assert_eq!(
            owners(&snapshot),
            HashMap::from([(container, 1), (ALL_OWNERS6, 1)])
        );
        let fd = "fd00:17::2".parse::<IpAddr>().unwrap();
        assert_eq!(involving(&snapshot, fd).len(), 2);
    }
}

/// One flow as users see it: the tuple the first packet had, and the tuple it was
/// translated to.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FlowView {
    pub proto: String,
    /// `dnat` (a published port), `snat` (masqueraded egress), `hairpin` (a container
    /// calling a published port), `tracked` (egress of a network without masquerade) or
    /// `nat46` (an IPv6 client to a published port of a container with IPv4 only).
    pub kind: String,
    pub original: String,
    pub translated: String,
    pub state: String,
    pub age_seconds: u64,
    pub idle_seconds: u64,
    /// In the table of confirmed flows, never evicted (else: not confirmed yet, or its
    /// endpoint is over its quota).
    pub confirmed: bool,
    /// Packets and bytes (IP lengths) each way: as the first packet went (`original`)
    /// and back (`reply`). Packets count modulo 2^32 each way.
    pub packets_original: u64,
    pub bytes_original: u64,
    pub packets_reply: u64,
    pub bytes_reply: u64,
}

/// Pair up the halves of each flow; a half without its partner is listed too (it is about
/// to be collected).
pub fn views<A: FlowAddr>(entries: &Snapshot<A>, now: u64) -> Vec<FlowView>
where
    FlowKeyOf<A>: aya::Pod + Hash + Eq,
    FlowEntryOf<A>: aya::Pod,
{
    let by_key = by_key(entries);
    let end =
        |addr: A, port: u16| std::net::SocketAddr::new(addr.ip(), u16::from_be(port)).to_string();
    let mut out = Vec::new();
    for (key, entry, table) in entries.iter().filter(|(_, e, _)| e.is_first()) {
        let partner = by_key.get(&key.partner(entry)).copied();
        let last = entry
            .last_seen_ns
            .max(partner.map_or(0, |p| p.last_seen_ns));
        out.push(FlowView {
            proto: match key.proto {
                PROTO_TCP => "tcp",
                PROTO_ICMP => "icmp",
                PROTO_ICMPV6 => "icmpv6",
                _ => "udp",
            }
            .into(),
            kind: match entry.origin {
                ORIGIN_DNAT => "dnat",
                ORIGIN_SNAT => "snat",
                ORIGIN_HAIRPIN => "hairpin",
                ORIGIN_NAT46 => "nat46",
                _ => "tracked",
            }
            .into(),
            original: format!(
                "{} -> {}",
                end(key.src_addr, key.src_port),
                end(key.dst_addr, key.dst_port)
            ),
            translated: format!(
                "{} -> {}",
                end(entry.src_addr, entry.src_port),
                end(entry.dst_addr, entry.dst_port)
            ),
            state: state_name(key, entry, partner).into(),
            age_seconds: now.saturating_sub(entry.created_ns) / SECOND,
            idle_seconds: now.saturating_sub(last) / SECOND,
            confirmed: *table == FlowTable::Confirmed,
            packets_original: u64::from(entry.packets),
            bytes_original: entry.bytes,
            packets_reply: partner.map_or(0, |p| u64::from(p.packets)),
            bytes_reply: partner.map_or(0, |p| p.bytes),
        });
    }
    out.sort_by(|a, b| (&a.kind, &a.original).cmp(&(&b.kind, &b.original)));
    out
}

/// The ICMPv6 protocol number (echo flows of the IPv6 table).
const PROTO_ICMPV6: u8 = 58;

fn state_name<A>(
    key: &FlowKeyOf<A>,
    a: &FlowEntryOf<A>,
    b: Option<&FlowEntryOf<A>>,
) -> &'static str {
    let replied = b.is_some_and(|b| b.seen & SEEN_PACKET != 0);
    if key.proto != PROTO_TCP {
        return if replied { "replied" } else { "unreplied" };
    }
    match timeout(key, a, b) {
        TCP_CLOSING_TIMEOUT => "closing",
        TCP_ESTABLISHED_TIMEOUT => "established",
        _ => "syn",
    }
}
