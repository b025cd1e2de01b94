//! Hugging Face model folders: `config.json`, `generation_config.json`, safetensors weights.

use super::safetensors::SafetensorsSet;
use crate::error::{Error, Result};
use crate::model::{GenerationConfig, Model, ModelConfig, Naming};
use std::path::Path;

/// A model folder's weights and configuration, loaded and checked.
pub struct HfModel {
    pub model: Model,
    pub generation: GenerationConfig,
    /// Bytes of the weight files.
    pub file_bytes: u64,
}

/// Load `config.json`, `generation_config.json` (optional) and the safetensors weights of `dir`.
/// Every expected tensor is checked for presence and shape before this returns.
pub fn load_dir(dir: &Path) -> Result<HfModel> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a model folder"),
        ));
    }
    let config = ModelConfig::from_hf_config(&dir.join("config.json"))?;
    let gen_path = dir.join("generation_config.json");
    let generation = if gen_path.exists() {
        GenerationConfig::from_file(&gen_path)?
    } else {
        GenerationConfig::default()
    };
    let weights = SafetensorsSet::open_dir(dir)?;
    let model = Model::load(config, &weights, Naming::HuggingFace)?;
    Ok(HfModel {
        model,
        generation,
        file_bytes: weights.total_bytes(),
    })
}
