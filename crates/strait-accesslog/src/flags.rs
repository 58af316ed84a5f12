//! Envoy response flags (`%RESPONSE_FLAGS%` / `%RESPONSE_FLAGS_LONG%`).
//!
//! The set of flags, their short and long spellings and their numbering are those of Envoy
//! 1.40 (`envoy/stream_info/stream_info.h`, `source/common/stream_info/utility.h`; the list
//! was cross-checked against the `ResponseFlagFilter` validation list embedded in the Envoy
//! 1.40 binary: `LH UH UT LR UR UF UC UO NR DI FI RL UAEX RLSE DC URX SI IH DPE UMSDR RFCF
//! NFCF DT UPE NC OM DF DO DR UDO`).
//!
//! Envoy 1.40 keeps the flags of a stream in a vector, in the order they were set, and joins
//! them with `,` in that order. [`ResponseFlags`] records the insertion order of the first
//! [`ResponseFlags::ORDER_CAPACITY`] distinct flags (far more than a real stream ever gets);
//! any further flags are rendered after them in Envoy's enum order.

use std::fmt;

macro_rules! response_flags {
    ($( $(#[$doc:meta])* $variant:ident = $idx:literal, $short:ident, $long:literal; )*) => {
        /// One Envoy response flag. The discriminant is Envoy's `CoreResponseFlag` value.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum ResponseFlag {
            $( $(#[$doc])* $variant = $idx, )*
        }

        impl ResponseFlag {
            /// Every flag, in Envoy's enum order.
            pub const ALL: [ResponseFlag; ResponseFlag::COUNT] = [ $( ResponseFlag::$variant, )* ];

            $(
                #[doc = concat!("Envoy short name `", stringify!($short), "` (", $long, ").")]
                pub const $short: ResponseFlag = ResponseFlag::$variant;
            )*

            /// The short spelling used by `%RESPONSE_FLAGS%` (e.g. `UH`).
            pub const fn short_name(self) -> &'static str {
                match self { $( ResponseFlag::$variant => stringify!($short), )* }
            }

            /// The PascalCase spelling used by `%RESPONSE_FLAGS_LONG%` (e.g. `NoHealthyUpstream`).
            pub const fn long_name(self) -> &'static str {
                match self { $( ResponseFlag::$variant => $long, )* }
            }

            /// Looks a flag up by its short spelling (as used by Envoy's `response_flag_filter`).
            pub fn from_short_name(name: &str) -> Option<ResponseFlag> {
                match name { $( stringify!($short) => Some(ResponseFlag::$variant), )* _ => None }
            }

            /// Looks a flag up by its long spelling.
            pub fn from_long_name(name: &str) -> Option<ResponseFlag> {
                match name { $( $long => Some(ResponseFlag::$variant), )* _ => None }
            }

            const fn from_index(idx: u8) -> Option<ResponseFlag> {
                match idx { $( $idx => Some(ResponseFlag::$variant), )* _ => None }
            }
        }
    };
}

response_flags! {
    /// Local server health check failed.
    FailedLocalHealthCheck = 0, LH, "FailedLocalHealthCheck";
    /// No healthy upstream host.
    NoHealthyUpstream = 1, UH, "NoHealthyUpstream";
    /// Upstream request timeout.
    UpstreamRequestTimeout = 2, UT, "UpstreamRequestTimeout";
    /// Local codec-level reset.
    LocalReset = 3, LR, "LocalReset";
    /// Upstream remote reset.
    UpstreamRemoteReset = 4, UR, "UpstreamRemoteReset";
    /// Upstream connection failure.
    UpstreamConnectionFailure = 5, UF, "UpstreamConnectionFailure";
    /// Upstream connection termination.
    UpstreamConnectionTermination = 6, UC, "UpstreamConnectionTermination";
    /// Upstream overflow (circuit breaking).
    UpstreamOverflow = 7, UO, "UpstreamOverflow";
    /// No route found.
    NoRouteFound = 8, NR, "NoRouteFound";
    /// Fault-injected delay.
    DelayInjected = 9, DI, "DelayInjected";
    /// Fault-injected abort.
    FaultInjected = 10, FI, "FaultInjected";
    /// Rate limited locally.
    RateLimited = 11, RL, "RateLimited";
    /// Denied by the external authorization service.
    UnauthorizedExternalService = 12, UAEX, "UnauthorizedExternalService";
    /// Rate limit service error.
    RateLimitServiceError = 13, RLSE, "RateLimitServiceError";
    /// Downstream connection termination.
    DownstreamConnectionTermination = 14, DC, "DownstreamConnectionTermination";
    /// Upstream retry limit exceeded.
    UpstreamRetryLimitExceeded = 15, URX, "UpstreamRetryLimitExceeded";
    /// Stream idle timeout.
    StreamIdleTimeout = 16, SI, "StreamIdleTimeout";
    /// Invalid `x-envoy-*` request headers.
    InvalidEnvoyRequestHeaders = 17, IH, "InvalidEnvoyRequestHeaders";
    /// Downstream HTTP protocol error.
    DownstreamProtocolError = 18, DPE, "DownstreamProtocolError";
    /// Upstream max stream duration reached.
    UpstreamMaxStreamDurationReached = 19, UMSDR, "UpstreamMaxStreamDurationReached";
    /// Response served from the cache filter.
    ResponseFromCacheFilter = 20, RFCF, "ResponseFromCacheFilter";
    /// Filter config not received in time.
    NoFilterConfigFound = 21, NFCF, "NoFilterConfigFound";
    /// Downstream connection duration exceeded.
    DurationTimeout = 22, DT, "DurationTimeout";
    /// Upstream HTTP protocol error.
    UpstreamProtocolError = 23, UPE, "UpstreamProtocolError";
    /// Upstream cluster not found.
    NoClusterFound = 24, NC, "NoClusterFound";
    /// Overload manager terminated the stream.
    OverloadManager = 25, OM, "OverloadManagerTerminated";
    /// DNS resolution failed.
    DnsResolutionFailed = 26, DF, "DnsResolutionFailed";
    /// Dropped by the endpoint drop_overload policy.
    DropOverload = 27, DO, "DropOverload";
    /// Downstream remote codec-level reset.
    DownstreamRemoteReset = 28, DR, "DownstreamRemoteReset";
    /// Unconditional drop (drop_overload at 100%).
    UnconditionalDropOverload = 29, UDO, "UnconditionalDropOverload";
}

impl ResponseFlag {
    /// Number of flags Envoy 1.40 defines.
    pub const COUNT: usize = 30;

    const fn bit(self) -> u32 {
        1u32 << (self as u8)
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// The set of response flags of one request, remembering the order flags were set in (as
/// Envoy 1.40 does). `Copy`, 16 bytes, no allocation.
///
/// Equality compares the set only, not the order.
#[derive(Clone, Copy, Default)]
pub struct ResponseFlags {
    bits: u32,
    len: u8,
    order: [u8; ResponseFlags::ORDER_CAPACITY],
}

impl ResponseFlags {
    /// The empty set (renders as `-`).
    pub const EMPTY: ResponseFlags = ResponseFlags {
        bits: 0,
        len: 0,
        order: [0; 11],
    };

    /// How many distinct flags keep their insertion order; later ones render in enum order.
    pub const ORDER_CAPACITY: usize = 11;

    /// A set holding one flag.
    pub const fn from_flag(flag: ResponseFlag) -> ResponseFlags {
        let mut order = [0u8; ResponseFlags::ORDER_CAPACITY];
        order[0] = flag as u8;
        ResponseFlags {
            bits: flag.bit(),
            len: 1,
            order,
        }
    }

    /// Adds a flag (no-op when already present), like Envoy's `setResponseFlag`.
    pub fn insert(&mut self, flag: ResponseFlag) {
        if self.bits & flag.bit() != 0 {
            return;
        }
        self.bits |= flag.bit();
        if (self.len as usize) < Self::ORDER_CAPACITY {
            self.order[self.len as usize] = flag as u8;
            self.len += 1;
        }
    }

    /// Builder form of [`insert`](Self::insert).
    #[must_use]
    pub fn with(mut self, flag: ResponseFlag) -> ResponseFlags {
        self.insert(flag);
        self
    }

    /// Whether `flag` is set.
    pub const fn contains(&self, flag: ResponseFlag) -> bool {
        self.bits & flag.bit() != 0
    }

    /// Whether no flag is set.
    pub const fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Number of flags set.
    pub const fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Raw bitmask, bit `n` = flag with Envoy enum value `n` (Envoy's legacy response-flag
    /// bitmask layout).
    pub const fn bits(&self) -> u32 {
        self.bits
    }

    /// The flags in the order they render: insertion order, then any overflow in enum order.
    pub fn iter(&self) -> impl Iterator<Item = ResponseFlag> + '_ {
        let recorded = self.order[..self.len as usize]
            .iter()
            .filter_map(|&i| ResponseFlag::from_index(i));
        let recorded_bits = self.order[..self.len as usize]
            .iter()
            .fold(0u32, |acc, &i| acc | (1u32 << i));
        let rest = ResponseFlag::ALL
            .into_iter()
            .filter(move |f| self.bits & f.bit() != 0 && recorded_bits & f.bit() == 0);
        recorded.chain(rest)
    }

    /// Appends the `%RESPONSE_FLAGS%` rendering (`-` when empty).
    pub fn write_short(&self, out: &mut Vec<u8>) {
        self.write_with(out, ResponseFlag::short_name);
    }

    /// Appends the `%RESPONSE_FLAGS_LONG%` rendering (`-` when empty).
    pub fn write_long(&self, out: &mut Vec<u8>) {
        self.write_with(out, ResponseFlag::long_name);
    }

    fn write_with(&self, out: &mut Vec<u8>, name: fn(ResponseFlag) -> &'static str) {
        if self.is_empty() {
            out.push(b'-');
            return;
        }
        for (i, flag) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name(flag).as_bytes());
        }
    }
}

impl PartialEq for ResponseFlags {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}

impl Eq for ResponseFlags {}

impl std::hash::Hash for ResponseFlags {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bits.hash(state);
    }
}

impl From<ResponseFlag> for ResponseFlags {
    fn from(flag: ResponseFlag) -> Self {
        ResponseFlags::from_flag(flag)
    }
}

impl std::ops::BitOr<ResponseFlag> for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, rhs: ResponseFlag) -> ResponseFlags {
        self.with(rhs)
    }
}

impl std::ops::BitOr for ResponseFlag {
    type Output = ResponseFlags;
    fn bitor(self, rhs: ResponseFlag) -> ResponseFlags {
        ResponseFlags::from_flag(self).with(rhs)
    }
}

impl std::ops::BitOrAssign<ResponseFlag> for ResponseFlags {
    fn bitor_assign(&mut self, rhs: ResponseFlag) {
        self.insert(rhs);
    }
}

impl FromIterator<ResponseFlag> for ResponseFlags {
    fn from_iter<I: IntoIterator<Item = ResponseFlag>>(iter: I) -> Self {
        let mut flags = ResponseFlags::EMPTY;
        for f in iter {
            flags.insert(f);
        }
        flags
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(16);
        self.write_short(&mut buf);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(f: ResponseFlags) -> String {
        let mut v = Vec::new();
        f.write_short(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    fn long(f: ResponseFlags) -> String {
        let mut v = Vec::new();
        f.write_long(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    #[test]
    fn envoy_1_40_flag_table() {
        // The exact list (and order) Envoy 1.40 validates ResponseFlagFilter.flags against.
        let envoy = "LH UH UT LR UR UF UC UO NR DI FI RL UAEX RLSE DC URX SI IH DPE UMSDR RFCF \
                     NFCF DT UPE NC OM DF DO DR UDO";
        let ours: Vec<&str> = ResponseFlag::ALL.iter().map(|f| f.short_name()).collect();
        assert_eq!(ours.join(" "), envoy);
        for (i, f) in ResponseFlag::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
            assert_eq!(ResponseFlag::from_short_name(f.short_name()), Some(*f));
            assert_eq!(ResponseFlag::from_long_name(f.long_name()), Some(*f));
        }
        assert_eq!(ResponseFlag::OM.long_name(), "OverloadManagerTerminated");
        assert_eq!(ResponseFlag::DF.long_name(), "DnsResolutionFailed");
        assert_eq!(ResponseFlag::UDO.long_name(), "UnconditionalDropOverload");
        assert_eq!(ResponseFlag::from_short_name("XX"), None);
    }

    #[test]
    fn empty_renders_dash() {
        assert_eq!(short(ResponseFlags::EMPTY), "-");
        assert_eq!(long(ResponseFlags::default()), "-");
    }

    #[test]
    fn insertion_order_and_dedup() {
        let f = ResponseFlag::UF | ResponseFlag::URX;
        assert_eq!(short(f), "UF,URX");
        assert_eq!(
            long(f),
            "UpstreamConnectionFailure,UpstreamRetryLimitExceeded"
        );
        let g = (ResponseFlag::URX | ResponseFlag::UF) | ResponseFlag::URX;
        assert_eq!(short(g), "URX,UF");
        assert_eq!(f, g);
        assert_eq!(g.len(), 2);
        assert!(g.contains(ResponseFlag::UF));
        assert!(!g.contains(ResponseFlag::UH));
    }

    #[test]
    fn overflow_falls_back_to_enum_order() {
        let mut f = ResponseFlags::EMPTY;
        for flag in ResponseFlag::ALL.iter().rev() {
            f.insert(*flag);
        }
        let s = short(f);
        let parts: Vec<&str> = s.split(',').collect();
        assert_eq!(parts.len(), ResponseFlag::COUNT);
        assert_eq!(&parts[..3], &["UDO", "DR", "DO"]);
        assert_eq!(&parts[11..14], &["LH", "UH", "UT"]);
        assert_eq!(f.bits(), (1u32 << 30) - 1);
    }
}
