//! Criterion benchmark of one training step (issue 8): forward, backward and the Adam update of a
//! whole model, for SASRec and ASIF, with samples per second as throughput.
//!
//! On the CPU reference at the train example's small size (B 128, d 32, L 2, h 2, n 20) and on
//! GPU 0 at the paper's size (B 2048, d 256, L 3, h 4, n 50, ml-100k's 1,350 item ids and 20
//! genre ids) when there is one; otherwise one line says it was skipped.
//! `cargo bench --bench train_step`. Ids: `train_step/<model>/<device> B.. d.. L.. n..`.
mod common;

use asif_kernels::autograd::Tape;
use asif_kernels::model::{DataShape, Mode, Model, ModelConfig, ModelInputs, ModelKind};
use asif_kernels::ops::adam::{Adam, AdamConfig};
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

fn bench_device(c: &mut Criterion, device: &Device, s: &Size) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(s.batch as u64));
    let batch = inputs(device, s);
    for kind in [ModelKind::SasRec, ModelKind::Asif] {
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
        let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
        let mut step = 0u64;
        let label = format!(
            "{} B{} d{} L{} n{}",
            device.name(),
            s.batch,
            s.d,
            s.layers,
            s.n
        );
        group.bench_function(BenchmarkId::new(kind.name(), &label), |b| {
            b.iter(|| {
                let tape = Tape::new();
                let pass = model
                    .forward(&tape, &batch, Mode::Train { step })
                    .expect("forward");
                let grads = pass.backward(&tape).expect("backward");
                let mut params = model.tensors();
                adam.step(&mut params, &grads).expect("adam");
                model.set_tensors(params).expect("set");
                device.synchronize().expect("sync");
                step += 1;
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
    bench_device(c, &Device::cpu(), &small);
    if let Some(gpu) = common::gpu() {
        let paper = Size {
            batch: 2048,
            d: 256,
            layers: 3,
            heads: 4,
            n: 50,
            items: 1350,
            genres: 20,
        };
        bench_device(c, &gpu, &paper);
    }
}

criterion_group!(train_step_benches, benches);
criterion_main!(train_step_benches);
