//! Element types, as GGML numbers and lays them out.
//!
//! Every fact about a type's storage (block size, bytes per block, GGUF type id) lives in
//! this one table; all other code asks [`DType`]. Block sizes and ids follow ggml's
//! `ggml_type` enum (`ggml.h`): F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7,
//! Q8_0 = 8, Q8_1 = 9, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30.

use core::fmt;

/// Number of elements in one Q4_0 block (ggml `QK4_0`).
pub const QK4_0: usize = 32;
/// Number of elements in one Q4_1 block (ggml `QK4_1`).
pub const QK4_1: usize = 32;
/// Number of elements in one Q8_0 block (ggml `QK8_0`).
pub const QK8_0: usize = 32;
/// Number of elements in one Q8_1 block (ggml `QK8_1`).
pub const QK8_1: usize = 32;
/// Number of elements in one Q5_0 block (ggml `QK5_0`).
pub const QK5_0: usize = 32;
/// Number of elements in one Q5_1 block (ggml `QK5_1`).
pub const QK5_1: usize = 32;
/// Number of elements in one K-quant super-block (ggml `QK_K`): Q4_K, Q5_K, Q6_K, Q8_K.
pub const QK_K: usize = 256;

/// A tensor element type (named as ggml names them).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q8_1,
    Q5_0,
    Q5_1,
    Q4_K,
    Q5_K,
    Q6_K,
    /// Activations only (the K-quant dot products' partner), as in ggml.
    Q8_K,
}

impl DType {
    /// Every type we know, in GGML id order.
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q8_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q8_K,
        DType::BF16,
    ];

    /// Elements per block (1 for plain float types).
    pub const fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0 => QK4_0,
            DType::Q4_1 => QK4_1,
            DType::Q8_0 => QK8_0,
            DType::Q8_1 => QK8_1,
            DType::Q5_0 => QK5_0,
            DType::Q5_1 => QK5_1,
            DType::Q4_K | DType::Q5_K | DType::Q6_K | DType::Q8_K => QK_K,
        }
    }

    /// Bytes per block (per element for plain float types).
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q8_0 => 34,
            DType::Q8_1 => 36,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
            DType::Q8_K => 292,
        }
    }

    /// True for the block-quantized types.
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes needed for one row of `n` elements, or `None` when `n` is not a whole number
    /// of blocks or the size overflows.
    pub const fn row_bytes(self, n: usize) -> Option<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.block_bytes())
    }

    /// The GGML / GGUF type id.
    pub const fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q8_0 => 8,
            DType::Q8_1 => 9,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::Q8_K => 15,
            DType::BF16 => 30,
        }
    }

    /// The type with this GGML id, if we support it.
    pub const fn from_ggml_id(id: u32) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            8 => DType::Q8_0,
            9 => DType::Q8_1,
            6 => DType::Q5_0,
            7 => DType::Q5_1,
            12 => DType::Q4_K,
            13 => DType::Q5_K,
            14 => DType::Q6_K,
            15 => DType::Q8_K,
            30 => DType::BF16,
            _ => return None,
        })
    }

    /// Lower-case name as used on the command line and in ggml (`q4_0`, `f16`, …).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q8_0 => "q8_0",
            DType::Q8_1 => "q8_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q4_K => "q4_k",
            DType::Q5_K => "q5_k",
            DType::Q6_K => "q6_k",
            DType::Q8_K => "q8_k",
        }
    }

    /// Parses [`DType::name`] (case-insensitive).
    pub fn parse(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_match_ggml() {
        for t in DType::ALL {
            assert_eq!(DType::from_ggml_id(t.ggml_id()), Some(t));
            assert_eq!(DType::parse(t.name()), Some(t));
        }
        assert_eq!(DType::Q4_0.row_bytes(576), Some(18 * 18));
        assert_eq!(DType::Q4_0.row_bytes(33), None);
        assert_eq!(DType::from_ggml_id(10), None); // Q2_K is not supported
        assert_eq!(DType::Q4_K.row_bytes(576), None); // K-quant rows are multiples of 256
        assert_eq!(DType::Q6_K.row_bytes(512), Some(420));
    }
}
