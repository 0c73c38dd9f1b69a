//! Reference fused dual-score attention, generic over the float type so the same code serves f32
//! parity tests and f64 finite-difference checks. Written for clarity: plain loops per sequence,
//! head and query row, over the valid keys only (masked keys are excluded, the −∞ semantics).
use num_traits::Float;

use crate::rng;

pub use super::Geometry;

/// One input: `[B, n, d]` values, or `[n, d]` given once for the whole batch (`shared`, batch
/// stride 0).
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a, F> {
    pub values: &'a [F],
    pub shared: bool,
}

impl<'a, F> Matrix<'a, F> {
    pub fn per_sequence(values: &'a [F]) -> Self {
        Matrix {
            values,
            shared: false,
        }
    }
    pub fn shared(values: &'a [F]) -> Self {
        Matrix {
            values,
            shared: true,
        }
    }
}

/// The reference's own use of the op's [`Geometry`] (its problem descriptor's sizes, `mod.rs`).
impl Geometry {
    /// Offset of channel `col` of slot `t` of sequence `b` in `m`.
    fn at<F>(&self, m: &Matrix<'_, F>, b: usize, t: usize, col: usize) -> usize {
        let d = self.width();
        (if m.shared { 0 } else { b * self.seq_len * d }) + t * d + col
    }
    fn stats_len(&self) -> usize {
        self.batch * self.heads * self.seq_len
    }
}

/// Everything the op reads. `pairs[0]` is (Q1, K1) (C_XA, or SASRec's only pair), `pairs[1]` is
/// (Q2, K2) (C_P), `pairs[2]` the third pair of w/o FA. `values` are V1 (required), V2 (gives
/// O_A = Π_A V2) and V3 (gives O_P = Π_P V3, needs `pairs[1]`).
#[derive(Debug, Clone)]
pub struct Problem<'a, F> {
    pub geometry: Geometry,
    /// L_b per sequence, clamped to [0, n].
    pub lengths: &'a [i32],
    pub pairs: Vec<(Matrix<'a, F>, Matrix<'a, F>)>,
    pub values: [Option<Matrix<'a, F>>; 3],
    pub dropout: f32,
    pub seed: u64,
}

/// Outputs O_X, O_A, O_P (`[B, n, d]`, present where the value was given) and the log-sum-exp of
/// every softmax row, `[3, B, h, n]` (softmax X, A, P; zero for padded rows and absent softmaxes).
#[derive(Debug, Clone)]
pub struct Forward<F> {
    pub outputs: [Option<Vec<F>>; 3],
    pub log_sum_exp: Vec<F>,
}

/// dQ_k and dK_k per pair, dV1..dV3; each has its input's shape (`[n, d]` summed over the batch
/// for shared inputs).
#[derive(Debug, Clone)]
pub struct Gradients<F> {
    pub pairs: Vec<(Vec<F>, Vec<F>)>,
    pub values: [Option<Vec<F>>; 3],
}

fn cast<F: Float>(x: f64) -> F {
    F::from(x).unwrap_or_else(F::nan)
}

fn length(lengths: &[i32], b: usize, n: usize) -> usize {
    lengths[b].clamp(0, n as i32) as usize
}

impl<'a, F: Float> Problem<'a, F> {
    fn scale(&self) -> F {
        cast::<F>(1.0 / (self.geometry.head_dim as f64).sqrt())
    }
    /// The dropout multipliers of query row `i` for the keys j ≤ i, into `out`: 1/(1 − p) where
    /// entry (i, j) is kept, 0 where dropped; all 1 without dropout. Shared by the three softmaxes.
    fn dropout_row(&self, b: usize, head: usize, i: usize, out: &mut Vec<F>) {
        out.clear();
        if self.dropout <= 0.0 {
            out.resize(i + 1, F::one());
            return;
        }
        let kept = cast::<F>(1.0 / (1.0 - self.dropout as f64));
        // `rng::dropout_keep`'s decision in its integer form (`rng::keep_threshold`, the same
        // bit for bit), written as a select: the keep decision is a coin flip at p = 0.5, and as
        // a float compare and a branch it was mispredicted about half the time (5.6 % of the
        // SASRec CPU step's samples, issue 23).
        let threshold = rng::keep_threshold(self.dropout);
        let first = self.geometry.dropout_counter(b, head, i, 0);
        out.extend((0..=i as u64).map(|j| {
            let keep = (rng::hash64(self.seed, first + j) >> 40) >= threshold;
            [F::zero(), kept][keep as usize]
        }));
    }
    /// One head's channels of slot `t` of sequence `b` in `m`.
    fn row(&self, m: &Matrix<'a, F>, b: usize, t: usize, head: usize) -> &'a [F] {
        let g = &self.geometry;
        let start = g.at(m, b, t, head * g.head_dim);
        &m.values[start..start + g.head_dim]
    }
    /// Raw scores S_k(i, j) = q_i · k_j of pair k over one head's channels, for the keys j ≤ i,
    /// into `out[k]` (one buffer per pair, reused across rows: no allocation per row).
    fn scores(&self, b: usize, head: usize, i: usize, out: &mut [Vec<F>]) {
        for ((q, k), scores) in self.pairs.iter().zip(out.iter_mut()) {
            self.dots(self.row(q, b, i, head), k, b, head, i, scores);
        }
    }
    /// `out[j] = x · m_j` (one head's channels of slot j of sequence `b` in `m`) for j ≤ i:
    /// each sum in channel order from zero, exactly as [`dot`], but eight keys at a time with
    /// the channel loop outside, so eight sums proceed side by side instead of one dependent
    /// chain of additions per key.
    fn dots(&self, x: &[F], m: &Matrix<'a, F>, b: usize, head: usize, i: usize, out: &mut Vec<F>) {
        const KEYS: usize = 8;
        out.clear();
        let mut start = 0;
        while start <= i {
            let count = KEYS.min(i + 1 - start);
            let keys: [&[F]; KEYS] =
                std::array::from_fn(|k| &self.row(m, b, start + k.min(count - 1), head)[..x.len()]);
            let mut sums = [F::zero(); KEYS];
            for (c, &xc) in x.iter().enumerate() {
                for (sum, key) in sums.iter_mut().zip(&keys) {
                    *sum = *sum + xc * key[c];
                }
            }
            out.extend_from_slice(&sums[..count]);
            start += count;
        }
    }
    /// Logits of softmax `s` (0 = X: sum of all pairs, 1 = A: pair 0, 2 = P: pair 1), scaled by
    /// `scale` ([`Problem::scale`], computed once by the caller).
    fn logits(&self, scores: &[Vec<F>], s: usize, j: usize, scale: F) -> F {
        let raw = match s {
            0 => scores.iter().fold(F::zero(), |acc, pair| acc + pair[j]),
            1 => scores[0][j],
            _ => scores[1][j],
        };
        raw * scale
    }
}

fn dot<F: Float>(x: &[F], y: &[F]) -> F {
    x.iter().zip(y).fold(F::zero(), |s, (&a, &b)| s + a * b)
}

/// `target += weight · source`, channel by channel.
fn add_scaled<F: Float>(target: &mut [F], weight: F, source: &[F]) {
    for (t, &x) in target.iter_mut().zip(source) {
        *t = *t + weight * x;
    }
}

/// One sequence's part of the forward: O_X, O_A, O_P rows (`[n, d]`, where the value was given)
/// and the log-sum-exp of its rows, `[3, h, n]`.
struct SequenceForward<F> {
    outputs: [Option<Vec<F>>; 3],
    log_sum_exp: Vec<F>,
}

fn forward_sequence<F: Float>(problem: &Problem<'_, F>, b: usize) -> SequenceForward<F> {
    let g = problem.geometry;
    let (n, d, dh) = (g.seq_len, g.width(), g.head_dim);
    let mut outputs: [Option<Vec<F>>; 3] =
        std::array::from_fn(|s| problem.values[s].map(|_| vec![F::zero(); n * d]));
    let mut log_sum_exp = vec![F::zero(); 3 * g.heads * n];
    let length = length(problem.lengths, b, n);
    let scale = problem.scale();
    // Row buffers, reused for every (head, row): scores per pair, dropout multipliers, and
    // exp(logit − max) per key (computed once, for the sum and for the weights alike).
    let mut scores = vec![Vec::with_capacity(n); problem.pairs.len()];
    let mut multipliers = Vec::with_capacity(n);
    let mut exps = Vec::with_capacity(n);
    for head in 0..g.heads {
        let col = head * dh;
        for i in 0..length {
            problem.scores(b, head, i, &mut scores);
            problem.dropout_row(b, head, i, &mut multipliers);
            for s in 0..3 {
                let (Some(value), Some(out)) = (problem.values[s], outputs[s].as_mut()) else {
                    continue;
                };
                exps.clear();
                exps.extend((0..=i).map(|j| problem.logits(&scores, s, j, scale)));
                let max = exps.iter().fold(F::neg_infinity(), |m, &x| m.max(x));
                for x in exps.iter_mut() {
                    *x = (*x - max).exp();
                }
                let sum = exps.iter().fold(F::zero(), |acc, &e| acc + e);
                log_sum_exp[(s * g.heads + head) * n + i] = max + sum.ln();
                let out_row = &mut out[i * d + col..][..dh];
                for (j, &e) in exps.iter().enumerate() {
                    let weight = e / sum * multipliers[j];
                    add_scaled(out_row, weight, problem.row(&value, b, j, head));
                }
            }
        }
    }
    SequenceForward {
        outputs,
        log_sum_exp,
    }
}

/// Assembles the per-sequence parts (in sequence order) into the op's outputs.
fn assemble_forward<F: Float + Send + Sync>(
    problem: &Problem<'_, F>,
    sequences: Vec<SequenceForward<F>>,
) -> Forward<F> {
    let g = problem.geometry;
    let n = g.seq_len;
    let mut parts: [Option<Vec<Vec<F>>>; 3] =
        std::array::from_fn(|s| problem.values[s].map(|_| Vec::with_capacity(g.batch)));
    let mut log_sum_exp = vec![F::zero(); 3 * g.stats_len()];
    for (b, mut sequence) in sequences.into_iter().enumerate() {
        for (out, part) in parts.iter_mut().zip(&mut sequence.outputs) {
            if let (Some(out), Some(part)) = (out.as_mut(), part.take()) {
                out.push(part);
            }
        }
        for s in 0..3 {
            for head in 0..g.heads {
                let from = (s * g.heads + head) * n;
                let to = (s * g.batch * g.heads + b * g.heads + head) * n;
                log_sum_exp[to..to + n].copy_from_slice(&sequence.log_sum_exp[from..from + n]);
            }
        }
    }
    // The sequences' rows concatenated on the pool's threads (`crate::parallel`).
    let outputs = parts.map(|p| p.map(crate::parallel::concat_parallel));
    Forward {
        outputs,
        log_sum_exp,
    }
}

/// O_X, O_A, O_P and the log-sum-exp statistics.
pub fn forward<F: Float + Send + Sync>(problem: &Problem<'_, F>) -> Forward<F> {
    let sequences = (0..problem.geometry.batch)
        .map(|b| forward_sequence(problem, b))
        .collect();
    assemble_forward(problem, sequences)
}

/// [`forward`] with the sequences on the CPU path's threads (`crate::parallel`): each sequence
/// writes only its own rows, so the result is [`forward`]'s, bit for bit, for every thread count.
pub fn forward_threaded<F: Float + Send + Sync>(problem: &Problem<'_, F>) -> Forward<F> {
    let sequences =
        crate::parallel::map_units(problem.geometry.batch, |b| forward_sequence(problem, b));
    assemble_forward(problem, sequences)
}

/// Where one sequence's gradients go: per input, a `[n, d]` view indexed by slot and channel (the
/// sequence's rows of a `[B, n, d]` gradient, or the `[n, d]` sum of a shared input).
struct SequenceGradients<'g, F> {
    pairs: Vec<(&'g mut [F], &'g mut [F])>,
    values: [Option<&'g mut [F]>; 3],
}

#[allow(clippy::needless_range_loop)] // s indexes the values, outputs and gradients alike
fn backward_sequence<F: Float>(
    problem: &Problem<'_, F>,
    forward: &Forward<F>,
    output_grads: [Option<&[F]>; 3],
    b: usize,
    targets: &mut SequenceGradients<'_, F>,
) {
    let g = problem.geometry;
    let (n, d, dh) = (g.seq_len, g.width(), g.head_dim);
    let scale = problem.scale();
    let length = length(problem.lengths, b, n);
    // Row buffers, reused for every (head, row) (see `forward_sequence`).
    let mut scores = vec![Vec::with_capacity(n); problem.pairs.len()];
    let mut multipliers = Vec::with_capacity(n);
    let mut score_grads: Vec<Vec<F>> = vec![Vec::with_capacity(n); problem.pairs.len()];
    let mut grad_probabilities = Vec::with_capacity(n);
    for head in 0..g.heads {
        let col = head * dh;
        for i in 0..length {
            problem.scores(b, head, i, &mut scores);
            problem.dropout_row(b, head, i, &mut multipliers);
            // dZ_k(i, j): gradient of the raw score of pair k.
            for pair_grad in score_grads.iter_mut() {
                pair_grad.clear();
                pair_grad.resize(i + 1, F::zero());
            }
            for s in 0..3 {
                let (Some(value), Some(out), Some(grad)) = (
                    problem.values[s],
                    forward.outputs[s].as_ref(),
                    output_grads[s],
                ) else {
                    continue;
                };
                let grad_value = targets.values[s].as_mut().expect("present value");
                let own_row = b * n * d + i * d + col;
                let grad_row = &grad[own_row..own_row + dh];
                // D_i = dO_i · O_i.
                let row_dot = dot(grad_row, &out[own_row..own_row + dh]);
                let lse = forward.log_sum_exp[(s * g.batch * g.heads + b * g.heads + head) * n + i];
                // dO_i · v_j for every key j ≤ i.
                problem.dots(grad_row, &value, b, head, i, &mut grad_probabilities);
                for j in 0..=i {
                    let p = (problem.logits(&scores, s, j, scale) - lse).exp();
                    let m = multipliers[j];
                    let grad_p = grad_probabilities[j];
                    let start = j * d + col;
                    add_scaled(&mut grad_value[start..start + dh], m * p, grad_row);
                    let grad_logit = p * (m * grad_p - row_dot) * scale;
                    for (k, pair_grad) in score_grads.iter_mut().enumerate() {
                        if s == 0 || (s == 1 && k == 0) || (s == 2 && k == 1) {
                            pair_grad[j] = pair_grad[j] + grad_logit;
                        }
                    }
                }
            }
            for (k, (q, key)) in problem.pairs.iter().enumerate() {
                let (dq, dk) = &mut targets.pairs[k];
                let query = problem.row(q, b, i, head);
                let query_start = i * d + col;
                for (j, &dz) in score_grads[k].iter().enumerate() {
                    add_scaled(
                        &mut dq[query_start..query_start + dh],
                        dz,
                        problem.row(key, b, j, head),
                    );
                    let key_start = j * d + col;
                    add_scaled(&mut dk[key_start..key_start + dh], dz, query);
                }
            }
        }
    }
}

fn zero_gradients<F: Float>(problem: &Problem<'_, F>) -> Gradients<F> {
    let zeros_like = |m: &Matrix<'_, F>| vec![F::zero(); m.values.len()];
    Gradients {
        pairs: problem
            .pairs
            .iter()
            .map(|(q, k)| (zeros_like(q), zeros_like(k)))
            .collect(),
        values: std::array::from_fn(|s| problem.values[s].as_ref().map(zeros_like)),
    }
}

/// Gradients of every input given the upstream gradients of the present outputs (`None`: zero).
/// Padded query rows contribute nothing, whatever their upstream gradient.
pub fn backward<F: Float>(
    problem: &Problem<'_, F>,
    forward: &Forward<F>,
    output_grads: [Option<&[F]>; 3],
) -> Gradients<F> {
    let g = problem.geometry;
    let rows = g.seq_len * g.width();
    let mut grads = zero_gradients(problem);
    // The sequence's rows of a per-sequence gradient; the whole sum of a shared one (sequences
    // add into it in order).
    let view = |m: &Matrix<'_, F>, b: usize| {
        if m.shared {
            0..rows
        } else {
            b * rows..(b + 1) * rows
        }
    };
    for b in 0..g.batch {
        let mut targets = SequenceGradients {
            pairs: grads
                .pairs
                .iter_mut()
                .zip(&problem.pairs)
                .map(|((dq, dk), (q, k))| (&mut dq[view(q, b)], &mut dk[view(k, b)]))
                .collect(),
            values: {
                let mut values = grads.values.iter_mut().zip(&problem.values);
                std::array::from_fn(|_| {
                    let (grad, value) = values.next().expect("three values");
                    match (grad.as_mut(), value) {
                        (Some(grad), Some(value)) => Some(&mut grad[view(value, b)]),
                        _ => None,
                    }
                })
            },
        };
        backward_sequence(problem, forward, output_grads, b, &mut targets);
    }
    grads
}

/// [`backward`] with the sequences on the CPU path's threads (`crate::parallel`). A sequence
/// writes its own rows of a per-sequence gradient; a shared input's gradient is summed from
/// per-sequence partials added in sequence order, so the result does not depend on the thread
/// count (it may differ from [`backward`]'s in the last bits of shared gradients).
pub fn backward_threaded<F: Float + Send + Sync>(
    problem: &Problem<'_, F>,
    forward: &Forward<F>,
    output_grads: [Option<&[F]>; 3],
) -> Gradients<F> {
    let g = problem.geometry;
    let rows = g.seq_len * g.width();
    let mut grads = zero_gradients(problem);
    // Inputs in a fixed order: pair k's query and key at 2k, 2k + 1, then the three values.
    let matrices: Vec<Option<&Matrix<'_, F>>> = problem
        .pairs
        .iter()
        .flat_map(|(q, k)| [Some(q), Some(k)])
        .chain(problem.values.iter().map(|v| v.as_ref()))
        .collect();
    let shared: Vec<bool> = matrices
        .iter()
        .map(|m| m.is_some_and(|m| m.shared))
        .collect();
    // Per sequence and shared input, a zeroed partial.
    let mut partials: Vec<Vec<Vec<F>>> = (0..g.batch)
        .map(|_| {
            shared
                .iter()
                .map(|&s| if s { vec![F::zero(); rows] } else { Vec::new() })
                .collect()
        })
        .collect();
    {
        // Per input, an iterator over its per-sequence row blocks (none for shared or absent).
        let mut blocks: Vec<std::slice::ChunksMut<'_, F>> = Vec::new();
        for (dq, dk) in grads.pairs.iter_mut() {
            blocks.push(dq.chunks_mut(rows.max(1)));
            blocks.push(dk.chunks_mut(rows.max(1)));
        }
        for dv in grads.values.iter_mut() {
            blocks.push(match dv {
                Some(dv) => dv.chunks_mut(rows.max(1)),
                None => [].chunks_mut(1),
            });
        }
        let mut units: Vec<SequenceGradients<'_, F>> = Vec::with_capacity(g.batch);
        for partial in partials.iter_mut() {
            let mut views: Vec<Option<&mut [F]>> = Vec::with_capacity(matrices.len());
            let mut partial_views = partial.iter_mut();
            for (t, matrix) in matrices.iter().enumerate() {
                let own = partial_views.next().expect("one partial slot per input");
                views.push(match matrix {
                    None => None,
                    Some(m) if m.shared => Some(own.as_mut_slice()),
                    Some(_) => blocks[t].next(),
                });
            }
            let mut views = views.into_iter();
            let pairs = (0..problem.pairs.len())
                .map(|_| {
                    let q = views.next().flatten().expect("query gradient");
                    let k = views.next().flatten().expect("key gradient");
                    (q, k)
                })
                .collect();
            let values = std::array::from_fn(|_| views.next().flatten());
            units.push(SequenceGradients { pairs, values });
        }
        use rayon::prelude::*;
        units
            .into_par_iter()
            .enumerate()
            .for_each(|(b, mut targets)| {
                backward_sequence(problem, forward, output_grads, b, &mut targets)
            });
    }
    // Shared inputs: the partials added in sequence order.
    let mut outputs: Vec<Option<&mut Vec<F>>> = Vec::new();
    for (dq, dk) in grads.pairs.iter_mut() {
        outputs.push(Some(dq));
        outputs.push(Some(dk));
    }
    for dv in grads.values.iter_mut() {
        outputs.push(dv.as_mut());
    }
    for (t, out) in outputs.into_iter().enumerate() {
        if let (true, Some(out)) = (shared[t], out) {
            for partial in &partials {
                for (o, &p) in out.iter_mut().zip(&partial[t]) {
                    *o = *o + p;
                }
            }
        }
    }
    grads
}
