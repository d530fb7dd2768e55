//! Row-interleaved ("x8") weight layouts for the CPU matmul kernels, their scalar
//! kernels (the twins every SIMD version is tested against), and the activation block
//! they multiply with.
//!
//! **Why.** A GGUF matrix stores each row's blocks one after another. A kernel that
//! works on several rows at once (to share the activation loads) then reads several
//! far-apart streams, converts one f16 scale per row per block, and needs a horizontal
//! sum per row at the end. Measured on an AMD EPYC (Zen 4; `examples/decode_stream.rs`,
//! see `docs/perf-notes.md`): the four-row Q8_0 kernel ran at 25 GB/s on a
//! cache-resident matrix and at 4.7 GB/s when the matrix streamed from DRAM, where a
//! plain sequential read reaches 22 GB/s. Decode reads every weight from DRAM once per
//! token, so that is what it got.
//!
//! **Layout.** Eight consecutive rows are interleaved block by block: group `g`, block
//! `b` is one `Block*x8` holding block `b` of rows `8g..8g+8`, so a matrix is read as one
//! sequential stream, the eight scales convert with one instruction, and eight outputs
//! come out of one vector accumulator. Within a block the quant bytes are cut into
//! 4-byte pieces and interleaved row by row:
//! * Q4_0 / Q4_1 (16 bytes a row): byte `32q + 4j + i` = row `j`'s `qs[4q + i]`, for
//!   `q < 4`. Its low nibble is element `4q + i`, its high nibble element `4q + i + 16`,
//!   so a 32-byte vector's low nibbles are "elements `4q..4q+4` of rows 0..8" — one
//!   4-byte piece per 32-bit lane — and its high nibbles the same for `4(q+4)..`.
//! * Q8_0 (32 bytes a row): byte `32c + 4j + i` = row `j`'s `qs[4c + i]`, for `c < 8`.
//! * Q5_0: the nibbles as Q4_0; the fifth bits of row `j` in one 32-bit word per row,
//!   permuted so that byte `i` holds, in bit `q`, the bit of element `4q + i` and, in bit
//!   `4 + q`, that of element `16 + 4q + i` — the bits of piece `q` are then one mask and
//!   one shift away from bit 4 of the byte their nibble sits in.
//! * Q5_1: as Q5_0, with the eight rows' minimums `m` beside their scales.
//! * Q4_K (super-blocks of 256): per sub-block pair `c < 4` the 32 bytes `qs[32c..]` of
//!   each row cut into 4-byte pieces as Q4 (byte `256c + 32p + 4j + i` = row `j`'s
//!   `qs[32c + 4p + i]`: low nibbles are sub-block `2c`, high nibbles `2c + 1`); the 12
//!   packed scale bytes stored byte-major (`scales[8k + j]` = row `j`'s `scales[k]`), so
//!   eight rows' 6-bit scales and minimums unpack with byte-vector operations.
//! * Q5_K: as Q4_K, plus the 32 fifth-bit bytes of each row cut into the same 4-byte
//!   pieces (byte `32p + 4j + i` = row `j`'s `qh[4p + i]`). Byte `l` of a row's `qh` holds
//!   in bit `s` the fifth bit of element `l` of sub-block `s`, so piece `p` of the bits
//!   serves piece `p` of every sub-block pair: bit `2c` for the low nibbles, `2c + 1` for
//!   the high ones.
//! * Q6_K: the 256 six-bit values of each row re-cut into eight 32-element chunks, each
//!   stored whole (its two sub-blocks' scales, low bits, top bits; `ChunkQ6_Kx8`): in
//!   chunk `c`, low-bit byte `32p + 4j + i` holds element `32c + 4p + i` of row `j` in
//!   its low nibble and `32c + 16 + 4p + i` in its high nibble (the chunk's two
//!   16-element sub-blocks), and two 32-bit words per row hold the top two bits of those
//!   elements (bits `2p..2p+2` of byte `i`). A super-block is then read front to back
//!   (scales, low and top bits in separate regions ran at a third of Q4_K's bytes per
//!   second in decode: three streams per block).
//!
//! The K-quant layouts rearrange bits within a super-block, so they too have exactly the
//! bytes of the original; [`extract_block`] rebuilds any block of the file's layout.
//!
//! A 32-bit lane therefore always meets four weights of one row, which is the unit of
//! `vpdpbusd` (x86 VNNI), `sdot` (ARM dotprod) and `pmaddubsw` + `pmaddwd` (AVX2): the
//! activation side is the matching 4-byte piece of the activation block, broadcast.
//! The interleave is a permutation: a repacked matrix has exactly the bytes of the
//! original (`size_of::<BlockQ4_0x8>() == 8 * size_of::<BlockQ4_0>()`), and every value,
//! scale and product is the one the plain layout gives.
//!
//! ggml does the same at load for Q4_0 (`block_q4_0x8`, "runtime repack"); this layout
//! is our own (4-byte pieces, unsigned nibbles kept as in the file) and covers Q4_1,
//! Q8_0, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K too (the types of `Q4_K_M` and `Q5_K_M` files).
//!
//! **Activations.** [`BlockQ8Act`] is a Q8 activation block with what the kernels need
//! per block pre-converted: the scale as f32 (the f16-rounded value ggml uses), Q8_1's
//! `s` (also f16-rounded) and the integer sum of the quants. With the sum, Q4_0's
//! `Σ (q − 8)·y` is `Σ q·y − 8·Σ y`, so the nibbles are used unsigned as stored. The
//! K-quant layouts take ggml's Q8_K activation blocks as they are (`bsums` play the part
//! of `sum`).

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::dtype::{DType, QK_K};
use crate::quant::{
    BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K,
};

/// Rows interleaved per group.
pub const ROWS_X8: usize = 8;

/// Block `b` of eight Q4_0 rows (see the module docs for the byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0x8 {
    pub d: [f16; 8],
    pub qs: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0x8>() == 8 * core::mem::size_of::<BlockQ4_0>());

/// Block `b` of eight Q4_1 rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1x8 {
    pub d: [f16; 8],
    pub m: [f16; 8],
    pub qs: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_1x8>() == 8 * core::mem::size_of::<BlockQ4_1>());

/// Block `b` of eight Q8_0 rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0x8 {
    pub d: [f16; 8],
    pub qs: [i8; 256],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0x8>() == 8 * core::mem::size_of::<BlockQ8_0>());

/// Block `b` of eight Q5_0 rows: `qh[j]` is row `j`'s fifth bits, permuted (module docs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0x8 {
    pub d: [f16; 8],
    pub qh: [u32; 8],
    pub qs: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_0x8>() == 8 * core::mem::size_of::<BlockQ5_0>());

/// Block `b` of eight Q5_1 rows: Q5_0's layout with the minimums.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1x8 {
    pub d: [f16; 8],
    pub m: [f16; 8],
    pub qh: [u32; 8],
    pub qs: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_1x8>() == 8 * core::mem::size_of::<BlockQ5_1>());

/// What the Q5_0 / Q5_1 x8 tiles read of a block (one tile serves both).
pub trait Q5x8: Pod {
    /// The offset subtracted from every five-bit value: 16 for Q5_0; 0 for Q5_1, whose
    /// minimum `m` is added instead (times the activation block's `s`).
    const OFFSET: i32;
    fn d(&self) -> &[f16; 8];
    fn m(&self) -> Option<&[f16; 8]>;
    fn qh(&self) -> &[u32; 8];
    fn qs(&self) -> &[u8; 128];
}

/// The [`Q5x8`] impl of a Q5 x8 block: its offset and how to read its minimums.
macro_rules! q5x8_impl {
    ($t:ty, $off:expr, |$b:ident| $m:expr) => {
        impl Q5x8 for $t {
            const OFFSET: i32 = $off;
            #[inline(always)]
            fn d(&self) -> &[f16; 8] {
                &self.d
            }
            #[inline(always)]
            fn m(&self) -> Option<&[f16; 8]> {
                let $b = self;
                $m
            }
            #[inline(always)]
            fn qh(&self) -> &[u32; 8] {
                &self.qh
            }
            #[inline(always)]
            fn qs(&self) -> &[u8; 128] {
                &self.qs
            }
        }
    };
}
q5x8_impl!(BlockQ5_0x8, 16, |_b| None);
q5x8_impl!(BlockQ5_1x8, 0, |b| Some(&b.m));

/// [`Q5x8::OFFSET`] of a slice's block type (for tiles that take `&[impl Q5x8]`).
#[inline(always)]
pub fn q5_offset<B: Q5x8>(_: &[B]) -> i32 {
    B::OFFSET
}

/// Super-block `b` of eight Q4_K rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_Kx8 {
    pub d: [f16; 8],
    pub dmin: [f16; 8],
    /// `scales[8k + j]` = row `j`'s packed scale byte `k`.
    pub scales: [u8; 96],
    pub qs: [u8; 1024],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_Kx8>() == 8 * core::mem::size_of::<BlockQ4_K>());

/// Super-block `b` of eight Q5_K rows: Q4_K's layout with the fifth bits in 4-byte
/// pieces (module docs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_Kx8 {
    pub d: [f16; 8],
    pub dmin: [f16; 8],
    /// `scales[8k + j]` = row `j`'s packed scale byte `k`.
    pub scales: [u8; 96],
    /// `qh[32p + 4j + i]` = row `j`'s `qh[4p + i]`.
    pub qh: [u8; 256],
    pub qs: [u8; 1024],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_Kx8>() == 8 * core::mem::size_of::<BlockQ5_K>());

/// What the Q4_K / Q5_K x8 tiles read of a super-block (one tile serves both).
pub trait Kx8: Pod {
    /// True for Q5_K: values reach 31, and the fifth bits come from [`Kx8::qh`].
    const FIVE: bool;
    fn d(&self) -> &[f16; 8];
    fn dmin(&self) -> &[f16; 8];
    fn scales(&self) -> &[u8; 96];
    fn qs(&self) -> &[u8; 1024];
    /// The fifth bits (Q5_K); Q4_K has none.
    fn qh(&self) -> &[u8; 256];
}

/// The [`Kx8`] impl of a K-quant x8 super-block: whether it has fifth bits, and where.
macro_rules! kx8_impl {
    ($t:ty, $five:expr, |$b:ident| $qh:expr) => {
        impl Kx8 for $t {
            const FIVE: bool = $five;
            #[inline(always)]
            fn d(&self) -> &[f16; 8] {
                &self.d
            }
            #[inline(always)]
            fn dmin(&self) -> &[f16; 8] {
                &self.dmin
            }
            #[inline(always)]
            fn scales(&self) -> &[u8; 96] {
                &self.scales
            }
            #[inline(always)]
            fn qs(&self) -> &[u8; 1024] {
                &self.qs
            }
            #[inline(always)]
            fn qh(&self) -> &[u8; 256] {
                let $b = self;
                $qh
            }
        }
    };
}
kx8_impl!(BlockQ4_Kx8, false, |_b| &[0; 256]);
kx8_impl!(BlockQ5_Kx8, true, |b| &b.qh);

/// [`Kx8::FIVE`] of a slice's block type (for tiles that take `&[impl Kx8]`).
#[inline(always)]
pub fn k_five<B: Kx8>(_: &[B]) -> bool {
    B::FIVE
}

/// Super-block `b` of eight Q6_K rows: the scales, then eight 32-element chunks, each
/// with everything a kernel reads for it, so the super-block is read front to back.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6_Kx8 {
    pub d: [f16; 8],
    pub c: [ChunkQ6_Kx8; 8],
}

/// Chunk `c` (elements `32c..32c+32`) of eight Q6_K rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct ChunkQ6_Kx8 {
    /// `scales[8h + j]` = row `j`'s scale of sub-block `2c + h` (16 elements each).
    pub scales: [i8; 16],
    /// Low four bits (module docs): byte `32p + 4j + i`.
    pub ql: [u8; 128],
    /// Top two bits: the chunk's first 16 elements in bytes `4j + i`, the second 16 in
    /// `32 + 4j + i`.
    pub qh: [u8; 64],
}
const _: () = assert!(core::mem::size_of::<BlockQ6_Kx8>() == 8 * core::mem::size_of::<BlockQ6_K>());

/// A Q8 activation block for the x8 kernels: `qs` and `d` as ggml's `block_q8_1`
/// quantizer makes them, with `d` and `s` already converted from their f16 values and
/// `sum = Σ qs`. Internal scratch, not a file format.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8Act {
    pub d: f32,
    /// Q8_1's `s` (`d · Σ qs` rounded to f16), for Q4_1 weights.
    pub s: f32,
    pub sum: i32,
    pub _pad: i32,
    pub qs: [i8; 32],
}
const _: () = assert!(core::mem::size_of::<BlockQ8Act>() == 48);

/// Sixteen tokens' Q8_K activation blocks (super-block `b` of each), interleaved for
/// the token-lane K-quant kernels (`Kernels::gemm_q5_kx8_t16`): `qs[16g + t]` holds
/// token `t`'s bytes `4g..4g+4` (one 32-bit lane per token, so a 512-bit vector is
/// "elements `4g..4g+4` of sixteen tokens"); `bs[16c + t]` holds token `t`'s sums over
/// 32-element sub-blocks `2c` (low 16 bits) and `2c + 1` (high 16 bits), each
/// `bsums[4c] + bsums[4c + 1]` etc. (|sum| ≤ 32 · 128, so it fits i16); `bs16[16k + t]`
/// its `bsums[2k]` (low 16 bits) and `bsums[2k + 1]` (high), for Q6_K's 16-element
/// sub-blocks; `d[t]` its scale.
/// Missing tokens (a batch that is not a multiple of 16) are all zero. Scratch, built
/// once per matmul by [`q8_k_x16`]; not a file format.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_Kx16 {
    pub d: [f32; 16],
    pub bs: [i32; 64],
    pub bs16: [i32; 128],
    pub qs: [i32; 1024],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_Kx16>() == 64 + 256 + 512 + 4096);

/// Tokens per [`BlockQ8_Kx16`].
pub const TOKS_X16: usize = 16;

/// Interleaves `x` (`toks` rows of `nb` Q8_K blocks) into `out` (`toks.div_ceil(16)`
/// groups of `nb` [`BlockQ8_Kx16`]): group `i`, block `b` holds block `b` of tokens
/// `16i..16i+16`.
pub fn q8_k_x16(x: &[BlockQ8_K], nb: usize, out: &mut [BlockQ8_Kx16]) {
    if nb == 0 {
        return;
    }
    let toks = x.len() / nb;
    assert!(out.len() >= toks.div_ceil(TOKS_X16) * nb);
    for (i, og) in out.chunks_exact_mut(nb).take(toks.div_ceil(TOKS_X16)).enumerate() {
        for (b, o) in og.iter_mut().enumerate() {
            *o = BlockQ8_Kx16::zeroed();
            for t in 0..TOKS_X16.min(toks - TOKS_X16 * i) {
                let xb = &x[(TOKS_X16 * i + t) * nb + b];
                o.d[t] = xb.d;
                for c in 0..4 {
                    let s0 = i32::from(xb.bsums[4 * c]) + i32::from(xb.bsums[4 * c + 1]);
                    let s1 = i32::from(xb.bsums[4 * c + 2]) + i32::from(xb.bsums[4 * c + 3]);
                    o.bs[16 * c + t] = (s0 & 0xffff) | (s1 << 16);
                }
                for k in 0..8 {
                    let (b0, b1) = (i32::from(xb.bsums[2 * k]), i32::from(xb.bsums[2 * k + 1]));
                    o.bs16[16 * k + t] = (b0 & 0xffff) | (b1 << 16);
                }
                for g in 0..64 {
                    let q = &xb.qs[4 * g..4 * g + 4];
                    o.qs[16 * g + t] = i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]);
                }
            }
        }
    }
}

impl BlockQ8Act {
    /// From a Q8_1 block (whose `d` and `qs` equal Q8_0's for the same input).
    #[inline]
    pub fn from_q8_1(b: &BlockQ8_1) -> BlockQ8Act {
        BlockQ8Act {
            d: b.d.to_f32(),
            s: b.s.to_f32(),
            sum: b.qs.iter().map(|&q| q as i32).sum(),
            _pad: 0,
            qs: b.qs,
        }
    }
}

/// The weight dtypes with an x8 layout.
pub fn has_x8(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Q5_0 | DType::Q5_1 | DType::Q4_K | DType::Q5_K | DType::Q6_K
    )
}

/// Whether a `[rows, cols]` matrix of `dtype` can take the x8 layout.
pub fn can_repack(dtype: DType, rows: usize, cols: usize) -> bool {
    has_x8(dtype) && rows > 0 && rows.is_multiple_of(ROWS_X8) && cols > 0 && cols.is_multiple_of(dtype.block_size())
}

/// Row `j`'s Q5_0 fifth bits (`qh`, bit `e` for element `e`) in the x8 order: byte `i`,
/// bit `q` ← element `4q + i`; bit `4 + q` ← element `16 + 4q + i`.
#[inline]
fn q5_qh_to_x8(qh: u32) -> u32 {
    let mut o = 0u32;
    for q in 0..4 {
        for i in 0..4 {
            o |= ((qh >> (4 * q + i)) & 1) << (8 * i + q);
            o |= ((qh >> (16 + 4 * q + i)) & 1) << (8 * i + 4 + q);
        }
    }
    o
}

/// The inverse of [`q5_qh_to_x8`].
#[inline]
fn q5_qh_from_x8(o: u32) -> u32 {
    let mut qh = 0u32;
    for q in 0..4 {
        for i in 0..4 {
            qh |= ((o >> (8 * i + q)) & 1) << (4 * q + i);
            qh |= ((o >> (8 * i + 4 + q)) & 1) << (16 + 4 * q + i);
        }
    }
    qh
}

/// Row `j`'s Q6_K super-block into an x8 super-block.
fn q6_k_into_x8(s: &BlockQ6_K, j: usize, d: &mut BlockQ6_Kx8) {
    let q = crate::quant::k::unpack_q6_k(s);
    let u = |e: usize| (q[e] + 32) as u8; // 0..=63
    d.d[j] = s.d;
    for (sb, &sc) in s.scales.iter().enumerate() {
        d.c[sb / 2].scales[8 * (sb % 2) + j] = sc;
    }
    for (c, ch) in d.c.iter_mut().enumerate() {
        for p in 0..4 {
            for i in 0..4 {
                let (lo, hi) = (u(32 * c + 4 * p + i), u(32 * c + 16 + 4 * p + i));
                ch.ql[32 * p + 4 * j + i] = (lo & 15) | ((hi & 15) << 4);
                let (a, b) = (4 * j + i, 32 + 4 * j + i);
                ch.qh[a] = (ch.qh[a] & !(3 << (2 * p))) | ((lo >> 4) << (2 * p));
                ch.qh[b] = (ch.qh[b] & !(3 << (2 * p))) | ((hi >> 4) << (2 * p));
            }
        }
    }
}

/// Row `j`'s Q6_K super-block out of an x8 super-block (the inverse of `q6_k_into_x8`).
fn q6_k_from_x8(x: &BlockQ6_Kx8, j: usize) -> BlockQ6_K {
    let mut q = [0u8; QK_K];
    for (c, ch) in x.c.iter().enumerate() {
        for p in 0..4 {
            for i in 0..4 {
                let b = ch.ql[32 * p + 4 * j + i];
                let (ha, hb) = (ch.qh[4 * j + i], ch.qh[32 + 4 * j + i]);
                q[32 * c + 4 * p + i] = (b & 15) | (((ha >> (2 * p)) & 3) << 4);
                q[32 * c + 16 + 4 * p + i] = (b >> 4) | (((hb >> (2 * p)) & 3) << 4);
            }
        }
    }
    let mut o = BlockQ6_K {
        ql: [0; QK_K / 2],
        qh: [0; QK_K / 4],
        scales: core::array::from_fn(|sb| x.c[sb / 2].scales[8 * (sb % 2) + j]),
        d: x.d[j],
    };
    // ggml's order (`quant::k` module docs): element 128n + 32k + l.
    for n in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let v = q[128 * n + 32 * k + l];
                let lo = &mut o.ql[64 * n + l + 32 * (k & 1)];
                *lo |= if k < 2 { v & 15 } else { (v & 15) << 4 };
                o.qh[32 * n + l] |= (v >> 4) << (2 * k);
            }
        }
    }
    o
}

/// Row `j`'s packed scales and nibbles of a Q4_K / Q5_K super-block into the x8 arrays.
fn k_into_x8(scales: &[u8; 12], qs: &[u8; 128], j: usize, dsc: &mut [u8; 96], dqs: &mut [u8; 1024]) {
    for (k, &v) in scales.iter().enumerate() {
        dsc[8 * k + j] = v;
    }
    for c in 0..4 {
        for p in 0..8 {
            dqs[256 * c + 32 * p + 4 * j..][..4].copy_from_slice(&qs[32 * c + 4 * p..][..4]);
        }
    }
}

/// The inverse of [`k_into_x8`].
fn k_from_x8(scales: &[u8; 96], qs: &[u8; 1024], j: usize) -> ([u8; 12], [u8; 128]) {
    (
        core::array::from_fn(|k| scales[8 * k + j]),
        core::array::from_fn(|k| qs[256 * (k / 32) + 32 * (k % 32 / 4) + 4 * j + k % 4]),
    )
}

/// Byte `k` (< 16) of row `j`'s Q4 block sits at `q4_pos(j, k)` of the x8 block's `qs`.
#[inline]
const fn q4_pos(j: usize, k: usize) -> usize {
    32 * (k / 4) + 4 * j + k % 4
}
/// Byte `k` (< 32) of row `j`'s Q8 block sits at `q8_pos(j, k)` of the x8 block's `qs`.
#[inline]
const fn q8_pos(j: usize, k: usize) -> usize {
    32 * (k / 4) + 4 * j + k % 4
}

/// Repacks a row-major `[rows, cols]` matrix (`src`, GGUF layout) into `dst` (the same
/// number of bytes). `can_repack(dtype, rows, cols)` must hold; returns false otherwise.
pub fn repack(dtype: DType, rows: usize, cols: usize, src: &[u8], dst: &mut [u8]) -> bool {
    if !can_repack(dtype, rows, cols) || src.len() != dst.len() {
        return false;
    }
    let nb = cols / dtype.block_size();
    macro_rules! go {
        ($b:ty, $x:ty, |$d:ident, $s:ident, $j:ident| $fill:expr) => {{
            let s: &[$b] = bytemuck::cast_slice(src);
            let d: &mut [$x] = bytemuck::cast_slice_mut(dst);
            for g in 0..rows / ROWS_X8 {
                for b in 0..nb {
                    let $d = &mut d[g * nb + b];
                    for $j in 0..ROWS_X8 {
                        let $s = &s[(ROWS_X8 * g + $j) * nb + b];
                        $fill;
                    }
                }
            }
        }};
    }
    match dtype {
        // Whole 4-byte pieces at a time (`q4_pos(j, 4p) .. + 4` is contiguous).
        DType::Q4_0 => go!(BlockQ4_0, BlockQ4_0x8, |d, s, j| {
            d.d[j] = s.d;
            for p in 0..4 {
                d.qs[q4_pos(j, 4 * p)..][..4].copy_from_slice(&s.qs[4 * p..4 * p + 4]);
            }
        }),
        DType::Q4_1 => go!(BlockQ4_1, BlockQ4_1x8, |d, s, j| {
            d.d[j] = s.d;
            d.m[j] = s.m;
            for p in 0..4 {
                d.qs[q4_pos(j, 4 * p)..][..4].copy_from_slice(&s.qs[4 * p..4 * p + 4]);
            }
        }),
        DType::Q8_0 => go!(BlockQ8_0, BlockQ8_0x8, |d, s, j| {
            d.d[j] = s.d;
            for p in 0..8 {
                d.qs[q8_pos(j, 4 * p)..][..4].copy_from_slice(&s.qs[4 * p..4 * p + 4]);
            }
        }),
        DType::Q5_0 => go!(BlockQ5_0, BlockQ5_0x8, |d, s, j| {
            d.d[j] = s.d;
            d.qh[j] = q5_qh_to_x8(u32::from_le_bytes(s.qh));
            for p in 0..4 {
                d.qs[q4_pos(j, 4 * p)..][..4].copy_from_slice(&s.qs[4 * p..4 * p + 4]);
            }
        }),
        DType::Q5_1 => go!(BlockQ5_1, BlockQ5_1x8, |d, s, j| {
            d.d[j] = s.d;
            d.m[j] = s.m;
            d.qh[j] = q5_qh_to_x8(u32::from_le_bytes(s.qh));
            for p in 0..4 {
                d.qs[q4_pos(j, 4 * p)..][..4].copy_from_slice(&s.qs[4 * p..4 * p + 4]);
            }
        }),
        DType::Q4_K => go!(BlockQ4_K, BlockQ4_Kx8, |d, s, j| {
            d.d[j] = s.d;
            d.dmin[j] = s.dmin;
            k_into_x8(&s.scales, &s.qs, j, &mut d.scales, &mut d.qs);
        }),
        DType::Q5_K => go!(BlockQ5_K, BlockQ5_Kx8, |d, s, j| {
            d.d[j] = s.d;
            d.dmin[j] = s.dmin;
            k_into_x8(&s.scales, &s.qs, j, &mut d.scales, &mut d.qs);
            for p in 0..8 {
                d.qh[32 * p + 4 * j..][..4].copy_from_slice(&s.qh[4 * p..][..4]);
            }
        }),
        DType::Q6_K => go!(BlockQ6_K, BlockQ6_Kx8, |d, s, j| q6_k_into_x8(s, j, d)),
        _ => return false,
    }
    true
}

/// Block `b` of row `r` of an x8 matrix (`cols` wide) in the GGUF layout, written to
/// `dst` (`dtype.block_bytes()` bytes): the inverse of [`repack`] for one block.
pub fn extract_block(dtype: DType, packed: &[u8], cols: usize, r: usize, b: usize, dst: &mut [u8]) {
    let nb = cols / dtype.block_size();
    let (i, j) = ((r / ROWS_X8) * nb + b, r % ROWS_X8);
    match dtype {
        DType::Q4_0 => {
            let x = &bytemuck::cast_slice::<u8, BlockQ4_0x8>(packed)[i];
            let o: &mut BlockQ4_0 = bytemuck::from_bytes_mut(dst);
            o.d = x.d[j];
            o.qs = core::array::from_fn(|k| x.qs[q4_pos(j, k)]);
        }
        DType::Q4_1 => {
            let x = &bytemuck::cast_slice::<u8, BlockQ4_1x8>(packed)[i];
            let o: &mut BlockQ4_1 = bytemuck::from_bytes_mut(dst);
            o.d = x.d[j];
            o.m = x.m[j];
            o.qs = core::array::from_fn(|k| x.qs[q4_pos(j, k)]);
        }
        DType::Q8_0 => {
            let x = &bytemuck::cast_slice::<u8, BlockQ8_0x8>(packed)[i];
            let o: &mut BlockQ8_0 = bytemuck::from_bytes_mut(dst);
            o.d = x.d[j];
            o.qs = core::array::from_fn(|k| x.qs[q8_pos(j, k)]);
        }
        DType::Q5_0 => {
            let x = &bytemuck::cast_slice::<u8, BlockQ5_0x8>(packed)[i];
            let o: &mut BlockQ5_0 = bytemuck::from_bytes_mut(dst);
            o.d = x.d[j];
            o.qh = q5_qh_from_x8(x.qh[j]).to_le_bytes();
            o.qs = core::array::from_fn(|k| x.qs[q4_pos(j, k)]);
        }
        DType::Q5_1 => {
            let x = &bytemuck::cast_slice::<u8, BlockQ5_1x8>(packed)[i];
            let o: &mut BlockQ5_1 = bytemuck::from_bytes_mut(dst);
            o.d = x.d[j];
            o.m = x.m[j];
            o.qh = q5_qh_from_x8(x.qh[j]).to_le_bytes();
            o.qs = core::array::from_fn(|k| x.qs[q4_pos(j, k)]);
        }
        DType::Q4_K => {
            let x = &bytemuck::cast_slice::<u8, BlockQ4_Kx8>(packed)[i];
            let o: &mut BlockQ4_K = bytemuck::from_bytes_mut(dst);
            o.d = x.d[j];
            o.dmin = x.dmin[j];
            (o.scales, o.qs) = k_from_x8(&x.scales, &x.qs, j);
        }
        DType::Q5_K => {
            let x = &bytemuck::cast_slice::<u8, BlockQ5_Kx8>(packed)[i];
            let o: &mut BlockQ5_K = bytemuck::from_bytes_mut(dst);
            o.d = x.d[j];
            o.dmin = x.dmin[j];
            (o.scales, o.qs) = k_from_x8(&x.scales, &x.qs, j);
            o.qh = core::array::from_fn(|k| x.qh[32 * (k / 4) + 4 * j + k % 4]);
        }
        DType::Q6_K => {
            let x = &bytemuck::cast_slice::<u8, BlockQ6_Kx8>(packed)[i];
            *bytemuck::from_bytes_mut::<BlockQ6_K>(dst) = q6_k_from_x8(x, j);
        }
        _ => unreachable!("extract_block: {dtype:?} has no x8 layout"),
    }
}

// --- the SIMD kernels' driver -------------------------------------------------------

/// Generates a kernel `$vis fn $name(w, x, nb, y)` with the `Kernels::gemm_*x8`
/// signature for one ISA, from a tile function `$tile::<T>(w_group, [x_token; T])` that
/// returns one accumulator per token for eight rows, and `$store(&acc, out8)` that
/// writes one accumulator to eight floats. The activation blocks are [`BlockQ8Act`]
/// unless a type is given after the weight type (the K-quants take `BlockQ8_K`). Tokens go in fours (then the 1–3 left),
/// groups inside, so a group's blocks are read once per four tokens. Shared by the
/// x86-64 and aarch64 kernels (`cpu/*/repack.rs`).
#[allow(unused_macros)] // a no_std build has no SIMD kernels
macro_rules! x8_driver {
    ($vis:vis $name:ident, $feat:literal, $w:ty, $tile:ident, $store:ident) => {
        $crate::cpu::repack::x8_driver!($vis $name, $feat, $w, $crate::cpu::repack::BlockQ8Act, $tile, $store);
    };
    ($vis:vis $name:ident, $feat:literal, $w:ty, $x:ty, $tile:ident, $store:ident) => {
        #[target_feature(enable = $feat)]
        $vis fn $name(w: &[$w], x: &[$x], nb: usize, y: &mut [f32]) {
            use $crate::cpu::repack::ROWS_X8;
            if nb == 0 {
                y.fill(0.0);
                return;
            }
            let (groups, toks) = (w.len() / nb, x.len() / nb);
            let rows = groups * ROWS_X8;
            assert!(y.len() >= rows * toks);
            macro_rules! pass {
                ($t:literal, $t0:expr) => {
                    for g in 0..groups {
                        let wg = &w[g * nb..(g + 1) * nb];
                        let acc = $tile::<$t>(wg, core::array::from_fn(|t| &x[($t0 + t) * nb..($t0 + t + 1) * nb]));
                        for (t, a) in acc.iter().enumerate() {
                            $store(a, &mut y[($t0 + t) * rows + g * ROWS_X8..][..ROWS_X8]);
                        }
                    }
                };
            }
            let mut t0 = 0;
            while t0 + 4 <= toks {
                pass!(4, t0);
                t0 += 4;
            }
            match toks - t0 {
                3 => pass!(3, t0),
                2 => pass!(2, t0),
                1 => pass!(1, t0),
                _ => {}
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use x8_driver;

// --- scalar kernels ---------------------------------------------------------------
//
// `gemm_*x8(w, x, nb, y)`: `w` is `groups × nb` x8 blocks (8 · groups weight rows), `x`
// is `toks × nb` activation blocks, `y` is `[toks, 8 · groups]`. Per output the float
// steps are those of the plain scalar `vec_dot_*` (`quant::dot`) in the same order, so
// these twins give bit-identical results to the plain layout's scalar kernels.

/// Q4_0 x8 weights · Q8 activations.
pub fn gemm_q4_0x8(w: &[BlockQ4_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    each_output(w, x, nb, y, |blk, xb, j, sumf| {
        let mut sumi = 0i32;
        for k in 0..16 {
            let v = blk.qs[q4_pos(j, k)];
            sumi += ((v & 0x0f) as i32 - 8) * xb.qs[k] as i32 + ((v >> 4) as i32 - 8) * xb.qs[k + 16] as i32;
        }
        *sumf += sumi as f32 * (blk.d[j].to_f32() * xb.d);
    });
}

/// Q4_1 x8 weights · Q8 activations (`s` as Q8_1's).
pub fn gemm_q4_1x8(w: &[BlockQ4_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    each_output(w, x, nb, y, |blk, xb, j, sumf| {
        let mut sumi = 0i32;
        for k in 0..16 {
            let v = blk.qs[q4_pos(j, k)];
            sumi += (v & 0x0f) as i32 * xb.qs[k] as i32 + (v >> 4) as i32 * xb.qs[k + 16] as i32;
        }
        *sumf += (blk.d[j].to_f32() * xb.d) * sumi as f32 + blk.m[j].to_f32() * xb.s;
    });
}

/// Q8_0 x8 weights · Q8 activations.
pub fn gemm_q8_0x8(w: &[BlockQ8_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    each_output(w, x, nb, y, |blk, xb, j, sumf| {
        let mut sumi = 0i32;
        for k in 0..32 {
            sumi += blk.qs[q8_pos(j, k)] as i32 * xb.qs[k] as i32;
        }
        *sumf += sumi as f32 * (blk.d[j].to_f32() * xb.d);
    });
}

/// Q5_0 x8 weights · Q8 activations: each block of the plain layout rebuilt and run
/// through the plain scalar dot, so the float steps are those of `vec_dot_q5_0_q8_0`.
pub fn gemm_q5_0x8(w: &[BlockQ5_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    each_output(w, x, nb, y, |blk, xb, j, sumf| {
        let mut wb = [0u8; 22];
        extract_block(DType::Q5_0, bytemuck::bytes_of(blk), 32, j, 0, &mut wb);
        let xq = BlockQ8_0 {
            d: f16::from_f32(xb.d),
            qs: xb.qs,
        };
        *sumf += crate::quant::dot::vec_dot_q5_0_q8_0(&[*bytemuck::from_bytes::<BlockQ5_0>(&wb)], &[xq]);
    });
}

/// Q5_1 x8 weights · Q8 activations (`s` as Q8_1's): the plain scalar dot per block.
pub fn gemm_q5_1x8(w: &[BlockQ5_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    each_output(w, x, nb, y, |blk, xb, j, sumf| {
        let mut wb = [0u8; 24];
        extract_block(DType::Q5_1, bytemuck::bytes_of(blk), 32, j, 0, &mut wb);
        // `d` and `s` were f16 values, so they convert back exactly.
        let xq = BlockQ8_1 {
            d: f16::from_f32(xb.d),
            s: f16::from_f32(xb.s),
            qs: xb.qs,
        };
        *sumf += crate::quant::dot::vec_dot_q5_1_q8_1(&[*bytemuck::from_bytes::<BlockQ5_1>(&wb)], &[xq]);
    });
}

/// Q5_K x8 weights · Q8_K activations (per super-block the plain scalar dot).
pub fn gemm_q5_kx8(w: &[BlockQ5_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    each_output(w, x, nb, y, |blk, xb, j, sumf| {
        let mut wb = [0u8; 176];
        extract_block(DType::Q5_K, bytemuck::bytes_of(blk), QK_K, j, 0, &mut wb);
        *sumf +=
            crate::quant::dot::vec_dot_q5_k_q8_k(&[*bytemuck::from_bytes::<BlockQ5_K>(&wb)], core::slice::from_ref(xb));
    });
}

/// Q4_K x8 weights · Q8_K activations (per super-block the plain scalar dot).
pub fn gemm_q4_kx8(w: &[BlockQ4_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    each_output(w, x, nb, y, |blk, xb, j, sumf| {
        let mut wb = [0u8; 144];
        extract_block(DType::Q4_K, bytemuck::bytes_of(blk), QK_K, j, 0, &mut wb);
        *sumf +=
            crate::quant::dot::vec_dot_q4_k_q8_k(&[*bytemuck::from_bytes::<BlockQ4_K>(&wb)], core::slice::from_ref(xb));
    });
}

/// Q6_K x8 weights · Q8_K activations (per super-block the plain scalar dot).
pub fn gemm_q6_kx8(w: &[BlockQ6_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    each_output(w, x, nb, y, |blk, xb, j, sumf| {
        *sumf += crate::quant::dot::vec_dot_q6_k_q8_k(&[q6_k_from_x8(blk, j)], core::slice::from_ref(xb));
    });
}

/// The output loop shared by the scalar x8 kernels: `step(block, x_block, row_in_group,
/// &mut sum)` per block, in block order.
#[inline]
fn each_output<W, X>(w: &[W], x: &[X], nb: usize, y: &mut [f32], step: impl Fn(&W, &X, usize, &mut f32)) {
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let (groups, toks) = (w.len() / nb, x.len() / nb);
    let rows = groups * ROWS_X8;
    debug_assert_eq!(y.len(), rows * toks);
    for t in 0..toks {
        let xt = &x[t * nb..(t + 1) * nb];
        for g in 0..groups {
            let wg = &w[g * nb..(g + 1) * nb];
            for j in 0..ROWS_X8 {
                let mut sumf = 0.0f32;
                for (blk, xb) in wg.iter().zip(xt) {
                    step(blk, xb, j, &mut sumf);
                }
                y[t * rows + g * ROWS_X8 + j] = sumf;
            }
        }
    }
}

/// Converts Q8_1 activation blocks to [`BlockQ8Act`] (same values).
pub fn act_from_q8_1(src: &[BlockQ8_1], dst: &mut [BlockQ8Act]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = BlockQ8Act::from_q8_1(s);
    }
}

/// The Q8_0 view of a Q8_1 block (same `d` and `qs`), for tests and references.
pub fn q8_0_of(b: &BlockQ8_1) -> BlockQ8_0 {
    BlockQ8_0 { d: b.d, qs: b.qs }
}
