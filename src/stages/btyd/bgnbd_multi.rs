//! E[Y(t) | alive] of one BG/NBD customer at several horizons at once, for
//! scoring (the discounted CLV needs it at the end of every month of the
//! horizon). The hypergeometric series of [`super::bgnbd`] have term ratios
//! `coef(n) · s` (or `· z`) whose coefficient depends on the parameters and
//! the customer only, so one pass computes each coefficient once and steps
//! every horizon's series with it; each series keeps its own terms, sums and
//! stopping rule. The one-horizon function
//! [`super::bgnbd::expected_purchases_if_alive`] runs the same series with a
//! single horizon, so the values are bit-identical to it, as the tests check;
//! a horizon whose fast series gives up falls back to the same paths as
//! there.

use super::bgnbd::{BgNbdParams, expected_purchases_if_alive, numerator_hyp, rfm_valid};
use super::special::{EPS, SERIES_BUDGET};

/// [`expected_purchases_if_alive`] at every horizon of `horizons`, in order.
pub fn expected_purchases_if_alive_at(p: &BgNbdParams, horizons: &[f64], x: f64, t_x: f64, t: f64) -> Vec<f64> {
    if !rfm_valid(x, t_x, t) || horizons.iter().any(|h| !h.is_finite() || *h <= 0.0) {
        // The rare cases (invalid input, a zero horizon) one by one.
        return horizons
            .iter()
            .map(|h| expected_purchases_if_alive(p, *h, x, t_x, t))
            .collect();
    }
    let BgNbdParams { r, alpha, a, b } = *p;
    let s: Vec<f64> = horizons.iter().map(|h| h / (alpha + t)).collect();
    let mut out: Vec<Option<f64>> = vec![None; s.len()];
    let short: Vec<usize> = (0..s.len()).filter(|&j| s[j] <= 0.5).collect();
    for (j, v) in short
        .iter()
        .zip(pfaff(r, a, b, x, &short.iter().map(|&j| s[j]).collect::<Vec<_>>()))
    {
        out[*j] = v;
    }
    let rest: Vec<usize> = (0..s.len()).filter(|&j| out[j].is_none()).collect();
    for (j, v) in rest
        .iter()
        .zip(series(r, a, b, x, &rest.iter().map(|&j| s[j]).collect::<Vec<_>>()))
    {
        out[*j] = v;
    }
    let k = r + x;
    out.iter()
        .zip(&s)
        .map(|(v, &sj)| {
            let v = v.unwrap_or_else(|| numerator_hyp(r, a, b, x, sj, 0));
            let upper = k * sj;
            if v.is_finite() { v.clamp(0.0, upper) } else { v }
        })
        .collect()
}

/// The Pfaff-form series of `numerator_pfaff` for every s (each <= 1/2).
pub(super) fn pfaff(r: f64, a: f64, b: f64, x: f64, s: &[f64]) -> Vec<Option<f64>> {
    let k = r + x;
    let c = a + b + x - 1.0;
    let m = s.len();
    let (mut term, mut sum, mut sum_abs) = (vec![1.0f64; m], vec![1.0f64; m], vec![1.0f64; m]);
    let mut steps = vec![0usize; m];
    // None: running; Some(true): converged; Some(false): gave up.
    let mut done: Vec<Option<bool>> = vec![None; m];
    let mut n = 0usize;
    while done.iter().any(Option::is_none) {
        let nf = n as f64;
        let coef = -(k + 1.0 + nf) * (a + nf) / ((c + 1.0 + nf) * (nf + 2.0));
        for j in 0..m {
            if done[j].is_some() {
                continue;
            }
            if n >= SERIES_BUDGET {
                done[j] = Some(false);
                continue;
            }
            let ratio = coef * s[j];
            term[j] *= ratio;
            steps[j] = n + 1;
            sum[j] += term[j];
            sum_abs[j] += term[j].abs();
            if !sum_abs[j].is_finite() {
                done[j] = Some(false);
                continue;
            }
            let rho = ratio.abs().max(s[j]);
            if rho < 1.0 && term[j].abs() * rho <= 0.25 * EPS * sum[j].abs() * (1.0 - rho) && ratio.abs() < 1.0 {
                done[j] = Some(true);
            }
        }
        n += 1;
    }
    (0..m)
        .map(|j| {
            if done[j] != Some(true)
                || sum[j].is_nan()
                || sum[j] <= 0.0
                || EPS * (sum_abs[j] / sum[j]) * (4.0 + (steps[j] as f64).sqrt()) > 1e-12
            {
                None
            } else {
                Some(k * s[j] * sum[j])
            }
        })
        .collect()
}

/// The Euler-form series of `numerator_series` for every s.
pub(super) fn series(r: f64, a: f64, b: f64, x: f64, s: &[f64]) -> Vec<Option<f64>> {
    let c = a + b + x - 1.0;
    let big_a = a + b - 1.0 - r;
    let am1 = a - 1.0;
    let n_min = (-big_a).max(0.0).ceil() + 2.0;
    let m = s.len();
    let z: Vec<f64> = s.iter().map(|s| s / (1.0 + s)).collect();
    let mut term: Vec<f64> = z.iter().map(|z| big_a * z).collect();
    let mut sum = term.clone();
    let mut sum_abs: Vec<f64> = term.iter().map(|t| t.abs()).collect();
    let mut steps = vec![1usize; m];
    let mut done: Vec<Option<bool>> = vec![None; m];
    let mut n = 1usize;
    while done.iter().any(Option::is_none) {
        let nf = n as f64;
        let coef = (big_a + nf) * (a + nf - 1.0) / ((c + nf) * (nf + 1.0));
        for j in 0..m {
            if done[j].is_some() {
                continue;
            }
            if n > SERIES_BUDGET {
                done[j] = Some(false);
                continue;
            }
            let ratio = coef * z[j];
            term[j] *= ratio;
            steps[j] = n + 1;
            if term[j] == 0.0 {
                done[j] = Some(true);
                continue;
            }
            sum[j] += term[j];
            let at = term[j].abs();
            sum_abs[j] += at;
            if !sum_abs[j].is_finite() {
                done[j] = Some(false);
                continue;
            }
            if nf >= n_min {
                let rho = ratio.abs().max(z[j]);
                if rho < 1.0 && at * rho <= 0.25 * EPS * sum_abs[j] * (1.0 - rho) {
                    done[j] = Some(true);
                }
            }
        }
        n += 1;
    }
    (0..m)
        .map(|j| {
            if done[j] != Some(true) {
                return None;
            }
            let l = -s[j].ln_1p();
            let e1 = if am1 == 0.0 { -l } else { -(am1 * l).exp_m1() / am1 };
            let pre = (am1 * l).exp();
            let first = c * e1;
            let second = pre * sum[j];
            let num = first - second;
            let scale = first.abs() + pre * sum_abs[j];
            if !(num.is_finite() && num > 0.0) || scale * EPS * (4.0 + (steps[j] as f64).sqrt()) > 1e-11 * num {
                None
            } else {
                Some(num)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit for bit the one-horizon function, over parameters from small to
    /// large, customers from new to long-standing, horizons from a day to
    /// ten years (the short Pfaff series, the Euler series, and the slow
    /// path at a = 1 exactly and near it).
    #[test]
    fn equals_the_one_horizon_function_bit_for_bit() {
        let params = [
            (0.243, 4.414, 0.793, 2.426),
            (1.09, 4.17, 3.41, 59.37),
            (0.5, 0.3, 1.0, 2.0),
            (2.0, 10.0, 1.0004, 0.7),
            (0.05, 80.0, 12.0, 0.2),
            (5.0, 1.5, 0.4, 300.0),
        ];
        let customers = [
            (0.0, 0.0, 0.5),
            (0.0, 0.0, 78.0),
            (1.0, 30.0, 38.9),
            (2.0, 0.29, 38.86),
            (14.0, 35.0, 39.0),
            (120.0, 500.0, 520.0),
            (3.0, 2.0, 1.0),
            (0.5, 1.0, 2.0),
            (f64::NAN, 1.0, 2.0),
        ];
        let horizons: Vec<f64> = (1..=12)
            .map(|j| j as f64 * 4.348)
            .chain([0.14, 52.0, 520.0, 5200.0])
            .collect();
        let mut compared = 0;
        for (r, alpha, a, b) in params {
            let p = BgNbdParams { r, alpha, a, b };
            for (x, t_x, t) in customers {
                let got = expected_purchases_if_alive_at(&p, &horizons, x, t_x, t);
                for (h, g) in horizons.iter().zip(&got) {
                    let want = expected_purchases_if_alive(&p, *h, x, t_x, t);
                    assert_eq!(
                        g.to_bits(),
                        want.to_bits(),
                        "{p:?} x={x} t_x={t_x} T={t} h={h}: {g} vs {want}"
                    );
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 6 * 9 * 16);
    }
}
