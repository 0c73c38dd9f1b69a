//! Criterion benchmarks of the fusion gate's op (𝓕_gate, `ops::source_attention`): the pooling
//! forward and backward and the stacking, with the minimal bytes moved per call as throughput
//! (docs/source_attention.md has the floors).
//!
//! On the CPU device at a small size (always), and on GPU 0 at the paper's size (R = B·n =
//! 2048·50, d = 256, K = 2: items and one attribute type) when there is one; otherwise one line says
//! it was skipped. `cargo bench --bench source_attention`.
mod common;

use asif_kernels::ops::source_attention::{
    source_attention_backward, source_attention_forward, stack_sources_forward,
};
use asif_kernels::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench_device(c: &mut Criterion, device: &Device, rows: usize, k: usize, d: usize) {
    let label = format!("{} R {rows} K {k} d {d}", device.name());
    let f = 4u64;
    let sync = || device.synchronize().expect("sync");
    let parts: Vec<_> = (0..k)
        .map(|i| common::random_tensor(device, &[rows, d], 10 + i as u32))
        .collect();
    let refs: Vec<_> = parts.iter().collect();
    let stacked = stack_sources_forward(&refs).expect("stack");
    let energies = common::random_tensor(device, &[rows, k], 20);
    let dout = common::random_tensor(device, &[rows, d], 21);
    let weights = source_attention_forward(&stacked, &energies)
        .expect("forward")
        .weights;

    let mut group = c.benchmark_group("source_attention");
    // Reads X [R, K, d] and e [R, K]; writes out [R, d] and α [R, K].
    group.throughput(Throughput::Bytes(
        f * (rows * k * d + 2 * rows * k + rows * d) as u64,
    ));
    group.bench_function(BenchmarkId::new("forward", &label), |bench| {
        bench.iter(|| {
            let out = source_attention_forward(&stacked, &energies).expect("forward");
            sync();
            out
        })
    });
    // Reads X, α and dout; writes dX and de.
    group.throughput(Throughput::Bytes(
        f * (2 * rows * k * d + 2 * rows * k + rows * d) as u64,
    ));
    group.bench_function(BenchmarkId::new("backward", &label), |bench| {
        bench.iter(|| {
            let grads = source_attention_backward(&stacked, &weights, &dout).expect("backward");
            sync();
            grads
        })
    });
    // Reads the K sources, writes X.
    group.throughput(Throughput::Bytes(f * (2 * rows * k * d) as u64));
    group.bench_function(BenchmarkId::new("stack", &label), |bench| {
        bench.iter(|| {
            let x = stack_sources_forward(&refs).expect("stack");
            sync();
            x
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_device(c, &Device::cpu(), 64 * 20, 2, 32);
    if let Some(gpu) = common::gpu() {
        bench_device(c, &gpu, 2048 * 50, 2, 256);
    }
}

criterion_group!(group, benches);
criterion_main!(group);
