//! Softmax cross-entropy over all items: tier 1 (f64 finite differences), tiers 2 and 4 (every
//! device against the f64 reference, given logits and through u E_Xᵀ), stability at ±1e4, tape.
mod common;

use asif_kernels::autograd::gradcheck::check_gradient;
use asif_kernels::autograd::Tape;
use asif_kernels::ops::{cross_entropy, linear};
use asif_kernels::{Device, Error, IndexTensor, Tensor};
use common::{all_devices, assert_close, gradcheck_options, random, rng, tensor};
use rand::Rng;

/// Sums over up to ~2000 fp32 exponentials against f64.
const TOLERANCE: f64 = 1e-5;

fn targets(rng: &mut rand::rngs::StdRng, rows: usize, items: usize) -> Vec<i32> {
    (0..rows)
        .map(|_| rng.random_range(0..items as i32))
        .collect()
}

#[test]
fn gradient_matches_finite_differences() {
    let mut rng = rng(500);
    let (rows, items, d) = (4usize, 9usize, 5usize);
    let logits = random(&mut rng, rows * items, 0.0, 3.0);
    let t = targets(&mut rng, rows, items);
    let (_, grad) = cross_entropy::forward_reference(&logits, &t, items);
    check_gradient(
        |p: &[f64]| cross_entropy::forward_reference(p, &t, items).0,
        &logits,
        &grad,
        gradcheck_options(),
    )
    .expect("dlogits");

    // Through the prediction layer: L(u, E) = CE(u Eᵀ).
    let u = random(&mut rng, rows * d, 0.0, 1.0);
    let table = random(&mut rng, items * d, 0.0, 1.0);
    let logits = linear::matmul_transposed_forward_reference(&u, &table, d);
    let (_, g) = cross_entropy::forward_reference(&logits, &t, items);
    let (du, dtable) = linear::matmul_transposed_backward_reference(&u, &table, &g, d);
    let loss_u = |p: &[f64]| {
        cross_entropy::forward_reference(
            &linear::matmul_transposed_forward_reference(p, &table, d),
            &t,
            items,
        )
        .0
    };
    let loss_e = |p: &[f64]| {
        cross_entropy::forward_reference(
            &linear::matmul_transposed_forward_reference(&u, p, d),
            &t,
            items,
        )
        .0
    };
    check_gradient(loss_u, &u, &du, gradcheck_options()).expect("du");
    check_gradient(loss_e, &table, &dtable, gradcheck_options()).expect("dE");
}

#[test]
fn matches_reference_on_every_device() {
    let mut rng = rng(501);
    for device in all_devices() {
        // (17, 4001): 68017 logits, three of the CPU's parallel blocks of 2^15 (each block
        // of G is copied into place by its own offset).
        for &(rows, items) in &[(1usize, 1usize), (3, 33), (7, 257), (5, 2001), (17, 4001)] {
            let logits = random(&mut rng, rows * items, 0.0, 4.0);
            let t = targets(&mut rng, rows, items);
            let (loss_ref, grad_ref) = cross_entropy::forward_reference(&logits, &t, items);
            let logits_t = tensor(&device, &[rows, items], &logits);
            let targets_t = IndexTensor::from_vec(&device, &[rows], t.clone()).unwrap();
            let (loss, saved) = cross_entropy::softmax_cross_entropy_forward(&logits_t, &targets_t)
                .expect("forward");
            let what = |s: &str| format!("cross-entropy {s} B {rows} |V| {items}");
            assert_eq!(loss.shape(), &[] as &[usize]);
            assert_close(&what("loss"), &device, &loss, &[loss_ref], TOLERANCE);
            let dloss = tensor(&device, &[], &[0.5]);
            let dlogits =
                cross_entropy::softmax_cross_entropy_backward(&saved, &dloss).expect("backward");
            let half: Vec<f64> = grad_ref.iter().map(|g| 0.5 * g).collect();
            assert_close(&what("dlogits"), &device, &dlogits, &half, TOLERANCE);
            // The logits themselves are untouched.
            assert_close(&what("logits kept"), &device, &logits_t, &logits, 1e-7);
        }
    }
}

#[test]
fn over_items_matches_reference_on_every_device() {
    let mut rng = rng(502);
    for device in all_devices() {
        for &(rows, items, d) in &[(1usize, 2usize, 1usize), (5, 301, 33), (9, 1001, 64)] {
            let u = random(&mut rng, rows * d, 0.0, 1.0);
            let table = random(&mut rng, items * d, 0.0, 1.0);
            let t = targets(&mut rng, rows, items);
            let logits = linear::matmul_transposed_forward_reference(&u, &table, d);
            let (loss_ref, g) = cross_entropy::forward_reference(&logits, &t, items);
            let (du_ref, dtable_ref) =
                linear::matmul_transposed_backward_reference(&u, &table, &g, d);
            let (u_t, table_t) = (
                tensor(&device, &[rows, d], &u),
                tensor(&device, &[items, d], &table),
            );
            let targets_t = IndexTensor::from_vec(&device, &[rows], t.clone()).unwrap();
            let (loss, saved) =
                cross_entropy::cross_entropy_over_items_forward(&u_t, &table_t, &targets_t)
                    .expect("forward");
            let what = |s: &str| format!("CE over items {s} B {rows} |V| {items} d {d}");
            assert_close(&what("loss"), &device, &loss, &[loss_ref], TOLERANCE);
            let (du, dtable) = cross_entropy::cross_entropy_over_items_backward(
                &u_t,
                &table_t,
                &saved,
                &tensor(&device, &[], &[2.0]),
            )
            .expect("backward");
            let double = |v: &[f64]| v.iter().map(|x| 2.0 * x).collect::<Vec<_>>();
            assert_close(&what("du"), &device, &du, &double(&du_ref), TOLERANCE);
            assert_close(
                &what("dE"),
                &device,
                &dtable,
                &double(&dtable_ref),
                TOLERANCE,
            );
        }
    }
}

#[test]
fn stable_with_logits_of_plus_minus_ten_thousand() {
    // Row 0: the target is the huge logit (loss ≈ 0); row 1: the target is at −1e4 while another
    // item sits at +1e4 (loss ≈ 2e4); row 2: all equal at 1e4 (loss = ln |V|).
    let items = 37usize;
    let mut logits = vec![0.0f64; 3 * items];
    logits[5] = 1e4;
    logits[items + 3] = -1e4;
    logits[items + 8] = 1e4;
    logits[2 * items..].iter_mut().for_each(|v| *v = 1e4);
    let t = vec![5, 3, 11];
    let (loss_ref, grad_ref) = cross_entropy::forward_reference(&logits, &t, items);
    let want_loss =
        (0.0 + (1e4 + 1e4 + ((-1e4f64).exp() * 35.0 + 1.0).ln()) + (items as f64).ln()) / 3.0;
    assert!(
        (loss_ref - want_loss).abs() < 1e-9,
        "reference {loss_ref} vs {want_loss}"
    );
    for device in all_devices() {
        let logits_t = tensor(&device, &[3, items], &logits);
        let targets_t = IndexTensor::from_vec(&device, &[3], t.clone()).unwrap();
        let (loss, saved) =
            cross_entropy::softmax_cross_entropy_forward(&logits_t, &targets_t).unwrap();
        let loss = loss.to_vec().unwrap()[0] as f64;
        assert!(
            loss.is_finite() && (loss - want_loss).abs() <= 1e-6 * want_loss,
            "{}: loss {loss}, want {want_loss}",
            device.name()
        );
        let grad = saved.gradient.to_vec().unwrap();
        assert!(grad.iter().all(|g| g.is_finite()));
        assert_close(
            "gradient at ±1e4",
            &device,
            &saved.gradient,
            &grad_ref,
            TOLERANCE,
        );
    }
}

#[test]
fn tape_trains_through_the_prediction_layer() {
    let mut rng = rng(503);
    let (rows, items, d) = (4usize, 23usize, 8usize);
    let u = random(&mut rng, rows * d, 0.0, 1.0);
    let table = random(&mut rng, items * d, 0.0, 1.0);
    let t = targets(&mut rng, rows, items);
    let logits = linear::matmul_transposed_forward_reference(&u, &table, d);
    let (_, g) = cross_entropy::forward_reference(&logits, &t, items);
    let (du_ref, dtable_ref) = linear::matmul_transposed_backward_reference(&u, &table, &g, d);
    for device in all_devices() {
        // The fused op and the two-op chain (logits, then CE on logits) agree.
        for fused in [true, false] {
            let tape = Tape::new();
            let u_var = tape.leaf(tensor(&device, &[rows, d], &u));
            let e_var = tape.leaf(tensor(&device, &[items, d], &table));
            let targets_t = IndexTensor::from_vec(&device, &[rows], t.clone()).unwrap();
            let loss = if fused {
                cross_entropy::cross_entropy_over_items(&tape, &u_var, &e_var, &targets_t).unwrap()
            } else {
                let logits = linear::matmul_transposed(&tape, &u_var, &e_var).unwrap();
                cross_entropy::softmax_cross_entropy(&tape, &logits, &targets_t).unwrap()
            };
            let grads = tape
                .backward(&loss, Tensor::from_vec(&device, &[], vec![1.0]).unwrap())
                .unwrap();
            assert_close(
                &format!("tape du fused {fused}"),
                &device,
                grads.get(&u_var).unwrap(),
                &du_ref,
                TOLERANCE,
            );
            assert_close(
                &format!("tape dE fused {fused}"),
                &device,
                grads.get(&e_var).unwrap(),
                &dtable_ref,
                TOLERANCE,
            );
        }
    }
}

#[test]
fn bad_targets_are_typed_errors_on_host_devices() {
    for device in [Device::cpu(), common::emulated()] {
        let logits = tensor(&device, &[2, 3], &[0.0; 6]);
        let bad = IndexTensor::from_vec(&device, &[2], vec![0, 3]).unwrap();
        assert!(matches!(
            cross_entropy::softmax_cross_entropy_forward(&logits, &bad),
            Err(Error::Argument { .. })
        ));
        let short = IndexTensor::from_vec(&device, &[1], vec![0]).unwrap();
        assert!(matches!(
            cross_entropy::softmax_cross_entropy_forward(&logits, &short),
            Err(Error::Shape { .. })
        ));
    }
}

#[test]
fn bad_arguments_are_refused_one_by_one() {
    // Each refusal by its own message (cargo-mutants, issue 16: the targets guard's clauses, the
    // grid and 32-bit bounds, the upstream scalar's check and the over-items shape guard were
    // unseen, since the test above takes any shape error).
    for device in [Device::cpu(), common::emulated()] {
        let zeros = |shape: &[usize]| tensor(&device, shape, &vec![0.0; shape.iter().product()]);
        let index = |n: usize| IndexTensor::from_vec(&device, &[n], vec![0; n]).unwrap();
        let refused = |result: asif_kernels::Result<(Tensor, cross_entropy::CrossEntropySaved)>,
                       message: &str| {
            let error = result.map(|_| ()).expect_err(message);
            assert_eq!(
                error.to_string(),
                format!("cross_entropy: bad shape: {message}"),
                "{device:?}"
            );
        };
        // No rows, or no items, each with targets of the right shape.
        refused(
            cross_entropy::softmax_cross_entropy_forward(&zeros(&[0, 3]), &index(0)),
            "targets must be [B] for 0 rows of 3 items (both > 0), got [0]",
        );
        refused(
            cross_entropy::softmax_cross_entropy_forward(&zeros(&[2, 0]), &index(2)),
            "targets must be [B] for 2 rows of 0 items (both > 0), got [2]",
        );
        // The grid's bound: 65535 rows run (on the CPU: the emulator takes 45 s over 65535
        // blocks, and the check is the same code), one more is refused.
        if matches!(device, Device::Cpu) {
            let (loss, _) =
                cross_entropy::softmax_cross_entropy_forward(&zeros(&[65_535, 1]), &index(65_535))
                    .unwrap();
            assert_eq!(loss.to_vec().unwrap(), [0.0]);
        }
        refused(
            cross_entropy::softmax_cross_entropy_forward(&zeros(&[65_536, 1]), &index(65_536)),
            "65536 rows exceed the kernel's grid (B ≤ 65535)",
        );
        // 65535 × 32769 logits of u E_Xᵀ: past the 32-bit indexing, from a 256 KiB u and a
        // 128 KiB E_X (refused before the logits are made; a wrong product in `Logits::len`
        // makes them the wrong length, which the GEMM refuses).
        refused(
            cross_entropy::cross_entropy_over_items_forward(
                &zeros(&[65_535, 1]),
                &zeros(&[32_769, 1]),
                &index(65_535),
            ),
            "2147516415 elements exceed the kernel's 32-bit indexing",
        );
        // u and E_X of different widths, and of width 0.
        for (u, table) in [([2usize, 3usize], [4usize, 2usize]), ([2, 0], [4, 0])] {
            refused(
                cross_entropy::cross_entropy_over_items_forward(
                    &zeros(&u),
                    &zeros(&table),
                    &index(2),
                ),
                &format!("u must be [B, d] and the table [|V|, d]; got {u:?} and {table:?}"),
            );
        }
        // The upstream gradient: one value on the logits' device.
        let (_, saved) =
            cross_entropy::softmax_cross_entropy_forward(&zeros(&[2, 3]), &index(2)).unwrap();
        let other = if matches!(device, Device::Cpu) {
            common::emulated()
        } else {
            Device::cpu()
        };
        for (dloss, shape) in [(zeros(&[2]), "[2]"), (tensor(&other, &[], &[1.0]), "[]")] {
            let error = cross_entropy::softmax_cross_entropy_backward(&saved, &dloss)
                .expect_err("a bad upstream gradient");
            assert_eq!(
                error.to_string(),
                format!(
                    "cross_entropy: bad shape: the upstream gradient must be one value on {}, got {shape} on {}",
                    device.name(),
                    dloss.device().name()
                )
            );
        }
    }
}
