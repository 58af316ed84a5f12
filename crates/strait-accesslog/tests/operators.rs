//! Every supported command operator, rendered from a hand-built LogContext.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use strait_accesslog::{FormatError, Formatter, LogContext, ResponseFlag, ResponseFlags};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(k, v);
        }
    }
    h
}

fn addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

fn render(fmt: &str, ctx: &LogContext<'_>) -> String {
    match Formatter::parse_text(fmt) {
        Ok(f) => f.render_to_string(ctx),
        Err(e) => format!("ERROR: {e}"),
    }
}

fn err(fmt: &str) -> FormatError {
    match Formatter::parse_text(fmt) {
        Ok(_) => panic!("{fmt:?} should not compile"),
        Err(e) => e,
    }
}

/// 2026-11-22T00:47:41.884924Z
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_795_308_461, 884_924_000)
}

struct Fixture {
    req: HeaderMap,
    resp: HeaderMap,
    trailers: HeaderMap,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            req: headers(&[
                ("host", "ignored.example"),
                ("user-agent", "curl/8.5.0"),
                ("x-request-id", "rid-1"),
                ("x-multi", "first"),
                ("x-multi", "second"),
                ("x-empty", ""),
                ("x-envoy-original-path", "/orig?q=1"),
            ]),
            resp: headers(&[
                ("content-type", "text/plain"),
                ("x-envoy-upstream-service-time", "7"),
            ]),
            trailers: headers(&[("grpc-status", "0"), ("grpc-message", "all good")]),
        }
    }

    fn ctx(&self) -> LogContext<'_> {
        LogContext {
            start_time: t0(),
            method: Some("POST"),
            path: Some("/api/v1/items?page=2&q=x"),
            authority: Some("example.com:8080"),
            scheme: Some("https"),
            request_headers: Some(&self.req),
            response_headers: Some(&self.resp),
            response_trailers: Some(&self.trailers),
            protocol: Some("HTTP/2"),
            upstream_protocol: Some("HTTP/1.1"),
            response_code: 201,
            response_code_details: Some("via_upstream"),
            connection_termination_details: None,
            response_flags: ResponseFlag::UF | ResponseFlag::URX,
            bytes_received: 154,
            bytes_sent: 4321,
            upstream_wire_bytes_sent: 300,
            upstream_wire_bytes_received: 5000,
            duration: Some(Duration::from_micros(12_999)),
            request_duration: Some(Duration::from_micros(1_500)),
            request_tx_duration: Some(Duration::from_micros(2_100)),
            response_duration: Some(Duration::from_millis(10)),
            response_tx_duration: Some(Duration::from_micros(2_999)),
            upstream_host: addr("10.0.0.7:9000"),
            upstream_cluster: Some("backend"),
            upstream_local_address: addr("10.0.0.1:41000"),
            upstream_transport_failure_reason: None,
            upstream_request_attempt_count: 2,
            upstream_connection_id: 77,
            downstream_remote_address: addr("203.0.113.9:55000"),
            downstream_direct_remote_address: addr("192.168.1.2:55001"),
            downstream_local_address: addr("[2001:db8::1]:443"),
            route_name: Some("items"),
            virtual_cluster_name: Some("vc1"),
            connection_id: 42,
            ..Default::default()
        }
    }
}

#[test]
fn start_time() {
    let f = Fixture::new();
    let ctx = f.ctx();
    assert_eq!(render("%START_TIME%", &ctx), "2026-11-22T00:47:41.884Z");
    assert_eq!(render("%START_TIME()%", &ctx), "2026-11-22T00:47:41.884Z");
    assert_eq!(render("%START_TIME(%s.%3f)%", &ctx), "1795308461.884");
    assert_eq!(render("%START_TIME(%s.%6f)%", &ctx), "1795308461.884924");
    assert_eq!(render("%START_TIME(%s.%9f)%", &ctx), "1795308461.884924000");
    assert_eq!(
        render("%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)%", &ctx),
        "2026/11/22T00:47:41+0000 1795308461"
    );
    assert_eq!(
        render("[%START_TIME(%d/%b/%Y:%H:%M:%S %z)%]", &ctx),
        "[22/Nov/2026:00:47:41 +0000]"
    );
    // Parameters may contain ')' as long as it is not followed by '%' or ':N%'.
    assert_eq!(render("%START_TIME((%H))%", &ctx), "(00)");
    assert_eq!(render("%EMIT_TIME(%Y)%", &ctx).len(), 4);
}

#[test]
fn request_headers_and_pseudo_headers() {
    let f = Fixture::new();
    let ctx = f.ctx();
    assert_eq!(render("%REQ(:METHOD)%", &ctx), "POST");
    assert_eq!(render("%REQ(:path)%", &ctx), "/api/v1/items?page=2&q=x");
    assert_eq!(render("%REQ(:AUTHORITY)%", &ctx), "example.com:8080");
    assert_eq!(render("%REQ(HOST)%", &ctx), "example.com:8080");
    assert_eq!(render("%REQ(:SCHEME)%", &ctx), "https");
    assert_eq!(render("%REQ(:STATUS)%", &ctx), "-");
    assert_eq!(render("%REQ(:protocol)%", &ctx), "-");
    assert_eq!(render("%REQ(USER-AGENT)%", &ctx), "curl/8.5.0");
    assert_eq!(render("%REQ(x-multi)%", &ctx), "first");
    assert_eq!(render("%REQ(x-empty)%", &ctx), "");
    assert_eq!(render("%REQ(x-missing)%", &ctx), "-");
    assert_eq!(
        render("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", &ctx),
        "/orig?q=1"
    );
    assert_eq!(
        render("%REQ(X-MISSING?:PATH)%", &ctx),
        "/api/v1/items?page=2&q=x"
    );
    assert_eq!(render("%REQ(X-MISSING?X-NOPE)%", &ctx), "-");
    assert_eq!(render("%REQ(x-empty?user-agent)%", &ctx), "");
    assert_eq!(render("%REQ(?user-agent)%", &ctx), "curl/8.5.0");
    assert_eq!(render("%REQUEST_HEADER(user-agent):4%", &ctx), "curl");
    assert_eq!(render("%STREAM_INFO_REQ(x-request-id)%", &ctx), "rid-1");
    // Host header fallback when no :authority is known.
    let ctx2 = LogContext {
        authority: None,
        ..f.ctx()
    };
    assert_eq!(render("%REQ(:authority)%", &ctx2), "ignored.example");
    // No request at all.
    assert_eq!(
        render("%REQ(:METHOD)% %REQ(user-agent)%", &LogContext::default()),
        "- -"
    );
}

#[test]
fn truncation() {
    let f = Fixture::new();
    let ctx = f.ctx();
    assert_eq!(render("%REQ(:PATH):3%", &ctx), "/ap");
    assert_eq!(render("%REQ(:PATH):0%", &ctx), "");
    assert_eq!(
        render("%REQ(:PATH):1000%", &ctx),
        "/api/v1/items?page=2&q=x"
    );
    assert_eq!(render("%REQ(x-missing):0%", &ctx), "-");
    assert_eq!(render("%REQ(x-missing?user-agent):2%", &ctx), "cu");
    assert_eq!(render("%RESP(content-type):4%", &ctx), "text");
    assert_eq!(render("%TRAILER(grpc-message):3%", &ctx), "all");
    assert_eq!(render("%REQ_WITHOUT_QUERY(:PATH):6%", &ctx), "/api/v");
}

#[test]
fn response_headers_and_trailers() {
    let f = Fixture::new();
    let ctx = f.ctx();
    assert_eq!(render("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", &ctx), "7");
    assert_eq!(render("%RESP(:status)%", &ctx), "201");
    assert_eq!(render("%RESP(:path)%", &ctx), "-");
    assert_eq!(render("%RESP(x-nope?content-type)%", &ctx), "text/plain");
    assert_eq!(
        render("%RESPONSE_HEADER(content-type)%", &ctx),
        "text/plain"
    );
    assert_eq!(render("%TRAILER(grpc-status)%", &ctx), "0");
    assert_eq!(render("%RESPONSE_TRAILER(grpc-status)%", &ctx), "0");
    assert_eq!(render("%TRAILER(x-nope)%", &ctx), "-");
    let none = LogContext::default();
    assert_eq!(
        render("%RESP(:status)%|%RESP(a)%|%TRAILER(b)%", &none),
        "-|-|-"
    );
}

#[test]
fn path_and_query() {
    let f = Fixture::new();
    let ctx = f.ctx();
    assert_eq!(render("%REQ_WITHOUT_QUERY(:PATH)%", &ctx), "/api/v1/items");
    assert_eq!(
        render("%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%", &ctx),
        "/orig"
    );
    assert_eq!(
        render("%PATH%|%PATH(WQ)%|%PATH(NQ)%|%PATH(NQ):4%", &ctx),
        "/api/v1/items?page=2&q=x|/api/v1/items?page=2&q=x|/api/v1/items|/api"
    );
    assert_eq!(
        render("%PATH(WQ:ORIG)%|%PATH(NQ:ORIG)%", &ctx),
        "/orig?q=1|/orig"
    );
    assert_eq!(
        render("%QUERY_PARAMS%|%QUERY_PARAMS:4%", &ctx),
        "page=2&q=x|page"
    );
    // Observed from Envoy 1.40: no '?' → "-", empty query → "".
    let no_q = LogContext {
        path: Some("/a"),
        ..Default::default()
    };
    let empty_q = LogContext {
        path: Some("/a?"),
        ..Default::default()
    };
    assert_eq!(render("%QUERY_PARAMS%", &no_q), "-");
    assert_eq!(render("%QUERY_PARAMS%", &empty_q), "");
    assert_eq!(render("%PATH(WQ:ORIG)%", &no_q), "-");
    assert!(matches!(err("%PATH(x)%"), FormatError::InvalidParameter(_)));
    assert_eq!(
        err("%PATH(x)%").to_string(),
        "Invalid PATH option: 'x', only 'WQ'/'NQ' are allowed"
    );
    assert!(matches!(
        err("%QUERY_PARAMS(x)%"),
        FormatError::InvalidParameter(_)
    ));
}

#[test]
fn stream_info_fields() {
    let f = Fixture::new();
    let ctx = f.ctx();
    assert_eq!(
        render("%PROTOCOL%|%UPSTREAM_PROTOCOL%", &ctx),
        "HTTP/2|HTTP/1.1"
    );
    assert_eq!(render("%RESPONSE_CODE%", &ctx), "201");
    assert_eq!(render("%RESPONSE_CODE_DETAILS%", &ctx), "via_upstream");
    assert_eq!(render("%CONNECTION_TERMINATION_DETAILS%", &ctx), "-");
    assert_eq!(render("%RESPONSE_FLAGS%", &ctx), "UF,URX");
    assert_eq!(
        render("%RESPONSE_FLAGS_LONG%", &ctx),
        "UpstreamConnectionFailure,UpstreamRetryLimitExceeded"
    );
    assert_eq!(render("%BYTES_RECEIVED% %BYTES_SENT%", &ctx), "154 4321");
    assert_eq!(
        render(
            "%UPSTREAM_WIRE_BYTES_SENT% %UPSTREAM_WIRE_BYTES_RECEIVED%",
            &ctx
        ),
        "300 5000"
    );
    // Durations are truncated to whole milliseconds.
    assert_eq!(
        render(
            "%DURATION% %REQUEST_DURATION% %REQUEST_TX_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION%",
            &ctx
        ),
        "12 1 2 10 2"
    );
    assert_eq!(
        render("%UPSTREAM_HOST%|%UPSTREAM_CLUSTER%", &ctx),
        "10.0.0.7:9000|backend"
    );
    assert_eq!(
        render(
            "%UPSTREAM_HOST_NAME%|%UPSTREAM_HOST_NAME_WITHOUT_PORT%",
            &ctx
        ),
        "10.0.0.7:9000|10.0.0.7"
    );
    let named = LogContext {
        upstream_host_name: Some("api.internal"),
        ..f.ctx()
    };
    assert_eq!(
        render(
            "%UPSTREAM_HOST_NAME%|%UPSTREAM_HOST_NAME_WITHOUT_PORT%",
            &named
        ),
        "api.internal|api.internal"
    );
    assert_eq!(
        render(
            "%UPSTREAM_LOCAL_ADDRESS%|%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%|%UPSTREAM_LOCAL_PORT%",
            &ctx
        ),
        "10.0.0.1:41000|10.0.0.1|41000"
    );
    assert_eq!(
        render(
            "%UPSTREAM_REMOTE_ADDRESS%|%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|%UPSTREAM_REMOTE_PORT%",
            &ctx
        ),
        "10.0.0.7:9000|10.0.0.7|9000"
    );
    assert_eq!(render("%UPSTREAM_TRANSPORT_FAILURE_REASON%", &ctx), "-");
    let failed = LogContext {
        upstream_transport_failure_reason: Some("delayed connect error: Connection refused"),
        ..f.ctx()
    };
    assert_eq!(
        render("%UPSTREAM_TRANSPORT_FAILURE_REASON%", &failed),
        "delayed_connect_error:_Connection_refused"
    );
    assert_eq!(
        render(
            "%UPSTREAM_REQUEST_ATTEMPT_COUNT%|%UPSTREAM_CONNECTION_ID%",
            &ctx
        ),
        "2|77"
    );
    assert_eq!(
        render(
            "%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|%DOWNSTREAM_REMOTE_PORT%",
            &ctx
        ),
        "203.0.113.9:55000|203.0.113.9|55000"
    );
    assert_eq!(
        render(
            "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%|%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%|%DOWNSTREAM_DIRECT_REMOTE_PORT%",
            &ctx
        ),
        "192.168.1.2:55001|192.168.1.2|55001"
    );
    assert_eq!(
        render(
            "%DOWNSTREAM_LOCAL_ADDRESS%|%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%|%DOWNSTREAM_LOCAL_PORT%",
            &ctx
        ),
        "[2001:db8::1]:443|2001:db8::1|443"
    );
    assert_eq!(
        render("%ROUTE_NAME%|%VIRTUAL_CLUSTER_NAME%|%CONNECTION_ID%", &ctx),
        "items|vc1|42"
    );
    assert_eq!(
        render(
            "%REQUESTED_SERVER_NAME%|%FILTER_CHAIN_NAME%|%LISTENER_NAME%",
            &ctx
        ),
        "-|-|-"
    );
    let named = LogContext {
        requested_server_name: Some("sni.example"),
        filter_chain_name: Some("fc"),
        listener_name: Some("front"),
        ..f.ctx()
    };
    assert_eq!(
        render(
            "%REQUESTED_SERVER_NAME%|%FILTER_CHAIN_NAME%|%LISTENER_NAME%",
            &named
        ),
        "sni.example|fc|front"
    );
}

#[test]
fn address_masks() {
    // Observed from Envoy 1.40 with remote 10.20.30.40: (0) → 0.0.0.0/0, (32)/(33) → /32,
    // ( 8) → 10.0.0.0/8, (-1) → "", (x) and () → plain address.
    let ctx = LogContext {
        downstream_remote_address: addr("10.20.30.40:1234"),
        downstream_local_address: addr("[2001:db8:abcd:12::1]:443"),
        ..Default::default()
    };
    let f = "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(0)%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(32)%|\
             %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(33)%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT( 8)%|\
             %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(-1)%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(x)%|\
             %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT()%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(12)%";
    assert_eq!(
        render(f, &ctx),
        "0.0.0.0/0|10.20.30.40/32|10.20.30.40/32|10.0.0.0/8||10.20.30.40|10.20.30.40|10.16.0.0/12"
    );
    assert_eq!(
        render("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT(48)%", &ctx),
        "2001:db8:abcd::/48"
    );
    assert_eq!(
        render(
            "%UPSTREAM_HOST%|%UPSTREAM_LOCAL_PORT%|%DOWNSTREAM_REMOTE_PORT%",
            &LogContext::default()
        ),
        "-|-|-"
    );
}

#[test]
fn numbers_default_to_zero_like_envoy() {
    let ctx = LogContext::default();
    assert_eq!(
        render(
            "%RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %CONNECTION_ID% \
             %UPSTREAM_CONNECTION_ID% %UPSTREAM_WIRE_BYTES_SENT% %REQUEST_HEADERS_BYTES% %RESPONSE_HEADERS_BYTES% \
             %RESPONSE_TRAILERS_BYTES%",
            &ctx
        ),
        "0 0 0 0 0 0 0 0 0 0"
    );
    assert_eq!(
        render(
            "%DURATION% %REQUEST_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION% %PROTOCOL% %RESPONSE_FLAGS%",
            &ctx
        ),
        "- - - - - -"
    );
}

#[test]
fn header_bytes_are_computed_like_envoy() {
    // Envoy 1.40, `GET /direct?x=1` over HTTP/1.1 with curl, forwarded header map:
    // REQUEST_HEADERS_BYTES = 150, direct_response 200 "hello\n": RESPONSE_HEADERS_BYTES = 91.
    let req = headers(&[
        ("host", "127.0.0.1:10000"),
        ("user-agent", "ua1"),
        ("accept", "*/*"),
        ("x-request-id", "rid1"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-empty", ""),
        ("x-forwarded-proto", "http"),
    ]);
    let resp = headers(&[
        ("content-length", "6"),
        ("content-type", "text/plain"),
        ("date", "Sun, 22 Nov 2026 00:47:41 GMT"),
        ("server", "envoy"),
    ]);
    let ctx = LogContext {
        method: Some("GET"),
        path: Some("/direct?x=1"),
        authority: Some("127.0.0.1:10000"),
        scheme: Some("http"),
        request_headers: Some(&req),
        response_headers: Some(&resp),
        response_code: 200,
        ..Default::default()
    };
    assert_eq!(
        render("%REQUEST_HEADERS_BYTES% %RESPONSE_HEADERS_BYTES%", &ctx),
        "150 91"
    );
    let explicit = LogContext {
        request_headers_bytes: Some(1),
        response_headers_bytes: Some(2),
        response_trailers_bytes: Some(3),
        ..ctx
    };
    assert_eq!(
        render(
            "%REQUEST_HEADERS_BYTES% %RESPONSE_HEADERS_BYTES% %RESPONSE_TRAILERS_BYTES%",
            &explicit
        ),
        "1 2 3"
    );
    let trailers = headers(&[("grpc-status", "0")]);
    let with_trailers = LogContext {
        response_trailers: Some(&trailers),
        ..ctx
    };
    assert_eq!(render("%RESPONSE_TRAILERS_BYTES%", &with_trailers), "12");
}

#[test]
fn constants_hostname_environment_unique_id() {
    // SAFETY-free: set before any formatter reads it; unique name avoids cross-test races.
    // (std::env::set_var is unsafe in edition 2024, so use a variable the test harness has.)
    let path_var = std::env::var("PATH").unwrap_or_default();
    let ctx = LogContext::default();
    assert_eq!(render("%ENVIRONMENT(PATH)%", &ctx), path_var);
    let truncated: String = path_var.chars().take(3).collect();
    if path_var.is_ascii() {
        assert_eq!(render("%ENVIRONMENT(PATH):3%", &ctx), truncated);
    }
    assert_eq!(
        render("%ENVIRONMENT(STRAIT_SURELY_UNSET_VAR_X)%", &ctx),
        "-"
    );
    assert_eq!(
        render("%ENVIRONMENT(STRAIT_SURELY_UNSET_VAR_X):0%", &ctx),
        "-"
    );

    let host = render("%HOSTNAME%", &ctx);
    assert!(!host.is_empty() && host != "-");

    let a = render("%UNIQUE_ID%", &ctx);
    let b = render("%UNIQUE_ID%", &ctx);
    assert_eq!(a.len(), 36);
    assert_ne!(a, b);
}

#[test]
fn literals_and_escapes() {
    let ctx = LogContext {
        response_code: 204,
        ..Default::default()
    };
    assert_eq!(render("", &ctx), "");
    assert_eq!(
        render("plain text, no operators", &ctx),
        "plain text, no operators"
    );
    assert_eq!(
        render("100%% done %RESPONSE_CODE%%%", &ctx),
        "100% done 204%"
    );
    assert_eq!(render("%%RESPONSE_CODE%%", &ctx), "%RESPONSE_CODE%");
    assert_eq!(render("é %RESPONSE_CODE% ü\n", &ctx), "é 204 ü\n");
}

#[test]
fn omit_empty_values_text() {
    // Observed from Envoy 1.40 (omit_empty_values: true):
    // "a=%REQ(x-missing)%|b=%REQ(x-empty)%|c=%RESPONSE_FLAGS%|d=%UPSTREAM_HOST%|e=%ENVIRONMENT(NOPE)%|f=%RESPONSE_DURATION%"
    // → "a=|b=|c=-|d=|e=-|f="
    let req = headers(&[("x-empty", "")]);
    let ctx = LogContext {
        request_headers: Some(&req),
        ..Default::default()
    };
    let f = Formatter::parse_text(
        "a=%REQ(x-missing)%|b=%REQ(x-empty)%|c=%RESPONSE_FLAGS%|d=%UPSTREAM_HOST%|e=%ENVIRONMENT(STRAIT_NOPE_VAR)%|f=%RESPONSE_DURATION%\n",
    )
    .map(|f| f.with_omit_empty_values(true));
    assert_eq!(
        f.map(|f| f.render_to_string(&ctx)).ok().as_deref(),
        Some("a=|b=|c=-|d=|e=-|f=\n")
    );
}

#[test]
fn response_flags_every_flag() {
    let all: ResponseFlags = ResponseFlag::ALL.into_iter().collect();
    let ctx = LogContext {
        response_flags: all,
        ..Default::default()
    };
    assert_eq!(
        render("%RESPONSE_FLAGS%", &ctx),
        "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI,FI,RL,UAEX,RLSE,DC,URX,SI,IH,DPE,UMSDR,RFCF,NFCF,DT,UPE,NC,OM,DF,DO,DR,UDO"
    );
    assert_eq!(
        render("%RESPONSE_FLAGS_LONG%", &ctx),
        "FailedLocalHealthCheck,NoHealthyUpstream,UpstreamRequestTimeout,LocalReset,UpstreamRemoteReset,\
         UpstreamConnectionFailure,UpstreamConnectionTermination,UpstreamOverflow,NoRouteFound,DelayInjected,\
         FaultInjected,RateLimited,UnauthorizedExternalService,RateLimitServiceError,DownstreamConnectionTermination,\
         UpstreamRetryLimitExceeded,StreamIdleTimeout,InvalidEnvoyRequestHeaders,DownstreamProtocolError,\
         UpstreamMaxStreamDurationReached,ResponseFromCacheFilter,NoFilterConfigFound,DurationTimeout,\
         UpstreamProtocolError,NoClusterFound,OverloadManagerTerminated,DnsResolutionFailed,DropOverload,\
         DownstreamRemoteReset,UnconditionalDropOverload"
    );
}

#[test]
fn errors_match_envoy_wording() {
    // Every message below is what `envoy --mode validate` (1.40) printed for the same format.
    let cases: &[(&str, &str)] = &[
        ("%FOO%", "Not supported field in StreamInfo: FOO"),
        ("%1%", "Not supported field in StreamInfo: 1"),
        (
            "%REQ(X):abc%",
            "Incorrect configuration: %REQ(X):abc%. Couldn't find valid command at position 0",
        ),
        (
            "%REQ(X)",
            "Incorrect configuration: %REQ(X). Couldn't find valid command at position 0",
        ),
        (
            "%REQ(X",
            "Incorrect configuration: %REQ(X. Couldn't find valid command at position 0",
        ),
        (
            "abc % def",
            "Incorrect configuration: abc % def. Couldn't find valid command at position 4",
        ),
        (
            "100%",
            "Incorrect configuration: 100%. Couldn't find valid command at position 3",
        ),
        (
            "%req(x)%",
            "Incorrect configuration: %req(x)%. Couldn't find valid command at position 0",
        ),
        (
            "%REQ(X):%",
            "Incorrect configuration: %REQ(X):%. Couldn't find valid command at position 0",
        ),
        (
            "%REQ(X)x%",
            "Incorrect configuration: %REQ(X)x%. Couldn't find valid command at position 0",
        ),
        (
            "%REQ(X):-1%",
            "Incorrect configuration: %REQ(X):-1%. Couldn't find valid command at position 0",
        ),
        (
            "%%%",
            "Incorrect configuration: %%%. Couldn't find valid command at position 2",
        ),
        (
            "%DURATION%%",
            "Incorrect configuration: %DURATION%%. Couldn't find valid command at position 10",
        ),
        (
            "%REQ(X):99999999999999999999%",
            "Incorrect configuration: %REQ(X):99999999999999999999%. Couldn't find valid command at position 0",
        ),
        ("%REQ()%", "REQ requires parameters"),
        ("%REQ%", "REQ requires parameters"),
        ("%REQ:3%", "REQ requires parameters"),
        ("%ENVIRONMENT()%", "ENVIRONMENT requires parameters"),
        (
            "%PROTOCOL(x)%",
            "PROTOCOL does not take any parameters or length",
        ),
        (
            "%RESPONSE_CODE:3%",
            "RESPONSE_CODE does not take any parameters or length",
        ),
        (
            "%UNIQUE_ID(x)%",
            "UNIQUE_ID does not take any parameters or length",
        ),
        (
            "%HOSTNAME:2%",
            "HOSTNAME does not take any parameters or length",
        ),
        (
            "%START_TIME:5%",
            "START_TIME does not allow length to be specified.",
        ),
        (
            "%RESPONSE_CODE_DETAILS:3%",
            "RESPONSE_CODE_DETAILS does not allow length to be specified.",
        ),
        (
            "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT:3%",
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT does not allow length to be specified.",
        ),
        (
            "%REQ(a?b?c)%",
            "More than 1 alternative header specified in token: a?b?c",
        ),
        (
            "%REQ(X):3:4%",
            "Incorrect configuration: %REQ(X):3:4%. Couldn't find valid command at position 0",
        ),
        (
            "%START_TIME(%Y):3%",
            "START_TIME does not allow length to be specified.",
        ),
        ("%_A_%", "Not supported field in StreamInfo: _A_"),
        (
            "%START_TIME(%n)%",
            "Invalid header configuration. Format string contains newline.",
        ),
    ];
    for (fmt, want) in cases {
        assert_eq!(err(fmt).to_string(), *want, "format {fmt:?}");
    }
    // Same rejection as Envoy ("Format string contains invalid characters"), message names the header.
    for bad in [
        "%REQ(a b)%",
        "%REQ(x:y)%",
        "%REQ(:)%",
        "%REQ(x/y)%",
        "%REQ(é)%",
        "%REQ(x\"y)%",
        "%REQ(::path)%",
        "%REQ(X)(Y)%",
        "%REQ(X)Y)%",
        "%REQ((x))%",
        "%REQ( x)%",
    ] {
        assert!(
            matches!(err(bad), FormatError::InvalidHeaderName(_)),
            "{bad}"
        );
    }
    // Accepted by Envoy too.
    for ok in [
        "%PROTOCOL()%",
        "%RESPONSE_CODE()%",
        "%REQ(?x)%",
        "%REQ(x?)%",
        "%REQ(X-Foo_bar.baz~)%",
        "%REQ(X)%:5",
        "%ENVIRONMENT(X):3%",
        "%START_TIME()%",
        "%REQ(X)%%%",
        "%%%%",
        "%REQ(x)%)",
        "%REQ(x):03%",
        "%START_TIME(%Y)x)%",
        "%REQ(X-A?:authority)%",
        "%RESPONSE_FLAGS()%",
    ] {
        assert!(Formatter::parse_text(ok).is_ok(), "{ok}");
    }
    assert_eq!(err("%FOO%").operator(), Some("FOO"));
}

#[test]
fn unsupported_envoy_operators_are_distinguished() {
    for op in [
        "%DYNAMIC_METADATA(ns:key)%",
        "%FILTER_STATE(x)%",
        "%DOWNSTREAM_TLS_VERSION%",
        "%START_TIME_LOCAL%",
        "%GRPC_STATUS%",
    ] {
        match err(op) {
            FormatError::UnsupportedOperator(name) => assert!(op.contains(&name)),
            other => panic!("{op}: {other:?}"),
        }
    }
    assert_eq!(
        err("%DOWNSTREAM_TLS_VERSION%").to_string(),
        "command operator DOWNSTREAM_TLS_VERSION is not supported by strait"
    );
}

#[test]
fn formatter_is_send_sync_and_render_appends() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Formatter>();
    let f = Formatter::parse_text("%RESPONSE_CODE%\n").ok();
    let mut out = b"prefix ".to_vec();
    if let Some(f) = f {
        f.render(
            &LogContext {
                response_code: 503,
                ..Default::default()
            },
            &mut out,
        );
    }
    assert_eq!(out, b"prefix 503\n");
}
