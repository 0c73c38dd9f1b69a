//! Linear layer and the prediction layer's `u E_Xᵀ`: tier 1 (f64 finite differences of the
//! reference), tiers 2 and 4 (every device against the f64 triple loop on odd sizes), the tape.
//! Also the FFN's bias add fused with GELU (`ops::bias_gelu`, issue 20): its f64 backward by
//! finite differences, and on every device and GELU version the same bits as the unfused linear
//! bias add and GELU, forward, backward and through the tape.
mod common;

use asif_kernels::autograd::gradcheck::check_gradient;
use asif_kernels::autograd::Tape;
use asif_kernels::ops::{bias_gelu, gelu, linear};
use asif_kernels::{Device, Error, Tensor};
use common::{
    all_devices, assert_close, for_each_version, gradcheck_options, random, rng, tensor, weighted,
};

/// fp32 GEMM against the f64 triple loop: sums of up to a few hundred products.
const TOLERANCE: f64 = 1e-5;

#[test]
fn linear_backward_matches_finite_differences() {
    let mut rng = rng(100);
    for &(rows, d_in, d_out) in &[(1usize, 1usize, 1usize), (3, 5, 7), (4, 2, 9)] {
        let x = random(&mut rng, rows * d_in, 0.0, 1.0);
        let w = random(&mut rng, d_in * d_out, 0.0, 1.0);
        let b = random(&mut rng, d_out, 0.0, 1.0);
        let seed = random(&mut rng, rows * d_out, 0.0, 1.0);
        let (dx, dw, db) = linear::backward_reference(&x, &w, &seed, d_in, d_out);
        let fx = |p: &[f64]| {
            weighted(
                &linear::forward_reference(p, &w, Some(&b), d_in, d_out),
                &seed,
            )
        };
        let fw = |p: &[f64]| {
            weighted(
                &linear::forward_reference(&x, p, Some(&b), d_in, d_out),
                &seed,
            )
        };
        let fb = |p: &[f64]| {
            weighted(
                &linear::forward_reference(&x, &w, Some(p), d_in, d_out),
                &seed,
            )
        };
        check_gradient(fx, &x, &dx, gradcheck_options()).expect("dx");
        check_gradient(fw, &w, &dw, gradcheck_options()).expect("dW");
        check_gradient(fb, &b, &db, gradcheck_options()).expect("db");
    }
}

#[test]
fn matmul_transposed_backward_matches_finite_differences() {
    let mut rng = rng(101);
    let (rows, items, d) = (3usize, 7usize, 5usize);
    let u = random(&mut rng, rows * d, 0.0, 1.0);
    let table = random(&mut rng, items * d, 0.0, 1.0);
    let seed = random(&mut rng, rows * items, 0.0, 1.0);
    let (du, dtable) = linear::matmul_transposed_backward_reference(&u, &table, &seed, d);
    let fu = |p: &[f64]| {
        weighted(
            &linear::matmul_transposed_forward_reference(p, &table, d),
            &seed,
        )
    };
    let ft = |p: &[f64]| {
        weighted(
            &linear::matmul_transposed_forward_reference(&u, p, d),
            &seed,
        )
    };
    check_gradient(fu, &u, &du, gradcheck_options()).expect("du");
    check_gradient(ft, &table, &dtable, gradcheck_options()).expect("dE");
}

#[test]
fn linear_matches_reference_on_every_device() {
    let mut rng = rng(102);
    for device in all_devices() {
        for &(lead, d_in, d_out) in &[
            (&[1usize][..], 1usize, 1usize),
            (&[3, 7][..], 33, 31),
            (&[70][..], 64, 96),
            (&[2, 5][..], 257, 3),
        ] {
            let rows: usize = lead.iter().product();
            let x = random(&mut rng, rows * d_in, 0.0, 1.0);
            let w = random(&mut rng, d_in * d_out, 0.0, 0.5);
            let b = random(&mut rng, d_out, 0.0, 1.0);
            let dy = random(&mut rng, rows * d_out, 0.0, 1.0);
            let mut x_shape = lead.to_vec();
            x_shape.push(d_in);
            let mut y_shape = lead.to_vec();
            y_shape.push(d_out);
            let (x_t, w_t, b_t) = (
                tensor(&device, &x_shape, &x),
                tensor(&device, &[d_in, d_out], &w),
                tensor(&device, &[d_out], &b),
            );
            let what = |n: &str| format!("linear {n} {x_shape:?} x [{d_in}, {d_out}]");

            let y = linear::linear_forward(&x_t, &w_t, Some(&b_t)).expect("forward");
            assert_eq!(y.shape(), y_shape.as_slice());
            assert_close(
                &what("y"),
                &device,
                &y,
                &linear::forward_reference(&x, &w, Some(&b), d_in, d_out),
                TOLERANCE,
            );
            let y_plain = linear::linear_forward(&x_t, &w_t, None).expect("forward without bias");
            assert_close(
                &what("y (no bias)"),
                &device,
                &y_plain,
                &linear::forward_reference(&x, &w, None, d_in, d_out),
                TOLERANCE,
            );

            let (dx, dw, db) = linear::backward_reference(&x, &w, &dy, d_in, d_out);
            let grads = linear::linear_backward(&x_t, &w_t, &tensor(&device, &y_shape, &dy), true)
                .expect("backward");
            assert_close(&what("dx"), &device, &grads.dx, &dx, TOLERANCE);
            assert_close(&what("dW"), &device, &grads.dweight, &dw, TOLERANCE);
            assert_close(
                &what("db"),
                &device,
                grads.dbias.as_ref().expect("db"),
                &db,
                TOLERANCE,
            );
            assert!(
                linear::linear_backward(&x_t, &w_t, &tensor(&device, &y_shape, &dy), false)
                    .expect("backward")
                    .dbias
                    .is_none()
            );
        }
    }
}

#[test]
fn prediction_layer_matches_reference_on_every_device() {
    let mut rng = rng(103);
    for device in all_devices() {
        for &(rows, items, d) in &[(1usize, 1usize, 1usize), (5, 33, 31), (9, 1001, 64)] {
            let u = random(&mut rng, rows * d, 0.0, 1.0);
            let table = random(&mut rng, items * d, 0.0, 0.5);
            let g = random(&mut rng, rows * items, 0.0, 1.0);
            let (u_t, table_t) = (
                tensor(&device, &[rows, d], &u),
                tensor(&device, &[items, d], &table),
            );
            let logits = linear::matmul_transposed_forward(&u_t, &table_t).expect("forward");
            assert_eq!(logits.shape(), &[rows, items]);
            let what = |n: &str| format!("u E^T {n} B {rows} |V| {items} d {d}");
            assert_close(
                &what("logits"),
                &device,
                &logits,
                &linear::matmul_transposed_forward_reference(&u, &table, d),
                TOLERANCE,
            );
            let (du, dtable) = linear::matmul_transposed_backward(
                &u_t,
                &table_t,
                &tensor(&device, &[rows, items], &g),
                0.5,
            )
            .expect("backward");
            let (du_ref, dtable_ref) =
                linear::matmul_transposed_backward_reference(&u, &table, &g, d);
            let half = |v: Vec<f64>| v.into_iter().map(|x| 0.5 * x).collect::<Vec<_>>();
            assert_close(&what("du"), &device, &du, &half(du_ref), TOLERANCE);
            assert_close(&what("dE"), &device, &dtable, &half(dtable_ref), TOLERANCE);
        }
    }
}

#[test]
fn tape_chains_two_linear_layers_and_the_prediction_layer() {
    let mut rng = rng(104);
    let (rows, d, items) = (6usize, 9usize, 13usize);
    let x = random(&mut rng, rows * d, 0.0, 1.0);
    let w1 = random(&mut rng, d * d, 0.0, 0.5);
    let b1 = random(&mut rng, d, 0.0, 0.5);
    let table = random(&mut rng, items * d, 0.0, 0.5);
    let seed = random(&mut rng, rows * items, 0.0, 1.0);
    // Reference: h = x W1 + b1; logits = h Eᵀ.
    let h = linear::forward_reference(&x, &w1, Some(&b1), d, d);
    let (dh, dtable) = linear::matmul_transposed_backward_reference(&h, &table, &seed, d);
    let (dx, dw1, db1) = linear::backward_reference(&x, &w1, &dh, d, d);
    for device in all_devices() {
        let tape = Tape::new();
        let x_var = tape.leaf(tensor(&device, &[rows, d], &x));
        let w_var = tape.leaf(tensor(&device, &[d, d], &w1));
        let b_var = tape.leaf(tensor(&device, &[d], &b1));
        let e_var = tape.leaf(tensor(&device, &[items, d], &table));
        let h_var = linear::linear(&tape, &x_var, &w_var, Some(&b_var)).expect("linear");
        let logits = linear::matmul_transposed(&tape, &h_var, &e_var).expect("prediction");
        let grads = tape
            .backward(&logits, tensor(&device, &[rows, items], &seed))
            .expect("backward");
        assert_close(
            "tape dx",
            &device,
            grads.get(&x_var).expect("dx"),
            &dx,
            TOLERANCE,
        );
        assert_close(
            "tape dW",
            &device,
            grads.get(&w_var).expect("dW"),
            &dw1,
            TOLERANCE,
        );
        assert_close(
            "tape db",
            &device,
            grads.get(&b_var).expect("db"),
            &db1,
            TOLERANCE,
        );
        assert_close(
            "tape dE",
            &device,
            grads.get(&e_var).expect("dE"),
            &dtable,
            TOLERANCE,
        );
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    let device = Device::cpu();
    let x = Tensor::zeros(&device, &[2, 3]).unwrap();
    let w = Tensor::zeros(&device, &[4, 5]).unwrap();
    assert!(matches!(
        linear::linear_forward(&x, &w, None),
        Err(Error::Shape { .. })
    ));
    let w = Tensor::zeros(&device, &[3, 5]).unwrap();
    let b = Tensor::zeros(&device, &[4]).unwrap();
    assert!(matches!(
        linear::linear_forward(&x, &w, Some(&b)),
        Err(Error::Shape { .. })
    ));
    let table = Tensor::zeros(&device, &[7, 4]).unwrap();
    assert!(matches!(
        linear::matmul_transposed_forward(&x, &table),
        Err(Error::Shape { .. })
    ));
    let emulated = common::emulated();
    let x_emulated = Tensor::zeros(&emulated, &[2, 3]).unwrap();
    assert!(matches!(
        linear::linear_forward(&x_emulated, &w, None),
        Err(Error::DeviceMismatch { .. })
    ));
}

#[test]
fn bad_shapes_are_refused_one_by_one() {
    // Each refusal by its own message (cargo-mutants, issue 16: `dims`' `||` between the d_in
    // clauses and the bias-gradient grid's bound were unseen, since the old test took any
    // shape error, and a later check gave one). The CPU device: the checks run before any
    // dispatch.
    let device = Device::cpu();
    let refused = |result: asif_kernels::Result<Tensor>, message: &str| {
        let error = result.expect_err(message);
        assert!(
            matches!(error, Error::Shape { op: "linear", .. }),
            "{error:?}"
        );
        assert_eq!(error.to_string(), format!("linear: bad shape: {message}"));
    };
    let zeros = |shape: &[usize]| Tensor::zeros(&device, shape).unwrap();
    refused(
        linear::linear_forward(&zeros(&[2, 3]), &zeros(&[3, 5, 1]), None),
        "weight must be [d_in, d_out], got [3, 5, 1]",
    );
    // x not ending in d_in, with d_in > 0; then d_in = 0 with x ending in it (its rows would
    // be 0 / 0).
    refused(
        linear::linear_forward(&zeros(&[2, 3]), &zeros(&[4, 5]), None),
        "x [2, 3] does not end in d_in = 4 (weight [4, 5])",
    );
    refused(
        linear::linear_forward(&zeros(&[2, 0]), &zeros(&[0, 5]), None),
        "x [2, 0] does not end in d_in = 0 (weight [0, 5])",
    );
    refused(
        linear::linear_forward(&zeros(&[2, 3]), &zeros(&[3, 5]), Some(&zeros(&[4]))),
        "bias must be [5], got [4]",
    );
    // The bias gradient's grid holds 65535 blocks of 64 rows: 4194240 rows are allowed (d 1,
    // 16 MiB), one more is refused.
    let most = 64 * 65_535;
    let y = linear::linear_forward(&zeros(&[most, 1]), &zeros(&[1, 1]), None).unwrap();
    assert_eq!(y.shape(), [most, 1]);
    refused(
        linear::linear_forward(&zeros(&[most + 1, 1]), &zeros(&[1, 1]), None),
        "4194241 rows exceed the bias gradient's grid (at most 4194240)",
    );
    // The prediction layer's u Eᵀ: d must agree and be > 0 (each clause alone refuses).
    for (u, table) in [([2, 3], [7, 4]), ([2, 0], [7, 0])] {
        let message = format!("u must be [B, d] and the table [|V|, d]; got {u:?} and {table:?}");
        let error =
            linear::matmul_transposed_forward(&zeros(&u), &zeros(&table)).expect_err(&message);
        assert_eq!(
            error.to_string(),
            format!("matmul_transposed: bad shape: {message}")
        );
    }
    let logits = linear::matmul_transposed_forward(&zeros(&[2, 3]), &zeros(&[7, 3])).unwrap();
    assert_eq!(logits.shape(), [2, 7]);
}

#[test]
fn tf32_switch_is_off_by_default() {
    assert!(!linear::allow_tf32());
}

#[test]
fn an_empty_batch_gives_empty_outputs_and_zero_weight_gradients() {
    for device in all_devices() {
        let x = Tensor::zeros(&device, &[0, 3]).unwrap();
        let w = tensor(&device, &[3, 2], &[1.0; 6]);
        let y = linear::linear_forward(&x, &w, None).unwrap();
        assert_eq!(y.shape(), &[0, 2]);
        let grads =
            linear::linear_backward(&x, &w, &Tensor::zeros(&device, &[0, 2]).unwrap(), true)
                .unwrap();
        assert_eq!(grads.dweight.to_vec().unwrap(), vec![0.0; 6]);
        assert_eq!(grads.dbias.unwrap().to_vec().unwrap(), vec![0.0; 2]);
    }
}

/// The bits of a tensor's values.
fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec()
        .expect("download")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn bias_gelu_backward_matches_finite_differences() {
    let mut rng = rng(110);
    for &(rows, cols) in &[(1usize, 1usize), (3, 5), (9, 4)] {
        // y + b spread over GELU's curved middle and its tails.
        let y = random(&mut rng, rows * cols, 0.0, 3.0);
        let b = random(&mut rng, cols, 0.0, 1.0);
        let w = random(&mut rng, rows * cols, 0.0, 1.0);
        let (dy, db) = bias_gelu::backward_reference(&y, &b, &w, cols);
        let fy = |p: &[f64]| weighted(&bias_gelu::forward_reference(p, &b, cols), &w);
        let fb = |p: &[f64]| weighted(&bias_gelu::forward_reference(&y, p, cols), &w);
        check_gradient(fy, &y, &dy, gradcheck_options()).expect("dy");
        check_gradient(fb, &b, &db, gradcheck_options()).expect("db");
    }
}

#[test]
fn bias_gelu_equals_the_unfused_bias_add_and_gelu_bit_for_bit() {
    // The fused pass against what the FFN ran before it: linear's bias add after the GEMM, then
    // GELU (both GELU versions); backward GELU's, then the linear layer's bias gradient. Sizes:
    // a partial float4 (15 elements), chunk boundaries of the column sums (64 and 65 rows, 130 =
    // three chunks), a partial 32-column block (33) and the paper's width (256).
    let mut rng = rng(111);
    for device in all_devices() {
        for_each_version(&["gelu"], |version| {
            for &(rows, d_in, cols) in &[
                (1usize, 1usize, 1usize),
                (3, 4, 5),
                (64, 3, 33),
                (65, 2, 7),
                (130, 5, 33),
                (2, 3, 256),
            ] {
                let x = tensor(
                    &device,
                    &[rows, d_in],
                    &random(&mut rng, rows * d_in, 0.0, 1.0),
                );
                let w = tensor(
                    &device,
                    &[d_in, cols],
                    &random(&mut rng, d_in * cols, 0.0, 1.0),
                );
                let b = tensor(&device, &[cols], &random(&mut rng, cols, 0.0, 1.0));
                let dh = tensor(
                    &device,
                    &[rows, cols],
                    &random(&mut rng, rows * cols, 0.0, 1.0),
                );
                let what = |n: &str| {
                    format!(
                        "bias_gelu {n} on {} (gelu {}) [{rows}, {cols}]",
                        device.name(),
                        version.name()
                    )
                };

                let z = linear::linear_forward(&x, &w, Some(&b)).expect("unfused linear");
                let h_unfused = gelu::gelu_forward(&z).expect("unfused gelu");
                let y = linear::linear_forward(&x, &w, None).expect("linear without bias");
                let h = bias_gelu::bias_gelu_forward(&y, &b).expect("fused forward");
                assert_eq!(h.shape(), [rows, cols]);
                assert_eq!(bits(&h), bits(&h_unfused), "{}", what("h"));

                let dz = gelu::gelu_backward(&z, &dh).expect("unfused gelu backward");
                let db_unfused = linear::linear_backward(&x, &w, &dz, true)
                    .expect("unfused linear backward")
                    .dbias
                    .expect("db");
                let (dy, db) = bias_gelu::bias_gelu_backward(&y, &b, &dh).expect("fused backward");
                assert_eq!(bits(&dy), bits(&dz), "{}", what("dy"));
                assert_eq!(bits(&db), bits(&db_unfused), "{}", what("db"));

                // And against the f64 reference, so both cannot be wrong alike.
                let y_host: Vec<f64> = y.to_vec().unwrap().iter().map(|&v| v as f64).collect();
                let b_host: Vec<f64> = b.to_vec().unwrap().iter().map(|&v| v as f64).collect();
                let dh_host: Vec<f64> = dh.to_vec().unwrap().iter().map(|&v| v as f64).collect();
                let (dy_want, db_want) =
                    bias_gelu::backward_reference(&y_host, &b_host, &dh_host, cols);
                let h_want = bias_gelu::forward_reference(&y_host, &b_host, cols);
                assert_close(&what("h"), &device, &h, &h_want, TOLERANCE);
                assert_close(&what("dy"), &device, &dy, &dy_want, TOLERANCE);
                assert_close(&what("db"), &device, &db, &db_want, TOLERANCE);
            }
        });
    }
}

#[test]
fn the_ffn_first_layer_through_the_tape_is_the_same_fused_or_not() {
    // GELU(x W + b) on the tape, as the FFN records it either way (`model::blocks`): the
    // gradients of x, W and b are the same bits.
    let mut rng = rng(112);
    let (lead, d_in, cols) = ([3usize, 7usize], 6usize, 9usize);
    for device in all_devices() {
        let x = tensor(
            &device,
            &[3, 7, d_in],
            &random(&mut rng, 21 * d_in, 0.0, 1.0),
        );
        let w = tensor(
            &device,
            &[d_in, cols],
            &random(&mut rng, d_in * cols, 0.0, 1.0),
        );
        let b = tensor(&device, &[cols], &random(&mut rng, cols, 0.0, 1.0));
        let seed = tensor(
            &device,
            &[lead[0], lead[1], cols],
            &random(&mut rng, 21 * cols, 0.0, 1.0),
        );
        let run = |fused: bool| {
            let tape = Tape::new();
            let (xv, wv, bv) = (
                tape.leaf(x.clone()),
                tape.leaf(w.clone()),
                tape.leaf(b.clone()),
            );
            let h = if fused {
                let y = linear::linear(&tape, &xv, &wv, None).unwrap();
                bias_gelu::bias_gelu(&tape, &y, &bv).unwrap()
            } else {
                gelu::gelu(&tape, &linear::linear(&tape, &xv, &wv, Some(&bv)).unwrap()).unwrap()
            };
            let grads = tape.backward(&h, seed.clone()).unwrap();
            [
                bits(h.value()),
                bits(grads.get(&xv).unwrap()),
                bits(grads.get(&wv).unwrap()),
                bits(grads.get(&bv).unwrap()),
            ]
        };
        assert_eq!(run(true), run(false), "on {}", device.name());
    }
}

#[test]
fn bias_gelu_bad_shapes_are_typed_errors() {
    let device = Device::cpu();
    let y = Tensor::zeros(&device, &[2, 3]).unwrap();
    let b = Tensor::zeros(&device, &[4]).unwrap();
    let error = bias_gelu::bias_gelu_forward(&y, &b).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Shape {
                op: "bias_gelu",
                ..
            }
        ),
        "{error}"
    );
    let b = Tensor::zeros(&device, &[3]).unwrap();
    let dh = Tensor::zeros(&device, &[3, 3]).unwrap();
    let error = bias_gelu::bias_gelu_backward(&y, &b, &dh).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Shape {
                op: "bias_gelu",
                ..
            }
        ),
        "{error}"
    );
    let b_emulated = Tensor::zeros(&common::emulated(), &[3]).unwrap();
    assert!(matches!(
        bias_gelu::bias_gelu_forward(&y, &b_emulated),
        Err(Error::DeviceMismatch { .. })
    ));
}

#[test]
fn bias_gelu_refuses_an_empty_last_axis_and_rows_past_the_grid() {
    // cargo-mutants, issue 16: `cols > 0` → `>=` and the grid bound's `>` → `==`, `>=` were
    // unseen. d 0 is refused by its message; 4194240 rows (65535 chunks of 64) are allowed and
    // one more is refused.
    let device = Device::cpu();
    let zeros = |shape: &[usize]| Tensor::zeros(&device, shape).unwrap();
    let error = bias_gelu::bias_gelu_forward(&zeros(&[2, 0]), &zeros(&[0])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "bias_gelu: bad shape: bias [0] must be [d] for y [2, 0] ending in d > 0 (last axis Some(0))"
    );
    let most = 64 * 65_535;
    let h = bias_gelu::bias_gelu_forward(&zeros(&[most, 1]), &zeros(&[1])).unwrap();
    assert_eq!(h.shape(), [most, 1]);
    let error = bias_gelu::bias_gelu_forward(&zeros(&[most + 1, 1]), &zeros(&[1])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "bias_gelu: bad shape: 4194241 rows exceed the bias gradient's grid (at most 4194240)"
    );
}
