//! Shared by the integration tests: the devices a kernel test runs on, skip lines, random data
//! and error measures.
#![allow(dead_code)]

pub mod tiny_model;

use std::io::Write;
use std::sync::OnceLock;

use asif_kernels::autograd::gradcheck::GradCheckOptions;
use asif_kernels::kernel_version::{self, KernelVersion};
use asif_kernels::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Prints one line saying what was skipped and why. Written straight to stderr, which libtest
/// does not capture, so the line shows in every `cargo test` run.
pub fn skip(what: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {why}");
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

pub fn emulated() -> Device {
    Device::emulated(asif_emulator::launch)
}

/// GPU 0 if usable. Without one the GPU tier is skipped with one printed line per test binary,
/// unless ASIF_REQUIRE_GPU=1 (the GPU script sets it), which makes absence a failure. The GPU
/// parity tests run in the poison mode (`Device::uninitialized` fills with NaN, as the emulator
/// always does), so a kernel that leaves a slot of its output unwritten fails its parity test.
pub fn cuda() -> Option<Device> {
    static CUDA: OnceLock<Option<Device>> = OnceLock::new();
    CUDA.get_or_init(|| match Device::cuda(0) {
        Ok(device) => {
            device.set_poison_uninitialized(true);
            Some(device)
        }
        Err(e) => {
            assert!(
                !env_flag("ASIF_REQUIRE_GPU"),
                "ASIF_REQUIRE_GPU is set but {e}"
            );
            skip(
                "GPU parity tier (tier 4) in this test binary",
                &e.to_string(),
            );
            None
        }
    })
    .clone()
}

/// The devices that run kernels: the emulator, and the GPU when there is one. One test body
/// serves both tiers 2 (emulated) and 4 (GPU parity). ASIF_SKIP_EMULATED=1 (the GPU script sets
/// it: CI has run tier 2 already, and the GPU machine's minutes are few) leaves the emulator out.
pub fn kernel_devices() -> Vec<Device> {
    let mut devices = Vec::new();
    devices.extend(emulated_unless_skipped());
    devices.extend(cuda());
    devices
}

/// The emulated device, or None (with the one skip line per binary) under ASIF_SKIP_EMULATED=1:
/// for tests that run on the emulator alone (the training-step pins), which CI has run already
/// when the GPU script runs the binary.
pub fn emulated_unless_skipped() -> Option<Device> {
    static SKIP_EMULATED: OnceLock<bool> = OnceLock::new();
    let skip_emulated = *SKIP_EMULATED.get_or_init(|| {
        let set = env_flag("ASIF_SKIP_EMULATED");
        if set {
            skip(
                "emulated tier (tier 2) in this test binary's kernel tests",
                "ASIF_SKIP_EMULATED is set",
            );
        }
        set
    });
    (!skip_emulated).then(emulated)
}

/// Every device: the CPU reference (its f32 dispatch) plus the kernel devices.
pub fn all_devices() -> Vec<Device> {
    let mut devices = vec![Device::cpu()];
    devices.extend(kernel_devices());
    devices
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform values in [center − spread, center + spread).
pub fn random(rng: &mut StdRng, len: usize, center: f64, spread: f64) -> Vec<f64> {
    (0..len)
        .map(|_| center + spread * (2.0 * rng.random::<f64>() - 1.0))
        .collect()
}

pub fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

pub fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

pub fn tensor(device: &Device, shape: &[usize], values: &[f64]) -> Tensor {
    Tensor::from_vec(device, shape, to_f32(values)).expect("tensor")
}

/// ‖got − want‖ / ‖want‖ (absolute when `want` is zero).
pub fn relative_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    assert!(got.iter().all(|v| v.is_finite()), "non-finite output");
    if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}

/// Asserts `got` (f32, from a device) matches the f64 reference within `tolerance`.
pub fn assert_close(what: &str, device: &Device, got: &Tensor, want: &[f64], tolerance: f64) {
    let values = got.to_vec().expect("download");
    let error = relative_error(&values, want);
    assert!(
        error <= tolerance,
        "{what} on {}: relative error {error:.3e} > {tolerance:.1e}",
        device.name()
    );
}

/// Σ values·weights: the scalar a finite-difference check differentiates (a random projection of
/// an op's output).
pub fn weighted(values: &[f64], weights: &[f64]) -> f64 {
    values.iter().zip(weights).map(|(v, w)| v * w).sum()
}

/// The finite-difference settings of the op tests (f64 central differences, step 1e-5).
pub fn gradcheck_options() -> GradCheckOptions {
    GradCheckOptions {
        step: 1e-5,
        relative_tolerance: 1e-6,
        absolute_tolerance: 1e-8,
    }
}

/// The versions every kernel family has (`asif_kernels::kernel_version`), v1 first.
pub const VERSIONS: [KernelVersion; 2] = [KernelVersion::V1, KernelVersion::V2];

/// The versions every family in `families` has, oldest first: v1 and v2, and v3 when each of
/// them has one (`kernel_version::versions`; today HIE alone).
pub fn versions_of(families: &[&'static str]) -> Vec<KernelVersion> {
    let mut common: Vec<KernelVersion> =
        kernel_version::versions(families.first().copied().unwrap_or("")).to_vec();
    common.retain(|version| {
        families
            .iter()
            .all(|family| kernel_version::versions(family).contains(version))
    });
    common
}

/// Runs `body` once per kernel version with every family in `families` selecting that version on
/// this thread, so one test body checks v1, v2 and, for HIE, v3 (`versions_of`; the emulated
/// device always runs them all).
pub fn for_each_version(families: &[&'static str], mut body: impl FnMut(KernelVersion)) {
    fn nested(
        families: &[&'static str],
        version: KernelVersion,
        body: &mut dyn FnMut(KernelVersion),
    ) {
        match families.split_first() {
            None => body(version),
            Some((family, rest)) => {
                kernel_version::with_version(family, version, || nested(rest, version, body))
            }
        }
    }
    for version in versions_of(families) {
        nested(families, version, &mut body);
    }
}
