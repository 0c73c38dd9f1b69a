//! Criterion benchmark of one training step (issues 8 and 20): forward, backward and the Adam
//! update of a whole model, for SASRec and ASIF. Criterion's time is ms/step and its throughput
//! samples/s (B elements per step); before each row one line gives the device work of one step
//! (`train_step launches/step <model> <label>: N launches, N cuBLAS calls, N memsets, N
//! allocations`, counted by the device's counters; the CPU device counts nothing).
//!
//! On the CPU reference at the train example's small size (B 128, d 32, L 2, h 2, n 20) and on
//! GPU 0 at the paper's size (B 2048, d 256, L 3, h 4, n 50, 20 genre ids; ml-100k's 1,350 item
//! ids and Beauty's 12,101) when there is one; otherwise one line says it was skipped. On the GPU
//! ASIF at 1,350 items also runs with the deterministic embedding backward (`embedding` v2,
//! `kernels/embedding.cu`), id `Asif-embedding_v2`.
//! At 1,350 items the GPU also runs SASRec and ASIF with the step as one CUDA graph launch
//! (`TrainStep` with graphs on, `src/device/graph.rs`), ids `<model>-graph`, beside the eager
//! rows; their device-work line counts the second step (the first graph step; the first step of
//! a shape runs eagerly) and adds its fresh allocations (0 when the memory cache serves it).
//! At 1,350 items the GPU also runs SASRec and ASIF with the issue-20 fusions on: the FFN's bias
//! add fused into GELU (`bias_gelu` v2, `kernels/bias_gelu.cu`) and the item and attribute
//! lookups in one launch (`input_embedding` v2, `kernels/input_embedding.cu`; one attribute type
//! here); the same bits as the unfused step; ids `<model>-fused`, beside the unfused rows, so one
//! call times both.
//! Every row runs the trainer's step (`TrainStep`), which reads the loss back each step.
//! `cargo bench --bench train_step`. Ids: `train_step/<model>/<device> B.. d.. L.. n.. V..`.
mod common;

use asif_kernels::kernel_version::{with_version, KernelVersion};
use asif_kernels::model::{DataShape, Model, ModelConfig, ModelInputs, ModelKind};
use asif_kernels::ops::adam::{Adam, AdamConfig};
use asif_kernels::train::TrainStep;
use asif_kernels::{Device, IndexTensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

struct Size {
    batch: usize,
    d: usize,
    layers: usize,
    heads: usize,
    n: usize,
    items: usize,
    genres: usize,
}

fn hash(i: usize, salt: usize) -> usize {
    (i.wrapping_mul(2_654_435_761)
        .wrapping_add(salt.wrapping_mul(40_503))
        >> 7)
        & 0xFF_FFFF
}

fn inputs(device: &Device, s: &Size) -> ModelInputs {
    let lengths: Vec<i32> = (0..s.batch)
        .map(|b| (1 + hash(b, 1) % s.n) as i32)
        .collect();
    let mut items = vec![0i32; s.batch * s.n];
    let mut genres = vec![0i32; s.batch * s.n * 2];
    for b in 0..s.batch {
        for t in 0..lengths[b] as usize {
            let item = 1 + hash(b * s.n + t, 2) % (s.items - 1);
            items[b * s.n + t] = item as i32;
            genres[(b * s.n + t) * 2] = (1 + item % (s.genres - 1)) as i32;
        }
    }
    let targets = (0..s.batch)
        .map(|b| (1 + hash(b, 3) % (s.items - 1)) as i32)
        .collect();
    ModelInputs {
        items: IndexTensor::from_vec(device, &[s.batch, s.n], items).expect("items"),
        lengths: IndexTensor::from_vec(device, &[s.batch], lengths).expect("lengths"),
        targets: IndexTensor::from_vec(device, &[s.batch], targets).expect("targets"),
        attributes: vec![IndexTensor::from_vec(device, &[s.batch, s.n, 2], genres).expect("genres")],
        target_attributes: Vec::new(),
        attribute_groups: None,
    }
}

/// One forward, backward and Adam update as the trainer runs it (the loss read back at the end,
/// which waits for the device).
fn step(
    runner: &mut TrainStep,
    model: &mut Model,
    adam: &mut Adam,
    batch: &ModelInputs,
    step: u64,
) {
    runner.run(model, adam, batch, step).expect("step");
}

/// A row: the model, the embedding kernel version, whether the step is a CUDA graph, and whether
/// the issue-20 fusions are on (the `bias_gelu` and `input_embedding` families at v2).
#[derive(Clone, Copy)]
struct Row {
    kind: ModelKind,
    embedding: KernelVersion,
    cuda_graph: bool,
    fused: bool,
}

impl Row {
    fn plain(kind: ModelKind) -> Row {
        Row {
            kind,
            embedding: KernelVersion::V1,
            cuda_graph: false,
            fused: false,
        }
    }
}

/// `rows`: the rows to time.
fn bench_device(c: &mut Criterion, device: &Device, s: &Size, rows: &[Row]) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(s.batch as u64));
    let batch = inputs(device, s);
    for &Row {
        kind,
        embedding: embedding_version,
        cuda_graph,
        fused,
    } in rows
    {
        let fusion = if fused {
            KernelVersion::V2
        } else {
            KernelVersion::V1
        };
        with_version("embedding", embedding_version, || {
            with_version("bias_gelu", fusion, || {
                with_version("input_embedding", fusion, || {
                    let config = ModelConfig {
                        kind,
                        hidden_size: s.d,
                        heads: s.heads,
                        layers: s.layers,
                        max_len: s.n,
                        inner_size: s.d,
                        attribute_width: 2,
                        ..ModelConfig::default()
                    };
                    let shape = DataShape {
                        n_item_ids: s.items,
                        attribute_vocab: vec![s.genres],
                    };
                    let mut model = Model::new(&config, &shape, device).expect("model");
                    let mut adam =
                        Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
                    let mut name = match embedding_version {
                        KernelVersion::V1 => kind.name().to_string(),
                        KernelVersion::V2 => format!("{}-embedding_v2", kind.name()),
                        KernelVersion::V3 => format!("{}-embedding_v3", kind.name()),
                    };
                    if cuda_graph {
                        name.push_str("-graph");
                    }
                    if fused {
                        name.push_str("-fused");
                    }
                    let mut runner = TrainStep::new(cuda_graph);
                    let label = format!(
                        "{} B{} d{} L{} n{} V{}",
                        device.name(),
                        s.batch,
                        s.d,
                        s.layers,
                        s.n,
                        s.items
                    );
                    // The device work of one step: the first for an eager row (no warm cache of any
                    // kind), the second (the first graph step) for a graph row.
                    let mut t = 0u64;
                    if cuda_graph {
                        step(&mut runner, &mut model, &mut adam, &batch, t);
                        t += 1;
                    }
                    let before = device.counters().snapshot();
                    step(&mut runner, &mut model, &mut adam, &batch, t);
                    t += 1;
                    let counts = device.counters().snapshot().since(&before);
                    println!(
                "train_step launches/step {name} {label}: {} launches, {} cuBLAS calls, {} memsets, \
                 {} allocations ({} fresh)",
                counts.launches,
                counts.blas_calls,
                counts.memsets,
                counts.allocations,
                counts.fresh_allocations
            );
                    group.bench_function(BenchmarkId::new(&name, &label), |b| {
                        b.iter(|| {
                            step(&mut runner, &mut model, &mut adam, &batch, t);
                            t += 1;
                        })
                    });
                })
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let small = Size {
        batch: 128,
        d: 32,
        layers: 2,
        heads: 2,
        n: 20,
        items: 2801,
        genres: 21,
    };
    let both = [Row::plain(ModelKind::SasRec), Row::plain(ModelKind::Asif)];
    bench_device(c, &Device::cpu(), &small, &both);
    if let Some(gpu) = common::gpu() {
        for items in [1350, 12_101] {
            let paper = Size {
                batch: 2048,
                d: 256,
                layers: 3,
                heads: 4,
                n: 50,
                items,
                genres: 20,
            };
            let mut rows = both.to_vec();
            if items == 1350 {
                rows.push(Row {
                    embedding: KernelVersion::V2,
                    ..Row::plain(ModelKind::Asif)
                });
                for kind in [ModelKind::SasRec, ModelKind::Asif] {
                    rows.push(Row {
                        cuda_graph: true,
                        ..Row::plain(kind)
                    });
                }
                for kind in [ModelKind::SasRec, ModelKind::Asif] {
                    rows.push(Row {
                        fused: true,
                        ..Row::plain(kind)
                    });
                }
            }
            bench_device(c, &gpu, &paper, &rows);
        }
    }
}

criterion_group!(train_step_benches, benches);
criterion_main!(train_step_benches);
