//! Format-string compilation errors.

/// Why a format string (or `json_format` value) was rejected.
///
/// Messages follow Envoy 1.40's wording where Envoy has one, so an operator porting a config
/// sees the same diagnosis. The config loader is expected to prefix the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// `%NAME%` is not an Envoy command operator.
    #[error("Not supported field in StreamInfo: {0}")]
    UnknownOperator(String),
    /// `%NAME%` is a valid Envoy command operator that Strait does not implement.
    #[error("command operator {0} is not supported by strait")]
    UnsupportedOperator(String),
    /// A `%` that does not start a well-formed `%COMMAND(params):N%` (includes a bad `:N`
    /// truncation length such as `:abc`, `:-1` or a missing closing `%`).
    #[error(
        "Incorrect configuration: {format}. Couldn't find valid command at position {position}"
    )]
    Syntax {
        /// The whole format string.
        format: String,
        /// Byte offset of the offending `%`.
        position: usize,
    },
    /// The operator needs `(…)` parameters, e.g. `%REQ%`.
    #[error("{0} requires parameters")]
    ParamsRequired(String),
    /// The operator takes neither `(…)` nor `:N`, e.g. `%PROTOCOL:3%`.
    #[error("{0} does not take any parameters or length")]
    NoParamsOrLength(String),
    /// The operator takes no `:N`, e.g. `%START_TIME:5%`.
    #[error("{0} does not allow length to be specified.")]
    LengthNotAllowed(String),
    /// `%REQ(a?b?c)%`.
    #[error("More than 1 alternative header specified in token: {0}")]
    TooManyAlternatives(String),
    /// A header name in `REQ`/`RESP`/`TRAILER` that is not a valid header name.
    #[error("Invalid header configuration. Format string contains invalid characters: {0:?}")]
    InvalidHeaderName(String),
    /// An operator parameter outside the allowed set (message as Envoy's).
    #[error("{0}")]
    InvalidParameter(String),
    /// A `START_TIME` format that could produce a newline (`%n`).
    #[error("Invalid header configuration. Format string contains newline.")]
    Newline,
    /// An error inside a `json_format` value, with the JSON key path (e.g. `a.b[2]`).
    #[error("{path}: {source}")]
    InJsonField {
        /// Dotted key path inside the `json_format` object.
        path: String,
        /// The underlying error.
        #[source]
        source: Box<FormatError>,
    },
}

impl FormatError {
    /// The command operator the error is about, when there is one.
    pub fn operator(&self) -> Option<&str> {
        match self {
            FormatError::UnknownOperator(n)
            | FormatError::UnsupportedOperator(n)
            | FormatError::ParamsRequired(n)
            | FormatError::NoParamsOrLength(n)
            | FormatError::LengthNotAllowed(n) => Some(n),
            FormatError::InJsonField { source, .. } => source.operator(),
            _ => None,
        }
    }
}
