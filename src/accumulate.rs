//! Gradient accumulation as a tensor-level primitive: `y += x`, elementwise, on any device
//! (`kernels/elementwise.cu: add_assign` on CUDA and the emulator). The tape sums the gradients
//! of a value used twice with it, and `ops::add` re-exports it; it sits below both so that the
//! tape does not import an op that imports the tape back. It is an in-place pass of the op
//! contract ([`DeviceInPlaceOp`], which lives with the devices for that reason).
use crate::device::{elementwise_launch, run_in_place, Buffer, Device, DeviceInPlaceOp};
use crate::kernels::KernelRef;
use crate::{kernel_args, Error, Result, Tensor};

const ADD_ASSIGN: KernelRef = KernelRef::new("elementwise", "add_assign");
const ADD_ASSIGN_V2: KernelRef = KernelRef::new("elementwise", "add_assign_v2");

/// Reference: `y += x`.
pub fn add_assign_reference<F: num_traits::Float>(y: &mut [F], x: &[F]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = *y + x;
    }
}

/// `y += x` under the op contract; the problem is the length both share.
struct AddAssign;

impl DeviceInPlaceOp for AddAssign {
    type Problem = usize;
    fn name(&self) -> &'static str {
        "add_assign"
    }
    fn reference(
        &self,
        _: &usize,
        y: &mut [&mut [f32]],
        x: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let x = x[0];
        let block = crate::parallel::ELEMENTS_PER_UNIT;
        crate::parallel::for_each_block(y[0], block, |u, y| {
            add_assign_reference(y, &x[u * block..]);
        });
        Ok(Vec::new())
    }
    fn launch(
        &self,
        &len: &usize,
        device: &Device,
        y: &mut [&mut Buffer<f32>],
        x: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        if len > 0 {
            // kernel_version family "elementwise": v1 scalar, v2 128-bit (`kernels/vector_io.cuh`).
            let (kernel, launch) =
                elementwise_launch("elementwise", ADD_ASSIGN, ADD_ASSIGN_V2, len, 2)?;
            device.launch(
                kernel,
                launch,
                &mut kernel_args![&mut *y[0], x[0], len as i32],
            )?;
        }
        Ok(Vec::new())
    }
}

/// `y += x`, elementwise, same shape and device.
pub fn add_assign(y: &mut Tensor, x: &Tensor) -> Result<()> {
    y.same_device("add_assign", x)?;
    if y.shape() != x.shape() {
        return Err(Error::shape(
            "add_assign",
            format!("{:?} += {:?}", y.shape(), x.shape()),
        ));
    }
    let len = x.len();
    let device = y.device().clone();
    run_in_place(
        &AddAssign,
        &len,
        &device,
        &mut [y.buffer_mut()?],
        &[x.buffer()],
        &[],
    )?;
    Ok(())
}
