//! The HTTP connection manager: per request, check the request, pick the virtual host and
//! route, and hand off to the router or answer locally.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use strait_accesslog::{AccessLogSink, Formatter, ResponseFlag};
use strait_config::model::{Codec, HcmSpec, RouteAction, ServerHeader};
use strait_config::route::{RequestView, Route};
use strait_stats::Store;
use strait_upstream::ClusterManager;
use strait_upstream::shadow::DownstreamBody;

use crate::body::ResponseBody;
use crate::conn::ConnInfo;
use crate::finish::Finish;
use crate::local_reply::{local_reply, local_reply_with};
use crate::router;
use crate::stats::{HcmStats, VclusterStats};

/// One HTTP connection manager instance (one per listener filter chain), shared by every
/// connection of that listener on every worker. Immutable.
pub struct HttpConnectionManager {
    pub spec: Arc<HcmSpec>,
    pub stats: HcmStats,
    pub clusters: Arc<ClusterManager>,
    /// Virtual cluster stats per virtual host (see [`crate::stats::vcluster_stats`]).
    pub vclusters: Vec<Box<[Arc<VclusterStats>]>>,
    pub access_logs: Vec<(Arc<AccessLogSink>, Arc<Formatter>)>,
    pub server_name: HeaderValue,
    pub via: Option<HeaderValue>,
    /// The codec settings, built once.
    pub builder: auto::Builder<TokioExecutor>,
}

impl std::fmt::Debug for HttpConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnectionManager")
            .field("stat_prefix", &self.spec.stat_prefix)
            .finish()
    }
}

impl HttpConnectionManager {
    pub fn new(
        spec: Arc<HcmSpec>,
        clusters: Arc<ClusterManager>,
        store: &Store,
    ) -> std::io::Result<Self> {
        let access_logs = open_access_logs(&spec.access_logs)?;
        let server_name = HeaderValue::from_str(&spec.server_name)
            .unwrap_or_else(|_| HeaderValue::from_static("envoy"));
        let via = spec
            .via
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        {
            let mut h1 = builder.http1();
            h1.keep_alive(true)
                .half_close(false)
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                .max_headers(spec.max_headers_count as usize)
                // hyper answers 431 when the header block does not fit this buffer.
                .max_buf_size((spec.max_request_headers_kb as usize * 1024).max(8192));
        }
        {
            let mut h2 = builder.http2();
            h2.timer(TokioTimer::new())
                .max_header_list_size(spec.max_request_headers_kb.saturating_mul(1024))
                .max_concurrent_streams(spec.h2.max_concurrent_streams.unwrap_or(1024))
                .initial_stream_window_size(spec.h2.initial_stream_window_size)
                .initial_connection_window_size(spec.h2.initial_connection_window_size);
            if spec.upgrades.h2_allow_connect {
                // Extended CONNECT (RFC 8441): WebSocket over HTTP/2 streams.
                h2.enable_connect_protocol();
            }
        }
        let builder = match spec.codec {
            Codec::Auto => builder,
            Codec::Http1 => builder.http1_only(),
            Codec::Http2 => builder.http2_only(),
        };
        Ok(HttpConnectionManager {
            stats: HcmStats::new(store, &spec.stat_prefix),
            vclusters: crate::stats::vcluster_stats(store, &spec.routes),
            spec,
            clusters,
            access_logs,
            server_name,
            via,
            builder,
        })
    }

    /// Sets `server` as `server_header_transformation` says.
    pub fn apply_server_header(&self, h: &mut HeaderMap) {
        match self.spec.server_header {
            ServerHeader::Overwrite => {
                h.insert(header::SERVER, self.server_name.clone());
            }
            ServerHeader::AppendIfAbsent => {
                if !h.contains_key(header::SERVER) {
                    h.insert(header::SERVER, self.server_name.clone());
                }
            }
            ServerHeader::PassThrough => {}
        }
    }

    /// Handles one downstream request to completion of its response headers.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Response<ResponseBody> {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, DownstreamBody::new(body));
        // Only a redirect's next leg goes through the boxed (recursive) entry.
        self.handle_stream_inner(req, conn, None).await
    }

    /// One stream: a downstream request, or the request an internal redirect recreated
    /// (`redirect` then carries what the earlier legs did, as Envoy's recreated stream).
    fn handle_stream(
        self: Arc<Self>,
        req: Request<DownstreamBody>,
        conn: Arc<ConnInfo>,
        redirect: Option<router::internal_redirect::RedirectState>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ResponseBody>> + Send>> {
        Box::pin(self.handle_stream_inner(req, conn, redirect))
    }

    async fn handle_stream_inner(
        self: Arc<Self>,
        mut req: Request<DownstreamBody>,
        conn: Arc<ConnInfo>,
        redirect: Option<router::internal_redirect::RedirectState>,
    ) -> Response<ResponseBody> {
        let s = &self.stats;
        s.downstream_rq_total.inc();
        s.downstream_rq_active.inc();
        let protocol = match req.version() {
            Version::HTTP_2 => {
                s.downstream_rq_http2_total.inc();
                "HTTP/2"
            }
            Version::HTTP_10 => {
                s.downstream_rq_http1_total.inc();
                "HTTP/1.0"
            }
            _ => {
                s.downstream_rq_http1_total.inc();
                "HTTP/1.1"
            }
        };
        // An upgrade or CONNECT (an HTTP/2 extended CONNECT becomes its HTTP/1.1 form here).
        let upgrade = router::upgrade::detect(&mut req);
        let mut finish = Finish::new(self.clone(), conn.clone(), protocol);
        finish.is_grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| crate::local_reply::is_grpc_content_type(v.as_bytes()));
        let is_head = req.method() == Method::HEAD;
        if let Some(l) = finish.log.as_mut() {
            l.method = req.method().as_str().to_string();
            // CONNECT has no path (logged as "-").
            let none = if req.method() == Method::CONNECT {
                ""
            } else {
                "/"
            };
            l.path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or(none)
                .to_string();
            l.scheme = "http";
        }

        if req.version() == Version::HTTP_10 && !self.spec.accept_http_10 {
            // Envoy refuses HTTP/1.0 unless `accept_http_10` is set.
            conn.closing
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return local_reply_with(
                &self,
                426,
                Some(Bytes::from_static(b"Upgrade Required")),
                Some(finish),
                "low_version",
                true,
            );
        }
        if conn
            .head_has_cl_and_te
            .load(std::sync::atomic::Ordering::Relaxed)
            && req.headers().contains_key(header::TRANSFER_ENCODING)
        {
            conn.closing
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return local_reply_with(
                &self,
                400,
                Some(Bytes::from_static(b"Bad Request")),
                Some(finish),
                "http1.content_length_and_chunked_not_allowed",
                true,
            );
        }
        let Some(authority) = authority_of(&req, self.spec.default_host_for_http_10.as_deref())
        else {
            conn.closing
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return local_reply_with(&self, 400, None, Some(finish), "missing_host_header", true);
        };
        let version = req.version();
        // A redirect leg carries headers the connection manager already processed.
        if redirect.is_none() {
            router::request::connection_manager_headers(&self, req.headers_mut(), version, &conn);
        }
        if let Some(u) = &upgrade {
            u.restore_headers(req.headers_mut());
        }
        if let Some(l) = finish.log.as_mut() {
            l.authority = authority.clone();
            l.request_headers = req.headers().clone();
        }

        let (selected, route) = self.match_route(&req, &authority);
        // Virtual cluster stats: the first virtual cluster the request matches, else `other`.
        let vcluster = selected.and_then(|i| {
            let vh = self.spec.routes.vhosts.get(i)?;
            let stats = self.vclusters.get(i)?;
            let view = request_view(&req, &authority);
            let k = strait_config::route::vcluster::find(&vh.virtual_clusters, &view)
                .unwrap_or(stats.len().checked_sub(1)?);
            stats.get(k).cloned()
        });
        // Envoy checks an upgrade against the route it matched (no route: 404 below).
        if let (Some(up), Some(route)) = (&upgrade, route)
            && !router::upgrade::allowed(&self, &route.action, up)
        {
            return router::upgrade::refuse(&self, &conn, finish);
        }
        let Some(route) = route else {
            s.no_route.inc();
            finish.flags.insert(ResponseFlag::NoRouteFound);
            if upgrade.is_some() {
                // Envoy closes a connection whose upgrade or CONNECT did not happen.
                return router::upgrade::close_after(
                    local_reply(&self, 404, None, Some(finish), "route_not_found"),
                    &conn,
                );
            }
            return local_reply(&self, 404, None, Some(finish), "route_not_found");
        };
        if let Some(l) = finish.log.as_mut() {
            l.route_name = route.name.clone();
        }
        match &route.action {
            RouteAction::DirectResponse(dr) => {
                // Envoy adds `location` (the request's URL) to 201 and 3xx direct responses.
                let with_location = dr.status == 201 || (300..400).contains(&dr.status);
                let reply = RouteReply {
                    status: dr.status,
                    body: dr.body.clone(),
                    redirect: None,
                    with_location,
                };
                self.route_local_reply(
                    reply,
                    &dr.response_headers,
                    &req,
                    &authority,
                    finish,
                    &route.name,
                    &conn,
                    is_head,
                )
            }
            RouteAction::Redirect(rd) => {
                let reply = RouteReply {
                    status: rd.status,
                    body: None,
                    redirect: Some(rd),
                    with_location: true,
                };
                self.route_local_reply(
                    reply,
                    &rd.response_headers,
                    &req,
                    &authority,
                    finish,
                    &route.name,
                    &conn,
                    is_head,
                )
            }
            RouteAction::Cluster(_) | RouteAction::ClusterHeader(_) | RouteAction::Weighted(_) => {
                s.rq_total.inc();
                // The cluster: named, read from a header (first value), or picked by weight
                // (an entry with `cluster_header` uses that header when the request has it).
                let header_value = |name: &http::HeaderName| -> Option<&str> {
                    req.headers().get(name).and_then(|v| v.to_str().ok())
                };
                let picked: Option<(&strait_config::route::ClusterAction, &str)> =
                    match &route.action {
                        RouteAction::Cluster(a) => Some((a, &a.cluster)),
                        RouteAction::ClusterHeader(ch) => {
                            Some((&ch.action, header_value(&ch.header).unwrap_or("")))
                        }
                        RouteAction::Weighted(w) => w.pick_random().map(|e| {
                            let name = e
                                .cluster_header
                                .as_ref()
                                .and_then(header_value)
                                .unwrap_or(&e.action.cluster);
                            (&e.action, name)
                        }),
                        _ => None,
                    };
                let Some((action, name)) = picked else {
                    return local_reply(&self, 503, None, Some(finish), "cluster_not_found");
                };
                let cluster = if name.is_empty() {
                    None
                } else {
                    self.clusters.get(name).cloned()
                };
                let Some(cluster) = cluster else {
                    s.no_cluster.inc();
                    finish.flags.insert(ResponseFlag::NoClusterFound);
                    let close = router::response::local_reply_closes(&req, &conn);
                    let base = router::response::route_reply_context(
                        &req,
                        &authority,
                        &finish,
                        &route.name,
                        &conn,
                    );
                    let mut resp = local_reply_with(
                        &self,
                        action.cluster_not_found_status,
                        None,
                        Some(finish),
                        "cluster_not_found",
                        close,
                    );
                    router::response::apply_route_headers(
                        &self,
                        &action.response_headers,
                        &mut resp,
                        &base,
                    );
                    return resp;
                };
                let method = req.method().clone();
                let (req, state) = router::request::route_request(
                    &self, req, action, &cluster, &authority, &conn, &finish,
                );
                let mut base = strait_accesslog::LogContext {
                    start_time: finish.start_time,
                    method: Some(method.as_str()),
                    path: state.path.as_deref(),
                    authority: Some(&authority),
                    scheme: Some("http"),
                    request_headers: state.headers.as_ref(),
                    protocol: Some(finish.protocol),
                    route_name: Some(route.name.as_str()).filter(|n| !n.is_empty()),
                    downstream_remote_address: Some(conn.remote),
                    downstream_direct_remote_address: Some(conn.remote),
                    downstream_local_address: Some(conn.local),
                    connection_id: conn.id,
                    ..Default::default()
                };
                let started = finish.start;
                let cluster_name = cluster.name.clone();
                if let Some(vc) = &vcluster {
                    vc.upstream_rq_total.inc();
                }
                finish.vcluster = vcluster;
                let target = router::Target {
                    action,
                    cluster,
                    authority: &authority,
                    route_id: route as *const Route as usize,
                };
                let forwarded = match upgrade {
                    Some(up) => router::Forwarded::Response(
                        router::upgrade::forward(&self, req, target, &conn, finish, up).await,
                    ),
                    None => router::forward(&self, req, target, &conn, finish, redirect).await,
                };
                let mut resp = match forwarded {
                    router::Forwarded::Response(r) => r,
                    router::Forwarded::Redirect(next) => {
                        return self
                            .clone()
                            .handle_stream(next.request, conn.clone(), Some(next.state))
                            .await;
                    }
                };
                base.upstream_cluster = Some(&cluster_name);
                base.duration = Some(started.elapsed());
                // An upstream response carries x-envoy-upstream-service-time (when Envoy
                // headers are on); the router's own replies (503, 504) render status 0.
                if self.spec.suppress_envoy_headers
                    || resp.headers().contains_key("x-envoy-upstream-service-time")
                {
                    base.response_code = resp.status().as_u16();
                }
                router::response::apply_route_headers(
                    &self,
                    &action.response_headers,
                    &mut resp,
                    &base,
                );
                if is_head {
                    resp.body_mut().mark_complete();
                }
                resp
            }
        }
    }
}

/// A reply a route makes itself (`direct_response`, `redirect`).
struct RouteReply<'a> {
    status: u16,
    body: Option<Bytes>,
    redirect: Option<&'a strait_config::route::action::RedirectAction>,
    with_location: bool,
}

impl HttpConnectionManager {
    /// Answers a route-made reply: `location` where Envoy sets it, the route's response
    /// header mutations, `connection: close` when the request body was not read.
    #[allow(clippy::too_many_arguments)]
    fn route_local_reply(
        &self,
        reply: RouteReply<'_>,
        response_headers: &[std::sync::Arc<strait_config::route::headers::HeaderMutation>],
        req: &Request<DownstreamBody>,
        authority: &str,
        finish: Finish,
        route_name: &str,
        conn: &ConnInfo,
        is_head: bool,
    ) -> Response<ResponseBody> {
        self.stats.rq_total.inc();
        self.stats.rq_direct_response.inc();
        let location = reply
            .with_location
            .then(|| {
                router::redirect::location_header(
                    reply.redirect,
                    req,
                    authority,
                    self.spec.use_remote_address,
                )
            })
            .flatten();
        let close = router::response::local_reply_closes(req, conn);
        let base = router::response::route_reply_context(req, authority, &finish, route_name, conn);
        let mut resp = local_reply_with(
            self,
            reply.status,
            reply.body,
            Some(finish),
            "direct_response",
            close,
        );
        if let Some(l) = location {
            resp.headers_mut().insert(header::LOCATION, l);
        }
        router::response::apply_route_headers(self, response_headers, &mut resp, &base);
        if is_head {
            resp.body_mut().mark_complete();
        }
        resp
    }
}

/// Opens (or shares) the sinks of configured access logs.
pub fn open_access_logs(
    specs: &[strait_config::model::AccessLogSpec],
) -> std::io::Result<Vec<(Arc<AccessLogSink>, Arc<Formatter>)>> {
    specs
        .iter()
        .map(|l| {
            let sink = match &l.sink {
                strait_config::model::AccessLogSink::File(p) => AccessLogSink::file(p)?,
                strait_config::model::AccessLogSink::Stdout => AccessLogSink::stdout(),
                strait_config::model::AccessLogSink::Stderr => AccessLogSink::stderr(),
            };
            Ok((sink, l.format.clone()))
        })
        .collect()
}

impl HttpConnectionManager {
    /// Envoy's route selection: the virtual host for the authority (lowercased), then the
    /// first route whose matcher accepts the request. Returns the virtual host's index too.
    fn match_route<B>(&self, req: &Request<B>, authority: &str) -> (Option<usize>, Option<&Route>) {
        let host_lc;
        let host: &str = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            host_lc = authority.to_ascii_lowercase();
            &host_lc
        } else {
            authority
        };
        let table = &self.spec.routes;
        let Some(i) = table.find_vhost_index(host) else {
            return (None, None);
        };
        let route = table
            .vhost_at(i)
            .and_then(|vh| vh.find_route(&request_view(req, authority)));
        (Some(i), route)
    }

    /// The route a request reaches (identity and name), for internal redirects.
    pub(crate) fn route_identity<B>(&self, req: &Request<B>) -> Option<(usize, &str)> {
        let authority = authority_of(req, self.spec.default_host_for_http_10.as_deref())?;
        let route = self.match_route(req, &authority).1?;
        Some((route as *const Route as usize, route.name.as_str()))
    }
}

fn request_view<'a, B>(req: &'a Request<B>, authority: &'a str) -> RequestView<'a> {
    RequestView {
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        method: req.method(),
        headers: req.headers(),
        authority,
        scheme: "http",
    }
}

/// The request's authority: `:authority` (HTTP/2 or absolute-form URI) or `Host`.
fn authority_of<B>(req: &Request<B>, default_http10: Option<&str>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    if let Some(h) = req.headers().get(header::HOST)
        && let Ok(h) = h.to_str()
        && !h.is_empty()
    {
        return Some(h.to_string());
    }
    if req.version() == Version::HTTP_10 {
        return default_http10.map(str::to_string);
    }
    None
}
