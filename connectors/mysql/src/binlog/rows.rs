//! Row images of ROWS events decoded straight into a `ChangeBatchBuilder`:
//! no intermediate value per cell (the hot path of the binlog reader).

use arrow_buffer::i256;
use chrono::{Datelike, NaiveDate};
use tributary_core::{ChangeBatchBuilder, Decimal, Error, ErrorKind, Op, Result, RowImageBuilder};

use super::table::{CellFormat, DecodedTable};
use crate::charset::Charset;
use crate::config::ZeroDates;

/// A cursor over the bytes of a rows event.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidData,
                    format!("row image truncated at byte {} (wanted {n} more)", self.pos),
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn le(&mut self, n: usize) -> Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
}

/// Decodes every row of one rows event into `builder` (whose schema must be
/// `table.schema`). `present` is the event's column bitmap(s); Tributary
/// requires full row images.
pub(crate) fn decode_rows(
    table: &DecodedTable,
    op: Op,
    data: &[u8],
    builder: &mut ChangeBatchBuilder,
    zero_dates: ZeroDates,
) -> Result<usize> {
    let mut bytes = Bytes { data, pos: 0 };
    let mut rows = 0;
    while bytes.pos < data.len() {
        builder.begin_row(op)?;
        let (before, after) = op.images();
        if before {
            decode_image(table, &mut bytes, builder.before(), zero_dates)?;
        }
        if after {
            decode_image(table, &mut bytes, builder.after(), zero_dates)?;
        }
        builder.end_row()?;
        rows += 1;
    }
    Ok(rows)
}

fn decode_image(
    table: &DecodedTable,
    bytes: &mut Bytes<'_>,
    img: &mut RowImageBuilder,
    zero_dates: ZeroDates,
) -> Result<()> {
    let n = table.formats.len();
    let nulls = bytes.take(n.div_ceil(8))?;
    for (i, format) in table.formats.iter().enumerate() {
        if nulls[i / 8] & (1 << (i % 8)) != 0 {
            img.push_null()?;
            continue;
        }
        let nullable = table.schema.columns[i].nullable;
        decode_cell(format, bytes, img, zero_dates, nullable).map_err(|e| {
            e.with_context("table", &table.schema.table)
                .with_context("column", &table.schema.columns[i].name)
        })?;
    }
    Ok(())
}

fn decode_cell(
    f: &CellFormat,
    b: &mut Bytes<'_>,
    img: &mut RowImageBuilder,
    zero: ZeroDates,
    nullable: bool,
) -> Result<()> {
    match f {
        CellFormat::Int { bytes, unsigned } => {
            let n = *bytes as usize;
            let raw = b.le(n)?;
            if *unsigned {
                img.push_uint(raw)
            } else {
                let shift = 64 - 8 * n as u32;
                img.push_int(((raw << shift) as i64) >> shift)
            }
        }
        CellFormat::Float => img.push_f64(f32::from_bits(b.le(4)? as u32).into()),
        CellFormat::Double => img.push_f64(f64::from_bits(b.le(8)?)),
        CellFormat::Decimal { precision, scale } => decode_decimal(b, *precision, *scale, img),
        CellFormat::Year => {
            let y = b.le(1)?;
            img.push_uint(if y == 0 { 0 } else { 1900 + y })
        }
        CellFormat::Date => {
            let v = b.le(3)?;
            let (y, m, d) = ((v >> 9) as i32, ((v >> 5) & 15) as u32, (v & 31) as u32);
            match days(y, m, d) {
                Some(days) => img.push_date(days),
                None => zero_date(img, zero, nullable, |img| img.push_date(0)),
            }
        }
        CellFormat::Time2 { fsp } => img.push_time(time2_micros(b, *fsp)?),
        CellFormat::DateTime2 { fsp } => {
            let packed = b.be(5)? as i64 - 0x80_0000_0000;
            let frac = frac_micros(b, *fsp)?;
            let ymd = packed >> 17;
            let (ym, hms) = (ymd >> 5, packed & ((1 << 17) - 1));
            let (y, m, d) = ((ym / 13) as i32, (ym % 13) as u32, (ymd & 31) as u32);
            let secs = (hms >> 12) * 3600 + ((hms >> 6) & 63) * 60 + (hms & 63);
            push_datetime(img, zero, nullable, days(y, m, d), secs, frac)
        }
        CellFormat::Timestamp2 { fsp } => {
            let secs = b.be(4)? as i64;
            let frac = frac_micros(b, *fsp)?;
            if secs == 0 && frac == 0 {
                // 0 is MySQL's zero timestamp '0000-00-00 00:00:00', not the epoch.
                return zero_date(img, zero, nullable, |img| img.push_timestamp_micros(0));
            }
            img.push_timestamp_micros(secs * 1_000_000 + frac)
        }
        CellFormat::OldTime => {
            let v = ((b.le(3)? << 40) as i64) >> 40;
            let a = v.abs();
            let secs = (a / 10000) * 3600 + (a / 100 % 100) * 60 + a % 100;
            img.push_time(v.signum() * secs * 1_000_000)
        }
        CellFormat::OldDateTime => {
            let v = b.le(8)? as i64;
            let (date, time) = (v / 1_000_000, v % 1_000_000);
            let (y, m, d) = (
                (date / 10000) as i32,
                (date / 100 % 100) as u32,
                (date % 100) as u32,
            );
            let secs = (time / 10000) * 3600 + (time / 100 % 100) * 60 + time % 100;
            push_datetime(img, zero, nullable, days(y, m, d), secs, 0)
        }
        CellFormat::OldTimestamp => {
            let secs = b.le(4)? as i64;
            if secs == 0 {
                return zero_date(img, zero, nullable, |img| img.push_timestamp_micros(0));
            }
            img.push_timestamp_micros(secs * 1_000_000)
        }
        CellFormat::Var {
            len_bytes,
            charset,
            pad_to,
        } => {
            let len = b.le(*len_bytes as usize)? as usize;
            let raw = b.take(len)?;
            match pad_to {
                Some(n) if raw.len() < *n => {
                    let mut padded = raw.to_vec();
                    padded.resize(*n, 0);
                    img.push_bytes(&padded)
                }
                _ => push_text(img, raw, *charset),
            }
        }
        CellFormat::Enum { bytes, labels } => {
            let idx = b.le(*bytes as usize)? as usize;
            // Index 0 is MySQL's "invalid value" entry, the empty string.
            img.push_str(if idx == 0 {
                ""
            } else {
                labels.get(idx - 1).map_or("", String::as_str)
            })
        }
        CellFormat::Set { bytes, labels } => {
            let bits = b.le(*bytes as usize)?;
            let mut text = String::new();
            for (_, label) in labels
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
            {
                if !text.is_empty() {
                    text.push(',');
                }
                text.push_str(label);
            }
            img.push_str(&text)
        }
        CellFormat::Bit { bits } => img.push_uint(b.be((*bits as usize).div_ceil(8))?),
        CellFormat::MySqlJson { len_bytes } => {
            let len = b.le(*len_bytes as usize)? as usize;
            let text = super::json::mysql_binary_json_to_text(b.take(len)?)?;
            img.push_str(&text)
        }
    }
}

/// Days since 1970-01-01 for a real calendar date; `None` for zero dates.
fn days(y: i32, m: u32, d: u32) -> Option<i32> {
    NaiveDate::from_ymd_opt(y, m, d).map(|date| date.num_days_from_ce() - 719_163)
}

pub(crate) fn zero_date(
    img: &mut RowImageBuilder,
    policy: ZeroDates,
    nullable: bool,
    epoch: impl FnOnce(&mut RowImageBuilder) -> Result<()>,
) -> Result<()> {
    match policy {
        ZeroDates::Null if nullable => img.push_null(),
        ZeroDates::Null | ZeroDates::Epoch => epoch(img),
        ZeroDates::Fail => Err(Error::new(
            ErrorKind::InvalidData,
            "a zero date ('0000-00-00' or a zero month/day) has no calendar value; \
             set zero_dates = \"null\" or \"epoch\" to map it",
        )),
    }
}

fn push_datetime(
    img: &mut RowImageBuilder,
    zero: ZeroDates,
    nullable: bool,
    days: Option<i32>,
    secs: i64,
    frac: i64,
) -> Result<()> {
    match days {
        Some(d) => img.push_timestamp_micros((i64::from(d) * 86_400 + secs) * 1_000_000 + frac),
        None => zero_date(img, zero, nullable, |img| img.push_timestamp_micros(0)),
    }
}

/// Fractional seconds of TIME2/DATETIME2/TIMESTAMP2 (big-endian, by precision).
fn frac_micros(b: &mut Bytes<'_>, fsp: u8) -> Result<i64> {
    Ok(match fsp {
        0 => 0,
        1 | 2 => b.be(1)? as i64 * 10_000,
        3 | 4 => b.be(2)? as i64 * 100,
        _ => b.be(3)? as i64,
    })
}

/// TIME2: a signed packed value (hour<<12 | minute<<6 | second, then 24 bits
/// of microseconds) stored big-endian with an offset; negative values borrow
/// from the integer part when they have a fraction.
fn time2_micros(b: &mut Bytes<'_>, fsp: u8) -> Result<i64> {
    let packed: i64 = match fsp {
        0 => (b.be(3)? as i64 - 0x80_0000) << 24,
        1..=4 => {
            let mut int = b.be(3)? as i64 - 0x80_0000;
            let (width, scale) = if fsp <= 2 { (1, 10_000) } else { (2, 100) };
            let mut frac = b.be(width)? as i64;
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 1 << (8 * width);
            }
            (int << 24) + frac * scale
        }
        _ => b.be(6)? as i64 - 0x8000_0000_0000,
    };
    let neg = packed < 0;
    let p = packed.abs();
    let hms = p >> 24;
    let micros =
        ((hms >> 12) % 1024 * 3600 + (hms >> 6) % 64 * 60 + hms % 64) * 1_000_000 + p % (1 << 24);
    Ok(if neg { -micros } else { micros })
}

/// MySQL's binary DECIMAL: groups of 9 digits in 4 bytes (fewer for partial
/// groups), big-endian, sign in the inverted top bit, negatives bit-inverted.
fn decode_decimal(
    b: &mut Bytes<'_>,
    precision: u8,
    scale: u8,
    img: &mut RowImageBuilder,
) -> Result<()> {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let (intg, frac) = ((precision - scale) as usize, scale as usize);
    let (intg0, intg0x, frac0, frac0x) = (intg / 9, intg % 9, frac / 9, frac % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    let raw = b.take(size)?;
    let negative = raw.first().is_some_and(|&x| x & 0x80 == 0);
    let mask = if negative { 0xFF } else { 0 };
    let mut pos = 0;
    let mut group = |n: usize| -> u64 {
        let v = raw[pos..pos + n]
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, &x)| {
                let x = if pos + i == 0 { x ^ 0x80 } else { x };
                (acc << 8) | u64::from(x ^ mask)
            });
        pos += n;
        v
    };
    // Groups in order with how many decimal digits each holds.
    let mut groups: Vec<(u64, u32)> = Vec::with_capacity(intg0 + frac0 + 2);
    if intg0x > 0 {
        groups.push((group(DIG2BYTES[intg0x]), intg0x as u32));
    }
    groups.extend((0..intg0).map(|_| (group(4), 9)));
    groups.extend((0..frac0).map(|_| (group(4), 9)));
    if frac0x > 0 {
        groups.push((group(DIG2BYTES[frac0x]), frac0x as u32));
    }
    if precision <= 38 {
        let mut v: i128 = 0;
        for (g, digits) in groups {
            v = v * 10i128.pow(digits) + g as i128;
        }
        img.push_decimal_unscaled(if negative { -v } else { v })
    } else {
        let mut v = i256::ZERO;
        for (g, digits) in groups {
            v = v
                .wrapping_mul(i256::from_i128(10i128.pow(digits)))
                .wrapping_add(i256::from_i128(g as i128));
        }
        img.push_decimal(&Decimal::new(
            if negative { v.wrapping_neg() } else { v },
            scale,
        ))
    }
}

fn push_text(img: &mut RowImageBuilder, raw: &[u8], charset: Option<Charset>) -> Result<()> {
    match charset {
        None | Some(Charset::Binary) => img.push_bytes(raw),
        Some(Charset::Utf8 { .. }) => match std::str::from_utf8(raw) {
            Ok(s) => img.push_str(s),
            Err(e) => Err(Error::new(
                ErrorKind::InvalidData,
                format!("invalid UTF-8 in a utf8 column: {e}"),
            )),
        },
        Some(Charset::Legacy { encoding, .. }) => {
            let (text, _, had_errors) = encoding.decode(raw);
            if had_errors {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    format!("bytes not valid in {}", encoding.name()),
                ));
            }
            img.push_str(&text)
        }
    }
}
