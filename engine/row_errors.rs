//! Row-level evaluation errors become row failures, not failed runs.
//!
//! DataFusion evaluates an expression a batch at a time, and one row's error — `make_date(2013,
//! 2, 30)`, `CAST('12x' AS INT)`, an integer divided by zero — fails the whole batch and so the
//! whole run, naming no row. A mapping expression that can fail on a row's values (see
//! [`can_fail_per_row`]) is therefore compiled into [`RowGuard`], an ordinary
//! scalar function that evaluates the expression itself:
//!
//! - on the whole batch first (the usual case costs one extra struct per batch);
//! - when that fails with a data error, row by row, so each failing row gets `NULL` for the value
//!   and the error text, and every other row its value.
//!
//! The result is a struct `{value, error}`; the compiler splits it into the expression's value
//! and an `eval.<name>` row rule whose reason is the error text, so the row is quarantined with
//! its source file and line like any other rule failure.
//!
//! Only data errors are per row: DataFusion's `Execution` errors and Arrow's cast, compute,
//! parse, overflow, invalid-argument and divide-by-zero errors. Anything else (an internal
//! error, memory exhausted, I/O) still fails the run, so a bug in Sluice or DataFusion never
//! turns into a quarantine full of rows.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions, StringBuilder, StructArray,
};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, Fields, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;

/// Name of the struct field holding the expression's value.
pub const VALUE_FIELD: &str = "value";
/// Name of the struct field holding a row's error text (`NULL` when the row evaluated).
pub const ERROR_FIELD: &str = "error";
/// The longest error text kept per row, in bytes; a cast error quotes the value, which can be a
/// whole CSV field.
const MAX_ERROR_BYTES: usize = 500;

/// Functions that return NULL rather than fail on a row's values (Sluice's own, see
/// [`crate::functions`], and DataFusion built-ins that accept any value of their types).
const NEVER_FAIL: &[&str] = &[
    "make_timestamp",
    "to_utc_timestamp",
    "to_minutes",
    "parse_decimal",
    "coalesce",
    "nullif",
    "concat",
    "concat_ws",
    "upper",
    "lower",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "length",
    "character_length",
    "abs",
    "round",
    "floor",
    "ceil",
    "greatest",
    "least",
];

/// Whether evaluating `expr` (over `schema`) can fail on one row's values, so that it needs a
/// [`RowGuard`]. It can when it reads a column and contains one of:
///
/// - a `CAST` to another type that is not text (`TRY_CAST` never fails);
/// - a function call, except those in [`NEVER_FAIL`];
/// - integer or decimal `/` or `%` by anything but a literal other than 0 and -1 (float
///   division gives infinity or NaN instead);
/// - `+`, `-` or `*` on dates, times, timestamps or intervals (an overflow is an error;
///   integer and decimal arithmetic wraps in DataFusion, as in its default configuration).
///
/// A constant expression (no column) fails on every row or on none, and is left alone.
pub fn can_fail_per_row(expr: &Expr, schema: &DFSchema) -> bool {
    if expr.column_refs().is_empty() {
        return false;
    }
    let mut found = false;
    let _ = expr.apply(|e| {
        found = node_can_fail(e, schema);
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

fn node_can_fail(e: &Expr, schema: &DFSchema) -> bool {
    let ty = |e: &Expr| e.get_type(schema).ok();
    match e {
        Expr::Cast(c) => {
            let from = ty(&c.expr);
            from.as_ref() != Some(c.field.data_type())
                && !matches!(
                    c.field.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
        }
        Expr::ScalarFunction(f) => !NEVER_FAIL.contains(&f.name()),
        Expr::BinaryExpr(b) => match b.op {
            Operator::Divide | Operator::Modulo => {
                let float = ty(e).is_some_and(|t| t.is_floating());
                let safe_divisor = matches!(b.right.as_ref(), Expr::Literal(v, _)
                    if v.to_string().parse::<f64>().is_ok_and(|x| x != 0.0 && x != -1.0));
                !float && !safe_divisor
            }
            Operator::Plus | Operator::Minus | Operator::Multiply => [ty(&b.left), ty(&b.right)]
                .iter()
                .flatten()
                .any(DataType::is_temporal),
            _ => false,
        },
        _ => false,
    }
}

/// The message of a data error on a row's values, or `None` when `e` is not one (then the run
/// fails with `e`).
pub fn row_error_message(e: &DataFusionError) -> Option<String> {
    let message = match e.find_root() {
        DataFusionError::Execution(m) => m.clone(),
        DataFusionError::ArrowError(a, _) => match a.as_ref() {
            ArrowError::CastError(_)
            | ArrowError::ComputeError(_)
            | ArrowError::ParseError(_)
            | ArrowError::DivideByZero
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::InvalidArgumentError(_) => a.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    Some(truncate(message))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// A mapping expression evaluated so that a row's error is that row's failure.
///
/// Called with the columns the expression reads (in [`RowGuard::args`] order); returns
/// `struct<value: T, error: Utf8>` where `T` is the expression's type.
#[derive(Debug)]
pub struct RowGuard {
    /// The expression, after type coercion and simplification, as planned.
    expr: Expr,
    /// The columns it reads, in argument order.
    columns: Vec<Column>,
    input: SchemaRef,
    physical: Arc<dyn PhysicalExpr>,
    value_type: DataType,
    signature: Signature,
}

impl RowGuard {
    /// Compiles `expr`, which reads columns of `schema`, with the session's settings.
    ///
    /// # Errors
    /// DataFusion's, when the expression cannot be planned on its own (a subquery, an
    /// aggregate): the caller then keeps the expression unguarded.
    pub fn new(state: &SessionState, expr: Expr, schema: &DFSchema) -> Result<RowGuard> {
        let mut columns: Vec<Column> = expr.column_refs().into_iter().cloned().collect();
        columns.sort_by_key(|c| c.flat_name());
        let mut fields = Vec::with_capacity(columns.len());
        for c in &columns {
            let (q, f) = schema.qualified_field_from_column(c)?;
            let nullable = Arc::new(f.as_ref().clone().with_nullable(true));
            fields.push((q.cloned(), nullable));
        }
        let input_schema = DFSchema::new_with_metadata(fields, HashMap::new())?;
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::new(input_schema.clone()))
                .with_config_options(Arc::clone(state.config_options()))
                .with_current_time()
                .build(),
        );
        let expr = simplifier.simplify(simplifier.coerce(expr, &input_schema)?)?;
        let physical = state.create_physical_expr(expr.clone(), &input_schema)?;
        let input: SchemaRef = Arc::new(input_schema.as_arrow().clone());
        let value_type = physical.data_type(&input)?;
        let types = input
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let volatility = if expr.is_volatile() {
            Volatility::Volatile
        } else {
            Volatility::Immutable
        };
        Ok(RowGuard {
            expr,
            columns,
            input,
            physical,
            value_type,
            signature: Signature::exact(types, volatility),
        })
    }

    /// The arguments to call the function with: the columns the expression reads.
    pub fn args(&self) -> Vec<Expr> {
        self.columns.iter().cloned().map(Expr::Column).collect()
    }

    /// The type of the expression's value.
    pub fn value_type(&self) -> &DataType {
        &self.value_type
    }

    fn fields(&self) -> Fields {
        Fields::from(vec![
            Field::new(VALUE_FIELD, self.value_type.clone(), true),
            Field::new(ERROR_FIELD, DataType::Utf8, true),
        ])
    }

    /// `(values, errors)` for `batch`: the whole batch at once, or row by row when that fails
    /// with a data error.
    fn evaluate(&self, batch: &RecordBatch) -> Result<(ArrayRef, ArrayRef)> {
        let rows = batch.num_rows();
        match self.physical.evaluate(batch) {
            Ok(v) => Ok((v.into_array(rows)?, new_null_array(&DataType::Utf8, rows))),
            Err(e) if row_error_message(&e).is_some() => self.evaluate_rows(batch),
            Err(e) => Err(e),
        }
    }

    fn evaluate_rows(&self, batch: &RecordBatch) -> Result<(ArrayRef, ArrayRef)> {
        let mut values: Vec<ArrayRef> = Vec::with_capacity(batch.num_rows());
        let mut errors = StringBuilder::new();
        for i in 0..batch.num_rows() {
            match self.physical.evaluate(&batch.slice(i, 1)) {
                Ok(v) => {
                    values.push(v.into_array(1)?);
                    errors.append_null();
                }
                Err(e) => match row_error_message(&e) {
                    Some(m) => {
                        values.push(new_null_array(&self.value_type, 1));
                        errors.append_value(m);
                    }
                    None => return Err(e),
                },
            }
        }
        let refs: Vec<&dyn Array> = values.iter().map(|a| a.as_ref()).collect();
        let values = if refs.is_empty() {
            new_null_array(&self.value_type, 0)
        } else {
            concat(&refs)?
        };
        Ok((values, Arc::new(errors.finish())))
    }
}

impl PartialEq for RowGuard {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.columns == other.columns && self.input == other.input
    }
}

impl Eq for RowGuard {}

impl Hash for RowGuard {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.expr.hash(state);
        self.columns.hash(state);
    }
}

impl ScalarUDFImpl for RowGuard {
    fn name(&self) -> &str {
        "row_guard"
    }

    fn display_name(&self, _args: &[Expr]) -> Result<String> {
        Ok(format!("row_guard({})", self.expr))
    }

    fn schema_name(&self, _args: &[Expr]) -> Result<String> {
        Ok(format!("row_guard({})", self.expr.schema_name()))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .into_iter()
            .map(|a| a.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.input),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let (values, errors) = self.evaluate(&batch)?;
        let out = StructArray::try_new(self.fields(), vec![values, errors], None)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// One part of a [`RowGuard`]'s result: `row_guard_value(s)` or `row_guard_error(s)`.
///
/// DataFusion's `get_field` would do, but its optimizer moves `get_field` towards the scans
/// (`push_down_leaf_projections`), through the projection that computes the struct, and fails
/// there; these stay where they are written.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RowGuardPart {
    name: &'static str,
    index: usize,
    signature: Signature,
}

impl RowGuardPart {
    /// `row_guard_value`: the expression's value.
    pub fn value() -> Self {
        Self::new("row_guard_value", 0)
    }

    /// `row_guard_error`: the row's error text, `NULL` when it evaluated.
    pub fn error() -> Self {
        Self::new("row_guard_error", 1)
    }

    fn new(name: &'static str, index: usize) -> Self {
        RowGuardPart {
            name,
            index,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for RowGuardPart {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(DataType::Struct(fields)) if fields.len() == 2 => {
                Ok(fields[self.index].data_type().clone())
            }
            other => datafusion::common::plan_err!(
                "{} expects a row_guard struct, got {other:?}",
                self.name
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let Some(arg) = args.args.into_iter().next() else {
            return datafusion::common::exec_err!("{} takes one argument", self.name);
        };
        let array = arg.into_array(rows)?;
        let Some(s) = array.as_any().downcast_ref::<StructArray>() else {
            return datafusion::common::exec_err!("{} expects a struct", self.name);
        };
        Ok(ColumnarValue::Array(Arc::clone(s.column(self.index))))
    }
}

/// `expr` wrapped in a [`RowGuard`], or `None` when it cannot fail per row or cannot be
/// planned on its own.
pub fn guard(state: &SessionState, expr: &Expr, schema: &DFSchema) -> Option<Expr> {
    if !can_fail_per_row(expr, schema) {
        return None;
    }
    let guard = RowGuard::new(state, expr.clone(), schema).ok()?;
    if expr.get_type(schema).ok()? != *guard.value_type() {
        return None;
    }
    let args = guard.args();
    Some(ScalarUDF::from(guard).call(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_per_row_and_bugs_fail_the_run() {
        let cast = DataFusionError::ArrowError(
            Box::new(ArrowError::CastError(
                "Cannot cast string '12x' to Int32".into(),
            )),
            None,
        );
        assert_eq!(
            row_error_message(&cast).as_deref(),
            Some("Cast error: Cannot cast string '12x' to Int32")
        );
        let date = DataFusionError::Execution("Unable to parse date from 2013, 2, 30".into());
        assert!(row_error_message(&date.context("in projection")).is_some());
        for fatal in [
            DataFusionError::Internal("unexpected array type".into()),
            DataFusionError::ResourcesExhausted("memory limit".into()),
            DataFusionError::ArrowError(
                Box::new(ArrowError::MemoryError("allocation".into())),
                None,
            ),
        ] {
            assert_eq!(row_error_message(&fatal), None, "{fatal}");
        }
    }

    #[test]
    fn only_expressions_that_can_fail_on_a_value_are_guarded() {
        use datafusion::arrow::datatypes::{IntervalUnit, TimeUnit};
        use datafusion::functions::expr_fn::{make_date, upper};
        use datafusion::logical_expr::{cast, col, lit, try_cast};
        use datafusion::scalar::ScalarValue;
        let schema = DFSchema::try_from(datafusion::arrow::datatypes::Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("d", DataType::Interval(IntervalUnit::MonthDayNano), true),
        ]))
        .unwrap();
        let fails = |e: Expr| can_fail_per_row(&e, &schema);
        // Casts that can fail, and those that cannot.
        assert!(fails(cast(col("i"), DataType::Int32)));
        assert!(fails(cast(col("s"), DataType::Int64)));
        assert!(!fails(cast(col("i"), DataType::Utf8)));
        assert!(!fails(try_cast(col("s"), DataType::Int64)));
        // Integer division and remainder, unless by a literal other than 0 and -1.
        assert!(fails(col("i") / col("i")));
        assert!(fails(col("i") / lit(0i64)));
        assert!(fails(col("i") % lit(-1i64)));
        assert!(!fails(col("i") / lit(100i64)));
        assert!(!fails(col("f") / col("f")));
        // Integer arithmetic wraps; temporal arithmetic can overflow.
        assert!(!fails(col("i") * lit(2i64) + col("i")));
        assert!(fails(col("ts") + col("d")));
        // Functions.
        assert!(fails(make_date(col("i"), col("i"), col("i"))));
        assert!(!fails(upper(col("s"))));
        // Plain columns and constants.
        assert!(!fails(col("i")));
        assert!(!fails(cast(
            lit(ScalarValue::Utf8(Some("x".into()))),
            DataType::Int32
        )));
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate(long);
        assert!(cut.len() <= MAX_ERROR_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
