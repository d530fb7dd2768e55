// common/dtype.cl — weight dtypes and ggml block decoding, shared by every kernel family.
//
// The dtype codes (T_F32 … T_Q8_0), QK (elements per block) and the block sizes in bytes
// (Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES) are not written here: the backend generates them
// from Rust's DType (core/src/opencl/program.rs, `generated_header`) and puts them in
// front of this file.
//
// Blocks (ggml's, addressed in bytes; an imported GGUF tensor is only 2-byte aligned
// inside a block, so f16 scales are read with vload_half — no cl_khr_fp16 needed):
//   block_q4_0 { half d; uchar qs[16]; }          value (q - 8) * d
//   block_q4_1 { half d; half m; uchar qs[16]; }  value q * d + m
//   block_q8_0 { half d; char qs[32]; }           value q * d
// In both 4-bit types element j < 16 is the low nibble of qs[j] and element 16 + j the
// high nibble of qs[j]: the nibble helpers below are the only place that says so.

// Low / high nibbles of 8 quant bytes as floats (Q4_1: the raw 0..15 values).
inline float8 q4_lo8(const uchar8 q) {
    return convert_float8(q & (uchar8)(0x0F));
}
inline float8 q4_hi8(const uchar8 q) {
    return convert_float8(q >> (uchar8)(4));
}
// Q4_0: the same, centred (q - 8).
inline float8 q4_0_lo8(const uchar8 q) {
    return q4_lo8(q) - 8.0f;
}
inline float8 q4_0_hi8(const uchar8 q) {
    return q4_hi8(q) - 8.0f;
}
// Low and high nibbles of the 4 bytes of a 32-bit word (byte k: lanes k), centred.
inline float4 q4_0_lo4(const uint w) {
    const uint4 v = (uint4)(w) >> (uint4)(0u, 8u, 16u, 24u);
    return convert_float4(v & (uint4)(15u)) - 8.0f;
}
inline float4 q4_0_hi4(const uint w) {
    const uint4 v = (uint4)(w) >> (uint4)(0u, 8u, 16u, 24u);
    return convert_float4((v >> (uint4)(4u)) & (uint4)(15u)) - 8.0f;
}
// The 4-bit value of element j (0..31) of a block whose quants start at qs.
inline int q4_nibble(__global const uchar *qs, const uint j) {
    const uchar b = qs[j & 15];
    return j < 16 ? (b & 0x0F) : (b >> 4);
}

// Bytes of a row of n elements of dtype t.
inline ulong row_bytes(const uint t, const uint n) {
    switch (t) {
    case T_F32:
        return 4ul * n;
    case T_F16:
    case T_BF16:
        return 2ul * n;
    case T_Q4_0:
        return (ulong)(n / QK) * Q4_0_BYTES;
    case T_Q4_0R: // (block.cl's repacked Q4_0 rows: 16-byte aligned)
        return ((ulong)(n / QK) * Q4_0_BYTES + 15) & ~15ul;
    case T_Q4_1:
        return (ulong)(n / QK) * Q4_1_BYTES;
    case T_Q5_0:
        return (ulong)(n / QK) * Q5_0_BYTES;
    case T_Q5_1:
        return (ulong)(n / QK) * Q5_1_BYTES;
    case T_Q4_K:
        return (ulong)(n / QK_K) * Q4_K_BYTES;
    case T_Q5_K:
        return (ulong)(n / QK_K) * Q5_K_BYTES;
    case T_Q6_K:
        return (ulong)(n / QK_K) * Q6_K_BYTES;
    default:
        return (ulong)(n / QK) * Q8_0_BYTES;
    }
}

inline bool is_quant(const uint t) {
    return t == T_Q4_0 || t == T_Q4_1 || t == T_Q8_0;
}

// ---- Q5_0, Q5_1 and the K-quants (Q4_K, Q5_K, Q6_K) ----
//
// Their block sizes (Q5_0_BYTES … Q6_K_BYTES), QK_K (256) and dtype codes (T_Q5_0 …
// T_Q6_K) come from the generated header too. get_rows.cl, mul_mv_kq_f32.cl,
// mul_mm_kq_f32.cl and block.cl decode them through the functions below. Layouts
// (docs/quant-formats.md; every field read as bytes — a block is only 2-byte aligned):
//   block_q5_0 { half d; uchar qh[4]; uchar qs[16]; }              (q - 16) * d
//   block_q5_1 { half d; half m; uchar qh[4]; uchar qs[16]; }      q * d + m
//     q = nibble as Q4_0 | bit j of qh (little-endian u32) << 4
//   block_q4_K { half d, dmin; uchar scales[12]; uchar qs[128]; }  (d*sc) * q - dmin*m
//   block_q5_K { half d, dmin; uchar scales[12]; uchar qh[32]; uchar qs[128]; }
//     element 32s + l: nibble (s odd: high) of qs[32(s/2) + l], Q5_K's fifth bit is bit s
//     of qh[l]; 6-bit (sc, m) of sub-block s packed as scale_min_k4 says
//   block_q6_K { uchar ql[128]; uchar qh[64]; char scales[16]; half d; }  (d*sc) * (q - 32)
//     element 128n + 32k + l: low 4 bits from ql[64n + l + 32(k&1)] (k ≥ 2: high
//     nibble), top 2 from bits 2k of qh[32n + l]; scale scales[(128n + 32k + l) / 16]
// The element helpers compute in the CPU dequantizers' order (get_rows.cl builds with
// contraction off, so its values equal the CPU's bit for bit).

inline uint q5_high_bits(__global const uchar *qh) {
    return (uint)qh[0] | ((uint)qh[1] << 8) | ((uint)qh[2] << 16) | ((uint)qh[3] << 24);
}
// The 5-bit value of element j (0..31) of a Q5_0/Q5_1 block with qh and qs at these bytes.
inline uint q5_value(__global const uchar *qh, __global const uchar *qs, const uint j) {
    return (uint)q4_nibble(qs, j) | (((q5_high_bits(qh) >> j) & 1u) << 4);
}
inline float q5_0_elem(__global const uchar *blk, const uint j) {
    const float d = vload_half(0, (__global const half *)blk);
    return (float)((int)q5_value(blk + 2, blk + 6, j) - 16) * d;
}
inline float q5_1_elem(__global const uchar *blk, const uint j) {
    const float d = vload_half(0, (__global const half *)blk);
    const float m = vload_half(1, (__global const half *)blk);
    return (float)q5_value(blk + 4, blk + 8, j) * d + m;
}

// (scale, min) of sub-block j (0..7) from the 12 packed bytes (ggml get_scale_min_k4).
inline uint2 scale_min_k4(__global const uchar *s, const uint j) {
    if (j < 4) {
        return (uint2)(s[j] & 63u, s[j + 4] & 63u);
    }
    return (uint2)((s[j + 4] & 15u) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4));
}
// The 4-bit part of element i (0..255) of a Q4_K/Q5_K super-block whose qs start here.
inline uint qk_nibble(__global const uchar *qs, const uint i) {
    const uint s = i / 32, b = qs[32 * (s / 2) + i % 32];
    return (s & 1) ? (b >> 4) : (b & 15u);
}
inline float q4_k_elem(__global const uchar *blk, const uint i) {
    const float2 dm = vload_half2(0, (__global const half *)blk);
    const uint2 sm = scale_min_k4(blk + 4, i / 32);
    const float d1 = dm.x * (float)sm.x, m1 = dm.y * (float)sm.y;
    return d1 * (float)qk_nibble(blk + 16, i) - m1;
}
inline float q5_k_elem(__global const uchar *blk, const uint i) {
    const float2 dm = vload_half2(0, (__global const half *)blk);
    const uint2 sm = scale_min_k4(blk + 4, i / 32);
    const float d1 = dm.x * (float)sm.x, m1 = dm.y * (float)sm.y;
    const uint q = qk_nibble(blk + 48, i) | (((blk[16 + i % 32] >> (i / 32)) & 1u) << 4);
    return d1 * (float)q - m1;
}
// The signed 6-bit value (−32..31) of element i of a Q6_K super-block.
inline int q6_k_value(__global const uchar *blk, const uint i) {
    const uint n = i / 128, k = (i % 128) / 32, l = i % 32;
    const uint b = blk[64 * n + l + 32 * (k & 1)];
    const uint lo = k < 2 ? (b & 15u) : (b >> 4);
    const uint hi = (blk[128 + 32 * n + l] >> (2 * k)) & 3u;
    return (int)(lo | (hi << 4)) - 32;
}
inline float q6_k_elem(__global const uchar *blk, const uint i) {
    const float d = vload_half(104, (__global const half *)blk); // byte 208
    const float sc = (float)((__global const char *)blk)[192 + i / 16];
    return d * sc * (float)q6_k_value(blk, i);
}

// ---- vector helpers for the K-quant kernels (block.cl, mul_mm_kq_f32.cl) ----

// 16.0f in lane i where bit i of the low 8 bits of h is set (a Q5 fifth bit, weighted).
inline float8 q5_bits8(const uint h) {
    const uint8 b = ((uint8)(h) >> (uint8)(0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u)) & (uint8)(1u);
    return convert_float8(b << (uint8)(4u));
}
// (scale, min) of sub-block j (0..7) of a Q4_K/Q5_K super-block from its 12 scale bytes
// read as three little-endian words (s0 = bytes 0..3, s1 = 4..7, s2 = 8..11): the
// arithmetic of scale_min_k4 above on registers instead of byte loads.
inline uint2 scale_min_k4_w(const uint s0, const uint s1, const uint s2, const uint j) {
    const uint sh = 8 * (j & 3);
    const uint b0 = (s0 >> sh) & 255u, b1 = (s1 >> sh) & 255u, b2 = (s2 >> sh) & 255u;
    if (j < 4) {
        return (uint2)(b0 & 63u, b1 & 63u);
    }
    return (uint2)((b2 & 15u) | ((b0 >> 6) << 4), (b2 >> 4) | ((b1 >> 6) << 4));
}
// The 12 scale bytes of the Q4_K/Q5_K super-block at blk (bytes 4..15; 2-byte aligned).
inline uint3 kq_scale_words(__global const uchar *blk) {
    const uint4 a = convert_uint4(vload4(0, (__global const ushort *)(blk + 4)));
    const uint2 b = convert_uint2(vload2(0, (__global const ushort *)(blk + 12)));
    return (uint3)(a.x | (a.y << 16), a.z | (a.w << 16), b.x | (b.y << 16));
}
