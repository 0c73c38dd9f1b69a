//! Tiers 2 and 4: each kernel, through the real launch code, matches the f64 CPU reference.
//! Runs on the emulated device always and on the GPU when there is one (one test body for both).
//! The CPU device's f32 dispatch is checked the same way. Every kernel with two versions
//! (`asif_kernels::kernel_version`) runs each body once per version.
mod common;

use asif_kernels::ops::{add, gelu, layer_norm, relu};
use common::{all_devices, assert_close, for_each_version, random, rng, tensor, to_f32, to_f64};

/// fp32 kernels against the f64 reference: forward sums of up to a thousand terms.
const TOLERANCE: f64 = 1e-5;

#[test]
fn layer_norm_matches_reference_on_odd_sizes() {
    let mut rng = rng(10);
    for_each_version(&["layer_norm"], |version| {
        for device in all_devices() {
            // v2 keeps rows of cols % 4 == 0 and cols <= 256 in registers (4: one vector on lane 0;
            // 132: a second vector on lane 0 only; 256: two on every lane) and takes its scalar path
            // for the rest; 70 rows are two chunks of its parameter-gradient partials.
            for &cols in &[1usize, 4, 31, 33, 132, 256, 1000] {
                for &(rows, eps) in &[(0usize, 1e-5f64), (1, 1e-12), (70, 1e-12), (5, 1e-5)] {
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
                    let what = |name: &str| {
                        format!(
                            "layer norm {} {name} rows {rows} cols {cols} eps {eps:e}",
                            version.name()
                        )
                    };
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
    });
}

#[test]
fn gelu_matches_reference_on_odd_sizes() {
    let mut rng = rng(11);
    // One data set per length, shared by the devices and the versions (0 and 1: nothing and only
    // the scalar tail; 4 and 6: one vector, then one vector and a tail of 2).
    let cases: Vec<_> = [0usize, 1, 4, 6, 31, 33, 256, 1000, 70_001]
        .into_iter()
        .map(|len| {
            let x = random(&mut rng, len, 0.0, 5.0);
            (len, x, random(&mut rng, len, 0.0, 1.0))
        })
        .collect();
    for_each_version(&["gelu"], |version| {
        for device in all_devices() {
            for (len, x, dy) in &cases {
                let (len, x, dy) = (*len, x.clone(), dy.clone());
                let x_t = tensor(&device, &[len], &x);
                let y = gelu::gelu_forward(&x_t).expect("forward");
                assert_close(
                    &format!("gelu {} y len {len}", version.name()),
                    &device,
                    &y,
                    &gelu::forward_reference(&x),
                    TOLERANCE,
                );
                let dx =
                    gelu::gelu_backward(&x_t, &tensor(&device, &[len], &dy)).expect("backward");
                assert_close(
                    &format!("gelu {} dx len {len}", version.name()),
                    &device,
                    &dx,
                    &gelu::backward_reference(&x, &dy),
                    TOLERANCE,
                );
            }
        }
    });
}

#[test]
fn relu_matches_reference_on_odd_sizes() {
    let mut rng = rng(13);
    // f32-representable inputs, so max and the select are exact; every 7th x exactly 0 (y = 0 and
    // dx = 0 at the kink, as the reference and PyTorch). One data set per length.
    let cases: Vec<_> = [0usize, 1, 4, 6, 31, 33, 256, 1000, 70_001]
        .into_iter()
        .map(|len| {
            let mut x = to_f64(&to_f32(&random(&mut rng, len, 0.0, 1.0)));
            x.iter_mut().step_by(7).for_each(|v| *v = 0.0);
            (len, x, to_f64(&to_f32(&random(&mut rng, len, 0.0, 1.0))))
        })
        .collect();
    for_each_version(&["relu"], |version| {
        for device in all_devices() {
            for (len, x, dy) in &cases {
                let (len, x, dy) = (*len, x.clone(), dy.clone());
                let x_t = tensor(&device, &[len], &x);
                let y = relu::relu_forward(&x_t).expect("forward");
                assert_close(
                    &format!("relu {} y len {len}", version.name()),
                    &device,
                    &y,
                    &relu::forward_reference(&x),
                    0.0,
                );
                let dx =
                    relu::relu_backward(&x_t, &tensor(&device, &[len], &dy)).expect("backward");
                assert_close(
                    &format!("relu {} dx len {len}", version.name()),
                    &device,
                    &dx,
                    &relu::backward_reference(&x, &dy),
                    0.0,
                );
            }
        }
    });
}

#[test]
fn add_assign_matches_reference() {
    let mut rng = rng(12);
    // f32-representable inputs: the f32 sum is then within half an ulp of the f64 one.
    let cases: Vec<_> = [0usize, 1, 4, 6, 33, 1000, 70_001]
        .into_iter()
        .map(|len| {
            let y = to_f64(&to_f32(&random(&mut rng, len, 0.0, 1.0)));
            (len, y, to_f64(&to_f32(&random(&mut rng, len, 0.0, 1.0))))
        })
        .collect();
    for_each_version(&["elementwise"], |version| {
        for device in all_devices() {
            for (len, y, x) in &cases {
                let (len, y, x) = (*len, y.clone(), x.clone());
                let mut y_t = tensor(&device, &[len], &y);
                add::add_assign(&mut y_t, &tensor(&device, &[len], &x)).expect("add_assign");
                let mut want = y.clone();
                add::add_assign_reference(&mut want, &x);
                assert_close(
                    &format!("add_assign {} len {len}", version.name()),
                    &device,
                    &y_t,
                    &want,
                    1e-7,
                );
            }
        }
    });
}

#[test]
fn layer_norm_eps_matters_when_the_row_variance_is_near_eps() {
    // Rows whose variance is about eps: rstd = 1/sqrt(var + eps) is about 1/sqrt(2 var), so a
    // kernel that dropped eps (or added it after the square root) misses by ~40 %.
    let mut rng = rng(14);
    let eps = 1e-5f64;
    // Uniform on [c − s, c + s) has variance s²/3: s = sqrt(3 eps).
    let spread = (3.0 * eps).sqrt();
    for_each_version(&["layer_norm"], |version| {
        for device in all_devices() {
            for &(rows, cols) in &[(3usize, 256usize), (9, 33)] {
                let x = to_f64(&to_f32(&random(&mut rng, rows * cols, 0.0, spread)));
                let gamma = random(&mut rng, cols, 1.0, 0.5);
                let beta = random(&mut rng, cols, 0.0, 0.5);
                let (y_ref, _, rstd_ref) =
                    layer_norm::forward_reference(&x, &gamma, &beta, cols, eps);
                let (y, saved) = layer_norm::layer_norm_forward(
                    &tensor(&device, &[rows, cols], &x),
                    &tensor(&device, &[cols], &gamma),
                    &tensor(&device, &[cols], &beta),
                    eps as f32,
                )
                .expect("forward");
                let what = |name: &str| {
                    format!(
                        "layer norm {} {name}, variance near eps, [{rows}, {cols}]",
                        version.name()
                    )
                };
                // Tolerance 1e-4: x carries ~5 significant digits of its deviation at this spread.
                assert_close(&what("rstd"), &device, &saved.rstd, &rstd_ref, 1e-4);
                assert_close(&what("y"), &device, &y, &y_ref, 1e-4);
            }
        }
    });
}

#[test]
fn layer_norm_of_a_constant_row_has_rstd_one_over_sqrt_eps() {
    // A constant row: variance exactly 0 (two-pass), so rstd = 1/sqrt(eps), y = β and x̂ = 0.
    let mut rng = rng(15);
    for_each_version(&["layer_norm"], |version| {
        for device in all_devices() {
            for &(cols, eps) in &[(256usize, 1e-5f64), (256, 1e-12), (33, 1e-12), (4, 1e-5)] {
                let rows = 2;
                let x = vec![2.5; rows * cols];
                let gamma = random(&mut rng, cols, 1.0, 0.5);
                let beta = random(&mut rng, cols, 0.0, 0.5);
                let dy = random(&mut rng, rows * cols, 0.0, 1.0);
                let x_t = tensor(&device, &[rows, cols], &x);
                let gamma_t = tensor(&device, &[cols], &gamma);
                let (y, saved) = layer_norm::layer_norm_forward(
                    &x_t,
                    &gamma_t,
                    &tensor(&device, &[cols], &beta),
                    eps as f32,
                )
                .expect("forward");
                let what = |name: &str| {
                    format!(
                        "layer norm {} {name}, constant row, cols {cols} eps {eps:e}",
                        version.name()
                    )
                };
                let want_rstd = 1.0 / (eps as f32 as f64).sqrt();
                assert_close(&what("rstd"), &device, &saved.rstd, &[want_rstd; 2], 1e-6);
                assert_close(&what("mean"), &device, &saved.mean, &[2.5; 2], 0.0);
                let beta_rows: Vec<f64> = (0..rows).flat_map(|_| to_f64(&to_f32(&beta))).collect();
                assert_close(&what("y"), &device, &y, &beta_rows, 0.0);
                // dx = rstd · (g − mean(g)) with x̂ = 0; dγ = Σ dy · x̂ = 0, dβ = Σ dy.
                let (_, mean_ref, rstd_ref) =
                    layer_norm::forward_reference(&x, &gamma, &beta, cols, eps);
                let (dx_ref, _, dbeta_ref) =
                    layer_norm::backward_reference(&x, &gamma, &mean_ref, &rstd_ref, &dy, cols);
                let grads = layer_norm::layer_norm_backward(
                    &x_t,
                    &gamma_t,
                    &saved,
                    &tensor(&device, &[rows, cols], &dy),
                )
                .expect("backward");
                assert_close(&what("dx"), &device, &grads.dx, &dx_ref, TOLERANCE);
                assert_close(
                    &what("dgamma"),
                    &device,
                    &grads.dgamma,
                    &vec![0.0; cols],
                    0.0,
                );
                assert_close(&what("dbeta"), &device, &grads.dbeta, &dbeta_ref, TOLERANCE);
            }
        }
    });
}

#[test]
fn layer_norm_backward_refuses_each_saved_statistic_of_the_wrong_shape() {
    // cargo-mutants, issue 16: the saved-statistics check's `||` → `&&` was unseen (no test
    // handed the backward a wrong saved state).
    let device = asif_kernels::Device::cpu();
    let (x, gamma, beta) = (
        tensor(&device, &[2, 3], &[0.0, 1.0, 2.0, 3.0, 5.0, 4.0]),
        tensor(&device, &[3], &[1.0; 3]),
        tensor(&device, &[3], &[0.0; 3]),
    );
    let (_, saved) = layer_norm::layer_norm_forward(&x, &gamma, &beta, 1e-5).unwrap();
    assert!(layer_norm::layer_norm_backward(&x, &gamma, &saved, &x).is_ok());
    let wrong = tensor(&device, &[3], &[1.0; 3]);
    for bad in [
        layer_norm::LayerNormSaved {
            mean: wrong.clone(),
            ..saved.clone()
        },
        layer_norm::LayerNormSaved {
            rstd: wrong.clone(),
            ..saved.clone()
        },
    ] {
        let error = layer_norm::layer_norm_backward(&x, &gamma, &bad, &x)
            .expect_err("a saved statistic of the wrong shape");
        assert_eq!(
            error.to_string(),
            "layer_norm: bad shape: saved statistics must have shape [2]"
        );
    }
}
