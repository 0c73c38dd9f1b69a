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

/// L_b for `batch` sequences of window `n`: `"full"` = all n valid; `"short"` = realistic lengths,
/// geometric with p = 1/8 (mean about 8; the paper's datasets average 8.5 to 10.4 actions per
/// user) clipped to [1, n], as the PyTorch peers draw them (bench/peers/common.py), from the
/// crate's counter-based hash.
pub fn lengths(mode: &str, batch: usize, n: usize) -> Vec<i32> {
    (0..batch as u64)
        .map(|b| {
            if mode == "full" {
                return n as i32;
            }
            let u = f64::from(asif_kernels::rng::uniform(7, b)).max(1e-12);
            ((u.ln() / (1.0 - 1.0 / 8.0f64).ln()).ceil() as i32).clamp(1, n as i32)
        })
        .collect()
}
