//! Why a filter, `sortby`, `properties` or `property=value` parameter was refused.
//! Every error names the query parameter it came from, so the API answers 400 with it.

/// A refused query parameter: which one, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("parameter '{parameter}': {problem}")]
pub struct FilterError {
    /// The query parameter (`filter`, `filter-lang`, `sortby`, `properties`, or the
    /// property name of a `property=value` parameter).
    pub parameter: String,
    pub problem: Problem,
}

impl FilterError {
    pub fn new(parameter: impl Into<String>, problem: Problem) -> FilterError {
        FilterError {
            parameter: parameter.into(),
            problem,
        }
    }
}

/// What is wrong. `at` fields quote the offending part of the expression, rendered back
/// as CQL2 text.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error(
        "CQL2 text does not parse at line {line}, column {column} (character {offset}): {expected}"
    )]
    TextSyntax {
        line: usize,
        column: usize,
        /// Characters before the error, from 0.
        offset: usize,
        expected: String,
    },
    #[error("CQL2 text does not parse: {message}")]
    TextInvalid { message: String },
    #[error("CQL2 JSON does not parse at line {line}, column {column}: {message}")]
    JsonSyntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("CQL2 JSON at {pointer} is not a CQL2 expression: {message}")]
    JsonShape { pointer: String, message: String },
    #[error("unknown property '{name}'; queryables are: {queryables}")]
    UnknownProperty { name: String, queryables: String },
    #[error("property '{property}' is {expected}, but is compared with {found} in `{at}`")]
    TypeMismatch {
        property: String,
        expected: &'static str,
        found: String,
        at: String,
    },
    #[error("{what} is not supported, in `{at}`{hint}")]
    Unsupported {
        what: String,
        at: String,
        /// Empty, or a sentence starting with "; ".
        hint: String,
    },
    #[error("{message}, in `{at}`")]
    Invalid { message: String, at: String },
    #[error("filter too large: {what}")]
    TooLarge { what: String },
    #[error(
        "unknown filter language '{value}'; accepted: cql2-text, cql-text, cql2-json, cql-json"
    )]
    UnknownLanguage { value: String },
    #[error("{message}")]
    BadValue { message: String },
}
