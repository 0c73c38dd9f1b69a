//! The device layer: typed errors instead of panics, and the emulator built from the same kernels
//! as the GPU.
mod common;

use asif_kernels::device::{Buffer, KernelArg, LaunchConfig};
use asif_kernels::kernels::{self, KernelRef};
use asif_kernels::ops::{gelu, layer_norm, relu};
use asif_kernels::{Device, Error, Tensor};

#[test]
fn missing_gpu_is_an_error_value_not_a_panic() {
    match Device::cuda(0) {
        Ok(device) => assert!(device.name().starts_with("cuda:0")),
        Err(e) => assert!(
            matches!(e, Error::CudaUnavailable(_)),
            "unexpected error {e}"
        ),
    }
    // best_available never fails.
    let _ = Device::best_available();
}

#[test]
fn emulator_has_exactly_the_embedded_entry_points() {
    let mut embedded: Vec<String> = kernels::families()
        .iter()
        .flat_map(|f| f.entry_points.iter().map(|s| s.to_string()))
        .collect();
    let mut emulated = asif_emulator::kernel_names();
    embedded.sort();
    emulated.sort();
    assert_eq!(embedded, emulated);
    assert!(embedded.iter().any(|k| k == "layer_norm_forward"));
}

#[test]
fn launch_rejects_unknown_kernels_bad_shapes_and_the_cpu() {
    let device = common::emulated();
    let mut y: Buffer<f32> = device.zeros(4).expect("zeros");
    let x: Buffer<f32> = device.upload(&[1.0; 4]).expect("upload");

    let unknown = KernelRef::new("gelu", "gelu_sideways");
    let error = device
        .launch(
            unknown,
            LaunchConfig::linear(1, 32),
            &mut [KernelArg::F32In(&x)],
        )
        .expect_err("unknown kernel");
    assert!(matches!(error, Error::KernelNotFound { .. }), "{error}");

    let forward = KernelRef::new("gelu", "gelu_forward");
    let too_big = LaunchConfig::linear(1, 2048);
    let error = device
        .launch(
            forward,
            too_big,
            &mut [
                KernelArg::F32In(&x),
                KernelArg::F32Out(&mut y),
                KernelArg::I32(4),
            ],
        )
        .expect_err("2048 threads");
    assert!(matches!(error, Error::Argument { .. }), "{error}");

    let error = Device::cpu()
        .launch(
            forward,
            LaunchConfig::linear(1, 32),
            &mut [
                KernelArg::F32In(&x),
                KernelArg::F32Out(&mut y),
                KernelArg::I32(4),
            ],
        )
        .expect_err("cpu launches nothing");
    assert!(matches!(error, Error::Argument { .. }), "{error}");

    // A correct launch works and computes.
    device
        .launch(
            forward,
            LaunchConfig::linear(1, 32),
            &mut [
                KernelArg::F32In(&x),
                KernelArg::F32Out(&mut y),
                KernelArg::I32(4),
            ],
        )
        .expect("launch");
    let values = device.download(&y).expect("download");
    assert!(
        (values[0] - 0.841_344_7).abs() < 1e-6,
        "gelu(1) = {}",
        values[0]
    );
}

#[test]
fn ops_reject_bad_shapes_and_mixed_devices_with_typed_errors() {
    let cpu = Device::cpu();
    let emulated = common::emulated();
    let x = Tensor::from_vec(&cpu, &[2, 3], vec![0.0; 6]).expect("x");
    let gamma = Tensor::from_vec(&cpu, &[4], vec![1.0; 4]).expect("gamma");
    let beta = Tensor::from_vec(&cpu, &[3], vec![0.0; 3]).expect("beta");
    let error = layer_norm::layer_norm_forward(&x, &gamma, &beta, 1e-12)
        .expect_err("gamma of the wrong length");
    assert!(matches!(error, Error::Shape { .. }), "{error}");
    assert!(
        error.to_string().contains("layer_norm"),
        "the error names the op: {error}"
    );

    let gamma_elsewhere = Tensor::from_vec(&emulated, &[3], vec![1.0; 3]).expect("gamma");
    let error = layer_norm::layer_norm_forward(&x, &gamma_elsewhere, &beta, 1e-12)
        .expect_err("mixed devices");
    assert!(matches!(error, Error::DeviceMismatch { .. }), "{error}");

    let error = layer_norm::layer_norm_forward(&x, &beta, &beta, -1.0).expect_err("negative eps");
    assert!(matches!(error, Error::Argument { .. }), "{error}");

    let error = Tensor::from_vec(&cpu, &[2, 2], vec![0.0; 3]).expect_err("3 values for 4 slots");
    assert!(matches!(error, Error::Shape { .. }), "{error}");

    let dy = Tensor::from_vec(&cpu, &[5], vec![0.0; 5]).expect("dy");
    let error = gelu::gelu_backward(&x, &dy).expect_err("dy of another shape");
    assert!(matches!(error, Error::Shape { .. }), "{error}");
    let error = relu::relu_backward(&x, &dy).expect_err("dy of another shape");
    assert!(matches!(error, Error::Shape { .. }), "{error}");
    assert!(
        error.to_string().contains("relu"),
        "the error names the op: {error}"
    );
    let dy_elsewhere = Tensor::from_vec(&emulated, &[2, 3], vec![0.0; 6]).expect("dy");
    let error = relu::relu_backward(&x, &dy_elsewhere).expect_err("mixed devices");
    assert!(matches!(error, Error::DeviceMismatch { .. }), "{error}");
}
