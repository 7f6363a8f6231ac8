//! k-means on a column-major matrix, fast: linfa-clustering's algorithm
//! (0.8: k-means++ initialisation, Lloyd iterations in which each previous
//! centroid counts as one more member of its cluster, a stop when the
//! centroids move less than the tolerance, the best of `n_runs` restarts by
//! inertia), computed the same way but on contiguous columns, in blocks of
//! rows whose squared distances to every centroid the compiler vectorizes,
//! over fixed chunks of rows on several threads.
//!
//! Squared distances are summed feature by feature in feature order, as
//! linfa does, so every distance, every assignment and the k-means++ draws
//! are bit-identical to linfa's. Only sums over rows (the centroid updates,
//! the inertia) are added in another order: each chunk of [`CHUNK`] rows is
//! summed in row order and the chunks' partial sums are added in chunk
//! order, so the result does not depend on the number of threads.
//!
//! linfa is not called for this: its Lloyd loop computes one distance per
//! row and centroid through generic `ndarray` views (most of the time of a
//! segmentation at a million rows), and its initialisation is not public
//! on its own.

use std::ops::Range;

use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256Plus;

/// Rows per unit of parallel work. Fixed: partial sums are per chunk, so
/// the results are the same for any number of threads.
pub const CHUNK: usize = 16 * 1024;

/// Rows whose distances are computed together (fits in L1 with k ≤ 16).
const BLOCK: usize = 128;

/// An n × d matrix stored by column (`data[j * n + i]` is row i, column j).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    n: usize,
    d: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// A matrix from its columns, each of length `n`.
    pub fn from_columns(n: usize, columns: Vec<Vec<f64>>) -> Matrix {
        let d = columns.len();
        let mut data = Vec::with_capacity(n * d);
        for c in columns {
            debug_assert_eq!(c.len(), n);
            data.extend(c);
        }
        Matrix { n, d, data }
    }

    /// A matrix built column by column from `f(i, j)`.
    pub fn from_fn(n: usize, d: usize, f: impl Fn(usize, usize) -> f64) -> Matrix {
        let mut data = Vec::with_capacity(n * d);
        for j in 0..d {
            data.extend((0..n).map(|i| f(i, j)));
        }
        Matrix { n, d, data }
    }

    /// Rows.
    pub fn nrows(&self) -> usize {
        self.n
    }

    /// Columns.
    pub fn ncols(&self) -> usize {
        self.d
    }

    /// Column `j`.
    pub fn col(&self, j: usize) -> &[f64] {
        &self.data[j * self.n..(j + 1) * self.n]
    }

    /// Row `i`, copied.
    pub fn row(&self, i: usize) -> Vec<f64> {
        (0..self.d).map(|j| self.data[j * self.n + i]).collect()
    }
}

/// The parameters of [`fit`] (linfa's names).
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub k: usize,
    pub n_runs: usize,
    pub max_n_iterations: u64,
    pub tolerance: f64,
    pub seed: u64,
    /// Threads to run on (at least 1).
    pub threads: usize,
}

/// The outcome of [`fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// k × d, row-major.
    pub centroids: Vec<f64>,
    /// Σ squared distances of the rows to their nearest centroid of the
    /// last assignment of the best run.
    pub inertia: f64,
    /// Iterations of each run.
    pub iterations: Vec<u64>,
}

/// The threads to use by default: the machine's parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// linfa's `KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed))`
/// with k-means++ initialisation, `n_runs`, `max_n_iterations` and
/// `tolerance`, fitted on `z`.
///
/// # Errors
/// No run gave a finite inertia (non-finite data), or fewer rows than `k`.
pub fn fit(z: &Matrix, p: &Params) -> Result<Fitted, String> {
    let (n, d, k) = (z.n, z.d, p.k);
    if k == 0 || n < k {
        return Err(format!("{n} rows for k = {k}"));
    }
    let mut rng = Xoshiro256Plus::seed_from_u64(p.seed);
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut iterations = Vec::with_capacity(p.n_runs);
    for _ in 0..p.n_runs {
        let mut centroids = kmeans_plus_plus(z, k, &mut rng, p.threads);
        let mut n_iter = 0u64;
        let inertia = loop {
            let pass = lloyd_pass(z, &centroids, k, p.threads);
            // m_k-means: the previous centroid counts as one more member.
            let mut next = vec![0.0; k * d];
            for c in 0..k {
                let count = (pass.counts[c] + 1) as f64;
                for j in 0..d {
                    next[c * d + j] = (pass.sums[c * d + j] + centroids[c * d + j]) / count;
                }
            }
            // The Euclidean distance between the centroid matrices (row-major).
            let mut shift = 0.0;
            for (a, b) in centroids.iter().zip(&next) {
                let t = a - b;
                shift += t * t;
            }
            let shift = shift.sqrt();
            centroids = next;
            n_iter += 1;
            if shift < p.tolerance || n_iter == p.max_n_iterations {
                break pass.inertia;
            }
        };
        iterations.push(n_iter);
        if inertia < best.as_ref().map_or(f64::INFINITY, |b| b.0) {
            best = Some((inertia, centroids));
        }
    }
    let (inertia, centroids) = best.ok_or("no run gave a finite inertia (non-finite data?)")?;
    Ok(Fitted {
        centroids,
        inertia,
        iterations,
    })
}

/// The nearest centroid of every row (ties: the lowest index) and its
/// squared distance. `centroids` is k × d, row-major.
pub fn assign(z: &Matrix, centroids: &[f64], threads: usize) -> (Vec<usize>, Vec<f64>) {
    let k = centroids.len() / z.d.max(1);
    let parts = for_chunks(z.n, threads, |rows| {
        let mut labels = Vec::with_capacity(rows.len());
        let mut dists = Vec::with_capacity(rows.len());
        let mut buf = vec![0.0; k * BLOCK];
        for_blocks(z, centroids, k, rows, &mut buf, |_, best, bd| {
            labels.push(best);
            dists.push(bd);
        });
        (labels, dists)
    });
    let mut labels = Vec::with_capacity(z.n);
    let mut dists = Vec::with_capacity(z.n);
    for (l, d) in parts {
        labels.extend(l);
        dists.extend(d);
    }
    (labels, dists)
}

/// The sums of one assignment pass: per cluster Σ rows and count, and Σ
/// squared distances (chunks reduced in chunk order).
struct Pass {
    sums: Vec<f64>,
    counts: Vec<u64>,
    inertia: f64,
}

fn lloyd_pass(z: &Matrix, centroids: &[f64], k: usize, threads: usize) -> Pass {
    let d = z.d;
    let parts = for_chunks(z.n, threads, |rows| {
        let mut sums = vec![0.0; k * d];
        let mut counts = vec![0u64; k];
        let mut inertia = 0.0;
        let mut buf = vec![0.0; k * BLOCK];
        for_blocks(z, centroids, k, rows, &mut buf, |i, best, bd| {
            for j in 0..d {
                sums[best * d + j] += z.data[j * z.n + i];
            }
            counts[best] += 1;
            inertia += bd;
        });
        Pass { sums, counts, inertia }
    });
    let mut total = Pass {
        sums: vec![0.0; k * d],
        counts: vec![0; k],
        inertia: 0.0,
    };
    for p in parts {
        for (t, s) in total.sums.iter_mut().zip(&p.sums) {
            *t += s;
        }
        for (t, c) in total.counts.iter_mut().zip(&p.counts) {
            *t += c;
        }
        total.inertia += p.inertia;
    }
    total
}

/// Calls `visit(row, nearest, squared distance)` for each row of `rows`,
/// in order, computing the distances a block of rows at a time (with AVX2
/// where the CPU has it: the same operations on wider registers, so the
/// same results).
#[inline]
fn for_blocks(
    z: &Matrix,
    centroids: &[f64],
    k: usize,
    rows: Range<usize>,
    buf: &mut [f64],
    visit: impl FnMut(usize, usize, f64),
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { for_blocks_avx2(z, centroids, k, rows, buf, visit) };
        return;
    }
    for_blocks_portable(z, centroids, k, rows, buf, visit);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn for_blocks_avx2(
    z: &Matrix,
    centroids: &[f64],
    k: usize,
    rows: Range<usize>,
    buf: &mut [f64],
    visit: impl FnMut(usize, usize, f64),
) {
    for_blocks_portable(z, centroids, k, rows, buf, visit);
}

#[inline(always)]
fn for_blocks_portable(
    z: &Matrix,
    centroids: &[f64],
    k: usize,
    rows: Range<usize>,
    buf: &mut [f64],
    visit: impl FnMut(usize, usize, f64),
) {
    match z.d {
        1 => lanes::<1>(z, centroids, k, rows, buf, visit),
        2 => lanes::<2>(z, centroids, k, rows, buf, visit),
        3 => lanes::<3>(z, centroids, k, rows, buf, visit),
        4 => lanes::<4>(z, centroids, k, rows, buf, visit),
        5 => lanes::<5>(z, centroids, k, rows, buf, visit),
        6 => lanes::<6>(z, centroids, k, rows, buf, visit),
        7 => lanes::<7>(z, centroids, k, rows, buf, visit),
        8 => lanes::<8>(z, centroids, k, rows, buf, visit),
        _ => blocks(z, centroids, k, rows, buf, visit),
    }
}

/// Rows computed together in registers by [`lanes`].
const LANES: usize = 8;

/// For up to 8 features: [`LANES`] rows at a time, their `D` values held
/// in registers while every centroid's distance is summed (feature by
/// feature, as [`block_sq_dist`]) and compared; the rest of the rows by
/// [`blocks`].
#[inline(always)]
fn lanes<const D: usize>(
    z: &Matrix,
    centroids: &[f64],
    k: usize,
    rows: Range<usize>,
    buf: &mut [f64],
    mut visit: impl FnMut(usize, usize, f64),
) {
    let n_full = (rows.end - rows.start) / LANES * LANES;
    let cols: [&[f64]; D] = std::array::from_fn(|j| z.col(j));
    let mut start = rows.start;
    while start < rows.start + n_full {
        let x: [[f64; LANES]; D] = std::array::from_fn(|j| {
            let mut v = [0.0; LANES];
            v.copy_from_slice(&cols[j][start..start + LANES]);
            v
        });
        let mut best_d = [0.0; LANES];
        let mut best = [0u32; LANES];
        for c in 0..k {
            let cc = &centroids[c * D..(c + 1) * D];
            let mut acc = [0.0; LANES];
            for (a, &v) in acc.iter_mut().zip(&x[0]) {
                let t = v - cc[0];
                *a = t * t;
            }
            for j in 1..D {
                for (a, &v) in acc.iter_mut().zip(&x[j]) {
                    let t = v - cc[j];
                    *a += t * t;
                }
            }
            if c == 0 {
                best_d = acc;
            } else {
                // As linfa: a strictly smaller distance wins (branch-free).
                for ((bd, bi), &v) in best_d.iter_mut().zip(&mut best).zip(&acc) {
                    let lt = v < *bd;
                    *bd = if lt { v } else { *bd };
                    *bi = if lt { c as u32 } else { *bi };
                }
            }
        }
        for r in 0..LANES {
            visit(start + r, best[r] as usize, best_d[r]);
        }
        start += LANES;
    }
    blocks(z, centroids, k, start..rows.end, buf, visit);
}

/// Any number of features: the distances of a block of rows to each
/// centroid, then the nearest.
#[inline(always)]
fn blocks(
    z: &Matrix,
    centroids: &[f64],
    k: usize,
    rows: Range<usize>,
    buf: &mut [f64],
    mut visit: impl FnMut(usize, usize, f64),
) {
    let d = z.d;
    let mut best_d = [0.0f64; BLOCK];
    let mut best = [0u32; BLOCK];
    let mut start = rows.start;
    while start < rows.end {
        let b = BLOCK.min(rows.end - start);
        for c in 0..k {
            let out = &mut buf[c * BLOCK..c * BLOCK + b];
            block_sq_dist(z, start, &centroids[c * d..(c + 1) * d], out);
        }
        // As linfa: start from centroid 0, a strictly smaller distance wins
        // (branch-free, across the block).
        best_d[..b].copy_from_slice(&buf[..b]);
        best[..b].fill(0);
        for c in 1..k {
            let dc = &buf[c * BLOCK..c * BLOCK + b];
            for ((bd, bi), &v) in best_d[..b].iter_mut().zip(&mut best[..b]).zip(dc) {
                let lt = v < *bd;
                *bd = if lt { v } else { *bd };
                *bi = if lt { c as u32 } else { *bi };
            }
        }
        for r in 0..b {
            visit(start + r, best[r] as usize, best_d[r]);
        }
        start += b;
    }
}

/// `out[r]` = Σ_j (z[start + r, j] − c[j])², summed over j in order (as
/// `ndarray-stats`' `sq_l2_dist`, which linfa uses).
#[inline(always)]
fn block_sq_dist(z: &Matrix, start: usize, c: &[f64], out: &mut [f64]) {
    let b = out.len();
    let x = &z.col(0)[start..start + b];
    let c0 = c[0];
    for (o, &v) in out.iter_mut().zip(x) {
        let t = v - c0;
        *o = t * t;
    }
    for (j, &cj) in c.iter().enumerate().skip(1) {
        let x = &z.col(j)[start..start + b];
        for (o, &v) in out.iter_mut().zip(x) {
            let t = v - cj;
            *o += t * t;
        }
    }
}

/// linfa's k-means++: the first centroid a uniformly drawn row, each next
/// one a row drawn with probability ∝ its squared distance to the nearest
/// centroid so far (rand's `WeightedIndex`, as linfa; row 0 if every
/// distance is 0).
fn kmeans_plus_plus<R: Rng>(z: &Matrix, k: usize, rng: &mut R, threads: usize) -> Vec<f64> {
    let (n, d) = (z.n, z.d);
    let mut centroids = vec![0.0; k * d];
    let first = match WeightedIndex::new(std::iter::repeat_n(1.0f64, n)) {
        Ok(w) => w.sample(rng),
        Err(_) => 0,
    };
    centroids[..d].copy_from_slice(&z.row(first));
    // The squared distance of every row to its nearest centroid so far: the
    // minimum is exact, so updating it with each new centroid gives linfa's
    // values (it recomputes the minimum over all the centroids).
    let mut dists = vec![f64::INFINITY; n];
    for c in 1..k {
        let newest = centroids[(c - 1) * d..c * d].to_vec();
        for_chunks_mut(&mut dists, threads, |start, out| {
            let mut buf = vec![0.0; BLOCK];
            let mut at = 0;
            while at < out.len() {
                let b = BLOCK.min(out.len() - at);
                block_sq_dist(z, start + at, &newest, &mut buf[..b]);
                for (o, &v) in out[at..at + b].iter_mut().zip(&buf[..b]) {
                    // linfa starts from centroid 0 and takes strictly smaller.
                    if c == 1 || v < *o {
                        *o = v;
                    }
                }
                at += b;
            }
        });
        let next = WeightedIndex::new(dists.iter()).map(|w| w.sample(rng)).unwrap_or(0);
        centroids[c * d..(c + 1) * d].copy_from_slice(&z.row(next));
    }
    centroids
}

/// `f` over the chunks of `0..n` ([`CHUNK`] rows each), on up to `threads`
/// threads (contiguous runs of chunks each); results in chunk order.
fn for_chunks<T: Send>(n: usize, threads: usize, f: impl Fn(Range<usize>) -> T + Sync) -> Vec<T> {
    let chunks: Vec<Range<usize>> = (0..n.div_ceil(CHUNK))
        .map(|c| c * CHUNK..((c + 1) * CHUNK).min(n))
        .collect();
    let threads = threads.clamp(1, chunks.len().max(1));
    if threads == 1 {
        return chunks.into_iter().map(&f).collect();
    }
    let per = chunks.len().div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = chunks
            .chunks(per)
            .map(|group| s.spawn(move || group.iter().cloned().map(f).collect::<Vec<T>>()))
            .collect();
        handles
            .into_iter()
            // A panic in a worker is a bug: re-raise it here.
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// `f(start, rows)` over [`CHUNK`]-row chunks of `out`, in parallel.
fn for_chunks_mut(out: &mut [f64], threads: usize, f: impl Fn(usize, &mut [f64]) + Sync) {
    let n_chunks = out.len().div_ceil(CHUNK);
    let threads = threads.clamp(1, n_chunks.max(1));
    if threads == 1 {
        for (c, rows) in out.chunks_mut(CHUNK).enumerate() {
            f(c * CHUNK, rows);
        }
        return;
    }
    let per = n_chunks.div_ceil(threads) * CHUNK;
    std::thread::scope(|s| {
        let f = &f;
        for (g, group) in out.chunks_mut(per).enumerate() {
            s.spawn(move || {
                for (c, rows) in group.chunks_mut(CHUNK).enumerate() {
                    f(g * per + c * CHUNK, rows);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::DatasetBase;
    use linfa::traits::Fit;
    use linfa_clustering::{KMeans, KMeansInit};
    use ndarray::Array2;
    use rand_distr::Normal;

    /// Rows around five centres with some spread, row-major and as a Matrix.
    fn data(n: usize, d: usize, seed: u64) -> (Array2<f64>, Matrix) {
        let mut rng = Xoshiro256Plus::seed_from_u64(seed);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let mut x = Array2::zeros((n, d));
        for i in 0..n {
            let c = (i * 7) % 5;
            for j in 0..d {
                x[[i, j]] = (c * (j + 1)) as f64 * 0.8 + noise.sample(&mut rng);
            }
        }
        let m = Matrix::from_fn(n, d, |i, j| x[[i, j]]);
        (x, m)
    }

    fn linfa_fit(x: &Array2<f64>, p: &Params) -> Array2<f64> {
        KMeans::params_with_rng(p.k, Xoshiro256Plus::seed_from_u64(p.seed))
            .n_runs(p.n_runs)
            .max_n_iterations(p.max_n_iterations)
            .tolerance(p.tolerance)
            .init_method(KMeansInit::KMeansPlusPlus)
            .fit(&DatasetBase::from(x.clone()))
            .unwrap()
            .centroids()
            .clone()
    }

    fn params(k: usize, threads: usize) -> Params {
        Params {
            k,
            n_runs: 3,
            max_n_iterations: 300,
            tolerance: 1e-4,
            seed: 42,
            threads,
        }
    }

    #[test]
    fn equals_linfa_bit_for_bit_within_one_chunk() {
        // One chunk: the row sums are added in linfa's order too.
        for (n, d, k) in [(3000, 5, 5), (CHUNK, 3, 4), (500, 1, 2), (2001, 10, 3)] {
            let (x, m) = data(n, d, n as u64);
            let p = params(k, 2);
            let ours = fit(&m, &p).unwrap();
            let theirs = linfa_fit(&x, &p);
            assert_eq!(
                ours.centroids,
                theirs.iter().copied().collect::<Vec<_>>(),
                "n {n} d {d} k {k}"
            );
        }
    }

    #[test]
    fn one_iteration_equals_linfa_so_the_initialisation_does() {
        // A single Lloyd step from the k-means++ centroids: any difference
        // in the draws would show.
        let (x, m) = data(10_000, 5, 9);
        let p = Params {
            max_n_iterations: 1,
            n_runs: 1,
            ..params(5, 1)
        };
        let ours = fit(&m, &p).unwrap();
        assert_eq!(ours.iterations, vec![1]);
        assert_eq!(ours.centroids, linfa_fit(&x, &p).iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn identical_for_one_two_and_three_threads_over_many_chunks() {
        let (x, m) = data(5 * CHUNK + 123, 5, 4);
        let one = fit(&m, &params(5, 1)).unwrap();
        for threads in [2, 3] {
            assert_eq!(fit(&m, &params(5, threads)).unwrap(), one, "{threads} threads");
        }
        let (l1, d1) = assign(&m, &one.centroids, 1);
        let (l2, d2) = assign(&m, &one.centroids, 2);
        assert_eq!((l1, d1), (l2, d2));
        // And close to linfa, which sums the rows in one sequence (one run:
        // restarts that find the same optimum in another order of the
        // centroids may win by a last-bit difference of the inertia).
        let p = Params {
            n_runs: 1,
            ..params(5, 2)
        };
        let theirs = linfa_fit(&x, &p);
        for (a, b) in fit(&m, &p).unwrap().centroids.iter().zip(theirs.iter()) {
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn assign_takes_the_lowest_index_on_ties() {
        let m = Matrix::from_columns(3, vec![vec![0.0, 1.0, 2.0]]);
        let (labels, dists) = assign(&m, &[0.0, 2.0, 0.0], 2);
        // Row 1 is at distance 1 of centroids 0 and 1, row 0 of 0 and 2.
        assert_eq!(labels, vec![0, 0, 1]);
        assert_eq!(dists, vec![0.0, 1.0, 0.0]);
    }
}
