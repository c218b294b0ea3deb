//! Canonical models: the versioned, typed shape that every mapping of an entity produces.
//!
//! A model is written in `mappings/canonical/<entity>.toml`:
//!
//! ```toml
//! name = "airport"
//! version = "1.0.0"
//!
//! [fields.faa_code]
//! type = "string"
//! primary_key = true
//! pattern = "^[A-Z0-9]{3,4}$"
//! ```
//!
//! Field types map onto Arrow types as listed in [`FieldType`]. Declared constraints become row
//! rules named `<model>.<field>.<constraint>` (see [`crate::quality`]).

use crate::invalid;
use crate::invalid::InvalidValue;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;

/// The time zone every canonical timestamp is stored in.
pub const UTC: &str = "UTC";

/// A canonical field type.
///
/// | TOML            | Arrow                              | Parquet logical type        |
/// |-----------------|------------------------------------|-----------------------------|
/// | `string`        | `Utf8`                             | STRING                      |
/// | `int32`         | `Int32`                            | INT(32, signed)             |
/// | `int64`         | `Int64`                            | INT(64, signed)             |
/// | `float64`       | `Float64`                          | DOUBLE                      |
/// | `decimal(p,s)`  | `Decimal128(p, s)`, 1 ≤ p ≤ 38     | DECIMAL(p, s)               |
/// | `boolean`       | `Boolean`                          | BOOLEAN                     |
/// | `date`          | `Date32` (days since 1970-01-01)   | DATE                        |
/// | `timestamp`     | `Timestamp(Microsecond, "UTC")`    | TIMESTAMP(isAdjustedToUTC)  |
/// | `time`          | `Time64(Microsecond)`              | TIME(MICROS)                |
///
/// `timestamp` is a timestamp *with* time zone: an instant, stored in UTC. `timestamptz` is
/// accepted as a synonym.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// IEEE 754 double.
    Float64,
    /// Exact decimal with `precision` total digits, `scale` of them after the point.
    Decimal {
        /// Total number of digits, 1..=38.
        precision: u8,
        /// Digits after the decimal point, 0..=precision.
        scale: i8,
    },
    /// true / false.
    Boolean,
    /// Calendar date without time zone.
    Date,
    /// An instant, stored as microseconds since the Unix epoch in UTC.
    Timestamp,
    /// Time of day without date or zone, microsecond precision.
    Time,
}

/// The names accepted in `type = "..."`, for error hints.
pub const TYPE_NAMES: &[&str] = &[
    "string",
    "int32",
    "int64",
    "float64",
    "decimal(p,s)",
    "boolean",
    "date",
    "timestamp",
    "time",
];

impl FieldType {
    /// Parses a TOML type name such as `int64` or `decimal(10, 2)`.
    ///
    /// # Errors
    /// A message saying what is wrong (unknown name, precision out of 1..=38, scale > precision).
    pub fn parse(s: &str) -> std::result::Result<FieldType, InvalidValue> {
        let t = s.trim().to_ascii_lowercase();
        let simple = match t.as_str() {
            "string" => Some(FieldType::String),
            "int32" => Some(FieldType::Int32),
            "int64" => Some(FieldType::Int64),
            "float64" => Some(FieldType::Float64),
            "boolean" => Some(FieldType::Boolean),
            "date" => Some(FieldType::Date),
            "timestamp" | "timestamptz" => Some(FieldType::Timestamp),
            "time" => Some(FieldType::Time),
            _ => None,
        };
        if let Some(ft) = simple {
            return Ok(ft);
        }
        if let Some(args) = t
            .strip_prefix("decimal")
            .map(str::trim)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
        {
            let parts: Vec<&str> = args.split(',').map(str::trim).collect();
            let (p, s) = match parts.as_slice() {
                [p, s] => (p.parse::<u8>(), s.parse::<i8>()),
                [p] => (p.parse::<u8>(), Ok(0)),
                _ => return Err(invalid!("`{s}` is not `decimal(precision, scale)`")),
            };
            let (Ok(precision), Ok(scale)) = (p, s) else {
                return Err(invalid!("`{t}`: precision and scale must be whole numbers"));
            };
            if !(1..=38).contains(&precision) {
                return Err(invalid!("`{t}`: precision must be between 1 and 38"));
            }
            if scale < 0 || scale as u8 > precision {
                return Err(invalid!("`{t}`: scale must be between 0 and the precision"));
            }
            return Ok(FieldType::Decimal { precision, scale });
        }
        Err(invalid!("unknown type `{s}`"))
    }

    /// The Arrow type values of this field have.
    pub fn to_arrow(&self) -> DataType {
        match self {
            FieldType::String => DataType::Utf8,
            FieldType::Int32 => DataType::Int32,
            FieldType::Int64 => DataType::Int64,
            FieldType::Float64 => DataType::Float64,
            FieldType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            FieldType::Boolean => DataType::Boolean,
            FieldType::Date => DataType::Date32,
            FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            FieldType::Time => DataType::Time64(TimeUnit::Microsecond),
        }
    }

    /// True for types that `min`/`max` apply to.
    pub fn is_ordered(&self) -> bool {
        !matches!(self, FieldType::Boolean)
    }

    /// True for numeric types.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            FieldType::Int32 | FieldType::Int64 | FieldType::Float64 | FieldType::Decimal { .. }
        )
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::String => f.write_str("string"),
            FieldType::Int32 => f.write_str("int32"),
            FieldType::Int64 => f.write_str("int64"),
            FieldType::Float64 => f.write_str("float64"),
            FieldType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            FieldType::Boolean => f.write_str("boolean"),
            FieldType::Date => f.write_str("date"),
            FieldType::Timestamp => f.write_str("timestamp"),
            FieldType::Time => f.write_str("time"),
        }
    }
}

/// A literal written in a model (`min`, `max`, `enum`): kept as written; typed when compiled
/// against the field's type.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// `true` / `false`.
    Bool(bool),
    /// A TOML integer.
    Int(i64),
    /// A TOML float.
    Float(f64),
    /// A TOML string: text, or a date/timestamp/time/decimal in its ISO 8601 / decimal form.
    Str(String),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Str(s) => write!(f, "'{s}'"),
        }
    }
}

/// Semantic version `MAJOR.MINOR.PATCH` (<https://semver.org>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Breaking changes bump this.
    pub major: u64,
    /// Additive changes bump this.
    pub minor: u64,
    /// Fixes that change no shape bump this.
    pub patch: u64,
}

impl Version {
    /// Parses `MAJOR.MINOR.PATCH` (three non-negative integers, no pre-release suffix).
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.split('.').map(|p| {
            if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
                None
            } else {
                p.parse::<u64>().ok()
            }
        });
        let v = Version {
            major: it.next()??,
            minor: it.next()??,
            patch: it.next()??,
        };
        it.next().is_none().then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// One field of a canonical model, validated.
#[derive(Debug, Clone)]
pub struct Field {
    /// Column name in the output (snake_case identifier).
    pub name: String,
    /// Declared type.
    pub data_type: FieldType,
    /// Null is a row failure (`<model>.<field>.required`). True for primary-key fields.
    pub required: bool,
    /// Part of the model's primary key (in field order).
    pub primary_key: bool,
    /// Accepted values (`enum`), if declared.
    pub allowed: Option<Vec<Literal>>,
    /// Inclusive lower bound.
    pub min: Option<Literal>,
    /// Inclusive upper bound.
    pub max: Option<Literal>,
    /// Regular expression (Rust `regex` syntax) the whole value must match somewhere in;
    /// anchor it with `^…$` to match the whole value.
    pub pattern: Option<String>,
    /// Largest length in characters (Unicode scalar values).
    pub max_length: Option<u32>,
    /// Values that mean "missing" and become null before casting and checking.
    pub missing_values: Vec<String>,
    /// Free text for readers of the model.
    pub description: Option<String>,
}

/// A validated canonical model.
#[derive(Debug, Clone)]
pub struct CanonicalModel {
    /// Entity name (`flight`).
    pub name: String,
    /// Semantic version of the model.
    pub version: Version,
    /// Free text.
    pub description: Option<String>,
    /// Fields in declaration order; this is the column order of every target.
    pub fields: Vec<Field>,
    /// File the model was read from.
    pub file: std::path::PathBuf,
}

impl CanonicalModel {
    /// Arrow schema of the canonical rows: one column per field, nullable unless required.
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields
                .iter()
                .map(|f| ArrowField::new(&f.name, f.data_type.to_arrow(), !f.required))
                .collect::<Vec<_>>(),
        ))
    }

    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Names of the primary-key fields, in declaration order.
    pub fn primary_key(&self) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|f| f.primary_key)
            .map(|f| f.name.as_str())
            .collect()
    }
}

/// `12.500` → `12.5`, `100` → `100`, `-0.0` → `-0`: a decimal's text without trailing zeros
/// after the point, for comparing a literal with its parsed value.
fn normalize_decimal(s: &str) -> String {
    let s = s.trim();
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Converts a model literal (`min`, `max`, `enum` value) into a value of the field's type.
///
/// # Errors
/// A message when the literal cannot be a value of `ty` (`'abc'` for an int32 `min`, say).
pub fn literal_for(l: &Literal, ty: FieldType) -> std::result::Result<ScalarValue, InvalidValue> {
    let target = ty.to_arrow();
    let text = match (l, ty) {
        (Literal::Bool(b), FieldType::Boolean) => return Ok(ScalarValue::Boolean(Some(*b))),
        (Literal::Bool(_), _) | (_, FieldType::Boolean) => {
            return Err(invalid!("{l} is not a {ty} value"))
        }
        (Literal::Int(i), _) if ty.is_numeric() => i.to_string(),
        (Literal::Float(x), FieldType::Float64 | FieldType::Decimal { .. }) => x.to_string(),
        (Literal::Str(s), FieldType::String) => return Ok(ScalarValue::Utf8(Some(s.clone()))),
        (Literal::Str(s), _) if !ty.is_numeric() => s.clone(),
        (Literal::Str(s), FieldType::Decimal { .. }) => s.clone(),
        _ => return Err(invalid!("{l} is not a {ty} value")),
    };
    let v = ScalarValue::try_from_string(text.clone(), &target)
        .map_err(|_| invalid!("{l} is not a {ty} value"))?;
    if v.is_null() {
        return Err(invalid!("{l} is not a {ty} value"));
    }
    // A decimal literal with more digits than the type allows casts lossily; refuse it.
    if let (ScalarValue::Decimal128(..), Literal::Str(_) | Literal::Float(_)) = (&v, l) {
        if normalize_decimal(&v.to_string()) != normalize_decimal(&text) {
            return Err(invalid!("{l} does not fit {ty} exactly"));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_must_fit_the_field_type() {
        assert_eq!(
            literal_for(&Literal::Int(5), FieldType::Int32),
            Ok(ScalarValue::Int32(Some(5)))
        );
        assert!(literal_for(&Literal::Str("x".into()), FieldType::Int32).is_err());
        assert!(literal_for(&Literal::Int(5_000_000_000), FieldType::Int32).is_err());
        assert!(literal_for(&Literal::Str("2013-02-30".into()), FieldType::Date).is_err());
        assert!(literal_for(&Literal::Str("2013-02-28".into()), FieldType::Date).is_ok());
        assert!(literal_for(
            &Literal::Str("1.234".into()),
            FieldType::Decimal {
                precision: 5,
                scale: 2
            }
        )
        .is_err());
        assert!(literal_for(
            &Literal::Str("1.23".into()),
            FieldType::Decimal {
                precision: 5,
                scale: 2
            }
        )
        .is_ok());
    }

    #[test]
    fn parses_every_documented_type() {
        for (s, t) in [
            ("string", DataType::Utf8),
            ("int32", DataType::Int32),
            ("int64", DataType::Int64),
            ("float64", DataType::Float64),
            ("decimal(10, 2)", DataType::Decimal128(10, 2)),
            ("boolean", DataType::Boolean),
            ("date", DataType::Date32),
            (
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
            ("time", DataType::Time64(TimeUnit::Microsecond)),
        ] {
            assert_eq!(FieldType::parse(s).map(|f| f.to_arrow()), Ok(t), "{s}");
        }
    }

    #[test]
    fn rejects_bad_types() {
        assert!(FieldType::parse("strng").is_err());
        assert!(FieldType::parse("decimal(40,2)").is_err());
        assert!(FieldType::parse("decimal(5,6)").is_err());
        assert!(FieldType::parse("decimal(a,b)").is_err());
    }

    #[test]
    fn versions_are_semver_triples() {
        assert_eq!(
            Version::parse("1.2.3"),
            Some(Version {
                major: 1,
                minor: 2,
                patch: 3
            })
        );
        for bad in ["1.2", "1.2.3.4", "01.2.3", "1.x.3", "", "1.2.3-rc1"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }
}
