//! One whole training step (issue 20) on the emulated device, which runs the real `.cu` kernels:
//! two eager steps from the same state give the same bits when the embedding family's
//! deterministic scatter (v2) is selected, and the device work of one SASRec and one ASIF step
//! (kernel launches, cuBLAS calls, memsets) is pinned, so a change that adds launches to a step
//! is seen. From the second step of one model on, a step allocates nothing fresh: every buffer
//! (the uploaded batch included) comes from the device's memory cache (`src/device/cache.rs`),
//! and the steps give the same bits as steps on fresh memory. Tiny sizes (d 8, one layer, B 3,
//! n 8).
mod common;

use asif_kernels::autograd::Tape;
use asif_kernels::device::CounterSnapshot;
use asif_kernels::kernel_version::{with_version, KernelVersion};
use asif_kernels::model::{
    DataShape, DropoutSeeds, Mode, Model, ModelConfig, ModelInputs, ModelKind,
};
use asif_kernels::ops::adam::{Adam, AdamConfig};
use asif_kernels::train::{StepCounts, TrainStep};
use asif_kernels::{Device, IndexTensor};
use common::tiny_model::{self, bits};

/// The embedding kernel family (`kernels/embedding.cu`): v2 is its deterministic backward.
const EMBEDDING: &str = "embedding";
/// The FFN's bias add fused with GELU (`kernels/bias_gelu.cu`): v2 runs it, v1 the unfused ops.
const BIAS_GELU: &str = "bias_gelu";
/// The input lookups in one launch (`kernels/input_embedding.cu`): v2 runs it, v1 two lookups.
const INPUT_EMBEDDING: &str = "input_embedding";

/// A tiny model with dropout on (the dropout masks are counter-based, so they are part of the
/// state a step starts from): d 8, 2 heads, 1 layer, n 8, r 4, RSA on for ASIF.
fn tiny(kind: ModelKind) -> ModelConfig {
    ModelConfig {
        kind,
        hidden_size: 8,
        heads: 2,
        layers: 1,
        max_len: 8,
        inner_size: 12,
        hidden_dropout: 0.2,
        attention_dropout: 0.1,
        rsa_lambda: 2.0,
        hie_rank: 4,
        attribute_width: 2,
        seed: 7,
        ..ModelConfig::default()
    }
}

/// What one step leaves: the loss, every gradient and every updated parameter, as bits.
#[derive(Debug, PartialEq)]
struct StepBits {
    loss: u32,
    gradients: Vec<Vec<u32>>,
    parameters: Vec<Vec<u32>>,
}

/// Builds the model from its seed (the same state every call), runs one eager step (forward,
/// backward, Adam) and returns its bits and what the device did during the step (the loss is
/// read after the count: its download is not part of the step).
fn one_step(device: &Device, kind: ModelKind) -> (StepBits, CounterSnapshot) {
    one_step_on(
        device,
        kind,
        &tiny_model::shape(),
        tiny_model::inputs(device, 8),
    )
}

/// [`one_step`] on the tiny problem with its first attribute type alone (the fused input
/// lookups take one type, as the paper's Beauty has).
fn one_attribute_step(device: &Device, kind: ModelKind) -> (StepBits, CounterSnapshot) {
    let mut shape = tiny_model::shape();
    shape.attribute_vocab.truncate(1);
    let mut inputs = tiny_model::inputs(device, 8);
    inputs.attributes.truncate(1);
    one_step_on(device, kind, &shape, inputs)
}

fn one_step_on(
    device: &Device,
    kind: ModelKind,
    shape: &DataShape,
    inputs: ModelInputs,
) -> (StepBits, CounterSnapshot) {
    let mut model = Model::new(&tiny(kind), shape, device).expect("model");
    let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
    let before = device.counters().snapshot();
    let tape = Tape::new();
    let pass = model
        .forward(&tape, &inputs, Mode::Train { step: 3 })
        .expect("forward");
    let grads = pass.backward(&tape).expect("backward");
    let mut params = model.tensors();
    adam.step(&mut params, &grads).expect("adam");
    model.set_tensors(params).expect("set");
    let counts = device.counters().snapshot().since(&before);
    let step = StepBits {
        loss: pass.loss().expect("loss").to_bits(),
        gradients: grads.iter().map(bits).collect(),
        parameters: model.tensors().iter().map(bits).collect(),
    };
    (step, counts)
}

/// The first step of a model from its seed, with its per-step scalars by value (`stepped`
/// false: Adam's corrections and the dropout seeds as kernel arguments) or read from Adam's
/// device step counter (the step-counter kernels, as a replayed CUDA graph runs them). Returns
/// the step's bits, what the device did and the counter's value after the step (0 by value).
fn first_step(device: &Device, kind: ModelKind, stepped: bool) -> (StepBits, CounterSnapshot, u64) {
    let config = tiny(kind);
    let mut model = Model::new(&config, &tiny_model::shape(), device).expect("model");
    let inputs = tiny_model::inputs(device, 8);
    let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
    let counter = stepped.then(|| adam.use_step_counter().expect("counter"));
    let seeds = match &counter {
        Some(counter) => DropoutSeeds::stepped(config.seed, counter.clone()),
        None => DropoutSeeds::for_model(config.seed, Mode::Train { step: 0 }),
    };
    let before = device.counters().snapshot();
    let tape = Tape::new();
    let pass = model
        .forward_with_seeds(&tape, &inputs, &seeds)
        .expect("forward");
    let grads = pass.backward(&tape).expect("backward");
    let mut params = model.tensors();
    adam.step(&mut params, &grads).expect("adam");
    model.set_tensors(params).expect("set");
    let counts = device.counters().snapshot().since(&before);
    let step = StepBits {
        loss: pass.loss().expect("loss").to_bits(),
        gradients: grads.iter().map(bits).collect(),
        parameters: model.tensors().iter().map(bits).collect(),
    };
    let taken = counter.map_or(0, |c| c.get().expect("counter"));
    (step, counts, taken)
}

#[test]
fn a_step_on_the_device_step_counter_gives_the_by_value_bits_with_one_launch_more() {
    // Issue 20: the per-step scalars in device memory. The same step with them as kernel
    // arguments and read from the counter: the same loss, gradients and parameters; one launch
    // more (adam_advance_step), nothing else more, no download; the counter advanced to 1.
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    with_version(EMBEDDING, KernelVersion::V2, || {
        for kind in [ModelKind::SasRec, ModelKind::Asif] {
            let (by_value, by_value_counts, _) = first_step(&device, kind, false);
            let (stepped, counts, taken) = first_step(&device, kind, true);
            assert_eq!(stepped.loss, by_value.loss, "{kind}: loss");
            for (i, (a, b)) in stepped
                .gradients
                .iter()
                .zip(&by_value.gradients)
                .enumerate()
            {
                assert_eq!(a, b, "{kind}: gradient {i}");
            }
            assert_eq!(stepped, by_value, "{kind}: the steps differ");
            assert_eq!(
                (counts.launches, counts.blas_calls, counts.memsets),
                (
                    by_value_counts.launches + 1,
                    by_value_counts.blas_calls,
                    by_value_counts.memsets
                ),
                "{kind}: (launches, cuBLAS calls, memsets) of the stepped step"
            );
            assert_eq!(
                counts.bytes_device_to_host, 0,
                "{kind}: a download in the step"
            );
            assert_eq!(taken, 1, "{kind}: the counter after one step");
        }
    });
}

#[test]
fn two_eager_steps_from_the_same_state_are_bit_identical() {
    // Issue 20's Done-when. With v1 the embedding backwards scatter with float atomics, whose
    // order (and the gradients' last bits) follows the emulator's thread scheduling.
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    with_version(EMBEDDING, KernelVersion::V2, || {
        for kind in [ModelKind::Asif, ModelKind::SasRec] {
            let (first, _) = one_step(&device, kind);
            let (second, _) = one_step(&device, kind);
            assert!(f32::from_bits(first.loss).is_finite(), "{kind}");
            for (i, (a, b)) in first.gradients.iter().zip(&second.gradients).enumerate() {
                assert_eq!(a, b, "{kind}: gradient {i} differs between two steps");
            }
            assert_eq!(first, second, "{kind}: the steps differ");
        }
    });
}

/// What one step of `kind` costs the emulated device with the embedding family at v2, pinned.
/// A change here (a launch more or fewer) must be deliberate: update the row and say why.
fn pinned(kind: ModelKind) -> (u64, u64, u64) {
    match kind {
        ModelKind::Asif => (97, 34, 2),
        ModelKind::SasRec => (54, 24, 1),
        _ => unreachable!("only SASRec and ASIF are pinned"),
    }
}

#[test]
fn launches_per_training_step_are_pinned() {
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    with_version(EMBEDDING, KernelVersion::V2, || {
        for kind in [ModelKind::SasRec, ModelKind::Asif] {
            let (_, counts) = one_step(&device, kind);
            eprintln!(
                "{kind} step (d 8, L 1, B 3, n 8, embedding v2): {} launches, {} cuBLAS calls, \
                 {} memsets, {} allocations",
                counts.launches, counts.blas_calls, counts.memsets, counts.allocations
            );
            assert_eq!(
                (counts.launches, counts.blas_calls, counts.memsets),
                pinned(kind),
                "{kind}: (launches, cuBLAS calls, memsets) per step (left) differ from pinned"
            );
            assert_eq!(
                counts.bytes_device_to_host, 0,
                "{kind}: a download in the step"
            );
        }
    });
}

/// With the FFN's bias add fused into GELU, one step (tiny: one FFN, the X stream's) costs two
/// launches fewer: the bias add in the forward, the bias gradient's first pass in the backward.
fn pinned_fused(kind: ModelKind) -> (u64, u64, u64) {
    let (launches, blas, memsets) = pinned(kind);
    (launches - 2, blas, memsets)
}

#[test]
fn a_step_with_the_fused_bias_gelu_gives_the_unfused_bits_in_two_launches_fewer() {
    // Issue 20: the FFN's bias add and GELU in one pass (`ops::bias_gelu`) compute what the
    // linear op's bias add and GELU compute; a whole step (forward, backward, Adam) gives the
    // same loss, gradients and parameters, bit for bit.
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    with_version(EMBEDDING, KernelVersion::V2, || {
        for kind in [ModelKind::Asif, ModelKind::SasRec] {
            let (unfused, _) = one_step(&device, kind);
            let (fused, counts) =
                with_version(BIAS_GELU, KernelVersion::V2, || one_step(&device, kind));
            eprintln!(
                "{kind} step with bias_gelu v2: {} launches, {} cuBLAS calls, {} memsets",
                counts.launches, counts.blas_calls, counts.memsets
            );
            for (i, (a, b)) in unfused.gradients.iter().zip(&fused.gradients).enumerate() {
                assert_eq!(a, b, "{kind}: gradient {i} differs fused and unfused");
            }
            assert_eq!(unfused, fused, "{kind}: the steps differ");
            assert_eq!(
                (counts.launches, counts.blas_calls, counts.memsets),
                pinned_fused(kind),
                "{kind}: (launches, cuBLAS calls, memsets) per fused step (left) differ from pinned"
            );
        }
    });
}

#[test]
fn a_step_with_the_fused_input_lookups_gives_the_unfused_bits_in_one_launch_fewer() {
    // Issue 20: E_X[s] and the pooled attribute embedding in one launch (`ops::input_embedding`,
    // one attribute type); with the FFN's fused bias + GELU as well, three launches fewer. The
    // same loss, gradients and parameters bit for bit. SASRec reads no attributes: unchanged.
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    with_version(EMBEDDING, KernelVersion::V2, || {
        for kind in [ModelKind::Asif, ModelKind::SasRec] {
            let (unfused, unfused_counts) = one_attribute_step(&device, kind);
            let (fused, counts) = with_version(INPUT_EMBEDDING, KernelVersion::V2, || {
                one_attribute_step(&device, kind)
            });
            let (both, both_counts) = with_version(INPUT_EMBEDDING, KernelVersion::V2, || {
                with_version(BIAS_GELU, KernelVersion::V2, || {
                    one_attribute_step(&device, kind)
                })
            });
            eprintln!(
                "{kind} step, one attribute type: {} launches unfused, {} with input_embedding v2, \
                 {} with bias_gelu v2 too",
                unfused_counts.launches, counts.launches, both_counts.launches
            );
            assert_eq!(unfused, fused, "{kind}: fused input lookups");
            assert_eq!(unfused, both, "{kind}: both fusions");
            let fewer = match kind {
                ModelKind::Asif => 1,
                _ => 0,
            };
            assert_eq!(
                (counts.launches, counts.blas_calls, counts.memsets),
                (
                    unfused_counts.launches - fewer,
                    unfused_counts.blas_calls,
                    unfused_counts.memsets
                ),
                "{kind}: input_embedding v2"
            );
            assert_eq!(
                both_counts.launches,
                unfused_counts.launches - fewer - 2,
                "{kind}: both fusions"
            );
        }
    });
}

/// The trainer's loop on one model, `steps` times: upload the batch, forward, backward, Adam,
/// read the loss. Returns what the device did in each step and the parameters' bits at the end.
fn steps_on_one_model(
    device: &Device,
    kind: ModelKind,
    steps: u64,
) -> (Vec<CounterSnapshot>, Vec<u32>, Vec<Vec<u32>>) {
    let mut model = Model::new(&tiny(kind), &tiny_model::shape(), device).expect("model");
    let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
    let (mut counts, mut losses) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let before = device.counters().snapshot();
        let inputs = tiny_model::inputs(device, 8);
        let tape = Tape::new();
        let pass = model
            .forward(&tape, &inputs, Mode::Train { step })
            .expect("forward");
        let loss = pass.loss().expect("loss");
        let grads = pass.backward(&tape).expect("backward");
        drop(pass);
        let mut params = model.tensors();
        adam.step(&mut params, &grads).expect("adam");
        model.set_tensors(params).expect("set");
        drop((grads, tape, inputs));
        counts.push(device.counters().snapshot().since(&before));
        losses.push(loss.to_bits());
    }
    (counts, losses, model.tensors().iter().map(bits).collect())
}

#[test]
fn from_the_second_step_on_a_step_allocates_nothing_fresh() {
    // Issue 20: buffers are reused across steps. The first step of a model fills the device's
    // memory cache; every later step of the same shapes is served from it alone. A second run
    // of the same steps on the same device, served from the cache from its first step, gives
    // the same bits as the first run, which started on fresh memory (reuse, with the poison fill
    // of reused buffers, changes no result).
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    with_version(EMBEDDING, KernelVersion::V2, || {
        for kind in [ModelKind::SasRec, ModelKind::Asif] {
            let (counts, losses, parameters) = steps_on_one_model(&device, kind, 3);
            eprintln!(
                "{kind}: allocations per step {:?}, fresh {:?}",
                counts.iter().map(|c| c.allocations).collect::<Vec<_>>(),
                counts
                    .iter()
                    .map(|c| c.fresh_allocations)
                    .collect::<Vec<_>>()
            );
            assert!(counts[0].allocations > 0, "{kind}: a step allocates");
            for (step, c) in counts.iter().enumerate().skip(1) {
                assert_eq!(
                    (c.fresh_allocations, c.bytes_freshly_allocated),
                    (0, 0),
                    "{kind}: step {step} made fresh allocations (of {} in all): the memory cache \
                     did not serve them",
                    c.allocations
                );
                assert_eq!(c.allocations, counts[0].allocations, "{kind}: step {step}");
            }
            let (again, losses_again, parameters_again) = steps_on_one_model(&device, kind, 3);
            assert!(
                again.iter().all(|c| c.fresh_allocations == 0),
                "{kind}: the second run's first step should find everything cached: {again:?}"
            );
            assert_eq!(
                losses, losses_again,
                "{kind}: losses differ on reused memory"
            );
            assert_eq!(
                parameters, parameters_again,
                "{kind}: parameters differ on reused memory"
            );
        }
    });
}

#[test]
fn the_graph_option_runs_eagerly_here_under_the_capture_checks_with_the_same_bits() {
    // Issue 20: the emulator has no CUDA graphs; with the option on, a step at repeated shapes
    // runs eagerly with everything a capture refuses (fresh allocations, downloads, host
    // synchronisation, uploads of varying values) refused, so a step that could not be captured
    // fails here. A step at new shapes (the first, the shorter batch of 2 sequences) runs eagerly and
    // fills the cache for them. With the option on, every step reads Adam's corrections and the
    // dropout seeds from Adam's device step counter (the step-counter kernels, as a replayed
    // graph would), the plain steps take them as arguments: the same bits.
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    let batches = [3, 3, 3, 2, 3];
    with_version(EMBEDDING, KernelVersion::V2, || {
        for kind in [ModelKind::SasRec, ModelKind::Asif] {
            let eager = tiny_model::train_steps(&device, &tiny(kind), false, &batches);
            let checked = tiny_model::train_steps(&device, &tiny(kind), true, &batches);
            assert_eq!(eager.2.eager, 5, "{kind}");
            assert_eq!(
                checked.2,
                StepCounts {
                    eager: 3,
                    graph_checked_eagerly: 2,
                    ..StepCounts::default()
                },
                "{kind}: steps 0, 3 (B 2) and 4 (back to B 3) at new shapes"
            );
            assert_eq!(eager.0, checked.0, "{kind}: losses");
            assert_eq!(eager.1, checked.1, "{kind}: parameters");
        }
    });
}

/// Where every parameter's memory starts (`Buffer::address`), in the model's order.
fn parameter_addresses(model: &Model) -> Vec<u64> {
    model
        .parameters()
        .iter()
        .map(|p| p.value.buffer().address())
        .collect()
}

#[test]
fn adam_updates_unshared_parameters_in_place_and_a_kept_clone_keeps_its_values() {
    // Issue 20 (parameters at fixed addresses): in `TrainStep` the model holds the only
    // reference to each parameter when Adam runs, so the update writes the same memory step
    // after step. A clone kept before a step (as `train()` keeps the best epoch's weights) is
    // not touched: that step copies on write, runs eagerly with graphs on (its new buffers may
    // not come from the cache), and gives the same bits as the in-place steps.
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    let steps = 3u64;
    with_version(EMBEDDING, KernelVersion::V2, || {
        for kind in [ModelKind::SasRec, ModelKind::Asif] {
            let run = |keep_clones: bool| {
                let mut model =
                    Model::new(&tiny(kind), &tiny_model::shape(), &device).expect("model");
                let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
                let mut train_step = TrainStep::new(true);
                let first = parameter_addresses(&model);
                let mut losses = Vec::new();
                for step in 0..steps {
                    let kept = keep_clones.then(|| model.tensors());
                    let kept_bits: Vec<Vec<u32>> =
                        kept.iter().flatten().map(bits).collect::<Vec<_>>();
                    let inputs = tiny_model::inputs(&device, 8);
                    let loss = train_step
                        .run(&mut model, &mut adam, &inputs, step)
                        .expect("step");
                    losses.push(loss.to_bits());
                    let now = parameter_addresses(&model);
                    match &kept {
                        None => assert_eq!(
                            now, first,
                            "{kind}: step {step} moved a parameter that nothing else shares"
                        ),
                        Some(kept) => {
                            let after: Vec<Vec<u32>> = kept.iter().map(bits).collect();
                            assert!(
                                after == kept_bits,
                                "{kind}: step {step} changed the values of a clone kept before it"
                            );
                            for (p, k) in model.parameters().iter().zip(kept) {
                                assert_ne!(
                                    p.value.buffer().address(),
                                    k.buffer().address(),
                                    "{kind}: step {step}: {} still shares the kept clone's memory",
                                    p.name
                                );
                            }
                        }
                    }
                }
                let parameters: Vec<Vec<u32>> = model.tensors().iter().map(bits).collect();
                (losses, parameters, train_step.counts())
            };
            let in_place = run(false);
            let copied = run(true);
            assert_eq!(in_place.0, copied.0, "{kind}: losses");
            assert_eq!(in_place.1, copied.1, "{kind}: parameters");
            assert_eq!(
                in_place.2,
                StepCounts {
                    eager: 1,
                    graph_checked_eagerly: steps - 1,
                    ..StepCounts::default()
                },
                "{kind}: in place, the steps at repeated shapes run under the capture checks"
            );
            assert_eq!(
                copied.2,
                StepCounts {
                    eager: steps,
                    ..StepCounts::default()
                },
                "{kind}: a step that copies on write runs eagerly"
            );
        }
    });
}

/// Where every staged input tensor's memory starts, in a fixed order.
fn input_addresses(inputs: &ModelInputs) -> Vec<u64> {
    let mut tensors = vec![&inputs.items, &inputs.lengths, &inputs.targets];
    tensors.extend(inputs.attributes.iter().chain(&inputs.target_attributes));
    tensors.extend(&inputs.attribute_groups);
    tensors.iter().map(|t| t.buffer().address()).collect()
}

/// Step `step`'s batch: the first `rows` tiny sequences with the targets rotated by the step, so
/// that consecutive batches of the same shapes differ in their values.
fn varied_batch(device: &Device, step: usize, rows: usize) -> ModelInputs {
    let mut batch = tiny_model::first_rows(device, &tiny_model::inputs(device, 8), rows);
    let targets: Vec<i32> = (0..rows)
        .map(|row| [3, 11, 17, 5, 9][(row + step) % 5])
        .collect();
    batch.targets = IndexTensor::from_vec(device, &[rows], targets).expect("targets");
    batch
}

#[test]
fn staged_batches_of_repeated_shapes_reuse_the_same_device_buffers_with_the_same_bits() {
    // Issue 20 (batch staging): with graphs on, `TrainStep::run_staged` copies each host batch
    // into device buffers it keeps (`Device::write`), so the steps at repeated shapes read their
    // inputs at the same addresses; a batch of other shapes (the shorter B 2) gets new ones. The
    // bits are those of the same steps on freshly uploaded batches (`TrainStep::run`); the
    // batches differ step to step (their targets), so a stale staged batch is seen.
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    let batches = [3, 3, 3, 2, 3];
    let host = Device::cpu();
    with_version(EMBEDDING, KernelVersion::V2, || {
        for kind in [ModelKind::SasRec, ModelKind::Asif] {
            let run = |staged: bool| {
                let mut model =
                    Model::new(&tiny(kind), &tiny_model::shape(), &device).expect("model");
                let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
                let mut train_step = TrainStep::new(true);
                let (mut losses, mut addresses) = (Vec::new(), Vec::new());
                for (step, &rows) in batches.iter().enumerate() {
                    let loss = if staged {
                        let batch = varied_batch(&host, step, rows);
                        let loss =
                            train_step.run_staged(&mut model, &mut adam, &batch, step as u64);
                        let inputs = train_step.staged_inputs().expect("staged after a step");
                        assert_eq!(
                            inputs.items.device(),
                            &device,
                            "{kind}: staged on the device"
                        );
                        addresses.push(input_addresses(inputs));
                        loss
                    } else {
                        let batch = varied_batch(&device, step, rows);
                        train_step.run(&mut model, &mut adam, &batch, step as u64)
                    };
                    losses.push(loss.expect("step").to_bits());
                }
                let parameters: Vec<Vec<u32>> = model.tensors().iter().map(bits).collect();
                (losses, parameters, train_step.counts(), addresses)
            };
            let uploaded = run(false);
            let staged = run(true);
            let addresses = &staged.3;
            assert_eq!(addresses[1], addresses[0], "{kind}: step 1 moved the batch");
            assert_eq!(addresses[2], addresses[0], "{kind}: step 2 moved the batch");
            assert_eq!(uploaded.0, staged.0, "{kind}: losses");
            assert_eq!(uploaded.1, staged.1, "{kind}: parameters");
            assert_eq!(uploaded.2, staged.2, "{kind}: step counts");
        }
    });
}

#[test]
fn staging_refuses_a_batch_that_is_not_on_the_host() {
    let device = Device::cpu();
    let Some(emulated) = common::emulated_unless_skipped() else {
        return;
    };
    let mut model =
        Model::new(&tiny(ModelKind::SasRec), &tiny_model::shape(), &device).expect("model");
    let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
    let batch = tiny_model::inputs(&emulated, 8);
    let error = TrainStep::new(true)
        .run_staged(&mut model, &mut adam, &batch, 0)
        .expect_err("a device batch");
    assert!(
        error.to_string().contains("train step staging"),
        "unexpected error: {error}"
    );
}

#[test]
fn a_replay_here_reruns_the_captured_steps_launches_with_the_same_arguments() {
    // Issue 20 (graph replay): the emulator has no graphs, so where a GPU replays the captured
    // step (same shapes, same staged input and parameter addresses), the emulated device runs the
    // step's code again, handing it the blocks the capture took (its graph's reservation, in the
    // capture's order), and checks that every launch and GEMM has the captured arguments, buffer
    // addresses and scalars alike: a replay would run this very step. A by-value scalar that
    // changes from step to step (a step number, a seed) or an address that moves fails the step.
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    let host = Device::cpu();
    let batches = [3, 3, 3, 3];
    with_version(EMBEDDING, KernelVersion::V2, || {
        let kind = ModelKind::Asif;
        let run = |cuda_graph: bool| {
            let mut model = Model::new(&tiny(kind), &tiny_model::shape(), &device).expect("model");
            let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
            let mut train_step = TrainStep::new(cuda_graph);
            let mut losses = Vec::new();
            for (step, &rows) in batches.iter().enumerate() {
                let batch = varied_batch(&host, step, rows);
                let loss = train_step
                    .run_staged(&mut model, &mut adam, &batch, step as u64)
                    .expect("step");
                losses.push(loss.to_bits());
            }
            let replays = train_step.step_graph().map(|g| g.replays());
            let reserved = device.memory_cache().expect("caches").reserved_bytes();
            let parameters: Vec<Vec<u32>> = model.tensors().iter().map(bits).collect();
            (losses, parameters, train_step.counts(), replays, reserved)
        };
        let eager = run(false);
        let checked = run(true);
        assert_eq!(
            checked.2,
            StepCounts {
                eager: 1,
                graph_checked_eagerly: 3,
                ..StepCounts::default()
            },
            "{kind}"
        );
        assert_eq!(
            checked.3,
            Some(2),
            "{kind}: steps 2 and 3 checked as replays"
        );
        assert!(
            checked.4 > 0,
            "{kind}: the captured step's blocks are reserved"
        );
        assert_eq!(eager.0, checked.0, "{kind}: losses");
        assert_eq!(eager.1, checked.1, "{kind}: parameters");
    });
}

#[test]
fn adam_counts_a_replayed_step_only_with_a_device_step_counter() {
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    let model = Model::new(&tiny(ModelKind::SasRec), &tiny_model::shape(), &device).expect("model");
    let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
    assert!(
        adam.count_replayed_step().is_err(),
        "a by-value step cannot have been replayed"
    );
    assert_eq!(adam.steps(), 0);
    adam.use_step_counter().expect("counter");
    adam.count_replayed_step().expect("counted");
    assert_eq!(
        adam.steps(),
        1,
        "a replay advances the host count as a step does"
    );
}
