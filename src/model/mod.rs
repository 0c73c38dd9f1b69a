//! ASIF and its baselines as one code path (spec §2 to §4; switch table: `docs/model.md`).
//!
//! A [`Model`] owns its named parameters (RecBole's initialisation) and runs on any device: its
//! forward pass is built from the ops' tape faces, so the same code trains on the CPU, the
//! emulator and a GPU. [`Model::forward`] records L = L_ce + λ·L_co for a batch on a tape;
//! [`Model::scores`] gives u E_Xᵀ over all items in evaluation mode (no dropout). The prediction
//! layer is E_X itself (tied weights).
mod config;
mod layer;

pub use config::{
    DataShape, Fusion, HieGradient, ModelConfig, ModelKind, PoolingMode, RsaReduction,
};
pub use layer::{broadcast_positions, AsifStreams, DropoutSeeds, PositionStream};

use std::collections::HashMap;
use std::path::Path;

use crate::autograd::{Gradients, Tape, Var};
use crate::data::{Batch, Dataset, TokenTable};
use crate::ops::add::add;
use crate::ops::attention::attention;
use crate::ops::contrastive::{contrastive_loss, initial_logit_scale, ContrastiveReduction};
use crate::ops::cross_entropy::cross_entropy_over_items;
use crate::ops::dropout::dropout;
use crate::ops::embedding::{embedding, pooled_embedding};
use crate::ops::gather::gather_last;
use crate::ops::layer_norm::layer_norm;
use crate::ops::linear::{linear, matmul_transposed_forward};
use crate::ops::relu::relu;
use crate::ops::source_attention::{source_attention, stack_sources};
use crate::rng::{hash64, uniform};
use crate::{Device, Error, IndexTensor, Result, Tensor};

/// One named parameter.
#[derive(Debug, Clone)]
pub struct Parameter {
    pub name: String,
    pub value: Tensor,
}

/// A batch's inputs on a device: item ids `[B, n]`, lengths L_b `[B]`, targets `[B]` and, per
/// attribute type, the tokens `[B, n, width]`.
#[derive(Debug, Clone)]
pub struct ModelInputs {
    pub items: IndexTensor,
    pub lengths: IndexTensor,
    pub targets: IndexTensor,
    pub attributes: Vec<IndexTensor>,
    /// Attribute-set ids `[B, n]` for `rsa_dedup` ([`attribute_groups`]): positions with the
    /// same id hold items whose attribute tokens are identical. [`ModelInputs::from_batch`] fills
    /// it on the host; `None` makes a model with `rsa_dedup` compute it from `items` and
    /// `attributes` (a download on a GPU).
    pub attribute_groups: Option<IndexTensor>,
}

/// Attribute-set ids of `positions` item slots for `rsa_dedup` (spec §3.4): two slots get the same
/// id exactly when, for every attribute type, their sorted non-zero tokens are equal (the tokens
/// the model pools, so identical ids mean identical a rows). Padding slots (`items[p] == 0`) get
/// −1; they are outside L_b, so the contrastive loss never reads them. `tokens[j]` holds type j's
/// tokens, `positions × widths[j]`. Ids are numbered in order of first appearance.
pub fn attribute_groups(items: &[i32], tokens: &[&[i32]], widths: &[usize]) -> Vec<i32> {
    let mut ids: HashMap<Vec<Vec<i32>>, i32> = HashMap::new();
    items
        .iter()
        .enumerate()
        .map(|(p, &item)| {
            if item == 0 {
                return -1;
            }
            let key: Vec<Vec<i32>> = tokens
                .iter()
                .zip(widths)
                .map(|(t, &w)| {
                    let mut set: Vec<i32> = t[p * w..(p + 1) * w]
                        .iter()
                        .copied()
                        .filter(|&v| v != 0)
                        .collect();
                    set.sort_unstable();
                    set
                })
                .collect();
            let next = ids.len() as i32;
            *ids.entry(key).or_insert(next)
        })
        .collect()
}

impl ModelInputs {
    /// Uploads a [`Batch`] and its attribute tokens (`tables`, one per attribute type; `width`
    /// tokens kept per item).
    pub fn from_batch(
        device: &Device,
        batch: &Batch,
        tables: &[&TokenTable],
        width: usize,
    ) -> Result<ModelInputs> {
        let (b, n) = (batch.len(), batch.n);
        let to_i32 = |v: &[u32]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
        let items = to_i32(&batch.items);
        let tokens: Vec<Vec<i32>> = tables
            .iter()
            .map(|t| to_i32(&batch.attribute_tokens(t, width)))
            .collect();
        let attribute_groups = if tokens.is_empty() {
            None
        } else {
            let slices: Vec<&[i32]> = tokens.iter().map(|t| t.as_slice()).collect();
            let groups = attribute_groups(&items, &slices, &vec![width; tokens.len()]);
            Some(IndexTensor::from_vec(device, &[b, n], groups)?)
        };
        let attributes = tokens
            .into_iter()
            .map(|t| IndexTensor::from_vec(device, &[b, n, width], t))
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelInputs {
            items: IndexTensor::from_vec(device, &[b, n], items)?,
            lengths: IndexTensor::from_vec(device, &[b], to_i32(&batch.lengths))?,
            targets: IndexTensor::from_vec(device, &[b], to_i32(&batch.targets))?,
            attributes,
            attribute_groups,
        })
    }

    /// The attribute-set ids `[B, n]` of these inputs: [`ModelInputs::attribute_groups`] when
    /// set, else computed from `items` and `attributes` ([`attribute_groups`]; on a GPU this
    /// downloads them).
    pub fn attribute_group_ids(&self) -> Result<IndexTensor> {
        if let Some(groups) = &self.attribute_groups {
            return Ok(groups.clone());
        }
        let items = self.items.to_vec()?;
        let tokens = self
            .attributes
            .iter()
            .map(|a| a.to_vec())
            .collect::<Result<Vec<_>>>()?;
        let widths: Vec<usize> = self
            .attributes
            .iter()
            .map(|a| a.shape().last().copied().unwrap_or(0))
            .collect();
        let slices: Vec<&[i32]> = tokens.iter().map(|t| t.as_slice()).collect();
        IndexTensor::from_vec(
            self.items.device(),
            self.items.shape(),
            attribute_groups(&items, &slices, &widths),
        )
    }

    pub fn batch_size(&self) -> usize {
        self.lengths.len()
    }
}

/// The token attributes of a dataset in a fixed order (by name), with their vocabulary sizes:
/// what a model with side information reads.
pub fn token_attributes(dataset: &Dataset) -> Vec<(&str, &TokenTable)> {
    let mut out: Vec<(&str, &TokenTable)> = dataset
        .attributes()
        .iter()
        .filter_map(|a| a.tokens().map(|t| (a.name.as_str(), t)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// The [`DataShape`] of a dataset (its token attributes in [`token_attributes`] order).
pub fn data_shape(dataset: &Dataset) -> DataShape {
    DataShape {
        n_item_ids: dataset.n_item_ids(),
        attribute_vocab: token_attributes(dataset)
            .iter()
            .map(|(_, t)| t.n_token_ids())
            .collect(),
    }
}

/// Training (dropout on, masks from the step) or evaluation (dropout off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `step` selects the dropout masks: a different step gives different masks.
    Train {
        step: u64,
    },
    Eval,
}

/// What [`Model::forward`] recorded: the parameter leaves (in [`Model::parameters`] order) and
/// the two loss terms.
pub struct ForwardPass {
    pub parameters: Vec<Var>,
    /// L_ce, a scalar.
    pub cross_entropy: Var,
    /// L_co, a scalar, where the model has RSA and λ > 0.
    pub contrastive: Option<Var>,
    pub lambda: f32,
}

impl ForwardPass {
    /// L = L_ce + λ·L_co, read back to the host.
    pub fn loss(&self) -> Result<f32> {
        let ce = self.cross_entropy.value().to_vec()?[0];
        Ok(match &self.contrastive {
            Some(co) => ce + self.lambda * co.value().to_vec()?[0],
            None => ce,
        })
    }

    /// Backpropagates L (seeding L_ce with 1 and L_co with λ) and returns one gradient per
    /// parameter, zeros for a parameter the loss does not reach.
    pub fn backward(&self, tape: &Tape) -> Result<Vec<Tensor>> {
        let device = self.cross_entropy.value().device().clone();
        let scalar =
            |var: &Var, value: f32| Tensor::from_vec(&device, var.value().shape(), vec![value]);
        let mut seeds = vec![(&self.cross_entropy, scalar(&self.cross_entropy, 1.0)?)];
        if let Some(co) = &self.contrastive {
            seeds.push((co, scalar(co, self.lambda)?));
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
    index: HashMap<String, usize>,
}

/// How a parameter is initialised.
enum Init {
    /// N(0, σ) with σ the config's init std; `zero_pad_row` zeroes row 0 (embedding tables).
    Normal {
        zero_pad_row: bool,
    },
    /// N(0, 1) (HIE's fixed random W_r, spec §3.3).
    StandardNormal,
    Constant(f32),
}

struct Builder<'a> {
    config: &'a ModelConfig,
    device: &'a Device,
    parameters: Vec<Parameter>,
}

impl Builder<'_> {
    fn add(&mut self, name: String, shape: &[usize], init: Init) -> Result<()> {
        let len: usize = shape.iter().product();
        let seed = hash64(
            self.config.seed ^ 0xA51F_0000_0000_0000,
            self.parameters.len() as u64,
        );
        let normal = |i: usize, std: f32| -> f32 {
            // Box-Muller from two counter-based uniforms: the same values on every platform.
            let u1 = 1.0 - uniform(seed, 2 * i as u64) as f64;
            let u2 = uniform(seed, 2 * i as u64 + 1) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std
        };
        let mut values: Vec<f32> = match init {
            Init::Normal { .. } => (0..len).map(|i| normal(i, self.config.init_std)).collect(),
            Init::StandardNormal => (0..len).map(|i| normal(i, 1.0)).collect(),
            Init::Constant(c) => vec![c; len],
        };
        if let Init::Normal { zero_pad_row: true } = init {
            values[..shape[1]].fill(0.0);
        }
        self.parameters.push(Parameter {
            name,
            value: Tensor::from_vec(self.device, shape, values)?,
        });
        Ok(())
    }

    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<()> {
        self.add(
            format!("{prefix}.weight"),
            &[d_in, d_out],
            Init::Normal {
                zero_pad_row: false,
            },
        )?;
        if bias {
            self.add(format!("{prefix}.bias"), &[d_out], Init::Constant(0.0))?;
        }
        Ok(())
    }

    fn norm(&mut self, prefix: &str, d: usize) -> Result<()> {
        self.add(format!("{prefix}.weight"), &[d], Init::Constant(1.0))?;
        self.add(format!("{prefix}.bias"), &[d], Init::Constant(0.0))
    }

    fn ffn(&mut self, prefix: &str, d: usize, inner: usize) -> Result<()> {
        self.linear(&format!("{prefix}.dense1"), d, inner, true)?;
        self.linear(&format!("{prefix}.dense2"), inner, d, true)?;
        self.norm(&format!("{prefix}.norm"), d)
    }
}

/// Parameter lookup by name during a forward pass.
struct Params<'a> {
    vars: &'a [Var],
    index: &'a HashMap<String, usize>,
}

impl Params<'_> {
    fn get(&self, name: &str) -> &Var {
        &self.vars[*self
            .index
            .get(name)
            .unwrap_or_else(|| panic!("model built without parameter `{name}`"))]
    }
}

fn reshape(tape: &Tape, x: &Var, shape: &[usize]) -> Result<Var> {
    let original = x.value().shape().to_vec();
    let id = x.id();
    Ok(tape.record(x.value().reshape(shape)?, move |dy| {
        Ok(vec![(id, dy.reshape(&original)?)])
    }))
}

impl Model {
    /// A freshly initialised model (RecBole's `_init_weights`: weights and embeddings N(0, σ),
    /// biases 0, LN γ = 1 and β = 0; row 0 of E_X and of each attribute table zeroed; W_r of
    /// HIE N(0, 1); RSA's logit scale s = ln(1/0.07)).
    pub fn new(config: &ModelConfig, data: &DataShape, device: &Device) -> Result<Model> {
        config.validate(data)?;
        let (d, n, inner) = (config.hidden_size, config.max_len, config.inner_size);
        let kind = config.kind;
        let mut b = Builder {
            config,
            device,
            parameters: Vec::new(),
        };
        let emb = Init::Normal { zero_pad_row: true };
        b.add("item_embedding.weight".into(), &[data.n_item_ids, d], emb)?;
        b.add(
            "position_embedding.weight".into(),
            &[n, d],
            Init::Normal {
                zero_pad_row: false,
            },
        )?;
        if kind.uses_attributes() {
            for (j, &vocab) in data.attribute_vocab.iter().enumerate() {
                b.add(
                    format!("attribute_embedding.{j}.weight"),
                    &[vocab, d],
                    Init::Normal { zero_pad_row: true },
                )?;
            }
            if config.fusion == Fusion::Concat && kind != ModelKind::AsifWithoutFa {
                b.linear("fusion.item", d, d, true)?;
                for j in 0..data.attribute_vocab.len() {
                    b.linear(&format!("fusion.attribute.{j}"), d, d, false)?;
                }
            }
            // VanillaAttention's projection: Linear(d, d) (W₁, b₁), ReLU, Linear(d, 1) (w₂),
            // named after RecBole's nn.Sequential indices. RecBole's b₂ is not built: e_k + b₂
            // shifts every energy of a position alike, so the softmax cancels it and its gradient
            // is identically zero (as the unread h_P weights, see the layers below).
            if config.fusion == Fusion::Gate && kind != ModelKind::AsifWithoutFa {
                b.linear("fusion.gate.projection.0", d, d, true)?;
                b.linear("fusion.gate.projection.2", d, 1, false)?;
            }
        }
        b.norm("input_norm", d)?;
        if !kind.is_sasrec() {
            b.norm("fused_input_norm", d)?;
        }
        for l in 0..config.layers {
            let p = |s: &str| format!("layers.{l}.{s}");
            let last = l + 1 == config.layers;
            if kind.is_sasrec() {
                for s in ["query", "key", "value", "output"] {
                    b.linear(&p(s), d, d, true)?;
                }
                b.norm(&p("attention_norm"), d)?;
                b.ffn(&p("ffn"), d, inner)?;
                continue;
            }
            // Only X is read out after the last layer, so there h_P (and, without HIE, h_A) is
            // never read: those values, output projections, norms and FFNs would get no
            // gradient, and are not built ([`fused_output_read`], [`position_output_read`]).
            let fused_out = fused_output_read(kind, last);
            let position_out = position_output_read(kind, last);
            for s in ["query_fused", "key_fused", "value_id"] {
                b.linear(&p(s), d, d, true)?;
            }
            if kind.position_stream() {
                for s in ["query_position", "key_position"] {
                    b.linear(&p(s), d, d, true)?;
                }
            }
            if kind == ModelKind::AsifWithoutFa {
                for s in ["query_id", "key_id"] {
                    b.linear(&p(s), d, d, true)?;
                }
            }
            b.linear(&p("output_id"), d, d, true)?;
            b.norm(&p("norm_id"), d)?;
            if fused_out {
                b.linear(&p("value_fused"), d, d, true)?;
                b.linear(&p("output_fused"), d, d, true)?;
                b.norm(&p("norm_fused"), d)?;
            }
            if position_out {
                b.linear(&p("value_position"), d, d, true)?;
                b.linear(&p("output_position"), d, d, true)?;
                b.norm(&p("norm_position"), d)?;
            }
            if kind.hie() {
                b.add(p("hie_bases"), &[n, config.hie_rank], Init::StandardNormal)?;
            }
            b.ffn(&p("ffn_id"), d, inner)?;
            if !last {
                b.ffn(&p("ffn_fused"), d, inner)?;
                if kind.position_stream() {
                    b.ffn(&p("ffn_position"), d, inner)?;
                }
            }
        }
        if kind.rsa() && config.rsa_lambda > 0.0 {
            b.add(
                "logit_scale".into(),
                &[1],
                Init::Constant(initial_logit_scale()),
            )?;
        }
        let parameters = b.parameters;
        let index = parameters
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        Ok(Model {
            config: config.clone(),
            data: data.clone(),
            device: device.clone(),
            parameters,
            index,
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
    pub fn parameter(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.parameters[i].value)
    }
    /// Number of trainable scalars.
    pub fn n_scalars(&self) -> usize {
        self.parameters.iter().map(|p| p.value.len()).sum()
    }

    /// The parameter tensors, for the optimiser (same order as [`Model::parameters`]).
    pub fn tensors(&self) -> Vec<Tensor> {
        self.parameters.iter().map(|p| p.value.clone()).collect()
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

    /// Records the forward pass of a batch on `tape`: L_ce (and L_co where the model has RSA).
    pub fn forward(&self, tape: &Tape, inputs: &ModelInputs, mode: Mode) -> Result<ForwardPass> {
        let vars: Vec<Var> = self
            .parameters
            .iter()
            .map(|p| tape.leaf(p.value.clone()))
            .collect();
        let encoded = self.encode(tape, &vars, inputs, mode)?;
        let params = Params {
            vars: &vars,
            index: &self.index,
        };
        let cross_entropy = cross_entropy_over_items(
            tape,
            &encoded.user,
            params.get("item_embedding.weight"),
            &inputs.targets,
        )?;
        let lambda = self.config.effective_rsa_lambda();
        let contrastive = match (&encoded.attribute_sum, lambda > 0.0) {
            (Some(a), true) => {
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
                    params.get("logit_scale"),
                    groups.as_ref(),
                    ContrastiveReduction::from(self.config.rsa_reduction),
                )?)
            }
            _ => None,
        };
        Ok(ForwardPass {
            parameters: vars,
            cross_entropy,
            contrastive,
            lambda,
        })
    }

    /// u E_Xᵀ `[B, |V|]` for a batch in evaluation mode (no dropout). Column 0 (the pad) is
    /// included; the evaluator ignores it.
    pub fn scores(&self, inputs: &ModelInputs) -> Result<Tensor> {
        let tape = Tape::new();
        let vars: Vec<Var> = self
            .parameters
            .iter()
            .map(|p| tape.leaf(p.value.clone()))
            .collect();
        let encoded = self.encode(&tape, &vars, inputs, Mode::Eval)?;
        matmul_transposed_forward(
            encoded.user.value(),
            self.parameter("item_embedding.weight").expect("item table"),
        )
    }

    fn check_inputs(&self, inputs: &ModelInputs) -> Result<()> {
        let b = inputs.lengths.len();
        let n = self.config.max_len;
        let bad = |m: String| Err(Error::shape("model", m));
        if inputs.items.shape() != [b, n] {
            return bad(format!(
                "items must be [B = {b}, n = {n}], got {:?}",
                inputs.items.shape()
            ));
        }
        if inputs.targets.shape() != [b] {
            return bad(format!(
                "targets must be [{b}], got {:?}",
                inputs.targets.shape()
            ));
        }
        if self.config.kind.uses_attributes() {
            let m = self.data.attribute_vocab.len();
            if inputs.attributes.len() != m {
                return bad(format!(
                    "{} attribute token blocks for a model with {m} attribute types",
                    inputs.attributes.len()
                ));
            }
            for a in &inputs.attributes {
                if a.shape().len() != 3 || a.shape()[..2] != [b, n] {
                    return bad(format!(
                        "attribute tokens must be [B = {b}, n = {n}, width], got {:?}",
                        a.shape()
                    ));
                }
            }
        }
        Ok(())
    }

    fn encode(
        &self,
        tape: &Tape,
        vars: &[Var],
        inputs: &ModelInputs,
        mode: Mode,
    ) -> Result<Encoded> {
        self.check_inputs(inputs)?;
        let cfg = &self.config;
        let kind = cfg.kind;
        let batch = inputs.batch_size();
        let params = Params {
            vars,
            index: &self.index,
        };
        let seeds = DropoutSeeds::for_model(cfg.seed, mode);
        let hidden_drop = |x: &Var| dropout(tape, x, cfg.hidden_dropout, seeds.next(), seeds.mode);
        let sublayers = layer::Sublayers {
            tape,
            config: cfg,
            params: &params,
            seeds: &seeds,
        };
        let norm = |x: &Var, prefix: &str| {
            layer_norm(
                tape,
                x,
                params.get(&format!("{prefix}.weight")),
                params.get(&format!("{prefix}.bias")),
                cfg.layer_norm_eps,
            )
        };
        let dense = |x: &Var, prefix: &str| sublayers.dense(x, prefix);
        // LN(Dropout(y) + residual) with the named norm.
        let sublayer_end =
            |y: &Var, residual: &Var, prefix: &str| sublayers.sublayer_end(y, residual, prefix);
        let ffn = |x: &Var, prefix: &str| sublayers.ffn(x, prefix);
        // E_P broadcast to [B, n, d] on the tape (its gradient is the sum over the batch).
        let position_table = params.get("position_embedding.weight");
        let broadcast_positions = || broadcast_positions(tape, position_table, batch);
        let attention_config = || sublayers.attention_config();

        let item_embeddings = embedding(tape, params.get("item_embedding.weight"), &inputs.items)?;
        let mut attributes = Vec::new();
        if kind.uses_attributes() {
            for (j, tokens) in inputs.attributes.iter().enumerate() {
                attributes.push(pooled_embedding(
                    tape,
                    params.get(&format!("attribute_embedding.{j}.weight")),
                    tokens,
                    cfg.pooling.into(),
                )?);
            }
        }
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
            match cfg.fusion {
                Fusion::Sum => add(tape, x, attribute_sum.as_ref().expect("attributes")),
                Fusion::Concat => {
                    let mut y = dense(x, "fusion.item")?;
                    for (j, a) in attributes.iter().enumerate() {
                        let w = params.get(&format!("fusion.attribute.{j}.weight"));
                        y = add(tape, &y, &linear(tape, a, w, None)?)?;
                    }
                    Ok(y)
                }
                Fusion::Gate => {
                    // [E_X; A_1 … A_m] → [B, n, m+1, d]; e = w₂ᵀ ReLU(W₁ x_k + b₁) → [B, n, m+1, 1].
                    let mut sources = vec![x];
                    sources.extend(attributes.iter());
                    let stacked = stack_sources(tape, &sources)?;
                    let hidden = relu(tape, &dense(&stacked, "fusion.gate.projection.0")?)?;
                    let energies = linear(
                        tape,
                        &hidden,
                        params.get("fusion.gate.projection.2.weight"),
                        None,
                    )?;
                    source_attention(tape, &stacked, &energies)
                }
            }
        };

        let mut x;
        if kind.is_sasrec() {
            let source = if kind == ModelKind::SasRecF {
                fused(&item_embeddings)?
            } else {
                item_embeddings.clone()
            };
            let with_positions = add(tape, &source, &broadcast_positions()?)?;
            x = hidden_drop(&norm(&with_positions, "input_norm")?)?;
            for l in 0..cfg.layers {
                let p = |s: &str| format!("layers.{l}.{s}");
                let q = dense(&x, &p("query"))?;
                let k = dense(&x, &p("key"))?;
                let v = dense(&x, &p("value"))?;
                let o = attention(
                    tape,
                    &[(&q, &k)],
                    &v,
                    None,
                    None,
                    &inputs.lengths,
                    &attention_config(),
                )?;
                let h = sublayer_end(&dense(&o.id, &p("output"))?, &x, &p("attention_norm"))?;
                x = ffn(&h, &p("ffn"))?;
            }
        } else {
            x = hidden_drop(&norm(&item_embeddings, "input_norm")?)?;
            let fused_source = match kind {
                ModelKind::AsifWithoutFa => attribute_sum.clone().expect("attributes"),
                ModelKind::AsifWithoutUp => {
                    add(tape, &fused(&item_embeddings)?, &broadcast_positions()?)?
                }
                _ => fused(&item_embeddings)?,
            };
            let f = hidden_drop(&norm(&fused_source, "fused_input_norm")?)?;
            // P⁰ = E_P raw: the projections read the shared [n, d] table, the residual its
            // broadcast; from layer 2 on, P is the [B, n, d] stream h_P.
            let mut streams = AsifStreams {
                id: x,
                fused: Some(f),
                position: if kind.position_stream() {
                    Some(PositionStream::from_table(tape, position_table, batch)?)
                } else {
                    None
                },
            };
            for l in 0..cfg.layers {
                streams = sublayers.asif_layer(l, &streams, &inputs.lengths)?;
            }
            x = streams.id;
        }
        let user = gather_last(tape, &x, &inputs.lengths)?;
        Ok(Encoded {
            user,
            item_embeddings,
            attribute_sum,
        })
    }

    /// Saves the weights as safetensors (names as [`Model::parameters`], f32, row-major) with
    /// the model config and data shape as JSON metadata, atomically (temporary file, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut metadata = HashMap::new();
        metadata.insert(
            "model_config".to_string(),
            serde_json::to_string(&self.config).expect("config serialises"),
        );
        metadata.insert(
            "data_shape".to_string(),
            serde_json::to_string(&self.data).expect("shape serialises"),
        );
        let mut tensors = Vec::new();
        for p in &self.parameters {
            tensors.push((p.name.clone(), p.value.shape().to_vec(), p.value.to_vec()?));
        }
        crate::checkpoint::write_safetensors(path, &tensors, metadata)
    }

    /// Loads weights written by [`Model::save`] (or a trainer checkpoint) into this model; every
    /// parameter must be present with its shape.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let file = crate::checkpoint::SafetensorsFile::read(path)?;
        let mut tensors = Vec::new();
        for p in &self.parameters {
            let values = file.tensor(&p.name, p.value.shape())?;
            tensors.push(Tensor::from_vec(&self.device, p.value.shape(), values)?);
        }
        self.set_tensors(tensors)
    }
}

/// Whether layer `last`'s h_A is read: by the next layer, or by HIE.
fn fused_output_read(kind: ModelKind, last: bool) -> bool {
    !last || kind.hie()
}

/// Whether a layer's h_P is read: only by the next layer.
fn position_output_read(kind: ModelKind, last: bool) -> bool {
    kind.position_stream() && !last
}

struct Encoded {
    /// u: the hidden state at L_b − 1, `[B, d]`.
    user: Var,
    /// E_X[s], raw (RSA's x).
    item_embeddings: Var,
    /// Σ_j A_j (RSA's a), where the model reads attributes.
    attribute_sum: Option<Var>,
}
