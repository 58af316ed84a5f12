//! Sending a request upstream the way Envoy 1.40's router does: host choice, the route's
//! timeouts (route `timeout`, per-try and per-try idle, stream idle, max stream duration),
//! retries with jittered exponential back-off, and the local replies Envoy sends when no
//! response comes back.
//!
//! One request is a loop of attempts. Without a retry policy (the common case) the request
//! head and body are moved into the only attempt: nothing is copied or buffered. With one,
//! the head is kept and the body goes through a [`ReplayBody`] that keeps what it streams
//! (up to the buffer limit) and comes back when the attempt is over, so the next attempt can
//! send it again. Every counter is an atomic or a per-worker cell: no lock per request.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::stats::VclusterStats;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Uri, Version};
use http_body::Body;
use strait_accesslog::ResponseFlag;
use strait_config::route::RequestView;
use strait_config::route::forward::RoutePriority;
use strait_config::route::matcher::{HeaderMatcher, HeaderTarget, HeaderValueMatch};
use strait_config::route::retry::{RetryPolicy, StreamTimeouts, retry_on};
use strait_upstream::body::{Replay, ReplayBody};
use strait_upstream::shadow::DownstreamBody;
use strait_upstream::{
    Cluster, Host, LbContext, RequestBody, StreamCounters, UpstreamError, UpstreamResponse,
};
use tokio::sync::oneshot;

use super::Target;
use crate::body::ResponseBody;
use crate::finish::{Finish, UpstreamInfo};
use crate::hcm::HttpConnectionManager;
use crate::headers::{X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, X_REQUEST_ID, number_value};
use crate::local_reply::local_reply;

pub static X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
static X_ENVOY_RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
static X_ENVOY_RETRY_GRPC_ON: HeaderName = HeaderName::from_static("x-envoy-retry-grpc-on");
static X_ENVOY_MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");
static X_ENVOY_RETRIABLE_STATUS_CODES: HeaderName =
    HeaderName::from_static("x-envoy-retriable-status-codes");
static X_ENVOY_RETRIABLE_HEADER_NAMES: HeaderName =
    HeaderName::from_static("x-envoy-retriable-header-names");
static X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
static X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
static X_ENVOY_UPSTREAM_RQ_TIMEOUT_ALT_RESPONSE: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-alt-response");
static X_ENVOY_HEDGE_ON_PER_TRY_TIMEOUT: HeaderName =
    HeaderName::from_static("x-envoy-hedge-on-per-try-timeout");
static X_ENVOY_RATELIMITED: HeaderName = HeaderName::from_static("x-envoy-ratelimited");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Request headers Envoy's connection manager removes from every request it does not treat
/// as internal (`cleanInternalHeaders`, the part not limited to edge requests), so that only
/// trusted clients steer retries and timeouts. The edge-only ones are removed with the
/// forwarding headers when `use_remote_address` is set.
const EXTERNAL_REQUEST_HEADERS: &[&str] = &[
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-upstream-stream-duration-ms",
];

static DEFAULT_POLICY: LazyLock<RetryPolicy> = LazyLock::new(RetryPolicy::default);

/// Whether the request comes from a trusted (internal) client, whose `x-envoy-*` retry and
/// timeout headers Envoy honours. Envoy decides it from `internal_address_config`, which
/// Strait does not implement yet: like Envoy 1.40 without that setting, no request is
/// internal, so those headers are removed and never honoured.
fn is_internal_request(_h: &HeaderMap) -> bool {
    false
}

/// A response from the upstream and when the exchange started.
pub struct Exchange {
    pub response: UpstreamResponse,
    pub started: Instant,
    /// The timers that keep running while the response body streams.
    pub timers: crate::body::ResponseTimers,
}

/// Why there is no upstream response, and what the local reply needs to say it.
pub struct Failure {
    pub kind: FailureKind,
    /// Upstream attempts made (`x-envoy-attempt-count` when the virtual host asks for it).
    pub attempts: u32,
    pub attempt_count_header: bool,
}

pub enum FailureKind {
    NoHealthyUpstream,
    /// The last attempt failed with `error`; `retried` when it was not the first.
    Upstream {
        error: UpstreamError,
        retried: bool,
    },
    /// The route timeout (`per_try: false`) or the last attempt's per-try (idle) timeout.
    /// `charged`: an attempt was waiting, its status is counted (`upstream_rq_504`).
    Timeout {
        per_try: bool,
        idle: bool,
        alt_response: bool,
        charged: bool,
    },
    /// The stream idle timeout (route `idle_timeout` or `stream_idle_timeout`).
    StreamIdle {
        request_complete: bool,
    },
    /// The route's `max_stream_duration`.
    MaxStreamDuration {
        request_complete: bool,
    },
    /// The request body kept for a retry could not be sent again.
    BufferExceeded,
}

impl Failure {
    fn new(kind: FailureKind, attempts: u32, policy: &RetryPolicy) -> Self {
        Failure {
            kind,
            attempts,
            attempt_count_header: policy.include_attempt_count_in_response,
        }
    }
}

/// The router's statement on `x-envoy-expected-rq-timeout-ms` for the first attempt, as
/// Envoy computes it (per-try timeout when set, else the route timeout, capped by it), and
/// the removal of the retry/timeout headers an untrusted client may not set.
pub fn set_expected_timeout(
    h: &mut HeaderMap,
    action: &strait_config::route::ClusterAction,
    suppress_envoy_headers: bool,
) {
    let policy = action.retry.as_deref().unwrap_or(&DEFAULT_POLICY);
    let mut t = TimeoutPlan::from_config(action, policy);
    // Most requests carry no `x-envoy-*` header: one scan instead of a lookup per name.
    if has_envoy_headers(h) {
        if !is_internal_request(h) {
            for name in EXTERNAL_REQUEST_HEADERS {
                h.remove(*name);
            }
        }
        // Envoy reads the timeout headers here, before the route's header mutations (so a
        // header a route adds is forwarded, not honoured). Only a trusted request still has
        // them; when Strait learns internal requests, this plan must reach `send`.
        t = t.with_headers(h);
        h.remove(&X_ENVOY_EXPECTED_RQ_TIMEOUT_MS);
    }
    if !suppress_envoy_headers && let Some(ms) = t.expected_ms(Duration::ZERO) {
        h.insert(&X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, number_value(ms));
    }
}

/// The timeouts of one request: the route's, possibly replaced by the request's own
/// `x-envoy-upstream-rq-timeout-ms` / `x-envoy-upstream-rq-per-try-timeout-ms` (trusted
/// requests only).
#[derive(Debug, Clone, Copy)]
struct TimeoutPlan {
    global: Option<Duration>,
    per_try: Option<Duration>,
    per_try_idle: Option<Duration>,
    /// `x-envoy-upstream-rq-timeout-alt-response`: time out with 204 instead of 504.
    alt_response: bool,
}

impl TimeoutPlan {
    /// The route's timeouts (Envoy's `FilterUtility::finalTimeout` without headers).
    fn from_config(action: &strait_config::route::ClusterAction, policy: &RetryPolicy) -> Self {
        let mut t = TimeoutPlan {
            global: action.timeouts.route,
            per_try: policy.per_try_timeout,
            per_try_idle: policy.per_try_idle_timeout,
            alt_response: false,
        };
        t.drop_long_per_try();
        t
    }

    /// The request's `x-envoy-upstream-rq-timeout-ms`, `x-envoy-upstream-rq-per-try-timeout-ms`
    /// and `x-envoy-upstream-rq-timeout-alt-response` override the route's; they are
    /// consumed.
    fn with_headers(mut self, h: &mut HeaderMap) -> Self {
        if let Some(ms) = header_u64(h, &X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS) {
            self.global = Some(Duration::from_millis(ms)).filter(|d| !d.is_zero());
        }
        if let Some(ms) = header_u64(h, &X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS) {
            self.per_try = Some(Duration::from_millis(ms)).filter(|d| !d.is_zero());
        }
        self.alt_response |= h.contains_key(&X_ENVOY_UPSTREAM_RQ_TIMEOUT_ALT_RESPONSE);
        h.remove(&X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS);
        h.remove(&X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS);
        h.remove(&X_ENVOY_UPSTREAM_RQ_TIMEOUT_ALT_RESPONSE);
        self.drop_long_per_try();
        self
    }

    /// A per-try timeout at or past the route timeout is ignored.
    fn drop_long_per_try(&mut self) {
        if let (Some(p), Some(g)) = (self.per_try, self.global)
            && p >= g
        {
            self.per_try = None;
        }
    }

    /// `x-envoy-expected-rq-timeout-ms` after `elapsed` since the downstream request
    /// completed (`FilterUtility::setTimeoutHeaders`): the per-try timeout, else the route
    /// timeout, never past what is left of the route timeout (at least 1 ms); none when both
    /// are disabled.
    fn expected_ms(&self, elapsed: Duration) -> Option<u64> {
        let global = self.global.map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut expected = self.per_try.map(|d| d.as_millis() as u64).unwrap_or(0);
        if expected == 0 {
            expected = global;
        }
        if expected == 0 {
            return None;
        }
        if global > 0 {
            let elapsed = elapsed.as_millis() as u64;
            expected = if elapsed >= global {
                1
            } else {
                expected.min(global - elapsed)
            };
        }
        Some(expected)
    }
}

/// Whether any request header is an `x-envoy-*` one.
fn has_envoy_headers(h: &HeaderMap) -> bool {
    h.keys().any(|k| k.as_str().starts_with("x-envoy-"))
}

fn header_u64(h: &HeaderMap, name: &HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

/// Envoy's `grpc-timeout` parsing (`Grpc::Common::getGrpcTimeout`): up to 8 digits and a
/// unit; sub-millisecond units round up.
fn grpc_timeout(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    if n >= 100_000_000 {
        return None;
    }
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_millis(n.div_ceil(1000)),
        "n" => Duration::from_millis(n.div_ceil(1_000_000)),
        _ => return None,
    })
}

/// Envoy's `Grpc::Common::toGrpcTimeout`.
fn grpc_timeout_value(d: Duration) -> HeaderValue {
    const MAX: u64 = 99_999_999;
    let mut time = d.as_millis() as u64;
    let units = [b'm', b'S', b'M', b'H'];
    let mut unit = 0;
    if time > MAX {
        time /= 1000;
        unit = 1;
    }
    while time > MAX {
        if unit == 3 {
            time = MAX;
        } else {
            time /= 60;
            unit += 1;
        }
    }
    let mut buf = itoa::Buffer::new();
    let mut s = String::with_capacity(10);
    s.push_str(buf.format(time));
    s.push(units[unit] as char);
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("0m"))
}

/// `application/grpc` or `application/grpc+...` (not `application/grpc-web`).
fn is_grpc_request(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .and_then(|v| v.strip_prefix(b"application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+')
}

/// The route's max stream duration for this request (Envoy's `refreshDurationTimeout`):
/// the `grpc-timeout` header capped by `grpc_timeout_header_max` and reduced by the offset
/// when the route sets a header max, else `max_stream_duration`. For gRPC requests on such
/// a route, `grpc-timeout` is rewritten to the value used.
fn max_stream_duration(policy: &RetryPolicy, h: &mut HeaderMap) -> Option<Duration> {
    let s = &policy.stream;
    let timeout = match (grpc_timeout(h), s.grpc_timeout_header_max) {
        (Some(mut t), Some(max)) => {
            if !max.is_zero() && t > max {
                t = max;
            }
            if !t.is_zero()
                && let Some(off) = s.grpc_timeout_header_offset
            {
                t = t
                    .checked_sub(off)
                    .filter(|d| !d.is_zero())
                    .unwrap_or_default();
            }
            t
        }
        _ => s.max_stream_duration??,
    };
    if s.using_new_timeouts && is_grpc_request(h) {
        h.insert(&GRPC_TIMEOUT, grpc_timeout_value(timeout));
    }
    Some(timeout).filter(|d| !d.is_zero())
}

/// A small per-worker generator for back-off jitter (SplitMix64).
pub fn random_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::BuildHasher;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().hash_one(Instant::now()) | 1,
        );
    }
    STATE.with(|s| {
        let mut z = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Envoy's `JitteredExponentialBackOffStrategy`: a uniform draw in `[0, interval)`, the
/// interval starting at `base` and doubling up to `max`.
#[derive(Debug)]
struct Backoff {
    next_ms: u64,
    max_ms: u64,
}

impl Backoff {
    fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            next_ms: (base.as_millis() as u64).max(1),
            max_ms: (max.as_millis() as u64).max(1),
        }
    }

    fn next(&mut self) -> Duration {
        let current = self.next_ms;
        self.next_ms = if self.next_ms < self.max_ms / 2 {
            self.next_ms * 2
        } else {
            self.max_ms
        };
        Duration::from_millis((random_u64() % current).min(self.max_ms))
    }
}

/// What a retry decision came to (Envoy's `RetryStatus`).
enum RetryStatus {
    No,
    Yes(Duration),
    LimitExceeded,
    Overflow,
}

/// The retry state of one request (Envoy's `RetryStateImpl`): the policy merged with the
/// request's own retry headers, the retries left, and the circuit-breaker slot a scheduled
/// retry holds until its outcome is known.
struct RetryState<'a> {
    policy: &'a RetryPolicy,
    cluster: Arc<Cluster>,
    retry_on: u32,
    remaining: u32,
    /// From `x-envoy-retriable-status-codes` (trusted requests).
    extra_codes: Vec<u32>,
    /// From `x-envoy-retriable-header-names` (trusted requests).
    extra_headers: Vec<HeaderMatcher>,
    backoff: Backoff,
    /// A retry was scheduled and holds a `max_retries` slot.
    armed: bool,
    /// Some attempt put request bytes on the wire (for `reset-before-request`).
    request_started: bool,
    /// The request's virtual cluster, which counts retries too.
    vcluster: Option<Arc<VclusterStats>>,
    /// The route's priority: whose `max_retries` / retry budget applies.
    priority: strait_upstream::Priority,
}

impl<'a> RetryState<'a> {
    /// `None` when the request cannot be retried at all (Envoy creates no retry state).
    /// Reads and removes the retry headers. Those a client sent only reach this point for a
    /// trusted request (see [`set_expected_timeout`]); those a route adds always do.
    fn new(
        policy: &'a RetryPolicy,
        cluster: &Arc<Cluster>,
        h: &mut HeaderMap,
        method: &Method,
        uri: &Uri,
    ) -> Option<Self> {
        if policy.retry_on == 0 && !has_envoy_headers(h) {
            return None;
        }
        let header = |h: &HeaderMap, n: &HeaderName| {
            h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let retry_on_h = header(h, &X_ENVOY_RETRY_ON);
        let grpc_on_h = header(h, &X_ENVOY_RETRY_GRPC_ON);
        let max_h = header(h, &X_ENVOY_MAX_RETRIES);
        let codes_h = header(h, &X_ENVOY_RETRIABLE_STATUS_CODES);
        let names_h = header(h, &X_ENVOY_RETRIABLE_HEADER_NAMES);
        for n in [
            &X_ENVOY_RETRY_ON,
            &X_ENVOY_RETRY_GRPC_ON,
            &X_ENVOY_MAX_RETRIES,
            &X_ENVOY_HEDGE_ON_PER_TRY_TIMEOUT,
            &X_ENVOY_RETRIABLE_HEADER_NAMES,
            &X_ENVOY_RETRIABLE_STATUS_CODES,
            &X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
        ] {
            h.remove(n);
        }
        if policy.retry_on == 0 && retry_on_h.is_none() && grpc_on_h.is_none() {
            return None;
        }
        let mut retry_on = policy.retry_on;
        if let Some(v) = &retry_on_h {
            retry_on |= retry_on::parse_http(v);
        }
        if let Some(v) = &grpc_on_h {
            retry_on |= retry_on::parse_grpc(v);
        }
        if !policy.retriable_request_headers.is_empty() {
            let view = RequestView {
                path: uri.path_and_query().map_or("/", |p| p.as_str()),
                method,
                headers: h,
                authority: "",
                scheme: "http",
            };
            if !policy
                .retriable_request_headers
                .iter()
                .any(|m| m.matches(&view))
            {
                retry_on = 0;
            }
        }
        let mut remaining = policy.num_retries;
        if retry_on != 0
            && let Some(n) = max_h.as_deref().and_then(|v| v.parse::<u64>().ok())
        {
            remaining = u32::try_from(n).unwrap_or(u32::MAX);
        }
        let extra_codes = codes_h
            .as_deref()
            .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
            .unwrap_or_default();
        let extra_headers = names_h
            .as_deref()
            .map(|v| {
                v.split(',')
                    .filter_map(|n| {
                        HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok()
                    })
                    .map(|name| HeaderMatcher {
                        target: HeaderTarget::Header {
                            name,
                            joined: false,
                        },
                        value: HeaderValueMatch::Present(true),
                        invert: false,
                        treat_missing_as_empty: false,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(RetryState {
            policy,
            cluster: cluster.clone(),
            retry_on,
            remaining,
            extra_codes,
            extra_headers,
            backoff: Backoff::new(policy.base_interval, policy.max_interval),
            armed: false,
            request_started: false,
            vcluster: None,
            priority: strait_upstream::Priority::Default,
        })
    }

    fn has(&self, bit: u32) -> bool {
        self.retry_on & bit != 0
    }

    /// Envoy's `wouldRetryFromHeaders`.
    fn would_retry_headers(&self, status: u16, h: &HeaderMap) -> bool {
        use retry_on::*;
        if h.contains_key(&X_ENVOY_RATELIMITED) {
            return self.has(ENVOY_RATELIMITED);
        }
        if self.has(FIVE_XX) && (500..600).contains(&status) {
            return true;
        }
        if self.has(GATEWAY_ERROR) && matches!(status, 502..=504) {
            return true;
        }
        if self.has(RETRIABLE_4XX) && status == 409 {
            return true;
        }
        if self.has(RETRIABLE_STATUS_CODES)
            && status != 425
            && self
                .policy
                .retriable_status_codes
                .iter()
                .chain(&self.extra_codes)
                .any(|c| *c == u32::from(status))
        {
            return true;
        }
        if self.has(RETRIABLE_HEADERS) {
            let view = RequestView {
                path: "",
                method: &Method::GET,
                headers: h,
                authority: "",
                scheme: "",
            };
            if self
                .policy
                .retriable_headers
                .iter()
                .chain(&self.extra_headers)
                .any(|m| m.matches(&view))
            {
                return true;
            }
        }
        if self.retry_on & ANY_GRPC != 0
            && let Some(code) = h
                .get(&GRPC_STATUS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        {
            let bit = match code {
                1 => GRPC_CANCELLED,
                4 => GRPC_DEADLINE_EXCEEDED,
                8 => GRPC_RESOURCE_EXHAUSTED,
                13 => GRPC_INTERNAL,
                14 => GRPC_UNAVAILABLE,
                _ => 0,
            };
            return self.has(bit);
        }
        false
    }

    /// Envoy's `wouldRetryFromReset`. `connect`: a connection could not be had;
    /// `refused`: HTTP/2 REFUSED_STREAM. A per-try timeout is a local reset.
    fn would_retry_reset(&self, connect: bool, refused: bool) -> bool {
        use retry_on::*;
        if connect && self.has(CONNECT_FAILURE) {
            return true;
        }
        if self.has(RESET_BEFORE_REQUEST) && !self.request_started {
            return true;
        }
        if self.has(RESET) || self.has(FIVE_XX) || self.has(GATEWAY_ERROR) {
            return true;
        }
        refused && self.has(REFUSED_STREAM)
    }

    /// Envoy's `RetryStateImpl::shouldRetry`, stats included.
    fn should_retry(&mut self, would_retry: bool) -> RetryStatus {
        let success = self.armed && !would_retry;
        self.release();
        let stats = &self.cluster.stats;
        let vc = self.vcluster.as_deref();
        if success {
            // A retry happened earlier and this outcome is not retried: a "success".
            stats.upstream_rq_retry_success.inc();
            vc.inspect(|v| v.upstream_rq_retry_success.inc());
        }
        if !would_retry {
            return RetryStatus::No;
        }
        if self.remaining == 0 {
            stats.upstream_rq_retry_limit_exceeded.inc();
            vc.inspect(|v| v.upstream_rq_retry_limit_exceeded.inc());
            return RetryStatus::LimitExceeded;
        }
        self.remaining -= 1;
        if !self.cluster.try_start_retry_at(self.priority) {
            stats.upstream_rq_retry_overflow.inc();
            vc.inspect(|v| v.upstream_rq_retry_overflow.inc());
            return RetryStatus::Overflow;
        }
        self.armed = true;
        stats.upstream_rq_retry.inc();
        vc.inspect(|v| v.upstream_rq_retry.inc());
        stats.upstream_rq_retry_backoff_exponential.inc();
        RetryStatus::Yes(self.backoff.next())
    }

    fn release(&mut self) {
        if self.armed {
            self.armed = false;
            self.cluster.end_retry_at(self.priority);
        }
    }
}

impl Drop for RetryState<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Why the router stopped waiting, other than the attempt finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The route timeout.
    Global,
    /// The stream idle timeout.
    Idle,
    /// The max stream duration.
    MaxDuration,
}

/// The request-wide timers, running across attempts and back-offs.
struct Watch<'a> {
    counters: &'a StreamCounters,
    global: Option<Duration>,
    idle: Option<Duration>,
    max_at: Option<Instant>,
}

impl Watch<'_> {
    async fn fired(&self) -> Stop {
        let global = async {
            match self.global {
                Some(t) => {
                    self.counters.request_done().await;
                    let at = self.counters.request_done_at().unwrap_or_else(Instant::now) + t;
                    tokio::time::sleep_until(at.into()).await;
                }
                None => std::future::pending().await,
            }
        };
        let idle = async {
            match self.idle {
                Some(t) => loop {
                    let at = self.counters.last_activity() + t;
                    if Instant::now() >= at {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                },
                None => std::future::pending().await,
            }
        };
        let max = async {
            match self.max_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = global => Stop::Global,
            _ = max => Stop::MaxDuration,
            _ = idle => Stop::Idle,
        }
    }

    /// Runs `fut` unless a request-wide timer fires first.
    async fn guard<F: std::future::Future>(&self, fut: F) -> Result<F::Output, Stop> {
        tokio::select! {
            biased;
            r = fut => Ok(r),
            s = self.fired() => Err(s),
        }
    }
}

/// What the router computed for load balancing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LbInput {
    /// The route's `hash_policy` result.
    pub hash: Option<u64>,
}

/// How one attempt ended.
enum Outcome {
    Response(UpstreamResponse),
    Error(UpstreamError),
    /// `idle`: the per-try idle timeout rather than the per-try timeout.
    PerTryTimeout {
        idle: bool,
    },
    Stop(Stop),
}

/// Where the body of the next attempt comes from.
enum Source {
    Empty,
    /// Streamed once, not kept (no retry possible once sent).
    Stream(Option<DownstreamBody>),
    /// Kept for retries; `None` while an attempt holds it.
    Replay(Option<Replay>),
}

/// The request head, kept across attempts when retries are possible.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn request(&self, body: RequestBody) -> Request<RequestBody> {
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

pub async fn send(
    hcm: &HttpConnectionManager,
    target: &Target<'_>,
    mut parts: Parts,
    body: DownstreamBody,
    lb: LbInput,
    finish: &mut Finish,
) -> Result<Exchange, Failure> {
    let cluster = &target.cluster;
    let action = target.action;
    let policy = action.retry.as_deref().unwrap_or(&DEFAULT_POLICY);
    let plan = TimeoutPlan::from_config(action, policy);
    let mut retry = RetryState::new(
        policy,
        cluster,
        &mut parts.headers,
        &parts.method,
        &parts.uri,
    );
    // The route's priority picks the circuit-breaker thresholds.
    let priority = match action.forward.priority {
        RoutePriority::High => strait_upstream::Priority::High,
        RoutePriority::Default => strait_upstream::Priority::Default,
    };
    if let Some(r) = retry.as_mut() {
        r.vcluster = finish.vcluster.clone();
        r.priority = priority;
    }
    finish.internal_request = strait_upstream::cluster::RqOrigin::is_internal(&parts.headers);
    let max_duration = if policy.stream == StreamTimeouts::default() {
        None
    } else {
        max_stream_duration(policy, &mut parts.headers)
    };

    let body_done = body.is_end_stream();
    let counters = Arc::new(StreamCounters::default());
    if body_done {
        counters.mark_request_done();
    }
    finish.counters = Some(counters.clone());
    let mut source = if body_done {
        Source::Empty
    } else if retry.is_some() {
        Source::Replay(Some(Replay::first(body)))
    } else {
        Source::Stream(Some(body))
    };
    // Envoy: the route's `per_request_buffer_limit_bytes`, else the connection's buffer
    // limit (the listener's `per_connection_buffer_limit_bytes`, 1 MiB by default).
    let buffer_limit = policy
        .buffer_limit
        .map(u64::from)
        .unwrap_or(u64::from(hcm.spec.buffer_limit_bytes));
    let watch = Watch {
        counters: &counters,
        global: plan.global,
        idle: match policy.stream.idle {
            Some(route) => route,
            None => hcm.spec.stream_idle_timeout,
        },
        max_at: max_duration.map(|d| finish.start + d),
    };
    // The head moves into the only attempt unless it may be sent again.
    let mut head = Some(Head {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
    });
    let mut attempted: Vec<u64> = Vec::new();
    let started = Instant::now();
    let fail = |kind, attempts| Err(Failure::new(kind, attempts, policy));

    loop {
        // Host choice; a retry with `previous_hosts` avoids the hosts already tried.
        let avoid = retry.as_ref().is_some_and(|r| r.policy.previous_hosts);
        let host = cluster.choose_host(&LbContext {
            hash: lb.hash,
            attempted: if avoid { &attempted } else { &[] },
            host_selection_retry_max_attempts: retry
                .as_ref()
                .map_or(0, |r| r.policy.host_selection_max_attempts),
            metadata_match: action.metadata_match.as_deref(),
            selection_attempt: 0,
            original_dst: head
                .as_ref()
                .and_then(|h| cluster.original_dst(&h.headers, None)),
        });
        let Some(host) = host else {
            cluster.stats.upstream_cx_none_healthy.inc();
            return fail(FailureKind::NoHealthyUpstream, counters.attempts());
        };
        if policy.previous_hosts {
            attempted.push(host.id);
        }
        let attempt = counters.next_attempt();
        track_upstream(finish, cluster, &host, started);

        // This attempt's request.
        let elapsed = counters
            .request_done_at()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let mut back: Option<oneshot::Receiver<Replay>> = None;
        let up_body = match &mut source {
            Source::Empty => RequestBody::Empty,
            Source::Stream(b) => match b.take() {
                Some(inner) => RequestBody::Incoming {
                    inner,
                    counters: counters.clone(),
                },
                None => RequestBody::Empty,
            },
            Source::Replay(r) => {
                let replay = r.take().unwrap_or_else(|| Replay {
                    chunks: Vec::new(),
                    rest: None,
                    overflowed: true,
                });
                let (b, rx) = ReplayBody::new(
                    replay,
                    buffer_limit,
                    counters.clone(),
                    cluster.stats.retry_or_shadow_abandoned.clone(),
                );
                back = Some(rx);
                RequestBody::Replay(Box::new(b))
            }
        };
        let mut req = match (&retry, head.take()) {
            (Some(_), Some(h)) => {
                let r = h.request(up_body);
                head = Some(h);
                r
            }
            (None, Some(h)) => {
                let mut r = Request::new(up_body);
                *r.method_mut() = h.method;
                *r.uri_mut() = h.uri;
                *r.version_mut() = h.version;
                *r.headers_mut() = h.headers;
                r
            }
            (_, None) => Request::new(up_body),
        };
        // `auto_host_rewrite`: the chosen endpoint's hostname, when it has one.
        if matches!(
            action.host_rewrite,
            Some(strait_config::route::action::HostRewrite::Auto)
        ) && !host.hostname.is_empty()
            && let Ok(v) = HeaderValue::from_str(&host.hostname)
        {
            super::request::update_authority(
                req.headers_mut(),
                target.authority,
                v,
                action.append_x_forwarded_host,
                !hcm.spec.suppress_envoy_headers,
            );
        }
        if policy.include_attempt_count_in_request {
            req.headers_mut()
                .insert(&X_ENVOY_ATTEMPT_COUNT, number_value(u64::from(attempt)));
        }
        if attempt > 1 {
            // Envoy recomputes the expected timeout for each retry.
            let h = req.headers_mut();
            h.remove(&X_ENVOY_EXPECTED_RQ_TIMEOUT_MS);
            if !hcm.spec.suppress_envoy_headers
                && let Some(ms) = plan.expected_ms(elapsed)
            {
                h.insert(&X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, number_value(ms));
            }
        }

        counters.begin_attempt();
        let outcome = run_attempt(cluster, &host, req, &counters, &plan, &watch, priority).await;
        report_health(cluster, &host, &outcome);
        if let Some(r) = retry.as_mut() {
            r.request_started |= counters.request_sent();
        }
        // The body grew past the retry buffer: Envoy drops its retry state.
        if counters.retries_abandoned() {
            retry = None;
        }

        let would = match &outcome {
            Outcome::Response(resp) => retry
                .as_ref()
                .is_some_and(|r| r.would_retry_headers(resp.status().as_u16(), resp.headers())),
            Outcome::Error(e) => {
                count_attempt_error(cluster, e);
                let refused = matches!(e, UpstreamError::RemoteReset { refused: true, .. });
                let connect = e.is_connect_failure();
                retry
                    .as_ref()
                    .is_some_and(|r| r.would_retry_reset(connect, refused))
            }
            Outcome::PerTryTimeout { idle } => {
                let stats = &cluster.stats;
                if *idle {
                    stats.upstream_rq_per_try_idle_timeout.inc();
                } else {
                    stats.upstream_rq_per_try_timeout.inc();
                }
                host.stats.rq_timeout.inc();
                retry
                    .as_ref()
                    .is_some_and(|r| r.would_retry_reset(false, false))
            }
            Outcome::Stop(_) => false,
        };
        let status = match (&outcome, retry.as_mut()) {
            (Outcome::Stop(_), _) | (_, None) => RetryStatus::No,
            (_, Some(r)) => r.should_retry(would),
        };
        let delay = match status {
            RetryStatus::Yes(delay) => delay,
            RetryStatus::LimitExceeded => {
                finish
                    .flags
                    .insert(ResponseFlag::UpstreamRetryLimitExceeded);
                Duration::ZERO
            }
            RetryStatus::Overflow => {
                finish.flags.insert(ResponseFlag::UpstreamOverflow);
                Duration::ZERO
            }
            RetryStatus::No => Duration::ZERO,
        };
        let retrying = matches!(status, RetryStatus::Yes(_));

        if !retrying {
            drop(retry);
            return match outcome {
                Outcome::Response(mut response) => {
                    let origin = strait_upstream::cluster::RqOrigin {
                        internal: finish.internal_request,
                        canary: host.canary,
                    };
                    cluster
                        .stats
                        .record_status(response.status().as_u16(), origin);
                    if let Some(vc) = &finish.vcluster {
                        vc.codes.record(response.status().as_u16());
                    }
                    if policy.include_attempt_count_in_response {
                        response
                            .headers_mut()
                            .insert(&X_ENVOY_ATTEMPT_COUNT, number_value(u64::from(attempt)));
                    }
                    let timers = crate::body::ResponseTimers {
                        global_at: plan
                            .global
                            .and_then(|g| Some(counters.request_done_at()? + g)),
                        idle: watch.idle,
                        max_at: watch.max_at,
                    };
                    Ok(Exchange {
                        response,
                        started,
                        timers,
                    })
                }
                Outcome::Error(UpstreamError::NoPool) => {
                    fail(FailureKind::NoHealthyUpstream, attempt)
                }
                Outcome::Error(error) => fail(
                    FailureKind::Upstream {
                        error,
                        retried: attempt > 1,
                    },
                    attempt,
                ),
                Outcome::PerTryTimeout { idle } => fail(
                    FailureKind::Timeout {
                        per_try: true,
                        idle,
                        alt_response: plan.alt_response,
                        charged: true,
                    },
                    attempt,
                ),
                Outcome::Stop(stop) => {
                    if let (Stop::Global, Some(vc)) = (&stop, &finish.vcluster) {
                        vc.upstream_rq_timeout.inc();
                    }
                    stopped(
                        stop, cluster, &host, &counters, &plan, attempt, true, policy,
                    )
                }
            };
        }

        // Retrying: the failed attempt counts against its host.
        host.stats.rq_error.inc();
        if let Outcome::Response(resp) = outcome {
            cluster.stats.record_retried_status(resp.status().as_u16());
            // Dropping the unread response resets the upstream stream (the connection is
            // not reused), as Envoy does.
            drop(resp);
        }
        // Get the request body back from the finished attempt, then wait the back-off; the
        // request-wide timers keep running meanwhile.
        let waited = watch
            .guard(async {
                let replay = async {
                    match back.take() {
                        Some(rx) => Some(rx.await.unwrap_or(Replay {
                            chunks: Vec::new(),
                            rest: None,
                            overflowed: true,
                        })),
                        None => None,
                    }
                };
                let (replay, ()) = tokio::join!(replay, tokio::time::sleep(delay));
                replay
            })
            .await;
        match waited {
            Ok(Some(replay)) => {
                if replay.overflowed {
                    // The kept body is gone (the downstream body failed mid-way): the
                    // request cannot be sent again.
                    return fail(FailureKind::BufferExceeded, attempt);
                }
                source = Source::Replay(Some(replay));
            }
            Ok(None) => {}
            Err(stop) => {
                return stopped(
                    stop, cluster, &host, &counters, &plan, attempt, false, policy,
                );
            }
        }
    }
}

/// Tells outlier detection (and active health checking, for
/// `x-envoy-immediate-health-check-fail`) what an attempt did, as Envoy's router does.
fn report_health(cluster: &Cluster, host: &Host, outcome: &Outcome) {
    use strait_upstream::outlier::{Outcome as Od, report};
    match outcome {
        Outcome::Response(resp) => {
            if resp
                .headers()
                .contains_key("x-envoy-immediate-health-check-fail")
            {
                strait_upstream::health::on_immediate_fail(cluster, host);
            }
            report(cluster, host, Od::ConnectSuccess);
            report(cluster, host, Od::Status(resp.status().as_u16()));
        }
        Outcome::Error(e) => {
            if !e.is_connect_failure() {
                report(cluster, host, Od::ConnectSuccess);
            }
            report(cluster, host, Od::ConnectFailed);
        }
        Outcome::PerTryTimeout { .. } | Outcome::Stop(Stop::Global) => {
            report(cluster, host, Od::Timeout)
        }
        Outcome::Stop(_) => {}
    }
}

/// The cluster stats of a failed attempt, retried or not (Envoy counts them where the
/// failure happens: pool, codec).
fn count_attempt_error(cluster: &Cluster, e: &UpstreamError) {
    let s = &cluster.stats;
    match e {
        UpstreamError::ConnectFailure(_) | UpstreamError::ConnectTimeout => {
            s.upstream_rq_pending_failure_eject.inc()
        }
        UpstreamError::RemoteReset { .. } => s.upstream_rq_rx_reset.inc(),
        UpstreamError::Protocol(_) => s.upstream_cx_protocol_error.inc(),
        UpstreamError::Reset(_) | UpstreamError::Overflow | UpstreamError::NoPool => {}
    }
}

/// The failure for a request-wide timer. `waiting`: an attempt was in flight (Envoy only
/// counts the timeout against the cluster and host then).
#[allow(clippy::too_many_arguments)]
fn stopped(
    stop: Stop,
    cluster: &Cluster,
    host: &Host,
    counters: &StreamCounters,
    plan: &TimeoutPlan,
    attempts: u32,
    waiting: bool,
    policy: &RetryPolicy,
) -> Result<Exchange, Failure> {
    let request_complete = counters.is_request_done();
    let kind = match stop {
        Stop::Global => {
            if waiting {
                cluster.stats.upstream_rq_timeout.inc();
                host.stats.rq_timeout.inc();
            }
            FailureKind::Timeout {
                per_try: false,
                idle: false,
                alt_response: plan.alt_response,
                charged: waiting,
            }
        }
        Stop::Idle => FailureKind::StreamIdle { request_complete },
        Stop::MaxDuration => FailureKind::MaxStreamDuration { request_complete },
    };
    Err(Failure::new(kind, attempts, policy))
}

/// Keeps `finish.upstream` on the host of the current attempt; the request's active gauges
/// are taken once and move with it.
fn track_upstream(finish: &mut Finish, cluster: &Arc<Cluster>, host: &Arc<Host>, started: Instant) {
    match finish.upstream.as_mut() {
        Some(u) if u.active => {
            if u.host.id != host.id {
                u.host.request_ended();
                host.request_started();
                u.host = host.clone();
            }
        }
        _ => {
            // upstream_rq_total counts once the request is on a connection (the pool does it).
            cluster.stats.upstream_rq_active.inc();
            host.request_started();
            finish.upstream = Some(UpstreamInfo {
                cluster: cluster.clone(),
                host: host.clone(),
                started,
                active: true,
            });
        }
    }
}

/// One attempt: the pool exchange raced against the per-try timers (which start once the
/// attempt has its connection and the downstream request is complete, as Envoy's) and the
/// request-wide timers.
async fn run_attempt(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: Request<RequestBody>,
    counters: &StreamCounters,
    plan: &TimeoutPlan,
    watch: &Watch<'_>,
    priority: strait_upstream::Priority,
) -> Outcome {
    let send = strait_upstream::pool::send_request_at(cluster, host, req, counters, priority);
    // An attempt given up while it waits for a connection (a request-wide timer fired, or
    // the client went away and this future is dropped) is a cancelled pool request.
    let mut pending = CancelOnDrop {
        cluster,
        counters,
        armed: true,
    };
    let per_try = async {
        let timer = match (plan.per_try, plan.per_try_idle) {
            (Some(t), Some(i)) if i < t => Some((i, true)),
            (Some(t), _) => Some((t, false)),
            (None, Some(i)) => Some((i, true)),
            (None, None) => None,
        };
        match timer {
            Some((d, idle)) => {
                counters.upstream_ready().await;
                counters.request_done().await;
                tokio::time::sleep(d).await;
                idle
            }
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        biased;
        r = send => match r {
            Ok(resp) => Outcome::Response(resp),
            Err(e) => Outcome::Error(e),
        },
        stop = watch.fired() => Outcome::Stop(stop),
        idle = per_try => Outcome::PerTryTimeout { idle },
    };
    pending.armed = matches!(outcome, Outcome::Stop(_));
    outcome
}

/// Counts `upstream_rq_cancelled` when dropped armed before the attempt had a connection.
struct CancelOnDrop<'a> {
    cluster: &'a Cluster,
    counters: &'a StreamCounters,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed && !self.counters.is_upstream_ready() {
            self.cluster.stats.upstream_rq_cancelled.inc();
        }
    }
}

/// Envoy's local reply for a request that got no upstream response.
pub fn failure_reply(
    hcm: &HttpConnectionManager,
    target: &Target<'_>,
    failure: Failure,
    request_id: Option<HeaderValue>,
    mut finish: Finish,
) -> Response<ResponseBody> {
    let cluster = &target.cluster;
    let Failure {
        kind,
        attempts,
        attempt_count_header,
    } = failure;
    // A circuit breaker refused the request: Envoy adds `x-envoy-overloaded: true`.
    let mut overloaded = false;
    let (status, body, details, charge): (u16, Bytes, &'static str, bool) = match kind {
        FailureKind::NoHealthyUpstream => {
            finish.flags.insert(ResponseFlag::NoHealthyUpstream);
            (
                503,
                Bytes::from_static(b"no healthy upstream"),
                "no_healthy_upstream",
                true,
            )
        }
        FailureKind::Upstream { error, retried } => {
            // Envoy names the transport failure in the body only when the transport socket
            // reported one (TLS handshake errors); a refused TCP connect has none.
            let body = format!(
                "upstream connect error or disconnect/reset before headers. {}reset reason: {}",
                if retried {
                    "retried and the latest "
                } else {
                    ""
                },
                error.reset_reason()
            );
            let status = match &error {
                UpstreamError::ConnectFailure(_) | UpstreamError::ConnectTimeout => {
                    finish.flags.insert(ResponseFlag::UpstreamConnectionFailure);
                    503
                }
                UpstreamError::Reset(_) => {
                    finish
                        .flags
                        .insert(ResponseFlag::UpstreamConnectionTermination);
                    503
                }
                UpstreamError::RemoteReset { .. } => {
                    finish.flags.insert(ResponseFlag::UpstreamRemoteReset);
                    503
                }
                UpstreamError::Protocol(_) => {
                    finish.flags.insert(ResponseFlag::UpstreamProtocolError);
                    502
                }
                UpstreamError::Overflow => {
                    finish.flags.insert(ResponseFlag::UpstreamOverflow);
                    overloaded = !hcm.spec.suppress_envoy_headers;
                    503
                }
                // Answered as no healthy upstream before reaching here (see `send`).
                UpstreamError::NoPool => {
                    finish.flags.insert(ResponseFlag::NoHealthyUpstream);
                    503
                }
            };
            if let Some(l) = finish.log.as_mut() {
                l.upstream_failure = error.transport_failure_reason();
            }
            // Envoy appends the reset reason in braces; only overflow's is done so far.
            let details = if matches!(error, UpstreamError::Overflow) {
                "upstream_reset_before_response_started{overflow}"
            } else {
                "upstream_reset_before_response_started"
            };
            (status, Bytes::from(body), details, true)
        }
        FailureKind::Timeout {
            per_try,
            idle,
            alt_response,
            charged,
        } => {
            finish.flags.insert(ResponseFlag::UpstreamRequestTimeout);
            let details = match (per_try, idle) {
                (false, _) => "upstream_response_timeout",
                (true, false) => "upstream_per_try_timeout",
                (true, true) => "upstream_per_try_idle_timeout",
            };
            if alt_response {
                (204, Bytes::new(), details, charged)
            } else {
                (
                    504,
                    Bytes::from_static(b"upstream request timeout"),
                    details,
                    charged,
                )
            }
        }
        FailureKind::StreamIdle { request_complete } => {
            finish.flags.insert(ResponseFlag::StreamIdleTimeout);
            hcm.stats.downstream_rq_idle_timeout.inc();
            (
                if request_complete { 504 } else { 408 },
                Bytes::from_static(b"stream timeout"),
                "stream_idle_timeout",
                false,
            )
        }
        FailureKind::MaxStreamDuration { request_complete } => {
            hcm.stats.downstream_rq_max_duration_reached.inc();
            (
                if request_complete { 504 } else { 408 },
                Bytes::from_static(b"downstream duration timeout"),
                "max_duration_timeout",
                false,
            )
        }
        FailureKind::BufferExceeded => (
            507,
            Bytes::from_static(b"exceeded request buffer limit while retrying upstream"),
            "request_payload_exceeded_retry_buffer_limit",
            false,
        ),
    };
    if charge {
        let origin = strait_upstream::cluster::RqOrigin {
            internal: finish.internal_request,
            canary: finish.upstream.as_ref().is_some_and(|u| u.host.canary),
        };
        cluster.stats.record_status(status, origin);
    }
    let mut resp = local_reply(hcm, status, Some(body), Some(finish), details);
    if overloaded {
        resp.headers_mut().insert(
            http::HeaderName::from_static("x-envoy-overloaded"),
            HeaderValue::from_static("true"),
        );
    }
    if attempt_count_header && attempts > 0 {
        resp.headers_mut()
            .insert(&X_ENVOY_ATTEMPT_COUNT, number_value(u64::from(attempts)));
    }
    if let Some(id) = request_id {
        resp.headers_mut().insert(&X_REQUEST_ID, id);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(global: Option<u64>, per_try: Option<u64>) -> TimeoutPlan {
        TimeoutPlan {
            global: global.map(Duration::from_millis),
            per_try: per_try.map(Duration::from_millis),
            per_try_idle: None,
            alt_response: false,
        }
    }

    #[test]
    fn expected_timeout_like_envoy() {
        let ms = Duration::from_millis;
        assert_eq!(plan(Some(15000), None).expected_ms(ms(0)), Some(15000));
        assert_eq!(plan(Some(2000), Some(200)).expected_ms(ms(0)), Some(200));
        // Retries: never past what is left of the route timeout, at least 1 ms.
        assert_eq!(plan(Some(2000), Some(200)).expected_ms(ms(1900)), Some(100));
        assert_eq!(plan(Some(2000), Some(200)).expected_ms(ms(2500)), Some(1));
        assert_eq!(plan(None, Some(300)).expected_ms(ms(5000)), Some(300));
        assert_eq!(plan(None, None).expected_ms(ms(0)), None);
    }

    #[test]
    fn grpc_timeouts() {
        let mut h = HeaderMap::new();
        let mut with = |v: &'static str| {
            h.insert(&GRPC_TIMEOUT, HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(with("5S"), Some(Duration::from_secs(5)));
        assert_eq!(with("2M"), Some(Duration::from_secs(120)));
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("1500u"), Some(Duration::from_millis(2)));
        assert_eq!(with("1n"), Some(Duration::from_millis(1)));
        assert_eq!(with("100000000m"), None);
        assert_eq!(with("5x"), None);
        assert_eq!(with("m"), None);
        let v = |ms| grpc_timeout_value(Duration::from_millis(ms));
        assert_eq!(v(100), "100m");
        assert_eq!(v(99_999_999), "99999999m");
        assert_eq!(v(100_000_000), "100000S");
        assert_eq!(v(u64::MAX / 2), "99999999H");
    }

    #[test]
    fn grpc_content_types() {
        let mut h = HeaderMap::new();
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc-web", false),
            ("text/plain", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc_request(&h), grpc, "{ct}");
        }
    }

    #[test]
    fn backoff_is_jittered_exponential() {
        let mut b = Backoff::new(Duration::from_millis(25), Duration::from_millis(250));
        let limits = [25, 50, 100, 200, 250, 250];
        for limit in limits {
            let d = b.next().as_millis() as u64;
            assert!(d < limit, "{d} >= {limit}");
        }
        // A 1 ms base still draws (always 0 ms).
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(10));
        assert_eq!(b.next(), Duration::ZERO);
    }

    fn cluster() -> Arc<Cluster> {
        use strait_config::model::ClusterSpec;
        let mut spec = ClusterSpec::static_http1("c", &["127.0.0.1:1".parse().expect("addr")]);
        spec.connect_timeout = Duration::from_secs(1);
        Arc::new(Cluster::new(
            Arc::new(spec),
            &strait_stats::Store::new(1),
            1,
        ))
    }

    fn state<'a>(policy: &'a RetryPolicy, c: &Arc<Cluster>) -> RetryState<'a> {
        RetryState::new(
            policy,
            c,
            &mut HeaderMap::new(),
            &Method::GET,
            &Uri::from_static("/"),
        )
        .expect("retry state")
    }

    #[test]
    fn no_state_without_conditions() {
        let c = cluster();
        let p = RetryPolicy::default();
        let mut h = HeaderMap::new();
        h.insert(&X_ENVOY_MAX_RETRIES, HeaderValue::from_static("3"));
        h.insert(
            &X_ENVOY_RETRIABLE_STATUS_CODES,
            HeaderValue::from_static("503"),
        );
        assert!(RetryState::new(&p, &c, &mut h, &Method::GET, &Uri::from_static("/")).is_none());
        assert!(h.is_empty(), "retry headers are consumed");
    }

    /// Runs `f` on the cluster action of a one-route bootstrap whose route action has
    /// `extra` (YAML flow mapping entries, e.g. `timeout: 1s`).
    fn with_action(extra: &str, f: impl FnOnce(&strait_config::route::ClusterAction)) {
        let yaml = format!(
            "static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: t
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          route_config:
            virtual_hosts:
            - name: v
              domains: ['*']
              routes:
              - match: {{prefix: /}}
                route: {{cluster: c{extra}}}
  clusters:
  - name: c
    connect_timeout: 1s
    load_assignment:
      cluster_name: c
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}}}]}}]
"
        );
        let src = strait_config::Source {
            path: None,
            yaml: Some(&yaml),
        };
        let cfg = strait_config::load_bootstrap(&src, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let table = &cfg.listeners[0].hcm.routes;
        match &table.vhosts[0].routes[0].action {
            strait_config::route::RouteAction::Cluster(a) => f(a),
            _ => panic!("not a cluster action"),
        }
    }

    #[test]
    fn untrusted_timeout_and_retry_headers_are_removed() {
        with_action("", |action| {
            let mut h = HeaderMap::new();
            for n in EXTERNAL_REQUEST_HEADERS {
                h.insert(*n, HeaderValue::from_static("100"));
            }
            h.insert("x-envoy-attempt-count", HeaderValue::from_static("7"));
            set_expected_timeout(&mut h, action, false);
            assert_eq!(h.len(), 2, "{h:?}");
            assert_eq!(h[&X_ENVOY_EXPECTED_RQ_TIMEOUT_MS], "15000");
            assert_eq!(h["x-envoy-attempt-count"], "7");
            set_expected_timeout(&mut h, action, true);
            assert_eq!(h.len(), 1, "suppress_envoy_headers: {h:?}");
        });
        with_action(
            ", timeout: 2s, retry_policy: {per_try_timeout: 0.25s}",
            |action| {
                let mut h = HeaderMap::new();
                set_expected_timeout(&mut h, action, false);
                assert_eq!(h[&X_ENVOY_EXPECTED_RQ_TIMEOUT_MS], "250");
            },
        );
        with_action(", timeout: 0s", |action| {
            let mut h = HeaderMap::new();
            set_expected_timeout(&mut h, action, false);
            assert!(h.is_empty());
        });
    }

    #[test]
    fn timeout_headers_override_the_route() {
        with_action("", timeout_headers_override);
    }

    fn timeout_headers_override(action: &strait_config::route::ClusterAction) {
        let p = RetryPolicy::default();
        let mut h = HeaderMap::new();
        h.insert(
            &X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS,
            HeaderValue::from_static("300"),
        );
        h.insert(
            &X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
            HeaderValue::from_static("100"),
        );
        h.insert(
            &X_ENVOY_UPSTREAM_RQ_TIMEOUT_ALT_RESPONSE,
            HeaderValue::from_static(""),
        );
        let t = TimeoutPlan::from_config(action, &p).with_headers(&mut h);
        assert!(h.is_empty());
        assert_eq!(t.global, Some(Duration::from_millis(300)));
        assert_eq!(t.per_try, Some(Duration::from_millis(100)));
        assert!(t.alt_response);
        assert_eq!(t.expected_ms(Duration::ZERO), Some(100));
        let mut h = HeaderMap::new();
        h.insert(
            &X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS,
            HeaderValue::from_static("0"),
        );
        h.insert(
            &X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
            HeaderValue::from_static("x"),
        );
        let t = TimeoutPlan::from_config(action, &p).with_headers(&mut h);
        assert_eq!(t.global, None, "0 disables");
        assert_eq!(t.per_try, None);
        assert_eq!(t.expected_ms(Duration::ZERO), None);
    }

    #[test]
    fn retry_headers_merge() {
        let c = cluster();
        let p = RetryPolicy::default();
        let mut h = HeaderMap::new();
        h.insert(
            &X_ENVOY_RETRY_ON,
            HeaderValue::from_static("retriable-status-codes"),
        );
        h.insert(
            &X_ENVOY_RETRY_GRPC_ON,
            HeaderValue::from_static("unavailable"),
        );
        h.insert(&X_ENVOY_MAX_RETRIES, HeaderValue::from_static("4"));
        h.insert(
            &X_ENVOY_RETRIABLE_STATUS_CODES,
            HeaderValue::from_static("418, 420"),
        );
        h.insert(
            &X_ENVOY_RETRIABLE_HEADER_NAMES,
            HeaderValue::from_static("X-Again"),
        );
        let s =
            RetryState::new(&p, &c, &mut h, &Method::GET, &Uri::from_static("/")).expect("state");
        assert!(h.is_empty());
        assert_eq!(s.remaining, 4);
        assert!(s.would_retry_headers(420, &HeaderMap::new()));
        assert!(!s.would_retry_headers(503, &HeaderMap::new()));
        let mut g = HeaderMap::new();
        g.insert(&GRPC_STATUS, HeaderValue::from_static("14"));
        assert!(s.would_retry_headers(200, &g));
        let mut r = HeaderMap::new();
        r.insert("x-again", HeaderValue::from_static(""));
        // retriable-headers is not on: the names alone do not retry.
        assert!(!s.would_retry_headers(200, &r));
    }

    #[test]
    fn status_conditions() {
        let c = cluster();
        let p = RetryPolicy {
            retry_on: retry_on::GATEWAY_ERROR | retry_on::RETRIABLE_4XX,
            ..RetryPolicy::default()
        };
        let s = state(&p, &c);
        let none = HeaderMap::new();
        assert!(s.would_retry_headers(502, &none));
        assert!(s.would_retry_headers(504, &none));
        assert!(!s.would_retry_headers(500, &none));
        assert!(s.would_retry_headers(409, &none));
        assert!(!s.would_retry_headers(410, &none));
        // x-envoy-ratelimited is only retried by envoy-ratelimited.
        let mut rl = HeaderMap::new();
        rl.insert(&X_ENVOY_RATELIMITED, HeaderValue::from_static("true"));
        assert!(!s.would_retry_headers(503, &rl));
    }

    #[test]
    fn reset_conditions() {
        let c = cluster();
        let cf = RetryPolicy {
            retry_on: retry_on::CONNECT_FAILURE,
            ..RetryPolicy::default()
        };
        let s = state(&cf, &c);
        assert!(s.would_retry_reset(true, false));
        assert!(!s.would_retry_reset(false, false));
        let refused = RetryPolicy {
            retry_on: retry_on::REFUSED_STREAM,
            ..RetryPolicy::default()
        };
        let s = state(&refused, &c);
        assert!(s.would_retry_reset(false, true));
        assert!(!s.would_retry_reset(false, false));
        let fivexx = RetryPolicy {
            retry_on: retry_on::FIVE_XX,
            ..RetryPolicy::default()
        };
        let s = state(&fivexx, &c);
        // 5xx covers connect failures and resets.
        assert!(s.would_retry_reset(true, false));
        assert!(s.would_retry_reset(false, false));
        let before = RetryPolicy {
            retry_on: retry_on::RESET_BEFORE_REQUEST,
            ..RetryPolicy::default()
        };
        let mut s = state(&before, &c);
        assert!(s.would_retry_reset(false, false));
        s.request_started = true;
        assert!(!s.would_retry_reset(false, false));
    }

    #[test]
    fn should_retry_counts_like_envoy() {
        let c = cluster();
        let p = RetryPolicy {
            retry_on: retry_on::FIVE_XX,
            num_retries: 1,
            ..RetryPolicy::default()
        };
        let mut s = state(&p, &c);
        assert!(matches!(s.should_retry(true), RetryStatus::Yes(_)));
        assert_eq!(c.retries_active(), 1);
        assert!(matches!(s.should_retry(true), RetryStatus::LimitExceeded));
        assert_eq!(c.retries_active(), 0);
        assert_eq!(c.stats.upstream_rq_retry.value(), 1);
        assert_eq!(c.stats.upstream_rq_retry_limit_exceeded.value(), 1);
        assert_eq!(c.stats.upstream_rq_retry_success.value(), 0);

        let mut s = state(&p, &c);
        assert!(matches!(s.should_retry(true), RetryStatus::Yes(_)));
        assert!(matches!(s.should_retry(false), RetryStatus::No));
        assert_eq!(c.stats.upstream_rq_retry_success.value(), 1);
        drop(s);

        // The circuit breaker: at most three retries in progress per cluster.
        let mut held: Vec<_> = (0..3).map(|_| state(&p, &c)).collect();
        for s in &mut held {
            assert!(matches!(s.should_retry(true), RetryStatus::Yes(_)));
        }
        let mut fourth = state(&p, &c);
        assert!(matches!(fourth.should_retry(true), RetryStatus::Overflow));
        assert_eq!(c.stats.upstream_rq_retry_overflow.value(), 1);
        drop(held);
        assert_eq!(c.retries_active(), 0);
    }
}
