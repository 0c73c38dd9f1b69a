//! Dropout with the counter-based mask: the same seed gives the same mask on every device (so the
//! kernel's hash equals `asif_kernels::rng` bit for bit), the kept fraction is within sampling
//! error of 1 − p, gradient flows only through kept entries, evaluation is the identity.
mod common;

use asif_kernels::autograd::Tape;
use asif_kernels::ops::dropout::{self, DropoutMode};
use asif_kernels::{rng as hash_rng, Device, Error, Tensor};
use common::{all_devices, for_each_version, random, rng, tensor};

#[test]
fn same_seed_gives_the_same_mask_on_every_device() {
    for_each_version(&["dropout"], |version| {
        let len = 10_007;
        let (p, seed) = (0.3f32, 0xDEAD_BEEF_u64);
        let scale = dropout::keep_scale(p).unwrap();
        // The mask the CPU hash draws: kept entries of ones become exactly `scale`.
        let want: Vec<f32> = (0..len)
            .map(|i| {
                if hash_rng::dropout_keep(seed, i as u64, p) {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        for device in all_devices() {
            let ones = Tensor::from_vec(&device, &[len], vec![1.0; len]).unwrap();
            let y = dropout::dropout_forward(&ones, p, seed, DropoutMode::Train)
                .unwrap()
                .to_vec()
                .unwrap();
            assert_eq!(
                y,
                want,
                "{} mask on {} differs from the CPU hash",
                version.name(),
                device.name()
            );
            let other_seed = dropout::dropout_forward(&ones, p, seed + 1, DropoutMode::Train)
                .unwrap()
                .to_vec()
                .unwrap();
            assert_ne!(other_seed, want, "another seed must give another mask");
        }
    });
}

#[test]
fn kept_fraction_is_within_sampling_error() {
    for_each_version(&["dropout"], |version| {
        let len = 100_000;
        for device in all_devices() {
            for &p in &[0.1f32, 0.5, 0.9] {
                let ones = Tensor::from_vec(&device, &[len], vec![1.0; len]).unwrap();
                let y = dropout::dropout_forward(&ones, p, 7, DropoutMode::Train)
                    .unwrap()
                    .to_vec()
                    .unwrap();
                let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / len as f64;
                let want = 1.0 - p as f64;
                // Five standard errors of a binomial proportion.
                let bound = 5.0 * (want * (1.0 - want) / len as f64).sqrt();
                assert!(
                    (kept - want).abs() < bound,
                    "{} p {p} on {}: kept {kept}, want {want} ± {bound}",
                    version.name(),
                    device.name()
                );
                // Kept values are scaled so the expectation is unchanged.
                let mean = y.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
                assert!((mean - 1.0).abs() < bound / want, "p {p}: mean {mean}");
            }
        }
    });
}

#[test]
fn gradient_flows_only_through_kept_entries() {
    for_each_version(&["dropout"], |version| {
        let mut rng = rng(400);
        let len = 4_099;
        let (p, seed) = (0.25f32, 99u64);
        let x = random(&mut rng, len, 0.0, 1.0);
        let dy = random(&mut rng, len, 0.0, 1.0);
        for device in all_devices() {
            let tape = Tape::new();
            let x_var = tape.leaf(tensor(&device, &[len], &x));
            let y = dropout::dropout(&tape, &x_var, p, seed, DropoutMode::Train).unwrap();
            let grads = tape.backward(&y, tensor(&device, &[len], &dy)).unwrap();
            let dx = grads.get(&x_var).unwrap().to_vec().unwrap();
            let y = y.value().to_vec().unwrap();
            let scale = dropout::keep_scale(p).unwrap();
            for i in 0..len {
                if hash_rng::dropout_keep(seed, i as u64, p) {
                    assert_eq!(
                        dx[i],
                        dy[i] as f32 * scale,
                        "{} kept entry {i} on {}",
                        version.name(),
                        device.name()
                    );
                    assert_eq!(y[i], x[i] as f32 * scale);
                } else {
                    assert_eq!(
                        dx[i],
                        0.0,
                        "dropped entry {i} got gradient on {}",
                        device.name()
                    );
                    assert_eq!(y[i], 0.0);
                }
            }
        }
    });
}

#[test]
fn evaluation_is_the_identity() {
    for_each_version(&["dropout"], |_version| {
        let mut rng = rng(401);
        let x = random(&mut rng, 33, 0.0, 1.0);
        for device in all_devices() {
            let x_t = tensor(&device, &[3, 11], &x);
            let y = dropout::dropout_forward(&x_t, 0.5, 1, DropoutMode::Eval).unwrap();
            assert_eq!(y.to_vec().unwrap(), x_t.to_vec().unwrap());
            let dx = dropout::dropout_backward(&x_t, 0.5, 1, DropoutMode::Eval).unwrap();
            assert_eq!(dx.to_vec().unwrap(), x_t.to_vec().unwrap());
            // p = 0 in training keeps everything too.
            let y0 = dropout::dropout_forward(&x_t, 0.0, 1, DropoutMode::Train).unwrap();
            assert_eq!(y0.to_vec().unwrap(), x_t.to_vec().unwrap());
        }
    });
}

#[test]
fn probabilities_outside_zero_to_one_are_typed_errors() {
    let x = Tensor::zeros(&Device::cpu(), &[4]).unwrap();
    for p in [-0.1f32, 1.0, f32::NAN] {
        assert!(matches!(
            dropout::dropout_forward(&x, p, 0, DropoutMode::Train),
            Err(Error::Argument { .. })
        ));
    }
}

#[test]
fn dropout_backward_matches_finite_differences() {
    let mut rng = rng(402);
    let (p, seed) = (0.4f32, 5u64);
    let scale = 1.0 / (1.0 - p as f64);
    let x = random(&mut rng, 50, 0.0, 1.0);
    let w = random(&mut rng, 50, 0.0, 1.0);
    let analytic = dropout::apply_reference(&w, p, scale, seed);
    let f = |q: &[f64]| {
        dropout::apply_reference(q, p, scale, seed)
            .iter()
            .zip(&w)
            .map(|(a, b)| a * b)
            .sum::<f64>()
    };
    let options = asif_kernels::autograd::gradcheck::GradCheckOptions {
        step: 1e-5,
        relative_tolerance: 1e-6,
        absolute_tolerance: 1e-8,
    };
    asif_kernels::autograd::gradcheck::check_gradient(f, &x, &analytic, options).expect("dx");
}

#[test]
fn mask_seeds_are_equal_by_value_or_by_counter_stream_and_site() {
    // cargo-mutants, issue 16: `MaskSeed`'s `==` was unseen (each arm, each clause). Values by
    // value; step-counter seeds by the same counter (not an equal one), stream and site.
    use asif_kernels::device::{StepCounter, StepSeed};
    use dropout::MaskSeed;
    let device = Device::cpu();
    assert_eq!(MaskSeed::Value(7), MaskSeed::Value(7));
    assert_ne!(MaskSeed::Value(7), MaskSeed::Value(8));
    let counter = StepCounter::new(&device, 3).unwrap();
    let other = StepCounter::new(&device, 3).unwrap();
    let seed = |counter: &StepCounter, stream, site| {
        MaskSeed::Stepped(StepSeed {
            counter: counter.clone(),
            stream,
            site,
        })
    };
    assert_eq!(seed(&counter, 1, 2), seed(&counter, 1, 2));
    assert_ne!(seed(&counter, 1, 2), seed(&other, 1, 2));
    assert_ne!(seed(&counter, 1, 2), seed(&counter, 9, 2));
    assert_ne!(seed(&counter, 1, 2), seed(&counter, 1, 9));
    let value = MaskSeed::Value(seed(&counter, 1, 2).value().unwrap());
    assert_ne!(seed(&counter, 1, 2), value);
    assert_ne!(value, seed(&counter, 1, 2));
}
