//! A training step as one CUDA graph (issue 20): [`Device::run_step_graph`] captures the step's
//! device work (kernels, cuBLAS calls, memsets, device copies) from the device's stream into a
//! graph, brings an executable graph up to date with it, and launches that with one call.
//!
//! **What is captured once and what every step.** The executable graph ([`StepGraph`]) is
//! instantiated once and then updated in place (`cuGraphExecUpdate`) from each step's capture;
//! when the step's topology changes (other shapes: other launches), the update fails and the
//! graph is instantiated again. With graphs on, `TrainStep` runs every step with its per-step
//! scalars in device memory (`step_counter.rs`): Adam's bias corrections (`adam_update_stepped`)
//! and every dropout seed (the `_stepped` entry points of `dropout.cu`, `residual_norm.cu` and
//! `attention.cu`) come from Adam's device step counter, which `adam_advance_step` advances at
//! the end of the step; so two captures at the same shapes differ only in buffer addresses, and
//! the bits are the by-value step's (`tests/train_step.rs`, emulated). What still stands between
//! this and a replay without capture is the addresses: the cache blocks of the step's
//! intermediates are not pinned to the graph. The batch is staged into buffers `TrainStep`
//! keeps (`TrainStep::run_staged`, `Device::write`), and the parameters and Adam's moments stay
//! put: Adam writes every parameter that nothing else shares
//! in place (`Adam::step_in_place`), and a step where a kept clone shares one (copy on write)
//! runs eagerly. Not done: a pure replay (no capture, no update) and its `graph_replayed`
//! count.
//!
//! **What still stands between this and a replay**, precisely. A replay relaunches the last
//! executable graph with no host code, so every address baked into it must, at the replay, be
//! the same memory in the same role, and whatever the host does per step must be done without
//! the step's code:
//! 1. The step's intermediates (activations, the tape's saved tensors, gradients, Adam's
//!    inputs, dropout masks) come from the memory cache (`cache.rs`) and go back to its free
//!    lists when they drop, mostly during the step itself. The free lists are last-in first-out
//!    per size, and nothing keeps those blocks for the graph: between two steps anything may take
//!    them (`evaluate()` between epochs, the staged buffers of a new batch shape, a
//!    copy-on-write parameter after the best weights are kept), and a replay would then write
//!    into live tensors; `Device::empty_cache` would free them under the graph. Needed: the cache
//!    records every block it hands out or takes back during a capture, and after the capture
//!    moves those blocks into a reservation that the `StepGraph` owns (returned to the cache
//!    when the graph is dropped or recaptured), so no allocation outside the step can take them.
//! 2. The step's outputs that outlive it: the pass's losses (L_ce, L_co, L_attr), read after the
//!    launch. At a replay no `ForwardPass` is made: `TrainStep` keeps the captured pass's loss
//!    tensors and reads them after each replay.
//! 3. Host state the step's code advances: `Adam`'s host step count (`Adam::steps`, the
//!    checkpoint's `adam_steps`; the device counter advances in the graph), the step counts and
//!    the device counters (launches, allocations), which a replay must account for by hand
//!    (`graph_replayed`).
//! 4. The condition to replay rather than capture: the same input shapes, the same staged input
//!    addresses, the same parameter addresses (a copy-on-write step moves them: capture again),
//!    and no eager step in between that changed the reservation.
//! 5. A test here without a GPU: the emulated launch knows every kernel argument's address
//!    (`emulated.rs`); a trace of (kernel, argument addresses) per step, equal for two
//!    consecutive steps at the same shapes, is what makes a replay correct, and pins 1–4.
//!
//! **What capture requires**, checked here and in the device's allocation and copy paths while
//! `Device::capturing` is set:
//! - no fresh allocation (a cache miss would put a stream-ordered allocation into the graph):
//!   the step must have run once eagerly at its shapes, so the memory cache serves it
//!   (`cache.rs`; `tests/train_step.rs` pins zero fresh allocations from the second step on);
//! - no host synchronisation and no copy between host and device: a download or
//!   `Device::synchronize` is an error, and an upload is allowed only when every element has the
//!   same 32-bit pattern (the loss seeds of the backward), which is captured as a memset;
//! - cudarc's per-slice event tracking off (its event records and waits cannot cross a capture
//!   boundary), restored afterwards;
//! - cuBLAS on a fixed workspace (`CudaBackend::blas` gives the handle one at creation, eager or
//!   not, so eager and captured GEMMs pick the same algorithms).
//!
//! The emulated and CPU devices have no graphs: there `run_step_graph` runs the step eagerly
//! (the same code, the same bits) and reports [`GraphRun::Eager`]. The emulated device still
//! refuses, during that step, everything a CUDA capture refuses, so an emulated test shows that
//! a step can be captured (not that the capture replays correctly: that needs a GPU,
//! `tests/cuda_graph.rs`).
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaStream};

use super::{CudaBackend, Device};
use crate::{Error, Result};

const OP: &str = "CUDA graph step";

/// An executable CUDA graph of a training step, kept between steps (see the module text).
pub struct StepGraph {
    exec: sys::CUgraphExec,
    stream: Arc<CudaStream>,
    /// Instantiations so far (1 + the topology changes).
    instantiations: u64,
    /// In-place updates from a new capture.
    updates: u64,
}

// SAFETY: the executable graph is only used through `&mut StepGraph` (one thread at a time), as
// the CUDA driver requires of graph objects.
unsafe impl Send for StepGraph {}

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StepGraph({} instantiations, {} updates)",
            self.instantiations, self.updates
        )
    }
}

impl StepGraph {
    /// Times the graph was instantiated (1 + topology changes).
    pub fn instantiations(&self) -> u64 {
        self.instantiations
    }
    /// Times a new capture updated the executable graph in place.
    pub fn updates(&self) -> u64 {
        self.updates
    }
}

impl Drop for StepGraph {
    fn drop(&mut self) {
        if !self.exec.is_null() {
            // SAFETY: this graph owns `exec`; nothing uses it after the drop.
            let _ = self.stream.context().bind_to_thread();
            let _ = unsafe { result::graph::exec_destroy(self.exec) };
        }
    }
}

/// How [`Device::run_step_graph`] ran a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphRun {
    /// Eagerly: the device has no graphs (emulated, CPU).
    Eager,
    /// Captured, a new executable graph instantiated, launched.
    Instantiated,
    /// Captured, the existing executable graph updated in place, launched.
    Updated,
}

impl Device {
    /// Runs `step` (host code that queues device work on this device) as one CUDA graph launch:
    /// captures it, updates `graph` from the capture (or instantiates it when there is none or
    /// the topology changed), and launches it. What `step` returns holds device buffers that the
    /// launch fills: read them after this returns (a download synchronises). On the emulated and
    /// CPU devices `step` just runs. See the module text for what a captured step may not do.
    pub fn run_step_graph<R>(
        &self,
        graph: &mut Option<StepGraph>,
        step: impl FnOnce() -> Result<R>,
    ) -> Result<(R, GraphRun)> {
        match self {
            Device::Cuda(backend) => backend.run_step_graph(graph, step),
            Device::Emulated(emulator) => {
                // No graphs here: the step runs eagerly, refusing what a capture would.
                let before = self.counters().snapshot();
                emulator.capturing.store(true, Ordering::Relaxed);
                let outcome = step();
                emulator.capturing.store(false, Ordering::Relaxed);
                let value = outcome?;
                check_no_fresh_allocations(self.counters().snapshot().since(&before))?;
                Ok((value, GraphRun::Eager))
            }
            Device::Cpu => Ok((step()?, GraphRun::Eager)),
        }
    }
}

/// A capture may not allocate fresh memory (`Device::refuse_in_capture` refuses it where it
/// happens; this catches what went around it).
fn check_no_fresh_allocations(during: super::CounterSnapshot) -> Result<()> {
    if during.fresh_allocations > 0 {
        return Err(Error::argument(
            OP,
            format!(
                "{} fresh allocations during the capture (run the step once eagerly at these \
                 shapes first)",
                during.fresh_allocations
            ),
        ));
    }
    Ok(())
}

impl CudaBackend {
    fn run_step_graph<R>(
        &self,
        graph: &mut Option<StepGraph>,
        step: impl FnOnce() -> Result<R>,
    ) -> Result<(R, GraphRun)> {
        // The cuBLAS handle (and its workspace) before the capture: creating it allocates.
        self.blas()?;
        let stream = self.stream().clone();
        let context = self.context().clone();
        let tracking = context.is_event_tracking();
        // SAFETY: one stream; the capture's work is ordered on it (module text).
        unsafe { context.disable_event_tracking() };
        let before = self.counters().snapshot();
        let begun = stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED);
        if let Err(e) = begun {
            if tracking {
                unsafe { context.enable_event_tracking() };
            }
            return Err(e.into());
        }
        self.capturing.store(true, Ordering::Relaxed);
        let outcome = step();
        self.capturing.store(false, Ordering::Relaxed);
        // SAFETY: the stream is capturing (begun above).
        let captured = unsafe { result::stream::end_capture(stream.cu_stream()) };
        if tracking {
            // SAFETY: restores the caller's setting.
            unsafe { context.enable_event_tracking() };
        }
        let destroy = |g: sys::CUgraph| {
            // SAFETY: a graph this function captured and no longer uses.
            let _ = unsafe { result::graph::destroy(g) };
        };
        // The step's own error first (a refused operation may also have invalidated the capture).
        let value = match (outcome, captured) {
            (Ok(value), Ok(cu_graph)) => (value, cu_graph),
            (Err(e), captured) => {
                if let Ok(cu_graph) = captured {
                    destroy(cu_graph);
                }
                return Err(e);
            }
            (Ok(_), Err(e)) => return Err(e.into()),
        };
        let (value, cu_graph) = value;
        if let Err(e) = check_no_fresh_allocations(self.counters().snapshot().since(&before)) {
            destroy(cu_graph);
            return Err(e);
        }
        let run = match graph {
            Some(existing) => {
                // SAFETY: both handles are valid; the info struct is plain data the call fills.
                let mut info: sys::CUgraphExecUpdateResultInfo = unsafe { std::mem::zeroed() };
                let updated =
                    unsafe { sys::cuGraphExecUpdate_v2(existing.exec, cu_graph, &mut info) };
                if updated == sys::CUresult::CUDA_SUCCESS {
                    existing.updates += 1;
                    GraphRun::Updated
                } else {
                    let instantiated = self.instantiate(cu_graph, &stream, existing.instantiations);
                    destroy(cu_graph);
                    *graph = Some(instantiated?);
                    GraphRun::Instantiated
                }
            }
            None => {
                let instantiated = self.instantiate(cu_graph, &stream, 0);
                destroy(cu_graph);
                *graph = Some(instantiated?);
                GraphRun::Instantiated
            }
        };
        if run == GraphRun::Updated {
            destroy(cu_graph);
        }
        let exec = graph.as_ref().map(|g| g.exec).ok_or_else(|| {
            Error::argument(OP, "no executable graph after the capture".to_string())
        })?;
        // SAFETY: a valid executable graph, launched on the stream it was captured from.
        unsafe { result::graph::launch(exec, stream.cu_stream()) }?;
        Ok((value, run))
    }

    fn instantiate(
        &self,
        cu_graph: sys::CUgraph,
        stream: &Arc<CudaStream>,
        instantiations: u64,
    ) -> Result<StepGraph> {
        // SAFETY: a valid captured graph.
        let exec =
            unsafe { result::graph::instantiate(cu_graph, sys::CUgraphInstantiate_flags(0)) }?;
        Ok(StepGraph {
            exec,
            stream: stream.clone(),
            instantiations: instantiations + 1,
            updates: 0,
        })
    }
}
