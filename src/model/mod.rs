//! ASIF and its baselines as one code path (spec §2 to §4; switch table: `docs/model.md`).
//!
//! A [`Model`] owns its parameters (RecBole's initialisation) as typed blocks and runs on any
//! device: its forward pass is built from the ops' tape faces, so the same code trains on the
//! CPU, the emulator and a GPU. [`Model::forward`] records L = L_ce + λ·L_co for a batch on a
//! tape; [`Model::scores`] gives u E_Xᵀ over all items in evaluation mode (no dropout). The
//! prediction layer is E_X itself (tied weights).
//!
//! Files, one job each: `config.rs` (the kinds and their switch table, the one place a kind is
//! matched; hyper-parameters), `inputs.rs` (a batch on a device, dataset glue),
//! `parameters.rs` (the parameter list, initialisation, typed handles), `blocks.rs` (linear,
//! layer norm, FFN), `fusion.rs` (𝓕), `layer.rs` (the SASRec and ASIF layers), `nova.rs` (the
//! NOVA layer), `difsr.rs` (the DIF-SR layer, its score ops and its attribute-prediction
//! loss), `forward.rs`
//! (what a pass carries: mode, dropout seeds), `weights.rs` (checkpoint I/O), and this file
//! (the model: which blocks exist, the forward pass, the loss).
mod blocks;
mod config;
mod difsr;
mod forward;
mod fusion;
mod inputs;
mod layer;
mod nova;
mod parameters;
mod weights;

pub use config::{
    DataShape, FusedInput, Fusion, HieGradient, LayerKind, ModelConfig, ModelKind, PoolingMode,
    RsaReduction, Switches,
};
pub use forward::{DropoutSeeds, Mode};
pub use inputs::{attribute_groups, data_shape, token_attributes, ModelInputs};
pub use layer::{broadcast_positions, AsifStreams, PositionStream};
pub use parameters::Parameter;

use std::path::Path;

use crate::autograd::{Gradients, Tape, Var};
use crate::kernel_version::{self, KernelVersion};
use crate::ops::add::add;
use crate::ops::contrastive::{contrastive_loss, initial_logit_scale, ContrastiveReduction};
use crate::ops::cross_entropy::cross_entropy_over_items;
use crate::ops::embedding::{embedding, pooled_embedding};
use crate::ops::gather::gather_last;
use crate::ops::input_embedding::{self, input_embedding};
use crate::ops::linear::matmul_transposed_forward;
use crate::{Device, Error, IndexTensor, Result, Tensor};

use blocks::{LayerNorm, Linear};
use difsr::{attribute_prediction_loss, DifSrLayer, DifSrSideInformation};
use forward::Forward;
use fusion::FusionBlock;
use layer::{AsifLayer, SasRecLayer};
use nova::{NovaLayer, NovaSideInformation};
use parameters::{Block, Init, Leaves, ParameterBuilder, ParameterId};

/// What [`Model::forward`] recorded: the parameter leaves (in [`Model::parameters`] order) and
/// the two loss terms.
pub struct ForwardPass {
    pub parameters: Vec<Var>,
    /// L_ce, a scalar.
    pub cross_entropy: Var,
    /// L_co, a scalar, where the model has RSA and λ > 0.
    pub contrastive: Option<Var>,
    pub lambda: f32,
    /// Σ_j L_attr,j, a scalar, where the model has DIF-SR's attribute prediction and λ_aap > 0.
    pub attribute_prediction: Option<Var>,
    pub attribute_prediction_lambda: f32,
}

impl ForwardPass {
    /// L = L_ce + λ·L_co (+ λ_aap Σ_j L_attr,j for DIF-SR), read back to the host.
    pub fn loss(&self) -> Result<f32> {
        let mut loss = self.cross_entropy.value().to_vec()?[0];
        if let Some(co) = &self.contrastive {
            loss += self.lambda * co.value().to_vec()?[0];
        }
        if let Some(aap) = &self.attribute_prediction {
            loss += self.attribute_prediction_lambda * aap.value().to_vec()?[0];
        }
        Ok(loss)
    }

    /// Backpropagates L (seeding L_ce with 1, L_co with λ and DIF-SR's Σ_j L_attr,j with λ_aap)
    /// and returns one gradient per parameter, zeros for a parameter the loss does not reach.
    pub fn backward(&self, tape: &Tape) -> Result<Vec<Tensor>> {
        let device = self.cross_entropy.value().device().clone();
        let scalar =
            |var: &Var, value: f32| Tensor::from_vec(&device, var.value().shape(), vec![value]);
        let mut seeds = vec![(&self.cross_entropy, scalar(&self.cross_entropy, 1.0)?)];
        if let Some(co) = &self.contrastive {
            seeds.push((co, scalar(co, self.lambda)?));
        }
        if let Some(aap) = &self.attribute_prediction {
            seeds.push((aap, scalar(aap, self.attribute_prediction_lambda)?));
        }
        let grads: Gradients = tape.backward_from(seeds)?;
        self.parameters
            .iter()
            .map(|p| match grads.get(p) {
                Some(g) => Ok(g.clone()),
                None => Tensor::zeros(&device, p.value().shape()),
            })
            .collect()
    }
}

/// ASIF or one of its baselines, with its parameters on a device.
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    data: DataShape,
    device: Device,
    parameters: Vec<Parameter>,
    blocks: Blocks,
}

/// The layers a model stacks (its switch table's `layer`).
#[derive(Debug, Clone)]
enum Layers {
    SasRec(Vec<SasRecLayer>),
    Asif(Vec<AsifLayer>),
    Nova(Vec<NovaLayer>),
    DifSr(Vec<DifSrLayer>),
}

/// The model's typed blocks, in creation order: handles into [`Model::parameters`].
#[derive(Debug, Clone)]
struct Blocks {
    /// E_X `[|V|, d]` (also the prediction layer).
    item_embedding: ParameterId,
    /// E_P `[n, d]`.
    position_embedding: ParameterId,
    /// One table per attribute type, where the model reads side information.
    attribute_embeddings: Vec<ParameterId>,
    /// 𝓕's weights, where the model fuses E_X with A.
    fusion: Option<FusionBlock>,
    /// LN of X⁰.
    input_norm: LayerNorm,
    /// LN_f of F⁰ (ASIF layers).
    fused_input_norm: Option<LayerNorm>,
    layers: Layers,
    /// DIF-SR's attribute predictors `attribute_prediction.{j}` (u → |A_j| logits).
    attribute_predictors: Vec<Linear>,
    /// RSA's s, where the loss has λ·L_co.
    logit_scale: Option<ParameterId>,
}

impl Blocks {
    /// The one constructor that decides which weights exist, from the kind's switches and the
    /// config.
    fn new(builder: &mut ParameterBuilder, data: &DataShape) -> Result<Blocks> {
        let config = builder.config().clone();
        let switches = config.kind.switches();
        let (d, n) = (config.hidden_size, config.max_len);
        let item_embedding = builder.add(
            "item_embedding.weight".into(),
            &[data.n_item_ids, d],
            Init::EMBEDDING,
        )?;
        let position_embedding =
            builder.add("position_embedding.weight".into(), &[n, d], Init::NORMAL)?;
        let mut attribute_embeddings = Vec::new();
        let mut fusion = None;
        if switches.fused_input != FusedInput::None {
            let width = config.attribute_table_width();
            for (j, &vocab) in data.attribute_vocab.iter().enumerate() {
                attribute_embeddings.push(builder.add(
                    format!("attribute_embedding.{j}.weight"),
                    &[vocab, width],
                    Init::EMBEDDING,
                )?);
            }
            if matches!(
                switches.fused_input,
                FusedInput::Fusion | FusedInput::FusionWithPositions
            ) {
                fusion = Some(FusionBlock::new(
                    builder,
                    config.fusion,
                    d,
                    data.attribute_vocab.len(),
                )?);
            }
        }
        let input_norm = LayerNorm::new(builder, "input_norm", d)?;
        let (fused_input_norm, layers) = match switches.layer {
            LayerKind::SasRec => (
                None,
                Layers::SasRec(
                    (0..config.layers)
                        .map(|l| SasRecLayer::new(builder, l))
                        .collect::<Result<_>>()?,
                ),
            ),
            LayerKind::Asif => (
                Some(LayerNorm::new(builder, "fused_input_norm", d)?),
                Layers::Asif(
                    (0..config.layers)
                        .map(|l| AsifLayer::new(builder, l, config.layers))
                        .collect::<Result<_>>()?,
                ),
            ),
            LayerKind::Nova => (
                None,
                Layers::Nova(
                    (0..config.layers)
                        .map(|l| NovaLayer::new(builder, l, data.attribute_vocab.len()))
                        .collect::<Result<_>>()?,
                ),
            ),
            LayerKind::DifSr => (
                None,
                Layers::DifSr(
                    (0..config.layers)
                        .map(|l| DifSrLayer::new(builder, l, data.attribute_vocab.len()))
                        .collect::<Result<_>>()?,
                ),
            ),
        };
        let attribute_predictors = if switches.attribute_prediction {
            data.attribute_vocab
                .iter()
                .enumerate()
                .map(|(j, &vocab)| {
                    Linear::new(
                        builder,
                        &format!("attribute_prediction.{j}"),
                        d,
                        vocab,
                        true,
                    )
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let logit_scale = if config.effective_rsa_lambda() > 0.0 {
            Some(builder.add(
                "logit_scale".into(),
                &[1],
                Init::Constant(initial_logit_scale()),
            )?)
        } else {
            None
        };
        Ok(Blocks {
            item_embedding,
            position_embedding,
            attribute_embeddings,
            fusion,
            input_norm,
            fused_input_norm,
            layers,
            attribute_predictors,
            logit_scale,
        })
    }
}

impl Blocks {
    /// Whether visiting the blocks yields the handles of all `count` parameters, once each, in
    /// list order (what checkpoints and the optimiser's order rely on).
    fn visits_in_order(&self, count: usize) -> bool {
        indices_in_order(|index| self.visit(&mut |id| index(id.index())), count)
    }
}

/// Whether `visit` hands out exactly the indices 0, 1, …, count − 1, in that order.
fn indices_in_order(visit: impl FnOnce(&mut dyn FnMut(usize)), count: usize) -> bool {
    let mut next = 0;
    let mut in_order = true;
    visit(&mut |index| {
        in_order &= index == next;
        next += 1;
    });
    in_order && next == count
}

impl Block for Blocks {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        self.item_embedding.visit(visitor);
        self.position_embedding.visit(visitor);
        self.attribute_embeddings.visit(visitor);
        self.fusion.visit(visitor);
        self.input_norm.visit(visitor);
        self.fused_input_norm.visit(visitor);
        match &self.layers {
            Layers::SasRec(layers) => layers.visit(visitor),
            Layers::Asif(layers) => layers.visit(visitor),
            Layers::Nova(layers) => layers.visit(visitor),
            Layers::DifSr(layers) => layers.visit(visitor),
        }
        self.attribute_predictors.visit(visitor);
        self.logit_scale.visit(visitor);
    }
}

struct Encoded {
    /// u: the hidden state at L_b − 1, `[B, d]`.
    user: Var,
    /// E_X[s], raw (RSA's x).
    item_embeddings: Var,
    /// Σ_j A_j (RSA's a), where the model reads attributes.
    attribute_sum: Option<Var>,
}

impl Model {
    /// A freshly initialised model (RecBole's `_init_weights`: weights and embeddings N(0, σ),
    /// biases 0, LN γ = 1 and β = 0; row 0 of E_X and of each attribute table zeroed; W_r of
    /// HIE N(0, 1); RSA's logit scale s = ln(1/0.07)).
    pub fn new(config: &ModelConfig, data: &DataShape, device: &Device) -> Result<Model> {
        config.validate(data)?;
        let mut builder = ParameterBuilder::new(config, device);
        let blocks = Blocks::new(&mut builder, data)?;
        let parameters = builder.finish();
        debug_assert!(
            blocks.visits_in_order(parameters.len()),
            "the blocks hold every parameter once, in creation order"
        );
        Ok(Model {
            config: config.clone(),
            data: data.clone(),
            device: device.clone(),
            parameters,
            blocks,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn data_shape(&self) -> &DataShape {
        &self.data
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// The parameters in a fixed order (the order of [`ForwardPass::parameters`] and of the
    /// optimiser's state).
    pub fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }
    /// The parameter named `name` (its checkpoint name), if the model has one.
    pub fn parameter(&self, name: &str) -> Option<&Tensor> {
        self.parameters
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
    }
    /// Number of trainable scalars.
    pub fn n_scalars(&self) -> usize {
        self.parameters.iter().map(|p| p.value.len()).sum()
    }

    /// The parameter tensors, for the optimiser (same order as [`Model::parameters`]).
    pub fn tensors(&self) -> Vec<Tensor> {
        self.parameters.iter().map(|p| p.value.clone()).collect()
    }

    /// The parameter tensors themselves, for an optimiser that updates them in place (same order
    /// as [`Model::parameters`]): where the model holds the only reference, the update writes
    /// the same memory (`Adam::step_in_place`).
    pub fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        self.parameters.iter_mut().map(|p| &mut p.value).collect()
    }

    /// Replaces every parameter (same order, shapes and device).
    pub fn set_tensors(&mut self, tensors: Vec<Tensor>) -> Result<()> {
        if tensors.len() != self.parameters.len() {
            return Err(Error::Config(format!(
                "{} tensors for {} parameters",
                tensors.len(),
                self.parameters.len()
            )));
        }
        for (p, t) in self.parameters.iter().zip(&tensors) {
            if p.value.shape() != t.shape() || t.device() != &self.device {
                return Err(Error::Config(format!(
                    "parameter {}: {:?} on {} given for {:?} on {}",
                    p.name,
                    t.shape(),
                    t.device().name(),
                    p.value.shape(),
                    self.device.name()
                )));
            }
        }
        for (p, t) in self.parameters.iter_mut().zip(tensors) {
            p.value = t;
        }
        Ok(())
    }

    fn leaves(&self, tape: &Tape) -> Vec<Var> {
        self.parameters
            .iter()
            .map(|p| tape.leaf(p.value.clone()))
            .collect()
    }

    /// Records the forward pass of a batch on `tape`: L_ce (and L_co where the model has RSA).
    pub fn forward(&self, tape: &Tape, inputs: &ModelInputs, mode: Mode) -> Result<ForwardPass> {
        let seeds = DropoutSeeds::for_model(self.config.seed, mode);
        self.forward_with_seeds(tape, inputs, &seeds)
    }

    /// [`Model::forward`] with its dropout seeds given: `DropoutSeeds::for_model`, or
    /// `DropoutSeeds::stepped` (seeds from a device step counter, issue 20).
    pub fn forward_with_seeds(
        &self,
        tape: &Tape,
        inputs: &ModelInputs,
        seeds: &DropoutSeeds,
    ) -> Result<ForwardPass> {
        let vars = self.leaves(tape);
        let encoded = self.encode(tape, &vars, inputs, seeds)?;
        let leaves = Leaves(&vars);
        let cross_entropy = cross_entropy_over_items(
            tape,
            &encoded.user,
            leaves.get(self.blocks.item_embedding),
            &inputs.targets,
        )?;
        let lambda = self.config.effective_rsa_lambda();
        let contrastive = match (
            &encoded.attribute_sum,
            self.blocks.logit_scale,
            lambda > 0.0,
        ) {
            (Some(a), Some(logit_scale), true) => {
                let groups = if self.config.rsa_dedup {
                    Some(inputs.attribute_group_ids()?)
                } else {
                    None
                };
                Some(contrastive_loss(
                    tape,
                    &encoded.item_embeddings,
                    a,
                    &inputs.lengths,
                    leaves.get(logit_scale),
                    groups.as_ref(),
                    ContrastiveReduction::from(self.config.rsa_reduction),
                )?)
            }
            _ => None,
        };
        let attribute_prediction_lambda = self.config.effective_attribute_prediction_lambda();
        let attribute_prediction = if attribute_prediction_lambda > 0.0 {
            let pass = Forward {
                tape,
                config: &self.config,
                leaves,
                seeds: &DropoutSeeds::new(0, crate::ops::dropout::DropoutMode::Eval),
            };
            let mut total: Option<Var> = None;
            for (predictor, targets) in self
                .blocks
                .attribute_predictors
                .iter()
                .zip(&inputs.target_attributes)
            {
                let logits = predictor.forward(&pass, &encoded.user)?;
                let term = attribute_prediction_loss(tape, &logits, targets)?;
                total = Some(match total {
                    Some(t) => add(tape, &t, &term)?,
                    None => term,
                });
            }
            total
        } else {
            None
        };
        Ok(ForwardPass {
            parameters: vars,
            cross_entropy,
            contrastive,
            lambda,
            attribute_prediction,
            attribute_prediction_lambda,
        })
    }

    /// u E_Xᵀ `[B, |V|]` for a batch in evaluation mode (no dropout). Column 0 (the pad) is
    /// included; the evaluator ignores it.
    pub fn scores(&self, inputs: &ModelInputs) -> Result<Tensor> {
        let tape = Tape::new();
        let vars = self.leaves(&tape);
        let seeds = DropoutSeeds::for_model(self.config.seed, Mode::Eval);
        let encoded = self.encode(&tape, &vars, inputs, &seeds)?;
        matmul_transposed_forward(
            encoded.user.value(),
            Leaves(&vars).get(self.blocks.item_embedding).value(),
        )
    }

    fn encode(
        &self,
        tape: &Tape,
        vars: &[Var],
        inputs: &ModelInputs,
        seeds: &DropoutSeeds,
    ) -> Result<Encoded> {
        inputs.check(&self.config, &self.data)?;
        let blocks = &self.blocks;
        let switches = self.config.kind.switches();
        let batch = inputs.batch_size();
        let pass = Forward {
            tape,
            config: &self.config,
            leaves: Leaves(vars),
            seeds,
        };
        // E_P broadcast to [B, n, d] on the tape (its gradient is the sum over the batch).
        let position_table = pass.parameter(blocks.position_embedding);
        let broadcast = || broadcast_positions(tape, position_table, batch);

        // E_X[s] and the pooled A_j: with one attribute type and the `input_embedding` family at
        // v2, one launch (`ops::input_embedding`, the same bits); else one lookup each.
        let fused_lookups = match (&blocks.attribute_embeddings[..], &inputs.attributes[..]) {
            // (DIF-SR's attribute table is narrower than E_X: it keeps its own lookups.)
            ([table], [tokens])
                if pass.parameter(*table).value().shape()[1..]
                    == pass.parameter(blocks.item_embedding).value().shape()[1..]
                    && kernel_version::selected(input_embedding::FAMILY)? == KernelVersion::V2 =>
            {
                Some(input_embedding(
                    tape,
                    pass.parameter(blocks.item_embedding),
                    pass.parameter(*table),
                    &inputs.items,
                    tokens,
                    self.config.pooling.into(),
                )?)
            }
            _ => None,
        };
        let (item_embeddings, attributes) = match fused_lookups {
            Some((x, a)) => (x, vec![a]),
            None => (
                embedding(tape, pass.parameter(blocks.item_embedding), &inputs.items)?,
                blocks
                    .attribute_embeddings
                    .iter()
                    .zip(&inputs.attributes)
                    .map(|(&table, tokens)| {
                        pooled_embedding(
                            tape,
                            pass.parameter(table),
                            tokens,
                            self.config.pooling.into(),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let attribute_sum = match attributes.split_first() {
            None => None,
            Some((first, rest)) => {
                let mut sum = first.clone();
                for a in rest {
                    sum = add(tape, &sum, a)?;
                }
                Some(sum)
            }
        };
        let fused = |x: &Var| -> Result<Var> {
            let fusion = blocks
                .fusion
                .as_ref()
                .ok_or_else(|| Error::argument("model", "no fusion weights"))?;
            fusion.forward(&pass, x, &attributes, attribute_sum.as_ref())
        };
        let fused_input = |x: &Var| -> Result<Option<Var>> {
            Ok(match switches.fused_input {
                FusedInput::None => None,
                FusedInput::Fusion => Some(fused(x)?),
                FusedInput::FusionWithPositions => Some(add(tape, &fused(x)?, &broadcast()?)?),
                FusedInput::Attributes => Some(
                    attribute_sum
                        .clone()
                        .ok_or_else(|| Error::argument("model", "no attribute embeddings"))?,
                ),
                FusedInput::EveryLayer => None,
            })
        };

        let x = match &blocks.layers {
            Layers::SasRec(layers) => {
                // X⁰ = Drop(LN(E_X + E_P)), or with 𝓕(E_X, A) for E_X (SASRec_F).
                let source = fused_input(&item_embeddings)?.unwrap_or(item_embeddings.clone());
                let with_positions = add(tape, &source, &broadcast()?)?;
                let mut x =
                    pass.hidden_dropout(&blocks.input_norm.forward(&pass, &with_positions)?)?;
                for layer in layers {
                    x = layer.forward(&pass, &x, &inputs.lengths)?;
                }
                x
            }
            Layers::Asif(layers) => {
                let x =
                    pass.hidden_dropout(&blocks.input_norm.forward(&pass, &item_embeddings)?)?;
                let fused_source = fused_input(&item_embeddings)?
                    .ok_or_else(|| Error::argument("model", "an ASIF layer needs F⁰"))?;
                let fused_norm = blocks
                    .fused_input_norm
                    .as_ref()
                    .ok_or_else(|| Error::argument("model", "no fused input norm"))?;
                let f = pass.hidden_dropout(&fused_norm.forward(&pass, &fused_source)?)?;
                // P⁰ = E_P raw: the projections read the shared [n, d] table, the residual its
                // broadcast; from layer 2 on, P is the [B, n, d] stream h_P.
                let mut streams = AsifStreams {
                    id: x,
                    fused: Some(f),
                    position: if switches.position_stream {
                        Some(PositionStream::from_table(tape, position_table, batch)?)
                    } else {
                        None
                    },
                };
                for layer in layers {
                    streams = layer.forward(&pass, &streams, &inputs.lengths)?;
                }
                streams.id
            }
            Layers::Nova(layers) => {
                // X⁰ = Drop(LN(E_X)); every layer fuses X with the raw A_j and E_P (nova.rs).
                let mut x =
                    pass.hidden_dropout(&blocks.input_norm.forward(&pass, &item_embeddings)?)?;
                let side = NovaSideInformation::new(
                    tape,
                    &attributes,
                    attribute_sum.as_ref(),
                    broadcast()?,
                )?;
                for layer in layers {
                    x = layer.forward(&pass, &x, &side, &inputs.lengths)?;
                }
                x
            }
            Layers::DifSr(layers) => {
                // X⁰ = Drop(LN(E_X)); every layer scores X, the raw A_j (at d_a) and the raw
                // E_P apart and fuses the scores (difsr.rs).
                let mut x =
                    pass.hidden_dropout(&blocks.input_norm.forward(&pass, &item_embeddings)?)?;
                let side = DifSrSideInformation {
                    attributes: attributes.clone(),
                    positions: broadcast()?,
                };
                for layer in layers {
                    x = layer.forward(&pass, &x, &side, &inputs.lengths)?;
                }
                x
            }
        };
        let user = gather_last(tape, &x, &inputs.lengths)?;
        Ok(Encoded {
            user,
            item_embeddings,
            attribute_sum,
        })
    }

    /// Layer `layer` (0-based) of this ASIF-family model on `tape`: exactly the layer
    /// [`Model::forward`] runs (spec §3.2; see `layer.rs`), on the streams `streams` with
    /// lengths L_b `[B]` and dropout seeds `seeds` (drawn in the model's order: attention, H_X,
    /// H_A, H_P, then FFN_X, FFN_A, FFN_P).
    ///
    /// `vars` are this model's parameters on `tape`, one per [`Model::parameters`] entry in that
    /// order (the layer reads its own, `layers.{layer}.*`, by handle). `streams.fused` is
    /// required, and `streams.position` exactly where the model has a position stream (layer
    /// 1's from [`PositionStream::from_table`]). Returns X' and, unless this is the last layer,
    /// F' and P'.
    pub fn asif_layer(
        &self,
        tape: &Tape,
        vars: &[Var],
        layer: usize,
        streams: &AsifStreams,
        lengths: &IndexTensor,
        seeds: &DropoutSeeds,
    ) -> Result<AsifStreams> {
        let cfg = &self.config;
        let bad = |m: String| Err(Error::argument("asif_layer", m));
        let layers = match &self.blocks.layers {
            Layers::Asif(layers) => layers,
            Layers::SasRec(_) | Layers::Nova(_) | Layers::DifSr(_) => {
                return bad(format!("{} has no ASIF layer", cfg.kind))
            }
        };
        let Some(asif_layer) = layers.get(layer) else {
            return bad(format!("layer {layer} of a {}-layer model", cfg.layers));
        };
        if vars.len() != self.parameters.len() {
            return bad(format!(
                "{} variables for {} parameters",
                vars.len(),
                self.parameters.len()
            ));
        }
        if let Some((v, p)) = vars
            .iter()
            .zip(&self.parameters)
            .find(|(v, p)| v.value().shape() != p.value.shape())
        {
            return bad(format!(
                "variable for `{}` is {:?}, the parameter {:?}",
                p.name,
                v.value().shape(),
                p.value.shape()
            ));
        }
        if streams.position.is_some() != asif_layer.reads_positions() {
            return bad(format!(
                "{} {} a position stream",
                cfg.kind,
                if asif_layer.reads_positions() {
                    "needs"
                } else {
                    "has no"
                }
            ));
        }
        let pass = Forward {
            tape,
            config: cfg,
            leaves: Leaves(vars),
            seeds,
        };
        asif_layer.forward(&pass, streams, lengths)
    }

    /// Saves the weights as safetensors (names as [`Model::parameters`], f32, row-major) with
    /// the model config and data shape as JSON metadata, atomically (temporary file, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        weights::save(path, &self.config, &self.data, &self.parameters)
    }

    /// Loads weights written by [`Model::save`] (or a trainer checkpoint) into this model; every
    /// parameter must be present with its shape.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let tensors = weights::load(path, &self.parameters, &self.device)?;
        self.set_tensors(tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order check itself refuses a wrong order, a missing index and an extra one (the
    /// test below only ever sees it say yes; cargo-mutants found a `true` body unnoticed).
    #[test]
    fn the_order_check_refuses_wrong_orders() {
        let check = |indices: &[usize], count| {
            indices_in_order(|index| indices.iter().for_each(|&i| index(i)), count)
        };
        assert!(check(&[0, 1, 2], 3));
        assert!(check(&[], 0));
        assert!(!check(&[0, 2, 1], 3), "out of order");
        assert!(!check(&[1, 2, 3], 3), "shifted");
        assert!(!check(&[0, 1], 3), "one missing");
        assert!(!check(&[0, 1, 2], 2), "one extra");
    }

    /// The blocks hold every parameter exactly once, visited in creation (list) order, for
    /// every kind and fusion: no parameter is created outside a block or held twice.
    #[test]
    fn blocks_visit_every_parameter_once_in_order() {
        let data = DataShape {
            n_item_ids: 9,
            attribute_vocab: vec![4, 3],
        };
        for kind in ModelKind::ALL {
            for fusion in [Fusion::Sum, Fusion::Concat, Fusion::Gate] {
                for layers in [1, 2] {
                    let config = ModelConfig {
                        kind,
                        fusion,
                        hidden_size: 4,
                        heads: 1,
                        layers,
                        max_len: 4,
                        inner_size: 4,
                        hie_rank: 2,
                        ..ModelConfig::default()
                    };
                    let model = Model::new(&config, &data, &Device::cpu()).unwrap();
                    assert!(
                        model.blocks.visits_in_order(model.parameters.len()),
                        "{kind} {fusion:?} {layers} layers"
                    );
                }
            }
        }
    }
}
