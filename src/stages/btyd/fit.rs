//! The steps every BTYD fit shares once its objective is built: the
//! optimizer run from the model's starting points, the delta-method
//! standard errors, the parameters mapped back to the data's units, the
//! unpenalised log-likelihood there and the convergence verdict
//! ([`fit_objective`]); the loops of an objective over many rows on a few
//! threads with a result that does not depend on their number
//! ([`par_map`], [`chunked_sum`]); and, for tests of analytic gradients, an
//! [`Objective`] whose gradient is by central differences of a weighted
//! log-likelihood over (x, t_x, T) rows (`NumericObjective`).

use std::fmt::Debug;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(test)]
use super::data::Rfm;
use super::data::{Fit, FitError};
use super::optim::{Objective, minimize, std_errors};

/// Minimises `obj` from the best of `starts` (log-parameters) and builds the
/// [`Fit`]: `unscale` maps a vector of natural-scale values (the parameters
/// e^θ, or their standard errors) in the objective's internal units to the
/// model's parameters in the data's units (a linear map per parameter, so it
/// serves both); `log_likelihood` is the unpenalised weighted log-likelihood
/// of the data at those parameters. `converged` needs a small gradient and
/// finite standard errors.
pub(crate) fn fit_objective<O: Objective, P: Debug>(
    obj: &O,
    starts: &[Vec<f64>],
    unscale: impl Fn(&[f64]) -> P,
    log_likelihood: impl Fn(&P) -> f64,
) -> Result<Fit<P>, FitError> {
    let opt = minimize(obj, starts)?;
    let natural: Vec<f64> = opt.theta.iter().map(|t| t.exp()).collect();
    let se = std_errors(obj, &opt.theta);
    let params = unscale(&natural);
    let std_errors = unscale(&se);
    let ll = log_likelihood(&params);
    if !ll.is_finite() {
        return Err(FitError::NonFiniteLikelihood(format!("at the optimum {params:?}")));
    }
    let converged = opt.converged && se.iter().all(|v| v.is_finite());
    Ok(Fit {
        params,
        std_errors,
        log_likelihood: ll,
        iterations: opt.iterations,
        converged,
    })
}

/// Threads an objective's loops may use: the available parallelism, at
/// most 8.
pub(crate) fn fit_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

/// `(0..n).map(f).collect()`, computed on up to `threads` threads (scoped),
/// which take blocks of `block` consecutive indices in turn. Every element
/// is computed by `f` alone, so the result does not depend on `threads`.
pub(crate) fn par_map<T: Send>(n: usize, threads: usize, block: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let block = block.max(1);
    let threads = threads.min(n.div_ceil(block));
    if threads <= 1 {
        return (0..n).map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut mine = Vec::new();
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            let start = b * block;
            if start >= n {
                return mine;
            }
            mine.push((b, (start..n.min(start + block)).map(&f).collect::<Vec<T>>()));
        }
    };
    let mut blocks: Vec<(usize, Vec<T>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    blocks.sort_unstable_by_key(|b| b.0);
    blocks.into_iter().flat_map(|b| b.1).collect()
}

/// Rows per chunk of [`chunked_sum`].
pub(crate) const CHUNK: usize = 4096;

/// The sum over rows 0..n of per-row vectors of K values: `chunk(range)`
/// sums the rows of `range` in order; the ranges are fixed chunks of
/// [`CHUNK`] rows, computed on up to `threads` threads, and their sums are
/// added in chunk order, so the result is the same to the bit whatever the
/// number of threads.
pub(crate) fn chunked_sum<const K: usize>(
    n: usize,
    threads: usize,
    chunk: impl Fn(Range<usize>) -> [f64; K] + Sync,
) -> [f64; K] {
    let parts = par_map(n.div_ceil(CHUNK), threads, 1, |c| {
        chunk(c * CHUNK..n.min((c + 1) * CHUNK))
    });
    let mut total = [0.0; K];
    for part in parts {
        for (t, v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    total
}

/// A purchase model's weighted log-likelihood over rows in the objective's
/// units (time scaled so the largest T is 1), at natural-scale parameters.
#[cfg(test)]
pub(crate) trait RowLikelihood: Sync {
    /// The number of parameters.
    const DIM: usize;
    /// Σ w · ln L(params | x, t_x, T) over `rows`, summed in row order.
    fn log_likelihood(&self, params: &[f64], rows: &[Rfm]) -> f64;
}

/// -LL/W + penalizer · Σ params² over log-parameters, with the gradient by
/// central differences (step 1e-5 in θ: truncation and rounding errors both
/// ~1e-10 for a mean objective of order 1, far below the 1e-6 gradient
/// tolerance of the optimizer); the reference the analytic gradients are
/// tested against.
#[cfg(test)]
pub(crate) struct NumericObjective<M> {
    pub(crate) model: M,
    /// Checked, sorted rows with time scaled so the largest T is 1.
    pub(crate) rows: Vec<Rfm>,
    pub(crate) wsum: f64,
    pub(crate) penalizer: f64,
}

#[cfg(test)]
impl<M: RowLikelihood> NumericObjective<M> {
    /// The objective for checked, sorted rows (see
    /// [`checked_rfm`](super::data::checked_rfm)); time is scaled so the
    /// largest T is 1, and t_x is set to 0 for rows without repeat purchases.
    pub(crate) fn new(model: M, kept: Vec<Rfm>, penalizer: f64) -> Self {
        let max_t = kept.iter().map(|d| d.t).fold(0.0, f64::max);
        let scale = 1.0 / max_t;
        let rows: Vec<Rfm> = kept
            .iter()
            .map(|d| Rfm {
                frequency: d.frequency,
                recency: if d.frequency > 0.0 { d.recency * scale } else { 0.0 },
                t: d.t * scale,
                weight: d.weight,
            })
            .collect();
        let wsum = rows.iter().map(|d| d.weight).sum();
        NumericObjective {
            model,
            rows,
            wsum,
            penalizer,
        }
    }

    /// The objective at log-parameters `theta`.
    pub(crate) fn value(&self, theta: &[f64]) -> f64 {
        let params: Vec<f64> = theta.iter().map(|t| t.exp()).collect();
        let pen: f64 = params.iter().map(|p| p * p).sum::<f64>() * self.penalizer;
        -self.model.log_likelihood(&params, &self.rows) / self.wsum + pen
    }
}

#[cfg(test)]
impl<M: RowLikelihood> Objective for NumericObjective<M> {
    fn dim(&self) -> usize {
        M::DIM
    }
    fn total_weight(&self) -> f64 {
        self.wsum
    }
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let f = self.value(theta);
        let mut probe = theta.to_vec();
        for i in 0..theta.len() {
            let h = 1e-5 * (1.0 + theta[i].abs());
            probe[i] = theta[i] + h;
            let fp = self.value(&probe);
            probe[i] = theta[i] - h;
            let fm = self.value(&probe);
            probe[i] = theta[i];
            grad[i] = (fp - fm) / (2.0 * h);
        }
        f
    }
}
