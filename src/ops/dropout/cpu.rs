//! Reference dropout: the same counter-based mask as the kernel (`crate::rng`, bit for bit).
use num_traits::Float;

/// `y[i] = keep(seed, i) ? x[i] · scale : 0` with `scale = 1/(1 − p)` (computed by the caller
/// in f32, as the kernel receives it). Applied to x in the forward and to dy in the backward.
pub fn apply<F: Float>(x: &[F], p: f32, scale: F, seed: u64) -> Vec<F> {
    apply_from(x, p, scale, seed, 0)
}

/// [`apply`] to the elements `first..first + x.len()` of a larger tensor `x` is part of (the
/// counter is the element's index in the whole tensor).
#[inline(always)]
pub fn apply_from<F: Float>(x: &[F], p: f32, scale: F, seed: u64, first: usize) -> Vec<F> {
    let threshold = crate::rng::keep_threshold(p);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let i = first + i;
            // Written so it compiles to a select, not a branch: the keep decision is a coin flip
            // that a branch predictor misses about half the time at p = 0.5.
            let kept = (crate::rng::hash64(seed, i as u64) >> 40) >= threshold;
            let scaled = v * scale;
            if kept {
                scaled
            } else {
                F::zero()
            }
        })
        .collect()
}

/// [`apply_from`] in f32 on the CPU path (the `Cpu` device's arm): the same code, compiled a
/// second time for AVX-512 (DQ has the 64-bit lane multiplies of the counter hash) and picked at
/// run time where the CPU has it. Integer hashing and one f32 multiply per element, no fused
/// multiply-add: the result is [`apply_from`]'s bit for bit, whichever version runs (tested).
pub fn apply_from_f32(x: &[f32], p: f32, scale: f32, seed: u64, first: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq") {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        return unsafe { apply_from_avx512(x, p, scale, seed, first) };
    }
    apply_from(x, p, scale, seed, first)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn apply_from_avx512(x: &[f32], p: f32, scale: f32, seed: u64, first: usize) -> Vec<f32> {
    apply_from(x, p, scale, seed, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_from_f32_is_the_reference_bit_for_bit() {
        let x: Vec<f32> = (0..10_007).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        for (p, first) in [(0.5, 0), (0.1, 12_345), (0.9, 7)] {
            let scale = 1.0 / (1.0 - p);
            let fast = apply_from_f32(&x, p, scale, 99, first);
            let reference = apply_from(&x, p, scale, 99, first);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&reference), "p {p}, first {first}");
        }
    }
}
