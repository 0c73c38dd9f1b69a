//! Criterion benchmarks of the ops, with bytes moved per call as throughput.
//!
//! On the CPU reference at small sizes (always), and on GPU 0 at the paper's sizes
//! (B·n = 102400 rows, d = 256) when there is one; otherwise one line says it was skipped.
//! `cargo bench --bench ops`; the GPU script runs the same binary on the GPU machine.
mod common;

use common::random_tensor;

use asif_kernels::ops::{gelu, layer_norm, relu};
use asif_kernels::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench_device(c: &mut Criterion, device: &Device, rows: usize, cols: usize) {
    let label = device.name();
    let x = random_tensor(device, &[rows, cols], 1);
    let dy = random_tensor(device, &[rows, cols], 2);
    let gamma = random_tensor(device, &[cols], 3);
    let beta = random_tensor(device, &[cols], 4);
    let bytes = (rows * cols * 4) as u64;

    let mut group = c.benchmark_group("layer_norm");
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(
        BenchmarkId::new("forward", format!("{label} {rows}x{cols}")),
        |b| {
            b.iter(|| {
                let out =
                    layer_norm::layer_norm_forward(&x, &gamma, &beta, 1e-12).expect("forward");
                device.synchronize().expect("sync");
                out
            })
        },
    );
    let (_, saved) = layer_norm::layer_norm_forward(&x, &gamma, &beta, 1e-12).expect("forward");
    group.throughput(Throughput::Bytes(5 * bytes));
    group.bench_function(
        BenchmarkId::new("backward", format!("{label} {rows}x{cols}")),
        |b| {
            b.iter(|| {
                let out =
                    layer_norm::layer_norm_backward(&x, &gamma, &saved, &dy).expect("backward");
                device.synchronize().expect("sync");
                out
            })
        },
    );
    group.finish();

    type Forward = fn(&Tensor) -> asif_kernels::Result<Tensor>;
    type Backward = fn(&Tensor, &Tensor) -> asif_kernels::Result<Tensor>;
    let activations: [(&str, Forward, Backward); 2] = [
        ("gelu", gelu::gelu_forward, gelu::gelu_backward),
        ("relu", relu::relu_forward, relu::relu_backward),
    ];
    for (name, forward, backward) in activations {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(2 * bytes));
        group.bench_function(
            BenchmarkId::new("forward", format!("{label} {rows}x{cols}")),
            |b| {
                b.iter(|| {
                    let out = forward(&x).expect("forward");
                    device.synchronize().expect("sync");
                    out
                })
            },
        );
        group.throughput(Throughput::Bytes(3 * bytes));
        group.bench_function(
            BenchmarkId::new("backward", format!("{label} {rows}x{cols}")),
            |b| {
                b.iter(|| {
                    let out = backward(&x, &dy).expect("backward");
                    device.synchronize().expect("sync");
                    out
                })
            },
        );
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
