//! Adam: a hand-computed step sequence, every device against the f64 reference over several
//! parameters in one launch, weight decay, typed errors.
mod common;

use asif_kernels::ops::adam::{self, Adam, AdamConfig};
use asif_kernels::{Device, Error, Tensor};
use common::{all_devices, assert_close, random, rng, tensor};

#[test]
fn matches_a_hand_computed_step_sequence() {
    // θ0 = 1, lr 0.1, β 0.9/0.999, ε 1e-8, gradients 1, −2, 0.5. By hand:
    //   t=1: m = 0.1,    v = 0.001,    m̂ = 1,        v̂ = 1,          θ = 1 − 0.1·1/(1 + 1e-8)
    //   t=2: m = −0.11,  v = 0.004999, m̂ = −0.11/0.19, v̂ = 0.004999/0.001999
    //   t=3: m = −0.049, v = 0.005244001, m̂ = −0.049/0.271, v̂ = 0.005244001/0.002997001
    let config = AdamConfig {
        lr: 0.1,
        ..AdamConfig::default()
    };
    let theta1 = 1.0 - 0.1 / (1.0 + 1e-8);
    let theta2 = theta1 - 0.1 * (-0.11 / 0.19) / ((0.004999f64 / 0.001999).sqrt() + 1e-8);
    let theta3 = theta2 - 0.1 * (-0.049 / 0.271) / ((0.005244001f64 / 0.002997001).sqrt() + 1e-8);
    let want = [theta1, theta2, theta3];
    assert!(
        (theta3 - 0.950_279_419_673_821_6).abs() < 1e-12,
        "hand sequence {theta3}"
    );
    for device in all_devices() {
        let mut params = vec![Tensor::from_vec(&device, &[1], vec![1.0]).unwrap()];
        let mut adam = Adam::new(config, &params).unwrap();
        for (t, &g) in [1.0f32, -2.0, 0.5].iter().enumerate() {
            adam.step(
                &mut params,
                &[Tensor::from_vec(&device, &[1], vec![g]).unwrap()],
            )
            .unwrap();
            let got = params[0].to_vec().unwrap()[0] as f64;
            assert!(
                (got - want[t]).abs() < 1e-6,
                "{} step {}: θ = {got}, want {}",
                device.name(),
                t + 1,
                want[t]
            );
        }
        assert_eq!(adam.steps(), 3);
    }
}

#[test]
fn one_launch_updates_every_parameter_like_the_reference() {
    let mut rng = rng(600);
    let shapes: [&[usize]; 4] = [&[33, 7], &[7], &[1], &[5, 3, 2]];
    for weight_decay in [0.0f32, 0.01] {
        let config = AdamConfig {
            lr: 1e-2,
            weight_decay,
            ..AdamConfig::default()
        };
        let initial: Vec<Vec<f64>> = shapes
            .iter()
            .map(|s| random(&mut rng, s.iter().product(), 0.0, 1.0))
            .collect();
        let grads: Vec<Vec<Vec<f64>>> = (0..4)
            .map(|_| {
                shapes
                    .iter()
                    .map(|s| random(&mut rng, s.iter().product(), 0.0, 1.0))
                    .collect()
            })
            .collect();
        // Reference over the flat concatenation, in f64.
        let mut flat: Vec<f64> = initial.concat();
        let (mut m, mut v) = (vec![0.0; flat.len()], vec![0.0; flat.len()]);
        for (t, step_grads) in grads.iter().enumerate() {
            adam::step_reference(
                &config,
                t as u64 + 1,
                &mut flat,
                &step_grads.concat(),
                &mut m,
                &mut v,
            );
        }
        for device in all_devices() {
            let mut params: Vec<Tensor> = shapes
                .iter()
                .zip(&initial)
                .map(|(s, p)| tensor(&device, s, p))
                .collect();
            let mut adam = Adam::new(config, &params).unwrap();
            for step_grads in &grads {
                let g: Vec<Tensor> = shapes
                    .iter()
                    .zip(step_grads)
                    .map(|(s, g)| tensor(&device, s, g))
                    .collect();
                adam.step(&mut params, &g).unwrap();
            }
            let mut offset = 0;
            for (i, p) in params.iter().enumerate() {
                assert_eq!(p.shape(), shapes[i]);
                let want = &flat[offset..offset + p.len()];
                assert_close(
                    &format!("adam parameter {i} weight decay {weight_decay}"),
                    &device,
                    p,
                    want,
                    1e-6,
                );
                offset += p.len();
            }
        }
    }
}

#[test]
fn a_shared_parameter_tensor_is_not_changed_behind_its_clones() {
    let device = Device::cpu();
    let p = Tensor::from_vec(&device, &[2], vec![1.0, 2.0]).unwrap();
    let clone = p.clone();
    let mut params = vec![p];
    let mut adam = Adam::new(AdamConfig::default(), &params).unwrap();
    adam.step(
        &mut params,
        &[Tensor::from_vec(&device, &[2], vec![1.0, 1.0]).unwrap()],
    )
    .unwrap();
    assert_eq!(clone.to_vec().unwrap(), vec![1.0, 2.0]);
    assert_ne!(params[0].to_vec().unwrap(), vec![1.0, 2.0]);
}

#[test]
fn mismatches_and_bad_settings_are_typed_errors() {
    let device = Device::cpu();
    let mut params = vec![Tensor::zeros(&device, &[3]).unwrap()];
    assert!(matches!(
        Adam::new(
            AdamConfig {
                beta1: 1.0,
                ..AdamConfig::default()
            },
            &params
        ),
        Err(Error::Argument { .. })
    ));
    assert!(matches!(
        Adam::new(
            AdamConfig {
                eps: 0.0,
                ..AdamConfig::default()
            },
            &params
        ),
        Err(Error::Argument { .. })
    ));
    let mut adam = Adam::new(AdamConfig::default(), &params).unwrap();
    assert!(matches!(
        adam.step(&mut params, &[Tensor::zeros(&device, &[4]).unwrap()]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        adam.step(&mut params, &[]),
        Err(Error::Shape { .. })
    ));
    let emulated = common::emulated();
    assert!(matches!(
        adam.step(&mut params, &[Tensor::zeros(&emulated, &[3]).unwrap()]),
        Err(Error::DeviceMismatch { .. })
    ));
}
