//! End-to-end startup of the real `strait` binary: config errors under `--mode validate`
//! (every error named by its field path), a bad config or a busy port in serve mode, CLI
//! errors, and `--config-yaml` alone or merged over `-c`.

#[path = "e2e_common.rs"]
mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;
use serde_json::json;
use strait_testkit::EchoServer;

const RP: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes";

/// A bootstrap with six semantic errors: port 70000, a negative duration, a route to an
/// undefined cluster, an invalid safe_regex, an unsupported `hedge_policy`, and a duplicate
/// cluster name. `EXTRA_CLUSTER_LINE` and `ROUTER_TYPE` are placeholders for the parse-level
/// errors some tests add.
const SEMANTIC_ERRORS: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: ADMIN_PORT}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 70000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": ROUTER_TYPE
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/a"}
                route: {cluster: nowhere}
              - match: {safe_regex: {regex: "(unclosed"}}
                route: {cluster: echo}
              - match: {prefix: "/r"}
                route: {cluster: echo, hedge_policy: {hedge_on_per_try_timeout: true}}
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: -1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1234}}}
  - name: echo
    type: STATIC
    connect_timeout: 1s
    EXTRA_CLUSTER_LINE
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1234}}}
"#;

fn semantic_errors_config(extra_line: &str, router_type: &str) -> String {
    SEMANTIC_ERRORS
        .replace("ADMIN_PORT", &port().to_string())
        .replace("EXTRA_CLUSTER_LINE", extra_line)
        .replace("ROUTER_TYPE", router_type)
}

/// (field path, words the message about it must contain)
fn semantic_expectations() -> Vec<(String, &'static str)> {
    vec![
        (
            "static_resources.listeners[0].address.socket_address.port_value".into(),
            "65535",
        ),
        (
            "static_resources.clusters[0].connect_timeout".into(),
            "greater than",
        ),
        (format!("{RP}[0].route.cluster"), "nowhere"),
        (format!("{RP}[1].match.safe_regex.regex"), "(unclosed"),
        (
            format!("{RP}[2].route.hedge_policy"),
            "not supported by Strait yet",
        ),
        ("static_resources.clusters[1].name".into(), "duplicate"),
    ]
}

fn validate(dir: &TestDir, yaml: &str) -> RunOutput {
    let path = dir.join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    run_strait(
        dir,
        &["-c", path.to_str().unwrap(), "--mode", "validate"],
        Duration::from_secs(10),
        || {},
    )
}

/// Each expected path appears on a stderr line that also has the expected words.
fn assert_names_every_path(out: &RunOutput, expected: &[(String, &str)]) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status {}; stderr:\n{}",
        out.status,
        out.stderr
    );
    assert!(!out.stdout.contains("OK"), "stdout says OK: {}", out.stdout);
    let mut missing = Vec::new();
    for (path, words) in expected {
        let prefix = format!("{path}: ");
        if !out
            .stderr
            .lines()
            .any(|l| l.trim_start().starts_with(&prefix) && l.contains(words))
        {
            missing.push(format!("{path} ({words})"));
        }
    }
    assert!(
        missing.is_empty(),
        "stderr does not name {missing:#?}; stderr:\n{}",
        out.stderr
    );
}

#[test]
fn validate_names_every_semantic_error() {
    let dir = TestDir::new("validate-semantic");
    let yaml = semantic_errors_config(
        "lb_policy: ROUND_ROBIN",
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    );
    let out = validate(&dir, &yaml);
    assert_names_every_path(&out, &semantic_expectations());
    assert!(out.stderr.contains("6 error(s)"), "stderr:\n{}", out.stderr);
}

#[test]
fn validate_names_parse_errors_together_with_semantic_ones() {
    let dir = TestDir::new("validate-all");
    let yaml = semantic_errors_config(
        "conect_timeout: 1s",
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr",
    );
    let out = validate(&dir, &yaml);
    let mut expected = semantic_expectations();
    expected.push((
        "static_resources.clusters[1].conect_timeout".into(),
        "unknown field",
    ));
    expected.push((
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.@type".into(),
        "Routr",
    ));
    assert_names_every_path(&out, &expected);
}

/// Parse-level errors alone: an unknown field and a bad `@type` each name their path.
#[test]
fn validate_names_unknown_field_and_bad_type_paths() {
    let dir = TestDir::new("validate-parse");
    let good_router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    // Only the parse error: take the semantic errors out, and give the second cluster a
    // name of its own.
    let clean = |yaml: String| {
        let mut y = yaml
            .replace("port_value: 70000", "port_value: 10000")
            .replace("connect_timeout: -1s", "connect_timeout: 1s")
            .replace("{cluster: nowhere}", "{cluster: echo}")
            .replace("(unclosed", "/x.*")
            .replace(", hedge_policy: {hedge_on_per_try_timeout: true}", "");
        let at = y.rfind("  - name: echo\n").expect("second cluster");
        y.replace_range(at..at + "  - name: echo\n".len(), "  - name: echo2\n");
        y
    };

    let out = validate(
        &dir,
        &clean(semantic_errors_config("conect_timeout: 1s", good_router)),
    );
    assert_names_every_path(
        &out,
        &[(
            "static_resources.clusters[1].conect_timeout".into(),
            "unknown field",
        )],
    );

    let out = validate(
        &dir,
        &clean(semantic_errors_config(
            "lb_policy: ROUND_ROBIN",
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr",
        )),
    );
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("Routr"))
        .unwrap_or_else(|| panic!("no error names the bad @type; stderr:\n{}", out.stderr));
    assert!(
        line.contains("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config"),
        "the bad @type error has no field path: {line}"
    );

    // And the cleaned config itself is valid: the errors above come from the one change.
    let out = validate(
        &dir,
        &clean(semantic_errors_config(
            "lb_policy: ROUND_ROBIN",
            good_router,
        )),
    );
    assert!(
        out.status.success(),
        "cleaned config refused; stderr:\n{}",
        out.stderr
    );
}

/// Serve mode with an invalid config: non-zero exit, and the (valid) listener port is never
/// bound meanwhile.
#[test]
fn bad_config_in_serve_mode_exits_without_binding() {
    let dir = TestDir::new("serve-bad");
    let (admin, listen) = (port(), port());
    let bs = bootstrap(
        admin,
        vec![listener(
            "main",
            listen,
            "ingress",
            vec![route("/", "no_such_cluster", None)],
            vec![],
        )],
        vec![cluster("echo", port(), false)],
    );
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, bs.to_string()).unwrap();
    let listen_addr = strait_testkit::ports::localhost(listen);
    let admin_addr = strait_testkit::ports::localhost(admin);
    let mut bound = false;
    let out = run_strait(
        &dir,
        &["-c", path.to_str().unwrap(), "--concurrency", "1"],
        Duration::from_secs(10),
        || {
            bound |= can_connect(listen_addr) || can_connect(admin_addr);
        },
    );
    assert!(
        !out.status.success(),
        "strait accepted a config with an undefined cluster:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no_such_cluster"),
        "stderr does not name the problem:\n{}",
        out.stderr
    );
    assert!(
        !bound,
        "the listener or admin port was bound before the config was refused"
    );
    assert!(!can_connect(listen_addr));
}

/// A listener port already in use: startup fails naming the address.
#[test]
fn listener_port_in_use_fails_startup() {
    let echo = EchoServer::start_background("echo").unwrap();
    let dir = TestDir::new("port-in-use");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let bs = simple_bootstrap(port(), busy_port, echo.port());
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, bs.to_string()).unwrap();
    let out = run_strait(
        &dir,
        &["-c", path.to_str().unwrap(), "--concurrency", "1"],
        Duration::from_secs(10),
        || {},
    );
    assert!(!out.status.success(), "strait started on a busy port");
    let addr = format!("127.0.0.1:{busy_port}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&addr) && l.to_ascii_lowercase().contains("in use")),
        "no error names {addr} as in use; stderr:\n{}",
        out.stderr
    );
    drop(busy);
}

#[test]
fn unknown_cli_flag_is_rejected() {
    let dir = TestDir::new("bad-flag");
    let out = run_strait(
        &dir,
        &["--no-such-flag", "-c", "/nonexistent.yaml"],
        Duration::from_secs(10),
        || {},
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("--no-such-flag") && out.stderr.contains("unexpected argument"),
        "stderr:\n{}",
        out.stderr
    );
    // A flag missing its value is refused too.
    let out = run_strait(&dir, &["--concurrency"], Duration::from_secs(10), || {});
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("--concurrency"),
        "stderr:\n{}",
        out.stderr
    );
}

/// `--config-yaml` without `-c` is a whole bootstrap.
#[test]
fn config_yaml_alone_serves() {
    let echo = EchoServer::start_background("solo").unwrap();
    let dir = TestDir::new("config-yaml");
    let (admin, listen) = (port(), port());
    // JSON is YAML: the flow style Envoy users write on one line.
    let yaml = simple_bootstrap(admin, listen, echo.port()).to_string();
    let args: Vec<String> = ["--config-yaml", &yaml, "--concurrency", "1", "-l", "info"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let strait = Strait::spawn_args(&dir, &args, admin, listen);
    let r = http_get(strait.listen, "/from-config-yaml").unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.header("x-echo-name"), Some("solo"));
}

/// `--config-yaml` merged over `-c` (proto merge: lists appended) adds a second listener and
/// cluster; both listeners serve, each to its own cluster.
#[test]
fn config_yaml_merges_over_config_file() {
    let echo_a = EchoServer::start_background("echo-a").unwrap();
    let echo_b = EchoServer::start_background("echo-b").unwrap();
    let dir = TestDir::new("config-merge");
    let (admin, listen_a, listen_b) = (port(), port(), port());
    let file = bootstrap(
        admin,
        vec![listener(
            "a",
            listen_a,
            "a",
            vec![route("/", "cluster_a", None)],
            vec![],
        )],
        vec![cluster("cluster_a", echo_a.port(), false)],
    );
    let path = dir.join("base.json");
    std::fs::write(&path, file.to_string()).unwrap();
    let overlay = json!({
        "static_resources": {
            "listeners": [listener("b", listen_b, "b", vec![route("/", "cluster_b", None)], vec![])],
            "clusters": [cluster("cluster_b", echo_b.port(), false)],
        }
    })
    .to_string();
    let args: Vec<String> = [
        "-c",
        path.to_str().unwrap(),
        "--config-yaml",
        &overlay,
        "--concurrency",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let strait = Strait::spawn_args(&dir, &args, admin, listen_a);

    let a = http_get(strait_testkit::ports::localhost(listen_a), "/a").unwrap();
    assert_eq!(
        (a.status, a.header("x-echo-name")),
        (200, Some("echo-a")),
        "{}",
        a.body_str()
    );
    let b = http_get(strait_testkit::ports::localhost(listen_b), "/b").unwrap();
    assert_eq!(
        (b.status, b.header("x-echo-name")),
        (200, Some("echo-b")),
        "{}",
        b.body_str()
    );

    let listeners = strait.admin_get("/listeners").body_str();
    assert!(
        listeners.contains(&format!("a::127.0.0.1:{listen_a}"))
            && listeners.contains(&format!("b::127.0.0.1:{listen_b}")),
        "/listeners:\n{listeners}"
    );
    let dump = strait.admin_get("/config_dump").json();
    let names: Vec<&str> = dump["configs"][0]["bootstrap"]["static_resources"]["clusters"]
        .as_array()
        .expect("bootstrap clusters in /config_dump")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["cluster_a", "cluster_b"],
        "merged clusters in order"
    );
}
