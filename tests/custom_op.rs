//! An op defined outside `src/ops`, in another crate's position: it uses only the public API
//! (`asif_kernels::ops::{DeviceOp, run_one, record_one}`, `Device::launch`, `kernel_args!`), and
//! so documents the op contract's extension point (docs/architecture.md, "The op contract").
//!
//! The op is the residual GELU `y = x + GELU(x)`, whose derivative is `dx = dy · (1 + GELU'(x))`.
//! Its reference is plain Rust here; its launch chains two of the crate's embedded kernels
//! (`gelu.cu: gelu_forward` then `elementwise.cu: add_out`; the backward `gelu_backward` then
//! `add_out`) on the CUDA and emulated devices. A kernel of the outside crate's own (its own
//! `.cu`) cannot be launched yet: `Device::launch` takes the embedded families only (see the
//! architecture page). Checked: the emulated launch against the CPU reference, the tape's gradient
//! against finite differences of the f64 reference, the launch count, and a typed shape error.
mod common;

use asif_kernels::autograd::gradcheck::check_gradient;
use asif_kernels::autograd::Tape;
use asif_kernels::device::{Buffer, LaunchConfig};
use asif_kernels::kernels::KernelRef;
use asif_kernels::ops::{record_one, run_one, DeviceOp};
use asif_kernels::{kernel_args, Device, Error, Result, Tensor};

const GELU_FORWARD: KernelRef = KernelRef::new("gelu", "gelu_forward");
const GELU_BACKWARD: KernelRef = KernelRef::new("gelu", "gelu_backward");
const ADD_OUT: KernelRef = KernelRef::new("elementwise", "add_out");

/// The problem descriptor: the shape `x`, `y`, `dy` and `dx` share.
struct Shape(Vec<usize>);

/// `y = x + GELU(x)`.
struct ResidualGelu;
/// `dx = dy + GELU'(x) · dy`; inputs x, dy.
struct ResidualGeluBackward;

fn gelu<F: num_traits::Float>(x: F) -> F {
    let half = F::from(0.5).unwrap();
    let erf = F::from(libm::erf(
        x.to_f64().unwrap() * std::f64::consts::FRAC_1_SQRT_2,
    ))
    .unwrap();
    half * x * (F::one() + erf)
}

fn gelu_derivative(x: f64) -> f64 {
    let cdf = 0.5 * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    cdf + x * pdf
}

/// The reference, generic over the float type (f32 for parity, f64 for finite differences).
fn reference<F: num_traits::Float>(x: &[F]) -> Vec<F> {
    x.iter().map(|&v| v + gelu(v)).collect()
}

/// `len` elements of a kernel `(inputs..., out, len)` that writes every element.
fn launch_elementwise(
    device: &Device,
    kernel: KernelRef,
    a: &Buffer<f32>,
    b: Option<&Buffer<f32>>,
) -> Result<Buffer<f32>> {
    let len = a.len();
    let mut out = device.uninitialized::<f32>(len)?;
    if len > 0 {
        let config = LaunchConfig::grid_stride(len);
        match b {
            None => device.launch(kernel, config, &mut kernel_args![a, &mut out, len as i32])?,
            Some(b) => device.launch(
                kernel,
                config,
                &mut kernel_args![a, b, &mut out, len as i32],
            )?,
        }
    }
    Ok(out)
}

impl DeviceOp for ResidualGelu {
    type Problem = Shape;
    fn name(&self) -> &'static str {
        "residual_gelu"
    }
    fn output_shapes(&self, problem: &Shape) -> Vec<Vec<usize>> {
        vec![problem.0.clone()]
    }
    fn reference(&self, _: &Shape, x: &[&[f32]], _: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        Ok(vec![reference(x[0])])
    }
    fn launch(
        &self,
        _: &Shape,
        device: &Device,
        x: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let g = launch_elementwise(device, GELU_FORWARD, x[0], None)?;
        Ok(vec![launch_elementwise(device, ADD_OUT, x[0], Some(&g))?])
    }
}

impl DeviceOp for ResidualGeluBackward {
    type Problem = Shape;
    fn name(&self) -> &'static str {
        "residual_gelu"
    }
    fn output_shapes(&self, problem: &Shape) -> Vec<Vec<usize>> {
        vec![problem.0.clone()]
    }
    fn reference(&self, _: &Shape, inputs: &[&[f32]], _: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        let (x, dy) = (inputs[0], inputs[1]);
        let dx = x
            .iter()
            .zip(dy)
            .map(|(&x, &g)| (g as f64 * (1.0 + gelu_derivative(x as f64))) as f32)
            .collect();
        Ok(vec![dx])
    }
    fn launch(
        &self,
        _: &Shape,
        device: &Device,
        inputs: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let (x, dy) = (inputs[0], inputs[1]);
        let gelu_part = launch_elementwise(device, GELU_BACKWARD, x, Some(dy))?;
        Ok(vec![launch_elementwise(
            device,
            ADD_OUT,
            dy,
            Some(&gelu_part),
        )?])
    }
}

/// The checks: they build the problem descriptor (a typed error, never a panic, on bad input).
fn check(x: &Tensor, dy: Option<&Tensor>) -> Result<Shape> {
    if let Some(dy) = dy {
        if dy.shape() != x.shape() {
            return Err(Error::Shape {
                op: "residual_gelu",
                message: format!("dy {:?} must match x {:?}", dy.shape(), x.shape()),
            });
        }
    }
    Ok(Shape(x.shape().to_vec()))
}

fn residual_gelu_forward(x: &Tensor) -> Result<Tensor> {
    run_one(&ResidualGelu, &check(x, None)?, &[x], &[])
}

fn residual_gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    run_one(&ResidualGeluBackward, &check(x, Some(dy))?, &[x, dy], &[])
}

/// The tape face, through the crate's generic one.
fn residual_gelu(
    tape: &Tape,
    x: &asif_kernels::autograd::Var,
) -> Result<asif_kernels::autograd::Var> {
    let y = residual_gelu_forward(x.value())?;
    let x_value = x.value().clone();
    Ok(record_one(tape, &[x], y, move |dy| {
        Ok(vec![Some(residual_gelu_backward(&x_value, dy)?)])
    }))
}

const SHAPE: [usize; 2] = [3, 37];

fn inputs(seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = common::rng(seed);
    let len = SHAPE.iter().product();
    let x = common::random(&mut rng, len, 0.0, 2.0);
    let w = common::random(&mut rng, len, 0.0, 1.0);
    (x, w)
}

#[test]
fn the_outside_op_matches_its_reference_on_every_device() {
    let (x, _) = inputs(7);
    let want = reference(&x);
    for device in common::all_devices() {
        let before = device.counters().snapshot();
        let y = residual_gelu_forward(&common::tensor(&device, &SHAPE, &x)).expect("forward");
        assert_eq!(y.shape(), SHAPE);
        common::assert_close("residual GELU", &device, &y, &want, 1e-5);
        if !matches!(device, Device::Cpu) {
            // Two launches through the generic dispatch: gelu_forward, add_out.
            let launches = device.counters().snapshot().since(&before).launches;
            assert_eq!(launches, 2, "{}", device.name());
        }
    }
}

#[test]
fn the_outside_op_gradient_matches_finite_differences_through_the_tape() {
    let (x, w) = inputs(11);
    for device in common::all_devices() {
        let tape = Tape::new();
        let x_var = tape.leaf(common::tensor(&device, &SHAPE, &x));
        let y = residual_gelu(&tape, &x_var).expect("forward");
        let grads = tape
            .backward(&y, common::tensor(&device, &SHAPE, &w))
            .expect("backward");
        let analytic = common::to_f64(&grads.get(&x_var).expect("dx").to_vec().expect("dx"));
        check_gradient(
            |x| common::weighted(&reference(x), &w),
            &x,
            &analytic,
            asif_kernels::autograd::gradcheck::GradCheckOptions {
                step: 1e-5,
                relative_tolerance: 1e-4,
                absolute_tolerance: 1e-5,
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", device.name()));
    }
}

#[test]
fn the_outside_op_reports_bad_input_as_a_typed_error() {
    let device = common::emulated();
    let x = common::tensor(&device, &SHAPE, &inputs(3).0);
    let dy = common::tensor(&device, &[SHAPE[0] * SHAPE[1]], &inputs(3).1);
    let error = residual_gelu_backward(&x, &dy).expect_err("mismatched shapes");
    assert!(matches!(error, Error::Shape { .. }), "{error}");
    let cpu_x = common::tensor(&Device::cpu(), &SHAPE, &inputs(3).0);
    let error = residual_gelu_backward(&x, &cpu_x).expect_err("two devices");
    assert!(matches!(error, Error::DeviceMismatch { .. }), "{error}");
}
