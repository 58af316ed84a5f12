//! Envoy-compatible access logging for Strait: format strings and non-blocking sinks.
//!
//! # What this crate owns
//!
//! * **Format compilation** — [`Formatter::parse_text`] for Envoy's `text_format_source` /
//!   `text_format` / legacy `format` strings, [`Formatter::parse_json`] for `json_format`,
//!   [`Formatter::envoy_default`] for Envoy's default line. Unknown or malformed command
//!   operators are [`FormatError`]s with Envoy's wording; formats are parsed once.
//! * **Rendering** — [`Formatter::render`] appends one line to a caller-provided buffer
//!   from a [`LogContext`], with Envoy 1.40's output for every supported operator (`-` /
//!   `null` for missing values, `:N` truncation, `%%`, typed JSON values, sorted JSON keys).
//!   Rendering does no parsing and allocates nothing in the common case.
//! * **Response flags** — [`ResponseFlag`] / [`ResponseFlags`], Envoy 1.40's full table with
//!   short and long spellings.
//! * **Sinks** — [`AccessLogSink`]: per-path shared, buffered, flushed by one background
//!   thread, bounded (drops and counts), [`flush_all`] for shutdown, [`reopen_all`] for log
//!   rotation.
//!
//! # What it does not own
//!
//! * Reading Envoy config protos (`AccessLog`, `FileAccessLog`, `SubstitutionFormatString`)
//!   and turning them into a formatter + sink: that is config loading, which should call
//!   [`Formatter::parse_text`] / [`Formatter::parse_json`] and prefix errors with the field
//!   path.
//! * Access-log *filters* (`status_code_filter`, `response_flag_filter`, runtime sampling…),
//!   gRPC / OpenTelemetry / stdout-`typed_config` access loggers, and deciding *when* to log
//!   (the proxy fills a [`LogContext`] at stream end).
//! * Signal handling: the binary calls [`reopen_all`] on SIGUSR1 and [`flush_all`] on exit.
//! * Operators needing state Strait does not model yet (metadata, filter state, TLS details,
//!   CEL, …): they compile to [`FormatError::UnsupportedOperator`] so a config that uses them
//!   fails loudly instead of logging wrong data.
//!
//! # Example
//!
//! ```
//! use strait_accesslog::{Formatter, LogContext};
//!
//! let f = Formatter::parse_text("%REQ(:METHOD)% %RESPONSE_CODE% %REQ(X-MISSING)%\n")?;
//! let ctx = LogContext { method: Some("GET"), response_code: 200, ..Default::default() };
//! let mut line = Vec::new();
//! f.render(&ctx, &mut line);
//! assert_eq!(line, b"GET 200 -\n");
//! # Ok::<(), strait_accesslog::FormatError>(())
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod context;
mod error;
mod flags;
mod format;
mod json;
mod operators;
mod sink;
mod time;
mod uuid;

pub use context::{LogContext, protocol_str};
pub use error::FormatError;
pub use flags::{ResponseFlag, ResponseFlags};
pub use format::{ENVOY_DEFAULT_FORMAT, Formatter};
pub use sink::{
    AccessLogSink, DEFAULT_FLUSH_INTERVAL, DEFAULT_FLUSH_THRESHOLD, DEFAULT_MAX_BUFFER_BYTES,
    SinkOptions, flush_all, reopen_all, set_flush_interval,
};
