//! Counter-based random numbers: the CPU mirror of `kernels/hash_rng.cuh`, bit for bit.
//!
//! A draw is a pure function of `(seed, counter)`, so a dropout mask can be regenerated in the
//! backward instead of stored, and every device draws the same mask.

/// SplitMix64's finaliser applied to `seed ^ golden·counter`.
pub fn hash64(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1): the top 24 bits of the hash, as the kernels compute it.
pub fn uniform(seed: u64, counter: u64) -> f32 {
    (hash64(seed, counter) >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// Dropout keep decision: kept with probability 1 − p.
pub fn dropout_keep(seed: u64, counter: u64, p: f32) -> bool {
    uniform(seed, counter) >= p
}

/// The integer form of [`dropout_keep`] for loops over many draws: `keep_threshold(p)` once,
/// then `(hash64(seed, counter) >> 40) >= threshold` per draw, the same decision bit for bit.
/// `uniform` is k·2⁻²⁴ with the integer k = hash >> 40, exact in f32, and p·2²⁴ is exact too
/// (p < 1), so `uniform ≥ p` ⟺ k ≥ p·2²⁴ ⟺ k ≥ ⌈p·2²⁴⌉.
pub fn keep_threshold(p: f32) -> u64 {
    (p as f64 * 16_777_216.0).ceil().max(0.0) as u64
}

/// The dropout stream of a model seeded `model_seed`: the first key of every training step's
/// dropout seeds ([`step_seed`]; `model::DropoutSeeds::for_model`).
pub fn dropout_stream(model_seed: u64) -> u64 {
    model_seed ^ 0xD50_0000
}

/// The seed of dropout site `site` (the model's draw order) at training step `step` (Adam steps
/// taken before it) in `stream`: `hash64(hash64(stream, step), site)`. `asif_step_seed` in
/// `kernels/hash_rng.cuh` derives the same seed on the device from a device step counter.
pub fn step_seed(stream: u64, step: u64, site: u64) -> u64 {
    hash64(hash64(stream, step), site)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_range_and_balanced() {
        let draws: Vec<f32> = (0..100_000).map(|i| uniform(42, i)).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = draws.iter().map(|&u| u as f64).sum::<f64>() / draws.len() as f64;
        // Standard error of the mean of U(0,1) over 1e5 draws is 9e-4.
        assert!((mean - 0.5).abs() < 5e-3, "mean {mean}");
        let kept = (0..100_000).filter(|&i| dropout_keep(7, i, 0.3)).count() as f64 / 1e5;
        assert!((kept - 0.7).abs() < 6e-3, "kept fraction {kept}");
    }

    #[test]
    fn the_integer_threshold_is_the_same_decision() {
        let ps = [
            0.0f32,
            1e-7,
            0.1,
            0.3,
            0.5,
            0.5 + f32::EPSILON,
            0.7,
            0.999_999_9,
        ];
        for p in ps {
            let threshold = keep_threshold(p);
            for counter in 0..20_000 {
                assert_eq!(
                    (hash64(9, counter) >> 40) >= threshold,
                    dropout_keep(9, counter, p),
                    "p {p} counter {counter}"
                );
            }
        }
        // The boundary itself: k·2⁻²⁴ = p exactly is kept, one below is dropped.
        let p = 0.25f32;
        assert_eq!(keep_threshold(p), 1 << 22);
    }

    #[test]
    fn different_seeds_give_different_streams() {
        let same = (0..1000).filter(|&i| hash64(1, i) == hash64(2, i)).count();
        assert_eq!(same, 0);
    }
}
