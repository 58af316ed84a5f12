//! The router filter: rewrite the request Envoy's way, pick a host, send it upstream with
//! the route timeout, and turn the upstream's answer (or failure) into the downstream
//! response.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use strait_accesslog::ResponseFlag;
use strait_config::model::UpstreamProtocol;
use strait_upstream::{Cluster, RequestBody, StreamCounters, UpstreamError};

use crate::body::ResponseBody;
use crate::conn::ConnInfo;
use crate::finish::{Finish, UpstreamInfo};
use crate::hcm::HttpConnectionManager;
use crate::headers::*;
use crate::local_reply::local_reply;

pub struct Target<'a> {
    pub cluster: Arc<Cluster>,
    pub timeout: Option<Duration>,
    pub authority: &'a str,
}

pub async fn forward(
    hcm: &HttpConnectionManager,
    req: Request<Incoming>,
    target: Target<'_>,
    conn: &ConnInfo,
    mut finish: Finish,
) -> Response<ResponseBody> {
    let cluster = target.cluster;
    let Some(host) = cluster.choose_host().cloned() else {
        cluster.stats.upstream_cx_none_healthy.inc();
        finish.flags.insert(ResponseFlag::NoHealthyUpstream);
        return local_reply(
            hcm,
            503,
            Some(Bytes::from_static(b"no healthy upstream")),
            Some(finish),
            "no_healthy_upstream",
        );
    };

    let (mut parts, body) = req.into_parts();
    let spec = &hcm.spec;
    let h = &mut parts.headers;
    strip_hop_by_hop(h);

    // Forwarding headers, as Envoy's connection manager sets them.
    let external = spec.use_remote_address;
    if external {
        set_forwarding_headers(h, conn, spec.xff_num_trusted_hops, spec.skip_xff_append);
    } else if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if spec.generate_request_id
        && (!h.contains_key(&X_REQUEST_ID) || (external && !spec.preserve_external_request_id))
    {
        h.insert(&X_REQUEST_ID, new_request_id());
    }
    let request_id = spec
        .always_set_request_id_in_response
        .then(|| h.get(&X_REQUEST_ID).cloned())
        .flatten();
    if let Some(t) = target.timeout
        && !spec.suppress_envoy_headers
    {
        h.insert(
            &X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
            number_value(t.as_millis() as u64),
        );
    }
    if let Some(via) = &hcm.via {
        h.append(header::VIA, via.clone());
    }
    if let Some(l) = finish.log.as_mut() {
        l.request_headers = h.clone();
    }

    // Protocol conversion: HTTP/1.1 carries the authority in `host`, HTTP/2 in `:authority`.
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match cluster.spec.protocol {
        UpstreamProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            if !h.contains_key(header::HOST)
                && let Ok(v) = HeaderValue::from_str(target.authority)
            {
                h.insert(header::HOST, v);
            }
            parts.uri = Uri::from(path);
        }
        UpstreamProtocol::Http2 => {
            parts.version = Version::HTTP_2;
            h.remove(header::HOST);
            let mut b = Uri::builder()
                .scheme(Scheme::HTTP)
                .path_and_query(path.clone());
            b = b.authority(target.authority);
            parts.uri = b.build().unwrap_or_else(|_| Uri::from(path));
        }
    }

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

    let send = strait_upstream::send_request(&cluster, &host, up_req);
    let result = match target.timeout {
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
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            let status = parts.status.as_u16();
            cluster.stats.record_status(status);
            let h = &mut parts.headers;
            strip_hop_by_hop(h);
            if !spec.suppress_envoy_headers {
                h.insert(
                    &X_ENVOY_UPSTREAM_SERVICE_TIME,
                    number_value(started.elapsed().as_millis() as u64),
                );
            }
            hcm.apply_server_header(h);
            if let Some(via) = &hcm.via {
                h.append(header::VIA, via.clone());
            }
            if let Some(id) = request_id {
                h.insert(&X_REQUEST_ID, id);
            }
            finish.details = "via_upstream";
            finish.on_response_headers(status, &parts.headers);
            // hyper picks the downstream version; the upstream's must not leak through.
            parts.version = Version::HTTP_11;
            Response::from_parts(parts, ResponseBody::upstream(body, finish))
        }
        Ok(Err(e)) => {
            let reason = e.reset_reason();
            let transport = e.transport_failure_reason();
            // Envoy names the transport failure in the body only when the transport socket
            // reported one (TLS handshake errors); a refused TCP connect has none.
            let body = format!(
                "upstream connect error or disconnect/reset before headers. reset reason: {reason}"
            );
            match e {
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
                l.upstream_failure = transport;
            }
            cluster.stats.record_status(503);
            let mut resp = local_reply(
                hcm,
                503,
                Some(Bytes::from(body)),
                Some(finish),
                "upstream_reset_before_response_started",
            );
            if let Some(id) = request_id {
                resp.headers_mut().insert(&X_REQUEST_ID, id);
            }
            resp
        }
        Err(()) => {
            cluster.stats.upstream_rq_timeout.inc();
            host.stats.rq_timeout.inc();
            cluster.stats.record_status(504);
            finish.flags.insert(ResponseFlag::UpstreamRequestTimeout);
            let mut resp = local_reply(
                hcm,
                504,
                Some(Bytes::from_static(b"upstream request timeout")),
                Some(finish),
                "upstream_response_timeout",
            );
            if let Some(id) = request_id {
                resp.headers_mut().insert(&X_REQUEST_ID, id);
            }
            resp
        }
    }
}

/// `use_remote_address: true`: the request comes from outside. Drop the `x-envoy-*`
/// headers a client must not set, append the peer to `x-forwarded-for` (a loopback peer
/// appends this host's own address, as Envoy does), and name the client in
/// `x-envoy-external-address`: the peer itself, or with `xff_num_trusted_hops: N` the Nth
/// address from the right of the incoming `x-forwarded-for`.
fn set_forwarding_headers(
    h: &mut http::HeaderMap,
    conn: &ConnInfo,
    trusted_hops: u32,
    skip_append: bool,
) {
    for name in ENVOY_INTERNAL_REQUEST_HEADERS {
        h.remove(*name);
    }
    let incoming = h
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let peer = conn.remote.ip();
    let client = if trusted_hops == 0 {
        Some(peer)
    } else {
        incoming.as_deref().and_then(|xff| {
            xff.rsplit(',')
                .nth(trusted_hops as usize - 1)
                .and_then(|a| a.trim().parse::<std::net::IpAddr>().ok())
        })
    };
    if !skip_append {
        let appended = if is_local_loopback(peer) {
            local_host_address(peer).unwrap_or(peer)
        } else {
            peer
        };
        let v = match incoming.as_deref() {
            Some(prev) if !prev.is_empty() => format!("{prev},{appended}"),
            _ => appended.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(&X_FORWARDED_FOR, v);
        }
    }
    if let Some(client) = client.filter(|c| !is_local_loopback(*c))
        && let Ok(v) = HeaderValue::from_str(&client.to_string())
    {
        h.insert(&X_ENVOY_EXTERNAL_ADDRESS, v);
    }
    h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

/// `127.0.0.1` or `::1`: Envoy replaces exactly these (not all of 127/8) by the host's
/// own address in `x-forwarded-for`.
fn is_local_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.octets() == [127, 0, 0, 1],
        std::net::IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// This host's first non-loopback address of the same family as `like`, looked up once.
fn local_host_address(like: std::net::IpAddr) -> Option<std::net::IpAddr> {
    use std::sync::OnceLock;
    static V4: OnceLock<Option<std::net::IpAddr>> = OnceLock::new();
    static V6: OnceLock<Option<std::net::IpAddr>> = OnceLock::new();
    let cell = if like.is_ipv4() { &V4 } else { &V6 };
    *cell.get_or_init(|| first_interface_address(like.is_ipv4()))
}

fn first_interface_address(v4: bool) -> Option<std::net::IpAddr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we free below; we only read it.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it states.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let ip = if v4 && family == libc::AF_INET {
            let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            std::net::IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes())
        } else if !v4 && family == libc::AF_INET6 {
            let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            std::net::IpAddr::from(sa.sin6_addr.s6_addr)
        } else {
            continue;
        };
        if !ip.is_loopback() {
            found = Some(ip);
            break;
        }
    }
    // SAFETY: `addrs` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found
}
