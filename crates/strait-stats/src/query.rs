//! Envoy admin `/stats` query parameters (`source/server/admin/stats_params.cc`).

use regex::Regex;

/// Envoy's `type=` parameter values (`All` is `None` in [`StatsQuery::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatKind {
    Counters,
    Gauges,
    Histograms,
    /// Accepted like Envoy does; this store has no text readouts, so it renders nothing.
    TextReadouts,
}

/// The filtering part of an admin stats request.
#[derive(Clone, Debug, Default)]
pub struct StatsQuery {
    /// `filter=<re2 regex>`: a stat is shown when the regex matches anywhere in its full
    /// name (RE2 `PartialMatch`; `regex` crate syntax, which covers RE2's).
    pub filter: Option<Regex>,
    /// `usedonly`: hide stats that were never written.
    pub used_only: bool,
    /// `type=Counters|Gauges|Histograms|TextReadouts|All` (`All` → `None`).
    pub kind: Option<StatKind>,
}

/// Decodes `%XX` escapes (like Envoy's `PercentEncoding::decode`; `+` stays `+`).
/// Invalid escapes are kept verbatim; invalid UTF-8 is replaced lossily.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `key[=value]&...` (an optional `path?` prefix and `#fragment` are ignored)
/// into decoded pairs, in order. Keys without `=` get an empty value.
pub fn parse_query_pairs(q: &str) -> Vec<(String, String)> {
    let q = q.split_once('#').map_or(q, |(a, _)| a);
    let q = q.split_once('?').map_or(q, |(_, b)| b);
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// The first value of `key` in a query string (e.g. `format`), decoded.
pub fn query_param(q: &str, key: &str) -> Option<String> {
    parse_query_pairs(q)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

impl StatsQuery {
    /// Parses Envoy's admin stats parameters: `filter`, `usedonly`, `type`. Other
    /// parameters (`format`, `histogram_buckets`, `hidden`, ...) are left to the caller.
    /// When a key repeats, the first occurrence wins (as in Envoy).
    ///
    /// Errors carry Envoy's response bodies: `Invalid re2 regex`,
    /// `invalid &type= param`.
    pub fn from_query_string(q: &str) -> Result<StatsQuery, String> {
        let pairs = parse_query_pairs(q);
        let first = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let used_only = first("usedonly").is_some();
        let filter = match first("filter") {
            Some(f) => Some(Regex::new(f).map_err(|_| "Invalid re2 regex".to_string())?),
            None => None,
        };
        let kind = match first("type") {
            None | Some("All") => None,
            Some("Counters") => Some(StatKind::Counters),
            Some("Gauges") => Some(StatKind::Gauges),
            Some("Histograms") => Some(StatKind::Histograms),
            Some("TextReadouts") => Some(StatKind::TextReadouts),
            Some(_) => return Err("invalid &type= param".to_string()),
        };
        Ok(StatsQuery {
            filter,
            used_only,
            kind,
        })
    }

    /// Whether a stat of `kind` named `name` with the given "used" flag is shown.
    pub(crate) fn shows(&self, kind: StatKind, name: &str, used: bool) -> bool {
        if self.kind.is_some_and(|k| k != kind) {
            return false;
        }
        self.shows_ignoring_kind(name, used)
    }

    /// Envoy's `StatsParams::shouldShowMetric` (no type check; Prometheus uses this).
    pub(crate) fn shows_ignoring_kind(&self, name: &str, used: bool) -> bool {
        if self.used_only && !used {
            return false;
        }
        self.filter.as_ref().is_none_or(|re| re.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_params() {
        let q = StatsQuery::from_query_string("usedonly&filter=cluster%5C.backend&type=Counters")
            .unwrap();
        assert!(q.used_only);
        assert_eq!(q.kind, Some(StatKind::Counters));
        assert_eq!(
            q.filter.as_ref().map(|r| r.as_str()),
            Some(r"cluster\.backend")
        );

        let q = StatsQuery::from_query_string("/stats?format=json&type=All").unwrap();
        assert!(!q.used_only && q.filter.is_none() && q.kind.is_none());

        let q = StatsQuery::from_query_string("").unwrap();
        assert!(!q.used_only && q.filter.is_none() && q.kind.is_none());

        let q = StatsQuery::from_query_string("?usedonly=").unwrap();
        assert!(q.used_only);

        let q = StatsQuery::from_query_string("type=Histograms&type=Gauges").unwrap();
        assert_eq!(q.kind, Some(StatKind::Histograms));

        let q = StatsQuery::from_query_string("filter=a+b").unwrap();
        assert!(q.filter.as_ref().is_some_and(|r| r.is_match("xaaab")));
    }

    #[test]
    fn errors() {
        assert_eq!(
            StatsQuery::from_query_string("filter=(").unwrap_err(),
            "Invalid re2 regex"
        );
        assert_eq!(
            StatsQuery::from_query_string("type=counters").unwrap_err(),
            "invalid &type= param"
        );
        assert_eq!(
            StatsQuery::from_query_string("type=").unwrap_err(),
            "invalid &type= param"
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Eb"), "a.b");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(
            query_param("/stats?format=json&format=text", "format").as_deref(),
            Some("json")
        );
        assert_eq!(query_param("/stats", "format"), None);
    }
}
