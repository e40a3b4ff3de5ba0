//! What may leave a container at all, checked first on its host-side veth, by allowlist:
//! untagged Ethernet frames from the container interface's own MAC address carrying IPv4
//! from its own address (never a DHCP server's message), or ARP for IPv4 about itself
//! (IPv6 is `guard6`'s). Everything else is dropped with a reason: another ethertype, a
//! VLAN tag (the kernel
//! strips one before TC, so a frame with two would otherwise pass as something netd does
//! not read and be untagged further on), and frames too short or malformed to judge.

use aya_ebpf::programs::TcContext;
use netd_common::{PROTO_UDP, counters::Reason, maps::EndpointInfo};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::parse::{ETH_P_IP, IP_OFF};

const ETH_P_ARP: u16 = 0x0806;
/// 802.1Q, 802.1ad, and the pre-standard QinQ tag.
const VLAN_ETHERTYPES: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// An ARP message for IPv4 over Ethernet: header, then sender and target addresses.
const ARP_LEN: usize = 28;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// DHCP servers and relays send from 67; to a client, at 68 (from any port: clients do
/// not check it). Neighbours of a container get their addresses from netd, but a
/// container running a DHCP client must not be answered by another.
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
const FRAGMENT_OFFSET: u16 = 0x1fff;

/// The facts of an allowed frame that policy looks at.
pub struct Frame {
    pub dst_mac: [u8; 6],
    /// For ARP, the address asked about or answered to; `None` for IPv4.
    pub arp_target: Option<u32>,
}

/// `Err(reason)` unless the frame is one a container may send.
#[inline(always)]
pub fn check_frame(ctx: &TcContext, ep: &EndpointInfo) -> Result<Frame, Reason> {
    // SAFETY: the context's __sk_buff is valid for the program's run.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return Err(Reason::DropVlanTagged);
    }
    let eth: [u8; EthHdr::LEN] = ctx.load(0).map_err(|_| Reason::DropMalformed)?;
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&eth[..6]);
    if eth[6..12] != ep.mac {
        return Err(Reason::DropSpoofedMac);
    }
    let arp_target = match u16::from_be_bytes([eth[12], eth[13]]) {
        ETH_P_IP => {
            check_ipv4(ctx, ep)?;
            None
        }
        ETH_P_ARP => Some(check_arp(ctx, ep)?),
        t if VLAN_ETHERTYPES.contains(&t) => return Err(Reason::DropVlanTagged),
        _ => return Err(Reason::DropEthertype),
    };
    Ok(Frame {
        dst_mac,
        arp_target,
    })
}

/// A whole IPv4 header (version 4, at least 20 bytes) from the endpoint's address (an
/// endpoint without IPv4, address 0.0.0.0, has none to send from).
#[inline(always)]
fn check_ipv4(ctx: &TcContext, ep: &EndpointInfo) -> Result<(), Reason> {
    let ip: Ipv4Hdr = ctx.load(IP_OFF).map_err(|_| Reason::DropMalformed)?;
    if ip.vihl >> 4 != 4 || ip.vihl & 0x0f < 5 {
        return Err(Reason::DropMalformed);
    }
    if !has_ipv4(ep) || u32::from_ne_bytes(ip.src_addr) != ep.addr {
        return Err(Reason::DropSpoofedSource);
    }
    if ip.proto == PROTO_UDP && u16::from_be_bytes(ip.frags) & FRAGMENT_OFFSET == 0 {
        let header = usize::from(ip.vihl & 0x0f) * 4;
        // The ports must be in the packet, not in what follows its total length (the
        // kernel trims that): a first fragment cut before them is refused.
        if usize::from(u16::from_be_bytes(ip.tot_len)) < header + 4 {
            return Err(Reason::DropMalformed);
        }
        let ports: [u8; 4] = ctx
            .load(IP_OFF + header)
            .map_err(|_| Reason::DropMalformed)?;
        let (sport, dport) = (
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        );
        if sport == DHCP_SERVER_PORT || dport == DHCP_CLIENT_PORT {
            return Err(Reason::DropDhcpServer);
        }
    }
    Ok(())
}

/// A request or reply for IPv4 over Ethernet whose sender is the endpoint (address
/// 0.0.0.0 is an address probe), which has IPv4. Returns the target address.
#[inline(always)]
fn check_arp(ctx: &TcContext, ep: &EndpointInfo) -> Result<u32, Reason> {
    let arp: [u8; ARP_LEN] = ctx.load(EthHdr::LEN).map_err(|_| Reason::DropMalformed)?;
    let htype = u16::from_be_bytes([arp[0], arp[1]]);
    let ptype = u16::from_be_bytes([arp[2], arp[3]]);
    let oper = u16::from_be_bytes([arp[6], arp[7]]);
    if htype != 1 || ptype != ETH_P_IP || arp[4] != 6 || arp[5] != 4 {
        return Err(Reason::DropMalformed);
    }
    if oper != ARP_REQUEST && oper != ARP_REPLY {
        return Err(Reason::DropMalformed);
    }
    if arp[8..14] != ep.mac {
        return Err(Reason::DropSpoofedMac);
    }
    let spa = u32::from_ne_bytes([arp[14], arp[15], arp[16], arp[17]]);
    if !has_ipv4(ep) || (spa != ep.addr && spa != 0) {
        return Err(Reason::DropSpoofedSource);
    }
    Ok(u32::from_ne_bytes([arp[24], arp[25], arp[26], arp[27]]))
}

/// An endpoint of an IPv6-only network has address 0.0.0.0: it may send no IPv4 and no
/// ARP at all.
#[inline(always)]
fn has_ipv4(ep: &EndpointInfo) -> bool {
    ep.addr != 0
}
