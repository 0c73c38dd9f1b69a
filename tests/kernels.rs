//! Tiers 2 and 4: each kernel, through the real launch code, matches the f64 CPU reference.
//! Runs on the emulated device always and on the GPU when there is one (one test body for both).
//! The CPU device's f32 dispatch is checked the same way.
mod common;

use asif_kernels::ops::{add, gelu, layer_norm, relu};
use common::{all_devices, assert_close, random, rng, tensor, to_f32, to_f64};

/// fp32 kernels against the f64 reference: forward sums of up to a thousand terms.
const TOLERANCE: f64 = 1e-5;

#[test]
fn layer_norm_matches_reference_on_odd_sizes() {
    let mut rng = rng(10);
    for device in all_devices() {
        for &cols in &[1usize, 31, 33, 256, 1000] {
            for &(rows, eps) in &[(1usize, 1e-12f64), (70, 1e-12), (5, 1e-5)] {
                // An offset mean checks the two-pass variance (a one-pass E[x²]−E[x]² would lose it).
                let x = random(&mut rng, rows * cols, 3.0, 1.5);
                let gamma = random(&mut rng, cols, 1.0, 0.5);
                let beta = random(&mut rng, cols, 0.0, 0.5);
                let dy = random(&mut rng, rows * cols, 0.0, 1.0);
                let (y_ref, mean_ref, rstd_ref) =
                    layer_norm::forward_reference(&x, &gamma, &beta, cols, eps);
                let (dx_ref, dgamma_ref, dbeta_ref) =
                    layer_norm::backward_reference(&x, &gamma, &mean_ref, &rstd_ref, &dy, cols);

                let shape = [rows, cols];
                let (x_t, gamma_t, beta_t) = (
                    tensor(&device, &shape, &x),
                    tensor(&device, &[cols], &gamma),
                    tensor(&device, &[cols], &beta),
                );
                let (y, saved) =
                    layer_norm::layer_norm_forward(&x_t, &gamma_t, &beta_t, eps as f32)
                        .expect("forward");
                let what =
                    |name: &str| format!("layer norm {name} rows {rows} cols {cols} eps {eps:e}");
                assert_close(&what("y"), &device, &y, &y_ref, TOLERANCE);
                assert_close(&what("mean"), &device, &saved.mean, &mean_ref, TOLERANCE);
                assert_close(&what("rstd"), &device, &saved.rstd, &rstd_ref, TOLERANCE);

                let grads = layer_norm::layer_norm_backward(
                    &x_t,
                    &gamma_t,
                    &saved,
                    &tensor(&device, &shape, &dy),
                )
                .expect("backward");
                // cols = 1: dx is exactly zero in both; the absolute error is then what is checked.
                assert_close(&what("dx"), &device, &grads.dx, &dx_ref, TOLERANCE);
                assert_close(
                    &what("dgamma"),
                    &device,
                    &grads.dgamma,
                    &dgamma_ref,
                    TOLERANCE,
                );
                assert_close(&what("dbeta"), &device, &grads.dbeta, &dbeta_ref, TOLERANCE);
            }
        }
    }
}

#[test]
fn gelu_matches_reference_on_odd_sizes() {
    let mut rng = rng(11);
    for device in all_devices() {
        for &len in &[1usize, 31, 33, 256, 1000, 70_001] {
            let x = random(&mut rng, len, 0.0, 5.0);
            let dy = random(&mut rng, len, 0.0, 1.0);
            let x_t = tensor(&device, &[len], &x);
            let y = gelu::gelu_forward(&x_t).expect("forward");
            assert_close(
                &format!("gelu y len {len}"),
                &device,
                &y,
                &gelu::forward_reference(&x),
                TOLERANCE,
            );
            let dx = gelu::gelu_backward(&x_t, &tensor(&device, &[len], &dy)).expect("backward");
            assert_close(
                &format!("gelu dx len {len}"),
                &device,
                &dx,
                &gelu::backward_reference(&x, &dy),
                TOLERANCE,
            );
        }
    }
}

#[test]
fn relu_matches_reference_on_odd_sizes() {
    let mut rng = rng(13);
    for device in all_devices() {
        for &len in &[1usize, 31, 33, 256, 1000, 70_001] {
            // f32-representable inputs, so max and the select are exact; every 7th x exactly 0
            // (y = 0 and dx = 0 at the kink, as the reference and PyTorch).
            let mut x = to_f64(&to_f32(&random(&mut rng, len, 0.0, 1.0)));
            x.iter_mut().step_by(7).for_each(|v| *v = 0.0);
            let dy = to_f64(&to_f32(&random(&mut rng, len, 0.0, 1.0)));
            let x_t = tensor(&device, &[len], &x);
            let y = relu::relu_forward(&x_t).expect("forward");
            assert_close(
                &format!("relu y len {len}"),
                &device,
                &y,
                &relu::forward_reference(&x),
                0.0,
            );
            let dx = relu::relu_backward(&x_t, &tensor(&device, &[len], &dy)).expect("backward");
            assert_close(
                &format!("relu dx len {len}"),
                &device,
                &dx,
                &relu::backward_reference(&x, &dy),
                0.0,
            );
        }
    }
}

#[test]
fn add_assign_matches_reference() {
    let mut rng = rng(12);
    for device in all_devices() {
        for &len in &[1usize, 33, 1000] {
            let y = random(&mut rng, len, 0.0, 1.0);
            let x = random(&mut rng, len, 0.0, 1.0);
            let mut y_t = tensor(&device, &[len], &y);
            add::add_assign(&mut y_t, &tensor(&device, &[len], &x)).expect("add_assign");
            let mut want = y.clone();
            add::add_assign_reference(&mut want, &x);
            assert_close(&format!("add_assign len {len}"), &device, &y_t, &want, 1e-7);
        }
    }
}
