//! Helpers shared by the unit tests of the BTYD models (compiled for tests
//! only): relative-error assertions, the CDNOW parameters and customers the
//! reference values were computed for, a BG/NBD simulator, and a
//! finite-difference check of an [`Objective`]'s gradient.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Gamma};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::bgnbd::BgNbdParams;
use super::data::Rfm;
use super::optim::Objective;

/// |a - b| / |b| (0 when equal).
pub(crate) fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }
}

/// Asserts that `got` is within relative `tol` of `want`, naming `what`.
#[track_caller]
pub(crate) fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        rel(got, want) <= tol,
        "{what}: got {got:e}, want {want:e}, rel err {:e} > {tol:e}",
        rel(got, want)
    );
}

/// CDNOW estimates from the BG/NBD paper, the fixed parameters of the reference tests.
pub(crate) const CDNOW: BgNbdParams = BgNbdParams {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};

/// Customers of the reference tests, as (x, t_x, T, weight).
pub(crate) const CUSTOMERS: [(f64, f64, f64, f64); 8] = [
    (0.0, 0.0, 38.86, 3.0),
    (1.0, 30.43, 38.86, 1.0),
    (2.0, 1.71, 38.86, 2.0),
    (5.0, 10.0, 40.0, 1.0),
    (10.0, 35.0, 38.5, 1.0),
    (3.0, 20.5, 39.0, 4.0),
    (0.0, 0.0, 5.0, 1.0),
    (300.0, 2990.0, 3000.0, 1.0),
];

/// [`Rfm`] rows from (x, t_x, T, weight) tuples.
pub(crate) fn rfm(rows: &[(f64, f64, f64, f64)]) -> Vec<Rfm> {
    rows.iter()
        .map(|&(frequency, recency, t, weight)| Rfm {
            frequency,
            recency,
            t,
            weight,
        })
        .collect()
}

/// BG/NBD simulation: λ ~ Gamma(r, 1/α) per week, p ~ Beta(a, b); purchases
/// form a Poisson process from the first purchase at 0; after each repeat
/// purchase the customer drops out with probability p. T is a whole number
/// of days in 30..=max_days and t_x is rounded to the nearest day (rounding
/// up instead biases α upwards by ~0.8 standard errors); times in weeks.
pub(crate) fn simulate_bgnbd(n: usize, truth: &BgNbdParams, seed: u64, max_days: u64) -> Vec<Rfm> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let gamma = Gamma::new(truth.r, 1.0 / truth.alpha).unwrap();
    let beta = Beta::new(truth.a, truth.b).unwrap();
    let mut counts: BTreeMap<(u64, u64, u64), f64> = BTreeMap::new();
    for _ in 0..n {
        let lambda: f64 = gamma.sample(&mut rng);
        let p: f64 = beta.sample(&mut rng);
        let t_days: u64 = rng.gen_range(30..=max_days);
        let t_weeks = t_days as f64 / 7.0;
        let (mut t, mut x, mut tx) = (0.0f64, 0u64, 0.0f64);
        loop {
            let u: f64 = rng.r#gen();
            t += -(-u).ln_1p() / lambda;
            if t > t_weeks {
                break;
            }
            x += 1;
            tx = t;
            if rng.r#gen::<f64>() < p {
                break;
            }
        }
        let tx_days = if x > 0 {
            ((tx * 7.0).round() as u64).min(t_days)
        } else {
            0
        };
        *counts.entry((x, tx_days, t_days)).or_default() += 1.0;
    }
    counts
        .into_iter()
        .map(|((x, txd, td), w)| Rfm {
            frequency: x as f64,
            recency: txd as f64 / 7.0,
            t: td as f64 / 7.0,
            weight: w,
        })
        .collect()
}

/// (x, t_x, T) in days -> weighted rows in weeks.
fn weekly(counts: BTreeMap<(u64, u64, u64), f64>) -> Vec<Rfm> {
    counts
        .into_iter()
        .map(|((x, txd, td), w)| Rfm {
            frequency: x as f64,
            recency: txd as f64 / 7.0,
            t: td as f64 / 7.0,
            weight: w,
        })
        .collect()
}

/// The last purchase time in days, rounded to the nearest day (0 for x = 0).
fn day_of(x: u64, tx_weeks: f64, t_days: u64) -> u64 {
    if x > 0 {
        ((tx_weeks * 7.0).round() as u64).min(t_days)
    } else {
        0
    }
}

/// MBG/NBD simulation as [`simulate_bgnbd`], except that the customer may
/// also drop out (probability p) right after the first purchase at 0.
pub(crate) fn simulate_mbgnbd(n: usize, truth: &BgNbdParams, seed: u64, max_days: u64) -> Vec<Rfm> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let gamma = Gamma::new(truth.r, 1.0 / truth.alpha).unwrap();
    let beta = Beta::new(truth.a, truth.b).unwrap();
    let mut counts: BTreeMap<(u64, u64, u64), f64> = BTreeMap::new();
    for _ in 0..n {
        let lambda: f64 = gamma.sample(&mut rng);
        let p: f64 = beta.sample(&mut rng);
        let t_days: u64 = rng.gen_range(30..=max_days);
        let t_weeks = t_days as f64 / 7.0;
        let (mut t, mut x, mut tx) = (0.0f64, 0u64, 0.0f64);
        while rng.r#gen::<f64>() >= p {
            let u: f64 = rng.r#gen();
            t += -(-u).ln_1p() / lambda;
            if t > t_weeks {
                break;
            }
            x += 1;
            tx = t;
        }
        *counts.entry((x, day_of(x, tx, t_days), t_days)).or_default() += 1.0;
    }
    weekly(counts)
}

/// Pareto/NBD simulation: λ ~ Gamma(r, 1/α), μ ~ Gamma(s, 1/β) per week; a
/// lifetime τ ~ Exponential(μ) from the first purchase at 0, purchases a
/// Poisson process at rate λ until min(τ, T); T and t_x in days as in
/// [`simulate_bgnbd`].
pub(crate) fn simulate_pareto_nbd(
    n: usize,
    truth: &super::pareto_nbd::ParetoNbdParams,
    seed: u64,
    max_days: u64,
) -> Vec<Rfm> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let gamma_l = Gamma::new(truth.r, 1.0 / truth.alpha).unwrap();
    let gamma_m = Gamma::new(truth.s, 1.0 / truth.beta).unwrap();
    let mut counts: BTreeMap<(u64, u64, u64), f64> = BTreeMap::new();
    for _ in 0..n {
        let lambda: f64 = gamma_l.sample(&mut rng);
        let mu: f64 = gamma_m.sample(&mut rng);
        let t_days: u64 = rng.gen_range(30..=max_days);
        let u: f64 = rng.r#gen();
        let end = (-(-u).ln_1p() / mu).min(t_days as f64 / 7.0);
        let (mut t, mut x, mut tx) = (0.0f64, 0u64, 0.0f64);
        loop {
            let u: f64 = rng.r#gen();
            t += -(-u).ln_1p() / lambda;
            if t > end {
                break;
            }
            x += 1;
            tx = t;
        }
        *counts.entry((x, day_of(x, tx, t_days), t_days)).or_default() += 1.0;
    }
    weekly(counts)
}

/// Asserts that the analytic gradient of `obj` at `theta` matches central
/// differences of its value.
pub(crate) fn check_gradient<O: Objective>(obj: &O, theta: &[f64]) {
    let n = obj.dim();
    let mut g = vec![0.0; n];
    obj.eval(theta, &mut g);
    let mut tmp = vec![0.0; n];
    for i in 0..n {
        let h = 1e-6;
        let mut tp = theta.to_vec();
        tp[i] += h;
        let mut tm = theta.to_vec();
        tm[i] -= h;
        let num = (obj.eval(&tp, &mut tmp) - obj.eval(&tm, &mut tmp)) / (2.0 * h);
        assert!(
            (num - g[i]).abs() <= 1e-6 * (1.0 + g[i].abs()),
            "d/dθ{i}: analytic {} numeric {num}",
            g[i]
        );
    }
}
