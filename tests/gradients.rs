//! Tier 1: every hand-derived backward matches finite differences of its CPU forward, in f64.
mod common;

use asif_kernels::autograd::gradcheck::check_gradient;
use asif_kernels::ops::{gelu, layer_norm, relu};
use common::{gradcheck_options, random, rng, weighted};

/// Σ w ⊙ f(params): a scalar that weighs every output element differently.
#[test]
fn layer_norm_backward_matches_finite_differences() {
    let mut rng = rng(1);
    for &cols in &[1usize, 2, 31, 33] {
        for &eps in &[1e-12f64, 1e-5] {
            let rows = 3;
            let x = random(&mut rng, rows * cols, 0.5, 2.0);
            let gamma = random(&mut rng, cols, 1.0, 0.5);
            let beta = random(&mut rng, cols, 0.0, 0.5);
            let w = random(&mut rng, rows * cols, 0.0, 1.0);
            let (_, mean, rstd) = layer_norm::forward_reference(&x, &gamma, &beta, cols, eps);
            let (dx, dgamma, dbeta) =
                layer_norm::backward_reference(&x, &gamma, &mean, &rstd, &w, cols);

            let loss_x = |p: &[f64]| {
                weighted(
                    &layer_norm::forward_reference(p, &gamma, &beta, cols, eps).0,
                    &w,
                )
            };
            let loss_gamma = |p: &[f64]| {
                weighted(
                    &layer_norm::forward_reference(&x, p, &beta, cols, eps).0,
                    &w,
                )
            };
            let loss_beta = |p: &[f64]| {
                weighted(
                    &layer_norm::forward_reference(&x, &gamma, p, cols, eps).0,
                    &w,
                )
            };
            for (name, result) in [
                ("dx", check_gradient(loss_x, &x, &dx, gradcheck_options())),
                (
                    "dgamma",
                    check_gradient(loss_gamma, &gamma, &dgamma, gradcheck_options()),
                ),
                (
                    "dbeta",
                    check_gradient(loss_beta, &beta, &dbeta, gradcheck_options()),
                ),
            ] {
                if let Err(e) = result {
                    panic!("layer norm {name}, cols {cols}, eps {eps:e}: {e}");
                }
            }
        }
    }
}

#[test]
fn gelu_backward_matches_finite_differences() {
    let mut rng = rng(2);
    // Include the far tails, where erf saturates, and the origin.
    let mut x = random(&mut rng, 64, 0.0, 4.0);
    x.extend([0.0, -6.0, 6.0, -2.5, 2.5, 1e-3]);
    let w = random(&mut rng, x.len(), 0.0, 1.0);
    let dx = gelu::backward_reference(&x, &w);
    let loss = |p: &[f64]| weighted(&gelu::forward_reference(p), &w);
    check_gradient(loss, &x, &dx, gradcheck_options()).expect("gelu dx");
}

#[test]
fn relu_backward_matches_finite_differences() {
    let mut rng = rng(3);
    // Away from the kink at 0, where the derivative jumps (the backward takes 0 there).
    let x: Vec<f64> = random(&mut rng, 64, 0.0, 1.0)
        .into_iter()
        .map(|v| if v.abs() < 1e-3 { v + 0.01 } else { v })
        .collect();
    let w = random(&mut rng, x.len(), 0.0, 1.0);
    let dx = relu::backward_reference(&x, &w);
    let loss = |p: &[f64]| weighted(&relu::forward_reference(p), &w);
    check_gradient(loss, &x, &dx, gradcheck_options()).expect("relu dx");
    assert_eq!(relu::backward_reference(&[0.0], &[1.0]), vec![0.0]);
}

#[test]
fn reference_erf_is_accurate() {
    // Values from Abramowitz & Stegun table 7.1 and the asymptote.
    for (x, want) in [
        (0.0, 0.0),
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.0, 0.999_977_909_503_001_4),
    ] {
        let got = gelu::erf_f64(x);
        assert!((got - want).abs() < 1e-12, "erf({x}) = {got}, want {want}");
        assert!((gelu::erf_f64(-x) + want).abs() < 1e-12, "erf is odd");
    }
}

#[test]
fn gradient_checker_catches_a_wrong_gradient() {
    let x = [0.3, -1.2, 2.0];
    let f = |p: &[f64]| p.iter().map(|v| v * v * v).sum::<f64>();
    let right: Vec<f64> = x.iter().map(|v| 3.0 * v * v).collect();
    let mut wrong = right.clone();
    wrong[1] *= 1.01;
    assert!(check_gradient(f, &x, &right, gradcheck_options()).is_ok());
    let error =
        check_gradient(f, &x, &wrong, gradcheck_options()).expect_err("a 1% error must be caught");
    assert!(error.to_string().contains("entry 1"), "{error}");
}
