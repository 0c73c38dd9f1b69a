//! A model's inputs: a batch uploaded to a device, the attribute-set ids of RSA's dedup, and
//! the dataset glue (which token attributes a model reads, and the sizes it is built for).
use std::collections::HashMap;

use crate::data::{Batch, Dataset, TokenTable};
use crate::{Device, Error, IndexTensor, Result};

use super::{DataShape, ModelConfig};

/// A batch's inputs on a device: item ids `[B, n]`, lengths L_b `[B]`, targets `[B]` and, per
/// attribute type, the tokens `[B, n, width]` and the target item's tokens `[B, width]`.
#[derive(Debug, Clone)]
pub struct ModelInputs {
    pub items: IndexTensor,
    pub lengths: IndexTensor,
    pub targets: IndexTensor,
    pub attributes: Vec<IndexTensor>,
    /// Per attribute type, the target item's tokens `[B, width]` (0-padded): DIF-SR's
    /// attribute-prediction targets. Empty where no model reads them (checked where one does).
    pub target_attributes: Vec<IndexTensor>,
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
        let target_attributes = tables
            .iter()
            .map(|table| {
                let mut out = vec![0i32; b * width];
                for (row, &item) in batch.targets.iter().enumerate() {
                    if item == 0 || item as usize >= table.n_rows() {
                        continue;
                    }
                    let t = table.tokens(item);
                    for (slot, &token) in out[row * width..(row + 1) * width].iter_mut().zip(t) {
                        *slot = token as i32;
                    }
                }
                IndexTensor::from_vec(device, &[b, width], out)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelInputs {
            items: IndexTensor::from_vec(device, &[b, n], items)?,
            lengths: IndexTensor::from_vec(device, &[b], to_i32(&batch.lengths))?,
            targets: IndexTensor::from_vec(device, &[b], to_i32(&batch.targets))?,
            attributes,
            target_attributes,
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

    /// Checks these inputs against a model built from `config` for `data`.
    pub(super) fn check(&self, config: &ModelConfig, data: &DataShape) -> Result<()> {
        let inputs = self;
        let b = inputs.lengths.len();
        let n = config.max_len;
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
        if config.kind.uses_attributes() {
            let m = data.attribute_vocab.len();
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
        if config.effective_attribute_prediction_lambda() > 0.0 {
            let m = data.attribute_vocab.len();
            if inputs.target_attributes.len() != m {
                return bad(format!(
                    "{} target attribute blocks for {} with {m} attribute types (its \
                     attribute-prediction loss needs the target items' tokens)",
                    inputs.target_attributes.len(),
                    config.kind
                ));
            }
            for t in &inputs.target_attributes {
                if t.shape().len() != 2 || t.shape()[0] != b {
                    return bad(format!(
                        "target attribute tokens must be [B = {b}, width], got {:?}",
                        t.shape()
                    ));
                }
            }
        }
        Ok(())
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
