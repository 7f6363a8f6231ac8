//! Fitting the Pareto/NBD model by maximum likelihood: the likelihood of
//! [`super::pareto_nbd`] with its analytic gradient, as an
//! `optim::Objective` over log-parameters, and [`fit_pareto_nbd`].
//!
//! The expensive part of a customer's likelihood is ln G(t) (see the model's
//! documentation) at t = t_x and t = T, which depends on (x, t) only: 738,214
//! distinct (x, t_x, T) triples of a million generated customers have 62,600
//! distinct (x, t). So the objective evaluates ln G and its gradient once per
//! distinct (x, t) pair (`ln_g_grad`), then combines them per row
//! (`row_ll_grad`); ln Γ / digamma terms are computed once per distinct x.
//!
//! Gradient of ln 2F1(1, b; c; z) = ln Σ T_n, T_n = (b)_n / (c)_n z^n
//! (`ln_f1_grad`): ∂T_n/∂b = T_n Σ_{k<n} 1/(b+k), ∂T_n/∂c = -T_n Σ_{k<n}
//! 1/(c+k) and ∂T_n/∂z = n T_n / z, accumulated in the same loop as the
//! value (all positive terms). The chain rule through b = r+x or s+1,
//! c = r+s+x+1 and z = |α-β| / (max(α, β) + t) gives ∂ ln G / ∂(r, α, s, β).
//! When the series would need more than 20000 terms (z within ~2e-3 of 1),
//! the value comes from [`ln_hyp2f1`] as in the model, the derivative in z
//! from dF/dz = (b/c) 2F1(2, b+1; c+1; z) and those in b and c from central
//! differences.
//!
//! Both loops, over (x, t) pairs and over rows, run on up to
//! `fit_threads` threads; the row sums are summed per fixed chunk of rows
//! and the chunk sums in chunk order (`chunked_sum`), so the objective is
//! the same to the bit whatever the number of threads.

use super::data::{Fit, FitError, Grouping, Rfm, check_penalizer, checked_rfm};
use super::fit::{chunked_sum, fit_objective, fit_threads, par_map};
use super::optim::Objective;
use super::pareto_nbd::{ParetoNbdParams, pareto_nbd_log_likelihood};
use super::special::{digamma, ln_gamma, ln_hyp2f1, softplus_sigmoid};

/// Terms of the series of [`ln_f1_grad`] before [`ln_hyp2f1`] takes over
/// (as in the model's `ln_f1`).
const MAX_TERMS: usize = 20_000;
/// Relative size of the remaining terms at which the series stops: the value
/// as in the model, the derivatives a little looser (they only steer the
/// optimizer).
const TOL_VALUE: f64 = 1e-17;
const TOL_GRAD: f64 = 1e-16;

/// [ln F, ∂ ln F/∂b, ∂ ln F/∂c, ∂ ln F/∂z] for F = 2F1(1, b; c; z),
/// 0 <= z < 1, c > b > 0.
pub(crate) fn ln_f1_grad(b: f64, c: f64, z: f64) -> [f64; 4] {
    // T_n, Σ T_n, ψb = Σ_{k<n} 1/(b+k), ψc, Σ T_n ψb, Σ T_n ψc, Σ n T_n / z
    let (mut t, mut f) = (1.0f64, 1.0f64);
    let (mut pb, mut pc) = (0.0f64, 0.0f64);
    let (mut sb, mut sc, mut sz) = (0.0f64, 0.0f64, 0.0f64);
    let g = z / (1.0 - z);
    let g2 = g / (1.0 - z);
    for n in 0..MAX_TERMS {
        let nf = n as f64;
        let q = (b + nf) / (c + nf);
        // (n+1) T_{n+1} / z, without dividing by z (z may be 0)
        sz += (nf + 1.0) * t * q;
        t *= q * z;
        pb += 1.0 / (b + nf);
        pc += 1.0 / (c + nf);
        f += t;
        sb += t * pb;
        sc += t * pc;
        // Later terms shrink by at least a factor z each (b < c) and ψb
        // (ψc) grows by at most 1/b (1/c) per term, so what the sums still
        // lack after T_m (m = n+1) is at most t g, t (ψb g + g2/b),
        // t (ψc g + g2/c) and t (m/(1-z) + 1/(1-z)²).
        let m = nf + 1.0;
        let tail_f = t * g;
        let tail_b = t * (pb * g + g2 / b);
        let tail_c = t * (pc * g + g2 / c);
        let tail_z = t * (m / (1.0 - z) + 1.0 / ((1.0 - z) * (1.0 - z)));
        if tail_f <= TOL_VALUE * f && tail_b <= TOL_GRAD * sb && tail_c <= TOL_GRAD * sc && tail_z <= TOL_GRAD * sz {
            return [f.ln(), sb / f, -sc / f, sz / f];
        }
    }
    ln_f1_fallback(b, c, z)
}

/// [`ln_f1_grad`] from [`ln_hyp2f1`]: the value; the derivative in z by
/// dF/dz = (b/c) 2F1(2, b+1; c+1; z); those in b and c by central
/// differences (relative steps 1e-6, ~1e-9 relative accuracy).
fn ln_f1_fallback(b: f64, c: f64, z: f64) -> [f64; 4] {
    let v = |b: f64, c: f64| ln_hyp2f1(1.0, b, c, z).0;
    let (hb, hc) = (1e-6 * b, 1e-6 * c);
    let f = v(b, c);
    [
        f,
        (v(b + hb, c) - v(b - hb, c)) / (2.0 * hb),
        (v(b, c + hc) - v(b, c - hc)) / (2.0 * hc),
        b / c * (ln_hyp2f1(2.0, b + 1.0, c + 1.0, z).0 - f).exp(),
    ]
}

/// The terms of a customer's likelihood that depend on one time t only:
/// ln(α+t), ln(β+t), 1/(α+t), 1/(β+t).
#[derive(Clone, Copy)]
pub(crate) struct TimeTerms {
    la: f64,
    lb: f64,
    ia: f64,
    ib: f64,
}

impl TimeTerms {
    pub(crate) fn new(p: &ParetoNbdParams, t: f64) -> Self {
        TimeTerms {
            la: (p.alpha + t).ln(),
            lb: (p.beta + t).ln(),
            ia: 1.0 / (p.alpha + t),
            ib: 1.0 / (p.beta + t),
        }
    }
}

/// The terms of a customer's likelihood that depend on x only, but for
/// ln Γ: r+x, ln s - ln(r+s+x), 1/(r+s+x).
#[derive(Clone, Copy)]
pub(crate) struct XTerms {
    rx: f64,
    ln_s_m: f64,
    inv_m: f64,
}

impl XTerms {
    pub(crate) fn new(p: &ParetoNbdParams, x: f64) -> Self {
        let m = p.r + p.s + x;
        XTerms {
            rx: p.r + x,
            ln_s_m: p.s.ln() - m.ln(),
            inv_m: 1.0 / m,
        }
    }
}

/// ln G(t) and its gradient in (r, α, s, β) (see the model's `ln_g`), for
/// one customer's x.
pub(crate) fn ln_g_grad(p: &ParetoNbdParams, x: f64, t: f64, tt: &TimeTerms) -> [f64; 5] {
    let ParetoNbdParams { r, alpha, s, beta } = *p;
    let TimeTerms { la, lb, ia, ib } = *tt;
    let c = r + s + x + 1.0;
    // ln K and its gradient
    let (k, kr, ka, ks, kb) = if alpha >= beta {
        // K = 2F1(1, r+x; c; z), z = (α-β)/(α+t), ∂z/∂α = (β+t)/(α+t)², ∂z/∂β = -1/(α+t)
        let [v, fb, fc, fz] = ln_f1_grad(r + x, c, (alpha - beta) / (alpha + t));
        (v, fb + fc, fz * (beta + t) * ia * ia, fc, -fz * ia)
    } else {
        // K = (α+t)/(β+t) 2F1(1, s+1; c; z), z = (β-α)/(β+t), ∂z/∂α = -1/(β+t), ∂z/∂β = (α+t)/(β+t)²
        let [v, fb, fc, fz] = ln_f1_grad(s + 1.0, c, (beta - alpha) / (beta + t));
        (la - lb + v, fc, ia - fz * ib, fb + fc, -ib + fz * (alpha + t) * ib * ib)
    };
    [
        -(r + x) * la - s * lb + k,
        -la + kr,
        -(r + x) * ia + ka,
        -lb + ks,
        -s * ib + kb,
    ]
}

/// ln L of one customer without the terms that depend on x only through ln Γ
/// and the parameters (ln Γ(r+x) - ln Γ(r) + r ln α + s ln β), and its
/// gradient in (r, α, s, β), from the terms of T and ln G(t_x), ln G(T)
/// with their gradients (`g_tx` = None when t_x = T: no "died in (t_x, T)"
/// term).
pub(crate) fn row_ll_grad(s: f64, xt: &XTerms, tt: &TimeTerms, g_tx: Option<&[f64; 5]>, g_t: &[f64; 5]) -> [f64; 5] {
    let rx = xt.rx;
    let alive = -rx * tt.la - s * tt.lb;
    let d_alive = [-tt.la, -rx * tt.ia, -tt.lb, -s * tt.ib];
    let d = g_tx.map_or(0.0, |g| g_t[0] - g[0]);
    let Some(g_tx) = g_tx.filter(|_| d < 0.0) else {
        return [alive, d_alive[0], d_alive[1], d_alive[2], d_alive[3]];
    };
    // dead = ln s - ln(r+s+x) + ln(G(t_x) - G(T)), and
    // ∇ ln(G(t_x) - G(T)) = ∇ ln G(t_x) + q/(1-q) (∇ ln G(t_x) - ∇ ln G(T)), q = e^d
    let em1 = d.exp_m1();
    let ratio = (1.0 + em1) / -em1;
    let dead = xt.ln_s_m + g_tx[0] + (-em1).ln();
    let mut d_dead = [0.0; 4];
    for i in 0..4 {
        d_dead[i] = g_tx[i + 1] + ratio * (g_tx[i + 1] - g_t[i + 1]);
    }
    d_dead[0] -= xt.inv_m;
    d_dead[2] += 1.0 / s - xt.inv_m;
    // ln(e^alive + e^dead) = alive + softplus(dead - alive)
    let (sp, w_dead) = softplus_sigmoid(dead - alive);
    let mut out = [alive + sp, 0.0, 0.0, 0.0, 0.0];
    for i in 0..4 {
        out[i + 1] = d_alive[i] + w_dead * (d_dead[i] - d_alive[i]);
    }
    out
}

/// ln Γ(r+x) - ln Γ(r) + r ln α + s ln β, the part of a customer's ln L
/// that depends on x only, and its gradient in (r, α, s, β).
pub(crate) fn x_ll_grad(p: &ParetoNbdParams, x: f64) -> [f64; 5] {
    let ParetoNbdParams { r, alpha, s, beta } = *p;
    let (ln_a, ln_b) = (alpha.ln(), beta.ln());
    [
        ln_gamma(r + x) - ln_gamma(r) + r * ln_a + s * ln_b,
        digamma(r + x) - digamma(r) + ln_a,
        r / alpha,
        ln_b,
        s / beta,
    ]
}

/// One (x, t_x, T) triple: its frequency group, the indices of (x, t_x) and
/// (x, T) among the distinct pairs and of T among the distinct times.
#[derive(Clone, Copy)]
struct PRow {
    g: u32,
    i_tx: u32,
    i_t: u32,
    time_t: u32,
    w: f64,
}

/// The data prepared for the objective (times scaled so the largest T is 1).
pub(crate) struct ParetoObjective {
    /// distinct frequencies, ascending, and the total weight of each
    xs: Vec<f64>,
    group_w: Vec<f64>,
    /// distinct scaled times
    times: Vec<f64>,
    /// distinct (x, time index) pairs, sorted
    pairs: Vec<(f64, u32)>,
    rows: Vec<PRow>,
    wsum: f64,
    penalizer: f64,
    /// What times were multiplied by (1 / the largest T).
    pub(crate) scale: f64,
    /// The mean purchase rate (see [`Grouping`]).
    rate: f64,
    /// Threads for the loops (the value does not depend on it).
    pub(crate) threads: usize,
}

impl ParetoObjective {
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
        // (x group, time) keys of the 2n (x, t) uses, and their distinct values
        let key = |i: usize, time: u32| (u64::from(xidx[i]) << 32) | u64::from(time);
        let mut keys: Vec<u64> = (0..n).flat_map(|i| [key(i, tidx[i]), key(i, tidx[n + i])]).collect();
        keys.sort_unstable();
        keys.dedup();
        let pair_of = |i: usize, time: u32| keys.binary_search(&key(i, time)).unwrap_or(0) as u32;
        let rows = kept
            .iter()
            .enumerate()
            .map(|(i, d)| PRow {
                g: xidx[i],
                i_tx: pair_of(i, tidx[n + i]),
                i_t: pair_of(i, tidx[i]),
                time_t: tidx[i],
                w: d.weight,
            })
            .collect();
        let pairs = keys
            .iter()
            .map(|k| (xs[(k >> 32) as usize], (k & 0xffff_ffff) as u32))
            .collect();
        let wsum = group_w.iter().sum();
        ParetoObjective {
            xs,
            group_w,
            times,
            pairs,
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

impl Objective for ParetoObjective {
    fn dim(&self) -> usize {
        4
    }
    fn total_weight(&self) -> f64 {
        self.wsum
    }
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let p = ParetoNbdParams {
            r: theta[0].exp(),
            alpha: theta[1].exp(),
            s: theta[2].exp(),
            beta: theta[3].exp(),
        };
        let ParetoNbdParams { r, alpha, s, beta } = p;
        let tts: Vec<TimeTerms> = self.times.iter().map(|&t| TimeTerms::new(&p, t)).collect();
        let xts: Vec<XTerms> = self.xs.iter().map(|&x| XTerms::new(&p, x)).collect();
        let gs = par_map(self.pairs.len(), self.threads, 256, |i| {
            let (x, ti) = self.pairs[i];
            ln_g_grad(&p, x, self.times[ti as usize], &tts[ti as usize])
        });
        let sums = chunked_sum(self.rows.len(), self.threads, |range| {
            let mut acc = [0.0; 5];
            for row in &self.rows[range] {
                let g_t = &gs[row.i_t as usize];
                let g_tx = (row.i_tx != row.i_t).then(|| &gs[row.i_tx as usize]);
                let v = row_ll_grad(s, &xts[row.g as usize], &tts[row.time_t as usize], g_tx, g_t);
                for k in 0..5 {
                    acc[k] += row.w * v[k];
                }
            }
            acc
        });
        // ln Γ(r+x) - ln Γ(r) + r ln α + s ln β, once per x
        let mut ll = sums;
        for (&x, &gw) in self.xs.iter().zip(&self.group_w) {
            let c = x_ll_grad(&p, x);
            for k in 0..5 {
                ll[k] += gw * c[k];
            }
        }
        let (pen, wn) = (self.penalizer, self.wsum);
        let params = [r, alpha, s, beta];
        let mut f = -ll[0] / wn;
        for i in 0..4 {
            f += pen * params[i] * params[i];
            grad[i] = params[i] * (-ll[i + 1] / wn + 2.0 * pen * params[i]);
        }
        f
    }
}

/// Fits Pareto/NBD by maximum likelihood (weighted): time scaled so the
/// largest T is 1, objective -LL/Σweight + penalizer · (r² + α_s² + s² +
/// β_s²) (α_s, β_s in scaled time), BFGS over log-parameters with the
/// analytic gradient, from the best of a small grid (r/α matching the mean
/// purchase rate, s/β a mean lifetime of 1/2 to 2 observation periods) and
/// `lifetimes`' start (all ones). Same input checks and errors as BG/NBD.
pub fn fit_pareto_nbd(data: &[Rfm], penalizer: f64) -> Result<Fit<ParetoNbdParams>, FitError> {
    check_penalizer(penalizer)?;
    let kept = checked_rfm(data)?;
    let obj = ParetoObjective::new(&kept, penalizer);
    fit_prepared(&obj, &kept)
}

/// [`fit_pareto_nbd`] on a prepared objective (tests vary its threads).
pub(crate) fn fit_prepared(obj: &ParetoObjective, kept: &[Rfm]) -> Result<Fit<ParetoNbdParams>, FitError> {
    let rate = obj.rate();
    let mut starts = Vec::new();
    for r in [0.2, 1.0] {
        for s in [0.3, 1.0] {
            for life in [0.5, 2.0] {
                starts.push(vec![f64::ln(r), f64::ln(r / rate), f64::ln(s), f64::ln(s * life)]);
            }
        }
    }
    starts.push(vec![0.0; 4]);
    let scale = obj.scale;
    fit_objective(
        obj,
        &starts,
        |v| ParetoNbdParams {
            r: v[0],
            alpha: v[1] / scale,
            s: v[2],
            beta: v[3] / scale,
        },
        |p| pareto_nbd_log_likelihood(p, kept),
    )
}
