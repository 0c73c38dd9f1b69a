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
