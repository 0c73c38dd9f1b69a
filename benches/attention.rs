//! Criterion benchmarks of the fused dual-score attention (ASIF mode: two score pairs, O_X, O_A,
//! O_P), forward and backward, with the minimal bytes moved per call as throughput (the floor of
//! perf-floors.md: forward reads Q1, K1, Q2, K2, V1, V2, V3 and writes three outputs; backward
//! reads the seven inputs and three output gradients and writes seven gradients).
//!
//! On the CPU reference at a small size (B = 8) always, and on GPU 0 at the paper's sizes
//! (B = 2048, n = 50, d = 256, h = 4) when there is one, with all 50 positions valid (`full`) and
//! with short realistic lengths (`short`: geometric with mean 8, clipped to [1, n], as the PyTorch
//! peers in bench/peers/common.py draw them); otherwise one line says it was skipped. Ids are
//! `attention/{forward,backward,forward_backward}/<device> B=<B> lengths <full|short>`, with
//! ` kernel v1` and ` kernel v2` on the GPU rows: both kernel versions side by side
//! (`kernel_version`; v2 is the tensor-core forward and the one-pass backward), so one run of
//! `scripts/gpu-check.sh run` measures both; bench/summarize.py matches the ids and takes the
//! faster. Dropout 0.2 (the training setting). `cargo bench --bench attention`.
mod common;

use common::{lengths, random_tensor};

use asif_kernels::kernel_version::{with_version, KernelVersion};
use asif_kernels::ops::attention::{
    attention_backward, attention_forward, AttentionConfig, AttentionInputs, OutputGradients,
    ScorePair, KERNEL_FAMILY,
};
use asif_kernels::{Device, IndexTensor, Precision};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SEQ_LEN: usize = 50;
const WIDTH: usize = 256;
const HEADS: usize = 4;

fn bench_device(
    c: &mut Criterion,
    device: &Device,
    batch: usize,
    lengths_label: &str,
    lengths: Vec<i32>,
    version: Option<KernelVersion>,
) {
    let mut label = format!("{} B={batch} lengths {lengths_label}", device.name());
    if let Some(version) = version {
        label = format!("{label} kernel {}", version.name());
    }
    let shape = [batch, SEQ_LEN, WIDTH];
    let t = |seed: u32| random_tensor(device, &shape, seed);
    let inputs = AttentionInputs {
        score_pairs: vec![
            ScorePair {
                query: t(1),
                key: t(2),
            },
            ScorePair {
                query: t(3),
                key: t(4),
            },
        ],
        id_values: t(5),
        fused_values: Some(t(6)),
        position_values: Some(t(7)),
    };
    let lengths = IndexTensor::from_vec(device, &[batch], lengths).expect("lengths");
    let config = AttentionConfig {
        heads: HEADS,
        dropout: 0.2,
        seed: 42,
        precision: Precision::Fp32,
    };
    let tensor_bytes = (batch * SEQ_LEN * WIDTH * 4) as u64;

    let mut group = c.benchmark_group("attention");
    if *device == Device::cpu() {
        group.sample_size(20);
    }
    group.throughput(Throughput::Bytes(10 * tensor_bytes));
    group.bench_function(BenchmarkId::new("forward", &label), |b| {
        b.iter(|| {
            let out = attention_forward(&inputs, &lengths, &config).expect("forward");
            device.synchronize().expect("sync");
            out
        })
    });
    let (_, saved) = attention_forward(&inputs, &lengths, &config).expect("forward");
    let (gx, ga, gp) = (t(8), t(9), t(10));
    let grads = OutputGradients {
        id: Some(&gx),
        fused: Some(&ga),
        position: Some(&gp),
    };
    group.throughput(Throughput::Bytes(17 * tensor_bytes));
    group.bench_function(BenchmarkId::new("backward", &label), |b| {
        b.iter(|| {
            let out =
                attention_backward(&inputs, &lengths, &config, &saved, &grads).expect("backward");
            device.synchronize().expect("sync");
            out
        })
    });
    group.throughput(Throughput::Bytes(27 * tensor_bytes));
    group.bench_function(BenchmarkId::new("forward_backward", &label), |b| {
        b.iter(|| {
            let (_, saved) = attention_forward(&inputs, &lengths, &config).expect("forward");
            let out =
                attention_backward(&inputs, &lengths, &config, &saved, &grads).expect("backward");
            device.synchronize().expect("sync");
            out
        })
    });
    group.finish();
}

fn attention(c: &mut Criterion) {
    bench_device(c, &Device::cpu(), 8, "full", vec![SEQ_LEN as i32; 8], None);
    if let Some(gpu) = common::gpu() {
        let batch = 2048;
        for version in [KernelVersion::V1, KernelVersion::V2] {
            // The op reads the version on this thread at each call, inside criterion's loop.
            with_version(KERNEL_FAMILY, version, || {
                let full = vec![SEQ_LEN as i32; batch];
                bench_device(c, &gpu, batch, "full", full, Some(version));
                let short = lengths("short", batch, SEQ_LEN);
                bench_device(c, &gpu, batch, "short", short, Some(version));
            });
        }
    }
}

criterion_group!(benches, attention);
criterion_main!(benches);
