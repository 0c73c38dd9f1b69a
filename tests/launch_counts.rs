//! What one call of each op costs the device, pinned: kernel launches, cuBLAS calls, memsets,
//! allocations (count and bytes) and copies (`Device::counters`, `docs/testing.md`). A lost fusion
//! (a launch more), a memset before a kernel that overwrites its output anyway, or a hidden round
//! trip through the host changes a number here and fails.
//!
//! The counts come from the emulated device, which counts exactly what the CUDA device counts
//! (the same `Device` methods); on a GPU machine the same bodies run on CUDA too. The CPU device
//! counts nothing. Also here: the poison mode of `Device::uninitialized` (NaN until a kernel
//! writes), which is what lets the parity tests catch a slot a kernel forgot to write.
mod common;

use asif_kernels::device::{Buffer, CounterSnapshot};
use asif_kernels::kernel_version::{self, KernelVersion};
use asif_kernels::ops::adam::{Adam, AdamConfig};
use asif_kernels::ops::add::{add_assign, add_forward};
use asif_kernels::ops::attention::{
    self, attention_backward, attention_forward, AttentionConfig, AttentionInputs, OutputGradients,
    ScorePair,
};
use asif_kernels::ops::bias_gelu::{bias_gelu_backward, bias_gelu_forward};
use asif_kernels::ops::contrastive::{
    self, contrastive_loss_forward_backward, ContrastiveReduction,
};
use asif_kernels::ops::cross_entropy::{
    cross_entropy_over_items_backward, cross_entropy_over_items_forward,
    softmax_cross_entropy_backward, softmax_cross_entropy_forward,
};
use asif_kernels::ops::dropout::{dropout_backward, dropout_forward, DropoutMode};
use asif_kernels::ops::embedding::{
    embedding_backward, embedding_forward, pooled_embedding_backward, pooled_embedding_forward,
    Pooling,
};
use asif_kernels::ops::gather::{gather_backward, gather_forward, GatherIndex};
use asif_kernels::ops::gelu::{gelu_backward, gelu_forward};
use asif_kernels::ops::hie::{self, hie_backward, hie_forward, HieBackward, HieOptions};
use asif_kernels::ops::input_embedding::input_embedding_forward;
use asif_kernels::ops::layer_norm::{layer_norm_backward, layer_norm_forward};
use asif_kernels::ops::linear::{
    linear_backward, linear_forward, matmul_transposed_backward, matmul_transposed_forward,
};
use asif_kernels::ops::relu::{relu_backward, relu_forward};
use asif_kernels::ops::residual_norm::{
    residual_layer_norm_backward, residual_layer_norm_forward, DropoutSettings,
};
use asif_kernels::ops::source_attention::{
    source_attention_backward, source_attention_forward, stack_sources_forward, unstack_source,
};
use asif_kernels::{Device, IndexTensor, Precision, Tensor};
use common::{for_each_version, kernel_devices, random, rng, tensor};

/// The families with a v2 of issue 19: their launches and allocations are pinned for both.
const BLOCK_FAMILIES: [&str; 6] = [
    "gelu",
    "relu",
    "dropout",
    "elementwise",
    "layer_norm",
    "residual_norm",
];

/// Bytes of one f32 or i32.
const WORD: u64 = 4;

/// Runs `f` and returns its result and what the device did meanwhile.
fn counted<R>(device: &Device, f: impl FnOnce() -> R) -> (R, CounterSnapshot) {
    let before = device.counters().snapshot();
    let result = f();
    (result, device.counters().snapshot().since(&before))
}

/// What an op call should cost: `launches` kernel launches, `blas_calls` cuBLAS calls, `memsets`
/// zeroed buffers, one allocation per entry of `allocations` (its length in 4-byte elements), no
/// copies.
fn cost(launches: u64, blas_calls: u64, memsets: u64, allocations: &[usize]) -> CounterSnapshot {
    CounterSnapshot {
        launches,
        blas_calls,
        memsets,
        allocations: allocations.len() as u64,
        bytes_allocated: allocations.iter().sum::<usize>() as u64 * WORD,
        ..CounterSnapshot::default()
    }
}

fn assert_cost(what: &str, device: &Device, got: CounterSnapshot, want: CounterSnapshot) {
    // Whether the memory cache served an allocation depends on what ran before on the device
    // (`tests/train_step.rs` pins fresh allocations); the allocations themselves are pinned here.
    let got = CounterSnapshot {
        fresh_allocations: 0,
        bytes_freshly_allocated: 0,
        ..got
    };
    assert_eq!(
        got,
        want,
        "{what} on {}: counted (left) differs from pinned (right)",
        device.name()
    );
}

fn values(device: &Device, shape: &[usize], seed: u64) -> Tensor {
    let len = shape.iter().product();
    tensor(device, shape, &random(&mut rng(seed), len, 0.1, 1.0))
}

fn indices(device: &Device, shape: &[usize], values: Vec<i32>) -> IndexTensor {
    IndexTensor::from_vec(device, shape, values).expect("indices")
}

fn finite(t: &Tensor) -> bool {
    t.to_vec().expect("download").iter().all(|v| v.is_finite())
}

#[test]
fn uninitialized_buffers_are_poisoned_and_cost_no_memset() {
    for device in kernel_devices() {
        assert!(device.poisons_uninitialized(), "{}", device.name());
        let (buffer, counts) = counted(&device, || device.uninitialized::<f32>(5).unwrap());
        assert_cost("uninitialized f32", &device, counts, cost(0, 0, 0, &[5]));
        let host = device.download(&buffer).unwrap();
        assert!(host.iter().all(|v| v.is_nan()), "{host:?}");

        let ids: Buffer<i32> = device.uninitialized(3).unwrap();
        assert_eq!(device.download(&ids).unwrap(), vec![i32::MIN; 3]);

        let (zeros, counts) = counted(&device, || device.zeros::<f32>(6).unwrap());
        assert_cost("zeros", &device, counts, cost(0, 0, 1, &[6]));
        assert_eq!(device.download(&zeros).unwrap(), vec![0.0; 6]);
    }
}

#[test]
fn copies_between_host_and_device_are_counted_in_bytes() {
    for device in kernel_devices() {
        let (t, counts) = counted(&device, || {
            Tensor::from_vec(&device, &[2, 3], vec![1.0; 6]).unwrap()
        });
        let upload = CounterSnapshot {
            allocations: 1,
            bytes_allocated: 6 * WORD,
            bytes_host_to_device: 6 * WORD,
            ..CounterSnapshot::default()
        };
        assert_cost("Tensor::from_vec", &device, counts, upload);
        let (_, counts) = counted(&device, || t.to_vec().unwrap());
        let download = CounterSnapshot {
            bytes_device_to_host: 6 * WORD,
            ..CounterSnapshot::default()
        };
        assert_cost("Tensor::to_vec", &device, counts, download);
        assert_eq!(download.bytes_copied_host_device(), 6 * WORD);
    }
}

#[test]
fn clones_share_counters_and_devices_do_not() {
    let device = common::emulated();
    let clone = device.clone();
    let before = device.counters().snapshot();
    let _ = clone.zeros::<f32>(4).unwrap();
    assert_eq!(device.counters().snapshot().since(&before).memsets, 1);

    let other = common::emulated();
    let before_other = other.counters().snapshot();
    let _ = device.zeros::<f32>(4).unwrap();
    assert_eq!(other.counters().snapshot(), before_other);
}

#[test]
fn the_cpu_device_counts_nothing() {
    let cpu = Device::cpu();
    let before = cpu.counters().snapshot();
    let x = values(&cpu, &[3, 4], 1);
    let gamma = values(&cpu, &[4], 2);
    let beta = values(&cpu, &[4], 3);
    let (y, _) = layer_norm_forward(&x, &gamma, &beta, 1e-5).unwrap();
    let _ = y.to_vec().unwrap();
    let _ = cpu.zeros::<f32>(8).unwrap();
    assert_eq!(
        cpu.counters().snapshot().since(&before),
        CounterSnapshot::default()
    );
    assert_eq!(cpu.counters().snapshot(), CounterSnapshot::default());
}

#[test]
fn elementwise_ops_launch_once_and_memset_nothing() {
    for_each_version(&BLOCK_FAMILIES, |version| {
        for device in kernel_devices() {
            let x = values(&device, &[3, 7], 1);
            let dy = values(&device, &[3, 7], 2);
            type Forward = fn(&Tensor) -> asif_kernels::Result<Tensor>;
            type Backward = fn(&Tensor, &Tensor) -> asif_kernels::Result<Tensor>;
            let activations: [(&str, Forward, Backward); 2] = [
                ("gelu", gelu_forward, gelu_backward),
                ("relu", relu_forward, relu_backward),
            ];
            for (name, forward, backward) in activations {
                let (y, counts) = counted(&device, || forward(&x).unwrap());
                assert_cost(
                    &format!("{name} {}", version.name()),
                    &device,
                    counts,
                    cost(1, 0, 0, &[21]),
                );
                assert!(finite(&y));
                let (dx, counts) = counted(&device, || backward(&x, &dy).unwrap());
                assert_cost(name, &device, counts, cost(1, 0, 0, &[21]));
                assert!(finite(&dx));
            }

            let (sum, counts) = counted(&device, || add_forward(&x, &dy).unwrap());
            assert_cost("add_forward", &device, counts, cost(1, 0, 0, &[21]));
            assert!(finite(&sum));

            let mut y = values(&device, &[3, 7], 3);
            let (_, counts) = counted(&device, || add_assign(&mut y, &x).unwrap());
            assert_cost("add_assign", &device, counts, cost(1, 0, 0, &[]));
            // y shares its buffer with a clone: the write copies it first, on the device.
            let shared = y.clone();
            let (_, counts) = counted(&device, || add_assign(&mut y, &x).unwrap());
            let copy_then_add = CounterSnapshot {
                bytes_device_to_device: 21 * WORD,
                ..cost(1, 0, 0, &[21])
            };
            assert_cost("add_assign (shared)", &device, counts, copy_then_add);
            drop(shared);

            let (dropped, counts) = counted(&device, || {
                dropout_forward(&x, 0.3, 7, DropoutMode::Train).unwrap()
            });
            assert_cost("dropout (train)", &device, counts, cost(1, 0, 0, &[21]));
            assert!(finite(&dropped));
            let (_, counts) = counted(&device, || {
                dropout_backward(&dy, 0.3, 7, DropoutMode::Train).unwrap()
            });
            assert_cost("dropout backward", &device, counts, cost(1, 0, 0, &[21]));
            let (_, counts) = counted(&device, || {
                dropout_forward(&x, 0.3, 7, DropoutMode::Eval).unwrap()
            });
            assert_cost("dropout (eval)", &device, counts, cost(0, 0, 0, &[]));
        }
    });
}

#[test]
fn layer_norm_and_the_fused_residual_sublayer() {
    for_each_version(&BLOCK_FAMILIES, |version| {
        // 70 rows: two chunks of the parameter-gradient reduction. cols 8: v2's register path.
        let (rows, cols, chunks) = (70, 8, 2);
        for device in kernel_devices() {
            let x = values(&device, &[rows, cols], 1);
            let residual = values(&device, &[rows, cols], 2);
            let gamma = values(&device, &[cols], 3);
            let beta = values(&device, &[cols], 4);
            let dy = values(&device, &[rows, cols], 5);

            let ((y, saved), counts) = counted(&device, || {
                layer_norm_forward(&x, &gamma, &beta, 1e-5).unwrap()
            });
            assert_cost(
                "layer_norm_forward",
                &device,
                counts,
                cost(1, 0, 0, &[rows * cols, rows, rows]),
            );
            assert!(finite(&y));
            // v1: dx, the chunk partials, their sum (3 launches); v2: dx and the partials in one
            // fused pass, then the sum (2). The same buffers.
            let launches = match version {
                KernelVersion::V1 => 3,
                KernelVersion::V2 | KernelVersion::V3 => 2,
            };
            let backward = cost(
                launches,
                0,
                0,
                &[rows * cols, cols, cols, chunks * cols, chunks * cols],
            );
            let (grads, counts) = counted(&device, || {
                layer_norm_backward(&x, &gamma, &saved, &dy).unwrap()
            });
            assert_cost("layer_norm_backward", &device, counts, backward);
            assert!(finite(&grads.dx) && finite(&grads.dgamma) && finite(&grads.dbeta));

            let dropout = DropoutSettings {
                p: 0.2,
                seed: 11u64.into(),
                mode: DropoutMode::Train,
            };
            let ((y, saved), counts) = counted(&device, || {
                residual_layer_norm_forward(&x, &residual, &gamma, &beta, 1e-5, dropout.clone())
                    .unwrap()
            });
            assert_cost(
                "residual_layer_norm_forward",
                &device,
                counts,
                cost(1, 0, 0, &[rows * cols, rows * cols, rows, rows]),
            );
            assert!(finite(&y));
            let (grads, counts) = counted(&device, || {
                residual_layer_norm_backward(&gamma, &saved, &dy, dropout.clone()).unwrap()
            });
            // The layer norm backward, then the dropout mask on dx.
            let mut want = backward;
            want.launches += 1;
            want.allocations += 1;
            want.bytes_allocated += (rows * cols) as u64 * WORD;
            assert_cost("residual_layer_norm_backward", &device, counts, want);
            assert!(finite(&grads.dx));
        }
    });
}

#[test]
fn fused_bias_gelu_costs_one_launch_forward_and_two_backward() {
    // Issue 20: the FFN's bias add and GELU in one pass (the unfused path: linear's bias add and
    // GELU's forward, 2 launches; GELU's backward and the bias gradient's two passes, 3).
    let (rows, cols) = (70, 5);
    for device in kernel_devices() {
        let y = values(&device, &[rows, cols], 1);
        let bias = values(&device, &[cols], 2);
        let dh = values(&device, &[rows, cols], 3);
        let (h, counts) = counted(&device, || bias_gelu_forward(&y, &bias).unwrap());
        assert_cost(
            "bias_gelu_forward",
            &device,
            counts,
            cost(1, 0, 0, &[rows * cols]),
        );
        assert!(finite(&h));
        let ((dy, db), counts) = counted(&device, || bias_gelu_backward(&y, &bias, &dh).unwrap());
        assert_cost(
            "bias_gelu_backward",
            &device,
            counts,
            cost(2, 0, 0, &[rows * cols, 2 * cols, cols]),
        );
        assert!(finite(&dy) && finite(&db));
    }
}

#[test]
fn fused_input_lookups_cost_one_launch() {
    // Issue 20: E_X[s] and one attribute type's pooling in one launch (unfused: one each).
    let (positions, dim, max_tokens) = (7, 5, 2);
    for device in kernel_devices() {
        let item_table = values(&device, &[9, dim], 1);
        let attribute_table = values(&device, &[4, dim], 2);
        let ids = indices(&device, &[positions], vec![1, 0, 8, 3, 3, 2, 5]);
        let tokens = indices(
            &device,
            &[positions, max_tokens],
            vec![1, 2, 0, 0, 3, 0, 1, 1, 2, 3, 0, 1, 3, 2],
        );
        let ((x, a), counts) = counted(&device, || {
            input_embedding_forward(&item_table, &attribute_table, &ids, &tokens, Pooling::Mean)
                .unwrap()
        });
        assert_cost(
            "input_embedding_forward",
            &device,
            counts,
            cost(1, 0, 0, &[positions * dim, positions * dim]),
        );
        assert!(finite(&x) && finite(&a));
    }
}

#[test]
fn linear_and_the_prediction_product() {
    let (rows, d_in, d_out) = (6, 4, 5);
    for device in kernel_devices() {
        let x = values(&device, &[rows, d_in], 1);
        let weight = values(&device, &[d_in, d_out], 2);
        let bias = values(&device, &[d_out], 3);
        let dy = values(&device, &[rows, d_out], 4);
        let (y, counts) = counted(&device, || {
            linear_forward(&x, &weight, Some(&bias)).unwrap()
        });
        assert_cost(
            "linear_forward",
            &device,
            counts,
            cost(1, 1, 0, &[rows * d_out]),
        );
        assert!(finite(&y));
        let (grads, counts) = counted(&device, || linear_backward(&x, &weight, &dy, true).unwrap());
        assert_cost(
            "linear_backward",
            &device,
            counts,
            cost(2, 2, 0, &[rows * d_in, d_in * d_out, d_out, d_out]),
        );
        assert!(finite(&grads.dx) && finite(&grads.dweight));
        assert!(finite(grads.dbias.as_ref().unwrap()));

        let items = 9;
        let table = values(&device, &[items, d_in], 5);
        let dlogits = values(&device, &[rows, items], 6);
        let (logits, counts) = counted(&device, || matmul_transposed_forward(&x, &table).unwrap());
        assert_cost(
            "matmul_transposed_forward",
            &device,
            counts,
            cost(0, 1, 0, &[rows * items]),
        );
        assert!(finite(&logits));
        let (_, counts) = counted(&device, || {
            matmul_transposed_backward(&x, &table, &dlogits, 0.5).unwrap()
        });
        assert_cost(
            "matmul_transposed_backward",
            &device,
            counts,
            cost(0, 2, 0, &[rows * d_in, items * d_in]),
        );
    }
}

#[test]
fn cross_entropy() {
    let (rows, items, d) = (3, 11, 4);
    for device in kernel_devices() {
        let u = values(&device, &[rows, d], 1);
        let table = values(&device, &[items, d], 2);
        let targets = indices(&device, &[rows], vec![0, 5, 10]);
        let dloss = tensor(&device, &[], &[0.5]);
        let ((loss, saved), counts) = counted(&device, || {
            cross_entropy_over_items_forward(&u, &table, &targets).unwrap()
        });
        // The logits product, then the rows and the mean; G overwrites the logits in place.
        assert_cost(
            "cross_entropy_over_items_forward",
            &device,
            counts,
            cost(2, 1, 0, &[rows * items, rows, 1]),
        );
        assert!(finite(&loss));
        let (_, counts) = counted(&device, || {
            cross_entropy_over_items_backward(&u, &table, &saved, &dloss).unwrap()
        });
        assert_cost(
            "cross_entropy_over_items_backward",
            &device,
            counts,
            cost(2, 2, 0, &[rows * d, items * d]),
        );

        // Given logits: one device copy into G (the input stays intact), then the same kernels.
        let logits = values(&device, &[rows, items], 3);
        let ((_, saved), counts) = counted(&device, || {
            softmax_cross_entropy_forward(&logits, &targets).unwrap()
        });
        let want = CounterSnapshot {
            bytes_device_to_device: (rows * items) as u64 * WORD,
            ..cost(2, 0, 0, &[rows * items, rows, 1])
        };
        assert_cost("softmax_cross_entropy_forward", &device, counts, want);
        let (_, counts) = counted(&device, || {
            softmax_cross_entropy_backward(&saved, &dloss).unwrap()
        });
        let want = CounterSnapshot {
            bytes_device_to_device: (rows * items) as u64 * WORD,
            ..cost(1, 0, 0, &[rows * items])
        };
        assert_cost("softmax_cross_entropy_backward", &device, counts, want);
    }
}

#[test]
fn embeddings_and_gather() {
    let (vocab, dim) = (7, 5);
    for device in kernel_devices() {
        let table = values(&device, &[vocab, dim], 1);
        let ids = indices(&device, &[2, 4], vec![1, 2, 3, 0, 6, 6, 2, 0]);
        let dout = values(&device, &[2, 4, dim], 2);
        let (out, counts) = counted(&device, || embedding_forward(&table, &ids).unwrap());
        assert_cost(
            "embedding_forward",
            &device,
            counts,
            cost(1, 0, 0, &[8 * dim]),
        );
        assert!(finite(&out));
        // v1's backward accumulates (atomicAdd) into a zeroed table gradient: one memset; v2
        // (deterministic) writes every row itself into an uninitialized (poisoned) table.
        let tokens = indices(&device, &[3, 4], vec![1, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
        let pooled_dout = values(&device, &[3, dim], 3);
        for_each_version(&["embedding"], |version| {
            let memsets = u64::from(version == KernelVersion::V1);
            let (dtable, counts) =
                counted(&device, || embedding_backward(&ids, &dout, vocab).unwrap());
            assert_cost(
                &format!("embedding_backward {version:?}"),
                &device,
                counts,
                cost(1, 0, memsets, &[vocab * dim]),
            );
            assert!(finite(&dtable));
            let (dtable, counts) = counted(&device, || {
                pooled_embedding_backward(&tokens, &pooled_dout, vocab, Pooling::Mean).unwrap()
            });
            assert_cost(
                &format!("pooled_embedding_backward {version:?}"),
                &device,
                counts,
                cost(1, 0, memsets, &[vocab * dim]),
            );
            assert!(finite(&dtable));
        });

        let (out, counts) = counted(&device, || {
            pooled_embedding_forward(&table, &tokens, Pooling::Mean).unwrap()
        });
        assert_cost(
            "pooled_embedding_forward",
            &device,
            counts,
            cost(1, 0, 0, &[3 * dim]),
        );
        assert!(finite(&out));

        let (batch, n) = (3, 4);
        let h = values(&device, &[batch, n, dim], 4);
        let index = GatherIndex::Last(indices(&device, &[batch], vec![4, 1, 2]));
        let gathered_dout = values(&device, &[batch, dim], 5);
        let (out, counts) = counted(&device, || gather_forward(&h, &index).unwrap());
        assert_cost(
            "gather_forward",
            &device,
            counts,
            cost(1, 0, 0, &[batch * dim]),
        );
        assert!(finite(&out));
        // The backward scatters one row per sequence into zeros: one memset.
        let (_, counts) = counted(&device, || {
            gather_backward(&index, &gathered_dout, n).unwrap()
        });
        assert_cost(
            "gather_backward",
            &device,
            counts,
            cost(1, 0, 1, &[batch * n * dim]),
        );
    }
}

#[test]
fn source_attention() {
    let (rows, k_sources, d) = (4, 3, 5);
    for device in kernel_devices() {
        let sources: Vec<Tensor> = (0..k_sources)
            .map(|k| values(&device, &[rows, d], k as u64))
            .collect();
        let refs: Vec<&Tensor> = sources.iter().collect();
        let (stacked, counts) = counted(&device, || stack_sources_forward(&refs).unwrap());
        // One copy kernel per source into one buffer.
        assert_cost(
            "stack_sources_forward",
            &device,
            counts,
            cost(k_sources as u64, 0, 0, &[rows * k_sources * d]),
        );
        assert!(finite(&stacked));
        let (_, counts) = counted(&device, || unstack_source(&stacked, 1).unwrap());
        assert_cost(
            "unstack_source",
            &device,
            counts,
            cost(1, 0, 0, &[rows * d]),
        );

        let energies = values(&device, &[rows, k_sources], 9);
        let dout = values(&device, &[rows, d], 10);
        let (out, counts) = counted(&device, || {
            source_attention_forward(&stacked, &energies).unwrap()
        });
        assert_cost(
            "source_attention_forward",
            &device,
            counts,
            cost(1, 0, 0, &[rows * d, rows * k_sources]),
        );
        assert!(finite(&out.out) && finite(&out.weights));
        let (_, counts) = counted(&device, || {
            source_attention_backward(&stacked, &out.weights, &dout).unwrap()
        });
        assert_cost(
            "source_attention_backward",
            &device,
            counts,
            cost(1, 0, 0, &[rows * k_sources * d, rows * k_sources]),
        );
    }
}

#[test]
fn adam_packs_on_the_device_and_launches_once() {
    let total = 3 * 4 + 5;
    for device in kernel_devices() {
        let mut params = vec![values(&device, &[3, 4], 1), values(&device, &[5], 2)];
        let grads = vec![values(&device, &[3, 4], 3), values(&device, &[5], 4)];
        let (adam, counts) = counted(&device, || {
            Adam::new(AdamConfig::default(), &params).unwrap()
        });
        // The two moments start at zero (memsets); the packing buffers are written every step.
        assert_cost("Adam::new", &device, counts, cost(0, 0, 2, &[total; 4]));
        let mut adam = adam;
        let (_, counts) = counted(&device, || adam.step(&mut params, &grads).unwrap());
        // Parameters and gradients packed in, one update, parameters unpacked: all on the device.
        let want = CounterSnapshot {
            launches: 1,
            bytes_device_to_device: 3 * total as u64 * WORD,
            ..CounterSnapshot::default()
        };
        assert_cost("Adam::step", &device, counts, want);
        assert!(params.iter().all(finite));
    }
}

#[test]
fn contrastive_loss_is_two_launches() {
    let (batch, n, d) = (2, 5, 6);
    // Both kernel versions: one fused pass per sequence, then the reduce; no memset.
    for version in [KernelVersion::V1, KernelVersion::V2] {
        kernel_version::with_version(contrastive::KERNEL_FAMILY, version, || {
            contrastive_launches(batch, n, d)
        });
    }
}

fn contrastive_launches(batch: usize, n: usize, d: usize) {
    for device in kernel_devices() {
        let x = values(&device, &[batch, n, d], 1);
        let a = values(&device, &[batch, n, d], 2);
        let lengths = indices(&device, &[batch], vec![5, 3]);
        let logit_scale = tensor(&device, &[1], &[2.0]);
        let (out, counts) = counted(&device, || {
            contrastive_loss_forward_backward(
                &x,
                &a,
                &lengths,
                &logit_scale,
                None,
                ContrastiveReduction::MeanPerSequence,
                1.0,
            )
            .unwrap()
        });
        // Loss and every gradient per sequence, then the fixed-order reduce.
        assert_cost(
            "contrastive_loss_forward_backward",
            &device,
            counts,
            cost(2, 0, 0, &[batch * n * d, batch * n * d, 1, 1, batch, batch]),
        );
        assert!(finite(&out.loss) && finite(&out.dx) && finite(&out.da) && finite(&out.ds));
    }
}

#[test]
fn hie_is_one_launch_forward_and_one_or_two_backward() {
    // Every kernel version (family "hie": v1, v2, v3): the same launches, no memset.
    for_each_version(&[hie::KERNEL_FAMILY], |version| {
        let (batch, n, d, r) = (2, 5, 6, 3);
        for device in kernel_devices() {
            let h_x = values(&device, &[batch, n, d], 1);
            let h_a = values(&device, &[batch, n, d], 2);
            let w_r = values(&device, &[n, r], 3);
            let lengths = indices(&device, &[batch], vec![5, 3]);
            let dy = values(&device, &[batch, n, d], 4);
            let options = HieOptions::default();
            let ((out, saved), counts) = counted(&device, || {
                hie_forward(&h_x, &h_a, &w_r, &lengths, options).unwrap()
            });
            assert_cost(
                "hie_forward",
                &device,
                counts,
                cost(
                    1,
                    0,
                    0,
                    &[batch * n * d, batch * d * r, batch * r * r, batch * n * r],
                ),
            );
            assert!(finite(&out));
            let backward = |mode| {
                hie_backward(&h_x, &h_a, &w_r, &lengths, &saved, &dy, options, mode).unwrap()
            };
            let (_, counts) = counted(&device, || backward(HieBackward::QConstant));
            assert_cost(
                "hie_backward (Q constant)",
                &device,
                counts,
                cost(1, 0, 0, &[batch * n * d]),
            );
            let (grads, counts) = counted(&device, || backward(HieBackward::FullQr));
            // dH_A, dH_X, dW_r, the per-sequence dW_r shares; v1 also its global scratch φ⊙C_A, c̄
            // and M̄ (v2 and v3 keep them in shared memory and registers).
            let mut allocations = vec![batch * n * d, batch * n * d, n * r, batch * n * r];
            if version == KernelVersion::V1 {
                allocations.extend([batch * n * r, batch * n * r, batch * d * r]);
            }
            assert_cost(
                "hie_backward (full QR)",
                &device,
                counts,
                cost(2, 0, 0, &allocations),
            );
            assert!(finite(&grads.dh_a) && finite(grads.dh_x.as_ref().unwrap()));
            assert!(finite(grads.dw_r.as_ref().unwrap()));
        }
    });
}

#[test]
fn attention_is_one_launch_forward_and_no_memset() {
    // ASIF's mode: C_XA and C_P (its pair shared by the batch), O_X, O_A and O_P.
    let (batch, n, heads, head_dim) = (2, 5, 2, 3);
    let d = heads * head_dim;
    let per_sequence = batch * n * d;
    let statistics = 3 * batch * heads * n;
    // Both kernel versions make the same forward (one launch, no memset); the backward is two
    // passes and a row-statistics buffer in v1, one pass and none in v2; both then sum each
    // shared input's gradient over the batch in one launch.
    for version in [KernelVersion::V1, KernelVersion::V2] {
        kernel_version::with_version(attention::KERNEL_FAMILY, version, || {
            for device in kernel_devices() {
                let full = |seed| values(&device, &[batch, n, d], seed);
                let shared = |seed| values(&device, &[n, d], seed);
                let inputs = AttentionInputs {
                    score_pairs: vec![
                        ScorePair {
                            query: full(1),
                            key: full(2),
                        },
                        ScorePair {
                            query: shared(3),
                            key: shared(4),
                        },
                    ],
                    id_values: full(5),
                    fused_values: Some(full(6)),
                    position_values: Some(shared(7)),
                };
                let lengths = indices(&device, &[batch], vec![5, 2]);
                let config = AttentionConfig {
                    heads,
                    dropout: 0.1,
                    seed: 3,
                    precision: Precision::Fp32,
                };
                let ((outputs, saved), counts) = counted(&device, || {
                    attention_forward(&inputs, &lengths, &config).unwrap()
                });
                assert_cost(
                    "attention_forward",
                    &device,
                    counts,
                    cost(
                        1,
                        0,
                        0,
                        &[per_sequence, per_sequence, per_sequence, statistics],
                    ),
                );
                assert!(finite(&outputs.id));

                let g = [full(8), full(9), full(10)];
                let all = OutputGradients {
                    id: Some(&g[0]),
                    fused: Some(&g[1]),
                    position: Some(&g[2]),
                };
                let (grads, counts) = counted(&device, || {
                    attention_backward(&inputs, &lengths, &config, &saved, &all).unwrap()
                });
                // Seven present inputs get per-sequence gradients, the absent Q3 and K3 one-element
                // dummies; v1 the row statistics D (v2 forms D in the kernel); the three shared
                // inputs (Q2, K2, V3) a batch sum each.
                let (passes, statistics_buffers) = match version {
                    KernelVersion::V1 => (2, vec![statistics]),
                    KernelVersion::V2 | KernelVersion::V3 => (1, vec![]),
                };
                let mut allocations = vec![per_sequence; 7];
                allocations.extend([1, 1]);
                allocations.extend(statistics_buffers);
                allocations.extend([n * d, n * d, n * d]);
                assert_cost(
                    &format!("attention_backward ({})", version.name()),
                    &device,
                    counts,
                    cost(passes + 3, 0, 0, &allocations),
                );
                assert!(finite(&grads.id_values) && finite(&grads.score_pairs[1].key));

                // Outputs without an upstream gradient contribute zero: a zeroed gradient each.
                let id_only = OutputGradients {
                    id: Some(&g[0]),
                    ..OutputGradients::default()
                };
                let (_, counts) = counted(&device, || {
                    attention_backward(&inputs, &lengths, &config, &saved, &id_only).unwrap()
                });
                let mut with_zeros = allocations.clone();
                with_zeros.extend([per_sequence, per_sequence]);
                assert_cost(
                    &format!(
                        "attention_backward (O_X's gradient only, {})",
                        version.name()
                    ),
                    &device,
                    counts,
                    cost(passes + 3, 0, 2, &with_zeros),
                );
            }
        });
    }
}

#[test]
fn elementwise_ops_on_empty_tensors_launch_nothing() {
    // An empty grid is refused by the launch, so an empty tensor must skip it; the kernels'
    // grid-stride loops would hide a launch of one block over nothing, which only the count
    // sees (cargo-mutants, issue 16: `launch_elementwise`'s `len > 0` → `>=` was unseen).
    for_each_version(&BLOCK_FAMILIES, |version| {
        for device in kernel_devices() {
            let x = values(&device, &[0, 7], 1);
            let what = |op: &str| format!("{op} of [0, 7] {}", version.name());
            let (_, counts) = counted(&device, || gelu_forward(&x).unwrap());
            assert_eq!(counts.launches, 0, "{}", what("gelu"));
            let (_, counts) = counted(&device, || relu_backward(&x, &x).unwrap());
            assert_eq!(counts.launches, 0, "{}", what("relu backward"));
            let (sum, counts) = counted(&device, || add_forward(&x, &x).unwrap());
            assert_eq!(counts.launches, 0, "{}", what("add"));
            assert_eq!(sum.shape(), [0, 7]);
        }
    });
}
