//! safetensors files (the format Python opens with `safetensors.torch.load_file`), written
//! atomically: to a temporary file in the same folder, flushed to disk, then renamed over the
//! target, so a crash leaves either the old file or the new one, never half of one.
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

pub use crate::files::replace_file;
use crate::{Error, Result};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn checkpoint_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes f32 tensors `(name, shape, values)` and string metadata to `path`, atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::new();
    for ((name, shape, _), data) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.clone(), data)
            .map_err(|e| checkpoint_error(path, format!("tensor {name}: {e:?}")))?;
        views.push((name.clone(), view));
    }
    let serialized = safetensors::serialize(views, &Some(metadata))
        .map_err(|e| checkpoint_error(path, format!("serialising: {e:?}")))?;
    write_atomically(path, &serialized)
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it, and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if path.file_name().is_none() {
        return Err(checkpoint_error(path, "not a file path"));
    }
    replace_file(path, bytes).map_err(io(path))
}

/// A safetensors file read into memory.
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl SafetensorsFile {
    pub fn read(path: &Path) -> Result<SafetensorsFile> {
        let bytes = fs::read(path).map_err(io(path))?;
        SafeTensors::deserialize(&bytes)
            .map_err(|e| checkpoint_error(path, format!("not a safetensors file: {e:?}")))?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            bytes,
        })
    }

    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("checked at read")
    }

    /// The string metadata.
    pub fn metadata(&self) -> Result<HashMap<String, String>> {
        let (_, metadata) = SafeTensors::read_metadata(&self.bytes)
            .map_err(|e| checkpoint_error(&self.path, format!("{e:?}")))?;
        Ok(metadata.metadata().clone().unwrap_or_default())
    }

    /// The f32 values of tensor `name`, which must have `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let parsed = self.parsed();
        let view = parsed
            .tensor(name)
            .map_err(|_| checkpoint_error(&self.path, format!("no tensor `{name}`")))?;
        if view.dtype() != Dtype::F32 || view.shape() != shape {
            return Err(checkpoint_error(
                &self.path,
                format!(
                    "tensor `{name}` is {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                ),
            ));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
