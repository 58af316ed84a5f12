//! `location` of redirects (and of `direct_response`s with a `201`/`3xx` status), built the
//! way Envoy's `RouteEntryImplBase::newUri` builds it.

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderValue};
use http::{Request, Version};
use strait_config::route::action::{RedirectAction, RedirectPath};

use crate::headers::X_FORWARDED_PROTO;

/// The parts of a request a redirect reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestUrl<'a> {
    /// The request's `:scheme` as Envoy sees it (see [`scheme_and_forwarded_proto`]).
    pub scheme: &'a str,
    /// `x-forwarded-proto` as the connection manager leaves it.
    pub forwarded_proto: &'a str,
    /// `:authority` / `host`, as received.
    pub host: &'a str,
    /// `:path` with its query.
    pub path: &'a str,
}

/// Envoy's `:scheme` and `x-forwarded-proto` for a plaintext downstream request: the
/// connection manager sets `x-forwarded-proto` to `http` when it trusts only itself
/// (`use_remote_address`) or when it is absent; an HTTP/1 request gets `:scheme` from a
/// valid `x-forwarded-proto` (lower-cased), else `http`; HTTP/2 carries its own `:scheme`.
pub fn scheme_and_forwarded_proto<'a>(
    version: Version,
    uri_scheme: Option<&'a str>,
    headers: &'a HeaderMap,
    use_remote_address: bool,
) -> (&'static str, &'a str) {
    let xfp = if use_remote_address {
        "http"
    } else {
        headers
            .get(&X_FORWARDED_PROTO)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("http")
    };
    let from = if version == Version::HTTP_2 {
        uri_scheme.unwrap_or("http")
    } else {
        xfp
    };
    let scheme = if from.eq_ignore_ascii_case("https") {
        "https"
    } else {
        "http"
    };
    (scheme, xfp)
}

/// Envoy's `processRequestHost`: the request's host, without its port when the redirect
/// sets a port, or when the scheme changes away from the forwarded protocol and the port is
/// that protocol's default.
fn request_host<'a>(u: &RequestUrl<'a>, new_scheme: &str, new_port: bool) -> &'a str {
    let host = u.host;
    if host.is_empty() {
        return host;
    }
    let port_start = if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    };
    if let Some(i) = port_start {
        let port = &host[i..];
        let xfp = u.forwarded_proto;
        let mut remove = new_port;
        if new_scheme != xfp {
            remove |= xfp.eq_ignore_ascii_case("https") && port == ":443";
            remove |= xfp.eq_ignore_ascii_case("http") && port == ":80";
        }
        if remove {
            return &host[..i];
        }
    }
    host
}

/// The `location` for `r` (`None`: a direct response, which keeps the request's URL).
pub fn location(r: Option<&RedirectAction>, u: &RequestUrl<'_>) -> String {
    let scheme: &str = r.and_then(|r| r.scheme.as_deref()).unwrap_or(u.scheme);
    let port: &str = r.and_then(|r| r.port.as_deref()).unwrap_or("");
    let host: &str = match r.and_then(|r| r.host.as_deref()) {
        Some(h) => h,
        None => request_host(u, scheme, !port.is_empty()),
    };
    let mut keep_query = true;
    let mut path: Cow<'_, str> = Cow::Borrowed(u.path);
    if let Some(r) = r {
        match &r.path {
            RedirectPath::Keep => {}
            RedirectPath::Rewrite(rw) => path = Cow::Owned(rw.apply(u.path)),
            RedirectPath::Path { path: p, has_query } => {
                if *has_query {
                    // The redirect's query replaces the request's and is never stripped.
                    path = Cow::Borrowed(p);
                    keep_query = false;
                } else {
                    let query = u.path.find('?').map(|i| &u.path[i..]).unwrap_or("");
                    path = Cow::Owned(format!("{p}{query}"));
                }
            }
        }
        if keep_query
            && r.strip_query
            && let Some(i) = path.find('?')
        {
            path = Cow::Owned(path[..i].to_string());
        }
    }
    let slash = if path.starts_with('/') { "" } else { "/" };
    format!("{scheme}://{host}{port}{slash}{path}")
}

/// The `location` header for `r` (or for a direct response when `None`) answering `req`,
/// whose `:authority` / `host` is `authority`.
pub fn location_header<B>(
    r: Option<&RedirectAction>,
    req: &Request<B>,
    authority: &str,
    use_remote_address: bool,
) -> Option<HeaderValue> {
    let (scheme, forwarded_proto) = scheme_and_forwarded_proto(
        req.version(),
        req.uri().scheme_str(),
        req.headers(),
        use_remote_address,
    );
    let u = RequestUrl {
        scheme,
        forwarded_proto,
        host: authority,
        path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
    };
    HeaderValue::from_str(&location(r, &u)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::route::action::{Matched, PathRewrite};

    fn redirect() -> RedirectAction {
        RedirectAction {
            status: 301,
            scheme: None,
            host: None,
            port: None,
            path: RedirectPath::Keep,
            strip_query: false,
            response_headers: Box::new([]),
            response_reads_request: false,
        }
    }

    fn url<'a>(host: &'a str, path: &'a str, xfp: &'a str) -> RequestUrl<'a> {
        RequestUrl {
            scheme: if xfp.eq_ignore_ascii_case("https") {
                "https"
            } else {
                "http"
            },
            forwarded_proto: xfp,
            host,
            path,
        }
    }

    #[test]
    fn ports_follow_envoy() {
        let https = RedirectAction {
            scheme: Some("https".into()),
            ..redirect()
        };
        // Observed from Envoy 1.40.
        assert_eq!(
            location(Some(&https), &url("ex.com:8080", "/https?a=1", "http")),
            "https://ex.com:8080/https?a=1"
        );
        assert_eq!(
            location(Some(&https), &url("ex.com:80", "/https", "http")),
            "https://ex.com/https"
        );
        assert_eq!(
            location(Some(&https), &url("ex.com:443", "/https", "http")),
            "https://ex.com:443/https"
        );
        assert_eq!(
            location(Some(&https), &url("[::1]:80", "/https", "http")),
            "https://[::1]/https"
        );
        assert_eq!(
            location(Some(&redirect()), &url("ex.com:443", "/x", "HTTPS")),
            "https://ex.com/x"
        );
        assert_eq!(
            location(Some(&redirect()), &url("ex.com:443", "/x", "foo")),
            "http://ex.com:443/x"
        );
        let port = RedirectAction {
            port: Some(":8443".into()),
            ..redirect()
        };
        assert_eq!(
            location(Some(&port), &url("ex.com:8080", "/port/a", "http")),
            "http://ex.com:8443/port/a"
        );
        let host_port = RedirectAction {
            host: Some("h.com:99".into()),
            port: Some(":8443".into()),
            ..redirect()
        };
        assert_eq!(
            location(Some(&host_port), &url("ex.com:80", "/hp/x", "http")),
            "http://h.com:99:8443/hp/x"
        );
    }

    #[test]
    fn paths_and_queries_follow_envoy() {
        let p = |path: &str, has_query: bool, strip: bool| RedirectAction {
            path: RedirectPath::Path {
                path: path.into(),
                has_query,
            },
            strip_query: strip,
            ..redirect()
        };
        let u = url("ex.com", "/pq/a?k=v", "http");
        assert_eq!(
            location(Some(&p("/newpath?x=y", true, true)), &u),
            "http://ex.com/newpath?x=y"
        );
        assert_eq!(
            location(Some(&p("/newpath", false, false)), &u),
            "http://ex.com/newpath?k=v"
        );
        assert_eq!(
            location(Some(&p("/newpath", false, true)), &u),
            "http://ex.com/newpath"
        );
        assert_eq!(
            location(
                Some(&p("nolead", false, false)),
                &url("ex.com", "/n?z", "http")
            ),
            "http://ex.com/nolead?z"
        );
        let pre = RedirectAction {
            path: RedirectPath::Rewrite(PathRewrite::Prefix {
                matched: Matched::Bytes(3),
                rewrite: "/new".into(),
            }),
            strip_query: true,
            ..redirect()
        };
        assert_eq!(
            location(Some(&pre), &url("ex.com", "/prefix/y?z", "http")),
            "http://ex.com/newefix/y"
        );
        assert_eq!(
            location(None, &url("ex.com", "/d301?q", "http")),
            "http://ex.com/d301?q"
        );
    }
}
