//! Reference GELU, exact erf form, generic over the float type.
use num_traits::Float;

const INV_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// erf in any float type, evaluated in f64 (Rust's std has no stable erf).
fn erf<F: Float>(x: F) -> F {
    F::from(erf_f64(x.to_f64().unwrap_or(0.0))).unwrap_or(F::zero())
}

/// erf to about 1e-13 relative: Taylor series for |x| < 2.5, continued fraction for erfc beyond.
pub fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let value = if a < 2.5 {
        // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = exp(-a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + 2/(a + ...)))))
        let mut fraction = 0.0;
        for k in (1..60).rev() {
            fraction = (k as f64 / 2.0) / (a + fraction);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction)
    };
    value.copysign(x)
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
