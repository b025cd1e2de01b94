//! Reading GGUF files: the header is parsed and fully validated at open; tensor data stays in
//! the memory map.

use crate::error::GgufError;
use crate::value::{min_encoded_len, value_type, Value};
use crate::{DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use deepseek_tensor::DType;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Smallest possible metadata entry: key length (8) + value type (4) + a one-byte value.
const MIN_KV_LEN: u64 = 8 + 4 + 1;
/// Smallest possible tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 4 + 8;

/// Description of one tensor stored in a GGUF file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// The tensor's name (e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` (ne0) is the contiguous (column) dimension.
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Absolute position of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (product of all dimensions). Validated not to overflow at open.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of rows: the product of `dims[1..]` (1 for a vector).
    pub fn rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Number of columns: `dims[0]`.
    pub fn cols(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
}

/// The bytes of the file: memory-mapped, or owned (for [`GgufFile::from_bytes`]).
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An open GGUF file (version 2 or 3): its metadata and tensor directory, validated, with the
/// tensor data left in a read-only memory map.
///
/// The file must not be modified or truncated by another process while it is open (as with
/// any memory-mapped file, that could make reads of tensor data fail).
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens, maps and validates a GGUF file.
    ///
    /// Every structural problem (truncation, bad magic, unsupported version, impossible counts,
    /// unknown types, invalid shapes, out-of-bounds, misaligned or overlapping tensor data,
    /// duplicates, invalid UTF-8) is reported as a [`GgufError`]; nothing is read out of
    /// bounds and no allocation exceeds what the file's size can justify.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |op: &'static str| {
            let path = path.to_path_buf();
            move |source| GgufError::Io { path, op, source }
        };
        let file = File::open(path).map_err(io("open"))?;
        let meta = file.metadata().map_err(io("read file metadata"))?;
        if !meta.is_file() {
            return Err(GgufError::Io {
                path: path.to_path_buf(),
                op: "open",
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "expected a regular file, found something else (a directory?)",
                ),
            });
        }
        let storage = if meta.len() == 0 {
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and private to this value. Memory mapping is only
            // unsound if another process modifies or truncates the file while it is mapped;
            // this is documented on `GgufFile` as a requirement on callers, as is usual for
            // model files.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io("memory-map"))?;
            Storage::Mapped(map)
        };
        Self::parse(path.to_path_buf(), storage)
    }

    /// Parses a GGUF file already in memory. `name` is used in messages and by [`path`].
    ///
    /// [`path`]: GgufFile::path
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::parse(name.into(), Storage::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<GgufFile, GgufError> {
        let header = parse_header(&path, storage.bytes())?;
        Ok(GgufFile {
            path,
            storage,
            version: header.version,
            alignment: header.alignment,
            data_start: header.data_start,
            metadata: header.metadata,
            key_index: header.key_index,
            tensors: header.tensors,
            tensor_index: header.tensor_index,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute position where the data section starts.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of one metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A string value, or an error naming the file and key if it is missing or not a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str()
            .ok_or_else(|| self.bad_metadata(key, "a string", v))
    }

    /// A non-negative integer value (any integer type), or an error naming the file and key.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.bad_metadata(key, "a non-negative integer", v))
    }

    /// A float or integer value, or an error naming the file and key.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64()
            .ok_or_else(|| self.bad_metadata(key, "a number", v))
    }

    /// An array value, or an error naming the file and key.
    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        let v = self.require(key)?;
        v.as_array()
            .ok_or_else(|| self.bad_metadata(key, "an array", v))
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::BadMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            expected: "the key to be present".to_string(),
            found: "no such key".to_string(),
        })
    }

    fn bad_metadata(&self, key: &str, expected: &str, found: &Value) -> GgufError {
        GgufError::BadMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: found.describe(),
        }
    }

    /// All tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file (bounds were validated at open).
    ///
    /// # Panics
    /// If `t` does not come from this file and its range lies outside it.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let bytes = self.storage.bytes();
        let range = usize::try_from(t.offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(usize::try_from(t.size).ok()?)?));
        match range.and_then(|r| bytes.get(r)) {
            Some(data) => data,
            None => panic!(
                "{}: tensor {:?} (bytes {}+{}) is not part of this file of {} bytes",
                self.path.display(),
                t.name,
                t.offset,
                t.size,
                bytes.len()
            ),
        }
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file.
    pub fn mmap(&self) -> &[u8] {
        self.storage.bytes()
    }
}

struct Header {
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                offset: self.pos as u64,
                needed: n,
                available,
            });
        }
        // `n <= available`, which is a usize, so both conversions and the sum are exact.
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a count of items that each take at least `min_len` bytes, refusing counts the rest
    /// of the file cannot hold (so callers may allocate `count` items).
    fn count(&mut self, min_len: u64, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        let offset = self.pos as u64;
        let n = self.u64(what)?;
        self.check_count(n, offset, min_len, what)
    }

    /// Refuses a count (read at `offset`) of items of at least `min_len` bytes each that the
    /// bytes after the cursor cannot hold.
    fn check_count(
        &self,
        n: u64,
        offset: u64,
        min_len: u64,
        what: &dyn Fn() -> String,
    ) -> Result<u64, GgufError> {
        let available = self.remaining();
        let max = available / min_len.max(1);
        if n > max {
            return Err(GgufError::TooLarge {
                path: self.path.to_path_buf(),
                what: what(),
                offset,
                found: n,
                max,
                available,
            });
        }
        Ok(n)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.count(1, &|| format!("length of {}", what()))?;
        let offset = self.pos as u64;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(GgufError::InvalidUtf8 {
                path: self.path.to_path_buf(),
                what: what(),
                offset,
                found: e.to_string(),
            }),
        }
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("value of metadata key {key:?}");
        let v = match ty {
            value_type::U8 => Value::U8(u8::from_le_bytes(self.array(&what)?)),
            value_type::I8 => Value::I8(i8::from_le_bytes(self.array(&what)?)),
            value_type::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            value_type::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            value_type::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            value_type::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            value_type::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            value_type::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            value_type::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            value_type::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            value_type::BOOL => {
                let offset = self.pos as u64;
                match self.array::<1>(&what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(GgufError::BadMetadata {
                            path: self.path.to_path_buf(),
                            key: key.to_string(),
                            expected: "a bool stored as 0 or 1".to_string(),
                            found: format!("byte {b} at byte {offset}"),
                        })
                    }
                }
            }
            value_type::STRING => Value::String(self.string(&what)?),
            value_type::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::BadMetadata {
                        path: self.path.to_path_buf(),
                        key: key.to_string(),
                        expected: format!("arrays nested at most {MAX_ARRAY_DEPTH} deep"),
                        found: format!("deeper nesting at byte {}", self.pos),
                    });
                }
                let elem_ty =
                    self.u32(&|| format!("array element type of metadata key {key:?}"))?;
                let Some(min_len) = min_encoded_len(elem_ty) else {
                    return Err(GgufError::UnknownValueType {
                        path: self.path.to_path_buf(),
                        key: key.to_string(),
                        found: elem_ty,
                    });
                };
                let n = self.count(min_len, &|| format!("array length of metadata key {key:?}"))?;
                // `count` bounded `n` by the remaining bytes, so this allocation is justified
                // by the file's size.
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            _ => {
                return Err(GgufError::UnknownValueType {
                    path: self.path.to_path_buf(),
                    key: key.to_string(),
                    found: ty,
                })
            }
        };
        Ok(v)
    }
}

/// The ggml types this engine supports, for messages.
fn supported_types() -> String {
    let mut all: Vec<DType> = DType::ALL.to_vec();
    all.sort_by_key(|d| d.ggml_type());
    all.iter()
        .map(|d| format!("{} ({})", d.ggml_type(), d.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses and validates everything but the tensor data.
fn parse_header(path: &Path, buf: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor { buf, pos: 0, path };
    let file_len = buf.len() as u64;

    let magic = c.array::<4>(&|| "magic \"GGUF\"".to_string())?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
            found: format!("\"{}\"", magic.escape_ascii()),
        });
    }
    let version = c.u32(&|| "format version".to_string())?;
    if version != 2 && version != 3 {
        let hint = if version == 1 {
            " (version 1 files predate the current layout; convert the model again with a current llama.cpp)".to_string()
        } else if matches!(version.swap_bytes(), 1..=3) {
            format!(
                " (this looks like a big-endian file of version {}; only little-endian files are supported)",
                version.swap_bytes()
            )
        } else {
            String::new()
        };
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            hint,
        });
    }
    let tensor_count_what = || "tensor count".to_string();
    let kv_count_what = || "metadata entry count".to_string();
    let tensor_count = c.u64(&tensor_count_what)?;
    let kv_count = c.u64(&kv_count_what)?;
    c.check_count(tensor_count, 8, MIN_TENSOR_INFO_LEN, &tensor_count_what)?;
    c.check_count(kv_count, 16, MIN_KV_LEN, &kv_count_what)?;
    // Metadata.
    let mut metadata = Vec::with_capacity(kv_count as usize);
    let mut key_index = HashMap::with_capacity(kv_count as usize);
    for i in 0..kv_count {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let ty = c.u32(&|| format!("value type of metadata key {key:?}"))?;
        let value = c.value(ty, &key, 0)?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                path: path.to_path_buf(),
                key,
                index: i,
            });
        }
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match key_index.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => {
                return Err(GgufError::BadMetadata {
                    path: path.to_path_buf(),
                    key: "general.alignment".to_string(),
                    expected: "a u32 power of two".to_string(),
                    found: v.describe(),
                })
            }
        },
    };

    // Tensor directory (offsets relative to the data section for now).
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut tensor_index = HashMap::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let name = c.string(&|| format!("name of tensor {i}"))?;
        let bad = |message: String| GgufError::BadTensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            message,
        };
        let n_dims = c.u32(&|| format!("dimension count of tensor {name:?}"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(bad(format!(
                "expected 1 to {MAX_DIMS} dimensions, found {n_dims}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let ne = c.u64(&|| format!("dimension {d} of tensor {name:?}"))?;
            if ne > i64::MAX as u64 {
                return Err(bad(format!(
                    "dimension {d}: expected at most {}, found {ne}",
                    i64::MAX
                )));
            }
            dims.push(ne);
        }
        let ty = c.u32(&|| format!("type of tensor {name:?}"))?;
        let Some(dtype) = DType::from_ggml_type(ty) else {
            return Err(GgufError::UnknownTensorType {
                path: path.to_path_buf(),
                tensor: name,
                found: ty,
                expected: supported_types(),
            });
        };
        let offset = c.u64(&|| format!("data offset of tensor {name:?}"))?;

        dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                bad(format!(
                    "dimensions {dims:?}: expected an element count that fits in 64 bits, found an overflow"
                ))
            })?;
        let block = dtype.block_size() as u64;
        let cols = dims[0];
        if !cols.is_multiple_of(block) {
            return Err(bad(format!(
                "{dtype} stores whole blocks of {block} elements: expected ne0 (the row length) to be a multiple of {block}, found {cols}"
            )));
        }
        let rows: u64 = dims[1..].iter().product(); // cannot overflow: the full product did not.
        let size = (cols / block)
            .checked_mul(dtype.block_bytes() as u64)
            .and_then(|row| row.checked_mul(rows))
            .ok_or_else(|| {
                bad(format!(
                    "dimensions {dims:?} of {dtype}: expected a byte size that fits in 64 bits, found an overflow"
                ))
            })?;
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::Misaligned {
                path: path.to_path_buf(),
                tensor: name,
                offset,
                alignment,
            });
        }
        if tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor {
                path: path.to_path_buf(),
                tensor: name,
                index: i,
            });
        }
        tensor_index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            dims,
            dtype,
            offset,
            size,
        });
    }

    let header_end = c.pos as u64;
    let data_start = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::BadMetadata {
            path: path.to_path_buf(),
            key: "general.alignment".to_string(),
            expected: "an alignment that keeps the data start within 64 bits".to_string(),
            found: alignment.to_string(),
        })?;

    // Make offsets absolute and check bounds.
    for t in &mut tensors {
        let start = data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len && start >= header_end => {
                t.offset = start;
            }
            _ => {
                return Err(GgufError::OutOfBounds {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    data_start,
                    file_len,
                })
            }
        }
    }

    // No two tensors may share bytes (empty tensors share nothing).
    let mut order: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].size > 0)
        .collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for pair in order.windows(2) {
        let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
        let a_end = a.offset + a.size; // checked above
        if b.offset < a_end {
            return Err(GgufError::Overlap {
                path: path.to_path_buf(),
                first: a.name.clone(),
                first_end: a_end,
                second: b.name.clone(),
                second_start: b.offset,
            });
        }
    }

    Ok(Header {
        version,
        alignment,
        data_start,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}
