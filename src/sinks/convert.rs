//! Column types BI readers handle everywhere, at every nesting level:
//! timestamps as microseconds UTC (naive ones taken as UTC), no unsigned
//! integers, plain UTF-8 strings and binaries, no dictionaries, Date32,
//! Float32 for Float16, `List` for the large and view list variants.
//!
//! A column whose type changes goes through [`bi_cast_udf`], which casts
//! with overflow checks and names the column (and the nested field) whose
//! value does not fit.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt64Array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use datafusion::prelude::DataFrame;

use crate::engine::expr::column;

/// The BI-safe type for a column type (see the module docs).
pub fn safe_type(t: &DataType) -> DataType {
    use DataType::*;
    let field = |f: &Arc<Field>| Arc::new(f.as_ref().clone().with_data_type(safe_type(f.data_type())));
    match t {
        Timestamp(_, _) => Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        UInt8 => Int16,
        UInt16 => Int32,
        UInt32 | UInt64 => Int64,
        Utf8View | LargeUtf8 => Utf8,
        BinaryView | LargeBinary => Binary,
        Dictionary(_, v) => safe_type(v),
        Date64 => Date32,
        Float16 => Float32,
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) => List(field(f)),
        FixedSizeList(f, n) => FixedSizeList(field(f), *n),
        Struct(fields) => Struct(fields.iter().map(field).collect()),
        Map(f, sorted) => Map(field(f), *sorted),
        other => other.clone(),
    }
}

/// Casts every column whose type is not BI-safe (see the module docs).
///
/// # Errors
/// A cast DataFusion cannot plan.
pub fn bi_safe(df: DataFrame) -> datafusion::error::Result<DataFrame> {
    let fields: Vec<Field> = df.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    if fields.iter().all(|f| safe_type(f.data_type()) == *f.data_type()) {
        return Ok(df);
    }
    let exprs: Vec<Expr> = fields
        .iter()
        .map(|f| {
            if safe_type(f.data_type()) == *f.data_type() {
                column(f.name())
            } else {
                bi_cast_udf()
                    .call(vec![column(f.name()), lit(f.name().as_str())])
                    .alias(f.name())
            }
        })
        .collect();
    df.select(exprs)
}

/// The name of [`bi_cast_udf`].
pub const BI_CAST: &str = "crmflow_bi_cast";

/// `crmflow_bi_cast(value, 'column name')`: the value as [`safe_type`] of
/// its type; an unsigned 64-bit value above Int64's range is an error that
/// names the column and the nested field.
pub fn bi_cast_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(BiCast {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BiCast {
    signature: Signature,
}

impl ScalarUDFImpl for BiCast {
    fn name(&self) -> &str {
        BI_CAST
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(safe_type(&args[0]))
    }

    /// The input's nullability is kept.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let f = &args.arg_fields[0];
        Ok(Arc::new(Field::new(
            f.name(),
            safe_type(f.data_type()),
            f.is_nullable(),
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let name = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(n))) => n.clone(),
            _ => return datafusion::common::exec_err!("{BI_CAST}: the second argument must be the column name"),
        };
        let values = args.args[0].to_array(args.number_rows)?;
        if let Some((path, v)) = overflow(values.as_ref(), &name) {
            return Err(DataFusionError::Execution(format!(
                "column \"{path}\" holds {v}, above the largest signed 64-bit integer (9223372036854775807); \
                 BI readers have no unsigned 64-bit type: cast it in SQL (e.g. to DECIMAL(20, 0) or DOUBLE)"
            )));
        }
        let want = safe_type(values.data_type());
        let opts = CastOptions {
            safe: false,
            ..Default::default()
        };
        let out: ArrayRef = cast_with_options(values.as_ref(), &want, &opts)
            .map_err(|e| DataFusionError::Execution(format!("column \"{name}\": {e}")))?;
        Ok(ColumnarValue::Array(out))
    }
}

/// The first unsigned 64-bit value above `i64::MAX` below `a`, with the
/// path of the field holding it (`col.field[]`).
fn overflow(a: &dyn Array, path: &str) -> Option<(String, u64)> {
    match a.data_type() {
        DataType::UInt64 => {
            let u = a.as_any().downcast_ref::<UInt64Array>()?;
            u.iter()
                .flatten()
                .find(|v| *v > i64::MAX as u64)
                .map(|v| (path.to_string(), v))
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            fields
                .iter()
                .zip(s.columns())
                .find_map(|(f, c)| overflow(c.as_ref(), &format!("{path}.{}", f.name())))
        }
        DataType::List(_) => overflow(a.as_list::<i32>().values().as_ref(), &format!("{path}[]")),
        DataType::LargeList(_) => overflow(a.as_list::<i64>().values().as_ref(), &format!("{path}[]")),
        DataType::FixedSizeList(_, _) => overflow(a.as_fixed_size_list().values().as_ref(), &format!("{path}[]")),
        DataType::Map(_, _) => {
            let m = a.as_map();
            overflow(m.keys().as_ref(), &format!("{path}.key"))
                .or_else(|| overflow(m.values().as_ref(), &format!("{path}.value")))
        }
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            overflow(d.values().as_ref(), path)
        }
        _ => None,
    }
}
