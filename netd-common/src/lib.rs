//! What netd's kernel programs and its daemon must agree on, byte for byte: map keys and
//! values, map names, and the counter reasons. Nothing else lives here.
//!
//! Addresses and ports are kept in network byte order, exactly as they sit in packets, so
//! the kernel side never swaps bytes on the hot path; the `user` feature adds
//! constructors that take `Ipv4Addr` and host-order ports.
#![no_std]

pub mod checksum;
pub mod counters;
pub mod fast_path;
pub mod flow;
pub mod maps;
pub mod monitor;
pub mod published;
pub mod sockets;

#[cfg(feature = "user")]
pub mod user;

/// IP protocol numbers netd translates.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;
