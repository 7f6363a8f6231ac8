//! Fitting the BG/NBD model by maximum likelihood, as
//! `lifetimes.BetaGeoFitter` does: the data prepared for fast evaluation of
//! the likelihood and its analytic gradient (an `optim::Objective` over
//! log-parameters), the starting points, and [`fit_bgnbd`], which runs the
//! shared optimizer in `optim`.

use super::bgnbd::{BgNbdParams, bgnbd_log_likelihood};
use super::data::{Fit, FitError, Rfm, check_penalizer, checked_rfm, distinct_index};
use super::fit::{chunked_sum, fit_objective, fit_threads};
use super::optim::Objective;
use super::special::{digamma, ln_gamma};

/// One (x, t_x, T) triple: indices of T and t_x among the distinct times.
#[derive(Clone, Copy)]
struct BgRow {
    i_t: u32,
    i_tx: u32,
    w: f64,
}

/// The data prepared for fast likelihood evaluation: times scaled so the
/// largest T is 1 (as `lifetimes` does); rows grouped by frequency so the
/// ln Γ / digamma terms are computed once per distinct x, and ln(α + t) once
/// per distinct time; one exp and one ln1p per repeat-buyer row.
struct BgObjective {
    /// distinct frequencies, ascending
    xs: Vec<f64>,
    /// total weight per distinct frequency
    group_w: Vec<f64>,
    /// rows of frequency xs[g] are rows[group_start[g]..group_start[g + 1]]
    group_start: Vec<usize>,
    times: Vec<f64>,
    rows: Vec<BgRow>,
    wsum: f64,
    penalizer: f64,
    /// Threads the likelihood's row loop may use (the value does not depend
    /// on them).
    threads: usize,
}

impl Objective for BgObjective {
    fn dim(&self) -> usize {
        4
    }
    fn total_weight(&self) -> f64 {
        self.wsum
    }
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (r, alpha, a, b) = (theta[0].exp(), theta[1].exp(), theta[2].exp(), theta[3].exp());
        let ln_alpha = alpha.ln();
        let (lg_r, lg_ab, lg_b) = (ln_gamma(r), ln_gamma(a + b), ln_gamma(b));
        let (dg_r, dg_ab, dg_b) = (digamma(r), digamma(a + b), digamma(b));
        let ln_a = a.ln();
        let mut ln_t = Vec::with_capacity(self.times.len());
        let mut inv_t = Vec::with_capacity(self.times.len());
        for &v in &self.times {
            ln_t.push((alpha + v).ln());
            inv_t.push(1.0 / (alpha + v));
        }
        // Fixed chunks of rows on `threads` threads (`chunked_sum`): a group
        // of one frequency may span chunks; its terms in x alone go with the
        // chunk of its first row.
        let [ll, d_r, d_alpha, d_a, d_b] = chunked_sum(self.rows.len(), self.threads, |range| {
            let (mut ll, mut d_r, mut d_alpha, mut d_a, mut d_b) = (0.0, 0.0, 0.0, 0.0, 0.0);
            // The groups with rows in `range`.
            let first = self.group_start.partition_point(|&s| s <= range.start) - 1;
            let last = self.group_start.partition_point(|&s| s < range.end);
            for g in first..last {
                let x = self.xs[g];
                let (g_start, g_end) = (self.group_start[g], self.group_start[g + 1]);
                if range.contains(&g_start) {
                    // A1 + A2, the terms that depend on x only.
                    let gw = self.group_w[g];
                    let dg_abx = digamma(a + b + x);
                    ll += gw
                        * (ln_gamma(r + x) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x)
                            - lg_b
                            - ln_gamma(a + b + x));
                    d_r += gw * (digamma(r + x) - dg_r + ln_alpha);
                    d_alpha += gw * r / alpha;
                    d_a += gw * (dg_ab - dg_abx);
                    d_b += gw * (dg_ab + digamma(b + x) - dg_b - dg_abx);
                }
                let k = r + x;
                let rows = &self.rows[g_start.max(range.start)..g_end.min(range.end)];
                if x == 0.0 {
                    // A3 only
                    for row in rows {
                        let (lt, it, w) = (ln_t[row.i_t as usize], inv_t[row.i_t as usize], row.w);
                        ll -= w * k * lt;
                        d_r -= w * lt;
                        d_alpha -= w * k * it;
                    }
                    continue;
                }
                // ln(e^A3 + e^A4) = A3 + softplus(A4 - A3), with
                // A4 - A3 = ln a - ln(b + x - 1) - k (ln(α + t_x) - ln(α + T)).
                let kx = ln_a - (b + x - 1.0).ln();
                let (mut s_ll, mut s_r, mut s_alpha, mut s_w4) = (0.0, 0.0, 0.0, 0.0);
                for row in rows {
                    let (it_i, itx_i) = (row.i_t as usize, row.i_tx as usize);
                    let (lt, lr) = (ln_t[it_i], ln_t[itx_i]);
                    let d = kx - k * (lr - lt);
                    let e = (-d.abs()).exp();
                    let softplus = d.max(0.0) + e.ln_1p();
                    // weight of the "dropped out after t_x" term, 1 / (1 + e^-d)
                    let w4 = if d >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                    let w = row.w;
                    s_ll += w * (softplus - k * lt);
                    s_r += w * (lt + w4 * (lr - lt));
                    s_alpha += w * (inv_t[it_i] + w4 * (inv_t[itx_i] - inv_t[it_i]));
                    s_w4 += w * w4;
                }
                ll += s_ll;
                d_r -= s_r;
                d_alpha -= k * s_alpha;
                d_a += s_w4 / a;
                d_b -= s_w4 / (b + x - 1.0);
            }
            [ll, d_r, d_alpha, d_a, d_b]
        });
        let pen = self.penalizer;
        let wn = self.wsum;
        let params = [r, alpha, a, b];
        let dll = [d_r, d_alpha, d_a, d_b];
        let mut f = -ll / wn;
        for i in 0..4 {
            f += pen * params[i] * params[i];
            grad[i] = params[i] * (-dll[i] / wn + 2.0 * pen * params[i]);
        }
        f
    }
}

/// The objective, the time scale and the checked, sorted rows it was built
/// from (on which the fit's log-likelihood is summed, in their order).
fn prepare_bgnbd(data: &[Rfm], penalizer: f64) -> Result<(BgObjective, f64, Vec<Rfm>), FitError> {
    check_penalizer(penalizer)?;
    let kept = checked_rfm(data)?;
    // Grouped by frequency: `checked_rfm` sorts by (x, t_x, T).
    let max_t = kept.iter().map(|d| d.t).fold(0.0, f64::max);
    let scale = 1.0 / max_t;
    let mut all_times: Vec<f64> = kept.iter().map(|d| d.t * scale).collect();
    all_times.extend(kept.iter().map(|d| {
        if d.frequency > 0.0 {
            d.recency * scale
        } else {
            d.t * scale
        }
    }));
    let (times, tidx) = distinct_index(&all_times);
    let n = kept.len();
    let (mut xs, mut group_w, mut group_start) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows = Vec::with_capacity(n);
    for (i, d) in kept.iter().enumerate() {
        if xs.last() != Some(&d.frequency) {
            xs.push(d.frequency);
            group_w.push(0.0);
            group_start.push(i);
        }
        // A group was pushed above for the first row, so there is a last one.
        *group_w.last_mut().expect("a group was pushed") += d.weight;
        rows.push(BgRow {
            i_t: tidx[i],
            i_tx: tidx[n + i],
            w: d.weight,
        });
    }
    group_start.push(n);
    let wsum = group_w.iter().sum();
    Ok((
        BgObjective {
            xs,
            group_w,
            group_start,
            times,
            rows,
            wsum,
            penalizer,
            threads: fit_threads(),
        },
        scale,
        kept,
    ))
}

/// Fits the BG/NBD model by maximum likelihood (weighted), as
/// `lifetimes.BetaGeoFitter`: time is scaled internally so the largest T is
/// 1, and the objective minimised is -LL/Σweight + penalizer · (r² + α_s² +
/// a² + b²) with α_s the scaled α (so the penalty does not depend on the
/// time unit). Start: the best of a small deterministic grid whose r/α
/// matches the mean purchase rate, and `lifetimes`' start; then BFGS over
/// log-parameters (restarted up to twice, at most 400 evaluations). If it
/// does not converge, the best point found is returned with
/// `converged = false`. Errors on empty input, invalid rows (frequency not 0
/// or >= 1, T <= 0, recency outside [0, T], negative weight), a negative
/// penalizer, or no repeat buyer at all.
pub fn fit_bgnbd(data: &[Rfm], penalizer: f64) -> Result<Fit<BgNbdParams>, FitError> {
    let (obj, scale, kept) = prepare_bgnbd(data, penalizer)?;
    // Mean purchase rate (scaled time) fixes r/α for the start grid.
    let (mut sx, mut st) = (0.0, 0.0);
    for (g, &x) in obj.xs.iter().enumerate() {
        for row in &obj.rows[obj.group_start[g]..obj.group_start[g + 1]] {
            sx += row.w * x;
            st += row.w * obj.times[row.i_t as usize];
        }
    }
    let rate = (sx / st).max(1e-6);
    let mut starts = Vec::new();
    for r in [0.2, 1.0] {
        for (a, b) in [(0.5, 2.0), (2.0, 8.0)] {
            starts.push(vec![f64::ln(r), f64::ln(r / rate), f64::ln(a), f64::ln(b)]);
        }
    }
    starts.push(vec![0.1; 4]); // lifetimes' default start
    fit_objective(
        &obj,
        &starts,
        |v| BgNbdParams {
            r: v[0],
            alpha: v[1] / scale,
            a: v[2],
            b: v[3],
        },
        |p| bgnbd_log_likelihood(p, &kept),
    )
}

#[cfg(test)]
#[allow(clippy::excessive_precision)]
pub(crate) mod tests {
    use super::*;
    use crate::stages::btyd::test_support::{CDNOW, CUSTOMERS, assert_rel, check_gradient, rfm, simulate_bgnbd};

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let data = rfm(&CUSTOMERS);
        let (obj, scale, _) = prepare_bgnbd(&data, 0.05).unwrap();
        check_gradient(&obj, &[-1.2, (4.0f64 * scale).ln(), -0.3, 0.9]);
        check_gradient(&obj, &[0.5, 0.2, 1.0, -0.5]);
        // the objective is -LL/W + penalty, in scaled time
        let theta = [CDNOW.r.ln(), (CDNOW.alpha * scale).ln(), CDNOW.a.ln(), CDNOW.b.ln()];
        let mut g = [0.0; 4];
        let f = obj.eval(&theta, &mut g);
        let xlns: f64 = data.iter().map(|d| d.weight * d.frequency * scale.ln()).sum();
        let pen = 0.05 * (CDNOW.r.powi(2) + (CDNOW.alpha * scale).powi(2) + CDNOW.a.powi(2) + CDNOW.b.powi(2));
        let ll = bgnbd_log_likelihood(&CDNOW, &data);
        assert_rel(f, -(ll - xlns) / obj.wsum + pen, 1e-12, "objective vs public LL");
    }

    // The 600-customer data set used to check the fit against lifetimes, as
    // "x,t_x,T,weight;..." triples, and the optima below are printed by
    // tests/reference/btyd_lifetimes.py (`bgnbd_sample`, `bgnbd_fit`):
    //   np.random.seed(7); T = np.random.choice([20.0, 30.0, 40.0], size=600)
    //   df = lifetimes.generate_data.beta_geometric_nbd_model(T, 0.25, 4.0, 0.8, 2.5, size=600)
    //   df["recency"] = np.ceil(df["recency"]).clip(upper=df["T"]) * (df["frequency"] > 0)
    //   agg = df.groupby(["frequency", "recency", "T"]).size()
    // and the optima by minimising lifetimes' own objective to gtol=1e-12:
    //   minimize(value_and_grad(BetaGeoFitter._negative_log_likelihood), 0.1*np.ones(4), jac=True,
    //            method="BFGS", args=(f, rec/40, T/40, w, pen), options=dict(gtol=1e-12))
    // (BetaGeoFitter(penalizer_coef=pen).fit(f, rec, T, weights=w) gives the same to ~1e-6.)
    const LIFETIMES_SAMPLE: &str = "0,0,20,128;0,0,30,117;0,0,40,109;1,1,20,3;1,1,30,6;1,1,40,3;1,2,20,7;1,2,30,3;1,2,40,2;1,3,20,8;1,3,30,2;1,3,40,4;1,4,20,2;1,4,30,3;1,4,40,4;1,5,20,4;1,5,30,1;1,5,40,1;1,6,20,2;1,6,40,2;1,7,20,1;1,7,30,3;1,7,40,2;1,8,20,5;1,8,30,3;1,8,40,1;1,9,20,4;1,9,40,3;1,10,20,1;1,10,30,2;1,10,40,1;1,11,20,2;1,12,30,1;1,12,40,2;1,13,30,2;1,13,40,1;1,14,20,1;1,15,20,4;1,15,40,1;1,16,20,1;1,16,30,1;1,17,40,1;1,18,40,2;1,19,20,1;1,19,30,1;1,20,30,1;1,21,40,1;1,22,30,1;1,23,30,1;1,23,40,1;1,24,40,1;1,26,30,2;1,26,40,1;1,27,30,1;1,27,40,1;1,29,40,2;1,30,30,2;1,37,40,1;1,38,40,2;1,40,40,1;2,2,20,2;2,4,20,3;2,5,40,3;2,6,30,3;2,9,30,1;2,10,20,1;2,10,40,2;2,12,20,1;2,12,30,2;2,12,40,2;2,13,20,1;2,13,30,1;2,14,20,1;2,15,30,2;2,16,20,1;2,17,20,1;2,17,30,2;2,18,20,2;2,20,20,1;2,20,40,2;2,24,30,1;2,24,40,1;2,25,30,3;2,25,40,1;2,27,30,1;2,28,30,2;2,29,30,2;2,31,40,1;2,33,40,1;2,34,40,1;2,36,40,1;2,38,40,1;2,40,40,1;3,3,40,1;3,6,20,1;3,8,30,2;3,10,20,1;3,11,20,1;3,11,40,1;3,12,30,1;3,13,20,1;3,15,20,1;3,16,30,1;3,17,20,1;3,17,30,2;3,17,40,1;3,18,20,2;3,19,20,2;3,20,20,1;3,20,40,2;3,21,30,1;3,21,40,2;3,27,30,1;3,28,30,1;3,28,40,1;3,32,40,1;3,33,40,2;3,34,40,1;3,35,40,2;3,38,40,1;4,5,20,1;4,5,40,1;4,10,20,1;4,12,20,1;4,12,30,1;4,15,20,1;4,15,40,1;4,16,20,1;4,23,30,1;4,23,40,1;4,25,40,1;4,29,40,1;4,30,30,1;5,14,20,1;5,19,20,1;5,19,30,1;5,20,20,2;5,24,30,1;5,27,40,1;5,30,30,1;5,33,40,1;5,37,40,1;6,8,30,1;6,16,20,1;6,21,40,1;6,26,30,1;6,26,40,1;7,22,40,1;7,37,40,1;8,16,40,1;9,25,30,1;9,29,30,1;11,18,20,1;11,28,40,1;11,40,40,1;12,29,30,1";

    pub(crate) fn lifetimes_sample() -> Vec<Rfm> {
        LIFETIMES_SAMPLE
            .split(';')
            .map(|row| {
                let v: Vec<f64> = row.split(',').map(|s| s.parse().unwrap()).collect();
                Rfm {
                    frequency: v[0],
                    recency: v[1],
                    t: v[2],
                    weight: v[3],
                }
            })
            .collect()
    }

    #[test]
    fn bgnbd_fit_matches_lifetimes_optimum() {
        let data = lifetimes_sample();
        assert_eq!(data.iter().map(|d| d.weight).sum::<f64>(), 600.0);
        let fit = fit_bgnbd(&data, 0.0).unwrap();
        assert!(fit.converged);
        let p = fit.params;
        for (got, want, name) in [
            (p.r, 0.28621155885494254, "r"),
            (p.alpha, 5.2291871762489155, "alpha"),
            (p.a, 2.1647861350340465, "a"),
            (p.b, 5.869535691924065, "b"),
        ] {
            assert_rel(got, want, 1e-6, name);
        }
        // lifetimes' standard_errors_ (at its own, slightly less precise optimum)
        let se = fit.std_errors;
        for (got, want, name) in [
            (se.r, 0.031001774443485335, "se r"),
            (se.alpha, 0.9018109554240276, "se alpha"),
            (se.a, 1.7475203188488393, "se a"),
            (se.b, 5.4565131410742875, "se b"),
        ] {
            assert_rel(got, want, 1e-3, name);
        }
        assert_rel(fit.log_likelihood, bgnbd_log_likelihood(&p, &data), 0.0, "reported LL");
        // penalizer semantics: lifetimes' penalizer_coef on the params with alpha in scaled time
        let fit = fit_bgnbd(&data, 0.1).unwrap();
        assert!(fit.converged);
        let p = fit.params;
        for (got, want, name) in [
            (p.r, 0.26764095517200986, "r"),
            (p.alpha, 4.9276502085659155, "alpha"),
            (p.a, 0.15421105163304405, "a"),
            (p.b, 0.2675460518147252, "b"),
        ] {
            assert_rel(got, want, 1e-6, name);
        }
    }

    #[test]
    fn bgnbd_recovers_simulated_parameters() {
        let truth = BgNbdParams {
            r: 0.25,
            alpha: 4.0,
            a: 0.8,
            b: 2.5,
        };
        let data = simulate_bgnbd(40_000, &truth, 20240611, 365);
        let fit = fit_bgnbd(&data, 0.0).unwrap();
        let (p, se) = (fit.params, fit.std_errors);
        eprintln!(
            "BG/NBD recovery: {} triples, {} iterations, converged {}\n  fitted {p:?}\n  se     {se:?}\n  truth  {truth:?}",
            data.len(),
            fit.iterations,
            fit.converged
        );
        assert!(fit.converged);
        for (got, s, want, name) in [
            (p.r, se.r, truth.r, "r"),
            (p.alpha, se.alpha, truth.alpha, "alpha"),
            (p.a, se.a, truth.a, "a"),
            (p.b, se.b, truth.b, "b"),
        ] {
            assert!(s.is_finite() && s > 0.0, "{name}: se {s}");
            assert!(
                (got - want).abs() <= 4.0 * s,
                "{name}: fitted {got} ± {s}, truth {want}"
            );
            assert!(s < 0.5 * want, "{name}: se {s} implausibly large");
        }
    }

    #[test]
    fn fit_converges_on_many_distinct_triples() {
        // ~2 years of daily data: tens of thousands of distinct (x, t_x, T) triples.
        let truth = BgNbdParams {
            r: 0.6,
            alpha: 3.0,
            a: 0.6,
            b: 3.0,
        };
        let data = simulate_bgnbd(60_000, &truth, 99, 730);
        assert!(data.len() > 20_000, "{} triples", data.len());
        let fit = fit_bgnbd(&data, 0.0).unwrap();
        eprintln!(
            "BG/NBD fit on {} triples: {} iterations -> {:?}",
            data.len(),
            fit.iterations,
            fit.params
        );
        assert!(fit.converged);
    }

    #[test]
    fn fit_is_deterministic() {
        let truth = BgNbdParams {
            r: 0.25,
            alpha: 4.0,
            a: 0.8,
            b: 2.5,
        };
        let data = simulate_bgnbd(5_000, &truth, 5, 365);
        let f1 = fit_bgnbd(&data, 0.01).unwrap();
        let f2 = fit_bgnbd(&data, 0.01).unwrap();
        let bits = |f: &Fit<BgNbdParams>| {
            [
                f.params.r,
                f.params.alpha,
                f.params.a,
                f.params.b,
                f.std_errors.r,
                f.std_errors.b,
                f.log_likelihood,
            ]
            .map(f64::to_bits)
        };
        assert_eq!(bits(&f1), bits(&f2));
        assert_eq!(f1.iterations, f2.iterations);
    }

    #[test]
    fn fit_errors_are_reported() {
        assert_eq!(fit_bgnbd(&[], 0.0).unwrap_err(), FitError::Empty);
        let zero_w = rfm(&[(1.0, 2.0, 3.0, 0.0)]);
        assert_eq!(fit_bgnbd(&zero_w, 0.0).unwrap_err(), FitError::Empty);
        let no_repeat = rfm(&[(0.0, 0.0, 3.0, 5.0), (0.0, 0.0, 10.0, 2.0)]);
        assert_eq!(fit_bgnbd(&no_repeat, 0.0).unwrap_err(), FitError::NoRepeatBuyers);
        let bad = rfm(&[(1.0, 5.0, 3.0, 1.0)]);
        assert!(matches!(
            fit_bgnbd(&bad, 0.0).unwrap_err(),
            FitError::InvalidRow { row: 0, .. }
        ));
        let bad = rfm(&[(0.0, 0.0, 3.0, 1.0), (0.5, 0.2, 3.0, 1.0)]);
        let e = fit_bgnbd(&bad, 0.0).unwrap_err();
        assert!(matches!(e, FitError::InvalidRow { row: 1, .. }), "{e}");
        assert!(e.to_string().contains("frequency"), "{e}");
        assert_eq!(
            fit_bgnbd(&rfm(&CUSTOMERS), -1.0).unwrap_err(),
            FitError::InvalidPenalizer(-1.0)
        );
    }

    #[test]
    fn degenerate_inputs_terminate() {
        // No dropout signal in the data: the MLE has a, b -> infinity.
        let data: Vec<Rfm> = (0..3000u64)
            .map(|i| {
                let t = 20.0 + (i * 37 % 50) as f64;
                let x = (i * 13 % 11) as f64;
                let tx = if x > 0.0 {
                    t * ((i * 29 % 97) + 1) as f64 / 98.0
                } else {
                    0.0
                };
                Rfm {
                    frequency: x,
                    recency: tx,
                    t,
                    weight: 1.0 + (i % 3) as f64,
                }
            })
            .collect();
        // The evaluation budget bounds the work: the fit returns.
        let fit = fit_bgnbd(&data, 0.0).unwrap();
        assert!(fit.log_likelihood.is_finite());
        assert!(fit.params.a > 1e4 && fit.params.b > 1e4, "{:?}", fit.params);
        // a penalizer makes it well-posed
        let fit = fit_bgnbd(&data, 0.01).unwrap();
        assert!(
            fit.converged && fit.params.a < 10.0 && fit.params.b < 10.0,
            "{:?}",
            fit.params
        );
        // every customer the same: no finite MLE, SEs undefined
        let same = rfm(&[(2.0, 5.0, 10.0, 100.0), (0.0, 0.0, 10.0, 1.0)]);
        let fit = fit_bgnbd(&same, 0.0).unwrap();
        assert!(!fit.converged && fit.log_likelihood.is_finite(), "{fit:?}");
    }

    /// Enough distinct triples for several chunks of rows, with groups of
    /// one frequency across chunk boundaries: the objective and its
    /// gradient are the same to the bit on 1 to 5 threads, and equal the
    /// public log-likelihood.
    #[test]
    fn objective_does_not_depend_on_the_thread_count() {
        let truth = BgNbdParams {
            r: 0.8,
            alpha: 6.0,
            a: 0.9,
            b: 3.0,
        };
        let data = simulate_bgnbd(60_000, &truth, 11, 1095);
        let (mut obj, scale, _) = prepare_bgnbd(&data, 0.0).unwrap();
        assert!(obj.rows.len() > 3 * super::super::fit::CHUNK, "{} rows", obj.rows.len());
        let theta = [truth.r.ln(), (truth.alpha * scale).ln(), truth.a.ln(), truth.b.ln()];
        let mut want = None;
        for threads in 1..=5 {
            obj.threads = threads;
            let mut g = [0.0; 4];
            let f = obj.eval(&theta, &mut g);
            let got = (f.to_bits(), g.map(f64::to_bits));
            assert_eq!(*want.get_or_insert(got), got, "{threads} threads");
        }
        let mut g = [0.0; 4];
        let f = obj.eval(&theta, &mut g);
        let xlns: f64 = data.iter().map(|d| d.weight * d.frequency * scale.ln()).sum();
        assert_rel(
            f,
            -(bgnbd_log_likelihood(&truth, &data) - xlns) / obj.wsum,
            1e-10,
            "objective vs public LL",
        );
    }

    /// The fit, its log-likelihood included, is the same to the bit whatever
    /// order the triples arrive in (more rows than a chunk of the sums).
    #[test]
    fn fit_does_not_depend_on_the_row_order() {
        let truth = BgNbdParams {
            r: 0.8,
            alpha: 6.0,
            a: 0.9,
            b: 3.0,
        };
        let data = simulate_bgnbd(20_000, &truth, 13, 1095);
        assert!(data.len() > super::super::fit::CHUNK, "{} rows", data.len());
        let reversed: Vec<Rfm> = data.iter().rev().copied().collect();
        let (a, b) = (fit_bgnbd(&data, 0.0).unwrap(), fit_bgnbd(&reversed, 0.0).unwrap());
        assert_eq!(a.log_likelihood.to_bits(), b.log_likelihood.to_bits());
        assert_eq!(a.params, b.params);
    }
}
