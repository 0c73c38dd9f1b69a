//! Finite-difference gradient checks (central differences, f64).
//!
//! Check a hand-derived backward by writing the op's forward as a scalar function of a flat
//! parameter vector (usually `Σ w ⊙ f(x)` for fixed random weights `w`, so every output element
//! matters) and comparing its numerical gradient with the analytic one.
use crate::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub struct GradCheckOptions {
    /// Step of the central difference.
    pub step: f64,
    /// An entry passes when |analytic − numeric| ≤ absolute + relative · max(|analytic|, |numeric|).
    pub relative_tolerance: f64,
    pub absolute_tolerance: f64,
}

impl Default for GradCheckOptions {
    fn default() -> Self {
        GradCheckOptions {
            step: 1e-6,
            relative_tolerance: 1e-6,
            absolute_tolerance: 1e-8,
        }
    }
}

/// The worst entry of a passing check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheckReport {
    pub entries: usize,
    pub max_abs_error: f64,
    pub worst_index: Option<usize>,
}

/// ∂f/∂x_i by central differences.
pub fn finite_difference_gradient(
    mut f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    step: f64,
) -> Vec<f64> {
    let mut point = x.to_vec();
    (0..x.len())
        .map(|i| {
            let original = point[i];
            point[i] = original + step;
            let up = f(&point);
            point[i] = original - step;
            let down = f(&point);
            point[i] = original;
            (up - down) / (2.0 * step)
        })
        .collect()
}

/// Compares `analytic` with the finite-difference gradient of `f` at `x`.
pub fn check_gradient(
    f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    options: GradCheckOptions,
) -> Result<GradCheckReport> {
    if analytic.len() != x.len() {
        return Err(Error::GradientCheck(format!(
            "{} analytic entries for {} parameters",
            analytic.len(),
            x.len()
        )));
    }
    let numeric = finite_difference_gradient(f, x, options.step);
    let mut report = GradCheckReport {
        entries: x.len(),
        max_abs_error: 0.0,
        worst_index: None,
    };
    for (i, (&a, &n)) in analytic.iter().zip(&numeric).enumerate() {
        let error = (a - n).abs();
        let allowed =
            options.absolute_tolerance + options.relative_tolerance * a.abs().max(n.abs());
        // NaN in either gradient fails too.
        if error.is_nan() || error > allowed {
            return Err(Error::GradientCheck(format!(
                "entry {i}: analytic {a:.10e}, finite difference {n:.10e}, error {error:.3e} > allowed {allowed:.3e}"
            )));
        }
        if error >= report.max_abs_error {
            report.max_abs_error = error;
            report.worst_index = Some(i);
        }
    }
    Ok(report)
}
