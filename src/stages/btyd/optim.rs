//! The maximum-likelihood machinery every BTYD model's fit uses: BFGS over
//! log-parameters and standard errors by the delta method.
//!
//! A model implements [`Objective`] (the mean penalised negative
//! log-likelihood over log-parameters θ, with its analytic gradient), calls
//! [`minimize`] from a few deterministic starting points, then
//! [`std_errors`] at the optimum. [`minimize`] runs argmin's BFGS with the
//! Hager-Zhang line search (which tolerates the rounding noise of a large sum
//! near the optimum), starts from the inverse of a finite-difference Hessian,
//! restarts from the end point while not converged, keeps the best point
//! seen, and stops at an evaluation budget (argmin's line searches have no
//! iteration limit of their own). [`eval_guarded`] walls off |θ_i| > 20 and
//! non-finite values so the line search backs off. Everything is
//! deterministic.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use argmin::core::observers::{Observe, ObserverMode};
use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient, KV, State};
use argmin::solver::linesearch::HagerZhangLineSearch;
use argmin::solver::quasinewton::BFGS;
use ndarray::{Array1, Array2};

use super::data::FitError;

/// A smooth objective in log-parameter space: returns the mean penalised
/// negative log-likelihood and writes its gradient.
pub(crate) trait Objective: Sync {
    /// The number of (log-)parameters.
    fn dim(&self) -> usize;
    /// The objective at `theta`; writes its gradient into `grad` (`dim` long).
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64;
    /// The total weight W of the data (the objective is a mean over it).
    fn total_weight(&self) -> f64;
}

/// |θ_i| beyond this (parameters outside e^±20) is treated as infeasible.
const THETA_BOX: f64 = 20.0;
const INFEASIBLE: f64 = 1e12;
/// Gradient-norm tolerance (mean objective, log-parameters) for `converged`.
const GRAD_TOL: f64 = 1e-6;
const MAX_ITERS: u64 = 250;
const MAX_RUNS: usize = 3;
/// Objective evaluations allowed to the BFGS runs of one fit, in total.
const MAX_EVALS: usize = 400;
/// Requests for a value or gradient allowed to the BFGS runs of one fit,
/// including those answered from the cache (about two per evaluation): with
/// a gradient that does not match the value, Hager-Zhang's line search can
/// ask for the same point forever.
const MAX_CALLS: usize = 20 * MAX_EVALS;

/// Objective value and gradient, with a soft wall outside the box and for
/// non-finite values so the line search backs off.
pub(crate) fn eval_guarded<O: Objective>(obj: &O, theta: &[f64], grad: &mut [f64]) -> f64 {
    let excess: f64 = theta.iter().map(|t| (t.abs() - THETA_BOX).max(0.0).powi(2)).sum();
    if excess > 0.0 || theta.iter().any(|t| !t.is_finite()) {
        for (g, t) in grad.iter_mut().zip(theta) {
            *g = 2.0 * (t.abs() - THETA_BOX).max(0.0) * t.signum();
        }
        return INFEASIBLE + excess;
    }
    let f = obj.eval(theta, grad);
    if f.is_finite() && grad.iter().all(|g| g.is_finite()) {
        f
    } else {
        grad.iter_mut().for_each(|g| *g = 0.0);
        INFEASIBLE
    }
}

struct Memo {
    theta: Vec<f64>,
    f: f64,
    grad: Vec<f64>,
}

/// The argmin problem: caches the last evaluation (the line search asks for
/// the cost and the gradient at the same point), remembers the best point,
/// and enforces an evaluation budget (argmin's line searches have no
/// iteration limit of their own and can cycle on rounding noise): past it,
/// evaluations fail, which ends the run with the best point kept.
struct ArgminProblem<'a, O: Objective> {
    obj: &'a O,
    memo: Mutex<Option<Memo>>,
    best: &'a Mutex<(f64, Vec<f64>)>,
    evals: &'a AtomicUsize,
    calls: &'a AtomicUsize,
}

impl<O: Objective> ArgminProblem<'_, O> {
    fn eval(&self, theta: &Array1<f64>) -> Result<(f64, Vec<f64>), ArgminError> {
        if self.calls.fetch_add(1, Ordering::Relaxed) >= MAX_CALLS {
            return Err(ArgminError::msg(format!(
                "{MAX_CALLS} requests to the objective without convergence"
            )));
        }
        let th = theta.to_vec();
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = memo.as_ref().filter(|m| m.theta == th) {
            return Ok((m.f, m.grad.clone()));
        }
        if self.evals.fetch_add(1, Ordering::Relaxed) >= MAX_EVALS {
            return Err(ArgminError::msg(format!("evaluation budget of {MAX_EVALS} exhausted")));
        }
        let mut grad = vec![0.0; self.obj.dim()];
        let f = eval_guarded(self.obj, &th, &mut grad);
        {
            let mut best = self.best.lock().unwrap_or_else(|e| e.into_inner());
            if f < best.0 {
                *best = (f, th.clone());
            }
        }
        *memo = Some(Memo {
            theta: th,
            f,
            grad: grad.clone(),
        });
        Ok((f, grad))
    }
}

impl<O: Objective> CostFunction for ArgminProblem<'_, O> {
    type Param = Array1<f64>;
    type Output = f64;
    fn cost(&self, param: &Self::Param) -> Result<f64, ArgminError> {
        Ok(self.eval(param)?.0)
    }
}

impl<O: Objective> Gradient for ArgminProblem<'_, O> {
    type Param = Array1<f64>;
    type Gradient = Array1<f64>;
    fn gradient(&self, param: &Self::Param) -> Result<Array1<f64>, ArgminError> {
        Ok(Array1::from(self.eval(param)?.1))
    }
}

/// Records the iteration count of a run (also when the run ends in an error).
struct IterCounter(Arc<AtomicU64>);

impl<I: State> Observe<I> for IterCounter {
    fn observe_iter(&mut self, state: &I, _kv: &KV) -> Result<(), ArgminError> {
        self.0.store(state.get_iter(), Ordering::Relaxed);
        Ok(())
    }
}

/// The end point of [`minimize`].
pub(crate) struct Optimum {
    /// The best point found, in log-parameters.
    pub(crate) theta: Vec<f64>,
    /// BFGS iterations, summed over the restarts.
    pub(crate) iterations: u64,
    /// Whether the gradient norm there is <= 1e-6.
    pub(crate) converged: bool,
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Minimises the objective from the best of `starts` with BFGS (Hager-Zhang
/// line search, which tolerates the rounding noise of a large sum near the
/// optimum), restarting from the end point while not converged.
pub(crate) fn minimize<O: Objective>(obj: &O, starts: &[Vec<f64>]) -> Result<Optimum, FitError> {
    let n = obj.dim();
    let mut g = vec![0.0; n];
    let mut best_start: Option<(f64, &Vec<f64>, Vec<f64>)> = None;
    for s in starts {
        let f = eval_guarded(obj, s, &mut g);
        if f < INFEASIBLE && best_start.as_ref().is_none_or(|(bf, _, _)| f < *bf) {
            best_start = Some((f, s, g.clone()));
        }
    }
    let Some((f0, start, g0)) = best_start else {
        return Err(FitError::NonFiniteLikelihood(format!(
            "{} starting points tried",
            starts.len()
        )));
    };
    let best = Mutex::new((f0, start.clone()));
    let evals = AtomicUsize::new(0);
    let calls = AtomicUsize::new(0);
    let mut theta = start.clone();
    let mut grad = g0;
    let mut f_cur = f0;
    let mut iterations = 0u64;
    let mut converged = norm(&grad) <= GRAD_TOL;
    let mut last_error = None;
    for _ in 0..MAX_RUNS {
        if converged {
            break;
        }
        let problem = ArgminProblem {
            obj,
            memo: Mutex::new(None),
            best: &best,
            evals: &evals,
            calls: &calls,
        };
        let solver = BFGS::new(HagerZhangLineSearch::new())
            .with_tolerance_grad(GRAD_TOL * 1e-3)
            .and_then(|s| s.with_tolerance_cost(1e-15))
            .map_err(|e| FitError::NoConvergence(e.to_string()))?;
        // Initial inverse Hessian: the inverse of a forward-difference Hessian
        // where that is positive definite (Newton-like first steps), else the
        // identity scaled so that the first step has length <= 1.
        let h0 = match hessian_forward(obj, &theta, &grad).and_then(|h| invert_spd(&h)) {
            Some(inv) => Array2::from_shape_fn((n, n), |(i, j)| inv[i][j]),
            None => Array2::<f64>::eye(n) * (1.0 / norm(&grad).max(1.0)),
        };
        let init = Array1::from(theta.clone());
        let iters = Arc::new(AtomicU64::new(0));
        if let Err(e) = Executor::new(problem, solver)
            .configure(|state| state.param(init).inv_hessian(h0).max_iters(MAX_ITERS))
            .add_observer(IterCounter(iters.clone()), ObserverMode::Always)
            .run()
        {
            last_error = Some(e.to_string());
        }
        iterations += iters.load(Ordering::Relaxed);
        let (_, bt) = best.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let moved = bt != theta;
        theta = bt;
        f_cur = eval_guarded(obj, &theta, &mut grad);
        converged = norm(&grad) <= GRAD_TOL;
        if !moved || evals.load(Ordering::Relaxed) >= MAX_EVALS || calls.load(Ordering::Relaxed) >= MAX_CALLS {
            break;
        }
    }
    if f_cur >= INFEASIBLE {
        return Err(FitError::NoConvergence(
            last_error.unwrap_or_else(|| "no finite point found".into()),
        ));
    }
    Ok(Optimum {
        theta,
        iterations,
        converged,
    })
}

/// Forward-difference Hessian from the gradient `g0` at `theta` (n extra
/// gradient evaluations), symmetrised; for the initial BFGS metric only.
fn hessian_forward<O: Objective>(obj: &O, theta: &[f64], g0: &[f64]) -> Option<Vec<Vec<f64>>> {
    let n = obj.dim();
    let mut h = vec![vec![0.0; n]; n];
    let mut gp = vec![0.0; n];
    for j in 0..n {
        let step = 1e-5 * (1.0 + theta[j].abs());
        let mut tp = theta.to_vec();
        tp[j] += step;
        if eval_guarded(obj, &tp, &mut gp) >= INFEASIBLE {
            return None;
        }
        for i in 0..n {
            h[i][j] = (gp[i] - g0[i]) / step;
        }
    }
    symmetrize(&mut h);
    Some(h)
}

#[allow(clippy::needless_range_loop)]
fn symmetrize(h: &mut [Vec<f64>]) {
    for i in 0..h.len() {
        for j in 0..i {
            let m = 0.5 * (h[i][j] + h[j][i]);
            h[i][j] = m;
            h[j][i] = m;
        }
    }
}

/// Hessian of the mean objective in log-parameter space by central
/// differences of the analytic gradient (symmetrised); None if a probe point
/// is infeasible.
pub(crate) fn hessian<O: Objective>(obj: &O, theta: &[f64]) -> Option<Vec<Vec<f64>>> {
    let n = obj.dim();
    let mut h = vec![vec![0.0; n]; n];
    let mut gp = vec![0.0; n];
    let mut gm = vec![0.0; n];
    for j in 0..n {
        let step = 1e-4 * (1.0 + theta[j].abs());
        let mut tp = theta.to_vec();
        tp[j] += step;
        let mut tm = theta.to_vec();
        tm[j] -= step;
        let fp = eval_guarded(obj, &tp, &mut gp);
        let fm = eval_guarded(obj, &tm, &mut gm);
        if fp >= INFEASIBLE || fm >= INFEASIBLE {
            return None;
        }
        for i in 0..n {
            h[i][j] = (gp[i] - gm[i]) / (2.0 * step);
        }
    }
    symmetrize(&mut h);
    Some(h)
}

/// Delta-method standard errors: the inverse of the Hessian of
/// W × objective in log-parameter space (W = total weight) gives the
/// covariance of the log-parameters, so se(param_i) = param_i sqrt((H^-1)_ii).
/// NaN if the Hessian is not positive definite.
pub(crate) fn std_errors<O: Objective>(obj: &O, theta: &[f64]) -> Vec<f64> {
    let n = obj.dim();
    let w = obj.total_weight();
    let inv = hessian(obj, theta).and_then(|h| invert_spd(&h));
    match inv {
        Some(inv) => (0..n)
            .map(|i| {
                let v = inv[i][i] / w;
                if v > 0.0 && v.is_finite() {
                    theta[i].exp() * v.sqrt()
                } else {
                    f64::NAN
                }
            })
            .collect(),
        None => vec![f64::NAN; n],
    }
}

/// Inverse of a small symmetric positive-definite matrix (Cholesky), or None.
#[allow(clippy::needless_range_loop)]
pub(crate) fn invert_spd(m: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = m.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = m[i][j];
            for k in 0..j {
                s -= l[i][k] * l[j][k];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    // inv = L^-T L^-1, column by column.
    let mut inv = vec![vec![0.0; n]; n];
    for col in 0..n {
        let mut y = vec![0.0; n];
        for i in 0..n {
            let mut s = if i == col { 1.0 } else { 0.0 };
            for k in 0..i {
                s -= l[i][k] * y[k];
            }
            y[i] = s / l[i][i];
        }
        for i in (0..n).rev() {
            let mut s = y[i];
            for k in i + 1..n {
                s -= l[k][i] * inv[k][col];
            }
            inv[i][col] = s / l[i][i];
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::btyd::test_support::{assert_rel, check_gradient};

    /// ½ Σ c_i (θ_i - m_i)² over data of total weight `w`: minimum at m,
    /// Hessian diag(c).
    struct Quadratic {
        c: Vec<f64>,
        m: Vec<f64>,
        w: f64,
    }

    impl Objective for Quadratic {
        fn dim(&self) -> usize {
            self.c.len()
        }
        fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
            let mut f = 0.0;
            for (i, g) in grad.iter_mut().enumerate() {
                let d = theta[i] - self.m[i];
                f += 0.5 * self.c[i] * d * d;
                *g = self.c[i] * d;
            }
            f
        }
        fn total_weight(&self) -> f64 {
            self.w
        }
    }

    #[test]
    fn minimize_finds_the_minimum_and_delta_method_errors() {
        let obj = Quadratic {
            c: vec![2.0, 0.5, 8.0],
            m: vec![0.3, -1.2, 2.0],
            w: 100.0,
        };
        check_gradient(&obj, &[0.1, 0.2, 0.3]);
        let opt = minimize(&obj, &[vec![5.0, 5.0, 5.0], vec![0.0, 0.0, 0.0]]).unwrap();
        assert!(opt.converged);
        for (got, want) in opt.theta.iter().zip(&obj.m) {
            assert!((got - want).abs() < 1e-6, "{:?}", opt.theta);
        }
        // se(param_i) = exp(θ_i) / sqrt(c_i W)
        let se = std_errors(&obj, &obj.m);
        for (i, s) in se.iter().enumerate() {
            let want = obj.m[i].exp() / (obj.c[i] * obj.w).sqrt();
            assert_rel(*s, want, 1e-8, "se");
        }
        // starting points outside the box (|θ_i| > 20) are infeasible
        let mut g = [0.0; 3];
        assert!(eval_guarded(&obj, &[25.0, 0.0, 0.0], &mut g) >= INFEASIBLE);
        assert!(matches!(
            minimize(&obj, &[vec![25.0, 0.0, 0.0]]),
            Err(FitError::NonFiniteLikelihood(_))
        ));
    }

    #[test]
    fn invert_spd_inverts_or_refuses() {
        let inv = invert_spd(&[vec![4.0, 2.0], vec![2.0, 3.0]]).unwrap();
        let want = [[3.0 / 8.0, -2.0 / 8.0], [-2.0 / 8.0, 4.0 / 8.0]];
        for (row, want_row) in inv.iter().zip(&want) {
            for (v, w) in row.iter().zip(want_row) {
                assert!((v - w).abs() < 1e-15, "{inv:?}");
            }
        }
        assert!(invert_spd(&[vec![1.0, 2.0], vec![2.0, 1.0]]).is_none());
        assert!(invert_spd(&[vec![f64::NAN]]).is_none());
    }
}
