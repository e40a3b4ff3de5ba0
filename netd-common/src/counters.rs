//! Counter reasons: every verdict and every early return of a program has one. The
//! `COUNTERS` per-CPU array is indexed by `hook * REASONS_MAX + reason`, a geometry fixed
//! for good: adding a hook or a reason changes neither the map's size nor an existing
//! index, so a daemon upgrade keeps the counters (and the pinned map) as they are.
//! A reason's number is never reused; one that is retired stays as `RetiredN`.

/// Where a counter was bumped.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    UplinkIngress = 0,
    UplinkEgress = 1,
    /// TC ingress of a container's host-side veth: packets from the container.
    EndpointIngress = 2,
    /// XDP on the uplink: translation before the kernel builds an skb.
    UplinkXdp = 3,
    /// The fast paths' outcome for a translated packet (counted besides its translation):
    /// redirected, or left to the stack and why.
    FastPath = 4,
    /// The connection table's events (counted besides the packet's own reason): a flow
    /// confirmed (moved to the table whose entries are never evicted), or left among the
    /// unconfirmed ones and why; an unconfirmed flow found broken, its other half evicted
    /// (`flow_evicted`).
    FlowTable = 5,
    /// Overlay networks: frames to containers of other nodes (encapsulated at a
    /// container's host-side veth, ARP answered there) and from them (TC ingress of the
    /// node's VXLAN device).
    Overlay = 6,
}

impl Hook {
    /// The name users see in `netd stats` (as the kernel programs' logs print it too).
    pub const fn name(self) -> &'static str {
        match self {
            Hook::UplinkIngress => "UplinkIngress",
            Hook::UplinkEgress => "UplinkEgress",
            Hook::EndpointIngress => "EndpointIngress",
            Hook::UplinkXdp => "UplinkXdp",
            Hook::FastPath => "FastPath",
            Hook::FlowTable => "FlowTable",
            Hook::Overlay => "Overlay",
        }
    }

    pub const ALL: &'static [Hook] = &[
        Hook::UplinkIngress,
        Hook::UplinkEgress,
        Hook::EndpointIngress,
        Hook::UplinkXdp,
        Hook::FastPath,
        Hook::FlowTable,
        Hook::Overlay,
    ];
}

/// Room for hooks and reasons in the counters map: its geometry, never changed.
pub const HOOKS_MAX: u32 = 16;
pub const REASONS_MAX: u32 = 128;
pub const COUNTERS_LEN: u32 = HOOKS_MAX * REASONS_MAX;

macro_rules! reasons {
    ($($name:ident = $value:literal => $text:literal,)*) => {
        /// Why a program let a packet go the way it did.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason { $($name = $value,)* }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The name users see in `netd stats`.
            pub const fn name(self) -> &'static str {
                match self { $(Reason::$name => $text,)* }
            }
        }
    };
}

reasons! {
    NotIpv4 = 0 => "pass_not_ipv4",
    Truncated = 1 => "pass_truncated",
    IpOptions = 2 => "pass_ip_options",
    Fragment = 3 => "pass_fragment",
    OtherProto = 4 => "pass_other_proto",
    NoMatch = 5 => "pass_no_match",
    DnatNew = 6 => "dnat_new_flow",
    DnatReply = 7 => "dnat_reply",
    SnatNew = 8 => "snat_new_flow",
    SnatReply = 9 => "snat_reply",
    Established = 10 => "translated_established",
    DropFlowTableFull = 11 => "drop_flow_table_full",
    DropSnatPortsExhausted = 12 => "drop_snat_ports_exhausted",
    DropRewriteFailed = 13 => "drop_rewrite_failed",
    DropNoConfig = 14 => "drop_no_config",
    HairpinNew = 15 => "hairpin_new_flow",
    DropRedirectFailed = 16 => "drop_redirect_failed",
    IcmpErrorTranslated = 17 => "icmp_error_translated",
    DropSpoofedMac = 18 => "drop_spoofed_mac",
    DropSpoofedSource = 19 => "drop_spoofed_source",
    DropIsolated = 20 => "drop_network_isolation",
    DropIccDisabled = 21 => "drop_icc_disabled",
    DropInternal = 22 => "drop_internal_network",
    RedirectToContainer = 23 => "redirect_to_container",
    RedirectToUplink = 24 => "redirect_to_uplink",
    StackTtlExpiring = 25 => "stack_ttl_expiring",
    StackNotViaUplink = 26 => "stack_not_via_uplink",
    StackFragNeeded = 27 => "stack_frag_needed",
    StackNotForThisHost = 28 => "stack_not_for_this_host",
    TranslatedInXdp = 29 => "translated_in_xdp",
    ChecksumPartial = 30 => "pass_checksum_partial",
    StackMartianSource = 31 => "stack_martian_source",
    StackXdpNoteFailed = 32 => "stack_xdp_note_failed",
    DropEthertype = 33 => "drop_ethertype_not_allowed",
    DropVlanTagged = 34 => "drop_vlan_tagged",
    DropMalformed = 35 => "drop_malformed",
    DropUnknownEndpoint = 36 => "drop_unknown_endpoint",
    DropNotPublished = 37 => "drop_not_published",
    TrackedNew = 38 => "tracked_new_flow",
    DropFragmentBeforeFirst = 39 => "drop_fragment_before_first",
    FlowConfirmed = 40 => "flow_confirmed",
    ConfirmOverQuota = 41 => "unconfirmed_endpoint_over_quota",
    ConfirmTableFull = 42 => "unconfirmed_table_full",
    ConfirmReserved = 43 => "unconfirmed_table_reserved",
    OverlaySent = 44 => "overlay_sent",
    OverlayDelivered = 45 => "overlay_delivered",
    ArpAnswered = 46 => "arp_answered",
    DropUnknownVni = 47 => "drop_overlay_unknown_vni",
    DropWrongVni = 48 => "drop_overlay_wrong_vni",
    DropNoSuchEndpoint = 49 => "drop_overlay_no_such_endpoint",
    DropForeignSource = 50 => "drop_overlay_foreign_source",
    StackOverlayFragNeeded = 51 => "stack_overlay_frag_needed",
    DropTunnelKey = 52 => "drop_overlay_tunnel_key",
    FlowEvicted = 53 => "flow_evicted",
    DropIpv6DispatchFailed = 54 => "drop_ipv6_dispatch_failed",
    DropIpv6NotEnabled = 55 => "drop_ipv6_not_enabled",
    DropIpv6ExtChainTooLong = 56 => "drop_ipv6_ext_chain_too_long",
    DropIpv6ExtHeaderInvalid = 57 => "drop_ipv6_ext_header_invalid",
    DropIpv6RoutingHeader = 58 => "drop_ipv6_routing_header",
    DropRouterMessage = 59 => "drop_router_message",
    DropSpoofedNeighbor = 60 => "drop_spoofed_neighbor_message",
    DropDhcp6Server = 61 => "drop_dhcpv6_server",
    DropNdFragmented = 62 => "drop_nd_fragmented",
    DropFirstFragmentIncomplete = 63 => "drop_ipv6_first_fragment_incomplete",
    DropIpv6NotRouted = 64 => "drop_ipv6_not_routed",
    Ipv6Policed = 65 => "pass_ipv6_policed",
    Ipv6ForNode = 66 => "pass_ipv6_node",
    Ipv6Routed = 67 => "pass_ipv6_routed",
    DropDhcpServer = 68 => "drop_dhcp_server",
    DropIpv6NoSnatAddress = 69 => "drop_ipv6_no_snat_address",
    DropIpv6NotTranslated = 70 => "drop_ipv6_not_translated",
    // NAT46: a new IPv6 client's connection to an IPv4-only container's port; a packet
    // of such a flow translated (either way); one that cannot be (extension headers,
    // IPv4 options, fragments, UDP without checksum); no pool address left for another
    // client; a packet to a pool address that no flow claims.
    Nat46New = 71 => "nat46_new_flow",
    Nat46 = 72 => "nat46_translated",
    DropNat46Untranslatable = 73 => "drop_nat46_untranslatable",
    DropNat46PoolExhausted = 74 => "drop_nat46_pool_exhausted",
    DropNat46NoFlow = 75 => "drop_nat46_no_flow",
    // NAT46 with the pool full: a new client took the address of one none of whose flows
    // was ever confirmed (a spoofed source, most likely); a packet of a flow whose client
    // lost its address so (its flow cannot go on: the address is another's now).
    Nat46AddressTaken = 76 => "nat46_address_taken",
    DropNat46AddressLost = 77 => "drop_nat46_address_lost",
    // An IPv4 packet to an address of NAT46's pool about to leave by the uplink (an error
    // the node's own stack sent a NAT46 client's pool address, most likely): the pool is
    // the node's own, nothing to it belongs on the network.
    DropNat46PoolLeak = 78 => "drop_nat46_pool_leak",
    // A container's IPv6 connection to a port of the node's that leads to a container with
    // IPv4 only: NAT46 serves clients beyond the node; a container calls over IPv4.
    DropNat46FromContainer = 79 => "drop_nat46_from_a_container",
    // A container's packet to a NAT46 client longer, as IPv6, than the uplink's MTU (a
    // UDP datagram, above all: TCP's segments are kept short by the SYN's MSS).
    DropNat46TooBig = 80 => "drop_nat46_too_big",
    // A container's neighbour solicitation for a container of another node on its overlay,
    // answered with its gateway's MAC address (IPv6's `arp_answered`).
    NeighborAnswered = 81 => "neighbor_answered",
    // Neighbour discovery or a router's message from another node over an overlay: each
    // node answers for the others' containers, so none of it crosses.
    DropNdAcrossNodes = 82 => "drop_overlay_neighbor_discovery",
}

pub const REASON_COUNT: u32 = Reason::ALL.len() as u32;
const _: () = assert!(REASON_COUNT <= REASONS_MAX && Hook::ALL.len() as u32 <= HOOKS_MAX);

impl Reason {
    /// Whether the packet is dropped: every drop reason's name says so.
    pub const fn is_drop(self) -> bool {
        let name = self.name().as_bytes();
        name.len() > 5
            && name[0] == b'd'
            && name[1] == b'r'
            && name[2] == b'o'
            && name[3] == b'p'
            && name[4] == b'_'
    }
}

/// Value of `COUNTERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(size_of::<Counter>() == 16);

/// Value of `ENDPOINT_COUNTERS` (per CPU), keyed by a container's host-side veth: what
/// the container sent (every packet its veth's program saw, dropped ones included), what
/// was delivered to it, and how much of what it sent was dropped. The daemon creates the
/// entry when it registers the endpoint and removes it with the endpoint: the programs
/// only ever add to entries that exist.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    pub sent: Counter,
    pub received: Counter,
    pub dropped: Counter,
}

/// Key of `ENDPOINT_DROPS`: the packets an endpoint sent that were dropped, by reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointDropKey {
    /// The host-side veth's ifindex.
    pub ifindex: u32,
    /// A `Reason`, as its number.
    pub reason: u32,
}

const _: () = assert!(size_of::<EndpointCounters>() == 48 && size_of::<EndpointDropKey>() == 8);

pub const fn counter_index(hook: Hook, reason: Reason) -> u32 {
    hook as u32 * REASONS_MAX + reason as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_numbered_densely_and_named_uniquely() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}: numbers are never reused or skipped");
            for other in &Reason::ALL[..i] {
                assert_ne!(r.name(), other.name());
            }
        }
    }

    #[test]
    fn drops_are_the_reasons_named_drop() {
        assert!(Reason::DropEthertype.is_drop());
        assert!(!Reason::NoMatch.is_drop());
        assert!(!Reason::StackFragNeeded.is_drop());
        assert_eq!(counter_index(Hook::UplinkEgress, Reason::NotIpv4), 128);
    }
}
