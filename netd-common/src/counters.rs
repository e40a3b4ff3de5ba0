//! Counter reasons: every verdict and every early return of a program has one. The
//! `COUNTERS` per-CPU array is indexed by `hook * REASON_COUNT + reason`.

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
}

impl Hook {
    pub const ALL: &'static [Hook] = &[
        Hook::UplinkIngress,
        Hook::UplinkEgress,
        Hook::EndpointIngress,
        Hook::UplinkXdp,
        Hook::FastPath,
    ];
}

pub const HOOK_COUNT: u32 = 5;

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
}

pub const REASON_COUNT: u32 = 33;

/// Value of `COUNTERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

pub const fn counter_index(hook: Hook, reason: Reason) -> u32 {
    hook as u32 * REASON_COUNT + reason as u32
}
