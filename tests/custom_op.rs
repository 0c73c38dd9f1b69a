//! Ops defined outside `src/ops`, in another crate's position: they use only the public API
//! (`asif_kernels::ops::{DeviceOp, DeviceInPlaceOp, run_one, run_in_place, record_one}`,
//! `asif_kernels::kernels::register`, `Device::launch`, `kernel_args!`), and so document the op
//! contract's extension point (docs/architecture.md, "The op contract"; docs/interop.md, "Adding
//! your own kernel").
//!
//! 1. The residual GELU `y = x + GELU(x)`, whose derivative is `dx = dy · (1 + GELU'(x))`. Its
//!    reference is plain Rust here; its launch chains two of the crate's embedded kernels
//!    (`gelu.cu: gelu_forward` then `elementwise.cu: add_out`; the backward `gelu_backward` then
//!    `add_out`) on the CUDA and emulated devices. Checked: the emulated launch against the CPU
//!    reference, the tape's gradient against finite differences of the f64 reference, the launch
//!    count, and a typed shape error.
//! 2. The scaled add `out = a + α·b` and its in-place form `y += α·x` with a kernel of the outside
//!    crate's own, `tests/custom_kernel/scaled_add.cu` (which includes the crate's `vector_io.cuh`),
//!    registered at run time: its emulated half is built by `emulator/build.rs` from
//!    `tests/custom_kernel/emulated.cpp` as a downstream build script would build it, its CUDA
//!    source compiles under NVRTC here (tier 3, no GPU needed), and its CUDA launch (NVRTC at run
//!    time) runs only where there is a GPU (a skip line otherwise).
mod common;
#[path = "../build_support/nvrtc.rs"]
mod nvrtc;

use asif_kernels::autograd::gradcheck::check_gradient;
use asif_kernels::autograd::Tape;
use asif_kernels::device::{Buffer, LaunchConfig};
use asif_kernels::kernels::{self, CustomFamily, KernelRef, RegisteredFamily};
use asif_kernels::ops::{record_one, run_in_place, run_one, DeviceInPlaceOp, DeviceOp};
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

// ---- A kernel of the outside crate's own ------------------------------------------------------

extern "C" {
    /// The emulated half of `tests/custom_kernel/scaled_add.cu` (`ASIF_EMU_EXPORT_FAMILY` in
    /// `tests/custom_kernel/emulated.cpp`), linked from the emulator crate's static library.
    fn custom_scaled_add_emulated(
        name: *const std::ffi::c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        args: *mut *mut std::ffi::c_void,
        error: *mut std::ffi::c_char,
        error_len: usize,
    ) -> i32;
}

const SCALED_ADD_SOURCE: &str = include_str!("custom_kernel/scaled_add.cu");

/// The family, registered once per process (registering it again returns the same handle).
fn scaled_add_family() -> RegisteredFamily {
    kernels::register(CustomFamily {
        name: "custom_scaled_add",
        source: SCALED_ADD_SOURCE,
        emulated: Some(custom_scaled_add_emulated),
    })
    .expect("register the scaled-add family")
}

/// The problem of both passes: the shared shape and α.
struct ScaledAddProblem {
    shape: Vec<usize>,
    alpha: f32,
}

/// `out = a + α·b`.
struct ScaledAdd;
/// `y += α·x`, in place.
struct ScaledAddAssign;

fn scaled_add_reference(a: &[f32], b: &[f32], alpha: f32) -> Vec<f32> {
    a.iter().zip(b).map(|(&u, &v)| u + alpha * v).collect()
}

fn check_scaled_add(a: &Tensor, b: &Tensor, alpha: f32) -> Result<ScaledAddProblem> {
    // The dispatch checks that the inputs share a device.
    if a.shape() != b.shape() || a.len() > i32::MAX as usize || !alpha.is_finite() {
        return Err(Error::Shape {
            op: "scaled_add",
            message: format!(
                "a {:?} and b {:?} must match (under 2^31 elements), α {alpha} finite",
                a.shape(),
                b.shape()
            ),
        });
    }
    Ok(ScaledAddProblem {
        shape: a.shape().to_vec(),
        alpha,
    })
}

impl DeviceOp for ScaledAdd {
    type Problem = ScaledAddProblem;
    fn name(&self) -> &'static str {
        "scaled_add"
    }
    fn output_shapes(&self, problem: &ScaledAddProblem) -> Vec<Vec<usize>> {
        vec![problem.shape.clone()]
    }
    fn reference(
        &self,
        problem: &ScaledAddProblem,
        inputs: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(vec![scaled_add_reference(
            inputs[0],
            inputs[1],
            problem.alpha,
        )])
    }
    fn launch(
        &self,
        problem: &ScaledAddProblem,
        device: &Device,
        inputs: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let kernel = scaled_add_family().kernel("custom_scaled_add")?;
        let len = inputs[0].len();
        // The kernel writes every element.
        let mut out = device.uninitialized::<f32>(len)?;
        if len > 0 {
            device.launch(
                kernel,
                LaunchConfig::grid_stride(len),
                &mut kernel_args![inputs[0], inputs[1], &mut out, problem.alpha, len as i32],
            )?;
        }
        Ok(vec![out])
    }
}

impl DeviceInPlaceOp for ScaledAddAssign {
    type Problem = ScaledAddProblem;
    fn name(&self) -> &'static str {
        "scaled_add_assign"
    }
    fn reference(
        &self,
        problem: &ScaledAddProblem,
        y: &mut [&mut [f32]],
        x: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let sum = scaled_add_reference(y[0], x[0], problem.alpha);
        y[0].copy_from_slice(&sum);
        Ok(Vec::new())
    }
    fn launch(
        &self,
        problem: &ScaledAddProblem,
        device: &Device,
        y: &mut [&mut Buffer<f32>],
        x: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let kernel = scaled_add_family().kernel("custom_scaled_add_assign")?;
        let len = x[0].len();
        if len > 0 {
            device.launch(
                kernel,
                LaunchConfig::grid_stride(len),
                &mut kernel_args![&mut *y[0], x[0], problem.alpha, len as i32],
            )?;
        }
        Ok(Vec::new())
    }
}

fn scaled_add(a: &Tensor, b: &Tensor, alpha: f32) -> Result<Tensor> {
    run_one(&ScaledAdd, &check_scaled_add(a, b, alpha)?, &[a, b], &[])
}

/// `y += α·x`, in `y`'s own memory (a copy first only if another tensor shares it).
fn scaled_add_assign(y: Tensor, x: &Tensor, alpha: f32) -> Result<Tensor> {
    let problem = check_scaled_add(&y, x, alpha)?;
    let (device, shape) = (y.device().clone(), y.shape().to_vec());
    let mut buffer = y.into_buffer()?;
    run_in_place(
        &ScaledAddAssign,
        &problem,
        &device,
        &mut [&mut buffer],
        &[x.buffer()],
        &[],
    )?;
    Tensor::from_device_buffer(&device, &shape, buffer)
}

/// Odd sizes: a scalar tail after the 128-bit body, and one shorter than a vector.
const SIZES: [&[usize]; 3] = [&[5, 67], &[3], &[1030]];
const ALPHA: f32 = -0.75;

#[test]
fn the_outside_kernel_matches_its_reference_on_every_device() {
    for (case, shape) in SIZES.iter().enumerate() {
        let len = shape.iter().product();
        let mut rng = common::rng(20 + case as u64);
        let (a, b) = (
            common::random(&mut rng, len, 0.0, 2.0),
            common::random(&mut rng, len, 0.5, 1.0),
        );
        let want: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(u, v)| u + ALPHA as f64 * v)
            .collect();
        for device in common::all_devices() {
            let before = device.counters().snapshot();
            let (a_t, b_t) = (
                common::tensor(&device, shape, &a),
                common::tensor(&device, shape, &b),
            );
            let out = scaled_add(&a_t, &b_t, ALPHA).expect("scaled add");
            assert_eq!(out.shape(), *shape);
            common::assert_close("scaled add", &device, &out, &want, 1e-6);
            let y = scaled_add_assign(a_t.clone(), &b_t, ALPHA).expect("scaled add in place");
            common::assert_close("scaled add in place", &device, &y, &want, 1e-6);
            if !matches!(device, Device::Cpu) {
                // One launch each, through the generic dispatch and the registered family.
                let launches = device.counters().snapshot().since(&before).launches;
                assert_eq!(launches, 2, "{}", device.name());
            }
        }
    }
}

#[test]
fn the_outside_kernel_compiles_under_nvrtc() {
    let source = scaled_add_family().family().source;
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let nvrtc = match nvrtc::Nvrtc::locate(manifest_dir) {
        Ok(nvrtc) => nvrtc,
        Err(reason) => {
            let required =
                std::env::var("ASIF_REQUIRE_NVRTC").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(
                !required,
                "ASIF_REQUIRE_NVRTC is set but NVRTC is missing: {reason}"
            );
            common::skip("the outside kernel's NVRTC compile (tier 3)", &reason);
            return;
        }
    };
    let ptx = nvrtc
        .compile_ptx("custom_scaled_add", source)
        .unwrap_or_else(|log| panic!("NVRTC (PTX): {log}"));
    let (cubin, report) = nvrtc
        .compile_cubin("custom_scaled_add", source)
        .unwrap_or_else(|log| panic!("NVRTC (cubin): {log}"));
    assert!(!cubin.is_empty());
    for entry in ["custom_scaled_add", "custom_scaled_add_assign"] {
        assert!(
            ptx.contains(&format!(".entry {entry}")),
            "{entry} in the PTX"
        );
        let resources = nvrtc::parse_ptxas_report(&report);
        let kernel = resources
            .iter()
            .find(|r| r.kernel == entry)
            .unwrap_or_else(|| panic!("{entry} in ptxas' report:\n{report}"));
        assert_eq!(kernel.spill_store_bytes, 0, "{entry} spills");
    }
}

#[test]
fn registering_a_family_reports_bad_input_as_typed_errors() {
    let family = scaled_add_family();
    // Again, the same: the same handle.
    assert!(std::ptr::eq(scaled_add_family().family(), family.family()));
    assert!(kernels::family("custom_scaled_add").is_some());
    assert!(kernels::registered_families()
        .iter()
        .any(|f| f.name == "custom_scaled_add"));
    assert_eq!(
        family.family().entry_points,
        ["custom_scaled_add", "custom_scaled_add_assign"]
    );
    // The crate's headers were inlined, so NVRTC needs no include path.
    assert!(!family
        .family()
        .source
        .contains("#include \"vector_io.cuh\""));
    assert!(family.family().source.contains("asif_map_v2_vectors"));
    let bad = |custom: CustomFamily| match kernels::register(custom) {
        Err(error @ Error::Argument { .. }) => error.to_string(),
        other => panic!(
            "{:?}: expected an argument error, got {other:?}",
            custom.name
        ),
    };
    let plain = |name: &'static str, source: &'static str| CustomFamily {
        name,
        source,
        emulated: None,
    };
    let kernel = "extern \"C\" __global__ void custom_probe(float* y) { y[0] = 1.0f; }\n";
    let message = bad(plain("custom_scaled_add", kernel));
    assert!(message.contains("registered already"), "{message}");
    let message = bad(plain("gelu", kernel));
    assert!(
        message.contains("this crate's kernel families"),
        "{message}"
    );
    let message = bad(plain("custom_bad_header", "#include \"no_such.cuh\"\n"));
    assert!(message.contains("no_such.cuh"), "{message}");
    let message = bad(plain(
        "custom_empty",
        "__device__ float f() { return 0; }\n",
    ));
    assert!(message.contains("no `extern"), "{message}");
    let message = bad(plain(
        "custom_taken",
        "extern \"C\" __global__ void gelu_forward(float* y) {}\n",
    ));
    assert!(message.contains("gelu_forward"), "{message}");
    let message = bad(plain("custom/name", kernel));
    assert!(message.contains("letters"), "{message}");
    let error = family.kernel("no_such_kernel").expect_err("unknown entry");
    assert!(matches!(error, Error::Argument { .. }), "{error}");
}

#[test]
fn an_emulated_launch_of_a_family_without_a_host_build_is_a_typed_error() {
    let family = kernels::register(CustomFamily {
        name: "custom_cuda_only",
        source: "extern \"C\" __global__ void custom_cuda_only_fill(float* y) { y[0] = 1.0f; }\n",
        emulated: None,
    })
    .expect("register");
    let device = common::emulated();
    let mut y = device.uninitialized::<f32>(1).expect("buffer");
    let error = device
        .launch(
            family.kernel("custom_cuda_only_fill").expect("entry"),
            LaunchConfig::linear(1, 1),
            &mut kernel_args![&mut y],
        )
        .expect_err("no host build");
    assert!(matches!(error, Error::Emulator(_)), "{error}");
    assert!(error
        .to_string()
        .contains("without an emulated entry point"));
}

/// An in-place op whose launch (and reference) returns a new output it did not declare.
struct Undeclared;

impl DeviceInPlaceOp for Undeclared {
    type Problem = ();
    fn name(&self) -> &'static str {
        "undeclared"
    }
    fn reference(
        &self,
        _: &(),
        _: &mut [&mut [f32]],
        _: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(vec![vec![0.0]])
    }
    fn launch(
        &self,
        _: &(),
        device: &Device,
        _: &mut [&mut Buffer<f32>],
        _: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![device.zeros(1)?])
    }
}

#[test]
fn the_in_place_dispatch_checks_what_an_op_returns() {
    for device in [Device::cpu(), common::emulated()] {
        let mut y = device.upload(&[1.0f32, 2.0]).expect("upload");
        let error = run_in_place(&Undeclared, &(), &device, &mut [&mut y], &[], &[])
            .expect_err("an undeclared output");
        assert!(matches!(error, Error::Shape { .. }), "{error}");
    }
}
