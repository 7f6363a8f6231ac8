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

/// Horizons whose series run together on the stack; longer lists go in
/// chunks of this many (each horizon's series is independent of the others,
/// so chunking changes no value).
const LANES: usize = 16;

/// [`expected_purchases_if_alive`] at every horizon of `horizons`, in order,
/// into `out` (as long as `horizons`), without allocating: what scoring
/// calls once per customer.
pub fn expected_purchases_if_alive_into(p: &BgNbdParams, horizons: &[f64], x: f64, t_x: f64, t: f64, out: &mut [f64]) {
    debug_assert_eq!(horizons.len(), out.len());
    if !rfm_valid(x, t_x, t) || horizons.iter().any(|h| !h.is_finite() || *h <= 0.0) {
        // The rare cases (invalid input, a zero horizon) one by one.
        for (o, h) in out.iter_mut().zip(horizons) {
            *o = expected_purchases_if_alive(p, *h, x, t_x, t);
        }
        return;
    }
    for (h, o) in horizons.chunks(LANES).zip(out.chunks_mut(LANES)) {
        numerators(p, h, x, t, o);
    }
}

/// The numerator of eq. (10) for at most [`LANES`] valid horizons, clamped
/// to [0, (r+x) s]: the short ones (s = h/(α+T) <= 1/2) by the Pfaff series,
/// the others (and the short ones it gives up on) by the Euler series, the
/// rest by the slow path [`numerator_hyp`].
pub(super) fn numerators(p: &BgNbdParams, horizons: &[f64], x: f64, t: f64, out: &mut [f64]) {
    let BgNbdParams { r, alpha, a, b } = *p;
    let m = horizons.len();
    let mut s = [0.0f64; LANES];
    for (sj, h) in s.iter_mut().zip(horizons) {
        *sj = h / (alpha + t);
    }
    let mut got: [Option<f64>; LANES] = [None; LANES];
    // The horizons of each series, packed.
    let (mut idx, mut sub, mut vals) = ([0usize; LANES], [0.0f64; LANES], [None; LANES]);
    let mut n = 0;
    for j in 0..m {
        if s[j] <= 0.5 {
            (idx[n], sub[n]) = (j, s[j]);
            n += 1;
        }
    }
    pfaff_into(r, a, b, x, &sub[..n], &mut vals[..n]);
    for i in 0..n {
        got[idx[i]] = vals[i];
    }
    n = 0;
    for j in 0..m {
        if got[j].is_none() {
            (idx[n], sub[n]) = (j, s[j]);
            n += 1;
        }
    }
    series_into(r, a, b, x, &sub[..n], &mut vals[..n]);
    for i in 0..n {
        got[idx[i]] = vals[i];
    }
    let k = r + x;
    for j in 0..m {
        let v = got[j].unwrap_or_else(|| numerator_hyp(r, a, b, x, s[j], 0));
        let upper = k * s[j];
        out[j] = if v.is_finite() { v.clamp(0.0, upper) } else { v };
    }
}

/// The Pfaff form for at most [`LANES`] values of s (each <= 1/2), into
/// `out`: with (1-z)^(r+x) 2F1(r+x, b+x; c; z) = 2F1(r+x, a-1; c; -s), the
/// numerator is (r+x) s 3F2(r+x+1, a, 1; c+1, 2; -s), an alternating series
/// with no cancellation against the leading 1. `None` where it gives up.
fn pfaff_into(r: f64, a: f64, b: f64, x: f64, s: &[f64], out: &mut [Option<f64>]) {
    let k = r + x;
    let c = a + b + x - 1.0;
    let m = s.len();
    let (mut term, mut sum, mut sum_abs) = ([1.0f64; LANES], [1.0f64; LANES], [1.0f64; LANES]);
    let mut steps = [0usize; LANES];
    // None: running; Some(true): converged; Some(false): gave up.
    let mut done: [Option<bool>; LANES] = [None; LANES];
    let mut running = m;
    let mut n = 0usize;
    while running > 0 {
        let nf = n as f64;
        let coef = -(k + 1.0 + nf) * (a + nf) / ((c + 1.0 + nf) * (nf + 2.0));
        for j in 0..m {
            if done[j].is_some() {
                continue;
            }
            if n >= SERIES_BUDGET {
                done[j] = Some(false);
                running -= 1;
                continue;
            }
            let ratio = coef * s[j];
            term[j] *= ratio;
            steps[j] = n + 1;
            sum[j] += term[j];
            sum_abs[j] += term[j].abs();
            if !sum_abs[j].is_finite() {
                done[j] = Some(false);
                running -= 1;
                continue;
            }
            let rho = ratio.abs().max(s[j]);
            if rho < 1.0 && term[j].abs() * rho <= 0.25 * EPS * sum[j].abs() * (1.0 - rho) && ratio.abs() < 1.0 {
                done[j] = Some(true);
                running -= 1;
            }
        }
        n += 1;
    }
    for j in 0..m {
        out[j] = if done[j] != Some(true)
            || sum[j].is_nan()
            || sum[j] <= 0.0
            || EPS * (sum_abs[j] / sum[j]) * (4.0 + (steps[j] as f64).sqrt()) > 1e-12
        {
            None
        } else {
            Some(k * s[j] * sum[j])
        };
    }
}

/// The cancellation-free Euler form for at most [`LANES`] values of s, into
/// `out`; `None` where it gives up.
fn series_into(r: f64, a: f64, b: f64, x: f64, s: &[f64], out: &mut [Option<f64>]) {
    let c = a + b + x - 1.0;
    let big_a = a + b - 1.0 - r;
    let am1 = a - 1.0;
    let n_min = (-big_a).max(0.0).ceil() + 2.0;
    let m = s.len();
    let mut z = [0.0f64; LANES];
    let (mut term, mut sum, mut sum_abs) = ([0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES]);
    for j in 0..m {
        z[j] = s[j] / (1.0 + s[j]);
        term[j] = big_a * z[j];
        sum[j] = term[j];
        sum_abs[j] = term[j].abs();
    }
    let mut steps = [1usize; LANES];
    let mut done: [Option<bool>; LANES] = [None; LANES];
    let mut running = m;
    let mut n = 1usize;
    while running > 0 {
        let nf = n as f64;
        let coef = (big_a + nf) * (a + nf - 1.0) / ((c + nf) * (nf + 1.0));
        for j in 0..m {
            if done[j].is_some() {
                continue;
            }
            if n > SERIES_BUDGET {
                done[j] = Some(false);
                running -= 1;
                continue;
            }
            let ratio = coef * z[j];
            term[j] *= ratio;
            steps[j] = n + 1;
            if term[j] == 0.0 {
                done[j] = Some(true);
                running -= 1;
                continue;
            }
            sum[j] += term[j];
            let at = term[j].abs();
            sum_abs[j] += at;
            if !sum_abs[j].is_finite() {
                done[j] = Some(false);
                running -= 1;
                continue;
            }
            if nf >= n_min {
                let rho = ratio.abs().max(z[j]);
                if rho < 1.0 && at * rho <= 0.25 * EPS * sum_abs[j] * (1.0 - rho) {
                    done[j] = Some(true);
                    running -= 1;
                }
            }
        }
        n += 1;
    }
    for j in 0..m {
        out[j] = if done[j] != Some(true) {
            None
        } else {
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
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_purchases_if_alive_at(p: &BgNbdParams, horizons: &[f64], x: f64, t_x: f64, t: f64) -> Vec<f64> {
        let mut out = vec![0.0; horizons.len()];
        expected_purchases_if_alive_into(p, horizons, x, t_x, t, &mut out);
        out
    }

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
            // More horizons than one chunk of lanes.
            .chain((1..=20).map(|j| j as f64 * 13.0))
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
        assert_eq!(compared, 6 * 9 * 36);
    }
}
