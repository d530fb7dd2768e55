//! GGUF, the model file format of ggml / llama.cpp: reading (memory-mapped, zero-copy)
//! and writing.
//!
//! # The format (v2 and v3; <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>)
//!
//! All numbers little-endian. A string is a u64 byte length followed by UTF-8 bytes.
//!
//! ```text
//! magic "GGUF" | version u32 (2 or 3) | tensor_count u64 | metadata_kv_count u64
//! metadata_kv_count × { key: string, value_type: u32, value }
//!     value = a scalar of its type | string | array { elem_type u32, len u64, len × elem }
//! tensor_count × { name: string, n_dims u32, dims u64 × n_dims, ggml_type u32, offset u64 }
//! padding to `general.alignment` (default 32)
//! data section: each tensor at data_start + offset, offset a multiple of the alignment
//! ```
//!
//! Dims are in ggml order: `dims[0]` is the row length (the innermost, contiguous axis),
//! so a Hugging Face `[vocab, hidden]` embedding is stored with `dims = [hidden, vocab]`.
//!
//! # Invariants of a [`GgufFile`]
//!
//! Once [`GgufFile::open`] or [`GgufFile::from_region`] returns `Ok`, every tensor has a
//! supported [`DType`], 1 to 4 nonzero dims whose row length is a whole number of blocks,
//! an absolute `offset` aligned to the file's alignment, and `offset + nbytes` inside the
//! file; no two tensors overlap; tensor names and metadata keys are unique; every string
//! is UTF-8. The parser never allocates more than a small multiple of the file's size,
//! whatever the header claims (see [`reader`]).
//!
//! Tensor bytes are never copied: [`GgufFile::tensor_region`] returns a [`HostRegion`]
//! view into the mapped file, which keeps the mapping alive.

pub mod reader;
pub mod value;
pub mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub use reader::ggml_type_name;
pub use value::{Array, StrArray, Value, ValueType};
pub use writer::GgufWriter;

use crate::backend::HostRegion;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;

/// One tensor's description, as validated by the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The GGUF tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (innermost).
    pub dims: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: usize,
    /// Byte size of the tensor's data.
    pub nbytes: usize,
}

impl TensorInfo {
    /// Number of elements (product of the dims).
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }
    /// Row length (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }
    /// Number of rows (product of all dims but the first).
    pub fn n_rows(&self) -> usize {
        self.dims.get(1..).map_or(0, |d| d.iter().product())
    }
}

/// A parsed GGUF file whose tensor data stay in the (memory-mapped) region.
pub struct GgufFile {
    path: String,
    version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_offset: usize,
    alignment: usize,
    region: HostRegion,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let name = path.display().to_string();
        let io = |source| Error::io(name.clone(), source);
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(Error::format(&name, "file is empty (0 bytes), not a GGUF file").at(0));
        }
        // SAFETY: the mapping is only ever read, never written through. If another
        // process truncates or rewrites the file while it is mapped, reads may see the
        // new bytes or fault (SIGBUS); that is the user's risk, as with every
        // memory-mapped model loader (llama.cpp does the same). All bounds were checked
        // against the length at parse time.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        GgufFile::from_region(HostRegion::file_mapped(Arc::new(map)), &name)
    }

    /// Parses a GGUF file held in memory. `name` stands for the file in errors.
    pub fn from_region(region: HostRegion, name: &str) -> Result<GgufFile> {
        let p = reader::parse(region.bytes(), name)?;
        Ok(GgufFile {
            path: name.to_string(),
            version: p.version,
            metadata: p.metadata,
            key_index: p.key_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
            data_offset: p.data_offset,
            alignment: p.alignment,
            region,
        })
    }

    /// Parses a GGUF file from an owned byte vector (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<GgufFile> {
        GgufFile::from_region(HostRegion::new(Arc::new(bytes)), name)
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The path (or name) given when opening.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }
    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }
    /// All tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
    /// The tensor called `name`, or an error naming it and the file.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name)
            .ok_or_else(|| Error::format(&self.path, "not found").tensor(name))
    }
    /// Absolute byte offset of the data section.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }
    /// The data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }
    /// The whole file.
    pub fn region(&self) -> &HostRegion {
        &self.region
    }

    /// A zero-copy view of `t`'s bytes. Fails only for a `TensorInfo` that does not come
    /// from this file (one from this file was checked to lie inside it).
    pub fn tensor_region(&self, t: &TensorInfo) -> Result<HostRegion> {
        self.region.slice(t.offset, t.nbytes).ok_or_else(|| {
            Error::format(&self.path, format!("{} bytes lie outside the file", t.nbytes))
                .tensor(&t.name)
                .at(t.offset as u64)
                .given_limit(t.offset.saturating_add(t.nbytes) as u64, self.region.len() as u64)
        })
    }

    /// The bytes of `t` (borrowed from the mapping).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> Result<&[u8]> {
        self.region
            .bytes()
            .get(t.offset..t.offset.saturating_add(t.nbytes))
            .ok_or_else(|| {
                Error::format(&self.path, format!("{} bytes lie outside the file", t.nbytes))
                    .tensor(&t.name)
                    .at(t.offset as u64)
                    .given_limit(t.offset.saturating_add(t.nbytes) as u64, self.region.len() as u64)
            })
    }

    fn wrong_type(&self, key: &str, expected: &str, found: String) -> Error {
        Error::format(&self.path, format!("metadata key '{key}'")).expected_got(expected, found)
    }

    fn get_integer<T: TryFrom<i128>>(&self, key: &str, expected: &str) -> Result<Option<T>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        match v.as_integer() {
            Some(i) => T::try_from(i).map(Some).map_err(|_| {
                Error::format(
                    &self.path,
                    format!("metadata key '{key}': value {i} does not fit in {expected}"),
                )
            }),
            None => Err(self.wrong_type(key, expected, v.describe())),
        }
    }

    /// `key` as a u32; any integer type whose value fits is accepted.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>> {
        self.get_integer(key, "an integer (u32)")
    }
    /// `key` as a u64; any non-negative integer is accepted.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get_integer(key, "an integer (u64)")
    }
    /// `key` as an i64; any integer that fits is accepted.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>> {
        self.get_integer(key, "an integer (i64)")
    }
    /// `key` as an f32; float32, float64 (rounded) and integers are accepted.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        match *v {
            Value::F32(x) => Ok(Some(x)),
            Value::F64(x) => Ok(Some(x as f32)),
            _ => match v.as_integer() {
                Some(i) => Ok(Some(i as f32)),
                None => Err(self.wrong_type(key, "a number (f32)", v.describe())),
            },
        }
    }
    /// `key` as a bool.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(key, "a bool", v.describe())),
        }
    }
    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, "a string", v.describe())),
        }
    }
    /// `key` as an array of any type.
    pub fn get_array(&self, key: &str) -> Result<Option<&Array>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, "an array", v.describe())),
        }
    }
    /// `key` as a string array, borrowed (the vocabulary: `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Option<&StrArray>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::Str(a))) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, "an array of strings", v.describe())),
        }
    }
    /// `key` as an i32 array; arrays of any integer type are accepted if every element fits.
    pub fn get_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>> {
        let Some(a) = self.get_array(key)? else { return Ok(None) };
        if let Array::I32(v) = a {
            return Ok(Some(v.clone()));
        }
        let mut out = Vec::with_capacity(a.len());
        for i in 0..a.len() {
            let Some(x) = a.integer_at(i) else {
                return Err(self.wrong_type(key, "an array of integers (i32)", a.describe()));
            };
            out.push(i32::try_from(x).map_err(|_| {
                Error::format(
                    &self.path,
                    format!("metadata key '{key}': element {i} = {x} does not fit in i32"),
                )
            })?);
        }
        Ok(Some(out))
    }
    /// `key` as an f32 array (float32, or float64 rounded).
    pub fn get_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        match self.get_array(key)? {
            None => Ok(None),
            Some(Array::F32(v)) => Ok(Some(v.clone())),
            Some(Array::F64(v)) => Ok(Some(v.iter().map(|&x| x as f32).collect())),
            Some(a) => Err(self.wrong_type(key, "an array of floats (f32)", a.describe())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> GgufFile {
        let mut w = GgufWriter::new();
        w.add("general.architecture", "llama").unwrap();
        w.add("n", 7u8).unwrap();
        w.add_tensor("w", &[32, 2], DType::Q4_0, vec![1u8; 36]).unwrap();
        GgufFile::from_bytes(w.to_bytes(), "tiny.gguf").unwrap()
    }

    #[test]
    fn gguf_tiny_file_round_trips() {
        let f = tiny();
        assert_eq!(f.version(), 3);
        assert_eq!(f.path(), "tiny.gguf");
        assert_eq!(f.get_u32("n").unwrap(), Some(7));
        let t = f.require_tensor("w").unwrap();
        assert_eq!((t.row_len(), t.n_rows(), t.n_elements(), t.nbytes), (32, 2, 64, 36));
        assert_eq!(t.offset, f.data_offset());
        assert_eq!(f.tensor_region(t).unwrap().bytes(), &[1u8; 36]);
        let e = f.require_tensor("v").unwrap_err();
        assert_eq!((e.file(), e.tensor_name()), (Some("tiny.gguf"), Some("v")));
        assert_eq!(e.to_string(), "tiny.gguf: tensor `v`: not found");
    }

    #[test]
    fn gguf_foreign_tensor_info_is_an_error_not_a_panic() {
        let f = tiny();
        let mut t = f.tensors()[0].clone();
        t.offset = usize::MAX - 4;
        assert!(f.tensor_region(&t).is_err());
        assert!(f.tensor_bytes(&t).is_err());
    }

    #[test]
    fn gguf_open_reports_missing_files_with_their_path() {
        let e = GgufFile::open(Path::new("/nonexistent/model.gguf")).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Io);
        assert!(e.to_string().starts_with("/nonexistent/model.gguf: "), "{e}");
    }

    #[test]
    fn gguf_file_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<GgufFile>();
        send_sync::<GgufWriter<'static>>();
    }

    #[test]
    fn gguf_type_names_follow_ggml() {
        assert_eq!(ggml_type_name(12), "Q4_K");
        assert_eq!(ggml_type_name(30), "BF16");
        assert_eq!(ggml_type_name(39), "MXFP4");
        assert_eq!(ggml_type_name(1000), "unknown");
        for id in 0..=12 {
            assert_eq!(ValueType::from_id(id).map(ValueType::id), Some(id));
        }
        assert_eq!(ValueType::from_id(13), None);
    }

    #[test]
    fn gguf_str_array_keeps_strings_in_one_buffer() {
        let a: StrArray = ["", "ab", "ç"].into_iter().collect();
        assert_eq!(a.len(), 3);
        assert_eq!(a.total_bytes(), 4);
        assert_eq!(a.iter().collect::<Vec<_>>(), ["", "ab", "ç"]);
        assert_eq!(a.get(3), None);
        assert_eq!(format!("{a:?}"), r#"["", "ab", "ç"]"#);
    }
}
