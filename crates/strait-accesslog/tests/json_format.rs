//! `json_format` compilation and typed rendering.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use strait_accesslog::{FormatError, Formatter, LogContext};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn render(v: Value, ctx: &LogContext<'_>) -> String {
    match Formatter::parse_json(&obj(v)) {
        Ok(f) => f.render_to_string(ctx),
        Err(e) => format!("ERROR: {e}"),
    }
}

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

#[test]
fn typed_values_and_null_for_missing() {
    let ctx = LogContext {
        response_code: 200,
        protocol: Some("HTTP/1.1"),
        bytes_sent: 6,
        duration: Some(Duration::from_millis(3)),
        ..Default::default()
    };
    let line = render(
        json!({
            "code": "%RESPONSE_CODE%",
            "proto": "%PROTOCOL%",
            "bytes": "%BYTES_SENT%",
            "dur": "%DURATION%",
            "respdur": "%RESPONSE_DURATION%",
            "host": "%UPSTREAM_HOST%",
            "ua": "%REQ(user-agent)%",
            "port": "%DOWNSTREAM_LOCAL_PORT%",
            "flags": "%RESPONSE_FLAGS%",
        }),
        &ctx,
    );
    assert_eq!(
        line,
        "{\"bytes\":6,\"code\":200,\"dur\":3,\"flags\":\"-\",\"host\":null,\"port\":null,\"proto\":\"HTTP/1.1\",\
         \"respdur\":null,\"ua\":null}\n"
    );
    // The output is valid JSON.
    let parsed: Result<Value, _> = serde_json::from_str(&line);
    assert!(parsed.is_ok());
}

#[test]
fn templates_are_strings_with_dash_for_missing() {
    let ctx = LogContext {
        response_code: 503,
        ..Default::default()
    };
    let line = render(
        json!({"a": "code=%RESPONSE_CODE%", "b": "%REQ(x)%%REQ(y)%", "c": "%RESPONSE_CODE% ", "d": "100%%", "e": ""}),
        &ctx,
    );
    assert_eq!(
        line,
        "{\"a\":\"code=503\",\"b\":\"--\",\"c\":\"503 \",\"d\":\"100%\",\"e\":\"\"}\n"
    );
}

#[test]
fn nested_objects_lists_and_constants() {
    let ctx = LogContext {
        response_code: 201,
        method: Some("GET"),
        ..Default::default()
    };
    let line = render(
        json!({
            "z": {"y": {"x": "%REQ(:METHOD)%"}, "a": [1, "%RESPONSE_CODE%", [true, null], {"k": "v"}]},
            "n": 42, "f": 1.5, "big": 1_000_000, "neg": -3, "t": true, "nul": null,
            "empty_o": {}, "empty_l": [],
        }),
        &ctx,
    );
    assert_eq!(
        line,
        "{\"big\":1e+06,\"empty_l\":[],\"empty_o\":{},\"f\":1.5,\"n\":42,\"neg\":-3,\"nul\":null,\"t\":true,\
         \"z\":{\"a\":[1,201,[true,null],{\"k\":\"v\"}],\"y\":{\"x\":\"GET\"}}}\n"
    );
}

#[test]
fn escaping_of_values_keys_and_literals() {
    let req = headers(&[("user-agent", "ua\"1\\é\t")]);
    let ctx = LogContext {
        request_headers: Some(&req),
        ..Default::default()
    };
    let line = render(
        json!({"ua": "%REQ(user-agent)%", "tmpl": "<%REQ(user-agent)%>", "lit": "a\"b\\c\té", "k\"ey": 1}),
        &ctx,
    );
    assert_eq!(
        line,
        "{\"k\\\"ey\":1,\"lit\":\"a\\\"b\\\\c\\té\",\"tmpl\":\"<ua\\\"1\\\\é\\t>\",\"ua\":\"ua\\\"1\\\\é\\t\"}\n"
    );
    assert!(serde_json::from_str::<Value>(&line).is_ok());
}

#[test]
fn invalid_utf8_header_bytes_stay_valid_json() {
    let mut req = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(b"ab\xffcd") {
        req.insert("x-bin", v);
    }
    let ctx = LogContext {
        request_headers: Some(&req),
        ..Default::default()
    };
    let line = render(json!({"v": "%REQ(x-bin)%", "t": "%REQ(x-bin):3%"}), &ctx);
    assert_eq!(line, "{\"t\":\"ab\u{fffd}\",\"v\":\"ab\u{fffd}cd\"}\n");
}

#[test]
fn truncation_and_start_time() {
    let ctx = LogContext {
        start_time: SystemTime::UNIX_EPOCH + Duration::new(1_795_308_470, 866_000_000),
        path: Some("/direct?x=1"),
        ..Default::default()
    };
    let line = render(
        json!({"trunc": "%REQ(:PATH):3%", "start": "%START_TIME%", "epoch": "%START_TIME(%s)%"}),
        &ctx,
    );
    assert_eq!(
        line,
        "{\"epoch\":\"1795308470\",\"start\":\"2026-11-22T00:47:50.866Z\",\"trunc\":\"/di\"}\n"
    );
}

#[test]
fn omit_empty_values_json() {
    // Observed from Envoy 1.40 with omit_empty_values: true:
    // {"b":"","c":"-","d":"x","g":[1],"h":"-","i":200}
    let req = headers(&[("x-empty", "")]);
    let ctx = LogContext {
        request_headers: Some(&req),
        response_code: 200,
        ..Default::default()
    };
    let f = Formatter::parse_json(&obj(json!({
        "a": "%REQ(x-missing)%",
        "b": "%REQ(x-empty)%",
        "c": "%RESPONSE_FLAGS%",
        "d": "x%REQ(x-missing)%",
        "e": {"f": "%REQ(x-missing)%"},
        "g": ["%REQ(x-missing)%", 1],
        "h": "%ENVIRONMENT(STRAIT_NOPE_VAR)%",
        "i": "%RESPONSE_CODE%",
    })))
    .map(|f| f.with_omit_empty_values(true));
    assert_eq!(
        f.map(|f| f.render_to_string(&ctx)).ok().as_deref(),
        Some("{\"b\":\"\",\"c\":\"-\",\"d\":\"x\",\"g\":[1],\"h\":\"-\",\"i\":200}\n")
    );
}

#[test]
fn errors_carry_the_json_path() {
    let e = Formatter::parse_json(&obj(json!({"outer": {"list": ["ok", "%NOPE%"]}})));
    match e {
        Err(FormatError::InJsonField { path, source }) => {
            assert_eq!(path, "outer.list[1]");
            assert_eq!(*source, FormatError::UnknownOperator("NOPE".to_owned()));
        }
        other => panic!("{other:?}"),
    }
    let e = Formatter::parse_json(&obj(json!({"t": "%REQ(x):abc%"})));
    assert_eq!(
        e.err().map(|e| e.to_string()).as_deref(),
        Some("t: Incorrect configuration: %REQ(x):abc%. Couldn't find valid command at position 0")
    );
    assert_eq!(
        Formatter::parse_json(&obj(json!({"a": {"b": "%FOO%"}})))
            .err()
            .and_then(|e| e.operator().map(str::to_owned)),
        Some("FOO".to_owned())
    );
}

#[test]
fn empty_object_renders_braces() {
    let line = render(json!({}), &LogContext::default());
    assert_eq!(line, "{}\n");
}

#[test]
fn typed_ports_ids_and_strings_like_envoy() {
    // Envoy 1.40 rendered, for a proxied GET /up/a?x=1:
    // {"a":2,"b":53050,"c":45606,"d":10001,"e":0,"f":0,"g":"201","i":"x=1","j":"/up/a?x=1",
    //  "k":53050,"l":195,"m":"via_upstream","n":"up_route","o":"127.0.0.1:10001","p":"-",
    //  "q":"127.0.0.1","t":""}
    // and for GET /none (404 NR): "a":0,"c":null,"d":null,"f":null,"i":null,"n":null,"o":null,
    // "p":"NoRouteFound".
    let format = json!({
        "a": "%UPSTREAM_CONNECTION_ID%", "b": "%DOWNSTREAM_REMOTE_PORT%", "c": "%UPSTREAM_LOCAL_PORT%",
        "d": "%UPSTREAM_REMOTE_PORT%", "e": "%RESPONSE_TRAILERS_BYTES%", "f": "%REQUEST_TX_DURATION%",
        "g": "%RESP(:status)%", "i": "%QUERY_PARAMS%", "j": "%PATH%", "k": "%DOWNSTREAM_DIRECT_REMOTE_PORT%",
        "l": "%UPSTREAM_WIRE_BYTES_RECEIVED%", "m": "%RESPONSE_CODE_DETAILS%", "n": "%ROUTE_NAME%",
        "o": "%UPSTREAM_HOST_NAME%", "p": "%RESPONSE_FLAGS_LONG%", "q": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "t": "%REQ(:PATH):0%",
    });
    let Ok(f) = Formatter::parse_json(&obj(format)) else {
        panic!("format must compile")
    };
    let up = LogContext {
        path: Some("/up/a?x=1"),
        response_code: 201,
        response_code_details: Some("via_upstream"),
        upstream_connection_id: 2,
        downstream_remote_address: "127.0.0.1:53050".parse().ok(),
        downstream_direct_remote_address: "127.0.0.1:53050".parse().ok(),
        upstream_local_address: "127.0.0.1:45606".parse().ok(),
        upstream_host: "127.0.0.1:10001".parse().ok(),
        request_tx_duration: Some(Duration::from_micros(200)),
        upstream_wire_bytes_received: 195,
        route_name: Some("up_route"),
        ..Default::default()
    };
    assert_eq!(
        f.render_to_string(&up),
        concat!(
            r#"{"a":2,"b":53050,"c":45606,"d":10001,"e":0,"f":0,"g":"201","i":"x=1","j":"/up/a?x=1","#,
            r#""k":53050,"l":195,"m":"via_upstream","n":"up_route","o":"127.0.0.1:10001","p":"-","#,
            r#""q":"127.0.0.1","t":""}"#,
            "\n"
        )
    );
    let none = LogContext {
        path: Some("/none"),
        response_code: 404,
        response_code_details: Some("route_not_found"),
        response_flags: strait_accesslog::ResponseFlag::NR.into(),
        downstream_remote_address: "127.0.0.1:53062".parse().ok(),
        downstream_direct_remote_address: "127.0.0.1:53062".parse().ok(),
        ..Default::default()
    };
    assert_eq!(
        f.render_to_string(&none),
        concat!(
            r#"{"a":0,"b":53062,"c":null,"d":null,"e":0,"f":null,"g":"404","i":null,"j":"/none","#,
            r#""k":53062,"l":0,"m":"route_not_found","n":null,"o":null,"p":"NoRouteFound","#,
            r#""q":"127.0.0.1","t":""}"#,
            "\n"
        )
    );
}

#[test]
fn protocol_strings() {
    use strait_accesslog::protocol_str;
    assert_eq!(protocol_str(http::Version::HTTP_10), Some("HTTP/1.0"));
    assert_eq!(protocol_str(http::Version::HTTP_11), Some("HTTP/1.1"));
    assert_eq!(protocol_str(http::Version::HTTP_2), Some("HTTP/2"));
    assert_eq!(protocol_str(http::Version::HTTP_3), Some("HTTP/3"));
    assert_eq!(protocol_str(http::Version::HTTP_09), None);
}
