//! Expression helpers shared by stages and sinks: column references that
//! are never parsed (dots and capitals kept) and casts.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, cast};

/// A column reference that is never parsed (dots and capitals kept).
pub fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// `CAST(col AS DOUBLE)`.
pub fn f64_col(name: &str) -> Expr {
    cast(column(name), DataType::Float64)
}
