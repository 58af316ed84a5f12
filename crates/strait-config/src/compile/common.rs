//! Small conversions shared by every compile step: durations, addresses, `Any` payloads,
//! data sources.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use envoy_api::pb::envoy::config::core::v3 as core;
use envoy_api::pb::google::protobuf::Any;
use prost::Message;

use crate::error::{ConfigErrors, FieldPath};

pub(crate) fn duration(
    d: &envoy_api::pb::google::protobuf::Duration,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        errs.push(path.to_string(), "duration must not be negative");
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub(crate) fn socket_address(
    a: Option<&core::Address>,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<SocketAddr> {
    use core::address::Address as A;
    let Some(a) = a else {
        errs.push(path.to_string(), "is required");
        return None;
    };
    match &a.address {
        Some(A::SocketAddress(sa)) => {
            let sp = path.field("socket_address");
            if sa.protocol != core::socket_address::Protocol::Tcp as i32 {
                errs.push(
                    sp.field("protocol").to_string(),
                    "only TCP is supported by Strait yet",
                );
                return None;
            }
            let port = match &sa.port_specifier {
                Some(core::socket_address::PortSpecifier::PortValue(p)) => *p,
                Some(_) => {
                    errs.push(
                        sp.field("named_port").to_string(),
                        "is not supported by Strait yet",
                    );
                    return None;
                }
                None => 0,
            };
            let Ok(port) = u16::try_from(port) else {
                errs.push(
                    sp.field("port_value").to_string(),
                    format!("port {port} is above 65535"),
                );
                return None;
            };
            match sa.address.parse::<IpAddr>() {
                Ok(ip) => Some(SocketAddr::new(ip, port)),
                Err(_) => {
                    errs.push(
                        sp.field("address").to_string(),
                        format!(
                            "{:?} is not an IP address (STATIC addresses must be IPs)",
                            sa.address
                        ),
                    );
                    None
                }
            }
        }
        Some(A::Pipe(_)) => {
            errs.push(
                path.field("pipe").to_string(),
                "is not supported by Strait yet",
            );
            None
        }
        Some(A::EnvoyInternalAddress(_)) => {
            errs.push(
                path.field("envoy_internal_address").to_string(),
                "is not supported by Strait yet",
            );
            None
        }
        None => {
            errs.push(path.to_string(), "an address must be set");
            None
        }
    }
}

pub(crate) fn unpack<T: Message + Default>(
    any: &Any,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<T> {
    match T::decode(any.value.as_slice()) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(
                path.to_string(),
                format!("cannot decode {}: {e}", any.type_url),
            );
            None
        }
    }
}

pub(crate) fn type_name(any: &Any) -> &str {
    envoy_api::type_name_of_url(&any.type_url)
}

pub(crate) fn data_source(
    ds: &core::DataSource,
    path: &FieldPath,
    errs: &mut ConfigErrors,
) -> Option<bytes::Bytes> {
    use core::data_source::Specifier as S;
    match &ds.specifier {
        Some(S::InlineString(s)) => Some(bytes::Bytes::from(s.clone())),
        Some(S::InlineBytes(b)) => Some(bytes::Bytes::from(b.clone())),
        Some(S::Filename(f)) => match std::fs::read(f) {
            Ok(b) => Some(bytes::Bytes::from(b)),
            Err(e) => {
                errs.push(
                    path.field("filename").to_string(),
                    format!("cannot read {f:?}: {e}"),
                );
                None
            }
        },
        Some(_) => {
            errs.push(
                path.to_string(),
                "this data source is not supported by Strait yet",
            );
            None
        }
        None => Some(bytes::Bytes::new()),
    }
}
