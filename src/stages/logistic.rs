//! L2-regularised logistic regression fitted by Newton's method, for
//! `predict: {model: logistic}`.
//!
//! It minimises the objective linfa-logistic minimises,
//!
//! ```text
//! L(w, b) = Σ_i [ln(1 + e^{z_i}) − t_i·z_i] + ½·α·‖w‖²,   z_i = x_i·w + b,
//! ```
//!
//! labels t_i in {0, 1}, the intercept b not penalised (linfa writes the same
//! loss as −Σ ln σ(y_i·z_i) with y_i = ±1). linfa's L-BFGS with a Moré-Thuente
//! line search (at most 200 iterations, gradient tolerance 1e-4) took 1.05 s
//! on the demo's churn model (160,000 rows, 9 features), an eighth of the
//! nightly demo. With a handful of features the exact Hessian
//! is a small matrix, so Newton's method reaches the optimum in a few passes
//! over the rows (quadratic convergence; a backtracking line search keeps
//! every step downhill). Each pass sums fixed chunks of rows on all cores and
//! adds the chunks in order, so the fit is the same to the bit whatever the
//! thread count.

use ndarray::ArrayView2;

use super::btyd::fit::{CHUNK, fit_threads, par_map};

/// A fitted model on the matrix's own columns.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticFit {
    pub coef: Vec<f64>,
    pub intercept: f64,
    /// Newton steps taken.
    pub iterations: u64,
    /// The last step moved no parameter by more than [`STEP_TOLERANCE`]
    /// (relative to the largest parameter, at least 1).
    pub converged: bool,
    /// The objective at the returned parameters.
    pub objective: f64,
}

/// A fit has converged when its Newton step moves no parameter by more than
/// this, relative to the largest parameter (at least 1). Newton's method
/// converges quadratically near the optimum, so the parameters are then
/// exact to about the square of this.
pub const STEP_TOLERANCE: f64 = 1e-9;

/// `ln(1 + e^z)` without overflow or loss of precision for large |z|.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// The logistic function, stable for large |z|.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Sums over the rows at parameters `theta` (d coefficients, then the
/// intercept): the loss without the penalty; with `derivatives`, also the
/// gradient (d + 1) and the upper triangle of the Hessian ((d + 1)², row
/// major), both without the penalty.
struct Pass<'a> {
    x: ArrayView2<'a, f64>,
    t: &'a [f64],
    threads: usize,
}

impl Pass<'_> {
    fn run(&self, theta: &[f64], derivatives: bool) -> Vec<f64> {
        let d = self.x.ncols();
        let p1 = d + 1;
        let len = if derivatives { 1 + p1 + p1 * p1 } else { 1 };
        let n = self.x.nrows();
        let parts = par_map(n.div_ceil(CHUNK), self.threads, 1, |c| {
            let mut acc = vec![0.0; len];
            let mut row = vec![1.0; p1];
            for i in c * CHUNK..n.min((c + 1) * CHUNK) {
                let xi = self.x.row(i);
                let mut z = theta[d];
                for (j, v) in xi.iter().enumerate() {
                    row[j] = *v;
                    z += v * theta[j];
                }
                acc[0] += softplus(z) - self.t[i] * z;
                if derivatives {
                    let p = sigmoid(z);
                    let r = p - self.t[i];
                    let w = p * (1.0 - p);
                    let (grad, hess) = acc[1..].split_at_mut(p1);
                    for j in 0..p1 {
                        grad[j] += r * row[j];
                        let wj = w * row[j];
                        let h = &mut hess[j * p1..(j + 1) * p1];
                        for k in j..p1 {
                            h[k] += wj * row[k];
                        }
                    }
                }
            }
            acc
        });
        let mut total = vec![0.0; len];
        for part in parts {
            for (s, v) in total.iter_mut().zip(part) {
                *s += v;
            }
        }
        total
    }
}

/// The penalty ½·α·‖w‖² (the intercept, last, excluded).
fn penalty(theta: &[f64], alpha: f64) -> f64 {
    let d = theta.len() - 1;
    0.5 * alpha * theta[..d].iter().map(|w| w * w).sum::<f64>()
}

/// Solves `a·x = b` for a symmetric positive definite `a` (n × n, row major,
/// upper triangle used) by Cholesky; `None` if `a` is not positive definite
/// in floating point.
fn cholesky_solve(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    // Lower factor L, row major: a = L·Lᵀ.
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= l[j * n + k] * l[j * n + k];
        }
        if !(s > 0.0) || !s.is_finite() {
            return None;
        }
        let djj = s.sqrt();
        l[j * n + j] = djj;
        for i in j + 1..n {
            let mut s = a[j * n + i];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = s / djj;
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * y[k];
        }
        y[i] = s / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[k * n + i] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Fits `t ~ σ(x·w + b)` with L2 strength `alpha` on the coefficients, from
/// zero, in at most `max_iter` Newton steps, on all cores.
///
/// `x` is the (standardized) feature matrix, `t` the labels, each 0 or 1.
pub fn fit<'a>(x: ArrayView2<'a, f64>, t: &'a [f64], alpha: f64, max_iter: u64) -> LogisticFit {
    fit_on(x, t, alpha, max_iter, fit_threads())
}

/// [`fit`] on `threads` threads (the result is the same on any number).
pub fn fit_on<'a>(x: ArrayView2<'a, f64>, t: &'a [f64], alpha: f64, max_iter: u64, threads: usize) -> LogisticFit {
    let d = x.ncols();
    let p1 = d + 1;
    let pass = Pass { x, t, threads };
    let mut theta = vec![0.0; p1];
    let mut sums = pass.run(&theta, true);
    let mut objective = sums[0] + penalty(&theta, alpha);
    let mut iterations = 0;
    let mut converged = false;
    while iterations < max_iter {
        let mut grad = sums[1..1 + p1].to_vec();
        let mut hess = sums[1 + p1..].to_vec();
        for j in 0..d {
            grad[j] += alpha * theta[j];
            hess[j * p1 + j] += alpha;
        }
        // A Hessian singular in floating point (alpha = 0 with perfectly
        // separated classes, where the weights p·(1 − p) vanish) is damped
        // until it factors.
        let scale = (0..p1)
            .map(|j| hess[j * p1 + j].abs())
            .fold(0.0, f64::max)
            .max(f64::MIN_POSITIVE);
        let mut damping = 0.0;
        let step = loop {
            let mut h = hess.clone();
            for j in 0..p1 {
                h[j * p1 + j] += damping;
            }
            if let Some(s) = cholesky_solve(&h, &grad) {
                break Some(s);
            }
            damping = if damping == 0.0 { 1e-10 * scale } else { damping * 100.0 };
            if damping > 1e10 * scale {
                break None;
            }
        };
        let Some(step) = step else { break };
        let slope: f64 = grad.iter().zip(&step).map(|(g, s)| g * s).sum();
        // Backtracking (Armijo): halve the step until the objective falls.
        // Once the predicted decrease (half the Newton decrement) is below
        // the objective's rounding, the full step is taken as it is: the
        // objective can no longer tell it from a worse one.
        let below_rounding = 0.5 * slope <= 1e-12 * objective.abs().max(1.0);
        let mut s = 1.0;
        let mut accepted = None;
        for _ in 0..60 {
            let trial: Vec<f64> = theta.iter().zip(&step).map(|(p, dp)| p - s * dp).collect();
            let value = pass.run(&trial, false)[0] + penalty(&trial, alpha);
            if value.is_finite() && (value <= objective - 1e-4 * s * slope || below_rounding) {
                accepted = Some((trial, value));
                break;
            }
            s *= 0.5;
        }
        iterations += 1;
        let size = theta.iter().map(|v| v.abs()).fold(1.0, f64::max);
        let moved = step.iter().map(|v| (s * v).abs()).fold(0.0, f64::max);
        let Some((trial, value)) = accepted else {
            // No step lowers the objective in floating point: at the optimum
            // if the step is already negligible.
            converged = step.iter().map(|v| v.abs()).fold(0.0, f64::max) <= STEP_TOLERANCE * size;
            break;
        };
        theta = trial;
        objective = value;
        if moved <= STEP_TOLERANCE * size {
            converged = true;
            break;
        }
        sums = pass.run(&theta, true);
        objective = sums[0] + penalty(&theta, alpha);
    }
    LogisticFit {
        coef: theta[..d].to_vec(),
        intercept: theta[d],
        iterations,
        converged,
        objective,
    }
}

#[cfg(test)]
mod tests {
    use linfa::DatasetBase;
    use linfa::traits::Fit;
    use ndarray::{Array1, Array2};
    use rand::{Rng, SeedableRng};
    use rand_distr::{Bernoulli, Distribution, StandardNormal};
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;

    /// n rows of d standard normal features (the first two correlated) and
    /// labels drawn from σ(b + x·w).
    fn data(n: usize, w: &[f64], b: f64, seed: u64) -> (Array2<f64>, Vec<f64>) {
        let d = w.len();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut x = Array2::<f64>::zeros((n, d));
        let mut t = Vec::with_capacity(n);
        for i in 0..n {
            for j in 0..d {
                x[[i, j]] = rng.sample(StandardNormal);
            }
            x[[i, 1]] = 0.6 * x[[i, 0]] + 0.8 * x[[i, 1]];
            let z = b + (0..d).map(|j| w[j] * x[[i, j]]).sum::<f64>();
            t.push(f64::from(u8::from(
                Bernoulli::new(1.0 / (1.0 + (-z).exp())).unwrap().sample(&mut rng),
            )));
        }
        (x, t)
    }

    /// The gradient of the objective, by a plain loop over the rows.
    fn gradient(x: &Array2<f64>, t: &[f64], alpha: f64, coef: &[f64], intercept: f64) -> Vec<f64> {
        let d = coef.len();
        let mut g = vec![0.0; d + 1];
        for (i, row) in x.outer_iter().enumerate() {
            let z = intercept + row.iter().zip(coef).map(|(a, b)| a * b).sum::<f64>();
            let r = 1.0 / (1.0 + (-z).exp()) - t[i];
            for j in 0..d {
                g[j] += r * row[j];
            }
            g[d] += r;
        }
        for j in 0..d {
            g[j] += alpha * coef[j];
        }
        g
    }

    #[test]
    fn the_gradient_vanishes_at_the_fit() {
        let (x, t) = data(20_000, &[1.2, -0.7, 0.3, 0.0], -0.4, 7);
        for alpha in [0.0, 1.0, 50.0] {
            let m = fit_on(x.view(), &t, alpha, 200, 2);
            assert!(m.converged, "alpha {alpha}: {m:?}");
            assert!(m.iterations <= 10, "alpha {alpha}: {} Newton steps", m.iterations);
            let g = gradient(&x, &t, alpha, &m.coef, m.intercept);
            // The loss sums 20,000 rows: its gradient at a point 1e-6 away
            // from the optimum would be of order 1e-3.
            assert!(g.iter().all(|v| v.abs() < 1e-8), "alpha {alpha}: gradient {g:?}");
        }
    }

    #[test]
    fn agrees_with_linfa_run_to_a_tight_tolerance() {
        let (x, t) = data(5_000, &[0.8, -1.5, 0.4], 0.9, 11);
        let labels: Array1<u8> = t.iter().map(|v| *v as u8).collect();
        for alpha in [0.5, 10.0] {
            let theirs = linfa_logistic::LogisticRegression::default()
                .alpha(alpha)
                .gradient_tolerance(1e-10)
                .max_iterations(10_000)
                .with_intercept(true)
                .fit(&DatasetBase::new(x.clone(), labels.clone()))
                .unwrap();
            // linfa's positive class is the more frequent one.
            let sign = if theirs.labels().pos.class == 1 { 1.0 } else { -1.0 };
            let ours = fit_on(x.view(), &t, alpha, 200, 1);
            for (a, b) in ours.coef.iter().zip(theirs.params().iter()) {
                assert!(
                    (a - sign * b).abs() < 1e-7,
                    "alpha {alpha}: {:?} vs {:?}",
                    ours.coef,
                    theirs.params()
                );
            }
            assert!(
                (ours.intercept - sign * theirs.intercept()).abs() < 1e-7,
                "alpha {alpha}"
            );
        }
    }

    #[test]
    fn recovers_the_parameters_it_was_drawn_from() {
        let w = [1.0, -0.5, 0.25];
        let (x, t) = data(200_000, &w, -1.0, 3);
        let m = fit_on(x.view(), &t, 0.0, 200, 2);
        // Standard errors at this n are about 0.01 or less.
        for (got, want) in m.coef.iter().zip(w) {
            assert!((got - want).abs() < 0.04, "{:?}", m.coef);
        }
        assert!((m.intercept + 1.0).abs() < 0.04, "{}", m.intercept);
    }

    #[test]
    fn the_same_to_the_bit_on_any_thread_count() {
        let (x, t) = data(30_000, &[0.5, 0.5, -2.0, 1.0, 0.1], 0.2, 5);
        let one = fit_on(x.view(), &t, 1.0, 200, 1);
        for threads in [2, 3, 8] {
            assert_eq!(fit_on(x.view(), &t, 1.0, 200, threads), one, "{threads} threads");
        }
    }

    #[test]
    fn separated_classes_without_a_penalty_stop_with_finite_parameters() {
        // t = 1 exactly when x > 0: the unpenalised optimum is at infinity.
        let x = Array2::from_shape_fn((200, 1), |(i, _)| i as f64 / 100.0 - 0.995);
        let t: Vec<f64> = x.column(0).iter().map(|v| f64::from(u8::from(*v > 0.0))).collect();
        let m = fit_on(x.view(), &t, 0.0, 50, 2);
        assert!(m.coef[0].is_finite() && m.coef[0] > 10.0, "{m:?}");
        assert!(m.intercept.is_finite(), "{m:?}");
        // With a penalty the same data has a finite optimum, reached.
        let m = fit_on(x.view(), &t, 1.0, 50, 2);
        assert!(m.converged, "{m:?}");
    }

    #[test]
    fn softplus_and_sigmoid_hold_at_the_extremes() {
        assert_eq!(softplus(800.0), 800.0);
        assert_eq!(softplus(-800.0), 0.0);
        assert!((softplus(0.0) - std::f64::consts::LN_2).abs() < 1e-16);
        assert_eq!(sigmoid(800.0), 1.0);
        assert_eq!(sigmoid(-800.0), 0.0);
        assert!((sigmoid(1.0) - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-16);
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // a = [[4, 2], [2, 3]], b = [2, 1]: x = [0.5, 0].
        let x = cholesky_solve(&[4.0, 2.0, 2.0, 3.0], &[2.0, 1.0]).unwrap();
        assert_eq!(x, vec![0.5, 0.0]);
        assert!(cholesky_solve(&[1.0, 2.0, 2.0, 1.0], &[1.0, 1.0]).is_none());
    }
}
