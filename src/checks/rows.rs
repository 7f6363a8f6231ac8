//! The rows a row-level check rejects, and the rows no check rejects: the
//! same queries the checks count with, so that what a check reports, what
//! a quarantine receives and what is left out downstream always agree.
//!
//! All of them are lazy DataFusion plans over the table: they stream
//! wherever the engine runs (a `unique` check is a window per key, a
//! `relationships` check a join with the other table's distinct values).

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::JoinType;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{Expr, ExprFunctionExt, WindowFunctionDefinition, lit};
use datafusion::prelude::{DataFrame, SessionContext, col};

use super::{CheckKind, CheckSpec, Relationships, failing_predicate, quoted};

/// The table's own columns, unqualified (to select them back after joins
/// and windows).
fn columns(table: &DataFrame) -> Vec<Expr> {
    table.schema().fields().iter().map(|f| col(quoted(f.name()))).collect()
}

/// `count(1) OVER (PARTITION BY keys)`: how often each row's key occurs
/// (null keys form one group, as in `GROUP BY`).
fn per_key_count(keys: &[String], alias: &str) -> datafusion::error::Result<Expr> {
    let keys: Vec<Expr> = keys.iter().map(|c| col(quoted(c))).collect();
    Ok(Expr::from(WindowFunction::new(
        WindowFunctionDefinition::AggregateUDF(count_udaf()),
        vec![lit(1)],
    ))
    .partition_by(keys)
    .build()?
    .alias(alias))
}

/// The rows whose key occurs more than once (whole rows, every copy).
pub(super) fn duplicates(table: &DataFrame, keys: &[String]) -> datafusion::error::Result<DataFrame> {
    table
        .clone()
        .window(vec![per_key_count(keys, "__n")?])?
        .filter(col("__n").gt(lit(1i64)))?
        .select(columns(table))
}

/// How many rows [`duplicates`] holds, counted by a hash aggregate (how
/// often each key occurs, then the sum over keys that occur more than once)
/// instead of its window, which sorts the whole table by the key: the same
/// groups (null keys form one, as in the window's `PARTITION BY`), so the
/// same number. Except on float keys, which keep the window: a `GROUP BY`
/// puts -0.0 with 0.0, the window's sort keeps them apart, and the count
/// must be the rows a quarantine takes.
///
/// # Errors
/// DataFusion's.
pub(super) async fn duplicate_count(table: &DataFrame, keys: &[String]) -> datafusion::error::Result<u64> {
    let schema = table.schema();
    let groups_as_sorted = |name: &String| {
        schema
            .field_with_unqualified_name(name)
            .is_ok_and(|f| is_exact(f.data_type()))
    };
    if !keys.iter().all(groups_as_sorted) {
        return Ok(duplicates(table, keys)?.count().await? as u64);
    }
    let keys: Vec<Expr> = keys.iter().map(|c| col(quoted(c))).collect();
    let counted = table
        .clone()
        .aggregate(keys, vec![count(lit(1)).alias("__n")])?
        .filter(col("__n").gt(lit(1i64)))?
        .aggregate(vec![], vec![sum(col("__n")).alias("__dups")])?
        .collect()
        .await?;
    let n = counted
        .first()
        .filter(|b| b.num_rows() == 1)
        .map(|b| b.column(0).as_primitive::<Int64Type>())
        .and_then(|a| a.is_valid(0).then(|| a.value(0)))
        .unwrap_or(0);
    Ok(n as u64)
}

/// Whether values of `t` that compare equal are the same bits, so that
/// grouping and sorting form the same groups (no floats inside).
fn is_exact(t: &DataType) -> bool {
    use DataType::*;
    match t {
        Boolean | Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => true,
        Date32 | Date64 | Time32(_) | Time64(_) | Timestamp(_, _) | Duration(_) => true,
        Decimal32(_, _) | Decimal64(_, _) | Decimal128(_, _) | Decimal256(_, _) => true,
        Dictionary(_, v) => is_exact(v),
        t => t.is_integer(),
    }
}

/// The distinct values of the target column, as `__to` of relation `alias`.
async fn target(ctx: &SessionContext, r: &Relationships, alias: &str) -> datafusion::error::Result<DataFrame> {
    ctx.table(r.to_table.as_str())
        .await?
        .select(vec![col(quoted(&r.to_column)).alias("__to")])?
        .distinct()?
        .alias(alias)
}

/// The rows whose non-null value is not in the target: one anti-join.
pub(super) async fn orphans(
    table: &DataFrame,
    r: &Relationships,
    ctx: &SessionContext,
) -> datafusion::error::Result<DataFrame> {
    let key = col(quoted(&r.column));
    table.clone().filter(key.clone().is_not_null())?.join_on(
        target(ctx, r, "__target").await?,
        JoinType::LeftAnti,
        vec![key.eq(col("__target.__to"))],
    )
}

/// The rows of `table` that a row-level check rejects (`None` for a check
/// that is not row-level), with the table's columns.
///
/// # Errors
/// A plan DataFusion cannot build.
pub async fn failing_rows(
    kind: &CheckKind,
    table: &DataFrame,
    ctx: &SessionContext,
) -> datafusion::error::Result<Option<DataFrame>> {
    Ok(match kind {
        CheckKind::Unique(keys) => Some(duplicates(table, keys)?),
        CheckKind::Relationships(r) => Some(orphans(table, r, ctx).await?),
        other => match failing_predicate(other, table)? {
            Some(p) => Some(table.clone().filter(p)?),
            None => None,
        },
    })
}

/// The rows of `table` that none of the row-level `checks` rejects.
///
/// The windows of `unique` checks are computed over the whole table first
/// (a key is duplicated whatever else is wrong with its rows), then one
/// filter drops the rows any counting check rejects, then each
/// `relationships` check keeps null values and values found in its target
/// (a left join with the target's distinct values).
///
/// # Errors
/// A plan DataFusion cannot build.
pub async fn passing_rows(
    table: &DataFrame,
    checks: &[CheckSpec],
    ctx: &SessionContext,
) -> datafusion::error::Result<DataFrame> {
    let mut windows = Vec::new();
    let mut rejected: Vec<Expr> = Vec::new();
    let mut relationships = Vec::new();
    for (i, c) in checks.iter().enumerate() {
        match &c.kind {
            CheckKind::Unique(keys) => {
                let name = format!("__u{i}");
                windows.push(per_key_count(keys, &name)?);
                rejected.push(col(name).gt(lit(1i64)));
            }
            CheckKind::Relationships(r) => relationships.push((i, r)),
            other => {
                // A predicate that is null (a null compared) rejects nothing,
                // as it counts nothing.
                if let Some(p) = failing_predicate(other, table)? {
                    rejected.push(p.is_true());
                }
            }
        }
    }
    let mut df = table.clone();
    if !windows.is_empty() {
        df = df.window(windows)?;
    }
    if let Some(any) = rejected.into_iter().reduce(Expr::or) {
        df = df.filter(!any)?;
    }
    for (i, r) in relationships {
        let alias = format!("__target{i}");
        let to = col(format!("{alias}.__to"));
        let key = col(quoted(&r.column));
        df = df
            .join_on(
                target(ctx, r, &alias).await?,
                JoinType::Left,
                vec![key.clone().eq(to.clone())],
            )?
            .filter(key.is_null().or(to.is_not_null()))?;
    }
    df.select(columns(table))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// Keys with nulls, NaN, both zeros and repeats, in three partitions:
    /// `id` (Int64), `x` (Float64) and `s` (Utf8); `n` (Int64) is the row
    /// number, unique.
    fn table() -> DataFrame {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let first = std::cell::Cell::new(0i64);
        let batch = |id: Vec<Option<i64>>, x: Vec<Option<f64>>, s: Vec<Option<&str>>| {
            let n: Vec<i64> = (first.get()..first.get() + id.len() as i64).collect();
            first.set(first.get() + id.len() as i64);
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(id)),
                    Arc::new(Float64Array::from(x)),
                    Arc::new(StringArray::from(s)),
                    Arc::new(Int64Array::from(n)),
                ],
            )
            .unwrap()
        };
        let parts = vec![
            vec![batch(
                vec![Some(1), Some(2), None, Some(3)],
                vec![Some(0.0), Some(f64::NAN), None, Some(1.5)],
                vec![Some("a"), None, Some("b"), Some("a")],
            )],
            vec![batch(
                vec![Some(2), None, Some(4)],
                vec![Some(-0.0), Some(f64::NAN), None],
                vec![Some("a"), None, Some("c")],
            )],
            vec![batch(
                vec![Some(5), Some(1), Some(6), None],
                vec![Some(1.5), Some(2.0), Some(0.0), Some(3.0)],
                vec![None, Some("a"), Some("b"), Some("b")],
            )],
        ];
        let ctx = SessionContext::new();
        ctx.read_table(Arc::new(MemTable::try_new(schema, parts).unwrap()))
            .unwrap()
    }

    /// By hand: `id` repeats 1 (twice), 2 (twice) and null (three times): 7
    /// rows; `[id, s]`: (1, a) twice and (null, b) twice: 4; `s`: a four
    /// times, null three times, b three times: 10.
    #[tokio::test]
    async fn duplicates_are_counted_by_hand() {
        let t = table();
        let count = |keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let t = t.clone();
            async move { duplicate_count(&t, &keys).await.unwrap() }
        };
        assert_eq!(count(&["id"]).await, 7);
        assert_eq!(count(&["id", "s"]).await, 4);
        assert_eq!(count(&["s"]).await, 10);
        // No key repeats: the sum over no keys is null, and counts 0.
        assert_eq!(count(&["n"]).await, 0);
        assert_eq!(count(&["id", "n"]).await, 0);
    }

    /// The count and the rows a quarantine takes agree for every key. The
    /// keys with `x` (NaN, -0.0 against 0.0, nulls) check that float keys
    /// are counted by the window: by the aggregate, `x` counts 9, not 8.
    #[tokio::test]
    async fn the_count_agrees_with_the_window_rows() {
        let t = table();
        for keys in [
            vec!["id"],
            vec!["x"],
            vec!["s"],
            vec!["id", "s"],
            vec!["x", "s"],
            vec!["id", "x", "s"],
            vec!["n"],
        ] {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let rows = duplicates(&t, &keys).unwrap().count().await.unwrap() as u64;
            assert_eq!(duplicate_count(&t, &keys).await.unwrap(), rows, "keys {keys:?}");
        }
    }
}
