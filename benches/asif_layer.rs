//! Criterion benchmark of one whole ASIF layer (spec §3.2) on the tape, forward and forward plus
//! backward: our side of the GPU check's end-to-end row, against the eager PyTorch layer of
//! `bench/peers/asif_layer.py` at the same sizes and options.
//!
//! The layer is `Model::asif_layer` (exactly the one the model runs): layer 1 of a two-layer ASIF
//! (so, like the peer's, it builds all three streams' output projections, norms and FFNs), with
//! X and F random `[B, n, d]` leaves and P⁰ a random `[n, d]` table leaf (the peer's `(1, n, d)`
//! leaf; its broadcast is inside the timed step, as the peer's `expand`), HIE on (r bases,
//! padding masked, Q constant), training mode: hidden dropout 0.5, attention dropout 0.3, inner
//! size 256, LN eps 1e-12. Forward records the tape (the saved state a backward needs; the peer's
//! forward runs under `no_grad`); forward+backward then backpropagates fixed random gradients
//! of X', F' and P' (the peer: a mean of squares) to every input and parameter.
//!
//! On the CPU reference at the peer's dry-run size (B = 8, n = 12, d = 32, h = 4, r = 4), and on
//! GPU 0 at the paper's (B = 2048, n = 50, d = 256, h = 4, r = 16) when there is one (otherwise
//! one line says it was skipped); each with all n positions valid (`full`) and with short
//! realistic lengths (`short`, geometric with mean about 8, as the peers). Ids are
//! `asif_layer/{forward,forward_backward}/<device> B=<B> lengths <full|short>`, which
//! `bench/summarize.py` matches. Throughput: sequences per second (no floor is defined for a
//! whole layer). `cargo bench --bench asif_layer`.
mod common;

use common::{lengths, random_tensor};

use asif_kernels::autograd::Tape;
use asif_kernels::model::{
    AsifStreams, DataShape, DropoutSeeds, Model, ModelConfig, ModelKind, PositionStream,
};
use asif_kernels::ops::dropout::DropoutMode;
use asif_kernels::{Device, IndexTensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

struct Size {
    batch: usize,
    n: usize,
    d: usize,
    heads: usize,
    rank: usize,
}

fn bench_device(c: &mut Criterion, device: &Device, s: &Size, mode: &str) {
    let config = ModelConfig {
        kind: ModelKind::Asif,
        hidden_size: s.d,
        heads: s.heads,
        layers: 2,
        max_len: s.n,
        inner_size: 256,
        hidden_dropout: 0.5,
        attention_dropout: 0.3,
        hie_rank: s.rank,
        layer_norm_eps: 1e-12,
        ..ModelConfig::default()
    };
    // The layer reads no embedding table: the smallest data shape the model accepts.
    let data = DataShape {
        n_item_ids: 2,
        attribute_vocab: vec![2],
    };
    let model = Model::new(&config, &data, device).expect("model");
    let shape = [s.batch, s.n, s.d];
    let (x, f) = (
        random_tensor(device, &shape, 1),
        random_tensor(device, &shape, 2),
    );
    let table = random_tensor(device, &[s.n, s.d], 3);
    let grads = [4, 5, 6].map(|seed| random_tensor(device, &shape, seed));
    let lengths =
        IndexTensor::from_vec(device, &[s.batch], lengths(mode, s.batch, s.n)).expect("lengths");
    let seeds = DropoutSeeds::new(42, DropoutMode::Train);
    // One layer on a fresh tape: its parameter leaves, the input leaves, the layer's outputs.
    let layer = |tape: &Tape| {
        let vars: Vec<_> = model
            .parameters()
            .iter()
            .map(|p| tape.leaf(p.value.clone()))
            .collect();
        let streams = AsifStreams {
            id: tape.leaf(x.clone()),
            fused: Some(tape.leaf(f.clone())),
            position: Some(
                PositionStream::from_table(tape, &tape.leaf(table.clone()), s.batch).expect("P⁰"),
            ),
        };
        model
            .asif_layer(tape, &vars, 0, &streams, &lengths, &seeds)
            .expect("layer")
    };

    let label = format!("{} B={} lengths {mode}", device.name(), s.batch);
    let mut group = c.benchmark_group("asif_layer");
    group.sample_size(if *device == Device::cpu() { 20 } else { 10 });
    group.throughput(Throughput::Elements(s.batch as u64));
    group.bench_function(BenchmarkId::new("forward", &label), |b| {
        b.iter(|| {
            let tape = Tape::new();
            let out = layer(&tape);
            device.synchronize().expect("sync");
            out
        })
    });
    group.bench_function(BenchmarkId::new("forward_backward", &label), |b| {
        b.iter(|| {
            let tape = Tape::new();
            let out = layer(&tape);
            let fused = out.fused.as_ref().expect("F'");
            let position = &out.position.as_ref().expect("P'").source;
            let [gx, gf, gp] = grads.clone();
            let gradients = tape
                .backward_from(vec![(&out.id, gx), (fused, gf), (position, gp)])
                .expect("backward");
            device.synchronize().expect("sync");
            gradients
        })
    });
    group.finish();
}

fn asif_layer(c: &mut Criterion) {
    // The peer's dry-run size (bench/peers/common.py, DRY).
    let small = Size {
        batch: 8,
        n: 12,
        d: 32,
        heads: 4,
        rank: 4,
    };
    for mode in ["full", "short"] {
        bench_device(c, &Device::cpu(), &small, mode);
    }
    if let Some(gpu) = common::gpu() {
        // The paper's sizes (bench/peers/common.py, PAPER).
        let paper = Size {
            batch: 2048,
            n: 50,
            d: 256,
            heads: 4,
            rank: 16,
        };
        for mode in ["full", "short"] {
            bench_device(c, &gpu, &paper, mode);
        }
    }
}

criterion_group!(benches, asif_layer);
criterion_main!(benches);
