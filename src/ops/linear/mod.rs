//! The linear layer `y = x W + b` (every projection of spec §2 and §3) and the prediction layer's
//! plain product `logits = u E_Xᵀ` against the whole item table (spec §2, "Prediction").
//!
//! Shapes: `x` is `[.., d_in]` (any leading axes, flattened to `rows = B·n`), `W` is
//! `[d_in, d_out]`, `b` is `[d_out]` (optional), `y` is `[.., d_out]`. For the prediction layer
//! `u` is `[B, d]`, `E_X` is `[|V|, d]`, logits are `[B, |V|]`.
//!
//! Backward: `dx = dy Wᵀ`, `dW = xᵀ dy`, `db = Σ_rows dy`; for the prediction layer
//! `du = dlogits E_X`, `dE_X = dlogitsᵀ u`.
//!
//! The products run on cuBLAS on the GPU (TF32 off unless [`set_allow_tf32`]) and on the host
//! GEMM of `src/gemm.rs` (an AVX-512 kernel, else `matrixmultiply`) on the CPU and emulated
//! devices; the bias kernels are `kernels/linear.cu` (the CPU device adds the bias in the host
//! GEMM's epilogue). The f64 triple loop in [`matmul_reference`] is the reference.
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use crate::gemm::{allow_tf32, set_allow_tf32};
use crate::gemm::{gemm, gemm_output, host_gemm_with_bias, Gemm};
pub use cpu::{
    column_sum as column_sum_reference, linear_backward as backward_reference,
    linear_forward as forward_reference, matmul as matmul_reference,
    matmul_transposed_backward as matmul_transposed_backward_reference,
    matmul_transposed_forward as matmul_transposed_forward_reference,
};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::{record_one, run_in_place, run_one, DeviceInPlaceOp, DeviceOp};
use crate::{Error, Result, Tensor};

const OP: &str = "linear";

#[derive(Debug, Clone)]
pub struct LinearGradients {
    pub dx: Tensor,
    pub dweight: Tensor,
    /// `None` when the forward had no bias.
    pub dbias: Option<Tensor>,
}

/// `(rows, d_in, d_out)` of `x` against `weight`, with the shape checks.
fn dims(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<(usize, usize, usize)> {
    x.same_device(OP, weight)?;
    let (&d_in, &d_out) = match weight.shape() {
        [d_in, d_out] => (d_in, d_out),
        other => {
            return Err(Error::shape(
                OP,
                format!("weight must be [d_in, d_out], got {other:?}"),
            ))
        }
    };
    if x.shape().last() != Some(&d_in) || d_in == 0 {
        return Err(Error::shape(
            OP,
            format!(
                "x {:?} does not end in d_in = {d_in} (weight {:?})",
                x.shape(),
                weight.shape()
            ),
        ));
    }
    if let Some(bias) = bias {
        x.same_device(OP, bias)?;
        if bias.shape() != [d_out] {
            return Err(Error::shape(
                OP,
                format!("bias must be [{d_out}], got {:?}", bias.shape()),
            ));
        }
    }
    let rows = x.len() / d_in;
    if rows.div_ceil(64) > 65_535 {
        return Err(Error::shape(
            OP,
            format!("{rows} rows exceed the bias gradient's grid (at most 4194240)"),
        ));
    }
    Ok((rows, d_in, d_out))
}

fn out_shape(x: &Tensor, last: usize) -> Vec<usize> {
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("checked non-empty") = last;
    shape
}

fn matmul_into(device: &Device, g: Gemm, a: &Tensor, b: &Tensor) -> Result<Buffer<f32>> {
    let mut c = gemm_output(device, g)?;
    gemm(device, g, a.buffer(), b.buffer(), &mut c)?;
    Ok(c)
}

fn product(transpose_a: bool, transpose_b: bool, m: usize, n: usize, k: usize) -> Gemm {
    Gemm {
        transpose_a,
        transpose_b,
        m,
        n,
        k,
        alpha: 1.0,
        beta: 0.0,
    }
}

/// The problem of the bias gradient: `dy` as `rows × cols`.
#[derive(Debug, Clone, Copy)]
struct ColumnSums {
    rows: usize,
    cols: usize,
}

/// The bias gradient under the op contract: the column sums of `dy`.
struct BiasGradient;

impl DeviceOp for BiasGradient {
    type Problem = ColumnSums;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &ColumnSums) -> Vec<Vec<usize>> {
        vec![vec![p.cols]]
    }
    fn reference(&self, p: &ColumnSums, dy: &[&[f32]], _: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        Ok(vec![cpu::column_sum_threaded(dy[0], p.cols)])
    }
    fn launch(
        &self,
        p: &ColumnSums,
        device: &Device,
        dy: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![cuda::bias_grad(device, dy[0], p.rows, p.cols)?])
    }
}

/// The problem of the bias add: `y` as rows of `cols`, the bias `[cols]`.
#[derive(Debug, Clone, Copy)]
struct BiasRows {
    cols: usize,
}

/// The bias add after the GEMM under the op contract's in-place face: `y[r, c] += b[c]`.
struct BiasAdd;

impl DeviceInPlaceOp for BiasAdd {
    type Problem = BiasRows;
    fn name(&self) -> &'static str {
        OP
    }
    fn reference(
        &self,
        &BiasRows { cols }: &BiasRows,
        y: &mut [&mut [f32]],
        bias: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let bias = bias[0];
        let block = crate::parallel::rows_per_unit(cols) * cols;
        crate::parallel::for_each_block(y[0], block, |_, rows| {
            for row in rows.chunks_mut(cols) {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        });
        Ok(Vec::new())
    }
    fn launch(
        &self,
        &BiasRows { cols }: &BiasRows,
        device: &Device,
        y: &mut [&mut Buffer<f32>],
        bias: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        cuda::bias_add(device, y[0], bias[0], cols)?;
        Ok(Vec::new())
    }
}

/// Column sums of a `rows × cols` tensor (the bias gradient), on the tensor's device.
fn bias_gradient(dy: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
    run_one(&BiasGradient, &ColumnSums { rows, cols }, &[dy], &[])
}

/// `y = x W + b` over the last axis of `x`.
pub fn linear_forward(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (rows, d_in, d_out) = dims(x, weight, bias)?;
    let device = x.device();
    let g = product(false, false, rows, d_out, d_in);
    let y = match bias {
        // The CPU adds the bias to each block of y as the GEMM writes it (no second pass); the
        // kernel devices run the in-place bias add after the GEMM.
        Some(bias) if matches!(device, Device::Cpu) => {
            let mut y = gemm_output(device, g)?;
            host_gemm_with_bias(
                device,
                g,
                x.host(),
                weight.host(),
                bias.host(),
                y.host_slice_mut(),
            )?;
            y
        }
        _ => {
            let mut y = matmul_into(device, g, x, weight)?;
            if let Some(bias) = bias {
                run_in_place(
                    &BiasAdd,
                    &BiasRows { cols: d_out },
                    device,
                    &mut [&mut y],
                    &[bias.buffer()],
                    &[],
                )?;
            }
            y
        }
    };
    Ok(Tensor::from_buffer(device, &out_shape(x, d_out), y))
}

/// Gradients of [`linear_forward`] given `dy` (shape of `y`). `with_bias` says whether to return
/// the bias gradient.
pub fn linear_backward(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    with_bias: bool,
) -> Result<LinearGradients> {
    let (rows, d_in, d_out) = dims(x, weight, None)?;
    x.same_device(OP, dy)?;
    if dy.shape() != out_shape(x, d_out).as_slice() {
        return Err(Error::shape(
            OP,
            format!(
                "dy {:?} must be x {:?} with last axis {d_out}",
                dy.shape(),
                x.shape()
            ),
        ));
    }
    let device = x.device();
    let dx = matmul_into(device, product(false, true, rows, d_in, d_out), dy, weight)?;
    let dweight = matmul_into(device, product(true, false, d_in, d_out, rows), x, dy)?;
    let dbias = if with_bias {
        Some(bias_gradient(dy, rows, d_out)?)
    } else {
        None
    };
    Ok(LinearGradients {
        dx: Tensor::from_buffer(device, x.shape(), dx),
        dweight: Tensor::from_buffer(device, &[d_in, d_out], dweight),
        dbias,
    })
}

/// Tape face of the linear layer.
pub fn linear(tape: &Tape, x: &Var, weight: &Var, bias: Option<&Var>) -> Result<Var> {
    let y = linear_forward(x.value(), weight.value(), bias.map(Var::value))?;
    let (x_value, weight_value) = (x.value().clone(), weight.value().clone());
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    let with_bias = bias.is_some();
    Ok(record_one(tape, &inputs, y, move |dy| {
        let grads = linear_backward(&x_value, &weight_value, dy, with_bias)?;
        let mut out = vec![Some(grads.dx), Some(grads.dweight)];
        if with_bias {
            out.push(grads.dbias);
        }
        Ok(out)
    }))
}

/// `(rows, items, d)` of `u` `[rows, d]` against `table` `[items, d]`.
fn transposed_dims(op: &'static str, u: &Tensor, table: &Tensor) -> Result<(usize, usize, usize)> {
    u.same_device(op, table)?;
    match (u.shape(), table.shape()) {
        ([rows, d], [items, d2]) if d == d2 && *d > 0 => Ok((*rows, *items, *d)),
        (a, b) => Err(Error::shape(
            op,
            format!("u must be [B, d] and the table [|V|, d]; got {a:?} and {b:?}"),
        )),
    }
}

/// `logits = u Eᵀ`: `u` `[B, d]`, `table` `[|V|, d]`, logits `[B, |V|]`.
pub fn matmul_transposed_forward(u: &Tensor, table: &Tensor) -> Result<Tensor> {
    let (rows, items, d) = transposed_dims("matmul_transposed", u, table)?;
    let device = u.device();
    let logits = matmul_into(device, product(false, true, rows, items, d), u, table)?;
    Ok(Tensor::from_buffer(device, &[rows, items], logits))
}

/// `(du, dE)` of [`matmul_transposed_forward`] given `dlogits` `[B, |V|]`, both scaled by `scale`
/// (the cross-entropy backward passes the upstream scalar gradient here).
pub fn matmul_transposed_backward(
    u: &Tensor,
    table: &Tensor,
    dlogits: &Tensor,
    scale: f32,
) -> Result<(Tensor, Tensor)> {
    const OP_T: &str = "matmul_transposed";
    let (rows, items, d) = transposed_dims(OP_T, u, table)?;
    u.same_device(OP_T, dlogits)?;
    if dlogits.shape() != [rows, items] {
        return Err(Error::shape(
            OP_T,
            format!(
                "dlogits must be [{rows}, {items}], got {:?}",
                dlogits.shape()
            ),
        ));
    }
    let device = u.device();
    let scaled = |mut g: Gemm| {
        g.alpha = scale;
        g
    };
    let du = matmul_into(
        device,
        scaled(product(false, false, rows, d, items)),
        dlogits,
        table,
    )?;
    let dtable = matmul_into(
        device,
        scaled(product(true, false, items, d, rows)),
        dlogits,
        u,
    )?;
    Ok((
        Tensor::from_buffer(device, &[rows, d], du),
        Tensor::from_buffer(device, &[items, d], dtable),
    ))
}

/// Tape face of `u Eᵀ`.
pub fn matmul_transposed(tape: &Tape, u: &Var, table: &Var) -> Result<Var> {
    let logits = matmul_transposed_forward(u.value(), table.value())?;
    let (u_value, table_value) = (u.value().clone(), table.value().clone());
    Ok(record_one(tape, &[u, table], logits, move |dlogits| {
        let (du, dtable) = matmul_transposed_backward(&u_value, &table_value, dlogits, 1.0)?;
        Ok(vec![Some(du), Some(dtable)])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU device adds the bias inside its GEMM (`linear_forward`), so the in-place bias
    /// add's reference is reached only through `run_in_place` on the CPU: called here directly
    /// (cargo-mutants, issue 16: its body and its block length were unseen). 20000 rows of 3
    /// span several parallel blocks, whose length a wrong block size would leave off a
    /// multiple of 3.
    #[test]
    fn the_bias_add_reference_adds_the_bias_to_every_row() {
        let device = Device::cpu();
        let (rows, cols) = (20_000, 3);
        let y0: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32).collect();
        let mut y = Tensor::from_vec(&device, &[rows, cols], y0.clone())
            .unwrap()
            .into_buffer()
            .unwrap();
        let bias = Tensor::from_vec(&device, &[cols], vec![10.0, 20.0, 40.0]).unwrap();
        let outputs = run_in_place(
            &BiasAdd,
            &BiasRows { cols },
            &device,
            &mut [&mut y],
            &[bias.buffer()],
            &[],
        )
        .unwrap();
        assert!(outputs.is_empty());
        let y = y.into_host_vec().unwrap();
        for (i, (&after, &before)) in y.iter().zip(&y0).enumerate() {
            assert_eq!(after, before + [10.0, 20.0, 40.0][i % cols], "element {i}");
        }
    }
}
