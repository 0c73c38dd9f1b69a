//! Known answers written as numbers (issue 16): the counter hash, its uniform draws and the dropout
//! masks and scale, so a change on both sides of a mirror (`src/rng.rs` and
//! `kernels/hash_rng.cuh`), which every parity test accepts, still fails here.
//!
//! Where the numbers come from: `hash64(0, k)` for k = 1..4 is SplitMix64's published output
//! stream from state 0 (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, …: the mixer is SplitMix64's
//! finaliser on seed ⊕ k·golden, and with seed 0 that is the reference generator's k-th output);
//! the other values were computed in Python from the SplitMix64 constants (64-bit wrapping
//! arithmetic), not from this crate.
mod common;

use asif_kernels::ops::dropout::{dropout_backward, dropout_forward, keep_scale, DropoutMode};
use asif_kernels::rng::{dropout_keep, hash64, uniform};
use asif_kernels::{Device, Tensor};

#[test]
fn hash64_is_splitmix64() {
    // SplitMix64 from state 0: its first four outputs.
    assert_eq!(hash64(0, 1), 0xE220_A839_7B1D_CDAF);
    assert_eq!(hash64(0, 2), 0x6E78_9E6A_A1B9_65F4);
    assert_eq!(hash64(0, 3), 0x06C4_5D18_8009_454F);
    assert_eq!(hash64(0, 4), 0xF88B_B8A8_724C_81EC);
    assert_eq!(hash64(0, 0), 0);
    // Non-zero seeds: seed ⊕ counter·golden, then the finaliser.
    assert_eq!(hash64(42, 0), 0xA759_EA27_D472_7622);
    assert_eq!(hash64(42, 7), 0x53AD_348A_F3DD_AF4B);
    assert_eq!(hash64(0xDEAD_BEEF, 123_456_789), 0x9EB9_DDA0_7692_25F7);
}

#[test]
fn uniform_is_the_top_24_bits() {
    // (hash >> 40) · 2⁻²⁴, exact in f32.
    assert_eq!(uniform(0, 0), 0.0);
    assert_eq!(uniform(0, 1), 14_819_496.0 / 16_777_216.0); // 0xE220A8
    assert_eq!(uniform(42, 0), 10_967_530.0 / 16_777_216.0); // 0xA759EA
    assert_eq!(uniform(42, 7), 5_483_828.0 / 16_777_216.0); // 0x53AD34
    assert_eq!(
        uniform(0xDEAD_BEEF, 123_456_789),
        10_402_269.0 / 16_777_216.0
    ); // 0x9EB9DD
       // Kept with probability 1 − p: kept when the draw is ≥ p.
    assert!(dropout_keep(42, 7, 0.3268));
    assert!(!dropout_keep(42, 7, 0.3269));
}

#[test]
fn dropout_scale_is_one_over_one_minus_p() {
    assert_eq!(keep_scale(0.0).unwrap(), 1.0);
    assert_eq!(keep_scale(0.25).unwrap(), 1.333_333_4);
    assert_eq!(keep_scale(0.3).unwrap(), 1.428_571_5);
    assert_eq!(keep_scale(0.5).unwrap(), 2.0);
}

/// The masks and values of the dropout op on every host device (the CPU reference and the real
/// kernel on the emulator), as literal numbers: element i is kept iff uniform(seed, i) ≥ p.
#[test]
fn dropout_masks_are_known() {
    let x: Vec<f32> = (1..=12).map(|i| i as f32).collect();
    // p = 0.25, seed 2024: kept 1 1 0 0 1 0 1 0 1 1 0 1, scale 4/3.
    let expected_quarter = [
        1.333_333_4,
        2.666_666_7,
        0.0,
        0.0,
        6.666_666_5,
        0.0,
        9.333_333,
        0.0,
        12.0,
        13.333_333,
        0.0,
        16.0,
    ];
    // p = 0.5, seed 7: kept 0 1 1 1 0 0 0 1 0 0 1 1, scale 2.
    let expected_half = [
        0.0, 4.0, 6.0, 8.0, 0.0, 0.0, 0.0, 16.0, 0.0, 0.0, 22.0, 24.0,
    ];
    for device in [Device::Cpu, common::emulated()] {
        for (p, seed, expected) in [(0.25, 2024, &expected_quarter), (0.5, 7, &expected_half)] {
            let input = Tensor::from_vec(&device, &[3, 4], x.clone()).unwrap();
            let y = dropout_forward(&input, p, seed, DropoutMode::Train)
                .unwrap()
                .to_vec()
                .unwrap();
            let dx = dropout_backward(&input, p, seed, DropoutMode::Train)
                .unwrap()
                .to_vec()
                .unwrap();
            for (what, got) in [("forward", &y), ("backward", &dx)] {
                for (i, (g, e)) in got.iter().zip(expected.iter()).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-6 * e.abs(),
                        "{} dropout {what}, p {p}, seed {seed}, element {i}: {g}, expected {e}",
                        device.name()
                    );
                }
            }
        }
    }
}

/// κ = min(exp s, 100) (spec §3.4, A9): the clamp sits at exactly 100. Above it the loss is the
/// loss at s = ln 100 and s gets no gradient; just below it, it is not. Both kernel versions.
#[test]
fn the_logit_scale_is_clamped_at_one_hundred() {
    common::for_each_version(
        &[asif_kernels::ops::contrastive::KERNEL_FAMILY],
        the_logit_scale_is_clamped_at_one_hundred_on_every_device,
    );
}

fn the_logit_scale_is_clamped_at_one_hundred_on_every_device(
    version: asif_kernels::kernel_version::KernelVersion,
) {
    use asif_kernels::autograd::Tape;
    use asif_kernels::ops::contrastive::{contrastive_loss, ContrastiveReduction};
    use asif_kernels::IndexTensor;
    let (b, n, d) = (2, 4, 8);
    let x: Vec<f32> = (0..b * n * d)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let a: Vec<f32> = (0..b * n * d)
        .map(|i| ((i * 5 % 13) as f32 - 6.0) / 6.0)
        .collect();
    for device in [Device::Cpu, common::emulated()] {
        let at = |kappa: f32| {
            let tape = Tape::new();
            let leaf = |v: &Vec<f32>, shape: &[usize]| {
                tape.leaf(Tensor::from_vec(&device, shape, v.clone()).unwrap())
            };
            let s = leaf(&vec![kappa.ln()], &[1]);
            let lengths = IndexTensor::from_vec(&device, &[b], vec![4, 3]).unwrap();
            let loss = contrastive_loss(
                &tape,
                &leaf(&x, &[b, n, d]),
                &leaf(&a, &[b, n, d]),
                &lengths,
                &s,
                None,
                ContrastiveReduction::MeanPerSequence,
            )
            .unwrap();
            let one = Tensor::from_vec(&device, &[1], vec![1.0]).unwrap();
            let grads = tape.backward_from(vec![(&loss, one)]).unwrap();
            let ds = grads.get(&s).map_or(0.0, |g| g.to_vec().unwrap()[0]);
            (loss.value().to_vec().unwrap()[0], ds)
        };
        let (at_100, _) = at(100.0);
        let (above, ds_above) = at(150.0);
        let (below, ds_below) = at(90.0);
        let name = format!("{} kernel {}", device.name(), version.name());
        assert!(
            (above - at_100).abs() <= 1e-6 * at_100.abs(),
            "{name}: L(κ = 150) = {above}, L(κ = 100) = {at_100}: not clamped at 100"
        );
        assert_eq!(ds_above, 0.0, "{name}: the clamped s gets a gradient");
        assert!(
            (below - at_100).abs() > 1e-4 * at_100.abs() && ds_below != 0.0,
            "{name}: κ = 90 is clamped ({below} vs {at_100}, dL/ds {ds_below})"
        );
    }
}

/// The shuffle generator (`data::rng::SplitMix64`): the same seed must give the same batches on
/// every platform and every version, so its outputs are written here as numbers, computed in
/// Python from the SplitMix64 constants and the algorithms the doc comments name (Lemire's
/// bounded draw with rejection, Fisher–Yates), not from this crate:
/// `scripts/oracle/splitmix64_known_answers.py` prints every value below.
#[test]
fn shuffle_generator_is_known() {
    use asif_kernels::data::rng::SplitMix64;
    let mut g = SplitMix64::new(0);
    let first: Vec<u64> = (0..3).map(|_| g.next_u64()).collect();
    // SplitMix64's published stream from state 0.
    assert_eq!(
        first,
        [
            0xE220_A839_7B1D_CDAF,
            0x6E78_9E6A_A1B9_65F4,
            0x06C4_5D18_8009_454F
        ]
    );
    let mut g = SplitMix64::stream(42, 3);
    assert_eq!(
        [g.next_u64(), g.next_u64()],
        [0x85B8_BB51_0964_7D2C, 0x12C7_B919_34BD_FF8A]
    );
    assert_eq!(SplitMix64::stream(42, 0).next_u64(), 0x6FDD_427B_0F14_0D54);
    let mut g = SplitMix64::new(7);
    let below: Vec<u64> = (0..8).map(|_| g.below(10)).collect();
    assert_eq!(below, [3, 0, 9, 5, 4, 2, 4, 3]);
    // n just over 2^63: the rejection threshold is large, so a draw is rejected now and then.
    let mut g = SplitMix64::new(5);
    let big: Vec<u64> = (0..3).map(|_| g.below((1 << 63) + 1)).collect();
    assert_eq!(
        big,
        [
            6_938_807_493_011_938_172,
            2_146_363_211_429_306_531,
            916_244_348_587_400_354
        ]
    );
    let mut g = SplitMix64::new(9);
    let range: Vec<u64> = (0..8).map(|_| g.range_inclusive(5, 7)).collect();
    assert_eq!(range, [7, 7, 5, 7, 5, 5, 6, 7]);
    let mut v: Vec<u32> = (0..10).collect();
    SplitMix64::new(7).shuffle(&mut v);
    assert_eq!(v, [9, 5, 8, 6, 1, 2, 4, 7, 0, 3]);
    let mut g = SplitMix64::new(1);
    assert_eq!(
        [g.next_f64(), g.next_f64()],
        [0.5665615751722809, 0.7457817572627011]
    );
    let mut g = SplitMix64::new(3);
    let picks: Vec<usize> = (0..12).map(|_| g.weighted(&[0.0, 1.0, 3.0, 0.0])).collect();
    assert_eq!(picks, [1, 2, 2, 1, 1, 2, 1, 2, 2, 2, 2, 2]);
}
