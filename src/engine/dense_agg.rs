//! Grouping by one integer key without hashing: a physical optimizer rule
//! ([`DenseAggregateRule`]) and the operator it plans ([`DenseAggregateExec`]).
//!
//! CRM pipelines aggregate big tables by a customer id that is an integer
//! in a dense range (`GROUP BY customer_id` over transactions). DataFusion
//! aggregates through a hash table per partition, then again after a hash
//! repartition; at a million customers every row is a cache miss in a
//! table of tens of megabytes, which was most of the time of a feature
//! query. This operator maps a key straight to its slot (`key − base`),
//! keeps each aggregate in a plain array over the slots, accumulates every
//! input partition into its own arrays in parallel, adds them in partition
//! order and splits the result by the hash partitioning the replaced
//! aggregate declared, so the plan above it is unchanged.
//!
//! The rule replaces `Final(Partitioned)(Repartition|Coalesce(Partial))` and
//! `Single(Partitioned)` aggregates that group by one Int64 or Int32
//! expression (no grouping sets) and compute only `count`, `sum` (Float64,
//! Int64), `min`/`max` (integer, date and timestamp types) and `avg`
//! (Float64), with or without `FILTER (WHERE ...)`, none `DISTINCT` or
//! ordered. Anything else is left to DataFusion. Results are the same as
//! DataFusion's except for the order in which floats are added (fixed here:
//! rows in partition order, partitions in order) and the order of output
//! rows (ascending key here). When keys are sparse (the range would exceed
//! four times the keys seen plus a million) it switches to a hash map of key
//! to slot and stays correct. Its arrays are counted in the memory pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, make_array,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::metrics::{self, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;
use tokio::sync::OnceCell;

/// Past this many slots beyond four per key seen, keys go through a hash map.
const DENSE_SLACK: usize = 1 << 20;

/// Replaces integer-keyed aggregates by [`DenseAggregateExec`] (see the
/// module documentation for which).
#[derive(Debug, Default)]
pub struct DenseAggregateRule;

impl PhysicalOptimizerRule for DenseAggregateRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match rewrite(&node)? {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "crmflow_dense_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The aggregate (over its raw input) that `node` computes, if the
/// operator can take it over.
fn rewrite(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(agg) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if agg.limit_options().is_some() || !agg.dynamic_expressions_produced().is_empty() {
        return Ok(None);
    }
    // The aggregate over raw rows: this node, or the partial below it.
    let raw = match agg.mode() {
        AggregateMode::Single | AggregateMode::SinglePartitioned => agg,
        AggregateMode::Final | AggregateMode::FinalPartitioned => {
            let child = agg.input();
            let below = if let Some(r) = child.downcast_ref::<RepartitionExec>() {
                if !matches!(r.partitioning(), Partitioning::Hash(..)) || r.preserve_order() {
                    return Ok(None);
                }
                r.input()
            } else if let Some(c) = child.downcast_ref::<CoalescePartitionsExec>() {
                if c.fetch().is_some() {
                    return Ok(None);
                }
                c.input()
            } else {
                child
            };
            match below.downcast_ref::<AggregateExec>() {
                Some(p) if *p.mode() == AggregateMode::Partial => p,
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    if raw.limit_options().is_some() || !raw.dynamic_expressions_produced().is_empty() {
        return Ok(None);
    }
    let group = raw.group_expr();
    if group.has_grouping_set() || group.expr().len() != 1 || group.groups().len() != 1 {
        return Ok(None);
    }
    let input = Arc::clone(raw.input());
    let input_schema = input.schema();
    let key = Arc::clone(&group.expr()[0].0);
    let key_type = key.data_type(&input_schema)?;
    if !matches!(key_type, DataType::Int64 | DataType::Int32) {
        return Ok(None);
    }
    let schema = agg.schema();
    if schema.fields().len() != 1 + raw.aggr_expr().len() || schema.field(0).data_type() != &key_type {
        return Ok(None);
    }
    let mut aggs = Vec::with_capacity(raw.aggr_expr().len());
    for (i, (a, filter)) in raw.aggr_expr().iter().zip(raw.filter_expr()).enumerate() {
        if a.is_distinct() || !a.order_bys().is_empty() || a.ignore_nulls() {
            return Ok(None);
        }
        let args = a.expressions();
        let out_type = schema.field(1 + i).data_type().clone();
        let arg_type = match args.as_slice() {
            [arg] => arg.data_type(&input_schema)?,
            _ => return Ok(None),
        };
        let kind = match (a.fun().name(), &arg_type, &out_type) {
            ("count", _, DataType::Int64) => Kind::Count,
            ("sum", DataType::Float64, DataType::Float64) => Kind::SumF64,
            ("sum", DataType::Int64, DataType::Int64) => Kind::SumI64,
            ("avg", DataType::Float64, DataType::Float64) => Kind::Avg,
            ("max" | "min", t, o) if t == o && int_backed(t).is_some() => {
                if a.fun().name() == "max" {
                    Kind::Max
                } else {
                    Kind::Min
                }
            }
            _ => return Ok(None),
        };
        aggs.push(AggSpec {
            kind,
            arg: Arc::clone(&args[0]),
            filter: filter.clone(),
            out_type,
        });
    }
    Ok(Some(Arc::new(DenseAggregateExec {
        input,
        key,
        aggs,
        schema,
        properties: Arc::clone(agg.properties()),
        result: Arc::new(OnceCell::new()),
        metrics: ExecutionPlanMetricsSet::new(),
    })))
}

/// The width in bytes of an integer-backed type's native value (4 or 8).
fn int_backed(t: &DataType) -> Option<usize> {
    match t {
        DataType::Int32 | DataType::Date32 => Some(4),
        DataType::Int64 | DataType::Date64 | DataType::Timestamp(..) | DataType::Duration(_) => Some(8),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    SumF64,
    SumI64,
    Avg,
    Max,
    Min,
}

#[derive(Debug, Clone)]
struct AggSpec {
    kind: Kind,
    arg: Arc<dyn PhysicalExpr>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    out_type: DataType,
}

type Shared = Arc<OnceCell<std::result::Result<Vec<Vec<RecordBatch>>, Arc<DataFusionError>>>>;

/// `GROUP BY` one integer key with dense per-slot arrays (see the module
/// documentation). Output: the replaced aggregate's schema and partitioning.
#[derive(Debug)]
pub struct DenseAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    key: Arc<dyn PhysicalExpr>,
    aggs: Vec<AggSpec>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// Computed once, on the first partition asked for: every output
    /// partition's batches.
    result: Shared,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for DenseAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<String> = self.schema.fields().iter().skip(1).map(|f| f.name().clone()).collect();
        write!(f, "DenseAggregateExec: gby=[{}], aggr=[{}]", self.key, names.join(", "))
    }
}

impl ExecutionPlan for DenseAggregateExec {
    fn name(&self) -> &str {
        "DenseAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let mut exprs = vec![&self.key];
        for a in &self.aggs {
            exprs.push(&a.arg);
            if let Some(filter) = &a.filter {
                exprs.push(filter);
            }
        }
        for e in exprs {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("DenseAggregateExec has one child".into()));
        }
        Ok(Arc::new(DenseAggregateExec {
            input: children.swap_remove(0),
            key: Arc::clone(&self.key),
            aggs: self.aggs.clone(),
            schema: Arc::clone(&self.schema),
            properties: Arc::clone(&self.properties),
            result: Arc::new(OnceCell::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn with_new_children_and_same_properties(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let shared = Arc::clone(&self.result);
        let input = Arc::clone(&self.input);
        let key = Arc::clone(&self.key);
        let aggs = self.aggs.clone();
        let schema = Arc::clone(&self.schema);
        let partitioning = self.properties.output_partitioning().clone();
        let elapsed = MetricBuilder::new(&self.metrics).elapsed_compute(partition);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let stream = futures::stream::once(async move {
            let parts = shared
                .get_or_init(|| async move {
                    compute(input, key, aggs, schema, partitioning, context, elapsed)
                        .await
                        .map_err(Arc::new)
                })
                .await;
            match parts {
                Ok(parts) => {
                    let batches = parts.get(partition).cloned().unwrap_or_default();
                    output_rows.add(batches.iter().map(RecordBatch::num_rows).sum());
                    Ok(futures::stream::iter(batches.into_iter().map(Ok)))
                }
                Err(e) => Err(DataFusionError::Shared(Arc::clone(e))),
            }
        })
        .map(|r| match r {
            Ok(s) => s.left_stream(),
            Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// Accumulates every input partition (in parallel), adds them in order and
/// splits the groups by `partitioning`.
async fn compute(
    input: Arc<dyn ExecutionPlan>,
    key: Arc<dyn PhysicalExpr>,
    aggs: Vec<AggSpec>,
    schema: SchemaRef,
    partitioning: Partitioning,
    context: Arc<TaskContext>,
    elapsed: metrics::Time,
) -> Result<Vec<Vec<RecordBatch>>> {
    let n_in = input.output_partitioning().partition_count();
    let reservation = Arc::new(MemoryConsumer::new("DenseAggregateExec").register(context.memory_pool()));
    let mut tasks = Vec::with_capacity(n_in);
    for p in 0..n_in {
        let mut stream = input.execute(p, Arc::clone(&context))?;
        let (key, aggs, elapsed, reservation) = (
            Arc::clone(&key),
            aggs.clone(),
            elapsed.clone(),
            Arc::clone(&reservation),
        );
        tasks.push(datafusion::common::runtime::SpawnedTask::spawn(async move {
            let mut state = State::new(&aggs);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let _t = elapsed.timer();
                state.update(&key, &aggs, &batch, &reservation)?;
            }
            Ok::<State, DataFusionError>(state)
        }));
    }
    let mut states = Vec::with_capacity(n_in);
    for t in tasks {
        states.push(t.join().await.map_err(|e| DataFusionError::External(Box::new(e)))??);
    }
    let _t = elapsed.timer();
    let mut states = states.into_iter();
    let mut total = states.next().unwrap_or_else(|| State::new(&aggs));
    for s in states {
        total.merge(s, &aggs, &reservation)?;
    }
    let batch = total.finish(&aggs, &schema)?;
    drop(total);
    let n_out = partitioning.partition_count();
    let batch_size = context.session_config().batch_size().max(1);
    let mut out: Vec<Vec<RecordBatch>> = vec![Vec::new(); n_out];
    let hashed = matches!(partitioning, Partitioning::Hash(..)) && n_out > 1;
    let mut partitioner = if hashed {
        Some(BatchPartitioner::try_new(partitioning, metrics::Time::new(), 0, 1)?)
    } else {
        None
    };
    let mut at = 0;
    while at < batch.num_rows() {
        let len = batch_size.min(batch.num_rows() - at);
        let slice = batch.slice(at, len);
        match &mut partitioner {
            Some(p) => p.partition(slice, |i, b| {
                out[i].push(b);
                Ok(())
            })?,
            None => out[0].push(slice),
        }
        at += len;
    }
    reservation.free();
    Ok(out)
}

/// Key → slot: dense (`key − base + 1`, slot 0 the NULL key) or a map.
enum Slots {
    Dense { base: i64 },
    Map(HashMap<i64, usize>),
}

/// The groups of one input partition, slot by slot, interleaved: each slot
/// is `stride` words — word 0 whether a row with its key was seen, then
/// each aggregate's words at its offset — so that one row's aggregates
/// share a cache line.
///
/// Words per aggregate: count 1 (the count); sum 2 (the sum, as f64 bits
/// or i64, and whether a value was added); avg 2 (the f64 sum, the
/// count); min/max 2 (the value as i64, whether there is one).
struct State {
    slots: Slots,
    stride: usize,
    /// Word offset of each aggregate within a slot.
    offsets: Vec<usize>,
    data: Vec<u64>,
    /// Keys of the slots (map mode only; dense keys follow from the slot).
    keys: Vec<i64>,
    reserved: usize,
    slot_of_row: Vec<usize>,
}

fn words(kind: Kind) -> usize {
    match kind {
        Kind::Count => 1,
        _ => 2,
    }
}

impl State {
    fn new(aggs: &[AggSpec]) -> State {
        let mut offsets = Vec::with_capacity(aggs.len());
        let mut stride = 1;
        for a in aggs {
            offsets.push(stride);
            stride += words(a.kind);
        }
        State {
            slots: Slots::Dense { base: 0 },
            stride,
            offsets,
            data: vec![0; stride],
            keys: vec![0],
            reserved: 0,
            slot_of_row: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.data.len() / self.stride
    }

    fn present(&self, slot: usize) -> bool {
        self.data[slot * self.stride] != 0
    }

    /// Grows to `len` slots, `front` new empty slots inserted after slot 0
    /// (the NULL key's) and the rest at the end.
    fn resize(&mut self, len: usize, front: usize, reservation: &MemoryReservation) {
        let st = self.stride;
        if front > 0 {
            let mut n = Vec::with_capacity(len * st);
            n.extend_from_slice(&self.data[..st]);
            n.resize((1 + front) * st, 0);
            n.extend_from_slice(&self.data[st..]);
            self.data = n;
        }
        self.data.resize(len * st, 0);
        if matches!(self.slots, Slots::Map(_)) {
            self.keys.resize(len, 0);
        }
        let bytes = self.data.len() * 8 + self.keys.len() * 8;
        if bytes > self.reserved {
            reservation.grow(bytes - self.reserved);
            self.reserved = bytes;
        }
    }

    /// Makes every key of `keys` have a slot; fills `slot_of_row` and
    /// marks the slots seen.
    fn slots_for(&mut self, keys: &Int64Array, reservation: &MemoryReservation) {
        let n = keys.len();
        self.slot_of_row.clear();
        self.slot_of_row.reserve(n);
        if let Slots::Dense { base } = self.slots
            && keys.null_count() < n
        {
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            if keys.null_count() == 0 {
                for &k in keys.values().iter() {
                    lo = lo.min(k);
                    hi = hi.max(k);
                }
            } else {
                for (i, &k) in keys.values().iter().enumerate() {
                    if keys.is_valid(i) {
                        lo = lo.min(k);
                        hi = hi.max(k);
                    }
                }
            }
            // Slots 1..=width hold keys base..base + width - 1.
            let width = self.len() - 1;
            let (cur_lo, cur_hi) = if width == 0 {
                (lo, hi)
            } else {
                (base, base + width as i64 - 1)
            };
            let inside = width > 0 && lo >= cur_lo && hi <= cur_hi;
            if !inside {
                let span = i128::from(hi.max(cur_hi)) - i128::from(lo.min(cur_lo)) + 1;
                // Counting the keys seen is linear, but only on growth, which
                // is geometric.
                let seen = (0..self.len()).filter(|&s| self.present(s)).count() + n;
                if span > (4 * seen + DENSE_SLACK) as i128 {
                    self.to_map();
                } else if width == 0 {
                    self.slots = Slots::Dense { base: lo };
                    self.resize((hi - lo) as usize + 2, 0, reservation);
                } else {
                    // Grow geometrically on the side that needs it.
                    let w = width as i64;
                    let lo2 = if lo < cur_lo {
                        lo.min(cur_lo.saturating_sub(w))
                    } else {
                        cur_lo
                    };
                    let hi2 = if hi > cur_hi {
                        hi.max(cur_hi.saturating_add(w))
                    } else {
                        cur_hi
                    };
                    self.slots = Slots::Dense { base: lo2 };
                    self.resize((hi2 - lo2) as usize + 2, (cur_lo - lo2) as usize, reservation);
                }
            }
        }
        match &mut self.slots {
            Slots::Dense { base } => {
                let base = *base;
                if keys.null_count() == 0 {
                    self.slot_of_row
                        .extend(keys.values().iter().map(|&k| (k - base + 1) as usize));
                } else {
                    for (i, &k) in keys.values().iter().enumerate() {
                        self.slot_of_row
                            .push(if keys.is_valid(i) { (k - base + 1) as usize } else { 0 });
                    }
                }
            }
            Slots::Map(map) => {
                let mut new_keys = Vec::new();
                for (i, &k) in keys.values().iter().enumerate() {
                    if keys.is_null(i) {
                        self.slot_of_row.push(0);
                        continue;
                    }
                    let next = self.keys.len() + new_keys.len();
                    let slot = *map.entry(k).or_insert_with(|| {
                        new_keys.push(k);
                        next
                    });
                    self.slot_of_row.push(slot);
                }
                if !new_keys.is_empty() {
                    let start = self.keys.len();
                    let len = start + new_keys.len();
                    self.resize(len, 0, reservation);
                    self.keys[start..].copy_from_slice(&new_keys);
                }
            }
        }
        let st = self.stride;
        for &s in &self.slot_of_row {
            self.data[s * st] = 1;
        }
    }

    /// From dense slots to a map (keys were too sparse).
    fn to_map(&mut self) {
        let Slots::Dense { base } = self.slots else {
            return;
        };
        let st = self.stride;
        let mut map = HashMap::new();
        let mut data = self.data[..st].to_vec();
        let mut keys = vec![0i64];
        for s in 1..self.len() {
            if self.present(s) {
                let k = base + s as i64 - 1;
                map.insert(k, keys.len());
                keys.push(k);
                data.extend_from_slice(&self.data[s * st..(s + 1) * st]);
            }
        }
        self.data = data;
        self.keys = keys;
        self.slots = Slots::Map(map);
    }

    fn update(
        &mut self,
        key: &Arc<dyn PhysicalExpr>,
        aggs: &[AggSpec],
        batch: &RecordBatch,
        reservation: &MemoryReservation,
    ) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let keys = key.evaluate(batch)?.into_array(n)?;
        let keys = cast(&keys, &DataType::Int64)?;
        self.slots_for(keys.as_primitive::<Int64Type>(), reservation);
        for (spec, &offset) in aggs.iter().zip(&self.offsets) {
            let filter = match &spec.filter {
                Some(f) => {
                    let f = f.evaluate(batch)?.into_array(n)?;
                    Some(f.as_boolean().clone())
                }
                None => None,
            };
            let arg = spec.arg.evaluate(batch)?;
            let acc = Acc {
                data: &mut self.data,
                stride: self.stride,
                offset,
            };
            accumulate(spec.kind, acc, &self.slot_of_row, filter.as_ref(), arg, n)?;
        }
        Ok(())
    }

    /// Adds `other` into this state (slot by key).
    fn merge(&mut self, other: State, aggs: &[AggSpec], reservation: &MemoryReservation) -> Result<()> {
        let (keys, from): (Vec<Option<i64>>, Vec<usize>) = (0..other.len())
            .filter(|&s| other.present(s))
            .map(|s| (other.key_of(s), s))
            .unzip();
        if keys.is_empty() {
            return Ok(());
        }
        self.slots_for(&Int64Array::from(keys), reservation);
        let (st, ost) = (self.stride, other.stride);
        for (spec, &o) in aggs.iter().zip(&self.offsets) {
            for (&t, &f) in self.slot_of_row.iter().zip(&from) {
                let (a, b) = (t * st + o, f * ost + o);
                let (x0, x1) = (other.data[b], other.data[b + 1.min(words(spec.kind) - 1)]);
                let d = &mut self.data;
                match spec.kind {
                    Kind::Count => d[a] = (d[a] as i64 + x0 as i64) as u64,
                    Kind::SumF64 if x1 != 0 => {
                        d[a] = (f64::from_bits(d[a]) + f64::from_bits(x0)).to_bits();
                        d[a + 1] = 1;
                    }
                    Kind::SumI64 if x1 != 0 => {
                        d[a] = (d[a] as i64).wrapping_add(x0 as i64) as u64;
                        d[a + 1] = 1;
                    }
                    Kind::Avg => {
                        d[a] = (f64::from_bits(d[a]) + f64::from_bits(x0)).to_bits();
                        d[a + 1] = (d[a + 1] as i64 + x1 as i64) as u64;
                    }
                    Kind::Max if x1 != 0 && (d[a + 1] == 0 || (x0 as i64) > d[a] as i64) => {
                        d[a] = x0;
                        d[a + 1] = 1;
                    }
                    Kind::Min if x1 != 0 && (d[a + 1] == 0 || (x0 as i64) < d[a] as i64) => {
                        d[a] = x0;
                        d[a + 1] = 1;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn key_of(&self, slot: usize) -> Option<i64> {
        if slot == 0 {
            return None;
        }
        match self.slots {
            Slots::Dense { base } => Some(base + slot as i64 - 1),
            Slots::Map(_) => Some(self.keys[slot]),
        }
    }

    /// The groups as one batch of the output schema, by ascending key
    /// (dense) or first appearance (map); the NULL key last.
    fn finish(&self, aggs: &[AggSpec], schema: &SchemaRef) -> Result<RecordBatch> {
        let mut order: Vec<usize> = (1..self.len()).filter(|&s| self.present(s)).collect();
        if self.present(0) {
            order.push(0);
        }
        let keys: Int64Array = order.iter().map(|&s| self.key_of(s)).collect();
        let mut cols: Vec<ArrayRef> = vec![cast(&keys, schema.field(0).data_type())?];
        let st = self.stride;
        for (spec, &o) in aggs.iter().zip(&self.offsets) {
            let w0 = |s: usize| self.data[s * st + o];
            let w1 = |s: usize| self.data[s * st + o + 1];
            let col: ArrayRef = match spec.kind {
                Kind::Count => Arc::new(Int64Array::from_iter_values(order.iter().map(|&s| w0(s) as i64))),
                Kind::SumF64 => Arc::new(
                    order
                        .iter()
                        .map(|&s| (w1(s) != 0).then(|| f64::from_bits(w0(s))))
                        .collect::<Float64Array>(),
                ),
                Kind::SumI64 => Arc::new(
                    order
                        .iter()
                        .map(|&s| (w1(s) != 0).then(|| w0(s) as i64))
                        .collect::<Int64Array>(),
                ),
                Kind::Avg => Arc::new(
                    order
                        .iter()
                        .map(|&s| (w1(s) != 0).then(|| f64::from_bits(w0(s)) / w1(s) as f64))
                        .collect::<Float64Array>(),
                ),
                Kind::Max | Kind::Min => int_array(&spec.out_type, &order, |s| (w0(s) as i64, w1(s) != 0))?,
            };
            cols.push(col);
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
    }
}

/// One aggregate's words in a state.
struct Acc<'a> {
    data: &'a mut [u64],
    stride: usize,
    offset: usize,
}

/// Values of an integer-backed type from (value, valid) per slot.
fn int_array(t: &DataType, order: &[usize], at: impl Fn(usize) -> (i64, bool)) -> Result<ArrayRef> {
    let nulls = NullBuffer::from(order.iter().map(|&s| at(s).1).collect::<Vec<bool>>());
    let values = match int_backed(t) {
        Some(4) => Buffer::from_iter(order.iter().map(|&s| at(s).0 as i32)),
        _ => Buffer::from_iter(order.iter().map(|&s| at(s).0)),
    };
    let data = datafusion::arrow::array::ArrayData::builder(t.clone())
        .len(order.len())
        .add_buffer(values)
        .nulls(Some(nulls))
        .build()?;
    Ok(make_array(data))
}

/// Adds one batch's values of an aggregate: the rows where `filter` is
/// true and the argument is not null.
fn accumulate(
    kind: Kind,
    acc: Acc,
    slots: &[usize],
    filter: Option<&BooleanArray>,
    arg: ColumnarValue,
    n: usize,
) -> Result<()> {
    let Acc { data, stride, offset } = acc;
    let at = |s: usize| s * stride + offset;
    if let (Kind::Count, ColumnarValue::Scalar(v)) = (kind, &arg) {
        // count(*) / count(literal): every kept row.
        if !v.is_null() {
            for_each_kept(slots, filter, None, |_, s| data[at(s)] += 1);
        }
        return Ok(());
    }
    let a = arg.into_array(n)?;
    let nulls = a.logical_nulls();
    let nulls = nulls.as_ref();
    match kind {
        Kind::Count => for_each_kept(slots, filter, nulls, |_, s| data[at(s)] += 1),
        Kind::SumF64 => {
            let x = a.as_primitive::<datafusion::arrow::datatypes::Float64Type>().values();
            for_each_kept(slots, filter, nulls, |r, s| {
                let i = at(s);
                data[i] = (f64::from_bits(data[i]) + x[r]).to_bits();
                data[i + 1] = 1;
            });
        }
        Kind::Avg => {
            let x = a.as_primitive::<datafusion::arrow::datatypes::Float64Type>().values();
            for_each_kept(slots, filter, nulls, |r, s| {
                let i = at(s);
                data[i] = (f64::from_bits(data[i]) + x[r]).to_bits();
                data[i + 1] += 1;
            });
        }
        Kind::SumI64 => {
            let x = a.as_primitive::<Int64Type>().values();
            for_each_kept(slots, filter, nulls, |r, s| {
                let i = at(s);
                data[i] = (data[i] as i64).wrapping_add(x[r]) as u64;
                data[i + 1] = 1;
            });
        }
        Kind::Max | Kind::Min => {
            let x = as_i64(&a)?;
            let x = x.values();
            let max = kind == Kind::Max;
            for_each_kept(slots, filter, nulls, |r, s| {
                let i = at(s);
                let (v, cur) = (x[r], data[i] as i64);
                if data[i + 1] == 0 || (max && v > cur) || (!max && v < cur) {
                    data[i] = v as u64;
                    data[i + 1] = 1;
                }
            });
        }
    }
    Ok(())
}

/// An integer-backed array's values as Int64 (dates, timestamps: their
/// native integers).
fn as_i64(a: &ArrayRef) -> Result<Int64Array> {
    Ok(match int_backed(a.data_type()) {
        Some(4) => {
            let data = a.to_data().into_builder().data_type(DataType::Int32).build()?;
            let narrow = Int32Array::from(data);
            narrow.unary(i64::from)
        }
        Some(_) => Int64Array::from(a.to_data().into_builder().data_type(DataType::Int64).build()?),
        None => {
            return Err(DataFusionError::Internal(format!(
                "DenseAggregateExec: min/max of {}",
                a.data_type()
            )));
        }
    })
}

/// Calls `f(row, slot)` for each row where `filter` is true and `nulls`
/// (the argument's) says valid.
#[inline]
fn for_each_kept(
    slots: &[usize],
    filter: Option<&BooleanArray>,
    nulls: Option<&NullBuffer>,
    mut f: impl FnMut(usize, usize),
) {
    match (filter, nulls) {
        (None, None) => {
            for (r, &s) in slots.iter().enumerate() {
                f(r, s);
            }
        }
        (Some(b), None) if b.null_count() == 0 => {
            for (r, &s) in slots.iter().enumerate() {
                if b.value(r) {
                    f(r, s);
                }
            }
        }
        _ => {
            for (r, &s) in slots.iter().enumerate() {
                let kept = filter.is_none_or(|b| b.is_valid(r) && b.value(r));
                if kept && nulls.is_none_or(|b| b.is_valid(r)) {
                    f(r, s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// `partitions` partitions of random rows: keys `scale * k` for k in
    /// -50..950 (some null), nullable timestamps, amounts and quantities.
    fn table(partitions: usize, rows: usize, scale: i64, int32: bool) -> MemTable {
        let key_type = if int32 { DataType::Int32 } else { DataType::Int64 };
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", key_type, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("amount", DataType::Float64, true),
            Field::new("qty", DataType::Int64, true),
            Field::new("kind", DataType::Utf8, true),
        ]));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(scale as u64 + rows as u64);
        let mut parts = Vec::new();
        for _ in 0..partitions {
            let mut batches = Vec::new();
            for _ in 0..3 {
                let n = rows / 3;
                let keys: Vec<Option<i64>> = (0..n)
                    .map(|_| (rng.gen_range(0..100) != 0).then(|| scale * rng.gen_range(-50..950)))
                    .collect();
                let key: ArrayRef = if int32 {
                    Arc::new(keys.iter().map(|k| k.map(|k| k as i32)).collect::<Int32Array>())
                } else {
                    Arc::new(Int64Array::from(keys))
                };
                let ts: TimestampMicrosecondArray = (0..n)
                    .map(|_| (rng.gen_range(0..20) != 0).then(|| rng.gen_range(-1_000_000i64..1_000_000_000)))
                    .collect();
                let amount: Float64Array = (0..n)
                    .map(|_| (rng.gen_range(0..20) != 0).then(|| rng.gen_range(-5.0..100.0)))
                    .collect();
                let qty: Int64Array = (0..n)
                    .map(|_| (rng.gen_range(0..20) != 0).then(|| rng.gen_range(-3..10)))
                    .collect();
                let kind: StringArray = (0..n)
                    .map(|_| (rng.gen_range(0..20) != 0).then(|| ["a", "b", "c"][rng.gen_range(0..3)]))
                    .collect();
                batches.push(
                    RecordBatch::try_new(
                        schema.clone(),
                        vec![
                            key,
                            Arc::new(ts.with_timezone("UTC")),
                            Arc::new(amount),
                            Arc::new(qty),
                            Arc::new(kind),
                        ],
                    )
                    .unwrap(),
                );
            }
            parts.push(batches);
        }
        MemTable::try_new(schema, parts).unwrap()
    }

    fn ctx(dense: bool) -> SessionContext {
        // Partitioned hash joins even for small tables, so that joins above
        // an aggregate rely on its hash partitioning.
        let mut config = SessionConfig::new().with_target_partitions(3).with_batch_size(100);
        config.options_mut().optimizer.hash_join_single_partition_threshold = 0;
        config.options_mut().optimizer.hash_join_single_partition_threshold_rows = 0;
        let runtime = Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default());
        if dense {
            super::super::context(config, runtime)
        } else {
            SessionContext::new_with_config_rt(config, runtime)
        }
    }

    const QUERY: &str = "SELECT id, count(*) AS n, count(amount) AS n_amount, sum(amount) AS total,
            sum(qty) AS q, max(ts) AS last, min(ts) AS first, avg(amount) AS mean,
            count(*) FILTER (WHERE kind = 'a') AS n_a,
            sum(amount) FILTER (WHERE ts < TIMESTAMP '1970-01-01T00:05:00Z') AS early,
            max(ts) FILTER (WHERE kind = 'b') AS last_b,
            min(qty) FILTER (WHERE amount > 50) AS min_q
        FROM t GROUP BY id";

    /// The query's rows in key order, with and without the rule, and the
    /// plan with it.
    async fn both(table: fn() -> MemTable, sql: &str) -> (Vec<RecordBatch>, Vec<RecordBatch>, String) {
        let mut out = Vec::new();
        let mut plan = String::new();
        for dense in [false, true] {
            let c = ctx(dense);
            c.register_table("t", Arc::new(table())).unwrap();
            c.register_table("u", Arc::new(table())).unwrap();
            let df = c
                .sql(&format!("SELECT * FROM ({sql}) ORDER BY 1 NULLS LAST"))
                .await
                .unwrap();
            if dense {
                let physical = df.clone().create_physical_plan().await.unwrap();
                plan = datafusion::physical_plan::displayable(physical.as_ref())
                    .indent(false)
                    .to_string();
            }
            out.push(df.collect().await.unwrap());
        }
        let dense = out.pop().unwrap_or_default();
        (out.pop().unwrap_or_default(), dense, plan)
    }

    /// Equal, floats to 1e-12 relative (the order of additions differs).
    fn assert_same(a: &[RecordBatch], b: &[RecordBatch]) {
        let a = datafusion::arrow::compute::concat_batches(&a[0].schema(), a).unwrap();
        let b = datafusion::arrow::compute::concat_batches(&b[0].schema(), b).unwrap();
        assert_eq!(a.schema(), b.schema());
        assert_eq!(a.num_rows(), b.num_rows());
        for (j, (x, y)) in a.columns().iter().zip(b.columns()).enumerate() {
            let name = a.schema().field(j).name().clone();
            if let (Some(x), Some(y)) = (
                x.as_primitive_opt::<datafusion::arrow::datatypes::Float64Type>(),
                y.as_primitive_opt::<datafusion::arrow::datatypes::Float64Type>(),
            ) {
                for r in 0..x.len() {
                    assert_eq!(x.is_valid(r), y.is_valid(r), "{name} row {r}");
                    if x.is_valid(r) {
                        let (p, q) = (x.value(r), y.value(r));
                        assert!((p - q).abs() <= 1e-12 * p.abs().max(1.0), "{name} row {r}: {p} vs {q}");
                    }
                }
            } else {
                assert_eq!(x, y, "column {name}");
            }
        }
    }

    #[tokio::test]
    async fn dense_keys_give_datafusions_groups_and_values() {
        let (plain, dense, plan) = both(|| table(4, 3000, 1, false), QUERY).await;
        assert!(plan.contains("DenseAggregateExec"), "{plan}");
        assert!(!plan.contains("AggregateExec: mode"), "{plan}");
        assert!(plain[0].num_rows() > 0);
        assert_same(&plain, &dense);
    }

    #[tokio::test]
    async fn sparse_keys_switch_to_a_map_and_int32_keys_work() {
        let (plain, dense, plan) = both(|| table(3, 2400, 1_000_000_007, false), QUERY).await;
        assert!(plan.contains("DenseAggregateExec"), "{plan}");
        assert_same(&plain, &dense);
        let (plain, dense, _) = both(|| table(2, 1500, 1, true), QUERY).await;
        assert_same(&plain, &dense);
    }

    #[tokio::test]
    async fn joins_above_see_the_partitioning_they_planned_for() {
        // Both sides are aggregated, so both are dense operators split by
        // the same hash; and one side is joined with the raw table.
        let sql = "SELECT a.id, a.n, b.total, (SELECT count(*) FROM u WHERE u.id = a.id) AS m
                   FROM (SELECT id, count(*) AS n FROM t GROUP BY id) a
                   FULL JOIN (SELECT id, sum(amount) AS total FROM u WHERE qty > 0 GROUP BY id) b ON a.id = b.id";
        let (plain, dense, plan) = both(|| table(4, 3000, 1, false), sql).await;
        assert!(plan.contains("DenseAggregateExec"), "{plan}");
        assert_same(&plain, &dense);
        // One side aggregated (dense), the other hash-repartitioned rows.
        let sql = "SELECT u.id, u.qty, u.amount, a.n FROM u JOIN (SELECT id, count(*) AS n FROM t GROUP BY id) a ON a.id = u.id
                   ORDER BY 1, 2, 3";
        let (plain, dense, plan) = both(|| table(3, 1200, 1, false), sql).await;
        assert!(
            plan.contains("DenseAggregateExec") && plan.contains("mode=Partitioned"),
            "{plan}"
        );
        assert_same(&plain, &dense);
    }

    #[tokio::test]
    async fn key_ranges_that_move_down_and_up_grow_the_slots_on_either_side() {
        fn drifting() -> MemTable {
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("amount", DataType::Float64, true),
            ]));
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
            let batch = |lo: i64, rng: &mut Xoshiro256PlusPlus| {
                let ids: Int64Array = (0..200)
                    .map(|_| (rng.gen_range(0..30) != 0).then(|| lo + rng.gen_range(0..100)))
                    .collect();
                let amount: Float64Array = (0..200).map(|_| Some(rng.gen_range(0.0..10.0))).collect();
                RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(amount)]).unwrap()
            };
            let down: Vec<RecordBatch> = (0..12).map(|b| batch(5000 - 300 * b, &mut rng)).collect();
            let up: Vec<RecordBatch> = (0..12).map(|b| batch(-7000 + 450 * b, &mut rng)).collect();
            MemTable::try_new(schema, vec![down, up]).unwrap()
        }
        let sql = "SELECT id, count(*) AS n, sum(amount) AS s, min(id) AS lo FROM t GROUP BY id";
        let (plain, dense, plan) = both(drifting, sql).await;
        assert!(plan.contains("DenseAggregateExec"), "{plan}");
        assert!(plain[0].num_rows() > 0);
        assert_same(&plain, &dense);
    }

    #[tokio::test]
    async fn unsupported_aggregates_are_left_to_datafusion() {
        let sql = "SELECT id, stddev_pop(amount) AS s, count(DISTINCT kind) AS k FROM t GROUP BY id";
        let (plain, dense, plan) = both(|| table(2, 900, 1, false), sql).await;
        assert!(!plan.contains("DenseAggregateExec"), "{plan}");
        assert_same(&plain, &dense);
        let sql = "SELECT kind, count(*) AS n FROM t GROUP BY kind";
        let (_, _, plan) = both(|| table(2, 900, 1, false), sql).await;
        assert!(!plan.contains("DenseAggregateExec"), "{plan}");
    }
}
