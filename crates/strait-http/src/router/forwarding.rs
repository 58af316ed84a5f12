//! Envoy's forwarding headers: `x-forwarded-for`, `x-forwarded-proto`,
//! `x-envoy-external-address`, and the `x-envoy-*` headers an external client may not set.

use http::header::HeaderValue;

use crate::conn::ConnInfo;
use crate::headers::*;

/// `use_remote_address: true`: the request comes from outside. Drop the `x-envoy-*`
/// headers a client must not set, append the peer to `x-forwarded-for` (a loopback peer
/// appends this host's own address, as Envoy does), and name the client in
/// `x-envoy-external-address`: the peer itself, or with `xff_num_trusted_hops: N` the Nth
/// address from the right of the incoming `x-forwarded-for`.
pub fn set_forwarding_headers(
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
