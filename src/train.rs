//! The trainer (spec §2 "Optimiser", §5.3 "Model selection"): epochs over batches reshuffled
//! from (seed, epoch), Adam, validation after every epoch, early stopping on validation
//! NDCG@20, test HR/NDCG@{10, 20} from the best epoch's weights.
//!
//! Checkpoints: after every epoch, `<dir>/last.safetensors` holds the parameters, Adam's moments,
//! the best epoch's parameters (`best.<name>`) and the trainer's state as JSON metadata (epoch,
//! Adam step, best-so-far, epochs without improvement, history); `<dir>/best.safetensors` holds
//! the best weights alone. Both are written atomically. Every random draw is a function of the
//! seeds and the step or epoch counters, so on the CPU a run resumed from `last.safetensors`
//! ends bit-identical to an uninterrupted one (`tests/train.rs`).
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::autograd::Tape;
use crate::checkpoint::{write_atomically, write_safetensors, SafetensorsFile};
use crate::data::{Batcher, Dataset, Order, Sample, TokenTable};
use crate::metrics::Evaluator;
use crate::model::{
    data_shape, token_attributes, DropoutSeeds, Mode, Model, ModelConfig, ModelInputs,
};
use crate::ops::adam::{Adam, AdamConfig};
use crate::{Device, Error, IndexTensor, Result, Tensor};

/// The trainer's hyper-parameters. `Default` is spec §6 (lr 1e-4, batch 2048, 200 epochs,
/// patience 10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Most epochs.
    pub epochs: usize,
    pub batch_size: usize,
    /// Rows per evaluation batch (memory only; results do not depend on it).
    pub eval_batch_size: usize,
    pub learning_rate: f32,
    pub weight_decay: f32,
    /// Stop after this many epochs without a better validation NDCG@20.
    pub patience: usize,
    /// Seeds the per-epoch shuffle.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 200,
            batch_size: 2048,
            eval_batch_size: 256,
            learning_rate: 1e-4,
            weight_decay: 0.0,
            patience: 10,
            seed: 2024,
        }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(Error::Config(
                "epochs, batch size and evaluation batch size must be positive".into(),
            ));
        }
        if self.patience == 0 {
            return Err(Error::Config("patience must be at least 1".into()));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::Config(format!(
                "learning rate must be positive, got {}",
                self.learning_rate
            )));
        }
        Ok(())
    }
}

/// How a run is carried out (none of it changes the numbers).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where `last.safetensors` and `best.safetensors` go; none: no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from `<checkpoint_dir>/last.safetensors` when it exists.
    pub resume: bool,
    /// Print a progress line (samples per second, running loss) and one line per epoch.
    pub progress: bool,
    /// Stop after this many epochs in this call, leaving the checkpoint (an interruption).
    pub stop_after_epochs: Option<usize>,
    /// Write the results JSON here at the end.
    pub results_path: Option<PathBuf>,
    /// Train on at most this many batches per epoch (a timing run: `scripts/cpu-compare.sh`);
    /// none: the whole epoch. A cap changes the numbers, as an interruption does.
    pub max_batches_per_epoch: Option<usize>,
    /// On a CUDA device, run every step whose input shapes repeat the previous step's as one
    /// CUDA graph launch ([`TrainStep`], `Device::run_step_graph`; replayed without capture
    /// while the inputs and parameters stay put, `Device::replay_step_graph`); a step at new shapes (the
    /// first, the last shorter batch of an epoch) runs eagerly. Same bits as eager (the GPU
    /// tier's `tests/cuda_graph.rs`). Off by default until a GPU run measures it; the emulated
    /// and CPU devices run eagerly.
    pub cuda_graph: bool,
}

/// How [`TrainStep`] ran its steps so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCounts {
    /// Steps run eagerly: graphs off, new input shapes, or (graphs on) a parameter shared with a
    /// kept clone, so that Adam's update copies it (copy on write).
    pub eager: u64,
    /// Steps captured (or, on the emulated device, run under the capture's checks) and launched
    /// as one graph: a graph instantiated.
    pub graph_instantiated: u64,
    /// Steps captured and launched as one graph: the executable graph updated in place.
    pub graph_updated: u64,
    /// Steps of repeated shapes with graphs on, run eagerly because the device has no graphs:
    /// under a capture's refusals on the emulated device, plainly on the CPU.
    pub graph_checked_eagerly: u64,
    /// Steps run by launching the last captured graph again, with no capture and no update:
    /// the same input shapes, staged input addresses and parameter addresses as that capture.
    pub graph_replayed: u64,
}

/// One training step as the trainer runs it: forward, backward and Adam's update, then the loss
/// L read back. With graphs on, a step whose input shapes equal the previous step's runs through
/// `Device::run_step_graph` (one CUDA graph launch on a GPU), and a step at new shapes runs
/// eagerly, which also fills the memory cache for those shapes so that the next capture
/// allocates nothing fresh.
#[derive(Debug, Default)]
pub struct TrainStep {
    cuda_graph: bool,
    graph: Option<crate::device::StepGraph>,
    /// The captured step a replay repeats: its inputs' shapes and addresses and its parameters'
    /// addresses, and its pass, whose loss tensors each replay fills again.
    captured: Option<(StepKey, CapturedPass)>,
    /// The emulated device's captured step (its inputs and parameters), which the next steps
    /// are checked against (`Device::check_replay_eagerly`).
    emulated_key: Option<StepKey>,
    last_shapes: Option<Vec<Vec<usize>>>,
    counts: StepCounts,
    /// The batch's device buffers of [`TrainStep::run_staged`], kept between steps.
    staged: Option<ModelInputs>,
}

impl TrainStep {
    pub fn new(cuda_graph: bool) -> Self {
        TrainStep {
            cuda_graph,
            ..TrainStep::default()
        }
    }

    pub fn counts(&self) -> StepCounts {
        self.counts
    }

    /// Runs one step at Adam step `step` (the dropout masks' counter) and returns L.
    ///
    /// With graphs on, every step (eager or captured) reads its per-step scalars from Adam's
    /// device step counter (`Adam::use_step_counter`: the bias corrections and the dropout seeds,
    /// `DropoutSeeds::stepped`), which the step itself advances, so consecutive captures at the
    /// same shapes differ in buffer addresses only; the bits are those of the by-value step.
    /// `step` must then equal `adam.steps()` (the counter follows Adam).
    pub fn run(
        &mut self,
        model: &mut Model,
        adam: &mut Adam,
        inputs: &ModelInputs,
        step: u64,
    ) -> Result<f32> {
        let shapes = input_shapes(inputs);
        let repeated = self.last_shapes.as_ref() == Some(&shapes);
        if !self.cuda_graph {
            self.last_shapes = Some(shapes);
            self.counts.eager += 1;
            let seeds = DropoutSeeds::for_model(model.config().seed, Mode::Train { step });
            return step_device_work(model, adam, inputs, &seeds)?.loss();
        }
        if adam.steps() != step {
            return Err(Error::argument(
                "train step",
                format!(
                    "step {step} with graphs on, but Adam has taken {} steps: the dropout seeds \
                     follow Adam's device step counter",
                    adam.steps()
                ),
            ));
        }
        // Made (an upload) at the first step, which is eager: a capture may not upload.
        let counter = adam.use_step_counter()?;
        self.last_shapes = Some(shapes);
        let seeds = DropoutSeeds::stepped(model.config().seed, counter);
        // A parameter another tensor shares (the trainer's best-epoch weights, kept just now)
        // gets a new buffer in Adam's update (copy on write), which the memory cache may not
        // hold: a fresh allocation, which a capture refuses. That step runs eagerly; the next
        // ones write in place again.
        let shared = model.parameters().iter().any(|p| p.value.shares_buffer());
        if !repeated || shared {
            self.counts.eager += 1;
            return step_device_work(model, adam, inputs, &seeds)?.loss();
        }
        let device = model.device().clone();
        let key = StepKey::of(model, inputs);
        if let Some(graph) = self.graph.as_mut() {
            if graph.checkable() && self.emulated_key.as_ref() == Some(&key) {
                // The emulated device has no graphs: the step runs eagerly, checked to launch
                // exactly what the captured step launched, at the same addresses (what a replay
                // would run), under the capture's refusals.
                let pass = device.check_replay_eagerly(graph, || {
                    step_device_work(model, adam, inputs, &seeds)
                })?;
                self.counts.graph_checked_eagerly += 1;
                return pass.loss();
            }
        }
        if let (Some(graph), Some((captured, CapturedPass(pass)))) =
            (self.graph.as_mut(), &self.captured)
        {
            if graph.replayable() && *captured == key {
                // The captured step again, at its own addresses: one launch, no host code. What
                // that code would have advanced on the host is advanced here.
                device.replay_step_graph(graph)?;
                adam.count_replayed_step()?;
                self.counts.graph_replayed += 1;
                // After the launch: the download waits for the graph.
                return pass.loss();
            }
        }
        // A new capture: the kept pass's blocks go back to the cache first (reserved until the
        // capture releases the reservation), so the capture can reuse them.
        self.captured = None;
        self.emulated_key = None;
        let (pass, run) = device.run_step_graph(&mut self.graph, || {
            step_device_work(model, adam, inputs, &seeds)
        })?;
        match run {
            crate::device::GraphRun::Eager => self.counts.graph_checked_eagerly += 1,
            crate::device::GraphRun::Instantiated => self.counts.graph_instantiated += 1,
            crate::device::GraphRun::Updated => self.counts.graph_updated += 1,
        }
        // After the launch: the download waits for the graph.
        let loss = pass.loss();
        if run == crate::device::GraphRun::Eager {
            // The emulated device keeps no pass (its check reruns the step's code).
            self.emulated_key = Some(key);
        } else {
            self.captured = Some((key, CapturedPass(pass)));
        }
        loss
    }

    /// The last captured step graph, if any (on the emulated device: only its reserved memory).
    pub fn step_graph(&self) -> Option<&crate::device::StepGraph> {
        self.graph.as_ref()
    }
}

/// The captured step's pass, kept for its loss tensors.
struct CapturedPass(crate::model::ForwardPass);

impl std::fmt::Debug for CapturedPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapturedPass")
    }
}

/// What a replay of a captured step needs unchanged: the input shapes, the addresses of the
/// staged inputs and of the parameters (a copy-on-write step moves a parameter).
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepKey {
    shapes: Vec<Vec<usize>>,
    input_addresses: Vec<u64>,
    parameter_addresses: Vec<u64>,
}

impl StepKey {
    fn of(model: &Model, inputs: &ModelInputs) -> StepKey {
        StepKey {
            shapes: input_shapes(inputs),
            input_addresses: input_tensors(inputs)
                .iter()
                .map(|t| t.buffer().address())
                .collect(),
            parameter_addresses: model
                .parameters()
                .iter()
                .map(|p| p.value.buffer().address())
                .collect(),
        }
    }
}

impl TrainStep {
    /// [`TrainStep::run`] on a batch built on the host (`ModelInputs::from_batch` on
    /// `Device::Cpu`). With graphs on, the batch is copied into device buffers this `TrainStep`
    /// keeps (`Device::write`): a batch of the previous one's layout and shapes goes into the
    /// same buffers, so a captured step's inputs are at fixed addresses; other shapes get new
    /// buffers, kept from then on. With graphs off, the batch is uploaded into new buffers.
    /// Inputs not on the CPU device are an [`Error::DeviceMismatch`].
    pub fn run_staged(
        &mut self,
        model: &mut Model,
        adam: &mut Adam,
        host_inputs: &ModelInputs,
        step: u64,
    ) -> Result<f32> {
        for t in input_tensors(host_inputs) {
            if t.device() != &Device::Cpu {
                return Err(Error::DeviceMismatch {
                    op: "train step staging",
                    expected: Device::Cpu.name(),
                    found: t.device().name(),
                });
            }
        }
        let device = model.device().clone();
        if !self.cuda_graph {
            return self.run(model, adam, &upload_inputs(&device, host_inputs)?, step);
        }
        let staged = match self.staged.take() {
            Some(mut staged) if same_layout(&staged, host_inputs) => {
                write_inputs(&device, host_inputs, &mut staged)?;
                staged
            }
            _ => upload_inputs(&device, host_inputs)?,
        };
        let loss = self.run(model, adam, &staged, step);
        self.staged = Some(staged);
        loss
    }

    /// The device buffers [`TrainStep::run_staged`] keeps for the batch (graphs on), once a step
    /// made them.
    pub fn staged_inputs(&self) -> Option<&ModelInputs> {
        self.staged.as_ref()
    }
}

fn input_shapes(inputs: &ModelInputs) -> Vec<Vec<usize>> {
    input_tensors(inputs)
        .iter()
        .map(|t| t.shape().to_vec())
        .collect()
}

/// Every tensor of `inputs`, in a fixed order.
fn input_tensors(inputs: &ModelInputs) -> Vec<&IndexTensor> {
    let mut tensors = vec![&inputs.items, &inputs.lengths, &inputs.targets];
    tensors.extend(inputs.attributes.iter().chain(&inputs.target_attributes));
    tensors.extend(&inputs.attribute_groups);
    tensors
}

/// Whether `a` and `b` have the same tensors (which fields, how many attributes) of the same
/// shapes.
fn same_layout(a: &ModelInputs, b: &ModelInputs) -> bool {
    a.attributes.len() == b.attributes.len()
        && a.target_attributes.len() == b.target_attributes.len()
        && a.attribute_groups.is_some() == b.attribute_groups.is_some()
        && input_shapes(a) == input_shapes(b)
}

/// A copy of host inputs on `device`, in new buffers.
fn upload_inputs(device: &Device, host: &ModelInputs) -> Result<ModelInputs> {
    let up = |t: &IndexTensor| t.to_device(device);
    Ok(ModelInputs {
        items: up(&host.items)?,
        lengths: up(&host.lengths)?,
        targets: up(&host.targets)?,
        attributes: host.attributes.iter().map(up).collect::<Result<_>>()?,
        target_attributes: host
            .target_attributes
            .iter()
            .map(up)
            .collect::<Result<_>>()?,
        attribute_groups: host.attribute_groups.as_ref().map(up).transpose()?,
    })
}

/// Writes host inputs into `staged`'s own buffers (same layout; `Device::write`: the addresses
/// stay).
fn write_inputs(device: &Device, host: &ModelInputs, staged: &mut ModelInputs) -> Result<()> {
    let mut targets: Vec<&mut IndexTensor> =
        vec![&mut staged.items, &mut staged.lengths, &mut staged.targets];
    targets.extend(
        staged
            .attributes
            .iter_mut()
            .chain(staged.target_attributes.iter_mut()),
    );
    targets.extend(staged.attribute_groups.as_mut());
    for (into, from) in targets.into_iter().zip(input_tensors(host)) {
        if into.shares_buffer() {
            return Err(Error::argument(
                "train step staging",
                "a staged input buffer is still shared after its step (a clone was kept)",
            ));
        }
        device.write(from.host(), into.buffer_mut()?)?;
    }
    Ok(())
}

/// A step's device work, with no host synchronisation: forward, backward, Adam. The pass it
/// returns holds the losses, still on the device.
fn step_device_work(
    model: &mut Model,
    adam: &mut Adam,
    inputs: &ModelInputs,
    seeds: &DropoutSeeds,
) -> Result<crate::model::ForwardPass> {
    let tape = Tape::new();
    let mut pass = model.forward_with_seeds(&tape, inputs, seeds)?;
    let grads = pass.backward(&tape)?;
    // The tape (its backward consumed its nodes) and the pass's parameter variables hold clones
    // of the parameters: dropped, so that Adam writes every parameter in place (same address
    // from step to step, no copy) unless a clone is kept elsewhere (the best-epoch weights).
    drop(tape);
    pass.parameters.clear();
    adam.step_in_place(&mut model.tensors_mut(), &grads)?;
    Ok(pass)
}

/// HR and NDCG at 10 and 20.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    pub hr10: f64,
    pub ndcg10: f64,
    pub hr20: f64,
    pub ndcg20: f64,
}

/// One epoch of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss L over the epoch's batches.
    pub train_loss: f64,
    pub seconds: f64,
    pub samples_per_second: f64,
    pub valid: RankingMetrics,
}

/// What a finished run reports (also the JSON results file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainResults {
    pub dataset: String,
    pub device: String,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub n_parameters: usize,
    pub epochs: Vec<EpochRecord>,
    pub best_epoch: usize,
    pub best_valid: RankingMetrics,
    pub test: RankingMetrics,
    pub stopped_early: bool,
}

/// A run either finishes or stops early on request ([`RunOptions::stop_after_epochs`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished(Box<TrainResults>),
    Interrupted { epochs_done: usize },
}

/// The trainer's state between epochs (checkpoint metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainerState {
    model: ModelConfig,
    train: TrainConfig,
    epochs_done: usize,
    adam_steps: u64,
    best_epoch: usize,
    best_valid: Option<RankingMetrics>,
    epochs_without_improvement: usize,
    history: Vec<EpochRecord>,
}

/// HR/NDCG@{10, 20} of `model` on `samples` (full ranking, spec §5.3).
pub fn evaluate(
    model: &Model,
    dataset: &Dataset,
    samples: &[Sample],
    batch_size: usize,
) -> Result<RankingMetrics> {
    let tables: Vec<&TokenTable> = attribute_tables(model, dataset);
    let width = model.config().attribute_width;
    let mut evaluator = Evaluator::new(&[10, 20])?;
    let batcher = Batcher::new(dataset, samples, batch_size, model.config().max_len)?;
    for batch in batcher.epoch(Order::Sequential) {
        let inputs = ModelInputs::from_batch(model.device(), &batch, &tables, width)?;
        let scores = model.scores(&inputs)?.to_vec()?;
        evaluator.add_batch(&scores, dataset.n_item_ids(), &batch.targets)?;
    }
    let m = evaluator.metrics();
    let get = |v: Option<f64>| v.expect("K evaluated");
    Ok(RankingMetrics {
        hr10: get(m.hr(10)),
        ndcg10: get(m.ndcg(10)),
        hr20: get(m.hr(20)),
        ndcg20: get(m.ndcg(20)),
    })
}

fn attribute_tables<'a>(model: &Model, dataset: &'a Dataset) -> Vec<&'a TokenTable> {
    if model.config().kind.uses_attributes() {
        token_attributes(dataset)
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    } else {
        Vec::new()
    }
}

const LAST: &str = "last.safetensors";
const BEST: &str = "best.safetensors";

/// Trains `model_config` on `dataset`'s leave-one-out split on `device`.
pub fn train(
    dataset: &Dataset,
    model_config: &ModelConfig,
    train_config: &TrainConfig,
    device: &Device,
    options: &RunOptions,
) -> Result<Outcome> {
    train_config.validate()?;
    let mut model = Model::new(model_config, &data_shape(dataset), device)?;
    let split = dataset.leave_one_out();
    if split.train.is_empty() || split.valid.is_empty() || split.test.is_empty() {
        return Err(Error::Config(format!(
            "dataset `{}` gives {} training, {} validation and {} test samples; all must be \
             non-empty",
            dataset.name(),
            split.train.len(),
            split.valid.len(),
            split.test.len()
        )));
    }
    let adam_config = AdamConfig {
        lr: train_config.learning_rate,
        weight_decay: train_config.weight_decay,
        ..AdamConfig::default()
    };
    let mut adam = Adam::new(adam_config, &model.tensors())?;
    let mut state = TrainerState {
        model: model_config.clone(),
        train: train_config.clone(),
        epochs_done: 0,
        adam_steps: 0,
        best_epoch: 0,
        best_valid: None,
        epochs_without_improvement: 0,
        history: Vec::new(),
    };
    let mut best_tensors = model.tensors();
    if let (true, Some(dir)) = (options.resume, &options.checkpoint_dir) {
        let path = dir.join(LAST);
        if path.exists() {
            state = restore(&path, &mut model, &mut adam, &mut best_tensors, &state)?;
            if options.progress {
                eprintln!(
                    "resumed from {} after epoch {}",
                    path.display(),
                    state.epochs_done
                );
            }
        }
    }

    let tables = attribute_tables(&model, dataset);
    let width = model_config.attribute_width;
    let batcher = Batcher::new(
        dataset,
        &split.train,
        train_config.batch_size,
        model_config.max_len,
    )?;
    let mut steps = TrainStep::new(options.cuda_graph);
    let terminal = std::io::stderr().is_terminal();
    let mut epochs_this_call = 0;
    let finished_by_patience =
        |s: &TrainerState| s.epochs_without_improvement >= train_config.patience;
    while state.epochs_done < train_config.epochs && !finished_by_patience(&state) {
        if options.stop_after_epochs == Some(epochs_this_call) {
            return Ok(Outcome::Interrupted {
                epochs_done: state.epochs_done,
            });
        }
        let epoch = state.epochs_done + 1;
        let started = Instant::now();
        let (mut loss_sum, mut batches, mut samples) = (0.0f64, 0usize, 0usize);
        let order = Order::Shuffled {
            seed: train_config.seed,
            epoch: epoch as u64,
        };
        for batch in batcher
            .epoch(order)
            .take(options.max_batches_per_epoch.unwrap_or(usize::MAX))
        {
            // Built on the host; `run_staged` copies it into the step's device buffers (kept
            // between steps with graphs on, new ones with graphs off).
            let inputs = ModelInputs::from_batch(&Device::Cpu, &batch, &tables, width)?;
            let loss = steps.run_staged(&mut model, &mut adam, &inputs, state.adam_steps)?;
            if !loss.is_finite() {
                return Err(Error::Config(format!(
                    "the training loss became {loss} at epoch {epoch}, step {} (lower the \
                     learning rate?)",
                    state.adam_steps
                )));
            }
            state.adam_steps += 1;
            loss_sum += loss as f64;
            batches += 1;
            samples += batch.len();
            if options.progress && terminal {
                let rate = samples as f64 / started.elapsed().as_secs_f64().max(1e-9);
                eprint!(
                    "\repoch {epoch:>3} [{batches}/{}] {rate:>8.0} samples/s  loss {:.4}   ",
                    batcher.n_batches(),
                    loss_sum / batches as f64
                );
                let _ = std::io::stderr().flush();
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let valid = evaluate(&model, dataset, &split.valid, train_config.eval_batch_size)?;
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / batches.max(1) as f64,
            seconds: train_seconds,
            samples_per_second: samples as f64 / train_seconds.max(1e-9),
            valid,
        };
        let improved = state
            .best_valid
            .is_none_or(|best| valid.ndcg20 > best.ndcg20);
        if improved {
            state.best_valid = Some(valid);
            state.best_epoch = epoch;
            state.epochs_without_improvement = 0;
            best_tensors = model.tensors();
        } else {
            state.epochs_without_improvement += 1;
        }
        if options.progress {
            if terminal {
                eprint!("\r");
            }
            eprintln!(
                "epoch {epoch:>3}  loss {:.4}  {:.1} s  {:.0} samples/s  valid HR@20 {:.4}  \
                 NDCG@20 {:.4}{}",
                record.train_loss,
                record.seconds,
                record.samples_per_second,
                valid.hr20,
                valid.ndcg20,
                if improved { "  *" } else { "" }
            );
        }
        state.history.push(record);
        state.epochs_done = epoch;
        epochs_this_call += 1;
        if let Some(dir) = &options.checkpoint_dir {
            if improved {
                let mut best = model.clone();
                best.set_tensors(best_tensors.clone())?;
                best.save(&dir.join(BEST))?;
            }
            save_checkpoint(&dir.join(LAST), &model, &adam, &best_tensors, &state)?;
        }
    }

    model.set_tensors(best_tensors)?;
    let test = evaluate(&model, dataset, &split.test, train_config.eval_batch_size)?;
    let results = TrainResults {
        dataset: dataset.name().to_string(),
        device: device.name(),
        model: model_config.clone(),
        train: train_config.clone(),
        n_parameters: model.n_scalars(),
        best_epoch: state.best_epoch,
        best_valid: state.best_valid.expect("at least one epoch ran"),
        test,
        stopped_early: finished_by_patience(&state) && state.epochs_done < train_config.epochs,
        epochs: state.history,
    };
    if let Some(path) = &options.results_path {
        let json = serde_json::to_string_pretty(&results).expect("results serialise");
        write_atomically(path, json.as_bytes())?;
    }
    Ok(Outcome::Finished(Box::new(results)))
}

fn save_checkpoint(
    path: &Path,
    model: &Model,
    adam: &Adam,
    best: &[Tensor],
    state: &TrainerState,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (p, b) in model.parameters().iter().zip(best) {
        tensors.push((p.name.clone(), p.value.shape().to_vec(), p.value.to_vec()?));
        tensors.push((format!("best.{}", p.name), b.shape().to_vec(), b.to_vec()?));
    }
    let (first, second) = adam.moments()?;
    tensors.push(("adam.first_moment".into(), vec![first.len()], first));
    tensors.push(("adam.second_moment".into(), vec![second.len()], second));
    let mut metadata = HashMap::new();
    metadata.insert(
        "trainer_state".to_string(),
        serde_json::to_string(state).expect("state serialises"),
    );
    metadata.insert(
        "model_config".to_string(),
        serde_json::to_string(model.config()).expect("config serialises"),
    );
    write_safetensors(path, &tensors, metadata)
}

fn restore(
    path: &Path,
    model: &mut Model,
    adam: &mut Adam,
    best: &mut Vec<Tensor>,
    fresh: &TrainerState,
) -> Result<TrainerState> {
    let file = SafetensorsFile::read(path)?;
    let bad = |m: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message: m,
    };
    let metadata = file.metadata()?;
    let state: TrainerState = metadata
        .get("trainer_state")
        .ok_or_else(|| bad("no trainer_state metadata".into()))
        .and_then(|s| serde_json::from_str(s).map_err(|e| bad(format!("trainer_state: {e}"))))?;
    if state.model != fresh.model {
        return Err(bad(format!(
            "written for another model configuration ({:?}); start a new run or pass the same \
             flags",
            state.model
        )));
    }
    let (a, b) = (&state.train, &fresh.train);
    if (a.batch_size, a.learning_rate, a.weight_decay, a.seed)
        != (b.batch_size, b.learning_rate, b.weight_decay, b.seed)
    {
        return Err(bad(format!(
            "written with another batch size, learning rate, weight decay or seed ({a:?})"
        )));
    }
    let device = model.device().clone();
    let mut current = Vec::new();
    let mut best_values = Vec::new();
    for p in model.parameters() {
        let shape = p.value.shape();
        current.push(Tensor::from_vec(
            &device,
            shape,
            file.tensor(&p.name, shape)?,
        )?);
        best_values.push(Tensor::from_vec(
            &device,
            shape,
            file.tensor(&format!("best.{}", p.name), shape)?,
        )?);
    }
    model.set_tensors(current)?;
    *best = best_values;
    let total = model.n_scalars();
    let first = file.tensor("adam.first_moment", &[total])?;
    let second = file.tensor("adam.second_moment", &[total])?;
    adam.restore(state.adam_steps, &first, &second)?;
    let mut state = state;
    // Limits that may change on resume (a longer run, more patience) come from this call.
    state.train = fresh.train.clone();
    Ok(state)
}

/// The final table: best validation and test HR/NDCG at 10 and 20.
pub fn results_table(results: &TrainResults) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{} on {} ({}), {} parameters, best epoch {} of {}{}\n",
        results.model.kind,
        results.dataset,
        results.device,
        results.n_parameters,
        results.best_epoch,
        results.epochs.len(),
        if results.stopped_early {
            " (stopped early)"
        } else {
            ""
        }
    ));
    s.push_str("| split | HR@10  | NDCG@10 | HR@20  | NDCG@20 |\n");
    s.push_str("|-------|--------|---------|--------|---------|\n");
    for (name, m) in [("valid", &results.best_valid), ("test", &results.test)] {
        s.push_str(&format!(
            "| {name:<5} | {:.4} | {:.4}  | {:.4} | {:.4}  |\n",
            m.hr10, m.ndcg10, m.hr20, m.ndcg20
        ));
    }
    let seconds: f64 = results.epochs.iter().map(|e| e.seconds).sum();
    s.push_str(&format!(
        "mean {:.2} s per training epoch\n",
        seconds / results.epochs.len().max(1) as f64
    ));
    s
}
