//! Writing GGUF files (version 3), streaming tensor data one tensor at a time.

use crate::error::GgufError;
use crate::value::{value_type, Value};
use crate::{DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use deepseek_tensor::DType;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The version written.
const WRITE_VERSION: u32 = 3;

/// One tensor to write: its name, dimensions (ggml order, ne0 first) and type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// The tensor's name.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` (ne0) is the contiguous (column) dimension.
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: DType,
}

impl TensorSpec {
    /// A spec from its parts.
    pub fn new(name: impl Into<String>, dims: Vec<u64>, dtype: DType) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dims,
            dtype,
        }
    }

    /// Number of data bytes for this shape and type, or an explanation of why it is invalid.
    pub fn byte_size(&self) -> Result<u64, String> {
        let name = &self.name;
        let dtype = self.dtype;
        if self.dims.is_empty() || self.dims.len() > MAX_DIMS {
            return Err(format!(
                "tensor {name:?}: expected 1 to {MAX_DIMS} dimensions, found {}",
                self.dims.len()
            ));
        }
        if let Some(d) = self.dims.iter().find(|&&d| d > i64::MAX as u64) {
            return Err(format!(
                "tensor {name:?}: expected dimensions of at most {}, found {d}",
                i64::MAX
            ));
        }
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                format!(
                    "tensor {name:?}: dimensions {:?}: expected an element count that fits in 64 bits, found an overflow",
                    self.dims
                )
            })?;
        let block = dtype.block_size() as u64;
        let cols = self.dims[0];
        if !cols.is_multiple_of(block) {
            return Err(format!(
                "tensor {name:?}: {dtype} stores whole blocks of {block} elements: expected ne0 to be a multiple of {block}, found {cols}"
            ));
        }
        let rows: u64 = self.dims[1..].iter().product();
        (cols / block)
            .checked_mul(dtype.block_bytes() as u64)
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| {
                format!(
                    "tensor {name:?}: dimensions {:?} of {dtype}: expected a byte size that fits in 64 bits, found an overflow",
                    self.dims
                )
            })
    }
}

/// A validated description of a GGUF file to write. See [`GgufWriter::create`].
///
/// ```no_run
/// # use deepseek_gguf::{GgufWriter, TensorSpec, Value};
/// # use deepseek_tensor::DType;
/// # fn main() -> Result<(), deepseek_gguf::GgufError> {
/// let meta = vec![("general.architecture".to_string(), Value::String("llama".into()))];
/// let specs = vec![TensorSpec::new("a", vec![4, 2], DType::F32)];
/// let mut sink = GgufWriter::new(meta, specs, 32)?.create(std::path::Path::new("out.gguf"))?;
/// sink.write_tensor("a", &[0u8; 32])?;
/// sink.finish()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorSpec>,
    sizes: Vec<u64>,
    alignment: u64,
}

impl GgufWriter {
    /// Validates a file's contents: unique keys and tensor names, homogeneous arrays, valid
    /// shapes, and a power-of-two `alignment`. The file is written as version 3. If
    /// `alignment` is not 32, `general.alignment` is added to the metadata (when present, it
    /// must equal `alignment`).
    pub fn new(
        mut metadata: Vec<(String, Value)>,
        tensors: Vec<TensorSpec>,
        alignment: u64,
    ) -> Result<Self, GgufError> {
        let invalid = |message: String| GgufError::InvalidSpec { message };
        if !alignment.is_power_of_two() || alignment > u64::from(u32::MAX) {
            return Err(invalid(format!(
                "alignment: expected a power of two that fits in a u32, found {alignment}"
            )));
        }
        let mut keys = HashSet::new();
        for (key, value) in &metadata {
            if !keys.insert(key.as_str()) {
                return Err(invalid(format!(
                    "duplicate metadata key {key:?}: expected each key once"
                )));
            }
            check_value(key, value, 0).map_err(invalid)?;
        }
        match metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, v)) if *v != Value::U32(alignment as u32) => {
                return Err(invalid(format!(
                    "metadata key \"general.alignment\": expected u32 {alignment} (the alignment given), found {}",
                    v.describe()
                )));
            }
            Some(_) => {}
            None if alignment != DEFAULT_ALIGNMENT => {
                metadata.push((
                    "general.alignment".to_string(),
                    Value::U32(alignment as u32),
                ));
            }
            None => {}
        }
        let mut names = HashSet::new();
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in &tensors {
            if !names.insert(t.name.as_str()) {
                return Err(invalid(format!(
                    "duplicate tensor name {:?}: expected each name once",
                    t.name
                )));
            }
            sizes.push(t.byte_size().map_err(invalid)?);
        }
        Ok(GgufWriter {
            metadata,
            tensors,
            sizes,
            alignment,
        })
    }

    /// The metadata that will be written (including any added `general.alignment`).
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Creates `path` + `.tmp`, writes the header (with every tensor's offset computed) and
    /// returns the sink that takes the tensor data. The file appears under `path` only when
    /// [`GgufTensorSink::finish`] succeeds.
    pub fn create(self, path: &Path) -> Result<GgufTensorSink, GgufError> {
        let tmp_path = tmp_path_for(path);
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut header, key);
            header.extend_from_slice(&value.gguf_type().to_le_bytes());
            put_value(&mut header, value);
        }
        let mut offset = 0u64;
        for (t, &size) in self.tensors.iter().zip(&self.sizes) {
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.dtype.ggml_type().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = offset
                .checked_add(size)
                .and_then(|o| o.checked_next_multiple_of(self.alignment))
                .ok_or_else(|| GgufError::InvalidSpec {
                    message: format!(
                        "tensor {:?}: expected the total data size to fit in 64 bits, found an overflow",
                        t.name
                    ),
                })?;
        }
        let padded = (header.len() as u64).next_multiple_of(self.alignment);
        header.resize(padded as usize, 0);

        let file = File::create(&tmp_path).map_err(|source| GgufError::Io {
            path: tmp_path.clone(),
            op: "create",
            source,
        })?;
        let mut sink = GgufTensorSink {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            path: path.to_path_buf(),
            tmp_path,
            tensors: self.tensors,
            sizes: self.sizes,
            alignment: self.alignment,
            next: 0,
            written: padded,
        };
        sink.write_all(&header, "write header")?;
        Ok(sink)
    }
}

/// Receives tensor data in spec order, then [`finish`](GgufTensorSink::finish)es the file.
///
/// Dropping a sink without finishing it deletes the temporary file.
#[derive(Debug)]
pub struct GgufTensorSink {
    out: Option<BufWriter<File>>,
    path: PathBuf,
    tmp_path: PathBuf,
    tensors: Vec<TensorSpec>,
    sizes: Vec<u64>,
    alignment: u64,
    next: usize,
    written: u64,
}

impl GgufTensorSink {
    /// Writes the data of the next tensor. `name` must be the next tensor in spec order and
    /// `data` exactly its size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        let Some(spec) = self.tensors.get(self.next) else {
            return Err(self.error(format!(
                "tensor {name:?}: expected no more tensors, all {} were written",
                self.tensors.len()
            )));
        };
        if spec.name != name {
            return Err(self.error(format!(
                "expected tensor {:?} (number {} in spec order), found {name:?}",
                spec.name, self.next
            )));
        }
        let size = self.sizes[self.next];
        if data.len() as u64 != size {
            return Err(self.error(format!(
                "tensor {name:?} ({} {:?}): expected {size} bytes, found {}",
                spec.dtype,
                spec.dims,
                data.len()
            )));
        }
        self.write_all(data, "write tensor data")?;
        let pad = self.written.next_multiple_of(self.alignment) - self.written;
        self.write_all(&vec![0u8; pad as usize], "write padding")?;
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor was written, flushes, syncs to disk and renames the temporary
    /// file to the final path.
    pub fn finish(mut self) -> Result<(), GgufError> {
        if self.next != self.tensors.len() {
            return Err(self.error(format!(
                "expected all {} tensors to be written, found {} (next missing: {:?})",
                self.tensors.len(),
                self.next,
                self.tensors[self.next].name
            )));
        }
        let Some(out) = self.out.take() else {
            return Err(self.error("the file was closed after an earlier error".to_string()));
        };
        let tmp = self.tmp_path.clone();
        let io = |op: &'static str, path: &Path, source: std::io::Error| {
            // The file is unusable: do not leave it behind.
            let _ = std::fs::remove_file(&tmp);
            GgufError::Io {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        let file = out
            .into_inner()
            .map_err(|e| io("flush", &tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io("sync", &tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| io("rename temporary file into place", &self.path, e))?;
        // Make the rename itself durable where the platform allows syncing a directory.
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// The final path of the file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_all(&mut self, bytes: &[u8], op: &'static str) -> Result<(), GgufError> {
        let Some(out) = self.out.as_mut() else {
            return Err(self.error("the file was closed after an earlier error".to_string()));
        };
        if let Err(source) = out.write_all(bytes) {
            // Give up on this file: later calls fail, and drop removes the temporary file.
            self.out = None;
            let _ = std::fs::remove_file(&self.tmp_path);
            return Err(GgufError::Io {
                path: self.tmp_path.clone(),
                op,
                source,
            });
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn error(&self, message: String) -> GgufError {
        GgufError::Write {
            path: self.path.clone(),
            message,
        }
    }
}

impl Drop for GgufTensorSink {
    fn drop(&mut self) {
        // Still open means `finish` did not succeed: remove the partial file.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// `model.gguf` -> `model.gguf.tmp`.
fn tmp_path_for(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".tmp");
    PathBuf::from(s)
}

fn check_value(key: &str, value: &Value, depth: usize) -> Result<(), String> {
    if let Value::Array(items) = value {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(format!(
                "metadata key {key:?}: expected arrays nested at most {MAX_ARRAY_DEPTH} deep, found deeper"
            ));
        }
        if let Some(first) = items.first() {
            let ty = first.gguf_type();
            if let Some((i, other)) = items.iter().enumerate().find(|(_, v)| v.gguf_type() != ty) {
                return Err(format!(
                    "metadata key {key:?}: an array holds one type: expected {} at element {i}, found {}",
                    first.type_name(),
                    other.type_name()
                ));
            }
        }
        for item in items {
            check_value(key, item, depth + 1)?;
        }
    }
    Ok(())
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            // An empty array's element type is arbitrary; u8 is used.
            let ty = items.first().map_or(value_type::U8, Value::gguf_type);
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}
