//! Finite differences through the kernels themselves (issue 16): on every kernel device (the host
//! emulator running the real `.cu` kernels, and the GPU when there is one) and on the CPU
//! reference, a kernel's backward is checked against its own forward, not only against the
//! reference's backward.
//!
//! For each op, a fixed random weighting w of its outputs gives the scalar f = Σ ⟨w_k, y_k⟩
//! (summed in f64 on the host). For each input x_i, along two unit directions v (the analytic
//! gradient's own direction, and a random one), the central difference
//! (f(x_i + εv) − f(x_i − εv)) / 2ε with ε = 1e-2 must match ⟨∂f/∂x_i, v⟩ from the backward
//! within 1e-2·‖∂f/∂x_i‖ + 1e-4. The kernels run in f32: the forward's rounding adds about
//! 1e-4 to the difference quotient and the step's truncation about as much, well inside the
//! tolerance; a wrong term in a backward (a flipped sign, a missing dropout multiplier, a
//! dropped gradient path) moves the directional derivative by a sizeable fraction of ‖∂f/∂x_i‖.
//! Measured worst error ratios are printed with `--nocapture`.
mod common;

use asif_kernels::autograd::{Tape, Var};
use asif_kernels::kernel_version::{self, KernelVersion};
use asif_kernels::ops::attention::{self, attention, AttentionConfig};
use asif_kernels::ops::contrastive::{self, contrastive_loss, ContrastiveReduction};
use asif_kernels::ops::hie::{self, hie, HieBackward, HieOptions};
use asif_kernels::{Device, IndexTensor, Precision, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STEP: f64 = 1e-2;
const RELATIVE: f64 = 1e-2;
const ABSOLUTE: f64 = 1e-4;

/// An op under test: records itself on a tape from its input variables, returning its outputs.
type Build<'a> = dyn Fn(&Tape, &[Var]) -> Vec<Var> + 'a;

struct Problem<'a> {
    name: &'a str,
    shapes: Vec<Vec<usize>>,
    values: Vec<Vec<f32>>,
    /// Which inputs to check (some get no gradient by design, e.g. H_X with Q constant).
    checked: Vec<usize>,
    build: &'a Build<'a>,
}

fn random(rng: &mut StdRng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

fn unit(v: Vec<f64>) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

impl Problem<'_> {
    fn leaves(&self, tape: &Tape, device: &Device, values: &[Vec<f32>]) -> Vec<Var> {
        self.shapes
            .iter()
            .zip(values)
            .map(|(s, v)| tape.leaf(Tensor::from_vec(device, s, v.clone()).unwrap()))
            .collect()
    }

    /// The outputs' weights w (fixed: from the output shapes and a seed).
    fn weights(&self, outputs: &[Var]) -> Vec<Vec<f32>> {
        let mut rng = StdRng::seed_from_u64(99);
        outputs
            .iter()
            .map(|y| random(&mut rng, y.value().len(), 1.0))
            .collect()
    }

    fn objective(&self, device: &Device, values: &[Vec<f32>], weights: &[Vec<f32>]) -> f64 {
        let tape = Tape::new();
        let leaves = self.leaves(&tape, device, values);
        let outputs = (self.build)(&tape, &leaves);
        outputs
            .iter()
            .zip(weights)
            .map(|(y, w)| {
                y.value()
                    .to_vec()
                    .unwrap()
                    .iter()
                    .zip(w)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
            })
            .sum()
    }

    /// Returns the worst |numeric − analytic| / (RELATIVE·‖g‖ + ABSOLUTE) (≤ 1 passes).
    fn check(&self, device: &Device) -> f64 {
        let tape = Tape::new();
        let leaves = self.leaves(&tape, device, &self.values);
        let outputs = (self.build)(&tape, &leaves);
        let weights = self.weights(&outputs);
        let seeds = outputs
            .iter()
            .zip(&weights)
            .map(|(y, w)| {
                (
                    y,
                    Tensor::from_vec(device, y.value().shape(), w.clone()).unwrap(),
                )
            })
            .collect();
        let grads = tape.backward_from(seeds).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut worst: f64 = 0.0;
        for &i in &self.checked {
            let g: Vec<f64> = grads
                .get(&leaves[i])
                .map(|t| t.to_vec().unwrap().into_iter().map(f64::from).collect())
                .unwrap_or_else(|| vec![0.0; self.values[i].len()]);
            let g_norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(
                g_norm > 1e-3,
                "{} on {}: input {i} gets no gradient to check",
                self.name,
                device.name()
            );
            let directions = [
                unit(g.clone()),
                unit(
                    random(&mut rng, g.len(), 1.0)
                        .into_iter()
                        .map(f64::from)
                        .collect(),
                ),
            ];
            for (k, v) in directions.iter().enumerate() {
                let at = |sign: f64| {
                    let mut values = self.values.clone();
                    for (x, d) in values[i].iter_mut().zip(v) {
                        *x = (*x as f64 + sign * STEP * d) as f32;
                    }
                    self.objective(device, &values, &weights)
                };
                let numeric = (at(1.0) - at(-1.0)) / (2.0 * STEP);
                let analytic: f64 = g.iter().zip(v).map(|(a, b)| a * b).sum();
                let ratio = (numeric - analytic).abs() / (RELATIVE * g_norm + ABSOLUTE);
                worst = worst.max(ratio);
                assert!(
                    ratio <= 1.0,
                    "{} on {}: input {i}, direction {}: finite difference {numeric:.6e}, \
                     backward {analytic:.6e} (‖g‖ = {g_norm:.3e})",
                    self.name,
                    device.name(),
                    if k == 0 { "of the gradient" } else { "random" }
                );
            }
        }
        worst
    }
}

fn devices() -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    devices.extend(common::kernel_devices());
    devices
}

fn lengths(device: &Device, values: &[i32]) -> IndexTensor {
    IndexTensor::from_vec(device, &[values.len()], values.to_vec()).unwrap()
}

const B: usize = 3;
const N: usize = 6;
const D: usize = 16;

/// Fused dual-score attention (eqs. 3 to 5), with attention dropout on (a fixed mask): two score
/// pairs and three value streams (ASIF), and three pairs with the id values only (w/o FA's Π_X).
#[test]
fn attention_backward_matches_its_forward() {
    let shape = vec![B, N, D];
    // Both kernel versions (v2: the tensor-core forward and the one-pass backward); the CPU
    // reference has one, checked with v1.
    for version in [KernelVersion::V1, KernelVersion::V2] {
        let devices = match version {
            KernelVersion::V1 => devices(),
            KernelVersion::V2 | KernelVersion::V3 => common::kernel_devices(),
        };
        kernel_version::with_version(attention::KERNEL_FAMILY, version, || {
            for device in &devices {
                let device = device.clone();
                // The same inputs on every device.
                let mut rng = StdRng::seed_from_u64(1);
                for (pairs, values) in [(2usize, 3usize), (3, 1)] {
                    let inputs = 2 * pairs + values;
                    let config = AttentionConfig {
                        heads: 2,
                        dropout: 0.2,
                        seed: 11,
                        precision: Precision::Fp32,
                    };
                    let lens = lengths(&device, &[1, 4, 6]);
                    let build = |tape: &Tape, x: &[Var]| -> Vec<Var> {
                        let _ = tape;
                        let score_pairs: Vec<(&Var, &Var)> =
                            (0..pairs).map(|p| (&x[2 * p], &x[2 * p + 1])).collect();
                        let v = &x[2 * pairs..];
                        let o = attention(
                            tape,
                            &score_pairs,
                            &v[0],
                            v.get(1),
                            v.get(2),
                            &lens,
                            &config,
                        )
                        .unwrap();
                        [Some(o.id), o.fused, o.position]
                            .into_iter()
                            .flatten()
                            .collect()
                    };
                    let problem = Problem {
                        name: &format!(
                            "attention ({pairs} score pairs, {values} value streams, kernel {})",
                            version.name()
                        ),
                        shapes: vec![shape.clone(); inputs],
                        values: (0..inputs)
                            .map(|_| random(&mut rng, B * N * D, 1.0))
                            .collect(),
                        checked: (0..inputs).collect(),
                        build: &build,
                    };
                    let worst = problem.check(&device);
                    eprintln!(
                        "{} on {}: worst ratio {worst:.3}",
                        problem.name,
                        device.name()
                    );
                }
            }
        });
    }
}

/// HIE (eqs. 10 to 12): the full thin-QR backward (every input, full rank: L_b ≥ r) and the
/// Q-constant backward (H_A only; lengths below r exercise the rank guard).
#[test]
fn hie_backward_matches_its_forward() {
    // Every kernel version (kernel_version family "hie").
    common::for_each_version(&[hie::KERNEL_FAMILY], |version| {
        let r = 4;
        for device in devices() {
            // The same inputs on every device: the sign test φ makes HIE piecewise smooth, and these
            // inputs have no switch of φ within the step (a switch shows as a difference ∝ 1/ε).
            let mut rng = StdRng::seed_from_u64(2);
            for (mode, lens, checked) in [
                (HieBackward::FullQr, [4, 5, 6], vec![0, 1, 2]),
                (HieBackward::QConstant, [1, 3, 6], vec![1]),
            ] {
                let lens = lengths(&device, &lens);
                let build = |tape: &Tape, x: &[Var]| -> Vec<Var> {
                    vec![hie(
                        tape,
                        &x[0],
                        &x[1],
                        &x[2],
                        &lens,
                        HieOptions::default(),
                        mode,
                    )
                    .unwrap()]
                };
                let problem = Problem {
                    name: &format!("HIE ({mode:?}, kernel {})", version.name()),
                    shapes: vec![vec![B, N, D], vec![B, N, D], vec![N, r]],
                    values: vec![
                        random(&mut rng, B * N * D, 1.0),
                        random(&mut rng, B * N * D, 1.0),
                        random(&mut rng, N * r, 1.0),
                    ],
                    checked,
                    build: &build,
                };
                let worst = problem.check(&device);
                eprintln!(
                    "{} on {}: worst ratio {worst:.3}",
                    problem.name,
                    device.name()
                );
            }
        }
    });
}

/// The RSA contrastive loss (eqs. 6 to 9), both reductions, with and without `rsa_dedup`.
#[test]
fn contrastive_backward_matches_its_forward() {
    // Both kernel versions; v2 in the second configuration only (the reductions' weights are
    // code both versions share), to keep the emulated tier's time down.
    common::for_each_version(&[contrastive::KERNEL_FAMILY], |version| {
        contrastive_backward_on_every_device(version.name())
    });
}

fn contrastive_backward_on_every_device(version: &str) {
    for device in devices() {
        let mut rng = StdRng::seed_from_u64(3);
        let lens = lengths(&device, &[1, 4, 6]);
        // Items 0 and 2 of the last sequence share an attribute set.
        let groups = IndexTensor::from_vec(
            &device,
            &[B, N],
            vec![0, -1, -1, -1, -1, -1, 0, 1, 2, 3, -1, -1, 4, 5, 4, 6, 7, 8],
        )
        .unwrap();
        let configurations = [
            (ContrastiveReduction::MeanPerSequence, false),
            (ContrastiveReduction::Sum, true),
        ];
        let first = if version == "v1" { 0 } else { 1 };
        for &(reduction, dedup) in &configurations[first..] {
            let build = |tape: &Tape, x: &[Var]| -> Vec<Var> {
                vec![contrastive_loss(
                    tape,
                    &x[0],
                    &x[1],
                    &lens,
                    &x[2],
                    dedup.then_some(&groups),
                    reduction,
                )
                .unwrap()]
            };
            let problem = Problem {
                name: &format!("contrastive {version} ({reduction:?}, dedup {dedup})"),
                shapes: vec![vec![B, N, D], vec![B, N, D], vec![1]],
                values: vec![
                    random(&mut rng, B * N * D, 1.0),
                    random(&mut rng, B * N * D, 1.0),
                    vec![1.5],
                ],
                checked: vec![0, 1, 2],
                build: &build,
            };
            let worst = problem.check(&device);
            eprintln!(
                "{} on {}: worst ratio {worst:.3}",
                problem.name,
                device.name()
            );
        }
    }
}
