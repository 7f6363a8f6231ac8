//! The Pareto/NBD purchase model (Schmittlein, Morrison & Colombo 1987,
//! "Counting Your Customers: Who Are They and What Will They Do Next?",
//! Management Science 33(1)), with the likelihood of Fader & Hardie's
//! notes "A Note on Deriving the Pareto/NBD Model and Related Expressions"
//! (2005) and "Implementing the Pareto/NBD Model Using Excel":
//! purchases Poisson(λ) while alive, lifetimes Exponential(μ), λ ~ Gamma(r, α),
//! μ ~ Gamma(s, β).
//!
//! L = Γ(r+x) α^r β^s / Γ(r) · [(α+T)^-(r+x) (β+T)^-s + s/(r+s+x) A0], where
//! A0 = G(t_x) - G(T) and, for α >= β,
//! G(t) = 2F1(r+s+x, s+1; r+s+x+1; (α-β)/(α+t)) / (α+t)^(r+s+x)
//! (for α < β the same with (α, r+x) and (β, s+1) exchanged). A0 is
//! (r+s+x)/s · ∫_{t_x}^T (α+τ)^-(r+x) (β+τ)^-(s+1) dτ, the "died between t_x
//! and T" term.
//!
//! Numerics: with Euler's transformation 2F1(a,b;c;z) = (1-z)^(c-a-b)
//! 2F1(c-a,c-b;c;z), G(t) = (α+t)^-(r+x) (β+t)^-s K(t), with
//! K = 2F1(1, r+x; r+s+x+1; z) (α >= β) or ((α+t)/(β+t)) 2F1(1, s+1; r+s+x+1; z)
//! (α < β), z in [0, 1): a series of positive terms whose ratio is below z,
//! so no cancellation, no overflow for large x or T, and nothing special at
//! α = β (z = 0, K = 1). Everything is kept in logs; A0 is G(t_x) (1 - e^(ln G(T) - ln G(t_x))).
//! Close to z = 1 (more than 20000 terms) [`ln_hyp2f1`] takes over.
//!
//! The fit, with the analytic gradient of this likelihood, is in
//! [`super::pareto_nbd_fit`].
//!
//! P(alive | x, t_x, T) = 1 / (1 + s/(r+s+x) (α+T)^(r+x) (β+T)^s A0) and
//! E[Y(t) | alive] = (r+x)(β+T) / ((α+T)(s-1)) [1 - ((β+T)/(β+T+t))^(s-1)]
//! (Fader & Hardie's note, eqs. (16)-(18); at s = 1 the limit (r+x)(β+T)/(α+T) ln(1 + t/(β+T))).

use super::data::Rfm;
use super::special::{ln_gamma, ln_hyp2f1, log_add_exp, softplus_sigmoid};

/// Pareto/NBD parameters: λ ~ Gamma(shape r, rate α), μ ~ Gamma(shape s,
/// rate β); `alpha` and `beta` are in the time unit of the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParetoNbdParams {
    /// Shape of the gamma distribution of purchase rates.
    pub r: f64,
    /// Rate of the gamma distribution of purchase rates.
    pub alpha: f64,
    /// Shape of the gamma distribution of dropout rates.
    pub s: f64,
    /// Rate of the gamma distribution of dropout rates.
    pub beta: f64,
}

fn valid(x: f64, t_x: f64, t: f64) -> bool {
    x.is_finite() && t_x.is_finite() && t.is_finite() && (x == 0.0 || x >= 1.0) && t_x >= 0.0 && t >= t_x
}

/// ln 2F1(1, b; c; z) for 0 <= z < 1 and c > b > 0: the series of positive
/// terms (ratio (b+n)/(c+n) z < z), or [`ln_hyp2f1`] when it is long.
fn ln_f1(b: f64, c: f64, z: f64) -> f64 {
    if z == 0.0 {
        return 0.0;
    }
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for n in 0..20_000 {
        let nf = n as f64;
        let ratio = (b + nf) / (c + nf) * z;
        term *= ratio;
        sum += term;
        // the remaining terms are below term · ratio / (1 - z)
        if term * z <= 1e-17 * sum * (1.0 - z) {
            return sum.ln();
        }
    }
    ln_hyp2f1(1.0, b, c, z).0
}

/// ln G(t) (see the module documentation), for one customer's x.
fn ln_g(p: &ParetoNbdParams, x: f64, t: f64) -> f64 {
    let ParetoNbdParams { r, alpha, s, beta } = *p;
    let (la, lb) = ((alpha + t).ln(), (beta + t).ln());
    let c = r + s + x + 1.0;
    let ln_k = if alpha >= beta {
        ln_f1(r + x, c, (alpha - beta) / (alpha + t))
    } else {
        la - lb + ln_f1(s + 1.0, c, (beta - alpha) / (beta + t))
    };
    -(r + x) * la - s * lb + ln_k
}

/// (ln of the "alive at T" term, ln of the "died in (t_x, T)" term) of the
/// bracket of the likelihood; the second is -inf when t_x = T.
fn ln_terms(p: &ParetoNbdParams, x: f64, t_x: f64, t: f64) -> (f64, f64) {
    let ParetoNbdParams { r, alpha, s, beta } = *p;
    let alive = -(r + x) * (alpha + t).ln() - s * (beta + t).ln();
    let (g_tx, g_t) = (ln_g(p, x, t_x), ln_g(p, x, t));
    let d = g_t - g_tx;
    let dead = if d < 0.0 {
        (s / (r + s + x)).ln() + g_tx + (-d.exp_m1()).ln()
    } else {
        f64::NEG_INFINITY
    };
    (alive, dead)
}

/// ln L(r, α, s, β | x, t_x, T) of one customer (t_x taken as 0 for x = 0).
pub fn pareto_nbd_ll_one(p: &ParetoNbdParams, x: f64, t_x: f64, t: f64) -> f64 {
    let t_x = if x > 0.0 { t_x } else { 0.0 };
    let (alive, dead) = ln_terms(p, x, t_x, t);
    ln_gamma(p.r + x) - ln_gamma(p.r) + p.r * p.alpha.ln() + p.s * p.beta.ln() + log_add_exp(alive, dead)
}

/// Weighted Pareto/NBD log-likelihood Σ weight · ln L over `data` (rows
/// with weight 0 skipped), summed in the order given.
pub fn pareto_nbd_log_likelihood(p: &ParetoNbdParams, data: &[Rfm]) -> f64 {
    let mut ll = 0.0;
    for d in data {
        if d.weight != 0.0 {
            ll += d.weight * pareto_nbd_ll_one(p, d.frequency, d.recency, d.t);
        }
    }
    ll
}

/// P(alive | x, t_x, T), as a logistic function of the log odds of the
/// "died in (t_x, T)" term against the "alive" term. NaN for invalid input.
pub fn pareto_nbd_p_alive(p: &ParetoNbdParams, x: f64, t_x: f64, t: f64) -> f64 {
    let t_x = if x > 0.0 { t_x } else { 0.0 };
    if !valid(x, t_x, t) {
        return f64::NAN;
    }
    if t == 0.0 {
        return 1.0;
    }
    let (alive, dead) = ln_terms(p, x, t_x, t);
    softplus_sigmoid(alive - dead).1
}

/// E[Y(horizon)] of a customer alive at T:
/// (r+x)/(α+T) · (β+T) (1 - ((β+T)/(β+T+h))^(s-1)) / (s-1).
pub fn pareto_nbd_expected_purchases_if_alive(p: &ParetoNbdParams, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
    let t_x = if x > 0.0 { t_x } else { 0.0 };
    if !valid(x, t_x, t) || !horizon.is_finite() || horizon < 0.0 {
        return f64::NAN;
    }
    let u = (horizon / (p.beta + t)).ln_1p();
    let q = (p.s - 1.0) * u;
    // (1 - e^-q) / (s - 1), → u as s → 1
    let f = if q.abs() < 1e-8 {
        u * (1.0 - 0.5 * q)
    } else {
        -(-q).exp_m1() / (p.s - 1.0)
    };
    (p.r + x) / (p.alpha + t) * (p.beta + t) * f
}

/// Conditional expected repeat purchases in (T, T + horizon]:
/// P(alive) · E[Y(horizon) | alive].
pub fn pareto_nbd_expected_purchases(p: &ParetoNbdParams, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
    pareto_nbd_p_alive(p, x, t_x, t) * pareto_nbd_expected_purchases_if_alive(p, horizon, x, t_x, t)
}

/// The row likelihood for `fit::NumericObjective`, the central-difference
/// reference of the analytic gradient of `pareto_nbd_fit`.
#[cfg(test)]
pub(crate) struct ParetoNbd;

#[cfg(test)]
impl super::fit::RowLikelihood for ParetoNbd {
    const DIM: usize = 4;
    fn log_likelihood(&self, v: &[f64], rows: &[Rfm]) -> f64 {
        let p = ParetoNbdParams {
            r: v[0],
            alpha: v[1],
            s: v[2],
            beta: v[3],
        };
        pareto_nbd_log_likelihood(&p, rows)
    }
}
