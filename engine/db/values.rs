//! Exact conversions between database text forms and Arrow values, shared by the MySQL and
//! SQLite drivers (which exchange decimals and times as text).

use crate::invalid;
use crate::invalid::InvalidValue;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};

/// Parses a decimal text (`-123.45`, `1e3`, `0.5`) into an integer scaled by 10^`scale`,
/// exactly: a value needing more fractional digits than `scale`, or more than `precision`
/// digits, is an error (never rounded).
///
/// # Errors
/// A message saying why the text does not fit `decimal(precision, scale)`.
pub fn parse_decimal(
    text: &str,
    precision: u8,
    scale: i8,
) -> std::result::Result<i128, InvalidValue> {
    let t = text.trim();
    let bad = || invalid!("`{text}` is not a decimal number");
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (t, 0),
    };
    let (neg, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let all: String = format!("{int_part}{frac_part}");
    let all = all.trim_start_matches('0');
    // value = all × 10^(exp − len(frac)); scaled = all × 10^(exp − len(frac) + scale).
    // Trailing zeros move into the exponent, so padding never overflows.
    let trimmed = all.trim_end_matches('0');
    let shift =
        exp - frac_part.len() as i32 + i32::from(scale) + (all.len() - trimmed.len()) as i32;
    let all = trimmed;
    let too_big =
        || invalid!("`{text}` has more than {precision} digits (decimal({precision},{scale}))");
    let mut v: i128 = 0;
    for b in all.bytes() {
        v = v
            .checked_mul(10)
            .and_then(|x| x.checked_add(i128::from(b - b'0')))
            .ok_or_else(too_big)?;
    }
    if shift >= 0 {
        v = 10i128
            .checked_pow(shift as u32)
            .and_then(|m| v.checked_mul(m))
            .ok_or_else(too_big)?;
    } else {
        let d = 10i128.checked_pow((-shift) as u32);
        match d {
            Some(d) if v % d == 0 => v /= d,
            None if v == 0 => {}
            _ => {
                return Err(invalid!(
                    "`{text}` has more than {scale} digits after the point (decimal({precision},{scale}))"
                ))
            }
        }
    }
    if v.unsigned_abs() >= 10u128.pow(u32::from(precision)) {
        return Err(too_big());
    }
    Ok(if neg { -v } else { v })
}

/// An integer scaled by 10^`scale` as decimal text (`12345`, 2 → `123.45`).
pub fn format_decimal(v: i128, scale: i8) -> String {
    if scale <= 0 {
        let mut s = v.to_string();
        if v != 0 {
            s.extend(std::iter::repeat_n('0', (-scale) as usize));
        }
        return s;
    }
    let scale = scale as usize;
    let digits = v.unsigned_abs().to_string();
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (i, f) = padded.split_at(padded.len() - scale);
    format!("{}{i}.{f}", if v < 0 { "-" } else { "" })
}

/// Microseconds since 1970-01-01 as `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn format_micros(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// Days since 1970-01-01 as `YYYY-MM-DD`.
pub fn format_days(days: i32) -> String {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::TimeDelta::days(i64::from(days))))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

/// Microseconds since midnight as `HH:MM:SS.ffffff`.
pub fn format_time(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    format!(
        "{:02}:{:02}:{:02}.{frac:06}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.f][Z|±HH:MM]` into microseconds since 1970-01-01 UTC; a
/// text without an offset is taken as UTC.
///
/// # Errors
/// A message quoting the text.
pub fn parse_timestamp(text: &str) -> std::result::Result<i64, InvalidValue> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, f) {
            return Ok(dt.timestamp_micros());
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(n.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(n) = d.and_hms_opt(0, 0, 0) {
            return Ok(n.and_utc().timestamp_micros());
        }
    }
    Err(invalid!(
        "`{text}` is not a timestamp (YYYY-MM-DD HH:MM:SS)"
    ))
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
///
/// # Errors
/// A message quoting the text.
pub fn parse_date(text: &str) -> std::result::Result<i32, InvalidValue> {
    let d = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| invalid!("`{text}` is not a date (YYYY-MM-DD)"))?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("epoch")?;
    i32::try_from((d - epoch).num_days()).map_err(|e| invalid!("{e}"))
}

/// Parses `HH:MM[:SS[.f]]` into microseconds since midnight.
///
/// # Errors
/// A message quoting the text.
pub fn parse_time(text: &str) -> std::result::Result<i64, InvalidValue> {
    let t = text.trim();
    let n = NaiveTime::parse_from_str(t, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
        .map_err(|_| invalid!("`{text}` is not a time of day (HH:MM:SS)"))?;
    Ok(i64::from(n.num_seconds_from_midnight()) * 1_000_000 + i64::from(n.nanosecond() / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly_or_not_at_all() {
        assert_eq!(parse_decimal("123.45", 10, 2), Ok(12345));
        assert_eq!(parse_decimal("-0.5", 10, 2), Ok(-50));
        assert_eq!(parse_decimal("7", 10, 2), Ok(700));
        assert_eq!(parse_decimal("1.5e2", 10, 2), Ok(15000));
        assert_eq!(parse_decimal("0.10", 10, 1), Ok(1));
        assert!(parse_decimal("0.125", 10, 2).is_err());
        assert!(parse_decimal("123456789.00", 10, 2).is_err());
        assert!(parse_decimal("abc", 10, 2).is_err());
        assert_eq!(
            parse_decimal("99999999999999999999999999999.999999999", 38, 9),
            Ok(99999999999999999999999999999999999999)
        );
    }

    #[test]
    fn decimals_format_with_their_scale() {
        assert_eq!(format_decimal(12345, 2), "123.45");
        assert_eq!(format_decimal(-5, 2), "-0.05");
        assert_eq!(format_decimal(0, 3), "0.000");
        assert_eq!(format_decimal(12, 0), "12");
        for (v, s) in [(12345i128, 2i8), (-5, 2), (1, 9), (-99999, 0)] {
            assert_eq!(parse_decimal(&format_decimal(v, s), 38, s), Ok(v));
        }
    }

    #[test]
    fn times_roundtrip() {
        let us = parse_timestamp("2013-01-01 05:17:00.250000+00:00").unwrap();
        assert_eq!(format_micros(us), "2013-01-01 05:17:00.250000");
        assert_eq!(
            parse_timestamp("2013-01-01T00:17:00-05:00").unwrap(),
            us - 250_000
        );
        assert_eq!(format_days(parse_date("2013-06-30").unwrap()), "2013-06-30");
        assert_eq!(
            format_time(parse_time("23:59:58.5").unwrap()),
            "23:59:58.500000"
        );
    }
}
