//! The CPU path's threads (issue 23, `src/parallel.rs`): results do not depend on the thread
//! count. A short training run of SASRec and of ASIF (every threaded op: GEMM tiles and k slices,
//! attention per sequence with a shared position input, HIE, the contrastive loss, layer norm,
//! cross-entropy, the elementwise ops, Adam) ends bit-identical with 1, 2 and 4 threads, and the
//! threaded GEMM paths are bit-identical across thread counts and close to the f64 reference.
//! Each run installs its own rayon pool, so the test does not depend on `RAYON_NUM_THREADS`.
use std::path::Path;

use asif_kernels::checkpoint::SafetensorsFile;
use asif_kernels::data::{Dataset, SyntheticConfig};
use asif_kernels::model::{data_shape, Model, ModelConfig, ModelKind};
use asif_kernels::ops::linear::{
    linear_backward, linear_forward, matmul_transposed_backward, matmul_transposed_forward,
    reference,
};
use asif_kernels::train::{train, Outcome, RunOptions, TrainConfig, TrainResults};
use asif_kernels::{Device, Tensor};

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| {
            let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 2001;
            h as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Every product of a linear layer and of the prediction layer at three sizes: one call (small),
/// output tiles (a wide output), and slices of k added in order (a weight gradient over many
/// rows). Run under `threads` threads; the results as bits.
fn products(threads: usize) -> Vec<Vec<u32>> {
    let device = Device::cpu();
    let mut out = Vec::new();
    pool(threads).install(|| {
        for (rows, d_in, d_out) in [(6, 5, 7), (300, 64, 600), (9000, 24, 16)] {
            let x = Tensor::from_vec(&device, &[rows, d_in], values(rows * d_in, 1)).unwrap();
            let w = Tensor::from_vec(&device, &[d_in, d_out], values(d_in * d_out, 2)).unwrap();
            let b = Tensor::from_vec(&device, &[d_out], values(d_out, 3)).unwrap();
            let dy = Tensor::from_vec(&device, &[rows, d_out], values(rows * d_out, 4)).unwrap();
            let y = linear_forward(&x, &w, Some(&b)).unwrap();
            let grads = linear_backward(&x, &w, &dy, true).unwrap();
            out.extend([
                bits(&y),
                bits(&grads.dx),
                bits(&grads.dweight),
                bits(&grads.dbias.unwrap()),
            ]);
            // Prediction layer shapes: u [rows, d_in], table [d_out, d_in].
            let table = Tensor::from_vec(&device, &[d_out, d_in], values(d_out * d_in, 5)).unwrap();
            let logits = matmul_transposed_forward(&x, &table).unwrap();
            let (du, dtable) = matmul_transposed_backward(&x, &table, &dy, 1.0).unwrap();
            out.extend([bits(&logits), bits(&du), bits(&dtable)]);
        }
    });
    out
}

#[test]
fn threaded_products_are_bit_identical_for_every_thread_count_and_match_the_reference() {
    let one = products(1);
    let three = products(3);
    assert_eq!(one.len(), three.len());
    for (k, (a, b)) in one.iter().zip(&three).enumerate() {
        assert!(a == b, "product {k} differs between 1 and 3 threads");
    }
    // Against the f64 reference: the weight gradient over 9000 rows (the k-sliced path).
    let (rows, d_in, d_out) = (9000, 24, 16);
    let to64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    let (x, w, dy) = (
        to64(values(rows * d_in, 1)),
        to64(values(d_in * d_out, 2)),
        to64(values(rows * d_out, 4)),
    );
    let (_, dw_reference, _) = reference::linear_backward(&x, &w, &dy, d_in, d_out);
    // products(1) pushes y, dx, dw, db, logits, du, dtable per size: size 3's dw is index 16.
    let dw: Vec<f32> = one[7 + 7 + 2].iter().map(|&b| f32::from_bits(b)).collect();
    for (k, (&got, &want)) in dw.iter().zip(&dw_reference).enumerate() {
        let tolerance = 1e-4 * (1.0 + want.abs()) * (rows as f64).sqrt();
        assert!(
            (got as f64 - want).abs() <= tolerance,
            "dW[{k}] = {got}, reference {want}"
        );
    }
}

fn synthetic(dir: &Path) -> Dataset {
    let cfg = SyntheticConfig {
        n_users: 80,
        n_categories: 4,
        active_per_category: 8,
        churn_per_period: 1,
        n_periods: 6,
        min_len: 10,
        max_len: 30,
        ..SyntheticConfig::default()
    };
    Dataset::synthetic(&cfg, dir).unwrap()
}

/// Sized so every threaded path runs: 128 × 40 = 5120 rows give the k-sliced weight gradients,
/// a batch of 128 sequences several units per op.
fn model(kind: ModelKind) -> ModelConfig {
    ModelConfig {
        kind,
        hidden_size: 16,
        heads: 2,
        layers: 1,
        max_len: 40,
        inner_size: 16,
        hidden_dropout: 0.2,
        attention_dropout: 0.1,
        rsa_lambda: 1.0,
        hie_rank: 4,
        attribute_width: 2,
        seed: 3,
        ..ModelConfig::default()
    }
}

fn tensors_of(path: &Path, model: &Model) -> Vec<Vec<u32>> {
    let file = SafetensorsFile::read(path).unwrap();
    let mut out = Vec::new();
    for p in model.parameters() {
        let values = file.tensor(&p.name, p.value.shape()).unwrap();
        out.push(values.iter().map(|v| v.to_bits()).collect());
    }
    let total = model.n_scalars();
    for name in ["adam.first_moment", "adam.second_moment"] {
        let values = file.tensor(name, &[total]).unwrap();
        out.push(values.iter().map(|v| v.to_bits()).collect());
    }
    out
}

/// Two epochs of three batches each under `threads` threads: the results and the checkpoint's
/// parameters and Adam moments as bits.
fn run(dataset: &Dataset, config: &ModelConfig, threads: usize) -> (TrainResults, Vec<Vec<u32>>) {
    let dir = tempfile::tempdir().unwrap();
    let train_config = TrainConfig {
        epochs: 2,
        batch_size: 128,
        eval_batch_size: 128,
        learning_rate: 3e-3,
        patience: 10,
        seed: 7,
        ..TrainConfig::default()
    };
    let options = RunOptions {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        max_batches_per_epoch: Some(3),
        ..RunOptions::default()
    };
    let outcome = pool(threads)
        .install(|| train(dataset, config, &train_config, &Device::cpu(), &options))
        .unwrap();
    let Outcome::Finished(results) = outcome else {
        panic!("expected a finished run, got {outcome:?}");
    };
    let model = Model::new(config, &data_shape(dataset), &Device::cpu()).unwrap();
    (
        *results,
        tensors_of(&dir.path().join("last.safetensors"), &model),
    )
}

#[test]
fn a_training_run_is_bit_identical_with_one_two_and_four_threads() {
    let data_dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(data_dir.path());
    assert!(
        dataset.leave_one_out().train.len() >= 384,
        "three full batches of 128"
    );
    for kind in [ModelKind::SasRec, ModelKind::Asif] {
        let config = model(kind);
        let (one, one_tensors) = run(&dataset, &config, 1);
        // Two and four threads: a sum taken in completion order differs with some schedules only,
        // so more threads and steps give it more chances to show.
        for threads in [2, 4] {
            let (many, many_tensors) = run(&dataset, &config, threads);
            for (a, b) in one.epochs.iter().zip(&many.epochs) {
                assert_eq!(
                    a.train_loss.to_bits(),
                    b.train_loss.to_bits(),
                    "{kind}: epoch {} loss with 1 and {threads} threads",
                    a.epoch
                );
                assert_eq!(a.valid, b.valid, "{kind}: epoch {}", a.epoch);
            }
            assert_eq!(one.test, many.test, "{kind}: 1 and {threads} threads");
            assert!(
                one_tensors == many_tensors,
                "{kind}: parameters or Adam moments differ between 1 and {threads} threads"
            );
        }
    }
}

fn values64(len: usize, seed: u32) -> Vec<f64> {
    values(len, seed).into_iter().map(f64::from).collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
            "{what}[{k}]: threaded {g}, reference {w}"
        );
    }
}

/// The threaded functions beside the f64 references, against them, under 3 threads: attention
/// with a shared (position) pair, whose gradient is summed from per-sequence partials; HIE with
/// the full QR backward (dW_r summed over sequences); the contrastive loss (∂/∂s summed).
#[test]
fn threaded_references_match_the_serial_references() {
    use asif_kernels::ops::attention::reference as attention;
    use asif_kernels::ops::contrastive::{reference as contrastive, ContrastiveReduction};
    use asif_kernels::ops::hie::reference as hie;
    pool(3).install(|| {
        let (batch, n, heads, head_dim) = (5, 6, 2, 3);
        let d = heads * head_dim;
        let lengths = [6, 1, 4, 0, 5];
        let (q1, k1, v1) = (
            values64(batch * n * d, 11),
            values64(batch * n * d, 12),
            values64(batch * n * d, 13),
        );
        let (q2, k2, v3) = (
            values64(n * d, 14),
            values64(n * d, 15),
            values64(n * d, 16),
        );
        let problem = attention::Problem {
            geometry: attention::Geometry {
                batch,
                seq_len: n,
                heads,
                head_dim,
            },
            lengths: &lengths,
            pairs: vec![
                (
                    attention::Matrix::per_sequence(&q1),
                    attention::Matrix::per_sequence(&k1),
                ),
                (
                    attention::Matrix::shared(&q2),
                    attention::Matrix::shared(&k2),
                ),
            ],
            values: [
                Some(attention::Matrix::per_sequence(&v1)),
                Some(attention::Matrix::per_sequence(&k1)),
                Some(attention::Matrix::shared(&v3)),
            ],
            dropout: 0.3,
            seed: 9,
        };
        let serial = attention::forward(&problem);
        let threaded = attention::forward_threaded(&problem);
        for s in 0..3 {
            assert_close(
                "attention output",
                threaded.outputs[s].as_ref().unwrap(),
                serial.outputs[s].as_ref().unwrap(),
            );
        }
        assert_close("log-sum-exp", &threaded.log_sum_exp, &serial.log_sum_exp);
        let upstream: Vec<Vec<f64>> = (0..3).map(|s| values64(batch * n * d, 20 + s)).collect();
        let grads = [
            Some(upstream[0].as_slice()),
            Some(upstream[1].as_slice()),
            Some(upstream[2].as_slice()),
        ];
        let serial = attention::backward(&problem, &serial, grads);
        let threaded = attention::backward_threaded(&problem, &threaded, grads);
        for (k, ((tq, tk), (sq, sk))) in threaded.pairs.iter().zip(&serial.pairs).enumerate() {
            assert_close(&format!("dQ{k}"), tq, sq);
            assert_close(&format!("dK{k}"), tk, sk);
        }
        for s in 0..3 {
            assert_close(
                "dV",
                threaded.values[s].as_ref().unwrap(),
                serial.values[s].as_ref().unwrap(),
            );
        }

        let (r, dims) = (3, hie::Dims { batch, n, d, r: 3 });
        let (h_x, h_a, w_r, dy) = (
            values64(batch * n * d, 31),
            values64(batch * n * d, 32),
            values64(n * r, 33),
            values64(batch * n * d, 34),
        );
        let serial = hie::forward(&h_x, &h_a, &w_r, &lengths, dims, false, 1e-6);
        let threaded = hie::forward_threaded(&h_x, &h_a, &w_r, &lengths, dims, false, 1e-6);
        assert_close("h_A*", &threaded.output, &serial.output);
        let serial = hie::backward(&h_x, &h_a, &w_r, &lengths, &serial, &dy, dims, false, true);
        let threaded = hie::backward_threaded(
            &h_x, &h_a, &w_r, &lengths, &threaded, &dy, dims, false, true,
        );
        assert_close("dH_A", &threaded.dh_a, &serial.dh_a);
        assert_close("dH_X", &threaded.dh_x, &serial.dh_x);
        assert_close("dW_r", &threaded.dw_r, &serial.dw_r);

        let reduction = ContrastiveReduction::MeanPerSequence;
        let serial =
            contrastive::forward_backward(&h_x, &h_a, &lengths, None, 1.5, n, d, reduction, 0.7);
        let threaded = contrastive::forward_backward_threaded(
            &h_x, &h_a, &lengths, None, 1.5, n, d, reduction, 0.7,
        );
        assert_close("L_co", &[threaded.loss], &[serial.loss]);
        assert_close("dX", &threaded.dx, &serial.dx);
        assert_close("dA", &threaded.da, &serial.da);
        assert_close("ds", &[threaded.ds], &[serial.ds]);
    });
}
