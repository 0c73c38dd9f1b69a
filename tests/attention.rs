//! Fused dual-score attention (kernels/attention.cu), every tier:
//! - tier 1: the f64 reference's backward against finite differences, for every input, in every
//!   mode (1, 2, 3 score pairs; optional outputs on and off; position inputs shared by the batch),
//!   with and without dropout;
//! - tiers 2 and 4: the kernel (emulated, and on the GPU when present) and the CPU device's f32
//!   dispatch against the f64 reference on odd sizes, forward and backward, with dropout (so the
//!   masks must agree bit for bit across devices);
//! - the tape face; typed errors; padded rows; RecBole's additive mask.
mod common;

use asif_kernels::autograd::gradcheck::{check_gradient, GradCheckOptions};
use asif_kernels::autograd::Tape;
use asif_kernels::kernel_version::{self, KernelVersion};
use asif_kernels::ops::attention::{
    self, AttentionConfig, AttentionInputs, Geometry, OutputGradients, ReferenceMatrix,
    ReferenceProblem, ScorePair,
};
use asif_kernels::{Device, Error, IndexTensor, Precision, Tensor};
use common::{all_devices, assert_close, kernel_devices, random, rng, tensor, weighted};

/// fp32 against the f64 reference: sums of at most 64 terms per softmax and per dot product.
const TOLERANCE: f64 = 1e-5;

/// Runs a kernel test body once per kernel version of the op (v1 and v2 pass the same tests;
/// `kernel_version`). Failure messages name the version through [`version_label`].
fn for_each_version(mut body: impl FnMut()) {
    for version in [KernelVersion::V1, KernelVersion::V2] {
        kernel_version::with_version(attention::KERNEL_FAMILY, version, &mut body);
    }
}

/// "kernel v1" or "kernel v2": the version the op launches now on this thread.
fn version_label() -> String {
    format!(
        "kernel {}",
        kernel_version::selected(attention::KERNEL_FAMILY)
            .expect("version")
            .name()
    )
}

/// One configuration of the op. Inputs in kernel order: Q1, K1, Q2, K2, Q3, K3, V1, V2, V3.
#[derive(Debug, Clone)]
struct Case {
    lengths: Vec<i32>,
    seq_len: usize,
    heads: usize,
    head_dim: usize,
    pairs: usize,
    fused: bool,
    position: bool,
    /// Q2, K2 and V3 given once for the batch (`[n, d]`).
    shared_positions: bool,
    dropout: f32,
}

/// Random inputs and upstream gradients for a case (`None` where absent).
struct Data {
    inputs: [Option<Vec<f64>>; 9],
    grads: [Option<Vec<f64>>; 3],
}

impl Case {
    fn batch(&self) -> usize {
        self.lengths.len()
    }
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn present(&self, t: usize) -> bool {
        match t {
            0..=5 => t / 2 < self.pairs,
            6 => true,
            7 => self.fused,
            _ => self.position,
        }
    }
    fn shared(&self, t: usize) -> bool {
        self.shared_positions && matches!(t, 2 | 3 | 8)
    }
    fn shape(&self, t: usize) -> Vec<usize> {
        if self.shared(t) {
            vec![self.seq_len, self.width()]
        } else {
            vec![self.batch(), self.seq_len, self.width()]
        }
    }
    fn output_present(&self, s: usize) -> bool {
        [true, self.fused, self.position][s]
    }
    fn config(&self) -> AttentionConfig {
        AttentionConfig {
            heads: self.heads,
            dropout: self.dropout,
            seed: 0x5EED_F00D,
            precision: Precision::Fp32,
        }
    }
    fn geometry(&self) -> Geometry {
        Geometry {
            batch: self.batch(),
            seq_len: self.seq_len,
            heads: self.heads,
            head_dim: self.head_dim,
        }
    }
    fn data(&self, seed: u64) -> Data {
        let mut rng = rng(seed);
        let out_len = self.batch() * self.seq_len * self.width();
        let inputs = std::array::from_fn(|t| {
            self.present(t)
                .then(|| random(&mut rng, self.shape(t).iter().product(), 0.0, 1.0))
        });
        let grads = std::array::from_fn(|s| {
            self.output_present(s)
                .then(|| random(&mut rng, out_len, 0.0, 1.0))
        });
        Data { inputs, grads }
    }
    fn problem<'a>(&'a self, inputs: &'a [Option<Vec<f64>>; 9]) -> ReferenceProblem<'a, f64> {
        let matrix = |t: usize| {
            inputs[t].as_ref().map(|v| ReferenceMatrix {
                values: &v[..],
                shared: self.shared(t),
            })
        };
        ReferenceProblem {
            geometry: self.geometry(),
            lengths: &self.lengths,
            pairs: (0..self.pairs)
                .map(|k| (matrix(2 * k).unwrap(), matrix(2 * k + 1).unwrap()))
                .collect(),
            values: [matrix(6), matrix(7), matrix(8)],
            dropout: self.dropout,
            seed: self.config().seed,
        }
    }
    fn tensors(&self, device: &Device, inputs: &[Option<Vec<f64>>; 9]) -> AttentionInputs {
        let t = |i: usize| {
            inputs[i]
                .as_ref()
                .map(|v| tensor(device, &self.shape(i), v))
        };
        AttentionInputs {
            score_pairs: (0..self.pairs)
                .map(|k| ScorePair {
                    query: t(2 * k).unwrap(),
                    key: t(2 * k + 1).unwrap(),
                })
                .collect(),
            id_values: t(6).unwrap(),
            fused_values: t(7),
            position_values: t(8),
        }
    }
    fn lengths(&self, device: &Device) -> IndexTensor {
        IndexTensor::from_vec(device, &[self.batch()], self.lengths.clone()).expect("lengths")
    }
}

/// The modes of spec §4 at a small size with lengths n, 1, 0 and a middle one.
fn modes(dropout: f32) -> Vec<(&'static str, Case)> {
    let base = Case {
        lengths: vec![5, 1, 0, 3],
        seq_len: 5,
        heads: 2,
        head_dim: 3,
        pairs: 1,
        fused: false,
        position: false,
        shared_positions: false,
        dropout,
    };
    vec![
        ("SASRec (1 pair)", base.clone()),
        (
            "w/o UP (1 pair, O_A)",
            Case {
                fused: true,
                ..base.clone()
            },
        ),
        (
            "2 pairs, O_X only",
            Case {
                pairs: 2,
                ..base.clone()
            },
        ),
        (
            "ASIF (2 pairs, O_A, O_P)",
            Case {
                pairs: 2,
                fused: true,
                position: true,
                ..base.clone()
            },
        ),
        (
            "ASIF, shared positions",
            Case {
                pairs: 2,
                fused: true,
                position: true,
                shared_positions: true,
                ..base.clone()
            },
        ),
        (
            "w/o FA (3 pairs, shared positions)",
            Case {
                pairs: 3,
                fused: true,
                position: true,
                shared_positions: true,
                ..base
            },
        ),
    ]
}

/// Σ_s w_s ⊙ O_s: every output element weighted differently.
fn loss(case: &Case, inputs: &[Option<Vec<f64>>; 9], weights: &[Option<Vec<f64>>; 3]) -> f64 {
    let out = attention::forward_reference(&case.problem(inputs));
    (0..3)
        .filter_map(|s| Some(weighted(out.outputs[s].as_ref()?, weights[s].as_ref()?)))
        .sum()
}

/// Reference gradients in kernel order.
fn reference_gradients(case: &Case, data: &Data) -> [Option<Vec<f64>>; 9] {
    let problem = case.problem(&data.inputs);
    let forward = attention::forward_reference(&problem);
    let grads = attention::backward_reference(
        &problem,
        &forward,
        std::array::from_fn(|s| data.grads[s].as_deref()),
    );
    let mut all: [Option<Vec<f64>>; 9] = Default::default();
    for (k, (dq, dk)) in grads.pairs.into_iter().enumerate() {
        all[2 * k] = Some(dq);
        all[2 * k + 1] = Some(dk);
    }
    for (s, dv) in grads.values.into_iter().enumerate() {
        all[6 + s] = dv;
    }
    all
}

const NAMES: [&str; 9] = [
    "dQ1", "dK1", "dQ2", "dK2", "dQ3", "dK3", "dV1", "dV2", "dV3",
];

#[test]
fn reference_backward_matches_finite_differences_in_every_mode() {
    let options = GradCheckOptions {
        step: 1e-5,
        relative_tolerance: 1e-6,
        absolute_tolerance: 1e-8,
    };
    for dropout in [0.0, 0.3] {
        for (name, case) in modes(dropout) {
            let data = case.data(1);
            let analytic = reference_gradients(&case, &data);
            for t in (0..9).filter(|&t| case.present(t)) {
                let x = data.inputs[t].clone().unwrap();
                let mut inputs = data.inputs.clone();
                let f = |p: &[f64]| {
                    inputs[t] = Some(p.to_vec());
                    loss(&case, &inputs, &data.grads)
                };
                let grad = analytic[t].as_ref().unwrap();
                assert_eq!(
                    grad.len(),
                    x.len(),
                    "{name}: {} has its input's shape",
                    NAMES[t]
                );
                if let Err(e) = check_gradient(f, &x, grad, options) {
                    panic!("{name}, dropout {dropout}: {}: {e}", NAMES[t]);
                }
            }
        }
    }
}

#[test]
fn excluded_keys_equal_recboles_additive_mask_on_valid_rows() {
    // RecBole: logits + (−10000 where masked), softmax over all n keys. Our reference excludes the
    // masked keys; on rows with at least one valid key the results agree to float precision.
    let case = Case {
        lengths: vec![6, 2, 1],
        seq_len: 6,
        heads: 2,
        head_dim: 4,
        pairs: 2,
        fused: true,
        position: true,
        shared_positions: false,
        dropout: 0.0,
    };
    let data = case.data(3);
    let out = attention::forward_reference(&case.problem(&data.inputs));
    let (n, d, dh) = (case.seq_len, case.width(), case.head_dim);
    let at = |t: usize, b: usize, i: usize, c: usize| {
        data.inputs[t].as_ref().unwrap()[b * n * d + i * d + c]
    };
    for (b, &length) in case.lengths.iter().enumerate() {
        for head in 0..case.heads {
            for i in 0..length as usize {
                for (s, value) in [(0usize, 6usize), (1, 7), (2, 8)] {
                    let logits: Vec<f64> = (0..n)
                        .map(|j| {
                            let dot = |k: usize| {
                                (0..dh)
                                    .map(|c| {
                                        at(2 * k, b, i, head * dh + c)
                                            * at(2 * k + 1, b, j, head * dh + c)
                                    })
                                    .sum::<f64>()
                            };
                            let raw = match s {
                                0 => dot(0) + dot(1),
                                1 => dot(0),
                                _ => dot(1),
                            };
                            let mask = if j <= i && (j as i32) < length {
                                0.0
                            } else {
                                -10000.0
                            };
                            raw / (dh as f64).sqrt() + mask
                        })
                        .collect();
                    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                    for c in 0..dh {
                        let want: f64 = (0..n)
                            .map(|j| (logits[j] - max).exp() / sum * at(value, b, j, head * dh + c))
                            .sum();
                        let got =
                            out.outputs[s].as_ref().unwrap()[b * n * d + i * d + head * dh + c];
                        assert!(
                            (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                            "b {b} head {head} row {i} softmax {s}: {got} vs RecBole {want}"
                        );
                    }
                }
            }
        }
    }
}

/// Runs the op on `device` and checks outputs, statistics and gradients against the f64 reference.
fn check_against_reference(device: &Device, case: &Case, seed: u64) {
    let data = case.data(seed);
    let problem = case.problem(&data.inputs);
    let forward = attention::forward_reference(&problem);
    let want_grads = reference_gradients(case, &data);

    let inputs = case.tensors(device, &data.inputs);
    let lengths = case.lengths(device);
    let what = |name: &str| format!("{name} for {case:?} ({})", version_label());
    let (outputs, saved) =
        attention::attention_forward(&inputs, &lengths, &case.config()).expect("forward");
    let got = [
        Some(&outputs.id),
        outputs.fused.as_ref(),
        outputs.position.as_ref(),
    ];
    for s in 0..3 {
        assert_eq!(
            got[s].is_some(),
            case.output_present(s),
            "{}",
            what("output presence")
        );
        if let (Some(got), Some(want)) = (got[s], forward.outputs[s].as_ref()) {
            assert_close(
                &what(["O_X", "O_A", "O_P"][s]),
                device,
                got,
                want,
                TOLERANCE,
            );
        }
    }
    assert_close(
        &what("log-sum-exp"),
        device,
        &saved.log_sum_exp,
        &forward.log_sum_exp,
        TOLERANCE,
    );

    let grad_tensors: Vec<Option<Tensor>> = data
        .grads
        .iter()
        .map(|g| g.as_ref().map(|g| tensor(device, &case.shape(6), g)))
        .collect();
    let output_grads = OutputGradients {
        id: grad_tensors[0].as_ref(),
        fused: grad_tensors[1].as_ref(),
        position: grad_tensors[2].as_ref(),
    };
    let grads =
        attention::attention_backward(&inputs, &lengths, &case.config(), &saved, &output_grads)
            .expect("backward");
    let mut got: Vec<Option<Tensor>> = vec![None; 9];
    for (k, pair) in grads.score_pairs.into_iter().enumerate() {
        got[2 * k] = Some(pair.query);
        got[2 * k + 1] = Some(pair.key);
    }
    got[6] = Some(grads.id_values);
    got[7] = grads.fused_values;
    got[8] = grads.position_values;
    for t in 0..9 {
        assert_eq!(got[t].is_some(), case.present(t), "{}", what(NAMES[t]));
        if let (Some(got), Some(want)) = (&got[t], &want_grads[t]) {
            assert_eq!(got.shape(), case.shape(t).as_slice(), "{}", what(NAMES[t]));
            assert_close(&what(NAMES[t]), device, got, want, TOLERANCE);
        }
    }
}

#[test]
fn kernel_matches_reference_on_odd_sizes() {
    let cases = [
        // n = 1: one key; a sequence of length 0 beside it.
        Case {
            lengths: vec![1, 0],
            seq_len: 1,
            heads: 1,
            head_dim: 8,
            pairs: 1,
            fused: false,
            position: false,
            shared_positions: false,
            dropout: 0.0,
        },
        // h = 4, lengths n, 1, 0, with dropout and the position stream shared by the batch.
        Case {
            lengths: vec![7, 1, 0],
            seq_len: 7,
            heads: 4,
            head_dim: 8,
            pairs: 2,
            fused: true,
            position: true,
            shared_positions: true,
            dropout: 0.25,
        },
        // The paper's n = 50 and d_h = 64, three pairs (w/o FA), two chunks of keys.
        Case {
            lengths: vec![50, 13],
            seq_len: 50,
            heads: 1,
            head_dim: 64,
            pairs: 3,
            fused: true,
            position: true,
            shared_positions: true,
            dropout: 0.1,
        },
        // n = 64 (the limit), d_h = 32, per-sequence position inputs.
        Case {
            lengths: vec![64, 33],
            seq_len: 64,
            heads: 2,
            head_dim: 32,
            pairs: 2,
            fused: true,
            position: true,
            shared_positions: false,
            dropout: 0.0,
        },
        // d_h = 12: v2's tiles pad channels to 16 (16-byte rows, a partial k-step); lengths n,
        // one m16 tile, one less, 1 and 0; three pairs, O_A only.
        Case {
            lengths: vec![17, 16, 15, 1, 0],
            seq_len: 17,
            heads: 2,
            head_dim: 12,
            pairs: 3,
            fused: true,
            position: false,
            shared_positions: false,
            dropout: 0.0,
        },
        // d = 18 (h = 3, d_h = 6): rows not 16-byte aligned, so v2 stages with plain loads;
        // shared positions, dropout.
        Case {
            lengths: vec![20, 9],
            seq_len: 20,
            heads: 3,
            head_dim: 6,
            pairs: 2,
            fused: false,
            position: true,
            shared_positions: true,
            dropout: 0.3,
        },
        // Odd d_h (lanes past d_h idle), lengths around the chunk boundary, heavy dropout, O_A only.
        Case {
            lengths: vec![33, 32, 31],
            seq_len: 37,
            heads: 1,
            head_dim: 5,
            pairs: 1,
            fused: true,
            position: false,
            shared_positions: false,
            dropout: 0.5,
        },
    ];
    for_each_version(|| {
        for device in all_devices() {
            for (i, case) in cases.iter().enumerate() {
                check_against_reference(&device, case, 100 + i as u64);
            }
        }
    });
}

#[test]
fn padded_rows_are_zero_and_their_upstream_gradient_is_ignored() {
    let case = Case {
        lengths: vec![4, 0, 2],
        seq_len: 6,
        heads: 2,
        head_dim: 4,
        pairs: 2,
        fused: true,
        position: true,
        shared_positions: false,
        dropout: 0.2,
    };
    let data = case.data(7);
    let (n, d) = (case.seq_len, case.width());
    let padded = |r: usize| (r % n) as i32 >= case.lengths[r / n];
    for_each_version(|| {
        for device in kernel_devices().into_iter().chain([Device::cpu()]) {
            let inputs = case.tensors(&device, &data.inputs);
            let lengths = case.lengths(&device);
            let (outputs, saved) =
                attention::attention_forward(&inputs, &lengths, &case.config()).expect("forward");
            for out in [
                Some(&outputs.id),
                outputs.fused.as_ref(),
                outputs.position.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                let values = out.to_vec().unwrap();
                for r in (0..case.batch() * n).filter(|&r| padded(r)) {
                    assert!(
                        values[r * d..(r + 1) * d].iter().all(|&v| v == 0.0),
                        "padded row {r} is not zero on {}",
                        device.name()
                    );
                }
            }
            // Upstream gradients that are nonzero only on padded rows give exactly zero gradients.
            let only_padded: Vec<f64> = data.grads[0]
                .as_ref()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(e, &g)| if padded(e / d) { g } else { 0.0 })
                .collect();
            let g = tensor(&device, &case.shape(6), &only_padded);
            let grads = attention::attention_backward(
                &inputs,
                &lengths,
                &case.config(),
                &saved,
                &OutputGradients {
                    id: Some(&g),
                    fused: Some(&g),
                    position: Some(&g),
                },
            )
            .expect("backward");
            let mut all = vec![
                grads.id_values,
                grads.fused_values.unwrap(),
                grads.position_values.unwrap(),
            ];
            for pair in grads.score_pairs {
                all.extend([pair.query, pair.key]);
            }
            for grad in all {
                assert!(
                    grad.to_vec().unwrap().iter().all(|&v| v == 0.0),
                    "nonzero gradient from padded rows on {}",
                    device.name()
                );
            }
        }
    });
}

#[test]
fn dropout_is_applied_and_regenerated() {
    // The same seed gives the same output; another seed or no dropout a different one.
    let case = Case {
        lengths: vec![9, 5],
        seq_len: 9,
        heads: 2,
        head_dim: 8,
        pairs: 2,
        fused: true,
        position: true,
        shared_positions: true,
        dropout: 0.4,
    };
    let data = case.data(8);
    for_each_version(|| {
        for device in all_devices() {
            let inputs = case.tensors(&device, &data.inputs);
            let lengths = case.lengths(&device);
            let run = |config: AttentionConfig| {
                attention::attention_forward(&inputs, &lengths, &config)
                    .expect("forward")
                    .0
                    .id
                    .to_vec()
                    .unwrap()
            };
            let config = case.config();
            assert_eq!(
                run(config),
                run(config),
                "same seed, same mask on {}",
                device.name()
            );
            assert_ne!(
                run(config),
                run(AttentionConfig {
                    seed: config.seed + 1,
                    ..config
                }),
                "seed changes the mask"
            );
            assert_ne!(
                run(config),
                run(AttentionConfig {
                    dropout: 0.0,
                    ..config
                }),
                "dropout changes the output"
            );
        }
    });
}

#[test]
fn tf32_and_bf16_are_not_implemented_by_kernel_v1() {
    let case = Case {
        lengths: vec![3, 2],
        seq_len: 3,
        heads: 2,
        head_dim: 4,
        pairs: 2,
        fused: true,
        position: true,
        shared_positions: false,
        dropout: 0.0,
    };
    let data = case.data(15);
    kernel_version::with_version(attention::KERNEL_FAMILY, KernelVersion::V1, || {
        for device in all_devices() {
            let inputs = case.tensors(&device, &data.inputs);
            let lengths = case.lengths(&device);
            let fp32 = case.config();
            assert_eq!(fp32.precision, Precision::default());
            let (outputs, saved) =
                attention::attention_forward(&inputs, &lengths, &fp32).expect("fp32 forward");
            let upstream = OutputGradients {
                id: Some(&outputs.id),
                ..Default::default()
            };
            for precision in [Precision::Tf32, Precision::Bf16] {
                let config = AttentionConfig { precision, ..fp32 };
                let forward = attention::attention_forward(&inputs, &lengths, &config).map(|_| ());
                let backward =
                    attention::attention_backward(&inputs, &lengths, &config, &saved, &upstream)
                        .map(|_| ());
                for (what, result) in [("forward", forward), ("backward", backward)] {
                    match result {
                        Err(Error::PrecisionNotImplemented {
                            op: "attention",
                            precision: named,
                        }) if named == precision => {}
                        other => panic!(
                            "attention {what} in {precision} on {}: {other:?}",
                            device.name()
                        ),
                    }
                }
            }
        }
    });
}

#[test]
fn tf32_and_bf16_on_kernel_v2_are_within_their_tiers() {
    // ASIF mode with dropout, d_h = 12 (not a multiple of bf16's k-step of 16) and lengths that
    // leave an odd number of key tiles: v2's forward in plain TF32 and in bf16 against the f64
    // reference at each precision's tier; each must differ from the 3xTF32 (Fp32) result, or
    // the mode would not reach the mma. The backward (v2's, fp32 by 3xTF32) accepts both configs.
    // The CPU device refuses both.
    let case = Case {
        lengths: vec![20, 11, 0],
        seq_len: 20,
        heads: 2,
        head_dim: 12,
        pairs: 2,
        fused: true,
        position: true,
        shared_positions: true,
        dropout: 0.2,
    };
    let data = case.data(21);
    let problem = case.problem(&data.inputs);
    let want = attention::forward_reference(&problem);
    kernel_version::with_version(attention::KERNEL_FAMILY, KernelVersion::V2, || {
        for device in all_devices() {
            let inputs = case.tensors(&device, &data.inputs);
            let lengths = case.lengths(&device);
            let fp32 = case.config();
            let mut results: Vec<(Precision, Vec<f32>)> = Vec::new();
            for precision in [Precision::Tf32, Precision::Bf16] {
                let config = AttentionConfig { precision, ..fp32 };
                if device == Device::cpu() {
                    match attention::attention_forward(&inputs, &lengths, &config) {
                        Err(Error::PrecisionNotImplemented {
                            op: "attention",
                            precision: named,
                        }) if named == precision => {}
                        other => panic!(
                            "{precision} on the CPU device should be refused: {:?}",
                            other.map(|_| ())
                        ),
                    }
                    continue;
                }
                let (outputs, saved) = attention::attention_forward(&inputs, &lengths, &config)
                    .unwrap_or_else(|e| panic!("{precision} forward: {e}"));
                let (exact, _) =
                    attention::attention_forward(&inputs, &lengths, &fp32).expect("fp32 forward");
                let got = [
                    Some(&outputs.id),
                    outputs.fused.as_ref(),
                    outputs.position.as_ref(),
                ];
                for s in 0..3 {
                    assert_close(
                        &format!("{precision} {} on kernel v2", ["O_X", "O_A", "O_P"][s]),
                        &device,
                        got[s].expect("output"),
                        want.outputs[s].as_ref().expect("reference output"),
                        precision.relative_tolerance(),
                    );
                }
                assert_ne!(
                    outputs.id.to_vec().unwrap(),
                    exact.id.to_vec().unwrap(),
                    "{precision} gave the Fp32 result on {}: the precision did not reach the kernel",
                    device.name()
                );
                for (other, values) in &results {
                    assert_ne!(
                        &outputs.id.to_vec().unwrap(),
                        values,
                        "{precision} gave the {other} result on {}",
                        device.name()
                    );
                }
                results.push((precision, outputs.id.to_vec().unwrap()));
                let upstream = OutputGradients {
                    id: Some(&outputs.id),
                    ..Default::default()
                };
                attention::attention_backward(&inputs, &lengths, &config, &saved, &upstream)
                    .unwrap_or_else(|e| panic!("the backward accepts {precision} (fp32): {e}"));
            }
        }
    });
}

#[test]
fn kernel_backward_is_deterministic() {
    let case = Case {
        lengths: vec![12, 7, 12],
        seq_len: 12,
        heads: 2,
        head_dim: 16,
        pairs: 2,
        fused: true,
        position: true,
        shared_positions: true,
        dropout: 0.1,
    };
    let data = case.data(9);
    for_each_version(|| {
        for device in kernel_devices() {
            let inputs = case.tensors(&device, &data.inputs);
            let lengths = case.lengths(&device);
            let (_, saved) =
                attention::attention_forward(&inputs, &lengths, &case.config()).expect("forward");
            let g: Vec<Tensor> = data
                .grads
                .iter()
                .map(|g| tensor(&device, &case.shape(6), g.as_ref().unwrap()))
                .collect();
            let run = || {
                let grads = attention::attention_backward(
                    &inputs,
                    &lengths,
                    &case.config(),
                    &saved,
                    &OutputGradients {
                        id: Some(&g[0]),
                        fused: Some(&g[1]),
                        position: Some(&g[2]),
                    },
                )
                .expect("backward");
                let mut all = vec![
                    grads.id_values.to_vec().unwrap(),
                    grads.position_values.unwrap().to_vec().unwrap(),
                ];
                for pair in grads.score_pairs {
                    all.extend([pair.query.to_vec().unwrap(), pair.key.to_vec().unwrap()]);
                }
                all
            };
            assert_eq!(
                run(),
                run(),
                "backward differs between two runs on {}",
                device.name()
            );
        }
    });
}

#[test]
fn tape_face_matches_the_reference() {
    // ASIF with shared positions; the position output gets no gradient (None: zero upstream).
    let case = Case {
        lengths: vec![6, 1, 0],
        seq_len: 6,
        heads: 2,
        head_dim: 4,
        pairs: 2,
        fused: true,
        position: true,
        shared_positions: true,
        dropout: 0.2,
    };
    let mut data = case.data(10);
    data.grads[2] = Some(vec![0.0; data.grads[0].as_ref().unwrap().len()]);
    let want = reference_gradients(&case, &data);
    for_each_version(|| {
        for device in all_devices() {
            let tape = Tape::new();
            let vars: Vec<Option<_>> = (0..9)
                .map(|t| {
                    data.inputs[t]
                        .as_ref()
                        .map(|v| tape.leaf(tensor(&device, &case.shape(t), v)))
                })
                .collect();
            let v = |t: usize| vars[t].as_ref().unwrap();
            let out = attention::attention(
                &tape,
                &[(v(0), v(1)), (v(2), v(3))],
                v(6),
                vars[7].as_ref(),
                vars[8].as_ref(),
                &case.lengths(&device),
                &case.config(),
            )
            .expect("attention");
            let seed = |s: usize| tensor(&device, &case.shape(6), data.grads[s].as_ref().unwrap());
            let grads = tape
                .backward_from(vec![
                    (&out.id, seed(0)),
                    (out.fused.as_ref().unwrap(), seed(1)),
                ])
                .expect("backward");
            for t in (0..9).filter(|&t| case.present(t)) {
                assert_close(
                    &format!("tape {}", NAMES[t]),
                    &device,
                    grads.get(v(t)).expect("gradient"),
                    want[t].as_ref().unwrap(),
                    TOLERANCE,
                );
            }
        }
    });
}

#[test]
fn tape_adds_gradients_of_a_variable_used_twice() {
    // Self-attention: Q1 = K1 = V1 = one variable.
    let case = Case {
        lengths: vec![5, 3],
        seq_len: 5,
        heads: 1,
        head_dim: 6,
        pairs: 1,
        fused: false,
        position: false,
        shared_positions: false,
        dropout: 0.0,
    };
    let mut data = case.data(11);
    let x = data.inputs[0].clone();
    data.inputs[1] = x.clone();
    data.inputs[6] = x;
    let parts = reference_gradients(&case, &data);
    let want: Vec<f64> = (0..parts[0].as_ref().unwrap().len())
        .map(|e| {
            [0, 1, 6]
                .iter()
                .map(|&t| parts[t].as_ref().unwrap()[e])
                .sum()
        })
        .collect();
    for_each_version(|| {
        for device in all_devices() {
            let tape = Tape::new();
            let x = tape.leaf(tensor(
                &device,
                &case.shape(0),
                data.inputs[0].as_ref().unwrap(),
            ));
            let out = attention::attention(
                &tape,
                &[(&x, &x)],
                &x,
                None,
                None,
                &case.lengths(&device),
                &case.config(),
            )
            .expect("attention");
            let grads = tape
                .backward(
                    &out.id,
                    tensor(&device, &case.shape(6), data.grads[0].as_ref().unwrap()),
                )
                .expect("backward");
            assert_close(
                "dx (summed over Q, K, V)",
                &device,
                grads.get(&x).unwrap(),
                &want,
                TOLERANCE,
            );
        }
    });
}

#[test]
fn lengths_outside_zero_to_n_are_clamped() {
    // L_b > n behaves as n, L_b < 0 as 0, on every device (the kernel reads lengths on the device,
    // so they are clamped there rather than checked on the host).
    let clamped = Case {
        lengths: vec![6, 0, 3],
        seq_len: 6,
        heads: 1,
        head_dim: 4,
        pairs: 2,
        fused: false,
        position: true,
        shared_positions: true,
        dropout: 0.0,
    };
    let wild = Case {
        lengths: vec![60, -2, 3],
        ..clamped.clone()
    };
    let data = clamped.data(13);
    for_each_version(|| {
        for device in all_devices() {
            let inputs = clamped.tensors(&device, &data.inputs);
            let run = |case: &Case| {
                let (out, _) =
                    attention::attention_forward(&inputs, &case.lengths(&device), &case.config())
                        .expect("forward");
                (
                    out.id.to_vec().unwrap(),
                    out.position.unwrap().to_vec().unwrap(),
                )
            };
            assert_eq!(run(&wild), run(&clamped), "on {}", device.name());
        }
    });
}

/// Every check of the op refuses its own bad argument with its own message (a refusal by an
/// earlier check would hide a check that lets everything through), and the limits themselves
/// are allowed: n = 64, d_h = 64, dropout 0, one and three score pairs, inputs shared by the
/// batch.
#[test]
fn bad_arguments_are_refused_one_by_one() {
    let device = Device::cpu();
    let ok = Case {
        lengths: vec![3, 2],
        seq_len: 3,
        heads: 2,
        head_dim: 4,
        pairs: 2,
        fused: true,
        position: true,
        shared_positions: false,
        dropout: 0.0,
    };
    let data = ok.data(12);
    let lengths = ok.lengths(&device);
    let inputs = ok.tensors(&device, &data.inputs);
    let config = ok.config();
    assert!(attention::attention_forward(&inputs, &lengths, &config).is_ok());
    let refused = |inputs: &AttentionInputs,
                   lengths: &IndexTensor,
                   config: AttentionConfig,
                   kind: &str,
                   message: &str| {
        let error = match attention::attention_forward(inputs, lengths, &config) {
            Err(e) => e,
            Ok(_) => panic!("{message}: accepted"),
        };
        let text = error.to_string();
        let variant = match error {
            Error::Shape { .. } => "shape",
            Error::Argument { .. } => "argument",
            Error::DeviceMismatch { .. } => "device",
            _ => "other",
        };
        assert_eq!(variant, kind, "{message}: {text}");
        assert!(text.contains(message), "expected {message:?}, got {text:?}");
    };
    let with_pairs = |pairs: Vec<ScorePair>| AttentionInputs {
        score_pairs: pairs,
        ..inputs.clone()
    };
    refused(
        &with_pairs(vec![]),
        &lengths,
        config,
        "argument",
        "score pairs (SASRec 1, ASIF 2, w/o FA 3), got 0",
    );
    let four = vec![inputs.score_pairs[0].clone(); 4];
    refused(&with_pairs(four), &lengths, config, "argument", "got 4");
    let one = with_pairs(vec![inputs.score_pairs[0].clone()]);
    refused(
        &one,
        &lengths,
        config,
        "argument",
        "needs the position score pair",
    );
    for (dropout, shown) in [(1.0, "got 1"), (f32::NAN, "got NaN"), (-0.25, "got -0.25")] {
        let config = AttentionConfig { dropout, ..config };
        refused(
            &inputs,
            &lengths,
            config,
            "argument",
            &format!("dropout must be in [0, 1), {shown}"),
        );
    }
    let square = IndexTensor::from_vec(&device, &[1, 2], vec![3, 2]).unwrap();
    refused(
        &inputs,
        &square,
        config,
        "shape",
        "lengths must be [B], got [1, 2]",
    );
    // Every input [2, 3, 8] and L_b of three sequences: V1 is the first input checked for B.
    let three = IndexTensor::from_vec(&device, &[3], vec![1, 1, 1]).unwrap();
    refused(
        &inputs,
        &three,
        config,
        "shape",
        "V1 must be [B = 3, n, d], got [2, 3, 8]",
    );
    let heads = |heads| AttentionConfig { heads, ..config };
    for h in [0, 3] {
        refused(
            &inputs,
            &lengths,
            heads(h),
            "argument",
            &format!("is not a multiple of heads = {h}"),
        );
    }
    let wrong = Tensor::zeros(&device, &[2, 3, 7]).unwrap();
    let v2 = AttentionInputs {
        fused_values: Some(wrong),
        ..inputs.clone()
    };
    refused(
        &v2,
        &lengths,
        config,
        "shape",
        "V2 must be [2, 3, 8] or [3, 8] (shared by the batch), got [2, 3, 7]",
    );
    let mut q1 = inputs.clone();
    q1.score_pairs[0].query = Tensor::zeros(&device, &[3, 3, 8]).unwrap();
    refused(
        &q1,
        &lengths,
        config,
        "shape",
        "Q1 must be [2, 3, 8] or [3, 8]",
    );
    let mut k2 = inputs.clone();
    k2.score_pairs[1].key = Tensor::zeros(&device, &[4, 8]).unwrap();
    refused(
        &k2,
        &lengths,
        config,
        "shape",
        "K2 must be [2, 3, 8] or [3, 8]",
    );
    let elsewhere = inputs.id_values.to_device(&common::emulated()).unwrap();
    let v1 = AttentionInputs {
        id_values: elsewhere,
        ..inputs.clone()
    };
    refused(&v1, &lengths, config, "device", "expected emulated");
    let lengths_elsewhere = lengths.to_device(&common::emulated()).unwrap();
    refused(
        &inputs,
        &lengths_elsewhere,
        config,
        "device",
        "expected cpu, found emulated",
    );

    // The kernel's limits, n and d_h, each side of them; d = 0 has d_h = 0.
    let lone = |n: usize, d: usize| {
        let x = Tensor::zeros(&device, &[1, n, d]).unwrap();
        AttentionInputs {
            score_pairs: vec![ScorePair {
                query: x.clone(),
                key: x.clone(),
            }],
            id_values: x,
            fused_values: None,
            position_values: None,
        }
    };
    let first = IndexTensor::from_vec(&device, &[1], vec![1]).unwrap();
    refused(
        &lone(65, 8),
        &first,
        heads(1),
        "shape",
        "sequence length n = 65 outside 1..=64",
    );
    refused(
        &lone(0, 8),
        &first,
        heads(1),
        "shape",
        "sequence length n = 0 outside 1..=64",
    );
    refused(
        &lone(4, 130),
        &first,
        heads(2),
        "shape",
        "head width d_h = 65 outside 1..=64",
    );
    refused(
        &lone(4, 0),
        &first,
        heads(1),
        "shape",
        "head width d_h = 0 outside 1..=64",
    );
    for (n, d, h) in [(64, 8, 1), (4, 128, 2), (1, 1, 1)] {
        let result = attention::attention_forward(&lone(n, d), &first, &heads(h));
        assert!(result.is_ok(), "n = {n}, d = {d}, h = {h}: {result:?}");
    }

    // Three pairs (w/o FA), and Q2, K2 and V3 shared by the batch, are allowed.
    let mut three_pairs = inputs.clone();
    three_pairs.score_pairs.push(inputs.score_pairs[0].clone());
    assert!(attention::attention_forward(&three_pairs, &lengths, &config).is_ok());
    let shared_case = Case {
        shared_positions: true,
        ..ok.clone()
    };
    let shared = shared_case.tensors(&device, &shared_case.data(13).inputs);
    assert_eq!(shared.position_values.as_ref().unwrap().shape(), &[3, 8]);
    assert!(attention::attention_forward(&shared, &lengths, &config).is_ok());
}

/// The dropout counter of entry (i, j) of sequence b, head `head` is ((b·h + head)·n + i)·n + j,
/// the kernel's `(counter_base + i)·n + j` with `counter_base = (b·h + head)·n`: every mask
/// (and every reproduced result) depends on this layout, so it is pinned in numbers.
#[test]
fn dropout_counters_and_sizes_are_known() {
    let g = Geometry {
        batch: 2,
        seq_len: 5,
        heads: 3,
        head_dim: 4,
    };
    assert_eq!(g.dropout_counter(0, 0, 0, 0), 0);
    assert_eq!(g.dropout_counter(0, 0, 0, 4), 4);
    assert_eq!(g.dropout_counter(0, 0, 1, 2), 7);
    assert_eq!(g.dropout_counter(0, 1, 0, 0), 25);
    assert_eq!(g.dropout_counter(1, 2, 3, 4), 144);
    assert_eq!(g.dropout_counter(1, 2, 4, 4), 149);
    // B·n·d, which the 32-bit indexing check bounds (`ops::check_kernel_len` refuses past
    // i32::MAX; inputs that large take 8 GiB, so the sum is checked here in numbers).
    assert_eq!(g.elements(), 120);
    let large = Geometry {
        batch: 524_289,
        seq_len: 64,
        heads: 2,
        head_dim: 32,
    };
    assert_eq!(large.elements(), 2_147_487_744);
}
