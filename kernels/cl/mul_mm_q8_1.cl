// mul_mm_q8_1.cl — int8 prefill matmuls: y[t, o] = Σ_i w[o, i] · x[t, i] with the
// activations quantized once per matmul input (ggml's Q8_1: blocks of 32, d = amax / 127,
// q = round(x / d), s = d · Σ q, d and s rounded to f16 as block_q8_1 holds them) and the weights' quants kept as int8, so a 32-element
// block of one (row, token) pair is one integer dot product and two float FMAs:
//   Σ_block w·x ≈ d_w · d_x · Σ q_w q_x + m_w · s_x,   w = d_w · q_w + m_w
// (m_w = 0 for the symmetric types; Q4_K/Q5_K: d_w, m_w of the 32-element sub-block).
// The arithmetic is the CPU backend's (weights × Q8 activations), not mul_mm.cl's
// "dequantized weights × f32 x".
//
// quantize_q8_1_f32: x [n_tok, n_in] f32 → xq [n_tok, n_in] int8 (element order),
// xd, xs [n_tok, n_in / 32] (scale, scale · Σ q), one work-item per block.
//
// The matmuls keep mul_mm.cl's tiling and roles (64-row × 32-token tiles of y, 16 × 16
// work-items, software-pipelined global loads, split-K partials for mul_mm, the fused
// Q/K/V and gate/up/SwiGLU variants), over NB 32-element blocks per step. A step stages
// in local memory, per block, the weight tile as 64 rows × 32 int8 (row-major, rows QST
// words apart) with the rows' (d, m), and the activation tile as 32 tokens × 32 int8 with
// the tokens' (d, s). Each work-item dequantizes nothing: its weight-loader role turns 8
// quants of one row into two words of int8 (centred for Q4_0/Q5_0) and the block's d, m.
// The product of the tiles:
// * portable (default): work-item (tx, ty) holds rows tx + 16 i (i < 4) × tokens
//   ty + 16 j (j < 2); per block it reads each row and token as two uint4 (a 12-word row
//   stride keeps the 8 rows a quarter-warp reads on distinct banks) and does 64 `dp4a`
//   (common/int8.cl: PTX on NVIDIA, plain OpenCL C elsewhere).
// * AG_NV_MMA (NVIDIA, sm_80+): warp w takes the 16 rows 16 (w % 4).. and the 16 tokens
//   16 (w / 4)..; per block two `mma.sync.m16n8k32` s8 → s32 (the PTX fragment layouts
//   read straight from the same tiles), lane (g, c) = (lane / 4, lane % 4) holding rows
//   g, g + 8 × tokens 2c, 2c + 1 of each 8-token half.
// Tails: rows and tokens past the end load zeros (and zero scales); blocks past the step
// range (n_in, or a split-K chunk, not a multiple of NB blocks) too. n_in is a multiple
// of 32 (of 256 for the K-quants): rows are whole blocks.
// Global size (ceil(n_out/64) * 16, ceil(n_tok/32) * 16, n_split), local (16, 16, 1).

#ifndef NB
#define NB 2           // 32-element blocks per step
#endif
#define QTR 64         // rows per tile
#define QTT 32         // tokens per tile
#define QST 12         // words per tile row in local memory: 8 (32 int8) + 4 of padding

// ---- activation quantization --------------------------------------------------------

// x rounded to f16 and back (round to nearest even; core OpenCL C, no cl_khr_fp16).
inline float f16_round(const float x) {
    ushort h[1];
    vstore_half_rte(x, 0, (half *)h);
    return vload_half(0, (const half *)h);
}

__kernel void quantize_q8_1_f32(__global const float *x, const ulong x_off, __global int *xq,
                                __global float *xd, __global float *xs, const uint n_blocks) {
    const uint b = get_global_id(0);
    if (b >= n_blocks) {
        return;
    }
    // Rows are whole blocks, so block b of the flattened [n_tok, n_in] is x[32 b ..].
    __global const float *src = x + x_off + (ulong)b * QK;
    float a = 0.0f;
    for (uint i = 0; i < 8; i++) {
        const float4 v = fabs(vload4(i, src));
        a = fmax(a, fmax(fmax(v.x, v.y), fmax(v.z, v.w)));
    }
    const float d = a / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int s = 0;
    for (uint i = 0; i < 8; i++) {
        const int4 q = convert_int4(round(vload4(i, src) * id));
        s += q.x + q.y + q.z + q.w;
        xq[(ulong)b * 8 + i] = (q.x & 0xff) | (q.y & 0xff) << 8 | (q.z & 0xff) << 16 | (q.w & 0xff) << 24;
    }
    // Stored as ggml's block_q8_1 stores them (f16, nearest-even), so the products are
    // the CPU backend's.
    xd[b] = f16_round(d);
    xs[b] = f16_round(d * (float)s);
}

// ---- weight loaders -----------------------------------------------------------------
// q8w_T(row, k, q, d, m): elements k..k+7 (k % 8 == 0) of the weight row starting at
// byte `row` as eight int8 in two words (element order), and the scale d and offset m of
// their 32-element block or sub-block: element = d · q + m.

// Bytes of x - 8 (x - 16) for bytes x in 0..15 (0..31): no borrow crosses a byte.
inline uint2 centre8(const uint2 x) {
    return ((x | (uint2)(0x80808080u)) - (uint2)(0x08080808u)) ^ (uint2)(0x80808080u);
}
inline uint2 centre16(const uint2 x) {
    return ((x | (uint2)(0x80808080u)) - (uint2)(0x10101010u)) ^ (uint2)(0x80808080u);
}
// Bit i (i < 8) of h into bit 4 of byte i: a Q5 fifth bit for 8 elements.
inline uint2 q5_high8(const uint h) {
    uint2 r = (uint2)(0u);
    for (uint i = 0; i < 4; i++) {
        r.x |= ((h >> i) & 1u) << (8 * i + 4);
        r.y |= ((h >> (i + 4)) & 1u) << (8 * i + 4);
    }
    return r;
}
// Two words of Q4 nibbles: the low nibbles of `w` for p < 2, else the high ones.
inline uint2 nibbles8(const uint2 w, const uint p) {
    return p < 2 ? w & (uint2)(0x0F0F0F0Fu) : (w >> (uint2)(4u)) & (uint2)(0x0F0F0F0Fu);
}
inline uint2 ld8(__global const uchar *p) { // 8 bytes at a 2-aligned address
    return as_uint2(vload4(0, (__global const ushort *)p));
}

inline void q8w_q4_0(__global const uchar *row, uint k, uint2 *q, float *d, float *m) {
    __global const uchar *blk = row + (k / QK) * Q4_0_BYTES;
    const uint p = (k % 32) / 8; // 0,1: low nibbles of qs[8p..]; 2,3: high of qs[8(p-2)..]
    *d = vload_half(0, (__global const half *)blk);
    *m = 0.0f;
    *q = centre8(nibbles8(ld8(blk + 2 + 8 * (p & 1)), p));
}
// Q4_0 rows repacked for the block kernel (core/src/opencl/rowsoa.rs; block.cl's
// T_Q4_0R): a row's nb 16-byte quant words (16-aligned), then its nb f16 scales. The row
// length comes from the kernel's n_in: q8w_q4_0r is a macro over the kernel's scope.
inline void q8w_q4_0r_nb(__global const uchar *row, uint k, const uint nb, uint2 *q, float *d, float *m) {
    const uint b = k / QK, p = (k % 32) / 8;
    *d = vload_half(b, (__global const half *)(row + 16 * nb));
    *m = 0.0f;
    *q = centre8(nibbles8(*(__global const uint2 *)(row + 16 * b + 8 * (p & 1)), p));
}
#define q8w_q4_0r(row, k, q, d, m) q8w_q4_0r_nb(row, k, n_in / QK, q, d, m)

inline void q8w_q4_1(__global const uchar *row, uint k, uint2 *q, float *d, float *m) {
    __global const uchar *blk = row + (k / QK) * Q4_1_BYTES;
    const uint p = (k % 32) / 8;
    *d = vload_half(0, (__global const half *)blk);
    *m = vload_half(1, (__global const half *)blk);
    *q = nibbles8(ld8(blk + 4 + 8 * (p & 1)), p);
}
inline void q8w_q8_0(__global const uchar *row, uint k, uint2 *q, float *d, float *m) {
    __global const uchar *blk = row + (k / QK) * Q8_0_BYTES;
    *d = vload_half(0, (__global const half *)blk);
    *m = 0.0f;
    *q = ld8(blk + 2 + k % 32);
}
inline void q8w_q5_0(__global const uchar *row, uint k, uint2 *q, float *d, float *m) {
    __global const uchar *blk = row + (k / QK) * Q5_0_BYTES;
    const uint p = (k % 32) / 8;
    *d = vload_half(0, (__global const half *)blk);
    *m = 0.0f;
    const uint qh = as_uint(vload2(0, (__global const ushort *)(blk + 2)));
    *q = centre16(nibbles8(ld8(blk + 6 + 8 * (p & 1)), p) | q5_high8((qh >> (8 * p)) & 0xffu));
}
inline void q8w_q5_1(__global const uchar *row, uint k, uint2 *q, float *d, float *m) {
    __global const uchar *blk = row + (k / QK) * Q5_1_BYTES;
    const uint p = (k % 32) / 8;
    *d = vload_half(0, (__global const half *)blk);
    *m = vload_half(1, (__global const half *)blk);
    const uint qh = as_uint(vload2(0, (__global const ushort *)(blk + 4)));
    *q = nibbles8(ld8(blk + 8 + 8 * (p & 1)), p) | q5_high8((qh >> (8 * p)) & 0xffu);
}
// Q4_K (has_qh 0) and Q5_K (1), as mul_mm_kq_f32.cl's w8_q45_k: element i = k % 256 of
// the super-block is in sub-block s = i / 32, its nibble (high for odd s) in
// qs[32 (s / 2) + i % 32], Q5_K's fifth bit bit s of qh[i % 32]; w = d·sc·q − dmin·mn.
inline void q8w_q45_k(__global const uchar *row, uint k, uint2 *q, float *d, float *m, const uint has_qh) {
    __global const uchar *blk = row + (k / QK_K) * (has_qh ? Q5_K_BYTES : Q4_K_BYTES);
    const uint i = k % QK_K, s = i / 32;
    const float2 dm = vload_half2(0, (__global const half *)blk);
    const uint3 sw = kq_scale_words(blk);
    const uint2 sm = scale_min_k4_w(sw.x, sw.y, sw.z, s);
    const uint2 w = ld8(blk + (has_qh ? 48 : 16) + 32 * (s / 2) + i % 32);
    uint2 v = (s & 1) ? (w >> (uint2)(4u)) & (uint2)(0x0F0F0F0Fu) : w & (uint2)(0x0F0F0F0Fu);
    if (has_qh) {
        v |= ((ld8(blk + 16 + i % 32) >> (uint2)(s)) & (uint2)(0x01010101u)) << (uint2)(4u);
    }
    *q = v;
    *d = dm.x * (float)sm.x;
    *m = -dm.y * (float)sm.y;
}
inline void q8w_q4_k(__global const uchar *row, uint k, uint2 *q, float *d, float *m) {
    q8w_q45_k(row, k, q, d, m, 0);
}
inline void q8w_q5_k(__global const uchar *row, uint k, uint2 *q, float *d, float *m) {
    q8w_q45_k(row, k, q, d, m, 1);
}

// ---- tiles --------------------------------------------------------------------------

// Two tile shapes (build options):
// * default: 64 rows × 32 tokens (WREP = XREP = 1). With AG_NV_MMA warp w holds the 16 × 16
//   corner rows 16 (w % 4).., tokens 16 (w / 4).. (RF = 1 row fragment of 16 × TF = 2
//   token fragments of 8); without it the portable dp4a form below.
// * AG_MMQ_WIDE: 128 rows × 64 tokens (WREP = XREP = 2); warp w holds rows 32 (w % 4)..
//   and tokens 32 (w / 4).. as RF = 2 row fragments × TF = 4 token fragments: per block
//   the warp loads 2 A and 4 B fragments for 8 `mma` (the default shape: 1 and 2 for 2),
//   and per block a lane's scales are 4 row and 8 token pairs for 32 accumulators. The
//   fused gate/up tile interleaves the two weights in 16-row groups (rows 32 i.. of the
//   tile: gate rows 16 i.., then the same up rows), so a lane holds gate and up of the
//   same outputs: 64 outputs a tile. Without AG_NV_MMA the same ownership is computed
//   by dp4a over the tiles (how PoCL checks the layout; the `mma` fragments read the same
//   words).
#ifdef AG_MMQ_WIDE
#define WREP 2
#define XREP 2
#define RF 2
#define TF 4
#define MMA_LAYOUT
#else
#define WREP 1
#define XREP 1
#define RF 1
#define TF 2
#ifdef AG_NV_MMA
#define MMA_LAYOUT
#endif
#endif
#define QTR (64 * WREP)  // rows per tile
#define QTT (32 * XREP)  // tokens per tile
#define NACC (4 * RF * TF) // accumulators per work-item
#define QST 12           // words per tile row in local memory: 8 (32 int8) + 4 of padding

// A weight tile in local memory: NB blocks of QTR rows × QST words, and (d, m) per row.
#define WTILE(name) __local uint4 name##_q[NB * QTR * QST / 4]; __local float2 name##_dm[NB * QTR]
// The activation tile: NB blocks of QTT tokens × QST words, (d, s) per token.
#define XTILE(name) __local uint4 name##_q[NB * QTT * QST / 4]; __local float2 name##_ds[NB * QTT]

// What a work-item's loader roles hold for one step: per block, 8 quants of each of its
// WREP weight rows (lr + 64 h, with the block's d, m) and one activation word of each of
// its XREP tokens (xt + 32 h; the first QTT work-items also one token's d, s).
typedef struct {
    uint2 q[NB][WREP];
    float2 dm[NB][WREP];
} WLoad;
typedef struct {
    int q[NB][XREP];
    float2 ds[NB];
} XLoad;

// Per-type: whether w = d·q + m has an offset (else the m·s term is compiled out).
#define HASM_q4_0 0
#define HASM_q4_0r 0
#define HASM_q4_1 1
#define HASM_q8_0 0
#define HASM_q5_0 0
#define HASM_q5_1 1
#define HASM_q4_k 1
#define HASM_q5_k 1

#define LOAD_W(T, wrow, ok, k0, k_end, lp, L)                                               \
    for (uint b_ = 0; b_ < NB; b_++) {                                                   \
        const uint kb_ = (k0) + 32 * b_;                                                 \
        for (uint h_ = 0; h_ < WREP; h_++) {                                             \
            float d_ = 0.0f, m_ = 0.0f;                                                  \
            uint2 q_ = (uint2)(0u);                                                      \
            if ((ok)[h_] && kb_ < (k_end)) q8w_##T((wrow)[h_], kb_ + 8 * (lp), &q_, &d_, &m_); \
            (L).q[b_][h_] = q_;                                                          \
            (L).dm[b_][h_] = (float2)(d_, m_);                                           \
        }                                                                                \
    }

// xq_row: the work-item's first token's int8 row (xt), the others 32 tokens apart.
inline void mmq_load_x(__global const int *xq_row, __global const float *xd, __global const float *xs,
                       const bool *ok, const uint k0, const uint k_end, const uint xw, const uint n_in,
                       const bool s_ok, XLoad *L) {
    for (uint b = 0; b < NB; b++) {
        const uint kb = k0 + 32 * b;
        const bool in = kb < k_end;
        for (uint h = 0; h < XREP; h++) {
            L->q[b][h] = ok[h] && in ? xq_row[(ulong)h * 32 * (n_in / 4) + kb / 4 + xw] : 0;
        }
        L->ds[b] = s_ok && in ? (float2)(xd[kb / 32], xs[kb / 32]) : (float2)(0.0f);
    }
}

inline void mmq_store_w(__local uint4 *wq, __local float2 *wdm, const WLoad *L, const uint lr, const uint lp) {
    __local uint *w = (__local uint *)wq;
    for (uint b = 0; b < NB; b++) {
        for (uint h = 0; h < WREP; h++) {
            vstore2(L->q[b][h], 0, w + (b * QTR + lr + 64 * h) * QST + 2 * lp);
            if (lp == 0) {
                wdm[b * QTR + lr + 64 * h] = L->dm[b][h];
            }
        }
    }
}

inline void mmq_store_x(__local uint4 *xq, __local float2 *xds, const XLoad *L, const uint xt, const uint xw,
                        const uint lin) {
    __local int *x = (__local int *)xq;
    for (uint b = 0; b < NB; b++) {
        for (uint h = 0; h < XREP; h++) {
            x[(b * QTT + xt + 32 * h) * QST + xw] = L->q[b][h];
        }
        if (lin < QTT) {
            xds[b * QTT + lin] = L->ds[b];
        }
    }
}

// Tile row and token of accumulator a (< NACC) of work-item lin. The `mma` ownership:
// a = 4 (rf · TF + tf) + e — row fragment rf, token fragment tf, and e the fragment's
// element (rows g / g + 8, tokens 2c / 2c + 1, with g = lane / 4, c = lane % 4).
#ifdef MMA_LAYOUT
inline uint acc_row(const uint lin, const uint a) {
    return 16 * RF * ((lin / 32) % 4) + 16 * (a / (4 * TF)) + (lin % 32) / 4 + 8 * ((a % 4) / 2);
}
inline uint acc_tok(const uint lin, const uint a) {
    return 8 * TF * (lin / 128) + 8 * ((a / 4) % TF) + 2 * (lin % 4) + a % 2;
}
#else
inline uint acc_row(const uint lin, const uint a) {
    return lin % 16 + 16 * (a / 2);
}
inline uint acc_tok(const uint lin, const uint a) {
    return lin / 16 + 16 * (a % 2);
}
#endif

#ifdef AG_NV_MMA
// D = A · B + C for one 16 × 8 × 32 int8 tile (PTX fragment layouts: a0..a3 rows g / g + 8,
// k words c / 4 + c; b0, b1 token g, k words c / 4 + c; d0, d1 row g, d2, d3 row g + 8).
inline void mma_s8(const uint a0, const uint a1, const uint a2, const uint a3, const uint b0, const uint b1,
                   int *d) {
    int d0, d1, d2, d3;
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%10, %11, %12, %13};"
                 : "=r"(d0), "=r"(d1), "=r"(d2), "=r"(d3)
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0), "r"(0), "r"(0), "r"(0));
    d[0] = d0;
    d[1] = d1;
    d[2] = d2;
    d[3] = d3;
}
#endif

// The integer products of block b of the tiles for the work-item's NACC accumulators.
inline void mmq_dots(__local const uint4 *wq, __local const uint4 *xq, const uint b, const uint lin, int *s) {
#if defined(AG_NV_MMA)
    const uint g = (lin % 32) / 4, c = lin % 4;
    __local const uint *w = (__local const uint *)wq + (b * QTR + 16 * RF * ((lin / 32) % 4) + g) * QST;
    __local const uint *x = (__local const uint *)xq + (b * QTT + 8 * TF * (lin / 128) + g) * QST;
    uint xb[TF][2];
    for (uint tf = 0; tf < TF; tf++) {
        xb[tf][0] = x[8 * tf * QST + c];
        xb[tf][1] = x[8 * tf * QST + 4 + c];
    }
    for (uint rf = 0; rf < RF; rf++) {
        __local const uint *wr = w + 16 * rf * QST;
        const uint a0 = wr[c], a1 = wr[8 * QST + c], a2 = wr[4 + c], a3 = wr[8 * QST + 4 + c];
        for (uint tf = 0; tf < TF; tf++) {
            mma_s8(a0, a1, a2, a3, xb[tf][0], xb[tf][1], s + 4 * (rf * TF + tf));
        }
    }
#elif defined(MMA_LAYOUT)
    // The `mma` ownership by dp4a: each accumulator's row and token read whole.
    for (uint a = 0; a < NACC; a++) {
        __local const uint *wr = (__local const uint *)wq + (b * QTR + acc_row(lin, a)) * QST;
        __local const uint *xt = (__local const uint *)xq + (b * QTT + acc_tok(lin, a)) * QST;
        int t = 0;
        for (uint k = 0; k < 8; k++) {
            t = dp4a_ss(as_int(wr[k]), as_int(xt[k]), t);
        }
        s[a] = t;
    }
#else
    const uint tx = lin % 16, ty = lin / 16;
    for (uint a = 0; a < 8; a++) {
        s[a] = 0;
    }
    for (uint kw = 0; kw < 2; kw++) {
        uint4 xv[2];
        for (uint j = 0; j < 2; j++) {
            xv[j] = xq[(b * QTT + ty + 16 * j) * (QST / 4) + kw];
        }
        for (uint i = 0; i < 4; i++) {
            const uint4 wv = wq[(b * QTR + tx + 16 * i) * (QST / 4) + kw];
            for (uint j = 0; j < 2; j++) {
                int t = dp4a_ss(as_int(wv.x), as_int(xv[j].x), s[2 * i + j]);
                t = dp4a_ss(as_int(wv.y), as_int(xv[j].y), t);
                t = dp4a_ss(as_int(wv.z), as_int(xv[j].z), t);
                s[2 * i + j] = dp4a_ss(as_int(wv.w), as_int(xv[j].w), t);
            }
        }
    }
#endif
}

// acc += the float value of the step's NB blocks (d_w d_x Σ q q + m_w s_x per block;
// has_m 0: the types without an offset, where m_w = 0).
inline void mmq_step(__local const uint4 *wq, __local const float2 *wdm, __local const uint4 *xq,
                     __local const float2 *xds, const uint lin, const uint has_m, float *acc) {
    for (uint b = 0; b < NB; b++) {
        int s[NACC];
        mmq_dots(wq, xq, b, lin, s);
#ifdef MMA_LAYOUT
        // A lane's accumulators share 2 RF rows and 2 TF tokens: their scales once.
        float2 dm[2 * RF], ds[2 * TF];
        for (uint i = 0; i < 2 * RF; i++) {
            dm[i] = wdm[b * QTR + acc_row(lin, 4 * TF * (i / 2) + 2 * (i % 2))];
        }
        for (uint j = 0; j < 2 * TF; j++) {
            ds[j] = xds[b * QTT + acc_tok(lin, 4 * (j / 2) + j % 2)];
        }
        for (uint a = 0; a < NACC; a++) {
            const uint i = 2 * (a / (4 * TF)) + (a % 4) / 2, j = 2 * ((a / 4) % TF) + a % 2;
            const float base = has_m ? fma(dm[i].y, ds[j].y, acc[a]) : acc[a];
            acc[a] = fma(dm[i].x * ds[j].x, (float)s[a], base);
        }
#else
        for (uint a = 0; a < 8; a++) {
            const float2 dm = wdm[b * QTR + acc_row(lin, a)];
            const float2 ds = xds[b * QTT + acc_tok(lin, a)];
            const float base = has_m ? fma(dm.y, ds.y, acc[a]) : acc[a];
            acc[a] = fma(dm.x * ds.x, (float)s[a], base);
        }
#endif
    }
}

// Common prologue of the kernels: roles and the activation rows of the tile (r0 is the
// first weight row of the tile; the fused gate/up kernel's first output row is r0 / 2).
#define MMQ_ROLES                                                                        \
    const uint lin = get_local_id(1) * 16 + get_local_id(0);                             \
    const uint r0 = get_group_id(0) * QTR;                                               \
    const uint t0 = get_group_id(1) * QTT;                                               \
    const uint lr = lin / 4, lp = lin % 4;   /* weight loader: rows lr + 64 h, elements 8 lp.. */ \
    const uint xt = lin / 8, xw = lin % 8;   /* activation loader: tokens xt + 32 h, word xw */   \
    bool x_ok[XREP];                                                                     \
    for (uint h = 0; h < XREP; h++) x_ok[h] = t0 + xt + 32 * h < n_tok;                  \
    const bool s_ok = t0 + lin < n_tok && lin < QTT;                                     \
    const uint nbk = n_in / QK;                                                          \
    __global const int *xqr = xq + (ulong)(x_ok[0] ? t0 + xt : 0) * (n_in / 4);          \
    const ulong sr = (ulong)(s_ok ? t0 + lin : 0) * nbk;                                 \
    __global const float *xdr = xd + sr;                                                 \
    __global const float *xsr = xs + sr;                                                 \
    __global const uchar *wrow[WREP];                                                    \
    bool w_ok[WREP];

// The reduction over k in [kz0, kz1) of one weight tile (wrow, w_ok, staged in `wtl`)
// against the activation tile, into acc: global loads of the next step are issued before
// the current step's products (software pipelining through registers).
#define MMQ_LOOP(T, kz0, kz1, acc)                                                       \
    {                                                                                    \
        WLoad wl;                                                                        \
        XLoad xl;                                                                        \
        LOAD_W(T, wrow, w_ok, kz0, kz1, lp, wl)                                          \
        mmq_load_x(xqr, xdr, xsr, x_ok, kz0, kz1, xw, n_in, s_ok, &xl);                  \
        for (uint k0 = kz0; k0 < kz1; k0 += 32 * NB) {                                   \
            mmq_store_w(wtl_q, wtl_dm, &wl, lr, lp);                                     \
            mmq_store_x(xtl_q, xtl_ds, &xl, xt, xw, lin);                                \
            barrier(CLK_LOCAL_MEM_FENCE);                                                \
            if (k0 + 32 * NB < kz1) {                                                    \
                LOAD_W(T, wrow, w_ok, k0 + 32 * NB, kz1, lp, wl)                         \
                mmq_load_x(xqr, xdr, xsr, x_ok, k0 + 32 * NB, kz1, xw, n_in, s_ok, &xl); \
            }                                                                            \
            mmq_step(wtl_q, wtl_dm, xtl_q, xtl_ds, lin, HASM_##T, acc);                  \
            barrier(CLK_LOCAL_MEM_FENCE);                                                \
        }                                                                                \
    }

#define MUL_MMQ(NAME, T, ROW_BYTES)                                                      \
__kernel void NAME(__global const uchar *w, const ulong w_off,                           \
                   __global const int *xq, __global const float *xd,                     \
                   __global const float *xs,                                             \
                   __global float *y, const ulong y_off,                                 \
                   const uint n_in, const uint n_out, const uint n_tok,                  \
                   const uint accumulate, const uint k_chunk,                            \
                   __global float *part) {                                               \
    WTILE(wtl);                                                                          \
    XTILE(xtl);                                                                          \
    MMQ_ROLES                                                                            \
    const ulong rb = (ulong)(ROW_BYTES);                                                 \
    for (uint h = 0; h < WREP; h++) {                                                    \
        const uint R = r0 + lr + 64 * h;                                                 \
        w_ok[h] = R < n_out;                                                             \
        wrow[h] = w + w_off + (ulong)(w_ok[h] ? R : 0) * rb;                             \
    }                                                                                    \
    float acc[NACC];                                                                     \
    for (uint i = 0; i < NACC; i++) acc[i] = 0.0f;                                       \
    const uint kz0 = get_group_id(2) * k_chunk;                                          \
    const uint kz1 = min(kz0 + k_chunk, n_in);                                           \
    MMQ_LOOP(T, kz0, kz1, acc)                                                           \
    for (uint a = 0; a < NACC; a++) {                                                    \
        const uint r = r0 + acc_row(lin, a), t = t0 + acc_tok(lin, a);                   \
        if (r < n_out && t < n_tok) {                                                    \
            if (get_num_groups(2) > 1) {                                                 \
                part[((ulong)get_group_id(2) * n_tok + t) * n_out + r] = acc[a];         \
            } else {                                                                     \
                __global float *yp = y + y_off + (ulong)t * n_out + r;                   \
                *yp = accumulate ? *yp + acc[a] : acc[a];                                \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
}

#define MUL_MMQ3(NAME, T, ROW_BYTES)                                                     \
__kernel void NAME(__global const uchar *w0, const ulong w0_off,                         \
                   __global const uchar *w1, const ulong w1_off,                         \
                   __global const uchar *w2, const ulong w2_off,                         \
                   __global const int *xq, __global const float *xd,                     \
                   __global const float *xs,                                             \
                   __global float *y0, const ulong y0_off,                               \
                   __global float *y1, const ulong y1_off,                               \
                   __global float *y2, const ulong y2_off,                               \
                   const uint n_in, const uint n0, const uint n1,                        \
                   const uint n2, const uint n_tok) {                                    \
    WTILE(wtl);                                                                          \
    XTILE(xtl);                                                                          \
    MMQ_ROLES                                                                            \
    const ulong rb = (ulong)(ROW_BYTES);                                                 \
    for (uint h = 0; h < WREP; h++) {                                                    \
        const uint R = r0 + lr + 64 * h;                                                 \
        w_ok[h] = R < n0 + n1 + n2;                                                      \
        wrow[h] = !w_ok[h] ? w0 + w0_off                                                 \
            : R < n0 ? w0 + w0_off + (ulong)R * rb                                       \
            : R < n0 + n1 ? w1 + w1_off + (ulong)(R - n0) * rb                           \
            : w2 + w2_off + (ulong)(R - n0 - n1) * rb;                                   \
    }                                                                                    \
    float acc[NACC];                                                                     \
    for (uint i = 0; i < NACC; i++) acc[i] = 0.0f;                                       \
    MMQ_LOOP(T, 0, n_in, acc)                                                            \
    for (uint a = 0; a < NACC; a++) {                                                    \
        const uint r = r0 + acc_row(lin, a), t = t0 + acc_tok(lin, a);                   \
        __global float *yb; uint n, rr;                                                  \
        if (r < n0) { yb = y0 + y0_off; n = n0; rr = r; }                                \
        else if (r < n0 + n1) { yb = y1 + y1_off; n = n1; rr = r - n0; }                 \
        else if (r < n0 + n1 + n2) { yb = y2 + y2_off; n = n2; rr = r - n0 - n1; }       \
        else continue;                                                                   \
        if (t < n_tok) yb[(ulong)t * n + rr] = acc[a];                                   \
    }                                                                                    \
}

// The fused gate/up/SwiGLU kernels' signature (both tile shapes).
#define MMQ_SWIGLU_HEAD(NAME)                                                            \
__kernel void NAME(__global const uchar *wg, const ulong wg_off,                         \
                   __global const uchar *wu, const ulong wu_off,                         \
                   __global const int *xq, __global const float *xd,                     \
                   __global const float *xs,                                             \
                   __global float *out, const ulong out_off,                             \
                   const uint n_in, const uint n_out, const uint n_tok)

#ifdef AG_MMQ_WIDE
// Gate and up interleaved in one weight tile (see "Two tile shapes"): tile row R is
// output r0 / 2 + 16 (R / 32) + R % 16 of the gate weight for even R / 16, of up for
// odd; a lane's row fragment 0 is gate, 1 the same outputs' up.
#define MUL_MMQ_SWIGLU(NAME, T, ROW_BYTES)                                               \
MMQ_SWIGLU_HEAD(NAME) {                                                                  \
    WTILE(wtl);                                                                          \
    XTILE(xtl);                                                                          \
    MMQ_ROLES                                                                            \
    const ulong rb = (ulong)(ROW_BYTES);                                                 \
    for (uint h = 0; h < WREP; h++) {                                                    \
        const uint R = lr + 64 * h, o = r0 / 2 + 16 * (R / 32) + R % 16;                 \
        w_ok[h] = o < n_out;                                                             \
        wrow[h] = ((R / 16) % 2 ? wu + wu_off : wg + wg_off) + (ulong)(w_ok[h] ? o : 0) * rb; \
    }                                                                                    \
    float acc[NACC];                                                                     \
    for (uint i = 0; i < NACC; i++) acc[i] = 0.0f;                                       \
    MMQ_LOOP(T, 0, n_in, acc)                                                            \
    for (uint a = 0; a < 4 * TF; a++) {                                                  \
        const uint R = acc_row(lin, a), o = r0 / 2 + 16 * (R / 32) + R % 16;             \
        const uint t = t0 + acc_tok(lin, a);                                             \
        if (t < n_tok && o < n_out) {                                                    \
            const float g = acc[a];                                                      \
            out[out_off + (ulong)t * n_out + o] = g / (1.0f + exp(-g)) * acc[a + 4 * TF]; \
        }                                                                                \
    }                                                                                    \
}
#else
// Gate and up as two weight tiles against one activation tile.
#define MUL_MMQ_SWIGLU(NAME, T, ROW_BYTES)                                               \
MMQ_SWIGLU_HEAD(NAME) {                                                                  \
    WTILE(gt);                                                                           \
    WTILE(ut);                                                                           \
    XTILE(xtl);                                                                          \
    MMQ_ROLES                                                                            \
    const ulong rb = (ulong)(ROW_BYTES);                                                 \
    w_ok[0] = r0 + lr < n_out;                                                           \
    const ulong wrow_off = (ulong)(w_ok[0] ? r0 + lr : 0) * rb;                          \
    __global const uchar *grow[1] = {wg + wg_off + wrow_off};                            \
    __global const uchar *urow[1] = {wu + wu_off + wrow_off};                            \
    float ag[NACC], au[NACC];                                                            \
    for (uint i = 0; i < NACC; i++) { ag[i] = 0.0f; au[i] = 0.0f; }                      \
    WLoad gl, ul;                                                                        \
    XLoad xl;                                                                            \
    LOAD_W(T, grow, w_ok, 0, n_in, lp, gl)                                               \
    LOAD_W(T, urow, w_ok, 0, n_in, lp, ul)                                               \
    mmq_load_x(xqr, xdr, xsr, x_ok, 0, n_in, xw, n_in, s_ok, &xl);                       \
    for (uint k0 = 0; k0 < n_in; k0 += 32 * NB) {                                        \
        mmq_store_w(gt_q, gt_dm, &gl, lr, lp);                                           \
        mmq_store_w(ut_q, ut_dm, &ul, lr, lp);                                           \
        mmq_store_x(xtl_q, xtl_ds, &xl, xt, xw, lin);                                    \
        barrier(CLK_LOCAL_MEM_FENCE);                                                    \
        if (k0 + 32 * NB < n_in) {                                                       \
            LOAD_W(T, grow, w_ok, k0 + 32 * NB, n_in, lp, gl)                            \
            LOAD_W(T, urow, w_ok, k0 + 32 * NB, n_in, lp, ul)                            \
            mmq_load_x(xqr, xdr, xsr, x_ok, k0 + 32 * NB, n_in, xw, n_in, s_ok, &xl);    \
        }                                                                                \
        mmq_step(gt_q, gt_dm, xtl_q, xtl_ds, lin, HASM_##T, ag);                         \
        mmq_step(ut_q, ut_dm, xtl_q, xtl_ds, lin, HASM_##T, au);                         \
        barrier(CLK_LOCAL_MEM_FENCE);                                                    \
    }                                                                                    \
    for (uint a = 0; a < NACC; a++) {                                                    \
        const uint r = r0 + acc_row(lin, a), t = t0 + acc_tok(lin, a);                   \
        if (t < n_tok && r < n_out) {                                                    \
            const float g = ag[a];                                                       \
            out[out_off + (ulong)t * n_out + r] = g / (1.0f + exp(-g)) * au[a];          \
        }                                                                                \
    }                                                                                    \
}
#endif

MUL_MMQ(mul_mm_q4_0_q8_1, q4_0, (n_in / QK) * Q4_0_BYTES)
MUL_MMQ(mul_mm_q4_0r_q8_1, q4_0r, row_bytes(T_Q4_0R, n_in))
MUL_MMQ(mul_mm_q4_1_q8_1, q4_1, (n_in / QK) * Q4_1_BYTES)
MUL_MMQ(mul_mm_q8_0_q8_1, q8_0, (n_in / QK) * Q8_0_BYTES)
MUL_MMQ(mul_mm_q5_0_q8_1, q5_0, (n_in / QK) * Q5_0_BYTES)
MUL_MMQ(mul_mm_q5_1_q8_1, q5_1, (n_in / QK) * Q5_1_BYTES)
MUL_MMQ(mul_mm_q4_k_q8_1, q4_k, (n_in / QK_K) * Q4_K_BYTES)
MUL_MMQ(mul_mm_q5_k_q8_1, q5_k, (n_in / QK_K) * Q5_K_BYTES)
MUL_MMQ3(mul_mm3_q4_0_q8_1, q4_0, (n_in / QK) * Q4_0_BYTES)
MUL_MMQ3(mul_mm3_q4_0r_q8_1, q4_0r, row_bytes(T_Q4_0R, n_in))
MUL_MMQ3(mul_mm3_q4_1_q8_1, q4_1, (n_in / QK) * Q4_1_BYTES)
MUL_MMQ3(mul_mm3_q8_0_q8_1, q8_0, (n_in / QK) * Q8_0_BYTES)
MUL_MMQ3(mul_mm3_q5_0_q8_1, q5_0, (n_in / QK) * Q5_0_BYTES)
MUL_MMQ3(mul_mm3_q5_1_q8_1, q5_1, (n_in / QK) * Q5_1_BYTES)
MUL_MMQ3(mul_mm3_q4_k_q8_1, q4_k, (n_in / QK_K) * Q4_K_BYTES)
MUL_MMQ3(mul_mm3_q5_k_q8_1, q5_k, (n_in / QK_K) * Q5_K_BYTES)
MUL_MMQ_SWIGLU(mul_mm_swiglu_q4_0_q8_1, q4_0, (n_in / QK) * Q4_0_BYTES)
MUL_MMQ_SWIGLU(mul_mm_swiglu_q4_0r_q8_1, q4_0r, row_bytes(T_Q4_0R, n_in))
MUL_MMQ_SWIGLU(mul_mm_swiglu_q4_1_q8_1, q4_1, (n_in / QK) * Q4_1_BYTES)
MUL_MMQ_SWIGLU(mul_mm_swiglu_q8_0_q8_1, q8_0, (n_in / QK) * Q8_0_BYTES)
MUL_MMQ_SWIGLU(mul_mm_swiglu_q5_0_q8_1, q5_0, (n_in / QK) * Q5_0_BYTES)
MUL_MMQ_SWIGLU(mul_mm_swiglu_q5_1_q8_1, q5_1, (n_in / QK) * Q5_1_BYTES)
MUL_MMQ_SWIGLU(mul_mm_swiglu_q4_k_q8_1, q4_k, (n_in / QK_K) * Q4_K_BYTES)
MUL_MMQ_SWIGLU(mul_mm_swiglu_q5_k_q8_1, q5_k, (n_in / QK_K) * Q5_K_BYTES)
