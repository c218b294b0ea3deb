//! One Arrow column builder for every database driver.
//!
//! ```text
//! driver row ──(per column: the driver's own decoding)──▶ Cell ──ColumnBuilder──▶ Arrow array
//!                                                         RowBatcher ──▶ (arrays, rows) per batch
//! ```
//!
//! A driver only says how one of its wire values becomes a [`Cell`] (PostgreSQL's binary
//! `*_send` forms, MySQL's `Value`, SQLite's `ValueRef`). [`ColumnBuilder`] appends cells to
//! the column's Arrow array, checking what the column's type fixes (an integer's width, a
//! decimal's precision and scale), and [`RowBatcher`] cuts the rows into batches of the
//! extraction's batch size, naming the row and column of a value that does not convert.

use crate::invalid;
use crate::invalid::InvalidValue;
use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, Int8Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt32Builder,
    UInt64Builder, UInt8Builder,
};
use datafusion::arrow::datatypes::DataType;

use super::values::parse_decimal;
use super::DbColumn;
use crate::error::Result;

/// One database value, decoded by a driver into the form its Arrow column stores.
#[derive(Debug)]
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer of any width; checked against the column's width when appended.
    Int(i128),
    /// A floating-point number (narrowed to `f32` for a Float32 column).
    Float(f64),
    /// A decimal already scaled to the column's scale (an integer count of 10^-scale).
    Decimal(i128),
    /// A decimal as text (`-12.50`, `1e3`), parsed exactly at the column's precision and
    /// scale, never rounded.
    DecimalText(Cow<'a, str>),
    /// UTF-8 text.
    Text(Cow<'a, str>),
    /// Bytes.
    Bytes(&'a [u8]),
    /// Days since 1970-01-01.
    Days(i32),
    /// Microseconds since 1970-01-01 00:00 (UTC when the column has a time zone).
    Micros(i64),
    /// Microseconds since midnight.
    TimeMicros(i64),
}

/// The Arrow builder of one column, chosen by its Arrow type alone.
pub enum ColumnBuilder {
    /// Boolean.
    Bool(BooleanBuilder),
    /// Int8.
    I8(Int8Builder),
    /// Int16.
    I16(Int16Builder),
    /// Int32.
    I32(Int32Builder),
    /// Int64.
    I64(Int64Builder),
    /// UInt8.
    U8(UInt8Builder),
    /// UInt16.
    U16(UInt16Builder),
    /// UInt32.
    U32(UInt32Builder),
    /// UInt64.
    U64(UInt64Builder),
    /// Float32.
    F32(Float32Builder),
    /// Float64.
    F64(Float64Builder),
    /// Decimal128 with its precision and scale.
    Dec(Decimal128Builder, u8, i8),
    /// Utf8 (every type not listed here: drivers describe such columns as text).
    Text(StringBuilder),
    /// Binary.
    Blob(BinaryBuilder),
    /// Date32.
    Date(Date32Builder),
    /// Timestamp in microseconds, with the column's time zone.
    Ts(TimestampMicrosecondBuilder),
    /// Time64 in microseconds.
    Time(Time64MicrosecondBuilder),
}

/// Builds the arms of `ColumnBuilder` that do the same thing on every builder.
macro_rules! each_builder {
    ($self:expr, $b:ident => $body:expr) => {
        match $self {
            ColumnBuilder::Bool($b) => $body,
            ColumnBuilder::I8($b) => $body,
            ColumnBuilder::I16($b) => $body,
            ColumnBuilder::I32($b) => $body,
            ColumnBuilder::I64($b) => $body,
            ColumnBuilder::U8($b) => $body,
            ColumnBuilder::U16($b) => $body,
            ColumnBuilder::U32($b) => $body,
            ColumnBuilder::U64($b) => $body,
            ColumnBuilder::F32($b) => $body,
            ColumnBuilder::F64($b) => $body,
            ColumnBuilder::Dec($b, ..) => $body,
            ColumnBuilder::Text($b) => $body,
            ColumnBuilder::Blob($b) => $body,
            ColumnBuilder::Date($b) => $body,
            ColumnBuilder::Ts($b) => $body,
            ColumnBuilder::Time($b) => $body,
        }
    };
}

/// An integer narrowed to a column's width.
fn fit<T: TryFrom<i128>>(n: i128) -> std::result::Result<T, String> {
    T::try_from(n).map_err(|_| format!("{n} is out of range"))
}

impl ColumnBuilder {
    /// An empty builder for a column of type `dt`, with room for `capacity` values.
    pub fn new(dt: &DataType, capacity: usize) -> ColumnBuilder {
        let cap = capacity;
        match dt {
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Int8 => ColumnBuilder::I8(Int8Builder::with_capacity(cap)),
            DataType::Int16 => ColumnBuilder::I16(Int16Builder::with_capacity(cap)),
            DataType::Int32 => ColumnBuilder::I32(Int32Builder::with_capacity(cap)),
            DataType::Int64 => ColumnBuilder::I64(Int64Builder::with_capacity(cap)),
            DataType::UInt8 => ColumnBuilder::U8(UInt8Builder::with_capacity(cap)),
            DataType::UInt16 => ColumnBuilder::U16(UInt16Builder::with_capacity(cap)),
            DataType::UInt32 => ColumnBuilder::U32(UInt32Builder::with_capacity(cap)),
            DataType::UInt64 => ColumnBuilder::U64(UInt64Builder::with_capacity(cap)),
            DataType::Float32 => ColumnBuilder::F32(Float32Builder::with_capacity(cap)),
            DataType::Float64 => ColumnBuilder::F64(Float64Builder::with_capacity(cap)),
            DataType::Decimal128(p, s) => ColumnBuilder::Dec(
                Decimal128Builder::with_capacity(cap).with_data_type(dt.clone()),
                *p,
                *s,
            ),
            DataType::Binary => ColumnBuilder::Blob(BinaryBuilder::with_capacity(cap, cap * 16)),
            DataType::Date32 => ColumnBuilder::Date(Date32Builder::with_capacity(cap)),
            DataType::Timestamp(_, tz) => ColumnBuilder::Ts(
                TimestampMicrosecondBuilder::with_capacity(cap).with_timezone_opt(tz.clone()),
            ),
            DataType::Time64(_) => {
                ColumnBuilder::Time(Time64MicrosecondBuilder::with_capacity(cap))
            }
            _ => ColumnBuilder::Text(StringBuilder::with_capacity(cap, cap * 16)),
        }
    }

    /// Appends one value.
    ///
    /// # Errors
    /// An integer out of the column's range, a decimal text that does not fit its precision
    /// and scale exactly, or a cell of another kind than the column holds (a driver's bug).
    pub fn push(&mut self, cell: Cell<'_>) -> std::result::Result<(), InvalidValue> {
        use ColumnBuilder as B;
        match (self, cell) {
            (b, Cell::Null) => each_builder!(b, x => x.append_null()),
            (B::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (B::I8(b), Cell::Int(n)) => b.append_value(fit(n)?),
            (B::I16(b), Cell::Int(n)) => b.append_value(fit(n)?),
            (B::I32(b), Cell::Int(n)) => b.append_value(fit(n)?),
            (B::I64(b), Cell::Int(n)) => b.append_value(fit(n)?),
            (B::U8(b), Cell::Int(n)) => b.append_value(fit(n)?),
            (B::U16(b), Cell::Int(n)) => b.append_value(fit(n)?),
            (B::U32(b), Cell::Int(n)) => b.append_value(fit(n)?),
            (B::U64(b), Cell::Int(n)) => b.append_value(fit(n)?),
            (B::F32(b), Cell::Float(f)) => b.append_value(f as f32),
            (B::F64(b), Cell::Float(f)) => b.append_value(f),
            (B::Dec(b, ..), Cell::Decimal(v)) => b.append_value(v),
            (B::Dec(b, p, s), Cell::DecimalText(text)) => {
                b.append_value(parse_decimal(&text, *p, *s)?)
            }
            (B::Text(b), Cell::Text(text)) => b.append_value(text),
            (B::Blob(b), Cell::Bytes(bytes)) => b.append_value(bytes),
            (B::Date(b), Cell::Days(d)) => b.append_value(d),
            (B::Ts(b), Cell::Micros(us)) => b.append_value(us),
            (B::Time(b), Cell::TimeMicros(us)) => b.append_value(us),
            (b, other) => {
                return Err(invalid!(
                    "a driver decoded {other:?} for a column of Arrow type {}, a bug in Sluice",
                    b.type_name()
                ))
            }
        }
        Ok(())
    }

    /// The values appended since the last call, as an array; the builder is left empty.
    pub fn finish(&mut self) -> ArrayRef {
        each_builder!(self, b => Arc::new(b.finish()))
    }

    fn type_name(&self) -> &'static str {
        match self {
            ColumnBuilder::Bool(_) => "Boolean",
            ColumnBuilder::I8(_) => "Int8",
            ColumnBuilder::I16(_) => "Int16",
            ColumnBuilder::I32(_) => "Int32",
            ColumnBuilder::I64(_) => "Int64",
            ColumnBuilder::U8(_) => "UInt8",
            ColumnBuilder::U16(_) => "UInt16",
            ColumnBuilder::U32(_) => "UInt32",
            ColumnBuilder::U64(_) => "UInt64",
            ColumnBuilder::F32(_) => "Float32",
            ColumnBuilder::F64(_) => "Float64",
            ColumnBuilder::Dec(..) => "Decimal128",
            ColumnBuilder::Text(_) => "Utf8",
            ColumnBuilder::Blob(_) => "Binary",
            ColumnBuilder::Date(_) => "Date32",
            ColumnBuilder::Ts(_) => "Timestamp(µs)",
            ColumnBuilder::Time(_) => "Time64(µs)",
        }
    }
}

/// Rows of one extraction turned into batches: one [`ColumnBuilder`] per column, a batch
/// handed out every `batch_size` rows.
pub struct RowBatcher<'a> {
    columns: &'a [DbColumn],
    source: &'a str,
    builders: Vec<ColumnBuilder>,
    batch_size: usize,
    /// Rows in the batch being built.
    rows: usize,
    /// Rows ended so far, over every batch.
    row_no: u64,
}

/// A finished batch: one array per column, and its row count.
pub type Arrays = (Vec<ArrayRef>, usize);

impl<'a> RowBatcher<'a> {
    /// A batcher for `columns` of source `source`, cutting batches of `batch_size` rows
    /// (at least 1).
    pub fn new(columns: &'a [DbColumn], source: &'a str, batch_size: usize) -> RowBatcher<'a> {
        let batch_size = batch_size.max(1);
        RowBatcher {
            columns,
            source,
            builders: columns
                .iter()
                .map(|c| ColumnBuilder::new(&c.data_type, batch_size))
                .collect(),
            batch_size,
            rows: 0,
            row_no: 0,
        }
    }

    /// Appends the value of column `i` of the row being built.
    ///
    /// # Errors
    /// [`crate::error::Error::Source`] naming the row (1-based) and column, when `cell` is
    /// `Err` (the driver could not decode the value) or does not fit the column.
    pub fn push(&mut self, i: usize, cell: std::result::Result<Cell<'_>, String>) -> Result<()> {
        cell.and_then(|c| self.builders[i].push(c).map_err(String::from))
            .map_err(|why| {
                super::extract::value_error(self.source, self.row_no + 1, &self.columns[i], &why)
            })
    }

    /// Ends the row being built; returns the batch when it is full.
    pub fn end_row(&mut self) -> Option<Arrays> {
        self.row_no += 1;
        self.rows += 1;
        (self.rows == self.batch_size).then(|| self.take())
    }

    /// The last batch: the rows not yet handed out, or an empty batch when the result had no
    /// row at all (so the reader sees the schema); `None` when nothing is left.
    pub fn finish(&mut self) -> Option<Arrays> {
        (self.rows > 0 || self.row_no == 0).then(|| self.take())
    }

    fn take(&mut self) -> Arrays {
        let arrays = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        (arrays, std::mem::take(&mut self.rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Decimal128Type, Int16Type};

    #[test]
    fn integers_are_checked_against_the_column_width() {
        let mut b = ColumnBuilder::new(&DataType::Int16, 4);
        b.push(Cell::Int(32_767)).unwrap();
        b.push(Cell::Null).unwrap();
        assert_eq!(
            b.push(Cell::Int(32_768)),
            Err("32768 is out of range".into())
        );
        let a = b.finish();
        let a = a.as_primitive::<Int16Type>();
        assert_eq!((a.len(), a.value(0), a.is_null(1)), (2, 32_767, true));
    }

    #[test]
    fn decimal_text_is_parsed_exactly_or_refused() {
        let mut b = ColumnBuilder::new(&DataType::Decimal128(5, 2), 4);
        b.push(Cell::DecimalText("-12.5".into())).unwrap();
        assert!(b.push(Cell::DecimalText("1.005".into())).is_err());
        let a = b.finish();
        assert_eq!(a.as_primitive::<Decimal128Type>().value(0), -1250);
        assert_eq!(a.data_type(), &DataType::Decimal128(5, 2));
    }

    #[test]
    fn a_cell_of_the_wrong_kind_is_an_error_not_a_panic() {
        let mut b = ColumnBuilder::new(&DataType::Date32, 1);
        let e = b.push(Cell::Text("2024-01-01".into())).unwrap_err();
        assert!(e.0.contains("Date32"), "{e}");
    }

    #[test]
    fn batches_are_cut_at_the_batch_size_and_an_empty_result_gives_one_empty_batch() {
        let columns = [DbColumn {
            name: "n".into(),
            db_type: "int".into(),
            data_type: DataType::Int64,
        }];
        let mut r = RowBatcher::new(&columns, "s", 2);
        let mut sizes = Vec::new();
        for n in 0..5 {
            r.push(0, Ok(Cell::Int(n))).unwrap();
            if let Some((_, rows)) = r.end_row() {
                sizes.push(rows);
            }
        }
        sizes.extend(r.finish().map(|(_, rows)| rows));
        assert_eq!(sizes, [2, 2, 1]);
        assert!(r.finish().is_none());
        let e = r.push(0, Err("bad".into())).unwrap_err().to_string();
        assert!(
            e.contains("row 6 of the result, column `n` (int): bad"),
            "{e}"
        );
        let mut empty = RowBatcher::new(&columns, "s", 2);
        assert_eq!(
            empty.finish().map(|(a, rows)| (a.len(), rows)),
            Some((1, 0))
        );
    }
}
