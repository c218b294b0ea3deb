//! SQL functions Sluice adds to DataFusion's built-ins, for mapping expressions.
//!
//! | function | returns | semantics from |
//! |---|---|---|
//! | `make_timestamp(year, month, day, hour, minute, second)` | timestamp without time zone (µs) | PostgreSQL `make_timestamp` |
//! | `to_utc_timestamp(local_timestamp, time_zone)` | timestamp in UTC (µs) | Spark `to_utc_timestamp` |
//! | `to_minutes(n)` | interval of `n` minutes | DuckDB `to_minutes` |
//! | `parse_decimal(text, precision, scale)` | `decimal(precision, scale)` | `try_cast(text AS DECIMAL(p, s))` (arrow-cast) |
//!
//! Each returns NULL instead of failing the run when a row's values are invalid (month 13, an
//! unknown time zone name), so the row fails its `cast`/`required` rule and is quarantined with
//! its source values rather than aborting a nightly load.
//!
//! All are ordinary [`ScalarUDF`]s: a plan that uses them serializes by function name, and a
//! distributed executor needs them registered too ([`register`]).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array, IntervalMonthDayNanoArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float64Type, Int64Type, IntervalMonthDayNano, IntervalUnit, TimeUnit,
};
use datafusion::common::{exec_err, internal_err, plan_err, DataFusionError, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// Registers every Sluice function on a session.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(MakeTimestamp::new()));
    ctx.register_udf(ScalarUDF::from(ToUtcTimestamp::new()));
    ctx.register_udf(ScalarUDF::from(ToMinutes::new()));
    ctx.register_udf(ScalarUDF::from(ParseDecimal::new()));
}

const MICROS_PER_SECOND: f64 = 1_000_000.0;

/// Evaluates `f` on arrays, or on scalars when every argument is a scalar (so a constant
/// expression stays a constant).
fn eval(
    args: Vec<ColumnarValue>,
    number_rows: usize,
    f: impl Fn(&[ArrayRef]) -> Result<ArrayRef>,
) -> Result<ColumnarValue> {
    let all_scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let len = if all_scalar { 1 } else { number_rows };
    let arrays = args
        .into_iter()
        .map(|a| a.into_array(len))
        .collect::<Result<Vec<_>>>()?;
    let out = f(&arrays)?;
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// `make_timestamp(year, month, day, hour, minute, second)`: a timestamp without time zone.
///
/// Arguments are integers except `second` (float allowed). As in PostgreSQL, `24:00:00` is
/// accepted and means midnight at the end of the day — flight data writes a departure at
/// midnight as `2400`. Any other out-of-range part, or a date that does not exist, gives NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MakeTimestamp {
    signature: Signature,
}

impl MakeTimestamp {
    /// The function, ready to register.
    pub fn new() -> Self {
        MakeTimestamp {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for MakeTimestamp {
    fn default() -> Self {
        Self::new()
    }
}

/// The instant for the given parts, in microseconds since the epoch of naive time.
pub fn make_timestamp_micros(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: f64,
) -> Option<i64> {
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    )?;
    let end_of_day = hour == 24 && minute == 0 && second == 0.0;
    let within_day = (0..24).contains(&hour) && (0..60).contains(&minute);
    if !(end_of_day || within_day) {
        return None;
    }
    if !(0.0..60.0).contains(&second) {
        return None;
    }
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros();
    let micros =
        (hour * 3600 + minute * 60) * 1_000_000 + (second * MICROS_PER_SECOND).round() as i64;
    midnight.checked_add(micros)
}

impl ScalarUDFImpl for MakeTimestamp {
    fn name(&self) -> &str {
        "make_timestamp"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 6 {
            return plan_err!(
                "make_timestamp takes 6 arguments (year, month, day, hour, minute, second), got {}",
                arg_types.len()
            );
        }
        for t in arg_types {
            if !(t.is_numeric() || t.is_null()) {
                return plan_err!("make_timestamp takes numbers, got {t}");
            }
        }
        let mut out = vec![DataType::Int64; 5];
        out.push(DataType::Float64);
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        eval(args.args, args.number_rows, |a| {
            let ints: Vec<&Int64Array> = a[..5]
                .iter()
                .map(|x| x.as_primitive::<Int64Type>())
                .collect();
            let secs: &Float64Array = a[5].as_primitive::<Float64Type>();
            let out: TimestampMicrosecondArray = (0..secs.len())
                .map(|i| {
                    if ints.iter().any(|c| c.is_null(i)) || secs.is_null(i) {
                        return None;
                    }
                    make_timestamp_micros(
                        ints[0].value(i),
                        ints[1].value(i),
                        ints[2].value(i),
                        ints[3].value(i),
                        ints[4].value(i),
                        secs.value(i),
                    )
                })
                .collect();
            Ok(Arc::new(out))
        })
    }
}

/// `to_utc_timestamp(local_timestamp, time_zone)`: reads a timestamp without time zone as wall
/// clock time in `time_zone` (an IANA name such as `America/Chicago`) and returns the instant in
/// UTC.
///
/// Around daylight-saving changes it follows `java.time.ZonedDateTime.ofLocal`, as Spark does:
/// a wall time that happens twice (autumn) takes the earlier instant; a wall time skipped
/// (spring) is moved later by the length of the gap. An unknown zone name gives NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToUtcTimestamp {
    signature: Signature,
}

impl ToUtcTimestamp {
    /// The function, ready to register.
    pub fn new() -> Self {
        ToUtcTimestamp {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for ToUtcTimestamp {
    fn default() -> Self {
        Self::new()
    }
}

/// Converts wall-clock microseconds in `tz` to UTC microseconds (see [`ToUtcTimestamp`]).
pub fn local_micros_to_utc(local_micros: i64, tz: &Tz) -> Option<i64> {
    let naive: NaiveDateTime = chrono::DateTime::from_timestamp_micros(local_micros)?.naive_utc();
    let instant = match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t,
        LocalResult::Ambiguous(earlier, _) => earlier,
        LocalResult::None => {
            // In a gap: use the offset in force before the transition, which moves the wall
            // time later by the gap's length.
            let before = tz.offset_from_utc_datetime(&(naive - Duration::hours(12)));
            let offset = chrono::Offset::fix(&before);
            return Some(local_micros - i64::from(offset.local_minus_utc()) * 1_000_000);
        }
    };
    Some(instant.timestamp_micros())
}

impl ScalarUDFImpl for ToUtcTimestamp {
    fn name(&self) -> &str {
        "to_utc_timestamp"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [ts, tz] = arg_types else {
            return plan_err!(
                "to_utc_timestamp takes 2 arguments (local_timestamp, time_zone), got {}",
                arg_types.len()
            );
        };
        match ts {
            DataType::Timestamp(_, None) | DataType::Date32 | DataType::Date64 | DataType::Null => {
            }
            DataType::Timestamp(_, Some(z)) => {
                return plan_err!(
                    "to_utc_timestamp expects a timestamp without time zone, got one already in {z}"
                )
            }
            other => return plan_err!("to_utc_timestamp expects a timestamp, got {other}"),
        }
        if !matches!(
            tz,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        ) {
            return plan_err!("to_utc_timestamp expects a time zone name (text), got {tz}");
        }
        Ok(vec![
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Utf8,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        eval(args.args, args.number_rows, |a| {
            let DataType::Timestamp(TimeUnit::Microsecond, None) = a[0].data_type() else {
                return exec_err!("to_utc_timestamp: unexpected input {}", a[0].data_type());
            };
            let ts = a[0].as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
            let zones = a[1].as_string::<i32>();
            let mut cache: HashMap<&str, Option<Tz>> = HashMap::new();
            let out: TimestampMicrosecondArray = (0..ts.len())
                .map(|i| {
                    if ts.is_null(i) || zones.is_null(i) {
                        return None;
                    }
                    let name = zones.value(i);
                    let tz = cache
                        .entry(name)
                        .or_insert_with(|| name.parse::<Tz>().ok())
                        .as_ref()?;
                    local_micros_to_utc(ts.value(i), tz)
                })
                .collect();
            Ok(Arc::new(out.with_timezone("UTC")))
        })
    }
}

/// `to_minutes(n)`: an interval of `n` minutes (integer, may be negative), to add to a
/// timestamp: `departure + to_minutes(delay)`. DataFusion 55 cannot multiply an interval by a
/// column, so this fills the gap; the name and meaning follow DuckDB.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToMinutes {
    signature: Signature,
}

impl ToMinutes {
    /// The function, ready to register.
    pub fn new() -> Self {
        ToMinutes {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for ToMinutes {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for ToMinutes {
    fn name(&self) -> &str {
        "to_minutes"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t] if t.is_integer() || t.is_null() => Ok(vec![DataType::Int64]),
            [t] => plan_err!("to_minutes takes a whole number of minutes, got {t}"),
            _ => plan_err!("to_minutes takes 1 argument, got {}", arg_types.len()),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        eval(args.args, args.number_rows, |a| {
            let minutes = a[0].as_primitive::<Int64Type>();
            let out: IntervalMonthDayNanoArray = minutes
                .iter()
                .map(|m| {
                    m.and_then(|m| m.checked_mul(60_000_000_000))
                        .map(|nanos| IntervalMonthDayNano::new(0, 0, nanos))
                })
                .collect();
            Ok(Arc::new(out))
        })
    }
}

/// `parse_decimal(text, precision, scale)`: a decimal text read as `decimal(precision, scale)`,
/// or NULL when it is not one or does not fit: what `try_cast(text AS DECIMAL(p, s))` gives,
/// without its per-value allocations. The CSV reader's declared decimal columns use it.
///
/// The text is trimmed, then read as `[+-]digits[.digits]` (either side of the point may be
/// empty, not both); digits beyond `scale` round half away from zero, as the cast does
/// (arrow-cast 59 `parse_string_to_decimal_native`). One difference: a fraction with more
/// than 76 digits past `scale`, which the cast's 256-bit arithmetic turns into NULL, is read
/// and rounded. `precision` is 1..=38 and `scale` 0..=`precision`, both constants.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ParseDecimal {
    signature: Signature,
}

impl ParseDecimal {
    /// The function, ready to register.
    pub fn new() -> Self {
        ParseDecimal {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for ParseDecimal {
    fn default() -> Self {
        Self::new()
    }
}

/// `text` as a decimal of `precision` digits, `scale` of them after the point, unscaled (so
/// `"1.25"` at scale 2 is 125); `None` when it is not a decimal or does not fit. See
/// [`ParseDecimal`] for the accepted form and the rounding.
pub fn parse_decimal_text(text: &str, precision: u8, scale: u8) -> Option<i128> {
    let t = text.trim().as_bytes();
    let (negative, body) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = match body.iter().position(|b| *b == b'.') {
        Some(p) => (&body[..p], &body[p + 1..]),
        None => (body, &body[body.len()..]),
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    let mut v: i128 = 0;
    let scale = usize::from(scale);
    let kept = frac.len().min(scale);
    for d in int.iter().chain(&frac[..kept]) {
        v = v.checked_mul(10)?.checked_add(i128::from(d - b'0'))?;
    }
    for _ in kept..scale {
        v = v.checked_mul(10)?;
    }
    if frac.get(scale).is_some_and(|d| *d >= b'5') {
        v = v.checked_add(1)?;
    }
    let max = 10i128.checked_pow(u32::from(precision))?;
    (v < max).then_some(if negative { -v } else { v })
}

impl ScalarUDFImpl for ParseDecimal {
    fn name(&self) -> &str {
        "parse_decimal"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [_, p, s] if p.is_integer() && s.is_integer() => {
                Ok(vec![DataType::Utf8, DataType::Int64, DataType::Int64])
            }
            _ => plan_err!("parse_decimal takes (text, precision, scale)"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!("parse_decimal's type comes from its precision and scale arguments")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let (precision, scale) = decimal_args(args.scalar_arguments)?;
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::Decimal128(precision, scale as i8),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Decimal128(precision, scale) = *args.return_field.data_type() else {
            return internal_err!("parse_decimal returns a decimal");
        };
        let scale = u8::try_from(scale).map_err(|_| {
            DataFusionError::Plan(format!("parse_decimal: scale {scale} is negative"))
        })?;
        eval(args.args, args.number_rows, |a| {
            let text = a[0].as_string::<i32>();
            let out: Decimal128Array = text
                .iter()
                .map(|t| t.and_then(|t| parse_decimal_text(t, precision, scale)))
                .collect();
            Ok(Arc::new(
                out.with_precision_and_scale(precision, scale as i8)?,
            ))
        })
    }
}

/// The constant precision (1..=38) and scale (0..=precision) of a `parse_decimal` call.
fn decimal_args(scalars: &[Option<&ScalarValue>]) -> Result<(u8, u8)> {
    let int = |i: usize| match scalars.get(i) {
        Some(Some(ScalarValue::Int64(Some(v)))) => Some(*v),
        _ => None,
    };
    match (int(1), int(2)) {
        (Some(p), Some(s)) if (1..=38).contains(&p) && (0..=p).contains(&s) => {
            Ok((p as u8, s as u8))
        }
        _ => plan_err!(
            "parse_decimal needs a constant precision (1 to 38) and scale (0 to the precision)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(s: &str) -> i64 {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }

    /// The cases where a hand-written parser most easily differs from the cast it replaces:
    /// each expected value is what `try_cast(text AS DECIMAL(5, 2))` gives in arrow-cast 59,
    /// which the second assertion checks against the cast itself.
    #[test]
    fn parse_decimal_reads_what_the_cast_reads_and_rounds_half_away_from_zero() {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::compute::{cast_with_options, CastOptions};
        let cases: [(&str, Option<i128>); 16] = [
            ("1.25", Some(125)),
            (" 7 ", Some(700)),
            ("-0.5", Some(-50)),
            ("+3.", Some(300)),
            (".5", Some(50)),
            ("1.005", Some(101)),
            ("-1.005", Some(-101)),
            ("1.0049", Some(100)),
            ("999.994", Some(99999)),
            ("999.995", None),
            ("1000", None),
            ("", None),
            ("-", None),
            ("1.2.3", None),
            ("1e3", None),
            ("12a", None),
        ];
        let texts = StringArray::from(cases.iter().map(|(t, _)| *t).collect::<Vec<_>>());
        let safe = CastOptions::default();
        let cast = cast_with_options(&texts, &DataType::Decimal128(5, 2), &safe).unwrap();
        let cast = cast.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        for (i, (text, want)) in cases.iter().enumerate() {
            assert_eq!(parse_decimal_text(text, 5, 2), *want, "{text:?}");
            let by_cast = cast.is_valid(i).then(|| cast.value(i));
            assert_eq!(by_cast, *want, "the cast reads {text:?} differently");
        }
    }

    #[test]
    fn midnight_written_as_2400_is_the_next_day() {
        assert_eq!(
            make_timestamp_micros(2013, 12, 31, 24, 0, 0.0),
            Some(micros("2014-01-01 00:00:00"))
        );
        assert_eq!(make_timestamp_micros(2013, 1, 1, 24, 1, 0.0), None);
        assert_eq!(make_timestamp_micros(2013, 2, 29, 10, 0, 0.0), None);
        assert_eq!(make_timestamp_micros(2013, 1, 1, 5, 60, 0.0), None);
        assert_eq!(
            make_timestamp_micros(2013, 1, 1, 5, 17, 30.5),
            Some(micros("2013-01-01 05:17:30") + 500_000)
        );
    }

    #[test]
    fn wall_time_to_utc_across_dst() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // Winter: UTC-5.
        assert_eq!(
            local_micros_to_utc(micros("2013-01-01 05:15:00"), &ny),
            Some(micros("2013-01-01 10:15:00"))
        );
        // Summer: UTC-4.
        assert_eq!(
            local_micros_to_utc(micros("2013-07-01 05:15:00"), &ny),
            Some(micros("2013-07-01 09:15:00"))
        );
        // 2013-11-03 01:30 happens twice; the earlier instant is the EDT one (UTC-4).
        assert_eq!(
            local_micros_to_utc(micros("2013-11-03 01:30:00"), &ny),
            Some(micros("2013-11-03 05:30:00"))
        );
        // 2013-03-10 02:30 does not exist; it moves one hour later, to 03:30 EDT = 07:30Z.
        assert_eq!(
            local_micros_to_utc(micros("2013-03-10 02:30:00"), &ny),
            Some(micros("2013-03-10 07:30:00"))
        );
    }
}
