//! Criterion benchmarks of HIE (issue 4): forward, Q-constant backward and full QR backward, with
//! the minimal bytes moved per call as throughput.
//!
//! On the CPU reference at a small size (always), and on GPU 0 at the paper's sizes (B = 2048,
//! n = 50, d = 256, r ∈ {16, 24}) when there is one, with all 50 positions valid ("full") and with
//! realistic lengths ("short": geometric, mean about 8, as `bench/peers/common.py`); otherwise one
//! line says it was skipped. `cargo bench --bench hie`.
//!
//! Ids are `hie/<pass>/<device> <lengths> B.. n.. d.. r..`; `bench/summarize.py` matches
//! `hie/forward/cuda` and `hie/forward_backward/cuda` (forward + full QR backward, as the PyTorch
//! peers, whose H_X and H_A both require grad) with `full`. The GPU rows end in ` kernel v1`,
//! ` kernel v2` and ` kernel v3`: every kernel version (`kernel_version` family "hie") side by
//! side, so one run of `scripts/gpu-check.sh run` times all three (48 rows; the script gives
//! this binary 180 s).
mod common;

use common::{lengths, random_tensor};

use asif_kernels::kernel_version::{self, with_version, KernelVersion};
use asif_kernels::ops::hie::{self, HieBackward, HieOptions};
use asif_kernels::{Device, IndexTensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[allow(clippy::too_many_arguments)]
fn bench_device(
    c: &mut Criterion,
    device: &Device,
    mode: &str,
    batch: usize,
    n: usize,
    d: usize,
    r: usize,
    version: Option<KernelVersion>,
) {
    let mut label = format!("{} {mode} B{batch} n{n} d{d} r{r}", device.name());
    if let Some(version) = version {
        label = format!("{label} kernel {}", version.name());
    }
    let h_x = random_tensor(device, &[batch, n, d], 1);
    let h_a = random_tensor(device, &[batch, n, d], 2);
    let dy = random_tensor(device, &[batch, n, d], 3);
    let w_r = random_tensor(device, &[n, r], 4);
    let lengths =
        IndexTensor::from_vec(device, &[batch], lengths(mode, batch, n)).expect("lengths");
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
    group.bench_function(BenchmarkId::new("backward_q_constant", &label), |b| {
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
    group.bench_function(BenchmarkId::new("backward_full", &label), |b| {
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
    // Forward then the full QR backward (the PyTorch peers' forward+backward).
    group.throughput(Throughput::Bytes(
        3 * sequence + 2 * basis + 2 * triangle + 3 * small + 5 * sequence,
    ));
    group.bench_function(BenchmarkId::new("forward_backward", &label), |b| {
        b.iter(|| {
            let (_, saved) =
                hie::hie_forward(&h_x, &h_a, &w_r, &lengths, options).expect("forward");
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
    bench_device(c, &Device::cpu(), "full", 8, 50, 256, 16, None);
    if let Some(gpu) = common::gpu() {
        for &version in kernel_version::versions(hie::KERNEL_FAMILY) {
            // The op reads the version on this thread at each call, inside criterion's loop.
            with_version(hie::KERNEL_FAMILY, version, || {
                for r in [16, 24] {
                    for mode in ["full", "short"] {
                        bench_device(c, &gpu, mode, 2048, 50, 256, r, Some(version));
                    }
                }
            });
        }
    }
}

criterion_group!(hie_benches, benches);
criterion_main!(hie_benches);
