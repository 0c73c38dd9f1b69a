//! Criterion benchmarks of the ops, with bytes moved per call as throughput.
//!
//! On the CPU reference at small sizes (always), and on GPU 0 at the paper's sizes
//! (B·n = 102400 rows, d = 256) when there is one; otherwise one line says it was skipped.
//! `cargo bench --bench ops`; the GPU script runs the same binary on the GPU machine.
//!
//! Every op here has two kernel versions (`asif_kernels::kernel_version`, issue 19): v1 rows keep
//! their names (`layer_norm/forward/...`), v2 rows add `_v2` (`layer_norm/forward_v2/...`), so
//! one run times both side by side.
mod common;

use common::random_tensor;

use asif_kernels::kernel_version::{with_version, KernelVersion};
use asif_kernels::ops::{gelu, layer_norm, relu};
use asif_kernels::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The benchmark name of `what` under `version`: v1 keeps the plain name, v2 adds `_v2`.
fn versioned(what: &str, version: KernelVersion) -> String {
    match version {
        KernelVersion::V1 => what.to_string(),
        KernelVersion::V2 => format!("{what}_v2"),
        KernelVersion::V3 => format!("{what}_v3"),
    }
}

const VERSIONS: [KernelVersion; 2] = [KernelVersion::V1, KernelVersion::V2];

fn bench_device(c: &mut Criterion, device: &Device, rows: usize, cols: usize) {
    let label = device.name();
    let x = random_tensor(device, &[rows, cols], 1);
    let dy = random_tensor(device, &[rows, cols], 2);
    let gamma = random_tensor(device, &[cols], 3);
    let beta = random_tensor(device, &[cols], 4);
    let bytes = (rows * cols * 4) as u64;

    let mut group = c.benchmark_group("layer_norm");
    let (_, saved) = layer_norm::layer_norm_forward(&x, &gamma, &beta, 1e-12).expect("forward");
    for version in VERSIONS {
        group.throughput(Throughput::Bytes(2 * bytes));
        group.bench_function(
            BenchmarkId::new(
                versioned("forward", version),
                format!("{label} {rows}x{cols}"),
            ),
            |b| {
                with_version("layer_norm", version, || {
                    b.iter(|| {
                        let out = layer_norm::layer_norm_forward(&x, &gamma, &beta, 1e-12)
                            .expect("forward");
                        device.synchronize().expect("sync");
                        out
                    })
                })
            },
        );
        // The minimal traffic (read x and dy, write dx: v2's); v1 reads x and dy twice.
        group.throughput(Throughput::Bytes(3 * bytes));
        group.bench_function(
            BenchmarkId::new(
                versioned("backward", version),
                format!("{label} {rows}x{cols}"),
            ),
            |b| {
                with_version("layer_norm", version, || {
                    b.iter(|| {
                        let out = layer_norm::layer_norm_backward(&x, &gamma, &saved, &dy)
                            .expect("backward");
                        device.synchronize().expect("sync");
                        out
                    })
                })
            },
        );
    }
    group.finish();

    type Forward = fn(&Tensor) -> asif_kernels::Result<Tensor>;
    type Backward = fn(&Tensor, &Tensor) -> asif_kernels::Result<Tensor>;
    let activations: [(&'static str, Forward, Backward); 2] = [
        ("gelu", gelu::gelu_forward, gelu::gelu_backward),
        ("relu", relu::relu_forward, relu::relu_backward),
    ];
    for (name, forward, backward) in activations {
        let mut group = c.benchmark_group(name);
        for version in VERSIONS {
            group.throughput(Throughput::Bytes(2 * bytes));
            group.bench_function(
                BenchmarkId::new(
                    versioned("forward", version),
                    format!("{label} {rows}x{cols}"),
                ),
                |b| {
                    with_version(name, version, || {
                        b.iter(|| {
                            let out = forward(&x).expect("forward");
                            device.synchronize().expect("sync");
                            out
                        })
                    })
                },
            );
            group.throughput(Throughput::Bytes(3 * bytes));
            group.bench_function(
                BenchmarkId::new(
                    versioned("backward", version),
                    format!("{label} {rows}x{cols}"),
                ),
                |b| {
                    with_version(name, version, || {
                        b.iter(|| {
                            let out = backward(&x, &dy).expect("backward");
                            device.synchronize().expect("sync");
                            out
                        })
                    })
                },
            );
        }
        group.finish();
    }
}

fn ops(c: &mut Criterion) {
    bench_device(c, &Device::cpu(), 2048, 256);
    if let Some(gpu) = common::gpu() {
        bench_device(c, &gpu, 2048 * 50, 256);
    }
}

criterion_group!(benches, ops);
criterion_main!(benches);
