//! Criterion benchmarks of the transformer building blocks, with the minimal bytes moved per call
//! as throughput (FLOP-bound GEMMs are labelled by their bytes too; divide by time for GB/s and
//! see docs/blocks.md for their FLOP counts).
//!
//! On the CPU device at small sizes (always), and on GPU 0 at the paper's sizes (B = 2048,
//! n = 50, d = 256, |V| = 20000) when there is one; otherwise one line says it was skipped.
//! `cargo bench --bench blocks`.
//!
//! Dropout, the residual add and the fused residual norm have two kernel versions
//! (`asif_kernels::kernel_version`, issue 19), and so has the embedding backward (issue 20's
//! deterministic scatter): v1 rows keep their names, v2 rows add `_v2`.
mod common;

use asif_kernels::kernel_version::{with_version, KernelVersion};
use asif_kernels::ops::adam::{Adam, AdamConfig};
use asif_kernels::ops::add::add_forward;
use asif_kernels::ops::dropout::{dropout_forward, DropoutMode};
use asif_kernels::ops::residual_norm::{
    residual_layer_norm_forward, unfused_forward, DropoutSettings,
};
use asif_kernels::ops::{cross_entropy, embedding, gather, linear};
use asif_kernels::{Device, IndexTensor, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Inputs in [−0.1, 0.1): weight-sized values for the building blocks.
fn random_tensor(device: &Device, shape: &[usize], seed: u32) -> Tensor {
    common::random_tensor_in(device, shape, seed, 0.1)
}

fn indices(device: &Device, shape: &[usize], modulo: usize, at_least: i32) -> IndexTensor {
    let len: usize = shape.iter().product();
    let values = (0..len)
        .map(|i| at_least + ((i as u64 * 2_654_435_761 % modulo as u64) as i32))
        .collect();
    IndexTensor::from_vec(device, shape, values).expect("indices")
}

const VERSIONS: [KernelVersion; 2] = [KernelVersion::V1, KernelVersion::V2];

/// The benchmark name of `what` under `version`: v1 keeps the plain name, v2 adds `_v2`.
fn versioned(what: &str, version: KernelVersion) -> String {
    match version {
        KernelVersion::V1 => what.to_string(),
        KernelVersion::V2 => format!("{what}_v2"),
        KernelVersion::V3 => format!("{what}_v3"),
    }
}

struct Sizes {
    batch: usize,
    n: usize,
    d: usize,
    items: usize,
}

fn bench_device(c: &mut Criterion, device: &Device, s: &Sizes) {
    let label = |what: &str| format!("{} {what}", device.name());
    let rows = s.batch * s.n;
    let f = 4u64;
    let sync = || device.synchronize().expect("sync");

    let mut group = c.benchmark_group("blocks");
    // Linear: x [B·n, d] W [d, d] + b.
    let x = random_tensor(device, &[rows, s.d], 1);
    let w = random_tensor(device, &[s.d, s.d], 2);
    let b = random_tensor(device, &[s.d], 3);
    group.throughput(Throughput::Bytes(f * (2 * rows * s.d + s.d * s.d) as u64));
    group.bench_function(
        BenchmarkId::new("linear_forward", label(&format!("{rows}x{}x{}", s.d, s.d))),
        |bench| {
            bench.iter(|| {
                let y = linear::linear_forward(&x, &w, Some(&b)).expect("linear");
                sync();
                y
            })
        },
    );

    // Embedding lookup of B·n ids, and its scatter-add backward.
    let table = random_tensor(device, &[s.items, s.d], 4);
    let ids = indices(device, &[s.batch, s.n], s.items, 0);
    group.throughput(Throughput::Bytes(f * (2 * rows * s.d + rows) as u64));
    group.bench_function(
        BenchmarkId::new("embedding_forward", label(&format!("{rows} ids d {}", s.d))),
        |bench| {
            bench.iter(|| {
                let y = embedding::embedding_forward(&table, &ids).expect("embedding");
                sync();
                y
            })
        },
    );
    let dout = random_tensor(device, &[s.batch, s.n, s.d], 5);
    for version in VERSIONS {
        group.throughput(Throughput::Bytes(f * (rows * s.d + s.items * s.d) as u64));
        group.bench_function(
            BenchmarkId::new(
                versioned("embedding_backward", version),
                label(&format!("{rows} ids |V| {}", s.items)),
            ),
            |bench| {
                bench.iter(|| {
                    with_version("embedding", version, || {
                        let y = embedding::embedding_backward(&ids, &dout, s.items)
                            .expect("embedding backward");
                        sync();
                        y
                    })
                })
            },
        );
    }

    // Gather at L_b − 1.
    let lengths = indices(device, &[s.batch], s.n, 1);
    let h = random_tensor(device, &[s.batch, s.n, s.d], 6);
    group.throughput(Throughput::Bytes(f * (2 * s.batch * s.d) as u64));
    group.bench_function(
        BenchmarkId::new("gather_last", label(&format!("B {}", s.batch))),
        |bench| {
            bench.iter(|| {
                let y = gather::gather_forward(&h, &gather::GatherIndex::Last(lengths.clone()))
                    .expect("gather");
                sync();
                y
            })
        },
    );

    // Dropout over B·n·d, and the residual add a + b.
    let other = random_tensor(device, &[s.batch, s.n, s.d], 13);
    for version in VERSIONS {
        group.throughput(Throughput::Bytes(f * (2 * rows * s.d) as u64));
        group.bench_function(
            BenchmarkId::new(
                versioned("dropout", version),
                label(&format!("{}", rows * s.d)),
            ),
            |bench| {
                with_version("dropout", version, || {
                    bench.iter(|| {
                        let y = dropout_forward(&h, 0.5, 7, DropoutMode::Train).expect("dropout");
                        sync();
                        y
                    })
                })
            },
        );
        group.throughput(Throughput::Bytes(f * (3 * rows * s.d) as u64));
        group.bench_function(
            BenchmarkId::new(versioned("add", version), label(&format!("{}", rows * s.d))),
            |bench| {
                with_version("elementwise", version, || {
                    bench.iter(|| {
                        let y = add_forward(&h, &other).expect("add");
                        sync();
                        y
                    })
                })
            },
        );
    }

    // LN(Dropout(x) + residual): fused vs the unfused reference path.
    let residual = random_tensor(device, &[s.batch, s.n, s.d], 8);
    let gamma = random_tensor(device, &[s.d], 9);
    let beta = random_tensor(device, &[s.d], 10);
    let settings = DropoutSettings {
        p: 0.5,
        seed: 11u64.into(),
        mode: DropoutMode::Train,
    };
    group.throughput(Throughput::Bytes(f * (4 * rows * s.d) as u64));
    for version in VERSIONS {
        group.bench_function(
            BenchmarkId::new(
                versioned("residual_layer_norm_fused", version),
                label(&format!("{rows}x{}", s.d)),
            ),
            |bench| {
                with_version("residual_norm", version, || {
                    bench.iter(|| {
                        let y = residual_layer_norm_forward(
                            &h,
                            &residual,
                            &gamma,
                            &beta,
                            1e-12,
                            settings.clone(),
                        )
                        .expect("fused");
                        sync();
                        y
                    })
                })
            },
        );
    }
    group.bench_function(
        BenchmarkId::new(
            "residual_layer_norm_unfused",
            label(&format!("{rows}x{}", s.d)),
        ),
        |bench| {
            bench.iter(|| {
                let y = unfused_forward(&h, &residual, &gamma, &beta, 1e-12, settings.clone())
                    .expect("unfused");
                sync();
                y
            })
        },
    );

    // Cross-entropy over all items: u E_Xᵀ, fused loss + gradient (one B × |V| matrix).
    let u = random_tensor(device, &[s.batch, s.d], 12);
    let targets = indices(device, &[s.batch], s.items - 1, 1);
    group.throughput(Throughput::Bytes(
        f * (3 * s.batch * s.items + s.items * s.d) as u64,
    ));
    group.bench_function(
        BenchmarkId::new(
            "cross_entropy_over_items",
            label(&format!("B {} |V| {}", s.batch, s.items)),
        ),
        |bench| {
            bench.iter(|| {
                let y = cross_entropy::cross_entropy_over_items_forward(&u, &table, &targets)
                    .expect("ce");
                sync();
                y
            })
        },
    );

    // Adam over the item table plus four d × d matrices.
    let mut params = vec![table.clone(), w.clone(), w.clone(), w.clone(), w.clone()];
    let grads = params.clone();
    let total: usize = params.iter().map(Tensor::len).sum();
    let mut adam = Adam::new(AdamConfig::default(), &params).expect("adam");
    group.throughput(Throughput::Bytes(f * 7 * total as u64));
    group.bench_function(
        BenchmarkId::new("adam_step", label(&format!("{total} parameters"))),
        |bench| {
            bench.iter(|| {
                adam.step(&mut params, &grads).expect("adam");
                sync();
            })
        },
    );
    group.finish();
}

fn blocks(c: &mut Criterion) {
    bench_device(
        c,
        &Device::cpu(),
        &Sizes {
            batch: 64,
            n: 50,
            d: 64,
            items: 2000,
        },
    );
    if let Some(gpu) = common::gpu() {
        bench_device(
            c,
            &gpu,
            &Sizes {
                batch: 2048,
                n: 50,
                d: 256,
                items: 20_000,
            },
        );
    }
}

criterion_group!(benches, blocks);
criterion_main!(benches);
