//! The 64-byte forwarding measurement. iperf3 cannot send minimum-size UDP faster than the
//! node forwards it, so the generator is netd's `bench_transmit` XDP program run by
//! BPF_PROG_TEST_RUN in live-frames mode on the client's veth: every frame leaves by
//! XDP_TX toward the node's uplink, built once here, with no socket or syscall per frame.
//! The container holds a UDP socket that never reads (a small receive buffer), so frames
//! reach L4 without ICMP errors and without a reader to wait for; what arrived is read
//! from the container's own IP counters.
//!
//! Where the kernel refuses live frames (BPF_PROG_TEST_RUN answers EPERM, seen on
//! 6.18.44-fc), the same frame is sent from an AF_PACKET socket in batches of 64
//! (`sendmmsg`, past the qdisc): a syscall per batch, on the same CPU, so those rows
//! measure the receive path with that added; the JSON says which generator ran.
//!
//! The generator is a process of its own (`netd-bench transmit`) run with `nsenter` and
//! `unshare`: that gives it the client's network namespace and a private mount namespace,
//! where it mounts the bpffs that netd's object needs for its pinned maps; the mount and
//! the maps go away with the process.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::tools::{CLIENT_CPU, proc_net_counter, wait_bounded};
use crate::{Netns, echo::in_netns};

/// The container's UDP port the frames are for (published as is by the translating beds).
pub const SINK_PORT: u16 = 9000;
/// The generator's source port.
pub const SOURCE_PORT: u16 = 40000;
/// 18 bytes: with Ethernet (14), IPv4 (20) and UDP (8) headers a 60-byte frame, 64 bytes
/// on a wire with the FCS, the smallest Ethernet frame.
pub const PAYLOAD: &[u8; 18] = b"netd-bench 64 byte";
/// Frames the kernel runs through the program per batch (its maximum is 256).
pub const BATCH: u32 = 64;
/// The frame size `bench_transmit` writes (its `BENCH_FRAME`).
pub const FRAME_LEN: usize = 60;
/// The IPv6 frame `bench_transmit6` writes (its `BENCH_FRAME6`): the same payload behind
/// an IPv6 header, 80 bytes (84 on a wire; the smallest Ethernet frame holds no IPv6 UDP).
pub const FRAME6_LEN: usize = 80;
/// Where the generator mounts its private bpffs (inside its own mount namespace).
const PRIVATE_BPFFS: &str = "/sys/fs/bpf";

/// The ones' complement sum of `data` as 16-bit big-endian words, folded, not inverted.
fn ones_sum(mut sum: u32, data: &[u8]) -> u32 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// An Ethernet/IPv4/UDP frame with both checksums right (the container's stack verifies
/// the UDP one when the sink reads a frame back).
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let mut f = Vec::with_capacity(14 + 20 + udp_len as usize);
    f.extend(dst_mac);
    f.extend(src_mac);
    f.extend(0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend([0x45, 0]);
    f.extend((20 + udp_len).to_be_bytes());
    f.extend([0, 0, 0x40, 0]); // id 0, don't fragment
    f.extend([64, 17, 0, 0]); // ttl, UDP, checksum below
    f.extend(src.ip().octets());
    f.extend(dst.ip().octets());
    let ip_csum = !(ones_sum(0, &f[ip_start..ip_start + 20]) as u16);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&ip_csum.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend(src.ip().octets());
    pseudo.extend(dst.ip().octets());
    pseudo.extend([0, 17]);
    pseudo.extend(udp_len.to_be_bytes());
    f.extend(udp_datagram(&pseudo, src.port(), dst.port(), payload));
    f
}

/// An Ethernet/IPv6/UDP frame with its UDP checksum right (hop limit 64).
pub fn udp6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV6,
    dst: SocketAddrV6,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let mut f = Vec::with_capacity(14 + 40 + udp_len as usize);
    f.extend(dst_mac);
    f.extend(src_mac);
    f.extend(0x86ddu16.to_be_bytes());
    f.extend([0x60, 0, 0, 0]);
    f.extend(udp_len.to_be_bytes());
    f.extend([17, 64]); // UDP, hop limit
    f.extend(src.ip().octets());
    f.extend(dst.ip().octets());
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend(src.ip().octets());
    pseudo.extend(dst.ip().octets());
    pseudo.extend(u32::from(udp_len).to_be_bytes());
    pseudo.extend([0, 0, 0, 17]);
    f.extend(udp_datagram(&pseudo, src.port(), dst.port(), payload));
    f
}

/// The UDP header and payload, its checksum over `pseudo` (the family's pseudo-header).
fn udp_datagram(pseudo: &[u8], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend(sport.to_be_bytes());
    d.extend(dport.to_be_bytes());
    d.extend(((8 + payload.len()) as u16).to_be_bytes());
    d.extend([0, 0]);
    d.extend(payload);
    let sum = ones_sum(ones_sum(0, pseudo), &d);
    let csum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    d[6..8].copy_from_slice(&csum.to_be_bytes());
    d
}

/// A frame's source address and port (IPv4 or IPv6, UDP behind a fixed header).
pub fn source_of(frame: &[u8]) -> Option<SocketAddr> {
    let port = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let ip: [u8; 4] = frame.get(26..30)?.try_into().ok()?;
            Some(SocketAddr::from((Ipv4Addr::from(ip), port(34)?)))
        }
        [0x86, 0xdd] => {
            let ip: [u8; 16] = frame.get(22..38)?.try_into().ok()?;
            Some(SocketAddr::from((Ipv6Addr::from(ip), port(54)?)))
        }
        _ => None,
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(text: &str) -> Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("not hex"))
        .collect()
}

/// The generator itself (`netd-bench transmit`): send `frame` `count` times out of
/// interface `ifindex` of the current network namespace; prints one JSON object.
pub fn transmit(ifindex: u32, frame: &[u8], count: u32, batch: u32) -> Result<()> {
    use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};

    let template4 = <[u8; FRAME_LEN]>::try_from(frame).ok();
    let template6 = <[u8; FRAME6_LEN]>::try_from(frame).ok();
    mount_private_bpffs()?;
    let mut loader = aya::EbpfLoader::new();
    loader.default_map_pin_directory(PRIVATE_BPFFS);
    // Live-frame pages come back with the stack's edits: the program rewrites each frame
    // from this template, of its own size per family.
    let name = match (&template4, &template6) {
        (Some(template), _) => {
            loader.override_global("BENCH_FRAME", template, true);
            "bench_transmit"
        }
        (None, Some(template)) => {
            loader.override_global("BENCH_FRAME6", template, true);
            "bench_transmit6"
        }
        (None, None) => bail!(
            "the frame has {} bytes; bench_transmit sends {FRAME_LEN} (IPv4), bench_transmit6 {FRAME6_LEN} (IPv6)",
            frame.len()
        ),
    };
    let mut ebpf = loader
        .load(netd::datapath::PROGRAMS)
        .context("load netd's eBPF object")?;
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("netd's object has no {name} program"))?
        .try_into()?;
    program.load().with_context(|| format!("verify {name}"))?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex. XDP_TX sends out of the ingress interface.
    let md = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
    // Live mode reports no verdict: one ordinary run (nothing leaves) checks it first.
    let dry = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN, one frame")?;
    let started = Instant::now();
    let live = program.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: count,
        attrs: TestRunAttrs::new().xdp_live_frames(batch),
        ..TestRunOptions::new()
    });
    let (generator, kernel_ns) = match live {
        Ok(result) => ("xdp live frames", result.duration.as_nanos() as u64),
        // Some kernels refuse live frames (EPERM, seen on 6.18.44-fc): the same frame
        // from a packet socket instead, nothing run before it sent.
        Err(e) if refused(&e) => {
            send_from_packet_socket(ifindex, frame, count, batch)?;
            ("packet socket", 0)
        }
        Err(e) => {
            return Err(anyhow::Error::from(e).context("BPF_PROG_TEST_RUN in live-frames mode"));
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "frames": count,
            "seconds": seconds,
            "verdict": dry.return_value,
            "generator": generator,
            "kernel_ns_per_frame": kernel_ns,
        })
    );
    Ok(())
}

/// Whether an error is the kernel's EPERM (its cause chain holds that OS error).
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
        {
            return true;
        }
        cause = err.source();
    }
    false
}

/// The generator where the kernel refuses live frames: `frame` sent `count` times out of
/// interface `ifindex` from an AF_PACKET socket, `batch` frames per `sendmmsg`, past the
/// qdisc (PACKET_QDISC_BYPASS), as a NIC's driver would get them; a full queue is
/// waited out, never counted as sent.
fn send_from_packet_socket(ifindex: u32, frame: &[u8], count: u32, batch: u32) -> Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("open a packet socket");
    }
    // SAFETY: a descriptor just returned, owned here only.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a valid pointer.
    unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: bind reads a sockaddr_ll of the size given.
    if unsafe {
        libc::bind(
            raw,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).context("bind the packet socket");
    }
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // Each header points at the one iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch)
        .map(|_| {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &raw mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut sent = 0u32;
    while sent < count {
        let n = batch.min(count - sent);
        // SAFETY: `msgs` holds at least `n` headers, each pointing at `frame`.
        let r = unsafe { libc::sendmmsg(raw, msgs.as_mut_ptr(), n, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                std::thread::yield_now();
                continue;
            }
            return Err(e).context("send frames from the packet socket");
        }
        sent += r as u32;
    }
    drop(sock);
    Ok(())
}

/// Mount bpffs at /sys/fs/bpf, but only in a mount namespace of our own (`run` makes one
/// with `unshare`): the parent's must never see it.
fn mount_private_bpffs() -> Result<()> {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let own = std::fs::read_link("/proc/self/ns/mnt").context("read own mount namespace")?;
    let theirs = std::fs::read_link(format!("/proc/{parent}/ns/mnt"))
        .context("read the parent's mount namespace")?;
    if own == theirs {
        bail!(
            "not in a private mount namespace (run under `unshare --mount`): refusing to mount bpffs"
        );
    }
    let target = std::ffi::CString::new(PRIVATE_BPFFS)?;
    let fstype = std::ffi::CString::new("bpf")?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context(format!("mount a private bpffs at {PRIVATE_BPFFS}"));
    }
    // The mount must not have reached the parent's namespace.
    let parent_mounts = std::fs::read_to_string(format!("/proc/{parent}/mountinfo"))?;
    let own_mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let ours = own_mounts
        .lines()
        .filter(|l| is_bpffs_at(l, PRIVATE_BPFFS))
        .filter_map(|l| l.split_whitespace().next())
        .next_back()
        .context("the private bpffs is not in our mountinfo")?
        .to_string();
    if parent_mounts
        .lines()
        .any(|l| is_bpffs_at(l, PRIVATE_BPFFS) && l.split_whitespace().next() == Some(&ours))
    {
        bail!("the private bpffs is visible in the parent's mount namespace");
    }
    Ok(())
}

fn is_bpffs_at(mountinfo_line: &str, at: &str) -> bool {
    let f: Vec<&str> = mountinfo_line.split_whitespace().collect();
    f.get(4) == Some(&at) && mountinfo_line.contains(" - bpf ")
}

/// What one generator run sent.
pub struct Sent {
    pub frames: f64,
    pub seconds: f64,
    /// CPU cycles on the generator's CPU during the run, when the machine counts them.
    pub cycles: Option<f64>,
    /// Which generator ran: "xdp live frames", or "packet socket" where the kernel
    /// refuses live frames.
    pub generator: String,
}

/// Whether `perf stat -e cycles` can count here: perf installed and a CPU PMU present.
pub enum Cycles {
    Supported,
    Unsupported(String),
}

impl Cycles {
    pub fn detect() -> Self {
        let perf = Command::new("perf")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !perf {
            return Cycles::Unsupported("not measured: perf is not installed".into());
        }
        let pmu = ["cpu", "cpu_core", "cpu_atom"]
            .iter()
            .any(|d| Path::new("/sys/bus/event_source/devices").join(d).exists());
        if !pmu {
            return Cycles::Unsupported(
                "not supported by this machine (no PMU: /sys/bus/event_source/devices has no cpu)"
                    .into(),
            );
        }
        Cycles::Supported
    }
}

/// Run the generator in the network namespace at `client` (a named one or a container's)
/// pinned to the client CPU, at most `limit`; with `cycles`, under `perf stat -e cycles
/// -C CPU`.
pub fn run(
    client: &Path,
    ifindex: u32,
    frame: &[u8],
    count: u32,
    cycles: &Cycles,
    limit: Duration,
) -> Result<Sent> {
    let me = std::env::current_exe().context("the netd-bench binary")?;
    let cpu = CLIENT_CPU.to_string();
    let mut cmd = if matches!(cycles, Cycles::Supported) {
        let mut c = Command::new("perf");
        c.args([
            "stat", "-x", ",", "-e", "cycles", "-C", &cpu, "--", "nsenter",
        ]);
        c
    } else {
        Command::new("nsenter")
    };
    // SCHED_FIFO at the lowest real-time priority: on a shared machine other processes
    // would otherwise preempt the generator, and with it the whole receive path, and
    // count in its wall time. Bounded by the frame count (a few seconds); the kernel's
    // real-time throttling still leaves the CPU 5 % for everyone else.
    // The namespace, and a mount namespace of its own for the generator's private bpffs
    // (nsenter and unshare exec in place: the generator's parent is this process).
    cmd.arg(format!("--net={}", client.display()))
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "chrt",
            "--fifo",
            "1",
            "taskset",
            "-c",
            &cpu,
        ])
        .arg(me)
        .args([
            "transmit",
            "--ifindex",
            &ifindex.to_string(),
            "--frame",
            &to_hex(frame),
            "--count",
            &count.to_string(),
            "--batch",
            &BATCH.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().context("start the frame generator")?;
    let out = wait_bounded(child, "the frame generator", limit)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "the frame generator failed ({}): {}",
            out.status,
            stderr.trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("the generator's output is not JSON: {stdout}"))?;
    if v["verdict"].as_u64() != Some(3) {
        bail!("bench_transmit answered {} instead of XDP_TX", v["verdict"]);
    }
    // perf -x , lines: VALUE,UNIT,EVENT,...
    let cycles = stderr
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2].starts_with("cycles"))
        .and_then(|f| f[0].parse::<f64>().ok());
    let generator = v["generator"]
        .as_str()
        .unwrap_or("xdp live frames")
        .to_string();
    if generator != "xdp live frames" {
        eprintln!(
            "bench: the kernel refuses BPF_PROG_TEST_RUN live frames: 64-byte frames sent from a {generator}"
        );
    }
    Ok(Sent {
        frames: v["frames"].as_f64().context("no frames")?,
        seconds: v["seconds"].as_f64().context("no seconds")?,
        cycles,
        generator,
    })
}

/// The container's end: a UDP socket bound to the sink port that is read only to check
/// one frame after a run, with a receive buffer small enough that it is full at once.
pub struct Sink {
    socket: UdpSocket,
}

impl Sink {
    /// The sink on IPv4.
    pub fn bind(container: &Path) -> Result<Self> {
        Self::bind_on(container, false)
    }

    /// The sink on both families where `dual_stack` (bound to `[::]`, which takes IPv4
    /// too).
    pub fn bind_on(container: &Path, dual_stack: bool) -> Result<Self> {
        let any: SocketAddr = if dual_stack {
            SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, SINK_PORT, 0, 0).into()
        } else {
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SINK_PORT).into()
        };
        let socket = in_netns(container, move || {
            let s = UdpSocket::bind(any)
                .with_context(|| format!("bind UDP {SINK_PORT} in the container"))?;
            let size: libc::c_int = 4096;
            // SAFETY: a valid socket and a c_int option value of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("SO_RCVBUF");
            }
            s.set_nonblocking(true)?;
            Ok(s)
        })?;
        Ok(Sink { socket })
    }

    /// Read what is queued: the sender of the first frame (the container's stack verified
    /// its UDP checksum on the way; an IPv4 sender as IPv4, also on a dual-stack socket),
    /// and whether its payload was the generator's. The queue is empty afterwards.
    pub fn drain(&self) -> Result<Option<(SocketAddr, bool)>> {
        let mut first = None;
        let mut buf = [0u8; 64];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                    first.get_or_insert((from, &buf[..n] == PAYLOAD));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(first),
                Err(e) => return Err(e).context("read the sink"),
            }
        }
    }
}

/// A namespace's counter of `/proc/net/snmp` (`Ip`, `Udp`, ...), read through a process
/// that lives in it.
pub fn snmp(pid: u32, group: &str, name: &str) -> Result<u64> {
    proc_net_counter(pid, "snmp", group, name)
}

/// A namespace's IPv6 counter of `/proc/net/snmp6` (`Ip6InDelivers`, ...: a name and a
/// value per line).
pub fn snmp6(pid: u32, name: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/net/snmp6");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .with_context(|| format!("no {name} in {path}"))
}

/// What the namespace of process `pid` counted of UDP for a family: datagrams delivered
/// (the IP layer's InDelivers), checksum errors, and those that found the receive buffer
/// full.
pub fn udp_counts(pid: u32, ipv6: bool) -> Result<[u64; 3]> {
    if ipv6 {
        Ok([
            snmp6(pid, "Ip6InDelivers")?,
            snmp6(pid, "Udp6InCsumErrors")?,
            snmp6(pid, "Udp6RcvbufErrors")?,
        ])
    } else {
        Ok([
            snmp(pid, "Ip", "InDelivers")?,
            snmp(pid, "Udp", "InCsumErrors")?,
            snmp(pid, "Udp", "RcvbufErrors")?,
        ])
    }
}

/// An interface's MAC, ifindex and counters, from `ip -j -s link`.
pub struct Link {
    pub mac: [u8; 6],
    pub ifindex: u32,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

impl Link {
    /// Interface `ifname` of the network namespace at `netns`.
    pub fn read(netns: &Path, ifname: &str) -> Result<Self> {
        let out = crate::netns::run(
            "nsenter",
            &[
                &format!("--net={}", netns.display()),
                "ip",
                "-j",
                "-s",
                "link",
                "show",
                "dev",
                ifname,
            ],
        )?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let l = &v[0];
        Ok(Link {
            mac: parse_mac(l["address"].as_str().context("no address")?)?,
            ifindex: l["ifindex"].as_u64().context("no ifindex")? as u32,
            rx_dropped: l["stats64"]["rx"]["dropped"].as_u64().unwrap_or(0),
            tx_dropped: l["stats64"]["tx"]["dropped"].as_u64().unwrap_or(0),
        })
    }
}

/// A MAC as `ip` prints it (`02:42:0a:00:00:02`).
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {text}"))?;
    bytes.try_into().ok().context("MAC of 6 bytes")
}

/// The sum of an interface's driver counters (`ethtool -S`) whose name says drop or
/// error: for a veth, its XDP and ring drops, which `ip -s link` does not show.
pub fn driver_drops(ns: &Netns, ifname: &str) -> Result<u64> {
    let out = ns.exec(&["ethtool", "-S", ifname])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(name, _)| name.contains("drop") || name.contains("err"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum())
}

/// Packets CPU `cpu` dropped because its backlog was full (`/proc/net/softnet_stat`,
/// second column; machine-wide, not per namespace).
pub fn softnet_dropped(cpu: u32) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/net/softnet_stat")?;
    let line = text
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(12)
                .and_then(|c| u32::from_str_radix(c, 16).ok())
                == Some(cpu)
        })
        .or_else(|| text.lines().nth(cpu as usize))
        .with_context(|| format!("no CPU {cpu} in /proc/net/softnet_stat"))?;
    let dropped = line
        .split_whitespace()
        .nth(1)
        .context("short softnet_stat line")?;
    Ok(u64::from_str_radix(dropped, 16)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_64_bytes_on_the_wire_with_both_checksums_right() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 1), SOURCE_PORT);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 2), SINK_PORT);
        let f = udp_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst, PAYLOAD);
        assert_eq!(f.len() + 4, 64);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        // A header with its checksum in sums to all ones.
        assert_eq!(ones_sum(0, &f[14..34]), 0xffff);
        let mut pseudo = vec![10, 200, 0, 1, 10, 200, 0, 2, 0, 17];
        pseudo.extend(26u16.to_be_bytes());
        assert_eq!(ones_sum(ones_sum(0, &pseudo), &f[34..]), 0xffff);
        assert_eq!(&f[42..], PAYLOAD);
        assert_eq!(from_hex(&to_hex(&f)).unwrap(), f);
        assert_eq!(source_of(&f), Some(src.into()));
    }

    #[test]
    fn the_ipv6_frame_carries_the_same_payload_in_80_bytes_with_its_checksum_right() {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let src = SocketAddrV6::new(a("2001:db8:200::1"), SOURCE_PORT, 0, 0);
        let dst = SocketAddrV6::new(a("2001:db8:200::2"), SINK_PORT, 0, 0);
        let f = udp6_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst, PAYLOAD);
        assert_eq!(f.len(), FRAME6_LEN);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(
            (f[14] >> 4, f[20], f[21]),
            (6, 17, 64),
            "version, UDP, hop limit"
        );
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 26, "payload length");
        let mut pseudo = Vec::new();
        pseudo.extend(src.ip().octets());
        pseudo.extend(dst.ip().octets());
        pseudo.extend([0, 0, 0, 26, 0, 0, 0, 17]);
        assert_eq!(ones_sum(ones_sum(0, &pseudo), &f[54..]), 0xffff);
        assert_eq!(&f[62..], PAYLOAD);
        assert_eq!(source_of(&f), Some(src.into()));
    }
}
