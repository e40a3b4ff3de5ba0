//! `netd monitor`: the data path's events, live. The programs send drops, new flows and
//! translations through a ring buffer while a monitor is attached (see netd-ebpf's
//! `monitor`); the daemon reads it into a bounded journal that clients long-poll, and
//! adds the ends of flows its collector expires. A client attaches by polling with a
//! session number: the programs are asked for the union of what the live sessions want,
//! and for nothing once the last has not polled for [`SESSION_TTL`].

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail};
use aya::maps::{MapData, RingBuf};
use netd_common::{
    PROTO_ICMP, PROTO_TCP, PROTO_UDP,
    counters::{Hook, Reason},
    flow::{
        FLAG_END_REPORTED, FlowEntryOf, FlowKeyOf, ORIGIN_DNAT, ORIGIN_HAIRPIN, ORIGIN_NAT46,
        ORIGIN_SNAT, ORIGIN_TRACKED, SEEN_FIN, SEEN_RST,
    },
    maps::Addr6,
    monitor::{
        ENDED_FIN, ENDED_REMOVED, ENDED_RESET, ENDED_TIMEOUT, EVENT_DROP, EVENT_DROP6,
        EVENT_FLOW_END, EVENT_FLOW_NEW, EVENT_IPV6, EVENT_TRACE, EventTuple, EventTuple6,
        MONITOR_DROP, MONITOR_FLOW, MONITOR_TRACE, MonitorConfig, MonitorEvent, MonitorEvent6,
    },
    user::{addr_from_be, addr6_be, addr6_from_be},
};
use serde::{Deserialize, Serialize};

use crate::{
    conntrack::{FlowAddr, FlowHalves},
    journal::Journal,
};

/// Events kept for clients between their polls.
pub const HISTORY: usize = 10_000;
/// A session that has not polled for this long is detached (its polls wait 5 s at most).
pub const SESSION_TTL: Duration = Duration::from_secs(8);
/// Events each CPU sends per second at most, unless a client asks otherwise.
pub const DEFAULT_RATE: u32 = 1000;

/// What a client asks for: `MONITOR_*` types, one event in `sample`, at most `rate` per
/// second per CPU (0: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub types: u32,
    pub sample: u32,
    pub rate: u32,
}

/// `--type` values, as a `MONITOR_*` set (none given: all).
pub fn parse_types(types: &[String]) -> Result<u32> {
    let mut bits = 0;
    for t in types.iter().flat_map(|t| t.split(',')) {
        bits |= match t {
            "drop" => MONITOR_DROP,
            "flow" => MONITOR_FLOW,
            "trace" => MONITOR_TRACE,
            other => bail!("invalid --type {other:?}: expected drop, flow or trace"),
        };
    }
    Ok(if bits == 0 {
        MONITOR_DROP | MONITOR_FLOW | MONITOR_TRACE
    } else {
        bits
    })
}

/// The `MONITOR_*` set as `--type` values, comma-separated.
pub fn type_names(bits: u32) -> String {
    [
        (MONITOR_DROP, "drop"),
        (MONITOR_FLOW, "flow"),
        (MONITOR_TRACE, "trace"),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| *n)
    .collect::<Vec<_>>()
    .join(",")
}

/// An event as the daemon keeps it until a client reads it: the programs' own (or one
/// the collector made), and when it happened (Unix ns). Every event is kept in the IPv6
/// layout (see `widen`).
#[derive(Clone, Debug)]
pub struct Record {
    pub time_nano: u128,
    pub event: MonitorEvent6,
    /// Its container and network, when the daemon named them as it made the event (the
    /// container may be gone by the time a client reads it).
    pub names: Option<(String, String)>,
}

impl Record {
    /// The `MONITOR_*` type it is of.
    pub fn type_bit(&self) -> u32 {
        match self.event.kind & !EVENT_IPV6 {
            EVENT_DROP | EVENT_DROP6 => MONITOR_DROP,
            EVENT_FLOW_NEW | EVENT_FLOW_END => MONITOR_FLOW,
            _ => MONITOR_TRACE,
        }
    }
}

pub struct Monitor {
    journal: Journal<Record>,
    /// Live sessions: what each wants, and when it last polled.
    sessions: Mutex<HashMap<u64, (Want, Instant)>>,
    /// What the programs were last asked for.
    asked: Mutex<MonitorConfig>,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            journal: Journal::new(HISTORY),
            sessions: Mutex::new(HashMap::new()),
            asked: Mutex::new(MonitorConfig::default()),
        }
    }
}

impl Monitor {
    /// Session `id` polls, wanting `want`. Returns what to ask the programs for when it
    /// changed.
    pub fn attach(&self, id: u64, want: Want, now: Instant) -> Option<MonitorConfig> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.insert(id, (want, now));
        self.ask(&sessions)
    }

    /// Detach the sessions that stopped polling. Returns what to ask the programs for
    /// when it changed.
    pub fn expire(&self, now: Instant) -> Option<MonitorConfig> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, (_, seen)| now.duration_since(*seen) < SESSION_TTL);
        self.ask(&sessions)
    }

    /// The union of the sessions' wants: every type any wants, the most events any wants
    /// (the smallest sample, the highest rate; 0, no limit, the highest of all).
    fn ask(&self, sessions: &HashMap<u64, (Want, Instant)>) -> Option<MonitorConfig> {
        let mut config = MonitorConfig::default();
        let mut wants = sessions.values().map(|(want, _)| want);
        if let Some(first) = wants.next() {
            config = MonitorConfig {
                types: first.types,
                sample: first.sample.max(1),
                rate: first.rate,
                _pad: 0,
            };
        }
        for want in wants {
            config.types |= want.types;
            config.sample = config.sample.min(want.sample.max(1));
            config.rate = if want.rate == 0 || config.rate == 0 {
                0
            } else {
                config.rate.max(want.rate)
            };
        }
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        (*asked != config).then(|| {
            *asked = config;
            config
        })
    }

    /// A session's client left: the next `expire` asks the programs for less.
    pub fn detach(&self, id: u64) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(&id);
    }

    /// Sessions attached.
    pub fn sessions(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The types any session wants now.
    pub fn wanted(&self) -> u32 {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).types
    }

    pub fn record(&self, records: Vec<Record>) {
        if !records.is_empty() {
            self.journal.extend(records, |_, r| r);
        }
    }

    /// The events after number `after` of the types in `types`, waiting up to `wait` for
    /// some; and the number to ask after next time.
    pub async fn wait_after(&self, after: u64, types: u32, wait: Duration) -> (Vec<Record>, u64) {
        self.journal
            .wait_after(after, |r| r.type_bit() & types != 0, wait)
            .await
    }

    /// The last event's number: where a new client starts.
    pub fn last(&self) -> u64 {
        self.journal.last()
    }

    /// The daemon is stopping: waits end now.
    pub fn close(&self) {
        self.journal.close();
    }
}

/// The ends of flows the daemon removed: by the collector, idle past their timeouts
/// (`ENDED_TIMEOUT`), or with their container (`ENDED_REMOVED`): what an open flow is
/// said to have ended by. A flow whose end the programs reported already
/// (`FLAG_END_REPORTED`) is left out; one that closed before anyone monitored tells how
/// it closed.
pub fn flow_ends<A: FlowAddr + Default>(
    ended: &[FlowHalves<A>],
    clock: &Clock,
    open_how: u8,
) -> Vec<Record>
where
    FlowKeyOf<A>: aya::Pod + std::hash::Hash + Eq,
    FlowEntryOf<A>: aya::Pod,
{
    ended
        .iter()
        .filter(|(_, first, _)| first.is_first() && first.flags & FLAG_END_REPORTED == 0)
        .map(|(key, first, reply)| {
            let reply = reply.unwrap_or_default();
            let seen = first.seen | reply.seen;
            let how = if seen & SEEN_RST != 0 {
                ENDED_RESET
            } else if first.seen & reply.seen & SEEN_FIN != 0 {
                ENDED_FIN
            } else {
                open_how
            };
            let tuple = |src: A, dst: A, src_port, dst_port| EventTuple6 {
                src_addr: wide(src.ip()),
                dst_addr: wide(dst.ip()),
                src_port,
                dst_port,
                proto: key.proto,
                _pad: [0; 3],
            };
            let family = if key.src_addr.ip().is_ipv6() {
                EVENT_IPV6
            } else {
                0
            };
            let last = first.last_seen_ns.max(reply.last_seen_ns);
            Record {
                names: None,
                time_nano: clock.unix_ns,
                event: MonitorEvent6 {
                    time_ns: last,
                    kind: EVENT_FLOW_END | family,
                    hook: how,
                    origin: first.origin,
                    endpoint: first.ifindex,
                    before: tuple(key.src_addr, key.dst_addr, key.src_port, key.dst_port),
                    after: tuple(
                        first.src_addr,
                        first.dst_addr,
                        first.src_port,
                        first.dst_port,
                    ),
                    packets: u64::from(first.packets) + u64::from(reply.packets),
                    bytes: first.bytes + reply.bytes,
                    duration_ns: last.saturating_sub(first.created_ns),
                    ..MonitorEvent6::default()
                },
            }
        })
        .collect()
}

/// Read the programs' events from their ring buffer into the monitor, as they come.
pub async fn read_events(monitor: Arc<Monitor>, ring: RingBuf<MapData>) {
    let what = "netd monitor: the programs' ring buffer";
    crate::readiness::drain_when_readable(ring, what, |events| {
        let clock = Clock::now();
        let mut records = Vec::new();
        while let Some(item) = events.next() {
            if let Some(event) = decode(&item) {
                records.push(Record {
                    time_nano: clock.unix_of(event.time_ns),
                    event,
                    names: None,
                });
            }
        }
        monitor.record(records);
    })
    .await
}

/// An event as the programs sent it (its `kind` tells the layout: `EVENT_IPV6`), in the
/// IPv6 layout; `None` when it is too short for its layout.
fn decode(item: &[u8]) -> Option<MonitorEvent6> {
    let kind = *item.get(std::mem::offset_of!(MonitorEvent, kind))?;
    if kind & EVENT_IPV6 != 0 {
        let bytes = item.get(..size_of::<MonitorEvent6>())?;
        Some(bytemuck::pod_read_unaligned(bytes))
    } else {
        let bytes = item.get(..size_of::<MonitorEvent>())?;
        Some(widen(&bytemuck::pod_read_unaligned(bytes)))
    }
}

/// An IPv4 event in the IPv6 layout the daemon keeps every event in: its addresses
/// IPv4-mapped (`::ffff:a.b.c.d`, shown as IPv4 again); an `EVENT_DROP6`'s two addresses
/// (in the 16 bytes of each tuple) as the source and destination, without ports.
pub fn widen(e: &MonitorEvent) -> MonitorEvent6 {
    let tuple = |t: &EventTuple| EventTuple6 {
        src_addr: wide(IpAddr::V4(addr_from_be(t.src_addr))),
        dst_addr: wide(IpAddr::V4(addr_from_be(t.dst_addr))),
        src_port: t.src_port,
        dst_port: t.dst_port,
        proto: t.proto,
        _pad: [0; 3],
    };
    let (before, after) = if e.kind == EVENT_DROP6 {
        let addrs = EventTuple6 {
            src_addr: bytemuck::cast(e.before),
            dst_addr: bytemuck::cast(e.after),
            ..EventTuple6::default()
        };
        (addrs, addrs)
    } else {
        (tuple(&e.before), tuple(&e.after))
    };
    MonitorEvent6 {
        time_ns: e.time_ns,
        kind: e.kind,
        hook: e.hook,
        reason: e.reason,
        origin: e.origin,
        ifindex: e.ifindex,
        endpoint: e.endpoint,
        len: e.len,
        before,
        after,
        packets: e.packets,
        bytes: e.bytes,
        duration_ns: e.duration_ns,
    }
}

/// An address in an event's IPv6 layout (IPv4 mapped).
fn wide(ip: IpAddr) -> Addr6 {
    addr6_be(match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    })
}

/// The wall clock against CLOCK_MONOTONIC (the programs' `bpf_ktime_get_ns`), read once.
#[derive(Clone, Copy)]
pub struct Clock {
    unix_ns: u128,
    monotonic_ns: u64,
}

impl Clock {
    pub fn now() -> Self {
        Clock {
            unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            monotonic_ns: crate::conntrack::monotonic_now(),
        }
    }

    /// The Unix time (ns) of a CLOCK_MONOTONIC time.
    pub fn unix_of(&self, monotonic_ns: u64) -> u128 {
        self.unix_ns
            .saturating_sub(u128::from(self.monotonic_ns.saturating_sub(monotonic_ns)))
    }
}

/// An event as clients get it: names instead of numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// Unix time in nanoseconds.
    pub time_nano: u128,
    /// `drop`, `flow-new`, `flow-end` or `trace`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Why (a counter reason's name), or how a flow ended (`fin`, `reset`, `timeout`,
    /// `removed` with its container).
    pub reason: String,
    /// Where a drop happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// `tcp`, `udp`, `icmp`, or the protocol's number.
    pub proto: String,
    /// The packet's ends as it came (`ADDR:PORT`).
    pub src: String,
    pub dst: String,
    /// As translated (flows and translations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated_src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated_dst: Option<String>,
    /// The flow's kind: `dnat`, `snat`, `hairpin` or `tracked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The container it concerns, and on which network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The interface whose program saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The packet's length (0 for a flow's end).
    pub len: u32,
    /// A flow's end: its packets and bytes (both ways) and how long it lasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
}

/// A page of events for a client: where the next starts, and the programs' counts of
/// events sent and lost (to sampling's companion, the rate limit, or a full ring).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Page {
    pub events: Vec<EventView>,
    pub last: u64,
    pub sent: u64,
    pub lost: u64,
}

/// Who is behind an interface: a container (name, network) and the interface's name.
pub struct Names<'a> {
    pub endpoint: &'a dyn Fn(u32) -> Option<(String, String)>,
    pub interface: &'a dyn Fn(u32) -> Option<String>,
}

impl Record {
    /// The event with its numbers named.
    pub fn view(&self, names: &Names) -> EventView {
        let e = &self.event;
        let kind = match e.kind & !EVENT_IPV6 {
            EVENT_DROP | EVENT_DROP6 => "drop",
            EVENT_FLOW_NEW => "flow-new",
            EVENT_FLOW_END => "flow-end",
            EVENT_TRACE => "trace",
            _ => "unknown",
        };
        let reason = if e.kind & !EVENT_IPV6 == EVENT_FLOW_END {
            ended_name(e.hook).to_string()
        } else {
            Reason::ALL
                .get(e.reason as usize)
                .map_or_else(|| e.reason.to_string(), |r| r.name().to_string())
        };
        let dropped = matches!(e.kind, EVENT_DROP | EVENT_DROP6);
        let ended = e.kind & !EVENT_IPV6 == EVENT_FLOW_END;
        let translated = !dropped;
        // A flow's container is its endpoint's; a drop's, that of the veth it came from.
        let owner = if e.endpoint != 0 {
            e.endpoint
        } else {
            e.ifindex
        };
        let (container, network) = match self.names.clone().or_else(|| (names.endpoint)(owner)) {
            Some((c, n)) => (Some(c), Some(n)),
            None => (None, None),
        };
        EventView {
            time_nano: self.time_nano,
            kind: kind.to_string(),
            reason,
            hook: dropped.then(|| {
                Hook::ALL
                    .get(e.hook as usize)
                    .map_or_else(|| e.hook.to_string(), |h| h.name().to_string())
            }),
            proto: match e.kind {
                EVENT_DROP6 => "ipv6".to_string(),
                _ => proto_name(e.before.proto),
            },
            src: match e.kind {
                EVENT_DROP6 => bracketed(e.before.src_addr),
                _ => end(e.before.src_addr, e.before.src_port),
            },
            dst: match e.kind {
                EVENT_DROP6 => bracketed(e.before.dst_addr),
                _ => end(e.before.dst_addr, e.before.dst_port),
            },
            translated_src: translated.then(|| end(e.after.src_addr, e.after.src_port)),
            translated_dst: translated.then(|| end(e.after.dst_addr, e.after.dst_port)),
            origin: translated.then(|| origin_name(e.origin).to_string()),
            container,
            network,
            interface: (e.ifindex != 0)
                .then(|| (names.interface)(e.ifindex))
                .flatten(),
            len: e.len,
            packets: ended.then_some(e.packets),
            bytes: ended.then_some(e.bytes),
            duration_ns: ended.then_some(e.duration_ns),
        }
    }
}

/// `ADDR:PORT` (`[ADDR]:PORT` for IPv6) of an address in the events' layout.
fn end(addr: Addr6, port: u16) -> String {
    let ip = addr6_from_be(addr);
    let port = u16::from_be(port);
    match ip.to_ipv4_mapped() {
        Some(v4) => format!("{v4}:{port}"),
        None => format!("[{ip}]:{port}"),
    }
}

/// An IPv6 address without a port (`EVENT_DROP6`'s), bracketed.
fn bracketed(addr: Addr6) -> String {
    format!("[{}]", addr6_from_be(addr))
}

/// ICMPv6's protocol number (IPv6's next header).
const PROTO_ICMPV6: u8 = 58;

fn proto_name(proto: u8) -> String {
    match proto {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_ICMP => "icmp".into(),
        PROTO_ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

fn ended_name(how: u8) -> &'static str {
    match how {
        ENDED_FIN => "fin",
        ENDED_RESET => "reset",
        ENDED_TIMEOUT => "timeout",
        ENDED_REMOVED => "removed",
        _ => "unknown",
    }
}

fn origin_name(origin: u8) -> &'static str {
    match origin {
        ORIGIN_DNAT => "dnat",
        ORIGIN_SNAT => "snat",
        ORIGIN_HAIRPIN => "hairpin",
        ORIGIN_TRACKED => "tracked",
        ORIGIN_NAT46 => "nat46",
        _ => "unknown",
    }
}

/// One readable line per event, as `cilium monitor` prints them.
pub fn line(e: &EventView) -> String {
    let secs = (e.time_nano / 1_000_000_000) as i64;
    let micros = e.time_nano / 1000 % 1_000_000;
    let clock = crate::events::utc(secs);
    let time = clock.split_once('T').map_or(clock.as_str(), |(_, t)| t);
    let mut out = format!("{time}.{micros:06} {} ({})", e.kind, e.reason);
    if let Some(hook) = &e.hook {
        out.push_str(&format!(" at {hook}"));
    }
    if let Some(origin) = &e.origin {
        out.push_str(&format!(" {origin}"));
    }
    if let (Some(c), Some(n)) = (&e.container, &e.network) {
        out.push_str(&format!(" container {c} ({n})"));
    }
    if let Some(i) = &e.interface {
        out.push_str(&format!(" on {i}"));
    }
    out.push_str(&format!(": {} -> {} {}", e.src, e.dst, e.proto));
    if let (Some(s), Some(d)) = (&e.translated_src, &e.translated_dst)
        && (s != &e.src || d != &e.dst)
    {
        out.push_str(&format!(" => {s} -> {d}"));
    }
    if let (Some(p), Some(b), Some(d)) = (e.packets, e.bytes, e.duration_ns) {
        out.push_str(&format!(
            ", {p} packets, {b} bytes, {:.3} s",
            d as f64 / 1e9
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> EventTuple {
        EventTuple {
            src_addr: u32::from_ne_bytes(src),
            dst_addr: u32::from_ne_bytes(dst),
            src_port: sport.to_be(),
            dst_port: dport.to_be(),
            proto: PROTO_TCP,
            _pad: [0; 3],
        }
    }

    fn named(record: &Record) -> EventView {
        let endpoint = |i: u32| (i == 7).then(|| ("web".to_string(), "netd0".to_string()));
        let interface = |i: u32| Some(format!("if{i}"));
        record.view(&Names {
            endpoint: &endpoint,
            interface: &interface,
        })
    }

    #[test]
    fn events_read_as_one_line_each() {
        let client = tuple([10, 200, 0, 1], 52114, [10, 200, 0, 2], 8080);
        let end = Record {
            names: None,
            time_nano: 1_764_858_001_123_456_000,
            event: widen(&MonitorEvent {
                kind: EVENT_FLOW_END,
                hook: ENDED_FIN,
                origin: ORIGIN_DNAT,
                ifindex: 2,
                endpoint: 7,
                before: client,
                after: tuple([10, 200, 0, 1], 52114, [172, 17, 0, 2], 80),
                packets: 10,
                bytes: 624,
                duration_ns: 1_500_000,
                ..MonitorEvent::default()
            }),
        };
        assert_eq!(
            line(&named(&end)),
            "14:20:01.123456 flow-end (fin) dnat container web (netd0) on if2: \
             10.200.0.1:52114 -> 10.200.0.2:8080 tcp => 10.200.0.1:52114 -> 172.17.0.2:80, \
             10 packets, 624 bytes, 0.002 s"
        );
        let drop = Record {
            names: None,
            time_nano: end.time_nano,
            event: widen(&MonitorEvent {
                kind: EVENT_DROP,
                hook: Hook::EndpointIngress as u8,
                reason: Reason::DropIsolated as u8,
                ifindex: 7,
                len: 74,
                before: client,
                after: client,
                ..MonitorEvent::default()
            }),
        };
        let view = named(&drop);
        assert_eq!(
            line(&view),
            "14:20:01.123456 drop (drop_network_isolation) at EndpointIngress container web \
             (netd0) on if7: 10.200.0.1:52114 -> 10.200.0.2:8080 tcp"
        );
        assert_eq!(view.translated_src, None, "a drop is not translated");
        let addr6 = |a: &str| -> EventTuple {
            bytemuck::cast(a.parse::<std::net::Ipv6Addr>().unwrap().octets())
        };
        let drop6 = Record {
            names: None,
            time_nano: end.time_nano,
            event: widen(&MonitorEvent {
                kind: EVENT_DROP6,
                hook: Hook::EndpointIngress as u8,
                reason: Reason::DropRouterMessage as u8,
                ifindex: 7,
                len: 102,
                before: addr6("fe80::42:acff:fe11:2"),
                after: addr6("ff02::1"),
                ..MonitorEvent::default()
            }),
        };
        let view = named(&drop6);
        assert_eq!(
            line(&view),
            "14:20:01.123456 drop (drop_router_message) at EndpointIngress container web \
             (netd0) on if7: [fe80::42:acff:fe11:2] -> [ff02::1] ipv6"
        );
        assert_eq!(drop6.type_bit(), MONITOR_DROP);
        // An IPv6 flow's end, as the programs send it (`MonitorEvent6`, `EVENT_IPV6`).
        let v6 = |a: &str, port: u16| (addr6_be(a.parse().unwrap()), port.to_be());
        let tuple6 = |(src_addr, src_port), (dst_addr, dst_port)| EventTuple6 {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let sent = MonitorEvent6 {
            kind: EVENT_FLOW_END | EVENT_IPV6,
            hook: ENDED_RESET,
            origin: ORIGIN_SNAT,
            endpoint: 7,
            before: tuple6(v6("fd00:17::2", 40000), v6("2001:db8::1", 443)),
            after: tuple6(v6("2001:db8:ff::1", 40000), v6("2001:db8::1", 443)),
            packets: 4,
            bytes: 320,
            duration_ns: 2_000_000_000,
            ..MonitorEvent6::default()
        };
        let end6 = Record {
            names: None,
            time_nano: end.time_nano,
            event: decode(bytemuck::bytes_of(&sent)).unwrap(),
        };
        assert_eq!(end6.type_bit(), MONITOR_FLOW);
        assert_eq!(
            line(&named(&end6)),
            "14:20:01.123456 flow-end (reset) snat container web (netd0): \
             [fd00:17::2]:40000 -> [2001:db8::1]:443 tcp => [2001:db8:ff::1]:40000 -> \
             [2001:db8::1]:443, 4 packets, 320 bytes, 2.000 s"
        );
        // An IPv4 event read from the ring is the same event, widened.
        let v4 = MonitorEvent {
            kind: EVENT_FLOW_NEW,
            before: client,
            after: client,
            ..MonitorEvent::default()
        };
        assert_eq!(decode(bytemuck::bytes_of(&v4)), Some(widen(&v4)));
        assert_eq!(decode(&bytemuck::bytes_of(&sent)[..80]), None, "cut short");
        assert_eq!(
            parse_types(&["flow,drop".into()]).unwrap(),
            MONITOR_FLOW | MONITOR_DROP
        );
        assert!(parse_types(&["flows".into()]).is_err());
    }

    #[test]
    fn the_programs_are_asked_for_what_the_live_sessions_want() {
        let m = Monitor::default();
        let t0 = Instant::now();
        let drops = Want {
            types: MONITOR_DROP,
            sample: 4,
            rate: 100,
        };
        let flows = Want {
            types: MONITOR_FLOW,
            sample: 1,
            rate: 0,
        };
        assert_eq!(m.attach(1, drops, t0).map(|c| c.types), Some(MONITOR_DROP));
        assert_eq!(m.attach(1, drops, t0), None, "unchanged");
        let both = m.attach(2, flows, t0).unwrap();
        assert_eq!(both.types, MONITOR_DROP | MONITOR_FLOW);
        assert_eq!(
            (both.sample, both.rate),
            (1, 0),
            "the most events any wants"
        );
        m.detach(2);
        assert_eq!(m.expire(t0).map(|c| c.types), Some(MONITOR_DROP));
        let later = t0 + SESSION_TTL + Duration::from_secs(1);
        assert_eq!(m.expire(later), Some(MonitorConfig::default()));
        assert_eq!(m.sessions(), 0);
    }
}
