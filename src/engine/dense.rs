//! Partial aggregates by one integer key, indexed by the key itself.
//!
//! The nightly job aggregates each event table by `customer_id` several
//! times (features, training features, the training target, the RFM
//! summary), 10M rows in random customer order into a million groups. In
//! DataFusion's partial aggregate each row is hashed and looked up in a hash
//! table far larger than the cache (`GroupValuesPrimitive::intern`, a fifth
//! of the SPEC job's CPU), before the accumulators are updated. Customer ids
//! are small dense integers, so the key can be the group index itself:
//! [`DenseRule`] replaces a `Partial` [`AggregateExec`] grouped by one
//! integer column with [`DenseAggregateExec`], which calls the same
//! DataFusion accumulators (`GroupsAccumulator`) with `group index = key`,
//! and emits the same partial states. The final phase above it is
//! DataFusion's, unchanged. A one-phase (`Single`, `SinglePartitioned`)
//! aggregate, as after a join on the key (the discounted CLV), is replaced
//! too and emits final values.
//!
//! Each partition sees its rows in the same order as the hash aggregate
//! would, so each group's partial state is the same value, bit for bit, and
//! so are the results. Keys outside the dense range (null, negative, or
//! beyond `max(2^20, 4 x the groups seen so far)`, so that a sparse key
//! space never allocates much more than a hash table would) go through
//! DataFusion's own hash group values in the same operator; the final
//! phase merges the states of a key from both sides. (A one-phase aggregate
//! keeps each key on one side: its dense range stops below the first
//! non-negative key it hashed.) Under a memory limit the plan runs
//! DataFusion's aggregate instead, which can spill (see `execute`).
//!
//! Only the local engine uses it: Ballista's executors do not know this
//! operator, and plan their aggregates themselves.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{cast, filter, filter_record_batch, not};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, AggregateOutputMode, aggregate_expressions};
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, InputOrderMode,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

/// Keys below this are always dense, whatever the number of groups seen.
const MIN_RANGE: u64 = 1 << 20;

/// The physical optimizer rule: each eligible `Partial` aggregate becomes a
/// [`DenseAggregateExec`] (see [`eligible`]).
#[derive(Debug, Default)]
pub struct DenseRule;

impl PhysicalOptimizerRule for DenseRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|p| {
            if let Some(agg) = p.downcast_ref::<AggregateExec>()
                && eligible(agg)
            {
                return Ok(Transformed::yes(Arc::new(DenseAggregateExec::new(agg.clone())) as _));
            }
            Ok(Transformed::no(p))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "crmflow_dense_partial_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A `Partial`, `Single` or `SinglePartitioned` aggregate of unordered input, grouped by one expression of a
/// signed or narrow unsigned integer type (one grouping set, no `LIMIT`),
/// whose aggregates all have a `GroupsAccumulator`.
pub fn eligible(agg: &AggregateExec) -> bool {
    let group = agg.group_expr();
    matches!(
        agg.mode(),
        AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
    ) && *agg.input_order_mode() == InputOrderMode::Linear
        && agg.limit_options().is_none()
        && agg.dynamic_expressions_produced().is_empty()
        && group.is_single()
        && !group.has_grouping_set()
        && group.expr().len() == 1
        && group.expr()[0]
            .0
            .data_type(&agg.input_schema())
            .is_ok_and(|t| key_type(&t))
        && agg.aggr_expr().iter().all(|a| a.groups_accumulator_supported())
}

/// Types whose every value is an `i64`.
fn key_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

/// A `Partial` aggregate by one integer key whose groups are indexed by the
/// key (module docs). Same schema, partitioning and partial states as the
/// [`AggregateExec`] it replaces.
#[derive(Debug)]
pub struct DenseAggregateExec {
    agg: AggregateExec,
    metrics: ExecutionPlanMetricsSet,
}

impl DenseAggregateExec {
    pub fn new(agg: AggregateExec) -> DenseAggregateExec {
        DenseAggregateExec {
            agg,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for DenseAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "DenseAggregateExec: ")?;
        self.agg.fmt_as(t, f)
    }
}

impl ExecutionPlan for DenseAggregateExec {
    fn name(&self) -> &str {
        "DenseAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.agg.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.agg.input()]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.agg.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.agg.apply_expressions(f)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let agg = Arc::new(self.agg.clone())
            .replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))?;
        match agg.downcast_ref::<AggregateExec>() {
            Some(a) => Ok(Arc::new(DenseAggregateExec::new(a.clone()))),
            None => Ok(agg),
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        // Under a memory limit the aggregate runs as DataFusion's: one with
        // final output cannot emit early, and DataFusion's spills. A partial
        // one could emit early, but at 10M customers under 2 GiB its dense
        // states (10M keys a partition) filled the reservation again and
        // again: the demo's features step took 32.1 s against 18.4 s, with
        // 82 s of system time re-allocating them (README "Performance").
        if matches!(context.memory_pool().memory_limit(), MemoryLimit::Finite(_)) {
            return self.agg.execute(partition, context);
        }
        let input = self.agg.input().execute(partition, Arc::clone(&context))?;
        let schema = self.agg.schema();
        let table = Table::new(&self.agg, partition, &context, &self.metrics)?;
        let state = Running {
            input,
            table,
            out: VecDeque::new(),
            done: false,
            batch_size: context.session_config().batch_size().max(1),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = futures::stream::try_unfold(state, |mut s| async move {
            loop {
                if let Some(b) = s.out.pop_front() {
                    s.baseline.output_rows().add(b.num_rows());
                    return Ok(Some((b, s)));
                }
                if s.done {
                    s.baseline.done();
                    return Ok(None);
                }
                match s.input.next().await {
                    Some(batch) => {
                        let batch = batch?;
                        let _timer = s.baseline.elapsed_compute().timer();
                        s.table.update(&batch)?;
                        s.table.reservation.resize(s.table.size());
                    }
                    None => {
                        let _timer = s.baseline.elapsed_compute().timer();
                        s.done = true;
                        s.table.emit(&mut s.out, s.batch_size)?;
                        s.table.reservation.free();
                    }
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

struct Running {
    input: SendableRecordBatchStream,
    table: Table,
    out: VecDeque<RecordBatch>,
    done: bool,
    batch_size: usize,
    baseline: BaselineMetrics,
}

/// One aggregate's arguments, filter and two accumulators: for the dense
/// groups and for the others.
struct Agg {
    args: Vec<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    dense: Box<dyn GroupsAccumulator>,
    other: Box<dyn GroupsAccumulator>,
    expr: Arc<AggregateFunctionExpr>,
    final_output: bool,
}

/// The groups of one partition: keys `0..seen.len()` indexed by value, the
/// others by DataFusion's hash group values.
struct Table {
    schema: SchemaRef,
    key: Arc<dyn PhysicalExpr>,
    key_type: DataType,
    group_schema: SchemaRef,
    aggs: Vec<Agg>,
    /// Whether dense group `k` has had a row.
    seen: Vec<bool>,
    n_seen: usize,
    other: Box<dyn GroupValues>,
    indices: Vec<usize>,
    reservation: MemoryReservation,
    other_rows: Count,
    /// Final values rather than partial states (`Single*` modes). A key
    /// must then stay on one side: the dense range never grows past the
    /// smallest non-negative key hashed (`hashed_from`).
    final_output: bool,
    hashed_from: u64,
}

impl Table {
    fn new(
        agg: &AggregateExec,
        partition: usize,
        context: &TaskContext,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Table> {
        let input_schema = agg.input_schema();
        let args = aggregate_expressions(agg.aggr_expr(), agg.mode(), agg.group_expr().num_group_exprs())?;
        let aggs = agg
            .aggr_expr()
            .iter()
            .zip(args)
            .zip(agg.filter_expr())
            .map(|((a, args), filter)| {
                Ok(Agg {
                    args,
                    filter: filter.clone(),
                    dense: a.create_groups_accumulator()?,
                    other: a.create_groups_accumulator()?,
                    expr: Arc::clone(a),
                    final_output: agg.mode().output_mode() == AggregateOutputMode::Final,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let group_schema = agg.group_expr().group_schema(&input_schema)?;
        let key = Arc::clone(&agg.group_expr().expr()[0].0);
        let key_type = key.data_type(&input_schema)?;
        // Accounted, never refused: the plan runs here only without a limit.
        let reservation =
            MemoryConsumer::new(format!("DenseAggregateExec[{partition}]")).register(context.memory_pool());
        Ok(Table {
            schema: agg.schema(),
            key,
            key_type,
            other: new_group_values(Arc::clone(&group_schema), &GroupOrdering::None)?,
            group_schema,
            aggs,
            seen: Vec::new(),
            n_seen: 0,
            indices: Vec::new(),
            reservation,
            other_rows: MetricBuilder::new(metrics).counter("hashed_rows", partition),
            final_output: agg.mode().output_mode() == AggregateOutputMode::Final,
            hashed_from: u64::MAX,
        })
    }

    /// The dense range allowed now (module docs).
    fn range(&self) -> u64 {
        MIN_RANGE
            .max(4 * (self.n_seen + self.other.len()) as u64)
            .min(self.hashed_from)
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key = self.key.evaluate(batch)?.into_array(batch.num_rows())?;
        let wide = cast(&key, &DataType::Int64)?;
        let wide = wide.as_primitive::<Int64Type>();
        let range = self.range();
        let dense = |k: i64| k >= 0 && (k as u64) < range;
        if wide.null_count() == 0 && wide.values().iter().all(|&k| dense(k)) {
            return self.update_dense(batch, wide);
        }
        let mask: BooleanArray = wide.iter().map(|k| Some(k.is_some_and(dense))).collect();
        let part = filter_record_batch(batch, &mask)?;
        if part.num_rows() > 0 {
            let keys = filter(wide, &mask)?;
            self.update_dense(&part, keys.as_primitive::<Int64Type>())?;
        }
        let rest = filter_record_batch(batch, &not(&mask)?)?;
        if self.final_output {
            let far = filter(wide, &not(&mask)?)?;
            let far = far
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .filter(|&k| k >= 0)
                .min();
            if let Some(k) = far {
                self.hashed_from = self.hashed_from.min(k as u64);
            }
        }
        self.other_rows.add(rest.num_rows());
        let keys = self.key.evaluate(&rest)?.into_array(rest.num_rows())?;
        self.indices.clear();
        self.other.intern(&[keys], &mut self.indices)?;
        let groups = self.other.len();
        for a in &mut self.aggs {
            let (values, opt) = arguments(a, &rest)?;
            a.other
                .update_batch(&values, &self.indices, opt.as_ref().map(|f| f.as_boolean()), groups)?;
        }
        Ok(())
    }

    /// `batch`'s rows, whose keys (`keys`) are all in the dense range.
    fn update_dense(&mut self, batch: &RecordBatch, keys: &Int64Array) -> Result<()> {
        self.indices.clear();
        self.indices.extend(keys.values().iter().map(|&k| k as usize));
        let top = self.indices.iter().copied().max().unwrap_or(0) + 1;
        if top > self.seen.len() {
            self.seen.resize(top, false);
        }
        for &i in &self.indices {
            let s = &mut self.seen[i];
            self.n_seen += usize::from(!*s);
            *s = true;
        }
        let groups = self.seen.len();
        for a in &mut self.aggs {
            let (values, opt) = arguments(a, batch)?;
            a.dense
                .update_batch(&values, &self.indices, opt.as_ref().map(|f| f.as_boolean()), groups)?;
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.aggs.iter().map(|a| a.dense.size() + a.other.size()).sum::<usize>()
            + self.seen.capacity()
            + self.other.size()
            + self.indices.capacity() * size_of::<usize>()
    }

    /// Moves every group's partial state to `out`, in batches of at most
    /// `batch_size` rows, and starts empty.
    fn emit(&mut self, out: &mut VecDeque<RecordBatch>, batch_size: usize) -> Result<()> {
        let mut batches = Vec::new();
        if self.n_seen > 0 {
            let mask: BooleanArray = self.seen.iter().map(|&s| Some(s)).collect();
            let keys: Int64Array = (0..self.seen.len() as i64)
                .zip(&self.seen)
                .filter_map(|(k, &s)| s.then_some(k))
                .collect();
            let mut columns = vec![cast(&keys, &self.key_type)?];
            for a in &mut self.aggs {
                for state in a.values(true)? {
                    columns.push(filter(&state, &mask)?);
                }
            }
            batches.push(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
        }
        if !self.other.is_empty() {
            let mut columns = self.other.emit(EmitTo::All)?;
            for a in &mut self.aggs {
                columns.extend(a.values(false)?);
            }
            batches.push(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
        }
        for b in batches {
            let mut offset = 0;
            while offset < b.num_rows() {
                let len = batch_size.min(b.num_rows() - offset);
                out.push_back(b.slice(offset, len));
                offset += len;
            }
        }
        self.seen = Vec::new();
        self.n_seen = 0;
        self.other = new_group_values(Arc::clone(&self.group_schema), &GroupOrdering::None)?;
        for a in &mut self.aggs {
            a.dense = a.expr.create_groups_accumulator()?;
            a.other = a.expr.create_groups_accumulator()?;
        }
        Ok(())
    }
}

impl Agg {
    /// The dense (or other) accumulator's partial states, or its final
    /// values, of every group; the accumulator starts empty.
    fn values(&mut self, dense: bool) -> Result<Vec<ArrayRef>> {
        let final_output = self.final_output;
        let acc = if dense { &mut self.dense } else { &mut self.other };
        if final_output {
            Ok(vec![acc.evaluate(EmitTo::All)?])
        } else {
            acc.state(EmitTo::All)
        }
    }
}

/// An aggregate's evaluated arguments and filter on `batch`.
fn arguments(a: &Agg, batch: &RecordBatch) -> Result<(Vec<ArrayRef>, Option<ArrayRef>)> {
    let values = a
        .args
        .iter()
        .map(|e| e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())))
        .collect::<Result<Vec<_>>>()?;
    let opt = a
        .filter
        .as_ref()
        .map(|f| f.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())))
        .transpose()?;
    Ok((values, opt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int32Array, StringArray};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::{Field, Float64Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256Plus;

    /// Rows of `t`: `k` (Int64: mostly `0..range`, with nulls, negatives and
    /// keys beyond 2^40 when `odd` is set), `k32` (Int32, `k` mod 1000), `v`
    /// (Float64, exact multiples of 1/4 when `exact`, else arbitrary; some
    /// null), `kind` ('a', 'b', 'c'), in `parts` partitions of batches of
    /// 97 rows.
    fn table(seed: u64, rows: usize, range: i64, odd: bool, exact: bool, parts: usize) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("k32", DataType::Int32, true),
            Field::new("v", DataType::Float64, true),
            Field::new("kind", DataType::Utf8, false),
        ]));
        let mut rng = Xoshiro256Plus::seed_from_u64(seed);
        let mut partitions = vec![Vec::new(); parts];
        let mut done = 0;
        let mut b = 0;
        while done < rows {
            let n = 97.min(rows - done);
            let k: Int64Array = (0..n)
                .map(|_| match rng.gen_range(0..100) {
                    0 if odd => None,
                    1 if odd => Some(-rng.gen_range(1..4)),
                    2 if odd => Some((1 << 40) + rng.gen_range(0..5)),
                    _ => Some(rng.gen_range(0..range)),
                })
                .collect();
            let k32: Int32Array = k.iter().map(|k| k.map(|k| (k.rem_euclid(1000)) as i32)).collect();
            let v: Float64Array = (0..n)
                .map(|_| {
                    (rng.gen_range(0..10) > 0).then(|| {
                        if exact {
                            f64::from(rng.gen_range(-400..400)) / 4.0
                        } else {
                            rng.gen_range(-1e3..1e3)
                        }
                    })
                })
                .collect();
            let kind: StringArray = (0..n).map(|_| Some(["a", "b", "c"][rng.gen_range(0..3)])).collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(k), Arc::new(k32), Arc::new(v), Arc::new(kind)],
            )
            .unwrap();
            partitions[b % parts].push(batch);
            b += 1;
            done += n;
        }
        Arc::new(MemTable::try_new(schema, partitions).unwrap())
    }

    /// The distinct values (null included) of column `c` of `t`, counted
    /// from its batches.
    async fn distinct(t: &MemTable, c: &str) -> usize {
        let mut keys = std::collections::HashSet::new();
        for part in t.batches.iter() {
            for b in part.read().await.iter() {
                let a = cast(b.column_by_name(c).unwrap(), &DataType::Int64).unwrap();
                keys.extend(a.as_primitive::<Int64Type>().iter());
            }
        }
        keys.len()
    }

    /// A context with `parts` partitions, with or without [`DenseRule`], with
    /// a memory limit or none.
    fn context(dense: bool, parts: usize, limit: Option<usize>) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(parts).with_batch_size(256);
        // The final sort's merge reservation fits a small pool.
        config.options_mut().execution.sort_spill_reservation_bytes = 256 << 10;
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = limit {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(bytes)));
        }
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.build_arc().unwrap())
            .with_default_features();
        if dense {
            state = state.with_physical_optimizer_rule(Arc::new(DenseRule));
        }
        let ctx = SessionContext::new_with_state(state.build());
        crate::stages::functions().register(&ctx);
        ctx
    }

    /// The result of `sql` on `t` sorted by its first column, and the
    /// executed plan.
    async fn run(ctx: &SessionContext, t: &Arc<MemTable>, sql: &str) -> (RecordBatch, Arc<dyn ExecutionPlan>) {
        let _ = ctx.deregister_table("t");
        ctx.register_table("t", t.clone()).unwrap();
        let df = ctx.sql(&format!("SELECT * FROM ({sql}) ORDER BY 1")).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
        (concat_batches(&plan.schema(), &batches).unwrap(), plan)
    }

    /// The sum of metric `name` over every [`DenseAggregateExec`] of `plan`,
    /// and how many there are.
    fn dense_metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> (usize, usize) {
        let mut found = (0, 0);
        let mut stack = vec![Arc::clone(plan)];
        while let Some(p) = stack.pop() {
            if p.name() == "DenseAggregateExec" {
                found.1 += 1;
                found.0 += p
                    .metrics()
                    .and_then(|m| m.sum_by_name(name))
                    .map_or(0, |v| v.as_usize());
            }
            stack.extend(p.children().into_iter().cloned());
        }
        found
    }

    /// Column by column, naming the first row that differs. Every column is
    /// compared bit for bit but `sd`: a variance state merged into another
    /// (count, mean, M2) is not the same to the bit in both orders, and the
    /// final phase (DataFusion's in both plans) merges the partitions' states
    /// in the order they arrive, which depends on when each partial emits.
    /// `sd` is compared to 1e-12 relative instead.
    fn same(got: &RecordBatch, want: &RecordBatch, what: &str) {
        assert_eq!(got.schema(), want.schema(), "{what}");
        assert_eq!(got.num_rows(), want.num_rows(), "{what}");
        for (i, f) in want.schema().fields().iter().enumerate() {
            let (g, w) = (got.column(i), want.column(i));
            if f.name() == "sd" {
                let (g, w) = (g.as_primitive::<Float64Type>(), w.as_primitive::<Float64Type>());
                for (r, (a, b)) in g.iter().zip(w.iter()).enumerate() {
                    let close = match (a, b) {
                        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                        (a, b) => a == b,
                    };
                    assert!(close, "{what}: sd at row {r}: {a:?} against {b:?}");
                }
                continue;
            }
            if g != w {
                let row = (0..g.len()).find(|&r| g.slice(r, 1) != w.slice(r, 1)).unwrap_or(0);
                panic!(
                    "{what}: column {} differs first at row {row} (key {:?}): {:?} against {:?}",
                    f.name(),
                    got.column(0).slice(row, 1),
                    g.slice(row, 1),
                    w.slice(row, 1)
                );
            }
        }
    }

    const AGGREGATES: &str = "count(*) AS n, count(v) AS nv, sum(v) AS s, min(v) AS lo, max(v) AS hi, avg(v) AS mean, \
         count(*) FILTER (WHERE kind = 'a') AS na, sum(v) FILTER (WHERE kind = 'b') AS sb, \
         max(kind) AS top, stddev_pop(v) AS sd";

    #[tokio::test]
    async fn the_same_results_as_the_hash_aggregate_bit_for_bit() {
        // Two partitions: each group's two partial states merge in either
        // order to the same value, so arbitrary floats must agree exactly.
        let t = table(1, 20_000, 3_000, false, false, 2);
        let sql = format!("SELECT k, {AGGREGATES} FROM t GROUP BY k");
        let (want, base) = run(&context(false, 2, None), &t, &sql).await;
        let (got, plan) = run(&context(true, 2, None), &t, &sql).await;
        assert_eq!(dense_metric(&base, "hashed_rows").1, 0);
        assert_eq!(dense_metric(&plan, "hashed_rows"), (0, 1));
        assert_eq!(want.num_rows(), distinct(&t, "k").await);
        same(&got, &want, "k");
    }

    #[tokio::test]
    async fn null_negative_and_far_keys_go_through_the_hash_values() {
        // Three partitions and exact values: a key's states may merge in any
        // order, and sums of quarters stay exact in every order.
        let t = table(2, 30_000, 5_000, true, true, 3);
        let ctx = context(true, 3, None);
        for key in ["k", "k32"] {
            let sql = format!("SELECT {key}, {AGGREGATES} FROM t GROUP BY {key}");
            let (want, _) = run(&context(false, 3, None), &t, &sql).await;
            let (got, plan) = run(&ctx, &t, &sql).await;
            let (hashed, n) = dense_metric(&plan, "hashed_rows");
            assert_eq!(n, 1, "{key}");
            if key == "k" {
                // 3 % of the rows: nulls, negatives and keys beyond 2^40.
                assert!((600..1_200).contains(&hashed), "{hashed}");
                // Up to 5,000 keys, 3 negative, 5 far and the null.
                assert!(want.num_rows() > 5_000 - 20 + 3 + 5 + 1, "{}", want.num_rows());
            } else {
                // Only the null key: k32 is never negative or far.
                assert!((200..400).contains(&hashed), "{hashed}");
            }
            assert_eq!(want.num_rows(), distinct(&t, key).await, "{key}");
            same(&got, &want, key);
        }
    }

    #[tokio::test]
    async fn under_a_memory_limit_the_hash_aggregate_runs() {
        // 200,000 keys in an 8 MiB pool: DataFusion's partial aggregate
        // runs (no dense table: no `hashed_rows` metric registered).
        let t = table(3, 400_000, 200_000, true, true, 2);
        let sql = format!("SELECT k, {AGGREGATES} FROM t GROUP BY k");
        let (want, _) = run(&context(false, 2, None), &t, &sql).await;
        let (got, plan) = run(&context(true, 2, Some(8 << 20)), &t, &sql).await;
        assert_eq!(dense_metric(&plan, "hashed_rows"), (0, 1));
        let (_, unlimited) = run(&context(true, 2, None), &t, &sql).await;
        assert!(dense_metric(&unlimited, "hashed_rows").0 > 5_000);
        same(&got, &want, "limited");
    }

    #[tokio::test]
    async fn one_phase_aggregates_keep_each_key_on_one_side() {
        // One partition: DataFusion plans one `Single` aggregate. Keys
        // beyond the first range (2^20) arrive before the range could grow
        // past them (at 262,144 groups seen), so they are hashed; the range
        // must then stop below them, or their later rows would make second
        // groups of the same keys.
        let t = table(5, 400_000, 1_500_000, true, true, 1);
        let sql = format!("SELECT k, {AGGREGATES} FROM t GROUP BY k");
        let (want, _) = run(&context(false, 1, None), &t, &sql).await;
        let (got, plan) = run(&context(true, 1, None), &t, &sql).await;
        let (hashed, n) = dense_metric(&plan, "hashed_rows");
        assert_eq!(n, 1);
        assert!(hashed > 100_000, "{hashed}");
        assert_eq!(got.num_rows(), want.num_rows());
        assert_eq!(got, want);
        // Under a memory limit it is DataFusion's aggregate, which spills.
        let (got, plan) = run(&context(true, 1, Some(64 << 20)), &t, &sql).await;
        assert_eq!(dense_metric(&plan, "hashed_rows"), (0, 1));
        // (Its spilled groups merge their variance states in another order.)
        same(&got, &want, "limited");
    }

    #[tokio::test]
    async fn only_aggregates_by_one_integer_key_are_replaced() {
        let t = table(4, 2_000, 100, false, true, 2);
        let ctx = context(true, 2, None);
        for (sql, dense) in [
            ("SELECT k, sum(v) FROM t GROUP BY k", 1),
            ("SELECT k32 + 1, sum(v) FROM t GROUP BY k32 + 1", 1),
            ("SELECT kind, sum(v) FROM t GROUP BY kind", 0),
            ("SELECT k, kind, sum(v) FROM t GROUP BY k, kind", 0),
            ("SELECT v, count(*) FROM t GROUP BY v", 0),
            ("SELECT sum(v) FROM t", 0),
        ] {
            let (want, _) = run(&context(false, 2, None), &t, sql).await;
            let (got, plan) = run(&ctx, &t, sql).await;
            assert_eq!(dense_metric(&plan, "hashed_rows").1, dense, "{sql}");
            assert_eq!(got, want, "{sql}");
        }
    }
}
