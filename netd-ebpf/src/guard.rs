//! Anti-spoofing on a container's host-side veth: a frame must come from the container
//! interface's own MAC address, and an IPv4 packet or ARP message from its own address.

use aya_ebpf::programs::TcContext;
use netd_common::{counters::Reason, maps::EndpointInfo};
use network_types::eth::EthHdr;

use crate::parse::IP_SRC_OFF;

const ETH_SRC_OFF: usize = 6;
const ETH_TYPE_OFF: usize = 12;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
/// ARP for IPv4 over Ethernet: sender hardware and protocol addresses.
const ARP_SHA_OFF: usize = EthHdr::LEN + 8;
const ARP_SPA_OFF: usize = ARP_SHA_OFF + 6;

/// `Err(reason)` when the frame claims to be from someone the endpoint is not.
#[inline(always)]
pub fn check_source(ctx: &TcContext, ep: &EndpointInfo) -> Result<(), Reason> {
    let Ok(src_mac) = ctx.load::<[u8; 6]>(ETH_SRC_OFF) else {
        return Ok(());
    };
    if src_mac != ep.mac {
        return Err(Reason::DropSpoofedMac);
    }
    let Ok(ethertype) = ctx.load::<u16>(ETH_TYPE_OFF) else {
        return Ok(());
    };
    match u16::from_be(ethertype) {
        ETH_P_IP => match ctx.load::<u32>(IP_SRC_OFF) {
            Ok(src) if src != ep.addr => Err(Reason::DropSpoofedSource),
            _ => Ok(()),
        },
        ETH_P_ARP => check_arp(ctx, ep),
        _ => Ok(()),
    }
}

/// An ARP sender must be the endpoint (address 0.0.0.0 is an address probe).
#[inline(always)]
fn check_arp(ctx: &TcContext, ep: &EndpointInfo) -> Result<(), Reason> {
    if let Ok(sha) = ctx.load::<[u8; 6]>(ARP_SHA_OFF)
        && sha != ep.mac
    {
        return Err(Reason::DropSpoofedMac);
    }
    match ctx.load::<u32>(ARP_SPA_OFF) {
        Ok(spa) if spa != ep.addr && spa != 0 => Err(Reason::DropSpoofedSource),
        _ => Ok(()),
    }
}
