//! What an attacker with raw sockets sends, and what a victim's interface receives: frames
//! built byte by byte (Ethernet, VLAN tags, IPv4, IPv6, ARP, UDP, TCP, ICMP), sent through
//! an AF_PACKET socket on an interface inside a namespace, and captured the same way. A
//! capture sees every frame delivered to the interface, also those its stack would drop,
//! so it is the ground truth for "reached the neighbour".

use std::{
    ffi::CString,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{collector::Collector, echo::in_netns};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const BROADCAST: [u8; 6] = [0xff; 6];
pub const UDP: u8 = 17;
pub const TCP: u8 = 6;
pub const ICMP: u8 = 1;

/// The one's complement sum of `data`, folded and complemented, from `initial`.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `frame` with VLAN tags (TPID, VID) inserted in front of its ethertype, outermost first.
pub fn vlan_tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// An IPv4 header (no options, checksum right) followed by `payload`. `frag` is the
/// flags-and-offset field (0x2000: more fragments).
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    id: u16,
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = checksum(&h, 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let words = [src.octets(), dst.octets()];
    let mut sum: u32 = words
        .iter()
        .flat_map(|o| {
            [
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([o[2], o[3]]),
            ]
        })
        .map(u32::from)
        .sum();
    sum += u32::from(proto) + len as u32;
    sum
}

/// A UDP datagram (header and data) with its checksum.
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let len = 8 + data.len();
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let c = checksum(&u, pseudo_header_sum(src, dst, UDP, len));
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    u
}

/// A TCP SYN (20-byte header) with its checksum.
pub fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    let c = checksum(&t, pseudo_header_sum(src, dst, TCP, t.len()));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// An ICMP message (type, code, four bytes of rest of header, body) with its checksum.
pub fn icmp(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = checksum(&m, 0);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An Ethernet frame with IPv4 `ip` (as `ipv4` builds it).
pub fn ipv4_frame(dst_mac: [u8; 6], src_mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    ethernet(dst_mac, src_mac, ETH_P_IP, ip)
}

/// An ARP request for IPv4 over Ethernet: `sha`/`spa` asks who has `tpa`.
pub fn arp_request(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    ethernet(BROADCAST, sha, ETH_P_ARP, &a)
}

/// The link-local IPv6 address a MAC gives (EUI-64), as 16 bytes.
fn link_local(mac: [u8; 6]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..16].copy_from_slice(&[
        mac[0] ^ 2,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]);
    a
}

/// An IPv6 router advertisement from `src_mac` to all nodes: "I am your default router,
/// and here is prefix 2001:db8:66::/64 to configure addresses from".
pub fn router_advertisement(src_mac: [u8; 6]) -> Vec<u8> {
    let src = link_local(src_mac);
    let mut dst = [0u8; 16];
    dst[0] = 0xff;
    dst[1] = 0x02;
    dst[15] = 1;
    // Type 134, code 0, checksum, hop limit 64, flags 0, router lifetime 1800 s, reachable
    // and retransmit timers 0; then a prefix information option.
    let mut ra = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    ra.extend_from_slice(&[3, 4, 64, 0xc0]);
    ra.extend_from_slice(&[0, 0x27, 0x8d, 0, 0, 0, 0x0e, 0x10, 0, 0, 0, 0]);
    ra.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0x66, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    // Source link-layer address option.
    ra.extend_from_slice(&[1, 1]);
    ra.extend_from_slice(&src_mac);
    let mut pseudo = 0u32;
    for chunk in src.chunks(2).chain(dst.chunks(2)) {
        pseudo += u32::from(u16::from_be_bytes([chunk[0], chunk[1]]));
    }
    pseudo += ra.len() as u32 + 58;
    let c = checksum(&ra, pseudo);
    ra[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend_from_slice(&(ra.len() as u16).to_be_bytes());
    ip6.extend_from_slice(&[58, 255]);
    ip6.extend_from_slice(&src);
    ip6.extend_from_slice(&dst);
    ip6.extend_from_slice(&ra);
    ethernet([0x33, 0x33, 0, 0, 0, 1], src_mac, ETH_P_IPV6, &ip6)
}

/// An IPv6 packet: fixed header (hop limit 255) and `rest` (extension headers and upper
/// layer; checksums are the caller's), whose first protocol is `next`.
pub fn ipv6(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 255]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(rest);
    p
}

/// A UDP datagram (for `ipv6`) from port `sport` to `dport` carrying `marker` (checksum
/// left 0: captures see it, no stack need take it).
pub fn udp6(sport: u16, dport: u16, marker: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + marker.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(marker);
    u
}

/// The link-local address of an interface with MAC `mac` (EUI-64), as netd gives them.
pub fn link_local6(mac: [u8; 6]) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::from(link_local(mac))
}

/// An AF_PACKET socket bound to `ifname` of the calling thread's namespace: every frame
/// the interface receives, or a way to send frames out of it.
fn packet_socket(ifname: &str) -> Result<OwnedFd> {
    const ETH_P_ALL: u16 = 0x0003;
    // SAFETY: a plain socket call.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = CString::new(ifname)?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface {ifname}");
    }
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = index as i32;
    // SAFETY: bind with a sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("bind AF_PACKET socket");
    }
    Ok(fd)
}

/// An AF_PACKET socket that sends frames as they are out of one interface of the
/// namespace it was opened in.
pub struct RawSender(OwnedFd);

impl RawSender {
    /// On `ifname` of the calling thread's namespace.
    pub fn open(ifname: &str) -> Result<Self> {
        Ok(RawSender(packet_socket(ifname)?))
    }

    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: send from a valid buffer.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Bring `ifname` of the calling thread's namespace up (as a process with CAP_NET_ADMIN
/// in its namespace can, whatever netd intends).
pub fn set_up(ifname: &str) -> Result<()> {
    // SAFETY: a plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SIOCSIFFLAGS");
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: ioctls on a valid socket with an ifreq naming the interface.
    unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS");
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS");
        }
    }
    Ok(())
}

/// A UDP frame from the container at `from` (its own MAC, as netd gives it) to the one at
/// `to`, with a source address `from` does not own (10.99.0.`marker`): what its veth's
/// program drops (`drop_spoofed_source`), and nothing else does.
pub fn spoofed(from: Ipv4Addr, to: Ipv4Addr, marker: u8) -> Vec<u8> {
    const UDP: u8 = 17;
    let ip = ipv4(Ipv4Addr::new(10, 99, 0, marker), to, UDP, 1, 0, b"spoof");
    ipv4_frame(
        netd::endpoint::mac_for(to),
        netd::endpoint::mac_for(from),
        &ip,
    )
}

/// Send `frames` as they are out of `ifname` in the namespace at `netns`.
pub fn send_frames(netns: &Path, ifname: &str, frames: Vec<Vec<u8>>) -> Result<()> {
    let ifname = ifname.to_string();
    in_netns(netns, move || {
        let sender = RawSender::open(&ifname)?;
        for f in &frames {
            sender.send(f).context("send a crafted frame")?;
        }
        Ok(())
    })
}

/// Every frame `ifname` in a namespace receives (not those it sends) while it runs.
pub struct Capture(Collector<Vec<u8>>);

impl Capture {
    pub fn start(netns: &Path, ifname: &str) -> Result<Self> {
        let name = ifname.to_string();
        let fd = in_netns(netns, move || {
            let fd = packet_socket(&name)?;
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 50_000,
            };
            // SAFETY: setsockopt with a timeval of the size given.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            Ok(fd)
        })?;
        Ok(Capture(Collector::spawn(move |frames, stop| {
            capture(fd, frames, stop)
        })))
    }

    /// The frames so far.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        self.0.items()
    }

    /// Wait a moment for frames in flight, then the frames.
    pub fn settle(&self) -> Vec<Vec<u8>> {
        std::thread::sleep(Duration::from_millis(300));
        self.frames()
    }
}

fn capture(fd: OwnedFd, frames: &Mutex<Vec<Vec<u8>>>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: recvfrom into a valid buffer and address of the sizes given.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
            frames.lock().unwrap().push(buf[..n as usize].to_vec());
        }
    }
}

/// The ethertype of a captured frame (the kernel hands AF_PACKET the frame with any VLAN
/// tag it stripped put back in front, as it was on the wire).
pub fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

/// Whether a captured frame carries `marker` anywhere (crafted payloads carry one, so a
/// test recognises its own frames among the neighbours' chatter).
pub fn carries(frame: &[u8], marker: &[u8]) -> bool {
    frame.windows(marker.len()).any(|w| w == marker)
}
