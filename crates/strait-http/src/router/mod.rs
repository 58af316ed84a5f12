//! The router filter, in the order a request meets it:
//! `request` rewrites the request Envoy's way (forwarding headers, request id, protocol
//! form); `upstream` picks a host and sends it with the route's timeouts; `response`
//! turns the upstream's answer into the downstream response. Failures become Envoy's local
//! replies in `upstream`.

pub mod forwarding;
pub mod internal_redirect;
pub mod mirror;
pub mod mutation;
pub mod redirect;
pub mod request;
pub mod response;
pub mod upgrade;
pub mod upstream;

use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use strait_config::route::ClusterAction;
use strait_config::route::hash::{HashInput, HashOutcome};
use strait_upstream::Cluster;
use strait_upstream::shadow::DownstreamBody;

use crate::body::ResponseBody;
use crate::conn::ConnInfo;
use crate::finish::Finish;
use crate::hcm::HttpConnectionManager;
use internal_redirect::{Passthrough, RedirectState};

/// Where a request goes: the matched cluster action and its cluster.
pub struct Target<'a> {
    pub action: &'a ClusterAction,
    pub cluster: Arc<Cluster>,
    /// The downstream authority, as received.
    pub authority: &'a str,
    /// The matched route's identity (for internal redirects' `previous_routes`).
    pub route_id: usize,
}

/// What forwarding produced: a response, or the next leg of an internal redirect.
pub enum Forwarded {
    Response(Response<ResponseBody>),
    Redirect(internal_redirect::Followed),
}

pub async fn forward(
    hcm: &HttpConnectionManager,
    req: Request<DownstreamBody>,
    target: Target<'_>,
    conn: &ConnInfo,
    mut finish: Finish,
    redirect: Option<RedirectState>,
) -> Forwarded {
    let (mut parts, mut body) = req.into_parts();
    let request_id = request::prepare(hcm, &mut parts, &target, conn, &mut finish);
    // A route that follows redirects keeps the whole body (within the connection's buffer
    // limit) so the next leg can send it again.
    let policy = target.action.forward.internal_redirect.as_ref();
    let mut state = redirect.unwrap_or_default();
    state.mark_request(&mut parts.headers);
    let mut sent = None;
    if policy.is_some() {
        state.body = match body.read_all(u64::from(hcm.spec.buffer_limit_bytes)).await {
            Ok(b) => {
                body = DownstreamBody::from_buffered(&b);
                Some(b)
            }
            Err(rest) => {
                body = rest;
                None
            }
        };
        sent = Some(internal_redirect::Sent::of(&parts, target.authority));
    }
    let body_empty = body.is_end_stream();
    if !target.action.forward.mirrors.is_empty() {
        mirror::start(
            hcm,
            target.action,
            &parts,
            &mut body,
            body_empty,
            upstream::random_u64,
        );
    }
    let hashed = request_hash(&target, &parts, conn);
    let lb = upstream::LbInput { hash: hashed.hash };
    let exchange = match upstream::send(hcm, &target, parts, body, lb, &mut finish).await {
        Ok(exchange) => exchange,
        Err(failure) => {
            return Forwarded::Response(upstream::failure_reply(
                hcm, &target, failure, request_id, finish,
            ));
        }
    };
    if let (Some(p), Some(sent)) = (policy, sent) {
        let status = exchange.response.status().as_u16();
        if p.codes.contains(&status) {
            match try_redirect(hcm, p, status, &exchange, sent, &target, state) {
                Ok(next) => {
                    target
                        .cluster
                        .stats
                        .upstream_internal_redirect_succeeded_total
                        .inc();
                    // This leg ends here: logged with the 3xx and `internal_redirect`.
                    finish.status = status;
                    finish.details = "internal_redirect";
                    finish.completed = true;
                    finish.handed_over = true;
                    drop(exchange);
                    drop(finish);
                    return Forwarded::Redirect(next);
                }
                Err(why) => {
                    target
                        .cluster
                        .stats
                        .upstream_internal_redirect_failed_total
                        .inc();
                    let s = &hcm.stats;
                    match why {
                        Passthrough::BadLocation => {
                            s.passthrough_internal_redirect_bad_location.inc()
                        }
                        Passthrough::UnsafeScheme => {
                            s.passthrough_internal_redirect_unsafe_scheme.inc()
                        }
                        Passthrough::TooManyRedirects => {
                            s.passthrough_internal_redirect_too_many_redirects.inc()
                        }
                        Passthrough::Predicate => s.passthrough_internal_redirect_predicate.inc(),
                        Passthrough::NoRoute => s.passthrough_internal_redirect_no_route.inc(),
                        Passthrough::NotApplicable => {}
                    }
                }
            }
        }
    }
    let mut response = response::build(hcm, exchange, request_id, finish);
    if let Some(c) = hashed
        .set_cookie
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response.headers_mut().append(SET_COOKIE, c);
    }
    Forwarded::Response(response)
}

/// Follows a redirect the policy allows, checking the route the new request reaches.
fn try_redirect(
    hcm: &HttpConnectionManager,
    policy: &strait_config::route::forward::InternalRedirectPolicy,
    status: u16,
    exchange: &upstream::Exchange,
    sent: internal_redirect::Sent,
    target: &Target<'_>,
    state: RedirectState,
) -> Result<internal_redirect::Followed, Passthrough> {
    let next = internal_redirect::follow(
        policy,
        status,
        exchange.response.headers(),
        sent,
        target.route_id,
        state,
    )?;
    let Some((id, name)) = hcm.route_identity(&next.request) else {
        return Err(Passthrough::NoRoute);
    };
    if !internal_redirect::target_allowed(policy, &next.state.routes, id, name) {
        return Err(Passthrough::Predicate);
    }
    Ok(next)
}

/// The route's `hash_policy` result, computed only when the cluster balances on a hash
/// (Envoy asks for it from ring hash and Maglev only, so a cookie is generated only then).
fn request_hash(target: &Target<'_>, parts: &http::request::Parts, conn: &ConnInfo) -> HashOutcome {
    let Some(policy) = &target.action.forward.hash else {
        return HashOutcome::default();
    };
    if !target.cluster.spec.lb.policy.uses_hash() {
        return HashOutcome::default();
    }
    let cookie = || {
        strait_config::route::hash::connection_cookie_value(
            &conn.remote.to_string(),
            &conn.local.to_string(),
        )
    };
    policy.evaluate(&HashInput {
        headers: &parts.headers,
        path: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        source_ip: Some(conn.remote.ip()),
        connection_cookie: &cookie,
    })
}
