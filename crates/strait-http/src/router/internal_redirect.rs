//! `internal_redirect_policy`: a 3xx from the upstream that the proxy follows itself, as
//! Envoy 1.40 does (observed with the same config): the request goes through route matching
//! again with the `Location`'s authority and path (`:scheme` too when allowed), the same
//! request id and body, `x-envoy-original-url` set to the first URL, and the configured
//! response headers copied over; a 303 turns it into a body-less GET. Each leg is a stream of
//! its own (counted in `downstream_rq_total`, access-logged with `internal_redirect`).
//! Anything that prevents following passes the 3xx through and is counted in
//! `http.<prefix>.passthrough_internal_redirect_*`.

use http::header::{CONTENT_LENGTH, HOST, LOCATION, TRANSFER_ENCODING};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use strait_config::route::forward::{InternalRedirectPolicy, RedirectPredicate};
use strait_upstream::shadow::{BufferedBody, DownstreamBody};

static X_ENVOY_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-envoy-original-url");

/// What the earlier legs of a redirected request did.
#[derive(Debug, Clone, Default)]
pub struct RedirectState {
    /// Redirects followed so far.
    pub count: u32,
    /// Routes the request went through (by identity), for `previous_routes`.
    pub routes: Vec<usize>,
    /// The request body, kept whole so each leg can send it.
    pub body: Option<BufferedBody>,
    /// `x-envoy-original-url`: the first leg's URL. Set on every later leg after the
    /// router's header clean-up (which removes the header from client requests).
    pub original_url: Option<HeaderValue>,
}

impl RedirectState {
    /// Puts `x-envoy-original-url` on a redirect leg's request.
    pub fn mark_request(&self, h: &mut HeaderMap) {
        if let Some(v) = &self.original_url {
            h.insert(&X_ENVOY_ORIGINAL_URL, v.clone());
        }
    }
}

/// Why a redirect was not followed (Envoy's `passthrough_internal_redirect_*` stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    BadLocation,
    UnsafeScheme,
    TooManyRedirects,
    Predicate,
    /// The new request matches no route.
    NoRoute,
    /// Not a redirect the policy follows, or the body was not kept: no stat.
    NotApplicable,
}

/// The request a followed redirect sends through route matching again.
pub struct Followed {
    pub request: Request<DownstreamBody>,
    pub state: RedirectState,
}

/// The request as it went upstream, kept to build the next leg.
pub struct Sent {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub authority: String,
}

impl Sent {
    pub fn of(parts: &Parts, authority: &str) -> Sent {
        Sent {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            authority: authority.to_string(),
        }
    }
}

/// Decides whether to follow `status` + `response_headers` and builds the next request.
/// `route` identifies the route that answered; `state` is what earlier legs did. The
/// predicates on the target route are checked by the caller ([`target_allowed`]) once it
/// has matched the new request.
pub fn follow(
    policy: &InternalRedirectPolicy,
    status: u16,
    response_headers: &HeaderMap,
    sent: Sent,
    route: usize,
    mut state: RedirectState,
) -> Result<Followed, Passthrough> {
    if !policy.codes.contains(&status) {
        return Err(Passthrough::NotApplicable);
    }
    let Some(body) = state.body.clone() else {
        // The body was too large to keep (or failed): the 3xx goes to the client.
        return Err(Passthrough::NotApplicable);
    };
    let location = response_headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.parse::<Uri>().ok())
        .ok_or(Passthrough::BadLocation)?;
    // Only absolute http(s) URLs are followed.
    let (Some(scheme), Some(authority)) = (location.scheme(), location.authority().cloned()) else {
        return Err(Passthrough::BadLocation);
    };
    let new_https = if *scheme == Scheme::HTTPS {
        true
    } else if *scheme == Scheme::HTTP {
        false
    } else {
        return Err(Passthrough::BadLocation);
    };
    // Strait's downstream is plain HTTP until TLS listeners exist.
    let old_https = false;
    if new_https != old_https && !policy.allow_cross_scheme {
        return Err(Passthrough::UnsafeScheme);
    }
    if state.count >= policy.max_redirects {
        return Err(Passthrough::TooManyRedirects);
    }
    let unsafe_downgrade = old_https && !new_https;
    if unsafe_downgrade
        && policy
            .predicates
            .iter()
            .any(|p| matches!(p, RedirectPredicate::SafeCrossScheme))
    {
        return Err(Passthrough::Predicate);
    }

    let mut headers = sent.headers;
    // The first leg's URL, kept through later legs.
    if state.original_url.is_none() {
        let path = sent.uri.path_and_query().map_or("/", |p| p.as_str());
        let scheme = if old_https { "https" } else { "http" };
        state.original_url =
            HeaderValue::from_str(&format!("{scheme}://{}{path}", sent.authority)).ok();
    }
    for name in policy.response_headers_to_copy.iter() {
        headers.remove(name);
        for v in response_headers.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let mut method = sent.method;
    let mut body = body;
    if status == 303 && method != Method::HEAD {
        // See Other: the next request is a GET without a body.
        method = Method::GET;
        body = BufferedBody::default();
        headers.remove(CONTENT_LENGTH);
        headers.remove(TRANSFER_ENCODING);
    }
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        headers.insert(HOST, host);
    }
    let pq = location
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut req = Request::new(DownstreamBody::from_buffered(&body));
    *req.method_mut() = method;
    *req.uri_mut() = Uri::from(pq);
    *req.headers_mut() = headers;
    state.count += 1;
    state.routes.push(route);
    state.body = Some(body);
    Ok(Followed {
        request: req,
        state,
    })
}

/// The predicates that look at the route the redirect reaches: `previous_routes` (not one
/// this request already went through) and `allow_listed_routes` (its name is listed).
pub fn target_allowed(
    policy: &InternalRedirectPolicy,
    visited: &[usize],
    target: usize,
    target_name: &str,
) -> bool {
    policy.predicates.iter().all(|p| match p {
        RedirectPredicate::PreviousRoutes => !visited.contains(&target),
        RedirectPredicate::AllowListed(names) => names.iter().any(|n| n == target_name),
        RedirectPredicate::SafeCrossScheme => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(predicates: Vec<RedirectPredicate>) -> InternalRedirectPolicy {
        InternalRedirectPolicy {
            max_redirects: 2,
            codes: Box::new([302, 303]),
            allow_cross_scheme: false,
            response_headers_to_copy: Box::new([]),
            predicates: predicates.into(),
        }
    }

    fn sent() -> Sent {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("2"));
        Sent {
            method: Method::POST,
            uri: Uri::from_static("/a?x=1"),
            headers,
            authority: "h.test".into(),
        }
    }

    fn state() -> RedirectState {
        RedirectState {
            body: Some(BufferedBody {
                chunks: vec![bytes::Bytes::from_static(b"hi")],
                trailers: None,
            }),
            ..Default::default()
        }
    }

    fn location(l: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(LOCATION, HeaderValue::from_str(l).unwrap());
        h
    }

    #[test]
    fn passthrough_reasons() {
        let p = policy(vec![]);
        let f = |code, loc: &str, st: RedirectState| {
            follow(&p, code, &location(loc), sent(), 1, st).err()
        };
        assert_eq!(
            f(301, "http://h/b", state()),
            Some(Passthrough::NotApplicable)
        );
        assert_eq!(f(302, "/b", state()), Some(Passthrough::BadLocation));
        assert_eq!(f(302, "ftp://h/b", state()), Some(Passthrough::BadLocation));
        assert_eq!(
            f(302, "https://h/b", state()),
            Some(Passthrough::UnsafeScheme)
        );
        let tired = RedirectState {
            count: 2,
            ..state()
        };
        assert_eq!(
            f(302, "http://h/b", tired),
            Some(Passthrough::TooManyRedirects)
        );
        // No kept body (too large): the 3xx goes to the client.
        let no_body = RedirectState {
            body: None,
            ..state()
        };
        assert_eq!(
            f(302, "http://h/b", no_body),
            Some(Passthrough::NotApplicable)
        );
    }

    #[test]
    fn followed_requests() {
        let p = policy(vec![]);
        let next = follow(
            &p,
            302,
            &location("http://n.test:81/b?y"),
            sent(),
            7,
            state(),
        )
        .unwrap_or_else(|_| panic!("followed"));
        assert_eq!(next.request.method(), Method::POST);
        assert_eq!(next.request.uri(), "/b?y");
        assert_eq!(next.request.headers()[HOST], "n.test:81");
        assert_eq!(next.state.count, 1);
        assert_eq!(next.state.routes, vec![7]);
        assert_eq!(
            next.state
                .original_url
                .as_ref()
                .map(|v| v.to_str().unwrap_or("")),
            Some("http://h.test/a?x=1")
        );
        let see_other = follow(&p, 303, &location("http://h/c"), sent(), 7, state())
            .unwrap_or_else(|_| panic!("followed"));
        assert_eq!(see_other.request.method(), Method::GET);
        assert!(!see_other.request.headers().contains_key(CONTENT_LENGTH));
        assert!(see_other.state.body.is_some_and(|b| b.chunks.is_empty()));
    }

    #[test]
    fn route_predicates() {
        let p = policy(vec![
            RedirectPredicate::PreviousRoutes,
            RedirectPredicate::AllowListed(Box::new(["ok".to_string()])),
        ]);
        assert!(target_allowed(&p, &[1], 2, "ok"));
        assert!(!target_allowed(&p, &[1, 2], 2, "ok"), "route 2 was visited");
        assert!(!target_allowed(&p, &[1], 2, "other"), "not allow-listed");
    }
}
