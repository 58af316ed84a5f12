//! End-to-end upgrades of the real `strait` binary: WebSocket over HTTP/1.1 and over
//! HTTP/2 extended CONNECT, refused upgrades (403), an upstream that refuses the handshake,
//! terminated CONNECT to a TCP echo, 50 concurrent WebSockets, and the stats and access-log
//! bytes of tunneled streams.
//!
//! The upstreams are written here: a WebSocket echo (RFC 6455 frames by hand, recording each
//! request head it receives) and a TCP echo. The expected answers are what Envoy 1.40 gives
//! for the same bootstrap and traffic (checked by hand against the real binary; see
//! docs/upgrades.md).

#[path = "e2e_common.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const LOG_FORMAT: &str = "%REQ(:METHOD)%|%REQ(:PATH)%|%PROTOCOL%|%RESPONSE_CODE%|%RESPONSE_FLAGS%|%RESPONSE_CODE_DETAILS%|%BYTES_RECEIVED%|%BYTES_SENT%\n";

// ---------------------------------------------------------------------------------------
// WebSocket frames (RFC 6455), just what the tests need
// ---------------------------------------------------------------------------------------

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;

/// One final frame; clients mask (`mask` given), servers do not.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads one frame: (opcode, unmasked payload, bytes on the wire).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>, usize)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await?;
    let mut wire = 2;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b).await?;
        len = u64::from(u16::from_be_bytes(b));
        wire += 2;
    } else if len == 127 {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).await?;
        len = u64::from_be_bytes(b);
        wire += 8;
    }
    let mask = if h[1] & 0x80 != 0 {
        let mut k = [0u8; 4];
        r.read_exact(&mut k).await?;
        wire += 4;
        Some(k)
    } else {
        None
    };
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    wire += payload.len();
    if let Some(k) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Ok((h[0] & 0x0f, payload, wire))
}

/// Reads an HTTP/1.1 head (up to the empty line) from `r`.
async fn read_head<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> std::io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            return Ok(head);
        }
        head.push_str(&line);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

// ---------------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------------

type Heads = Arc<Mutex<Vec<String>>>;

/// A WebSocket echo: answers `101`, echoes text/binary frames unmasked, answers a close
/// with a close, then waits for the peer to close. A path starting with `/refuse` gets a
/// plain `200` with a body instead of the handshake.
async fn ws_upstream() -> (u16, Heads) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let heads: Heads = Arc::default();
    let h = heads.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let _ = ws_session(s, h).await;
            });
        }
    });
    (port, heads)
}

async fn ws_session(s: TcpStream, heads: Heads) -> std::io::Result<()> {
    let mut r = BufReader::new(s);
    let head = read_head(&mut r).await?;
    heads.lock().unwrap().push(head.clone());
    if head.starts_with("GET /refuse") {
        r.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-up: no\r\n\r\nno")
            .await?;
        return Ok(());
    }
    r.get_mut()
        .write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
              sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-up: yes\r\n\r\n",
        )
        .await?;
    loop {
        let (op, payload, _) = read_frame(&mut r).await?;
        r.get_mut().write_all(&frame(op, &payload, None)).await?;
        if op == CLOSE {
            break;
        }
    }
    // The client closes first (a deterministic end for the access log).
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest).await;
    Ok(())
}

/// A TCP echo that prefixes nothing and closes when the peer does.
async fn tcp_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    port
}

// ---------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------

struct Setup {
    rt: tokio::runtime::Runtime,
    dir: TestDir,
    strait: Strait,
    heads: Heads,
    /// The listener without `upgrade_configs`.
    plain: std::net::SocketAddr,
}

fn hcm_mut(listener: &mut Value) -> &mut Value {
    &mut listener["filter_chains"][0]["filters"][0]["typed_config"]
}

/// `main` (upgrades: websocket; h2 allow_connect): CONNECT terminated to the TCP echo,
/// `/off` with websocket disabled on the route, `/` to the WebSocket echo. `plain` (no
/// upgrade_configs): `/on` enables websocket on the route, `/` does not.
fn setup(name: &str) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ws_port, heads) = rt.block_on(ws_upstream());
    let tcp_port = rt.block_on(tcp_echo());
    let dir = TestDir::new(name);
    let (admin, main_port, plain_port) = (port(), port(), port());
    let mut main = listener(
        "main",
        main_port,
        "ingress",
        vec![
            json!({"match": {"connect_matcher": {}}, "route": {"cluster": "tcp",
                "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}),
            json!({"match": {"prefix": "/off"}, "route": {"cluster": "ws",
                "upgrade_configs": [{"upgrade_type": "websocket", "enabled": false}]}}),
            json!({"match": {"prefix": "/"}, "route": {"cluster": "ws", "timeout": "1s"}}),
        ],
        vec![file_log_text(&dir.join("access.log"), LOG_FORMAT)],
    );
    hcm_mut(&mut main)["upgrade_configs"] = json!([{"upgrade_type": "websocket"}]);
    hcm_mut(&mut main)["http2_protocol_options"] = json!({"allow_connect": true});
    let plain = listener(
        "plain",
        plain_port,
        "plain",
        vec![
            json!({"match": {"prefix": "/on"}, "route": {"cluster": "ws",
                "upgrade_configs": [{"upgrade_type": "WebSocket"}]}}),
            route("/", "ws", None),
        ],
        vec![],
    );
    let bs = bootstrap(
        admin,
        vec![main, plain],
        vec![
            cluster("ws", ws_port, false),
            cluster("tcp", tcp_port, false),
        ],
    );
    let strait = Strait::start(&dir, &bs);
    Setup {
        rt,
        dir,
        strait,
        heads,
        plain: strait_testkit::ports::localhost(plain_port),
    }
}

fn handshake(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-custom: a\r\n\
         keep-alive: 5\r\n\r\n"
    )
}

/// Opens a WebSocket through strait; returns the response head and the connection.
async fn open_ws(addr: std::net::SocketAddr, path: &str) -> (String, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(handshake(path).as_bytes())
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut r))
        .await
        .expect("response head in time")
        .expect("response head");
    (head, r)
}

/// Sends `msgs` as masked text frames, one at a time, and checks each echo. Returns the
/// bytes written and read.
async fn echo_messages(r: &mut BufReader<TcpStream>, msgs: &[String]) -> (usize, usize) {
    let (mut sent, mut got) = (0, 0);
    for (i, m) in msgs.iter().enumerate() {
        let f = frame(TEXT, m.as_bytes(), Some([1, 2, 3, i as u8]));
        sent += f.len();
        r.get_mut().write_all(&f).await.unwrap();
        let (op, payload, wire) = tokio::time::timeout(Duration::from_secs(5), read_frame(r))
            .await
            .expect("echo in time")
            .expect("echo frame");
        got += wire;
        assert_eq!(op, TEXT);
        assert_eq!(String::from_utf8_lossy(&payload), *m);
    }
    (sent, got)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn websocket_echo_both_ways_then_close() {
    let s = setup("ws_echo");
    let (sent, got) = s.rt.block_on(async {
        let (head, mut r) = open_ws(s.strait.listen, "/chat?room=1").await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert_eq!(header(&head, "upgrade"), Some("websocket"));
        assert_eq!(header(&head, "connection"), Some("Upgrade"));
        assert_eq!(header(&head, "x-up"), Some("yes"));
        assert_eq!(header(&head, "server"), Some("envoy"));
        // Envoy adds no x-envoy-upstream-service-time to an upgrade response.
        assert_eq!(header(&head, "x-envoy-upstream-service-time"), None);
        let msgs: Vec<String> = (0..5)
            .map(|i| format!("message {i} {}", "x".repeat(i * 50)))
            .collect();
        let (mut sent, mut got) = echo_messages(&mut r, &msgs).await;
        // A large message (16-bit length) crosses in several reads.
        let big = "y".repeat(40_000);
        let (s2, g2) = echo_messages(&mut r, std::slice::from_ref(&big)).await;
        sent += s2;
        got += g2;
        let close = frame(CLOSE, &[0x03, 0xe8], Some([9, 9, 9, 9]));
        sent += close.len();
        r.get_mut().write_all(&close).await.unwrap();
        let (op, payload, wire) = read_frame(&mut r).await.unwrap();
        got += wire;
        assert_eq!((op, payload), (CLOSE, vec![0x03, 0xe8]));
        (sent, got)
    });
    // What the upstream got: the upgrade headers verbatim, the usual forwarding headers,
    // no keep-alive; the route timeout header as for any request.
    let heads = s.heads.lock().unwrap().clone();
    let head = &heads[0];
    assert!(head.starts_with("GET /chat?room=1 HTTP/1.1"), "{head}");
    assert_eq!(header(head, "connection"), Some("Upgrade"));
    assert_eq!(header(head, "upgrade"), Some("websocket"));
    assert_eq!(
        header(head, "sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    assert_eq!(header(head, "sec-websocket-version"), Some("13"));
    assert_eq!(header(head, "x-custom"), Some("a"));
    assert_eq!(header(head, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(head, "x-envoy-expected-rq-timeout-ms"), Some("1000"));
    assert!(header(head, "x-request-id").is_some());
    assert_eq!(header(head, "keep-alive"), None);
    // The access log counts the tunneled bytes; the client closed first (DC).
    let want =
        format!("GET|/chat?room=1|HTTP/1.1|101|DC|downstream_remote_disconnect|{sent}|{got}\n");
    let log = wait_file(&s.dir.join("access.log"), Duration::from_secs(5), |l| {
        l.contains(&want)
    });
    assert!(log.is_some(), "want {want:?}, log: {log:?}");
    assert!(s.strait.wait_stat(
        "http.ingress.downstream_cx_upgrades_active",
        Duration::from_secs(5),
        |v| v == 0
    ));
    assert_eq!(
        s.strait.stat("http.ingress.downstream_cx_upgrades_total"),
        Some(1)
    );
    assert_eq!(s.strait.stat("cluster.ws.upstream_rq_101"), Some(1));
    assert_eq!(s.strait.stat("http.ingress.downstream_rq_1xx"), Some(1));
    // The tunneled bytes are connection bytes too.
    let rx = s
        .strait
        .stat("http.ingress.downstream_cx_rx_bytes_total")
        .unwrap_or(0);
    assert!(rx as usize > sent, "rx {rx} sent {sent}");
}

#[test]
fn refused_upgrades_get_403_like_envoy() {
    let s = setup("ws_refused");
    s.rt.block_on(async {
        // Route disables websocket although the connection manager enables it.
        let (head, mut r) = open_ws(s.strait.listen, "/off").await;
        assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
        assert_eq!(header(&head, "content-length"), Some("0"));
        assert_eq!(header(&head, "connection"), Some("close"));
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), r.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "closed without a body");
        // No upgrade_configs on the connection manager: refused too...
        let (head, _) = open_ws(s.plain, "/").await;
        assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
        // ...unless the route enables it (case-insensitive type).
        let (head, mut r) = open_ws(s.plain, "/on").await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        echo_messages(&mut r, &["hi".to_string()]).await;
    });
    let log = wait_file(&s.dir.join("access.log"), Duration::from_secs(5), |l| {
        !l.is_empty()
    });
    assert_eq!(
        log.as_deref(),
        Some("GET|/off|HTTP/1.1|403|-|upgrade_failed|0|0\n")
    );
    assert_eq!(
        s.strait
            .stat("http.ingress.downstream_rq_ws_on_non_ws_route"),
        Some(1)
    );
    assert_eq!(
        s.strait.stat("http.plain.downstream_rq_ws_on_non_ws_route"),
        Some(1)
    );
    // The refused upgrades never reached the upstream.
    assert_eq!(s.heads.lock().unwrap().len(), 1);
}

#[test]
fn upstream_refusing_the_handshake_gives_its_status_without_body() {
    let s = setup("ws_upstream_refuses");
    s.rt.block_on(async {
        let (head, mut r) = open_ws(s.strait.listen, "/refuse").await;
        // Envoy: the upstream's status and headers, no body, connection: close.
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert_eq!(header(&head, "content-length"), Some("0"));
        assert_eq!(header(&head, "connection"), Some("close"));
        assert_eq!(header(&head, "x-up"), Some("no"));
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), r.read_to_end(&mut rest)).await;
        assert!(rest.is_empty());
    });
    let log = wait_file(&s.dir.join("access.log"), Duration::from_secs(5), |l| {
        !l.is_empty()
    });
    assert_eq!(
        log.as_deref(),
        Some("GET|/refuse|HTTP/1.1|200|-|websocket_handshake_unsuccessful|0|0\n")
    );
}

#[test]
fn connect_is_terminated_to_the_tcp_upstream() {
    let s = setup("ws_connect");
    s.rt.block_on(async {
        let c = TcpStream::connect(s.strait.listen).await.unwrap();
        let mut r = BufReader::new(c);
        r.get_mut()
            .write_all(b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut r).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert_eq!(header(&head, "content-length"), None);
        assert_eq!(header(&head, "transfer-encoding"), None);
        for msg in [
            "ping",
            "a longer line of bytes\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\n",
        ] {
            r.get_mut().write_all(msg.as_bytes()).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            tokio::time::timeout(Duration::from_secs(5), r.read_exact(&mut back))
                .await
                .expect("echo in time")
                .unwrap();
            assert_eq!(back, msg.as_bytes());
        }
    });
    let n = [
        "ping",
        "a longer line of bytes\r\n\r\n",
        "HTTP/1.1 400 Bad Request\r\n",
    ]
    .iter()
    .map(|m| m.len())
    .sum::<usize>();
    let want = format!("CONNECT|-|HTTP/1.1|200|DC|downstream_remote_disconnect|{n}|{n}\n");
    let log = wait_file(&s.dir.join("access.log"), Duration::from_secs(5), |l| {
        l.contains(&want)
    });
    assert!(log.is_some(), "want {want:?}, log: {log:?}");
    assert_eq!(s.strait.stat("cluster.tcp.upstream_cx_total"), Some(1));
    assert!(s.strait.wait_stat(
        "cluster.tcp.upstream_cx_active",
        Duration::from_secs(5),
        |v| v == 0
    ));
}

#[test]
fn fifty_concurrent_websockets_keep_their_own_messages() {
    let s = setup("ws_concurrent");
    let addr = s.strait.listen;
    s.rt.block_on(async move {
        let mut tasks = Vec::new();
        for c in 0..50 {
            tasks.push(tokio::spawn(async move {
                let (head, mut r) = open_ws(addr, &format!("/c/{c}")).await;
                assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
                let msgs: Vec<String> = (0..10).map(|i| format!("conn {c} msg {i}")).collect();
                echo_messages(&mut r, &msgs).await;
            }));
        }
        for t in tasks {
            t.await.expect("every connection echoes its own messages");
        }
    });
    assert_eq!(
        s.strait.stat("http.ingress.downstream_cx_upgrades_total"),
        Some(50)
    );
    assert!(s.strait.wait_stat(
        "http.ingress.downstream_cx_upgrades_active",
        Duration::from_secs(5),
        |v| v == 0
    ));
    assert!(s.strait.wait_stat(
        "cluster.ws.upstream_cx_active",
        Duration::from_secs(5),
        |v| v == 0
    ));
    assert_eq!(s.strait.stat("cluster.ws.upstream_rq_101"), Some(50));
}

#[test]
fn websocket_over_http2_extended_connect() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let s = setup("ws_h2");
    let addr = s.strait.listen;
    s.rt.block_on(async move {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{addr}/h2chat"))
            .header("sec-websocket-version", "13")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let mut resp = tx
            .send_request(req)
            .await
            .expect("extended CONNECT accepted");
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("upgrade").is_none());
        assert_eq!(
            resp.headers().get("x-up").map(|v| v.as_bytes()),
            Some(&b"yes"[..])
        );
        let up = hyper::upgrade::on(&mut resp)
            .await
            .expect("stream upgraded");
        let mut io = TokioIo::new(up);
        for i in 0..3 {
            let m = format!("over h2 {i}");
            io.write_all(&frame(TEXT, m.as_bytes(), Some([7, 7, 7, 7])))
                .await
                .unwrap();
            let (op, payload, _) = read_frame(&mut io).await.unwrap();
            assert_eq!(
                (op, String::from_utf8_lossy(&payload).into_owned()),
                (TEXT, m)
            );
        }
    });
    // Envoy's HTTP/1.1 form upstream: GET with `upgrade` and `connection: upgrade`.
    let head = s.heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /h2chat HTTP/1.1"), "{head}");
    assert_eq!(header(&head, "upgrade"), Some("websocket"));
    assert_eq!(header(&head, "connection"), Some("upgrade"));
    assert_eq!(header(&head, "sec-websocket-version"), Some("13"));
    // Logged with the upstream's status, as Envoy does.
    let log = wait_file(&s.dir.join("access.log"), Duration::from_secs(5), |l| {
        l.starts_with("GET|/h2chat|HTTP/2|101|")
    });
    assert!(log.is_some(), "{log:?}");
}
