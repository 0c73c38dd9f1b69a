//! The tape: recorded backward rules replayed in reverse, gradients accumulated, on every device.
mod common;

use asif_kernels::autograd::Tape;
use asif_kernels::ops::{gelu, layer_norm};
use common::{all_devices, assert_close, random, rng, tensor};

#[test]
fn tape_chains_layer_norm_and_gelu_like_the_reference() {
    let mut rng = rng(20);
    let (rows, cols, eps) = (6usize, 33usize, 1e-12);
    let x = random(&mut rng, rows * cols, 0.5, 2.0);
    let gamma = random(&mut rng, cols, 1.0, 0.5);
    let beta = random(&mut rng, cols, 0.0, 0.5);
    let seed = random(&mut rng, rows * cols, 0.0, 1.0);

    // Reference chain: z = gelu(layer_norm(x)), backward by hand.
    let (y, mean, rstd) = layer_norm::forward_reference(&x, &gamma, &beta, cols, eps);
    let z = gelu::forward_reference(&y);
    let dy = gelu::backward_reference(&y, &seed);
    let (dx, dgamma, dbeta) = layer_norm::backward_reference(&x, &gamma, &mean, &rstd, &dy, cols);

    for device in all_devices() {
        let tape = Tape::new();
        let x_var = tape.leaf(tensor(&device, &[rows, cols], &x));
        let gamma_var = tape.leaf(tensor(&device, &[cols], &gamma));
        let beta_var = tape.leaf(tensor(&device, &[cols], &beta));
        let y_var = layer_norm::layer_norm(&tape, &x_var, &gamma_var, &beta_var, eps as f32)
            .expect("layer norm");
        let z_var = gelu::gelu(&tape, &y_var).expect("gelu");
        assert_close("z", &device, z_var.value(), &z, 1e-5);
        let grads = tape
            .backward(&z_var, tensor(&device, &[rows, cols], &seed))
            .expect("backward");
        assert_close("dx", &device, grads.get(&x_var).expect("dx"), &dx, 1e-5);
        assert_close(
            "dgamma",
            &device,
            grads.get(&gamma_var).expect("dgamma"),
            &dgamma,
            1e-5,
        );
        assert_close(
            "dbeta",
            &device,
            grads.get(&beta_var).expect("dbeta"),
            &dbeta,
            1e-5,
        );
        assert_close(
            "dy (intermediate)",
            &device,
            grads.get(&y_var).expect("dy"),
            &dy,
            1e-5,
        );
    }
}

#[test]
fn a_value_used_twice_gets_the_sum_of_its_gradients() {
    let mut rng = rng(21);
    let (rows, cols) = (2usize, 8usize);
    let a = random(&mut rng, rows * cols, 0.0, 1.0);
    let b = random(&mut rng, rows * cols, 0.0, 1.0);
    let gamma = random(&mut rng, cols, 1.0, 0.5);
    let beta = vec![0.0; cols];
    let (seed_a, seed_b) = (
        random(&mut rng, rows * cols, 0.0, 1.0),
        random(&mut rng, rows * cols, 0.0, 1.0),
    );
    let (_, mean_a, rstd_a) = layer_norm::forward_reference(&a, &gamma, &beta, cols, 1e-5);
    let (_, mean_b, rstd_b) = layer_norm::forward_reference(&b, &gamma, &beta, cols, 1e-5);
    let dgamma_a = layer_norm::backward_reference(&a, &gamma, &mean_a, &rstd_a, &seed_a, cols).1;
    let dgamma_b = layer_norm::backward_reference(&b, &gamma, &mean_b, &rstd_b, &seed_b, cols).1;
    let want: Vec<f64> = dgamma_a.iter().zip(&dgamma_b).map(|(p, q)| p + q).collect();

    for device in all_devices() {
        let tape = Tape::new();
        let gamma_var = tape.leaf(tensor(&device, &[cols], &gamma));
        let beta_var = tape.leaf(tensor(&device, &[cols], &beta));
        let a_var = tape.leaf(tensor(&device, &[rows, cols], &a));
        let b_var = tape.leaf(tensor(&device, &[rows, cols], &b));
        let ya = layer_norm::layer_norm(&tape, &a_var, &gamma_var, &beta_var, 1e-5).expect("a");
        let yb = layer_norm::layer_norm(&tape, &b_var, &gamma_var, &beta_var, 1e-5).expect("b");
        let grads = tape
            .backward_from(vec![
                (&ya, tensor(&device, &[rows, cols], &seed_a)),
                (&yb, tensor(&device, &[rows, cols], &seed_b)),
            ])
            .expect("backward");
        assert_close(
            "shared gamma",
            &device,
            grads.get(&gamma_var).expect("dgamma"),
            &want,
            1e-5,
        );
    }
}
