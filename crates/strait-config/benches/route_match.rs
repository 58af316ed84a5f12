//! Route and virtual host lookup with large tables.
//!
//! `cargo bench -p strait-config --bench route_match` (numbers in docs/routing-matching.md).
//!
//! - `routes/*`: one virtual host with 10,000 routes (prefix, path, path_separated_prefix,
//!   some with header matchers, 10 safe_regex), looked up through the route index, and by
//!   scanning in order for comparison. `first`/`middle`/`last` hit route 0 / 5,000 / 9,999;
//!   `miss` matches none.
//! - `vhosts/*`: 5,000 virtual hosts (2,000 exact domains, 1,500 `*.suffix`, 1,500
//!   `prefix.*`), selected by Host.
//!
//! Before measuring, every lookup is checked to return the expected route and to allocate
//! nothing (a counting global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_api::pb::envoy::config::route::v3 as rt;
use envoy_api::pb::envoy::r#type::matcher::v3 as tm;
use strait_config::route::{RequestView, RouteTable, compile_route_config};
use strait_config::{ConfigErrors, FieldPath};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUTES: usize = 10_000;
const VHOSTS_EXACT: usize = 2_000;
const VHOSTS_SUFFIX: usize = 1_500;
const VHOSTS_PREFIX: usize = 1_500;

fn route(i: usize, m: rt::RouteMatch) -> rt::Route {
    rt::Route {
        name: format!("r{i}"),
        r#match: Some(m),
        action: Some(rt::route::Action::DirectResponse(
            rt::DirectResponseAction {
                status: 200,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn path_match(spec: rt::route_match::PathSpecifier) -> rt::RouteMatch {
    rt::RouteMatch {
        path_specifier: Some(spec),
        ..Default::default()
    }
}

/// Route `i` of the big virtual host. The path that hits it is [`path_for`].
fn big_route(i: usize) -> rt::Route {
    use rt::route_match::PathSpecifier as PS;
    let m = if i % 1000 == 999 {
        path_match(PS::SafeRegex(tm::RegexMatcher {
            regex: format!("/re{i}/[0-9]+"),
            ..Default::default()
        }))
    } else {
        match i % 4 {
            0 => path_match(PS::Prefix(format!("/svc{i}/"))),
            1 => path_match(PS::Path(format!("/svc{i}/exact"))),
            2 => path_match(PS::PathSeparatedPrefix(format!("/api{i}"))),
            _ => rt::RouteMatch {
                headers: vec![rt::HeaderMatcher {
                    name: "x-tenant".into(),
                    header_match_specifier: Some(
                        rt::header_matcher::HeaderMatchSpecifier::StringMatch(tm::StringMatcher {
                            match_pattern: Some(tm::string_matcher::MatchPattern::Exact(format!(
                                "t{i}"
                            ))),
                            ignore_case: false,
                        }),
                    ),
                    ..Default::default()
                }],
                ..path_match(PS::Prefix(format!("/v{i}")))
            },
        }
    };
    route(i, m)
}

fn path_for(i: usize) -> String {
    if i % 1000 == 999 {
        return format!("/re{i}/12345");
    }
    match i % 4 {
        0 => format!("/svc{i}/items/42?x=1"),
        1 => format!("/svc{i}/exact"),
        2 => format!("/api{i}/users"),
        _ => format!("/v{i}/things"),
    }
}

fn compile(rc: &rt::RouteConfiguration) -> RouteTable {
    let mut errs = ConfigErrors::default();
    let table = compile_route_config(rc, &FieldPath::root(), &HashSet::new(), &mut errs);
    match table {
        Some(t) if errs.is_empty() => t,
        _ => panic!("route configuration does not compile: {errs}"),
    }
}

fn big_vhost_table() -> RouteTable {
    compile(&rt::RouteConfiguration {
        name: "big".into(),
        virtual_hosts: vec![rt::VirtualHost {
            name: "big".into(),
            domains: vec!["*".into()],
            routes: (0..ROUTES).map(big_route).collect(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn many_vhosts_table() -> RouteTable {
    let mut vhosts = Vec::new();
    let vh = |name: String, domain: String| rt::VirtualHost {
        name,
        domains: vec![domain],
        routes: vec![route(
            0,
            path_match(rt::route_match::PathSpecifier::Prefix("/".into())),
        )],
        ..Default::default()
    };
    for i in 0..VHOSTS_EXACT {
        vhosts.push(vh(format!("exact{i}"), format!("host{i}.example.com")));
    }
    for i in 0..VHOSTS_SUFFIX {
        vhosts.push(vh(format!("suffix{i}"), format!("*.d{i}.example.org")));
    }
    for i in 0..VHOSTS_PREFIX {
        vhosts.push(vh(format!("prefix{i}"), format!("p{i}.*")));
    }
    compile(&rt::RouteConfiguration {
        name: "many".into(),
        virtual_hosts: vhosts,
        ..Default::default()
    })
}

struct Req {
    path: String,
    headers: http::HeaderMap,
    method: http::Method,
}

impl Req {
    fn new(path: String, tenant: Option<String>) -> Req {
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", http::HeaderValue::from_static("bench"));
        if let Some(t) = tenant {
            headers.insert(
                "x-tenant",
                http::HeaderValue::from_str(&t).expect("tenant header value"),
            );
        }
        Req {
            path,
            headers,
            method: http::Method::GET,
        }
    }
    fn view(&self) -> RequestView<'_> {
        RequestView {
            path: &self.path,
            method: &self.method,
            headers: &self.headers,
            authority: "bench.example.com",
            scheme: "http",
        }
    }
}

fn route_req(i: usize) -> Req {
    Req::new(path_for(i), (i % 4 == 3).then(|| format!("t{i}")))
}

/// Runs `f` `n` times and returns how many allocations it made.
fn allocations(n: usize, mut f: impl FnMut()) -> u64 {
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        f();
    }
    ALLOCS.load(Ordering::Relaxed) - before
}

fn bench_routes(c: &mut Criterion) {
    let table = big_vhost_table();
    let cases = [
        ("first", route_req(0), Some("r0")),
        ("middle", route_req(5_000), Some("r5000")),
        ("last", route_req(ROUTES - 1), Some("r9999")),
        ("miss", Req::new("/nothing/here?x=1".into(), None), None),
    ];
    let mut g = c.benchmark_group("routes");
    for (label, req, want) in &cases {
        let view = req.view();
        let vh = table.find_vhost("bench.example.com").expect("vhost");
        let got = vh.find_route(&view).map(|r| r.name.as_str());
        assert_eq!(got, *want, "{label}: indexed lookup");
        let scanned = vh.vhost.find_route(&view).map(|r| r.name.as_str());
        assert_eq!(scanned, *want, "{label}: scan");
        let n = allocations(1000, || {
            black_box(vh.find_route(black_box(&view)));
        });
        assert_eq!(n, 0, "{label}: the indexed lookup allocated");
        g.bench_function(format!("indexed/{label}"), |b| {
            b.iter(|| {
                table
                    .find_vhost(black_box("bench.example.com"))
                    .and_then(|vh| vh.find_route(black_box(&view)))
            })
        });
        g.bench_function(format!("scan/{label}"), |b| {
            b.iter(|| vh.vhost.find_route(black_box(&view)))
        });
    }
    g.finish();
}

fn bench_vhosts(c: &mut Criterion) {
    let table = many_vhosts_table();
    let cases = [
        (
            "exact_first",
            "host0.example.com".to_string(),
            Some("exact0"),
        ),
        (
            "exact_middle",
            "host1000.example.com".into(),
            Some("exact1000"),
        ),
        (
            "exact_last",
            "host1999.example.com".into(),
            Some("exact1999"),
        ),
        ("suffix", "a.b.d750.example.org".into(), Some("suffix750")),
        ("prefix", "p1499.somewhere.net".into(), Some("prefix1499")),
        ("miss", "nothing.example.net".into(), None),
    ];
    let mut g = c.benchmark_group("vhosts");
    for (label, host, want) in &cases {
        let got = table.find_vhost(host).map(|v| v.name.clone());
        assert_eq!(got.as_deref(), *want, "{label}");
        let n = allocations(1000, || {
            black_box(table.find_vhost(black_box(host)));
        });
        assert_eq!(n, 0, "{label}: the vhost lookup allocated");
        g.bench_function(*label, |b| {
            b.iter(|| table.find_vhost(black_box(host)).map(|v| v.routes.len()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_routes, bench_vhosts);
criterion_main!(benches);
