//! HIE (issue 4), every tier in one file:
//! - tier 1: the f64 CPU reference against independent checks (QR properties, a modified
//!   Gram–Schmidt QR, sign-convention independence) and finite differences of both backward modes;
//! - tiers 2 and 4: the kernels (emulated, and the GPU when present) and the CPU f32 dispatch
//!   against the f64 reference, forward and both backwards; rank-deficient inputs; the tape API.
mod common;

use asif_kernels::autograd::gradcheck::{check_gradient, GradCheckOptions};
use asif_kernels::autograd::Tape;
use asif_kernels::kernel_version::{self, KernelVersion};
use asif_kernels::ops::hie::{self, Dims, HieBackward, HieOptions};
use asif_kernels::{Device, Error, IndexTensor, Precision, Tensor};
use common::{all_devices, assert_close, for_each_version, random, rng, tensor, weighted};
use rand::rngs::StdRng;
use rand::Rng;

/// One batch of HIE inputs in f64.
struct Case {
    dims: Dims,
    lengths: Vec<i32>,
    keep_padding: bool,
    h_x: Vec<f64>,
    h_a: Vec<f64>,
    w_r: Vec<f64>,
    dy: Vec<f64>,
}

impl Case {
    fn random(rng: &mut StdRng, dims: Dims, lengths: Vec<i32>, keep_padding: bool) -> Case {
        let Dims { batch, n, d, r } = dims;
        assert_eq!(lengths.len(), batch);
        Case {
            dims,
            lengths,
            keep_padding,
            // Post-LN scale: entries of order 1.
            h_x: random(rng, batch * n * d, 0.0, 1.0),
            h_a: random(rng, batch * n * d, 0.0, 1.0),
            w_r: random(rng, n * r, 0.0, 1.0),
            dy: random(rng, batch * n * d, 0.0, 1.0),
        }
    }

    fn options(&self) -> HieOptions {
        HieOptions {
            keep_padding: self.keep_padding,
            ..HieOptions::default()
        }
    }

    fn forward_with(&self, h_x: &[f64], h_a: &[f64], w_r: &[f64]) -> hie::ForwardReference<f64> {
        hie::forward_reference(
            h_x,
            h_a,
            w_r,
            &self.lengths,
            self.dims,
            self.keep_padding,
            hie::RANK_TOLERANCE as f64,
        )
    }

    fn forward(&self) -> hie::ForwardReference<f64> {
        self.forward_with(&self.h_x, &self.h_a, &self.w_r)
    }

    fn backward(
        &self,
        saved: &hie::ForwardReference<f64>,
        full: bool,
    ) -> hie::BackwardReference<f64> {
        hie::backward_reference(
            &self.h_x,
            &self.h_a,
            &self.w_r,
            &self.lengths,
            saved,
            &self.dy,
            self.dims,
            self.keep_padding,
            full,
        )
    }

    /// The sizes, and the kernel version HIE launches now on this thread.
    fn label(&self) -> String {
        let Dims { batch, n, d, r } = self.dims;
        let version = kernel_version::selected(hie::KERNEL_FAMILY).expect("kernel version");
        format!(
            "B {batch} n {n} d {d} r {r} lengths {:?} keep {} kernel {}",
            self.lengths,
            self.keep_padding,
            version.name()
        )
    }
}

fn dims(batch: usize, n: usize, d: usize, r: usize) -> Dims {
    Dims { batch, n, d, r }
}

/// Σ w ⊙ values.
fn max_abs(values: &[f64]) -> f64 {
    values.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

// ---------------------------------------------------------------------------------------------
// Tier 1: the reference QR against independent checks.

/// Checks Q, R from `householder_qr` on M (d×r): Q orthonormal on kept columns and zero on
/// dropped ones, R upper triangular, M = QR on kept columns, dropped columns of M in span(Q_K).
/// Returns the kept flags.
fn check_qr(m: &[f64], d: usize, r: usize, what: &str) -> Vec<bool> {
    let (q, r_mat) = hie::householder_qr(m, d, r, hie::RANK_TOLERANCE as f64, r);
    let kept: Vec<bool> = (0..r).map(|k| r_mat[k * r + k] != 0.0).collect();
    let scale = max_abs(m).max(1e-300);
    for j in 0..r {
        for k in 0..r {
            let dot: f64 = (0..d).map(|i| q[i * r + j] * q[i * r + k]).sum();
            let want = if j == k && kept[k] { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-12, "{what}: (QᵀQ)[{j},{k}] = {dot}");
            if j > k {
                assert_eq!(
                    r_mat[j * r + k],
                    0.0,
                    "{what}: R not upper triangular at [{j},{k}]"
                );
            }
        }
    }
    for k in 0..r {
        for i in 0..d {
            let qr: f64 = (0..r).map(|j| q[i * r + j] * r_mat[j * r + k]).sum();
            let projected: f64 = (0..r)
                .map(|j| q[i * r + j] * (0..d).map(|l| q[l * r + j] * m[l * r + k]).sum::<f64>())
                .sum();
            if kept[k] {
                assert!(
                    (qr - m[i * r + k]).abs() < 1e-12 * scale * r as f64,
                    "{what}: M ≠ QR at [{i},{k}]"
                );
            } else {
                assert!(
                    r_mat.iter().skip(k).step_by(r).all(|&v| v == 0.0),
                    "{what}: dropped column {k} has R entries"
                );
                assert!(
                    (projected - m[i * r + k]).abs() < 1e-9 * scale,
                    "{what}: dropped column {k} is not in span(Q_K)"
                );
            }
        }
    }
    kept
}

/// Householder's kept columns equal modified Gram–Schmidt's up to the sign of R_kk.
fn check_against_gram_schmidt(m: &[f64], d: usize, r: usize, what: &str) {
    let (q, r_mat) = hie::householder_qr(m, d, r, hie::RANK_TOLERANCE as f64, r);
    let (q_gs, r_gs) = hie::gram_schmidt_qr(m, d, r, hie::RANK_TOLERANCE as f64, r);
    for k in 0..r {
        assert_eq!(
            r_mat[k * r + k] != 0.0,
            r_gs[k * r + k] != 0.0,
            "{what}: kept sets differ at column {k}"
        );
        let sign = if r_mat[k * r + k] < 0.0 { -1.0 } else { 1.0 };
        for i in 0..d {
            assert!(
                (sign * q[i * r + k] - q_gs[i * r + k]).abs() < 1e-10,
                "{what}: Q[{i},{k}] differs from Gram–Schmidt"
            );
        }
        for j in 0..r {
            let sign_j = if r_mat[j * r + j] < 0.0 { -1.0 } else { 1.0 };
            assert!(
                (sign_j * r_mat[j * r + k] - r_gs[j * r + k]).abs() < 1e-10 * max_abs(m).max(1.0),
                "{what}: R[{j},{k}] differs"
            );
        }
    }
}

/// M = H_Xᵀ W_r over the first `rows` rows.
fn reduce(h_x: &[f64], w_r: &[f64], rows: usize, d: usize, r: usize) -> Vec<f64> {
    let mut m = vec![0.0; d * r];
    for t in 0..rows {
        for i in 0..d {
            for k in 0..r {
                m[i * r + k] += h_x[t * d + i] * w_r[t * r + k];
            }
        }
    }
    m
}

#[test]
fn reference_qr_is_a_qr_and_equals_gram_schmidt() {
    let mut rng = rng(40);
    for &(d, r) in &[(16usize, 1usize), (16, 16), (64, 24), (33, 7), (256, 32)] {
        // Full rank: a dense random M.
        let m = random(&mut rng, d * r, 0.0, 1.0);
        let kept = check_qr(&m, d, r, &format!("random d {d} r {r}"));
        assert!(
            kept.iter().all(|&k| k),
            "random d {d} r {r}: a column was dropped"
        );
        check_against_gram_schmidt(&m, d, r, &format!("random d {d} r {r}"));
        // M = H_Xᵀ W_r from L rows: rank min(L, r), the trailing columns dropped.
        for &rows in &[0usize, 1, 3, r.saturating_sub(1), r, r + 5] {
            let h_x = random(&mut rng, rows * d, 0.0, 1.0);
            let w_r = random(&mut rng, rows * r, 0.0, 1.0);
            let m = reduce(&h_x, &w_r, rows, d, r);
            let what = format!("H_Xᵀ W_r d {d} r {r} rows {rows}");
            let kept = check_qr(&m, d, r, &what);
            let rank = rows.min(r);
            assert_eq!(
                kept,
                (0..r).map(|k| k < rank).collect::<Vec<_>>(),
                "{what}: kept set"
            );
            check_against_gram_schmidt(&m, d, r, &what);
        }
    }
    // Structured rank deficiency: a zero column and a repeated column in the middle.
    let (d, r) = (20usize, 6usize);
    let mut m = random(&mut rng, d * r, 0.0, 1.0);
    for i in 0..d {
        m[i * r + 1] = 0.0;
        m[i * r + 4] = 2.0 * m[i * r + 2];
    }
    let kept = check_qr(&m, d, r, "zero and repeated columns");
    assert_eq!(kept, vec![true, false, true, true, false, true]);
    check_against_gram_schmidt(&m, d, r, "zero and repeated columns");
}

#[test]
fn projection_does_not_depend_on_the_qr_sign_convention() {
    let mut rng = rng(41);
    for &(n, d, r, length) in &[
        (10usize, 16usize, 4usize, 10i32),
        (12, 64, 16, 7),
        (50, 64, 24, 50),
    ] {
        let case = Case::random(&mut rng, dims(1, n, d, r), vec![length], false);
        let saved = case.forward();
        let rows = length as usize;
        // Flip the signs of a random subset of Q's columns.
        let mut flipped = saved.q.clone();
        let signs: Vec<f64> = (0..r)
            .map(|_| if rng.random::<bool>() { -1.0 } else { 1.0 })
            .collect();
        for i in 0..d {
            for k in 0..r {
                flipped[i * r + k] *= signs[k];
            }
        }
        let (output, mask) = hie::project_reference(&case.h_x, &case.h_a, &flipped, rows, n, d, r);
        assert_eq!(
            mask, saved.mask,
            "n {n} d {d} r {r}: the mask changed with the signs"
        );
        let diff = output
            .iter()
            .zip(&saved.output)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff < 1e-12,
            "n {n} d {d} r {r}: h_A* changed by {diff} with the signs of Q"
        );
        // Gram–Schmidt's Q (positive R_kk, another convention) gives the same h_A*.
        let m = reduce(&case.h_x, &case.w_r, rows, d, r);
        let (q_gs, _) = hie::gram_schmidt_qr(&m, d, r, hie::RANK_TOLERANCE as f64, rows);
        let (output_gs, _) = hie::project_reference(&case.h_x, &case.h_a, &q_gs, rows, n, d, r);
        let diff = output_gs
            .iter()
            .zip(&saved.output)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff < 1e-10,
            "n {n} d {d} r {r}: Gram–Schmidt's h_A* differs by {diff}"
        );
    }
}

#[test]
fn padding_rows_are_ignored_by_default_and_kept_on_request() {
    let mut rng = rng(42);
    let (n, d, r) = (8usize, 16usize, 4usize);
    let case = Case::random(&mut rng, dims(2, n, d, r), vec![5, 8], false);
    let base = case.forward();
    // Padding rows of sequence 0 are zero in the output and the mask.
    assert!(base.output[5 * d..n * d].iter().all(|&v| v == 0.0));
    assert!(base.mask[5 * r..n * r].iter().all(|&v| v == 0.0));
    // Changing what sits in the padding changes nothing by default...
    let mut other = Case::random(&mut rng, dims(2, n, d, r), vec![5, 8], false);
    other.w_r[..5 * r].copy_from_slice(&case.w_r[..5 * r]);
    for t in 0..5 {
        other.h_x[t * d..(t + 1) * d].copy_from_slice(&case.h_x[t * d..(t + 1) * d]);
        other.h_a[t * d..(t + 1) * d].copy_from_slice(&case.h_a[t * d..(t + 1) * d]);
    }
    let moved = other.forward();
    let diff = moved.output[..n * d]
        .iter()
        .zip(&base.output[..n * d])
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff < 1e-12, "padding leaked into h_A* ({diff})");
    // ...and with keep_padding the padding rows take part.
    let kept = Case {
        keep_padding: true,
        ..other
    }
    .forward();
    assert!(
        kept.output[5 * d..n * d].iter().any(|&v| v != 0.0),
        "keep_padding left the padding rows at zero"
    );
}

// ---------------------------------------------------------------------------------------------
// Tier 1: finite differences of both backward modes (f64).

fn gradcheck_options() -> GradCheckOptions {
    GradCheckOptions {
        step: 1e-6,
        relative_tolerance: 1e-5,
        absolute_tolerance: 1e-8,
    }
}

fn check_finite_differences(case: &Case, full: bool) {
    let saved = case.forward();
    let grads = case.backward(&saved, full);
    let what = case.label();
    // Changing the padding rows of H_A must not matter by default: the analytic gradient there is 0.
    let loss_a = |p: &[f64]| weighted(&case.forward_with(&case.h_x, p, &case.w_r).output, &case.dy);
    check_gradient(loss_a, &case.h_a, &grads.dh_a, gradcheck_options())
        .unwrap_or_else(|e| panic!("dH_A full {full} {what}: {e}"));
    if full {
        let loss_x =
            |p: &[f64]| weighted(&case.forward_with(p, &case.h_a, &case.w_r).output, &case.dy);
        check_gradient(loss_x, &case.h_x, &grads.dh_x, gradcheck_options())
            .unwrap_or_else(|e| panic!("dH_X {what}: {e}"));
        let loss_w =
            |p: &[f64]| weighted(&case.forward_with(&case.h_x, &case.h_a, p).output, &case.dy);
        check_gradient(loss_w, &case.w_r, &grads.dw_r, gradcheck_options())
            .unwrap_or_else(|e| panic!("dW_r {what}: {e}"));
    }
}

#[test]
fn both_backward_modes_match_finite_differences_at_full_rank() {
    let mut rng = rng(43);
    for &(batch, n, d, r, ref lengths, keep) in &[
        (1usize, 6usize, 8usize, 3usize, vec![6i32], false),
        (2, 7, 9, 4, vec![7, 5], false),
        (2, 10, 12, 1, vec![3, 10], false),
        (1, 8, 10, 8, vec![8], false),
        (2, 6, 10, 4, vec![2, 6], true), // padding kept: full rank whatever the lengths
    ] {
        let case = Case::random(&mut rng, dims(batch, n, d, r), lengths.clone(), keep);
        check_finite_differences(&case, false);
        check_finite_differences(&case, true);
    }
}

#[test]
fn full_backward_is_exact_where_the_rank_is_structurally_low() {
    // L_b < r: M has rank L_b for every H_X, W_r, so the dropped set is stable under small
    // perturbations and the kept-column QR backward is the true gradient.
    let mut rng = rng(44);
    let case = Case::random(&mut rng, dims(3, 8, 10, 5), vec![2, 1, 4], false);
    check_finite_differences(&case, true);
}

/// Rank-deficient inputs the model meets: L_b < r, L_b = 1, L_b = 0, identical rows, a zero H_X.
fn rank_deficient_cases(
    rng: &mut StdRng,
    n: usize,
    d: usize,
    r: usize,
) -> Vec<(&'static str, Case)> {
    let mut cases = Vec::new();
    cases.push((
        "L_b < r, L_b = 1, L_b = 0",
        Case::random(
            rng,
            dims(3, n, d, r),
            vec![(r as i32 - 2).clamp(1, n as i32), 1, 0],
            false,
        ),
    ));
    let mut repeated = Case::random(rng, dims(1, n, d, r), vec![n as i32], false);
    let first_x = repeated.h_x[..d].to_vec();
    let first_a = repeated.h_a[..d].to_vec();
    for t in 1..n {
        repeated.h_x[t * d..(t + 1) * d].copy_from_slice(&first_x);
        repeated.h_a[t * d..(t + 1) * d].copy_from_slice(&first_a);
    }
    cases.push(("identical rows", repeated));
    let mut zero = Case::random(rng, dims(1, n, d, r), vec![n as i32], false);
    zero.h_x.iter_mut().for_each(|v| *v = 0.0);
    cases.push(("zero H_X", zero));
    cases
}

#[test]
fn rank_deficient_inputs_give_finite_outputs_and_gradients() {
    let mut rng = rng(45);
    for (what, case) in rank_deficient_cases(&mut rng, 6, 12, 5) {
        let saved = case.forward();
        assert!(
            saved
                .output
                .iter()
                .chain(&saved.q)
                .chain(&saved.r)
                .all(|v| v.is_finite()),
            "{what}: forward not finite"
        );
        for full in [false, true] {
            let grads = case.backward(&saved, full);
            assert!(
                grads
                    .dh_a
                    .iter()
                    .chain(&grads.dh_x)
                    .chain(&grads.dw_r)
                    .all(|v| v.is_finite()),
                "{what}: gradient not finite (full {full})"
            );
        }
        if what == "zero H_X" {
            assert!(
                saved.output.iter().all(|&v| v == 0.0),
                "zero H_X: every column is dropped, h_A* = 0"
            );
            assert!(saved.q.iter().all(|&v| v == 0.0));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiers 2 and 4: kernels (and the CPU f32 dispatch) against the f64 reference.

struct DeviceRun {
    output: Tensor,
    q: Tensor,
    r: Tensor,
    mask: Tensor,
    q_constant: hie::HieGradients,
    full: hie::HieGradients,
}

fn run_on(device: &Device, case: &Case) -> DeviceRun {
    let Dims { batch, n, d, r } = case.dims;
    let h_x = tensor(device, &[batch, n, d], &case.h_x);
    let h_a = tensor(device, &[batch, n, d], &case.h_a);
    let w_r = tensor(device, &[n, r], &case.w_r);
    let dy = tensor(device, &[batch, n, d], &case.dy);
    let lengths = IndexTensor::from_vec(device, &[batch], case.lengths.clone()).expect("lengths");
    let (output, saved) =
        hie::hie_forward(&h_x, &h_a, &w_r, &lengths, case.options()).expect("forward");
    let q_constant = hie::hie_backward(
        &h_x,
        &h_a,
        &w_r,
        &lengths,
        &saved,
        &dy,
        case.options(),
        HieBackward::QConstant,
    )
    .expect("backward");
    let full = hie::hie_backward(
        &h_x,
        &h_a,
        &w_r,
        &lengths,
        &saved,
        &dy,
        case.options(),
        HieBackward::FullQr,
    )
    .expect("full backward");
    DeviceRun {
        output,
        q: saved.q,
        r: saved.r,
        mask: saved.mask,
        q_constant,
        full,
    }
}

/// fp32 against f64. The forward is a QR (error ~ d·u·κ in Q, κ = max|R_kk| / min|R_kk| over kept
/// columns) followed by sums of d terms: 1e-5, or 1e-6·κ when that is larger. The full backward
/// also solves with R, which multiplies errors by up to κ: 1e-5·κ. Measured on these cases: κ ≤ 12,
/// and with a flat 1e-5 only one entry failed (dW_r at 1.2e-5).
fn tolerances(case: &Case, reference: &hie::ForwardReference<f64>) -> (f64, f64) {
    let Dims { batch, r, .. } = case.dims;
    let mut kappa = 1.0f64;
    for b in 0..batch {
        let diagonal: Vec<f64> = (0..r)
            .map(|k| reference.r[b * r * r + k * r + k].abs())
            .filter(|&v| v != 0.0)
            .collect();
        if let (Some(lo), Some(hi)) = (
            diagonal.iter().cloned().reduce(f64::min),
            diagonal.iter().cloned().reduce(f64::max),
        ) {
            kappa = kappa.max(hi / lo);
        }
    }
    ((1e-6 * kappa).max(1e-5), (1e-5 * kappa).max(1e-5))
}

fn norm(values: &[f64]) -> f64 {
    values.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// As `assert_close`, relative to max(‖want‖, floor): dW_r and dH_X are exactly zero in some
/// cases (r = 1 with n = 1, a rank-1 M: Q does not depend on W_r), where fp32 leaves rounding.
fn assert_close_floor(
    what: &str,
    device: &Device,
    got: &Tensor,
    want: &[f64],
    tolerance: f64,
    floor: f64,
) {
    let values = got.to_vec().expect("download");
    assert!(
        values.iter().all(|v| v.is_finite()),
        "{what} on {}: non-finite",
        device.name()
    );
    let diff: Vec<f64> = values
        .iter()
        .zip(want)
        .map(|(&g, &w)| g as f64 - w)
        .collect();
    let error = norm(&diff) / norm(want).max(floor);
    assert!(
        error <= tolerance,
        "{what} on {}: relative error {error:.3e} > {tolerance:.1e}",
        device.name()
    );
}

fn compare(device: &Device, case: &Case) {
    compare_run(device, case, &run_on(device, case));
}

/// As [`compare`], for a run already made.
fn compare_run(device: &Device, case: &Case, run: &DeviceRun) {
    let reference = case.forward();
    let q_constant = case.backward(&reference, false);
    let full = case.backward(&reference, true);
    let what = |name: &str| format!("{name} {}", case.label());
    let (forward_tolerance, full_tolerance) = tolerances(case, &reference);
    assert_close(
        &what("h_A*"),
        device,
        &run.output,
        &reference.output,
        forward_tolerance,
    );
    assert_close(&what("Q"), device, &run.q, &reference.q, forward_tolerance);
    assert_close(&what("R"), device, &run.r, &reference.r, forward_tolerance);
    assert_close(&what("mask"), device, &run.mask, &reference.mask, 0.0);
    assert_close(
        &what("dH_A (Q constant)"),
        device,
        &run.q_constant.dh_a,
        &q_constant.dh_a,
        forward_tolerance,
    );
    assert!(run.q_constant.dh_x.is_none() && run.q_constant.dw_r.is_none());
    assert_close(
        &what("dH_A (full)"),
        device,
        &run.full.dh_a,
        &full.dh_a,
        forward_tolerance,
    );
    // Floor: the op's own gradient scale ‖dH_A‖ (or ‖dh‖ when the mask is empty).
    let floor = norm(&full.dh_a).max(1e-3 * norm(&case.dy));
    assert_close_floor(
        &what("dH_X (full)"),
        device,
        run.full.dh_x.as_ref().expect("dH_X"),
        &full.dh_x,
        full_tolerance,
        floor,
    );
    assert_close_floor(
        &what("dW_r (full)"),
        device,
        run.full.dw_r.as_ref().expect("dW_r"),
        &full.dw_r,
        full_tolerance,
        floor,
    );
}

/// Mixed lengths for a batch of `batch` sequences of at most n rows: 0, 1, short, r, n.
fn mixed_lengths(batch: usize, n: usize, r: usize, rng: &mut StdRng) -> Vec<i32> {
    let pool = [n, 1, r.min(n), n / 2, 0, (r + 1).min(n)];
    (0..batch)
        .map(|b| {
            if b < pool.len() {
                pool[b] as i32
            } else {
                rng.random_range(0..=n) as i32
            }
        })
        .collect()
}

#[test]
fn kernels_match_reference_over_sizes_and_lengths() {
    for_each_version(&[hie::KERNEL_FAMILY], |_| {
        // A covering subset of d ∈ {16, 64, 256} × r ∈ {1, 4, 16, 24, 32} × n ∈ {1, 10, 50}: every
        // value of each appears, every r with at least two d, and the paper's corner (256, 24, 50);
        // the full product is 40 emulated batches, too slow for the emulator's one-thread-per-lane model.
        let mut rng = rng(46);
        let sizes: &[(usize, usize, usize)] = &[
            (16, 1, 10),
            (16, 4, 50),
            (16, 16, 1),
            (16, 16, 10),
            (64, 1, 1),
            (64, 4, 10),
            (64, 24, 50),
            (64, 32, 10),
            (256, 16, 10),
            (256, 24, 50),
            (256, 32, 1),
        ];
        let cases: Vec<Case> = sizes
            .iter()
            .map(|&(d, r, n)| {
                let batch = 3;
                let lengths = mixed_lengths(batch, n, r, &mut rng);
                Case::random(&mut rng, dims(batch, n, d, r), lengths, false)
            })
            .collect();
        for device in all_devices() {
            for case in &cases {
                compare(&device, case);
            }
        }
    });
}

#[test]
fn kernels_handle_kept_padding_and_odd_sizes() {
    for_each_version(&[hie::KERNEL_FAMILY], |_| {
        let mut rng = rng(47);
        let mut cases = vec![
            Case::random(&mut rng, dims(2, 12, 33, 5), vec![4, 12], true),
            Case::random(&mut rng, dims(3, 9, 45, 7), vec![9, 2, 5], false),
            // Lengths 0, 1 and n at odd sizes (v2: r below its register width 16).
            Case::random(&mut rng, dims(3, 11, 37, 9), vec![0, 1, 11], false),
        ];
        // Too many rows for the v2 and v3 forwards to stage H_X in shared memory (220 · 256 · 4
        // B beside Q): they read H_X from device memory instead (the choice is by n; few valid
        // rows keep the emulated case short). Not v1: it stages nothing.
        let staging =
            kernel_version::selected(hie::KERNEL_FAMILY).expect("version") != KernelVersion::V1;
        if staging {
            cases.push(Case::random(
                &mut rng,
                dims(1, 220, 256, 32),
                vec![20],
                false,
            ));
        }
        for device in all_devices() {
            for case in &cases {
                compare(&device, case);
            }
        }
    });
}

#[test]
fn kernels_give_finite_outputs_on_rank_deficient_inputs() {
    for_each_version(&[hie::KERNEL_FAMILY], |_| {
        let mut rng = rng(48);
        for device in all_devices() {
            for (what, case) in rank_deficient_cases(&mut rng, 10, 64, 16) {
                let run = run_on(&device, &case);
                for (name, t) in [
                    ("h_A*", &run.output),
                    ("Q", &run.q),
                    ("dH_A", &run.q_constant.dh_a),
                    ("dH_A full", &run.full.dh_a),
                    ("dH_X", run.full.dh_x.as_ref().unwrap()),
                    ("dW_r", run.full.dw_r.as_ref().unwrap()),
                ] {
                    let values = t.to_vec().expect("download");
                    assert!(
                        values.iter().all(|v| v.is_finite()),
                        "{what} {name} on {}: not finite",
                        device.name()
                    );
                }
                if what == "zero H_X" {
                    assert!(
                        run.output.to_vec().unwrap().iter().all(|&v| v == 0.0),
                        "zero H_X on {}: h_A* ≠ 0",
                        device.name()
                    );
                } else {
                    // Generic rank deficiency: the kernels agree with the reference (same kept sets).
                    compare(&device, &case);
                }
            }
        }
    });
}

/// The rank guard in the main sizes (d = 256, n = 50, r = 16): a zero column of M (a zero column
/// of W_r) and a duplicated column (two equal columns of W_r, so M's are equal in every rounding)
/// are dropped by the kernels exactly as by the reference (zero Q column, zero R row and column),
/// and everything else matches it. Without the guard the noise left in those columns becomes a
/// unit column of Q.
#[test]
fn kernels_drop_zero_and_duplicated_columns_in_the_main_sizes() {
    let (n, d, r) = (50usize, 256usize, 16usize);
    let (zero, original, duplicate) = (3usize, 5usize, 9usize);
    let mut rng = rng(50);
    let mut cases = Vec::new();
    for what in ["zero column", "duplicated column"] {
        let mut case = Case::random(&mut rng, dims(1, n, d, r), vec![50], false);
        for t in 0..n {
            if what == "zero column" {
                case.w_r[t * r + zero] = 0.0;
            } else {
                case.w_r[t * r + duplicate] = case.w_r[t * r + original];
            }
        }
        let dropped = if what == "zero column" {
            zero
        } else {
            duplicate
        };
        let reference = case.forward();
        {
            let b = 0;
            let kept: Vec<bool> = (0..r)
                .map(|k| reference.r[b * r * r + k * r + k] != 0.0)
                .collect();
            assert_eq!(
                kept,
                (0..r).map(|k| k != dropped).collect::<Vec<_>>(),
                "{what}: reference kept set of sequence {b}"
            );
        }
        cases.push((what, dropped, case));
    }
    for_each_version(&[hie::KERNEL_FAMILY], |_| {
        for device in all_devices() {
            for (what, dropped, case) in &cases {
                let run = run_on(&device, case);
                let q = run.q.to_vec().expect("Q");
                let r_mat = run.r.to_vec().expect("R");
                {
                    let b = 0;
                    for i in 0..d {
                        assert_eq!(
                            q[b * d * r + i * r + dropped],
                            0.0,
                            "{what} on {} ({}): Q[{b}, {i}, {dropped}] ≠ 0",
                            device.name(),
                            case.label()
                        );
                    }
                    for k in 0..r {
                        assert_eq!(
                            (
                                r_mat[b * r * r + dropped * r + k],
                                r_mat[b * r * r + k * r + dropped]
                            ),
                            (0.0, 0.0),
                            "{what} on {} ({}): R row or column {dropped} ≠ 0 at {k}",
                            device.name(),
                            case.label()
                        );
                    }
                }
                compare_run(&device, case, &run);
            }
        }
    });
}

#[test]
fn tape_gives_the_reference_gradients_in_both_modes() {
    for_each_version(&[hie::KERNEL_FAMILY], |_| {
        let mut rng = rng(49);
        let case = Case::random(&mut rng, dims(3, 10, 16, 4), vec![10, 3, 6], false);
        let Dims { batch, n, d, r } = case.dims;
        let reference = case.forward();
        for device in all_devices() {
            for mode in [HieBackward::QConstant, HieBackward::FullQr] {
                let full = mode == HieBackward::FullQr;
                let want = case.backward(&reference, full);
                let tape = Tape::new();
                let h_x = tape.leaf(tensor(&device, &[batch, n, d], &case.h_x));
                let h_a = tape.leaf(tensor(&device, &[batch, n, d], &case.h_a));
                let w_r = tape.leaf(tensor(&device, &[n, r], &case.w_r));
                let lengths =
                    IndexTensor::from_vec(&device, &[batch], case.lengths.clone()).unwrap();
                let out =
                    hie::hie(&tape, &h_x, &h_a, &w_r, &lengths, case.options(), mode).expect("hie");
                assert_close("tape h_A*", &device, out.value(), &reference.output, 1e-5);
                let grads = tape
                    .backward(&out, tensor(&device, &[batch, n, d], &case.dy))
                    .expect("backward");
                assert_close(
                    "tape dH_A",
                    &device,
                    grads.get(&h_a).expect("dH_A"),
                    &want.dh_a,
                    1e-5,
                );
                if full {
                    // The full backward solves with R: 1e-4 as in `tolerances` (κ ≈ 10 here).
                    assert_close(
                        "tape dH_X",
                        &device,
                        grads.get(&h_x).expect("dH_X"),
                        &want.dh_x,
                        1e-4,
                    );
                    assert_close(
                        "tape dW_r",
                        &device,
                        grads.get(&w_r).expect("dW_r"),
                        &want.dw_r,
                        1e-4,
                    );
                } else {
                    assert!(
                        grads.get(&h_x).is_none() && grads.get(&w_r).is_none(),
                        "Q constant: no gradient to H_X, W_r"
                    );
                }
            }
        }
    });
}

#[test]
fn bad_shapes_and_arguments_are_errors() {
    let device = Device::cpu();
    let t = |shape: &[usize]| Tensor::zeros(&device, shape).unwrap();
    let lengths = IndexTensor::from_vec(&device, &[2], vec![1, 2]).unwrap();
    let options = HieOptions::default();
    let (h, w) = (t(&[2, 4, 16]), t(&[4, 3]));
    assert!(hie::hie_forward(&h, &h, &w, &lengths, options).is_ok());
    assert!(
        hie::hie_forward(&h, &t(&[2, 4, 15]), &w, &lengths, options).is_err(),
        "H_A shape"
    );
    assert!(
        hie::hie_forward(&h, &h, &t(&[5, 3]), &lengths, options).is_err(),
        "W_r rows"
    );
    assert!(
        hie::hie_forward(&t(&[2, 4, 2]), &t(&[2, 4, 2]), &w, &lengths, options).is_err(),
        "r > d"
    );
    assert!(
        hie::hie_forward(
            &t(&[2, 4, 64]),
            &t(&[2, 4, 64]),
            &t(&[4, 33]),
            &lengths,
            options
        )
        .is_err(),
        "r > 32"
    );
    assert!(
        hie::hie_forward(
            &h,
            &h,
            &w,
            &IndexTensor::from_vec(&device, &[3], vec![1, 2, 3]).unwrap(),
            options
        )
        .is_err(),
        "lengths"
    );
    assert!(
        hie::hie_forward(&t(&[8, 16]), &t(&[8, 16]), &w, &lengths, options).is_err(),
        "rank 2 input"
    );
    for bad_lengths in [vec![-1, 2], vec![1, 5]] {
        let bad_lengths = IndexTensor::from_vec(&device, &[2], bad_lengths).unwrap();
        assert!(
            hie::hie_forward(&h, &h, &w, &bad_lengths, options).is_err(),
            "lengths outside [0, n]"
        );
    }
    let bad = HieOptions {
        rank_tolerance: f32::NAN,
        ..options
    };
    assert!(
        hie::hie_forward(&h, &h, &w, &lengths, bad).is_err(),
        "NaN tolerance"
    );
    let (_, saved) = hie::hie_forward(&h, &h, &w, &lengths, options).unwrap();
    assert!(
        hie::hie_backward(
            &h,
            &h,
            &w,
            &lengths,
            &saved,
            &t(&[2, 4, 8]),
            options,
            HieBackward::FullQr
        )
        .is_err(),
        "dy shape"
    );
}

#[test]
fn tf32_and_bf16_are_not_implemented_by_kernel_v1() {
    let mut rng = rng(15);
    for device in all_devices() {
        let h = tensor(
            &device,
            &[2, 4, 16],
            &random(&mut rng, 2 * 4 * 16, 0.0, 1.0),
        );
        let w = tensor(&device, &[4, 3], &random(&mut rng, 4 * 3, 0.0, 1.0));
        let lengths = IndexTensor::from_vec(&device, &[2], vec![4, 2]).unwrap();
        let fp32 = HieOptions::default();
        assert_eq!(fp32.precision, Precision::Fp32);
        let (_, saved) = hie::hie_forward(&h, &h, &w, &lengths, fp32).expect("fp32 forward");
        for precision in [Precision::Tf32, Precision::Bf16] {
            let options = HieOptions { precision, ..fp32 };
            let forward = hie::hie_forward(&h, &h, &w, &lengths, options).map(|_| ());
            let backward = hie::hie_backward(
                &h,
                &h,
                &w,
                &lengths,
                &saved,
                &h,
                options,
                HieBackward::QConstant,
            )
            .map(|_| ());
            for (what, result) in [("forward", forward), ("backward", backward)] {
                match result {
                    Err(Error::PrecisionNotImplemented {
                        op: "hie",
                        precision: named,
                    }) if named == precision => {}
                    other => panic!("hie {what} in {precision} on {}: {other:?}", device.name()),
                }
            }
        }
    }
}

#[test]
fn the_shared_memory_bound_and_the_tolerance_range_are_tried_at_their_edges() {
    // cargo-mutants, issue 16: the shared-memory bound's `>` → `==` and the tolerance check's
    // `&&` → `||` were unseen (no test reached the bound, and NaN fails either clause).
    let device = Device::cpu();
    let t = |shape: &[usize]| Tensor::zeros(&device, shape).unwrap();
    let lengths = IndexTensor::from_vec(&device, &[1], vec![2]).unwrap();
    let options = HieOptions::default();
    // r = 32 columns of stride d | 1: 32 · 287 · 4 = 36736 bytes fit the 36 KiB, d = 289 needs
    // 36992. (r · (d | 1) · 4 never equals 36864 = 2^12 · 9 for r ≤ 32, so `>` and `>=` agree.)
    let w = t(&[2, 32]);
    assert!(hie::hie_forward(&t(&[1, 2, 287]), &t(&[1, 2, 287]), &w, &lengths, options).is_ok());
    let error = hie::hie_forward(&t(&[1, 2, 289]), &t(&[1, 2, 289]), &w, &lengths, options)
        .expect_err("d = 289");
    assert_eq!(
        error.to_string(),
        "hie: bad shape: d = 289, r = 32: the d×r matrix needs 36992 bytes of shared memory (at most 36864)"
    );
    // The tolerance: [0, 1). 0 is allowed; 1, a negative value, NaN and ∞ are not.
    let (h, w) = (t(&[1, 2, 4]), t(&[2, 2]));
    let with = |rank_tolerance: f32| HieOptions {
        rank_tolerance,
        ..options
    };
    assert!(hie::hie_forward(&h, &h, &w, &lengths, with(0.0)).is_ok());
    for bad in [1.0, -1e-9, f32::NAN, f32::INFINITY] {
        let error = hie::hie_forward(&h, &h, &w, &lengths, with(bad)).expect_err("tolerance");
        assert_eq!(
            error.to_string(),
            format!("hie: bad argument: rank_tolerance must be in [0, 1), got {bad}")
        );
    }
}

#[test]
fn each_saved_tensor_of_the_wrong_shape_is_refused_on_its_own() {
    // cargo-mutants, issue 16: the saved-state check's two `||` → `&&` were unseen (no test
    // handed the backward a saved state of the wrong shape).
    let device = Device::cpu();
    let t = |shape: &[usize]| Tensor::zeros(&device, shape).unwrap();
    let lengths = IndexTensor::from_vec(&device, &[2], vec![1, 2]).unwrap();
    let options = HieOptions::default();
    let (h, w) = (t(&[2, 4, 16]), t(&[4, 3]));
    let (_, saved) = hie::hie_forward(&h, &h, &w, &lengths, options).unwrap();
    let backward = |saved: &hie::HieSaved| {
        hie::hie_backward(
            &h,
            &h,
            &w,
            &lengths,
            saved,
            &h,
            options,
            HieBackward::FullQr,
        )
    };
    assert!(backward(&saved).is_ok());
    let wrong = t(&[2, 3, 3, 1]);
    for bad in [
        hie::HieSaved {
            q: wrong.clone(),
            ..saved.clone()
        },
        hie::HieSaved {
            r: wrong.clone(),
            ..saved.clone()
        },
        hie::HieSaved {
            mask: wrong.clone(),
            ..saved.clone()
        },
    ] {
        let error = backward(&bad).expect_err("a saved tensor of the wrong shape");
        assert_eq!(
            error.to_string(),
            "hie: bad shape: saved state must be Q [2, 16, 3], R [2, 3, 3], mask [2, 4, 3]"
        );
    }
}
