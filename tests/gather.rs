//! Gather at index (u_b = H[b, L_b − 1]): tier 1, tiers 2 and 4, the tape.
mod common;

use asif_kernels::autograd::gradcheck::{check_gradient, GradCheckOptions};
use asif_kernels::autograd::Tape;
use asif_kernels::ops::gather::{self, GatherIndex};
use asif_kernels::{Device, Error, IndexTensor};
use common::{all_devices, assert_close, random, rng, tensor, to_f32, to_f64, weighted};
use rand::Rng;

#[test]
fn gather_backward_matches_finite_differences() {
    let mut rng = rng(300);
    let (batch, n, dim) = (4usize, 5usize, 3usize);
    let positions = vec![0usize, 4, 2, 4];
    let h = random(&mut rng, batch * n * dim, 0.0, 1.0);
    let w = random(&mut rng, batch * dim, 0.0, 1.0);
    let analytic = gather::backward_reference(&positions, &w, n, dim);
    let f = |p: &[f64]| weighted(&gather::forward_reference(p, &positions, n, dim), &w);
    let options = GradCheckOptions {
        step: 1e-5,
        relative_tolerance: 1e-6,
        absolute_tolerance: 1e-8,
    };
    check_gradient(f, &h, &analytic, options).expect("dh");
}

#[test]
fn gather_matches_reference_on_every_device() {
    let mut rng = rng(301);
    for device in all_devices() {
        for &(batch, n, dim) in &[(1usize, 1usize, 1usize), (7, 5, 33), (33, 50, 64)] {
            // Rounded to f32 so that the copy can be compared exactly.
            let h = to_f64(&to_f32(&random(&mut rng, batch * n * dim, 0.0, 1.0)));
            let lengths: Vec<i32> = (0..batch).map(|_| rng.random_range(1..=n as i32)).collect();
            let positions: Vec<usize> = lengths.iter().map(|&l| l as usize - 1).collect();
            let dout = to_f64(&to_f32(&random(&mut rng, batch * dim, 0.0, 1.0)));
            let h_t = tensor(&device, &[batch, n, dim], &h);
            let what = |s: &str| format!("gather {s} [{batch}, {n}, {dim}]");
            for index in [
                GatherIndex::Last(
                    IndexTensor::from_vec(&device, &[batch], lengths.clone()).unwrap(),
                ),
                GatherIndex::At(
                    IndexTensor::from_vec(
                        &device,
                        &[batch],
                        positions.iter().map(|&p| p as i32).collect(),
                    )
                    .unwrap(),
                ),
            ] {
                let out = gather::gather_forward(&h_t, &index).expect("forward");
                assert_eq!(out.shape(), &[batch, dim]);
                // A copy: exact.
                assert_close(
                    &what("u"),
                    &device,
                    &out,
                    &gather::forward_reference(&h, &positions, n, dim),
                    0.0,
                );
                let dh = gather::gather_backward(&index, &tensor(&device, &[batch, dim], &dout), n)
                    .expect("backward");
                assert_close(
                    &what("dh"),
                    &device,
                    &dh,
                    &gather::backward_reference(&positions, &dout, n, dim),
                    0.0,
                );
            }
        }
    }
}

#[test]
fn tape_gathers_the_last_valid_position() {
    let (batch, n, dim) = (2usize, 3usize, 2usize);
    let h: Vec<f64> = (0..batch * n * dim).map(|v| v as f64).collect();
    for device in all_devices() {
        let tape = Tape::new();
        let h_var = tape.leaf(tensor(&device, &[batch, n, dim], &h));
        let lengths = IndexTensor::from_vec(&device, &[batch], vec![2, 3]).unwrap();
        let u = gather::gather_last(&tape, &h_var, &lengths).expect("gather");
        // Sample 0 reads position 1 (values 2, 3); sample 1 reads position 2 (values 10, 11).
        assert_eq!(u.value().to_vec().unwrap(), vec![2.0, 3.0, 10.0, 11.0]);
        let grads = tape
            .backward(&u, tensor(&device, &[batch, dim], &[1.0, 2.0, 3.0, 4.0]))
            .expect("backward");
        let want = [0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0];
        assert_eq!(
            grads.get(&h_var).unwrap().to_vec().unwrap(),
            want.map(|v| v as f32).to_vec()
        );
    }
}

#[test]
fn lengths_outside_one_to_n_are_typed_errors_on_host_devices() {
    for device in [Device::cpu(), common::emulated()] {
        let h = tensor(&device, &[2, 3, 1], &[0.0; 6]);
        for bad in [vec![0, 1], vec![1, 4]] {
            let lengths = IndexTensor::from_vec(&device, &[2], bad).unwrap();
            assert!(matches!(
                gather::gather_forward(&h, &GatherIndex::Last(lengths)),
                Err(Error::Argument { .. })
            ));
        }
        let wrong_batch = IndexTensor::from_vec(&device, &[3], vec![1, 1, 1]).unwrap();
        assert!(matches!(
            gather::gather_forward(&h, &GatherIndex::Last(wrong_batch)),
            Err(Error::Shape { .. })
        ));
    }
}

#[test]
fn bad_shapes_are_refused_one_by_one() {
    // Each refusal by its own message (cargo-mutants, issue 16: the shape guard's clauses and
    // the 32-bit bound were unseen, since the test above takes any shape error).
    let device = Device::cpu();
    let zeros = |shape: &[usize]| tensor(&device, shape, &vec![0.0; shape.iter().product()]);
    let ones = |b: usize| IndexTensor::from_vec(&device, &[b], vec![1; b]).unwrap();
    for shape in [vec![2usize, 0, 3], vec![2, 3, 0], vec![2, 3]] {
        let error =
            gather::gather_forward(&zeros(&shape), &GatherIndex::Last(ones(2))).expect_err("bad h");
        assert_eq!(
            error.to_string(),
            format!("gather: bad shape: h must be [B, n, d] with n, d > 0, got {shape:?}")
        );
    }
    // The backward's n makes h's shape: n = 0 is refused there too.
    let error = gather::gather_backward(&GatherIndex::Last(ones(2)), &zeros(&[2, 3]), 0)
        .expect_err("n = 0");
    assert_eq!(
        error.to_string(),
        "gather: bad shape: h must be [B, n, d] with n, d > 0, got [2, 0, 3]"
    );
    // The smallest: n = d = 1, and no sequences at all.
    let out = gather::gather_forward(
        &tensor(&device, &[2, 1, 1], &[1.5, 2.5]),
        &GatherIndex::Last(ones(2)),
    );
    assert_eq!(out.unwrap().to_vec().unwrap(), [1.5, 2.5]);
    let none = IndexTensor::from_vec(&device, &[0], vec![]).unwrap();
    let out = gather::gather_forward(&zeros(&[0, 3, 2]), &GatherIndex::Last(none)).unwrap();
    assert_eq!(out.shape(), [0, 2]);
}

#[test]
fn a_hidden_state_past_the_32_bit_indexing_is_refused_on_the_kernel_devices() {
    // dh of 2048 sequences of n = 1024 rows of d = 1024: 2^31 elements, one past the kernels'
    // 32-bit indexing, asked of the backward by an 8 MiB dout (refused before dh is made). On
    // the kernel devices, where the check and the backward's allocation read the same
    // `GatherProblem::hidden_len`: a wrong product there (cargo-mutants: `*` → `+`, `/`) lets
    // the check pass and the launch make a dh of the wrong length, which fails at once instead
    // of filling 8 GiB on the CPU.
    for device in common::kernel_devices() {
        let lengths = IndexTensor::from_vec(&device, &[2048], vec![1; 2048]).unwrap();
        let dout = tensor(&device, &[2048, 1024], &vec![0.0; 1 << 21]);
        let error = gather::gather_backward(&GatherIndex::Last(lengths), &dout, 1024)
            .expect_err("2^31 elements");
        assert_eq!(
            error.to_string(),
            "gather: bad shape: 2147483648 elements exceed the kernel's 32-bit indexing",
            "{device:?}"
        );
    }
}
