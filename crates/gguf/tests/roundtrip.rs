//! Writing files with the writer and reading them back; hand-written version 2 and 3 files.

mod common;

use common::{Bytes, Rng};
use deepseek_gguf::{DType, GgufError, GgufFile, GgufWriter, TensorSpec, Value};
use std::path::Path;

fn every_value() -> Vec<(String, Value)> {
    let s = |k: &str, v: Value| (k.to_string(), v);
    vec![
        s("general.architecture", Value::String("llama".into())),
        s("t.u8", Value::U8(250)),
        s("t.i8", Value::I8(-120)),
        s("t.u16", Value::U16(65000)),
        s("t.i16", Value::I16(-32000)),
        s("t.u32", Value::U32(4_000_000_000)),
        s("t.i32", Value::I32(-2_000_000_000)),
        s("t.u64", Value::U64(u64::MAX)),
        s("t.i64", Value::I64(i64::MIN)),
        s("t.f32", Value::F32(-1.5e-7)),
        s("t.f64", Value::F64(std::f64::consts::PI)),
        s("t.bool.true", Value::Bool(true)),
        s("t.bool.false", Value::Bool(false)),
        s("t.string.empty", Value::String(String::new())),
        s(
            "t.string.unicode",
            Value::String("Ġhello 世界 🦀\n\0".into()),
        ),
        s("t.array.empty", Value::Array(vec![])),
        s("t.array.u8", Value::Array(vec![Value::U8(1), Value::U8(2)])),
        s("t.array.i8", Value::Array(vec![Value::I8(-1)])),
        s("t.array.u16", Value::Array(vec![Value::U16(7); 3])),
        s("t.array.i16", Value::Array(vec![Value::I16(-7); 3])),
        s(
            "t.array.u32",
            Value::Array(vec![Value::U32(1), Value::U32(u32::MAX)]),
        ),
        s("t.array.i32", Value::Array(vec![Value::I32(i32::MIN)])),
        s("t.array.u64", Value::Array(vec![Value::U64(9)])),
        s("t.array.i64", Value::Array(vec![Value::I64(-9)])),
        s(
            "t.array.f32",
            Value::Array(vec![Value::F32(0.5), Value::F32(-0.0)]),
        ),
        s("t.array.f64", Value::Array(vec![Value::F64(1e300)])),
        s(
            "t.array.bool",
            Value::Array(vec![Value::Bool(true), Value::Bool(false)]),
        ),
        s(
            "t.array.string",
            Value::Array(vec![
                Value::String("a".into()),
                Value::String(String::new()),
                Value::String("ü".into()),
            ]),
        ),
        s(
            "t.array.nested",
            Value::Array(vec![
                Value::Array(vec![Value::U32(1), Value::U32(2)]),
                Value::Array(vec![]),
                Value::Array(vec![Value::String("x".into())]),
            ]),
        ),
    ]
}

/// One tensor of every type, plus shapes with 1 to 4 dimensions and an empty tensor.
fn every_tensor() -> Vec<TensorSpec> {
    let mut specs: Vec<TensorSpec> = DType::ALL
        .iter()
        .map(|&d| {
            let cols = d.block_size() as u64 * 2;
            TensorSpec::new(format!("t.{}", d.name()), vec![cols, 3], d)
        })
        .collect();
    specs.push(TensorSpec::new("vec", vec![5], DType::F32));
    specs.push(TensorSpec::new("three_d", vec![32, 2, 3], DType::Q8_0));
    specs.push(TensorSpec::new("four_d", vec![2, 2, 2, 2], DType::F16));
    specs.push(TensorSpec::new("empty", vec![0, 4], DType::F32));
    specs
}

fn expected_size(t: &TensorSpec) -> usize {
    let rows: u64 = t.dims[1..].iter().product();
    t.dtype.row_bytes(t.dims[0] as usize).unwrap() * rows as usize
}

fn write_file(
    path: &Path,
    metadata: Vec<(String, Value)>,
    specs: &[TensorSpec],
    alignment: u64,
    seed: u64,
) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let datas: Vec<Vec<u8>> = specs.iter().map(|t| rng.bytes(expected_size(t))).collect();
    let mut sink = GgufWriter::new(metadata, specs.to_vec(), alignment)
        .unwrap()
        .create(path)
        .unwrap();
    for (t, d) in specs.iter().zip(&datas) {
        sink.write_tensor(&t.name, d).unwrap();
    }
    sink.finish().unwrap();
    datas
}

#[test]
fn round_trip_every_value_and_tensor_type() {
    for alignment in [32u64, 1, 64, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.gguf");
        let meta = every_value();
        let specs = every_tensor();
        let datas = write_file(&path, meta.clone(), &specs, alignment, alignment);
        assert!(!dir.path().join("all.gguf.tmp").exists());

        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), alignment);
        assert_eq!(f.path(), path.as_path());
        let mut want = meta.clone();
        if alignment != 32 {
            want.push(("general.alignment".into(), Value::U32(alignment as u32)));
        }
        assert_eq!(f.metadata(), want.as_slice());
        for (k, v) in &want {
            assert_eq!(f.get(k), Some(v), "{k}");
        }
        assert_eq!(f.get("missing"), None);
        assert_eq!(f.tensors().len(), specs.len());
        assert_eq!(f.data_start() % alignment, 0);
        for ((t, spec), data) in f.tensors().iter().zip(&specs).zip(&datas) {
            assert_eq!(t.name, spec.name);
            assert_eq!(t.dims, spec.dims);
            assert_eq!(t.dtype, spec.dtype);
            assert_eq!(t.size as usize, data.len());
            assert_eq!(t.offset % alignment, 0, "{}", t.name);
            assert_eq!(f.tensor_data(t), data.as_slice(), "{}", t.name);
            assert_eq!(f.tensor(&t.name).unwrap().offset, t.offset);
            assert_eq!(t.cols(), spec.dims[0]);
            assert_eq!(t.rows(), spec.dims[1..].iter().product::<u64>());
            assert_eq!(t.n_elements(), spec.dims.iter().product::<u64>());
        }
        assert!(f.tensor("nope").is_none());
        assert_eq!(
            f.mmap().len() as u64,
            std::fs::metadata(&path).unwrap().len()
        );
    }
}

#[test]
fn writer_lays_out_data_packed_and_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layout.gguf");
    let specs = vec![
        TensorSpec::new("a", vec![3], DType::F32), // 12 bytes -> padded to 32
        TensorSpec::new("b", vec![32], DType::Q4_0), // 18 bytes
    ];
    write_file(&path, vec![], &specs, 32, 7);
    let f = GgufFile::open(&path).unwrap();
    let a = f.tensor("a").unwrap();
    let b = f.tensor("b").unwrap();
    assert_eq!(a.offset, f.data_start());
    assert_eq!(b.offset, f.data_start() + 32);
    // The file ends after the last tensor's padding.
    assert_eq!(f.mmap().len() as u64, f.data_start() + 64);
}

#[test]
fn value_accessors() {
    assert_eq!(Value::U8(3).as_u64(), Some(3));
    assert_eq!(Value::I32(-3).as_u64(), None);
    assert_eq!(Value::I32(-3).as_i64(), Some(-3));
    assert_eq!(Value::U64(u64::MAX).as_i64(), None);
    assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
    assert_eq!(Value::I64(5).as_u64(), Some(5));
    assert_eq!(Value::F32(0.5).as_f64(), Some(0.5));
    assert_eq!(Value::U16(2).as_f64(), Some(2.0));
    assert_eq!(Value::F32(1.0).as_u64(), None);
    assert_eq!(Value::Bool(true).as_bool(), Some(true));
    assert_eq!(Value::U8(1).as_bool(), None);
    assert_eq!(Value::String("x".into()).as_str(), Some("x"));
    assert_eq!(Value::U8(1).as_str(), None);
    assert_eq!(
        Value::Array(vec![Value::U8(1)]).as_array(),
        Some(&[Value::U8(1)][..])
    );
    for (_, v) in every_value() {
        assert!(!v.type_name().is_empty());
    }
    assert_eq!(Value::Array(vec![]).type_name(), "array");
    assert_eq!(Value::F64(1.0).type_name(), "f64");
}

#[test]
fn typed_getters_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("getters.gguf");
    write_file(&path, every_value(), &[], 32, 1);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_f64("t.f32").unwrap() as f32, -1.5e-7);
    assert_eq!(f.get_array("t.array.u8").unwrap().len(), 2);
    let e = f.get_u64("t.string.unicode").unwrap_err().to_string();
    assert!(
        e.contains("getters.gguf")
            && e.contains("t.string.unicode")
            && e.contains("non-negative integer"),
        "{e}"
    );
    let e = f.get_str("absent.key").unwrap_err().to_string();
    assert!(e.contains("absent.key") && e.contains("no such key"), "{e}");
}

#[test]
fn hand_written_version_2_and_3_files() {
    for version in [2u32, 3] {
        let data: Vec<u8> = (0..16u8).collect(); // 4 f32
        let head = Bytes::header(version, 2, 2)
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 2)
            .tensor("a", &[4], 0, 0)
            .tensor("b", &[2, 2], 0, 32)
            .pad(32);
        let data_start = head.len();
        let bytes = head.raw(&data).pad(32).raw(&data[..8]).raw(&data[8..]).0;
        let name = format!("v{version}.gguf");
        let (_dir, r) = common::open_bytes(&name, &bytes);
        let f = r.unwrap();
        assert_eq!(f.version(), version);
        assert_eq!(f.alignment(), 32);
        assert_eq!(
            f.get("general.architecture").unwrap().as_str(),
            Some("llama")
        );
        assert_eq!(f.get("llama.block_count"), Some(&Value::U32(2)));
        let a = f.tensor("a").unwrap();
        assert_eq!(a.offset as usize, data_start);
        assert_eq!(f.tensor_data(a), data.as_slice());
        let b = f.tensor("b").unwrap();
        assert_eq!(b.offset as usize, data_start + 32);
        assert_eq!((b.rows(), b.cols()), (2, 2));
        assert_eq!(f.tensor_data(b), data.as_slice());
        // The same bytes parse identically from memory.
        let g = GgufFile::from_bytes(&name, bytes.clone()).unwrap();
        assert_eq!(g.metadata(), f.metadata());
    }
}

#[test]
fn vocab_only_file_without_padding_opens() {
    // Files with no tensors may end right after the header.
    let bytes = Bytes::header(3, 0, 1).kv_str("k", "v").0;
    let (_dir, r) = common::open_bytes("vocab.gguf", &bytes);
    let f = r.unwrap();
    assert!(f.tensors().is_empty());
    assert_eq!(f.get("k").unwrap().as_str(), Some("v"));
}

#[test]
fn writer_checks_order_sizes_and_completeness() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.gguf");
    let tmp = dir.path().join("w.gguf.tmp");
    let specs = vec![
        TensorSpec::new("a", vec![4], DType::F32),
        TensorSpec::new("b", vec![32, 2], DType::Q4_1),
    ];
    let writer = || GgufWriter::new(vec![], specs.clone(), 32).unwrap();

    // Wrong name.
    let mut sink = writer().create(&path).unwrap();
    let e = sink.write_tensor("b", &[0; 40]).unwrap_err().to_string();
    assert!(
        e.contains("w.gguf") && e.contains("expected tensor \"a\"") && e.contains("found \"b\""),
        "{e}"
    );
    // Wrong size.
    let e = sink.write_tensor("a", &[0; 15]).unwrap_err().to_string();
    assert!(e.contains("expected 16 bytes, found 15"), "{e}");
    // Missing tensors at finish: no file under the final name, temporary removed.
    sink.write_tensor("a", &[0; 16]).unwrap();
    let e = sink.finish().unwrap_err().to_string();
    assert!(
        e.contains("expected all 2 tensors to be written, found 1") && e.contains("\"b\""),
        "{e}"
    );
    assert!(!path.exists());
    assert!(!tmp.exists());

    // Too many tensors.
    let mut sink = writer().create(&path).unwrap();
    assert!(tmp.exists());
    sink.write_tensor("a", &[0; 16]).unwrap();
    sink.write_tensor("b", &[0; 40]).unwrap();
    let e = sink.write_tensor("c", &[]).unwrap_err().to_string();
    assert!(e.contains("expected no more tensors"), "{e}");
    // Dropped without finish: nothing left behind.
    drop(sink);
    assert!(!path.exists());
    assert!(!tmp.exists());

    // A complete write replaces an existing file only at finish.
    std::fs::write(&path, b"old").unwrap();
    let mut sink = writer().create(&path).unwrap();
    sink.write_tensor("a", &[1; 16]).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    sink.write_tensor("b", &[2; 40]).unwrap();
    sink.finish().unwrap();
    assert!(!tmp.exists());
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()), &[2u8; 40][..]);
}

#[test]
fn writer_rejects_invalid_specs() {
    let check = |r: Result<GgufWriter, GgufError>, needles: &[&str]| {
        let e = r.unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "lacks {n:?}: {e}");
        }
    };
    let kv = |k: &str, v: Value| (k.to_string(), v);
    check(
        GgufWriter::new(
            vec![kv("a", Value::U8(1)), kv("a", Value::U8(2))],
            vec![],
            32,
        ),
        &["duplicate metadata key \"a\""],
    );
    check(
        GgufWriter::new(
            vec![],
            vec![
                TensorSpec::new("t", vec![1], DType::F32),
                TensorSpec::new("t", vec![1], DType::F32),
            ],
            32,
        ),
        &["duplicate tensor name \"t\""],
    );
    check(
        GgufWriter::new(
            vec![kv("m", Value::Array(vec![Value::U8(1), Value::U16(1)]))],
            vec![],
            32,
        ),
        &["\"m\"", "expected u8 at element 1, found u16"],
    );
    check(
        GgufWriter::new(vec![], vec![], 24),
        &["alignment", "found 24"],
    );
    check(
        GgufWriter::new(vec![], vec![], 0),
        &["alignment", "found 0"],
    );
    check(
        GgufWriter::new(vec![kv("general.alignment", Value::U32(64))], vec![], 32),
        &["general.alignment", "expected u32 32", "found u32 64"],
    );
    check(
        GgufWriter::new(
            vec![],
            vec![TensorSpec::new("q", vec![33, 2], DType::Q4_0)],
            32,
        ),
        &["\"q\"", "multiple of 32, found 33"],
    );
    check(
        GgufWriter::new(
            vec![],
            vec![TensorSpec::new("big", vec![1 << 40, 1 << 40], DType::F32)],
            32,
        ),
        &["\"big\"", "overflow"],
    );
    check(
        GgufWriter::new(vec![], vec![TensorSpec::new("s", vec![], DType::F32)], 32),
        &["\"s\"", "expected 1 to 4 dimensions, found 0"],
    );
    check(
        GgufWriter::new(
            vec![],
            vec![TensorSpec::new("s", vec![1; 5], DType::F32)],
            32,
        ),
        &["\"s\"", "found 5"],
    );
    // A matching general.alignment is accepted and not duplicated.
    let w = GgufWriter::new(vec![kv("general.alignment", Value::U32(64))], vec![], 64).unwrap();
    assert_eq!(w.metadata().len(), 1);
}

#[test]
fn writer_io_failures_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // The folder does not exist: creating the temporary file fails, naming it.
    let missing = dir.path().join("no/such/dir/x.gguf");
    let e = GgufWriter::new(vec![], vec![], 32)
        .unwrap()
        .create(&missing)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.gguf.tmp") && e.contains("create"), "{e}");

    // The final name is a non-empty folder: the rename fails and the temporary file goes.
    let target = dir.path().join("taken.gguf");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let sink = GgufWriter::new(vec![], vec![], 32)
        .unwrap()
        .create(&target)
        .unwrap();
    let e = sink.finish().unwrap_err().to_string();
    assert!(e.contains("taken.gguf") && e.contains("rename"), "{e}");
    assert!(!dir.path().join("taken.gguf.tmp").exists());
    assert!(target.join("keep").exists());
}
