//! A training step as one CUDA graph (issue 20): [`Device::run_step_graph`] captures the step's
//! device work (kernels, cuBLAS calls, memsets, device copies) from the device's stream into a
//! graph, brings an executable graph up to date with it, and launches that with one call.
//!
//! **What is captured once and what every step.** The executable graph ([`StepGraph`]) is
//! instantiated once, updated in place (`cuGraphExecUpdate`) from each new capture, and
//! replayed without capture while the step's inputs and parameters stay put (below); when the
//! step's topology changes (other shapes: other launches), the update fails and the
//! graph is instantiated again. With graphs on, `TrainStep` runs every step with its per-step
//! scalars in device memory (`step_counter.rs`): Adam's bias corrections (`adam_update_stepped`)
//! and every dropout seed (the `_stepped` entry points of `dropout.cu`, `residual_norm.cu` and
//! `attention.cu`) come from Adam's device step counter, which `adam_advance_step` advances at
//! the end of the step; so two captures at the same shapes differ only in buffer addresses, and
//! the bits are the by-value step's (`tests/train_step.rs`, emulated). The batch is staged into
//! buffers `TrainStep` keeps (`TrainStep::run_staged`, `Device::write`), and the parameters and
//! Adam's moments stay put: Adam writes every parameter that nothing else shares in place
//! (`Adam::step_in_place`), and a step where a kept clone shares one (copy on write) runs
//! eagerly.
//!
//! **Replay.** A replay relaunches the last executable graph with no host code
//! ([`Device::replay_step_graph`]), so every address baked into it must, at the replay, be the
//! same memory in the same role, and whatever the host does per step is done by hand:
//! 1. The step's intermediates come from the memory cache. While a step is captured the cache
//!    records every block it hands out; after the capture those blocks are reserved for the
//!    [`StepGraph`] (`cache::Reservation`): the ones already back stay out of the free lists, the
//!    ones still lent (the losses) go to the reservation when they drop; no allocation outside
//!    the step takes them and `Device::empty_cache` does not free them. The next capture (or the
//!    graph's drop) gives them back first (`tests/memory_cache.rs`).
//! 2. `TrainStep` keeps the captured step's pass and reads its loss tensors after each replay.
//! 3. Adam's host step count advances by hand (`Adam::count_replayed_step`; the device counter
//!    advances in the graph), and `StepCounts::graph_replayed` counts the replay. The device
//!    counters (launches, allocations) count host-side work and do not move at a replay.
//! 4. The condition (`TrainStep`'s step key): the same input shapes, staged input addresses and
//!    parameter addresses as the captured step; otherwise the step is captured again.
//! 5. The emulated device has no graphs; where a GPU would replay, it checks the replay instead
//!    ([`Device::check_replay_eagerly`]): the step's code runs again, handed exactly the blocks
//!    the capture took (from the reservation, in the capture's order), and every kernel launch
//!    and GEMM must equal the captured one, argument by argument (`LaunchRecord`: addresses and
//!    scalars). Memsets and device copies are not traced.
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
//! refuses, during that step, everything a CUDA capture refuses, records its launches and
//! reserves its blocks (a [`StepGraph`] without an executable graph), so an emulated test shows
//! that a step can be captured and that rerunning it on the reserved blocks launches the same
//! work; that the GPU's replay gives the eager bits needs a GPU (`tests/cuda_graph.rs`).
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaStream};

use super::cache::Reservation;
use super::{CudaBackend, Device, LaunchRecord};
use crate::{Error, Result};

const OP: &str = "CUDA graph step";

/// An executable CUDA graph of a training step, kept between steps (see the module text).
pub struct StepGraph {
    /// Null on the emulated device (no graphs: only the reservation).
    exec: sys::CUgraphExec,
    /// The stream the graph was captured from; `None` on the emulated device.
    stream: Option<Arc<CudaStream>>,
    /// The memory cache's blocks of the captured step, held while this graph may be replayed.
    reservation: Option<Reservation>,
    /// Instantiations so far (1 + the topology changes).
    instantiations: u64,
    /// In-place updates from a new capture.
    updates: u64,
    /// Launches without a capture (`Device::replay_step_graph`); on the emulated device, the
    /// replays checked eagerly (`Device::check_replay_eagerly`).
    replays: u64,
    /// On the emulated device: the captured step's launches with their arguments, what a graph
    /// of it would hold.
    trace: Option<Vec<LaunchRecord>>,
}

// SAFETY: the executable graph is only used through `&mut StepGraph` (one thread at a time), as
// the CUDA driver requires of graph objects.
unsafe impl Send for StepGraph {}

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StepGraph({} instantiations, {} updates, {} replays)",
            self.instantiations, self.updates, self.replays
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
    /// Times the executable graph was launched again without a capture.
    pub fn replays(&self) -> u64 {
        self.replays
    }
    /// Whether there is an executable graph to replay (a CUDA device); on the emulated device a
    /// `StepGraph` holds only the captured step's reserved memory.
    pub fn replayable(&self) -> bool {
        !self.exec.is_null() && self.reservation.is_some()
    }
    /// Whether the emulated device can check a replay of this step (`Device::check_replay_eagerly`):
    /// it recorded the step's launches and holds its memory.
    pub fn checkable(&self) -> bool {
        self.trace.is_some() && self.reservation.is_some()
    }
}

impl Drop for StepGraph {
    fn drop(&mut self) {
        if let (false, Some(stream)) = (self.exec.is_null(), &self.stream) {
            // SAFETY: this graph owns `exec`; nothing uses it after the drop.
            let _ = stream.context().bind_to_thread();
            let _ = unsafe { result::graph::exec_destroy(self.exec) };
        }
        // Then `reservation` drops: the blocks go back to the free lists (anything a launch
        // still writes into them is queued before whatever takes them next, on one stream).
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
        // The previous capture's reservation goes back first: this capture reuses its blocks.
        if let Some(previous) = graph.as_mut() {
            previous.reservation = None;
        }
        match self {
            Device::Cuda(backend) => {
                let cache = backend.memory_cache().clone();
                cache.begin_recording();
                let outcome = backend.run_step_graph(graph, step);
                let reservation = cache.end_recording();
                match (outcome, graph.as_mut()) {
                    (Ok(ran), Some(g)) => {
                        g.reservation = Some(reservation);
                        Ok(ran)
                    }
                    (outcome, _) => {
                        // A failed capture leaves no graph to replay (its blocks go back).
                        *graph = None;
                        drop(reservation);
                        outcome
                    }
                }
            }
            Device::Emulated(emulator) => {
                // No graphs here: the step runs eagerly, refusing what a capture would, and its
                // blocks are reserved as a capture's are.
                let before = self.counters().snapshot();
                let cache = emulator.memory_cache().clone();
                cache.begin_recording();
                emulator.start_trace();
                emulator.capturing.store(true, Ordering::Relaxed);
                let outcome = step();
                emulator.capturing.store(false, Ordering::Relaxed);
                let trace = emulator.take_trace();
                let reservation = cache.end_recording();
                let checked = outcome.and_then(|value| {
                    check_no_fresh_allocations(self.counters().snapshot().since(&before))
                        .map(|()| value)
                });
                match checked {
                    Ok(value) => {
                        *graph = Some(StepGraph {
                            exec: std::ptr::null_mut(),
                            stream: None,
                            reservation: Some(reservation),
                            instantiations: 0,
                            updates: 0,
                            replays: 0,
                            trace: Some(trace),
                        });
                        Ok((value, GraphRun::Eager))
                    }
                    Err(e) => {
                        *graph = None;
                        Err(e)
                    }
                }
            }
            Device::Cpu => Ok((step()?, GraphRun::Eager)),
        }
    }

    /// Launches `graph`'s executable graph again, with no capture and no update: the step's
    /// work at the addresses it was captured with (the caller checks that the inputs and
    /// parameters are still there, `TrainStep`). Nothing of the step's host code runs, so the
    /// device counters do not move. An error where there is nothing to replay (the emulated and
    /// CPU devices, a failed capture).
    pub fn replay_step_graph(&self, graph: &mut StepGraph) -> Result<()> {
        if !graph.replayable() {
            return Err(Error::argument(
                OP,
                "no executable graph to replay (emulated or CPU device, or no capture)".to_string(),
            ));
        }
        let Device::Cuda(backend) = self else {
            return Err(Error::argument(
                OP,
                format!("a replay on the {} device", self.name()),
            ));
        };
        let stream = backend.stream();
        // SAFETY: a valid executable graph, launched on the stream it was captured from; its
        // memory is reserved (`graph.reservation`).
        unsafe { result::graph::launch(graph.exec, stream.cu_stream()) }?;
        graph.replays += 1;
        Ok(())
    }

    /// The emulated device's stand-in for [`Device::replay_step_graph`]: runs `step` (the
    /// captured step's code) eagerly under the capture's refusals, with every block it allocates
    /// being the one the capture took at that point (from the graph's reservation), and checks
    /// that its launches are the captured ones with the same arguments (addresses and scalars):
    /// what makes a replay of the graph the step it stands for. A difference is an error that
    /// names the first differing launch.
    pub fn check_replay_eagerly<R>(
        &self,
        graph: &mut StepGraph,
        step: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        let (Device::Emulated(emulator), Some(reservation), Some(captured)) =
            (self, graph.reservation.as_ref(), graph.trace.as_ref())
        else {
            return Err(Error::argument(
                OP,
                format!(
                    "a replay checked eagerly on the {} device without a recorded step",
                    self.name()
                ),
            ));
        };
        let cache = emulator.memory_cache().clone();
        cache.begin_replay_check(reservation);
        emulator.start_trace();
        emulator.capturing.store(true, Ordering::Relaxed);
        let outcome = step();
        emulator.capturing.store(false, Ordering::Relaxed);
        let trace = emulator.take_trace();
        let left = cache.end_replay_check();
        let value = outcome?;
        if let Some(i) =
            (0..captured.len().max(trace.len())).find(|&i| captured.get(i) != trace.get(i))
        {
            return Err(Error::argument(
                OP,
                format!(
                    "a replay would not run this step: launch {i} of {} captured is {:?}, the \
                     step's ({} launches) is {:?}",
                    captured.len(),
                    captured.get(i),
                    trace.len(),
                    trace.get(i)
                ),
            ));
        }
        if left > 0 {
            return Err(Error::argument(
                OP,
                format!("{left} blocks the captured step took were not taken again"),
            ));
        }
        graph.replays += 1;
        Ok(value)
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
            stream: Some(stream.clone()),
            reservation: None,
            instantiations: instantiations + 1,
            updates: 0,
            replays: 0,
            trace: None,
        })
    }
}
