//! safetensors files, memory-mapped; sharded checkpoints through `model.safetensors.index.json`.

use super::{map_file, Tensor, TensorSource};
use crate::error::{read_json, Error, Result};
use deepseek_tensor::DType;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The tensors of one or more safetensors files, by name.
pub struct SafetensorsSet {
    tensors: HashMap<String, Tensor>,
    files: Vec<PathBuf>,
    total_bytes: u64,
}

fn convert_dtype(d: safetensors::Dtype) -> Option<DType> {
    match d {
        safetensors::Dtype::F32 => Some(DType::F32),
        safetensors::Dtype::F16 => Some(DType::F16),
        safetensors::Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// Parse one safetensors file into tensors that borrow its memory map.
pub fn read_file(path: &Path) -> Result<Vec<Tensor>> {
    let storage = map_file(path)?;
    let bytes = storage.bytes();
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        msg: format!("not a valid safetensors file: {e}"),
    })?;
    let base = bytes.as_ptr() as usize;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = convert_dtype(view.dtype()).ok_or_else(|| Error::Weights {
            path: path.to_path_buf(),
            msg: format!(
                "tensor `{name}`: unsupported dtype {:?} (expected BF16, F16 or F32)",
                view.dtype()
            ),
        })?;
        let data = view.data();
        let offset = data.as_ptr() as usize - base;
        out.push(Tensor::new(
            name,
            dtype,
            view.shape().to_vec(),
            Arc::clone(&storage),
            offset,
            data.len(),
        )?);
    }
    Ok(out)
}

impl SafetensorsSet {
    /// Open the weights of a Hugging Face folder: `model.safetensors`, or the shards named by
    /// `model.safetensors.index.json`'s `weight_map`.
    pub fn open_dir(dir: &Path) -> Result<SafetensorsSet> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        if index.exists() {
            Self::open_index(dir, &index)
        } else if single.exists() {
            let tensors = read_file(&single)?;
            let total_bytes = std::fs::metadata(&single)
                .map_err(|e| Error::io(&single, e))?
                .len();
            Ok(SafetensorsSet {
                tensors: tensors.into_iter().map(|t| (t.name.clone(), t)).collect(),
                files: vec![single],
                total_bytes,
            })
        } else {
            Err(Error::Weights {
                path: dir.to_path_buf(),
                msg: "no weights: expected model.safetensors or model.safetensors.index.json"
                    .into(),
            })
        }
    }

    fn open_index(dir: &Path, index: &Path) -> Result<SafetensorsSet> {
        let v = read_json(index)?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::config(index, "weight_map", "missing or not an object"))?;
        // Group tensor names by shard, following the map tensor by tensor.
        let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| {
                Error::config(
                    index,
                    &format!("weight_map.{name}"),
                    format!("expected a file name, found {file}"),
                )
            })?;
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(Error::config(
                    index,
                    &format!("weight_map.{name}"),
                    format!("expected a file in the same folder, found {file:?}"),
                ));
            }
            by_file
                .entry(file.to_string())
                .or_default()
                .push(name.clone());
        }
        let mut tensors = HashMap::new();
        let mut files = Vec::new();
        let mut total_bytes = 0u64;
        for (file, names) in by_file {
            let path = dir.join(&file);
            let mut found: HashMap<String, Tensor> = read_file(&path)?
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect();
            total_bytes += std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, e))?
                .len();
            for name in names {
                let t = found.remove(&name).ok_or_else(|| Error::Weights {
                    path: path.clone(),
                    msg: format!("tensor `{name}` is listed for this file in {} but the file does not hold it", index.display()),
                })?;
                tensors.insert(name, t);
            }
            files.push(path);
        }
        Ok(SafetensorsSet {
            tensors,
            files,
            total_bytes,
        })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Bytes of all weight files together.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }
}

impl TensorSource for SafetensorsSet {
    fn get(&self, name: &str) -> Option<Tensor> {
        self.tensors.get(name).cloned()
    }
    fn describe(&self) -> String {
        match self.files.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} safetensors shards in {}",
                many.len(),
                many[0].parent().unwrap_or(Path::new(".")).display()
            ),
        }
    }
}
