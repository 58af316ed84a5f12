//! Envoy-style logging: `-l` levels and spdlog-like `--log-format` patterns.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Envoy's default `--log-format`.
pub const DEFAULT_FORMAT: &str = "[%Y-%m-%d %T.%e][%t][%l][%n] %v";

/// Maps Envoy's level names to a tracing filter; `None` means logging off.
pub fn level_filter(level: &str) -> Result<Option<Level>, String> {
    Ok(Some(match level.to_ascii_lowercase().as_str() {
        "trace" => Level::TRACE,
        "debug" => Level::DEBUG,
        "info" => Level::INFO,
        "warning" | "warn" => Level::WARN,
        "error" | "critical" => Level::ERROR,
        "off" => return Ok(None),
        other => {
            return Err(format!(
                "error: invalid log level {other:?}: use trace, debug, info, warning, error, critical or off"
            ));
        }
    }))
}

/// Renders events with a spdlog pattern: %Y %m %d %H %M %S %T %e %f %l %L %n %t %v %P %%.
pub struct PatternFormat {
    pattern: String,
}

impl PatternFormat {
    pub fn new(pattern: &str) -> Self {
        PatternFormat {
            pattern: pattern.to_string(),
        }
    }
}

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

impl<S, N> FormatEvent<S, N> for PatternFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs();
        let (y, mo, d) = civil(secs / 86_400);
        let rem = secs % 86_400;
        let (h, mi, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        let meta = event.metadata();
        let mut chars = self.pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                w.write_char(c)?;
                continue;
            }
            match chars.next() {
                Some('Y') => write!(w, "{y:04}")?,
                Some('m') => write!(w, "{mo:02}")?,
                Some('d') => write!(w, "{d:02}")?,
                Some('H') => write!(w, "{h:02}")?,
                Some('M') => write!(w, "{mi:02}")?,
                Some('S') => write!(w, "{s:02}")?,
                Some('T') => write!(w, "{h:02}:{mi:02}:{s:02}")?,
                Some('e') => write!(w, "{:03}", now.subsec_millis())?,
                Some('f') => write!(w, "{:06}", now.subsec_micros())?,
                Some('l') => w.write_str(level_name(meta.level()))?,
                Some('L') => w.write_char(
                    level_name(meta.level())
                        .chars()
                        .next()
                        .unwrap_or('?')
                        .to_ascii_uppercase(),
                )?,
                Some('n') => w.write_str(component(meta.target()))?,
                Some('t') => write!(w, "{}", thread_id())?,
                Some('P') => write!(w, "{}", std::process::id())?,
                Some('v') | Some('j') => ctx.field_format().format_fields(w.by_ref(), event)?,
                Some('%') => w.write_char('%')?,
                Some(other) => {
                    w.write_char('%')?;
                    w.write_char(other)?;
                }
                None => w.write_char('%')?,
            }
        }
        writeln!(w)
    }
}

/// `strait_upstream::pool` -> `upstream`, like Envoy's logger names.
fn component(target: &str) -> &str {
    let first = target.split("::").next().unwrap_or(target);
    first.strip_prefix("strait_").unwrap_or(first)
}

fn thread_id() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { gettid() as u64 }
}

unsafe extern "C" {
    fn gettid() -> i32;
}

fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Installs the global subscriber. Log lines go to stderr or `--log-path`.
pub fn init(
    level: Option<Level>,
    format: &str,
    path: Option<&std::path::Path>,
) -> Result<(), String> {
    let Some(level) = level else { return Ok(()) };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .event_format(PatternFormat::new(format));
    match path {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("cannot open --log-path {}: {e}", p.display()))?;
            let f = Mutex::new(f);
            builder
                .with_writer(move || LockedFile(f.lock().ok().and_then(|g| g.try_clone().ok())))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

struct LockedFile(Option<std::fs::File>);

impl Write for LockedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.0 {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_filter("warning"), Ok(Some(Level::WARN)));
        assert_eq!(level_filter("off"), Ok(None));
        assert!(level_filter("loud").is_err());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_779), (2026, 11, 22));
    }

    #[test]
    fn components() {
        assert_eq!(component("strait_upstream::pool"), "upstream");
        assert_eq!(component("hyper"), "hyper");
    }
}
