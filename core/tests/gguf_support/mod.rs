//! Shared by the GGUF tests and `examples/make_malformed.rs`: a raw GGUF byte builder
//! that can write anything (including what [`GgufWriter`] refuses) and the corpus of
//! malformed files, each with a substring its error message must contain.
//!
//! [`GgufWriter`]: antigravity_core::gguf::GgufWriter
#![allow(dead_code)]

/// GGUF value type ids.
pub const T_U8: u32 = 0;
pub const T_U32: u32 = 4;
pub const T_F32: u32 = 6;
pub const T_BOOL: u32 = 7;
pub const T_STR: u32 = 8;
pub const T_ARR: u32 = 9;

/// A GGUF string: u64 length + bytes.
pub fn gstr(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// One encoded key/value pair.
pub fn kv(key: &[u8], ty: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = gstr(key);
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// An array payload: element type, count, encoded elements.
pub fn arr(ety: u32, n: u64, elems: &[u8]) -> Vec<u8> {
    let mut v = ety.to_le_bytes().to_vec();
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(elems);
    v
}

#[derive(Clone)]
pub struct RawTensor {
    pub name: Vec<u8>,
    pub n_dims: u32,
    pub dims: Vec<u64>,
    pub ty: u32,
    pub offset: u64,
}

/// Every field of a GGUF file, freely settable.
#[derive(Clone)]
pub struct Raw {
    pub magic: [u8; 4],
    pub version: u32,
    pub tensor_count: Option<u64>,
    pub kv_count: Option<u64>,
    pub kvs: Vec<Vec<u8>>,
    pub tensors: Vec<RawTensor>,
    pub alignment: usize,
    pub data_len: usize,
}

/// Byte offsets of the parts of a built file.
#[derive(Debug, Default)]
pub struct Marks {
    pub kv_starts: Vec<usize>,
    pub tensor_starts: Vec<usize>,
    pub infos_end: usize,
    pub data_offset: usize,
}

impl Raw {
    /// A small valid file: a few metadata kinds and two tensors, `a` (f32 [8, 2], 64
    /// bytes at 0) and `b` (q8_0 [32, 2], 68 bytes at 64).
    pub fn valid() -> Raw {
        let mut tokens = Vec::new();
        for t in ["<s>", "a", "é"] {
            tokens.extend(gstr(t.as_bytes()));
        }
        Raw {
            magic: *b"GGUF",
            version: 3,
            tensor_count: None,
            kv_count: None,
            kvs: vec![
                kv(b"general.architecture", T_STR, &gstr(b"llama")),
                kv(b"llama.block_count", T_U32, &2u32.to_le_bytes()),
                kv(b"llama.rope.freq_base", T_F32, &10000f32.to_le_bytes()),
                kv(b"tokenizer.ggml.add_bos_token", T_BOOL, &[1]),
                kv(b"tokenizer.ggml.tokens", T_ARR, &arr(T_STR, 3, &tokens)),
            ],
            tensors: vec![
                RawTensor {
                    name: b"a".to_vec(),
                    n_dims: 2,
                    dims: vec![8, 2],
                    ty: 0,
                    offset: 0,
                },
                RawTensor {
                    name: b"b".to_vec(),
                    n_dims: 2,
                    dims: vec![32, 2],
                    ty: 8,
                    offset: 64,
                },
            ],
            alignment: 32,
            data_len: 64 + 96,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_marked().0
    }

    pub fn build_marked(&self) -> (Vec<u8>, Marks) {
        let mut m = Marks::default();
        let mut v = self.magic.to_vec();
        v.extend_from_slice(&self.version.to_le_bytes());
        v.extend_from_slice(&self.tensor_count.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        v.extend_from_slice(&self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for k in &self.kvs {
            m.kv_starts.push(v.len());
            v.extend_from_slice(k);
        }
        for t in &self.tensors {
            m.tensor_starts.push(v.len());
            v.extend(gstr(&t.name));
            v.extend_from_slice(&t.n_dims.to_le_bytes());
            for d in &t.dims {
                v.extend_from_slice(&d.to_le_bytes());
            }
            v.extend_from_slice(&t.ty.to_le_bytes());
            v.extend_from_slice(&t.offset.to_le_bytes());
        }
        m.infos_end = v.len();
        let a = self.alignment.max(1);
        v.resize(v.len().div_ceil(a) * a, 0);
        m.data_offset = v.len();
        v.extend((0..self.data_len).map(|i| (i % 251) as u8));
        (v, m)
    }
}

/// One malformed file: a name (the corpus file stem), its bytes, and a substring its
/// error message must contain.
pub struct Case {
    pub name: String,
    pub bytes: Vec<u8>,
    pub expect: &'static str,
}

fn case(name: &str, bytes: Vec<u8>, expect: &'static str) -> Case {
    Case {
        name: name.to_string(),
        bytes,
        expect,
    }
}

fn with(f: impl FnOnce(&mut Raw)) -> Vec<u8> {
    let mut r = Raw::valid();
    f(&mut r);
    r.build()
}

/// The corpus. Every case must fail to parse with its `expect` substring in the message.
pub fn malformed_cases() -> Vec<Case> {
    let mut c = Vec::new();
    let (valid, m) = Raw::valid().build_marked();

    // Truncations at structurally interesting points.
    let cuts: Vec<(&str, usize, &'static str)> = vec![
        ("trunc_empty", 0, "empty"),
        ("trunc_in_magic", 2, "magic: needs 4 bytes"),
        ("trunc_in_version", 6, "version: needs 4 bytes"),
        ("trunc_in_tensor_count", 12, "tensor_count: needs 8 bytes"),
        ("trunc_in_kv_count", 20, "metadata_kv_count: needs 8 bytes"),
        ("trunc_after_header", 24, "cannot fit"),
        ("trunc_in_first_key", m.kv_starts[0] + 10, "cannot fit"),
        ("trunc_in_last_kv", m.kv_starts[4] + 40, "array length: needs 8 bytes"),
        (
            "trunc_in_tensor_name",
            m.tensor_starts[0] + 8,
            "tensor #0 name: string length 1 exceeds",
        ),
        ("trunc_in_second_tensor_info", m.tensor_starts[1] + 20, "truncated"),
        ("trunc_at_infos_end", m.infos_end, "outside the file"),
        ("trunc_in_data", m.data_offset + 70, "outside the file"),
        (
            "trunc_last_byte_of_data",
            m.data_offset + 64 + 68 - 1,
            "outside the file",
        ),
    ];
    for (name, at, expect) in cuts {
        c.push(case(name, valid[..at].to_vec(), expect));
    }

    // Header.
    c.push(case("bad_magic", with(|r| r.magic = *b"GGML"), "bad magic"));
    c.push(case("version_1", with(|r| r.version = 1), "version 1 is not supported"));
    c.push(case(
        "version_99",
        with(|r| r.version = 99),
        "version 99 is not supported",
    ));
    c.push(case(
        "version_big_endian",
        with(|r| r.version = 3u32.swap_bytes()),
        "big-endian",
    ));
    c.push(case(
        "tensor_count_u64_max",
        with(|r| r.tensor_count = Some(u64::MAX)),
        "tensor_count 18446744073709551615 cannot fit",
    ));
    c.push(case(
        "tensor_count_2_pow_40",
        with(|r| r.tensor_count = Some(1 << 40)),
        "tensor_count 1099511627776 cannot fit",
    ));
    c.push(case(
        "kv_count_u64_max",
        with(|r| r.kv_count = Some(u64::MAX)),
        "metadata_kv_count 18446744073709551615 cannot fit",
    ));
    c.push(case(
        "kv_count_2_pow_40",
        with(|r| r.kv_count = Some(1 << 40)),
        "metadata_kv_count 1099511627776 cannot fit",
    ));
    c.push(case(
        "kv_count_plus_one",
        with(|r| r.kv_count = Some(6)),
        "tensor #0 name",
    ));

    // Metadata.
    c.push(case(
        "key_length_huge",
        with(|r| r.kvs[0][..8].copy_from_slice(&u64::MAX.to_le_bytes())),
        "string length 18446744073709551615 exceeds",
    ));
    c.push(case(
        "string_value_length_huge",
        with(|r| r.kvs[0] = kv(b"general.architecture", T_STR, &(1u64 << 40).to_le_bytes())),
        "string length 1099511627776 exceeds",
    ));
    c.push(case(
        "array_length_huge",
        with(|r| r.kvs[4] = kv(b"x", T_ARR, &arr(T_U32, 1 << 40, &[]))),
        "count 1099511627776 cannot fit",
    ));
    c.push(case(
        "string_array_length_u64_max",
        with(|r| r.kvs[4] = kv(b"x", T_ARR, &arr(T_STR, u64::MAX, &[]))),
        "count 18446744073709551615 cannot fit",
    ));
    c.push(case(
        "string_array_element_length_huge",
        with(|r| {
            let mut e = gstr(b"ok");
            e.extend_from_slice(&(u64::MAX - 1).to_le_bytes());
            r.kvs[4] = kv(b"x", T_ARR, &arr(T_STR, 2, &e));
        }),
        "element 1: string length 18446744073709551614 exceeds",
    ));
    c.push(case(
        "unknown_value_type",
        with(|r| r.kvs[1] = kv(b"llama.block_count", 13, &2u32.to_le_bytes())),
        "unknown value type 13",
    ));
    c.push(case(
        "unknown_array_element_type",
        with(|r| r.kvs[4] = kv(b"x", T_ARR, &arr(99, 1, &[0]))),
        "unknown array element type 99",
    ));
    c.push(case(
        "duplicate_key",
        with(|r| r.kvs[2] = kv(b"llama.block_count", T_U32, &3u32.to_le_bytes())),
        "duplicate metadata key 'llama.block_count'",
    ));
    c.push(case(
        "empty_key",
        with(|r| r.kvs[2] = kv(b"", T_U32, &3u32.to_le_bytes())),
        "key #2 is empty",
    ));
    c.push(case(
        "key_invalid_utf8",
        with(|r| r.kvs[2] = kv(b"bad\xff\xfekey", T_U32, &3u32.to_le_bytes())),
        "not valid UTF-8",
    ));
    c.push(case(
        "string_value_invalid_utf8",
        with(|r| r.kvs[0] = kv(b"general.architecture", T_STR, &gstr(b"ll\xc3"))),
        "not valid UTF-8",
    ));
    c.push(case(
        "string_array_invalid_utf8",
        with(|r| {
            let mut e = gstr(b"ok");
            e.extend(gstr(b"\x80"));
            r.kvs[4] = kv(b"tokenizer.ggml.tokens", T_ARR, &arr(T_STR, 2, &e));
        }),
        "element 1: string is not valid UTF-8",
    ));
    c.push(case(
        "bool_value_2",
        with(|r| r.kvs[3] = kv(b"tokenizer.ggml.add_bos_token", T_BOOL, &[2])),
        "neither 0 nor 1",
    ));
    c.push(case(
        "bool_array_element_7",
        with(|r| r.kvs[4] = kv(b"x", T_ARR, &arr(T_BOOL, 3, &[0, 1, 7]))),
        "bool element 2 is 7",
    ));
    c.push(case(
        "nested_array_depth_bomb",
        with(|r| {
            // 1000 levels of one-element arrays of arrays.
            let mut p = Vec::new();
            for _ in 0..1000 {
                p.extend(arr(T_ARR, 1, &[]));
            }
            p.extend(arr(T_U8, 0, &[]));
            r.kvs[4] = kv(b"bomb", T_ARR, &p);
        }),
        "nested deeper than",
    ));
    c.push(case(
        "alignment_0",
        with(|r| r.kvs.push(kv(b"general.alignment", T_U32, &0u32.to_le_bytes()))),
        "general.alignment 0 is not a power of two",
    ));
    c.push(case(
        "alignment_3",
        with(|r| r.kvs.push(kv(b"general.alignment", T_U32, &3u32.to_le_bytes()))),
        "general.alignment 3 is not a power of two",
    ));
    c.push(case(
        "alignment_string",
        with(|r| r.kvs.push(kv(b"general.alignment", T_STR, &gstr(b"32")))),
        "general.alignment must be a uint32",
    ));

    // Tensor infos.
    c.push(case(
        "n_dims_0",
        with(|r| r.tensors[0].n_dims = 0),
        "tensor 'a': n_dims 0 is out of range",
    ));
    c.push(case(
        "n_dims_5",
        with(|r| r.tensors[0].n_dims = 5),
        "tensor 'a': n_dims 5 is out of range",
    ));
    c.push(case(
        "n_dims_u32_max",
        with(|r| r.tensors[1].n_dims = u32::MAX),
        "tensor 'b': n_dims 4294967295",
    ));
    c.push(case(
        "dim_zero",
        with(|r| r.tensors[0].dims = vec![8, 0]),
        "tensor 'a': dims[1] is 0",
    ));
    c.push(case(
        "dims_product_overflow",
        with(|r| {
            r.tensors[0].n_dims = 3;
            r.tensors[0].dims = vec![8, 1 << 40, 1 << 40];
        }),
        "element count overflows",
    ));
    c.push(case(
        "unknown_type_q2_k",
        with(|r| r.tensors[1].ty = 10),
        "tensor 'b': ggml type 10 (Q2_K) is not supported",
    ));
    c.push(case(
        "unknown_type_1000",
        with(|r| r.tensors[1].ty = 1000),
        "ggml type 1000 (unknown) is not supported",
    ));
    c.push(case(
        "row_not_multiple_of_block",
        with(|r| r.tensors[1].dims = vec![33, 2]),
        "row length dims[0] = 33 is not a multiple of the q8_0 block size 32",
    ));
    c.push(case(
        "offset_outside_file",
        with(|r| r.tensors[1].offset = 1 << 20),
        "tensor 'b': data at offset 1048576",
    ));
    c.push(case(
        "offset_2_pow_63",
        with(|r| r.tensors[1].offset = 1 << 63),
        "outside the file",
    ));
    c.push(case(
        "offset_end_past_file",
        with(|r| r.tensors[1].offset = 128),
        "outside the file",
    ));
    c.push(case(
        "offset_misaligned",
        with(|r| r.tensors[1].offset = 68),
        "offset 68 is not a multiple of the alignment 32",
    ));
    c.push(case(
        "tensors_overlap",
        with(|r| r.tensors[1].offset = 32),
        "overlaps tensor 'a'",
    ));
    c.push(case(
        "duplicate_tensor_name",
        with(|r| r.tensors[1].name = b"a".to_vec()),
        "duplicate tensor name 'a'",
    ));
    c.push(case(
        "empty_tensor_name",
        with(|r| r.tensors[1].name = Vec::new()),
        "tensor #1 has an empty name",
    ));
    c.push(case(
        "tensor_name_invalid_utf8",
        with(|r| r.tensors[1].name = b"b\xff".to_vec()),
        "tensor #1 name: string is not valid UTF-8",
    ));
    let mut b = valid.clone();
    let at = m.tensor_starts[1];
    b[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    c.push(case(
        "tensor_name_length_huge",
        b,
        "tensor #1 name: string length 9223372036854775807 exceeds",
    ));
    c
}
