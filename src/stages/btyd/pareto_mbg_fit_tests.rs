//! Fits of the Pareto/NBD and MBG/NBD models: parameter recovery on data
//! simulated from each model, the reference optimum of
//! tests/reference/btyd_pareto_mbg.py (`fit600`), input errors, and the
//! grouped MBG/NBD objective.

#![allow(clippy::excessive_precision)]

use super::bgnbd::BgNbdParams;
use super::data::{Fit, FitError};
use super::mbgnbd::*;
use super::mbgnbd_fit::fit_mbgnbd;
use super::pareto_nbd::*;
use super::pareto_nbd_fit::fit_pareto_nbd;
use super::test_support::{assert_rel, rfm, simulate_mbgnbd, simulate_pareto_nbd};

fn recovered<P: std::fmt::Debug>(fit: &Fit<P>, got: [f64; 4], se: [f64; 4], truth: [f64; 4], names: [&str; 4]) {
    eprintln!(
        "fitted {:?}\n  se {:?}\n  iterations {}, converged {}",
        fit.params, fit.std_errors, fit.iterations, fit.converged
    );
    assert!(fit.converged);
    for i in 0..4 {
        let (g, s, w, name) = (got[i], se[i], truth[i], names[i]);
        assert!(s.is_finite() && s > 0.0, "{name}: se {s}");
        assert!((g - w).abs() <= 4.0 * s, "{name}: fitted {g} ± {s}, truth {w}");
        assert!(s < 0.5 * w, "{name}: se {s} implausibly large");
    }
}

#[test]
fn pareto_nbd_recovers_simulated_parameters() {
    let truth = ParetoNbdParams {
        r: 0.55,
        alpha: 10.5,
        s: 0.6,
        beta: 12.0,
    };
    let data = simulate_pareto_nbd(30_000, &truth, 20261201, 730);
    let fit = fit_pareto_nbd(&data, 0.0).unwrap();
    let (p, se) = (fit.params, fit.std_errors);
    recovered(
        &fit,
        [p.r, p.alpha, p.s, p.beta],
        [se.r, se.alpha, se.s, se.beta],
        [truth.r, truth.alpha, truth.s, truth.beta],
        ["r", "alpha", "s", "beta"],
    );
    assert_rel(
        fit.log_likelihood,
        pareto_nbd_log_likelihood(&p, &data),
        1e-12,
        "reported LL",
    );
}

#[test]
fn mbgnbd_recovers_simulated_parameters() {
    let truth = BgNbdParams {
        r: 1.5,
        alpha: 5.2,
        a: 3.0,
        b: 50.0,
    };
    let data = simulate_mbgnbd(30_000, &truth, 20261202, 1095);
    let fit = fit_mbgnbd(&data, 0.0).unwrap();
    let (p, se) = (fit.params, fit.std_errors);
    recovered(
        &fit,
        [p.r, p.alpha, p.a, p.b],
        [se.r, se.alpha, se.a, se.b],
        [truth.r, truth.alpha, truth.a, truth.b],
        ["r", "alpha", "a", "b"],
    );
}

#[test]
fn fits_reject_bad_input_like_bgnbd() {
    assert_eq!(fit_pareto_nbd(&[], 0.0).unwrap_err(), FitError::Empty);
    assert_eq!(fit_mbgnbd(&[], 0.0).unwrap_err(), FitError::Empty);
    let no_repeat = rfm(&[(0.0, 0.0, 3.0, 5.0)]);
    assert_eq!(fit_pareto_nbd(&no_repeat, 0.0).unwrap_err(), FitError::NoRepeatBuyers);
    assert_eq!(fit_mbgnbd(&no_repeat, 0.0).unwrap_err(), FitError::NoRepeatBuyers);
    let bad = rfm(&[(1.0, 5.0, 3.0, 1.0)]);
    assert_eq!(
        fit_pareto_nbd(&bad, 0.0).unwrap_err().to_string(),
        "invalid input row 0: recency must be within [0, T] = [0, 3], got 5"
    );
    assert_eq!(fit_mbgnbd(&bad, -1.0).unwrap_err(), FitError::InvalidPenalizer(-1.0));
}

/// The optimum of the weighted log-likelihood on the 600-customer data set
/// of bgnbd_fit.rs, by scipy BFGS on the script's own likelihoods
/// (tests/reference/btyd_pareto_mbg.py `fit600`).
#[test]
fn fits_match_the_reference_optimum() {
    let data = super::bgnbd_fit::tests::lifetimes_sample();
    let fit = fit_pareto_nbd(&data, 0.0).unwrap();
    assert!(fit.converged);
    let p = fit.params;
    for (got, want, name) in [
        (p.r, 0.8240721584838162, "r"),
        (p.alpha, 15.639243823785344, "alpha"),
        (p.s, 1.6875504671522739, "s"),
        (p.beta, 36.76088147839469, "beta"),
    ] {
        assert_rel(got, want, 1e-4, name);
    }
    assert_rel(fit.log_likelihood, -2243.222115166159, 1e-10, "Pareto/NBD LL");
    let fit = fit_mbgnbd(&data, 0.0).unwrap();
    assert!(fit.converged);
    let p = fit.params;
    for (got, want, name) in [
        (p.r, 1.095870411097344, "r"),
        (p.alpha, 10.621580341953731, "alpha"),
        (p.a, 1.2484692542297713, "a"),
        (p.b, 1.479672196473248, "b"),
    ] {
        assert_rel(got, want, 1e-4, name);
    }
    assert_rel(fit.log_likelihood, -2242.267982539832, 1e-10, "MBG/NBD LL");
}

#[test]
fn grouped_mbgnbd_objective_equals_the_row_by_row_likelihood() {
    use super::fit::RowLikelihood;
    let truth = BgNbdParams {
        r: 1.5,
        alpha: 5.2,
        a: 3.0,
        b: 50.0,
    };
    let rows = super::data::checked_rfm(&simulate_mbgnbd(3000, &truth, 7, 730)).unwrap();
    for v in [[1.5, 5.2, 3.0, 50.0], [0.3, 0.8, 0.9, 2.0]] {
        let p = BgNbdParams {
            r: v[0],
            alpha: v[1],
            a: v[2],
            b: v[3],
        };
        assert_rel(
            MbgNbd.log_likelihood(&v, &rows),
            mbgnbd_log_likelihood(&p, &rows),
            1e-13,
            "grouped LL",
        );
    }
}
