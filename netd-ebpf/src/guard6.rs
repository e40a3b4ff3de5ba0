//! What IPv6 may leave a container at all (the IPv4 twin is `guard`): untagged frames from
//! the container interface's own MAC, from one of its two addresses (the one netd gave it,
//! and its link-local one), with an extension-header chain `parse6` can walk. And the
//! first-hop attacks a container on a shared link could make, each dropped with its
//! reason:
//! - router messages (advertisement, redirect, renumbering, MLD query, multicast router
//!   advertisement and termination): only the node routes (RA guard, RFC 6105);
//! - neighbour advertisements for an address it does not own, or claiming to be a
//!   router; link-layer address options other than its own MAC in any neighbour
//!   discovery message;
//! - DHCPv6 server and relay messages (from UDP port 547, or to a client's, 546);
//! - fragmented neighbour discovery, MLD and the other first-hop messages (RFC 6980), and
//!   a first fragment without its whole upper-layer header (RFC 7112) in its payload
//!   length (what the frame has after it is not the packet's): both would hide the above
//!   from these checks.
//!
//! The unspecified source `::` is allowed only where RFC 4861 and 3590 allow it: duplicate
//! address detection (a solicitation for one of its own addresses, without a link-layer
//! option), router solicitations, and MLD reports.

use aya_ebpf::programs::TcContext;
use netd_common::{
    PROTO_TCP, PROTO_UDP,
    counters::Reason,
    maps::{Addr6, Endpoint6Info, EndpointInfo},
};

use crate::{
    parse::{ETH_SRC_OFF, Fragment},
    parse6::{PROTO_ICMPV6, Packet6, parse_frame},
};

pub const ICMP6_MLD_QUERY: u8 = 130;
pub const ICMP6_MLD_REPORT: u8 = 131;
pub const ICMP6_MLD_DONE: u8 = 132;
pub const ICMP6_ROUTER_SOLICIT: u8 = 133;
pub const ICMP6_ROUTER_ADVERT: u8 = 134;
pub const ICMP6_NEIGHBOR_SOLICIT: u8 = 135;
pub const ICMP6_NEIGHBOR_ADVERT: u8 = 136;
pub const ICMP6_REDIRECT: u8 = 137;
pub const ICMP6_ROUTER_RENUMBERING: u8 = 138;
pub const ICMP6_MLD2_REPORT: u8 = 143;
/// Multicast router discovery (RFC 4286): a router's advertisement and termination; the
/// Linux bridge's snooping takes the port an advertisement comes from for a multicast
/// router's (the solicitation, 152, is a host's).
pub const ICMP6_MRD_ADVERT: u8 = 151;
pub const ICMP6_MRD_TERMINATE: u8 = 153;
/// The ICMPv6 types of the first-hop protocols: MLD, neighbour discovery and inverse ND,
/// the home agent and mobile prefix messages, SEND, multicast router discovery, RPL.
/// None may come fragmented (RFC 6980).
const FIRST_HOP_TYPES: core::ops::RangeInclusive<u8> = ICMP6_MLD_QUERY..=155;

const NA_ROUTER: u8 = 0x80;
/// Options of NS and NA start after the target address (RFC 4861 4.3, 4.4); RS's after its
/// 4 reserved bytes.
const ND_TARGET_OFF: usize = 8;
const NS_NA_OPTIONS_OFF: usize = 24;
const RS_OPTIONS_OFF: usize = 8;
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;
/// Options read in a neighbour discovery message; a message with more is refused (the
/// kernel takes the first of each kind, so every one must be checked).
const MAX_ND_OPTIONS: usize = 4;
/// DHCPv6 servers and relays send from 547; to a client, at 546 (from any port: clients
/// do not check it). A container sends neither.
const DHCP6_SERVER_PORT: u16 = 547;
const DHCP6_CLIENT_PORT: u16 = 546;
const UNSPECIFIED: Addr6 = [0; 4];

/// The facts of an allowed IPv6 frame that policy looks at.
pub struct Frame6 {
    pub dst_mac: [u8; 6],
    pub pkt: Packet6,
    /// The ICMPv6 type of an unfragmented ICMPv6 packet (0 otherwise: type 0 is not used).
    pub icmp_type: u8,
    /// A neighbour solicitation's target.
    pub target: Addr6,
}

/// `Err(reason)` unless the IPv6 frame is one a container may send.
#[inline(always)]
pub fn check_frame(
    ctx: &TcContext,
    ep: &EndpointInfo,
    ep6: &Endpoint6Info,
) -> Result<Frame6, Reason> {
    // SAFETY: the context's __sk_buff is valid for the program's run.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return Err(Reason::DropVlanTagged);
    }
    let eth: [u8; 14] = ctx.load(0).map_err(|_| Reason::DropMalformed)?;
    if eth[ETH_SRC_OFF..12] != ep.mac {
        return Err(Reason::DropSpoofedMac);
    }
    if u16::from_be_bytes([eth[12], eth[13]]) != crate::parse6::ETH_P_IPV6 {
        // skb->protocol said IPv6; a tag in the frame itself says otherwise.
        return Err(Reason::DropVlanTagged);
    }
    let pkt = parse_frame(ctx)?;
    let unspecified = pkt.src == UNSPECIFIED;
    if !unspecified && pkt.src != ep6.addr && pkt.src != ep6.link_local {
        return Err(Reason::DropSpoofedSource);
    }
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&eth[..6]);
    let mut frame = Frame6 {
        dst_mac,
        pkt,
        icmp_type: 0,
        target: UNSPECIFIED,
    };
    if pkt.fragment == Fragment::First {
        upper_header_whole(&pkt)?;
    }
    match pkt.proto {
        PROTO_ICMPV6 if pkt.fragment == Fragment::Whole => {
            (frame.icmp_type, frame.target) = check_icmp6(ctx, &pkt, &ep.mac, ep6)?
        }
        PROTO_ICMPV6 if pkt.fragment == Fragment::First => {
            let icmp_type: u8 = ctx.load(pkt.l4_off).map_err(|_| Reason::DropMalformed)?;
            if FIRST_HOP_TYPES.contains(&icmp_type) {
                return Err(Reason::DropNdFragmented);
            }
        }
        PROTO_UDP if pkt.has_l4_header() => {
            let ports: [u8; 4] = load_l4(ctx, &pkt, 0)?;
            let sport = u16::from_be_bytes([ports[0], ports[1]]);
            let dport = u16::from_be_bytes([ports[2], ports[3]]);
            if sport == DHCP6_SERVER_PORT || dport == DHCP6_CLIENT_PORT {
                return Err(Reason::DropDhcp6Server);
            }
        }
        _ => {}
    }
    if unspecified && !may_be_unspecified(&frame, ep6) {
        return Err(Reason::DropSpoofedSource);
    }
    Ok(frame)
}

/// A first fragment must carry the whole upper-layer header (RFC 7112): TCP's 20 bytes,
/// UDP's and ICMPv6's 8.
#[inline(always)]
fn upper_header_whole(pkt: &Packet6) -> Result<(), Reason> {
    let len = match pkt.proto {
        PROTO_TCP => 20,
        PROTO_UDP | PROTO_ICMPV6 => 8,
        _ => 0,
    };
    // In the packet, not only in the frame: what follows its payload is not the kernel's.
    if pkt.l4_off + len <= pkt.end {
        Ok(())
    } else {
        Err(Reason::DropFirstFragmentIncomplete)
    }
}

/// Messages a host without an address yet may send: duplicate address detection for one
/// of its own addresses, a router solicitation, MLD reports.
/// The `T` at `off` in the packet's upper-layer header: it must be in the packet (not
/// only in the frame).
#[inline(always)]
fn load_l4<T>(ctx: &TcContext, pkt: &Packet6, off: usize) -> Result<T, Reason> {
    let at = pkt.l4_off + off;
    if at + core::mem::size_of::<T>() > pkt.end {
        return Err(Reason::DropMalformed);
    }
    ctx.load(at).map_err(|_| Reason::DropMalformed)
}

#[inline(always)]
fn may_be_unspecified(frame: &Frame6, ep6: &Endpoint6Info) -> bool {
    match frame.icmp_type {
        ICMP6_NEIGHBOR_SOLICIT => owns(ep6, &frame.target),
        ICMP6_ROUTER_SOLICIT | ICMP6_MLD_REPORT | ICMP6_MLD_DONE | ICMP6_MLD2_REPORT => true,
        _ => false,
    }
}

#[inline(always)]
fn owns(ep6: &Endpoint6Info, addr: &Addr6) -> bool {
    *addr == ep6.addr || *addr == ep6.link_local
}

/// The first-hop checks of an unfragmented ICMPv6 message: its type, and the target of a
/// neighbour discovery message.
#[inline(always)]
fn check_icmp6(
    ctx: &TcContext,
    pkt: &Packet6,
    mac: &[u8; 6],
    ep6: &Endpoint6Info,
) -> Result<(u8, Addr6), Reason> {
    let l4 = pkt.l4_off;
    let header: [u8; 8] = load_l4(ctx, pkt, 0)?;
    let icmp_type = header[0];
    let target = match icmp_type {
        ICMP6_MLD_QUERY
        | ICMP6_ROUTER_ADVERT
        | ICMP6_REDIRECT
        | ICMP6_ROUTER_RENUMBERING
        | ICMP6_MRD_ADVERT
        | ICMP6_MRD_TERMINATE => {
            return Err(Reason::DropRouterMessage);
        }
        ICMP6_ROUTER_SOLICIT => {
            check_lladdr_options(ctx, mac, l4 + RS_OPTIONS_OFF, pkt.end)?;
            UNSPECIFIED
        }
        ICMP6_NEIGHBOR_SOLICIT | ICMP6_NEIGHBOR_ADVERT => {
            let target: Addr6 = load_l4(ctx, pkt, ND_TARGET_OFF)?;
            if icmp_type == ICMP6_NEIGHBOR_ADVERT {
                if header[4] & NA_ROUTER != 0 {
                    return Err(Reason::DropRouterMessage);
                }
                if !owns(ep6, &target) {
                    return Err(Reason::DropSpoofedNeighbor);
                }
            }
            check_lladdr_options(ctx, mac, l4 + NS_NA_OPTIONS_OFF, pkt.end)?;
            target
        }
        _ => UNSPECIFIED,
    };
    Ok((icmp_type, target))
}

/// Every link-layer address option of a neighbour discovery message (its options from
/// `first` to the packet's `end`) must be the endpoint's MAC. A subprogram, for its
/// loop's stack.
#[inline(never)]
fn check_lladdr_options(
    ctx: &TcContext,
    own: &[u8; 6],
    first: usize,
    end: usize,
) -> Result<(), Reason> {
    let mut off = first;
    for _ in 0..MAX_ND_OPTIONS {
        if off >= end {
            return Ok(());
        }
        let opt: [u8; 2] = ctx.load(off).map_err(|_| Reason::DropMalformed)?;
        let len = opt[1] as usize * 8;
        // RFC 4861 4.6: a zero length is invalid (and would loop); one past the packet's
        // end makes the kernel refuse the whole message.
        if len == 0 || off + len > end {
            return Err(Reason::DropMalformed);
        }
        if opt[0] == OPT_SOURCE_LLADDR || opt[0] == OPT_TARGET_LLADDR {
            let mac: [u8; 6] = ctx.load(off + 2).map_err(|_| Reason::DropMalformed)?;
            if mac != *own {
                return Err(Reason::DropSpoofedNeighbor);
            }
        }
        off += len;
    }
    if off >= end {
        Ok(())
    } else {
        Err(Reason::DropSpoofedNeighbor)
    }
}
