//! Every kind of damaged or hostile file gives its own clear error (never a panic, never an
//! out-of-bounds read, never a huge allocation).

mod common;

use common::{expect_err, Bytes};
use deepseek_gguf::{GgufError, GgufFile};

/// A valid file: one KV, one F32 tensor `w` of 8 elements at offset 0.
fn valid() -> Vec<u8> {
    Bytes::header(3, 1, 1)
        .kv_str("general.architecture", "llama")
        .tensor("w", &[8], 0, 0)
        .pad(32)
        .raw(&[0u8; 32])
        .0
}

#[test]
fn the_base_file_is_valid() {
    let (_d, r) = common::open_bytes("base.gguf", &valid());
    let f = r.unwrap();
    assert_eq!(f.tensor_data(f.tensor("w").unwrap()).len(), 32);
}

#[test]
fn missing_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let e = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(e.to_string().contains("missing.gguf"), "{e}");
    let e = GgufFile::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("expected a regular file"), "{e}");
}

#[test]
fn empty_and_truncated_files() {
    let e = expect_err(
        "empty.gguf",
        &[],
        &["truncated", "magic", "expected 4 more bytes, found 0"],
    );
    assert!(matches!(e, GgufError::Truncated { .. }));
    let v = valid();
    expect_err("short.gguf", &v[..6], &["truncated", "format version"]);
    expect_err(
        "counts.gguf",
        &v[..20],
        &["truncated", "metadata entry count"],
    );
    // Counts the rest of the file cannot hold are refused before anything is read.
    expect_err(
        "cnt.gguf",
        &v[..30],
        &["tensor count", "expected at most 0", "found 1"],
    );
    // Inside the key string of the first KV (its length field says 20 bytes).
    let kv_only = Bytes::header(3, 0, 1)
        .kv_str("general.architecture", "llama")
        .0;
    expect_err(
        "key.gguf",
        &kv_only[..40],
        &[
            "length of key of metadata entry 0",
            "expected at most 8",
            "found 20",
        ],
    );
    expect_err(
        "val.gguf",
        &kv_only[..kv_only.len() - 1],
        &[
            "length of value of metadata key \"general.architecture\"",
            "expected at most 4",
            "found 5",
        ],
    );
    // Cut inside the tensor info.
    let cut = Bytes::header(3, 1, 1)
        .kv_str("general.architecture", "llama")
        .str("w")
        .len()
        + 2;
    expect_err(
        "tinfo.gguf",
        &v[..cut],
        &["truncated", "dimension count of tensor \"w\""],
    );
    let u32_kv = Bytes::header(3, 0, 1).kv_u32("n", 7).0;
    expect_err(
        "u32.gguf",
        &u32_kv[..u32_kv.len() - 2],
        &[
            "truncated",
            "value of metadata key \"n\"",
            "expected 4 more bytes, found 2",
        ],
    );
    // Cut in the data: the tensor runs past the end.
    expect_err(
        "data.gguf",
        &v[..v.len() - 1],
        &["tensor \"w\"", "out of bounds"],
    );
}

#[test]
fn bad_magic() {
    let mut v = valid();
    v[3] = b'X';
    let e = expect_err(
        "magic.gguf",
        &v,
        &[
            "not a GGUF file",
            "expected magic \"GGUF\"",
            "found \"GGUX\"",
        ],
    );
    assert!(matches!(e, GgufError::BadMagic { .. }));
    expect_err(
        "bin.gguf",
        &[0xff, 0, 1, 2, 3],
        &["found \"\\xff\\x00\\x01\\x02\""],
    );
}

#[test]
fn unsupported_versions() {
    for (version, extra) in [
        (1u32, "version 1"),
        (4, "found 4"),
        (0x0300_0000, "big-endian"),
    ] {
        let bytes = Bytes::header(version, 0, 0).0;
        let e = expect_err(
            "ver.gguf",
            &bytes,
            &["unsupported GGUF version", "expected 2 or 3", extra],
        );
        assert!(matches!(e, GgufError::UnsupportedVersion { .. }));
    }
}

#[test]
fn absurd_counts_and_lengths() {
    let e = expect_err(
        "tensors.gguf",
        &Bytes::header(3, u64::MAX, 0).0,
        &[
            "tensor count",
            "at byte 8",
            "expected at most 0",
            &format!("found {}", u64::MAX),
        ],
    );
    assert!(matches!(e, GgufError::TooLarge { .. }));
    expect_err(
        "kvs.gguf",
        &Bytes::header(3, 0, 1 << 40).raw(&[0; 64]).0,
        &[
            "metadata entry count",
            "expected at most 4",
            "found 1099511627776",
        ],
    );
    // A key whose length is far beyond the file.
    expect_err(
        "keylen.gguf",
        &Bytes::header(3, 0, 1).u64(1 << 50).raw(&[0; 16]).0,
        &[
            "length of key of metadata entry 0",
            "expected at most 16",
            "found 1125899906842624",
        ],
    );
    // A string value whose length is far beyond the file.
    expect_err(
        "strlen.gguf",
        &Bytes::header(3, 0, 1)
            .str("k")
            .u32(8)
            .u64(u64::MAX - 3)
            .raw(&[0; 8])
            .0,
        &[
            "length of value of metadata key \"k\"",
            "expected at most 8",
        ],
    );
    // Array counts: limited by the smallest element size of their type.
    expect_err(
        "arr.gguf",
        &Bytes::header(3, 0, 1)
            .str("tokens")
            .u32(9)
            .u32(8)
            .u64(1 << 60)
            .raw(&[0; 80])
            .0,
        &[
            "array length of metadata key \"tokens\"",
            "expected at most 10",
            "found 1152921504606846976",
        ],
    );
    expect_err(
        "arr32.gguf",
        &Bytes::header(3, 0, 1)
            .str("ids")
            .u32(9)
            .u32(4)
            .u64(5)
            .raw(&[0; 16])
            .0,
        &[
            "array length of metadata key \"ids\"",
            "expected at most 4",
            "found 5",
        ],
    );
    // A tensor name longer than the file.
    expect_err(
        "tname.gguf",
        &Bytes::header(3, 1, 0).u64(1 << 33).raw(&[0; 24]).0,
        &["length of name of tensor 0", "expected at most 24"],
    );
}

#[test]
fn unknown_value_types() {
    let e = expect_err(
        "vtype.gguf",
        &Bytes::header(3, 0, 1)
            .str("weird.key")
            .u32(13)
            .raw(&[0; 8])
            .0,
        &[
            "metadata key \"weird.key\"",
            "unknown value type",
            "expected 0 to 12",
            "found 13",
        ],
    );
    assert!(matches!(e, GgufError::UnknownValueType { found: 13, .. }));
    expect_err(
        "etype.gguf",
        &Bytes::header(3, 0, 1)
            .str("arr.key")
            .u32(9)
            .u32(0xdead)
            .u64(1)
            .raw(&[0; 8])
            .0,
        &[
            "metadata key \"arr.key\"",
            "unknown value type",
            "found 57005",
        ],
    );
}

#[test]
fn unknown_tensor_types() {
    for ty in [4u32, 5, 9, 99, u32::MAX] {
        let bytes = Bytes::header(3, 1, 0)
            .tensor("blk.0.ffn_up.weight", &[32], ty, 0)
            .pad(32)
            .raw(&[0; 64])
            .0;
        let e = expect_err(
            "ttype.gguf",
            &bytes,
            &[
                "tensor \"blk.0.ffn_up.weight\"",
                "unknown or unsupported ggml tensor type",
                &format!("found {ty}"),
                "0 (F32)",
                "14 (Q6_K)",
            ],
        );
        assert!(matches!(e, GgufError::UnknownTensorType { .. }));
    }
}

#[test]
fn dimension_problems() {
    // Overflowing element count.
    let bytes = Bytes::header(3, 1, 0)
        .tensor("huge", &[1 << 32, 1 << 32], 0, 0)
        .pad(32)
        .0;
    expect_err("dims.gguf", &bytes, &["tensor \"huge\"", "overflow"]);
    // Element count fits, byte size does not.
    let bytes = Bytes::header(3, 1, 0)
        .tensor("bytes", &[1 << 31, 1 << 31], 0, 0)
        .pad(32)
        .0;
    expect_err(
        "size.gguf",
        &bytes,
        &["tensor \"bytes\"", "byte size", "overflow"],
    );
    // A dimension beyond i64.
    let bytes = Bytes::header(3, 1, 0)
        .tensor("neg", &[u64::MAX], 0, 0)
        .pad(32)
        .0;
    expect_err(
        "neg.gguf",
        &bytes,
        &["tensor \"neg\"", &format!("found {}", u64::MAX)],
    );
    // Dimension counts.
    for n in [0usize, 5, 1000] {
        let bytes = Bytes::header(3, 1, 0)
            .tensor("nd", &vec![1; n.min(5)], 0, 0)
            .0;
        let mut bytes = bytes;
        // Patch n_dims (right after the name) for the 1000 case.
        let pos = 24 + 8 + 2;
        bytes[pos..pos + 4].copy_from_slice(&(n as u32).to_le_bytes());
        expect_err(
            "ndims.gguf",
            &bytes,
            &[
                "tensor \"nd\"",
                "expected 1 to 4 dimensions",
                &format!("found {n}"),
            ],
        );
    }
    // ne0 not a multiple of the block size.
    let bytes = Bytes::header(3, 1, 0)
        .tensor("q", &[48, 2], 12, 0)
        .pad(32)
        .raw(&[0; 1024])
        .0;
    let e = expect_err(
        "block.gguf",
        &bytes,
        &["tensor \"q\"", "Q4_K", "multiple of 256", "found 48"],
    );
    assert!(matches!(e, GgufError::BadTensor { .. }));
}

#[test]
fn data_out_of_bounds_and_wrapping_offsets() {
    let bytes = Bytes::header(3, 1, 0)
        .tensor("w", &[8], 0, 64)
        .pad(32)
        .raw(&[0; 64])
        .0;
    let e = expect_err(
        "oob.gguf",
        &bytes,
        &["tensor \"w\"", "out of bounds", "found a file of"],
    );
    assert!(matches!(e, GgufError::OutOfBounds { .. }));
    // An offset so large that data start + offset wraps around to the header.
    let off = u64::MAX - 31;
    let bytes = Bytes::header(3, 1, 0)
        .tensor("wrap", &[8], 0, off)
        .pad(32)
        .raw(&[0; 64])
        .0;
    expect_err("wrap.gguf", &bytes, &["tensor \"wrap\"", "out of bounds"]);
    // Offset plus size wrapping.
    let bytes = Bytes::header(3, 1, 0)
        .tensor("wrap2", &[1 << 40], 0, (u64::MAX / 32) * 32 - (1 << 20))
        .pad(32)
        .0;
    expect_err("wrap2.gguf", &bytes, &["tensor \"wrap2\"", "out of bounds"]);
}

#[test]
fn misaligned_offsets() {
    let bytes = Bytes::header(3, 1, 0)
        .tensor("m", &[8], 0, 4)
        .pad(32)
        .raw(&[0; 64])
        .0;
    let e = expect_err(
        "align.gguf",
        &bytes,
        &[
            "tensor \"m\"",
            "misaligned",
            "expected a multiple of 32, found 4",
        ],
    );
    assert!(matches!(e, GgufError::Misaligned { .. }));
    // With a custom alignment.
    let bytes = Bytes::header(3, 1, 1)
        .kv_u32("general.alignment", 64)
        .tensor("m", &[8], 0, 32)
        .pad(64)
        .raw(&[0; 128])
        .0;
    expect_err(
        "align64.gguf",
        &bytes,
        &["tensor \"m\"", "expected a multiple of 64, found 32"],
    );
}

#[test]
fn bad_alignment_values() {
    for (value, found) in [(0u32, "u32 0"), (3, "u32 3"), (48, "u32 48")] {
        let bytes = Bytes::header(3, 0, 1).kv_u32("general.alignment", value).0;
        expect_err(
            "al.gguf",
            &bytes,
            &["general.alignment", "power of two", found],
        );
    }
    let bytes = Bytes::header(3, 0, 1).kv_str("general.alignment", "32").0;
    expect_err(
        "als.gguf",
        &bytes,
        &["general.alignment", "found string \"32\""],
    );
}

#[test]
fn overlapping_tensors() {
    let bytes = Bytes::header(3, 2, 0)
        .tensor("first", &[16], 0, 0)
        .tensor("second", &[8], 0, 32)
        .pad(32)
        .raw(&[0; 128])
        .0;
    let e = expect_err(
        "overlap.gguf",
        &bytes,
        &["\"first\"", "\"second\"", "overlap"],
    );
    assert!(matches!(e, GgufError::Overlap { .. }));
}

#[test]
fn duplicates() {
    let bytes = Bytes::header(3, 0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2).0;
    let e = expect_err(
        "dupkey.gguf",
        &bytes,
        &[
            "duplicate metadata key \"a.b\"",
            "found it again as entry 1",
        ],
    );
    assert!(matches!(e, GgufError::DuplicateKey { .. }));
    let bytes = Bytes::header(3, 2, 0)
        .tensor("t", &[8], 0, 0)
        .tensor("t", &[8], 0, 32)
        .pad(32)
        .raw(&[0; 64])
        .0;
    let e = expect_err(
        "duptensor.gguf",
        &bytes,
        &["duplicate tensor name \"t\"", "as tensor 1"],
    );
    assert!(matches!(e, GgufError::DuplicateTensor { .. }));
}

#[test]
fn invalid_utf8() {
    let bad = [b'k', 0xff, 0xfe];
    let bytes = Bytes::header(3, 0, 1).str_bytes(&bad).u32(4).u32(0).0;
    let e = expect_err(
        "utf8key.gguf",
        &bytes,
        &["key of metadata entry 0", "expected UTF-8", "at byte 32"],
    );
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }));
    let bytes = Bytes::header(3, 0, 1).str("k").u32(8).str_bytes(&bad).0;
    expect_err(
        "utf8val.gguf",
        &bytes,
        &["value of metadata key \"k\"", "expected UTF-8"],
    );
    let bytes = Bytes::header(3, 0, 1)
        .str("arr")
        .u32(9)
        .u32(8)
        .u64(2)
        .str("ok")
        .str_bytes(&bad)
        .0;
    expect_err(
        "utf8arr.gguf",
        &bytes,
        &["value of metadata key \"arr\"", "expected UTF-8"],
    );
    let bytes = Bytes::header(3, 1, 0)
        .str_bytes(&bad)
        .u32(1)
        .u64(8)
        .u32(0)
        .u64(0)
        .pad(32)
        .raw(&[0; 32])
        .0;
    expect_err(
        "utf8tensor.gguf",
        &bytes,
        &["name of tensor 0", "expected UTF-8"],
    );
}

#[test]
fn bad_bool_and_deep_nesting() {
    let bytes = Bytes::header(3, 0, 1).str("flag").u32(7).u8(2).0;
    expect_err("bool.gguf", &bytes, &["\"flag\"", "0 or 1", "found byte 2"]);
    // Arrays nested 100 deep: refused without deep recursion.
    let mut b = Bytes::header(3, 0, 1).str("deep").u32(9);
    for _ in 0..100 {
        b = b.u32(9).u64(1);
    }
    b = b.u32(0).u64(0);
    expect_err("deep.gguf", &b.0, &["\"deep\"", "nested at most 8 deep"]);
}
