//! Reference GELU, exact erf form, generic over the float type.
use num_traits::Float;

const INV_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// erf in any float type, evaluated in f64 (Rust's std has no stable erf).
fn erf<F: Float>(x: F) -> F {
    F::from(erf_f64(x.to_f64().unwrap_or(0.0))).unwrap_or(F::zero())
}

/// erf in f64 from the `libm` crate (a port of musl's, within an ulp or so): accurate enough for
/// f64 finite differences and several times faster than a series.
pub fn erf_f64(x: f64) -> f64 {
    libm::erf(x)
}

pub fn forward<F: Float>(x: &[F]) -> Vec<F> {
    let half = F::from(0.5).unwrap_or(F::zero());
    let inv_sqrt2 = F::from(INV_SQRT_2).unwrap_or(F::zero());
    x.iter()
        .map(|&v| half * v * (F::one() + erf(v * inv_sqrt2)))
        .collect()
}

pub fn backward<F: Float>(x: &[F], dy: &[F]) -> Vec<F> {
    let half = F::from(0.5).unwrap_or(F::zero());
    let inv_sqrt2 = F::from(INV_SQRT_2).unwrap_or(F::zero());
    let inv_sqrt_2pi = F::from(INV_SQRT_2PI).unwrap_or(F::zero());
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| {
            let cdf = half * (F::one() + erf(v * inv_sqrt2));
            let pdf = inv_sqrt_2pi * (-half * v * v).exp();
            g * (cdf + v * pdf)
        })
        .collect()
}

/// erf in f32 for the CPU path's fast GELU: a rational approximation on `[-4, 4]` (odd degree-13
/// numerator over even degree-8 denominator, the coefficients of Eigen's `generic_fast_erf_float`),
/// ±1 outside (where f32's erf rounds to ±1 already). Branch-free, so the loops over it
/// vectorise. Accuracy against [`erf_f64`]: within 5e-7 absolute over the whole line (the test
/// `erf_f32_is_within_its_stated_error` sweeps it); GELU and its derivative built on it stay
/// within 1e-6 · (1 + |x|) absolute of the f64 reference (`gelu_f32_matches_the_f64_reference`).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_4e-10 + 2.770_681_5e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_2e-5;
    p = x2 * p + -7.349_906_4e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_15e-5 + -2.133_740_5e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_3e-3;
    q = x2 * q + -1.426_473_9e-2;
    p / q
}

/// GELU forward in f32 on the CPU path (the `Cpu` device's arm): [`forward`]'s formula with
/// [`erf_f32`] in place of the f64 erf. Tested against [`forward`] in f64. Compiled a second
/// time for AVX-512 and picked at run time where the CPU has it; no fused multiply-add in either
/// (Rust never contracts `a * b + c`), so both give the same bits (tested).
pub fn forward_f32(x: &[f32]) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the feature the function is compiled for (checked above).
        return unsafe { forward_f32_avx512(x) };
    }
    forward_f32_portable(x)
}

/// GELU backward in f32 on the CPU path: [`backward`]'s formula with [`erf_f32`]; dispatched
/// as [`forward_f32`].
pub fn backward_f32(x: &[f32], dy: &[f32]) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: as in `forward_f32`.
        return unsafe { backward_f32_avx512(x, dy) };
    }
    backward_f32_portable(x, dy)
}

// The loops below write into a preallocated vector with plain `for` loops, not `collect()`: a
// `collect` goes through the standard library's `from_iter`, which is not inlined into the
// AVX-512 copies, so those ran its 4-wide SSE code (issue 23's profile showed `divps` on xmm
// registers in `from_iter`); a `for` over `zip` is inlined and compiled for the caller's
// features.
#[inline(always)]
fn forward_f32_portable(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for (out, &v) in y.iter_mut().zip(x) {
        *out = 0.5 * v * (1.0 + erf_f32(v * INV_SQRT_2 as f32));
    }
    y
}

#[inline(always)]
fn backward_f32_portable(x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; x.len().min(dy.len())];
    for ((out, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        let cdf = 0.5 * (1.0 + erf_f32(v * INV_SQRT_2 as f32));
        let pdf = INV_SQRT_2PI as f32 * exp_nonpositive_f32(-0.5 * v * v);
        *out = g * (cdf + v * pdf);
    }
    dx
}

/// `e^t` in f32 for `t ≤ 0` (GELU's density), branch-free so the backward loop vectorises
/// (libm's `expf` is a call per element): Cody–Waite reduction `t = n ln 2 + r`, |r| ≤ ln 2 / 2,
/// Cephes' degree-5 polynomial for `e^r` (about 1 ulp), and `2^n` built from its exponent bits.
/// `t` is clamped to −87, where `e^t` ≈ 1.6e-38 is below anything GELU's derivative can show;
/// NaN stays NaN. Covered by `gelu_f32_matches_the_f64_reference`.
#[inline(always)]
fn exp_nonpositive_f32(t: f32) -> f32 {
    let t = t.clamp(-87.0, 0.0);
    // Round t / ln 2 to the nearest integer with the 1.5 · 2^23 trick (exact for |x| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    let n = (t * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (t - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_6e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // n ∈ [−126, 0]: 2^n is the normal f32 with biased exponent n + 127.
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_f32_avx512(x: &[f32]) -> Vec<f32> {
    forward_f32_portable(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn backward_f32_avx512(x: &[f32], dy: &[f32]) -> Vec<f32> {
    backward_f32_portable(x, dy)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points from -8 to 8 in steps of 1/4096, plus the extremes and the values near 0.
    fn sweep() -> impl Iterator<Item = f32> {
        (-8 * 4096..=8 * 4096).map(|i| i as f32 / 4096.0).chain([
            f32::MIN_POSITIVE,
            -1e-20,
            1e-7,
            40.0,
            -40.0,
            f32::MAX,
            f32::MIN,
        ])
    }

    #[test]
    fn erf_f32_is_within_its_stated_error() {
        let worst = sweep()
            .map(|x| (erf_f32(x) as f64 - erf_f64(x as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 5e-7, "erf_f32 is {worst:e} off erf_f64");
    }

    #[test]
    fn the_avx512_versions_give_the_portable_bits() {
        let x: Vec<f32> = sweep().collect();
        let dy: Vec<f32> = (0..x.len()).map(|i| 1.0 - (i % 5) as f32 / 2.0).collect();
        let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(forward_f32(&x)), bits(forward_f32_portable(&x)));
        assert_eq!(
            bits(backward_f32(&x, &dy)),
            bits(backward_f32_portable(&x, &dy))
        );
    }

    #[test]
    fn gelu_f32_matches_the_f64_reference() {
        let x: Vec<f32> = sweep().filter(|x| x.abs() < 1e4).collect();
        let dy: Vec<f32> = (0..x.len()).map(|i| 1.0 - (i % 7) as f32 / 3.0).collect();
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let dy64: Vec<f64> = dy.iter().map(|&v| v as f64).collect();
        let pairs = [
            (forward_f32(&x), forward(&x64)),
            (backward_f32(&x, &dy), backward(&x64, &dy64)),
        ];
        for (fast, reference) in pairs {
            for ((&f, &r), &v) in fast.iter().zip(&reference).zip(&x) {
                let error = (f as f64 - r).abs();
                assert!(
                    error <= 1e-6 * (1.0 + v.abs() as f64),
                    "at x = {v}: fast {f}, f64 reference {r}"
                );
            }
        }
    }
}
