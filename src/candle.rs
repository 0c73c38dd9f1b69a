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
//! differentiable inputs: they are fields of the op. The backward of each op runs its forward
//! again for the state it needs (the attention's log-sum-exp, HIE's Q, R and mask) rather than
//! keep it between candle's forward and backward.
//!
//! Only candle's CPU device is implemented: `cpu_fwd` and `bwd` run this crate's CPU device,
//! whose every op is its reference. The CUDA side (`cuda_fwd`, on candle's `CudaStorage`, which
//! is a cudarc 0.19 `CudaSlice` as ours) is not implemented: candle-core's `cuda` feature builds
//! its own kernels with nvcc, which the machines this was written on lack; docs/interop.md says
//! what it needs. On a CUDA candle tensor these ops return candle's "no cuda implementation"
//! error.
use candle_core::{CpuStorage, CustomOp3, Layout, Shape};

use crate::ops::attention::{
    attention_backward, attention_forward, AttentionConfig, AttentionInputs, OutputGradients,
    ScorePair,
};
use crate::ops::contrastive::{contrastive_loss_forward_backward, ContrastiveOptions};
use crate::ops::hie::{hie_backward, hie_forward, HieBackward, HieOptions};
use crate::{Device, Error, IndexTensor, Tensor};

type CandleResult<T> = candle_core::Result<T>;

fn wrap(error: Error) -> candle_core::Error {
    candle_core::Error::wrap(error)
}

/// The f32 values of a contiguous CPU storage.
fn values<'a>(
    op: &'static str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> CandleResult<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or(candle_core::Error::RequiresContiguous { op })?;
    Ok(&data[start..end])
}

/// The values of a candle tensor (any device), row-major.
fn candle_values(tensor: &candle_core::Tensor) -> CandleResult<Vec<f32>> {
    tensor.flatten_all()?.to_vec1::<f32>()
}

/// A tensor of this crate on the CPU reference device.
fn cpu_tensor(shape: &[usize], values: Vec<f32>) -> CandleResult<Tensor> {
    Tensor::from_vec(&Device::cpu(), shape, values).map_err(wrap)
}

fn cpu_lengths(lengths: &[i32]) -> CandleResult<IndexTensor> {
    IndexTensor::from_vec(&Device::cpu(), &[lengths.len()], lengths.to_vec()).map_err(wrap)
}

/// A candle tensor on `like`'s device from this crate's tensors, concatenated.
fn to_candle(
    parts: &[&Tensor],
    dims: &[usize],
    like: &candle_core::Tensor,
) -> CandleResult<candle_core::Tensor> {
    let mut all = Vec::with_capacity(dims.iter().product());
    for part in parts {
        all.extend(part.to_vec().map_err(wrap)?);
    }
    candle_core::Tensor::from_vec(all, dims.to_vec(), like.device())
}

fn shape_error(op: &str, message: String) -> candle_core::Error {
    candle_core::Error::msg(format!("{op}: bad shape: {message}"))
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
    fn check(queries: &[usize], keys: &[usize], values: &[usize]) -> CandleResult<Packed> {
        const OP: &str = "AsifAttention";
        let (&[pairs, b, n, d], &[values_count, vb, vn, vd]) = (queries, values) else {
            return Err(shape_error(
                OP,
                format!("queries {queries:?} and values {values:?} must be [P, B, n, d] and [V, B, n, d]"),
            ));
        };
        if keys != queries
            || [vb, vn, vd] != [b, n, d]
            || !(1..=3).contains(&pairs)
            || !(1..=3).contains(&values_count)
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

    fn item_len(&self) -> usize {
        self.item.iter().product()
    }

    /// Splits packed values into `count` tensors of `[B, n, d]`.
    fn split(&self, packed: &[f32], count: usize) -> CandleResult<Vec<Tensor>> {
        packed
            .chunks(self.item_len())
            .take(count)
            .map(|chunk| cpu_tensor(&self.item, chunk.to_vec()))
            .collect()
    }

    fn inputs(
        &self,
        queries: &[f32],
        keys: &[f32],
        values: &[f32],
    ) -> CandleResult<AttentionInputs> {
        let queries = self.split(queries, self.pairs)?;
        let keys = self.split(keys, self.pairs)?;
        let mut values = self.split(values, self.values)?.into_iter();
        let id_values = values
            .next()
            .ok_or_else(|| shape_error("AsifAttention", "no V1".into()))?;
        Ok(AttentionInputs {
            score_pairs: queries
                .into_iter()
                .zip(keys)
                .map(|(query, key)| ScorePair { query, key })
                .collect(),
            id_values,
            fused_values: values.next(),
            position_values: values.next(),
        })
    }
}

impl CustomOp3 for AsifAttention {
    fn name(&self) -> &'static str {
        "asif-attention"
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
        let packed = Packed::check(l1.dims(), l2.dims(), l3.dims())?;
        let inputs = packed.inputs(
            values(self.name(), s1, l1)?,
            values(self.name(), s2, l2)?,
            values(self.name(), s3, l3)?,
        )?;
        let (outputs, _) =
            attention_forward(&inputs, &cpu_lengths(&self.lengths)?, &self.config).map_err(wrap)?;
        let mut all = outputs.id.to_vec().map_err(wrap)?;
        for output in [outputs.fused, outputs.position].into_iter().flatten() {
            all.extend(output.to_vec().map_err(wrap)?);
        }
        let [b, n, d] = packed.item;
        Ok((CpuStorage::F32(all), Shape::from((packed.values, b, n, d))))
    }

    fn bwd(
        &self,
        queries: &candle_core::Tensor,
        keys: &candle_core::Tensor,
        values: &candle_core::Tensor,
        _output: &candle_core::Tensor,
        output_grad: &candle_core::Tensor,
    ) -> CandleResult<(
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
    )> {
        let packed = Packed::check(queries.dims(), keys.dims(), values.dims())?;
        let inputs = packed.inputs(
            &candle_values(queries)?,
            &candle_values(keys)?,
            &candle_values(values)?,
        )?;
        let lengths = cpu_lengths(&self.lengths)?;
        let (_, saved) = attention_forward(&inputs, &lengths, &self.config).map_err(wrap)?;
        let upstream = packed.split(&candle_values(output_grad)?, packed.values)?;
        let grads = attention_backward(
            &inputs,
            &lengths,
            &self.config,
            &saved,
            &OutputGradients {
                id: upstream.first(),
                fused: upstream.get(1),
                position: upstream.get(2),
            },
        )
        .map_err(wrap)?;
        let dq: Vec<&Tensor> = grads.score_pairs.iter().map(|g| &g.query).collect();
        let dk: Vec<&Tensor> = grads.score_pairs.iter().map(|g| &g.key).collect();
        let dv: Vec<&Tensor> = [
            Some(&grads.id_values),
            grads.fused_values.as_ref(),
            grads.position_values.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok((
            Some(to_candle(&dq, queries.dims(), queries)?),
            Some(to_candle(&dk, keys.dims(), keys)?),
            Some(to_candle(&dv, values.dims(), values)?),
        ))
    }
}

// ---- HIE -------------------------------------------------------------------------------------------

/// HIE (eqs. 10 to 12) as a candle op: `h_x.apply_op3(&h_a, &w_r, op)`.
#[derive(Debug, Clone)]
pub struct AsifHie {
    pub lengths: Vec<i32>,
    pub options: HieOptions,
    pub backward: HieBackward,
}

impl AsifHie {
    fn inputs(&self, h_x: &[usize], h_a: &[usize], w_r: &[usize]) -> CandleResult<[Vec<usize>; 3]> {
        if h_x.len() != 3 || h_a != h_x || w_r.len() != 2 {
            return Err(shape_error(
                "AsifHie",
                format!(
                    "H_X {h_x:?}, H_A {h_a:?}, W_r {w_r:?} (expected [B, n, d] twice and [n, r])"
                ),
            ));
        }
        Ok([h_x.to_vec(), h_a.to_vec(), w_r.to_vec()])
    }
}

impl CustomOp3 for AsifHie {
    fn name(&self) -> &'static str {
        "asif-hie"
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
        let [x_dims, a_dims, w_dims] = self.inputs(l1.dims(), l2.dims(), l3.dims())?;
        let h_x = cpu_tensor(&x_dims, values(self.name(), s1, l1)?.to_vec())?;
        let h_a = cpu_tensor(&a_dims, values(self.name(), s2, l2)?.to_vec())?;
        let w_r = cpu_tensor(&w_dims, values(self.name(), s3, l3)?.to_vec())?;
        let (output, _) = hie_forward(&h_x, &h_a, &w_r, &cpu_lengths(&self.lengths)?, self.options)
            .map_err(wrap)?;
        Ok((
            CpuStorage::F32(output.to_vec().map_err(wrap)?),
            Shape::from(x_dims),
        ))
    }

    fn bwd(
        &self,
        h_x: &candle_core::Tensor,
        h_a: &candle_core::Tensor,
        w_r: &candle_core::Tensor,
        _output: &candle_core::Tensor,
        output_grad: &candle_core::Tensor,
    ) -> CandleResult<(
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
    )> {
        let [x_dims, a_dims, w_dims] = self.inputs(h_x.dims(), h_a.dims(), w_r.dims())?;
        let ours_x = cpu_tensor(&x_dims, candle_values(h_x)?)?;
        let ours_a = cpu_tensor(&a_dims, candle_values(h_a)?)?;
        let ours_w = cpu_tensor(&w_dims, candle_values(w_r)?)?;
        let dy = cpu_tensor(&x_dims, candle_values(output_grad)?)?;
        let lengths = cpu_lengths(&self.lengths)?;
        let (_, saved) =
            hie_forward(&ours_x, &ours_a, &ours_w, &lengths, self.options).map_err(wrap)?;
        let grads = hie_backward(
            &ours_x,
            &ours_a,
            &ours_w,
            &lengths,
            &saved,
            &dy,
            self.options,
            self.backward,
        )
        .map_err(wrap)?;
        let dh_x = match &grads.dh_x {
            Some(g) => Some(to_candle(&[g], &x_dims, h_x)?),
            None => None,
        };
        let dw_r = match &grads.dw_r {
            Some(g) => Some(to_candle(&[g], &w_dims, w_r)?),
            None => None,
        };
        Ok((dh_x, Some(to_candle(&[&grads.dh_a], &a_dims, h_a)?), dw_r))
    }
}

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
    /// The loss and the gradients of `upstream · L_co`.
    fn run(
        &self,
        x: (Vec<f32>, &[usize]),
        a: (Vec<f32>, &[usize]),
        s: Vec<f32>,
        upstream: f32,
    ) -> CandleResult<crate::ops::contrastive::ContrastiveOutput> {
        if x.1.len() != 3 || a.1 != x.1 || s.len() != 1 {
            return Err(shape_error(
                "AsifContrastiveLoss",
                format!(
                    "x {:?}, a {:?}, {} logit scales (expected [B, n, d] twice and [1])",
                    x.1,
                    a.1,
                    s.len()
                ),
            ));
        }
        let groups = match &self.groups {
            Some(g) => {
                Some(IndexTensor::from_vec(&Device::cpu(), &x.1[..2], g.clone()).map_err(wrap)?)
            }
            None => None,
        };
        contrastive_loss_forward_backward(
            &cpu_tensor(x.1, x.0)?,
            &cpu_tensor(a.1, a.0)?,
            &cpu_lengths(&self.lengths)?,
            &cpu_tensor(&[1], s)?,
            groups.as_ref(),
            self.options,
            upstream,
        )
        .map_err(wrap)
    }
}

impl CustomOp3 for AsifContrastiveLoss {
    fn name(&self) -> &'static str {
        "asif-contrastive-loss"
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
        let out = self.run(
            (values(self.name(), s1, l1)?.to_vec(), l1.dims()),
            (values(self.name(), s2, l2)?.to_vec(), l2.dims()),
            values(self.name(), s3, l3)?.to_vec(),
            1.0,
        )?;
        Ok((
            CpuStorage::F32(out.loss.to_vec().map_err(wrap)?),
            Shape::from(1),
        ))
    }

    fn bwd(
        &self,
        x: &candle_core::Tensor,
        a: &candle_core::Tensor,
        s: &candle_core::Tensor,
        _output: &candle_core::Tensor,
        output_grad: &candle_core::Tensor,
    ) -> CandleResult<(
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
        Option<candle_core::Tensor>,
    )> {
        let upstream = candle_values(output_grad)?;
        let out = self.run(
            (candle_values(x)?, x.dims()),
            (candle_values(a)?, a.dims()),
            candle_values(s)?,
            upstream.first().copied().unwrap_or(0.0),
        )?;
        Ok((
            Some(to_candle(&[&out.dx], x.dims(), x)?),
            Some(to_candle(&[&out.da], a.dims(), a)?),
            Some(to_candle(&[&out.ds], s.dims(), s)?),
        ))
    }
}
