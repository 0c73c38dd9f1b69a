//! Gradient accumulation as a tensor-level primitive: `y += x`, elementwise, on any device
//! (`kernels/elementwise.cu: add_assign` on CUDA and the emulator). The tape sums the gradients
//! of a value used twice with it, and `ops::add` re-exports it; it sits below both so that the
//! tape does not import an op that imports the tape back.
use crate::device::{elementwise_launch, Device};
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

/// `y += x`, elementwise, same shape and device.
pub fn add_assign(y: &mut Tensor, x: &Tensor) -> Result<()> {
    y.same_device("add_assign", x)?;
    if y.shape() != x.shape() {
        return Err(Error::shape(
            "add_assign",
            format!("{:?} += {:?}", y.shape(), x.shape()),
        ));
    }
    let device = y.device().clone();
    match &device {
        Device::Cpu => {
            let x_values = x.host().to_vec();
            let block = crate::parallel::ELEMENTS_PER_UNIT;
            crate::parallel::for_each_block(y.buffer_mut()?.host_slice_mut(), block, |u, y| {
                add_assign_reference(y, &x_values[u * block..]);
            });
            Ok(())
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            let len = x.len();
            if len == 0 {
                return Ok(());
            }
            // kernel_version family "elementwise": v1 scalar, v2 128-bit (`kernels/vector_io.cuh`).
            let (kernel, launch) =
                elementwise_launch("elementwise", ADD_ASSIGN, ADD_ASSIGN_V2, len, 2)?;
            device.launch(
                kernel,
                launch,
                &mut kernel_args![y.buffer_mut()?, x.buffer(), len as i32],
            )
        }
    }
}
