//! Host-local access to published ports: processes of the node calling 127.0.0.1:PORT or a
//! node address reach the container without a proxy process, because their socket's
//! destination is rewritten when they connect (TCP, connected UDP) or send (unconnected
//! UDP); replies and getpeername() show the address they called. Only sockets of the
//! node's own network namespace are touched (its netns cookie is in the node config).

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use netd_common::{
    PROTO_TCP, PROTO_UDP,
    published::{Backend, PortKey},
    sockets::{SocketOrigin, SocketPeer},
};

use crate::{
    maps::{NODE_ADDRS, NODE_CONFIG, PUBLISHED_PORTS, SOCKET_ORIGINS},
    program::is_loopback,
};

/// What a sock_addr program returns to let the call proceed.
const ALLOW: i32 = 1;

fn in_node_netns(ctx: &SockAddrContext) -> bool {
    let Some(config) = NODE_CONFIG.get(0) else {
        return false;
    };
    // SAFETY: the helper reads the socket behind a valid context.
    config.netns_cookie != 0
        && unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) } == config.netns_cookie
}

/// connect4 and sendmsg4: point the socket at the container behind a published port.
#[inline(always)]
pub fn translate_destination(ctx: &SockAddrContext) -> i32 {
    if !in_node_netns(ctx) {
        return ALLOW;
    }
    // SAFETY: the context's bpf_sock_addr is valid for the program's run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let proto = sa.protocol as u8;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return ALLOW;
    }
    let (addr, port) = (sa.user_ip4, sa.user_port as u16);
    let Some(backend) = local_backend(addr, port, proto) else {
        return ALLOW;
    };
    let peer = SocketPeer {
        // SAFETY: the helper reads the socket behind a valid context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        addr: backend.addr,
        port: backend.port,
        _pad: 0,
    };
    // Best effort: without it only the reported peer address is the container's.
    let _ = SOCKET_ORIGINS.insert(
        peer,
        SocketOrigin {
            addr,
            port,
            _pad: 0,
        },
        BPF_ANY as u64,
    );
    sa.user_ip4 = backend.addr;
    sa.user_port = backend.port as u32;
    ALLOW
}

/// recvmsg4 and getpeername4: show the address the process called, not the container's.
#[inline(always)]
pub fn restore_peer(ctx: &SockAddrContext) -> i32 {
    if !in_node_netns(ctx) {
        return ALLOW;
    }
    // SAFETY: as above.
    let sa = unsafe { &mut *ctx.sock_addr };
    let peer = SocketPeer {
        // SAFETY: as above.
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        _pad: 0,
    };
    // SAFETY: a copy out of the map value.
    if let Some(origin) = unsafe { SOCKET_ORIGINS.get(peer) } {
        sa.user_ip4 = origin.addr;
        sa.user_port = origin.port as u32;
    }
    ALLOW
}

/// The exact binding first; the wildcard answers on loopback and the node's addresses.
#[inline(always)]
fn local_backend(addr: u32, port: u16, proto: u8) -> Option<Backend> {
    let exact = PortKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: a copy out of the map value.
    if let Some(b) = unsafe { PUBLISHED_PORTS.get(exact) } {
        return Some(*b);
    }
    if !is_loopback(addr) && NODE_ADDRS.get_ptr(addr).is_none() {
        return None;
    }
    let wildcard = PortKey { addr: 0, ..exact };
    // SAFETY: as above.
    unsafe { PUBLISHED_PORTS.get(wildcard) }.copied()
}
