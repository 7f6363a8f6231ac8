//! Fitting the MBG/NBD model by maximum likelihood: the likelihood of
//! [`super::mbgnbd`] (A1 + A2 + ln(e^A3 + e^A4)) with its analytic
//! gradient, as an `optim::Objective` over log-parameters, and
//! [`fit_mbgnbd`]. As for BG/NBD, the ln Γ / digamma terms are computed once
//! per distinct x and ln(α + t) once per distinct time; the rows are summed
//! in fixed chunks on a few threads (`chunked_sum`), so the objective is
//! the same to the bit whatever the number of threads.
//!
//! Gradient, with w4 = 1 / (1 + e^(A3 - A4)) the weight of the "dropped
//! out after t_x" term:
//! ∂/∂r = ψ(r+x) - ψ(r) + ln α - ln(α+T) - w4 (ln(α+t_x) - ln(α+T)),
//! ∂/∂α = r/α - (r+x) [1/(α+T) + w4 (1/(α+t_x) - 1/(α+T))],
//! ∂/∂a = ψ(a+b) - ψ(a+b+x+1) + w4/a,
//! ∂/∂b = ψ(a+b) + ψ(b+x+1) - ψ(b) - ψ(a+b+x+1) - w4/(b+x).

use super::bgnbd::BgNbdParams;
use super::data::{Fit, FitError, Grouping, Rfm, check_penalizer, checked_rfm};
use super::fit::{chunked_sum, fit_objective, fit_threads};
use super::mbgnbd::mbgnbd_log_likelihood;
use super::optim::Objective;
use super::special::{digamma, ln_gamma, softplus_sigmoid};

/// One (x, t_x, T) triple: its frequency group and the indices of T and t_x
/// among the distinct times.
#[derive(Clone, Copy)]
struct MRow {
    g: u32,
    i_t: u32,
    i_tx: u32,
    w: f64,
}

/// The data prepared for the objective (times scaled so the largest T is 1).
pub(crate) struct MbgObjective {
    /// distinct frequencies, ascending, and the total weight of each
    xs: Vec<f64>,
    group_w: Vec<f64>,
    /// distinct scaled times
    times: Vec<f64>,
    rows: Vec<MRow>,
    wsum: f64,
    penalizer: f64,
    /// What times were multiplied by (1 / the largest T).
    pub(crate) scale: f64,
    /// The mean purchase rate (see [`Grouping`]).
    rate: f64,
    /// Threads for the row loop (the value does not depend on it).
    pub(crate) threads: usize,
}

impl MbgObjective {
    /// The objective for checked, sorted rows (see
    /// [`checked_rfm`](super::data::checked_rfm)); t_x is taken as 0 for
    /// rows without repeat purchases.
    pub(crate) fn new(kept: &[Rfm], penalizer: f64) -> Self {
        let Grouping {
            scale,
            times,
            tidx,
            xs,
            xidx,
            group_w,
            rate,
        } = Grouping::new(kept);
        let n = kept.len();
        let rows = kept
            .iter()
            .enumerate()
            .map(|(i, d)| MRow {
                g: xidx[i],
                i_t: tidx[i],
                i_tx: tidx[n + i],
                w: d.weight,
            })
            .collect();
        let wsum = group_w.iter().sum();
        MbgObjective {
            xs,
            group_w,
            times,
            rows,
            wsum,
            penalizer,
            scale,
            rate,
            threads: fit_threads(),
        }
    }

    /// The mean purchase rate x / T over the rows (scaled time), for
    /// starting points.
    fn rate(&self) -> f64 {
        self.rate
    }
}

impl Objective for MbgObjective {
    fn dim(&self) -> usize {
        4
    }
    fn total_weight(&self) -> f64 {
        self.wsum
    }
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (r, alpha, a, b) = (theta[0].exp(), theta[1].exp(), theta[2].exp(), theta[3].exp());
        let ln_t: Vec<f64> = self.times.iter().map(|&t| (alpha + t).ln()).collect();
        let inv_t: Vec<f64> = self.times.iter().map(|&t| 1.0 / (alpha + t)).collect();
        // per x: r + x, ln a - ln(b + x), 1 / (b + x)
        let ln_a = a.ln();
        let per_x: Vec<(f64, f64, f64)> = self
            .xs
            .iter()
            .map(|&x| (r + x, ln_a - (b + x).ln(), 1.0 / (b + x)))
            .collect();
        let sums = chunked_sum(self.rows.len(), self.threads, |range| {
            let mut acc = [0.0; 5];
            for row in &self.rows[range] {
                let (k, k4, ib) = per_x[row.g as usize];
                let (it, itx) = (row.i_t as usize, row.i_tx as usize);
                let (lt, lr) = (ln_t[it], ln_t[itx]);
                let a3 = -k * lt;
                let (sp, w4) = softplus_sigmoid(k4 - k * lr - a3);
                let w = row.w;
                acc[0] += w * (a3 + sp);
                acc[1] -= w * (lt + w4 * (lr - lt));
                acc[2] -= w * k * (inv_t[it] + w4 * (inv_t[itx] - inv_t[it]));
                acc[3] += w * w4 / a;
                acc[4] -= w * w4 * ib;
            }
            acc
        });
        // A1 + A2, once per x
        let ln_alpha = alpha.ln();
        let (lg_r, lg_ab, lg_b) = (ln_gamma(r), ln_gamma(a + b), ln_gamma(b));
        let (dg_r, dg_ab, dg_b) = (digamma(r), digamma(a + b), digamma(b));
        let mut ll = sums;
        for (&x, &gw) in self.xs.iter().zip(&self.group_w) {
            let dg_abx = digamma(a + b + x + 1.0);
            ll[0] += gw
                * (ln_gamma(r + x) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x + 1.0)
                    - lg_b
                    - ln_gamma(a + b + x + 1.0));
            ll[1] += gw * (digamma(r + x) - dg_r + ln_alpha);
            ll[2] += gw * r / alpha;
            ll[3] += gw * (dg_ab - dg_abx);
            ll[4] += gw * (dg_ab + digamma(b + x + 1.0) - dg_b - dg_abx);
        }
        let (pen, wn) = (self.penalizer, self.wsum);
        let params = [r, alpha, a, b];
        let mut f = -ll[0] / wn;
        for i in 0..4 {
            f += pen * params[i] * params[i];
            grad[i] = params[i] * (-ll[i + 1] / wn + 2.0 * pen * params[i]);
        }
        f
    }
}

/// Fits MBG/NBD by maximum likelihood (weighted): time scaled so the largest
/// T is 1, objective -LL/Σweight + penalizer · (r² + α_s² + a² + b²) as for
/// [`fit_bgnbd`](super::bgnbd_fit::fit_bgnbd), a similar grid of starting
/// points, BFGS over log-parameters with the analytic gradient. Same input
/// checks and errors as BG/NBD.
pub fn fit_mbgnbd(data: &[Rfm], penalizer: f64) -> Result<Fit<BgNbdParams>, FitError> {
    check_penalizer(penalizer)?;
    let kept = checked_rfm(data)?;
    let obj = MbgObjective::new(&kept, penalizer);
    fit_prepared(&obj, &kept)
}

/// [`fit_mbgnbd`] on a prepared objective (tests vary its threads).
pub(crate) fn fit_prepared(obj: &MbgObjective, kept: &[Rfm]) -> Result<Fit<BgNbdParams>, FitError> {
    let rate = obj.rate();
    let mut starts = Vec::new();
    for r in [0.2, 1.0] {
        for (a, b) in [(0.5, 2.0), (2.0, 8.0), (2.0, 40.0)] {
            starts.push(vec![f64::ln(r), f64::ln(r / rate), f64::ln(a), f64::ln(b)]);
        }
    }
    starts.push(vec![0.1; 4]);
    let scale = obj.scale;
    fit_objective(
        obj,
        &starts,
        |v| BgNbdParams {
            r: v[0],
            alpha: v[1] / scale,
            a: v[2],
            b: v[3],
        },
        |p| mbgnbd_log_likelihood(p, kept),
    )
}
