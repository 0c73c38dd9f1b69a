//! Per-step scalars in device memory (issue 20): a training step's count of Adam steps taken,
//! held in one `u64` on the device, which the step-counter kernels read instead of taking the
//! step's scalars as arguments. A CUDA graph captured once then replays unchanged: Adam's bias
//! corrections and the dropout seeds of every replay come from the counter, which a kernel at
//! the end of the step advances (`adam_advance_step`, `kernels/adam.cu`).
//!
//! The counter's buffer is allocated once and never replaced ([`StepCounter::set`] writes into
//! it), so its address is fixed for the graph. Clones share it.
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Buffer, Device};
use crate::{rng, Result};

/// A `u64` step counter on a device (see the module text). On the CPU device it is a host value
/// read by the reference paths.
#[derive(Clone)]
pub struct StepCounter {
    device: Device,
    buffer: Arc<Mutex<Buffer<u64>>>,
}

impl std::fmt::Debug for StepCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepCounter on {}", self.device.name())
    }
}

impl StepCounter {
    /// A counter on `device` holding `steps_taken`.
    pub fn new(device: &Device, steps_taken: u64) -> Result<StepCounter> {
        Ok(StepCounter {
            device: device.clone(),
            buffer: Arc::new(Mutex::new(device.upload(&[steps_taken])?)),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The counter's value (a download: it waits for the device).
    pub fn get(&self) -> Result<u64> {
        let values = self.device.download(&self.lock())?;
        Ok(values.first().copied().unwrap_or_default())
    }

    /// Writes `steps_taken` into the counter's buffer (its address stays).
    pub fn set(&self, steps_taken: u64) -> Result<()> {
        self.device.write(&[steps_taken], &mut self.lock())
    }

    /// The counter's buffer, for a launch (one element).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Buffer<u64>> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether two handles share one counter.
    pub fn same_counter(&self, other: &StepCounter) -> bool {
        Arc::ptr_eq(&self.buffer, &other.buffer)
    }
}

/// The seed of one dropout site derived on the device from a [`StepCounter`]:
/// `rng::step_seed(stream, counter, site)` (`asif_step_seed` in `kernels/hash_rng.cuh`), the
/// seed the model's `DropoutSeeds` draws by value at that step.
#[derive(Debug, Clone)]
pub struct StepSeed {
    pub counter: StepCounter,
    /// The model's dropout stream (`rng::dropout_stream(model_seed)`).
    pub stream: u64,
    /// The site's index in the model's draw order.
    pub site: u64,
}

impl StepSeed {
    /// The seed by value at the counter's current step (a download: the reference paths).
    pub fn value(&self) -> Result<u64> {
        Ok(rng::step_seed(self.stream, self.counter.get()?, self.site))
    }
}
