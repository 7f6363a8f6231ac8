//! TEMPORARY interface placeholder: replaced by the real BG/NBD module.
#![allow(dead_code, unused_variables)]
#[derive(Debug, Clone)]
pub struct Rfm { pub frequency: f64, pub recency: f64, pub t: f64, pub weight: f64 }
#[derive(Debug, Clone)]
pub struct BgNbdParams { pub r: f64, pub alpha: f64, pub a: f64, pub b: f64 }
#[derive(Debug, Clone)]
pub struct GammaGammaParams { pub p: f64, pub q: f64, pub v: f64 }
#[derive(Debug, Clone)]
pub struct Fit<P> { pub params: P, pub std_errors: P, pub log_likelihood: f64, pub iterations: u64, pub converged: bool }
#[derive(Debug, thiserror::Error)]
pub enum FitError { #[error("not built")] NotBuilt }
pub struct Spend { pub frequency: f64, pub monetary_value: f64, pub weight: f64 }
pub fn fit_bgnbd(data: &[Rfm], penalizer: f64) -> Result<Fit<BgNbdParams>, FitError> { Err(FitError::NotBuilt) }
pub fn fit_gamma_gamma(data: &[Spend], penalizer: f64) -> Result<Fit<GammaGammaParams>, FitError> { Err(FitError::NotBuilt) }
pub fn p_alive(p: &BgNbdParams, x: f64, t_x: f64, t: f64) -> f64 { f64::NAN }
pub fn expected_purchases(p: &BgNbdParams, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 { f64::NAN }
pub fn expected_avg_spend(p: &GammaGammaParams, frequency: f64, monetary_value: f64) -> f64 { f64::NAN }
