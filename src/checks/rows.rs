//! The rows a row-level check rejects, and the rows no check rejects: the
//! same queries the checks count with, so that what a check reports, what
//! a quarantine receives and what is left out downstream always agree.
//!
//! All of them are lazy DataFusion plans over the table: they stream
//! wherever the engine runs (a `unique` check is a window per key, a
//! `relationships` check a join with the other table's distinct values).

use datafusion::common::JoinType;
use datafusion::functions_aggregate::count::count_udaf;
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
