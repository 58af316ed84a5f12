//! Route header mutations (`request_headers_to_add`, `response_headers_to_remove`, ...)
//! applied the way Envoy's `HeaderParser::evaluateHeaders` does, level by level:
//!
//! 1. the level's removals;
//! 2. every addition's value and condition evaluated against the headers as they are now
//!    (formats see this level's removals but none of its additions);
//! 3. overwrites (`OVERWRITE_IF_EXISTS_OR_ADD`, `OVERWRITE_IF_EXISTS` when present), then
//!    appends (`APPEND_IF_EXISTS_OR_ADD`, `ADD_IF_ABSENT` when absent).
//!
//! Empty values are skipped unless `keep_empty_value`. Constant values are shared
//! `HeaderValue`s (no allocation); only formats render.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use strait_accesslog::LogContext;
use strait_config::route::headers::{AppendAction, HeaderMutation, HeaderSource, HeaderToAdd};

/// Which header map a chain mutates (and so which side of the format context it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Applies `chain` in order to `h`. `base` carries what formats may read besides `h` (for
/// the response side it should carry the request headers when formats read them).
pub fn apply_chain(
    chain: &[Arc<HeaderMutation>],
    h: &mut HeaderMap,
    base: &LogContext<'_>,
    side: Side,
) {
    for level in chain {
        apply_level(level, h, base, side);
    }
}

/// Levels with at most this many additions decide without allocating.
const INLINE: usize = 32;

pub fn apply_level(level: &HeaderMutation, h: &mut HeaderMap, base: &LogContext<'_>, side: Side) {
    for name in level.remove.iter() {
        h.remove(name);
    }
    let adds = &level.add[..];
    if adds.is_empty() {
        return;
    }
    // Conditions and formats see the headers after the removals, before any addition.
    let mut present_inline = [false; INLINE];
    let mut present_heap = Vec::new();
    let present: &mut [bool] = if adds.len() <= INLINE {
        &mut present_inline[..adds.len()]
    } else {
        present_heap.resize(adds.len(), false);
        &mut present_heap
    };
    for (p, a) in present.iter_mut().zip(adds) {
        *p = h.contains_key(&a.name);
    }
    let rendered: Option<Vec<Option<HeaderValue>>> = level.has_format.then(|| {
        let mut ctx = *base;
        match side {
            Side::Request => ctx.request_headers = Some(&*h),
            Side::Response => ctx.response_headers = Some(&*h),
        }
        adds.iter().map(|a| render(a, &ctx)).collect()
    });
    let value = |i: usize, a: &HeaderToAdd| -> Option<HeaderValue> {
        match (&rendered, &a.value) {
            (Some(r), _) => r.get(i).cloned().flatten(),
            (None, HeaderSource::Static(v)) => Some(v.clone()),
            (None, HeaderSource::Format(_)) => None,
        }
    };
    for (i, a) in adds.iter().enumerate() {
        let overwrite = match a.action {
            AppendAction::OverwriteIfExistsOrAdd => true,
            AppendAction::OverwriteIfExists => present[i],
            _ => false,
        };
        if overwrite && let Some(v) = value(i, a) {
            h.insert(a.name.clone(), v);
        }
    }
    for (i, a) in adds.iter().enumerate() {
        let append = match a.action {
            AppendAction::AppendIfExistsOrAdd => true,
            AppendAction::AddIfAbsent => !present[i],
            _ => false,
        };
        if append && let Some(v) = value(i, a) {
            h.append(a.name.clone(), v);
        }
    }
}

/// One addition's value now; `None` when it is not added (empty without
/// `keep_empty_value`, or not a valid header value).
fn render(a: &HeaderToAdd, ctx: &LogContext<'_>) -> Option<HeaderValue> {
    let v = match &a.value {
        HeaderSource::Static(v) => v.clone(),
        HeaderSource::Format(f) => {
            let mut out = Vec::with_capacity(64);
            f.render(ctx, &mut out);
            HeaderValue::from_maybe_shared(Bytes::from(out)).ok()?
        }
    };
    (a.keep_empty || !v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;
    use strait_accesslog::Formatter;

    fn add(name: &str, value: &str, action: AppendAction) -> HeaderToAdd {
        let value = if value.contains('%') {
            HeaderSource::Format(
                Formatter::parse_text(value)
                    .expect("format")
                    .with_omit_empty_values(true),
            )
        } else {
            HeaderSource::Static(HeaderValue::from_str(value).expect("value"))
        };
        HeaderToAdd {
            name: HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value,
            action,
            keep_empty: false,
        }
    }

    fn level(remove: &[&str], add: Vec<HeaderToAdd>) -> HeaderMutation {
        HeaderMutation {
            remove: remove
                .iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).expect("name"))
                .collect(),
            has_format: add
                .iter()
                .any(|a| matches!(a.value, HeaderSource::Format(_))),
            reads_request: true,
            add: add.into_boxed_slice(),
        }
    }

    fn values(h: &HeaderMap, n: &str) -> Vec<String> {
        h.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .collect()
    }

    #[test]
    fn actions_decide_on_the_headers_before_the_level() {
        use AppendAction::*;
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("client"));
        h.insert("x-absent", HeaderValue::from_static("client"));
        h.insert("x-ifexists", HeaderValue::from_static("client"));
        h.insert("x-gone", HeaderValue::from_static("client"));
        let l = level(
            &["x-gone"],
            vec![
                add("x-a", "1", AppendIfExistsOrAdd),
                add("x-absent", "added", AddIfAbsent),
                add("x-new", "added", AddIfAbsent),
                add("x-new", "twice", AddIfAbsent),
                add("x-ifexists", "replaced", OverwriteIfExists),
                add("x-ifexists2", "replaced", OverwriteIfExists),
                add("x-over", "o", OverwriteIfExistsOrAdd),
                add("x-gone", "back", OverwriteIfExists),
            ],
        );
        apply_level(&l, &mut h, &LogContext::default(), Side::Request);
        assert_eq!(values(&h, "x-a"), ["client", "1"]);
        assert_eq!(values(&h, "x-absent"), ["client"]);
        assert_eq!(values(&h, "x-new"), ["added", "twice"]);
        assert_eq!(values(&h, "x-ifexists"), ["replaced"]);
        assert!(values(&h, "x-ifexists2").is_empty());
        assert_eq!(values(&h, "x-over"), ["o"]);
        // Removed by this level: OVERWRITE_IF_EXISTS no longer sees it.
        assert!(values(&h, "x-gone").is_empty());
    }

    #[test]
    fn formats_read_the_headers_after_removal_and_skip_empty() {
        use AppendAction::*;
        let mut h = HeaderMap::new();
        h.insert("x-in", HeaderValue::from_static("IN"));
        h.insert("x-level", HeaderValue::from_static("client"));
        let mut keep = add("x-keep", "%REQ(x-missing)%", AppendIfExistsOrAdd);
        keep.keep_empty = true;
        let l = level(
            &["x-level"],
            vec![
                add("x-level", "route", AppendIfExistsOrAdd),
                add("x-seen", "%REQ(x-level)%", AppendIfExistsOrAdd),
                add(
                    "x-fmt",
                    "[%REQ(x-in)%] [%REQ(x-missing)%] %%",
                    AppendIfExistsOrAdd,
                ),
                add("x-skip", "%REQ(x-missing)%", AppendIfExistsOrAdd),
                keep,
            ],
        );
        apply_level(&l, &mut h, &LogContext::default(), Side::Request);
        assert_eq!(values(&h, "x-level"), ["route"]);
        assert!(values(&h, "x-seen").is_empty());
        assert_eq!(values(&h, "x-fmt"), ["[IN] [] %"]);
        assert!(!h.contains_key("x-skip"));
        assert_eq!(values(&h, "x-keep"), [""]);
    }
}
