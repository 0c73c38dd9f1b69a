//! The three fused ASIF ops as candle custom ops (feature `candle`; docs/interop.md), so a candle
//! model gets these ops and their hand-derived gradients through candle's own autograd.
//!
//! candle's custom ops take at most three inputs and give one output (`CustomOp1/2/3`, each with
//! a `bwd`). How the three ops fit:
//! - [`AsifAttention`]: `queries.apply_op3(&keys, &values, op)`, with the score pairs and the
//!   values packed along a leading axis: queries and keys `[P, B, n, d]` (P = 1, 2 or 3 score
//!   pairs: C_XA, C_P, C_X as in `ops::attention`), values `[V, B, n, d]` (V = 1: V1 only; 2: V1,
//!   V2; 3: V1, V2, V3), output `[V, B, n, d]` (O_X, then O_A, then O_P). Inputs shared by the
//!   batch (`[n, d]`) are not offered here: broadcast them to `[B, n, d]` first (candle's
//!   autograd then sums their gradient over the batch).
//! - [`AsifHie`]: `h_x.apply_op3(&h_a, &w_r, op)`, H_X and H_A `[B, n, d]`, W_r `[n, r]`, output
//!   h_A* `[B, n, d]`; the backward is the op's [`HieBackward`] mode (Q constant: no gradient to
//!   H_X and W_r).
//! - [`AsifContrastiveLoss`]: `x.apply_op3(&a, &logit_scale, op)`, x and a `[B, n, d]`, the logit
//!   scale s `[1]`, output L_co `[1]`.
//!
//! The lengths L_b (and the contrastive loss's dedup groups) are integer data, not
//! differentiable inputs: they are fields of the op. The backward of each op is a second custom
//! op (applied without a backward of its own) that runs the forward again for the state it needs
//! (the attention's log-sum-exp, HIE's Q, R and mask) rather than keep it between candle's
//! forward and backward; its fourth input (the upstream gradient) travels packed onto the third
//! along the leading axis, and its output is the gradients flattened end to end, which the
//! backward cuts apart with `narrow`. The contrastive loss's gradients are computed for an
//! upstream gradient of one and scaled by candle (they are linear in it).
//!
//! Each op is written once over this crate's tensors ([`Body`]); candle's CPU and CUDA entry
//! points only move storage in and out:
//! - CPU (`cpu_fwd`): this crate's CPU device, whose every op is its reference.
//! - CUDA (`cuda_fwd`, feature `candle-cuda`): this crate's kernels on candle's own stream
//!   ([`Device::from_cuda_stream`], one per candle stream, cached), in order with candle's work
//!   and with no host round trip. candle's `CudaStorage` is a cudarc 0.19 `CudaSlice`, the type
//!   this crate lends ([`Tensor::from_cuda_slice`]); each input part is one device-to-device copy
//!   (a part is a sub-range of candle's buffer, and a lent slice must own its memory), each
//!   packed output one more. candle-core's `cuda` feature builds candle's own kernels with nvcc
//!   (docs/interop.md says how, from NVIDIA's pip wheels).
use candle_core::{CpuStorage, CustomOp3, Layout, Shape};

use crate::ops::attention::{
    attention_backward, attention_forward, AttentionConfig, AttentionInputs, OutputGradients,
    ScorePair,
};
use crate::ops::contrastive::{contrastive_loss_forward_backward, ContrastiveOptions};
use crate::ops::hie::{hie_backward, hie_forward, HieBackward, HieOptions};
use crate::{Device, Error, IndexTensor, Result, Tensor};

type CandleResult<T> = candle_core::Result<T>;
type CandleTensor = candle_core::Tensor;
type Gradients3 = (
    Option<CandleTensor>,
    Option<CandleTensor>,
    Option<CandleTensor>,
);

fn wrap(error: Error) -> candle_core::Error {
    candle_core::Error::wrap(error)
}

fn shape_error(op: &str, message: String) -> candle_core::Error {
    candle_core::Error::msg(format!("{op}: bad shape: {message}"))
}

// ---- one body, two devices -------------------------------------------------------------------------

/// An op of this module written once over this crate's tensors: which parts each candle input
/// holds, what it computes on a device of this crate, and the shape of its (packed) output.
trait Body {
    const NAME: &'static str;
    /// The shapes of the parts each input holds, end to end along its leading axis, checked.
    fn parts(&self, dims: [&[usize]; 3]) -> CandleResult<[Vec<Vec<usize>>; 3]>;
    /// The op on `device`, given each input's parts there; its outputs, to be packed end to end.
    fn run(&self, device: &Device, inputs: [Vec<Tensor>; 3]) -> Result<Vec<Tensor>>;
    /// The packed output's shape.
    fn output_shape(&self, dims: [&[usize]; 3]) -> Vec<usize>;
}

fn element_count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The start and end of a contiguous input's elements in its storage.
fn contiguous_range(op: &'static str, layout: &Layout) -> CandleResult<(usize, usize)> {
    layout
        .contiguous_offsets()
        .ok_or(candle_core::Error::RequiresContiguous { op })
}

/// Where each part starts, checked against the input's element count.
fn part_offsets(op: &str, shapes: &[Vec<usize>], len: usize) -> CandleResult<Vec<usize>> {
    let mut offsets = Vec::with_capacity(shapes.len());
    let mut at = 0;
    for shape in shapes {
        offsets.push(at);
        at += element_count(shape);
    }
    if at != len {
        return Err(shape_error(
            op,
            format!("parts {shapes:?} hold {at} elements, the input {len}"),
        ));
    }
    Ok(offsets)
}

fn cpu_forward<B: Body>(
    op: &B,
    inputs: [(&CpuStorage, &Layout); 3],
) -> CandleResult<(CpuStorage, Shape)> {
    let dims = inputs.map(|(_, layout)| layout.dims());
    let shapes = op.parts(dims)?;
    let device = Device::cpu();
    let mut tensors: [Vec<Tensor>; 3] = Default::default();
    for ((slot, (storage, layout)), shapes) in tensors.iter_mut().zip(inputs).zip(&shapes) {
        let (start, end) = contiguous_range(B::NAME, layout)?;
        let data = &storage.as_slice::<f32>()?[start..end];
        for (shape, offset) in shapes
            .iter()
            .zip(part_offsets(B::NAME, shapes, data.len())?)
        {
            let part = data[offset..offset + element_count(shape)].to_vec();
            slot.push(Tensor::from_vec(&device, shape, part).map_err(wrap)?);
        }
    }
    let mut packed = Vec::new();
    for output in op.run(&device, tensors).map_err(wrap)? {
        packed.extend(output.to_vec().map_err(wrap)?);
    }
    Ok((CpuStorage::F32(packed), Shape::from(op.output_shape(dims))))
}

#[cfg(feature = "candle-cuda")]
mod cuda {
    //! candle's CUDA storage in and out of this crate's tensors, on candle's stream.
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    use candle_core::{CudaDevice, CudaStorage, Layout, Shape};
    use cudarc::driver::CudaSlice;

    use super::{contiguous_range, element_count, part_offsets, wrap, Body, CandleResult};
    use crate::{Device, Tensor};

    fn driver(error: cudarc::driver::DriverError) -> candle_core::Error {
        candle_core::Error::Cuda(Box::new(error))
    }

    /// This crate's device on candle's stream, one per stream for the life of the process (the
    /// cache keeps the stream alive, so a key is never reused), so kernel modules load once.
    fn device_on(candle: &CudaDevice) -> CandleResult<Device> {
        static DEVICES: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
        let stream = candle.cuda_stream();
        let key = Arc::as_ptr(&stream) as usize;
        let mut devices = DEVICES
            .get_or_init(Default::default)
            .lock()
            .map_err(|_| candle_core::Error::msg("asif-kernels: device cache poisoned"))?;
        if let Some(device) = devices.get(&key) {
            return Ok(device.clone());
        }
        let device = Device::from_cuda_stream(stream).map_err(wrap)?;
        devices.insert(key, device.clone());
        Ok(device)
    }

    pub(super) fn forward<B: Body>(
        op: &B,
        inputs: [(&CudaStorage, &Layout); 3],
    ) -> CandleResult<(CudaStorage, Shape)> {
        let candle = inputs[0].0.device.clone();
        let device = device_on(&candle)?;
        let stream = candle.cuda_stream();
        let dims = inputs.map(|(_, layout)| layout.dims());
        let shapes = op.parts(dims)?;
        let mut tensors: [Vec<Tensor>; 3] = Default::default();
        for ((slot, (storage, layout)), shapes) in tensors.iter_mut().zip(inputs).zip(&shapes) {
            let (start, end) = contiguous_range(B::NAME, layout)?;
            let data = storage.as_cuda_slice::<f32>()?;
            for (shape, offset) in shapes
                .iter()
                .zip(part_offsets(B::NAME, shapes, end - start)?)
            {
                let at = start + offset;
                let part = stream
                    .clone_dtod(&data.slice(at..at + element_count(shape)))
                    .map_err(driver)?;
                slot.push(Tensor::from_cuda_slice(&device, shape, part).map_err(wrap)?);
            }
        }
        let mut outputs: Vec<CudaSlice<f32>> = Vec::new();
        for output in op.run(&device, tensors).map_err(wrap)? {
            outputs.push(output.into_cuda_slice().map_err(wrap)?);
        }
        let packed = if outputs.len() == 1 {
            outputs.pop().expect("one output")
        } else {
            let total = outputs.iter().map(|o| o.len()).sum();
            let mut packed = stream.alloc_zeros::<f32>(total).map_err(driver)?;
            let mut at = 0;
            for output in &outputs {
                let mut target = packed.slice_mut(at..at + output.len());
                stream.memcpy_dtod(output, &mut target).map_err(driver)?;
                at += output.len();
            }
            packed
        };
        Ok((
            CudaStorage::wrap_cuda_slice(packed, candle),
            Shape::from(op.output_shape(dims)),
        ))
    }
}

/// `CustomOp3` for a [`Body`]: the CPU and CUDA entry points convert storage; `bwd`, where
/// given, is the op's backward.
macro_rules! candle_op {
    ($op:ty $(, backward = $backward:ident)?) => {
        impl CustomOp3 for $op {
            fn name(&self) -> &'static str {
                <$op as Body>::NAME
            }

            fn cpu_fwd(
                &self,
                s1: &CpuStorage,
                l1: &Layout,
                s2: &CpuStorage,
                l2: &Layout,
                s3: &CpuStorage,
                l3: &Layout,
            ) -> CandleResult<(CpuStorage, Shape)> {
                cpu_forward(self, [(s1, l1), (s2, l2), (s3, l3)])
            }

            #[cfg(feature = "candle-cuda")]
            fn cuda_fwd(
                &self,
                s1: &candle_core::CudaStorage,
                l1: &Layout,
                s2: &candle_core::CudaStorage,
                l2: &Layout,
                s3: &candle_core::CudaStorage,
                l3: &Layout,
            ) -> CandleResult<(candle_core::CudaStorage, Shape)> {
                cuda::forward(self, [(s1, l1), (s2, l2), (s3, l3)])
            }

            $(
            fn bwd(
                &self,
                t1: &CandleTensor,
                t2: &CandleTensor,
                t3: &CandleTensor,
                _output: &CandleTensor,
                output_grad: &CandleTensor,
            ) -> CandleResult<Gradients3> {
                self.$backward(t1, t2, t3, output_grad)
            }
            )?
        }
    };
}

fn lengths_on(device: &Device, lengths: &[i32]) -> Result<IndexTensor> {
    IndexTensor::from_vec(device, &[lengths.len()], lengths.to_vec())
}

/// The part of a flat tensor from `start` with `shape`.
fn cut(flat: &CandleTensor, start: usize, shape: &[usize]) -> CandleResult<CandleTensor> {
    flat.narrow(0, start, element_count(shape))?.reshape(shape)
}

// ---- attention -----------------------------------------------------------------------------------

/// The fused dual-score attention (eqs. 1 to 5) as a candle op: see the module docs for the
/// packing. `lengths` are the L_b of the batch.
#[derive(Debug, Clone)]
pub struct AsifAttention {
    pub lengths: Vec<i32>,
    pub config: AttentionConfig,
}

/// Packed sizes: pairs P, values V, batch B, n, d.
#[derive(Debug, Clone, Copy)]
struct Packed {
    pairs: usize,
    values: usize,
    item: [usize; 3],
}

impl Packed {
    /// `values_per_item`: 1 for the forward's values `[V, B, n, d]`, 2 for the backward's values
    /// and upstream gradients `[2V, B, n, d]`.
    fn check(
        queries: &[usize],
        keys: &[usize],
        values: &[usize],
        values_per_item: usize,
    ) -> CandleResult<Packed> {
        const OP: &str = "AsifAttention";
        let (&[pairs, b, n, d], &[values_count, vb, vn, vd]) = (queries, values) else {
            return Err(shape_error(
                OP,
                format!("queries {queries:?} and values {values:?} must be [P, B, n, d] and [V, B, n, d]"),
            ));
        };
        let values_count = values_count / values_per_item;
        if keys != queries
            || [vb, vn, vd] != [b, n, d]
            || !(1..=3).contains(&pairs)
            || !(1..=3).contains(&values_count)
            || values[0] % values_per_item != 0
        {
            return Err(shape_error(
                OP,
                format!("queries {queries:?}, keys {keys:?}, values {values:?} (P, V in 1..=3; B, n, d alike)"),
            ));
        }
        Ok(Packed {
            pairs,
            values: values_count,
            item: [b, n, d],
        })
    }

    fn items(&self, count: usize) -> Vec<Vec<usize>> {
        vec![self.item.to_vec(); count]
    }

    /// The attention inputs from the parts of queries, keys and values (V1 first).
    fn inputs(queries: Vec<Tensor>, keys: Vec<Tensor>, values: Vec<Tensor>) -> AttentionInputs {
        let mut values = values.into_iter();
        AttentionInputs {
            score_pairs: queries
                .into_iter()
                .zip(keys)
                .map(|(query, key)| ScorePair { query, key })
                .collect(),
            id_values: values.next().expect("Packed::check: V ≥ 1"),
            fused_values: values.next(),
            position_values: values.next(),
        }
    }
}

impl Body for AsifAttention {
    const NAME: &'static str = "asif-attention";

    fn parts(&self, [q, k, v]: [&[usize]; 3]) -> CandleResult<[Vec<Vec<usize>>; 3]> {
        let packed = Packed::check(q, k, v, 1)?;
        Ok([
            packed.items(packed.pairs),
            packed.items(packed.pairs),
            packed.items(packed.values),
        ])
    }

    fn run(&self, device: &Device, [q, k, v]: [Vec<Tensor>; 3]) -> Result<Vec<Tensor>> {
        let inputs = Packed::inputs(q, k, v);
        let (outputs, _) =
            attention_forward(&inputs, &lengths_on(device, &self.lengths)?, &self.config)?;
        Ok([Some(outputs.id), outputs.fused, outputs.position]
            .into_iter()
            .flatten()
            .collect())
    }

    fn output_shape(&self, [_, _, v]: [&[usize]; 3]) -> Vec<usize> {
        v.to_vec()
    }
}

impl AsifAttention {
    fn backward(
        &self,
        queries: &CandleTensor,
        keys: &CandleTensor,
        values: &CandleTensor,
        output_grad: &CandleTensor,
    ) -> CandleResult<Gradients3> {
        let packed = Packed::check(queries.dims(), keys.dims(), values.dims(), 1)?;
        let values_and_upstream = CandleTensor::cat(&[values, output_grad], 0)?;
        let flat = queries.contiguous()?.apply_op3_no_bwd(
            &keys.contiguous()?,
            &values_and_upstream,
            &AttentionGradients(self.clone()),
        )?;
        let pairs_len = packed.pairs * element_count(&packed.item);
        Ok((
            Some(cut(&flat, 0, queries.dims())?),
            Some(cut(&flat, pairs_len, keys.dims())?),
            Some(cut(&flat, 2 * pairs_len, values.dims())?),
        ))
    }
}

candle_op!(AsifAttention, backward = backward);

/// The attention's backward as a candle op: queries, keys, then the values with the upstream
/// gradients packed after them (`[2V, B, n, d]`); output dQ, dK, dV flattened end to end.
#[derive(Debug, Clone)]
struct AttentionGradients(AsifAttention);

impl Body for AttentionGradients {
    const NAME: &'static str = "asif-attention-backward";

    fn parts(&self, [q, k, v]: [&[usize]; 3]) -> CandleResult<[Vec<Vec<usize>>; 3]> {
        let packed = Packed::check(q, k, v, 2)?;
        Ok([
            packed.items(packed.pairs),
            packed.items(packed.pairs),
            packed.items(2 * packed.values),
        ])
    }

    fn run(&self, device: &Device, [q, k, mut v]: [Vec<Tensor>; 3]) -> Result<Vec<Tensor>> {
        let mut upstream = v.split_off(v.len() / 2).into_iter();
        let inputs = Packed::inputs(q, k, v);
        let lengths = lengths_on(device, &self.0.lengths)?;
        let (_, saved) = attention_forward(&inputs, &lengths, &self.0.config)?;
        let (id, fused, position) = (upstream.next(), upstream.next(), upstream.next());
        let grads = attention_backward(
            &inputs,
            &lengths,
            &self.0.config,
            &saved,
            &OutputGradients {
                id: id.as_ref(),
                fused: fused.as_ref(),
                position: position.as_ref(),
            },
        )?;
        let mut flat: Vec<Tensor> = grads.score_pairs.iter().map(|g| g.query.clone()).collect();
        flat.extend(grads.score_pairs.iter().map(|g| g.key.clone()));
        flat.extend(
            [
                Some(grads.id_values),
                grads.fused_values,
                grads.position_values,
            ]
            .into_iter()
            .flatten(),
        );
        Ok(flat)
    }

    fn output_shape(&self, [q, k, v]: [&[usize]; 3]) -> Vec<usize> {
        vec![element_count(q) + element_count(k) + element_count(v) / 2]
    }
}

candle_op!(AttentionGradients);

// ---- HIE -------------------------------------------------------------------------------------------

/// HIE (eqs. 10 to 12) as a candle op: `h_x.apply_op3(&h_a, &w_r, op)`.
#[derive(Debug, Clone)]
pub struct AsifHie {
    pub lengths: Vec<i32>,
    pub options: HieOptions,
    pub backward: HieBackward,
}

impl AsifHie {
    /// H_X, H_A (`copies` of `[B, n, d]` packed: 1 forward, 2 with dh in the backward) and W_r.
    fn check(
        h_x: &[usize],
        h_a: &[usize],
        w_r: &[usize],
        copies: usize,
    ) -> CandleResult<[Vec<Vec<usize>>; 3]> {
        let mut one_a = h_a.to_vec();
        if let Some(b) = one_a.first_mut() {
            *b /= copies;
        }
        if h_x.len() != 3 || one_a != h_x || h_a[0] % copies != 0 || w_r.len() != 2 {
            return Err(shape_error(
                "AsifHie",
                format!(
                    "H_X {h_x:?}, H_A {h_a:?}, W_r {w_r:?} (expected [B, n, d] twice and [n, r])"
                ),
            ));
        }
        Ok([
            vec![h_x.to_vec()],
            vec![h_x.to_vec(); copies],
            vec![w_r.to_vec()],
        ])
    }

    fn backward_through(
        &self,
        h_x: &CandleTensor,
        h_a: &CandleTensor,
        w_r: &CandleTensor,
        output_grad: &CandleTensor,
    ) -> CandleResult<Gradients3> {
        Self::check(h_x.dims(), h_a.dims(), w_r.dims(), 1)?;
        let a_and_upstream = CandleTensor::cat(&[h_a, output_grad], 0)?;
        let flat = h_x.contiguous()?.apply_op3_no_bwd(
            &a_and_upstream,
            &w_r.contiguous()?,
            &HieGradients(self.clone()),
        )?;
        Ok(match self.backward {
            HieBackward::QConstant => (None, Some(cut(&flat, 0, h_a.dims())?), None),
            HieBackward::FullQr => {
                let x_len = element_count(h_x.dims());
                (
                    Some(cut(&flat, 0, h_x.dims())?),
                    Some(cut(&flat, x_len, h_a.dims())?),
                    Some(cut(&flat, 2 * x_len, w_r.dims())?),
                )
            }
        })
    }
}

impl Body for AsifHie {
    const NAME: &'static str = "asif-hie";

    fn parts(&self, [x, a, w]: [&[usize]; 3]) -> CandleResult<[Vec<Vec<usize>>; 3]> {
        Self::check(x, a, w, 1)
    }

    fn run(&self, device: &Device, [x, a, w]: [Vec<Tensor>; 3]) -> Result<Vec<Tensor>> {
        let lengths = lengths_on(device, &self.lengths)?;
        let (output, _) = hie_forward(&x[0], &a[0], &w[0], &lengths, self.options)?;
        Ok(vec![output])
    }

    fn output_shape(&self, [x, _, _]: [&[usize]; 3]) -> Vec<usize> {
        x.to_vec()
    }
}

candle_op!(AsifHie, backward = backward_through);

/// HIE's backward as a candle op: H_X, then H_A with dh packed after it, then W_r; output
/// dH_A (Q constant) or dH_X, dH_A, dW_r (full QR) flattened end to end.
#[derive(Debug, Clone)]
struct HieGradients(AsifHie);

impl Body for HieGradients {
    const NAME: &'static str = "asif-hie-backward";

    fn parts(&self, [x, a, w]: [&[usize]; 3]) -> CandleResult<[Vec<Vec<usize>>; 3]> {
        AsifHie::check(x, a, w, 2)
    }

    fn run(&self, device: &Device, [x, a, w]: [Vec<Tensor>; 3]) -> Result<Vec<Tensor>> {
        let lengths = lengths_on(device, &self.0.lengths)?;
        let (h_x, h_a, w_r, dy) = (&x[0], &a[0], &w[0], &a[1]);
        let (_, saved) = hie_forward(h_x, h_a, w_r, &lengths, self.0.options)?;
        let grads = hie_backward(
            h_x,
            h_a,
            w_r,
            &lengths,
            &saved,
            dy,
            self.0.options,
            self.0.backward,
        )?;
        Ok([grads.dh_x, Some(grads.dh_a), grads.dw_r]
            .into_iter()
            .flatten()
            .collect())
    }

    fn output_shape(&self, [x, _, w]: [&[usize]; 3]) -> Vec<usize> {
        vec![match self.0.backward {
            HieBackward::QConstant => element_count(x),
            HieBackward::FullQr => 2 * element_count(x) + element_count(w),
        }]
    }
}

candle_op!(HieGradients);

// ---- the RSA contrastive loss --------------------------------------------------------------------

/// The RSA contrastive loss L_co (eqs. 6 to 9) as a candle op: `x.apply_op3(&a, &s, op)`.
/// `groups` (`[B·n]`, optional) is `ops::contrastive`'s dedup switch.
#[derive(Debug, Clone)]
pub struct AsifContrastiveLoss {
    pub lengths: Vec<i32>,
    pub groups: Option<Vec<i32>>,
    pub options: ContrastiveOptions,
}

impl AsifContrastiveLoss {
    fn check(x: &[usize], a: &[usize], s: &[usize]) -> CandleResult<[Vec<Vec<usize>>; 3]> {
        if x.len() != 3 || a != x || element_count(s) != 1 {
            return Err(shape_error(
                "AsifContrastiveLoss",
                format!("x {x:?}, a {a:?}, s {s:?} (expected [B, n, d] twice and [1])"),
            ));
        }
        Ok([vec![x.to_vec()], vec![a.to_vec()], vec![vec![1]]])
    }

    /// The loss and the gradients of L_co (upstream gradient one).
    fn forward_backward(
        &self,
        device: &Device,
        [x, a, s]: [Vec<Tensor>; 3],
    ) -> Result<crate::ops::contrastive::ContrastiveOutput> {
        let groups = match &self.groups {
            Some(g) => Some(IndexTensor::from_vec(
                device,
                &x[0].shape()[..2],
                g.clone(),
            )?),
            None => None,
        };
        contrastive_loss_forward_backward(
            &x[0],
            &a[0],
            &lengths_on(device, &self.lengths)?,
            &s[0],
            groups.as_ref(),
            self.options,
            1.0,
        )
    }

    fn backward(
        &self,
        x: &CandleTensor,
        a: &CandleTensor,
        s: &CandleTensor,
        output_grad: &CandleTensor,
    ) -> CandleResult<Gradients3> {
        Self::check(x.dims(), a.dims(), s.dims())?;
        let flat = x.contiguous()?.apply_op3_no_bwd(
            &a.contiguous()?,
            &s.contiguous()?,
            &ContrastiveGradients(self.clone()),
        )?;
        let upstream = output_grad.flatten_all()?;
        let scaled = |start: usize, like: &CandleTensor| -> CandleResult<CandleTensor> {
            cut(&flat, start, like.dims())?.broadcast_mul(&upstream.reshape(vec![1; like.rank()])?)
        };
        let x_len = element_count(x.dims());
        Ok((
            Some(scaled(0, x)?),
            Some(scaled(x_len, a)?),
            Some(scaled(2 * x_len, s)?),
        ))
    }
}

impl Body for AsifContrastiveLoss {
    const NAME: &'static str = "asif-contrastive-loss";

    fn parts(&self, [x, a, s]: [&[usize]; 3]) -> CandleResult<[Vec<Vec<usize>>; 3]> {
        Self::check(x, a, s)
    }

    fn run(&self, device: &Device, inputs: [Vec<Tensor>; 3]) -> Result<Vec<Tensor>> {
        Ok(vec![self.forward_backward(device, inputs)?.loss])
    }

    fn output_shape(&self, _: [&[usize]; 3]) -> Vec<usize> {
        vec![1]
    }
}

candle_op!(AsifContrastiveLoss, backward = backward);

/// The contrastive loss's gradients (upstream one) as a candle op: x, a, s in; dx, da, ds
/// flattened end to end.
#[derive(Debug, Clone)]
struct ContrastiveGradients(AsifContrastiveLoss);

impl Body for ContrastiveGradients {
    const NAME: &'static str = "asif-contrastive-loss-backward";

    fn parts(&self, [x, a, s]: [&[usize]; 3]) -> CandleResult<[Vec<Vec<usize>>; 3]> {
        AsifContrastiveLoss::check(x, a, s)
    }

    fn run(&self, device: &Device, inputs: [Vec<Tensor>; 3]) -> Result<Vec<Tensor>> {
        let out = self.0.forward_backward(device, inputs)?;
        Ok(vec![out.dx, out.da, out.ds])
    }

    fn output_shape(&self, [x, a, _]: [&[usize]; 3]) -> Vec<usize> {
        vec![element_count(x) + element_count(a) + 1]
    }
}

candle_op!(ContrastiveGradients);
