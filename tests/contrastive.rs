//! The RSA contrastive loss (eqs. 6 to 9), every tier:
//! - tier 1: the hand-derived gradients of the f64 reference (x, a, s; both reductions; dedup on
//!   and off) against central differences, plus a hand-computed loss;
//! - tiers 2 and 4: the kernel through the real launch code (emulator, GPU when present) and the
//!   CPU device's f32 dispatch against the f64 reference, on every size and edge case of issue 5;
//! - the logit-scale clamp on both sides of its bound (κ between 100 and 1000);
//! - the tape face and the typed errors.
//!
//! Every kernel test runs once per kernel version (`kernel_version`, family
//! `contrastive::KERNEL_FAMILY`): v1 and v2 pass the same tests.
mod common;

use asif_kernels::autograd::gradcheck::{check_gradient, GradCheckOptions};
use asif_kernels::autograd::Tape;
use asif_kernels::kernel_version::{self, KernelVersion};
use asif_kernels::ops::contrastive::{
    contrastive_loss, contrastive_loss_forward_backward, forward_backward_reference,
    initial_logit_scale, ContrastiveOptions, ContrastiveReduction, ContrastiveReference,
    KERNEL_FAMILY, LOGIT_SCALE_MAX,
};
use asif_kernels::{Device, Error, IndexTensor, Precision};
use common::{
    all_devices, assert_close, emulated, gradcheck_options, random, relative_error, rng, tensor,
};

/// Runs a kernel test body once per kernel version; the body gets "kernel v1" or "kernel v2" for
/// its failure messages.
fn for_each_version(mut body: impl FnMut(&str)) {
    common::for_each_version(&[KERNEL_FAMILY], |version| {
        body(&format!("kernel {}", version.name()))
    });
}

/// fp32 against the f64 reference: sums of at most 64 · 256 products per entry.
const TOLERANCE: f64 = 1e-5;
const REDUCTIONS: [ContrastiveReduction; 2] = [
    ContrastiveReduction::MeanPerSequence,
    ContrastiveReduction::Sum,
];

/// One problem: shapes, data and switches.
#[derive(Clone)]
struct Case {
    n: usize,
    d: usize,
    x: Vec<f64>,
    a: Vec<f64>,
    lengths: Vec<i32>,
    groups: Option<Vec<i32>>,
    s: f64,
    reduction: ContrastiveReduction,
    upstream: f64,
    /// Where the exact gradients cancel to zero (identical rows), the f32 result is rounding
    /// noise: gradients are then compared to this scale instead of their own (zero) norm.
    cancelling: bool,
}

impl Case {
    fn random(seed: u64, n: usize, d: usize, lengths: Vec<i32>) -> Case {
        let mut rng = rng(seed);
        let len = lengths.len() * n * d;
        Case {
            n,
            d,
            x: random(&mut rng, len, 0.0, 1.0),
            a: random(&mut rng, len, 0.0, 1.0),
            lengths,
            groups: None,
            s: initial_logit_scale() as f64,
            reduction: ContrastiveReduction::MeanPerSequence,
            upstream: 0.7,
            cancelling: false,
        }
    }

    /// Group ids with repeats (positions t and t + 3 share a group), so dedup removes negatives.
    fn with_groups(mut self) -> Case {
        let n = self.n;
        self.groups = Some(
            (0..self.lengths.len() * n)
                .map(|i| ((i % n) % 3) as i32)
                .collect(),
        );
        self
    }

    fn reference_with(&self, x: &[f64], a: &[f64], s: f64) -> ContrastiveReference<f64> {
        forward_backward_reference(
            x,
            a,
            &self.lengths,
            self.groups.as_deref(),
            s,
            self.n,
            self.d,
            self.reduction,
            self.upstream,
        )
    }

    fn reference(&self) -> ContrastiveReference<f64> {
        self.reference_with(&self.x, &self.a, self.s)
    }

    fn shape(&self) -> [usize; 3] {
        [self.lengths.len(), self.n, self.d]
    }

    /// Runs the op on `device` (f32).
    fn run(
        &self,
        device: &Device,
    ) -> asif_kernels::Result<asif_kernels::ops::contrastive::ContrastiveOutput> {
        let shape = self.shape();
        let lengths = IndexTensor::from_vec(device, &[shape[0]], self.lengths.clone())?;
        let groups = match &self.groups {
            Some(g) => Some(IndexTensor::from_vec(
                device,
                &[shape[0], self.n],
                g.clone(),
            )?),
            None => None,
        };
        contrastive_loss_forward_backward(
            &tensor(device, &shape, &self.x),
            &tensor(device, &shape, &self.a),
            &lengths,
            &tensor(device, &[1], &[self.s]),
            groups.as_ref(),
            self.reduction,
            self.upstream as f32,
        )
    }

    /// Kernel (or f32 CPU dispatch) against the f64 reference, every output; returns the output
    /// for further checks (one run: the emulator is slow).
    fn check(
        &self,
        what: &str,
        device: &Device,
    ) -> asif_kernels::ops::contrastive::ContrastiveOutput {
        let want = self.reference();
        assert!(
            want.loss.is_finite() && want.ds.is_finite(),
            "{what}: reference not finite"
        );
        let got = self
            .run(device)
            .unwrap_or_else(|e| panic!("{what} on {}: {e}", device.name()));
        assert_close(
            &format!("{what}: loss"),
            device,
            &got.loss,
            &[want.loss],
            TOLERANCE,
        );
        if self.cancelling {
            // Each term of dx_t is about 2κ|g|w_b/‖x_t‖ in size (of ds about 2κ|g|w_b); compare
            // the error with the norm of one term per valid row.
            let kappa = self.s.exp().min(100.0);
            let rows: usize = self.lengths.iter().map(|&l| l.max(0) as usize).sum();
            let weight = self.upstream.abs() / (2.0 * self.lengths.len() as f64);
            let min_norm = self
                .x
                .chunks(self.d)
                .chain(self.a.chunks(self.d))
                .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
                .fold(f64::INFINITY, f64::min);
            let term = 2.0 * kappa * weight * (rows as f64).sqrt();
            for (name, got, want, scale) in [
                ("dx", &got.dx, &want.dx, term / min_norm),
                ("da", &got.da, &want.da, term / min_norm),
                ("ds", &got.ds, &vec![want.ds], term * (rows as f64).sqrt()),
            ] {
                let values = got.to_vec().expect("download");
                let diff = values
                    .iter()
                    .zip(want)
                    .map(|(&g, &w)| (g as f64 - w).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!(
                    diff <= TOLERANCE * scale,
                    "{what}: {name} on {}: error {diff:.3e} > {TOLERANCE:.0e} · {scale:.3e}",
                    device.name()
                );
            }
            return got;
        }
        assert_close(&format!("{what}: dx"), device, &got.dx, &want.dx, TOLERANCE);
        // ds sums L_b² terms of both signs (nearly cancelling at small κ): its error is measured
        // against the sum of their sizes.
        let ds = got.ds.to_vec().expect("ds")[0] as f64;
        let error = (ds - want.ds).abs() / want.ds_terms.max(want.ds.abs()).max(f64::MIN_POSITIVE);
        assert!(
            error <= TOLERANCE || ds == want.ds,
            "{what}: ds on {}: {ds:e} vs {:e}, error {error:.3e} of Σ|terms|",
            device.name(),
            want.ds
        );
        // Rows of a with ‖a‖ ≤ ε have gradients 1/ε times larger than the others (the derivative
        // of a/max(‖a‖, ε)): compare them apart so they do not hide errors elsewhere.
        let tiny: Vec<bool> = self
            .a
            .chunks(self.d)
            .map(|row| row.iter().all(|&v| v == 0.0))
            .collect();
        let da = got.da.to_vec().expect("download");
        for part in [false, true] {
            let pick = |values: &[f64]| -> Vec<f64> {
                values
                    .chunks(self.d)
                    .zip(&tiny)
                    .filter(|(_, &t)| t == part)
                    .flat_map(|(r, _)| r.to_vec())
                    .collect()
            };
            let got_part: Vec<f32> = da
                .chunks(self.d)
                .zip(&tiny)
                .filter(|(_, &t)| t == part)
                .flat_map(|(r, _)| r.to_vec())
                .collect();
            let error = relative_error(&got_part, &pick(&want.da));
            assert!(
                error <= TOLERANCE,
                "{what}: da ({} rows) on {}: relative error {error:.3e}",
                if part { "zero" } else { "non-zero" },
                device.name()
            );
        }
        got
    }
}

// ---------------------------------------------------------------------------------------------
// Tier 1: the reference's gradients against finite differences (f64).

/// Checks dx, da (on the rows listed, all if `None`) and ds of `case` by central differences of
/// `upstream · L_co`.
fn check_finite_differences(what: &str, case: &Case, a_rows: Option<&[usize]>) {
    let want = case.reference();
    let scaled = |r: ContrastiveReference<f64>| case.upstream * r.loss;
    let loss_x = |p: &[f64]| scaled(case.reference_with(p, &case.a, case.s));
    let loss_s = |p: &[f64]| scaled(case.reference_with(&case.x, &case.a, p[0]));
    let d = case.d;
    let rows: Vec<usize> = match a_rows {
        Some(rows) => rows.to_vec(),
        None => (0..case.a.len() / d).collect(),
    };
    let a_params: Vec<f64> = rows
        .iter()
        .flat_map(|&r| case.a[r * d..(r + 1) * d].to_vec())
        .collect();
    let da_want: Vec<f64> = rows
        .iter()
        .flat_map(|&r| want.da[r * d..(r + 1) * d].to_vec())
        .collect();
    let loss_a = |p: &[f64]| {
        let mut a = case.a.clone();
        for (i, &r) in rows.iter().enumerate() {
            a[r * d..(r + 1) * d].copy_from_slice(&p[i * d..(i + 1) * d]);
        }
        scaled(case.reference_with(&case.x, &a, case.s))
    };
    for (name, result) in [
        (
            "dx",
            check_gradient(loss_x, &case.x, &want.dx, gradcheck_options()),
        ),
        (
            "da",
            check_gradient(loss_a, &a_params, &da_want, gradcheck_options()),
        ),
        (
            "ds",
            check_gradient(loss_s, &[case.s], &[want.ds], gradcheck_options()),
        ),
    ] {
        if let Err(e) = result {
            panic!("{what}: {name}: {e}");
        }
    }
}

#[test]
fn gradients_match_finite_differences_both_reductions_dedup_on_and_off() {
    // Mixed lengths, including L_b = 0 and L_b = 1.
    let base = Case::random(1, 6, 5, vec![6, 1, 0, 4]);
    for reduction in REDUCTIONS {
        for dedup in [false, true] {
            for s in [initial_logit_scale() as f64, 0.3, 50f64.ln()] {
                let mut case = base.clone();
                case.reduction = reduction;
                case.s = s;
                case.upstream = 1.3;
                if dedup {
                    case = case.with_groups();
                }
                check_finite_differences(
                    &format!("{reduction:?}, dedup {dedup}, s {s:.3}"),
                    &case,
                    None,
                );
            }
        }
    }
}

#[test]
fn gradients_with_zero_and_tiny_attribute_vectors_match_finite_differences() {
    // A zero attribute vector: ã = 0, no NaN; dx and ds are smooth there. Its own da is the
    // derivative of a/ε, which a step of 1e-5 ≫ ε cannot see, so the zero row is checked on its
    // own below with a vector inside the ε ball and a step far below ε.
    let mut case = Case::random(2, 5, 4, vec![5, 3]).with_groups();
    case.a[..4].fill(0.0); // sequence 0, position 0
    let want = case.reference();
    assert!(want.loss.is_finite() && want.da.iter().all(|v| v.is_finite()));
    let others: Vec<usize> = (1..10).collect();
    check_finite_differences("zero attribute vector", &case, Some(&others));

    let tiny = [3e-9, -1e-9, 2e-9, 0.5e-9];
    case.a[..4].copy_from_slice(&tiny);
    let want = case.reference();
    let loss_a = |p: &[f64]| {
        let mut a = case.a.clone();
        a[..4].copy_from_slice(p);
        case.upstream * case.reference_with(&case.x, &a, case.s).loss
    };
    // Inside the ball ã = a/ε, so the loss's third derivative in a is about κ³/ε³: the step must
    // be far below ε for the h² error of central differences to vanish (1e-13: about 1 in 7e7).
    let tiny_options = GradCheckOptions {
        step: 1e-13,
        relative_tolerance: 1e-6,
        absolute_tolerance: 1e-8,
    };
    check_gradient(loss_a, &tiny, &want.da[..4], tiny_options).expect("da inside the ε ball");
}

#[test]
fn clamped_logit_scale_passes_no_gradient_to_s() {
    let mut case = Case::random(3, 4, 6, vec![4, 2]);
    case.s = 1000f64.ln(); // exp(s) = 1000 > 100: κ = 100
    let want = case.reference();
    assert_eq!(want.ds, 0.0);
    check_finite_differences("clamped κ", &case, None);
    // κ is 100 exactly: the loss equals the loss at s = ln 100.
    let at_clamp = case.reference_with(&case.x, &case.a, 100f64.ln());
    assert!((at_clamp.loss - want.loss).abs() <= 1e-12 * want.loss.abs());
}

#[test]
fn logit_scale_clamp_holds_between_100_and_1000_on_both_sides_of_its_bound() {
    // κ = min(exp s, 100) (CLIP's clamp). Just below the bound the scale is live: the loss moves
    // with s and ds is the reference's non-zero value. From just above it up to 1000 the loss is
    // the loss at κ = 100 exactly and ds = 0, on every device and kernel version.
    assert_eq!(LOGIT_SCALE_MAX, 100.0);
    let mut case = Case::random(610, 7, 13, vec![7, 4, 0]).with_groups();
    case.upstream = 1.3;
    let at_bound = case.reference_with(&case.x, &case.a, 100f64.ln());
    // Tier 1 at each side: the reference's ds against central differences (a step of 1e-5 in s
    // stays on its side of ln 100 at these κ).
    for kappa in [99.9, 100.1] {
        let mut side = case.clone();
        side.s = f64::ln(kappa);
        check_finite_differences(&format!("κ = {kappa}"), &side, None);
    }
    let kappas = [99.0, 99.9, 100.1, 400.0, 999.0];
    let cases: Vec<(f64, Case)> = kappas
        .iter()
        .map(|&kappa| {
            let mut c = case.clone();
            c.s = f64::ln(kappa);
            (kappa, c)
        })
        .collect();
    for (kappa, c) in &cases {
        let want = c.reference();
        if *kappa > 100.0 {
            assert_eq!(want.ds, 0.0, "reference ds at κ = {kappa}");
            assert!(
                (want.loss - at_bound.loss).abs() <= 1e-12 * at_bound.loss.abs(),
                "reference loss at κ = {kappa}: {} vs {} at the bound",
                want.loss,
                at_bound.loss
            );
        } else {
            assert!(
                want.ds.abs() > 1e-3 * want.ds_terms,
                "reference ds at κ = {kappa} should be live: {:e} of Σ|terms| {:e}",
                want.ds,
                want.ds_terms
            );
            assert!((want.loss - at_bound.loss).abs() > 1e-6 * at_bound.loss.abs());
        }
    }
    for_each_version(|version| {
        for device in all_devices() {
            for (kappa, c) in &cases {
                let what = format!("{version}: κ = {kappa}");
                let got = c.check(&what, &device);
                let ds = got.ds.to_vec().expect("ds")[0];
                if *kappa > 100.0 {
                    assert_eq!(ds, 0.0, "{what} on {}: ds above the clamp", device.name());
                    assert_close(
                        &format!("{what}: loss against the loss at κ = 100"),
                        &device,
                        &got.loss,
                        &[at_bound.loss],
                        TOLERANCE,
                    );
                } else {
                    assert!(ds != 0.0, "{what} on {}: ds below the clamp", device.name());
                }
            }
        }
    });
}

#[test]
fn loss_of_aligned_orthonormal_rows_is_hand_computed() {
    // x_t = a_t = e_t: S = κ I, so ℓ_X(t) = ℓ_A(t) = log(1 + (L − 1) e^{−κ}).
    let (n, d, len) = (3usize, 3usize, 3i32);
    let mut x = vec![0.0; n * d];
    for t in 0..n {
        x[t * d + t] = 2.0 + t as f64; // norms differ; the direction is what counts
    }
    let a = x.clone();
    let s: f64 = 0.5;
    let kappa = s.exp();
    let per_position = (1.0 + 2.0 * (-kappa).exp()).ln();
    for (reduction, want) in [
        (ContrastiveReduction::MeanPerSequence, per_position),
        (ContrastiveReduction::Sum, 3.0 * per_position),
    ] {
        let r = forward_backward_reference(&x, &a, &[len], None, s, n, d, reduction, 1.0);
        assert!(
            (r.loss - want).abs() < 1e-14,
            "{reduction:?}: {} vs {want}",
            r.loss
        );
    }
    // Batch B = 2 with an empty second sequence: B counts it, so the loss halves.
    let mut x2 = x.clone();
    x2.extend(vec![0.0; n * d]);
    let r = forward_backward_reference(
        &x2,
        &x2,
        &[len, 0],
        None,
        s,
        n,
        d,
        ContrastiveReduction::MeanPerSequence,
        1.0,
    );
    assert!((r.loss - per_position / 2.0).abs() < 1e-14);
}

// ---------------------------------------------------------------------------------------------
// Tiers 2 and 4: kernels against the reference.

#[test]
fn kernel_matches_reference_over_sizes_and_mixed_lengths() {
    for_each_version(kernel_matches_reference_over_sizes);
}

fn kernel_matches_reference_over_sizes(version: &str) {
    let devices = all_devices();
    let mut seed = 100;
    // The paper-like grid, then odd sizes: n odd, d not a multiple of 8 (or of 4: the scalar
    // staging path of v2), d just past one 32-column chunk.
    let grid = [1usize, 2, 50, 64]
        .iter()
        .flat_map(|&n| [8usize, 64, 256].map(|d| (n, d)))
        // d past the 48 KB of shared memory v2 opts out of (n 5, d 416: x and a staged once in
        // 53.8 KB), and past what v2 can stage at once (n 64, d 480: chunks of 384 columns).
        .chain([(17, 37), (33, 36), (7, 5), (5, 416), (64, 480)]);
    for (n, d) in grid {
        {
            seed += 1;
            // Mixed lengths: full, partial, empty, one, at every size and version (the fibered
            // emulator runs the large cases in well under a second).
            let lengths = vec![n as i32, (n as i32 + 1) / 2, 0, 1];
            let mut case = Case::random(seed, n, d, lengths);
            case.reduction = REDUCTIONS[seed as usize % 2];
            if seed % 3 == 0 {
                case = case.with_groups();
            }
            for device in &devices {
                case.check(
                    &format!(
                        "{version}: n {n} d {d} {:?} dedup {}",
                        case.reduction,
                        case.groups.is_some()
                    ),
                    device,
                );
            }
        }
    }
}

#[test]
fn kernel_matches_reference_on_edge_cases() {
    for_each_version(kernel_matches_reference_on_edge_cases_of);
}

fn kernel_matches_reference_on_edge_cases_of(version: &str) {
    let (n, d) = (9usize, 40usize);
    let mut cases: Vec<(&str, Case)> = Vec::new();

    let mut zero_a = Case::random(200, n, d, vec![9, 5, 7]);
    for row in [0usize, 3, 9 + 2, 18 + 6] {
        zero_a.a[row * d..(row + 1) * d].fill(0.0);
    }
    cases.push(("zero attribute vectors", zero_a.clone()));
    cases.push(("zero attribute vectors, dedup", zero_a.with_groups()));

    let mut identical = Case::random(201, n, d, vec![9, 4]);
    let (x0, a0) = (identical.x[..d].to_vec(), identical.a[..d].to_vec());
    for row in 0..2 * n {
        identical.x[row * d..(row + 1) * d].copy_from_slice(&x0);
        identical.a[row * d..(row + 1) * d].copy_from_slice(&a0);
    }
    identical.cancelling = true;
    cases.push(("identical rows", identical.clone()));
    cases.push(("identical rows, dedup", identical.clone().with_groups()));
    identical.s = 1000f64.ln();
    cases.push(("identical rows, clamped κ", identical));

    let mut hot = Case::random(202, n, d, vec![9, 6, 2]);
    hot.s = 100f64.ln() - 0.01; // κ ≈ 99: very small temperature, unclamped
    cases.push(("κ ≈ 99", hot.clone()));
    hot.s = 10.0; // exp(10) ≫ 100: clamped, ds = 0
    cases.push(("κ clamped at 100", hot.clone()));
    hot.s = -20.0; // κ ≈ 2e-9: very large temperature, softmaxes nearly uniform
    cases.push(("κ ≈ 2e-9", hot.clone()));
    hot.reduction = ContrastiveReduction::Sum;
    cases.push(("κ ≈ 2e-9, sum", hot));

    cases.push(("all L_b = 0", Case::random(203, n, d, vec![0, 0])));
    cases.push((
        "all L_b = 1",
        Case::random(204, n, d, vec![1, 1, 1]).with_groups(),
    ));
    // More sequences than the reduce kernel's 256 threads: its strided loop over b. Most are
    // empty (an empty block returns at once; the emulator is slow at 300 full blocks). The reduce
    // kernel and the empty-sequence path are shared by both versions: checked once, under v1.
    let v1 = kernel_version::selected(KERNEL_FAMILY).expect("version") == KernelVersion::V1;
    cases.extend(v1.then(|| {
        (
            "B = 300",
            Case::random(
                205,
                3,
                4,
                (0..300)
                    .map(|b| {
                        if b % 50 == 0 || b >= 290 {
                            1 + b % 3
                        } else {
                            0
                        }
                    })
                    .collect(),
            ),
        )
    }));

    for device in all_devices() {
        for (what, case) in &cases {
            let what = &format!("{version}: {what}");
            let got = case.check(what, &device);
            if case.s.exp() > 100.0 {
                assert_eq!(
                    got.ds.to_vec().expect("ds"),
                    vec![0.0],
                    "{what} on {}: ds at the clamp",
                    device.name()
                );
            }
            // Padding positions (t ≥ L_b) get exactly zero gradient.
            let (dx, da) = (got.dx.to_vec().expect("dx"), got.da.to_vec().expect("da"));
            for (b, &len) in case.lengths.iter().enumerate() {
                let (n, d) = (case.n, case.d);
                let rows = (b * n + len as usize) * d..(b + 1) * n * d;
                assert!(
                    dx[rows.clone()].iter().chain(&da[rows]).all(|&v| v == 0.0),
                    "{what} on {}: padding gradient",
                    device.name()
                );
            }
        }
    }
}

#[test]
fn kernel_results_are_deterministic() {
    let case = Case::random(300, 50, 64, vec![50, 17, 33]).with_groups();
    let device = emulated();
    let mut gradients = Vec::new();
    for_each_version(|version| {
        let first = case.run(&device).expect("run");
        let second = case.run(&device).expect("run");
        for (p, q) in [
            (&first.loss, &second.loss),
            (&first.dx, &second.dx),
            (&first.da, &second.da),
            (&first.ds, &second.ds),
        ] {
            assert_eq!(p.to_vec().expect("p"), q.to_vec().expect("q"), "{version}");
        }
        gradients.push(first.dx.to_vec().expect("dx"));
    });
    // The versions sum in different orders, so their last bits differ: the selection reaches the
    // launch (v2 is not v1 run twice).
    assert_ne!(
        gradients[0], gradients[1],
        "kernel v1 and v2 gave identical bits"
    );
}

// ---------------------------------------------------------------------------------------------
// Tape face and errors.

#[test]
fn tape_backward_scales_the_saved_gradients_by_the_upstream_gradient() {
    let mut case = Case::random(400, 7, 12, vec![7, 3, 0]).with_groups();
    case.upstream = 2.5;
    let want = case.reference();
    for_each_version(|version| tape_backward_on_every_device(version, &case, &want));
}

fn tape_backward_on_every_device(version: &str, case: &Case, want: &ContrastiveReference<f64>) {
    for device in all_devices() {
        let shape = case.shape();
        let tape = Tape::new();
        let x = tape.leaf(tensor(&device, &shape, &case.x));
        let a = tape.leaf(tensor(&device, &shape, &case.a));
        let s = tape.leaf(tensor(&device, &[1], &[case.s]));
        let lengths =
            IndexTensor::from_vec(&device, &[shape[0]], case.lengths.clone()).expect("lengths");
        let groups = IndexTensor::from_vec(
            &device,
            &[shape[0], case.n],
            case.groups.clone().expect("groups"),
        )
        .expect("groups");
        let loss = contrastive_loss(&tape, &x, &a, &lengths, &s, Some(&groups), case.reduction)
            .expect("loss");
        assert_close(
            &format!("{version}: tape loss"),
            &device,
            loss.value(),
            &[want.loss],
            TOLERANCE,
        );
        let grads = tape
            .backward(&loss, tensor(&device, &[1], &[case.upstream]))
            .expect("backward");
        assert_close(
            &format!("{version}: tape dx"),
            &device,
            grads.get(&x).expect("dx"),
            &want.dx,
            TOLERANCE,
        );
        assert_close(
            &format!("{version}: tape da"),
            &device,
            grads.get(&a).expect("da"),
            &want.da,
            TOLERANCE,
        );
        assert_close(
            &format!("{version}: tape ds"),
            &device,
            grads.get(&s).expect("ds"),
            &[want.ds],
            TOLERANCE,
        );
    }
}

#[test]
fn bad_inputs_are_typed_errors_and_wild_lengths_are_clamped() {
    for_each_version(bad_inputs_on_every_device);
}

fn bad_inputs_on_every_device(version: &str) {
    for device in all_devices() {
        let ok = Case::random(500, 4, 3, vec![4, 2]);
        assert!(ok.run(&device).is_ok());
        let mut long = Case::random(501, 65, 2, vec![3]);
        long.lengths = vec![3];
        assert!(
            matches!(long.run(&device), Err(Error::Shape { .. })),
            "n = 65 on {}",
            device.name()
        );
        // Lengths outside 0..=n are clamped (L_b > n as n, L_b < 0 as 0) the same way on every
        // device, as attention does: the kernel reads them on the device.
        let mut wild = ok.clone();
        wild.lengths = vec![50, -3];
        let mut clamped = ok.clone();
        clamped.lengths = vec![4, 0];
        let (got, want) = (
            wild.run(&device).expect("wild lengths"),
            clamped.reference(),
        );
        let what = format!("{version}: clamped lengths");
        assert_close(
            &format!("{what}: loss"),
            &device,
            &got.loss,
            &[want.loss],
            TOLERANCE,
        );
        assert_close(
            &format!("{what}: dx"),
            &device,
            &got.dx,
            &want.dx,
            TOLERANCE,
        );
        assert_close(
            &format!("{what}: da"),
            &device,
            &got.da,
            &want.da,
            TOLERANCE,
        );

        let shape = ok.shape();
        let x = tensor(&device, &shape, &ok.x);
        let lengths = IndexTensor::from_vec(&device, &[2], ok.lengths.clone()).expect("lengths");
        let s = tensor(&device, &[1], &[ok.s]);
        let mean = ContrastiveReduction::MeanPerSequence;
        let flat = tensor(&device, &[2 * 4 * 3], &ok.x);
        assert!(matches!(
            contrastive_loss_forward_backward(&flat, &flat, &lengths, &s, None, mean, 1.0),
            Err(Error::Shape { .. })
        ));
        let other = tensor(&device, &[2, 4, 2], &ok.x[..16]);
        assert!(matches!(
            contrastive_loss_forward_backward(&x, &other, &lengths, &s, None, mean, 1.0),
            Err(Error::Shape { .. })
        ));
        let two_s = tensor(&device, &[2], &[0.0, 0.0]);
        assert!(matches!(
            contrastive_loss_forward_backward(&x, &x, &lengths, &two_s, None, mean, 1.0),
            Err(Error::Shape { .. })
        ));
        let groups = IndexTensor::from_vec(&device, &[2, 3], vec![0; 6]).expect("groups");
        assert!(matches!(
            contrastive_loss_forward_backward(&x, &x, &lengths, &s, Some(&groups), mean, 1.0),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            contrastive_loss_forward_backward(&x, &x, &lengths, &s, None, mean, f32::NAN),
            Err(Error::Argument { .. })
        ));
        if device != Device::cpu() {
            let cpu_lengths =
                IndexTensor::from_vec(&Device::cpu(), &[2], ok.lengths.clone()).expect("lengths");
            assert!(matches!(
                contrastive_loss_forward_backward(&x, &x, &cpu_lengths, &s, None, mean, 1.0),
                Err(Error::DeviceMismatch { .. })
            ));
        }
    }
}

#[test]
fn tf32_and_bf16_are_not_implemented_by_either_kernel_version() {
    for_each_version(tf32_and_bf16_are_not_implemented_on_every_device);
}

fn tf32_and_bf16_are_not_implemented_on_every_device(version: &str) {
    let mut rng = rng(15);
    for device in all_devices() {
        let x = tensor(&device, &[2, 4, 3], &random(&mut rng, 2 * 4 * 3, 0.0, 1.0));
        let lengths = IndexTensor::from_vec(&device, &[2], vec![4, 2]).expect("lengths");
        let s = tensor(&device, &[1], &[initial_logit_scale() as f64]);
        let reduction = ContrastiveReduction::MeanPerSequence;
        let fp32 = ContrastiveOptions::from(reduction);
        assert_eq!(fp32.precision, Precision::Fp32);
        assert!(contrastive_loss_forward_backward(&x, &x, &lengths, &s, None, fp32, 1.0).is_ok());
        for precision in [Precision::Tf32, Precision::Bf16] {
            let options = ContrastiveOptions {
                reduction,
                precision,
            };
            let plain = contrastive_loss_forward_backward(&x, &x, &lengths, &s, None, options, 1.0)
                .map(|_| ());
            let tape = Tape::new();
            let (x_var, s_var) = (tape.leaf(x.clone()), tape.leaf(s.clone()));
            let taped = contrastive_loss(&tape, &x_var, &x_var, &lengths, &s_var, None, options)
                .map(|_| ());
            for (what, result) in [("plain", plain), ("tape", taped)] {
                match result {
                    Err(Error::PrecisionNotImplemented {
                        op: "contrastive_loss",
                        precision: named,
                    }) if named == precision => {}
                    other => panic!(
                        "{version}: contrastive loss ({what}) in {precision} on {}: {other:?}",
                        device.name()
                    ),
                }
            }
        }
    }
}

#[test]
fn the_initial_logit_scale_is_ln_of_one_over_0_07() {
    // s₀ = ln(1/τ) with τ = 0.07 (spec A9), as a number (cargo-mutants, issue 16: every test
    // took it from the function under test). ln(1/0.07) = 2.659260036932778.
    let s = initial_logit_scale();
    assert!((s as f64 - 2.659_260_036_932_778).abs() < 1e-6, "s₀ = {s}");
}
