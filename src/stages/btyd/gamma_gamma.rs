//! The Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV";
//! Hardie's note 025): parameters, the log-likelihood of the customers' mean
//! repeat spends, the conditional expected average spend, and the fit, as
//! `lifetimes.GammaGammaFitter` does, with the shared optimizer in `optim`.

use super::data::{Fit, FitError, Spend, bad_row, check_penalizer, distinct_index};
use super::fit::{chunked_sum, fit_objective, fit_threads};
use super::optim::Objective;
use super::special::{digamma, ln_gamma};

/// Gamma-Gamma parameters: a customer's transaction values are
/// Gamma(shape p, rate ν) with ν ~ Gamma(shape q, rate v).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaParams {
    /// Shape of the per-transaction spend distribution.
    pub p: f64,
    /// Shape of the gamma distribution of the per-customer rate ν.
    pub q: f64,
    /// Rate of the gamma distribution of ν (in the currency unit of the data).
    pub v: f64,
}

fn gg_ll_one(p: &GammaGammaParams, x: f64, m: f64) -> f64 {
    let GammaGammaParams { p, q, v } = *p;
    let px = p * x;
    ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q) + q * v.ln() + (px - 1.0) * m.ln() + px * x.ln()
        - (px + q) * (x * m + v).ln()
}

/// Weighted Gamma-Gamma log-likelihood of the customers' mean repeat spends
/// m given their repeat frequencies x (Hardie's note 025 eq. (1a), as
/// `lifetimes`):
/// ln Γ(px+q) - ln Γ(px) - ln Γ(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(xm + v).
/// Rows with frequency 0 or weight 0 are skipped. Summed in fixed chunks of
/// rows on a few threads, so the value does not depend on their number
/// ([`chunked_sum`]).
pub fn gamma_gamma_log_likelihood(p: &GammaGammaParams, data: &[Spend]) -> f64 {
    let [ll] = chunked_sum(data.len(), fit_threads(), |range| {
        let mut ll = 0.0;
        for d in &data[range] {
            if d.weight != 0.0 && d.frequency > 0.0 {
                ll += d.weight * gg_ll_one(p, d.frequency, d.monetary_value);
            }
        }
        [ll]
    });
    ll
}

/// Conditional expected average transaction value E[Z | x, m] =
/// p (v + x m) / (p x + q - 1) (note 025 eq. (5), a weighted mean of the
/// population mean p v / (q - 1) and the customer's mean m). For x = 0 it
/// is the population mean. NaN when that mean does not exist (q <= 1 with
/// x = 0, or p x + q <= 1) or for invalid input.
pub fn expected_avg_spend(p: &GammaGammaParams, frequency: f64, monetary_value: f64) -> f64 {
    if !frequency.is_finite() || frequency < 0.0 {
        return f64::NAN;
    }
    if frequency == 0.0 {
        return if p.q > 1.0 { p.p * p.v / (p.q - 1.0) } else { f64::NAN };
    }
    let den = p.p * frequency + p.q - 1.0;
    if den <= 0.0 || !monetary_value.is_finite() {
        return f64::NAN;
    }
    p.p * (p.v + frequency * monetary_value) / den
}

// ---------------------------------------------------------------------------
// Fit
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct GgRow {
    group: u32,
    ln_m: f64,
    xm: f64,
    w: f64,
}

/// Gamma-Gamma data with monetary values divided by their weighted mean
/// (so v is O(1)); the penalty is applied to the unscaled v.
struct GgObjective {
    xs: Vec<f64>,
    group_w: Vec<f64>,
    rows: Vec<GgRow>,
    wsum: f64,
    penalizer: f64,
    m_scale: f64,
    /// Threads the likelihood's row loop may use (the value does not depend
    /// on them).
    threads: usize,
}

impl Objective for GgObjective {
    fn dim(&self) -> usize {
        3
    }
    fn total_weight(&self) -> f64 {
        self.wsum
    }
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (p, q, v) = (theta[0].exp(), theta[1].exp(), theta[2].exp());
        let (lg_q, dg_q, ln_v) = (ln_gamma(q), digamma(q), v.ln());
        let (mut ll, mut d_p, mut d_q, mut d_v) = (0.0, 0.0, 0.0, 0.0);
        for (g, &x) in self.xs.iter().enumerate() {
            let gw = self.group_w[g];
            let px = p * x;
            let ln_x = x.ln();
            let (dg1, dg2) = (digamma(px + q), digamma(px));
            ll += gw * (ln_gamma(px + q) - ln_gamma(px) - lg_q + q * ln_v + px * ln_x);
            d_p += gw * x * (dg1 - dg2 + ln_x);
            d_q += gw * (dg1 - dg_q + ln_v);
            d_v += gw * q / v;
        }
        // The rows in fixed chunks on `threads` threads (`chunked_sum`),
        // the first continuing the groups' sums (one chunk adds in the order
        // of one loop).
        let groups = (ll, d_p, d_q, d_v);
        let [ll, d_p, d_q, d_v] = chunked_sum(self.rows.len(), self.threads, |range| {
            let (mut ll, mut d_p, mut d_q, mut d_v) = if range.start == 0 { groups } else { (0.0, 0.0, 0.0, 0.0) };
            for row in &self.rows[range] {
                let x = self.xs[row.group as usize];
                let px = p * x;
                let w = row.w;
                let den = row.xm + v;
                let l = den.ln();
                ll += w * ((px - 1.0) * row.ln_m - (px + q) * l);
                d_p += w * x * (row.ln_m - l);
                d_q -= w * l;
                d_v -= w * (px + q) / den;
            }
            [ll, d_p, d_q, d_v]
        });
        let pen = self.penalizer;
        let wn = self.wsum;
        let vn = v * self.m_scale;
        let f = -ll / wn + pen * (p * p + q * q + vn * vn);
        grad[0] = p * (-d_p / wn + 2.0 * pen * p);
        grad[1] = q * (-d_q / wn + 2.0 * pen * q);
        grad[2] = v * (-d_v / wn) + 2.0 * pen * vn * vn;
        f
    }
}

/// The objective and the checked, sorted repeat buyers it was built from
/// (on which the fit's log-likelihood is summed, in their order).
fn prepare_gg(data: &[Spend], penalizer: f64) -> Result<(GgObjective, Vec<Spend>), FitError> {
    check_penalizer(penalizer)?;
    let mut kept = Vec::new();
    for (i, d) in data.iter().enumerate() {
        if !(d.weight.is_finite() && d.weight >= 0.0) {
            return Err(bad_row(i, format!("weight must be finite and >= 0, got {}", d.weight)));
        }
        if !(d.frequency.is_finite() && d.frequency >= 0.0) {
            return Err(bad_row(
                i,
                format!("frequency must be finite and >= 0, got {}", d.frequency),
            ));
        }
        if d.frequency > 0.0 && d.weight > 0.0 {
            if !(d.monetary_value.is_finite() && d.monetary_value > 0.0) {
                return Err(bad_row(
                    i,
                    format!(
                        "monetary_value of a repeat buyer must be finite and > 0, got {}",
                        d.monetary_value
                    ),
                ));
            }
            kept.push(*d);
        }
    }
    if data.iter().all(|d| d.weight == 0.0) {
        return Err(FitError::Empty);
    }
    if kept.is_empty() {
        return Err(FitError::NoRepeatBuyers);
    }
    // Summed in a fixed order, whatever order the rows arrive in.
    kept.sort_by(|a, b| {
        a.frequency
            .total_cmp(&b.frequency)
            .then(a.monetary_value.total_cmp(&b.monetary_value))
            .then(a.weight.total_cmp(&b.weight))
    });
    let wsum: f64 = kept.iter().map(|d| d.weight).sum();
    let m_scale = kept.iter().map(|d| d.weight * d.monetary_value).sum::<f64>() / wsum;
    let freqs: Vec<f64> = kept.iter().map(|d| d.frequency).collect();
    let (xs, gidx) = distinct_index(&freqs);
    let mut group_w = vec![0.0; xs.len()];
    let mut rows = Vec::with_capacity(kept.len());
    for (i, d) in kept.iter().enumerate() {
        group_w[gidx[i] as usize] += d.weight;
        let m = d.monetary_value / m_scale;
        rows.push(GgRow {
            group: gidx[i],
            ln_m: m.ln(),
            xm: d.frequency * m,
            w: d.weight,
        });
    }
    let obj = GgObjective {
        xs,
        group_w,
        rows,
        wsum,
        penalizer,
        m_scale,
        threads: fit_threads(),
    };
    Ok((obj, kept))
}

/// Fits the Gamma-Gamma spend model by maximum likelihood on the repeat
/// buyers (frequency > 0; other rows are ignored), as
/// `lifetimes.GammaGammaFitter`: minimises -LL/Σweight + penalizer · (p² +
/// q² + v²) (monetary values are scaled by their mean internally; the
/// penalty applies to the unscaled v). Start: the best of a small grid of
/// (p, q) with v matching the mean spend; then BFGS over log-parameters as
/// in [`fit_bgnbd`](super::bgnbd_fit::fit_bgnbd). Errors if there is no
/// repeat buyer or a repeat buyer has spend <= 0 (or is not finite).
pub fn fit_gamma_gamma(data: &[Spend], penalizer: f64) -> Result<Fit<GammaGammaParams>, FitError> {
    let (obj, kept) = prepare_gg(data, penalizer)?;
    let mut starts = Vec::new();
    for p in [0.5, 2.0, 8.0] {
        for q in [1.5, 3.0, 8.0] {
            // mean spend p v / (q - 1) = 1 in scaled units
            starts.push(vec![f64::ln(p), f64::ln(q), f64::ln((q - 1.0) / p)]);
        }
    }
    starts.push(vec![0.1, 0.1, 0.1 - obj.m_scale.ln()]); // lifetimes' default start
    let ms = obj.m_scale;
    fit_objective(
        &obj,
        &starts,
        |v| GammaGammaParams {
            p: v[0],
            q: v[1],
            v: v[2] * ms,
        },
        |p| gamma_gamma_log_likelihood(p, &kept),
    )
}

#[cfg(test)]
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::stages::btyd::bgnbd::BgNbdParams;
    use crate::stages::btyd::test_support::{assert_rel, check_gradient, simulate_bgnbd};
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Gamma};
    use rand_xoshiro::Xoshiro256PlusPlus;

    // References: the log-likelihood pinned is mpmath's, printed by
    // tests/reference/btyd_mpmath.py (`gamma_gamma_values`, mp.dps = 50);
    // tests/reference/btyd_lifetimes.py (`gamma_gamma_values`) prints lifetimes'
    // (GammaGammaFitter._negative_log_likelihood). The expected spends pinned are
    // lifetimes' conditional_expected_average_profit, printed by the latter; the
    // former agrees to ~1e-16.
    #[test]
    fn gamma_gamma_matches_lifetimes_reference() {
        let gg = GammaGammaParams {
            p: 6.25,
            q: 3.74,
            v: 15.45,
        };
        let data: Vec<Spend> = [
            (1.0, 20.0, 2.0),
            (2.0, 35.5, 1.0),
            (5.0, 12.3, 1.0),
            (10.0, 80.0, 1.0),
            (300.0, 25.0, 1.0),
            (3.0, 0.5, 3.0),
        ]
        .iter()
        .map(|&(frequency, monetary_value, weight)| Spend {
            frequency,
            monetary_value,
            weight,
        })
        .collect();
        // lifetimes -131.2310279437758, mpmath -131.23102794377796 (pinned)
        assert_rel(
            gamma_gamma_log_likelihood(&gg, &data),
            -131.23102794377796,
            1e-12,
            "GG LL",
        );
        let want = [
            24.64543937708565,
            35.45357611548557,
            14.149382171226833,
            78.1202099938688,
            25.014944827292386,
            4.929618427175432,
        ];
        for (d, w) in data.iter().zip(want) {
            assert_rel(
                expected_avg_spend(&gg, d.frequency, d.monetary_value),
                w,
                1e-13,
                "GG spend",
            );
        }
        assert_rel(
            expected_avg_spend(&gg, 0.0, 0.0),
            35.24178832116788,
            1e-13,
            "GG population mean",
        );
        assert!(expected_avg_spend(&GammaGammaParams { p: 1.0, q: 0.9, v: 1.0 }, 0.0, 0.0).is_nan());
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let spends: Vec<Spend> = (1..40)
            .map(|i| Spend {
                frequency: (i % 7 + 1) as f64,
                monetary_value: 10.0 + (i * 13 % 17) as f64,
                weight: (i % 3 + 1) as f64,
            })
            .collect();
        let (obj, _) = prepare_gg(&spends, 0.01).unwrap();
        check_gradient(&obj, &[1.0, 1.5, -0.2]);
        check_gradient(&obj, &[-0.5, 0.1, 0.7]);
    }

    #[test]
    fn gamma_gamma_fit_matches_lifetimes_optimum() {
        // Printed by tests/reference/btyd_lifetimes.py (`gamma_gamma_fit`): the same
        // loop in Python, then
        //   minimize(value_and_grad(GammaGammaFitter._negative_log_likelihood), np.log([2, 3, 30]),
        //            jac=True, method="BFGS", args=(f, m, w, pen), options=dict(gtol=1e-12))
        // and GammaGammaFitter(penalizer_coef=pen).fit(f, m, weights=w).standard_errors_
        let data: Vec<Spend> = (0..200)
            .map(|i| {
                let x = 1.0 + (i * 7 % 12) as f64;
                let u = ((i * 53 % 101) as f64 + 0.5) / 101.0;
                let m = 30.0 * (0.2 + 1.6 * u) * (1.0 + 0.5 * ((i * 17 % 13) as f64 - 6.0) / (6.0 * x.sqrt()));
                Spend {
                    frequency: x,
                    monetary_value: m,
                    weight: 1.0 + (i % 2) as f64,
                }
            })
            .collect();
        let fit = fit_gamma_gamma(&data, 0.0).unwrap();
        assert!(fit.converged);
        let p = fit.params;
        for (got, want, name) in [
            (p.p, 0.6953667011099456, "p"),
            (p.q, 14.337254347422071, "q"),
            (p.v, 571.6956853359844, "v"),
        ] {
            assert_rel(got, want, 1e-6, name);
        }
        let se = fit.std_errors;
        for (got, want, name) in [
            (se.p, 0.25215472995016847, "se p"),
            (se.q, 18.393256224575282, "se q"),
            (se.v, 981.9832146592548, "se v"),
        ] {
            assert_rel(got, want, 1e-3, name);
        }
        let fit = fit_gamma_gamma(&data, 0.001).unwrap();
        assert!(fit.converged);
        let p = fit.params;
        for (got, want, name) in [
            (p.p, 7.134401274785502, "p"),
            (p.q, 2.396868161449098, "q"),
            (p.v, 7.021721372691254, "v"),
        ] {
            assert_rel(got, want, 1e-6, name);
        }
    }

    #[test]
    fn gamma_gamma_recovers_simulated_parameters() {
        let (p_true, q_true, v_true) = (6.0, 4.0, 15.0);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(777);
        let nu_dist = Gamma::new(q_true, 1.0 / v_true).unwrap();
        let data: Vec<Spend> = (0..20_000)
            .map(|_| {
                let x = rng.gen_range(1..=15) as f64;
                let nu: f64 = nu_dist.sample(&mut rng);
                // the sum of x Gamma(p, rate ν) transaction values is Gamma(p x, rate ν)
                let total: f64 = Gamma::new(p_true * x, 1.0 / nu).unwrap().sample(&mut rng);
                Spend {
                    frequency: x,
                    monetary_value: total / x,
                    weight: 1.0,
                }
            })
            .collect();
        let fit = fit_gamma_gamma(&data, 0.0).unwrap();
        let (p, se) = (fit.params, fit.std_errors);
        eprintln!(
            "Gamma-Gamma recovery: {} rows, {} iterations, converged {}\n  fitted {p:?}\n  se     {se:?}",
            data.len(),
            fit.iterations,
            fit.converged
        );
        assert!(fit.converged);
        for (got, s, want, name) in [
            (p.p, se.p, p_true, "p"),
            (p.q, se.q, q_true, "q"),
            (p.v, se.v, v_true, "v"),
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
    fn fit_is_deterministic() {
        // repeat buyers of a simulated BG/NBD data set, with spends from their recency
        let truth = BgNbdParams {
            r: 0.25,
            alpha: 4.0,
            a: 0.8,
            b: 2.5,
        };
        let data = simulate_bgnbd(5_000, &truth, 5, 365);
        let spends: Vec<Spend> = data
            .iter()
            .filter(|d| d.frequency > 0.0)
            .map(|d| Spend {
                frequency: d.frequency,
                monetary_value: 10.0 + d.recency,
                weight: d.weight,
            })
            .collect();
        let g1 = fit_gamma_gamma(&spends, 0.0).unwrap();
        let g2 = fit_gamma_gamma(&spends, 0.0).unwrap();
        assert_eq!(
            [g1.params.p, g1.params.q, g1.params.v].map(f64::to_bits),
            [g2.params.p, g2.params.q, g2.params.v].map(f64::to_bits)
        );
    }

    #[test]
    fn fit_errors_are_reported() {
        assert_eq!(fit_gamma_gamma(&[], 0.0).unwrap_err(), FitError::Empty);
        let none = [Spend {
            frequency: 0.0,
            monetary_value: 0.0,
            weight: 4.0,
        }];
        assert_eq!(fit_gamma_gamma(&none, 0.0).unwrap_err(), FitError::NoRepeatBuyers);
        let neg = [Spend {
            frequency: 2.0,
            monetary_value: -3.0,
            weight: 1.0,
        }];
        assert!(matches!(
            fit_gamma_gamma(&neg, 0.0).unwrap_err(),
            FitError::InvalidRow { row: 0, .. }
        ));
    }

    #[test]
    fn degenerate_inputs_terminate() {
        // one customer: no finite MLE, SEs undefined; the evaluation budget bounds the work
        let one = [Spend {
            frequency: 2.0,
            monetary_value: 5.0,
            weight: 10.0,
        }];
        let fit = fit_gamma_gamma(&one, 0.0).unwrap();
        assert!(!fit.converged && fit.log_likelihood.is_finite(), "{fit:?}");
    }

    /// More spends than three chunks of rows: the objective and its
    /// gradient are the same to the bit on 1 to 5 threads.
    #[test]
    fn objective_does_not_depend_on_the_thread_count() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
        let data: Vec<Spend> = (0..20_000)
            .map(|_| Spend {
                frequency: f64::from(rng.gen_range(1..20)),
                monetary_value: rng.gen_range(5.0..500.0),
                weight: 1.0,
            })
            .collect();
        let (mut obj, _) = prepare_gg(&data, 0.0).unwrap();
        assert!(
            obj.rows.len() > 3 * crate::stages::btyd::fit::CHUNK,
            "{} rows",
            obj.rows.len()
        );
        let mut want = None;
        for threads in 1..=5 {
            obj.threads = threads;
            let mut g = [0.0; 3];
            let f = obj.eval(&[0.3, 1.2, -0.5], &mut g);
            let got = (f.to_bits(), g.map(f64::to_bits));
            assert_eq!(*want.get_or_insert(got), got, "{threads} threads");
        }
        // The objective is the public log-likelihood in spend scaled by
        // m_scale: v / m_scale and each mean spend / m_scale multiply the
        // density by m_scale, so f = -(LL + W ln m_scale) / W.
        let mut g = [0.0; 3];
        let f = obj.eval(&[0.3, 1.2, -0.5], &mut g);
        let params = GammaGammaParams {
            p: 0.3f64.exp(),
            q: 1.2f64.exp(),
            v: (-0.5f64).exp() * obj.m_scale,
        };
        let ll = gamma_gamma_log_likelihood(&params, &data);
        assert_rel(
            f,
            -(ll + obj.wsum * obj.m_scale.ln()) / obj.wsum,
            1e-10,
            "objective vs public LL",
        );
    }

    /// The fit, its log-likelihood included, is the same to the bit whatever
    /// order the spends arrive in (shuffled; more rows than a chunk of the
    /// sums).
    #[test]
    fn fit_does_not_depend_on_the_row_order() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(9);
        let data: Vec<Spend> = (0..12_000)
            .map(|_| Spend {
                frequency: f64::from(rng.gen_range(1..200)),
                monetary_value: rng.gen_range(0.0f64..9.0).exp(),
                weight: f64::from(rng.gen_range(1..50)),
            })
            .collect();
        let mut shuffled = data.clone();
        rand::seq::SliceRandom::shuffle(shuffled.as_mut_slice(), &mut rng);
        let (a, b) = (
            fit_gamma_gamma(&data, 0.0).unwrap(),
            fit_gamma_gamma(&shuffled, 0.0).unwrap(),
        );
        assert_eq!(a.log_likelihood.to_bits(), b.log_likelihood.to_bits());
        assert_eq!(a.params, b.params);
    }
}
