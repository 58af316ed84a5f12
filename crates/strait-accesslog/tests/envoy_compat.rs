//! Lines printed by a real Envoy 1.40.0 (`envoy --version`:
//! 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL), compared with what
//! Strait renders for the same request.
//!
//! How they were captured: a static bootstrap with one listener on 127.0.0.1:10000 (HCM,
//! routes `/direct` → `direct_response 200 "hello\n"` named `direct_route`, `/up` → cluster
//! `backend` named `up_route`, `/dead` → cluster `dead` (closed port), `/nc` →
//! `cluster_header: x-cluster`), a second listener on 127.0.0.1:10001 answering
//! `direct_response 201 "backend body\n"` with `x-resp: respval`, and a file access log per
//! format under test; requests made with curl 7.88.1; lines read back from the log file.
//! Values that differ run to run (timestamps, ephemeral ports, x-request-id UUIDs, connection
//! ids) are put into the LogContext as Envoy logged them.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use strait_accesslog::{Formatter, LogContext, ResponseFlag, ResponseFlags};

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

/// `[2026-11-22T00:47:07.102Z]` etc.
fn at(secs: u64, millis: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(secs, millis * 1_000_000 + 123_456)
}

const T0: u64 = 1_795_308_427; // 2026-11-22T00:47:07Z

fn default_line(ctx: &LogContext<'_>) -> String {
    Formatter::envoy_default().render_to_string(ctx)
}

#[test]
fn default_format_string_is_envoys() {
    assert_eq!(
        strait_accesslog::ENVOY_DEFAULT_FORMAT,
        "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% \
         %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
         \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \
         \"%UPSTREAM_HOST%\"\n"
    );
}

#[test]
fn default_format_direct_response() {
    // curl http://127.0.0.1:10000/direct?x=1 -H 'user-agent: ua1' -H 'x-request-id: rid1' -H 'x-forwarded-for: 1.2.3.4'
    let req = headers(&[
        ("user-agent", "ua1"),
        ("x-request-id", "rid1"),
        ("x-forwarded-for", "1.2.3.4"),
    ]);
    let ctx = LogContext {
        start_time: at(T0, 102),
        method: Some("GET"),
        path: Some("/direct?x=1"),
        authority: Some("127.0.0.1:10000"),
        request_headers: Some(&req),
        protocol: Some("HTTP/1.1"),
        response_code: 200,
        bytes_sent: 6,
        duration: Some(Duration::from_micros(400)),
        ..Default::default()
    };
    assert_eq!(
        default_line(&ctx),
        "[2026-11-22T00:47:07.102Z] \"GET /direct?x=1 HTTP/1.1\" 200 - 0 6 0 - \"1.2.3.4\" \"ua1\" \"rid1\" \
         \"127.0.0.1:10000\" \"-\"\n"
    );
}

#[test]
fn default_format_proxied() {
    // curl http://127.0.0.1:10000/up/a?b=c -H 'user-agent: ua2' -H 'x-request-id: rid2'
    let req = headers(&[("user-agent", "ua2"), ("x-request-id", "rid2")]);
    let resp = headers(&[("x-envoy-upstream-service-time", "0")]);
    let ctx = LogContext {
        start_time: at(T0, 116),
        method: Some("GET"),
        path: Some("/up/a?b=c"),
        authority: Some("127.0.0.1:10000"),
        request_headers: Some(&req),
        response_headers: Some(&resp),
        protocol: Some("HTTP/1.1"),
        response_code: 201,
        bytes_sent: 13,
        duration: Some(Duration::from_micros(1_700)),
        upstream_host: addr("127.0.0.1:10001"),
        ..Default::default()
    };
    assert_eq!(
        default_line(&ctx),
        "[2026-11-22T00:47:07.116Z] \"GET /up/a?b=c HTTP/1.1\" 201 - 0 13 1 0 \"-\" \"ua2\" \"rid2\" \
         \"127.0.0.1:10000\" \"127.0.0.1:10001\"\n"
    );
}

#[test]
fn default_format_error_flags() {
    let ua = headers(&[("user-agent", "curl/7.88.1"), ("x-request-id", "rid3")]);
    // /dead: upstream connection refused.
    let uf = LogContext {
        start_time: at(T0, 132),
        method: Some("GET"),
        path: Some("/dead"),
        authority: Some("127.0.0.1:10000"),
        request_headers: Some(&ua),
        protocol: Some("HTTP/1.1"),
        response_code: 503,
        response_flags: ResponseFlags::from(ResponseFlag::UF),
        bytes_sent: 98,
        duration: Some(Duration::from_micros(600)),
        upstream_host: addr("127.0.0.1:10009"),
        ..Default::default()
    };
    assert_eq!(
        default_line(&uf),
        "[2026-11-22T00:47:07.132Z] \"GET /dead HTTP/1.1\" 503 UF 0 98 0 - \"-\" \"curl/7.88.1\" \"rid3\" \
         \"127.0.0.1:10000\" \"127.0.0.1:10009\"\n"
    );
    // /none: no route.
    let nr = LogContext {
        start_time: at(T0, 172),
        path: Some("/none"),
        response_code: 404,
        response_flags: ResponseFlag::NR.into(),
        bytes_sent: 0,
        upstream_host: None,
        ..uf
    };
    assert_eq!(
        default_line(&nr),
        "[2026-11-22T00:47:07.172Z] \"GET /none HTTP/1.1\" 404 NR 0 0 0 - \"-\" \"curl/7.88.1\" \"rid3\" \
         \"127.0.0.1:10000\" \"-\"\n"
    );
    // HTTP/1.0 request rejected by the codec (426): no request headers at all.
    let dpe = LogContext {
        start_time: at(T0, 184),
        protocol: Some("HTTP/1.1"),
        response_code: 426,
        response_flags: ResponseFlag::DPE.into(),
        bytes_sent: 16,
        duration: Some(Duration::from_micros(100)),
        ..Default::default()
    };
    assert_eq!(
        default_line(&dpe),
        "[2026-11-22T00:47:07.184Z] \"- - HTTP/1.1\" 426 DPE 0 16 0 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
    );
    // HTTP/2 prior knowledge POST.
    let h2_req = headers(&[("user-agent", "curl/7.88.1"), ("x-request-id", "rid7")]);
    let h2 = LogContext {
        start_time: at(T0, 202),
        method: Some("POST"),
        path: Some("/direct"),
        authority: Some("127.0.0.1:10000"),
        request_headers: Some(&h2_req),
        protocol: Some("HTTP/2"),
        response_code: 200,
        bytes_sent: 6,
        duration: Some(Duration::from_micros(300)),
        ..Default::default()
    };
    assert_eq!(
        default_line(&h2),
        "[2026-11-22T00:47:07.202Z] \"POST /direct HTTP/2\" 200 - 0 6 0 - \"-\" \"curl/7.88.1\" \"rid7\" \
         \"127.0.0.1:10000\" \"-\"\n"
    );
}

/// The wide text format used against Envoy, minus `%HOSTNAME%`, `%ENVIRONMENT(HOME)%` and
/// `%UNIQUE_ID%` (machine / random dependent; covered in tests/operators.rs).
const WIDE: &str = "A=%REQ(:METHOD)%|B=%REQ(:PATH)%|C=%REQ(:AUTHORITY)%|D=%REQ(:SCHEME)%|E=%REQ_WITHOUT_QUERY(:PATH)%|\
F=%REQ(:PATH):3%|G=%REQ(x-missing?user-agent):2%|H=%RESP(x-resp)%|I=%RESP(:status)%|J=%PROTOCOL%|\
K=%RESPONSE_CODE%|L=%RESPONSE_CODE_DETAILS%|M=%RESPONSE_FLAGS%|N=%RESPONSE_FLAGS_LONG%|O=%BYTES_RECEIVED%|\
P=%BYTES_SENT%|Q=%DURATION%|R=%REQUEST_DURATION%|S=%RESPONSE_DURATION%|T=%RESPONSE_TX_DURATION%|\
U=%UPSTREAM_HOST%|V=%UPSTREAM_CLUSTER%|W=%UPSTREAM_LOCAL_ADDRESS%|X=%UPSTREAM_TRANSPORT_FAILURE_REASON%|\
Y=%UPSTREAM_REQUEST_ATTEMPT_COUNT%|Z=%DOWNSTREAM_REMOTE_ADDRESS%|a=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|\
b=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%|c=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%|\
d=%DOWNSTREAM_LOCAL_ADDRESS%|e=%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%|f=%DOWNSTREAM_LOCAL_PORT%|g=%ROUTE_NAME%|\
h=%CONNECTION_ID%|i=%CONNECTION_TERMINATION_DETAILS%|k=%REQUEST_HEADERS_BYTES%|l=%RESPONSE_HEADERS_BYTES%|\
m=%UPSTREAM_WIRE_BYTES_SENT%|n=%UPSTREAM_WIRE_BYTES_RECEIVED%|p=%ENVIRONMENT(NOPE_X)%|r=%TRAILER(grpc-status)%|\
s=%START_TIME(%s.%3f %Y-%m-%dT%H:%M:%S%z %f %6f %1f %Ez %Z %a %b %j %e %%)%|t=%%|u=%REQ(USER-AGENT):0%|\
w=%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%|x=%REQ(x-empty)%|y=%UPSTREAM_HOST_NAME%\n";

#[test]
fn wide_text_format_proxied_request() {
    // curl http://127.0.0.1:10000/up/a?b=c -H 'user-agent: ua2' -H 'x-request-id: rid2'
    // Forwarded request header map as Envoy holds it (REQUEST_HEADERS_BYTES = 154).
    let req = headers(&[
        ("host", "127.0.0.1:10000"),
        ("user-agent", "ua2"),
        ("accept", "*/*"),
        ("x-request-id", "rid2"),
        ("x-forwarded-proto", "http"),
        ("x-envoy-expected-rq-timeout-ms", "15000"),
    ]);
    // Response headers sent downstream (RESPONSE_HEADERS_BYTES = 174 with :status 201).
    let resp = headers(&[
        ("location", "http://127.0.0.1:10000/up/a?b=c"),
        ("x-resp", "respval"),
        ("content-length", "13"),
        ("content-type", "text/plain"),
        ("date", "Sun, 22 Nov 2026 00:47:41 GMT"),
        ("server", "envoy"),
        ("x-envoy-upstream-service-time", "0"),
    ]);
    let ctx = LogContext {
        start_time: SystemTime::UNIX_EPOCH + Duration::new(1_795_308_461, 904_772_000),
        method: Some("GET"),
        path: Some("/up/a?b=c"),
        authority: Some("127.0.0.1:10000"),
        scheme: Some("http"),
        request_headers: Some(&req),
        response_headers: Some(&resp),
        protocol: Some("HTTP/1.1"),
        response_code: 201,
        response_code_details: Some("via_upstream"),
        bytes_sent: 13,
        upstream_wire_bytes_sent: 163,
        upstream_wire_bytes_received: 195,
        duration: Some(Duration::from_micros(1_200)),
        request_duration: Some(Duration::from_micros(150)),
        response_duration: Some(Duration::from_micros(1_100)),
        response_tx_duration: Some(Duration::from_micros(90)),
        upstream_host: addr("127.0.0.1:10001"),
        upstream_cluster: Some("backend"),
        upstream_local_address: addr("127.0.0.1:48986"),
        upstream_request_attempt_count: 1,
        downstream_remote_address: addr("127.0.0.1:48278"),
        downstream_direct_remote_address: addr("127.0.0.1:48278"),
        downstream_local_address: addr("127.0.0.1:10000"),
        route_name: Some("up_route"),
        connection_id: 2,
        ..Default::default()
    };
    let got = Formatter::parse_text(WIDE)
        .map(|f| f.render_to_string(&ctx))
        .unwrap_or_else(|e| e.to_string());
    let envoy = "A=GET|B=/up/a?b=c|C=127.0.0.1:10000|D=http|E=/up/a|F=/up|G=ua|H=respval|I=201|J=HTTP/1.1|K=201|\
L=via_upstream|M=-|N=-|O=0|P=13|Q=1|R=0|S=1|T=0|U=127.0.0.1:10001|V=backend|W=127.0.0.1:48986|X=-|Y=1|\
Z=127.0.0.1:48278|a=127.0.0.1|b=127.0.0.1:48278|c=127.0.0.1|d=127.0.0.1:10000|e=127.0.0.1|f=10000|g=up_route|\
h=2|i=-|k=154|l=174|m=163|n=195|p=-|r=-|\
s=1795308461.904 2026-11-22T00:47:41+0000 904772000 904772 9 +00:00 UTC Sun Nov 326 22 %|t=%|u=|\
w=127.0.0.1|x=-|y=127.0.0.1:10001\n";
    assert_eq!(got, envoy);
}

#[test]
fn wide_text_format_connection_failure() {
    // curl http://127.0.0.1:10000/dead -H 'x-request-id: rid3'
    let req = headers(&[("user-agent", "curl/7.88.1"), ("x-request-id", "rid3")]);
    let ctx = LogContext {
        start_time: SystemTime::UNIX_EPOCH + Duration::new(1_795_308_461, 926_304_000),
        method: Some("GET"),
        path: Some("/dead"),
        authority: Some("127.0.0.1:10000"),
        scheme: Some("http"),
        request_headers: Some(&req),
        protocol: Some("HTTP/1.1"),
        response_code: 503,
        response_code_details: Some(
            "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
        ),
        response_flags: ResponseFlag::UF.into(),
        bytes_sent: 98,
        duration: Some(Duration::from_micros(500)),
        request_duration: Some(Duration::from_micros(100)),
        upstream_host: addr("127.0.0.1:10009"),
        upstream_cluster: Some("dead"),
        upstream_transport_failure_reason: Some("delayed connect error: Connection refused"),
        upstream_request_attempt_count: 1,
        downstream_remote_address: addr("127.0.0.1:48294"),
        downstream_direct_remote_address: addr("127.0.0.1:48294"),
        downstream_local_address: addr("127.0.0.1:10000"),
        route_name: Some("dead_route"),
        connection_id: 5,
        request_headers_bytes: Some(158),
        response_headers_bytes: Some(92),
        ..Default::default()
    };
    let got = Formatter::parse_text(WIDE)
        .map(|f| f.render_to_string(&ctx))
        .unwrap_or_else(|e| e.to_string());
    let envoy = "A=GET|B=/dead|C=127.0.0.1:10000|D=http|E=/dead|F=/de|G=cu|H=-|I=503|J=HTTP/1.1|K=503|\
L=upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}|\
M=UF|N=UpstreamConnectionFailure|O=0|P=98|Q=0|R=0|S=-|T=-|U=127.0.0.1:10009|V=dead|W=-|\
X=delayed_connect_error:_Connection_refused|Y=1|Z=127.0.0.1:48294|a=127.0.0.1|b=127.0.0.1:48294|c=127.0.0.1|\
d=127.0.0.1:10000|e=127.0.0.1|f=10000|g=dead_route|h=5|i=-|k=158|l=92|m=0|n=0|p=-|r=-|\
s=1795308461.926 2026-11-22T00:47:41+0000 926304000 926304 9 +00:00 UTC Sun Nov 326 22 %|t=%|u=|w=-|x=-|\
y=127.0.0.1:10009\n";
    assert_eq!(got, envoy);
}

#[test]
fn json_format_like_envoy() {
    // The json_format given to Envoy (YAML). Envoy's YAML loader turned the float `1.5` into the
    // string "1.5" (it keeps only integers as numbers), so it is written as a string here.
    let format = json!({
        "zeta": "%RESPONSE_CODE%",
        "alpha": "%PROTOCOL%",
        "code_str": "code=%RESPONSE_CODE%",
        "bytes": "%BYTES_SENT%",
        "dur": "%DURATION%",
        "reqdur": "%REQUEST_DURATION%",
        "respdur": "%RESPONSE_DURATION%",
        "missing_hdr": "%REQ(x-missing)%",
        "empty_hdr": "%REQ(x-empty)%",
        "trunc": "%REQ(:PATH):3%",
        "flags": "%RESPONSE_FLAGS%",
        "num": 42,
        "flt": "1.5",
        "nested": {"inner": "%REQ(:METHOD)%", "deeper": {"port": "%DOWNSTREAM_LOCAL_PORT%", "lit": "plain"}},
        "lst": ["%RESPONSE_CODE%", "x", 7],
        "start": "%START_TIME%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "connid": "%CONNECTION_ID%",
        "hb": "%REQUEST_HEADERS_BYTES%",
        "rhb": "%RESPONSE_HEADERS_BYTES%",
        "br": "%BYTES_RECEIVED%",
        "up": "%UPSTREAM_HOST%",
        "pct": "100%%",
        "uw": "%UPSTREAM_WIRE_BYTES_SENT%",
        "txd": "%RESPONSE_TX_DURATION%",
        "quote": "a\"b\\c\té",
        "emptystr": "",
        "ua": "%REQ(user-agent)%",
        "missing_concat": "%REQ(x-missing)%%REQ(x-missing)%",
    });
    let Value::Object(map) = format else { return };
    let f = Formatter::parse_json(&map);
    assert!(f.is_ok(), "{f:?}");
    let Ok(f) = f else { return };

    // curl http://127.0.0.1:10000/direct?x=1 -H 'user-agent: ua"1\é' -H 'x-empty;'
    let req = headers(&[
        ("host", "127.0.0.1:10000"),
        ("user-agent", "ua\"1\\é"),
        ("accept", "*/*"),
        ("x-empty", ""),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "c959483e-6b21-4182-83f0-3b46dc3d7b5f"),
    ]);
    let resp = headers(&[
        ("content-length", "6"),
        ("content-type", "text/plain"),
        ("date", "Sun, 22 Nov 2026 00:47:50 GMT"),
        ("server", "envoy"),
    ]);
    let direct = LogContext {
        start_time: SystemTime::UNIX_EPOCH + Duration::new(1_795_308_470, 866_500_000),
        method: Some("GET"),
        path: Some("/direct?x=1"),
        authority: Some("127.0.0.1:10000"),
        scheme: Some("http"),
        request_headers: Some(&req),
        response_headers: Some(&resp),
        protocol: Some("HTTP/1.1"),
        response_code: 200,
        bytes_sent: 6,
        duration: Some(Duration::from_micros(300)),
        request_duration: Some(Duration::from_micros(100)),
        downstream_local_address: addr("127.0.0.1:10000"),
        connection_id: 1,
        ..Default::default()
    };
    assert_eq!(
        f.render_to_string(&direct),
        concat!(
            r#"{"alpha":"HTTP/1.1","attempts":0,"br":0,"bytes":6,"code_str":"code=200","connid":1,"dur":0,"#,
            r#""empty_hdr":"","emptystr":"","flags":"-","flt":"1.5","hb":164,"lst":[200,"x",7],"#,
            r#""missing_concat":"--","missing_hdr":null,"nested":{"deeper":{"lit":"plain","port":10000},"#,
            r#""inner":"GET"},"num":42,"pct":"100%","quote":"a\"b\\c\té","reqdur":0,"respdur":null,"rhb":91,"#,
            r#""start":"2026-11-22T00:47:50.866Z","trunc":"/di","txd":null,"ua":"ua\"1\\é","up":null,"uw":0,"#,
            r#""zeta":200}"#,
            "\n"
        )
    );

    // HTTP/1.0 request rejected with 426 (no request headers).
    let dpe = LogContext {
        start_time: SystemTime::UNIX_EPOCH + Duration::new(1_795_308_470, 909_000_000),
        protocol: Some("HTTP/1.1"),
        response_code: 426,
        response_flags: ResponseFlag::DPE.into(),
        bytes_sent: 16,
        duration: Some(Duration::from_micros(200)),
        response_headers_bytes: Some(107),
        downstream_local_address: addr("127.0.0.1:10000"),
        connection_id: 5,
        ..Default::default()
    };
    assert_eq!(
        f.render_to_string(&dpe),
        concat!(
            r#"{"alpha":"HTTP/1.1","attempts":0,"br":0,"bytes":16,"code_str":"code=426","connid":5,"dur":0,"#,
            r#""empty_hdr":null,"emptystr":"","flags":"DPE","flt":"1.5","hb":0,"lst":[426,"x",7],"#,
            r#""missing_concat":"--","missing_hdr":null,"nested":{"deeper":{"lit":"plain","port":10000},"#,
            r#""inner":null},"num":42,"pct":"100%","quote":"a\"b\\c\té","reqdur":null,"respdur":null,"rhb":107,"#,
            r#""start":"2026-11-22T00:47:50.909Z","trunc":null,"txd":null,"ua":null,"up":null,"uw":0,"#,
            r#""zeta":426}"#,
            "\n"
        )
    );
}

#[test]
fn json_numbers_like_envoy() {
    // json_format given to Envoy as a JSON bootstrap (so numbers stay numbers):
    // {"a":1e+06,"b":1e+05,"c":1200000,"d":1e-04,"e":0.00012,"f":12000,"h":123.456,"i":0.000123,
    //  "j":10,"k":-1e+06}
    let format = json!({
        "a": 1_000_000, "b": 100_000, "c": 1_200_000, "d": 0.0001, "e": 0.00012, "f": 12000,
        "h": 123.456, "i": 0.000123, "j": 10, "k": -1_000_000,
    });
    let Value::Object(map) = format else { return };
    let line = Formatter::parse_json(&map)
        .map(|f| f.render_to_string(&LogContext::default()))
        .ok();
    assert_eq!(
        line.as_deref(),
        Some(
            "{\"a\":1e+06,\"b\":1e+05,\"c\":1200000,\"d\":1e-04,\"e\":0.00012,\"f\":12000,\"h\":123.456,\
             \"i\":0.000123,\"j\":10,\"k\":-1e+06}\n"
        )
    );
}

#[test]
fn response_flags_keep_envoys_insertion_order() {
    // /dead with `retry_policy: {retry_on: connect-failure, num_retries: 1}`: Envoy 1.40 logged
    // RESPONSE_FLAGS "URX,UF" and RESPONSE_FLAGS_LONG
    // "UpstreamRetryLimitExceeded,UpstreamConnectionFailure" (URX is set first, when the retry
    // budget is found exhausted, then UF for the final failure) — not enum order.
    let ctx = LogContext {
        response_flags: ResponseFlag::URX | ResponseFlag::UF,
        ..Default::default()
    };
    let f = Formatter::parse_text("%RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%")
        .map(|f| f.render_to_string(&ctx));
    assert_eq!(
        f.ok().as_deref(),
        Some("URX,UF UpstreamRetryLimitExceeded,UpstreamConnectionFailure")
    );
}
