// kv_cache.cl — KV-cache maintenance for the eviction policies (see core/src/kv_cache.rs):
// compaction (move_rows_u16), re-rotation (rope_shift_f32) and the per-slot attention mass
// (attention_mass_f32). The cache never leaves the device: a policy that drops slots
// moves the rows after them down and turns the moved keys by the position delta, here.
// Built once per cache dtype (KV_T, common/kv.cl) like attention.cl: rope_shift_f32 and
// attention_mass_f32 read (and rope_shift_f32 writes) the cache in that dtype; the kernel
// names say the f32 arithmetic. move_rows_u16 is the same in every build.

// move_rows_u16 — x[dst .. dst + n) = x[src .. src + n) (old values), dst < src, the
// ranges possibly overlapping (memmove), in 2-byte units (every cache row is a whole
// number of them: f32, f16, q8_0 blocks of 34 bytes). One work-group of LWS work-items
// walks the range in pieces of d = src - dst units: a piece's reads and writes never
// overlap, and the barrier orders a piece's writes after the previous piece's reads
// (the only units they share). Offsets in units.
__kernel void move_rows_u16(__global ushort *x, const ulong x_off,
                            const ulong src, const ulong dst, const ulong n) {
    const uint lid = get_local_id(0);
    const ulong d = src - dst;
    __global ushort *from = x + x_off + src;
    __global ushort *to = x + x_off + dst;
    for (ulong base = 0; base < n; base += d) {
        const ulong m = min(d, n - base);
        for (ulong i = lid; i < m; i += LWS) {
            to[base + i] = from[base + i];
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
}

// rope_shift_f32 — every head of x [n_rows, n_heads, head_dim] (cache dtype KV_T, byte
// offset x_off) turned: row r by delta + r * step positions, pair i by that times
// inv_freq[i] (a key rotated at position p ends as rotated at p + delta; RoPE rotations
// compose). step 0 is eviction's re-rotation; step 1 is RoPE itself at positions delta,
// delta + 1, … (what `rope` / `rope_qk` do to keys held in an f16 cache). The pair is
// decoded, rotated in f32 and encoded again: f16 rounds to nearest even once per turn.
// f32 and f16: one work-item per (pair, head, row). Q8_0: a block is quantized as a
// whole and a half-split pair spans two blocks, so one work-item per (head, row) decodes
// the head into private memory, turns every pair and requantizes its blocks (the CPU's
// decode_kv_row / rotate / encode_kv_row); global size (1, heads, rows).
__kernel void rope_shift_f32(__global uchar *x, const ulong x_off,
                             __global const float *inv_freq, const ulong f_off,
                             const int delta, const uint step, const uint n_heads,
                             const uint head_dim, const uint style) {
    const uint i = get_global_id(0);   // pair (Q8_0: 0)
    const uint h = get_global_id(1);   // head
    const uint r = get_global_id(2);   // row
    const uint half_d = head_dim / 2;
    const float pos = (float)(delta + (int)(r * step));
    __global uchar *xh = x + x_off + ((ulong)r * n_heads + h) * kv_head_bytes(head_dim);
#if KV_T == T_Q8_0
    if (i != 0) {
        return;
    }
    float v[MAX_HD];
    for (uint e = 0; e < head_dim; e++) {
        v[e] = kv_get(xh, e);
    }
    for (uint p = 0; p < half_d; p++) {
        const float theta = pos * inv_freq[f_off + p];
        const uint a = rope_a(style, p);
        const uint b = rope_b(style, p, half_d);
        const float2 t = rope_rotate(v[a], v[b], cos(theta), sin(theta));
        v[a] = t.x;
        v[b] = t.y;
    }
    for (uint blk = 0; blk < head_dim / QK; blk++) {
        q8_0_store_block(v + blk * QK, xh + blk * Q8_0_BYTES);
    }
#else
    if (i >= half_d) {
        return;
    }
    const float theta = pos * inv_freq[f_off + i];
    const float s = sin(theta);
    const float c = cos(theta);
    const uint a = rope_a(style, i);
    const uint b = rope_b(style, i, half_d);
    const float2 v = rope_rotate(kv_get(xh, a), kv_get(xh, b), c, s);
    kv_put(xh, a, v.x);
    kv_put(xh, b, v.y);
#endif
}

// x += v for a float in global memory (OpenCL 1.2 has no float atomics: a
// compare-and-swap loop on its bits).
inline void atomic_add_f32(volatile __global float *p, const float v) {
    union { uint u; float f; } old, upd;
    do {
        old.f = *p;
        upd.f = old.f + v;
    } while (atomic_cmpxchg((volatile __global uint *)p, old.u, upd.u) != old.u);
}

// attention_mass_f32 — the per-slot attention mass of attention_f32's queries (same
// arguments, plus mass [capacity]): mass[s] += softmax weight of slot s, summed over
// query heads and tokens. One work-group of LWS work-items per (query head, token): pass
// 1 finds the softmax's max and sum (each work-item over its slots, then a local
// reduction), pass 2 recomputes each score and adds its weight atomically (the order of
// the additions varies: the sums agree to f32 rounding). Offsets in elements, k_off in
// bytes (k in the cache dtype KV_T).
__kernel void attention_mass_f32(__global const float *q, const ulong q_off,
                                 __global const uchar *k, const ulong k_off,
                                 const uint n_head, const uint n_kv_head, const uint hd,
                                 const float scale, const uint n_past,
                                 __global float *mass, const ulong m_off) {
    __local float ql[MAX_HD];
    __local float rm[LWS];
    __local float rl[LWS];
    const uint h = get_group_id(0);
    const uint t = get_group_id(1);
    const uint lid = get_local_id(0);
    const uint kvh = h / (n_head / n_kv_head);
    const uint n_ctx = n_past + t + 1;
    const ulong hb = kv_head_bytes(hd);
    const ulong kv_stride = (ulong)n_kv_head * hb;
    __global const uchar *kb = k + k_off + (ulong)kvh * hb;
    __global const float *qh = q + q_off + ((ulong)t * n_head + h) * hd;
    for (uint i = lid; i < hd; i += LWS) {
        ql[i] = qh[i];
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    float m = -INFINITY;
    float l = 0.0f;
    for (uint s = lid; s < n_ctx; s += LWS) {
        __global const uchar *kr = kb + (ulong)s * kv_stride;
        float dot = 0.0f;
        for (uint i = 0; i < hd; i++) {
            dot += ql[i] * kv_get(kr, i);
        }
        const float sc = dot * scale;
        const float m_new = fmax(m, sc);
        l = l * exp(m - m_new) + exp(sc - m_new);
        m = m_new;
    }
    rm[lid] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint r = LWS / 2; r > 0; r >>= 1) {
        if (lid < r) {
            rm[lid] = fmax(rm[lid], rm[lid + r]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float mx = rm[0];
    rl[lid] = m == -INFINITY ? 0.0f : l * exp(m - mx);
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint r = LWS / 2; r > 0; r >>= 1) {
        if (lid < r) {
            rl[lid] += rl[lid + r];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float inv = 1.0f / rl[0];

    for (uint s = lid; s < n_ctx; s += LWS) {
        __global const uchar *kr = kb + (ulong)s * kv_stride;
        float dot = 0.0f;
        for (uint i = 0; i < hd; i++) {
            dot += ql[i] * kv_get(kr, i);
        }
        atomic_add_f32(mass + m_off + s, exp(dot * scale - mx) * inv);
    }
}
