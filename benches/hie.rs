//! Criterion benchmarks of HIE (issue 4): forward, Q-constant backward and full QR backward, with
//! the minimal bytes moved per call as throughput.
//!
//! On the CPU reference at a small size (always), and on GPU 0 at the paper's sizes (B = 2048,
//! n = 50, d = 256, r ∈ {16, 24}, all sequences full length) when there is one; otherwise one line
//! says it was skipped. `cargo bench --bench hie`.
use std::io::Write;

use asif_kernels::ops::hie::{self, HieBackward, HieOptions};
use asif_kernels::{Device, IndexTensor, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn random_tensor(device: &Device, shape: &[usize], seed: u32) -> Tensor {
    // A cheap deterministic pattern that is neither zeros nor constant.
    let len: usize = shape.iter().product();
    let values = (0..len)
        .map(|i| {
            (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0)
                * 2.0
                - 1.0
        })
        .collect();
    Tensor::from_vec(device, shape, values).expect("tensor")
}

fn bench_device(c: &mut Criterion, device: &Device, batch: usize, n: usize, d: usize, r: usize) {
    let label = format!("{} B{batch} n{n} d{d} r{r}", device.name());
    let h_x = random_tensor(device, &[batch, n, d], 1);
    let h_a = random_tensor(device, &[batch, n, d], 2);
    let dy = random_tensor(device, &[batch, n, d], 3);
    let w_r = random_tensor(device, &[n, r], 4);
    let lengths = IndexTensor::from_vec(device, &[batch], vec![n as i32; batch]).expect("lengths");
    let options = HieOptions::default();
    let sequence = (batch * n * d * 4) as u64;
    let basis = (batch * d * r * 4) as u64;
    let small = (batch * n * r * 4) as u64;
    let triangle = (batch * r * r * 4) as u64;

    let mut group = c.benchmark_group("hie");
    // Reads H_X, H_A; writes h_A*, Q, R, φ.
    group.throughput(Throughput::Bytes(3 * sequence + basis + triangle + small));
    group.bench_function(BenchmarkId::new("forward", &label), |b| {
        b.iter(|| {
            let out = hie::hie_forward(&h_x, &h_a, &w_r, &lengths, options).expect("forward");
            device.synchronize().expect("sync");
            out
        })
    });
    let (_, saved) = hie::hie_forward(&h_x, &h_a, &w_r, &lengths, options).expect("forward");
    // Reads dh, Q, φ; writes dH_A.
    group.throughput(Throughput::Bytes(2 * sequence + basis + small));
    group.bench_function(BenchmarkId::new("backward Q constant", &label), |b| {
        b.iter(|| {
            let out = hie::hie_backward(
                &h_x,
                &h_a,
                &w_r,
                &lengths,
                &saved,
                &dy,
                options,
                HieBackward::QConstant,
            )
            .expect("backward");
            device.synchronize().expect("sync");
            out
        })
    });
    // Reads H_X, H_A, dh, Q, R, φ; writes dH_A, dH_X and the per-sequence dW_r shares.
    group.throughput(Throughput::Bytes(
        5 * sequence + basis + triangle + 2 * small,
    ));
    group.bench_function(BenchmarkId::new("backward full QR", &label), |b| {
        b.iter(|| {
            let out = hie::hie_backward(
                &h_x,
                &h_a,
                &w_r,
                &lengths,
                &saved,
                &dy,
                options,
                HieBackward::FullQr,
            )
            .expect("backward");
            device.synchronize().expect("sync");
            out
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_device(c, &Device::cpu(), 8, 50, 256, 16);
    match Device::cuda(0) {
        Ok(gpu) => {
            for r in [16, 24] {
                bench_device(c, &gpu, 2048, 50, 256, r);
            }
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED GPU benchmarks: {e}");
        }
    }
}

criterion_group!(hie_benches, benches);
criterion_main!(hie_benches);
