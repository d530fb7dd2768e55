//! The GGUF parser: bytes in, a validated `Parsed` (wrapped by [`super::GgufFile`]) out.
//!
//! Every field is checked before it is used, and no allocation is ever sized by a field
//! that has not been checked against the bytes that remain: a count `n` of items that
//! each take at least `m` bytes must satisfy `n * m <= remaining` before any
//! `Vec::with_capacity(n)`; where an in-memory item is larger than its smallest encoding
//! (metadata entries, nested arrays) only a small fixed number is preallocated and the
//! rest grows with what is actually parsed. So no single allocation exceeds about 3× the
//! file's size, whatever its header claims (`tests/gguf_fuzz.rs` checks this with a
//! measuring allocator). Nested arrays are limited to [`MAX_ARRAY_DEPTH`] levels so a
//! crafted file cannot exhaust the stack. String arrays (vocabularies) are read in two
//! passes — lengths, then bytes — into one buffer of the exact size.
//!
//! Errors are of kind [`ErrorKind::Format`](crate::error::ErrorKind::Format), with the file name, the byte offset ([`Error::offset`]) and a message; rendered
//! as `<file>: byte <offset>: <what>: <problem>`.

use std::collections::HashMap;
use std::fmt;

use super::value::{Array, StrArray, Value, ValueType};
use super::{TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Deepest nesting of arrays inside arrays the reader accepts. Real files use at most 2.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Fewest bytes a metadata key/value pair takes: key length (8) + a 1-byte key + value
/// type (4) + a 1-byte value.
const MIN_KV_BYTES: usize = 8 + 1 + 4 + 1;
/// Metadata entries preallocated at most (real files have 20–60).
const PREALLOC_KVS: usize = 256;
/// Fewest bytes a tensor info takes: name length (8) + a 1-byte name + n_dims (4) + one
/// dim (8) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: usize = 8 + 1 + 4 + 8 + 4 + 8;

/// What the parser found; [`super::GgufFile`] wraps it with the region.
pub(crate) struct Parsed {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub alignment: usize,
    pub data_offset: usize,
}

/// Name of a ggml type id, supported or not, for error messages (`ggml.h`'s enum).
pub fn ggml_type_name(id: u32) -> &'static str {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2 (removed)",
        "Q4_3 (removed)",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4 (removed)",
        "Q4_0_4_8 (removed)",
        "Q4_0_8_8 (removed)",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4 (removed)",
        "IQ4_NL_4_8 (removed)",
        "IQ4_NL_8_8 (removed)",
        "MXFP4",
    ];
    NAMES.get(id as usize).copied().unwrap_or("unknown")
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, at: usize, msg: impl fmt::Display) -> Error {
        Error::format(self.file, msg.to_string()).at(at as u64)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: fmt::Arguments<'_>) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(
                self.pos,
                format_args!(
                    "{what}: needs {n} bytes but only {} remain (file truncated?)",
                    self.remaining()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: fmt::Arguments<'_>) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: fmt::Arguments<'_>) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: fmt::Arguments<'_>) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length, then that many bytes of UTF-8.
    fn string(&mut self, what: fmt::Arguments<'_>) -> Result<&'a str> {
        let at = self.pos;
        let len = self.u64(format_args!("{what}: string length"))?;
        if len > self.remaining() as u64 {
            return Err(self.err(
                at,
                format_args!(
                    "{what}: string length {len} exceeds the {} bytes left in the file",
                    self.remaining()
                ),
            ));
        }
        let bytes = self.take(len as usize, what)?;
        std::str::from_utf8(bytes).map_err(|e| {
            self.err(
                at + 8 + e.valid_up_to(),
                format_args!("{what}: string is not valid UTF-8 ({e})"),
            )
        })
    }

    /// Checks that `count` items of at least `min` bytes each can fit in what remains,
    /// and returns the count as a `usize`. Called before any allocation sized by `count`.
    fn check_count(&self, at: usize, count: u64, min: usize, what: fmt::Arguments<'_>) -> Result<usize> {
        let fits = (count as u128) * (min as u128) <= self.remaining() as u128;
        if !fits {
            return Err(self.err(
                at,
                format_args!(
                    "{what}: count {count} cannot fit: each needs at least {min} bytes and only {} remain",
                    self.remaining()
                ),
            ));
        }
        Ok(count as usize)
    }
}

/// Parses a whole GGUF file held in `buf`. `file` names it in errors.
pub(crate) fn parse(buf: &[u8], file: &str) -> Result<Parsed> {
    let mut c = Cursor { buf, pos: 0, file };
    if buf.is_empty() {
        return Err(c.err(0, "file is empty (0 bytes), not a GGUF file"));
    }

    // Header.
    let magic = c.array::<4>(format_args!("magic"))?;
    if magic != GGUF_MAGIC {
        return Err(c.err(
            0,
            format_args!("bad magic {magic:02x?}: expected \"GGUF\" (47 47 55 46); not a GGUF file"),
        ));
    }
    let version = c.u32(format_args!("version"))?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            " (a big-endian file? only little-endian GGUF is supported)"
        } else if version == 1 {
            " (GGUF v1 has 32-bit counts; re-convert the model with a current llama.cpp)"
        } else {
            ""
        };
        return Err(c.err(
            4,
            format_args!("GGUF version {version} is not supported, only 2 and 3{hint}"),
        ));
    }
    let tc_at = c.pos;
    let tensor_count = c.u64(format_args!("tensor_count"))?;
    let kv_at = c.pos;
    let kv_count = c.u64(format_args!("metadata_kv_count"))?;
    // Both sections must fit in what follows the header, together.
    let need = (tensor_count as u128) * (MIN_TENSOR_INFO_BYTES as u128) + (kv_count as u128) * (MIN_KV_BYTES as u128);
    if need > c.remaining() as u128 {
        let (at, what, count, min) = if (tensor_count as u128) * (MIN_TENSOR_INFO_BYTES as u128) > c.remaining() as u128
        {
            (tc_at, "tensor_count", tensor_count, MIN_TENSOR_INFO_BYTES)
        } else if (kv_count as u128) * (MIN_KV_BYTES as u128) > c.remaining() as u128 {
            (kv_at, "metadata_kv_count", kv_count, MIN_KV_BYTES)
        } else {
            (
                tc_at,
                "tensor_count + metadata_kv_count",
                tensor_count.saturating_add(kv_count),
                MIN_KV_BYTES,
            )
        };
        return Err(c.err(
            at,
            format_args!(
                "{what} {count} cannot fit: each entry needs at least {min} bytes and only {} remain after the header (file truncated or corrupt?)",
                c.remaining()
            ),
        ));
    }
    let tensor_count = tensor_count as usize;
    let kv_count = kv_count as usize;

    // Metadata.
    // A (String, Value) entry is larger than the 14 bytes a kv can take in the file, so
    // preallocate only up to a real file's count and let a larger (parsed!) one grow.
    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(kv_count.min(PREALLOC_KVS));
    let mut key_index: HashMap<String, usize> = HashMap::with_capacity(kv_count.min(PREALLOC_KVS));
    let mut alignment_at = 0;
    for i in 0..kv_count {
        let at = c.pos;
        let key = c.string(format_args!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(c.err(at, format_args!("metadata key #{i} is empty")));
        }
        if key_index.contains_key(key) {
            return Err(c.err(at, format_args!("duplicate metadata key '{key}'")));
        }
        let ty_at = c.pos;
        let ty_id = c.u32(format_args!("key '{key}': value type"))?;
        let ty = ValueType::from_id(ty_id).ok_or_else(|| {
            c.err(
                ty_at,
                format_args!("key '{key}': unknown value type {ty_id} (valid: 0..=12)"),
            )
        })?;
        if key == "general.alignment" {
            alignment_at = c.pos;
        }
        let value = read_value(&mut c, ty, key, 0)?;
        key_index.insert(key.to_string(), i);
        metadata.push((key.to_string(), value));
    }

    // Alignment.
    let alignment = match key_index.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = v.as_integer().and_then(|a| u32::try_from(a).ok()).ok_or_else(|| {
                c.err(
                    alignment_at,
                    format_args!("general.alignment must be a uint32, found {}", v.describe()),
                )
            })?;
            if a == 0 || !a.is_power_of_two() {
                return Err(c.err(
                    alignment_at,
                    format_args!("general.alignment {a} is not a power of two"),
                ));
            }
            a as usize
        }
    };

    // Tensor infos (offsets relative to the data section until it is known).
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(tensor_count);
    let mut tensor_index: HashMap<String, usize> = HashMap::with_capacity(tensor_count);
    let mut info_at: Vec<usize> = Vec::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let at = c.pos;
        let name = c.string(format_args!("tensor #{i} name"))?;
        if name.is_empty() {
            return Err(c.err(at, format_args!("tensor #{i} has an empty name")));
        }
        if tensor_index.contains_key(name) {
            return Err(c.err(at, format_args!("duplicate tensor name '{name}'")));
        }
        let nd_at = c.pos;
        let n_dims = c.u32(format_args!("tensor '{name}': n_dims"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(c.err(
                nd_at,
                format_args!("tensor '{name}': n_dims {n_dims} is out of range 1..={MAX_DIMS}"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for d in 0..n_dims {
            let d_at = c.pos;
            let dim = c.u64(format_args!("tensor '{name}': dims[{d}]"))?;
            if dim == 0 {
                return Err(c.err(d_at, format_args!("tensor '{name}': dims[{d}] is 0")));
            }
            n_elements = n_elements
                .checked_mul(dim)
                .filter(|&n| n <= i64::MAX as u64 && usize::try_from(n).is_ok())
                .ok_or_else(|| {
                    c.err(
                        d_at,
                        format_args!("tensor '{name}': element count overflows (dims so far {dims:?} × {dim})"),
                    )
                })?;
            dims.push(dim as usize);
        }
        let ty_at = c.pos;
        let ty = c.u32(format_args!("tensor '{name}': type"))?;
        let dtype = DType::from_ggml_id(ty).ok_or_else(|| {
            c.err(
                ty_at,
                format_args!(
                    "tensor '{name}': ggml type {ty} ({}) is not supported",
                    ggml_type_name(ty)
                ),
            )
        })?;
        let row = dims[0];
        if row % dtype.block_size() != 0 {
            return Err(c.err(
                nd_at + 4,
                format_args!(
                    "tensor '{name}': row length dims[0] = {row} is not a multiple of the {dtype} block size {}",
                    dtype.block_size()
                ),
            ));
        }
        let row_bytes = dtype.row_bytes(row).ok_or_else(|| {
            c.err(
                nd_at + 4,
                format_args!("tensor '{name}': row of {row} {dtype} overflows in bytes"),
            )
        })?;
        let nbytes = row_bytes
            .checked_mul(n_elements as usize / row)
            .ok_or_else(|| c.err(nd_at, format_args!("tensor '{name}': byte size overflows")))?;
        let off_at = c.pos;
        let offset = c.u64(format_args!("tensor '{name}': offset"))?;
        if offset % alignment as u64 != 0 {
            return Err(c.err(
                off_at,
                format_args!("tensor '{name}': offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        tensor_index.insert(name.to_string(), i);
        info_at.push(off_at);
        tensors.push(TensorInfo {
            name: name.to_string(),
            dims,
            dtype,
            offset,
            nbytes,
        });
    }

    // Data section: starts at the next multiple of the alignment.
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    for (t, &off_at) in tensors.iter_mut().zip(&info_at) {
        let abs = data_offset.checked_add(t.offset);
        let end = abs.and_then(|a| a.checked_add(t.nbytes));
        match (abs, end) {
            (Some(abs), Some(end)) if end <= buf.len() => t.offset = abs,
            _ => {
                return Err(c.err(
                    off_at,
                    format_args!(
                        "tensor '{}': data at offset {} + {} bytes (data section starts at byte {data_offset}) \
                         lies outside the file of {} bytes",
                        t.name,
                        t.offset,
                        t.nbytes,
                        buf.len()
                    ),
                ))
            }
        }
    }
    // No two tensors may share bytes.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_unstable_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.nbytes > b.offset {
            return Err(c.err(
                info_at[w[1]],
                format_args!(
                    "tensor '{}' (bytes {}..{}) overlaps tensor '{}' (bytes {}..{})",
                    b.name,
                    b.offset,
                    b.offset + b.nbytes,
                    a.name,
                    a.offset,
                    a.offset + a.nbytes
                ),
            ));
        }
    }

    Ok(Parsed {
        version,
        metadata,
        key_index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

fn read_value(c: &mut Cursor<'_>, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
    macro_rules! what {
        () => {
            format_args!("key '{}': {} value", key, ty)
        };
    }
    Ok(match ty {
        ValueType::U8 => Value::U8(u8::from_le_bytes(c.array(what!())?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(c.array(what!())?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(what!())?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(what!())?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(what!())?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(what!())?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(what!())?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(what!())?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(what!())?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(what!())?)),
        ValueType::Bool => {
            let at = c.pos;
            match c.array::<1>(what!())?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(c.err(at, format_args!("key '{key}': bool value {b} is neither 0 nor 1"))),
            }
        }
        ValueType::Str => Value::Str(c.string(what!())?.to_string()),
        ValueType::Array => Value::Array(read_array(c, key, depth)?),
    })
}

/// Decodes a fixed-size-element array from its (bounds-checked, bool-checked) bytes.
fn fixed_array(ety: ValueType, bytes: &[u8]) -> Array {
    match ety {
        ValueType::I8 => Array::I8(fixed(bytes, i8::from_le_bytes)),
        ValueType::U16 => Array::U16(fixed(bytes, u16::from_le_bytes)),
        ValueType::I16 => Array::I16(fixed(bytes, i16::from_le_bytes)),
        ValueType::U32 => Array::U32(fixed(bytes, u32::from_le_bytes)),
        ValueType::I32 => Array::I32(fixed(bytes, i32::from_le_bytes)),
        ValueType::F32 => Array::F32(fixed(bytes, f32::from_le_bytes)),
        ValueType::U64 => Array::U64(fixed(bytes, u64::from_le_bytes)),
        ValueType::I64 => Array::I64(fixed(bytes, i64::from_le_bytes)),
        ValueType::F64 => Array::F64(fixed(bytes, f64::from_le_bytes)),
        ValueType::Bool => Array::Bool(bytes.iter().map(|&b| b == 1).collect()),
        // Only fixed-size types reach here; u8 is the byte copy.
        ValueType::U8 | ValueType::Str | ValueType::Array => Array::U8(bytes.to_vec()),
    }
}

/// Converts `n` little-endian fixed-size items of `bytes` (already bounds-checked).
fn fixed<T, const N: usize>(bytes: &[u8], conv: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|ch| {
            let mut a = [0u8; N];
            a.copy_from_slice(ch);
            conv(a)
        })
        .collect()
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array> {
    let at = c.pos;
    if depth >= MAX_ARRAY_DEPTH {
        return Err(c.err(
            at,
            format_args!("key '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH} levels"),
        ));
    }
    let ety_id = c.u32(format_args!("key '{key}': array element type"))?;
    let ety = ValueType::from_id(ety_id).ok_or_else(|| {
        c.err(
            at,
            format_args!("key '{key}': unknown array element type {ety_id} (valid: 0..=12)"),
        )
    })?;
    let n_at = c.pos;
    let n = c.u64(format_args!("key '{key}': array length"))?;
    let n = c.check_count(n_at, n, ety.min_size(), format_args!("key '{key}': array of {ety}"))?;
    if let Some(size) = ety.fixed_size() {
        let bytes = c.take(n * size, format_args!("key '{key}': array data"))?;
        if ety == ValueType::Bool {
            if let Some(i) = bytes.iter().position(|&b| b > 1) {
                return Err(c.err(
                    c.pos - bytes.len() + i,
                    format_args!("key '{key}': bool element {i} is {}, neither 0 nor 1", bytes[i]),
                ));
            }
        }
        return Ok(fixed_array(ety, bytes));
    }
    match ety {
        ValueType::Str => {
            // First pass: check every length and record where each string ends in the
            // concatenation, so the buffer is allocated once at its exact size (bounded
            // by the file) instead of growing.
            let start = c.pos;
            let mut ends = Vec::with_capacity(n);
            let mut total = 0usize;
            for i in 0..n {
                let at = c.pos;
                let len = c.u64(format_args!("key '{key}': element {i}: string length"))?;
                if len > c.remaining() as u64 {
                    return Err(c.err(
                        at,
                        format_args!(
                            "key '{key}': element {i}: string length {len} exceeds the {} bytes left in the file",
                            c.remaining()
                        ),
                    ));
                }
                c.pos += len as usize;
                total += len as usize;
                ends.push(total);
            }
            let end = c.pos;
            // Second pass: gather the bytes, then validate UTF-8 once for the whole buffer
            // and check that every string boundary is a char boundary (which makes each
            // string valid on its own). Lengths were checked above, so slicing is in range.
            let mut data = Vec::with_capacity(total);
            let mut p = start;
            let mut prev = 0;
            for &e in &ends {
                let len = e - prev;
                data.extend_from_slice(&c.buf[p + 8..p + 8 + len]);
                p += 8 + len;
                prev = e;
            }
            let whole = String::from_utf8(data)
                .ok()
                .filter(|s| ends.iter().all(|&e| s.is_char_boundary(e)));
            let Some(data) = whole else {
                // Slow path, only to name the bad element and its byte offset.
                c.pos = start;
                for i in 0..n {
                    c.string(format_args!("key '{key}': element {i}"))?;
                }
                return Err(c.err(start, format_args!("key '{key}': string array is not valid UTF-8")));
            };
            c.pos = end;
            let a = StrArray::from_parts(data, ends);
            Ok(Array::Str(a))
        }
        _ => {
            // An `Array` (32 bytes) is larger than the 12 an encoded one can take, and
            // levels nest: preallocate little and let parsed elements grow the Vec.
            let mut v = Vec::with_capacity(n.min(PREALLOC_KVS));
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Ok(Array::Array(v))
        }
    }
}
