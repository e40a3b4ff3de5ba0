//! Shared by the datapath tests: crafted packets, independent checksums, and a loaded
//! data path with its own bpffs (maps are pinned; never under /sys/fs/bpf in tests).
#![allow(dead_code)]

mod ipv6;
mod rng;

// Not every test binary uses every part of the support.
#[allow(unused_imports)]
pub use ipv6::*;
#[allow(unused_imports)]
pub use rng::Rng;

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun, TestRunOptions};
use netd::{
    datapath::{Datapath, NodeSettings},
    ports::{PortBinding, Proto},
};
pub use netd_common::maps::NETWORK_MASQUERADE;
use netd_common::{
    maps::{EndpointInfo, NetworkInfo},
    user::addr_be,
};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub const ETH: usize = 14;

/// The node every datapath test starts from: NODE is its address, 172.17.0.0/16 is
/// masqueraded, 8080/tcp and 5353/udp are published to CONTAINER:80 and :53, and
/// CONTAINER is the endpoint behind loopback (where BPF_PROG_TEST_RUN runs skb programs).
pub const NODE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
pub const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
pub const LO: u32 = 1;

pub fn standard_node() -> TestDatapath {
    standard_node_with(TestDatapath::new())
}

/// The standard node on a data path of the caller's making (e.g. a small flow table).
pub fn standard_node_with(mut t: TestDatapath) -> TestDatapath {
    t.dp.set_node_config(&node_settings(false)).unwrap();
    t.dp.set_node_addrs(&[NODE]).unwrap();
    for (proto, host_port, container_port) in [(Proto::Tcp, 8080, 80), (Proto::Udp, 5353, 53)] {
        let b = PortBinding {
            proto,
            container_port,
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port,
        };
        t.dp.publish(&b, Some(CONTAINER), None, LO).unwrap();
    }
    t.dp.set_network(
        "172.17.0.0/16".parse().unwrap(),
        Some(network(NETWORK_TAG, NETWORK_MASQUERADE)),
    )
    .unwrap();
    t.dp.register_endpoint(LO, &endpoint_info(0)).unwrap();
    t
}

/// The standard node's settings, with the fast paths on or off.
pub fn node_settings(fast_path: bool) -> NodeSettings {
    NodeSettings {
        snat_addr: NODE,
        snat_ports: (61000, 65535),
        netns_cookie: 0,
        uplink_ifindex: LO,
        fast_path,
        flow_quota: 0,
        uplink_mac: [0; 6],
    }
}

/// A network as the data path knows it: its tag and `NETWORK_*` flags.
pub fn network(tag: u32, flags: u32) -> NetworkInfo {
    NetworkInfo { tag, flags }
}

/// The network CONTAINER is on, in the data path.
pub const NETWORK_TAG: u32 = 1;
/// The source MAC of every frame `ipv4_frame` builds: the container's own.
pub const CONTAINER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// CONTAINER as the endpoint behind loopback, with `ENDPOINT_*` flags.
pub fn endpoint_info(flags: u16) -> EndpointInfo {
    endpoint_at(CONTAINER, flags)
}

/// The endpoint behind loopback is `addr` (loopback stands for every container's veth).
pub fn endpoint_at(addr: Ipv4Addr, flags: u16) -> EndpointInfo {
    EndpointInfo {
        addr: addr_be(addr),
        gateway: addr_be(GATEWAY),
        mac: CONTAINER_MAC,
        flags,
        network: NETWORK_TAG,
        gateway_mac: GATEWAY_MAC,
        _pad: [0; 2],
        bridge_ifindex: LO,
    }
}

/// The MAC address of CONTAINER's gateway (its bridge).
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 1];

/// The data path's counter for (hook, reason), summed over CPUs.
pub fn count(t: &TestDatapath, hook: &str, reason: &str) -> u64 {
    t.dp.counters()
        .unwrap()
        .iter()
        .find(|(h, r, _)| format!("{h:?}") == hook && r.name() == reason)
        .map(|(_, _, c)| c.packets)
        .unwrap_or_else(|| panic!("no counter {hook}/{reason}"))
}

/// Set the IPv4 flags-and-offset field of `frame` (0x2000: more fragments; the low 13
/// bits: offset in 8-byte units) and its header checksum.
pub fn as_fragment(mut frame: Vec<u8>, frag: u16) -> Vec<u8> {
    frame[ETH + 6..ETH + 8].copy_from_slice(&frag.to_be_bytes());
    frame[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
    let c = checksum(&frame[ETH..ETH + 20], 0);
    frame[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
    frame
}

/// A data path loaded (not attached) with maps pinned in a private bpffs mount.
pub struct TestDatapath {
    pub dp: Datapath,
    dir: PathBuf,
}

impl TestDatapath {
    pub fn new() -> Self {
        Self::with_flow_table(netd_common::maps::FLOWS_MAX)
    }

    /// With each of the connection table's maps `entries` large.
    pub fn with_flow_table(entries: u32) -> Self {
        Self::load(entries, netd::datapath::DatapathLog::Off)
    }

    /// With the programs logging at `log`.
    pub fn with_log(log: netd::datapath::DatapathLog) -> Self {
        Self::load(netd_common::maps::FLOWS_MAX, log)
    }

    fn load(entries: u32, log: netd::datapath::DatapathLog) -> Self {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "datapath tests load eBPF programs: run them as root (cargo xtask test)"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/run/netd-dp-test/{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mount bpffs at {}", dir.display());
        let dp = match Datapath::load_logging(&dir, entries, log) {
            Ok(dp) => dp,
            Err(e) => {
                // No TestDatapath owns the mount yet: undo it before failing.
                let _ = Command::new("umount").arg(&dir).status();
                let _ = std::fs::remove_dir(&dir);
                panic!("load the data path: {e:#}");
            }
        };
        TestDatapath { dp, dir }
    }

    /// Run `program` once on `packet`: the verdict and the packet as it came out.
    pub fn run(&mut self, program: &str, packet: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; packet.len() + 256];
        let prog = self.dp.program(program).unwrap();
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap();
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    /// Run the uplink's XDP program once on `frame`: the verdict, the metadata it left in
    /// front of the frame (empty if none), and the frame as it came out.
    pub fn run_xdp(&mut self, frame: &[u8]) -> (u32, Vec<u8>, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.dp.xdp_program().unwrap();
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap();
        out.truncate(result.data_size_out as usize);
        // data_out starts at data_meta: the metadata (XDP's note, if it left one), then
        // the frame (shorter than it came, when NAT46 made it IPv4).
        let magic = netd_common::fast_path::XDP_META_MAGIC.to_ne_bytes();
        let meta = if out.starts_with(&magic) {
            size_of::<netd_common::fast_path::XdpMeta>()
        } else {
            0
        };
        let frame_out = out.split_off(meta);
        (result.return_value, out, frame_out)
    }
}

impl TestDatapath {
    /// The bpffs directory its maps are pinned in.
    pub fn bpffs(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for TestDatapath {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// An Ethernet + IPv4 (no options) + TCP or UDP packet with valid checksums.
#[derive(Clone, Copy)]
pub struct Pkt {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// UDP only: send with a zero ("none") checksum.
    pub udp_no_csum: bool,
}

impl Pkt {
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Self {
        Pkt {
            proto: TCP,
            src,
            dst,
            sport,
            dport,
            tcp_flags: flags,
            udp_no_csum: false,
        }
    }

    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Pkt {
            proto: UDP,
            src,
            dst,
            sport,
            dport,
            tcp_flags: 0,
            udp_no_csum: false,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let payload = b"netd-datapath-test-payload";
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == TCP {
            l4.extend_from_slice(&[
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0x50,
                self.tcp_flags,
                0xff,
                0xff,
                0,
                0,
                0,
                0,
            ]);
        } else {
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(payload);
        let mut p = ipv4_frame(self.proto, self.src, self.dst, &l4);
        if !(self.proto == UDP && self.udp_no_csum) {
            let csum = l4_checksum(&p);
            let off = l4_csum_offset(self.proto);
            p[off..off + 2].copy_from_slice(&csum.to_be_bytes());
        }
        p
    }
}

pub fn l4_csum_offset(proto: u8) -> usize {
    ETH + 20 + if proto == TCP { 16 } else { 6 }
}

/// The one's complement sum of `data`, folded, complemented, starting from `initial`.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The L4 checksum of a packet computed from scratch (checksum field taken as zero).
pub fn l4_checksum(p: &[u8]) -> u16 {
    let proto = p[ETH + 9];
    let l4 = &p[ETH + 20..];
    let mut pseudo = 0u32;
    for w in [
        &p[ETH + 12..ETH + 14],
        &p[ETH + 14..ETH + 16],
        &p[ETH + 16..ETH + 18],
        &p[ETH + 18..ETH + 20],
    ] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    pseudo += u32::from(proto) + l4.len() as u32;
    let mut zeroed = l4.to_vec();
    let off = l4_csum_offset(proto) - ETH - 20;
    zeroed[off] = 0;
    zeroed[off + 1] = 0;
    let c = checksum(&zeroed, pseudo);
    if proto == UDP && c == 0 { 0xffff } else { c }
}

/// Both checksums of `p` are what a from-scratch computation gives.
pub fn assert_checksums_valid(p: &[u8]) {
    assert_eq!(checksum(&p[ETH..ETH + 20], 0), 0, "IPv4 header checksum");
    let proto = p[ETH + 9];
    let off = l4_csum_offset(proto);
    let stored = u16::from_be_bytes([p[off], p[off + 1]]);
    if proto == UDP && stored == 0 {
        return;
    }
    assert_eq!(stored, l4_checksum(p), "L4 checksum");
}

pub fn src_of(p: &[u8]) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(p[26], p[27], p[28], p[29]),
        u16::from_be_bytes([p[34], p[35]]),
    )
}

pub fn dst_of(p: &[u8]) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(p[30], p[31], p[32], p[33]),
        u16::from_be_bytes([p[36], p[37]]),
    )
}

pub const ICMP: u8 = 1;

fn ipv4_frame(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + l4.len()) as u16;
    p.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0x12,
        0x34,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p[ETH..ETH + 20], 0);
    p[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// An ICMP message (type, code, 4 bytes of rest-of-header, body) with a valid checksum.
fn icmp_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(body);
    let c = checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(ICMP, src, dst, &icmp)
}

/// A broadcast ARP request from the endpoint's interface (CONTAINER_MAC): sender `sha`
/// at `spa`, asking for `tpa`.
pub fn arp_request(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CONTAINER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f
}

pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, request: bool) -> Vec<u8> {
    let ty = if request { 8 } else { 0 };
    let id = id.to_be_bytes();
    icmp_frame(src, dst, ty, 0, [id[0], id[1], 0, 1], b"ping-payload")
}

/// An ICMP error from `src` to `dst` quoting `quoted` (a frame built by `Pkt`): its IP
/// header and the first 8 bytes of its L4 header, as routers send.
pub fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let rest = if ty == 3 && code == 4 {
        [0, 0, 0x05, 0x78]
    } else {
        [0; 4]
    }; // MTU 1400
    icmp_frame(src, dst, ty, code, rest, &quoted[ETH..ETH + 28])
}

/// The ICMP checksum and, for an error, the quoted IP header's checksum are right.
pub fn assert_icmp_checksums_valid(p: &[u8]) {
    assert_eq!(
        checksum(&p[ETH..ETH + 20], 0),
        0,
        "outer IPv4 header checksum"
    );
    assert_eq!(checksum(&p[ETH + 20..], 0), 0, "ICMP checksum");
    if matches!(p[ETH + 20], 3 | 11 | 12) {
        assert_eq!(
            checksum(&p[ETH + 28..ETH + 48], 0),
            0,
            "quoted IPv4 header checksum"
        );
    }
}

/// For an ICMP error: the quoted packet's (source, destination) ends.
pub fn quoted_ends(p: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let q = &p[ETH + 28..];
    let ip = |o: usize| Ipv4Addr::new(q[o], q[o + 1], q[o + 2], q[o + 3]);
    let port = |o: usize| u16::from_be_bytes([q[o], q[o + 1]]);
    ((ip(12), port(20)), (ip(16), port(22)))
}

/// The latest packet time in a snapshot of the flow table: "now" for a sweep that judges
/// it, plus a timeout.
pub fn latest_seen(snapshot: &netd::conntrack::Snapshot) -> u64 {
    snapshot
        .iter()
        .map(|(_, e, _)| e.last_seen_ns)
        .max()
        .expect("the table holds flows")
}

/// The note XDP left in front of a frame (`run_xdp`'s metadata): (magic, ifindex) in
/// native byte order, or `None` for no note.
pub fn note(meta: &[u8]) -> Option<(u32, u32)> {
    if meta.is_empty() {
        return None;
    }
    assert_eq!(meta.len(), 8, "an 8-byte note in front of the frame");
    Some((
        u32::from_ne_bytes(meta[0..4].try_into().unwrap()),
        u32::from_ne_bytes(meta[4..8].try_into().unwrap()),
    ))
}

/// The note XDP leaves for a packet it translated for the container behind `ifindex`:
/// none where the kernel gives XDP no metadata area (`kernel::xdp_metadata_supported`).
pub fn translated_note(ifindex: u32) -> Option<(u32, u32)> {
    netd::datapath::kernel::xdp_metadata_supported()
        .then_some((netd_common::fast_path::XDP_META_MAGIC, ifindex))
}
