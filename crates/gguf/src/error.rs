//! The error type shared by the reader and the writer.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing a GGUF file.
///
/// Every message names the file (and the tensor or metadata key involved) and says what was
/// expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// An operating-system error (open, map, write, rename, ...).
    #[error("{}: {op}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("{}: not a GGUF file: expected magic \"GGUF\", found {found}", path.display())]
    BadMagic {
        /// The file involved.
        path: PathBuf,
        /// The bytes found, escaped.
        found: String,
    },

    /// A format version other than 2 or 3.
    #[error("{}: unsupported GGUF version: expected 2 or 3, found {found}{hint}", path.display())]
    UnsupportedVersion {
        /// The file involved.
        path: PathBuf,
        /// The version number found.
        found: u32,
        /// Extra explanation (may be empty).
        hint: String,
    },

    /// The file ends before a field that must be there.
    #[error(
        "{}: truncated file: {what} at byte {offset}: expected {needed} more bytes, found {available}",
        path.display()
    )]
    Truncated {
        /// The file involved.
        path: PathBuf,
        /// The field being read.
        what: String,
        /// Where the field starts.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },

    /// A count or length that the rest of the file cannot possibly hold.
    #[error(
        "{}: {what} at byte {offset}: expected at most {max} (all the remaining {available} bytes can hold), found {found}",
        path.display()
    )]
    TooLarge {
        /// The count or length being read.
        what: String,
        /// The file involved.
        path: PathBuf,
        /// Where the count starts.
        offset: u64,
        /// The value found.
        found: u64,
        /// The largest value the remaining bytes allow.
        max: u64,
        /// Bytes left in the file.
        available: u64,
    },

    /// A metadata value type number outside the specification.
    #[error(
        "{}: metadata key {key:?}: unknown value type: expected 0 to 12, found {found}",
        path.display()
    )]
    UnknownValueType {
        /// The file involved.
        path: PathBuf,
        /// The key whose value (or array elements) has the unknown type.
        key: String,
        /// The type number found.
        found: u32,
    },

    /// A ggml tensor type this engine does not know.
    #[error(
        "{}: tensor {tensor:?}: unknown or unsupported ggml tensor type: expected one of {expected}, found {found}",
        path.display()
    )]
    UnknownTensorType {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The type number found.
        found: u32,
        /// The supported type numbers with their names.
        expected: String,
    },

    /// A string that is not valid UTF-8.
    #[error("{}: {what} at byte {offset}: expected UTF-8 text, found invalid bytes ({found})", path.display())]
    InvalidUtf8 {
        /// The file involved.
        path: PathBuf,
        /// The string being read (key, value, tensor name).
        what: String,
        /// Where the string's bytes start.
        offset: u64,
        /// The decoding error.
        found: String,
    },

    /// The same metadata key twice.
    #[error(
        "{}: duplicate metadata key {key:?}: expected each key once, found it again as entry {index}",
        path.display()
    )]
    DuplicateKey {
        /// The file involved.
        path: PathBuf,
        /// The repeated key.
        key: String,
        /// The index (from 0) of the second occurrence.
        index: u64,
    },

    /// The same tensor name twice.
    #[error(
        "{}: duplicate tensor name {tensor:?}: expected each name once, found it again as tensor {index}",
        path.display()
    )]
    DuplicateTensor {
        /// The file involved.
        path: PathBuf,
        /// The repeated name.
        tensor: String,
        /// The index (from 0) of the second occurrence.
        index: u64,
    },

    /// A tensor whose shape is invalid (dimension count, overflow, partial blocks).
    #[error("{}: tensor {tensor:?}: {message}", path.display())]
    BadTensor {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong, with expected and found values.
        message: String,
    },

    /// A tensor whose data lies (partly) outside the file's data section.
    #[error(
        "{}: tensor {tensor:?}: data out of bounds: expected bytes {start}..{end} to lie within the data section {data_start}..{file_len}, found a file of {file_len} bytes",
        path.display()
    )]
    OutOfBounds {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Absolute start of the tensor's data.
        start: u64,
        /// Absolute end (exclusive) of the tensor's data.
        end: u64,
        /// Where the data section starts.
        data_start: u64,
        /// The file's size.
        file_len: u64,
    },

    /// A tensor offset that is not a multiple of the alignment.
    #[error(
        "{}: tensor {tensor:?}: misaligned data offset: expected a multiple of {alignment}, found {offset}",
        path.display()
    )]
    Misaligned {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The offset found (relative to the data section).
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// Two tensors whose data ranges overlap.
    #[error(
        "{}: tensors {first:?} and {second:?} overlap: expected {second:?} to start at or after byte {first_end}, found {second_start}",
        path.display()
    )]
    Overlap {
        /// The file involved.
        path: PathBuf,
        /// The tensor that starts first.
        first: String,
        /// Where its data ends (absolute, exclusive).
        first_end: u64,
        /// The tensor starting inside it.
        second: String,
        /// Where that one starts (absolute).
        second_start: u64,
    },

    /// A metadata value of the wrong type or out of range.
    #[error("{}: metadata key {key:?}: expected {expected}, found {found}", path.display())]
    BadMetadata {
        /// The file involved.
        path: PathBuf,
        /// The key.
        key: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },

    /// A writer was given an invalid description of the file to write.
    #[error("invalid GGUF contents to write: {message}")]
    InvalidSpec {
        /// What is wrong, with expected and found values.
        message: String,
    },

    /// A writer was used out of order (wrong tensor, wrong size, missing tensors).
    #[error("{}: {message}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// What is wrong, with expected and found values.
        message: String,
    },
}
