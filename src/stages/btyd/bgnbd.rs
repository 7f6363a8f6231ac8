//! The BG/NBD purchase model (Fader, Hardie & Lee 2005): parameters,
//! log-likelihood and the customer-level quantities used for scoring.
//!
//! [`bgnbd_log_likelihood`] is paper eq. (6) in the log-space form of its
//! section 7; [`p_alive`] is Hardie's note 021 eq. (2); [`expected_purchases`]
//! is paper eq. (10), rearranged so that its numerator has no cancellation
//! for short horizons and no singularity at a = 1 (see the numerator
//! helpers). The fit lives in [`super::bgnbd_fit`].

use super::data::Rfm;
use super::fit::{chunked_sum, fit_threads};
use super::special::{ln_gamma, ln_hyp2f1_val, log_add_exp, softplus_sigmoid};

/// BG/NBD parameters: purchase rates λ ~ Gamma(shape r, rate α), dropout
/// probabilities p ~ Beta(a, b). `alpha` is in the time unit of the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdParams {
    /// Shape of the gamma distribution of purchase rates.
    pub r: f64,
    /// Rate (inverse scale) of the gamma distribution of purchase rates.
    pub alpha: f64,
    /// First shape parameter of the beta distribution of dropout probabilities.
    pub a: f64,
    /// Second shape parameter of the beta distribution of dropout probabilities.
    pub b: f64,
}

fn bgnbd_ll_one(p: &BgNbdParams, x: f64, t_x: f64, t: f64) -> f64 {
    let BgNbdParams { r, alpha, a, b } = *p;
    let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
    let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
    let a3 = -(r + x) * (alpha + t).ln();
    if x > 0.0 {
        let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + t_x).ln();
        a1 + a2 + log_add_exp(a3, a4)
    } else {
        a1 + a2 + a3
    }
}

/// Weighted BG/NBD log-likelihood Σ weight · ln L(r, α, a, b | x, t_x, T)
/// (paper eq. 6, in the log-space form A1 + A2 + ln(e^A3 + δ(x>0) e^A4) of
/// section 7). Rows with weight 0 are skipped; NaN for invalid parameters.
/// Summed in fixed chunks of rows on a few threads, so the value does not
/// depend on their number ([`chunked_sum`]).
pub fn bgnbd_log_likelihood(p: &BgNbdParams, data: &[Rfm]) -> f64 {
    let [ll] = chunked_sum(data.len(), fit_threads(), |range| {
        let mut ll = 0.0;
        for d in &data[range] {
            if d.weight != 0.0 {
                ll += d.weight * bgnbd_ll_one(p, d.frequency, d.recency, d.t);
            }
        }
        [ll]
    });
    ll
}

/// ln of (a / (b + x - 1)) ((α + T) / (α + t_x))^(r + x), the odds of
/// "dropped out after the last purchase" against "still alive" (x > 0).
fn bgnbd_log_odds_dead(p: &BgNbdParams, x: f64, t_x: f64, t: f64) -> f64 {
    (p.r + x) * ((t - t_x) / (p.alpha + t_x)).ln_1p() + p.a.ln() - (p.b + x - 1.0).ln()
}

pub(crate) fn rfm_valid(x: f64, t_x: f64, t: f64) -> bool {
    x.is_finite() && t_x.is_finite() && t.is_finite() && (x == 0.0 || x >= 1.0) && t_x >= 0.0 && t >= 0.0
}

/// P(alive | x, t_x, T) = 1 / (1 + δ(x>0) (a/(b+x-1)) ((α+T)/(α+t_x))^(r+x))
/// (Hardie, note 021) for history (`x`, `t_x`, `t` = T), evaluated as a
/// logistic function of the log odds, so it stays in [0, 1] for any history.
/// 1 for x = 0; NaN for invalid input (negative or non-finite values, x
/// strictly between 0 and 1).
pub fn p_alive(p: &BgNbdParams, x: f64, t_x: f64, t: f64) -> f64 {
    if !rfm_valid(x, t_x, t) {
        return f64::NAN;
    }
    if x == 0.0 {
        return 1.0;
    }
    softplus_sigmoid(-bgnbd_log_odds_dead(p, x, t_x, t)).1
}

/// Conditional expected number of repeat purchases in (T, T + h], h =
/// `horizon`, of a customer with history (x, t_x, T) = (`x`, `t_x`, `t`),
/// paper eq. (10):
///
/// E = [(a+b+x-1)/(a-1)] [1 - ((α+T)/(α+T+h))^(r+x) 2F1(r+x, b+x; a+b+x-1; h/(α+T+h))]
///     / [1 + δ(x>0) (a/(b+x-1)) ((α+T)/(α+t_x))^(r+x)]
///
/// The denominator is 1/P(alive) (see [`p_alive`]). The numerator N, the
/// expectation for a customer alive at T, is evaluated without cancellation
/// and without the removable singularity at a = 1. With s = h/(α+T),
/// z = s/(1+s), c = a+b+x-1 and the Pfaff/Euler transformations
/// (1-z)^(r+x) 2F1(r+x, b+x; c; z) = 2F1(r+x, a-1; c; -s) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; c; z):
///
/// * s <= 1/2: N = (r+x) s Σ_{n>=0} (r+x+1)_n (a)_n (-s)^n / ((c+1)_n (n+1)!);
/// * otherwise, if it converges: N = c (-expm1((a-1) ln(1-z))/(a-1)) -
///   (1-z)^(a-1) Σ_{n>=1} (a+b-1-r)_n (a)_{n-1} z^n / ((c+1)_{n-1} n!),
///   fast when c is large (long histories);
/// * otherwise (z close to 1): N = c/(a-1) (1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; c; z))
///   with [`ln_hyp2f1`](super::special::ln_hyp2f1), interpolated across a = 1 and c = 0.
///
/// Always finite, >= 0 and <= (r+x) h/(α+T) (an immortal customer's
/// expectation) for valid input; 0 for h = 0. NaN for invalid input
/// (negative or non-finite values, x strictly between 0 and 1).
pub fn expected_purchases(p: &BgNbdParams, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
    if !rfm_valid(x, t_x, t) || !horizon.is_finite() || horizon < 0.0 {
        return f64::NAN;
    }
    if horizon == 0.0 {
        return 0.0;
    }
    let alive = p_alive(p, x, t_x, t);
    let num = bgnbd_numerator(p, horizon, x, t);
    num * alive
}

/// E[Y(horizon)] of a customer known to be alive at T (the numerator of
/// eq. (10)): [`expected_purchases`] is this times [`p_alive`]. Scoring many
/// horizons for one customer computes `p_alive` once and calls this per
/// horizon. NaN for invalid input, like [`expected_purchases`].
pub fn expected_purchases_if_alive(p: &BgNbdParams, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
    if !rfm_valid(x, t_x, t) || !horizon.is_finite() || horizon < 0.0 {
        return f64::NAN;
    }
    if horizon == 0.0 {
        return 0.0;
    }
    bgnbd_numerator(p, horizon, x, t)
}

/// The numerator of eq. (10): E[Y(t)] for a customer known to be alive at T,
/// by the same series as every horizon of scoring
/// ([`numerators`](super::bgnbd_multi::numerators) with one horizon).
fn bgnbd_numerator(p: &BgNbdParams, h: f64, x: f64, t: f64) -> f64 {
    let mut v = [0.0];
    super::bgnbd_multi::numerators(p, &[h], x, t, &mut v);
    v[0]
}

/// Slow path of the numerator: c/(a-1) (1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; c; z)),
/// interpolated across the removable singularities a = 1 and c = 0.
pub(super) fn numerator_hyp(r: f64, a: f64, b: f64, x: f64, s: f64, depth: u32) -> f64 {
    // Nodes at ±δ, ±2δ from the singular point, used within δ/2 of it, so a
    // node is never itself within δ/2 of it.
    const DELTA: f64 = 1e-3;
    let near = |v: f64| v.abs() < 0.5 * DELTA && depth < 2;
    if near(a - 1.0) {
        return interpolate_across(1.0, a, DELTA, |aa| numerator_hyp(r, aa, b, x, s, depth + 1));
    }
    let c = a + b + x - 1.0;
    if near(c) {
        // Only possible for x = 0 and a + b close to 1: shift the larger of a, b.
        if a >= b {
            return interpolate_across(1.0 - b - x, a, DELTA, |aa| numerator_hyp(r, aa, b, x, s, depth + 1));
        }
        return interpolate_across(1.0 - a - x, b, DELTA, |bb| numerator_hyp(r, a, bb, x, s, depth + 1));
    }
    let z = s / (1.0 + s);
    let l = -s.ln_1p();
    let g = ln_hyp2f1_val(a + b - 1.0 - r, a - 1.0, c, z);
    let f = g.sign * ((a - 1.0) * l + g.ln).exp();
    c / (a - 1.0) * (1.0 - f)
}

/// Value at `at` of the cubic through f(center ± δ), f(center ± 2δ), for a
/// function analytic at `center` that cannot be evaluated accurately there.
fn interpolate_across(center: f64, at: f64, delta: f64, f: impl Fn(f64) -> f64) -> f64 {
    let t = (at - center) / delta;
    let nodes = [-2.0, -1.0, 1.0, 2.0];
    let mut acc = 0.0;
    for (i, &ni) in nodes.iter().enumerate() {
        let mut w = 1.0;
        for (j, &nj) in nodes.iter().enumerate() {
            if i != j {
                w *= (t - nj) / (ni - nj);
            }
        }
        acc += w * f(center + ni * delta);
    }
    acc
}

#[cfg(test)]
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::stages::btyd::special::hyp2f1;
    use crate::stages::btyd::test_support::{CDNOW, CUSTOMERS, assert_rel, rfm};

    // References: the values pinned here are printed by tests/reference/btyd_mpmath.py
    // (`bgnbd_customers`), which evaluates the paper's formulas directly with
    // mpmath at mp.dps = 50 (eq. 6 likelihood with Beta/Gamma functions, eq. 10
    // with mp.hyp2f1, note 021 p_alive). tests/reference/btyd_lifetimes.py
    // (`bgnbd_customers`) prints the same quantities from lifetimes 0.11.3
    // (BetaGeoFitter with these params_), which agree to <= 3e-12 relative.
    #[test]
    fn bgnbd_matches_lifetimes_reference() {
        let data = rfm(&CUSTOMERS);
        assert_rel(
            bgnbd_log_likelihood(&CDNOW, &data),
            -1110.0028706104154,
            1e-12,
            "BG/NBD LL",
        );
        // (p_alive, E[Y(39)], E[Y(200)]) per customer
        let want: [(f64, f64, f64); 8] = [
            (1.0, 0.19509805201126264, 0.75591290664058011),
            (0.70032663912303341, 0.67089391179356402, 2.3919755989937716),
            (0.051052723572267769, 0.086146330315315174, 0.29412232371274585),
            (0.021711749707064511, 0.08090921917613284, 0.26292916293026816),
            (0.85770764235649502, 6.2843029073695511, 19.685108872344428),
            (0.47961668279602488, 1.1485935564986571, 3.8237931921235627),
            (1.0, 0.6963023155013863, 2.074868214438355),
            (0.99289234694026325, 3.8500868182247255, 19.344019825161475),
        ];
        for (&(x, tx, t, _), &(pa, e39, e200)) in CUSTOMERS.iter().zip(&want) {
            assert_rel(p_alive(&CDNOW, x, tx, t), pa, 1e-12, &format!("p_alive({x},{tx},{t})"));
            assert_rel(
                expected_purchases(&CDNOW, 39.0, x, tx, t),
                e39,
                1e-10,
                &format!("E39({x},{tx},{t})"),
            );
            assert_rel(
                expected_purchases(&CDNOW, 200.0, x, tx, t),
                e200,
                1e-10,
                &format!("E200({x},{tx},{t})"),
            );
        }
    }

    #[test]
    fn expected_purchases_hard_cases_match_mpmath() {
        // mpmath 1.4.1, mp.dps = 80, paper eq. (10) with mp.hyp2f1 (tests/reference/btyd_mpmath.py, `bgnbd_hard_cases`):
        //   z = t/(AL+T+t); num = (A+B+x-1)/(A-1) * (1 - ((AL+T)/(AL+T+t))**(R+x) * mp.hyp2f1(R+x, B+x, A+B+x-1, z))
        //   den = 1 + (A/(B+x-1) * ((AL+T)/(AL+tx))**(R+x) if x > 0 else 0); num/den
        // Set 2 has a = 1 exactly: reference at a = 1 + 1e-40. Set 4 with x = 0 has
        // c = a+b+x-1 = 0: reference at b = 0.6 +- 1e-30 (both sides agree).
        let params = [
            CDNOW,
            BgNbdParams {
                r: 20.0,
                alpha: 500.0,
                a: 30.0,
                b: 100.0,
            },
            BgNbdParams {
                r: 0.5,
                alpha: 2.0,
                a: 1.0,
                b: 3.0,
            },
            BgNbdParams {
                r: 0.5,
                alpha: 0.01,
                a: 0.3,
                b: 0.5,
            },
            BgNbdParams {
                r: 0.3,
                alpha: 0.05,
                a: 0.4,
                b: 0.6,
            },
        ];
        // (param set, horizon, x, t_x, T, expected)
        let cases: [(usize, f64, f64, f64, f64, f64); 30] = [
            (0, 1000.0, 0.0, 0.0, 0.5, 6.295612000116690823),
            (0, 5000.0, 500.0, 4990.0, 5000.0, 371.32984789503476624),
            (0, 5000.0, 500.0, 100.0, 5000.0, 0.0), // 4.6e-836 underflows
            (0, 52.0, 1.0, 1.0, 1.0, 4.0849219438830654705),
            (0, 30.0, 3.0, 20.0, 40.0, 0.83532755036011921453),
            (0, 1e-06, 2.0, 3.0, 10.0, 7.6721441269909850619e-8),
            (1, 1000.0, 0.0, 0.0, 0.5, 4.4438082000322808461),
            (1, 5000.0, 500.0, 4990.0, 5000.0, 19.210959278565359219),
            (1, 5000.0, 500.0, 100.0, 5000.0, 0.0), // 1.9e-498
            (1, 52.0, 1.0, 1.0, 1.0, 1.309324076394107984),
            (1, 30.0, 3.0, 20.0, 40.0, 0.64949855837384525748),
            (1, 1e-06, 2.0, 3.0, 10.0, 3.0755730085296386755e-8),
            (2, 1000.0, 0.0, 0.0, 0.5, 10.086485932852748258),
            (2, 5000.0, 500.0, 4990.0, 5000.0, 345.42708414049540532),
            (2, 5000.0, 500.0, 100.0, 5000.0, 0.0), // 1.3e-841
            (2, 52.0, 1.0, 1.0, 1.0, 5.593675988858269852),
            (2, 30.0, 3.0, 20.0, 40.0, 0.70573509283708451428),
            (2, 1e-06, 2.0, 3.0, 10.0, 6.4482744723941036866e-8),
            (3, 1000.0, 0.0, 0.0, 0.5, 98.250645991052287835),
            (3, 5000.0, 500.0, 4990.0, 5000.0, 445.735046433854788),
            (3, 5000.0, 500.0, 100.0, 5000.0, 0.0), // 3.6e-845
            (3, 52.0, 1.0, 1.0, 1.0, 17.802539169202048511),
            (3, 30.0, 3.0, 20.0, 40.0, 1.0031404831206876188),
            (3, 1e-06, 2.0, 3.0, 10.0, 4.9616064823281701626e-8),
            (4, 1000.0, 0.0, 0.0, 0.5, 36.040175182454152625),
            (4, 5000.0, 500.0, 4990.0, 5000.0, 429.05214122513652498),
            (4, 5000.0, 500.0, 100.0, 5000.0, 0.0), // 6.9e-845
            (4, 52.0, 1.0, 1.0, 1.0, 11.570367770525123722),
            (4, 30.0, 3.0, 20.0, 40.0, 0.8670389136892792712),
            (4, 1e-06, 2.0, 3.0, 10.0, 4.6879443333107844554e-8),
        ];
        // Cases from a randomised grid (same formula; values recomputed by
        // tests/reference/btyd_mpmath.py, `bgnbd_grid_cases`) where
        // z = t/(α+T+t) is close to 1 with large parameters, which go through the
        // 1 - z connection formula (and the interpolation across a = 1).
        type Case = (f64, f64, f64, f64, f64, f64, f64, f64, f64);
        #[rustfmt::skip]
        let grid: [Case; 3] = [
            (1.0599110073322462, 16.767646999652097, 1.5848124269858153, 248.08966027938817, 9156.237759932355, 0.0, 0.0, 0.583397840442589, 174.07078339597253689),
            (0.043523710734417, 0.2800290432589626, 38.36481910274672, 241.92479316914958, 677.3390517290968, 30.0, 1.549846680597167, 1.6474825058116511, 4.9417135295057705688),
            (0.020908713711520404, 1.6336277564723731, 0.9995081467395078, 77.32935451187147, 333589.43863757123, 1.0, 1.1400359615907756, 6.290631260161198, 435.51219073868730208),
        ];
        for (r, alpha, a, b, h, x, tx, t, want) in grid {
            let got = expected_purchases(&BgNbdParams { r, alpha, a, b }, h, x, tx, t);
            assert_rel(
                got,
                want,
                1e-9,
                &format!("grid E[Y({h})|{x},{tx},{t}] at ({r},{alpha},{a},{b})"),
            );
        }
        for (i, h, x, tx, t, want) in cases {
            let got = expected_purchases(&params[i], h, x, tx, t);
            if want == 0.0 {
                assert!(
                    got.is_finite() && (0.0..1e-300).contains(&got),
                    "set {i} ({h},{x},{tx},{t}): {got:e}"
                );
            } else {
                assert_rel(got, want, 1e-9, &format!("set {i} E[Y({h})|{x},{tx},{t}]"));
            }
        }
    }

    // ---- closed forms and extremes -------------------------------------------

    /// Eq. (10) evaluated directly with powf (no log space), for moderate inputs.
    fn expected_direct(p: &BgNbdParams, h: f64, x: f64, tx: f64, t: f64) -> f64 {
        let BgNbdParams { r, alpha, a, b } = *p;
        let z = h / (alpha + t + h);
        let num = (a + b + x - 1.0) / (a - 1.0)
            * (1.0 - ((alpha + t) / (alpha + t + h)).powf(r + x) * hyp2f1(r + x, b + x, a + b + x - 1.0, z));
        let den = if x > 0.0 {
            1.0 + a / (b + x - 1.0) * ((alpha + t) / (alpha + tx)).powf(r + x)
        } else {
            1.0
        };
        num / den
    }

    #[test]
    fn closed_form_checks() {
        let p = BgNbdParams {
            r: 0.25,
            alpha: 4.0,
            a: 0.8,
            b: 2.5,
        };
        // p_alive = 1 for x = 0, whatever T
        for t in [0.0, 1.0, 52.0, 5000.0] {
            assert_eq!(p_alive(&p, 0.0, 0.0, t), 1.0);
        }
        // p_alive against 1/(1 + a/(b+x-1) ((α+T)/(α+t_x))^(r+x))
        for (x, tx, t) in [(1.0, 10.0, 52.0), (4.0, 30.0, 40.0), (7.0, 7.0, 20.0), (2.0, 0.0, 3.0)] {
            let direct = 1.0 / (1.0 + p.a / (p.b + x - 1.0) * ((p.alpha + t) / (p.alpha + tx)).powf(p.r + x));
            assert_rel(p_alive(&p, x, tx, t), direct, 1e-14, "p_alive direct");
        }
        // x = 0, t_x = 0: E = (a+b-1)/(a-1) [1 - (α+T)/(α+T+h))^r 2F1(r, b; a+b-1; h/(α+T+h))]
        for (h, t) in [(1.0, 0.0), (10.0, 5.0), (52.0, 30.0), (100.0, 2.0)] {
            let z = h / (p.alpha + t + h);
            let want = (p.a + p.b - 1.0) / (p.a - 1.0)
                * (1.0 - ((p.alpha + t) / (p.alpha + t + h)).powf(p.r) * hyp2f1(p.r, p.b, p.a + p.b - 1.0, z));
            assert_rel(
                expected_purchases(&p, h, 0.0, 0.0, t),
                want,
                1e-12,
                &format!("E x=0 h={h} T={t}"),
            );
        }
        for (h, x, tx, t) in [(10.0, 1.0, 5.0, 20.0), (52.0, 3.0, 30.0, 40.0), (26.0, 8.0, 50.0, 52.0)] {
            assert_rel(
                expected_purchases(&p, h, x, tx, t),
                expected_direct(&p, h, x, tx, t),
                1e-12,
                "E direct",
            );
        }
        // horizon 0, monotone in the horizon, bounded by an immortal customer's (r+x) h/(α+T)
        assert_eq!(expected_purchases(&p, 0.0, 3.0, 10.0, 20.0), 0.0);
        let mut prev = 0.0;
        for h in [0.001, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6] {
            let e = expected_purchases(&p, h, 2.0, 15.0, 20.0);
            assert!(
                e > prev && e <= (p.r + 2.0) * h / (p.alpha + 20.0),
                "h={h}: {e} after {prev}"
            );
            prev = e;
        }
        // invalid input
        assert!(p_alive(&p, -1.0, 0.0, 1.0).is_nan());
        assert!(expected_purchases(&p, -1.0, 1.0, 0.5, 1.0).is_nan());
        assert!(expected_purchases(&p, 1.0, f64::NAN, 0.5, 1.0).is_nan());
    }

    #[test]
    fn extreme_customers_are_finite() {
        let sets = [
            BgNbdParams {
                r: 0.25,
                alpha: 4.0,
                a: 0.8,
                b: 2.5,
            },
            BgNbdParams {
                r: 0.01,
                alpha: 0.01,
                a: 0.01,
                b: 0.01,
            },
            BgNbdParams {
                r: 80.0,
                alpha: 2000.0,
                a: 50.0,
                b: 400.0,
            },
            BgNbdParams {
                r: 1.0,
                alpha: 1.0,
                a: 1.0,
                b: 1.0,
            },
        ];
        let customers = [
            (500.0, 4999.0, 5000.0),
            (500.0, 10.0, 5000.0),
            (5000.0, 4999.0, 5000.0),
            (0.0, 0.0, 5000.0),
            (0.0, 0.0, 0.0),
            (1.0, 0.0, 5000.0),
            (300.0, 2990.0, 3000.0),
        ];
        for p in &sets {
            for &(x, tx, t) in &customers {
                let ll = bgnbd_ll_one(p, x, tx, t);
                assert!(ll.is_finite(), "LL {p:?} {x} {tx} {t}: {ll}");
                let pa = p_alive(p, x, tx, t);
                assert!((0.0..=1.0).contains(&pa), "p_alive {p:?} {x} {tx} {t}: {pa}");
                for h in [1.0, 52.0, 5000.0, 1e6] {
                    let e = expected_purchases(p, h, x, tx, t);
                    let bound = (p.r + x) * h / (p.alpha + t);
                    assert!(
                        e.is_finite() && e >= 0.0 && e <= bound * (1.0 + 1e-12),
                        "E {p:?} h={h} {x} {tx} {t}: {e}"
                    );
                }
            }
        }
        // and the likelihood of such a table is finite too
        let data = rfm(&[
            (500.0, 4999.0, 5000.0, 3.0),
            (0.0, 0.0, 5000.0, 10.0),
            (5000.0, 4999.0, 5000.0, 1.0),
        ]);
        assert!(bgnbd_log_likelihood(&sets[0], &data).is_finite());
    }
}
