//! Input rows and fit results shared by the BTYD models, and the input
//! checks their fits have in common.
//!
//! [`Rfm`] is the frequency/recency/age history every purchase model (BG/NBD
//! today) is fitted on; [`Spend`] is the repeat-spend summary of the
//! Gamma-Gamma model. Every fit returns a [`Fit`] or a [`FitError`]. The
//! crate-private helpers validate a penalizer, name a bad input row and
//! index distinct values, so that a model's objective computes per-value
//! terms once.

/// One customer (or `weight` customers sharing the same history) in
/// frequency/recency/age form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rfm {
    /// x: number of repeat purchases (0, or a count >= 1).
    pub frequency: f64,
    /// t_x: time of the last repeat purchase, measured from the first
    /// purchase (0 when `frequency` is 0).
    pub recency: f64,
    /// T: time from the first purchase to the end of the observation period.
    pub t: f64,
    /// Number of customers sharing this (x, t_x, T) triple.
    pub weight: f64,
}

/// A customer's repeat-purchase count and mean repeat-transaction value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    /// x: number of repeat purchases (rows with 0 are ignored by the fit).
    pub frequency: f64,
    /// Mean value of the repeat transactions (must be > 0).
    pub monetary_value: f64,
    /// Number of customers sharing this (x, m) pair.
    pub weight: f64,
}

/// The result of a maximum-likelihood fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit<P> {
    /// Maximum (penalised) likelihood estimates.
    pub params: P,
    /// Delta-method standard errors of each parameter (NaN when the Hessian
    /// at the optimum is not positive definite).
    pub std_errors: P,
    /// Unpenalised weighted log-likelihood at `params`, in the data's units.
    pub log_likelihood: f64,
    /// BFGS iterations, summed over the (deterministic) restarts.
    pub iterations: u64,
    /// Whether the optimiser stopped at a proper optimum: the gradient norm
    /// of the objective (mean over customers, log-parameters) is <= 1e-6 and
    /// the Hessian there is positive definite. A fit can be "converged" with
    /// a parameter running off to a huge value (the likelihood flattens, e.g.
    /// no evidence of heterogeneity in dropout): a penalizer helps then.
    pub converged: bool,
}

/// Why a model could not be fitted.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum FitError {
    /// No row with a positive weight.
    #[error("no customers to fit: the input has no rows with a positive weight")]
    Empty,
    /// A row has a value outside the model's domain.
    #[error("invalid input row {row}: {reason}")]
    InvalidRow {
        /// Index of the offending row in the input slice.
        row: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The penalizer is negative or not finite.
    #[error("the penalizer must be a finite number >= 0, got {0}")]
    InvalidPenalizer(f64),
    /// No customer has a repeat purchase.
    #[error(
        "no repeat buyers (every customer has frequency 0): the model cannot be estimated; \
         use a longer history or more customers"
    )]
    NoRepeatBuyers,
    /// The likelihood is not finite at any starting point.
    #[error("the log-likelihood is not finite at the starting values ({0}); check the input for extreme values")]
    NonFiniteLikelihood(String),
    /// The optimiser produced no finite optimum.
    #[error("the optimizer did not reach a finite optimum: {0}")]
    NoConvergence(String),
}

/// `Ok` for a finite penalizer >= 0, else [`FitError::InvalidPenalizer`].
pub(crate) fn check_penalizer(penalizer: f64) -> Result<(), FitError> {
    if penalizer.is_finite() && penalizer >= 0.0 {
        Ok(())
    } else {
        Err(FitError::InvalidPenalizer(penalizer))
    }
}

/// [`FitError::InvalidRow`] for input row `row`.
pub(crate) fn bad_row(row: usize, reason: String) -> FitError {
    FitError::InvalidRow { row, reason }
}

/// Sorted distinct values (by `f64::total_cmp`, so two values are the same
/// when their bits are) and, for each input, its index among them. A hash
/// of the bits finds the distinct values, and only they are sorted: the
/// inputs are many (two per customer triple), their distinct values few.
pub(crate) fn distinct_index(values: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let mut seen: datafusion::common::HashMap<u64, u32> = datafusion::common::HashMap::new();
    let mut first: Vec<f64> = Vec::new();
    let provisional: Vec<u32> = values
        .iter()
        .map(|v| {
            *seen.entry(v.to_bits()).or_insert_with(|| {
                first.push(*v);
                (first.len() - 1) as u32
            })
        })
        .collect();
    let mut order: Vec<u32> = (0..first.len() as u32).collect();
    order.sort_unstable_by(|&i, &j| first[i as usize].total_cmp(&first[j as usize]));
    let mut rank = vec![0u32; first.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    let sorted = order.iter().map(|&i| first[i as usize]).collect();
    (sorted, provisional.into_iter().map(|i| rank[i as usize]).collect())
}

/// Checked, sorted rows grouped for the Pareto/NBD and MBG/NBD objectives:
/// times scaled so the largest T is 1, the distinct scaled times with the
/// index of each row's T (`tidx[i]`) and t_x (`tidx[n + i]`, 0 for rows
/// without repeat purchases), the distinct frequencies with each row's index
/// and their total weights, and the mean purchase rate Σ w·x / Σ w·T in
/// scaled time (for starting points).
pub(crate) struct Grouping {
    pub(crate) scale: f64,
    pub(crate) times: Vec<f64>,
    pub(crate) tidx: Vec<u32>,
    pub(crate) xs: Vec<f64>,
    pub(crate) xidx: Vec<u32>,
    pub(crate) group_w: Vec<f64>,
    pub(crate) rate: f64,
}

impl Grouping {
    pub(crate) fn new(kept: &[Rfm]) -> Grouping {
        let max_t = kept.iter().map(|d| d.t).fold(0.0, f64::max);
        let scale = 1.0 / max_t;
        let mut all_times: Vec<f64> = kept.iter().map(|d| d.t * scale).collect();
        all_times.extend(
            kept.iter()
                .map(|d| if d.frequency > 0.0 { d.recency * scale } else { 0.0 }),
        );
        let (times, tidx) = distinct_index(&all_times);
        let (xs, xidx) = distinct_index(&kept.iter().map(|d| d.frequency).collect::<Vec<_>>());
        let mut group_w = vec![0.0; xs.len()];
        for (d, &g) in kept.iter().zip(&xidx) {
            group_w[g as usize] += d.weight;
        }
        let (mut sx, mut st) = (0.0, 0.0);
        for (i, d) in kept.iter().enumerate() {
            sx += d.weight * xs[xidx[i] as usize];
            st += d.weight * times[tidx[i] as usize];
        }
        Grouping {
            scale,
            times,
            tidx,
            xs,
            xidx,
            group_w,
            rate: (sx / st).max(1e-6),
        }
    }
}

/// The rows of a purchase model's input with a positive weight, checked
/// (weight finite and >= 0, frequency 0 or a count >= 1, T finite and > 0,
/// recency within [0, T] for repeat buyers) and sorted by (x, t_x, T,
/// weight), so that a fit sums in the same order whatever order the rows
/// arrive in. Errors on the first invalid row, on no row with a positive
/// weight, and on no repeat buyer.
pub(crate) fn checked_rfm(data: &[Rfm]) -> Result<Vec<Rfm>, FitError> {
    let mut kept = Vec::new();
    for (i, d) in data.iter().enumerate() {
        if !(d.weight.is_finite() && d.weight >= 0.0) {
            return Err(bad_row(i, format!("weight must be finite and >= 0, got {}", d.weight)));
        }
        if !(d.frequency.is_finite() && (d.frequency == 0.0 || d.frequency >= 1.0)) {
            return Err(bad_row(
                i,
                format!("frequency must be 0 or a count >= 1, got {}", d.frequency),
            ));
        }
        if !(d.t.is_finite() && d.t > 0.0) {
            return Err(bad_row(i, format!("T must be finite and > 0, got {}", d.t)));
        }
        if d.frequency > 0.0 && !(d.recency.is_finite() && d.recency >= 0.0 && d.recency <= d.t) {
            return Err(bad_row(
                i,
                format!("recency must be within [0, T] = [0, {}], got {}", d.t, d.recency),
            ));
        }
        if d.weight > 0.0 {
            kept.push(*d);
        }
    }
    if kept.is_empty() {
        return Err(FitError::Empty);
    }
    if kept.iter().all(|d| d.frequency == 0.0) {
        return Err(FitError::NoRepeatBuyers);
    }
    kept.sort_by(|p, q| {
        p.frequency
            .total_cmp(&q.frequency)
            .then(p.recency.total_cmp(&q.recency))
            .then(p.t.total_cmp(&q.t))
            .then(p.weight.total_cmp(&q.weight))
    });
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::distinct_index;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// The distinct values come out ascending and each input's index points
    /// at its own value: checked against sorting every input and removing
    /// repeats, on values drawn with many repeats.
    #[test]
    fn distinct_index_matches_sorting_every_value() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let values: Vec<f64> = (0..20_000).map(|_| f64::from(rng.gen_range(0..700u32)) / 7.0).collect();
        let (distinct, idx) = distinct_index(&values);
        let mut reference = values.clone();
        reference.sort_by(f64::total_cmp);
        reference.dedup_by(|a, b| a.to_bits() == b.to_bits());
        assert_eq!(distinct.len(), reference.len());
        assert!(distinct.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()));
        for (v, &i) in values.iter().zip(&idx) {
            assert_eq!(distinct[i as usize].to_bits(), v.to_bits());
        }
        // A small case by hand.
        let (d, i) = distinct_index(&[2.5, 0.5, 2.5, 1.0, 0.5]);
        assert_eq!(d, vec![0.5, 1.0, 2.5]);
        assert_eq!(i, vec![2, 0, 2, 1, 0]);
    }
}
