//! What a run spilled to disk: the `spill_count`, `spilled_bytes` and
//! `spilled_rows` metrics of every operator of every plan the engine runs
//! (sorts, aggregates, sort-merge joins, repartitions), summed per run.
//!
//! A physical optimizer rule, last of the session's rules, wraps the root of
//! each plan in [`MeteredExec`]; when a stream of it ends, the spill metrics
//! of the whole plan below are recorded (by identity, so a plan executed
//! partition by partition counts once). Metric values are shared counters:
//! [`SpillMeter::totals`] reads them as they are at that time. Only local
//! plans are metered (Ballista's run on executors, whose metrics stay there).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::MetricValue;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Metric, PlanProperties};
use futures::Stream;

/// Spill totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Spill {
    /// Spill files written.
    pub files: u64,
    pub bytes: u64,
    pub rows: u64,
}

/// The spill metrics of the plans run so far.
#[derive(Debug, Default)]
pub struct SpillMeter {
    metrics: Mutex<HashMap<usize, Arc<Metric>>>,
}

impl SpillMeter {
    /// Records the spill metrics of `plan` and everything below it.
    fn record(&self, plan: &dyn ExecutionPlan) {
        let mut found = Vec::new();
        collect(plan, &mut found);
        if let Ok(mut m) = self.metrics.lock() {
            for metric in found {
                m.entry(Arc::as_ptr(&metric) as usize).or_insert(metric);
            }
        }
    }

    /// The totals of the metrics recorded.
    pub fn totals(&self) -> Spill {
        let mut s = Spill::default();
        if let Ok(m) = self.metrics.lock() {
            for metric in m.values() {
                match metric.value() {
                    MetricValue::SpillCount(c) => s.files += c.value() as u64,
                    MetricValue::SpilledBytes(c) => s.bytes += c.value() as u64,
                    MetricValue::SpilledRows(c) => s.rows += c.value() as u64,
                    _ => {}
                }
            }
        }
        s
    }
}

fn collect(plan: &dyn ExecutionPlan, out: &mut Vec<Arc<Metric>>) {
    if let Some(set) = plan.metrics() {
        out.extend(
            set.iter()
                .filter(|m| {
                    matches!(
                        m.value(),
                        MetricValue::SpillCount(_) | MetricValue::SpilledBytes(_) | MetricValue::SpilledRows(_)
                    )
                })
                .cloned(),
        );
    }
    for child in plan.children() {
        collect(child.as_ref(), out);
    }
}

/// The optimizer rule that puts [`MeteredExec`] on top of every plan.
#[derive(Debug)]
pub struct MeterRule(pub Arc<SpillMeter>);

impl PhysicalOptimizerRule for MeterRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        if plan.name() == MeteredExec::NAME {
            return Ok(plan);
        }
        Ok(Arc::new(MeteredExec {
            input: plan,
            meter: self.0.clone(),
        }))
    }

    fn name(&self) -> &str {
        "crmflow_spill_meter"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input through; records its spill metrics when a stream ends.
#[derive(Debug)]
pub struct MeteredExec {
    input: Arc<dyn ExecutionPlan>,
    meter: Arc<SpillMeter>,
}

impl MeteredExec {
    const NAME: &'static str = "SpillMeterExec";
}

impl DisplayAs for MeteredExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", Self::NAME)
    }
}

impl ExecutionPlan for MeteredExec {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(MeteredExec {
            input: children.swap_remove(0),
            meter: self.meter.clone(),
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let inner = self.input.execute(partition, context)?;
        Ok(Box::pin(MeteredStream {
            inner,
            plan: self.input.clone(),
            meter: self.meter.clone(),
        }))
    }
}

struct MeteredStream {
    inner: SendableRecordBatchStream,
    plan: Arc<dyn ExecutionPlan>,
    meter: Arc<SpillMeter>,
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        self.meter.record(self.plan.as_ref());
    }
}

impl Stream for MeteredStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl RecordBatchStream for MeteredStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
