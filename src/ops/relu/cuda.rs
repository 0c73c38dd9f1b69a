//! Launches of `kernels/relu.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device};
use crate::kernels::KernelRef;
use crate::ops::{launch_elementwise, launch_elementwise_backward};
use crate::Result;

const FORWARD: KernelRef = KernelRef::new("relu", "relu_forward");
const BACKWARD: KernelRef = KernelRef::new("relu", "relu_backward");

pub(super) fn forward(device: &Device, x: &Buffer<f32>, len: usize) -> Result<Buffer<f32>> {
    launch_elementwise(device, FORWARD, x, len)
}

pub(super) fn backward(
    device: &Device,
    x: &Buffer<f32>,
    dy: &Buffer<f32>,
    len: usize,
) -> Result<Buffer<f32>> {
    launch_elementwise_backward(device, BACKWARD, x, dy, len)
}
