//! The error of a value parser: a value a user wrote that does not parse or does not fit.
//!
//! A leaf module (it imports nothing of Sluice), so that parsers anywhere, from `config` to
//! `db`, can return it without depending on [`crate::error`], which depends on them.

/// A value that does not parse or does not fit, as a parser of values reports it: the message
/// names the value and why (`` `2x` is not a duration ``). The parser does not know where the
/// value was written; its caller does, and turns this into the error of that fault:
/// [`crate::error::Error::Config`] at the value's file and line, [`crate::error::Error::Usage`] for a flag,
/// [`crate::error::Error::Source`] for a value read from a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl From<String> for InvalidValue {
    fn from(message: String) -> Self {
        InvalidValue(message)
    }
}

impl From<&str> for InvalidValue {
    fn from(message: &str) -> Self {
        InvalidValue(message.to_string())
    }
}

impl From<InvalidValue> for String {
    fn from(e: InvalidValue) -> Self {
        e.0
    }
}

/// `invalid!("...", args)`: an [`InvalidValue`] with a `format!` message.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        $crate::invalid::InvalidValue(format!($($arg)*))
    };
}
