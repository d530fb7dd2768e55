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
// Software-pipelined: a work-item issues its global loads (and dequantization) for step
// k0 + 32 right after the barrier that publishes step k0's tiles, so they are in flight
// while the work-group multiplies; one local tile set, two barriers per step.
// Tails (rows, tokens, and n_in for float types) load zeros.
// Global size (ceil(n_out/64) * 16, ceil(n_tok/32) * 16, n_split), local size (16, 16, 1).
// Split-K (mul_mm only): with n_split > 1 work-groups, group z reduces k over
// [z * k_chunk, (z + 1) * k_chunk) (k_chunk a multiple of 32) and writes its partial tile
// to part[z][t][o]; mul_mm_reduce_f32 then sums the partials into y. Used when a matmul
// has too few output tiles to fill the device (the 576-row O and down projections).
// w is addressed in bytes, x and y in elements. f16 values and scales via vload_half.
//
// Fused prefill variants (quantized weights), same tiling:
// * mul_mm3_T_f32: three weights of one input (Q/K/V) in one launch. The row tiles walk
//   the concatenation of the three weights' rows; each loader row and each output row
//   picks its weight / output by its index, so a tile may straddle two weights.
// * mul_mm_swiglu_T_f32: gate and up rows r0..r0+63 in one work-group (two weight tiles,
//   4 × 2 gate and 4 × 2 up accumulators per work-item), written as
//   out = silu(gate) · up = gate / (1 + exp(-gate)) · up (the CPU's formula); the gate
//   and up products never reach global memory.

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
    __global const uchar *blk = row + (k / QK) * Q4_0_BYTES;
    const uint p = (k % 32) / 8;   // 0,1: low nibbles of qs[8p..]; 2,3: high of qs[8(p-2)..]
    const float d = vload_half(0, (__global const half *)blk);
    const uchar8 q = vload8(0, blk + 2 + 8 * (p & 1));
    const float8 f = (p < 2 ? q4_0_lo8(q) : q4_0_hi8(q)) * d;
    vstore8(f, 0, v);
}
inline void w8_q4_1(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const uchar *blk = row + (k / QK) * Q4_1_BYTES;
    const uint p = (k % 32) / 8;
    const float d = vload_half(0, (__global const half *)blk);
    const float m = vload_half(1, (__global const half *)blk);
    const uchar8 q = vload8(0, blk + 4 + 8 * (p & 1));
    const float8 f = (p < 2 ? q4_lo8(q) : q4_hi8(q)) * d + m;
    vstore8(f, 0, v);
}
inline void w8_q8_0(__global const uchar *row, uint k, uint n_in, float *v) {
    __global const uchar *blk = row + (k / QK) * Q8_0_BYTES;
    const float d = vload_half(0, (__global const half *)blk);
    const float8 f = convert_float8(vload8(0, (__global const char *)(blk + 2 + (k % 32)))) * d;
    vstore8(f, 0, v);
}


// The 4-row × 2-token register block of work-item (tx, ty) over one TK step.
inline void mm_block(__local const float *ws, __local const float *xs, uint tx, uint ty, float *acc) {
    for (uint kk = 0; kk < TK; kk++) {
        const float4 a = vload4(0, ws + kk * WS_STRIDE + 4 * tx);
        const float2 b = vload2(0, xs + kk * XS_STRIDE + 2 * ty);
        acc[0] = fma(a.x, b.x, acc[0]); acc[1] = fma(a.x, b.y, acc[1]);
        acc[2] = fma(a.y, b.x, acc[2]); acc[3] = fma(a.y, b.y, acc[3]);
        acc[4] = fma(a.z, b.x, acc[4]); acc[5] = fma(a.z, b.y, acc[5]);
        acc[6] = fma(a.w, b.x, acc[6]); acc[7] = fma(a.w, b.y, acc[7]);
    }
}

// Activation tile: elements kx..kx+3 of the loader's token (zeros past n_in or n_tok),
// fetched into registers, then stored k-major.
inline void mm_x4(__global const float *xrow, bool x_ok, uint kx, uint n_in, float *xv) {
    for (uint i = 0; i < 4; i++) xv[i] = (x_ok && kx + i < n_in) ? xrow[kx + i] : 0.0f;
}
inline void mm_store_x(__local float *xs, const float *xv, uint xt, uint xp) {
    for (uint i = 0; i < 4; i++) xs[(4 * xp + i) * XS_STRIDE + xt] = xv[i];
}

// Weight tile: 8 elements of loader row lr (zeros for rows past the end).
inline void mm_store_w(__local float *ws, const float *v, bool ok, uint lr, uint lp) {
    for (uint i = 0; i < 8; i++) ws[(8 * lp + i) * WS_STRIDE + lr] = ok ? v[i] : 0.0f;
}

#define MUL_MM(NAME, T, ROW_BYTES)                                                        \
__kernel void NAME(__global const uchar *w, const ulong w_off,                            \
                               __global const float *x, const ulong x_off,                \
                               __global float *y, const ulong y_off,                      \
                               const uint n_in, const uint n_out, const uint n_tok,       \
                               const uint accumulate, const uint k_chunk,                 \
                               __global float *part) {                                    \
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
    float acc[8];                                                                         \
    for (uint i = 0; i < 8; i++) acc[i] = 0.0f;                                           \
    /* software pipeline: the next step's global loads are in flight during mm_block */   \
    /* split-K: work-group z of get_num_groups(2) takes k in [kz0, kz1) */                \
    const uint kz0 = get_group_id(2) * k_chunk;                                           \
    const uint kz1 = min(kz0 + k_chunk, n_in);                                            \
    float v[8], xv[4];                                                                    \
    if (w_ok) w8_##T(wrow, kz0 + 8 * lp, n_in, v);                                        \
    mm_x4(xrow, x_ok, kz0 + 4 * xp, n_in, xv);                                            \
    for (uint k0 = kz0; k0 < kz1; k0 += TK) {                                             \
        mm_store_w(ws, v, w_ok, lr, lp);                                                  \
        mm_store_x(xs, xv, xt, xp);                                                       \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
        if (k0 + TK < kz1) {                                                              \
            if (w_ok) w8_##T(wrow, k0 + TK + 8 * lp, n_in, v);                            \
            mm_x4(xrow, x_ok, k0 + TK + 4 * xp, n_in, xv);                                \
        }                                                                                 \
        mm_block(ws, xs, tx, ty, acc);                                                    \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
    }                                                                                     \
    for (uint j = 0; j < 2; j++) {                                                        \
        const uint t = t0 + 2 * ty + j;                                                   \
        if (t < n_tok) {                                                                  \
            for (uint i = 0; i < 4; i++) {                                                \
                const uint r = r0 + 4 * tx + i;                                           \
                if (r < n_out && get_num_groups(2) > 1) {                                 \
                    part[((ulong)get_group_id(2) * n_tok + t) * n_out + r] = acc[2 * i + j]; \
                } else if (r < n_out) {                                                   \
                    __global float *yp = y + y_off + (ulong)t * n_out + r;                \
                    *yp = accumulate ? *yp + acc[2 * i + j] : acc[2 * i + j];             \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
}

MUL_MM(mul_mm_f32_f32, f32, n_in * 4)
MUL_MM(mul_mm_f16_f32, f16, n_in * 2)
MUL_MM(mul_mm_bf16_f32, bf16, n_in * 2)
MUL_MM(mul_mm_q4_0_f32, q4_0, (n_in / QK) * Q4_0_BYTES)
MUL_MM(mul_mm_q4_1_f32, q4_1, (n_in / QK) * Q4_1_BYTES)
MUL_MM(mul_mm_q8_0_f32, q8_0, (n_in / QK) * Q8_0_BYTES)

#define MUL_MM3(NAME, T, ROW_BYTES)                                                       \
__kernel void NAME(__global const uchar *w0, const ulong w0_off,                          \
                                __global const uchar *w1, const ulong w1_off,             \
                                __global const uchar *w2, const ulong w2_off,             \
                                __global const float *x, const ulong x_off,               \
                                __global float *y0, const ulong y0_off,                   \
                                __global float *y1, const ulong y1_off,                   \
                                __global float *y2, const ulong y2_off,                   \
                                const uint n_in, const uint n0, const uint n1,            \
                                const uint n2, const uint n_tok) {                        \
    __local float ws[TK * WS_STRIDE];                                                     \
    __local float xs[TK * XS_STRIDE];                                                     \
    const uint lin = get_local_id(1) * 16 + get_local_id(0);                              \
    const uint tx = lin % 16, ty = lin / 16;                                              \
    const uint r0 = get_group_id(0) * TR;                                                 \
    const uint t0 = get_group_id(1) * TT;                                                 \
    const ulong rb = (ulong)(ROW_BYTES);                                                  \
    const uint lr = lin / 4, lp = lin % 4;                                                \
    const uint xt = lin / 8, xp = lin % 8;                                                \
    const uint R = r0 + lr;                                                               \
    const bool w_ok = R < n0 + n1 + n2;                                                   \
    const bool x_ok = t0 + xt < n_tok;                                                    \
    __global const uchar *wrow = !w_ok ? w0 + w0_off                                      \
        : R < n0 ? w0 + w0_off + (ulong)R * rb                                            \
        : R < n0 + n1 ? w1 + w1_off + (ulong)(R - n0) * rb                                \
        : w2 + w2_off + (ulong)(R - n0 - n1) * rb;                                        \
    __global const float *xrow = x + x_off + (ulong)(x_ok ? t0 + xt : 0) * n_in;          \
    float acc[8];                                                                         \
    for (uint i = 0; i < 8; i++) acc[i] = 0.0f;                                           \
    /* software pipeline: the next step's global loads are in flight during mm_block */   \
    float v[8], xv[4];                                                                    \
    if (w_ok) w8_##T(wrow, 8 * lp, n_in, v);                                              \
    mm_x4(xrow, x_ok, 4 * xp, n_in, xv);                                                  \
    for (uint k0 = 0; k0 < n_in; k0 += TK) {                                              \
        mm_store_w(ws, v, w_ok, lr, lp);                                                  \
        mm_store_x(xs, xv, xt, xp);                                                       \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
        if (k0 + TK < n_in) {                                                             \
            if (w_ok) w8_##T(wrow, k0 + TK + 8 * lp, n_in, v);                            \
            mm_x4(xrow, x_ok, k0 + TK + 4 * xp, n_in, xv);                                \
        }                                                                                 \
        mm_block(ws, xs, tx, ty, acc);                                                    \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
    }                                                                                     \
    for (uint i = 0; i < 4; i++) {                                                        \
        const uint r = r0 + 4 * tx + i;                                                   \
        __global float *yb; uint n, rr;                                                   \
        if (r < n0) { yb = y0 + y0_off; n = n0; rr = r; }                                 \
        else if (r < n0 + n1) { yb = y1 + y1_off; n = n1; rr = r - n0; }                  \
        else if (r < n0 + n1 + n2) { yb = y2 + y2_off; n = n2; rr = r - n0 - n1; }        \
        else continue;                                                                    \
        for (uint j = 0; j < 2; j++) {                                                    \
            const uint t = t0 + 2 * ty + j;                                               \
            if (t < n_tok) yb[(ulong)t * n + rr] = acc[2 * i + j];                        \
        }                                                                                 \
    }                                                                                     \
}

#define MUL_MM_SWIGLU(NAME, T, ROW_BYTES)                                                 \
__kernel void NAME(__global const uchar *wg, const ulong wg_off,                          \
                                      __global const uchar *wu, const ulong wu_off,       \
                                      __global const float *x, const ulong x_off,         \
                                      __global float *out, const ulong out_off,           \
                                      const uint n_in, const uint n_out, const uint n_tok) { \
    __local float wgs[TK * WS_STRIDE];                                                    \
    __local float wus[TK * WS_STRIDE];                                                    \
    __local float xs[TK * XS_STRIDE];                                                     \
    const uint lin = get_local_id(1) * 16 + get_local_id(0);                              \
    const uint tx = lin % 16, ty = lin / 16;                                              \
    const uint r0 = get_group_id(0) * TR;                                                 \
    const uint t0 = get_group_id(1) * TT;                                                 \
    const ulong rb = (ulong)(ROW_BYTES);                                                  \
    const uint lr = lin / 4, lp = lin % 4;                                                \
    const uint xt = lin / 8, xp = lin % 8;                                                \
    const bool w_ok = r0 + lr < n_out;                                                    \
    const bool x_ok = t0 + xt < n_tok;                                                    \
    const ulong wrow = (ulong)(w_ok ? r0 + lr : 0) * rb;                                  \
    __global const uchar *grow = wg + wg_off + wrow;                                      \
    __global const uchar *urow = wu + wu_off + wrow;                                      \
    __global const float *xrow = x + x_off + (ulong)(x_ok ? t0 + xt : 0) * n_in;          \
    float ag[8], au[8];                                                                   \
    for (uint i = 0; i < 8; i++) { ag[i] = 0.0f; au[i] = 0.0f; }                          \
    float vg[8], vu[8], xv[4];                                                            \
    if (w_ok) { w8_##T(grow, 8 * lp, n_in, vg); w8_##T(urow, 8 * lp, n_in, vu); }         \
    mm_x4(xrow, x_ok, 4 * xp, n_in, xv);                                                  \
    for (uint k0 = 0; k0 < n_in; k0 += TK) {                                              \
        mm_store_w(wgs, vg, w_ok, lr, lp);                                                \
        mm_store_w(wus, vu, w_ok, lr, lp);                                                \
        mm_store_x(xs, xv, xt, xp);                                                       \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
        if (k0 + TK < n_in) {                                                             \
            if (w_ok) {                                                                   \
                w8_##T(grow, k0 + TK + 8 * lp, n_in, vg);                                 \
                w8_##T(urow, k0 + TK + 8 * lp, n_in, vu);                                 \
            }                                                                             \
            mm_x4(xrow, x_ok, k0 + TK + 4 * xp, n_in, xv);                                \
        }                                                                                 \
        mm_block(wgs, xs, tx, ty, ag);                                                    \
        mm_block(wus, xs, tx, ty, au);                                                    \
        barrier(CLK_LOCAL_MEM_FENCE);                                                     \
    }                                                                                     \
    for (uint j = 0; j < 2; j++) {                                                        \
        const uint t = t0 + 2 * ty + j;                                                   \
        for (uint i = 0; i < 4; i++) {                                                    \
            const uint r = r0 + 4 * tx + i;                                               \
            if (t < n_tok && r < n_out) {                                                 \
                const float g = ag[2 * i + j];                                            \
                out[out_off + (ulong)t * n_out + r] = g / (1.0f + exp(-g)) * au[2 * i + j]; \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
}

MUL_MM3(mul_mm3_q4_0_f32, q4_0, (n_in / QK) * Q4_0_BYTES)
MUL_MM3(mul_mm3_q4_1_f32, q4_1, (n_in / QK) * Q4_1_BYTES)
MUL_MM3(mul_mm3_q8_0_f32, q8_0, (n_in / QK) * Q8_0_BYTES)
MUL_MM_SWIGLU(mul_mm_swiglu_q4_0_f32, q4_0, (n_in / QK) * Q4_0_BYTES)
MUL_MM_SWIGLU(mul_mm_swiglu_q4_1_f32, q4_1, (n_in / QK) * Q4_1_BYTES)
MUL_MM_SWIGLU(mul_mm_swiglu_q8_0_f32, q8_0, (n_in / QK) * Q8_0_BYTES)

// Split-K: y[i] (+)= sum over the n_split partials part[z * n + i], in z order
// (deterministic), n = n_tok * n_out.
__kernel void mul_mm_reduce_f32(__global const float *part, __global float *y, const ulong y_off,
                                const uint n, const uint n_split, const uint accumulate) {
    const uint i = get_global_id(0);
    if (i >= n) return;
    float s = part[i];
    for (uint z = 1; z < n_split; z++) s += part[(ulong)z * n + i];
    y[y_off + i] = accumulate ? y[y_off + i] + s : s;
}
