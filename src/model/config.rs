//! The model's configuration: which model (spec §4's switch table) and its hyper-parameters
//! (spec §6's defaults).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ops::contrastive::ContrastiveReduction;
use crate::ops::embedding::Pooling;
use crate::ops::hie::HieBackward;
use crate::{Error, Result};

/// The models of the paper's comparison and ablation (spec §4), all one code path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// X⁰ = Drop(LN(E_X + E_P)); one score pair from X; values X. No side information.
    SasRec,
    /// SASRec on X⁰ = Drop(LN(𝓕(E_X, A) + E_P)).
    SasRecF,
    /// NOVA: X⁰ = Drop(LN(E_X)); the scores' query and key from G = LN(𝓕(X, A, E_P)),
    /// recomputed in every layer; values from X only.
    Nova,
    /// DIF-SR: X⁰ = Drop(LN(E_X)); decoupled scores C_X, C_Aj (at d_a) and C_P fused in every
    /// layer; values from X only; plus the attribute-prediction loss.
    DifSr,
    /// ASIF (spec §3): ID stream X, fused stream h_A, position stream h_P, HIE and RSA.
    Asif,
    /// ASIF with λ = 0 (no RSA loss).
    AsifWithoutRsa,
    /// ASIF without HIE (h_A and h_P still propagated).
    AsifWithoutHie,
    /// ASIF without the position stream: E_P added to the fused input, C_P ≡ 0.
    AsifWithoutUp,
    /// ASIF with a pure attribute stream F⁰ = Drop(LN_f(A)) and a third score pair C_X.
    AsifWithoutFa,
}

impl ModelKind {
    pub const ALL: [ModelKind; 9] = [
        ModelKind::SasRec,
        ModelKind::SasRecF,
        ModelKind::Nova,
        ModelKind::DifSr,
        ModelKind::Asif,
        ModelKind::AsifWithoutRsa,
        ModelKind::AsifWithoutHie,
        ModelKind::AsifWithoutUp,
        ModelKind::AsifWithoutFa,
    ];

    /// The name used on the command line and in results files.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::SasRec => "sasrec",
            ModelKind::SasRecF => "sasrec_f",
            ModelKind::Nova => "nova",
            ModelKind::DifSr => "difsr",
            ModelKind::Asif => "asif",
            ModelKind::AsifWithoutRsa => "asif_wo_rsa",
            ModelKind::AsifWithoutHie => "asif_wo_hie",
            ModelKind::AsifWithoutUp => "asif_wo_up",
            ModelKind::AsifWithoutFa => "asif_wo_fa",
        }
    }

    /// What this kind switches on: the one place a model kind is matched (spec §4's switch
    /// table, `docs/model.md`). Every other decision reads these switches.
    pub fn switches(self) -> Switches {
        let asif = Switches {
            layer: LayerKind::Asif,
            fused_input: FusedInput::Fusion,
            position_stream: true,
            hie: true,
            rsa: true,
            id_scores: false,
            attribute_prediction: false,
        };
        let sasrec = Switches {
            layer: LayerKind::SasRec,
            fused_input: FusedInput::None,
            position_stream: false,
            hie: false,
            rsa: false,
            id_scores: false,
            attribute_prediction: false,
        };
        match self {
            ModelKind::SasRec => sasrec,
            ModelKind::SasRecF => Switches {
                fused_input: FusedInput::Fusion,
                ..sasrec
            },
            ModelKind::Nova => Switches {
                layer: LayerKind::Nova,
                fused_input: FusedInput::EveryLayer,
                ..sasrec
            },
            ModelKind::DifSr => Switches {
                layer: LayerKind::DifSr,
                fused_input: FusedInput::EveryLayer,
                attribute_prediction: true,
                ..sasrec
            },
            ModelKind::Asif => asif,
            ModelKind::AsifWithoutRsa => Switches { rsa: false, ..asif },
            ModelKind::AsifWithoutHie => Switches { hie: false, ..asif },
            ModelKind::AsifWithoutUp => Switches {
                fused_input: FusedInput::FusionWithPositions,
                position_stream: false,
                ..asif
            },
            ModelKind::AsifWithoutFa => Switches {
                fused_input: FusedInput::Attributes,
                id_scores: true,
                ..asif
            },
        }
    }

    /// Reads side information (attribute tables).
    pub fn uses_attributes(self) -> bool {
        self.switches().fused_input != FusedInput::None
    }
    /// Has the position stream h_P and the score pair C_P.
    pub fn position_stream(self) -> bool {
        self.switches().position_stream
    }
    /// Applies HIE in every layer.
    pub fn hie(self) -> bool {
        self.switches().hie
    }
    /// Adds λ·L_co (when λ > 0).
    pub fn rsa(self) -> bool {
        self.switches().rsa
    }
}

/// A model kind's row of the switch table ([`ModelKind::switches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    /// The layer the model stacks.
    pub layer: LayerKind,
    /// Where the fused input comes from: SASRec_F's X⁰, ASIF's F⁰.
    pub fused_input: FusedInput,
    /// The position stream h_P and its score pair C_P (ASIF layers).
    pub position_stream: bool,
    /// HIE in every layer (ASIF layers).
    pub hie: bool,
    /// λ·L_co in the loss (when λ > 0).
    pub rsa: bool,
    /// A third score pair C_X = (X W_q, X W_k) (`asif_wo_fa`, ASIF layers).
    pub id_scores: bool,
    /// DIF-SR's attribute-prediction heads and λ_aap·Σ_j L_attr,j in the loss.
    pub attribute_prediction: bool,
}

/// The layer a model stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// One stream X, one score pair (spec §2).
    SasRec,
    /// Three streams X, h_A, h_P and the dual-score attention (spec §3.2).
    Asif,
    /// One stream X; one score pair from G = LN(𝓕(X, A, E_P)), values from X (spec §4, NOVA).
    Nova,
    /// One stream X; decoupled scores C_X, C_Aj, C_P fused per layer, values from X (spec §4,
    /// DIF-SR).
    DifSr,
}

/// The fused input of a model: for a SASRec layer X⁰'s item term, for an ASIF layer F⁰.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedInput {
    /// No side information (SASRec: X⁰ = Drop(LN(E_X + E_P))).
    None,
    /// 𝓕(E_X, A) (the fusion's weights are built).
    Fusion,
    /// 𝓕(E_X, A) + E_P (`asif_wo_up`: no position stream).
    FusionWithPositions,
    /// A = Σ_j A_j alone (`asif_wo_fa`: no fusion weights).
    Attributes,
    /// No fused input: every layer fuses its ID state with the raw A_j and E_P itself (NOVA's
    /// embeddings, DIF-SR's score matrices; each layer owns its fusion weights).
    EveryLayer,
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = ModelKind::ALL.iter().map(|k| k.name()).collect();
                Error::Config(format!(
                    "unknown model `{s}`; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// The fusion function 𝓕 of the item and attribute embeddings (spec §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// E_X + Σ_j A_j (the default; the paper's example).
    Sum,
    /// Linear_{(1+m)d→d}([E_X; A_1; …; A_m]), computed as E_X W_0 + Σ_j A_j W_j + b.
    Concat,
    /// RecBole's VanillaAttention over the stacked vectors [E_X; A_1 … A_m]:
    /// Σ_k α_k x_k with α = softmax_k(w₂ᵀ ReLU(W₁ x_k + b₁)) (`ops::source_attention`, `ops::relu`).
    Gate,
}

impl FromStr for Fusion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sum" => Ok(Fusion::Sum),
            "concat" => Ok(Fusion::Concat),
            "gate" => Ok(Fusion::Gate),
            _ => Err(Error::Config(format!(
                "unknown fusion `{s}`; expected sum, concat or gate"
            ))),
        }
    }
}

/// RSA's reduction over positions (spec A8): `mean` (default) or eq. 9's literal `sum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RsaReduction {
    Mean,
    Sum,
}

impl From<RsaReduction> for ContrastiveReduction {
    fn from(r: RsaReduction) -> Self {
        match r {
            RsaReduction::Mean => ContrastiveReduction::MeanPerSequence,
            RsaReduction::Sum => ContrastiveReduction::Sum,
        }
    }
}

/// Pooling of a multi-token attribute (spec §1): `sum` (default) or `mean`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolingMode {
    Sum,
    Mean,
}

impl From<PoolingMode> for Pooling {
    fn from(p: PoolingMode) -> Self {
        match p {
            PoolingMode::Sum => Pooling::Sum,
            PoolingMode::Mean => Pooling::Mean,
        }
    }
}

/// HIE's backward (spec A7): Q constant (default) or the full thin-QR backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HieGradient {
    QConstant,
    FullQr,
}

impl From<HieGradient> for HieBackward {
    fn from(g: HieGradient) -> Self {
        match g {
            HieGradient::QConstant => HieBackward::QConstant,
            HieGradient::FullQr => HieBackward::FullQr,
        }
    }
}

/// Everything that defines a model except the data's sizes. `Default` is spec §6 with ASIF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub kind: ModelKind,
    pub fusion: Fusion,
    /// d: item, attribute and position embedding size.
    pub hidden_size: usize,
    /// h: heads (d_h = d/h).
    pub heads: usize,
    /// L: layers.
    pub layers: usize,
    /// n: the window (position rows).
    pub max_len: usize,
    /// FFN inner size.
    pub inner_size: usize,
    /// Input and hidden dropout.
    pub hidden_dropout: f32,
    /// Attention-probability dropout.
    pub attention_dropout: f32,
    /// λ of L = L_ce + λ·L_co (ignored where the model has no RSA).
    pub rsa_lambda: f32,
    pub rsa_reduction: RsaReduction,
    /// `rsa_dedup` (spec §3.4): drop from each RSA row's and column's negatives the positions
    /// whose item has the same attribute tokens (identical a rows, false negatives). Off by
    /// default (the paper's Y = I); absent in configs written before it existed.
    #[serde(default)]
    pub rsa_dedup: bool,
    /// r: HIE bases.
    pub hie_rank: usize,
    /// A6: keep padding rows in HIE (`false`: masked, the default).
    pub hie_keep_padding: bool,
    /// A7: HIE's backward.
    pub hie_gradient: HieGradient,
    pub layer_norm_eps: f32,
    /// Standard deviation of the N(0, σ) initialisation of weights and embeddings.
    pub init_std: f32,
    pub pooling: PoolingMode,
    /// Tokens kept per item and attribute (a token_seq attribute with more is cut).
    pub attribute_width: usize,
    /// Seeds initialisation and every dropout mask.
    pub seed: u64,
    /// d_a: DIF-SR's attribute embedding width (d_a/h per head; other kinds embed attributes
    /// at d). Absent in configs written before DIF-SR existed.
    #[serde(default = "default_attribute_hidden_size")]
    pub attribute_hidden_size: usize,
    /// λ_aap of DIF-SR's L = L_ce + λ_aap Σ_j L_attr,j (ignored by other kinds).
    #[serde(default = "default_attribute_prediction_lambda")]
    pub attribute_prediction_lambda: f32,
}

fn default_attribute_hidden_size() -> usize {
    64
}

fn default_attribute_prediction_lambda() -> f32 {
    10.0
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            kind: ModelKind::Asif,
            fusion: Fusion::Sum,
            hidden_size: 256,
            heads: 4,
            layers: 3,
            max_len: 50,
            inner_size: 256,
            hidden_dropout: 0.5,
            attention_dropout: 0.3,
            rsa_lambda: 10.0,
            rsa_reduction: RsaReduction::Mean,
            rsa_dedup: false,
            hie_rank: 16,
            hie_keep_padding: false,
            hie_gradient: HieGradient::QConstant,
            layer_norm_eps: 1e-12,
            init_std: 0.02,
            pooling: PoolingMode::Sum,
            attribute_width: 8,
            seed: 2024,
            attribute_hidden_size: default_attribute_hidden_size(),
            attribute_prediction_lambda: default_attribute_prediction_lambda(),
        }
    }
}

/// The data's sizes a model is built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataShape {
    /// |V| = real items + 1 (the pad row 0).
    pub n_item_ids: usize,
    /// |A_j| per attribute type (token ids + 1 for the pad 0); empty without side information.
    pub attribute_vocab: Vec<usize>,
}

impl ModelConfig {
    /// The λ actually applied: 0 where the model has no RSA.
    pub fn effective_rsa_lambda(&self) -> f32 {
        if self.kind.rsa() {
            self.rsa_lambda
        } else {
            0.0
        }
    }

    /// The λ_aap actually applied: 0 where the model has no attribute prediction.
    pub fn effective_attribute_prediction_lambda(&self) -> f32 {
        if self.kind.switches().attribute_prediction {
            self.attribute_prediction_lambda
        } else {
            0.0
        }
    }

    /// The width of the attribute embedding tables: d_a for DIF-SR, d otherwise.
    pub fn attribute_table_width(&self) -> usize {
        if self.kind.switches().layer == LayerKind::DifSr {
            self.attribute_hidden_size
        } else {
            self.hidden_size
        }
    }

    /// Checks that the model can be built and run on the kernels; a typed error otherwise.
    pub fn validate(&self, data: &DataShape) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.hidden_size == 0 || self.heads == 0 || !self.hidden_size.is_multiple_of(self.heads)
        {
            return bad(format!(
                "hidden size d = {} must be a positive multiple of heads = {}",
                self.hidden_size, self.heads
            ));
        }
        let head_dim = self.hidden_size / self.heads;
        if head_dim > crate::ops::attention::MAX_HEAD_DIM {
            return bad(format!(
                "head width d/h = {head_dim} exceeds the attention kernel's {}",
                crate::ops::attention::MAX_HEAD_DIM
            ));
        }
        let max_n = crate::ops::attention::MAX_SEQ_LEN;
        if self.max_len == 0 || self.max_len > max_n {
            return bad(format!(
                "max length n = {} must be in 1..={max_n} (the attention kernel's limit)",
                self.max_len
            ));
        }
        if self.layers == 0 || self.inner_size == 0 {
            return bad("layers and inner size must be positive".into());
        }
        for (name, p) in [
            ("hidden dropout", self.hidden_dropout),
            ("attention dropout", self.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        if !(self.rsa_lambda.is_finite() && self.rsa_lambda >= 0.0) {
            return bad(format!("λ must be finite and ≥ 0, got {}", self.rsa_lambda));
        }
        if !(self.layer_norm_eps > 0.0 && self.init_std > 0.0) {
            return bad("layer-norm eps and init std must be positive".into());
        }
        if self.kind.switches().layer == LayerKind::DifSr {
            let d_a = self.attribute_hidden_size;
            if d_a == 0 || !d_a.is_multiple_of(self.heads) {
                return bad(format!(
                    "DIF-SR's attribute width d_a = {d_a} must be a positive multiple of heads = {}",
                    self.heads
                ));
            }
            let lambda = self.attribute_prediction_lambda;
            if !(lambda.is_finite() && lambda >= 0.0) {
                return bad(format!("λ_aap must be finite and ≥ 0, got {lambda}"));
            }
        }
        if self.kind.hie() {
            let max_r = crate::ops::hie::MAX_RANK;
            if self.hie_rank == 0 || self.hie_rank > max_r || self.hie_rank > self.max_len {
                return bad(format!(
                    "HIE rank r = {} must be in 1..=min(n = {}, {max_r})",
                    self.hie_rank, self.max_len
                ));
            }
            if self.hie_rank > self.hidden_size {
                return bad(format!(
                    "HIE rank r = {} exceeds d = {} (thin QR needs r ≤ d)",
                    self.hie_rank, self.hidden_size
                ));
            }
        }
        if data.n_item_ids < 2 {
            return bad(format!(
                "the dataset has {} item ids; need at least one item besides the pad",
                data.n_item_ids
            ));
        }
        if self.kind.uses_attributes() {
            if data.attribute_vocab.is_empty() {
                return bad(format!(
                    "model {} needs side information, but the dataset has no token attribute \
                     (load one, e.g. `class` for ml-100k)",
                    self.kind
                ));
            }
            if self.attribute_width == 0 {
                return bad("attribute width must be positive".into());
            }
            if let Some(v) = data.attribute_vocab.iter().find(|&&v| v < 2) {
                return bad(format!("an attribute with {v} token ids has no real token"));
            }
            // NOVA's and DIF-SR's fusions also take the positions as a source.
            let positions = usize::from(self.kind.switches().fused_input == FusedInput::EveryLayer);
            let sources = data.attribute_vocab.len() + 1 + positions;
            if self.fusion == Fusion::Gate && sources > crate::ops::source_attention::MAX_SOURCES {
                return bad(format!(
                    "fusion gate over {sources} sources (items, {} attribute types{}) exceeds \
                     the kernel's {}",
                    data.attribute_vocab.len(),
                    if positions == 1 { " and positions" } else { "" },
                    crate::ops::source_attention::MAX_SOURCES
                ));
            }
        }
        Ok(())
    }
}
