//! crmflow's own functions, which stage plans call.

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

/// crmflow's own functions, which stage plans call: registered by name on
/// every engine, and on Ballista's scheduler and executors so that plans
/// that call them decode there.
#[derive(Clone, Debug, Default)]
pub struct Functions {
    pub scalar: Vec<ScalarUDF>,
    pub aggregate: Vec<AggregateUDF>,
}

impl Functions {
    /// Registers every function on `ctx`.
    pub fn register(&self, ctx: &SessionContext) {
        for f in &self.scalar {
            ctx.register_udf(f.clone());
        }
        for f in &self.aggregate {
            ctx.register_udaf(f.clone());
        }
    }
}
