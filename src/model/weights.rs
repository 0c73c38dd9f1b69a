//! Checkpoint I/O of a model's weights: safetensors files (names as the parameters', f32,
//! row-major) with the model config and data shape as JSON metadata, written atomically.
use std::collections::HashMap;
use std::path::Path;

use crate::checkpoint::{write_safetensors, SafetensorsFile};
use crate::{Device, Result, Tensor};

use super::parameters::Parameter;
use super::{DataShape, ModelConfig};

/// Writes `parameters` and the metadata to `path`.
pub(super) fn save(
    path: &Path,
    config: &ModelConfig,
    data: &DataShape,
    parameters: &[Parameter],
) -> Result<()> {
    let mut metadata = HashMap::new();
    metadata.insert(
        "model_config".to_string(),
        serde_json::to_string(config).expect("config serialises"),
    );
    metadata.insert(
        "data_shape".to_string(),
        serde_json::to_string(data).expect("shape serialises"),
    );
    let mut tensors = Vec::new();
    for p in parameters {
        tensors.push((p.name.clone(), p.value.shape().to_vec(), p.value.to_vec()?));
    }
    write_safetensors(path, &tensors, metadata)
}

/// Reads one tensor per parameter (by its name, with its shape) from `path` onto `device`.
pub(super) fn load(path: &Path, parameters: &[Parameter], device: &Device) -> Result<Vec<Tensor>> {
    let file = SafetensorsFile::read(path)?;
    parameters
        .iter()
        .map(|p| {
            let values = file.tensor(&p.name, p.value.shape())?;
            Tensor::from_vec(device, p.value.shape(), values)
        })
        .collect()
}
