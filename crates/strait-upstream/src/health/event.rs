//! The health-check event log (`event_log_path`): one JSON `HealthCheckEvent` per line, with
//! Envoy's field order and defaults printed. Written from the control thread only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::session::Event;
use crate::Host;

pub struct EventLog {
    file: Mutex<File>,
    cluster: String,
}

impl EventLog {
    pub fn open(path: &str, cluster: &str) -> Option<EventLog> {
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Some(EventLog {
                file: Mutex::new(f),
                cluster: cluster.to_string(),
            }),
            Err(e) => {
                tracing::warn!(path, error = %e, "cannot open the health check event log");
                None
            }
        }
    }

    pub fn write(&self, checker: &str, host: &Host, e: &Event, http_status: u16) {
        let line = render(
            checker,
            &self.cluster,
            host,
            e,
            http_status,
            SystemTime::now(),
        );
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// One event line (with its `\n`). Fields in proto field-number order, as Envoy prints them.
pub fn render(
    checker: &str,
    cluster: &str,
    host: &Host,
    e: &Event,
    http_status: u16,
    now: SystemTime,
) -> String {
    let addr = host.address;
    let host_json = format!(
        "{{\"socket_address\":{{\"protocol\":\"TCP\",\"address\":\"{}\",\"port_value\":{},\"resolver_name\":\"\",\"ipv4_compat\":false,\"network_namespace_filepath\":\"\"}}}}",
        addr.ip(),
        addr.port()
    );
    let l = &host.locality;
    let locality = format!(
        "{{\"region\":{},\"zone\":{},\"sub_zone\":{}}}",
        json!(l.region),
        json!(l.zone),
        json!(l.sub_zone)
    );
    let mut out = format!(
        "{{\"health_checker_type\":{},\"host\":{},\"cluster_name\":{}",
        json!(checker),
        host_json,
        json!(cluster)
    );
    let ts = format!(",\"timestamp\":\"{}\"", rfc3339_millis(now));
    let (before_ts, after_ts, after_locality) = match e {
        Event::EjectUnhealthy { failure } => (
            format!(
                ",\"eject_unhealthy_event\":{{\"failure_type\":\"{}\",\"http_status_code\":{http_status}}}",
                failure.name()
            ),
            String::new(),
            String::new(),
        ),
        Event::AddHealthy { first_check } => (
            format!(",\"add_healthy_event\":{{\"first_check\":{first_check}}}"),
            String::new(),
            String::new(),
        ),
        Event::Failure {
            failure,
            first_check,
        } => (
            String::new(),
            format!(
                ",\"health_check_failure_event\":{{\"failure_type\":\"{}\",\"first_check\":{first_check},\"http_status_code\":{http_status}}}",
                failure.name()
            ),
            String::new(),
        ),
        Event::Degraded => (
            String::new(),
            ",\"degraded_healthy_host\":{}".into(),
            String::new(),
        ),
        Event::NoLongerDegraded => (
            String::new(),
            ",\"no_longer_degraded_host\":{}".into(),
            String::new(),
        ),
        Event::Success => (
            String::new(),
            String::new(),
            ",\"successful_health_check_event\":{}".into(),
        ),
    };
    out.push_str(&before_ts);
    out.push_str(&ts);
    out.push_str(&after_ts);
    out.push_str(&format!(",\"locality\":{locality}"));
    out.push_str(&after_locality);
    out.push_str("}\n");
    out
}

/// `2026-11-22T03:20:50.197Z`.
fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::FailureType;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_317_650_197);
        assert_eq!(rfc3339_millis(t), "2026-11-22T03:20:50.197Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines_match_envoys_layout() {
        let store = strait_stats::Store::new(1);
        let address = "127.0.0.1:29100".parse().unwrap();
        let e = strait_config::model::EndpointSpec::at(address);
        let h = Host::new(&e, address, &store);
        let t = UNIX_EPOCH + Duration::from_millis(1_795_317_653_209);
        // Lines as Envoy 1.40 wrote them for the same events.
        assert_eq!(
            render(
                "HTTP",
                "c",
                &h,
                &Event::EjectUnhealthy {
                    failure: FailureType::Active
                },
                503,
                t
            ),
            "{\"health_checker_type\":\"HTTP\",\"host\":{\"socket_address\":{\"protocol\":\"TCP\",\"address\":\"127.0.0.1\",\"port_value\":29100,\"resolver_name\":\"\",\"ipv4_compat\":false,\"network_namespace_filepath\":\"\"}},\"cluster_name\":\"c\",\"eject_unhealthy_event\":{\"failure_type\":\"ACTIVE\",\"http_status_code\":503},\"timestamp\":\"2026-11-22T03:20:53.209Z\",\"locality\":{\"region\":\"\",\"zone\":\"\",\"sub_zone\":\"\"}}\n"
        );
        assert_eq!(
            render(
                "HTTP",
                "c",
                &h,
                &Event::Failure {
                    failure: FailureType::NetworkTimeout,
                    first_check: false
                },
                0,
                t
            ),
            "{\"health_checker_type\":\"HTTP\",\"host\":{\"socket_address\":{\"protocol\":\"TCP\",\"address\":\"127.0.0.1\",\"port_value\":29100,\"resolver_name\":\"\",\"ipv4_compat\":false,\"network_namespace_filepath\":\"\"}},\"cluster_name\":\"c\",\"timestamp\":\"2026-11-22T03:20:53.209Z\",\"health_check_failure_event\":{\"failure_type\":\"NETWORK_TIMEOUT\",\"first_check\":false,\"http_status_code\":0},\"locality\":{\"region\":\"\",\"zone\":\"\",\"sub_zone\":\"\"}}\n"
        );
    }
}
