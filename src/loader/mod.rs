//! Loading weights: Hugging Face folders (safetensors) and GGUF files, memory-mapped.

pub mod gguf;
pub mod hf;
pub mod safetensors;

use crate::error::{Error, Result};
use deepseek_tensor::{DType, Layout, MatRef};
use memmap2::Mmap;
use rayon::prelude::*;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Bytes a tensor lives in: a read-only memory map of a file, or memory we own.
#[derive(Debug)]
pub enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// Memory-map a whole file read-only.
pub fn map_file(path: &Path) -> Result<Arc<Storage>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only. Weight files are not expected to change while a model is
    // loaded; if another process truncates one, reads may fault, as with every mmap-based loader.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Arc::new(Storage::Mapped(map)))
}

/// A tensor in its stored type, borrowing bytes from a shared [`Storage`].
///
/// `shape` is in row-major order as Hugging Face writes it: `[rows, cols]` for a matrix.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    storage: Arc<Storage>,
    offset: usize,
    len: usize,
    layout: Layout,
}

impl Tensor {
    pub fn new(
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        storage: Arc<Storage>,
        offset: usize,
        len: usize,
    ) -> Result<Tensor> {
        let total = storage.bytes().len();
        if offset.checked_add(len).is_none_or(|end| end > total) {
            return Err(Error::tensor(
                &name,
                format!(
                    "data {offset}..{} lies outside its {total}-byte file",
                    offset.saturating_add(len)
                ),
            ));
        }
        Ok(Tensor {
            name,
            dtype,
            shape,
            storage,
            offset,
            len,
            layout: Layout::Rows,
        })
    }

    pub fn from_f32(name: &str, shape: Vec<usize>, data: &[f32]) -> Tensor {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let len = bytes.len();
        Tensor {
            name: name.to_string(),
            dtype: DType::F32,
            shape,
            storage: Arc::new(Storage::Owned(bytes)),
            offset: 0,
            len,
            layout: Layout::Rows,
        }
    }

    /// How the bytes are ordered.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// This Q4_0, Q4_K, Q5_K or Q6_K matrix repacked in groups of 8 rows for decode
    /// ([`Layout::X8`]), in memory of its own; `None` for other types, other layouts and row
    /// counts not a multiple of 8. The
    /// mapped file pages it was read from are released (they are not read again), so the
    /// process holds the tensor's bytes once.
    pub fn pack_x8(&self) -> Result<Option<Tensor>> {
        let p = self.pack_x8_in(None)?;
        if p.is_some() {
            self.release_mapped_pages();
        }
        Ok(p)
    }

    /// Drop this tensor's pages of a mapped file from the process, for a tensor that is no
    /// longer read (a later read would fault them in again, with the same bytes).
    pub fn release_mapped_pages(&self) {
        if let Storage::Mapped(map) = &*self.storage {
            // Whole pages inside the tensor's bytes only.
            let page = 4096;
            let start = self.offset.next_multiple_of(page);
            let end = (self.offset + self.len) / page * page;
            if end > start {
                // SAFETY: the map is a read-only, private mapping of a file: dropping its pages
                // only makes the next read (if any) fault them in again from the file, with the
                // same bytes, so no reference into the map sees a change. The range lies inside
                // the map (this tensor's bytes, checked at construction).
                let r = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
                // A refusal only costs memory.
                let _ = r;
            }
        }
    }

    /// [`Tensor::pack_x8`] with its pieces run one by one in `pool` (else in parallel in the
    /// global pool), and
    /// the mapped pages left in place (see [`Tensor::release_mapped_pages`]).
    pub fn pack_x8_in(&self, pool: Option<&rayon::ThreadPool>) -> Result<Option<Tensor>> {
        let m = self.mat()?;
        if !deepseek_tensor::packable_x8(&m) {
            return Ok(None);
        }
        // A megabyte of groups at a time. In `pool`, each piece is one job that packs it on
        // one thread and never waits inside the pool: a worker that waits on a join may take
        // up any job queued from outside, and a job that never returns (the server's
        // scheduler loop) taken up that way would leave a waiting packing job stuck behind it.
        // A forward pass sharing the pool waits at most one piece.
        let rb = m.row_bytes();
        let piece = rb * 8 * ((1 << 20) / (rb * 8)).max(1);
        let mut packed = vec![0u8; self.len];
        let pack = |(i, out): (usize, &mut [u8])| {
            let src = &m.data[i * piece..i * piece + out.len()];
            MatRef::new(m.dtype, out.len() / rb, m.cols, src)
                .and_then(|sub| deepseek_tensor::pack_x8_into(&sub, out))
        };
        match pool {
            Some(p) => packed
                .chunks_mut(piece)
                .enumerate()
                .try_for_each(|c| p.install(|| pack(c))),
            None => packed.par_chunks_mut(piece).enumerate().try_for_each(pack),
        }
        .map_err(|e| Error::tensor(&self.name, e.to_string()))?;
        let len = packed.len();
        Ok(Some(Tensor {
            name: self.name.clone(),
            dtype: self.dtype,
            shape: self.shape.clone(),
            storage: Arc::new(Storage::Owned(packed)),
            offset: 0,
            len,
            layout: Layout::X8,
        }))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.offset..self.offset + self.len]
    }

    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// View as a matrix of `shape[0]` rows (a 1-D tensor is one row).
    pub fn mat(&self) -> Result<MatRef<'_>> {
        let (rows, cols) = match self.shape.as_slice() {
            [c] => (1, *c),
            [r, c] => (*r, *c),
            s => {
                return Err(Error::tensor(
                    &self.name,
                    format!("expected a matrix, found shape {s:?}"),
                ))
            }
        };
        match self.layout {
            Layout::Rows => MatRef::new(self.dtype, rows, cols, self.bytes()),
            Layout::X8 => MatRef::packed_x8(self.dtype, rows, cols, self.bytes()),
        }
        .map_err(|e| Error::tensor(&self.name, e.to_string()))
    }

    /// All values as f32 (for small tensors such as norms).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.n_elements()];
        deepseek_tensor::dequantize(self.dtype, self.bytes(), &mut out)
            .map_err(|e| Error::tensor(&self.name, e.to_string()))?;
        Ok(out)
    }
}

/// A set of named tensors: what a loader hands the model.
pub trait TensorSource {
    /// The tensor, or `None` when the file has no tensor of that name.
    fn get(&self, name: &str) -> Option<Tensor>;
    /// Where the tensors come from, for messages.
    fn describe(&self) -> String;
}

/// A model ready to run: decoder, tokenizer and generation defaults.
pub struct LoadedModel {
    pub model: crate::model::Model,
    pub tokenizer: deepseek_text::Tokenizer,
    pub generation: crate::model::GenerationConfig,
    /// Bytes of the weight files.
    pub file_bytes: u64,
    pub path: std::path::PathBuf,
    /// The 8-row packing of the weights, still running in the background when the load
    /// returned (GGUF files on CPUs with AVX-512 VNNI, unless `no_repack`): the model is usable
    /// meanwhile, with the same results, and decodes faster once it is done.
    pub repacking: Option<crate::model::Repacking>,
}

impl LoadedModel {
    /// Every token id that ends generation: the generation config's, the model config's and
    /// the tokenizer's end-of-sequence tokens, without repeats.
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut ids = self.generation.eos_token_ids.clone();
        for id in self
            .model
            .config
            .eos_token_ids
            .iter()
            .chain(&self.tokenizer.eos_ids())
        {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        ids
    }
}

/// Options that change how a model is loaded.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// A `tokenizer.json` to use instead of the model's own tokenizer.
    pub tokenizer: Option<std::path::PathBuf>,
    /// Keep every weight in its file layout: no repacking of Q4_0, Q4_K, Q5_K and Q6_K matrices in
    /// groups of 8 rows for decode (which is done where the CPU has AVX-512 VNNI).
    pub no_repack: bool,
    /// The thread pool the background repacking runs its pieces in: the one the forward
    /// passes use, so that the two take turns instead of competing for cores (else the
    /// global pool).
    pub pool: Option<Arc<rayon::ThreadPool>>,
}

/// What a model path points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    HfFolder,
    Gguf,
}

/// Tell a Hugging Face folder from a GGUF file, or say why the path is neither.
pub fn detect_format(path: &Path) -> Result<Format> {
    if path.is_dir() {
        return Ok(Format::HfFolder);
    }
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    let mut magic = [0u8; 4];
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    use std::io::Read;
    if f.read_exact(&mut magic).is_ok() && &magic == b"GGUF" {
        return Ok(Format::Gguf);
    }
    Err(Error::Invalid(format!(
        "{}: expected a Hugging Face model folder or a GGUF file, found a file that starts with {:?}",
        path.display(),
        String::from_utf8_lossy(&magic)
    )))
}

/// Load a tokenizer only (no weights): from a Hugging Face folder, a GGUF file's metadata, or
/// an explicit `tokenizer.json`.
pub fn load_tokenizer(path: &Path, opts: &LoadOptions) -> Result<deepseek_text::Tokenizer> {
    if let Some(t) = &opts.tokenizer {
        return Ok(deepseek_text::Tokenizer::from_file(t)?);
    }
    match detect_format(path)? {
        Format::HfFolder => Ok(deepseek_text::Tokenizer::from_hf_dir(path)?),
        Format::Gguf => gguf::tokenizer(&deepseek_gguf::GgufFile::open(path)?),
    }
}

/// Load a model from a Hugging Face folder or a GGUF file.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    match detect_format(path)? {
        Format::HfFolder => {
            let tokenizer = load_tokenizer(path, opts)?;
            let m = hf::load_dir(path)?;
            Ok(LoadedModel {
                model: m.model,
                tokenizer,
                generation: m.generation,
                file_bytes: m.file_bytes,
                path: path.to_path_buf(),
                repacking: None,
            })
        }
        Format::Gguf => {
            let (file, model, generation, file_bytes) = gguf::load_model(path)?;
            let repacking = (!opts.no_repack && deepseek_tensor::x8_fast())
                .then(|| model.repack_x8_background(opts.pool.clone()))
                .transpose()?;
            let tokenizer = match &opts.tokenizer {
                Some(t) => deepseek_text::Tokenizer::from_file(t)?,
                None => gguf::tokenizer(&file)?,
            };
            Ok(LoadedModel {
                model,
                tokenizer,
                generation,
                file_bytes,
                path: path.to_path_buf(),
                repacking,
            })
        }
    }
}
