//! GPU tier (issue 20): a training step run as one CUDA graph launch (`Device::run_step_graph`,
//! `src/device/graph.rs`, through the trainer's `TrainStep` with graphs on) gives the same bits
//! as the eager step: the loss of every step and every parameter after N steps, for SASRec and
//! ASIF with dropout on, and a batch of another shape in between falls back to an eager step
//! (then the graph is updated again at the first shape). Without a GPU this binary prints one
//! `SKIPPED` line and passes; the GPU script runs it with `ASIF_REQUIRE_GPU=1`. The emulated
//! counterpart (the same steps under the capture's checks, without graphs) is in
//! `tests/train_step.rs`. With graphs on, every step reads its per-step scalars (Adam's
//! corrections, the dropout seeds) from Adam's device step counter (`tests/step_counter.rs`), so
//! this also checks the step-counter kernels on the GPU against the by-value eager steps. A step
//! whose inputs and parameters are where the captured step had them is a replay: the executable
//! graph launched again, no capture, no update (`StepCounts::graph_replayed`); the staged test
//! makes those addresses fixed (`TrainStep::run_staged`), with other values in every batch.
mod common;

use asif_kernels::kernel_version::{with_version, KernelVersion};
use asif_kernels::model::{ModelConfig, ModelKind};
use common::tiny_model;

fn config(kind: ModelKind) -> ModelConfig {
    ModelConfig {
        kind,
        hidden_size: 16,
        heads: 2,
        layers: 2,
        max_len: 8,
        inner_size: 24,
        hidden_dropout: 0.2,
        attention_dropout: 0.1,
        rsa_lambda: 2.0,
        hie_rank: 4,
        attribute_width: 2,
        seed: 11,
        ..ModelConfig::default()
    }
}

#[test]
fn graph_replay_is_bit_identical_to_eager_and_falls_back_when_the_shape_changes() {
    let Some(gpu) = common::cuda() else {
        return; // `common::cuda` printed the SKIPPED line
    };
    // Steps 1, 2: graph (instantiated, then replayed or updated, as the new batch's buffers
    // fall); 3: B 2, eager; 4: B 3 again, eager (a new shape for the step before it); 5, 6: graph
    // (replayed, updated, or instantiated anew if the topology changed).
    let batches = [3, 3, 3, 2, 3, 3, 3];
    with_version("embedding", KernelVersion::V2, || {
        for kind in [ModelKind::SasRec, ModelKind::Asif] {
            let eager = tiny_model::train_steps(&gpu, &config(kind), false, &batches);
            let graph = tiny_model::train_steps(&gpu, &config(kind), true, &batches);
            eprintln!("{kind}: graph run {:?}", graph.2);
            assert_eq!(eager.2.eager, batches.len() as u64);
            assert_eq!(
                graph.2.eager, 3,
                "{kind}: steps 0, 3 and 4 are at new shapes"
            );
            assert_eq!(
                graph.2.graph_instantiated + graph.2.graph_updated + graph.2.graph_replayed,
                4,
                "{kind}: {:?}",
                graph.2
            );
            assert!(graph.2.graph_instantiated >= 1, "{kind}: {:?}", graph.2);
            assert_eq!(graph.2.graph_checked_eagerly, 0, "{kind}: a GPU captures");
            for (step, (a, b)) in eager.0.iter().zip(&graph.0).enumerate() {
                assert_eq!(
                    a,
                    b,
                    "{kind}: step {step}: loss {} eager, {} graph",
                    f32::from_bits(*a),
                    f32::from_bits(*b)
                );
            }
            for (i, (a, b)) in eager.1.iter().zip(&graph.1).enumerate() {
                assert_eq!(a, b, "{kind}: parameter {i} after {} steps", batches.len());
            }
        }
    });
}

#[test]
fn staged_steps_replay_the_captured_graph_bit_identical_to_eager_and_fall_back_at_a_shorter_batch()
{
    let Some(gpu) = common::cuda() else {
        return; // `common::cuda` printed the SKIPPED line
    };
    // Step 0: eager (new shapes); 1: captured, instantiated; 2, 3: replayed (the staged buffers
    // and the parameters stay put); 4: B 2, eager (its own staged buffers); 5: B 3 again, eager;
    // 6, 7: replayed where the new staged buffers took the old addresses, captured again where
    // not, then replayed.
    let batches = [3, 3, 3, 3, 2, 3, 3, 3];
    with_version("embedding", KernelVersion::V2, || {
        for kind in [ModelKind::SasRec, ModelKind::Asif] {
            let eager = tiny_model::train_steps_staged(&gpu, &config(kind), false, &batches);
            let graph = tiny_model::train_steps_staged(&gpu, &config(kind), true, &batches);
            eprintln!("{kind}: staged graph run {:?}", graph.2);
            assert_eq!(eager.2.eager, batches.len() as u64);
            assert_eq!(graph.2.eager, 3, "{kind}: steps 0, 4 and 5 at new shapes");
            let counts = graph.2;
            assert_eq!(
                counts.graph_instantiated + counts.graph_updated + counts.graph_replayed,
                5,
                "{kind}: {counts:?}"
            );
            assert!(counts.graph_replayed >= 3, "{kind}: {counts:?}");
            assert_eq!(counts.graph_checked_eagerly, 0, "{kind}: a GPU captures");
            for (step, (a, b)) in eager.0.iter().zip(&graph.0).enumerate() {
                assert_eq!(
                    a,
                    b,
                    "{kind}: step {step}: loss {} eager, {} graph",
                    f32::from_bits(*a),
                    f32::from_bits(*b)
                );
            }
            for (i, (a, b)) in eager.1.iter().zip(&graph.1).enumerate() {
                assert_eq!(a, b, "{kind}: parameter {i} after {} steps", batches.len());
            }
        }
    });
}
