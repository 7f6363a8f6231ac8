//! `crmflow_rfm_days(day, amount)`: a customer's purchase days in one
//! aggregate by customer, what the RFM summary of the purchase models needs.
//!
//! The summary is defined on purchase days: a day's spend is the exact sum
//! of its amounts (each cast to `Decimal128(38, 18)`, then the sum cast to
//! Float64), and per customer come the number of distinct days, the first and
//! last day, the exact sum of the daily spends and the first day's spend.
//! Written as SQL that is an aggregate by (customer, day), 9 million groups
//! at a million customers, then one by customer; this function is the same
//! numbers from one aggregate by customer, whose state is the customer's
//! (day, amount) rows: 17 bytes a transaction instead of a hash-table entry
//! per purchase day (README "Performance").
//!
//! Every conversion is Arrow's cast, the one DataFusion's `CAST` runs, so
//! the results equal the two-level SQL bit for bit (tested below).
//! Rows with a NULL day are ignored; a NULL amount counts its day and adds
//! nothing (a day of NULL amounts has a NULL spend), as the SQL's `sum` does.
//! The output is a struct: `n` (Int64), `first` and `last` (the days as
//! Float64 day numbers), `total` and `first_spend` (Float64).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, ListArray,
    StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, FieldRef, Fields, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::stages::group_log::{Grouped, Groups, OneGroup, kept};

/// The function's registered name.
pub const RFM_DAYS: &str = "crmflow_rfm_days";

/// `crmflow_rfm_days(day Date32, amount Float64)` (see the module).
pub fn rfm_days_udaf() -> AggregateUDF {
    AggregateUDF::from(RfmDays {
        signature: Signature::exact(vec![DataType::Date32, DataType::Float64], Volatility::Immutable),
    })
}

/// The output struct's fields.
fn output_fields() -> Fields {
    Fields::from(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("first", DataType::Float64, true),
        Field::new("last", DataType::Float64, true),
        Field::new("total", DataType::Float64, true),
        Field::new("first_spend", DataType::Float64, true),
    ])
}

const DECIMAL: DataType = DataType::Decimal128(38, 18);

/// DataFusion's `CAST`: an error, not a NULL, when a value does not fit.
fn cast(a: &dyn Array, to: &DataType) -> Result<ArrayRef> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(cast_with_options(a, to, &options)?)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RfmDays {
    signature: Signature,
}

impl AggregateUDFImpl for RfmDays {
    fn name(&self) -> &str {
        RFM_DAYS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(output_fields()))
    }

    /// Every group has a summary (`n` is never NULL, so neither is the
    /// frequency computed from it).
    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Log::with_groups(1))))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "days"),
                list(DataType::Date32),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "amounts"),
                list(DataType::Float64),
                true,
            )),
        ])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Log::default()))
    }
}

/// The rows of every group, in arrival order: group index, day, amount and
/// whether the amount is non-NULL.
#[derive(Debug, Default, Clone)]
struct Log {
    groups: Groups,
    day: Vec<i32>,
    amount: Vec<f64>,
    valid: Vec<bool>,
}

/// Rows a summary converts at a time (a chunk of whole groups): bounds what
/// the casts allocate beside the log.
const CHUNK: usize = 1 << 16;

impl Log {
    fn with_groups(groups: usize) -> Log {
        Log {
            groups: Groups::with_groups(groups),
            ..Log::default()
        }
    }

    fn push(&mut self, g: usize, day: i32, amount: f64, valid: bool) -> Result<()> {
        self.groups.push(g, RFM_DAYS)?;
        self.day.push(day);
        self.amount.push(amount);
        self.valid.push(valid);
        Ok(())
    }

    /// Forgets the first `n` groups; the rest are renumbered from 0.
    fn forget(&mut self, n: usize) {
        let kept = self.groups.forget(n, |from, to| {
            self.day[to] = self.day[from];
            self.amount[to] = self.amount[from];
            self.valid[to] = self.valid[from];
        });
        if self.groups.is_empty() {
            *self = Log::default();
            return;
        }
        self.day.truncate(kept);
        self.amount.truncate(kept);
        self.valid.truncate(kept);
    }

    /// The summary of the groups in `rows`, whole groups of up to `chunk`
    /// rows at a time (more for one larger group).
    fn summarize(&self, rows: &mut Grouped, chunk: usize) -> Result<ArrayRef> {
        let groups = rows.offsets.len() - 1;
        let mut out = Summary::with_capacity(groups);
        let mut g0 = 0;
        while g0 < groups {
            let mut g1 = g0 + 1;
            while g1 < groups && rows.offsets[g1 + 1] - rows.offsets[g0] <= chunk {
                g1 += 1;
            }
            self.summarize_chunk(&rows.offsets[g0..=g1], &mut rows.order, &mut out)?;
            g0 = g1;
        }
        out.finish()
    }

    /// Appends the summaries of the groups whose rows are
    /// `order[offsets[0]..offsets[last]]` to `out`.
    fn summarize_chunk(&self, offsets: &[usize], order: &mut [u32], out: &mut Summary) -> Result<()> {
        let (start, end) = (offsets[0], offsets[offsets.len() - 1]);
        for w in offsets.windows(2) {
            order[w[0]..w[1]].sort_unstable_by_key(|&i| self.day[i as usize]);
        }
        let rows = &order[start..end];
        // Each amount as DataFusion's CAST(amount AS DECIMAL(38, 18)).
        let amounts = Float64Array::new(
            rows.iter().map(|&i| self.amount[i as usize]).collect(),
            Some(rows.iter().map(|&i| self.valid[i as usize]).collect()),
        );
        let amounts = cast(&amounts, &DECIMAL)?;
        let amounts = amounts.as_primitive::<Decimal128Type>();
        // Each group's days in order, summed day by day.
        let (mut daily, mut daily_valid, mut day_offsets) = (vec![], vec![], vec![0usize]);
        for w in offsets.windows(2) {
            let (s, e) = (w[0] - start, w[1] - start);
            let mut days = 0i64;
            let mut previous = None;
            for r in s..e {
                let d = self.day[rows[r] as usize];
                if previous != Some(d) {
                    days += 1;
                    previous = Some(d);
                    daily.push(0i128);
                    daily_valid.push(false);
                }
                if amounts.is_valid(r) {
                    let last = daily.len() - 1;
                    let Some(sum) = daily[last].checked_add(amounts.value(r)) else {
                        return exec_err!("{RFM_DAYS}: a day's spend overflows Decimal128(38, 18)");
                    };
                    daily[last] = sum;
                    daily_valid[last] = true;
                }
            }
            out.n.push(days);
            let day = |r: usize| f64::from(self.day[rows[r] as usize]);
            out.first.push((s < e).then(|| day(s)));
            out.last.push((s < e).then(|| day(e - 1)));
            day_offsets.push(daily.len());
        }
        // A day's spend: CAST(sum AS DOUBLE); the total: the exact sum of
        // the days' spends, each CAST back to DECIMAL(38, 18).
        let daily =
            Decimal128Array::new(daily.into(), Some(NullBuffer::from(daily_valid))).with_precision_and_scale(38, 18)?;
        let spend = cast(&daily, &DataType::Float64)?;
        let spend = spend.as_primitive::<Float64Type>();
        let spend_decimal = cast(spend, &DECIMAL)?;
        let spend_decimal = spend_decimal.as_primitive::<Decimal128Type>();
        for w in day_offsets.windows(2) {
            let mut sum: Option<i128> = None;
            for i in w[0]..w[1] {
                if spend_decimal.is_valid(i) {
                    let Some(t) = sum.unwrap_or(0).checked_add(spend_decimal.value(i)) else {
                        return exec_err!("{RFM_DAYS}: a customer's spend overflows Decimal128(38, 18)");
                    };
                    sum = Some(t);
                }
            }
            out.total.push(sum);
            out.first_spend
                .push((w[0] < w[1] && spend.is_valid(w[0])).then(|| spend.value(w[0])));
        }
        Ok(())
    }

    fn add(&mut self, rows: impl Iterator<Item = (usize, usize)>, days: &dyn Array, amounts: &dyn Array) -> Result<()> {
        let days = days.as_primitive::<Date32Type>();
        let amounts = amounts.as_primitive::<Float64Type>();
        for (g, i) in rows {
            if days.is_valid(i) {
                self.push(g, days.value(i), amounts.value(i), amounts.is_valid(i))?;
            }
        }
        Ok(())
    }
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
        self.add(rows, values[0].as_ref(), values[1].as_ref())
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.groups.grow(total_num_groups);
        let (days, amounts) = (values[0].as_list::<i32>(), values[1].as_list::<i32>());
        let offsets = days.value_offsets();
        let rows = (0..group_indices.len())
            .flat_map(|r| (offsets[r] as usize..offsets[r + 1] as usize).map(move |i| (group_indices[r], i)));
        self.add(rows, days.values().as_ref(), amounts.values().as_ref())
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (n, rows) = self.groups.emitted(emit_to);
        let offsets = OffsetBuffer::<i32>::from_lengths(rows.offsets.windows(2).map(|w| w[1] - w[0]));
        // Days are never NULL in the log (NULL days are not kept).
        let days = Date32Array::new(rows.order.iter().map(|&i| self.day[i as usize]).collect(), None);
        let amounts = Float64Array::new(
            rows.order.iter().map(|&i| self.amount[i as usize]).collect(),
            Some(rows.order.iter().map(|&i| self.valid[i as usize]).collect()),
        );
        self.forget(n);
        let list = |t: DataType, values: ArrayRef| -> Result<ArrayRef> {
            let field = Arc::new(Field::new_list_field(t, true));
            Ok(Arc::new(ListArray::try_new(field, offsets.clone(), values, None)?))
        };
        Ok(vec![
            list(DataType::Date32, Arc::new(days))?,
            list(DataType::Float64, Arc::new(amounts))?,
        ])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (n, mut rows) = self.groups.emitted(emit_to);
        let out = self.summarize(&mut rows, CHUNK)?;
        self.forget(n);
        Ok(out)
    }

    /// Each row as a group of its own (partial aggregation skipped).
    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let n = values[0].len();
        let mut log = Log::with_groups(n);
        log.add(
            kept(n, opt_filter).map(|i| (i, i)),
            values[0].as_ref(),
            values[1].as_ref(),
        )?;
        log.state(EmitTo::All)
    }

    fn size(&self) -> usize {
        self.groups.size() + self.day.capacity() * 4 + self.amount.capacity() * 8 + self.valid.capacity()
    }
}

/// The output columns, group by group.
struct Summary {
    n: Vec<i64>,
    first: Vec<Option<f64>>,
    last: Vec<Option<f64>>,
    total: Vec<Option<i128>>,
    first_spend: Vec<Option<f64>>,
}

impl Summary {
    fn with_capacity(groups: usize) -> Summary {
        Summary {
            n: Vec::with_capacity(groups),
            first: Vec::with_capacity(groups),
            last: Vec::with_capacity(groups),
            total: Vec::with_capacity(groups),
            first_spend: Vec::with_capacity(groups),
        }
    }

    fn finish(self) -> Result<ArrayRef> {
        let total = Decimal128Array::from(self.total).with_precision_and_scale(38, 18)?;
        Ok(Arc::new(StructArray::try_new(
            output_fields(),
            vec![
                Arc::new(Int64Array::from(self.n)),
                Arc::new(Float64Array::from(self.first)),
                Arc::new(Float64Array::from(self.last)),
                cast(&total, &DataType::Float64)?,
                Arc::new(Float64Array::from(self.first_spend)),
            ],
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::{Int64Type, Schema};
    use datafusion::common::ScalarValue;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use rand::{Rng, SeedableRng};

    /// Transactions of 300 customers with up to 30 rows each over 40 days
    /// (same-day purchases on purpose), amounts with many decimals (their
    /// Decimal128 casts round), one in 40 amounts NULL and one in 50 days
    /// NULL; in `parts` partitions of 7-row batches.
    fn transactions(parts: usize) -> MemTable {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
        let (mut ids, mut days, mut amounts) = (vec![], vec![], vec![]);
        for id in 0..300i64 {
            for _ in 0..rng.gen_range(1..30) {
                ids.push(id);
                days.push((!rng.gen_ratio(1, 50)).then(|| 20_000 + rng.gen_range(0..40)));
                amounts.push((!rng.gen_ratio(1, 40)).then(|| rng.gen_range(0.0..1000.0) / 3.0));
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Date32, true),
            Field::new("amount", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Date32Array::from(days)),
                Arc::new(Float64Array::from(amounts)),
            ],
        )
        .unwrap();
        let mut partitions = vec![vec![]; parts];
        for (k, at) in (0..batch.num_rows()).step_by(7).enumerate() {
            partitions[k % parts].push(batch.slice(at, 7.min(batch.num_rows() - at)));
        }
        MemTable::try_new(schema, partitions).unwrap()
    }

    /// The summary as an aggregate by (customer, day), then by customer.
    const TWO_LEVEL: &str = "
        WITH daily AS (
            SELECT id, CAST(CAST(day AS INT) AS DOUBLE) AS d,
                   CAST(sum(CAST(amount AS DECIMAL(38, 18))) AS DOUBLE) AS spend
            FROM t WHERE day IS NOT NULL GROUP BY id, day)
        SELECT id, count(*) AS n, min(d) AS first, max(d) AS last,
               CAST(sum(CAST(spend AS DECIMAL(38, 18))) AS DOUBLE) AS total,
               first_value(spend ORDER BY d) AS first_spend
        FROM daily GROUP BY id ORDER BY id";

    const ONE_LEVEL: &str = "
        SELECT id, r['n'] AS n, r['first'] AS first, r['last'] AS last, r['total'] AS total,
               r['first_spend'] AS first_spend
        FROM (SELECT id, crmflow_rfm_days(day, amount) AS r FROM t GROUP BY id) ORDER BY id";

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<(i64, i64, [Option<u64>; 4])> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = vec![];
        for b in &batches {
            let f = |j: usize| b.column(j).as_primitive::<Float64Type>().clone();
            let (first, last, total, spend) = (f(2), f(3), f(4), f(5));
            for i in 0..b.num_rows() {
                let bits = |a: &Float64Array| a.is_valid(i).then(|| a.value(i).to_bits());
                out.push((
                    b.column(0).as_primitive::<Int64Type>().value(i),
                    b.column(1).as_primitive::<Int64Type>().value(i),
                    [bits(&first), bits(&last), bits(&total), bits(&spend)],
                ));
            }
        }
        out
    }

    /// Bit for bit the two-level SQL, through partial and final aggregates
    /// over 4 partitions, and with partial aggregation skipped (each row its
    /// own state).
    #[tokio::test]
    async fn equals_the_two_level_sql_bit_for_bit() {
        for skip in [false, true] {
            let mut config = SessionConfig::new().with_target_partitions(4).with_batch_size(16);
            if skip {
                let e = &mut config.options_mut().execution;
                e.skip_partial_aggregation_probe_rows_threshold = 1;
                e.skip_partial_aggregation_probe_ratio_threshold = 0.0;
            }
            let ctx = SessionContext::new_with_config(config);
            ctx.register_table("t", Arc::new(transactions(4))).unwrap();
            ctx.register_udaf(rfm_days_udaf());
            let expected = rows(&ctx, TWO_LEVEL).await;
            assert_eq!(expected.len(), 300);
            assert!(expected.iter().any(|r| r.2[3].is_none()), "a first day of NULL amounts");
            assert!(expected.iter().any(|r| r.1 > 20), "many purchase days");
            assert_eq!(
                rows(&ctx, ONE_LEVEL).await,
                expected,
                "skip partial aggregation: {skip}"
            );
        }
    }

    /// Without GROUP BY (the plain accumulator, partial and final over 4
    /// partitions): one customer's rows give that customer's summary.
    #[tokio::test]
    async fn without_group_by_one_customer_is_its_group() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4).with_batch_size(16));
        ctx.register_table("t", Arc::new(transactions(4))).unwrap();
        ctx.register_udaf(rfm_days_udaf());
        let grouped = rows(&ctx, ONE_LEVEL).await;
        let one = "SELECT 7 AS id, r['n'] AS n, r['first'] AS first, r['last'] AS last, r['total'] AS total,
                          r['first_spend'] AS first_spend
                   FROM (SELECT crmflow_rfm_days(day, amount) AS r FROM t WHERE id = 7)";
        assert_eq!(rows(&ctx, one).await, vec![grouped[7]]);
    }

    /// What an accumulator holds for groups 0..5: group g buys on days
    /// 10 + g and 12 + g, twice on the first.
    fn filled() -> Log {
        let mut log = Log::default();
        let days = Date32Array::from((0..5).flat_map(|g| [10 + g, 10 + g, 12 + g]).collect::<Vec<_>>());
        let amounts = Float64Array::from((0..15).map(|i| 0.1 * f64::from(i + 1)).collect::<Vec<_>>());
        let groups: Vec<usize> = (0..5).flat_map(|g| [g, g, g]).collect();
        log.update_batch(&[Arc::new(days), Arc::new(amounts)], &groups, None, 5)
            .unwrap();
        log
    }

    fn struct_rows(a: &ArrayRef) -> Vec<ScalarValue> {
        (0..a.len())
            .map(|i| ScalarValue::try_from_array(a, i).unwrap())
            .collect()
    }

    /// Emitting the first groups (as a spilled aggregate merges) leaves the
    /// rest renumbered; chunks of groups and a state merged into another
    /// accumulator evaluate the same; group 0 by hand.
    #[test]
    fn first_groups_emit_and_states_merge() {
        let all = struct_rows(&filled().evaluate(EmitTo::All).unwrap());
        // In chunks of 2 rows (each group one chunk) and of 6 (two groups).
        for chunk in [2, 6] {
            let log = filled();
            let (_, mut rows) = log.groups.emitted(EmitTo::All);
            assert_eq!(
                struct_rows(&log.summarize(&mut rows, chunk).unwrap()),
                all,
                "chunk {chunk}"
            );
        }
        let mut log = filled();
        let mut parts = struct_rows(&log.evaluate(EmitTo::First(2)).unwrap());
        parts.extend(struct_rows(&log.evaluate(EmitTo::All).unwrap()));
        assert_eq!(parts, all);
        let state = filled().state(EmitTo::All).unwrap();
        let mut merged = Log::default();
        merged.merge_batch(&state, &[4, 3, 2, 1, 0], 5).unwrap();
        let mut reversed = struct_rows(&merged.evaluate(EmitTo::All).unwrap());
        reversed.reverse();
        assert_eq!(reversed, all);
        // Group 0 by hand: day 10 buys 0.1 and 0.2, day 12 0.1 * 3 (the
        // double 0.30000000000000004). Arrow casts a double to 18 decimals
        // as round(v * 10^18) with the product in double precision: 10^17
        // and 2 x 10^17 (the products' errors are below half their ulps),
        // so day 10's spend is 0.3 (the double nearest 0.3, not 0.1 + 0.2).
        // Day 12: 0.30000000000000004 x 10^18 = 300000000000000044.4 is
        // nearest the double 300000000000000064 (ulp 64). The total
        // 600000000000000064 lies halfway between the doubles 6 x 10^17 and
        // 600000000000000128 and rounds to the even one: 0.6.
        let ScalarValue::Struct(g0) = &all[0] else {
            panic!("{:?}", all[0])
        };
        let col = |j: usize| g0.column(j).as_primitive::<Float64Type>().value(0);
        assert_eq!(g0.column(0).as_primitive::<Int64Type>().value(0), 2);
        assert_eq!((col(1), col(2)), (10.0, 12.0));
        assert_ne!(0.1 + 0.2, 0.3);
        assert_eq!(col(4), 0.3);
        assert_eq!(col(3), 0.6);
    }
}
