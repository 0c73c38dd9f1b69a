//! Launch of `kernels/input_embedding.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const FORWARD: KernelRef = KernelRef::new("input_embedding", "input_embedding_forward");

/// The sizes of one fused lookup.
#[derive(Debug, Clone)]
pub(super) struct Sizes {
    pub positions: usize,
    pub dim: usize,
    pub item_vocab: usize,
    pub max_tokens: usize,
    pub attribute_vocab: usize,
    pub mean: bool,
}

/// `(x, a)` in one launch.
pub(super) fn forward(
    device: &Device,
    item_table: &Buffer<f32>,
    attribute_table: &Buffer<f32>,
    ids: &Buffer<i32>,
    tokens: &Buffer<i32>,
    s: &Sizes,
) -> Result<(Buffer<f32>, Buffer<f32>)> {
    let len = s.outputs();
    // `input_embedding_forward` writes every element of both (0 for a pad or an id outside).
    let mut x = device.uninitialized::<f32>(len)?;
    let mut a = device.uninitialized::<f32>(len)?;
    if len > 0 {
        device.launch(
            FORWARD,
            LaunchConfig::grid_stride(len),
            &mut kernel_args![
                item_table,
                attribute_table,
                ids,
                tokens,
                &mut x,
                &mut a,
                s.positions as i32,
                s.dim as i32,
                s.item_vocab as i32,
                s.max_tokens as i32,
                s.attribute_vocab as i32,
                s.mean as i32
            ],
        )?;
    }
    Ok((x, a))
}
