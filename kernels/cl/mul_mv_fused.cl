// mul_mv_fused.cl — matrix x vector(s) kernels that do two or three matmuls of one
// input in one launch (decode and small batches; prefill takes mul_mm):
//
// Both start with the RMS norm of their input row: xn[t] = x[t] * r[t] * nw with
// r[t] = 1 / sqrt(mean(x[t]^2) + eps), which every work-group computes for itself (a
// 576..2048-float reduction, cheaper than a launch), and fold in as
// w . xn = r * sum_k w[k] * (nw[k] * x[k]) — the normed row never reaches memory.
//
// * mul_mv3_{q4_0,q4_1,q8_0}_f32: y_i[t, o] = w_i[o] . xn[t] for i = 0, 1, 2 (Q, K, V).
//   Work-group g < n0 computes row g of y0, the next n1 groups rows of y1, then y2.
// * mul_mv_swiglu_{q4_0,q4_1,q8_0}_f32: out[t, o] = silu(g) * u with g = w_gate[o] . xn[t] and
//   u = w_up[o] . xn[t] (the SwiGLU input side; the gate and up rows never reach memory).
//
// The work split is the one of mul_mv_q4_0_f32.cl: LWS work-items per output row and per
// tile of NT tokens (global size (rows * LWS, ceil(n_tok / NT))), each work-item a
// strided share of half-blocks, a local-memory tree reduction. Weights are addressed in
// bytes, x and y in elements; f16 scales via vload_half. Each kernel is one instance of
// MUL_MV3 / MUL_MV_SWIGLU at the end of the file, named there in full.

// Adds work-item `lid`'s share of (row wr) . (nw * x[t, :]) to acc[t] for t < nt.
inline void dot_q4_0(__global const uchar *wr, __global const float *xt,
                     __global const float *nw, const uint n_in, const uint nt,
                     const uint lid, float *acc) {
    const uint nb = n_in / 32;
    for (uint u = lid; u < 2 * nb; u += LWS) {
        const uint b = u >> 1;
        const uint hf = u & 1;
        __global const uchar *blk = wr + b * Q4_0_BYTES;
        const float d = vload_half(0, (__global const half *)blk);
        const uchar8 q = vload8(0, blk + 2 + 8 * hf);
        const float8 lo = q4_0_lo8(q);
        const float8 hi = q4_0_hi8(q);
        const float8 nl = vload8(0, nw + b * 32 + 8 * hf);
        const float8 nh = vload8(0, nw + b * 32 + 8 * hf + 16);
        for (uint j = 0; j < NT; j++) {
            if (j < nt) {
                __global const float *xb = xt + (ulong)j * n_in + b * 32 + 8 * hf;
                const float8 p = vload8(0, xb) * nl * lo + vload8(0, xb + 16) * nh * hi;
                const float4 p4 = p.lo + p.hi;
                acc[j] += d * (p4.x + p4.y + p4.z + p4.w);
            }
        }
    }
}

inline void dot_q4_1(__global const uchar *wr, __global const float *xt,
                     __global const float *nw, const uint n_in, const uint nt,
                     const uint lid, float *acc) {
    const uint nb = n_in / 32;
    for (uint u = lid; u < 2 * nb; u += LWS) {
        const uint b = u >> 1;
        const uint hf = u & 1;
        __global const uchar *blk = wr + b * Q4_1_BYTES;
        const float d = vload_half(0, (__global const half *)blk);
        const float m = vload_half(1, (__global const half *)blk);
        const uchar8 q = vload8(0, blk + 4 + 8 * hf);
        const float8 lo = q4_lo8(q);
        const float8 hi = q4_hi8(q);
        const float8 nl = vload8(0, nw + b * 32 + 8 * hf);
        const float8 nh = vload8(0, nw + b * 32 + 8 * hf + 16);
        for (uint j = 0; j < NT; j++) {
            if (j < nt) {
                __global const float *xb = xt + (ulong)j * n_in + b * 32 + 8 * hf;
                const float8 xl = vload8(0, xb) * nl;
                const float8 xh = vload8(0, xb + 16) * nh;
                const float8 p = xl * lo + xh * hi;
                const float8 s = xl + xh;
                const float4 p4 = p.lo + p.hi;
                const float4 s4 = s.lo + s.hi;
                acc[j] += d * (p4.x + p4.y + p4.z + p4.w) + m * (s4.x + s4.y + s4.z + s4.w);
            }
        }
    }
}

inline void dot_q8_0(__global const uchar *wr, __global const float *xt,
                     __global const float *nw, const uint n_in, const uint nt,
                     const uint lid, float *acc) {
    const uint nb = n_in / 32;
    for (uint u = lid; u < 2 * nb; u += LWS) {
        const uint b = u >> 1;
        const uint hf = u & 1;
        __global const uchar *blk = wr + b * Q8_0_BYTES;
        const float d = vload_half(0, (__global const half *)blk);
        const float16 q = convert_float16(vload16(0, (__global const char *)(blk + 2 + 16 * hf)))
                          * vload16(0, nw + b * 32 + 16 * hf);
        for (uint j = 0; j < NT; j++) {
            if (j < nt) {
                __global const float *xb = xt + (ulong)j * n_in + b * 32 + 16 * hf;
                const float16 p = vload16(0, xb) * q;
                const float8 p8 = p.lo + p.hi;
                const float4 p4 = p8.lo + p8.hi;
                acc[j] += d * (p4.x + p4.y + p4.z + p4.w);
            }
        }
    }
}

// reduce_nt (the per-token tree sums): common/reduce.cl.

// r[j] = 1 / sqrt(mean(x[j, :]^2) + eps) for j < nt (every work-item must call it).
inline void rms_scale(__local float *red, __global const float *xt, const uint n_in,
                      const uint nt, const float eps, const uint lid, float *r) {
    float ss[NT];
    for (uint j = 0; j < NT; j++) {
        ss[j] = 0.0f;
        if (j < nt) {
            for (uint k = lid; k < n_in; k += LWS) {
                const float v = xt[(ulong)j * n_in + k];
                ss[j] += v * v;
            }
        }
    }
    reduce_nt(red, ss, nt, lid);
    for (uint j = 0; j < NT; j++) {
        r[j] = j < nt ? 1.0f / sqrt(red[j * LWS] / (float)n_in + eps) : 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

#define MUL_MV3(NAME, T, BLOCK_BYTES)                                                     \
__kernel void NAME(__global const uchar *w0, const ulong w0_off,                          \
                                __global const uchar *w1, const ulong w1_off,             \
                                __global const uchar *w2, const ulong w2_off,             \
                                __global const float *x, const ulong x_off,               \
                                __global const float *nw, const ulong nw_off,             \
                                const float eps,                                          \
                                __global float *y0, const ulong y0_off,                   \
                                __global float *y1, const ulong y1_off,                   \
                                __global float *y2, const ulong y2_off,                   \
                                const uint n_in, const uint n0, const uint n1,            \
                                const uint n2, const uint n_tok) {                        \
    __local float red[NT * LWS];                                                          \
    uint row = get_group_id(0);                                                           \
    const uint lid = get_local_id(0);                                                     \
    const uint t0 = get_group_id(1) * NT;                                                 \
    const uint nt = min((uint)NT, n_tok - t0);                                            \
    __global const uchar *w;                                                              \
    __global float *y;                                                                    \
    uint n_out;                                                                           \
    if (row < n0) {                                                                       \
        w = w0 + w0_off; y = y0 + y0_off; n_out = n0;                                     \
    } else if (row < n0 + n1) {                                                           \
        row -= n0; w = w1 + w1_off; y = y1 + y1_off; n_out = n1;                          \
    } else {                                                                              \
        row -= n0 + n1; w = w2 + w2_off; y = y2 + y2_off; n_out = n2;                     \
    }                                                                                     \
    __global const float *xt = x + x_off + (ulong)t0 * n_in;                              \
    float r[NT];                                                                          \
    rms_scale(red, xt, n_in, nt, eps, lid, r);                                            \
    float acc[NT];                                                                        \
    for (uint j = 0; j < NT; j++) acc[j] = 0.0f;                                          \
    dot_##T(w + (ulong)row * (n_in / 32) * BLOCK_BYTES, xt, nw + nw_off, n_in, nt, lid,   \
            acc);                                                                         \
    reduce_nt(red, acc, nt, lid);                                                         \
    for (uint j = lid; j < nt; j += LWS) {                                                \
        y[(ulong)(t0 + j) * n_out + row] = r[j] * red[j * LWS];                           \
    }                                                                                     \
}

#define MUL_MV_SWIGLU(NAME, T, BLOCK_BYTES)                                               \
__kernel void NAME(__global const uchar *wg, const ulong wg_off,                          \
                                      __global const uchar *wu, const ulong wu_off,       \
                                      __global const float *x, const ulong x_off,         \
                                      __global const float *nw, const ulong nw_off,       \
                                      const float eps,                                    \
                                      __global float *out, const ulong out_off,           \
                                      const uint n_in, const uint n_out,                  \
                                      const uint n_tok) {                                 \
    __local float red_g[NT * LWS];                                                        \
    __local float red_u[NT * LWS];                                                        \
    const uint row = get_group_id(0);                                                     \
    const uint lid = get_local_id(0);                                                     \
    const uint t0 = get_group_id(1) * NT;                                                 \
    const uint nt = min((uint)NT, n_tok - t0);                                            \
    const ulong rb = (ulong)row * (n_in / 32) * BLOCK_BYTES;                              \
    __global const float *xt = x + x_off + (ulong)t0 * n_in;                              \
    float r[NT];                                                                          \
    rms_scale(red_g, xt, n_in, nt, eps, lid, r);                                          \
    float ag[NT], au[NT];                                                                 \
    for (uint j = 0; j < NT; j++) { ag[j] = 0.0f; au[j] = 0.0f; }                         \
    dot_##T(wg + wg_off + rb, xt, nw + nw_off, n_in, nt, lid, ag);                        \
    dot_##T(wu + wu_off + rb, xt, nw + nw_off, n_in, nt, lid, au);                        \
    reduce_nt(red_g, ag, nt, lid);                                                        \
    reduce_nt(red_u, au, nt, lid);                                                        \
    for (uint j = lid; j < nt; j += LWS) {                                                \
        const float g = r[j] * red_g[j * LWS];                                            \
        const float u = r[j] * red_u[j * LWS];                                            \
        out[out_off + (ulong)(t0 + j) * n_out + row] = g / (1.0f + exp(-g)) * u;          \
    }                                                                                     \
}

MUL_MV3(mul_mv3_q4_0_f32, q4_0, Q4_0_BYTES)
MUL_MV3(mul_mv3_q4_1_f32, q4_1, Q4_1_BYTES)
MUL_MV3(mul_mv3_q8_0_f32, q8_0, Q8_0_BYTES)
MUL_MV_SWIGLU(mul_mv_swiglu_q4_0_f32, q4_0, Q4_0_BYTES)
MUL_MV_SWIGLU(mul_mv_swiglu_q4_1_f32, q4_1, Q4_1_BYTES)
MUL_MV_SWIGLU(mul_mv_swiglu_q8_0_f32, q8_0, Q8_0_BYTES)
