//! The simulation model: the distributions and the BG/NBD-style "buy till
//! you die" story of the module docs ([`super`]), turned into a [`Chunk`] of
//! rows for one contiguous range of customer ids.
//!
//! [`Model`] holds everything that does not change between chunks (the
//! validated window, the samplers); [`Model::chunk`] generates chunk k from
//! its own Xoshiro256++ generator seeded from (seed, k) through
//! [`splitmix64`], so chunks can be generated in any order, on any thread.
//! String columns come out as small codes into the vocabularies below, which
//! [`super::batch`] turns into strings.

use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp1, Gamma, LogNormal, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::batch::Chunk;
use super::schema::{CATEGORIES, COUNTRIES, validate};
use super::{DROPOUT_TICKET_FACTOR, GenerateError, GenerateOptions};
use crate::hash::splitmix64;

/// Microseconds per day and per (Julian) year.
pub(super) const US_PER_DAY: i64 = 86_400_000_000;
pub(super) const US_PER_YEAR: f64 = 365.25 * US_PER_DAY as f64;

/// Signup growth: density ∝ exp(SIGNUP_GROWTH · x) over the window.
pub(super) const SIGNUP_GROWTH: f64 = 0.6;

// Weights of the vocabularies in `schema` (codes in a `Chunk` index them).
const GENDER_P: [f64; 3] = [0.48, 0.48, 0.04];
const CHANNEL_P: [f64; 7] = [0.30, 0.22, 0.18, 0.10, 0.08, 0.07, 0.05];
/// Median acquisition cost per channel.
const CHANNEL_CAC: [f64; 7] = [15.0, 45.0, 30.0, 10.0, 20.0, 35.0, 50.0];
const KIND_P: [f64; 5] = [0.40, 0.22, 0.10, 0.05, 0.23];
const SUPPORT_TICKET: usize = 3;
/// Log-normal duration in seconds per kind: (median, sigma).
const KIND_DUR: [(f64, f64); 5] = [(90.0, 0.9), (15.0, 0.7), (30.0, 0.8), (600.0, 0.8), (240.0, 0.9)];

// BG/NBD hyper-parameters.
pub(super) const LAMBDA_SHAPE: f64 = 1.5;
pub(super) const LAMBDA_SCALE: f64 = 10.0; // purchases per year while alive
pub(super) const DROP_A: f64 = 3.0;
pub(super) const DROP_B: f64 = 50.0;
// Interactions per year while engaged.
const IX_SHAPE: f64 = 2.0;
const IX_SCALE: f64 = 6.7;
const IX_TAIL_DAYS: f64 = 60.0;
const QUANTITY_MEAN: f64 = 0.6;

/// Cumulative distribution for inverse-CDF sampling from a small table.
#[derive(Debug, Clone)]
struct Cdf(Vec<f64>);

impl Cdf {
    fn new(weights: &[f64]) -> Self {
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut c: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        if let Some(last) = c.last_mut() {
            *last = f64::INFINITY; // never fall off the end through rounding
        }
        Cdf(c)
    }

    fn zipf(n: usize, s: f64) -> Self {
        let w: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        Cdf::new(&w)
    }

    /// Poisson(mean) truncated at a negligible tail.
    fn poisson(mean: f64) -> Self {
        let mut w = Vec::new();
        let mut p = (-mean).exp();
        let mut k = 0.0;
        while w.len() < 64 && (w.len() as f64) < mean + 10.0 * mean.sqrt() + 10.0 {
            w.push(p);
            k += 1.0;
            p *= mean / k;
        }
        Cdf::new(&w)
    }

    #[inline]
    fn sample<R: Rng>(&self, rng: &mut R) -> u8 {
        let u: f64 = rng.r#gen();
        let mut i = 0;
        while u >= self.0[i] {
            i += 1;
        }
        i as u8
    }
}

/// Everything that does not change between chunks.
pub(super) struct Model {
    seed: u64,
    customers: u64,
    chunk_customers: u64,
    start_day: i64,
    n_days: i64,
    end_us: i64,
    country: Cdf,
    gender: Cdf,
    channel: Cdf,
    category: Cdf,
    quantity: Cdf,
    kind_alive: Cdf,
    kind_dropped: Cdf,
    income: LogNormal<f64>,
    cac_factor: LogNormal<f64>,
    lambda: Gamma<f64>,
    drop: Beta<f64>,
    spend_mean: Gamma<f64>,
    amount: Gamma<f64>,
    ix_rate: Gamma<f64>,
    dur_mu: [f64; 5],
    dur_sigma: [f64; 5],
}

impl Model {
    /// The model of `opts`, cutting customers into chunks of `chunk_customers`;
    /// fails if `opts` are invalid.
    pub(super) fn new(opts: &GenerateOptions, chunk_customers: u64) -> Result<Self, GenerateError> {
        let window = validate(opts)?;
        let (start_day, end_day) = (window.start_day, window.end_day);
        let mut kind_dropped = KIND_P;
        kind_dropped[SUPPORT_TICKET] *= DROPOUT_TICKET_FACTOR;
        Ok(Model {
            seed: opts.seed,
            customers: opts.customers,
            chunk_customers,
            start_day,
            n_days: end_day - start_day,
            end_us: end_day * US_PER_DAY,
            country: Cdf::zipf(COUNTRIES.len(), 0.9),
            gender: Cdf::new(&GENDER_P),
            channel: Cdf::new(&CHANNEL_P),
            category: Cdf::zipf(CATEGORIES.len(), 0.8),
            quantity: Cdf::poisson(QUANTITY_MEAN),
            kind_alive: Cdf::new(&KIND_P),
            kind_dropped: Cdf::new(&kind_dropped),
            income: c(LogNormal::new(52_000f64.ln(), 0.6).ok()),
            cac_factor: c(LogNormal::new(0.0, 0.5).ok()),
            lambda: c(Gamma::new(LAMBDA_SHAPE, LAMBDA_SCALE).ok()),
            drop: c(Beta::new(DROP_A, DROP_B).ok()),
            spend_mean: c(Gamma::new(3.0, 20.0).ok()),
            amount: c(Gamma::new(4.0, 1.0).ok()),
            ix_rate: c(Gamma::new(IX_SHAPE, IX_SCALE).ok()),
            dur_mu: KIND_DUR.map(|(m, _)| m.ln()),
            dur_sigma: KIND_DUR.map(|(_, s)| s),
        })
    }

    /// The generator of chunk `chunk`, a function of (seed, chunk) only.
    fn rng(&self, chunk: u64) -> Xoshiro256PlusPlus {
        let s = splitmix64(splitmix64(self.seed) ^ splitmix64(chunk.wrapping_add(0x0063_726d_666c_6f77)));
        Xoshiro256PlusPlus::seed_from_u64(s)
    }

    /// Generates chunk `k` (customers `k·chunk+1 ..`), self-contained.
    pub(super) fn chunk(&self, k: u64) -> Chunk {
        let mut rng = self.rng(k);
        let first = k * self.chunk_customers; // 0-based index of the first customer
        let n = (self.customers - first).min(self.chunk_customers) as usize;
        let mut ch = Chunk::with_capacity(k, first as i64 + 1, n);
        let n_total = self.customers as f64;
        let g_norm = SIGNUP_GROWTH.exp_m1();
        let ix_ref = (LAMBDA_SHAPE * LAMBDA_SCALE).recip();
        let ix_tail_us = IX_TAIL_DAYS * US_PER_DAY as f64;

        for j in 0..n {
            let cid = first as i64 + j as i64 + 1;
            // --- customer ---
            let u = ((first + j as u64) as f64 + rng.r#gen::<f64>()) / n_total;
            let frac = (u * g_norm).ln_1p() / SIGNUP_GROWTH;
            let day_off = ((self.n_days as f64 * frac).floor() as i64).clamp(0, self.n_days - 1);
            let day = self.start_day + day_off;
            let birth_us = day * US_PER_DAY + rng.gen_range(0..US_PER_DAY);
            let country = self.country.sample(&mut rng);
            let z: f64 = StandardNormal.sample(&mut rng);
            let age = (40.0 + 13.0 * z).round().clamp(18.0, 90.0) as i32;
            let gender = self.gender.sample(&mut rng);
            let income = round2(self.income.sample(&mut rng));
            let channel = self.channel.sample(&mut rng);
            let acq = round2(CHANNEL_CAC[channel as usize] * self.cac_factor.sample(&mut rng));
            ch.c_signup.push(day as i32);
            ch.c_country.push(country);
            ch.c_age.push(age);
            ch.c_gender.push(gender);
            ch.c_income.push(income);
            ch.c_acq.push(acq);
            ch.c_channel.push(channel);

            // --- purchases: BG/NBD ---
            let lambda = self.lambda.sample(&mut rng);
            let p_drop = self.drop.sample(&mut rng);
            let mean_amt = self.spend_mean.sample(&mut rng) * (income / 52_000.0).powf(0.3);
            let amt_scale = mean_amt / 4.0;
            let gap_scale = US_PER_YEAR / lambda;
            let mut t = birth_us;
            let alive = loop {
                ch.t_customer.push(cid);
                ch.t_ts.push(t);
                ch.t_amount
                    .push(round2(self.amount.sample(&mut rng) * amt_scale).max(0.01));
                ch.t_qty.push(1 + self.quantity.sample(&mut rng) as i32);
                ch.t_cat.push(self.category.sample(&mut rng));
                if rng.r#gen::<f64>() < p_drop {
                    break false;
                }
                let e: f64 = Exp1.sample(&mut rng);
                let step = (e * gap_scale).round().max(1.0);
                if step >= (self.end_us - t) as f64 {
                    break true;
                }
                t += step as i64;
            };
            let last_tx = t;
            ch.c_alive.push(alive);

            // --- interactions ---
            let engaged_end = if alive {
                self.end_us
            } else {
                let e: f64 = Exp1.sample(&mut rng);
                let tail = (e * ix_tail_us).round();
                if tail >= (self.end_us - last_tx) as f64 {
                    self.end_us
                } else {
                    last_tx + tail as i64
                }
            };
            let rho = self.ix_rate.sample(&mut rng) * (lambda * ix_ref).powf(0.3);
            let kinds = if alive { &self.kind_alive } else { &self.kind_dropped };
            let gap_scale = US_PER_YEAR / rho;
            let mut t = birth_us;
            loop {
                let e: f64 = Exp1.sample(&mut rng);
                let step = (e * gap_scale).round().max(1.0);
                if step >= (engaged_end - t) as f64 {
                    break;
                }
                t += step as i64;
                let kind = kinds.sample(&mut rng);
                let z: f64 = StandardNormal.sample(&mut rng);
                let k = kind as usize;
                let dur = (self.dur_mu[k] + self.dur_sigma[k] * z)
                    .exp()
                    .round()
                    .clamp(1.0, 86_400.0);
                ch.i_customer.push(cid);
                ch.i_ts.push(t);
                ch.i_kind.push(kind);
                ch.i_dur.push(dur as i32);
            }
        }
        ch.shrink_to_fit();
        ch
    }
}

/// Unwraps a distribution built from constant, valid parameters.
fn c<T>(d: Option<T>) -> T {
    d.expect("constant distribution parameters are valid")
}

/// Rounds to cents.
#[inline]
pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_out_customers_file_more_tickets() {
        let model = Model::new(&GenerateOptions::new(40_000, 3), 40_000).unwrap();
        let ch = model.chunk(0);
        let (mut n, mut tickets) = ([0f64; 2], [0f64; 2]); // [alive, dropped]
        for (c, k) in ch.i_customer.iter().zip(&ch.i_kind) {
            let g = usize::from(!ch.c_alive[(c - ch.first_customer_id) as usize]);
            n[g] += 1.0;
            tickets[g] += f64::from(u8::from(*k as usize == SUPPORT_TICKET));
        }
        let share = [tickets[0] / n[0], tickets[1] / n[1]];
        let alive_share = ch.c_alive.iter().filter(|&&a| a).count() as f64 / 40_000.0;
        assert!((0.1..0.6).contains(&alive_share), "alive at end {alive_share}");
        assert!(
            (share[0] - KIND_P[SUPPORT_TICKET]).abs() < 0.01,
            "alive ticket share {}",
            share[0]
        );
        // The dropped-out customers' ticket share is about doubled
        // (0.05 -> 0.095), not more.
        let ratio = share[1] / share[0];
        assert!(
            (1.6..2.4).contains(&ratio),
            "ticket share dropped/alive {} / {} = {ratio}",
            share[1],
            share[0]
        );
    }
}
