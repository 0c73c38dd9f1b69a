//! Criterion benchmark of the fused RSA contrastive loss (forward + backward in one kernel pass),
//! with the minimal bytes per call as throughput: read x and a, write dx and da (4 · B·n·d·4 B).
//!
//! On the CPU reference at a small size (always), and on GPU 0 at the paper's size (B = 2048,
//! n = 50, d = 256) when there is one, with every sequence full ("full") and with realistic
//! lengths ("short": geometric with mean about 8, clipped to 1..=n, as `bench/peers/common.py`);
//! the kernel skips padding, so the short row should be faster. Otherwise one line says the GPU
//! rows were skipped. Ids are `contrastive/forward_backward/<device> B.. n.. d.. <lengths>`, the
//! names `bench/summarize.py` looks for, with ` kernel v1` and ` kernel v2` on the GPU rows: both
//! kernel versions side by side (`kernel_version`; v2 runs the three products on tensor cores), so
//! one run of `scripts/gpu-check.sh run` times both. `cargo bench --bench contrastive`.
mod common;

use common::{lengths, random_tensor};

use asif_kernels::kernel_version::{with_version, KernelVersion};
use asif_kernels::ops::contrastive::{
    contrastive_loss_forward_backward, initial_logit_scale, ContrastiveReduction, KERNEL_FAMILY,
};
use asif_kernels::{Device, IndexTensor, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench_device(
    c: &mut Criterion,
    device: &Device,
    batch: usize,
    n: usize,
    d: usize,
    version: Option<KernelVersion>,
) {
    let label = match version {
        Some(version) => format!("{} kernel {}", device.name(), version.name()),
        None => device.name(),
    };
    let x = random_tensor(device, &[batch, n, d], 1);
    let a = random_tensor(device, &[batch, n, d], 2);
    let s = Tensor::from_vec(device, &[1], vec![initial_logit_scale()]).expect("s");
    let full = IndexTensor::from_vec(device, &[batch], vec![n as i32; batch]).expect("lengths");
    let short =
        IndexTensor::from_vec(device, &[batch], lengths("short", batch, n)).expect("lengths");
    let bytes = (4 * batch * n * d * 4) as u64;

    let mut group = c.benchmark_group("contrastive");
    group.throughput(Throughput::Bytes(bytes));
    for (name, lengths) in [("full", &full), ("short", &short)] {
        group.bench_function(
            BenchmarkId::new(
                "forward_backward",
                format!("{label} B{batch} n{n} d{d} {name}"),
            ),
            |bencher| {
                bencher.iter(|| {
                    let out = contrastive_loss_forward_backward(
                        &x,
                        &a,
                        lengths,
                        &s,
                        None,
                        ContrastiveReduction::MeanPerSequence,
                        1.0,
                    )
                    .expect("contrastive loss");
                    device.synchronize().expect("sync");
                    out
                })
            },
        );
    }
    group.finish();
}

fn contrastive(c: &mut Criterion) {
    bench_device(c, &Device::cpu(), 32, 50, 64, None);
    if let Some(gpu) = common::gpu() {
        for version in [KernelVersion::V1, KernelVersion::V2] {
            // The op reads the version on this thread at each call, inside criterion's loop.
            with_version(KERNEL_FAMILY, version, || {
                bench_device(c, &gpu, 2048, 50, 256, Some(version))
            });
        }
    }
}

criterion_group!(benches, contrastive);
criterion_main!(benches);
