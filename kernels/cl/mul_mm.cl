// mul_mm.cl — tiled matrix × matrix for prefill: y[t, o] = sum_i w[o, i] * x[t, i],
// w [n_out, n_in] of any weight type, x [n_tok, n_in] f32, y [n_tok, n_out] f32.
//
// One work-group of 16 × 16 work-items computes a 32-row × 32-token tile of y, each
// work-item a 2 × 2 block. The reduction dimension is walked 32 elements at a time (one
// quant block): the work-group dequantizes a 32 × 32 weight tile and loads a 32 × 32
// activation tile into local memory (4 elements per work-item each), then every
// work-item accumulates in f32 from local memory. Each weight element is thus read once
// per 32 tokens, each activation once per 32 rows (mul_mv re-reads them per row/4 tokens).
// Tails (rows, tokens, and n_in for float types) load zeros.
// Global size (ceil(n_out/32) * 16, ceil(n_tok/32) * 16), local size (16, 16).
// w is addressed in bytes, x and y in elements. f16 values and scales via vload_half.

#define TILE 32
#define PAD 33

// Element k of a weight row starting at byte `row`.
inline float deq_f32(__global const uchar *row, uint k) {
    return ((__global const float *)row)[k];
}
inline float deq_f16(__global const uchar *row, uint k) {
    return vload_half(k, (__global const half *)row);
}
inline float deq_bf16(__global const uchar *row, uint k) {
    return as_float((uint)((__global const ushort *)row)[k] << 16);
}
inline float deq_q4_0(__global const uchar *row, uint k) {
    __global const uchar *blk = row + (k / 32) * 18;
    const uint j = k % 32;
    const uchar b = blk[2 + (j & 15)];
    const int q = j < 16 ? (b & 0x0F) : (b >> 4);
    return (float)(q - 8) * vload_half(0, (__global const half *)blk);
}
inline float deq_q4_1(__global const uchar *row, uint k) {
    __global const uchar *blk = row + (k / 32) * 20;
    const uint j = k % 32;
    const uchar b = blk[4 + (j & 15)];
    const int q = j < 16 ? (b & 0x0F) : (b >> 4);
    return (float)q * vload_half(0, (__global const half *)blk) + vload_half(1, (__global const half *)blk);
}
inline float deq_q8_0(__global const uchar *row, uint k) {
    __global const uchar *blk = row + (k / 32) * 34;
    return (float)((__global const char *)blk)[2 + k % 32] * vload_half(0, (__global const half *)blk);
}

#define MUL_MM(T, ROW_BYTES)                                                              \
__kernel void mul_mm_##T##_f32(__global const uchar *w, const ulong w_off,                \
                               __global const float *x, const ulong x_off,               \
                               __global float *y, const ulong y_off,                     \
                               const uint n_in, const uint n_out, const uint n_tok) {    \
    __local float ws[TILE * PAD];                                                         \
    __local float xs[TILE * PAD];                                                         \
    const uint lx = get_local_id(0);                                                      \
    const uint ly = get_local_id(1);                                                      \
    const uint lin = ly * 16 + lx;                                                        \
    const uint r0 = get_group_id(0) * TILE;                                               \
    const uint t0 = get_group_id(1) * TILE;                                               \
    const ulong rb = (ulong)(ROW_BYTES);                                                  \
    float a00 = 0.0f, a01 = 0.0f, a10 = 0.0f, a11 = 0.0f;                                 \
    for (uint k0 = 0; k0 < n_in; k0 += TILE) {                                            \
        for (uint e = lin; e < TILE * TILE; e += 256) {                                   \
            const uint i = e / TILE;                                                      \
            const uint kk = e % TILE;                                                     \
            const uint k = k0 + kk;                                                       \
            const uint r = r0 + i;                                                        \
            const uint t = t0 + i;                                                        \
            ws[i * PAD + kk] = (r < n_out && k < n_in)                                    \
                ? deq_##T(w + w_off + (ulong)r * rb, k) : 0.0f;                           \
            xs[i * PAD + kk] = (t < n_tok && k < n_in)                                    \
                ? x[x_off + (ulong)t * n_in + k] : 0.0f;                                  \
        }                                                                                 \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
        for (uint kk = 0; kk < TILE; kk++) {                                              \
            const float w0 = ws[(2 * lx) * PAD + kk];                                     \
            const float w1 = ws[(2 * lx + 1) * PAD + kk];                                 \
            const float x0 = xs[(2 * ly) * PAD + kk];                                     \
            const float x1 = xs[(2 * ly + 1) * PAD + kk];                                 \
            a00 += w0 * x0;                                                               \
            a01 += w0 * x1;                                                               \
            a10 += w1 * x0;                                                               \
            a11 += w1 * x1;                                                               \
        }                                                                                 \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
    }                                                                                     \
    const uint r = r0 + 2 * lx;                                                           \
    const uint t = t0 + 2 * ly;                                                           \
    if (r < n_out && t < n_tok) y[y_off + (ulong)t * n_out + r] = a00;                    \
    if (r < n_out && t + 1 < n_tok) y[y_off + (ulong)(t + 1) * n_out + r] = a01;          \
    if (r + 1 < n_out && t < n_tok) y[y_off + (ulong)t * n_out + r + 1] = a10;            \
    if (r + 1 < n_out && t + 1 < n_tok) y[y_off + (ulong)(t + 1) * n_out + r + 1] = a11;  \
}

MUL_MM(f32, n_in * 4)
MUL_MM(f16, n_in * 2)
MUL_MM(bf16, n_in * 2)
MUL_MM(q4_0, (n_in / 32) * 18)
MUL_MM(q4_1, (n_in / 32) * 20)
MUL_MM(q8_0, (n_in / 32) * 34)
