//! Adam (spec §2 "Optimiser": β 0.9/0.999, ε 1e-8, lr 1e-4, weight decay 0; torch.optim.Adam's
//! update, weight decay as L2 added to the gradient). Kernel: `kernels/adam.cu`.
//!
//! One kernel launch updates every parameter: [`Adam`] keeps the first and second moments of all
//! parameters in two flat buffers; [`Adam::step`] copies the parameters and their gradients into
//! flat buffers (device-to-device copies, no kernels), launches once, and copies the updated
//! parameters back into each tensor: into its own buffer when nothing else shares it (its
//! address stays), into a new one when a clone does ([`Adam::step_in_place`]). Per element, at step t:
//! `g = ∇ + λθ; m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²;
//!  θ −= lr/(1−β1^t) · m / (√v / √(1−β2^t) + ε)`.
//! With a device step counter ([`Adam::use_step_counter`], issue 20) the launch is
//! `adam_update_stepped`, which reads t from the counter and computes the corrections on the
//! device bit-identically, and a second launch (`adam_advance_step`) advances the counter at the
//! end of the step; the by-value update stays the default.
//! Adam has no backward.
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::step as step_reference;

use crate::device::{copy_range, Buffer, Device, StepCounter};
use crate::ops::{run_in_place, DeviceInPlaceOp};
use crate::{Error, Result, Tensor};

const OP: &str = "adam";

/// Adam's hyper-parameters. `Default` is spec §2's (lr 1e-4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    /// `(lr / (1 − β1^t), sqrt(1 − β2^t))` in f64 for step `t` (1-based).
    pub fn corrections(&self, t: u64) -> (f64, f64) {
        let t = t.min(i32::MAX as u64) as i32;
        let bias_correction1 = 1.0 - (self.beta1 as f64).powi(t);
        let bias_correction2 = 1.0 - (self.beta2 as f64).powi(t);
        (self.lr as f64 / bias_correction1, bias_correction2.sqrt())
    }

    fn check(&self) -> Result<()> {
        let ok = self.lr.is_finite()
            && self.lr >= 0.0
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0;
        if !ok {
            return Err(Error::argument(
                OP,
                format!("{self:?}: need lr ≥ 0, β in [0, 1), ε > 0, weight decay ≥ 0"),
            ));
        }
        Ok(())
    }
}

/// The problem of one update: step `t` (1-based) with `config`, or the step read from a device
/// step counter (t = its value + 1).
struct AdamStep {
    config: AdamConfig,
    t: u64,
    counter: Option<StepCounter>,
}

/// The update under the op contract's in-place face: it overwrites the flat parameters and the
/// first and second moments (the targets, in that order) from the flat gradients.
struct AdamUpdate;

impl DeviceInPlaceOp for AdamUpdate {
    type Problem = AdamStep;
    fn name(&self) -> &'static str {
        OP
    }
    fn reference(
        &self,
        step: &AdamStep,
        targets: &mut [&mut [f32]],
        grads: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let [params, m, v] = targets else {
            return Err(Error::argument(OP, "Adam's step overwrites three buffers"));
        };
        let t = match &step.counter {
            Some(counter) => counter.get()? + 1,
            None => step.t,
        };
        cpu::step_threaded(&step.config, t, params, grads[0], m, v);
        Ok(Vec::new())
    }
    fn launch(
        &self,
        step: &AdamStep,
        device: &Device,
        targets: &mut [&mut Buffer<f32>],
        grads: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let [params, m, v] = targets else {
            return Err(Error::argument(OP, "Adam's step overwrites three buffers"));
        };
        let source = match &step.counter {
            Some(counter) => cuda::StepSource::Counter(counter),
            None => cuda::StepSource::Value(step.t),
        };
        cuda::update(device, &step.config, source, params, grads[0], m, v)?;
        Ok(Vec::new())
    }
}

/// Adam's state for a fixed list of parameter shapes.
pub struct Adam {
    config: AdamConfig,
    device: Device,
    shapes: Vec<Vec<usize>>,
    step: u64,
    first_moment: Buffer<f32>,
    second_moment: Buffer<f32>,
    flat_params: Buffer<f32>,
    flat_grads: Buffer<f32>,
    /// The device step counter the update reads, once [`Adam::use_step_counter`] made one.
    counter: Option<StepCounter>,
}

impl Adam {
    /// State for `params` (their shapes fix the layout; moments start at zero).
    pub fn new(config: AdamConfig, params: &[Tensor]) -> Result<Adam> {
        config.check()?;
        let device = params
            .first()
            .map(|p| p.device().clone())
            .unwrap_or(Device::Cpu);
        let mut total = 0usize;
        for p in params {
            if p.device() != &device {
                return Err(Error::DeviceMismatch {
                    op: OP,
                    expected: device.name(),
                    found: p.device().name(),
                });
            }
            total += p.len();
        }
        if total > i32::MAX as usize {
            return Err(Error::shape(
                OP,
                format!("{total} parameters exceed the kernel's 32-bit indexing"),
            ));
        }
        Ok(Adam {
            config,
            shapes: params.iter().map(|p| p.shape().to_vec()).collect(),
            step: 0,
            // Zeros: the moments start at 0 and every step accumulates into them.
            first_moment: device.zeros(total)?,
            second_moment: device.zeros(total)?,
            // Every step copies all parameters and gradients in before the update reads them.
            flat_params: device.uninitialized(total)?,
            flat_grads: device.uninitialized(total)?,
            device,
            counter: None,
        })
    }

    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// From now on every [`Adam::step`] reads its step from a device step counter
    /// (`adam_update_stepped`, the corrections computed on the device, bit-identical to the
    /// host's) and advances it at its end (`adam_advance_step`: one more launch), so a CUDA graph
    /// of the step replays without new arguments. Returns the counter (made once, holding
    /// [`Adam::steps`]), which the step's dropout seeds read too (`StepSeed`). On the CPU device
    /// the counter is a host value the reference reads.
    pub fn use_step_counter(&mut self) -> Result<StepCounter> {
        if let Some(counter) = &self.counter {
            return Ok(counter.clone());
        }
        let counter = StepCounter::new(&self.device, self.step)?;
        self.counter = Some(counter.clone());
        Ok(counter)
    }

    /// Counts one step that ran without this code: a replayed CUDA graph of a step
    /// (`TrainStep`), whose captured update advanced the device step counter on its own. An
    /// error without a device step counter (a by-value step cannot be replayed).
    pub fn count_replayed_step(&mut self) -> Result<()> {
        if self.counter.is_none() {
            return Err(Error::argument(
                OP,
                "a replayed step without a device step counter (Adam::use_step_counter)",
            ));
        }
        self.step += 1;
        Ok(())
    }

    /// The device step counter, when [`Adam::use_step_counter`] made one.
    pub fn step_counter(&self) -> Option<&StepCounter> {
        self.counter.as_ref()
    }

    /// The first and second moments of every parameter, flattened in parameter order (for a
    /// checkpoint that resumes training exactly).
    pub fn moments(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.device.download(&self.first_moment)?,
            self.device.download(&self.second_moment)?,
        ))
    }

    /// Restores the state written by [`Adam::steps`] and [`Adam::moments`].
    pub fn restore(&mut self, steps: u64, first: &[f32], second: &[f32]) -> Result<()> {
        let total: usize = self
            .shapes
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum();
        if first.len() != total || second.len() != total {
            return Err(Error::shape(
                OP,
                format!(
                    "moments of {} and {} values for a state of {total}",
                    first.len(),
                    second.len()
                ),
            ));
        }
        // Into the moments' own buffers: their addresses stay (a captured step refers to them).
        self.device.write(first, &mut self.first_moment)?;
        self.device.write(second, &mut self.second_moment)?;
        self.step = steps;
        if let Some(counter) = &self.counter {
            counter.set(steps)?;
        }
        Ok(())
    }

    /// One step: updates every tensor of `params` from `grads` (same order and shapes as at
    /// [`Adam::new`]); [`Adam::step_in_place`] over these tensors.
    pub fn step(&mut self, params: &mut [Tensor], grads: &[Tensor]) -> Result<()> {
        let mut params: Vec<&mut Tensor> = params.iter_mut().collect();
        self.step_in_place(&mut params, grads)
    }

    /// One step over the parameter tensors themselves (`Model::tensors_mut`). A parameter whose
    /// buffer no other tensor shares is written in place: its memory, and so its address in a
    /// captured CUDA graph, stays from step to step, and nothing is copied for it. One that is
    /// shared (a clone kept elsewhere: the trainer's best-epoch weights) gets a new buffer, and
    /// the clone keeps the values it had (copy on write).
    pub fn step_in_place(&mut self, params: &mut [&mut Tensor], grads: &[Tensor]) -> Result<()> {
        if params.len() != self.shapes.len() || grads.len() != self.shapes.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "{} parameters and {} gradients for a state of {}",
                    params.len(),
                    grads.len(),
                    self.shapes.len()
                ),
            ));
        }
        for (i, ((p, g), shape)) in params.iter().zip(grads).zip(&self.shapes).enumerate() {
            if p.shape() != shape.as_slice() || g.shape() != shape.as_slice() {
                return Err(Error::shape(
                    OP,
                    format!(
                        "parameter {i}: {:?} with gradient {:?}, expected {shape:?}",
                        p.shape(),
                        g.shape()
                    ),
                ));
            }
            for t in [p, g] {
                if t.device() != &self.device {
                    return Err(Error::DeviceMismatch {
                        op: OP,
                        expected: self.device.name(),
                        found: t.device().name(),
                    });
                }
            }
        }
        let device = &self.device;
        let mut offset = 0;
        for (p, g) in params.iter().zip(grads) {
            let p: &Tensor = p;
            copy_range(
                OP,
                device,
                p.buffer(),
                0,
                &mut self.flat_params,
                offset,
                p.len(),
            )?;
            copy_range(
                OP,
                device,
                g.buffer(),
                0,
                &mut self.flat_grads,
                offset,
                g.len(),
            )?;
            offset += p.len();
        }
        self.step += 1;
        let problem = AdamStep {
            config: self.config,
            t: self.step,
            counter: self.counter.clone(),
        };
        run_in_place(
            &AdamUpdate,
            &problem,
            device,
            &mut [
                &mut self.flat_params,
                &mut self.first_moment,
                &mut self.second_moment,
            ],
            &[&self.flat_grads],
            &[],
        )?;
        let mut offset = 0;
        for p in params.iter_mut() {
            let len = p.len();
            copy_range(
                OP,
                device,
                &self.flat_params,
                offset,
                p.buffer_for_overwrite()?,
                0,
                len,
            )?;
            offset += len;
        }
        if let Some(counter) = &self.counter {
            // After every kernel of the step that read the counter (the update, the dropouts).
            match device {
                Device::Cpu => counter.set(counter.get()? + 1)?,
                Device::Cuda(_) | Device::Emulated(_) => cuda::advance(device, counter)?,
            }
        }
        Ok(())
    }
}
