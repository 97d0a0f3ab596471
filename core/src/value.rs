//! Typed values covering every MySQL/MariaDB column type without loss.
//!
//! Time semantics (the same in `Value`, in Arrow and in every sink):
//! - `Date`: days since 1970-01-01 in the proleptic Gregorian calendar.
//! - `Time`: a signed duration in microseconds. MySQL TIME is "elapsed time or
//!   time of day" and ranges over ±838:59:59.999999, so it is not a time of day.
//! - `DateTime`: microseconds since 1970-01-01 00:00:00 of a *wall clock* with
//!   no time zone (MySQL DATETIME stores what was written, whatever the zone).
//! - `Timestamp`: microseconds since the Unix epoch, UTC (MySQL TIMESTAMP is
//!   stored in UTC and shown in the session zone; readers must decode in UTC).
//!
//! MySQL "zero" dates ('0000-00-00', or a zero month/day) are not calendar
//! dates and have no `Value`: a source maps them by its documented policy.

use std::fmt;
use std::str::FromStr;

use arrow_buffer::i256;
use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One typed cell. The variant matches the column's [`crate::ColumnType`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    Null,
    Bool(bool),
    Int8(i8),
    Int16(i16),
    /// Also MEDIUMINT (24-bit).
    Int32(i32),
    Int64(i64),
    UInt8(u8),
    UInt16(u16),
    /// Also MEDIUMINT UNSIGNED.
    UInt32(u32),
    UInt64(u64),
    Float(f32),
    Double(f64),
    Decimal(Decimal),
    String(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Signed microseconds (MySQL TIME, may be negative or over 24 h).
    Time(i64),
    /// Microseconds since 1970-01-01 00:00:00 of a zone-less wall clock.
    DateTime(i64),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// 0 or 1901..=2155.
    Year(u16),
    /// BIT(n): the bits as an integer, most significant bit first (b'101' = 5).
    Bit(u64),
    /// ENUM as its label.
    Enum(String),
    /// SET as its labels joined by ',' in definition order — MySQL's own text
    /// form; labels cannot contain ','.
    Set(String),
    /// JSON document as text.
    Json(String),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A DATE from a calendar date; `None` if it is not a valid date.
    pub fn date(year: i32, month: u32, day: u32) -> Option<Value> {
        Some(Value::Date(days_from_date(NaiveDate::from_ymd_opt(
            year, month, day,
        )?)))
    }

    /// A DATETIME from wall-clock fields; `None` if invalid.
    pub fn datetime(ymd: (i32, u32, u32), hms: (u32, u32, u32), micros: u32) -> Option<Value> {
        micros_from_fields(ymd, hms, micros).map(Value::DateTime)
    }

    /// A TIMESTAMP from UTC fields; `None` if invalid.
    pub fn timestamp_utc(ymd: (i32, u32, u32), hms: (u32, u32, u32), micros: u32) -> Option<Value> {
        micros_from_fields(ymd, hms, micros).map(Value::Timestamp)
    }
}

fn micros_from_fields(ymd: (i32, u32, u32), hms: (u32, u32, u32), micros: u32) -> Option<i64> {
    let dt = NaiveDate::from_ymd_opt(ymd.0, ymd.1, ymd.2)?
        .and_hms_micro_opt(hms.0, hms.1, hms.2, micros)?;
    Some(dt.and_utc().timestamp_micros())
}

const UNIX_EPOCH_CE_DAYS: i32 = 719_163;

fn days_from_date(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - UNIX_EPOCH_CE_DAYS
}

/// Formats days since the epoch as `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    match NaiveDate::from_num_days_from_ce_opt(days.saturating_add(UNIX_EPOCH_CE_DAYS)) {
        Some(d) => format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
        None => format!("<date {days}>"),
    }
}

/// Formats epoch microseconds as `YYYY-MM-DD HH:MM:SS[.ffffff]`.
pub fn format_datetime(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) => {
            let frac = t.nanosecond() / 1000;
            let base = t.format("%Y-%m-%d %H:%M:%S").to_string();
            if frac == 0 {
                base
            } else {
                format!("{base}.{frac:06}")
            }
        }
        None => format!("<datetime {micros}>"),
    }
}

/// Formats signed microseconds as MySQL TIME text: `[-]HHH:MM:SS[.ffffff]`.
pub fn format_time(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let (secs, frac) = (m / 1_000_000, m % 1_000_000);
    let (h, mi, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if frac == 0 {
        format!("{sign}{h:02}:{mi:02}:{s:02}")
    } else {
        format!("{sign}{h:02}:{mi:02}:{s:02}.{frac:06}")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Int8(v) => write!(f, "{v}"),
            Value::Int16(v) => write!(f, "{v}"),
            Value::Int32(v) => write!(f, "{v}"),
            Value::Int64(v) => write!(f, "{v}"),
            Value::UInt8(v) => write!(f, "{v}"),
            Value::UInt16(v) => write!(f, "{v}"),
            Value::UInt32(v) => write!(f, "{v}"),
            Value::UInt64(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Decimal(v) => write!(f, "{v}"),
            Value::String(v) | Value::Enum(v) | Value::Set(v) | Value::Json(v) => f.write_str(v),
            Value::Bytes(v) => {
                f.write_str("0x")?;
                v.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Value::Date(d) => f.write_str(&format_date(*d)),
            Value::Time(t) => f.write_str(&format_time(*t)),
            Value::DateTime(t) => f.write_str(&format_datetime(*t)),
            Value::Timestamp(t) => write!(f, "{}Z", format_datetime(*t)),
            Value::Year(y) => write!(f, "{y:04}"),
            Value::Bit(b) => write!(f, "b'{b:b}'"),
        }
    }
}

/// An exact decimal: an unscaled 256-bit integer and a scale, enough for
/// MySQL's DECIMAL(65, 30). Equality compares unscaled value *and* scale;
/// within one column the scale is fixed, so that is value equality there.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    unscaled: i256,
    scale: u8,
}

/// Largest precision a [`Decimal`] holds (i256 covers 76 digits).
pub const MAX_DECIMAL_PRECISION: u8 = 76;

impl Decimal {
    pub fn new(unscaled: i256, scale: u8) -> Self {
        Decimal { unscaled, scale }
    }

    pub fn from_i128(unscaled: i128, scale: u8) -> Self {
        Decimal::new(i256::from_i128(unscaled), scale)
    }

    pub fn unscaled(&self) -> i256 {
        self.unscaled
    }

    pub fn scale(&self) -> u8 {
        self.scale
    }

    /// The unscaled value when it fits in i128 (precision ≤ 38 always does).
    pub fn unscaled_i128(&self) -> Option<i128> {
        self.unscaled.to_i128()
    }

    /// Number of significant digits of the unscaled value (0 has 1).
    pub fn digits(&self) -> u32 {
        let s = self.unscaled.to_string();
        s.trim_start_matches('-').len() as u32
    }

    /// The same number at another scale; `None` if digits would be lost or
    /// the result overflows.
    pub fn rescale(&self, scale: u8) -> Option<Decimal> {
        let ten = i256::from_i128(10);
        let mut v = self.unscaled;
        if scale >= self.scale {
            for _ in self.scale..scale {
                v = v.checked_mul(ten)?;
            }
        } else {
            for _ in scale..self.scale {
                if v.wrapping_rem(ten) != i256::ZERO {
                    return None;
                }
                v = v.wrapping_div(ten);
            }
        }
        Some(Decimal::new(v, scale))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = self.unscaled.to_string();
        let (neg, digits) = match raw.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, raw.as_str()),
        };
        let scale = self.scale as usize;
        let padded = if digits.len() <= scale {
            format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
        } else {
            digits.to_string()
        };
        let (int, frac) = padded.split_at(padded.len() - scale);
        if neg {
            f.write_str("-")?;
        }
        f.write_str(int)?;
        if scale > 0 {
            write!(f, ".{frac}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({self})")
    }
}

impl FromStr for Decimal {
    type Err = Error;

    /// Parses `[+-]digits[.digits]`; the scale is the number of fraction digits.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid_data(format!("not a decimal number: {s:?}"));
        let (neg, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return Err(bad());
        }
        let digits = format!("{}{int}{frac}", if neg { "-" } else { "" });
        let digits = if int.is_empty() && frac.is_empty() {
            "0".into()
        } else {
            digits
        };
        if digits.trim_start_matches('-').len() > MAX_DECIMAL_PRECISION as usize {
            return Err(bad());
        }
        let scale = u8::try_from(frac.len()).map_err(|_| bad())?;
        let unscaled = i256::from_string(&digits).ok_or_else(bad)?;
        Ok(Decimal::new(unscaled, scale))
    }
}

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_round_trips() {
        for s in [
            "0",
            "-0.5",
            "123.4500",
            "-99999999999999999999999999999999999999999999999999999.999999999999",
            "0.000000000000000000000000000001",
            "12345678901234567890123456789012345678901234567890123456789012345",
        ] {
            let d: Decimal = s.parse().unwrap();
            assert_eq!(d.to_string(), s, "{s}");
        }
        let d: Decimal = "+1.50".parse().unwrap();
        assert_eq!((d.to_string().as_str(), d.scale()), ("1.50", 2));
        for bad in ["", "-", "1.2.3", "1e5", "abc", " 1", "--1"] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn decimal_rescale_is_exact_or_refused() {
        let d: Decimal = "1.50".parse().unwrap();
        assert_eq!(d.rescale(4).unwrap().to_string(), "1.5000");
        assert_eq!(d.rescale(1).unwrap().to_string(), "1.5");
        assert!(d.rescale(0).is_none());
        assert_eq!(d.digits(), 3);
    }

    #[test]
    fn time_and_date_text() {
        assert_eq!(
            format_time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 999_999),
            "-838:59:59.999999"
        );
        assert_eq!(format_time(3_600_000_000), "01:00:00");
        assert_eq!(Value::date(1970, 1, 2), Some(Value::Date(1)));
        assert_eq!(format_date(-719_162), "0001-01-01");
        assert_eq!(Value::date(9999, 12, 31).unwrap().to_string(), "9999-12-31");
        assert!(Value::date(2023, 2, 29).is_none());
        let dt = Value::datetime((2024, 2, 29), (23, 59, 58), 120).unwrap();
        assert_eq!(dt.to_string(), "2024-02-29 23:59:58.000120");
        assert_eq!(Value::Bit(5).to_string(), "b'101'");
    }
}
