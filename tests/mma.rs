//! Tier 2 (emulated) and tier 4 (GPU parity): the layout self-test of `kernels/mma.cuh`, run
//! through `kernels/mma_selftest.cu` (`docs/tensor-cores.md`).
//!
//! Each kernel multiplies one tile on one warp. Two kinds of tiles:
//! - integer-valued (|x| ≤ 8): every product and partial sum is an integer below 2^24, so the
//!   expected D is exact whatever the tensor core's accumulation order, and any fragment element
//!   in the wrong place shows as a wrong integer;
//! - random in [−1, 1): D is held against the f64 product of the inputs as the instruction sees
//!   them (rounded to TF32 or bf16 on the host, within 1e-5: that pins the rounding mode), and
//!   against the f64 product of the unrounded inputs within the precision's tolerance tier
//!   ([`Precision::relative_tolerance`]).
//!
//! The cp.async tests also run a kernel that leaves one wait out: the emulator poisons a copy's
//! destination until its wait, so the product comes out NaN, every run (emulator only: on a GPU
//! that is a race).
mod common;

use asif_kernels::device::{KernelArg, LaunchConfig};
use asif_kernels::kernels::KernelRef;
use asif_kernels::{Device, Error, Precision, Result};
use common::{kernel_devices, rng};
use rand::rngs::StdRng;

const FAMILY: &str = "mma_selftest";
/// Rows of A, C and D.
const M: usize = 16;
/// Columns of B, C and D.
const N: usize = 8;

/// Relative error allowed against the f64 product of the inputs as the instruction sees them:
/// only fp32 accumulation separates the two.
const ROUNDED_INPUT_TOLERANCE: f64 = 1e-5;

/// cvt.rna.tf32.f32 on the host: 10 mantissa bits, nearest, ties away from zero.
fn tf32(x: f32) -> f32 {
    let bits = x.to_bits();
    if bits & 0x7f80_0000 == 0x7f80_0000 {
        return x;
    }
    f32::from_bits((bits + 0x1000) & !0x1fff)
}

/// cvt.rn.bf16.f32 on the host: 8 mantissa bits, nearest even (finite inputs).
fn bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    f32::from_bits((bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff_0000)
}

/// What an instruction does to its inputs in `precision` (3xTF32 keeps fp32 values).
fn rounding(precision: Precision) -> fn(f32) -> f32 {
    match precision {
        Precision::Fp32 => |x| x,
        Precision::Tf32 => tf32,
        Precision::Bf16 => bf16,
    }
}

/// D = round(A)·round(B) + C in f64; A is M×depth, B depth×N, both row-major.
fn host_product(a: &[f32], b: &[f32], c: &[f32], depth: usize, round: fn(f32) -> f32) -> Vec<f64> {
    let mut d = vec![0.0f64; M * N];
    for row in 0..M {
        for col in 0..N {
            let mut sum = c[row * N + col] as f64;
            for k in 0..depth {
                sum += round(a[row * depth + k]) as f64 * round(b[k * N + col]) as f64;
            }
            d[row * N + col] = sum;
        }
    }
    d
}

fn transpose(b: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| b[(i % rows) * cols + i / rows])
        .collect()
}

/// Integers in −8..=8.
fn integers(rng: &mut StdRng, len: usize) -> Vec<f32> {
    common::random(rng, len, 0.5, 8.5)
        .into_iter()
        .map(|v| v.floor() as f32)
        .collect()
}

fn uniform(rng: &mut StdRng, len: usize) -> Vec<f32> {
    common::to_f32(&common::random(rng, len, 0.0, 1.0))
}

/// Launches `kernel` on one warp with the inputs in order, an output of `output_len` floats
/// (NaN before the launch, so a slot the kernel misses shows), and `omit_wait` when given.
fn launch(
    device: &Device,
    kernel: &'static str,
    inputs: &[&[f32]],
    output_len: usize,
    omit_wait: Option<i32>,
    threads: u32,
) -> Result<Vec<f32>> {
    let buffers = inputs
        .iter()
        .map(|values| device.upload(values))
        .collect::<Result<Vec<_>>>()?;
    let mut output = device.upload(&vec![f32::NAN; output_len])?;
    {
        let mut args: Vec<KernelArg<'_>> = buffers.iter().map(KernelArg::F32In).collect();
        args.push(KernelArg::F32Out(&mut output));
        args.extend(omit_wait.map(KernelArg::I32));
        device.launch(
            KernelRef::new(FAMILY, kernel),
            LaunchConfig::linear(1, threads),
            &mut args,
        )?;
    }
    device.download(&output)
}

fn relative_error(got: &[f32], want: &[f64]) -> f64 {
    assert!(
        got.iter().all(|v| v.is_finite()),
        "non-finite output: {got:?}"
    );
    common::relative_error(got, want)
}

/// Exact on integer tiles.
fn assert_exact(what: &str, device: &Device, got: &[f32], want: &[f64]) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g as f64,
            w,
            "{what} on {}: D[{}][{}] = {g}, want {w}",
            device.name(),
            i / N,
            i % N
        );
    }
}

/// Random tiles: tight against the rounded inputs, within the tier against the unrounded ones.
fn assert_within_tiers(
    what: &str,
    device: &Device,
    got: &[f32],
    rounded: &[f64],
    unrounded: &[f64],
    precision: Precision,
) {
    let error = relative_error(got, rounded);
    assert!(
        error <= ROUNDED_INPUT_TOLERANCE,
        "{what} on {}: relative error {error:.3e} against the product of the {precision}-rounded inputs (> {ROUNDED_INPUT_TOLERANCE:.0e})",
        device.name()
    );
    let error = relative_error(got, unrounded);
    let tier = precision.relative_tolerance();
    assert!(
        error <= tier,
        "{what} on {}: relative error {error:.3e} against the exact product (> the {precision} tier {tier:.0e})",
        device.name()
    );
}

/// One mma kernel on integer and random tiles. `b_transposed`: the kernel takes Bᵀ.
fn check_mma(kernel: &'static str, depth: usize, precision: Precision, b_transposed: bool) {
    let round = rounding(precision);
    for device in kernel_devices() {
        let mut rng = rng(15 + depth as u64);
        let tiles = [
            (
                "integer",
                integers(&mut rng, M * depth),
                integers(&mut rng, depth * N),
                integers(&mut rng, M * N),
            ),
            (
                "random",
                uniform(&mut rng, M * depth),
                uniform(&mut rng, depth * N),
                uniform(&mut rng, M * N),
            ),
        ];
        for (kind, a, b, c) in tiles {
            let b_given = if b_transposed {
                transpose(&b, depth, N)
            } else {
                b.clone()
            };
            let got = launch(&device, kernel, &[&a, &b_given, &c], M * N, None, 32)
                .unwrap_or_else(|e| panic!("{kernel} on {}: {e}", device.name()));
            let what = format!("{kernel}, {kind} tile");
            if kind == "integer" {
                assert_exact(
                    &what,
                    &device,
                    &got,
                    &host_product(&a, &b, &c, depth, |x| x),
                );
            } else {
                let rounded = host_product(&a, &b, &c, depth, round);
                let unrounded = host_product(&a, &b, &c, depth, |x| x);
                assert_within_tiers(&what, &device, &got, &rounded, &unrounded, precision);
            }
        }
    }
}

#[test]
fn tf32_mma_m16n8k8_matches_the_host_product() {
    check_mma("mma_selftest_tf32", 8, Precision::Tf32, false);
}

#[test]
fn three_tf32_mma_keeps_fp32_accuracy() {
    check_mma("mma_selftest_3xtf32", 8, Precision::Fp32, true);
}

#[test]
fn bf16_mma_m16n8k16_matches_the_host_product() {
    check_mma("mma_selftest_bf16", 16, Precision::Bf16, false);
}

#[test]
fn ldmatrix_fragments_feed_the_mma() {
    for device in kernel_devices() {
        let mut rng = rng(1515);
        let tiles = [
            (
                "integer",
                integers(&mut rng, M * 16),
                integers(&mut rng, 16 * N),
                integers(&mut rng, M * 8),
                integers(&mut rng, 8 * N),
                integers(&mut rng, M * N),
            ),
            (
                "random",
                uniform(&mut rng, M * 16),
                uniform(&mut rng, 16 * N),
                uniform(&mut rng, M * 8),
                uniform(&mut rng, 8 * N),
                uniform(&mut rng, M * N),
            ),
        ];
        for (kind, a_bf16, b_bf16, a_tf32, b_tf32, c) in tiles {
            let got = launch(
                &device,
                "mma_selftest_ldmatrix",
                &[&a_bf16, &b_bf16, &a_tf32, &b_tf32, &c],
                2 * M * N,
                None,
                32,
            )
            .unwrap_or_else(|e| panic!("mma_selftest_ldmatrix on {}: {e}", device.name()));
            let (got_bf16, got_tf32) = got.split_at(M * N);
            let parts = [
                (
                    "bf16 through ldmatrix .x4 / .x2.trans",
                    got_bf16,
                    &a_bf16,
                    &b_bf16,
                    16,
                    Precision::Bf16,
                ),
                (
                    "tf32 A through ldmatrix .x4",
                    got_tf32,
                    &a_tf32,
                    &b_tf32,
                    8,
                    Precision::Tf32,
                ),
            ];
            for (what, got, a, b, depth, precision) in parts {
                let what = format!("{what}, {kind} tile");
                if kind == "integer" {
                    assert_exact(&what, &device, got, &host_product(a, b, &c, depth, |x| x));
                } else {
                    let rounded = host_product(a, b, &c, depth, rounding(precision));
                    let unrounded = host_product(a, b, &c, depth, |x| x);
                    assert_within_tiers(&what, &device, got, &rounded, &unrounded, precision);
                }
            }
        }
    }
}

#[test]
fn cp_async_copies_land_after_their_wait() {
    for device in kernel_devices() {
        let mut rng = rng(1516);
        let (a, b, c) = (
            integers(&mut rng, M * 8),
            integers(&mut rng, 8 * N),
            integers(&mut rng, M * N),
        );
        let got = launch(
            &device,
            "mma_selftest_cp_async",
            &[&a, &b, &c],
            M * N,
            Some(0),
            32,
        )
        .unwrap_or_else(|e| panic!("mma_selftest_cp_async on {}: {e}", device.name()));
        assert_exact(
            "cp.async then mma",
            &device,
            &got,
            &host_product(&a, &b, &c, 8, |x| x),
        );
    }
}

#[test]
fn a_missing_cp_async_wait_reads_nan_in_the_emulator() {
    let device = common::emulated();
    let mut rng = rng(1517);
    let (a, b, c) = (
        integers(&mut rng, M * 8),
        integers(&mut rng, 8 * N),
        integers(&mut rng, M * N),
    );
    for (omit_wait, which) in [(1, "B's group (the last)"), (2, "A's group (wait_group 1)")] {
        for run in 0..2 {
            let got = launch(
                &device,
                "mma_selftest_cp_async",
                &[&a, &b, &c],
                M * N,
                Some(omit_wait),
                32,
            )
            .expect("launch");
            assert!(
                got.iter().all(|v| v.is_nan()),
                "run {run} without the wait for {which}: expected every output NaN, got {got:?}"
            );
        }
    }
}

#[test]
fn a_partial_warp_mma_is_an_emulator_error() {
    let device = common::emulated();
    let zeros = vec![0.0f32; M * 8];
    match launch(
        &device,
        "mma_selftest_tf32",
        &[&zeros, &zeros[..8 * N], &zeros[..M * N]],
        M * N,
        None,
        16,
    ) {
        Err(Error::Emulator(message)) => assert!(
            message.contains("full warp"),
            "unexpected message: {message}"
        ),
        other => panic!("a 16-thread mma must fail in the emulator, got {other:?}"),
    }
}

#[test]
fn precision_tiers_widen_from_fp32_to_bf16() {
    assert_eq!(Precision::default(), Precision::Fp32);
    let tiers = Precision::ALL.map(Precision::relative_tolerance);
    assert_eq!(tiers[0], 1e-5, "Fp32 keeps the crate's parity tolerance");
    assert!(tiers[0] < tiers[1] && tiers[1] < tiers[2], "{tiers:?}");
}
