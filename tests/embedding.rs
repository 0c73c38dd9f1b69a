//! Embedding lookup and pooled multi-token attributes: tier 1 (f64 finite differences of the
//! reference), tiers 2 and 4 (every device against the f64 reference on odd sizes), the tape.
mod common;

use asif_kernels::autograd::gradcheck::check_gradient;
use asif_kernels::autograd::Tape;
use asif_kernels::ops::embedding::{self, Pooling};
use asif_kernels::ops::input_embedding;
use asif_kernels::{kernel_version, Device, Error, IndexTensor};
use common::{
    all_devices, assert_close, for_each_version, gradcheck_options, random, rng, tensor, weighted,
};
use rand::Rng;

/// The kernel family both versions of which every device test runs (`kernel_version`).
const FAMILY: &str = "embedding";
/// The ops' names in their errors.
const OP: &str = "embedding";
const POOLED: &str = "pooled_embedding";

/// Sums of a handful of fp32 terms; v1's atomics may add them in any order.
const TOLERANCE: f64 = 1e-6;

/// Ids with duplicates and pads.
fn ids(rng: &mut rand::rngs::StdRng, len: usize, vocab: usize) -> Vec<i32> {
    (0..len)
        .map(|_| rng.random_range(0..vocab as i32))
        .collect()
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let mut rng = rng(200);
    let (vocab, dim) = (6usize, 3usize);
    // Duplicates (2 three times), the pad id 0 twice.
    let id_values = vec![2, 0, 5, 2, 1, 0, 2];
    let table = random(&mut rng, vocab * dim, 0.0, 1.0);
    let w = random(&mut rng, id_values.len() * dim, 0.0, 1.0);
    let analytic = embedding::backward_reference(&id_values, &w, vocab, dim);
    let f = |p: &[f64]| weighted(&embedding::forward_reference(p, &id_values, dim), &w);
    // The pad row is read by the forward but gets no gradient by design: check the other rows.
    let numeric = asif_kernels::autograd::gradcheck::finite_difference_gradient(f, &table, 1e-5);
    assert!(
        analytic[..dim].iter().all(|&g| g == 0.0),
        "the pad row must get no gradient"
    );
    for i in dim..vocab * dim {
        assert!(
            (analytic[i] - numeric[i]).abs() <= 1e-8 + 1e-6 * numeric[i].abs(),
            "entry {i}: {} vs {}",
            analytic[i],
            numeric[i]
        );
    }
    // Row 2 occurs three times: its gradient is the sum of three rows of w.
    for c in 0..dim {
        let want = w[dim + c] * 0.0 + w[c] + w[3 * dim + c] + w[6 * dim + c];
        assert!((analytic[2 * dim + c] - want).abs() < 1e-12);
    }
}

#[test]
fn pooled_backward_matches_finite_differences() {
    let mut rng = rng(201);
    let (vocab, dim, max_tokens) = (7usize, 4usize, 3usize);
    // Rows: two tokens, a duplicate token, no tokens (pools to zero), one token.
    let tokens = vec![1, 3, 0, 2, 2, 5, 0, 0, 0, 6, 0, 0];
    let table = random(&mut rng, vocab * dim, 0.0, 1.0);
    let w = random(&mut rng, 4 * dim, 0.0, 1.0);
    for mean in [false, true] {
        let analytic =
            embedding::pooled_backward_reference(&tokens, &w, max_tokens, vocab, dim, mean);
        let f = |p: &[f64]| {
            weighted(
                &embedding::pooled_forward_reference(p, &tokens, max_tokens, dim, mean),
                &w,
            )
        };
        check_gradient(f, &table, &analytic, gradcheck_options())
            .unwrap_or_else(|e| panic!("mean {mean}: {e}"));
        let pooled = embedding::pooled_forward_reference(&table, &tokens, max_tokens, dim, mean);
        assert!(
            pooled[2 * dim..3 * dim].iter().all(|&v| v == 0.0),
            "a row without tokens pools to zero"
        );
    }
}

#[test]
fn embedding_matches_reference_on_every_device() {
    for_each_version(&[FAMILY], |_| {
        let mut rng = rng(202);
        for device in all_devices() {
            for &(batch, n, vocab, dim) in &[
                (1usize, 1usize, 1usize, 1usize),
                (3, 7, 13, 33),
                (5, 11, 4, 64),
            ] {
                let table = random(&mut rng, vocab * dim, 0.0, 1.0);
                let id_values = ids(&mut rng, batch * n, vocab);
                let dout = random(&mut rng, batch * n * dim, 0.0, 1.0);
                let table_t = tensor(&device, &[vocab, dim], &table);
                let ids_t = IndexTensor::from_vec(&device, &[batch, n], id_values.clone()).unwrap();
                let out = embedding::embedding_forward(&table_t, &ids_t).expect("forward");
                assert_eq!(out.shape(), &[batch, n, dim]);
                let what = |s: &str| format!("embedding {s} [{batch}, {n}] vocab {vocab} d {dim}");
                assert_close(
                    &what("out"),
                    &device,
                    &out,
                    &embedding::forward_reference(&table, &id_values, dim),
                    TOLERANCE,
                );
                let dtable = embedding::embedding_backward(
                    &ids_t,
                    &tensor(&device, &[batch, n, dim], &dout),
                    vocab,
                )
                .expect("backward");
                assert_close(
                    &what("dE"),
                    &device,
                    &dtable,
                    &embedding::backward_reference(&id_values, &dout, vocab, dim),
                    TOLERANCE,
                );
                assert!(
                    dtable.to_vec().unwrap()[..dim].iter().all(|&g| g == 0.0),
                    "pad row gradient on {}",
                    device.name()
                );
            }
        }
    });
}

#[test]
fn pooled_embedding_matches_reference_on_every_device() {
    for_each_version(&[FAMILY], |_| {
        let mut rng = rng(203);
        for device in all_devices() {
            for &(rows, max_tokens, vocab, dim) in &[
                (1usize, 1usize, 2usize, 1usize),
                (13, 3, 19, 33),
                (31, 6, 5, 17),
            ] {
                let table = random(&mut rng, vocab * dim, 0.0, 1.0);
                // Many pads, so some rows have no tokens at all.
                let tokens: Vec<i32> = (0..rows * max_tokens)
                    .map(|_| {
                        if rng.random::<f64>() < 0.4 {
                            0
                        } else {
                            rng.random_range(0..vocab as i32)
                        }
                    })
                    .collect();
                let dout = random(&mut rng, rows * dim, 0.0, 1.0);
                let table_t = tensor(&device, &[vocab, dim], &table);
                let tokens_t =
                    IndexTensor::from_vec(&device, &[rows, max_tokens], tokens.clone()).unwrap();
                for (pooling, mean) in [(Pooling::Sum, false), (Pooling::Mean, true)] {
                    let what = |s: &str| {
                        format!(
                            "pooled {pooling:?} {s} rows {rows} k {max_tokens} vocab {vocab} d {dim}"
                        )
                    };
                    let out = embedding::pooled_embedding_forward(&table_t, &tokens_t, pooling)
                        .expect("forward");
                    assert_eq!(out.shape(), &[rows, dim]);
                    assert_close(
                        &what("out"),
                        &device,
                        &out,
                        &embedding::pooled_forward_reference(
                            &table, &tokens, max_tokens, dim, mean,
                        ),
                        TOLERANCE,
                    );
                    let dtable = embedding::pooled_embedding_backward(
                        &tokens_t,
                        &tensor(&device, &[rows, dim], &dout),
                        vocab,
                        pooling,
                    )
                    .expect("backward");
                    assert_close(
                        &what("dE"),
                        &device,
                        &dtable,
                        &embedding::pooled_backward_reference(
                            &tokens, &dout, max_tokens, vocab, dim, mean,
                        ),
                        TOLERANCE,
                    );
                }
            }
        }
    });
}

#[test]
fn tape_sums_item_and_attribute_embeddings() {
    for_each_version(&[FAMILY], |_| {
        // F⁰'s 𝓕_sum = E_X[s] + Σ_j A_j[s] (spec §3.1), with the item's genres pooled by sum.
        let mut rng = rng(204);
        let (positions, vocab, genres, dim, max_tokens) = (9usize, 8usize, 5usize, 6usize, 3usize);
        let items = random(&mut rng, vocab * dim, 0.0, 1.0);
        let genre_table = random(&mut rng, genres * dim, 0.0, 1.0);
        let id_values = ids(&mut rng, positions, vocab);
        let tokens: Vec<i32> = (0..positions * max_tokens)
            .map(|_| rng.random_range(0..genres as i32))
            .collect();
        let seed = random(&mut rng, positions * dim, 0.0, 1.0);
        let want_items = embedding::backward_reference(&id_values, &seed, vocab, dim);
        let want_genres =
            embedding::pooled_backward_reference(&tokens, &seed, max_tokens, genres, dim, false);
        for device in all_devices() {
            let tape = Tape::new();
            let items_var = tape.leaf(tensor(&device, &[vocab, dim], &items));
            let genres_var = tape.leaf(tensor(&device, &[genres, dim], &genre_table));
            let ids_t = IndexTensor::from_vec(&device, &[positions], id_values.clone()).unwrap();
            let tokens_t =
                IndexTensor::from_vec(&device, &[positions, max_tokens], tokens.clone()).unwrap();
            let x = embedding::embedding(&tape, &items_var, &ids_t).expect("lookup");
            let a = embedding::pooled_embedding(&tape, &genres_var, &tokens_t, Pooling::Sum)
                .expect("pool");
            let fused = asif_kernels::ops::add::add(&tape, &x, &a).expect("add");
            let grads = tape
                .backward(&fused, tensor(&device, &[positions, dim], &seed))
                .expect("backward");
            assert_close(
                "dE_X",
                &device,
                grads.get(&items_var).unwrap(),
                &want_items,
                TOLERANCE,
            );
            assert_close(
                "dE_A",
                &device,
                grads.get(&genres_var).unwrap(),
                &want_genres,
                TOLERANCE,
            );
        }
    });
}

#[test]
fn out_of_range_ids_are_typed_errors_on_host_devices() {
    for_each_version(&[FAMILY], |_| {
        for device in [Device::cpu(), common::emulated()] {
            let table = tensor(&device, &[4, 2], &[0.0; 8]);
            let bad = IndexTensor::from_vec(&device, &[2], vec![1, 4]).unwrap();
            assert!(matches!(
                embedding::embedding_forward(&table, &bad),
                Err(Error::Argument { .. })
            ));
            let negative = IndexTensor::from_vec(&device, &[1, 2], vec![-1, 0]).unwrap();
            assert!(matches!(
                embedding::pooled_embedding_forward(&table, &negative, Pooling::Sum),
                Err(Error::Argument { .. })
            ));
        }
    });
}

#[test]
fn bad_shapes_are_refused_one_by_one() {
    // Each refusal by its own message (cargo-mutants, issue 16: the table check's clauses and
    // the backward's `vocab == 0` were each unseen). The CPU device: the checks run before any
    // device dispatch.
    let device = Device::cpu();
    let refused = |result: asif_kernels::Result<asif_kernels::Tensor>, message: &str| {
        let error = result.expect_err(message);
        assert!(matches!(error, Error::Shape { op: OP, .. }), "{error:?}");
        assert_eq!(error.to_string(), format!("{OP}: bad shape: {message}"));
    };
    let ids = IndexTensor::from_vec(&device, &[2], vec![0, 1]).unwrap();
    for shape in [vec![0usize, 3], vec![3, 0], vec![3]] {
        let table = tensor(&device, &shape, &vec![0.0; shape.iter().product()]);
        refused(
            embedding::embedding_forward(&table, &ids),
            &format!("the table must be a non-empty [vocab, d], got {shape:?}"),
        );
    }
    // [1, 1] is the smallest table.
    let one = tensor(&device, &[1, 1], &[2.5]);
    let zeros = IndexTensor::from_vec(&device, &[2], vec![0, 0]).unwrap();
    assert_eq!(
        embedding::embedding_forward(&one, &zeros)
            .unwrap()
            .to_vec()
            .unwrap(),
        [2.5, 2.5]
    );
    // 2048 ids of a 2^20-wide row: 2^31 outputs, one past the kernels' 32-bit indexing, from
    // 4 MiB of table and 8 KiB of ids (the output is refused before it is made).
    let wide = tensor(&device, &[1, 1 << 20], &vec![0.0; 1 << 20]);
    let many = IndexTensor::from_vec(&device, &[2048], vec![0; 2048]).unwrap();
    refused(
        embedding::embedding_forward(&wide, &many),
        "2147483648 elements exceed the kernel's 32-bit indexing",
    );
    // The backward: vocab 0 (with no ids, so the index check cannot refuse it first), d 0, and
    // dout not shaped ids × d.
    let none = IndexTensor::from_vec(&device, &[0], vec![]).unwrap();
    refused(
        embedding::embedding_backward(&none, &tensor(&device, &[0, 3], &[]), 0),
        "dout [0, 3] must be ids [0] with a last axis d > 0",
    );
    refused(
        embedding::embedding_backward(&ids, &tensor(&device, &[2, 0], &[]), 4),
        "dout [2, 0] must be ids [2] with a last axis d > 0",
    );
    refused(
        embedding::embedding_backward(&ids, &tensor(&device, &[3, 2], &[0.0; 6]), 4),
        "dout [3, 2] must be ids [2] with a last axis d > 0",
    );
    assert_eq!(
        embedding::embedding_backward(&none, &tensor(&device, &[0, 3], &[]), 1)
            .unwrap()
            .shape(),
        [1, 3]
    );
    // dE of 2^11 rows of 2^20: 2^31 elements, refused before it is made.
    let wide_dout = tensor(&device, &[0, 1 << 20], &[]);
    refused(
        embedding::embedding_backward(&none, &wide_dout, 1 << 11),
        "2147483648 elements exceed the kernel's 32-bit indexing",
    );

    // The pooled lookups: max_tokens 0 is refused (not divided by).
    let pooled = |table: &asif_kernels::Tensor, tokens: &IndexTensor| {
        embedding::pooled_embedding_forward(table, tokens, Pooling::Sum)
    };
    let table = tensor(&device, &[4, 3], &[1.0; 12]);
    let empty_rows = IndexTensor::from_vec(&device, &[2, 0], vec![]).unwrap();
    let message = "tokens must be [.., max_tokens] with max_tokens > 0, got [2, 0]";
    let error = pooled(&table, &empty_rows).expect_err(message);
    assert_eq!(error.to_string(), format!("{POOLED}: bad shape: {message}"));
    // 1024 rows of 2 tokens over 2^21 columns: 2^31 outputs, refused; one row of 2^16 tokens
    // (id 1; 0 is the pad, which pooling skips) over one column is one output, allowed (the
    // bound counts rows, not tokens or their square).
    let wide = tensor(&device, &[1, 1 << 21], &vec![0.0; 1 << 21]);
    let pairs = IndexTensor::from_vec(&device, &[1024, 2], vec![0; 2048]).unwrap();
    let error = pooled(&wide, &pairs).expect_err("2^31 outputs");
    assert_eq!(
        error.to_string(),
        format!("{POOLED}: bad shape: 2147483648 elements exceed the kernel's 32-bit indexing")
    );
    let long_row = IndexTensor::from_vec(&device, &[1, 1 << 16], vec![1; 1 << 16]).unwrap();
    let sum = pooled(&tensor(&device, &[2, 1], &[0.0, 1.0]), &long_row).unwrap();
    assert_eq!(sum.to_vec().unwrap(), [65536.0]);
    // Its backward: vocab 0 (no tokens), d 0, dout not shaped rows × d, and a 2^31-element dE.
    let no_tokens = IndexTensor::from_vec(&device, &[0, 2], vec![]).unwrap();
    let tokens = IndexTensor::from_vec(&device, &[2, 2], vec![1, 0, 3, 2]).unwrap();
    for (tokens, dout, vocab, message) in [
        (
            &no_tokens,
            tensor(&device, &[0, 3], &[]),
            0,
            "dout [0, 3] does not match tokens [0, 2]",
        ),
        (
            &tokens,
            tensor(&device, &[2, 0], &[]),
            4,
            "dout [2, 0] does not match tokens [2, 2]",
        ),
        (
            &tokens,
            tensor(&device, &[3, 3], &[0.0; 9]),
            4,
            "dout [3, 3] does not match tokens [2, 2]",
        ),
        (
            &no_tokens,
            tensor(&device, &[0, 1 << 20], &[]),
            1 << 11,
            "2147483648 elements exceed the kernel's 32-bit indexing",
        ),
    ] {
        let error = embedding::pooled_embedding_backward(tokens, &dout, vocab, Pooling::Mean)
            .expect_err(message);
        assert!(
            matches!(error, Error::Shape { op: POOLED, .. }),
            "{error:?}"
        );
        assert_eq!(error.to_string(), format!("{POOLED}: bad shape: {message}"));
    }
    let fine = embedding::pooled_embedding_backward(
        &no_tokens,
        &tensor(&device, &[0, 3], &[]),
        1,
        Pooling::Mean,
    );
    assert_eq!(fine.unwrap().shape(), [1, 3]);
}

/// Ids where a few items repeat many times (a popular item in a batch), plus pads.
fn skewed_ids(rng: &mut rand::rngs::StdRng, len: usize, vocab: usize) -> Vec<i32> {
    (0..len)
        .map(|_| match rng.random_range(0..10) {
            0..=5 => 1,
            6 => 0,
            7 => (vocab - 1) as i32,
            _ => rng.random_range(0..vocab as i32),
        })
        .collect()
}

/// Bits of a tensor, so that tests compare results exactly.
fn bits(t: &asif_kernels::Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn v2_backwards_are_bit_identical_run_to_run_and_to_the_cpu_reference() {
    // Issue 20: a training step must be bit-reproducible. One id repeated at 60% of 96 positions
    // with dout of widely different magnitudes makes the sum order visible in the last bits: v1's
    // atomics give different bits from run to run on the emulator (each pass over a block's
    // threads runs them in a freshly shuffled order),
    // v2 sums each row in ascending position order, the CPU reference's order.
    let mut rng = rng(205);
    let (positions, vocab, dim, max_tokens) = (96usize, 7usize, 5usize, 3usize);
    let id_values = skewed_ids(&mut rng, positions, vocab);
    let tokens = skewed_ids(&mut rng, positions * max_tokens, vocab);
    let dout: Vec<f32> = (0..positions * dim)
        .map(|i| (rng.random::<f32>() - 0.5) * 10f32.powi((i % 7) as i32 - 3))
        .collect();
    let want = embedding::backward_reference(&id_values, &dout, vocab, dim);
    let device = common::emulated();
    kernel_version::with_version(FAMILY, kernel_version::KernelVersion::V2, || {
        let ids_t = IndexTensor::from_vec(&device, &[positions], id_values.clone()).unwrap();
        let tokens_t =
            IndexTensor::from_vec(&device, &[positions, max_tokens], tokens.clone()).unwrap();
        let dout_t =
            asif_kernels::Tensor::from_vec(&device, &[positions, dim], dout.clone()).expect("dout");
        let first = embedding::embedding_backward(&ids_t, &dout_t, vocab).unwrap();
        assert_eq!(
            bits(&first),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "dE equals the CPU reference bit for bit"
        );
        for pooling in [Pooling::Sum, Pooling::Mean] {
            let mean = pooling == Pooling::Mean;
            let want_pooled =
                embedding::pooled_backward_reference(&tokens, &dout, max_tokens, vocab, dim, mean);
            let pooled =
                embedding::pooled_embedding_backward(&tokens_t, &dout_t, vocab, pooling).unwrap();
            assert_eq!(
                bits(&pooled),
                want_pooled.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "pooled {pooling:?} dE equals the CPU reference bit for bit"
            );
        }
        for run in 0..3 {
            let again = embedding::embedding_backward(&ids_t, &dout_t, vocab).unwrap();
            assert_eq!(
                bits(&again),
                bits(&first),
                "repeat {run} differs from the first run"
            );
        }
    });
}

#[test]
fn heavy_duplicates_pads_and_lengths_zero_one_n_match_the_reference() {
    // Lengths 0, 1 and n; a vocab larger than one v2 block's rows; the pad row stays zero.
    let mut rng = rng(206);
    for_each_version(&[FAMILY], |version| {
        for device in all_devices() {
            for &(positions, vocab, dim) in &[(0usize, 3usize, 4usize), (1, 2, 1), (37, 300, 3)] {
                let id_values = skewed_ids(&mut rng, positions, vocab);
                let dout = random(&mut rng, positions * dim, 0.0, 1.0);
                let ids_t =
                    IndexTensor::from_vec(&device, &[positions], id_values.clone()).unwrap();
                let dtable = embedding::embedding_backward(
                    &ids_t,
                    &tensor(&device, &[positions, dim], &dout),
                    vocab,
                )
                .expect("backward");
                let what = format!("{version:?} dE positions {positions} vocab {vocab} d {dim}");
                assert_close(
                    &what,
                    &device,
                    &dtable,
                    &embedding::backward_reference(&id_values, &dout, vocab, dim),
                    TOLERANCE,
                );
                let values = dtable.to_vec().unwrap();
                assert!(values[..dim].iter().all(|&g| g == 0.0), "{what}: pad row");
            }
        }
    });
}

#[test]
fn fused_input_lookups_equal_the_two_lookups_bit_for_bit_through_the_tape() {
    // Issue 20: E_X[s] and one attribute type's pooling in one launch (`ops::input_embedding`)
    // give the two lookups' values, and through the tape (both outputs used, as the model uses
    // them) the same table gradients, with the deterministic scatter (embedding v2) bit for bit.
    // Ids with pads, duplicates and out-of-table-free values; rows without tokens; odd widths.
    let mut rng = rng(207);
    for device in all_devices() {
        kernel_version::with_version(FAMILY, kernel_version::KernelVersion::V2, || {
            for &(lead, dim, item_vocab, attribute_vocab, max_tokens) in &[
                (&[1usize][..], 1usize, 2usize, 2usize, 1usize),
                (&[3, 7][..], 5, 9, 4, 3),
                (&[2, 33][..], 33, 40, 7, 2),
            ] {
                let positions: usize = lead.iter().product();
                let id_values = ids(&mut rng, positions, item_vocab);
                let token_values = ids(&mut rng, positions * max_tokens, attribute_vocab);
                let mut token_shape = lead.to_vec();
                token_shape.push(max_tokens);
                let mut out_shape = lead.to_vec();
                out_shape.push(dim);
                let ids_t = IndexTensor::from_vec(&device, lead, id_values).unwrap();
                let tokens_t = IndexTensor::from_vec(&device, &token_shape, token_values).unwrap();
                let item_table = tensor(
                    &device,
                    &[item_vocab, dim],
                    &random(&mut rng, item_vocab * dim, 0.0, 1.0),
                );
                let attribute_table = tensor(
                    &device,
                    &[attribute_vocab, dim],
                    &random(&mut rng, attribute_vocab * dim, 0.0, 1.0),
                );
                let dx = tensor(
                    &device,
                    &out_shape,
                    &random(&mut rng, positions * dim, 0.0, 1.0),
                );
                let da = tensor(
                    &device,
                    &out_shape,
                    &random(&mut rng, positions * dim, 0.0, 1.0),
                );
                for pooling in [Pooling::Sum, Pooling::Mean] {
                    let run = |fused: bool| {
                        let tape = Tape::new();
                        let (e, t) = (
                            tape.leaf(item_table.clone()),
                            tape.leaf(attribute_table.clone()),
                        );
                        let (x, a) = if fused {
                            input_embedding::input_embedding(
                                &tape, &e, &t, &ids_t, &tokens_t, pooling,
                            )
                            .unwrap()
                        } else {
                            (
                                embedding::embedding(&tape, &e, &ids_t).unwrap(),
                                embedding::pooled_embedding(&tape, &t, &tokens_t, pooling).unwrap(),
                            )
                        };
                        let grads = tape
                            .backward_from(vec![(&x, dx.clone()), (&a, da.clone())])
                            .unwrap();
                        [
                            bits(x.value()),
                            bits(a.value()),
                            bits(grads.get(&e).unwrap()),
                            bits(grads.get(&t).unwrap()),
                        ]
                    };
                    assert_eq!(
                        run(true),
                        run(false),
                        "{pooling:?} {lead:?} d {dim} on {}",
                        device.name()
                    );
                }
            }
        });
    }
}

#[test]
fn fused_input_lookups_report_bad_input_as_typed_errors() {
    let device = Device::cpu();
    let item_table = tensor(&device, &[5, 3], &[0.5; 15]);
    let attribute_table = tensor(&device, &[4, 3], &[0.5; 12]);
    let narrow = tensor(&device, &[4, 2], &[0.5; 8]);
    let ids = IndexTensor::from_vec(&device, &[2], vec![1, 4]).unwrap();
    let tokens = IndexTensor::from_vec(&device, &[2, 2], vec![1, 0, 3, 2]).unwrap();
    let forward = |t: &asif_kernels::Tensor, i: &IndexTensor, k: &IndexTensor| {
        input_embedding::input_embedding_forward(&item_table, t, i, k, Pooling::Sum)
    };
    assert!(forward(&attribute_table, &ids, &tokens).is_ok());
    let error = forward(&narrow, &ids, &tokens).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Shape {
                op: "input_embedding",
                ..
            }
        ),
        "{error}"
    );
    let short_tokens = IndexTensor::from_vec(&device, &[1, 2], vec![1, 0]).unwrap();
    let error = forward(&attribute_table, &ids, &short_tokens).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Shape {
                op: "input_embedding",
                ..
            }
        ),
        "{error}"
    );
    let bad_ids = IndexTensor::from_vec(&device, &[2], vec![1, 5]).unwrap();
    let error = forward(&attribute_table, &bad_ids, &tokens).unwrap_err();
    assert!(matches!(error, Error::Argument { .. }), "{error}");
    let bad_tokens = IndexTensor::from_vec(&device, &[2, 2], vec![1, 0, 4, 2]).unwrap();
    let error = forward(&attribute_table, &ids, &bad_tokens).unwrap_err();
    assert!(matches!(error, Error::Argument { .. }), "{error}");
}

#[test]
fn fused_input_lookups_refuse_bad_shapes_one_by_one() {
    // Each refusal by its own message (cargo-mutants, issue 16: `table_dims`' clauses and the
    // tokens guard's were unseen, since the test above takes any shape error).
    let device = Device::cpu();
    let zeros = |shape: &[usize]| tensor(&device, shape, &vec![0.0; shape.iter().product()]);
    let index = |shape: &[usize]| {
        IndexTensor::from_vec(&device, shape, vec![0; shape.iter().product()]).unwrap()
    };
    let refused = |item: &asif_kernels::Tensor,
                   attribute: &asif_kernels::Tensor,
                   ids: &IndexTensor,
                   tokens: &IndexTensor,
                   message: &str| {
        let error =
            input_embedding::input_embedding_forward(item, attribute, ids, tokens, Pooling::Sum)
                .expect_err(message);
        assert_eq!(
            error.to_string(),
            format!("input_embedding: bad shape: {message}")
        );
    };
    let (table, ids, tokens) = (zeros(&[4, 3]), index(&[2]), index(&[2, 2]));
    for shape in [vec![0usize, 3], vec![3, 0], vec![3]] {
        let bad = zeros(&shape);
        refused(
            &bad,
            &table,
            &ids,
            &tokens,
            &format!("the item table must be a non-empty [vocab, d], got {shape:?}"),
        );
        refused(
            &table,
            &bad,
            &ids,
            &tokens,
            &format!("the attribute table must be a non-empty [vocab, d], got {shape:?}"),
        );
    }
    for shape in [[2usize, 0], [1, 2]] {
        refused(
            &table,
            &table,
            &ids,
            &index(&shape),
            &format!("tokens {shape:?} must be the ids' shape [2] plus a non-empty token axis"),
        );
    }
    // The smallest: [1, 1] tables, one token per position.
    let one = zeros(&[1, 1]);
    let (x, a) =
        input_embedding::input_embedding_forward(&one, &one, &ids, &index(&[2, 1]), Pooling::Sum)
            .unwrap();
    assert_eq!((x.shape(), a.shape()), (&[2usize, 1][..], &[2usize, 1][..]));
}

#[test]
fn fused_input_lookups_refuse_outputs_past_the_32_bit_indexing_on_the_kernel_devices() {
    // 2048 positions of a 2^20-wide row: 2^31 outputs each, one past the kernel's 32-bit
    // indexing, from two 4 MiB tables (refused before the outputs are made). On the kernel
    // devices, where the check and the launch read the same `Sizes::outputs`: a wrong product
    // there (cargo-mutants, issue 16: `*` → `+`, `/`) lets the check pass and the launch make
    // outputs of the wrong length, which fails at once instead of filling 16 GiB on the CPU.
    for device in common::kernel_devices() {
        let wide = tensor(&device, &[1, 1 << 20], &vec![0.0; 1 << 20]);
        let ids = IndexTensor::from_vec(&device, &[2048], vec![0; 2048]).unwrap();
        let tokens = IndexTensor::from_vec(&device, &[2048, 1], vec![0; 2048]).unwrap();
        let error =
            input_embedding::input_embedding_forward(&wide, &wide, &ids, &tokens, Pooling::Sum)
                .expect_err("2^31 outputs");
        assert_eq!(
            error.to_string(),
            "input_embedding: bad shape: 2147483648 elements exceed the kernel's 32-bit indexing",
            "{device:?}"
        );
    }
}
