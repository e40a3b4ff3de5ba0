//! Asking a LAN whether an address is taken before a container that sits on the LAN
//! itself (macvlan) is given it: a probe frame sent out of the parent a few times, and
//! every frame that arrives meanwhile shown to a judge, which names the MAC of a host
//! that claims the address. The frames are the family's: ARP probes for IPv4
//! (`arp_probe`), duplicate address detection's neighbour solicitations for IPv6
//! (`nd_probe`). A packet socket on the parent, open for the probe's length only.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// One probe: `frame` sent `probes` times, evenly over `wait`, out of `ifindex`.
pub struct Probe<'a> {
    pub ifindex: u32,
    /// The frames of this type are sent and seen.
    pub ethertype: u16,
    pub frame: &'a [u8],
    pub wait: Duration,
    pub probes: u32,
    /// Take every multicast frame the link sees while probing, not only the groups the
    /// node joined: IPv6's answers go to all-nodes and solicited-node groups a parent
    /// without IPv6 of its own has not joined.
    pub all_multicast: bool,
}

/// Send `p` and wait: the MAC `conflict` names in a frame seen within the wait, if any.
/// Blocking, `p.wait` long unless a conflict comes first.
pub fn probe(p: &Probe, conflict: impl Fn(&[u8]) -> Option<[u8; 6]>) -> Result<Option<[u8; 6]>> {
    let sock = packet_socket(p.ifindex, p.ethertype)?;
    if p.all_multicast {
        all_multicast(&sock, p.ifindex)?;
    }
    let start = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 1514];
    while start.elapsed() < p.wait {
        if sent < p.probes && start.elapsed() >= p.wait / p.probes * sent {
            send(&sock, p)?;
            sent += 1;
        }
        let next_send = if sent < p.probes {
            p.wait / p.probes * sent
        } else {
            p.wait
        };
        let wait = next_send.saturating_sub(start.elapsed());
        if let Some(n) = recv_within(&sock, &mut buf, wait)?
            && let Some(theirs) = conflict(&buf[..n])
        {
            return Ok(Some(theirs));
        }
    }
    Ok(None)
}

fn packet_socket(ifindex: u32, ethertype: u16) -> Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ethertype.to_be()),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("open a packet socket");
    }
    // SAFETY: a descriptor we were just given and own alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = link_addr(ifindex, ethertype, [0xff; 6]);
    // SAFETY: bind with a sockaddr_ll of the right size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("bind the packet socket");
    }
    Ok(sock)
}

/// The link takes every multicast frame while `sock` is open (PACKET_MR_ALLMULTI, undone
/// by the kernel when the socket closes).
fn all_multicast(sock: &OwnedFd, ifindex: u32) -> Result<()> {
    // SAFETY: all-zero is a valid packet_mreq.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex as i32;
    mreq.mr_type = libc::PACKET_MR_ALLMULTI as u16;
    // SAFETY: setsockopt with a packet_mreq of its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&raw const mreq).cast(),
            size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("take every multicast frame on the packet socket");
    }
    Ok(())
}

fn link_addr(ifindex: u32, ethertype: u16, dst: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dst);
    addr
}

fn send(sock: &OwnedFd, p: &Probe) -> Result<()> {
    let dst: [u8; 6] = p.frame[..6]
        .try_into()
        .context("a frame without a header")?;
    let addr = link_addr(p.ifindex, p.ethertype, dst);
    // SAFETY: sendto with a buffer and a sockaddr_ll of their sizes.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            p.frame.as_ptr().cast(),
            p.frame.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("send an address probe");
    }
    Ok(())
}

/// One frame, if one arrives within `wait`.
fn recv_within(sock: &OwnedFd, buf: &mut [u8], wait: Duration) -> Result<Option<usize>> {
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: one pollfd.
    if unsafe { libc::poll(&mut p, 1, ms) } <= 0 {
        return Ok(None);
    }
    // SAFETY: recv into a buffer of its length.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    Ok(usize::try_from(n).ok())
}
