//! Host-local access to published ports: processes of the node calling 127.0.0.1:PORT,
//! `[::1]:PORT` or a node address reach the container without a proxy process, because
//! their socket's destination is rewritten when they connect (TCP, connected UDP) or send
//! (unconnected UDP); replies and getpeername() show the address they called. Only
//! sockets of the node's own network namespace are touched (its netns cookie is in the
//! node config). One copy of the logic for both families; what differs (where the
//! socket's address is, which table remembers what was called) is behind `Local`. An
//! IPv6 socket that is not IPv6-only calling a v4-mapped address (`::ffff:127.0.0.1`)
//! reaches IPv4's published ports, as the kernel sends it over IPv4: its call is looked
//! up and remembered as IPv4's (where its datagrams' `sendmsg4` puts theirs too).

use aya_ebpf::{
    bindings::{BPF_ANY, bpf_sock_addr},
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    maps::LruHashMap,
    programs::SockAddrContext,
};
use netd_common::{
    PROTO_TCP, PROTO_UDP,
    maps::Addr6,
    sockets::{SocketOrigin, SocketOrigin6, SocketPeer, SocketPeer6},
};

use crate::{
    maps::{NODE_CONFIG, SOCKET_ORIGINS, SOCKET_ORIGINS6},
    nat::{self, Nat},
};

/// What a sock_addr program returns to let the call proceed.
const ALLOW: i32 = 1;

/// What host-local access needs of an address family's sockets.
pub trait Local: Nat {
    /// The socket's origins table: key and value.
    type Peer;
    type Origin;
    /// The address the process called (or, in recvmsg/getpeername, its peer's).
    fn called(sa: &bpf_sock_addr) -> Self;
    /// Make `addr` the socket's address.
    fn point_at(sa: &mut bpf_sock_addr, addr: Self);
    fn peer(cookie: u64, addr: Self, port: u16) -> Self::Peer;
    fn origin(addr: Self, port: u16) -> Self::Origin;
    fn origin_of(origin: &Self::Origin) -> (Self, u16);
    fn origins() -> &'static LruHashMap<Self::Peer, Self::Origin>;
    /// The IPv4 address behind a v4-mapped one (`::ffff:a.b.c.d`).
    fn as_ipv4(addr: Self) -> Option<u32>;
    /// The address for an IPv4 one: itself, or v4-mapped.
    fn of_ipv4(addr: u32) -> Self;
}

impl Local for u32 {
    type Peer = SocketPeer;
    type Origin = SocketOrigin;
    #[inline(always)]
    fn called(sa: &bpf_sock_addr) -> u32 {
        sa.user_ip4
    }
    #[inline(always)]
    fn point_at(sa: &mut bpf_sock_addr, addr: u32) {
        sa.user_ip4 = addr;
    }
    #[inline(always)]
    fn peer(cookie: u64, addr: u32, port: u16) -> SocketPeer {
        SocketPeer {
            cookie,
            addr,
            port,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn origin(addr: u32, port: u16) -> SocketOrigin {
        SocketOrigin {
            addr,
            port,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn origin_of(origin: &SocketOrigin) -> (u32, u16) {
        (origin.addr, origin.port)
    }
    #[inline(always)]
    fn origins() -> &'static LruHashMap<SocketPeer, SocketOrigin> {
        &SOCKET_ORIGINS
    }
    #[inline(always)]
    fn as_ipv4(_: u32) -> Option<u32> {
        None
    }
    #[inline(always)]
    fn of_ipv4(addr: u32) -> u32 {
        addr
    }
}

impl Local for Addr6 {
    type Peer = SocketPeer6;
    type Origin = SocketOrigin6;
    /// Word by word: the verifier takes only 4-byte accesses to `user_ip6`.
    #[inline(always)]
    fn called(sa: &bpf_sock_addr) -> Addr6 {
        let mut addr = [0u32; 4];
        for (i, word) in addr.iter_mut().enumerate() {
            // SAFETY: an aligned read of the context's field.
            *word = unsafe { core::ptr::read_volatile(&sa.user_ip6[i]) };
        }
        addr
    }
    #[inline(always)]
    fn point_at(sa: &mut bpf_sock_addr, addr: Addr6) {
        for (i, word) in addr.iter().enumerate() {
            // SAFETY: an aligned write of the context's field.
            unsafe { core::ptr::write_volatile(&mut sa.user_ip6[i], *word) };
        }
    }
    #[inline(always)]
    fn peer(cookie: u64, addr: Addr6, port: u16) -> SocketPeer6 {
        SocketPeer6 {
            cookie,
            addr,
            port,
            _pad: [0; 3],
        }
    }
    #[inline(always)]
    fn origin(addr: Addr6, port: u16) -> SocketOrigin6 {
        SocketOrigin6 {
            addr,
            port,
            _pad: 0,
        }
    }
    #[inline(always)]
    fn origin_of(origin: &SocketOrigin6) -> (Addr6, u16) {
        (origin.addr, origin.port)
    }
    #[inline(always)]
    fn origins() -> &'static LruHashMap<SocketPeer6, SocketOrigin6> {
        &SOCKET_ORIGINS6
    }
    #[inline(always)]
    fn as_ipv4(addr: Addr6) -> Option<u32> {
        (addr[0] == 0 && addr[1] == 0 && addr[2] == V4_MAPPED).then_some(addr[3])
    }
    #[inline(always)]
    fn of_ipv4(addr: u32) -> Addr6 {
        [0, 0, V4_MAPPED, addr]
    }
}

/// The third word of a v4-mapped address (`::ffff:0:0/96`), as `Addr6` holds it.
const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

fn in_node_netns(ctx: &SockAddrContext) -> bool {
    let Some(config) = NODE_CONFIG.get(0) else {
        return false;
    };
    // SAFETY: the helper reads the socket behind a valid context.
    config.netns_cookie != 0
        && unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) } == config.netns_cookie
}

/// connect and sendmsg: point the socket at the container behind a published port.
#[inline(always)]
pub fn translate_destination<A: Local>(ctx: &SockAddrContext) -> i32 {
    if !in_node_netns(ctx) {
        return ALLOW;
    }
    // SAFETY: the context's bpf_sock_addr is valid for the program's run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let proto = sa.protocol as u8;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return ALLOW;
    }
    let (addr, port) = (A::called(sa), sa.user_port as u16);
    let to = match A::as_ipv4(addr) {
        Some(v4) => redirected::<u32>(ctx, v4, port, proto).map(|(to, p)| (A::of_ipv4(to), p)),
        None => redirected::<A>(ctx, addr, port, proto),
    };
    if let Some((to, to_port)) = to {
        A::point_at(sa, to);
        sa.user_port = to_port as u32;
    }
    ALLOW
}

/// The container behind `addr:port` if that is a published port (the exact binding
/// first; the wildcard answers on loopback and the node's addresses), the call
/// remembered for `restore_peer`.
#[inline(always)]
fn redirected<B: Local>(ctx: &SockAddrContext, addr: B, port: u16, proto: u8) -> Option<(B, u16)> {
    let every_address_answers = B::is_loopback(addr) || B::is_node_addr(addr);
    let backend = nat::binding::<B>(addr, port, proto, every_address_answers)?;
    // SAFETY: the helper reads the socket behind a valid context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // Best effort: without it only the reported peer address is the container's.
    let _ = B::origins().insert(
        B::peer(cookie, backend.addr, backend.port),
        B::origin(addr, port),
        BPF_ANY as u64,
    );
    Some((backend.addr, backend.port))
}

/// recvmsg and getpeername: show the address the process called, not the container's.
#[inline(always)]
pub fn restore_peer<A: Local>(ctx: &SockAddrContext) -> i32 {
    if !in_node_netns(ctx) {
        return ALLOW;
    }
    // SAFETY: as above.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let (peer, port) = (A::called(sa), sa.user_port as u16);
    // A v4-mapped peer: an IPv4 binding's container called through its v4-mapped
    // address, or an IPv6 one's that has IPv4 only (NAT46: `[::1]:8080` led there).
    let origin = A::as_ipv4(peer)
        .and_then(|v4| called::<u32>(cookie, v4, port).map(|(addr, p)| (A::of_ipv4(addr), p)))
        .or_else(|| called::<A>(cookie, peer, port));
    if let Some((addr, port)) = origin {
        A::point_at(sa, addr);
        sa.user_port = port as u32;
    }
    ALLOW
}

/// What the socket `cookie` called to reach `peer:port`, if it was redirected.
#[inline(always)]
fn called<B: Local>(cookie: u64, peer: B, port: u16) -> Option<(B, u16)> {
    // SAFETY: a copy out of the map value.
    unsafe { B::origins().get(B::peer(cookie, peer, port)) }.map(B::origin_of)
}
