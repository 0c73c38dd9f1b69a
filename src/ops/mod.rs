//! One folder per op: `mod.rs` (public functions, checks, backward rule, tape face), `cpu.rs`
//! (the reference), `cuda.rs` (the kernel launch, shared by the CUDA and emulated devices).
//!
//! **The op contract** ([`DeviceOp`], docs/architecture.md "The op contract"): an op's checks
//! build its problem descriptor (sizes, flags, scalars: `DeviceOp::Problem`, owned by the op's
//! `mod.rs`); the op supplies its reference (`cpu.rs`, host slices in, host vectors out) and its
//! launch (`cuda.rs`, device buffers in, device buffers out). [`run`] does the device dispatch
//! (the CPU runs the reference, CUDA and the emulator the launch) and wraps the outputs in
//! tensors of the shapes the problem names; [`record`] and [`record_one`] are the tape face (the
//! input variables' ids, the order of their gradients). Both are public: another crate adds its
//! own op the same way (`tests/custom_op.rs`).
pub mod adam;
pub mod add;
pub mod attention;
pub mod bias_gelu;
pub mod contrastive;
pub mod cross_entropy;
pub mod dropout;
pub mod embedding;
pub mod gather;
pub mod gelu;
pub mod hie;
pub mod input_embedding;
pub mod layer_norm;
pub mod linear;
pub mod relu;
pub mod residual_norm;
pub mod source_attention;

use crate::autograd::{Tape, Var, VarId};
pub(crate) use crate::device::elementwise_launch;
/// The in-place face of the contract (defined with the devices, so that gradient accumulation,
/// below the tape, can use it too).
pub use crate::device::{run_in_place, DeviceInPlaceOp};
use crate::device::{Buffer, Device};
use crate::kernels::KernelRef;
use crate::{kernel_args, Error, IndexTensor, Result, Tensor};

/// Warps (rows at a time) per block of the warp-per-row layer norm kernels (`LAYER_NORM_V2_WARPS`
/// in `kernels/layer_norm_row.cuh`), which `layer_norm` (v2) and the fused `residual_norm` share.
pub(crate) const LAYER_NORM_WARPS_PER_BLOCK: usize = 8;

/// The launch of a warp-per-row layer norm kernel over `rows` rows: 8 warps (rows) per block.
pub(crate) fn warp_per_row_launch(rows: usize) -> crate::device::LaunchConfig {
    crate::device::LaunchConfig::linear(
        rows.div_ceil(LAYER_NORM_WARPS_PER_BLOCK) as u32,
        (LAYER_NORM_WARPS_PER_BLOCK * 32) as u32,
    )
}

/// Elements the grid-stride kernels can index (32-bit), as a typed error past that.
pub(crate) fn check_kernel_len(op: &'static str, len: usize) -> Result<usize> {
    if len > i32::MAX as usize {
        return Err(Error::shape(
            op,
            format!("{len} elements exceed the kernel's 32-bit indexing"),
        ));
    }
    Ok(len)
}

/// The op contract. An op (a forward or a backward pass: one type, or one value, each) names its
/// problem descriptor, which its checks build from the inputs, the shapes of its outputs, its
/// reference (what the CPU device runs) and its launch (what the CUDA and emulated devices run).
/// Inputs come in the op's own order: f32 `values`, then i32 `indices`; outputs are f32.
///
/// The launch allocates its outputs: [`Device::uninitialized`] for an output a kernel writes in
/// full, [`Device::zeros`] where a kernel accumulates or leaves part untouched on purpose.
pub trait DeviceOp {
    /// Sizes, flags and scalars, established by the op's checks.
    type Problem;
    /// The op's name in errors.
    fn name(&self) -> &'static str;
    /// The shape of every output, in order.
    fn output_shapes(&self, problem: &Self::Problem) -> Vec<Vec<usize>>;
    /// The CPU reference: host inputs in, one host vector per output.
    fn reference(
        &self,
        problem: &Self::Problem,
        values: &[&[f32]],
        indices: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>>;
    /// The kernel launch on a CUDA or emulated `device`: device inputs in, one buffer per output.
    fn launch(
        &self,
        problem: &Self::Problem,
        device: &Device,
        values: &[&Buffer<f32>],
        indices: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>>;
}

/// The device dispatch of every op: checks that the inputs share one device, runs the reference
/// on the CPU and the launch on CUDA and the emulator, and returns the outputs as tensors of the
/// shapes `op.output_shapes(problem)` names (an output of another length is an [`Error::Shape`]).
pub fn run<O: DeviceOp + ?Sized>(
    op: &O,
    problem: &O::Problem,
    values: &[&Tensor],
    indices: &[&IndexTensor],
) -> Result<Vec<Tensor>> {
    let name = op.name();
    let first = values
        .first()
        .ok_or_else(|| Error::argument(name, "an op needs at least one f32 input"))?;
    let device = first.device();
    for value in &values[1..] {
        first.same_device(name, value)?;
    }
    for index in indices {
        first.same_device(name, index)?;
    }
    let shapes = op.output_shapes(problem);
    let buffers = match device {
        Device::Cpu => {
            let host_values: Vec<&[f32]> = values.iter().map(|t| t.host()).collect();
            let host_indices: Vec<&[i32]> = indices.iter().map(|t| t.host()).collect();
            op.reference(problem, &host_values, &host_indices)?
                .into_iter()
                .map(Buffer::Host)
                .collect::<Vec<_>>()
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            let device_values: Vec<&Buffer<f32>> = values.iter().map(|t| t.buffer()).collect();
            let device_indices: Vec<&Buffer<i32>> = indices.iter().map(|t| t.buffer()).collect();
            op.launch(problem, device, &device_values, &device_indices)?
        }
    };
    if buffers.len() != shapes.len() {
        return Err(Error::shape(
            name,
            format!(
                "{} outputs for {} output shapes",
                buffers.len(),
                shapes.len()
            ),
        ));
    }
    shapes
        .iter()
        .zip(buffers)
        .map(|(shape, buffer)| {
            if buffer.len() != shape.iter().product::<usize>() {
                return Err(Error::shape(
                    name,
                    format!("an output of {} values for shape {shape:?}", buffer.len()),
                ));
            }
            Ok(Tensor::from_buffer(device, shape, buffer))
        })
        .collect()
}

/// [`run`] for an op with one output.
pub fn run_one<O: DeviceOp + ?Sized>(
    op: &O,
    problem: &O::Problem,
    values: &[&Tensor],
    indices: &[&IndexTensor],
) -> Result<Tensor> {
    let mut outputs = run(op, problem, values, indices)?;
    if outputs.len() != 1 {
        return Err(Error::shape(
            op.name(),
            format!("{} outputs where one was expected", outputs.len()),
        ));
    }
    Ok(outputs.remove(0))
}

/// The tape face of every op: records `outputs`, computed from the variables `inputs`, with a
/// backward rule that maps the outputs' gradients (`None`: that output received none) to one
/// gradient per input, in the order of `inputs` (`None`: no gradient for it, e.g. an index
/// input). A variable may appear several times in `inputs`: its gradients add up, in order.
pub fn record(
    tape: &Tape,
    inputs: &[&Var],
    outputs: Vec<Tensor>,
    backward: impl FnOnce(&[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> + 'static,
) -> Vec<Var> {
    let ids: Vec<VarId> = inputs.iter().map(|v| v.id()).collect();
    tape.record_many(outputs, move |grads: &[Option<Tensor>]| {
        let input_grads = backward(grads)?;
        if input_grads.len() != ids.len() {
            return Err(Error::argument(
                "Tape::backward",
                format!(
                    "a backward rule returned {} gradients for {} inputs",
                    input_grads.len(),
                    ids.len()
                ),
            ));
        }
        Ok(ids
            .iter()
            .zip(input_grads)
            .filter_map(|(&id, grad)| Some((id, grad?)))
            .collect())
    })
}

/// [`record`] for an op with one output: `backward` runs with that output's gradient.
pub fn record_one(
    tape: &Tape,
    inputs: &[&Var],
    output: Tensor,
    backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
) -> Var {
    let input_count = inputs.len();
    let mut vars = record(tape, inputs, vec![output], move |grads| match &grads[0] {
        Some(grad) => backward(grad),
        None => Ok(vec![None; input_count]),
    });
    vars.remove(0)
}

/// The problem of an elementwise op: the shape its inputs and its output share.
#[derive(Debug, Clone)]
pub(crate) struct Elementwise {
    pub shape: Vec<usize>,
}

impl Elementwise {
    /// Checks that every tensor has the first one's shape and fits the kernels' 32-bit indexing.
    pub fn check(op: &'static str, tensors: &[&Tensor]) -> Result<Elementwise> {
        let shape = tensors.first().map(|t| t.shape()).unwrap_or(&[]);
        for other in tensors.iter().skip(1) {
            tensors[0].same_device(op, other)?;
            if other.shape() != shape {
                return Err(Error::shape(
                    op,
                    format!("{:?} must match {:?}", other.shape(), shape),
                ));
            }
        }
        check_kernel_len(op, shape.iter().product())?;
        Ok(Elementwise {
            shape: shape.to_vec(),
        })
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// The reference of a two-input elementwise op: `f` over matching blocks of `a` and `b`
    /// (`crate::parallel::elementwise`), as the one output.
    pub fn reference_of_two(
        &self,
        inputs: &[&[f32]],
        f: impl Fn(&[f32], &[f32]) -> Vec<f32> + Sync,
    ) -> Vec<Vec<f32>> {
        let (a, b) = (inputs[0], inputs[1]);
        vec![crate::parallel::elementwise(self.len(), |r| {
            f(&a[r.clone()], &b[r])
        })]
    }
}

/// An elementwise activation (GELU, ReLU): its op name (also its kernel_version family), its two
/// grid-stride kernels `(const float* x, float* y, int len)` and `(const float* x, const float*
/// dy, float* dx, int len)` in both versions, and its f32 reference. The checks and the launches
/// are shared here ([`DeviceOp`] for its forward and, through [`ActivationBackward`], its
/// backward); each activation's module names its pieces.
pub(crate) struct Activation {
    pub op: &'static str,
    pub forward_kernel: KernelRef,
    pub backward_kernel: KernelRef,
    pub forward_kernel_v2: KernelRef,
    pub backward_kernel_v2: KernelRef,
    pub forward_reference: fn(&[f32]) -> Vec<f32>,
    pub backward_reference: fn(&[f32], &[f32]) -> Vec<f32>,
}

/// The backward pass of an [`Activation`]: `dx = f'(x) · dy`.
pub(crate) struct ActivationBackward<'a>(&'a Activation);

/// The elementwise kernel `kernel`/`kernel_v2` over `inputs` (1 or 2 arrays of `len`), into a new
/// output of `len` that it writes in full (grid-stride loop); no launch for `len = 0`.
fn launch_elementwise(
    device: &Device,
    family: &'static str,
    kernel: KernelRef,
    kernel_v2: KernelRef,
    inputs: &[&Buffer<f32>],
) -> Result<Buffer<f32>> {
    let len = inputs[0].len();
    let mut out = device.uninitialized::<f32>(len)?;
    if len > 0 {
        let (kernel, launch) = elementwise_launch(family, kernel, kernel_v2, len, inputs.len())?;
        match inputs {
            [x] => device.launch(kernel, launch, &mut kernel_args![*x, &mut out, len as i32])?,
            [x, y] => device.launch(
                kernel,
                launch,
                &mut kernel_args![*x, *y, &mut out, len as i32],
            )?,
            _ => {
                return Err(Error::argument(
                    family,
                    "an elementwise kernel takes one or two inputs",
                ))
            }
        }
    }
    Ok(out)
}

impl DeviceOp for Activation {
    type Problem = Elementwise;
    fn name(&self) -> &'static str {
        self.op
    }
    fn output_shapes(&self, problem: &Elementwise) -> Vec<Vec<usize>> {
        vec![problem.shape.clone()]
    }
    fn reference(
        &self,
        problem: &Elementwise,
        x: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let x = x[0];
        Ok(vec![crate::parallel::elementwise(problem.len(), |r| {
            (self.forward_reference)(&x[r])
        })])
    }
    fn launch(
        &self,
        _: &Elementwise,
        device: &Device,
        x: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let y = launch_elementwise(
            device,
            self.op,
            self.forward_kernel,
            self.forward_kernel_v2,
            x,
        )?;
        Ok(vec![y])
    }
}

impl DeviceOp for ActivationBackward<'_> {
    type Problem = Elementwise;
    fn name(&self) -> &'static str {
        self.0.op
    }
    fn output_shapes(&self, problem: &Elementwise) -> Vec<Vec<usize>> {
        vec![problem.shape.clone()]
    }
    fn reference(
        &self,
        problem: &Elementwise,
        inputs: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(problem.reference_of_two(inputs, self.0.backward_reference))
    }
    fn launch(
        &self,
        _: &Elementwise,
        device: &Device,
        inputs: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let dx = launch_elementwise(
            device,
            self.0.op,
            self.0.backward_kernel,
            self.0.backward_kernel_v2,
            inputs,
        )?;
        Ok(vec![dx])
    }
}

impl Activation {
    /// `y = f(x)`, elementwise.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let problem = Elementwise::check(self.op, &[x])?;
        run_one(self, &problem, &[x], &[])
    }

    /// `dx = f'(x) · dy`: `x` and `dy` on one device with one shape.
    pub fn backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        x.same_device(self.op, dy)?;
        if dy.shape() != x.shape() {
            return Err(Error::shape(
                self.op,
                format!("dy {:?} must match x {:?}", dy.shape(), x.shape()),
            ));
        }
        let problem = Elementwise::check(self.op, &[x, dy])?;
        run_one(&ActivationBackward(self), &problem, &[x, dy], &[])
    }

    /// The tape face: records `y = f(x)` with its backward.
    pub fn record(&'static self, tape: &Tape, x: &Var) -> Result<Var> {
        let y = self.forward(x.value())?;
        let x_value = x.value().clone();
        Ok(record_one(tape, &[x], y, move |dy| {
            Ok(vec![Some(self.backward(&x_value, dy)?)])
        }))
    }
}

/// Checks that `indices` live on `device` and, where they are host memory (CPU and emulated
/// devices), that every value lies in `[lower, upper)`. On the GPU the values are not read back
/// (that would synchronise every call); the kernels treat an out-of-range value as padding.
pub(crate) fn check_indices(
    op: &'static str,
    device: &Device,
    indices: &IndexTensor,
    lower: i64,
    upper: i64,
) -> Result<()> {
    if indices.device() != device {
        return Err(Error::DeviceMismatch {
            op,
            expected: device.name(),
            found: indices.device().name(),
        });
    }
    if matches!(device, Device::Cuda(_)) {
        return Ok(());
    }
    if let Some((at, &bad)) = indices
        .host()
        .iter()
        .enumerate()
        .find(|(_, &v)| !(lower..upper).contains(&(v as i64)))
    {
        return Err(Error::argument(
            op,
            format!("index {bad} at position {at} is outside [{lower}, {upper})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lengths_stop_at_i32_max() {
        assert_eq!(check_kernel_len("op", 0).unwrap(), 0);
        assert_eq!(
            check_kernel_len("op", 2_147_483_647).unwrap(),
            2_147_483_647
        );
        let error = check_kernel_len("op", 2_147_483_648).unwrap_err();
        assert!(matches!(error, Error::Shape { op: "op", .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "op: bad shape: 2147483648 elements exceed the kernel's 32-bit indexing"
        );
    }

    #[test]
    fn indices_are_checked_for_their_device_and_their_range() {
        // cargo-mutants, issue 16 (`check_indices` → `Ok(())` was unseen by the dispatch's
        // binaries; each op's own binary refuses a bad index through it).
        let cpu = Device::cpu();
        let emulated = Device::emulated(asif_emulator::launch);
        let ids = |device: &Device, values: Vec<i32>| {
            IndexTensor::from_vec(device, &[values.len()], values).unwrap()
        };
        // [−1, 3): both ends allowed, one past either refused, on each host device.
        for device in [&cpu, &emulated] {
            check_indices("op", device, &ids(device, vec![-1, 0, 2]), -1, 3).unwrap();
            for (values, message) in [
                (vec![0, -2], "index -2 at position 1 is outside [-1, 3)"),
                (vec![3], "index 3 at position 0 is outside [-1, 3)"),
            ] {
                let error = check_indices("op", device, &ids(device, values), -1, 3).unwrap_err();
                assert_eq!(error.to_string(), format!("op: bad argument: {message}"));
            }
        }
        let error = check_indices("op", &cpu, &ids(&emulated, vec![0]), 0, 1).unwrap_err();
        assert!(
            matches!(error, Error::DeviceMismatch { op: "op", .. }),
            "{error:?}"
        );
    }
}
