//! Per-step scalars read from a device step counter (issue 20: a CUDA graph of the whole step
//! replays without new arguments): the step-counter kernels against today's by-value kernels,
//! bit for bit, over many steps, on every device (the CPU reference reads the counter on the
//! host; the emulator and the GPU run `adam_update_stepped`, `adam_advance_step` and
//! `dropout_apply_stepped`).
//!
//! Planted bugs each test was seen to fail on: `adam_advance_step` not advancing (Adam's
//! sequence and the counter's value part at step 2); `asif_step_seed` reading `*step + 1` (every
//! stepped mask differs); the stepped Adam's t off by one (`taken` in place of `taken + 1`).
mod common;

use asif_kernels::device::{StepCounter, StepSeed};
use asif_kernels::model::{DropoutSeeds, Mode};
use asif_kernels::ops::adam::{Adam, AdamConfig};
use asif_kernels::ops::attention::{
    self, AttentionConfig, AttentionInputs, OutputGradients, ScorePair,
};
use asif_kernels::ops::dropout::{self, DropoutMode, MaskSeed};
use asif_kernels::ops::residual_norm::{self, DropoutSettings};
use asif_kernels::{rng as hash_rng, Device, IndexTensor, Precision, Tensor};
use common::{all_devices, for_each_version, random, rng, to_f32};

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Asserts `got` and `want` hold the same bits, naming how many elements differ (not all of them).
fn assert_same_bits(got: &Tensor, want: &Tensor, what: &str) {
    let (got, want) = (bits(got), bits(want));
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing,
        0,
        "{what}: {differing} of {} elements differ",
        got.len()
    );
}

fn stepped(counter: &StepCounter, stream: u64, site: u64) -> MaskSeed {
    MaskSeed::Stepped(StepSeed {
        counter: counter.clone(),
        stream,
        site,
    })
}

#[test]
fn the_models_seeds_are_the_step_seeds() {
    // What the device derives from (counter, stream, site) is what the model draws by value.
    for model_seed in [0u64, 2024, u64::MAX] {
        for step in [0u64, 1, 2, 99, 1 << 40] {
            let seeds = DropoutSeeds::for_model(model_seed, Mode::Train { step });
            for site in 0..12 {
                assert_eq!(
                    seeds.next().unwrap(),
                    hash_rng::step_seed(hash_rng::dropout_stream(model_seed), step, site),
                    "model seed {model_seed} step {step} site {site}"
                );
            }
        }
    }
}

#[test]
fn stepped_dropout_draws_the_by_value_mask() {
    for_each_version(&["dropout"], |version| {
        let (len, p) = (4099, 0.3f32);
        let x = to_f32(&random(&mut rng(11), len, 0.0, 1.0));
        let stream = hash_rng::dropout_stream(2024);
        for device in all_devices() {
            let input = Tensor::from_vec(&device, &[len], x.clone()).unwrap();
            let counter = StepCounter::new(&device, 0).unwrap();
            for step in [0u64, 1, 2, 7, 123_456_789] {
                counter.set(step).unwrap();
                for site in [0u64, 5] {
                    let by_value = hash_rng::step_seed(stream, step, site);
                    let want =
                        dropout::dropout_forward(&input, p, by_value, DropoutMode::Train).unwrap();
                    let seed = MaskSeed::Stepped(StepSeed {
                        counter: counter.clone(),
                        stream,
                        site,
                    });
                    let got = dropout::dropout_forward_seeded(&input, p, &seed, DropoutMode::Train)
                        .unwrap();
                    let what = format!(
                        "{} on {}: step {step} site {site}",
                        version.name(),
                        device.name()
                    );
                    assert_same_bits(&got, &want, &what);
                    let back =
                        dropout::dropout_backward_seeded(&input, p, &seed, DropoutMode::Train)
                            .unwrap();
                    assert_same_bits(&back, &want, &format!("backward, {what}"));
                }
            }
            // The counter, not a value fixed at the call, picks the mask.
            let seed = MaskSeed::Stepped(StepSeed {
                counter: counter.clone(),
                stream,
                site: 0,
            });
            counter.set(3).unwrap();
            let at_three =
                dropout::dropout_forward_seeded(&input, p, &seed, DropoutMode::Train).unwrap();
            counter.set(4).unwrap();
            let at_four =
                dropout::dropout_forward_seeded(&input, p, &seed, DropoutMode::Train).unwrap();
            assert_ne!(bits(&at_three), bits(&at_four), "{}", device.name());
        }
    });
}

/// Runs `grads.len()` Adam steps from `initial` by value and with the device counter, comparing
/// the parameters, both moments and the counter bit for bit after every step.
fn assert_adam_sequences_agree(device: &Device, config: AdamConfig, start: u64, steps: usize) {
    let shapes: [&[usize]; 3] = [&[37, 5], &[5], &[1]];
    let mut r = rng(77 + start);
    let initial: Vec<Tensor> = shapes
        .iter()
        .map(|s| {
            let len = s.iter().product();
            Tensor::from_vec(device, s, to_f32(&random(&mut r, len, 0.0, 1.0))).unwrap()
        })
        .collect();
    let total: usize = initial.iter().map(|t| t.len()).sum();
    let moments = (
        to_f32(&random(&mut r, total, 0.0, 0.1)),
        to_f32(&random(&mut r, total, 0.5, 0.4)),
    );
    let mut by_value = initial.clone();
    let mut stepped = initial;
    let mut adam_by_value = Adam::new(config, &by_value).unwrap();
    let mut adam_stepped = Adam::new(config, &stepped).unwrap();
    adam_by_value
        .restore(start, &moments.0, &moments.1)
        .unwrap();
    adam_stepped.restore(start, &moments.0, &moments.1).unwrap();
    let counter = adam_stepped.use_step_counter().unwrap();
    assert_eq!(counter.get().unwrap(), start);
    for step in 0..steps {
        let grads: Vec<Tensor> = shapes
            .iter()
            .map(|s| {
                let len = s.iter().product();
                Tensor::from_vec(device, s, to_f32(&random(&mut r, len, 0.0, 1.0))).unwrap()
            })
            .collect();
        adam_by_value.step(&mut by_value, &grads).unwrap();
        adam_stepped.step(&mut stepped, &grads).unwrap();
        let at = format!("{} from step {start}, step {}", device.name(), step + 1);
        for (a, b) in by_value.iter().zip(&stepped) {
            assert_eq!(bits(a), bits(b), "parameters, {at}");
        }
        assert_eq!(
            adam_by_value.moments().unwrap(),
            adam_stepped.moments().unwrap(),
            "moments, {at}"
        );
        assert_eq!(
            counter.get().unwrap(),
            start + step as u64 + 1,
            "counter, {at}"
        );
        assert_eq!(adam_stepped.steps(), adam_by_value.steps(), "{at}");
    }
}

#[test]
fn stepped_adam_is_bit_identical_to_by_value_over_many_steps() {
    for device in all_devices() {
        for weight_decay in [0.0f32, 0.01] {
            let config = AdamConfig {
                lr: 3e-3,
                weight_decay,
                ..AdamConfig::default()
            };
            assert_adam_sequences_agree(&device, config, 0, 12);
        }
        // Far steps: every bit of t in β^t, and the clamp at i32::MAX.
        for start in [1_000u64, 123_457, (i32::MAX as u64) - 2, u64::MAX / 2] {
            assert_adam_sequences_agree(&device, AdamConfig::default(), start, 3);
        }
    }
}

#[test]
fn stepped_adam_advances_with_one_more_launch() {
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    let params = vec![Tensor::from_vec(&device, &[3], vec![1.0, 2.0, 3.0]).unwrap()];
    let grads = vec![Tensor::from_vec(&device, &[3], vec![0.5, -1.0, 0.25]).unwrap()];
    let launches = |adam: &mut Adam, params: &mut Vec<Tensor>| {
        let before = device.counters().snapshot();
        adam.step(params, &grads).unwrap();
        device.counters().snapshot().since(&before).launches
    };
    let (mut a, mut b) = (params.clone(), params);
    let mut by_value = Adam::new(AdamConfig::default(), &a).unwrap();
    let mut stepped = Adam::new(AdamConfig::default(), &b).unwrap();
    let counter = stepped.use_step_counter().unwrap();
    assert!(counter.same_counter(&stepped.use_step_counter().unwrap()));
    assert_eq!(launches(&mut by_value, &mut a), 1);
    assert_eq!(launches(&mut stepped, &mut b), 2, "update + advance");
    assert_eq!(counter.get().unwrap(), 1);
}

#[test]
fn stepped_residual_layer_norm_draws_the_by_value_mask() {
    for_each_version(&["residual_norm"], |version| {
        let (rows, cols) = (5, 16);
        let mut r = rng(12);
        let values: Vec<Vec<f32>> = [rows * cols, rows * cols, cols, cols]
            .iter()
            .map(|&len| to_f32(&random(&mut r, len, 0.5, 1.0)))
            .collect();
        let stream = hash_rng::dropout_stream(7);
        for device in all_devices() {
            let t = |i: usize, shape: &[usize]| {
                Tensor::from_vec(&device, shape, values[i].clone()).unwrap()
            };
            let (x, residual) = (t(0, &[rows, cols]), t(1, &[rows, cols]));
            let (gamma, beta) = (t(2, &[cols]), t(3, &[cols]));
            let counter = StepCounter::new(&device, 0).unwrap();
            for step in [0u64, 3, 1 << 33] {
                counter.set(step).unwrap();
                let site = 4;
                let settings = |seed: MaskSeed| DropoutSettings {
                    p: 0.25,
                    seed,
                    mode: DropoutMode::Train,
                };
                let by_value = settings(hash_rng::step_seed(stream, step, site).into());
                let from_counter = settings(stepped(&counter, stream, site));
                let run = |d: DropoutSettings| {
                    residual_norm::residual_layer_norm_forward(
                        &x, &residual, &gamma, &beta, 1e-5, d,
                    )
                    .unwrap()
                };
                let (want, want_saved) = run(by_value.clone());
                let (got, got_saved) = run(from_counter.clone());
                let what = format!("{} on {}, step {step}", version.name(), device.name());
                assert_same_bits(&got, &want, &what);
                assert_same_bits(&got_saved.z, &want_saved.z, &format!("z, {what}"));
                let dy = t(0, &[rows, cols]);
                let want =
                    residual_norm::residual_layer_norm_backward(&gamma, &want_saved, &dy, by_value)
                        .unwrap();
                let got = residual_norm::residual_layer_norm_backward(
                    &gamma,
                    &got_saved,
                    &dy,
                    from_counter,
                )
                .unwrap();
                assert_same_bits(&got.dx, &want.dx, &format!("dx, {what}"));
            }
        }
    });
}

#[test]
fn stepped_attention_draws_the_by_value_masks_forward_and_backward() {
    for_each_version(&["attention"], |version| {
        // Lengths n, 1, 0 (all padding) and an odd one.
        let (batch, n, heads, head_dim) = (4, 7, 2, 8);
        let d = heads * head_dim;
        let len = batch * n * d;
        let mut r = rng(13);
        let values: Vec<Vec<f32>> = (0..4)
            .map(|_| to_f32(&random(&mut r, len, 0.0, 1.0)))
            .collect();
        let stream = hash_rng::dropout_stream(2024);
        for device in all_devices() {
            let t =
                |i: usize| Tensor::from_vec(&device, &[batch, n, d], values[i].clone()).unwrap();
            let inputs = AttentionInputs {
                score_pairs: vec![ScorePair {
                    query: t(0),
                    key: t(1),
                }],
                id_values: t(2),
                fused_values: None,
                position_values: None,
            };
            let lengths = IndexTensor::from_vec(&device, &[batch], vec![7, 1, 0, 5]).unwrap();
            let counter = StepCounter::new(&device, 0).unwrap();
            for step in [0u64, 9] {
                counter.set(step).unwrap();
                let site = 2;
                let config = AttentionConfig {
                    heads,
                    dropout: 0.3,
                    seed: hash_rng::step_seed(stream, step, site),
                    precision: Precision::Fp32,
                };
                let seed = stepped(&counter, stream, site);
                let (want, want_saved) =
                    attention::attention_forward(&inputs, &lengths, &config).unwrap();
                // The config's seed is not read when the seed comes from the counter.
                let other = AttentionConfig { seed: 1, ..config };
                let (got, got_saved) =
                    attention::attention_forward_seeded(&inputs, &lengths, &other, &seed).unwrap();
                let what = format!("{} on {}, step {step}", version.name(), device.name());
                assert_same_bits(&got.id, &want.id, &what);
                let dy = t(3);
                let grads = OutputGradients {
                    id: Some(&dy),
                    fused: None,
                    position: None,
                };
                let want =
                    attention::attention_backward(&inputs, &lengths, &config, &want_saved, &grads)
                        .unwrap();
                let got = attention::attention_backward_seeded(
                    &inputs, &lengths, &other, &seed, &got_saved, &grads,
                )
                .unwrap();
                assert_same_bits(&got.id_values, &want.id_values, &format!("dV, {what}"));
                assert_same_bits(
                    &got.score_pairs[0].query,
                    &want.score_pairs[0].query,
                    &format!("dQ, {what}"),
                );
                assert_same_bits(
                    &got.score_pairs[0].key,
                    &want.score_pairs[0].key,
                    &format!("dK, {what}"),
                );
            }
        }
    });
}
