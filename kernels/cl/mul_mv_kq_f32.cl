// mul_mv_kq_f32.cl — matrix x vector(s) for Q5_0, Q5_1, Q4_K, Q5_K and Q6_K weights and
// f32 activations: mul_mv_q5_0_f32, mul_mv_q5_1_f32, mul_mv_q4_k_f32, mul_mv_q5_k_f32,
// mul_mv_q6_k_f32.
//
// Same contract and grid as mul_mv_q4_1_f32.cl: y[t, o] = sum_i w[o, i] * x[t, i] (or +=
// with `accumulate`), one work-group of LWS work-items per output row and tile of up to
// NT tokens, reduce_store_nt for the shares. Work unit = 32 consecutive elements of a
// row: one Q5_0/Q5_1 block, one 32-element sub-block of a K-quant super-block (Q4_K/Q5_K
// sub-block s with its own 6-bit scale and minimum; Q6_K half of a 64-element group,
// two 16-element scales). Each unit's quants are decoded to floats once per token as
// vectors; the K-quant minimum is applied once per unit (d·sc·Σq·x − dmin·m·Σx).
// Layouts and element helpers: common/dtype.cl.
//
// block.cl decodes these types too (its own 16-element units) and mul_mm_kq_f32.cl tiles
// them for prefill; this kernel serves batches below mm_min_tokens and decode where the
// persistent block kernel is off (PoCL, non-NVIDIA GPUs), there also for the fused ops'
// composition (mul_mv3 / mul_mv_swiglu have no K-quant variants).

inline float hsum16(const float16 v) {
    const float8 a = v.lo + v.hi;
    const float4 b = a.lo + a.hi;
    return b.x + b.y + b.z + b.w;
}

#define LANES16 (uint16)(0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 10u, 11u, 12u, 13u, 14u, 15u)

// The 5-bit values of a Q5 block's elements 0..15 (lo) and 16..31 (hi).
inline void q5_unit(__global const uchar *qhp, __global const uchar *qsp, float16 *lo, float16 *hi) {
    const uint qh = q5_high_bits(qhp);
    const uint16 q = convert_uint16(vload16(0, qsp));
    *lo = convert_float16((q & 15u) | ((((uint16)(qh) >> LANES16) & 1u) << 4));
    *hi = convert_float16((q >> 4) | ((((uint16)(qh >> 16) >> LANES16) & 1u) << 4));
}

inline float unit_q5_0(__global const uchar *wr, const uint u, __global const float *x) {
    __global const uchar *blk = wr + u * Q5_0_BYTES;
    const float d = vload_half(0, (__global const half *)blk);
    float16 lo, hi;
    q5_unit(blk + 2, blk + 6, &lo, &hi);
    __global const float *xb = x + 32 * u;
    return d * hsum16((lo - 16.0f) * vload16(0, xb) + (hi - 16.0f) * vload16(0, xb + 16));
}

inline float unit_q5_1(__global const uchar *wr, const uint u, __global const float *x) {
    __global const uchar *blk = wr + u * Q5_1_BYTES;
    const float2 dm = vload_half2(0, (__global const half *)blk);
    float16 lo, hi;
    q5_unit(blk + 4, blk + 8, &lo, &hi);
    __global const float *xb = x + 32 * u;
    const float16 x0 = vload16(0, xb), x1 = vload16(0, xb + 16);
    return dm.x * hsum16(lo * x0 + hi * x1) + dm.y * hsum16(x0 + x1);
}

// Q4_K / Q5_K sub-block s of super-block b: the 4-bit parts of its 32 elements.
inline void qk_unit_nibbles(__global const uchar *qs, const uint s, float16 *a, float16 *b) {
    const uint16 q0 = convert_uint16(vload16(0, qs + 32 * (s / 2)));
    const uint16 q1 = convert_uint16(vload16(0, qs + 32 * (s / 2) + 16));
    const uint sh = (s & 1) * 4;
    *a = convert_float16((q0 >> sh) & 15u);
    *b = convert_float16((q1 >> sh) & 15u);
}

inline float unit_q4_k(__global const uchar *wr, const uint u, __global const float *x) {
    const uint s = u % 8;
    __global const uchar *blk = wr + (u / 8) * Q4_K_BYTES;
    const float2 dm = vload_half2(0, (__global const half *)blk);
    const uint2 sm = scale_min_k4(blk + 4, s);
    float16 a, b;
    qk_unit_nibbles(blk + 16, s, &a, &b);
    __global const float *xb = x + 32 * u;
    const float16 x0 = vload16(0, xb), x1 = vload16(0, xb + 16);
    return dm.x * (float)sm.x * hsum16(a * x0 + b * x1) - dm.y * (float)sm.y * hsum16(x0 + x1);
}

inline float unit_q5_k(__global const uchar *wr, const uint u, __global const float *x) {
    const uint s = u % 8;
    __global const uchar *blk = wr + (u / 8) * Q5_K_BYTES;
    const float2 dm = vload_half2(0, (__global const half *)blk);
    const uint2 sm = scale_min_k4(blk + 4, s);
    float16 a, b;
    qk_unit_nibbles(blk + 48, s, &a, &b);
    const uint16 h0 = convert_uint16(vload16(0, blk + 16));
    const uint16 h1 = convert_uint16(vload16(0, blk + 32));
    a += convert_float16(((h0 >> s) & 1u) << 4);
    b += convert_float16(((h1 >> s) & 1u) << 4);
    __global const float *xb = x + 32 * u;
    const float16 x0 = vload16(0, xb), x1 = vload16(0, xb + 16);
    return dm.x * (float)sm.x * hsum16(a * x0 + b * x1) - dm.y * (float)sm.y * hsum16(x0 + x1);
}

// Q6_K unit u: group n = (u % 8) / 4 of 128 elements, quarter k = u % 4 (32 elements).
inline float unit_q6_k(__global const uchar *wr, const uint u, __global const float *x) {
    const uint n = (u % 8) / 4, k = u % 4;
    __global const uchar *blk = wr + (u / 8) * Q6_K_BYTES;
    const float d = vload_half(104, (__global const half *)blk); // byte 208
    __global const uchar *ql = blk + 64 * n + 32 * (k & 1);
    __global const uchar *qh = blk + 128 + 32 * n;
    const uint lsh = k < 2 ? 0u : 4u, hsh = 2 * k;
    const uint16 l0 = (convert_uint16(vload16(0, ql)) >> lsh) & 15u;
    const uint16 l1 = (convert_uint16(vload16(0, ql + 16)) >> lsh) & 15u;
    const uint16 g0 = (convert_uint16(vload16(0, qh)) >> hsh) & 3u;
    const uint16 g1 = (convert_uint16(vload16(0, qh + 16)) >> hsh) & 3u;
    const float16 q0 = convert_float16(l0 | (g0 << 4)) - 32.0f;
    const float16 q1 = convert_float16(l1 | (g1 << 4)) - 32.0f;
    __global const char *sc = (__global const char *)blk + 192 + 8 * n + 2 * k;
    __global const float *xb = x + 32 * u;
    return d * ((float)sc[0] * hsum16(q0 * vload16(0, xb)) + (float)sc[1] * hsum16(q1 * vload16(0, xb + 16)));
}

// One kernel: NAME (written out in full), the row's bytes, the unit function.
#define MUL_MV_UNITS(NAME, ROW_BYTES, UNIT)                                                   \
    __kernel void NAME(__global const uchar *w, const ulong w_off, __global const float *x,     \
                       const ulong x_off, __global float *y, const ulong y_off, const uint n_in, \
                       const uint n_out, const uint n_tok, const uint accumulate) {             \
        __local float red[NT * LWS];                                                            \
        const uint row = get_group_id(0);                                                       \
        const uint lid = get_local_id(0);                                                       \
        const uint t0 = get_group_id(1) * NT;                                                   \
        const uint nt = min((uint)NT, n_tok - t0);                                              \
        __global const float *xt = x + x_off + (ulong)t0 * n_in;                                \
        float acc[NT];                                                                          \
        for (uint j = 0; j < NT; j++) {                                                         \
            acc[j] = 0.0f;                                                                      \
        }                                                                                       \
        __global const uchar *wr = w + w_off + (ulong)row * (ROW_BYTES);                        \
        for (uint u = lid; u < n_in / 32; u += LWS) {                                           \
            for (uint j = 0; j < NT; j++) {                                                     \
                if (j < nt) {                                                                   \
                    acc[j] += UNIT(wr, u, xt + (ulong)j * n_in);                                \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        reduce_store_nt(red, acc, nt, lid, y + y_off + (ulong)t0 * n_out + row, n_out, accumulate); \
    }

MUL_MV_UNITS(mul_mv_q5_0_f32, (ulong)(n_in / 32) * Q5_0_BYTES, unit_q5_0)
MUL_MV_UNITS(mul_mv_q5_1_f32, (ulong)(n_in / 32) * Q5_1_BYTES, unit_q5_1)
MUL_MV_UNITS(mul_mv_q4_k_f32, (ulong)(n_in / QK_K) * Q4_K_BYTES, unit_q4_k)
MUL_MV_UNITS(mul_mv_q5_k_f32, (ulong)(n_in / QK_K) * Q5_K_BYTES, unit_q5_k)
MUL_MV_UNITS(mul_mv_q6_k_f32, (ulong)(n_in / QK_K) * Q6_K_BYTES, unit_q6_k)
