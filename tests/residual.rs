//! Residual add and the fused LN(Dropout(x) + residual): fused == unfused on every device, the
//! gradients by finite differences (f64, through the shared layer-norm reference), the tape.
mod common;

use asif_kernels::autograd::gradcheck::{check_gradient, GradCheckOptions};
use asif_kernels::autograd::Tape;
use asif_kernels::ops::dropout::{self, DropoutMode};
use asif_kernels::ops::residual_norm::{self, DropoutSettings};
use asif_kernels::ops::{add, layer_norm};
use asif_kernels::{Device, Error, Tensor};
use common::{all_devices, assert_close, for_each_version, random, rng, tensor, to_f64, weighted};

/// The kernel families of the sublayer, fused and unfused: both paths run the same version.
const FAMILIES: [&str; 4] = ["residual_norm", "layer_norm", "dropout", "elementwise"];

const TOLERANCE: f64 = 1e-5;

/// f64 reference of y = LN(Dropout(x) + r): the dropout and layer-norm references composed.
fn reference(
    x: &[f64],
    r: &[f64],
    gamma: &[f64],
    beta: &[f64],
    cols: usize,
    eps: f64,
    d: &DropoutSettings,
) -> Vec<f64> {
    let dropped = match d.mode {
        DropoutMode::Train => {
            dropout::apply_reference(x, d.p, 1.0 / (1.0 - d.p as f64), d.seed.value().unwrap())
        }
        DropoutMode::Eval => x.to_vec(),
    };
    let z = add::add_reference(&dropped, r);
    layer_norm::forward_reference(&z, gamma, beta, cols, eps).0
}

#[test]
fn fused_backward_matches_finite_differences() {
    let mut rng = rng(700);
    let (rows, cols, eps) = (3usize, 7usize, 1e-5);
    let d = DropoutSettings {
        p: 0.3,
        seed: 17u64.into(),
        mode: DropoutMode::Train,
    };
    let x = random(&mut rng, rows * cols, 0.0, 1.0);
    let r = random(&mut rng, rows * cols, 0.5, 1.0);
    let gamma = random(&mut rng, cols, 1.0, 0.5);
    let beta = random(&mut rng, cols, 0.0, 0.5);
    let w = random(&mut rng, rows * cols, 0.0, 1.0);
    // Analytic, composed from the references exactly as the op's backward composes the ops.
    let scale = 1.0 / (1.0 - d.p as f64);
    let z = add::add_reference(
        &dropout::apply_reference(&x, d.p, scale, d.seed.value().unwrap()),
        &r,
    );
    let (_, mean, rstd) = layer_norm::forward_reference(&z, &gamma, &beta, cols, eps);
    let (dz, dgamma, _) = layer_norm::backward_reference(&z, &gamma, &mean, &rstd, &w, cols);
    let dx = dropout::apply_reference(&dz, d.p, scale, d.seed.value().unwrap());
    let options = GradCheckOptions {
        step: 1e-5,
        relative_tolerance: 1e-6,
        absolute_tolerance: 1e-8,
    };
    check_gradient(
        |p: &[f64]| weighted(&reference(p, &r, &gamma, &beta, cols, eps, &d), &w),
        &x,
        &dx,
        options,
    )
    .expect("dx");
    check_gradient(
        |p: &[f64]| weighted(&reference(&x, p, &gamma, &beta, cols, eps, &d), &w),
        &r,
        &dz,
        options,
    )
    .expect("dresidual");
    check_gradient(
        |p: &[f64]| weighted(&reference(&x, &r, p, &beta, cols, eps, &d), &w),
        &gamma,
        &dgamma,
        options,
    )
    .expect("dgamma");
}

#[test]
fn fused_equals_unfused_on_every_device() {
    for_each_version(&FAMILIES, |version| {
        let mut rng = rng(701);
        for device in all_devices() {
            for &(rows, cols) in &[(1usize, 1usize), (5, 33), (6, 132), (17, 256), (3, 300)] {
                for mode in [DropoutMode::Train, DropoutMode::Eval] {
                    let d = DropoutSettings {
                        p: 0.2,
                        seed: 1234u64.into(),
                        mode,
                    };
                    let x = random(&mut rng, rows * cols, 0.0, 1.0);
                    let r = random(&mut rng, rows * cols, 2.0, 1.0);
                    let gamma = random(&mut rng, cols, 1.0, 0.5);
                    let beta = random(&mut rng, cols, 0.0, 0.5);
                    let dy = random(&mut rng, rows * cols, 0.0, 1.0);
                    let shape = [rows, cols];
                    let (x_t, r_t) = (tensor(&device, &shape, &x), tensor(&device, &shape, &r));
                    let (g_t, b_t) = (
                        tensor(&device, &[cols], &gamma),
                        tensor(&device, &[cols], &beta),
                    );
                    let (y, saved) = residual_norm::residual_layer_norm_forward(
                        &x_t,
                        &r_t,
                        &g_t,
                        &b_t,
                        1e-12,
                        d.clone(),
                    )
                    .unwrap();
                    let (y_unfused, saved_unfused) =
                        residual_norm::unfused_forward(&x_t, &r_t, &g_t, &b_t, 1e-12, d.clone())
                            .unwrap();
                    let what = |s: &str| {
                        format!(
                            "residual LN {} {s} [{rows}, {cols}] {mode:?} on {}",
                            version.name(),
                            device.name()
                        )
                    };
                    // Same arithmetic in the same order: equal to rounding.
                    let unfused = to_f64(&y_unfused.to_vec().unwrap());
                    assert_close(&what("fused vs unfused y"), &device, &y, &unfused, 1e-6);
                    assert_close(
                        &what("fused vs unfused z"),
                        &device,
                        &saved.z,
                        &to_f64(&saved_unfused.z.to_vec().unwrap()),
                        1e-7,
                    );
                    // And both against the f64 reference.
                    assert_close(
                        &what("y"),
                        &device,
                        &y,
                        &reference(&x, &r, &gamma, &beta, cols, 1e-12, &d),
                        TOLERANCE,
                    );

                    let grads = residual_norm::residual_layer_norm_backward(
                        &g_t,
                        &saved,
                        &tensor(&device, &shape, &dy),
                        d.clone(),
                    )
                    .unwrap();
                    let scale = 1.0 / (1.0 - d.p as f64);
                    let dropped = if mode == DropoutMode::Train {
                        dropout::apply_reference(&x, d.p, scale, d.seed.value().unwrap())
                    } else {
                        x.clone()
                    };
                    let z = add::add_reference(&dropped, &r);
                    let (_, mean, rstd) =
                        layer_norm::forward_reference(&z, &gamma, &beta, cols, 1e-12);
                    let (dz, dgamma, dbeta) =
                        layer_norm::backward_reference(&z, &gamma, &mean, &rstd, &dy, cols);
                    let dx = if mode == DropoutMode::Train {
                        dropout::apply_reference(&dz, d.p, scale, d.seed.value().unwrap())
                    } else {
                        dz.clone()
                    };
                    assert_close(&what("dx"), &device, &grads.dx, &dx, TOLERANCE);
                    assert_close(
                        &what("dresidual"),
                        &device,
                        &grads.dresidual,
                        &dz,
                        TOLERANCE,
                    );
                    assert_close(&what("dgamma"), &device, &grads.dgamma, &dgamma, TOLERANCE);
                    assert_close(&what("dbeta"), &device, &grads.dbeta, &dbeta, TOLERANCE);
                }
            }
        }
    });
}

#[test]
fn residual_add_and_its_tape_face() {
    for_each_version(&FAMILIES, |version| {
        let mut rng = rng(702);
        let len = 1001;
        let a = random(&mut rng, len, 0.0, 1.0);
        let b = random(&mut rng, len, 0.0, 1.0);
        let seed = random(&mut rng, len, 0.0, 1.0);
        for device in all_devices() {
            let out = add::add_forward(&tensor(&device, &[len], &a), &tensor(&device, &[len], &b))
                .unwrap();
            assert_close(
                &format!("{} a + b", version.name()),
                &device,
                &out,
                &add::add_reference(&a, &b),
                1e-7,
            );
            let tape = Tape::new();
            let a_var = tape.leaf(tensor(&device, &[len], &a));
            let b_var = tape.leaf(tensor(&device, &[len], &b));
            let sum = add::add(&tape, &a_var, &b_var).unwrap();
            // a used twice: a + (a + b) gives da = 2·seed.
            let twice = add::add(&tape, &a_var, &sum).unwrap();
            let grads = tape
                .backward(&twice, tensor(&device, &[len], &seed))
                .unwrap();
            let double: Vec<f64> = seed.iter().map(|s| 2.0 * s).collect();
            assert_close(
                &format!("{} da", version.name()),
                &device,
                grads.get(&a_var).unwrap(),
                &double,
                1e-7,
            );
            assert_close("db", &device, grads.get(&b_var).unwrap(), &seed, 1e-7);
        }
    });
}

#[test]
fn tape_face_of_the_fused_sublayer() {
    for_each_version(&FAMILIES, |version| {
        let mut rng = rng(703);
        let (rows, cols) = (4usize, 9usize);
        let d = DropoutSettings {
            p: 0.5,
            seed: 3u64.into(),
            mode: DropoutMode::Train,
        };
        let x = random(&mut rng, rows * cols, 0.0, 1.0);
        let r = random(&mut rng, rows * cols, 0.0, 1.0);
        let gamma = random(&mut rng, cols, 1.0, 0.5);
        let beta = random(&mut rng, cols, 0.0, 0.5);
        let seed = random(&mut rng, rows * cols, 0.0, 1.0);
        for device in all_devices() {
            let tape = Tape::new();
            let vars: Vec<_> = [
                (&x, vec![rows, cols]),
                (&r, vec![rows, cols]),
                (&gamma, vec![cols]),
                (&beta, vec![cols]),
            ]
            .into_iter()
            .map(|(v, s)| tape.leaf(tensor(&device, &s, v)))
            .collect();
            let y = residual_norm::residual_layer_norm(
                &tape,
                &vars[0],
                &vars[1],
                &vars[2],
                &vars[3],
                1e-12,
                d.clone(),
            )
            .unwrap();
            let grads = tape
                .backward(&y, tensor(&device, &[rows, cols], &seed))
                .unwrap();
            let (_, saved) = residual_norm::unfused_forward(
                vars[0].value(),
                vars[1].value(),
                vars[2].value(),
                vars[3].value(),
                1e-12,
                d.clone(),
            )
            .unwrap();
            let want = residual_norm::residual_layer_norm_backward(
                vars[2].value(),
                &saved,
                &tensor(&device, &[rows, cols], &seed),
                d.clone(),
            )
            .unwrap();
            for (i, w) in [&want.dx, &want.dresidual, &want.dgamma, &want.dbeta]
                .into_iter()
                .enumerate()
            {
                assert_close(
                    &format!("{} tape gradient {i}", version.name()),
                    &device,
                    grads.get(&vars[i]).unwrap(),
                    &to_f64(&w.to_vec().unwrap()),
                    1e-6,
                );
            }
        }
    });
}

#[test]
fn mismatched_shapes_are_typed_errors() {
    for device in [Device::cpu(), common::emulated()] {
        let x = tensor(&device, &[2, 3], &[0.0; 6]);
        let r = tensor(&device, &[3, 2], &[0.0; 6]);
        let g = tensor(&device, &[3], &[1.0; 3]);
        let d = DropoutSettings {
            p: 0.1,
            seed: 0u64.into(),
            mode: DropoutMode::Train,
        };
        assert!(matches!(
            residual_norm::residual_layer_norm_forward(&x, &r, &g, &g, 1e-12, d),
            Err(Error::Shape { .. })
        ));
    }
}

#[test]
fn bad_arguments_are_refused_one_by_one_on_the_kernel_devices() {
    // Each refusal of the fused kernel path by its own message (cargo-mutants, issue 16: the
    // beta clause's `||` and eps' `&&` were unseen, since the old test gave one bad shape and
    // took any refusal). The CPU runs the unfused ops, which check for themselves.
    let device = common::emulated();
    let zeros = |shape: &[usize]| tensor(&device, shape, &vec![0.0; shape.iter().product()]);
    let forward = |x: &Tensor, r: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32| {
        let d = DropoutSettings {
            p: 0.1,
            seed: 0u64.into(),
            mode: DropoutMode::Train,
        };
        residual_norm::residual_layer_norm_forward(x, r, gamma, beta, eps, d).map(|_| ())
    };
    let (x, g, flat, wrong) = (zeros(&[2, 3]), zeros(&[3]), zeros(&[2, 0]), zeros(&[2]));
    let (transposed, empty) = (zeros(&[3, 2]), zeros(&[0]));
    for (x, r, gamma, beta, message) in [
        (
            &flat,
            &flat,
            &empty,
            &empty,
            "x [2, 0], residual [2, 0], gamma [0], beta [0]",
        ),
        (
            &x,
            &transposed,
            &g,
            &g,
            "x [2, 3], residual [3, 2], gamma [3], beta [3]",
        ),
        (
            &x,
            &x,
            &wrong,
            &g,
            "x [2, 3], residual [2, 3], gamma [2], beta [3]",
        ),
        (
            &x,
            &x,
            &g,
            &wrong,
            "x [2, 3], residual [2, 3], gamma [3], beta [2]",
        ),
    ] {
        let error = forward(x, r, gamma, beta, 1e-12).expect_err(message);
        assert_eq!(
            error.to_string(),
            format!("residual_layer_norm: bad shape: {message}: need equal [.., d] and [d]")
        );
    }
    for eps in [-1.0, f32::INFINITY, f32::NAN] {
        let error = forward(&x, &x, &g, &g, eps).expect_err("bad eps");
        assert_eq!(
            error.to_string(),
            format!(
                "residual_layer_norm: bad argument: eps must be finite and non-negative, got {eps}"
            )
        );
    }
    forward(&x, &x, &g, &g, 0.0).expect("eps 0 is allowed");
}
