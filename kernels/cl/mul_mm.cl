// mul_mm.cl — tiled matrix × matrix for prefill: y[t, o] = sum_i w[o, i] * x[t, i],
// w [n_out, n_in] of any weight type, x [n_tok, n_in] f32, y [n_tok, n_out] f32
// (y += that when `accumulate` is set: the residual add folded into the projection).
//
// One work-group of 16 × 16 work-items computes a 64-row × 32-token tile of y; each
// work-item a 4-row × 2-token block, kept in registers. The reduction dimension is
// walked 32 elements (one quant block) at a time: the work-group dequantizes a 64 × 32
// weight tile (each work-item 8 consecutive elements of one row, with vector loads) and
// loads a 32 × 32 activation tile into local memory, both stored k-major so the inner
// loop reads a float4 of weights and a float2 of activations per k (2 local loads for 8
// FMAs). Each weight element is read once per 32 tokens, each activation once per 64 rows.
// Tails (rows, tokens, and n_in for float types) load zeros.
// Global size (ceil(n_out/64) * 16, ceil(n_tok/32) * 16), local size (16, 16).
// w is addressed in bytes, x and y in elements. f16 values and scales via vload_half.

#define TK 32          // k per step
#define TR 64          // rows per tile
#define TT 32          // tokens per tile
#define WS_STRIDE 68   // TR + 4: keeps float4 alignment, shifts banks per k
#define XS_STRIDE 36   // TT + 4

// Elements k..k+7 (k % 8 == 0) of a weight row starting at byte `row`, into v.
inline void w8_f32(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const float *r = (__global const float *)row;
    for (uint i = 0; i < 8; i++) v[i] = k + i < n_in ? r[k + i] : 0.0f;
}
inline void w8_f16(__global const uchar *row, uint k, uint n_in, float *v) {
    for (uint i = 0; i < 8; i++) v[i] = k + i < n_in ? vload_half(k + i, (__global const half *)row) : 0.0f;
}
inline void w8_bf16(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const ushort *r = (__global const ushort *)row;
    for (uint i = 0; i < 8; i++) v[i] = k + i < n_in ? as_float((uint)r[k + i] << 16) : 0.0f;
}
inline void w8_q4_0(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const uchar *blk = row + (k / 32) * 18;
    const uint p = (k % 32) / 8;   // 0,1: low nibbles of qs[8p..]; 2,3: high of qs[8(p-2)..]
    const float d = vload_half(0, (__global const half *)blk);
    const uchar8 q = vload8(0, blk + 2 + 8 * (p & 1));
    const float8 f = (convert_float8(p < 2 ? (q & (uchar8)(0x0F)) : (q >> (uchar8)(4))) - 8.0f) * d;
    vstore8(f, 0, v);
}
inline void w8_q4_1(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const uchar *blk = row + (k / 32) * 20;
    const uint p = (k % 32) / 8;
    const float d = vload_half(0, (__global const half *)blk);
    const float m = vload_half(1, (__global const half *)blk);
    const uchar8 q = vload8(0, blk + 4 + 8 * (p & 1));
    const float8 f = convert_float8(p < 2 ? (q & (uchar8)(0x0F)) : (q >> (uchar8)(4))) * d + m;
    vstore8(f, 0, v);
}
inline void w8_q8_0(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const uchar *blk = row + (k / 32) * 34;
    const float d = vload_half(0, (__global const half *)blk);
    const float8 f = convert_float8(vload8(0, (__global const char *)(blk + 2 + (k % 32)))) * d;
    vstore8(f, 0, v);
}

#define MUL_MM(T, ROW_BYTES)                                                              \
__kernel void mul_mm_##T##_f32(__global const uchar *w, const ulong w_off,                \
                               __global const float *x, const ulong x_off,               \
                               __global float *y, const ulong y_off,                     \
                               const uint n_in, const uint n_out, const uint n_tok,      \
                               const uint accumulate) {                                  \
    __local float ws[TK * WS_STRIDE];                                                     \
    __local float xs[TK * XS_STRIDE];                                                     \
    const uint lin = get_local_id(1) * 16 + get_local_id(0);                              \
    const uint tx = lin % 16;                                                             \
    const uint ty = lin / 16;                                                             \
    const uint r0 = get_group_id(0) * TR;                                                 \
    const uint t0 = get_group_id(1) * TT;                                                 \
    const ulong rb = (ulong)(ROW_BYTES);                                                  \
    /* loader roles: weights row lr, elements 8*lp..; activations token xt, 4*xp.. */     \
    const uint lr = lin / 4, lp = lin % 4;                                                \
    const uint xt = lin / 8, xp = lin % 8;                                                \
    const bool w_ok = r0 + lr < n_out;                                                    \
    const bool x_ok = t0 + xt < n_tok;                                                    \
    __global const uchar *wrow = w + w_off + (ulong)(w_ok ? r0 + lr : 0) * rb;            \
    __global const float *xrow = x + x_off + (ulong)(x_ok ? t0 + xt : 0) * n_in;          \
    float acc[4][2];                                                                      \
    for (uint i = 0; i < 4; i++) { acc[i][0] = 0.0f; acc[i][1] = 0.0f; }                  \
    for (uint k0 = 0; k0 < n_in; k0 += TK) {                                              \
        float v[8];                                                                       \
        if (w_ok) {                                                                       \
            w8_##T(wrow, k0 + 8 * lp, n_in, v);                                           \
        } else {                                                                          \
            for (uint i = 0; i < 8; i++) v[i] = 0.0f;                                     \
        }                                                                                 \
        for (uint i = 0; i < 8; i++) ws[(8 * lp + i) * WS_STRIDE + lr] = v[i];            \
        const uint kx = k0 + 4 * xp;                                                      \
        for (uint i = 0; i < 4; i++) {                                                    \
            xs[(4 * xp + i) * XS_STRIDE + xt] = (x_ok && kx + i < n_in) ? xrow[kx + i] : 0.0f; \
        }                                                                                 \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
        for (uint kk = 0; kk < TK; kk++) {                                                \
            const float4 a = vload4(0, ws + kk * WS_STRIDE + 4 * tx);                     \
            const float2 b = vload2(0, xs + kk * XS_STRIDE + 2 * ty);                     \
            acc[0][0] = fma(a.x, b.x, acc[0][0]); acc[0][1] = fma(a.x, b.y, acc[0][1]);   \
            acc[1][0] = fma(a.y, b.x, acc[1][0]); acc[1][1] = fma(a.y, b.y, acc[1][1]);   \
            acc[2][0] = fma(a.z, b.x, acc[2][0]); acc[2][1] = fma(a.z, b.y, acc[2][1]);   \
            acc[3][0] = fma(a.w, b.x, acc[3][0]); acc[3][1] = fma(a.w, b.y, acc[3][1]);   \
        }                                                                                 \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
    }                                                                                     \
    for (uint j = 0; j < 2; j++) {                                                        \
        const uint t = t0 + 2 * ty + j;                                                   \
        if (t < n_tok) {                                                                  \
            for (uint i = 0; i < 4; i++) {                                                \
                const uint r = r0 + 4 * tx + i;                                           \
                if (r < n_out) {                                                      \
                    __global float *yp = y + y_off + (ulong)t * n_out + r;               \
                    *yp = accumulate ? *yp + acc[i][j] : acc[i][j];                      \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
}

MUL_MM(f32, n_in * 4)
MUL_MM(f16, n_in * 2)
MUL_MM(bf16, n_in * 2)
MUL_MM(q4_0, (n_in / 32) * 18)
MUL_MM(q4_1, (n_in / 32) * 20)
MUL_MM(q8_0, (n_in / 32) * 34)
