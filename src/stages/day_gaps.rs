//! `crmflow_day_gaps(day)`: the gaps between a customer's distinct purchase
//! days in one aggregate by customer, what the features' purchase
//! regularity needs (`sql/customer_features.sql`).
//!
//! The gaps are the differences of consecutive distinct days (in days, so
//! every gap is at least 1); per customer come their number `n_gaps`
//! (Int64, never NULL), their mean `mean_gap` and their population standard
//! deviation `sd_gap` (Float64, NULL without a gap). Written as SQL that is a
//! `lag(day)` window over the transactions in (customer, day) order, a filter
//! on the gaps above 0 and an aggregate with `avg` and `stddev_pop`: a sort of
//! every transaction. This function is the same numbers from the aggregate
//! by customer the features compute anyway, whose state is the customer's
//! days: 8 bytes a transaction in flat vectors (README "Performance").
//!
//! The numbers are DataFusion's, bit for bit (tested below): the mean is the
//! gaps' exact sum over their count, as `avg` of integers below 2^53 is; the
//! deviation is `stddev_pop`'s Welford recurrence over the gaps in day order
//! (DataFusion's `update`), then `sqrt(m2 / n)`. Rows with a NULL day are
//! ignored, as the window's `gap > 0` drops them.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, ListArray, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, FieldRef, Fields};
use datafusion::common::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use super::group_log::{Groups, OneGroup, kept};

/// The function's registered name.
pub const DAY_GAPS: &str = "crmflow_day_gaps";

/// `crmflow_day_gaps(day Date32)` (see the module).
pub fn day_gaps_udaf() -> AggregateUDF {
    AggregateUDF::from(DayGaps {
        signature: Signature::exact(vec![DataType::Date32], Volatility::Immutable),
    })
}

/// The output struct's fields.
fn output_fields() -> Fields {
    Fields::from(vec![
        Field::new("n_gaps", DataType::Int64, false),
        Field::new("mean_gap", DataType::Float64, true),
        Field::new("sd_gap", DataType::Float64, true),
    ])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DayGaps {
    signature: Signature,
}

impl AggregateUDFImpl for DayGaps {
    fn name(&self) -> &str {
        DAY_GAPS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(output_fields()))
    }

    /// Every group has a result (`n_gaps` is 0 without gaps).
    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Log::with_groups(1))))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "days"),
            DataType::List(Arc::new(Field::new_list_field(DataType::Date32, true))),
            true,
        ))])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Log::default()))
    }
}

/// The days of every group, in arrival order, with their group index.
#[derive(Debug, Default, Clone)]
struct Log {
    groups: Groups,
    day: Vec<i32>,
}

impl Log {
    fn with_groups(groups: usize) -> Log {
        Log {
            groups: Groups::with_groups(groups),
            day: vec![],
        }
    }

    fn add(&mut self, rows: impl Iterator<Item = (usize, usize)>, days: &dyn Array) -> Result<()> {
        let days = days.as_primitive::<Date32Type>();
        for (g, i) in rows {
            if days.is_valid(i) {
                self.groups.push(g, DAY_GAPS)?;
                self.day.push(days.value(i));
            }
        }
        Ok(())
    }

    /// The groups `emit_to` emits: each group's offsets into the days, and
    /// the days, group after group; the groups are then forgotten.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<usize>, Vec<i32>) {
        let (n, rows) = self.groups.emitted(emit_to);
        let days = rows.order.iter().map(|&i| self.day[i as usize]).collect();
        let kept = self.groups.forget(n, |from, to| self.day[to] = self.day[from]);
        if self.groups.is_empty() {
            self.day = vec![];
        }
        self.day.truncate(kept);
        (rows.offsets, days)
    }
}

/// The gaps of one group's days (sorted here): their count, their mean and
/// population standard deviation as DataFusion's `avg` and `stddev_pop`
/// compute them over the gaps in day order.
fn gaps(days: &mut [i32]) -> (i64, Option<f64>, Option<f64>) {
    days.sort_unstable();
    let (mut n, mut sum, mut mean, mut m2) = (0u64, 0i64, 0f64, 0f64);
    for w in days.windows(2) {
        let gap = i64::from(w[1]) - i64::from(w[0]);
        if gap > 0 {
            // DataFusion's variance `update` (Welford).
            n += 1;
            sum += gap;
            let v = gap as f64;
            let delta1 = v - mean;
            mean += delta1 / n as f64;
            m2 += delta1 * (v - mean);
        }
    }
    if n == 0 {
        return (0, None, None);
    }
    (n as i64, Some(sum as f64 / n as f64), Some((m2 / n as f64).sqrt()))
}

/// The output struct of groups whose days are `days[offsets[g]..offsets[g + 1]]`.
fn summarize(offsets: &[usize], days: &mut [i32]) -> Result<ArrayRef> {
    let groups = offsets.len() - 1;
    let (mut n, mut mean, mut sd) = (
        Vec::with_capacity(groups),
        Vec::with_capacity(groups),
        Vec::with_capacity(groups),
    );
    for w in offsets.windows(2) {
        let (k, m, s) = gaps(&mut days[w[0]..w[1]]);
        n.push(k);
        mean.push(m);
        sd.push(s);
    }
    Ok(Arc::new(StructArray::try_new(
        output_fields(),
        vec![
            Arc::new(Int64Array::from(n)),
            Arc::new(Float64Array::from(mean)),
            Arc::new(Float64Array::from(sd)),
        ],
        None,
    )?))
}

impl GroupsAccumulator for Log {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.grow(total_num_groups);
        let rows = kept(group_indices.len(), opt_filter).map(|i| (group_indices[i], i));
        self.add(rows, values[0].as_ref())
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.groups.grow(total_num_groups);
        let days = values[0].as_list::<i32>();
        let offsets = days.value_offsets();
        let rows = (0..group_indices.len())
            .flat_map(|r| (offsets[r] as usize..offsets[r + 1] as usize).map(move |i| (group_indices[r], i)));
        self.add(rows, days.values().as_ref())
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (offsets, days) = self.take(emit_to);
        let offsets = OffsetBuffer::<i32>::from_lengths(offsets.windows(2).map(|w| w[1] - w[0]));
        // Days are never NULL in the log (NULL days are not kept).
        let field = Arc::new(Field::new_list_field(DataType::Date32, true));
        let days = Arc::new(Date32Array::new(days.into(), None));
        Ok(vec![Arc::new(ListArray::try_new(field, offsets, days, None)?)])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (offsets, mut days) = self.take(emit_to);
        summarize(&offsets, &mut days)
    }

    /// Each row as a group of its own (partial aggregation skipped).
    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let n = values[0].len();
        let mut log = Log::with_groups(n);
        log.add(kept(n, opt_filter).map(|i| (i, i)), values[0].as_ref())?;
        log.state(EmitTo::All)
    }

    fn size(&self) -> usize {
        self.groups.size() + self.day.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type, Schema};
    use datafusion::common::ScalarValue;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use rand::{Rng, SeedableRng};

    /// Purchase days of 400 customers, up to 40 rows each over 300 days
    /// (same-day purchases on purpose), one in 50 days NULL; in `parts`
    /// partitions of 7-row batches.
    fn transactions(parts: usize) -> MemTable {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11);
        let (mut ids, mut days) = (vec![], vec![]);
        for id in 0..400i64 {
            let span = rng.gen_range(1..300);
            for _ in 0..rng.gen_range(1..40) {
                ids.push(id);
                days.push((!rng.gen_ratio(1, 50)).then(|| 20_000 + rng.gen_range(0..span)));
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Int64, false),
            Field::new("day", DataType::Date32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(ids)), Arc::new(Date32Array::from(days))],
        )
        .unwrap();
        let mut partitions = vec![vec![]; parts];
        for (k, at) in (0..batch.num_rows()).step_by(7).enumerate() {
            partitions[k % parts].push(batch.slice(at, 7.min(batch.num_rows() - at)));
        }
        MemTable::try_new(schema, partitions).unwrap()
    }

    /// The gaps as the features computed them before this function: a lag
    /// window in (customer, day) order, the gaps above 0, then `count`,
    /// `avg` and `stddev_pop` (customers without a gap have no row).
    const WINDOW: &str = "
        WITH gaps AS (
            SELECT customer_id,
                   CASE WHEN lag(customer_id) OVER w = customer_id THEN day - lag(day) OVER w END AS gap
            FROM t
            WINDOW w AS (PARTITION BY customer_id % 64 ORDER BY customer_id, day))
        SELECT customer_id, count(gap) AS n_gaps, avg(CAST(gap AS DOUBLE)) AS mean_gap,
               stddev_pop(CAST(gap AS DOUBLE)) AS sd_gap
        FROM gaps WHERE gap > 0 GROUP BY customer_id ORDER BY customer_id";

    const FUNCTION: &str = "
        SELECT customer_id, g['n_gaps'] AS n_gaps, g['mean_gap'] AS mean_gap, g['sd_gap'] AS sd_gap
        FROM (SELECT customer_id, crmflow_day_gaps(day) AS g FROM t GROUP BY customer_id)
        ORDER BY customer_id";

    type Row = (i64, i64, Option<u64>, Option<u64>);

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<Row> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = vec![];
        for b in &batches {
            let (mean, sd) = (
                b.column(2).as_primitive::<Float64Type>(),
                b.column(3).as_primitive::<Float64Type>(),
            );
            for i in 0..b.num_rows() {
                let bits = |a: &Float64Array| a.is_valid(i).then(|| a.value(i).to_bits());
                out.push((
                    b.column(0).as_primitive::<Int64Type>().value(i),
                    b.column(1).as_primitive::<Int64Type>().value(i),
                    bits(mean),
                    bits(sd),
                ));
            }
        }
        out
    }

    /// A session of 4 partitions of small batches, optionally skipping
    /// partial aggregation from the first row on.
    fn session(skip: bool) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(4).with_batch_size(16);
        if skip {
            let e = &mut config.options_mut().execution;
            e.skip_partial_aggregation_probe_rows_threshold = 1;
            e.skip_partial_aggregation_probe_ratio_threshold = 0.0;
        }
        let ctx = SessionContext::new_with_config(config);
        ctx.register_table("t", Arc::new(transactions(4))).unwrap();
        ctx.register_udaf(day_gaps_udaf());
        ctx
    }

    /// Bit for bit the window SQL as the features ran it (its gaps
    /// aggregated in day order, each customer's in one partition) for every
    /// customer with a gap, and 0, NULL, NULL for the rest; through partial
    /// and final aggregates over 4 partitions, and the same with partial
    /// aggregation skipped. (Skipped, the window SQL's own deviation moves in
    /// the last bits: its one-row states are merged, not updated in order.)
    #[tokio::test]
    async fn equals_the_window_sql_bit_for_bit() {
        let window = rows(&session(false), WINDOW).await;
        assert!(window.len() > 300 && window.len() < 400, "{} with gaps", window.len());
        // Welford's deviation is not the naive one to the bit everywhere.
        assert!(window.iter().any(|r| r.1 > 2), "customers with several gaps");
        for skip in [false, true] {
            let function = rows(&session(skip), FUNCTION).await;
            assert_eq!(function.len(), 400);
            let with_gaps: Vec<Row> = function.iter().filter(|r| r.1 > 0).copied().collect();
            assert_eq!(with_gaps, window, "skip partial aggregation: {skip}");
            for r in function.iter().filter(|r| r.1 == 0) {
                assert_eq!((r.2, r.3), (None, None), "customer {}", r.0);
            }
        }
    }

    /// By hand: days 3, 1, 1, 6, 10 (out of order, one twice) make the gaps
    /// 2, 3, 4: mean 3, deviation sqrt(2/3); one day makes no gap; without
    /// GROUP BY, through the plain accumulator.
    #[tokio::test]
    async fn gaps_by_hand() {
        let mut days = [3, 1, 1, 6, 10];
        let (n, mean, sd) = gaps(&mut days);
        assert_eq!((n, mean), (3, Some(3.0)));
        assert!((sd.unwrap() - (2.0f64 / 3.0).sqrt()).abs() < 1e-15, "{sd:?}");
        assert_eq!(gaps(&mut [5, 5]), (0, None, None));
        assert_eq!(gaps(&mut [5, 7]), (1, Some(2.0), Some(0.0)));
        let ctx = session(false);
        let grouped = rows(&ctx, FUNCTION).await;
        let one = "SELECT 7 AS customer_id, g['n_gaps'] AS n_gaps, g['mean_gap'] AS mean_gap, g['sd_gap'] AS sd_gap
                   FROM (SELECT crmflow_day_gaps(day) AS g FROM t WHERE customer_id = 7)";
        assert_eq!(rows(&ctx, one).await, vec![grouped[7]]);
    }

    /// Emitting the first groups (as a spilled aggregate merges) leaves the
    /// rest renumbered; a state merged into another accumulator in another
    /// group order evaluates the same.
    #[test]
    fn first_groups_emit_and_states_merge() {
        let filled = || {
            let mut log = Log::default();
            let days = Date32Array::from((0..5).flat_map(|g| [10 + 2 * g, 10, 10 + g, 30]).collect::<Vec<_>>());
            let groups: Vec<usize> = (0..5).flat_map(|g| [g, g, g, g]).collect();
            log.update_batch(&[Arc::new(days)], &groups, None, 5).unwrap();
            log
        };
        let rows = |a: &ArrayRef| -> Vec<ScalarValue> {
            (0..a.len())
                .map(|i| ScalarValue::try_from_array(a, i).unwrap())
                .collect()
        };
        let all = rows(&filled().evaluate(EmitTo::All).unwrap());
        let mut log = filled();
        let mut parts = rows(&log.evaluate(EmitTo::First(2)).unwrap());
        parts.extend(rows(&log.evaluate(EmitTo::All).unwrap()));
        assert_eq!(parts, all);
        let state = filled().state(EmitTo::All).unwrap();
        let mut merged = Log::default();
        merged.merge_batch(&state, &[4, 3, 2, 1, 0], 5).unwrap();
        let mut reversed = rows(&merged.evaluate(EmitTo::All).unwrap());
        reversed.reverse();
        assert_eq!(reversed, all);
        // Group 0: days 10, 10, 10, 30: one gap of 20.
        let ScalarValue::Struct(g0) = &all[0] else {
            panic!("{:?}", all[0])
        };
        assert_eq!(g0.column(0).as_primitive::<Int64Type>().value(0), 1);
        assert_eq!(g0.column(1).as_primitive::<Float64Type>().value(0), 20.0);
        // Group 2: days 14, 10, 12, 30: gaps 2, 2, 16.
        let ScalarValue::Struct(g2) = &all[2] else {
            panic!("{:?}", all[2])
        };
        assert_eq!(g2.column(0).as_primitive::<Int64Type>().value(0), 3);
        assert_eq!(g2.column(1).as_primitive::<Float64Type>().value(0), 20.0 / 3.0);
    }
}
