// block.cl — decode kernels that do a whole model stage in one launch.
//
// * llama_blocks_f32: up to LPL consecutive pre-norm Llama blocks for ONE token (decode),
//   each:
//     A. xn = rms_norm(x) * attn_norm; q, k, v = Wq/Wk/Wv . xn; RoPE on q and k; k and v
//        into cache slot `slot` (f32, or f16 rounded as the per-op path rounds: the key
//        before and after its rotation);
//     A2. Q8_0 cache only: A staged the new K and V rows in f32 (in `part`); after a
//        grid barrier one work-item a 32-value block quantizes them into the cache
//        (ggml's quantize_row_q8_0, as store_rows_q8_0), then another barrier;
//     B. attention of every query head over slots 0..=slot, split into CH-slot chunks
//        (flash-decoding partials m, l, o[hd]), the cache read through common/kv.cl's
//        kv_get / kv_get4 in its dtype;
//     C. the partials merged, x += Wo . att;
//     D. xn = rms_norm(x) * ffn_norm; hb = silu(Wgate . xn) * (Wup . xn);
//     E. x += Wdown . hb.
//   A launch is a *persistent* grid: get_num_groups(0) work-groups, every one resident at
//   once (the host launches at most one per compute unit), and a software grid barrier
//   between the stages (and between layers). The barrier is a counter in `sync[0]` that
//   only grows (u32, wrapping): barrier i of a launch waits until it reaches
//   base + (i + 1) * groups, where the host passes base (it knows a launch of n layers
//   has 5n - 1 barriers, 6n - 1 with a Q8_0 cache). Several layers per launch because a launch costs ~10 µs of
//   device time on NVIDIA's OpenCL and a barrier ~1.5 µs. A work-group
//   that has spun `spin_limit` times without the others arriving sets `sync[1]` (abort)
//   and leaves; every other one sees the flag and leaves too, so a device that does not
//   run all work-groups at once fails with an error the host reads, instead of hanging.
//   Visibility of data another work-group wrote in this launch (q, the partials, x
//   after C, hb): on NVIDIA (AG_NV_FENCE) a group arrives with a GPU-scope *release* add
//   and polls with GPU-scope *acquire* loads (PTX; the L1 is invalidated by the acquire),
//   then a work-group barrier hands that on to every work-item, as CUDA's grid sync
//   does, so plain loads see the data (the older `membar.gl` form, AG_NV_PLAIN_BARRIER,
//   measured 0.2–0.3 µs slower a barrier). Elsewhere the portable mem_fence promises
//   only work-group scope, so those reads go through volatile pointers (XQ) instead —
//   slower (each is a serialized L2 round trip), and that path is only taken when a user
//   forces the persistent kernel on a non-NVIDIA GPU.
// * llama_head_f32: the final rms_norm fused with the output projection, many rows per
//   work-group (the output matrix is the largest single read of a decode step).
//
// Matrix-vector work: the vector (normed x, attention output, hb) is staged in local
// memory once per stage; a row is shared by TPR work-items (a power of two, 8..64,
// picked from the rows a work-group owns), each summing 16-element units u = lane,
// lane + TPR, ...; partial sums meet in a reduction (warp shuffles with AG_NV_SHFL, else
// two levels in local memory). Weights of any dtype below, addressed in bytes (an
// imported GGUF tensor is only 32-byte aligned).
//
// Build options: LWS (work-group size, power of two ≥ 64), MAX_HD, CH (attention chunk
// in slots, ≤ LWS), LPL (layers per launch: 1, 2 or 4), KV_T (the cache dtype, T_F32
// when absent; the backend builds a T_F16 / T_Q8_0 program on first use), optionally AG_NV_FENCE (NVIDIA:
// the PTX barrier, %globaltimer stage timers), AG_NV_SHFL (NVIDIA: `shfl.sync`
// reductions), AG_INT8 (quant rows against an int8 copy of the staged vector, see
// quant_vec) with AG_NV_DP4A (its dot products as PTX `dp4a`), BUNR (units fetched ahead),
// KUNR (32-element K units fetched ahead by the int8 Q4_K_M arms), AG_KQ_F32 (those
// types on f32 activations even with AG_INT8: the arms before int8, for measurements),
// AG_KQ_NOINLINE (those arms out of line, see dot_part_kq_i8), QBUNR (repacked Q4_0
// blocks fetched ahead: dot_q4_0r), AG_CORE_TYPES (no
// Q5_0/Q5_1/K-quant arms at all: the variant the host builds for models whose block
// weights and output are F32/F16/BF16/Q4_0/Q4_1/Q8_0 — with those arms inlined, the
// 1B shape's Q4_0 decode measured 902 tok/s on the H200 against 1005 out of line).
// The staged vector `vl` is a __local kernel argument sized at launch (the
// model's widest vector), so a small model leaves local memory for more resident
// work-groups.

// V values a work-item fetches ahead in stage B.
#define VPRE 8

// Dtype codes (T_*), block sizes and decoding, row_bytes: common/dtype.cl and the header
// the backend generates from Rust.

// The grid barrier's arrival (an atomic add that publishes this group's writes) and its
// poll (a load after which the other groups' writes are visible). NVIDIA: a release add
// and acquire loads at GPU scope (PTX 6.0+), or with AG_NV_PLAIN_BARRIER the older form
// — full `membar.gl` fences around a plain atomic and volatile polls (measured slower).
// Elsewhere: mem_fence around them, with the data reads volatile (XQ, see the header).
#ifdef AG_NV_FENCE
#define XQ
#ifdef AG_NV_PLAIN_BARRIER
#define ARRIVE(p)                                                                          \
    {                                                                                      \
        asm volatile("membar.gl;" ::: "memory");                                           \
        atomic_inc(p);                                                                     \
    }
#define LOAD_ACQUIRE(p) (*(p))
#define LEAVE_FENCE() asm volatile("membar.gl;" ::: "memory")
#else
#define ARRIVE(p) asm volatile("red.release.gpu.add.u32 [%0], 1;" ::"l"(p) : "memory")
inline uint load_acquire(volatile __global uint *p) {
    uint v;
    asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
#define LOAD_ACQUIRE(p) load_acquire(p)
#define LEAVE_FENCE()
#endif
#else
#define XQ volatile
#define ARRIVE(p)                                                                          \
    {                                                                                      \
        mem_fence(CLK_GLOBAL_MEM_FENCE);                                                   \
        atomic_inc(p);                                                                     \
    }
#define LOAD_ACQUIRE(p) (*(p))
#define LEAVE_FENCE() mem_fence(CLK_GLOBAL_MEM_FENCE)
#endif

// Stage timer (profiling): NVIDIA's %globaltimer in ns; 0 elsewhere (no clock in C 1.2).
inline ulong ag_clock(void) {
#ifdef AG_NV_FENCE
    ulong t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
#else
    return 0;
#endif
}

// With profiling on, work-group 0 adds the time since its last mark to prof[k]: a
// stage's own work (as work-group 0 sees it) and the wait at the barrier after it;
// k = 9 is the barrier between two layers of a launch, prof[10] counts layers.
#define MARK(k)                                         \
    if (prof_on && g == 0 && lid == 0) {                \
        const ulong now = ag_clock();                   \
        prof[k] += now - *tm;                           \
        *tm = now;                                      \
    }

// One 16-element unit u of a quantized row times v, in two steps: `raw_load` fetches
// its bytes (scale, offset, quants), `raw_dot` multiplies them with v — one body for the
// three block types. Weights are 2-byte aligned at least (GGUF blocks are read as ushort
// vectors, not bytes). Q4_0/Q4_1 quants fill q.xy, Q8_0's all of q; m is Q4_1's offset.
inline void raw_load(const uint t, __global const uchar *wr, const uint u, float *d, float *m, uint4 *q) {
    const uint b = u >> 1, hf = u & 1;
    if (t == T_Q4_0) {
        __global const uchar *blk = wr + b * Q4_0_BYTES;
        *d = vload_half(0, (__global const half *)blk);
        *m = 0.0f;
        *q = (uint4)(as_uint2(vload4(0, (__global const ushort *)(blk + 2 + 8 * hf))), 0u, 0u);
    } else if (t == T_Q4_1) {
        __global const uchar *blk = wr + b * Q4_1_BYTES;
        const float2 dm = vload_half2(0, (__global const half *)blk);
        *d = dm.x;
        *m = dm.y;
        *q = (uint4)(as_uint2(vload4(0, (__global const ushort *)(blk + 4 + 8 * hf))), 0u, 0u);
    } else { // T_Q8_0
        __global const uchar *blk = wr + b * Q8_0_BYTES;
        *d = vload_half(0, (__global const half *)blk);
        *m = 0.0f;
        *q = as_uint4(vload8(0, (__global const ushort *)(blk + 2 + 16 * hf)));
    }
}

inline float raw_dot(const uint t, const float d, const float m, const uint4 q, __local const float *v,
                     const uint u) {
    const uint b = u >> 1, hf = u & 1;
    if (t == T_Q8_0) {
        const float16 p = convert_float16(as_char16(q)) * vload16(0, v + b * 32 + 16 * hf);
        const float8 p8 = p.lo + p.hi;
        const float4 p4 = p8.lo + p8.hi;
        return d * (p4.x + p4.y + p4.z + p4.w);
    }
    const uchar8 qb = as_uchar8(q.xy);
    const float8 xl = vload8(0, v + b * 32 + 8 * hf);
    const float8 xh = vload8(0, v + b * 32 + 16 + 8 * hf);
    if (t == T_Q4_0) {
        const float8 p = xl * q4_0_lo8(qb) + xh * q4_0_hi8(qb);
        const float4 p4 = p.lo + p.hi;
        return d * (p4.x + p4.y + p4.z + p4.w);
    }
    const float8 p = xl * q4_lo8(qb) + xh * q4_hi8(qb);
    const float8 sm = xl + xh;
    const float4 p4 = p.lo + p.hi;
    const float4 s4 = sm.lo + sm.hi;
    return d * (p4.x + p4.y + p4.z + p4.w) + m * (s4.x + s4.y + s4.z + s4.w);
}

inline float unit_float(const uint t, __global const uchar *wr, __local const float *v, const uint u) {
    float16 w;
    if (t == T_F32) {
        w = vload16(u, (__global const float *)wr);
    } else if (t == T_F16) {
        w = vload_half16(u, (__global const half *)wr);
    } else {
        w = as_float16(convert_uint16(vload16(u, (__global const ushort *)wr)) << 16);
    }
    const float16 p = w * vload16(u, v);
    const float8 p8 = p.lo + p.hi;
    const float4 p4 = p8.lo + p8.hi;
    return p4.x + p4.y + p4.z + p4.w;
}

// ---- The types of a Q4_K_M / Q5_K_M file: Q5_0, Q5_1 (32-element blocks, a unit is
// half a block as for Q4_0) and the K-quants Q4_K, Q5_K, Q6_K (256-element super-blocks
// of 16 units each). A unit is still 16 elements: for Q4_K/Q5_K unit w (0..15) of a
// super-block is 8 quant bytes qs[8w..8w+8], whose low nibbles are elements
// 64c + 8k .. +8 (sub-block 2c) and high nibbles 64c + 32 + 8k .. +8 (sub-block 2c + 1),
// c = w / 4, k = w % 4; for Q6_K it is ql[8w..8w+8] (n = w / 8, k1 = w / 4 % 2,
// l0 = 8 (w % 4)): low nibbles elements 128n + 32 k1 + l0 .. +8, high nibbles 64 further,
// their top bits in qh[32n + l0 ..] and one scale each. So neighbouring lanes read
// neighbouring bytes, as for Q4_0. Layouts: common/dtype.cl.

inline float hsum8(const float8 p) {
    const float4 p4 = p.lo + p.hi;
    return p4.x + p4.y + p4.z + p4.w;
}

inline float unit_q5_0(__global const uchar *wr, __local const float *v, const uint u) {
    const uint b = u >> 1, hf = u & 1;
    __global const uchar *blk = wr + b * Q5_0_BYTES;
    const float d = vload_half(0, (__global const half *)blk);
    const uint qh = as_uint(vload2(0, (__global const ushort *)(blk + 2)));
    const uchar8 qb = as_uchar8(vload4(0, (__global const ushort *)(blk + 6 + 8 * hf)));
    const float8 xl = vload8(0, v + b * 32 + 8 * hf);
    const float8 xh = vload8(0, v + b * 32 + 16 + 8 * hf);
    const float8 ql = q4_lo8(qb) + q5_bits8(qh >> (8 * hf)) - 16.0f;
    const float8 qu = q4_hi8(qb) + q5_bits8(qh >> (16 + 8 * hf)) - 16.0f;
    return d * hsum8(xl * ql + xh * qu);
}

inline float unit_q5_1(__global const uchar *wr, __local const float *v, const uint u) {
    const uint b = u >> 1, hf = u & 1;
    __global const uchar *blk = wr + b * Q5_1_BYTES;
    const float2 dm = vload_half2(0, (__global const half *)blk);
    const uint qh = as_uint(vload2(0, (__global const ushort *)(blk + 4)));
    const uchar8 qb = as_uchar8(vload4(0, (__global const ushort *)(blk + 8 + 8 * hf)));
    const float8 xl = vload8(0, v + b * 32 + 8 * hf);
    const float8 xh = vload8(0, v + b * 32 + 16 + 8 * hf);
    const float8 ql = q4_lo8(qb) + q5_bits8(qh >> (8 * hf));
    const float8 qu = q4_hi8(qb) + q5_bits8(qh >> (16 + 8 * hf));
    return dm.x * hsum8(xl * ql + xh * qu) + dm.y * hsum8(xl + xh);
}

// Q4_K (has_qh 0) and Q5_K (1): unit u of the row.
inline float unit_q45_k(__global const uchar *wr, __local const float *v, const uint u, const uint has_qh) {
    const uint sb = u >> 4, w = u & 15, c = w >> 2, k = w & 3;
    __global const uchar *blk = wr + sb * (has_qh ? Q5_K_BYTES : Q4_K_BYTES);
    const float2 dm = vload_half2(0, (__global const half *)blk);
    const uint3 sw = kq_scale_words(blk);
    const uchar8 qb = as_uchar8(vload4(0, (__global const ushort *)(blk + (has_qh ? 48 : 16) + 8 * w)));
    const uint2 s0 = scale_min_k4_w(sw.x, sw.y, sw.z, 2 * c);
    const uint2 s1 = scale_min_k4_w(sw.x, sw.y, sw.z, 2 * c + 1);
    __local const float *vb = v + sb * 256 + 64 * c + 8 * k;
    const float8 xl = vload8(0, vb);
    const float8 xh = vload8(0, vb + 32);
    float8 ql = q4_lo8(qb), qu = q4_hi8(qb);
    if (has_qh) {
        const uchar8 hb = as_uchar8(vload4(0, (__global const ushort *)(blk + 16 + 8 * k)));
        ql += convert_float8(((hb >> (uchar8)(2 * c)) & (uchar8)(1)) << (uchar8)(4));
        qu += convert_float8(((hb >> (uchar8)(2 * c + 1)) & (uchar8)(1)) << (uchar8)(4));
    }
    return dm.x * ((float)s0.x * hsum8(xl * ql) + (float)s1.x * hsum8(xh * qu)) -
           dm.y * ((float)s0.y * hsum8(xl) + (float)s1.y * hsum8(xh));
}

inline float unit_q6_k(__global const uchar *wr, __local const float *v, const uint u) {
    const uint sb = u >> 4, w = u & 15, n = w >> 3, k1 = (w >> 2) & 1, l0 = 8 * (w & 3);
    __global const uchar *blk = wr + sb * Q6_K_BYTES;
    const float d = vload_half(104, (__global const half *)blk); // byte 208
    const uchar8 qb = as_uchar8(vload4(0, (__global const ushort *)(blk + 8 * w)));
    const uchar8 hb = as_uchar8(vload4(0, (__global const ushort *)(blk + 128 + 32 * n + l0)));
    __global const char *sc = (__global const char *)blk + 192 + 8 * n + 2 * k1 + l0 / 16;
    const float sl = (float)sc[0], sh = (float)sc[4];
    __local const float *vb = v + sb * 256 + 128 * n + 32 * k1 + l0;
    const float8 xl = vload8(0, vb);
    const float8 xh = vload8(0, vb + 64);
    const float8 ql = convert_float8((qb & (uchar8)(15)) | (((hb >> (uchar8)(2 * k1)) & (uchar8)(3)) << (uchar8)(4))) - 32.0f;
    const float8 qu = convert_float8((qb >> (uchar8)(4)) | (((hb >> (uchar8)(2 * k1 + 4)) & (uchar8)(3)) << (uchar8)(4))) - 32.0f;
    return d * (sl * hsum8(xl * ql) + sh * hsum8(xh * qu));
}

// ---- int8 activations (AG_INT8) -------------------------------------------------------
// With AG_INT8 the staged vector is also quantized once per stage, in local memory, to
// Q8_0-style blocks of 32 (d = amax / 127, q = round(x / d), ggml's rounding), and a
// quantized row's 16-element unit is four 4-way int8 dot products (`dp4a`) and one float
// multiply instead of 16 nibble conversions and 16 FMAs. The arithmetic is then the CPU
// backend's (weights × Q8 activations), not "dequantized weights × f32 x".
// dp4a_us / dp4a_ss (PTX `dp4a` with AG_NV_DP4A): common/int8.cl.
#ifdef AG_INT8

// v[0..n) (n a multiple of 32) into xq (four int8 a word, element order), xd[b] (block
// b's scale) and xs[u] = xd[b] · Σ q over unit u = 2b + hf (elements 8hf..8hf+7 and
// 16+8hf..16+8hf+7 of block b: what a Q4 unit's offset multiplies). With warp shuffles
// work-item i takes float4 i and eight make a block; else one work-item a block. Ends
// with a barrier (xq, xd, xs visible to the work-group).
inline void quant_vec(__local const float *v, const uint n, __local int *xq, __local float *xd,
                      __local float *xs, const uint lid) {
#ifdef AG_NV_SHFL
    const uint sub = lid & 7u;
    for (uint i0 = 0; i0 < n / 4; i0 += LWS) {
        const uint i = i0 + lid;
        const float4 x = i < n / 4 ? vload4(i, v) : (float4)(0.0f);
        const float4 ax = fabs(x);
        float a = fmax(fmax(ax.x, ax.y), fmax(ax.z, ax.w));
        a = fmax(a, shfl_xor(a, 1));
        a = fmax(a, shfl_xor(a, 2));
        a = fmax(a, shfl_xor(a, 4));
        const float d = a / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const int4 q = convert_int4(round(x * id));
        float sm = (float)(q.x + q.y + q.z + q.w);
        sm += shfl_xor(sm, 1); // float4s {0,1}, {2,3}, {4,5}, {6,7}
        sm += shfl_xor(sm, 4); // {0,1,4,5}: unit hf 0; {2,3,6,7}: hf 1
        if (i < n / 4) {
            xq[i] = (q.x & 0xff) | (q.y & 0xff) << 8 | (q.z & 0xff) << 16 | (q.w & 0xff) << 24;
            if (sub == 0) {
                xd[i / 8] = d;
            }
            if (sub == 0 || sub == 2) {
                xs[i / 4 + sub / 2] = d * sm;
            }
        }
    }
#else
    // Without shuffles a work-item takes whole blocks: no barrier inside the loop (PoCL
    // compiles barriers in loops very slowly), the same values as the shuffle form.
    for (uint b = lid; b < n / 32; b += LWS) {
        __local const float *vb = v + b * 32;
        float a = 0.0f;
        for (uint k = 0; k < 32; k++) {
            a = fmax(a, fabs(vb[k]));
        }
        const float d = a / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int s0 = 0, s1 = 0;
        for (uint w = 0; w < 8; w++) {
            const int4 q = convert_int4(round(vload4(w, vb) * id));
            xq[b * 8 + w] = (q.x & 0xff) | (q.y & 0xff) << 8 | (q.z & 0xff) << 16 | (q.w & 0xff) << 24;
            if ((w & 2u) == 0) {
                s0 += q.x + q.y + q.z + q.w; // words 0, 1, 4, 5: unit hf 0
            } else {
                s1 += q.x + q.y + q.z + q.w; // words 2, 3, 6, 7: unit hf 1
            }
        }
        xd[b] = d;
        xs[2 * b] = d * (float)s0;
        xs[2 * b + 1] = d * (float)s1;
    }
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
}

// raw_dot with the int8 vector: unit u of a row (its bytes from raw_load) · block u / 2.
inline float raw_dot_i8(const uint t, const float d, const float m, const uint4 q, __local const int *xq,
                        __local const float *xd, __local const float *xs, const uint u) {
    const uint b = u >> 1, hf = u & 1;
    if (t == T_Q8_0) {
        __local const int *xw = xq + b * 8 + 4 * hf;
        int s = dp4a_ss(as_int(q.x), xw[0], 0);
        s = dp4a_ss(as_int(q.y), xw[1], s);
        s = dp4a_ss(as_int(q.z), xw[2], s);
        s = dp4a_ss(as_int(q.w), xw[3], s);
        return d * xd[b] * (float)s;
    }
    __local const int *xw = xq + b * 8 + 2 * hf;
    int s = dp4a_us(q.x & 0x0F0F0F0Fu, xw[0], 0);
    s = dp4a_us(q.y & 0x0F0F0F0Fu, xw[1], s);
    s = dp4a_us((q.x >> 4) & 0x0F0F0F0Fu, xw[4], s);
    s = dp4a_us((q.y >> 4) & 0x0F0F0F0Fu, xw[5], s);
    if (t == T_Q4_0) {
        return d * (xd[b] * (float)s - 8.0f * xs[u]);
    }
    return d * xd[b] * (float)s + m * xs[u];
}
#define RAW_DOT(T, d, m, q, u) raw_dot_i8(T, d, m, q, xq, xd, xs, u)
#else
#define RAW_DOT(T, d, m, q, u) raw_dot(T, d, m, q, v, u)
#endif

// The int8 copy of a staged vector of capacity nv floats sits after it in the same
// __local buffer: nv / 4 words, nv / 32 scales, nv / 16 unit sums (host: vec_bytes).
#define INT8_VIEWS(vl, nv)                                                                 \
    __local int *xq = (__local int *)((vl) + (nv));                                        \
    __local float *xd = (__local float *)(xq + (nv) / 4);                                  \
    __local float *xs = xd + (nv) / 32;

// Units a work-item has in flight: the loop fetches BUNR units' bytes (quant types) into
// registers, then multiplies them. With one work-group of 256 work-items per compute
// unit the kernel has few warps, so memory-level parallelism has to come from each
// work-item. With f32 activations 2, 8 or 16 made no difference (the loop was bound by
// its instructions); with int8 ones 8 is worth 16 % over 2 on the 1B shape
// (docs/perf-notes.md). A build option (ANTIGRAVITY_OPENCL_BLOCK_DEFINES=-DBUNR=n).
#ifndef BUNR
#define BUNR 8
#endif

// Float rows and the fallback: two units per step.
#define UNIT_LOOP(CALL)                                  \
    {                                                    \
        uint u = lane;                                   \
        for (; u + tpr < nu; u += 2 * tpr) {             \
            const float a0 = CALL(u);                    \
            const float a1 = CALL(u + tpr);              \
            acc += a0 + a1;                              \
        }                                                \
        if (u < nu) {                                    \
            acc += CALL(u);                              \
        }                                                \
    }

// Quant rows: BUNR units' loads issued before their multiplies, then the tail one by one.
#define UNIT_LOOP_Q(T)                                                                     \
    {                                                                                      \
        uint u = lane;                                                                     \
        for (; u + (BUNR - 1) * tpr < nu; u += BUNR * tpr) {                               \
            float dk[BUNR], mk[BUNR];                                                      \
            uint4 qk[BUNR];                                                                \
            for (uint k = 0; k < BUNR; k++) {                                              \
                raw_load(T, wr, u + k * tpr, &dk[k], &mk[k], &qk[k]);                      \
            }                                                                              \
            for (uint k = 0; k < BUNR; k++) {                                              \
                acc += RAW_DOT(T, dk[k], mk[k], qk[k], u + k * tpr);                       \
            }                                                                              \
        }                                                                                  \
        for (; u < nu; u += tpr) {                                                         \
            float d1, m1;                                                                  \
            uint4 q1;                                                                      \
            raw_load(T, wr, u, &d1, &m1, &q1);                                             \
            acc += RAW_DOT(T, d1, m1, q1, u);                                              \
        }                                                                                  \
    }

// ---- int8 arms of the Q4_K_M / Q5_K_M types (AG_INT8 without AG_KQ_F32) ---------------
// A "K unit" is 32 elements: one Q5_0/Q5_1 block, or an eighth of a Q4_K/Q5_K/Q6_K
// super-block — 16 consecutive quant bytes, so neighbouring lanes still read
// neighbouring bytes, and the scale decoding is shared by 32 weights instead of 16.
// Each 16-element half of a unit lies inside one 32-element block of the int8 vector,
// so a half is four `dp4a` against one int4 of xq and one scale xd:
//   Q4_K / Q5_K, unit w (0..7) of super-block sb: qs[16w .. 16w + 16); c = w / 2,
//     kk = w % 2; low nibbles are elements 16kk.. of sub-block 2c (int8 block
//     8sb + 2c), high nibbles of sub-block 2c + 1 (block + 1); Q5_K's fifth bits are
//     bits 2c and 2c + 1 of qh[16kk .. 16kk + 16). The value is
//     d·sc_j·Σ q·a − dmin·m_j·Σ a: the first with xd[b]·dp4a, the second from the
//     staged unit sums xs (xs[2b] + xs[2b + 1] is block b's Σ a; each of the two units
//     of a sub-block takes half of it).
//   Q6_K, unit w: ql[16w ..), n = w / 4, k1 = w / 2 % 2, hf = w % 2; low nibbles are
//     elements 128n + 32k1 + 16hf .. +16 (int8 block 8sb + 4n + k1, words 4hf..), high
//     nibbles 64 further (block + 2); top bits from qh[32n + 16hf ..] (bits 2k1, 2k1+1
//     and 2k1+4, 2k1+5); scales sc[8n + 2k1 + hf] and sc[… + 4]. The 6-bit value minus 32
//     is made a signed byte in the word (SWAR) and multiplied with dp4a.s32.
//   Q5_0 / Q5_1: unit = block; elements 4i.. are the low nibbles of word i of qs, 16 + 4i..
//     the high ones; the fifth bits (qh bit j = element j) are spread to bit 4 of each
//     byte by one multiply. Q5_0's −16 offset and Q5_1's m take the block's Σ a.
#if defined(AG_INT8) && !defined(AG_KQ_F32)
#define AG_KQ_INT8

// K units a work-item fetches before multiplying them (as BUNR for 16-element units).
// H200, 1B shape Q4_K_M: 2 / 4 / 8 gave 694 / 666 / 636 tok/s with 2-byte loads only,
// 1 / 2 gave 679 / 842 with the 16-byte ones (docs/perf-notes.md).
#ifndef KUNR
#define KUNR 2
#endif

// Bit 4 of byte k set where bit k of h (low 4 bits) is: (h & 15) · (1 + 2^7 + 2^14 + 2^21)
// puts bit k at 8k (no carries: the four copies do not overlap), times 16.
inline uint q5_spread4(const uint h) {
    return ((h & 15u) * 0x02040810u) & 0x10101010u;
}

// The bytes of K unit u: d, m (Q4_K/Q5_K: dmin; Q5_1: m), packed scales sc (Q4_K/Q5_K:
// bytes sc0, sc1, m0, m1 of sub-blocks 2c, 2c + 1; Q6_K: the two signed scales), the 16
// quant bytes qa, and qb (Q5_K/Q6_K: 16 qh bytes; Q5_0/Q5_1: qh in qb.x).
inline void kq_load(const uint t, const uint al, __global const uchar *wr, const uint u, float *d, float *m,
                    uint *sc, uint4 *qa, uint4 *qb) {
    if (t == T_Q5_0 || t == T_Q5_1) {
        const uint o = t == T_Q5_0 ? 0u : 2u;
        __global const uchar *blk = wr + u * (t == T_Q5_0 ? Q5_0_BYTES : Q5_1_BYTES);
        *d = vload_half(0, (__global const half *)blk);
        *m = t == T_Q5_0 ? 0.0f : vload_half(1, (__global const half *)blk);
        *sc = 0u;
        *qb = (uint4)(as_uint(vload2(0, (__global const ushort *)(blk + 2 + o))), 0u, 0u, 0u);
        *qa = as_uint4(vload8(0, (__global const ushort *)(blk + 6 + o)));
    } else if (t == T_Q6_K) {
        const uint sb = u >> 3, w = u & 7, n = w >> 2, k1 = (w >> 1) & 1, hf = w & 1;
        __global const uchar *blk = wr + sb * Q6_K_BYTES;
        *d = vload_half(104, (__global const half *)blk); // byte 208
        *m = 0.0f;
        *qa = as_uint4(vload8(0, (__global const ushort *)(blk + 16 * w)));
        *qb = as_uint4(vload8(0, (__global const ushort *)(blk + 128 + 32 * n + 16 * hf)));
        __global const uchar *s = blk + 192 + 8 * n + 2 * k1 + hf;
        *sc = (uint)s[0] | ((uint)s[4] << 8);
    } else { // T_Q4_K, T_Q5_K
        const uint has_qh = t == T_Q5_K;
        const uint sb = u >> 3, w = u & 7, c = w >> 1;
        __global const uchar *blk = wr + sb * (has_qh ? Q5_K_BYTES : Q4_K_BYTES);
        const float2 dm = vload_half2(0, (__global const half *)blk);
        *d = dm.x;
        *m = dm.y;
        // al: the row (so every super-block: 144 and 176 bytes are multiples of 16) is
        // 16-byte aligned, as a GGUF tensor is: 16-byte loads instead of 2-byte ones
        __global const uint4 *b4 = (__global const uint4 *)blk;
        const uint3 s = al ? b4[0].yzw : kq_scale_words(blk);
        // the 6-bit scales (mins) of sub-blocks 0..3 and 4..7, one a byte (scale_min_k4)
        const uint scw = c < 2 ? s.x & 0x3F3F3F3Fu : (s.z & 0x0F0F0F0Fu) | ((s.x >> 2) & 0x30303030u);
        const uint mw = c < 2 ? s.y & 0x3F3F3F3Fu : ((s.z >> 4) & 0x0F0F0F0Fu) | ((s.y >> 2) & 0x30303030u);
        const uint sh = 16 * (c & 1);
        *sc = ((scw >> sh) & 0xFFFFu) | (((mw >> sh) & 0xFFFFu) << 16);
        if (al) {
            *qa = b4[(has_qh ? 3 : 1) + w];
            *qb = has_qh ? b4[1 + (w & 1)] : (uint4)(0u);
        } else {
            *qa = as_uint4(vload8(0, (__global const ushort *)(blk + (has_qh ? 48 : 16) + 16 * w)));
            *qb = has_qh ? as_uint4(vload8(0, (__global const ushort *)(blk + 16 + 16 * (w & 1)))) : (uint4)(0u);
        }
    }
}

// Σ over 4 words of dp4a(unsigned weight bytes, int8 activations).
inline int dp4a_us4(const uint4 w, const int4 a) {
    return dp4a_us(w.w, a.w, dp4a_us(w.z, a.z, dp4a_us(w.y, a.y, dp4a_us(w.x, a.x, 0))));
}
inline int dp4a_ss4(const uint4 w, const int4 a) {
    return dp4a_ss(as_int(w.w), a.w,
                   dp4a_ss(as_int(w.z), a.z, dp4a_ss(as_int(w.y), a.y, dp4a_ss(as_int(w.x), a.x, 0))));
}

// K unit u (bytes from kq_load) · the int8 vector (xq as int4s: 8 words a block).
inline float kq_dot_i8(const uint t, const float d, const float m, const uint sc, const uint4 qa,
                       const uint4 qb, __local const int4 *xq4, __local const float *xd,
                       __local const float *xs, const uint u) {
    const uint4 lo4 = (uint4)(0x0F0F0F0Fu);
    if (t == T_Q5_0 || t == T_Q5_1) {
        const uint h = qb.x;
        const uint4 hl = (uint4)(q5_spread4(h), q5_spread4(h >> 4), q5_spread4(h >> 8), q5_spread4(h >> 12));
        const uint4 hh = (uint4)(q5_spread4(h >> 16), q5_spread4(h >> 20), q5_spread4(h >> 24), q5_spread4(h >> 28));
        const int s = dp4a_us4((qa & lo4) | hl, xq4[2 * u]) + dp4a_us4(((qa >> 4) & lo4) | hh, xq4[2 * u + 1]);
        const float bs = xs[2 * u] + xs[2 * u + 1]; // xd[u] · Σ q_a over the block
        if (t == T_Q5_0) {
            return d * (xd[u] * (float)s - 16.0f * bs);
        }
        return d * xd[u] * (float)s + m * bs;
    }
    const uint sb = u >> 3, w = u & 7;
    if (t == T_Q6_K) {
        const uint n = w >> 2, k1 = (w >> 1) & 1, hf = w & 1;
        const uint b0 = 8 * sb + 4 * n + k1, b1 = b0 + 2;
        const uint4 m6 = (uint4)(0x30303030u);
        // 6-bit values 0..63 a byte, then minus 32 as signed bytes: ((v | 0x80) − 0x20) ^ 0x80
        // per byte (no borrow crosses a byte)
        const uint4 vlo = (qa & lo4) | ((qb << (4 - 2 * k1)) & m6);
        const uint4 vhi = ((qa >> 4) & lo4) | ((qb >> (2 * k1)) & m6);
        const uint4 hi = (uint4)(0x80808080u), off = (uint4)(0x20202020u);
        const int s0 = dp4a_ss4(((vlo | hi) - off) ^ hi, xq4[2 * b0 + hf]);
        const int s1 = dp4a_ss4(((vhi | hi) - off) ^ hi, xq4[2 * b1 + hf]);
        const float sl = (float)(char)(sc & 255u), sh = (float)(char)((sc >> 8) & 255u);
        return d * (sl * xd[b0] * (float)s0 + sh * xd[b1] * (float)s1);
    }
    // Q4_K, Q5_K
    const uint c = w >> 1, kk = w & 1;
    const uint b0 = 8 * sb + 2 * c, b1 = b0 + 1;
    uint4 vlo = qa & lo4, vhi = (qa >> 4) & lo4;
    if (t == T_Q5_K) {
        const uint4 one = (uint4)(0x01010101u);
        vlo |= ((qb >> (2 * c)) & one) << 4;
        vhi |= ((qb >> (2 * c + 1)) & one) << 4;
    }
    const int s0 = dp4a_us4(vlo, xq4[2 * b0 + kk]);
    const int s1 = dp4a_us4(vhi, xq4[2 * b1 + kk]);
    const float sc0 = (float)(sc & 255u), sc1 = (float)((sc >> 8) & 255u);
    const float m0 = (float)((sc >> 16) & 255u), m1 = (float)(sc >> 24);
    return d * (sc0 * xd[b0] * (float)s0 + sc1 * xd[b1] * (float)s1) -
           m * 0.5f * (m0 * (xs[2 * b0] + xs[2 * b0 + 1]) + m1 * (xs[2 * b1] + xs[2 * b1 + 1]));
}

// KUNR K units' loads, then their dot products; the tail one by one.
#define KUNIT_LOOP(T, AL)                                                                  \
    {                                                                                      \
        uint u = lane;                                                                     \
        for (; u + (KUNR - 1) * tpr < nk; u += KUNR * tpr) {                               \
            float dk[KUNR], mk[KUNR];                                                      \
            uint sk[KUNR];                                                                 \
            uint4 ak[KUNR], bk[KUNR];                                                      \
            for (uint k = 0; k < KUNR; k++) {                                              \
                kq_load(T, AL, wr, u + k * tpr, &dk[k], &mk[k], &sk[k], &ak[k], &bk[k]);   \
            }                                                                              \
            for (uint k = 0; k < KUNR; k++) {                                              \
                acc += kq_dot_i8(T, dk[k], mk[k], sk[k], ak[k], bk[k], xq4, xd, xs, u + k * tpr); \
            }                                                                              \
        }                                                                                  \
        for (; u < nk; u += tpr) {                                                         \
            float d1, m1;                                                                  \
            uint s1;                                                                       \
            uint4 a1, b1;                                                                  \
            kq_load(T, AL, wr, u, &d1, &m1, &s1, &a1, &b1);                                \
            acc += kq_dot_i8(T, d1, m1, s1, a1, b1, xq4, xd, xs, u);                       \
        }                                                                                  \
    }

// dot_part's int8 arms for the Q4_K_M types: K units u = lane, lane + tpr, … of nk.
// AG_KQ_NOINLINE (a measurement option) keeps it out of line, so the stages' inlined
// code is what it was before these arms: the 1B Q4_0 decode measured 898–905 tok/s
// with this branch against main's 971 in one H200 call, untested whether this helps.
#ifdef AG_KQ_NOINLINE
__attribute__((noinline))
#else
inline
#endif
float dot_part_kq_i8(const uint t, __global const uchar *wr, __local const int *xq,
                            __local const float *xd, __local const float *xs, const uint nk,
                            const uint lane, const uint tpr) {
    __local const int4 *xq4 = (__local const int4 *)xq; // 16-byte aligned (INT8_VIEWS)
    float acc = 0.0f;
    const uint al = ((uint)(ulong)wr & 15u) == 0;
    if (t == T_Q4_K && al) {
        KUNIT_LOOP(T_Q4_K, 1)
    } else if (t == T_Q4_K) {
        KUNIT_LOOP(T_Q4_K, 0)
    } else if (t == T_Q6_K) {
        KUNIT_LOOP(T_Q6_K, 0)
    } else if (t == T_Q5_0) {
        KUNIT_LOOP(T_Q5_0, 0)
    } else if (t == T_Q5_1) {
        KUNIT_LOOP(T_Q5_1, 0)
    } else if (al) {
        KUNIT_LOOP(T_Q5_K, 1)
    } else {
        KUNIT_LOOP(T_Q5_K, 0)
    }
    return acc;
}
#endif

// ---- T_Q4_0R: a Q4_0 row repacked for the block kernel (core/src/opencl/rowsoa.rs) --
// Row r starts at r · row_bytes(T_Q4_0R, n) (18 bytes a block, rounded up to 16); in
// it the nb blocks' 16 quant bytes come first, one 16-byte word a block, then their nb
// f16 scales. A work-item takes whole blocks b = lane, lane + tpr, …: one 16-byte load
// and one 2-byte load a block (the GGUF layout's 18-byte blocks are 2-byte aligned:
// nine 2-byte loads). QBUNR blocks' bytes are fetched before their multiplies; the
// guards keep short rows (fewer than QBUNR · tpr blocks) on the same path.
#ifndef QBUNR
#define QBUNR 4
#endif

inline float q4_0r_block(const float d, const uint4 q, __local const float *v, __local const int *xq,
                         __local const float *xd, __local const float *xs, const uint b) {
#ifdef AG_INT8
    __local const int4 *xq4 = (__local const int4 *)xq; // 16-byte aligned (INT8_VIEWS)
    const int4 lo = xq4[2 * b], hi = xq4[2 * b + 1];
    const uint m = 0x0F0F0F0Fu;
    int s = dp4a_us(q.x & m, lo.x, 0);
    s = dp4a_us(q.y & m, lo.y, s);
    s = dp4a_us(q.z & m, lo.z, s);
    s = dp4a_us(q.w & m, lo.w, s);
    s = dp4a_us((q.x >> 4) & m, hi.x, s);
    s = dp4a_us((q.y >> 4) & m, hi.y, s);
    s = dp4a_us((q.z >> 4) & m, hi.z, s);
    s = dp4a_us((q.w >> 4) & m, hi.w, s);
    return d * (xd[b] * (float)s - 8.0f * (xs[2 * b] + xs[2 * b + 1]));
#else
    const float8 p = vload8(0, v + 32 * b) * q4_0_lo8(as_uchar8(q.xy)) +
                     vload8(1, v + 32 * b) * q4_0_lo8(as_uchar8(q.zw)) +
                     vload8(2, v + 32 * b) * q4_0_hi8(as_uchar8(q.xy)) +
                     vload8(3, v + 32 * b) * q4_0_hi8(as_uchar8(q.zw));
    return d * hsum8(p);
#endif
}

inline float dot_q4_0r(__global const uchar *wr, __local const float *v, __local const int *xq,
                       __local const float *xd, __local const float *xs, const uint nb, const uint lane,
                       const uint tpr) {
    __global const uint4 *qw = (__global const uint4 *)wr; // 16-byte aligned rows
    __global const half *dw = (__global const half *)(wr + 16 * nb);
    float acc = 0.0f;
    for (uint b = lane; b < nb; b += QBUNR * tpr) {
        float dk[QBUNR];
        uint4 qk[QBUNR];
        for (uint k = 0; k < QBUNR; k++) {
            const uint bk = b + k * tpr;
            dk[k] = bk < nb ? vload_half(bk, dw) : 0.0f;
            qk[k] = bk < nb ? qw[bk] : (uint4)(0u);
        }
        for (uint k = 0; k < QBUNR; k++) {
            const uint bk = b + k * tpr;
            if (bk < nb) {
                acc += q4_0r_block(dk[k], qk[k], v, xq, xd, xs, bk);
            }
        }
    }
    return acc;
}

// dot_part's arms for the types of a Q4_K_M / Q5_K_M file (a function of its own so
// the Q4_0/Q4_1/Q8_0 arms stay as they are).
inline void dot_part_kq(const uint t, __global const uchar *wr, __local const float *v, const uint nu,
                        const uint lane, const uint tpr, float *acc_io) {
    float acc = 0.0f;
#define C_Q5_0(u) unit_q5_0(wr, v, u)
#define C_Q5_1(u) unit_q5_1(wr, v, u)
#define C_Q4_K(u) unit_q45_k(wr, v, u, 0)
#define C_Q5_K(u) unit_q45_k(wr, v, u, 1)
#define C_Q6_K(u) unit_q6_k(wr, v, u)
    if (t == T_Q5_0) {
        UNIT_LOOP(C_Q5_0)
    } else if (t == T_Q5_1) {
        UNIT_LOOP(C_Q5_1)
    } else if (t == T_Q4_K) {
        UNIT_LOOP(C_Q4_K)
    } else if (t == T_Q5_K) {
        UNIT_LOOP(C_Q5_K)
    } else {
        UNIT_LOOP(C_Q6_K)
    }
    *acc_io += acc;
}

// This work-item's share of dot(row wr, v) over units u = lane, lane + tpr, ... of 16
// elements (n_in a multiple of 32).
// (xq, xd, xs: the int8 copy of v, read by quant rows with AG_INT8; unused otherwise.)
inline float dot_part(const uint t, __global const uchar *wr, __local const float *v,
                      __local const int *xq, __local const float *xd, __local const float *xs,
                      const uint n_in, const uint lane, const uint tpr) {
    const uint nu = n_in / 16;
    float acc = 0.0f;
#define C_FLT(u) unit_float(t, wr, v, u)
    if (t == T_Q4_0R) {
        acc = dot_q4_0r(wr, v, xq, xd, xs, n_in / 32, lane, tpr);
    } else if (t == T_Q4_0) {
        UNIT_LOOP_Q(T_Q4_0)
    } else if (t == T_Q4_1) {
        UNIT_LOOP_Q(T_Q4_1)
    } else if (t == T_Q8_0) {
        UNIT_LOOP_Q(T_Q8_0)
    } else if (t >= T_Q5_0) {
#if defined(AG_CORE_TYPES)
        // (a build for models without these types: the host never passes them here)
#elif defined(AG_KQ_INT8)
        acc = dot_part_kq_i8(t, wr, xq, xd, xs, n_in / 32, lane, tpr);
#else
        dot_part_kq(t, wr, v, nu, lane, tpr, &acc);
#endif
    } else {
        UNIT_LOOP(C_FLT)
    }
    return acc;
}

// Reductions (wg_sum, wg_max, row_reduce; warp shuffles with AG_NV_SHFL): common/reduce.cl.

// Work-items per row for a work-group that owns `rows` rows of `n_in` elements.
inline uint pick_tpr(const uint rows, const uint n_in) {
    const uint r = max(rows, 1u);
    uint tpr = r >= LWS ? 1u : (1u << (31 - clz(LWS / r)));
    const uint nu = n_in / 16;
    const uint cap = nu >= 64 ? 64u : (1u << (31 - clz(max(nu, 1u))));
    return clamp(min(tpr, cap), 8u, 64u);
}

// vl[i] = x[i] * r * nw[i], r = 1 / sqrt(mean(x^2) + eps). A work-item's first NPI
// norm weights are loaded with x, not after the reduction (one memory trip fewer; the
// same arithmetic).
#define NPI 4
inline void stage_norm(XQ __global const float *x, __global const float *nw, const uint n,
                       const float eps, __local float *vl, __local float *red, __local float *red2,
                       const uint lid) {
    float wv[NPI];
    for (uint k = 0; k < NPI; k++) {
        const uint i = lid + k * LWS;
        wv[k] = i < n ? nw[i] : 0.0f;
    }
    float ss = 0.0f;
    for (uint i = lid; i < n; i += LWS) {
        const float xi = x[i];
        vl[i] = xi;
        ss += xi * xi;
    }
    const float r = rsqrt(wg_sum(ss, red, red2, lid) / (float)n + eps);
    for (uint k = 0; k < NPI; k++) {
        const uint i = lid + k * LWS;
        if (i < n) {
            vl[i] = vl[i] * r * wv[k];
        }
    }
    for (uint i = lid + NPI * LWS; i < n; i += LWS) {
        vl[i] = vl[i] * r * nw[i];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

// The software grid barrier (see the header). Returns 0 when the launch was aborted.
inline uint grid_sync(volatile __global uint *sync, const uint target, const uint spin_limit,
                      __local uint *flag, const uint lid) {
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
    if (lid == 0) {
        ARRIVE(&sync[0]);
        uint ok = 1;
        uint spins = 0;
        while ((int)(LOAD_ACQUIRE(&sync[0]) - target) < 0) {
            if (sync[1] != 0) {
                ok = 0;
                break;
            }
            if (++spins >= spin_limit) {
                sync[1] = 1;
                ok = 0;
                break;
            }
        }
        LEAVE_FENCE();
        *flag = ok;
    }
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
    return *flag;
}

// Stage A's rows come in RoPE pairs: pair p < qd/2 is in Wq, then Wk, then Wv; `member`
// (0, 1) picks the pair's row (adjacent rows for style 0, half a head apart for style 1;
// V rows plainly 2p, 2p + 1). Returns the row's bytes and sets its dtype.
inline __global const uchar *qkv_row(uint pp, const uint member, __global const uchar *wq, const uint tq,
                                     __global const uchar *wk, const uint tk, __global const uchar *wv,
                                     const uint tv, const uint qd, const uint kvd, const uint hd,
                                     const uint style, const uint dim, uint *t_out) {
    const uint half_d = hd / 2;
    __global const uchar *w;
    uint t;
    bool is_v = false;
    if (pp < qd / 2) {
        w = wq;
        t = tq;
    } else if (pp < (qd + kvd) / 2) {
        pp -= qd / 2;
        w = wk;
        t = tk;
    } else {
        pp -= (qd + kvd) / 2;
        w = wv;
        t = tv;
        is_v = true;
    }
    uint rr;
    if (is_v) {
        rr = 2 * pp + member;
    } else {
        const uint head = pp / half_d, i = pp % half_d;
        rr = head * hd + (style == 0 ? 2 * i + member : i + member * half_d);
    }
    *t_out = t;
    return w + rr * row_bytes(t, dim);
}

// The wide stage B (AG_ATTN_WIDE, default on NVIDIA): units of one KV head's slots
// c0..c1 for the whole GQA group, about one unit per work-group (attn_splits), and the
// last unit of a KV head to finish merges that group's partials into q, so stage C
// reads the attention output instead of every work-group merging every head.
// Query heads per KV head it takes at most, and KV heads its merge counters cover
// (sync[2 ..], zeroed by the host with the barrier counter).
#define GQA_MAX 8
#define MAX_KV_HEADS 64

// Whether this layer's shapes take the wide stage B (else the (query head, chunk)
// units below): a key row in two halves of float4s, a warp (32 work-items) per query
// head in the softmax, a counter per KV head. Stages B and C both ask; the host's
// `wide_ok` (the local memory it sized the staged vector for) comes first.
inline bool attn_wide(const uint hd, const uint n_head, const uint n_kv_head) {
#ifdef AG_ATTN_WIDE
    const uint grp = n_head / n_kv_head;
    return hd % 8 == 0 && LWS % (hd / 4) == 0 && grp * n_kv_head == n_head && grp <= GQA_MAX &&
           grp <= LWS / 32 && n_kv_head <= MAX_KV_HEADS;
#else
    return false;
#endif
}

// Splits of a KV head's slots in the wide stage B: about one (KV head, split) unit per
// work-group, none shorter than CH slots (so never more than the n_ctx / CH chunks the
// host sized the partials for).
inline uint attn_splits(const uint n_ctx, const uint nwg, const uint n_kv_head) {
    return max(1u, min((n_ctx + CH - 1) / CH, nwg / n_kv_head));
}

// Element d of one head's attention output from its n_chunks partials (m, l, o[hd]) at
// ph: Σ_c exp(m_c − M) o_c[d] / Σ_c exp(m_c − M) l_c. (Read through a volatile pointer:
// other work-groups wrote them in this launch; the wide stage B's merger and stage C's
// fallback past LWS chunks a head.)
inline float merge_partials(volatile __global const float *ph, const uint n_chunks, const uint hd, const uint d) {
    float mx = -INFINITY;
    for (uint c = 0; c < n_chunks; c++) {
        mx = fmax(mx, ph[c * (hd + 2)]);
    }
    float num = 0.0f, den = 0.0f;
    for (uint c = 0; c < n_chunks; c++) {
        const float f = exp(ph[c * (hd + 2)] - mx);
        den += f * ph[c * (hd + 2) + 1];
        num += f * ph[c * (hd + 2) + 2 + d];
    }
    return num / den;
}

// Floats of the staged-vector local buffer the wide stage B uses (the host sizes `vl`
// for at least WIDE_OSUM + 4 · GQA · LWS: program.rs `wide_floats`): the group's
// queries, the tile's scores, the rescale factors, o's sums (4 a work-item and head;
// also the halves' partial dots without shuffles).
#define WIDE_SCORES(grp, hd) (((grp) * (hd) + 3) / 4 * 4)
#define WIDE_ALPHA(grp, hd) (WIDE_SCORES(grp, hd) + (grp) * (LWS / 2))
#define WIDE_OSUM(grp, hd) (WIDE_ALPHA(grp, hd) + GQA_MAX)

#ifdef AG_ATTN_WIDE
// The wide stage B's units of this work-group (see block_layer's stage B comment).
// Out of line, so that the other stages' code is what it is without the wide path:
// inlined (AG_WIDE_INLINE, a measurement option) it cost the 1B decode 6 % at short
// contexts, where the other stage B runs (H100: 911 against 972 tok/s; docs/opencl.md).
// Inlined off NVIDIA: unmeasured there, and a barrier in a called function is left to
// each compiler's handling (PoCL's work-group loops want it inlined).
#if defined(AG_WIDE_INLINE) || !defined(AG_NV_FENCE)
inline
#else
__attribute__((noinline))
#endif
void attn_wide_units(__global const uchar *kc, const ulong kc_off, __global const uchar *vc, const ulong vc_off,
                     XQ __global float *q, __global float *part, volatile __global uint *sync,
                     const ulong hbytes, const ulong kv_stride, const uint n_ctx, const uint n_chunks,
                     const uint n_kv_head, const uint grp, const uint hd, const float scale,
                     __local float *vl, __local float *res) {
    const uint lid = get_local_id(0);
    const uint g = get_group_id(0);
    const uint nwg = get_num_groups(0);
    const uint q4 = hd / 4, hq4 = hd / 8;
    const uint SR = LWS / q4;      // V slot rows a pass
    const uint TILE = LWS / 2;     // slots a tile (two work-items a key)
    const uint js = lid / q4, d4 = lid % q4;
    const uint s2 = lid >> 1, hf = lid & 1;
    const uint w = lid >> 5, ln = lid & 31;
    __local float *qs = vl;
    __local float *sc = vl + WIDE_SCORES(grp, hd);
    __local float *al = vl + WIDE_ALPHA(grp, hd);
    __local float *ob = vl + WIDE_OSUM(grp, hd);
    const bool ka = kv_vec_ok(kc + kc_off), va = kv_vec_ok(vc + vc_off); // (vector reads)
    for (uint unit = g; unit < n_kv_head * n_chunks; unit += nwg) {
        const uint kvh = unit / n_chunks, c = unit % n_chunks;
        const uint c0 = (uint)((ulong)c * n_ctx / n_chunks);
        const uint c1 = (uint)((ulong)(c + 1) * n_ctx / n_chunks);
        __global const uchar *kh = kc + kc_off + kvh * hbytes;
        __global const uchar *vh = vc + vc_off + kvh * hbytes;
#ifdef AG_NV_FENCE
        // rows past the first tile requested into L2 now (the tiles after the first
        // then wait for L2, not memory): every 128-byte line of each K and V row
        if (c1 - c0 > TILE) {
            const uint per = (uint)((hbytes + 127) / 128);
            for (uint i = lid; i < 2 * (c1 - c0 - TILE) * per; i += LWS) {
                const uint r = i / per, li = i % per;
                __global const uchar *row = ((r & 1) ? vh : kh) + (ulong)(c0 + TILE + r / 2) * kv_stride;
                asm volatile("prefetch.global.L2 [%0];" ::"l"(row + (ulong)li * 128));
            }
        }
#endif
        for (uint i = lid; i < grp * hd; i += LWS) {
            qs[i] = q[kvh * grp * hd + i] * scale;
        }
        float m_run = -INFINITY, l_run = 0.0f; // (warp h: query head h's)
        float4 o[GQA_MAX];
#pragma unroll
        for (uint h = 0; h < GQA_MAX; h++) {
            o[h] = (float4)(0.0f);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint t0 = c0; t0 < c1; t0 += TILE) {
            // the V float4s this work-item weighs in (3), requested first
            float4 vv[VPRE];
#pragma unroll
            for (uint k = 0; k < VPRE; k++) {
                const uint r = js + k * SR, j = t0 + r;
                vv[k] = r < TILE && j < c1 ? kv_get4v(vh + (ulong)j * kv_stride, 4 * d4, va) : (float4)(0.0f);
            }
            // (1) the scores of the tile into sc[h · TILE + s]
            float acc[GQA_MAX];
#pragma unroll
            for (uint h = 0; h < GQA_MAX; h++) {
                acc[h] = 0.0f;
            }
            const bool live = t0 + s2 < c1;
            if (live) {
                // (the pair's float4s interleaved: f4 2f + hf, so each load of the pair
                // is 32 contiguous bytes of the row, not two halves a row apart)
                __global const uchar *kr = kh + (ulong)(t0 + s2) * kv_stride;
                __local const float4 *q4s = (__local const float4 *)qs;
#pragma unroll 8
                for (uint f = 0; f < hq4; f++) {
                    const uint f4 = 2 * f + hf;
                    const float4 k4 = kv_get4v(kr, 4 * f4, ka);
#pragma unroll
                    for (uint h = 0; h < GQA_MAX; h++) {
                        if (h < grp) {
                            acc[h] += dot(k4, q4s[h * q4 + f4]);
                        }
                    }
                }
            }
#ifdef AG_NV_SHFL
#pragma unroll
            for (uint h = 0; h < GQA_MAX; h++) {
                if (h < grp) {
                    const float d = acc[h] + shfl_xor(acc[h], 1);
                    if (hf == 0) {
                        sc[h * TILE + s2] = live ? d : -INFINITY;
                    }
                }
            }
#else
            // (the halves through local memory, all heads at once: few barriers,
            // none in a loop — PoCL's compile time grows fast with those)
#pragma unroll
            for (uint h = 0; h < GQA_MAX; h++) {
                if (h < grp) {
                    ob[h * LWS + lid] = acc[h];
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (uint i = lid; i < grp * TILE; i += LWS) {
                const uint h = i / TILE, s = i % TILE;
                sc[i] = t0 + s < c1 ? ob[h * LWS + 2 * s] + ob[h * LWS + 2 * s + 1] : -INFINITY;
            }
#endif
            barrier(CLK_LOCAL_MEM_FENCE);
            // (2) warp h: head h's tile max, running max and sum, weights in place
            if (w < grp) {
                __local float *sh = sc + w * TILE;
#ifdef AG_NV_SHFL
                float mx = -INFINITY;
                for (uint i = ln; i < TILE; i += 32) {
                    mx = fmax(mx, sh[i]);
                }
                mx = warp_max(mx);
                const float m_new = fmax(m_run, mx); // (finite: a tile's first slot is live)
                float sum = 0.0f;
                for (uint i = ln; i < TILE; i += 32) {
                    const float pj = exp(sh[i] - m_new);
                    sh[i] = pj;
                    sum += pj;
                }
                sum = warp_sum(sum, 32);
#else
                // (one work-item a head: the portable path is for tests)
                float m_new = m_run, sum = 0.0f;
                if (ln == 0) {
                    for (uint i = 0; i < TILE; i++) {
                        m_new = fmax(m_new, sh[i]);
                    }
                    for (uint i = 0; i < TILE; i++) {
                        const float pj = exp(sh[i] - m_new);
                        sh[i] = pj;
                        sum += pj;
                    }
                }
#endif
                const float a = exp(m_run - m_new);
                l_run = l_run * a + sum;
                m_run = m_new;
                if (ln == 0) {
                    al[w] = a;
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            // (3) o, a float4 of each head (vv and the weights are 0 past c1)
#pragma unroll
            for (uint h = 0; h < GQA_MAX; h++) {
                if (h < grp) {
                    float4 oh = o[h] * al[h];
#pragma unroll
                    for (uint k = 0; k < VPRE; k++) {
                        const uint r = js + k * SR;
                        if (r < TILE) {
                            oh += sc[h * TILE + r] * vv[k];
                        }
                    }
                    o[h] = oh;
                }
            }
            // (slot rows past VPRE · SR: head dims above 64 at 256 work-items)
            for (uint r = js + VPRE * SR; r < TILE && t0 + r < c1; r += SR) {
                const float4 v4 = kv_get4v(vh + (ulong)(t0 + r) * kv_stride, 4 * d4, va);
#pragma unroll
                for (uint h = 0; h < GQA_MAX; h++) {
                    if (h < grp) {
                        o[h] += sc[h * TILE + r] * v4;
                    }
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        // o summed over the SR slot rows into the partials, all heads at once
#pragma unroll
        for (uint h = 0; h < GQA_MAX; h++) {
            if (h < grp) {
                vstore4(o[h], h * LWS + lid, ob); // (ob[4 h LWS + js · hd + 4 d4 ..])
            }
        }
        if (w < grp && ln == 0) {
            __global float *pu = part + (ulong)((kvh * grp + w) * n_chunks + c) * (hd + 2);
            pu[0] = m_run;
            pu[1] = l_run;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint e = lid; e < grp * hd; e += LWS) {
            const uint h = e / hd, d = e % hd;
            float sum = 0.0f;
            for (uint r = 0; r < SR; r++) {
                sum += ob[4 * h * LWS + r * hd + d];
            }
            part[(ulong)((kvh * grp + h) * n_chunks + c) * (hd + 2) + 2 + d] = sum;
        }
        // The last of a KV head's units to finish merges its heads' partials into q
        // (every unit of the head has staged its queries by then): a counter per KV
        // head in sync[2 ..], taken after every work-item's fence (CUDA's "last
        // block" pattern: GPU-scope acq_rel on NVIDIA), reset by the merger (its
        // next use is after a grid barrier).
#ifdef AG_NV_FENCE
        asm volatile("fence.acq_rel.gpu;" ::: "memory");
#else
        mem_fence(CLK_GLOBAL_MEM_FENCE);
#endif
        barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
        if (lid == 0) {
            uint old;
#ifdef AG_NV_FENCE
            asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;"
                         : "=r"(old)
                         : "l"(sync + 2 + kvh)
                         : "memory");
#else
            old = atomic_inc(sync + 2 + kvh);
#endif
            res[0] = old == n_chunks - 1 ? 1.0f : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (res[0] != 0.0f) {
#ifdef AG_NV_FENCE
            asm volatile("fence.acq_rel.gpu;" ::: "memory");
#else
            mem_fence(CLK_GLOBAL_MEM_FENCE);
#endif
            // (volatile: these lines may sit in this compute unit's L1 from an
            // earlier layer's merge)
            volatile __global const float *pvol = (volatile __global const float *)part;
            for (uint e = lid; e < grp * hd; e += LWS) {
                const uint h = kvh * grp + e / hd, d = e % hd;
                q[h * hd + d] = merge_partials(pvol + (ulong)h * n_chunks * (hd + 2), n_chunks, hd, d);
            }
            if (lid == 0) {
                sync[2 + kvh] = 0;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

#endif

// One block (stages A–E above) for the layer whose pointers are passed; `target` is
// the barrier counter's next base (advanced by 4 groups' worth here). 0 when the launch
// was aborted at a barrier.
inline uint block_layer(
    XQ __global float *x,
    __global const float *attn_norm, const ulong an_off,
    __global const uchar *wq, const ulong wq_off, const uint tq,
    __global const uchar *wk, const ulong wk_off, const uint tk,
    __global const uchar *wv, const ulong wv_off, const uint tv,
    __global const uchar *wo, const ulong wo_off, const uint to,
    __global const float *ffn_norm, const ulong fn_off,
    __global const uchar *wg, const ulong wg_off, const uint tg,
    __global const uchar *wu, const ulong wu_off, const uint tu,
    __global const uchar *wd, const ulong wd_off, const uint td,
    __global uchar *kc, const ulong kc_off,
    __global uchar *vc, const ulong vc_off,
    __global const float *inv_freq, const ulong if_off,
    XQ __global float *q, XQ __global float *hb, __global float *part,
    volatile __global uint *sync, uint *target_io, const uint spin_limit,
    __global ulong *prof, const uint prof_on, ulong *tm,
    const uint dim, const uint n_head, const uint n_kv_head, const uint hd, const uint ffn,
    const uint slot, const uint pos, const uint style, const float eps, const float scale,
    const uint wide_ok, __local float *vl, __local float *red, __local float *red2, __local float *res,
    __local uint *flag) {
    const uint lid = get_local_id(0);
    const uint g = get_group_id(0);
    const uint nwg = get_num_groups(0);
    XQ __global const float *pv = (XQ __global const float *)part;
    uint target = *target_io;
    const uint qd = n_head * hd;
    const uint kvd = n_kv_head * hd;
    const uint half_d = hd / 2;
    // The cache in KV_T (common/kv.cl): head h of slot s at byte (s * n_kv_head + h) * hbytes.
    const ulong hbytes = kv_head_bytes(hd);
    const ulong kv_stride = (ulong)n_kv_head * hbytes;
    INT8_VIEWS(vl, max(dim, max(qd, ffn)))

    // ---- A: norm, Q/K/V, RoPE, cache write ------------------------------------------
    {
        const uint n_pairs = (qd + 2 * kvd) / 2;
        const uint ppw = (n_pairs + nwg - 1) / nwg;
        const uint p0 = min(g * ppw, n_pairs);
        const uint p1 = min(p0 + ppw, n_pairs);
        const uint tpr = pick_tpr(2 * ppw, dim);
        const uint rpp = LWS / tpr; // rows per pass (even)
        const uint lane = lid % tpr;
        // The first pass's rotations before the norm: the inv_freq read and sincos then
        // overlap the wait for x instead of following the matrix rows.
        float cs0 = 1.0f, sn0 = 0.0f;
        {
            uint pp = p0 + lid;
            if (lid < rpp / 2 && pp < p1 && pp < (qd + kvd) / 2) {
                pp -= pp >= qd / 2 ? qd / 2 : 0;
                sn0 = sincos((float)pos * inv_freq[if_off + pp % half_d], &cs0);
            }
        }
        stage_norm(x, attn_norm + an_off, dim, eps, vl, red, red2, lid);
#ifdef AG_INT8
        quant_vec(vl, dim, xq, xd, xs, lid);
#endif
        for (uint base = p0; base < p1; base += rpp / 2) {
            const uint s = lid / tpr;
            const uint p = base + s / 2;
            float acc = 0.0f;
            if (p < p1) {
                uint t;
                __global const uchar *wr = qkv_row(p, s & 1, wq + wq_off, tq, wk + wk_off, tk, wv + wv_off,
                                                  tv, qd, kvd, hd, style, dim, &t);
                acc = dot_part(t, wr, vl, xq, xd, xs, dim, lane, tpr);
            }
            row_reduce(acc, red, red2, res, lid, tpr);
            const uint p_this = base + lid;
            if (lid < rpp / 2 && p_this < p1) {
                float a = res[2 * lid];
                float b = res[2 * lid + 1];
                uint pp = p_this;
                if (pp < (qd + kvd) / 2) {
                    const bool is_k = pp >= qd / 2;
                    if (is_k) {
                        pp -= qd / 2;
                    }
                    const uint head = pp / half_d, i = pp % half_d;
                    float cs = cs0, sn = sn0;
                    if (base != p0) {
                        sn = sincos((float)pos * inv_freq[if_off + i], &cs);
                    }
                    const float2 rot = rope_rotate(a, b, cs, sn);
                    const uint r0 = head * hd + rope_a(style, i);
                    const uint r1 = head * hd + rope_b(style, i, half_d);
                    if (is_k) {
#if KV_T == T_Q8_0
                        // (f32 into the staging area; quantized in stage A2)
                        part[r0] = rot.x;
                        part[r1] = rot.y;
#else
                        // (r0, r1 index the row: a head is hd values, f32 or f16)
                        __global uchar *kr = kc + kc_off + (ulong)slot * kv_stride;
#if KV_T == T_F16
                        // The per-op path's (and the CPU's) two roundings: the projected
                        // key stored, then widened, turned and stored again (rope_shift_f32
                        // with step 1). Through the slot itself: no cl_khr_fp16.
                        kv_put(kr, r0, a);
                        kv_put(kr, r1, b);
                        const float2 rk = rope_rotate(kv_get(kr, r0), kv_get(kr, r1), cs, sn);
#else
                        const float2 rk = rot;
#endif
                        kv_put(kr, r0, rk.x);
                        kv_put(kr, r1, rk.y);
#endif
                    } else {
                        q[r0] = rot.x;
                        q[r1] = rot.y;
                    }
                } else {
                    pp -= (qd + kvd) / 2;
#if KV_T == T_Q8_0
                    part[kvd + 2 * pp] = a;
                    part[kvd + 2 * pp + 1] = b;
#else
                    __global uchar *vr = vc + vc_off + (ulong)slot * kv_stride;
                    kv_put(vr, 2 * pp, a);
                    kv_put(vr, 2 * pp + 1, b);
#endif
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    MARK(0);
    target += nwg;
    if (!grid_sync(sync, target, spin_limit, flag, lid)) {
        return 0;
    }
#if KV_T == T_Q8_0
    // ---- A2 (Q8_0 cache): the new K and V rows quantized into the cache ----------
    // A 32-value block is quantized as a whole (ggml's amax scale) and its values came
    // from several work-groups in A, so A staged the rows in f32 at part[0 .. 2 kvd)
    // (K, then V) and, after the barrier, one work-item a block quantizes it — the
    // per-op path's store_rows_q8_0 arithmetic (q8_0_store_block). One more grid
    // barrier a layer; B overwrites part only after it.
    {
        const uint nb = 2 * kvd / QK;
        const uint bi = g * LWS + lid;
        for (uint b = bi; b < nb; b += nwg * LWS) {
            float xb[QK];
            for (uint j = 0; j < QK; j++) {
                xb[j] = pv[b * QK + j];
            }
            const uint kb = kvd / QK;
            __global uchar *row = b < kb ? kc + kc_off : vc + vc_off;
            q8_0_store_block(xb, row + (ulong)slot * kv_stride + (ulong)(b < kb ? b : b - kb) * Q8_0_BYTES);
        }
    }
    target += nwg;
    if (!grid_sync(sync, target, spin_limit, flag, lid)) {
        return 0;
    }
#endif
    MARK(1);

    const uint n_ctx = slot + 1;
    const uint grp = n_head / n_kv_head;
    const bool wide = wide_ok && attn_wide(hd, n_head, n_kv_head);
    // (the partials' chunks per head: the wide path's splits or the CH-slot chunks)
    const uint n_chunks = wide ? attn_splits(n_ctx, nwg, n_kv_head) : (n_ctx + CH - 1) / CH;
#ifdef AG_ATTN_WIDE
    // ---- B (wide): unit = (KV head, split of its slots), all its query heads -------
    // Tiles of TILE = LWS / 2 slots. Per tile, with every load issued up front:
    // (1) scores: work-item (s = lid / 2, half) sums half of slot s's key row against
    //     each query head of the group (queries staged in local memory, pre-scaled),
    //     the halves meet in a pair sum; meanwhile each work-item (js = lid / q4, d4)
    //     has already requested the V float4s it will weigh (slots js, js + SR, ...);
    // (2) softmax: warp h keeps query head h's running max and sum (online softmax
    //     over tiles), turns the tile's scores into weights, rescale factor al[h];
    // (3) o[h] = o[h] · al[h] + Σ p · v in registers, a float4 of each head.
    // Then o is summed over the SR slot rows and stored as the unit's partial (m, l,
    // o[hd]) per query head, part[(h · n_chunks + c) · (hd + 2)], and the KV head's
    // last unit merges them into q.
    if (wide) {
        attn_wide_units(kc, kc_off, vc, vc_off, q, part, sync, hbytes, kv_stride, n_ctx, n_chunks, n_kv_head,
                        grp, hd, scale, vl, res);
    }
#endif
    // ---- B: attention partials, unit = (query head, CH-slot chunk) ----------------
    for (uint unit = g; !wide && unit < n_head * n_chunks; unit += nwg) {
        const uint h = unit / n_chunks, c = unit % n_chunks;
        const uint kvh = h / grp;
        const uint c0 = c * CH;
        const uint c1 = min(c0 + CH, n_ctx);
        // o[d] = sum_j p_j v[c0 + j][d] below: work-item (j0 = lid / hd, d = lid % hd)
        // takes slots j0, j0 + LWS / hd, ...; its first VPRE values are fetched now, with
        // the keys, not after the softmax.
        const uint gsz = LWS / hd;
        const uint d = lid % hd, j0 = lid / hd;
        __global const uchar *vhead = vc + vc_off + kvh * hbytes;
        float vv[VPRE];
        for (uint k = 0; k < VPRE; k++) {
            const uint j = j0 + k * gsz;
            vv[k] = j0 < gsz && c0 + j < c1 ? kv_get(vhead + (ulong)(c0 + j) * kv_stride, d) : 0.0f;
        }
        // score of slot c0 + lid (lid < CH)
        float sc = -INFINITY;
        // tps work-items a slot, hd / tps elements each: q and the key row come in one L2
        // round trip, summed like a matrix row (no staging of q in local memory)
        // (a power of two dividing hd / 4; hd is a multiple of 4 — the host checks)
        uint tps = 1u << (31 - clz(max(min((uint)(LWS / CH), hd / 4), 1u)));
        while ((hd / 4) % tps != 0) {
            tps >>= 1;
        }
        {
            const uint e = hd / tps;
            const uint j = lid / tps, sub = lid % tps;
            float dp = 0.0f;
            if (j < CH && c0 + j < c1) {
                __global const uchar *kr = kc + kc_off + (ulong)(c0 + j) * kv_stride + kvh * hbytes;
                XQ __global const float *qr = q + h * hd + sub * e;
                for (uint i = 0; i < e; i += 4) {
                    // (sub * e + i: a multiple of 4, never across a Q8_0 block)
                    dp += dot(kv_get4(kr, sub * e + i), (float4)(qr[i], qr[i + 1], qr[i + 2], qr[i + 3]));
                }
            }
            row_reduce(dp, red, red2, res, lid, tps);
            if (lid < CH && c0 + lid < c1) {
                sc = res[lid] * scale;
            }
        }
        const float m = wg_max(sc, red, red2, lid);
        const float pj = c0 + lid < c1 ? exp(sc - m) : 0.0f; // (0 for lid ≥ CH)
        res[lid] = pj;
        const float l = wg_sum(pj, red, red2, lid); // (its barriers publish res)
        float o = 0.0f;
        if (j0 < gsz) {
            for (uint k = 0; k < VPRE; k++) {
                o += res[j0 + k * gsz] * vv[k]; // (vv 0 past the chunk; res[≥ CH] is 0 too)
            }
#pragma unroll 4
            for (uint j = j0 + VPRE * gsz; c0 + j < c1; j += gsz) {
                o += res[j] * kv_get(vhead + (ulong)(c0 + j) * kv_stride, d);
            }
        }
        red[lid] = o;
        barrier(CLK_LOCAL_MEM_FENCE);
        __global float *pu = part + (ulong)unit * (hd + 2);
        if (lid < hd) {
            float s = 0.0f;
            for (uint j = 0; j < gsz; j++) {
                s += red[j * hd + lid];
            }
            pu[2 + lid] = s;
        }
        if (lid == 0) {
            pu[0] = m;
            pu[1] = l;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    MARK(2);
    target += nwg;
    if (!grid_sync(sync, target, spin_limit, flag, lid)) {
        return 0;
    }
    MARK(3);

    // ---- C: merge partials into vl, x += Wo . att ---------------------------------
    // Chunk weights w[h][c] = exp(m_c - M_h) / sum_c exp(m_c - M_h) l_c, for a batch of
    // heads at a time (hpb = LWS / n_chunks of them): every (head, chunk) pair of the
    // batch is one work-item, which loads its m and l (one parallel round trip); the
    // head's max and sum run over local memory. Then vl[e] = sum_c w[h][c] o_c[d] for
    // the batch's elements. (Past LWS chunks a head — 8192 slots at LWS 256 — the
    // weights are recomputed per element instead.)
    const uint c_rpw = (dim + nwg - 1) / nwg;
    const uint c_r0 = min(g * c_rpw, dim);
    const uint c_r1 = min(c_r0 + c_rpw, dim);
    const uint c_tpr = pick_tpr(c_rpw, qd);
    const ulong wo_rb = row_bytes(to, qd);
    // this group's rows of x (only it writes them in this stage), read now, not after
    // the projection
    const float x_own = lid < LWS / c_tpr && c_r0 + lid < c_r1 ? x[c_r0 + lid] : 0.0f;
    // (the wide stage B merged them into q already)
    for (uint e = lid; wide && e < qd; e += LWS) {
        vl[e] = q[e];
    }
    const uint hpb = !wide && n_chunks <= LWS ? LWS / n_chunks : 0;
    for (uint h0 = 0; hpb > 0 && h0 < n_head; h0 += hpb) {
        const uint np = min(hpb, n_head - h0) * n_chunks;
        const uint first = (lid / n_chunks) * n_chunks; // the pair's head's first pair
        float mc = -INFINITY, lc = 0.0f;
        if (lid < np) {
            XQ __global const float *pp = pv + (ulong)(h0 * n_chunks + lid) * (hd + 2);
            mc = pp[0];
            lc = pp[1];
        }
        red[lid] = mc;
        barrier(CLK_LOCAL_MEM_FENCE);
        float wc = 0.0f;
        if (lid < np) {
            float mx = -INFINITY;
            for (uint c = 0; c < n_chunks; c++) {
                mx = fmax(mx, red[first + c]);
            }
            wc = exp(mc - mx);
        }
        red2[lid] = wc * lc;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < np) {
            float den = 0.0f;
            for (uint c = 0; c < n_chunks; c++) {
                den += red2[first + c];
            }
            res[lid] = wc / den;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint e = lid; e < np / n_chunks * hd; e += LWS) {
            const uint hh = e / hd, d = e % hd;
            XQ __global const float *ph = pv + (ulong)(h0 + hh) * n_chunks * (hd + 2) + 2 + d;
            float num = 0.0f;
#pragma unroll 8
            for (uint c = 0; c < n_chunks; c++) {
                num += res[hh * n_chunks + c] * ph[c * (hd + 2)];
            }
            vl[h0 * hd + e] = num;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (uint e = lid; !wide && e < qd && hpb == 0; e += LWS) {
        const uint h = e / hd, d = e % hd;
        vl[e] = merge_partials(pv + (ulong)h * n_chunks * (hd + 2), n_chunks, hd, d);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
#ifdef AG_INT8
    quant_vec(vl, qd, xq, xd, xs, lid);
#endif
    {
        const uint rpp = LWS / c_tpr;
        for (uint base = c_r0; base < c_r1; base += rpp) {
            const uint row = base + lid / c_tpr;
            float acc = 0.0f;
            if (row < c_r1) {
                __global const uchar *wr = wo + wo_off + row * wo_rb;
                acc = dot_part(to, wr, vl, xq, xd, xs, qd, lid % c_tpr, c_tpr);
            }
            row_reduce(acc, red, red2, res, lid, c_tpr);
            if (lid < rpp && base + lid < c_r1) {
                x[base + lid] = (base == c_r0 ? x_own : x[base + lid]) + res[lid];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    MARK(4);
    target += nwg;
    if (!grid_sync(sync, target, spin_limit, flag, lid)) {
        return 0;
    }
    MARK(5);

    // ---- D: norm, gate/up, SwiGLU ---------------------------------------------------
    {
        const uint jpw = (ffn + nwg - 1) / nwg;
        const uint j0 = min(g * jpw, ffn);
        const uint j1 = min(j0 + jpw, ffn);
        const uint tpr = pick_tpr(2 * jpw, dim);
        const uint rpp = LWS / tpr;
        const uint lane = lid % tpr;
        stage_norm(x, ffn_norm + fn_off, dim, eps, vl, red, red2, lid);
#ifdef AG_INT8
        quant_vec(vl, dim, xq, xd, xs, lid);
#endif
        for (uint base = j0; base < j1; base += rpp / 2) {
            const uint s = lid / tpr;
            const uint j = base + s / 2;
            float acc = 0.0f;
            if (j < j1) {
                const uint t = (s & 1) == 0 ? tg : tu;
                __global const uchar *wr = (s & 1) == 0 ? wg + wg_off + j * row_bytes(tg, dim)
                                                        : wu + wu_off + j * row_bytes(tu, dim);
                acc = dot_part(t, wr, vl, xq, xd, xs, dim, lane, tpr);
            }
            row_reduce(acc, red, red2, res, lid, tpr);
            if (lid < rpp / 2 && base + lid < j1) {
                const float gv = res[2 * lid];
                const float uv = res[2 * lid + 1];
                hb[base + lid] = gv / (1.0f + exp(-gv)) * uv;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    MARK(6);
    target += nwg;
    if (!grid_sync(sync, target, spin_limit, flag, lid)) {
        return 0;
    }
    MARK(7);

    // ---- E: x += Wdown . hb ---------------------------------------------------------
    {
        const uint rpw = (dim + nwg - 1) / nwg;
        const uint r0 = min(g * rpw, dim);
        const uint r1 = min(r0 + rpw, dim);
        const uint tpr = pick_tpr(rpw, ffn);
        const uint rpp = LWS / tpr;
        const ulong rb = row_bytes(td, ffn);
        const float x_own = lid < rpp && r0 + lid < r1 ? x[r0 + lid] : 0.0f; // (as in C)
        for (uint i = lid; i < ffn; i += LWS) {
            vl[i] = hb[i];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#ifdef AG_INT8
        quant_vec(vl, ffn, xq, xd, xs, lid);
#endif
        for (uint base = r0; base < r1; base += rpp) {
            const uint row = base + lid / tpr;
            float acc = 0.0f;
            if (row < r1) {
                __global const uchar *wr = wd + wd_off + row * rb;
                acc = dot_part(td, wr, vl, xq, xd, xs, ffn, lid % tpr, tpr);
            }
            row_reduce(acc, red, red2, res, lid, tpr);
            if (lid < rpp && base + lid < r1) {
                x[base + lid] = (base == r0 ? x_own : x[base + lid]) + res[lid];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    MARK(8);
    *target_io = target;
    return 1;
}

#define LAYER_PARAMS(i)                                                                   \
    __global const float *an##i, const ulong an_off##i,                                   \
    __global const uchar *wq##i, const ulong wq_off##i, const uint tq##i,                 \
    __global const uchar *wk##i, const ulong wk_off##i, const uint tk##i,                 \
    __global const uchar *wv##i, const ulong wv_off##i, const uint tv##i,                 \
    __global const uchar *wo##i, const ulong wo_off##i, const uint to##i,                 \
    __global const float *fn##i, const ulong fn_off##i,                                   \
    __global const uchar *wg##i, const ulong wg_off##i, const uint tg##i,                 \
    __global const uchar *wu##i, const ulong wu_off##i, const uint tu##i,                 \
    __global const uchar *wd##i, const ulong wd_off##i, const uint td##i,                 \
    __global uchar *kc##i, const ulong kc_off##i, __global uchar *vc##i, const ulong vc_off##i

// Layers 0..n_layers-1 of this launch (at most LPL — 1, 2 or 4, as the device's
// parameter space allows; unused parameter sets repeat a used one), with a grid barrier
// between two layers (the next stage A reads all of x).
__kernel void llama_blocks_f32(
    __global float *xg, const ulong x_off,
    __global const float *inv_freq, const ulong if_off,
    __global float *qg, const ulong q_off,
    __global float *hbg, const ulong hb_off,
    __global float *part,
    __global uint *sync_g, const uint sync_base, const uint spin_limit,
    __global ulong *prof, const uint prof_on,
    const uint dim, const uint n_head, const uint n_kv_head, const uint hd, const uint ffn,
    const uint slot, const uint pos, const uint style, const float eps, const float scale,
    const uint n_layers, const uint wide_ok,
    LAYER_PARAMS(0),
#if LPL > 1
    LAYER_PARAMS(1),
#endif
#if LPL > 2
    LAYER_PARAMS(2), LAYER_PARAMS(3),
#endif
    __local float4 *vl4) {
    __local float red[LWS];
    __local float red2[LWS];
    __local float res[LWS];
    __local uint flag;
    // (declared float4 so that it is 16-byte aligned: the int8 copy after the floats is
    // read as int4s)
    __local float *vl = (__local float *)vl4;

    const uint lid = get_local_id(0);
    const uint g = get_group_id(0);
    const uint nwg = get_num_groups(0);
    volatile __global uint *sync = (volatile __global uint *)sync_g;
    XQ __global float *x = (XQ __global float *)(xg + x_off);
    XQ __global float *q = (XQ __global float *)(qg + q_off);
    XQ __global float *hb = (XQ __global float *)(hbg + hb_off);
    uint target = sync_base;
    ulong t_mark = 0;
    ulong *tm = &t_mark;
    if (prof_on && g == 0 && lid == 0) {
        t_mark = ag_clock();
    }

#if LPL == 1
    // One layer: no loop around the block (PoCL compiles barriers inside a loop very
    // slowly — minutes for this kernel).
    const uint li = 0;
    {
#else
    for (uint li = 0; li < n_layers; li++) {
#endif
        if (li > 0) {
            target += nwg;
            if (!grid_sync(sync, target, spin_limit, &flag, lid)) {
                return;
            }
            MARK(9);
        }
        if (prof_on && g == 0 && lid == 0) {
            prof[10] += 1;
        }
        // Pick layer li's parameter set with selects: one inlined block_layer, not LPL
        // copies (compile time — PoCL's barrier analysis grows fast with copies).
#if LPL == 1
#define SEL(name) name##0
#elif LPL == 2
#define SEL(name) (li == 0 ? name##0 : name##1)
#else
#define SEL(name) (li == 0 ? name##0 : li == 1 ? name##1 : li == 2 ? name##2 : name##3)
#endif
        const uint ok = block_layer(
            x, SEL(an), SEL(an_off), SEL(wq), SEL(wq_off), SEL(tq), SEL(wk), SEL(wk_off), SEL(tk),
            SEL(wv), SEL(wv_off), SEL(tv), SEL(wo), SEL(wo_off), SEL(to), SEL(fn), SEL(fn_off),
            SEL(wg), SEL(wg_off), SEL(tg), SEL(wu), SEL(wu_off), SEL(tu), SEL(wd), SEL(wd_off),
            SEL(td), SEL(kc), SEL(kc_off), SEL(vc), SEL(vc_off), inv_freq, if_off, q, hb, part,
            sync, &target, spin_limit, prof, prof_on, &t_mark, dim, n_head, n_kv_head, hd, ffn,
            slot, pos, style, eps, scale, wide_ok, vl, red, red2, res, &flag);
#undef SEL
        if (!ok) {
            return;
        }
    }
}

// y[r] = W[r] . (rms_norm(x) * nw) for rows r of this work-group (rows_per_wg each).
__kernel void llama_head_f32(__global const float *xg, const ulong x_off,
                             __global const float *nw, const ulong n_off,
                             __global const uchar *w, const ulong w_off, const uint tw,
                             __global float *y, const ulong y_off,
                             const uint dim, const uint n_rows, const float eps,
                             const uint rows_per_wg, __local float4 *vl4) {
    __local float red[LWS];
    __local float red2[LWS];
    __local float res[LWS];
    __local float *vl = (__local float *)vl4; // (float4: aligned, as in llama_blocks_f32)
    const uint lid = get_local_id(0);
    const uint g = get_group_id(0);
    INT8_VIEWS(vl, dim)
    stage_norm(xg + x_off, nw + n_off, dim, eps, vl, red, red2, lid);
#ifdef AG_INT8
    quant_vec(vl, dim, xq, xd, xs, lid);
#endif
    const uint r0 = min(g * rows_per_wg, n_rows);
    const uint r1 = min(r0 + rows_per_wg, n_rows);
    const uint tpr = pick_tpr(rows_per_wg, dim);
    const uint rpp = LWS / tpr;
    const ulong rb = row_bytes(tw, dim);
    for (uint base = r0; base < r1; base += rpp) {
        const uint row = base + lid / tpr;
        float acc = 0.0f;
        if (row < r1) {
            acc = dot_part(tw, w + w_off + row * rb, vl, xq, xd, xs, dim, lid % tpr, tpr);
        }
        row_reduce(acc, red, red2, res, lid, tpr);
        if (lid < rpp && base + lid < r1) {
            y[y_off + base + lid] = res[lid];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}
