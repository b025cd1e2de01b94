//! Metadata values.

/// GGUF value type numbers, as stored in files.
pub mod value_type {
    /// `u8`
    pub const U8: u32 = 0;
    /// `i8`
    pub const I8: u32 = 1;
    /// `u16`
    pub const U16: u32 = 2;
    /// `i16`
    pub const I16: u32 = 3;
    /// `u32`
    pub const U32: u32 = 4;
    /// `i32`
    pub const I32: u32 = 5;
    /// `f32`
    pub const F32: u32 = 6;
    /// `bool` (one byte, 0 or 1)
    pub const BOOL: u32 = 7;
    /// string (u64 length + UTF-8 bytes)
    pub const STRING: u32 = 8;
    /// array (u32 element type + u64 count + elements)
    pub const ARRAY: u32 = 9;
    /// `u64`
    pub const U64: u32 = 10;
    /// `i64`
    pub const I64: u32 = 11;
    /// `f64`
    pub const F64: u32 = 12;
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 6.
    F32(f32),
    /// Type 12.
    F64(f64),
    /// Type 7.
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9. All elements of a stored array have the same type.
    Array(Vec<Value>),
}

impl Value {
    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of any integer type, if it is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value of any integer type, if it fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value of any float or integer type (64-bit integers may round).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The boolean, if this is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The type's name as used in messages ("u32", "string", "array", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// The GGUF type number (see [`value_type`]).
    pub fn gguf_type(&self) -> u32 {
        match self {
            Value::U8(_) => value_type::U8,
            Value::I8(_) => value_type::I8,
            Value::U16(_) => value_type::U16,
            Value::I16(_) => value_type::I16,
            Value::U32(_) => value_type::U32,
            Value::I32(_) => value_type::I32,
            Value::U64(_) => value_type::U64,
            Value::I64(_) => value_type::I64,
            Value::F32(_) => value_type::F32,
            Value::F64(_) => value_type::F64,
            Value::Bool(_) => value_type::BOOL,
            Value::String(_) => value_type::STRING,
            Value::Array(_) => value_type::ARRAY,
        }
    }

    /// A short description for messages: the type, and the value unless it is long.
    pub fn describe(&self) -> String {
        match self {
            Value::String(s) if s.len() > 64 => format!("a string of {} bytes", s.len()),
            Value::String(s) => format!("string {s:?}"),
            Value::Array(a) => match a.first() {
                Some(first) => format!("an array of {} {}", a.len(), first.type_name()),
                None => "an empty array".to_string(),
            },
            Value::U8(v) => format!("u8 {v}"),
            Value::I8(v) => format!("i8 {v}"),
            Value::U16(v) => format!("u16 {v}"),
            Value::I16(v) => format!("i16 {v}"),
            Value::U32(v) => format!("u32 {v}"),
            Value::I32(v) => format!("i32 {v}"),
            Value::U64(v) => format!("u64 {v}"),
            Value::I64(v) => format!("i64 {v}"),
            Value::F32(v) => format!("f32 {v}"),
            Value::F64(v) => format!("f64 {v}"),
            Value::Bool(v) => format!("bool {v}"),
        }
    }
}

/// The smallest number of bytes one stored value of type `ty` can take, or `None` for an
/// unknown type.
pub(crate) fn min_encoded_len(ty: u32) -> Option<u64> {
    Some(match ty {
        value_type::U8 | value_type::I8 | value_type::BOOL => 1,
        value_type::U16 | value_type::I16 => 2,
        value_type::U32 | value_type::I32 | value_type::F32 => 4,
        value_type::U64 | value_type::I64 | value_type::F64 => 8,
        value_type::STRING => 8,
        value_type::ARRAY => 12,
        _ => return None,
    })
}
