// mul_mm_kq_f32.cl — the tiled prefill matmuls of mul_mm.cl for the types of a Q4_K_M /
// Q5_K_M file: Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
//
// This file is built after mul_mm.cl in one program (core/src/opencl/program.rs,
// `FAMILY_DEPS`): it adds only the weight loaders `w8_T` — elements k..k+7 (k % 8 == 0)
// of a row, dequantized with vector loads — and stamps mul_mm.cl's MUL_MM, MUL_MM3 and
// MUL_MM_SWIGLU with them, so the tiling, the software pipeline, split-K and the fused
// epilogues are mul_mm.cl's, written once. A 32-element step is one Q5 block or one
// K-quant sub-block (one 6-bit scale and minimum; Q6_K: two 16-element scales, each
// loader's 8 elements under one). Rows are whole blocks (n_in a multiple of 32 or 256),
// so the loaders need no tail. Layouts and helpers: common/dtype.cl.

inline void w8_q5_0(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const uchar *blk = row + (k / QK) * Q5_0_BYTES;
    const uint p = (k % 32) / 8; // 0,1: low nibbles of qs[8p..]; 2,3: high of qs[8(p-2)..]
    const float d = vload_half(0, (__global const half *)blk);
    const uint qh = as_uint(vload2(0, (__global const ushort *)(blk + 2)));
    const uchar8 q = as_uchar8(vload4(0, (__global const ushort *)(blk + 6 + 8 * (p & 1))));
    const float8 f = ((p < 2 ? q4_lo8(q) : q4_hi8(q)) + q5_bits8(qh >> (8 * p)) - 16.0f) * d;
    vstore8(f, 0, v);
}

inline void w8_q5_1(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const uchar *blk = row + (k / QK) * Q5_1_BYTES;
    const uint p = (k % 32) / 8;
    const float2 dm = vload_half2(0, (__global const half *)blk);
    const uint qh = as_uint(vload2(0, (__global const ushort *)(blk + 4)));
    const uchar8 q = as_uchar8(vload4(0, (__global const ushort *)(blk + 8 + 8 * (p & 1))));
    const float8 f = ((p < 2 ? q4_lo8(q) : q4_hi8(q)) + q5_bits8(qh >> (8 * p))) * dm.x + dm.y;
    vstore8(f, 0, v);
}

// Q4_K (has_qh 0) and Q5_K (1): element i = k % 256 of the super-block is in sub-block
// s = i / 32, its nibble (high for odd s) in qs[32 (s / 2) + i % 32], Q5_K's fifth bit
// bit s of qh[i % 32].
inline void w8_q45_k(__global const uchar *row, uint k, float *v, const uint has_qh) {
    __global const uchar *blk = row + (k / QK_K) * (has_qh ? Q5_K_BYTES : Q4_K_BYTES);
    const uint i = k % QK_K, s = i / 32;
    const float2 dm = vload_half2(0, (__global const half *)blk);
    const uint3 sw = kq_scale_words(blk);
    const uint2 sm = scale_min_k4_w(sw.x, sw.y, sw.z, s);
    const uint qs = has_qh ? 48 : 16;
    const uchar8 q = as_uchar8(vload4(0, (__global const ushort *)(blk + qs + 32 * (s / 2) + i % 32)));
    float8 f = (s & 1) ? q4_hi8(q) : q4_lo8(q);
    if (has_qh) {
        const uchar8 h = as_uchar8(vload4(0, (__global const ushort *)(blk + 16 + i % 32)));
        f += convert_float8(((h >> (uchar8)(s)) & (uchar8)(1)) << (uchar8)(4));
    }
    const float d1 = dm.x * (float)sm.x, m1 = dm.y * (float)sm.y;
    vstore8(f * d1 - m1, 0, v);
}
inline void w8_q4_k(__global const uchar *row, uint k, uint n_in, float *v) {
    w8_q45_k(row, k, v, 0);
}
inline void w8_q5_k(__global const uchar *row, uint k, uint n_in, float *v) {
    w8_q45_k(row, k, v, 1);
}

// Q6_K: element i = 128n + 32kk + l: low 4 bits in ql[64n + l + 32 (kk & 1)] (high nibble
// for kk ≥ 2), top 2 in bits 2kk of qh[32n + l], scale scales[i / 16].
inline void w8_q6_k(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const uchar *blk = row + (k / QK_K) * Q6_K_BYTES;
    const uint i = k % QK_K, n = i / 128, kk = (i % 128) / 32, l = i % 32;
    const float d = vload_half(104, (__global const half *)blk); // byte 208
    const float sc = (float)((__global const char *)blk)[192 + i / 16];
    const uchar8 ql = as_uchar8(vload4(0, (__global const ushort *)(blk + 64 * n + l + 32 * (kk & 1))));
    const uchar8 qh = as_uchar8(vload4(0, (__global const ushort *)(blk + 128 + 32 * n + l)));
    const uchar8 lo = kk < 2 ? (ql & (uchar8)(15)) : (ql >> (uchar8)(4));
    const uchar8 q = lo | (((qh >> (uchar8)(2 * kk)) & (uchar8)(3)) << (uchar8)(4));
    vstore8((convert_float8(q) - 32.0f) * (d * sc), 0, v);
}

// The __kernel functions: mul_mm.cl's macros with the loaders above.
MUL_MM(mul_mm_q5_0_f32, q5_0, (n_in / QK) * Q5_0_BYTES)
MUL_MM(mul_mm_q5_1_f32, q5_1, (n_in / QK) * Q5_1_BYTES)
MUL_MM(mul_mm_q4_k_f32, q4_k, (n_in / QK_K) * Q4_K_BYTES)
MUL_MM(mul_mm_q5_k_f32, q5_k, (n_in / QK_K) * Q5_K_BYTES)
MUL_MM(mul_mm_q6_k_f32, q6_k, (n_in / QK_K) * Q6_K_BYTES)
MUL_MM3(mul_mm3_q5_0_f32, q5_0, (n_in / QK) * Q5_0_BYTES)
MUL_MM3(mul_mm3_q5_1_f32, q5_1, (n_in / QK) * Q5_1_BYTES)
MUL_MM3(mul_mm3_q4_k_f32, q4_k, (n_in / QK_K) * Q4_K_BYTES)
MUL_MM3(mul_mm3_q5_k_f32, q5_k, (n_in / QK_K) * Q5_K_BYTES)
MUL_MM3(mul_mm3_q6_k_f32, q6_k, (n_in / QK_K) * Q6_K_BYTES)
MUL_MM_SWIGLU(mul_mm_swiglu_q5_0_f32, q5_0, (n_in / QK) * Q5_0_BYTES)
MUL_MM_SWIGLU(mul_mm_swiglu_q5_1_f32, q5_1, (n_in / QK) * Q5_1_BYTES)
MUL_MM_SWIGLU(mul_mm_swiglu_q4_k_f32, q4_k, (n_in / QK_K) * Q4_K_BYTES)
MUL_MM_SWIGLU(mul_mm_swiglu_q5_k_f32, q5_k, (n_in / QK_K) * Q5_K_BYTES)
MUL_MM_SWIGLU(mul_mm_swiglu_q6_k_f32, q6_k, (n_in / QK_K) * Q6_K_BYTES)
