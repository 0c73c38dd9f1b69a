//! Linear layer and the prediction layer's `u E_Xᵀ`: tier 1 (f64 finite differences of the
//! reference), tiers 2 and 4 (every device against the f64 triple loop on odd sizes), the tape.
mod common;

use asif_kernels::autograd::gradcheck::check_gradient;
use asif_kernels::autograd::Tape;
use asif_kernels::ops::linear;
use asif_kernels::{Device, Error, Tensor};
use common::{all_devices, assert_close, gradcheck_options, random, rng, tensor, weighted};

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
