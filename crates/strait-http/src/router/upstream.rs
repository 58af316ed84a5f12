//! Sending a request upstream: host choice, the route timeout, and the local replies Envoy
//! sends when no response comes back.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use strait_accesslog::ResponseFlag;
use strait_upstream::{RequestBody, StreamCounters, UpstreamError, UpstreamResponse};

use super::Target;
use crate::body::ResponseBody;
use crate::finish::{Finish, UpstreamInfo};
use crate::hcm::HttpConnectionManager;
use crate::headers::X_REQUEST_ID;
use crate::local_reply::local_reply;

/// A response from the upstream and when the exchange started.
pub struct Exchange {
    pub response: UpstreamResponse,
    pub started: Instant,
}

/// Why there is no upstream response.
pub enum Failure {
    NoHealthyUpstream,
    Upstream(UpstreamError),
    Timeout,
}

pub async fn send(
    _hcm: &HttpConnectionManager,
    target: &Target<'_>,
    parts: Parts,
    body: Incoming,
    finish: &mut Finish,
) -> Result<Exchange, Failure> {
    let cluster = &target.cluster;
    let Some(host) = cluster.choose_host().cloned() else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return Err(Failure::NoHealthyUpstream);
    };
    let body_done = body.is_end_stream();
    let counters = Arc::new(StreamCounters::default());
    if body_done {
        counters.mark_request_done();
    }
    finish.counters = Some(counters.clone());
    let up_body = if body_done {
        RequestBody::Empty
    } else {
        RequestBody::Incoming {
            inner: body,
            counters: counters.clone(),
        }
    };
    let up_req = Request::from_parts(parts, up_body);

    // upstream_rq_total counts once the request is on a connection (the pool does it).
    cluster.stats.upstream_rq_active.inc();
    host.stats.rq_active.inc();
    let started = Instant::now();
    finish.upstream = Some(UpstreamInfo {
        cluster: cluster.clone(),
        host: host.clone(),
        started,
        active: true,
    });

    let send = strait_upstream::send_request(cluster, &host, up_req);
    let result = match target.action.timeouts.route {
        None => Ok(send.await),
        Some(t) => {
            // Envoy's route timeout starts once the downstream request is complete.
            let deadline = async {
                counters.request_done().await;
                tokio::time::sleep(t).await;
            };
            tokio::select! {
                biased;
                r = send => Ok(r),
                _ = deadline => Err(()),
            }
        }
    };
    match result {
        Ok(Ok(response)) => {
            cluster.stats.record_status(response.status().as_u16());
            Ok(Exchange { response, started })
        }
        Ok(Err(e)) => Err(Failure::Upstream(e)),
        Err(()) => {
            cluster.stats.upstream_rq_timeout.inc();
            host.stats.rq_timeout.inc();
            Err(Failure::Timeout)
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
    let (status, body, details): (u16, Bytes, &'static str) = match failure {
        Failure::NoHealthyUpstream => {
            finish.flags.insert(ResponseFlag::NoHealthyUpstream);
            return local_reply(
                hcm,
                503,
                Some(Bytes::from_static(b"no healthy upstream")),
                Some(finish),
                "no_healthy_upstream",
            );
        }
        Failure::Upstream(e) => {
            // Envoy names the transport failure in the body only when the transport socket
            // reported one (TLS handshake errors); a refused TCP connect has none.
            let body = format!(
                "upstream connect error or disconnect/reset before headers. reset reason: {}",
                e.reset_reason()
            );
            match &e {
                UpstreamError::ConnectFailure(_) | UpstreamError::ConnectTimeout => {
                    cluster.stats.upstream_rq_pending_failure_eject.inc();
                    finish.flags.insert(ResponseFlag::UpstreamConnectionFailure);
                }
                UpstreamError::Reset(_) => {
                    cluster.stats.upstream_rq_rx_reset.inc();
                    finish
                        .flags
                        .insert(ResponseFlag::UpstreamConnectionTermination);
                }
            }
            if let Some(l) = finish.log.as_mut() {
                l.upstream_failure = e.transport_failure_reason();
            }
            (
                503,
                Bytes::from(body),
                "upstream_reset_before_response_started",
            )
        }
        Failure::Timeout => {
            finish.flags.insert(ResponseFlag::UpstreamRequestTimeout);
            (
                504,
                Bytes::from_static(b"upstream request timeout"),
                "upstream_response_timeout",
            )
        }
    };
    cluster.stats.record_status(status);
    let mut resp = local_reply(hcm, status, Some(body), Some(finish), details);
    if let Some(id) = request_id {
        resp.headers_mut().insert(&X_REQUEST_ID, id);
    }
    resp
}
