//! The modified BG/NBD purchase model (Batislam, Denizel & Filiztekin 2007,
//! "Empirical validation and comparison of models for customer base
//! analysis", IJRM 24(3)): as BG/NBD, but a customer may also drop out right
//! after the first purchase (with the same probability p as after every
//! repeat purchase), so a one-time buyer can be dead.
//!
//! For a customer with x repeat purchases, the last at t_x, observed to T
//! (λ ~ Gamma(r, α), p ~ Beta(a, b)):
//!
//! * L(λ, p) = (1-p)^x λ^x [(1-p) e^(-λT) + p e^(-λ t_x)] (alive through T,
//!   or dropped right after the purchase at t_x; t_x = 0 for x = 0), so
//!   L = B(a, b+x+1)/B(a, b) · Γ(r+x) α^r / Γ(r) · [(α+T)^-(r+x) + a/(b+x) (α+t_x)^-(r+x)],
//!   evaluated as A1 + A2 + ln(e^A3 + e^A4) as in `lifetimes`'
//!   `ModifiedBetaGeoFitter`;
//! * P(alive | x, t_x, T) = 1 / (1 + a/(b+x) ((α+T)/(α+t_x))^(r+x)), also for x = 0;
//! * given alive at T, p ~ Beta(a, b+x+1), so E[Y(t) | alive] is the BG/NBD
//!   one with b + 1 in place of b: (a+b+x)/(a-1) [1 - ((α+T)/(α+T+t))^(r+x)
//!   2F1(r+x, b+x+1; a+b+x; t/(α+T+t))] (`lifetimes`' expression), computed
//!   by the cancellation-free BG/NBD numerator.
//!
//! The parameters are a [`BgNbdParams`] (same meaning). The fit, with the
//! analytic gradient of this likelihood, is in [`super::mbgnbd_fit`].

use super::bgnbd::{BgNbdParams, expected_purchases_if_alive as bg_if_alive};
use super::data::Rfm;
use super::special::{ln_gamma, log_add_exp, softplus_sigmoid};

fn valid(x: f64, t_x: f64, t: f64) -> bool {
    x.is_finite() && t_x.is_finite() && t.is_finite() && (x == 0.0 || x >= 1.0) && t_x >= 0.0 && t >= t_x
}

/// ln L(r, α, a, b | x, t_x, T) of one customer (t_x taken as 0 for x = 0).
pub fn mbgnbd_ll_one(p: &BgNbdParams, x: f64, t_x: f64, t: f64) -> f64 {
    let BgNbdParams { r, alpha, a, b } = *p;
    let t_x = if x > 0.0 { t_x } else { 0.0 };
    let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
    let a2 = ln_gamma(a + b) + ln_gamma(b + x + 1.0) - ln_gamma(b) - ln_gamma(a + b + x + 1.0);
    let a3 = -(r + x) * (alpha + t).ln();
    let a4 = a.ln() - (b + x).ln() - (r + x) * (alpha + t_x).ln();
    a1 + a2 + log_add_exp(a3, a4)
}

/// Weighted MBG/NBD log-likelihood Σ weight · ln L over `data` (rows with
/// weight 0 skipped), summed in the order given.
pub fn mbgnbd_log_likelihood(p: &BgNbdParams, data: &[Rfm]) -> f64 {
    let mut ll = 0.0;
    for d in data {
        if d.weight != 0.0 {
            ll += d.weight * mbgnbd_ll_one(p, d.frequency, d.recency, d.t);
        }
    }
    ll
}

/// P(alive | x, t_x, T) = 1 / (1 + a/(b+x) ((α+T)/(α+t_x))^(r+x)), as a
/// logistic function of the log odds (t_x taken as 0 for x = 0). NaN for
/// invalid input.
pub fn mbgnbd_p_alive(p: &BgNbdParams, x: f64, t_x: f64, t: f64) -> f64 {
    let t_x = if x > 0.0 { t_x } else { 0.0 };
    if !valid(x, t_x, t) {
        return f64::NAN;
    }
    let log_odds_dead = (p.r + x) * ((t - t_x) / (p.alpha + t_x)).ln_1p() + p.a.ln() - (p.b + x).ln();
    softplus_sigmoid(-log_odds_dead).1
}

/// E[Y(horizon)] of a customer alive at T: the BG/NBD expression with b + 1.
pub fn mbgnbd_expected_purchases_if_alive(p: &BgNbdParams, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
    let t_x = if x > 0.0 { t_x } else { 0.0 };
    if !valid(x, t_x, t) {
        return f64::NAN;
    }
    bg_if_alive(&BgNbdParams { b: p.b + 1.0, ..*p }, horizon, x, t_x, t)
}

/// Conditional expected repeat purchases in (T, T + horizon]:
/// P(alive) · E[Y(horizon) | alive].
pub fn mbgnbd_expected_purchases(p: &BgNbdParams, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
    mbgnbd_p_alive(p, x, t_x, t) * mbgnbd_expected_purchases_if_alive(p, horizon, x, t_x, t)
}

/// The row likelihood for `fit::NumericObjective`, the central-difference
/// reference of the analytic gradient of `mbgnbd_fit`.
#[cfg(test)]
pub(crate) struct MbgNbd;

#[cfg(test)]
impl super::fit::RowLikelihood for MbgNbd {
    const DIM: usize = 4;
    /// As [`mbgnbd_log_likelihood`], with the terms that depend on x only
    /// computed once per run of equal x (the rows come sorted by x).
    fn log_likelihood(&self, v: &[f64], rows: &[Rfm]) -> f64 {
        let (r, alpha, a, b) = (v[0], v[1], v[2], v[3]);
        let base = ln_gamma(a + b) - ln_gamma(b) - ln_gamma(r) + r * alpha.ln();
        let ln_a = a.ln();
        let mut cur = f64::NAN;
        let (mut c, mut k4) = (0.0, 0.0);
        let mut ll = 0.0;
        for d in rows {
            let x = d.frequency;
            if x != cur {
                cur = x;
                c = base + ln_gamma(r + x) + ln_gamma(b + x + 1.0) - ln_gamma(a + b + x + 1.0);
                k4 = ln_a - (b + x).ln();
            }
            let t_x = if x > 0.0 { d.recency } else { 0.0 };
            let a3 = -(r + x) * (alpha + d.t).ln();
            let a4 = k4 - (r + x) * (alpha + t_x).ln();
            ll += d.weight * (c + log_add_exp(a3, a4));
        }
        ll
    }
}
