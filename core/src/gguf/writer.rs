//! [`GgufWriter`]: builds a GGUF v3 file (readable by llama.cpp and the Python `gguf`
//! package) from metadata and tensors.
//!
//! The writer checks what it is given as the reader would (unique non-empty keys and
//! tensor names, 1..=4 nonzero dims, whole blocks per row, data length equal to the
//! size the dims and dtype imply), so everything it writes reads back. Tensor data are
//! borrowed (`&'a [u8]`, e.g. views of a mapped source file) or owned (`Vec<u8>`) and are
//! streamed to the output once: the writer never holds a second copy of them.
//!
//! Layout written: header, metadata in insertion order, tensor infos in insertion order,
//! zero padding to the alignment, then each tensor's bytes followed by zero padding to
//! the alignment (as llama.cpp and `gguf-py` do, so the file length is a multiple of it).

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::reader::{MAX_ARRAY_DEPTH, MAX_DIMS};
use super::value::{Array, Value};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::dtype::DType;
use crate::error::{Error, Result};

struct PendingTensor<'a> {
    name: String,
    dims: Vec<usize>,
    dtype: DType,
    data: Cow<'a, [u8]>,
}

/// Collects metadata and tensors, then writes a GGUF file.
pub struct GgufWriter<'a> {
    version: u32,
    alignment: usize,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor<'a>>,
    names: HashSet<String>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty GGUF v3 file with the default alignment (32).
    pub fn new() -> GgufWriter<'a> {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Writes the version field as 2 instead of 3 (the layouts are the same for
    /// little-endian files). For tests of the reader.
    pub fn set_version(&mut self, version: u32) -> Result<()> {
        if version != 2 && version != 3 {
            return Err(Error::invalid(format!("GGUF writer: version {version} is not 2 or 3")));
        }
        self.version = version;
        Ok(())
    }

    /// Adds a metadata entry. Keys must be non-empty and unique. `general.alignment`
    /// must be a uint32 power of two and also sets the alignment used for tensor data.
    pub fn add(&mut self, key: &str, value: impl Into<Value>) -> Result<()> {
        let value = value.into();
        if key.is_empty() {
            return Err(Error::invalid("GGUF writer: empty metadata key"));
        }
        if self.keys.contains(key) {
            return Err(Error::invalid(format!("GGUF writer: duplicate metadata key '{key}'")));
        }
        if let Value::Array(a) = &value {
            check_depth(a, key, 0)?;
        }
        if key == "general.alignment" {
            match value {
                Value::U32(a) if a.is_power_of_two() => self.alignment = a as usize,
                _ => {
                    return Err(Error::invalid(format!(
                        "GGUF writer: general.alignment must be a uint32 power of two, got {value:?}"
                    )))
                }
            }
        }
        self.keys.insert(key.to_string());
        self.metadata.push((key.to_string(), value));
        Ok(())
    }

    /// Adds a tensor: `dims` in ggml order (`dims[0]` = row length), `data` exactly
    /// `dtype.row_bytes(dims[0]) * rows` bytes, borrowed or owned.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[usize],
        dtype: DType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<()> {
        let data = data.into();
        let bad = |msg: String| Error::invalid(format!("GGUF writer: tensor '{name}': {msg}"));
        if name.is_empty() {
            return Err(Error::invalid("GGUF writer: empty tensor name"));
        }
        if self.names.contains(name) {
            return Err(bad("duplicate tensor name".into()));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS || dims.contains(&0) {
            return Err(bad(format!("dims {dims:?} must be 1 to {MAX_DIMS} nonzero sizes")));
        }
        if !dims[0].is_multiple_of(dtype.block_size()) {
            return Err(bad(format!(
                "row length {} is not a multiple of the {dtype} block size {}",
                dims[0],
                dtype.block_size()
            )));
        }
        let row = dtype
            .row_bytes(dims[0])
            .ok_or_else(|| bad(format!("dims {dims:?} overflow")))?;
        let nbytes = dims[1..]
            .iter()
            .try_fold(row, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("dims {dims:?} overflow")))?;
        if data.len() != nbytes {
            return Err(bad(format!(
                "{} bytes given, {nbytes} expected for {dtype} {dims:?}",
                data.len()
            )));
        }
        self.names.insert(name.to_string());
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            dtype,
            data,
        });
        Ok(())
    }

    /// Writes the file to `w` (buffer it: many small writes are made).
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut pos = 0usize;
        let mut put = |w: &mut dyn Write, b: &[u8]| -> std::io::Result<usize> {
            pos += b.len();
            w.write_all(b).map(|()| pos)
        };
        put(w, &GGUF_MAGIC)?;
        put(w, &self.version.to_le_bytes())?;
        put(w, &(self.tensors.len() as u64).to_le_bytes())?;
        let mut end = put(w, &(self.metadata.len() as u64).to_le_bytes())?;
        let mut enc = Vec::new();
        for (k, v) in &self.metadata {
            enc.clear();
            put_str(&mut enc, k);
            enc.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut enc, v);
            end = put(w, &enc)?;
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            enc.clear();
            put_str(&mut enc, &t.name);
            enc.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                enc.extend_from_slice(&(d as u64).to_le_bytes());
            }
            enc.extend_from_slice(&t.dtype.ggml_id().to_le_bytes());
            enc.extend_from_slice(&(offset as u64).to_le_bytes());
            end = put(w, &enc)?;
            offset += t.data.len().next_multiple_of(self.alignment);
        }
        let zeros = vec![0u8; self.alignment];
        let pad = end.next_multiple_of(self.alignment) - end;
        put(w, &zeros[..pad])?;
        for t in &self.tensors {
            put(w, &t.data)?;
            let pad = t.data.len().next_multiple_of(self.alignment) - t.data.len();
            put(w, &zeros[..pad])?;
        }
        Ok(())
    }

    /// Writes the file to `path` (created or truncated).
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |source| Error::io(path.display().to_string(), source);
        let f = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        self.write_to(&mut w).map_err(io)?;
        w.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)
    }

    /// The whole file in memory (tests).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.write_to(&mut v);
        v
    }
}

fn check_depth(a: &Array, key: &str, depth: usize) -> Result<()> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(Error::invalid(format!(
            "GGUF writer: key '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
        )));
    }
    if let Array::Array(v) = a {
        for x in v {
            check_depth(x, key, depth + 1)?;
        }
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::Str(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&a.element_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::Str(v) => {
            for s in v.iter() {
                put_str(out, s);
            }
        }
        Array::Array(v) => {
            for x in v {
                put_array(out, x);
            }
        }
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
    }
}
