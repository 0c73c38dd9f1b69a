//! Shared by the criterion benchmarks: deterministic inputs and the GPU (or its skip line).
#![allow(dead_code)]

use std::io::Write;

use asif_kernels::{Device, Tensor};

/// Values in [−half_width, half_width) from a cheap deterministic pattern: neither zeros nor
/// constant, identical on every run and device.
pub fn random_tensor_in(device: &Device, shape: &[usize], seed: u32, half_width: f32) -> Tensor {
    let len: usize = shape.iter().product();
    let values = (0..len)
        .map(|i| {
            let unit = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / 16_777_216.0;
            (unit * 2.0 - 1.0) * half_width
        })
        .collect();
    Tensor::from_vec(device, shape, values).expect("tensor")
}

/// Values in [−1, 1).
pub fn random_tensor(device: &Device, shape: &[usize], seed: u32) -> Tensor {
    random_tensor_in(device, shape, seed, 1.0)
}

/// GPU 0, or `None` after printing the one line that says the GPU benchmarks were skipped and why.
pub fn gpu() -> Option<Device> {
    match Device::cuda(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED GPU benchmarks: {e}");
            None
        }
    }
}
